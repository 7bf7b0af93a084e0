// qbus-bench direct: PID-routed direct messages.
//
// direct: a send_to_pid()/receive_direct() ping-pong beside a raw socketpair ping-pong
// measured in the same invocation (as latency does), then one-way direct-send throughput.
// With --rate, messages are instead offered at a fixed rate, open loop.
#include <signal.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "modes.hpp"
#include "ping.hpp"

namespace qbus::bench {
namespace {

// Direct-message ping-pong: each side answers the other's pid with send_to_pid().
Summary run_direct_ping(const PingOptions& o, const std::string& address, Histogram& h) {
  Pipe ready = make_pipe();
  Child echo([&] {
    auto c = connect(address);
    const std::string payload(o.size, 'p');
    if (!announce(ready, c.session().pid)) return 1;
    while (true) {
      auto m = c.receive_direct(kIdleTimeout);
      if (!m) return 1;
      if (m->text() == kStop) break;
      c.send_to_pid(m->sender().pid, payload, kNoWait);
    }
    c.sync();
    return c.send_failures().count == 0 ? 0 : 1;
  });
  const auto peer = await_ready<std::uint32_t>(ready, "the direct echo process");
  auto c = connect(address);
  const std::string payload(o.size, 'q');
  const Summary s = measure(h, o, [&] {
    c.send_to_pid(peer, payload, kNoWait);
    const auto m = c.receive_direct(kReplyTimeout);
    if (!m) throw std::runtime_error("direct ping-pong: no answer within 10 s");
    if (m->size() != o.size)
      throw std::runtime_error("direct ping-pong: an answer of the wrong size");
  });
  c.send_to_pid(peer, kStop, kNoWait);
  c.sync();
  if (c.send_failures().count != 0) {
    throw std::runtime_error("direct ping-pong: " + c.send_failures().last_message);
  }
  if (!echo.wait()) throw std::runtime_error("the direct echo process failed");
  return s;
}

struct StreamResult {
  double seconds = 0;
  double daemon_cpu_seconds = -1;  // unknown with --address
};

// What the direct receiver reports: messages taken and when it had the last one.
struct ReceiverReport {
  long long received = 0;
  long long end_ns = 0;
};

// One sender process (Client::Batch, confirm=false) -> one receiver process's inbox.
StreamResult run_direct_stream(const PingOptions& o, const std::string& address, pid_t daemon_pid) {
  const long long n = o.stream_messages;
  Pipe report = make_pipe();
  Pipe receiver_ready = make_pipe();
  Child receiver([&] {
    report.read.reset();
    auto c = connect(address);
    if (!announce(receiver_ready, c.session().pid)) return 1;
    ReceiverReport r;
    while (r.received < n) {
      const auto got = c.receive_direct_batch(256, kIdleTimeout);
      if (got.empty()) break;  // starved: messages were lost
      const auto stops = std::count_if(got.begin(), got.end(),
                                       [](const qbus::Message& m) { return m.text() == kStop; });
      r.received += static_cast<long long>(got.size()) - stops;
      if (stops) break;  // the sender failed; count what arrived
    }
    r.end_ns = now_ns();
    return write_all(report.write.get(), &r, sizeof r) && r.received == n ? 0 : 1;
  });
  report.write.reset();
  const auto peer = await_ready<std::uint32_t>(receiver_ready, "the direct receiver");

  Pipe go = make_pipe();
  Pipe sender_ready = make_pipe();
  Child sender([&] {
    go.write.reset();
    report.read.reset();
    auto c = connect(address);
    const std::string payload(o.size, 'm');
    if (!announce(sender_ready, '\1')) return 1;
    char byte;
    if (::read(go.read.get(), &byte, 1) < 0) return 1;  // end of file is the start signal
    {
      qbus::Client::Batch batch(c);
      for (long long i = 0; i < n; ++i)
        c.send_to_pid(peer, payload, kNoWait);
    }
    return sync_and_check(c, "direct sender");
  });
  go.read.reset();
  await_ready<char>(sender_ready, "the direct sender");

  const double cpu_before = daemon_pid > 0 ? cpu_seconds(daemon_pid) : 0;
  const long long start_ns = now_ns();
  go.write.reset();
  const bool sent = sender.wait();
  if (!sent) {
    auto c = connect(address);
    c.send_to_pid(peer, kStop, kNoWait);
    c.sync();
  }
  ReceiverReport r;
  const bool reported = read_all(report.read.get(), &r, sizeof r);
  StreamResult result;
  if (daemon_pid > 0) result.daemon_cpu_seconds = cpu_seconds(daemon_pid) - cpu_before;
  const bool received = receiver.wait();
  if (!sent || !reported || !received) {
    throw std::runtime_error("direct throughput: the receiver got " + std::to_string(r.received) +
                             " of " + std::to_string(n) + " messages");
  }
  result.seconds = static_cast<double>(r.end_ns - start_ns) / 1e9;
  return result;
}

int direct(const PingOptions& o) {
  ::signal(SIGPIPE, SIG_IGN);
  // Inboxes deep enough that the pipelined sender is never refused (inbox_full).
  const auto daemon = private_daemon(o, true);
  const std::string address = daemon ? daemon->address() : o.address;
  if (o.rate > 0) return fixed_rate(o, address, true, daemon != nullptr);
  const Comparison c =
      compare_with_raw(o, [&](Histogram& h) { return run_direct_ping(o, address, h); });
  std::vector<StreamResult> streams;
  for (int i = 0; i < o.runs; ++i)
    streams.push_back(run_direct_stream(o, address, daemon ? daemon->pid() : -1));
  std::sort(streams.begin(), streams.end(),
            [](const StreamResult& a, const StreamResult& b) { return a.seconds < b.seconds; });
  const StreamResult& med = streams[streams.size() / 2];
  const double n = static_cast<double>(o.stream_messages);
  const double rate = n / med.seconds;
  const double mbps = rate * static_cast<double>(o.size) / 1e6;
  const double cpu_ns = med.daemon_cpu_seconds < 0 ? -1 : med.daemon_cpu_seconds * 1e9 / n;
  if (o.json) {
    std::printf(
        "{\"benchmark\":\"direct\",%s,\"throughput\":{\"messages\":%lld,\"size\":%zu,"
        "\"receive_batch\":256,\"runs\":%d,\"median_seconds\":%.6f,\"messages_per_second\":%.0f,"
        "\"mb_per_second\":%.2f,\"daemon_cpu_ns_per_message\":%.1f}}\n",
        comparison_json(o, c, "qbus_direct_ping_pong").c_str(), o.stream_messages, o.size, o.runs,
        med.seconds, rate, mbps, cpu_ns);
    return 0;
  }
  print_comparison(o, c, "direct (PID-routed ping-pong: send_to_pid + receive_direct)",
                   "qbus direct ping-pong", daemon != nullptr);
  std::printf(
      "direct throughput: 1 sender (Batch, confirm=false) -> 1 receiver "
      "(receive_direct_batch 256), %lld x %zu B, median of %d run(s)\n",
      o.stream_messages, o.size, o.runs);
  std::printf("  %-28s %12.0f\n", "messages/s", rate);
  std::printf("  %-28s %12.2f\n", "MB/s (payload)", mbps);
  std::printf("  %-28s %12.3f\n", "median run (s)", med.seconds);
  if (cpu_ns >= 0) std::printf("  %-28s %12.1f\n", "daemon CPU ns/message", cpu_ns);
  for (const auto& r : streams)
    std::printf("  run: %.3f s\n", r.seconds);
  return 0;
}

}  // namespace

Mode direct_mode(CLI::App& cmd) {
  return bind_mode<PingOptions>(cmd, add_ping_options_of<true>, direct);
}

}  // namespace qbus::bench
