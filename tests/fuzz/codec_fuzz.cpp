// libFuzzer target for the wire codec (proto/PROTOCOL.md).
//
// The input is treated as a byte stream from a peer: frames are taken off the front the
// way the broker's connection does it, every complete body is run through every body
// decoder, and whatever decodes is checked against the specification's invariants and
// re-encoded, which must reproduce the same bytes. A violated invariant aborts, so both
// libFuzzer and the plain replay driver report it as a crash.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string_view>

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

void check_hello(Bytes body) {
  Hello m;
  if (decode_hello(body, m) != Errc::ok) return;
  FUZZ_CHECK(m.min_version >= 1 && m.min_version <= m.max_version);
  FUZZ_CHECK(m.client_name.size() <= kMaxClientNameSize);
  FUZZ_CHECK(m.token.size() <= kMaxTokenSize);
  FUZZ_CHECK(inside(m.client_name, body) && inside(m.token, body));
  FUZZ_CHECK(hello_size(m) == body.size());
  ByteBuffer buf;
  append_hello(buf, 1, m);
  FUZZ_CHECK(same(sole_body(buf, FrameType::hello, 1, 0), body));
}

void check_welcome(Bytes body) {
  Welcome m;
  if (decode_welcome(body, m) != Errc::ok) return;
  FUZZ_CHECK(body.size() == kWelcomeSize);
  ByteBuffer buf;
  append_welcome(buf, 2, m);
  Welcome again;
  FUZZ_CHECK(decode_welcome(sole_body(buf, FrameType::welcome, 2, 0), again) == Errc::ok);
  FUZZ_CHECK(again.version == m.version && again.max_body == m.max_body &&
             again.max_payload == m.max_payload && again.pid == m.pid && again.uid == m.uid &&
             again.gid == m.gid && again.client_id == m.client_id);
}

void check_error(Bytes body) {
  ErrorBody m;
  if (decode_error(body, m) != Errc::ok) return;
  FUZZ_CHECK(m.text.size() <= kMaxErrorTextSize);
  FUZZ_CHECK(inside(m.text, body));
  FUZZ_CHECK(error_size(m.text) == body.size());
  ByteBuffer buf;
  append_error(buf, 3, static_cast<Errc>(m.code), m.text);
  FUZZ_CHECK(same(sole_body(buf, FrameType::error, 3, 0), body));
}

void check_send(Bytes body) {
  Send m;
  const Errc e = decode_send(body, m);
  if (e != Errc::ok) {
    FUZZ_CHECK(e == Errc::malformed_frame || e == Errc::invalid_key);
    return;
  }
  FUZZ_CHECK(is_valid_key(m.key));
  FUZZ_CHECK(inside(m.key, body) && inside(m.payload, body));
  FUZZ_CHECK(send_size(m.key, m.payload.size()) == body.size());
  ByteBuffer buf;
  append_send(buf, 4, kFlagConfirm, m.key, m.payload);
  const Bytes again_body = sole_body(buf, FrameType::send, 4, kFlagConfirm);
  FUZZ_CHECK(same(again_body, body));
  Send again;
  FUZZ_CHECK(decode_send(again_body, again) == Errc::ok);
  FUZZ_CHECK(again.key == m.key);
  FUZZ_CHECK(same(again.payload, m.payload));
}

void check_receive(Bytes body) {
  Receive m;
  const Errc e = decode_receive(body, m);
  if (e != Errc::ok) {
    FUZZ_CHECK(e == Errc::malformed_frame || e == Errc::invalid_key);
    return;
  }
  FUZZ_CHECK(m.timeout_ms >= -1 && m.max_count >= 1);
  FUZZ_CHECK(is_valid_key(m.key) && inside(m.key, body));
  FUZZ_CHECK(receive_size(m.key) == body.size());
  ByteBuffer buf;
  append_receive(buf, 5, m);
  FUZZ_CHECK(same(sole_body(buf, FrameType::receive, 5, 0), body));
}

void check_deliver(Bytes body) {
  Deliver m;
  const Errc e = decode_deliver(body, m);
  if (e != Errc::ok) {
    FUZZ_CHECK(e == Errc::malformed_frame || e == Errc::invalid_key);
    return;
  }
  // An empty key is a direct message or a reply; any other key is a valid queue key.
  FUZZ_CHECK(m.key.empty() || is_valid_key(m.key));
  FUZZ_CHECK(inside(m.key, body) && inside(m.payload, body));
  FUZZ_CHECK(deliver_size(m.key, m.payload.size()) == body.size());
  ByteBuffer buf;
  append_deliver(buf, 6, kFlagLast, m);
  const Bytes again_body = sole_body(buf, FrameType::deliver, 6, kFlagLast);
  FUZZ_CHECK(same(again_body, body));
  Deliver again;
  FUZZ_CHECK(decode_deliver(again_body, again) == Errc::ok);
  FUZZ_CHECK(again.sender_pid == m.sender_pid && again.sender_uid == m.sender_uid &&
             again.sender_client_id == m.sender_client_id && again.request_id == m.request_id);
  FUZZ_CHECK(again.key == m.key && same(again.payload, m.payload));
}

void check_declare(Bytes body) {
  Declare m;
  const Errc e = decode_declare(body, m);
  if (e != Errc::ok) {
    FUZZ_CHECK(e == Errc::malformed_frame || e == Errc::invalid_key);
    return;
  }
  FUZZ_CHECK(static_cast<std::uint8_t>(m.overflow) <= static_cast<std::uint8_t>(Overflow::block));
  FUZZ_CHECK(is_valid_key(m.key) && inside(m.key, body));
  FUZZ_CHECK(declare_size(m.key) == body.size());
  ByteBuffer buf;
  append_declare(buf, 7, kFlagConfirm, m);
  FUZZ_CHECK(same(sole_body(buf, FrameType::declare, 7, kFlagConfirm), body));
}

void check_send_direct(Bytes body) {
  SendDirect m;
  const Errc e = decode_send_direct(body, m);
  if (e != Errc::ok) {
    FUZZ_CHECK(e == Errc::malformed_frame);
    return;
  }
  FUZZ_CHECK(body.size() >= kSendDirectFixed);
  FUZZ_CHECK(m.kind == TargetKind::pid || m.kind == TargetKind::client_id);
  FUZZ_CHECK(m.wait_ms >= 0 && m.target != 0);
  FUZZ_CHECK(m.kind != TargetKind::pid || m.target <= 0xFFFFFFFFu);
  FUZZ_CHECK(m.in_reply_to == 0 || m.kind == TargetKind::client_id);
  FUZZ_CHECK(inside(m.payload, body));
  FUZZ_CHECK(send_direct_size(m.payload.size()) == body.size());
  ByteBuffer buf;
  append_send_direct(buf, 8, kFlagConfirm, m);
  const Bytes again_body = sole_body(buf, FrameType::send_direct, 8, kFlagConfirm);
  FUZZ_CHECK(same(again_body, body));
  SendDirect again;
  FUZZ_CHECK(decode_send_direct(again_body, again) == Errc::ok);
  FUZZ_CHECK(again.kind == m.kind && again.wait_ms == m.wait_ms && again.target == m.target &&
             again.in_reply_to == m.in_reply_to && same(again.payload, m.payload));
}

void check_receive_direct(Bytes body) {
  ReceiveDirect m;
  const Errc e = decode_receive_direct(body, m);
  if (e != Errc::ok) {
    FUZZ_CHECK(e == Errc::malformed_frame);
    return;
  }
  FUZZ_CHECK(body.size() == kReceiveDirectSize);
  FUZZ_CHECK(m.timeout_ms >= -1 && m.max_count >= 1);
  ByteBuffer buf;
  append_receive_direct(buf, 9, m);
  FUZZ_CHECK(same(sole_body(buf, FrameType::receive_direct, 9, 0), body));
}

void check_request(Bytes body) {
  Request m;
  const Errc e = decode_request(body, m);
  if (e != Errc::ok) {
    FUZZ_CHECK(e == Errc::malformed_frame || e == Errc::invalid_key);
    return;
  }
  FUZZ_CHECK(m.timeout_ms >= -1);
  FUZZ_CHECK(is_valid_key(m.key));
  FUZZ_CHECK(inside(m.key, body) && inside(m.payload, body));
  FUZZ_CHECK(request_size(m.key, m.payload.size()) == body.size());
  ByteBuffer buf;
  append_request(buf, 10, m);
  const Bytes again_body = sole_body(buf, FrameType::request, 10, 0);
  FUZZ_CHECK(same(again_body, body));
  Request again;
  FUZZ_CHECK(decode_request(again_body, again) == Errc::ok);
  FUZZ_CHECK(again.timeout_ms == m.timeout_ms && again.key == m.key &&
             same(again.payload, m.payload));
}

void check_region_alloc(Bytes body) {
  RegionAlloc m;
  const Errc e = decode_region_alloc(body, m);
  if (e != Errc::ok) {
    FUZZ_CHECK(e == Errc::malformed_frame);
    return;
  }
  FUZZ_CHECK(body.size() == kRegionAllocSize);
  FUZZ_CHECK(m.size >= 1);
  ByteBuffer buf;
  append_region_alloc(buf, 11, m);
  FUZZ_CHECK(same(sole_body(buf, FrameType::region_alloc, 11, 0), body));
}

void check_region_grant(Bytes body) {
  RegionGrantBody m;
  const Errc e = decode_region_grant(body, m);
  if (e != Errc::ok) {
    FUZZ_CHECK(e == Errc::malformed_frame);
    return;
  }
  FUZZ_CHECK(body.size() == kRegionGrantSize);
  FUZZ_CHECK(m.region_id != 0 && m.size != 0);
  ByteBuffer buf;
  append_region_grant(buf, 12, m);
  FUZZ_CHECK(same(sole_body(buf, FrameType::region, 12, 0), body));
}

void check_send_region(Bytes body) {
  SendRegion m;
  const Errc e = decode_send_region(body, m);
  if (e != Errc::ok) {
    FUZZ_CHECK(e == Errc::malformed_frame || e == Errc::invalid_key);
    return;
  }
  FUZZ_CHECK(body.size() >= kSendRegionFixed);
  FUZZ_CHECK(m.region_id != 0 && m.length >= 1 && m.wait_ms >= 0);
  switch (m.target_kind) {
    case RegionTarget::queue:
      FUZZ_CHECK(m.target == 0 && m.wait_ms == 0 && is_valid_key(m.key));
      break;
    case RegionTarget::pid:
      FUZZ_CHECK(m.target != 0 && m.target <= 0xFFFFFFFFu && m.key.empty());
      break;
    case RegionTarget::client_id:
      FUZZ_CHECK(m.target != 0 && m.key.empty());
      break;
    default:
      violated("send_region decoded an unknown target kind", __LINE__);
  }
  FUZZ_CHECK(inside(m.key, body));
  FUZZ_CHECK(send_region_size(m.key) == body.size());
  ByteBuffer buf;
  append_send_region(buf, 13, kFlagConfirm, m);
  const Bytes again_body = sole_body(buf, FrameType::send_region, 13, kFlagConfirm);
  FUZZ_CHECK(same(again_body, body));
  SendRegion again;
  FUZZ_CHECK(decode_send_region(again_body, again) == Errc::ok);
  FUZZ_CHECK(again.region_id == m.region_id && again.offset == m.offset &&
             again.length == m.length && again.target_kind == m.target_kind &&
             again.release == m.release && again.wait_ms == m.wait_ms && again.target == m.target &&
             again.key == m.key);
}

void check_deliver_region(Bytes body) {
  DeliverRegion m;
  const Errc e = decode_deliver_region(body, m);
  if (e != Errc::ok) {
    FUZZ_CHECK(e == Errc::malformed_frame || e == Errc::invalid_key);
    return;
  }
  FUZZ_CHECK(body.size() >= kDeliverRegionFixed);
  // An empty key is a direct message; any other key is a valid queue key.
  FUZZ_CHECK(m.key.empty() || is_valid_key(m.key));
  FUZZ_CHECK(inside(m.key, body));
  // The slice lies inside the region, with no wrap-around of offset + length.
  FUZZ_CHECK(m.region_id != 0 && m.length >= 1);
  FUZZ_CHECK(m.offset <= m.region_size && m.length <= m.region_size - m.offset);
  FUZZ_CHECK(m.offset + m.length >= m.offset && m.offset + m.length <= m.region_size);
  FUZZ_CHECK(deliver_region_size(m.key) == body.size());
  ByteBuffer buf;
  append_deliver_region(buf, 14, kFlagLast, m);
  const Bytes again_body = sole_body(buf, FrameType::deliver_region, 14, kFlagLast);
  FUZZ_CHECK(same(again_body, body));
  DeliverRegion again;
  FUZZ_CHECK(decode_deliver_region(again_body, again) == Errc::ok);
  FUZZ_CHECK(again.sender_pid == m.sender_pid && again.sender_uid == m.sender_uid &&
             again.sender_client_id == m.sender_client_id && again.request_id == m.request_id &&
             again.region_id == m.region_id && again.region_size == m.region_size &&
             again.offset == m.offset && again.length == m.length && again.key == m.key);
}

void check_region_release(Bytes body) {
  std::uint64_t region_id = 0;
  const Errc e = decode_region_release(body, region_id);
  if (e != Errc::ok) {
    FUZZ_CHECK(e == Errc::malformed_frame);
    return;
  }
  FUZZ_CHECK(body.size() == kRegionReleaseSize);
  FUZZ_CHECK(region_id != 0);
  ByteBuffer buf;
  append_region_release(buf, 15, kFlagConfirm, region_id);
  FUZZ_CHECK(same(sole_body(buf, FrameType::region_release, 15, kFlagConfirm), body));
}

void check_region_create(Bytes body) {
  RegionCreate m;
  const Errc e = decode_region_create(body, m);
  if (e != Errc::ok) {
    FUZZ_CHECK(e == Errc::malformed_frame || e == Errc::invalid_key);
    return;
  }
  FUZZ_CHECK(m.size >= 1 && (m.mode & ~0666u) == 0);
  FUZZ_CHECK(is_valid_key(m.key) && inside(m.key, body));
  FUZZ_CHECK(region_create_size(m.key) == body.size());
  ByteBuffer buf;
  append_region_create(buf, 16, m);
  FUZZ_CHECK(same(sole_body(buf, FrameType::region_create, 16, 0), body));
}

void check_region_attach(Bytes body) {
  RegionAttach m;
  const Errc e = decode_region_attach(body, m);
  if (e != Errc::ok) {
    FUZZ_CHECK(e == Errc::malformed_frame || e == Errc::invalid_key);
    return;
  }
  FUZZ_CHECK(is_valid_key(m.key) && inside(m.key, body));
  FUZZ_CHECK(region_attach_size(m.key) == body.size());
  ByteBuffer buf;
  append_region_attach(buf, 17, m);
  FUZZ_CHECK(same(sole_body(buf, FrameType::region_attach, 17, 0), body));
}

void check_region_remove(Bytes body) {
  std::string_view key;
  const Errc e = decode_region_remove(body, key);
  if (e != Errc::ok) {
    FUZZ_CHECK(e == Errc::malformed_frame || e == Errc::invalid_key);
    return;
  }
  FUZZ_CHECK(is_valid_key(key) && inside(key, body));
  FUZZ_CHECK(region_remove_size(key) == body.size());
  ByteBuffer buf;
  append_region_remove(buf, 18, key);
  FUZZ_CHECK(same(sole_body(buf, FrameType::region_remove, 18, 0), body));
}

// Every decoder sees every body: a frame's type is just another byte the peer chose.
void check_body(Bytes body) {
  check_hello(body);
  check_welcome(body);
  check_error(body);
  check_send(body);
  check_receive(body);
  check_deliver(body);
  check_declare(body);
  check_send_direct(body);
  check_receive_direct(body);
  check_request(body);
  check_region_alloc(body);
  check_region_grant(body);
  check_send_region(body);
  check_deliver_region(body);
  check_region_release(body);
  check_region_create(body);
  check_region_attach(body);
  check_region_remove(body);
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
