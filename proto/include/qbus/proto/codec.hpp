// Wire protocol v1: frame header and bodies (see proto/PROTOCOL.md, which is normative).
//
// Every function here is pure: it reads or writes caller-provided byte spans, performs no
// I/O, never allocates and never throws. Decoders validate every declared length against
// the bytes present and against the caller's limits before anything is used, and report
// the first problem as an Errc. Views returned by decoders borrow from the input span and
// are valid only while it is.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "qbus/errc.hpp"

namespace qbus::proto {

using Bytes = std::span<const std::byte>;
using MutableBytes = std::span<std::byte>;

inline constexpr std::uint32_t kMagic = 0x53554251;  // "QBUS" in stream order
inline constexpr std::uint8_t kVersion = 1;
inline constexpr std::uint8_t kMinVersion = 1;
inline constexpr std::uint8_t kMaxVersion = 1;
inline constexpr std::size_t kHeaderSize = 24;
inline constexpr std::size_t kMaxKeySize = 255;
inline constexpr std::size_t kMaxClientNameSize = 64;
inline constexpr std::size_t kMaxTokenSize = 1024;
inline constexpr std::size_t kMaxErrorTextSize = 1024;
// Hard ceiling on any body; the broker announces its own, lower or equal, in WELCOME.
inline constexpr std::uint32_t kMaxBodyCeiling = 64u << 20;

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
};

// True for the frame types that travel with exactly one file descriptor (SCM_RIGHTS, on
// Unix sockets only): REGION and DELIVER_REGION.
bool carries_fd(FrameType t) noexcept;

// Header flag bits. A bit is meaningful only on the frame types named beside it; on any
// other type it must be zero.
// send, send_direct, declare, send_region, region_release: answer OK or ERROR.
inline constexpr std::uint16_t kFlagConfirm = 0x0001;
// deliver: the last answer to its receive, receive_direct or request.
inline constexpr std::uint16_t kFlagLast = 0x0002;
// deliver: the payload continues in the next DELIVER with the same correlation (a region
// message sent inline to a TCP peer, in pieces no larger than max_body).
inline constexpr std::uint16_t kFlagMore = 0x0004;

enum class Overflow : std::uint8_t { use_default = 0, reject = 1, drop_oldest = 2, block = 3 };

std::string_view overflow_name(Overflow o) noexcept;

struct Header {
  FrameType type{};
  std::uint16_t flags = 0;
  std::uint64_t correlation = 0;
  std::uint32_t body_size = 0;
};

// Outcome of looking at the start of a receive buffer.
enum class HeaderStatus { complete, need_more, bad };

struct HeaderResult {
  HeaderStatus status = HeaderStatus::need_more;
  Header header{};
  Errc error = Errc::ok;  // set when status == bad
};

// Decodes the 24-byte header at the start of `in`. `max_body` is the receiver's limit.
// Unknown frame types decode fine (the body length is still trustworthy, so the receiver
// can answer and skip); a bad magic, version, reserved field or body size yields `bad`.
HeaderResult decode_header(Bytes in, std::uint32_t max_body) noexcept;
void encode_header(MutableBytes out, const Header& h) noexcept;

bool is_known_type(std::uint8_t type) noexcept;
std::string_view frame_type_name(FrameType t) noexcept;

// Keys are 1..255 bytes of [A-Za-z0-9._:/-].
bool is_valid_key(std::string_view key) noexcept;

// ---- bodies ---------------------------------------------------------------------------

struct Hello {
  std::uint8_t min_version = kMinVersion;
  std::uint8_t max_version = kMaxVersion;
  std::string_view client_name;
  std::string_view token;  // empty on Unix sockets; TCP authentication
};

struct Welcome {
  std::uint8_t version = kVersion;
  std::uint32_t max_body = 0;
  std::uint32_t max_payload = 0;
  std::uint32_t pid = 0;  // the client's own identity as the kernel reported it
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  std::uint64_t client_id = 0;
};

struct ErrorBody {
  std::uint16_t code = 0;  // raw, so unknown future codes still decode
  std::string_view text;
};

struct Send {
  std::string_view key;
  Bytes payload;
};

struct Receive {
  std::int32_t timeout_ms = -1;  // -1 waits forever, 0 does not wait
  std::uint32_t max_count = 1;
  std::string_view key;
};

struct Deliver {
  std::uint32_t sender_pid = 0;
  std::uint32_t sender_uid = 0;
  std::uint64_t sender_client_id = 0;
  std::uint64_t request_id = 0;  // nonzero: the sender waits for a reply to this id
  std::string_view key;          // empty for a direct message or a reply
  Bytes payload;
};

enum class TargetKind : std::uint8_t { pid = 1, client_id = 2 };

struct SendDirect {
  TargetKind kind = TargetKind::pid;
  std::int32_t wait_ms = 0;  // > 0: wait this long for the target to connect
  std::uint64_t target = 0;
  std::uint64_t in_reply_to = 0;  // nonzero: a reply to that request (kind is client_id)
  Bytes payload;
};

struct ReceiveDirect {
  std::int32_t timeout_ms = -1;
  std::uint32_t max_count = 1;
};

struct Request {
  std::int32_t timeout_ms = -1;  // how long the broker keeps waiting for the reply
  std::string_view key;
  Bytes payload;
};

struct Declare {
  std::uint32_t max_messages = 0;  // 0: broker default
  std::uint64_t max_bytes = 0;     // 0: broker default
  Overflow overflow = Overflow::use_default;
  std::string_view key;
};

// Shared-memory regions (PROTOCOL.md section 16).
struct RegionAlloc {
  std::uint64_t size = 0;
};

// The broker's answer to REGION_ALLOC, REGION_CREATE and REGION_ATTACH; the region's fd
// travels with the frame.
struct RegionGrantBody {
  std::uint64_t region_id = 0;
  std::uint64_t size = 0;
  bool writable = false;
};

enum class RegionTarget : std::uint8_t { queue = 0, pid = 1, client_id = 2 };

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

struct RegionCreate {
  std::uint64_t size = 0;
  std::uint16_t mode = 0;  // rw bits of 0666 only
  std::string_view key;
};

struct RegionAttach {
  bool writable = false;
  std::string_view key;
};

inline constexpr std::size_t kHelloFixed = 8;
inline constexpr std::size_t kWelcomeSize = 32;
inline constexpr std::size_t kErrorFixed = 4;
inline constexpr std::size_t kSendFixed = 1;
inline constexpr std::size_t kReceiveFixed = 9;
inline constexpr std::size_t kDeliverFixed = 25;
inline constexpr std::size_t kDeclareFixed = 14;
inline constexpr std::size_t kSendDirectFixed = 24;
inline constexpr std::size_t kReceiveDirectSize = 8;
inline constexpr std::size_t kRequestFixed = 5;
inline constexpr std::size_t kRegionAllocSize = 8;
inline constexpr std::size_t kRegionGrantSize = 24;
inline constexpr std::size_t kSendRegionFixed = 41;
inline constexpr std::size_t kDeliverRegionFixed = 57;
inline constexpr std::size_t kRegionReleaseSize = 8;
inline constexpr std::size_t kRegionCreateFixed = 11;
inline constexpr std::size_t kRegionAttachFixed = 2;
inline constexpr std::size_t kRegionRemoveFixed = 1;

// Decoders take the body (exactly header.body_size bytes). They return Errc::ok or the
// reason the body is unacceptable (malformed_frame, invalid_key, ...).
Errc decode_hello(Bytes body, Hello& out) noexcept;
Errc decode_welcome(Bytes body, Welcome& out) noexcept;
Errc decode_error(Bytes body, ErrorBody& out) noexcept;
Errc decode_send(Bytes body, Send& out) noexcept;
Errc decode_receive(Bytes body, Receive& out) noexcept;
Errc decode_deliver(Bytes body, Deliver& out) noexcept;
Errc decode_declare(Bytes body, Declare& out) noexcept;
Errc decode_send_direct(Bytes body, SendDirect& out) noexcept;
Errc decode_receive_direct(Bytes body, ReceiveDirect& out) noexcept;
Errc decode_request(Bytes body, Request& out) noexcept;
Errc decode_region_alloc(Bytes body, RegionAlloc& out) noexcept;
Errc decode_region_grant(Bytes body, RegionGrantBody& out) noexcept;
Errc decode_send_region(Bytes body, SendRegion& out) noexcept;
Errc decode_deliver_region(Bytes body, DeliverRegion& out) noexcept;
Errc decode_region_release(Bytes body, std::uint64_t& region_id) noexcept;
Errc decode_region_create(Bytes body, RegionCreate& out) noexcept;
Errc decode_region_attach(Bytes body, RegionAttach& out) noexcept;
Errc decode_region_remove(Bytes body, std::string_view& key) noexcept;

// Body sizes for the encoders below; callers reserve kHeaderSize + size.
std::size_t hello_size(const Hello& m) noexcept;
std::size_t error_size(std::string_view text) noexcept;  // text is truncated to the limit
std::size_t send_size(std::string_view key, std::size_t payload) noexcept;
std::size_t receive_size(std::string_view key) noexcept;
std::size_t deliver_size(std::string_view key, std::size_t payload) noexcept;
std::size_t declare_size(std::string_view key) noexcept;
std::size_t send_direct_size(std::size_t payload) noexcept;
std::size_t request_size(std::string_view key, std::size_t payload) noexcept;
std::size_t send_region_size(std::string_view key) noexcept;
std::size_t deliver_region_size(std::string_view key) noexcept;
std::size_t region_create_size(std::string_view key) noexcept;
std::size_t region_attach_size(std::string_view key) noexcept;
std::size_t region_remove_size(std::string_view key) noexcept;

// Encoders write exactly the size above into `out` (which must be at least that large).
// They do not validate: the sender is responsible for keys and limits.
void encode_hello(MutableBytes out, const Hello& m) noexcept;
void encode_welcome(MutableBytes out, const Welcome& m) noexcept;
void encode_error(MutableBytes out, std::uint16_t code, std::string_view text) noexcept;
void encode_send_prefix(MutableBytes out, std::string_view key) noexcept;  // payload follows
void encode_receive(MutableBytes out, const Receive& m) noexcept;
void encode_deliver_prefix(MutableBytes out, const Deliver& m) noexcept;  // payload follows
void encode_declare(MutableBytes out, const Declare& m) noexcept;
void encode_send_direct_prefix(MutableBytes out, const SendDirect& m) noexcept;  // payload follows
void encode_receive_direct(MutableBytes out, const ReceiveDirect& m) noexcept;
void encode_request_prefix(MutableBytes out, const Request& m) noexcept;  // payload follows
void encode_region_alloc(MutableBytes out, const RegionAlloc& m) noexcept;
void encode_region_grant(MutableBytes out, const RegionGrantBody& m) noexcept;
void encode_send_region(MutableBytes out, const SendRegion& m) noexcept;
void encode_deliver_region(MutableBytes out, const DeliverRegion& m) noexcept;
void encode_region_release(MutableBytes out, std::uint64_t region_id) noexcept;
void encode_region_create(MutableBytes out, const RegionCreate& m) noexcept;
void encode_region_attach(MutableBytes out, const RegionAttach& m) noexcept;
void encode_region_remove(MutableBytes out, std::string_view key) noexcept;

}  // namespace qbus::proto
