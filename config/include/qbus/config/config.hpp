// qbusd's configuration: a plain, validated struct. JSON exists only at this edge; the
// broker never sees it. Every field has a built-in default (config/README.md lists them).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "qbus/proto/codec.hpp"

namespace qbus::config {

struct QueueSettings {
  std::uint32_t max_messages = 100'000;
  std::uint64_t max_bytes = 64ull << 20;
  proto::Overflow overflow = proto::Overflow::block;
};

struct QueueDeclaration {
  std::string key;
  QueueSettings settings;
};

struct Config {
  // Listener
  std::string socket_path;  // empty: the default for this user (docs/architecture.md)
  std::uint32_t socket_mode = 0666;
  // Admin socket: root, the daemon's own uid and members of admin_group may use it.
  std::string admin_socket_path;  // empty: the default for this user (docs/architecture.md)
  std::uint32_t admin_socket_mode = 0660;
  std::string admin_group;  // a group name; empty: no group

  // TCP listener: off unless tcp_listen ("HOST:PORT") is set; then a token file is required.
  std::string tcp_listen;
  std::string tcp_token_file;

  // Logging: trace, debug, info, warn or error.
  std::string log_level = "info";

  // Limits
  std::uint32_t max_payload_bytes = 1u << 20;
  std::uint32_t max_queues = 65'536;
  // Queues one uid may hold; when the file leaves it out, the smaller of 4096 and
  // max_queues. More than max_queues is an error.
  std::uint32_t uid_max_queues = 4'096;
  std::uint32_t max_connections = 16'384;
  std::uint32_t uid_max_connections = 1'024;
  std::uint64_t uid_max_queued_bytes = 1ull << 30;
  std::uint64_t uid_max_queued_messages = 1'000'000;
  std::uint32_t max_waiting_receives = 64;
  std::uint32_t uid_max_waiting_receives = 4'096;
  // How long an empty queue whose declarer disconnected stays; 0: it goes at once.
  std::uint32_t declared_queue_grace_ms = 60'000;
  std::uint32_t max_receive_batch = 4'096;
  std::uint64_t max_outbound_bytes = 4ull << 20;
  // What all connections of one uid may have waiting to be read by their peers: answer
  // bytes, and region fds (each an open file in qbusd until the peer reads it).
  std::uint64_t uid_max_outbound_bytes = 64ull << 20;
  std::uint32_t uid_max_pending_fds = 256;
  std::uint32_t handshake_timeout_ms = 5'000;
  std::uint32_t max_pending_requests = 1'024;
  std::uint32_t max_parked_sends = 64;
  // Shared-memory regions: the largest one, what one uid may own, and the broker's total
  // (each live region holds one fd in the daemon).
  std::uint64_t max_region_bytes = 1ull << 30;
  std::uint64_t uid_max_region_bytes = 4ull << 30;
  std::uint32_t uid_max_regions = 1'024;
  std::uint32_t max_regions = 65'536;
  // Obsolete and ignored (qbusd warns when it is not 0): the budget of a pool of regions
  // made ahead of demand, which ended when qbusd stopped allocating region memory. Still
  // parsed so that an older file keeps loading.
  std::uint64_t region_pool_bytes = 0;

  QueueSettings queue_defaults;
  // Each process's inbox for direct messages.
  QueueSettings inbox{10'000, 16ull << 20, proto::Overflow::reject};
  std::vector<QueueDeclaration> queues;
};

// The path read when --config is not given and the daemon runs as root.
inline constexpr std::string_view kSystemConfigPath = "/etc/qbus/qbusd.json";

struct LoadResult {
  std::optional<Config> config;
  std::string error;  // one line: "FIELD.PATH: problem" (or the file/JSON problem)
};

// The largest config file qbusd reads; a larger one is refused, not truncated.
inline constexpr std::size_t kMaxConfigFileBytes = 1u << 20;
// The largest token file (the token itself is at most proto::kMaxTokenSize bytes).
inline constexpr std::size_t kMaxTokenFileBytes = 64u << 10;

// Parses and validates JSON text. Unknown keys, wrong types and out-of-range values are
// errors naming the field path, e.g. "limits.max_payload_bytes: must be at most 67108864".
LoadResult parse(std::string_view json_text);
// Reads and parses the file at `path` (a symlink is followed). Anything but a regular file
// (a FIFO, a device, a directory) is refused without blocking on it, and so is a file over
// kMaxConfigFileBytes; at most that many bytes are ever read. Thread-safe: it touches no
// shared state (qbusd calls it off the broker's thread on reload).
LoadResult load_file(const std::string& path);

// Reads the TCP token. The file must be a regular file (no FIFO or device, never blocked
// on), owned by root or by the daemon's effective uid (sshd's rule for keys: someone else
// could rewrite it), that neither group nor others can read or write, of at most
// kMaxTokenFileBytes, holding a non-empty token (surrounding whitespace is ignored). On
// failure returns nullopt and sets `error` to one line naming the file and the problem.
std::optional<std::string> load_token(const std::string& path, std::string& error);

bool is_valid_log_level(std::string_view level);

// The configuration as JSON in the file's shape, every field present (defaults filled in).
// It holds no secrets: the TCP token lives in its own file, of which only the path shows.
// `socket_path`/`admin_path` are the resolved paths qbusd uses.
std::string to_json_text(const Config& c, const std::string& socket_path,
                         const std::string& admin_path);
std::optional<proto::Overflow> parse_overflow(std::string_view name);

}  // namespace qbus::config
