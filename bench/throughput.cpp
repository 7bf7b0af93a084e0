// qbus-bench throughput.
//
// throughput: producers and consumers are separate processes released together from a
// barrier; the time runs until every consumer has its share (--phase both), until every
// producer's sync() returned (enqueue), or, after an untimed fill, until the consumers have
// drained the queues (drain). The queues are declared deep enough never to bind, unless
// --queue-bytes bounds them (producers then wait for the consumers, as with a real limit).
//
// Consumers receive in acknowledgement mode with --ack (receive_batch, then one pipelined
// ack_up_to of the batch's last tag) or through a subscription with --subscribe PREFETCH
// (ack mode; one pipelined ack_up_to every --ack-every messages, and of whatever is held
// before next() would wait, so the broker's window never stalls).
//
// Durable queues (--durable always|batch|none) are journaled by the private broker in a
// state directory on a real disk (StateDir); --confirm N makes the producers count a
// message only once the broker's confirmation covering it came back.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "common.hpp"
#include "daemon.hpp"
#include "modes.hpp"

namespace qbus::bench {
namespace {

enum class Phase { both, enqueue, drain };

// Indexed by Phase; also the --phase values.
constexpr const char* kPhaseNames[] = {"both", "enqueue", "drain"};

const char* phase_name(Phase p) {
  return kPhaseNames[static_cast<int>(p)];
}

struct Options {
  int producers = 1;
  int consumers = 1;
  int queues = 1;
  long long messages = 1'000'000;
  double duration = 0;  // > 0: producers send for this many seconds instead of `messages`
  std::size_t size = 64;
  std::size_t batch = 256;      // messages per receive round trip
  bool views = true;            // consumers use receive_each (else receive_batch)
  bool ack = false;             // consumers receive in acknowledgement mode
  std::uint32_t subscribe = 0;  // > 0: consumers subscribe with this prefetch (ack mode)
  std::uint32_t ack_every = 0;  // with --subscribe: ack_up_to every this many (0: prefetch/4)
  bool push = false;            // consumers on an at-most-once subscription (--push)
  long long send_batch = 0;     // sends per Client::Batch; 0: one Batch around all of them
  Phase phase = Phase::both;
  int runs = 3;
  int policy_rules = 0;  // > 0: the private daemon enforces a policy of this many rules
  // Confirmed sends: 0, pipelined without confirmation (one sync() at the end); N, windows
  // of N sends written together, the last one confirmed, counted once its OK is back.
  long long confirm = 0;
  std::string durable_arg = "off";  // --durable: off, or the queues' fsync policy
  std::uint64_t queue_bytes = 0;    // > 0: each queue's max_bytes (producers block there)
  std::string state_dir;            // --state-dir: where the private broker's journal goes
  std::string address;
  bool json = false;
  bool state_in_memory = false;      // the private broker's journal is on a tmpfs
  std::string phase_arg = "both";    // --phase, as given
  std::string receive_arg = "each";  // --receive, as given
};

void add_options(CLI::App& cmd, Options& o) {
  cmd.add_option("--producers", o.producers,
                 "Producer processes (with --phase drain: the ones that pre-fill)")
      ->check(CLI::Range(1, 64));
  cmd.add_option("--consumers", o.consumers, "Consumer processes")->check(CLI::Range(1, 64));
  cmd.add_option("--queues", o.queues,
                 "Queues; producer i and consumer i use queue i mod K (K <= producers, consumers)")
      ->check(CLI::Range(1, 64));
  cmd.add_option("--messages", o.messages, "Messages in all, split over the producers")
      ->check(CLI::Range(1LL, 1'000'000'000LL));
  cmd.add_option("--duration", o.duration,
                 "Seconds the producers send for, instead of --messages (0: off; not with drain)")
      ->check(CLI::Range(0.0, 3600.0));
  cmd.add_option("--size", o.size, "Payload bytes")->check(CLI::Range(0, 1 << 20));
  cmd.add_option("--receive", o.receive_arg,
                 "Consumers take messages with receive_each (in place, no copy) or "
                 "receive_batch (a vector of Messages)")
      ->check(CLI::IsMember({"each", "batch"}));
  cmd.add_option("--batch", o.batch, "Messages per receive round trip (with --push: per next_each)")
      ->check(CLI::Range(1, 4096));
  cmd.add_flag("--ack", o.ack,
               "Consumers receive in acknowledgement mode (receive_batch) and ack each batch with "
               "one pipelined ack_up_to of its last tag");
  cmd.add_option("--subscribe", o.subscribe,
                 "Consumers take messages from a subscription in acknowledgement mode with this "
                 "prefetch instead of receive calls (0: off)")
      ->check(CLI::Range(0, 1'000'000));
  auto* push = cmd.add_flag(
      "--push", o.push,
      "Consumers take messages from an at-most-once subscription (the broker pushes while they "
      "read; Subscription::next_each of --batch, in place) instead of receive calls");
  push->excludes("--ack")->excludes("--subscribe");
  cmd.add_option("--ack-every", o.ack_every,
                 "With --subscribe: one pipelined ack_up_to every this many messages "
                 "(0: prefetch/4, at least 1)")
      ->check(CLI::Range(0, 1'000'000));
  cmd.add_option("--send-batch", o.send_batch,
                 "Sends per Client::Batch window (0: one Batch around all; 1: no Batch, one write "
                 "per send)")
      ->check(CLI::Range(0LL, 1'000'000'000LL));
  cmd.add_option("--phase", o.phase_arg,
                 "both: producers and consumers together; enqueue: producers only, until their "
                 "sync(); drain: the queue pre-filled (not timed), then consumers only")
      ->check(CLI::IsMember({"both", "enqueue", "drain"}));
  cmd.add_option("--runs", o.runs, "Runs; the median is reported")->check(CLI::Range(1, 99));
  cmd.add_option("--address", o.address, "Use a running broker instead of a private one");
  cmd.add_option("--queue-bytes", o.queue_bytes,
                 "Bound each queue at this many payload bytes, producers waiting there "
                 "(overflow block), instead of deep enough never to bind (0)")
      ->check(CLI::Range(std::uint64_t{0}, std::uint64_t{1} << 40));
  cmd.add_option("--durable", o.durable_arg,
                 "Declare the queues durable with this fsync policy (always: the OK of a "
                 "confirmed send after fdatasync; batch: after the next periodic fsync; none: "
                 "once written to the file), or off (memory only)")
      ->check(CLI::IsMember(
          std::vector<std::string>(std::begin(kDurableNames), std::end(kDurableNames))));
  cmd.add_option("--confirm", o.confirm,
                 "Confirmed sends: each producer writes windows of N sends at once, the last "
                 "one with CONFIRM, and counts the N when its OK is back (the broker answers "
                 "in order, and a durable send's OK only once the journal holds every earlier "
                 "send of the connection); 1: send_confirmed() one at a time; 0: unconfirmed "
                 "pipelined sends and one sync() at the end")
      ->check(CLI::Range(0LL, 1'000'000LL));
  cmd.add_option("--state-dir", o.state_dir,
                 "Directory under which the private broker's state directory (the journal of "
                 "durable queues) is made; default $TMPDIR or /tmp, or /var/tmp when that is a "
                 "tmpfs");
  cmd.add_option("--policy-rules", o.policy_rules,
                 "Give the private broker an access policy of this many rules: all but one "
                 "about other keys (exact keys, prefixes and patterns), one admitting every "
                 "client to the bench's queues (0: no policy)")
      ->check(CLI::Range(0, 10000));
  cmd.add_flag("--json", o.json, "One JSON object instead of the table");
}

struct RunResult {
  double seconds = 0;
  long long messages = 0;          // accepted by the broker (and received, unless enqueue)
  double daemon_cpu_seconds = -1;  // unknown with --address
  long long journal_bytes = -1;    // the state directory's files after the timed part
  double rate() const { return seconds > 0 ? static_cast<double>(messages) / seconds : 0; }
};

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

// --confirm N: windows of N sends in one write (a Client::Batch), the last one confirmed;
// the window counts once that OK is back. The broker handles a connection's frames in
// order and answers a send to a durable queue only once the journal made it durable, with
// every ticket before it, so the OK covers the window (a refused earlier send is counted in
// send_failures() before it). Returns how many the broker accepted.
long long produce_confirmed(qbus::Client& c, const Options& o, const std::string& queue,
                            long long quota) {
  const std::string payload(o.size, 'm');
  const bool timed = o.duration > 0;
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                           std::chrono::duration<double>(o.duration));
  long long sent = 0;
  while (timed ? Clock::now() < deadline : sent < quota) {
    const long long n = timed ? o.confirm : std::min(o.confirm, quota - sent);
    if (n > 1) {
      qbus::Client::Batch window(c);
      for (long long i = 1; i < n; ++i)
        c.send(queue, payload);
      c.send_confirmed(queue, payload);  // writes the window, then waits for its OK
    } else {
      c.send_confirmed(queue, payload);
    }
    sent += n;
  }
  const auto& failures = c.send_failures();
  if (failures.count != 0) {
    std::fprintf(stderr, "qbus-bench: producer: %llu send(s) refused: %s\n",
                 static_cast<unsigned long long>(failures.count), failures.last_message.c_str());
  }
  return sent - static_cast<long long>(failures.count);
}

// Sends `quota` messages (or until --duration has passed) in Client::Batch windows of
// --send-batch, then sync(); returns how many the broker accepted.
long long produce(qbus::Client& c, const Options& o, const std::string& queue, long long quota) {
  if (o.confirm > 0) return produce_confirmed(c, o, queue, quota);
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

// A consumer that took its stop and `stops` - 1 others hands those back, then syncs.
void hand_back_stops(qbus::Client& c, const std::string& queue, long stops) {
  for (long extra = 1; extra < stops; ++extra)
    c.send(queue, kStop);
  c.sync();
}

// --ack: receive_batch in acknowledgement mode, each batch acked with one pipelined
// ack_up_to of its last tag (the stops included). Returns the data messages it took.
long long consume_acked(qbus::Client& c, const Options& o, const std::string& queue) {
  long long taken = 0;
  while (true) {
    const auto batch = c.receive_batch(queue, o.batch, seconds(120), qbus::ReceiveOptions{true});
    if (batch.empty()) throw std::runtime_error("consumer starved for 120 s: messages were lost");
    const long stops = std::count_if(batch.begin(), batch.end(),
                                     [](const qbus::Message& m) { return m.text() == kStop; });
    c.ack_up_to(batch.back().delivery_tag());
    taken += static_cast<long long>(batch.size()) - stops;
    if (stops == 0) continue;
    hand_back_stops(c, queue, stops);
    return taken;
  }
}

// --subscribe: a subscription in acknowledgement mode; one pipelined ack_up_to every
// `ack_every` messages and of whatever is still held before next() would wait. At its
// stop the consumer cancels, acks what it kept and hands the other stops back.
long long consume_subscribed(qbus::Client& c, const Options& o, const std::string& queue) {
  auto sub = c.subscribe(queue, qbus::SubscribeOptions{o.subscribe, true});
  const std::uint32_t every = o.ack_every > 0 ? o.ack_every : std::max(1U, o.subscribe / 4);
  long long taken = 0;
  std::uint64_t held = 0;  // the last tag not acked yet; 0: none
  std::uint32_t since_ack = 0;
  const auto ack_held = [&] {
    if (held != 0) c.ack_up_to(held);
    held = 0;
    since_ack = 0;
  };
  while (true) {
    auto m = sub.next(std::chrono::milliseconds(0));
    if (!m) {
      ack_held();
      m = sub.next(seconds(120));
    }
    if (!m) throw std::runtime_error("consumer starved for 120 s: messages were lost");
    held = m->delivery_tag();
    if (m->text() != kStop) {
      ++taken;
      if (++since_ack >= every) ack_held();
      continue;
    }
    sub.cancel();  // what was pushed before the broker's answer is still handed out below
    long stops = 1;
    while (auto rest = sub.next(std::chrono::milliseconds(0))) {
      held = rest->delivery_tag();
      stops += rest->text() == kStop ? 1 : 0;  // only stops follow a stop
    }
    ack_held();
    hand_back_stops(c, queue, stops);
    return taken;
  }
}

// --push: an at-most-once subscription, read in place up to `batch` at a time. No RECEIVE
// asks for each batch, so the broker writes while the consumer works through the last one.
long long consume_pushed(qbus::Client& c, const Options& o, const std::string& queue) {
  auto sub = c.subscribe(queue, qbus::SubscribeOptions{0, false});
  long long taken = 0;
  long stops = 0;
  while (stops == 0) {
    const auto got = static_cast<long long>(
        sub.next_each(o.batch, seconds(120), [&](const qbus::MessageView& m) {
          if (stops > 0 || m.text() == kStop) {
            ++stops;  // only stops follow a stop
          } else {
            ++taken;
          }
        }));
    if (got == 0) throw std::runtime_error("consumer starved for 120 s: messages were lost");
  }
  sub.cancel();  // what was pushed before the broker's answer is still handed out below
  while (sub.next_each(o.batch, std::chrono::milliseconds(0),
                       [&](const qbus::MessageView&) { ++stops; }) > 0) {
  }
  hand_back_stops(c, queue, stops);
  return taken;
}

// Takes messages until a stop; returns how many data messages it took.
long long consume(qbus::Client& c, const Options& o, const std::string& queue) {
  if (o.subscribe > 0) return consume_subscribed(c, o, queue);
  if (o.push) return consume_pushed(c, o, queue);
  if (o.ack) return consume_acked(c, o, queue);
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
    hand_back_stops(c, queue, stops);
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

// Between runs on durable queues: the untimed draining journaled a settle record per
// message. One confirmed send to each queue (and taking it back) waits until the storage
// thread has written all of them, so the next run does not pay for this one's.
void settle_journal(const Options& o, const std::string& address) {
  auto c = connect(address);
  for (int q = 0; q < o.queues; ++q) {
    const std::string key = queue_name(o, q);
    c.send_confirmed(key, "settle");
    while (!c.receive_batch(key, 4096, std::chrono::milliseconds(0)).empty()) {
    }
  }
}

// Producers (unless drain) and consumers (unless enqueue) are forked and connected before the
// barrier opens, so connecting is not measured. Each writes its count to `reports`.
RunResult run_throughput(const Options& o, const std::string& address, pid_t daemon_pid,
                         const StateDir* state) {
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
  if (state) r.journal_bytes = static_cast<long long>(state->bytes());
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
  if (o.durable_arg != "off") settle_journal(o, address);
  return r;
}

// Queue bounds that never limit the run: room for every message (4294967295 with
// --duration) and 1 TiB, blocking the sender rather than refusing should one be reached;
// durable with --durable.
qbus::QueueOptions throughput_queue(const Options& o) {
  constexpr long long kMaxMessages = std::numeric_limits<std::uint32_t>::max();
  const long long wanted = o.duration > 0 ? kMaxMessages : o.messages + o.consumers + 1024;
  return with_durable(
      {static_cast<std::uint32_t>(std::min(wanted, kMaxMessages)),
       o.queue_bytes != 0 ? o.queue_bytes : std::uint64_t{1} << 40, qbus::Overflow::block},
      o.durable_arg);
}

void check_options(const Options& o) {
  if (o.queues > o.producers && o.phase != Phase::drain) {
    throw std::runtime_error("--queues exceeds --producers: a queue would have no producer");
  }
  if (o.queues > o.consumers && o.phase != Phase::enqueue) {
    throw std::runtime_error("--queues exceeds --consumers: a queue would have no consumer");
  }
  if (o.duration > 0 && o.phase == Phase::drain) {
    throw std::runtime_error("--phase drain needs --messages, not --duration");
  }
  if (o.policy_rules > 0 && !o.address.empty()) {
    throw std::runtime_error("--policy-rules configures the private broker: not with --address");
  }
  if (!o.state_dir.empty() && !o.address.empty()) {
    throw std::runtime_error("--state-dir configures the private broker: not with --address");
  }
  if (o.queue_bytes != 0 && o.phase != Phase::both) {
    throw std::runtime_error(
        "--queue-bytes needs --phase both: a bounded queue with no "
        "consumer, or filled before one, would stop its producers");
  }
  if (o.confirm > 1 && o.durable_arg != "off" && o.phase == Phase::both) {
    // A send handed straight to a waiting consumer is not journaled and is answered at
    // once: its OK would not cover the earlier sends of its window.
    throw std::runtime_error(
        "--confirm N > 1 with --durable needs --phase enqueue or drain: a window's last "
        "send may go straight to a waiting consumer, and its OK then covers nothing");
  }
}

// Declares the queues deep enough and empties what an interrupted run on a shared broker left.
void prepare_queues(const Options& o, const std::string& address) {
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

// The private broker's `policy` section for --policy-rules: `rules` - 1 rules about other
// keys, among which every decision has to be found (in turn an exact key, a prefix, a `*`
// and a `>` pattern; for a uid, a gid or everyone; allowing and denying; and every 20th a
// prefix of the bench's keys for a uid or gid no client has), then the one rule that admits
// every client to the bench's queues, which the default (deny) would refuse.
std::string policy_section(int rules) {
  std::string s = R"("policy": {"default": "deny", "rules": [)";
  for (int i = 0; i + 1 < rules; ++i) {
    const std::string n = std::to_string(i);
    // Ids far above any real account's, so that no rule but the last names the bench.
    const std::string id = std::to_string(3'000'000 + i);
    s += i % 2 ? R"({"deny": ["send", "receive"], )" : R"({"allow": "*", )";
    const int who = i % 3;
    s += who == 0   ? R"("uids": [)" + id + "], "
         : who == 1 ? R"("gids": [)" + id + "], "
                    : std::string(R"("everyone": true, )");
    if (who != 2 && i % 20 == 19) {
      s += R"("prefixes": ["b"]}, )";
      continue;
    }
    switch (i % 4) {
      case 0:
        s += R"("keys": ["other.)" + n + R"(.jobs"]}, )";
        break;
      case 1:
        s += R"("prefixes": ["other.)" + n + R"(."]}, )";
        break;
      case 2:
        s += R"("keys": ["other.)" + n + R"(.*"]}, )";
        break;
      default:
        s += R"("keys": ["other.)" + n + R"(.>"]}, )";
        break;
    }
  }
  s += R"({"allow": "*", "everyone": true, "keys": [")" + std::string(kQueue) + R"(", ")" +
       std::string(kQueue) + R"(.*"]}]})";
  return s;
}

// How the consumers take messages: the JSON "receive" value.
const char* receive_name(const Options& o) {
  if (o.subscribe > 0) return "subscribe";
  if (o.push) return "subscribe_at_most_once";
  if (o.ack) return "receive_batch_ack";
  return o.views ? "receive_each" : "receive_batch";
}

// The same for the table.
std::string receive_text(const Options& o) {
  if (o.subscribe > 0) {
    const std::uint32_t every = o.ack_every > 0 ? o.ack_every : std::max(1U, o.subscribe / 4);
    return "subscription in ack mode, prefetch " + std::to_string(o.subscribe) +
           ", ack_up_to every " + std::to_string(every);
  }
  if (o.push) {
    return "at-most-once subscription, next_each of " + std::to_string(o.batch);
  }
  if (o.ack) {
    return "receive_batch in ack mode of " + std::to_string(o.batch) + ", ack_up_to per batch";
  }
  return std::string(o.views ? "receive_each" : "receive_batch") + " of " + std::to_string(o.batch);
}

// The median run's figures, as both reports print them.
struct Figures {
  RunResult med;
  double rate = 0;
  double mbps = 0;
  double cpu_ns = -1;  // daemon CPU per message; -1: unknown
};

Figures median_figures(const Options& o, const std::vector<RunResult>& runs) {
  std::vector<RunResult> by_rate = runs;
  std::sort(by_rate.begin(), by_rate.end(),
            [](const RunResult& a, const RunResult& b) { return a.rate() < b.rate(); });
  Figures f;
  f.med = by_rate[by_rate.size() / 2];
  f.rate = f.med.rate();
  f.mbps = f.rate * static_cast<double>(o.size) / 1e6;
  f.cpu_ns = f.med.daemon_cpu_seconds < 0 || f.med.messages == 0
                 ? -1
                 : f.med.daemon_cpu_seconds * 1e9 / static_cast<double>(f.med.messages);
  return f;
}

void print_json(const Options& o, const std::vector<RunResult>& runs, const Figures& f) {
  const int producers = o.producers;  // with drain: the ones that filled the queues
  const int consumers = o.phase == Phase::enqueue ? 0 : o.consumers;
  std::printf(
      "{\"benchmark\":\"throughput\",\"phase\":\"%s\",\"producers\":%d,\"consumers\":%d,"
      "\"queues\":%d,\"messages\":%lld,\"duration\":%.3f,\"size\":%zu,\"batch\":%zu,"
      "\"receive\":\"%s\",\"ack\":%s,\"prefetch\":%u,"
      "\"send_batch\":%lld,\"confirm\":%lld,\"durable\":\"%s\",\"journal_bytes\":%lld,"
      "\"state_dir_in_memory\":%s,\"policy_rules\":%d,\"queue_bytes\":%llu,\"runs\":%d,"
      "\"median_seconds\":%.6f,"
      "\"messages_per_second\":%.0f,"
      "\"mb_per_second\":%.2f,\"daemon_cpu_ns_per_message\":%.1f,\"run_messages_per_second\":[",
      phase_name(o.phase), producers, consumers, o.queues, f.med.messages, o.duration, o.size,
      o.batch, receive_name(o), o.ack || o.subscribe > 0 ? "true" : "false", o.subscribe,
      o.send_batch, o.confirm, o.durable_arg.c_str(), f.med.journal_bytes,
      o.state_in_memory ? "true" : "false", o.policy_rules,
      static_cast<unsigned long long>(o.queue_bytes), o.runs, f.med.seconds, f.rate, f.mbps,
      f.cpu_ns);
  for (std::size_t i = 0; i < runs.size(); ++i)
    std::printf("%s%.0f", i ? "," : "", runs[i].rate());
  std::printf("]}\n");
}

void print_table(const Options& o, const std::vector<RunResult>& runs, const Figures& f) {
  const std::string send_window =
      o.confirm == 1  ? "send_confirmed() one at a time"
      : o.confirm > 1 ? "confirmed windows of " + std::to_string(o.confirm) +
                            " (one write, the last send confirmed)"
      : o.send_batch == 0 ? "one Client::Batch"
      : o.send_batch == 1 ? "no Batch (one write per send)"
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
      "\n  %lld x %zu B in the median run%s; sends: %s; receives: %s; median of %d run(s)\n",
      f.med.messages, o.size, sending_for, send_window.c_str(), receive_text(o).c_str(), o.runs);
  if (o.policy_rules > 0)
    std::printf("  the broker enforces a policy of %d rules\n", o.policy_rules);
  if (o.queue_bytes != 0) {
    std::printf("  each queue bounded at %llu payload bytes (producers block there)\n",
                static_cast<unsigned long long>(o.queue_bytes));
  }
  if (o.durable_arg != "off") {
    std::printf("  durable queues, fsync %s%s\n", o.durable_arg.c_str(),
                o.state_in_memory ? " (the journal is on a tmpfs: fsync costs nothing)" : "");
  }
  std::printf("  %-28s %12.0f\n", "messages/s", f.rate);
  std::printf("  %-28s %12.2f\n", "MB/s (payload)", f.mbps);
  std::printf("  %-28s %12.3f\n", "median run (s)", f.med.seconds);
  if (f.cpu_ns >= 0) std::printf("  %-28s %12.1f\n", "daemon CPU ns/message", f.cpu_ns);
  if (f.med.journal_bytes >= 0 && o.durable_arg != "off") {
    std::printf("  %-28s %12lld\n", "journal bytes (state dir)", f.med.journal_bytes);
  }
  for (const auto& r : runs)
    std::printf("  run: %lld messages in %.3f s, %.0f/s\n", r.messages, r.seconds, r.rate());
}

int throughput(const Options& given) {
  Options o = given;
  check_options(o);
  // Before the daemon, so that it goes after the daemon has stopped.
  std::optional<StateDir> state;
  std::optional<qbus::testing::Daemon> daemon;
  std::string address = o.address;
  if (address.empty()) {
    state.emplace(o.state_dir);
    o.state_in_memory = state->in_memory();
    qbus::testing::DaemonOptions d;
    d.log_level = "warn";
    d.state_dir = state->path();
    // The uid's quotas of queued bytes and messages must not bind before the queues' bounds.
    d.config_json = R"({"limits": {"uid_max_queued_bytes": 1099511627776,
                                   "uid_max_queued_messages": 1000000000000})";
    if (o.policy_rules > 0) d.config_json += ", " + policy_section(o.policy_rules);
    d.config_json += "}";
    daemon.emplace(d);
    address = daemon->address();
  }
  prepare_queues(o, address);
  std::vector<RunResult> runs;
  for (int i = 0; i < o.runs; ++i)
    runs.push_back(
        run_throughput(o, address, daemon ? daemon->pid() : -1, state ? &*state : nullptr));
  const Figures f = median_figures(o, runs);
  if (o.json) {
    print_json(o, runs, f);
  } else {
    print_table(o, runs, f);
  }
  return 0;
}

// Turns the checked --phase and --receive names into what the run reads.
int run(const Options& given) {
  Options o = given;
  o.phase =
      static_cast<Phase>(std::find(std::begin(kPhaseNames), std::end(kPhaseNames), o.phase_arg) -
                         std::begin(kPhaseNames));
  o.views = o.receive_arg == "each";
  return throughput(o);
}

}  // namespace

Mode throughput_mode(CLI::App& cmd) {
  return bind_mode<Options>(cmd, add_options, run);
}

}  // namespace qbus::bench
