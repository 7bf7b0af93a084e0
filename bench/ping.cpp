#include "ping.hpp"

#include <sys/socket.h>

#include <algorithm>
#include <cstdio>
#include <stdexcept>
#include <utility>

namespace qbus::bench {

void add_ping_options(CLI::App& cmd, PingOptions& o, bool direct) {
  const auto text = [direct](const char* latency, const char* direct_text) {
    return direct ? direct_text : latency;
  };
  cmd.add_option(text("--requests", "--messages"), o.count,
                 text("Measured round trips per run (qbus and raw each)",
                      "Measured ping-pong round trips per run"))
      ->check(CLI::Range(1LL, 1'000'000'000LL));
  cmd.add_option("--warmup", o.warmup,
                 text("Unmeasured round trips before each run",
                      "Unmeasured round trips before each ping-pong run"))
      ->check(CLI::Range(0LL, 1'000'000'000LL));
  cmd.add_option(
         "--size", o.size,
         text("Payload bytes of requests, replies and raw pings", "Payload bytes of every message"))
      ->check(CLI::Range(0, 1 << 20));
  cmd.add_option("--runs", o.runs,
                 text("qbus runs, alternating with R+1 raw runs; each percentile is the median",
                      "Runs: ping-pong runs alternating with R+1 raw runs (median per "
                      "percentile), then R throughput runs (median)"))
      ->check(CLI::Range(1, 99));
  if (direct) {
    cmd.add_option("--throughput-messages", o.stream_messages,
                   "Messages per one-way throughput run (Client::Batch, confirm=false)")
        ->check(CLI::Range(1LL, 1'000'000'000LL));
  }
  cmd.add_option("--rate", o.rate,
                 text("Requests/s offered at a fixed rate, open loop (a request through the "
                      "queue, the reply by send_to_pid), instead of one at a time and the raw "
                      "baseline; latency runs from each request's scheduled time (0: off)",
                      "Messages/s offered at a fixed rate, open loop (send_to_pid to an echo "
                      "process, answered by send_to_pid), instead of the ping-pong, the raw "
                      "baseline and the throughput run; latency runs from each scheduled time "
                      "(0: off)"))
      ->check(CLI::Range(0.0, 10'000'000.0));
  cmd.add_option("--busy-poll-us", o.busy_poll_us,
                 "The private broker's limits.busy_poll_us: microseconds it polls for more work "
                 "before it sleeps (0: sleeps at once, the default)")
      ->check(CLI::Range(0, 100'000));
  cmd.add_option("--address", o.address, "Use a running broker instead of a private one");
  cmd.add_flag(
      "--json", o.json,
      text("One JSON object instead of the table", "One JSON object instead of the tables"));
}

Summary summarize(const Histogram& h) {
  const auto p = [&](double q) { return static_cast<double>(h.percentile(q)); };
  return {p(50), p(90), p(99), p(99.9), static_cast<double>(h.max())};
}

Summary median_summary(const std::vector<Summary>& runs) {
  const auto field = [&](double Summary::*f) {
    std::vector<double> v;
    for (const auto& s : runs)
      v.push_back(s.*f);
    return median_of(std::move(v));
  };
  return {field(&Summary::p50), field(&Summary::p90), field(&Summary::p99), field(&Summary::p999),
          field(&Summary::max)};
}

std::size_t raw_size(const PingOptions& o) {
  return std::max<std::size_t>(o.size, 1);
}

// Ping-pong over socketpair(AF_UNIX, SOCK_STREAM) with blocking read/write: this machine's
// floor for one process waking another and back, with no broker in between.
Summary run_raw(const PingOptions& o, Histogram& h) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    throw std::runtime_error("socketpair failed");
  }
  Fd mine(sv[0]), theirs(sv[1]);
  const std::size_t size = raw_size(o);
  Child echo([&] {
    mine.reset();
    std::string buf(size, '\0');
    while (read_all(theirs.get(), buf.data(), size)) {
      if (!write_all(theirs.get(), buf.data(), size)) return 1;
    }
    return 0;  // end of file: the parent is done
  });
  theirs.reset();
  const std::string out(size, 'r');
  std::string in(size, '\0');
  const Summary s = measure(h, o, [&] {
    if (!write_all(mine.get(), out.data(), size) || !read_all(mine.get(), in.data(), size)) {
      throw std::runtime_error("raw ping-pong: the echo process went away");
    }
  });
  mine.reset();
  if (!echo.wait()) throw std::runtime_error("raw ping-pong: the echo process failed");
  return s;
}

std::string summary_json(const Summary& s) {
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "{\"p50_us\":%.3f,\"p90_us\":%.3f,\"p99_us\":%.3f,\"p99_9_us\":%.3f,"
                "\"max_us\":%.3f}",
                us(s.p50), us(s.p90), us(s.p99), us(s.p999), us(s.max));
  return buf;
}

// "latency" or "direct" figures shared by both JSON objects, without the braces.
std::string comparison_json(const PingOptions& o, const Comparison& c, const char* name) {
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "\"cpus_online\":%ld,\"round_trips\":%lld,\"warmup\":%lld,\"size\":%zu,"
                "\"raw_size\":%zu,\"runs\":%d,\"raw_runs\":%zu,\"busy_poll_us\":%u,",
                cpus_online(), o.count, o.warmup, o.size, raw_size(o), o.runs, c.raw_runs.size(),
                o.busy_poll_us);
  std::string out = buf;
  out += "\"raw_socketpair\":" + summary_json(c.raw) + ",\"" + name + "\":" + summary_json(c.qbus) +
         ",";
  std::snprintf(buf, sizeof buf, "\"ratio_p50\":%.3f,\"ratio_p99\":%.3f",
                ratio(c.qbus.p50, c.raw.p50), ratio(c.qbus.p99, c.raw.p99));
  return out + buf;
}

void print_comparison(const PingOptions& o, const Comparison& c, const char* what,
                      const char* label, bool own_daemon) {
  std::printf("%s: %lld round trips x %zu B per run (+%lld warmup), median of %d run(s)\n", what,
              o.count, o.size, o.warmup, o.runs);
  std::printf(
      "  %ld CPU(s) online (sysconf), nothing pinned; %s%s\n", cpus_online(),
      own_daemon ? "private qbusd" : ("broker at " + o.address).c_str(),
      o.busy_poll_us > 0 ? (", busy_poll_us " + std::to_string(o.busy_poll_us)).c_str() : "");
  std::printf("  raw: %zu run(s) alternating with the qbus runs, before and after each%s\n",
              c.raw_runs.size(), o.size == 0 ? "; 1 B pings (a 0 B write wakes nobody)" : "");
  std::printf("  %-30s %9s %9s %9s %9s %9s\n", "round trip (us)", "p50", "p90", "p99", "p99.9",
              "max");
  using Row = std::pair<const char*, const Summary*>;
  for (const auto& [name, s] : {Row{"raw socketpair ping-pong", &c.raw}, Row{label, &c.qbus}}) {
    std::printf("  %-30s %9.2f %9.2f %9.2f %9.2f %9.2f\n", name, us(s->p50), us(s->p90), us(s->p99),
                us(s->p999), us(s->max));
  }
  std::printf("  %-30s %8.2fx %9s %8.2fx\n", "qbus/raw", ratio(c.qbus.p50, c.raw.p50), "",
              ratio(c.qbus.p99, c.raw.p99));
  const auto runs_line = [](const char* name, const std::vector<Summary>& runs) {
    std::printf("  runs, p50/p99 (us), %-5s", name);
    for (const auto& s : runs)
      std::printf(" %.2f/%.2f", us(s.p50), us(s.p99));
    std::printf("\n");
  };
  runs_line("raw:", c.raw_runs);
  runs_line("qbus:", c.qbus_runs);
}

std::unique_ptr<qbus::testing::Daemon> private_daemon(const PingOptions& o, bool deep_inbox) {
  if (!o.address.empty()) {
    if (o.busy_poll_us > 0) {
      throw std::runtime_error("--busy-poll-us configures the private broker: not with --address");
    }
    return nullptr;
  }
  std::string limits = "\"busy_poll_us\": " + std::to_string(o.busy_poll_us);
  std::string sections;
  if (deep_inbox) {
    limits += R"(, "uid_max_queued_bytes": 137438953472, "uid_max_queued_messages": 1000000000000)";
    sections = R"("inbox": {"max_messages": 100000000, "max_bytes": 68719476736}, )";
  }
  qbus::testing::DaemonOptions d;
  d.log_level = "warn";
  d.config_json = "{" + sections + "\"limits\": {" + limits + "}}";
  return std::make_unique<qbus::testing::Daemon>(d);
}

}  // namespace qbus::bench
