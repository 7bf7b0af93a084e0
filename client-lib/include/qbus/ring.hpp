// A single-producer/single-consumer ring of variable-length items over shared memory.
//
//   // Process A (makes the layout, then produces):
//   auto ring = qbus::SpscRing::create(memory, 1 << 20);
//   ring.push(bytes, std::chrono::seconds(1));
//   ring.close();                                   // end of stream
//
//   // Process B (maps the same memory, possibly at another address, and consumes):
//   auto ring = qbus::SpscRing::attach(memory);
//   while (auto n = ring.pop(buffer, qbus::kForever)) use(buffer.first(*n));
//   // nullopt with kForever means end of stream: ring.end_of_stream() is true.
//
// Ownership and lifetime: an SpscRing is a handle; it never owns the memory. The caller
// keeps the mapping valid (and the same size: seal a memfd against shrinking) for as long
// as any handle on it is used; handles need no teardown and the memory can be unmapped
// once no handle is used any more. Everything the ring needs is in the memory itself: a
// header (magic, version, capacity, the two positions and the wait words) and the data
// area. It contains no pointers, so each process may map it at a different address.
//
// Roles and thread-safety: at any time exactly one handle produces (try_push, push,
// try_reserve, reserve, commit) and exactly one handle consumes (try_peek, peek, try_pop,
// pop, release), in the same process or in two processes. A handle is not thread-safe;
// use each from one thread at a time. A handle remembers the position of the role it
// plays, taking it from the shared header when created or attached, so a process that
// takes over a role (a restarted consumer, say) attaches a fresh handle rather than using
// one that played the other role. close(), closed(), capacity() and max_item_size() may be
// called on any handle; end_of_stream() belongs to the consumer.
//
// Ordering: the producer writes an item, then publishes the new write position with a
// release store; the consumer reads that position with an acquire load before touching the
// item, so a popped item always reads as written. Freeing space is the mirror image (the
// consumer releases, the producer acquires). Both positions are 64-bit byte counters that
// never wrap in practice, each on its own cache line. close() is a release store too, so a
// consumer that sees the ring closed also sees every item pushed before.
//
// Waiting: when a side cannot proceed it spins briefly, then sets its wait word in the
// header and sleeps on it with a shared (cross-process) futex. The other side wakes it only
// when that word is set, so while nobody sleeps, pushes and pops make no system call. An
// idle waiter uses no CPU.
//
// Untrusted peer: the memory may be shared with a process that does not follow the rules.
// attach() validates the header and every later read of shared state (positions, item
// lengths) is read once and checked before use, so a broken peer can at worst garble the
// items or keep this side busy, never make it read or write outside the memory;
// inconsistent state throws Error(protocol_violation). No lock is ever held: a peer that
// dies leaves the other side waiting at most for its timeout (with kForever, for ever: use
// a timeout, or have whoever watches the peer's life, a pidfd say, call close()).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

#include "qbus/client.hpp"
#include "qbus/errc.hpp"

namespace qbus {

class QBUS_API SpscRing {
 public:
  // Bytes of header in front of the data area.
  static constexpr std::size_t kHeaderSize = 384;
  // The memory handed to create() and attach() must be aligned to this many bytes (any
  // page-aligned mapping is).
  static constexpr std::size_t kAlignment = 128;
  // Capacities are powers of two in [kMinCapacity, kMaxCapacity].
  static constexpr std::size_t kMinCapacity = 64;
  static constexpr std::size_t kMaxCapacity = std::size_t{1} << 31;

  // The data-area capacity create() uses for `capacity_bytes`: the next power of two, at
  // least kMinCapacity. Throws Error(invalid_argument) for 0 or above kMaxCapacity.
  static std::size_t round_capacity(std::size_t capacity_bytes);
  // Bytes of memory a ring of `capacity_bytes` needs: kHeaderSize + round_capacity(...).
  static std::size_t required_size(std::size_t capacity_bytes);
  // The largest item a ring of (rounded) capacity `capacity` takes: capacity / 2 - 8.
  static constexpr std::size_t max_item_size_for(std::size_t capacity) noexcept {
    return capacity / 2 - kRecordHeader;
  }

  // Lays out an empty ring at the start of `memory`, overwriting whatever was there. Call
  // it once, before any other process attaches. Throws Error(invalid_argument) when the
  // memory is misaligned or smaller than required_size(capacity_bytes).
  static SpscRing create(std::span<std::byte> memory, std::size_t capacity_bytes);
  // A handle on a ring that create() laid out in `memory` (in this or another process).
  // Throws Error(invalid_argument) naming the problem when the header is not a valid ring
  // of this version or does not fit in `memory`.
  static SpscRing attach(std::span<std::byte> memory);

  // Moving transfers the role and its position; the moved-from handle is detached and may
  // only be destroyed or assigned to.
  SpscRing(SpscRing&& other) noexcept;
  SpscRing& operator=(SpscRing&& other) noexcept;
  SpscRing(const SpscRing&) = delete;
  SpscRing& operator=(const SpscRing&) = delete;
  ~SpscRing();

  std::size_t capacity() const noexcept { return capacity_; }
  std::size_t max_item_size() const noexcept { return max_item_size_for(capacity_); }

  // Producer. An item of 0..max_item_size() bytes takes 8 + size bytes of the ring,
  // rounded up to 8 (plus the unused end of the data area when it must wrap to the start:
  // items are never split, which is why the limit is half the capacity).
  //
  // Copies `item` in when there is room; false when the ring is full. Throws
  // Error(payload_too_large) when item is larger than max_item_size(), and
  // Error(connection_closed) once the ring is closed.
  bool try_push(std::span<const std::byte> item);
  // As try_push, waiting up to `timeout` for room (kForever: no limit; 0: do not wait).
  // False when the timeout passed. An item up to max_item_size() always fits in an empty
  // ring, so a live consumer always makes room eventually.
  bool push(std::span<const std::byte> item, std::chrono::milliseconds timeout);
  // Zero-copy producing: room for `size` bytes, written in place and published by
  // commit(). nullopt when the ring is full; throws like try_push. The span stays valid
  // until commit() or the next reserve; a reservation that is never committed is simply
  // dropped by the next reserve or push.
  std::optional<std::span<std::byte>> try_reserve(std::size_t size);
  std::optional<std::span<std::byte>> reserve(std::size_t size, std::chrono::milliseconds timeout);
  // Publishes the first `size` bytes of the current reservation as one item and wakes a
  // waiting consumer. Throws Error(invalid_argument) with no reservation or when `size`
  // exceeds it.
  void commit(std::size_t size);

  // Consumer.
  //
  // The oldest item, in place, without taking it: nullopt when the ring is empty. The
  // view stays valid until release() (peeking again returns the same item). It points into
  // the shared memory and starts 8-byte aligned (as do reserved spans): when the producer
  // is not trusted, copy before validating.
  std::optional<std::span<const std::byte>> try_peek();
  // As try_peek, waiting up to `timeout` for an item. nullopt when the timeout passed or
  // at end of stream (end_of_stream() tells which).
  std::optional<std::span<const std::byte>> peek(std::chrono::milliseconds timeout);
  // Drops the peeked item, making its room available to the producer. No-op when nothing
  // is peeked.
  void release();
  // Copies the oldest item into `out`, takes it, and returns its size; nullopt when the
  // ring is empty. Throws Error(invalid_argument) when `out` is smaller than the item,
  // which then stays in the ring (peek to learn its size). A buffer of max_item_size()
  // bytes always suffices.
  std::optional<std::size_t> try_pop(std::span<std::byte> out);
  // As try_pop, waiting up to `timeout`. nullopt when the timeout passed or at end of
  // stream (end_of_stream() tells which); with kForever, only at end of stream.
  std::optional<std::size_t> pop(std::span<std::byte> out, std::chrono::milliseconds timeout);

  // Either side, or a supervisor with its own handle. Marks the ring closed and wakes any
  // waiter: further pushes throw Error(connection_closed); the consumer still takes every
  // item pushed before, then sees end of stream. Idempotent and permanent.
  void close() noexcept;
  bool closed() const noexcept;
  // True when the ring is closed and no item is left: nothing more will ever arrive.
  bool end_of_stream();

 private:
  struct Header;
  static constexpr std::size_t kRecordHeader = 8;

  SpscRing(Header* header, std::byte* data, std::size_t capacity) noexcept;

  // Refreshes the cached peer position from the header, validating it.
  void load_head();
  void load_tail();
  // Bytes the producer needs for a record of `record` bytes at its current position.
  std::size_t room_needed(std::size_t record) const noexcept;
  void wake_consumer() noexcept;
  void wake_producer() noexcept;

  Header* header_ = nullptr;
  std::byte* data_ = nullptr;
  std::size_t capacity_ = 0;
  // Producer state: the position published last, the consumer's position as last read,
  // and the reservation (where its record starts and how many bytes it may hold).
  std::uint64_t tail_ = 0;
  std::uint64_t seen_head_ = 0;
  std::uint64_t reserved_at_ = 0;
  std::size_t reserved_size_ = 0;
  bool reserved_ = false;
  // Consumer state: its position, the producer's position as last read, and the peeked
  // item's record size (0: none) and length.
  std::uint64_t head_ = 0;
  std::uint64_t seen_tail_ = 0;
  std::size_t peeked_record_ = 0;
  std::size_t peeked_size_ = 0;
};

}  // namespace qbus
