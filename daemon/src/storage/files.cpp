#include "storage/files.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

namespace qbus::storage {
namespace {

// errno is read before anything can change it (the message's allocation).
IoStatus failed(const char* verb, const std::string& name) {
  const int e = errno;
  return IoStatus{e, std::string(verb) + " " + name};
}

// An owned descriptor.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

class PosixFile final : public AppendFile {
 public:
  PosixFile(int fd, std::string name, std::uint64_t size)
      : fd_(fd), name_(std::move(name)), size_(size) {}

  IoStatus append(Bytes data) override {
    while (!data.empty()) {
      const ssize_t n = ::write(fd_.get(), data.data(), data.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        return failed("write", name_);
      }
      size_ += static_cast<std::uint64_t>(n);
      data = data.subspan(static_cast<std::size_t>(n));
    }
    return {};
  }
  IoStatus sync() override {
    if (::fdatasync(fd_.get()) != 0) return failed("fdatasync", name_);
    return {};
  }
  IoStatus truncate(std::uint64_t size) override {
    if (::ftruncate(fd_.get(), static_cast<off_t>(size)) != 0) return failed("truncate", name_);
    // O_APPEND writes go to the new end.
    size_ = size;
    return {};
  }
  std::uint64_t size() const override { return size_; }

 private:
  Fd fd_;
  std::string name_;
  std::uint64_t size_;
};

class PosixDir final : public Dir {
 public:
  PosixDir(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}

  IoStatus open_append(const std::string& name, std::unique_ptr<AppendFile>& out) override {
    const int fd =
        ::openat(fd_.get(), name.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) return failed("open", name);
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      const IoStatus s = failed("stat", name);
      ::close(fd);
      return s;
    }
    out = std::make_unique<PosixFile>(fd, name, static_cast<std::uint64_t>(st.st_size));
    return {};
  }

  IoStatus read(const std::string& name, std::vector<std::byte>& out) override {
    Fd fd(::openat(fd_.get(), name.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0) return failed("open", name);
    out.clear();
    std::byte buf[64 * 1024];
    for (;;) {
      const ssize_t n = ::read(fd.get(), buf, sizeof buf);
      if (n < 0) {
        if (errno == EINTR) continue;
        return failed("read", name);
      }
      if (n == 0) return {};
      out.insert(out.end(), buf, buf + n);
    }
  }

  IoStatus list(std::vector<std::string>& names) override {
    names.clear();
    const int fd = ::openat(fd_.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return failed("open", path_);
    DIR* d = ::fdopendir(fd);
    if (!d) {
      const IoStatus s = failed("opendir", path_);
      ::close(fd);
      return s;
    }
    errno = 0;
    while (const dirent* e = ::readdir(d)) {
      const std::string n = e->d_name;
      if (n != "." && n != "..") names.push_back(n);
    }
    const IoStatus s = errno != 0 ? failed("readdir", path_) : IoStatus{};
    ::closedir(d);
    return s;
  }

  IoStatus remove(const std::string& name) override {
    if (::unlinkat(fd_.get(), name.c_str(), 0) != 0) return failed("remove", name);
    return {};
  }

  IoStatus sync() override {
    if (::fsync(fd_.get()) != 0) return failed("fsync", path_);
    return {};
  }

  IoStatus lock() override {
    const int fd = ::openat(fd_.get(), "qbusd.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return failed("open", "qbusd.lock");
    lock_ = std::make_unique<Fd>(fd);
    // flock, not fcntl locks: held by the open file, so no other descriptor of this
    // process that closes the file drops it.
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) return failed("lock", "qbusd.lock");
    return {};
  }

 private:
  Fd fd_;
  std::string path_;
  std::unique_ptr<Fd> lock_;
};

}  // namespace

std::string IoStatus::message() const {
  if (ok()) return {};
  return what + ": " + std::strerror(error);
}

std::unique_ptr<Dir> open_posix_dir(const std::string& path, IoStatus& status) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    status = failed("open", path);
    return nullptr;
  }
  status = {};
  return std::make_unique<PosixDir>(fd, path);
}

}  // namespace qbus::storage
