// qbusd's event loop (daemon/src/service/event_loop.hpp): io_context::run with optional
// busy polling. Whether the loop polled or slept is read from its thread's CPU time, with
// margins far wider than any machine's noise: a loop that polls for 50 ms burns about
// 50 ms, one that sleeps burns next to nothing.
#include "service/event_loop.hpp"

#include <gtest/gtest.h>
#include <time.h>

#include <asio/executor_work_guard.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <atomic>
#include <chrono>
#include <thread>

namespace {

using namespace std::chrono_literals;
using qbus::daemon::run_event_loop;

std::chrono::nanoseconds thread_cpu() {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
}

// One handler, then a timer `wait` later: the loop thread's CPU time in between.
std::chrono::nanoseconds cpu_between(std::uint32_t& busy_poll_us, std::chrono::milliseconds wait,
                                     std::uint32_t set_in_first_handler) {
  asio::io_context io(1);
  asio::steady_timer timer(io);
  std::chrono::nanoseconds first{}, second{};
  asio::post(io, [&] {
    first = thread_cpu();
    busy_poll_us = set_in_first_handler;
    timer.expires_after(wait);
    timer.async_wait([&](const asio::error_code&) { second = thread_cpu(); });
  });
  run_event_loop(io, busy_poll_us);
  return second - first;
}

TEST(EventLoop, RunsEveryHandlerAndReturnsWhenOutOfWork) {
  for (std::uint32_t busy : {0u, 100u}) {
    asio::io_context io(1);
    int ran = 0;
    for (int i = 0; i < 1000; ++i)
      asio::post(io, [&] { ++ran; });
    run_event_loop(io, busy);
    EXPECT_EQ(ran, 1000) << "busy_poll_us " << busy;
  }
}

TEST(EventLoop, HandlesWorkPostedFromAnotherThreadWhilePolling) {
  asio::io_context io(1);
  auto guard = asio::make_work_guard(io);
  std::uint32_t busy = 100'000;
  std::atomic<int> ran{0};
  std::thread poster([&] {
    for (int i = 0; i < 200; ++i) {
      asio::post(io, [&] { ran.fetch_add(1); });
      while (ran.load() <= i)
        std::this_thread::yield();
    }
    asio::post(io, [&] { guard.reset(); });
  });
  run_event_loop(io, busy);
  poster.join();
  EXPECT_EQ(ran.load(), 200);
}

TEST(EventLoop, StopEndsItWhilePolling) {
  asio::io_context io(1);
  auto guard = asio::make_work_guard(io);
  std::uint32_t busy = 100'000;  // 100 ms: far longer than the test takes to stop it
  asio::post(io, [&] { asio::post(io, [&] { io.stop(); }); });
  const auto start = std::chrono::steady_clock::now();
  run_event_loop(io, busy);
  EXPECT_TRUE(io.stopped());
  EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);
}

TEST(EventLoop, OffItSleepsUntilTheNextEvent) {
  std::uint32_t busy = 0;
  EXPECT_LT(cpu_between(busy, 300ms, 0), 100ms);
}

TEST(EventLoop, OnItPollsForThatLongAfterWorkThenSleeps) {
  std::uint32_t busy = 0;
  // 50 ms of polling after the first handler, then sleep until the timer at 1 s. A loop
  // that never stopped polling would burn most of the second.
  const auto cpu = cpu_between(busy, 1s, 50'000);
  EXPECT_GT(cpu, 10ms);
  EXPECT_LT(cpu, 500ms);
}

TEST(EventLoop, ReadsTheSettingBeforeEverySleep) {
  std::uint32_t busy = 50'000;
  // The first handler turns it off, as a reload would: no polling after it.
  EXPECT_LT(cpu_between(busy, 300ms, 0), 40ms);
  EXPECT_EQ(busy, 0u);
}

}  // namespace
