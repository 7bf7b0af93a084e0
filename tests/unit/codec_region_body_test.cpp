// Malformed and edge-case bodies of the region frames (PROTOCOL.md section 16).
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
  // 3 is a subject (PROTOCOL.md 18.7).
  for (std::uint64_t kind : {4ull, 5ull, 0x80ull, 0xFFull}) {
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

}  // namespace
}  // namespace qbus::proto
