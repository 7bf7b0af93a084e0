#include "qbus/config/config.hpp"

#include "files.hpp"
#include "qbus/proto/address.hpp"
#include "qbus/proto/frames.hpp"
#include "tls_config.hpp"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <stdexcept>
#include <type_traits>
#include <vector>

namespace qbus::config {
namespace {

using json = nlohmann::json;

struct FieldError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] void bad(const std::string& path, const std::string& what) {
  throw FieldError(path + ": " + what);
}

std::string type_name(const json& j) {
  return j.type_name();
}

// A JSON object being read field by field; finish() reports the keys nobody asked for.
class Object {
 public:
  Object(const json& j, std::string path) : j_(j), path_(std::move(path)) {
    if (!j_.is_object()) bad(display(), "must be an object, not " + type_name(j_));
  }

  const json* get(const std::string& key) {
    seen_.insert(key);
    auto it = j_.find(key);
    return it == j_.end() ? nullptr : &*it;
  }
  std::string child(const std::string& key) const {
    return path_.empty() ? key : path_ + "." + key;
  }

  template <typename T>
  void number(const std::string& key, T& out, std::uint64_t min, std::uint64_t max) {
    const json* v = get(key);
    if (!v) return;
    if (!v->is_number_integer()) bad(child(key), "must be an integer, not " + type_name(*v));
    if (v->is_number_unsigned() || v->get<std::int64_t>() >= 0) {
      const auto n = v->get<std::uint64_t>();
      if (n < min) bad(child(key), "must be at least " + std::to_string(min));
      if (n > max) bad(child(key), "must be at most " + std::to_string(max));
      out = static_cast<T>(n);
      return;
    }
    bad(child(key), "must be at least " + std::to_string(min));
  }

  void string(const std::string& key, std::string& out) {
    const json* v = get(key);
    if (!v) return;
    if (!v->is_string()) bad(child(key), "must be a string, not " + type_name(*v));
    out = v->get<std::string>();
  }

  void boolean(const std::string& key, bool& out) {
    const json* v = get(key);
    if (!v) return;
    if (!v->is_boolean()) bad(child(key), "must be true or false, not " + type_name(*v));
    out = v->get<bool>();
  }

  void finish() const {
    for (auto it = j_.begin(); it != j_.end(); ++it) {
      if (!seen_.count(it.key())) bad(child(it.key()), "unknown setting");
    }
  }

 private:
  std::string display() const { return path_.empty() ? "(top level)" : path_; }

  const json& j_;
  std::string path_;
  std::set<std::string> seen_;
};

void read_queue_settings(Object& o, QueueSettings& s) {
  o.number("max_messages", s.max_messages, 1, std::numeric_limits<std::uint32_t>::max());
  o.number("max_bytes", s.max_bytes, 1, std::numeric_limits<std::uint64_t>::max() / 2);
  std::string overflow;
  o.string("overflow", overflow);
  if (o.get("overflow")) {
    auto parsed = parse_overflow(overflow);
    if (!parsed) bad(o.child("overflow"), "must be \"reject\", \"drop_oldest\" or \"block\"");
    s.overflow = *parsed;
  }
}

// Reads the object at top-level key `name`, when the file has one, and then refuses any
// key of it that `read` did not ask for.
template <typename Read>
void read_section(Object& top, const char* name, Read&& read) {
  if (const json* j = top.get(name)) {
    Object o(*j, name);
    read(o);
    o.finish();
  }
}

// "path" (absolute) and "mode" (an octal string) of a socket file.
void read_socket_file(Object& o, const std::string& section, std::string& path,
                      std::uint32_t& mode) {
  o.string("path", path);
  if (!path.empty() && path.front() != '/') bad(section + ".path", "must be an absolute path");
  std::string text;
  o.string("mode", text);
  if (!o.get("mode")) return;
  unsigned long m = 0;
  const bool octal =
      !text.empty() && text.size() <= 4 && text.find_first_not_of("01234567") == std::string::npos;
  if (octal) m = std::stoul(text, nullptr, 8);
  if (!octal || m > 0777) bad(section + ".mode", "must be an octal string such as \"0660\"");
  mode = static_cast<std::uint32_t>(m);
}

void read_tcp(Object& o, Config& c) {
  o.string("listen", c.tcp_listen);
  o.string("token_file", c.tcp_token_file);
  if (const json* v = o.get("allow_plaintext")) {
    if (!v->is_boolean()) bad("tcp.allow_plaintext", "must be true or false");
    c.tcp_allow_plaintext = v->get<bool>();
  }
  if (const json* t = o.get("tls")) {
    if (auto why = detail::read_tls(*t, c.tcp_tls); !why.empty()) throw FieldError(why);
  }
  if (!c.tcp_listen.empty()) {
    std::string why;
    if (c.tcp_listen.starts_with("tcp:") || c.tcp_listen.starts_with("unix:") ||
        c.tcp_listen.find(':') == std::string::npos) {
      bad("tcp.listen", "must be HOST:PORT, such as \"127.0.0.1:7878\"");
    }
    if (!proto::parse_address("tcp:" + c.tcp_listen, why, true)) bad("tcp.listen", why);
    if (c.tcp_token_file.empty()) bad("tcp.token_file", "is required when tcp.listen is set");
  }
  if (!c.tcp_token_file.empty() && c.tcp_token_file.front() != '/') {
    bad("tcp.token_file", "must be an absolute path");
  }
}

std::optional<proto::Fsync> read_fsync(Object& o, const std::string& key) {
  std::string name;
  o.string(key, name);
  if (!o.get(key)) return std::nullopt;
  auto parsed = parse_fsync(name);
  if (!parsed) bad(o.child(key), "must be \"always\", \"batch\" or \"none\"");
  return parsed;
}

void read_storage(Object& o, StorageSettings& s) {
  o.string("dir", s.dir);
  if (!s.dir.empty() && s.dir.front() != '/') bad("storage.dir", "must be an absolute path");
  if (auto f = read_fsync(o, "fsync")) s.fsync = *f;
  o.number("batch_ms", s.batch_ms, kMinStorageBatchMs, kMaxStorageBatchMs);
  o.number("segment_bytes", s.segment_bytes, kMinSegmentBytes, kMaxSegmentBytes);
}

void read_metrics(Object& o, MetricsSettings& m) {
  o.string("listen", m.listen);
  o.number("max_queue_series", m.max_queue_series, 0u, kMaxQueueSeriesCeiling);
  if (m.listen.empty()) return;
  std::string why;
  const auto a = proto::parse_address(m.listen, why, true);
  if (!a) bad("metrics.listen", why);
  if (a->tls) bad("metrics.listen", "must be unix:/path or tcp:HOST:PORT (no TLS)");
  if (a->kind == proto::Address::Kind::unix_socket && !m.listen.starts_with("unix:")) {
    bad("metrics.listen", "must be unix:/path or tcp:HOST:PORT, such as \"tcp:127.0.0.1:9464\"");
  }
}

// Every row of limits.def, in its order, so that of several bad values the same one is
// named every time.
void read_limits(Object& o, Config& c) {
  for_each_limit(
      [&](const LimitSpec& spec, auto& value) {
        const std::string key(spec.key);
        // The one limit bounded by another: uid_max_queues never exceeds max_queues (read
        // before it). A small table is not an error for a setting left out.
        const bool per_uid_queues = key == "uid_max_queues";
        if (per_uid_queues && !o.get(key)) {
          c.uid_max_queues = std::min(c.uid_max_queues, c.max_queues);
          return;
        }
        o.number(key, value, spec.min, spec.max);
        if (per_uid_queues && c.uid_max_queues > c.max_queues) {
          bad("limits.uid_max_queues",
              "must be at most limits.max_queues (" + std::to_string(c.max_queues) + ")");
        }
      },
      c);
}

void read_queues(const json& qs, Config& c) {
  if (!qs.is_array()) bad("queues", "must be an array, not " + type_name(qs));
  std::set<std::string> keys;
  for (std::size_t i = 0; i < qs.size(); ++i) {
    const std::string path = "queues[" + std::to_string(i) + "]";
    Object o(qs[i], path);
    QueueDeclaration q;
    q.settings = c.queue_defaults;
    o.string("key", q.key);
    if (!o.get("key")) bad(path + ".key", "is required");
    if (!proto::is_valid_key(q.key)) {
      bad(path + ".key", "must be 1-255 characters of A-Z a-z 0-9 . _ : / -");
    }
    if (!keys.insert(q.key).second) bad(path + ".key", "'" + q.key + "' is declared twice");
    read_queue_settings(o, q.settings);
    // 0 and "" are off, as the effective configuration shows them.
    o.number("ack_timeout_ms", q.ack_timeout_ms, 0, 86'400'000u);
    o.number("max_deliveries", q.max_deliveries, 0, 65'535);
    o.string("dead_letter", q.dead_letter);
    o.boolean("dead_letter_overflow", q.dead_letter_overflow);
    o.number("ttl_ms", q.ttl_ms, 0, std::numeric_limits<std::uint32_t>::max());
    o.boolean("dead_letter_expired", q.dead_letter_expired);
    o.number("priorities", q.priorities, 0, proto::kMaxPriorities);
    o.boolean("single_active_consumer", q.single_active_consumer);
    o.boolean("durable", q.durable);
    o.boolean("message_ids", q.message_ids);
    if (auto f = read_fsync(o, "fsync")) {
      if (!q.durable) bad(path + ".fsync", "needs \"durable\": true");
      q.fsync = *f;
    }
    if (!q.dead_letter.empty()) {
      if (!proto::is_valid_key(q.dead_letter)) {
        bad(path + ".dead_letter", "must be 1-255 characters of A-Z a-z 0-9 . _ : / -");
      }
      if (q.dead_letter == q.key) bad(path + ".dead_letter", "must name another queue");
    }
    if (q.dead_letter_overflow && q.dead_letter.empty()) {
      bad(path + ".dead_letter_overflow", "needs dead_letter, the queue to move them to");
    }
    if (q.dead_letter_expired && q.dead_letter.empty()) {
      bad(path + ".dead_letter_expired", "needs dead_letter, the queue to move them to");
    }
    o.finish();
    c.queues.push_back(std::move(q));
  }
}

// A list of strings at `key` of a rule; an explicit empty list is an error, since a rule
// that names nobody or no key can never match.
std::vector<std::string> strings(Object& o, const std::string& key) {
  std::vector<std::string> out;
  const json* v = o.get(key);
  if (!v) return out;
  if (!v->is_array()) bad(o.child(key), "must be an array of strings, not " + type_name(*v));
  if (v->empty()) bad(o.child(key), "must not be empty");
  for (const auto& item : *v) {
    if (!item.is_string()) bad(o.child(key), "must hold strings, not " + type_name(item));
    out.push_back(item.get<std::string>());
  }
  return out;
}

std::vector<std::uint32_t> ids(Object& o, const std::string& key) {
  std::vector<std::uint32_t> out;
  const json* v = o.get(key);
  if (!v) return out;
  if (!v->is_array()) bad(o.child(key), "must be an array of integers, not " + type_name(*v));
  if (v->empty()) bad(o.child(key), "must not be empty");
  for (const auto& item : *v) {
    if (!item.is_number_unsigned() || item.get<std::uint64_t>() > 0xFFFFFFFEu) {
      bad(o.child(key), "must hold ids from 0 to 4294967294");
    }
    out.push_back(static_cast<std::uint32_t>(item.get<std::uint64_t>()));
  }
  return out;
}

// getpwnam_r/getgrnam_r with a growing buffer (thread-safe: reloads parse off the broker
// thread).
template <typename Entry, typename Lookup>
std::optional<std::uint32_t> lookup_id(const std::string& name, Lookup&& lookup) {
  std::vector<char> buf(1024);
  while (buf.size() <= (1u << 20)) {
    Entry entry{};
    Entry* found = nullptr;
    const int e = lookup(name.c_str(), &entry, buf.data(), buf.size(), &found);
    if (e == ERANGE) {
      buf.resize(buf.size() * 2);
      continue;
    }
    if (e != 0 || !found) return std::nullopt;
    if constexpr (std::is_same_v<Entry, struct passwd>) {
      return found->pw_uid;
    } else {
      return found->gr_gid;
    }
  }
  return std::nullopt;
}

std::uint8_t read_operations(const json& v, const std::string& path) {
  if (v.is_string() && v.get<std::string>() == "*") return kEveryKeyOperation;
  if (!v.is_array() || v.empty()) bad(path, "must be \"*\" or a non-empty array of operations");
  std::uint8_t ops = 0;
  for (const auto& item : v) {
    const auto name = item.is_string() ? item.get<std::string>() : std::string();
    const auto* it = std::find(std::begin(kPolicyOperations), std::end(kPolicyOperations), name);
    if (it == std::end(kPolicyOperations)) {
      bad(path, "unknown operation " + item.dump() +
                    " (send, receive, declare, request, send_direct, manage)");
    }
    ops |= static_cast<std::uint8_t>(1u << (it - std::begin(kPolicyOperations)));
  }
  return ops;
}

// "" when `pattern` is a valid key or pattern: dot-separated tokens, `*` for one whole
// token, `>` only as the last token.
std::string pattern_problem(const std::string& pattern) {
  if (pattern.empty() || pattern.size() > 255) return "must be 1-255 characters";
  std::size_t start = 0;
  while (true) {
    const auto dot = pattern.find('.', start);
    const bool last = dot == std::string::npos;
    const auto token = pattern.substr(start, last ? std::string::npos : dot - start);
    if (token == ">" && !last) return "'>' may only be the last token";
    const bool wildcard = token == "*" || token == ">";
    if (!wildcard && token.find_first_of("*>") != std::string::npos) {
      return "a wildcard must be a whole token ('" + token + "')";
    }
    if (!wildcard && !token.empty() && !proto::is_valid_key(token)) {
      return "must be characters of A-Z a-z 0-9 . _ : / - and the tokens * and >";
    }
    if (last) return "";
    start = dot + 1;
  }
}

// `uids`/`gids` and the ids of `users`/`groups` of a rule, each field's name after
// `prefix` ("" for the senders, "to_" for a send_direct rule's receivers).
void read_principals(Object& o, const std::string& prefix, std::vector<std::uint32_t>& uids,
                     std::vector<std::uint32_t>& gids) {
  uids = ids(o, prefix + "uids");
  gids = ids(o, prefix + "gids");
  for (const auto& user : strings(o, prefix + "users")) {
    auto id = lookup_id<struct passwd>(user, ::getpwnam_r);
    if (!id) bad(o.child(prefix + "users"), "unknown user '" + user + "'");
    uids.push_back(*id);
  }
  for (const auto& name : strings(o, prefix + "groups")) {
    auto id = lookup_id<struct group>(name, ::getgrnam_r);
    if (!id) bad(o.child(prefix + "groups"), "unknown group '" + name + "'");
    gids.push_back(*id);
  }
}

// The rest of a send_direct rule: its receivers, and no keys.
void read_targets(Object& o, const std::string& path, PolicyRuleSettings& r) {
  if (r.operations != kSendDirectBit) {
    bad(o.child(r.allow ? "allow" : "deny"),
        "send_direct names receivers, not keys: give it a rule of its own");
  }
  for (const char* f : {"keys", "prefixes"}) {
    if (o.get(f)) {
      bad(o.child(f),
          "a send_direct rule names receivers (to_users, to_groups, to_uids, "
          "to_gids, to_everyone), not keys");
    }
  }
  if (const json* e = o.get("to_everyone")) {
    if (!e->is_boolean()) bad(o.child("to_everyone"), "must be true or false");
    r.to_everyone = e->get<bool>();
  }
  read_principals(o, "to_", r.to_uids, r.to_gids);
  if (!r.to_everyone && r.to_uids.empty() && r.to_gids.empty()) {
    bad(path,
        "sends to nobody: give to_users, to_groups, to_uids, to_gids or "
        "\"to_everyone\": true");
  }
  o.finish();
}

PolicyRuleSettings read_rule(const json& j, const std::string& path) {
  Object o(j, path);
  PolicyRuleSettings r;
  r.origin = path;
  const json* allow = o.get("allow");
  const json* deny = o.get("deny");
  if ((allow != nullptr) == (deny != nullptr)) bad(path, "needs exactly one of allow or deny");
  r.allow = allow != nullptr;
  r.operations = read_operations(allow ? *allow : *deny, o.child(allow ? "allow" : "deny"));
  if (const json* e = o.get("everyone")) {
    if (!e->is_boolean()) bad(o.child("everyone"), "must be true or false");
    r.everyone = e->get<bool>();
  }
  read_principals(o, "", r.uids, r.gids);
  if (!r.everyone && r.uids.empty() && r.gids.empty()) {
    bad(path, "names nobody: give users, groups, uids, gids or \"everyone\": true");
  }
  if (r.operations & kSendDirectBit) {
    read_targets(o, path, r);
    return r;
  }
  for (const char* f : {"to_users", "to_groups", "to_uids", "to_gids", "to_everyone"}) {
    if (o.get(f)) bad(o.child(f), "only a send_direct rule names targets; this one names keys");
  }
  r.keys = strings(o, "keys");
  for (const auto& k : r.keys) {
    if (auto why = pattern_problem(k); !why.empty()) bad(o.child("keys"), "'" + k + "' " + why);
  }
  r.prefixes = strings(o, "prefixes");
  for (const auto& p : r.prefixes) {
    if (!proto::is_valid_key(p)) {
      bad(o.child("prefixes"), "'" + p + "' must be 1-255 characters of A-Z a-z 0-9 . _ : / -");
    }
  }
  if (r.keys.empty() && r.prefixes.empty()) bad(path, "matches no key: give keys or prefixes");
  o.finish();
  return r;
}

void read_policy(Object& o, PolicySettings& p) {
  p.configured = true;
  std::string def;
  o.string("default", def);
  if (o.get("default")) {
    if (def != "allow" && def != "deny") bad("policy.default", "must be \"allow\" or \"deny\"");
    p.default_set = true;
    p.default_allow = def == "allow";
  }
  if (const json* rules = o.get("rules")) {
    if (!rules->is_array()) bad("policy.rules", "must be an array, not " + type_name(*rules));
    if (rules->size() > kMaxPolicyRules) {
      bad("policy.rules", "holds " + std::to_string(rules->size()) + " rules, more than " +
                              std::to_string(kMaxPolicyRules));
    }
    for (std::size_t i = 0; i < rules->size(); ++i) {
      p.rules.push_back(read_rule((*rules)[i], "policy.rules[" + std::to_string(i) + "]"));
    }
  }
}

Config from_json(const json& root) {
  Config c;
  Object top(root, "");
  read_section(top, "socket",
               [&](Object& o) { read_socket_file(o, "socket", c.socket_path, c.socket_mode); });
  read_section(top, "admin", [&](Object& o) {
    read_socket_file(o, "admin", c.admin_socket_path, c.admin_socket_mode);
    o.string("group", c.admin_group);
    if (!c.admin_group.empty() && c.admin_group.find_first_of(" :/\n") != std::string::npos) {
      bad("admin.group", "must be a group name");
    }
  });
  read_section(top, "tcp", [&](Object& o) { read_tcp(o, c); });
  read_section(top, "log", [&](Object& o) {
    o.string("level", c.log_level);
    if (!is_valid_log_level(c.log_level)) {
      bad("log.level", "must be one of trace, debug, info, warn, error");
    }
  });
  read_section(top, "limits", [&](Object& o) { read_limits(o, c); });
  read_section(top, "queue_defaults", [&](Object& o) { read_queue_settings(o, c.queue_defaults); });
  read_section(top, "inbox", [&](Object& o) { read_queue_settings(o, c.inbox); });
  if (const json* qs = top.get("queues")) read_queues(*qs, c);
  read_section(top, "policy", [&](Object& o) { read_policy(o, c.policy); });
  top.string("policy_dir", c.policy_dir);
  if (!c.policy_dir.empty() && c.policy_dir.front() != '/') {
    bad("policy_dir", "must be an absolute path");
  }
  read_section(top, "storage", [&](Object& o) { read_storage(o, c.storage); });
  read_section(top, "metrics", [&](Object& o) { read_metrics(o, c.metrics); });
  top.string("bus", c.bus);
  if (c.bus != "auto" && c.bus != "system" && c.bus != "user") {
    bad("bus", "must be \"auto\", \"system\" or \"user\"");
  }
  top.finish();
  // Startup declares every queue in a broker that holds at most max_queues.
  if (c.queues.size() > c.max_queues) {
    bad("queues", "declares " + std::to_string(c.queues.size()) +
                      " queues, more than limits.max_queues (" + std::to_string(c.max_queues) +
                      ")");
  }
  return c;
}

}  // namespace

using detail::Fd;
using detail::open_regular;
using detail::read_bounded;
using detail::read_policy_dir;
using detail::read_private;

std::optional<std::string> load_private_key(const std::string& path, std::string& error) {
  return read_private("key file", path, error);
}

std::optional<std::string> load_token(const std::string& path, std::string& error) {
  const std::string what = "token file";
  auto token = read_private(what, path, error);
  if (!token) return std::nullopt;
  const auto first = token->find_first_not_of(" \t\r\n");
  if (first == std::string::npos) {
    error = what + " " + path + " is empty";
    return std::nullopt;
  }
  *token = token->substr(first, token->find_last_not_of(" \t\r\n") - first + 1);
  if (token->size() > proto::kMaxTokenSize) {
    error =
        "token in " + path + " is longer than " + std::to_string(proto::kMaxTokenSize) + " bytes";
    return std::nullopt;
  }
  return token;
}

bool is_valid_log_level(std::string_view level) {
  return level == "trace" || level == "debug" || level == "info" || level == "warn" ||
         level == "error";
}

std::optional<proto::Overflow> parse_overflow(std::string_view name) {
  if (name == "reject") return proto::Overflow::reject;
  if (name == "drop_oldest") return proto::Overflow::drop_oldest;
  if (name == "block") return proto::Overflow::block;
  return std::nullopt;
}

std::optional<proto::Fsync> parse_fsync(std::string_view name) {
  if (name == "always") return proto::Fsync::always;
  if (name == "batch") return proto::Fsync::batch;
  if (name == "none") return proto::Fsync::none;
  return std::nullopt;
}

LoadResult parse(std::string_view json_text) {
  LoadResult r;
  json root;
  try {
    root = json::parse(json_text.begin(), json_text.end(), nullptr, true, /*ignore_comments=*/true);
  } catch (const json::exception& e) {
    // Not only parse_error: a number too large for a double is out_of_range.
    r.error = std::string("invalid JSON: ") + e.what();
    return r;
  }
  try {
    r.config = from_json(root);
  } catch (const FieldError& e) {
    r.error = e.what();
  } catch (const json::exception& e) {
    r.error = std::string("invalid configuration: ") + e.what();
  }
  return r;
}

std::optional<std::vector<PolicyRuleSettings>> parse_policy_rules(std::string_view json_text,
                                                                  std::string& error) {
  json root;
  try {
    root = json::parse(json_text.begin(), json_text.end(), nullptr, true, /*ignore_comments=*/true);
  } catch (const json::exception& e) {
    // Not only parse_error: a number too large for a double is out_of_range.
    error = std::string("invalid JSON: ") + e.what();
    return std::nullopt;
  }
  try {
    std::vector<PolicyRuleSettings> out;
    Object top(root, "");
    const json* rules = top.get("rules");
    if (!rules) bad("rules", "is required");
    if (!rules->is_array()) bad("rules", "must be an array, not " + type_name(*rules));
    if (rules->size() > kMaxPolicyRules) {
      bad("rules", "holds " + std::to_string(rules->size()) + " rules, more than " +
                       std::to_string(kMaxPolicyRules));
    }
    for (std::size_t i = 0; i < rules->size(); ++i) {
      out.push_back(read_rule((*rules)[i], "rules[" + std::to_string(i) + "]"));
    }
    top.finish();
    return out;
  } catch (const FieldError& e) {
    error = e.what();
  } catch (const json::exception& e) {
    error = std::string("invalid policy: ") + e.what();
  }
  return std::nullopt;
}

LoadResult load_file(const std::string& path) {
  const std::string what = "config file";
  LoadResult r;
  struct stat st {};
  const Fd fd(open_regular(what, path, st, r.error));
  if (fd.get() < 0) return r;
  std::string text;
  if (!read_bounded(fd.get(), what, path, st, kMaxConfigFileBytes, text, r.error)) return r;
  r = parse(text);
  if (!r.error.empty()) {
    r.error = path + ": " + r.error;
    return r;
  }
  std::string dir = r.config->policy_dir;
  if (dir.empty()) {
    const auto slash = path.rfind('/');
    dir = (slash == std::string::npos ? std::string(".") : path.substr(0, slash)) + "/policy.d";
  }
  std::string error;
  if (!read_policy_dir(dir, r.config->policy, error)) {
    r.config.reset();
    r.error = error;
    return r;
  }
  r.config->policy_dir = dir;
  return r;
}

LoadResult load_dropins(const std::string& dir) {
  LoadResult r;
  Config c;
  if (!read_policy_dir(dir, c.policy, r.error)) return r;
  c.policy_dir = dir;
  r.config = std::move(c);
  return r;
}

namespace {

std::string octal(std::uint32_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof(buf), "0%03o", static_cast<unsigned>(mode));
  return buf;
}

json settings_json(const QueueSettings& s) {
  return json{{"max_messages", s.max_messages},
              {"max_bytes", s.max_bytes},
              {"overflow", proto::overflow_name(s.overflow)}};
}

// Names resolved: the ids the policy was built with. The default shown is the one in
// effect, which on a system bus is deny unless the file says otherwise.
json policy_json(const PolicySettings& p, bool default_allow) {
  json rules = json::array();
  for (const auto& r : p.rules) {
    json ops = json::array();
    for (std::size_t i = 0; i < std::size(kPolicyOperations); ++i) {
      if (r.operations & (1u << i)) ops.push_back(kPolicyOperations[i]);
    }
    json rule{{r.allow ? "allow" : "deny", std::move(ops)}};
    if (r.everyone) rule["everyone"] = true;
    if (!r.uids.empty()) rule["uids"] = r.uids;
    if (!r.gids.empty()) rule["gids"] = r.gids;
    if (!r.keys.empty()) rule["keys"] = r.keys;
    if (!r.prefixes.empty()) rule["prefixes"] = r.prefixes;
    if (r.to_everyone) rule["to_everyone"] = true;
    if (!r.to_uids.empty()) rule["to_uids"] = r.to_uids;
    if (!r.to_gids.empty()) rule["to_gids"] = r.to_gids;
    rules.push_back(std::move(rule));
  }
  return json{{"default", default_allow ? "allow" : "deny"}, {"rules", std::move(rules)}};
}

}  // namespace

std::string to_json_text(const Config& c, const std::string& socket_path,
                         const std::string& admin_path) {
  json queues = json::array();
  for (const auto& q : c.queues) {
    json entry = settings_json(q.settings);
    entry["key"] = q.key;
    entry["ack_timeout_ms"] = q.ack_timeout_ms;
    entry["max_deliveries"] = q.max_deliveries;
    entry["dead_letter"] = q.dead_letter;
    entry["dead_letter_overflow"] = q.dead_letter_overflow;
    entry["ttl_ms"] = q.ttl_ms;
    entry["dead_letter_expired"] = q.dead_letter_expired;
    entry["priorities"] = q.priorities;
    entry["single_active_consumer"] = q.single_active_consumer;
    entry["durable"] = q.durable;
    entry["message_ids"] = q.message_ids;
    if (q.durable) {
      const auto fsync = q.fsync == proto::Fsync::use_default ? c.storage.fsync : q.fsync;
      entry["fsync"] = proto::fsync_name(fsync);
    }
    queues.push_back(std::move(entry));
  }
  json limits = json::object();
  for_each_limit(
      [&](const LimitSpec& spec, const auto& value) {
        // Ignored, so not part of the effective configuration.
        if (spec.apply != Apply::obsolete) limits[std::string(spec.key)] = value;
      },
      c);
  json root{
      {"socket", {{"path", socket_path}, {"mode", octal(c.socket_mode)}}},
      {"admin",
       {{"path", admin_path}, {"mode", octal(c.admin_socket_mode)}, {"group", c.admin_group}}},
      {"tcp",
       {{"listen", c.tcp_listen},
        {"token_file", c.tcp_token_file},
        {"allow_plaintext", c.tcp_allow_plaintext},
        {"tls", detail::tls_json(c.tcp_tls)}}},
      {"log", {{"level", c.log_level}}},
      {"limits", std::move(limits)},
      {"queue_defaults", settings_json(c.queue_defaults)},
      {"inbox", settings_json(c.inbox)},
      {"queues", std::move(queues)}};
  root["bus"] = c.bus;
  root["policy_dir"] = c.policy_dir;
  root["storage"] = {{"dir", c.storage.dir},
                     {"fsync", proto::fsync_name(c.storage.fsync)},
                     {"batch_ms", c.storage.batch_ms},
                     {"segment_bytes", c.storage.segment_bytes}};
  root["metrics"] = {{"listen", c.metrics.listen},
                     {"max_queue_series", c.metrics.max_queue_series}};
  // A system bus always has a policy, if only its baseline and default.
  if (c.policy.configured || is_system_bus(c)) {
    root["policy"] = policy_json(c.policy, effective_default_allow(c));
  }
  return root.dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace qbus::config
