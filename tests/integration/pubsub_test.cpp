// Publish/subscribe (proto/PROTOCOL.md section 18) through the real qbusd: fan-out to
// subscriber processes with overlapping wildcard patterns, several subscriptions on one
// connection, headers, the refusal of bad subjects (by libqbus and by the broker itself),
// unsubscribing, queue groups, retained messages, the cleanup of a subscriber killed with
// messages buffered, the per-connection subscription limit, and qbusctl pub / sub /
// topics / subscriptions. Slow subscribers, memory bounds and region fan-out are in
// pubsub_slow_test.cpp.
//
// Tests synchronise on readiness (a subscribe_subject() has returned once the broker
// answered OK, so what is published afterwards reaches it), on messages, and on the admin
// socket's JSON; never on sleeps. Every expectation is computed with proto::subject_matches
// and compared in full: content, order, and nothing extra.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <qbus/client.hpp>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <fstream>
#include <functional>
#include <future>
#include <latch>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "admin_json.hpp"
#include "daemon.hpp"
#include "eventually.hpp"
#include "process.hpp"
#include "qbus/proto/subject.hpp"
#include "raw_peer.hpp"

namespace qbus::testing {
namespace {

using json = nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr auto kLong = seconds(60);  // for what must arrive
const PublishOptions kConfirm{.confirm = true};

json subscriptions(const Daemon& d) {
  const json a = admin_answer(d, "subscriptions");
  if (!a.value("ok", false)) throw std::runtime_error("subscriptions: " + a.dump());
  return a["subscriptions"];
}

json topics(const Daemon& d) {
  const json a = admin_answer(d, "topics");
  if (!a.value("ok", false)) throw std::runtime_error("topics: " + a.dump());
  return a["topics"];
}

template <typename F>
Errc code_of(F&& call, std::string* text = nullptr) {
  try {
    call();
  } catch (const Error& e) {
    if (text) *text = e.what();
    return e.code();
  }
  return Errc::ok;
}

// "subject payload", the form every expectation below is written in.
std::string line_of(const Message& m) {
  return m.key() + " " + std::string(m.text());
}

// `count` messages of `sub`, each waited for; fewer when one did not come.
std::vector<std::string> take(Subscription& sub, std::size_t count) {
  std::vector<std::string> got;
  while (got.size() < count) {
    auto m = sub.next(kLong);
    if (!m) break;
    got.push_back(line_of(*m));
  }
  return got;
}

// Cancels `sub` (the broker answers after every delivery it made before) and returns
// whatever had arrived and was not taken yet: nothing, when the expectation was complete.
std::vector<std::string> rest_after_cancel(Subscription& sub) {
  sub.cancel();
  std::vector<std::string> got;
  while (auto m = sub.next(milliseconds(0)))
    got.push_back(line_of(*m));
  return got;
}

// Reports the first difference, rather than two vectors of thousands of lines.
void expect_same_sequence(const std::vector<std::string>& got, const std::vector<std::string>& want,
                          const std::string& who) {
  const std::size_t n = std::min(got.size(), want.size());
  for (std::size_t i = 0; i < n; ++i) {
    if (got[i] != want[i]) {
      ADD_FAILURE() << who << ": message " << i << " is '" << got[i] << "', expected '" << want[i]
                    << "'";
      return;
    }
  }
  EXPECT_EQ(got.size(), want.size())
      << who << ": " << got.size() << " messages, expected " << want.size();
}

// Readiness of several child processes: each signal() is one byte on a pipe.
class ReadyPipe {
 public:
  ReadyPipe() {
    if (::pipe2(fds_, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
  }
  ~ReadyPipe() {
    ::close(fds_[0]);
    ::close(fds_[1]);
  }
  ReadyPipe(const ReadyPipe&) = delete;
  ReadyPipe& operator=(const ReadyPipe&) = delete;
  void signal() { (void)!::write(fds_[1], "r", 1); }
  // True once `n` signals came within `limit`.
  bool wait(int n, seconds limit = seconds(60)) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (n > 0) {
      const auto left =
          std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      pollfd p{fds_[0], POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      char c;
      if (::read(fds_[0], &c, 1) == 1) --n;
    }
    return true;
  }

 private:
  int fds_[2];
};

class PubSubTest : public ::testing::Test {
 protected:
  explicit PubSubTest(DaemonOptions o = {}) : daemon_(std::move(o)) {}
  Client connect(const std::string& name = "pubsub-test") {
    return Client(ClientOptions{daemon_.address(), name, seconds(30)});
  }
  Result ctl(std::vector<std::string> args) {
    args.insert(args.begin(), {qbusctl_path(), "--address", daemon_.address()});
    return run(args);
  }

  // A queue-group member (or, `plain`, a subscriber of its own) of jobs.*: records the
  // payloads until the group (the plain one: this subscriber) has had `n`, then cancels
  // and records what had still arrived, so that a duplicate would show.
  void read_jobs(int r, bool plain, int n, std::atomic<int>& group_total, std::vector<int>& got,
                 const std::function<void()>& subscribed) {
    auto c = connect(plain ? "plain" : "member-" + std::to_string(r));
    auto sub = c.subscribe_subject("jobs.*", SubjectOptions{.group = plain ? "" : "g"});
    subscribed();
    const auto deadline = std::chrono::steady_clock::now() + seconds(120);
    while ((plain ? static_cast<int>(got.size()) : group_total.load()) < n &&
           std::chrono::steady_clock::now() < deadline) {
      auto m = sub.next(milliseconds(100));
      if (!m) continue;
      got.push_back(std::stoi(std::string(m->text())));
      if (!plain) ++group_total;
    }
    sub.cancel();
    while (auto m = sub.next(milliseconds(0)))
      got.push_back(std::stoi(std::string(m->text())));
  }

  Daemon daemon_;
};

// ---- fan-out to subscriber processes ----

const std::vector<std::string> kPatterns = {">",     "a.>", "a.*",   "a.b",
                                            "a.*.c", "*.b", "a.b.>", "x.y"};
const std::vector<std::string> kSubjects = {"a",   "a.b",   "a.c", "a.b.c", "a.x.c",   "a.b.d.e",
                                            "x.b", "x.y",   "b",   "x.y.z", "q.r.c",   "a.b.c.d",
                                            "b.b", "a.x.y", "x",   "a.b.x", "c.b.a.b", "a.z.c"};
constexpr int kRounds = 150;  // 2,700 data messages

struct Planned {
  std::string subject;
  std::string payload;
};

// A subject that subscriber `i`'s pattern matches: each wildcard made the token "f<i>".
std::string fence_subject(const std::string& pattern, std::size_t i) {
  std::string out;
  std::string_view rest = pattern;
  while (!rest.empty()) {
    const std::string_view token = proto::next_token(rest);
    if (!out.empty()) out += '.';
    out += token == "*" || token == ">" ? "f" + std::to_string(i) : std::string(token);
  }
  return out;
}

// Every subject in every round with a sequence number, then one fence per subscriber:
// a subscriber stops at its own fence, and since one publisher's messages arrive in
// order, what it got before the fence must be exactly the matching messages before it.
std::vector<Planned> publish_plan() {
  std::vector<Planned> plan;
  int seq = 0;
  for (int r = 0; r < kRounds; ++r) {
    for (const auto& s : kSubjects)
      plan.push_back({s, std::to_string(seq++)});
  }
  for (std::size_t i = 0; i < kPatterns.size(); ++i)
    plan.push_back({fence_subject(kPatterns[i], i), "fence" + std::to_string(i)});
  return plan;
}

std::vector<std::string> expected_for(const std::vector<Planned>& plan, std::size_t i) {
  std::vector<std::string> want;
  const std::string fence = "fence" + std::to_string(i);
  for (const auto& p : plan) {
    if (!proto::subject_matches(kPatterns[i], p.subject)) continue;
    want.push_back(p.subject + " " + p.payload);
    if (p.payload == fence) break;
  }
  return want;
}

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);)
    lines.push_back(l);
  return lines;
}

int record_subscription(const Daemon& d, std::size_t i, ReadyPipe& ready, const std::string& path) {
  Client c(ClientOptions{d.address(), "subscriber-" + std::to_string(i), seconds(30)});
  auto sub = c.subscribe_subject(kPatterns[i]);
  ready.signal();
  std::ofstream out(path);
  const std::string fence = "fence" + std::to_string(i);
  while (true) {
    auto m = sub.next(kLong);
    if (!m) return 2;  // starved for a minute: something is lost
    out << line_of(*m) << '\n';
    if (m->text() == fence) break;
  }
  out.flush();
  return out ? 0 : 3;
}

TEST_F(PubSubTest, EightSubscriberProcessesGetExactlyWhatTheirPatternsMatchInOrder) {
  const auto plan = publish_plan();
  ReadyPipe ready;
  std::vector<pid_t> subscribers;
  for (std::size_t i = 0; i < kPatterns.size(); ++i) {
    const auto path = daemon_.dir().file("subscriber" + std::to_string(i));
    subscribers.push_back(
        spawn([&, i, path] { return record_subscription(daemon_, i, ready, path); }));
  }
  ASSERT_TRUE(ready.wait(static_cast<int>(kPatterns.size()))) << "subscribers not ready";
  const pid_t publisher = spawn([&] {
    auto c = connect("publisher");
    {
      Client::Batch batch(c);
      for (const auto& p : plan)
        c.publish(p.subject, p.payload);
    }
    c.sync();
    return c.send_failures().count == 0 ? 0 : 1;
  });
  EXPECT_EQ(wait_exit(publisher), 0);
  for (std::size_t i = 0; i < kPatterns.size(); ++i) {
    EXPECT_EQ(wait_exit(subscribers[i]), 0) << "subscriber of " << kPatterns[i];
    const auto got = read_lines(daemon_.dir().file("subscriber" + std::to_string(i)));
    expect_same_sequence(got, expected_for(plan, i), "pattern " + kPatterns[i]);
  }
  EXPECT_EQ(topics(daemon_)["published_total"], plan.size());
}

// ---- one connection, several subscriptions ----

TEST_F(PubSubTest, EachMatchingSubscriptionOfOneConnectionGetsItsOwnCopy) {
  auto c = connect();
  auto pub = connect("publisher");
  const std::vector<std::string> patterns = {"multi.*",   "multi.>",   ">",
                                             "multi.one", "multi.one", "*.two"};
  std::vector<Subscription> subs;
  for (const auto& p : patterns)
    subs.push_back(c.subscribe_subject(p));
  const std::vector<Planned> plan = {{"multi.one", "1"}, {"multi.one.two", "2"},
                                     {"other", "3"},     {"multi.two", "4"},
                                     {"multi.one", "5"}, {"nothing.matches.this", "6"}};
  for (const auto& p : plan)
    pub.publish(p.subject, p.payload, kConfirm);
  for (std::size_t i = 0; i < patterns.size(); ++i) {
    std::vector<std::string> want;
    for (const auto& p : plan) {
      if (proto::subject_matches(patterns[i], p.subject))
        want.push_back(p.subject + " " + p.payload);
    }
    const std::string who = "subscription " + std::to_string(i) + " (" + patterns[i] + ")";
    expect_same_sequence(take(subs[i], want.size()), want, who);
    EXPECT_EQ(subs[i].key(), patterns[i]);
  }
  for (std::size_t i = 0; i < patterns.size(); ++i)
    EXPECT_EQ(rest_after_cancel(subs[i]), std::vector<std::string>{}) << patterns[i];
}

// next_each() hands the deliveries in place and in order, at most `max` a call, and mixes
// with next() on the same subscription. 4,000 stay within the default buffer (4,096).
TEST_F(PubSubTest, NextEachHandsEveryDeliveryInOrderAtMostMaxACall) {
  auto c = connect();
  auto pub = connect("publisher");
  auto sub = c.subscribe_subject("each.>");
  constexpr int kMessages = 4000;
  {
    Client::Batch batch(pub);
    for (int i = 0; i < kMessages; ++i)
      pub.publish("each." + std::to_string(i % 7), std::to_string(i));
  }
  pub.sync();
  int want = 0;
  for (int call = 0; want < kMessages; ++call) {
    const auto check = [&](const auto& m) {  // a Message or a MessageView
      EXPECT_EQ(m.key(), "each." + std::to_string(want % 7));
      EXPECT_EQ(m.text(), std::to_string(want));
      EXPECT_EQ(m.dropped_before(), 0u);
      ++want;
    };
    if (call % 10 == 9) {
      auto m = sub.next(seconds(30));
      ASSERT_TRUE(m);
      check(*m);
      continue;
    }
    const std::size_t n = sub.next_each(64, seconds(30), check);
    ASSERT_GE(n, 1u) << "after " << want;
    ASSERT_LE(n, 64u);
  }
  EXPECT_EQ(sub.next_each(64, std::chrono::milliseconds(0), [](const MessageView&) {}), 0u);
}

// ---- headers, errors, unsubscribing ----

TEST_F(PubSubTest, HeadersArriveAsPublished) {
  auto c = connect();
  auto pub = connect("publisher");
  auto sub = c.subscribe_subject("hdr.>");
  const Headers headers = {{"content-type", "text/plain"}, {"trace-id", "abc-123"}, {"k", ""}};
  pub.publish("hdr.with", "carried", PublishOptions{.headers = headers, .confirm = true});
  pub.publish("hdr.without", "bare", kConfirm);
  auto m = sub.next(kLong);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->key(), "hdr.with");
  EXPECT_EQ(m->text(), "carried");
  EXPECT_EQ(m->headers(), headers);
  EXPECT_FALSE(m->retained());
  EXPECT_EQ(m->dropped_before(), 0u);
  EXPECT_EQ(m->sender().pid, pub.session().pid);
  EXPECT_EQ(m->sender().client_id, pub.session().client_id);
  m = sub.next(kLong);
  ASSERT_TRUE(m);
  EXPECT_EQ(line_of(*m), "hdr.without bare");
  EXPECT_TRUE(m->headers().empty());
}

TEST_F(PubSubTest, LibraryRefusesBadSubjectsPatternsAndGroupsNamingTheRule) {
  auto c = connect();
  const std::vector<std::string> bad_subjects = {
      "", "a..b", ".a", "a.", "a.*", "a.>", "*", "a b", "a*", "x.é", std::string(256, 'x')};
  for (const auto& s : bad_subjects) {
    std::string text;
    EXPECT_EQ(code_of([&] { c.publish(s, "x", kConfirm); }, &text), Errc::invalid_subject) << s;
    const std::string rule(proto::subject_rule_broken(s, false));
    ASSERT_FALSE(rule.empty()) << s;
    EXPECT_NE(text.find(rule), std::string::npos) << "'" << text << "' names no rule for " << s;
  }
  std::string many;
  for (int i = 0; i < 33; ++i)
    many += (i ? ".t" : "t") + std::to_string(i);
  EXPECT_EQ(code_of([&] { c.publish(many, "x"); }), Errc::invalid_subject);

  const std::vector<std::string> bad_patterns = {"",    "a*",    "a.>.b", "a..b",
                                                 ">.a", "a.b c", "a.",    "*>"};
  for (const auto& p : bad_patterns) {
    std::string text;
    EXPECT_EQ(code_of([&] { c.subscribe_subject(p); }, &text), Errc::invalid_subject) << p;
    const std::string rule(proto::subject_rule_broken(p, true));
    EXPECT_NE(text.find(rule), std::string::npos) << "'" << text << "' names no rule for " << p;
  }
  EXPECT_EQ(code_of([&] { c.subscribe_subject("ok.*", SubjectOptions{.group = "bad group"}); }),
            Errc::invalid_key);
  EXPECT_EQ(code_of([&] { c.subscribe_subject("ok.*", SubjectOptions{.group = "g*"}); }),
            Errc::invalid_key);
  // The Client is still fine, and nothing of the above reached the broker.
  auto sub = c.subscribe_subject("ok.*", SubjectOptions{.group = "good-group"});
  c.publish("ok.now", "fine", kConfirm);
  auto m = sub.next(kLong);
  ASSERT_TRUE(m);
  EXPECT_EQ(line_of(*m), "ok.now fine");
  EXPECT_EQ(topics(daemon_)["published_total"], 1);
  EXPECT_EQ(subscriptions(daemon_).size(), 1u);
}

// A PUBLISH body: subject_len, subject, payload.
std::string publish_body(const std::string& subject, const std::string& payload) {
  return std::string(1, static_cast<char>(subject.size())) + subject + payload;
}

// A SUBSCRIBE_SUBJECT body with default bounds and policy, laid out as the codec does
// (proto/include/qbus/proto/field.hpp): both lengths, then the pattern and group bytes.
std::string subscribe_body(const std::string& pattern, const std::string& group) {
  std::string b(16, '\0');
  b += static_cast<char>(pattern.size());
  b += static_cast<char>(group.size());
  return b + pattern + group;
}

TEST_F(PubSubTest, BrokerRefusesBadSubjectsPatternsAndGroupsNamingTheRule) {
  RawPeer peer(daemon_.socket_path());
  peer.hello(2);
  const auto expect_error = [&](std::uint64_t corr, Errc code, const std::string& what,
                                const std::string& rule) {
    auto f = peer.next(kLong);
    ASSERT_TRUE(f) << what;
    EXPECT_EQ(f->correlation, corr) << what;
    ASSERT_EQ(f->error_code(), code) << what;
    proto::ErrorBody e;
    ASSERT_EQ(proto::decode_error(f->body, e), Errc::ok);
    const std::string text(e.text);
    EXPECT_NE(text.find(what), std::string::npos) << "'" << text << "' does not name " << what;
    EXPECT_NE(text.find(rule), std::string::npos) << "'" << text << "' does not name " << rule;
  };
  using proto::FrameType;
  peer.write(frame(FrameType::publish, 1, publish_body("a..b", "x"), proto::kFlagConfirm));
  expect_error(1, Errc::invalid_subject, "a..b", "empty token");
  peer.write(frame(FrameType::publish, 2, publish_body("a.*", "x"), proto::kFlagConfirm));
  expect_error(2, Errc::invalid_subject, "a.*", "wildcard");
  peer.write(frame(FrameType::subscribe_subject, 3, subscribe_body("a*", ""), proto::kFlagConfirm));
  expect_error(3, Errc::invalid_subject, "a*", "whole token");
  peer.write(
      frame(FrameType::subscribe_subject, 4, subscribe_body("a.>.b", ""), proto::kFlagConfirm));
  expect_error(4, Errc::invalid_subject, "a.>.b", "before the last token");
  peer.write(frame(FrameType::subscribe_subject, 5, subscribe_body("a.*", "bad group"),
                   proto::kFlagConfirm));
  auto f = peer.next(kLong);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->correlation, 5u);
  EXPECT_EQ(f->error_code(), Errc::invalid_key);
  // The connection goes on: a good subscription and a good publish to it.
  peer.write(
      frame(FrameType::subscribe_subject, 6, subscribe_body("a.*", ""), proto::kFlagConfirm));
  f = peer.next(kLong);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->type, FrameType::ok);
  EXPECT_EQ(f->correlation, 6u);
  peer.write(frame(FrameType::publish, 7, publish_body("a.b", "hello"), proto::kFlagConfirm));
  bool delivered = false, confirmed = false;
  while (!(delivered && confirmed)) {
    f = peer.next(kLong);
    ASSERT_TRUE(f);
    if (f->type == FrameType::ok && f->correlation == 7) {
      confirmed = true;
    } else {
      ASSERT_EQ(f->type, FrameType::deliver);
      EXPECT_EQ(f->correlation, 6u);
      EXPECT_TRUE(f->flags & proto::kFlagLast);
      proto::Deliver d;
      ASSERT_EQ(proto::decode_body(f->body, d), Errc::ok);
      EXPECT_EQ(d.key, "a.b");
      EXPECT_EQ(std::string_view(reinterpret_cast<const char*>(d.payload.data()), d.payload.size()),
                "hello");
      delivered = true;
    }
  }
}

TEST_F(PubSubTest, APublishNoSubscriptionMatchesIsFineAndCounted) {
  auto pub = connect();
  pub.publish("nobody.listens", "into the void", kConfirm);
  pub.publish("nobody.listens", "again");
  pub.sync();
  EXPECT_EQ(pub.send_failures().count, 0u);
  const json t = topics(daemon_);
  EXPECT_EQ(t["published_total"], 2);
  EXPECT_EQ(t["unmatched_total"], 2);
  EXPECT_EQ(t["delivered_total"], 0);
  EXPECT_EQ(t["subscriptions"], 0);
}

TEST_F(PubSubTest, CancelStopsDeliveries) {
  auto c = connect();
  auto pub = connect("publisher");
  auto cancelled = c.subscribe_subject("unsub.*");
  auto witness = c.subscribe_subject("unsub.*");
  pub.publish("unsub.a", "before", kConfirm);
  auto m = cancelled.next(kLong);
  ASSERT_TRUE(m);
  EXPECT_EQ(line_of(*m), "unsub.a before");
  cancelled.cancel();
  EXPECT_FALSE(cancelled.active());
  EXPECT_EQ(subscriptions(daemon_).size(), 1u);
  pub.publish("unsub.b", "after", kConfirm);
  // The witness, on the same connection, has both: had the cancelled one still been
  // subscribed, its copy of "after" would have come with the witness's.
  EXPECT_EQ(take(witness, 2), (std::vector<std::string>{"unsub.a before", "unsub.b after"}));
  EXPECT_FALSE(cancelled.next(milliseconds(0)));
  EXPECT_TRUE(witness.active());
}

// ---- queue groups ----

TEST_F(PubSubTest, AQueueGroupSharesTheMessagesAndAPlainSubscriberGetsThemAll) {
  constexpr int kN = 3000;
  constexpr int kMembers = 3;
  std::vector<std::vector<int>> got(kMembers + 1);  // the last: the plain subscriber
  std::vector<std::string> errors(kMembers + 1);
  std::atomic<int> group_total{0};
  std::latch ready(kMembers + 1);
  std::vector<std::thread> readers;
  for (int r = 0; r <= kMembers; ++r) {
    readers.emplace_back([&, r] {
      bool counted = false;
      try {
        read_jobs(r, r == kMembers, kN, group_total, got[r], [&] {
          counted = true;
          ready.count_down();
        });
      } catch (const std::exception& e) {
        errors[r] = e.what();
        if (!counted) ready.count_down();
      }
    });
  }
  ready.wait();
  auto pub = connect("publisher");
  {
    Client::Batch batch(pub);
    for (int i = 0; i < kN; ++i)
      pub.publish("jobs." + std::string(1, static_cast<char>('a' + i % 5)), std::to_string(i));
  }
  pub.sync();
  EXPECT_EQ(pub.send_failures().count, 0u);
  for (auto& t : readers)
    t.join();
  for (int r = 0; r <= kMembers; ++r)
    EXPECT_EQ(errors[r], "") << "reader " << r;

  std::vector<int> all(kN);
  for (int i = 0; i < kN; ++i)
    all[i] = i;
  EXPECT_EQ(got[kMembers], all) << "the plain subscriber";
  std::set<int> union_of_members;
  std::size_t total = 0;
  for (int r = 0; r < kMembers; ++r) {
    EXPECT_FALSE(got[r].empty()) << "member " << r << " got nothing";
    EXPECT_TRUE(std::is_sorted(got[r].begin(), got[r].end())) << "member " << r;
    union_of_members.insert(got[r].begin(), got[r].end());
    total += got[r].size();
  }
  EXPECT_EQ(total, static_cast<std::size_t>(kN)) << "duplicates or losses in the group";
  EXPECT_EQ(union_of_members, std::set<int>(all.begin(), all.end()));
}

// ---- retained messages ----

TEST_F(PubSubTest, RetainedMessagesComeFirstAreReplacedAndCleared) {
  auto pub = connect("publisher");
  const PublishOptions retain{.retain = true, .confirm = true};
  pub.publish("state.a", "A1", retain);
  pub.publish("state.b", "B1", retain);
  pub.publish("state.c", "not kept", kConfirm);
  pub.publish("other.a", "O1", retain);  // retained too, but not under state.*
  auto c = connect();
  auto sub = c.subscribe_subject("state.*");
  pub.publish("state.live", "L1", kConfirm);
  std::set<std::string> retained;
  for (int i = 0; i < 2; ++i) {
    auto m = sub.next(kLong);
    ASSERT_TRUE(m);
    EXPECT_TRUE(m->retained()) << line_of(*m);
    retained.insert(line_of(*m));
  }
  EXPECT_EQ(retained, (std::set<std::string>{"state.a A1", "state.b B1"}));
  auto m = sub.next(kLong);
  ASSERT_TRUE(m);
  EXPECT_EQ(line_of(*m), "state.live L1");
  EXPECT_FALSE(m->retained());

  pub.publish("state.a", "A2", retain);  // replaces A1, and is delivered as usual
  pub.publish("state.b", "", retain);    // clears B1, and is not delivered
  pub.publish("state.live", "L2", kConfirm);
  EXPECT_EQ(take(sub, 2), (std::vector<std::string>{"state.a A2", "state.live L2"}));

  auto c2 = connect();
  auto late = c2.subscribe_subject("state.*");
  pub.publish("state.live", "L3", kConfirm);
  m = late.next(kLong);
  ASSERT_TRUE(m);
  EXPECT_EQ(line_of(*m), "state.a A2");
  EXPECT_TRUE(m->retained());
  m = late.next(kLong);
  ASSERT_TRUE(m);
  EXPECT_EQ(line_of(*m), "state.live L3");
  EXPECT_FALSE(m->retained());
  EXPECT_EQ(rest_after_cancel(late), std::vector<std::string>{});

  const json t = topics(daemon_);
  EXPECT_EQ(t["retained_messages"], 2);
  EXPECT_EQ(t["retained_bytes"], 4);  // "A2" and "O1"
  std::set<std::string> subjects;
  for (const auto& r : t["retained"])
    subjects.insert(r["subject"].get<std::string>());
  EXPECT_EQ(subjects, (std::set<std::string>{"state.a", "other.a"}));
}

TEST_F(PubSubTest, ARegionCannotBeRetained) {
  auto c = connect();
  auto r = c.allocate_region(4096);
  std::memcpy(r.data().data(), "region", 6);
  EXPECT_EQ(code_of([&] { c.publish("state.r", std::move(r), PublishOptions{.retain = true}); }),
            Errc::invalid_argument);
  EXPECT_EQ(topics(daemon_)["published_total"], 0);
}

// ---- a subscriber killed with messages buffered ----

class PubSubCleanupTest : public PubSubTest {
 protected:
  // A small uid quota, so that one subscriber's buffer can spend it, and a small output
  // bound, so that a subscriber that does not read has its messages buffered soon.
  PubSubCleanupTest()
      : PubSubTest(DaemonOptions{
            .config_json =
                R"({"limits": {"uid_max_queued_bytes": 2097152, "max_outbound_bytes": 65536}})"}) {}
};

TEST_F(PubSubCleanupTest, AKilledSubscriberIsForgottenAndItsQuotaReturns) {
  ReadyPipe ready;
  Gate never;
  const pid_t child = spawn([&] {
    auto c = connect("doomed");
    auto sub = c.subscribe_subject("cleanup.>");
    ready.signal();
    never.wait();  // never reads; SIGKILL ends it
    return 0;
  });
  ASSERT_TRUE(ready.wait(1));
  // The publisher and the queue sender keep their payloads inline: regions would be
  // charged to the region quota instead.
  auto inline_client = [&](const std::string& name) {
    ClientOptions o{daemon_.address(), name, seconds(30)};
    o.region_threshold = SIZE_MAX;
    return Client(o);
  };
  auto pub = inline_client("publisher");
  const std::string payload(64 * 1024, 'p');
  {
    Client::Batch batch(pub);
    for (int i = 0; i < 96; ++i)  // 6 MiB: past the output bound, the socket and the quota
      pub.publish("cleanup.x", payload);
  }
  pub.sync();
  EXPECT_EQ(pub.send_failures().count, 0u);
  json subs = subscriptions(daemon_);
  ASSERT_EQ(subs.size(), 1u);
  EXPECT_EQ(subs[0]["pid"], child);
  EXPECT_EQ(subs[0]["pattern"], "cleanup.>");
  EXPECT_GT(subs[0]["buffered_messages"].get<std::uint64_t>(), 0u) << subs.dump();
  EXPECT_GT(subs[0]["buffered_bytes"].get<std::uint64_t>(), 1024u * 1024) << subs.dump();
  EXPECT_EQ(subs[0]["matched"], 96);
  // Its buffer holds the uid's quota: a queue send of the same uid is refused.
  auto sender = inline_client("sender");
  const std::string big(1000 * 1000, 'q');
  EXPECT_EQ(code_of([&] { sender.send_confirmed("cleanup-queue", big); }), Errc::quota_exceeded);

  ASSERT_EQ(::kill(child, SIGKILL), 0);
  EXPECT_EQ(wait_exit(child), 100 + SIGKILL);
  EXPECT_TRUE(eventually([&] { return subscriptions(daemon_).empty(); }))
      << subscriptions(daemon_).dump();
  EXPECT_EQ(topics(daemon_)["subscriptions"], 0);
  // Released at once with the subscription: the quota is back.
  EXPECT_EQ(code_of([&] { sender.send_confirmed("cleanup-queue", big); }), Errc::ok);
  auto c = connect();
  auto sub = c.subscribe_subject("cleanup.>");
  pub.publish("cleanup.after", "still works", kConfirm);
  auto m = sub.next(kLong);
  ASSERT_TRUE(m);
  EXPECT_EQ(line_of(*m), "cleanup.after still works");
}

// ---- limits ----

class PubSubLimitTest : public PubSubTest {
 protected:
  PubSubLimitTest()
      : PubSubTest(DaemonOptions{.config_json = R"({"limits": {"max_subscriptions": 4}})"}) {}
};

TEST_F(PubSubLimitTest, AConnectionHoldsAtMostMaxSubscriptions) {
  auto c = connect();
  std::vector<Subscription> subs;
  for (int i = 0; i < 4; ++i)
    subs.push_back(c.subscribe_subject("lim." + std::to_string(i)));
  EXPECT_EQ(code_of([&] { c.subscribe_subject("lim.x"); }), Errc::too_many_subscriptions);
  EXPECT_EQ(code_of([&] { c.subscribe_subject("lim.y", SubjectOptions{.group = "g"}); }),
            Errc::too_many_subscriptions);
  EXPECT_EQ(subscriptions(daemon_).size(), 4u);
  // Another connection has an allowance of its own.
  auto other = connect("other");
  auto elsewhere = other.subscribe_subject("lim.x");
  EXPECT_TRUE(elsewhere.active());
  // A cancelled subscription frees its slot, and the four still work.
  subs[0].cancel();
  subs.push_back(c.subscribe_subject("lim.x"));
  auto pub = connect("publisher");
  pub.publish("lim.x", "to both", kConfirm);
  EXPECT_EQ(take(subs.back(), 1), std::vector<std::string>{"lim.x to both"});
  EXPECT_EQ(take(elsewhere, 1), std::vector<std::string>{"lim.x to both"});
}

// ---- qbusctl ----

TEST_F(PubSubTest, QbusctlSubPrintsWhatPubPublishesAndTheAdminCommandsListIt) {
  auto sub = std::async(std::launch::async, [&] {
    return ctl({"sub", "a.*", "--count", "2", "--timeout", "60000"});
  });
  ASSERT_TRUE(eventually([&] { return subscriptions(daemon_).size() == 1; }))
      << "qbusctl sub never subscribed";
  auto r = ctl({"pub", "a.x", "hi"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "");

  const json s = subscriptions(daemon_).at(0);
  EXPECT_EQ(s["pattern"], "a.*");
  EXPECT_EQ(s["comm"], "qbusctl");
  EXPECT_EQ(s["group"], "");
  EXPECT_EQ(s["matched"], 1);
  r = ctl({"subscriptions", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json listed = json::parse(r.out);
  ASSERT_EQ(listed["subscriptions"].size(), 1u) << r.out;
  EXPECT_EQ(listed["subscriptions"][0]["pattern"], "a.*");
  EXPECT_EQ(listed["subscriptions"][0]["matched"], 1);
  r = ctl({"topics", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json t = json::parse(r.out)["topics"];
  EXPECT_EQ(t["subscriptions"], 1);
  EXPECT_EQ(t["published_total"], 1);
  ASSERT_EQ(t["patterns"].size(), 1u) << r.out;
  EXPECT_EQ(t["patterns"][0]["pattern"], "a.*");
  EXPECT_EQ(t["patterns"][0]["subscriptions"], 1);
  for (const char* table : {"subscriptions", "topics"}) {
    r = ctl({table});
    EXPECT_EQ(r.exit_code, 0) << table << ": " << r.err;
    EXPECT_NE(r.out.find("a.*"), std::string::npos) << table << ":\n" << r.out;
  }

  r = ctl({"pub", "a.x", "hi"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  ASSERT_EQ(sub.wait_for(seconds(60)), std::future_status::ready);
  const Result got = sub.get();
  EXPECT_EQ(got.exit_code, 0) << got.err;
  EXPECT_EQ(got.out, "hi\nhi\n");
}

TEST_F(PubSubTest, QbusctlPubRetainsAndRefusesBadSubjects) {
  auto r = ctl({"pub", "conf.colour", "blue", "--retain"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = ctl({"sub", "conf.*", "--count", "1", "--timeout", "60000"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "blue\n");
  r = ctl({"pub", "a..b", "x"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("a..b"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("empty token"), std::string::npos) << r.err;
  r = ctl({"sub", "a*", "--count", "1", "--timeout", "1000"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("whole token"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace qbus::testing
