// The I/O-free broker core: per-message cost of the queue operations with 64-byte
// payloads, in steady state (the queue, its deque and the peers exist before timing).
// Every benchmark also reports "allocs/msg": heap allocations per message sent and
// received, counted by the replaced operator new (tests/support/counting_allocator.cpp).
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "alloc_counter.hpp"
#include "broker/broker.hpp"
#include "counting_sink.hpp"
#include "fake_backing.hpp"

namespace qbus::micro {
namespace {

using broker::Broker;
using broker::Bytes;
using broker::Clock;
using broker::Delivery;
using broker::Identity;
using broker::PeerId;

constexpr std::string_view kKey = "bench.jobs";
constexpr std::size_t kPayload = 64;

// A broker with a producer (peer 1) and a consumer (peer 2) in separate processes.
struct Fixture {
  Fixture() : broker(broker::Limits{}, sink, backing) {
    connect(kProducer, 20'001);
    connect(kConsumer, 20'002);
  }
  void connect(PeerId peer, std::uint32_t pid) {
    Identity id;
    id.pid = pid;
    id.uid = 1000;
    id.gid = 1000;
    id.client_id = peer;
    id.process_token = 1;
    if (broker.connect(peer, id, now) != Errc::ok) throw std::runtime_error("connect failed");
  }
  // Declared queues stay when they drain; undeclared ones are collected when idle.
  void declare() {
    std::string text;
    if (broker.declare_configured(kKey, broker::QueueOptions{}, text) != Errc::ok)
      throw std::runtime_error("declare failed: " + text);
  }
  // Times `round` (which delivers `per_round` messages) after three warm-up rounds (the
  // queue's chunk, the stashed nodes and the peers' maps exist then), and reports the
  // rate and the allocations per message; skips if the broker failed or lost a message.
  template <typename Round>
  void run(benchmark::State& state, std::uint64_t per_round, Round&& round) {
    for (int i = 0; i < 3; ++i)
      round();
    const auto warm = sink.delivered;
    const auto allocs = allocations();
    for (auto _ : state)
      round();
    const auto messages = static_cast<std::uint64_t>(state.iterations()) * per_round;
    report_allocations(state, allocs, messages);
    if (sink.failed != 0 || sink.delivered != warm + messages) {
      state.SkipWithError("the broker failed or lost a message");
      return;
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(messages));
    state.SetBytesProcessed(static_cast<std::int64_t>(messages * kPayload));
  }

  static constexpr PeerId kProducer = 1;
  static constexpr PeerId kConsumer = 2;
  broker::fakes::CountingSink sink;
  broker::fakes::FakeBacking backing;
  Broker broker;
  Clock::time_point now = Clock::now();
  std::vector<std::byte> payload = std::vector<std::byte>(kPayload, std::byte{0x42});
};

// Producer sends `batch` messages into a queue nobody waits on (enqueue), then the
// consumer takes them with one receive of max_count = batch (serve_now). Per message.
void BM_Broker_EnqueueThenReceive(benchmark::State& state) {
  const auto batch = static_cast<std::uint32_t>(state.range(0));
  Fixture f;
  f.declare();
  std::uint64_t corr = 0;
  auto round = [&] {
    for (std::uint32_t i = 0; i < batch; ++i) {
      auto r = f.broker.send(Fixture::kProducer, kKey, f.payload, f.now);
      benchmark::DoNotOptimize(r);
    }
    f.broker.receive(Fixture::kConsumer, ++corr, kKey, batch, 0, f.now);
  };
  f.run(state, batch, round);
}
BENCHMARK(BM_Broker_EnqueueThenReceive)->Arg(1)->Arg(64)->Arg(1000);

// The consumer waits first (receive, no timeout); the send hands the message straight to
// it without storing it. range(0) != 0: the queue is declared, else it is implicit and
// is collected every time it goes idle, then created again by the next receive.
void BM_Broker_HandoffToWaiter(benchmark::State& state) {
  const bool declared = state.range(0) != 0;
  Fixture f;
  if (declared) f.declare();
  std::uint64_t corr = 0;
  auto round = [&] {
    f.broker.receive(Fixture::kConsumer, ++corr, kKey, 1, -1, f.now);
    auto r = f.broker.send(Fixture::kProducer, kKey, f.payload, f.now);
    benchmark::DoNotOptimize(r);
  };
  state.SetLabel(declared ? "declared queue" : "implicit queue");
  f.run(state, 1, round);
}
BENCHMARK(BM_Broker_HandoffToWaiter)->Arg(1)->Arg(0);

// Direct messages by pid: `batch` send_direct calls into the consumer's inbox, then one
// receive_direct of max_count = batch. Per message.
void BM_Broker_SendDirect(benchmark::State& state) {
  const auto batch = static_cast<std::uint32_t>(state.range(0));
  Fixture f;
  broker::DirectSend d;
  d.kind = proto::TargetKind::pid;
  d.target = 20'002;
  std::uint64_t corr = 0;
  auto round = [&] {
    for (std::uint32_t i = 0; i < batch; ++i) {
      auto r = f.broker.send_direct(Fixture::kProducer, d, f.payload, f.now);
      benchmark::DoNotOptimize(r);
    }
    f.broker.receive_direct(Fixture::kConsumer, ++corr, batch, 0, f.now);
  };
  f.run(state, batch, round);
}
BENCHMARK(BM_Broker_SendDirect)->Arg(1)->Arg(64)->Arg(1000);

// Publish/subscribe: the consumer's one subscription to `bench.*` matches every publish to
// `bench.fan`; range(0) more subscriptions (exact, `*` and `>` patterns in turn, 1,000 per
// connection as the default limits allow) match none. A publish should cost the same with
// 10,000 of them as with none: the trie visits only the nodes the subject can reach.
void BM_Broker_PublishBeside(benchmark::State& state) {
  const auto idle = static_cast<int>(state.range(0));
  Fixture f;
  broker::SubjectSubscribe sub;
  sub.correlation = 1;
  sub.pattern = "bench.*";
  if (f.broker.subscribe_subject(Fixture::kConsumer, sub, false).error != Errc::ok)
    throw std::runtime_error("subscribe failed");
  for (int i = 0; i < idle; ++i) {
    const auto peer = static_cast<PeerId>(100 + i / 1000);
    if (i % 1000 == 0) f.connect(peer, static_cast<std::uint32_t>(30'000 + i / 1000));
    const std::string id = "n" + std::to_string(i);
    const std::string pattern = i % 3 == 0   ? "bench." + id
                                : i % 3 == 1 ? "*." + id
                                             : "bench." + id + ".>";
    broker::SubjectSubscribe s;
    s.correlation = static_cast<std::uint64_t>(i + 1);
    s.pattern = pattern;
    if (f.broker.subscribe_subject(peer, s, false).error != Errc::ok)
      throw std::runtime_error("subscribe failed: " + pattern);
  }
  broker::PublishSend m;
  m.subject = "bench.fan";
  m.payload = f.payload;
  auto round = [&] {
    auto r = f.broker.publish(Fixture::kProducer, m, f.now);
    benchmark::DoNotOptimize(r);
  };
  state.SetLabel(std::to_string(idle) + " subscriptions that never match");
  f.run(state, 1, round);
}
BENCHMARK(BM_Broker_PublishBeside)->Arg(0)->Arg(10'000);

}  // namespace
}  // namespace qbus::micro
