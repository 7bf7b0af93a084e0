// qbus-bench latency --rate and direct --rate: requests offered at a fixed rate, open loop.
//
// A sender process sends request i at start + i/rate whatever the replies do (it never
// waits for one); a responder process answers each with send_to_pid() to the measuring
// process, which records now - (start + i/rate): the latency counts from when the request
// was due, not from when it was sent, so a sender held up by a slow broker adds the delay
// it suffered (no coordinated omission). Payloads carry the index and the pid to answer.
#include <sys/prctl.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "ping.hpp"

namespace qbus::bench {
namespace {

struct Stamp {
  std::uint64_t index;
  std::uint32_t reply_pid;
  std::uint32_t unused;
};
static_assert(sizeof(Stamp) == 16);

std::size_t open_loop_size(const PingOptions& o) {
  return std::max(o.size, sizeof(Stamp));
}

long long scheduled_ns(long long start_ns, double period_ns, std::uint64_t index) {
  return start_ns + static_cast<long long>(static_cast<double>(index) * period_ns);
}

struct OpenLoopRun {
  Summary summary;
  double achieved_rate = 0;  // requests the sender got out per second
};

// Answers each request with send_to_pid() to the pid its stamp names, until the stop.
int respond(const std::string& address, bool direct, Pipe& ready) {
  auto c = connect(address);
  if (!announce(ready, c.session().pid)) return 1;
  for (bool stop = false; !stop;) {
    const auto got = direct ? c.receive_direct_batch(64, kIdleTimeout)
                            : c.receive_batch(kRpcKey, 64, kIdleTimeout);
    if (got.empty()) return 1;
    qbus::Client::Batch batch(c);
    for (const auto& m : got) {
      if (m.size() < sizeof(Stamp)) {
        stop = true;  // the stop
        continue;
      }
      Stamp s;
      std::memcpy(&s, m.bytes().data(), sizeof s);
      c.send_to_pid(s.reply_pid, m.bytes(), kNoWait);
    }
  }
  c.sync();
  return c.send_failures().count == 0 ? 0 : 1;
}

// Where the requests go and where their answers come back.
struct OpenLoopPeers {
  std::string address;
  bool direct = false;
  std::uint32_t reply_pid = 0;      // the measuring process
  std::uint32_t responder_pid = 0;  // with `direct`
};

// Sends request i at start + i/rate (start comes through `go`), then reports when it was done.
int send_on_schedule(const PingOptions& o, const OpenLoopPeers& peers, Pipe& ready, Pipe& go,
                     Pipe& report) {
  go.write.reset();
  report.read.reset();
  auto c = connect(peers.address);
  std::string payload(open_loop_size(o), 'q');
  // Wake at the scheduled time, not up to 50 us (the default timer slack) after it.
  ::prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
  if (!announce(ready, '\1')) return 1;
  long long start_ns = 0;
  if (!read_all(go.read.get(), &start_ns, sizeof start_ns)) return 1;
  const auto total = static_cast<std::uint64_t>(o.warmup + o.count);
  const double period_ns = 1e9 / o.rate;
  for (std::uint64_t i = 0; i < total; ++i) {
    const long long due = scheduled_ns(start_ns, period_ns, i);
    if (now_ns() < due) {
      const timespec ts{static_cast<time_t>(due / 1'000'000'000),
                        static_cast<long>(due % 1'000'000'000)};
      while (::clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
      }
    }
    const Stamp s{i, peers.reply_pid, 0};
    std::memcpy(payload.data(), &s, sizeof s);
    if (peers.direct) {
      c.send_to_pid(peers.responder_pid, payload, kNoWait);
    } else {
      c.send(kRpcKey, payload);
    }
  }
  const long long end_ns = now_ns();
  c.sync();
  if (!write_all(report.write.get(), &end_ns, sizeof end_ns)) return 1;
  return c.send_failures().count == 0 ? 0 : 1;
}

// Takes every answer from `rx`'s inbox and records the measured ones from when they were due.
void record_answers(qbus::Client& rx, const PingOptions& o, Histogram& h, long long start_ns) {
  const auto total = static_cast<std::uint64_t>(o.warmup + o.count);
  const double period_ns = 1e9 / o.rate;
  h.reset();
  for (std::uint64_t received = 0; received < total;) {
    const auto got = rx.receive_direct_batch(256, kReplyTimeout);
    if (got.empty()) throw std::runtime_error("fixed rate: no reply within 10 s");
    const long long now = now_ns();
    for (const auto& m : got) {
      if (m.size() != open_loop_size(o)) throw std::runtime_error("a reply of the wrong size");
      Stamp s;
      std::memcpy(&s, m.bytes().data(), sizeof s);
      if (s.index >= static_cast<std::uint64_t>(o.warmup)) {
        h.record_signed(now - scheduled_ns(start_ns, period_ns, s.index));
      }
    }
    received += got.size();
  }
}

// `direct`: requests go to the responder's inbox by pid; otherwise through queue kRpcKey.
OpenLoopRun run_open_loop(const PingOptions& o, const std::string& address, Histogram& h,
                          bool direct) {
  auto rx = connect(address);
  rx.receive_direct(std::chrono::milliseconds(0));  // claims this process's inbox
  OpenLoopPeers peers{address, direct, rx.session().pid};

  Pipe responder_ready = make_pipe();
  Child responder([&] { return respond(address, direct, responder_ready); });
  peers.responder_pid = await_ready<std::uint32_t>(responder_ready, "the responder");

  Pipe sender_ready = make_pipe();
  Pipe go = make_pipe();
  Pipe report = make_pipe();
  Child sender([&] { return send_on_schedule(o, peers, sender_ready, go, report); });
  go.read.reset();
  report.write.reset();
  await_ready<char>(sender_ready, "the sender");

  // steady_clock is CLOCK_MONOTONIC, the same clock in every process on the host.
  const long long start_ns = now_ns() + 20'000'000;
  if (!write_all(go.write.get(), &start_ns, sizeof start_ns)) {
    throw std::runtime_error("the sender went away");
  }
  go.write.reset();
  record_answers(rx, o, h, start_ns);
  long long end_ns = 0;
  const bool reported = read_all(report.read.get(), &end_ns, sizeof end_ns);
  if (!sender.wait() || !reported) throw std::runtime_error("the sender failed");
  if (direct) {
    rx.send_to_pid(peers.responder_pid, kStop, kNoWait);
  } else {
    rx.send(kRpcKey, kStop);
  }
  rx.sync();
  if (!responder.wait()) throw std::runtime_error("the responder failed");
  OpenLoopRun r;
  r.summary = summarize(h);
  const auto total = static_cast<double>(o.warmup + o.count);
  r.achieved_rate = total / (static_cast<double>(end_ns - start_ns) / 1e9);
  return r;
}

}  // namespace

// --rate: R open-loop runs; each percentile is the median over the runs.
int fixed_rate(const PingOptions& o, const std::string& address, bool direct, bool own_daemon) {
  const auto h = std::make_unique<Histogram>();
  std::vector<OpenLoopRun> runs;
  for (int i = 0; i < o.runs; ++i)
    runs.push_back(run_open_loop(o, address, *h, direct));
  std::vector<Summary> summaries;
  std::vector<double> achieved;
  for (const auto& r : runs) {
    summaries.push_back(r.summary);
    achieved.push_back(r.achieved_rate);
  }
  const Summary s = median_summary(summaries);
  const double got_rate = median_of(achieved);
  const char* name = direct ? "direct" : "latency";
  const char* label = direct ? "qbus_direct" : "qbus_request_reply";
  if (o.json) {
    std::printf(
        "{\"benchmark\":\"%s\",\"mode\":\"fixed_rate\",\"cpus_online\":%ld,"
        "\"offered_rate\":%.0f,\"achieved_send_rate\":%.0f,\"requests\":%lld,\"warmup\":%lld,"
        "\"size\":%zu,\"runs\":%d,\"%s\":%s}\n",
        name, cpus_online(), o.rate, got_rate, o.count, o.warmup, open_loop_size(o), o.runs, label,
        summary_json(s).c_str());
    return 0;
  }
  std::printf(
      "%s at a fixed offered rate (open loop): %.0f requests/s, %lld requests x %zu B per run "
      "(+%lld warmup), median of %d run(s)\n",
      name, o.rate, o.count, open_loop_size(o), o.warmup, o.runs);
  std::printf("  %ld CPU(s) online (sysconf), nothing pinned; %s\n", cpus_online(),
              own_daemon ? "private qbusd" : ("broker at " + o.address).c_str());
  std::printf(
      "  %s -> responder -> send_to_pid() back; latency from each request's scheduled "
      "send time\n",
      direct ? "send_to_pid() to the responder" : "send() to a queue");
  std::printf("  %-30s %9s %9s %9s %9s %9s\n", "latency (us)", "p50", "p90", "p99", "p99.9", "max");
  std::printf("  %-30s %9.2f %9.2f %9.2f %9.2f %9.2f\n",
              direct ? "qbus direct, fixed rate" : "qbus request/reply, fixed rate", us(s.p50),
              us(s.p90), us(s.p99), us(s.p999), us(s.max));
  std::printf("  %-30s %9.0f\n", "achieved send rate (/s)", got_rate);
  std::printf("  runs, p50/p99 (us):");
  for (const auto& r : summaries)
    std::printf(" %.2f/%.2f", us(r.p50), us(r.p99));
  std::printf("\n");
  return 0;
}

}  // namespace qbus::bench
