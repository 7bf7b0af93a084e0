#include "broker/broker.hpp"

#include <algorithm>
#include <new>

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

}  // namespace

SendOutcome rejected(Errc code, std::string text) {
  return SendOutcome{SendResult::rejected, code, std::move(text)};
}

Errc Broker::connect(PeerId peer, const Identity& id, Clock::time_point now) {
  if (peers_.count(peer) || id.client_id != peer) return Errc::internal_error;
  if (peers_.size() >= limits_.max_connections) return Errc::too_many_connections;
  auto& usage = accounting_.of(id.uid);
  if (usage.connections >= limits_.uid_max_connections) {
    accounting_.forget_if_unused(id.uid);
    return Errc::too_many_connections;
  }
  ++usage.connections;
  Peer& p = peers_.emplace(peer, Peer{}).first->second;
  p.id = id;
  join_inbox(peer, p, now);
  return Errc::ok;
}

void Broker::disconnect(PeerId peer, Clock::time_point now) {
  auto pit = peers_.find(peer);
  if (pit == peers_.end()) return;
  Peer& p = pit->second;
  // Copy: remove_waiter edits waiting_in while we walk it.
  std::vector<Queue*> touched;
  for (const auto& w : p.waiting_in)
    touched.push_back(w.first);
  // Whatever it declared is kept only through the grace now, unless declared again.
  for (Queue* q : p.declared) {
    q->keeper().declarer = 0;
    start_grace(*q, now);
    if (!q->declared()) touched.push_back(q);
  }
  p.declared.clear();
  for (Queue* q : touched) {
    auto& ws = q->waiters();
    for (auto it = ws.begin(); it != ws.end();) {
      auto next = std::next(it);
      if (it->peer == peer) remove_waiter(*q, it);
      it = next;
    }
  }
  // Inboxes are not collected like queues (and leave_inbox may free this one).
  std::erase_if(touched, [](Queue* q) { return q->is_inbox(); });
  if (Queue* q = p.blocked_on) {
    std::erase(q->blocked(), peer);
    if (!q->is_inbox()) touched.push_back(q);
  }
  while (!p.requests.empty())
    end_request(p, p.requests.begin());
  // Requests this peer took and never answered cannot be answered any more.
  while (!p.handling.empty()) {
    const auto [requester, request_id] = *p.handling.begin();
    p.handling.erase(p.handling.begin());
    auto r = peers_.find(requester);
    if (r == peers_.end()) continue;
    auto req = r->second.requests.find(request_id);
    if (req == r->second.requests.end() || req->second.delivered_to != peer) continue;
    end_request(r->second, req);
    sink_.fail(requester, request_id, Errc::no_such_peer,
               "the receiver of this request disconnected without replying");
  }
  while (!p.parked.empty())
    drop_parked(p.parked.back());
  leave_inbox(peer, p);
  regions_.disconnect(peer);
  const auto uid = p.id.uid;
  if (last_peer_ == &p) last_peer_ = nullptr;
  peers_.erase(pit);
  --accounting_.of(uid).connections;
  accounting_.forget_if_unused(uid);
  std::sort(touched.begin(), touched.end());
  touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
  for (Queue* q : touched)
    collect_if_idle(*q);
}

Queue* Broker::find_mutable(std::string_view key) {
  // A producer sends runs of messages to one queue: compare the key before hashing it.
  if (last_queue_ && last_queue_->key() == key) return last_queue_;
  auto it = queues_.find(key);
  if (it == queues_.end()) return nullptr;
  last_queue_ = it->second.get();
  return last_queue_;
}

const Queue* Broker::find(std::string_view key) const {
  auto it = queues_.find(key);
  return it == queues_.end() ? nullptr : it->second.get();
}

Queue* Broker::get_or_create(std::string_view key, SendOutcome* why, const Identity* creator) {
  if (Queue* q = find_mutable(key)) return q;
  if (queues_.size() >= limits_.max_queues) {
    if (why) {
      *why = rejected(Errc::too_many_queues, "the broker holds its limit of " +
                                                 std::to_string(limits_.max_queues) + " queues");
    }
    return nullptr;
  }
  if (creator) {
    if (auto refusal = over_queue_quota(creator->uid)) {
      if (why) *why = std::move(*refusal);
      return nullptr;
    }
  }
  Queue* raw = nullptr;
  if (auto node = spare_queues_.take()) {
    raw = node.mapped().get();
    raw->reuse(key, limits_.queue_defaults);
    node.key().assign(key);
    queues_.insert(std::move(node));
  } else {
    auto q =
        std::make_unique<Queue>(std::string(key), limits_.queue_defaults, chunk_budget_, false);
    raw = q.get();
    queues_.emplace(raw->key(), std::move(q));
  }
  if (creator) charge_queue(*raw, creator->uid);
  return raw;
}

std::optional<SendOutcome> Broker::over_queue_quota(std::uint32_t uid) const {
  const UidUsage* usage = accounting_.find(uid);
  const std::uint32_t held = usage ? usage->queues : 0;
  if (held < limits_.uid_max_queues) return std::nullopt;
  return rejected(Errc::too_many_queues, "uid " + std::to_string(uid) + " already holds " +
                                             std::to_string(held) + " queues (limit " +
                                             std::to_string(limits_.uid_max_queues) + ")");
}

void Broker::charge_queue(Queue& q, std::uint32_t uid) {
  ++accounting_.of(uid).queues;
  q.keeper().charged = true;
  q.keeper().uid = uid;
}

void Broker::uncharge_queue(Queue& q) {
  QueueKeeper& k = q.keeper();
  if (!k.charged) return;
  k.charged = false;
  --accounting_.of(k.uid).queues;
  accounting_.forget_if_unused(k.uid);
}

SendOutcome Broker::enqueue(Queue& q, PeerId from, Peer& sender, Bytes payload,
                            Clock::time_point now, std::uint64_t request_id,
                            std::uint64_t request_seq, RegionRef region) {
  // `size` is what the queue and the uid are charged; a region's bytes are charged to the
  // region's owner instead. `moved` is what the message carries, for the totals.
  const std::size_t size = payload.size();
  const std::uint64_t moved = region ? region.length : size;
  if (size > limits_.max_payload) {
    return rejected(Errc::payload_too_large, "payload of " + std::to_string(size) +
                                                 " bytes exceeds the inline limit of " +
                                                 std::to_string(limits_.max_payload));
  }
  if (!q.could_ever_fit(size)) {
    ++q.counters().rejected_total;
    return rejected(Errc::payload_too_large, "payload of " + std::to_string(size) +
                                                 " bytes exceeds the max_bytes of " + q.key());
  }
  // Straight to a waiting receiver when nothing is queued ahead (FIFO) and the receiver
  // reads what it is given; otherwise the message is stored and counts against the queue
  // and the sender's quota like any other, so a receiver that does not read makes nothing
  // grow but its queue.
  auto it = q.waiters().begin();
  if (q.depth() == 0) {
    while (it != q.waiters().end() && !sink_.wants_more(it->peer))
      ++it;
  } else {
    it = q.waiters().end();
  }
  if (it != q.waiters().end()) {
    const PeerId to = it->peer;
    const std::uint64_t corr = it->correlation;
    remove_waiter(q, it);
    ++q.counters().enqueued_total;
    ++q.counters().dequeued_total;
    ++totals_.messages_in;
    totals_.bytes_in += moved;
    ++totals_.messages_out;
    totals_.bytes_out += moved;
    if (request_id != 0) note_delivery(sender.id.client_id, request_id, request_seq, to);
    hand_over(to, corr, true, Delivery{q.delivery_key(), sender.id, request_id, payload, region});
    return {};
  }

  if (auto refusal = over_quota(sender.id, size)) {
    ++q.counters().rejected_total;
    return *refusal;
  }
  if (!q.has_room_for(size)) {
    switch (q.options().overflow) {
      case Overflow::drop_oldest:
        while (!q.has_room_for(size) && q.depth() > 0)
          drop_oldest(q);
        break;
      case Overflow::block:
        if (from != 0) {
          q.blocked().push_back(from);
          sender.blocked_on = &q;
          return SendOutcome{SendResult::blocked, Errc::ok, {}};
        }
        [[fallthrough]];  // nobody to pause (a parked send): refuse
      case Overflow::reject:
      case Overflow::use_default:
        ++q.counters().rejected_total;
        return rejected(q.is_inbox() ? Errc::peer_busy : Errc::queue_full,
                        std::string(q.is_inbox() ? "inbox of " : "queue ") + "'" + q.key() +
                            "' is full (" + std::to_string(q.depth()) + " messages, " +
                            std::to_string(q.bytes()) + " bytes)");
    }
  }

  if (region) {
    if (auto s = regions_.add_message_ref(region.id); !s.ok()) return rejected(s.error, s.text);
  }
  try {
    q.push(MessageMeta{sender.id, now, request_id, request_seq, region}, payload);
  } catch (const std::bad_alloc&) {
    // Out of memory (or of mappings, vm.max_map_count): this send fails, nothing else.
    if (region) regions_.drop_message_ref(region.id);
    ++q.counters().rejected_total;
    return rejected(Errc::internal_error, "the broker has no memory left to queue this message");
  }
  charge(sender.id, size);
  ++totals_.messages_in;
  totals_.bytes_in += moved;
  return {};
}

void Broker::hand_over(PeerId to, std::uint64_t correlation, bool last, const Delivery& d) {
  if (d.region) regions_.hold(to, d.region.id);
  sink_.deliver(to, correlation, last, d);
}

Broker::Peer* Broker::find_peer(PeerId peer) {
  // A producer's frames come in runs: remember the last one (nodes do not move).
  if (last_peer_ && last_peer_id_ == peer) return last_peer_;
  auto it = peers_.find(peer);
  if (it == peers_.end()) return nullptr;
  last_peer_id_ = peer;
  last_peer_ = &it->second;
  return last_peer_;
}

SendOutcome Broker::send(PeerId from, std::string_view key, Bytes payload, Clock::time_point now) {
  Peer* p = find_peer(from);
  if (!p) return rejected(Errc::internal_error, "unknown peer");
  SendOutcome out;
  Queue* q = get_or_create(key, &out, &p->id);
  if (!q) return out;
  out = enqueue(*q, from, *p, payload, now);
  collect_if_idle(*q);
  return out;
}

void Broker::receive(PeerId peer, std::uint64_t correlation, std::string_view key,
                     std::uint32_t max_count, std::int32_t timeout_ms, Clock::time_point now) {
  auto pit = peers_.find(peer);
  if (pit == peers_.end()) return;
  Queue* q = find_mutable(key);
  if (!q && timeout_ms == 0) {
    sink_.fail(peer, correlation, Errc::timeout, "no message");
    return;
  }
  SendOutcome why;
  if (!q) q = get_or_create(key, &why, &pit->second.id);
  if (!q) {
    sink_.fail(peer, correlation, why.error, why.text);
    return;
  }
  receive_from(*q, peer, pit->second, correlation, max_count, timeout_ms, now);
  collect_if_idle(*q);
}

void Broker::receive_from(Queue& q, PeerId peer, Peer& p, std::uint64_t correlation,
                          std::uint32_t max_count, std::int32_t timeout_ms, Clock::time_point now) {
  // A receiver whose unread output is at its bound waits like one on an empty queue: it is
  // served when the edge reports it ready (output_ready), and until then the messages stay
  // queued, charged to the queue.
  const bool ready = q.depth() > 0 && sink_.wants_more(peer);
  if (ready) {
    serve_now(q, peer, correlation,
              std::clamp<std::uint32_t>(max_count, 1, limits_.max_receive_batch));
    space_freed(q);
    return;
  }
  if (timeout_ms == 0) {
    sink_.fail(peer, correlation, Errc::timeout,
               q.depth() == 0 ? "no message"
                              : "no message could be handed over now: this connection's (or "
                                "its uid's) unread output is at its limit; read it first");
    return;
  }
  if (p.waiting >= limits_.max_waiting_receives) {
    sink_.fail(peer, correlation, Errc::too_many_receives,
               "this connection already has " + std::to_string(p.waiting) +
                   " receives waiting (limit " + std::to_string(limits_.max_waiting_receives) +
                   ")");
    return;
  }
  // The peer is connected, so its uid has an entry.
  UidUsage& usage = accounting_.of(p.id.uid);
  if (usage.waiting_receives >= limits_.uid_max_waiting_receives) {
    sink_.fail(peer, correlation, Errc::too_many_receives,
               "uid " + std::to_string(p.id.uid) + " already has " +
                   std::to_string(usage.waiting_receives) +
                   " receives waiting over its connections (limit " +
                   std::to_string(limits_.uid_max_waiting_receives) + ")");
    return;
  }
  const std::uint32_t max = std::clamp<std::uint32_t>(max_count, 1, limits_.max_receive_batch);
  auto it = add_waiter(q, Waiter{peer, correlation, max, false, {}});
  if (timeout_ms > 0) {
    Deadline d;
    d.kind = Deadline::Kind::receive;
    d.queue = &q;
    d.waiter = it;
    it->has_deadline = true;
    it->deadline = add_deadline(now + std::chrono::milliseconds(timeout_ms), d);
  }
  ++p.waiting;
  ++usage.waiting_receives;
  auto w = std::find_if(p.waiting_in.begin(), p.waiting_in.end(),
                        [&](const auto& e) { return e.first == &q; });
  if (w == p.waiting_in.end()) {
    p.waiting_in.emplace_back(&q, 1);
  } else {
    ++w->second;
  }
}

void Broker::serve_now(Queue& q, PeerId peer, std::uint64_t correlation, std::uint32_t max) {
  for (std::uint32_t n = 0;; ++n) {
    // Read in place, handed over, then popped: the payload is never copied in the core.
    const StoredMessage m = q.front();
    const bool last = n + 1 >= max || q.depth() == 1 || !sink_.wants_more(peer);
    ++q.counters().dequeued_total;
    ++totals_.messages_out;
    totals_.bytes_out += m.meta.region ? m.meta.region.length : m.payload.size();
    if (m.meta.request_id != 0) {
      note_delivery(m.meta.sender.client_id, m.meta.request_id, m.meta.request_seq, peer);
    }
    hand_over(
        peer, correlation, last,
        Delivery{q.delivery_key(), m.meta.sender, m.meta.request_id, m.payload, m.meta.region});
    // After the hand-over: the message's reference kept the region alive until the
    // receiver's handle (and the edge's copy of the fd) took over.
    release(m.meta, m.payload.size());
    q.pop();
    if (last) break;
  }
}

void Broker::output_ready(PeerId peer) {
  Peer* p = find_peer(peer);
  if (!p || p->waiting_in.empty()) return;
  // Copied: serving edits waiting_in, and may collect a queue once it is idle.
  std::vector<Queue*> queues;
  queues.reserve(p->waiting_in.size());
  for (const auto& w : p->waiting_in)
    if (w.first->depth() > 0) queues.push_back(w.first);
  for (Queue* q : queues)
    serve_waiters(*q);
}

void Broker::serve_waiters(Queue& q) {
  bool served = false;
  for (auto it = q.waiters().begin(); it != q.waiters().end() && q.depth() > 0;) {
    const auto next = std::next(it);
    if (sink_.wants_more(it->peer)) {
      const PeerId to = it->peer;
      const std::uint64_t corr = it->correlation;
      const std::uint32_t max = it->max_count;
      remove_waiter(q, it);
      serve_now(q, to, corr, max);
      served = true;
    }
    it = next;
  }
  if (!served) return;
  space_freed(q);
  if (!q.is_inbox()) collect_if_idle(q);
}

WaiterList::iterator Broker::add_waiter(Queue& q, const Waiter& w) {
  auto& ws = q.waiters();
  if (spare_waiters_.empty()) return ws.insert(ws.end(), w);
  ws.splice(ws.end(), spare_waiters_, spare_waiters_.begin());
  auto it = std::prev(ws.end());
  *it = w;
  return it;
}

DeadlineIndex::iterator Broker::add_deadline(Clock::time_point when, const Deadline& d) {
  return spare_deadlines_.insert_mapped(deadlines_, when, d);
}

void Broker::remove_waiter(Queue& q, WaiterList::iterator it) {
  if (it->has_deadline) spare_deadlines_.erase(deadlines_, it->deadline);
  auto pit = peers_.find(it->peer);
  if (pit != peers_.end()) {
    Peer& p = pit->second;
    --p.waiting;
    --accounting_.of(p.id.uid).waiting_receives;
    auto w = std::find_if(p.waiting_in.begin(), p.waiting_in.end(),
                          [&](const auto& e) { return e.first == &q; });
    if (w != p.waiting_in.end() && --w->second == 0) {
      *w = p.waiting_in.back();
      p.waiting_in.pop_back();
    }
  }
  constexpr std::size_t kMaxSpareWaiters = 4096;
  if (spare_waiters_.size() < kMaxSpareWaiters) {
    spare_waiters_.splice(spare_waiters_.end(), q.waiters(), it);
  } else {
    q.waiters().erase(it);
  }
}

void Broker::fail_waiters(Queue& q, Errc code, std::string_view text) {
  while (!q.waiters().empty()) {
    auto it = q.waiters().begin();
    const PeerId peer = it->peer;
    const std::uint64_t corr = it->correlation;
    remove_waiter(q, it);
    sink_.fail(peer, corr, code, text);
  }
}

std::optional<SendOutcome> Broker::over_quota(const Identity& sender, std::size_t bytes) {
  const auto* usage = accounting_.find(sender.uid);
  if (!usage) return std::nullopt;
  if (usage->queued_bytes + bytes > limits_.uid_max_queued_bytes) {
    return rejected(Errc::quota_exceeded, "uid " + std::to_string(sender.uid) + " already has " +
                                              std::to_string(usage->queued_bytes) +
                                              " bytes queued (limit " +
                                              std::to_string(limits_.uid_max_queued_bytes) + ")");
  }
  if (usage->queued_messages >= limits_.uid_max_queued_messages) {
    return rejected(Errc::quota_exceeded,
                    "uid " + std::to_string(sender.uid) + " already has " +
                        std::to_string(usage->queued_messages) + " messages queued (limit " +
                        std::to_string(limits_.uid_max_queued_messages) + ")");
  }
  return std::nullopt;
}

void Broker::charge(const Identity& sender, std::size_t bytes) {
  auto& usage = accounting_.of(sender.uid);
  usage.queued_bytes += bytes;
  ++usage.queued_messages;
}

void Broker::release(const MessageMeta& m, std::size_t payload_size) {
  auto& usage = accounting_.of(m.sender.uid);
  usage.queued_bytes -= payload_size;
  --usage.queued_messages;
  accounting_.forget_if_unused(m.sender.uid);
  if (m.region) regions_.drop_message_ref(m.region.id);
}

void Broker::drop_oldest(Queue& q, Errc code, std::string_view why) {
  const MessageMeta m = q.front().meta;
  release(m, q.front().payload.size());
  q.pop();
  ++q.counters().dropped_total;
  if (m.request_id != 0) abandon_request(m, code, why);
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
  erase_queue(queues_.find(std::string_view(q.key())));
}

void Broker::erase_queue(QueueMap::iterator it) {
  Queue& q = *it->second;
  stop_grace(q);
  drop_declarer(q);
  uncharge_queue(q);
  if (last_queue_ == &q) last_queue_ = nullptr;
  // A queue that comes and goes with each message (a reply queue, a consumer that keeps
  // up) is created again from the stash without allocating.
  spare_queues_.keep(queues_.extract(it));
}

Errc Broker::check_declared(const Queue& q, const QueueOptions& wanted, std::string& text) const {
  const auto& have = q.options();
  if (have.max_messages != wanted.max_messages || have.max_bytes != wanted.max_bytes ||
      have.overflow != wanted.overflow) {
    text = "queue '" + q.key() + "' is already declared with " + describe(have);
    return Errc::queue_conflict;
  }
  return Errc::ok;
}

Errc Broker::declare(PeerId from, std::string_view key, const QueueOptions& requested,
                     std::string& text) {
  Peer* p = find_peer(from);
  if (!p) {
    text = "unknown peer";
    return Errc::internal_error;
  }
  const QueueOptions wanted = fill_defaults(requested, limits_.queue_defaults);
  Queue* q = find_mutable(key);
  if (q && q->declared()) {
    if (const Errc e = check_declared(*q, wanted, text); e != Errc::ok) return e;
  }
  if (q && !q->keeper().permanent) {
    if (auto refusal = adopt(*q, from, *p)) {
      text = std::move(refusal->text);
      return refusal->error;
    }
  }
  if (q) {
    if (q->declared()) return Errc::ok;
    q->set_options(wanted);
    q->mark_declared();
    // Looser limits may make room for blocked producers.
    if (q->has_room_for(0)) space_freed(*q);
    return Errc::ok;
  }
  SendOutcome why;
  q = get_or_create(key, &why, &p->id);
  if (!q) {
    text = why.text;
    return why.error;
  }
  q->set_options(wanted);
  q->mark_declared();
  q->keeper().declarer = from;
  p->declared.push_back(q);
  return Errc::ok;
}

Errc Broker::declare_configured(std::string_view key, const QueueOptions& requested,
                                std::string& text) {
  const QueueOptions wanted = fill_defaults(requested, limits_.queue_defaults);
  Queue* q = find_mutable(key);
  if (q) {
    if (q->declared()) {
      if (const Errc e = check_declared(*q, wanted, text); e != Errc::ok) return e;
    } else {
      q->set_options(wanted);
      q->mark_declared();
      if (q->has_room_for(0)) space_freed(*q);
    }
  } else {
    SendOutcome why;
    q = get_or_create(key, &why, nullptr);
    if (!q) {
      text = why.text;
      return why.error;
    }
    q->set_options(wanted);
    q->mark_declared();
  }
  stop_grace(*q);
  drop_declarer(*q);
  uncharge_queue(*q);
  q->keeper().permanent = true;
  return Errc::ok;
}

bool Broker::release_configured(std::string_view key, Clock::time_point now) {
  Queue* q = find_mutable(key);
  if (!q || !q->keeper().permanent) return false;
  q->keeper().permanent = false;
  start_grace(*q, now);
  collect_if_idle(*q);
  return true;
}

std::optional<SendOutcome> Broker::adopt(Queue& q, PeerId peer, Peer& p) {
  QueueKeeper& k = q.keeper();
  if (!k.charged || k.uid != p.id.uid) {
    if (auto refusal = over_queue_quota(p.id.uid)) return refusal;
    uncharge_queue(q);
    charge_queue(q, p.id.uid);
  }
  stop_grace(q);
  if (k.declarer != peer) {
    drop_declarer(q);
    k.declarer = peer;
    p.declared.push_back(&q);
  }
  return std::nullopt;
}

void Broker::drop_declarer(Queue& q) {
  QueueKeeper& k = q.keeper();
  if (k.declarer == 0) return;
  if (auto it = peers_.find(k.declarer); it != peers_.end()) std::erase(it->second.declared, &q);
  k.declarer = 0;
}

void Broker::start_grace(Queue& q, Clock::time_point now) {
  stop_grace(q);
  if (limits_.declared_queue_grace_ms == 0) {
    q.mark_undeclared();
    return;
  }
  Deadline d;
  d.kind = Deadline::Kind::collect;
  d.queue = &q;
  q.keeper().grace =
      add_deadline(now + std::chrono::milliseconds(limits_.declared_queue_grace_ms), d);
  q.keeper().grace_running = true;
}

void Broker::stop_grace(Queue& q) {
  QueueKeeper& k = q.keeper();
  if (!k.grace_running) return;
  k.grace_running = false;
  spare_deadlines_.erase(deadlines_, k.grace);
}

void Broker::expire(Clock::time_point now) {
  while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
    const Deadline d = deadlines_.begin()->second;
    switch (d.kind) {
      case Deadline::Kind::receive: {
        const PeerId peer = d.waiter->peer;
        const std::uint64_t corr = d.waiter->correlation;
        remove_waiter(*d.queue, d.waiter);
        sink_.fail(peer, corr, Errc::timeout, "no message within the timeout");
        if (!d.queue->is_inbox()) collect_if_idle(*d.queue);
        break;
      }
      case Deadline::Kind::request: {
        Peer& p = peers_.at(d.peer);
        end_request(p, p.requests.find(d.request_id));
        sink_.fail(d.peer, d.request_id, Errc::timeout, "no reply within the timeout");
        break;
      }
      case Deadline::Kind::collect: {
        // The grace is over: from now on the queue lives only while it is in use.
        stop_grace(*d.queue);
        d.queue->mark_undeclared();
        collect_if_idle(*d.queue);
        break;
      }
      case Deadline::Kind::parked: {
        const PeerId from = d.parked->from;
        const std::uint64_t corr = d.parked->correlation;
        const std::uint32_t pid = d.parked->pid;
        drop_parked(d.parked);
        sink_.fail(from, corr, Errc::no_such_peer,
                   "no process with pid " + std::to_string(pid) + " connected in time");
        break;
      }
    }
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
  for (; q->depth() > 0; ++n)
    drop_oldest(*q);
  space_freed(*q);
  collect_if_idle(*q);
  return n;
}

std::optional<std::size_t> Broker::remove(std::string_view key) {
  Queue* q = find_mutable(key);
  if (!q) return std::nullopt;
  std::size_t n = 0;
  for (; q->depth() > 0; ++n)
    drop_oldest(*q);
  fail_waiters(*q, Errc::queue_deleted, "queue '" + q->key() + "' was deleted");
  space_freed(*q);
  erase_queue(queues_.find(std::string_view(q->key())));
  return n;
}

void Broker::fail_all_waiters(Errc code, std::string_view text) {
  std::vector<Queue*> all;
  for (auto& [k, q] : queues_)
    all.push_back(q.get());
  for (Queue* q : all) {
    fail_waiters(*q, code, text);
    collect_if_idle(*q);
  }
  for (auto& [ptr, inbox] : inboxes_)
    fail_waiters(inbox->queue, code, text);
  for (auto& [id, p] : peers_) {
    while (!p.requests.empty()) {
      const std::uint64_t corr = p.requests.begin()->first;
      end_request(p, p.requests.begin());
      sink_.fail(id, corr, code, text);
    }
  }
  while (!parked_by_pid_.empty()) {
    const auto it = parked_by_pid_.begin()->second.begin();
    const PeerId from = it->from;
    const std::uint64_t corr = it->correlation;
    drop_parked(it);
    sink_.fail(from, corr, code, text);
  }
}

RegionStatus Broker::remove_named_region_as_operator(std::string_view key) {
  Identity root;  // uid 0: the same right root has over REGION_REMOVE
  root.uid = 0;
  return regions_.remove_named(key, root);
}

}  // namespace qbus::broker
