// libqbus's region pool (client-lib/src/region_pool.hpp) without a broker: regions made
// with proto::shm stand in for granted ones. What is checked here is the worker's part:
// it populates what it is given, and it stops between populate steps while the client's
// thread unmaps (RegionPool::HoldOff), so that the unmap does not wait for it.
#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <memory>
#include <thread>

#include "qbus/proto/shm.hpp"
#include "qbus/proto/unique_fd.hpp"
#include "region_pool.hpp"
#include "session.hpp"

namespace qbus::testing {
namespace {

using detail::RegionPool;
using detail::ReleaseQueue;

constexpr std::size_t kKiB = 1024;
constexpr std::size_t kSize = 1024 * kKiB;  // four populate steps of 256 KiB
constexpr std::size_t kPoolBytes = 8 * kSize;

proto::UniqueFd new_region() {
  auto fd = proto::shm::create_region(kSize, "qbus-test", kPoolBytes);
  if (!fd) ADD_FAILURE() << fd.error().text;
  return fd ? std::move(fd).value() : proto::UniqueFd();
}

std::size_t allocated_bytes(int fd) {
  struct stat st {};
  EXPECT_EQ(::fstat(fd, &st), 0);
  return static_cast<std::size_t>(st.st_blocks) * 512;
}

TEST(RegionPool, PopulatesWhatItIsGivenAndHandsItOut) {
  auto releases = std::make_shared<ReleaseQueue>();
  RegionPool pool(kPoolBytes, releases);
  ASSERT_TRUE(pool.poolable(kSize));
  EXPECT_EQ(pool.wanted(kSize), RegionPool::kDepth);
  auto fd = new_region();
  const proto::UniqueFd watch(::dup(fd.get()));
  pool.add(7, kSize, std::move(fd));
  auto ready = pool.take(kSize);  // waits for the worker
  ASSERT_TRUE(ready.has_value());
  EXPECT_EQ(ready->id, 7u);
  EXPECT_EQ(ready->mapping.bytes().size(), kSize);
  EXPECT_GE(allocated_bytes(watch.get()), kSize) << "every page populated";
  const auto st = pool.stats();
  EXPECT_EQ(st.hits + st.waits, 1u);
  EXPECT_EQ(st.misses, 0u);
}

TEST(RegionPool, TheWorkerStopsBetweenStepsWhileTheClientUnmaps) {
  auto releases = std::make_shared<ReleaseQueue>();
  RegionPool pool(kPoolBytes, releases);
  auto fd = new_region();
  const proto::UniqueFd watch(::dup(fd.get()));
  {
    const RegionPool::HoldOff quiet(&pool);
    pool.add(1, kSize, std::move(fd));
    // The worker populates one step, then waits: it cannot finish while this is held.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (allocated_bytes(watch.get()) == 0 && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    ASSERT_GT(allocated_bytes(watch.get()), 0u) << "the worker never started";
    EXPECT_FALSE(pool.take(kSize, /*wait=*/false).has_value());
    EXPECT_LT(allocated_bytes(watch.get()), kSize) << "the worker went on while held off";
    EXPECT_EQ(pool.stats().ready_bytes, 0u);
  }
  // The last HoldOff gone, it goes on.
  auto ready = pool.take(kSize);
  ASSERT_TRUE(ready.has_value());
  EXPECT_EQ(ready->id, 1u);
  EXPECT_GE(allocated_bytes(watch.get()), kSize);
}

}  // namespace
}  // namespace qbus::testing
