// Malformed and edge-case bodies of the messaging frames, built byte by byte.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "codec_test_support.hpp"

namespace qbus::proto {
namespace {

using namespace codec_test;

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
      {"purge", FrameType::purge, BodyBuilder().key("jobs").bytes(), 5},
      {"delete", FrameType::delete_queue, BodyBuilder().key("jobs").bytes(), 5},
      {"dropped", FrameType::dropped, BodyBuilder().u64(12).bytes(), 8},
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

}  // namespace
}  // namespace qbus::proto
