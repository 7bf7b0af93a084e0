// A queue's messages, stored as variable-size records in a FIFO of byte chunks: a message
// costs one memcpy of its payload into the chunk and nothing from the heap in steady state
// (a drained chunk is reused), and a 64-byte message takes 112 bytes instead of a node plus
// a separately allocated payload. Owned by its Queue; not thread-safe.
//
// Memory beyond the records themselves is bounded, since quotas count payload bytes only:
// a new chunk is sized from the bytes the store holds (so a shallow queue keeps small
// chunks), a store keeps at most one spare of up to kMaxChunk while it holds records and,
// when empty, one chunk of up to kKeepChunk, both within a budget shared by the stores of
// one broker (KeptChunkBudget; spares above kKeepChunk take at most half of it), and a
// large chunk left holding a few records (at most 1/16 of it) has them moved to a small
// one, its large spare given up.
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
#include <new>
#include <utility>

#include "broker/types.hpp"

namespace qbus::broker {

// Everything a queued message carries besides its payload.
struct MessageMeta {
  Identity sender;
  Clock::time_point enqueued;
  std::uint64_t request_id = 0;  // nonzero: the sender waits for a reply
  // Broker-unique number of that request, so a stale message carrying a reused id is
  // never taken for the request now pending under it.
  std::uint64_t request_seq = 0;
  RegionRef region{};  // the payload is empty for a region message
  // When it expires (its time to live ends); the epoch: never.
  Clock::time_point expires{};
  std::uint8_t priority = 0;  // its level in its queue (0 for a queue without levels)
  // Its number in the journal (broker/journal.hpp), for a durable queue's message; 0: none.
  std::uint64_t journal_id = 0;
  bool expired(Clock::time_point now) const {
    return expires != Clock::time_point{} && expires <= now;
  }
};

// A message read in place (from a MessageStore, or a Queue's returned messages): valid
// until its queue is next modified.
struct StoredMessage {
  MessageMeta meta;
  Bytes payload;
  Bytes headers;  // the header block (proto/headers.hpp); empty: none
  // Times it was handed over in acknowledgement mode and came back (0 for a message never
  // delivered), and its place in its queue's delivery order (0: never delivered).
  std::uint32_t deliveries = 0;
  std::uint64_t order = 0;
};

// A message owned outside a store: handed over in acknowledgement mode and not settled
// yet, or back in its queue, waiting for a redelivery. One allocation holds the header
// block and the payload. Move-only.
class HeldMessage {
 public:
  HeldMessage() = default;
  // Throws std::bad_alloc with nothing held.
  explicit HeldMessage(const StoredMessage& m) { assign(m); }
  // The moved-from message holds nothing, not even memory.
  HeldMessage(HeldMessage&& o) noexcept { *this = std::move(o); }
  HeldMessage& operator=(HeldMessage&& o) noexcept {
    meta = o.meta;
    deliveries = o.deliveries;
    order = o.order;
    data_ = std::move(o.data_);
    capacity_ = std::exchange(o.capacity_, 0);
    headers_size_ = std::exchange(o.headers_size_, 0);
    payload_size_ = std::exchange(o.payload_size_, 0);
    return *this;
  }
  // Holds a copy of `m`, in the memory held before when it is large enough (a recycled
  // HeldMessage costs no allocation). Throws std::bad_alloc with nothing changed.
  void assign(const StoredMessage& m) {
    const std::size_t size = m.headers.size() + m.payload.size();
    if (size > capacity_) {
      data_ = std::make_unique_for_overwrite<std::byte[]>(size);
      capacity_ = size;
    }
    meta = m.meta;
    deliveries = m.deliveries;
    order = m.order;
    headers_size_ = static_cast<std::uint32_t>(m.headers.size());
    payload_size_ = static_cast<std::uint32_t>(m.payload.size());
    if (headers_size_ != 0) std::memcpy(data_.get(), m.headers.data(), headers_size_);
    if (payload_size_ != 0)
      std::memcpy(data_.get() + headers_size_, m.payload.data(), payload_size_);
  }
  // Bytes of memory it holds for headers and payload.
  std::size_t capacity() const { return capacity_; }
  Bytes headers() const { return Bytes(data_.get(), headers_size_); }
  Bytes payload() const { return Bytes(data_.get() + headers_size_, payload_size_); }
  StoredMessage view() const {
    return StoredMessage{meta, payload(), headers(), deliveries, order};
  }

  MessageMeta meta;
  std::uint32_t deliveries = 0;
  std::uint64_t order = 0;

 private:
  std::unique_ptr<std::byte[]> data_;
  std::size_t capacity_ = 0;
  std::uint32_t headers_size_ = 0;
  std::uint32_t payload_size_ = 0;
};

// What empty stores and spare chunks may keep in all, over the stores that share it. Owned
// by whoever owns the stores (the broker's `Core`) and handed to each by reference, so it must
// outlive them; not thread-safe, like the stores.
class KeptChunkBudget {
 public:
  static constexpr std::size_t kMax = 16 * 1024 * 1024;
  // What spares larger than a small chunk may take of it: a few stalled backlogs holding
  // 1 MiB spares must leave room for every other store's small chunks.
  static constexpr std::size_t kMaxLarge = kMax / 2;
  std::size_t used() const { return used_; }
  std::size_t large_used() const { return large_used_; }

 private:
  friend class MessageStore;
  std::size_t used_ = 0;
  std::size_t large_used_ = 0;  // part of used_
};

class MessageStore {
 public:
  // `budget` must outlive the store.
  explicit MessageStore(KeptChunkBudget& budget) : budget_(budget) {}
  ~MessageStore() {
    budget_.used_ -= kept_chunk_;
    drop_spare();
  }
  MessageStore(const MessageStore&) = delete;
  MessageStore& operator=(const MessageStore&) = delete;

  std::size_t size() const { return count_; }
  bool empty() const { return count_ == 0; }
  KeptChunkBudget& budget() const { return budget_; }
  // Bytes of memory held: every chunk's capacity and the spare's.
  std::size_t capacity() const {
    std::size_t n = spare_.capacity;
    for (const auto& c : chunks_)
      n += c.capacity;
    return n;
  }

  // Chunks made so far (mapped or allocated), reused ones not counted again.
  std::uint64_t chunks_made() const { return chunks_made_; }

  // Throws std::bad_alloc, with nothing changed, when no memory is left for a new chunk.
  // `headers`: the message's header block, checked by the edge.
  void push(const MessageMeta& meta, Bytes payload, Bytes headers = {}) {
    const bool expires = meta.expires != Clock::time_point{};
    const std::size_t extras = (meta.request_id != 0 ? kRequestSize : 0) +
                               (meta.region ? kRegionSize : 0) + (expires ? kExpiresSize : 0) +
                               (meta.journal_id != 0 ? kJournalSize : 0) +
                               (headers.empty() ? 0 : kHeadersSize + headers.size());
    const std::size_t size = round_up(sizeof(Record) + extras + payload.size());
    Chunk& c = room_for(size);
    std::byte* at = c.data.get() + c.tail;
    // Written where it goes (records are kAlign-aligned), not built aside and copied: the
    // copy read the record back wide just after its fields were written narrow, and that
    // store-forwarding stall took half of push()'s time.
    const std::uint32_t flags =
        (meta.sender.tcp ? kTcp : 0) | (meta.request_id != 0 ? kRequest : 0) |
        (meta.region ? kRegion : 0) | (headers.empty() ? 0 : kHeaders) | (expires ? kExpires : 0) |
        (meta.journal_id != 0 ? kJournal : 0) | (std::uint32_t{meta.priority} << kPriorityShift);
    ::new (static_cast<void*>(at)) Record{meta.sender.client_id,
                                          meta.sender.process_token,
                                          meta.enqueued.time_since_epoch().count(),
                                          meta.sender.pid,
                                          meta.sender.uid,
                                          meta.sender.gid,
                                          static_cast<std::uint32_t>(payload.size()),
                                          flags,
                                          static_cast<std::uint32_t>(size)};
    std::size_t pos = sizeof(Record);
    if (meta.request_id != 0) {
      const std::uint64_t ids[2] = {meta.request_id, meta.request_seq};
      std::memcpy(at + pos, ids, kRequestSize);
      pos += kRequestSize;
    }
    if (meta.region) {
      const std::uint64_t ref[3] = {meta.region.id, meta.region.offset, meta.region.length};
      std::memcpy(at + pos, ref, kRegionSize);
      pos += kRegionSize;
    }
    if (expires) {
      const Clock::rep e = meta.expires.time_since_epoch().count();
      std::memcpy(at + pos, &e, kExpiresSize);
      pos += kExpiresSize;
    }
    if (meta.journal_id != 0) {
      std::memcpy(at + pos, &meta.journal_id, kJournalSize);
      pos += kJournalSize;
    }
    if (!headers.empty()) {
      const auto n = static_cast<std::uint32_t>(headers.size());
      std::memcpy(at + pos, &n, kHeadersSize);
      std::memcpy(at + pos + kHeadersSize, headers.data(), n);
      pos += kHeadersSize + n;
    }
    if (!payload.empty()) std::memcpy(at + pos, payload.data(), payload.size());
    c.tail += size;
    used_ += size;
    ++count_;
  }

  // The oldest message; the store must not be empty.
  StoredMessage front() const {
    const Chunk& c = chunks_.front();
    const std::byte* at = c.data.get() + c.head;
    Record r;
    std::memcpy(&r, at, sizeof r);
    // Read into locals and built in one piece: a default-built StoredMessage assigned field
    // by field was zeroed first (a rep stos on every delivery).
    std::uint64_t ids[2] = {0, 0};
    std::uint64_t ref[3] = {0, 0, 0};
    Clock::rep expires = 0;
    std::uint64_t journal_id = 0;
    std::size_t pos = sizeof r;
    if (r.flags & kRequest) {
      std::memcpy(ids, at + pos, kRequestSize);
      pos += kRequestSize;
    }
    if (r.flags & kRegion) {
      std::memcpy(ref, at + pos, kRegionSize);
      pos += kRegionSize;
    }
    if (r.flags & kExpires) {
      std::memcpy(&expires, at + pos, kExpiresSize);
      pos += kExpiresSize;
    }
    if (r.flags & kJournal) {
      std::memcpy(&journal_id, at + pos, kJournalSize);
      pos += kJournalSize;
    }
    Bytes headers;
    if (r.flags & kHeaders) {
      std::uint32_t n;
      std::memcpy(&n, at + pos, kHeadersSize);
      headers = Bytes(at + pos + kHeadersSize, n);
      pos += kHeadersSize + n;
    }
    return StoredMessage{
        MessageMeta{
            Identity{r.pid, r.uid, r.gid, r.client_id, r.process_token, (r.flags & kTcp) != 0},
            Clock::time_point(Clock::duration(r.enqueued)), ids[0], ids[1],
            RegionRef{ref[0], ref[1], ref[2]}, Clock::time_point(Clock::duration(expires)),
            static_cast<std::uint8_t>(r.flags >> kPriorityShift), journal_id},
        Bytes(at + pos, r.payload_size), headers, 0, 0};
  }

  Clock::time_point oldest_enqueued() const {
    Record r;
    std::memcpy(&r, chunks_.front().data.get() + chunks_.front().head, sizeof r);
    return Clock::time_point(Clock::duration(r.enqueued));
  }

  // Removes the oldest message and returns its payload size, and its sender's uid in `uid`
  // when given; the store must not be empty. Never throws.
  std::size_t pop(std::uint32_t* uid = nullptr) {
    Chunk& c = chunks_.front();
    const std::byte* at = c.data.get() + c.head;
    // Only what it needs, not the record parsed again after front() has read it.
    std::uint32_t size;
    std::uint32_t payload_size;
    std::memcpy(&size, at + offsetof(Record, size), sizeof size);
    std::memcpy(&payload_size, at + offsetof(Record, payload_size), sizeof payload_size);
    if (uid) std::memcpy(uid, at + offsetof(Record, uid), sizeof *uid);
    c.head += size;
    used_ -= size;
    --count_;
    if (c.head == c.tail) {
      drained_front();
    } else if (chunks_.size() == 1 && c.capacity > kKeepChunk && used_ * 16 <= c.capacity) {
      compact();
    }
    return payload_size;
  }

 private:
  // Layout of a record: this, then [request_id, request_seq] when kRequest, then [region
  // id, offset, length] when kRegion, then [expiry] when kExpires, then [journal id] when
  // kJournal, then [u32 size, header
  // block] when kHeaders, then the payload, padded to kAlign. The flags' bits from
  // kPriorityShift up hold the message's priority level.
  struct Record {
    std::uint64_t client_id;
    std::uint64_t process_token;
    Clock::rep enqueued;
    std::uint32_t pid;
    std::uint32_t uid;
    std::uint32_t gid;
    std::uint32_t payload_size;
    std::uint32_t flags;
    std::uint32_t size;  // the whole record's bytes, padding included: what pop() steps over
  };
  static_assert(sizeof(Record) == 48, "size fills what was padding: a record grows by nothing");
  // Chunks of kMapChunk and more are mapped directly rather than taken from malloc: a
  // drained burst then goes back to the kernel instead of staying in the heap's free lists.
  struct ChunkRelease {
    std::size_t size;
    void operator()(std::byte* p) const noexcept;
  };
  struct Chunk {
    std::unique_ptr<std::byte, ChunkRelease> data;
    std::size_t capacity = 0;
    std::size_t head = 0;  // the oldest record
    std::size_t tail = 0;  // where the next record goes
  };
  static Chunk make_chunk(std::size_t capacity);

  static constexpr std::size_t kAlign = 8;
  static_assert(alignof(Record) <= kAlign, "push() writes records in place");
  static constexpr std::size_t kRequestSize = 2 * sizeof(std::uint64_t);
  static constexpr std::size_t kRegionSize = 3 * sizeof(std::uint64_t);
  static constexpr std::size_t kHeadersSize = sizeof(std::uint32_t);
  static constexpr std::size_t kExpiresSize = sizeof(Clock::rep);
  static constexpr std::size_t kJournalSize = sizeof(std::uint64_t);
  static constexpr std::uint32_t kTcp = 1, kRequest = 2, kRegion = 4, kHeaders = 8, kExpires = 16,
                                 kJournal = 32;
  static constexpr int kPriorityShift = 8;
  // A new chunk holds twice what the store holds, between these two; a record larger than
  // kMaxChunk gets a chunk of its own size. A deep queue thus maps and unmaps memory once
  // per ~9,000 small messages.
  static constexpr std::size_t kMinChunk = 1024;
  static constexpr std::size_t kMaxChunk = 1024 * 1024;
  // The largest chunk kept by an empty store (a burst of ~140 small messages), or as a
  // spare by a store left with a few records; what all stores sharing a budget keep that
  // way is KeptChunkBudget::kMax.
  static constexpr std::size_t kKeepChunk = 16 * 1024;
  static constexpr std::size_t kMapChunk = 64 * 1024;

  static constexpr std::size_t round_up(std::size_t n) { return (n + kAlign - 1) & ~(kAlign - 1); }
  std::size_t& kept_budget() { return budget_.used_; }

  Chunk& room_for(std::size_t size) {
    if (!chunks_.empty() && chunks_.back().capacity - chunks_.back().tail >= size) {
      if (count_ == 0) unkeep_empty_chunk();  // in use again
      return chunks_.back();
    }
    return grow(size);
  }

  Chunk& grow(std::size_t size);  // a new back chunk with room for `size`
  void drained_front();           // the front chunk has no record left
  void compact();                 // moves the few records left into a smaller chunk
  void keep_spare(Chunk&& c);
  static bool large(std::size_t capacity) { return capacity > kKeepChunk; }
  void give_back_spare_budget() {
    kept_budget() -= spare_.capacity;
    if (large(spare_.capacity)) budget_.large_used_ -= spare_.capacity;
  }
  void drop_spare() {
    give_back_spare_budget();
    spare_ = Chunk{};
  }
  void unkeep_empty_chunk();

  KeptChunkBudget& budget_;
  std::deque<Chunk> chunks_;
  Chunk spare_;
  std::size_t count_ = 0;
  std::size_t used_ = 0;  // record bytes stored
  std::uint64_t chunks_made_ = 0;
  std::size_t kept_chunk_ = 0;  // the capacity of the chunk kept while empty, if any
                                // (in budget_, as is spare_.capacity)
};

}  // namespace qbus::broker
