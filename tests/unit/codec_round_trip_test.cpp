// Round trips of the messaging frames (PROTOCOL.md section 3): encode, decode, compare, and
// the fields at their specified offsets.
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
  EXPECT_EQ(body_size(ErrorBody{0, longer}), kErrorFixed + kMaxErrorTextSize);
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
  EXPECT_EQ(f.body.size(), kSendFixed + 17 + 7);
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
  EXPECT_EQ(f.body.size(), kDeliverFixed + 4 + 9);
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
  EXPECT_EQ(f.body.size(), kSendDirectFixed + 9);
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
    EXPECT_EQ(f.body.size(), kRequestFixed + 8 + 8);
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

}  // namespace
}  // namespace qbus::proto
