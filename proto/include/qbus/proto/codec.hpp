// Wire protocol v1: the frame header, and named entry points for the bodies described in
// frames.hpp (see proto/PROTOCOL.md, which is normative).
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
#include "qbus/proto/frames.hpp"

namespace qbus::proto {

inline constexpr std::uint32_t kMagic = 0x53554251;  // "QBUS" in stream order
inline constexpr std::size_t kHeaderSize = 24;
// Hard ceiling on any body; the broker announces its own, lower or equal, in WELCOME.
inline constexpr std::uint32_t kMaxBodyCeiling = 64u << 20;

std::string_view overflow_name(Overflow o) noexcept;
std::string_view fsync_name(Fsync f) noexcept;  // "default", "always", "batch", "none"

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

// Writes the 24-byte header; inline because every appended frame starts with one.
inline void encode_header(MutableBytes out, const Header& h) noexcept {
  std::byte* p = out.data();
  wire::store<std::uint32_t>(p, kMagic);
  wire::store<std::uint8_t>(p + 4, kFrameVersion);
  wire::store<std::uint8_t>(p + 5, static_cast<std::uint8_t>(h.type));
  wire::store<std::uint16_t>(p + 6, h.flags);
  wire::store<std::uint64_t>(p + 8, h.correlation);
  wire::store<std::uint32_t>(p + 16, h.body_size);
  wire::store<std::uint32_t>(p + 20, 0);
}

// ---- named entry points -----------------------------------------------------------------
// Decoders by name, thin wrappers over decode_body for the code that calls them so. Sizes
// and encoders are body_size and encode_body (field.hpp); append_frame (buffer.hpp) writes
// a whole frame.

// Fixed parts, from the descriptions.
inline constexpr std::size_t kHelloFixed = fixed_size<Hello>;
inline constexpr std::size_t kWelcomeSize = fixed_size<Welcome>;
inline constexpr std::size_t kErrorFixed = fixed_size<ErrorBody>;
inline constexpr std::size_t kSendFixed = fixed_size<Send>;
inline constexpr std::size_t kReceiveFixed = fixed_size<Receive>;
inline constexpr std::size_t kDeliverFixed = fixed_size<Deliver>;
inline constexpr std::size_t kDeclareFixed = fixed_size<Declare>;
inline constexpr std::size_t kSendDirectFixed = fixed_size<SendDirect>;
inline constexpr std::size_t kReceiveDirectSize = fixed_size<ReceiveDirect>;
inline constexpr std::size_t kRequestFixed = fixed_size<Request>;
inline constexpr std::size_t kRegionAllocSize = fixed_size<RegionAlloc>;
inline constexpr std::size_t kRegionGrantSize = fixed_size<RegionGrantBody>;
inline constexpr std::size_t kSendRegionFixed = fixed_size<SendRegion>;
inline constexpr std::size_t kDeliverRegionFixed = fixed_size<DeliverRegion>;
inline constexpr std::size_t kRegionReleaseSize = fixed_size<RegionRelease>;
inline constexpr std::size_t kRegionCreateFixed = fixed_size<RegionCreate>;
inline constexpr std::size_t kRegionAttachFixed = fixed_size<RegionAttach>;
inline constexpr std::size_t kRegionRemoveFixed = fixed_size<RegionRemove>;
inline constexpr std::size_t kPurgeFixed = fixed_size<Purge>;
inline constexpr std::size_t kDeleteFixed = fixed_size<DeleteQueue>;
inline constexpr std::size_t kDroppedSize = fixed_size<Dropped>;

inline constexpr auto& decode_hello = decode_body<Hello>;
inline constexpr auto& decode_welcome = decode_body<Welcome>;
inline constexpr auto& decode_error = decode_body<ErrorBody>;
inline constexpr auto& decode_send = decode_body<Send>;
inline constexpr auto& decode_receive = decode_body<Receive>;
inline constexpr auto& decode_deliver = decode_body<Deliver>;
inline constexpr auto& decode_declare = decode_body<Declare>;
inline constexpr auto& decode_send_direct = decode_body<SendDirect>;
inline constexpr auto& decode_receive_direct = decode_body<ReceiveDirect>;
inline constexpr auto& decode_request = decode_body<Request>;
inline constexpr auto& decode_region_alloc = decode_body<RegionAlloc>;
inline constexpr auto& decode_region_grant = decode_body<RegionGrantBody>;
inline constexpr auto& decode_send_region = decode_body<SendRegion>;
inline constexpr auto& decode_deliver_region = decode_body<DeliverRegion>;
inline constexpr auto& decode_region_create = decode_body<RegionCreate>;
inline constexpr auto& decode_region_attach = decode_body<RegionAttach>;

// REGION_RELEASE, REGION_REMOVE, PURGE, DELETE and DROPPED carry one field, which these
// decode into directly.
template <typename T, typename V>
Errc decode_only(Bytes b, V T::*field, V& out) noexcept {
  T m;
  const Errc e = decode_body(b, m);
  out = m.*field;
  return e;
}
inline Errc decode_region_release(Bytes b, std::uint64_t& region_id) noexcept {
  return decode_only(b, &RegionRelease::region_id, region_id);
}
inline Errc decode_region_remove(Bytes b, std::string_view& key) noexcept {
  return decode_only(b, &RegionRemove::key, key);
}
inline Errc decode_purge(Bytes b, std::string_view& key) noexcept {
  return decode_only(b, &Purge::key, key);
}
inline Errc decode_delete(Bytes b, std::string_view& key) noexcept {
  return decode_only(b, &DeleteQueue::key, key);
}
inline Errc decode_dropped(Bytes b, std::uint64_t& count) noexcept {
  return decode_only(b, &Dropped::count, count);
}

}  // namespace qbus::proto
