// A plain HTTP/1.x peer for tests of qbusd's metrics endpoint: a request written as it is,
// the whole response read back until the server closes.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

namespace qbus::testing {

// A connected socket to 127.0.0.1:port, or to the Unix socket `path` when it is not empty.
inline int connect_to(int port, const std::string& path = {}) {
  const bool local = !path.empty();
  const int fd = ::socket(local ? AF_UNIX : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
  int rc;
  if (local) {
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::strncpy(sa.sun_path, path.c_str(), sizeof(sa.sun_path) - 1);
    rc = ::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa));
  } else {
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(static_cast<std::uint16_t>(port));
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    rc = ::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa));
  }
  if (rc != 0) {
    const std::string why = std::strerror(errno);
    ::close(fd);
    throw std::runtime_error("cannot connect to " +
                             (local ? path : "port " + std::to_string(port)) + ": " + why);
  }
  return fd;
}

// Everything the peer sends until it closes (30 s at most).
inline std::string read_all(int fd) {
  std::string in;
  char buf[65536];
  while (true) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 30'000) <= 0) break;
    const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    in.append(buf, static_cast<std::size_t>(n));
  }
  return in;
}

// Sends `request` as it is and returns the whole response.
inline std::string exchange(int port, const std::string& request, const std::string& path = {}) {
  const int fd = connect_to(port, path);
  (void)!::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  std::string r = read_all(fd);
  ::close(fd);
  return r;
}

inline std::string status_line(const std::string& response) {
  return response.substr(0, response.find("\r\n"));
}

inline std::string body_of(const std::string& response) {
  const auto end = response.find("\r\n\r\n");
  return end == std::string::npos ? std::string() : response.substr(end + 4);
}

}  // namespace qbus::testing
