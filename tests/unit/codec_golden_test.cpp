// Pins every frame type's encoding to exact bytes.
//
// The expected bytes were produced by the codec as it was before frames were described by
// field tables (issue 11), so this test is the proof that the wire format did not move:
// any change to a layout, a field order, a width or a padding byte fails here by name.
#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <set>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "codec_test_support.hpp"

namespace qbus::proto {
namespace {

using namespace codec_test;

struct Golden {
  FrameType type;
  const char* what;
  void (*append)(ByteBuffer&);
  std::string_view bytes;  // header and body, as hex
};

// One frame per type (two where a target kind changes the layout's use), with field values
// whose bytes differ from one another so a moved or swapped field shows.
// One header block: "k" = "v".
constexpr std::byte kHeaderBlock[] = {std::byte{1}, std::byte{'k'}, std::byte{1}, std::byte{0},
                                      std::byte{'v'}};
constexpr Bytes kHeaderKV{kHeaderBlock};

const Golden kGolden[] = {
    {FrameType::hello, "hello",
     [](ByteBuffer& b) {
       append_hello(b, 0x0102030405060708, Hello{1, 1, "cli", "tok"});
     },
     "51 42 55 53 01 01 00 00 08 07 06 05 04 03 02 01 0e 00 00 00 00 00 00 00"
     " 01 01 03 00 03 00 00 00 63 6c 69 74 6f 6b"},
    {FrameType::welcome, "welcome",
     [](ByteBuffer& b) {
       append_welcome(b, 2,
                      Welcome{1, 0x00100000, 0x000F0000, 4242, 1000, 1001, 0x1122334455667788});
     },
     "51 42 55 53 01 02 00 00 02 00 00 00 00 00 00 00 20 00 00 00 00 00 00 00"
     " 01 00 00 00 00 00 10 00 00 00 0f 00 92 10 00 00 e8 03 00 00 e9 03 00 00 88 77 66 55 44 33 "
     "22 11"},
    {FrameType::error, "error",
     [](ByteBuffer& b) { append_error(b, 3, Errc::queue_full, "queue jobs is full"); },
     "51 42 55 53 01 03 00 00 03 00 00 00 00 00 00 00 16 00 00 00 00 00 00 00"
     " 16 00 12 00 71 75 65 75 65 20 6a 6f 62 73 20 69 73 20 66 75 6c 6c"},
    {FrameType::ok, "ok", [](ByteBuffer& b) { append_empty(b, FrameType::ok, 4); },
     "51 42 55 53 01 04 00 00 04 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00"},
    {FrameType::send, "send",
     [](ByteBuffer& b) { append_send(b, 5, kFlagConfirm, "jobs", bytes_of("hi")); },
     "51 42 55 53 01 05 01 00 05 00 00 00 00 00 00 00 07 00 00 00 00 00 00 00"
     " 04 6a 6f 62 73 68 69"},
    {FrameType::receive, "receive",
     [](ByteBuffer& b) {
       append_receive(b, 6, Receive{250, 3, "jobs"});
     },
     "51 42 55 53 01 06 00 00 06 00 00 00 00 00 00 00 0d 00 00 00 00 00 00 00"
     " fa 00 00 00 03 00 00 00 04 6a 6f 62 73"},
    {FrameType::deliver, "deliver",
     [](ByteBuffer& b) {
       append_deliver(b, 7, kFlagLast, Deliver{4242, 1000, 0x0A0B0C0D, 99, "jobs", bytes_of("hi")});
     },
     "51 42 55 53 01 07 02 00 07 00 00 00 00 00 00 00 1f 00 00 00 00 00 00 00"
     " 92 10 00 00 e8 03 00 00 0d 0c 0b 0a 00 00 00 00 63 00 00 00 00 00 00 00 04 6a 6f 62 73 68 "
     "69"},
    {FrameType::declare, "declare",
     [](ByteBuffer& b) {
       append_declare(b, 8, kFlagConfirm, Declare{10, 1u << 20, Overflow::drop_oldest, "jobs"});
     },
     "51 42 55 53 01 08 01 00 08 00 00 00 00 00 00 00 12 00 00 00 00 00 00 00"
     " 0a 00 00 00 00 00 10 00 00 00 00 00 02 04 6a 6f 62 73"},
    {FrameType::ping, "ping", [](ByteBuffer& b) { append_empty(b, FrameType::ping, 9); },
     "51 42 55 53 01 09 00 00 09 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00"},
    {FrameType::pong, "pong", [](ByteBuffer& b) { append_empty(b, FrameType::pong, 10); },
     "51 42 55 53 01 0a 00 00 0a 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00"},
    {FrameType::send_direct, "send_direct",
     [](ByteBuffer& b) {
       append_send_direct(b, 11, kFlagConfirm,
                          SendDirect{TargetKind::client_id, 500, 77, 12, bytes_of("re")});
     },
     "51 42 55 53 01 0b 01 00 0b 00 00 00 00 00 00 00 1a 00 00 00 00 00 00 00"
     " 02 00 00 00 f4 01 00 00 4d 00 00 00 00 00 00 00 0c 00 00 00 00 00 00 00 72 65"},
    {FrameType::receive_direct, "receive_direct",
     [](ByteBuffer& b) {
       append_receive_direct(b, 12, ReceiveDirect{-1, 8});
     },
     "51 42 55 53 01 0c 00 00 0c 00 00 00 00 00 00 00 08 00 00 00 00 00 00 00"
     " ff ff ff ff 08 00 00 00"},
    {FrameType::claim_inbox, "claim_inbox",
     [](ByteBuffer& b) { append_empty(b, FrameType::claim_inbox, 13); },
     "51 42 55 53 01 0d 00 00 0d 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00"},
    {FrameType::request, "request",
     [](ByteBuffer& b) {
       append_request(b, 14, Request{1000, "echo", bytes_of("ping?")});
     },
     "51 42 55 53 01 0e 00 00 0e 00 00 00 00 00 00 00 0e 00 00 00 00 00 00 00"
     " e8 03 00 00 04 65 63 68 6f 70 69 6e 67 3f"},
    {FrameType::region_alloc, "region_alloc",
     [](ByteBuffer& b) { append_region_alloc(b, 15, RegionAlloc{65536}); },
     "51 42 55 53 01 0f 00 00 0f 00 00 00 00 00 00 00 08 00 00 00 00 00 00 00"
     " 00 00 01 00 00 00 00 00"},
    {FrameType::region, "region",
     [](ByteBuffer& b) {
       append_region_grant(b, 16, RegionGrantBody{5, 65536, true});
     },
     "51 42 55 53 01 10 00 00 10 00 00 00 00 00 00 00 18 00 00 00 00 00 00 00"
     " 05 00 00 00 00 00 00 00 00 00 01 00 00 00 00 00 01 00 00 00 00 00 00 00"},
    {FrameType::send_region, "send_region to a queue",
     [](ByteBuffer& b) {
       append_send_region(b, 17, kFlagConfirm,
                          SendRegion{5, 16, 32, RegionTarget::queue, true, 0, 0, "jobs"});
     },
     "51 42 55 53 01 11 01 00 11 00 00 00 00 00 00 00 2d 00 00 00 00 00 00 00"
     " 05 00 00 00 00 00 00 00 10 00 00 00 00 00 00 00 20 00 00 00 00 00 00 00 00 01 00 00 00 00 "
     "00 00 00 00 00 00 00 00 00 00 04 6a 6f 62 73"},
    {FrameType::send_region, "send_region to a pid",
     [](ByteBuffer& b) {
       append_send_region(b, 17, 0,
                          SendRegion{6, 0, 4096, RegionTarget::pid, false, 100, 4242, ""});
     },
     "51 42 55 53 01 11 00 00 11 00 00 00 00 00 00 00 29 00 00 00 00 00 00 00"
     " 06 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 10 00 00 00 00 00 00 01 00 00 00 64 00 "
     "00 00 92 10 00 00 00 00 00 00 00"},
    {FrameType::deliver_region, "deliver_region",
     [](ByteBuffer& b) {
       append_deliver_region(b, 18, kFlagLast,
                             DeliverRegion{4242, 1000, 7, 0x31, 5, 65536, 16, 32, "jobs"});
     },
     "51 42 55 53 01 12 02 00 12 00 00 00 00 00 00 00 3d 00 00 00 00 00 00 00"
     " 92 10 00 00 e8 03 00 00 07 00 00 00 00 00 00 00 31 00 00 00 00 00 00 00 05 00 00 00 00 00 "
     "00 00 00 00 01 00 00 00 00 00 10 00 00 00 00 00 00 00 20 00 00 00 00 00 00 00 04 6a 6f 62 "
     "73"},
    {FrameType::region_release, "region_release",
     [](ByteBuffer& b) { append_region_release(b, 19, kFlagConfirm, 5); },
     "51 42 55 53 01 13 01 00 13 00 00 00 00 00 00 00 08 00 00 00 00 00 00 00"
     " 05 00 00 00 00 00 00 00"},
    {FrameType::region_create, "region_create",
     [](ByteBuffer& b) {
       append_region_create(b, 20, RegionCreate{65536, 0640, "work"});
     },
     "51 42 55 53 01 14 00 00 14 00 00 00 00 00 00 00 0f 00 00 00 00 00 00 00"
     " 00 00 01 00 00 00 00 00 a0 01 04 77 6f 72 6b"},
    {FrameType::region_attach, "region_attach",
     [](ByteBuffer& b) {
       append_region_attach(b, 21, RegionAttach{true, "work"});
     },
     "51 42 55 53 01 15 00 00 15 00 00 00 00 00 00 00 06 00 00 00 00 00 00 00"
     " 01 04 77 6f 72 6b"},
    {FrameType::region_remove, "region_remove",
     [](ByteBuffer& b) { append_region_remove(b, 22, "work"); },
     "51 42 55 53 01 16 00 00 16 00 00 00 00 00 00 00 05 00 00 00 00 00 00 00"
     " 04 77 6f 72 6b"},
    {FrameType::purge, "purge", [](ByteBuffer& b) { append_purge(b, 23, "jobs"); },
     "51 42 55 53 01 17 00 00 17 00 00 00 00 00 00 00 05 00 00 00 00 00 00 00"
     " 04 6a 6f 62 73"},
    {FrameType::delete_queue, "delete", [](ByteBuffer& b) { append_delete(b, 24, "jobs"); },
     "51 42 55 53 01 18 00 00 18 00 00 00 00 00 00 00 05 00 00 00 00 00 00 00"
     " 04 6a 6f 62 73"},
    {FrameType::dropped, "dropped",
     [](ByteBuffer& b) { append_dropped(b, 25, 0x0102030405060708); },
     "51 42 55 53 01 19 00 00 19 00 00 00 00 00 00 00 08 00 00 00 00 00 00 00"
     " 08 07 06 05 04 03 02 01"},
    // Version 2 (PROTOCOL.md section 17).
    {FrameType::properties, "properties",
     [](ByteBuffer& b) {
       append_frame(b, 26, 0, Properties{0x01020304, 0x05060708, 7, kHeaderKV});
     },
     "51 42 55 53 01 1a 00 00 1a 00 00 00 00 00 00 00 11 00 00 00 00 00 00 00"
     " 04 03 02 01 08 07 06 05 07 00 00 00 01 6b 01 00 76"},
    {FrameType::delivery_info, "delivery_info",
     [](ByteBuffer& b) {
       append_frame(b, 27, 0, DeliveryInfo{0x0102030405060708, 3, true, kHeaderKV});
     },
     "51 42 55 53 01 1b 00 00 1b 00 00 00 00 00 00 00 15 00 00 00 00 00 00 00"
     " 08 07 06 05 04 03 02 01 03 00 00 00 01 00 00 00 01 6b 01 00 76"},
    {FrameType::ack, "ack",
     [](ByteBuffer& b) {
       append_frame(b, 28, kFlagConfirm, Ack{0x0102030405060708, true});
     },
     "51 42 55 53 01 1c 01 00 1c 00 00 00 00 00 00 00 10 00 00 00 00 00 00 00"
     " 08 07 06 05 04 03 02 01 01 00 00 00 00 00 00 00"},
    {FrameType::nack, "nack",
     [](ByteBuffer& b) {
       append_frame(b, 29, 0,
                    Nack{0x0102030405060708, NackAction::requeue_after, true, 0x01020304});
     },
     "51 42 55 53 01 1d 00 00 1d 00 00 00 00 00 00 00 10 00 00 00 00 00 00 00"
     " 08 07 06 05 04 03 02 01 02 01 00 00 04 03 02 01"},
    {FrameType::extend, "extend",
     [](ByteBuffer& b) {
       append_frame(b, 30, 0, Extend{0x0102030405060708, 0x01020304});
     },
     "51 42 55 53 01 1e 00 00 1e 00 00 00 00 00 00 00 10 00 00 00 00 00 00 00"
     " 08 07 06 05 04 03 02 01 04 03 02 01 00 00 00 00"},
    {FrameType::subscribe, "subscribe",
     [](ByteBuffer& b) {
       append_frame(b, 31, 0, Subscribe{0x01020304, true, "jobs"});
     },
     "51 42 55 53 01 1f 00 00 1f 00 00 00 00 00 00 00 0d 00 00 00 00 00 00 00"
     " 04 03 02 01 01 00 00 00 04 6a 6f 62 73"},
    {FrameType::unsubscribe, "unsubscribe",
     [](ByteBuffer& b) { append_frame(b, 32, 0, Unsubscribe{0x0102030405060708}); },
     "51 42 55 53 01 20 00 00 20 00 00 00 00 00 00 00 08 00 00 00 00 00 00 00"
     " 08 07 06 05 04 03 02 01"},
    {FrameType::declare_ex, "declare_ex",
     [](ByteBuffer& b) {
       append_frame(
           b, 33, kFlagConfirm,
           DeclareEx{0x01020304, 0x0102030405060708, Overflow::drop_oldest,
                     kDeclareDeadLetterOverflow | kDeclareSingleActiveConsumer | kDeclareDurable,
                     0x0506, 0x0708090a, 0x0b0c0d0e, 5, Fsync::always, "jobs", "dead"});
     },
     "51 42 55 53 01 21 01 00 21 00 00 00 00 00 00 00 26 00 00 00 00 00 00 00"
     " 04 03 02 01 08 07 06 05 04 03 02 01 02 0d 06 05 0a 09 08 07 0e 0d 0c 0b"
     " 05 01 00 00 04 04 6a 6f 62 73 64 65 61 64"},
    {FrameType::publish, "publish",
     [](ByteBuffer& b) {
       append_frame(b, 34, kFlagConfirm | kFlagRetain, Publish{"a.b", bytes_of("hi")});
     },
     "51 42 55 53 01 22 11 00 22 00 00 00 00 00 00 00 06 00 00 00 00 00 00 00"
     " 03 61 2e 62 68 69"},
    {FrameType::subscribe_subject, "subscribe_subject",
     [](ByteBuffer& b) {
       append_frame(
           b, 35, kFlagConfirm,
           SubscribeSubject{0x01020304, 0x0102030405060708, SlowPolicy::block, "a.*", "g"});
     },
     "51 42 55 53 01 23 01 00 23 00 00 00 00 00 00 00 16 00 00 00 00 00 00 00"
     " 04 03 02 01 08 07 06 05 04 03 02 01 03 00 00 00 03 01 61 2e 2a 67"},
};

TEST(codec_golden, EveryFrameTypeEncodesToItsPinnedBytes) {
  for (const auto& g : kGolden) {
    ByteBuffer buf;
    g.append(buf);
    EXPECT_EQ(hex(buf.readable()), g.bytes) << g.what;
    const auto hr = decode_header(buf.readable(), kMaxBodyCeiling);
    ASSERT_EQ(hr.status, HeaderStatus::complete) << g.what;
    EXPECT_EQ(hr.header.type, g.type) << g.what;
  }
}

TEST(codec_golden, EveryFrameTypeInTheTableIsPinned) {
  std::set<FrameType> pinned;
  for (const auto& g : kGolden)
    pinned.insert(g.type);
  for (const auto& row : kFrameTraits) {
    EXPECT_EQ(pinned.count(row.type), 1u) << row.name;
  }
  EXPECT_EQ(pinned.size(), std::size(kFrameTraits));
}

// Every pinned frame decodes with the body type its table row names and re-encodes, with
// the same header, to the same bytes.
TEST(codec_golden, EveryPinnedFrameRoundTripsThroughItsBodyType) {
  for (const auto& g : kGolden) {
    ByteBuffer buf;
    g.append(buf);
    const auto in = buf.readable();
    const auto hr = decode_header(in, kMaxBodyCeiling);
    ASSERT_EQ(hr.status, HeaderStatus::complete) << g.what;
    const FrameTraits* row = frame_traits(hr.header.type);
    ASSERT_NE(row, nullptr) << g.what;
    EXPECT_EQ(hr.header.flags & ~row->flags, 0) << g.what;
    const Bytes body = in.subspan(kHeaderSize);
    ByteBuffer again;
    if (row->fixed_size == 0) {
      EXPECT_TRUE(body.empty()) << g.what;
      append_empty(again, hr.header.type, hr.header.correlation, hr.header.flags);
    }
    int decoders = 0;
    for_each_body([&]<typename T>(std::type_identity<T>) {
      if (Layout<T>::kType != hr.header.type) return;
      ++decoders;
      T m;
      ASSERT_EQ(decode_body(body, m), Errc::ok) << g.what;
      EXPECT_EQ(body.size(), body_size(m)) << g.what;
      EXPECT_GE(body.size(), row->fixed_size) << g.what;
      append_frame(again, hr.header.correlation, hr.header.flags, m);
    });
    EXPECT_EQ(decoders, row->fixed_size == 0 ? 0 : 1) << g.what;
    EXPECT_EQ(hex(again.readable()), g.bytes) << g.what;
  }
}

}  // namespace
}  // namespace qbus::proto
