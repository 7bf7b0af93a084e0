#include "broker/broker.hpp"

#include <algorithm>
#include <cstring>

namespace qbus::broker {
namespace {

QueueOptions fill_defaults(const QueueOptions& requested, const QueueOptions& defaults) {
  QueueOptions o = requested;
  if (o.max_messages == 0) o.max_messages = defaults.max_messages;
  if (o.max_bytes == 0) o.max_bytes = defaults.max_bytes;
  if (o.overflow == Overflow::use_default) o.overflow = defaults.overflow;
  return o;
}

std::string describe(const QueueOptions& o) {
  return "max_messages=" + std::to_string(o.max_messages) +
         " max_bytes=" + std::to_string(o.max_bytes) +
         " overflow=" + std::string(proto::overflow_name(o.overflow));
}

SendOutcome rejected(Errc code, std::string text) {
  return SendOutcome{SendResult::rejected, code, std::move(text)};
}

}  // namespace

Errc Broker::connect(PeerId peer, const Identity& id) {
  if (peers_.count(peer)) return Errc::internal_error;
  if (peers_.size() >= limits_.max_connections) return Errc::too_many_connections;
  auto& usage = accounting_.of(id.uid);
  if (usage.connections >= limits_.uid_max_connections) {
    accounting_.forget_if_unused(id.uid);
    return Errc::too_many_connections;
  }
  ++usage.connections;
  peers_.emplace(peer, Peer{id, 0, {}, nullptr});
  return Errc::ok;
}

void Broker::disconnect(PeerId peer) {
  auto pit = peers_.find(peer);
  if (pit == peers_.end()) return;
  Peer& p = pit->second;
  // Copy: remove_waiter edits waiting_in while we walk it.
  std::vector<Queue*> touched;
  for (const auto& [q, n] : p.waiting_in)
    touched.push_back(q);
  for (Queue* q : touched) {
    auto& ws = q->waiters();
    for (auto it = ws.begin(); it != ws.end();) {
      auto next = std::next(it);
      if (it->peer == peer) remove_waiter(*q, it);
      it = next;
    }
  }
  if (Queue* q = p.blocked_on) {
    std::erase(q->blocked(), peer);
    touched.push_back(q);
  }
  const auto uid = p.id.uid;
  peers_.erase(pit);
  --accounting_.of(uid).connections;
  accounting_.forget_if_unused(uid);
  std::sort(touched.begin(), touched.end());
  touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
  for (Queue* q : touched)
    collect_if_idle(*q);
}

Queue* Broker::find_mutable(std::string_view key) {
  auto it = queues_.find(key);
  return it == queues_.end() ? nullptr : it->second.get();
}

const Queue* Broker::find(std::string_view key) const {
  auto it = queues_.find(key);
  return it == queues_.end() ? nullptr : it->second.get();
}

Queue* Broker::get_or_create(std::string_view key, SendOutcome* why) {
  if (Queue* q = find_mutable(key)) return q;
  if (queues_.size() >= limits_.max_queues) {
    if (why) {
      *why = rejected(Errc::too_many_queues, "the broker holds its limit of " +
                                                 std::to_string(limits_.max_queues) + " queues");
    }
    return nullptr;
  }
  auto q = std::make_unique<Queue>(std::string(key), limits_.queue_defaults, false);
  Queue* raw = q.get();
  queues_.emplace(raw->key(), std::move(q));
  return raw;
}

SendOutcome Broker::send(PeerId from, std::string_view key, Bytes payload, Clock::time_point now) {
  auto pit = peers_.find(from);
  if (pit == peers_.end()) return rejected(Errc::internal_error, "unknown peer");
  Peer& peer = pit->second;
  if (payload.size() > limits_.max_payload) {
    return rejected(Errc::payload_too_large, "payload of " + std::to_string(payload.size()) +
                                                 " bytes exceeds the inline limit of " +
                                                 std::to_string(limits_.max_payload));
  }
  SendOutcome out;
  Queue* q = get_or_create(key, &out);
  if (!q) return out;

  if (!q->could_ever_fit(payload.size())) {
    ++q->counters().rejected_total;
    collect_if_idle(*q);
    return rejected(Errc::payload_too_large, "payload of " + std::to_string(payload.size()) +
                                                 " bytes exceeds the queue's max_bytes");
  }
  if (!q->waiters().empty()) {
    // Invariant: waiters exist only while the queue is empty, so FIFO order holds.
    auto it = q->waiters().begin();
    const PeerId to = it->peer;
    const std::uint64_t corr = it->correlation;
    remove_waiter(*q, it);
    ++q->counters().enqueued_total;
    ++q->counters().dequeued_total;
    ++totals_.messages_in;
    totals_.bytes_in += payload.size();
    ++totals_.messages_out;
    totals_.bytes_out += payload.size();
    sink_.deliver(to, corr, true, q->key(), peer.id, payload);
    collect_if_idle(*q);
    return out;
  }

  auto& usage = accounting_.of(peer.id.uid);
  if (usage.queued_bytes + payload.size() > limits_.uid_max_queued_bytes) {
    ++q->counters().rejected_total;
    collect_if_idle(*q);
    return rejected(Errc::quota_exceeded, "uid " + std::to_string(peer.id.uid) + " already has " +
                                              std::to_string(usage.queued_bytes) +
                                              " bytes queued (limit " +
                                              std::to_string(limits_.uid_max_queued_bytes) + ")");
  }
  if (!q->has_room_for(payload.size())) {
    switch (q->options().overflow) {
      case Overflow::drop_oldest:
        while (!q->has_room_for(payload.size()) && q->depth() > 0)
          drop_oldest(*q);
        break;
      case Overflow::block:
        q->blocked().push_back(from);
        peer.blocked_on = q;
        return SendOutcome{SendResult::blocked, Errc::ok, {}};
      case Overflow::reject:
      case Overflow::use_default:
        ++q->counters().rejected_total;
        return rejected(Errc::queue_full, "queue '" + q->key() + "' is full (" +
                                              std::to_string(q->depth()) + " messages, " +
                                              std::to_string(q->bytes()) + " bytes)");
    }
  }

  Message m;
  m.sender = peer.id;
  m.enqueued = now;
  m.payload.assign(payload.begin(), payload.end());
  usage.queued_bytes += payload.size();
  ++usage.queued_messages;
  ++totals_.messages_in;
  totals_.bytes_in += payload.size();
  q->push(std::move(m));
  return out;
}

void Broker::receive(PeerId peer_id, std::uint64_t correlation, std::string_view key,
                     std::uint32_t max_count, std::int32_t timeout_ms, Clock::time_point now) {
  auto pit = peers_.find(peer_id);
  if (pit == peers_.end()) return;
  Peer& peer = pit->second;
  const std::uint32_t max = std::clamp<std::uint32_t>(max_count, 1, limits_.max_receive_batch);

  Queue* q = find_mutable(key);
  if (q && q->depth() > 0) {
    serve_now(*q, peer_id, correlation, max);
    space_freed(*q);
    collect_if_idle(*q);
    return;
  }
  if (timeout_ms == 0) {
    sink_.fail(peer_id, correlation, Errc::timeout, "no message");
    return;
  }
  if (peer.waiting >= limits_.max_waiting_receives) {
    sink_.fail(peer_id, correlation, Errc::too_many_receives,
               "this connection already has " + std::to_string(peer.waiting) +
                   " receives waiting (limit " + std::to_string(limits_.max_waiting_receives) +
                   ")");
    return;
  }
  SendOutcome why;
  q = get_or_create(key, &why);
  if (!q) {
    sink_.fail(peer_id, correlation, why.error, why.text);
    return;
  }
  auto it = q->waiters().insert(q->waiters().end(), Waiter{peer_id, correlation, max, false, {}});
  if (timeout_ms > 0) {
    it->has_deadline = true;
    it->deadline =
        deadlines_.emplace(now + std::chrono::milliseconds(timeout_ms), std::make_pair(q, it));
  }
  ++peer.waiting;
  ++peer.waiting_in[q];
}

void Broker::serve_now(Queue& q, PeerId peer, std::uint64_t correlation, std::uint32_t max) {
  for (std::uint32_t n = 0;; ++n) {
    Message m = q.pop();
    const bool last = n + 1 >= max || q.depth() == 0 || !sink_.wants_more(peer);
    ++q.counters().dequeued_total;
    ++totals_.messages_out;
    totals_.bytes_out += m.payload.size();
    release(m);
    sink_.deliver(peer, correlation, last, q.key(), m.sender, m.payload);
    if (last) break;
  }
}

void Broker::remove_waiter(Queue& q, WaiterList::iterator it) {
  if (it->has_deadline) deadlines_.erase(it->deadline);
  auto pit = peers_.find(it->peer);
  if (pit != peers_.end()) {
    Peer& p = pit->second;
    --p.waiting;
    auto w = p.waiting_in.find(&q);
    if (w != p.waiting_in.end() && --w->second == 0) p.waiting_in.erase(w);
  }
  q.waiters().erase(it);
}

void Broker::release(const Message& m) {
  auto& usage = accounting_.of(m.sender.uid);
  usage.queued_bytes -= m.payload.size();
  --usage.queued_messages;
  accounting_.forget_if_unused(m.sender.uid);
}

void Broker::drop_oldest(Queue& q) {
  Message m = q.pop();
  ++q.counters().dropped_total;
  release(m);
}

void Broker::space_freed(Queue& q) {
  if (q.blocked().empty()) return;
  std::vector<PeerId> resumed;
  resumed.swap(q.blocked());
  for (PeerId p : resumed) {
    if (auto it = peers_.find(p); it != peers_.end()) it->second.blocked_on = nullptr;
    sink_.resume(p);
  }
}

void Broker::collect_if_idle(Queue& q) {
  if (!q.idle()) return;
  queues_.erase(queues_.find(std::string_view(q.key())));
}

Errc Broker::declare(std::string_view key, const QueueOptions& requested, std::string& text) {
  const QueueOptions wanted = fill_defaults(requested, limits_.queue_defaults);
  if (Queue* q = find_mutable(key)) {
    if (q->declared()) {
      const auto& have = q->options();
      if (have.max_messages != wanted.max_messages || have.max_bytes != wanted.max_bytes ||
          have.overflow != wanted.overflow) {
        text = "queue '" + q->key() + "' is already declared with " + describe(have);
        return Errc::queue_conflict;
      }
      return Errc::ok;
    }
    q->set_options(wanted);
    q->mark_declared();
    // Looser limits may make room for blocked producers.
    if (q->has_room_for(0)) space_freed(*q);
    return Errc::ok;
  }
  SendOutcome why;
  Queue* q = get_or_create(key, &why);
  if (!q) {
    text = why.text;
    return why.error;
  }
  q->set_options(wanted);
  q->mark_declared();
  return Errc::ok;
}

void Broker::expire(Clock::time_point now) {
  while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
    auto [q, it] = deadlines_.begin()->second;
    const PeerId peer = it->peer;
    const std::uint64_t corr = it->correlation;
    remove_waiter(*q, it);
    sink_.fail(peer, corr, Errc::timeout, "no message within the timeout");
    collect_if_idle(*q);
  }
}

std::optional<Clock::time_point> Broker::next_deadline() const {
  if (deadlines_.empty()) return std::nullopt;
  return deadlines_.begin()->first;
}

std::optional<std::size_t> Broker::purge(std::string_view key) {
  Queue* q = find_mutable(key);
  if (!q) return std::nullopt;
  std::size_t n = 0;
  while (q->depth() > 0) {
    drop_oldest(*q);
    ++n;
  }
  space_freed(*q);
  collect_if_idle(*q);
  return n;
}

std::optional<std::size_t> Broker::remove(std::string_view key) {
  Queue* q = find_mutable(key);
  if (!q) return std::nullopt;
  std::size_t n = 0;
  while (q->depth() > 0) {
    drop_oldest(*q);
    ++n;
  }
  while (!q->waiters().empty()) {
    auto it = q->waiters().begin();
    const PeerId peer = it->peer;
    const std::uint64_t corr = it->correlation;
    remove_waiter(*q, it);
    sink_.fail(peer, corr, Errc::queue_deleted, "queue '" + q->key() + "' was deleted");
  }
  space_freed(*q);
  queues_.erase(queues_.find(std::string_view(q->key())));
  return n;
}

void Broker::fail_all_waiters(Errc code, std::string_view text) {
  std::vector<Queue*> all;
  for (auto& [k, q] : queues_)
    all.push_back(q.get());
  for (Queue* q : all) {
    while (!q->waiters().empty()) {
      auto it = q->waiters().begin();
      const PeerId peer = it->peer;
      const std::uint64_t corr = it->correlation;
      remove_waiter(*q, it);
      sink_.fail(peer, corr, code, text);
    }
    collect_if_idle(*q);
  }
}

}  // namespace qbus::broker
