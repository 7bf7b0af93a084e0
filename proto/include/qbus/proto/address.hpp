// Broker addresses ("unix:/path", "tcp:HOST:PORT" or "tls:HOST:PORT") and the default socket
// locations from docs/architecture.md ("Names users rely on"), shared by qbusd, libqbus and qbusctl
// so all three agree.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace qbus::proto {

struct Address {
  enum class Kind { unix_socket, tcp };
  Kind kind = Kind::unix_socket;
  std::string path;  // unix
  std::string host;  // tcp
  std::uint16_t port = 0;
  bool tls = false;  // tcp: a "tls:" address, TLS over the connection (PROTOCOL.md section 10)

  std::string to_string() const;
};

// Parses an address; on failure returns nullopt and sets `error` to a sentence naming
// the problem. A bare absolute path is accepted as a unix address. `for_listening` also
// accepts TCP port 0 (any free port).
std::optional<Address> parse_address(std::string_view text, std::string& error,
                                     bool for_listening = false);

// Directory holding the default sockets: /run/qbus for root, otherwise
// $XDG_RUNTIME_DIR/qbus, otherwise /tmp/qbus-$UID.
std::string default_runtime_dir();
std::string default_socket_path();
std::string default_admin_socket_path();

}  // namespace qbus::proto
