// A log-linear latency histogram in the spirit of HdrHistogram.
//
// Values below 2^kSubBucketBits are counted exactly; every larger power-of-two range
// [2^e, 2^(e+1)) is split into 2^(kSubBucketBits-1) equal buckets. A reported value is
// therefore the highest value of the bucket it fell in, at most 1/512 (0.2 %) above what was
// recorded, over the whole uint64 range. min, max and count are exact.
//
// Memory is fixed (about 224 KiB of counters inside the object: allocate it once, not on a
// small stack); record() is O(1) and never allocates. Not thread-safe.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>

namespace qbus::bench {

class Histogram {
 public:
  static constexpr int kSubBucketBits = 10;
  static constexpr std::uint64_t kExact = std::uint64_t{1} << kSubBucketBits;
  static constexpr std::uint64_t kHalf = kExact / 2;
  // The exact range, then one half-range of buckets per power of two from 2^kSubBucketBits
  // up to 2^63.
  static constexpr std::size_t kBuckets = (66 - kSubBucketBits) * kHalf;

  void record(std::uint64_t value) noexcept {
    ++counts_[index_of(value)];
    ++count_;
    min_ = std::min(min_, value);
    max_ = std::max(max_, value);
  }
  // Negative durations (a clock that stepped back) count as zero.
  void record_signed(std::int64_t value) noexcept {
    record(value < 0 ? 0 : static_cast<std::uint64_t>(value));
  }

  void reset() noexcept {
    counts_.fill(0);
    count_ = 0;
    min_ = std::numeric_limits<std::uint64_t>::max();
    max_ = 0;
  }

  std::uint64_t count() const noexcept { return count_; }
  std::uint64_t min() const noexcept { return count_ ? min_ : 0; }
  std::uint64_t max() const noexcept { return max_; }

  // The smallest recorded value v such that at least `percent` % of the values are <= v
  // (to the bucket's resolution, never above max()). 0 when empty; max() for 100.
  std::uint64_t percentile(double percent) const noexcept {
    if (count_ == 0) return 0;
    if (percent >= 100.0) return max_;
    const double wanted = std::ceil(std::max(percent, 0.0) / 100.0 * static_cast<double>(count_));
    const std::uint64_t rank = std::max<std::uint64_t>(1, static_cast<std::uint64_t>(wanted));
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < kBuckets; ++i) {
      seen += counts_[i];
      if (seen >= rank) return std::clamp(highest_in(i), min_, max_);
    }
    return max_;
  }

  static constexpr std::size_t index_of(std::uint64_t value) noexcept {
    if (value < kExact) return static_cast<std::size_t>(value);
    const int shift = static_cast<int>(std::bit_width(value)) - kSubBucketBits;  // >= 1
    return static_cast<std::size_t>(static_cast<std::uint64_t>(shift) * kHalf + (value >> shift));
  }

  // The largest value that index_of() maps to bucket `index`.
  static constexpr std::uint64_t highest_in(std::size_t index) noexcept {
    if (index < kExact) return index;
    const std::uint64_t shift = index / kHalf - 1;
    const std::uint64_t lowest = (index - shift * kHalf) << shift;
    return lowest + ((std::uint64_t{1} << shift) - 1);
  }

 private:
  std::array<std::uint64_t, kBuckets> counts_{};
  std::uint64_t count_ = 0;
  std::uint64_t min_ = std::numeric_limits<std::uint64_t>::max();
  std::uint64_t max_ = 0;
};

static_assert(Histogram::index_of(Histogram::kExact - 1) == Histogram::kExact - 1);
static_assert(Histogram::index_of(Histogram::kExact) == Histogram::kExact);
static_assert(Histogram::index_of(std::numeric_limits<std::uint64_t>::max()) ==
              Histogram::kBuckets - 1);
static_assert(Histogram::highest_in(Histogram::kBuckets - 1) ==
              std::numeric_limits<std::uint64_t>::max());
static_assert(Histogram::highest_in(Histogram::index_of(3000)) >= 3000);
static_assert(Histogram::index_of(Histogram::highest_in(Histogram::index_of(3000)) + 1) ==
              Histogram::index_of(3000) + 1);

}  // namespace qbus::bench
