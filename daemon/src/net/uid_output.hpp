// What the connections of one uid have waiting to be read by their peers: the edge's half
// of per-uid accounting (the broker core's half is broker/accounting.hpp). A uid at its
// bound is given nothing more (Sink::wants_more is false for all its connections) until
// its peers read, so a uid whose receivers never read holds at most its own bound in
// qbusd, however many connections and waiting receives it has.
//
// Thread-safety: none; owned by the Server, on the broker thread.
#pragma once

#include <cstdint>
#include <vector>

#include "broker/types.hpp"

namespace qbus::daemon {

struct UidOutput {
  std::uint64_t bytes = 0;  // answer bytes buffered for the uid's connections
  std::uint32_t fds = 0;    // region fds waiting to be passed to them
  std::uint32_t connections = 0;
  // Connections of this uid that were refused more output (Sink::wants_more said false)
  // and must be woken (Broker::output_ready) once there is room again. Each at most once.
  std::vector<broker::PeerId> starved;
};

}  // namespace qbus::daemon
