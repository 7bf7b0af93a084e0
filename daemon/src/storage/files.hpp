// Where the journal's bytes go: the state directory and the files in it, behind an
// interface so that tests can put a layer in between that forgets every write no sync
// covered (a power loss, as leveldb's fault-injection environment does) or runs out of
// space. open_posix_dir() is the real one. Objects are not thread-safe: the storage
// thread owns them.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace qbus::storage {

using Bytes = std::span<const std::byte>;

// The outcome of an I/O call: an errno and what was being done.
struct IoStatus {
  int error = 0;  // 0: success
  std::string what;
  bool ok() const { return error == 0; }
  // "write 0000000000000001.qj: No space left on device"; "" when ok.
  std::string message() const;
};

// A file the journal appends to. After a failed append the file holds an unknown prefix of
// the data: the caller truncates it back to what it knew before writing again.
class AppendFile {
 public:
  virtual ~AppendFile() = default;
  virtual IoStatus append(Bytes data) = 0;
  // What was appended is on stable storage once this returns ok (fdatasync).
  virtual IoStatus sync() = 0;
  virtual IoStatus truncate(std::uint64_t size) = 0;
  virtual std::uint64_t size() const = 0;
};

// The state directory's files, by name (no separators).
class Dir {
 public:
  virtual ~Dir() = default;
  // Opens `name` for appending at its end, creating it when missing.
  virtual IoStatus open_append(const std::string& name, std::unique_ptr<AppendFile>& out) = 0;
  virtual IoStatus read(const std::string& name, std::vector<std::byte>& out) = 0;
  virtual IoStatus list(std::vector<std::string>& names) = 0;
  virtual IoStatus remove(const std::string& name) = 0;
  // Files created or removed so far stay so across a power loss once this returns ok.
  virtual IoStatus sync() = 0;
  // Takes the directory for this process alone until the Dir is destroyed (the lock file
  // qbusd.lock); EWOULDBLOCK when another process holds it.
  virtual IoStatus lock() { return {}; }
};

// The directory `path`, which must exist. Null, with the reason in `status`, when it
// cannot be opened.
std::unique_ptr<Dir> open_posix_dir(const std::string& path, IoStatus& status);

}  // namespace qbus::storage
