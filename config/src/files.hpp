// Internal to qbus_config: reading the files qbusd trusts. Every function is thread-safe
// (it touches no shared state) and reports failure as one line in `error`, naming the file.
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <optional>
#include <string>

#include "qbus/config/config.hpp"

namespace qbus::config::detail {

// Owns one file descriptor (-1: none).
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

// Opens `path` (`what` names it in errors: "config file", "token file") and checks what
// was opened, not what the path named a moment before. O_NONBLOCK: opening a FIFO with no
// writer would otherwise wait forever. Returns the fd, or -1 with `error` set.
int open_regular(const std::string& what, const std::string& path, struct stat& st,
                 std::string& error);
// Reads the whole of an opened regular file, refusing one over `max_bytes`; never more than
// `max_bytes` + 1 bytes are read, whatever the file claims its size is or becomes.
bool read_bounded(int fd, const std::string& what, const std::string& path, const struct stat& st,
                  std::size_t max_bytes, std::string& out, std::string& error);
// sshd's rule for keys, shared by the token and the TLS key: a regular file of at most
// kMaxTokenFileBytes that only its owner, root or qbusd's uid, can read or write.
std::optional<std::string> read_private(const std::string& what, const std::string& path,
                                        std::string& error);
// Appends the rules of every drop-in file of `dir` (`*.json`, in byte order, at most
// kMaxPolicyFiles and kMaxPolicyRules in all) to `policy`; a missing directory adds nothing.
bool read_policy_dir(const std::string& dir, PolicySettings& policy, std::string& error);

}  // namespace qbus::config::detail
