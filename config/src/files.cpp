// Reading the files qbusd trusts: the config file, the token and key files, and the drop-in
// policy files, each opened once and checked as opened (never by path, then again).
#include "files.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iterator>

namespace qbus::config::detail {
namespace {

// Only qbusd's own uid or root may own a file that holds a secret or grants access: a file
// another uid owns could be rewritten by that uid, whatever its mode says now.
bool owned_by_us(const std::string& what, const std::string& path, const struct stat& st,
                 std::string& error) {
  const uid_t self = ::geteuid();
  if (st.st_uid == self || st.st_uid == 0) return true;
  error = what + " " + path + " is owned by uid " + std::to_string(st.st_uid) +
          "; it must be owned by root or by the uid reading it (" + std::to_string(self) + ")";
  return false;
}

const char* file_kind(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a plain file";
}

}  // namespace

int open_regular(const std::string& what, const std::string& path, struct stat& st,
                 std::string& error) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    error = errno == ENOENT ? what + " " + path + " is missing"
                            : "cannot open " + what + " " + path + ": " + std::strerror(errno);
    return -1;
  }
  if (::fstat(fd, &st) != 0) {
    error = "cannot inspect " + what + " " + path + ": " + std::strerror(errno);
    ::close(fd);
    return -1;
  }
  if (!S_ISREG(st.st_mode)) {
    error = what + " " + path + " is not a regular file (" + file_kind(st.st_mode) + ")";
    ::close(fd);
    return -1;
  }
  return fd;
}

bool read_bounded(int fd, const std::string& what, const std::string& path, const struct stat& st,
                  std::size_t max_bytes, std::string& out, std::string& error) {
  const auto too_large = [&] {
    error = what + " " + path + " is larger than " + std::to_string(max_bytes) + " bytes";
    return false;
  };
  if (st.st_size < 0 || static_cast<std::uint64_t>(st.st_size) > max_bytes) return too_large();
  out.clear();
  char buf[16384];
  while (true) {
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      error = "cannot read " + what + " " + path + ": " + std::strerror(errno);
      return false;
    }
    if (n == 0) return true;
    if (out.size() + static_cast<std::size_t>(n) > max_bytes) return too_large();
    out.append(buf, static_cast<std::size_t>(n));
  }
}

std::optional<std::string> read_private(const std::string& what, const std::string& path,
                                        std::string& error) {
  struct stat st {};
  const Fd fd(open_regular(what, path, st, error));
  if (fd.get() < 0) return std::nullopt;
  if (!owned_by_us(what, path, st, error)) return std::nullopt;
  if (st.st_mode & 0077) {
    char mode[8];
    std::snprintf(mode, sizeof(mode), "%04o", static_cast<unsigned>(st.st_mode & 07777));
    error =
        what + " " + path + " is accessible to group or others (mode " + mode + "); chmod 600 it";
    return std::nullopt;
  }
  std::string text;
  if (!read_bounded(fd.get(), what, path, st, kMaxTokenFileBytes, text, error)) {
    return std::nullopt;
  }
  return text;
}

namespace {

// A file that grants access must be one only qbusd's own uid or root could have written:
// the token file's rule (load_token), so a policy.d beside a config file in a shared
// directory cannot be planted by another user.
bool trusted_for_policy(const std::string& what, const std::string& path, const struct stat& st,
                        std::string& error) {
  if (!owned_by_us(what, path, st, error)) return false;
  if (st.st_mode & 0022) {
    char mode[8];
    std::snprintf(mode, sizeof(mode), "%04o", static_cast<unsigned>(st.st_mode & 07777));
    error = what + " " + path + " is writable by group or others (mode " + mode + ")";
    return false;
  }
  return true;
}

// The names of the `*.json` entries of `dir`, in byte order; a missing directory has none.
// Returns false with `error` set when the directory cannot be read or holds too many.
bool policy_file_names(const std::string& dir, std::vector<std::string>& names,
                       std::string& error) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) {
    if (errno == ENOENT) return true;
    error = "cannot read policy directory " + dir + ": " + std::strerror(errno);
    return false;
  }
  struct stat st {};
  if (::fstat(::dirfd(d), &st) != 0) {
    error = "cannot inspect policy directory " + dir + ": " + std::strerror(errno);
    ::closedir(d);
    return false;
  }
  if (!trusted_for_policy("policy directory", dir, st, error)) {
    ::closedir(d);
    return false;
  }
  errno = 0;
  while (const dirent* e = ::readdir(d)) {
    const std::string_view name(e->d_name);
    if (name.size() > 5 && name.ends_with(".json")) {
      // Bounded before the list grows: a directory of a million files costs nothing more.
      if (names.size() == kMaxPolicyFiles) {
        error = "policy directory " + dir + " holds more than " + std::to_string(kMaxPolicyFiles) +
                " .json files";
        ::closedir(d);
        return false;
      }
      names.emplace_back(name);
    }
    errno = 0;
  }
  const int read_errno = errno;
  ::closedir(d);
  if (read_errno != 0) {
    error = "cannot read policy directory " + dir + ": " + std::strerror(read_errno);
    return false;
  }
  std::sort(names.begin(), names.end());
  return true;
}

}  // namespace

bool read_policy_dir(const std::string& dir, PolicySettings& policy, std::string& error) {
  std::vector<std::string> names;
  if (!policy_file_names(dir, names, error)) return false;
  const std::string what = "policy file";
  for (const auto& name : names) {
    const std::string path = dir + "/" + name;
    struct stat st {};
    const Fd fd(open_regular(what, path, st, error));
    if (fd.get() < 0) return false;
    if (!trusted_for_policy(what, path, st, error)) return false;
    std::string text;
    if (!read_bounded(fd.get(), what, path, st, kMaxConfigFileBytes, text, error)) return false;
    auto rules = parse_policy_rules(text, error);
    if (!rules) {
      error = path + ": " + error;
      return false;
    }
    if (policy.rules.size() + rules->size() > kMaxPolicyRules) {
      error = path + ": rules: the policy would hold more than " + std::to_string(kMaxPolicyRules) +
              " rules";
      return false;
    }
    // Named for the audit by file and index, not by their place among all the rules.
    for (auto& rule : *rules)
      rule.origin = path + ": " + rule.origin;
    // A drop-in turns the policy on even without a "policy" section, as that section would.
    policy.configured = true;
    policy.rules.insert(policy.rules.end(), std::make_move_iterator(rules->begin()),
                        std::make_move_iterator(rules->end()));
  }
  return true;
}

}  // namespace qbus::config::detail

namespace qbus::config {

std::optional<std::string> read_secret_file(const std::string& what, const std::string& path,
                                            std::string& error) {
  return detail::read_private(what, path, error);
}

}  // namespace qbus::config
