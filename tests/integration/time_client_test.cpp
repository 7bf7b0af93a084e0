// Time to live, delayed delivery, priorities and single-active-consumer queues
// (proto/PROTOCOL.md 17.1, 17.6, 17.8-17.10) against the real qbusd, through libqbus, raw
// frames and child processes: expired messages are never delivered (dropped or
// dead-lettered, counted in the admin JSON), delayed ones never early, higher levels come
// first and a returned message goes to the head of its own level, and a
// single-active-consumer queue fails over to the next subscriber, in order, when its
// consumer process is killed. Tests wait on messages and on the admin JSON, never on
// sleeps; times are asserted as lower bounds only.
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <qbus/client.hpp>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "daemon.hpp"
#include "eventually.hpp"
#include "process.hpp"
#include "qbus/proto/buffer.hpp"
#include "raw_peer.hpp"

namespace qbus::testing {
namespace {

using json = nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;
using SteadyClock = std::chrono::steady_clock;

constexpr auto kLong = seconds(30);         // for what must arrive
constexpr auto kShort = milliseconds(100);  // for what must not
const ReceiveOptions kAck{true};

// What a child process writes on a pipe, one line at a time, read with a deadline.
class Lines {
 public:
  explicit Lines(int fd) : fd_(fd) {}
  ~Lines() { ::close(fd_); }
  Lines(const Lines&) = delete;
  Lines& operator=(const Lines&) = delete;

  // The next line; nullopt when the writer closed the pipe or nothing came in `timeout`.
  std::optional<std::string> next(milliseconds timeout = kLong) {
    const auto deadline = SteadyClock::now() + timeout;
    for (;;) {
      if (const auto nl = buf_.find('\n'); nl != std::string::npos) {
        std::string line = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        return line;
      }
      const auto left =
          std::chrono::duration_cast<milliseconds>(deadline - SteadyClock::now()).count();
      if (left <= 0) return std::nullopt;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left)) <= 0) continue;
      char b[4096];
      const ssize_t n = ::read(fd_, b, sizeof b);
      if (n <= 0) return std::nullopt;
      buf_.append(b, static_cast<std::size_t>(n));
    }
  }
  // True when something was written that next() has not returned yet.
  bool pending() {
    pollfd p{fd_, POLLIN, 0};
    return !buf_.empty() || ::poll(&p, 1, 0) > 0;
  }

 private:
  int fd_;
  std::string buf_;
};

// In a child: one line to the parent.
void say(int fd, const std::string& line) {
  const std::string l = line + "\n";
  (void)!::write(fd, l.data(), l.size());
}

// A child process and its reports; killed (SIGKILL) and reaped on destruction if it is
// still there, so that a failed assertion leaves no process behind.
struct Child {
  pid_t pid = -1;
  std::unique_ptr<Lines> lines;

  Child(pid_t p, std::unique_ptr<Lines> l) : pid(p), lines(std::move(l)) {}
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      wait_exit(pid);
    }
  }
  // Its exit code (100 + the signal that ended it), once it has ended.
  int wait() {
    const int code = wait_exit(pid);
    pid = -1;
    return code;
  }
};

// Runs body(fd) in a child process that reports on `fd`, a pipe read through Child::lines.
template <typename F>
std::unique_ptr<Child> spawn_reporting(F&& body) {
  int fds[2];
  if (::pipe(fds) != 0) throw std::runtime_error("pipe failed");
  const pid_t pid = spawn([&] {
    ::close(fds[0]);
    return body(fds[1]);
  });
  ::close(fds[1]);
  return std::make_unique<Child>(pid, std::make_unique<Lines>(fds[0]));
}

class TimeClientTest : public ::testing::Test {
 protected:
  ClientOptions options(const std::string& name) const {
    return ClientOptions{daemon_.address(), name, seconds(30)};
  }
  Client connect(const std::string& name = "time-test") { return Client(options(name)); }
  Result ctl(std::vector<std::string> args) {
    args.insert(args.begin(), {qbusctl_path(), "--address", daemon_.address()});
    return run(args);
  }
  // The queue's admin JSON (`qbusctl queue KEY --json`); null when there is no such queue.
  json queue_json(const std::string& key) {
    const Result r = ctl({"queue", key, "--json"});
    if (r.exit_code != 0) return json();
    return json::parse(r.out)["queue"];
  }
  // Waits (30 s at most) until the admin JSON's `field` of queue `key` is `value`.
  bool queue_reaches(const std::string& key, const std::string& field, const json& value) {
    return eventually([&] {
      const json q = queue_json(key);
      return q.is_object() && q[field] == value;
    });
  }
  std::size_t subscribers(const std::string& key) {
    const json q = queue_json(key);
    return q.is_object() ? q["subscribers"].size() : 0;
  }
  // The broker's code of what `call` throws; Errc::ok when it throws nothing.
  template <typename F>
  static Errc code_of(F&& call) {
    try {
      call();
    } catch (const Error& e) {
      return e.code();
    }
    return Errc::ok;
  }
  static std::string texts(const std::vector<Message>& ms) {
    std::string all;
    for (const auto& m : ms)
      all += std::string(m.text()) + " ";
    return all;
  }
  // Receives `n` messages of `key` (acknowledged at once when `ack`), in order.
  std::vector<Message> receive_n(Client& c, const std::string& key, std::size_t n,
                                 bool ack = false) {
    std::vector<Message> got;
    while (got.size() < n) {
      auto batch = c.receive_batch(key, n - got.size(), kLong, ReceiveOptions{ack});
      if (batch.empty()) break;
      for (auto& m : batch) {
        if (ack) c.ack(m);
        got.push_back(std::move(m));
      }
    }
    return got;
  }

  Daemon daemon_;
};

QueueOptions with_ttl(milliseconds ttl) {
  QueueOptions o;
  o.ttl = ttl;
  return o;
}

// --- Time to live ---------------------------------------------------------------------

TEST_F(TimeClientTest, ExpiredMessagesAreDroppedUndeliveredAndCounted) {
  auto c = connect();
  c.declare("ttl.drop", with_ttl(milliseconds(200)));
  for (const char* m : {"a", "b", "c"})
    c.send_confirmed("ttl.drop", m);
  // The queue's expiry deadline drops them, with nobody receiving.
  ASSERT_TRUE(queue_reaches("ttl.drop", "expired_total", 3)) << queue_json("ttl.drop").dump();
  const json q = queue_json("ttl.drop");
  EXPECT_EQ(q["depth"], 0);
  EXPECT_EQ(q["ttl_ms"], 200);
  EXPECT_EQ(q["dead_lettered_total"], 0);
  EXPECT_FALSE(c.receive("ttl.drop", kShort));
  EXPECT_FALSE(c.receive("ttl.drop", kShort, kAck));
}

TEST_F(TimeClientTest, AMessagesOwnTtlBeatsTheQueueDefault) {
  auto c = connect();
  // Longer than the queue's default: it outlives it.
  c.declare("ttl.longer", with_ttl(milliseconds(200)));
  c.declare("ttl.probe", with_ttl(milliseconds(200)));
  c.send_confirmed("ttl.longer", "default");
  c.send("ttl.longer", "own", SendOptions{.confirm = true, .ttl = seconds(600)});
  // A probe sent after "own" with the same 200 ms: once it expired, "own" is older than
  // the queue's default.
  c.send_confirmed("ttl.probe", "probe");
  ASSERT_TRUE(queue_reaches("ttl.probe", "expired_total", 1));
  ASSERT_TRUE(queue_reaches("ttl.longer", "expired_total", 1));
  auto own = c.receive("ttl.longer", kLong);
  ASSERT_TRUE(own);
  EXPECT_EQ(own->text(), "own");
  EXPECT_FALSE(c.receive("ttl.longer", kShort));

  // Shorter than the queue's default: it expires, the message behind it does not.
  c.declare("ttl.shorter", with_ttl(seconds(600)));
  c.send("ttl.shorter", "brief", SendOptions{.confirm = true, .ttl = milliseconds(100)});
  c.send_confirmed("ttl.shorter", "default");
  ASSERT_TRUE(queue_reaches("ttl.shorter", "expired_total", 1));
  auto m = c.receive("ttl.shorter", kLong);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->text(), "default");
  EXPECT_FALSE(c.receive("ttl.shorter", kShort));
}

TEST_F(TimeClientTest, AnExpiredMessageIsDeadLetteredWithItsHeaders) {
  auto c = connect();
  QueueOptions o;
  o.dead_letter = "ttl.dl.dead";
  o.dead_letter_expired = true;
  c.declare("ttl.dl", o);
  c.send("ttl.dl", "stale",
         SendOptions{.headers = {{"trace", "t-9"}, {"content-type", "text/plain"}},
                     .confirm = true,
                     .ttl = milliseconds(100)});
  auto dead = c.receive("ttl.dl.dead", kLong);
  ASSERT_TRUE(dead);
  EXPECT_EQ(dead->text(), "stale");
  EXPECT_EQ(dead->header("qbus-dead-reason"), "expired");
  EXPECT_EQ(dead->header("qbus-dead-queue"), "ttl.dl");
  EXPECT_EQ(dead->header("trace"), "t-9");
  EXPECT_EQ(dead->header("content-type"), "text/plain");
  const json q = queue_json("ttl.dl");
  EXPECT_EQ(q["expired_total"], 1);
  EXPECT_EQ(q["dead_lettered_total"], 1);
  EXPECT_EQ(q["dead_letter_expired"], true);
  EXPECT_FALSE(c.receive("ttl.dl", kShort));
}

// --- Delayed delivery -----------------------------------------------------------------

TEST_F(TimeClientTest, ADelayedMessageIsNeverDeliveredEarly) {
  auto producer = connect("producer");
  auto consumer = connect("consumer");
  const auto sent = SteadyClock::now();  // before the broker accepts it
  producer.send("delayed", "later", SendOptions{.confirm = true, .delay = milliseconds(300)});
  auto m = consumer.receive("delayed", kLong);
  const auto received = SteadyClock::now();
  ASSERT_TRUE(m);
  EXPECT_EQ(m->text(), "later");
  EXPECT_GE(received - sent, milliseconds(300));
  // In acknowledgement mode too, and from a subscription.
  const auto sent2 = SteadyClock::now();
  producer.send("delayed", "acked", SendOptions{.confirm = true, .delay = milliseconds(300)});
  auto sub = consumer.subscribe("delayed", SubscribeOptions{1, true});
  auto a = sub.next(kLong);
  ASSERT_TRUE(a);
  EXPECT_GE(SteadyClock::now() - sent2, milliseconds(300));
  EXPECT_EQ(a->text(), "acked");
  consumer.ack(*a, true);
}

TEST_F(TimeClientTest, ADelayedMessageHoldsUpNothingAndShowsAsDelayed) {
  auto c = connect();
  // Not due for a long while: the message sent after it is received first.
  c.send("order", "late", SendOptions{.confirm = true, .delay = seconds(600)});
  c.send_confirmed("order", "now");
  auto first = c.receive("order", kLong);
  ASSERT_TRUE(first);
  EXPECT_EQ(first->text(), "now");
  EXPECT_FALSE(c.receive("order", kShort));
  EXPECT_FALSE(c.receive("order", kShort, kAck));
  // Shown as delayed, not in depth nor in flight.
  const json q = queue_json("order");
  EXPECT_EQ(q["delayed"], 1);
  EXPECT_EQ(q["depth"], 0);
  EXPECT_EQ(q["in_flight"], 0);
}

TEST_F(TimeClientTest, ADelayedRegionSendIsNeverDeliveredEarly) {
  auto c = connect();
  Region r = c.allocate_region(256 * 1024);
  std::memset(r.data().data(), 'd', r.size());
  const auto sent = SteadyClock::now();
  c.send("delayed.region", std::move(r),
         SendOptions{.headers = {{"k", "v"}}, .delay = milliseconds(300)});
  c.sync();
  EXPECT_EQ(c.send_failures().count, 0u) << c.send_failures().last_message;
  auto m = c.receive("delayed.region", kLong);
  ASSERT_TRUE(m);
  EXPECT_GE(SteadyClock::now() - sent, milliseconds(300));
  EXPECT_TRUE(m->in_shared_memory());
  EXPECT_EQ(m->size(), 256u * 1024);
  EXPECT_EQ(m->text().find_first_not_of('d'), std::string_view::npos);
  EXPECT_EQ(m->header("k"), "v");
}

// --- Priorities -----------------------------------------------------------------------

// Message i of the producer goes with priority (3 i) mod 10: every level gets 10,
// interleaved.
std::uint8_t priority_of(int i) {
  return static_cast<std::uint8_t>(i * 3 % 10);
}

TEST_F(TimeClientTest, PrioritiesAcrossProcessesHighestFirstFifoWithinALevel) {
  auto c = connect("consumer");
  QueueOptions o;
  o.priorities = 10;
  c.declare("prio", o);
  const pid_t producer = spawn([&] {
    Client p(options("producer"));
    for (int i = 0; i < 100; ++i) {
      p.send("prio", std::to_string(i) + " " + std::to_string(priority_of(i)),
             SendOptions{.priority = priority_of(i)});
    }
    p.sync();
    return p.send_failures().count == 0 ? 0 : 1;
  });
  ASSERT_EQ(wait_exit(producer), 0);  // every message is in before anyone receives
  EXPECT_EQ(queue_json("prio")["priorities"], 10);
  const auto got = receive_n(c, "prio", 100);
  ASSERT_EQ(got.size(), 100u);
  std::map<int, int> per_level;
  int last_seq = -1, last_prio = 10;
  for (const auto& m : got) {
    int seq = -1, prio = -1;
    ASSERT_EQ(std::sscanf(std::string(m.text()).c_str(), "%d %d", &seq, &prio), 2);
    ASSERT_EQ(prio, priority_of(seq));
    ASSERT_LE(prio, last_prio) << "message " << seq << " came after a lower level";
    if (prio == last_prio) {
      EXPECT_GT(seq, last_seq) << "FIFO within level " << prio;
    }
    last_seq = seq;
    last_prio = prio;
    ++per_level[prio];
  }
  EXPECT_EQ(per_level.size(), 10u);
  for (const auto& [level, n] : per_level)
    EXPECT_EQ(n, 10) << "level " << level;
  EXPECT_FALSE(c.receive("prio", kShort));
}

TEST_F(TimeClientTest, ANackedMessageGoesToTheHeadOfItsOwnLevel) {
  auto c = connect();
  QueueOptions o;
  o.priorities = 10;
  c.declare("levels", o);
  for (const char* m : {"three-a", "three-b", "three-c"})
    c.send("levels", m, SendOptions{.confirm = true, .priority = 3});
  auto a = c.receive("levels", kLong, kAck);
  ASSERT_TRUE(a);
  ASSERT_EQ(a->text(), "three-a");
  c.send("levels", "seven", SendOptions{.confirm = true, .priority = 7});
  c.send("levels", "one", SendOptions{.confirm = true, .priority = 1});
  c.nack(*a, NackAction::requeue, {}, true);
  const auto got = receive_n(c, "levels", 5, true);
  ASSERT_EQ(got.size(), 5u) << texts(got);
  EXPECT_EQ(texts(got), "seven three-a three-b three-c one ");
  EXPECT_TRUE(got[1].redelivered());
  EXPECT_EQ(got[1].delivery_count(), 2u);
  EXPECT_FALSE(got[0].redelivered());
  EXPECT_FALSE(c.receive("levels", kShort));
}

TEST_F(TimeClientTest, APriorityIsClampedToTheQueuesLevels) {
  auto c = connect();
  QueueOptions o;
  o.priorities = 3;
  c.declare("three", o);
  c.send("three", "nine-a", SendOptions{.confirm = true, .priority = 9});
  c.send("three", "one", SendOptions{.confirm = true, .priority = 1});
  c.send("three", "two", SendOptions{.confirm = true, .priority = 2});
  c.send("three", "nine-b", SendOptions{.confirm = true, .priority = 9});
  // 9 is level 2, first in first out with the 2s.
  EXPECT_EQ(texts(receive_n(c, "three", 4)), "nine-a two nine-b one ");
  // A queue of one level ignores priorities.
  c.send("flat", "zero", SendOptions{.confirm = true});
  c.send("flat", "nine", SendOptions{.confirm = true, .priority = 9});
  EXPECT_EQ(texts(receive_n(c, "flat", 2)), "zero nine ");
  EXPECT_EQ(queue_json("three")["priorities"], 3);
}

// --- Single active consumer -----------------------------------------------------------

// A consumer process of queue "sac": subscribes with prefetch 5, reports "id CLIENT_ID",
// then "TEXT new|redelivered COUNT" for each of `count` messages, acking the first
// `acked`; then reports "done" and holds the rest until it is killed (`hold`) or returns.
int sac_consumer(const ClientOptions& o, int out, int count, int acked, bool hold) {
  Client c(o);
  auto sub = c.subscribe("sac", SubscribeOptions{5, true});
  say(out, "id " + std::to_string(c.session().client_id));
  for (int i = 0; i < count; ++i) {
    auto m = sub.next(kLong);
    if (!m) return 1;
    say(out, std::string(m->text()) + (m->redelivered() ? " redelivered " : " new ") +
                 std::to_string(m->delivery_count()));
    if (i < acked) c.ack(*m, true);
  }
  say(out, "done");
  if (hold) ::pause();
  return 0;
}

std::string nth(int i) {
  return "m" + std::to_string(i);
}

// The client id a consumer reported first.
std::uint64_t reported_id(Lines& lines) {
  const auto l = lines.next();
  if (!l || l->rfind("id ", 0) != 0) return 0;
  return std::stoull(l->substr(3));
}

TEST_F(TimeClientTest, SingleActiveConsumerFailsOverInOrderWhenItsProcessIsKilled) {
  auto producer = connect("producer");
  QueueOptions o;
  o.single_active_consumer = true;
  producer.declare("sac", o);
  // The first consumer subscribes first: it is the active one.
  auto first =
      spawn_reporting([&](int out) { return sac_consumer(options("first"), out, 10, 5, true); });
  const std::uint64_t first_id = reported_id(*first->lines);
  ASSERT_TRUE(eventually([&] { return subscribers("sac") == 1; }));
  auto second =
      spawn_reporting([&](int out) { return sac_consumer(options("second"), out, 15, 15, false); });
  const std::uint64_t second_id = reported_id(*second->lines);
  ASSERT_TRUE(eventually([&] { return subscribers("sac") == 2; }));
  std::map<std::uint64_t, bool> active;
  const json standing = queue_json("sac");
  for (const json& s : standing["subscribers"])
    active[s["client"].get<std::uint64_t>()] = s["active"].get<bool>();
  EXPECT_EQ(active, (std::map<std::uint64_t, bool>{{first_id, true}, {second_id, false}}));

  for (int i = 0; i < 10; ++i)
    producer.send_confirmed("sac", nth(i));
  // All ten go to the first consumer, which acks m0..m4 and holds m5..m9.
  for (int i = 0; i < 10; ++i)
    EXPECT_EQ(first->lines->next(), nth(i) + " new 1");
  ASSERT_EQ(first->lines->next(), "done");
  // Five more wait in the queue: the first holds its prefetch, the second stands by.
  for (int i = 10; i < 15; ++i)
    producer.send_confirmed("sac", nth(i));
  const json q = queue_json("sac");
  EXPECT_EQ(q["depth"], 5);
  EXPECT_EQ(q["in_flight"], 5);
  EXPECT_FALSE(second->lines->pending()) << "the standby consumer got something";
  EXPECT_EQ(code_of([&] { producer.receive("sac", milliseconds(0)); }),
            Errc::single_active_consumer);
  EXPECT_EQ(code_of([&] { producer.receive("sac", milliseconds(0), kAck); }),
            Errc::single_active_consumer);

  ASSERT_EQ(::kill(first->pid, SIGKILL), 0);
  EXPECT_EQ(first->wait(), 100 + SIGKILL);
  for (int i = 15; i < 20; ++i)
    producer.send_confirmed("sac", nth(i));
  // The second takes over: the held five first, in order, then the queue in its order.
  for (int i = 5; i < 10; ++i)
    EXPECT_EQ(second->lines->next(), nth(i) + " redelivered 2");
  for (int i = 10; i < 20; ++i)
    EXPECT_EQ(second->lines->next(), nth(i) + " new 1");
  EXPECT_EQ(second->lines->next(), "done");
  EXPECT_EQ(second->wait(), 0);
  EXPECT_TRUE(queue_reaches("sac", "in_flight", 0));
  EXPECT_EQ(queue_json("sac")["depth"], 0);
}

TEST_F(TimeClientTest, SingleActiveConsumerHandsOverWhenTheActiveOneUnsubscribes) {
  auto producer = connect("producer");
  QueueOptions o;
  o.single_active_consumer = true;
  producer.declare("sac.cancel", o);
  auto first = connect("first");
  auto second = connect("second");
  auto active = first.subscribe("sac.cancel", SubscribeOptions{1, true});
  ASSERT_TRUE(eventually([&] { return subscribers("sac.cancel") == 1; }));
  auto standby = second.subscribe("sac.cancel", SubscribeOptions{1, true});
  ASSERT_TRUE(eventually([&] { return subscribers("sac.cancel") == 2; }));
  for (const char* m : {"a", "b", "c"})
    producer.send_confirmed("sac.cancel", m);
  auto a = active.next(kLong);
  ASSERT_TRUE(a);
  EXPECT_EQ(a->text(), "a");
  EXPECT_FALSE(standby.next(kShort)) << "a standby subscription gets nothing";
  EXPECT_EQ(code_of([&] { second.receive("sac.cancel", milliseconds(0)); }),
            Errc::single_active_consumer);

  active.cancel();
  // The next subscription is active now and gets what is queued; the message the old one
  // holds stays its own until it settles it (17.5, 17.10).
  for (const char* want : {"b", "c"}) {
    auto m = standby.next(kLong);
    ASSERT_TRUE(m) << want;
    EXPECT_EQ(m->text(), want);
    EXPECT_FALSE(m->redelivered());
    second.ack(*m, true);
  }
  first.ack(*a, true);
  EXPECT_FALSE(standby.next(kShort)) << "nothing more: 'a' was settled by its holder";
  EXPECT_TRUE(queue_reaches("sac.cancel", "in_flight", 0));
}

// --- Bad input ------------------------------------------------------------------------

TEST_F(TimeClientTest, OptionsOutOfRangeAreRefusedBeforeAnythingIsSent) {
  auto c = connect();
  EXPECT_EQ(code_of([&] { c.send("bad", "x", SendOptions{.priority = 10}); }),
            Errc::invalid_argument);
  EXPECT_EQ(code_of([&] { c.send("bad", "x", SendOptions{.ttl = milliseconds(-1)}); }),
            Errc::invalid_argument);
  EXPECT_EQ(code_of([&] { c.send("bad", "x", SendOptions{.delay = milliseconds(1LL << 32)}); }),
            Errc::invalid_argument);
  QueueOptions o;
  o.priorities = 11;
  EXPECT_EQ(code_of([&] { c.declare("bad", o); }), Errc::invalid_argument);
  // Nothing went out, and the Client goes on.
  c.sync();
  EXPECT_EQ(c.send_failures().count, 0u);
  EXPECT_FALSE(c.receive("bad", kShort));
  c.send("bad", "fine", SendOptions{.confirm = true, .priority = 9});
  auto m = c.receive("bad", kLong);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->text(), "fine");
}

TEST_F(TimeClientTest, RawPropertiesOutOfPlaceAreMalformedAndTheConnectionGoesOn) {
  RawPeer peer(daemon_.socket_path());
  peer.hello(2);
  const auto expect_error = [&](std::uint64_t correlation, Errc code) {
    auto f = peer.next(kLong);
    ASSERT_TRUE(f);
    EXPECT_EQ(f->correlation, correlation);
    EXPECT_EQ(f->error_code(), code);
  };
  const auto expect_pong = [&](std::uint64_t correlation) {
    auto f = peer.next(kLong);
    ASSERT_TRUE(f);
    EXPECT_EQ(f->type, proto::FrameType::pong) << "the connection goes on";
    EXPECT_EQ(f->correlation, correlation);
  };
  proto::ByteBuffer b;
  proto::append_frame(b, 5, 0, proto::Properties{0, 0, 10, {}});  // priority over 9
  proto::append_empty(b, proto::FrameType::ping, 6);
  peer.write(b);
  expect_error(5, Errc::malformed_frame);
  expect_pong(6);
  // A ttl, a delay or a priority before a direct message: that frame is refused.
  const proto::Properties timed[] = {{100, 0, 0, {}}, {0, 100, 0, {}}, {0, 0, 1, {}}};
  std::uint64_t corr = 10;
  for (const auto& props : timed) {
    proto::ByteBuffer d;
    proto::append_frame(d, corr, 0, props);
    proto::append_send_direct(
        d, corr + 1, proto::kFlagConfirm,
        proto::SendDirect{proto::TargetKind::pid, 0, static_cast<std::uint64_t>(::getpid()), 0,
                          bytes_of("direct")});
    proto::append_empty(d, proto::FrameType::ping, corr + 2);
    peer.write(d);
    expect_error(corr + 1, Errc::malformed_frame);
    expect_pong(corr + 2);
    corr += 10;
  }
  // Nothing reached this process's inbox.
  Client c(options("inbox"));
  EXPECT_FALSE(c.receive_direct(kShort));
}

}  // namespace
}  // namespace qbus::testing
