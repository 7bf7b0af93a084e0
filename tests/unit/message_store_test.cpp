// MessageStore: FIFO order and every field intact across chunk boundaries, records larger
// than a chunk, and a store that empties and fills again.
#include <gtest/gtest.h>

#include <cstddef>
#include <deque>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "broker/message_store.hpp"

namespace qbus::broker {
namespace {

struct Model {
  MessageMeta meta;
  std::vector<std::byte> payload;
  std::vector<std::byte> headers;
};

MessageMeta meta_for(std::uint64_t n) {
  MessageMeta m;
  m.sender = Identity{static_cast<std::uint32_t>(n),
                      static_cast<std::uint32_t>(n * 3),
                      static_cast<std::uint32_t>(n * 5),
                      n + 7,
                      n * 11,
                      n % 7 == 0};
  m.enqueued = Clock::time_point(std::chrono::nanoseconds(1'000'000 + n));
  if (n % 3 == 0) {
    m.request_id = n + 100;
    m.request_seq = n + 200;
  }
  if (n % 5 == 0) m.region = RegionRef{n + 1, n * 2, n * 4};
  return m;
}

std::vector<std::byte> payload_for(std::uint64_t n, std::size_t size) {
  std::vector<std::byte> p(size);
  for (std::size_t i = 0; i < size; ++i)
    p[i] = static_cast<std::byte>((n * 31 + i) & 0xff);
  return p;
}

void expect_same(const StoredMessage& got, const Model& want) {
  EXPECT_EQ(got.meta.sender.pid, want.meta.sender.pid);
  EXPECT_EQ(got.meta.sender.uid, want.meta.sender.uid);
  EXPECT_EQ(got.meta.sender.gid, want.meta.sender.gid);
  EXPECT_EQ(got.meta.sender.client_id, want.meta.sender.client_id);
  EXPECT_EQ(got.meta.sender.process_token, want.meta.sender.process_token);
  EXPECT_EQ(got.meta.sender.tcp, want.meta.sender.tcp);
  EXPECT_EQ(got.meta.enqueued, want.meta.enqueued);
  EXPECT_EQ(got.meta.request_id, want.meta.request_id);
  EXPECT_EQ(got.meta.request_seq, want.meta.request_seq);
  EXPECT_EQ(got.meta.region.id, want.meta.region.id);
  EXPECT_EQ(got.meta.region.offset, want.meta.region.offset);
  EXPECT_EQ(got.meta.region.length, want.meta.region.length);
  ASSERT_EQ(got.payload.size(), want.payload.size());
  EXPECT_TRUE(std::equal(got.payload.begin(), got.payload.end(), want.payload.begin()));
  ASSERT_EQ(got.headers.size(), want.headers.size());
  EXPECT_TRUE(std::equal(got.headers.begin(), got.headers.end(), want.headers.begin()));
}

TEST(MessageStore, RandomPushesAndPopsMatchAPlainDeque) {
  std::mt19937_64 rng(6);
  // Mostly small payloads, some around a chunk's size, a few far above it.
  std::vector<std::size_t> sizes = {0, 1, 7, 8, 63, 64, 65, 500, 1000, 4000, 70'000, 200'000};
  KeptChunkBudget budget;
  MessageStore store(budget);
  std::deque<Model> model;
  std::uint64_t n = 0;
  for (int step = 0; step < 60'000; ++step) {
    // Phases that grow the store deep, then drain it to empty, then hover near empty.
    const int phase = (step / 5000) % 3;
    const bool push = model.empty() || (phase == 0   ? rng() % 10 < 8
                                        : phase == 1 ? rng() % 10 < 2
                                                     : rng() % 2 == 0);
    if (push) {
      const std::size_t size = rng() % 50 == 0 ? sizes[rng() % sizes.size()] : sizes[rng() % 6];
      // Some messages carry a header block, of sizes that move the payload off alignment.
      Model m{meta_for(n), payload_for(n, size),
              n % 4 == 0 ? payload_for(n + 9, n % 37 + 1) : std::vector<std::byte>()};
      ++n;
      store.push(m.meta, m.payload, m.headers);
      model.push_back(std::move(m));
    } else {
      expect_same(store.front(), model.front());
      EXPECT_EQ(store.oldest_enqueued(), model.front().meta.enqueued);
      EXPECT_EQ(store.pop(), model.front().payload.size());
      model.pop_front();
    }
    ASSERT_EQ(store.size(), model.size());
    ASSERT_EQ(store.empty(), model.empty());
    if (::testing::Test::HasFailure()) FAIL() << "at step " << step;
  }
  while (!model.empty()) {
    expect_same(store.front(), model.front());
    store.pop();
    model.pop_front();
  }
  EXPECT_TRUE(store.empty());
}

// An empty store keeps a small chunk; a record too big for it must not be written behind
// that empty chunk, or the next read would find the old bytes there.
TEST(MessageStore, AKeptChunkTooSmallForTheNextRecordIsNotReadAgain) {
  KeptChunkBudget budget;
  MessageStore store(budget);
  const auto small = payload_for(1, 1);
  store.push(meta_for(1), small);
  store.pop();
  const auto big = payload_for(2, 1000);
  store.push(meta_for(2), big);
  expect_same(store.front(), Model{meta_for(2), big});
  store.pop();
  EXPECT_TRUE(store.empty());
}

// Quotas count payload bytes: what a store holds beyond its records must stay small.
TEST(MessageStore, AFewRecordsLeftOfABurstMoveToASmallChunk) {
  KeptChunkBudget budget;
  MessageStore store(budget);
  const auto p = payload_for(1, 64);
  for (int i = 0; i < 20'000; ++i)
    store.push(meta_for(static_cast<std::uint64_t>(i)), p);
  EXPECT_GE(store.capacity(), 2'000'000u);
  for (int i = 0; i < 19'999; ++i)
    store.pop();
  ASSERT_EQ(store.size(), 1u);
  // At most a 16 KiB chunk and a 16 KiB spare (the latter within the budget).
  EXPECT_LE(store.capacity(), 32u * 1024);
  expect_same(store.front(), Model{meta_for(19'999), p});
  store.pop();
  EXPECT_LE(store.capacity(), 16u * 1024);
}

// A backlog that moves (the reader drains chunks while the writer fills new ones) must
// write into the chunks the reader emptied, still in the cache, rather than map fresh ones;
// the spare that makes this possible goes once the backlog is gone.
TEST(MessageStore, ASteadyBacklogWritesIntoTheChunksItsReaderEmptied) {
  KeptChunkBudget budget;
  MessageStore store(budget);
  const auto p = payload_for(4, 64);
  std::uint64_t pushed = 0, popped = 0;
  for (; pushed < 30'000; ++pushed)  // ~3.3 MB: chunks of 1 MiB
    store.push(meta_for(pushed), p);
  const std::uint64_t made = store.chunks_made();
  const std::size_t capacity = store.capacity();
  for (int i = 0; i < 100'000; ++i) {  // ~11 MB through, the backlog the same
    store.push(meta_for(pushed++), p);
    EXPECT_EQ(store.front().meta.sender.client_id, popped++ + 7);
    store.pop();
  }
  EXPECT_LE(store.chunks_made(), made + 1) << "the drained chunks were not written again";
  EXPECT_EQ(budget.used(), 1024u * 1024) << "a 1 MiB spare, within the budget";
  EXPECT_LE(store.capacity(), capacity + 1024 * 1024);
  while (!store.empty())
    store.pop();
  EXPECT_LE(budget.used(), 16u * 1024);
  EXPECT_LE(store.capacity(), 16u * 1024);
}

// Backlogs that stall with a 1 MiB spare each take at most half the shared budget: the
// small chunks other stores keep while empty still have the rest.
TEST(MessageStore, LargeSparesLeaveHalfTheBudgetToSmallChunks) {
  KeptChunkBudget budget;
  std::vector<std::unique_ptr<MessageStore>> stalled;
  const auto p = payload_for(5, 64);
  for (int s = 0; s < 12; ++s) {
    auto& store = *stalled.emplace_back(std::make_unique<MessageStore>(budget));
    for (int i = 0; i < 20'000; ++i)  // ~2.2 MB: two 1 MiB chunks and more
      store.push(meta_for(static_cast<std::uint64_t>(i)), p);
    for (int i = 0; i < 12'000; ++i)  // the first 1 MiB chunk drained: a spare
      store.pop();
  }
  EXPECT_EQ(budget.large_used(), KeptChunkBudget::kMaxLarge);
  std::size_t small_kept = 0;
  for (int s = 0; s < 100; ++s) {
    MessageStore& store = *stalled.emplace_back(std::make_unique<MessageStore>(budget));
    for (int i = 0; i < 100; ++i)
      store.push(meta_for(static_cast<std::uint64_t>(i)), p);
    while (!store.empty())
      store.pop();
    small_kept += store.capacity();
  }
  EXPECT_EQ(small_kept, 100u * 16 * 1024) << "every empty store kept its 16 KiB chunk";
  EXPECT_LE(budget.used(), KeptChunkBudget::kMax);
  stalled.clear();
  EXPECT_EQ(budget.used(), 0u);
  EXPECT_EQ(budget.large_used(), 0u);
}

TEST(MessageStore, ChunksFollowWhatTheStoreHoldsNotHowLongItWasUsed) {
  KeptChunkBudget budget;
  MessageStore store(budget);
  const auto p = payload_for(2, 64);
  // Always one message behind: 100,000 messages through, never more than two held.
  store.push(meta_for(0), p);
  for (int i = 1; i < 100'000; ++i) {
    store.push(meta_for(static_cast<std::uint64_t>(i)), p);
    store.pop();
  }
  EXPECT_LE(store.capacity(), 4096u);
}

TEST(MessageStore, WhatEmptyStoresKeepIsBoundedInAll) {
  KeptChunkBudget budget;
  std::vector<std::unique_ptr<MessageStore>> stores;
  const auto p = payload_for(3, 64);
  std::size_t kept = 0;
  for (int s = 0; s < 3000; ++s) {
    auto& store = *stores.emplace_back(std::make_unique<MessageStore>(budget));
    for (int i = 0; i < 100; ++i)  // ~11 KB: a 16 KiB chunk, small enough to be kept
      store.push(meta_for(static_cast<std::uint64_t>(i)), p);
    while (!store.empty())
      store.pop();
    kept += store.capacity();
  }
  EXPECT_GT(kept, 0u);
  EXPECT_LE(kept, 16u * 1024 * 1024);
  EXPECT_EQ(budget.used(), kept);
  stores.clear();
  EXPECT_EQ(budget.used(), 0u);
  // The budget is given back with the stores: a new one may keep its chunk again.
  MessageStore again(budget);
  again.push(meta_for(1), p);
  again.pop();
  EXPECT_GT(again.capacity(), 0u);
}

TEST(MessageStore, PayloadIsReadInPlaceUntilPopped) {
  KeptChunkBudget budget;
  MessageStore store(budget);
  const std::string text = "in place";
  store.push(meta_for(3), std::as_bytes(std::span(text.data(), text.size())));
  const auto a = store.front();
  const auto b = store.front();
  EXPECT_EQ(a.payload.data(), b.payload.data());
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(a.payload.data()), a.payload.size()), text);
}

}  // namespace
}  // namespace qbus::broker
