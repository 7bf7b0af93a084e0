// qbus-bench: measures qbus end to end with real processes and the real daemon.
//
//   qbus-bench throughput [--producers P] [--consumers C] [--queues K] [--messages N]
//                         [--duration S] [--size BYTES] [--batch N] [--receive each|batch]
//                         [--send-batch N]
//                         [--phase both|enqueue|drain] [--runs R] [--address ADDR] [--json]
//   qbus-bench latency [--requests N] [--warmup N] [--size BYTES] [--runs R] [--rate R]
//                      [--address ADDR] [--json]
//   qbus-bench direct [--messages N] [--warmup N] [--size BYTES] [--runs R]
//                     [--throughput-messages N] [--rate R] [--address ADDR] [--json]
//   qbus-bench bulk [--sizes S,S,...] [--runs R] [--warmup N] [--address ADDR]
//                   [--tcp-address ADDR] [--json]
//   qbus-bench connections [--connections N] [--idle-seconds S] [--address ADDR] [--json]
//   qbus-bench memory [--messages N] [--size BYTES] [--json]
//
// throughput: producers and consumers are separate processes released together from a
// barrier; the time runs until every consumer has its share (--phase both), until every
// producer's sync() returned (enqueue), or, after an untimed fill, until the consumers have
// drained the queues (drain). The queues are declared deep enough never to bind.
//
// latency: one outstanding request()/reply() round trip at a time through a queue, beside
// a raw socketpair ping-pong between two processes measured in the same invocation
// (alternately, raw first and last), so the broker's cost is read against this machine's
// floor rather than against numbers from another day. direct: the same for PID-routed
// direct messages, plus one-way direct-send throughput. With --rate, both instead offer
// requests at a fixed rate, open loop, and time each from when it was due.
//
// bulk: large payloads one at a time from a producer process to a consumer process blocked
// in receive(): a shared-memory region handed over with send(key, std::move(region)) (time
// until the consumer holds the mapping, and until it has read every byte), the same bytes
// inline through the socket, and a plain memcpy in one process as the floor. Payloads over
// the broker's inline limit are taken inline by a consumer on TCP, if there is one. The
// private qbusd raises the inline limit to its maximum and listens on loopback TCP for this.
//
// connections: N idle connections; the daemon's RSS before and after, and its CPU time
// while they idle for --idle-seconds (the one deliberate sleep in this program).
//
// memory: the daemon's RSS idle (nobody connected), with N messages queued, and once they
// are drained again: what a queued message costs the broker.
//
// Unless --address is given, a private qbusd is started on a temporary socket. With --runs R
// the figures are the median run (per percentile for the latency tables). Processes
// synchronise through pipes and messages, never sleeps (only the fixed-rate sender waits for
// each request's due time, and connections idles on purpose); nothing is pinned to a CPU.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <qbus/client.hpp>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "daemon.hpp"
#include "histogram.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::seconds;

constexpr char kQueue[] = "bench";
constexpr char kStop[] = "\x01STOP";

enum class Phase { both, enqueue, drain };

const char* phase_name(Phase p) {
  switch (p) {
    case Phase::enqueue:
      return "enqueue";
    case Phase::drain:
      return "drain";
    case Phase::both:
      break;
  }
  return "both";
}

struct Options {
  int producers = 1;
  int consumers = 1;
  int queues = 1;
  long long messages = 1'000'000;
  double duration = 0;  // > 0: producers send for this many seconds instead of `messages`
  std::size_t size = 64;
  std::size_t batch = 256;   // messages per receive round trip
  bool views = true;         // consumers use receive_each (else receive_batch)
  long long send_batch = 0;  // sends per Client::Batch; 0: one Batch around all of them
  Phase phase = Phase::both;
  int runs = 3;
  std::string address;
  bool json = false;
};

struct RunResult {
  double seconds = 0;
  long long messages = 0;          // accepted by the broker (and received, unless enqueue)
  double daemon_cpu_seconds = -1;  // unknown with --address
  double rate() const { return seconds > 0 ? static_cast<double>(messages) / seconds : 0; }
};

// CPU time of a process in seconds: the sum of its threads' run times from
// /proc/<pid>/task/*/schedstat (nanoseconds), else utime + stime from /proc/<pid>/stat
// (clock ticks, usually 10 ms: too coarse for an idle daemon).
double cpu_seconds(pid_t pid) {
  const std::string proc = "/proc/" + std::to_string(pid);
  std::error_code ec;
  unsigned long long ns = 0;
  bool have_schedstat = false;
  for (const auto& task : std::filesystem::directory_iterator(proc + "/task", ec)) {
    std::ifstream f(task.path() / "schedstat");
    unsigned long long run = 0;
    if (!(f >> run)) continue;
    ns += run;
    have_schedstat = true;
  }
  if (have_schedstat) return static_cast<double>(ns) / 1e9;
  std::ifstream f(proc + "/stat");
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

std::string queue_name(const Options& o, int worker) {
  return o.queues == 1 ? std::string(kQueue)
                       : std::string(kQueue) + "." + std::to_string(worker % o.queues);
}

// Workers on queue `q` when `workers` are spread round robin over the queues.
int workers_on(const Options& o, int workers, int q) {
  return workers / o.queues + (q < workers % o.queues ? 1 : 0);
}

// A producer's share of --messages: the remainder goes to the first ones.
long long producer_quota(const Options& o, int producer) {
  return o.messages / o.producers + (producer < o.messages % o.producers ? 1 : 0);
}

// Sends `quota` messages (or until --duration has passed) in Client::Batch windows of
// --send-batch, then sync(); returns how many the broker accepted.
long long produce(qbus::Client& c, const Options& o, const std::string& queue, long long quota) {
  const std::string payload(o.size, 'm');
  const bool timed = o.duration > 0;
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                           std::chrono::duration<double>(o.duration));
  std::optional<qbus::Client::Batch> all;
  if (o.send_batch == 0) all.emplace(c);
  long long sent = 0;
  while (timed ? Clock::now() < deadline : sent < quota) {
    // Timed runs look at the clock every window (256 sends without --send-batch).
    const long long window = o.send_batch > 0 ? o.send_batch : (timed ? 256 : quota);
    const long long n = timed ? window : std::min(window, quota - sent);
    std::optional<qbus::Client::Batch> one;
    if (o.send_batch > 1) one.emplace(c);
    for (long long i = 0; i < n; ++i)
      c.send(queue, payload);
    sent += n;
  }
  all.reset();
  c.sync();
  const auto& failures = c.send_failures();
  if (failures.count != 0) {
    std::fprintf(stderr, "qbus-bench: producer: %llu send(s) refused: %s\n",
                 static_cast<unsigned long long>(failures.count), failures.last_message.c_str());
  }
  return sent - static_cast<long long>(failures.count);
}

// Takes messages until a stop; returns how many data messages it took.
long long consume(qbus::Client& c, const Options& o, const std::string& queue) {
  long long taken = 0;
  while (true) {
    long long got = 0;
    long stops = 0;
    if (o.views) {
      got = static_cast<long long>(
          c.receive_each(queue, o.batch, seconds(120),
                         [&](const qbus::MessageView& m) { stops += m.text() == kStop ? 1 : 0; }));
    } else {
      const auto batch = c.receive_batch(queue, o.batch, seconds(120));
      got = static_cast<long long>(batch.size());
      stops = std::count_if(batch.begin(), batch.end(),
                            [](const qbus::Message& m) { return m.text() == kStop; });
    }
    if (got == 0) throw std::runtime_error("consumer starved for 120 s: messages were lost");
    taken += got - stops;
    if (stops == 0) continue;
    // The stops come last; one batch may hold other consumers' stops: hand them back.
    for (long extra = 1; extra < stops; ++extra)
      c.send(queue, kStop);
    c.sync();
    return taken;
  }
}

// One stop per consumer of each queue, queued behind all the data.
void send_stops(const Options& o, const std::string& address) {
  auto c = connect(address);
  for (int q = 0; q < o.queues; ++q) {
    for (int i = 0; i < workers_on(o, o.consumers, q); ++i)
      c.send(queue_name(o, q), kStop);
  }
  c.sync();
}

// Waits for `pids`; returns the sum of the counts the successful ones wrote to `reports`.
long long reap(const std::vector<pid_t>& pids, int reports, int& failed) {
  int ok = 0;
  for (const pid_t pid : pids) {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    const bool good = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    ok += good;
    failed += !good;
  }
  long long sum = 0;
  for (int i = 0; i < ok; ++i) {
    long long n = 0;
    if (::read(reports, &n, sizeof n) != static_cast<ssize_t>(sizeof n)) break;
    sum += n;
  }
  return sum;
}

class Pipe2 {
 public:
  Pipe2() {
    if (::pipe(fds) != 0) throw std::runtime_error("pipe failed");
  }
  ~Pipe2() {
    for (const int fd : fds) {
      if (fd >= 0) ::close(fd);
    }
  }
  Pipe2(const Pipe2&) = delete;
  Pipe2& operator=(const Pipe2&) = delete;
  void close(int end) {
    if (fds[end] >= 0) ::close(fds[end]);
    fds[end] = -1;
  }
  int fds[2];
};

// Producers (unless drain) and consumers (unless enqueue) are forked and connected before the
// barrier opens, so connecting is not measured. Each writes its count to `reports`.
RunResult run_throughput(const Options& o, const std::string& address, pid_t daemon_pid) {
  Pipe2 barrier, fill_barrier, reports;
  const auto report = [&](long long n) {
    return ::write(reports.fds[1], &n, sizeof n) == static_cast<ssize_t>(sizeof n) ? 0 : 1;
  };
  const auto spawn_producers = [&](Pipe2& gate) {
    std::vector<pid_t> pids;
    for (int i = 0; i < o.producers; ++i) {
      pids.push_back(spawn(gate.fds, [&] {
        auto c = connect(address);
        wait_barrier(gate.fds);
        return report(produce(c, o, queue_name(o, i), producer_quota(o, i)));
      }));
    }
    return pids;
  };
  int failed = 0;
  long long accepted = 0;
  if (o.phase == Phase::drain) {  // the fill is not measured
    const auto fillers = spawn_producers(fill_barrier);
    fill_barrier.close(0);
    fill_barrier.close(1);
    accepted = reap(fillers, reports.fds[0], failed);
    if (failed) throw std::runtime_error(std::to_string(failed) + " producer(s) failed");
    send_stops(o, address);
  }
  std::vector<pid_t> consumers, producers;
  if (o.phase != Phase::enqueue) {
    for (int i = 0; i < o.consumers; ++i) {
      consumers.push_back(spawn(barrier.fds, [&] {
        auto c = connect(address);
        wait_barrier(barrier.fds);
        return report(consume(c, o, queue_name(o, i)));
      }));
    }
  }
  if (o.phase != Phase::drain) producers = spawn_producers(barrier);
  barrier.close(0);
  const double cpu_before = daemon_pid > 0 ? cpu_seconds(daemon_pid) : 0;
  const auto start = Clock::now();
  barrier.close(1);
  long long received = 0;
  if (o.phase != Phase::drain) {
    accepted = reap(producers, reports.fds[0], failed);
    if (o.phase == Phase::both) send_stops(o, address);
  }
  if (o.phase != Phase::enqueue) received = reap(consumers, reports.fds[0], failed);
  RunResult r;
  r.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (daemon_pid > 0) r.daemon_cpu_seconds = cpu_seconds(daemon_pid) - cpu_before;
  r.messages = accepted;
  if (failed) throw std::runtime_error(std::to_string(failed) + " worker(s) failed");
  if (o.phase != Phase::enqueue && received != accepted) {
    throw std::runtime_error("consumers took " + std::to_string(received) + " of " +
                             std::to_string(accepted) + " messages");
  }
  if (o.phase == Phase::enqueue) {  // empty the queues for the next run, unmeasured
    auto c = connect(address);
    for (int q = 0; q < o.queues; ++q) {
      while (!c.receive_batch(queue_name(o, q), 4096, std::chrono::milliseconds(0)).empty()) {
      }
    }
  }
  return r;
}

// Queue bounds that never limit the run: room for every message (4294967295 with
// --duration) and 1 TiB, blocking the sender rather than refusing should one be reached.
qbus::QueueOptions throughput_queue(const Options& o) {
  constexpr long long kMaxMessages = std::numeric_limits<std::uint32_t>::max();
  const long long wanted = o.duration > 0 ? kMaxMessages : o.messages + o.consumers + 1024;
  return {static_cast<std::uint32_t>(std::min(wanted, kMaxMessages)), std::uint64_t{1} << 40,
          qbus::Overflow::block};
}

int throughput(const Options& o) {
  if (o.queues > o.producers && o.phase != Phase::drain) {
    throw std::runtime_error("--queues exceeds --producers: a queue would have no producer");
  }
  if (o.queues > o.consumers && o.phase != Phase::enqueue) {
    throw std::runtime_error("--queues exceeds --consumers: a queue would have no consumer");
  }
  if (o.duration > 0 && o.phase == Phase::drain) {
    throw std::runtime_error("--phase drain needs --messages, not --duration");
  }
  std::optional<qbus::testing::Daemon> daemon;
  std::string address = o.address;
  if (address.empty()) {
    qbus::testing::DaemonOptions d;
    d.log_level = "warn";
    // The uid's quotas of queued bytes and messages must not bind before the queues' bounds.
    d.config_json = R"({"limits": {"uid_max_queued_bytes": 1099511627776,
                                   "uid_max_queued_messages": 1000000000000}})";
    daemon.emplace(d);
    address = daemon->address();
  }
  {
    auto admin = connect(address);
    for (int q = 0; q < o.queues; ++q) {
      const std::string key = queue_name(o, q);
      try {
        admin.declare(key, throughput_queue(o));
      } catch (const qbus::Error& e) {
        if (e.code() != qbus::Errc::queue_conflict) throw;
        std::fprintf(stderr, "qbus-bench: %s; using the queue as it is\n", e.what());
      }
      while (!admin.receive_batch(key, 4096, std::chrono::milliseconds(0)).empty()) {
      }  // leftovers of an interrupted run on a shared broker
    }
  }
  std::vector<RunResult> runs;
  for (int i = 0; i < o.runs; ++i)
    runs.push_back(run_throughput(o, address, daemon ? daemon->pid() : -1));
  std::vector<RunResult> by_rate = runs;
  std::sort(by_rate.begin(), by_rate.end(),
            [](const RunResult& a, const RunResult& b) { return a.rate() < b.rate(); });
  const RunResult& med = by_rate[by_rate.size() / 2];
  const double rate = med.rate();
  const double mbps = rate * static_cast<double>(o.size) / 1e6;
  const double cpu_ns = med.daemon_cpu_seconds < 0 || med.messages == 0
                            ? -1
                            : med.daemon_cpu_seconds * 1e9 / static_cast<double>(med.messages);
  const int producers = o.producers;  // with drain: the ones that filled the queues
  const int consumers = o.phase == Phase::enqueue ? 0 : o.consumers;
  if (o.json) {
    std::printf(
        "{\"benchmark\":\"throughput\",\"phase\":\"%s\",\"producers\":%d,\"consumers\":%d,"
        "\"queues\":%d,\"messages\":%lld,\"duration\":%.3f,\"size\":%zu,\"batch\":%zu,"
        "\"receive\":\"%s\","
        "\"send_batch\":%lld,\"runs\":%d,\"median_seconds\":%.6f,\"messages_per_second\":%.0f,"
        "\"mb_per_second\":%.2f,\"daemon_cpu_ns_per_message\":%.1f,\"run_messages_per_second\":[",
        phase_name(o.phase), producers, consumers, o.queues, med.messages, o.duration, o.size,
        o.batch, o.views ? "receive_each" : "receive_batch", o.send_batch, o.runs, med.seconds,
        rate, mbps, cpu_ns);
    for (std::size_t i = 0; i < runs.size(); ++i)
      std::printf("%s%.0f", i ? "," : "", runs[i].rate());
    std::printf("]}\n");
    return 0;
  }
  const std::string send_window = o.send_batch == 0 ? "one Client::Batch"
                                  : o.send_batch == 1
                                      ? "no Batch (one write per send)"
                                      : "Client::Batch of " + std::to_string(o.send_batch);
  char sending_for[64] = "";
  if (o.duration > 0)
    std::snprintf(sending_for, sizeof sending_for, ", sending for %g s", o.duration);
  switch (o.phase) {
    case Phase::both:
      std::printf("throughput: %d producer(s) -> %d queue(s) -> %d consumer(s), concurrently",
                  o.producers, o.queues, o.consumers);
      break;
    case Phase::enqueue:
      std::printf("throughput, enqueue only: %d producer(s) -> %d queue(s), until sync()",
                  o.producers, o.queues);
      break;
    case Phase::drain:
      std::printf(
          "throughput, drain only: %d queue(s) pre-filled by %d producer(s) (not timed) -> %d "
          "consumer(s)",
          o.queues, o.producers, o.consumers);
      break;
  }
  std::printf(
      "\n  %lld x %zu B in the median run%s; sends: %s; receives: %s of %zu; median of %d "
      "run(s)\n",
      med.messages, o.size, sending_for, send_window.c_str(),
      o.views ? "receive_each" : "receive_batch", o.batch, o.runs);
  std::printf("  %-28s %12.0f\n", "messages/s", rate);
  std::printf("  %-28s %12.2f\n", "MB/s (payload)", mbps);
  std::printf("  %-28s %12.3f\n", "median run (s)", med.seconds);
  if (cpu_ns >= 0) std::printf("  %-28s %12.1f\n", "daemon CPU ns/message", cpu_ns);
  for (const auto& r : runs)
    std::printf("  run: %lld messages in %.3f s, %.0f/s\n", r.messages, r.seconds, r.rate());
  return 0;
}

// ---- latency and direct ---------------------------------------------------------------

using qbus::bench::Histogram;

constexpr char kRpcKey[] = "bench.rpc";
constexpr auto kReplyTimeout = seconds(10);
// A helper process gives up when nothing arrives for this long (the other side died).
constexpr auto kIdleTimeout = seconds(120);
const qbus::DirectOptions kNoWait{std::chrono::milliseconds(0), false};

struct PingOptions {
  long long count = 100'000;  // measured round trips per run
  long long warmup = 1'000;   // unmeasured round trips before them
  std::size_t size = 64;
  int runs = 3;
  long long stream_messages = 1'000'000;  // direct: one-way throughput messages per run
  double rate = 0;  // > 0: requests per second, open loop, instead of one at a time
  std::string address;
  bool json = false;
};

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&&) = delete;
  ~Fd() { reset(); }
  int get() const { return fd_; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

struct Pipe {
  Fd read;
  Fd write;
};

Pipe make_pipe() {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
  return {Fd(p[0]), Fd(p[1])};
}

bool write_all(int fd, const void* data, std::size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

// False on end of file or an error before `n` bytes arrived.
bool read_all(int fd, void* data, std::size_t n) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    const ssize_t r = ::read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

// A forked process running `body`, which exits with body's result (1 when it throws).
// A Child that was not wait()ed for is killed and reaped by the destructor, so an exception
// in the parent leaves no stray processes.
class Child {
 public:
  template <typename F>
  explicit Child(F&& body) : pid_(::fork()) {
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ > 0) return;
    int code = 1;
    try {
      code = body();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "qbus-bench: worker: %s\n", e.what());
    } catch (...) {
      std::fprintf(stderr, "qbus-bench: worker: unknown exception\n");
    }
    ::_exit(code);
  }
  ~Child() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  // Waits for the exit; true when the process exited with status 0.
  bool wait() {
    int status = 0;
    const pid_t pid = std::exchange(pid_, -1);
    while (::waitpid(pid, &status, 0) < 0) {
      if (errno != EINTR) return false;
    }
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
  }

 private:
  pid_t pid_;
};

// Child side of a readiness pipe: sends `value` once the child is connected.
template <typename T>
bool announce(Pipe& ready, const T& value) {
  ready.read.reset();
  const bool ok = write_all(ready.write.get(), &value, sizeof value);
  ready.write.reset();
  return ok;
}

// Parent side: the value the child announced; a child that died first gives end of file.
template <typename T>
T await_ready(Pipe& ready, const char* who) {
  ready.write.reset();
  T value{};
  if (!read_all(ready.read.get(), &value, sizeof value)) {
    throw std::runtime_error(std::string(who) + " failed to start");
  }
  ready.read.reset();
  return value;
}

long long now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

// Round-trip percentiles of one run (or the per-percentile median of several), in ns.
struct Summary {
  double p50 = 0, p90 = 0, p99 = 0, p999 = 0, max = 0;
};

Summary summarize(const Histogram& h) {
  const auto p = [&](double q) { return static_cast<double>(h.percentile(q)); };
  return {p(50), p(90), p(99), p(99.9), static_cast<double>(h.max())};
}

double median_of(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
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

// One outstanding request() at a time to a responder that reply()s from another process.
Summary run_rpc(const PingOptions& o, const std::string& address, Histogram& h) {
  Pipe ready = make_pipe();
  Child responder([&] {
    auto c = connect(address);
    const std::string payload(o.size, 'p');
    if (!announce(ready, '\1')) return 1;
    while (true) {
      auto m = c.receive(kRpcKey, kIdleTimeout);
      if (!m) return 1;
      if (!m->is_request()) break;  // the stop
      c.reply(*m, payload);
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

double us(double ns) {
  return ns / 1e3;
}
double ratio(double a, double b) {
  return b > 0 ? a / b : 0;
}

long cpus_online() {
  return ::sysconf(_SC_NPROCESSORS_ONLN);
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
                "\"raw_size\":%zu,\"runs\":%d,\"raw_runs\":%zu,",
                cpus_online(), o.count, o.warmup, o.size, raw_size(o), o.runs, c.raw_runs.size());
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
  std::printf("  %ld CPU(s) online (sysconf), nothing pinned; %s\n", cpus_online(),
              own_daemon ? "private qbusd" : ("broker at " + o.address).c_str());
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

// ---- fixed offered rate (open loop) ----------------------------------------------------
//
// A sender process sends request i at start + i/rate whatever the replies do (it never
// waits for one); a responder process answers each with send_to_pid() to the measuring
// process, which records now - (start + i/rate): the latency counts from when the request
// was due, not from when it was sent, so a sender held up by a slow broker adds the delay
// it suffered (no coordinated omission). Payloads carry the index and the pid to answer.

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

// `direct`: requests go to the responder's inbox by pid; otherwise through queue kRpcKey.
OpenLoopRun run_open_loop(const PingOptions& o, const std::string& address, Histogram& h,
                          bool direct) {
  auto rx = connect(address);
  rx.receive_direct(std::chrono::milliseconds(0));  // claims this process's inbox
  const std::uint32_t my_pid = rx.session().pid;
  const auto total = static_cast<std::uint64_t>(o.warmup + o.count);
  const double period_ns = 1e9 / o.rate;

  Pipe responder_ready = make_pipe();
  Child responder([&] {
    auto c = connect(address);
    if (!announce(responder_ready, c.session().pid)) return 1;
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
  });
  const auto responder_pid = await_ready<std::uint32_t>(responder_ready, "the responder");

  Pipe sender_ready = make_pipe();
  Pipe go = make_pipe();
  Pipe report = make_pipe();
  Child sender([&] {
    go.write.reset();
    report.read.reset();
    auto c = connect(address);
    std::string payload(open_loop_size(o), 'q');
    // Wake at the scheduled time, not up to 50 us (the default timer slack) after it.
    ::prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
    if (!announce(sender_ready, '\1')) return 1;
    long long start_ns = 0;
    if (!read_all(go.read.get(), &start_ns, sizeof start_ns)) return 1;
    for (std::uint64_t i = 0; i < total; ++i) {
      const long long due = scheduled_ns(start_ns, period_ns, i);
      if (now_ns() < due) {
        const timespec ts{static_cast<time_t>(due / 1'000'000'000),
                          static_cast<long>(due % 1'000'000'000)};
        while (::clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
        }
      }
      const Stamp s{i, my_pid, 0};
      std::memcpy(payload.data(), &s, sizeof s);
      if (direct) {
        c.send_to_pid(responder_pid, payload, kNoWait);
      } else {
        c.send(kRpcKey, payload);
      }
    }
    const long long end_ns = now_ns();
    c.sync();
    if (!write_all(report.write.get(), &end_ns, sizeof end_ns)) return 1;
    return c.send_failures().count == 0 ? 0 : 1;
  });
  go.read.reset();
  report.write.reset();
  await_ready<char>(sender_ready, "the sender");

  // steady_clock is CLOCK_MONOTONIC, the same clock in every process on the host.
  const long long start_ns = now_ns() + 20'000'000;
  if (!write_all(go.write.get(), &start_ns, sizeof start_ns)) {
    throw std::runtime_error("the sender went away");
  }
  go.write.reset();
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
  long long end_ns = 0;
  const bool reported = read_all(report.read.get(), &end_ns, sizeof end_ns);
  if (!sender.wait() || !reported) throw std::runtime_error("the sender failed");
  if (direct) {
    rx.send_to_pid(responder_pid, kStop, kNoWait);
  } else {
    rx.send(kRpcKey, kStop);
  }
  rx.sync();
  if (!responder.wait()) throw std::runtime_error("the responder failed");
  OpenLoopRun r;
  r.summary = summarize(h);
  r.achieved_rate = static_cast<double>(total) / (static_cast<double>(end_ns - start_ns) / 1e9);
  return r;
}

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

// Inboxes deep enough that a pipelined sender is never refused (inbox_full).
constexpr char kDeepInbox[] = R"({"inbox": {"max_messages": 100000000, "max_bytes": 68719476736},
    "limits": {"uid_max_queued_bytes": 137438953472, "uid_max_queued_messages": 1000000000000}})";

// A private qbusd unless --address names a running broker (then nullptr).
std::unique_ptr<qbus::testing::Daemon> private_daemon(const PingOptions& o,
                                                      const std::string& config_json) {
  if (!o.address.empty()) return nullptr;
  qbus::testing::DaemonOptions d;
  d.log_level = "warn";
  d.config_json = config_json;
  return std::make_unique<qbus::testing::Daemon>(d);
}

int latency(const PingOptions& o) {
  ::signal(SIGPIPE, SIG_IGN);  // a dead echo process is an error to report, not a signal
  // At a fixed rate the replies queue in this process's inbox while it records: deep enough.
  const auto daemon = private_daemon(o, o.rate > 0 ? kDeepInbox : "");
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
    c.sync();
    if (c.send_failures().count == 0) return 0;
    std::fprintf(stderr, "qbus-bench: direct sender: %llu send(s) failed: %s\n",
                 static_cast<unsigned long long>(c.send_failures().count),
                 c.send_failures().last_message.c_str());
    return 1;
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
  const auto daemon = private_daemon(o, kDeepInbox);
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

// ---- connections -------------------------------------------------------------------------

struct ConnOptions {
  long long connections = 10'000;
  double idle_seconds = 10;
  std::string address;
  bool json = false;
};

// Raises this process's soft open-file limit to the hard one; returns the soft limit.
rlim_t raise_fd_limit() {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) return 0;
  if (lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &lim) != 0) ::getrlimit(RLIMIT_NOFILE, &lim);
  }
  return lim.rlim_cur;
}

// N idle connections: the daemon's RSS before and after, and its CPU time while they idle.
int connections(const ConnOptions& o) {
  const rlim_t fds = raise_fd_limit();
  if (fds != RLIM_INFINITY && static_cast<unsigned long long>(o.connections) + 64 > fds) {
    throw std::runtime_error("the open-file limit (" + std::to_string(fds) + ") is below " +
                             std::to_string(o.connections) + " connections + 64");
  }
  std::unique_ptr<qbus::testing::Daemon> daemon;
  if (o.address.empty()) {
    qbus::testing::DaemonOptions d;
    d.log_level = "warn";
    // qbusd raises its own soft fd limit to the hard one (inherited from here).
    const std::string n = std::to_string(o.connections + 64);
    d.config_json =
        R"({"limits": {"max_connections": )" + n + R"(, "uid_max_connections": )" + n + "}}";
    daemon = std::make_unique<qbus::testing::Daemon>(d);
  }
  const std::string address = daemon ? daemon->address() : o.address;
  const long rss_before = daemon ? daemon->rss_bytes() : -1;
  std::vector<qbus::Client> clients;
  clients.reserve(static_cast<std::size_t>(o.connections));
  const auto start = Clock::now();
  for (long long i = 0; i < o.connections; ++i)
    clients.push_back(connect(address));  // returns after the handshake: the broker has it
  const double open_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const long rss_after = daemon ? daemon->rss_bytes() : -1;
  // Idle: nobody sends anything; whatever CPU the daemon uses now is polling or timers.
  const double cpu_before = daemon ? cpu_seconds(daemon->pid()) : 0;
  const auto idle_start = Clock::now();
  ::usleep(static_cast<useconds_t>(o.idle_seconds * 1e6));
  const double idle_elapsed = std::chrono::duration<double>(Clock::now() - idle_start).count();
  const double idle_cpu_ms = daemon ? (cpu_seconds(daemon->pid()) - cpu_before) * 1e3 : -1;
  const long rss_idle = daemon ? daemon->rss_bytes() : -1;
  const auto n = static_cast<double>(o.connections);
  const double per_connection = daemon ? static_cast<double>(rss_after - rss_before) / n : -1;
  const double mib = 1024.0 * 1024.0;
  if (o.json) {
    std::printf(
        "{\"benchmark\":\"connections\",\"connections\":%lld,\"fd_limit\":%llu,"
        "\"open_seconds\":%.3f,\"connections_per_second\":%.0f,\"daemon_rss_before_bytes\":%ld,"
        "\"daemon_rss_after_bytes\":%ld,\"daemon_rss_after_idle_bytes\":%ld,"
        "\"bytes_per_connection\":%.0f,\"idle_seconds\":%.3f,\"daemon_idle_cpu_ms\":%.3f}\n",
        o.connections, static_cast<unsigned long long>(fds), open_seconds, n / open_seconds,
        rss_before, rss_after, rss_idle, per_connection, idle_elapsed, idle_cpu_ms);
    return 0;
  }
  std::printf("connections: %lld idle connections from one process (open-file limit %llu)\n",
              o.connections, static_cast<unsigned long long>(fds));
  std::printf("  %-36s %12.3f (%.0f/s)\n", "opened in (s)", open_seconds, n / open_seconds);
  if (!daemon) {
    std::printf("  broker at %s: its RSS and CPU are not measured (no pid)\n", o.address.c_str());
    return 0;
  }
  std::printf("  %-36s %12.2f\n", "daemon RSS before (MiB)", static_cast<double>(rss_before) / mib);
  std::printf("  %-36s %12.2f\n", "daemon RSS with them open (MiB)",
              static_cast<double>(rss_after) / mib);
  std::printf("  %-36s %12.2f\n", "added (MiB)", static_cast<double>(rss_after - rss_before) / mib);
  std::printf("  %-36s %12.0f\n", "bytes per connection", per_connection);
  std::printf("  %-36s %12.2f\n", "daemon RSS after the idle time (MiB)",
              static_cast<double>(rss_idle) / mib);
  std::printf("  %-36s %12.3f (over %.2f s, connections open)\n", "daemon CPU while idle (ms)",
              idle_cpu_ms, idle_elapsed);
  return 0;
}

// ---- memory ------------------------------------------------------------------------------

struct MemOptions {
  long long messages = 1'000'000;
  int size = 64;
  bool json = false;
};

// RSS of a private daemon idle, with N messages queued in one queue, and after draining.
int memory(const MemOptions& o) {
  qbus::testing::DaemonOptions d;
  d.log_level = "warn";
  const std::string n = std::to_string(o.messages);
  // Room for exactly N messages under the uid quotas; the queue itself is declared below.
  d.config_json = R"({"limits": {"uid_max_queued_messages": )" + n +
                  R"(, "uid_max_queued_bytes": 1099511627776}})";
  qbus::testing::Daemon daemon(d);
  const long rss_idle = daemon.rss_bytes();
  auto c = connect(daemon.address());
  c.declare(kQueue, qbus::QueueOptions{static_cast<std::uint32_t>(o.messages),
                                       std::uint64_t{1} << 40, qbus::Overflow::reject});
  const long rss_connected = daemon.rss_bytes();
  const std::string payload(static_cast<std::size_t>(o.size), 'm');
  {
    qbus::Client::Batch batch(c);
    for (long long i = 0; i < o.messages; ++i)
      c.send(kQueue, payload);
  }
  c.sync();
  if (c.send_failures().count != 0) {
    throw std::runtime_error("the broker refused " + std::to_string(c.send_failures().count) +
                             " sends: " + c.send_failures().last_message);
  }
  const long rss_queued = daemon.rss_bytes();
  long long drained = 0;
  while (drained < o.messages) {
    const auto got = c.receive_batch(kQueue, 4096, seconds(30));
    if (got.empty()) throw std::runtime_error("queued messages were lost");
    drained += static_cast<long long>(got.size());
  }
  const long rss_drained = daemon.rss_bytes();
  const double added = static_cast<double>(rss_queued - rss_connected);
  const double per_message = added / static_cast<double>(o.messages);
  const double mib = 1024.0 * 1024.0;
  if (o.json) {
    std::printf(
        "{\"benchmark\":\"memory\",\"messages\":%lld,\"size\":%d,\"daemon_rss_idle_bytes\":%ld,"
        "\"daemon_rss_connected_bytes\":%ld,\"daemon_rss_queued_bytes\":%ld,"
        "\"daemon_rss_drained_bytes\":%ld,\"queued_added_bytes\":%.0f,"
        "\"bytes_per_queued_message\":%.1f}\n",
        o.messages, o.size, rss_idle, rss_connected, rss_queued, rss_drained, added, per_message);
    return 0;
  }
  std::printf("memory: %lld messages of %d bytes queued in one queue\n", o.messages, o.size);
  std::printf("  %-36s %12.2f\n", "daemon RSS idle (MiB)", static_cast<double>(rss_idle) / mib);
  std::printf("  %-36s %12.2f\n", "... one client connected (MiB)",
              static_cast<double>(rss_connected) / mib);
  std::printf("  %-36s %12.2f\n", "... messages queued (MiB)",
              static_cast<double>(rss_queued) / mib);
  std::printf("  %-36s %12.2f\n", "added by the messages (MiB)", added / mib);
  std::printf("  %-36s %12.1f\n", "bytes per queued message", per_message);
  std::printf("  %-36s %12.2f\n", "daemon RSS after draining (MiB)",
              static_cast<double>(rss_drained) / mib);
  return 0;
}

// ---- bulk ------------------------------------------------------------------------------

constexpr char kBulkKey[] = "bench.bulk";
constexpr char kBulkReady[] = "bench.bulk.ready";
// The largest limits.max_payload_bytes qbusd accepts: the private daemon's inline limit.
constexpr std::uint32_t kMaxInlineLimit = 67107840;
// Bound of the bench queue: any inline payload fits (the default, 64 MiB, would not).
constexpr std::uint64_t kBulkQueueBytes = std::uint64_t{1} << 40;

struct BulkOptions {
  std::vector<std::size_t> sizes = {std::size_t{4} << 10, std::size_t{64} << 10,
                                    std::size_t{1} << 20, std::size_t{64} << 20,
                                    std::size_t{256} << 20};
  int runs = 5;
  int warmup = 1;
  std::string address;
  std::string tcp_address;
  bool json = false;
};

// How the payload of one measurement travels.
enum class BulkPath {
  region,        // allocate_region(), fill, send(key, std::move(region)); the consumer maps it
  inline_unix,   // send(key, bytes) inline through the Unix socket (region_threshold SIZE_MAX)
  tcp_receiver,  // sent as `region`, taken by a TCP consumer: the broker streams it inline
  none,          // no inline path for this size
};

const char* path_name(BulkPath p) {
  switch (p) {
    case BulkPath::region:
      return "region";
    case BulkPath::inline_unix:
      return "unix";
    case BulkPath::tcp_receiver:
      return "tcp_receiver";
    case BulkPath::none:
      break;
  }
  return "none";
}

// One message's timestamps (CLOCK_MONOTONIC, ns), written by the producer and the consumer
// into a MAP_SHARED mapping made before the fork; the parent reads them after both exited.
struct BulkSample {
  long long send_ns = 0;      // just before send()
  long long sent_ns = 0;      // send() returned
  long long received_ns = 0;  // receive() returned: the consumer holds the bytes
  long long read_ns = 0;      // the consumer has read every byte
  std::uint64_t xor_sent = 0;
  std::uint64_t xor_read = 0;
  std::uint64_t size_read = 0;
  int shared_memory = 0;  // Message::in_shared_memory() at the consumer
};

class SharedSamples {
 public:
  explicit SharedSamples(std::size_t n) : n_(n), bytes_(n * sizeof(BulkSample)) {
    void* p = ::mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error("mmap of the sample page failed");
    samples_ = static_cast<BulkSample*>(p);
    std::uninitialized_value_construct_n(samples_, n_);
  }
  ~SharedSamples() { ::munmap(samples_, bytes_); }
  SharedSamples(const SharedSamples&) = delete;
  SharedSamples& operator=(const SharedSamples&) = delete;
  BulkSample& operator[](std::size_t i) { return samples_[i]; }

 private:
  std::size_t n_;
  std::size_t bytes_;
  BulkSample* samples_ = nullptr;
};

// XOR of every 8-byte word (the tail bytes shifted into place): reads each byte once.
std::uint64_t xor_words(std::span<const std::byte> in) {
  std::uint64_t x = 0;
  std::size_t i = 0;
  for (; i + 8 <= in.size(); i += 8) {
    std::uint64_t w;
    std::memcpy(&w, in.data() + i, sizeof w);
    x ^= w;
  }
  for (; i < in.size(); ++i)
    x ^= static_cast<std::uint64_t>(in[i]) << (8 * (i % 8));
  return x;
}

// Fills `out` with a sequence of words depending on `seed`; returns its xor_words().
std::uint64_t fill_words(std::span<std::byte> out, std::uint64_t seed) {
  std::uint64_t w = seed;
  std::size_t i = 0;
  for (; i + 8 <= out.size(); i += 8) {
    w = w * 6364136223846793005ULL + 1442695040888963407ULL;
    std::memcpy(out.data() + i, &w, sizeof w);
  }
  for (; i < out.size(); ++i)
    out[i] = static_cast<std::byte>(seed + i);
  return xor_words(out);
}

struct BulkEndpoints {
  std::string unix_address;
  std::string tcp_address;  // the same broker over TCP; empty: no TCP receiver
  std::string token;        // empty: $QBUS_TOKEN / $QBUS_TOKEN_FILE
  std::uint32_t max_payload = 0;
};

qbus::Client bulk_client(const BulkEndpoints& ep, bool tcp) {
  qbus::ClientOptions co{tcp ? ep.tcp_address : ep.unix_address, "qbus-bench", seconds(30)};
  if (tcp) co.token = ep.token;
  co.region_threshold = SIZE_MAX;  // what the bench sends inline stays inline
  return qbus::Client(co);
}

// A producer and a consumer process pass warmup + runs payloads of `size` bytes one at a
// time along `path`; returns the samples of the measured runs.
std::vector<BulkSample> run_bulk(const BulkOptions& o, const BulkEndpoints& ep, std::size_t size,
                                 BulkPath path) {
  const int total = o.warmup + o.runs;
  SharedSamples samples(static_cast<std::size_t>(total));
  Child consumer([&] {
    auto c = bulk_client(ep, path == BulkPath::tcp_receiver);
    for (int i = 0; i < total; ++i) {
      BulkSample& s = samples[static_cast<std::size_t>(i)];
      std::optional<qbus::Message> m;
      {
        // READY and RECEIVE leave in one write and the broker handles a connection's frames
        // in order, so the producer hears READY only once this receive waits on the queue.
        qbus::Client::Batch batch(c);
        c.send(kBulkReady, "r");
        m = c.receive(kBulkKey, kIdleTimeout);
        s.received_ns = now_ns();
      }
      if (!m) return 1;
      const auto bytes = m->bytes();
      s.xor_read = xor_words(bytes);
      s.read_ns = now_ns();
      s.size_read = bytes.size();
      s.shared_memory = m->in_shared_memory() ? 1 : 0;
    }  // the Message goes here: its region is released with the next call
    c.sync();
    return c.send_failures().count == 0 ? 0 : 1;
  });
  Child producer([&] {
    auto c = bulk_client(ep, false);
    std::string payload(path == BulkPath::inline_unix ? size : 0, '\0');
    for (int i = 0; i < total; ++i) {
      if (!c.receive(kBulkReady, kIdleTimeout)) return 1;  // the consumer waits in receive
      BulkSample& s = samples[static_cast<std::size_t>(i)];
      const std::uint64_t seed = size * 131 + static_cast<std::uint64_t>(i);
      if (path == BulkPath::inline_unix) {
        s.xor_sent = fill_words(std::as_writable_bytes(std::span(payload)), seed);
        s.send_ns = now_ns();
        c.send(kBulkKey, payload);
        s.sent_ns = now_ns();
      } else {
        qbus::Region region = c.allocate_region(size);
        s.xor_sent = fill_words(region.data(), seed);  // not measured
        s.send_ns = now_ns();
        c.send(kBulkKey, std::move(region));
        s.sent_ns = now_ns();
      }
    }
    c.sync();
    if (c.send_failures().count == 0) return 0;
    std::fprintf(stderr, "qbus-bench: bulk producer: %llu send(s) failed: %s\n",
                 static_cast<unsigned long long>(c.send_failures().count),
                 c.send_failures().last_message.c_str());
    return 1;
  });
  const std::string what =
      std::string("bulk ") + path_name(path) + " " + std::to_string(size) + " B";
  if (!producer.wait()) throw std::runtime_error(what + ": the producer failed");
  if (!consumer.wait()) throw std::runtime_error(what + ": the consumer failed");
  std::vector<BulkSample> out;
  for (int i = o.warmup; i < total; ++i) {
    const BulkSample& s = samples[static_cast<std::size_t>(i)];
    if (s.size_read != size || s.xor_read != s.xor_sent) {
      throw std::runtime_error(what + ": the consumer read " + std::to_string(s.size_read) +
                               " bytes that differ from what was sent");
    }
    if ((s.shared_memory != 0) != (path == BulkPath::region)) {
      throw std::runtime_error(what + ": the consumer got " +
                               (s.shared_memory ? "a shared-memory mapping" : "inline bytes") +
                               ", not what this path should deliver");
    }
    out.push_back(s);
  }
  return out;
}

// Plain memcpy of `size` bytes between two buffers whose pages are already touched, in ns.
std::vector<double> run_memcpy(std::size_t size, int warmup, int runs) {
  const std::unique_ptr<std::byte[]> src(new std::byte[size]), dst(new std::byte[size]);
  std::memset(src.get(), 0x5a, size);
  std::memset(dst.get(), 0xa5, size);
  std::vector<double> out;
  for (int i = 0; i < warmup + runs; ++i) {
    const long long start = now_ns();
    std::memcpy(dst.get(), src.get(), size);
    asm volatile("" : : "r"(dst.get()) : "memory");  // the copy must happen
    const long long end = now_ns();
    if (i >= warmup) out.push_back(static_cast<double>(end - start));
  }
  return out;
}

struct BulkRow {
  std::size_t size = 0;
  std::vector<double> handoff, end_to_end, send_call;  // region, ns per run
  BulkPath inline_path = BulkPath::none;
  std::vector<double> inline_received, inline_end_to_end;  // ns per run
  std::vector<double> copy;                                // memcpy, ns per run
  double median_handoff() const { return median_of(handoff); }
  double median_end_to_end() const { return median_of(end_to_end); }
  double median_inline() const {
    return inline_end_to_end.empty() ? -1 : median_of(inline_end_to_end);
  }
};

std::string format_size(std::size_t b) {
  const std::pair<std::size_t, const char*> units[] = {
      {std::size_t{1} << 30, "GiB"}, {std::size_t{1} << 20, "MiB"}, {std::size_t{1} << 10, "KiB"}};
  for (const auto& [unit, name] : units) {
    if (b >= unit && b % unit == 0) return std::to_string(b / unit) + " " + name;
  }
  return std::to_string(b) + " B";
}

std::string format_ns(double ns) {
  char buf[32];
  if (ns < 1e6) {
    std::snprintf(buf, sizeof buf, "%.1f us", ns / 1e3);
  } else if (ns < 1e9) {
    std::snprintf(buf, sizeof buf, "%.2f ms", ns / 1e6);
  } else {
    std::snprintf(buf, sizeof buf, "%.3f s", ns / 1e9);
  }
  return buf;
}

std::string format_ratio(double r) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2fx", r);
  return buf;
}

std::string json_us_list(const std::vector<double>& v) {
  std::string out = "[";
  for (std::size_t i = 0; i < v.size(); ++i) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%s%.3f", i ? "," : "", us(v[i]));
    out += buf;
  }
  return out + "]";
}

std::string json_us(double ns) {
  if (ns < 0) return "null";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", us(ns));
  return buf;
}

// The row whose handoff the ratio column divides by: 4 KiB when measured, else the smallest.
const BulkRow& handoff_base(const std::vector<BulkRow>& rows) {
  for (const auto& r : rows) {
    if (r.size == std::size_t{4} << 10) return r;
  }
  return *std::min_element(rows.begin(), rows.end(),
                           [](const BulkRow& a, const BulkRow& b) { return a.size < b.size; });
}

// handoff(64 MiB) / handoff(4 KiB), or -1 when either size was not measured.
double handoff_ratio_64m_4k(const std::vector<BulkRow>& rows) {
  const BulkRow *small = nullptr, *large = nullptr;
  for (const auto& r : rows) {
    if (r.size == std::size_t{4} << 10) small = &r;
    if (r.size == std::size_t{64} << 20) large = &r;
  }
  return small && large ? ratio(large->median_handoff(), small->median_handoff()) : -1;
}

void print_bulk_json(const BulkOptions& o, const BulkEndpoints& ep,
                     const std::vector<BulkRow>& rows) {
  std::printf(
      "{\"benchmark\":\"bulk\",\"cpus_online\":%ld,\"runs\":%d,\"warmup\":%d,"
      "\"max_payload\":%u,\"tcp_receiver\":%s,\"sizes\":[",
      cpus_online(), o.runs, o.warmup, ep.max_payload, ep.tcp_address.empty() ? "false" : "true");
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const BulkRow& r = rows[i];
    const double inl = r.median_inline();
    std::printf(
        "%s{\"size\":%zu,\"region\":{\"handoff_us\":%s,\"end_to_end_us\":%s,"
        "\"send_call_us\":%s,\"runs_handoff_us\":%s,\"runs_end_to_end_us\":%s},",
        i ? "," : "", r.size, json_us(r.median_handoff()).c_str(),
        json_us(r.median_end_to_end()).c_str(), json_us(median_of(r.send_call)).c_str(),
        json_us_list(r.handoff).c_str(), json_us_list(r.end_to_end).c_str());
    if (r.inline_path == BulkPath::none) {
      std::printf("\"inline\":null,");
    } else {
      std::printf(
          "\"inline\":{\"path\":\"%s\",\"end_to_end_us\":%s,\"receive_returned_us\":%s,"
          "\"runs_end_to_end_us\":%s},",
          path_name(r.inline_path), json_us(inl).c_str(),
          json_us(median_of(r.inline_received)).c_str(), json_us_list(r.inline_end_to_end).c_str());
    }
    std::printf("\"memcpy_us\":%s,\"ratio_inline_region_end_to_end\":%s}",
                json_us(median_of(r.copy)).c_str(),
                inl < 0 ? "null" : std::to_string(ratio(inl, r.median_end_to_end())).c_str());
  }
  const double h = handoff_ratio_64m_4k(rows);
  std::printf("],\"ratio_handoff_64MiB_4KiB\":%s}\n", h < 0 ? "null" : std::to_string(h).c_str());
}

void print_bulk_table(const BulkOptions& o, const BulkEndpoints& ep,
                      const std::vector<BulkRow>& rows, bool own_daemon) {
  std::printf(
      "bulk: one payload at a time, producer process -> queue -> consumer process blocked in "
      "receive; median of %d run(s) (+%d warmup) per cell\n",
      o.runs, o.warmup);
  std::printf("  %ld CPU(s) online (sysconf), nothing pinned; %s; inline limit %u B%s\n",
              cpus_online(), own_daemon ? "private qbusd" : ("broker at " + o.address).c_str(),
              ep.max_payload,
              ep.tcp_address.empty() ? "; no TCP receiver"
                                     : ("; TCP receiver at " + ep.tcp_address).c_str());
  const BulkRow& base = handoff_base(rows);
  const std::string base_col = "handoff/" + format_size(base.size);
  std::printf("  %-9s %14s %14s %18s %11s %13s %14s\n", "size", "region handoff", "region e2e",
              "inline e2e", "memcpy", "inline/region", base_col.c_str());
  bool tcp_note = false, none_note = false;
  for (const auto& r : rows) {
    std::string inl = "n/a (over limit)";
    std::string inl_ratio = "-";
    if (r.inline_path != BulkPath::none) {
      inl = format_ns(r.median_inline());
      if (r.inline_path == BulkPath::tcp_receiver) inl += " [tcp]";
      inl_ratio = format_ratio(ratio(r.median_inline(), r.median_end_to_end()));
    }
    tcp_note |= r.inline_path == BulkPath::tcp_receiver;
    none_note |= r.inline_path == BulkPath::none;
    std::printf("  %-9s %14s %14s %18s %11s %13s %14s\n", format_size(r.size).c_str(),
                format_ns(r.median_handoff()).c_str(), format_ns(r.median_end_to_end()).c_str(),
                inl.c_str(), format_ns(median_of(r.copy)).c_str(), inl_ratio.c_str(),
                format_ratio(ratio(r.median_handoff(), base.median_handoff())).c_str());
  }
  if (const double h = handoff_ratio_64m_4k(rows); h >= 0) {
    std::printf("  region handoff 64 MiB / 4 KiB: %.2fx\n", h);
  }
  std::printf(
      "  region handoff: send(key, std::move(region)) starts -> the consumer's receive() returned "
      "a read-only mapping (filling the region is not timed)\n"
      "  e2e: send() starts -> the consumer has read every byte (XOR of all 8-byte words)\n"
      "  inline e2e: send(key, bytes) of the same payload inline through the Unix socket "
      "(region_threshold SIZE_MAX)\n");
  if (tcp_note) {
    std::printf(
        "  [tcp]: over the inline limit nothing can be sent inline; the region is handed over "
        "as above and the consumer is on TCP, so the broker streams the bytes to it inline in "
        "pieces\n");
  }
  if (none_note) {
    std::printf(
        "  n/a: over the broker's inline limit and no TCP receiver (--tcp-address) to take it "
        "inline\n");
  }
  std::printf("  memcpy: one process, both buffers already touched (the floor)\n");
}

std::string random_token() {
  std::random_device rd;
  std::string token;
  for (int i = 0; i < 4; ++i) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "%08x", rd());
    token += buf;
  }
  return token;
}

// Writes `content` to a new file only its owner may read, as qbusd requires of token files.
void write_private_file(const std::string& path, const std::string& content) {
  Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (fd.get() < 0 || !write_all(fd.get(), content.data(), content.size())) {
    throw std::runtime_error("cannot write " + path);
  }
}

int bulk(const BulkOptions& o) {
  ::signal(SIGPIPE, SIG_IGN);
  // Declared first, destroyed last: the token file outlives the daemon reading it.
  std::optional<qbus::testing::TempDir> secrets;
  std::unique_ptr<qbus::testing::Daemon> daemon;
  BulkEndpoints ep;
  if (o.address.empty()) {
    secrets.emplace();
    ep.token = random_token();
    const std::string token_file = secrets->file("token");
    write_private_file(token_file, ep.token + "\n");
    qbus::testing::DaemonOptions d;
    d.log_level = "info";  // the daemon logs the TCP port it got at info
    d.config_json = R"({"limits": {"max_payload_bytes": )" + std::to_string(kMaxInlineLimit) +
                    R"(, "uid_max_queued_bytes": 4294967296},
                        "tcp": {"listen": "127.0.0.1:0", "token_file": ")" +
                    token_file + R"("}})";
    daemon = std::make_unique<qbus::testing::Daemon>(d);
    ep.unix_address = daemon->address();
    ep.tcp_address = daemon->tcp_address();
  } else {
    ep.unix_address = o.address;
    ep.tcp_address = o.tcp_address;
  }
  auto admin = connect(ep.unix_address);
  ep.max_payload = admin.session().max_payload;
  try {
    admin.declare(kBulkKey, qbus::QueueOptions{0, kBulkQueueBytes, qbus::Overflow::block});
  } catch (const qbus::Error& e) {
    if (e.code() != qbus::Errc::queue_conflict) throw;
    std::fprintf(stderr, "qbus-bench: %s; using the queue as it is\n", e.what());
  }
  while (admin.try_receive(kBulkKey) || admin.try_receive(kBulkReady)) {
  }  // leftovers of an interrupted run on a shared broker

  std::vector<BulkRow> rows;
  for (const std::size_t size : o.sizes) {
    BulkRow row;
    row.size = size;
    for (const auto& s : run_bulk(o, ep, size, BulkPath::region)) {
      row.handoff.push_back(static_cast<double>(s.received_ns - s.send_ns));
      row.end_to_end.push_back(static_cast<double>(s.read_ns - s.send_ns));
      row.send_call.push_back(static_cast<double>(s.sent_ns - s.send_ns));
    }
    if (size <= ep.max_payload) {
      row.inline_path = BulkPath::inline_unix;
    } else if (!ep.tcp_address.empty()) {
      row.inline_path = BulkPath::tcp_receiver;
    }
    if (row.inline_path != BulkPath::none) {
      for (const auto& s : run_bulk(o, ep, size, row.inline_path)) {
        row.inline_received.push_back(static_cast<double>(s.received_ns - s.send_ns));
        row.inline_end_to_end.push_back(static_cast<double>(s.read_ns - s.send_ns));
      }
    }
    row.copy = run_memcpy(size, o.warmup, o.runs);
    rows.push_back(std::move(row));
  }
  if (o.json) {
    print_bulk_json(o, ep, rows);
  } else {
    print_bulk_table(o, ep, rows, daemon != nullptr);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"qbus-bench: end-to-end measurements of qbus", "qbus-bench"};
  app.require_subcommand(1);
  app.option_defaults()->always_capture_default();  // --help shows every default
  app.footer(
      "Each subcommand starts a private qbusd on a temporary socket unless --address is given, "
      "and prints its figures as tables (or one JSON object with --json). Processes are released "
      "by pipes and messages, never sleeps (only a --rate sender waits for each due time, and "
      "connections idles on purpose); nothing is pinned, and latency, direct and bulk show "
      "how "
      "many CPUs sysconf reports online. Run `qbus-bench SUBCOMMAND --help` for its options.");
  Options o;
  auto* tp = app.add_subcommand(
      "throughput",
      "Producers -> one or K queues -> consumers: messages/s, MB/s, daemon CPU per message");
  tp->add_option("--producers", o.producers,
                 "Producer processes (with --phase drain: the ones that pre-fill)")
      ->check(CLI::Range(1, 64));
  tp->add_option("--consumers", o.consumers, "Consumer processes")->check(CLI::Range(1, 64));
  tp->add_option("--queues", o.queues,
                 "Queues; producer i and consumer i use queue i mod K (K <= producers, consumers)")
      ->check(CLI::Range(1, 64));
  tp->add_option("--messages", o.messages, "Messages in all, split over the producers")
      ->check(CLI::Range(1LL, 1'000'000'000LL));
  tp->add_option("--duration", o.duration,
                 "Seconds the producers send for, instead of --messages (0: off; not with drain)")
      ->check(CLI::Range(0.0, 3600.0));
  tp->add_option("--size", o.size, "Payload bytes")->check(CLI::Range(0, 1 << 20));
  std::string receive_api = "each";
  tp->add_option("--receive", receive_api,
                 "Consumers take messages with receive_each (in place, no copy) or "
                 "receive_batch (a vector of Messages)")
      ->check(CLI::IsMember({"each", "batch"}));
  tp->add_option("--batch", o.batch, "Messages per receive round trip")->check(CLI::Range(1, 4096));
  tp->add_option("--send-batch", o.send_batch,
                 "Sends per Client::Batch window (0: one Batch around all; 1: no Batch, one write "
                 "per send)")
      ->check(CLI::Range(0LL, 1'000'000'000LL));
  std::string phase = "both";
  tp->add_option("--phase", phase,
                 "both: producers and consumers together; enqueue: producers only, until their "
                 "sync(); drain: the queue pre-filled (not timed), then consumers only")
      ->check(CLI::IsMember({"both", "enqueue", "drain"}));
  tp->add_option("--runs", o.runs, "Runs; the median is reported")->check(CLI::Range(1, 99));
  tp->add_option("--address", o.address, "Use a running broker instead of a private one");
  tp->add_flag("--json", o.json, "One JSON object instead of the table");

  PingOptions lo;
  auto* lat = app.add_subcommand(
      "latency",
      "request()/reply() round trips through a queue, one outstanding at a time, beside a raw "
      "socketpair ping-pong measured in the same run");
  lat->add_option("--requests", lo.count, "Measured round trips per run (qbus and raw each)")
      ->check(CLI::Range(1LL, 1'000'000'000LL));
  lat->add_option("--warmup", lo.warmup, "Unmeasured round trips before each run")
      ->check(CLI::Range(0LL, 1'000'000'000LL));
  lat->add_option("--size", lo.size, "Payload bytes of requests, replies and raw pings")
      ->check(CLI::Range(0, 1 << 20));
  lat->add_option("--runs", lo.runs,
                  "qbus runs, alternating with R+1 raw runs; each percentile is the median")
      ->check(CLI::Range(1, 99));
  lat->add_option("--rate", lo.rate,
                  "Requests/s offered at a fixed rate, open loop (a request through the queue, "
                  "the reply by send_to_pid), instead of one at a time and the raw baseline; "
                  "latency runs from each request's scheduled time (0: off)")
      ->check(CLI::Range(0.0, 10'000'000.0));
  lat->add_option("--address", lo.address, "Use a running broker instead of a private one");
  lat->add_flag("--json", lo.json, "One JSON object instead of the table");

  PingOptions dopt;
  auto* dir = app.add_subcommand(
      "direct",
      "PID-routed direct messages: send_to_pid()/receive_direct() ping-pong beside a raw "
      "socketpair ping-pong, then one-way direct-send throughput");
  dir->add_option("--messages", dopt.count, "Measured ping-pong round trips per run")
      ->check(CLI::Range(1LL, 1'000'000'000LL));
  dir->add_option("--warmup", dopt.warmup, "Unmeasured round trips before each ping-pong run")
      ->check(CLI::Range(0LL, 1'000'000'000LL));
  dir->add_option("--size", dopt.size, "Payload bytes of every message")
      ->check(CLI::Range(0, 1 << 20));
  dir->add_option("--runs", dopt.runs,
                  "Runs: ping-pong runs alternating with R+1 raw runs (median per percentile), "
                  "then R throughput runs (median)")
      ->check(CLI::Range(1, 99));
  dir->add_option("--throughput-messages", dopt.stream_messages,
                  "Messages per one-way throughput run (Client::Batch, confirm=false)")
      ->check(CLI::Range(1LL, 1'000'000'000LL));
  dir->add_option("--rate", dopt.rate,
                  "Messages/s offered at a fixed rate, open loop (send_to_pid to an echo "
                  "process, answered by send_to_pid), instead of the ping-pong, the raw "
                  "baseline and the throughput run; latency runs from each scheduled time "
                  "(0: off)")
      ->check(CLI::Range(0.0, 10'000'000.0));
  dir->add_option("--address", dopt.address, "Use a running broker instead of a private one");
  dir->add_flag("--json", dopt.json, "One JSON object instead of the tables");

  BulkOptions bo;
  auto* blk = app.add_subcommand(
      "bulk",
      "Large payloads one at a time: a shared-memory region handed over (until the consumer "
      "holds it, and until it has read every byte) beside the same bytes inline and a plain "
      "memcpy");
  blk->add_option("--sizes", bo.sizes,
                  "Payload sizes, comma-separated; K, M, G suffixes are powers of 1024 (4K,64M)")
      ->delimiter(',')
      ->transform(CLI::AsSizeValue(false))
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 30));
  blk->add_option("--runs", bo.runs, "Measured messages per size and path; the median is reported")
      ->check(CLI::Range(1, 99));
  blk->add_option("--warmup", bo.warmup, "Unmeasured messages before them")
      ->check(CLI::Range(0, 9));
  blk->add_option("--address", bo.address,
                  "Use a running broker (a Unix socket) instead of a private one");
  blk->add_option("--tcp-address", bo.tcp_address,
                  "With --address: the same broker over TCP, to take payloads over its inline "
                  "limit inline (token from $QBUS_TOKEN or $QBUS_TOKEN_FILE)");
  blk->add_flag("--json", bo.json, "One JSON object instead of the table");

  ConnOptions co;
  auto* con = app.add_subcommand(
      "connections",
      "N idle connections: the daemon's RSS before and after, and its CPU time while idle");
  con->add_option("--connections", co.connections,
                  "Idle connections to open (the bench raises its soft open-file limit to the "
                  "hard one)")
      ->check(CLI::Range(1LL, 999'000LL));
  con->add_option("--idle-seconds", co.idle_seconds,
                  "Seconds to measure the daemon's CPU time with the connections open and idle")
      ->check(CLI::Range(0.0, 3600.0));
  con->add_option("--address", co.address,
                  "Use a running broker instead of a private one (then no RSS or CPU figures)");
  con->add_flag("--json", co.json, "One JSON object instead of the table");

  MemOptions mo;
  auto* mem = app.add_subcommand(
      "memory", "The private daemon's RSS idle, with N messages queued, and after draining them");
  mem->add_option("--messages", mo.messages, "Messages to queue (one queue, one producer)")
      ->check(CLI::Range(1LL, 4'000'000'000LL));
  mem->add_option("--size", mo.size, "Payload bytes")->check(CLI::Range(0, 1 << 20));
  mem->add_flag("--json", mo.json, "One JSON object instead of the table");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "qbus-bench: " << e.what() << "\n";
    return 2;
  }
  try {
    if (*lat) return latency(lo);
    if (*dir) return direct(dopt);
    if (*blk) return bulk(bo);
    if (*con) return connections(co);
    if (*mem) return memory(mo);
    o.phase = phase == "enqueue" ? Phase::enqueue : phase == "drain" ? Phase::drain : Phase::both;
    o.views = receive_api == "each";
    return throughput(o);
  } catch (const std::exception& e) {
    std::cerr << "qbus-bench: " << e.what() << "\n";
    return 1;
  }
}
