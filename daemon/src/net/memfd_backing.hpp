// The memory behind the broker's regions: sealed memfds (proto/shm), one fd per region
// held by the daemon for the region's whole life. Also makes the extra fds the edge passes
// to clients, so that what a client is sent never depends on the table's own fd staying
// open until the write.
//
// Making a region costs fallocate (14-21 ms for 64 MiB) and freeing one costs the final
// close (7-8 ms for 64 MiB, the kernel freeing tmpfs pages), and the broker has one thread
// for every client. So a worker thread owned by the backing does both off that thread:
//   - a pool: after create(size) is served, the worker makes one more memfd of that size
//     ahead of demand, the same way create() would, so that the next create(size) only
//     takes it. A sealed region can never be reused (F_SEAL_WRITE is permanent), hence
//     "ahead", not "again". Bounded by a byte budget (0: no pool), at most kMaxReadyPerSize
//     ready memfds per size and kMaxReady in all; sizes over the budget are never pooled;
//     a ready memfd unused for `idle_ttl` is closed. Budget bytes are page-rounded sizes.
//     Ready memfds are nobody's: the RegionTable charges a uid when it hands a region out.
//   - destroy() passes the fd to the worker, which closes it.
// The worker blocks on a condition variable: no wake-ups while it holds no ready memfd and
// has nothing to do (it waits with a timeout only for the next expiry).
//
// Thread-safety: create, seal_for_handover, destroy, the setters and pool_stats are called
// from one thread (the broker's); the worker is internal. The destructor joins the worker
// after it closed everything it was handed and every ready memfd.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "broker/regions.hpp"
#include "qbus/proto/unique_fd.hpp"

namespace qbus::daemon {

// What the admin socket shows about the pool.
struct RegionPoolStats {
  std::uint64_t budget_bytes = 0;
  std::uint64_t ready = 0;        // memfds ready to be handed out
  std::uint64_t ready_bytes = 0;  // their sizes (not page-rounded)
  std::uint64_t hits = 0;         // create() served from the pool
  std::uint64_t misses = 0;       // create() that made its memfd on the broker's thread
};

class MemfdBacking final : public broker::RegionBacking {
 public:
  static constexpr std::uint64_t kDefaultPoolBytes = 64ull << 20;
  static constexpr std::chrono::milliseconds kDefaultIdleTtl = std::chrono::seconds(30);
  static constexpr std::size_t kMaxReadyPerSize = 2;
  // Bounds the fds the pool holds however small the sizes: the budget alone would allow
  // thousands of one-page memfds.
  static constexpr std::size_t kMaxReady = 64;
  // destroy() beyond this many fds not yet closed by the worker closes inline: a bound on
  // the queue that needs no allocation in destroy().
  static constexpr std::size_t kMaxPendingCloses = 4096;

  explicit MemfdBacking(std::uint64_t max_region_bytes,
                        std::uint64_t pool_bytes = kDefaultPoolBytes,
                        std::chrono::milliseconds idle_ttl = kDefaultIdleTtl);
  ~MemfdBacking() override;
  MemfdBacking(const MemfdBacking&) = delete;
  MemfdBacking& operator=(const MemfdBacking&) = delete;

  // A ready memfd of exactly `size` when the pool has one (it is then labelled
  // "qbus-region", not `name`), else made here as before. Never waits for the worker.
  broker::BackingHandle create(std::uint64_t size, std::string_view name) override;
  // Checks that the sender sealed the region against writes (see the .cpp for why the
  // broker does not add that seal itself) and freezes its seals.
  broker::RegionStatus seal_for_handover(int handle) override;
  // Hands the fd to the worker to close; closes it here when the worker is far behind.
  void destroy(int handle) noexcept override;
  // The largest region create() makes from now on (a configuration reload).
  void set_max_region_bytes(std::uint64_t max) { max_ = max; }
  // A new pool budget (a configuration reload): what is ready or being made beyond it is
  // closed by the worker; 0 empties and disables the pool.
  void set_pool_bytes(std::uint64_t bytes);

  RegionPoolStats pool_stats() const;
  // Waits until the worker has nothing queued (no memfd to make, no fd to close, no
  // expiry due) or `timeout` passed; true when idle. For tests.
  bool wait_idle(std::chrono::milliseconds timeout) const;

 private:
  using Clock = std::chrono::steady_clock;
  struct Ready {
    std::uint64_t size = 0;
    int fd = -1;
    Clock::time_point since;
  };

  void run();
  // Queues the making of one more memfd of `size` when the bounds allow. Holds mu_.
  void want(std::uint64_t size);
  std::size_t pooled_of(std::uint64_t size) const;  // ready, queued or being made
  bool idle() const;                                // holds mu_

  std::uint64_t max_;
  const std::chrono::milliseconds idle_ttl_;

  mutable std::mutex mu_;
  std::condition_variable wake_;
  mutable std::condition_variable idle_cv_;
  std::deque<Ready> ready_;            // oldest first
  std::vector<std::uint64_t> wanted_;  // sizes to make, in order
  std::uint64_t making_ = 0;           // the size being made now; 0: none
  std::vector<int> to_close_;          // capacity kMaxPendingCloses, reserved up front
  std::uint64_t budget_;
  std::uint64_t reserved_ = 0;  // page-rounded bytes of ready_, wanted_ and making_
  std::uint64_t hits_ = 0;
  std::uint64_t misses_ = 0;
  bool busy_ = false;  // the worker is making or closing outside mu_
  bool stop_ = false;
  std::thread worker_;  // last: starts once everything above exists
};

// A new fd for the region behind `handle`: a duplicate (same access), or, for
// `read_only`, the file reopened read-only so the receiver cannot write it even before it
// maps. Returns an invalid fd and sets `why` on failure (EMFILE, ...).
proto::UniqueFd region_fd_for_peer(int handle, bool read_only, std::string& why);

}  // namespace qbus::daemon
