// Unit tests for the sealed-memfd layer (proto/include/qbus/proto/shm.hpp).
//
// Suites are named Shm* so that `ctest -R Shm` selects all of them. Tests that need a
// second process fork; the child reports through its exit status (0 = every check held,
// otherwise the number of the check that failed) and never returns into gtest.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "qbus/errc.hpp"
#include "qbus/proto/shm.hpp"

namespace qbus {
void PrintTo(Errc e, std::ostream* os) {
  *os << errc_name(e) << " (" << static_cast<int>(e) << ")";
}
}  // namespace qbus

namespace qbus::proto::shm {
namespace {

constexpr std::size_t kKiB = 1024;
constexpr std::size_t kMiB = 1024 * kKiB;
constexpr std::size_t kMax = 256 * kMiB;

// A pattern with no short period, so a view off by a page (or by any multiple of 256)
// shows up as wrong bytes.
std::uint64_t mix(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

std::byte pattern_byte(std::size_t i) {
  return static_cast<std::byte>((mix(i / 8) >> (8 * (i % 8))) & 0xff);
}

void fill_pattern(std::span<std::byte> out) {
  std::size_t i = 0;
  for (; i + 8 <= out.size(); i += 8) {
    const std::uint64_t w = mix(i / 8);
    std::memcpy(out.data() + i, &w, 8);
  }
  for (; i < out.size(); ++i)
    out[i] = pattern_byte(i);
}

std::uint64_t hash_bytes(std::span<const std::byte> in) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  std::size_t i = 0;
  for (; i + 8 <= in.size(); i += 8) {
    std::uint64_t w;
    std::memcpy(&w, in.data() + i, 8);
    h = (h ^ w) * 0x100000001b3ull;
  }
  for (; i < in.size(); ++i)
    h = (h ^ static_cast<std::uint64_t>(in[i])) * 0x100000001b3ull;
  return h;
}

// Test verbs: a region of `size` bytes filled with the pattern, write-sealed or not.
UniqueFd make_filled_region(std::size_t size) {
  auto fd = create_region(size, "qbus-test", kMax);
  EXPECT_TRUE(fd.ok()) << fd.error().text;
  if (!fd) return UniqueFd{};
  auto map = map_writable(fd->get(), size);
  EXPECT_TRUE(map.ok()) << map.error().text;
  if (!map) return UniqueFd{};
  fill_pattern(map->mutable_bytes());
  return std::move(fd).value();
}

UniqueFd make_sealed_region(std::size_t size) {
  UniqueFd fd = make_filled_region(size);
  if (!fd) return fd;
  auto sealed = seal_write(fd.get());
  EXPECT_TRUE(sealed.ok()) << sealed.error().text;
  return fd;
}

bool matches_pattern(std::span<const std::byte> view, std::size_t offset) {
  for (std::size_t i = 0; i < view.size(); ++i) {
    if (view[i] != pattern_byte(offset + i)) return false;
  }
  return true;
}

// A regular (non-tmpfs-sealable) file, as a peer might pass instead of a memfd.
UniqueFd make_regular_file(std::size_t size) {
  std::FILE* f = std::tmpfile();
  if (f == nullptr) return UniqueFd{};
  UniqueFd fd(::dup(::fileno(f)));
  std::fclose(f);
  if (fd && ::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) fd.reset();
  return fd;
}

// Runs `body` in a forked child and returns its exit status (or 128 + signal).
int run_in_child(const std::function<int()>& body) {
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) return -1;
  if (pid == 0) ::_exit(body());
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

std::size_t count_open_fds() {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd"))
    ++n;
  return n;
}

std::size_t count_memfd_mappings() {
  std::ifstream maps("/proc/self/maps");
  std::size_t n = 0;
  for (std::string line; std::getline(maps, line);) {
    if (line.find("/memfd:qbus-") != std::string::npos) ++n;
  }
  return n;
}

// ---------------------------------------------------------------------------------------
// create_region

TEST(ShmCreate, NewRegionHasExactSizeAndOnlyTheSizeSeals) {
  auto fd = create_region(100 * kKiB + 3, "qbus-test", kMax);
  ASSERT_TRUE(fd.ok()) << fd.error().text;
  auto size = region_size(fd->get());
  ASSERT_TRUE(size.ok()) << size.error().text;
  EXPECT_EQ(*size, 100 * kKiB + 3);
  auto bits = seals(fd->get());
  ASSERT_TRUE(bits.ok()) << bits.error().text;
  EXPECT_EQ(*bits & kSizeSeals, kSizeSeals);
  // Still open for the write seal that the hand-over adds.
  EXPECT_EQ(*bits & (F_SEAL_WRITE | F_SEAL_SEAL), 0u);
}

TEST(ShmCreate, RegionIsCloseOnExecAndNamedInProc) {
  auto fd = create_region(4 * kKiB, "qbus-named", kMax);
  ASSERT_TRUE(fd.ok()) << fd.error().text;
  EXPECT_NE(::fcntl(fd->get(), F_GETFD) & FD_CLOEXEC, 0);
  const auto link = std::filesystem::read_symlink("/proc/self/fd/" + std::to_string(fd->get()));
  EXPECT_EQ(link.string().rfind("/memfd:qbus-named", 0), 0u) << link;
}

TEST(ShmCreate, RegionIsNotExecutableWhereTheKernelOffersNoexecSeal) {
  constexpr unsigned kSealExec = 0x0020;  // F_SEAL_EXEC, Linux 6.3
  auto fd = create_region(4 * kKiB, "qbus-test", kMax);
  ASSERT_TRUE(fd.ok()) << fd.error().text;
  auto bits = seals(fd->get());
  ASSERT_TRUE(bits.ok());
  if ((*bits & kSealExec) == 0) GTEST_SKIP() << "kernel before 6.3: no MFD_NOEXEC_SEAL";
  struct stat st {};
  ASSERT_EQ(::fstat(fd->get(), &st), 0);
  EXPECT_EQ(st.st_mode & 0111, 0u);
}

TEST(ShmCreate, CreatingAllocatesNoPageAndReservingAllocatesEveryOne) {
  constexpr std::size_t kSize = 8 * kMiB;
  auto fd = create_region(kSize, "qbus-test", kMax);
  ASSERT_TRUE(fd.ok()) << fd.error().text;
  struct stat st {};
  ASSERT_EQ(::fstat(fd->get(), &st), 0);
  EXPECT_EQ(st.st_blocks, 0) << "the creator (qbusd) must not pay for the pages";
  auto reserved = reserve(fd->get(), kSize);
  ASSERT_TRUE(reserved.ok()) << reserved.error().text;
  ASSERT_EQ(::fstat(fd->get(), &st), 0);
  EXPECT_GE(static_cast<std::size_t>(st.st_blocks) * 512, kSize);
}

TEST(ShmCreate, PopulatingAllocatesEveryPageZeroedAndMapsItWritable) {
  // Above kHugePageSize, so the huge-page advice is taken too (honoured or not, the bytes
  // are the same), and not a multiple of it, so a tail of small pages remains.
  constexpr std::size_t kSize = 2 * kHugePageSize + 12 * kKiB;
  auto fd = create_region(kSize, "qbus-test", kMax);
  ASSERT_TRUE(fd.ok()) << fd.error().text;
  auto map = populate_writable(fd->get(), kSize, false);
  ASSERT_TRUE(map.ok()) << map.error().text;
  struct stat st {};
  ASSERT_EQ(::fstat(fd->get(), &st), 0);
  EXPECT_GE(static_cast<std::size_t>(st.st_blocks) * 512, kSize) << "every page allocated";
  auto bytes = map->mutable_bytes();
  ASSERT_EQ(bytes.size(), kSize);
  EXPECT_TRUE(
      std::all_of(bytes.begin(), bytes.end(), [](std::byte b) { return b == std::byte{0}; }));
  bytes[0] = std::byte{1};
  bytes[kSize - 1] = std::byte{2};
  char first = 0;
  char last = 0;
  ASSERT_EQ(::pread(fd->get(), &first, 1, 0), 1);
  ASSERT_EQ(::pread(fd->get(), &last, 1, static_cast<off_t>(kSize - 1)), 1);
  EXPECT_EQ(first, 1);
  EXPECT_EQ(last, 2);
}

// A pool worker stops between steps while its process unmaps (RegionPool::HoldOff): the
// hook runs between the 256 KiB steps, after each step's pages are in, never after the last.
TEST(ShmCreate, PopulatingCallsBetweenStepsAfterEachStepButTheLast) {
  constexpr std::size_t kStep = 256 * kKiB;
  constexpr std::size_t kSize = 3 * kStep + 4 * kKiB;  // four steps, the last a short one
  auto fd = create_region(kSize, "qbus-test", kMax);
  ASSERT_TRUE(fd.ok()) << fd.error().text;
  std::vector<std::size_t> allocated;  // bytes allocated when the hook ran
  auto map = populate_writable(fd->get(), kSize, false, [&] {
    struct stat st {};
    ASSERT_EQ(::fstat(fd->get(), &st), 0);
    allocated.push_back(static_cast<std::size_t>(st.st_blocks) * 512);
  });
  ASSERT_TRUE(map.ok()) << map.error().text;
  ASSERT_EQ(allocated.size(), 3u);
  for (std::size_t i = 0; i < allocated.size(); ++i) {
    // Exactly the steps done so far, with small pages; a huge page may bring more.
    EXPECT_GE(allocated[i], (i + 1) * kStep) << "after step " << i + 1;
  }
  // A region of one step has no "between".
  auto small = create_region(kStep, "qbus-test", kMax);
  ASSERT_TRUE(small.ok()) << small.error().text;
  int calls = 0;
  ASSERT_TRUE(populate_writable(small->get(), kStep, false, [&] { ++calls; }).ok());
  EXPECT_EQ(calls, 0);
}

// A child forked while the writer fills a region must not hold a writable mapping of it,
// or the writer could not seal it: fork_private keeps the mapping out of the child.
TEST(ShmCreate, APopulatedForkPrivateMappingIsNotInherited) {
  constexpr std::size_t kSize = 256 * kKiB;
  auto fd = create_region(kSize, "qbus-test", kMax);
  ASSERT_TRUE(fd.ok()) << fd.error().text;
  auto map = populate_writable(fd->get(), kSize, true);
  ASSERT_TRUE(map.ok()) << map.error().text;
  void* base = map->mutable_bytes().data();
  const int status = run_in_child([base] {
    unsigned char vec[kSize / 4096];
    // mincore fails with ENOMEM for an address range that is not mapped.
    return ::mincore(base, kSize, vec) != 0 && errno == ENOMEM ? 0 : 1;
  });
  EXPECT_EQ(status, 0);
  // And the writer can seal it once its own mapping is gone.
  map->reset();
  EXPECT_TRUE(seal_write(fd->get()).ok());
}

TEST(ShmCreate, PopulatingRefusesWhatMapWritableRefuses) {
  auto fd = create_region(64 * kKiB, "qbus-test", kMax);
  ASSERT_TRUE(fd.ok()) << fd.error().text;
  auto over = populate_writable(fd->get(), 128 * kKiB, false);
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.error().code, Errc::invalid_argument);
  ASSERT_TRUE(seal_write(fd->get()).ok());
  auto sealed = populate_writable(fd->get(), 64 * kKiB, true);
  ASSERT_FALSE(sealed.ok());
  EXPECT_EQ(sealed.error().code, Errc::invalid_argument) << sealed.error().text;
}

TEST(ShmCreate, ZeroSizeIsRefused) {
  auto fd = create_region(0, "qbus-test", kMax);
  ASSERT_FALSE(fd.ok());
  EXPECT_EQ(fd.error().code, Errc::invalid_argument);
  EXPECT_EQ(fd.error().sys_errno, 0);
  EXPECT_NE(fd.error().text.find("0 bytes"), std::string::npos) << fd.error().text;
}

TEST(ShmCreate, SizeAboveTheMaximumIsRefusedNamingBoth) {
  auto fd = create_region(kMiB + 1, "qbus-test", kMiB);
  ASSERT_FALSE(fd.ok());
  EXPECT_EQ(fd.error().code, Errc::payload_too_large);
  EXPECT_NE(fd.error().text.find("1048577 bytes"), std::string::npos) << fd.error().text;
  EXPECT_NE(fd.error().text.find("1048576 bytes"), std::string::npos) << fd.error().text;
  EXPECT_TRUE(create_region(kMiB, "qbus-test", kMiB).ok());
}

TEST(ShmCreate, SizeBeyondOffTIsRefusedEvenWithoutALimit) {
  const auto huge = std::numeric_limits<std::size_t>::max();
  auto fd = create_region(huge, "qbus-test", huge);
  ASSERT_FALSE(fd.ok());
  EXPECT_EQ(fd.error().code, Errc::payload_too_large);
}

TEST(ShmCreate, OverlongOrNulNameIsRefused) {
  EXPECT_TRUE(create_region(4 * kKiB, std::string(kMaxNameSize, 'n'), kMax).ok());
  auto longer = create_region(4 * kKiB, std::string(kMaxNameSize + 1, 'n'), kMax);
  ASSERT_FALSE(longer.ok());
  EXPECT_EQ(longer.error().code, Errc::invalid_argument);
  auto nul = create_region(4 * kKiB, std::string("a\0b", 3), kMax);
  ASSERT_FALSE(nul.ok());
  EXPECT_EQ(nul.error().code, Errc::invalid_argument);
}

TEST(ShmCreate, ResizingAfterCreationIsRefusedByTheKernel) {
  auto fd = create_region(64 * kKiB, "qbus-test", kMax);
  ASSERT_TRUE(fd.ok()) << fd.error().text;
  errno = 0;
  EXPECT_NE(::ftruncate(fd->get(), 32 * kKiB), 0);
  EXPECT_EQ(errno, EPERM);
  errno = 0;
  EXPECT_NE(::ftruncate(fd->get(), 128 * kKiB), 0);
  EXPECT_EQ(errno, EPERM);
  const char byte = 'x';
  errno = 0;
  EXPECT_LT(::pwrite(fd->get(), &byte, 1, 64 * kKiB), 0);  // would grow
  EXPECT_EQ(errno, EPERM);
  errno = 0;
  EXPECT_NE(::fallocate(fd->get(), 0, 60 * kKiB, 8 * kKiB), 0);  // would grow
  EXPECT_EQ(errno, EPERM);
  EXPECT_EQ(*region_size(fd->get()), 64 * kKiB);
  // Writing inside the region is still allowed until seal_write.
  EXPECT_EQ(::pwrite(fd->get(), &byte, 1, 0), 1);
}

// fallocate and ftruncate honour RLIMIT_FSIZE (EFBIG), which stands in reliably for a
// full tmpfs or memory cgroup; SIGXFSZ is ignored so the child sees the error instead.
TEST(ShmCreate, SizeTheKernelWillNotReserveFailsCleanlyWithQuotaExceeded) {
  const int status = run_in_child([] {
    ::signal(SIGXFSZ, SIG_IGN);
    const rlimit limit{kMiB, kMiB};
    if (::setrlimit(RLIMIT_FSIZE, &limit) != 0) return 10;
    auto fd = create_region(16 * kMiB, "qbus-test", kMax);
    if (fd.ok()) return 1;
    if (fd.error().code != Errc::quota_exceeded) return 2;
    if (fd.error().sys_errno != EFBIG) return 3;
    if (fd.error().text.find("16777216 bytes") == std::string::npos) return 4;
    if (!create_region(kMiB, "qbus-test", kMax).ok()) return 5;  // under the limit: fine
    return 0;
  });
  EXPECT_EQ(status, 0);
}

// ---------------------------------------------------------------------------------------
// seal_write

TEST(ShmSeal, SealWriteAddsWriteAndSealSeals) {
  UniqueFd fd = make_sealed_region(16 * kKiB);
  ASSERT_TRUE(fd);
  auto bits = seals(fd.get());
  ASSERT_TRUE(bits.ok());
  EXPECT_EQ(*bits & (kReadSeals | F_SEAL_SEAL), kReadSeals | F_SEAL_SEAL);
  errno = 0;
  EXPECT_NE(::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_FUTURE_WRITE), 0);  // seals are frozen
  EXPECT_EQ(errno, EPERM);
}

TEST(ShmSeal, SealWriteWhileAWritableMappingExistsFailsWithBusy) {
  auto fd = create_region(16 * kKiB, "qbus-test", kMax);
  ASSERT_TRUE(fd.ok()) << fd.error().text;
  auto map = map_writable(fd->get(), 16 * kKiB);
  ASSERT_TRUE(map.ok()) << map.error().text;

  auto sealed = seal_write(fd->get());
  ASSERT_FALSE(sealed.ok());
  EXPECT_EQ(sealed.error().code, Errc::invalid_argument);
  EXPECT_EQ(sealed.error().sys_errno, EBUSY);
  EXPECT_NE(sealed.error().text.find("unmap the writable mapping before sending the region"),
            std::string::npos)
      << sealed.error().text;
  EXPECT_EQ(*seals(fd->get()) & F_SEAL_WRITE, 0u);

  map->reset();
  EXPECT_TRUE(seal_write(fd->get()).ok());
}

TEST(ShmSeal, SealWriteIsIdempotent) {
  UniqueFd fd = make_sealed_region(4 * kKiB);
  ASSERT_TRUE(fd);
  EXPECT_TRUE(seal_write(fd.get()).ok());
}

TEST(ShmSeal, AfterSealWriteNoWayOfWritingIsLeft) {
  UniqueFd fd = make_sealed_region(16 * kKiB);
  ASSERT_TRUE(fd);

  auto map = map_writable(fd.get(), 16 * kKiB);
  ASSERT_FALSE(map.ok());
  EXPECT_EQ(map.error().code, Errc::invalid_argument);
  EXPECT_EQ(map.error().sys_errno, EPERM);

  errno = 0;
  void* raw = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  EXPECT_EQ(raw, MAP_FAILED);
  EXPECT_EQ(errno, EPERM);
  if (raw != MAP_FAILED) ::munmap(raw, 4096);

  const char byte = 'x';
  errno = 0;
  EXPECT_LT(::pwrite(fd.get(), &byte, 1, 0), 0);
  EXPECT_EQ(errno, EPERM);
  errno = 0;
  EXPECT_LT(::write(fd.get(), &byte, 1), 0);
  EXPECT_EQ(errno, EPERM);
  // Punching a hole would zero bytes the receiver sees; only the write seal stops it.
  errno = 0;
  EXPECT_NE(::fallocate(fd.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096), 0);
  EXPECT_EQ(errno, EPERM);

  // A read-only shared mapping cannot be upgraded either.
  auto ro = map_readonly(fd.get(), 0, 4096);
  ASSERT_TRUE(ro.ok()) << ro.error().text;
  EXPECT_NE(::mprotect(const_cast<std::byte*>(ro->bytes().data()), 4096, PROT_READ | PROT_WRITE),
            0);
  EXPECT_TRUE(matches_pattern(ro->bytes(), 0));
}

TEST(ShmSeal, SealWriteRefusesFilesThatAreNotSealableMemfds) {
  UniqueFd file = make_regular_file(4096);
  ASSERT_TRUE(file);
  auto on_file = seal_write(file.get());
  ASSERT_FALSE(on_file.ok());
  EXPECT_EQ(on_file.error().code, Errc::invalid_argument);

  UniqueFd no_sealing(::memfd_create("qbus-nosealing", MFD_CLOEXEC));  // carries F_SEAL_SEAL
  ASSERT_TRUE(no_sealing);
  auto on_memfd = seal_write(no_sealing.get());
  ASSERT_FALSE(on_memfd.ok());
  EXPECT_EQ(on_memfd.error().code, Errc::invalid_argument);
  EXPECT_EQ(on_memfd.error().sys_errno, EPERM);
}

// ---------------------------------------------------------------------------------------
// map_writable / map_readonly / verify_sealed

TEST(ShmMap, WrittenBytesAreSeenReadOnlyAfterSealing) {
  constexpr std::size_t kSize = 3 * 4096 + 17;
  auto fd = create_region(kSize, "qbus-test", kMax);
  ASSERT_TRUE(fd.ok()) << fd.error().text;
  {
    auto map = map_writable(fd->get(), kSize);
    ASSERT_TRUE(map.ok()) << map.error().text;
    EXPECT_TRUE(map->writable());
    ASSERT_EQ(map->mutable_bytes().size(), kSize);
    fill_pattern(map->mutable_bytes());
  }
  ASSERT_TRUE(seal_write(fd->get()).ok());

  auto ro = map_readonly(fd->get(), 0, kSize);
  ASSERT_TRUE(ro.ok()) << ro.error().text;
  EXPECT_FALSE(ro->writable());
  EXPECT_TRUE(ro->mutable_bytes().empty());
  ASSERT_EQ(ro->bytes().size(), kSize);
  EXPECT_TRUE(matches_pattern(ro->bytes(), 0));
}

TEST(ShmMap, MappingStaysValidAfterTheFdIsClosed) {
  UniqueFd fd = make_sealed_region(64 * kKiB);
  ASSERT_TRUE(fd);
  auto ro = map_readonly(fd.get(), 100, 60 * kKiB);
  ASSERT_TRUE(ro.ok()) << ro.error().text;
  fd.reset();
  EXPECT_TRUE(matches_pattern(ro->bytes(), 100));
}

TEST(ShmMap, UnalignedOffsetsExposeExactlyTheRequestedBytes) {
  constexpr std::size_t kSize = 5 * 4096 + 123;
  UniqueFd fd = make_sealed_region(kSize);
  ASSERT_TRUE(fd);
  const std::pair<std::size_t, std::size_t> cases[] = {
      {0, 1},
      {1, 1},
      {1, 4095},
      {4095, 2},
      {4096, 4096},
      {4097, 10000},
      {8191, 1},
      {kSize - 1, 1},
      {kSize - 5000, 5000},
      {3, kSize - 3},
      {12345, 54321 % (kSize - 12345)},
  };
  for (const auto& [offset, length] : cases) {
    auto ro = map_readonly(fd.get(), offset, length);
    ASSERT_TRUE(ro.ok()) << "offset " << offset << " length " << length << ": " << ro.error().text;
    ASSERT_EQ(ro->bytes().size(), length);
    EXPECT_TRUE(matches_pattern(ro->bytes(), offset)) << "offset " << offset;
  }
}

TEST(ShmMap, ReadOnlyRefusesAMemfdThatIsNotWriteSealed) {
  UniqueFd fd = make_filled_region(16 * kKiB);
  ASSERT_TRUE(fd);
  auto ro = map_readonly(fd.get(), 0, 16 * kKiB);
  ASSERT_FALSE(ro.ok());
  EXPECT_EQ(ro.error().code, Errc::invalid_argument);
  EXPECT_NE(ro.error().text.find("write"), std::string::npos) << ro.error().text;
  EXPECT_FALSE(verify_sealed(fd.get()).ok());
  EXPECT_TRUE(verify_sealed(fd.get(), kSizeSeals).ok());
}

TEST(ShmMap, ReadOnlyRefusesAMemfdWithoutSizeSeals) {
  // A peer could write-seal its memfd yet leave it shrinkable: mapping it could SIGBUS.
  UniqueFd fd(::memfd_create("qbus-unsized", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  ASSERT_TRUE(fd);
  ASSERT_EQ(::ftruncate(fd.get(), 4096), 0);
  ASSERT_EQ(::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_WRITE), 0);
  auto ro = map_readonly(fd.get(), 0, 4096);
  ASSERT_FALSE(ro.ok());
  EXPECT_EQ(ro.error().code, Errc::invalid_argument);
  EXPECT_NE(ro.error().text.find("shrink, grow"), std::string::npos) << ro.error().text;
  auto rw = map_writable(fd.get(), 4096);
  EXPECT_FALSE(rw.ok());
}

TEST(ShmMap, ReadOnlyRefusesARegularFile) {
  UniqueFd file = make_regular_file(4096);
  ASSERT_TRUE(file);
  auto ro = map_readonly(file.get(), 0, 4096);
  ASSERT_FALSE(ro.ok());
  EXPECT_EQ(ro.error().code, Errc::invalid_argument);
  EXPECT_NE(ro.error().text.find("not a memfd"), std::string::npos) << ro.error().text;
  auto bits = seals(file.get());
  ASSERT_FALSE(bits.ok());
  EXPECT_EQ(bits.error().sys_errno, EINVAL);
}

TEST(ShmMap, ReadOnlyRefusesABadFd) {
  auto ro = map_readonly(-1, 0, 1);
  ASSERT_FALSE(ro.ok());
  EXPECT_EQ(ro.error().code, Errc::invalid_argument);
  EXPECT_EQ(ro.error().sys_errno, EBADF);
}

TEST(ShmMap, ReadOnlyRefusesRangesPastTheEnd) {
  constexpr std::size_t kSize = 2 * 4096;
  UniqueFd fd = make_sealed_region(kSize);
  ASSERT_TRUE(fd);
  const std::pair<std::size_t, std::size_t> cases[] = {
      {0, kSize + 1}, {kSize, 1}, {kSize - 1, 2}, {kSize + 4096, 1}, {4096, 4097},
  };
  for (const auto& [offset, length] : cases) {
    auto ro = map_readonly(fd.get(), offset, length);
    ASSERT_FALSE(ro.ok()) << "offset " << offset << " length " << length;
    EXPECT_EQ(ro.error().code, Errc::invalid_argument);
    EXPECT_NE(ro.error().text.find("outside"), std::string::npos) << ro.error().text;
  }
  EXPECT_TRUE(map_readonly(fd.get(), kSize - 1, 1).ok());
}

TEST(ShmMap, ReadOnlyRefusesRangesWhoseEndOverflows) {
  UniqueFd fd = make_sealed_region(4096);
  ASSERT_TRUE(fd);
  constexpr auto kMaxSize = std::numeric_limits<std::size_t>::max();
  const std::pair<std::size_t, std::size_t> cases[] = {
      {kMaxSize - 10, 100},
      {1, kMaxSize},
      {kMaxSize, kMaxSize},
      {4095, kMaxSize - 4094},
  };
  for (const auto& [offset, length] : cases) {
    auto ro = map_readonly(fd.get(), offset, length);
    ASSERT_FALSE(ro.ok()) << "offset " << offset << " length " << length;
    EXPECT_EQ(ro.error().code, Errc::invalid_argument);
  }
}

TEST(ShmMap, ZeroLengthIsRefused) {
  UniqueFd fd = make_sealed_region(4096);
  ASSERT_TRUE(fd);
  EXPECT_EQ(map_readonly(fd.get(), 0, 0).error().code, Errc::invalid_argument);
  auto region = create_region(4096, "qbus-test", kMax);
  ASSERT_TRUE(region.ok());
  EXPECT_EQ(map_writable(region->get(), 0).error().code, Errc::invalid_argument);
}

TEST(ShmMap, WritableRefusesMoreThanTheRegion) {
  auto fd = create_region(4096, "qbus-test", kMax);
  ASSERT_TRUE(fd.ok());
  auto map = map_writable(fd->get(), 4097);
  ASSERT_FALSE(map.ok());
  EXPECT_EQ(map.error().code, Errc::invalid_argument);
  EXPECT_TRUE(map_writable(fd->get(), 100).ok());
}

TEST(ShmMap, MovedFromMappingIsEmptyAndUnmapsOnce) {
  UniqueFd fd = make_sealed_region(4096);
  ASSERT_TRUE(fd);
  auto ro = map_readonly(fd.get(), 10, 20);
  ASSERT_TRUE(ro.ok());
  Mapping a = std::move(ro).value();
  Mapping b = std::move(a);
  EXPECT_TRUE(a.empty());  // NOLINT(bugprone-use-after-move): the moved-from state is the point
  EXPECT_TRUE(a.bytes().empty());
  ASSERT_FALSE(b.empty());
  EXPECT_TRUE(matches_pattern(b.bytes(), 10));
  b = Mapping{};
  EXPECT_TRUE(b.empty());
}

// ---------------------------------------------------------------------------------------
// Across processes and over many cycles

TEST(ShmProcess, ChildInheritingTheFdReadsTheSame64MiB) {
  constexpr std::size_t kSize = 64 * kMiB;
  UniqueFd fd = make_sealed_region(kSize);
  ASSERT_TRUE(fd);
  std::uint64_t expected = 0;
  {
    auto ro = map_readonly(fd.get(), 0, kSize);
    ASSERT_TRUE(ro.ok()) << ro.error().text;
    expected = hash_bytes(ro->bytes());
  }
  const int child_fd = fd.get();
  const int status = run_in_child([child_fd, expected] {
    auto ro = map_readonly(child_fd, 0, kSize);
    if (!ro) return 1;
    if (ro->bytes().size() != kSize) return 2;
    if (hash_bytes(ro->bytes()) != expected) return 3;
    if (!matches_pattern(ro->bytes().subspan(kSize - 4096), kSize - 4096)) return 4;
    return 0;
  });
  EXPECT_EQ(status, 0);
}

bool send_fd(int sock, int fd) {
  char byte = 'r';
  iovec iov{&byte, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  cmsghdr* cm = CMSG_FIRSTHDR(&msg);
  cm->cmsg_level = SOL_SOCKET;
  cm->cmsg_type = SCM_RIGHTS;
  cm->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(cm), &fd, sizeof(int));
  return ::sendmsg(sock, &msg, MSG_NOSIGNAL) == 1;
}

UniqueFd receive_fd(int sock) {
  char byte = 0;
  iovec iov{&byte, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  if (::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC) != 1) return UniqueFd{};
  cmsghdr* cm = CMSG_FIRSTHDR(&msg);
  if (cm == nullptr || cm->cmsg_type != SCM_RIGHTS) return UniqueFd{};
  int fd = -1;
  std::memcpy(&fd, CMSG_DATA(cm), sizeof(int));
  return UniqueFd(fd);
}

// The way the broker will hand regions over: the child exists before the region does, so
// it can only get it through SCM_RIGHTS. The sender closes its copy right after sending.
TEST(ShmProcess, ChildReceivingTheFdOverScmRightsReadsTheBytes) {
  int pair[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
  UniqueFd parent_end(pair[0]);
  UniqueFd child_end(pair[1]);
  constexpr std::size_t kSize = 1 * kMiB + 5;

  std::fflush(nullptr);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    parent_end.reset();
    UniqueFd got = receive_fd(child_end.get());
    if (!got) ::_exit(1);
    auto ro = map_readonly(got.get(), 7, kSize - 7);
    if (!ro) ::_exit(2);
    ::_exit(matches_pattern(ro->bytes(), 7) ? 0 : 3);
  }
  child_end.reset();
  {
    UniqueFd fd = make_sealed_region(kSize);
    ASSERT_TRUE(fd);
    EXPECT_TRUE(send_fd(parent_end.get(), fd.get()));
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(ShmProcess, ThousandCyclesLeakNoFdsAndNoMappings) {
  // Warm up anything that opens a descriptor lazily (the page-size cache, locale data).
  { UniqueFd warm = make_sealed_region(4096); }
  const std::size_t fds_before = count_open_fds();
  const std::size_t maps_before = count_memfd_mappings();
  for (int i = 0; i < 1000; ++i) {
    auto fd = create_region(64 * kKiB, "qbus-leak", kMax);
    ASSERT_TRUE(fd.ok()) << "cycle " << i << ": " << fd.error().text;
    {
      auto map = map_writable(fd->get(), 64 * kKiB);
      ASSERT_TRUE(map.ok()) << map.error().text;
      map->mutable_bytes()[static_cast<std::size_t>(i) % (64 * kKiB)] = std::byte{1};
    }
    ASSERT_FALSE(map_readonly(fd->get(), 0, 1).ok());  // error path: not sealed yet
    ASSERT_TRUE(seal_write(fd->get()).ok());
    auto ro = map_readonly(fd->get(), 4097, 1000);
    ASSERT_TRUE(ro.ok()) << ro.error().text;
    if (i == 0) {  // the counters do see a live region and a live mapping
      EXPECT_EQ(count_open_fds(), fds_before + 1);
      EXPECT_EQ(count_memfd_mappings(), maps_before + 1);
    }
    ASSERT_FALSE(map_readonly(fd->get(), 0, 64 * kKiB + 1).ok());   // error path: range
    ASSERT_FALSE(create_region(kMax + 1, "qbus-leak", kMax).ok());  // error path: size
  }
  EXPECT_EQ(count_open_fds(), fds_before);
  EXPECT_EQ(count_memfd_mappings(), maps_before);
}

}  // namespace
}  // namespace qbus::proto::shm
