// Unit tests for ByteBuffer (proto/buffer.hpp).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <vector>

#include "qbus/proto/buffer.hpp"

namespace qbus::proto {
namespace {

using Vec = std::vector<std::byte>;

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

// Connections keep buffers in containers and move them; what is left behind is reused.
TEST(codec_byte_buffer, MovingTakesTheBytesAndLeavesAnEmptyUsableBuffer) {
  ByteBuffer a;
  const Vec da = pattern(5000);
  fill(a, da);
  a.consume(100);
  ByteBuffer b(std::move(a));
  EXPECT_TRUE(holds(b, Vec(da.begin() + 100, da.end())));
  EXPECT_TRUE(a.empty());  // NOLINT(bugprone-use-after-move): moved-from is specified here
  EXPECT_EQ(a.capacity(), 0u);
  const Vec again = pattern(30, 7);
  fill(a, again);
  EXPECT_TRUE(holds(a, again));
  ByteBuffer c;
  fill(c, pattern(3));
  c = std::move(b);
  EXPECT_TRUE(holds(c, Vec(da.begin() + 100, da.end())));
  EXPECT_TRUE(b.empty());  // NOLINT(bugprone-use-after-move)
}

}  // namespace
}  // namespace qbus::proto
