#include "net/memfd_backing.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "qbus/proto/shm.hpp"

namespace qbus::daemon {

MemfdBacking::MemfdBacking(std::uint64_t max_region_bytes) : max_(max_region_bytes) {
  to_close_.reserve(kMaxPendingCloses);
  // Signals belong to the broker's loop (asio::signal_set); the worker must never be the
  // thread that takes one, so it starts with all of them blocked.
  sigset_t all, old;
  ::sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  try {
    worker_ = std::thread([this] { run(); });
  } catch (...) {
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
    throw;
  }
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

MemfdBacking::~MemfdBacking() {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  wake_.notify_one();
  worker_.join();
}

broker::BackingHandle MemfdBacking::create(std::uint64_t size, std::string_view name) {
  auto fd = proto::shm::create_region(static_cast<std::size_t>(size), name,
                                      static_cast<std::size_t>(max_));
  if (fd.ok()) return broker::BackingHandle{Errc::ok, {}, std::move(fd).value().release()};
  const auto& e = fd.error();
  // Only wire codes may reach the peer: a full tmpfs or memory cgroup is its quota,
  // anything else (EMFILE, say) is the broker's own trouble.
  Errc code = e.code;
  if (code != Errc::quota_exceeded && code != Errc::payload_too_large) code = Errc::internal_error;
  return broker::BackingHandle{code, e.text, -1};
}

bool MemfdBacking::idle() const {
  return to_close_.empty() && !busy_;
}

std::size_t MemfdBacking::pending_closes() const {
  std::lock_guard lk(mu_);
  return to_close_.size() + (busy_ ? 1 : 0);
}

bool MemfdBacking::wait_idle(std::chrono::milliseconds timeout) const {
  std::unique_lock lk(mu_);
  return idle_cv_.wait_for(lk, timeout, [this] { return idle(); });
}

void MemfdBacking::run() {
  // Reserved up front so that the worker never allocates (an exception here would end the
  // daemon): every fd it may have to close at once.
  std::vector<int> closing;
  closing.reserve(kMaxPendingCloses);
  std::unique_lock lk(mu_);
  for (;;) {
    if (!to_close_.empty()) {
      closing.swap(to_close_);  // both keep a capacity of kMaxPendingCloses
      busy_ = true;
      lk.unlock();
      for (const int fd : closing)
        ::close(fd);
      closing.clear();
      lk.lock();
      busy_ = false;
      continue;
    }
    if (stop_) break;
    idle_cv_.notify_all();
    wake_.wait(lk);
  }
  idle_cv_.notify_all();
}

broker::RegionStatus MemfdBacking::seal_for_handover(int handle) {
  // The sender adds F_SEAL_WRITE itself: the kernel may wait a long time for pinned pages
  // while adding it, and that wait must cost the sender, not the broker's one thread.
  // Here we only read the seals (never blocks) and freeze them.
  auto have = proto::shm::seals(handle);
  if (!have) return broker::RegionStatus{Errc::internal_error, have.error().text};
  if ((*have & F_SEAL_WRITE) == 0) {
    return broker::RegionStatus{Errc::unexpected_frame,
                                "the region is not sealed against writes: unmap it and add "
                                "F_SEAL_WRITE before sending it (libqbus does)"};
  }
  if ((*have & F_SEAL_SEAL) == 0 && ::fcntl(handle, F_ADD_SEALS, F_SEAL_SEAL) != 0) {
    return broker::RegionStatus{
        Errc::internal_error,
        std::string("cannot freeze a region's seals: ") + std::strerror(errno)};
  }
  return {};
}

bool MemfdBacking::read(int handle, std::uint64_t offset, std::span<std::byte> out) {
  // The region is memory (a memfd), not a disk: this costs the event loop a copy.
  std::size_t got = 0;
  while (got < out.size()) {
    const ssize_t n =
        ::pread(handle, out.data() + got, out.size() - got, static_cast<off_t>(offset + got));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    got += static_cast<std::size_t>(n);
  }
  return true;
}

void MemfdBacking::destroy(int handle) noexcept {
  {
    std::lock_guard lk(mu_);
    if (!stop_ && to_close_.size() < kMaxPendingCloses) {
      to_close_.push_back(handle);  // within the reserved capacity: cannot throw
      wake_.notify_one();
      return;
    }
  }
  ::close(handle);
}

proto::UniqueFd region_fd_for_peer(int handle, bool read_only, std::string& why) {
  int fd = -1;
  if (read_only) {
    // A new open file description: O_RDONLY here really limits the receiver (a dup would
    // share the daemon's read-write one).
    const std::string path = "/proc/self/fd/" + std::to_string(handle);
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  } else {
    fd = ::fcntl(handle, F_DUPFD_CLOEXEC, 0);
  }
  if (fd < 0)
    why = std::string(read_only ? "reopen" : "dup") + " of a region fd: " + std::strerror(errno);
  return proto::UniqueFd(fd);
}

}  // namespace qbus::daemon
