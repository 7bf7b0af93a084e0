#include "admin/admin_server.hpp"

#include "admin/glob.hpp"

#include <grp.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string_view>
#include <utility>
#include <vector>

#include "net/connection.hpp"
#include "qbus/proto/codec.hpp"

namespace qbus::daemon {
namespace {

using json = nlohmann::json;
using SteadyClock = std::chrono::steady_clock;

constexpr std::size_t kMaxLine = 64 * 1024;
constexpr std::size_t kMaxSessions = 64;
constexpr auto kSampleEvery = std::chrono::seconds(1);
constexpr std::size_t kRateWindow = 5;  // seconds
// `delete` by pattern runs on the broker's thread: one request deletes at most this many
// queues, and starts no further queue once it dropped this many messages. The answer's
// `remaining` tells the caller to ask again (qbusctl does).
constexpr std::size_t kMaxPatternDeletes = 1000;
constexpr std::size_t kMaxPatternDrops = 1'000'000;
// Matching costs up to key length x pattern length per queue: a pattern is no longer than
// a key.
constexpr std::size_t kMaxPatternSize = proto::kMaxKeySize;

// Client names, process names and request text may hold any bytes: never let invalid
// UTF-8 make dump() throw (it would end the event loop), replace it.
std::string dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

json error_answer(std::string_view code, std::string_view message) {
  return json{{"ok", false}, {"error", {{"code", code}, {"message", message}}}};
}

std::string iso8601(std::chrono::system_clock::time_point t) {
  const std::time_t secs = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  ::gmtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

long rss_bytes() {
  std::ifstream statm("/proc/self/statm");
  long pages_total = 0, pages_resident = 0;
  if (!(statm >> pages_total >> pages_resident)) return -1;
  return pages_resident * ::sysconf(_SC_PAGESIZE);
}

json queue_json(const broker::Queue& q, SteadyClock::time_point now) {
  const auto& o = q.options();
  const auto& c = q.counters();
  std::int64_t oldest_ms = 0;
  if (const auto oldest = q.oldest_enqueued()) {
    oldest_ms = std::chrono::duration_cast<std::chrono::milliseconds>(now - *oldest).count();
  }
  const auto& owner = q.keeper().owner;
  // Subscriptions stay among the waiters; they are listed apart, with their credit.
  json subscribers = json::array();
  std::size_t receives = 0;
  const broker::Waiter* active = q.active_subscription();
  for (const auto& w : q.waiters()) {
    if (!w.subscription) {
      ++receives;
      continue;
    }
    json s{{"client", w.peer},
           {"ack", w.ack},
           {"prefetch", w.ack ? json(w.prefetch) : json(nullptr)},
           {"unacked", w.unacked}};
    // A single-active-consumer queue serves one subscription; the others stand by.
    if (o.single_active_consumer) s["active"] = &w == active;
    subscribers.push_back(std::move(s));
  }
  return json{{"key", q.key()},
              {"owner", owner ? json(*owner) : json(nullptr)},
              {"depth", q.depth()},
              {"bytes", q.bytes()},
              {"max_messages", o.max_messages},
              {"max_bytes", o.max_bytes},
              {"overflow", proto::overflow_name(o.overflow)},
              {"declared", q.declared()},
              {"waiting_receivers", receives},
              {"subscribers", std::move(subscribers)},
              {"blocked_producers", q.blocked().size()},
              {"enqueued_total", c.enqueued_total},
              {"dequeued_total", c.dequeued_total},
              {"dropped_total", c.dropped_total},
              {"rejected_total", c.rejected_total},
              {"oldest_age_ms", oldest_ms},
              {"in_flight", q.held() - q.delayed()},
              {"delayed", q.delayed()},
              {"acked_total", c.acked_total},
              {"redelivered_total", c.redelivered_total},
              {"dead_lettered_total", c.dead_lettered_total},
              {"expired_total", c.expired_total},
              {"ack_timeout_ms", o.ack_timeout_ms},
              {"max_deliveries", o.max_deliveries},
              {"dead_letter", o.dead_letter},
              {"dead_letter_overflow", o.dead_letter_overflow},
              {"ttl_ms", o.default_ttl_ms},
              {"dead_letter_expired", o.dead_letter_expired},
              {"priorities", std::max<int>(1, o.priorities)},
              {"single_active_consumer", o.single_active_consumer},
              {"durable", o.durable},
              {"fsync", proto::fsync_name(o.fsync)},
              {"message_ids", o.message_ids}};
}

json client_json(const Connection& c, std::size_t inbox_depth, std::size_t unacked) {
  const auto& id = c.identity();
  const auto& st = c.stats();
  json entry{{"id", c.id()},
             {"pid", id.pid},
             {"uid", id.uid},
             {"gid", id.gid},
             {"comm", st.comm},
             {"name", st.name},
             {"transport", id.tcp ? "tcp" : "unix"},
             {"connected_at", iso8601(st.connected_at)},
             {"connected_for_s", std::chrono::duration_cast<std::chrono::seconds>(
                                     std::chrono::system_clock::now() - st.connected_at)
                                     .count()},
             {"sent_total", st.sent_total},
             {"received_total", st.received_total},
             {"inbox_depth", inbox_depth},
             {"unacked", unacked}};
  if (id.tcp) {
    entry["remote"] = c.description().substr(4);  // "tcp HOST:PORT"
    entry["authenticated"] = c.authenticated();
  }
  return entry;
}

json region_json(const broker::RegionInfo& r) {
  return json{{"id", r.id},
              {"size", r.size},
              {"owner_pid", r.owner_pid},
              {"owner_uid", r.owner_uid},
              {"refs", r.handles + r.message_refs + (r.declared ? 1 : 0)},
              {"handles", r.handles},
              {"message_refs", r.message_refs},
              {"sealed", r.sealed},
              {"named", r.named},
              {"key", r.named ? json(r.key) : json(nullptr)}};
}

bool is_id(const json& v) {
  return v.is_number_unsigned() && v.get<std::uint64_t>() <= 0xFFFFFFFFu;
}

// The valid queue key of a `what` request into `key`, or the error answer when there is none.
std::optional<json> read_key(const std::string& what, const json& req, std::string& key) {
  if (!req.contains("key") || !req["key"].is_string()) {
    return error_answer("malformed_request", "\"" + what + "\" needs a string \"key\"");
  }
  key = req["key"];
  if (!proto::is_valid_key(key)) {
    return error_answer("invalid_key", "invalid queue key '" + key.substr(0, 64) + "'");
  }
  return std::nullopt;
}

}  // namespace

// One admin connection: reads a line, answers it, reads the next. One request at a time,
// so a client that stops reading holds up only itself.
class AdminServer::Session : public std::enable_shared_from_this<Session> {
 public:
  Session(AdminServer& admin, asio::local::stream_protocol::socket socket)
      : admin_(admin), socket_(std::move(socket)), in_(kMaxLine) {}

  void start() { read(); }
  LogFields peer;  // pid and uid, for the log lines of its requests
  int native_handle() { return socket_.native_handle(); }
  void refuse(std::string line) {
    out_ = std::move(line);
    asio::async_write(
        socket_, asio::buffer(out_),
        [self = shared_from_this()](const asio::error_code&, std::size_t) { self->close(); });
  }
  void close() {
    asio::error_code ec;
    socket_.close(ec);
    admin_.sessions_.erase(this);
  }

 private:
  void read() {
    asio::async_read_until(
        socket_, in_, '\n', [self = shared_from_this()](const asio::error_code& ec, std::size_t n) {
          if (ec == asio::error::not_found) {
            self->refuse(
                dump(error_answer("malformed_request", "request line longer than 65536 bytes")) +
                "\n");
            return;
          }
          if (ec) {
            self->close();
            return;
          }
          std::string line(asio::buffers_begin(self->in_.data()),
                           asio::buffers_begin(self->in_.data()) + static_cast<std::ptrdiff_t>(n));
          self->in_.consume(n);
          line.pop_back();
          if (!line.empty() && line.back() == '\r') line.pop_back();
          if (line.find_first_not_of(" \t") == std::string::npos) {
            self->read();  // blank lines are harmless
            return;
          }
          self->admin_.requester_ = self->peer;
          try {
            self->out_ = dump(self->admin_.handle(line));
          } catch (const std::exception& e) {
            // A fault answering one request must not end the broker's event loop.
            log_with(self->peer, spdlog::level::err,
                     "admin socket: internal error answering a request: {}", e.what());
            self->out_ = dump(error_answer("internal_error", e.what()));
          }
          self->admin_.requester_ = {};
          self->out_.push_back('\n');
          if (auto m = std::exchange(self->admin_.pending_monitor_, std::nullopt)) {
            // From now on the connection is a monitor's stream (monitor.hpp).
            self->admin_.monitor_.attach(std::move(self->socket_), std::move(m->pattern),
                                         m->payload_bytes, std::move(self->out_));
            self->admin_.sessions_.erase(self.get());
            return;
          }
          asio::async_write(self->socket_, asio::buffer(self->out_),
                            [self](const asio::error_code& wec, std::size_t) {
                              if (wec) {
                                self->close();
                                return;
                              }
                              self->read();
                            });
        });
  }

  AdminServer& admin_;
  asio::local::stream_protocol::socket socket_;
  asio::streambuf in_;
  std::string out_;
};

AdminServer::AdminServer(asio::io_context& io, Server& server, AdminOptions options)
    : server_(server),
      options_(std::move(options)),
      acceptor_(io),
      sampler_(io),
      retry_(io),
      monitor_(server) {}

AdminServer::~AdminServer() {
  stop();
}

void AdminServer::start(int inherited_fd) {
  update(options_.group, options_.config_json);
  if (inherited_fd >= 0) {
    acceptor_.assign(asio::local::stream_protocol(), inherited_fd);
  } else {
    bound_ = bind_unix_listener(options_.socket_path, options_.socket_mode);
    own_socket_ = true;
    if (group_gid_ && ::chown(options_.socket_path.c_str(), static_cast<uid_t>(-1),
                              static_cast<gid_t>(*group_gid_)) != 0) {
      throw std::runtime_error("cannot give the admin socket " + options_.socket_path +
                               " to group '" + options_.group + "': " + std::strerror(errno));
    }
    acceptor_.assign(asio::local::stream_protocol(), bound_.fd.release());
  }
  server_.add_first_client_hook([this] { wake_sampler(); });
  wake_sampler();
  accept();
}

void AdminServer::update(const std::string& group, std::string config_json) {
  std::optional<unsigned> gid;
  if (!group.empty()) {
    errno = 0;
    const ::group* g = ::getgrnam(group.c_str());
    if (g == nullptr) {
      throw std::runtime_error("admin.group: no group named '" + group + "'");
    }
    gid = g->gr_gid;
  }
  // A socket we bound ourselves follows the group (one systemd made keeps its
  // SocketGroup=); the credential check uses the new group either way.
  if (own_socket_ && gid && gid != group_gid_ &&
      ::chown(options_.socket_path.c_str(), static_cast<uid_t>(-1), static_cast<gid_t>(*gid)) !=
          0) {
    spdlog::warn("cannot give the admin socket {} to group '{}': {}", options_.socket_path, group,
                 std::strerror(errno));
  }
  group_gid_ = gid;
  options_.group = group;
  options_.config_json = std::move(config_json);
}

void AdminServer::stop() {
  if (stopped_) return;
  stopped_ = true;
  asio::error_code ec;
  acceptor_.close(ec);
  sampler_.cancel();
  sampling_ = false;
  retry_.cancel();
  for (auto& [ptr, weak] : std::unordered_map<Session*, std::weak_ptr<Session>>(sessions_)) {
    if (auto s = weak.lock()) s->close();
  }
  sessions_.clear();
  monitor_.stop();
  if (own_socket_) unlink_if_ours(options_.socket_path, bound_);
}

void AdminServer::sample() {
  const broker::BrokerTotals totals = server_.broker().totals();
  samples_.push_back(Sample{SteadyClock::now(), totals});
  while (samples_.size() > kRateWindow + 1)
    samples_.pop_front();
  // The totals only grow: equal ends mean a window without traffic, whose rates are 0 for
  // as long as nobody connects.
  const bool quiet = samples_.size() > 1 && samples_.front().totals == totals;
  sampling_ = !quiet || server_.connection_count() > 0;
  if (!sampling_) return;
  sampler_.expires_after(kSampleEvery);
  sampler_.async_wait([this](const asio::error_code& ec) {
    if (!ec) sample();
  });
}

void AdminServer::wake_sampler() {
  if (sampling_ || stopped_) return;
  // The samples before the pause are older than the window: start it again from now.
  samples_.clear();
  sample();
}

bool AdminServer::permitted(int fd, LogFields& peer, std::string& who) const {
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    who = "a peer without credentials";
    return false;
  }
  who = "pid " + std::to_string(cred.pid) + " uid " + std::to_string(cred.uid);
  peer.pid = cred.pid;
  peer.uid = cred.uid;
  if (cred.uid == 0 || cred.uid == ::geteuid()) return true;
  if (!group_gid_) return false;
  if (cred.gid == *group_gid_) return true;
  // Supplementary groups too: membership of the admin group is usually one of them.
  std::vector<gid_t> groups(64);
  socklen_t size = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &size) != 0) {
    if (errno != ERANGE) return false;  // no group list: membership cannot be shown
    groups.resize(size / sizeof(gid_t));
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &size) != 0) return false;
  }
  groups.resize(size / sizeof(gid_t));
  for (gid_t g : groups) {
    if (g == *group_gid_) return true;
  }
  return false;
}

void AdminServer::accept() {
  acceptor_.async_accept([this](const asio::error_code& ec,
                                asio::local::stream_protocol::socket sock) {
    if (stopped_ || ec == asio::error::operation_aborted) return;
    if (ec) {
      // EMFILE and the like: pause instead of spinning.
      spdlog::error("admin socket: accept failed: {}", ec.message());
      retry_.expires_after(std::chrono::milliseconds(200));
      retry_.async_wait([this](const asio::error_code& e) {
        if (!e) accept();
      });
      return;
    }
    auto session = std::make_shared<Session>(*this, std::move(sock));
    sessions_.emplace(session.get(), session);
    std::string who;
    // The socket is not the only gate: its mode may be loosened by mistake, and a
    // systemd-made socket is set up elsewhere.
    LogFields& peer = session->peer;
    if (!permitted(session->native_handle(), peer, who)) {
      peer.errc = Errc::permission_denied;
      log_with(peer, spdlog::level::warn,
               "admin socket: refused {}: not root, qbusd's uid or in the admin group", who);
      session->refuse(dump(error_answer("permission_denied",
                                        "the admin socket is for root, qbusd's user and members "
                                        "of the admin group")) +
                      "\n");
    } else if (sessions_.size() > kMaxSessions) {
      peer.errc = Errc::too_many_connections;
      log_with(peer, spdlog::level::warn, "admin socket: refused {}: {} admin connections already",
               who, kMaxSessions);
      session->refuse(dump(error_answer("too_many_connections", "too many admin connections")) +
                      "\n");
    } else {
      log_with(peer, spdlog::level::debug, "admin socket: {} connected", who);
      session->start();
    }
    accept();
  });
}

json AdminServer::handle(const std::string& line) {
  json req;
  try {
    req = json::parse(line);
  } catch (const json::exception& e) {
    // Not only parse_error: a number too large for a double is out_of_range.
    return error_answer("malformed_request", std::string("not JSON: ") + e.what());
  }
  if (!req.is_object() || !req.contains("request") || !req["request"].is_string()) {
    return error_answer("malformed_request",
                        "a request is a JSON object with a string \"request\" member");
  }
  // docs/admin.md's requests, one member function each.
  static constexpr std::pair<std::string_view, json (AdminServer::*)(const json&)> kCommands[] = {
      {"queues", &AdminServer::list_queues},
      {"queue", &AdminServer::show_queue},
      {"clients", &AdminServer::list_clients},
      {"regions", &AdminServer::list_regions},
      {"stats", &AdminServer::show_stats},
      {"delete", &AdminServer::delete_queues},
      {"purge", &AdminServer::purge_queue},
      {"region-remove", &AdminServer::remove_region},
      {"disconnect", &AdminServer::disconnect_client},
      {"config", &AdminServer::show_config},
      {"set-log-level", &AdminServer::set_log_level},
      {"policy-check", &AdminServer::check_policy},
      {"subscriptions", &AdminServer::list_subscriptions},
      {"topics", &AdminServer::show_topics},
      {"monitor", &AdminServer::start_monitor},
  };
  const std::string what = req["request"];
  for (const auto& [name, command] : kCommands) {
    if (name == what) return (this->*command)(req);
  }
  return error_answer("unknown_request",
                      "unknown request '" + what.substr(0, 64) + "'; see docs/admin.md");
}

json AdminServer::list_queues(const json&) {
  const auto now = SteadyClock::now();
  json list = json::array();
  server_.broker().for_each_queue(
      [&](const broker::Queue& q) { list.push_back(queue_json(q, now)); });
  return json{{"ok", true}, {"queues", std::move(list)}};
}

json AdminServer::show_queue(const json& req) {
  std::string key;
  if (auto bad = read_key("queue", req, key)) return *bad;
  const auto* q = server_.broker().find(key);
  if (!q) return error_answer("no_such_queue", "no queue '" + key + "'");
  return json{{"ok", true}, {"queue", queue_json(*q, SteadyClock::now())}};
}

json AdminServer::list_clients(const json&) {
  const auto& broker = server_.broker();
  json list = json::array();
  server_.for_each_connection([&](const Connection& c) {
    list.push_back(client_json(c, broker.inbox_depth(c.id()), broker.unacked(c.id())));
  });
  return json{{"ok", true}, {"clients", std::move(list)}};
}

json AdminServer::list_regions(const json&) {
  json list = json::array();
  server_.broker().regions().for_each(
      [&](const broker::RegionInfo& r) { list.push_back(region_json(r)); });
  return json{{"ok", true}, {"regions", std::move(list)}};
}

json AdminServer::delete_queues(const json& req) {
  if (req.contains("pattern")) return delete_matching(req);
  return drop_queue("delete", req);
}

json AdminServer::purge_queue(const json& req) {
  return drop_queue("purge", req);
}

// `purge` keeps the queue and drops its messages; `delete` drops both.
json AdminServer::drop_queue(const std::string& what, const json& req) {
  std::string key;
  if (auto bad = read_key(what, req, key)) return *bad;
  auto& broker = server_.broker();
  const auto dropped = what == "purge" ? broker.purge(key) : broker.remove(key);
  if (!dropped) return error_answer("no_such_queue", "no queue '" + key + "'");
  log_with(LogFields{.pid = requester_.pid, .uid = requester_.uid, .key = key}, spdlog::level::info,
           "admin: {} '{}' dropped {} messages", what, key, *dropped);
  server_.end_of_batch();  // waiters told queue_deleted, producers resumed: flush now
  return json{{"ok", true}, {"key", key}, {"dropped", *dropped}};
}

json AdminServer::remove_region(const json& req) {
  std::string key;
  if (auto bad = read_key("region-remove", req, key)) return *bad;
  auto& broker = server_.broker();
  // What holds the region now, to tell the operator whether it is freed at once.
  std::optional<broker::RegionInfo> region;
  broker.regions().for_each([&](const broker::RegionInfo& r) {
    if (r.declared && r.key == key) region = r;
  });
  const auto status = broker.remove_named_region_as_operator(key);
  if (!status.ok()) return error_answer(errc_name(status.error), status.text);
  const broker::RegionInfo* left = region ? broker.regions().find(region->id) : nullptr;
  log_with(LogFields{.pid = requester_.pid, .uid = requester_.uid, .key = key}, spdlog::level::info,
           "admin: removed named region '{}' (region {}){}", key, region ? region->id : 0,
           left ? "; it lives on while clients hold it" : "; freed");
  return json{{"ok", true},
              {"key", key},
              {"id", region ? region->id : 0},
              {"freed", left == nullptr},
              {"handles", left ? left->handles : 0},
              {"message_refs", left ? left->message_refs : 0}};
}

json AdminServer::disconnect_client(const json& req) {
  if (!req.contains("id") || !req["id"].is_number_unsigned()) {
    return error_answer("malformed_request",
                        "\"disconnect\" needs a client id, a non-negative integer \"id\"");
  }
  const auto id = req["id"].get<std::uint64_t>();
  std::string who;
  LogFields fields;  // the client's, not the operator's: the line is about the client
  server_.for_each_connection([&](const Connection& c) {
    if (c.id() != id) return;
    who = c.description();
    fields = c.log_fields(Errc::disconnected_by_operator);
  });
  if (!server_.disconnect(id, Errc::disconnected_by_operator,
                          "an operator disconnected this client through the admin socket")) {
    return error_answer("no_such_client", "no client with id " + std::to_string(id) +
                                              " is connected (see qbusctl clients)");
  }
  log_with(fields, spdlog::level::info, "admin: disconnected client {} ({})", id, who);
  return json{{"ok", true}, {"id", id}};
}

json AdminServer::show_config(const json&) {
  return json{{"ok", true}, {"config", json::parse(options_.config_json)}};
}

json AdminServer::set_log_level(const json& req) {
  if (!req.contains("level") || !req["level"].is_string()) {
    return error_answer("malformed_request", "\"set-log-level\" needs a string \"level\"");
  }
  const std::string level = req["level"];
  const auto parsed = spdlog::level::from_str(level);
  if (level != "trace" && level != "debug" && level != "info" && level != "warn" &&
      level != "error") {
    return error_answer("invalid_argument", "level must be one of trace, debug, info, warn, error");
  }
  const auto previous = spdlog::level::to_string_view(spdlog::get_level());
  spdlog::set_level(parsed);
  log_with(requester_, spdlog::level::info, "admin: log level set to {}", level);
  return json{
      {"ok", true}, {"level", level}, {"previous", std::string(previous.data(), previous.size())}};
}

namespace {

// An id list at `field` of a policy-check request into `out`, or the error answer.
std::optional<json> read_ids(const json& req, const char* field, std::vector<std::uint32_t>& out) {
  if (!req.contains(field)) return std::nullopt;
  if (!req[field].is_array()) {
    return error_answer("malformed_request",
                        "\"" + std::string(field) + "\" must be an array of gids");
  }
  for (const auto& g : req[field]) {
    if (!is_id(g)) {
      return error_answer(
          "malformed_request",
          "\"" + std::string(field) + "\" must hold integers 0..4294967295, not " + g.dump());
    }
    out.push_back(g.get<std::uint32_t>());
  }
  return std::nullopt;
}

// A principal of a policy-check: the first gid stands for the primary group, the rest for
// supplementary ones; with none given, the primary gid is (gid_t)-1, which no rule can name
// as a group a client has. `gids` must outlive the principal.
broker::Principal principal(std::uint32_t uid, const std::vector<std::uint32_t>& gids) {
  if (gids.empty()) return broker::Principal{uid, 0xFFFFFFFFu, {}};
  return broker::Principal{uid, gids.front(), std::span(gids).subspan(1)};
}

}  // namespace

// Asks the running policy what it would decide, as Broker::permitted (and, for send_direct,
// Core::direct_permitted) does, and sends nothing.
json AdminServer::check_policy(const json& req) {
  if (!req.contains("uid") || !is_id(req["uid"])) {
    return error_answer("malformed_request",
                        "\"policy-check\" needs a uid, an integer 0..4294967295 \"uid\"");
  }
  std::vector<std::uint32_t> gids;
  std::vector<std::uint32_t> to_gids;
  if (auto bad = read_ids(req, "gids", gids)) return *bad;
  if (!req.contains("op") || !req["op"].is_string()) {
    return error_answer("malformed_request", "\"policy-check\" needs a string \"op\"");
  }
  const std::string op_name = req["op"];
  std::optional<broker::Operation> op;
  for (auto o :
       {broker::Operation::send, broker::Operation::receive, broker::Operation::declare,
        broker::Operation::request, broker::Operation::send_direct, broker::Operation::manage}) {
    if (broker::operation_name(o) == op_name) op = o;
  }
  if (!op) {
    return error_answer("invalid_argument",
                        "unknown op '" + op_name.substr(0, 64) +
                            "'; one of send, receive, declare, request, send_direct, manage");
  }
  const bool direct = *op == broker::Operation::send_direct;
  std::string key;
  if (direct) {
    if (!req.contains("to_uid") || !is_id(req["to_uid"])) {
      return error_answer("malformed_request",
                          "\"policy-check\" of send_direct needs the receiver's uid, an integer "
                          "0..4294967295 \"to_uid\"");
    }
    if (auto bad = read_ids(req, "to_gids", to_gids)) return *bad;
  } else if (auto bad = read_key("policy-check", req, key)) {
    return *bad;
  }
  const broker::Policy* policy = server_.broker().policy();
  if (!policy) {
    // Without a policy every queue operation is open, and nobody is granted manage (only
    // a queue's owner and root may).
    return json{{"ok", true},
                {"allowed", *op != broker::Operation::manage},
                {"policy", false},
                {"rule", nullptr}};
  }
  const auto uid = req["uid"].get<std::uint32_t>();
  const auto who = principal(uid, gids);
  const auto d =
      direct ? policy->decide_direct(who, principal(req["to_uid"].get<std::uint32_t>(), to_gids))
             : policy->decide(*op, who, key);
  // `by` names what decided as the denial log line does: a rule by the file and index it
  // was written at, the system bus's baseline, the same-uid or root allowance, or the default.
  json answer{{"ok", true},
              {"allowed", d.allowed},
              {"policy", true},
              {"rule", d.rule < 0 ? json(nullptr) : json(d.rule)},
              {"by", policy->describe(d.rule, uid)}};
  if (direct && d.rule == broker::Decision::kSameUid) answer["builtin"] = "same uid";
  if (direct && d.rule == broker::Decision::kRoot) answer["builtin"] = "root";
  // The rule as the config answer shows it (names resolved), which is the running one: a
  // reload replaces the policy and this text together.
  if (d.rule >= 0) {
    const json config = json::parse(options_.config_json);
    const auto rule = static_cast<std::size_t>(d.rule);
    if (config.contains("policy") && config["policy"].contains("rules") &&
        config["policy"]["rules"].is_array() && rule < config["policy"]["rules"].size()) {
      answer["rule_text"] = config["policy"]["rules"][rule];
    }
  }
  return answer;
}

json AdminServer::delete_matching(const json& req) {
  if (req.contains("key")) {
    return error_answer("malformed_request",
                        "\"delete\" takes a \"key\" or a \"pattern\", not both");
  }
  if (!req["pattern"].is_string()) {
    return error_answer("malformed_request", "\"delete\" needs a string \"pattern\"");
  }
  const std::string pattern = req["pattern"];
  if (auto problem = pattern_problem(pattern, kMaxPatternSize); !problem.empty()) {
    return error_answer("invalid_argument",
                        "bad pattern '" + pattern.substr(0, 64) + "': " + problem);
  }
  auto& broker = server_.broker();
  // Keys first: deleting while visiting would invalidate the visit.
  std::vector<std::string> matching;
  broker.for_each_queue([&](const broker::Queue& q) {
    if (glob_matches(pattern, q.key())) matching.push_back(q.key());
  });
  json keys = json::array();
  std::size_t dropped = 0;
  std::size_t deleted = 0;
  for (const auto& key : matching) {
    if (deleted == kMaxPatternDeletes || dropped >= kMaxPatternDrops) break;
    // A queue collected by an earlier deletion's side effects is simply gone already.
    if (const auto n = broker.remove(key)) {
      dropped += *n;
      ++deleted;
      keys.push_back(key);
    }
  }
  // The rest of the matches, for the caller to ask again; recounted, since deleting one
  // queue never creates another.
  std::size_t remaining = 0;
  broker.for_each_queue([&](const broker::Queue& q) {
    if (glob_matches(pattern, q.key())) ++remaining;
  });
  log_with(requester_, spdlog::level::info,
           "admin: delete pattern '{}' deleted {} queues, dropped {} messages{}", pattern, deleted,
           dropped, remaining ? ", " + std::to_string(remaining) + " matching queues left" : "");
  server_.end_of_batch();  // waiters told queue_deleted, producers resumed: flush now
  return json{{"ok", true},         {"pattern", pattern},      {"deleted", deleted},
              {"dropped", dropped}, {"keys", std::move(keys)}, {"remaining", remaining}};
}

json AdminServer::show_stats(const json&) {
  const auto& broker = server_.broker();
  const auto& t = broker.totals();
  const auto now = SteadyClock::now();
  std::uint64_t region_bytes = 0;
  broker.regions().for_each([&](const broker::RegionInfo& r) { region_bytes += r.size; });
  json stats{{"uptime_s", std::chrono::duration_cast<std::chrono::seconds>(now - started_).count()},
             {"connections", server_.connection_count()},
             {"queues", broker.queue_count()},
             {"inboxes", broker.inbox_count()},
             {"regions", broker.regions().count()},
             {"region_bytes", region_bytes},
             {"messages_in_total", t.messages_in},
             {"messages_out_total", t.messages_out},
             {"bytes_in_total", t.bytes_in},
             {"bytes_out_total", t.bytes_out},
             {"rss_bytes", rss_bytes()}};
  // Rates from the oldest sample in the window to now.
  double secs = 0;
  broker::BrokerTotals base{};
  if (!samples_.empty()) {
    base = samples_.front().totals;
    secs = std::chrono::duration<double>(now - samples_.front().at).count();
  }
  const auto rate = [&](std::uint64_t now_total, std::uint64_t then) {
    return secs > 0 ? static_cast<double>(now_total - then) / secs : 0.0;
  };
  stats["rate_window_s"] = secs;
  stats["messages_in_per_s"] = rate(t.messages_in, base.messages_in);
  stats["messages_out_per_s"] = rate(t.messages_out, base.messages_out);
  stats["bytes_in_per_s"] = rate(t.bytes_in, base.bytes_in);
  stats["bytes_out_per_s"] = rate(t.bytes_out, base.bytes_out);
  if (const storage::StorageStatus* s = options_.storage) {
    const storage::RecoveryStats& r = s->recovery;
    const std::string& why = s->journal ? s->journal->unavailable() : s->error;
    stats["storage"] = json{{"dir", s->dir},
                            {"available", why.empty()},
                            {"error", why},
                            {"disk_bytes", s->journal ? s->journal->disk_bytes() : 0},
                            {"recovery",
                             {{"milliseconds", r.milliseconds},
                              {"segments", r.segments},
                              {"records", r.records},
                              {"queues", r.queues},
                              {"messages", r.messages},
                              {"redelivered", r.redelivered},
                              {"bytes", r.bytes},
                              {"torn_bytes", r.torn_bytes},
                              {"damaged", r.damaged}}}};
  }
  return json{{"ok", true}, {"stats", std::move(stats)}};
}

}  // namespace qbus::daemon
