// redis-rr: qbus-bench latency's work (one requester process, one responder process, one
// request outstanding at a time, round-trip percentiles) done on two Redis lists through
// hiredis, for bench/compare.sh: redis-benchmark has no request/reply.
//
//   redis-rr --socket PATH [--requests N] [--warmup N] [--size BYTES] [--runs R] [--json]
//
// Each run DELs both lists, forks a responder and a requester, connects both over the Unix
// socket of a running redis-server (compare.sh starts a private one) and releases them from
// a barrier. Per request the requester writes `LPUSH qbus-bench-rr-req <--size bytes>` and
// `BLPOP qbus-bench-rr-reply 120` in one write (pipelined; the LPUSH's reply is read first,
// then the BLPOP's) and times the round trip on steady_clock from before that write until
// the BLPOP's reply is parsed and its value checked. The responder loops `BLPOP
// qbus-bench-rr-req 120` and `LPUSH qbus-bench-rr-reply <the value it popped>`, each LPUSH
// written with its next BLPOP, until the requester's stop message. With one request
// outstanding each list holds at most one value, so LPUSH with BLPOP (both at the head)
// keeps the order. --warmup round trips go first, not recorded; the --requests after them
// are recorded in histogram.hpp, whose p50, p90, p99, p99.9 and max are the ones qbus-bench
// latency reports; with --runs R each is the median of the R runs.
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "histogram.hpp"
#include "process.hpp"
#include "redis_client.hpp"

namespace {

using namespace qbus::bench::redis;
using qbus::bench::Child;
using qbus::bench::Histogram;
using qbus::bench::Pipe;
using qbus::bench::SharedArray;

using Clock = std::chrono::steady_clock;

constexpr char kRequests[] = "qbus-bench-rr-req";
constexpr char kReplies[] = "qbus-bench-rr-reply";
constexpr char kBlockSeconds[] = "120";
constexpr std::string_view kStop = "\x01STOP";  // never a payload: those are all 'q'

struct Options {
  std::string socket;
  long long requests = 100'000;  // recorded round trips per run
  long long warmup = 1'000;      // unrecorded round trips before them
  std::size_t size = 64;
  int runs = 3;
  bool json = false;
};

// Round-trip percentiles of one run (or the per-percentile median of several), in ns.
struct Summary {
  double p50 = 0, p90 = 0, p99 = 0, p999 = 0, max = 0;
};

Summary summarize(const Histogram& h) {
  const auto p = [&](double q) { return static_cast<double>(h.percentile(q)); };
  return {p(50), p(90), p(99), p(99.9), static_cast<double>(h.max())};
}

// The median of each percentile over the runs (the mean of the middle two for an even count).
Summary median_summary(const std::vector<Summary>& runs) {
  const auto field = [&](double Summary::*f) {
    std::vector<double> v;
    for (const auto& s : runs)
      v.push_back(s.*f);
    std::sort(v.begin(), v.end());
    const std::size_t n = v.size();
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
  };
  return {field(&Summary::p50), field(&Summary::p90), field(&Summary::p99), field(&Summary::p999),
          field(&Summary::max)};
}

double us(double ns) {
  return ns / 1000.0;
}

// The value of a BLPOP reply ([key, value]), which lives as long as `r`. Nil means the
// BLPOP timed out: the other side is gone.
std::string_view popped(const redisReply* r, const char* who) {
  if (r->type == REDIS_REPLY_NIL) {
    throw std::runtime_error(std::string(who) + ": BLPOP: nothing for " + kBlockSeconds + " s");
  }
  if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
      r->element[1]->type != REDIS_REPLY_STRING) {
    throw std::runtime_error(std::string(who) + ": BLPOP: unexpected reply shape");
  }
  return {r->element[1]->str, r->element[1]->len};
}

// Pops requests and pushes each value back as the reply until the stop; each reply's LPUSH
// goes out in one write with the next BLPOP.
void respond(redisContext* c) {
  const std::vector<std::string> pop = {"BLPOP", kRequests, kBlockSeconds};
  std::vector<std::string> push = {"LPUSH", kReplies, ""};
  bool push_unanswered = false;
  for (;;) {
    append(c, pop);
    if (push_unanswered) next_reply(c, "LPUSH");
    const Reply r = next_reply(c, "BLPOP");
    const std::string_view value = popped(r.get(), "responder");
    if (value == kStop) return;
    push[2].assign(value);
    append(c, push);
    push_unanswered = true;
  }
}

// `o.warmup` unrecorded round trips, then `o.requests` recorded ones; then the stop.
Summary request(redisContext* c, const Options& o) {
  const std::vector<std::string> push = {"LPUSH", kRequests, std::string(o.size, 'q')};
  const std::vector<std::string> pop = {"BLPOP", kReplies, kBlockSeconds};
  const auto round_trip = [&] {
    append(c, push);
    append(c, pop);
    next_reply(c, "LPUSH");
    const Reply r = next_reply(c, "BLPOP");
    if (popped(r.get(), "requester") != push[2]) {
      throw std::runtime_error("requester: a reply that is not the request's payload");
    }
  };
  for (long long i = 0; i < o.warmup; ++i)
    round_trip();
  const auto h = std::make_unique<Histogram>();
  for (long long i = 0; i < o.requests; ++i) {
    const auto start = Clock::now();
    round_trip();
    h->record_signed(
        std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count());
  }
  command(c, {"LPUSH", kRequests, std::string(kStop)}, "LPUSH (stop)");
  return summarize(*h);
}

void delete_lists(const Options& o) {
  const Context c = connect(o.socket);
  command(c.get(), {"DEL", kRequests, kReplies}, "DEL");
}

// One run: the requester's percentiles, handed back through a shared mapping.
Summary run_once(const Options& o) {
  delete_lists(o);
  SharedArray<Summary> result(1);
  Pipe barrier = qbus::bench::make_pipe();
  // A worker connects, waits for the barrier (end of file once the parent closes its end),
  // then runs `body` on its connection.
  const auto worker = [&](auto body) {
    return [&, body] {
      barrier.write.reset();
      const Context c = connect(o.socket);
      char byte = 0;
      if (::read(barrier.read.get(), &byte, 1) < 0) throw std::runtime_error("barrier failed");
      body(c.get());
      return 0;
    };
  };
  Child responder(worker([](redisContext* c) { respond(c); }));
  Child requester(worker([&](redisContext* c) { result[0] = request(c, o); }));
  barrier.write.reset();  // releases both
  // A requester that failed leaves the responder blocked: its destructor kills it.
  if (!requester.wait()) throw std::runtime_error("the requester failed");
  if (!responder.wait()) throw std::runtime_error("the responder failed");
  return result[0];
}

std::string summary_json(const Summary& s) {
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "{\"p50_us\":%.3f,\"p90_us\":%.3f,\"p99_us\":%.3f,\"p99_9_us\":%.3f,"
                "\"max_us\":%.3f}",
                us(s.p50), us(s.p90), us(s.p99), us(s.p999), us(s.max));
  return buf;
}

void print(const Options& o, const Summary& median, const std::vector<Summary>& runs) {
  if (o.json) {
    std::printf(
        "{\"benchmark\":\"redis_rr\",\"round_trips\":%lld,\"warmup\":%lld,\"size\":%zu,"
        "\"runs\":%d,\"redis_request_reply\":%s,\"run_p50_p99_us\":[",
        o.requests, o.warmup, o.size, o.runs, summary_json(median).c_str());
    for (std::size_t i = 0; i < runs.size(); ++i)
      std::printf("%s[%.3f,%.3f]", i ? "," : "", us(runs[i].p50), us(runs[i].p99));
    std::printf("]}\n");
    return;
  }
  std::printf(
      "redis-rr: 1 requester (LPUSH + BLPOP) -> Redis lists -> 1 responder (BLPOP + LPUSH)\n"
      "  %lld round trips x %zu B per run (+%lld warmup), median of %d run(s)\n",
      o.requests, o.size, o.warmup, o.runs);
  std::printf("  %-30s %9s %9s %9s %9s %9s\n", "round trip (us)", "p50", "p90", "p99", "p99.9",
              "max");
  std::printf("  %-30s %9.2f %9.2f %9.2f %9.2f %9.2f\n", "redis LPUSH + BLPOP", us(median.p50),
              us(median.p90), us(median.p99), us(median.p999), us(median.max));
  std::printf("  runs, p50/p99 (us):");
  for (const auto& s : runs)
    std::printf(" %.2f/%.2f", us(s.p50), us(s.p99));
  std::printf("\n");
}

int run(const Options& o) {
  std::vector<Summary> runs;
  for (int i = 0; i < o.runs; ++i)
    runs.push_back(run_once(o));
  delete_lists(o);
  print(o, median_summary(runs), runs);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"redis-rr: request/reply round trips over two Redis lists (LPUSH + BLPOP)",
               "redis-rr"};
  app.option_defaults()->always_capture_default();
  Options o;
  app.add_option("--socket", o.socket, "Unix socket of a running redis-server")->required();
  app.add_option("--requests", o.requests, "Recorded round trips per run")
      ->check(CLI::Range(1LL, 1'000'000'000LL));
  app.add_option("--warmup", o.warmup, "Unrecorded round trips before each run")
      ->check(CLI::Range(0LL, 1'000'000'000LL));
  app.add_option("--size", o.size, "Payload bytes of requests and replies")
      ->check(CLI::Range(0, 1 << 20));
  app.add_option("--runs", o.runs, "Runs; each percentile is the median")->check(CLI::Range(1, 99));
  app.add_flag("--json", o.json, "One JSON object instead of the table");
  CLI11_PARSE(app, argc, argv);
  ::signal(SIGPIPE, SIG_IGN);  // a Redis that went away is an error to report, not a signal
  try {
    return run(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "redis-rr: %s\n", e.what());
    return 1;
  }
}
