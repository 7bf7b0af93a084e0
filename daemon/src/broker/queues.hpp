// The queue registry: keyed queues with their waiting receives and blocked producers, the
// declare/grace lifetime, per-uid queue charges and the deadlines of receives and graces.
// It also runs the message machinery (enqueue, serve, drop) for the inboxes' queues, which
// the inbox registry owns and hands in by reference.
//
// Ownership: owns every keyed Queue; holds references to the Core and the request registry
// (to note which connection took a request's message, and to end a request whose message
// was dropped), both of which outlive it. Thread-safety: none; the Broker's one thread.
#pragma once

#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "broker/node_stash.hpp"
#include "broker/outcome.hpp"
#include "broker/queue.hpp"

namespace qbus::broker {

struct Core;
class Journal;
struct Peer;
class Requests;

// A message handed over in acknowledgement mode and not settled yet.
struct InFlight {
  Queue* queue = nullptr;  // where it came from; null once that queue was deleted
  HeldMessage message;
  std::uint64_t subscription = 0;  // the SUBSCRIBE's correlation, if it came through one
  bool has_deadline = false;
  QueueDeadlineIndex::iterator deadline;  // its ack timeout, when has_deadline
};

// A durable queue's message as the journal gives it back after a restart.
struct RecoveredMessage {
  MessageMeta meta;  // its sender (pid and ids as they were), priority, expiry, journal_id
  std::uint32_t deliveries = 0;  // handed over this many times in acknowledgement mode
  Bytes payload;
  Bytes headers;
  std::optional<Clock::time_point> due;  // a delayed send's
};

// What ACK, NACK or EXTEND came to.
struct Settled {
  Errc error = Errc::ok;
  std::string text;  // why, when error is not ok
};

// A peer's state in the queue registry.
struct QueuePeer {
  // Messages it holds in acknowledgement mode, by delivery tag (ascending: the order they
  // were handed over).
  std::map<std::uint64_t, InFlight> held;
  // Tags of the last messages taken back from it because their ack timeout passed (newest
  // last, at most kRecentTimeouts): a late ACK is told delivery_timed_out, not
  // unknown_delivery.
  std::deque<std::uint64_t> timed_out;
  static constexpr std::size_t kRecentTimeouts = 1024;
  std::uint32_t waiting = 0;
  // Queues (and inboxes) this peer waits on, with how many receives each: a few, so a
  // vector that keeps its capacity beats a map's node per receive.
  std::vector<std::pair<Queue*, std::uint32_t>> waiting_in;
  Queue* blocked_on = nullptr;
  // Queues whose declarer this peer is (their QueueKeeper::declarer).
  std::vector<Queue*> declared;
};

class Queues {
 public:
  Queues(Core& core, Requests& requests);
  Queues(const Queues&) = delete;
  Queues& operator=(const Queues&) = delete;

  // SEND: to the queue `key`, created (charged to the sender's uid) if need be.
  SendOutcome send(PeerId from, Peer& sender, std::string_view key, Bytes payload,
                   Clock::time_point now, const MessageProps& props = {});
  // RECEIVE on `key` (see Broker::receive); `ack`: in acknowledgement mode.
  void receive(PeerId peer, Peer& p, std::uint64_t correlation, std::string_view key,
               std::uint32_t max_count, std::int32_t timeout_ms, Clock::time_point now,
               bool ack = false);

  // Acknowledgements and subscriptions (proto/PROTOCOL.md section 17; acks.cpp).
  Settled ack(Peer& p, std::uint64_t tag, bool multiple, Clock::time_point now);
  Settled nack(Peer& p, std::uint64_t tag, bool multiple, proto::NackAction action,
               std::uint32_t delay_ms, Clock::time_point now);
  Settled extend(Peer& p, std::uint64_t tag, std::uint32_t extend_ms, Clock::time_point now);
  void subscribe(PeerId peer, Peer& p, std::uint64_t correlation, std::string_view key,
                 std::uint32_t prefetch, bool ack, Clock::time_point now);
  // Every message `p` holds goes back to the head of its queue, in the order they were
  // handed over, and is served to others at once (its process is gone; forget does it too).
  void return_held(Peer& p, Clock::time_point now);
  // Ends the subscription opened with `subscription`; false when there is none.
  bool unsubscribe(PeerId peer, Peer& p, std::uint64_t subscription, Clock::time_point now);

  Queue* find_mutable(std::string_view key) {
    // A producer sends runs of messages to one queue: compare the key before hashing it.
    if (last_queue_ && last_queue_->key() == key) return last_queue_;
    auto it = queues_.find(key);
    if (it == queues_.end()) return nullptr;
    last_queue_ = it->second.get();
    return last_queue_;
  }
  const Queue* find(std::string_view key) const {
    auto it = queues_.find(key);
    return it == queues_.end() ? nullptr : it->second.get();
  }
  // Creates a queue charged to `creator`'s uid (nullptr: to nobody) unless it exists;
  // nullptr with the refusal in `why` when a limit forbids it.
  Queue* get_or_create(std::string_view key, SendOutcome* why, const Identity* creator);
  template <typename F>
  void for_each(F&& f) const {
    for (const auto& [k, q] : queues_)
      f(*q);
  }
  std::size_t count() const { return queues_.size(); }

  // Hands `payload` to the first waiter of `q` (a queue or an inbox) or stores it,
  // applying q's limits, the sender's uid quota and q's overflow policy. from = 0: a
  // producer that cannot be paused (a parked send), refused where it would block.
  // request_id/request_seq: nonzero for a request's message. region: the payload is that
  // slice (`payload` is then empty).
  // props: the message's header block (checked by the edge), and for a keyed queue its
  // time to live, delay and priority.
  SendOutcome enqueue(Queue& q, PeerId from, Peer& sender, Bytes payload, Clock::time_point now,
                      std::uint64_t request_id = 0, std::uint64_t request_seq = 0,
                      RegionRef region = {}, const MessageProps& props = {});
  // Serves `peer` from `q` now, or makes it wait (timeout_ms -1: forever, 0: fail now).
  void receive_from(Queue& q, PeerId peer, Peer& p, std::uint64_t correlation,
                    std::uint32_t max_count, std::int32_t timeout_ms, Clock::time_point now,
                    bool ack = false);
  // The edge reports `p` reads its output again: its waits on queues holding messages are
  // served now.
  void output_ready(Peer& p, Clock::time_point now);
  // Answers every waiter of `q` with `code`; with `keep`, all but that peer's.
  void fail_waiters(Queue& q, Errc code, std::string_view text, PeerId keep = 0);
  // Drops every message of `q` (a request's ends with queue_full); returns how many.
  std::size_t drain(Queue& q);
  // Room was made in `q` (or its target went away): its blocked producers retry.
  void space_freed(Queue& q);
  void collect_if_idle(Queue& q);

  // Declarations and the operator's actions: see Broker.
  Errc declare(PeerId from, Peer& p, std::string_view key, const QueueOptions& requested,
               std::string& text);
  Errc declare_configured(std::string_view key, const QueueOptions& requested, std::string& text);
  bool release_configured(std::string_view key, Clock::time_point now);
  // The live, undeclared queue `key` when declaring it with `requested` would make it adopt
  // other options: the one declaration that takes authority over the queue (Broker::declare
  // asks for it first). Null otherwise; asking for the options it has stays open to all.
  const Queue* changing_options(std::string_view key, const QueueOptions& requested) const;
  std::optional<std::size_t> purge(std::string_view key);
  std::optional<std::size_t> remove(std::string_view key);

  // The peer disconnects: its waits (on queues and inboxes), its subscriptions and its
  // place among blocked producers go, what it declared starts its grace at `now`, and the
  // messages it held unsettled go back to the heads of their queues, in their order.
  void forget(PeerId peer, Peer& p, Clock::time_point now);
  // Shutdown: every waiter on a keyed queue is answered with `code`.
  void fail_all(Errc code, std::string_view text);

  // Recovery (queue_durable.cpp), before any peer connects: durable queue `key` as the
  // journal had it (null, with `text`, when a limit refuses it), and its messages, in the
  // order they were stored. Limits and quotas do not refuse what was accepted before.
  Queue* recover_queue(std::string_view key, const QueueOptions& options,
                       std::optional<std::uint32_t> owner, std::string& text);
  void recover_message(Queue& q, const RecoveredMessage& m, Clock::time_point now);

  std::optional<Clock::time_point> next_deadline() const { return earliest(deadlines_); }
  // Ends what the earliest deadline guards (there must be one), as of `now`.
  void expire_first(Clock::time_point now);

 private:
  using QueueMap =
      std::unordered_map<std::string, std::unique_ptr<Queue>, StringHash, std::equal_to<>>;

  // get_or_create for a key known to name no queue.
  Queue* create(std::string_view key, SendOutcome* why, const Identity* creator);
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
  // Applies `wanted` to an existing undeclared queue and declares it.
  void declare_existing(Queue& q, const QueueOptions& wanted);
  // `q` has no room for a message of `size` bytes from `uid`: applies its overflow policy
  // until it fits; the refusal (or, for a producer that can be paused, blocked) when not.
  std::optional<SendOutcome> make_room(Queue& q, PeerId from, QueuePeer* qp, std::size_t size,
                                       std::uint32_t uid, Clock::time_point now);
  // The refusal of a message of `uid` that `q` has no room for: queue_full, or for an
  // inbox peer_busy naming the uid's share.
  SendOutcome refuse_full(Queue& q, std::uint32_t uid);
  // Hands a message to `to`, giving it a handle on a region message's region first.
  void hand_over(PeerId to, std::uint64_t correlation, bool last, const Delivery& d);
  // enqueue for a sender that may be gone (a dead letter): `qp` is the sender's state when
  // it can be paused (from != 0), else null.
  SendOutcome enqueue_as(Queue& q, PeerId from, const Identity& id, QueuePeer* qp, Bytes payload,
                         Clock::time_point now, std::uint64_t request_id, std::uint64_t request_seq,
                         RegionRef region, const MessageProps& props);
  // Durable queues (queue_durable.cpp). Why a message cannot go to durable queue `q` now
  // (no journal, a failed disk, a region payload over max_payload); nullopt when it can.
  std::optional<SendOutcome> journal_refusal(Queue& q, RegionRef region);
  // A region message's bytes, into region_copy_ for the journal; the refusal when they
  // cannot be read.
  std::optional<SendOutcome> copy_region(Queue& q, RegionRef region);
  // The refusal of a payload of `size` bytes that the broker or `q` can never take.
  std::optional<SendOutcome> too_large(Queue& q, std::size_t size);
  // The header block `q` keeps a message with: the sender's, plus a qbus-id when the queue
  // gives its messages ids. Valid until the next call, so called just before the block is
  // used: making room may dead-letter into another queue, which calls it too.
  Bytes stored_headers(const Queue& q, Bytes sender);
  // Journals a message just stored in durable queue `q`; its ticket.
  std::uint64_t journal_store(Journal& journal, const Queue& q, const MessageMeta& meta,
                              Bytes payload, const MessageProps& props, Clock::time_point now);
  // Whether queue `key` may be declared durable now: storage_failed, with `text`, if not.
  Errc journal_can_declare(std::string_view key, std::string& text) const;
  // Journals `q`'s declaration when it is durable.
  void journal_declared(const Queue& q);
  // Makes `w` wait on `q` (a receive with timeout_ms, or a subscription), within the
  // peer's and its uid's bounds; false, with `w` answered too_many_receives, past them.
  bool add_wait(Queue& q, Peer& p, const Waiter& w, std::int32_t timeout_ms, Clock::time_point now);
  // Moves up to `max` messages from `q`'s head to waiter `w`, stopping early when its
  // output is backed up or, in acknowledgement mode, its credit is used up.
  // False, with `w` answered internal_error, when nothing could be handed over.
  bool serve_now(Queue& q, Waiter& w, std::uint32_t max, Clock::time_point now);
  // serve_now could not hand over the message it took off `q` into scratch_: it goes back
  // first in line (dropped, counted, when even that takes memory there is none of).
  void unpop(Queue& q);
  // Serves the waiters of a queue that holds messages, in arrival order, skipping those
  // whose output is still backed up or that lack credit; a subscription served goes to
  // the back, so subscribers take turns.
  // `collect`: collect `q` when this leaves it idle (not for a caller that uses q after).
  void serve_waiters(Queue& q, Clock::time_point now, bool collect = true);
  // How many more messages `w` may take now in acknowledgement mode (the rest of its
  // connection's max_unacked, and of a subscription's prefetch); UINT32_MAX when not.
  std::uint32_t credit(const Waiter& w) const;
  // Hands `m` (a message of `q`, read in place, or one handed straight from a sender) to
  // waiter `w` in acknowledgement mode: held under a new tag until settled. Throws
  // std::bad_alloc with nothing changed.
  void hand_over_acked(Queue& q, Waiter& w, const StoredMessage& m, bool last,
                       Clock::time_point now);
  // Settles `it`, one of `p`'s held messages: what happens to it is `outcome` (delay: back
  // after delay_ms). Returns its queue (null when that was deleted); the caller serves or
  // collects it afterwards (after_settle).
  enum class Outcome { acked, requeue, delay, dead_letter };
  Queue* settle(Peer& p, std::map<std::uint64_t, InFlight>::iterator it, Outcome outcome,
                Clock::time_point now, std::uint32_t delay_ms = 0);
  // settle for `tag`, or with `multiple` every held tag up to it.
  Settled settle_tags(Peer& p, std::uint64_t tag, bool multiple, Outcome outcome,
                      Clock::time_point now, std::uint32_t delay_ms);
  // Why `tag` cannot be settled by `p`.
  Settled unsettled(const Peer& p, std::uint64_t tag) const;
  // Serves (or collects) the queues settling touched.
  void after_settle(std::vector<Queue*>& touched, Clock::time_point now);
  // A held message comes back to `q` (after a NACK, a delay, its consumer's departure or
  // its ack timeout), or goes to the dead-letter queue once it reached max_deliveries.
  void give_back(Queue& q, HeldMessage&& m, Clock::time_point now);
  // Moves `m` (taken from `q`) to q's dead-letter queue, with headers saying `reason`, or
  // drops it when q has none or that queue refuses it. `hops` bounds chains of queues
  // whose dead letters overflow into each other.
  void dead_letter(Queue& q, HeldMessage&& m, std::string_view reason, Clock::time_point now);
  // drop_oldest for a queue whose overflow goes to its dead-letter queue.
  void overflow_to_dead_letter(Queue& q, Clock::time_point now);
  // Gives back what a held message was charged, and its region reference.
  void release_held(const HeldMessage& m);
  void expire_ack(const QueueDeadline& d, Clock::time_point now);
  void expire_delayed(Queue& q, Clock::time_point now);

  // Time (queue_time.cpp). A send with a delay waits, held, until `until`. Throws
  // std::bad_alloc with nothing changed.
  void put_delayed(Queue& q, const MessageMeta& meta, Bytes payload, Bytes headers,
                   Clock::time_point until);
  // Drops or dead-letters the messages first in line in `q` that have expired by `now`.
  // Not during a batch: a dead letter may be handed to a receiver at once.
  void expire_heads(Queue& q, Clock::time_point now) {
    if (q.expiring() != 0) expire_front_while_due(q, now);
  }
  void expire_front_while_due(Queue& q, Clock::time_point now);
  // The message first in line in `q` has expired: dropped, or dead-lettered.
  void expire_front(Queue& q, Clock::time_point now);
  // Moves `q`'s expiry deadline to when its first message expires (none when it does not).
  void rearm_expiry(Queue& q) {
    if (q.expiring() != 0 || q.expiry().armed) set_expiry_deadline(q);
  }
  void set_expiry_deadline(Queue& q);
  void on_expiry_deadline(Queue& q, Clock::time_point now);
  // Single active consumer: whether `w` may be served from `q` (only the active
  // subscription of such a queue may), and which subscription that is.
  bool servable(Queue& q, const Waiter& w) {
    return !q.options().single_active_consumer || &w == active_consumer(q);
  }
  const Waiter* active_consumer(Queue& q);
  // The queue `q` goes (remove): its held and delayed messages are dropped or orphaned.
  void orphan_held(Queue& q);
  WaiterList::iterator add_waiter(Queue& q, const Waiter& w);
  void remove_waiter(Queue& q, WaiterList::iterator it);
  void drop_oldest(Queue& q, Errc code = Errc::queue_full,
                   std::string_view why = "the request was dropped to make room in the queue");
  void erase_queue(QueueMap::iterator it);

  Core& core_;
  // The Core's Sink, held directly: asked (wants_more) and told (deliver) for every
  // message, so one load, not two, stands between a message and the edge.
  Sink& sink_;
  Requests& requests_;
  QueueMap queues_;
  Queue* last_queue_ = nullptr;  // find_mutable()'s cache; erase_queue() clears it
  std::uint64_t next_tag_ = 1;   // delivery tags, broker-unique
  // Settled nodes of the peers' held maps, each with the memory of a message of up to
  // kKeptHeldBytes: at most 4096 x 4 KiB kept for the next acknowledged deliveries.
  NodeStash<std::map<std::uint64_t, InFlight>, 4096> spare_held_;
  // A message being handed over from a queue with expiring messages, copied off the queue
  // so that the next one can be looked at first (serve_now); keeps its memory.
  HeldMessage scratch_;
  // stored_headers()' block: the sender's and a message id.
  std::vector<std::byte> id_headers_;
  static constexpr std::size_t kKeptHeldBytes = 4096;
  // Dead letters being moved now: a chain of queues whose overflow dead-letters into one
  // another ends after kMaxDeadLetterHops.
  int dead_letter_hops_ = 0;
  static constexpr int kMaxDeadLetterHops = 4;
  QueueDeadlineIndex deadlines_;
  // A region message's bytes on their way to the journal (at most max_payload).
  std::vector<std::byte> region_copy_;
  // Recycled nodes (node_stash.hpp): collected queues with their allocations, waiting
  // receives and their deadlines, so that steady traffic allocates nothing.
  NodeStash<QueueMap, 64> spare_queues_;
  WaiterList spare_waiters_;
  NodeStash<QueueDeadlineIndex, 4096> spare_deadlines_;
};

}  // namespace qbus::broker
