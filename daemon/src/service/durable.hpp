// qbusd's durable queues at startup: where the state directory is, and the journal opened
// and replayed into the broker before any listener accepts (docs/journal.md).
#pragma once

#include <memory>
#include <string>

#include "net/server.hpp"
#include "qbus/config/config.hpp"
#include "storage/journal.hpp"

namespace qbus::daemon {

// The state directory when neither --state-dir nor storage.dir names one: systemd's
// StateDirectory= ($STATE_DIRECTORY, /var/lib/qbus for the system service), /var/lib/qbus
// for another system instance, else $XDG_STATE_HOME/qbus, else ~/.local/state/qbus.
std::string default_state_dir(bool system_instance);

// Opens the journal in `status.dir` (made, mode 0700, when missing) and replays it into
// `server`'s broker, logging what recovery found. Null, with the reason logged and kept in
// `status.error`, when durable queues are off: qbusd then runs on and refuses durable
// declarations with that reason.
std::unique_ptr<storage::Journal> open_journal(const config::Config& config, Server& server,
                                               storage::StorageStatus& status);

}  // namespace qbus::daemon
