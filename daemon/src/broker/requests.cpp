// The request registry: requests, their replies, and who may answer them.
#include "broker/requests.hpp"

#include "broker/core.hpp"

namespace qbus::broker {

std::optional<SendOutcome> Requests::check_new(const Peer& p, std::uint64_t id) const {
  const RequestMap& requests = p.requests.requests;
  if (requests.size() >= core_.limits.max_pending_requests) {
    return rejected(Errc::too_many_requests, "this connection already has " +
                                                 std::to_string(requests.size()) +
                                                 " requests waiting for replies");
  }
  if (id == 0) {
    return rejected(Errc::malformed_frame, "request id 0 cannot be answered: use a nonzero id");
  }
  if (requests.count(id)) {
    return rejected(Errc::malformed_frame,
                    "request id " + std::to_string(id) + " is already waiting");
  }
  return std::nullopt;
}

RequestMap::iterator Requests::open(Peer& p, std::uint64_t id) {
  return spare_requests_.insert_mapped(p.requests.requests, id, Request{false, {}, next_seq_++, 0});
}

void Requests::cancel(Peer& p, RequestMap::iterator it) {
  spare_requests_.erase(p.requests.requests, it);
}

void Requests::arm(PeerId requester, RequestMap::iterator it, std::int32_t timeout_ms,
                   Clock::time_point now) {
  ++counters_.accepted;
  if (timeout_ms < 0) return;
  it->second.has_deadline = true;
  it->second.deadline = spare_deadlines_.insert_mapped(
      deadlines_, now + std::chrono::milliseconds(timeout_ms), RequestKey{requester, it->first});
}

void Requests::note_delivery(PeerId requester, std::uint64_t request_id, std::uint64_t seq,
                             PeerId to) {
  Peer* r = core_.peers.find(requester);
  if (!r) return;
  auto req = r->requests.requests.find(request_id);
  // A message of an earlier request that reused the id (and timed out) is not this one.
  if (req == r->requests.requests.end() || req->second.seq != seq) return;
  req->second.delivered_to = to;
  spare_handling_.insert_value(core_.peers.find(to)->requests.handling,
                               RequestKey{requester, request_id});
}

void Requests::abandon(const MessageMeta& m, Errc code, std::string_view text) {
  Peer* requester = core_.peers.find(m.sender.client_id);
  if (!requester) return;
  auto req = requester->requests.requests.find(m.request_id);
  if (req == requester->requests.requests.end() || req->second.seq != m.request_seq) return;
  end(*requester, req);
  ++counters_.abandoned;
  core_.sink.fail(m.sender.client_id, m.request_id, code, text);
}

SendOutcome Requests::reply(PeerId from, const Peer& sender, const DirectSend& d, Bytes payload) {
  Peer* target = core_.peers.find(d.target);
  auto req = target ? target->requests.requests.find(d.in_reply_to) : RequestMap::iterator{};
  // Only the connection the request was handed to may answer it: a guessed client id
  // and request id are not enough to slip a reply in.
  if (!target || req == target->requests.requests.end() || req->second.delivered_to != from) {
    return rejected(Errc::reply_expired, "no request " + std::to_string(d.in_reply_to) +
                                             " from client " + std::to_string(d.target) +
                                             " waits for a reply from this connection (it "
                                             "timed out, its requester left, or it was "
                                             "delivered elsewhere)");
  }
  // A reply skips queues and inboxes; the requester's unread output is its only bound.
  if (!core_.sink.wants_more(d.target)) {
    return rejected(Errc::peer_busy, "the requester is not reading its answers; retry later");
  }
  end(*target, req);
  ++counters_.answered;
  BrokerTotals& totals = core_.totals;
  ++totals.messages_in;
  ++totals.messages_out;
  totals.bytes_in += payload.size();
  totals.bytes_out += payload.size();
  core_.sink.deliver(d.target, d.in_reply_to, true, Delivery{{}, sender.id, 0, payload});
  return {};
}

void Requests::end(Peer& p, RequestMap::iterator it) {
  if (it->second.has_deadline) spare_deadlines_.erase(deadlines_, it->second.deadline);
  if (Peer* handler = core_.peers.find(it->second.delivered_to)) {
    auto& handling = handler->requests.handling;
    if (auto h = handling.find({p.id.client_id, it->first}); h != handling.end()) {
      spare_handling_.erase(handling, h);
    }
  }
  spare_requests_.erase(p.requests.requests, it);
}

void Requests::forget(PeerId peer, Peer& p) {
  RequestPeer& rp = p.requests;
  counters_.requester_gone += rp.requests.size();
  while (!rp.requests.empty())
    end(p, rp.requests.begin());
  // Requests this peer took and never answered cannot be answered any more.
  while (!rp.handling.empty()) {
    const auto [requester, request_id] = *rp.handling.begin();
    rp.handling.erase(rp.handling.begin());
    Peer* r = core_.peers.find(requester);
    if (!r) continue;
    auto req = r->requests.requests.find(request_id);
    if (req == r->requests.requests.end() || req->second.delivered_to != peer) continue;
    end(*r, req);
    ++counters_.responder_gone;
    core_.sink.fail(requester, request_id, Errc::no_such_peer,
                    "the receiver of this request disconnected without replying");
  }
}

void Requests::fail_all(Errc code, std::string_view text) {
  core_.peers.for_each([&](PeerId id, Peer& p) {
    RequestMap& requests = p.requests.requests;
    while (!requests.empty()) {
      const std::uint64_t corr = requests.begin()->first;
      end(p, requests.begin());
      ++counters_.shut_down;
      core_.sink.fail(id, corr, code, text);
    }
  });
}

void Requests::expire_first() {
  const auto [requester, request_id] = deadlines_.begin()->second;
  Peer& p = *core_.peers.find(requester);
  end(p, p.requests.requests.find(request_id));
  ++counters_.timed_out;
  core_.sink.fail(requester, request_id, Errc::timeout, "no reply within the timeout");
}

}  // namespace qbus::broker
