// The state every registry of the broker core shares: the limits, the Sink, the peers, the
// region table, per-uid usage, the totals and the stores' kept-chunk budget, with the
// per-uid message charges that queues and parked sends both take. Owned by the Broker
// (its first member, so it outlives the registries); each registry holds a reference.
//
// Thread-safety: none; the Broker's one thread.
#pragma once

#include <memory>
#include <optional>

#include "broker/accounting.hpp"
#include "broker/journal.hpp"
#include "broker/message_ids.hpp"
#include "broker/message_store.hpp"
#include "broker/outcome.hpp"
#include "broker/peer.hpp"
#include "broker/regions.hpp"

namespace qbus::broker {

struct Core {
  // `backing` must outlive the Core.
  Core(const Limits& l, Sink& s, RegionBacking& backing)
      : limits(l), sink(s), regions(l.regions, backing) {}
  Core(const Core&) = delete;
  Core& operator=(const Core&) = delete;

  // The refusal when queuing `bytes` more would exceed the sender's uid quota.
  std::optional<SendOutcome> over_quota(const Identity& sender, std::size_t bytes) const {
    const UidUsage* usage = accounting.find(sender.uid);
    if (!usage) return std::nullopt;
    if (usage->queued_bytes + bytes > limits.uid_max_queued_bytes ||
        usage->queued_messages >= limits.uid_max_queued_messages) {
      return quota_refusal(sender.uid, *usage, bytes);
    }
    return std::nullopt;
  }
  void charge(const Identity& sender, std::size_t bytes) {
    UidUsage& usage = accounting.of(sender.uid);
    usage.queued_bytes += bytes;
    ++usage.queued_messages;
  }
  // Gives back one message of `bytes` that charge() took from `uid`.
  void uncharge(std::uint32_t uid, std::size_t bytes) {
    UidUsage& usage = accounting.of(uid);
    usage.queued_bytes -= bytes;
    --usage.queued_messages;
    accounting.forget_if_unused(uid);
  }
  // Gives back what a stored message was charged (its uid's usage, its region reference).
  void release(const MessageMeta& m, std::size_t payload_size) {
    uncharge(m.sender.uid, payload_size);
    if (m.region) regions.drop_message_ref(m.region.id);
    if (m.journal_id != 0 && journal) journal->settled(m.journal_id);
  }

  // Whether the policy (which must be set) lets `from` send a direct message into `to`,
  // judged against the inbox's owner (the connection that receives from it), from `from`'s
  // cache when it holds the answer for this policy generation. A denial is reported to the
  // Sink with the target as the sender named it (`kind`, `target`) and its uid.
  bool direct_permitted(Peer& from, const Inbox& to, proto::TargetKind kind, std::uint64_t target);
  // The permission_denied a denied direct message gets, naming the target.
  static SendOutcome direct_denied(proto::TargetKind kind, std::uint64_t target);

  Limits limits;
  Sink& sink;
  RegionTable regions;
  PeerTable peers;
  Accounting accounting;
  BrokerTotals totals;
  // The qbus-id of the next message stored in a queue declared with message_ids.
  MessageIds message_ids;
  // What the empty stores of every queue and inbox may keep; the registries holding the
  // stores are destroyed before the Core.
  KeptChunkBudget chunk_budget;
  // The access policy; null when none is configured (everything allowed, nothing asked).
  // Replacing it bumps the generation, which voids every peer's PolicyCache.
  std::unique_ptr<const Policy> policy;
  std::uint64_t policy_generation = 1;
  // The journal of durable queues (broker/journal.hpp); null: none, and a durable
  // declaration is refused (storage_failed).
  Journal* journal = nullptr;
  // Why there is no journal (the state directory cannot be used), for the refusals.
  std::string no_journal = "qbusd has no journal (no state directory)";

 private:
  SendOutcome quota_refusal(std::uint32_t uid, const UidUsage& usage, std::size_t bytes) const;
};

}  // namespace qbus::broker
