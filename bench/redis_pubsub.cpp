// redis-pubsub: qbus-bench fanout's work (1 publisher -> N subscribers, pattern
// subscriptions) done on Redis PUBLISH/PSUBSCRIBE through hiredis, for bench/compare.sh.
//
//   redis-pubsub --socket PATH [--subscribers N] [--messages N] [--size BYTES]
//                [--pipeline N] [--runs R] [--json]
//
// Measured by fanout_harness.hpp exactly as qbus is: each subscriber PSUBSCRIBEs to
// `bench.*` (ready once Redis confirmed it), the publisher PUBLISHes to `bench.fan`,
// --pipeline commands written before their replies are read. Before the runs the
// pub/sub output-buffer limit is lifted (CONFIG SET client-output-buffer-limit
// "pubsub 0 0 0"), as qbus's subscriptions block instead of dropping: by default Redis
// disconnects a subscriber that falls 32 MB behind, which would end the run in loss.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>
#include <vector>

#include "fanout_peer.hpp"
#include "redis_client.hpp"

namespace {

using namespace qbus::bench::redis;
namespace fanout = qbus::bench::fanout;

constexpr char kChannel[] = "bench.fan";
constexpr char kPattern[] = "bench.*";

struct Options {
  std::string socket;
  fanout::PeerOptions peer;
  std::size_t pipeline = 64;
};

long long subscribe_and_count(const Options& o, const std::function<void()>& ready) {
  const Context c = connect(o.socket);
  command(c.get(), {"PSUBSCRIBE", kPattern}, "PSUBSCRIBE");  // the confirmation
  const timeval idle{std::chrono::seconds(fanout::kIdle).count(), 0};
  redisSetTimeout(c.get(), idle);
  ready();
  long long n = 0;
  for (;;) {
    void* raw = nullptr;
    if (redisGetReply(c.get(), &raw) != REDIS_OK || raw == nullptr) break;  // idle: lost
    const Reply r(static_cast<redisReply*>(raw));
    // ["pmessage", pattern, channel, payload]
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 4) continue;
    const std::string_view payload(r->element[3]->str, r->element[3]->len);
    if (payload == fanout::kStop) break;
    if (fanout::is_data(payload, o.peer.spec.size)) ++n;
  }
  return n;
}

void publish(const Options& o, const std::function<void()>& go) {
  const Context c = connect(o.socket);
  go();
  const std::vector<std::string> data = {"PUBLISH", kChannel, std::string(o.peer.spec.size, 'm')};
  long long sent = 0;
  while (sent < o.peer.spec.messages) {
    const long long n = std::min(static_cast<long long>(o.pipeline), o.peer.spec.messages - sent);
    for (long long i = 0; i < n; ++i)
      append(c.get(), data);
    for (long long i = 0; i < n; ++i)
      next_reply(c.get(), "PUBLISH");
    sent += n;
  }
  command(c.get(), {"PUBLISH", kChannel, std::string(fanout::kStop)}, "PUBLISH");
}

int run(const Options& o) {
  {
    const Context c = connect(o.socket);
    command(c.get(), {"CONFIG", "SET", "client-output-buffer-limit", "pubsub 0 0 0"},
            "CONFIG SET client-output-buffer-limit");
  }
  return fanout::run_peer(
      "redis", o.peer,
      "PUBLISH pipelined " + std::to_string(o.pipeline) + " deep, PSUBSCRIBE bench.*, Unix socket",
      [&](int, const std::function<void()>& ready) { return subscribe_and_count(o, ready); },
      [&](const std::function<void()>& go) { publish(o, go); });
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"redis-pubsub: 1 publisher -> Redis PUBLISH/PSUBSCRIBE -> N subscribers",
               "redis-pubsub"};
  app.option_defaults()->always_capture_default();
  Options o;
  app.add_option("--socket", o.socket, "Unix socket of a running redis-server")->required();
  app.add_option("--pipeline", o.pipeline, "PUBLISHes written before their replies are read")
      ->check(CLI::Range(1, 1 << 20));
  qbus::bench::fanout::add_peer_options(app, o.peer);
  return qbus::bench::fanout::peer_main(app, argc, argv, "redis-pubsub", [&] { return run(o); });
}
