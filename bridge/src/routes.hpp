// The kinds of route, each run by a thread of its own with its own qbus::Client (a
// Client is not shared between threads), until `stop` is set.
//
// At least once across the bridge:
// - outbound, a message taken from the qbus queue in acknowledgement mode is acked in qbus
//   only after JetStream acknowledged its publish; it carries its qbus-id as Nats-Msg-Id,
//   so JetStream's duplicate window drops the resend that follows a crash between the two
//   acknowledgements;
// - inbound, a JetStream message is acked only after qbusd accepted the send into the
//   queue (the batch's sends, then a sync that covers them).
// A side that is away stops the route until it is back: nothing is taken from the other.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <optional>
#include <set>
#include <string>

#include "bridge_config.hpp"
#include "nats_link.hpp"

namespace qbus::bridge {

// What a route did, read by the status writer on another thread.
struct RouteStats {
  std::atomic<std::uint64_t> forwarded{0};  // handed to the other side
  std::atomic<std::uint64_t> acked{0};      // acknowledged to the side it came from
  std::atomic<std::uint64_t> retried{0};    // handed over again after a failure
  std::atomic<std::uint64_t> failed{0};     // given up (the other side can never take it)
  std::atomic<bool> qbus_connected{false};
};

// The main thread's request that every route end. Most of a route's waits are bounded and
// look at it in between, so a route stops after finishing the batch in hand; a qbus call
// is not: qbusd parks a send into a full queue whose overflow is `block` until a receiver
// makes room. So each route registers its connection (Watch), and force(), for the routes
// still running after a grace period, shuts those sockets down, which ends such a call
// with connection_closed and lets the route give its batch back and return.
//
// Thread-safety: request() and force() on one thread, everything else on any.
class StopSignal {
 public:
  explicit operator bool() const noexcept { return stopped_.load(); }
  void request() { stopped_ = true; }
  void force();

  // Registers `fd` (a Client's socket) while it lives; destroy it before the Client.
  class Watch {
   public:
    Watch(StopSignal& stop, int fd);
    ~Watch();
    Watch(const Watch&) = delete;
    Watch& operator=(const Watch&) = delete;

   private:
    StopSignal& stop_;
    int fd_;
  };

 private:
  std::atomic<bool> stopped_{false};
  std::mutex mutex_;
  bool forced_ = false;  // held by mutex_
  std::set<int> fds_;    // held by mutex_: closed only after their Watch is gone
};

// Headers the bridge adds, so that provenance survives the trip.
inline constexpr const char* kOriginHost = "Qbus-Origin-Host";
inline constexpr const char* kOriginPid = "Qbus-Origin-Pid";
inline constexpr const char* kOriginUid = "Qbus-Origin-Uid";
inline constexpr const char* kOriginQueue = "Qbus-Origin-Queue";

void run_outbound(const BridgeConfig& config, const Route& route, const std::string& host,
                  NatsLink& nats, StopSignal& stop, RouteStats& stats);
void run_inbound(const BridgeConfig& config, const Route& route, NatsLink& nats, StopSignal& stop,
                 RouteStats& stats);

// What JetStream holds for an inbound queue route's consumer: messages not yet delivered
// to the bridge, and those delivered but not yet acked. nullopt when NATS does not answer
// within half a second (it is away, or the consumer does not exist yet).
struct Backlog {
  std::uint64_t pending = 0;
  std::int64_t unacked = 0;
};
std::optional<Backlog> inbound_backlog(NatsLink& nats, const Route& route);

// Subject routes: at most once, like the subjects on either side. A message that arrives
// while the other side is away is dropped and counted as failed (libnats buffers what is
// published while it reconnects, up to its reconnect buffer).
void run_subjects_outbound(const BridgeConfig& config, const Route& route, const std::string& host,
                           NatsLink& nats, StopSignal& stop, RouteStats& stats);
void run_subjects_inbound(const BridgeConfig& config, const Route& route, NatsLink& nats,
                          StopSignal& stop, RouteStats& stats);

}  // namespace qbus::bridge
