#include "qbus/proto/buffer.hpp"

#include <algorithm>
#include <cstring>

namespace qbus::proto {

void ByteBuffer::make_room(std::size_t n) {
  const std::size_t live = write_ - read_;
  if (read_ > 0 && capacity_ - live >= n) {
    // Enough space once the consumed prefix is dropped; moving is cheaper than growing.
    std::memmove(data_.get(), data_.get() + read_, live);
    read_ = 0;
    write_ = live;
    return;
  }
  reallocate(std::max<std::size_t>(std::max<std::size_t>(4096, live + n), capacity_ * 2));
}

void ByteBuffer::shrink_to(std::size_t keep) {
  if (capacity_ <= keep || write_ - read_ > keep) return;
  reallocate(keep);
}

void ByteBuffer::reallocate(std::size_t capacity) {
  const std::size_t live = write_ - read_;
  auto fresh = std::make_unique_for_overwrite<std::byte[]>(capacity);
  if (live) std::memcpy(fresh.get(), data_.get() + read_, live);
  data_ = std::move(fresh);
  capacity_ = capacity;
  read_ = 0;
  write_ = live;
}

}  // namespace qbus::proto
