// Direct messages, inboxes, requests and replies: the broker's "by process" half.
#include <algorithm>

#include "broker/broker.hpp"

namespace qbus::broker {

Broker::Inbox* Broker::inbox_for(const DirectSend& d, Clock::time_point now) {
  if (d.kind == proto::TargetKind::pid) {
    auto it = newest_by_pid_.find(static_cast<std::uint32_t>(d.target));
    if (it == newest_by_pid_.end()) return nullptr;
    // The edge may not have handled the process's exit yet: ask now, or a message meant for
    // a later process with this pid could land with a connection the old one left behind.
    if (sink_.has_exited(it->second->members.front(), now)) {
      retire_inbox(it);
      return nullptr;
    }
    return it->second;
  }
  auto it = peers_.find(d.target);
  return it == peers_.end() ? nullptr : it->second.inbox;
}

void Broker::retire_inbox(std::unordered_map<std::uint32_t, Inbox*>::iterator it) {
  Inbox* inbox = it->second;
  newest_by_pid_.erase(it);
  // Producers blocked on the inbox retry: routed afresh, those that named the pid learn
  // it is gone (those that named a client id block again if it is still full).
  space_freed(inbox->queue);
}

void Broker::process_exited(PeerId peer) {
  Peer* p = find_peer(peer);
  if (!p || !p->inbox) return;
  if (auto it = newest_by_pid_.find(p->inbox->pid);
      it != newest_by_pid_.end() && it->second == p->inbox) {
    retire_inbox(it);
  }
}

void Broker::join_inbox(PeerId peer, Peer& p, Clock::time_point now) {
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
        p.inbox = existing;
        existing->members.push_back(peer);
        return;
      }
      // Different tokens: a newer process has the pid (the old one has exited), unless
      // this connection's token is unknown, which proves nothing.
      if (p.id.process_token == 0) by_pid = false;
    }
  }
  if (by_pid && sink_.has_exited(peer, now)) by_pid = false;
  const std::string name =
      by_pid ? "pid:" + std::to_string(p.id.pid) : "client:" + std::to_string(p.id.client_id);
  auto inbox = std::make_unique<Inbox>(name, limits_.inbox, p.id, chunk_budget_);
  Inbox* raw = inbox.get();
  inboxes_.emplace(raw, std::move(inbox));
  raw->members.push_back(peer);
  p.inbox = raw;
  if (by_pid) {
    newest_by_pid_[p.id.pid] = raw;
    deliver_parked(*raw, now);
  }
}

void Broker::leave_inbox(PeerId peer, Peer& p) {
  Inbox* inbox = p.inbox;
  if (!inbox) return;
  p.inbox = nullptr;
  std::erase(inbox->members, peer);
  if (inbox->claimed_by == peer) inbox->claimed_by = 0;
  if (!inbox->members.empty()) return;
  // The process is gone: what it did not take is dropped, and producers blocked on its
  // full inbox retry (and learn there is no such peer any more).
  while (inbox->queue.depth() > 0)
    drop_oldest(inbox->queue);
  fail_waiters(inbox->queue, Errc::no_such_peer, "the inbox's process disconnected");
  space_freed(inbox->queue);
  if (auto it = newest_by_pid_.find(inbox->pid);
      it != newest_by_pid_.end() && it->second == inbox) {
    newest_by_pid_.erase(it);
  }
  inboxes_.erase(inbox);
}

void Broker::deliver_parked(Inbox& inbox, Clock::time_point now) {
  auto waiting = parked_by_pid_.find(inbox.pid);
  if (waiting == parked_by_pid_.end()) return;
  // Oldest first; drop_parked() erases the list (and the map entry) as it empties.
  while (true) {
    waiting = parked_by_pid_.find(inbox.pid);
    if (waiting == parked_by_pid_.end()) return;
    const auto it = waiting->second.begin();
    const PeerId from = it->from;
    const std::uint64_t corr = it->correlation;
    const bool confirm = it->confirm;
    const std::vector<std::byte> payload = it->message.payload;
    const RegionRef region = it->message.meta.region;
    // Keeps the region alive between the parked message letting go and the inbox's taking.
    if (region) regions_.add_message_ref(region.id);
    drop_parked(it);
    Peer& sender = peers_.at(from);
    // from = 0: a parked send cannot pause its producer, so a full inbox refuses it.
    auto out = enqueue(inbox.queue, 0, sender, payload, now, 0, 0, region);
    if (region) regions_.drop_message_ref(region.id);
    if (out.result == SendResult::accepted) {
      if (confirm) sink_.confirm(from, corr);
    } else {
      sink_.fail(from, corr, out.error, out.text);
    }
  }
}

void Broker::drop_parked(ParkedList::iterator it) {
  auto range = deadlines_.equal_range(it->deadline);
  for (auto d = range.first; d != range.second; ++d) {
    if (d->second.kind == Deadline::Kind::parked && d->second.parked == it) {
      spare_deadlines_.erase(deadlines_, d);
      break;
    }
  }
  release(it->message.meta, it->message.payload.size());
  if (auto p = peers_.find(it->from); p != peers_.end()) std::erase(p->second.parked, it);
  auto list = parked_by_pid_.find(it->pid);
  list->second.erase(it);
  if (list->second.empty()) parked_by_pid_.erase(list);
}

SendOutcome Broker::send_direct(PeerId from, const DirectSend& d, Bytes payload,
                                Clock::time_point now, RegionRef region) {
  auto pit = peers_.find(from);
  if (pit == peers_.end()) return rejected(Errc::internal_error, "unknown peer");
  Peer& sender = pit->second;
  if (payload.size() > limits_.max_payload) {
    return rejected(Errc::payload_too_large, "payload of " + std::to_string(payload.size()) +
                                                 " bytes exceeds the inline limit of " +
                                                 std::to_string(limits_.max_payload));
  }

  if (d.in_reply_to != 0) {
    if (region) return rejected(Errc::unexpected_frame, "a reply carries its payload inline");
    auto target = peers_.find(d.target);
    auto req = target == peers_.end() ? std::unordered_map<std::uint64_t, Request>::iterator{}
                                      : target->second.requests.find(d.in_reply_to);
    // Only the connection the request was handed to may answer it: a guessed client id
    // and request id are not enough to slip a reply in.
    if (target == peers_.end() || req == target->second.requests.end() ||
        req->second.delivered_to != from) {
      return rejected(Errc::reply_expired, "no request " + std::to_string(d.in_reply_to) +
                                               " from client " + std::to_string(d.target) +
                                               " waits for a reply from this connection (it "
                                               "timed out, its requester left, or it was "
                                               "delivered elsewhere)");
    }
    // A reply skips queues and inboxes; the requester's unread output is its only bound.
    if (!sink_.wants_more(d.target)) {
      return rejected(Errc::peer_busy, "the requester is not reading its answers; retry later");
    }
    end_request(target->second, req);
    ++totals_.messages_in;
    ++totals_.messages_out;
    totals_.bytes_in += payload.size();
    totals_.bytes_out += payload.size();
    sink_.deliver(d.target, d.in_reply_to, true, Delivery{{}, sender.id, 0, payload});
    return {};
  }

  if (Inbox* inbox = inbox_for(d, now)) {
    return enqueue(inbox->queue, from, sender, payload, now, 0, 0, region);
  }

  const std::string who =
      (d.kind == proto::TargetKind::pid ? "process " : "client ") + std::to_string(d.target);
  if (d.kind != proto::TargetKind::pid || d.wait_ms <= 0) {
    return rejected(Errc::no_such_peer, "no " + who + " is connected");
  }
  if (sender.parked.size() >= limits_.max_parked_sends) {
    return rejected(Errc::too_many_requests, "this connection already has " +
                                                 std::to_string(sender.parked.size()) +
                                                 " sends waiting for their process to connect");
  }
  if (auto refusal = over_quota(sender.id, payload.size())) return *refusal;
  if (region) {
    if (auto s = regions_.add_message_ref(region.id); !s.ok()) return rejected(s.error, s.text);
  }
  Parked pk;
  pk.from = from;
  pk.correlation = d.correlation;
  pk.confirm = d.confirm;
  pk.pid = static_cast<std::uint32_t>(d.target);
  pk.deadline = now + std::chrono::milliseconds(d.wait_ms);
  pk.message.meta.sender = sender.id;
  pk.message.meta.enqueued = now;
  pk.message.meta.region = region;
  pk.message.payload.assign(payload.begin(), payload.end());
  charge(sender.id, payload.size());
  auto& list = parked_by_pid_[pk.pid];
  auto it = list.insert(list.end(), std::move(pk));
  sender.parked.push_back(it);
  Deadline dl;
  dl.kind = Deadline::Kind::parked;
  dl.parked = it;
  add_deadline(it->deadline, dl);
  return SendOutcome{SendResult::deferred, Errc::ok, {}};
}

void Broker::receive_direct(PeerId peer, std::uint64_t correlation, std::uint32_t max_count,
                            std::int32_t timeout_ms, Clock::time_point now) {
  auto pit = peers_.find(peer);
  if (pit == peers_.end()) return;
  Peer& p = pit->second;
  if (p.inbox->owner() != peer) {
    sink_.fail(peer, correlation, Errc::not_inbox_owner,
               "client " + std::to_string(p.inbox->owner()) +
                   " of this process holds its inbox; send CLAIM_INBOX to take it over");
    return;
  }
  receive_from(p.inbox->queue, peer, p, correlation, max_count, timeout_ms, now);
}

void Broker::claim_inbox(PeerId peer) {
  auto pit = peers_.find(peer);
  if (pit == peers_.end()) return;
  Inbox& inbox = *pit->second.inbox;
  const PeerId before = inbox.owner();
  inbox.claimed_by = peer;
  if (before == peer) return;
  // Receives the former owner left waiting can no longer be served.
  auto& ws = inbox.queue.waiters();
  for (auto it = ws.begin(); it != ws.end();) {
    auto next = std::next(it);
    if (it->peer != peer) {
      const PeerId to = it->peer;
      const std::uint64_t corr = it->correlation;
      remove_waiter(inbox.queue, it);
      sink_.fail(to, corr, Errc::not_inbox_owner,
                 "client " + std::to_string(peer) + " claimed this process's inbox");
    }
    it = next;
  }
}

SendOutcome Broker::request(PeerId from, std::uint64_t correlation, std::string_view key,
                            Bytes payload, std::int32_t timeout_ms, Clock::time_point now) {
  auto pit = peers_.find(from);
  if (pit == peers_.end()) return rejected(Errc::internal_error, "unknown peer");
  Peer& p = pit->second;
  if (p.requests.size() >= limits_.max_pending_requests) {
    return rejected(Errc::too_many_requests, "this connection already has " +
                                                 std::to_string(p.requests.size()) +
                                                 " requests waiting for replies");
  }
  if (correlation == 0) {
    return rejected(Errc::malformed_frame, "request id 0 cannot be answered: use a nonzero id");
  }
  if (p.requests.count(correlation)) {
    return rejected(Errc::malformed_frame,
                    "request id " + std::to_string(correlation) + " is already waiting");
  }
  SendOutcome out;
  Queue* q = get_or_create(key, &out, &p.id);
  if (!q) return out;
  // Registered first: a waiting receiver may take the message inside enqueue().
  const std::uint64_t seq = next_request_seq_++;
  auto req = spare_requests_.insert_mapped(p.requests, correlation, Request{false, {}, seq, 0});
  out = enqueue(*q, from, p, payload, now, correlation, seq);
  collect_if_idle(*q);
  if (out.result != SendResult::accepted) {
    spare_requests_.erase(p.requests, req);
    return out;
  }
  if (timeout_ms >= 0) {
    Deadline d;
    d.kind = Deadline::Kind::request;
    d.peer = from;
    d.request_id = correlation;
    req->second.has_deadline = true;
    req->second.deadline = add_deadline(now + std::chrono::milliseconds(timeout_ms), d);
  }
  return out;
}

void Broker::note_delivery(PeerId requester, std::uint64_t request_id, std::uint64_t seq,
                           PeerId to) {
  auto r = peers_.find(requester);
  if (r == peers_.end()) return;
  auto req = r->second.requests.find(request_id);
  // A message of an earlier request that reused the id (and timed out) is not this one.
  if (req == r->second.requests.end() || req->second.seq != seq) return;
  req->second.delivered_to = to;
  spare_handling_.insert_value(peers_.at(to).handling, std::pair{requester, request_id});
}

void Broker::abandon_request(const MessageMeta& m, Errc code, std::string_view text) {
  auto requester = peers_.find(m.sender.client_id);
  if (requester == peers_.end()) return;
  auto req = requester->second.requests.find(m.request_id);
  if (req == requester->second.requests.end() || req->second.seq != m.request_seq) return;
  end_request(requester->second, req);
  sink_.fail(m.sender.client_id, m.request_id, code, text);
}

void Broker::end_request(Peer& p, RequestMap::iterator it) {
  if (it->second.has_deadline) spare_deadlines_.erase(deadlines_, it->second.deadline);
  if (auto handler = peers_.find(it->second.delivered_to); handler != peers_.end()) {
    auto& handling = handler->second.handling;
    if (auto h = handling.find({p.id.client_id, it->first}); h != handling.end()) {
      spare_handling_.erase(handling, h);
    }
  }
  spare_requests_.erase(p.requests, it);
}

std::size_t Broker::inbox_depth(PeerId peer) const {
  auto it = peers_.find(peer);
  return it == peers_.end() || !it->second.inbox ? 0 : it->second.inbox->queue.depth();
}

}  // namespace qbus::broker
