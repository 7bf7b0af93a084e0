// qbus-bridge's configuration (config/bridge.example.json, docs/bridge.md): where the local
// qbusd and the NATS server are, how to authenticate to NATS, and the routes that carry
// messages between a qbus queue and a JetStream subject.
//
// Parsing validates everything a start needs: an unknown field, a bad key or subject, a
// credentials file that cannot be read safely, or routes that would loop back into
// themselves throw BridgeConfigError with one line naming the field.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace qbus::bridge {

class BridgeConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct NatsSettings {
  std::string url = "nats://127.0.0.1:4222";
  // At most one way to authenticate; the secrets are read from files with checked
  // permissions (never given on the command line or in this file).
  std::string user;
  std::string password;  // read from password_file
  std::string token;     // read from token_file
  std::string creds_file;
  // TLS: the CA that signs the server's certificate, and this client's certificate and key.
  std::string tls_ca;
  std::string tls_certificate;
  std::string tls_key;
  // Between two attempts to reach the server after it went away.
  std::int64_t reconnect_wait_ms = 1000;
};

enum class Direction : std::uint8_t {
  outbound,  // qbus to NATS
  inbound,   // NATS to qbus
};

// A route carries a qbus queue to and from JetStream (at least once), or qbus subjects to
// and from core NATS subjects (at most once, as both sides' subjects are).
struct Route {
  std::string name;
  Direction direction = Direction::outbound;
  std::string queue;  // the qbus queue; empty for a subject route
  // A subject route's qbus pattern: outbound, what the bridge subscribes to; inbound, where
  // it publishes (with the same wildcards as `subject`, whose literal prefix it replaces).
  std::string qbus_subject;
  // The NATS subject. A queue route: published to (outbound) or the consumer's filter
  // (inbound). A subject route: the pattern the qbus subjects map onto (outbound) or the
  // one subscribed to (inbound).
  std::string subject;
  // The JetStream stream. Outbound: made with `subject` if it does not exist (optional);
  // inbound: the stream the durable consumer reads (required).
  std::string stream;
  std::string consumer;        // inbound: the durable consumer's name (default: the route's)
  std::uint32_t batch = 64;    // messages taken per round trip on either side
  bool durable_queue = false;  // outbound: declare the queue durable (it outlives qbusd)
};

struct BridgeConfig {
  std::string qbus_address;  // empty: libqbus's default (QBUS_ADDRESS, the system socket)
  std::string client_name = "qbus-bridge";
  std::string host;  // this host's name in the provenance headers; empty: gethostname()
  std::string status_file = "/run/qbus-bridge/status.json";  // qbus-bridge.service's
  std::string metrics_file;  // Prometheus text for node_exporter's textfile collector; off
  // Where Prometheus scrapes the same text itself (metrics_http.hpp): "tcp:HOST:PORT" or
  // "unix:/path"; empty: off.
  std::string metrics_listen;
  NatsSettings nats;
  std::vector<Route> routes;
};

// Whether the files holding NATS credentials are read (and checked): `skip` for
// `--status`, which needs none of them and may be run by another user than the bridge's.
enum class Secrets { read, skip };

// `text` is the JSON document; secrets are read from the files it names.
BridgeConfig parse_bridge_config(std::string_view text, Secrets secrets = Secrets::read);
// Reads and parses the file at `path` (errors name it).
BridgeConfig load_bridge_config(const std::string& path, Secrets secrets = Secrets::read);

// What is wrong with `listen` as a metrics_listen address; "" when nothing is. It must be
// "tcp:HOST:PORT" (HOST a name or an IP address, an IPv6 one in brackets; PORT 0..65535,
// 0 for any free port) or "unix:/absolute/path". Shared by the parser and MetricsEndpoint.
std::string metrics_listen_problem(std::string_view listen);

// Whether `subject` is a NATS subject: dot-separated non-empty tokens of printable ASCII
// without space; with `wildcards`, a token may be `*` and the last one `>`.
bool is_valid_nats_subject(std::string_view subject, bool wildcards);
// Whether some subject matches both patterns (`*` one token, a last `>` the rest); for a
// subject without wildcards, whether the other pattern matches it.
bool patterns_overlap(std::string_view a, std::string_view b);
// `subject`, which matches pattern `from`, with `from`'s literal prefix (its tokens before
// the first wildcard) replaced by `to`'s: "sensors.kitchen.temp" from "sensors.>" to
// "fleet.web01.sensors.>" is "fleet.web01.sensors.kitchen.temp".
std::string map_subject(std::string_view subject, std::string_view from, std::string_view to);

}  // namespace qbus::bridge
