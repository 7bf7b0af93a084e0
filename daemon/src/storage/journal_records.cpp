#include "storage/journal_records.hpp"

#include <cstring>

namespace qbus::storage {
namespace {

// Little-endian writing and bounds-checked reading of a record's fields.
class Out {
 public:
  explicit Out(std::vector<std::byte>& v) : v_(v) {}
  template <typename T>
  void put(T x) {
    const std::size_t at = v_.size();
    v_.resize(at + sizeof(T));
    for (std::size_t i = 0; i < sizeof(T); ++i)
      v_[at + i] = std::byte((static_cast<std::uint64_t>(x) >> (8 * i)) & 0xFF);
  }
  void bytes(Bytes b) { v_.insert(v_.end(), b.begin(), b.end()); }
  void text16(std::string_view s) {
    put<std::uint16_t>(static_cast<std::uint16_t>(s.size()));
    bytes(std::as_bytes(std::span(s.data(), s.size())));
  }

 private:
  std::vector<std::byte>& v_;
};

class In {
 public:
  explicit In(Bytes b) : b_(b) {}
  template <typename T>
  bool get(T& x) {
    if (b_.size() - pos_ < sizeof(T)) return false;
    std::uint64_t v = 0;
    for (std::size_t i = sizeof(T); i-- > 0;)
      v = (v << 8) | static_cast<std::uint8_t>(b_[pos_ + i]);
    x = static_cast<T>(v);
    pos_ += sizeof(T);
    return true;
  }
  bool bytes(std::size_t n, Bytes& out) {
    if (b_.size() - pos_ < n) return false;
    out = b_.subspan(pos_, n);
    pos_ += n;
    return true;
  }
  bool text16(std::string& s) {
    std::uint16_t n = 0;
    Bytes b;
    if (!get(n) || !bytes(n, b)) return false;
    s.assign(reinterpret_cast<const char*>(b.data()), b.size());
    return true;
  }
  Bytes rest() const { return b_.subspan(pos_); }
  bool done() const { return pos_ == b_.size(); }

 private:
  Bytes b_;
  std::size_t pos_ = 0;
};

constexpr std::uint8_t kDeadLetterOverflow = 1, kDeadLetterExpired = 2, kSingleActive = 4,
                       kMessageIds = 8;

bool read_queue_body(In& in, QueueRecord& q) {
  auto& o = q.options;
  std::uint8_t overflow = 0, flags = 0, fsync = 0, has_owner = 0;
  std::uint32_t owner = 0;
  if (!in.get(q.qid) || !in.text16(q.key) || !in.get(o.max_messages) || !in.get(o.max_bytes) ||
      !in.get(overflow) || !in.get(o.ack_timeout_ms) || !in.get(o.max_deliveries) ||
      !in.get(flags) || !in.get(o.default_ttl_ms) || !in.get(o.priorities) || !in.get(fsync) ||
      !in.text16(o.dead_letter) || !in.get(has_owner) || !in.get(owner)) {
    return false;
  }
  if (overflow > static_cast<std::uint8_t>(broker::Overflow::block) ||
      fsync > static_cast<std::uint8_t>(proto::Fsync::none) || q.key.empty()) {
    return false;
  }
  o.overflow = static_cast<broker::Overflow>(overflow);
  o.fsync = static_cast<proto::Fsync>(fsync);
  o.dead_letter_overflow = (flags & kDeadLetterOverflow) != 0;
  o.dead_letter_expired = (flags & kDeadLetterExpired) != 0;
  o.single_active_consumer = (flags & kSingleActive) != 0;
  o.message_ids = (flags & kMessageIds) != 0;
  o.durable = true;
  q.owner = has_owner != 0 ? std::optional(owner) : std::nullopt;
  return true;
}

}  // namespace

void encode_queue(RecordKind kind, const QueueRecord& q, std::vector<std::byte>& out) {
  Out w(out);
  const auto& o = q.options;
  w.put(static_cast<std::uint8_t>(kind));
  w.put(q.qid);
  w.text16(q.key);
  w.put(o.max_messages);
  w.put(o.max_bytes);
  w.put(static_cast<std::uint8_t>(o.overflow));
  w.put(o.ack_timeout_ms);
  w.put(o.max_deliveries);
  w.put(static_cast<std::uint8_t>((o.dead_letter_overflow ? kDeadLetterOverflow : 0) |
                                  (o.dead_letter_expired ? kDeadLetterExpired : 0) |
                                  (o.single_active_consumer ? kSingleActive : 0) |
                                  (o.message_ids ? kMessageIds : 0)));
  w.put(o.default_ttl_ms);
  w.put(o.priorities);
  w.put(static_cast<std::uint8_t>(o.fsync));
  w.text16(o.dead_letter);
  w.put(static_cast<std::uint8_t>(q.owner ? 1 : 0));
  w.put(q.owner.value_or(0));
}

void encode_snapshot(std::span<const std::vector<std::byte>> declares,
                     std::vector<std::byte>& out) {
  Out w(out);
  w.put(static_cast<std::uint8_t>(RecordKind::snapshot));
  w.put(static_cast<std::uint32_t>(declares.size()));
  for (const auto& d : declares) {
    w.put(static_cast<std::uint32_t>(d.size()));
    w.bytes(d);
  }
}

void encode_store(const StoreRecord& m, std::vector<std::byte>& out) {
  out.reserve(out.size() + kStoreFixed + m.headers.size() + m.payload.size());
  Out w(out);
  w.put(static_cast<std::uint8_t>(RecordKind::store));
  w.put(m.id);
  w.put(m.qid);
  w.put(m.deliveries);
  w.put(m.priority);
  w.put(static_cast<std::uint8_t>(m.tcp ? 1 : 0));
  w.put(m.pid);
  w.put(m.uid);
  w.put(m.gid);
  w.put(m.enqueued_ms);
  w.put(m.expires_ms);
  w.put(m.due_ms);
  w.put(static_cast<std::uint32_t>(m.headers.size()));
  w.bytes(m.headers);
  w.bytes(m.payload);
}

void encode_id(RecordKind kind, std::uint64_t id, std::vector<std::byte>& out) {
  Out w(out);
  w.put(static_cast<std::uint8_t>(kind));
  w.put(id);
}

RecordKind record_kind(Bytes record) {
  return record.empty() ? RecordKind{} : static_cast<RecordKind>(record[0]);
}

bool decode_queue(Bytes record, QueueRecord& q) {
  In in(record);
  std::uint8_t kind = 0;
  return in.get(kind) && read_queue_body(in, q) && in.done();
}

bool decode_snapshot(Bytes record, std::vector<QueueRecord>& queues) {
  In in(record);
  std::uint8_t kind = 0;
  std::uint32_t n = 0;
  if (!in.get(kind) || !in.get(n)) return false;
  queues.clear();
  for (std::uint32_t i = 0; i < n; ++i) {
    std::uint32_t size = 0;
    Bytes body;
    if (!in.get(size) || !in.bytes(size, body)) return false;
    QueueRecord q;
    if (record_kind(body) != RecordKind::declare || !decode_queue(body, q)) return false;
    queues.push_back(std::move(q));
  }
  return in.done();
}

bool decode_store(Bytes record, StoreRecord& m) {
  In in(record);
  std::uint8_t kind = 0, flags = 0;
  std::uint32_t headers = 0;
  if (!in.get(kind) || !in.get(m.id) || !in.get(m.qid) || !in.get(m.deliveries) ||
      !in.get(m.priority) || !in.get(flags) || !in.get(m.pid) || !in.get(m.uid) || !in.get(m.gid) ||
      !in.get(m.enqueued_ms) || !in.get(m.expires_ms) || !in.get(m.due_ms) || !in.get(headers) ||
      !in.bytes(headers, m.headers)) {
    return false;
  }
  m.tcp = (flags & 1) != 0;
  m.payload = in.rest();
  return m.id != 0 && m.priority <= proto::kMaxPriority;
}

bool decode_id(Bytes record, std::uint64_t& id) {
  In in(record);
  std::uint8_t kind = 0;
  return in.get(kind) && in.get(id) && in.done();
}

void set_store_deliveries(std::vector<std::byte>& record, std::uint32_t deliveries) {
  constexpr std::size_t kAt = 1 + 8 + 4;  // kind, id, qid
  for (std::size_t i = 0; i < 4; ++i)
    record[kAt + i] = std::byte((deliveries >> (8 * i)) & 0xFF);
}

}  // namespace qbus::storage
