// The client's region pool (ClientOptions::region_pool_bytes) against a real qbusd:
// regions taken from it are fresh, zero-filled and travel intact; it holds no more than its
// bound, gives way to the program when the uid's region quota is short, and leaves nothing
// held in the broker once the Client is gone.
#include <gtest/gtest.h>
#include <qbus/client.hpp>

#include <sys/resource.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

#include "daemon.hpp"
#include "eventually.hpp"
#include "process.hpp"

namespace qbus::testing {
namespace {

using std::chrono::seconds;

constexpr std::size_t kKiB = 1024;
constexpr std::size_t kMiB = 1024 * kKiB;

void fill(std::span<std::byte> out, std::uint8_t seed) {
  for (std::size_t i = 0; i < out.size(); i += 4096)
    out[i] = static_cast<std::byte>(seed + i / 4096);
  out.back() = static_cast<std::byte>(seed);
}

bool filled_with(std::span<const std::byte> in, std::uint8_t seed) {
  for (std::size_t i = 0; i < in.size(); i += 4096) {
    if (in[i] != static_cast<std::byte>(seed + i / 4096)) return false;
  }
  return in.back() == static_cast<std::byte>(seed);
}

bool all_zero(std::span<const std::byte> in) {
  return std::all_of(in.begin(), in.end(), [](std::byte b) { return b == std::byte{0}; });
}

class RegionPoolTest : public ::testing::Test {
 protected:
  explicit RegionPoolTest(DaemonOptions o = {}) : daemon_(std::move(o)) {}
  Client connect(std::size_t pool_bytes) {
    ClientOptions o;
    o.address = daemon_.address();
    o.name = "region-pool-test";
    o.connect_timeout = seconds(30);
    o.region_pool_bytes = pool_bytes;
    return Client(std::move(o));
  }

  Daemon daemon_;
};

TEST_F(RegionPoolTest, PooledRegionsAreFreshZeroFilledAndArriveIntact) {
  constexpr std::size_t kSize = 1 * kMiB;
  constexpr int kRounds = 12;
  auto producer = connect(8 * kMiB);
  auto consumer = connect(0);
  for (int i = 0; i < kRounds; ++i) {
    auto r = producer.allocate_region(kSize);
    ASSERT_EQ(r.size(), kSize);
    // Every region is new: the pool never hands out one that was filled before.
    ASSERT_TRUE(all_zero(r.data())) << "round " << i;
    fill(r.data(), static_cast<std::uint8_t>(i));
    producer.send("pool.bulk", std::move(r));
  }
  for (int i = 0; i < kRounds; ++i) {
    auto m = consumer.receive("pool.bulk", seconds(30));
    ASSERT_TRUE(m);
    EXPECT_TRUE(m->in_shared_memory());
    ASSERT_EQ(m->size(), kSize);
    EXPECT_TRUE(filled_with(m->bytes(), static_cast<std::uint8_t>(i))) << "round " << i;
  }
  const auto s = producer.region_pool_stats();
  // The first allocation of a size is cold; from then on each one finds its region ready
  // or being populated, which it waits for.
  EXPECT_EQ(s.misses, 1u);
  EXPECT_EQ(s.hits + s.waits, static_cast<std::uint64_t>(kRounds - 1));
  EXPECT_EQ(s.failures, 0u);
  EXPECT_EQ(s.held_bytes, 2 * kSize);  // refills: 2 regions of a size at most
  EXPECT_EQ(producer.send_failures().count, 0u);
}

TEST_F(RegionPoolTest, LargePayloadsFromMemoryUseThePoolToo) {
  auto c = connect(4 * kMiB);
  const std::string payload(512 * kKiB, 'm');  // above the 64 KiB region threshold
  for (int i = 0; i < 3; ++i)
    c.send_confirmed("pool.copy", payload);
  for (int i = 0; i < 3; ++i) {
    auto m = c.receive("pool.copy", seconds(30));
    ASSERT_TRUE(m);
    EXPECT_TRUE(m->in_shared_memory());
    EXPECT_EQ(m->text(), payload);
  }
  const auto s = c.region_pool_stats();
  EXPECT_EQ(s.hits + s.waits, 2u);
}

TEST_F(RegionPoolTest, PoolStaysWithinItsBoundAndEvictsOtherSizes) {
  constexpr std::size_t kBound = 3 * kMiB;
  auto c = connect(kBound);
  { auto a = c.allocate_region(1 * kMiB); }
  EXPECT_EQ(c.region_pool_stats().held_bytes, 2 * kMiB);
  // Only ready regions are evicted: wait until the worker has populated both.
  ASSERT_TRUE(eventually([&] { return c.region_pool_stats().ready_bytes == 2 * kMiB; }));
  {
    // Room for one region of 1.5 MiB only after both 1 MiB ones are evicted.
    auto b = c.allocate_region(1536 * kKiB);
    EXPECT_TRUE(all_zero(b.data()));
  }
  auto s = c.region_pool_stats();
  EXPECT_LE(s.held_bytes, kBound);
  EXPECT_EQ(s.evictions, 2u);
  // Larger than the bound: never pooled, allocated as without a pool.
  {
    auto big = c.allocate_region(4 * kMiB);
    EXPECT_EQ(big.size(), 4 * kMiB);
  }
  EXPECT_EQ(c.region_pool_stats().misses, s.misses);
  // Smaller than 256 KiB: not pooled either.
  {
    auto small = c.allocate_region(64 * kKiB);
    EXPECT_EQ(small.size(), 64 * kKiB);
  }
  EXPECT_EQ(c.region_pool_stats().misses, s.misses);
  // What was evicted is released in the broker: the pool's two of 1.5 MiB are left.
  c.sync();
  EXPECT_TRUE(eventually([&] { return daemon_.open_regions() == 2; }))
      << daemon_.open_regions() << " regions open in qbusd";
}

TEST_F(RegionPoolTest, DestroyingTheClientReleasesEveryPooledRegion) {
  {
    auto c = connect(16 * kMiB);
    for (std::size_t size : {1 * kMiB, 2 * kMiB, 3 * kMiB}) {
      auto r = c.allocate_region(size);
      EXPECT_TRUE(all_zero(r.data()));
    }
    EXPECT_GT(c.region_pool_stats().held_bytes, 0u);
  }
  EXPECT_TRUE(eventually([&] { return daemon_.open_regions() == 0; }))
      << daemon_.open_regions() << " regions open in qbusd";
}

class RegionPoolQuotaTest : public RegionPoolTest {
 protected:
  RegionPoolQuotaTest()
      : RegionPoolTest(DaemonOptions{
            .config_json =
                R"({"limits": {"uid_max_regions": 4, "uid_max_region_bytes": 4194304}})"}) {}
};

TEST_F(RegionPoolQuotaTest, PoolGivesWayWhenTheUidQuotaIsShort) {
  auto c = connect(4 * kMiB);
  auto a = c.allocate_region(1 * kMiB);  // cold; two more granted for the pool
  auto b = c.allocate_region(1 * kMiB);  // from the pool; one refill: 4 regions, 4 MiB
  EXPECT_EQ(c.region_pool_stats().hits + c.region_pool_stats().waits, 1u);
  // The uid's quota is used up by a, b and the pool: its regions give way to the program.
  auto d = c.allocate_region(512 * kKiB);
  EXPECT_EQ(d.size(), 512 * kKiB);
  EXPECT_TRUE(all_zero(d.data()));
  // Quota the program itself holds is not the pool's to give: a refusal stays a refusal.
  auto e = c.allocate_region(1 * kMiB);
  try {
    auto f = c.allocate_region(1 * kMiB);
    FAIL() << "expected quota_exceeded";
  } catch (const Error& err) {
    EXPECT_EQ(err.code(), Errc::quota_exceeded) << err.what();
  }
  // The connection is fine: releasing one region makes room again.
  a = Region();
  auto g = c.allocate_region(1 * kMiB);
  EXPECT_EQ(g.size(), 1 * kMiB);
}

// A region whose pages cannot be mapped (here: no address space left) is an error for the
// caller, and its grant goes back to the broker: the uid's region count does not creep up.
TEST_F(RegionPoolQuotaTest, AnAllocationThatCannotMapGivesItsGrantBack) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "the sanitizer's allocator needs the address space this test takes away";
#endif
  const pid_t child = spawn([&] {
    auto c = connect(0);
    rlimit saved{};
    if (::getrlimit(RLIMIT_AS, &saved) != 0) return 10;
    // The address space in use now, plus 1 MiB: a 2 MiB region cannot be mapped.
    std::ifstream status("/proc/self/status");
    std::string line;
    std::uint64_t vm_kib = 0;
    while (std::getline(status, line)) {
      if (line.rfind("VmSize:", 0) == 0) vm_kib = std::stoull(line.substr(7));
    }
    if (vm_kib == 0) return 11;
    const rlimit limit{(vm_kib + 1024) * 1024, saved.rlim_max};
    if (::setrlimit(RLIMIT_AS, &limit) != 0) return 12;
    // More failures than the uid's 4 regions: a grant kept by each would refuse the last.
    for (int i = 0; i < 6; ++i) {
      try {
        auto r = c.allocate_region(2 * kMiB);
        return 13;
      } catch (const std::exception&) {
        // Error(io_error) from mmap, or bad_alloc from whatever else needed memory.
      }
    }
    if (::setrlimit(RLIMIT_AS, &saved) != 0) return 14;
    try {
      auto r = c.allocate_region(1 * kMiB);
      return r.size() == kMiB ? 0 : 16;
    } catch (const Error& e) {
      std::fprintf(stderr, "after the failures: %s\n", e.what());
      return 15;
    }
  });
  EXPECT_EQ(wait_exit(child), 0);
}

}  // namespace
}  // namespace qbus::testing
