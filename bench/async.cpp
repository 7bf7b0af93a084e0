// qbus-bench async: request/reply throughput of qbus::AsyncClient with K requests in flight
// on one connection, against the blocking Client's request() one at a time, in the same
// invocation and against the same responder: another process that takes requests in
// batches (receive_batch) and reply()s each. The runs alternate (blocking, async, ...) so
// that the machine's drift falls on both; each figure is the median run.
#include <signal.h>

#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <asio/use_awaitable.hpp>
#include <cstdio>
#include <exception>
#include <memory>
#include <qbus/async_client.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "common.hpp"
#include "daemon.hpp"
#include "modes.hpp"

namespace qbus::bench {
namespace {

constexpr char kKey[] = "bench.async";
constexpr auto kReplyTimeout = std::chrono::seconds(10);

struct AsyncOptions {
  long long requests = 200'000;
  long long blocking_requests = 50'000;
  int in_flight = 64;
  std::size_t size = 64;
  int runs = 3;
  std::string address;
  bool json = false;
};

// Requests per second of the blocking Client, one request() at a time.
double blocking_run(const AsyncOptions& o, const std::string& address) {
  auto c = connect(address);
  const std::string payload(o.size, 'q');
  const auto start = Clock::now();
  for (long long i = 0; i < o.blocking_requests; ++i) {
    const auto reply = c.request(kKey, payload, kReplyTimeout);
    if (!reply || reply->size() != o.size) throw std::runtime_error("blocking: a bad reply");
  }
  const std::chrono::duration<double> took = Clock::now() - start;
  return static_cast<double>(o.blocking_requests) / took.count();
}

// Requests per second of one AsyncClient keeping `in_flight` requests outstanding: each of
// `in_flight` coroutines sends its share one request after another.
double async_run(const AsyncOptions& o, const std::string& address) {
  asio::io_context io;
  ClientOptions options;
  options.address = address;
  options.name = "qbus-bench async";
  AsyncClient c(io.get_executor(), options);
  const std::string payload(o.size, 'q');
  std::exception_ptr failed;
  const auto worker = [&](long long count) -> asio::awaitable<void> {
    for (long long i = 0; i < count; ++i) {
      auto reply = co_await c.async_request(kKey, payload, kReplyTimeout, asio::use_awaitable);
      if (!reply || reply->size() != o.size) throw std::runtime_error("async: a bad reply");
    }
  };
  const auto start = Clock::now();
  for (int w = 0; w < o.in_flight; ++w) {
    const long long first = o.requests * w / o.in_flight;
    const long long count = o.requests * (w + 1) / o.in_flight - first;
    asio::co_spawn(io, worker(count), [&](std::exception_ptr e) {
      if (e && !failed) failed = e;
    });
  }
  io.run();
  const std::chrono::duration<double> took = Clock::now() - start;
  if (failed) std::rethrow_exception(failed);
  return static_cast<double>(o.requests) / took.count();
}

int async_bench(const AsyncOptions& o) {
  ::signal(SIGPIPE, SIG_IGN);
  if (o.in_flight < 1 || o.requests < o.in_flight || o.blocking_requests < 1 || o.runs < 1) {
    throw std::runtime_error("--requests must be at least --in-flight (>= 1), and --runs >= 1");
  }
  std::unique_ptr<qbus::testing::Daemon> daemon;
  if (o.address.empty()) {
    qbus::testing::DaemonOptions d;
    d.log_level = "warn";
    daemon = std::make_unique<qbus::testing::Daemon>(d);
  }
  const std::string address = daemon ? daemon->address() : o.address;
  Pipe ready = make_pipe();
  Child responder([&] {
    auto c = connect(address);
    const std::string payload(o.size, 'r');
    if (!announce(ready, '\1')) return 1;
    while (true) {
      const auto batch = c.receive_batch(kKey, 256, kIdleTimeout);
      if (batch.empty()) return 1;
      for (const Message& m : batch) {
        if (!m.is_request()) return c.send_failures().count == 0 ? 0 : 1;  // the stop
        c.reply(m, payload);
      }
    }
  });
  await_ready<char>(ready, "the responder");
  std::vector<double> blocking;
  std::vector<double> async;
  for (int r = 0; r < o.runs; ++r) {
    blocking.push_back(blocking_run(o, address));
    async.push_back(async_run(o, address));
  }
  auto stopper = connect(address);
  stopper.send(kKey, kStop);
  stopper.sync();
  if (!responder.wait()) throw std::runtime_error("the responder failed");
  const double b = median_of(blocking);
  const double a = median_of(async);
  if (o.json) {
    std::printf(
        "{\"benchmark\":\"async\",\"size\":%zu,\"runs\":%d,\"in_flight\":%d,"
        "\"blocking_requests_per_s\":%.0f,\"async_requests_per_s\":%.0f,\"ratio\":%.3f}\n",
        o.size, o.runs, o.in_flight, b, a, ratio(a, b));
  } else {
    std::printf("async request/reply, %zu B, median of %d runs\n", o.size, o.runs);
    std::printf("  blocking Client, 1 in flight:   %12.0f requests/s\n", b);
    std::printf("  AsyncClient, %3d in flight:     %12.0f requests/s (%.2fx)\n", o.in_flight, a,
                ratio(a, b));
  }
  return 0;
}

}  // namespace

Mode async_mode(CLI::App& cmd) {
  return bind_mode<AsyncOptions>(
      cmd,
      [](CLI::App& c, AsyncOptions& o) {
        c.add_option("--requests", o.requests, "AsyncClient requests per run")
            ->check(CLI::PositiveNumber);
        c.add_option("--blocking-requests", o.blocking_requests,
                     "blocking request()s per run (one at a time: fewer suffice)")
            ->check(CLI::PositiveNumber);
        c.add_option("--in-flight", o.in_flight, "AsyncClient requests outstanding at once")
            ->check(CLI::PositiveNumber);
        c.add_option("--size", o.size, "payload bytes of requests and replies");
        c.add_option("--runs", o.runs, "runs of each, alternated; the median is reported")
            ->check(CLI::PositiveNumber);
        c.add_option("--address", o.address, "a running qbusd (default: a private one)");
        c.add_flag("--json", o.json, "one JSON line");
      },
      async_bench);
}

}  // namespace qbus::bench
