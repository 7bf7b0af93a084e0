// A contiguous byte buffer with a read cursor, shared by the broker's connections and the
// client library for both directions of a stream.
//
// Not thread-safe. Memory is reused: consumed bytes are reclaimed by make_room(), so a
// steady stream of frames does not allocate once the buffer has reached its working size.
// Space past what was written is left uninitialised: every byte is written before it is
// read. Zeroing it (std::vector's resize) each time a connection's output grew to
// megabytes was 6% of qbusd's instructions on a push run under callgrind, and 0.8% of
// its samples at full speed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <utility>

#include "qbus/proto/codec.hpp"

namespace qbus::proto {

class ByteBuffer {
 public:
  ByteBuffer() = default;
  // A moved-from buffer is empty and usable.
  ByteBuffer(ByteBuffer&& o) noexcept { swap(o); }
  ByteBuffer& operator=(ByteBuffer&& o) noexcept {
    ByteBuffer(std::move(o)).swap(*this);
    return *this;
  }

  std::span<const std::byte> readable() const noexcept {
    return {data_.get() + read_, write_ - read_};
  }
  std::size_t size() const noexcept { return write_ - read_; }
  bool empty() const noexcept { return write_ == read_; }
  std::size_t capacity() const noexcept { return capacity_; }

  void consume(std::size_t n) noexcept {
    read_ += n;
    if (read_ == write_) read_ = write_ = 0;
  }

  // Space for at least `n` more bytes at the end; call commit() with what was filled.
  std::span<std::byte> prepare(std::size_t n) {
    if (capacity_ - write_ < n) make_room(n);
    return {data_.get() + write_, capacity_ - write_};
  }
  void commit(std::size_t n) noexcept { write_ += n; }

  // Appends and commits exactly `n` bytes, returned for the caller to fill.
  std::span<std::byte> append(std::size_t n) {
    auto s = prepare(n).first(n);
    write_ += n;
    return s;
  }

  void clear() noexcept { read_ = write_ = 0; }
  void swap(ByteBuffer& o) noexcept {
    data_.swap(o.data_);
    std::swap(capacity_, o.capacity_);
    std::swap(read_, o.read_);
    std::swap(write_, o.write_);
  }
  // Gives memory back when a burst left the buffer far larger than it needs now.
  void shrink_to(std::size_t keep);

 private:
  void make_room(std::size_t n);
  void reallocate(std::size_t capacity);  // keeps the unread bytes, at offset 0

  std::unique_ptr<std::byte[]> data_;
  std::size_t capacity_ = 0;
  std::size_t read_ = 0;
  std::size_t write_ = 0;
};

// Frame builders: each appends one complete frame (header and body) to `out`, growing it
// only when it lacks room. append_frame is generated from the body's description
// (frames.hpp); the named builders below are its instances under the names callers use.
template <typename T>
void append_frame(ByteBuffer& out, std::uint64_t correlation, std::uint16_t flags, const T& m) {
  const std::size_t body = body_size(m);
  const auto s = out.append(kHeaderSize + body);
  encode_header(s, Header{Layout<T>::kType, flags, correlation, static_cast<std::uint32_t>(body)});
  encode_body(s.subspan(kHeaderSize), m);
}

inline void append_empty(ByteBuffer& out, FrameType type, std::uint64_t correlation,
                         std::uint16_t flags = 0) {
  encode_header(out.append(kHeaderSize), Header{type, flags, correlation, 0});
}
// Frames whose type allows no flag.
template <typename T>
void append_unflagged(ByteBuffer& out, std::uint64_t correlation, const T& m) {
  append_frame(out, correlation, 0, m);
}
inline constexpr auto& append_hello = append_unflagged<Hello>;
inline constexpr auto& append_welcome = append_unflagged<Welcome>;
inline constexpr auto& append_receive = append_unflagged<Receive>;
inline constexpr auto& append_receive_direct = append_unflagged<ReceiveDirect>;
inline constexpr auto& append_request = append_unflagged<Request>;
inline constexpr auto& append_region_alloc = append_unflagged<RegionAlloc>;
inline constexpr auto& append_region_grant = append_unflagged<RegionGrantBody>;
inline constexpr auto& append_region_create = append_unflagged<RegionCreate>;
inline constexpr auto& append_region_attach = append_unflagged<RegionAttach>;
inline constexpr auto& append_deliver = append_frame<Deliver>;
inline constexpr auto& append_declare = append_frame<Declare>;
inline constexpr auto& append_send_direct = append_frame<SendDirect>;
inline constexpr auto& append_send_region = append_frame<SendRegion>;
inline constexpr auto& append_deliver_region = append_frame<DeliverRegion>;

// Bodies passed as their parts.
inline void append_error(ByteBuffer& out, std::uint64_t correlation, Errc code,
                         std::string_view text) {
  append_frame(out, correlation, 0, ErrorBody{static_cast<std::uint16_t>(code), text});
}
inline void append_send(ByteBuffer& out, std::uint64_t correlation, std::uint16_t flags,
                        std::string_view key, std::span<const std::byte> payload) {
  append_frame(out, correlation, flags, Send{key, payload});
}
inline void append_region_release(ByteBuffer& out, std::uint64_t correlation, std::uint16_t flags,
                                  std::uint64_t region_id) {
  append_frame(out, correlation, flags, RegionRelease{region_id});
}
inline void append_region_remove(ByteBuffer& out, std::uint64_t correlation, std::string_view key) {
  append_frame(out, correlation, 0, RegionRemove{key});
}
inline void append_purge(ByteBuffer& out, std::uint64_t correlation, std::string_view key) {
  append_frame(out, correlation, 0, Purge{key});
}
inline void append_delete(ByteBuffer& out, std::uint64_t correlation, std::string_view key) {
  append_frame(out, correlation, 0, DeleteQueue{key});
}
inline void append_dropped(ByteBuffer& out, std::uint64_t correlation, std::uint64_t count) {
  append_frame(out, correlation, 0, Dropped{count});
}

}  // namespace qbus::proto
