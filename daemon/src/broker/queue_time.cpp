// The queue registry's time (proto/PROTOCOL.md 17.8): delayed sends, which wait held until
// they are due, and messages that expire. A message expires when it is first in line in
// its queue, at its expiry or as soon as what was ahead of it leaves: one deadline per
// queue, never a scan, and never a message handed over after its time.
#include <new>

#include "broker/core.hpp"
#include "broker/queues.hpp"
#include "broker/requests.hpp"
#include "qbus/proto/headers.hpp"

namespace qbus::broker {

void Queues::put_delayed(Queue& q, const MessageMeta& meta, Bytes payload, Bytes headers,
                         Clock::time_point until) {
  HeldMessage m(StoredMessage{meta, payload, headers, 0, 0});
  const auto d = spare_deadlines_.insert_mapped(
      deadlines_, until, QueueDeadline{&q, QueueDeadline::Kind::delayed, {}, 0, 0});
  try {
    q.put_aside(until, std::move(m));
  } catch (const std::bad_alloc&) {
    spare_deadlines_.erase(deadlines_, d);
    throw;
  }
  // Held until due: it counts against the queue's limits like a message in flight.
  q.hold(payload.size());
  ++q.counters().enqueued_total;
}

void Queues::expire_front_while_due(Queue& q, Clock::time_point now) {
  bool any = false;
  while (q.expiring() != 0 && q.depth() != 0 && q.front().meta.expired(now)) {
    expire_front(q, now);
    any = true;
  }
  if (!any) return;
  rearm_expiry(q);
  space_freed(q);
}

void Queues::expire_front(Queue& q, Clock::time_point now) {
  const StoredMessage f = q.front();
  ++q.counters().expired_total;
  // A request's requester hears of it; it is never dead-lettered (nobody could reply).
  if (f.meta.request_id == 0 && q.options().dead_letter_expired) {
    bool copied = true;
    HeldMessage m;
    try {
      m = HeldMessage(f);
    } catch (const std::bad_alloc&) {
      copied = false;  // no memory for the copy: dropped instead
    }
    if (copied) {
      q.pop();
      dead_letter(q, std::move(m), proto::kDeadReasonExpired, now);
      return;
    }
  }
  const MessageMeta meta = f.meta;
  core_.release(meta, f.payload.size());
  q.pop();
  if (meta.request_id != 0) {
    requests_.abandon(
        meta, Errc::timeout,
        "the request's time to live in queue '" + q.key() + "' ended before a receiver took it");
  }
}

void Queues::set_expiry_deadline(Queue& q) {
  ExpiryDeadline& e = q.expiry();
  Clock::time_point at{};
  if (q.expiring() != 0 && q.depth() != 0) at = q.front().meta.expires;
  if (e.armed) {
    if (e.at == at) return;
    spare_deadlines_.erase(deadlines_, e.it);
    e.armed = false;
  }
  if (at == Clock::time_point{}) return;
  try {
    e.it = spare_deadlines_.insert_mapped(deadlines_, at,
                                          QueueDeadline{&q, QueueDeadline::Kind::expiry, {}, 0, 0});
  } catch (const std::bad_alloc&) {
    // Without its deadline an expired message still never reaches a receiver: it leaves
    // when the queue is next served.
    return;
  }
  e.armed = true;
  e.at = at;
}

void Queues::on_expiry_deadline(Queue& q, Clock::time_point now) {
  spare_deadlines_.erase(deadlines_, q.expiry().it);
  q.expiry().armed = false;
  expire_front_while_due(q, now);
  rearm_expiry(q);
  // Whoever waits may be served what is now first (receivers whose output was backed up
  // still are not); an emptied queue nobody holds is collected.
  if (q.depth() > 0 && !q.waiters().empty()) {
    serve_waiters(q, now);
  } else {
    collect_if_idle(q);
  }
}

const Waiter* Queues::active_consumer(Queue& q) {
  const Waiter*& a = q.active();
  if (!a) a = q.active_subscription();
  return a;
}

}  // namespace qbus::broker
