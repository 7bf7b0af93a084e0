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
