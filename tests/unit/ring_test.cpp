// Unit tests of qbus::SpscRing: layout, items and wrap-around, limits, validation of a
// header the peer may have corrupted, timeouts and close in one process; then the same ring
// shared between forked processes over a memfd mapped MAP_SHARED (each process maps it at
// its own address), including the check that a blocked side sleeps instead of spinning.
#include "qbus/ring.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <optional>
#include <ostream>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace qbus {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// The header layout is an ABI between processes; these offsets pin it.
constexpr std::size_t kMagicAt = 0;
constexpr std::size_t kVersionAt = 4;
constexpr std::size_t kHeaderSizeAt = 8;
constexpr std::size_t kCapacityAt = 16;
constexpr std::size_t kTailAt = 128;
constexpr std::size_t kConsumerWaitingAt = 136;
constexpr std::size_t kHeadAt = 256;
constexpr std::size_t kProducerWaitingAt = 264;

// Generous: only a broken ring ever waits this long.
constexpr auto kPatience = 30s;

// ---- helpers -----------------------------------------------------------------------------

[[noreturn]] void fail_system(const char* what) {
  throw std::runtime_error(std::string(what) + ": " + std::strerror(errno));
}

// One MAP_SHARED mapping of a memfd; the fd is not owned.
class Mapping {
 public:
  Mapping(int fd, std::size_t size) : size_(size) {
    void* at = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (at == MAP_FAILED) fail_system("mmap");
    data_ = static_cast<std::byte*>(at);
  }
  ~Mapping() { ::munmap(data_, size_); }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;

  std::span<std::byte> bytes() const { return {data_, size_}; }

 private:
  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

// Shared memory as the broker will hand it out: a memfd, mapped shared. A forked child
// maps it again with remap(), so the two sides use different addresses.
class SharedMemory {
 public:
  explicit SharedMemory(std::size_t size) : fd_(make_memfd(size)), mapping_(fd_, size) {}
  ~SharedMemory() { ::close(fd_); }
  SharedMemory(const SharedMemory&) = delete;
  SharedMemory& operator=(const SharedMemory&) = delete;

  std::span<std::byte> bytes() const { return mapping_.bytes(); }
  Mapping remap() const { return Mapping(fd_, mapping_.bytes().size()); }

  template <typename T>
  T read(std::size_t offset) const {
    T value;
    std::memcpy(&value, bytes().data() + offset, sizeof(T));
    return value;
  }
  template <typename T>
  void write(std::size_t offset, T value) const {
    std::memcpy(bytes().data() + offset, &value, sizeof(T));
  }

 private:
  static int make_memfd(std::size_t size) {
    const int fd = ::memfd_create("qbus-ring-test", MFD_CLOEXEC);
    if (fd < 0) fail_system("memfd_create");
    if (::ftruncate(fd, static_cast<off_t>(size)) != 0) fail_system("ftruncate");
    return fd;
  }

  int fd_;
  Mapping mapping_;
};

// One-byte notifications over a pipe; both ends survive fork, so either process signals.
class Signal {
 public:
  Signal() {
    if (::pipe2(fds_, O_CLOEXEC) != 0) fail_system("pipe2");
  }
  ~Signal() {
    ::close(fds_[0]);
    ::close(fds_[1]);
  }
  Signal(const Signal&) = delete;
  Signal& operator=(const Signal&) = delete;

  void notify() const {
    if (::write(fds_[1], "x", 1) != 1) fail_system("write");
  }
  bool wait(std::chrono::milliseconds timeout) const {
    pollfd p{fds_[0], POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) return false;
    char c;
    return ::read(fds_[0], &c, 1) == 1;
  }

 private:
  int fds_[2] = {-1, -1};
};

// A forked child running `body`. What body returns (or the exception it threw) comes back
// through a pipe; the child leaves with _exit, so no parent object is destroyed twice.
// A child still running when the Child is destroyed is killed.
class Child {
 public:
  template <typename Body>
  explicit Child(Body&& body) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) fail_system("pipe2");
    pid_ = ::fork();
    if (pid_ < 0) fail_system("fork");
    if (pid_ == 0) {
      ::close(fds[0]);
      std::string out;
      try {
        out = body();
      } catch (const std::exception& e) {
        out = std::string("child threw: ") + e.what();
      } catch (...) {
        out = "child threw a non-exception";
      }
      std::size_t done = 0;
      while (done < out.size()) {
        const ssize_t n = ::write(fds[1], out.data() + done, out.size() - done);
        if (n <= 0) break;
        done += static_cast<std::size_t>(n);
      }
      ::_exit(0);
    }
    ::close(fds[1]);
    out_fd_ = fds[0];
  }
  ~Child() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    ::close(out_fd_);
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  pid_t pid() const { return pid_; }

  // True when the child has not finished within `window` (its pipe stayed silent).
  bool still_running_after(std::chrono::milliseconds window) const {
    pollfd p{out_fd_, POLLIN, 0};
    return ::poll(&p, 1, static_cast<int>(window.count())) == 0;
  }

  // What the child's body returned; on a crash, exception or timeout, text saying so.
  std::string finish(std::chrono::milliseconds timeout = kPatience) {
    std::string out;
    const auto deadline = Clock::now() + timeout;
    for (;;) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      pollfd p{out_fd_, POLLIN, 0};
      if (left <= 0ms || ::poll(&p, 1, static_cast<int>(left.count())) != 1) {
        out += " [child timed out; killed]";
        break;
      }
      char buf[512];
      const ssize_t n = ::read(out_fd_, buf, sizeof(buf));
      if (n <= 0) break;
      out.append(buf, static_cast<std::size_t>(n));
    }
    ::kill(pid_, SIGKILL);  // no-op unless the child hung
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
      out += " [child died: status " + std::to_string(status) + "]";
    return out;
  }

 private:
  pid_t pid_ = -1;
  int out_fd_ = -1;
};

std::chrono::microseconds cpu_time() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  const auto tv = [](const timeval& t) {
    return std::chrono::seconds(t.tv_sec) + std::chrono::microseconds(t.tv_usec);
  };
  return tv(usage.ru_utime) + tv(usage.ru_stime);
}

// Waits (bounded) until a side has announced it sleeps by setting its wait word.
bool wait_for_sleeper(const SharedMemory& memory, std::size_t word_at) {
  const auto deadline = Clock::now() + kPatience;
  while (Clock::now() < deadline) {
    if (std::atomic_ref<std::uint32_t>(
            *reinterpret_cast<std::uint32_t*>(memory.bytes().data() + word_at))
            .load() == 1)
      return true;
    std::this_thread::sleep_for(1ms);
  }
  return false;
}

std::span<const std::byte> bytes_of(std::string_view text) {
  return std::as_bytes(std::span(text.data(), text.size()));
}

std::string text_of(std::span<const std::byte> bytes) {
  return std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

// Item `seq` of a test stream: its size varies with seq, its first 8 bytes carry seq (when
// it has room) and the rest a pattern of seq, so a lost, repeated, reordered or torn item
// shows.
std::size_t item_size(std::uint64_t seq, std::size_t largest) {
  return static_cast<std::size_t>((seq * 2654435761u >> 5) % (largest + 1));
}

std::byte pattern(std::uint64_t seq, std::size_t k) {
  return static_cast<std::byte>((seq * 131 + k * 7 + (seq >> 8)) & 0xff);
}

std::vector<std::byte> make_item(std::uint64_t seq, std::size_t size) {
  std::vector<std::byte> item(size);
  for (std::size_t k = 0; k < size; ++k)
    item[k] = pattern(seq, k);
  if (size >= sizeof(seq)) std::memcpy(item.data(), &seq, sizeof(seq));
  return item;
}

bool item_matches(std::uint64_t seq, std::size_t size, std::span<const std::byte> got) {
  if (got.size() != size) return false;
  const auto want = make_item(seq, size);
  return size == 0 || std::memcmp(want.data(), got.data(), size) == 0;
}

template <typename F>
Errc error_code_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.code();
  }
  return Errc::ok;
}

// A ring and a second handle on the same memory: the usual producer/consumer pair.
struct Pair {
  explicit Pair(std::size_t capacity)
      : memory(SpscRing::required_size(capacity)),
        producer(SpscRing::create(memory.bytes(), capacity)),
        consumer(SpscRing::attach(memory.bytes())),
        buffer(producer.max_item_size()) {}

  std::optional<std::string> pop() {
    const auto n = consumer.try_pop(buffer);
    if (!n) return std::nullopt;
    return text_of(std::span(buffer).first(*n));
  }

  // Moves both positions `bytes` (a multiple of 8) further on an empty ring.
  void advance(std::size_t bytes) {
    while (bytes > 0) {
      const std::size_t record = std::min(bytes, producer.max_item_size() + 8);
      ASSERT_TRUE(producer.try_push(make_item(0, record - 8)));
      ASSERT_TRUE(pop());
      bytes -= record;
    }
  }

  SharedMemory memory;
  SpscRing producer;
  SpscRing consumer;
  std::vector<std::byte> buffer;
};

// ---- layout ------------------------------------------------------------------------------

TEST(RingLayout, CapacityIsRoundedUpToAPowerOfTwo) {
  EXPECT_EQ(SpscRing::round_capacity(1), SpscRing::kMinCapacity);
  EXPECT_EQ(SpscRing::round_capacity(1000), 1024u);
  EXPECT_EQ(SpscRing::round_capacity(4096), 4096u);
  EXPECT_EQ(SpscRing::required_size(1000), SpscRing::kHeaderSize + 1024);
  EXPECT_EQ(SpscRing::max_item_size_for(1024), 504u);
}

TEST(RingLayout, ZeroOrHugeCapacityIsRejected) {
  EXPECT_EQ(error_code_of([] { SpscRing::required_size(0); }), Errc::invalid_argument);
  EXPECT_EQ(error_code_of([] { SpscRing::required_size(SpscRing::kMaxCapacity + 1); }),
            Errc::invalid_argument);
}

TEST(RingLayout, CreateRejectsTooSmallOrMisalignedMemory) {
  SharedMemory memory(SpscRing::required_size(1024) + 4096);
  const auto all = memory.bytes();
  EXPECT_EQ(
      error_code_of([&] { SpscRing::create(all.first(SpscRing::required_size(1024) - 1), 1024); }),
      Errc::invalid_argument);
  EXPECT_EQ(error_code_of([&] { SpscRing::create(all.subspan(8), 1024); }), Errc::invalid_argument);
  EXPECT_EQ(error_code_of([&] { SpscRing::create({}, 1024); }), Errc::invalid_argument);
  EXPECT_EQ(
      error_code_of([&] { SpscRing::create(all.first(SpscRing::required_size(1024)), 1024); }),
      Errc::ok);
}

TEST(RingLayout, HeaderFieldsSitAtTheirPinnedOffsets) {
  SharedMemory memory(SpscRing::required_size(1024));
  auto ring = SpscRing::create(memory.bytes(), 1024);
  EXPECT_EQ(memory.read<std::uint32_t>(kMagicAt), 0x47524251u);
  EXPECT_EQ(memory.read<std::uint32_t>(kVersionAt), 1u);
  EXPECT_EQ(memory.read<std::uint32_t>(kHeaderSizeAt), SpscRing::kHeaderSize);
  EXPECT_EQ(memory.read<std::uint64_t>(kCapacityAt), 1024u);
  ASSERT_TRUE(ring.try_push(bytes_of("abc")));
  EXPECT_EQ(memory.read<std::uint64_t>(kTailAt), 16u);  // 8-byte record header + 3, padded
  std::byte out[8];
  ASSERT_TRUE(ring.try_pop(out));
  EXPECT_EQ(memory.read<std::uint64_t>(kHeadAt), 16u);
}

// ---- items -------------------------------------------------------------------------------

TEST(RingItems, NewRingIsEmpty) {
  Pair ring(1024);
  EXPECT_EQ(ring.pop(), std::nullopt);
  EXPECT_EQ(ring.consumer.try_peek(), std::nullopt);
  EXPECT_FALSE(ring.consumer.closed());
  EXPECT_FALSE(ring.consumer.end_of_stream());
}

TEST(RingItems, ItemsComeOutInOrderWithTheirBytes) {
  Pair ring(1024);
  ASSERT_TRUE(ring.producer.try_push(bytes_of("first")));
  ASSERT_TRUE(ring.producer.try_push(bytes_of("second item")));
  EXPECT_EQ(ring.pop(), "first");
  EXPECT_EQ(ring.pop(), "second item");
  EXPECT_EQ(ring.pop(), std::nullopt);
}

TEST(RingItems, EmptyItemsAreItems) {
  Pair ring(1024);
  ASSERT_TRUE(ring.producer.try_push({}));
  ASSERT_TRUE(ring.producer.try_push(bytes_of("x")));
  EXPECT_EQ(ring.pop(), "");
  EXPECT_EQ(ring.pop(), "x");
}

TEST(RingItems, FullRingRefusesUntilTheConsumerMakesRoom) {
  Pair ring(1024);
  int pushed = 0;
  while (ring.producer.try_push(bytes_of("8 bytes!")))
    ++pushed;
  EXPECT_EQ(pushed, 1024 / 16);  // each takes a 16-byte record
  EXPECT_FALSE(ring.producer.try_push({}));
  EXPECT_EQ(ring.pop(), "8 bytes!");
  EXPECT_TRUE(ring.producer.try_push(bytes_of("8 bytes!")));
  EXPECT_FALSE(ring.producer.try_push({}));
}

TEST(RingItems, WrapAroundWithOddSizesKeepsEveryItemIntact) {
  Pair ring(256);
  const std::size_t largest = ring.producer.max_item_size();
  std::mt19937 random(42);
  std::deque<std::pair<std::uint64_t, std::size_t>> in_flight;
  std::uint64_t next = 0;
  std::uint64_t popped = 0;
  while (popped < 20000) {
    // Random bursts of pushes and pops, so fill levels and wrap points vary.
    const bool pushing = random() % 2 == 0;
    for (auto burst = random() % 5 + 1; burst > 0; --burst) {
      if (pushing) {
        const std::size_t size = random() % (largest / 2) * 2 + 1;  // odd, up to largest - 1
        if (!ring.producer.try_push(make_item(next, size))) break;
        in_flight.emplace_back(next++, size);
      } else {
        const auto n = ring.consumer.try_pop(ring.buffer);
        if (!n) {
          ASSERT_TRUE(in_flight.empty());
          break;
        }
        ASSERT_FALSE(in_flight.empty());
        const auto [seq, size] = in_flight.front();
        in_flight.pop_front();
        ASSERT_TRUE(item_matches(seq, size, std::span(ring.buffer).first(*n))) << "item " << seq;
        ++popped;
      }
    }
  }
  // Many trips around the 256-byte data area.
  EXPECT_GT(ring.memory.read<std::uint64_t>(kHeadAt), 100u * 256u);
}

TEST(RingItems, LargestItemFitsAnEmptyRingAtEveryOffset) {
  for (std::size_t offset = 0; offset < 256; offset += 8) {
    Pair ring(256);
    ring.advance(offset);
    const auto big = make_item(offset, ring.producer.max_item_size());
    ASSERT_TRUE(ring.producer.try_push(big)) << "at offset " << offset;
    const auto n = ring.consumer.try_pop(ring.buffer);
    ASSERT_TRUE(n);
    EXPECT_TRUE(item_matches(offset, big.size(), std::span(ring.buffer).first(*n)));
  }
}

TEST(RingItems, OversizeItemIsRefusedAndNothingIsQueued) {
  Pair ring(256);
  const auto too_big = make_item(1, ring.producer.max_item_size() + 1);
  EXPECT_EQ(error_code_of([&] { ring.producer.try_push(too_big); }), Errc::payload_too_large);
  EXPECT_EQ(error_code_of([&] { ring.producer.push(too_big, 1s); }), Errc::payload_too_large);
  EXPECT_EQ(error_code_of([&] { ring.producer.try_reserve(too_big.size()); }),
            Errc::payload_too_large);
  EXPECT_EQ(ring.pop(), std::nullopt);
  EXPECT_TRUE(ring.producer.try_push(bytes_of("fine")));
  EXPECT_EQ(ring.pop(), "fine");
}

TEST(RingItems, PopIntoATooSmallBufferThrowsAndKeepsTheItem) {
  Pair ring(1024);
  ASSERT_TRUE(ring.producer.try_push(bytes_of("twelve bytes")));
  std::byte small[4];
  EXPECT_EQ(error_code_of([&] { ring.consumer.try_pop(small); }), Errc::invalid_argument);
  EXPECT_EQ(ring.pop(), "twelve bytes");
}

TEST(RingItems, PeekGivesTheSameItemInPlaceUntilRelease) {
  Pair ring(1024);
  ASSERT_TRUE(ring.producer.try_push(bytes_of("one")));
  ASSERT_TRUE(ring.producer.try_push(bytes_of("two")));
  const auto first = ring.consumer.try_peek();
  ASSERT_TRUE(first);
  EXPECT_EQ(text_of(*first), "one");
  // Payloads start 8-byte aligned inside the (128-aligned) mapping.
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(first->data()) % 8, 0u);
  const auto again = ring.consumer.try_peek();
  ASSERT_TRUE(again);
  EXPECT_EQ(again->data(), first->data());
  ring.consumer.release();
  EXPECT_EQ(text_of(*ring.consumer.try_peek()), "two");
  ring.consumer.release();
  ring.consumer.release();  // nothing peeked: no-op
  EXPECT_EQ(ring.consumer.try_peek(), std::nullopt);
}

TEST(RingItems, ReserveAndCommitPublishWhatWasWrittenInPlace) {
  Pair ring(1024);
  auto room = ring.producer.try_reserve(100);
  ASSERT_TRUE(room);
  ASSERT_EQ(room->size(), 100u);
  std::memcpy(room->data(), "partial", 7);
  EXPECT_EQ(ring.pop(), std::nullopt);  // nothing visible before commit
  ring.producer.commit(7);
  EXPECT_EQ(ring.pop(), "partial");
}

TEST(RingItems, CommitNeedsAReservationItFits) {
  Pair ring(1024);
  EXPECT_EQ(error_code_of([&] { ring.producer.commit(0); }), Errc::invalid_argument);
  ASSERT_TRUE(ring.producer.try_reserve(10));
  EXPECT_EQ(error_code_of([&] { ring.producer.commit(11); }), Errc::invalid_argument);
  ring.producer.commit(10);
  EXPECT_EQ(error_code_of([&] { ring.producer.commit(10); }), Errc::invalid_argument);
}

TEST(RingItems, AnAbandonedReservationIsDroppedByTheNextPush) {
  Pair ring(256);
  ring.advance(200);
  ASSERT_TRUE(ring.producer.try_reserve(100));  // must wrap: writes a marker at 200
  // The marker is overwritten by the next record, which fits in the 56 bytes at 200.
  ASSERT_TRUE(ring.producer.try_push(bytes_of("kept")));
  EXPECT_EQ(ring.pop(), "kept");
  EXPECT_EQ(ring.pop(), std::nullopt);
}

TEST(RingItems, MovedHandleKeepsWorking) {
  Pair ring(1024);
  SpscRing producer = std::move(ring.producer);
  ASSERT_TRUE(producer.try_push(bytes_of("moved")));
  EXPECT_EQ(ring.pop(), "moved");
}

// ---- attach and an untrusted peer --------------------------------------------------------

TEST(RingAttach, SecondMappingAtAnotherAddressSeesTheSameRing) {
  SharedMemory memory(SpscRing::required_size(1024));
  auto producer = SpscRing::create(memory.bytes(), 1024);
  ASSERT_TRUE(producer.try_push(bytes_of("before attach")));
  const Mapping other = memory.remap();
  ASSERT_NE(other.bytes().data(), memory.bytes().data());
  auto consumer = SpscRing::attach(other.bytes());
  EXPECT_EQ(consumer.capacity(), 1024u);
  std::byte out[64];
  auto n = consumer.try_pop(out);
  ASSERT_TRUE(n);
  EXPECT_EQ(text_of(std::span(out).first(*n)), "before attach");
  ASSERT_TRUE(producer.try_push(bytes_of("after")));
  n = consumer.try_pop(out);
  ASSERT_TRUE(n);
  EXPECT_EQ(text_of(std::span(out).first(*n)), "after");
}

TEST(RingAttach, ARestartedConsumerResumesWhereTheLastOneReleased) {
  Pair ring(1024);
  ASSERT_TRUE(ring.producer.try_push(bytes_of("a")));
  ASSERT_TRUE(ring.producer.try_push(bytes_of("b")));
  EXPECT_EQ(ring.pop(), "a");
  auto replacement = SpscRing::attach(ring.memory.bytes());
  std::byte out[8];
  const auto n = replacement.try_pop(out);
  ASSERT_TRUE(n);
  EXPECT_EQ(text_of(std::span(out).first(*n)), "b");
}

struct Corruption {
  const char* name;
  std::size_t offset;
  std::uint64_t value;
  std::size_t width;  // bytes written
};

void PrintTo(const Corruption& c, std::ostream* os) {
  *os << c.name;
}

class RingAttachRejects : public ::testing::TestWithParam<Corruption> {};

TEST_P(RingAttachRejects, CorruptedHeader) {
  const Corruption& c = GetParam();
  SharedMemory memory(SpscRing::required_size(1024));
  SpscRing::create(memory.bytes(), 1024);
  if (c.width == 4)
    memory.write(c.offset, static_cast<std::uint32_t>(c.value));
  else
    memory.write(c.offset, c.value);
  EXPECT_EQ(error_code_of([&] { SpscRing::attach(memory.bytes()); }), Errc::invalid_argument);
}

INSTANTIATE_TEST_SUITE_P(
    Fields, RingAttachRejects,
    ::testing::Values(Corruption{"magic", kMagicAt, 0x12345678, 4},
                      Corruption{"zeroed_magic", kMagicAt, 0, 4},
                      Corruption{"version", kVersionAt, 2, 4},
                      Corruption{"header_size", kHeaderSizeAt, 64, 4},
                      Corruption{"capacity_not_power_of_two", kCapacityAt, 1000, 8},
                      Corruption{"capacity_below_minimum", kCapacityAt, 32, 8},
                      Corruption{"capacity_beyond_memory", kCapacityAt, 2048, 8},
                      Corruption{"capacity_huge", kCapacityAt, std::uint64_t{1} << 63, 8},
                      Corruption{"tail_misaligned", kTailAt, 3, 8},
                      Corruption{"tail_behind_head", kHeadAt, 16, 8},
                      Corruption{"tail_beyond_capacity", kTailAt, 1032, 8}),
    [](const auto& param_info) { return std::string(param_info.param.name); });

TEST(RingAttach, RejectsMemoryTooSmallForTheHeaderOrTheData) {
  SharedMemory memory(SpscRing::required_size(1024));
  SpscRing::create(memory.bytes(), 1024);
  EXPECT_EQ(error_code_of([&] { SpscRing::attach(memory.bytes().first(100)); }),
            Errc::invalid_argument);
  EXPECT_EQ(
      error_code_of([&] { SpscRing::attach(memory.bytes().first(SpscRing::kHeaderSize + 1023)); }),
      Errc::invalid_argument);
  EXPECT_EQ(error_code_of([&] { SpscRing::attach(memory.bytes().subspan(128)); }),
            Errc::invalid_argument);  // no header there
  EXPECT_EQ(error_code_of([&] { SpscRing::attach(memory.bytes().subspan(8)); }),
            Errc::invalid_argument);  // misaligned
}

TEST(RingPeer, WritePositionBeyondTheDataIsDetected) {
  Pair ring(1024);
  ring.memory.write<std::uint64_t>(kTailAt, 2048);
  EXPECT_EQ(error_code_of([&] { ring.consumer.try_pop(ring.buffer); }), Errc::protocol_violation);
}

TEST(RingPeer, ItemLengthBeyondThePublishedDataIsDetected) {
  Pair ring(1024);
  ASSERT_TRUE(ring.producer.try_push(bytes_of("short")));
  const std::size_t data = SpscRing::kHeaderSize;
  ring.memory.write<std::uint32_t>(data, 400);  // within the item limit, past the write position
  EXPECT_EQ(error_code_of([&] { ring.consumer.try_pop(ring.buffer); }), Errc::protocol_violation);
  ring.memory.write<std::uint32_t>(data, 0x7fffffff);  // beyond the item limit
  EXPECT_EQ(error_code_of([&] { ring.consumer.try_pop(ring.buffer); }), Errc::protocol_violation);
}

TEST(RingPeer, WrapMarkerPastTheWritePositionIsDetected) {
  Pair ring(1024);
  ASSERT_TRUE(ring.producer.try_push(bytes_of("short")));
  ring.memory.write<std::uint32_t>(SpscRing::kHeaderSize, 0xffffffff);
  EXPECT_EQ(error_code_of([&] { ring.consumer.try_pop(ring.buffer); }), Errc::protocol_violation);
}

TEST(RingPeer, ReadPositionAheadOfTheWritePositionIsDetected) {
  Pair ring(256);
  while (ring.producer.try_push(bytes_of("fill"))) {
  }
  ring.memory.write<std::uint64_t>(kHeadAt, 4096);  // "released" bytes never written
  EXPECT_EQ(error_code_of([&] { ring.producer.try_push(bytes_of("more")); }),
            Errc::protocol_violation);
}

// ---- timeouts and close ------------------------------------------------------------------

TEST(RingWait, PopOnAnEmptyRingTimesOut) {
  Pair ring(1024);
  const auto start = Clock::now();
  EXPECT_EQ(ring.consumer.pop(ring.buffer, 50ms), std::nullopt);
  EXPECT_GE(Clock::now() - start, 50ms);
  EXPECT_FALSE(ring.consumer.end_of_stream());
  EXPECT_EQ(ring.consumer.peek(0ms), std::nullopt);
  EXPECT_EQ(ring.memory.read<std::uint32_t>(kConsumerWaitingAt), 0u);  // cleared on the way out
}

TEST(RingWait, PushOnAFullRingTimesOut) {
  Pair ring(256);
  while (ring.producer.try_push(bytes_of("fill"))) {
  }
  const auto start = Clock::now();
  EXPECT_FALSE(ring.producer.push(bytes_of("more"), 50ms));
  EXPECT_GE(Clock::now() - start, 50ms);
  EXPECT_FALSE(ring.producer.push(bytes_of("more"), 0ms));
  EXPECT_EQ(ring.producer.reserve(4, 0ms), std::nullopt);
  EXPECT_EQ(ring.memory.read<std::uint32_t>(kProducerWaitingAt), 0u);
}

TEST(RingWait, PushAndPopWithTimeoutSucceedAtOnceWhenPossible) {
  Pair ring(1024);
  EXPECT_TRUE(ring.producer.push(bytes_of("now"), 0ms));
  const auto n = ring.consumer.pop(ring.buffer, 0ms);
  ASSERT_TRUE(n);
  EXPECT_EQ(text_of(std::span(ring.buffer).first(*n)), "now");
}

TEST(RingClose, ConsumerDrainsThenSeesEndOfStream) {
  Pair ring(1024);
  ASSERT_TRUE(ring.producer.try_push(bytes_of("last words")));
  ring.producer.close();
  ring.producer.close();  // idempotent
  EXPECT_TRUE(ring.consumer.closed());
  EXPECT_FALSE(ring.consumer.end_of_stream());
  const auto n = ring.consumer.pop(ring.buffer, kForever);
  ASSERT_TRUE(n);
  EXPECT_EQ(text_of(std::span(ring.buffer).first(*n)), "last words");
  EXPECT_EQ(ring.consumer.pop(ring.buffer, kForever), std::nullopt);
  EXPECT_TRUE(ring.consumer.end_of_stream());
}

TEST(RingClose, PushAfterCloseThrowsConnectionClosed) {
  Pair ring(1024);
  ring.consumer.close();  // either side may close
  EXPECT_EQ(error_code_of([&] { ring.producer.try_push(bytes_of("x")); }), Errc::connection_closed);
  EXPECT_EQ(error_code_of([&] { ring.producer.push(bytes_of("x"), 1s); }), Errc::connection_closed);
}

TEST(RingClose, CloseWakesABlockedConsumer) {
  Pair ring(1024);
  std::optional<std::size_t> result{123};
  bool end = false;
  Clock::duration waited{};
  std::thread consumer([&] {
    const auto start = Clock::now();
    result = ring.consumer.pop(ring.buffer, kPatience);
    waited = Clock::now() - start;
    end = ring.consumer.end_of_stream();
  });
  ASSERT_TRUE(wait_for_sleeper(ring.memory, kConsumerWaitingAt));
  ring.producer.close();
  consumer.join();
  EXPECT_EQ(result, std::nullopt);
  EXPECT_TRUE(end);
  EXPECT_LT(waited, kPatience / 2);
}

TEST(RingClose, CloseWakesABlockedProducer) {
  Pair ring(256);
  while (ring.producer.try_push(bytes_of("fill"))) {
  }
  Errc code = Errc::ok;
  std::thread producer(
      [&] { code = error_code_of([&] { ring.producer.push(bytes_of("more"), kPatience); }); });
  ASSERT_TRUE(wait_for_sleeper(ring.memory, kProducerWaitingAt));
  ring.consumer.close();
  producer.join();
  EXPECT_EQ(code, Errc::connection_closed);
}

TEST(RingThreads, ProducerAndConsumerThreadsPassItemsInOrder) {
  Pair ring(512);
  constexpr std::uint64_t kItems = 200000;
  const std::size_t largest = ring.producer.max_item_size();
  std::thread producer([&] {
    for (std::uint64_t seq = 0; seq < kItems; ++seq)
      if (!ring.producer.push(make_item(seq, item_size(seq, largest)), kPatience)) return;
    ring.producer.close();
  });
  std::uint64_t seq = 0;
  while (auto n = ring.consumer.pop(ring.buffer, kPatience)) {
    if (!item_matches(seq, item_size(seq, largest), std::span(ring.buffer).first(*n))) {
      ADD_FAILURE() << "item " << seq << " differs";
      break;
    }
    ++seq;
  }
  ring.consumer.close();  // unblocks the producer if we stopped early
  producer.join();
  EXPECT_EQ(seq, kItems);
  EXPECT_TRUE(ring.consumer.end_of_stream());
}

// ---- across processes --------------------------------------------------------------------

TEST(RingProcesses, AMillionVariableSizeItemsArriveInOrder) {
  constexpr std::uint64_t kItems = 1'000'000;
  constexpr std::size_t kCapacity = 64 * 1024;
  constexpr std::size_t kLargest = 300;
  SharedMemory memory(SpscRing::required_size(kCapacity));
  SpscRing::create(memory.bytes(), kCapacity);
  Child producer([&]() -> std::string {
    const Mapping mine = memory.remap();
    auto ring = SpscRing::attach(mine.bytes());
    for (std::uint64_t seq = 0; seq < kItems; ++seq)
      if (!ring.push(make_item(seq, item_size(seq, kLargest)), kPatience))
        return "push of item " + std::to_string(seq) + " timed out";
    ring.close();
    return "";
  });
  auto ring = SpscRing::attach(memory.bytes());
  std::vector<std::byte> buffer(ring.max_item_size());
  const auto start = Clock::now();
  std::uint64_t seq = 0;
  std::uint64_t bytes = 0;
  while (auto n = ring.pop(buffer, kPatience)) {
    if (!item_matches(seq, item_size(seq, kLargest), std::span(buffer).first(*n))) {
      ADD_FAILURE() << "item " << seq << " differs (size " << *n << ")";
      break;
    }
    bytes += *n;
    ++seq;
  }
  const std::chrono::duration<double> took = Clock::now() - start;
  EXPECT_EQ(seq, kItems);
  EXPECT_TRUE(ring.end_of_stream());
  EXPECT_EQ(producer.finish(), "");
  // Reported, never asserted: timing claims belong in bench/.
  const double rate = static_cast<double>(seq) / took.count();
  std::printf("[ info     ] %llu items (%llu payload bytes) in %.3f s: %.0f items/s\n",
              static_cast<unsigned long long>(seq), static_cast<unsigned long long>(bytes),
              took.count(), rate);
  RecordProperty("items_per_second", std::to_string(static_cast<long long>(rate)));
}

// The child consumer blocks on an empty ring through a deliberate idle window; its CPU time
// over that window shows whether it slept or spun.
TEST(RingProcesses, ConsumerBlockedOnAnEmptyRingSleepsUntilAPush) {
  SharedMemory memory(SpscRing::required_size(4096));
  auto ring = SpscRing::create(memory.bytes(), 4096);
  Signal about_to_wait;
  Child consumer([&]() -> std::string {
    const Mapping mine = memory.remap();
    auto me = SpscRing::attach(mine.bytes());
    std::vector<std::byte> out(me.max_item_size());
    const auto cpu_before = cpu_time();
    const auto start = Clock::now();
    about_to_wait.notify();
    const auto n = me.pop(out, kPatience);
    const auto wall = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start);
    const auto cpu = cpu_time() - cpu_before;
    if (!n) return "pop timed out";
    if (text_of(std::span(out).first(*n)) != "wake up") return "wrong item";
    return std::to_string(cpu.count()) + " " + std::to_string(wall.count());
  });
  ASSERT_TRUE(about_to_wait.wait(kPatience));
  ASSERT_TRUE(wait_for_sleeper(memory, kConsumerWaitingAt));
  EXPECT_TRUE(consumer.still_running_after(300ms));  // the idle window
  ASSERT_TRUE(ring.try_push(bytes_of("wake up")));
  const std::string out = consumer.finish();
  long long cpu_us = -1;
  long long wall_us = -1;
  ASSERT_EQ(std::sscanf(out.c_str(), "%lld %lld", &cpu_us, &wall_us), 2) << out;
  EXPECT_GE(wall_us, 300'000);
  EXPECT_LT(cpu_us, 50'000) << "the blocked consumer used " << cpu_us << " us of CPU in " << wall_us
                            << " us";
  std::printf("[ info     ] blocked consumer: %lld us CPU over %lld us\n", cpu_us, wall_us);
}

TEST(RingProcesses, ProducerBlockedOnAFullRingSleepsUntilAPop) {
  constexpr std::size_t kCapacity = 4096;
  constexpr std::size_t kItem = 56;  // a 64-byte record: the ring holds exactly 64
  SharedMemory memory(SpscRing::required_size(kCapacity));
  auto ring = SpscRing::create(memory.bytes(), kCapacity);
  Signal about_to_wait;
  Child producer([&]() -> std::string {
    const Mapping mine = memory.remap();
    auto me = SpscRing::attach(mine.bytes());
    std::uint64_t seq = 0;
    while (me.try_push(make_item(seq, kItem)))
      ++seq;
    if (seq != kCapacity / 64) return "ring took " + std::to_string(seq) + " items";
    const auto cpu_before = cpu_time();
    const auto start = Clock::now();
    about_to_wait.notify();
    const bool pushed = me.push(make_item(seq, kItem), kPatience);
    const auto wall = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start);
    const auto cpu = cpu_time() - cpu_before;
    if (!pushed) return "push timed out";
    return std::to_string(cpu.count()) + " " + std::to_string(wall.count());
  });
  ASSERT_TRUE(about_to_wait.wait(kPatience));
  ASSERT_TRUE(wait_for_sleeper(memory, kProducerWaitingAt));
  EXPECT_TRUE(producer.still_running_after(300ms));  // the idle window
  std::vector<std::byte> out(ring.max_item_size());
  auto n = ring.try_pop(out);  // room for exactly one more
  ASSERT_TRUE(n);
  EXPECT_TRUE(item_matches(0, kItem, std::span(out).first(*n)));
  const std::string result = producer.finish();
  long long cpu_us = -1;
  long long wall_us = -1;
  ASSERT_EQ(std::sscanf(result.c_str(), "%lld %lld", &cpu_us, &wall_us), 2) << result;
  EXPECT_GE(wall_us, 300'000);
  EXPECT_LT(cpu_us, 50'000) << "the blocked producer used " << cpu_us << " us of CPU in " << wall_us
                            << " us";
  for (std::uint64_t seq = 1; seq <= kCapacity / 64; ++seq) {
    n = ring.try_pop(out);
    ASSERT_TRUE(n) << "item " << seq;
    EXPECT_TRUE(item_matches(seq, kItem, std::span(out).first(*n))) << "item " << seq;
  }
  EXPECT_EQ(ring.try_pop(out), std::nullopt);
  std::printf("[ info     ] blocked producer: %lld us CPU over %lld us\n", cpu_us, wall_us);
}

TEST(RingProcesses, CloseWakesAConsumerWaitingForeverInAnotherProcess) {
  SharedMemory memory(SpscRing::required_size(1024));
  auto ring = SpscRing::create(memory.bytes(), 1024);
  Child consumer([&]() -> std::string {
    const Mapping mine = memory.remap();
    auto me = SpscRing::attach(mine.bytes());
    std::byte out[64];
    if (me.pop(out, kForever)) return "got an item from an empty ring";
    if (!me.end_of_stream()) return "woke without end of stream";
    return "";
  });
  ASSERT_TRUE(wait_for_sleeper(memory, kConsumerWaitingAt));
  ring.close();
  EXPECT_EQ(consumer.finish(), "");
}

TEST(RingProcesses, ADeadProducerLeavesTheConsumerOnlyItsTimeout) {
  SharedMemory memory(SpscRing::required_size(1024));
  SpscRing::create(memory.bytes(), 1024);
  {
    Child producer([&]() -> std::string {
      auto me = SpscRing::attach(memory.bytes());
      me.try_push(bytes_of("before dying"));
      ::_exit(0);  // dies without close
    });
    EXPECT_EQ(producer.finish(), "");
  }
  auto ring = SpscRing::attach(memory.bytes());
  std::byte out[64];
  const auto n = ring.pop(out, kPatience);
  ASSERT_TRUE(n);
  EXPECT_EQ(text_of(std::span(out).first(*n)), "before dying");
  EXPECT_EQ(ring.pop(out, 50ms), std::nullopt);
  EXPECT_FALSE(ring.end_of_stream());
}

}  // namespace
}  // namespace qbus
