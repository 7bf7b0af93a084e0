// MemfdBacking's pool of memfds made ahead of demand and its worker thread: what create()
// takes from the pool, the budget and per-size bounds, expiry of unused memfds, destroy
// handing fds to the worker, and shutdown while the worker is busy. Real memfds, counted
// in this process's /proc/self/fd.
#include "net/memfd_backing.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "eventually.hpp"
#include "qbus/proto/shm.hpp"

namespace qbus::daemon {
namespace {

using qbus::testing::eventually;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr std::uint64_t kMiB = 1ull << 20;
constexpr std::uint64_t kMaxRegion = 1ull << 30;
constexpr milliseconds kIdleWait = seconds(30);

// Memfds this process holds, all of them or only those named `name` ("qbus-region" for
// pooled ones: the memfds the tests ask for themselves are named "test-region").
int open_memfds(const std::string& name = {}) {
  int n = 0;
  DIR* d = ::opendir("/proc/self/fd");
  if (!d) return -1;
  while (auto* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    char target[256] = {};
    const std::string link = std::string("/proc/self/fd/") + e->d_name;
    const auto len = ::readlink(link.c_str(), target, sizeof(target) - 1);
    const std::string_view t(target, len > 0 ? static_cast<std::size_t>(len) : 0);
    if (!t.starts_with("/memfd:")) continue;
    if (name.empty() || t.substr(7).starts_with(name + " ")) ++n;
  }
  ::closedir(d);
  return n;
}

int pooled_memfds() {
  return open_memfds("qbus-region");
}

bool is_open(int fd) {
  return ::fcntl(fd, F_GETFD) != -1;
}

int create_ok(MemfdBacking& b, std::uint64_t size) {
  auto h = b.create(size, "test-region");
  EXPECT_TRUE(h.ok()) << h.text;
  return h.handle;
}

TEST(MemfdBackingTest, SecondAllocationOfASizeIsServedFromThePool) {
  MemfdBacking b(kMaxRegion);
  const int first = create_ok(b, kMiB);
  ASSERT_TRUE(b.wait_idle(kIdleWait));
  auto s = b.pool_stats();
  EXPECT_EQ(s.misses, 1u);
  EXPECT_EQ(s.hits, 0u);
  EXPECT_EQ(s.ready, 1u);
  EXPECT_EQ(s.ready_bytes, kMiB);
  EXPECT_EQ(pooled_memfds(), 1);

  const int second = create_ok(b, kMiB);
  s = b.pool_stats();
  EXPECT_EQ(s.hits, 1u);
  EXPECT_EQ(s.misses, 1u);

  // A pooled region is what create() would have made: exact size, sealed against resizing
  // only, writable, zero-filled.
  auto seals = proto::shm::seals(second);
  ASSERT_TRUE(seals.ok());
  // (F_SEAL_EXEC may be set too, by MFD_NOEXEC_SEAL on kernels that have it.)
  EXPECT_EQ(*seals & (proto::shm::kReadSeals | F_SEAL_SEAL), proto::shm::kSizeSeals);
  auto size = proto::shm::region_size(second);
  ASSERT_TRUE(size.ok());
  EXPECT_EQ(*size, kMiB);
  auto map = proto::shm::map_writable(second, kMiB);
  ASSERT_TRUE(map.ok()) << map.error().text;
  const auto bytes = map->bytes();
  EXPECT_TRUE(
      std::all_of(bytes.begin(), bytes.end(), [](std::byte x) { return x == std::byte{0}; }));

  // Serving from the pool asks for the next one at once.
  ASSERT_TRUE(b.wait_idle(kIdleWait));
  EXPECT_EQ(b.pool_stats().ready, 1u);
  b.destroy(first);
  b.destroy(second);
}

TEST(MemfdBackingTest, OtherSizesAreNotServedFromThePool) {
  MemfdBacking b(kMaxRegion);
  b.destroy(create_ok(b, kMiB));
  ASSERT_TRUE(b.wait_idle(kIdleWait));
  b.destroy(create_ok(b, kMiB + 4096));
  const auto s = b.pool_stats();
  EXPECT_EQ(s.hits, 0u);
  EXPECT_EQ(s.misses, 2u);
}

TEST(MemfdBackingTest, PoolNeverExceedsItsBudgetNorTwoPerSize) {
  constexpr std::uint64_t kBudget = 3 * kMiB;
  MemfdBacking b(kMaxRegion, kBudget);
  std::vector<int> held;
  // Bursts without waiting, so that several replacements of one size are asked for while
  // earlier ones are still being made.
  for (const std::uint64_t size : {kMiB, kMiB, kMiB, kMiB, 2 * kMiB, 2 * kMiB, kMiB / 2, kMiB / 2,
                                   kMiB / 2, 3 * kMiB, 5 * kMiB, 5 * kMiB}) {
    held.push_back(create_ok(b, size));
    const auto s = b.pool_stats();
    EXPECT_LE(s.ready_bytes, kBudget);
  }
  ASSERT_TRUE(b.wait_idle(kIdleWait));
  const auto s = b.pool_stats();
  EXPECT_LE(s.ready_bytes, kBudget);
  EXPECT_LE(s.ready, 2u * 4);  // four sizes fit the budget at all
  EXPECT_GT(s.ready, 0u);
  // 5 MiB is over the budget: never pooled, so both of its allocations were misses.
  b.destroy(create_ok(b, 5 * kMiB));
  const auto after = b.pool_stats();
  EXPECT_EQ(after.misses, s.misses + 1);
  for (const int fd : held)
    b.destroy(fd);
  ASSERT_TRUE(b.wait_idle(kIdleWait));
  EXPECT_LE(b.pool_stats().ready_bytes, kBudget);
}

TEST(MemfdBackingTest, AtMostTwoReadyOfOneSize) {
  MemfdBacking b(kMaxRegion);
  std::vector<int> held;
  for (int i = 0; i < 6; ++i) {
    held.push_back(create_ok(b, 64 * 1024));
    ASSERT_TRUE(b.wait_idle(kIdleWait));
    EXPECT_LE(b.pool_stats().ready, 2u);
  }
  EXPECT_GE(b.pool_stats().hits, 5u);  // every allocation after the first
  for (const int fd : held)
    b.destroy(fd);
}

TEST(MemfdBackingTest, ReadyMemfdsUnusedForTheIdleTimeAreClosed) {
  const int baseline = pooled_memfds();
  MemfdBacking b(kMaxRegion, 64 * kMiB, milliseconds(100));
  b.destroy(create_ok(b, kMiB));
  ASSERT_TRUE(b.wait_idle(kIdleWait));
  EXPECT_TRUE(eventually([&] { return b.pool_stats().ready == 0; })) << "never expired";
  EXPECT_TRUE(eventually([&] { return pooled_memfds() == baseline; }));
  // Expired means forgotten, not broken: the next allocation is a miss and refills.
  b.destroy(create_ok(b, kMiB));
  EXPECT_EQ(b.pool_stats().misses, 2u);
}

TEST(MemfdBackingTest, ZeroBudgetMakesNothingAheadAndStillClosesOnTheWorker) {
  MemfdBacking b(kMaxRegion, 0);
  const int fd = create_ok(b, kMiB);
  ASSERT_TRUE(b.wait_idle(kIdleWait));
  EXPECT_EQ(b.pool_stats().ready, 0u);
  EXPECT_EQ(pooled_memfds(), 0);
  b.destroy(fd);
  ASSERT_TRUE(b.wait_idle(kIdleWait));
  EXPECT_FALSE(is_open(fd));
}

TEST(MemfdBackingTest, ASmallerBudgetClosesWhatNoLongerFits) {
  MemfdBacking b(kMaxRegion, 64 * kMiB);
  b.destroy(create_ok(b, 4 * kMiB));
  b.destroy(create_ok(b, kMiB));
  ASSERT_TRUE(b.wait_idle(kIdleWait));
  ASSERT_EQ(b.pool_stats().ready_bytes, 5 * kMiB);
  b.set_pool_bytes(2 * kMiB);
  ASSERT_TRUE(b.wait_idle(kIdleWait));
  EXPECT_LE(b.pool_stats().ready_bytes, 2 * kMiB);
  b.set_pool_bytes(0);
  ASSERT_TRUE(b.wait_idle(kIdleWait));
  EXPECT_EQ(b.pool_stats().ready, 0u);
  EXPECT_EQ(pooled_memfds(), 0);
  b.destroy(create_ok(b, kMiB));
  ASSERT_TRUE(b.wait_idle(kIdleWait));
  EXPECT_EQ(b.pool_stats().ready, 0u);  // disabled: nothing made ahead
}

TEST(MemfdBackingTest, DestroyingTheBackingWhileItsWorkerIsBusyClosesEverything) {
  const int baseline = open_memfds();
  auto b = std::make_unique<MemfdBacking>(kMaxRegion, 512 * kMiB);
  std::vector<int> fds;
  // Each asks the worker for a replacement of up to 64 MiB; the destroys queue closes.
  for (const std::uint64_t size : {64 * kMiB, 32 * kMiB, 16 * kMiB, 64 * kMiB, 8 * kMiB})
    fds.push_back(create_ok(*b, size));
  for (const int fd : fds)
    b->destroy(fd);
  b.reset();
  EXPECT_EQ(open_memfds(), baseline);
  for (const int fd : fds)
    EXPECT_FALSE(is_open(fd)) << fd;
}

TEST(MemfdBackingTest, AnIdleWorkerDoesNotWakeUp) {
  MemfdBacking b(kMaxRegion, 64 * kMiB, milliseconds(50));
  b.destroy(create_ok(b, kMiB));
  ASSERT_TRUE(eventually([&] { return b.pool_stats().ready == 0; }));
  // With nothing ready the worker waits without a timeout: its CPU time stays put.
  const auto cpu = [] {
    timespec ts{};
    ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec * 1'000'000'000ll + ts.tv_nsec;
  };
  const auto before = cpu();
  std::this_thread::sleep_for(milliseconds(300));
  EXPECT_LT(cpu() - before, 20'000'000ll);  // 20 ms: generous, a spinning thread takes 300
}

}  // namespace
}  // namespace qbus::daemon
