// The router: each call goes to the registry that handles it; what spans registries (a
// peer's arrival and departure, deadlines, shutdown) is a fixed sequence of calls on them.
#include "broker/broker.hpp"

#include <algorithm>

namespace qbus::broker {

Errc Broker::connect(PeerId peer, const Identity& id, Clock::time_point now,
                     std::span<const std::uint32_t> groups) {
  if (core_.peers.contains(peer) || id.client_id != peer) return Errc::internal_error;
  if (core_.peers.size() >= core_.limits.max_connections) return Errc::too_many_connections;
  auto& usage = core_.accounting.of(id.uid);
  if (usage.connections >= core_.limits.uid_max_connections) {
    core_.accounting.forget_if_unused(id.uid);
    return Errc::too_many_connections;
  }
  ++usage.connections;
  Peer& p = core_.peers.add(peer, id);
  p.groups.assign(groups.begin(), groups.begin() + std::min(groups.size(), kMaxPeerGroups));
  inboxes_.join(peer, p, now);
  return Errc::ok;
}

void Broker::disconnect(PeerId peer, Clock::time_point now) {
  Peer* p = core_.peers.find(peer);
  if (!p) return;
  // Each registry forgets the peer. The order is what peers observe: requesters learn
  // their handler left before producers blocked on its process's inbox are resumed, and
  // its queues and requests are gone before its inbox drops what it did not take.
  queues_.forget(peer, *p, now);
  topics_.forget(*p);
  requests_.forget(peer, *p);
  inboxes_.forget(peer, *p);
  core_.regions.disconnect(peer);
  const auto uid = p->id.uid;
  core_.peers.erase(peer);
  --core_.accounting.of(uid).connections;
  core_.accounting.forget_if_unused(uid);
}

SendOutcome Broker::send_direct(PeerId from, const DirectSend& d, Bytes payload,
                                Clock::time_point now, RegionRef region) {
  Peer* sender = core_.peers.find(from);
  if (!sender) return unknown_peer();
  if (payload.size() > core_.limits.max_payload) {
    return rejected(Errc::payload_too_large, "payload of " + std::to_string(payload.size()) +
                                                 " bytes exceeds the inline limit of " +
                                                 std::to_string(core_.limits.max_payload));
  }
  if (d.in_reply_to != 0) {
    if (region) return rejected(Errc::unexpected_frame, "a reply carries its payload inline");
    return requests_.reply(from, *sender, d, payload);
  }
  if (Inbox* inbox = inboxes_.route(d, now)) {
    // Judged here, once the receiver is known; a send held for its pid is judged when the
    // process connects (Inboxes::deliver_parked).
    if (core_.policy && !core_.direct_permitted(*sender, *inbox, d.kind, d.target)) {
      return Core::direct_denied(d.kind, d.target);
    }
    return queues_.enqueue(inbox->queue, from, *sender, payload, now, 0, 0, region, d.headers);
  }
  return inboxes_.park(from, *sender, d, payload, now, region);
}

void Broker::claim_inbox(PeerId peer) {
  if (Peer* p = core_.peers.find(peer)) inboxes_.claim(peer, *p);
}

void Broker::process_exited(PeerId peer, Clock::time_point now) {
  Peer* p = core_.peers.lookup(peer);
  if (!p) return;
  inboxes_.process_exited(*p);
  queues_.return_held(*p, now);
}

std::size_t Broker::inbox_depth(PeerId peer) const {
  const Peer* p = core_.peers.find(peer);
  return p ? Inboxes::depth(*p) : 0;
}

bool Broker::decide_and_cache(Peer& p, Operation op, std::string_view key) {
  PolicyCache& cache = p.policy;
  if (cache.generation != core_.policy_generation) cache.reset(core_.policy_generation);
  const auto known = static_cast<std::uint16_t>(1u << (2 * static_cast<unsigned>(op)));
  const auto allowed = static_cast<std::uint16_t>(known << 1);
  const Principal who{p.id.uid, p.id.gid, p.groups};
  PolicyCache::Map::value_type* entry = cache.last;
  if (!entry || entry->first != key) {
    auto it = cache.decided.find(key);
    entry = it == cache.decided.end() ? nullptr : &*it;
  }
  if (entry && (entry->second & known)) {
    cache.last = entry;
    if (entry->second & allowed) return true;
    // The cache keeps only the verdict; a denial is rare, so which rule decided is worked
    // out again rather than stored for every key.
    core_.sink.denied(p.id.client_id, op, key, core_.policy->decide(op, who, key).rule);
    return false;
  }
  const Decision d = core_.policy->decide(op, who, key);
  if (!entry) {
    if (cache.decided.size() >= PolicyCache::kMaxEntries) cache.decided.clear();
    entry = &*cache.decided.emplace(std::string(key), 0).first;
  }
  entry->second |= known | (d.allowed ? allowed : 0);
  cache.last = entry;
  if (!d.allowed) core_.sink.denied(p.id.client_id, op, key, d.rule);
  return d.allowed;
}

SendOutcome Broker::denied(Operation op, std::string_view key, std::string_view what) {
  // By Operation: send, receive, declare, request, send_direct, manage.
  static constexpr std::string_view kPreposition[] = {" to", " from", " of", " to", " to", " of"};
  static_assert(std::size(kPreposition) == static_cast<std::size_t>(Operation::manage) + 1);
  return rejected(Errc::permission_denied,
                  std::string(operation_name(op)) +
                      std::string(kPreposition[static_cast<unsigned>(op)]) + " " +
                      std::string(what) + " '" + std::string(key) + "' denied by policy");
}

void Broker::refuse_receive(PeerId peer, std::uint64_t correlation, std::string_view key) {
  core_.sink.fail(peer, correlation, Errc::permission_denied,
                  denied(Operation::receive, key, "queue").text);
}

SendOutcome Broker::request(PeerId from, std::uint64_t correlation, std::string_view key,
                            Bytes payload, std::int32_t timeout_ms, Clock::time_point now,
                            Bytes headers) {
  Peer* p = core_.peers.find(from);
  if (!p) return unknown_peer();
  if (core_.policy && !permitted(*p, Operation::request, key)) {
    return denied(Operation::request, key, "queue");
  }
  if (auto refusal = requests_.check_new(*p, correlation)) return *refusal;
  SendOutcome out;
  Queue* q = queues_.get_or_create(key, &out, &p->id);
  if (!q) return out;
  // Registered first: a waiting receiver may take the message inside enqueue().
  auto req = requests_.open(*p, correlation);
  out = queues_.enqueue(*q, from, *p, payload, now, correlation, req->second.seq, {}, headers);
  queues_.collect_if_idle(*q);
  if (out.result != SendResult::accepted) {
    requests_.cancel(*p, req);
    return out;
  }
  requests_.arm(from, req, timeout_ms, now);
  return out;
}

Errc Broker::declare(PeerId from, std::string_view key, const QueueOptions& requested,
                     std::string& text) {
  Peer* p = core_.peers.lookup(from);
  if (!p) {
    text = "unknown peer";
    return Errc::internal_error;
  }
  if (core_.policy && !permitted(*p, Operation::declare, key)) {
    text = denied(Operation::declare, key, "queue").text;
    return Errc::permission_denied;
  }
  // The queue's dead letters are sent in the declarer's stead: it must be allowed to send
  // there itself.
  const std::string& dlq = requested.dead_letter;
  if (core_.policy && !dlq.empty() && !permitted(*p, Operation::send, dlq)) {
    text = "dead-letter queue of '" + std::string(key) +
           "': " + denied(Operation::send, dlq, "queue").text;
    return Errc::permission_denied;
  }
  // Adopting other options on a live queue would change what its owner's sends get (a
  // drop_oldest queue of one answers every confirmed send OK and drops all but one).
  if (const Queue* q = queues_.changing_options(key, requested); q && !may_manage(*p, *q)) {
    text = no_manage("declare of queue '" + q->key() + "' with other options", *q);
    return Errc::permission_denied;
  }
  return queues_.declare(from, *p, key, requested, text);
}

bool Broker::may_manage(Peer& p, const Queue& q) {
  if (p.id.uid == 0 || q.keeper().owner == p.id.uid) return true;
  return core_.policy && permitted(p, Operation::manage, q.key());
}

std::string Broker::no_manage(std::string_view what, const Queue& q) const {
  const std::optional<std::uint32_t>& owner = q.keeper().owner;
  std::string text = std::string(what) + ": owned by " +
                     (owner ? "uid " + std::to_string(*owner) : std::string("the configuration"));
  if (core_.policy) text += "; no policy rule grants manage of it";
  return text;
}

DropOutcome Broker::drop_for(PeerId peer, std::string_view key, bool remove) {
  const std::string_view what = remove ? "delete" : "purge";
  Peer* p = core_.peers.lookup(peer);
  if (!p) return {Errc::internal_error, 0, "unknown peer"};
  const Queue* q = queues_.find(key);
  if (!q)
    return {Errc::no_such_queue, 0, std::string(what) + ": no queue '" + std::string(key) + "'"};
  if (!may_manage(*p, *q)) {
    return {Errc::permission_denied, 0,
            no_manage(std::string(what) + " of queue '" + std::string(key) + "'", *q)};
  }
  // The operator's actions themselves: the same effects whoever asks.
  const auto dropped = remove ? this->remove(key) : purge(key);
  return {Errc::ok, dropped.value_or(0), {}};
}

Errc Broker::declare_configured(std::string_view key, const QueueOptions& requested,
                                std::string& text) {
  return queues_.declare_configured(key, requested, text);
}

bool Broker::release_configured(std::string_view key, Clock::time_point now) {
  return queues_.release_configured(key, now);
}

void Broker::output_ready(PeerId peer, Clock::time_point now) {
  if (Peer* p = core_.peers.lookup(peer)) {
    queues_.output_ready(*p, now);
    if (!p->topics.subscriptions.empty()) topics_.output_ready(*p);
  }
}

std::optional<std::size_t> Broker::purge(std::string_view key) {
  return queues_.purge(key);
}

std::optional<std::size_t> Broker::remove(std::string_view key) {
  return queues_.remove(key);
}

void Broker::expire(Clock::time_point now) {
  // One deadline at a time, the earliest over all registries first, as if they shared one
  // index (between equal times: queues, requests, inboxes).
  while (true) {
    std::optional<Clock::time_point> when = queues_.next_deadline();
    int which = 0;
    if (auto r = requests_.next_deadline(); r && (!when || *r < *when)) {
      when = r;
      which = 1;
    }
    if (auto i = inboxes_.next_deadline(); i && (!when || *i < *when)) {
      when = i;
      which = 2;
    }
    if (!when || *when > now) return;
    if (which == 0) {
      queues_.expire_first(now);
    } else if (which == 1) {
      requests_.expire_first();
    } else {
      inboxes_.expire_first();
    }
  }
}

std::optional<Clock::time_point> Broker::next_deadline() const {
  std::optional<Clock::time_point> when = queues_.next_deadline();
  for (auto other : {requests_.next_deadline(), inboxes_.next_deadline()})
    if (other && (!when || *other < *when)) when = other;
  return when;
}

Settled Broker::ack(PeerId peer, std::uint64_t tag, bool multiple, Clock::time_point now) {
  Peer* p = core_.peers.lookup(peer);
  if (!p) return {Errc::internal_error, "unknown peer"};
  return queues_.ack(*p, tag, multiple, now);
}

Settled Broker::nack(PeerId peer, std::uint64_t tag, bool multiple, proto::NackAction action,
                     std::uint32_t delay_ms, Clock::time_point now) {
  Peer* p = core_.peers.lookup(peer);
  if (!p) return {Errc::internal_error, "unknown peer"};
  return queues_.nack(*p, tag, multiple, action, delay_ms, now);
}

Settled Broker::extend(PeerId peer, std::uint64_t tag, std::uint32_t extend_ms,
                       Clock::time_point now) {
  Peer* p = core_.peers.lookup(peer);
  if (!p) return {Errc::internal_error, "unknown peer"};
  return queues_.extend(*p, tag, extend_ms, now);
}

void Broker::subscribe(PeerId peer, std::uint64_t correlation, std::string_view key,
                       std::uint32_t prefetch, bool ack, Clock::time_point now) {
  Peer* p = core_.peers.find(peer);
  if (!p) return;
  if (core_.policy && !permitted(*p, Operation::receive, key)) {
    return refuse_receive(peer, correlation, key);
  }
  queues_.subscribe(peer, *p, correlation, key, prefetch, ack, now);
}

bool Broker::unsubscribe(PeerId peer, std::uint64_t subscription, Clock::time_point now) {
  Peer* p = core_.peers.find(peer);
  return p && (queues_.unsubscribe(peer, *p, subscription, now) ||
               topics_.unsubscribe(*p, subscription));
}

SendOutcome Broker::publish(PeerId from, const PublishSend& m, Clock::time_point) {
  Peer* p = core_.peers.lookup(from);
  if (!p) return unknown_peer();
  if (m.payload.size() > core_.limits.max_payload) {
    return rejected(Errc::payload_too_large, "payload of " + std::to_string(m.payload.size()) +
                                                 " bytes over max_payload " +
                                                 std::to_string(core_.limits.max_payload));
  }
  if (core_.policy && !permitted(*p, Operation::send, m.subject)) {
    return denied(Operation::send, m.subject, "subject");
  }
  return topics_.publish(from, *p, m);
}

SendOutcome Broker::subscribe_subject(PeerId peer, const SubjectSubscribe& s, bool confirm) {
  Peer* p = core_.peers.find(peer);
  if (!p) return unknown_peer();
  if (core_.policy && !permitted(*p, Operation::receive, s.pattern)) {
    return denied(Operation::receive, s.pattern, "subjects");
  }
  return topics_.subscribe(peer, *p, s, confirm);
}

void Broker::fail_all_waiters(Errc code, std::string_view text) {
  // The order of the answers is observable on a connection that waits in several ways:
  // receives on queues, then on inboxes, then requests, then parked sends.
  queues_.fail_all(code, text);
  inboxes_.fail_waiters(code, text);
  requests_.fail_all(code, text);
  inboxes_.fail_parked(code, text);
}

}  // namespace qbus::broker
