#include "qbus/ring.hpp"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <climits>
#include <cstddef>
#include <cstring>
#include <new>
#include <string>
#include <utility>

namespace qbus {

// The shared header. Line 0 is written once by create() (closed aside); line 1 belongs to
// the producer and line 2 to the consumer, each with the wait word the *other* side reads
// on every operation, so the hot path touches no line its peer writes in steady state.
// Lines are 128 bytes apart because adjacent-line prefetchers pair 64-byte lines.
struct SpscRing::Header {
  std::uint32_t magic;
  std::uint32_t version;
  std::uint32_t header_size;
  std::uint32_t closed;  // 0 open, 1 closed
  std::uint64_t capacity;

  // Bytes ever published by the producer (its write position).
  alignas(128) std::uint64_t tail;
  // Futex word: the consumer sets it to 1 before sleeping; whoever wakes it clears it.
  std::uint32_t consumer_waiting;

  // Bytes ever released by the consumer (its read position).
  alignas(128) std::uint64_t head;
  // Futex word: the producer sets it to 1 before sleeping on a full ring.
  std::uint32_t producer_waiting;
};

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::uint32_t kMagic = 0x47524251;  // "QBRG" in memory on little-endian hosts
constexpr std::uint32_t kVersion = 1;
// Record length value marking the rest of the data area as unused: read on at offset 0.
constexpr std::uint32_t kSkipMarker = 0xffffffff;
constexpr std::size_t kRecordAlign = 8;
// Pause iterations before sleeping: a few microseconds, enough to catch a peer that is
// about to act without a system call, too short to matter when idle.
constexpr int kSpinIterations = 128;
// Longer timeouts are taken as "for ever" instead of overflowing the clock.
constexpr auto kLongestTimeout = std::chrono::hours(24 * 365);

static_assert(std::atomic_ref<std::uint64_t>::is_always_lock_free,
              "the shared header needs lock-free (address-free) 64-bit atomics");
static_assert(std::atomic_ref<std::uint32_t>::is_always_lock_free);
static_assert(std::atomic_ref<std::uint64_t>::required_alignment <= alignof(std::uint64_t));
static_assert(std::atomic_ref<std::uint32_t>::required_alignment <= alignof(std::uint32_t));

template <typename T>
std::atomic_ref<T> shared(T& value) noexcept {
  return std::atomic_ref<T>(value);
}

// The first word of the 8-byte record header at `at` (8-aligned within the data area).
std::atomic_ref<std::uint32_t> record_length(std::byte* at) noexcept {
  return std::atomic_ref<std::uint32_t>(*std::launder(reinterpret_cast<std::uint32_t*>(at)));
}

constexpr std::size_t record_size(std::size_t item_size) noexcept {
  return 8 + (item_size + kRecordAlign - 1) / kRecordAlign * kRecordAlign;
}

void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

// Shared (not _PRIVATE) futex operations: the word lives in memory other processes map.
void futex_wait(std::uint32_t* word, std::uint32_t expected, const timespec* timeout) noexcept {
  // EINTR, EAGAIN (the word changed) and ETIMEDOUT all send the caller back to re-check.
  (void)::syscall(SYS_futex, word, FUTEX_WAIT, expected, timeout, nullptr, 0);
}

void futex_wake(std::uint32_t* word) noexcept {
  (void)::syscall(SYS_futex, word, FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

// Clears a wait word after publishing and wakes the sleeper if it was set. The fence pairs
// with the one in wait_until(): either the waiter sees what was just published, or this
// sees its wait word set (store-load ordering both ways, Dekker style).
void wake_if_waiting(std::uint32_t& word) noexcept {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  auto flag = shared(word);
  if (flag.load(std::memory_order_relaxed) != 0 && flag.exchange(0, std::memory_order_relaxed) != 0)
    futex_wake(&word);
}

struct Deadline {
  bool forever = false;
  Clock::time_point at{};

  static Deadline after(std::chrono::milliseconds timeout) {
    if (timeout.count() < 0 || timeout > kLongestTimeout) return {true, {}};
    return {false, Clock::now() + timeout};
  }
};

// Waits until ready() or the deadline, on `word` (the caller's wait word in the header).
// Returns ready()'s last answer. Spins briefly, then sleeps in the kernel.
template <typename Ready>
bool wait_until(std::uint32_t& word, Ready&& ready, const Deadline& deadline) {
  if (ready()) return true;
  if (!deadline.forever && Clock::now() >= deadline.at) return false;
  for (int i = 0; i < kSpinIterations; ++i) {
    cpu_relax();
    if (ready()) return true;
  }
  auto flag = shared(word);
  for (;;) {
    timespec remaining{};
    const timespec* timeout = nullptr;
    if (!deadline.forever) {
      const auto left = deadline.at - Clock::now();
      if (left <= Clock::duration::zero()) {
        flag.store(0, std::memory_order_relaxed);
        return ready();
      }
      const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
      remaining.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
      remaining.tv_nsec = static_cast<long>(ns % 1'000'000'000);
      timeout = &remaining;
    }
    flag.store(1, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (!ready()) futex_wait(&word, 1, timeout);
    if (ready()) {
      flag.store(0, std::memory_order_relaxed);
      return true;
    }
  }
}

[[noreturn]] void invalid(const std::string& what) {
  throw Error(Errc::invalid_argument, "ring: " + what);
}

[[noreturn]] void violation(const std::string& what) {
  throw Error(Errc::protocol_violation, "ring: the shared state is inconsistent: " + what);
}

void check_memory(std::span<std::byte> memory) {
  if (memory.data() == nullptr) invalid("no memory");
  if (reinterpret_cast<std::uintptr_t>(memory.data()) % SpscRing::kAlignment != 0)
    invalid("memory is not aligned to " + std::to_string(SpscRing::kAlignment) + " bytes");
  if (memory.size() < SpscRing::kHeaderSize)
    invalid("memory of " + std::to_string(memory.size()) + " bytes cannot hold the " +
            std::to_string(SpscRing::kHeaderSize) + "-byte header");
}

}  // namespace

static_assert(SpscRing::kMinCapacity >= 4 * 8, "the smallest ring must hold an item");

std::size_t SpscRing::round_capacity(std::size_t capacity_bytes) {
  if (capacity_bytes == 0 || capacity_bytes > kMaxCapacity)
    invalid("capacity " + std::to_string(capacity_bytes) + " is outside 1.." +
            std::to_string(kMaxCapacity));
  return std::bit_ceil(std::max(capacity_bytes, kMinCapacity));
}

std::size_t SpscRing::required_size(std::size_t capacity_bytes) {
  return kHeaderSize + round_capacity(capacity_bytes);
}

SpscRing::SpscRing(Header* header, std::byte* data, std::size_t capacity) noexcept
    : header_(header), data_(data), capacity_(capacity) {}

SpscRing::SpscRing(SpscRing&& other) noexcept {
  *this = std::move(other);
}

// Leaves `other` detached (no header), so two handles never play one role by accident.
SpscRing& SpscRing::operator=(SpscRing&& other) noexcept {
  if (this == &other) return *this;
  header_ = std::exchange(other.header_, nullptr);
  data_ = std::exchange(other.data_, nullptr);
  capacity_ = std::exchange(other.capacity_, 0);
  tail_ = other.tail_;
  seen_head_ = other.seen_head_;
  reserved_at_ = other.reserved_at_;
  reserved_size_ = other.reserved_size_;
  reserved_ = std::exchange(other.reserved_, false);
  head_ = other.head_;
  seen_tail_ = other.seen_tail_;
  peeked_record_ = std::exchange(other.peeked_record_, 0);
  peeked_size_ = std::exchange(other.peeked_size_, 0);
  return *this;
}
SpscRing::~SpscRing() = default;

SpscRing SpscRing::create(std::span<std::byte> memory, std::size_t capacity_bytes) {
  static_assert(sizeof(Header) == kHeaderSize);
  static_assert(alignof(Header) <= kAlignment);
  static_assert(offsetof(Header, tail) == 128 && offsetof(Header, consumer_waiting) == 136);
  static_assert(offsetof(Header, head) == 256 && offsetof(Header, producer_waiting) == 264);
  const std::size_t capacity = round_capacity(capacity_bytes);
  check_memory(memory);
  if (memory.size() < kHeaderSize + capacity)
    invalid("memory of " + std::to_string(memory.size()) + " bytes is smaller than the " +
            std::to_string(kHeaderSize + capacity) + " a ring of capacity " +
            std::to_string(capacity) + " needs");
  auto* header = new (memory.data()) Header{};
  header->version = kVersion;
  header->header_size = static_cast<std::uint32_t>(kHeaderSize);
  header->capacity = capacity;
  // Published last, so an attach racing with create sees no half-made header as valid.
  shared(header->magic).store(kMagic, std::memory_order_release);
  return SpscRing(header, memory.data() + kHeaderSize, capacity);
}

SpscRing SpscRing::attach(std::span<std::byte> memory) {
  check_memory(memory);
  auto* header = std::launder(reinterpret_cast<Header*>(memory.data()));
  // Each field is read once into a local and judged there: the peer may be rewriting it.
  const auto magic = shared(header->magic).load(std::memory_order_acquire);
  if (magic != kMagic) invalid("bad magic: the memory holds no ring");
  const auto version = shared(header->version).load(std::memory_order_relaxed);
  if (version != kVersion)
    invalid("unsupported layout version " + std::to_string(version) + " (this is " +
            std::to_string(kVersion) + ")");
  const auto header_size = shared(header->header_size).load(std::memory_order_relaxed);
  if (header_size != kHeaderSize) invalid("bad header size " + std::to_string(header_size));
  const std::uint64_t capacity = shared(header->capacity).load(std::memory_order_relaxed);
  if (capacity < kMinCapacity || capacity > kMaxCapacity || !std::has_single_bit(capacity))
    invalid("bad capacity " + std::to_string(capacity));
  if (memory.size() - kHeaderSize < capacity)
    invalid("a ring of capacity " + std::to_string(capacity) + " does not fit in " +
            std::to_string(memory.size()) + " bytes");
  const std::uint64_t head = shared(header->head).load(std::memory_order_acquire);
  const std::uint64_t tail = shared(header->tail).load(std::memory_order_acquire);
  if (head % kRecordAlign != 0 || tail % kRecordAlign != 0 || tail - head > capacity)
    invalid("bad positions (read " + std::to_string(head) + ", write " + std::to_string(tail) +
            ")");
  SpscRing ring(header, memory.data() + kHeaderSize, capacity);
  ring.tail_ = tail;
  ring.seen_head_ = head;
  ring.head_ = head;
  ring.seen_tail_ = tail;
  return ring;
}

// ---- producer ---------------------------------------------------------------------------

void SpscRing::load_head() {
  const std::uint64_t head = shared(header_->head).load(std::memory_order_acquire);
  if (head % kRecordAlign != 0 || tail_ - head > capacity_)
    violation("read position " + std::to_string(head) + " against write position " +
              std::to_string(tail_));
  seen_head_ = head;
}

std::size_t SpscRing::room_needed(std::size_t record) const noexcept {
  const std::size_t to_end = capacity_ - (tail_ & (capacity_ - 1));
  return record <= to_end ? record : to_end + record;
}

std::optional<std::span<std::byte>> SpscRing::try_reserve(std::size_t size) {
  if (shared(header_->closed).load(std::memory_order_relaxed) != 0)
    throw Error(Errc::connection_closed, "ring: closed");
  if (size > max_item_size())
    throw Error(Errc::payload_too_large, "ring: item of " + std::to_string(size) +
                                             " bytes exceeds the limit of " +
                                             std::to_string(max_item_size()));
  reserved_ = false;
  const std::size_t record = record_size(size);
  const std::size_t needed = room_needed(record);
  if (capacity_ - (tail_ - seen_head_) < needed) {
    load_head();
    if (capacity_ - (tail_ - seen_head_) < needed) return std::nullopt;
  }
  const std::size_t offset = tail_ & (capacity_ - 1);
  std::uint64_t start = tail_;
  if (record > capacity_ - offset) {
    record_length(data_ + offset).store(kSkipMarker, std::memory_order_relaxed);
    start += capacity_ - offset;
  }
  reserved_at_ = start;
  reserved_size_ = size;
  reserved_ = true;
  return std::span<std::byte>(data_ + (start & (capacity_ - 1)) + kRecordHeader, size);
}

std::optional<std::span<std::byte>> SpscRing::reserve(std::size_t size,
                                                      std::chrono::milliseconds timeout) {
  const auto deadline = Deadline::after(timeout);
  for (;;) {
    if (auto room = try_reserve(size)) return room;
    const std::size_t needed = room_needed(record_size(size));
    const auto ready = [&] {
      if (shared(header_->closed).load(std::memory_order_relaxed) != 0) return true;
      load_head();
      return capacity_ - (tail_ - seen_head_) >= needed;
    };
    // Ready means room or closed: the next try_reserve succeeds or throws.
    if (!wait_until(header_->producer_waiting, ready, deadline)) return std::nullopt;
  }
}

void SpscRing::commit(std::size_t size) {
  if (!reserved_) invalid("commit without a reservation");
  if (size > reserved_size_)
    invalid("commit of " + std::to_string(size) + " bytes exceeds the reservation of " +
            std::to_string(reserved_size_));
  reserved_ = false;
  std::byte* record = data_ + (reserved_at_ & (capacity_ - 1));
  record_length(record).store(static_cast<std::uint32_t>(size), std::memory_order_relaxed);
  record_length(record + 4).store(0, std::memory_order_relaxed);
  tail_ = reserved_at_ + record_size(size);
  shared(header_->tail).store(tail_, std::memory_order_release);
  wake_consumer();
}

bool SpscRing::try_push(std::span<const std::byte> item) {
  const auto room = try_reserve(item.size());
  if (!room) return false;
  if (!item.empty()) std::memcpy(room->data(), item.data(), item.size());
  commit(item.size());
  return true;
}

bool SpscRing::push(std::span<const std::byte> item, std::chrono::milliseconds timeout) {
  const auto room = reserve(item.size(), timeout);
  if (!room) return false;
  if (!item.empty()) std::memcpy(room->data(), item.data(), item.size());
  commit(item.size());
  return true;
}

void SpscRing::wake_consumer() noexcept {
  wake_if_waiting(header_->consumer_waiting);
}

// ---- consumer ---------------------------------------------------------------------------

void SpscRing::load_tail() {
  const std::uint64_t tail = shared(header_->tail).load(std::memory_order_acquire);
  if (tail % kRecordAlign != 0 || tail - head_ > capacity_)
    violation("write position " + std::to_string(tail) + " against read position " +
              std::to_string(head_));
  seen_tail_ = tail;
}

std::optional<std::span<const std::byte>> SpscRing::try_peek() {
  if (peeked_record_ != 0)
    return std::span<const std::byte>(data_ + (head_ & (capacity_ - 1)) + kRecordHeader,
                                      peeked_size_);
  for (;;) {
    if (seen_tail_ == head_) {
      load_tail();
      if (seen_tail_ == head_) return std::nullopt;
    }
    const std::uint64_t available = seen_tail_ - head_;
    const std::size_t offset = head_ & (capacity_ - 1);
    const std::size_t to_end = capacity_ - offset;
    const std::uint32_t length = record_length(data_ + offset).load(std::memory_order_relaxed);
    if (length == kSkipMarker) {
      if (to_end > available) violation("wrap marker beyond the write position");
      // Given back to the producer together with the next item's release.
      head_ += to_end;
      continue;
    }
    if (length > max_item_size())
      violation("item length " + std::to_string(length) + " above the limit");
    const std::size_t record = record_size(length);
    if (record > available || record > to_end)
      violation("item of " + std::to_string(length) + " bytes overruns the published data");
    peeked_record_ = record;
    peeked_size_ = length;
    return std::span<const std::byte>(data_ + offset + kRecordHeader, length);
  }
}

std::optional<std::span<const std::byte>> SpscRing::peek(std::chrono::milliseconds timeout) {
  const auto deadline = Deadline::after(timeout);
  const auto ready = [&] {
    if (shared(header_->closed).load(std::memory_order_acquire) != 0) return true;
    load_tail();
    return seen_tail_ != head_;
  };
  for (;;) {
    if (auto item = try_peek()) return item;
    // Closing comes after the producer's last publish: seen closed, everything is visible.
    if (closed()) return try_peek();
    if (!wait_until(header_->consumer_waiting, ready, deadline)) return std::nullopt;
  }
}

void SpscRing::release() {
  if (peeked_record_ == 0) return;
  head_ += peeked_record_;
  peeked_record_ = 0;
  peeked_size_ = 0;
  shared(header_->head).store(head_, std::memory_order_release);
  wake_producer();
}

std::optional<std::size_t> SpscRing::try_pop(std::span<std::byte> out) {
  const auto item = try_peek();
  if (!item) return std::nullopt;
  if (out.size() < item->size())
    invalid("buffer of " + std::to_string(out.size()) + " bytes is too small for an item of " +
            std::to_string(item->size()));
  const std::size_t size = item->size();
  if (size != 0) std::memcpy(out.data(), item->data(), size);
  release();
  return size;
}

std::optional<std::size_t> SpscRing::pop(std::span<std::byte> out,
                                         std::chrono::milliseconds timeout) {
  const auto item = peek(timeout);
  if (!item) return std::nullopt;
  return try_pop(out);
}

void SpscRing::wake_producer() noexcept {
  wake_if_waiting(header_->producer_waiting);
}

// ---- either side --------------------------------------------------------------------------

void SpscRing::close() noexcept {
  shared(header_->closed).store(1, std::memory_order_release);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  shared(header_->consumer_waiting).store(0, std::memory_order_relaxed);
  shared(header_->producer_waiting).store(0, std::memory_order_relaxed);
  futex_wake(&header_->consumer_waiting);
  futex_wake(&header_->producer_waiting);
}

bool SpscRing::closed() const noexcept {
  return shared(header_->closed).load(std::memory_order_acquire) != 0;
}

bool SpscRing::end_of_stream() {
  return closed() && !try_peek();
}

}  // namespace qbus
