#include "service/listen_fds.hpp"

#include <sys/socket.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>

#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <vector>

namespace qbus::daemon {
namespace {

constexpr const char* kMainName = "qbus";
constexpr const char* kAdminName = "admin";

std::string socket_path(int fd) {
  sockaddr_un addr{};
  socklen_t len = sizeof(addr);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0 ||
      len <= offsetof(sockaddr_un, sun_path) || addr.sun_path[0] == '\0') {
    return {};
  }
  return std::string(addr.sun_path, ::strnlen(addr.sun_path, sizeof(addr.sun_path)));
}

}  // namespace

InheritedSockets take_inherited_sockets() {
  char** raw_names = nullptr;
  const int n = sd_listen_fds_with_names(/*unset_environment=*/1, &raw_names);
  if (n < 0) {
    throw std::runtime_error(std::string("cannot take the sockets passed by the service manager "
                                         "(LISTEN_FDS, LISTEN_FDNAMES): ") +
                             std::strerror(-n));
  }
  // Own every fd and name at once, so that any refusal below closes them all.
  std::vector<proto::UniqueFd> fds;
  std::vector<std::string> names;
  for (int i = 0; i < n; ++i) {
    fds.emplace_back(SD_LISTEN_FDS_START + i);
    names.emplace_back(raw_names && raw_names[i] ? raw_names[i] : "unknown");
    if (raw_names) std::free(raw_names[i]);
  }
  std::free(static_cast<void*>(raw_names));

  InheritedSockets out;
  for (int i = 0; i < n; ++i) {
    const int fd = fds[i].get();
    std::string role = names[i];
    // A lone socket is the client socket whatever its name (systemd's default name is the
    // socket unit's, "qbusd.socket"), unless it is explicitly the admin one.
    if (n == 1 && role != kAdminName) role = kMainName;
    const std::string what = "inherited socket '" + names[i] + "' (fd " + std::to_string(fd) + ")";
    if (role != kMainName && role != kAdminName) {
      throw std::runtime_error(what + " has an unknown name: name the client socket '" +
                               std::string(kMainName) + "' and the admin socket '" + kAdminName +
                               "' (FileDescriptorName=)");
    }
    const int r = sd_is_socket_unix(fd, SOCK_STREAM, /*listening=*/1, nullptr, 0);
    if (r < 0) throw std::runtime_error(what + ": " + std::strerror(-r));
    if (r == 0) throw std::runtime_error(what + " is not a listening Unix stream socket");
    proto::UniqueFd& slot = role == kMainName ? out.main : out.admin;
    if (slot.get() >= 0) throw std::runtime_error(what + ": a second '" + role + "' socket");
    (role == kMainName ? out.main_path : out.admin_path) = socket_path(fd);
    slot = std::move(fds[i]);
  }
  return out;
}

}  // namespace qbus::daemon
