#include "broker/core.hpp"

#include <sys/random.h>
#include <unistd.h>

#include <chrono>

namespace qbus::broker {

namespace {

std::uint64_t random_incarnation() {
  std::uint64_t v = 0;
  // Blocking until the pool is ready: a guess that repeats across boots (a clock not set
  // yet, the same pid) could give a new message the id of a recovered one.
  if (::getrandom(&v, sizeof v, 0) == static_cast<ssize_t>(sizeof v)) return v;
  // Only without getrandom (ENOSYS): distinct enough from the broker's earlier lives.
  const auto now = std::chrono::system_clock::now().time_since_epoch().count();
  return static_cast<std::uint64_t>(now) * 0x9e3779b97f4a7c15ULL ^
         static_cast<std::uint64_t>(::getpid());
}

}  // namespace

MessageIds::MessageIds() : MessageIds(random_incarnation()) {}

SendOutcome rejected(Errc code, std::string text) {
  return SendOutcome{SendResult::rejected, code, std::move(text)};
}

SendOutcome unknown_peer() {
  return rejected(Errc::internal_error, "unknown peer");
}

SendOutcome Core::quota_refusal(std::uint32_t uid, const UidUsage& usage, std::size_t bytes) const {
  if (usage.queued_bytes + bytes > limits.uid_max_queued_bytes) {
    return rejected(Errc::quota_exceeded, "uid " + std::to_string(uid) + " already has " +
                                              std::to_string(usage.queued_bytes) +
                                              " bytes queued (limit " +
                                              std::to_string(limits.uid_max_queued_bytes) + ")");
  }
  return rejected(Errc::quota_exceeded, "uid " + std::to_string(uid) + " already has " +
                                            std::to_string(usage.queued_messages) +
                                            " messages queued (limit " +
                                            std::to_string(limits.uid_max_queued_messages) + ")");
}

namespace {

std::string target_name(proto::TargetKind kind, std::uint64_t target) {
  return (kind == proto::TargetKind::pid ? "pid " : "client ") + std::to_string(target);
}

}  // namespace

bool Core::direct_permitted(Peer& from, const Inbox& to, proto::TargetKind kind,
                            std::uint64_t target) {
  const PeerId owner = to.owner();
  PolicyCache& cache = from.policy;
  if (cache.generation != policy_generation) cache.reset(policy_generation);
  auto it = cache.direct.find(owner);
  if (it != cache.direct.end() && it->second) return true;
  // Every member of an inbox is connected, so its owner is a peer.
  const Peer& receiver = *peers.find(owner);
  // A denial is worked out again for its rule, as for keys (Broker::permitted): rare.
  const Decision d =
      policy->decide_direct(Principal{from.id.uid, from.id.gid, from.groups},
                            Principal{receiver.id.uid, receiver.id.gid, receiver.groups});
  if (it == cache.direct.end()) {
    if (cache.direct.size() >= PolicyCache::kMaxEntries) cache.direct.clear();
    cache.direct.emplace(owner, d.allowed);
  }
  if (!d.allowed) {
    sink.denied(from.id.client_id, Operation::send_direct,
                target_name(kind, target) + " (uid " + std::to_string(receiver.id.uid) + ")",
                d.rule);
  }
  return d.allowed;
}

SendOutcome Core::direct_denied(proto::TargetKind kind, std::uint64_t target) {
  return rejected(Errc::permission_denied,
                  "send_direct to " + target_name(kind, target) + " denied by policy");
}

}  // namespace qbus::broker
