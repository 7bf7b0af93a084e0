// What a send answers, and the broker-wide message totals: shared by the router (Broker)
// and every registry. Plain values; no ownership, no thread-safety concerns.
#pragma once

#include <cstdint>
#include <string>

#include "broker/types.hpp"

namespace qbus::broker {

enum class SendResult {
  accepted,  // queued, or handed to a waiting receiver
  rejected,  // the Errc says why; nothing was stored
  blocked,   // the target is full and applies backpressure: retry after Sink::resume
  deferred,  // a direct send waits for its target to connect; answered through the Sink
};

struct SendOutcome {
  SendResult result = SendResult::accepted;
  Errc error = Errc::ok;
  std::string text;  // for rejected: a sentence for the ERROR frame
  // For accepted: nonzero when the message was journaled (a durable queue's), the
  // journal's ticket; the edge confirms the send once the journal reports it durable.
  std::uint64_t ticket = 0;
};

// A refusal with its reason.
SendOutcome rejected(Errc code, std::string text);
// The refusal of a frame from a peer the core does not know (a bug at the edge); out of
// line, so that inline callers carry no string construction.
SendOutcome unknown_peer();

struct BrokerTotals {
  std::uint64_t messages_in = 0;
  std::uint64_t messages_out = 0;
  std::uint64_t bytes_in = 0;
  std::uint64_t bytes_out = 0;
  bool operator==(const BrokerTotals&) const = default;
};

}  // namespace qbus::broker
