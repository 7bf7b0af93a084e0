// Regions granted ahead of need and populated off the caller's thread
// (ClientOptions::region_pool_bytes). The kernel's cost of a region is allocating and zeroing
// its pages: about 3 ms for 64 MiB with shmem huge pages, 15 ms without, against 50 µs for
// the round trip that grants it. A Client that allocates a size it allocated before takes a
// populated region from here, and asks the broker for its replacement in the same round trip;
// a worker thread populates the replacement while the program fills and sends the region.
//
// Every region here is an ordinary grant: new, zero-filled, charged to the uid's region quota
// and, once populated, to this process's memory. What the pool holds (being populated or
// ready) never exceeds max_bytes; a new size evicts ready regions of other sizes, oldest
// first, and an evicted region's handle is released through the ReleaseQueue.
//
// Ownership, lifetime, thread-safety: owned by Client::Impl and called from the Client's
// thread only (Client is not thread-safe); the worker is internal and shares the entries with
// it under one mutex, populating outside it. The worker starts with the first region added.
// The destructor waits for the region being populated, then unmaps and closes every region
// not taken and queues their handles for release (closing the connection drops them too).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "qbus/client.hpp"
#include "qbus/proto/shm.hpp"
#include "qbus/proto/unique_fd.hpp"
#include "session.hpp"

namespace qbus::detail {

class RegionPool {
 public:
  // Smaller regions populate in less than a round trip: pooling them would only add one.
  static constexpr std::size_t kMinSize = std::size_t{256} << 10;
  // Regions of one size held (being populated or ready) at most: one to take while the
  // next is populated absorbs a sender that allocates as fast as the worker populates.
  static constexpr std::size_t kDepth = 2;

  struct Ready {
    std::uint64_t id = 0;
    proto::UniqueFd fd;
    proto::shm::Mapping mapping;  // writable, every page allocated, MADV_DONTFORK
  };

  // Held by the Client's thread while it unmaps a writable region (sealing it for send()):
  // the worker stops between populate steps until the last HoldOff goes. Unmapping waits
  // for the process's mmap lock, which every populate step takes, and the kernel lets new
  // steps overtake the waiting unmap: measured on a 2-core VM with huge pages, unmapping
  // 64 MiB beside a worker populating 64 MiB took a median of 262-289 µs and up to 11 ms,
  // and 70-78 µs (at most 159 µs) with the worker held off. Never wait for the worker (take()
  // with wait, drain()) while holding one: it would wait for the HoldOff.
  class HoldOff {
   public:
    explicit HoldOff(RegionPool* pool) noexcept;  // null: holds nothing
    ~HoldOff();
    HoldOff(const HoldOff&) = delete;
    HoldOff& operator=(const HoldOff&) = delete;

   private:
    RegionPool* const pool_;
  };

  RegionPool(std::size_t max_bytes, std::shared_ptr<ReleaseQueue> releases);
  ~RegionPool();
  RegionPool(const RegionPool&) = delete;
  RegionPool& operator=(const RegionPool&) = delete;

  bool poolable(std::size_t size) const noexcept { return size >= kMinSize && size <= max_bytes_; }
  // A populated region of exactly `size`. When none is ready but the worker is populating
  // one of that size, or is about to, waits for it (unless `wait` is false: an event loop
  // must not block): it finishes no later than a cold allocation would.
  std::optional<Ready> take(std::size_t size, bool wait = true);
  // How many regions of `size` to ask the broker for now (0 to kDepth): enough to hold
  // kDepth of them, within max_bytes once the ready regions of other sizes that are in the
  // way are evicted (which this does).
  std::size_t wanted(std::size_t size);
  // A region the broker granted for the pool; the worker populates it. When the worker
  // cannot be started or there is no memory, the region is released instead.
  void add(std::uint64_t id, std::size_t size, proto::UniqueFd fd) noexcept;
  // Releases every region held, for an allocation the uid's quota refused, after waiting
  // for the one being populated; the count.
  std::size_t drain();
  RegionPoolStats stats() const;

 private:
  struct Entry {
    std::uint64_t id = 0;
    std::size_t size = 0;
    proto::UniqueFd fd;
    proto::shm::Mapping mapping;
  };
  void run();
  void give_way();                           // the worker, between populate steps
  void release(Entry& e) noexcept;           // unmap, close, queue the handle's release
  std::size_t held(std::size_t size) const;  // holds mu_

  const std::size_t max_bytes_;
  const std::shared_ptr<ReleaseQueue> releases_;

  mutable std::mutex mu_;
  std::condition_variable work_;       // the worker: pending_ or stop_
  std::condition_variable populated_;  // take(): the worker finished one
  std::condition_variable resumed_;    // give_way(): the last HoldOff went
  std::deque<Entry> pending_;          // granted, waiting for the worker
  std::deque<Entry> ready_;            // populated, oldest first
  std::size_t busy_size_ = 0;          // the size the worker is populating, 0 when idle
  std::size_t held_bytes_ = 0;         // pending_ + ready_ + the one being populated
  RegionPoolStats stats_;
  bool stop_ = false;
  // HoldOffs alive. Atomic so that the worker reads it between steps without mu_; changed
  // under mu_, so that give_way() cannot miss the last one going.
  std::atomic<unsigned> holding_off_{0};
  std::thread worker_;
};

}  // namespace qbus::detail
