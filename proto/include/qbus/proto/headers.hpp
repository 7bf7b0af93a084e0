// A message's header block (proto/PROTOCOL.md 17.1): a few key/value properties that travel
// with a message in PROPERTIES and DELIVERY_INFO, such as a content type, a W3C traceparent,
// or the reasons the broker adds when it dead-letters a message.
//
// Layout, repeated until the block ends: key length (u8, 1..kMaxHeaderKeySize), the key
// (printable ASCII without space, '=' or ':'), value length (u16 LE, up to
// kMaxHeaderValueSize), the value (any bytes). At most kMaxHeaders entries and
// kMaxHeadersSize bytes in all (kMaxSenderHeaders and kMaxSenderHeadersSize from a sender). Keys
// starting with "qbus-" are the broker's: a sender may not set them.
//
// Pure functions over byte spans, like the rest of the codec: no I/O, no allocation but in
// append_header (which grows the caller's vector).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "qbus/errc.hpp"
#include "qbus/proto/frames.hpp"

namespace qbus::proto {

inline constexpr std::string_view kReservedHeaderPrefix = "qbus-";
// What a sender's block may take: the rest of kMaxHeadersSize and kMaxHeaders is room for
// the broker's headers (a message id takes at most 48 bytes, a dead letter's three at most
// 340), so a message the broker adds them to stays a valid block.
inline constexpr std::size_t kMaxSenderHeadersSize = kMaxHeadersSize - 512;
inline constexpr std::size_t kMaxSenderHeaders = kMaxHeaders - 4;

// Headers qbusd adds when it moves a message to a dead-letter queue (17.7).
inline constexpr std::string_view kHeaderDeadReason = "qbus-dead-reason";  // see kDeadReason*
inline constexpr std::string_view kHeaderDeadQueue = "qbus-dead-queue";    // the queue it left
inline constexpr std::string_view kHeaderDeadCount = "qbus-dead-count";    // deliveries, decimal
// On a subject delivery (18.4, 18.6): messages the subscription dropped since its
// previous delivery (decimal), and the mark of a retained message ("1").
inline constexpr std::string_view kHeaderDropped = "qbus-dropped";
inline constexpr std::string_view kHeaderRetained = "qbus-retained";
// On every message of a queue declared with message ids (17.12): a broker-unique id, the
// same on each delivery of the message and, in a durable queue, after a restart.
inline constexpr std::string_view kHeaderMessageId = "qbus-id";
inline constexpr std::string_view kDeadReasonMaxDeliveries = "max_deliveries";
inline constexpr std::string_view kDeadReasonRejected = "rejected";  // NACK with dead_letter
inline constexpr std::string_view kDeadReasonOverflow = "overflow";
inline constexpr std::string_view kDeadReasonExpired = "expired";  // its time to live ended

struct HeaderEntry {
  std::string_view key;
  std::string_view value;
};

constexpr bool is_valid_header_key(std::string_view key) noexcept {
  if (key.empty() || key.size() > kMaxHeaderKeySize) return false;
  for (char c : key) {
    if (c <= ' ' || c > '~' || c == '=' || c == ':') return false;
  }
  return true;
}

// Walks a block that check_headers accepted.
class HeaderReader {
 public:
  explicit HeaderReader(Bytes block) noexcept : block_(block) {}
  // The next entry, false at the end (or at a malformed entry; check the block first).
  bool next(HeaderEntry& out) noexcept {
    if (block_.size() - pos_ < 1) return false;
    const std::size_t klen = std::to_integer<std::uint8_t>(block_[pos_]);
    if (klen == 0 || block_.size() - pos_ < 1 + klen + 2) return false;
    const auto* base = reinterpret_cast<const char*>(block_.data());
    out.key = std::string_view(base + pos_ + 1, klen);
    const std::size_t at = pos_ + 1 + klen;
    const std::size_t vlen = std::to_integer<std::uint8_t>(block_[at]) |
                             (std::to_integer<std::size_t>(block_[at + 1]) << 8);
    if (block_.size() - at - 2 < vlen) return false;
    out.value = std::string_view(base + at + 2, vlen);
    pos_ = at + 2 + vlen;
    return true;
  }

 private:
  Bytes block_;
  std::size_t pos_ = 0;
};

// Errc::ok, or malformed_frame when the block breaks any rule above. `from_sender`: a key
// with the reserved prefix is refused too (permission_denied), and so is an entry past
// kMaxSenderHeaders (malformed_frame).
inline Errc check_headers(Bytes block, bool from_sender) noexcept {
  if (block.size() > kMaxHeadersSize) return Errc::malformed_frame;
  HeaderReader r(block);
  HeaderEntry e;
  std::size_t count = 0, used = 0;
  while (r.next(e)) {
    if (++count > (from_sender ? kMaxSenderHeaders : kMaxHeaders) || !is_valid_header_key(e.key) ||
        e.value.size() > kMaxHeaderValueSize) {
      return Errc::malformed_frame;
    }
    if (from_sender && e.key.starts_with(kReservedHeaderPrefix)) return Errc::permission_denied;
    used += 3 + e.key.size() + e.value.size();
  }
  return used == block.size() ? Errc::ok : Errc::malformed_frame;
}

// The value of the first entry named `key`, if any.
inline bool find_header(Bytes block, std::string_view key, std::string_view& value) noexcept {
  HeaderReader r(block);
  HeaderEntry e;
  while (r.next(e)) {
    if (e.key == key) {
      value = e.value;
      return true;
    }
  }
  return false;
}

// The bytes one entry takes in a block: its key length, key, value length and value.
constexpr std::size_t header_entry_size(std::string_view key, std::string_view value) noexcept {
  return 1 + key.size() + 2 + value.size();
}

// Appends one entry; the caller keeps to the bounds (check_headers tells).
inline void append_header(std::vector<std::byte>& block, std::string_view key,
                          std::string_view value) {
  block.push_back(static_cast<std::byte>(key.size()));
  for (char c : key)
    block.push_back(static_cast<std::byte>(c));
  block.push_back(static_cast<std::byte>(value.size() & 0xFF));
  block.push_back(static_cast<std::byte>((value.size() >> 8) & 0xFF));
  for (char c : value)
    block.push_back(static_cast<std::byte>(c));
}

}  // namespace qbus::proto
