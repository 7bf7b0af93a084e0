// qbus-bench recovery: how long qbusd takes to come back with N messages in a durable queue.
//
// Each run, on a fresh state directory (StateDir: on a real disk): a private qbusd is
// started, one client declares a durable queue (fsync --fill-fsync) and sends N messages
// in one Client::Batch, the last one confirmed (its OK comes once the journal has written
// it and every earlier one). The daemon is then SIGKILLed, the journal's files measured,
// and a second qbusd started on the same state directory and configuration. The clock runs
// from just before fork() until (a) READY=1 arrives on the NOTIFY_SOCKET the bench owns
// (qbusd says it once the journal is replayed, just before its event loop runs) and (b) a
// client's handshake, retried from the moment of the fork, completes (the socket is bound
// before the replay; the connection waits in the backlog until the loop runs). qbusd's own
// figure, stats.storage.recovery.milliseconds (replaying the segments into the broker), is
// read with `qbusctl stats --json`, and the recovered count is checked against N. The
// same start on an empty state directory is measured beside it each run, so what the
// journal adds shows next to what a start costs anyway.
//
// --drop-caches writes 3 to /proc/sys/vm/drop_caches (root only) after the SIGKILL, so the
// replay reads the segments from the disk as after a reboot; without it they come from
// the page cache, as after a crash of qbusd alone.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "common.hpp"
#include "daemon.hpp"
#include "modes.hpp"

namespace qbus::bench {
namespace {

struct RecoveryOptions {
  long long messages = 1'000'000;
  std::size_t size = 64;
  std::string fill_fsync = "none";
  int runs = 3;
  std::string state_dir;
  bool drop_caches = false;
  bool json = false;
};

void add_options(CLI::App& cmd, RecoveryOptions& o) {
  cmd.add_option("--messages", o.messages, "Messages queued in the durable queue before the kill")
      ->check(CLI::Range(1LL, 100'000'000LL));
  cmd.add_option("--size", o.size, "Payload bytes")->check(CLI::Range(0, 1 << 20));
  cmd.add_option("--fill-fsync", o.fill_fsync,
                 "The durable queue's fsync policy while it is filled (the last send is "
                 "confirmed either way, so every message is in the journal at the kill)")
      ->check(CLI::IsMember({"always", "batch", "none"}));
  cmd.add_option("--runs", o.runs, "Runs (each on a fresh state directory); medians reported")
      ->check(CLI::Range(1, 99));
  cmd.add_option("--state-dir", o.state_dir,
                 "Directory under which each run's state directory is made; default $TMPDIR "
                 "or /tmp, or /var/tmp when that is a tmpfs");
  cmd.add_flag("--drop-caches", o.drop_caches,
               "Drop the page cache after the kill (root; writes /proc/sys/vm/drop_caches), so "
               "the journal is read from the disk");
  cmd.add_flag("--json", o.json, "One JSON object instead of the table");
}

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// A qbusd run by the bench itself (not qbus::testing::Daemon, whose destructor treats a
// killed daemon as a test failure): its socket, admin socket, config and log live in a
// temporary directory of their own; its state directory is the caller's.
class Qbusd {
 public:
  Qbusd(const qbus::testing::TempDir& run, const std::string& state_dir, const std::string& config)
      : run_(run), t0_(Clock::now()), notify_(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) {
    const std::string notify_path = run.file("notify.sock");
    ::unlink(notify_path.c_str());
    if (notify_.get() < 0) throw std::runtime_error("socket failed");
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::strncpy(sa.sun_path, notify_path.c_str(), sizeof(sa.sun_path) - 1);
    if (::bind(notify_.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
      throw std::runtime_error("bind " + notify_path + " failed");
    }
    std::ofstream(run.file("qbusd.json")) << config;
    std::vector<std::string> args = {qbus::testing::qbusd_path(),
                                     "--socket",
                                     socket_path(),
                                     "--log-level",
                                     "info",
                                     "--bus",
                                     "user",
                                     "--state-dir",
                                     state_dir,
                                     "--config",
                                     run.file("qbusd.json")};
    std::vector<char*> argv;
    for (auto& a : args)
      argv.push_back(a.data());
    argv.push_back(nullptr);
    const std::string log = run.file("qbusd.log");
    t0_ = Clock::now();
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
      if (fd >= 0) ::dup2(fd, 2);
      if (fd > 2) ::close(fd);
      ::setenv("NOTIFY_SOCKET", notify_path.c_str(), 1);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
  }
  ~Qbusd() {
    if (pid_ > 0) kill(SIGKILL);
  }
  Qbusd(const Qbusd&) = delete;
  Qbusd& operator=(const Qbusd&) = delete;

  std::string socket_path() const { return run_.file("qbus.sock"); }
  std::string address() const { return "unix:" + socket_path(); }
  pid_t pid() const { return pid_; }
  Clock::time_point started() const { return t0_; }

  // Waits for READY=1; the milliseconds since the fork.
  double wait_ready() {
    const auto deadline = Clock::now() + std::chrono::seconds(600);
    for (;;) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        throw std::runtime_error("qbusd exited before it was ready:\n" + log());
      }
      if (Clock::now() > deadline) throw std::runtime_error("qbusd was not ready in 600 s");
      pollfd p{notify_.get(), POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      char buf[4096];
      const ssize_t n = ::recv(notify_.get(), buf, sizeof buf, 0);
      if (n <= 0) continue;
      const double ms = ms_since(t0_);
      const std::string msg(buf, static_cast<std::size_t>(n));
      if (msg.find("READY=1") != std::string::npos) return ms;
    }
  }

  // SIGKILL (or another signal) and reap.
  void kill(int sig) {
    if (pid_ <= 0) return;
    ::kill(pid_, sig);
    while (::waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
  }

  // SIGTERM and reap; the exit status (-1 on a signal).
  int stop() {
    if (pid_ <= 0) return -1;
    ::kill(pid_, SIGTERM);
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  std::string log() const {
    std::ifstream f(run_.file("qbusd.log"));
    return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  }

 private:
  const qbus::testing::TempDir& run_;
  Clock::time_point t0_;
  Fd notify_;
  pid_t pid_ = -1;
};

// Retries a client handshake from the daemon's fork until one completes; the
// milliseconds since the fork. Connecting fails while the socket is not bound yet (or
// still the killed daemon's); once it is, the handshake waits in the backlog until the
// event loop runs.
class AcceptProbe {
 public:
  explicit AcceptProbe(const Qbusd& d)
      : thread_([this, address = d.address(), t0 = d.started()] {
          while (!stop_) {
            try {
              qbus::Client c(qbus::ClientOptions{address, "qbus-bench", std::chrono::seconds(600)});
              ms_ = ms_since(t0);
              return;
            } catch (const qbus::Error&) {
              std::this_thread::sleep_for(std::chrono::microseconds(200));
            }
          }
        }) {}
  ~AcceptProbe() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  AcceptProbe(const AcceptProbe&) = delete;
  AcceptProbe& operator=(const AcceptProbe&) = delete;
  // Joins the probe; -1 when it never got through.
  double wait() {
    if (thread_.joinable()) thread_.join();
    return ms_;
  }

 private:
  std::atomic<bool> stop_{false};
  double ms_ = -1;
  std::thread thread_;  // last: starts once the rest exists
};

// The number of "KEY" inside the flat object "OBJECT": {...} of a JSON text (qbusctl's
// answer, compact or indented); -1 when absent.
double json_number(const std::string& text, const std::string& object, const std::string& key) {
  auto at = text.find("\"" + object + "\"");
  if (at == std::string::npos) return -1;
  at = text.find('{', at);
  const auto end = text.find('}', at);
  at = text.find("\"" + key + "\"", at);
  if (at == std::string::npos || at > end) return -1;
  at = text.find(':', at);
  if (at == std::string::npos || at > end) return -1;
  return std::strtod(text.c_str() + at + 1, nullptr);
}

std::string stats_json(const Qbusd& d) {
  const auto r = qbus::testing::run(
      {qbus::testing::qbusctl_path(), "--address", d.address(), "--json", "stats"});
  if (r.exit_code != 0) throw std::runtime_error("qbusctl stats failed: " + r.err);
  return r.out;
}

struct Journal {
  unsigned long long bytes = 0;
  int segments = 0;
};

Journal journal_files(const std::string& dir) {
  Journal j;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (e.path().extension() != ".qj") continue;
    ++j.segments;
    j.bytes += e.file_size();
  }
  return j;
}

double rss_of(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);) {
    if (line.starts_with("VmRSS:")) return std::stod(line.substr(6)) * 1024;
  }
  return -1;
}

void drop_caches() {
  ::sync();
  std::ofstream f("/proc/sys/vm/drop_caches");
  f << "3\n";
  f.flush();
  if (!f) throw std::runtime_error("cannot write /proc/sys/vm/drop_caches (root only)");
}

struct RunResult {
  double fill_seconds = 0;
  double empty_ready_ms = 0;    // start on an empty state directory, until READY=1
  double ready_ms = 0;          // start with the journal, until READY=1
  double accept_ms = 0;         // ... until a client's handshake completed
  double replay_ms = 0;         // qbusd's stats.storage.recovery.milliseconds
  double recovered = 0;         // stats.storage.recovery.messages
  double rss_before_bytes = 0;  // the first daemon's RSS with the N messages, before the kill
  double rss_bytes = 0;         // the restarted daemon's RSS once ready
  Journal journal;              // after the kill
};

RunResult run_once(const RecoveryOptions& o) {
  const std::string n = std::to_string(o.messages);
  // Room for N messages under the uid's quotas; the same file for both daemons.
  const std::string config = R"({"limits": {"uid_max_queued_messages": )" +
                             std::to_string(o.messages + 16) +
                             R"(, "uid_max_queued_bytes": 1099511627776}})";
  RunResult r;
  {  // what a start costs without a journal
    StateDir empty(o.state_dir);
    qbus::testing::TempDir run;
    Qbusd d(run, empty.path(), config);
    r.empty_ready_ms = d.wait_ready();
    d.stop();
  }
  StateDir state(o.state_dir);
  qbus::testing::TempDir run;
  {
    Qbusd first(run, state.path(), config);
    first.wait_ready();
    auto c = connect(first.address());
    qbus::QueueOptions q{static_cast<std::uint32_t>(o.messages + 16), std::uint64_t{1} << 40,
                         qbus::Overflow::reject};
    c.declare(kQueue, with_durable(q, o.fill_fsync));
    const std::string payload(o.size, 'm');
    const auto t0 = Clock::now();
    {
      qbus::Client::Batch batch(c);
      for (long long i = 1; i < o.messages; ++i)
        c.send(kQueue, payload);
      c.send_confirmed(kQueue, payload);  // its OK: all N are in the journal
    }
    r.fill_seconds = ms_since(t0) / 1e3;
    if (c.send_failures().count != 0) {
      throw std::runtime_error("the broker refused " + std::to_string(c.send_failures().count) +
                               " sends: " + c.send_failures().last_message);
    }
    r.rss_before_bytes = rss_of(first.pid());
    first.kill(SIGKILL);
  }
  r.journal = journal_files(state.path());
  if (o.drop_caches) drop_caches();
  Qbusd second(run, state.path(), config);
  AcceptProbe probe(second);
  r.ready_ms = second.wait_ready();
  r.accept_ms = probe.wait();
  const std::string stats = stats_json(second);
  r.replay_ms = json_number(stats, "recovery", "milliseconds");
  r.recovered = json_number(stats, "recovery", "messages");
  r.rss_bytes = rss_of(second.pid());
  if (r.recovered != static_cast<double>(o.messages)) {
    throw std::runtime_error("qbusd recovered " + std::to_string(r.recovered) + " of " + n +
                             " messages; its log:\n" + second.log());
  }
  if (const int rc = second.stop(); rc != 0) {
    throw std::runtime_error("the restarted qbusd did not stop cleanly; its log:\n" + second.log());
  }
  return r;
}

template <typename F>
double median_by(const std::vector<RunResult>& runs, F f) {
  std::vector<double> v;
  for (const auto& r : runs)
    v.push_back(f(r));
  return median_of(v);
}

template <typename F>
void json_list(const char* name, const std::vector<RunResult>& runs, F f) {
  std::printf(",\"%s\":[", name);
  for (std::size_t i = 0; i < runs.size(); ++i)
    std::printf("%s%.1f", i ? "," : "", f(runs[i]));
  std::printf("]");
}

int recovery(const RecoveryOptions& o) {
  {  // where the journal goes, and whether that is a real disk
    StateDir probe(o.state_dir);
    if (probe.in_memory()) {
      std::fprintf(stderr, "qbus-bench: warning: %s is a tmpfs: the journal is read from memory\n",
                   probe.path().c_str());
    }
  }
  std::vector<RunResult> runs;
  for (int i = 0; i < o.runs; ++i)
    runs.push_back(run_once(o));
  const auto ready = [](const RunResult& r) { return r.ready_ms; };
  const auto accept = [](const RunResult& r) { return r.accept_ms; };
  const auto replay = [](const RunResult& r) { return r.replay_ms; };
  const auto empty = [](const RunResult& r) { return r.empty_ready_ms; };
  const auto bytes = [](const RunResult& r) { return static_cast<double>(r.journal.bytes); };
  const auto fill = [](const RunResult& r) { return r.fill_seconds; };
  const auto rss = [](const RunResult& r) { return r.rss_bytes; };
  const auto rss_before = [](const RunResult& r) { return r.rss_before_bytes; };
  if (o.json) {
    std::printf(
        "{\"benchmark\":\"recovery\",\"messages\":%lld,\"size\":%zu,\"fill_fsync\":\"%s\","
        "\"drop_caches\":%s,\"runs\":%d,\"ready_ms\":%.1f,\"accept_ms\":%.1f,"
        "\"replay_ms\":%.1f,\"empty_ready_ms\":%.1f,\"journal_bytes\":%.0f,"
        "\"journal_segments\":%d,\"fill_seconds\":%.3f,\"daemon_rss_before_kill_bytes\":%.0f,"
        "\"daemon_rss_bytes\":%.0f",
        o.messages, o.size, o.fill_fsync.c_str(), o.drop_caches ? "true" : "false", o.runs,
        median_by(runs, ready), median_by(runs, accept), median_by(runs, replay),
        median_by(runs, empty), median_by(runs, bytes), runs.front().journal.segments,
        median_by(runs, fill), median_by(runs, rss_before), median_by(runs, rss));
    json_list("run_ready_ms", runs, ready);
    json_list("run_accept_ms", runs, accept);
    json_list("run_replay_ms", runs, replay);
    json_list("run_empty_ready_ms", runs, empty);
    std::printf("}\n");
    return 0;
  }
  std::printf(
      "recovery: %lld x %zu B in one durable queue (filled with fsync %s), qbusd SIGKILLed and "
      "started again on its state directory%s; median of %d run(s)\n",
      o.messages, o.size, o.fill_fsync.c_str(), o.drop_caches ? " (page cache dropped)" : "",
      o.runs);
  std::printf("  %-44s %10.1f\n", "start -> READY=1 (ms)", median_by(runs, ready));
  std::printf("  %-44s %10.1f\n", "start -> first handshake (ms)", median_by(runs, accept));
  std::printf("  %-44s %10.1f\n", "qbusd's replay, recovery.milliseconds (ms)",
              median_by(runs, replay));
  std::printf("  %-44s %10.1f\n", "start -> READY=1, empty state dir (ms)", median_by(runs, empty));
  std::printf("  %-44s %10.2f\n", "journal on disk (MiB)", median_by(runs, bytes) / 1048576.0);
  std::printf("  %-44s %10.1f\n", "journal bytes per message",
              median_by(runs, bytes) / static_cast<double>(o.messages));
  std::printf("  %-44s %10d\n", "journal segments", runs.front().journal.segments);
  std::printf("  %-44s %10.2f\n", "daemon RSS before the kill (MiB)",
              median_by(runs, rss_before) / 1048576.0);
  std::printf("  %-44s %10.2f\n", "restarted daemon RSS (MiB)", median_by(runs, rss) / 1048576.0);
  std::printf("  %-44s %10.3f\n", "fill, N sends + the last confirmed (s)", median_by(runs, fill));
  for (const auto& r : runs) {
    std::printf("  run: ready %.1f ms, handshake %.1f ms, replay %.1f ms, empty start %.1f ms\n",
                r.ready_ms, r.accept_ms, r.replay_ms, r.empty_ready_ms);
  }
  return 0;
}

}  // namespace

Mode recovery_mode(CLI::App& cmd) {
  return bind_mode<RecoveryOptions>(cmd, add_options, recovery);
}

}  // namespace qbus::bench
