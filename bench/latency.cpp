// qbus-bench latency: request()/reply() round trips through a queue.
//
// latency: one outstanding request()/reply() round trip at a time through a queue, beside
// a raw socketpair ping-pong between two processes measured in the same invocation
// (alternately, raw first and last), so the broker's cost is read against this machine's
// floor rather than against numbers from another day. With --rate, requests are instead
// offered at a fixed rate, open loop, and each is timed from when it was due.
#include <signal.h>

#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>

#include "modes.hpp"
#include "ping.hpp"

namespace qbus::bench {
namespace {

// One outstanding request() at a time to a responder that reply()s from another process.
Summary run_rpc(const PingOptions& o, const std::string& address, Histogram& h) {
  Pipe ready = make_pipe();
  Child responder([&] {
    auto c = connect(address);
    const std::string payload(o.size, 'p');
    if (!announce(ready, '\1')) return 1;
    {
      // Each reply waits in the Batch and goes out in one write with the next receive,
      // as redis-rr's responder writes each LPUSH with its next BLPOP.
      Client::Batch batch(c);
      while (true) {
        auto m = c.receive(kRpcKey, kIdleTimeout);
        if (!m) return 1;
        if (!m->is_request()) break;  // the stop
        c.reply(*m, payload);
      }
    }
    c.sync();
    return c.send_failures().count == 0 ? 0 : 1;
  });
  await_ready<char>(ready, "the responder");
  auto c = connect(address);
  const std::string payload(o.size, 'q');
  const Summary s = measure(h, o, [&] {
    const auto m = c.request(kRpcKey, payload, kReplyTimeout);
    if (!m) throw std::runtime_error("request: no reply within 10 s");
    if (m->size() != o.size) throw std::runtime_error("request: a reply of the wrong size");
  });
  c.send(kRpcKey, kStop);
  c.sync();
  if (!responder.wait()) throw std::runtime_error("the responder failed");
  return s;
}

int latency(const PingOptions& o) {
  ::signal(SIGPIPE, SIG_IGN);  // a dead echo process is an error to report, not a signal
  // At a fixed rate the replies queue in this process's inbox while it records: deep enough.
  const auto daemon = private_daemon(o, o.rate > 0);
  const std::string address = daemon ? daemon->address() : o.address;
  if (o.rate > 0) return fixed_rate(o, address, false, daemon != nullptr);
  const Comparison c = compare_with_raw(o, [&](Histogram& h) { return run_rpc(o, address, h); });
  if (o.json) {
    std::printf("{\"benchmark\":\"latency\",%s}\n",
                comparison_json(o, c, "qbus_request_reply").c_str());
  } else {
    print_comparison(o, c, "latency (request/reply through a queue)", "qbus request/reply",
                     daemon != nullptr);
  }
  return 0;
}

}  // namespace

Mode latency_mode(CLI::App& cmd) {
  return bind_mode<PingOptions>(cmd, add_ping_options_of<false>, latency);
}

}  // namespace qbus::bench
