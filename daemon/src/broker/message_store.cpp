#include "broker/message_store.hpp"

#include <sys/mman.h>

#include <new>

namespace qbus::broker {

void MessageStore::ChunkRelease::operator()(std::byte* p) const noexcept {
  if (size >= kMapChunk) {
    ::munmap(p, size);
  } else {
    delete[] p;
  }
}

MessageStore::Chunk MessageStore::make_chunk(std::size_t capacity) {
  std::byte* p = nullptr;
  if (capacity >= kMapChunk) {
    void* m = ::mmap(nullptr, capacity, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) throw std::bad_alloc();
    p = static_cast<std::byte*>(m);
  } else {
    p = new std::byte[capacity];
  }
  Chunk c;
  c.data = std::unique_ptr<std::byte, ChunkRelease>(p, ChunkRelease{capacity});
  c.capacity = capacity;
  return c;
}

}  // namespace qbus::broker
