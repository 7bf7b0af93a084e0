#include "qbus/proto/address.hpp"

#include <unistd.h>

#include <sys/un.h>
#include <charconv>
#include <cstdlib>

namespace qbus::proto {

std::string Address::to_string() const {
  if (kind == Kind::unix_socket) return "unix:" + path;
  return (tls ? "tls:" : "tcp:") + host + ":" + std::to_string(port);
}

std::optional<Address> parse_address(std::string_view text, std::string& error,
                                     bool for_listening) {
  Address a;
  if (text.starts_with("unix:") || text.starts_with("/")) {
    a.kind = Address::Kind::unix_socket;
    a.path = std::string(text.starts_with("/") ? text : text.substr(5));
    if (a.path.empty()) {
      error = "unix address has an empty path";
      return std::nullopt;
    }
    if (a.path.size() >= sizeof(sockaddr_un::sun_path)) {
      error = "unix socket path is longer than " +
              std::to_string(sizeof(sockaddr_un::sun_path) - 1) + " bytes";
      return std::nullopt;
    }
    return a;
  }
  if (text.starts_with("tcp:") || text.starts_with("tls:")) {
    a.tls = text.starts_with("tls:");
    const std::string scheme(text.substr(0, 3));
    auto rest = text.substr(4);
    auto colon = rest.rfind(':');
    if (colon == std::string_view::npos || colon == 0) {
      error = scheme + " address must be " + scheme + ":HOST:PORT";
      return std::nullopt;
    }
    auto host = rest.substr(0, colon);
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
      host = host.substr(1, host.size() - 2);
    }
    if (host.empty()) {
      error = scheme + " address has an empty host";
      return std::nullopt;
    }
    auto port_text = rest.substr(colon + 1);
    unsigned port = 0;
    auto [ptr, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
    const unsigned min_port = for_listening ? 0 : 1;
    if (ec != std::errc{} || ptr != port_text.data() + port_text.size() || port < min_port ||
        port > 65535) {
      error = scheme + " port '" + std::string(port_text) + "' is not a number from " +
              std::to_string(min_port) + " to 65535";
      return std::nullopt;
    }
    a.kind = Address::Kind::tcp;
    a.host = std::string(host);
    a.port = static_cast<std::uint16_t>(port);
    return a;
  }
  error = "address '" + std::string(text) + "' must start with unix:, tcp: or tls:";
  return std::nullopt;
}

std::string default_runtime_dir() {
  const uid_t uid = ::geteuid();
  if (uid == 0) return "/run/qbus";
  if (const char* xdg = std::getenv("XDG_RUNTIME_DIR"); xdg && *xdg == '/') {
    return std::string(xdg) + "/qbus";
  }
  return "/tmp/qbus-" + std::to_string(uid);
}

std::string default_socket_path() {
  return default_runtime_dir() + "/qbus.sock";
}
std::string default_admin_socket_path() {
  return default_runtime_dir() + "/admin.sock";
}

}  // namespace qbus::proto
