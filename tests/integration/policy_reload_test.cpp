// A policy reload in the middle of traffic, on the real daemon: root streams numbered
// messages into a queue that nobody (uid 65534, a forked child that drops to it) is
// taking them from; a SIGHUP with a policy that no longer lets nobody receive refuses its
// next receive with permission_denied, while root's sends go on being accepted; a second
// SIGHUP that opens the queue again lets the same connection take the rest. No message is
// lost or taken twice: each was received before the refusal or waited in the queue, and
// they arrive in the order sent.
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <qbus/client.hpp>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <stdexcept>
#include <string>
#include <utility>

#include "daemon.hpp"
#include "process.hpp"

namespace qbus::testing {
namespace {

using json = nlohmann::json;
using std::chrono::seconds;

constexpr const char* kKey = "stream.jobs";
// Everyone is refused `stream...` but root, whose rule is the more specific; nobody may
// receive from stream.jobs.
constexpr const char* kOpen = R"({"policy": {"default": "allow", "rules": [
  {"deny": "*", "everyone": true, "prefixes": ["stream"]},
  {"allow": "*", "uids": [0], "prefixes": ["stream."]},
  {"allow": ["receive"], "uids": [65534], "keys": ["stream.jobs"]}]}})";
// The same without nobody's rule.
constexpr const char* kClosed = R"({"policy": {"default": "allow", "rules": [
  {"deny": "*", "everyone": true, "prefixes": ["stream"]},
  {"allow": "*", "uids": [0], "prefixes": ["stream."]}]}})";

// The consumer tells the parent it is streaming after this many messages.
constexpr std::uint64_t kStreaming = 200;
// The producer's bound, far below the queue's.
constexpr std::uint64_t kMaxSends = 200'000;
// Sent after the producer is told to stop: traffic goes on after the refusal.
constexpr std::uint64_t kAfterStop = 100;

// Put by a child that failed on whatever the parent may be waiting for, so that the
// parent fails at once rather than waiting on a pipe.
constexpr std::uint64_t kFailed = UINT64_MAX;

// A pipe carrying numbers between the test's processes.
class Channel {
 public:
  Channel() {
    if (::pipe(fds_) != 0) throw std::runtime_error("pipe failed");
  }
  ~Channel() {
    ::close(fds_[0]);
    ::close(fds_[1]);
  }
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;

  void put(std::uint64_t v) {
    if (::write(fds_[1], &v, sizeof v) != sizeof v) throw std::runtime_error("pipe write failed");
  }
  // Blocks until a number arrives; throws when every writer is gone.
  std::uint64_t take() {
    std::uint64_t v = 0;
    if (::read(fds_[0], &v, sizeof v) != sizeof v) throw std::runtime_error("pipe closed");
    return v;
  }
  // True when a number is waiting (without taking it).
  bool ready() {
    pollfd p{fds_[0], POLLIN, 0};
    return ::poll(&p, 1, 0) == 1;
  }

 private:
  int fds_[2];
};

// A forked child that is killed and reaped unless the test waited for it: a failed
// assertion must not leave it blocked on a pipe.
class ChildGuard {
 public:
  explicit ChildGuard(pid_t pid) : pid_(pid) {}
  ~ChildGuard() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    (void)wait_exit(pid_);
  }
  ChildGuard(const ChildGuard&) = delete;
  ChildGuard& operator=(const ChildGuard&) = delete;
  int wait() { return wait_exit(std::exchange(pid_, -1)); }

 private:
  pid_t pid_;
};

int failed(const std::string& why) {
  std::fprintf(stderr, "child %d: %s\n", ::getpid(), why.c_str());
  return 1;
}

template <typename F>
int guarded(F&& body) {
  try {
    return body();
  } catch (const std::exception& e) {
    return failed(e.what());
  }
}

class PolicyReloadTest : public ::testing::Test {
 protected:
  PolicyReloadTest() : daemon_(DaemonOptions{.config_json = kOpen}) {
    // The socket's directory is the test's own: nobody must be able to reach the socket.
    ::chmod(daemon_.dir().path().c_str(), 0755);
  }

  Client connect() { return Client(ClientOptions{daemon_.address(), "reload-test", seconds(30)}); }

  void reload(const char* config, const std::string& logged) {
    const std::string tmp = daemon_.config_path() + ".new";
    {
      std::ofstream f(tmp, std::ios::trunc);
      f << config;
    }
    ASSERT_EQ(::rename(tmp.c_str(), daemon_.config_path().c_str()), 0);
    ASSERT_EQ(::kill(daemon_.pid(), SIGHUP), 0);
    ASSERT_TRUE(daemon_.wait_for_log(logged)) << daemon_.log();
  }

  std::uint64_t depth() {
    const Result r = run({qbusctl_path(), "--address", daemon_.address(), "--json", "queue", kKey});
    if (r.exit_code != 0) throw std::runtime_error("qbusctl queue failed: " + r.err);
    return json::parse(r.out)["queue"]["depth"].get<std::uint64_t>();
  }

  // Root: sends 0, 1, 2, ... until `stop` has a number (or kMaxSends), then kAfterStop
  // more, then puts the count on `sent`.
  pid_t start_producer(Channel& stop, Channel& sent) {
    return spawn([&] {
      const int r = guarded([&] { return produce(stop, sent); });
      if (r != 0) sent.put(kFailed);
      return r;
    });
  }

  int produce(Channel& stop, Channel& sent) {
    auto c = connect();
    std::uint64_t n = 0;
    while (n < kMaxSends && !stop.ready())
      c.send_confirmed(kKey, std::to_string(n++));
    (void)stop.take();
    for (std::uint64_t i = 0; i < kAfterStop; ++i)
      c.send_confirmed(kKey, std::to_string(n++));
    sent.put(n);
    return 0;
  }

  // Nobody: takes messages in order until refused, puts how many it took on `taken`
  // (after kStreaming of them, a 0 on `streaming` first), then, once `total` says how many
  // were sent, takes the rest in order and finds nothing more.
  pid_t start_consumer(Channel& streaming, Channel& taken, Channel& total) {
    return spawn([&] {
      const int r = guarded([&] { return consume(streaming, taken, total); });
      if (r != 0) {
        streaming.put(kFailed);
        taken.put(kFailed);
      }
      return r;
    });
  }

  int consume(Channel& streaming, Channel& taken, Channel& total) {
    if (::setgroups(0, nullptr) != 0) return 10;
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) return 11;
    auto c = connect();
    std::uint64_t next = 0;
    auto take_next = [&] {
      auto m = c.receive(kKey, seconds(30));
      if (!m) return failed("nothing arrived");
      if (m->text() != std::to_string(next)) {
        return failed("expected " + std::to_string(next) + ", got " + std::string(m->text()));
      }
      if (++next == kStreaming) streaming.put(0);
      return 0;
    };
    try {
      while (true)
        if (int r = take_next(); r != 0) return r;
    } catch (const Error& e) {
      if (e.code() != Errc::permission_denied) return failed(e.what());
      if (std::string(e.what()).find("receive from queue 'stream.jobs' denied by policy") ==
          std::string::npos) {
        return failed(std::string("unexpected text: ") + e.what());
      }
    }
    taken.put(next);
    const std::uint64_t sent = total.take();
    while (next < sent)
      if (int r = take_next(); r != 0) return r;
    return c.try_receive(kKey) ? failed("a message more than was sent") : 0;
  }

  Daemon daemon_;
};

TEST_F(PolicyReloadTest, AReloadMidStreamRefusesTheConsumerWithoutLosingOrRepeatingAMessage) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run a client as another uid";
  connect().declare(kKey, QueueOptions{1'000'000, 0, Overflow::reject});
  Channel streaming, taken, total, stop, sent;
  ChildGuard consumer(start_consumer(streaming, taken, total));
  ChildGuard producer(start_producer(stop, sent));

  // Both sides are running: close the queue to nobody under their traffic.
  ASSERT_NE(streaming.take(), kFailed);
  reload(kClosed, "policy: 2 rules, default allow (was 3 rules, default allow)");
  // The consumer's next receive was refused; everything before it was taken in order.
  const std::uint64_t received = taken.take();
  ASSERT_NE(received, kFailed);
  EXPECT_GE(received, kStreaming);
  stop.put(0);
  const std::uint64_t total_sent = sent.take();
  ASSERT_NE(total_sent, kFailed);
  EXPECT_EQ(producer.wait(), 0);
  // Root's sends went on being accepted after the reload, and waited for the consumer.
  ASSERT_GE(total_sent, received + kAfterStop);
  EXPECT_EQ(depth(), total_sent - received);

  // Opened again: the same connection takes the rest, in order, and no more.
  reload(kOpen, "policy: 3 rules, default allow (was 2 rules, default allow)");
  total.put(total_sent);
  EXPECT_EQ(consumer.wait(), 0);
  EXPECT_EQ(depth(), 0u);
}

}  // namespace
}  // namespace qbus::testing
