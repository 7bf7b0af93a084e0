// PURGE, DELETE and their answer DROPPED (PROTOCOL.md sections 3.11, 3.12 and 6.10): each
// round-trips through its builder and decoder, and a broken body gets the codec's usual
// verdict (malformed_frame, or invalid_key for a key outside the syntax).
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "codec_test_support.hpp"

namespace qbus::proto {
namespace {

using namespace codec_test;

// The key frames, each with its builder and its decoder.
struct KeyFrame {
  FrameType type;
  void (*append)(ByteBuffer&, std::uint64_t, std::string_view);
  Errc (*decode)(Bytes, std::string_view&);
};

const KeyFrame kKeyFrames[] = {
    {FrameType::purge, append_purge, decode_purge},
    {FrameType::delete_queue, append_delete, decode_delete},
};

TEST(codec_manage, PurgeAndDeleteRoundTripTheirKey) {
  const std::string longest(kMaxKeySize, 'q');
  for (const KeyFrame& k : kKeyFrames) {
    for (std::string_view key :
         {std::string_view("q"), std::string_view("jobs.a/b:c-d_e"), std::string_view(longest)}) {
      ByteBuffer buf;
      k.append(buf, 77, key);
      const Frame f = only_frame(buf);
      EXPECT_EQ(f.header.type, k.type);
      EXPECT_EQ(f.header.flags, 0);
      EXPECT_EQ(f.header.correlation, 77u);
      EXPECT_EQ(f.body.size(), 1 + key.size());
      std::string_view out = "stale";
      ASSERT_EQ(k.decode(f.body, out), Errc::ok) << frame_type_name(k.type) << " " << key;
      EXPECT_EQ(out, key);
    }
  }
}

TEST(codec_manage, ABrokenKeyIsMalformedOrInvalid) {
  for (const KeyFrame& k : kKeyFrames) {
    SCOPED_TRACE(frame_type_name(k.type));
    std::string_view out;
    EXPECT_EQ(k.decode(Vec{}, out), Errc::malformed_frame);  // no key length
    // A key length past the end of the body.
    EXPECT_EQ(k.decode(BodyBuilder().u8(5).text("jobs").bytes(), out), Errc::malformed_frame);
    // Bytes after the key.
    EXPECT_EQ(k.decode(BodyBuilder().key("jobs").u8(0).bytes(), out), Errc::malformed_frame);
    EXPECT_EQ(k.decode(BodyBuilder().u8(0).bytes(), out), Errc::invalid_key);
    EXPECT_EQ(k.decode(BodyBuilder().key("jobs a").bytes(), out), Errc::invalid_key);
    EXPECT_EQ(k.decode(BodyBuilder().key("jobs*").bytes(), out), Errc::invalid_key);
  }
}

TEST(codec_manage, DroppedRoundTripsItsCountAndIsExactlyEightBytes) {
  for (std::uint64_t count : {std::uint64_t{0}, std::uint64_t{1}, ~std::uint64_t{0}}) {
    ByteBuffer buf;
    append_dropped(buf, 9, count);
    const Frame f = only_frame(buf);
    EXPECT_EQ(f.header.type, FrameType::dropped);
    EXPECT_EQ(f.header.correlation, 9u);
    ASSERT_EQ(f.body.size(), kDroppedSize);
    std::uint64_t out = 12345;
    ASSERT_EQ(decode_dropped(f.body, out), Errc::ok);
    EXPECT_EQ(out, count);
  }
  std::uint64_t out = 0;
  EXPECT_EQ(decode_dropped(BodyBuilder().u32(1).bytes(), out), Errc::malformed_frame);
  EXPECT_EQ(decode_dropped(BodyBuilder().u64(1).u8(0).bytes(), out), Errc::malformed_frame);
}

TEST(codec_manage, OnlyTheClientsFramesGoToTheBrokerAndNoneTakesAFlag) {
  EXPECT_EQ(frame_traits(FrameType::purge)->direction, Direction::to_broker);
  EXPECT_EQ(frame_traits(FrameType::delete_queue)->direction, Direction::to_broker);
  EXPECT_EQ(frame_traits(FrameType::dropped)->direction, Direction::to_client);
  for (FrameType t : {FrameType::purge, FrameType::delete_queue, FrameType::dropped}) {
    EXPECT_EQ(frame_traits(t)->flags, 0) << frame_type_name(t);
    EXPECT_FALSE(carries_fd(t)) << frame_type_name(t);
  }
}

}  // namespace
}  // namespace qbus::proto
