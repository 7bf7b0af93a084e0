// nats-pubsub: qbus-bench fanout's work (1 publisher -> N subscribers, wildcard
// subscriptions) done on NATS core publish/subscribe through libnats (Debian's
// libnats-dev), for bench/compare.sh.
//
//   nats-pubsub --url nats://127.0.0.1:PORT [--subscribers N] [--messages N] [--size BYTES]
//               [--runs R] [--json]
//
// Measured by fanout_harness.hpp exactly as qbus is: each subscriber subscribes
// synchronously to `bench.*` with no client-side pending limit (as qbus's subscriptions
// block instead of dropping) and is ready once a flush (PING/PONG) proved the server has
// the subscription; the publisher publishes to `bench.fan` through the library's buffered
// writer and flushes at the end. nats-server listens on TCP only (loopback here); its
// per-connection pending limit is for the server's configuration (compare.sh raises it).
#include <nats/nats.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "fanout_peer.hpp"

namespace {

namespace fanout = qbus::bench::fanout;

constexpr char kSubject[] = "bench.fan";
constexpr char kPattern[] = "bench.*";

struct Options {
  std::string url;
  fanout::PeerOptions peer;
};

void check(natsStatus s, const char* what) {
  if (s != NATS_OK) throw std::runtime_error(std::string(what) + ": " + natsStatus_GetText(s));
}

struct ConnectionDeleter {
  void operator()(natsConnection* c) const { natsConnection_Destroy(c); }
};
using Connection = std::unique_ptr<natsConnection, ConnectionDeleter>;

struct SubscriptionDeleter {
  void operator()(natsSubscription* s) const { natsSubscription_Destroy(s); }
};

struct MsgDeleter {
  void operator()(natsMsg* m) const { natsMsg_Destroy(m); }
};
using Msg = std::unique_ptr<natsMsg, MsgDeleter>;

Connection connect(const std::string& url) {
  natsConnection* raw = nullptr;
  check(natsConnection_ConnectTo(&raw, url.c_str()), ("connect to " + url).c_str());
  return Connection(raw);
}

long long subscribe_and_count(const Options& o, const std::function<void()>& ready) {
  const Connection c = connect(o.url);
  natsSubscription* raw = nullptr;
  check(natsConnection_SubscribeSync(&raw, c.get(), kPattern), "subscribe");
  const std::unique_ptr<natsSubscription, SubscriptionDeleter> sub(raw);
  check(natsSubscription_SetPendingLimits(sub.get(), -1, -1), "set pending limits");
  check(natsConnection_FlushTimeout(c.get(), 30'000), "flush the subscription");
  ready();
  const auto idle_ms = std::chrono::milliseconds(fanout::kIdle).count();
  long long n = 0;
  for (;;) {
    natsMsg* m = nullptr;
    if (natsSubscription_NextMsg(&m, sub.get(), idle_ms) != NATS_OK) break;  // idle: lost
    const Msg msg(m);
    const std::string_view payload(natsMsg_GetData(m),
                                   static_cast<std::size_t>(natsMsg_GetDataLength(m)));
    if (payload == fanout::kStop) break;
    if (fanout::is_data(payload, o.peer.spec.size)) ++n;
  }
  return n;
}

void publish(const Options& o, const std::function<void()>& go) {
  const Connection c = connect(o.url);
  const std::string payload(o.peer.spec.size, 'm');
  go();
  for (long long i = 0; i < o.peer.spec.messages; ++i) {
    check(
        natsConnection_Publish(c.get(), kSubject, payload.data(), static_cast<int>(payload.size())),
        "publish");
  }
  check(natsConnection_Publish(c.get(), kSubject, fanout::kStop.data(),
                               static_cast<int>(fanout::kStop.size())),
        "publish");
  check(natsConnection_FlushTimeout(c.get(), 120'000), "flush");
}

int run(const Options& o) {
  return fanout::run_peer(
      "nats", o.peer, "natsConnection_Publish (buffered), SubscribeSync bench.*, loopback TCP",
      [&](int, const std::function<void()>& ready) { return subscribe_and_count(o, ready); },
      [&](const std::function<void()>& go) { publish(o, go); });
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"nats-pubsub: 1 publisher -> NATS subjects -> N subscribers", "nats-pubsub"};
  app.option_defaults()->always_capture_default();
  Options o;
  app.add_option("--url", o.url, "URL of a running nats-server (nats://127.0.0.1:PORT)")
      ->required();
  qbus::bench::fanout::add_peer_options(app, o.peer);
  return qbus::bench::fanout::peer_main(app, argc, argv, "nats-pubsub", [&] { return run(o); });
}
