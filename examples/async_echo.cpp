// An echo service and its caller on qbus::AsyncClient, with Asio coroutines.
//
//   async_echo serve [QUEUE] [WORKERS]   answers every request on QUEUE (default "echo")
//                                       with its own payload, WORKERS (default 16)
//                                       receives outstanding at once on one connection
//   async_echo call N [QUEUE] [IN_FLIGHT] sends N requests, IN_FLIGHT (default 64) at a
//                                       time, checks every reply and prints the rate
//
// The broker is found as every qbus client finds it ($QBUS_ADDRESS, else the default
// socket). One thread runs everything: the workers and callers are coroutines that
// suspend on the broker's answers.
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/use_awaitable.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include "qbus/async_client.hpp"

namespace {

using namespace std::chrono_literals;

// One worker: takes a request, answers it, again, until the connection fails.
asio::awaitable<void> echo_worker(qbus::AsyncClient& client, std::string queue) {
  while (true) {
    auto request = co_await client.async_receive(queue, qbus::kForever, asio::use_awaitable);
    if (request && request->is_request()) {
      co_await client.async_reply(*request, request->text(), asio::use_awaitable);
    }
  }
}

// One caller: its share of the requests, one at a time; the callers together keep
// IN_FLIGHT requests outstanding.
asio::awaitable<void> caller(qbus::AsyncClient& client, std::string queue, long first, long count,
                             long& wrong) {
  for (long i = first; i < first + count; ++i) {
    const std::string payload = "request " + std::to_string(i);
    auto reply = co_await client.async_request(queue, payload, 10s, asio::use_awaitable);
    if (!reply || reply->text() != payload) ++wrong;
  }
}

int usage() {
  std::fprintf(stderr,
               "usage: async_echo serve [QUEUE] [WORKERS]\n"
               "       async_echo call N [QUEUE] [IN_FLIGHT]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return usage();
  const std::string mode = argv[1];
  try {
    asio::io_context io;
    qbus::AsyncClient client(io.get_executor());
    if (mode == "serve") {
      const std::string queue = argc > 2 ? argv[2] : "echo";
      const int workers = argc > 3 ? std::atoi(argv[3]) : 16;
      for (int i = 0; i < workers; ++i) {
        asio::co_spawn(io, echo_worker(client, queue), [](std::exception_ptr e) {
          if (e) std::rethrow_exception(e);
        });
      }
      std::printf("async_echo: serving '%s' with %d workers\n", queue.c_str(), workers);
      std::fflush(stdout);
      io.run();
      return 0;
    }
    if (mode != "call" || argc < 3) return usage();
    const long n = std::atol(argv[2]);
    const std::string queue = argc > 3 ? argv[3] : "echo";
    const long in_flight = argc > 4 ? std::atol(argv[4]) : 64;
    if (n <= 0 || in_flight <= 0) return usage();
    long wrong = 0;
    const auto start = std::chrono::steady_clock::now();
    for (long c = 0; c < in_flight; ++c) {
      const long first = n * c / in_flight;
      const long count = n * (c + 1) / in_flight - first;
      asio::co_spawn(io, caller(client, queue, first, count, wrong), [](std::exception_ptr e) {
        if (e) std::rethrow_exception(e);
      });
    }
    io.run();
    const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
    std::printf("async_echo: %ld requests, %ld in flight: %.0f requests/s, %ld wrong\n", n,
                in_flight, static_cast<double>(n) / took.count(), wrong);
    return wrong == 0 ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "async_echo: %s\n", e.what());
    return 1;
  }
}
