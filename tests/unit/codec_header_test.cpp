// Unit tests for the frame header and keys (proto/PROTOCOL.md sections 2-4).
//
// Suites are named codec_* so that `ctest -R codec` selects all of them.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "codec_test_support.hpp"

namespace qbus::proto {
namespace {

using namespace codec_test;

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
  for (int type : {0, 36, 42, 200, 255}) {
    const auto r = decode_header(header_bytes(static_cast<std::uint8_t>(type), 0, 9, 3), 100);
    ASSERT_EQ(r.status, HeaderStatus::complete) << "type " << type;
    EXPECT_EQ(static_cast<int>(r.header.type), type);
    EXPECT_EQ(r.header.body_size, 3u);
    EXPECT_EQ(r.header.correlation, 9u);
    EXPECT_FALSE(is_known_type(static_cast<std::uint8_t>(type)));
    EXPECT_EQ(frame_type_name(static_cast<FrameType>(type)), "unknown");
  }
}

TEST(codec_header, KnownTypesAreOneToThirtyFiveWithStableNames) {
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
      {FrameType::region_remove, "region_remove"},
      {FrameType::purge, "purge"},
      {FrameType::delete_queue, "delete"},
      {FrameType::dropped, "dropped"},
      {FrameType::properties, "properties"},
      {FrameType::delivery_info, "delivery_info"},
      {FrameType::ack, "ack"},
      {FrameType::nack, "nack"},
      {FrameType::extend, "extend"},
      {FrameType::subscribe, "subscribe"},
      {FrameType::unsubscribe, "unsubscribe"},
      {FrameType::declare_ex, "declare_ex"},
      {FrameType::publish, "publish"},
      {FrameType::subscribe_subject, "subscribe_subject"}};
  int expected_value = 1;
  for (const auto& [type, name] : names) {
    EXPECT_EQ(static_cast<int>(type), expected_value++);
    EXPECT_TRUE(is_known_type(static_cast<std::uint8_t>(type)));
    EXPECT_EQ(frame_type_name(type), name);
  }
  EXPECT_EQ(expected_value, 36);
  EXPECT_FALSE(is_known_type(0));
  EXPECT_FALSE(is_known_type(36));
}

// PROTOCOL.md section 3's, 17's and 18's tables and the fixed parts of sections 3.x, 16.x, 17.x
// and 18.x,
// written out here so that a row or a field description that drifts from the specification fails.
TEST(codec_header, FrameTraitsMatchTheProtocolTable) {
  constexpr auto in = Direction::to_broker;
  constexpr auto out = Direction::to_client;
  struct Row {
    FrameType type;
    Direction direction;
    std::uint16_t flags;
    std::size_t fixed;
    std::uint8_t min_version = 1;
  };
  const Row rows[] = {
      {FrameType::hello, in, 0, 8},
      {FrameType::welcome, out, 0, 32},
      {FrameType::error, out, 0, 4},
      {FrameType::ok, out, 0, 0},
      {FrameType::send, in, kFlagConfirm, 1},
      {FrameType::receive, in, kFlagAck, 9},
      {FrameType::deliver, out, kFlagLast | kFlagMore, 25},
      {FrameType::declare, in, kFlagConfirm, 14},
      {FrameType::ping, in, 0, 0},
      {FrameType::pong, out, 0, 0},
      {FrameType::send_direct, in, kFlagConfirm, 24},
      {FrameType::receive_direct, in, 0, 8},
      {FrameType::claim_inbox, in, 0, 0},
      {FrameType::request, in, 0, 5},
      {FrameType::region_alloc, in, 0, 8},
      {FrameType::region, out, 0, 24},
      {FrameType::send_region, in, kFlagConfirm, 41},
      {FrameType::deliver_region, out, kFlagLast, 57},
      {FrameType::region_release, in, kFlagConfirm, 8},
      {FrameType::region_create, in, 0, 11},
      {FrameType::region_attach, in, 0, 2},
      {FrameType::region_remove, in, 0, 1},
      {FrameType::purge, in, 0, 1},
      {FrameType::delete_queue, in, 0, 1},
      {FrameType::dropped, out, 0, 8},
      // Version 2 (section 17).
      {FrameType::properties, in, 0, 12, 2},
      {FrameType::delivery_info, out, 0, 16, 2},
      {FrameType::ack, in, kFlagConfirm, 16, 2},
      {FrameType::nack, in, kFlagConfirm, 16, 2},
      {FrameType::extend, in, kFlagConfirm, 16, 2},
      {FrameType::subscribe, in, 0, 9, 2},
      {FrameType::unsubscribe, in, 0, 8, 2},
      {FrameType::declare_ex, in, kFlagConfirm, 30, 2},
      // Section 18.
      {FrameType::publish, in, kFlagConfirm | kFlagRetain, 1, 2},
      {FrameType::subscribe_subject, in, kFlagConfirm, 18, 2},
  };
  ASSERT_EQ(std::size(rows), std::size(kFrameTraits));
  for (const auto& want : rows) {
    const FrameTraits* row = frame_traits(want.type);
    ASSERT_NE(row, nullptr) << static_cast<int>(want.type);
    EXPECT_EQ(row->type, want.type);
    EXPECT_EQ(row->direction, want.direction) << row->name;
    EXPECT_EQ(row->flags, want.flags) << row->name;
    EXPECT_EQ(row->fixed_size, want.fixed) << row->name;
    EXPECT_EQ(row->carries_fd, carries_fd(want.type)) << row->name;
    EXPECT_EQ(row->min_version, want.min_version) << row->name;
  }
  EXPECT_EQ(frame_traits(static_cast<FrameType>(0)), nullptr);
  EXPECT_EQ(frame_traits(static_cast<FrameType>(36)), nullptr);
}

TEST(codec_header, FlagBitsHaveTheirPublishedValues) {
  EXPECT_EQ(kFlagConfirm, 0x0001);
  EXPECT_EQ(kFlagLast, 0x0002);
  EXPECT_EQ(kFlagMore, 0x0004);
  EXPECT_EQ(kFlagAck, 0x0008);
  EXPECT_EQ(kFlagRetain, 0x0010);
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

}  // namespace
}  // namespace qbus::proto
