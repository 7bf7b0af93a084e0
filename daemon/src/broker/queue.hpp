// One keyed queue (or a process's inbox): its messages in FIFO order, its limits and
// counters, the receivers waiting on it (in arrival order) and the producers blocked on it.
// Owned by the queue registry (queues.hpp) or, for an inbox, the inbox registry
// (inboxes.hpp); the queue registry keeps the cross-queue invariants (accounting, waiters,
// deadlines) for both. Not thread-safe.
#pragma once

#include <algorithm>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "broker/message_store.hpp"
#include "broker/types.hpp"
#include "qbus/proto/frames.hpp"

namespace qbus::broker {

class Queue;
struct Waiter;
using WaiterList = std::list<Waiter>;

// A deadline of the queue registry (queues.hpp): a waiting receive's timeout, the end of
// the grace of a declared queue whose declarer left, an unsettled message's ack timeout,
// the end of a delay (a NACK's, or a delayed send's), or when the message first in line
// in a queue expires.
struct QueueDeadline {
  enum class Kind : std::uint8_t { receive, grace, ack, delayed, expiry };
  Queue* queue = nullptr;
  Kind kind = Kind::receive;
  WaiterList::iterator waiter;  // a receive's
  PeerId peer = 0;              // an ack timeout's: the peer holding the message ...
  std::uint64_t tag = 0;        // ... under this delivery tag
};
using QueueDeadlineIndex = std::multimap<Clock::time_point, QueueDeadline>;

// When the earliest entry of a registry's deadline index (time -> what ends) is due.
template <typename Index>
std::optional<Clock::time_point> earliest(const Index& index) {
  if (index.empty()) return std::nullopt;
  return index.begin()->first;
}

// A waiting receive, or a subscription (SUBSCRIBE), which stays among the waiters until it
// is cancelled and is served whenever it has credit.
struct Waiter {
  PeerId peer = 0;
  std::uint64_t correlation = 0;
  std::uint32_t max_count = 1;
  bool has_deadline = false;
  bool ack = false;           // hands messages over in acknowledgement mode
  bool subscription = false;  // pushed to while it has credit
  // A subscription in acknowledgement mode: at most `prefetch` unsettled at once, of which
  // it holds `unacked`.
  std::uint32_t prefetch = 0;
  std::uint32_t unacked = 0;
  QueueDeadlineIndex::iterator deadline;  // valid when has_deadline
};

// Of a queue's messages, the first in line is the one it hands over next; one that expires
// is dropped or dead-lettered when it is first in line (at its expiry, or when what was
// ahead of it leaves), as RabbitMQ does: its expiry deadline is the first one's.
struct ExpiryDeadline {
  bool armed = false;
  Clock::time_point at{};
  QueueDeadlineIndex::iterator it;
};

struct QueueCounters {
  std::uint64_t enqueued_total = 0;
  std::uint64_t dequeued_total = 0;
  std::uint64_t dropped_total = 0;
  std::uint64_t rejected_total = 0;
  std::uint64_t acked_total = 0;
  std::uint64_t redelivered_total = 0;
  std::uint64_t dead_lettered_total = 0;
  std::uint64_t expired_total = 0;
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
    next_order_ = 1;
    active_ = nullptr;
  }
  void mark_declared() { declared_ = true; }
  // Once the grace after its declarer left has run out: collected when idle, like a queue
  // that was never declared (its options stay while it lives).
  void mark_undeclared() { declared_ = false; }
  QueueKeeper& keeper() { return keeper_; }
  const QueueKeeper& keeper() const { return keeper_; }

  // Messages deliverable now: the stored ones (of every level) and those that came back.
  std::size_t depth() const { return messages_.size() + upper_count_ + returned_.size(); }
  // Stored and returned messages that have an expiry; the registry's deadline for them.
  std::size_t expiring() const { return expiring_; }
  ExpiryDeadline& expiry() { return expiry_; }
  // A single-active-consumer queue's active subscription, among its waiters; null when it
  // is to be chosen again (Queues::active_consumer).
  const Waiter*& active() { return active_; }
  // The subscription served (or to be served) next time: the active one, else the oldest
  // standing by (they are never served, so they keep their order).
  const Waiter* active_subscription() const {
    if (active_) return active_;
    for (const Waiter& w : waiters_)
      if (w.subscription) return &w;
    return nullptr;
  }
  std::uint64_t bytes() const { return bytes_; }
  // Messages handed over in acknowledgement mode and not settled (in flight, or waiting out
  // a NACK's delay): not deliverable, but they count against the queue's limits as they
  // do against their senders' quotas.
  std::size_t held() const { return held_; }
  std::size_t delayed() const { return delayed_.size(); }
  bool has_room_for(std::size_t payload) const {
    return depth() + held_ < options_.max_messages &&
           bytes_ + held_bytes_ + payload <= options_.max_bytes;
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

  // Stores a message at the back of its priority level (meta.priority, clamped to the
  // queue's levels). Throws std::bad_alloc, with nothing changed, when memory for it cannot
  // be had.
  void push(const MessageMeta& meta, Bytes payload, Bytes headers = {}) {
    store(meta, payload, headers);
    ++counters_.enqueued_total;
  }
  // The message first in line, read in place: valid until the queue is next modified. The
  // highest level goes first; within a level, messages that came back go before the stored
  // ones (they were first when handed over).
  StoredMessage front() const {
    // Most queues have one level and nothing that came back: no choosing.
    if (upper_count_ == 0 && returned_.empty()) return messages_.front();
    return front_chosen();
  }
  void pop() {
    if ((upper_count_ | expiring_) == 0 && returned_.empty()) {
      pop_first_level();
      return;
    }
    pop_chosen();
  }
  std::optional<Clock::time_point> oldest_enqueued() const {
    std::optional<Clock::time_point> t;
    const auto older = [&](Clock::time_point e) { t = t ? std::min(*t, e) : e; };
    if (!returned_.empty()) older(returned_.begin()->second.meta.enqueued);
    if (!messages_.empty()) older(messages_.oldest_enqueued());
    for (const auto& u : upper_)
      if (u && !u->empty()) older(u->oldest_enqueued());
    return t;
  }

  // Acknowledgement mode (never for an inbox). The message at the front is handed over and
  // held: it gets its place in the delivery order now if it has none.
  std::uint64_t take_order(const StoredMessage& m) {
    return m.order != 0 ? m.order : next_order_++;
  }
  void hold(std::size_t bytes) {
    ++held_;
    held_bytes_ += bytes;
  }
  void unhold(std::size_t bytes) {
    --held_;
    held_bytes_ -= bytes;
  }
  // A held message comes back, before every stored one of its level and in its first
  // delivery order among those that came back; one never delivered (a delayed send) goes
  // to the back of its level instead. Throws std::bad_alloc with nothing changed.
  void put_back(HeldMessage&& m) {
    const std::size_t size = m.payload().size();
    restore(std::move(m));
    unhold(size);
  }
  // The message just popped from the front goes back there (it was not handed over after
  // all). Throws std::bad_alloc with nothing changed.
  void restore(HeldMessage&& m) {
    if (m.order == 0) {
      store(m.meta, m.payload(), m.headers());
      return;
    }
    const bool expires = m.meta.expires != Clock::time_point{};
    const std::size_t size = m.payload().size();
    returned_.emplace(returned_key(m.meta.priority, m.order), std::move(m));
    bytes_ += size;
    if (expires) ++expiring_;
  }
  // A NACKed message, or a delayed send, waits out its delay here (the registry keeps the
  // deadline); it is held meanwhile (hold()).
  void put_aside(Clock::time_point until, HeldMessage&& m) {
    delayed_.emplace(until, std::move(m));
  }
  // The delayed message due first, taken out.
  HeldMessage take_delayed() {
    HeldMessage m = std::move(delayed_.begin()->second);
    delayed_.erase(delayed_.begin());
    return m;
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
    return !declared_ && !inbox_ && depth() == 0 && held_ == 0 && delayed_.empty() &&
           waiters_.empty() && blocked_.empty();
  }
  const std::vector<PeerId>& blocked() const { return blocked_; }

 private:
  std::string key_;
  QueueOptions options_;
  bool declared_;
  bool inbox_;
  MessageStore messages_;
  // Levels 1.. of a queue with priorities (level 0 is messages_), made as they are first
  // used, and how many messages they hold in all.
  std::vector<std::unique_ptr<MessageStore>> upper_;
  std::size_t upper_count_ = 0;
  std::size_t expiring_ = 0;
  ExpiryDeadline expiry_;
  const Waiter* active_ = nullptr;
  // Acknowledgement mode: messages that came back, by level (highest first) and then their
  // first delivery order (returned_key); how many are held; those waiting out a delay, by
  // when it ends.
  std::map<std::uint64_t, HeldMessage> returned_;
  std::size_t held_ = 0;
  std::uint64_t held_bytes_ = 0;
  std::multimap<Clock::time_point, HeldMessage> delayed_;
  std::uint64_t next_order_ = 1;
  std::uint64_t bytes_ = 0;
  WaiterList waiters_;  // a list: a waiter leaves from anywhere when it times out
  std::vector<PeerId> blocked_;
  QueueCounters counters_;
  QueueKeeper keeper_;
  // An inbox's shares, one per uid with messages in it: a few, so a flat vector. At most
  // one entry per uid that can connect (every TCP client counts as one uid).
  std::vector<SenderShare> shares_;

  static std::uint64_t returned_key(std::uint8_t level, std::uint64_t order) {
    return (static_cast<std::uint64_t>(proto::kMaxPriority - level) << 56) | order;
  }
  std::uint8_t levels() const {
    return std::max<std::uint8_t>(1, inbox_ ? 1 : options_.priorities);
  }
  // The store the front message is in; null when it is the first of returned_.
  const MessageStore* front_store() const {
    const MessageStore* s = &messages_;
    std::size_t level = 0;
    if (upper_count_ != 0) {
      for (std::size_t i = upper_.size(); i-- > 0;) {
        if (upper_[i] && !upper_[i]->empty()) {
          s = upper_[i].get();
          level = i + 1;
          break;
        }
      }
    }
    if (returned_.empty()) return s;
    const std::size_t back = proto::kMaxPriority - (returned_.begin()->first >> 56);
    return !s->empty() && level > back ? s : nullptr;
  }
  MessageStore* front_store() {
    return const_cast<MessageStore*>(std::as_const(*this).front_store());
  }
  void pop_first_level() {
    if (!inbox_) {
      bytes_ -= messages_.pop();
      return;
    }
    std::uint32_t uid = 0;
    const std::size_t size = messages_.pop(&uid);
    bytes_ -= size;
    take_from_share(uid, size);
  }
  void store(const MessageMeta& meta, Bytes payload, Bytes headers) {
    if (meta.priority != 0) {
      store_leveled(meta, payload, headers);
      return;
    }
    messages_.push(meta, payload, headers);
    bytes_ += payload.size();
    if (meta.expires != Clock::time_point{}) ++expiring_;
    if (inbox_) add_to_share(meta.sender.uid, payload.size());
  }
  // The paths of a queue with levels, messages that came back or messages that expire,
  // kept out of line (queue.cpp) so that the common one inlines where it is used.
  StoredMessage front_chosen() const;
  void pop_chosen();
  // store() of a message with a priority: to its level, clamped to the queue's levels.
  void store_leveled(const MessageMeta& meta, Bytes payload, Bytes headers);

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
