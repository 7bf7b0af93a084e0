// Wire protocol (versions 1 and 2): every frame type and every body, described once
// (proto/PROTOCOL.md is normative; its section numbers are cited beside each body).
//
// Each body is a plain struct followed by its Layout: the frame type it travels in, its
// fields in wire order (field.hpp) and, where fields constrain one another, its rule. The
// generic decode_body, encode_body and body_size (field.hpp) are generated from these, and
// kFrameTraits below is the one table of every frame type's name, direction, allowed flags
// and fixed part. Adding a frame is one struct, one Layout and one row.
//
// Header-only and constexpr; nothing here allocates, blocks or keeps state.
#pragma once

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <string_view>
#include <tuple>
#include <type_traits>

#include "qbus/errc.hpp"
#include "qbus/proto/field.hpp"
#include "qbus/proto/subject.hpp"

namespace qbus::proto {

// The newest protocol version, negotiated in HELLO/WELCOME (the highest both ends speak).
// Version 2 is version 1 plus the frames of section 17 (message headers, acknowledgements,
// subscriptions); a frame type whose kFrameTraits row says min_version 2 is unknown on a
// version-1 connection.
inline constexpr std::uint8_t kVersion = 2;
// The frame header's version byte (section 4): the framing, which both versions share.
inline constexpr std::uint8_t kFrameVersion = 1;
inline constexpr std::uint8_t kMinVersion = 1;
inline constexpr std::uint8_t kMaxVersion = 2;
inline constexpr std::size_t kMaxKeySize = 255;
inline constexpr std::size_t kMaxClientNameSize = 64;
inline constexpr std::size_t kMaxTokenSize = 1024;
inline constexpr std::size_t kMaxErrorTextSize = 1024;

enum class FrameType : std::uint8_t {
  hello = 1,
  welcome = 2,
  error = 3,
  ok = 4,
  send = 5,
  receive = 6,
  deliver = 7,
  declare = 8,
  ping = 9,
  pong = 10,
  send_direct = 11,
  receive_direct = 12,
  claim_inbox = 13,
  request = 14,
  region_alloc = 15,
  region = 16,
  send_region = 17,
  deliver_region = 18,
  region_release = 19,
  region_create = 20,
  region_attach = 21,
  region_remove = 22,
  purge = 23,
  delete_queue = 24,
  dropped = 25,
  // Version 2 (section 17).
  properties = 26,
  delivery_info = 27,
  ack = 28,
  nack = 29,
  extend = 30,
  subscribe = 31,
  unsubscribe = 32,
  declare_ex = 33,
  // Publish/subscribe (section 18), version 2.
  publish = 34,
  subscribe_subject = 35,
};

// Header flag bits (section 4). A bit is meaningful only on the frame types kFrameTraits
// allows it on; on any other type it must be zero.
// send, send_direct, declare, send_region, region_release: answer OK or ERROR.
inline constexpr std::uint16_t kFlagConfirm = 0x0001;
// deliver, deliver_region: the last answer to its receive, receive_direct or request.
inline constexpr std::uint16_t kFlagLast = 0x0002;
// deliver: the payload continues in the next DELIVER with the same correlation (a region
// message sent inline to a TCP peer, in pieces no larger than max_body).
inline constexpr std::uint16_t kFlagMore = 0x0004;
// receive (version 2): hand the messages over in acknowledgement mode (section 17.3).
inline constexpr std::uint16_t kFlagAck = 0x0008;
// publish (version 2): keep the message as its subject's retained message (section 18.6).
inline constexpr std::uint16_t kFlagRetain = 0x0010;

enum class Overflow : std::uint8_t { use_default = 0, reject = 1, drop_oldest = 2, block = 3 };
enum class TargetKind : std::uint8_t { pid = 1, client_id = 2 };
enum class RegionTarget : std::uint8_t { queue = 0, pid = 1, client_id = 2, subject = 3 };
// 18.4: what a subject subscription does when its buffer is full.
enum class SlowPolicy : std::uint8_t { use_default = 0, drop_oldest = 1, disconnect = 2, block = 3 };
// 17.4: what a NACK does with the messages it names.
enum class NackAction : std::uint8_t { requeue = 1, requeue_after = 2, dead_letter = 3 };

// 17.1: bounds of a message's header block (headers.hpp).
inline constexpr std::size_t kMaxHeaders = 32;
inline constexpr std::size_t kMaxHeaderKeySize = 64;
inline constexpr std::size_t kMaxHeaderValueSize = 1024;
inline constexpr std::size_t kMaxHeadersSize = 4096;

// ---- bodies -----------------------------------------------------------------------------

// What a Layout derives from: the frame type a body travels in and its fields in wire order.
template <FrameType kT, typename... Fs>
struct Described {
  static constexpr FrameType kType = kT;
  using Fields = field::List<Fs...>;
};

// 3.1
struct Hello {
  std::uint8_t min_version = kMinVersion;
  std::uint8_t max_version = kMaxVersion;
  std::string_view client_name;
  std::string_view token;  // empty on Unix sockets; TCP authentication
};
template <>
struct Layout<Hello>
    : Described<FrameType::hello, field::Int<&Hello::min_version>, field::Int<&Hello::max_version>,
                field::Str<&Hello::client_name, std::uint16_t, kMaxClientNameSize>,
                field::Str<&Hello::token, std::uint16_t, kMaxTokenSize>,
                field::Zero<std::uint16_t>> {
  static Errc check(const Hello& m) noexcept {
    return m.min_version != 0 && m.min_version <= m.max_version ? Errc::ok : Errc::malformed_frame;
  }
};

// 3.2
struct Welcome {
  std::uint8_t version = kVersion;
  std::uint32_t max_body = 0;
  std::uint32_t max_payload = 0;
  std::uint32_t pid = 0;  // the client's own identity as the kernel reported it
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  std::uint64_t client_id = 0;
};
template <>
struct Layout<Welcome>
    : Described<FrameType::welcome, field::IntAtLeast<&Welcome::version, kMinVersion>,
                field::Zero<std::uint8_t>, field::Zero<std::uint16_t>,
                field::Int<&Welcome::max_body>, field::Int<&Welcome::max_payload>,
                field::Int<&Welcome::pid>, field::Int<&Welcome::uid>, field::Int<&Welcome::gid>,
                field::Int<&Welcome::client_id>> {};

// 3.3
struct ErrorBody {
  std::uint16_t code = 0;  // raw, so unknown future codes still decode
  std::string_view text;   // cut to kMaxErrorTextSize when encoded
};
template <>
struct Layout<ErrorBody> : Described<FrameType::error, field::Int<&ErrorBody::code>,
                                     field::Str<&ErrorBody::text, std::uint16_t, kMaxErrorTextSize,
                                                field::Check::none, /*kTruncate=*/true>> {};

// 3.4
struct Send {
  std::string_view key;
  Bytes payload;
};
template <>
struct Layout<Send>
    : Described<FrameType::send, field::Key<&Send::key>, field::Payload<&Send::payload>> {};

// 3.5
struct Receive {
  std::int32_t timeout_ms = -1;  // -1 waits forever, 0 does not wait
  std::uint32_t max_count = 1;
  std::string_view key;
};
template <>
struct Layout<Receive> : Described<FrameType::receive, field::Int<&Receive::timeout_ms>,
                                   field::Int<&Receive::max_count>, field::Key<&Receive::key>> {
  static Errc check(const Receive& m) noexcept {
    return m.timeout_ms < -1 || m.max_count == 0 ? Errc::malformed_frame : Errc::ok;
  }
};

// 3.6
struct Deliver {
  std::uint32_t sender_pid = 0;
  std::uint32_t sender_uid = 0;
  std::uint64_t sender_client_id = 0;
  std::uint64_t request_id = 0;  // nonzero: the sender waits for a reply to this id
  std::string_view key;          // empty for a direct message or a reply
  Bytes payload;
};
template <>
struct Layout<Deliver>
    : Described<FrameType::deliver, field::Int<&Deliver::sender_pid>,
                field::Int<&Deliver::sender_uid>, field::Int<&Deliver::sender_client_id>,
                field::Int<&Deliver::request_id>, field::KeyOrEmpty<&Deliver::key>,
                field::Payload<&Deliver::payload>> {};

// 3.7
struct Declare {
  std::uint32_t max_messages = 0;  // 0: broker default
  std::uint64_t max_bytes = 0;     // 0: broker default
  Overflow overflow = Overflow::use_default;
  std::string_view key;
};
template <>
struct Layout<Declare>
    : Described<FrameType::declare, field::Int<&Declare::max_messages>,
                field::Int<&Declare::max_bytes>,
                field::Enum<&Declare::overflow, Overflow::use_default, Overflow::block>,
                field::Key<&Declare::key>> {};

// 3.8
struct SendDirect {
  TargetKind kind = TargetKind::pid;
  std::int32_t wait_ms = 0;  // > 0: wait this long for the target to connect
  std::uint64_t target = 0;
  std::uint64_t in_reply_to = 0;  // nonzero: a reply to that request (kind is client_id)
  Bytes payload;
};
template <>
struct Layout<SendDirect>
    : Described<FrameType::send_direct,
                field::Enum<&SendDirect::kind, TargetKind::pid, TargetKind::client_id>,
                field::Zero<std::uint8_t>, field::Zero<std::uint16_t>,
                field::Int<&SendDirect::wait_ms>, field::Int<&SendDirect::target>,
                field::Int<&SendDirect::in_reply_to>, field::Payload<&SendDirect::payload>> {
  static Errc check(const SendDirect& m) noexcept {
    if (m.wait_ms < 0 || m.target == 0) return Errc::malformed_frame;
    if (m.kind == TargetKind::pid && m.target > 0xFFFFFFFFu) return Errc::malformed_frame;
    // A reply goes to the requesting connection, which only a client id names.
    if (m.in_reply_to != 0 && m.kind != TargetKind::client_id) return Errc::malformed_frame;
    return Errc::ok;
  }
};

// 3.9
struct ReceiveDirect {
  std::int32_t timeout_ms = -1;
  std::uint32_t max_count = 1;
};
template <>
struct Layout<ReceiveDirect>
    : Described<FrameType::receive_direct, field::Int<&ReceiveDirect::timeout_ms>,
                field::Int<&ReceiveDirect::max_count>> {
  static Errc check(const ReceiveDirect& m) noexcept {
    return m.timeout_ms < -1 || m.max_count == 0 ? Errc::malformed_frame : Errc::ok;
  }
};

// 3.10
struct Request {
  std::int32_t timeout_ms = -1;  // how long the broker keeps waiting for the reply
  std::string_view key;
  Bytes payload;
};
// The timeout is refused as it is read, before the key is looked at (unlike RECEIVE's).
template <>
struct Layout<Request> : Described<FrameType::request, field::IntAtLeast<&Request::timeout_ms, -1>,
                                   field::Key<&Request::key>, field::Payload<&Request::payload>> {};

// 16.2
struct RegionAlloc {
  std::uint64_t size = 0;
};
template <>
struct Layout<RegionAlloc>
    : Described<FrameType::region_alloc, field::IntAtLeast<&RegionAlloc::size, 1>> {};

// 16.2: the broker's answer to REGION_ALLOC, REGION_CREATE and REGION_ATTACH; the region's
// fd travels with the frame.
struct RegionGrantBody {
  std::uint64_t region_id = 0;
  std::uint64_t size = 0;
  bool writable = false;
};
template <>
struct Layout<RegionGrantBody>
    : Described<FrameType::region, field::IntAtLeast<&RegionGrantBody::region_id, 1>,
                field::IntAtLeast<&RegionGrantBody::size, 1>,
                field::Bool<&RegionGrantBody::writable>, field::Zero<std::uint8_t>,
                field::Zero<std::uint16_t>, field::Zero<std::uint32_t>> {};

// 16.3
struct SendRegion {
  std::uint64_t region_id = 0;
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  RegionTarget target_kind = RegionTarget::queue;
  bool release = false;      // drop the sender's handle once the message holds the region
  std::int32_t wait_ms = 0;  // pid targets: as SEND_DIRECT
  std::uint64_t target = 0;  // pid or client id; 0 for a queue
  std::string_view key;      // queue targets only
};
template <>
struct Layout<SendRegion>
    : Described<FrameType::send_region, field::IntAtLeast<&SendRegion::region_id, 1>,
                field::Int<&SendRegion::offset>, field::IntAtLeast<&SendRegion::length, 1>,
                field::Enum<&SendRegion::target_kind, RegionTarget::queue, RegionTarget::subject>,
                field::Bool<&SendRegion::release>, field::Zero<std::uint16_t>,
                field::IntAtLeast<&SendRegion::wait_ms, 0>, field::Int<&SendRegion::target>,
                field::KeyBytes<&SendRegion::key>> {
  // Whether the key must be a valid key or absent depends on the target kind.
  static Errc check(const SendRegion& m) noexcept {
    if (m.target_kind == RegionTarget::queue) {
      if (m.target != 0 || m.wait_ms != 0) return Errc::malformed_frame;
      return is_valid_key(m.key) ? Errc::ok : Errc::invalid_key;
    }
    if (m.target_kind == RegionTarget::subject) {
      if (m.target != 0 || m.wait_ms != 0) return Errc::malformed_frame;
      return is_valid_subject(m.key) ? Errc::ok : Errc::invalid_subject;
    }
    if (m.target_kind == RegionTarget::pid && m.target > 0xFFFFFFFFu) {
      return Errc::malformed_frame;
    }
    return m.target == 0 || !m.key.empty() ? Errc::malformed_frame : Errc::ok;
  }
};

// 16.4
struct DeliverRegion {
  std::uint32_t sender_pid = 0;
  std::uint32_t sender_uid = 0;
  std::uint64_t sender_client_id = 0;
  std::uint64_t request_id = 0;
  std::uint64_t region_id = 0;
  std::uint64_t region_size = 0;
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  std::string_view key;  // empty for a direct message
};
template <>
struct Layout<DeliverRegion>
    : Described<FrameType::deliver_region, field::Int<&DeliverRegion::sender_pid>,
                field::Int<&DeliverRegion::sender_uid>,
                field::Int<&DeliverRegion::sender_client_id>,
                field::Int<&DeliverRegion::request_id>, field::Int<&DeliverRegion::region_id>,
                field::Int<&DeliverRegion::region_size>, field::Int<&DeliverRegion::offset>,
                field::Int<&DeliverRegion::length>, field::KeyBytes<&DeliverRegion::key>> {
  // The key is checked after the trailing bytes here, unlike in the other bodies.
  static Errc check(const DeliverRegion& m) noexcept {
    if (!m.key.empty() && !is_valid_key(m.key)) return Errc::invalid_key;
    // The slice must lie inside the region; the receiver checks it against the fd again.
    if (m.region_id == 0 || m.length == 0 || m.offset > m.region_size ||
        m.length > m.region_size - m.offset) {
      return Errc::malformed_frame;
    }
    return Errc::ok;
  }
};

// 16.5
struct RegionRelease {
  std::uint64_t region_id = 0;
};
template <>
struct Layout<RegionRelease>
    : Described<FrameType::region_release, field::IntAtLeast<&RegionRelease::region_id, 1>> {};

// 16.6
struct RegionCreate {
  std::uint64_t size = 0;
  std::uint16_t mode = 0;  // rw bits of 0666 only
  std::string_view key;
};
template <>
struct Layout<RegionCreate>
    : Described<FrameType::region_create, field::Int<&RegionCreate::size>,
                field::Int<&RegionCreate::mode>, field::Key<&RegionCreate::key>> {
  static Errc check(const RegionCreate& m) noexcept {
    return m.size == 0 || (m.mode & ~0666u) != 0 ? Errc::malformed_frame : Errc::ok;
  }
};

// 16.6
struct RegionAttach {
  bool writable = false;
  std::string_view key;
};
template <>
struct Layout<RegionAttach>
    : Described<FrameType::region_attach, field::Bool<&RegionAttach::writable>,
                field::Key<&RegionAttach::key>> {};

// 16.6
struct RegionRemove {
  std::string_view key;
};
template <>
struct Layout<RegionRemove> : Described<FrameType::region_remove, field::Key<&RegionRemove::key>> {
};

// 3.11
struct Purge {
  std::string_view key;
};
template <>
struct Layout<Purge> : Described<FrameType::purge, field::Key<&Purge::key>> {};

// 3.11
struct DeleteQueue {
  std::string_view key;
};
template <>
struct Layout<DeleteQueue> : Described<FrameType::delete_queue, field::Key<&DeleteQueue::key>> {};

// 3.12: the broker's answer to PURGE and DELETE.
struct Dropped {
  std::uint64_t count = 0;  // messages dropped
};
template <>
struct Layout<Dropped> : Described<FrameType::dropped, field::Int<&Dropped::count>> {};

// ---- version 2 (section 17) ---------------------------------------------------------------

// 17.1: the properties of the message in the next frame of the same connection, which must
// be SEND, SEND_REGION, REQUEST or SEND_DIRECT. The header block is checked by
// check_headers (headers.hpp) where it is used. A time to live, a delay and a priority
// apply to a queue's message (SEND, SEND_REGION) only.
inline constexpr std::uint8_t kMaxPriority = 9;  // levels 0..9
struct Properties {
  std::uint32_t ttl_ms = 0;    // 0: the queue's default_ttl (none when it has none)
  std::uint32_t delay_ms = 0;  // 0: deliverable at once
  std::uint8_t priority = 0;   // 0..kMaxPriority; clamped to the queue's levels
  Bytes headers;               // the header block (headers.hpp); empty: none
};
template <>
struct Layout<Properties>
    : Described<FrameType::properties, field::Int<&Properties::ttl_ms>,
                field::Int<&Properties::delay_ms>, field::Int<&Properties::priority>,
                field::Zero<std::uint8_t>, field::Zero<std::uint16_t>,
                field::Payload<&Properties::headers>> {
  static Errc check(const Properties& m) noexcept {
    if (m.priority > kMaxPriority) return Errc::malformed_frame;
    return m.headers.size() > kMaxHeadersSize ? Errc::malformed_frame : Errc::ok;
  }
};

// 17.2: what the DELIVER or DELIVER_REGION that follows with the same correlation carries
// besides its body. Sent only on version-2 connections, and only when there is something
// to say (an acknowledgement tag, headers, a redelivery).
struct DeliveryInfo {
  std::uint64_t delivery_tag = 0;    // nonzero: settle it with ACK or NACK
  std::uint32_t delivery_count = 1;  // deliveries of this message so far, this one included
  bool redelivered = false;
  Bytes headers;
};
template <>
struct Layout<DeliveryInfo>
    : Described<FrameType::delivery_info, field::Int<&DeliveryInfo::delivery_tag>,
                field::IntAtLeast<&DeliveryInfo::delivery_count, 1>,
                field::Bool<&DeliveryInfo::redelivered>, field::Zero<std::uint8_t>,
                field::Zero<std::uint16_t>, field::Payload<&DeliveryInfo::headers>> {
  static Errc check(const DeliveryInfo& m) noexcept {
    return m.headers.size() > kMaxHeadersSize ? Errc::malformed_frame : Errc::ok;
  }
};

// 17.4: settles the message of `delivery_tag`, or with `multiple` every message this
// connection holds up to and including it.
struct Ack {
  std::uint64_t delivery_tag = 0;
  bool multiple = false;
};
template <>
struct Layout<Ack> : Described<FrameType::ack, field::IntAtLeast<&Ack::delivery_tag, 1>,
                               field::Bool<&Ack::multiple>, field::Zero<std::uint8_t>,
                               field::Zero<std::uint16_t>, field::Zero<std::uint32_t>> {};

// 17.4
struct Nack {
  std::uint64_t delivery_tag = 0;
  NackAction action = NackAction::requeue;
  bool multiple = false;
  std::uint32_t delay_ms = 0;  // requeue_after only
};
template <>
struct Layout<Nack>
    : Described<FrameType::nack, field::IntAtLeast<&Nack::delivery_tag, 1>,
                field::Enum<&Nack::action, NackAction::requeue, NackAction::dead_letter>,
                field::Bool<&Nack::multiple>, field::Zero<std::uint16_t>,
                field::Int<&Nack::delay_ms>> {
  static Errc check(const Nack& m) noexcept {
    return m.action != NackAction::requeue_after && m.delay_ms != 0 ? Errc::malformed_frame
                                                                    : Errc::ok;
  }
};

// 17.4: the message's ack deadline becomes now + extend_ms (0: now + the queue's
// ack_timeout).
struct Extend {
  std::uint64_t delivery_tag = 0;
  std::uint32_t extend_ms = 0;
};
template <>
struct Layout<Extend> : Described<FrameType::extend, field::IntAtLeast<&Extend::delivery_tag, 1>,
                                  field::Int<&Extend::extend_ms>, field::Zero<std::uint32_t>> {};

// 17.5: the broker pushes messages of `key` with this frame's correlation, without a
// RECEIVE each time, while the subscription has credit: in acknowledgement mode at most
// `prefetch` unsettled at once; without, while the connection reads its output.
struct Subscribe {
  std::uint32_t prefetch = 0;  // 0: limits.default_prefetch; clamped to limits.max_unacked
  bool ack = true;
  std::string_view key;
};
template <>
struct Layout<Subscribe> : Described<FrameType::subscribe, field::Int<&Subscribe::prefetch>,
                                     field::Bool<&Subscribe::ack>, field::Zero<std::uint8_t>,
                                     field::Zero<std::uint16_t>, field::Key<&Subscribe::key>> {};

// 17.5: ends the subscription SUBSCRIBE opened with correlation `subscription`. Messages
// it holds in flight stay held until settled or the connection closes.
struct Unsubscribe {
  std::uint64_t subscription = 0;
};
template <>
struct Layout<Unsubscribe>
    : Described<FrameType::unsubscribe, field::IntAtLeast<&Unsubscribe::subscription, 1>> {};

// 17.6: DECLARE with the options of version 2.
inline constexpr std::uint8_t kDeclareDeadLetterOverflow = 0x01;  // drop_oldest: to dead_letter
inline constexpr std::uint8_t kDeclareDeadLetterExpired = 0x02;   // expired: to dead_letter
inline constexpr std::uint8_t kDeclareSingleActiveConsumer = 0x04;
inline constexpr std::uint8_t kDeclareDurable = 0x08;     // journaled: outlives qbusd (17.11)
inline constexpr std::uint8_t kDeclareMessageIds = 0x10;  // each message gets a qbus-id (17.12)
inline constexpr std::uint8_t kDeclareFlags =
    kDeclareDeadLetterOverflow | kDeclareDeadLetterExpired | kDeclareSingleActiveConsumer |
    kDeclareDurable | kDeclareMessageIds;
// A durable queue's fsync policy (17.11); default: the daemon's (storage.fsync).
enum class Fsync : std::uint8_t { use_default = 0, always = 1, batch = 2, none = 3 };
inline constexpr std::uint8_t kMaxPriorities = kMaxPriority + 1;
struct DeclareEx {
  std::uint32_t max_messages = 0;  // 0: broker default
  std::uint64_t max_bytes = 0;     // 0: broker default
  Overflow overflow = Overflow::use_default;
  std::uint8_t flags = 0;            // kDeclare*
  std::uint16_t max_deliveries = 0;  // 0: unlimited
  std::uint32_t ack_timeout_ms = 0;  // 0: none
  std::uint32_t ttl_ms = 0;          // a message's time to live when it sets none; 0: none
  std::uint8_t priorities = 0;       // priority levels, 0..kMaxPriorities; 0 and 1: one
  Fsync fsync = Fsync::use_default;  // only with kDeclareDurable
  std::string_view key;
  std::string_view dead_letter;  // empty: none
};
template <>
struct Layout<DeclareEx>
    : Described<FrameType::declare_ex, field::Int<&DeclareEx::max_messages>,
                field::Int<&DeclareEx::max_bytes>,
                field::Enum<&DeclareEx::overflow, Overflow::use_default, Overflow::block>,
                field::Int<&DeclareEx::flags>, field::Int<&DeclareEx::max_deliveries>,
                field::Int<&DeclareEx::ack_timeout_ms>, field::Int<&DeclareEx::ttl_ms>,
                field::Int<&DeclareEx::priorities>,
                field::Enum<&DeclareEx::fsync, Fsync::use_default, Fsync::none>,
                field::Zero<std::uint16_t>, field::Key<&DeclareEx::key>,
                field::KeyOrEmpty<&DeclareEx::dead_letter>> {
  static Errc check(const DeclareEx& m) noexcept {
    if ((m.flags & ~kDeclareFlags) != 0 || m.priorities > kMaxPriorities) {
      return Errc::malformed_frame;
    }
    if (m.fsync != Fsync::use_default && (m.flags & kDeclareDurable) == 0) {
      return Errc::malformed_frame;  // a policy for a journal the queue does not have
    }
    // Dead-lettering what overflows or expires needs somewhere to put it.
    if ((m.flags & (kDeclareDeadLetterOverflow | kDeclareDeadLetterExpired)) != 0 &&
        m.dead_letter.empty()) {
      return Errc::malformed_frame;
    }
    return m.dead_letter == m.key ? Errc::malformed_frame : Errc::ok;
  }
};

// 18.2: a message for every subscription whose pattern matches `subject`.
struct Publish {
  std::string_view subject;
  Bytes payload;
};
template <>
struct Layout<Publish>
    : Described<FrameType::publish, field::KeyBytes<&Publish::subject>,
                field::Payload<&Publish::payload>> {
  static Errc check(const Publish& m) noexcept {
    return is_valid_subject(m.subject) ? Errc::ok : Errc::invalid_subject;
  }
};

// 18.3: the broker pushes every message published on a subject `pattern` matches, with
// this frame's correlation, buffering up to the bounds while the connection does not read.
struct SubscribeSubject {
  std::uint32_t max_messages = 0;  // 0: limits.subscription_max_messages (also the ceiling)
  std::uint64_t max_bytes = 0;     // 0: limits.subscription_max_bytes (also the ceiling)
  SlowPolicy slow = SlowPolicy::use_default;
  std::string_view pattern;
  std::string_view group;  // empty: none
};
template <>
struct Layout<SubscribeSubject>
    : Described<FrameType::subscribe_subject, field::Int<&SubscribeSubject::max_messages>,
                field::Int<&SubscribeSubject::max_bytes>,
                field::Enum<&SubscribeSubject::slow, SlowPolicy::use_default, SlowPolicy::block>,
                field::Zero<std::uint8_t>, field::Zero<std::uint16_t>,
                field::KeyBytes<&SubscribeSubject::pattern>,
                field::KeyOrEmpty<&SubscribeSubject::group>> {
  static Errc check(const SubscribeSubject& m) noexcept {
    return is_valid_pattern(m.pattern) ? Errc::ok : Errc::invalid_subject;
  }
};

// Every body type, for code that handles each in turn (tests, the fuzz target).
using Bodies =
    std::tuple<Hello, Welcome, ErrorBody, Send, Receive, Deliver, Declare, SendDirect,
               ReceiveDirect, Request, RegionAlloc, RegionGrantBody, SendRegion, DeliverRegion,
               RegionRelease, RegionCreate, RegionAttach, RegionRemove, Purge, DeleteQueue, Dropped,
               Properties, DeliveryInfo, Ack, Nack, Extend, Subscribe, Unsubscribe, DeclareEx,
               Publish, SubscribeSubject>;

// Calls f(std::type_identity<T>{}) for every body type T.
template <typename F>
constexpr void for_each_body(F&& f) {
  [&]<typename... Ts>(std::tuple<Ts...>*) {
    (f(std::type_identity<Ts>{}), ...);
  }(static_cast<Bodies*>(nullptr));
}

// ---- the frame-traits table -------------------------------------------------------------

enum class Direction : std::uint8_t { to_broker, to_client };

struct FrameTraits {
  FrameType type{};
  std::string_view name;
  Direction direction{};
  std::uint16_t flags = 0;       // the header flag bits valid on this type (section 4)
  std::size_t fixed_size = 0;    // the body's fixed part; 0 for a type whose body is empty
  bool carries_fd = false;       // travels with exactly one fd (SCM_RIGHTS, Unix sockets only)
  std::uint8_t min_version = 1;  // unknown (unknown_frame_type) on an older connection
};

namespace detail {
template <typename Body>
constexpr FrameTraits row(std::string_view name, Direction d, std::uint16_t flags,
                          bool fd = false) {
  return {Layout<Body>::kType, name, d, flags, fixed_size<Body>, fd, 1};
}
template <typename Body>
constexpr FrameTraits row_v2(std::string_view name, Direction d, std::uint16_t flags) {
  return {Layout<Body>::kType, name, d, flags, fixed_size<Body>, false, 2};
}
constexpr FrameTraits empty_row(FrameType t, std::string_view name, Direction d) {
  return {t, name, d, 0, 0, false, 1};
}
}  // namespace detail

// Section 3's table, in type order: entry i describes type i + 1.
inline constexpr FrameTraits kFrameTraits[] = {
    detail::row<Hello>("hello", Direction::to_broker, 0),
    detail::row<Welcome>("welcome", Direction::to_client, 0),
    detail::row<ErrorBody>("error", Direction::to_client, 0),
    detail::empty_row(FrameType::ok, "ok", Direction::to_client),
    detail::row<Send>("send", Direction::to_broker, kFlagConfirm),
    // kFlagAck is valid from version 2 on (the edge checks the connection's version).
    detail::row<Receive>("receive", Direction::to_broker, kFlagAck),
    detail::row<Deliver>("deliver", Direction::to_client, kFlagLast | kFlagMore),
    detail::row<Declare>("declare", Direction::to_broker, kFlagConfirm),
    detail::empty_row(FrameType::ping, "ping", Direction::to_broker),
    detail::empty_row(FrameType::pong, "pong", Direction::to_client),
    detail::row<SendDirect>("send_direct", Direction::to_broker, kFlagConfirm),
    detail::row<ReceiveDirect>("receive_direct", Direction::to_broker, 0),
    detail::empty_row(FrameType::claim_inbox, "claim_inbox", Direction::to_broker),
    detail::row<Request>("request", Direction::to_broker, 0),
    detail::row<RegionAlloc>("region_alloc", Direction::to_broker, 0),
    detail::row<RegionGrantBody>("region", Direction::to_client, 0, /*fd=*/true),
    detail::row<SendRegion>("send_region", Direction::to_broker, kFlagConfirm),
    detail::row<DeliverRegion>("deliver_region", Direction::to_client, kFlagLast, /*fd=*/true),
    detail::row<RegionRelease>("region_release", Direction::to_broker, kFlagConfirm),
    detail::row<RegionCreate>("region_create", Direction::to_broker, 0),
    detail::row<RegionAttach>("region_attach", Direction::to_broker, 0),
    detail::row<RegionRemove>("region_remove", Direction::to_broker, 0),
    detail::row<Purge>("purge", Direction::to_broker, 0),
    detail::row<DeleteQueue>("delete", Direction::to_broker, 0),
    detail::row<Dropped>("dropped", Direction::to_client, 0),
    detail::row_v2<Properties>("properties", Direction::to_broker, 0),
    detail::row_v2<DeliveryInfo>("delivery_info", Direction::to_client, 0),
    detail::row_v2<Ack>("ack", Direction::to_broker, kFlagConfirm),
    detail::row_v2<Nack>("nack", Direction::to_broker, kFlagConfirm),
    detail::row_v2<Extend>("extend", Direction::to_broker, kFlagConfirm),
    detail::row_v2<Subscribe>("subscribe", Direction::to_broker, 0),
    detail::row_v2<Unsubscribe>("unsubscribe", Direction::to_broker, 0),
    detail::row_v2<DeclareEx>("declare_ex", Direction::to_broker, kFlagConfirm),
    detail::row_v2<Publish>("publish", Direction::to_broker, kFlagConfirm | kFlagRetain),
    detail::row_v2<SubscribeSubject>("subscribe_subject", Direction::to_broker, kFlagConfirm),
};

static_assert([] {
  for (std::size_t i = 0; i < std::size(kFrameTraits); ++i) {
    if (static_cast<std::size_t>(kFrameTraits[i].type) != i + 1) return false;
  }
  return true;
}());

// The row for `t`, or nullptr for a type this version does not know.
constexpr const FrameTraits* frame_traits(FrameType t) noexcept {
  const auto v = static_cast<std::size_t>(t);
  return v >= 1 && v <= std::size(kFrameTraits) ? &kFrameTraits[v - 1] : nullptr;
}

constexpr bool is_known_type(std::uint8_t type) noexcept {
  return frame_traits(static_cast<FrameType>(type)) != nullptr;
}

constexpr std::string_view frame_type_name(FrameType t) noexcept {
  const auto* row = frame_traits(t);
  return row ? row->name : std::string_view("unknown");
}

// True for the frame types that travel with exactly one file descriptor: REGION and
// DELIVER_REGION.
constexpr bool carries_fd(FrameType t) noexcept {
  const auto* row = frame_traits(t);
  return row && row->carries_fd;
}

}  // namespace qbus::proto
