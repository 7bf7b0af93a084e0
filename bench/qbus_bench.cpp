// qbus-bench: measures qbus end to end with real processes and the real daemon.
//
//   qbus-bench throughput [--producers P] [--consumers C] [--messages N] [--size BYTES]
//                         [--batch N] [--runs R] [--address ADDR] [--json]
//
// Producers and consumers are separate processes released together from a barrier; the
// time runs until every consumer has its share. Unless --address is given, a private
// qbusd is started on a temporary socket. With --runs R the figures are the median run.
#include <sys/wait.h>
#include <unistd.h>
#include <qbus/client.hpp>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>

#include "daemon.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::seconds;

constexpr char kQueue[] = "bench";
constexpr char kStop[] = "\x01STOP";

struct Options {
  int producers = 1;
  int consumers = 1;
  long long messages = 1'000'000;
  std::size_t size = 64;
  std::size_t batch = 256;
  int runs = 3;
  std::string address;
  bool json = false;
};

struct RunResult {
  double seconds = 0;
  double daemon_cpu_seconds = -1;  // unknown with --address
};

// utime + stime of a process, in seconds.
double cpu_seconds(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::istringstream rest(stat.substr(stat.rfind(')') + 2));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

// Blocks until the parent closes the barrier's write end, releasing every worker at once.
void wait_barrier(const int (&barrier)[2]) {
  char c;
  if (::read(barrier[0], &c, 1) < 0) throw std::runtime_error("barrier read failed");
}

template <typename F>
pid_t spawn(const int (&barrier)[2], F&& body) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(barrier[1]);
    int code = 1;
    try {
      code = body();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "qbus-bench: worker: %s\n", e.what());
    }
    ::_exit(code);
  }
  return pid;
}

qbus::Client connect(const std::string& address) {
  return qbus::Client(qbus::ClientOptions{address, "qbus-bench", seconds(30)});
}

RunResult run_throughput(const Options& o, const std::string& address, pid_t daemon_pid) {
  // Connections are made before the barrier so that connecting is not measured.
  int barrier[2];
  if (::pipe(barrier) != 0) throw std::runtime_error("pipe failed");
  std::vector<pid_t> workers;
  const long long per_producer = o.messages / o.producers;
  for (int i = 0; i < o.consumers; ++i) {
    workers.push_back(spawn(barrier, [&] {
      auto c = connect(address);
      wait_barrier(barrier);
      while (true) {
        const auto got = c.receive_batch(kQueue, o.batch, seconds(120));
        if (got.empty()) return 1;  // starved for two minutes: messages were lost
        const auto stops = std::count_if(got.begin(), got.end(),
                                         [](const qbus::Message& m) { return m.text() == kStop; });
        if (stops == 0) continue;
        // The stops come last; one batch may hold other consumers' stops: hand them back.
        for (long extra = 1; extra < stops; ++extra) c.send(kQueue, kStop);
        c.sync();
        return 0;
      }
    }));
  }
  for (int i = 0; i < o.producers; ++i) {
    workers.push_back(spawn(barrier, [&] {
      auto c = connect(address);
      const std::string payload(o.size, 'm');
      wait_barrier(barrier);
      {
        qbus::Client::Batch batch(c);
        for (long long n = 0; n < per_producer; ++n)
          c.send(kQueue, payload);
      }
      c.sync();
      return c.send_failures().count == 0 ? 0 : 1;
    }));
  }
  ::close(barrier[0]);
  const double cpu_before = daemon_pid > 0 ? cpu_seconds(daemon_pid) : 0;
  const auto start = Clock::now();
  ::close(barrier[1]);
  // Producers finish first; then one stop per consumer, queued behind all the data.
  int failed = 0;
  for (int i = 0; i < o.producers; ++i) {
    int status = 0;
    ::waitpid(workers[o.consumers + i], &status, 0);
    failed += !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  {
    auto c = connect(address);
    for (int i = 0; i < o.consumers; ++i)
      c.send(kQueue, kStop);
  }
  for (int i = 0; i < o.consumers; ++i) {
    int status = 0;
    ::waitpid(workers[i], &status, 0);
    failed += !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  RunResult r;
  r.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (daemon_pid > 0) r.daemon_cpu_seconds = cpu_seconds(daemon_pid) - cpu_before;
  if (failed) throw std::runtime_error(std::to_string(failed) + " worker(s) failed");
  return r;
}

int throughput(const Options& o) {
  std::optional<qbus::testing::Daemon> daemon;
  std::string address = o.address;
  if (address.empty()) {
    qbus::testing::DaemonOptions d;
    d.log_level = "warn";
    // Deep enough that producers are not throttled by the default per-queue bound.
    d.config_json = R"({"queue_defaults": {"max_messages": 10000000, "max_bytes": 4294967296},
                        "limits": {"uid_max_queued_bytes": 8589934592}})";
    daemon.emplace(d);
    address = daemon->address();
  }
  std::vector<RunResult> runs;
  for (int i = 0; i < o.runs; ++i)
    runs.push_back(run_throughput(o, address, daemon ? daemon->pid() : -1));
  std::sort(runs.begin(), runs.end(),
            [](const RunResult& a, const RunResult& b) { return a.seconds < b.seconds; });
  const RunResult& med = runs[runs.size() / 2];
  const long long total = o.messages / o.producers * o.producers;
  const double rate = static_cast<double>(total) / med.seconds;
  const double mbps = rate * static_cast<double>(o.size) / 1e6;
  const double cpu_ns =
      med.daemon_cpu_seconds < 0 ? -1 : med.daemon_cpu_seconds * 1e9 / static_cast<double>(total);
  if (o.json) {
    std::printf(
        "{\"benchmark\":\"throughput\",\"producers\":%d,\"consumers\":%d,\"messages\":%lld,"
        "\"size\":%zu,\"batch\":%zu,\"runs\":%d,\"median_seconds\":%.6f,"
        "\"messages_per_second\":%.0f,\"mb_per_second\":%.2f,\"daemon_cpu_ns_per_message\":%.1f}\n",
        o.producers, o.consumers, total, o.size, o.batch, o.runs, med.seconds, rate, mbps, cpu_ns);
  } else {
    std::printf(
        "throughput: %d producer(s) -> 1 queue -> %d consumer(s), %lld x %zu B, "
        "receive batch %zu, median of %d run(s)\n",
        o.producers, o.consumers, total, o.size, o.batch, o.runs);
    std::printf("  %-28s %12.0f\n", "messages/s", rate);
    std::printf("  %-28s %12.2f\n", "MB/s (payload)", mbps);
    std::printf("  %-28s %12.3f\n", "median run (s)", med.seconds);
    if (cpu_ns >= 0) std::printf("  %-28s %12.1f\n", "daemon CPU ns/message", cpu_ns);
    for (const auto& r : runs)
      std::printf("  run: %.3f s\n", r.seconds);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"qbus-bench: end-to-end measurements of qbus", "qbus-bench"};
  app.require_subcommand(1);
  Options o;
  auto* tp = app.add_subcommand("throughput", "Producers -> one queue -> consumers");
  tp->add_option("--producers", o.producers, "Producer processes")->check(CLI::Range(1, 64));
  tp->add_option("--consumers", o.consumers, "Consumer processes")->check(CLI::Range(1, 64));
  tp->add_option("--messages", o.messages, "Messages in all")
      ->check(CLI::Range(1LL, 1'000'000'000LL));
  tp->add_option("--size", o.size, "Payload bytes")->check(CLI::Range(0, 1 << 20));
  tp->add_option("--batch", o.batch, "Messages per receive round trip")->check(CLI::Range(1, 4096));
  tp->add_option("--runs", o.runs, "Runs; the median is reported")->check(CLI::Range(1, 99));
  tp->add_option("--address", o.address, "Use a running broker instead of a private one");
  tp->add_flag("--json", o.json, "One JSON object instead of the table");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "qbus-bench: " << e.what() << "\n";
    return 2;
  }
  try {
    return throughput(o);
  } catch (const std::exception& e) {
    std::cerr << "qbus-bench: " << e.what() << "\n";
    return 1;
  }
}
