// libqbus internals: the options of a message and of a queue between the public
// SendOptions and QueueOptions (client.hpp) and the wire's PROPERTIES and DECLARE_EX
// (PROTOCOL.md 17.1 and 17.6). Header-only, like headers.hpp, so that the unit tests
// compile the same code the library runs.
//
// The checks are made here, before anything is sent, so that a value out of range is an
// Error(invalid_argument) naming the field rather than a frame the broker refuses later
// (asynchronously, for a pipelined send).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "headers.hpp"
#include "qbus/client.hpp"
#include "qbus/proto/frames.hpp"

namespace qbus::detail {

// What one PROPERTIES frame says about the message after it; owns its header block.
struct MessageProperties {
  std::vector<std::byte> headers;  // encode_headers()
  std::uint32_t ttl_ms = 0;
  std::uint32_t delay_ms = 0;
  std::uint8_t priority = 0;

  // Set only on a queue's message (SEND, SEND_REGION to a queue): the broker refuses them
  // on REQUEST, SEND_DIRECT and a SEND_REGION to a process.
  bool timed() const noexcept { return ttl_ms != 0 || delay_ms != 0 || priority != 0; }
  // Nothing to say: no PROPERTIES frame goes before the message.
  bool empty() const noexcept { return headers.empty() && !timed(); }
  // Valid while this lives unchanged.
  proto::Properties body() const noexcept {
    proto::Properties p;
    p.ttl_ms = ttl_ms;
    p.delay_ms = delay_ms;
    p.priority = priority;
    p.headers = headers;
    return p;
  }
};

// `t` as the wire's u32 of milliseconds; Error(invalid_argument) naming `field` when it is
// negative or over 2^32-1 ms (about 49.7 days).
inline std::uint32_t wire_ms(std::chrono::milliseconds t, std::string_view field) {
  if (t.count() < 0 || t.count() > static_cast<std::int64_t>(UINT32_MAX)) {
    throw Error(Errc::invalid_argument, std::string(field) + " of " + std::to_string(t.count()) +
                                            " ms: use 0 to 4294967295 ms");
  }
  return static_cast<std::uint32_t>(t.count());
}

// The properties of a message sent with `options`. Throws Error(invalid_argument) for a
// ttl or delay outside 0..2^32-1 ms, a priority over 9 or a bad header (encode_headers).
inline MessageProperties message_properties(const SendOptions& options) {
  MessageProperties p;
  p.ttl_ms = wire_ms(options.ttl, "SendOptions::ttl");
  p.delay_ms = wire_ms(options.delay, "SendOptions::delay");
  if (options.priority > proto::kMaxPriority) {
    throw Error(Errc::invalid_argument, "SendOptions::priority " +
                                            std::to_string(options.priority) + ": use 0 to " +
                                            std::to_string(proto::kMaxPriority));
  }
  p.priority = options.priority;
  p.headers = encode_headers(options.headers);
  return p;
}

// The properties of a direct message or a request: headers only.
inline MessageProperties message_properties(const Headers& headers) {
  MessageProperties p;
  p.headers = encode_headers(headers);
  return p;
}

// Whether declare() needs DECLARE_EX: one of the options of protocol 2 is set.
inline bool needs_declare_ex(const QueueOptions& o) noexcept {
  return o.ack_timeout.count() != 0 || o.max_deliveries != 0 || !o.dead_letter.empty() ||
         o.dead_letter_overflow || o.ttl.count() != 0 || o.priorities != 0 ||
         o.dead_letter_expired || o.single_active_consumer || o.durable || o.message_ids ||
         o.fsync != QueueOptions::Fsync::broker_default;
}

// DECLARE_EX of queue `key` with `options` (the body points into both); nullopt when none
// of the options of protocol 2 is set, for a plain DECLARE an older broker understands.
// Throws Error(invalid_argument) naming the field for one out of range or missing its
// dead_letter, Error(invalid_key) for a bad dead_letter key.
inline std::optional<proto::DeclareEx> declare_ex(std::string_view key,
                                                  const QueueOptions& options) {
  if (!needs_declare_ex(options)) return std::nullopt;
  const std::string what = "declare '" + std::string(key) + "': ";
  proto::DeclareEx d;
  d.ack_timeout_ms = wire_ms(options.ack_timeout, what + "QueueOptions::ack_timeout");
  d.ttl_ms = wire_ms(options.ttl, what + "QueueOptions::ttl");
  if (options.priorities > proto::kMaxPriorities) {
    throw Error(Errc::invalid_argument, what + "QueueOptions::priorities " +
                                            std::to_string(options.priorities) + ": use 0 to " +
                                            std::to_string(proto::kMaxPriorities));
  }
  if (!options.dead_letter.empty() && !proto::is_valid_key(options.dead_letter)) {
    throw Error(Errc::invalid_key,
                what + "invalid dead_letter key '" + options.dead_letter.substr(0, 64) + "'");
  }
  if (options.dead_letter == key) {
    throw Error(Errc::invalid_argument, what + "a queue cannot be its own dead_letter queue");
  }
  if (options.dead_letter_overflow && options.dead_letter.empty()) {
    throw Error(Errc::invalid_argument, what + "dead_letter_overflow needs a dead_letter queue");
  }
  if (options.dead_letter_expired && options.dead_letter.empty()) {
    throw Error(Errc::invalid_argument, what + "dead_letter_expired needs a dead_letter queue");
  }
  if (options.fsync != QueueOptions::Fsync::broker_default && !options.durable) {
    throw Error(Errc::invalid_argument, what + "QueueOptions::fsync needs durable");
  }
  if (static_cast<std::uint8_t>(options.fsync) > static_cast<std::uint8_t>(proto::Fsync::none)) {
    throw Error(Errc::invalid_argument, what + "QueueOptions::fsync out of range");
  }
  d.fsync = static_cast<proto::Fsync>(options.fsync);
  d.key = key;
  d.max_messages = options.max_messages;
  d.max_bytes = options.max_bytes;
  d.overflow = static_cast<proto::Overflow>(options.overflow);
  d.flags = static_cast<std::uint8_t>(
      (options.dead_letter_overflow ? proto::kDeclareDeadLetterOverflow : 0) |
      (options.dead_letter_expired ? proto::kDeclareDeadLetterExpired : 0) |
      (options.single_active_consumer ? proto::kDeclareSingleActiveConsumer : 0) |
      (options.durable ? proto::kDeclareDurable : 0) |
      (options.message_ids ? proto::kDeclareMessageIds : 0));
  d.max_deliveries = options.max_deliveries;
  d.priorities = options.priorities;
  d.dead_letter = options.dead_letter;
  return d;
}

}  // namespace qbus::detail
