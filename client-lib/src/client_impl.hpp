// libqbus internals, layer 3 of 3: the operations of Client on top of a Session
// (session.hpp). Client::Impl adds what only Client needs: argument checks, the inbox
// claim, the region threshold, and turning answers into Messages and Regions. The queue
// and direct operations are in client.cpp, the region ones in regions.cpp, publish and
// subject subscriptions in pubsub.cpp.
//
// Ownership, lifetime, thread-safety: Client owns its Impl through a unique_ptr and is not
// thread-safe. The handle states below (MappedPayload, RegionState, SharedRegionState)
// are owned by Message, Region and SharedRegion; they may outlive the Client and be
// destroyed on any thread, which is why they reach it only through the session's
// thread-safe ReleaseQueue.
#pragma once

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "headers.hpp"
#include "properties.hpp"
#include "qbus/client.hpp"
#include "qbus/proto/codec.hpp"
#include "qbus/proto/shm.hpp"
#include "qbus/proto/unique_fd.hpp"
#include "region_pool.hpp"
#include "session.hpp"

namespace qbus {
namespace detail {

// A received region's read-only mapping, shared by the copies of its Message.
struct MappedPayload {
  MappedPayload(proto::shm::Mapping m, std::uint64_t id, std::shared_ptr<ReleaseQueue> r)
      : mapping(std::move(m)), region_id(id), releases(std::move(r)) {}
  MappedPayload(const MappedPayload&) = delete;
  MappedPayload& operator=(const MappedPayload&) = delete;
  ~MappedPayload() {
    mapping.reset();
    releases->push(region_id);
  }
  proto::shm::Mapping mapping;
  std::uint64_t region_id;
  std::shared_ptr<ReleaseQueue> releases;
};

struct RegionState {
  ~RegionState() {
    mapping.reset();
    if (!given_up) releases->push(id);
  }
  proto::UniqueFd fd;
  proto::shm::Mapping mapping;  // writable until the first send
  std::uint64_t id = 0;
  std::size_t size = 0;
  bool sealed = false;
  bool given_up = false;  // handed over with the release flag: the broker dropped our handle
  std::shared_ptr<ReleaseQueue> releases;
};

struct SharedRegionState {
  ~SharedRegionState() {
    mapping.reset();
    releases->push(id);
  }
  proto::shm::Mapping mapping;
  std::uint64_t id = 0;
  std::size_t size = 0;
  bool writable = false;
  std::string key;
  std::shared_ptr<ReleaseQueue> releases;
};

inline std::span<const std::byte> as_bytes(std::string_view s) {
  return std::as_bytes(std::span(s.data(), s.size()));
}

// What a DELIVERY_INFO said about the message that follows it (PROTOCOL.md 17.2); a
// message without one has these defaults.
struct DeliveryMeta {
  std::uint64_t tag = 0;
  std::uint32_t count = 1;
  bool redelivered = false;
  std::string headers;  // the header block, checked
};

// The library's way into the private parts of the public types.
struct Access {
  static void set_mapped(Message& m, std::shared_ptr<const MappedPayload> p) {
    m.mapped_ = std::move(p);
  }
  static void set_delivery(Message& m, proto::Bytes header_block, std::uint64_t tag,
                           std::uint32_t count, bool redelivered);
  static void clear_delivery_tag(Message& m) { m.delivery_tag_ = 0; }
  static void set_delivery(Message& m, const DeliveryMeta& meta) {
    set_delivery(m, as_bytes(meta.headers), meta.tag, meta.count, meta.redelivered);
  }
  static MessageView view(std::string_view key, std::span<const std::byte> bytes, Sender sender,
                          std::uint64_t request_id, const Message* region,
                          const DeliveryMeta& meta) {
    MessageView v;
    v.key_ = key;
    v.bytes_ = bytes;
    v.sender_ = sender;
    v.request_id_ = request_id;
    v.region_ = region;
    v.header_block_ = std::as_bytes(std::span(meta.headers.data(), meta.headers.size()));
    v.delivery_tag_ = meta.tag;
    v.delivery_count_ = meta.count;
    v.redelivered_ = meta.redelivered;
    return v;
  }
  // A view of a kept Message; its header block is encoded again into `meta`, which must
  // outlive the view.
  static MessageView view_of(const Message& m, DeliveryMeta& meta) {
    meta = {m.delivery_tag_, m.delivery_count_, m.redelivered_, {}};
    std::vector<std::byte> block;
    for (const auto& [k, v] : m.headers_)
      proto::append_header(block, k, v);
    meta.headers.assign(reinterpret_cast<const char*>(block.data()), block.size());
    return view(m.key_, m.bytes(), m.sender_, m.request_id_, m.in_shared_memory() ? &m : nullptr,
                meta);
  }
  static const Message* region_of(const MessageView& v) { return v.region_; }
  static RegionState* state(Region& r) { return r.state_.get(); }
  static Region make_region(std::unique_ptr<RegionState> st) {
    Region r;
    r.state_ = std::move(st);
    return r;
  }
  static SharedRegion make_shared(std::unique_ptr<SharedRegionState> st) {
    SharedRegion r;
    r.state_ = std::move(st);
    return r;
  }
};

inline std::int32_t to_wire_timeout(std::chrono::milliseconds t) {
  if (t.count() < 0) return -1;
  return static_cast<std::int32_t>(std::min<std::int64_t>(t.count(), INT32_MAX));
}

inline std::uint32_t batch_size(std::size_t max) {
  if (max == 0) throw Error(Errc::invalid_argument, "a batch must take at least 1 message");
  return static_cast<std::uint32_t>(std::min<std::size_t>(max, UINT32_MAX));
}

// The frames of one correlation's messages, as they arrive: DELIVERY_INFO (kept for the
// message after it), DELIVER (in pieces while flagged MORE, over TCP) and DELIVER_REGION.
struct DeliveryAssembler {
  DeliveryMeta meta;
  std::string pieces;
  bool in_pieces = false;
};

// A subscription's side of the Client (see Subscription in client.hpp), kept in
// Client::Impl under the SUBSCRIBE's correlation for as long as its Subscription lives.
struct SubscriptionState {
  std::string key;  // the queue key, or a subject subscription's pattern
  bool ack = true;  // always false for a subject subscription
  DeliveryAssembler assembler;
  std::deque<Message> ready;    // delivered, not yet handed out by next()
  std::size_t ready_bytes = 0;  // their payload bytes
  std::optional<Error> ended;   // the broker's ERROR that ended it
  bool cancelled = false;       // the broker answered UNSUBSCRIBE
  bool orphaned = false;        // its Subscription is gone uncancelled: drop what comes
  // At most once (ack false), what is kept beyond these bounds drops its oldest, counted in
  // `dropped`; 0: unbounded (the blocking Subscription, which reads only while it waits).
  // One message is always kept, however large.
  std::size_t keep_messages = 0;
  std::size_t keep_bytes = 0;
  std::uint64_t dropped = 0;

  void keep(Message m) {
    ready_bytes += m.size();
    ready.push_back(std::move(m));
    if (ack || keep_messages == 0) return;
    while (ready.size() > 1 && (ready.size() > keep_messages || ready_bytes > keep_bytes)) {
      ready_bytes -= ready.front().size();
      dropped += 1 + ready.front().dropped_before();  // and those the broker dropped before it
      ready.pop_front();
    }
  }
  Message take() {
    Message m = std::move(ready.front());
    ready.pop_front();
    ready_bytes -= m.size();
    return m;
  }
};

}  // namespace detail

// Hidden like everything internal (Client itself is exported, and a nested class would
// inherit that): calls within the library stay direct and inlinable, not through the PLT.
struct __attribute__((visibility("hidden"))) Client::Impl {
  detail::Session session;
  std::size_t region_threshold = 0;
  std::unique_ptr<detail::RegionPool> region_pool;  // null without ClientOptions' pool
  bool inbox_claimed = false;
  mutable std::string last_good_key;  // check_key()'s; Impl is used by one thread at a time
  // Live subscriptions by their SUBSCRIBE's correlation; std::map, so that a
  // SubscriptionState& stays valid while others come and go.
  std::map<std::uint64_t, detail::SubscriptionState> subscriptions;

  // Throws Error(unsupported_version) on a broker that speaks protocol 1.
  void require_v2(std::string_view what) const {
    if (session.info().protocol_version < 2) {
      throw Error(Errc::unsupported_version,
                  std::string(what) +
                      ": the broker speaks protocol 1; this needs protocol 2 (upgrade qbusd)");
    }
  }
  // PROPERTIES for the message frame appended right after it (nothing when `p` is empty).
  // `queue_message`: that frame is a SEND or a SEND_REGION to a queue, the only messages a
  // ttl, a delay or a priority may go with (the broker refuses them on the others).
  void append_properties(const detail::MessageProperties& p, bool queue_message) {
    if (p.empty()) return;
    if (p.timed() && !queue_message) {
      throw Error(Errc::invalid_argument,
                  "a ttl, delay or priority goes with a message to a queue only, not with a "
                  "direct message or a request");
    }
    proto::append_frame(session.out(), session.next_correlation(), 0, p.body());
  }

  void check_key(std::string_view key) const {
    // A producer sends runs of messages to one key: comparing it with the last key that
    // passed costs less than checking each character again (callgrind: a fifth of a send).
    if (!key.empty() && key == last_good_key) return;
    if (!proto::is_valid_key(key)) {
      throw Error(Errc::invalid_key, "invalid queue key '" + std::string(key.substr(0, 64)) +
                                         "': use 1-255 characters of A-Z a-z 0-9 . _ : / -");
    }
    last_good_key.assign(key);
  }
  // A PUBLISH subject (`pattern` false) or a SUBSCRIBE_SUBJECT pattern: Error(invalid_subject)
  // naming the rule it breaks (PROTOCOL.md 18.1), as the broker would answer.
  void check_subject(std::string_view subject, bool pattern) const;
  void check_payload(std::size_t size) const {
    const std::uint32_t max = session.info().max_payload;
    if (size > max) {
      throw Error(Errc::payload_too_large, "payload of " + std::to_string(size) +
                                               " bytes exceeds the broker's limit of " +
                                               std::to_string(max));
    }
  }

  // ---- Queues, direct messages, requests (client.cpp) ----------------------------------
  // Declared inline, as they were when all of Impl sat in one class, so that the compiler
  // keeps folding them into send(), receive() and request(). The append_ and ask_ halves
  // write the frames and return the correlation of the one answered; the blocking calls
  // then wait for it, AsyncEngine registers it. Those are defined below (async_engine.cpp
  // uses them too), the rest in client.cpp.

  // `props` (when not null): sent in PROPERTIES first.
  inline std::uint64_t append_send(std::string_view key, std::span<const std::byte> payload,
                                   std::uint16_t flags,
                                   const detail::MessageProperties* props = nullptr);
  // `flags`: kFlagAck for acknowledgement mode.
  inline std::pair<std::uint64_t, std::chrono::milliseconds> ask_receive(
      std::string_view key, std::size_t max, std::chrono::milliseconds timeout,
      std::uint16_t flags = 0);
  inline std::uint64_t append_send_direct(proto::TargetKind kind, std::uint64_t target,
                                          std::uint64_t in_reply_to,
                                          std::span<const std::byte> payload,
                                          const DirectOptions& options);
  std::uint64_t append_request(std::string_view key, std::span<const std::byte> payload,
                               std::chrono::milliseconds timeout, const Headers& headers);
  inline std::vector<Message> receive(std::string_view key, std::size_t max,
                                      std::chrono::milliseconds timeout, std::uint16_t flags = 0);
  inline std::vector<Message> receive_direct(std::size_t max, std::chrono::milliseconds timeout);
  inline void send_direct(proto::TargetKind kind, std::uint64_t target, std::uint64_t in_reply_to,
                          std::span<const std::byte> payload, const DirectOptions& options);
  std::optional<Message> request(std::string_view key, std::string_view payload,
                                 std::chrono::milliseconds timeout, const Headers& headers);
  template <typename OnView>
  inline std::size_t collect_each(std::uint64_t corr, std::chrono::milliseconds timeout,
                                  std::string_view context, OnView&& on_view);
  inline std::vector<Message> collect(std::uint64_t corr, std::chrono::milliseconds timeout,
                                      std::string_view context, std::size_t expected = 1);
  // PURGE (or, with `remove`, DELETE) of `key`: the number of messages dropped.
  std::uint64_t drop(std::string_view key, bool remove);

  // ---- Deliveries, acknowledgements, subscriptions (acks.cpp) ---------------------------

  enum class Fed { other, part, message };
  // Feeds one frame of an answer to `a`; for a message completed by it, calls
  // on_view(const MessageView&). `other`: not a delivery frame (the caller's to handle).
  template <typename OnView>
  Fed assemble(detail::DeliveryAssembler& a, const proto::Header& h, proto::Bytes b,
               std::string_view context, OnView&& on_view);
  // A frame carrying a subscription's correlation: an ERROR ends it, a delivery completed
  // by the frame goes to on_view(const MessageView&); false for a frame no subscription
  // takes.
  template <typename OnView>
  bool feed(detail::SubscriptionState& st, const proto::Header& h, proto::Bytes b,
            OnView&& on_view) {
    if (h.type == proto::FrameType::error) {
      st.ended = session.error_of(b, "subscription to '" + st.key + "'");
      return true;
    }
    return assemble(st.assembler, h, b, "subscription", on_view) != Fed::other;
  }
  // feed() keeping the message for next() (or dropping it, once orphaned).
  bool feed(detail::SubscriptionState& st, const proto::Header& h, proto::Bytes b);
  // Breaks the session: a frame under a subscription's correlation that is not one of its.
  [[noreturn]] void unexpected_frame(const detail::SubscriptionState& st, const proto::Header& h);
  // The session's stream handler: frames of live subscriptions nobody is waiting for.
  bool on_stream_frame(const proto::Header& h, proto::Bytes b);
  // SUBSCRIBE (SUBSCRIBE_SUBJECT, with CONFIRM) appended and its state registered under
  // the returned correlation, which the subscription's frames carry; nothing is sent yet.
  std::uint64_t open_subscription(std::string_view key, const SubscribeOptions& options);
  std::uint64_t open_subject_subscription(std::string_view pattern, const SubjectOptions& options);
  // UNSUBSCRIBE of subscription `id` appended: its correlation, answered OK or ERROR.
  std::uint64_t append_unsubscribe(std::uint64_t id);
  // UNSUBSCRIBE, waiting for the OK; nothing when cancelled or ended already.
  void unsubscribe(std::uint64_t id);
  // ACK, NACK or EXTEND: pipelined, or with `confirm` waiting for the verdict.
  template <typename Body>
  void settle(const Body& body, bool confirm, std::string_view what);

  // ---- Publish/subscribe (pubsub.cpp) ---------------------------------------------------

  // PUBLISH of `payload` inline, with PROPERTIES first for headers; pipelined, or with
  // options.confirm waiting for the OK.
  void publish_inline(std::string_view subject, std::span<const std::byte> payload,
                      const PublishOptions& options, const detail::MessageProperties& props);

  // ---- Regions (regions.cpp) -----------------------------------------------------------

  void require_unix(std::string_view what) const;
  // Payloads sent from memory that go through a region instead of inline.
  bool via_region(std::size_t size) const {
    return session.passes_fds() && size > 0 &&
           (size > region_threshold || size > session.info().max_payload);
  }
  std::optional<Region> copy_to_region(std::span<const std::byte> payload);
  Region allocate_region(std::size_t size);
  // allocate_region() through the pool: a populated region when one is ready, and the
  // pool's refills asked for in the same round trip.
  Region allocate_pooled(std::size_t size);
  // The Region owning a granted region's handle, its fd and its writable mapping.
  Region writable_region(std::uint64_t id, std::size_t size, proto::UniqueFd fd,
                         proto::shm::Mapping mapping);
  // allocate_region() in two halves, for AsyncEngine: REGION_ALLOC appended (its
  // correlation), and the Region made of the broker's grant.
  std::uint64_t ask_region(std::size_t size);
  Region granted_region(const proto::RegionGrantBody& g, proto::UniqueFd region_fd,
                        std::size_t size);
  void send_region(detail::RegionState& st, proto::RegionTarget kind, std::uint64_t target,
                   std::string_view key, std::size_t offset, std::size_t length, bool release,
                   std::chrono::milliseconds wait, bool confirm,
                   const detail::MessageProperties* props = nullptr);
  // send_region() up to its SEND_REGION appended (the region sealed first): its
  // correlation, for the OK when `confirm`.
  std::uint64_t append_region_send(detail::RegionState& st, proto::RegionTarget kind,
                                   std::uint64_t target, std::string_view key, std::size_t offset,
                                   std::size_t length, bool release, std::chrono::milliseconds wait,
                                   bool confirm, const detail::MessageProperties* props = nullptr);
  std::pair<proto::RegionGrantBody, proto::UniqueFd> wait_grant(std::uint64_t corr,
                                                                std::string_view context);
  Message mapped_message(proto::Bytes body, std::string_view context);
};

inline std::uint64_t Client::Impl::append_send(std::string_view key,
                                               std::span<const std::byte> payload,
                                               std::uint16_t flags,
                                               const detail::MessageProperties* props) {
  session.check_usable();
  check_key(key);
  check_payload(payload.size());
  if (props) append_properties(*props, /*queue_message=*/true);
  const std::uint64_t corr = session.next_correlation();
  proto::append_send(session.out(), corr, flags, key, payload);
  return corr;
}

inline std::pair<std::uint64_t, std::chrono::milliseconds> Client::Impl::ask_receive(
    std::string_view key, std::size_t max, std::chrono::milliseconds timeout, std::uint16_t flags) {
  session.check_usable();
  check_key(key);
  proto::Receive r;
  r.key = key;
  r.timeout_ms = detail::to_wire_timeout(timeout);
  r.max_count = detail::batch_size(max);
  const std::uint64_t corr = session.next_correlation();
  proto::append_frame(session.out(), corr, flags, r);
  return {corr, std::chrono::milliseconds(r.timeout_ms)};
}

inline std::uint64_t Client::Impl::append_send_direct(proto::TargetKind kind, std::uint64_t target,
                                                      std::uint64_t in_reply_to,
                                                      std::span<const std::byte> payload,
                                                      const DirectOptions& options) {
  session.check_usable();
  check_payload(payload.size());
  proto::SendDirect d;
  d.kind = kind;
  d.target = target;
  d.in_reply_to = in_reply_to;
  // kForever: as long as the wire allows (about 24 days).
  d.wait_ms = options.wait.count() < 0 ? INT32_MAX : detail::to_wire_timeout(options.wait);
  d.payload = payload;
  const auto props = detail::message_properties(options.headers);
  if (!props.empty()) require_v2("direct message with headers");
  append_properties(props, /*queue_message=*/false);
  const std::uint64_t corr = session.next_correlation();
  proto::append_send_direct(session.out(), corr, options.confirm ? proto::kFlagConfirm : 0, d);
  return corr;
}

// Here rather than in acks.cpp: receives (client.cpp) and subscriptions (acks.cpp) both
// read deliveries through it.
template <typename OnView>
Client::Impl::Fed Client::Impl::assemble(detail::DeliveryAssembler& a, const proto::Header& h,
                                         proto::Bytes b, std::string_view context,
                                         OnView&& on_view) {
  using proto::FrameType;
  if (h.type == FrameType::delivery_info) {
    proto::DeliveryInfo info;
    if (proto::decode_body(b, info) != Errc::ok || !detail::valid_header_block(info.headers)) {
      session.fail(Errc::protocol_violation, std::string(context) + ": malformed DELIVERY_INFO");
    }
    a.meta.tag = info.delivery_tag;
    a.meta.count = info.delivery_count;
    a.meta.redelivered = info.redelivered;
    a.meta.headers.assign(reinterpret_cast<const char*>(info.headers.data()), info.headers.size());
    return Fed::part;
  }
  if (h.type == FrameType::deliver_region) {
    Message m = mapped_message(b, context);
    detail::Access::set_delivery(m, a.meta);
    const detail::DeliveryMeta meta = std::exchange(a.meta, {});
    on_view(detail::Access::view(m.key(), m.bytes(), m.sender(), m.request_id(), &m, meta));
    return Fed::message;
  }
  if (h.type != FrameType::deliver) return Fed::other;
  proto::Deliver d;
  if (proto::decode_deliver(b, d) != Errc::ok) {
    session.fail(Errc::protocol_violation, std::string(context) + ": malformed DELIVER");
  }
  const auto text =
      std::string_view(reinterpret_cast<const char*>(d.payload.data()), d.payload.size());
  if ((h.flags & proto::kFlagMore) != 0 || a.in_pieces) {
    a.pieces.append(text);
    a.in_pieces = (h.flags & proto::kFlagMore) != 0;
    if (a.in_pieces) return Fed::part;
  }
  // Moved out first: on_view may throw, and the next message must start clean.
  const detail::DeliveryMeta meta = std::exchange(a.meta, {});
  const std::string whole = std::exchange(a.pieces, {});
  const Sender sender{d.sender_pid, d.sender_uid, d.sender_client_id};
  const auto bytes = whole.empty() ? d.payload : detail::as_bytes(whole);
  on_view(detail::Access::view(d.key, bytes, sender, d.request_id, nullptr, meta));
  return Fed::message;
}

}  // namespace qbus
