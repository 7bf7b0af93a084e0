// What the core tells the journal of durable queues (docs/journal.md). The core stays free
// of I/O: it reports each change to a durable queue through this interface, and the
// storage layer (storage/journal.hpp) encodes it and writes it on a thread of its own.
//
// Ownership: the Core holds a pointer (null: no journal, every durable declaration is
// refused); the owner (qbusd's main) keeps the journal alive longer than the Broker, or
// clears the pointer first. Thread-safety: every call is made on the broker's thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "broker/message_store.hpp"
#include "broker/types.hpp"

namespace qbus::broker {

class Journal {
 public:
  virtual ~Journal() = default;

  // Why durable queues cannot be declared or sent to now (no usable state directory, a
  // failed disk); empty when they can. Refusals carry it as their text (storage_failed).
  virtual const std::string& unavailable() const = 0;

  // Queue `key` is durable with `options`, charged to `owner` (none: nobody).
  virtual void declare(std::string_view key, const QueueOptions& options,
                       std::optional<std::uint32_t> owner) = 0;
  // Queue `key` is gone, with what it held.
  virtual void remove(std::string_view key) = 0;

  // The number of the next message stored: the message's MessageMeta::journal_id.
  virtual std::uint64_t next_id() = 0;
  // Message `meta.journal_id`, stored in durable queue `key` (declared before). Its
  // deliveries so far, and, for a delayed send, when it becomes due. Returns its ticket:
  // the send is durable (per the queue's fsync policy) once the journal says so to the
  // edge, which answers a confirmed send then.
  virtual std::uint64_t store(std::string_view key, const MessageMeta& meta,
                              std::uint32_t deliveries, Bytes payload, Bytes headers,
                              std::optional<Clock::time_point> due) = 0;
  // Message `id` was handed over in acknowledgement mode (one more delivery).
  virtual void delivered(std::uint64_t id) = 0;
  // Message `id` left the broker: acknowledged, delivered at most once, dropped, expired,
  // dead-lettered (the copy is another message) or purged.
  virtual void settled(std::uint64_t id) = 0;
};

}  // namespace qbus::broker
