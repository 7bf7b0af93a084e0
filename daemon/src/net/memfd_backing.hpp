// The memory behind the broker's regions: sealed memfds (proto/shm), one fd per region
// held by the daemon for the region's whole life. Also makes the extra fds the edge passes
// to clients, so that what a client is sent never depends on the table's own fd staying
// open until the write.
//
// create() makes the memfd on the calling thread: proto::shm::create_region only creates,
// sizes and seals it (microseconds) and allocates no page; the client reserves the pages
// itself, so they are charged to the client's memory cgroup, not qbusd's. Freeing is
// another matter: the last close of a region frees its pages (about 8 ms for 64 MiB, the
// kernel releasing tmpfs pages), and the broker has one thread for every client. So
// destroy() hands the fd to a worker thread owned by the backing, which closes it. The
// queue of fds to close is bounded (kMaxPendingCloses, reserved up front); beyond it
// destroy() closes inline rather than allocate or drop. The worker blocks on a condition
// variable and never wakes while it has nothing to close.
//
// Thread-safety: create, seal_for_handover, destroy and set_max_region_bytes are called
// from one thread (the broker's); wait_idle from any thread; the worker is internal. The
// destructor closes whatever is still queued and joins the worker.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#include "broker/regions.hpp"
#include "qbus/proto/unique_fd.hpp"

namespace qbus::daemon {

class MemfdBacking final : public broker::RegionBacking {
 public:
  // destroy() beyond this many fds not yet closed by the worker closes inline: a bound on
  // the queue that needs no allocation in destroy().
  static constexpr std::size_t kMaxPendingCloses = 4096;

  explicit MemfdBacking(std::uint64_t max_region_bytes);
  ~MemfdBacking() override;
  MemfdBacking(const MemfdBacking&) = delete;
  MemfdBacking& operator=(const MemfdBacking&) = delete;

  // A new memfd of exactly `size` bytes labelled `name`, with no page allocated yet.
  broker::BackingHandle create(std::uint64_t size, std::string_view name) override;
  // Checks that the sender sealed the region against writes (see the .cpp for why the
  // broker does not add that seal itself) and freezes its seals.
  broker::RegionStatus seal_for_handover(int handle) override;
  // Hands the fd to the worker to close; closes it here when the worker is far behind.
  void destroy(int handle) noexcept override;
  bool read(int handle, std::uint64_t offset, std::span<std::byte> out) override;
  // The largest region create() makes from now on (a configuration reload).
  void set_max_region_bytes(std::uint64_t max) { max_ = max; }

  // How many fds wait for the worker to close them (qbus_region_closes_pending).
  std::size_t pending_closes() const;

  // Waits until the worker has closed every fd handed to it or `timeout` passed; true when
  // idle. For tests.
  bool wait_idle(std::chrono::milliseconds timeout) const;

 private:
  void run();
  bool idle() const;  // holds mu_

  std::uint64_t max_;

  mutable std::mutex mu_;
  std::condition_variable wake_;
  mutable std::condition_variable idle_cv_;
  std::vector<int> to_close_;  // capacity kMaxPendingCloses, reserved up front
  bool busy_ = false;          // the worker is closing outside mu_
  bool stop_ = false;
  std::thread worker_;  // last: starts once everything above exists
};

// A new fd for the region behind `handle`: a duplicate (same access), or, for
// `read_only`, the file reopened read-only so the receiver cannot write it even before it
// maps. Returns an invalid fd and sets `why` on failure (EMFILE, ...).
proto::UniqueFd region_fd_for_peer(int handle, bool read_only, std::string& why);

}  // namespace qbus::daemon
