// redis-streams: qbus-bench throughput's work (one producer process -> one queue -> one
// consumer process, acknowledged) done on Redis Streams through hiredis, for
// bench/compare.sh.
//
//   redis-streams --socket PATH [--messages N] [--size BYTES] [--count N] [--pipeline N]
//                 [--runs R] [--json]
//
// Each run empties the stream and creates the consumer group, forks a producer and a
// consumer, connects both over the Unix socket of a running redis-server (compare.sh starts
// a private one) and releases them from a barrier. The producer XADDs N entries with one
// field of --size bytes, --pipeline commands written before their replies are read. The
// consumer loops XREADGROUP GROUP bench c1 COUNT --count BLOCK 120000 STREAMS KEY > and
// XACKs the ids of each batch in one command, pipelined with the next XREADGROUP (as qbus's
// ack_up_to is pipelined with the next receive). The time runs from the barrier until the
// consumer has read and acked N entries (its last XACK answered); the rate is N / time, the
// median of --runs runs. Redis keeps acked entries in the stream: a run's entries go with
// the next run's DEL.
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "redis_client.hpp"

namespace {

using namespace qbus::bench::redis;

using Clock = std::chrono::steady_clock;

constexpr char kStream[] = "qbus-bench-stream";
constexpr char kGroup[] = "bench";

struct Options {
  std::string socket;
  long long messages = 1'000'000;
  std::size_t size = 64;
  std::size_t count = 256;    // XREADGROUP COUNT: entries per read round trip
  std::size_t pipeline = 64;  // XADDs written before their replies are read
  int runs = 3;
  bool json = false;
};

// XADDs `o.messages` entries, `o.pipeline` commands per round trip.
void produce(redisContext* c, const Options& o) {
  const std::vector<std::string> xadd = {"XADD", kStream, "*", "f", std::string(o.size, 'm')};
  long long sent = 0;
  while (sent < o.messages) {
    const long long n = std::min(static_cast<long long>(o.pipeline), o.messages - sent);
    for (long long i = 0; i < n; ++i)
      append(c, xadd);
    for (long long i = 0; i < n; ++i)
      next_reply(c, "XADD");
    sent += n;
  }
}

// The ids of the entries in an XREADGROUP reply ([[stream, [[id, [field, value]], ...]]]),
// each checked to carry one field of `size` bytes; nil (BLOCK timed out) gives none.
std::vector<std::string> entry_ids(const redisReply* r, std::size_t size) {
  std::vector<std::string> ids;
  if (r->type == REDIS_REPLY_NIL) return ids;
  const auto bad = [] { return std::runtime_error("XREADGROUP: unexpected reply shape"); };
  if (r->type != REDIS_REPLY_ARRAY || r->elements != 1) throw bad();
  const redisReply* stream = r->element[0];
  if (stream->type != REDIS_REPLY_ARRAY || stream->elements != 2) throw bad();
  const redisReply* entries = stream->element[1];
  if (entries->type != REDIS_REPLY_ARRAY) throw bad();
  for (std::size_t i = 0; i < entries->elements; ++i) {
    const redisReply* e = entries->element[i];
    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2) throw bad();
    const redisReply* fields = e->element[1];
    if (fields->type != REDIS_REPLY_ARRAY || fields->elements != 2 ||
        fields->element[1]->len != size) {
      throw std::runtime_error("XREADGROUP: an entry without its " + std::to_string(size) +
                               "-byte field");
    }
    ids.emplace_back(e->element[0]->str, e->element[0]->len);
  }
  return ids;
}

// The reply of an XACK of `n` ids; throws unless it acked all of them.
void check_ack(redisContext* c, std::size_t n) {
  const Reply acked = next_reply(c, "XACK");
  if (acked->type != REDIS_REPLY_INTEGER || acked->integer != static_cast<long long>(n)) {
    throw std::runtime_error("XACK acked fewer entries than were read");
  }
}

// Reads and acks `o.messages` entries. Each batch's XACK is written with the next
// XREADGROUP (one write, one round trip); their replies come back in that order.
void consume(redisContext* c, const Options& o) {
  const std::vector<std::string> read = {
      "XREADGROUP", "GROUP",  kGroup,    "c1",    "COUNT", std::to_string(o.count),
      "BLOCK",      "120000", "STREAMS", kStream, ">"};
  long long taken = 0;
  std::size_t unanswered_acks = 0;  // ids in the XACK whose reply is not read yet
  bool ack_pending = false;
  while (taken < o.messages) {
    append(c, read);
    if (ack_pending) check_ack(c, unanswered_acks);
    const Reply r = next_reply(c, "XREADGROUP");
    const auto ids = entry_ids(r.get(), o.size);
    if (ids.empty()) throw std::runtime_error("consumer starved for 120 s: entries were lost");
    std::vector<std::string> xack = {"XACK", kStream, kGroup};
    xack.insert(xack.end(), ids.begin(), ids.end());
    append(c, xack);
    ack_pending = true;
    unanswered_acks = ids.size();
    taken += static_cast<long long>(ids.size());
  }
  if (ack_pending) check_ack(c, unanswered_acks);
}

// A fresh stream with the consumer group at its start.
void reset_stream(const Options& o) {
  const Context c = connect(o.socket);
  command(c.get(), {"DEL", kStream}, "DEL");
  command(c.get(), {"XGROUP", "CREATE", kStream, kGroup, "$", "MKSTREAM"}, "XGROUP CREATE");
}

template <typename F>
pid_t spawn(int barrier_read, int barrier_write, const Options& o, F body) {
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid > 0) return pid;
  ::close(barrier_write);
  int code = 1;
  try {
    const Context c = connect(o.socket);
    char byte = 0;
    if (::read(barrier_read, &byte, 1) < 0) throw std::runtime_error("barrier read failed");
    body(c.get());
    code = 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "redis-streams: worker: %s\n", e.what());
  }
  std::_Exit(code);
}

bool reap(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return false;
  }
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

// One run: messages/s from the barrier until the consumer has acked every entry.
double run_once(const Options& o) {
  reset_stream(o);
  int barrier[2];
  if (::pipe(barrier) != 0) throw std::runtime_error("pipe failed");
  const pid_t consumer = spawn(barrier[0], barrier[1], o, [&](redisContext* c) { consume(c, o); });
  const pid_t producer = spawn(barrier[0], barrier[1], o, [&](redisContext* c) { produce(c, o); });
  ::close(barrier[0]);
  const auto start = Clock::now();
  ::close(barrier[1]);  // end of file releases both
  const bool produced = reap(producer);
  const bool consumed = reap(consumer);
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (!produced || !consumed) throw std::runtime_error("a worker failed");
  return static_cast<double>(o.messages) / seconds;
}

int run(const Options& o) {
  std::vector<double> rates;
  for (int i = 0; i < o.runs; ++i)
    rates.push_back(run_once(o));
  std::vector<double> sorted = rates;
  std::sort(sorted.begin(), sorted.end());
  const double median = sorted[sorted.size() / 2];
  {
    const Context c = connect(o.socket);
    command(c.get(), {"DEL", kStream}, "DEL");  // frees the last run's entries
  }
  if (o.json) {
    std::printf(
        "{\"benchmark\":\"redis_streams\",\"messages\":%lld,\"size\":%zu,\"count\":%zu,"
        "\"pipeline\":%zu,\"runs\":%d,\"messages_per_second\":%.0f,"
        "\"run_messages_per_second\":[",
        o.messages, o.size, o.count, o.pipeline, o.runs, median);
    for (std::size_t i = 0; i < rates.size(); ++i)
      std::printf("%s%.0f", i ? "," : "", rates[i]);
    std::printf("]}\n");
    return 0;
  }
  std::printf(
      "redis-streams: 1 producer (XADD, pipeline %zu) -> stream -> 1 consumer (XREADGROUP "
      "COUNT %zu + XACK)\n  %lld x %zu B; median of %d run(s)\n",
      o.pipeline, o.count, o.messages, o.size, o.runs);
  std::printf("  %-28s %12.0f\n", "messages/s", median);
  std::printf("  %-28s %12.2f\n", "MB/s (payload)", median * static_cast<double>(o.size) / 1e6);
  for (const double r : rates)
    std::printf("  run: %.0f/s\n", r);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"redis-streams: producer -> Redis stream -> consumer group, acknowledged",
               "redis-streams"};
  app.option_defaults()->always_capture_default();
  Options o;
  app.add_option("--socket", o.socket, "Unix socket of a running redis-server")->required();
  app.add_option("--messages", o.messages, "Entries in all")
      ->check(CLI::Range(1LL, 1'000'000'000LL));
  app.add_option("--size", o.size, "Bytes of the entry's one field")->check(CLI::Range(0, 1 << 20));
  app.add_option("--count", o.count, "XREADGROUP COUNT: entries per read")
      ->check(CLI::Range(1, 1 << 20));
  app.add_option("--pipeline", o.pipeline, "XADDs written before their replies are read")
      ->check(CLI::Range(1, 1 << 20));
  app.add_option("--runs", o.runs, "Runs; the median is reported")->check(CLI::Range(1, 99));
  app.add_flag("--json", o.json, "One JSON object instead of the table");
  CLI11_PARSE(app, argc, argv);
  try {
    return run(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "redis-streams: %s\n", e.what());
    return 1;
  }
}
