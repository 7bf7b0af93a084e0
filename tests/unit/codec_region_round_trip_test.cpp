// Round trips of the shared-memory region frames (PROTOCOL.md section 16).
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
  EXPECT_EQ(f.body.size(), kSendRegionFixed + 9);
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
    EXPECT_EQ(body_size(in), kSendRegionFixed);
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
  EXPECT_EQ(f.body.size(), kDeliverRegionFixed + 4);
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
  EXPECT_EQ(body_size(in), kDeliverRegionFixed);
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
    EXPECT_EQ(f.body.size(), body_size(RegionCreate{1, 0, "work/area"}));
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
    EXPECT_EQ(f.body.size(), body_size(RegionAttach{false, "work/area"}));
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
    EXPECT_EQ(f.body.size(), body_size(RegionRemove{key}));
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

}  // namespace
}  // namespace qbus::proto
