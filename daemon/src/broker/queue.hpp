// One keyed queue (or a process's inbox): its messages in FIFO order, its limits and
// counters, the receivers waiting on it (in arrival order) and the producers blocked on it.
// Owned by the queue registry (queues.hpp) or, for an inbox, the inbox registry
// (inboxes.hpp); the queue registry keeps the cross-queue invariants (accounting, waiters,
// deadlines) for both. Not thread-safe.
#pragma once

#include <list>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "broker/message_store.hpp"
#include "broker/types.hpp"

namespace qbus::broker {

class Queue;
struct Waiter;
using WaiterList = std::list<Waiter>;

// A deadline of the queue registry (queues.hpp): a waiting receive's timeout, or the end of
// the grace of a declared queue whose declarer left.
struct QueueDeadline {
  Queue* queue = nullptr;
  bool grace = false;           // else a waiting receive
  WaiterList::iterator waiter;  // a receive's
};
using QueueDeadlineIndex = std::multimap<Clock::time_point, QueueDeadline>;

// When the earliest entry of a registry's deadline index (time -> what ends) is due.
template <typename Index>
std::optional<Clock::time_point> earliest(const Index& index) {
  if (index.empty()) return std::nullopt;
  return index.begin()->first;
}

struct Waiter {
  PeerId peer = 0;
  std::uint64_t correlation = 0;
  std::uint32_t max_count = 1;
  bool has_deadline = false;
  QueueDeadlineIndex::iterator deadline;  // valid when has_deadline
};

struct QueueCounters {
  std::uint64_t enqueued_total = 0;
  std::uint64_t dequeued_total = 0;
  std::uint64_t dropped_total = 0;
  std::uint64_t rejected_total = 0;
};

// Who a queue counts against and what keeps it declared. Kept by the queue registry
// (queues.hpp), which also keeps the per-uid counts and the peers' lists of what they
// declared in step with it.
struct QueueKeeper {
  // Counts against `uid`'s uid_max_queues (false for a queue of the configuration).
  bool charged = false;
  std::uint32_t uid = 0;
  // Declared by the configuration: never collected, charged to nobody.
  bool permanent = false;
  // The uid whose frame created the queue; none for a queue the configuration declared
  // first or took over. Unlike `uid` it stays when the charge or the declarer moves: it
  // decides who may change the queue's options (Queues::declare).
  std::optional<std::uint32_t> owner;
  // The live connection that declared it last; 0 when none (never declared, declared by
  // the configuration, or its declarer has gone).
  PeerId declarer = 0;
  // While its declarer is gone and the grace runs: its QueueDeadline (grace = true).
  bool grace_running = false;
  QueueDeadlineIndex::iterator grace;
};

class Queue {
 public:
  // `budget` (shared by the owner's stores) must outlive the queue.
  Queue(std::string key, QueueOptions options, KeptChunkBudget& budget, bool declared,
        bool inbox = false)
      : key_(std::move(key)),
        options_(options),
        declared_(declared),
        inbox_(inbox),
        messages_(budget) {}

  // For a queue its key; for an inbox a display name such as "pid:42".
  const std::string& key() const { return key_; }
  // The key receivers see: empty for an inbox, whose messages are direct.
  std::string_view delivery_key() const { return inbox_ ? std::string_view() : key_; }
  bool is_inbox() const { return inbox_; }
  const QueueOptions& options() const { return options_; }
  void set_options(const QueueOptions& o) { options_ = o; }
  bool declared() const { return declared_; }
  // Makes a collected (idle) queue new again under another key, keeping its allocations.
  void reuse(std::string_view key, const QueueOptions& options) {
    key_.assign(key);
    options_ = options;
    declared_ = false;
    counters_ = {};
    keeper_ = {};
  }
  void mark_declared() { declared_ = true; }
  // Once the grace after its declarer left has run out: collected when idle, like a queue
  // that was never declared (its options stay while it lives).
  void mark_undeclared() { declared_ = false; }
  QueueKeeper& keeper() { return keeper_; }
  const QueueKeeper& keeper() const { return keeper_; }

  std::size_t depth() const { return messages_.size(); }
  std::uint64_t bytes() const { return bytes_; }
  bool has_room_for(std::size_t payload) const {
    return messages_.size() < options_.max_messages && bytes_ + payload <= options_.max_bytes;
  }
  // What one sending uid holds of an inbox. An inbox's limits bind each sending uid on its
  // own (proto/PROTOCOL.md 8.4): one uid's messages never take the room of another's.
  struct SenderShare {
    std::uint32_t uid = 0;
    std::uint32_t messages = 0;
    std::uint64_t bytes = 0;
  };
  SenderShare share_of(std::uint32_t uid) const {
    for (const SenderShare& s : shares_)
      if (s.uid == uid) return s;
    return SenderShare{uid, 0, 0};
  }
  // Whether a message of `sender_uid` fits: in its uid's share for an inbox, else in the
  // queue.
  bool has_room_for(std::size_t payload, std::uint32_t sender_uid) const {
    if (!inbox_) return has_room_for(payload);
    const SenderShare s = share_of(sender_uid);
    return s.messages < options_.max_messages && s.bytes + payload <= options_.max_bytes;
  }
  // A payload larger than max_bytes can never fit, whatever is drained.
  bool could_ever_fit(std::size_t payload) const { return payload <= options_.max_bytes; }

  // Throws std::bad_alloc, with nothing changed, when memory for it cannot be had.
  void push(const MessageMeta& meta, Bytes payload) {
    messages_.push(meta, payload);
    bytes_ += payload.size();
    ++counters_.enqueued_total;
    if (inbox_) add_to_share(meta.sender.uid, payload.size());
  }
  // The oldest message, read in place: valid until the queue is next modified.
  StoredMessage front() const { return messages_.front(); }
  void pop() {
    if (!inbox_) {
      bytes_ -= messages_.pop();
      return;
    }
    std::uint32_t uid = 0;
    const std::size_t size = messages_.pop(&uid);
    bytes_ -= size;
    take_from_share(uid, size);
  }
  std::optional<Clock::time_point> oldest_enqueued() const {
    if (messages_.empty()) return std::nullopt;
    return messages_.oldest_enqueued();
  }

  WaiterList& waiters() { return waiters_; }
  const WaiterList& waiters() const { return waiters_; }
  std::vector<PeerId>& blocked() { return blocked_; }
  QueueCounters& counters() { return counters_; }
  const QueueCounters& counters() const { return counters_; }

  // Removable when nothing refers to it and it is not declared (never an inbox). A queue
  // stays declared while the configuration or a live declarer holds it, and through the
  // grace after its declarer left (see Queues::declare).
  bool idle() const {
    return !declared_ && !inbox_ && messages_.empty() && waiters_.empty() && blocked_.empty();
  }
  const std::vector<PeerId>& blocked() const { return blocked_; }

 private:
  std::string key_;
  QueueOptions options_;
  bool declared_;
  bool inbox_;
  MessageStore messages_;
  std::uint64_t bytes_ = 0;
  WaiterList waiters_;  // a list: a waiter leaves from anywhere when it times out
  std::vector<PeerId> blocked_;
  QueueCounters counters_;
  QueueKeeper keeper_;
  // An inbox's shares, one per uid with messages in it: a few, so a flat vector. At most
  // one entry per uid that can connect (every TCP client counts as one uid).
  std::vector<SenderShare> shares_;

  void add_to_share(std::uint32_t uid, std::size_t size) {
    for (SenderShare& s : shares_) {
      if (s.uid == uid) {
        ++s.messages;
        s.bytes += size;
        return;
      }
    }
    shares_.push_back(SenderShare{uid, 1, size});
  }
  void take_from_share(std::uint32_t uid, std::size_t size) {
    for (SenderShare& s : shares_) {
      if (s.uid != uid) continue;
      s.bytes -= size;
      if (--s.messages == 0) {
        s = shares_.back();
        shares_.pop_back();
      }
      return;
    }
  }
};

}  // namespace qbus::broker
