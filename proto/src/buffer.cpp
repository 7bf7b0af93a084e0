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

namespace {

std::span<std::byte> frame(ByteBuffer& out, FrameType type, std::uint64_t correlation,
                           std::uint16_t flags, std::size_t body) {
  auto s = out.append(kHeaderSize + body);
  encode_header(s, Header{type, flags, correlation, static_cast<std::uint32_t>(body)});
  return s.subspan(kHeaderSize);
}

}  // namespace

void append_empty(ByteBuffer& out, FrameType type, std::uint64_t correlation, std::uint16_t flags) {
  frame(out, type, correlation, flags, 0);
}

void append_hello(ByteBuffer& out, std::uint64_t correlation, const Hello& m) {
  encode_hello(frame(out, FrameType::hello, correlation, 0, hello_size(m)), m);
}

void append_welcome(ByteBuffer& out, std::uint64_t correlation, const Welcome& m) {
  encode_welcome(frame(out, FrameType::welcome, correlation, 0, kWelcomeSize), m);
}

void append_error(ByteBuffer& out, std::uint64_t correlation, Errc code, std::string_view text) {
  encode_error(frame(out, FrameType::error, correlation, 0, error_size(text)),
               static_cast<std::uint16_t>(code), text);
}

void append_send(ByteBuffer& out, std::uint64_t correlation, std::uint16_t flags,
                 std::string_view key, std::span<const std::byte> payload) {
  auto body = frame(out, FrameType::send, correlation, flags, send_size(key, payload.size()));
  encode_send_prefix(body, key);
  if (!payload.empty())
    std::memcpy(body.data() + kSendFixed + key.size(), payload.data(), payload.size());
}

void append_receive(ByteBuffer& out, std::uint64_t correlation, const Receive& m) {
  encode_receive(frame(out, FrameType::receive, correlation, 0, receive_size(m.key)), m);
}

void append_deliver(ByteBuffer& out, std::uint64_t correlation, std::uint16_t flags,
                    const Deliver& m) {
  auto body =
      frame(out, FrameType::deliver, correlation, flags, deliver_size(m.key, m.payload.size()));
  encode_deliver_prefix(body, m);
  if (!m.payload.empty()) {
    std::memcpy(body.data() + kDeliverFixed + m.key.size(), m.payload.data(), m.payload.size());
  }
}

void append_declare(ByteBuffer& out, std::uint64_t correlation, std::uint16_t flags,
                    const Declare& m) {
  encode_declare(frame(out, FrameType::declare, correlation, flags, declare_size(m.key)), m);
}

void append_send_direct(ByteBuffer& out, std::uint64_t correlation, std::uint16_t flags,
                        const SendDirect& m) {
  auto body =
      frame(out, FrameType::send_direct, correlation, flags, send_direct_size(m.payload.size()));
  encode_send_direct_prefix(body, m);
  if (!m.payload.empty()) {
    std::memcpy(body.data() + kSendDirectFixed, m.payload.data(), m.payload.size());
  }
}

void append_receive_direct(ByteBuffer& out, std::uint64_t correlation, const ReceiveDirect& m) {
  encode_receive_direct(frame(out, FrameType::receive_direct, correlation, 0, kReceiveDirectSize),
                        m);
}

void append_request(ByteBuffer& out, std::uint64_t correlation, const Request& m) {
  auto body = frame(out, FrameType::request, correlation, 0, request_size(m.key, m.payload.size()));
  encode_request_prefix(body, m);
  if (!m.payload.empty()) {
    std::memcpy(body.data() + kRequestFixed + m.key.size(), m.payload.data(), m.payload.size());
  }
}

void append_region_alloc(ByteBuffer& out, std::uint64_t correlation, const RegionAlloc& m) {
  encode_region_alloc(frame(out, FrameType::region_alloc, correlation, 0, kRegionAllocSize), m);
}

void append_region_grant(ByteBuffer& out, std::uint64_t correlation, const RegionGrantBody& m) {
  encode_region_grant(frame(out, FrameType::region, correlation, 0, kRegionGrantSize), m);
}

void append_send_region(ByteBuffer& out, std::uint64_t correlation, std::uint16_t flags,
                        const SendRegion& m) {
  encode_send_region(
      frame(out, FrameType::send_region, correlation, flags, send_region_size(m.key)), m);
}

void append_deliver_region(ByteBuffer& out, std::uint64_t correlation, std::uint16_t flags,
                           const DeliverRegion& m) {
  encode_deliver_region(
      frame(out, FrameType::deliver_region, correlation, flags, deliver_region_size(m.key)), m);
}

void append_region_release(ByteBuffer& out, std::uint64_t correlation, std::uint16_t flags,
                           std::uint64_t region_id) {
  encode_region_release(
      frame(out, FrameType::region_release, correlation, flags, kRegionReleaseSize), region_id);
}

void append_region_create(ByteBuffer& out, std::uint64_t correlation, const RegionCreate& m) {
  encode_region_create(
      frame(out, FrameType::region_create, correlation, 0, region_create_size(m.key)), m);
}

void append_region_attach(ByteBuffer& out, std::uint64_t correlation, const RegionAttach& m) {
  encode_region_attach(
      frame(out, FrameType::region_attach, correlation, 0, region_attach_size(m.key)), m);
}

void append_region_remove(ByteBuffer& out, std::uint64_t correlation, std::string_view key) {
  encode_region_remove(
      frame(out, FrameType::region_remove, correlation, 0, region_remove_size(key)), key);
}

}  // namespace qbus::proto
