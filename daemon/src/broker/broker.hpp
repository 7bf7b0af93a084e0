// The broker core: keyed queues, waiting receivers, blocked producers, per-uid accounting
// and receive deadlines. No sockets, no clocks of its own (callers pass `now`), no JSON:
// everything here is exercised directly by tests/unit.
//
// Thread-safety: none. One thread (the daemon's io_context thread) owns a Broker.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <unordered_map>

#include "broker/accounting.hpp"
#include "broker/queue.hpp"

namespace qbus::broker {

enum class SendResult {
  accepted,  // queued or handed to a waiting receiver
  rejected,  // the Errc says why; nothing was stored
  blocked,   // the queue is full and applies backpressure: retry after Sink::resume
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

class Broker {
 public:
  Broker(Limits limits, Sink& sink) : limits_(limits), sink_(sink) {}
  Broker(const Broker&) = delete;
  Broker& operator=(const Broker&) = delete;

  const Limits& limits() const { return limits_; }

  // Registers a peer; fails with too_many_connections when a global or per-uid limit is hit.
  Errc connect(PeerId peer, const Identity& id);
  // Forgets a peer: its waiting receives and its place among blocked producers go too.
  void disconnect(PeerId peer);

  SendOutcome send(PeerId from, std::string_view key, Bytes payload, Clock::time_point now);

  // Serves up to max_count messages now; otherwise waits (timeout_ms -1: forever) or,
  // with timeout 0, fails with Errc::timeout. Answers always arrive through the Sink.
  void receive(PeerId peer, std::uint64_t correlation, std::string_view key,
               std::uint32_t max_count, std::int32_t timeout_ms, Clock::time_point now);

  // Creates or configures a queue. Options of zero mean "the default". A queue that was
  // declared before with different options answers queue_conflict; one created implicitly
  // by use adopts the declared options.
  Errc declare(std::string_view key, const QueueOptions& requested, std::string& text);

  // Fails waiters whose deadline is at or before `now` with Errc::timeout.
  void expire(Clock::time_point now);
  std::optional<Clock::time_point> next_deadline() const;

  // Operator actions. purge drops queued messages (waiters stay); remove also fails the
  // waiters and forgets the queue. Both return the number of messages dropped, or nullopt
  // when no such queue exists.
  std::optional<std::size_t> purge(std::string_view key);
  std::optional<std::size_t> remove(std::string_view key);

  // Answers every waiting receive with `code` (used when the daemon shuts down).
  void fail_all_waiters(Errc code, std::string_view text);

  const Queue* find(std::string_view key) const;
  template <typename F>
  void for_each_queue(F&& f) const {
    for (const auto& [k, q] : queues_)
      f(*q);
  }
  std::size_t queue_count() const { return queues_.size(); }
  std::size_t peer_count() const { return peers_.size(); }
  const BrokerTotals& totals() const { return totals_; }
  const Accounting& accounting() const { return accounting_; }

 private:
  struct Peer {
    Identity id;
    std::uint32_t waiting = 0;
    std::unordered_map<Queue*, std::uint32_t> waiting_in;
    Queue* blocked_on = nullptr;
  };

  Queue* find_mutable(std::string_view key);
  Queue* get_or_create(std::string_view key, SendOutcome* why);
  // Moves up to `max` messages to `peer`, stopping early when its output is backed up.
  void serve_now(Queue& q, PeerId peer, std::uint64_t correlation, std::uint32_t max);
  void remove_waiter(Queue& q, WaiterList::iterator it);
  void release(const Message& m);
  void space_freed(Queue& q);
  void drop_oldest(Queue& q);
  void collect_if_idle(Queue& q);

  Limits limits_;
  Sink& sink_;
  struct KeyHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view k) const noexcept {
      return std::hash<std::string_view>{}(k);
    }
  };
  // Heterogeneous lookup: the key of an incoming frame is looked up without a copy.
  std::unordered_map<std::string, std::unique_ptr<Queue>, KeyHash, std::equal_to<>> queues_;
  std::unordered_map<PeerId, Peer> peers_;
  DeadlineIndex deadlines_;
  Accounting accounting_;
  BrokerTotals totals_;
};

}  // namespace qbus::broker
