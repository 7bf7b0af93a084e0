#include "net/unix_socket.hpp"

#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <stdexcept>

namespace qbus::daemon {
namespace {

[[noreturn]] void fail(const std::string& what, int err) {
  throw std::runtime_error(what + ": " + std::strerror(err));
}

sockaddr_un make_addr(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    throw std::runtime_error("socket path " + path + " is longer than " +
                             std::to_string(sizeof(addr.sun_path) - 1) + " bytes");
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}

void ensure_parent_dir(const std::string& path) {
  const auto parent = std::filesystem::path(path).parent_path();
  if (parent.empty()) return;
  struct stat st {};
  if (::lstat(parent.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) {
      throw std::runtime_error("socket directory " + parent.string() + " is not a directory");
    }
    // A shared /tmp directory owned by someone else could be swapped under us.
    if (st.st_uid != ::geteuid() && (st.st_mode & S_IWOTH) && !(st.st_mode & S_ISVTX)) {
      throw std::runtime_error("socket directory " + parent.string() +
                               " is writable by others and not ours");
    }
    return;
  }
  if (errno != ENOENT) fail("cannot inspect socket directory " + parent.string(), errno);
  std::error_code ec;
  std::filesystem::create_directories(parent.parent_path(), ec);
  // Per-user directories stay private; the system one must be traversable by everyone.
  const mode_t mode = ::geteuid() == 0 ? 0755 : 0700;
  if (::mkdir(parent.c_str(), mode) != 0 && errno != EEXIST) {
    fail("cannot create socket directory " + parent.string(), errno);
  }
}

// True when a daemon accepts connections on `path`.
bool someone_listens(const sockaddr_un& addr) {
  UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (probe.get() < 0) fail("socket", errno);
  if (::connect(probe.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0) {
    return true;
  }
  if (errno == ECONNREFUSED || errno == ENOENT) return false;
  fail(std::string("cannot probe existing socket ") + addr.sun_path, errno);
}

}  // namespace

BoundSocket bind_unix_listener(const std::string& path, std::uint32_t mode) {
  const sockaddr_un addr = make_addr(path);
  ensure_parent_dir(path);

  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      throw std::runtime_error(path + " exists and is not a socket; refusing to replace it");
    }
    if (someone_listens(addr)) {
      throw std::runtime_error("another qbusd is already listening on " + path);
    }
    spdlog::info("removing stale socket file {}", path);
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      fail("cannot remove stale socket " + path, errno);
    }
  } else if (errno != ENOENT) {
    fail("cannot inspect " + path, errno);
  }

  BoundSocket out;
  out.fd = UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (out.fd.get() < 0) fail("socket", errno);
  if (::bind(out.fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    fail("cannot bind " + path, errno);
  }
  if (::chmod(path.c_str(), static_cast<mode_t>(mode)) != 0) {
    const int err = errno;
    ::unlink(path.c_str());
    fail("cannot set mode of " + path, err);
  }
  if (::listen(out.fd.get(), SOMAXCONN) != 0) {
    const int err = errno;
    ::unlink(path.c_str());
    fail("cannot listen on " + path, err);
  }
  if (::stat(path.c_str(), &st) == 0) {
    out.dev = st.st_dev;
    out.ino = st.st_ino;
  }
  return out;
}

BoundSocket adopt_unix_listener(UniqueFd fd, std::string& path) {
  const auto option = [&](int name) {
    int value = -1;
    socklen_t len = sizeof(value);
    return ::getsockopt(fd.get(), SOL_SOCKET, name, &value, &len) == 0 ? value : -1;
  };
  if (option(SO_DOMAIN) != AF_UNIX || option(SO_TYPE) != SOCK_STREAM ||
      option(SO_ACCEPTCONN) != 1) {
    throw std::runtime_error("inherited fd " + std::to_string(fd.get()) +
                             " is not a listening Unix stream socket");
  }
  sockaddr_un addr{};
  socklen_t addr_len = sizeof(addr);
  path.clear();
  if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &addr_len) == 0 &&
      addr_len > offsetof(sockaddr_un, sun_path) && addr.sun_path[0] != '\0') {
    path.assign(addr.sun_path, ::strnlen(addr.sun_path, sizeof(addr.sun_path)));
  }
  BoundSocket out;
  out.fd = std::move(fd);
  return out;
}

void unlink_if_ours(const std::string& path, const BoundSocket& bound) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0 && st.st_dev == bound.dev && st.st_ino == bound.ino) {
    ::unlink(path.c_str());
  }
}

}  // namespace qbus::daemon
