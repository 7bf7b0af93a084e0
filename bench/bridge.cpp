// bridge-bench: the figures of qbus-bridge (docs/bridge.md), each beside libnats doing the
// same work alone against the same nats-server, for bench/bridge.sh. Every mode prints one
// JSON line on stdout.
//
//   bridge-bench outbound --url URL --qbus ADDR_A --bridge BIN --bridge-config FILE [--size B]
//                         [--messages N]
//   bridge-bench publish  --url URL [--size B] [--messages N] [--window W]
//   bridge-bench fetch    --url URL [--size B] [--messages N] [--batch B]
//   bridge-bench inbound  --url URL --qbus ADDR_B --bridge BIN --bridge-config FILE [--size B]
//                         [--messages N]
//   bridge-bench reset    --url URL
//   bridge-bench latency  --url URL --qbus ADDR_A --qbus-b ADDR_B [--samples N] [--warmup N]
//   bridge-bench latency-nats --url URL [--samples N] [--warmup N]
//
// - outbound: fills qbus queue `out` with N messages (declared as the bridge declares it,
//   with message_ids), deletes stream BENCH, then starts the bridge (fork + exec) and polls
//   the stream until it holds N. The time runs from the fork to the JetStream timestamp of
//   the Nth message (CLOCK_REALTIME on both ends, one host), so it includes the bridge's
//   start (reported apart as startup_seconds: fork to the first message stored).
// - publish (outbound's baseline): makes stream BENCH afresh and publishes N messages of the
//   same size, with the headers the bridge adds and a Nats-Msg-Id each, with
//   js_PublishMsgAsync (at most --window unacknowledged), then js_PublishAsyncComplete.
//   It leaves BENCH holding N messages for fetch and inbound.
// - fetch (inbound's baseline): a durable pull consumer of BENCH fetches the N messages in
//   batches of --batch (the bridge's default, 64) and acks each (natsMsg_Ack), as the bridge.
// - inbound: deletes the bridge's consumer so it starts from the first message, starts the
//   bridge, and takes the messages from qbus queue `in` with receive_batch until it has N.
// - reset: stream BENCH made afresh, as the bridge makes it, for latency.
// - latency: both bridges running; one 64 B message at a time to queue `out` on host A,
//   waited for on queue `in` on host B, then the next.
// - latency-nats: the same round through JetStream alone: js_PublishMsg to stream
//   BENCHNATS, a pull consumer's fetch of batch 1, natsMsg_Ack.
#include <fcntl.h>
#include <nats/nats.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <memory>
#include <numeric>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "qbus/client.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Latency through JetStream alone: a stream of its own, so the inbound bridge's consumer
// of BENCH never sees these messages.
constexpr char kNatsStream[] = "BENCHNATS";
constexpr char kNatsSubject[] = "benchnats.x";
constexpr char kFetchConsumer[] = "base";
constexpr char kLatencyConsumer[] = "lat";
// A side that makes no progress for this long has failed.
constexpr auto kStall = std::chrono::seconds(60);

struct Options {
  std::string mode;
  std::string url;
  std::string qbus;    // host A's qbusd (outbound, latency) or host B's (inbound)
  std::string qbus_b;  // latency: host B's qbusd
  std::string bridge;
  std::string bridge_config;
  std::string bridge_log = "/dev/null";
  std::size_t size = 64;
  long long messages = 100000;
  int window = 256;
  int batch = 64;
  int samples = 2000;
  int warmup = 200;
  double max_seconds = 120;
  std::string stream = "BENCH";
  std::string subject = "bench.x";
  std::string consumer = "b";
  std::string out_queue = "out";
  std::string in_queue = "in";
  std::string host = "bench-a";  // Qbus-Origin-Host, as host A's bridge config says
  bool send_asap = false;
};

[[noreturn]] void fail(const std::string& what) {
  throw std::runtime_error(what);
}

void check(natsStatus s, const std::string& what) {
  if (s == NATS_OK) return;
  std::string text = what + ": " + natsStatus_GetText(s);
  natsStatus last = NATS_OK;
  if (const char* d = nats_GetLastError(&last); d && *d) text += std::string(" (") + d + ")";
  fail(text);
}

template <typename T, void (*Destroy)(T*)>
struct Deleter {
  void operator()(T* p) const { Destroy(p); }
};
using ConnPtr = std::unique_ptr<natsConnection, Deleter<natsConnection, natsConnection_Destroy>>;
using JsPtr = std::unique_ptr<jsCtx, Deleter<jsCtx, jsCtx_Destroy>>;
using SubPtr =
    std::unique_ptr<natsSubscription, Deleter<natsSubscription, natsSubscription_Destroy>>;
using MsgPtr = std::unique_ptr<natsMsg, Deleter<natsMsg, natsMsg_Destroy>>;

// The fetched messages of one natsSubscription_Fetch, destroyed with it.
struct MsgList {
  natsMsgList list{};
  MsgList() = default;
  MsgList(const MsgList&) = delete;
  MsgList& operator=(const MsgList&) = delete;
  ~MsgList() { natsMsgList_Destroy(&list); }
};

struct Nats {
  ConnPtr conn;  // declared first: destroyed after the context
  JsPtr js;
};

// A connection and its JetStream context, with at most `window` asynchronous publishes
// unacknowledged (a publish beyond waits for room). libnats writes a publish (an ack, a
// fetch's pull request) from its flusher thread, which first waits up to 1 ms for more to
// write with it; --send-asap writes at once instead (natsOptions_SetSendAsap), which the
// bridge does not do.
Nats connect_nats(const Options& o) {
  Nats n;
  natsOptions* opts = nullptr;
  check(natsOptions_Create(&opts), "nats options");
  const std::unique_ptr<natsOptions, Deleter<natsOptions, natsOptions_Destroy>> owned(opts);
  check(natsOptions_SetURL(opts, o.url.c_str()), "nats URL " + o.url);
  check(natsOptions_SetSendAsap(opts, o.send_asap), "send asap");
  natsConnection* c = nullptr;
  check(natsConnection_Connect(&c, opts), "connect to " + o.url);
  n.conn.reset(c);
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.PublishAsync.MaxPending = o.window;
  jo.PublishAsync.StallWait = 30'000;
  jsCtx* js = nullptr;
  check(natsConnection_JetStream(&js, c, &jo), "JetStream context");
  n.js.reset(js);
  return n;
}

void delete_stream(jsCtx* js, const std::string& name) {
  jsErrCode jerr{};
  const natsStatus s = js_DeleteStream(js, name.c_str(), nullptr, &jerr);
  if (s == NATS_NOT_FOUND || jerr == JSStreamNotFoundErr) return;
  check(s, "delete stream " + name);
}

// As the bridge makes a route's stream: the one subject, file storage, the rest default.
void create_stream(jsCtx* js, const std::string& name, const std::string& subject) {
  jsStreamConfig cfg;
  jsStreamConfig_Init(&cfg);
  cfg.Name = name.c_str();
  const char* subjects[] = {subject.c_str()};
  cfg.Subjects = subjects;
  cfg.SubjectsLen = 1;
  cfg.Storage = js_FileStorage;
  jsStreamInfo* info = nullptr;
  jsErrCode jerr{};
  check(js_AddStream(&info, js, &cfg, nullptr, &jerr), "make stream " + name);
  jsStreamInfo_Destroy(info);
}

struct StreamState {
  std::uint64_t msgs = 0;
  std::int64_t first_ns = 0;  // the first and last message's JetStream timestamps
  std::int64_t last_ns = 0;
};

std::optional<StreamState> stream_state(jsCtx* js, const std::string& name) {
  jsStreamInfo* info = nullptr;
  jsErrCode jerr{};
  const natsStatus s = js_GetStreamInfo(&info, js, name.c_str(), nullptr, &jerr);
  if (s == NATS_NOT_FOUND || jerr == JSStreamNotFoundErr) return std::nullopt;
  check(s, "stream info " + name);
  const StreamState st{info->State.Msgs, info->State.FirstTime, info->State.LastTime};
  jsStreamInfo_Destroy(info);
  return st;
}

void require_messages(jsCtx* js, const Options& o) {
  const auto st = stream_state(js, o.stream);
  if (!st || st->msgs < static_cast<std::uint64_t>(o.messages)) {
    fail("stream " + o.stream + " holds fewer than " + std::to_string(o.messages) +
         " messages: run `bridge-bench publish` with the same --messages first");
  }
}

void delete_consumer(jsCtx* js, const std::string& stream, const std::string& consumer) {
  jsErrCode jerr{};
  const natsStatus s = js_DeleteConsumer(js, stream.c_str(), consumer.c_str(), nullptr, &jerr);
  if (s == NATS_NOT_FOUND || jerr == JSConsumerNotFoundErr || jerr == JSStreamNotFoundErr) return;
  check(s, "delete consumer " + consumer);
}

// A durable pull consumer of `stream` on `subject`, made by libnats when it does not exist
// (deliver all, explicit acks), as the bridge's inbound route makes its own.
SubPtr pull_subscribe(jsCtx* js, const std::string& stream, const std::string& subject,
                      const std::string& durable) {
  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = stream.c_str();
  natsSubscription* sub = nullptr;
  jsErrCode jerr{};
  check(js_PullSubscribe(&sub, js, subject.c_str(), durable.c_str(), nullptr, &so, &jerr),
        "pull consumer " + durable + " of " + stream);
  return SubPtr(sub);
}

// The NATS message the outbound bridge makes of a qbus message: the payload and the
// provenance headers it adds (Nats-Msg-Id comes with the publish options).
MsgPtr bridge_like_msg(const Options& o, const std::string& subject, const std::string& payload) {
  natsMsg* raw = nullptr;
  check(natsMsg_Create(&raw, subject.c_str(), nullptr, payload.data(),
                       static_cast<int>(payload.size())),
        "make a message");
  MsgPtr m(raw);
  natsMsgHeader_Set(raw, "Qbus-Origin-Host", o.host.c_str());
  natsMsgHeader_Set(raw, "Qbus-Origin-Pid", std::to_string(::getpid()).c_str());
  natsMsgHeader_Set(raw, "Qbus-Origin-Uid", std::to_string(::getuid()).c_str());
  natsMsgHeader_Set(raw, "Qbus-Origin-Queue", o.out_queue.c_str());
  return m;
}

// Message ids shaped like qbusd's qbus-id: 16 hex digits of a random incarnation, '-', a
// count.
std::string id_prefix() {
  std::uint64_t r = 0;
  if (::getrandom(&r, sizeof r, 0) != static_cast<ssize_t>(sizeof r)) r = ::getpid();
  char text[20];
  std::snprintf(text, sizeof text, "%016llx-", static_cast<unsigned long long>(r));
  return text;
}

std::int64_t realtime_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

qbus::Client connect_qbus(const std::string& address) {
  qbus::ClientOptions co;
  co.address = address;
  co.name = "bridge-bench";
  co.connect_timeout = milliseconds(30'000);
  return qbus::Client(co);
}

void purge_if_any(qbus::Client& c, const std::string& key) {
  try {
    c.purge(key);
  } catch (const qbus::Error& e) {
    if (e.code() != qbus::Errc::no_such_queue) throw;
  }
}

// qbus-bridge, forked and exec'd with its output appended to --bridge-log; it gets SIGTERM
// if this process dies first, and from stop() or the destructor.
class Bridge {
 public:
  explicit Bridge(const Options& o) {
    const char* path = o.bridge.c_str();
    const char* config = o.bridge_config.c_str();
    const char* log = o.bridge_log.c_str();
    pid_ = ::fork();
    if (pid_ < 0) fail("fork failed");
    if (pid_ > 0) return;
    // Only async-signal-safe calls here: libnats's threads live on in the parent alone.
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    const int fd = ::open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0) {
      ::dup2(fd, STDOUT_FILENO);
      ::dup2(fd, STDERR_FILENO);
    }
    ::execl(path, path, "--config", config, static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ~Bridge() { stop(); }
  Bridge(const Bridge&) = delete;
  Bridge& operator=(const Bridge&) = delete;

  bool running() {
    if (pid_ <= 0) return false;
    if (::waitpid(pid_, nullptr, WNOHANG) == 0) return true;
    pid_ = 0;
    return false;
  }
  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    ::waitpid(pid_, nullptr, 0);
    pid_ = 0;
  }

 private:
  pid_t pid_ = 0;
};

// The messages/s line of one run; `extra` is more JSON members, each with a leading comma.
void print_rate(const Options& o, const char* mode, double seconds, const std::string& extra) {
  std::printf(
      "{\"mode\":\"%s\",\"size\":%zu,\"messages\":%lld,\"seconds\":%.6f,\"per_second\":%.1f%s}\n",
      mode, o.size, o.messages, seconds, static_cast<double>(o.messages) / seconds, extra.c_str());
  std::fflush(stdout);
}

std::string member(const char* name, double value) {
  char text[96];
  std::snprintf(text, sizeof text, ",\"%s\":%.6f", name, value);
  return text;
}

// ---- outbound: qbus queue -> JetStream ---------------------------------------------------

// N messages in qbus queue `out`, declared as the bridge declares it (message_ids, so each
// carries the qbus-id the bridge publishes as Nats-Msg-Id).
void fill_queue(const Options& o) {
  qbus::Client c = connect_qbus(o.qbus);
  qbus::QueueOptions q;
  q.message_ids = true;
  c.declare(o.out_queue, q);
  c.purge(o.out_queue);
  const std::string payload(o.size, 'q');
  {
    qbus::Client::Batch batch(c);
    for (long long i = 0; i < o.messages; ++i)
      c.send(o.out_queue, payload);
  }
  c.sync();
  if (c.send_failures().count != 0) {
    fail("qbusd refused " + std::to_string(c.send_failures().count) +
         " sends to the queue: " + c.send_failures().last_message);
  }
}

// Polls the stream every 20 ms until it holds N messages; fails when the bridge exits or
// the count stands still for kStall.
StreamState wait_for_stream(const Nats& n, const Options& o, Bridge& bridge) {
  const auto want = static_cast<std::uint64_t>(o.messages);
  std::uint64_t seen = 0;
  auto progress = Clock::now();
  for (;;) {
    if (const auto st = stream_state(n.js.get(), o.stream)) {
      if (st->msgs >= want) return *st;
      if (st->msgs != seen) progress = Clock::now();
      seen = st->msgs;
    }
    if (!bridge.running()) fail("qbus-bridge exited (see " + o.bridge_log + ")");
    if (Clock::now() - progress > kStall) {
      fail("stream " + o.stream + " stuck at " + std::to_string(seen) + " messages");
    }
    std::this_thread::sleep_for(milliseconds(20));
  }
}

void run_outbound(const Options& o) {
  const Nats n = connect_nats(o);
  delete_stream(n.js.get(), o.stream);  // the bridge makes it again
  fill_queue(o);
  const std::int64_t start_ns = realtime_ns();
  Bridge bridge(o);
  const StreamState st = wait_for_stream(n, o, bridge);
  bridge.stop();
  const double seconds = static_cast<double>(st.last_ns - start_ns) / 1e9;
  const double startup = static_cast<double>(st.first_ns - start_ns) / 1e9;
  print_rate(
      o, "outbound", seconds,
      member("startup_seconds", startup) + member("stream_messages", static_cast<double>(st.msgs)));
}

void publish_async(const Nats& n, const Options& o, const std::string& prefix, long long i,
                   const std::string& payload) {
  MsgPtr m = bridge_like_msg(o, o.subject, payload);
  const std::string id = prefix + std::to_string(i);
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MsgId = id.c_str();
  natsMsg* raw = m.release();
  const natsStatus s = js_PublishMsgAsync(n.js.get(), &raw, &po);
  natsMsg_Destroy(raw);  // null once libnats took it
  check(s, "js_PublishMsgAsync");
}

void run_publish(const Options& o) {
  const Nats n = connect_nats(o);
  delete_stream(n.js.get(), o.stream);
  create_stream(n.js.get(), o.stream, o.subject);
  const std::string payload(o.size, 'p');
  const std::string prefix = id_prefix();
  const auto t0 = Clock::now();
  for (long long i = 0; i < o.messages; ++i)
    publish_async(n, o, prefix, i, payload);
  jsPubOptions done;
  jsPubOptions_Init(&done);
  done.MaxWait = 120'000;
  check(js_PublishAsyncComplete(n.js.get(), &done), "js_PublishAsyncComplete");
  const double seconds = seconds_since(t0);
  const auto st = stream_state(n.js.get(), o.stream);
  if (!st || st->msgs != static_cast<std::uint64_t>(o.messages)) {
    fail("stream " + o.stream + " holds " + std::to_string(st ? st->msgs : 0) + " messages, not " +
         std::to_string(o.messages));
  }
  print_rate(o, "publish", seconds,
             member("window", o.window) + member("stream_messages", static_cast<double>(st->msgs)));
}

// ---- inbound: JetStream -> qbus queue ----------------------------------------------------

void run_fetch(const Options& o) {
  const Nats n = connect_nats(o);
  require_messages(n.js.get(), o);
  delete_consumer(n.js.get(), o.stream, kFetchConsumer);
  const auto t0 = Clock::now();
  SubPtr sub = pull_subscribe(n.js.get(), o.stream, o.subject, kFetchConsumer);
  long long got = 0;
  while (got < o.messages) {
    MsgList fetched;
    jsErrCode jerr{};
    check(natsSubscription_Fetch(&fetched.list, sub.get(), o.batch, 5000, &jerr), "fetch");
    for (int i = 0; i < fetched.list.Count; ++i) {
      natsMsg* m = fetched.list.Msgs[i];
      if (static_cast<std::size_t>(natsMsg_GetDataLength(m)) != o.size) fail("wrong size");
      natsMsg_Ack(m, nullptr);
    }
    got += fetched.list.Count;
  }
  check(natsConnection_FlushTimeout(n.conn.get(), 30'000), "flush the acks");
  const double seconds = seconds_since(t0);
  sub.reset();
  delete_consumer(n.js.get(), o.stream, kFetchConsumer);
  print_rate(o, "fetch", seconds,
             member("batch", o.batch) + (o.send_asap ? ",\"send_asap\":true" : ""));
}

// Takes N messages from queue `in` (as the bridge delivers them); returns the time of the
// first. Fails when the bridge exits or nothing comes for kStall.
Clock::time_point receive_all(qbus::Client& c, const Options& o, Bridge& bridge) {
  long long got = 0;
  Clock::time_point first{};
  auto progress = Clock::now();
  while (got < o.messages) {
    const auto batch = c.receive_batch(o.in_queue, 1024, milliseconds(200));
    if (batch.empty()) {
      if (!bridge.running()) fail("qbus-bridge exited (see " + o.bridge_log + ")");
      if (Clock::now() - progress > kStall) fail("queue " + o.in_queue + " stalled");
      continue;
    }
    progress = Clock::now();
    if (got == 0) first = progress;
    for (const qbus::Message& m : batch) {
      if (m.size() != o.size) fail("a message of the wrong size in " + o.in_queue);
    }
    got += static_cast<long long>(batch.size());
  }
  return first;
}

void run_inbound(const Options& o) {
  const Nats n = connect_nats(o);
  require_messages(n.js.get(), o);
  delete_consumer(n.js.get(), o.stream, o.consumer);  // the bridge makes it again: all of BENCH
  qbus::Client c = connect_qbus(o.qbus);
  purge_if_any(c, o.in_queue);
  const auto t0 = Clock::now();
  Bridge bridge(o);
  const Clock::time_point first = receive_all(c, o, bridge);
  const double seconds = seconds_since(t0);
  bridge.stop();
  print_rate(o, "inbound", seconds,
             member("startup_seconds", std::chrono::duration<double>(first - t0).count()));
}

void run_reset(const Options& o) {
  const Nats n = connect_nats(o);
  delete_stream(n.js.get(), o.stream);
  create_stream(n.js.get(), o.stream, o.subject);
}

// ---- latency: one message at a time --------------------------------------------------------

// The percentile `p` of sorted `v` (nearest rank).
double percentile(const std::vector<double>& v, double p) {
  const auto rank = static_cast<std::size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size())));
  return v[std::clamp<std::size_t>(rank, 1, v.size()) - 1];
}

// One round: its whole time, and the part until JetStream stored the message (its stream
// timestamp against CLOCK_REALTIME at the start; the rest is from the store to the reader).
struct RoundTime {
  double total_us = 0;
  double to_stream_us = 0;
};

// ",\"NAME_p50_us\":...,\"NAME_p99_us\":..." of `us`, sorted here.
std::string percentiles(const char* name, std::vector<double> us) {
  std::sort(us.begin(), us.end());
  char text[160];
  std::snprintf(text, sizeof text, ",\"%s_p50_us\":%.1f,\"%s_p99_us\":%.1f", name,
                percentile(us, 50), name, percentile(us, 99));
  return text;
}

void print_latency(const Options& o, const char* mode, const std::vector<RoundTime>& rounds,
                   double seconds) {
  if (rounds.empty()) fail("no samples within --max-seconds");
  std::vector<double> us;
  std::vector<double> to_stream;
  std::vector<double> from_stream;
  for (const RoundTime& r : rounds) {
    us.push_back(r.total_us);
    to_stream.push_back(r.to_stream_us);
    from_stream.push_back(r.total_us - r.to_stream_us);
  }
  std::sort(us.begin(), us.end());
  const double mean = std::accumulate(us.begin(), us.end(), 0.0) / static_cast<double>(us.size());
  std::printf(
      "{\"mode\":\"%s\",\"size\":%zu,\"send_asap\":%s,\"samples\":%zu,\"warmup\":%d,"
      "\"seconds\":%.3f,"
      "\"p50_us\":%.1f,\"p90_us\":%.1f,\"p99_us\":%.1f,\"min_us\":%.1f,\"max_us\":%.1f,"
      "\"mean_us\":%.1f%s%s}\n",
      mode, o.size, o.send_asap ? "true" : "false", us.size(), o.warmup, seconds,
      percentile(us, 50), percentile(us, 90), percentile(us, 99), us.front(), us.back(), mean,
      percentiles("to_stream", std::move(to_stream)).c_str(),
      percentiles("from_stream", std::move(from_stream)).c_str());
  std::fflush(stdout);
}

// The payload of round `i`: its number, then padding to --size.
std::string round_payload(const Options& o, int i) {
  std::string p = std::to_string(i) + ":";
  p.resize(std::max(o.size, p.size()), 'l');
  return p;
}

// Waits on queue `in` for `payload`; messages of earlier rounds are skipped.
void await_round(qbus::Client& b, const Options& o, const std::string& payload) {
  for (;;) {
    const auto m = b.receive(o.in_queue, std::chrono::duration_cast<milliseconds>(kStall));
    if (!m) fail("no message on " + o.in_queue + " for 60 s: are both bridges running?");
    if (m->text() == payload) return;
  }
}

// Runs --warmup then --samples rounds (fewer when --max-seconds runs out first); `round`
// times one round and returns when it is over. The stream's last timestamp, read after
// each round (not timed), is when JetStream stored that round's message.
template <typename Round>
void sample_rounds(const Options& o, const char* mode, jsCtx* js, const std::string& stream,
                   Round round) {
  std::vector<RoundTime> rounds;
  rounds.reserve(static_cast<std::size_t>(o.samples));
  const auto t0 = Clock::now();
  const auto deadline = t0 + std::chrono::duration<double>(o.max_seconds);
  for (int i = 0; i < o.warmup + o.samples && Clock::now() < deadline; ++i) {
    const std::string payload = round_payload(o, i);
    const std::int64_t start_ns = realtime_ns();
    const double took = round(payload);
    const auto st = stream_state(js, stream);
    if (!st) fail("stream " + stream + " is gone");
    if (i >= o.warmup) {
      rounds.push_back({took, static_cast<double>(st->last_ns - start_ns) / 1e3});
    }
  }
  print_latency(o, mode, rounds, seconds_since(t0));
}

void run_latency(const Options& o) {
  const Nats n = connect_nats(o);
  qbus::Client a = connect_qbus(o.qbus);
  qbus::Client b = connect_qbus(o.qbus_b);
  qbus::QueueOptions q;
  q.message_ids = true;  // as the outbound bridge declares it
  a.declare(o.out_queue, q);
  purge_if_any(b, o.in_queue);
  sample_rounds(o, "latency", n.js.get(), o.stream, [&](const std::string& payload) {
    const auto t0 = Clock::now();
    a.send(o.out_queue, payload);
    await_round(b, o, payload);
    return std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
  });
}

// One round through JetStream alone: the publish waits for its PubAck, as the bridge's;
// the fetch of batch 1 returns as soon as the message is there.
double nats_round(const Nats& pub, natsSubscription* sub, const Options& o, const std::string& id,
                  const std::string& payload) {
  const auto t0 = Clock::now();
  MsgPtr m = bridge_like_msg(o, kNatsSubject, payload);
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MsgId = id.c_str();
  jsPubAck* ack = nullptr;
  jsErrCode jerr{};
  check(js_PublishMsg(&ack, pub.js.get(), m.get(), &po, &jerr), "js_PublishMsg");
  jsPubAck_Destroy(ack);
  MsgList fetched;
  check(natsSubscription_Fetch(&fetched.list, sub, 1, 60'000, &jerr), "fetch");
  const double took = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
  natsMsg* got = fetched.list.Msgs[0];
  const std::string_view text(natsMsg_GetData(got),
                              static_cast<std::size_t>(natsMsg_GetDataLength(got)));
  if (text != payload) fail("fetched another message than the one published");
  natsMsg_Ack(got, nullptr);
  return took;
}

void run_latency_nats(const Options& o) {
  const Nats pub = connect_nats(o);
  const Nats cons = connect_nats(o);
  delete_stream(pub.js.get(), kNatsStream);
  create_stream(pub.js.get(), kNatsStream, kNatsSubject);
  SubPtr sub = pull_subscribe(cons.js.get(), kNatsStream, kNatsSubject, kLatencyConsumer);
  const std::string prefix = id_prefix();
  int i = 0;
  sample_rounds(o, "latency-nats", pub.js.get(), kNatsStream, [&](const std::string& payload) {
    return nats_round(pub, sub.get(), o, prefix + std::to_string(i++), payload);
  });
  sub.reset();
  delete_stream(pub.js.get(), kNatsStream);
}

// ---- command line ---------------------------------------------------------------------------

void add_options(CLI::App& app, Options& o) {
  app.add_option("mode", o.mode, "What to measure")
      ->required()
      ->check(CLI::IsMember(
          {"outbound", "publish", "fetch", "inbound", "reset", "latency", "latency-nats"}));
  app.add_option("--url", o.url, "nats-server's URL (nats://127.0.0.1:PORT)");
  app.add_option("--qbus", o.qbus, "qbusd of host A (outbound, latency) or B (inbound)");
  app.add_option("--qbus-b", o.qbus_b, "latency: qbusd of host B");
  app.add_option("--bridge", o.bridge, "The qbus-bridge program (outbound, inbound)");
  app.add_option("--bridge-config", o.bridge_config, "Its configuration");
  app.add_option("--bridge-log", o.bridge_log, "Where its output is appended");
  app.add_option("--size", o.size, "Payload bytes")->check(CLI::Range(16, 1 << 20));
  app.add_option("--messages", o.messages, "Messages per run")->check(CLI::PositiveNumber);
  app.add_option("--window", o.window, "publish: unacknowledged publishes at most")
      ->check(CLI::PositiveNumber);
  app.add_option("--batch", o.batch, "fetch: messages per fetch (the bridge's batch)")
      ->check(CLI::Range(1, 1000));
  app.add_option("--samples", o.samples, "latency: timed rounds")->check(CLI::PositiveNumber);
  app.add_option("--warmup", o.warmup, "latency: untimed rounds first")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--max-seconds", o.max_seconds, "latency: stop sampling after this long")
      ->check(CLI::PositiveNumber);
  app.add_option("--host", o.host, "Qbus-Origin-Host of the baseline's messages");
  app.add_flag("--send-asap", o.send_asap,
               "bridge-bench's own NATS connections write every publish at once");
}

void run(const Options& o) {
  if (o.url.empty()) fail(o.mode + " needs --url");
  const bool spawns = o.mode == "outbound" || o.mode == "inbound";
  if (spawns && (o.qbus.empty() || o.bridge.empty() || o.bridge_config.empty())) {
    fail(o.mode + " needs --qbus, --bridge and --bridge-config");
  }
  if (o.mode == "latency" && (o.qbus.empty() || o.qbus_b.empty())) {
    fail("latency needs --qbus and --qbus-b");
  }
  if (o.mode == "outbound") run_outbound(o);
  if (o.mode == "publish") run_publish(o);
  if (o.mode == "fetch") run_fetch(o);
  if (o.mode == "inbound") run_inbound(o);
  if (o.mode == "reset") run_reset(o);
  if (o.mode == "latency") run_latency(o);
  if (o.mode == "latency-nats") run_latency_nats(o);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bridge-bench: qbus-bridge's throughput and added latency beside libnats alone",
               "bridge-bench"};
  app.option_defaults()->always_capture_default();
  Options o;
  add_options(app, o);
  CLI11_PARSE(app, argc, argv);
  ::signal(SIGPIPE, SIG_IGN);
  try {
    run(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bridge-bench %s: %s\n", o.mode.c_str(), e.what());
    nats_Close();
    return 1;
  }
  nats_Close();
  return 0;
}
