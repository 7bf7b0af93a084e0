// libFuzzer target for the wire codec (proto/PROTOCOL.md).
//
// The input is treated as a byte stream from a peer: frames are taken off the front the
// way the broker's connection does it, every complete body is run through the decoder of
// every body type frames.hpp lists, and whatever decodes is checked against the specification's
// invariants and re-encoded, which must reproduce the same bytes. A violated invariant aborts, so
// both libFuzzer and the plain replay driver report it as a crash.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string_view>
#include <type_traits>

#include "qbus/errc.hpp"
#include "qbus/proto/buffer.hpp"
#include "qbus/proto/codec.hpp"

namespace {

using namespace qbus::proto;
using qbus::Errc;

[[noreturn]] void violated(const char* what, int line) {
  std::fprintf(stderr, "codec_fuzz: invariant violated at line %d: %s\n", line, what);
  std::abort();
}

#define FUZZ_CHECK(cond)                    \
  do {                                      \
    if (!(cond)) violated(#cond, __LINE__); \
  } while (0)

bool inside(const void* p, std::size_t n, Bytes whole) {
  const auto* b = static_cast<const std::byte*>(p);
  const std::byte* begin = whole.data();
  const std::byte* end = whole.data() + whole.size();
  if (n == 0) return b == nullptr || (b >= begin && b <= end);
  return b >= begin && b <= end && n <= static_cast<std::size_t>(end - b);
}
bool inside(std::string_view s, Bytes whole) {
  return inside(s.data(), s.size(), whole);
}
bool inside(Bytes s, Bytes whole) {
  return inside(s.data(), s.size(), whole);
}

bool same(Bytes a, Bytes b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size()) == 0);
}

// The one frame in `buf`, checked to be complete and of `type`; returns its body.
Bytes sole_body(const ByteBuffer& buf, FrameType type, std::uint64_t correlation,
                std::uint16_t flags) {
  const auto in = buf.readable();
  const auto hr = decode_header(in, kMaxBodyCeiling);
  FUZZ_CHECK(hr.status == HeaderStatus::complete);
  FUZZ_CHECK(hr.header.type == type);
  FUZZ_CHECK(hr.header.correlation == correlation);
  FUZZ_CHECK(hr.header.flags == flags);
  FUZZ_CHECK(in.size() == kHeaderSize + hr.header.body_size);
  return in.subspan(kHeaderSize);
}

// The specification's ranges for each body, restated here independently of frames.hpp's
// rules so that a rule lost from a description shows as a violated invariant.
bool holds(const Hello& m) {
  return m.min_version >= 1 && m.min_version <= m.max_version &&
         m.client_name.size() <= kMaxClientNameSize && m.token.size() <= kMaxTokenSize;
}
bool holds(const Welcome& m) {
  return m.version >= kMinVersion;
}
bool holds(const ErrorBody& m) {
  return m.text.size() <= kMaxErrorTextSize;
}
bool holds(const Send& m) {
  return is_valid_key(m.key);
}
bool holds(const Receive& m) {
  return m.timeout_ms >= -1 && m.max_count >= 1 && is_valid_key(m.key);
}
bool holds(const Deliver& m) {
  // An empty key is a direct message or a reply; any other key is a valid queue key.
  return m.key.empty() || is_valid_key(m.key);
}
bool holds(const Declare& m) {
  return static_cast<std::uint8_t>(m.overflow) <= static_cast<std::uint8_t>(Overflow::block) &&
         is_valid_key(m.key);
}
bool holds(const SendDirect& m) {
  return (m.kind == TargetKind::pid || m.kind == TargetKind::client_id) && m.wait_ms >= 0 &&
         m.target != 0 && (m.kind != TargetKind::pid || m.target <= 0xFFFFFFFFu) &&
         (m.in_reply_to == 0 || m.kind == TargetKind::client_id);
}
bool holds(const ReceiveDirect& m) {
  return m.timeout_ms >= -1 && m.max_count >= 1;
}
bool holds(const Request& m) {
  return m.timeout_ms >= -1 && is_valid_key(m.key);
}
bool holds(const RegionAlloc& m) {
  return m.size >= 1;
}
bool holds(const RegionGrantBody& m) {
  return m.region_id != 0 && m.size != 0;
}
bool holds(const SendRegion& m) {
  if (m.region_id == 0 || m.length < 1 || m.wait_ms < 0) return false;
  switch (m.target_kind) {
    case RegionTarget::queue:
      return m.target == 0 && m.wait_ms == 0 && is_valid_key(m.key);
    case RegionTarget::pid:
      return m.target != 0 && m.target <= 0xFFFFFFFFu && m.key.empty();
    case RegionTarget::client_id:
      return m.target != 0 && m.key.empty();
    case RegionTarget::subject:
      return m.target == 0 && m.wait_ms == 0 && is_valid_subject(m.key);
  }
  return false;  // an unknown target kind decoded
}
bool holds(const DeliverRegion& m) {
  // The slice lies inside the region, with no wrap-around of offset + length.
  return (m.key.empty() || is_valid_key(m.key)) && m.region_id != 0 && m.length >= 1 &&
         m.offset <= m.region_size && m.length <= m.region_size - m.offset &&
         m.offset + m.length >= m.offset && m.offset + m.length <= m.region_size;
}
bool holds(const RegionRelease& m) {
  return m.region_id != 0;
}
bool holds(const RegionCreate& m) {
  return m.size >= 1 && (m.mode & ~0666u) == 0 && is_valid_key(m.key);
}
bool holds(const RegionAttach& m) {
  return is_valid_key(m.key);
}
bool holds(const RegionRemove& m) {
  return is_valid_key(m.key);
}
bool holds(const Purge& m) {
  return is_valid_key(m.key);
}
bool holds(const DeleteQueue& m) {
  return is_valid_key(m.key);
}
bool holds(const Dropped&) {
  return true;  // any count
}
bool holds(const Properties& m) {
  return m.headers.size() <= kMaxHeadersSize;
}
bool holds(const DeliveryInfo& m) {
  return m.delivery_count >= 1 && m.headers.size() <= kMaxHeadersSize;
}
bool holds(const Ack& m) {
  return m.delivery_tag != 0;
}
bool holds(const Nack& m) {
  return m.delivery_tag != 0 && m.action >= NackAction::requeue &&
         m.action <= NackAction::dead_letter &&
         (m.action == NackAction::requeue_after || m.delay_ms == 0);
}
bool holds(const Extend& m) {
  return m.delivery_tag != 0;
}
bool holds(const Subscribe& m) {
  return is_valid_key(m.key);
}
bool holds(const Unsubscribe& m) {
  return m.subscription != 0;
}
bool holds(const DeclareEx& m) {
  return static_cast<std::uint8_t>(m.overflow) <= static_cast<std::uint8_t>(Overflow::block) &&
         (m.flags & ~kDeclareFlags) == 0 && is_valid_key(m.key) &&
         (m.dead_letter.empty() || is_valid_key(m.dead_letter)) && m.dead_letter != m.key &&
         ((m.flags & kDeclareDeadLetterOverflow) == 0 || !m.dead_letter.empty());
}
bool holds(const Publish& m) {
  return is_valid_subject(m.subject) && is_valid_key(m.subject);
}
bool holds(const SubscribeSubject& m) {
  return is_valid_pattern(m.pattern) && m.slow <= SlowPolicy::block &&
         (m.group.empty() || is_valid_key(m.group));
}

// Decodes `body` as a T. Whatever decodes must hold the specification's invariants, borrow
// only from `body`, and re-encode (with every flag its type allows) to exactly `body`.
template <typename T>
void check_as(Bytes body) {
  T m;
  const Errc e = decode_body(body, m);
  if (e != Errc::ok) {
    // Only a body with a key can have an invalid one.
    FUZZ_CHECK(e == Errc::malformed_frame || (e == Errc::invalid_key && requires { m.key; }) ||
               (e == Errc::invalid_key && requires { m.group; }) ||
               (e == Errc::invalid_subject &&
                (std::is_same_v<T, Publish> || std::is_same_v<T, SubscribeSubject> ||
                 std::is_same_v<T, SendRegion>)));
    return;
  }
  FUZZ_CHECK(holds(m));
  FUZZ_CHECK(body.size() >= fixed_size<T>);
  FUZZ_CHECK(body_size(m) == body.size());
  for_each_view(m, [&](auto view) { FUZZ_CHECK(inside(view, body)); });
  constexpr FrameType type = Layout<T>::kType;
  const std::uint16_t flags = frame_traits(type)->flags;
  ByteBuffer buf;
  append_frame(buf, 0x0102030405060708u, flags, m);
  FUZZ_CHECK(same(sole_body(buf, type, 0x0102030405060708u, flags), body));
}

// Every decoder sees every body: a frame's type is just another byte the peer chose.
void check_body(Bytes body) {
  for_each_body([&]<typename T>(std::type_identity<T>) { check_as<T>(body); });
}

// A shorter view of a header never contradicts the verdict on the whole header.
void check_header_prefixes(Bytes in, const HeaderResult& whole, std::uint32_t max_body) {
  const std::size_t upto = in.size() < kHeaderSize ? in.size() : kHeaderSize;
  for (std::size_t n = 0; n < upto; ++n) {
    const auto r = decode_header(in.first(n), max_body);
    FUZZ_CHECK(r.status != HeaderStatus::complete);
    if (r.status == HeaderStatus::bad) {
      FUZZ_CHECK(r.error == Errc::bad_magic);
      FUZZ_CHECK(whole.status == HeaderStatus::bad && whole.error == Errc::bad_magic);
    } else {
      FUZZ_CHECK(r.error == Errc::ok);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const Bytes input(reinterpret_cast<const std::byte*>(data), size);
  // The top bit of the first frame's second correlation byte (zero in the seeds) picks a
  // small receiver limit, so the limit check is exercised too.
  const std::uint32_t max_body = size > 9 && (data[9] & 0x80) != 0 ? 64u : kMaxBodyCeiling;

  Bytes rest = input;
  for (int frames = 0; frames < 64; ++frames) {
    const auto hr = decode_header(rest, max_body);
    check_header_prefixes(rest, hr, max_body);
    if (hr.status == HeaderStatus::need_more) {
      FUZZ_CHECK(rest.size() < kHeaderSize && hr.error == Errc::ok);
      break;
    }
    if (hr.status == HeaderStatus::bad) {
      FUZZ_CHECK(hr.error == Errc::bad_magic || hr.error == Errc::unsupported_version ||
                 hr.error == Errc::malformed_header || hr.error == Errc::frame_too_large);
      FUZZ_CHECK(qbus::errc_is_fatal(hr.error));
      break;
    }
    FUZZ_CHECK(hr.error == Errc::ok);
    FUZZ_CHECK(hr.header.body_size <= max_body && hr.header.body_size <= kMaxBodyCeiling);

    // A complete header re-encodes to exactly the bytes it came from.
    std::byte again[kHeaderSize];
    encode_header(again, hr.header);
    FUZZ_CHECK(std::memcmp(again, rest.data(), kHeaderSize) == 0);
    FUZZ_CHECK(is_known_type(static_cast<std::uint8_t>(hr.header.type)) ==
               (frame_type_name(hr.header.type) != "unknown"));
    FUZZ_CHECK(carries_fd(hr.header.type) == (hr.header.type == FrameType::region ||
                                              hr.header.type == FrameType::deliver_region));

    const std::size_t frame = kHeaderSize + hr.header.body_size;
    if (rest.size() < frame) {
      check_body(rest.subspan(kHeaderSize));  // a truncated body must fail cleanly too
      break;
    }
    check_body(rest.subspan(kHeaderSize, hr.header.body_size));
    rest = rest.subspan(frame);
  }

  // Bodies need not come after a header: feed the raw input to the decoders as well.
  check_body(input);
  return 0;
}
