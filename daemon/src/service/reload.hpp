// Configuration reload (SIGHUP): what changes live and what waits for a restart.
//
// Live: log.level, every limit except limits.max_payload_bytes (announced to clients at
// their handshake), queue_defaults and inbox (for queues and inboxes created from now on),
// new predeclared queues, admin.group. Needs a restart, and is logged as such: socket.*,
// admin.path, admin.mode, tcp.*, limits.max_payload_bytes. config/README.md says the same.
#pragma once

#include <functional>

#include "broker/types.hpp"
#include "qbus/config/config.hpp"

namespace qbus::daemon {

class Server;

// The broker's limits as configured.
broker::Limits broker_limits(const config::Config& c);

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

}  // namespace qbus::daemon
