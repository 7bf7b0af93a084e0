#include "qbus/proto/buffer.hpp"

#include <algorithm>
#include <cstring>

namespace qbus::proto {

void ByteBuffer::make_room(std::size_t n) {
  const std::size_t live = write_ - read_;
  if (read_ > 0 && data_.size() - live >= n) {
    // Enough space once the consumed prefix is dropped; moving is cheaper than growing.
    std::memmove(data_.data(), data_.data() + read_, live);
    read_ = 0;
    write_ = live;
    return;
  }
  std::vector<std::byte> bigger(
      std::max<std::size_t>(std::max<std::size_t>(4096, live + n), data_.size() * 2));
  if (live) std::memcpy(bigger.data(), data_.data() + read_, live);
  data_.swap(bigger);
  read_ = 0;
  write_ = live;
}

void ByteBuffer::shrink_to(std::size_t keep) {
  const std::size_t live = write_ - read_;
  if (data_.size() <= keep || live > keep) return;
  std::vector<std::byte> smaller(keep);
  if (live) std::memcpy(smaller.data(), data_.data() + read_, live);
  data_.swap(smaller);
  read_ = 0;
  write_ = live;
}

}  // namespace qbus::proto
