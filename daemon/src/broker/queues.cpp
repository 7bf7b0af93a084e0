// The queue registry: sends, receives and their waits, overflow policies, and what keeps a
// queue alive (its declarer, the grace, the configuration).
#include "broker/queues.hpp"

#include <algorithm>
#include <new>

#include "broker/core.hpp"
#include "broker/requests.hpp"
#include "qbus/proto/headers.hpp"

namespace qbus::broker {

Queues::Queues(Core& core, Requests& requests)
    : core_(core), sink_(core.sink), requests_(requests) {}

SendOutcome Queues::send(PeerId from, Peer& sender, std::string_view key, Bytes payload,
                         Clock::time_point now, const MessageProps& props) {
  SendOutcome out;
  Queue* q = get_or_create(key, &out, &sender.id);
  if (!q) return out;
  out = enqueue(*q, from, sender, payload, now, 0, 0, {}, props);
  collect_if_idle(*q);
  return out;
}

void Queues::receive(PeerId peer, Peer& p, std::uint64_t correlation, std::string_view key,
                     std::uint32_t max_count, std::int32_t timeout_ms, Clock::time_point now,
                     bool ack) {
  Queue* q = find_mutable(key);
  if (!q && timeout_ms == 0) {
    sink_.fail(peer, correlation, Errc::timeout, "no message");
    return;
  }
  SendOutcome why;
  if (!q) q = create(key, &why, &p.id);  // find_mutable has just missed: no second lookup
  if (!q) {
    sink_.fail(peer, correlation, why.error, why.text);
    return;
  }
  if (q->options().single_active_consumer) {
    sink_.fail(
        peer, correlation, Errc::single_active_consumer,
        "queue '" + q->key() + "' has a single active consumer: consume it with a subscription");
    return;
  }
  receive_from(*q, peer, p, correlation, max_count, timeout_ms, now, ack);
  collect_if_idle(*q);
}

Queue* Queues::get_or_create(std::string_view key, SendOutcome* why, const Identity* creator) {
  if (Queue* q = find_mutable(key)) return q;
  return create(key, why, creator);
}

Queue* Queues::create(std::string_view key, SendOutcome* why, const Identity* creator) {
  const Limits& limits = core_.limits;
  if (queues_.size() >= limits.max_queues) {
    if (why) {
      *why = rejected(Errc::too_many_queues, "the broker holds its limit of " +
                                                 std::to_string(limits.max_queues) + " queues");
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
    raw->reuse(key, limits.queue_defaults);
    node.key().assign(key);
    queues_.insert(std::move(node));
  } else {
    auto q =
        std::make_unique<Queue>(std::string(key), limits.queue_defaults, core_.chunk_budget, false);
    raw = q.get();
    queues_.emplace(raw->key(), std::move(q));
  }
  if (creator) {
    charge_queue(*raw, creator->uid);
    raw->keeper().owner = creator->uid;
  }
  return raw;
}

std::optional<SendOutcome> Queues::over_queue_quota(std::uint32_t uid) const {
  const UidUsage* usage = core_.accounting.find(uid);
  const std::uint32_t held = usage ? usage->queues : 0;
  if (held < core_.limits.uid_max_queues) return std::nullopt;
  return rejected(Errc::too_many_queues, "uid " + std::to_string(uid) + " already holds " +
                                             std::to_string(held) + " queues (limit " +
                                             std::to_string(core_.limits.uid_max_queues) + ")");
}

void Queues::charge_queue(Queue& q, std::uint32_t uid) {
  ++core_.accounting.of(uid).queues;
  q.keeper().charged = true;
  q.keeper().uid = uid;
}

void Queues::uncharge_queue(Queue& q) {
  QueueKeeper& k = q.keeper();
  if (!k.charged) return;
  k.charged = false;
  --core_.accounting.of(k.uid).queues;
  core_.accounting.forget_if_unused(k.uid);
}

SendOutcome Queues::enqueue(Queue& q, PeerId from, Peer& sender, Bytes payload,
                            Clock::time_point now, std::uint64_t request_id,
                            std::uint64_t request_seq, RegionRef region,
                            const MessageProps& props) {
  return enqueue_as(q, from, sender.id, &sender.queues, payload, now, request_id, request_seq,
                    region, props);
}

SendOutcome Queues::enqueue_as(Queue& q, PeerId from, const Identity& id, QueuePeer* qp,
                               Bytes payload, Clock::time_point now, std::uint64_t request_id,
                               std::uint64_t request_seq, RegionRef region,
                               const MessageProps& props) {
  // `size` is what the queue and the uid are charged; a region's bytes are charged to the
  // region's owner instead. `moved` is what the message carries, for the totals.
  const std::size_t size = payload.size();
  const std::uint64_t moved = region ? region.length : size;
  if (auto refusal = too_large(q, size)) return *refusal;
  // Straight to a waiting receiver when nothing is queued ahead (FIFO) and the receiver
  // reads what it is given; otherwise the message is stored and counts against the queue
  // and the sender's quota like any other, so a receiver that does not read makes nothing
  // grow but its queue. What has expired is not ahead of it.
  expire_heads(q, now);
  auto it = q.waiters().begin();
  if (q.depth() == 0 && props.delay_ms == 0) {
    while (it != q.waiters().end() &&
           !(servable(q, *it) && sink_.wants_more(it->peer) && credit(*it) > 0))
      ++it;
  } else {
    it = q.waiters().end();
  }
  BrokerTotals& totals = core_.totals;
  if (it != q.waiters().end() && !(it->ack && request_id == 0)) {
    const Waiter w = *it;
    if (w.subscription) {
      q.waiters().splice(q.waiters().end(), q.waiters(), it);
    } else {
      remove_waiter(q, it);
    }
    ++q.counters().enqueued_total;
    ++q.counters().dequeued_total;
    ++totals.messages_in;
    totals.bytes_in += moved;
    ++totals.messages_out;
    totals.bytes_out += moved;
    if (request_id != 0) requests_.note_delivery(id.client_id, request_id, request_seq, w.peer);
    const Bytes headers = stored_headers(q, props.headers);
    const DeliveryExtras extras{0, 1, headers};
    hand_over(w.peer, w.correlation, true,
              Delivery{q.delivery_key(), id, request_id, payload, region,
                       headers.empty() ? nullptr : &extras});
    return {};
  }

  if (auto refusal = core_.over_quota(id, size)) {
    ++q.counters().rejected_total;
    return *refusal;
  }
  Journal* const journal = q.options().durable ? core_.journal : nullptr;
  if (q.options().durable) {
    if (auto refusal = journal_refusal(q, region)) return *refusal;
  }
  if (!q.has_room_for(size, id.uid)) {
    if (auto refusal = make_room(q, from, qp, size, id.uid, now)) return *refusal;
  }
  RegionTable& regions = core_.regions;
  // Read now, not before make_room: a dead letter it makes may use region_copy_ too.
  if (journal && region) {
    if (auto refusal = copy_region(q, region)) return *refusal;
  }
  if (region) {
    if (auto s = regions.add_message_ref(region.id); !s.ok()) return rejected(s.error, s.text);
  }
  MessageMeta meta{id, now, request_id, request_seq, region};
  meta.priority = props.priority;
  if (!q.is_inbox()) {
    const std::uint32_t ttl = props.ttl_ms != 0 ? props.ttl_ms : q.options().default_ttl_ms;
    if (ttl != 0) meta.expires = now + std::chrono::milliseconds(ttl);
  }
  if (journal) meta.journal_id = journal->next_id();
  MessageProps stored = props;
  stored.headers = stored_headers(q, props.headers);
  try {
    if (props.delay_ms != 0) {
      put_delayed(q, meta, payload, stored.headers,
                  now + std::chrono::milliseconds(props.delay_ms));
    } else {
      q.push(meta, payload, stored.headers);
    }
  } catch (const std::bad_alloc&) {
    // Out of memory (or of mappings, vm.max_map_count): this send fails, nothing else.
    if (region) regions.drop_message_ref(region.id);
    ++q.counters().rejected_total;
    return rejected(Errc::internal_error, "the broker has no memory left to queue this message");
  }
  core_.charge(id, size);
  ++totals.messages_in;
  totals.bytes_in += moved;
  // Journaled before any receiver can take it: its settlement always follows its record.
  const std::uint64_t ticket = journal ? journal_store(*journal, q, meta, payload, stored, now) : 0;
  rearm_expiry(q);
  // A waiter in acknowledgement mode takes the message from the store, which holds the copy
  // it is redelivered from.
  if (it != q.waiters().end()) serve_waiters(q, now, false);
  // A prvalue, built in the caller's place: a named result would be moved, string and all.
  return SendOutcome{SendResult::accepted, Errc::ok, {}, ticket};
}

std::optional<SendOutcome> Queues::too_large(Queue& q, std::size_t size) {
  if (size > core_.limits.max_payload) {
    return rejected(Errc::payload_too_large, "payload of " + std::to_string(size) +
                                                 " bytes exceeds the inline limit of " +
                                                 std::to_string(core_.limits.max_payload));
  }
  if (!q.could_ever_fit(size)) {
    ++q.counters().rejected_total;
    return rejected(Errc::payload_too_large, "payload of " + std::to_string(size) +
                                                 " bytes exceeds the max_bytes of " + q.key());
  }
  return std::nullopt;
}

Bytes Queues::stored_headers(const Queue& q, Bytes sender) {
  if (!q.options().message_ids) return sender;
  id_headers_.assign(sender.begin(), sender.end());
  proto::append_header(id_headers_, proto::kHeaderMessageId, core_.message_ids.next());
  return id_headers_;
}

std::optional<SendOutcome> Queues::make_room(Queue& q, PeerId from, QueuePeer* qp, std::size_t size,
                                             std::uint32_t uid, Clock::time_point now) {
  switch (q.options().overflow) {
    case Overflow::drop_oldest:
      // An inbox gives up only the sender's uid's own messages, and only from its front:
      // a message in the middle cannot be taken out of the store cheaply.
      while (!q.has_room_for(size, uid) && q.depth() > 0 &&
             (!q.is_inbox() || q.front().meta.sender.uid == uid)) {
        if (q.options().dead_letter_overflow) {
          overflow_to_dead_letter(q, now);
        } else {
          drop_oldest(q);
        }
      }
      if (q.has_room_for(size, uid)) return std::nullopt;
      return refuse_full(q, uid);
    case Overflow::block:
      if (from != 0 && qp) {
        q.blocked().push_back(from);
        qp->blocked_on = &q;
        return SendOutcome{SendResult::blocked, Errc::ok, {}};
      }
      [[fallthrough]];  // nobody to pause (a parked send): refuse
    case Overflow::reject:
    case Overflow::use_default:
      break;
  }
  return refuse_full(q, uid);
}

SendOutcome Queues::refuse_full(Queue& q, std::uint32_t uid) {
  ++q.counters().rejected_total;
  if (!q.is_inbox()) {
    return rejected(Errc::queue_full, "queue '" + q.key() + "' is full (" +
                                          std::to_string(q.depth()) + " messages, " +
                                          std::to_string(q.bytes()) + " bytes)");
  }
  const Queue::SenderShare s = q.share_of(uid);
  return rejected(Errc::peer_busy, "inbox of '" + q.key() + "' is full for uid " +
                                       std::to_string(uid) + " (" + std::to_string(s.messages) +
                                       " messages, " + std::to_string(s.bytes) +
                                       " bytes of its own)");
}

void Queues::hand_over(PeerId to, std::uint64_t correlation, bool last, const Delivery& d) {
  if (d.region) core_.regions.hold(to, d.region.id);
  sink_.deliver(to, correlation, last, d);
}

void Queues::receive_from(Queue& q, PeerId peer, Peer& p, std::uint64_t correlation,
                          std::uint32_t max_count, std::int32_t timeout_ms, Clock::time_point now,
                          bool ack) {
  // A receiver whose unread output is at its bound waits like one on an empty queue: it is
  // served when the edge reports it ready (output_ready), and until then the messages stay
  // queued, charged to the queue.
  const std::uint32_t max = std::clamp<std::uint32_t>(max_count, 1, core_.limits.max_receive_batch);
  Waiter w{peer, correlation, max, false, ack};
  if (ack && credit(w) == 0) {
    sink_.fail(peer, correlation, Errc::too_many_unacked,
               "this connection holds " + std::to_string(p.queues.held.size()) +
                   " unacknowledged messages (limit " + std::to_string(core_.limits.max_unacked) +
                   "); acknowledge some first");
    return;
  }
  expire_heads(q, now);
  if (q.depth() > 0 && sink_.wants_more(peer)) {
    serve_now(q, w, max, now);
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
  add_wait(q, p, w, timeout_ms, now);
}

bool Queues::add_wait(Queue& q, Peer& p, const Waiter& w, std::int32_t timeout_ms,
                      Clock::time_point now) {
  const PeerId peer = w.peer;
  const std::uint64_t correlation = w.correlation;
  const Limits& limits = core_.limits;
  QueuePeer& qp = p.queues;
  if (qp.waiting >= limits.max_waiting_receives) {
    sink_.fail(peer, correlation, Errc::too_many_receives,
               "this connection already has " + std::to_string(qp.waiting) +
                   " receives waiting (limit " + std::to_string(limits.max_waiting_receives) + ")");
    return false;
  }
  // The peer is connected, so its uid has an entry.
  UidUsage& usage = core_.accounting.of(p.id.uid);
  if (usage.waiting_receives >= limits.uid_max_waiting_receives) {
    sink_.fail(peer, correlation, Errc::too_many_receives,
               "uid " + std::to_string(p.id.uid) + " already has " +
                   std::to_string(usage.waiting_receives) +
                   " receives waiting over its connections (limit " +
                   std::to_string(limits.uid_max_waiting_receives) + ")");
    return false;
  }
  auto it = add_waiter(q, w);
  if (timeout_ms > 0) {
    it->has_deadline = true;
    it->deadline =
        spare_deadlines_.insert_mapped(deadlines_, now + std::chrono::milliseconds(timeout_ms),
                                       QueueDeadline{&q, QueueDeadline::Kind::receive, it, 0, 0});
  }
  ++qp.waiting;
  ++usage.waiting_receives;
  auto in = std::find_if(qp.waiting_in.begin(), qp.waiting_in.end(),
                         [&](const auto& e) { return e.first == &q; });
  if (in == qp.waiting_in.end()) {
    qp.waiting_in.emplace_back(&q, 1);
  } else {
    ++in->second;
  }
  return true;
}

bool Queues::serve_now(Queue& q, Waiter& w, std::uint32_t max, Clock::time_point now) {
  const std::uint32_t room = std::min(max, credit(w));
  for (std::uint32_t n = 0;; ++n) {
    // Read in place, handed over, then popped: the payload is never copied in the core
    // unless it is held for an acknowledgement, or the queue holds messages that expire.
    StoredMessage m = q.front();
    bool end = n + 1 >= room || !sink_.wants_more(w.peer);
    bool popped = false;
    if (!end && q.expiring() != 0) {
      // Whether a live message follows shows only once this one is off the queue; one that
      // has expired ends the batch (it goes when the queue is next served: a dead letter
      // must not be handed over in the middle of a batch). Without memory for the copy the
      // batch just ends here.
      try {
        scratch_.assign(m);
        m = scratch_.view();
        q.pop();
        popped = true;
        end = q.depth() == 0 || q.front().meta.expired(now);
      } catch (const std::bad_alloc&) {
        end = true;
      }
    } else if (!end) {
      end = q.depth() == 1;
    }
    // A subscription's deliveries are each complete (kFlagLast); its turn goes on.
    const bool last = w.subscription || end;
    ++q.counters().dequeued_total;
    ++core_.totals.messages_out;
    core_.totals.bytes_out += m.meta.region ? m.meta.region.length : m.payload.size();
    if (m.deliveries != 0) ++q.counters().redelivered_total;
    // A request is handed over at most once: its requester hears if the receiver leaves.
    if (w.ack && m.meta.request_id == 0) {
      try {
        hand_over_acked(q, w, m, last, now);
      } catch (const std::bad_alloc&) {
        // Nothing was handed over or taken: the message stays first in the queue. (Those
        // handed over before it in this batch stay held, and go back when not acked.)
        --q.counters().dequeued_total;
        --core_.totals.messages_out;
        core_.totals.bytes_out -= m.meta.region ? m.meta.region.length : m.payload.size();
        if (m.deliveries != 0) --q.counters().redelivered_total;
        if (popped) unpop(q);
        sink_.fail(w.peer, w.correlation, Errc::internal_error,
                   "the broker has no memory left to hold a message until it is acknowledged");
        rearm_expiry(q);
        return false;
      }
      if (!popped) q.pop();
    } else {
      if (m.meta.request_id != 0) {
        requests_.note_delivery(m.meta.sender.client_id, m.meta.request_id, m.meta.request_seq,
                                w.peer);
      }
      const DeliveryExtras extras{0, m.deliveries + 1, m.headers};
      const bool plain = m.deliveries == 0 && m.headers.empty();
      hand_over(w.peer, w.correlation, last,
                Delivery{q.delivery_key(), m.meta.sender, m.meta.request_id, m.payload,
                         m.meta.region, plain ? nullptr : &extras});
      // After the hand-over: the message's reference kept the region alive until the
      // receiver's handle (and the edge's copy of the fd) took over.
      core_.release(m.meta, m.payload.size());
      if (!popped) q.pop();
    }
    if (end) {
      rearm_expiry(q);
      return true;
    }
  }
}

void Queues::unpop(Queue& q) {
  // Back to the front: among the messages that came back it goes first in its level.
  if (scratch_.order == 0) scratch_.order = q.take_order(scratch_.view());
  try {
    q.restore(std::move(scratch_));
  } catch (const std::bad_alloc&) {
    release_held(scratch_);
    scratch_ = HeldMessage();
    ++q.counters().dropped_total;
  }
}

void Queues::output_ready(Peer& p, Clock::time_point now) {
  if (p.queues.waiting_in.empty()) return;
  // Copied: serving edits waiting_in, and may collect a queue once it is idle.
  std::vector<Queue*> queues;
  queues.reserve(p.queues.waiting_in.size());
  for (const auto& w : p.queues.waiting_in)
    if (w.first->depth() > 0) queues.push_back(w.first);
  for (Queue* q : queues)
    serve_waiters(*q, now);
}

void Queues::serve_waiters(Queue& q, Clock::time_point now, bool collect) {
  bool served = false;
  auto& ws = q.waiters();
  // In passes, each one walk over the waiters that were there when it began: every one
  // that can take something is served in arrival order; a receive leaves, a subscription
  // goes to the back and, if messages are left, is served again in the next pass. A pass
  // that serves nobody ends it, so a long list of waiters that cannot take anything (their
  // output backed up) costs one walk, not one per message. Expired messages leave between
  // passes (never during one: a dead letter may be handed to a waiter at once); a pass
  // that meets one first in line ends early for it.
  for (;;) {
    expire_heads(q, now);
    if (q.depth() == 0 || ws.empty()) break;
    bool any = false;
    const auto last = std::prev(ws.end());
    for (auto it = ws.begin(); q.depth() > 0;) {
      const bool final = it == last;
      const auto next = std::next(it);
      if (q.expiring() != 0 && q.front().meta.expired(now)) {
        any = true;
        break;
      }
      if (servable(q, *it) && sink_.wants_more(it->peer) && credit(*it) > 0) {
        any = true;
        if (it->subscription) {
          ws.splice(ws.end(), ws, it);
          // A subscription that cannot be served (no memory to hold a message) has been
          // told so and ends, so that no pass tries it again.
          if (!serve_now(q, ws.back(), core_.limits.max_receive_batch, now)) {
            remove_waiter(q, std::prev(ws.end()));
          }
        } else {
          Waiter w = *it;
          remove_waiter(q, it);
          serve_now(q, w, w.max_count, now);
        }
      }
      if (final) break;
      it = next;
    }
    if (!any) break;
    served = true;
  }
  if (!served) return;
  space_freed(q);
  if (collect && !q.is_inbox()) collect_if_idle(q);
}

WaiterList::iterator Queues::add_waiter(Queue& q, const Waiter& w) {
  auto& ws = q.waiters();
  if (spare_waiters_.empty()) return ws.insert(ws.end(), w);
  ws.splice(ws.end(), spare_waiters_, spare_waiters_.begin());
  auto it = std::prev(ws.end());
  *it = w;
  return it;
}

void Queues::remove_waiter(Queue& q, WaiterList::iterator it) {
  if (it->has_deadline) spare_deadlines_.erase(deadlines_, it->deadline);
  if (q.active() == &*it) q.active() = nullptr;  // the next is chosen when needed
  if (Peer* p = core_.peers.find(it->peer)) {
    QueuePeer& qp = p->queues;
    --qp.waiting;
    --core_.accounting.of(p->id.uid).waiting_receives;
    auto w = std::find_if(qp.waiting_in.begin(), qp.waiting_in.end(),
                          [&](const auto& e) { return e.first == &q; });
    if (w != qp.waiting_in.end() && --w->second == 0) {
      *w = qp.waiting_in.back();
      qp.waiting_in.pop_back();
    }
  }
  constexpr std::size_t kMaxSpareWaiters = 4096;
  if (spare_waiters_.size() < kMaxSpareWaiters) {
    spare_waiters_.splice(spare_waiters_.end(), q.waiters(), it);
  } else {
    q.waiters().erase(it);
  }
}

void Queues::fail_waiters(Queue& q, Errc code, std::string_view text, PeerId keep) {
  auto& ws = q.waiters();
  for (auto it = ws.begin(); it != ws.end();) {
    const auto next = std::next(it);
    if (it->peer != keep) {
      const PeerId peer = it->peer;
      const std::uint64_t corr = it->correlation;
      remove_waiter(q, it);
      sink_.fail(peer, corr, code, text);
    }
    it = next;
  }
}

void Queues::drop_oldest(Queue& q, Errc code, std::string_view why) {
  const MessageMeta m = q.front().meta;
  core_.release(m, q.front().payload.size());
  q.pop();
  ++q.counters().dropped_total;
  if (m.request_id != 0) requests_.abandon(m, code, why);
}

std::size_t Queues::drain(Queue& q) {
  std::size_t n = 0;
  for (; q.depth() > 0; ++n)
    drop_oldest(q);
  rearm_expiry(q);
  return n;
}

void Queues::space_freed(Queue& q) {
  if (q.blocked().empty()) return;
  std::vector<PeerId> resumed;
  resumed.swap(q.blocked());
  for (PeerId id : resumed) {
    if (Peer* p = core_.peers.find(id)) p->queues.blocked_on = nullptr;
    sink_.resume(id);
  }
}

void Queues::collect_if_idle(Queue& q) {
  if (!q.idle()) return;
  erase_queue(queues_.find(std::string_view(q.key())));
}

void Queues::erase_queue(QueueMap::iterator it) {
  Queue& q = *it->second;
  stop_grace(q);
  if (q.expiry().armed) {
    spare_deadlines_.erase(deadlines_, q.expiry().it);
    q.expiry().armed = false;
  }
  drop_declarer(q);
  uncharge_queue(q);
  if (last_queue_ == &q) last_queue_ = nullptr;
  // A queue that comes and goes with each message (a reply queue, a consumer that keeps
  // up) is created again from the stash without allocating.
  spare_queues_.keep(queues_.extract(it));
}

void Queues::forget(PeerId peer, Peer& p, Clock::time_point now) {
  QueuePeer& qp = p.queues;
  // Copy: remove_waiter edits waiting_in while we walk it.
  std::vector<Queue*> touched;
  for (const auto& w : qp.waiting_in)
    touched.push_back(w.first);
  // Whatever it declared is kept only through the grace now, unless declared again.
  for (Queue* q : qp.declared) {
    q->keeper().declarer = 0;
    start_grace(*q, now);
    if (!q->declared()) touched.push_back(q);
  }
  qp.declared.clear();
  for (Queue* q : touched) {
    auto& ws = q->waiters();
    for (auto it = ws.begin(); it != ws.end();) {
      auto next = std::next(it);
      if (it->peer == peer) remove_waiter(*q, it);
      it = next;
    }
  }
  // Inboxes are not collected like queues (their registry forgets them).
  std::erase_if(touched, [](Queue* q) { return q->is_inbox(); });
  if (Queue* q = qp.blocked_on) {
    std::erase(q->blocked(), peer);
    if (!q->is_inbox()) touched.push_back(q);
  }
  std::sort(touched.begin(), touched.end());
  touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
  // A single-active-consumer queue whose active subscription this was has a new one,
  // served once what this peer held is back first in line. By key: serving the queues the
  // held messages return to may collect others.
  std::vector<std::string> handed_over;
  for (Queue* q : touched) {
    if (q->options().single_active_consumer && !q->waiters().empty()) {
      handed_over.push_back(q->key());
    } else {
      collect_if_idle(*q);  // not a queue holding its messages: held ones keep it
    }
  }
  return_held(p, now);
  for (const std::string& key : handed_over) {
    if (Queue* q = find_mutable(key); q && q->depth() > 0) serve_waiters(*q, now);
  }
}

void Queues::fail_all(Errc code, std::string_view text) {
  std::vector<Queue*> all;
  for (auto& [k, q] : queues_)
    all.push_back(q.get());
  for (Queue* q : all) {
    fail_waiters(*q, code, text);
    collect_if_idle(*q);
  }
}

void Queues::expire_first(Clock::time_point now) {
  const QueueDeadline d = deadlines_.begin()->second;
  if (d.kind == QueueDeadline::Kind::ack) {
    expire_ack(d, now);
    return;
  }
  if (d.kind == QueueDeadline::Kind::delayed) {
    spare_deadlines_.erase(deadlines_, deadlines_.begin());
    expire_delayed(*d.queue, now);
    return;
  }
  if (d.kind == QueueDeadline::Kind::expiry) {
    on_expiry_deadline(*d.queue, now);
    return;
  }
  if (d.kind == QueueDeadline::Kind::grace) {
    // The grace is over: from now on the queue lives only while it is in use.
    stop_grace(*d.queue);
    d.queue->mark_undeclared();
    collect_if_idle(*d.queue);
    return;
  }
  const PeerId peer = d.waiter->peer;
  const std::uint64_t corr = d.waiter->correlation;
  remove_waiter(*d.queue, d.waiter);
  sink_.fail(peer, corr, Errc::timeout, "no message within the timeout");
  if (!d.queue->is_inbox()) collect_if_idle(*d.queue);
}

std::optional<std::size_t> Queues::purge(std::string_view key) {
  Queue* q = find_mutable(key);
  if (!q) return std::nullopt;
  const std::size_t n = drain(*q);
  space_freed(*q);
  collect_if_idle(*q);
  return n;
}

std::optional<std::size_t> Queues::remove(std::string_view key) {
  Queue* q = find_mutable(key);
  if (!q) return std::nullopt;
  const std::size_t n = drain(*q);
  fail_waiters(*q, Errc::queue_deleted, "queue '" + q->key() + "' was deleted");
  orphan_held(*q);
  space_freed(*q);
  if (q->options().durable && core_.journal) core_.journal->remove(q->key());
  erase_queue(queues_.find(std::string_view(q->key())));
  return n;
}

}  // namespace qbus::broker
