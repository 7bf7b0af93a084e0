#include "bridge_config.hpp"

#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "qbus/config/config.hpp"
#include "qbus/proto/address.hpp"
#include "qbus/proto/field.hpp"
#include "qbus/proto/subject.hpp"

namespace qbus::bridge {
namespace {

using nlohmann::json;

[[noreturn]] void bad(const std::string& field, const std::string& why) {
  throw BridgeConfigError(field + ": " + why);
}

// One JSON object whose fields are read one by one; whatever is left unread is an unknown
// field, which is an error (a typo must not silently fall back to a default).
class Object {
 public:
  Object(const json& j, std::string path) : j_(j), path_(std::move(path)) {
    if (!j_.is_object()) bad(path_.empty() ? "the configuration" : path_, "must be an object");
  }
  std::string at(std::string_view name) const {
    return path_.empty() ? std::string(name) : path_ + "." + std::string(name);
  }
  const json* find(std::string_view name) {
    seen_.insert(std::string(name));
    const auto it = j_.find(std::string(name));
    return it == j_.end() ? nullptr : &*it;
  }
  void string(std::string_view name, std::string& out) {
    if (const json* v = find(name)) {
      if (!v->is_string()) bad(at(name), "must be a string");
      out = v->get<std::string>();
    }
  }
  void boolean(std::string_view name, bool& out) {
    if (const json* v = find(name)) {
      if (!v->is_boolean()) bad(at(name), "must be true or false");
      out = v->get<bool>();
    }
  }
  template <typename T>
  void number(std::string_view name, T& out, T min, T max) {
    if (const json* v = find(name)) {
      if (!v->is_number_integer()) bad(at(name), "must be an integer");
      const auto n = v->get<std::int64_t>();
      if (n < static_cast<std::int64_t>(min) || n > static_cast<std::int64_t>(max)) {
        bad(at(name), "must be " + std::to_string(min) + ".." + std::to_string(max));
      }
      out = static_cast<T>(n);
    }
  }
  void finish() const {
    for (auto it = j_.begin(); it != j_.end(); ++it) {
      if (!seen_.contains(it.key())) bad(at(it.key()), "unknown field");
    }
  }

 private:
  const json& j_;
  std::string path_;
  std::set<std::string> seen_;
};

// The secret in the file at `path`; with `secrets` skip, only the path is checked.
std::string secret(const std::string& field, const std::string& path, Secrets secrets) {
  if (path.empty() || path.front() != '/') bad(field, "must be an absolute path");
  if (secrets == Secrets::skip) return {};
  std::string error;
  auto text = config::read_secret_file("file", path, error);
  if (!text) bad(field, error);
  // Surrounding whitespace (a trailing newline) is not part of the secret.
  const auto first = text->find_first_not_of(" \t\r\n");
  if (first == std::string::npos) bad(field, "file " + path + " is empty");
  const auto last = text->find_last_not_of(" \t\r\n");
  return text->substr(first, last - first + 1);
}

void absolute_file(const std::string& field, const std::string& path) {
  if (!path.empty() && path.front() != '/') bad(field, "must be an absolute path");
}

NatsSettings read_nats(const json& j, Secrets secrets) {
  NatsSettings n;
  Object o(j, "nats");
  o.string("url", n.url);
  if (n.url.empty()) bad("nats.url", "must not be empty");
  std::string password_file, token_file;
  o.string("user", n.user);
  o.string("password_file", password_file);
  o.string("token_file", token_file);
  o.string("creds_file", n.creds_file);
  const int ways =
      (n.user.empty() ? 0 : 1) + (token_file.empty() ? 0 : 1) + (n.creds_file.empty() ? 0 : 1);
  if (ways > 1) bad("nats", "give at most one of user, token_file and creds_file");
  if (!password_file.empty() && n.user.empty()) bad("nats.password_file", "needs nats.user");
  if (!n.user.empty() && password_file.empty()) bad("nats.user", "needs nats.password_file");
  if (!password_file.empty()) n.password = secret("nats.password_file", password_file, secrets);
  if (!token_file.empty()) n.token = secret("nats.token_file", token_file, secrets);
  if (!n.creds_file.empty()) (void)secret("nats.creds_file", n.creds_file, secrets);
  if (const json* tls = o.find("tls")) {
    Object t(*tls, "nats.tls");
    t.string("ca", n.tls_ca);
    t.string("certificate", n.tls_certificate);
    t.string("key", n.tls_key);
    t.finish();
    absolute_file("nats.tls.ca", n.tls_ca);
    absolute_file("nats.tls.certificate", n.tls_certificate);
    if (n.tls_certificate.empty() != n.tls_key.empty()) {
      bad("nats.tls", "certificate and key go together");
    }
    if (!n.tls_key.empty()) (void)secret("nats.tls.key", n.tls_key, secrets);
  }
  o.number<std::int64_t>("reconnect_wait_ms", n.reconnect_wait_ms, 10, 600'000);
  o.finish();
  return n;
}

// A JetStream stream or consumer name: no whitespace, '.', '*', '>' or path separators.
bool is_valid_name(std::string_view s) {
  if (s.empty() || s.size() > 64) return false;
  for (const char c : s) {
    if (c <= ' ' || c > '~' || c == '.' || c == '*' || c == '>' || c == '/' || c == '\\') {
      return false;
    }
  }
  return true;
}

// The tokens of `pattern` from its first wildcard on ("*.temp" of "sensors.*.temp").
std::string_view wildcard_tail(std::string_view pattern) {
  std::size_t start = 0;
  while (start < pattern.size()) {
    const std::size_t dot = pattern.find('.', start);
    const std::string_view token = pattern.substr(start, dot - start);
    if (token == "*" || token == ">") return pattern.substr(start);
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return {};
}

// A subject route: the two patterns and their common wildcards; nothing of JetStream.
void read_subject_route(Object& o, Route& r) {
  if (!proto::is_valid_pattern(r.qbus_subject)) {
    bad(o.at("qbus_subject"), "must be a qbus subject pattern (proto/PROTOCOL.md 18.1)");
  }
  if (!is_valid_nats_subject(r.subject, true)) {
    bad(o.at("subject"), "must be a NATS subject (wildcards * and > allowed)");
  }
  if (wildcard_tail(r.qbus_subject) != wildcard_tail(r.subject)) {
    bad(o.at("subject"), "must end in the same wildcards as qbus_subject '" + r.qbus_subject +
                             "' (only the part before them is mapped)");
  }
  for (const char* jetstream : {"stream", "consumer", "durable_queue", "batch"}) {
    if (o.find(jetstream)) bad(o.at(jetstream), "is for queue routes only");
  }
  o.finish();
}

Route read_route(const json& j, std::size_t index) {
  const std::string path = "routes[" + std::to_string(index) + "]";
  Route r;
  Object o(j, path);
  o.string("name", r.name);
  if (!is_valid_name(r.name)) {
    bad(o.at("name"), "must be 1-64 printable characters without space, '.', '*', '>' or '/'");
  }
  std::string direction;
  o.string("direction", direction);
  if (direction == "outbound") {
    r.direction = Direction::outbound;
  } else if (direction == "inbound") {
    r.direction = Direction::inbound;
  } else {
    bad(o.at("direction"), "must be \"outbound\" or \"inbound\"");
  }
  const bool in = r.direction == Direction::inbound;
  o.string("queue", r.queue);
  o.string("qbus_subject", r.qbus_subject);
  o.string("subject", r.subject);
  if (r.queue.empty() == r.qbus_subject.empty()) {
    bad(path, "give either \"queue\" (to JetStream) or \"qbus_subject\" (to NATS subjects)");
  }
  if (!r.qbus_subject.empty()) {
    read_subject_route(o, r);
    return r;
  }
  if (!proto::is_valid_key(r.queue)) {
    bad(o.at("queue"), "must be a qbus queue key: 1-255 characters of A-Z a-z 0-9 . _ : / -");
  }
  if (!is_valid_nats_subject(r.subject, in)) {
    bad(o.at("subject"), in ? "must be a NATS subject (wildcards * and > allowed)"
                            : "must be a NATS subject without wildcards");
  }
  o.string("stream", r.stream);
  if (!r.stream.empty() && !is_valid_name(r.stream)) {
    bad(o.at("stream"), "must be a JetStream stream name (no space, '.', '*', '>' or '/')");
  }
  if (in && r.stream.empty()) bad(o.at("stream"), "an inbound route needs its stream");
  if (in) {
    r.consumer = r.name;
    o.string("consumer", r.consumer);
    if (!is_valid_name(r.consumer)) bad(o.at("consumer"), "must be a JetStream consumer name");
  } else {
    o.boolean("durable_queue", r.durable_queue);
  }
  o.number<std::uint32_t>("batch", r.batch, 1, 1000);
  o.finish();
  return r;
}

// Routes that would carry their own messages back: a queue both sent out and fed in, or an
// inbound filter matching an outbound subject of this bridge.
void check_loops(const std::vector<Route>& routes) {
  for (std::size_t i = 0; i < routes.size(); ++i) {
    for (std::size_t k = 0; k < routes.size(); ++k) {
      const Route& out = routes[i];
      const Route& in = routes[k];
      if (out.direction != Direction::outbound || in.direction != Direction::inbound) continue;
      const std::string pair = "routes[" + std::to_string(i) + "] (" + out.name + ") and routes[" +
                               std::to_string(k) + "] (" + in.name + ")";
      if (!out.queue.empty() && out.queue == in.queue) {
        bad(pair, "loop: queue '" + out.queue + "' is both sent out and fed in");
      }
      if (!out.qbus_subject.empty() && !in.qbus_subject.empty() &&
          patterns_overlap(out.qbus_subject, in.qbus_subject)) {
        bad(pair, "loop: qbus subjects '" + out.qbus_subject + "' are both sent out and fed in");
      }
      if (patterns_overlap(in.subject, out.subject)) {
        bad(pair, "loop: subject '" + out.subject + "' is both published and consumed");
      }
    }
  }
}

}  // namespace

std::string metrics_listen_problem(std::string_view listen) {
  // parse_address also takes tls: and bare paths, which qbusd's clients use; not here.
  if (!listen.starts_with("tcp:") && !listen.starts_with("unix:")) {
    return "must be tcp:HOST:PORT or unix:/path, such as \"tcp:127.0.0.1:9465\"";
  }
  std::string why;
  const auto address = proto::parse_address(listen, why, true);
  if (!address) return why;
  if (address->kind == proto::Address::Kind::unix_socket && address->path.front() != '/') {
    return "a unix: path must be absolute";
  }
  return "";
}

bool is_valid_nats_subject(std::string_view subject, bool wildcards) {
  if (subject.empty() || subject.size() > 255) return false;
  std::size_t start = 0;
  while (true) {
    const std::size_t dot = subject.find('.', start);
    const std::string_view token =
        subject.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (token.empty()) return false;
    for (const char c : token) {
      if (c <= ' ' || c > '~') return false;
    }
    const bool last = dot == std::string_view::npos;
    if (token.find_first_of("*>") != std::string_view::npos) {
      if (!wildcards || token.size() != 1 || (token == ">" && !last)) return false;
    }
    if (last) return true;
    start = dot + 1;
  }
}

bool patterns_overlap(std::string_view a, std::string_view b) {
  while (true) {
    const std::size_t ad = a.find('.');
    const std::size_t bd = b.find('.');
    const std::string_view at = a.substr(0, ad);
    const std::string_view bt = b.substr(0, bd);
    if (at == ">" || bt == ">") return true;
    if (at != "*" && bt != "*" && at != bt) return false;
    if (ad == std::string_view::npos || bd == std::string_view::npos) {
      return ad == std::string_view::npos && bd == std::string_view::npos;
    }
    a.remove_prefix(ad + 1);
    b.remove_prefix(bd + 1);
  }
}

std::string map_subject(std::string_view subject, std::string_view from, std::string_view to) {
  const std::string_view from_tail = wildcard_tail(from);
  const std::string_view to_tail = wildcard_tail(to);
  // The literal prefixes, without their last dot; a pattern that is all literal maps whole.
  const std::string_view from_prefix =
      from_tail.empty() ? from : from.substr(0, from.size() - from_tail.size());
  const std::string_view to_prefix =
      to_tail.empty() ? to : to.substr(0, to.size() - to_tail.size());
  std::string out(to_prefix);
  out += subject.substr(std::min(from_prefix.size(), subject.size()));
  return out;
}

BridgeConfig parse_bridge_config(std::string_view text, Secrets secrets) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    throw BridgeConfigError(std::string("not valid JSON: ") + e.what());
  }
  BridgeConfig c;
  Object o(j, "");
  if (const json* q = o.find("qbus")) {
    Object qo(*q, "qbus");
    qo.string("address", c.qbus_address);
    qo.string("name", c.client_name);
    if (c.client_name.size() > 64) bad("qbus.name", "must be at most 64 bytes");
    qo.finish();
  }
  o.string("host", c.host);
  o.string("status_file", c.status_file);
  absolute_file("status_file", c.status_file);
  if (c.status_file.empty()) bad("status_file", "must not be empty");
  o.string("metrics_file", c.metrics_file);
  absolute_file("metrics_file", c.metrics_file);
  if (!c.metrics_file.empty() && !c.metrics_file.ends_with(".prom")) {
    bad("metrics_file", "must end in .prom (node_exporter's textfile collector reads only those)");
  }
  o.string("metrics_listen", c.metrics_listen);
  if (!c.metrics_listen.empty()) {
    if (const std::string why = metrics_listen_problem(c.metrics_listen); !why.empty()) {
      bad("metrics_listen", why);
    }
  }
  const json* nats = o.find("nats");
  c.nats = nats ? read_nats(*nats, secrets) : NatsSettings{};
  const json* routes = o.find("routes");
  if (!routes || !routes->is_array() || routes->empty()) {
    bad("routes", "must be a non-empty array of routes");
  }
  std::set<std::string> names;
  for (std::size_t i = 0; i < routes->size(); ++i) {
    c.routes.push_back(read_route((*routes)[i], i));
    if (!names.insert(c.routes.back().name).second) {
      bad("routes[" + std::to_string(i) + "].name", "'" + c.routes.back().name + "' is used twice");
    }
  }
  check_loops(c.routes);
  o.finish();
  return c;
}

BridgeConfig load_bridge_config(const std::string& path, Secrets secrets) {
  std::ifstream in(path);
  if (!in) throw BridgeConfigError("cannot read the configuration " + path);
  std::stringstream text;
  text << in.rdbuf();
  try {
    return parse_bridge_config(text.str(), secrets);
  } catch (const BridgeConfigError& e) {
    throw BridgeConfigError(path + ": " + e.what());
  }
}

}  // namespace qbus::bridge
