// The broker core: keyed queues, per-process inboxes for direct messages, requests waiting
// for replies, waiting receivers, blocked producers, per-uid accounting and deadlines.
// No sockets, no clocks of its own (callers pass `now`), no JSON: everything here is
// exercised directly by tests/unit.
//
// Thread-safety: none. One thread (the daemon's io_context thread) owns a Broker.
#pragma once

#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>

#include "broker/accounting.hpp"
#include "broker/node_stash.hpp"
#include "broker/queue.hpp"
#include "broker/regions.hpp"

namespace qbus::broker {

enum class SendResult {
  accepted,  // queued, or handed to a waiting receiver
  rejected,  // the Errc says why; nothing was stored
  blocked,   // the target is full and applies backpressure: retry after Sink::resume
  deferred,  // a direct send waits for its target to connect; answered through the Sink
};

struct SendOutcome {
  SendResult result = SendResult::accepted;
  Errc error = Errc::ok;
  std::string text;  // for rejected: a sentence for the ERROR frame
};

struct BrokerTotals {
  std::uint64_t messages_in = 0;
  std::uint64_t messages_out = 0;
  std::uint64_t bytes_in = 0;
  std::uint64_t bytes_out = 0;
};

// A refusal with its reason.
SendOutcome rejected(Errc code, std::string text);

struct DirectSend {
  proto::TargetKind kind = proto::TargetKind::pid;
  std::uint64_t target = 0;
  std::uint64_t in_reply_to = 0;
  std::int32_t wait_ms = 0;
  std::uint64_t correlation = 0;
  bool confirm = false;
};

// A message whose payload is a slice of a region the sender holds (SEND_REGION).
struct RegionSend {
  RegionRef ref;
  proto::RegionTarget kind = proto::RegionTarget::queue;
  std::string_view key;      // queue targets
  std::uint64_t target = 0;  // pid or client id
  std::int32_t wait_ms = 0;
  std::uint64_t correlation = 0;
  bool confirm = false;
  // Drop one of the sender's handles once the frame is done with (unless it is blocked
  // and will be retried), whether or not the send succeeded.
  bool release = false;
};

class Broker {
 public:
  // `backing` (the memory behind shared-memory regions) must outlive the broker.
  Broker(Limits limits, Sink& sink, RegionBacking& backing)
      : limits_(limits), sink_(sink), regions_(limits.regions, backing) {}
  Broker(const Broker&) = delete;
  Broker& operator=(const Broker&) = delete;

  const Limits& limits() const { return limits_; }
  // Replaces the limits (a configuration reload). Nothing already admitted is dropped when
  // a limit shrinks below current use: connections, queued messages, waiting receives and
  // regions stay, and only new work over the new limit is refused. Existing queues and
  // inboxes keep their options; queue_defaults and inbox apply to those created later.
  void set_limits(const Limits& limits) {
    limits_ = limits;
    regions_.set_limits(limits.regions);
  }

  // Registers a peer; fails with too_many_connections when a global or per-uid limit is hit.
  // Direct sends parked for the peer's pid are delivered into its inbox now.
  Errc connect(PeerId peer, const Identity& id, Clock::time_point now);
  // Forgets a peer: its waiting receives, pending requests, parked sends and its place
  // among blocked producers go too; its process's inbox goes with its last connection.
  // The queues it declared start their grace at `now` (see declare).
  void disconnect(PeerId peer, Clock::time_point now);

  SendOutcome send(PeerId from, std::string_view key, Bytes payload, Clock::time_point now);

  // Serves up to max_count messages now; otherwise waits (timeout_ms -1: forever) or,
  // with timeout 0, fails with Errc::timeout. Answers always arrive through the Sink.
  void receive(PeerId peer, std::uint64_t correlation, std::string_view key,
               std::uint32_t max_count, std::int32_t timeout_ms, Clock::time_point now);

  // Direct messages. A pid names the newest process with that pid as long as it has not
  // exited (Sink::has_exited is asked): an older or exited one can never receive what is
  // meant for the pid, even through connections it left open. A client id names one
  // connection's process (for TCP peers, the connection itself). A reply
  // (in_reply_to != 0) goes to the request waiting on the named connection.
  SendOutcome send_direct(PeerId from, const DirectSend& d, Bytes payload, Clock::time_point now,
                          RegionRef region = {});
  // Takes from the inbox of the peer's process; only the inbox's owner may (the
  // connection that claimed it last, else the process's oldest connection).
  void receive_direct(PeerId peer, std::uint64_t correlation, std::uint32_t max_count,
                      std::int32_t timeout_ms, Clock::time_point now);
  void claim_inbox(PeerId peer);
  // The process of `peer`'s connection has exited, while its connections may still be open
  // (inherited by other processes). Its inbox is no longer routed by pid: sends by pid get
  // no_such_peer or wait for a new process with that pid (section 8.5), and producers
  // blocked on the inbox retry. The connections keep the inbox, with what is in it and
  // what is sent to them by client id. Parked sends are not affected. Idempotent.
  void process_exited(PeerId peer);

  // Queues `payload` with the sender's identity and request id `correlation`; the reply
  // (a direct send with in_reply_to == correlation) is delivered to the requester under
  // that correlation, or Errc::timeout after timeout_ms (-1: no limit).
  SendOutcome request(PeerId from, std::uint64_t correlation, std::string_view key, Bytes payload,
                      std::int32_t timeout_ms, Clock::time_point now);

  // Shared-memory regions (proto/PROTOCOL.md section 16). The peer's identity decides the
  // uid charged and, for named regions, the access. A queued region message counts as a
  // message against queue and uid limits but adds no bytes: its memory is the region's,
  // charged to the region's owner.
  RegionGrant allocate_region(PeerId peer, std::uint64_t size);
  SendOutcome send_region(PeerId from, const RegionSend& s, Clock::time_point now);
  RegionStatus release_region(PeerId peer, RegionId id);
  RegionGrant create_named_region(PeerId peer, std::string_view key, std::uint64_t size,
                                  std::uint32_t mode);
  RegionGrant attach_named_region(PeerId peer, std::string_view key, bool writable);
  RegionStatus remove_named_region(PeerId peer, std::string_view key);
  // The operator's REGION_REMOVE (the admin socket), with root's right to remove any
  // named region: the key is forgotten at once and the region lives on while handles or
  // queued messages refer to it. kNoSuchRegion for an unknown key.
  RegionStatus remove_named_region_as_operator(std::string_view key);
  const RegionTable& regions() const { return regions_; }

  // Queue lifetime and charges. A queue is charged to the uid whose frame created it
  // (SEND, RECEIVE, REQUEST, SEND_REGION, DECLARE), and a uid may be charged
  // limits.uid_max_queues at most: beyond it, creating one more fails with too_many_queues
  // and nothing changes. The charge is given back when the queue is erased. A queue
  // created by use is erased as soon as it is idle (empty, nobody waiting on it or blocked
  // on it).
  //
  // declare creates or configures a queue on behalf of `from`, which becomes its declarer
  // (the last live connection to declare it wins), and the queue's charge moves to the
  // declarer's uid (too_many_queues when that uid holds its limit already). Options of zero
  // mean "the default". A queue declared before with different options answers
  // queue_conflict; one created implicitly by use adopts the declared options. A declared
  // queue stays while its declarer is connected, even when idle. When the declarer
  // disconnects, the grace (limits.declared_queue_grace_ms) starts; at its end the queue
  // stops being declared and goes like a queue created by use: at once if it is idle, or
  // once it is (drained, its last waiter gone). A new declaration by a live connection
  // during the grace ends the grace and makes that connection the declarer.
  Errc declare(PeerId from, std::string_view key, const QueueOptions& requested, std::string& text);
  // Declares a queue of the configuration: charged to nobody and never collected; a
  // queue that exists is taken over (its declarer and charge go). Otherwise as declare.
  Errc declare_configured(std::string_view key, const QueueOptions& requested, std::string& text);
  // The configuration no longer lists `key`: its queue becomes a declared queue whose
  // declarer has gone, so its grace starts at `now`. False when `key` names no queue of
  // the configuration.
  bool release_configured(std::string_view key, Clock::time_point now);

  // The edge reports that `peer` reads its output again (Sink::wants_more would now say
  // true): its receives that wait on queues holding messages are served now.
  void output_ready(PeerId peer);

  // Fails everything whose deadline is at or before `now`.
  void expire(Clock::time_point now);
  std::optional<Clock::time_point> next_deadline() const;

  // Operator actions. purge drops queued messages (waiters stay); remove also fails the
  // waiters and forgets the queue. Both return the number of messages dropped, or nullopt
  // when no such queue exists.
  std::optional<std::size_t> purge(std::string_view key);
  std::optional<std::size_t> remove(std::string_view key);

  // Answers every waiting receive and request with `code` (the daemon is shutting down).
  void fail_all_waiters(Errc code, std::string_view text);

  const Queue* find(std::string_view key) const;
  template <typename F>
  void for_each_queue(F&& f) const {
    for (const auto& [k, q] : queues_)
      f(*q);
  }
  std::size_t queue_count() const { return queues_.size(); }
  std::size_t peer_count() const { return peers_.size(); }
  std::size_t inbox_count() const { return inboxes_.size(); }
  // Depth of the inbox a peer's direct messages go to; 0 for unknown peers.
  std::size_t inbox_depth(PeerId peer) const;
  const BrokerTotals& totals() const { return totals_; }
  const Accounting& accounting() const { return accounting_; }

 private:
  struct KeyHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view k) const noexcept {
      return std::hash<std::string_view>{}(k);
    }
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

  struct Request {
    bool has_deadline = false;
    DeadlineIndex::iterator deadline;
    std::uint64_t seq = 0;  // matches Message::request_seq
    // The connection the request message was handed to: the only one that may reply.
    PeerId delivered_to = 0;
  };

  using RequestMap = std::unordered_map<std::uint64_t, Request>;
  using HandlingSet = std::set<std::pair<PeerId, std::uint64_t>>;
  using QueueMap =
      std::unordered_map<std::string, std::unique_ptr<Queue>, KeyHash, std::equal_to<>>;

  struct Peer {
    Identity id;
    Inbox* inbox = nullptr;
    std::uint32_t waiting = 0;
    // Queues this peer waits on, with how many receives each: a few, so a vector that
    // keeps its capacity beats a map's node per receive.
    std::vector<std::pair<Queue*, std::uint32_t>> waiting_in;
    Queue* blocked_on = nullptr;
    RequestMap requests;
    // (requester, request id) of requests handed to this peer and not yet answered.
    HandlingSet handling;
    // This peer's sends waiting for their process to connect (at most max_parked_sends).
    std::vector<ParkedList::iterator> parked;
    // Queues whose declarer this peer is (their QueueKeeper::declarer).
    std::vector<Queue*> declared;
  };

  Queue* find_mutable(std::string_view key);
  // Creates a queue charged to `creator`'s uid (nullptr: to nobody) unless it exists.
  Queue* get_or_create(std::string_view key, SendOutcome* why, const Identity* creator);
  // The refusal when `uid` may not be charged one more queue.
  std::optional<SendOutcome> over_queue_quota(std::uint32_t uid) const;
  void charge_queue(Queue& q, std::uint32_t uid);
  void uncharge_queue(Queue& q);
  // Makes `peer` the declarer of `q`, moving the charge to its uid; the refusal when that
  // uid holds its limit of queues (nothing changed then).
  std::optional<SendOutcome> adopt(Queue& q, PeerId peer, Peer& p);
  // Takes `q` off its declarer's list; the queue has no declarer after.
  void drop_declarer(Queue& q);
  // `q` has lost its declarer (or its place in the configuration): its grace starts at
  // `now`. With no grace it is undeclared at once; the caller then collects it if idle.
  void start_grace(Queue& q, Clock::time_point now);
  void stop_grace(Queue& q);
  // Whether `q`'s declaration is kept with `wanted`; queue_conflict with `text` otherwise.
  Errc check_declared(const Queue& q, const QueueOptions& wanted, std::string& text) const;
  // Hands `payload` to the first waiter of `q` or stores it, applying q's limits, the
  // sender's uid quota and q's overflow policy.
  // request_id/request_seq: nonzero for a request's message.
  // region: the payload is that slice (`payload` is then empty).
  SendOutcome enqueue(Queue& q, PeerId from, Peer& sender, Bytes payload, Clock::time_point now,
                      std::uint64_t request_id = 0, std::uint64_t request_seq = 0,
                      RegionRef region = {});
  // Gives `to` a handle on a region message's region, then hands the delivery to the sink.
  // (For a TCP peer the edge streams the bytes and releases that handle when done.)
  void hand_over(PeerId to, std::uint64_t correlation, bool last, const Delivery& d);
  // send_region without the release flag's effect.
  SendOutcome route_region(PeerId from, const RegionSend& s, Clock::time_point now);
  void receive_from(Queue& q, PeerId peer, Peer& p, std::uint64_t correlation,
                    std::uint32_t max_count, std::int32_t timeout_ms, Clock::time_point now);
  // Moves up to `max` messages to `peer`, stopping early when its output is backed up.
  void serve_now(Queue& q, PeerId peer, std::uint64_t correlation, std::uint32_t max);
  // Serves the waiters of a queue that holds messages, in arrival order, skipping those
  // whose output is still backed up.
  void serve_waiters(Queue& q);
  void remove_waiter(Queue& q, WaiterList::iterator it);
  void fail_waiters(Queue& q, Errc code, std::string_view text);
  // The refusal when queuing `bytes` more would exceed the sender's uid quota.
  std::optional<SendOutcome> over_quota(const Identity& sender, std::size_t bytes);
  void charge(const Identity& sender, std::size_t bytes);
  // Gives back what a stored message was charged (its uid's usage, its region reference).
  void release(const MessageMeta& m, std::size_t payload_size);
  void space_freed(Queue& q);
  void drop_oldest(Queue& q, Errc code = Errc::queue_full,
                   std::string_view why = "the request was dropped to make room in the queue");
  void collect_if_idle(Queue& q);
  Peer* find_peer(PeerId peer);
  void erase_queue(QueueMap::iterator it);
  WaiterList::iterator add_waiter(Queue& q, const Waiter& w);
  DeadlineIndex::iterator add_deadline(Clock::time_point when, const Deadline& d);

  Inbox* inbox_for(const DirectSend& d, Clock::time_point now);
  // Stops routing the pid `it` names to its inbox (its process has exited).
  void retire_inbox(std::unordered_map<std::uint32_t, Inbox*>::iterator it);
  void join_inbox(PeerId peer, Peer& p, Clock::time_point now);
  void leave_inbox(PeerId peer, Peer& p);
  void deliver_parked(Inbox& inbox, Clock::time_point now);
  void drop_parked(ParkedList::iterator it);
  void end_request(Peer& p, RequestMap::iterator it);
  // Notes which connection received a request message, so that only it can answer.
  void note_delivery(PeerId requester, std::uint64_t request_id, std::uint64_t seq, PeerId to);
  // A request whose message was dropped unread can never be answered: end it with `code`.
  void abandon_request(const MessageMeta& m, Errc code, std::string_view text);

  Limits limits_;
  Sink& sink_;
  RegionTable regions_;
  // What the empty stores of every queue and inbox may keep; before them, as it must
  // outlive them.
  KeptChunkBudget chunk_budget_;
  // Heterogeneous lookup: the key of an incoming frame is looked up without a copy.
  QueueMap queues_;
  Queue* last_queue_ = nullptr;  // find_mutable()'s cache; erase_queue() clears it
  PeerId last_peer_id_ = 0;      // find_peer()'s cache; disconnect() clears it
  Peer* last_peer_ = nullptr;
  std::unordered_map<PeerId, Peer> peers_;
  std::unordered_map<Inbox*, std::unique_ptr<Inbox>> inboxes_;
  std::unordered_map<std::uint32_t, Inbox*> newest_by_pid_;
  // Parked sends by target pid, each list in arrival order: a connecting process finds its
  // own at once, never scanning everyone else's.
  std::unordered_map<std::uint32_t, ParkedList> parked_by_pid_;
  DeadlineIndex deadlines_;
  Accounting accounting_;
  BrokerTotals totals_;
  std::uint64_t next_request_seq_ = 1;
  // Recycled nodes (node_stash.hpp): collected queues with their allocations, waiting
  // receives, deadlines and requests, so that steady traffic allocates nothing.
  NodeStash<QueueMap, 64> spare_queues_;
  WaiterList spare_waiters_;
  NodeStash<DeadlineIndex, 4096> spare_deadlines_;
  NodeStash<RequestMap, 4096> spare_requests_;
  NodeStash<HandlingSet, 4096> spare_handling_;
};

}  // namespace qbus::broker
