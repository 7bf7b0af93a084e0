#include "service/reload.hpp"

#include <spdlog/spdlog.h>

#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <utility>

#include "net/server.hpp"

namespace qbus::daemon {
namespace {

using config::Config;
using config::QueueSettings;

std::string describe(const QueueSettings& s) {
  return "max_messages " + std::to_string(s.max_messages) + ", max_bytes " +
         std::to_string(s.max_bytes) + ", overflow " +
         std::string(proto::overflow_name(s.overflow));
}

bool same(const QueueSettings& a, const QueueSettings& b) {
  return a.max_messages == b.max_messages && a.max_bytes == b.max_bytes && a.overflow == b.overflow;
}

// Fields read once at startup: a change is logged and `effective` keeps the running value.
void keep_restart_only(const Config& running, const Config& next, Config& effective) {
  const auto keep = [](const char* field, auto& kept, const auto& was, const auto& asked) {
    if (asked != was) spdlog::warn("{} changed; restart qbusd to apply", field);
    kept = was;
  };
  keep("socket.path", effective.socket_path, running.socket_path, next.socket_path);
  keep("socket.mode", effective.socket_mode, running.socket_mode, next.socket_mode);
  keep("admin.path", effective.admin_socket_path, running.admin_socket_path,
       next.admin_socket_path);
  keep("admin.mode", effective.admin_socket_mode, running.admin_socket_mode,
       next.admin_socket_mode);
  keep("tcp.listen", effective.tcp_listen, running.tcp_listen, next.tcp_listen);
  keep("tcp.token_file", effective.tcp_token_file, running.tcp_token_file, next.tcp_token_file);
  keep("tcp.allow_plaintext", effective.tcp_allow_plaintext, running.tcp_allow_plaintext,
       next.tcp_allow_plaintext);
  // The TLS context is built once, with the listener.
  keep("tcp.tls", effective.tcp_tls, running.tcp_tls, next.tcp_tls);
  // The limits limits.def marks `restart` (max_payload_bytes: announced to every client in
  // WELCOME and used to size frames, so clients already connected would disagree with the
  // broker about what fits).
  config::for_each_limit(
      [&](const config::LimitSpec& spec, auto& kept, const auto& was, const auto& asked) {
        if (spec.apply != config::Apply::restart) return;
        keep(("limits." + std::string(spec.key)).c_str(), kept, was, asked);
      },
      effective, running, next);
  // The journal is opened once, at startup.
  keep("storage.dir", effective.storage.dir, running.storage.dir, next.storage.dir);
  keep("storage.fsync", effective.storage.fsync, running.storage.fsync, next.storage.fsync);
  keep("storage.batch_ms", effective.storage.batch_ms, running.storage.batch_ms,
       next.storage.batch_ms);
  keep("storage.segment_bytes", effective.storage.segment_bytes, running.storage.segment_bytes,
       next.storage.segment_bytes);
  // The endpoint is bound once, at startup.
  keep("metrics.listen", effective.metrics.listen, running.metrics.listen, next.metrics.listen);
  keep("metrics.max_queue_series", effective.metrics.max_queue_series,
       running.metrics.max_queue_series, next.metrics.max_queue_series);
}

void apply_limits(const Config& running, const Config& effective, Server& server) {
  bool any = false;
  config::for_each_limit(
      [&](const config::LimitSpec& spec, const auto& before, const auto& after) {
        if (spec.apply != config::Apply::live || before == after) return;
        spdlog::info("limits.{}: {} -> {}", spec.key, before, after);
        any = true;
      },
      running, effective);
  if (!same(running.queue_defaults, effective.queue_defaults)) {
    spdlog::info("queue_defaults: {} (queues created from now on)",
                 describe(effective.queue_defaults));
    any = true;
  }
  if (!same(running.inbox, effective.inbox)) {
    spdlog::info("inbox: {} (inboxes created from now on)", describe(effective.inbox));
    any = true;
  }
  if (any) {
    server.set_limits(broker_limits(effective), effective.max_outbound_bytes,
                      effective.handshake_timeout_ms);
  }
}

void apply_queues(const Config& running, const Config& effective, Server& server) {
  auto& broker = server.broker();
  for (std::size_t i = 0; i < effective.queues.size(); ++i) {
    const auto& q = effective.queues[i];
    const bool existed = broker.find(q.key) != nullptr;
    std::string text;
    const auto e = broker.declare_configured(q.key, declared_options(q), text);
    if (e == Errc::queue_conflict) {
      // A declared queue keeps its options: other clients rely on what they declared.
      spdlog::warn(
          "queues[{}]: {}; the new options ({}) apply after a restart, or after "
          "'qbusctl delete {}' and another reload",
          i, text, describe(q.settings), q.key);
    } else if (e != Errc::ok) {
      spdlog::error("queues[{}]: cannot declare queue '{}': {}", i, q.key, text);
    } else if (!existed) {
      spdlog::info("declared queue '{}' ({})", q.key, describe(q.settings));
    }
  }
  for (const auto& old : running.queues) {
    bool kept = false;
    for (const auto& q : effective.queues)
      kept = kept || q.key == old.key;
    if (!kept && broker.release_configured(old.key, broker::Clock::now())) {
      spdlog::info(
          "queue '{}' is no longer in the configuration; after limits.declared_queue_grace_ms "
          "({} ms) it goes once idle, or at 'qbusctl delete {}'",
          old.key, effective.declared_queue_grace_ms, old.key);
    }
  }
  server.end_of_batch();  // a grace may have started: re-arm the deadline timer
}

}  // namespace

broker::QueueOptions declared_options(const config::QueueDeclaration& q) {
  broker::QueueOptions o{q.settings.max_messages, q.settings.max_bytes, q.settings.overflow};
  o.ack_timeout_ms = q.ack_timeout_ms;
  o.max_deliveries = q.max_deliveries;
  o.dead_letter = q.dead_letter;
  o.dead_letter_overflow = q.dead_letter_overflow;
  o.default_ttl_ms = q.ttl_ms;
  o.dead_letter_expired = q.dead_letter_expired;
  o.priorities = q.priorities;
  o.single_active_consumer = q.single_active_consumer;
  o.durable = q.durable;
  o.fsync = q.fsync;  // use_default: storage.fsync
  o.message_ids = q.message_ids;
  return o;
}

broker::Limits broker_limits(const Config& c) {
  broker::Limits l;
  l.queue_defaults = {c.queue_defaults.max_messages, c.queue_defaults.max_bytes,
                      c.queue_defaults.overflow};
  l.inbox = {c.inbox.max_messages, c.inbox.max_bytes, c.inbox.overflow};
  // The rows of limits.def whose owner is the broker, each into its member of Limits.
#define QBUS_COPY_broker(member, key) l.member = c.key;
#define QBUS_COPY_edge(member, key)
#define QBUS_COPY_none(member, key)
#define QBUS_LIMIT(key, type, min, max, def, apply, owner, member, doc) \
  QBUS_COPY_##owner(member, key)
#include "qbus/config/limits.def"
#undef QBUS_LIMIT
#undef QBUS_COPY_none
#undef QBUS_COPY_edge
#undef QBUS_COPY_broker
  return l;
}

std::unique_ptr<const broker::Policy> broker_policy(const Config& c) {
  static_assert(
      broker::operation_bit(broker::Operation::send) == 1 &&
          broker::operation_bit(broker::Operation::receive) == 2 &&
          broker::operation_bit(broker::Operation::declare) == 4 &&
          broker::operation_bit(broker::Operation::request) == 8 &&
          broker::operation_bit(broker::Operation::send_direct) == config::kSendDirectBit &&
          broker::operation_bit(broker::Operation::manage) == 32 &&
          broker::kAllOperations == config::kEveryKeyOperation,
      "config::PolicyRuleSettings::operations uses broker::Operation's bits");
  // A user bus with no policy asks nothing (the message path's one null test); a system bus
  // always has its baseline.
  if (!c.policy.configured && !config::is_system_bus(c)) return nullptr;
  broker::PolicySpec spec;
  spec.default_allow = config::effective_default_allow(c);
  spec.system_bus = config::is_system_bus(c);
  for (const auto& r : c.policy.rules) {
    spec.rules.push_back(broker::PolicyRule{r.allow, r.operations, r.everyone, r.uids, r.gids,
                                            r.keys, r.prefixes, r.to_everyone, r.to_uids, r.to_gids,
                                            r.origin});
  }
  return std::make_unique<broker::Policy>(std::move(spec));
}

std::string describe_policy(const Config& c) {
  const bool system = config::is_system_bus(c);
  if (!c.policy.configured && !system) return "none (everything allowed)";
  std::string text = std::to_string(c.policy.rules.size()) + " rules, default " +
                     (config::effective_default_allow(c) ? "allow" : "deny");
  if (system) text += ", system bus (each uid may use user.<uid>., root everything)";
  return text;
}

bool same_policy(const Config& a, const Config& b) {
  if (a.policy != b.policy || config::is_system_bus(a) != config::is_system_bus(b)) return false;
  // A rule that moved to another file means the same but is named otherwise in the audit.
  for (std::size_t i = 0; i < a.policy.rules.size(); ++i) {
    if (a.policy.rules[i].origin != b.policy.rules[i].origin) return false;
  }
  return true;
}

Config apply_reload(const Config& running, const Config& next, Server& server,
                    const ReloadHooks& hooks) {
  Config effective = next;
  keep_restart_only(running, next, effective);

  if (effective.log_level != running.log_level) {
    spdlog::info("log.level: {} -> {}", running.log_level, effective.log_level);
    spdlog::default_logger()->set_level(spdlog::level::from_str(effective.log_level));
  }
  apply_limits(running, effective, server);
  apply_queues(running, effective, server);
  if (effective.bus != running.bus) spdlog::info("bus: {} -> {}", running.bus, effective.bus);
  if (!same_policy(effective, running)) {
    // Operations from now on are judged by the new policy; what is queued stays.
    server.broker().set_policy(broker_policy(effective));
    spdlog::info("policy: {} (was {})", describe_policy(effective), describe_policy(running));
  }

  if (effective.admin_group != running.admin_group) {
    spdlog::info("admin.group: '{}' -> '{}'", running.admin_group, effective.admin_group);
  }
  if (hooks.publish) {
    try {
      hooks.publish(effective);
    } catch (const std::exception& e) {
      spdlog::error("{}; keeping admin.group '{}'", e.what(), running.admin_group);
      effective.admin_group = running.admin_group;
      try {
        hooks.publish(effective);
      } catch (const std::exception& again) {
        spdlog::error("{}", again.what());
      }
    }
  }
  return effective;
}

// What the reader thread and the reloader share. `owner` is only touched on the
// io_context's thread; `io` is cleared under `mutex` by stop(), so a reader finishing late
// never posts to an io_context that is gone.
struct ConfigReloader::Shared {
  std::mutex mutex;
  asio::io_context* io = nullptr;
  ConfigReloader* owner = nullptr;
};

ConfigReloader::ConfigReloader(asio::io_context& io, std::string path,
                               std::function<void()> starting,
                               std::function<void(config::LoadResult)> done)
    : io_(io),
      path_(std::move(path)),
      starting_(std::move(starting)),
      done_(std::move(done)),
      shared_(std::make_shared<Shared>()) {
  shared_->io = &io_;
  shared_->owner = this;
}

ConfigReloader::~ConfigReloader() {
  stop();
}

bool ConfigReloader::request() {
  if (stopped_) return false;
  if (in_flight_) {
    again_ = true;
    return false;
  }
  start_read();
  return true;
}

void ConfigReloader::stop() {
  if (stopped_) return;
  stopped_ = true;
  again_ = false;
  shared_->owner = nullptr;
  const std::lock_guard lock(shared_->mutex);
  shared_->io = nullptr;
}

void ConfigReloader::start_read() {
  in_flight_ = true;
  if (starting_) starting_();
  try {
    // Detached (see the class comment): the thread owns copies of everything it uses.
    std::thread([shared = shared_, path = path_] {
      // No file: a system instance's built-in defaults and its drop-in policy files.
      auto result = path.empty() ? config::load_dropins(std::string(config::kSystemPolicyDir))
                                 : config::load_file(path);
      const std::lock_guard lock(shared->mutex);
      if (!shared->io) return;
      asio::post(*shared->io, [shared, result = std::move(result)]() mutable {
        if (shared->owner) shared->owner->finish(std::move(result));
      });
    }).detach();
  } catch (const std::system_error& e) {
    // Out of threads: this reload fails like an unreadable file, and the next may work.
    config::LoadResult failed;
    failed.error = "cannot start a thread to read " + path_ + ": " + e.what();
    asio::post(io_, [shared = shared_, failed = std::move(failed)]() mutable {
      if (shared->owner) shared->owner->finish(std::move(failed));
    });
  }
}

void ConfigReloader::finish(config::LoadResult result) {
  in_flight_ = false;
  if (done_) done_(std::move(result));
  if (again_ && !stopped_) {
    again_ = false;
    start_read();
  }
}

}  // namespace qbus::daemon
