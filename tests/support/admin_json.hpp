// One request on a test daemon's admin socket (docs/admin.md), answered with one line of
// JSON. Header-only: a test that uses it links nlohmann_json itself.
#pragma once

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

#include "daemon.hpp"

namespace qbus::testing {

// The answer to `request` (an object with "request" and its arguments); throws when the
// socket cannot be reached or the answer is not JSON (an answer with "ok": false is
// returned as it is).
inline nlohmann::json admin_request(const Daemon& d, const nlohmann::json& request) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  const std::string path = d.admin_socket_path();
  std::strncpy(sa.sun_path, path.c_str(), sizeof(sa.sun_path) - 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
    ::close(fd);
    throw std::runtime_error("cannot connect to " + path);
  }
  const std::string line = request.dump() + "\n";
  (void)!::send(fd, line.data(), line.size(), MSG_NOSIGNAL);
  std::string in;
  char buf[65536];
  while (in.find('\n') == std::string::npos) {
    const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    in.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return nlohmann::json::parse(in.substr(0, in.find('\n')));
}

// The answer to {"request": request}, as admin_request().
inline nlohmann::json admin_answer(const Daemon& d, const std::string& request) {
  return admin_request(d, nlohmann::json{{"request", request}});
}

}  // namespace qbus::testing
