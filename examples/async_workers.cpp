// A worker pool on qbus::AsyncSubscription: WORKERS coroutines share one subscription to a
// queue, in acknowledgement mode, so a job is acked only once a worker has done it, and a
// job that a stopped pool never finished goes back to the queue for another consumer.
//
//   async_workers [QUEUE] [WORKERS] [JOBS]   takes jobs from QUEUE (default "jobs") with
//                                           WORKERS (default 4) at once; stops after JOBS
//                                           jobs (default: never) or on SIGINT/SIGTERM
//
// A job here is its payload, printed with the worker that did it. Try it with
//   qbusctl send jobs "one"; qbusctl send jobs "two"
#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <asio/signal_set.hpp>
#include <asio/use_awaitable.hpp>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include "qbus/async_client.hpp"

namespace {

struct Pool {
  qbus::AsyncClient& client;
  qbus::AsyncSubscription& jobs;
  long left;  // jobs to do before stopping; < 0: no limit
  asio::signal_set& signals;
  bool stopping = false;

  void stop() {
    if (stopping) return;
    stopping = true;
    signals.cancel();
    // Waiting workers then end with nullopt; jobs the subscription kept go back.
    jobs.async_cancel([](std::error_code) {});
  }
};

// One worker: the next job, done, acked; until the subscription ends.
asio::awaitable<void> worker(Pool& pool, int number) {
  while (true) {
    auto job = co_await pool.jobs.async_next(asio::use_awaitable);
    if (!job) co_return;  // cancelled: the pool is stopping
    if (pool.stopping) {  // handed out before the cancel: back to the queue, untouched
      pool.client.nack(*job);
      continue;
    }
    std::printf("worker %d: %.*s\n", number, static_cast<int>(job->text().size()),
                job->text().data());
    std::fflush(stdout);
    pool.client.ack(*job);
    if (pool.left > 0 && --pool.left == 0) pool.stop();
  }
}

}  // namespace

int main(int argc, char** argv) {
  const std::string queue = argc > 1 ? argv[1] : "jobs";
  const int workers = argc > 2 ? std::atoi(argv[2]) : 4;
  const long jobs = argc > 3 ? std::atol(argv[3]) : -1;
  if (workers <= 0 || jobs == 0) {
    std::fprintf(stderr, "usage: async_workers [QUEUE] [WORKERS] [JOBS]\n");
    return 2;
  }
  try {
    asio::io_context io;
    qbus::AsyncClient client(io.get_executor());
    // Each worker holds at most one job, so the broker hands out no more than that.
    qbus::SubscribeOptions options;
    options.prefetch = static_cast<std::uint32_t>(workers);
    qbus::AsyncSubscription subscription = client.subscribe(queue, options);
    asio::signal_set signals(io, SIGINT, SIGTERM);
    Pool pool{client, subscription, jobs, signals};
    signals.async_wait([&](std::error_code ec, int) {
      if (!ec) pool.stop();
    });
    int failed = 0;
    for (int i = 1; i <= workers; ++i) {
      asio::co_spawn(io, worker(pool, i), [&](std::exception_ptr e) {
        if (!e) return;
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& x) {  // the subscription ended: queue deleted, ...
          std::fprintf(stderr, "async_workers: %s\n", x.what());
          ++failed;
          pool.stop();
        }
      });
    }
    std::printf("async_workers: %d workers on '%s'\n", workers, queue.c_str());
    std::fflush(stdout);
    io.run();
    return failed == 0 ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "async_workers: %s\n", e.what());
    return 1;
  }
}
