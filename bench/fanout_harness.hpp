// One fan-out measurement, the same for every system it is run on (qbus-bench fanout,
// redis-pubsub, nats-pubsub), so that their figures compare: one publisher process and N
// subscriber processes, forked, connected and subscribed before a barrier opens.
//
// The parent waits until every subscriber has its subscription confirmed by its system and
// the publisher is connected, starts the clock and opens the barrier. The publisher sends
// `messages` data messages of `size` bytes ('m' each) and then kStop; each subscriber counts
// the data messages it gets until kStop and hands the count back through a pipe. The time
// ends when the last count arrives. Deliveries per second = the counts' sum / the time; a
// sum short of subscribers x messages is loss, reported beside it, never hidden.
//
// Single-threaded; the callables run in the forked children (the subscriber's and the
// publisher's connections are theirs alone).
#pragma once

#include <poll.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "process.hpp"

namespace qbus::bench::fanout {

// Ends a subscriber's stream; never a data message (those are `size` bytes of 'm').
inline constexpr std::string_view kStop = "\x01STOP";
// A subscriber gives up when nothing arrives for this long (lost messages or a dead
// publisher): its count is then short, and the run says so.
inline constexpr auto kIdle = std::chrono::seconds(30);

// How long the parent waits for every child to be subscribed or connected.
inline constexpr int kStartTimeoutMs = 120'000;

struct Spec {
  int subscribers = 8;
  long long messages = 1'000'000;
  std::size_t size = 64;
};

struct Result {
  double seconds = 0;
  long long delivered = 0;  // data messages received, over all subscribers
  long long expected = 0;   // subscribers x messages
  double deliveries_per_second() const {
    return seconds > 0 ? static_cast<double>(delivered) / seconds : 0;
  }
  long long lost() const { return expected - delivered; }
};

// Runs in a subscriber's process: subscribes, calls ready() once the system confirmed the
// subscription, then receives until kStop (or kIdle without a message) and returns how
// many data messages it got. `index` is the subscriber's number, 0 .. subscribers-1.
using Subscriber = std::function<long long(int index, const std::function<void()>& ready)>;
// Runs in the publisher's process: connects, calls go() (which returns when the barrier
// opens), publishes the data messages and kStop, and returns once they are all handed to
// the system (flushed). Throws on failure.
using Publisher = std::function<void(const std::function<void()>& go)>;

inline Result run_once(const Spec& spec, const Subscriber& subscriber, const Publisher& publisher) {
  Pipe ready = make_pipe();
  Pipe barrier = make_pipe();
  Pipe counts = make_pipe();
  const auto signal_ready = [&] {
    const char byte = 'r';
    if (!write_all(ready.write.get(), &byte, 1)) throw std::runtime_error("ready pipe broken");
  };
  std::vector<std::unique_ptr<Child>> children;
  for (int i = 0; i < spec.subscribers; ++i) {
    children.push_back(std::make_unique<Child>([&, i] {
      ready.read.reset();
      barrier.write.reset();
      counts.read.reset();
      const long long n = subscriber(i, signal_ready);
      return write_all(counts.write.get(), &n, sizeof n) ? 0 : 1;
    }));
  }
  children.push_back(std::make_unique<Child>([&] {
    ready.read.reset();
    barrier.write.reset();
    counts.read.reset();
    counts.write.reset();
    publisher([&] {
      signal_ready();
      char byte = 0;
      if (::read(barrier.read.get(), &byte, 1) < 0) throw std::runtime_error("barrier broken");
    });
    return 0;
  }));
  ready.write.reset();
  barrier.read.reset();
  counts.write.reset();
  for (int i = 0; i <= spec.subscribers; ++i) {
    // A child that dies before it is ready leaves the others holding the pipe open: a
    // deadline instead of end of file.
    pollfd p{ready.read.get(), POLLIN, 0};
    char byte = 0;
    if (::poll(&p, 1, kStartTimeoutMs) != 1 || !read_all(ready.read.get(), &byte, 1)) {
      throw std::runtime_error("a subscriber or the publisher failed to start");
    }
  }
  const auto start = std::chrono::steady_clock::now();
  barrier.write.reset();  // end of file releases the publisher
  Result r;
  r.expected = spec.messages * spec.subscribers;
  for (int i = 0; i < spec.subscribers; ++i) {
    long long n = 0;
    if (!read_all(counts.read.get(), &n, sizeof n)) {
      throw std::runtime_error("a subscriber failed before the end of the stream");
    }
    r.delivered += n;
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  for (auto& c : children) {
    if (!c->wait()) throw std::runtime_error("a subscriber or the publisher failed");
  }
  return r;
}

// The index of the run with the median deliveries per second (the upper one of an even
// count); `result(i)` is run i's Result.
template <typename ResultOf>
std::size_t median_run(std::size_t runs, ResultOf result) {
  std::vector<std::size_t> order(runs);
  for (std::size_t i = 0; i < runs; ++i)
    order[i] = i;
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return result(a).deliveries_per_second() < result(b).deliveries_per_second();
  });
  return order[runs / 2];
}

// Whether a received payload is a data message of the spec (not kStop, not foreign).
inline bool is_data(std::string_view payload, std::size_t size) {
  return payload.size() == size && payload != kStop;
}

}  // namespace qbus::bench::fanout
