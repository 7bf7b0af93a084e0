// Vocabulary of the broker core. The core is I/O-free: the network edge feeds it frames
// already decoded and receives its answers through a Sink.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "qbus/config/limits.hpp"
#include "qbus/errc.hpp"
#include "qbus/proto/codec.hpp"

namespace qbus::broker {

using Clock = std::chrono::steady_clock;
using PeerId = std::uint64_t;
using RegionId = std::uint64_t;  // broker-unique, nonzero, never reused
using Bytes = std::span<const std::byte>;
using proto::Overflow;
enum class Operation : std::uint8_t;  // a queue operation the access policy judges (policy.hpp)

// Hashes a std::string key and a string_view probe alike (with std::equal_to<>), so that a
// key read from a frame is looked up without a copy.
struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept {
    return std::hash<std::string_view>{}(s);
  }
};

// Who a peer is, as the kernel (or, for TCP, the broker) says; never what it claims.
struct Identity {
  std::uint32_t pid = 0;  // 0 for TCP peers
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  std::uint64_t client_id = 0;  // the PeerId the peer is connected under
  // Tells apart two processes that had the same pid one after the other (the process's
  // start time, read race-free through a pidfd). 0 when unknown.
  std::uint64_t process_token = 0;
  bool tcp = false;
};

// TCP peers have no kernel identity; they share this uid for accounting.
inline constexpr std::uint32_t kTcpUid = 0xFFFFFFFEu;

// The defaults of QueueOptions, RegionLimits and Limits come from config's table of limits
// (qbus/config/limits.def), so that a Broker built without a configuration (the unit tests,
// the benchmarks) has qbusd's built-in values.
struct QueueOptions {
  std::uint32_t max_messages = config::kQueueDefaults.max_messages;
  std::uint64_t max_bytes = config::kQueueDefaults.max_bytes;
  Overflow overflow = config::kQueueDefaults.overflow;
  // Acknowledgements (proto/PROTOCOL.md section 17). Zero or empty: off.
  std::uint32_t ack_timeout_ms = 0;   // an unsettled message is redelivered after this
  std::uint16_t max_deliveries = 0;   // dead-lettered (else dropped) at this many deliveries
  bool dead_letter_overflow = false;  // drop_oldest victims go to dead_letter
  std::string dead_letter;            // a queue key; empty: none
  // Time (proto/PROTOCOL.md 17.8). A message that sets no time to live gets this one; 0:
  // none. An expired message goes to dead_letter when dead_letter_expired, else is dropped.
  std::uint32_t default_ttl_ms = 0;
  bool dead_letter_expired = false;
  // Priority levels, at most proto::kMaxPriorities; 0 and 1: one.
  std::uint8_t priorities = 0;
  // Only the oldest subscription is served; the others stand by in subscription order.
  bool single_active_consumer = false;
  // Journaled (broker/journal.hpp): the queue and its stored messages outlive qbusd. Its
  // sends are confirmed per `fsync` (use_default: the journal's default policy).
  bool durable = false;
  proto::Fsync fsync = proto::Fsync::use_default;
  // Every message stored gets a broker-unique qbus-id header (17.12), which a consumer or a
  // bridge deduplicates by; journaled with the message, so a durable one keeps it.
  bool message_ids = false;
  bool operator==(const QueueOptions&) const = default;
};

// What a sender may say of a queue's message besides its payload (PROPERTIES, 17.1).
// Implicit from a header block alone: direct messages and requests carry only that.
struct MessageProps {
  MessageProps(Bytes h = {}) : headers(h) {}  // NOLINT(google-explicit-constructor)
  Bytes headers;                              // the header block (proto/headers.hpp); empty: none
  std::uint32_t ttl_ms = 0;                   // 0: the queue's default_ttl_ms
  std::uint32_t delay_ms = 0;                 // 0: deliverable at once
  std::uint8_t priority = 0;                  // clamped to the queue's levels
};

struct RegionLimits {
  std::uint64_t max_region_bytes = config::kLimitDefaults.max_region_bytes;
  // Per uid, however many connections it has: the bytes and the number of regions it owns.
  std::uint64_t uid_max_region_bytes = config::kLimitDefaults.uid_max_region_bytes;
  std::uint32_t uid_max_regions = config::kLimitDefaults.uid_max_regions;
  // Across all uids: bounds the table itself and the broker's open file descriptors.
  std::uint32_t max_regions = config::kLimitDefaults.max_regions;
};

struct Limits {
  std::uint32_t max_payload = config::kLimitDefaults.max_payload_bytes;
  QueueOptions queue_defaults{};
  std::uint32_t max_queues = config::kLimitDefaults.max_queues;
  // Queues one uid may have created and not yet seen collected, however many connections
  // it has: one uid cannot take the whole table. Queues of the configuration count against
  // no uid.
  std::uint32_t uid_max_queues = config::kLimitDefaults.uid_max_queues;
  // Bytes of queued payload one uid may hold across all queues, however many connections.
  std::uint64_t uid_max_queued_bytes = config::kLimitDefaults.uid_max_queued_bytes;
  // Messages one uid may have queued: bounds the per-message bookkeeping that payload
  // bytes do not count (a flood of empty messages).
  std::uint64_t uid_max_queued_messages = config::kLimitDefaults.uid_max_queued_messages;
  std::uint32_t uid_max_connections = config::kLimitDefaults.uid_max_connections;
  std::uint32_t max_connections = config::kLimitDefaults.max_connections;
  // Receives one connection may have waiting at once; with max_payload this bounds how
  // much a receiver that stops reading can make the broker buffer for it.
  std::uint32_t max_waiting_receives = config::kLimitDefaults.max_waiting_receives;
  // Receives one uid may have waiting over all its connections: each one waiting on a
  // fresh key holds a queue.
  std::uint32_t uid_max_waiting_receives = config::kLimitDefaults.uid_max_waiting_receives;
  // How long an empty queue declared by a connection that has gone stays before it is
  // collected (Broker::declare); 0: at once.
  std::uint32_t declared_queue_grace_ms = config::kLimitDefaults.declared_queue_grace_ms;
  // Largest batch one receive may ask for; bigger requests are clamped.
  std::uint32_t max_receive_batch = config::kLimitDefaults.max_receive_batch;
  // Messages one connection may hold in acknowledgement mode (too_many_unacked past it),
  // and the prefetch of a subscription that asks for none.
  std::uint32_t max_unacked = config::kLimitDefaults.max_unacked;
  std::uint32_t default_prefetch = config::kLimitDefaults.default_prefetch;
  // Publish/subscribe (proto/PROTOCOL.md 18): subscriptions per connection and per uid,
  // each subscription's buffer bound (the default and the ceiling of what it may ask),
  // and the retained messages the broker keeps.
  std::uint32_t max_subscriptions = config::kLimitDefaults.max_subscriptions;
  std::uint32_t uid_max_subscriptions = config::kLimitDefaults.uid_max_subscriptions;
  std::uint32_t subscription_max_messages = config::kLimitDefaults.subscription_max_messages;
  std::uint64_t subscription_max_bytes = config::kLimitDefaults.subscription_max_bytes;
  std::uint32_t max_retained = config::kLimitDefaults.max_retained;
  // Every process (every TCP connection) has one inbox for direct messages.
  QueueOptions inbox{config::kInboxDefaults.max_messages, config::kInboxDefaults.max_bytes,
                     config::kInboxDefaults.overflow};
  // Requests one connection may have waiting for replies, and direct sends it may have
  // waiting for their target process to connect.
  std::uint32_t max_pending_requests = config::kLimitDefaults.max_pending_requests;
  std::uint32_t max_parked_sends = config::kLimitDefaults.max_parked_sends;
  // Enforced by the edge through Sink::wants_more: what all connections of one uid may
  // have written for them and not yet read (bytes, and region fds in flight). A delivery
  // that would go past either waits, queued, until the uid's peers read.
  std::uint64_t uid_max_outbound_bytes = config::kLimitDefaults.uid_max_outbound_bytes;
  std::uint32_t uid_max_pending_fds = config::kLimitDefaults.uid_max_pending_fds;
  RegionLimits regions{};
};

// A message whose payload is bytes [offset, offset + length) of a shared-memory region
// instead of inline bytes. id 0: no region.
struct RegionRef {
  RegionId id = 0;
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  explicit operator bool() const { return id != 0; }
};

// What a delivery carries besides sender and payload (DELIVERY_INFO, 17.2).
struct DeliveryExtras {
  std::uint64_t tag = 0;    // nonzero: in acknowledgement mode, settle it with this tag
  std::uint32_t count = 1;  // deliveries so far, this one included
  Bytes headers;            // the header block (proto/headers.hpp); empty: none
};

// What a receiver gets. `key` is empty for direct messages and replies. A region message
// has an empty payload and names its region; the receiver holds one more handle on it from
// now on (the edge passes the region's fd on, or, to a TCP peer, streams the bytes and
// then releases the handle).
struct Delivery {
  std::string_view key;
  const Identity& sender;
  std::uint64_t request_id = 0;
  Bytes payload;
  RegionRef region{};
  // Null for a message delivered for the first time, at most once, without headers (the
  // edge then sends no DELIVERY_INFO); valid during the deliver call only.
  const DeliveryExtras* extras = nullptr;
};

// How the edge hears the core's answers. Calls happen synchronously inside the core's
// methods, on the broker thread; the Sink must not call back into the Broker.
class Sink {
 public:
  virtual ~Sink() = default;
  virtual void deliver(PeerId to, std::uint64_t correlation, bool last, const Delivery& d) = 0;
  virtual void fail(PeerId to, std::uint64_t correlation, Errc code, std::string_view text) = 0;
  // A confirmed request whose answer was deferred (a parked direct send) succeeded.
  virtual void confirm(PeerId to, std::uint64_t correlation) = 0;
  // A producer that was told `blocked` may now retry its send.
  virtual void resume(PeerId producer) = 0;
  // False while `peer` (or its uid) has more unsent output than the edge wants buffered.
  // The core then hands it nothing more: receive batches end early, and messages for it
  // stay queued (its receives wait) until the edge calls Broker::output_ready(peer).
  virtual bool wants_more(PeerId peer) = 0;
  // True once the process of `peer`'s connection is known to have exited, though the
  // connection may live on in a process that inherited it; false when the edge cannot
  // tell. Asked when a message is routed by pid, so that a process that has exited never
  // takes what is meant for its pid even before the edge reports the exit (see
  // Broker::process_exited). `as_of` is the `now` of the call being handled (when its
  // frame was read): the answer must account for every exit before it, so the edge may
  // reuse a check it made after `as_of` instead of asking the kernel again.
  virtual bool has_exited(PeerId peer, Clock::time_point as_of) = 0;
  // The access policy denied `peer` the operation `op` on `key`; `rule` is the index of the
  // deciding rule in the policy's rules, or what else decided (Decision::kDefault, ...;
  // Policy::describe names it). For send_direct, `key` names the target instead, as
  // "pid 4242 (uid 1001)" or "client 7 (uid 1001)". Called once per denied operation, before
  // the peer is answered, for the edge's audit log (the core does no I/O; rate-limiting is
  // the edge's).
  virtual void denied(PeerId peer, Operation op, std::string_view key, int rule) = 0;
  // The core gives up on `peer` (a subject subscriber too slow for its policy disconnect;
  // it has been told why through fail): the edge logs `code` and `text` and closes the
  // connection after that ERROR, later than this call (which must not call back into the
  // Broker); Broker::disconnect follows.
  virtual void cut_off(PeerId peer, Errc code, std::string_view text) = 0;
};

}  // namespace qbus::broker
