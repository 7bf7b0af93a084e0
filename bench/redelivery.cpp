// qbus-bench redelivery: how long a message held in acknowledgement mode by a consumer that
// dies takes to reach another consumer.
//
// A waiter process stays connected for the whole run. Each round the bench queues one
// message; a fresh holder process receives it in acknowledgement mode and then sleeps
// holding it; the waiter sends READY and its RECEIVE (ack mode) in one write, so once the
// bench has READY the waiter's receive is registered with the broker. The bench then stamps
// the clock and SIGKILLs the holder; the broker sees the holder's connection close and hands
// the message to the waiter, which stamps the clock on receipt, checks that it is marked
// redelivered and acks it. The sample is the difference (steady_clock, the same in every
// process). --warmup rounds go first and are not recorded.
#include <signal.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "common.hpp"
#include "daemon.hpp"
#include "modes.hpp"

namespace qbus::bench {
namespace {

constexpr char kKey[] = "bench.redelivery";
constexpr char kReadyKey[] = "bench.redelivery.ready";

struct Options {
  int rounds = 200;
  int warmup = 5;
  std::string address;
  bool json = false;
};

void add_options(CLI::App& cmd, Options& o) {
  cmd.add_option("--rounds", o.rounds, "Recorded rounds (one holder killed each)")
      ->check(CLI::Range(1, 100000));
  cmd.add_option("--warmup", o.warmup, "Rounds first, not recorded")->check(CLI::Range(0, 10000));
  cmd.add_option("--address", o.address, "Use a running broker instead of a private one");
  cmd.add_flag("--json", o.json, "One JSON object instead of the table");
}

// The waiter's loop: for every byte 1 on `go`, READY with a receive in ack mode behind it;
// the receipt time of the redelivered message goes to `stamps`. A byte 0 ends it.
int wait_for_redeliveries(const std::string& address, Pipe& ready, Pipe& go, Pipe& stamps) {
  go.write.reset();
  stamps.read.reset();
  auto c = connect(address);
  if (!announce(ready, '\1')) return 1;
  while (true) {
    char cmd = 0;
    if (!read_all(go.read.get(), &cmd, 1)) return 1;
    if (cmd == 0) return sync_and_check(c, "waiter");
    std::optional<qbus::Message> m;
    long long received_ns = 0;
    {
      // READY and RECEIVE leave in one write and the broker handles a connection's frames in
      // order, so the bench hears READY only once this receive waits on the queue.
      qbus::Client::Batch batch(c);
      c.send(kReadyKey, "r");
      m = c.receive(kKey, kIdleTimeout, qbus::ReceiveOptions{true});
      received_ns = now_ns();
    }
    if (!m) return 1;
    if (!m->redelivered()) {
      std::fprintf(stderr, "qbus-bench: waiter: the message was not marked redelivered\n");
      return 1;
    }
    c.ack(*m, true);
    if (!write_all(stamps.write.get(), &received_ns, sizeof received_ns)) return 1;
  }
}

// One round: kill() to receipt by the waiter, in nanoseconds.
long long one_round(qbus::Client& c, const std::string& address, Pipe& go, Pipe& stamps) {
  c.send_confirmed(kKey, "held");
  Pipe held = make_pipe();
  Child holder([&] {
    auto h = connect(address);
    const auto m = h.receive(kKey, kIdleTimeout, qbus::ReceiveOptions{true});
    if (!m) return 1;
    if (!announce(held, '\1')) return 1;
    while (true)
      ::pause();  // holds the message until SIGKILL
  });
  await_ready<char>(held, "the holder");
  const char cmd = 1;
  if (!write_all(go.write.get(), &cmd, 1)) throw std::runtime_error("the waiter is gone");
  if (!c.receive(kReadyKey, kIdleTimeout)) throw std::runtime_error("the waiter sent no READY");
  const long long killed_ns = now_ns();
  ::kill(holder.pid(), SIGKILL);
  long long received_ns = 0;
  if (!read_all(stamps.read.get(), &received_ns, sizeof received_ns)) {
    throw std::runtime_error("the waiter failed");
  }
  holder.wait();  // killed: its status is not a success, nor a failure of the bench
  return received_ns - killed_ns;
}

// The value at quantile q of sorted `v` (nearest rank).
double quantile(const std::vector<double>& v, double q) {
  const auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(v.size())));
  return v[std::min(v.size() - 1, rank == 0 ? 0 : rank - 1)];
}

void report(const Options& o, std::vector<double> samples_us) {
  std::sort(samples_us.begin(), samples_us.end());
  const double p50 = quantile(samples_us, 0.5);
  const double p99 = quantile(samples_us, 0.99);
  if (o.json) {
    std::printf(
        "{\"benchmark\":\"redelivery\",\"rounds\":%d,\"warmup\":%d,\"p50_us\":%.1f,"
        "\"p99_us\":%.1f,\"min_us\":%.1f,\"max_us\":%.1f}\n",
        o.rounds, o.warmup, p50, p99, samples_us.front(), samples_us.back());
    return;
  }
  std::printf(
      "redelivery: a consumer holding one message in ack mode is SIGKILLed; from kill() until\n"
      "  a waiting consumer has the message; %d rounds after %d warmup\n",
      o.rounds, o.warmup);
  std::printf("  %-10s %12.1f µs\n", "p50", p50);
  std::printf("  %-10s %12.1f µs\n", "p99", p99);
  std::printf("  %-10s %12.1f µs\n", "min", samples_us.front());
  std::printf("  %-10s %12.1f µs\n", "max", samples_us.back());
}

int redelivery(const Options& o) {
  ::signal(SIGPIPE, SIG_IGN);  // a dead waiter is an error to report, not a signal
  std::optional<qbus::testing::Daemon> daemon;
  std::string address = o.address;
  if (address.empty()) {
    qbus::testing::DaemonOptions d;
    d.log_level = "warn";
    daemon.emplace(d);
    address = daemon->address();
  }
  auto c = connect(address);
  for (const char* key : {kKey, kReadyKey}) {
    while (!c.receive_batch(key, 4096, std::chrono::milliseconds(0)).empty()) {
    }  // leftovers of an interrupted run on a shared broker
  }
  Pipe ready = make_pipe();
  Pipe go = make_pipe();
  Pipe stamps = make_pipe();
  Child waiter([&] { return wait_for_redeliveries(address, ready, go, stamps); });
  go.read.reset();
  stamps.write.reset();
  await_ready<char>(ready, "the waiter");
  std::vector<double> samples_us;
  for (int i = 0; i < o.warmup + o.rounds; ++i) {
    const long long ns = one_round(c, address, go, stamps);
    if (i >= o.warmup) samples_us.push_back(us(static_cast<double>(ns)));
  }
  const char stop = 0;
  if (!write_all(go.write.get(), &stop, 1) || !waiter.wait()) {
    throw std::runtime_error("the waiter failed");
  }
  report(o, std::move(samples_us));
  return 0;
}

}  // namespace

Mode redelivery_mode(CLI::App& cmd) {
  return bind_mode<Options>(cmd, add_options, redelivery);
}

}  // namespace qbus::bench
