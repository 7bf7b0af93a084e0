// qbus-bench fanout: publish/subscribe (issue 15).
//
// Messages (the default): 1 publisher process -> N subscriber processes, each subscribed
// to a pattern matching the publisher's subject, measured by fanout_harness.hpp exactly as
// redis-pubsub and nats-pubsub measure Redis and NATS: deliveries per second from the
// barrier until every subscriber has the stop message. The publisher writes its publishes
// in one Client::Batch (pipelined, as Redis and NATS clients pipeline); the subscriptions
// use --slow (block by default: nothing is dropped, a full buffer holds the publisher back,
// as a Redis or NATS subscriber's unbounded buffers would never). With
// --idle-subscriptions K another process holds K subscriptions that never match, in
// connections of 1,000 (the default limits.max_subscriptions is 1,024): the matching cost.
//
// Regions (--region SIZE): one SIZE-byte shared-memory region at a time, published to N
// subscribers, each of which maps it and reads every byte; beside it, in the same run, the
// same region handed over through a queue to one receiver (the baseline). Per message: the
// time from publish()/send() until the last receiver holds the mapping (handoff) and until
// it has read every byte.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "common.hpp"
#include "daemon.hpp"
#include "fanout_harness.hpp"
#include "modes.hpp"

namespace qbus::bench {
namespace {

constexpr char kSubject[] = "bench.fan";
constexpr char kPattern[] = "bench.*";
constexpr char kRegionQueue[] = "bench.region";
constexpr char kRegionReady[] = "bench.region.ready";
// Subscriptions per connection of the idle holder: under the default max_subscriptions.
constexpr int kIdlePerConnection = 1000;
// next_each's max: deliveries handed out per call at most.
constexpr std::size_t kEachMax = 1024;
// Receivers of one region at most (the samples are a fixed array).
constexpr int kMaxRegionReceivers = 32;

struct Options {
  int subscribers = 8;
  long long messages = 1'000'000;
  std::size_t size = 64;
  std::string slow = "block";
  bool views = true;  // subscribers use next_each (else next)
  int idle_subscriptions = 0;
  std::size_t region = 0;  // > 0: the region mode, regions of this many bytes
  int warmup = 1;          // region mode: unmeasured regions first
  int runs = 3;
  std::string address;
  bool json = false;
};

const std::map<std::string, qbus::SlowPolicy> kSlowNames = {
    {"drop_oldest", qbus::SlowPolicy::drop_oldest},
    {"disconnect", qbus::SlowPolicy::disconnect},
    {"block", qbus::SlowPolicy::block}};

void add_options(CLI::App& cmd, Options& o) {
  cmd.add_option("--subscribers", o.subscribers, "Subscriber processes")->check(CLI::Range(1, 256));
  cmd.add_option("--messages", o.messages, "Messages published (each reaches every subscriber)")
      ->check(CLI::Range(1LL, 1'000'000'000LL));
  cmd.add_option("--size", o.size, "Payload bytes")
      ->check(CLI::Range(std::size_t{0}, std::size_t{1} << 20));
  cmd.add_option("--slow", o.slow, "The subscriptions' slow-subscriber policy")
      ->check(CLI::IsMember({"block", "drop_oldest", "disconnect"}));
  cmd.add_option("--receive", o.views,
                 "How subscribers take messages: each (Subscription::next_each, in place) or "
                 "next (Subscription::next, a Message each)")
      ->transform(
          CLI::CheckedTransformer(std::map<std::string, bool>{{"each", true}, {"next", false}}));
  cmd.add_option("--idle-subscriptions", o.idle_subscriptions,
                 "Subscriptions that never match, held by another process")
      ->check(CLI::Range(0, 1'000'000));
  cmd.add_option("--region", o.region,
                 "Region mode: regions of this size (K, M, G: powers of 1024), fanned out to "
                 "--subscribers and handed over to one receiver through a queue")
      ->transform(CLI::AsSizeValue(false))
      ->check(CLI::Range(std::size_t{0}, std::size_t{1} << 30));
  cmd.add_option("--warmup", o.warmup, "Region mode: unmeasured regions first")
      ->check(CLI::Range(0, 9));
  cmd.add_option("--runs", o.runs,
                 "Runs (region mode: measured regions per path); the median is reported")
      ->check(CLI::Range(1, 99));
  cmd.add_option("--address", o.address, "Use a running broker instead of a private one");
  cmd.add_flag("--json", o.json, "One JSON object instead of the table");
}

// ---- messages -------------------------------------------------------------------------

// A process holding `n` subscriptions none of which matches kSubject, until the pipe it
// was given is closed (spread over three shapes, so the trie has exact, `*` and `>` nodes).
class IdleSubscriptions {
 public:
  IdleSubscriptions(const std::string& address, int n) {
    Pipe ready = make_pipe();
    child_ = std::make_unique<Child>([&] {
      hold_.write.reset();
      std::vector<qbus::Client> clients;
      std::vector<qbus::Subscription> subs;
      for (int i = 0; i < n; ++i) {
        if (i % kIdlePerConnection == 0) clients.push_back(connect(address));
        const std::string id = "n" + std::to_string(i);
        const std::string pattern = i % 3 == 0   ? "bench." + id
                                    : i % 3 == 1 ? "*." + id
                                                 : "bench." + id + ".>";
        subs.push_back(clients.back().subscribe_subject(pattern));
      }
      if (!announce(ready, n)) return 1;
      char byte = 0;
      const ssize_t got = ::read(hold_.read.get(), &byte, 1);  // end of file: the run is over
      return got == 0 ? 0 : 1;
    });
    hold_.read.reset();
    await_ready<int>(ready, "the holder of the idle subscriptions");
  }
  ~IdleSubscriptions() {
    hold_.write.reset();
    child_->wait();
  }
  IdleSubscriptions(const IdleSubscriptions&) = delete;
  IdleSubscriptions& operator=(const IdleSubscriptions&) = delete;

 private:
  Pipe hold_ = make_pipe();  // the parent's end open: hold on
  std::unique_ptr<Child> child_;
};

struct MessageRun {
  fanout::Result result;
  std::uint64_t dropped = 0;  // announced by the broker as gaps (drop_oldest)
};

MessageRun run_messages_once(const Options& o, const std::string& address) {
  const fanout::Spec spec{o.subscribers, o.messages, o.size};
  SharedArray<std::uint64_t> dropped(static_cast<std::size_t>(o.subscribers));
  const auto subscriber = [&](int index, const std::function<void()>& ready) -> long long {
    auto c = connect(address);
    qbus::SubjectOptions so;
    so.slow = kSlowNames.at(o.slow);
    auto sub = c.subscribe_subject(kPattern, so);
    ready();
    long long n = 0;
    bool stopped = false;
    const auto count = [&](auto& m) {  // a Message or a MessageView
      dropped[static_cast<std::size_t>(index)] += m.dropped_before();
      if (m.text() == fanout::kStop) stopped = true;
      if (fanout::is_data(m.text(), o.size)) ++n;
    };
    if (o.views) {
      while (!stopped && sub.next_each(kEachMax, fanout::kIdle, count) > 0) {
      }
    } else {
      while (!stopped) {
        auto m = sub.next(fanout::kIdle);
        if (!m) break;
        count(*m);
      }
    }
    return n;
  };
  const auto publisher = [&](const std::function<void()>& go) {
    auto c = connect(address);
    const std::string payload(o.size, 'm');
    go();
    {
      qbus::Client::Batch batch(c);
      for (long long i = 0; i < o.messages; ++i)
        c.publish(kSubject, payload);
      c.publish(kSubject, fanout::kStop);
    }
    if (sync_and_check(c, "publisher") != 0) throw std::runtime_error("publishes were refused");
  };
  MessageRun r;
  r.result = fanout::run_once(spec, subscriber, publisher);
  for (std::size_t i = 0; i < dropped.size(); ++i)
    r.dropped += dropped[i];
  return r;
}

int run_messages(const Options& o, const std::string& address, pid_t daemon_pid) {
  std::optional<IdleSubscriptions> idle;
  if (o.idle_subscriptions > 0) idle.emplace(address, o.idle_subscriptions);
  std::vector<MessageRun> runs;
  std::vector<double> cpu;  // the daemon's CPU seconds per run
  for (int i = 0; i < o.runs; ++i) {
    const double before = daemon_pid > 0 ? cpu_seconds(daemon_pid) : 0;
    runs.push_back(run_messages_once(o, address));
    cpu.push_back(daemon_pid > 0 ? cpu_seconds(daemon_pid) - before : -1);
  }
  const std::size_t mid =
      fanout::median_run(runs.size(), [&](std::size_t i) { return runs[i].result; });
  const MessageRun& m = runs[mid];
  const double rate = m.result.deliveries_per_second();
  const double publish_rate = static_cast<double>(o.messages) / m.result.seconds;
  const double cpu_ns =
      cpu[mid] < 0 ? -1 : cpu[mid] * 1e9 / static_cast<double>(m.result.delivered);
  if (o.json) {
    std::printf(
        "{\"benchmark\":\"fanout\",\"system\":\"qbus\",\"subscribers\":%d,\"messages\":%lld,"
        "\"size\":%zu,\"slow\":\"%s\",\"receive\":\"%s\",\"idle_subscriptions\":%d,\"runs\":%d,"
        "\"deliveries_per_second\":%.0f,\"publishes_per_second\":%.0f,\"delivered\":%lld,"
        "\"expected\":%lld,\"dropped\":%llu,\"daemon_cpu_ns_per_delivery\":%.1f,"
        "\"run_deliveries_per_second\":[",
        o.subscribers, o.messages, o.size, o.slow.c_str(), o.views ? "each" : "next",
        o.idle_subscriptions, o.runs, rate, publish_rate, m.result.delivered, m.result.expected,
        static_cast<unsigned long long>(m.dropped), cpu_ns);
    for (std::size_t i = 0; i < runs.size(); ++i)
      std::printf("%s%.0f", i ? "," : "", runs[i].result.deliveries_per_second());
    std::printf("]}\n");
    return m.result.lost() == 0 ? 0 : 1;
  }
  std::printf(
      "fanout: 1 publisher -> subject %s -> %d subscriber(s) on %s (slow: %s, receive: %s), %d "
      "idle subscription(s)\n  %lld x %zu B; median of %d run(s)\n",
      kSubject, o.subscribers, kPattern, o.slow.c_str(), o.views ? "each" : "next",
      o.idle_subscriptions, o.messages, o.size, o.runs);
  std::printf("  %-34s %14.0f\n", "deliveries/s", rate);
  std::printf("  %-34s %14.0f\n", "publishes/s", publish_rate);
  std::printf("  %-34s %14lld of %lld\n", "delivered", m.result.delivered, m.result.expected);
  std::printf("  %-34s %14llu\n", "dropped (gaps announced)",
              static_cast<unsigned long long>(m.dropped));
  if (cpu_ns >= 0) std::printf("  %-34s %14.1f\n", "qbusd CPU ns per delivery", cpu_ns);
  for (const auto& r : runs)
    std::printf("  run: %.0f deliveries/s\n", r.result.deliveries_per_second());
  if (m.result.lost() != 0) {
    std::fprintf(stderr, "qbus-bench: fanout: %lld deliveries lost\n", m.result.lost());
    return 1;
  }
  return 0;
}

// ---- regions --------------------------------------------------------------------------

struct RegionSample {
  long long send_ns = 0;  // just before publish() / send()
  std::uint64_t xor_sent = 0;
  struct Receiver {
    long long received_ns = 0;  // the mapping is in this receiver's hands
    long long read_ns = 0;      // ... and every byte was read
    std::uint64_t xor_read = 0;
    std::uint64_t size_read = 0;
    int shared_memory = 0;
  } receivers[kMaxRegionReceivers];
};

// The receiver's side of one region: read it, note when.
void take_region(const qbus::Message& m, RegionSample::Receiver& r) {
  r.received_ns = now_ns();
  const auto bytes = m.bytes();
  r.xor_read = xor_words(bytes);
  r.read_ns = now_ns();
  r.size_read = bytes.size();
  r.shared_memory = m.in_shared_memory() ? 1 : 0;
}

// `receivers` processes take warmup + runs regions one at a time, through a subscription
// (fan-out) or a queue (hand-over, one receiver); returns the samples of the measured ones.
std::vector<RegionSample> run_regions(const Options& o, const std::string& address, int receivers,
                                      bool fan_out) {
  const int total = o.warmup + o.runs;
  SharedArray<RegionSample> samples(static_cast<std::size_t>(total));
  std::vector<std::unique_ptr<Child>> children;
  Pipe subscribed = make_pipe();  // each receiver writes its number once it is subscribed
  for (int k = 0; k < receivers; ++k) {
    children.push_back(std::make_unique<Child>([&, k] {
      auto c = connect(address);
      std::optional<qbus::Subscription> sub;
      if (fan_out) sub.emplace(c.subscribe_subject(kSubject));
      subscribed.read.reset();
      if (!write_all(subscribed.write.get(), &k, sizeof k)) return 1;
      subscribed.write.reset();
      for (int i = 0; i < total; ++i) {
        auto& r = samples[static_cast<std::size_t>(i)].receivers[k];
        std::optional<qbus::Message> m;
        if (fan_out) {
          c.send(kRegionReady, "r");  // written at once: no Batch
          m = sub->next(kIdleTimeout);
        } else {
          qbus::Client::Batch batch(c);  // READY leaves with the RECEIVE (see bulk.cpp)
          c.send(kRegionReady, "r");
          m = c.receive(kRegionQueue, kIdleTimeout);
        }
        if (!m) return 1;
        take_region(*m, r);
      }
      return sync_and_check(c, "region receiver");
    }));
  }
  subscribed.write.reset();
  for (int k = 0; k < receivers; ++k) {
    int who = 0;
    if (!read_all(subscribed.read.get(), &who, sizeof who)) {
      throw std::runtime_error("a region receiver failed to start");
    }
  }
  Child sender([&] {
    auto c = connect(address);
    for (int i = 0; i < total; ++i) {
      for (int k = 0; k < receivers; ++k) {
        if (!c.receive(kRegionReady, kIdleTimeout)) return 1;
      }
      RegionSample& s = samples[static_cast<std::size_t>(i)];
      qbus::Region region = c.allocate_region(o.region);
      s.xor_sent = fill_words(region.data(), o.region * 7 + static_cast<std::uint64_t>(i));
      s.send_ns = now_ns();
      if (fan_out) {
        c.publish(kSubject, std::move(region));
      } else {
        c.send(kRegionQueue, std::move(region));
      }
      c.sync();  // written now, not at the next call
    }
    return sync_and_check(c, "region sender");
  });
  const std::string what = fan_out ? "region fan-out" : "region hand-over";
  if (!sender.wait()) throw std::runtime_error(what + ": the sender failed");
  for (auto& c : children) {
    if (!c->wait()) throw std::runtime_error(what + ": a receiver failed");
  }
  std::vector<RegionSample> out;
  for (int i = o.warmup; i < total; ++i) {
    const RegionSample& s = samples[static_cast<std::size_t>(i)];
    for (int k = 0; k < receivers; ++k) {
      const auto& r = s.receivers[k];
      if (r.size_read != o.region || r.xor_read != s.xor_sent || r.shared_memory != 1) {
        throw std::runtime_error(what + ": a receiver read bytes that differ from the region sent");
      }
    }
    out.push_back(s);
  }
  return out;
}

struct RegionFigures {
  double handoff_ns = 0;  // median over regions of the last receiver's mapping
  double read_ns = 0;     // ... and of its having read every byte
};

RegionFigures region_figures(const std::vector<RegionSample>& samples, int receivers) {
  std::vector<double> handoff, read;
  for (const auto& s : samples) {
    long long last_received = 0, last_read = 0;
    for (int k = 0; k < receivers; ++k) {
      last_received = std::max(last_received, s.receivers[k].received_ns);
      last_read = std::max(last_read, s.receivers[k].read_ns);
    }
    handoff.push_back(static_cast<double>(last_received - s.send_ns));
    read.push_back(static_cast<double>(last_read - s.send_ns));
  }
  return {median_of(handoff), median_of(read)};
}

int run_region_mode(const Options& o, const std::string& address) {
  if (o.subscribers > kMaxRegionReceivers) {
    throw std::runtime_error("--region takes at most " + std::to_string(kMaxRegionReceivers) +
                             " subscribers");
  }
  // Hand-over first, fan-out second, then both again: each path's median over both rounds,
  // so that a slow minute of a shared machine falls on both.
  std::vector<RegionSample> one, fan;
  for (int round = 0; round < 2; ++round) {
    for (auto& s : run_regions(o, address, 1, false))
      one.push_back(s);
    for (auto& s : run_regions(o, address, o.subscribers, true))
      fan.push_back(s);
  }
  const RegionFigures h = region_figures(one, 1);
  const RegionFigures f = region_figures(fan, o.subscribers);
  if (o.json) {
    std::printf(
        "{\"benchmark\":\"fanout_region\",\"size\":%zu,\"subscribers\":%d,\"regions\":%zu,"
        "\"handover_handoff_us\":%.3f,\"handover_read_us\":%.3f,\"fanout_handoff_us\":%.3f,"
        "\"fanout_read_us\":%.3f,\"ratio_handoff\":%.3f,\"ratio_read\":%.3f}\n",
        o.region, o.subscribers, fan.size(), us(h.handoff_ns), us(h.read_ns), us(f.handoff_ns),
        us(f.read_ns), ratio(f.handoff_ns, h.handoff_ns), ratio(f.read_ns, h.read_ns));
    return 0;
  }
  std::printf("fanout --region: %zu B regions; median of %zu region(s) per path\n", o.region,
              fan.size());
  std::printf("  %-44s %12s %14s\n", "", "handoff", "read all");
  std::printf("  %-44s %10.1f us %12.1f us\n", "hand-over through a queue to 1 receiver",
              us(h.handoff_ns), us(h.read_ns));
  const std::string fan_label = "publish to " + std::to_string(o.subscribers) + " subscribers";
  std::printf("  %-44s %10.1f us %12.1f us\n", fan_label.c_str(), us(f.handoff_ns), us(f.read_ns));
  std::printf("  %-44s %11.2fx %13.2fx\n", "fan-out / hand-over", ratio(f.handoff_ns, h.handoff_ns),
              ratio(f.read_ns, h.read_ns));
  std::printf(
      "  handoff: publish()/send() starts -> the last receiver holds the mapping; read all: "
      "-> it has read every byte\n  (filling the region is not timed)\n");
  return 0;
}

int run(const Options& o) {
  std::unique_ptr<qbus::testing::Daemon> daemon;
  std::string address = o.address;
  if (address.empty()) {
    qbus::testing::DaemonOptions d;
    d.log_level = "warn";
    // The uid quotas must not bind before the subscriptions' own bounds, nor the uid's
    // subscriptions before --idle-subscriptions.
    d.config_json = R"({"limits": {"uid_max_queued_bytes": 1099511627776,
                                   "uid_max_queued_messages": 1000000000000,
                                   "uid_max_subscriptions": 10000000}})";
    daemon = std::make_unique<qbus::testing::Daemon>(d);
    address = daemon->address();
  }
  if (o.region > 0) return run_region_mode(o, address);
  return run_messages(o, address, daemon ? daemon->pid() : -1);
}

}  // namespace

Mode fanout_mode(CLI::App& cmd) {
  return bind_mode<Options>(cmd, add_options, run);
}

}  // namespace qbus::bench
