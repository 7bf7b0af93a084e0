// MemfdBacking: what create() makes (exact size, size seals only, zero-filled, no page
// allocated), the handover seal check, destroy handing fds to the worker thread that
// closes them, shutdown with closes still queued, and the fds made for peers. Real memfds,
// counted in this process's /proc/self/fd.
#include "net/memfd_backing.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "qbus/proto/shm.hpp"

namespace qbus::daemon {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr std::uint64_t kMiB = 1ull << 20;
constexpr std::uint64_t kMaxRegion = 1ull << 30;
constexpr milliseconds kIdleWait = seconds(30);

// Memfds this process holds.
int open_memfds() {
  int n = 0;
  DIR* d = ::opendir("/proc/self/fd");
  if (!d) return -1;
  while (auto* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    char target[256] = {};
    const std::string link = std::string("/proc/self/fd/") + e->d_name;
    const auto len = ::readlink(link.c_str(), target, sizeof(target) - 1);
    const std::string_view t(target, len > 0 ? static_cast<std::size_t>(len) : 0);
    if (t.starts_with("/memfd:")) ++n;
  }
  ::closedir(d);
  return n;
}

bool is_open(int fd) {
  return ::fcntl(fd, F_GETFD) != -1;
}

std::string fd_target(int fd) {
  char target[256] = {};
  const std::string link = "/proc/self/fd/" + std::to_string(fd);
  const auto len = ::readlink(link.c_str(), target, sizeof(target) - 1);
  return std::string(target, len > 0 ? static_cast<std::size_t>(len) : 0);
}

int create_ok(MemfdBacking& b, std::uint64_t size) {
  auto h = b.create(size, "test-region");
  EXPECT_TRUE(h.ok()) << h.text;
  return h.handle;
}

TEST(MemfdBackingTest, CreateMakesANewZeroFilledRegionOfExactlyTheSizeWithSizeSealsOnly) {
  MemfdBacking b(kMaxRegion);
  const int fd = create_ok(b, kMiB + 4096);
  ASSERT_GE(fd, 0);
  EXPECT_TRUE(fd_target(fd).starts_with("/memfd:test-region")) << fd_target(fd);
  auto seals = proto::shm::seals(fd);
  ASSERT_TRUE(seals.ok());
  // (F_SEAL_EXEC may be set too, by MFD_NOEXEC_SEAL on kernels that have it.)
  EXPECT_EQ(*seals & (proto::shm::kReadSeals | F_SEAL_SEAL), proto::shm::kSizeSeals);
  auto size = proto::shm::region_size(fd);
  ASSERT_TRUE(size.ok());
  EXPECT_EQ(*size, kMiB + 4096);
  auto map = proto::shm::map_writable(fd, kMiB + 4096);
  ASSERT_TRUE(map.ok()) << map.error().text;
  const auto bytes = map->bytes();
  EXPECT_TRUE(
      std::all_of(bytes.begin(), bytes.end(), [](std::byte x) { return x == std::byte{0}; }));
  b.destroy(fd);
}

TEST(MemfdBackingTest, CreateAllocatesNoPage) {
  // The pages belong to whoever reserves them (libqbus), never to the broker's cgroup.
  MemfdBacking b(kMaxRegion);
  const int fd = create_ok(b, 64 * kMiB);
  struct stat st {};
  ASSERT_EQ(::fstat(fd, &st), 0);
  EXPECT_EQ(st.st_blocks, 0);
  b.destroy(fd);
}

TEST(MemfdBackingTest, CreateRefusesASizeAboveTheMaximumAndObeysANewOne) {
  MemfdBacking b(4 * kMiB);
  const int before = open_memfds();
  auto h = b.create(4 * kMiB + 1, "test-region");
  EXPECT_EQ(h.error, Errc::payload_too_large);
  EXPECT_EQ(h.handle, -1);
  EXPECT_NE(h.text.find("4194305"), std::string::npos) << h.text;
  EXPECT_EQ(open_memfds(), before);
  b.set_max_region_bytes(8 * kMiB);
  b.destroy(create_ok(b, 4 * kMiB + 1));
  b.set_max_region_bytes(kMiB);
  EXPECT_EQ(b.create(kMiB + 1, "test-region").error, Errc::payload_too_large);
}

TEST(MemfdBackingTest, SealForHandoverRefusesAnUnsealedRegionAndFreezesASealedOne) {
  MemfdBacking b(kMaxRegion);
  const int fd = create_ok(b, kMiB);
  const auto refused = b.seal_for_handover(fd);
  EXPECT_EQ(refused.error, Errc::unexpected_frame);
  EXPECT_NE(refused.text.find("F_SEAL_WRITE"), std::string::npos) << refused.text;
  auto seals = proto::shm::seals(fd);
  ASSERT_TRUE(seals.ok());
  EXPECT_EQ(*seals & F_SEAL_SEAL, 0) << "a refusal changes nothing";

  ASSERT_EQ(::fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE), 0);
  const auto ok = b.seal_for_handover(fd);
  EXPECT_EQ(ok.error, Errc::ok) << ok.text;
  seals = proto::shm::seals(fd);
  ASSERT_TRUE(seals.ok());
  EXPECT_NE(*seals & F_SEAL_SEAL, 0);
  EXPECT_EQ(b.seal_for_handover(fd).error, Errc::ok);  // twice is fine
  b.destroy(fd);
}

TEST(MemfdBackingTest, DestroyClosesOnTheWorker) {
  MemfdBacking b(kMaxRegion);
  std::vector<int> fds;
  for (int i = 0; i < 8; ++i)
    fds.push_back(create_ok(b, kMiB));
  for (const int fd : fds)
    b.destroy(fd);
  ASSERT_TRUE(b.wait_idle(kIdleWait));
  for (const int fd : fds)
    EXPECT_FALSE(is_open(fd)) << fd;
}

TEST(MemfdBackingTest, DestroyFarBehindTheWorkerClosesInlineAndLosesNothing) {
  // Needs more fds open at once than the queue holds; the soft limit is often 1024.
  constexpr rlim_t kNeeded = MemfdBacking::kMaxPendingCloses + 1024;
  rlimit lim{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &lim), 0);
  if (lim.rlim_max != RLIM_INFINITY && lim.rlim_max < kNeeded) {
    GTEST_SKIP() << "RLIMIT_NOFILE hard limit " << lim.rlim_max << " is below " << kNeeded;
  }
  if (lim.rlim_cur != RLIM_INFINITY && lim.rlim_cur < kNeeded) {
    lim.rlim_cur = kNeeded;
    ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &lim), 0) << std::strerror(errno);
  }
  const int baseline = open_memfds();
  MemfdBacking b(kMaxRegion);
  std::vector<int> fds;
  // More than the queue holds, handed over without a pause: whatever the worker has not
  // taken yet, the rest closes inline. Every fd ends closed either way.
  for (std::size_t i = 0; i < MemfdBacking::kMaxPendingCloses + 64; ++i) {
    const int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0) << std::strerror(errno);
    fds.push_back(fd);
  }
  for (const int fd : fds)
    b.destroy(fd);
  ASSERT_TRUE(b.wait_idle(kIdleWait));
  for (const int fd : fds)
    EXPECT_FALSE(is_open(fd)) << fd;
  EXPECT_EQ(open_memfds(), baseline);
}

TEST(MemfdBackingTest, DestroyingTheBackingClosesWhatIsStillQueued) {
  const int baseline = open_memfds();
  auto b = std::make_unique<MemfdBacking>(kMaxRegion);
  std::vector<int> fds;
  for (const std::uint64_t size : {64 * kMiB, 32 * kMiB, 16 * kMiB, 64 * kMiB, 8 * kMiB}) {
    const int fd = create_ok(*b, size);
    // Pages for the close to free, as a client's reservation would leave them.
    ASSERT_TRUE(proto::shm::reserve(fd, static_cast<std::size_t>(size)).ok());
    fds.push_back(fd);
  }
  for (const int fd : fds)
    b->destroy(fd);
  b.reset();  // no wait_idle: the destructor itself must close them
  EXPECT_EQ(open_memfds(), baseline);
  for (const int fd : fds)
    EXPECT_FALSE(is_open(fd)) << fd;
}

TEST(MemfdBackingTest, AnIdleWorkerDoesNotWakeUp) {
  MemfdBacking b(kMaxRegion);
  b.destroy(create_ok(b, kMiB));
  ASSERT_TRUE(b.wait_idle(kIdleWait));
  // With nothing to close the worker waits without a timeout: its CPU time stays put.
  const auto cpu = [] {
    timespec ts{};
    ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec * 1'000'000'000ll + ts.tv_nsec;
  };
  const auto before = cpu();
  std::this_thread::sleep_for(milliseconds(300));
  EXPECT_LT(cpu() - before, 20'000'000ll);  // 20 ms: generous, a spinning thread takes 300
}

TEST(MemfdBackingTest, RegionFdForPeerDuplicatesOrReopensReadOnly) {
  MemfdBacking b(kMaxRegion);
  const int fd = create_ok(b, kMiB);
  std::string why;
  auto rw = region_fd_for_peer(fd, false, why);
  ASSERT_TRUE(rw) << why;
  EXPECT_NE(rw.get(), fd);
  EXPECT_EQ(::fcntl(rw.get(), F_GETFL) & O_ACCMODE, O_RDWR);
  EXPECT_NE(::fcntl(rw.get(), F_GETFD) & FD_CLOEXEC, 0);

  auto ro = region_fd_for_peer(fd, true, why);
  ASSERT_TRUE(ro) << why;
  EXPECT_EQ(::fcntl(ro.get(), F_GETFL) & O_ACCMODE, O_RDONLY);
  EXPECT_NE(::fcntl(ro.get(), F_GETFD) & FD_CLOEXEC, 0);
  EXPECT_FALSE(proto::shm::map_writable(ro.get(), kMiB).ok()) << "a read-only fd maps writable";
  EXPECT_EQ(::fcntl(fd, F_GETFL) & O_ACCMODE, O_RDWR) << "the broker's own fd changed";

  // The peer's fds outlive the broker's: the region stays readable through them.
  b.destroy(fd);
  ASSERT_TRUE(b.wait_idle(kIdleWait));
  auto size = proto::shm::region_size(ro.get());
  ASSERT_TRUE(size.ok());
  EXPECT_EQ(*size, kMiB);

  // A handle that is no fd: an error naming the operation.
  why.clear();
  EXPECT_FALSE(region_fd_for_peer(-1, false, why));
  EXPECT_NE(why.find("dup"), std::string::npos) << why;
  why.clear();
  EXPECT_FALSE(region_fd_for_peer(-1, true, why));
  EXPECT_NE(why.find("reopen"), std::string::npos) << why;
}

}  // namespace
}  // namespace qbus::daemon
