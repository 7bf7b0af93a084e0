// The queue registry's lifetime rules: declarations (by a connection or the configuration),
// the grace after a declarer leaves, and which uid a queue is charged to.
#include "broker/core.hpp"
#include "broker/queues.hpp"

namespace qbus::broker {
namespace {

QueueOptions fill_defaults(const QueueOptions& requested, const QueueOptions& defaults) {
  QueueOptions o = requested;
  if (o.max_messages == 0) o.max_messages = defaults.max_messages;
  if (o.max_bytes == 0) o.max_bytes = defaults.max_bytes;
  if (o.overflow == Overflow::use_default) o.overflow = defaults.overflow;
  if (o.priorities == 1) o.priorities = 0;  // one level either way
  return o;
}

std::string describe(const QueueOptions& o) {
  std::string s = "max_messages=" + std::to_string(o.max_messages) +
                  " max_bytes=" + std::to_string(o.max_bytes) +
                  " overflow=" + std::string(proto::overflow_name(o.overflow));
  if (o.ack_timeout_ms != 0) s += " ack_timeout_ms=" + std::to_string(o.ack_timeout_ms);
  if (o.max_deliveries != 0) s += " max_deliveries=" + std::to_string(o.max_deliveries);
  if (!o.dead_letter.empty()) s += " dead_letter=" + o.dead_letter;
  if (o.dead_letter_overflow) s += " dead_letter_overflow";
  if (o.default_ttl_ms != 0) s += " ttl_ms=" + std::to_string(o.default_ttl_ms);
  if (o.dead_letter_expired) s += " dead_letter_expired";
  if (o.priorities > 1) s += " priorities=" + std::to_string(o.priorities);
  if (o.single_active_consumer) s += " single_active_consumer";
  if (o.durable) s += " durable";
  if (o.message_ids) s += " message_ids";
  if (o.fsync != proto::Fsync::use_default) s += " fsync=" + std::string(fsync_name(o.fsync));
  return s;
}

bool same_options(const QueueOptions& a, const QueueOptions& b) {
  return a == b;
}

}  // namespace

Errc Queues::check_declared(const Queue& q, const QueueOptions& wanted, std::string& text) const {
  const auto& have = q.options();
  if (!same_options(have, wanted)) {
    text = "queue '" + q.key() + "' is already declared with " + describe(have);
    return Errc::queue_conflict;
  }
  return Errc::ok;
}

void Queues::declare_existing(Queue& q, const QueueOptions& wanted) {
  q.set_options(wanted);
  q.mark_declared();
  // Looser limits may make room for blocked producers.
  if (q.has_room_for(0)) space_freed(q);
}

const Queue* Queues::changing_options(std::string_view key, const QueueOptions& requested) const {
  const Queue* q = find(key);
  if (!q || q->declared()) return nullptr;  // a declared queue answers queue_conflict
  const bool same =
      same_options(q->options(), fill_defaults(requested, core_.limits.queue_defaults));
  return same ? nullptr : q;
}

Errc Queues::declare(PeerId from, Peer& p, std::string_view key, const QueueOptions& requested,
                     std::string& text) {
  const QueueOptions wanted = fill_defaults(requested, core_.limits.queue_defaults);
  Queue* q = find_mutable(key);
  if (q && q->declared()) {
    if (const Errc e = check_declared(*q, wanted, text); e != Errc::ok) return e;
  }
  if (wanted.durable && !(q && q->declared())) {
    if (const Errc e = journal_can_declare(key, text); e != Errc::ok) return e;
  }
  if (q && !q->keeper().permanent) {
    if (auto refusal = adopt(*q, from, p)) {
      text = std::move(refusal->text);
      return refusal->error;
    }
  }
  if (q) {
    if (!q->declared()) {
      declare_existing(*q, wanted);
      journal_declared(*q);
    }
    return Errc::ok;
  }
  SendOutcome why;
  q = get_or_create(key, &why, &p.id);
  if (!q) {
    text = why.text;
    return why.error;
  }
  q->set_options(wanted);
  q->mark_declared();
  q->keeper().declarer = from;
  p.queues.declared.push_back(q);
  journal_declared(*q);
  return Errc::ok;
}

Errc Queues::declare_configured(std::string_view key, const QueueOptions& requested,
                                std::string& text) {
  const QueueOptions wanted = fill_defaults(requested, core_.limits.queue_defaults);
  Queue* q = find_mutable(key);
  if (wanted.durable && !(q && q->declared())) {
    if (const Errc e = journal_can_declare(key, text); e != Errc::ok) return e;
  }
  // A durable queue the journal brought back, or whose declarer has gone, takes the
  // configuration's options: the configuration is what the operator changes.
  const bool taken_over = q && q->declared() && q->options().durable && q->keeper().declarer == 0 &&
                          !q->keeper().permanent;
  if (q) {
    if (q->declared() && !taken_over) {
      if (const Errc e = check_declared(*q, wanted, text); e != Errc::ok) return e;
    } else {
      declare_existing(*q, wanted);
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
  // The configuration takes the queue over: only root may change its options later, even
  // once a reload released it.
  q->keeper().owner.reset();
  journal_declared(*q);
  return Errc::ok;
}

bool Queues::release_configured(std::string_view key, Clock::time_point now) {
  Queue* q = find_mutable(key);
  if (!q || !q->keeper().permanent) return false;
  q->keeper().permanent = false;
  start_grace(*q, now);
  collect_if_idle(*q);
  return true;
}

std::optional<SendOutcome> Queues::adopt(Queue& q, PeerId peer, Peer& p) {
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
    p.queues.declared.push_back(&q);
  }
  return std::nullopt;
}

void Queues::drop_declarer(Queue& q) {
  QueueKeeper& k = q.keeper();
  if (k.declarer == 0) return;
  if (Peer* p = core_.peers.find(k.declarer)) std::erase(p->queues.declared, &q);
  k.declarer = 0;
}

void Queues::start_grace(Queue& q, Clock::time_point now) {
  stop_grace(q);
  // A durable queue outlives its declarer as it outlives qbusd: until it is deleted.
  if (q.options().durable) return;
  const std::uint32_t grace_ms = core_.limits.declared_queue_grace_ms;
  if (grace_ms == 0) {
    q.mark_undeclared();
    return;
  }
  q.keeper().grace =
      spare_deadlines_.insert_mapped(deadlines_, now + std::chrono::milliseconds(grace_ms),
                                     QueueDeadline{&q, QueueDeadline::Kind::grace, {}, 0, 0});
  q.keeper().grace_running = true;
}

void Queues::stop_grace(Queue& q) {
  QueueKeeper& k = q.keeper();
  if (!k.grace_running) return;
  k.grace_running = false;
  spare_deadlines_.erase(deadlines_, k.grace);
}

}  // namespace qbus::broker
