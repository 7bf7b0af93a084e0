// Configuration reload (SIGHUP): what changes live and what waits for a restart.
//
// Live: log.level, every limit that qbus/config/limits.def marks `live` (all but
// limits.max_payload_bytes, announced to clients at their handshake), queue_defaults and
// inbox (for queues and inboxes created from now on), new predeclared queues, admin.group,
// the access policy and the bus (for operations from now on).
// Needs a restart, and is logged as such: socket.*, admin.path, admin.mode, tcp.*,
// storage.*, and the limits marked `restart` (limits.max_payload_bytes). config/README.md says the
// same.
#pragma once

#include <asio.hpp>
#include <functional>
#include <memory>
#include <string>

#include "broker/policy.hpp"
#include "broker/types.hpp"
#include "qbus/config/config.hpp"

namespace qbus::daemon {

class Server;

// The broker's limits as configured: every row of limits.def whose owner is the broker,
// and the queue and inbox defaults.
broker::Limits broker_limits(const config::Config& c);

// The options a queue of the configuration is declared with.
broker::QueueOptions declared_options(const config::QueueDeclaration& q);

// The access policy as configured, on the bus `c.bus` says (resolved: "system" or
// "user"); null on a user bus whose configuration has no policy section and no drop-in.
std::unique_ptr<const broker::Policy> broker_policy(const config::Config& c);
// "N rules, default allow|deny" (and the system bus's baseline), or that there is none; for
// the log.
std::string describe_policy(const config::Config& c);
// True when `a` and `b` give the same policy, down to where each rule was written.
bool same_policy(const config::Config& a, const config::Config& b);

struct ReloadHooks {
  // Hands the effective configuration to the admin socket (its group and its `config`
  // answer). May throw std::runtime_error for a group that does not exist; the reload
  // then keeps the running admin.group and calls it again.
  std::function<void(const config::Config&)> publish;
};

// Applies the validated `next` to the running daemon. Logs every change it makes and, for
// each field that needs a restart, "FIELD changed; restart qbusd to apply". Nothing that
// is queued or connected is dropped when a limit shrinks: only new work is refused.
// Returns the configuration now in effect: `next`'s live fields, `running`'s others.
config::Config apply_reload(const config::Config& running, const config::Config& next,
                            Server& server, const ReloadHooks& hooks);

// Runs SIGHUP reloads of one file: reads and parses it (config::load_file) on a thread of
// its own, so that whatever sits at the path cannot stall the broker, and hands the result
// to `done` on the io_context's thread, where the broker's state may be touched.
//
// One read at a time: a request() while one is in flight is remembered, and however many
// came, one more read runs after it (a reload reads the file as it is by then anyway).
//
// Thread-safety: request(), stop() and the destructor on the io_context's thread (or once
// it no longer runs); `starting` and `done` are called there. The reader thread is
// detached and shares only a small state block with this object, never `this`: a read
// stuck in the kernel (a hung network file system) cannot hang shutdown, and its late
// result is dropped once stop() ran. It logs nothing (the logger is not thread-safe).
class ConfigReloader {
 public:
  // `starting` runs when a read begins (RELOADING=1, a log line); `done` gets its result.
  ConfigReloader(asio::io_context& io, std::string path, std::function<void()> starting,
                 std::function<void(config::LoadResult)> done);
  ~ConfigReloader();
  ConfigReloader(const ConfigReloader&) = delete;
  ConfigReloader& operator=(const ConfigReloader&) = delete;

  // Starts a read, or remembers one for when the current read is done. Returns false when
  // the request was folded into a read still to come (nothing started now).
  bool request();
  // No more reads start, and a result still on its way is dropped. Idempotent.
  void stop();

 private:
  struct Shared;
  void start_read();
  void finish(config::LoadResult result);

  asio::io_context& io_;
  std::string path_;
  std::function<void()> starting_;
  std::function<void(config::LoadResult)> done_;
  std::shared_ptr<Shared> shared_;
  bool in_flight_ = false;
  bool again_ = false;
  bool stopped_ = false;
};

}  // namespace qbus::daemon
