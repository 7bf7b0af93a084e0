// Unit tests for the wire codec (proto/PROTOCOL.md), ByteBuffer, addresses and error codes.
//
// Suites are named codec_* so that `ctest -R codec` selects all of them.
// Bodies for the malformed cases are built byte by byte with BodyBuilder, independently of
// the encoders, so the tests pin the wire layout of the specification rather than only
// checking that the codec agrees with itself.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "qbus/errc.hpp"
#include "qbus/proto/address.hpp"
#include "qbus/proto/buffer.hpp"
#include "qbus/proto/codec.hpp"

namespace qbus {
// Lets gtest print "invalid_key (20)" instead of raw bytes when an Errc comparison fails.
void PrintTo(Errc e, std::ostream* os) {
  *os << errc_name(e) << " (" << static_cast<int>(e) << ")";
}
}  // namespace qbus

namespace qbus::proto {
namespace {

using Vec = std::vector<std::byte>;

// broker::kTcpUid, the uid every TCP peer is given; the codec itself does not know it.
constexpr std::uint32_t kTcpUidForTests = 4294967294u;

Vec vec(std::initializer_list<int> values) {
  Vec out;
  for (int v : values)
    out.push_back(static_cast<std::byte>(v));
  return out;
}

Bytes bytes_of(std::string_view s) {
  return std::as_bytes(std::span(s.data(), s.size()));
}

std::string str(Bytes b) {
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

std::string hex(Bytes b) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (std::byte x : b) {
    const auto v = std::to_integer<unsigned>(x);
    if (!out.empty()) out += ' ';
    out += kDigits[v >> 4];
    out += kDigits[v & 0xF];
  }
  return out;
}

// True when `view` lies entirely inside `whole` (an empty view may sit at its end).
bool inside(const void* view, std::size_t size, Bytes whole) {
  const auto* p = static_cast<const std::byte*>(view);
  const std::byte* begin = whole.data();
  const std::byte* end = whole.data() + whole.size();
  return size == 0 ? (p == nullptr || (p >= begin && p <= end))
                   : (p >= begin && p <= end && size <= static_cast<std::size_t>(end - p));
}
bool inside(std::string_view view, Bytes whole) {
  return inside(view.data(), view.size(), whole);
}
bool inside(Bytes view, Bytes whole) {
  return inside(view.data(), view.size(), whole);
}

// Little-endian body bytes written by hand, following the tables in PROTOCOL.md.
class BodyBuilder {
 public:
  BodyBuilder& u8(std::uint64_t v) { return put(v, 1); }
  BodyBuilder& u16(std::uint64_t v) { return put(v, 2); }
  BodyBuilder& u32(std::uint64_t v) { return put(v, 4); }
  BodyBuilder& u64(std::uint64_t v) { return put(v, 8); }
  BodyBuilder& i32(std::int32_t v) { return put(static_cast<std::uint32_t>(v), 4); }
  BodyBuilder& text(std::string_view s) {
    for (char c : s)
      bytes_.push_back(static_cast<std::byte>(c));
    return *this;
  }
  BodyBuilder& key(std::string_view k) { return u8(k.size()).text(k); }
  const Vec& bytes() const { return bytes_; }

 private:
  BodyBuilder& put(std::uint64_t v, int n) {
    for (int i = 0; i < n; ++i)
      bytes_.push_back(static_cast<std::byte>((v >> (8 * i)) & 0xFF));
    return *this;
  }
  Vec bytes_;
};

Vec header_bytes(std::uint8_t type, std::uint16_t flags = 0, std::uint64_t correlation = 0,
                 std::uint32_t body_size = 0) {
  Vec h(kHeaderSize);
  encode_header(h, Header{static_cast<FrameType>(type), flags, correlation, body_size});
  return h;
}

// The single frame a builder appended, copied out so views can be checked against it.
struct Frame {
  Header header;
  Vec body;
};

Frame only_frame(const ByteBuffer& buf) {
  const auto in = buf.readable();
  const auto hr = decode_header(in, kMaxBodyCeiling);
  if (hr.status != HeaderStatus::complete || in.size() != kHeaderSize + hr.header.body_size) {
    ADD_FAILURE() << "buffer does not hold exactly one complete frame: " << hex(in);
    return {};
  }
  return {hr.header, Vec(in.begin() + kHeaderSize, in.end())};
}

// Runs the body decoder matching `type` and checks that every view it returns lies inside
// `body`; returns its verdict.
Errc decode_checked(FrameType type, Bytes body) {
  Errc e = Errc::internal_error;
  switch (type) {
    case FrameType::hello: {
      Hello m;
      e = decode_hello(body, m);
      if (e == Errc::ok) {
        EXPECT_TRUE(inside(m.client_name, body));
        EXPECT_TRUE(inside(m.token, body));
      }
      break;
    }
    case FrameType::welcome: {
      Welcome m;
      e = decode_welcome(body, m);
      break;
    }
    case FrameType::error: {
      ErrorBody m;
      e = decode_error(body, m);
      if (e == Errc::ok) {
        EXPECT_TRUE(inside(m.text, body));
      }
      break;
    }
    case FrameType::send: {
      Send m;
      e = decode_send(body, m);
      if (e == Errc::ok) {
        EXPECT_TRUE(inside(m.key, body));
        EXPECT_TRUE(inside(m.payload, body));
      }
      break;
    }
    case FrameType::receive: {
      Receive m;
      e = decode_receive(body, m);
      if (e == Errc::ok) {
        EXPECT_TRUE(inside(m.key, body));
      }
      break;
    }
    case FrameType::deliver: {
      Deliver m;
      e = decode_deliver(body, m);
      if (e == Errc::ok) {
        EXPECT_TRUE(inside(m.key, body));
        EXPECT_TRUE(inside(m.payload, body));
      }
      break;
    }
    case FrameType::declare: {
      Declare m;
      e = decode_declare(body, m);
      if (e == Errc::ok) {
        EXPECT_TRUE(inside(m.key, body));
      }
      break;
    }
    case FrameType::send_direct: {
      SendDirect m;
      e = decode_send_direct(body, m);
      if (e == Errc::ok) {
        EXPECT_TRUE(inside(m.payload, body));
      }
      break;
    }
    case FrameType::receive_direct: {
      ReceiveDirect m;
      e = decode_receive_direct(body, m);
      break;
    }
    case FrameType::request: {
      Request m;
      e = decode_request(body, m);
      if (e == Errc::ok) {
        EXPECT_TRUE(inside(m.key, body));
        EXPECT_TRUE(inside(m.payload, body));
      }
      break;
    }
    case FrameType::region_alloc: {
      RegionAlloc m;
      e = decode_region_alloc(body, m);
      break;
    }
    case FrameType::region: {
      RegionGrantBody m;
      e = decode_region_grant(body, m);
      break;
    }
    case FrameType::send_region: {
      SendRegion m;
      e = decode_send_region(body, m);
      if (e == Errc::ok) {
        EXPECT_TRUE(inside(m.key, body));
      }
      break;
    }
    case FrameType::deliver_region: {
      DeliverRegion m;
      e = decode_deliver_region(body, m);
      if (e == Errc::ok) {
        EXPECT_TRUE(inside(m.key, body));
      }
      break;
    }
    case FrameType::region_release: {
      std::uint64_t region_id = 0;
      e = decode_region_release(body, region_id);
      break;
    }
    case FrameType::region_create: {
      RegionCreate m;
      e = decode_region_create(body, m);
      if (e == Errc::ok) {
        EXPECT_TRUE(inside(m.key, body));
      }
      break;
    }
    case FrameType::region_attach: {
      RegionAttach m;
      e = decode_region_attach(body, m);
      if (e == Errc::ok) {
        EXPECT_TRUE(inside(m.key, body));
      }
      break;
    }
    case FrameType::region_remove: {
      std::string_view key;
      e = decode_region_remove(body, key);
      if (e == Errc::ok) {
        EXPECT_TRUE(inside(key, body));
      }
      break;
    }
    default:
      ADD_FAILURE() << "no body decoder for " << frame_type_name(type);
  }
  return e;
}

// A valid SEND of key "jobs" and payload "hi" with correlation 1, as in PROTOCOL.md.
Vec spec_send_example() {
  return vec({0x51, 0x42, 0x55, 0x53, 0x01, 0x05, 0x00, 0x00,  // magic, version, type, flags
              0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // correlation
              0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // body size, reserved
              0x04, 0x6a, 0x6f, 0x62, 0x73, 0x68, 0x69});      // key_len, "jobs", "hi"
}

// ---- header ---------------------------------------------------------------------------

TEST(codec_header, EncodedHeaderIsLittleEndianAsSpecified) {
  Vec h = header_bytes(static_cast<std::uint8_t>(FrameType::deliver), kFlagLast,
                       0x0102030405060708ull, 0x00A0B0C0u);
  EXPECT_EQ(hex(h), "51 42 55 53 01 07 02 00 08 07 06 05 04 03 02 01 c0 b0 a0 00 00 00 00 00");
}

TEST(codec_header, HeaderRoundTripsEveryField) {
  const Header in{FrameType::declare, 0xFFFF, std::numeric_limits<std::uint64_t>::max(),
                  kMaxBodyCeiling};
  Vec h(kHeaderSize);
  encode_header(h, in);
  const auto r = decode_header(h, kMaxBodyCeiling);
  ASSERT_EQ(r.status, HeaderStatus::complete);
  EXPECT_EQ(r.error, Errc::ok);
  EXPECT_EQ(r.header.type, FrameType::declare);
  EXPECT_EQ(r.header.flags, 0xFFFF);
  EXPECT_EQ(r.header.correlation, std::numeric_limits<std::uint64_t>::max());
  EXPECT_EQ(r.header.body_size, kMaxBodyCeiling);
}

TEST(codec_header, SendFrameMatchesTheWorkedExampleInTheSpec) {
  ByteBuffer buf;
  append_send(buf, 1, 0, "jobs", bytes_of("hi"));
  EXPECT_EQ(hex(buf.readable()), hex(spec_send_example()));
}

// PROTOCOL.md's second worked example: a request to "echo" and its reply.
TEST(codec_header, RequestReplyFramesMatchTheWorkedExampleInTheSpec) {
  ByteBuffer request;
  Request r;
  r.timeout_ms = 1000;
  r.key = "echo";
  r.payload = bytes_of("hi");
  append_request(request, 7, r);
  EXPECT_EQ(hex(request.readable()),
            "51 42 55 53 01 0e 00 00 07 00 00 00 00 00 00 00 0b 00 00 00 00 00 00 00 "
            "e8 03 00 00 04 65 63 68 6f 68 69");

  ByteBuffer offered;
  append_deliver(offered, 3, kFlagLast, Deliver{4242, 1000, 1, 7, "echo", bytes_of("hi")});
  EXPECT_EQ(hex(offered.readable()),
            "51 42 55 53 01 07 02 00 03 00 00 00 00 00 00 00 1f 00 00 00 00 00 00 00 "
            "92 10 00 00 e8 03 00 00 01 00 00 00 00 00 00 00 07 00 00 00 00 00 00 00 "
            "04 65 63 68 6f 68 69");

  ByteBuffer reply;
  SendDirect d;
  d.kind = TargetKind::client_id;
  d.target = 1;
  d.in_reply_to = 7;
  d.payload = bytes_of("ok");
  append_send_direct(reply, 5, 0, d);
  EXPECT_EQ(hex(reply.readable()),
            "51 42 55 53 01 0b 00 00 05 00 00 00 00 00 00 00 1a 00 00 00 00 00 00 00 "
            "02 00 00 00 00 00 00 00 01 00 00 00 00 00 00 00 07 00 00 00 00 00 00 00 6f 6b");

  ByteBuffer answer;
  append_deliver(answer, 7, kFlagLast, Deliver{4343, 1000, 2, 0, {}, bytes_of("ok")});
  EXPECT_EQ(hex(answer.readable()),
            "51 42 55 53 01 07 02 00 07 00 00 00 00 00 00 00 1b 00 00 00 00 00 00 00 "
            "f7 10 00 00 e8 03 00 00 02 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 "
            "00 6f 6b");
}

TEST(codec_header, HeaderIgnoresBytesAfterIt) {
  Vec frame = spec_send_example();
  frame.push_back(std::byte{0x99});
  const auto r = decode_header(frame, 1024);
  ASSERT_EQ(r.status, HeaderStatus::complete);
  EXPECT_EQ(r.header.type, FrameType::send);
  EXPECT_EQ(r.header.correlation, 1u);
  EXPECT_EQ(r.header.body_size, 7u);
}

TEST(codec_header, TruncatedHeaderNeedsMore) {
  const Vec full = header_bytes(static_cast<std::uint8_t>(FrameType::ping), 0, 42, 0);
  for (std::size_t n = 0; n < kHeaderSize; ++n) {
    const auto r = decode_header(Bytes(full).first(n), kMaxBodyCeiling);
    EXPECT_EQ(r.status, HeaderStatus::need_more) << "prefix length " << n;
    EXPECT_EQ(r.error, Errc::ok) << "prefix length " << n;
  }
}

TEST(codec_header, EmptyInputWithoutStorageNeedsMore) {
  const auto r = decode_header(Bytes{}, kMaxBodyCeiling);
  EXPECT_EQ(r.status, HeaderStatus::need_more);
  EXPECT_EQ(r.error, Errc::ok);
}

TEST(codec_header, BadMagicIsDetectedFromAPartialHeader) {
  for (std::size_t wrong = 0; wrong < 4; ++wrong) {
    Vec h = header_bytes(static_cast<std::uint8_t>(FrameType::ping));
    h[wrong] = std::byte{'X'};
    for (std::size_t n = 1; n < kHeaderSize; ++n) {
      const auto r = decode_header(Bytes(h).first(n), kMaxBodyCeiling);
      if (n > wrong) {
        EXPECT_EQ(r.status, HeaderStatus::bad) << "byte " << wrong << ", length " << n;
        EXPECT_EQ(r.error, Errc::bad_magic) << "byte " << wrong << ", length " << n;
      } else {
        EXPECT_EQ(r.status, HeaderStatus::need_more) << "byte " << wrong << ", length " << n;
      }
    }
  }
}

TEST(codec_header, BadMagicInAFullHeaderIsRejected) {
  Vec h = header_bytes(static_cast<std::uint8_t>(FrameType::ping));
  h[3] = std::byte{0x54};
  const auto r = decode_header(h, kMaxBodyCeiling);
  EXPECT_EQ(r.status, HeaderStatus::bad);
  EXPECT_EQ(r.error, Errc::bad_magic);
}

TEST(codec_header, UnsupportedVersionIsRejected) {
  for (int version : {0, 2, 255}) {
    Vec h = header_bytes(static_cast<std::uint8_t>(FrameType::hello));
    h[4] = static_cast<std::byte>(version);
    const auto r = decode_header(h, kMaxBodyCeiling);
    EXPECT_EQ(r.status, HeaderStatus::bad) << "version " << version;
    EXPECT_EQ(r.error, Errc::unsupported_version) << "version " << version;
  }
}

TEST(codec_header, NonzeroReservedFieldIsMalformedHeader) {
  for (std::size_t i = 20; i < kHeaderSize; ++i) {
    Vec h = header_bytes(static_cast<std::uint8_t>(FrameType::ping));
    h[i] = std::byte{0x01};
    const auto r = decode_header(h, kMaxBodyCeiling);
    EXPECT_EQ(r.status, HeaderStatus::bad) << "byte " << i;
    EXPECT_EQ(r.error, Errc::malformed_header) << "byte " << i;
  }
}

TEST(codec_header, BodyOverTheCallersLimitIsTooLarge) {
  const auto at_limit = decode_header(header_bytes(5, 0, 1, 100), 100);
  EXPECT_EQ(at_limit.status, HeaderStatus::complete);
  const auto over = decode_header(header_bytes(5, 0, 1, 101), 100);
  EXPECT_EQ(over.status, HeaderStatus::bad);
  EXPECT_EQ(over.error, Errc::frame_too_large);
  const auto zero_limit = decode_header(header_bytes(5, 0, 1, 1), 0);
  EXPECT_EQ(zero_limit.error, Errc::frame_too_large);
}

TEST(codec_header, BodyOverTheCeilingIsTooLargeWhateverTheCallersLimit) {
  constexpr auto kNoLimit = std::numeric_limits<std::uint32_t>::max();
  EXPECT_EQ(kMaxBodyCeiling, 64u * 1024 * 1024);
  const auto at = decode_header(header_bytes(5, 0, 1, kMaxBodyCeiling), kNoLimit);
  EXPECT_EQ(at.status, HeaderStatus::complete);
  for (std::uint32_t size : {kMaxBodyCeiling + 1, kNoLimit}) {
    const auto r = decode_header(header_bytes(5, 0, 1, size), kNoLimit);
    EXPECT_EQ(r.status, HeaderStatus::bad) << size;
    EXPECT_EQ(r.error, Errc::frame_too_large) << size;
  }
}

TEST(codec_header, UnknownFrameTypeStillDecodesAsComplete) {
  for (int type : {0, 23, 24, 42, 200, 255}) {
    const auto r = decode_header(header_bytes(static_cast<std::uint8_t>(type), 0, 9, 3), 100);
    ASSERT_EQ(r.status, HeaderStatus::complete) << "type " << type;
    EXPECT_EQ(static_cast<int>(r.header.type), type);
    EXPECT_EQ(r.header.body_size, 3u);
    EXPECT_EQ(r.header.correlation, 9u);
    EXPECT_FALSE(is_known_type(static_cast<std::uint8_t>(type)));
    EXPECT_EQ(frame_type_name(static_cast<FrameType>(type)), "unknown");
  }
}

TEST(codec_header, KnownTypesAreOneToTwentyTwoWithStableNames) {
  const std::pair<FrameType, std::string_view> names[] = {
      {FrameType::hello, "hello"},
      {FrameType::welcome, "welcome"},
      {FrameType::error, "error"},
      {FrameType::ok, "ok"},
      {FrameType::send, "send"},
      {FrameType::receive, "receive"},
      {FrameType::deliver, "deliver"},
      {FrameType::declare, "declare"},
      {FrameType::ping, "ping"},
      {FrameType::pong, "pong"},
      {FrameType::send_direct, "send_direct"},
      {FrameType::receive_direct, "receive_direct"},
      {FrameType::claim_inbox, "claim_inbox"},
      {FrameType::request, "request"},
      {FrameType::region_alloc, "region_alloc"},
      {FrameType::region, "region"},
      {FrameType::send_region, "send_region"},
      {FrameType::deliver_region, "deliver_region"},
      {FrameType::region_release, "region_release"},
      {FrameType::region_create, "region_create"},
      {FrameType::region_attach, "region_attach"},
      {FrameType::region_remove, "region_remove"}};
  int expected_value = 1;
  for (const auto& [type, name] : names) {
    EXPECT_EQ(static_cast<int>(type), expected_value++);
    EXPECT_TRUE(is_known_type(static_cast<std::uint8_t>(type)));
    EXPECT_EQ(frame_type_name(type), name);
  }
  EXPECT_EQ(expected_value, 23);
  EXPECT_FALSE(is_known_type(0));
  EXPECT_FALSE(is_known_type(23));
}

TEST(codec_header, FlagBitsHaveTheirPublishedValues) {
  EXPECT_EQ(kFlagConfirm, 0x0001);
  EXPECT_EQ(kFlagLast, 0x0002);
  EXPECT_EQ(kFlagMore, 0x0004);
}

TEST(codec_header, OnlyRegionAndDeliverRegionCarryAnFd) {
  for (int type = 0; type < 256; ++type) {
    const bool want = type == 16 || type == 18;
    EXPECT_EQ(carries_fd(static_cast<FrameType>(type)), want) << "type " << type;
  }
  EXPECT_TRUE(carries_fd(FrameType::region));
  EXPECT_TRUE(carries_fd(FrameType::deliver_region));
}

TEST(codec_header, DeliverPieceCarriesTheMoreFlagInItsHeader) {
  // A region message sent inline to a TCP peer: every piece but the last is flagged MORE,
  // LAST (when due) sits on the final piece only.
  ByteBuffer buf;
  append_deliver(buf, 3, kFlagMore, Deliver{1, 2, 3, 0, {}, bytes_of("ab")});
  append_deliver(buf, 3, kFlagLast, Deliver{1, 2, 3, 0, {}, bytes_of("c")});
  const auto in = buf.readable();
  EXPECT_EQ(hex(in.first(kHeaderSize)),
            "51 42 55 53 01 07 04 00 03 00 00 00 00 00 00 00 1b 00 00 00 00 00 00 00");
  const auto first = decode_header(in, kMaxBodyCeiling);
  ASSERT_EQ(first.status, HeaderStatus::complete);
  EXPECT_EQ(first.header.flags, kFlagMore);
  const auto second = decode_header(in.subspan(kHeaderSize + first.header.body_size), 1024);
  ASSERT_EQ(second.status, HeaderStatus::complete);
  EXPECT_EQ(second.header.flags, kFlagLast);
  EXPECT_EQ(second.header.correlation, 3u);
}

// ---- round trips ----------------------------------------------------------------------

TEST(codec_round_trip, HelloRoundTrips) {
  ByteBuffer buf;
  Hello in;
  in.min_version = 1;
  in.max_version = 3;
  in.client_name = "worker-7";
  in.token = "s3cret";
  append_hello(buf, 77, in);
  const Frame f = only_frame(buf);
  EXPECT_EQ(f.header.type, FrameType::hello);
  EXPECT_EQ(f.header.flags, 0);
  EXPECT_EQ(f.header.correlation, 77u);
  EXPECT_EQ(f.body.size(), kHelloFixed + 8 + 6);
  Hello out;
  ASSERT_EQ(decode_hello(f.body, out), Errc::ok);
  EXPECT_EQ(out.min_version, 1);
  EXPECT_EQ(out.max_version, 3);
  EXPECT_EQ(out.client_name, "worker-7");
  EXPECT_EQ(out.token, "s3cret");
}

TEST(codec_round_trip, HelloWithEmptyNameAndTokenRoundTrips) {
  ByteBuffer buf;
  append_hello(buf, 1, Hello{});
  const Frame f = only_frame(buf);
  EXPECT_EQ(f.body.size(), kHelloFixed);
  Hello out;
  out.client_name = "stale";
  ASSERT_EQ(decode_hello(f.body, out), Errc::ok);
  EXPECT_EQ(out.min_version, kMinVersion);
  EXPECT_EQ(out.max_version, kMaxVersion);
  EXPECT_TRUE(out.client_name.empty());
  EXPECT_TRUE(out.token.empty());
}

TEST(codec_round_trip, HelloWithLongestNameAndTokenRoundTrips) {
  const std::string name(kMaxClientNameSize, 'n');
  const std::string token(kMaxTokenSize, 't');
  ByteBuffer buf;
  Hello in;
  in.client_name = name;
  in.token = token;
  append_hello(buf, 1, in);
  Hello out;
  const Frame f = only_frame(buf);
  ASSERT_EQ(decode_hello(f.body, out), Errc::ok);
  EXPECT_EQ(out.client_name, name);
  EXPECT_EQ(out.token, token);
}

TEST(codec_round_trip, HelloWithAFutureVersionRangeDecodes) {
  // Choosing a version is the broker's job; the codec only checks the range is sane.
  const auto body = BodyBuilder().u8(2).u8(9).u16(0).u16(0).u16(0).bytes();
  Hello out;
  ASSERT_EQ(decode_hello(body, out), Errc::ok);
  EXPECT_EQ(out.min_version, 2);
  EXPECT_EQ(out.max_version, 9);
}

TEST(codec_round_trip, WelcomeRoundTripsEveryField) {
  Welcome in;
  in.version = 1;
  in.max_body = kMaxBodyCeiling;
  in.max_payload = 0xFEDCBA98u;
  in.pid = 4'000'000u;
  in.uid = 0xFFFFFFFEu;
  in.gid = 1234;
  in.client_id = 0x0123456789ABCDEFull;
  ByteBuffer buf;
  append_welcome(buf, 5, in);
  const Frame f = only_frame(buf);
  EXPECT_EQ(f.header.type, FrameType::welcome);
  EXPECT_EQ(f.header.correlation, 5u);
  ASSERT_EQ(f.body.size(), kWelcomeSize);
  EXPECT_EQ(f.body[1], std::byte{0});  // reserved
  EXPECT_EQ(f.body[2], std::byte{0});
  EXPECT_EQ(f.body[3], std::byte{0});
  Welcome out;
  ASSERT_EQ(decode_welcome(f.body, out), Errc::ok);
  EXPECT_EQ(out.version, in.version);
  EXPECT_EQ(out.max_body, in.max_body);
  EXPECT_EQ(out.max_payload, in.max_payload);
  EXPECT_EQ(out.pid, in.pid);
  EXPECT_EQ(out.uid, in.uid);
  EXPECT_EQ(out.gid, in.gid);
  EXPECT_EQ(out.client_id, in.client_id);
}

TEST(codec_round_trip, WelcomeFieldsSitAtTheirSpecifiedOffsets) {
  const auto body = BodyBuilder()
                        .u8(1)
                        .u8(0)
                        .u16(0)
                        .u32(1000)
                        .u32(2000)
                        .u32(3000)
                        .u32(4000)
                        .u32(5000)
                        .u64(6000)
                        .bytes();
  Welcome out;
  ASSERT_EQ(decode_welcome(body, out), Errc::ok);
  EXPECT_EQ(out.version, 1);
  EXPECT_EQ(out.max_body, 1000u);
  EXPECT_EQ(out.max_payload, 2000u);
  EXPECT_EQ(out.pid, 3000u);
  EXPECT_EQ(out.uid, 4000u);
  EXPECT_EQ(out.gid, 5000u);
  EXPECT_EQ(out.client_id, 6000u);
}

TEST(codec_round_trip, ErrorRoundTripsCodeAndText) {
  ByteBuffer buf;
  append_error(buf, 31, Errc::queue_full, "queue 'jobs' is full");
  const Frame f = only_frame(buf);
  EXPECT_EQ(f.header.type, FrameType::error);
  EXPECT_EQ(f.header.correlation, 31u);
  ErrorBody out;
  ASSERT_EQ(decode_error(f.body, out), Errc::ok);
  EXPECT_EQ(out.code, 22);
  EXPECT_EQ(out.text, "queue 'jobs' is full");
}

TEST(codec_round_trip, ErrorWithEmptyTextRoundTrips) {
  ByteBuffer buf;
  append_error(buf, 0, Errc::timeout, "");
  const Frame f = only_frame(buf);
  EXPECT_EQ(f.body.size(), kErrorFixed);
  ErrorBody out;
  ASSERT_EQ(decode_error(f.body, out), Errc::ok);
  EXPECT_EQ(out.code, static_cast<std::uint16_t>(Errc::timeout));
  EXPECT_TRUE(out.text.empty());
}

TEST(codec_round_trip, ErrorTextLongerThanTheLimitIsTruncatedByTheEncoder) {
  const std::string longer(kMaxErrorTextSize + 500, 'e');
  EXPECT_EQ(error_size(longer), kErrorFixed + kMaxErrorTextSize);
  ByteBuffer buf;
  append_error(buf, 2, Errc::internal_error, longer);
  ErrorBody out;
  const Frame f = only_frame(buf);
  ASSERT_EQ(decode_error(f.body, out), Errc::ok);
  EXPECT_EQ(out.text, std::string(kMaxErrorTextSize, 'e'));
}

TEST(codec_round_trip, ErrorWithAnUnknownCodeDecodesTheRawValue) {
  const auto body = BodyBuilder().u16(999).u16(2).text("hm").bytes();
  ErrorBody out;
  ASSERT_EQ(decode_error(body, out), Errc::ok);
  EXPECT_EQ(out.code, 999);
  EXPECT_EQ(out.text, "hm");
}

TEST(codec_round_trip, SendRoundTripsKeyPayloadAndConfirmFlag) {
  ByteBuffer buf;
  append_send(buf, 12, kFlagConfirm, "jobs.high/a:b_c-d", bytes_of("payload"));
  const Frame f = only_frame(buf);
  EXPECT_EQ(f.header.type, FrameType::send);
  EXPECT_EQ(f.header.flags, kFlagConfirm);
  EXPECT_EQ(f.header.correlation, 12u);
  EXPECT_EQ(f.body.size(), send_size("jobs.high/a:b_c-d", 7));
  Send out;
  ASSERT_EQ(decode_send(f.body, out), Errc::ok);
  EXPECT_EQ(out.key, "jobs.high/a:b_c-d");
  EXPECT_EQ(str(out.payload), "payload");
}

TEST(codec_round_trip, SendWithEmptyPayloadRoundTrips) {
  ByteBuffer buf;
  append_send(buf, 1, 0, "k", {});
  const Frame f = only_frame(buf);
  EXPECT_EQ(f.body.size(), kSendFixed + 1);
  Send out;
  ASSERT_EQ(decode_send(f.body, out), Errc::ok);
  EXPECT_EQ(out.key, "k");
  EXPECT_TRUE(out.payload.empty());
}

TEST(codec_round_trip, SendWithA255ByteKeyRoundTrips) {
  const std::string key(kMaxKeySize, 'K');
  ByteBuffer buf;
  append_send(buf, 1, 0, key, bytes_of("x"));
  Send out;
  const Frame f = only_frame(buf);
  ASSERT_EQ(decode_send(f.body, out), Errc::ok);
  EXPECT_EQ(out.key, key);
  EXPECT_EQ(str(out.payload), "x");
}

TEST(codec_round_trip, SendPayloadMayHoldEveryByteValue) {
  Vec payload;
  for (int i = 0; i < 256; ++i)
    payload.push_back(static_cast<std::byte>(i));
  ByteBuffer buf;
  append_send(buf, 1, 0, "bin", payload);
  Send out;
  const Frame f = only_frame(buf);
  ASSERT_EQ(decode_send(f.body, out), Errc::ok);
  EXPECT_TRUE(std::equal(out.payload.begin(), out.payload.end(), payload.begin(), payload.end()));
}

TEST(codec_round_trip, ReceiveRoundTripsTimeoutsAndCounts) {
  const std::pair<std::int32_t, std::uint32_t> cases[] = {
      {-1, 1}, {0, 1}, {250, 16}, {std::numeric_limits<std::int32_t>::max(), 0xFFFFFFFFu}};
  for (const auto& [timeout, count] : cases) {
    Receive in;
    in.timeout_ms = timeout;
    in.max_count = count;
    in.key = "q";
    ByteBuffer buf;
    append_receive(buf, 3, in);
    const Frame f = only_frame(buf);
    EXPECT_EQ(f.header.type, FrameType::receive);
    EXPECT_EQ(f.header.flags, 0);
    EXPECT_EQ(f.body.size(), kReceiveFixed + 1);
    Receive out;
    ASSERT_EQ(decode_receive(f.body, out), Errc::ok) << timeout;
    EXPECT_EQ(out.timeout_ms, timeout);
    EXPECT_EQ(out.max_count, count);
    EXPECT_EQ(out.key, "q");
  }
}

TEST(codec_round_trip, ReceiveWithA255ByteKeyRoundTrips) {
  const std::string key(kMaxKeySize, 'r');
  Receive in;
  in.key = key;
  ByteBuffer buf;
  append_receive(buf, 3, in);
  Receive out;
  const Frame f = only_frame(buf);
  ASSERT_EQ(decode_receive(f.body, out), Errc::ok);
  EXPECT_EQ(out.key, key);
}

TEST(codec_round_trip, DeliverRoundTripsSenderKeyPayloadAndLastFlag) {
  const Deliver in{4242, 1000, 0xABCDEF0123456789ull, 0, "jobs", bytes_of("work item")};
  ByteBuffer buf;
  append_deliver(buf, 8, kFlagLast, in);
  const Frame f = only_frame(buf);
  EXPECT_EQ(f.header.type, FrameType::deliver);
  EXPECT_EQ(f.header.flags, kFlagLast);
  EXPECT_EQ(f.header.correlation, 8u);
  EXPECT_EQ(f.body.size(), deliver_size("jobs", 9));
  EXPECT_EQ(f.body.size(), 25u + 4 + 9);
  Deliver out;
  out.request_id = 77;  // stale, must be overwritten
  ASSERT_EQ(decode_deliver(f.body, out), Errc::ok);
  EXPECT_EQ(out.sender_pid, 4242u);
  EXPECT_EQ(out.sender_uid, 1000u);
  EXPECT_EQ(out.sender_client_id, 0xABCDEF0123456789ull);
  EXPECT_EQ(out.request_id, 0u);
  EXPECT_EQ(out.key, "jobs");
  EXPECT_EQ(str(out.payload), "work item");
}

TEST(codec_round_trip, DeliverOfARequestCarriesItsRequestId) {
  const Deliver in{7, 8, 9, std::numeric_limits<std::uint64_t>::max(), "rpc", bytes_of("q")};
  ByteBuffer buf;
  append_deliver(buf, 3, 0, in);
  const Frame f = only_frame(buf);
  Deliver out;
  ASSERT_EQ(decode_deliver(f.body, out), Errc::ok);
  EXPECT_EQ(out.request_id, std::numeric_limits<std::uint64_t>::max());
  EXPECT_EQ(out.sender_client_id, 9u);
  EXPECT_EQ(out.key, "rpc");
  EXPECT_EQ(str(out.payload), "q");
}

TEST(codec_round_trip, DeliverWithEmptyPayloadAndLongestKeyRoundTrips) {
  const std::string key(kMaxKeySize, 'd');
  ByteBuffer buf;
  append_deliver(buf, 8, 0, Deliver{1, 2, 3, 4, key, {}});
  const Frame f = only_frame(buf);
  EXPECT_EQ(f.header.flags, 0);
  EXPECT_EQ(f.body.size(), kDeliverFixed + kMaxKeySize);
  Deliver out;
  ASSERT_EQ(decode_deliver(f.body, out), Errc::ok);
  EXPECT_EQ(out.key, key);
  EXPECT_EQ(out.request_id, 4u);
  EXPECT_TRUE(out.payload.empty());
}

TEST(codec_round_trip, DirectDeliverHasAnEmptyKey) {
  const Deliver in{31337, kTcpUidForTests, 12, 0, {}, bytes_of("to you")};
  ByteBuffer buf;
  append_deliver(buf, 40, kFlagLast, in);
  const Frame f = only_frame(buf);
  EXPECT_EQ(f.body.size(), kDeliverFixed + 6);
  EXPECT_EQ(f.body[kDeliverFixed - 1], std::byte{0});  // key_len
  Deliver out;
  out.key = "stale";
  ASSERT_EQ(decode_deliver(f.body, out), Errc::ok);
  EXPECT_TRUE(out.key.empty());
  EXPECT_EQ(out.sender_pid, 31337u);
  EXPECT_EQ(out.sender_uid, kTcpUidForTests);
  EXPECT_EQ(out.sender_client_id, 12u);
  EXPECT_EQ(str(out.payload), "to you");
}

TEST(codec_round_trip, DirectDeliverWithEmptyKeyAndPayloadIsJustTheFixedPart) {
  ByteBuffer buf;
  append_deliver(buf, 1, kFlagLast, Deliver{});
  const Frame f = only_frame(buf);
  EXPECT_EQ(f.body.size(), kDeliverFixed);
  EXPECT_EQ(kDeliverFixed, 25u);
  Deliver out;
  ASSERT_EQ(decode_deliver(f.body, out), Errc::ok);
  EXPECT_TRUE(out.key.empty());
  EXPECT_TRUE(out.payload.empty());
}

TEST(codec_round_trip, DeliverFieldsSitAtTheirSpecifiedOffsets) {
  ByteBuffer buf;
  append_deliver(buf, 1, kFlagLast,
                 Deliver{0x01020304u, 0x05060708u, 0x1112131415161718ull, 0x2122232425262728ull,
                         "k", bytes_of("P")});
  const Frame f = only_frame(buf);
  EXPECT_EQ(hex(f.body),
            "04 03 02 01 08 07 06 05 18 17 16 15 14 13 12 11 28 27 26 25 24 23 22 21 01 6b 50");
  const auto body =
      BodyBuilder().u32(1000).u32(2000).u64(3000).u64(4000).key("abc").text("xyz").bytes();
  Deliver out;
  ASSERT_EQ(decode_deliver(body, out), Errc::ok);
  EXPECT_EQ(out.sender_pid, 1000u);
  EXPECT_EQ(out.sender_uid, 2000u);
  EXPECT_EQ(out.sender_client_id, 3000u);
  EXPECT_EQ(out.request_id, 4000u);
  EXPECT_EQ(out.key, "abc");
  EXPECT_EQ(str(out.payload), "xyz");
}

TEST(codec_round_trip, SendDirectByPidRoundTripsWithConfirmAndWait) {
  SendDirect in;
  in.kind = TargetKind::pid;
  in.wait_ms = 1500;
  in.target = 0xFFFFFFFFu;  // the largest pid the field allows
  in.payload = bytes_of("hello pid");
  ByteBuffer buf;
  append_send_direct(buf, 21, kFlagConfirm, in);
  const Frame f = only_frame(buf);
  EXPECT_EQ(f.header.type, FrameType::send_direct);
  EXPECT_EQ(f.header.flags, kFlagConfirm);
  EXPECT_EQ(f.header.correlation, 21u);
  EXPECT_EQ(f.body.size(), send_direct_size(9));
  EXPECT_EQ(f.body.size(), 24u + 9);
  SendDirect out;
  ASSERT_EQ(decode_send_direct(f.body, out), Errc::ok);
  EXPECT_EQ(out.kind, TargetKind::pid);
  EXPECT_EQ(out.wait_ms, 1500);
  EXPECT_EQ(out.target, 0xFFFFFFFFu);
  EXPECT_EQ(out.in_reply_to, 0u);
  EXPECT_EQ(str(out.payload), "hello pid");
}

TEST(codec_round_trip, SendDirectReplyByClientIdRoundTrips) {
  SendDirect in;
  in.kind = TargetKind::client_id;
  in.wait_ms = 0;
  in.target = std::numeric_limits<std::uint64_t>::max();  // client ids use all 64 bits
  in.in_reply_to = 0x8000000000000001ull;
  in.payload = bytes_of("answer");
  ByteBuffer buf;
  append_send_direct(buf, 22, 0, in);
  const Frame f = only_frame(buf);
  EXPECT_EQ(f.header.flags, 0);
  SendDirect out;
  ASSERT_EQ(decode_send_direct(f.body, out), Errc::ok);
  EXPECT_EQ(out.kind, TargetKind::client_id);
  EXPECT_EQ(out.wait_ms, 0);
  EXPECT_EQ(out.target, std::numeric_limits<std::uint64_t>::max());
  EXPECT_EQ(out.in_reply_to, 0x8000000000000001ull);
  EXPECT_EQ(str(out.payload), "answer");
}

TEST(codec_round_trip, SendDirectWithEmptyPayloadAndLongestWaitRoundTrips) {
  SendDirect in;
  in.kind = TargetKind::client_id;
  in.wait_ms = std::numeric_limits<std::int32_t>::max();
  in.target = 1;
  ByteBuffer buf;
  append_send_direct(buf, 1, 0, in);
  const Frame f = only_frame(buf);
  EXPECT_EQ(f.body.size(), kSendDirectFixed);
  SendDirect out;
  ASSERT_EQ(decode_send_direct(f.body, out), Errc::ok);
  EXPECT_EQ(out.wait_ms, std::numeric_limits<std::int32_t>::max());
  EXPECT_EQ(out.target, 1u);
  EXPECT_TRUE(out.payload.empty());
}

TEST(codec_round_trip, SendDirectFieldsSitAtTheirSpecifiedOffsets) {
  SendDirect in;
  in.kind = TargetKind::client_id;
  in.wait_ms = 0x01020304;
  in.target = 0x1112131415161718ull;
  in.in_reply_to = 0x2122232425262728ull;
  in.payload = bytes_of("P");
  ByteBuffer buf;
  append_send_direct(buf, 1, 0, in);
  const Frame f = only_frame(buf);
  EXPECT_EQ(hex(f.body),
            "02 00 00 00 04 03 02 01 18 17 16 15 14 13 12 11 28 27 26 25 24 23 22 21 50");
  const auto body = BodyBuilder().u8(1).u8(0).u16(0).i32(250).u64(4321).u64(0).text("hi").bytes();
  SendDirect out;
  ASSERT_EQ(decode_send_direct(body, out), Errc::ok);
  EXPECT_EQ(out.kind, TargetKind::pid);
  EXPECT_EQ(out.wait_ms, 250);
  EXPECT_EQ(out.target, 4321u);
  EXPECT_EQ(out.in_reply_to, 0u);
  EXPECT_EQ(str(out.payload), "hi");
}

TEST(codec_round_trip, ReceiveDirectRoundTripsTimeoutsAndCounts) {
  const std::pair<std::int32_t, std::uint32_t> cases[] = {
      {-1, 1}, {0, 1}, {250, 16}, {std::numeric_limits<std::int32_t>::max(), 0xFFFFFFFFu}};
  for (const auto& [timeout, count] : cases) {
    ByteBuffer buf;
    append_receive_direct(buf, 9, ReceiveDirect{timeout, count});
    const Frame f = only_frame(buf);
    EXPECT_EQ(f.header.type, FrameType::receive_direct);
    EXPECT_EQ(f.header.flags, 0);
    EXPECT_EQ(f.header.correlation, 9u);
    ASSERT_EQ(f.body.size(), kReceiveDirectSize);
    ReceiveDirect out;
    ASSERT_EQ(decode_receive_direct(f.body, out), Errc::ok) << timeout;
    EXPECT_EQ(out.timeout_ms, timeout);
    EXPECT_EQ(out.max_count, count);
  }
}

TEST(codec_round_trip, ReceiveDirectFieldsSitAtTheirSpecifiedOffsets) {
  ByteBuffer buf;
  append_receive_direct(buf, 1, ReceiveDirect{-1, 0x01020304u});
  EXPECT_EQ(hex(only_frame(buf).body), "ff ff ff ff 04 03 02 01");
}

TEST(codec_round_trip, ClaimInboxIsAnEmptyFrame) {
  ByteBuffer buf;
  append_empty(buf, FrameType::claim_inbox, 5);
  const Frame f = only_frame(buf);
  EXPECT_EQ(f.header.type, FrameType::claim_inbox);
  EXPECT_EQ(static_cast<int>(f.header.type), 13);
  EXPECT_EQ(f.header.correlation, 5u);
  EXPECT_EQ(f.header.flags, 0);
  EXPECT_TRUE(f.body.empty());
}

TEST(codec_round_trip, RequestRoundTripsTimeoutKeyAndPayload) {
  for (std::int32_t timeout : {-1, 0, 30'000, std::numeric_limits<std::int32_t>::max()}) {
    Request in;
    in.timeout_ms = timeout;
    in.key = "rpc/echo";
    in.payload = bytes_of("question");
    ByteBuffer buf;
    append_request(buf, 44, in);
    const Frame f = only_frame(buf);
    EXPECT_EQ(f.header.type, FrameType::request);
    EXPECT_EQ(f.header.flags, 0);
    EXPECT_EQ(f.header.correlation, 44u);
    EXPECT_EQ(f.body.size(), request_size("rpc/echo", 8));
    EXPECT_EQ(f.body.size(), 5u + 8 + 8);
    Request out;
    ASSERT_EQ(decode_request(f.body, out), Errc::ok) << timeout;
    EXPECT_EQ(out.timeout_ms, timeout);
    EXPECT_EQ(out.key, "rpc/echo");
    EXPECT_EQ(str(out.payload), "question");
  }
}

TEST(codec_round_trip, RequestWithEmptyPayloadAndLongestKeyRoundTrips) {
  const std::string key(kMaxKeySize, 'r');
  Request in;
  in.key = key;
  ByteBuffer buf;
  append_request(buf, 1, in);
  const Frame f = only_frame(buf);
  EXPECT_EQ(f.body.size(), kRequestFixed + kMaxKeySize);
  Request out;
  ASSERT_EQ(decode_request(f.body, out), Errc::ok);
  EXPECT_EQ(out.timeout_ms, -1);
  EXPECT_EQ(out.key, key);
  EXPECT_TRUE(out.payload.empty());
}

TEST(codec_round_trip, RequestFieldsSitAtTheirSpecifiedOffsets) {
  Request in;
  in.timeout_ms = 0x01020304;
  in.key = "k";
  in.payload = bytes_of("P");
  ByteBuffer buf;
  append_request(buf, 1, in);
  EXPECT_EQ(hex(only_frame(buf).body), "04 03 02 01 01 6b 50");
}

TEST(codec_round_trip, DeclareRoundTripsEveryOverflowPolicy) {
  for (auto policy :
       {Overflow::use_default, Overflow::reject, Overflow::drop_oldest, Overflow::block}) {
    const Declare in{0xFFFFFFFFu, std::numeric_limits<std::uint64_t>::max(), policy, "cfg"};
    ByteBuffer buf;
    append_declare(buf, 4, kFlagConfirm, in);
    const Frame f = only_frame(buf);
    EXPECT_EQ(f.header.type, FrameType::declare);
    EXPECT_EQ(f.header.flags, kFlagConfirm);
    EXPECT_EQ(f.body.size(), kDeclareFixed + 3);
    Declare out;
    ASSERT_EQ(decode_declare(f.body, out), Errc::ok) << overflow_name(policy);
    EXPECT_EQ(out.max_messages, 0xFFFFFFFFu);
    EXPECT_EQ(out.max_bytes, std::numeric_limits<std::uint64_t>::max());
    EXPECT_EQ(out.overflow, policy);
    EXPECT_EQ(out.key, "cfg");
  }
}

TEST(codec_round_trip, DeclareOfBrokerDefaultsIsAllZero) {
  ByteBuffer buf;
  append_declare(buf, 4, 0, Declare{0, 0, Overflow::use_default, "d"});
  const Frame f = only_frame(buf);
  EXPECT_EQ(hex(f.body), "00 00 00 00 00 00 00 00 00 00 00 00 00 01 64");
}

TEST(codec_round_trip, EmptyFramesCarryTypeCorrelationAndNoBody) {
  for (auto type : {FrameType::ok, FrameType::ping, FrameType::pong}) {
    ByteBuffer buf;
    append_empty(buf, type, 0xFEEDull);
    const Frame f = only_frame(buf);
    EXPECT_EQ(f.header.type, type);
    EXPECT_EQ(f.header.correlation, 0xFEEDull);
    EXPECT_EQ(f.header.flags, 0);
    EXPECT_TRUE(f.body.empty());
  }
}

TEST(codec_round_trip, SeveralFramesInOneBufferDecodeInOrder) {
  ByteBuffer buf;
  append_empty(buf, FrameType::ping, 1);
  append_send(buf, 2, 0, "a", bytes_of("one"));
  append_send(buf, 3, kFlagConfirm, "b", bytes_of("two"));
  append_error(buf, 4, Errc::timeout, "late");
  SendDirect d;
  d.target = 99;
  append_send_direct(buf, 5, kFlagConfirm, d);
  append_receive_direct(buf, 6, ReceiveDirect{});
  append_empty(buf, FrameType::claim_inbox, 7);
  Request r;
  r.key = "rpc";
  append_request(buf, 8, r);
  append_deliver(buf, 9, kFlagLast, Deliver{});
  std::vector<std::pair<FrameType, std::uint64_t>> seen;
  auto in = buf.readable();
  while (!in.empty()) {
    const auto hr = decode_header(in, 1024);
    ASSERT_EQ(hr.status, HeaderStatus::complete);
    ASSERT_GE(in.size(), kHeaderSize + hr.header.body_size);
    seen.emplace_back(hr.header.type, hr.header.correlation);
    in = in.subspan(kHeaderSize + hr.header.body_size);
  }
  const std::vector<std::pair<FrameType, std::uint64_t>> want = {
      {FrameType::ping, 1},        {FrameType::send, 2},        {FrameType::send, 3},
      {FrameType::error, 4},       {FrameType::send_direct, 5}, {FrameType::receive_direct, 6},
      {FrameType::claim_inbox, 7}, {FrameType::request, 8},     {FrameType::deliver, 9}};
  EXPECT_EQ(seen, want);
}

// ---- shared-memory region frames (PROTOCOL.md section 16) -----------------------------

TEST(codec_round_trip, RegionAllocRoundTripsItsSize) {
  for (std::uint64_t size :
       {std::uint64_t{1}, std::uint64_t{4096}, std::numeric_limits<std::uint64_t>::max()}) {
    ByteBuffer buf;
    append_region_alloc(buf, 15, RegionAlloc{size});
    const Frame f = only_frame(buf);
    EXPECT_EQ(f.header.type, FrameType::region_alloc);
    EXPECT_EQ(static_cast<int>(f.header.type), 15);
    EXPECT_EQ(f.header.flags, 0);
    EXPECT_EQ(f.header.correlation, 15u);
    ASSERT_EQ(f.body.size(), kRegionAllocSize);
    RegionAlloc out;
    ASSERT_EQ(decode_region_alloc(f.body, out), Errc::ok) << size;
    EXPECT_EQ(out.size, size);
  }
}

TEST(codec_round_trip, RegionAllocFieldsSitAtTheirSpecifiedOffsets) {
  ByteBuffer buf;
  append_region_alloc(buf, 1, RegionAlloc{0x0102030405060708ull});
  EXPECT_EQ(hex(only_frame(buf).body), "08 07 06 05 04 03 02 01");
  RegionAlloc out;
  ASSERT_EQ(decode_region_alloc(BodyBuilder().u64(65536).bytes(), out), Errc::ok);
  EXPECT_EQ(out.size, 65536u);
}

TEST(codec_round_trip, RegionGrantRoundTripsWritableAndReadOnly) {
  for (bool writable : {true, false}) {
    const RegionGrantBody in{std::numeric_limits<std::uint64_t>::max(), 0x10000, writable};
    ByteBuffer buf;
    append_region_grant(buf, 16, in);
    const Frame f = only_frame(buf);
    EXPECT_EQ(f.header.type, FrameType::region);
    EXPECT_EQ(static_cast<int>(f.header.type), 16);
    EXPECT_EQ(f.header.flags, 0);
    EXPECT_EQ(f.header.correlation, 16u);
    ASSERT_EQ(f.body.size(), kRegionGrantSize);
    RegionGrantBody out;
    out.writable = !writable;  // stale, must be overwritten
    ASSERT_EQ(decode_region_grant(f.body, out), Errc::ok) << writable;
    EXPECT_EQ(out.region_id, std::numeric_limits<std::uint64_t>::max());
    EXPECT_EQ(out.size, 0x10000u);
    EXPECT_EQ(out.writable, writable);
  }
}

TEST(codec_round_trip, RegionGrantFieldsSitAtTheirSpecifiedOffsets) {
  ByteBuffer buf;
  append_region_grant(buf, 1, RegionGrantBody{0x0102030405060708ull, 0x1112131415161718ull, true});
  EXPECT_EQ(hex(only_frame(buf).body),
            "08 07 06 05 04 03 02 01 18 17 16 15 14 13 12 11 01 00 00 00 00 00 00 00");
  const auto body = BodyBuilder().u64(3000).u64(4096).u8(0).u8(0).u16(0).u32(0).bytes();
  RegionGrantBody out;
  ASSERT_EQ(decode_region_grant(body, out), Errc::ok);
  EXPECT_EQ(out.region_id, 3000u);
  EXPECT_EQ(out.size, 4096u);
  EXPECT_FALSE(out.writable);
}

TEST(codec_round_trip, SendRegionToQueueRoundTripsWithConfirmAndRelease) {
  SendRegion in;
  in.region_id = 0xABCDEF0123456789ull;
  in.offset = 128;
  in.length = std::numeric_limits<std::uint64_t>::max() - 128;  // not bound by max_payload
  in.target_kind = RegionTarget::queue;
  in.release = true;
  in.key = "jobs.high";
  ByteBuffer buf;
  append_send_region(buf, 17, kFlagConfirm, in);
  const Frame f = only_frame(buf);
  EXPECT_EQ(f.header.type, FrameType::send_region);
  EXPECT_EQ(static_cast<int>(f.header.type), 17);
  EXPECT_EQ(f.header.flags, kFlagConfirm);
  EXPECT_EQ(f.header.correlation, 17u);
  EXPECT_EQ(f.body.size(), send_region_size("jobs.high"));
  EXPECT_EQ(f.body.size(), 41u + 9);
  SendRegion out;
  out.target = 99;  // stale, must be overwritten
  ASSERT_EQ(decode_send_region(f.body, out), Errc::ok);
  EXPECT_EQ(out.region_id, in.region_id);
  EXPECT_EQ(out.offset, 128u);
  EXPECT_EQ(out.length, in.length);
  EXPECT_EQ(out.target_kind, RegionTarget::queue);
  EXPECT_TRUE(out.release);
  EXPECT_EQ(out.wait_ms, 0);
  EXPECT_EQ(out.target, 0u);
  EXPECT_EQ(out.key, "jobs.high");
}

TEST(codec_round_trip, SendRegionToPidRoundTripsWithWait) {
  for (std::int32_t wait : {0, 1500, std::numeric_limits<std::int32_t>::max()}) {
    SendRegion in;
    in.region_id = 1;
    in.offset = 0;
    in.length = 1;
    in.target_kind = RegionTarget::pid;
    in.wait_ms = wait;
    in.target = 0xFFFFFFFFu;  // the largest pid the field allows
    ByteBuffer buf;
    append_send_region(buf, 2, 0, in);
    const Frame f = only_frame(buf);
    EXPECT_EQ(f.header.flags, 0);
    EXPECT_EQ(f.body.size(), kSendRegionFixed);
    EXPECT_EQ(send_region_size({}), kSendRegionFixed);
    SendRegion out;
    out.key = "stale";
    ASSERT_EQ(decode_send_region(f.body, out), Errc::ok) << wait;
    EXPECT_EQ(out.target_kind, RegionTarget::pid);
    EXPECT_FALSE(out.release);
    EXPECT_EQ(out.wait_ms, wait);
    EXPECT_EQ(out.target, 0xFFFFFFFFu);
    EXPECT_TRUE(out.key.empty());
  }
}

TEST(codec_round_trip, SendRegionToClientIdRoundTrips) {
  SendRegion in;
  in.region_id = 5;
  in.offset = 4000;
  in.length = 96;
  in.target_kind = RegionTarget::client_id;
  in.release = true;
  in.target = std::numeric_limits<std::uint64_t>::max();  // client ids use all 64 bits
  ByteBuffer buf;
  append_send_region(buf, 3, kFlagConfirm, in);
  const Frame f = only_frame(buf);
  SendRegion out;
  ASSERT_EQ(decode_send_region(f.body, out), Errc::ok);
  EXPECT_EQ(out.region_id, 5u);
  EXPECT_EQ(out.offset, 4000u);
  EXPECT_EQ(out.length, 96u);
  EXPECT_EQ(out.target_kind, RegionTarget::client_id);
  EXPECT_TRUE(out.release);
  EXPECT_EQ(out.target, std::numeric_limits<std::uint64_t>::max());
  EXPECT_TRUE(out.key.empty());
}

TEST(codec_round_trip, SendRegionWithA255ByteKeyRoundTrips) {
  const std::string key(kMaxKeySize, 's');
  SendRegion in;
  in.region_id = 1;
  in.length = 1;
  in.key = key;
  ByteBuffer buf;
  append_send_region(buf, 1, 0, in);
  const Frame f = only_frame(buf);
  EXPECT_EQ(f.body.size(), kSendRegionFixed + kMaxKeySize);
  SendRegion out;
  ASSERT_EQ(decode_send_region(f.body, out), Errc::ok);
  EXPECT_EQ(out.key, key);
}

TEST(codec_round_trip, SendRegionFieldsSitAtTheirSpecifiedOffsets) {
  SendRegion in;
  in.region_id = 0x0102030405060708ull;
  in.offset = 0x1112131415161718ull;
  in.length = 0x2122232425262728ull;
  in.target_kind = RegionTarget::pid;
  in.release = true;
  in.wait_ms = 0x31323334;
  in.target = 0x41424344u;
  ByteBuffer buf;
  append_send_region(buf, 1, 0, in);
  EXPECT_EQ(hex(only_frame(buf).body),
            "08 07 06 05 04 03 02 01 18 17 16 15 14 13 12 11 28 27 26 25 24 23 22 21 "
            "01 01 00 00 34 33 32 31 44 43 42 41 00 00 00 00 00");
  SendRegion queue;
  queue.region_id = 1;
  queue.offset = 2;
  queue.length = 3;
  queue.key = "k";
  ByteBuffer queue_buf;
  append_send_region(queue_buf, 1, 0, queue);
  EXPECT_EQ(hex(only_frame(queue_buf).body),
            "01 00 00 00 00 00 00 00 02 00 00 00 00 00 00 00 03 00 00 00 00 00 00 00 "
            "00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 01 6b");
  const auto body =
      BodyBuilder().u64(10).u64(20).u64(30).u8(2).u8(0).u16(0).i32(0).u64(40).u8(0).bytes();
  SendRegion out;
  ASSERT_EQ(decode_send_region(body, out), Errc::ok);
  EXPECT_EQ(out.region_id, 10u);
  EXPECT_EQ(out.offset, 20u);
  EXPECT_EQ(out.length, 30u);
  EXPECT_EQ(out.target_kind, RegionTarget::client_id);
  EXPECT_FALSE(out.release);
  EXPECT_EQ(out.target, 40u);
}

TEST(codec_round_trip, DeliverRegionRoundTripsEveryFieldAndLastFlag) {
  DeliverRegion in;
  in.sender_pid = 4242;
  in.sender_uid = 1000;
  in.sender_client_id = 0xABCDEF0123456789ull;
  in.request_id = 0;
  in.region_id = 77;
  in.region_size = 1 << 20;
  in.offset = 4096;
  in.length = 1000;
  in.key = "jobs";
  ByteBuffer buf;
  append_deliver_region(buf, 18, kFlagLast, in);
  const Frame f = only_frame(buf);
  EXPECT_EQ(f.header.type, FrameType::deliver_region);
  EXPECT_EQ(static_cast<int>(f.header.type), 18);
  EXPECT_EQ(f.header.flags, kFlagLast);
  EXPECT_EQ(f.header.correlation, 18u);
  EXPECT_EQ(f.body.size(), deliver_region_size("jobs"));
  EXPECT_EQ(f.body.size(), 57u + 4);
  DeliverRegion out;
  out.request_id = 9;  // stale, must be overwritten
  ASSERT_EQ(decode_deliver_region(f.body, out), Errc::ok);
  EXPECT_EQ(out.sender_pid, 4242u);
  EXPECT_EQ(out.sender_uid, 1000u);
  EXPECT_EQ(out.sender_client_id, 0xABCDEF0123456789ull);
  EXPECT_EQ(out.request_id, 0u);
  EXPECT_EQ(out.region_id, 77u);
  EXPECT_EQ(out.region_size, 1u << 20);
  EXPECT_EQ(out.offset, 4096u);
  EXPECT_EQ(out.length, 1000u);
  EXPECT_EQ(out.key, "jobs");
}

TEST(codec_round_trip, DirectDeliverRegionHasAnEmptyKey) {
  DeliverRegion in;
  in.sender_pid = 31337;
  in.sender_uid = kTcpUidForTests;
  in.sender_client_id = 12;
  in.region_id = 1;
  in.region_size = 10;
  in.offset = 0;
  in.length = 10;
  ByteBuffer buf;
  append_deliver_region(buf, 40, 0, in);
  const Frame f = only_frame(buf);
  EXPECT_EQ(f.header.flags, 0);
  EXPECT_EQ(f.body.size(), kDeliverRegionFixed);
  EXPECT_EQ(deliver_region_size({}), kDeliverRegionFixed);
  EXPECT_EQ(f.body[kDeliverRegionFixed - 1], std::byte{0});  // key_len
  DeliverRegion out;
  out.key = "stale";
  ASSERT_EQ(decode_deliver_region(f.body, out), Errc::ok);
  EXPECT_TRUE(out.key.empty());
  EXPECT_EQ(out.sender_uid, kTcpUidForTests);
  EXPECT_EQ(out.length, 10u);
}

TEST(codec_round_trip, DeliverRegionSliceMayEndExactlyAtTheRegionsEnd) {
  constexpr auto kMax = std::numeric_limits<std::uint64_t>::max();
  const std::uint64_t slices[][3] = {
      // region_size, offset, length
      {1, 0, 1},       {4096, 0, 4096},     {4096, 4095, 1},
      {kMax, 0, kMax}, {kMax, kMax - 1, 1}, {kMax, 1, kMax - 1},
  };
  for (const auto& [size, offset, length] : slices) {
    DeliverRegion in;
    in.region_id = 3;
    in.region_size = size;
    in.offset = offset;
    in.length = length;
    in.key = "q";
    ByteBuffer buf;
    append_deliver_region(buf, 1, kFlagLast, in);
    DeliverRegion out;
    ASSERT_EQ(decode_deliver_region(only_frame(buf).body, out), Errc::ok)
        << size << " " << offset << " " << length;
    EXPECT_EQ(out.region_size, size);
    EXPECT_EQ(out.offset, offset);
    EXPECT_EQ(out.length, length);
  }
}

TEST(codec_round_trip, DeliverRegionFieldsSitAtTheirSpecifiedOffsets) {
  DeliverRegion in;
  in.sender_pid = 0x01020304u;
  in.sender_uid = 0x05060708u;
  in.sender_client_id = 0x1112131415161718ull;
  in.request_id = 0x2122232425262728ull;
  in.region_id = 0x3132333435363738ull;
  in.region_size = 0x7000000000000000ull;
  in.offset = 0x4142434445464748ull;
  in.length = 0x0102030405060708ull;
  in.key = "k";
  ByteBuffer buf;
  append_deliver_region(buf, 1, 0, in);
  EXPECT_EQ(hex(only_frame(buf).body),
            "04 03 02 01 08 07 06 05 18 17 16 15 14 13 12 11 28 27 26 25 24 23 22 21 "
            "38 37 36 35 34 33 32 31 00 00 00 00 00 00 00 70 48 47 46 45 44 43 42 41 "
            "08 07 06 05 04 03 02 01 01 6b");
  const auto body = BodyBuilder()
                        .u32(1000)
                        .u32(2000)
                        .u64(3000)
                        .u64(0)
                        .u64(5000)
                        .u64(6000)
                        .u64(100)
                        .u64(200)
                        .key("abc")
                        .bytes();
  DeliverRegion out;
  ASSERT_EQ(decode_deliver_region(body, out), Errc::ok);
  EXPECT_EQ(out.sender_pid, 1000u);
  EXPECT_EQ(out.sender_uid, 2000u);
  EXPECT_EQ(out.sender_client_id, 3000u);
  EXPECT_EQ(out.request_id, 0u);
  EXPECT_EQ(out.region_id, 5000u);
  EXPECT_EQ(out.region_size, 6000u);
  EXPECT_EQ(out.offset, 100u);
  EXPECT_EQ(out.length, 200u);
  EXPECT_EQ(out.key, "abc");
}

TEST(codec_round_trip, RegionReleaseRoundTripsWithAndWithoutConfirm) {
  for (std::uint16_t flags : {std::uint16_t{0}, kFlagConfirm}) {
    ByteBuffer buf;
    append_region_release(buf, 19, flags, 0x0102030405060708ull);
    const Frame f = only_frame(buf);
    EXPECT_EQ(f.header.type, FrameType::region_release);
    EXPECT_EQ(static_cast<int>(f.header.type), 19);
    EXPECT_EQ(f.header.flags, flags);
    EXPECT_EQ(f.header.correlation, 19u);
    EXPECT_EQ(hex(f.body), "08 07 06 05 04 03 02 01");
    std::uint64_t region_id = 0;
    ASSERT_EQ(decode_region_release(f.body, region_id), Errc::ok);
    EXPECT_EQ(region_id, 0x0102030405060708ull);
  }
}

TEST(codec_round_trip, RegionCreateRoundTripsSizeModeAndKey) {
  for (std::uint16_t mode :
       {std::uint16_t{0}, std::uint16_t{0600}, std::uint16_t{0640}, std::uint16_t{0666}}) {
    const RegionCreate in{std::numeric_limits<std::uint64_t>::max(), mode, "work/area"};
    ByteBuffer buf;
    append_region_create(buf, 20, in);
    const Frame f = only_frame(buf);
    EXPECT_EQ(f.header.type, FrameType::region_create);
    EXPECT_EQ(static_cast<int>(f.header.type), 20);
    EXPECT_EQ(f.header.flags, 0);
    EXPECT_EQ(f.header.correlation, 20u);
    EXPECT_EQ(f.body.size(), region_create_size("work/area"));
    EXPECT_EQ(f.body.size(), 11u + 9);
    RegionCreate out;
    ASSERT_EQ(decode_region_create(f.body, out), Errc::ok) << mode;
    EXPECT_EQ(out.size, std::numeric_limits<std::uint64_t>::max());
    EXPECT_EQ(out.mode, mode);
    EXPECT_EQ(out.key, "work/area");
  }
}

TEST(codec_round_trip, RegionCreateFieldsSitAtTheirSpecifiedOffsets) {
  ByteBuffer buf;
  append_region_create(buf, 1, RegionCreate{0x0102030405060708ull, 0640, "k"});
  EXPECT_EQ(hex(only_frame(buf).body), "08 07 06 05 04 03 02 01 a0 01 01 6b");
  const auto body = BodyBuilder().u64(4096).u16(0660).key("abc").bytes();
  RegionCreate out;
  ASSERT_EQ(decode_region_create(body, out), Errc::ok);
  EXPECT_EQ(out.size, 4096u);
  EXPECT_EQ(out.mode, 0660);
  EXPECT_EQ(out.key, "abc");
}

TEST(codec_round_trip, RegionCreateWithA255ByteKeyRoundTrips) {
  const std::string key(kMaxKeySize, 'c');
  ByteBuffer buf;
  append_region_create(buf, 1, RegionCreate{1, 0600, key});
  const Frame f = only_frame(buf);
  EXPECT_EQ(f.body.size(), kRegionCreateFixed + kMaxKeySize);
  RegionCreate out;
  ASSERT_EQ(decode_region_create(f.body, out), Errc::ok);
  EXPECT_EQ(out.key, key);
}

TEST(codec_round_trip, RegionAttachRoundTripsWritableAndReadOnly) {
  for (bool writable : {true, false}) {
    ByteBuffer buf;
    append_region_attach(buf, 21, RegionAttach{writable, "work/area"});
    const Frame f = only_frame(buf);
    EXPECT_EQ(f.header.type, FrameType::region_attach);
    EXPECT_EQ(static_cast<int>(f.header.type), 21);
    EXPECT_EQ(f.header.flags, 0);
    EXPECT_EQ(f.header.correlation, 21u);
    EXPECT_EQ(f.body.size(), region_attach_size("work/area"));
    EXPECT_EQ(f.body.size(), 2u + 9);
    RegionAttach out;
    out.writable = !writable;  // stale, must be overwritten
    ASSERT_EQ(decode_region_attach(f.body, out), Errc::ok) << writable;
    EXPECT_EQ(out.writable, writable);
    EXPECT_EQ(out.key, "work/area");
  }
}

TEST(codec_round_trip, RegionAttachFieldsSitAtTheirSpecifiedOffsets) {
  ByteBuffer writable;
  append_region_attach(writable, 1, RegionAttach{true, "k"});
  EXPECT_EQ(hex(only_frame(writable).body), "01 01 6b");
  ByteBuffer read_only;
  append_region_attach(read_only, 1, RegionAttach{false, "ab"});
  EXPECT_EQ(hex(only_frame(read_only).body), "00 02 61 62");
}

TEST(codec_round_trip, RegionRemoveRoundTripsItsKey) {
  const std::string longest(kMaxKeySize, 'r');
  for (std::string_view key :
       {std::string_view("k"), std::string_view("work/area"), std::string_view(longest)}) {
    ByteBuffer buf;
    append_region_remove(buf, 22, key);
    const Frame f = only_frame(buf);
    EXPECT_EQ(f.header.type, FrameType::region_remove);
    EXPECT_EQ(static_cast<int>(f.header.type), 22);
    EXPECT_EQ(f.header.flags, 0);
    EXPECT_EQ(f.header.correlation, 22u);
    EXPECT_EQ(f.body.size(), region_remove_size(key));
    EXPECT_EQ(f.body.size(), kRegionRemoveFixed + key.size());
    std::string_view out = "stale";
    ASSERT_EQ(decode_region_remove(f.body, out), Errc::ok) << key;
    EXPECT_EQ(out, key);
  }
  ByteBuffer buf;
  append_region_remove(buf, 1, "ab");
  EXPECT_EQ(hex(only_frame(buf).body), "02 61 62");
}

TEST(codec_round_trip, RegionFramesInOneBufferDecodeInOrder) {
  ByteBuffer buf;
  append_region_alloc(buf, 1, RegionAlloc{4096});
  append_region_grant(buf, 1, RegionGrantBody{7, 4096, true});
  SendRegion s;
  s.region_id = 7;
  s.length = 4096;
  s.key = "jobs";
  append_send_region(buf, 2, kFlagConfirm, s);
  DeliverRegion d;
  d.region_id = 7;
  d.region_size = 4096;
  d.length = 4096;
  append_deliver_region(buf, 3, kFlagLast, d);
  append_region_release(buf, 4, 0, 7);
  append_region_create(buf, 5, RegionCreate{4096, 0600, "area"});
  append_region_attach(buf, 6, RegionAttach{false, "area"});
  append_region_remove(buf, 7, "area");
  std::vector<std::pair<FrameType, std::uint64_t>> seen;
  auto in = buf.readable();
  while (!in.empty()) {
    const auto hr = decode_header(in, 1024);
    ASSERT_EQ(hr.status, HeaderStatus::complete);
    ASSERT_GE(in.size(), kHeaderSize + hr.header.body_size);
    EXPECT_EQ(decode_checked(hr.header.type, in.subspan(kHeaderSize, hr.header.body_size)),
              Errc::ok)
        << frame_type_name(hr.header.type);
    seen.emplace_back(hr.header.type, hr.header.correlation);
    in = in.subspan(kHeaderSize + hr.header.body_size);
  }
  const std::vector<std::pair<FrameType, std::uint64_t>> want = {
      {FrameType::region_alloc, 1},   {FrameType::region, 1},         {FrameType::send_region, 2},
      {FrameType::deliver_region, 3}, {FrameType::region_release, 4}, {FrameType::region_create, 5},
      {FrameType::region_attach, 6},  {FrameType::region_remove, 7}};
  EXPECT_EQ(seen, want);
}

// ---- malformed bodies -----------------------------------------------------------------

struct BodyCase {
  const char* name;
  FrameType type;
  Vec body;
  // Prefixes at least this long are still valid (SEND and DELIVER end in a payload).
  std::size_t shortest_valid;
};

std::vector<BodyCase> valid_bodies() {
  return {
      {"hello", FrameType::hello,
       BodyBuilder().u8(1).u8(1).u16(3).u16(2).u16(0).text("cli").text("tk").bytes(), 13},
      {"welcome", FrameType::welcome,
       BodyBuilder().u8(1).u8(0).u16(0).u32(1).u32(2).u32(3).u32(4).u32(5).u64(6).bytes(), 32},
      {"error", FrameType::error, BodyBuilder().u16(23).u16(4).text("late").bytes(), 8},
      {"send", FrameType::send, BodyBuilder().key("jobs").text("hi").bytes(), 5},
      {"receive", FrameType::receive, BodyBuilder().i32(100).u32(2).key("jobs").bytes(), 13},
      {"deliver", FrameType::deliver,
       BodyBuilder().u32(1).u32(2).u64(3).u64(4).key("jobs").text("hi").bytes(), 29},
      {"direct deliver", FrameType::deliver,
       BodyBuilder().u32(1).u32(2).u64(3).u64(0).u8(0).text("hi").bytes(), 25},
      {"declare", FrameType::declare, BodyBuilder().u32(10).u64(1000).u8(1).key("jobs").bytes(),
       18},
      {"send_direct by pid", FrameType::send_direct,
       BodyBuilder().u8(1).u8(0).u16(0).i32(100).u64(4242).u64(0).text("hi").bytes(), 24},
      {"send_direct reply", FrameType::send_direct,
       BodyBuilder().u8(2).u8(0).u16(0).i32(0).u64(7).u64(99).text("hi").bytes(), 24},
      {"receive_direct", FrameType::receive_direct, BodyBuilder().i32(-1).u32(8).bytes(), 8},
      {"request", FrameType::request, BodyBuilder().i32(1000).key("jobs").text("hi").bytes(), 9},
      {"region_alloc", FrameType::region_alloc, BodyBuilder().u64(4096).bytes(), 8},
      {"region", FrameType::region,
       BodyBuilder().u64(7).u64(4096).u8(1).u8(0).u16(0).u32(0).bytes(), 24},
      {"read-only region", FrameType::region,
       BodyBuilder().u64(7).u64(4096).u8(0).u8(0).u16(0).u32(0).bytes(), 24},
      {"send_region to queue", FrameType::send_region,
       BodyBuilder().u64(7).u64(0).u64(16).u8(0).u8(1).u16(0).i32(0).u64(0).key("jobs").bytes(),
       45},
      {"send_region to pid", FrameType::send_region,
       BodyBuilder().u64(7).u64(8).u64(16).u8(1).u8(0).u16(0).i32(100).u64(4242).u8(0).bytes(), 41},
      {"send_region to client id", FrameType::send_region,
       BodyBuilder().u64(7).u64(8).u64(16).u8(2).u8(1).u16(0).i32(0).u64(9).u8(0).bytes(), 41},
      {"deliver_region", FrameType::deliver_region,
       BodyBuilder()
           .u32(1)
           .u32(2)
           .u64(3)
           .u64(0)
           .u64(7)
           .u64(4096)
           .u64(16)
           .u64(32)
           .key("jobs")
           .bytes(),
       61},
      {"direct deliver_region", FrameType::deliver_region,
       BodyBuilder().u32(1).u32(2).u64(3).u64(0).u64(7).u64(4096).u64(0).u64(4096).u8(0).bytes(),
       57},
      {"region_release", FrameType::region_release, BodyBuilder().u64(7).bytes(), 8},
      {"region_create", FrameType::region_create,
       BodyBuilder().u64(65536).u16(0640).key("work").bytes(), 15},
      {"region_attach", FrameType::region_attach, BodyBuilder().u8(1).key("work").bytes(), 6},
      {"read-only region_attach", FrameType::region_attach, BodyBuilder().u8(0).key("work").bytes(),
       6},
      {"region_remove", FrameType::region_remove, BodyBuilder().key("work").bytes(), 5},
  };
}

// Frame types whose body ends in a payload of any length.
bool ends_in_payload(FrameType t) {
  return t == FrameType::send || t == FrameType::deliver || t == FrameType::send_direct ||
         t == FrameType::request;
}

TEST(codec_body, HandBuiltValidBodiesDecode) {
  for (const auto& c : valid_bodies()) {
    EXPECT_EQ(decode_checked(c.type, c.body), Errc::ok) << c.name;
  }
}

TEST(codec_body, EveryTruncatedBodyIsMalformedAndStaysInBounds) {
  for (const auto& c : valid_bodies()) {
    for (std::size_t n = 0; n < c.body.size(); ++n) {
      // An exactly sized copy, so a read past the prefix is a heap overflow under ASan.
      const Vec prefix(c.body.begin(), c.body.begin() + static_cast<std::ptrdiff_t>(n));
      const Errc want = n < c.shortest_valid ? Errc::malformed_frame : Errc::ok;
      EXPECT_EQ(decode_checked(c.type, prefix), want) << c.name << " prefix length " << n;
    }
  }
}

TEST(codec_body, TrailingBytesAfterAFixedLayoutAreMalformed) {
  for (auto c : valid_bodies()) {
    if (ends_in_payload(c.type)) continue;
    c.body.push_back(std::byte{0});
    EXPECT_EQ(decode_checked(c.type, c.body), Errc::malformed_frame) << c.name;
  }
}

TEST(codec_body, BytesAfterTheFixedPartAreThePayload) {
  Send s;
  const Vec send_body = BodyBuilder().key("k").text("abc").bytes();
  ASSERT_EQ(decode_send(send_body, s), Errc::ok);
  EXPECT_EQ(str(s.payload), "abc");
  Deliver d;
  const Vec deliver_body = BodyBuilder().u32(0).u32(0).u64(0).u64(0).key("k").text("xyz").bytes();
  ASSERT_EQ(decode_deliver(deliver_body, d), Errc::ok);
  EXPECT_EQ(str(d.payload), "xyz");
  SendDirect sd;
  const Vec direct_body = BodyBuilder()
                              .u8(1)
                              .u8(0)
                              .u16(0)
                              .i32(0)
                              .u64(1)
                              .u64(0)
                              .text(std::string_view("\x00\xff", 2))
                              .bytes();
  ASSERT_EQ(decode_send_direct(direct_body, sd), Errc::ok);
  EXPECT_EQ(str(sd.payload), std::string("\x00\xff", 2));
  Request r;
  const Vec request_body = BodyBuilder().i32(-1).key("k").text("uvw").bytes();
  ASSERT_EQ(decode_request(request_body, r), Errc::ok);
  EXPECT_EQ(str(r.payload), "uvw");
}

TEST(codec_body, ZeroLengthKeyIsInvalidKey) {
  EXPECT_EQ(decode_checked(FrameType::send, BodyBuilder().u8(0).text("p").bytes()),
            Errc::invalid_key);
  EXPECT_EQ(decode_checked(FrameType::receive, BodyBuilder().i32(0).u32(1).u8(0).bytes()),
            Errc::invalid_key);
  EXPECT_EQ(decode_checked(FrameType::declare, BodyBuilder().u32(0).u64(0).u8(0).u8(0).bytes()),
            Errc::invalid_key);
  EXPECT_EQ(decode_checked(FrameType::request, BodyBuilder().i32(0).u8(0).text("p").bytes()),
            Errc::invalid_key);
}

TEST(codec_body, DeliverWithZeroLengthKeyIsADirectMessage) {
  // Unlike every other key field, DELIVER's may be empty: direct messages and replies.
  Deliver d;
  const Vec body = BodyBuilder().u32(5).u32(6).u64(7).u64(0).u8(0).text("p").bytes();
  ASSERT_EQ(decode_checked(FrameType::deliver, body), Errc::ok);
  ASSERT_EQ(decode_deliver(body, d), Errc::ok);
  EXPECT_TRUE(d.key.empty());
  EXPECT_EQ(str(d.payload), "p");
  const Vec bare = BodyBuilder().u32(0).u32(0).u64(0).u64(0).u8(0).bytes();
  EXPECT_EQ(decode_checked(FrameType::deliver, bare), Errc::ok);
}

TEST(codec_body, KeyWithAForbiddenCharacterIsInvalidKey) {
  for (std::string_view key : {std::string_view("a b"), std::string_view("a*"),
                               std::string_view("jobs\n"), std::string_view("\xc3\xa9t\xc3\xa9"),
                               std::string_view("a\0b", 3), std::string_view("q@host")}) {
    EXPECT_EQ(decode_checked(FrameType::send, BodyBuilder().key(key).bytes()), Errc::invalid_key)
        << "send " << key;
    EXPECT_EQ(decode_checked(FrameType::receive, BodyBuilder().i32(-1).u32(1).key(key).bytes()),
              Errc::invalid_key)
        << "receive " << key;
    EXPECT_EQ(decode_checked(FrameType::deliver,
                             BodyBuilder().u32(0).u32(0).u64(0).u64(0).key(key).bytes()),
              Errc::invalid_key)
        << "deliver " << key;
    EXPECT_EQ(decode_checked(FrameType::deliver,
                             BodyBuilder().u32(0).u32(0).u64(0).u64(9).key(key).text("p").bytes()),
              Errc::invalid_key)
        << "deliver of a request " << key;
    EXPECT_EQ(
        decode_checked(FrameType::declare, BodyBuilder().u32(0).u64(0).u8(0).key(key).bytes()),
        Errc::invalid_key)
        << "declare " << key;
    EXPECT_EQ(decode_checked(FrameType::request, BodyBuilder().i32(-1).key(key).text("p").bytes()),
              Errc::invalid_key)
        << "request " << key;
  }
}

TEST(codec_body, KeyLongerThan255IsNotExpressible) {
  // key_len is one byte, so a 256-byte "key" reads as a 0-byte key (invalid, or for
  // DELIVER a direct message) followed by payload: nothing longer ever reaches the broker.
  const std::string key(256, 'k');
  Request r;
  const Vec body = BodyBuilder().i32(0).u8(key.size()).text(key).bytes();
  EXPECT_EQ(decode_request(body, r), Errc::invalid_key);
}

TEST(codec_body, KeyLengthBeyondTheBodyIsMalformed) {
  EXPECT_EQ(decode_checked(FrameType::send, BodyBuilder().u8(200).text("abc").bytes()),
            Errc::malformed_frame);
  EXPECT_EQ(
      decode_checked(FrameType::receive, BodyBuilder().i32(0).u32(1).u8(4).text("abc").bytes()),
      Errc::malformed_frame);
  EXPECT_EQ(decode_checked(FrameType::deliver,
                           BodyBuilder().u32(0).u32(0).u64(0).u64(0).u8(255).text("abc").bytes()),
            Errc::malformed_frame);
  EXPECT_EQ(decode_checked(FrameType::request, BodyBuilder().i32(0).u8(4).text("abc").bytes()),
            Errc::malformed_frame);
  EXPECT_EQ(decode_checked(FrameType::declare,
                           BodyBuilder().u32(0).u64(0).u8(0).u8(4).text("abc").bytes()),
            Errc::malformed_frame);
}

TEST(codec_body, ReceiveTimeoutBelowMinusOneIsMalformed) {
  for (std::int32_t t : {-2, -1000, std::numeric_limits<std::int32_t>::min()}) {
    EXPECT_EQ(decode_checked(FrameType::receive, BodyBuilder().i32(t).u32(1).key("q").bytes()),
              Errc::malformed_frame)
        << t;
  }
}

TEST(codec_body, ReceiveMaxCountZeroIsMalformed) {
  EXPECT_EQ(decode_checked(FrameType::receive, BodyBuilder().i32(-1).u32(0).key("q").bytes()),
            Errc::malformed_frame);
}

TEST(codec_body, DeclareOverflowAboveThreeIsMalformed) {
  for (int overflow : {4, 5, 255}) {
    EXPECT_EQ(
        decode_checked(
            FrameType::declare,
            BodyBuilder().u32(0).u64(0).u8(static_cast<std::uint64_t>(overflow)).key("q").bytes()),
        Errc::malformed_frame)
        << overflow;
  }
  Declare d;
  const Vec block_body = BodyBuilder().u32(0).u64(0).u8(3).key("q").bytes();
  ASSERT_EQ(decode_declare(block_body, d), Errc::ok);
  EXPECT_EQ(d.overflow, Overflow::block);
}

// A SEND_DIRECT body with each field given; valid unless a test changes one.
Vec send_direct_body(std::uint64_t kind, std::uint64_t reserved8, std::uint64_t reserved16,
                     std::int32_t wait_ms, std::uint64_t target, std::uint64_t in_reply_to) {
  return BodyBuilder()
      .u8(kind)
      .u8(reserved8)
      .u16(reserved16)
      .i32(wait_ms)
      .u64(target)
      .u64(in_reply_to)
      .text("payload")
      .bytes();
}

TEST(codec_body, SendDirectBuiltByHandDecodes) {
  EXPECT_EQ(decode_checked(FrameType::send_direct, send_direct_body(1, 0, 0, 0, 1, 0)), Errc::ok);
  EXPECT_EQ(decode_checked(FrameType::send_direct, send_direct_body(2, 0, 0, 0, 1, 0)), Errc::ok);
  EXPECT_EQ(decode_checked(FrameType::send_direct, send_direct_body(2, 0, 0, 5, 1, 1)), Errc::ok);
}

TEST(codec_body, SendDirectWithNonzeroReservedIsMalformed) {
  for (std::uint64_t r8 : {1ull, 0x80ull, 0xFFull}) {
    EXPECT_EQ(decode_checked(FrameType::send_direct, send_direct_body(1, r8, 0, 0, 42, 0)),
              Errc::malformed_frame)
        << "reserved u8 " << r8;
  }
  for (std::uint64_t r16 : {1ull, 0x100ull, 0xFFFFull}) {
    EXPECT_EQ(decode_checked(FrameType::send_direct, send_direct_body(2, 0, r16, 0, 42, 0)),
              Errc::malformed_frame)
        << "reserved u16 " << r16;
  }
  // Every reserved byte on its own.
  for (std::size_t i = 1; i < 4; ++i) {
    Vec body = send_direct_body(1, 0, 0, 0, 42, 0);
    body[i] = std::byte{1};
    EXPECT_EQ(decode_checked(FrameType::send_direct, body), Errc::malformed_frame) << "byte " << i;
  }
}

TEST(codec_body, SendDirectWithNegativeWaitIsMalformed) {
  for (std::int32_t wait : {-1, -2, std::numeric_limits<std::int32_t>::min()}) {
    EXPECT_EQ(decode_checked(FrameType::send_direct, send_direct_body(1, 0, 0, wait, 42, 0)),
              Errc::malformed_frame)
        << wait;
    EXPECT_EQ(decode_checked(FrameType::send_direct, send_direct_body(2, 0, 0, wait, 42, 0)),
              Errc::malformed_frame)
        << wait;
  }
}

TEST(codec_body, SendDirectToTargetZeroIsMalformed) {
  EXPECT_EQ(decode_checked(FrameType::send_direct, send_direct_body(1, 0, 0, 0, 0, 0)),
            Errc::malformed_frame);
  EXPECT_EQ(decode_checked(FrameType::send_direct, send_direct_body(2, 0, 0, 0, 0, 0)),
            Errc::malformed_frame);
  EXPECT_EQ(decode_checked(FrameType::send_direct, send_direct_body(2, 0, 0, 0, 0, 5)),
            Errc::malformed_frame);
}

TEST(codec_body, SendDirectPidTargetMustFitIn32Bits) {
  for (std::uint64_t target : {std::uint64_t{0x100000000}, std::uint64_t{0x1FFFFFFFF},
                               std::numeric_limits<std::uint64_t>::max()}) {
    EXPECT_EQ(decode_checked(FrameType::send_direct, send_direct_body(1, 0, 0, 0, target, 0)),
              Errc::malformed_frame)
        << target;
    // The same value is a fine client id.
    EXPECT_EQ(decode_checked(FrameType::send_direct, send_direct_body(2, 0, 0, 0, target, 0)),
              Errc::ok)
        << target;
  }
  EXPECT_EQ(decode_checked(FrameType::send_direct, send_direct_body(1, 0, 0, 0, 0xFFFFFFFFu, 0)),
            Errc::ok);
}

TEST(codec_body, SendDirectReplyMustNameAClientId) {
  for (std::uint64_t in_reply_to :
       {std::uint64_t{1}, std::uint64_t{0xFFFFFFFF}, std::numeric_limits<std::uint64_t>::max()}) {
    EXPECT_EQ(decode_checked(FrameType::send_direct, send_direct_body(1, 0, 0, 0, 42, in_reply_to)),
              Errc::malformed_frame)
        << in_reply_to;
    EXPECT_EQ(decode_checked(FrameType::send_direct, send_direct_body(2, 0, 0, 0, 42, in_reply_to)),
              Errc::ok)
        << in_reply_to;
  }
}

TEST(codec_body, SendDirectWithAnUnknownKindIsMalformed) {
  for (std::uint64_t kind : {0ull, 3ull, 4ull, 0x81ull, 0xFFull}) {
    EXPECT_EQ(decode_checked(FrameType::send_direct, send_direct_body(kind, 0, 0, 0, 42, 0)),
              Errc::malformed_frame)
        << kind;
  }
}

TEST(codec_body, ReceiveDirectOfAnyOtherSizeIsMalformed) {
  for (std::size_t size : {std::size_t{0}, std::size_t{4}, std::size_t{7}, std::size_t{9},
                           std::size_t{16}, std::size_t{32}}) {
    // All 0xFF except max_count, so only the size can be wrong.
    Vec body(size, std::byte{0xFF});
    if (size >= 8) body[4] = std::byte{1};
    EXPECT_EQ(decode_checked(FrameType::receive_direct, body), Errc::malformed_frame) << size;
  }
}

TEST(codec_body, ReceiveDirectMaxCountZeroIsMalformed) {
  EXPECT_EQ(decode_checked(FrameType::receive_direct, BodyBuilder().i32(-1).u32(0).bytes()),
            Errc::malformed_frame);
  EXPECT_EQ(decode_checked(FrameType::receive_direct, BodyBuilder().i32(100).u32(0).bytes()),
            Errc::malformed_frame);
}

TEST(codec_body, ReceiveDirectTimeoutBelowMinusOneIsMalformed) {
  for (std::int32_t t : {-2, -1000, std::numeric_limits<std::int32_t>::min()}) {
    EXPECT_EQ(decode_checked(FrameType::receive_direct, BodyBuilder().i32(t).u32(1).bytes()),
              Errc::malformed_frame)
        << t;
  }
  EXPECT_EQ(decode_checked(FrameType::receive_direct, BodyBuilder().i32(-1).u32(1).bytes()),
            Errc::ok);
  EXPECT_EQ(decode_checked(FrameType::receive_direct, BodyBuilder().i32(0).u32(1).bytes()),
            Errc::ok);
}

TEST(codec_body, RequestTimeoutBelowMinusOneIsMalformed) {
  for (std::int32_t t : {-2, -1000, std::numeric_limits<std::int32_t>::min()}) {
    EXPECT_EQ(decode_checked(FrameType::request, BodyBuilder().i32(t).key("q").text("p").bytes()),
              Errc::malformed_frame)
        << t;
  }
}

TEST(codec_body, RequestTimeoutIsCheckedBeforeTheKey) {
  // Both wrong: the range error wins, as in the order of the fields.
  EXPECT_EQ(decode_checked(FrameType::request, BodyBuilder().i32(-5).key("a b").bytes()),
            Errc::malformed_frame);
}

TEST(codec_body, HelloWithMinVersionZeroIsMalformed) {
  EXPECT_EQ(
      decode_checked(FrameType::hello, BodyBuilder().u8(0).u8(1).u16(0).u16(0).u16(0).bytes()),
      Errc::malformed_frame);
}

TEST(codec_body, HelloWithMinAboveMaxIsMalformed) {
  EXPECT_EQ(
      decode_checked(FrameType::hello, BodyBuilder().u8(3).u8(2).u16(0).u16(0).u16(0).bytes()),
      Errc::malformed_frame);
}

TEST(codec_body, HelloWithNonzeroReservedIsMalformed) {
  for (std::uint64_t reserved : {1ull, 0x100ull, 0xFFFFull}) {
    EXPECT_EQ(decode_checked(FrameType::hello,
                             BodyBuilder().u8(1).u8(1).u16(0).u16(0).u16(reserved).bytes()),
              Errc::malformed_frame)
        << reserved;
  }
}

TEST(codec_body, HelloNameLongerThan64IsMalformedEvenWhenPresent) {
  const std::string name(kMaxClientNameSize + 1, 'n');
  EXPECT_EQ(
      decode_checked(FrameType::hello,
                     BodyBuilder().u8(1).u8(1).u16(name.size()).u16(0).u16(0).text(name).bytes()),
      Errc::malformed_frame);
}

TEST(codec_body, HelloTokenLongerThan1024IsMalformedEvenWhenPresent) {
  const std::string token(kMaxTokenSize + 1, 't');
  EXPECT_EQ(
      decode_checked(FrameType::hello,
                     BodyBuilder().u8(1).u8(1).u16(0).u16(token.size()).u16(0).text(token).bytes()),
      Errc::malformed_frame);
}

TEST(codec_body, ErrorTextLongerThan1024IsMalformedEvenWhenPresent) {
  const std::string text(kMaxErrorTextSize + 1, 'e');
  EXPECT_EQ(
      decode_checked(FrameType::error, BodyBuilder().u16(50).u16(text.size()).text(text).bytes()),
      Errc::malformed_frame);
  const std::string at_limit(kMaxErrorTextSize, 'e');
  EXPECT_EQ(decode_checked(FrameType::error,
                           BodyBuilder().u16(50).u16(at_limit.size()).text(at_limit).bytes()),
            Errc::ok);
}

TEST(codec_body, WelcomeOfAnyOtherSizeIsMalformed) {
  for (std::size_t size : {std::size_t{0}, std::size_t{31}, std::size_t{33}, std::size_t{64}}) {
    const Vec body(size, std::byte{0});
    Welcome w;
    EXPECT_EQ(decode_welcome(body, w), Errc::malformed_frame) << size;
  }
}

TEST(codec_body, WelcomeWithNonzeroReservedIsMalformed) {
  for (std::size_t i = 1; i < 4; ++i) {
    Vec body = BodyBuilder().u8(1).u8(0).u16(0).u32(1).u32(2).u32(3).u32(4).u32(5).u64(6).bytes();
    body[i] = std::byte{1};
    Welcome w;
    EXPECT_EQ(decode_welcome(body, w), Errc::malformed_frame) << "byte " << i;
  }
}

// ---- malformed region bodies (PROTOCOL.md section 16) ---------------------------------

TEST(codec_body, RegionAllocOfAnyOtherSizeIsMalformed) {
  for (std::size_t size :
       {std::size_t{0}, std::size_t{1}, std::size_t{7}, std::size_t{9}, std::size_t{16}}) {
    const Vec body(size, std::byte{0x01});  // a nonzero size, so only the length is wrong
    EXPECT_EQ(decode_checked(FrameType::region_alloc, body), Errc::malformed_frame) << size;
  }
}

TEST(codec_body, RegionAllocOfSizeZeroIsMalformed) {
  EXPECT_EQ(decode_checked(FrameType::region_alloc, BodyBuilder().u64(0).bytes()),
            Errc::malformed_frame);
  EXPECT_EQ(decode_checked(FrameType::region_alloc, BodyBuilder().u64(1).bytes()), Errc::ok);
}

// A REGION body with each field given; valid unless a test changes one.
Vec region_grant_body(std::uint64_t region_id, std::uint64_t size, std::uint64_t writable) {
  return BodyBuilder().u64(region_id).u64(size).u8(writable).u8(0).u16(0).u32(0).bytes();
}

TEST(codec_body, RegionGrantOfAnyOtherSizeIsMalformed) {
  for (std::size_t size :
       {std::size_t{0}, std::size_t{8}, std::size_t{23}, std::size_t{25}, std::size_t{32}}) {
    Vec body(size, std::byte{0});
    // A nonzero id and size and writable = 1, so only the length is wrong.
    if (size > 0) body[0] = std::byte{1};
    if (size > 8) body[8] = std::byte{1};
    if (size > 16) body[16] = std::byte{1};
    EXPECT_EQ(decode_checked(FrameType::region, body), Errc::malformed_frame) << size;
  }
}

TEST(codec_body, RegionGrantWithRegionIdZeroIsMalformed) {
  EXPECT_EQ(decode_checked(FrameType::region, region_grant_body(0, 4096, 1)),
            Errc::malformed_frame);
}

TEST(codec_body, RegionGrantOfSizeZeroIsMalformed) {
  EXPECT_EQ(decode_checked(FrameType::region, region_grant_body(7, 0, 1)), Errc::malformed_frame);
}

TEST(codec_body, RegionGrantWritableAboveOneIsMalformed) {
  for (std::uint64_t writable : {2ull, 0x80ull, 0xFFull}) {
    EXPECT_EQ(decode_checked(FrameType::region, region_grant_body(7, 4096, writable)),
              Errc::malformed_frame)
        << writable;
  }
}

TEST(codec_body, RegionGrantWithNonzeroReservedIsMalformed) {
  for (std::size_t i = 17; i < kRegionGrantSize; ++i) {
    for (int value : {0x01, 0x80, 0xFF}) {
      Vec body = region_grant_body(7, 4096, 1);
      body[i] = static_cast<std::byte>(value);
      EXPECT_EQ(decode_checked(FrameType::region, body), Errc::malformed_frame)
          << "byte " << i << " = " << value;
    }
  }
}

// A SEND_REGION body with each field given; the defaults are a valid send to queue "jobs".
struct SendRegionFields {
  std::uint64_t region_id = 7;
  std::uint64_t offset = 0;
  std::uint64_t length = 16;
  std::uint64_t kind = 0;
  std::uint64_t release = 0;
  std::uint64_t reserved = 0;
  std::int32_t wait_ms = 0;
  std::uint64_t target = 0;
  std::string_view key = "jobs";
};

Vec send_region_body(const SendRegionFields& f) {
  return BodyBuilder()
      .u64(f.region_id)
      .u64(f.offset)
      .u64(f.length)
      .u8(f.kind)
      .u8(f.release)
      .u16(f.reserved)
      .i32(f.wait_ms)
      .u64(f.target)
      .key(f.key)
      .bytes();
}

// The same, addressed to pid 4242 or client 4242 (no key).
SendRegionFields to_peer(std::uint64_t kind) {
  return {.kind = kind, .target = 4242, .key = {}};
}

TEST(codec_body, SendRegionBuiltByHandDecodes) {
  EXPECT_EQ(decode_checked(FrameType::send_region, send_region_body({})), Errc::ok);
  EXPECT_EQ(decode_checked(FrameType::send_region, send_region_body({.release = 1})), Errc::ok);
  EXPECT_EQ(decode_checked(FrameType::send_region, send_region_body(to_peer(1))), Errc::ok);
  EXPECT_EQ(decode_checked(FrameType::send_region, send_region_body(to_peer(2))), Errc::ok);
}

TEST(codec_body, SendRegionWithRegionIdZeroIsMalformed) {
  for (auto f : {SendRegionFields{}, to_peer(1), to_peer(2)}) {
    f.region_id = 0;
    EXPECT_EQ(decode_checked(FrameType::send_region, send_region_body(f)), Errc::malformed_frame)
        << "kind " << f.kind;
  }
}

TEST(codec_body, SendRegionOfLengthZeroIsMalformed) {
  for (auto f : {SendRegionFields{}, to_peer(1), to_peer(2)}) {
    f.length = 0;
    EXPECT_EQ(decode_checked(FrameType::send_region, send_region_body(f)), Errc::malformed_frame)
        << "kind " << f.kind;
  }
}

TEST(codec_body, SendRegionSliceIsNotCheckedAgainstARegionSizeByTheCodec) {
  // Only the broker knows the region's size; the codec passes any nonzero slice on.
  EXPECT_EQ(decode_checked(FrameType::send_region,
                           send_region_body({.offset = 1ull << 40, .length = 1ull << 40})),
            Errc::ok);
}

TEST(codec_body, SendRegionReleaseAboveOneIsMalformed) {
  for (std::uint64_t release : {2ull, 0x80ull, 0xFFull}) {
    EXPECT_EQ(decode_checked(FrameType::send_region, send_region_body({.release = release})),
              Errc::malformed_frame)
        << release;
    auto f = to_peer(2);
    f.release = release;
    EXPECT_EQ(decode_checked(FrameType::send_region, send_region_body(f)), Errc::malformed_frame)
        << release;
  }
}

TEST(codec_body, SendRegionWithNonzeroReservedIsMalformed) {
  for (std::uint64_t reserved : {1ull, 0x100ull, 0xFFFFull}) {
    EXPECT_EQ(decode_checked(FrameType::send_region, send_region_body({.reserved = reserved})),
              Errc::malformed_frame)
        << reserved;
  }
  // Every reserved byte on its own (offsets 26 and 27).
  for (std::size_t i = 26; i < 28; ++i) {
    Vec body = send_region_body(to_peer(1));
    body[i] = std::byte{1};
    EXPECT_EQ(decode_checked(FrameType::send_region, body), Errc::malformed_frame) << "byte " << i;
  }
}

TEST(codec_body, SendRegionWithAnUnknownTargetKindIsMalformed) {
  for (std::uint64_t kind : {3ull, 4ull, 0x80ull, 0xFFull}) {
    EXPECT_EQ(decode_checked(FrameType::send_region, send_region_body(to_peer(kind))),
              Errc::malformed_frame)
        << kind;
    // Not a queue either, whatever the rest looks like.
    EXPECT_EQ(decode_checked(FrameType::send_region, send_region_body({.kind = kind})),
              Errc::malformed_frame)
        << kind;
  }
}

TEST(codec_body, SendRegionToQueueRejectsNonzeroTarget) {
  for (std::uint64_t target :
       {std::uint64_t{1}, std::uint64_t{4242}, std::numeric_limits<std::uint64_t>::max()}) {
    EXPECT_EQ(decode_checked(FrameType::send_region, send_region_body({.target = target})),
              Errc::malformed_frame)
        << target;
  }
}

TEST(codec_body, SendRegionToQueueRejectsNonzeroWait) {
  for (std::int32_t wait : {1, 1000, std::numeric_limits<std::int32_t>::max()}) {
    EXPECT_EQ(decode_checked(FrameType::send_region, send_region_body({.wait_ms = wait})),
              Errc::malformed_frame)
        << wait;
  }
}

TEST(codec_body, SendRegionToQueueWithoutAKeyIsInvalidKey) {
  EXPECT_EQ(decode_checked(FrameType::send_region, send_region_body({.key = {}})),
            Errc::invalid_key);
}

TEST(codec_body, SendRegionToPidMayWaitForTheProcess) {
  for (std::int32_t wait : {0, 1, std::numeric_limits<std::int32_t>::max()}) {
    auto f = to_peer(1);
    f.wait_ms = wait;
    SendRegion out;
    const Vec body = send_region_body(f);
    ASSERT_EQ(decode_send_region(body, out), Errc::ok) << wait;
    EXPECT_EQ(out.wait_ms, wait);
  }
}

TEST(codec_body, SendRegionWithNegativeWaitIsMalformed) {
  for (std::int32_t wait : {-1, -2, std::numeric_limits<std::int32_t>::min()}) {
    for (auto f : {SendRegionFields{}, to_peer(1), to_peer(2)}) {
      f.wait_ms = wait;
      EXPECT_EQ(decode_checked(FrameType::send_region, send_region_body(f)), Errc::malformed_frame)
          << "kind " << f.kind << ", wait " << wait;
    }
  }
}

TEST(codec_body, SendRegionPidTargetMustFitIn32Bits) {
  for (std::uint64_t target : {std::uint64_t{0x100000000}, std::uint64_t{0x1FFFFFFFF},
                               std::numeric_limits<std::uint64_t>::max()}) {
    auto pid = to_peer(1);
    pid.target = target;
    EXPECT_EQ(decode_checked(FrameType::send_region, send_region_body(pid)), Errc::malformed_frame)
        << target;
    // The same value is a fine client id.
    auto client = to_peer(2);
    client.target = target;
    EXPECT_EQ(decode_checked(FrameType::send_region, send_region_body(client)), Errc::ok) << target;
  }
  auto largest = to_peer(1);
  largest.target = 0xFFFFFFFFu;
  EXPECT_EQ(decode_checked(FrameType::send_region, send_region_body(largest)), Errc::ok);
}

TEST(codec_body, SendRegionToPidOrClientIdRejectsAKey) {
  for (std::uint64_t kind : {1ull, 2ull}) {
    auto f = to_peer(kind);
    f.key = "jobs";
    EXPECT_EQ(decode_checked(FrameType::send_region, send_region_body(f)), Errc::malformed_frame)
        << kind;
  }
}

TEST(codec_body, SendRegionToTargetZeroIsMalformed) {
  for (std::uint64_t kind : {1ull, 2ull}) {
    auto f = to_peer(kind);
    f.target = 0;
    EXPECT_EQ(decode_checked(FrameType::send_region, send_region_body(f)), Errc::malformed_frame)
        << kind;
  }
}

TEST(codec_body, SendRegionKeyLengthBeyondTheBodyIsMalformed) {
  Vec body = send_region_body({});
  body[40] = std::byte{5};  // key_len claims one byte more than "jobs"
  EXPECT_EQ(decode_checked(FrameType::send_region, body), Errc::malformed_frame);
  Vec peer = send_region_body(to_peer(2));
  peer[40] = std::byte{255};
  EXPECT_EQ(decode_checked(FrameType::send_region, peer), Errc::malformed_frame);
}

// A DELIVER_REGION body with each field given; the defaults are valid.
struct DeliverRegionFields {
  std::uint64_t region_id = 7;
  std::uint64_t region_size = 4096;
  std::uint64_t offset = 0;
  std::uint64_t length = 4096;
  std::string_view key = "jobs";
};

Vec deliver_region_body(const DeliverRegionFields& f) {
  BodyBuilder b;
  b.u32(4242)
      .u32(1000)
      .u64(3)
      .u64(0)
      .u64(f.region_id)
      .u64(f.region_size)
      .u64(f.offset)
      .u64(f.length);
  if (f.key.empty()) {
    b.u8(0);
  } else {
    b.key(f.key);
  }
  return b.bytes();
}

TEST(codec_body, DeliverRegionBuiltByHandDecodes) {
  EXPECT_EQ(decode_checked(FrameType::deliver_region, deliver_region_body({})), Errc::ok);
  EXPECT_EQ(decode_checked(FrameType::deliver_region, deliver_region_body({.key = {}})), Errc::ok);
}

TEST(codec_body, DeliverRegionWithRegionIdZeroIsMalformed) {
  EXPECT_EQ(decode_checked(FrameType::deliver_region, deliver_region_body({.region_id = 0})),
            Errc::malformed_frame);
}

TEST(codec_body, DeliverRegionOfLengthZeroIsMalformed) {
  EXPECT_EQ(decode_checked(FrameType::deliver_region, deliver_region_body({.length = 0})),
            Errc::malformed_frame);
  EXPECT_EQ(decode_checked(FrameType::deliver_region,
                           deliver_region_body({.region_size = 0, .length = 0})),
            Errc::malformed_frame);
}

TEST(codec_body, DeliverRegionSliceOutsideTheRegionIsMalformed) {
  const DeliverRegionFields outside[] = {
      {.region_size = 4096, .offset = 0, .length = 4097},  // too long
      {.region_size = 4096, .offset = 1, .length = 4096},  // ends one byte past
      {.region_size = 4096, .offset = 4096, .length = 1},  // starts at the end
      {.region_size = 4096, .offset = 4097, .length = 1},  // starts past the end
      {.region_size = 0, .offset = 0, .length = 1},        // empty region
      {.region_size = 4096, .offset = 1ull << 63, .length = 1},
  };
  for (const auto& f : outside) {
    EXPECT_EQ(decode_checked(FrameType::deliver_region, deliver_region_body(f)),
              Errc::malformed_frame)
        << "size " << f.region_size << ", offset " << f.offset << ", length " << f.length;
  }
}

TEST(codec_body, DeliverRegionSliceWhoseEndOverflowsIsMalformed) {
  // offset + length wraps around 2^64 to a value inside the region: a naive sum would pass.
  constexpr auto kMax = std::numeric_limits<std::uint64_t>::max();
  const DeliverRegionFields wrapping[] = {
      {.region_size = 4096, .offset = 2, .length = kMax - 1},  // sum wraps to 0
      {.region_size = 4096, .offset = 4095, .length = kMax},   // sum wraps to 4094
      {.region_size = 4096, .offset = kMax, .length = 1},      // sum wraps to 0
      {.region_size = 4096, .offset = kMax, .length = kMax},   // sum wraps to kMax - 1
      {.region_size = kMax, .offset = kMax, .length = 1},      // offset at the end
      {.region_size = kMax, .offset = 1, .length = kMax},      // sum wraps to 0
      {.region_size = kMax, .offset = kMax / 2 + 1, .length = kMax / 2 + 1},
  };
  for (const auto& f : wrapping) {
    EXPECT_EQ(decode_checked(FrameType::deliver_region, deliver_region_body(f)),
              Errc::malformed_frame)
        << "size " << f.region_size << ", offset " << f.offset << ", length " << f.length;
  }
}

TEST(codec_body, DeliverRegionKeyLengthBeyondTheBodyIsMalformed) {
  Vec body = deliver_region_body({});
  body[56] = std::byte{5};  // key_len claims one byte more than "jobs"
  EXPECT_EQ(decode_checked(FrameType::deliver_region, body), Errc::malformed_frame);
  Vec direct = deliver_region_body({.key = {}});
  direct[56] = std::byte{1};
  EXPECT_EQ(decode_checked(FrameType::deliver_region, direct), Errc::malformed_frame);
}

TEST(codec_body, RegionReleaseOfAnyOtherSizeIsMalformed) {
  for (std::size_t size :
       {std::size_t{0}, std::size_t{1}, std::size_t{7}, std::size_t{9}, std::size_t{16}}) {
    const Vec body(size, std::byte{0x01});  // a nonzero id, so only the length is wrong
    EXPECT_EQ(decode_checked(FrameType::region_release, body), Errc::malformed_frame) << size;
  }
}

TEST(codec_body, RegionReleaseOfRegionZeroIsMalformed) {
  EXPECT_EQ(decode_checked(FrameType::region_release, BodyBuilder().u64(0).bytes()),
            Errc::malformed_frame);
  EXPECT_EQ(decode_checked(FrameType::region_release, BodyBuilder().u64(1).bytes()), Errc::ok);
}

TEST(codec_body, RegionCreateOfSizeZeroIsMalformed) {
  EXPECT_EQ(
      decode_checked(FrameType::region_create, BodyBuilder().u64(0).u16(0600).key("w").bytes()),
      Errc::malformed_frame);
}

TEST(codec_body, RegionCreateModeBitsOutside0666AreMalformed) {
  for (int bit = 0; bit < 16; ++bit) {
    const std::uint64_t mode = 1ull << bit;
    const Vec body = BodyBuilder().u64(4096).u16(mode).key("w").bytes();
    const Errc want = (mode & 0666) != 0 ? Errc::ok : Errc::malformed_frame;
    EXPECT_EQ(decode_checked(FrameType::region_create, body), want) << "mode 0" << std::oct << mode;
  }
  for (std::uint64_t mode : {0777ull, 0667ull, 01666ull, 02666ull, 04666ull, 0xFFFFull}) {
    EXPECT_EQ(decode_checked(FrameType::region_create,
                             BodyBuilder().u64(4096).u16(mode).key("w").bytes()),
              Errc::malformed_frame)
        << "mode 0" << std::oct << mode;
  }
  for (std::uint64_t mode : {0ull, 0400ull, 0644ull, 0666ull}) {
    EXPECT_EQ(decode_checked(FrameType::region_create,
                             BodyBuilder().u64(4096).u16(mode).key("w").bytes()),
              Errc::ok)
        << "mode 0" << std::oct << mode;
  }
}

TEST(codec_body, RegionCreateKeyLengthBeyondTheBodyIsMalformed) {
  EXPECT_EQ(decode_checked(FrameType::region_create,
                           BodyBuilder().u64(4096).u16(0600).u8(4).text("abc").bytes()),
            Errc::malformed_frame);
}

TEST(codec_body, RegionAttachWritableAboveOneIsMalformed) {
  for (std::uint64_t writable : {2ull, 0x80ull, 0xFFull}) {
    EXPECT_EQ(decode_checked(FrameType::region_attach, BodyBuilder().u8(writable).key("w").bytes()),
              Errc::malformed_frame)
        << writable;
  }
}

TEST(codec_body, RegionAttachKeyLengthBeyondTheBodyIsMalformed) {
  EXPECT_EQ(decode_checked(FrameType::region_attach, BodyBuilder().u8(1).u8(4).text("abc").bytes()),
            Errc::malformed_frame);
}

TEST(codec_body, RegionRemoveKeyLengthBeyondTheBodyIsMalformed) {
  EXPECT_EQ(decode_checked(FrameType::region_remove, BodyBuilder().u8(4).text("abc").bytes()),
            Errc::malformed_frame);
  EXPECT_EQ(decode_checked(FrameType::region_remove, BodyBuilder().u8(255).bytes()),
            Errc::malformed_frame);
}

TEST(codec_body, RegionFramesWithZeroLengthKeyAreInvalidKey) {
  // Only DELIVER_REGION (a direct message) and SEND_REGION to a pid or client may go without.
  EXPECT_EQ(decode_checked(FrameType::send_region, send_region_body({.key = {}})),
            Errc::invalid_key);
  EXPECT_EQ(decode_checked(FrameType::region_create, BodyBuilder().u64(1).u16(0600).u8(0).bytes()),
            Errc::invalid_key);
  EXPECT_EQ(decode_checked(FrameType::region_attach, BodyBuilder().u8(0).u8(0).bytes()),
            Errc::invalid_key);
  EXPECT_EQ(decode_checked(FrameType::region_remove, BodyBuilder().u8(0).bytes()),
            Errc::invalid_key);
}

TEST(codec_body, RegionFrameKeyWithAForbiddenCharacterIsInvalidKey) {
  for (std::string_view key : {std::string_view("a b"), std::string_view("a*"),
                               std::string_view("jobs\n"), std::string_view("\xc3\xa9t\xc3\xa9"),
                               std::string_view("a\0b", 3), std::string_view("q@host")}) {
    EXPECT_EQ(decode_checked(FrameType::send_region, send_region_body({.key = key})),
              Errc::invalid_key)
        << "send_region " << key;
    EXPECT_EQ(decode_checked(FrameType::deliver_region, deliver_region_body({.key = key})),
              Errc::invalid_key)
        << "deliver_region " << key;
    EXPECT_EQ(
        decode_checked(FrameType::region_create, BodyBuilder().u64(1).u16(0600).key(key).bytes()),
        Errc::invalid_key)
        << "region_create " << key;
    EXPECT_EQ(decode_checked(FrameType::region_attach, BodyBuilder().u8(1).key(key).bytes()),
              Errc::invalid_key)
        << "region_attach " << key;
    EXPECT_EQ(decode_checked(FrameType::region_remove, BodyBuilder().key(key).bytes()),
              Errc::invalid_key)
        << "region_remove " << key;
  }
}

// ---- keys -----------------------------------------------------------------------------

TEST(codec_key, AcceptsEveryAllowedCharacter) {
  EXPECT_TRUE(is_valid_key("abcdefghijklmnopqrstuvwxyz"));
  EXPECT_TRUE(is_valid_key("ABCDEFGHIJKLMNOPQRSTUVWXYZ"));
  EXPECT_TRUE(is_valid_key("0123456789"));
  EXPECT_TRUE(is_valid_key("._:/-"));
  EXPECT_TRUE(is_valid_key("x"));
  EXPECT_TRUE(is_valid_key("/"));
  EXPECT_TRUE(is_valid_key("app/jobs.high:v2_a-b"));
}

TEST(codec_key, AcceptsUpTo255Bytes) {
  EXPECT_TRUE(is_valid_key(std::string(255, 'a')));
  EXPECT_FALSE(is_valid_key(std::string(256, 'a')));
}

TEST(codec_key, RejectsEmptyKey) {
  EXPECT_FALSE(is_valid_key(""));
}

TEST(codec_key, RejectsEveryOtherByte) {
  const std::string_view allowed =
      "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:/-";
  for (int c = 0; c < 256; ++c) {
    const char ch = static_cast<char>(c);
    const std::string key = std::string("a") + ch + "b";
    EXPECT_EQ(is_valid_key(key), allowed.find(ch) != std::string_view::npos) << "byte " << c;
  }
}

// ---- ByteBuffer -----------------------------------------------------------------------

Vec pattern(std::size_t n, std::size_t seed = 0) {
  Vec v(n);
  for (std::size_t i = 0; i < n; ++i)
    v[i] = static_cast<std::byte>((i + seed) * 31 % 251);
  return v;
}

void fill(ByteBuffer& b, const Vec& data) {
  auto dst = b.append(data.size());
  ASSERT_EQ(dst.size(), data.size());
  std::copy(data.begin(), data.end(), dst.begin());
}

bool holds(const ByteBuffer& b, const Vec& want) {
  const auto r = b.readable();
  return std::equal(r.begin(), r.end(), want.begin(), want.end());
}

TEST(codec_byte_buffer, NewBufferIsEmpty) {
  ByteBuffer b;
  EXPECT_TRUE(b.empty());
  EXPECT_EQ(b.size(), 0u);
  EXPECT_EQ(b.capacity(), 0u);
  EXPECT_TRUE(b.readable().empty());
}

TEST(codec_byte_buffer, PrepareGivesAtLeastTheRequestedSpaceAndCommitPublishesIt) {
  ByteBuffer b;
  auto space = b.prepare(10);
  ASSERT_GE(space.size(), 10u);
  EXPECT_TRUE(b.empty());  // prepared bytes are not readable until committed
  const Vec data = pattern(6);
  std::copy(data.begin(), data.end(), space.begin());
  b.commit(6);
  EXPECT_EQ(b.size(), 6u);
  EXPECT_TRUE(holds(b, data));
}

TEST(codec_byte_buffer, AppendReturnsExactlyTheRequestedBytes) {
  ByteBuffer b;
  EXPECT_EQ(b.append(5).size(), 5u);
  EXPECT_EQ(b.append(0).size(), 0u);
  EXPECT_EQ(b.size(), 5u);
}

TEST(codec_byte_buffer, ConsumeDropsBytesFromTheFront) {
  ByteBuffer b;
  const Vec data = pattern(100);
  fill(b, data);
  b.consume(40);
  EXPECT_EQ(b.size(), 60u);
  EXPECT_TRUE(holds(b, Vec(data.begin() + 40, data.end())));
}

TEST(codec_byte_buffer, ConsumingEverythingRewindsSoSpaceIsReused) {
  ByteBuffer b;
  fill(b, pattern(100));
  const auto cap = b.capacity();
  const auto* start = b.readable().data();
  b.consume(100);
  EXPECT_TRUE(b.empty());
  auto space = b.prepare(cap);
  EXPECT_EQ(b.capacity(), cap);
  EXPECT_EQ(space.data(), start);
  EXPECT_EQ(space.size(), cap);
}

TEST(codec_byte_buffer, CompactionKeepsUnreadContentWithoutGrowing) {
  ByteBuffer b;
  b.prepare(1);
  const auto cap = b.capacity();
  const Vec data = pattern(cap);
  fill(b, data);
  b.consume(100);
  // No room at the tail, 100 bytes free at the front: compaction, not growth.
  auto space = b.prepare(60);
  EXPECT_EQ(b.capacity(), cap);
  EXPECT_GE(space.size(), 60u);
  EXPECT_TRUE(holds(b, Vec(data.begin() + 100, data.end())));
  const Vec more = pattern(60, 7);
  std::copy(more.begin(), more.end(), space.begin());
  b.commit(60);
  Vec want(data.begin() + 100, data.end());
  want.insert(want.end(), more.begin(), more.end());
  EXPECT_TRUE(holds(b, want));
}

TEST(codec_byte_buffer, GrowthKeepsUnreadContent) {
  ByteBuffer b;
  const Vec data = pattern(3000);
  fill(b, data);
  b.consume(1000);
  const auto cap = b.capacity();
  auto space = b.prepare(cap);
  EXPECT_GT(b.capacity(), cap);
  EXPECT_GE(space.size(), cap);
  EXPECT_TRUE(holds(b, Vec(data.begin() + 1000, data.end())));
}

TEST(codec_byte_buffer, ShrinkToReleasesMemoryAndKeepsContent) {
  ByteBuffer b;
  const Vec data = pattern(100'000);
  fill(b, data);
  b.consume(99'900);
  ASSERT_GT(b.capacity(), 4096u);
  b.shrink_to(4096);
  EXPECT_EQ(b.capacity(), 4096u);
  EXPECT_TRUE(holds(b, Vec(data.begin() + 99'900, data.end())));
  fill(b, pattern(10));  // still usable afterwards
  EXPECT_EQ(b.size(), 110u);
}

TEST(codec_byte_buffer, ShrinkToKeepsTheBufferWhenLiveDataDoesNotFit) {
  ByteBuffer b;
  const Vec data = pattern(10'000);
  fill(b, data);
  const auto cap = b.capacity();
  b.shrink_to(4096);
  EXPECT_EQ(b.capacity(), cap);
  EXPECT_TRUE(holds(b, data));
}

TEST(codec_byte_buffer, ShrinkToLargerThanCapacityDoesNothing) {
  ByteBuffer b;
  fill(b, pattern(10));
  const auto cap = b.capacity();
  b.shrink_to(cap * 4);
  EXPECT_EQ(b.capacity(), cap);
  EXPECT_EQ(b.size(), 10u);
}

TEST(codec_byte_buffer, ClearEmptiesAndSwapExchanges) {
  ByteBuffer a, b;
  const Vec da = pattern(10), db = pattern(20, 3);
  fill(a, da);
  fill(b, db);
  a.swap(b);
  EXPECT_TRUE(holds(a, db));
  EXPECT_TRUE(holds(b, da));
  a.clear();
  EXPECT_TRUE(a.empty());
  EXPECT_GT(a.capacity(), 0u);
}

// ---- addresses ------------------------------------------------------------------------

TEST(codec_address, UnixPrefixGivesAUnixPath) {
  std::string error;
  const auto a = parse_address("unix:/run/qbus/qbus.sock", error);
  ASSERT_TRUE(a) << error;
  EXPECT_EQ(a->kind, Address::Kind::unix_socket);
  EXPECT_EQ(a->path, "/run/qbus/qbus.sock");
  EXPECT_EQ(a->to_string(), "unix:/run/qbus/qbus.sock");
}

TEST(codec_address, BareAbsolutePathIsAUnixAddress) {
  std::string error;
  const auto a = parse_address("/tmp/q.sock", error);
  ASSERT_TRUE(a) << error;
  EXPECT_EQ(a->kind, Address::Kind::unix_socket);
  EXPECT_EQ(a->path, "/tmp/q.sock");
  EXPECT_EQ(a->to_string(), "unix:/tmp/q.sock");
}

TEST(codec_address, TcpHostAndPort) {
  std::string error;
  const auto a = parse_address("tcp:127.0.0.1:7878", error);
  ASSERT_TRUE(a) << error;
  EXPECT_EQ(a->kind, Address::Kind::tcp);
  EXPECT_EQ(a->host, "127.0.0.1");
  EXPECT_EQ(a->port, 7878);
  EXPECT_EQ(a->to_string(), "tcp:127.0.0.1:7878");
  const auto named = parse_address("tcp:localhost:65535", error);
  ASSERT_TRUE(named) << error;
  EXPECT_EQ(named->host, "localhost");
  EXPECT_EQ(named->port, 65535);
}

TEST(codec_address, TcpBracketedIpv6HostLosesItsBrackets) {
  std::string error;
  const auto a = parse_address("tcp:[::1]:7878", error);
  ASSERT_TRUE(a) << error;
  EXPECT_EQ(a->kind, Address::Kind::tcp);
  EXPECT_EQ(a->host, "::1");
  EXPECT_EQ(a->port, 7878);
}

TEST(codec_address, TcpBadPortIsRejected) {
  for (std::string_view text : {"tcp:host:0", "tcp:host:65536", "tcp:host:http", "tcp:host:",
                                "tcp:host:80x", "tcp:host:-1", "tcp:host:99999999999"}) {
    std::string error;
    EXPECT_FALSE(parse_address(text, error)) << text;
    EXPECT_NE(error.find("port"), std::string::npos) << text << ": " << error;
  }
}

TEST(codec_address, TcpWithoutHostOrPortIsRejected) {
  for (std::string_view text : {"tcp:", "tcp:host", "tcp::80"}) {
    std::string error;
    EXPECT_FALSE(parse_address(text, error)) << text;
    EXPECT_FALSE(error.empty()) << text;
  }
}

TEST(codec_address, MissingSchemeIsRejected) {
  for (std::string_view text : {"", "qbus.sock", "relative/path.sock", "udp:1.2.3.4:5"}) {
    std::string error;
    EXPECT_FALSE(parse_address(text, error)) << text;
    EXPECT_NE(error.find("unix: or tcp:"), std::string::npos) << text << ": " << error;
  }
}

TEST(codec_address, EmptyUnixPathIsRejected) {
  std::string error;
  EXPECT_FALSE(parse_address("unix:", error));
  EXPECT_NE(error.find("empty"), std::string::npos) << error;
}

TEST(codec_address, UnixPathMustFitInSockaddrUn) {
  std::string error;
  const std::string longest = "/" + std::string(106, 'p');  // 107 bytes + NUL = 108
  EXPECT_TRUE(parse_address("unix:" + longest, error)) << error;
  EXPECT_TRUE(parse_address(longest, error)) << error;
  const std::string too_long = longest + "p";
  EXPECT_FALSE(parse_address("unix:" + too_long, error));
  EXPECT_NE(error.find("longer than 107"), std::string::npos) << error;
  error.clear();
  EXPECT_FALSE(parse_address(too_long, error));
  EXPECT_FALSE(error.empty());
}

// ---- error codes ----------------------------------------------------------------------

const std::pair<Errc, std::string_view> kAllCodes[] = {
    {Errc::ok, "ok"},
    {Errc::bad_magic, "bad_magic"},
    {Errc::unsupported_version, "unsupported_version"},
    {Errc::frame_too_large, "frame_too_large"},
    {Errc::malformed_header, "malformed_header"},
    {Errc::malformed_frame, "malformed_frame"},
    {Errc::unknown_frame_type, "unknown_frame_type"},
    {Errc::handshake_required, "handshake_required"},
    {Errc::handshake_timeout, "handshake_timeout"},
    {Errc::unexpected_frame, "unexpected_frame"},
    {Errc::invalid_key, "invalid_key"},
    {Errc::payload_too_large, "payload_too_large"},
    {Errc::queue_full, "queue_full"},
    {Errc::timeout, "timeout"},
    {Errc::quota_exceeded, "quota_exceeded"},
    {Errc::too_many_receives, "too_many_receives"},
    {Errc::queue_conflict, "queue_conflict"},
    {Errc::too_many_queues, "too_many_queues"},
    {Errc::too_many_connections, "too_many_connections"},
    {Errc::queue_deleted, "queue_deleted"},
    {Errc::no_such_peer, "no_such_peer"},
    {Errc::peer_busy, "peer_busy"},
    {Errc::reply_expired, "reply_expired"},
    {Errc::not_inbox_owner, "not_inbox_owner"},
    {Errc::auth_failed, "auth_failed"},
    {Errc::too_many_requests, "too_many_requests"},
    {Errc::no_such_region, "no_such_region"},
    {Errc::permission_denied, "permission_denied"},
    {Errc::disconnected_by_operator, "disconnected_by_operator"},
    {Errc::internal_error, "internal_error"},
    {Errc::shutting_down, "shutting_down"},
    {Errc::connect_failed, "connect_failed"},
    {Errc::connection_closed, "connection_closed"},
    {Errc::protocol_violation, "protocol_violation"},
    {Errc::invalid_argument, "invalid_argument"},
    {Errc::io_error, "io_error"},
    {Errc::bad_address, "bad_address"},
};

TEST(codec_errc, WireCodesKeepTheirPublishedValues) {
  const std::pair<Errc, int> values[] = {
      {Errc::ok, 0},
      {Errc::bad_magic, 1},
      {Errc::unsupported_version, 2},
      {Errc::frame_too_large, 3},
      {Errc::malformed_header, 4},
      {Errc::malformed_frame, 10},
      {Errc::unknown_frame_type, 11},
      {Errc::handshake_required, 12},
      {Errc::handshake_timeout, 13},
      {Errc::unexpected_frame, 14},
      {Errc::invalid_key, 20},
      {Errc::payload_too_large, 21},
      {Errc::queue_full, 22},
      {Errc::timeout, 23},
      {Errc::quota_exceeded, 24},
      {Errc::too_many_receives, 25},
      {Errc::queue_conflict, 26},
      {Errc::too_many_queues, 27},
      {Errc::too_many_connections, 28},
      {Errc::queue_deleted, 29},
      {Errc::no_such_peer, 30},
      {Errc::peer_busy, 31},
      {Errc::reply_expired, 32},
      {Errc::not_inbox_owner, 33},
      {Errc::auth_failed, 34},
      {Errc::too_many_requests, 35},
      {Errc::no_such_region, 36},
      {Errc::permission_denied, 37},
      {Errc::disconnected_by_operator, 38},
      {Errc::internal_error, 50},
      {Errc::shutting_down, 51},
      {Errc::connect_failed, 200},
      {Errc::connection_closed, 201},
      {Errc::protocol_violation, 202},
      {Errc::invalid_argument, 203},
      {Errc::io_error, 204},
      {Errc::bad_address, 205},
  };
  for (const auto& [code, value] : values) {
    EXPECT_EQ(static_cast<int>(code), value) << errc_name(code);
  }
}

TEST(codec_errc, EveryListedCodeHasItsName) {
  for (const auto& [code, name] : kAllCodes) {
    EXPECT_EQ(errc_name(code), name) << static_cast<int>(code);
    EXPECT_TRUE(errc_is_known(static_cast<std::uint16_t>(code))) << name;
  }
}

TEST(codec_errc, UnlistedCodesAreUnknown) {
  for (int v : {5, 9, 15, 19, 39, 49, 52, 199, 206, 1000, 65535}) {
    EXPECT_EQ(errc_name(static_cast<Errc>(v)), "unknown") << v;
    EXPECT_FALSE(errc_is_known(static_cast<std::uint16_t>(v))) << v;
  }
}

TEST(codec_errc, DirectMessagingAndAuthCodesHaveTheirNames) {
  EXPECT_EQ(errc_name(static_cast<Errc>(30)), "no_such_peer");
  EXPECT_EQ(errc_name(static_cast<Errc>(31)), "peer_busy");
  EXPECT_EQ(errc_name(static_cast<Errc>(32)), "reply_expired");
  EXPECT_EQ(errc_name(static_cast<Errc>(33)), "not_inbox_owner");
  EXPECT_EQ(errc_name(static_cast<Errc>(34)), "auth_failed");
  EXPECT_EQ(errc_name(static_cast<Errc>(35)), "too_many_requests");
  for (int v = 30; v <= 35; ++v) {
    EXPECT_TRUE(errc_is_known(static_cast<std::uint16_t>(v))) << v;
  }
}

// auth_failed ends the connection, but as a handshake refusal (sent before WELCOME), like
// handshake_required: errc_is_fatal() marks only the framing errors.
TEST(codec_errc, OnlyFramingErrorsAreFatal) {
  for (const auto& [code, name] : kAllCodes) {
    const auto v = static_cast<int>(code);
    EXPECT_EQ(errc_is_fatal(code), v >= 1 && v <= 4) << name;
  }
  static_assert(errc_is_fatal(Errc::bad_magic) && !errc_is_fatal(Errc::timeout));
}

TEST(codec_errc, OverflowPoliciesHaveStableNames) {
  EXPECT_EQ(overflow_name(Overflow::use_default), "default");
  EXPECT_EQ(overflow_name(Overflow::reject), "reject");
  EXPECT_EQ(overflow_name(Overflow::drop_oldest), "drop_oldest");
  EXPECT_EQ(overflow_name(Overflow::block), "block");
  EXPECT_EQ(overflow_name(static_cast<Overflow>(4)), "unknown");
}

}  // namespace
}  // namespace qbus::proto
