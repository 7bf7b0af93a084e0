// What the journal's records say (docs/journal.md, "Records"): each record of a segment is
// one of these, its first byte its kind. Encoding appends to a byte vector; decoding checks
// every length against the record and returns false for a record it cannot trust (which
// recovery logs and skips). Pure functions; no state, no I/O.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "broker/types.hpp"

namespace qbus::storage {

using Bytes = std::span<const std::byte>;

enum class RecordKind : std::uint8_t {
  snapshot = 1,   // every durable queue, at the head of each segment
  declare = 2,    // a durable queue, or new options of one
  remove = 3,     // a durable queue deleted, with what it held
  store = 4,      // a message stored in a durable queue
  settle = 5,     // a message left the broker
  delivered = 6,  // a message was handed over in acknowledgement mode
};

// A durable queue. `qid` names it in the journal's other records: a number never reused.
struct QueueRecord {
  std::uint32_t qid = 0;
  std::string key;
  broker::QueueOptions options;
  std::optional<std::uint32_t> owner;
};

// A stored message. Times are wall-clock milliseconds since the Unix epoch, since a
// steady clock does not survive a restart; 0: none.
struct StoreRecord {
  std::uint64_t id = 0;
  std::uint32_t qid = 0;
  std::uint32_t deliveries = 0;
  std::uint8_t priority = 0;
  std::uint32_t pid = 0;
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  bool tcp = false;
  std::int64_t enqueued_ms = 0;
  std::int64_t expires_ms = 0;
  std::int64_t due_ms = 0;
  Bytes headers;
  Bytes payload;
};

// The fixed part of a store record before its headers and payload.
inline constexpr std::size_t kStoreFixed = 1 + 8 + 4 + 4 + 1 + 1 + 4 + 4 + 4 + 8 + 8 + 8 + 4;

void encode_queue(RecordKind kind, const QueueRecord& q, std::vector<std::byte>& out);
void encode_snapshot(std::span<const std::vector<std::byte>> declares, std::vector<std::byte>& out);
void encode_store(const StoreRecord& m, std::vector<std::byte>& out);
// settle, delivered: a message id; remove: a qid.
void encode_id(RecordKind kind, std::uint64_t id, std::vector<std::byte>& out);

RecordKind record_kind(Bytes record);  // 0 (no kind) for an empty record
bool decode_queue(Bytes record, QueueRecord& q);
// Calls `each` for every declare record a snapshot holds; false when malformed.
bool decode_snapshot(Bytes record, std::vector<QueueRecord>& queues);
// `m.headers` and `m.payload` point into `record`.
bool decode_store(Bytes record, StoreRecord& m);
bool decode_id(Bytes record, std::uint64_t& id);
// A store record with its deliveries replaced (compaction copies a live message forward).
void set_store_deliveries(std::vector<std::byte>& record, std::uint32_t deliveries);

}  // namespace qbus::storage
