// The inbox registry: direct messages by process, inbox ownership and parked sends.
#include "broker/inboxes.hpp"

#include <algorithm>

#include "broker/core.hpp"
#include "broker/queues.hpp"

namespace qbus::broker {

Inbox* Inboxes::route(const DirectSend& d, Clock::time_point now) {
  if (d.kind == proto::TargetKind::pid) {
    auto it = newest_by_pid_.find(static_cast<std::uint32_t>(d.target));
    if (it == newest_by_pid_.end()) return nullptr;
    // The edge may not have handled the process's exit yet: ask now, or a message meant for
    // a later process with this pid could land with a connection the old one left behind.
    if (core_.sink.has_exited(it->second->members.front(), now)) {
      retire(it);
      return nullptr;
    }
    return it->second;
  }
  const Peer* target = core_.peers.find(d.target);
  return target ? target->inbox.inbox : nullptr;
}

void Inboxes::retire(PidIndex::iterator it) {
  Inbox* inbox = it->second;
  newest_by_pid_.erase(it);
  // Producers blocked on the inbox retry: routed afresh, those that named the pid learn
  // it is gone (those that named a client id block again if it is still full).
  queues_.space_freed(inbox->queue);
}

std::size_t Inboxes::depth(const Peer& p) {
  return p.inbox.inbox ? p.inbox.inbox->queue.depth() : 0;
}

void Inboxes::process_exited(Peer& p) {
  Inbox* inbox = p.inbox.inbox;
  if (!inbox) return;
  if (auto it = newest_by_pid_.find(inbox->pid);
      it != newest_by_pid_.end() && it->second == inbox) {
    retire(it);
  }
}

void Inboxes::join(PeerId peer, Peer& p, Clock::time_point now) {
  // Connections whose process cannot be named by pid get an inbox of their own, reachable
  // by client id only: TCP peers, peers in a pid namespace we cannot see (pid 0), a
  // connection whose process we could not verify while a verified one holds the pid, and
  // one whose process had exited by the time it was accepted.
  bool by_pid = !p.id.tcp && p.id.pid != 0;
  if (by_pid) {
    auto it = newest_by_pid_.find(p.id.pid);
    if (it != newest_by_pid_.end()) {
      Inbox* existing = it->second;
      if (existing->token == p.id.process_token) {
        p.inbox.inbox = existing;
        existing->members.push_back(peer);
        return;
      }
      // Different tokens: a newer process has the pid (the old one has exited), unless
      // this connection's token is unknown, which proves nothing.
      if (p.id.process_token == 0) by_pid = false;
    }
  }
  if (by_pid && core_.sink.has_exited(peer, now)) by_pid = false;
  const std::string name =
      by_pid ? "pid:" + std::to_string(p.id.pid) : "client:" + std::to_string(p.id.client_id);
  auto inbox = std::make_unique<Inbox>(name, core_.limits.inbox, p.id, core_.chunk_budget);
  Inbox* raw = inbox.get();
  inboxes_.emplace(raw, std::move(inbox));
  raw->members.push_back(peer);
  p.inbox.inbox = raw;
  if (by_pid) {
    newest_by_pid_[p.id.pid] = raw;
    deliver_parked(*raw, now);
  }
}

void Inboxes::forget(PeerId peer, Peer& p) {
  while (!p.inbox.parked.empty())
    drop_parked(p.inbox.parked.back());
  leave(peer, p);
}

void Inboxes::leave(PeerId peer, Peer& p) {
  Inbox* inbox = p.inbox.inbox;
  if (!inbox) return;
  p.inbox.inbox = nullptr;
  std::erase(inbox->members, peer);
  if (inbox->claimed_by == peer) inbox->claimed_by = 0;
  if (!inbox->members.empty()) return;
  // The process is gone: what it did not take is dropped, and producers blocked on its
  // full inbox retry (and learn there is no such peer any more).
  queues_.drain(inbox->queue);
  queues_.fail_waiters(inbox->queue, Errc::no_such_peer, "the inbox's process disconnected");
  queues_.space_freed(inbox->queue);
  if (auto it = newest_by_pid_.find(inbox->pid);
      it != newest_by_pid_.end() && it->second == inbox) {
    newest_by_pid_.erase(it);
  }
  inboxes_.erase(inbox);
}

void Inboxes::deliver_parked(Inbox& inbox, Clock::time_point now) {
  // Oldest first; drop_parked() erases the list (and the map entry) as it empties.
  while (true) {
    auto waiting = parked_by_pid_.find(inbox.pid);
    if (waiting == parked_by_pid_.end()) return;
    const auto it = waiting->second.begin();
    const PeerId from = it->from;
    const std::uint64_t corr = it->correlation;
    const bool confirm = it->confirm;
    const std::vector<std::byte> payload = it->payload;
    const std::vector<std::byte> headers = it->headers;
    const RegionRef region = it->meta.region;
    // Keeps the region alive between the parked message letting go and the inbox's taking.
    if (region) core_.regions.add_message_ref(region.id);
    drop_parked(it);
    Peer& sender = *core_.peers.find(from);
    // Its receiver is known only now. from = 0: a parked send cannot pause its producer,
    // so a full inbox refuses it.
    const auto by_pid = proto::TargetKind::pid;
    auto out =
        core_.policy && !core_.direct_permitted(sender, inbox, by_pid, inbox.pid)
            ? Core::direct_denied(by_pid, inbox.pid)
            : queues_.enqueue(inbox.queue, 0, sender, payload, now, 0, 0, region, Bytes(headers));
    if (region) core_.regions.drop_message_ref(region.id);
    if (out.result == SendResult::accepted) {
      if (confirm) core_.sink.confirm(from, corr);
    } else {
      core_.sink.fail(from, corr, out.error, out.text);
    }
  }
}

void Inboxes::drop_parked(ParkedList::iterator it) {
  deadlines_.erase(it->deadline);
  core_.release(it->meta, it->payload.size());
  if (Peer* p = core_.peers.find(it->from)) std::erase(p->inbox.parked, it);
  auto list = parked_by_pid_.find(it->pid);
  list->second.erase(it);
  if (list->second.empty()) parked_by_pid_.erase(list);
}

SendOutcome Inboxes::park(PeerId from, Peer& sender, const DirectSend& d, Bytes payload,
                          Clock::time_point now, RegionRef region) {
  const std::string who =
      (d.kind == proto::TargetKind::pid ? "process " : "client ") + std::to_string(d.target);
  if (d.kind != proto::TargetKind::pid || d.wait_ms <= 0) {
    return rejected(Errc::no_such_peer, "no " + who + " is connected");
  }
  std::vector<ParkedList::iterator>& parked = sender.inbox.parked;
  if (parked.size() >= core_.limits.max_parked_sends) {
    return rejected(Errc::too_many_requests, "this connection already has " +
                                                 std::to_string(parked.size()) +
                                                 " sends waiting for their process to connect");
  }
  if (auto refusal = core_.over_quota(sender.id, payload.size())) return *refusal;
  if (region) {
    if (auto s = core_.regions.add_message_ref(region.id); !s.ok()) {
      return rejected(s.error, s.text);
    }
  }
  Parked pk;
  pk.from = from;
  pk.correlation = d.correlation;
  pk.confirm = d.confirm;
  pk.pid = static_cast<std::uint32_t>(d.target);
  pk.meta.sender = sender.id;
  pk.meta.enqueued = now;
  pk.meta.region = region;
  pk.payload.assign(payload.begin(), payload.end());
  pk.headers.assign(d.headers.begin(), d.headers.end());
  core_.charge(sender.id, payload.size());
  auto& list = parked_by_pid_[pk.pid];
  auto it = list.insert(list.end(), std::move(pk));
  parked.push_back(it);
  it->deadline = deadlines_.emplace(now + std::chrono::milliseconds(d.wait_ms), it);
  return SendOutcome{SendResult::deferred, Errc::ok, {}};
}

void Inboxes::receive(PeerId peer, Peer& p, std::uint64_t correlation, std::uint32_t max_count,
                      std::int32_t timeout_ms, Clock::time_point now) {
  Inbox& inbox = *p.inbox.inbox;
  if (inbox.owner() != peer) {
    core_.sink.fail(peer, correlation, Errc::not_inbox_owner,
                    "client " + std::to_string(inbox.owner()) +
                        " of this process holds its inbox; send CLAIM_INBOX to take it over");
    return;
  }
  queues_.receive_from(inbox.queue, peer, p, correlation, max_count, timeout_ms, now);
}

void Inboxes::claim(PeerId peer, Peer& p) {
  Inbox& inbox = *p.inbox.inbox;
  const PeerId before = inbox.owner();
  inbox.claimed_by = peer;
  if (before == peer) return;
  // Receives the former owner left waiting can no longer be served.
  queues_.fail_waiters(inbox.queue, Errc::not_inbox_owner,
                       "client " + std::to_string(peer) + " claimed this process's inbox", peer);
}

void Inboxes::fail_waiters(Errc code, std::string_view text) {
  for (auto& [ptr, inbox] : inboxes_)
    queues_.fail_waiters(inbox->queue, code, text);
}

void Inboxes::fail_parked(Errc code, std::string_view text) {
  while (!parked_by_pid_.empty()) {
    const auto it = parked_by_pid_.begin()->second.begin();
    const PeerId from = it->from;
    const std::uint64_t corr = it->correlation;
    drop_parked(it);
    core_.sink.fail(from, corr, code, text);
  }
}

void Inboxes::expire_first() {
  const auto it = deadlines_.begin()->second;
  const PeerId from = it->from;
  const std::uint64_t corr = it->correlation;
  const std::uint32_t pid = it->pid;
  drop_parked(it);
  core_.sink.fail(from, corr, Errc::no_such_peer,
                  "no process with pid " + std::to_string(pid) + " connected in time");
}

}  // namespace qbus::broker
