// What the latency and direct modes share: round trips measured one at a time beside a raw
// socketpair ping-pong (the machine's floor), their percentile summaries and reports, and
// the fixed-rate (open loop) variant of both. Single-threaded, like the bench.
#pragma once

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "common.hpp"
#include "daemon.hpp"
#include "histogram.hpp"

namespace qbus::bench {

inline constexpr char kRpcKey[] = "bench.rpc";
inline constexpr auto kReplyTimeout = seconds(10);
inline const qbus::DirectOptions kNoWait{std::chrono::milliseconds(0), false};

struct PingOptions {
  long long count = 100'000;  // measured round trips per run
  long long warmup = 1'000;   // unmeasured round trips before them
  std::size_t size = 64;
  int runs = 3;
  long long stream_messages = 1'000'000;  // direct: one-way throughput messages per run
  double rate = 0;                 // > 0: requests per second, open loop, instead of one at a time
  std::uint32_t busy_poll_us = 0;  // the private daemon's limits.busy_poll_us
  std::string address;
  bool json = false;
};

// The options of latency (`direct` false) or direct, in --help order; the two word some of
// them differently and direct adds --throughput-messages.
void add_ping_options(CLI::App& cmd, PingOptions& o, bool direct);
// The same as an options function for bind_mode.
template <bool kDirect>
void add_ping_options_of(CLI::App& cmd, PingOptions& o) {
  add_ping_options(cmd, o, kDirect);
}

// Round-trip percentiles of one run (or the per-percentile median of several), in ns.
struct Summary {
  double p50 = 0, p90 = 0, p99 = 0, p999 = 0, max = 0;
};

Summary summarize(const Histogram& h);
Summary median_summary(const std::vector<Summary>& runs);

// Runs `warmup` unmeasured, then `count` measured round trips, one at a time.
template <typename F>
Summary measure(Histogram& h, const PingOptions& o, F&& round_trip) {
  for (long long i = 0; i < o.warmup; ++i)
    round_trip();
  h.reset();
  for (long long i = 0; i < o.count; ++i) {
    const auto start = Clock::now();
    round_trip();
    h.record_signed(
        std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count());
  }
  return summarize(h);
}

// Bytes per raw ping: a zero-byte write would not wake the other side.
std::size_t raw_size(const PingOptions& o);

// Ping-pong over socketpair(AF_UNIX, SOCK_STREAM) with blocking read/write: this machine's
// floor for one process waking another and back, with no broker in between.
Summary run_raw(const PingOptions& o, Histogram& h);

// Alternates raw and qbus runs, raw first and last: R qbus runs inside R+1 raw runs.
struct Comparison {
  std::vector<Summary> raw_runs, qbus_runs;
  Summary raw, qbus;
};

template <typename F>
Comparison compare_with_raw(const PingOptions& o, F&& run_qbus) {
  const auto h = std::make_unique<Histogram>();
  Comparison c;
  for (int i = 0; i < o.runs; ++i) {
    c.raw_runs.push_back(run_raw(o, *h));
    c.qbus_runs.push_back(run_qbus(*h));
  }
  c.raw_runs.push_back(run_raw(o, *h));
  c.raw = median_summary(c.raw_runs);
  c.qbus = median_summary(c.qbus_runs);
  return c;
}

std::string summary_json(const Summary& s);
// "latency" or "direct" figures shared by both JSON objects, without the braces.
std::string comparison_json(const PingOptions& o, const Comparison& c, const char* name);
void print_comparison(const PingOptions& o, const Comparison& c, const char* what,
                      const char* label, bool own_daemon);

// A private qbusd unless --address names a running broker (then nullptr), with --busy-poll-us
// and, for `deep_inbox`, inboxes deep enough that a pipelined sender is never refused
// (inbox_full).
std::unique_ptr<qbus::testing::Daemon> private_daemon(const PingOptions& o, bool deep_inbox);

// --rate: R open-loop runs through a queue (latency) or by pid (direct); prints the report.
int fixed_rate(const PingOptions& o, const std::string& address, bool direct, bool own_daemon);

}  // namespace qbus::bench
