// The queue registry's acknowledgement mode (proto/PROTOCOL.md section 17): messages held
// by the connection they were handed to until it settles them, their ack timeouts and
// delays, redelivery at the head of their queue, dead letters, and subscriptions with
// credit.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <new>

#include "broker/core.hpp"
#include "broker/queues.hpp"
#include "qbus/proto/headers.hpp"

namespace qbus::broker {
namespace {

using HeldMap = std::map<std::uint64_t, InFlight>;

void unique_queues(std::vector<Queue*>& qs) {
  std::sort(qs.begin(), qs.end());
  qs.erase(std::unique(qs.begin(), qs.end()), qs.end());
}

}  // namespace

void Queues::release_held(const HeldMessage& m) {
  core_.release(m.meta, m.payload().size());
}

std::uint32_t Queues::credit(const Waiter& w) const {
  if (!w.ack) return std::numeric_limits<std::uint32_t>::max();
  const Peer* p = core_.peers.find(w.peer);
  const std::size_t held = p ? p->queues.held.size() : 0;
  const std::uint32_t max = core_.limits.max_unacked;
  std::uint32_t rest = held >= max ? 0 : max - static_cast<std::uint32_t>(held);
  if (w.subscription) rest = std::min(rest, w.unacked >= w.prefetch ? 0 : w.prefetch - w.unacked);
  return rest;
}

void Queues::hand_over_acked(Queue& q, Waiter& w, const StoredMessage& m, bool last,
                             Clock::time_point now) {
  Peer* p = core_.peers.find(w.peer);
  if (!p) throw std::bad_alloc();  // never: a waiter's peer is connected
  // A recycled node brings the memory of an earlier held message with it: steady
  // acknowledged traffic allocates nothing here.
  HeldMap::node_type node = spare_held_.take();
  if (!node) {
    HeldMap fresh;
    node = fresh.extract(fresh.emplace(0, InFlight{}).first);
  }
  InFlight& f = node.mapped();
  f.message.assign(m);
  f.message.deliveries = m.deliveries + 1;
  f.message.order = q.take_order(m);
  f.queue = &q;
  f.subscription = w.subscription ? w.correlation : 0;
  f.has_deadline = false;
  const std::uint64_t tag = next_tag_;
  node.key() = tag;
  const auto it = p->queues.held.insert(std::move(node)).position;
  if (const std::uint32_t ms = q.options().ack_timeout_ms; ms != 0) {
    try {
      it->second.deadline = spare_deadlines_.insert_mapped(
          deadlines_, now + std::chrono::milliseconds(ms),
          QueueDeadline{&q, QueueDeadline::Kind::ack, {}, w.peer, tag});
    } catch (const std::bad_alloc&) {
      spare_held_.erase(p->queues.held, it);
      throw;
    }
    it->second.has_deadline = true;
  }
  ++next_tag_;
  q.hold(m.payload.size());
  if (w.subscription) ++w.unacked;
  if (m.meta.journal_id != 0 && core_.journal) core_.journal->delivered(m.meta.journal_id);
  const HeldMessage& h = it->second.message;
  const DeliveryExtras extras{tag, h.deliveries, h.headers()};
  hand_over(w.peer, w.correlation, last,
            Delivery{q.delivery_key(), h.meta.sender, 0, h.payload(), h.meta.region, &extras});
}

Queue* Queues::settle(Peer& p, HeldMap::iterator it, Outcome outcome, Clock::time_point now,
                      std::uint32_t delay_ms) {
  InFlight& f = it->second;
  if (f.has_deadline) spare_deadlines_.erase(deadlines_, f.deadline);
  Queue* q = f.queue;
  if (q && f.subscription != 0) {
    for (Waiter& w : q->waiters()) {
      if (w.subscription && w.peer == p.id.client_id && w.correlation == f.subscription) {
        --w.unacked;
        break;
      }
    }
  }
  if (!q || outcome == Outcome::acked) {
    if (q) {
      ++q->counters().acked_total;
      q->unhold(f.message.payload().size());
    }
    release_held(f.message);  // !q: its queue was deleted while it was held
    // The node keeps a small message's memory for the next one handed over.
    if (f.message.capacity() > kKeptHeldBytes) f.message = HeldMessage();
    spare_held_.erase(p.queues.held, it);
    return q;
  }
  HeldMessage m = std::move(f.message);
  spare_held_.erase(p.queues.held, it);
  switch (outcome) {
    case Outcome::acked:
      break;
    case Outcome::requeue:
      give_back(*q, std::move(m), now);
      break;
    case Outcome::delay: {
      // No memory to wait: back at once. (A failed insert leaves `m` as it was.)
      const auto until = now + std::chrono::milliseconds(delay_ms);
      QueueDeadlineIndex::iterator d;
      try {
        d = spare_deadlines_.insert_mapped(
            deadlines_, until, QueueDeadline{q, QueueDeadline::Kind::delayed, {}, 0, 0});
      } catch (const std::bad_alloc&) {
        give_back(*q, std::move(m), now);
        break;
      }
      try {
        q->put_aside(until, std::move(m));
      } catch (const std::bad_alloc&) {
        spare_deadlines_.erase(deadlines_, d);
        give_back(*q, std::move(m), now);
      }
      break;
    }
    case Outcome::dead_letter:
      q->unhold(m.payload().size());
      dead_letter(*q, std::move(m), proto::kDeadReasonRejected, now);
      break;
  }
  return q;
}

void Queues::give_back(Queue& q, HeldMessage&& m, Clock::time_point now) {
  const std::uint16_t max = q.options().max_deliveries;
  if (max != 0 && m.deliveries >= max) {
    q.unhold(m.payload().size());
    dead_letter(q, std::move(m), proto::kDeadReasonMaxDeliveries, now);
    return;
  }
  try {
    q.put_back(std::move(m));
  } catch (const std::bad_alloc&) {
    q.unhold(m.payload().size());
    release_held(m);
    ++q.counters().dropped_total;
  }
}

void Queues::dead_letter(Queue& q, HeldMessage&& m, std::string_view reason,
                         Clock::time_point now) {
  const std::string& key = q.options().dead_letter;
  Queue* target = nullptr;
  bool created = false;
  if (!key.empty() && dead_letter_hops_ < kMaxDeadLetterHops && m.meta.request_id == 0) {
    target = find_mutable(key);
    if (!target) {
      target = create(key, nullptr, nullptr);  // charged to nobody, like the queue's options
      created = true;
    }
  }
  if (!target || target == &q) {
    release_held(m);
    ++q.counters().dropped_total;
    return;
  }
  // The broker's headers replace those of an earlier hop; the sender's stay, up to a
  // sender's share (a message journaled before the share was 28 entries may hold more), so
  // that the block stays one every client reads.
  std::vector<std::byte> headers;
  proto::HeaderReader r(m.headers());
  std::size_t kept = 0;
  for (proto::HeaderEntry e; r.next(e) && kept < proto::kMaxSenderHeaders;) {
    if (e.key.starts_with(proto::kReservedHeaderPrefix)) continue;
    proto::append_header(headers, e.key, e.value);
    ++kept;
  }
  proto::append_header(headers, proto::kHeaderDeadReason, reason);
  proto::append_header(headers, proto::kHeaderDeadQueue, q.key());
  proto::append_header(headers, proto::kHeaderDeadCount, std::to_string(m.deliveries));
  // The sender's quota gives the message up before it is charged for the copy (a sender at
  // its quota must not lose its dead letters for it); the region reference stays until the
  // copy holds its own.
  const std::uint32_t uid = m.meta.sender.uid;
  UidUsage& usage = core_.accounting.of(uid);
  usage.queued_bytes -= m.payload().size();
  --usage.queued_messages;
  ++dead_letter_hops_;
  // It keeps its priority; its time to live does not follow it (the dead-letter queue's
  // own default applies), or an expired message would expire again at once.
  MessageProps props(headers);
  props.priority = m.meta.priority;
  const SendOutcome out =
      enqueue_as(*target, 0, m.meta.sender, nullptr, m.payload(), now, 0, 0, m.meta.region, props);
  --dead_letter_hops_;
  core_.accounting.forget_if_unused(uid);
  if (m.meta.region) core_.regions.drop_message_ref(m.meta.region.id);
  if (out.result == SendResult::accepted) {
    ++q.counters().dead_lettered_total;
  } else {
    ++q.counters().dropped_total;
  }
  // Only a queue made here can be collected here: one that existed may be in a caller's
  // list of queues to serve or collect.
  if (created) collect_if_idle(*target);
}

void Queues::overflow_to_dead_letter(Queue& q, Clock::time_point now) {
  const StoredMessage f = q.front();
  if (f.meta.request_id != 0) {
    drop_oldest(q);
    return;
  }
  HeldMessage m;
  try {
    m = HeldMessage(f);
  } catch (const std::bad_alloc&) {
    drop_oldest(q);
    return;
  }
  q.pop();
  dead_letter(q, std::move(m), proto::kDeadReasonOverflow, now);
}

Settled Queues::unsettled(const Peer& p, std::uint64_t tag) const {
  const auto& t = p.queues.timed_out;
  if (std::find(t.begin(), t.end(), tag) != t.end()) {
    return {Errc::delivery_timed_out,
            "delivery " + std::to_string(tag) +
                " was not settled within its queue's ack timeout and went back to the queue"};
  }
  return {Errc::unknown_delivery, "delivery " + std::to_string(tag) +
                                      " is not held by this connection (never made to it, or "
                                      "settled already)"};
}

void Queues::after_settle(std::vector<Queue*>& touched, Clock::time_point now) {
  unique_queues(touched);
  for (Queue* q : touched) {
    // Room came back (held messages count against the queue's limits): blocked producers
    // retry. Credit came back (a subscription's prefetch, the connection's max_unacked),
    // or a message did: the waiters may take more. serve_waiters collects what it empties.
    rearm_expiry(*q);
    space_freed(*q);
    if (q->depth() > 0) {
      serve_waiters(*q, now);
    } else {
      collect_if_idle(*q);
    }
  }
}

Settled Queues::settle_tags(Peer& p, std::uint64_t tag, bool multiple, Outcome outcome,
                            Clock::time_point now, std::uint32_t delay_ms) {
  HeldMap& held = p.queues.held;
  std::vector<Queue*> touched;
  // A connection at max_unacked may have receives waiting on other queues too: they have
  // credit again.
  if (held.size() >= core_.limits.max_unacked) {
    for (const auto& [q, count] : p.queues.waiting_in)
      if (!q->is_inbox()) touched.push_back(q);
  }
  if (!multiple) {
    auto it = held.find(tag);
    if (it == held.end()) return unsettled(p, tag);
    if (Queue* q = settle(p, it, outcome, now, delay_ms)) touched.push_back(q);
  } else {
    const auto end = held.upper_bound(tag);
    if (held.begin() == end) return unsettled(p, tag);
    while (held.begin() != end) {
      if (Queue* q = settle(p, held.begin(), outcome, now, delay_ms)) touched.push_back(q);
    }
  }
  after_settle(touched, now);
  return {};
}

Settled Queues::ack(Peer& p, std::uint64_t tag, bool multiple, Clock::time_point now) {
  return settle_tags(p, tag, multiple, Outcome::acked, now, 0);
}

Settled Queues::nack(Peer& p, std::uint64_t tag, bool multiple, proto::NackAction action,
                     std::uint32_t delay_ms, Clock::time_point now) {
  Outcome o = Outcome::requeue;
  if (action == proto::NackAction::dead_letter) o = Outcome::dead_letter;
  if (action == proto::NackAction::requeue_after && delay_ms != 0) o = Outcome::delay;
  return settle_tags(p, tag, multiple, o, now, delay_ms);
}

Settled Queues::extend(Peer& p, std::uint64_t tag, std::uint32_t extend_ms, Clock::time_point now) {
  auto it = p.queues.held.find(tag);
  if (it == p.queues.held.end()) return unsettled(p, tag);
  InFlight& f = it->second;
  const std::uint32_t ms =
      extend_ms != 0 ? extend_ms : (f.queue ? f.queue->options().ack_timeout_ms : 0);
  if (ms == 0) return {};  // no timeout runs, none is asked for
  if (f.has_deadline) {
    spare_deadlines_.erase(deadlines_, f.deadline);
    f.has_deadline = false;
  }
  if (!f.queue) return {};
  try {
    f.deadline = spare_deadlines_.insert_mapped(
        deadlines_, now + std::chrono::milliseconds(ms),
        QueueDeadline{f.queue, QueueDeadline::Kind::ack, {}, p.id.client_id, tag});
    f.has_deadline = true;
  } catch (const std::bad_alloc&) {
    return {Errc::internal_error, "the broker has no memory left for a new deadline"};
  }
  return {};
}

void Queues::return_held(Peer& p, Clock::time_point now) {
  // Each goes to the head of its queue (give_back sorts them among those back already by
  // their first delivery order); serving them to others waits until all are back.
  std::vector<Queue*> touched;
  while (!p.queues.held.empty()) {
    if (Queue* q = settle(p, p.queues.held.begin(), Outcome::requeue, now)) touched.push_back(q);
  }
  after_settle(touched, now);
}

void Queues::expire_ack(const QueueDeadline& d, Clock::time_point now) {
  Peer* p = core_.peers.find(d.peer);
  auto it = p ? p->queues.held.find(d.tag) : HeldMap::iterator();
  if (!p || it == p->queues.held.end()) {  // never: settling erases the deadline
    spare_deadlines_.erase(deadlines_, deadlines_.begin());
    return;
  }
  auto& t = p->queues.timed_out;
  t.push_back(d.tag);
  if (t.size() > QueuePeer::kRecentTimeouts) t.pop_front();
  std::vector<Queue*> touched;
  if (Queue* q = settle(*p, it, Outcome::requeue, now, 0)) touched.push_back(q);
  after_settle(touched, now);
}

void Queues::expire_delayed(Queue& q, Clock::time_point now) {
  HeldMessage m = q.take_delayed();
  if (m.meta.expired(now)) {
    // Its time to live ended while it waited: it never becomes deliverable.
    q.unhold(m.payload().size());
    ++q.counters().expired_total;
    if (q.options().dead_letter_expired) {
      dead_letter(q, std::move(m), proto::kDeadReasonExpired, now);
    } else {
      release_held(m);
    }
  } else {
    give_back(q, std::move(m), now);
  }
  std::vector<Queue*> touched{&q};
  after_settle(touched, now);
}

void Queues::orphan_held(Queue& q) {
  core_.peers.for_each([&](PeerId, Peer& p) {
    for (auto& [tag, f] : p.queues.held) {
      if (f.queue != &q) continue;
      f.queue = nullptr;
      if (f.has_deadline) spare_deadlines_.erase(deadlines_, f.deadline);
      f.has_deadline = false;
      q.unhold(f.message.payload().size());
    }
  });
  for (auto it = deadlines_.begin(); it != deadlines_.end();) {
    const auto next = std::next(it);
    if (it->second.queue == &q && it->second.kind == QueueDeadline::Kind::delayed) {
      spare_deadlines_.erase(deadlines_, it);
    }
    it = next;
  }
  while (q.delayed() > 0) {
    const HeldMessage m = q.take_delayed();
    release_held(m);
    q.unhold(m.payload().size());
    ++q.counters().dropped_total;
  }
}

void Queues::subscribe(PeerId peer, Peer& p, std::uint64_t correlation, std::string_view key,
                       std::uint32_t prefetch, bool ack, Clock::time_point now) {
  SendOutcome why;
  Queue* q = get_or_create(key, &why, &p.id);
  if (!q) {
    sink_.fail(peer, correlation, why.error, why.text);
    return;
  }
  const Limits& limits = core_.limits;
  Waiter w{peer, correlation, 1, false, ack, true};
  w.prefetch = prefetch == 0 ? limits.default_prefetch : std::min(prefetch, limits.max_unacked);
  if (add_wait(*q, p, w, -1, now) && q->depth() > 0) {
    serve_waiters(*q, now);
  } else {
    collect_if_idle(*q);
  }
}

bool Queues::unsubscribe(PeerId peer, Peer& p, std::uint64_t subscription, Clock::time_point now) {
  for (const auto& [q, count] : p.queues.waiting_in) {
    auto& ws = q->waiters();
    for (auto it = ws.begin(); it != ws.end(); ++it) {
      if (it->subscription && it->peer == peer && it->correlation == subscription) {
        Queue* queue = q;  // remove_waiter edits waiting_in
        remove_waiter(*queue, it);
        if (queue->is_inbox()) return true;
        // A single-active-consumer queue's next subscription takes over.
        if (queue->options().single_active_consumer && queue->depth() > 0) {
          serve_waiters(*queue, now);
        } else {
          collect_if_idle(*queue);
        }
        return true;
      }
    }
  }
  return false;
}

}  // namespace qbus::broker
