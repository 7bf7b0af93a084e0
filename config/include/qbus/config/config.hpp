// qbusd's configuration: a plain, validated struct. JSON exists only at this edge; the
// broker never sees it. Every field has a built-in default (config/README.md lists them);
// the limits are described once, in limits.def.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "qbus/config/limits.hpp"
#include "qbus/proto/codec.hpp"

namespace qbus::config {

// The contents of a file holding a secret (a token, a password): a regular file owned by
// root or by this process's uid and not accessible to group or others, of at most 64 KiB;
// nullopt with one line naming `what`, the file and the problem in `error` otherwise.
std::optional<std::string> read_secret_file(const std::string& what, const std::string& path,
                                            std::string& error);

struct QueueSettings {
  std::uint32_t max_messages = kQueueDefaults.max_messages;
  std::uint64_t max_bytes = kQueueDefaults.max_bytes;
  proto::Overflow overflow = kQueueDefaults.overflow;
};

struct QueueDeclaration {
  std::string key;
  QueueSettings settings;
  // Acknowledgement mode (proto/PROTOCOL.md section 17); zero or empty: off.
  std::uint32_t ack_timeout_ms = 0;
  std::uint16_t max_deliveries = 0;
  std::string dead_letter;
  bool dead_letter_overflow = false;
  // Time, priorities and consumers (17.8-17.10); zero or false: off.
  std::uint32_t ttl_ms = 0;
  bool dead_letter_expired = false;
  std::uint8_t priorities = 0;
  bool single_active_consumer = false;
  // Journaled in the state directory (config/README.md, "Storage"); fsync only with durable,
  // use_default: storage.fsync.
  bool durable = false;
  proto::Fsync fsync = proto::Fsync::use_default;
  // Each message gets a broker-unique qbus-id header (proto/PROTOCOL.md 17.12).
  bool message_ids = false;
};

// Bounds of storage.batch_ms and storage.segment_bytes. A segment holds at least two of the
// journal's 32 KiB blocks (docs/journal.md).
inline constexpr std::uint32_t kMinStorageBatchMs = 1;
inline constexpr std::uint32_t kMaxStorageBatchMs = 1000;
inline constexpr std::uint64_t kMinSegmentBytes = 64ull << 10;
inline constexpr std::uint64_t kMaxSegmentBytes = 1ull << 30;

// The journal of durable queues. Read once at startup: a reload keeps the running values.
struct StorageSettings {
  std::string dir;  // empty: the default (qbusd --state-dir, XDG_STATE_HOME, /var/lib/qbus)
  // The policy of durable queues declared without one; never use_default.
  proto::Fsync fsync = proto::Fsync::batch;
  std::uint32_t batch_ms = 10;
  std::uint64_t segment_bytes = 64ull << 20;
  bool operator==(const StorageSettings&) const = default;
};

// The Prometheus endpoint (config/README.md, "metrics"). Read once at startup: a reload
// keeps the running values.
inline constexpr std::uint32_t kMaxQueueSeriesCeiling = 1'000'000;
struct MetricsSettings {
  std::string listen;  // "unix:/path" or "tcp:HOST:PORT"; empty: no endpoint
  // Queues given series of their own; the rest are summed under queue="(other)".
  std::uint32_t max_queue_series = 1000;
  bool operator==(const MetricsSettings&) const = default;
};

// One rule of the access policy (config/README.md, "policy"), validated: user and group
// names are resolved to ids here, at load time (the broker never looks names up).
struct PolicyRuleSettings {
  bool allow = true;
  // One bit per operation, in broker::Operation's order: send, receive, declare, request,
  // send_direct, manage (kPolicyOperations). A send_direct rule has no other operation.
  std::uint8_t operations = 0;
  bool everyone = false;
  std::vector<std::uint32_t> uids;  // "uids" and the ids of "users"
  std::vector<std::uint32_t> gids;  // "gids" and the ids of "groups"
  std::vector<std::string> keys;    // exact keys and patterns
  std::vector<std::string> prefixes;
  // send_direct only: the receivers, by uid ("to_uids" and the ids of "to_users"), by gid
  // ("to_gids" and the ids of "to_groups"), or all of them.
  bool to_everyone = false;
  std::vector<std::uint32_t> to_uids;
  std::vector<std::uint32_t> to_gids;
  // Where the rule was written: "policy.rules[2]" or "/etc/qbus/policy.d/20-x.json:
  // rules[3]", for the audit line. Not part of what the rule means: == ignores it.
  std::string origin;
  bool operator==(const PolicyRuleSettings& o) const {
    return allow == o.allow && operations == o.operations && everyone == o.everyone &&
           uids == o.uids && gids == o.gids && keys == o.keys && prefixes == o.prefixes &&
           to_everyone == o.to_everyone && to_uids == o.to_uids && to_gids == o.to_gids;
  }
};

struct PolicySettings {
  bool configured = false;  // the file has a "policy" section; without one nothing is asked
  // "default" as the file gives it; unset (default_set false), the bus decides: allow on a
  // user bus, deny on a system bus (effective_default_allow).
  bool default_set = false;
  bool default_allow = true;
  std::vector<PolicyRuleSettings> rules;
  bool operator==(const PolicySettings&) const = default;
};

// A client certificate's subject CN mapped to a local uid (config/README.md, "tcp.tls"): a
// TCP peer presenting it is judged by the policy as that uid, its gid and groups.
struct TlsClientSettings {
  std::string cn;
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  std::vector<std::uint32_t> groups;  // supplementary groups of the user, when it has an entry
  bool operator==(const TlsClientSettings&) const = default;
};

// TLS on the TCP listener: on when `certificate` (and so `key`) is set. Paths are absolute.
struct TlsSettings {
  std::string certificate;  // PEM chain, the server's certificate first
  std::string key;          // PEM private key; load_private_key's ownership and mode rule
  std::string client_ca;    // PEM CAs; set: every client must present a certificate they sign
  std::vector<TlsClientSettings> clients;  // needs client_ca
  bool enabled() const { return !certificate.empty(); }
  bool operator==(const TlsSettings&) const = default;
};

inline constexpr std::size_t kMaxTlsClients = 10'000;

// In broker::Operation's order: bit i of PolicyRuleSettings::operations is entry i.
inline constexpr std::string_view kPolicyOperations[] = {"send",    "receive",     "declare",
                                                         "request", "send_direct", "manage"};
// The bit of send_direct in PolicyRuleSettings::operations.
inline constexpr std::uint8_t kSendDirectBit = 0x10;
// What `"*"` names: every operation but send_direct, whose rules name receivers, not keys.
inline constexpr std::uint8_t kEveryKeyOperation = 0x2F;

// The limits (max_queues, ...) are the members of LimitValues, one per row of limits.def.
struct Config : LimitValues {
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
  TlsSettings tcp_tls;
  // Plain TCP on an address other hosts can reach sends the token and every message in
  // clear: refused at startup unless this is set.
  bool tcp_allow_plaintext = false;

  // Logging: trace, debug, info, warn or error.
  std::string log_level = "info";

  QueueSettings queue_defaults;
  // Each process's inbox for direct messages.
  QueueSettings inbox{kInboxDefaults.max_messages, kInboxDefaults.max_bytes,
                      kInboxDefaults.overflow};
  std::vector<QueueDeclaration> queues;
  // The config file's rules, then those of each drop-in file (load_file).
  PolicySettings policy;
  // Where load_file reads drop-in policy files; empty: policy.d beside the config file.
  // load_file sets it to the directory it read.
  std::string policy_dir;
  // "auto", "system" or "user" (config/README.md, "bus"). qbusd resolves "auto" before it
  // uses a configuration, so the one in effect is always "system" or "user".
  std::string bus = "auto";
  StorageSettings storage;
  MetricsSettings metrics;
};

// On a system bus the policy is always on, with its baseline (each uid's private namespace,
// root), and an unset policy.default is deny.
inline bool is_system_bus(const Config& c) {
  return c.bus == "system";
}
inline bool effective_default_allow(const Config& c) {
  return c.policy.default_set ? c.policy.default_allow : !is_system_bus(c);
}

// The path read when --config is not given and the daemon runs as root.
inline constexpr std::string_view kSystemConfigPath = "/etc/qbus/qbusd.json";

struct LoadResult {
  std::optional<Config> config;
  std::string error;  // one line: "FIELD.PATH: problem" (or the file/JSON problem)
};

// Bounds on the policy: drop-in files read from the policy directory, and rules in all
// (the config file's and every drop-in's). Beyond either, loading fails naming the bound.
inline constexpr std::size_t kMaxPolicyFiles = 256;
inline constexpr std::size_t kMaxPolicyRules = 10'000;

// The largest config file qbusd reads; a larger one is refused, not truncated.
inline constexpr std::size_t kMaxConfigFileBytes = 1u << 20;
// The largest token file (the token itself is at most proto::kMaxTokenSize bytes).
inline constexpr std::size_t kMaxTokenFileBytes = 64u << 10;

// Parses and validates JSON text. Unknown keys, wrong types and out-of-range values are
// errors naming the field path, e.g. "limits.max_payload_bytes: must be at most 67108864".
LoadResult parse(std::string_view json_text);
// Parses one drop-in policy file's text, `{"rules": [...]}` and nothing else, into rules
// validated as the config file's are. On failure returns nullopt and sets `error` to one
// line, "rules[3].users: unknown user 'x'" (without the file name). Thread-safe.
std::optional<std::vector<PolicyRuleSettings>> parse_policy_rules(std::string_view json_text,
                                                                  std::string& error);
// Reads and parses the file at `path` (a symlink is followed), then the drop-in policy
// files: every `*.json` in `policy_dir` (default: `policy.d` in the directory of `path`), in
// byte order of their names, their rules appended to the file's. A missing directory adds
// nothing; an unreadable one, or a `*.json` entry that is not a readable regular file, is an
// error naming it. An error in a drop-in names the file and the rule. Anything but a regular file
// (a FIFO, a device, a directory) is refused without blocking on it, and so is a file over
// kMaxConfigFileBytes; at most that many bytes are ever read. Thread-safe: it touches no
// shared state (qbusd calls it off the broker's thread on reload).
LoadResult load_file(const std::string& path);

// The drop-in directory a system qbusd reads when it has no config file, so that a file
// dropped there and a reload open a queue on a fresh install, as the README shows.
inline constexpr std::string_view kSystemPolicyDir = "/etc/qbus/policy.d";
// The built-in defaults plus the drop-in policy files of `dir`, read as load_file reads
// them (a missing directory adds nothing). Thread-safe, like load_file.
LoadResult load_dropins(const std::string& dir);

// Reads the TCP token. The file must be a regular file (no FIFO or device, never blocked
// on), owned by root or by the daemon's effective uid (sshd's rule for keys: someone else
// could rewrite it), that neither group nor others can read or write, of at most
// kMaxTokenFileBytes, holding a non-empty token (surrounding whitespace is ignored). On
// failure returns nullopt and sets `error` to one line naming the file and the problem.
std::optional<std::string> load_token(const std::string& path, std::string& error);

// Reads a TLS private key file under load_token's rule (regular file, owned by root or the
// daemon's uid, no group or other access, at most kMaxTokenFileBytes). Returns its text, or
// nullopt with `error` naming the file and the problem.
std::optional<std::string> load_private_key(const std::string& path, std::string& error);

bool is_valid_log_level(std::string_view level);

// The configuration as JSON in the file's shape, every field present (defaults filled in),
// so that it parses back: a durable queue shows the fsync policy in effect (storage.fsync
// when it has none of its own), any other queue no fsync, which it may not have.
// It holds no secrets: the TCP token lives in its own file, of which only the path shows.
// `socket_path`/`admin_path` are the resolved paths qbusd uses.
std::string to_json_text(const Config& c, const std::string& socket_path,
                         const std::string& admin_path);
std::optional<proto::Overflow> parse_overflow(std::string_view name);
// "always", "batch" or "none"; anything else, "default" included, is nullopt.
std::optional<proto::Fsync> parse_fsync(std::string_view name);

}  // namespace qbus::config
