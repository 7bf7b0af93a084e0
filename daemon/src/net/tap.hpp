// Taps on live traffic, for `qbusctl monitor`: the edge reports each message it takes from
// a client and each it hands to one, to a listener the admin socket installs while a
// monitor is attached.
//
// The cost is the point: with no monitor attached the Server's listener is null and every
// message pays one predictable test of it. With one attached, a message costs a virtual
// call, and the listener must decide quickly (a key match) and never block or grow: what
// it cannot keep it drops and counts (docs/admin.md, "monitor").
//
// Thread-safety: none; the broker's thread calls, and the event and what it refers to are
// valid during the call only.
#pragma once

#include <cstdint>
#include <string_view>

#include "broker/types.hpp"

namespace qbus::daemon {

class Connection;

enum class TapKind : std::uint8_t {
  send,     // SEND or SEND_REGION to a queue
  request,  // REQUEST to a queue
  direct,   // SEND_DIRECT (a message, or the reply to a request)
  publish,  // PUBLISH to a subject
  deliver,  // a DELIVER or DELIVER_REGION to a receiver
};

struct TapEvent {
  TapKind kind;
  // Who sent it (send, request, direct, publish) or receives it (deliver).
  const Connection& client;
  // The queue key or subject; empty for a direct message and a reply.
  std::string_view key;
  // A direct message's target as the sender named it: a pid, or a client id when
  // `target_is_client`.
  std::uint64_t target = 0;
  bool target_is_client = false;
  bool reply = false;  // a reply to a request (direct), or the delivery of one
  // A delivery's original sender; null for the other kinds.
  const broker::Identity* sender = nullptr;
  std::uint64_t size = 0;  // payload bytes, or the region's length
  bool region = false;     // the payload is in a shared-memory region: not shown
  broker::Bytes payload;   // the inline payload
  bool refused = false;    // the broker refused it (its sender got an ERROR)
};

class TapListener {
 public:
  virtual ~TapListener() = default;
  virtual void on_message(const TapEvent& e) = 0;
};

}  // namespace qbus::daemon
