// The queue registry's durable queues (docs/journal.md): what it tells the journal, and
// how the journal's contents come back after a restart (recovery, before any client).
#include "broker/core.hpp"
#include "broker/queues.hpp"

namespace qbus::broker {

std::optional<SendOutcome> Queues::journal_refusal(Queue& q, RegionRef region) {
  std::string why;
  if (!core_.journal) {
    why = core_.no_journal;
  } else if (!core_.journal->unavailable().empty()) {
    why = core_.journal->unavailable();
  } else if (region && region.length > core_.limits.max_payload) {
    // The journal copies a region's bytes, and they come back inline after a restart.
    why = "a region payload of " + std::to_string(region.length) +
          " bytes is over the inline limit of " + std::to_string(core_.limits.max_payload) +
          " bytes that the journal copies";
  } else {
    return std::nullopt;
  }
  ++q.counters().rejected_total;
  return rejected(Errc::storage_failed, "durable queue '" + q.key() + "': " + why);
}

std::optional<SendOutcome> Queues::copy_region(Queue& q, RegionRef region) {
  if (core_.regions.read(region, region_copy_)) return std::nullopt;
  ++q.counters().rejected_total;
  return rejected(Errc::storage_failed,
                  "durable queue '" + q.key() + "': the region's bytes cannot be read");
}

std::uint64_t Queues::journal_store(Journal& journal, const Queue& q, const MessageMeta& meta,
                                    Bytes payload, const MessageProps& props,
                                    Clock::time_point now) {
  std::optional<Clock::time_point> due;
  if (props.delay_ms != 0) due = now + std::chrono::milliseconds(props.delay_ms);
  return journal.store(q.key(), meta, 0, meta.region ? Bytes(region_copy_) : payload, props.headers,
                       due);
}

Errc Queues::journal_can_declare(std::string_view key, std::string& text) const {
  const std::string& why = !core_.journal ? core_.no_journal : core_.journal->unavailable();
  if (why.empty()) return Errc::ok;
  text = "cannot declare durable queue '" + std::string(key) + "': " + why;
  return Errc::storage_failed;
}

void Queues::journal_declared(const Queue& q) {
  if (q.options().durable && core_.journal) {
    core_.journal->declare(q.key(), q.options(), q.keeper().owner);
  }
}

Queue* Queues::recover_queue(std::string_view key, const QueueOptions& options,
                             std::optional<std::uint32_t> owner, std::string& text) {
  Queue* q = find_mutable(key);
  if (!q) {
    SendOutcome why;
    Identity creator;
    if (owner) creator.uid = *owner;
    q = get_or_create(key, &why, owner ? &creator : nullptr);
    if (!q) {
      text = why.text;
      return nullptr;
    }
  }
  q->set_options(options);
  q->mark_declared();
  return q;
}

void Queues::recover_message(Queue& q, const RecoveredMessage& m, Clock::time_point now) {
  if (m.deliveries != 0) {
    // Handed over before the restart and never settled: it comes back as redelivered,
    // first in line as a NACKed message would.
    HeldMessage h(StoredMessage{m.meta, m.payload, m.headers, m.deliveries, 0});
    h.order = q.take_order(h.view());
    q.restore(std::move(h));
  } else if (m.due && *m.due > now) {
    put_delayed(q, m.meta, m.payload, m.headers, *m.due);
  } else {
    q.push(m.meta, m.payload, m.headers);
  }
  core_.charge(m.meta.sender, m.payload.size());
  ++core_.totals.messages_in;
  core_.totals.bytes_in += m.payload.size();
  rearm_expiry(q);
}

}  // namespace qbus::broker
