#include "net/memfd_backing.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <new>
#include <string>

#include "qbus/proto/shm.hpp"

namespace qbus::daemon {
namespace {

// The label of memfds made ahead: their region id is not known yet.
constexpr std::string_view kPoolName = "qbus-region";

// What a memfd costs in tmpfs, so that the budget bounds memory, not requested bytes.
std::uint64_t charge(std::uint64_t size) {
  static const std::uint64_t kPage = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  return (size + kPage - 1) / kPage * kPage;
}

}  // namespace

MemfdBacking::MemfdBacking(std::uint64_t max_region_bytes, std::uint64_t pool_bytes,
                           std::chrono::milliseconds idle_ttl)
    : max_(max_region_bytes), idle_ttl_(idle_ttl), budget_(pool_bytes) {
  to_close_.reserve(kMaxPendingCloses);
  wanted_.reserve(kMaxReady);
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
  if (size <= max_) {
    std::lock_guard lk(mu_);
    for (auto it = ready_.begin(); it != ready_.end(); ++it) {
      if (it->size != size) continue;
      const int fd = it->fd;
      reserved_ -= charge(size);
      ready_.erase(it);
      ++hits_;
      want(size);
      return broker::BackingHandle{Errc::ok, {}, fd};
    }
  }
  auto fd = proto::shm::create_region(static_cast<std::size_t>(size), name,
                                      static_cast<std::size_t>(max_));
  if (fd.ok()) {
    std::lock_guard lk(mu_);
    ++misses_;
    want(size);
    return broker::BackingHandle{Errc::ok, {}, std::move(fd).value().release()};
  }
  const auto& e = fd.error();
  // Only wire codes may reach the peer: a full tmpfs or memory cgroup is its quota,
  // anything else (EMFILE, say) is the broker's own trouble.
  Errc code = e.code;
  if (code != Errc::quota_exceeded && code != Errc::payload_too_large) code = Errc::internal_error;
  return broker::BackingHandle{code, e.text, -1};
}

void MemfdBacking::want(std::uint64_t size) {
  const std::uint64_t cost = charge(size);
  if (stop_ || cost > budget_ || reserved_ > budget_ - cost) return;
  if (ready_.size() + wanted_.size() + (making_ != 0 ? 1 : 0) >= kMaxReady) return;
  if (pooled_of(size) >= kMaxReadyPerSize) return;
  wanted_.push_back(size);  // within the capacity reserved for kMaxReady
  reserved_ += cost;
  wake_.notify_one();
}

std::size_t MemfdBacking::pooled_of(std::uint64_t size) const {
  std::size_t n = making_ == size ? 1 : 0;
  for (const auto& r : ready_)
    n += r.size == size ? 1 : 0;
  for (const auto s : wanted_)
    n += s == size ? 1 : 0;
  return n;
}

void MemfdBacking::set_pool_bytes(std::uint64_t bytes) {
  std::lock_guard lk(mu_);
  budget_ = bytes;
  // Not made yet: simply forgotten. Ready ones beyond the budget the worker closes.
  while (reserved_ > budget_ && !wanted_.empty()) {
    reserved_ -= charge(wanted_.back());
    wanted_.pop_back();
  }
  wake_.notify_one();
}

RegionPoolStats MemfdBacking::pool_stats() const {
  std::lock_guard lk(mu_);
  RegionPoolStats s;
  s.budget_bytes = budget_;
  s.ready = ready_.size();
  for (const auto& r : ready_)
    s.ready_bytes += r.size;
  s.hits = hits_;
  s.misses = misses_;
  return s;
}

bool MemfdBacking::idle() const {
  return wanted_.empty() && making_ == 0 && to_close_.empty() && !busy_ && reserved_ <= budget_;
}

bool MemfdBacking::wait_idle(std::chrono::milliseconds timeout) const {
  std::unique_lock lk(mu_);
  return idle_cv_.wait_for(lk, timeout, [this] { return idle(); });
}

void MemfdBacking::run() {
  // Reserved up front so that the worker never allocates (an exception here would end the
  // daemon): every fd it may have to close at once.
  std::vector<int> closing;
  closing.reserve(kMaxPendingCloses + kMaxReady);
  std::unique_lock lk(mu_);
  for (;;) {
    const auto now = Clock::now();
    while (!ready_.empty() &&
           (stop_ || reserved_ > budget_ || ready_.front().since + idle_ttl_ <= now)) {
      closing.push_back(ready_.front().fd);
      reserved_ -= charge(ready_.front().size);
      ready_.pop_front();
    }
    closing.insert(closing.end(), to_close_.begin(), to_close_.end());
    to_close_.clear();
    if (!closing.empty()) {
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
    if (!wanted_.empty()) {
      making_ = wanted_.front();
      wanted_.erase(wanted_.begin());
      const std::uint64_t size = making_;
      busy_ = true;
      lk.unlock();
      // `size` was served by create() already, so it is within every limit. Out of
      // memory here (an exception would end the daemon) is one more way to fail.
      proto::UniqueFd made;
      try {
        auto fd = proto::shm::create_region(static_cast<std::size_t>(size), kPoolName,
                                            static_cast<std::size_t>(size));
        if (fd.ok()) made = std::move(fd).value();
      } catch (const std::bad_alloc&) {
      }
      lk.lock();
      busy_ = false;
      making_ = 0;
      // A failure (tmpfs full, say) only means no head start: create() meets the same
      // condition itself and reports it to the peer.
      bool kept = false;
      if (made) {
        try {
          ready_.push_back(Ready{size, made.get(), Clock::now()});
          made.release();
          kept = true;
        } catch (const std::bad_alloc&) {
        }
      }
      if (!kept) reserved_ -= charge(size);
      continue;  // over budget after a reload, or stopping: closed on the next round
    }
    idle_cv_.notify_all();
    if (ready_.empty()) {
      wake_.wait(lk);
    } else {
      wake_.wait_until(lk, ready_.front().since + idle_ttl_);
    }
  }
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
