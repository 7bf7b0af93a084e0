// The request registry: requests waiting for their reply, which connection each was handed
// to (the only one that may answer), the broker-unique request numbers, and the requests'
// deadlines. The request's message travels through the queue registry; its reply comes back
// here by direct send (Broker::send_direct with in_reply_to).
//
// Ownership: the per-peer maps live in each Peer (RequestPeer); this registry keeps its
// deadlines and recycled nodes, and holds a reference to the Core, which outlives it.
// Thread-safety: none; the Broker's one thread.
#pragma once

#include <map>
#include <optional>
#include <set>
#include <unordered_map>
#include <utility>

#include "broker/node_stash.hpp"
#include "broker/outcome.hpp"
#include "broker/queue.hpp"

namespace qbus::broker {

struct Core;
struct Peer;
struct DirectSend;

// (requester, request id), the key of a request across peers.
using RequestKey = std::pair<PeerId, std::uint64_t>;
using RequestDeadlineIndex = std::multimap<Clock::time_point, RequestKey>;

struct Request {
  bool has_deadline = false;
  RequestDeadlineIndex::iterator deadline;
  std::uint64_t seq = 0;  // matches MessageMeta::request_seq
  // The connection the request message was handed to: the only one that may reply.
  PeerId delivered_to = 0;
};
using RequestMap = std::unordered_map<std::uint64_t, Request>;
using HandlingSet = std::set<RequestKey>;

// How requests ended, since start: the outcomes an operator watches (qbus_requests_total).
// `accepted` counts requests whose message was taken; each ends in exactly one other.
struct RequestCounters {
  std::uint64_t accepted = 0;
  std::uint64_t answered = 0;
  std::uint64_t timed_out = 0;
  std::uint64_t abandoned = 0;       // the message was dropped unread (queue deleted, expired)
  std::uint64_t responder_gone = 0;  // the connection it was handed to left without replying
  std::uint64_t requester_gone = 0;  // the requester left first
  std::uint64_t shut_down = 0;       // failed at shutdown
};

// A peer's state in the request registry.
struct RequestPeer {
  RequestMap requests;  // its own, by request id
  // Requests handed to this peer and not yet answered.
  HandlingSet handling;
};

class Requests {
 public:
  explicit Requests(Core& core) : core_(core) {}
  Requests(const Requests&) = delete;
  Requests& operator=(const Requests&) = delete;

  // The refusal when `p` may not open request `id` (its limit, id 0, an id in use).
  std::optional<SendOutcome> check_new(const Peer& p, std::uint64_t id) const;
  // Registers request `id` of `p` with a fresh number, before its message is queued (a
  // waiting receiver may take it at once).
  RequestMap::iterator open(Peer& p, std::uint64_t id);
  // Its message was refused or blocked: the request never was.
  void cancel(Peer& p, RequestMap::iterator it);
  // Its message was accepted: it fails with timeout after timeout_ms (-1: never).
  void arm(PeerId requester, RequestMap::iterator it, std::int32_t timeout_ms,
           Clock::time_point now);

  // Notes which connection received a request's message, so that only it can answer.
  void note_delivery(PeerId requester, std::uint64_t request_id, std::uint64_t seq, PeerId to);
  // A request whose message was dropped unread can never be answered: end it with `code`.
  void abandon(const MessageMeta& m, Errc code, std::string_view text);
  // A reply from `from` to request d.in_reply_to of client d.target, delivered at once.
  SendOutcome reply(PeerId from, const Peer& sender, const DirectSend& d, Bytes payload);

  // The peer disconnects: its own requests end silently, and those it took and did not
  // answer fail for their requesters with no_such_peer.
  void forget(PeerId peer, Peer& p);
  // Shutdown: every pending request is answered with `code`.
  void fail_all(Errc code, std::string_view text);

  std::optional<Clock::time_point> next_deadline() const { return earliest(deadlines_); }
  const RequestCounters& counters() const { return counters_; }
  void expire_first();

 private:
  // The request `it` of `p` ends (answered, timed out, abandoned or forgotten).
  void end(Peer& p, RequestMap::iterator it);

  Core& core_;
  RequestCounters counters_;
  std::uint64_t next_seq_ = 1;
  RequestDeadlineIndex deadlines_;
  // Recycled nodes (node_stash.hpp): steady request traffic allocates nothing.
  NodeStash<RequestDeadlineIndex, 4096> spare_deadlines_;
  NodeStash<RequestMap, 4096> spare_requests_;
  NodeStash<HandlingSet, 4096> spare_handling_;
};

}  // namespace qbus::broker
