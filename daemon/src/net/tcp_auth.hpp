// The gate in front of TCP peers, which have no kernel identity (docs/architecture.md,
// principle 4): the token check, the delay that slows a guesser down after a few wrong
// tokens from one source, and the table of connections that have not authenticated yet,
// bounded per source and in all, each with a deadline.
//
// A TCP connection is not a broker peer until it presents the token (it holds no quota,
// inbox or id in the core before), so this table is the only bound on it meanwhile.
//
// Ownership and lifetime: one per Server, which outlives it; it names connections by id
// and asks the Server for them when it must close one (an eviction, a deadline).
// Thread-safety: none; everything runs on the broker thread.
#pragma once

#include <asio.hpp>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "broker/types.hpp"

namespace qbus::daemon {

class Connection;
class Server;

class TcpAuth {
 public:
  TcpAuth(asio::io_context& io, Server& server, std::string token);

  // Who failed logins and unauthenticated connections are counted against: the IPv4
  // address, or the /64 of an IPv6 address (one host can use a whole /64).
  static std::string source_key(const asio::ip::address& a);

  // A new TCP connection from `c.remote_ip()`: gives it an unauthenticated slot until
  // `handshake_timeout` plus the longest refusal delay from now, closing another source's
  // oldest connection when the table is full. Returns why it gets none (empty: it got one).
  std::string_view admit(const Connection& c, std::chrono::milliseconds handshake_timeout);
  // Connection `id` authenticated or closed: frees its slot, if it holds one.
  void release(broker::PeerId id);

  struct Verdict {
    bool ok = false;  // the right token: welcome at once, however often its source failed
    // A wrong token: how long to hold its refusal (zero after few failures, then growing,
    // so that guessing is slow), and the source's failures counting this one.
    std::chrono::milliseconds delay{0};
    std::uint32_t failures = 0;
  };
  // Checks a token presented by `source` (a source_key()), in time that depends only on
  // the expected token's length; a wrong one is recorded against the source.
  Verdict check(std::string_view token, const std::string& source);
  // A TLS handshake from `source` failed (a wrong or expired certificate, none when one is
  // required, plain bytes to a TLS port): recorded like a wrong token, with the same delay.
  Verdict handshake_failed(const std::string& source);

  // Failures since start, by reason (qbus_tcp_auth_failures_total).
  struct Counters {
    std::uint64_t wrong_token = 0;
    std::uint64_t tls_handshake = 0;
    std::uint64_t timed_out = 0;  // no token within the handshake timeout
    std::uint64_t evicted = 0;    // closed to make room in a full table
  };
  const Counters& counters() const { return counters_; }
  // Unauthenticated connections now.
  std::size_t pending() const { return preauth_.size(); }

 private:
  struct Failures {
    std::uint32_t count = 0;
    broker::Clock::time_point last;
  };
  // An unauthenticated TCP connection.
  struct Preauth {
    broker::PeerId id = 0;
    std::string source;                  // source_key() of its remote address
    broker::Clock::time_point deadline;  // closed then, whatever it is waiting for
  };

  // Full: the source holding the most gives up its oldest connection, unless that source
  // is `source` itself. Returns why the newcomer gets no slot (empty: room was made).
  std::string_view evict_for(broker::PeerId newcomer, const std::string& source);
  std::chrono::milliseconds delay(const std::string& source) const;
  std::uint32_t failed(const std::string& source);
  void arm_timer();
  void expire();

  Server& server_;
  const std::string token_;
  std::unordered_map<std::string, Failures> failures_;
  // Connections that have not authenticated yet, oldest first, and how many each source
  // holds.
  std::vector<Preauth> preauth_;
  std::unordered_map<std::string, std::uint32_t> preauth_by_source_;
  asio::steady_timer timer_;  // for the earliest Preauth::deadline
  broker::Clock::time_point armed_for_{};
  Counters counters_;  // counters_.evicted also samples the eviction log lines
};

}  // namespace qbus::daemon
