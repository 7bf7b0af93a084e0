#include "region_pool.hpp"

#include <algorithm>
#include <utility>

namespace qbus::detail {

RegionPool::RegionPool(std::size_t max_bytes, std::shared_ptr<ReleaseQueue> releases)
    : max_bytes_(max_bytes), releases_(std::move(releases)) {}

RegionPool::HoldOff::HoldOff(RegionPool* pool) noexcept : pool_(pool) {
  if (pool_ == nullptr) return;
  std::lock_guard lock(pool_->mu_);
  pool_->holding_off_.fetch_add(1, std::memory_order_relaxed);
}

RegionPool::HoldOff::~HoldOff() {
  if (pool_ == nullptr) return;
  {
    std::lock_guard lock(pool_->mu_);
    if (pool_->holding_off_.fetch_sub(1, std::memory_order_relaxed) != 1) return;
  }
  pool_->resumed_.notify_one();
}

RegionPool::~RegionPool() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  work_.notify_one();
  if (worker_.joinable()) worker_.join();
  for (auto* q : {&pending_, &ready_}) {
    for (Entry& e : *q)
      release(e);
  }
}

void RegionPool::release(Entry& e) noexcept {
  e.mapping.reset();
  e.fd.reset();
  releases_->push(e.id);
}

std::size_t RegionPool::held(std::size_t size) const {
  const auto of_size = [size](const Entry& e) { return e.size == size; };
  return static_cast<std::size_t>(std::count_if(pending_.begin(), pending_.end(), of_size) +
                                  std::count_if(ready_.begin(), ready_.end(), of_size)) +
         (busy_size_ == size ? 1 : 0);
}

std::optional<RegionPool::Ready> RegionPool::take(std::size_t size, bool wait) {
  std::unique_lock lock(mu_);
  bool waited = false;
  for (;;) {
    const auto it = std::find_if(ready_.begin(), ready_.end(),
                                 [size](const Entry& e) { return e.size == size; });
    if (it != ready_.end()) {
      Ready r{it->id, std::move(it->fd), std::move(it->mapping)};
      ready_.erase(it);
      held_bytes_ -= size;
      ++(waited ? stats_.waits : stats_.hits);
      return r;
    }
    // The worker is populating one of this size, or is about to start on one (it takes
    // pending_ in order): that finishes sooner than a cold allocation would.
    const bool coming = busy_size_ == size ||
                        (busy_size_ == 0 && !pending_.empty() && pending_.front().size == size);
    if (!coming || !wait) break;
    waited = true;
    populated_.wait(lock);
  }
  ++stats_.misses;
  return std::nullopt;
}

std::size_t RegionPool::wanted(std::size_t size) {
  std::lock_guard lock(mu_);
  const std::size_t have = held(size);
  if (have >= kDepth) return 0;
  std::size_t want = kDepth - have;
  // Make room by evicting ready regions of other sizes, oldest first; what is being
  // populated, or still waits for the worker, finishes first and is evicted next time.
  while (held_bytes_ + want * size > max_bytes_) {
    const auto it = std::find_if(ready_.begin(), ready_.end(),
                                 [size](const Entry& e) { return e.size != size; });
    if (it == ready_.end()) break;
    held_bytes_ -= it->size;
    ++stats_.evictions;
    release(*it);
    ready_.erase(it);
  }
  while (want > 0 && held_bytes_ + want * size > max_bytes_)
    --want;
  return want;
}

void RegionPool::add(std::uint64_t id, std::size_t size, proto::UniqueFd fd) noexcept {
  Entry e{id, size, std::move(fd), {}};
  try {
    std::lock_guard lock(mu_);
    if (!worker_.joinable()) worker_ = std::thread([this] { run(); });
    pending_.push_back(std::move(e));
    held_bytes_ += size;
  } catch (...) {
    // No thread or no memory: the pool stays short, and the grant goes back.
    release(e);
    return;
  }
  work_.notify_one();
}

std::size_t RegionPool::drain() {
  std::unique_lock lock(mu_);
  std::size_t n = pending_.size();
  for (Entry& e : pending_)
    release(e);
  pending_.clear();
  // The one being populated is released too, once the worker is done with it.
  populated_.wait(lock, [this] { return busy_size_ == 0; });
  n += ready_.size();
  for (Entry& e : ready_)
    release(e);
  ready_.clear();
  held_bytes_ = 0;
  return n;
}

RegionPoolStats RegionPool::stats() const {
  std::lock_guard lock(mu_);
  RegionPoolStats s = stats_;
  s.held_bytes = held_bytes_;
  for (const Entry& e : ready_)
    s.ready_bytes += e.size;
  return s;
}

void RegionPool::run() {
  std::unique_lock lock(mu_);
  for (;;) {
    work_.wait(lock, [this] { return stop_ || !pending_.empty(); });
    if (stop_) return;
    Entry e = std::move(pending_.front());
    pending_.pop_front();
    busy_size_ = e.size;
    lock.unlock();
    // As for any region being filled: a child forked meanwhile must not inherit a writable
    // mapping, which would keep the region from being sealed.
    auto map = proto::shm::populate_writable(e.fd.get(), e.size, /*fork_private=*/true,
                                             [this] { give_way(); });
    if (map) e.mapping = std::move(map).value();
    lock.lock();
    busy_size_ = 0;
    if (map) {
      ready_.push_back(std::move(e));
    } else {
      held_bytes_ -= e.size;
      ++stats_.failures;
      release(e);
    }
    populated_.notify_all();
  }
}

void RegionPool::give_way() {
  // The common case, nobody unmapping, costs one load.
  if (holding_off_.load(std::memory_order_relaxed) == 0) return;
  std::unique_lock lock(mu_);
  resumed_.wait(lock, [this] { return holding_off_.load(std::memory_order_relaxed) == 0; });
}

}  // namespace qbus::detail
