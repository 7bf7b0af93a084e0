// The inbox registry: one inbox per client process (or per TCP connection) for direct
// messages, routing by pid (newest process with that pid, unless it has exited) and by
// client id, inbox ownership (CLAIM_INBOX), and direct sends parked until their target pid
// connects, with the parked sends' deadlines. Messages go into an inbox's Queue through the
// queue registry, which also keeps the inbox's waiting receives and blocked producers.
//
// Ownership: owns every Inbox and parked send; holds references to the Core and the queue
// registry, both of which outlive it. Thread-safety: none; the Broker's one thread.
#pragma once

#include <list>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "broker/outcome.hpp"
#include "broker/queue.hpp"

namespace qbus::broker {

struct Core;
struct Peer;
class Queues;

struct DirectSend {
  proto::TargetKind kind = proto::TargetKind::pid;
  std::uint64_t target = 0;
  std::uint64_t in_reply_to = 0;
  std::int32_t wait_ms = 0;
  std::uint64_t correlation = 0;
  bool confirm = false;
  Bytes headers;  // the message's header block; empty: none
};

struct Inbox {
  Inbox(std::string name, const QueueOptions& o, const Identity& id, KeptChunkBudget& budget)
      : queue(std::move(name), o, budget, true, true), pid(id.pid), token(id.process_token) {}
  Queue queue;
  std::uint32_t pid;
  std::uint64_t token;
  std::vector<PeerId> members;  // the process's connections, oldest first
  PeerId claimed_by = 0;
  PeerId owner() const { return claimed_by ? claimed_by : members.front(); }
};

// A direct send waiting for its target process to connect: held apart from any queue, so
// it owns its payload.
struct Parked;
using ParkedList = std::list<Parked>;
using ParkedDeadlineIndex = std::multimap<Clock::time_point, ParkedList::iterator>;
struct Parked {
  PeerId from = 0;
  std::uint64_t correlation = 0;
  bool confirm = false;
  std::uint32_t pid = 0;
  ParkedDeadlineIndex::iterator deadline;
  MessageMeta meta;
  std::vector<std::byte> payload;
  std::vector<std::byte> headers;
};

// A peer's state in the inbox registry.
struct InboxPeer {
  Inbox* inbox = nullptr;
  // This peer's sends waiting for their process to connect (at most max_parked_sends).
  std::vector<ParkedList::iterator> parked;
};

class Inboxes {
 public:
  Inboxes(Core& core, Queues& queues) : core_(core), queues_(queues) {}
  Inboxes(const Inboxes&) = delete;
  Inboxes& operator=(const Inboxes&) = delete;

  // A new connection joins its process's inbox (or gets its own); sends parked for its
  // pid are delivered into it now.
  void join(PeerId peer, Peer& p, Clock::time_point now);
  // The peer disconnects: its parked sends are dropped, and its process's inbox goes with
  // its last connection.
  void forget(PeerId peer, Peer& p);
  void process_exited(Peer& p);

  // The inbox a direct send (not a reply) goes to; nullptr when its target is not
  // connected (then park decides).
  Inbox* route(const DirectSend& d, Clock::time_point now);
  // A direct send whose target is not connected: parked for its pid to connect when it
  // may wait (deferred), else refused with no_such_peer.
  SendOutcome park(PeerId from, Peer& sender, const DirectSend& d, Bytes payload,
                   Clock::time_point now, RegionRef region);
  void receive(PeerId peer, Peer& p, std::uint64_t correlation, std::uint32_t max_count,
               std::int32_t timeout_ms, Clock::time_point now);
  void claim(PeerId peer, Peer& p);

  // Shutdown, in two steps so that the answers keep their order (see
  // Broker::fail_all_waiters): the receives waiting on inboxes, then the parked sends.
  void fail_waiters(Errc code, std::string_view text);
  void fail_parked(Errc code, std::string_view text);

  std::size_t count() const { return inboxes_.size(); }
  // Messages waiting in the inbox `p`'s direct messages go to; 0 before it has one.
  static std::size_t depth(const Peer& p);

  std::optional<Clock::time_point> next_deadline() const { return earliest(deadlines_); }
  void expire_first();

 private:
  using PidIndex = std::unordered_map<std::uint32_t, Inbox*>;

  // Stops routing the pid `it` names to its inbox (its process has exited).
  void retire(PidIndex::iterator it);
  void leave(PeerId peer, Peer& p);
  void deliver_parked(Inbox& inbox, Clock::time_point now);
  void drop_parked(ParkedList::iterator it);

  Core& core_;
  Queues& queues_;
  std::unordered_map<Inbox*, std::unique_ptr<Inbox>> inboxes_;
  PidIndex newest_by_pid_;
  // Parked sends by target pid, each list in arrival order: a connecting process finds its
  // own at once, never scanning everyone else's.
  std::unordered_map<std::uint32_t, ParkedList> parked_by_pid_;
  ParkedDeadlineIndex deadlines_;
};

}  // namespace qbus::broker
