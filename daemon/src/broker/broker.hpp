// The broker core's router: the one entry point the edge calls. Each concern is a registry
// with its own state and deadlines (docs/architecture.md, "The broker core"): keyed queues
// with their waiters and blocked producers (queues.hpp), per-process inboxes and parked
// direct sends (inboxes.hpp), requests waiting for replies (requests.hpp) and shared-memory
// regions (regions.hpp); what they share (limits, Sink, peers, per-uid usage, totals) is the
// Core (core.hpp). The Broker owns all of them and routes each call to the registry that
// handles it; a peer's disconnect is every registry forgetting it.
// No sockets, no clocks of its own (callers pass `now`), no JSON: everything here is
// exercised directly by tests/unit.
//
// Thread-safety: none. One thread (the daemon's io_context thread) owns a Broker.
#pragma once

#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "broker/core.hpp"

namespace qbus::broker {

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
  // The message's header block (empty: none) and, for a queue target, its time to live,
  // delay and priority.
  MessageProps props;
};

// What a client's PURGE or DELETE came to (Broker::purge_for, remove_for).
struct DropOutcome {
  Errc error = Errc::ok;
  std::size_t dropped = 0;  // messages dropped, when error is ok
  std::string text;         // otherwise: why, naming the operation and the key
};

class Broker {
 public:
  // `backing` (the memory behind shared-memory regions) must outlive the broker.
  Broker(Limits limits, Sink& sink, RegionBacking& backing)
      : core_(limits, sink, backing),
        requests_(core_),
        queues_(core_, requests_),
        inboxes_(core_, queues_),
        topics_(core_) {}
  Broker(const Broker&) = delete;
  Broker& operator=(const Broker&) = delete;

  const Limits& limits() const { return core_.limits; }
  // Replaces the limits (a configuration reload). Nothing already admitted is dropped when
  // a limit shrinks below current use: connections, queued messages, waiting receives and
  // regions stay, and only new work over the new limit is refused. Existing queues and
  // inboxes keep their options; queue_defaults and inbox apply to those created later.
  void set_limits(const Limits& limits) {
    core_.limits = limits;
    core_.regions.set_limits(limits.regions);
  }

  // Replaces the access policy (null: none, everything allowed) for operations from now on;
  // what is queued or waiting stays. Every peer's cached decisions are voided.
  void set_policy(std::unique_ptr<const Policy> policy) {
    core_.policy = std::move(policy);
    ++core_.policy_generation;
  }
  const Policy* policy() const { return core_.policy.get(); }

  // Registers a peer; fails with too_many_connections when a global or per-uid limit is hit.
  // Direct sends parked for the peer's pid are delivered into its inbox now. `groups` are
  // its supplementary groups (at most kMaxPeerGroups are kept), for the access policy.
  Errc connect(PeerId peer, const Identity& id, Clock::time_point now,
               std::span<const std::uint32_t> groups = {});
  // Forgets a peer: its waiting receives, pending requests, parked sends and its place
  // among blocked producers go too; its process's inbox goes with its last connection.
  // The queues it declared start their grace at `now` (see declare).
  void disconnect(PeerId peer, Clock::time_point now);

  // Inline, as are receive and receive_direct: on the per-message path the edge calls the
  // registry with no router call between.
  // `props`: the message's header block (proto/headers.hpp, checked by the edge), time to
  // live, delay and priority.
  SendOutcome send(PeerId from, std::string_view key, Bytes payload, Clock::time_point now,
                   const MessageProps& props = {}) {
    Peer* p = core_.peers.lookup(from);
    if (!p) return unknown_peer();
    // With no policy this is the one extra test on the per-message path.
    if (core_.policy && !permitted(*p, Operation::send, key))
      return denied(Operation::send, key, "queue");
    return queues_.send(from, *p, key, payload, now, props);
  }

  // Serves up to max_count messages now; otherwise waits (timeout_ms -1: forever) or,
  // with timeout 0, fails with Errc::timeout. Answers always arrive through the Sink.
  // With `ack`, in acknowledgement mode (proto/PROTOCOL.md 17.3): each message is handed
  // over with a delivery tag and stays held, charged to its sender, until the peer settles
  // it (ack, nack), its queue's ack timeout passes, or the peer disconnects; the last two
  // put it back at the head of its queue. Requests are handed over at most once whatever
  // the mode. A peer holding limits.max_unacked messages is refused too_many_unacked.
  void receive(PeerId peer, std::uint64_t correlation, std::string_view key,
               std::uint32_t max_count, std::int32_t timeout_ms, Clock::time_point now,
               bool ack = false) {
    if (Peer* p = core_.peers.find(peer)) {
      if (core_.policy && !permitted(*p, Operation::receive, key)) {
        return refuse_receive(peer, correlation, key);
      }
      queues_.receive(peer, *p, correlation, key, max_count, timeout_ms, now, ack);
    }
  }
  // Settling held messages (17.4): `tag`, or with `multiple` every tag up to it that the
  // peer holds. ack drops them for good; nack puts them back at the head of their queue
  // (after delay_ms for requeue_after) or moves them to the queue's dead-letter queue;
  // extend restarts the ack timeout at now + extend_ms (0: the queue's ack_timeout).
  // unknown_delivery, or delivery_timed_out for a tag taken back at its ack timeout.
  Settled ack(PeerId peer, std::uint64_t tag, bool multiple, Clock::time_point now);
  Settled nack(PeerId peer, std::uint64_t tag, bool multiple, proto::NackAction action,
               std::uint32_t delay_ms, Clock::time_point now);
  Settled extend(PeerId peer, std::uint64_t tag, std::uint32_t extend_ms, Clock::time_point now);
  // A subscription (17.5): messages of `key` are pushed to the peer under `correlation`
  // whenever it has credit (in ack mode at most `prefetch` held at once, 0: the default),
  // until unsubscribe or an ERROR with that correlation (the queue was deleted). It counts
  // as a waiting receive against the peer's limits. Judged by the policy as receive.
  void subscribe(PeerId peer, std::uint64_t correlation, std::string_view key,
                 std::uint32_t prefetch, bool ack, Clock::time_point now);
  // Ends a queue or a subject subscription; false when the peer has no subscription under
  // that correlation.
  bool unsubscribe(PeerId peer, std::uint64_t subscription, Clock::time_point now);

  // Publish/subscribe (proto/PROTOCOL.md 18; topics.hpp). publish fans the message out to
  // every matching subscription (blocked: a subscription of policy block is full; the edge
  // pauses the producer until Sink::resume and sends the frame again). Judged by the policy
  // as a send to the subject; a subscription as a receive of its pattern as written.
  // subscribe_subject answers OK itself when `confirm` (before any retained message) and
  // returns deferred; otherwise the refusal.
  SendOutcome publish(PeerId from, const PublishSend& m, Clock::time_point now);
  SendOutcome subscribe_subject(PeerId peer, const SubjectSubscribe& s, bool confirm);
  const Topics& topics() const { return topics_; }

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
                      std::int32_t timeout_ms, Clock::time_point now) {
    if (Peer* p = core_.peers.find(peer)) {
      inboxes_.receive(peer, *p, correlation, max_count, timeout_ms, now);
    }
  }
  void claim_inbox(PeerId peer);
  // The process of `peer`'s connection has exited, while its connections may still be open
  // (inherited by other processes). Its inbox is no longer routed by pid: sends by pid get
  // no_such_peer or wait for a new process with that pid (section 8.5), and producers
  // blocked on the inbox retry. The connections keep the inbox, with what is in it and
  // what is sent to them by client id. Parked sends are not affected. The messages the
  // connection holds in acknowledgement mode go back to their queues at `now`, as when it
  // closes: the process that took them is gone. Idempotent.
  void process_exited(PeerId peer, Clock::time_point now);

  // Queues `payload` with the sender's identity and request id `correlation`; the reply
  // (a direct send with in_reply_to == correlation) is delivered to the requester under
  // that correlation, or Errc::timeout after timeout_ms (-1: no limit).
  SendOutcome request(PeerId from, std::uint64_t correlation, std::string_view key, Bytes payload,
                      std::int32_t timeout_ms, Clock::time_point now, Bytes headers = {});

  // Shared-memory regions (proto/PROTOCOL.md section 16). The peer's identity decides the
  // uid charged and, for named regions, the access. With a policy, a named-region key is
  // judged like a queue key: creating it as declare, attaching as receive
  // (permission_denied); removing it stays the owner's or root's. A queued region message counts as
  // a message against queue and uid limits but adds no bytes: its memory is the region's, charged
  // to the region's owner.
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
  const RegionTable& regions() const { return core_.regions; }

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
  // queue_conflict; one created implicitly by use adopts the declared options, if `from`
  // may manage it (see may_manage; permission_denied otherwise). A declared
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

  // Durable queues: the journal (null: none), and recovery (Queues::recover_queue).
  // `why`: the reason durable queues are refused when `journal` is null.
  void set_journal(Journal* journal, std::string why = {}) {
    core_.journal = journal;
    if (!why.empty()) core_.no_journal = std::move(why);
  }
  Queue* recover_queue(std::string_view key, const QueueOptions& options,
                       std::optional<std::uint32_t> owner, std::string& text) {
    return queues_.recover_queue(key, options, owner, text);
  }
  void recover_message(Queue& q, const RecoveredMessage& m, Clock::time_point now) {
    queues_.recover_message(q, m, now);
  }

  // The edge reports that `peer` reads its output again (Sink::wants_more would now say
  // true): its receives that wait on queues holding messages are served now.
  void output_ready(PeerId peer, Clock::time_point now);

  // Fails everything whose deadline is at or before `now`.
  void expire(Clock::time_point now);
  std::optional<Clock::time_point> next_deadline() const;

  // Operator actions. purge drops queued messages (waiters stay); remove also fails the
  // waiters and forgets the queue. Both return the number of messages dropped, or nullopt
  // when no such queue exists.
  std::optional<std::size_t> purge(std::string_view key);
  std::optional<std::size_t> remove(std::string_view key);
  // The same asked by a client (PURGE, DELETE), which must be allowed to manage the queue
  // (may_manage): no_such_queue, or permission_denied with nothing changed, otherwise.
  DropOutcome purge_for(PeerId peer, std::string_view key) { return drop_for(peer, key, false); }
  DropOutcome remove_for(PeerId peer, std::string_view key) { return drop_for(peer, key, true); }

  // Answers every waiting receive and request with `code` (the daemon is shutting down).
  void fail_all_waiters(Errc code, std::string_view text);

  const Queue* find(std::string_view key) const { return queues_.find(key); }
  template <typename F>
  void for_each_queue(F&& f) const {
    queues_.for_each(std::forward<F>(f));
  }
  std::size_t queue_count() const { return queues_.count(); }
  std::size_t peer_count() const { return core_.peers.size(); }
  std::size_t inbox_count() const { return inboxes_.count(); }
  // Depth of the inbox a peer's direct messages go to; 0 for unknown peers.
  std::size_t inbox_depth(PeerId peer) const;
  // Messages the peer holds in acknowledgement mode; 0 for unknown peers.
  std::size_t unacked(PeerId peer) const {
    const Peer* p = core_.peers.find(peer);
    return p ? p->queues.held.size() : 0;
  }
  const BrokerTotals& totals() const { return core_.totals; }
  const RequestCounters& request_counters() const { return requests_.counters(); }
  const Accounting& accounting() const { return core_.accounting; }

 private:
  // The policy's answer for `p` (core_.policy is set), from the peer's cache when it holds
  // one for this policy generation. A denial is reported to the Sink with its rule.
  // Inline for the per-message case, the key the peer was allowed last; the rest is
  // decide_and_cache's.
  bool permitted(Peer& p, Operation op, std::string_view key) {
    return p.policy.allows_again(core_.policy_generation, op, key) || decide_and_cache(p, op, key);
  }
  bool decide_and_cache(Peer& p, Operation op, std::string_view key);
  // permission_denied, with a text naming the operation, what the key names (a queue, a
  // publish's subject, a subscription's subjects) and the key.
  static SendOutcome denied(Operation op, std::string_view key, std::string_view what);
  void refuse_receive(PeerId peer, std::uint64_t correlation, std::string_view key);
  // Whether `p` may purge, delete or re-declare with other options queue `q`: root and the
  // queue's owner may, anyone else needs the policy's manage grant for its key (asked last,
  // so that only a real refusal is audited). A queue of the configuration has no owner.
  bool may_manage(Peer& p, const Queue& q);
  // The permission_denied text for `what` (an operation and what it asked) of `q` by a
  // peer that may not manage it.
  std::string no_manage(std::string_view what, const Queue& q) const;
  DropOutcome drop_for(PeerId peer, std::string_view key, bool remove);

  // send_region without the release flag's effect.
  SendOutcome route_region(PeerId from, const RegionSend& s, Clock::time_point now);

  // Members in this order: each registry refers to those before it, which outlive it.
  Core core_;
  Requests requests_;
  Queues queues_;
  Inboxes inboxes_;
  Topics topics_;
};

}  // namespace qbus::broker
