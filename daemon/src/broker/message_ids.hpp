// The ids of messages in queues declared with message_ids (proto/PROTOCOL.md 17.12): an
// incarnation drawn at random when the broker starts, and a count of the ids issued since,
// as "<16 hex digits>-<decimal>". The incarnation keeps the ids of a restarted broker apart
// from those of its earlier lives, whose durable messages come back with theirs.
//
// Thread-safety: none; the Broker's one thread.
#pragma once

#include <charconv>
#include <cstdint>
#include <string_view>

namespace qbus::broker {

class MessageIds {
 public:
  // A random incarnation (getrandom; the time and pid if that fails).
  MessageIds();
  explicit MessageIds(std::uint64_t incarnation) : incarnation_(incarnation) {}

  // The next id; valid until the next call.
  std::string_view next() {
    char* p = text_;
    for (int shift = 60; shift >= 0; shift -= 4)
      *p++ = "0123456789abcdef"[(incarnation_ >> shift) & 0xf];
    *p++ = '-';
    p = std::to_chars(p, text_ + sizeof text_, ++issued_).ptr;
    return {text_, static_cast<std::size_t>(p - text_)};
  }
  std::uint64_t incarnation() const noexcept { return incarnation_; }

 private:
  std::uint64_t incarnation_;
  std::uint64_t issued_ = 0;
  char text_[16 + 1 + 20];
};

}  // namespace qbus::broker
