// Durable queues (proto/PROTOCOL.md 17.11, docs/journal.md) through the real qbusd: what a
// restart (SIGTERM) or a crash (SIGKILL) of the daemon leaves of queues and messages, and
// what qbusd does with a state directory it cannot fully use (not creatable, held by
// another qbusd, a journal of a newer format, a torn tail, a segment cut in its header, a
// full disk). Each test keeps its state directory in a TempDir of its own and starts
// Daemons on it one after the other. The full-disk tests mount a 1 MiB tmpfs and are
// skipped where that is not allowed. The crash harness is durable_crash_test.cpp.
//
// Tests wait on readiness, messages and the admin JSON. Two waits are on the clock by
// nature: a message's ttl must pass while qbusd is down, and a delayed message must not
// come before its time (asserted as a lower bound only).
//
// The broker answers a settle (an ACK, a receive without ACK) without waiting for the
// journal: a crash right after an ack may bring the message back, which at-least-once
// allows. The tests that assert an acked message is gone after a SIGKILL therefore end
// with a confirmed send to an fsync=always queue (barrier()): the journal writes its
// records in order, so once that is confirmed every record before it is in the file.
#include <signal.h>
#include <sys/mount.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <iostream>
#include <nlohmann/json.hpp>
#include <qbus/client.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "daemon.hpp"
#include "eventually.hpp"

namespace qbus::testing {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;
using SteadyClock = std::chrono::steady_clock;

constexpr auto kLong = seconds(30);         // for what must arrive
constexpr auto kShort = milliseconds(200);  // for what must not
const ReceiveOptions kAck{true};

// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), written here from the definition
// so that the test checks the header format docs/journal.md describes, not the daemon's code.
std::uint32_t crc32c(const std::uint8_t* data, std::size_t n) {
  std::uint32_t crc = 0xFFFFFFFFu;
  for (std::size_t i = 0; i < n; ++i) {
    crc ^= data[i];
    for (int k = 0; k < 8; ++k)
      crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
  }
  return ~crc;
}

void put_u32(std::uint8_t* at, std::uint32_t v) {
  for (int i = 0; i < 4; ++i)
    at[i] = static_cast<std::uint8_t>(v >> (8 * i));
}
void put_u64(std::uint8_t* at, std::uint64_t v) {
  for (int i = 0; i < 8; ++i)
    at[i] = static_cast<std::uint8_t>(v >> (8 * i));
}

// A segment header: magic, `version`, segment `number`, CRC-32C of bytes 0..27 at 28.
std::array<std::uint8_t, 32> segment_header(std::uint32_t version, std::uint64_t number) {
  std::array<std::uint8_t, 32> h{};
  std::memcpy(h.data(), "QBUSJRNL", 8);
  put_u32(h.data() + 8, version);
  put_u64(h.data() + 16, number);
  put_u32(h.data() + 28, crc32c(h.data(), 28));
  return h;
}

// The journal's segment files in `dir`, sorted (their names sort by number).
std::vector<std::string> segments(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string n = e.path().filename().string();
    if (n.size() == 19 && n.ends_with(".qj")) out.push_back(n);
  }
  std::sort(out.begin(), out.end());
  return out;
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

std::string fsync_name(QueueOptions::Fsync f) {
  switch (f) {
    case QueueOptions::Fsync::always:
      return "always";
    case QueueOptions::Fsync::batch:
      return "batch";
    case QueueOptions::Fsync::none:
      return "none";
    default:
      return "default";
  }
}

class DurableTest : public ::testing::Test {
 protected:
  // Starts qbusd on the test's state directory (unless `o` names another).
  Daemon& start(DaemonOptions o = {}) {
    if (o.state_dir.empty()) o.state_dir = state_;
    daemon_ = std::make_unique<Daemon>(std::move(o));
    return *daemon_;
  }
  // SIGTERM: the clean stop, which writes and syncs what is pending.
  void stop() {
    ASSERT_TRUE(daemon_);
    EXPECT_EQ(daemon_->stop(), 0) << daemon_->log();
    daemon_.reset();
  }
  // SIGKILL: nothing of qbusd runs after it. Daemon::stop() then only reaps the process
  // (its SIGTERM comes too late to matter) and reports the signal as -1.
  void crash() {
    ASSERT_TRUE(daemon_);
    ASSERT_EQ(::kill(daemon_->pid(), SIGKILL), 0);
    EXPECT_EQ(daemon_->stop(), -1);
    daemon_.reset();
  }
  Client connect(const std::string& name = "durable-test") {
    return Client(ClientOptions{daemon_->address(), name, seconds(30)});
  }
  Result ctl(std::vector<std::string> args, const Daemon* d = nullptr) {
    args.insert(args.begin(), {qbusctl_path(), "--address", (d ? *d : *daemon_).address()});
    return run(args);
  }
  // The admin socket's view of queue `key`; nullopt when there is no such queue.
  std::optional<json> queue_json(const std::string& key) {
    const Result r = ctl({"queue", key, "--json"});
    if (r.exit_code != 0) {
      EXPECT_NE(r.err.find("no_such_queue"), std::string::npos) << r.err;
      return std::nullopt;
    }
    return json::parse(r.out)["queue"];
  }
  json storage_json(const Daemon* d = nullptr) {
    const Result r = ctl({"stats", "--json"}, d);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return json::parse(r.out)["stats"]["storage"];
  }
  // Every record the broker journaled before this is in the file (see the top).
  void barrier(Client& c) {
    QueueOptions o;
    o.durable = true;
    o.fsync = QueueOptions::Fsync::always;
    c.declare("barrier", o);
    c.send_confirmed("barrier", "barrier");
  }

  TempDir keep_;  // outlives every daemon_
  const std::string state_ = keep_.file("state");
  std::unique_ptr<Daemon> daemon_;
};

QueueOptions durable(QueueOptions::Fsync f = QueueOptions::Fsync::broker_default) {
  QueueOptions o;
  o.durable = true;
  o.fsync = f;
  return o;
}

// ---- 1. a restart keeps queues, options and messages ----

// 0 to 2813 bytes, so that the queue's records cross the journal's 32 KiB blocks.
std::string fifo_payload(int i) {
  return std::string(static_cast<std::size_t>(i) * 97, static_cast<char>('a' + i % 26));
}

class DurableRestartTest : public DurableTest,
                           public ::testing::WithParamInterface<QueueOptions::Fsync> {};

TEST_P(DurableRestartTest, QueuesOptionsAndMessagesInOrderSurviveARestart) {
  start();
  const pid_t me = ::getpid();
  QueueOptions prio = durable(GetParam());
  prio.priorities = 3;
  prio.max_messages = 500;
  prio.max_bytes = 1 << 20;
  prio.overflow = Overflow::reject;
  prio.ttl = std::chrono::hours(1);
  prio.ack_timeout = seconds(120);
  prio.max_deliveries = 7;
  QueueOptions fifo = durable(GetParam());
  constexpr int kN = 30;
  std::vector<std::string> prio_expected[3];
  {
    auto c = connect();
    c.declare("durable.prio", prio);
    c.declare("durable.fifo", fifo);
    for (int i = 0; i < kN; ++i) {
      const std::string n = std::to_string(i);
      SendOptions o;
      o.headers = {{"n", n}, {"content-type", "text/plain"}, {"trace", "t-" + n + "-x"}};
      o.priority = static_cast<std::uint8_t>(i % 3);
      if (i % 2 == 0) o.ttl = std::chrono::hours(2);  // a long ttl of its own
      o.confirm = i % 5 == 0;
      c.send("durable.prio", "prio payload " + n, o);
      prio_expected[i % 3].push_back(n);
      o.priority = 0;
      c.send("durable.fifo", fifo_payload(i) + n, o);
    }
    c.sync();
    EXPECT_EQ(c.send_failures().count, 0u) << c.send_failures().last_message;
  }
  stop();

  start();
  EXPECT_TRUE(daemon_->wait_for_log("recovered 2 durable queues and " + std::to_string(2 * kN) +
                                    " messages"))
      << daemon_->log();
  const auto q = queue_json("durable.prio");
  ASSERT_TRUE(q) << daemon_->log();
  EXPECT_EQ((*q)["durable"], true);
  EXPECT_EQ((*q)["fsync"], fsync_name(GetParam()));
  EXPECT_EQ((*q)["priorities"], 3);
  EXPECT_EQ((*q)["max_messages"], 500);
  EXPECT_EQ((*q)["max_bytes"], 1 << 20);
  EXPECT_EQ((*q)["overflow"], "reject");
  EXPECT_EQ((*q)["ttl_ms"], 3600000);
  EXPECT_EQ((*q)["ack_timeout_ms"], 120000);
  EXPECT_EQ((*q)["max_deliveries"], 7);
  EXPECT_EQ((*q)["declared"], true);
  EXPECT_EQ((*q)["depth"], kN);

  auto c = connect();
  // The same declaration is accepted, another one is a conflict: the options came back.
  EXPECT_EQ(code_of([&] { c.declare("durable.prio", prio); }), Errc::ok);
  QueueOptions other = prio;
  other.priorities = 4;
  EXPECT_EQ(code_of([&] { c.declare("durable.prio", other); }), Errc::queue_conflict);
  EXPECT_EQ(code_of([&] { c.declare("durable.fifo", fifo); }), Errc::ok);

  // Highest level first, first in first out within a level.
  for (int level = 2; level >= 0; --level) {
    for (const std::string& n : prio_expected[level]) {
      auto m = c.receive("durable.prio", kLong);
      ASSERT_TRUE(m) << "level " << level << " n " << n;
      EXPECT_EQ(m->text(), "prio payload " + n);
      EXPECT_EQ(m->headers(),
                (Headers{{"n", n}, {"content-type", "text/plain"}, {"trace", "t-" + n + "-x"}}));
      EXPECT_EQ(m->sender().pid, static_cast<std::uint32_t>(me));
      EXPECT_FALSE(m->redelivered());
    }
  }
  EXPECT_FALSE(c.receive("durable.prio", kShort));
  for (int i = 0; i < kN; ++i) {
    const std::string n = std::to_string(i);
    auto m = c.receive("durable.fifo", kLong, kAck);
    ASSERT_TRUE(m) << i;
    EXPECT_EQ(m->text(), fifo_payload(i) + n);
    EXPECT_EQ(*m->header("n"), n);
    EXPECT_EQ(m->delivery_count(), 1u);
    c.ack(*m);
  }
  EXPECT_FALSE(c.receive("durable.fifo", kShort));
  c.sync();
  stop();

  // Everything was taken: the queues come back empty, still declared.
  start();
  EXPECT_TRUE(daemon_->wait_for_log("recovered 2 durable queues and 0 messages")) << daemon_->log();
  ASSERT_TRUE(queue_json("durable.fifo"));
  EXPECT_EQ((*queue_json("durable.fifo"))["depth"], 0);
}

INSTANTIATE_TEST_SUITE_P(Fsync, DurableRestartTest,
                         ::testing::Values(QueueOptions::Fsync::broker_default,
                                           QueueOptions::Fsync::always, QueueOptions::Fsync::batch,
                                           QueueOptions::Fsync::none),
                         [](const auto& param_info) { return fsync_name(param_info.param); });

// ---- 2. SIGKILL: every confirmed send is there ----

TEST_F(DurableTest, EveryConfirmedSendSurvivesSigkillUnderEachFsyncPolicy) {
  start();
  const std::vector<std::pair<std::string, QueueOptions::Fsync>> queues{
      {"kill.always", QueueOptions::Fsync::always},
      {"kill.batch", QueueOptions::Fsync::batch},
      {"kill.none", QueueOptions::Fsync::none}};
  constexpr int kN = 200;
  {
    auto c = connect();
    for (const auto& [key, f] : queues)
      c.declare(key, durable(f));
    for (int i = 0; i < kN; ++i) {
      for (const auto& [key, f] : queues) {
        const std::string payload = key + "#" + std::to_string(i);
        if (i % 2 == 0) {
          c.send_confirmed(key, payload);
        } else {
          c.send(key, payload, SendOptions{{{"i", std::to_string(i)}}, true});
        }
      }
    }
    crash();  // the Client is still connected
  }
  start();
  auto c = connect();
  for (const auto& [key, f] : queues) {
    for (int i = 0; i < kN; ++i) {
      auto m = c.receive(key, kLong);
      ASSERT_TRUE(m) << key << " #" << i << "\n" << daemon_->log();
      EXPECT_EQ(m->text(), key + "#" + std::to_string(i));
      if (i % 2 == 1) {
        EXPECT_EQ(m->headers(), (Headers{{"i", std::to_string(i)}}));
      }
    }
    EXPECT_FALSE(c.receive(key, kShort)) << key;
  }
}

// ---- 3. acknowledgement state across a crash ----

TEST_F(DurableTest, UnackedComesBackRedeliveredAckedAndAtMostOnceDoNot) {
  start();
  {
    auto c = connect();
    c.declare("work", durable(QueueOptions::Fsync::always));
    for (const char* p : {"acked", "held", "at-most-once", "untouched"})
      c.send("work", p, SendOptions{{{"name", p}}, true});
    auto acked = c.receive("work", kLong, kAck);
    ASSERT_TRUE(acked);
    ASSERT_EQ(acked->text(), "acked");
    c.ack(*acked, true);
    auto held = c.receive("work", kLong, kAck);
    ASSERT_TRUE(held);
    ASSERT_EQ(held->text(), "held");
    EXPECT_EQ(held->delivery_count(), 1u);
    auto once = c.receive("work", kLong);  // no ack: delivered at most once
    ASSERT_TRUE(once);
    ASSERT_EQ(once->text(), "at-most-once");
    barrier(c);
    crash();
  }
  start();
  // work (held, untouched) and barrier (its message).
  EXPECT_TRUE(daemon_->wait_for_log("recovered 2 durable queues and 3 messages")) << daemon_->log();
  auto c = connect();
  auto held = c.receive("work", kLong, kAck);
  ASSERT_TRUE(held) << daemon_->log();
  EXPECT_EQ(held->text(), "held");
  EXPECT_TRUE(held->redelivered());
  EXPECT_EQ(held->delivery_count(), 2u);
  EXPECT_EQ(held->headers(), (Headers{{"name", "held"}}));
  auto untouched = c.receive("work", kLong, kAck);
  ASSERT_TRUE(untouched);
  EXPECT_EQ(untouched->text(), "untouched");
  EXPECT_FALSE(untouched->redelivered());
  EXPECT_EQ(untouched->delivery_count(), 1u);
  EXPECT_FALSE(c.receive("work", kShort, kAck));
  EXPECT_EQ(storage_json()["recovery"]["redelivered"], 1);
  // Held again, unsettled, through a clean restart: its count keeps growing.
  stop();
  start();
  auto again = connect().receive("work", kLong, kAck);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->text(), "held");
  EXPECT_TRUE(again->redelivered());
  EXPECT_EQ(again->delivery_count(), 3u);
}

// A consumer or a bridge that deduplicates by qbus-id (17.12) sees a message that comes back
// after a crash with the id it had before, and a new message of the new incarnation with
// another.
TEST_F(DurableTest, MessageIdsSurviveACrashAndTheNextLifeIssuesOthers) {
  start();
  std::string held_id;
  {
    auto c = connect();
    QueueOptions o = durable(QueueOptions::Fsync::always);
    o.message_ids = true;
    c.declare("work", o);
    c.send("work", "held", SendOptions{{{"name", "held"}}, true});
    auto held = c.receive("work", kLong, kAck);
    ASSERT_TRUE(held);
    ASSERT_TRUE(held->header(kHeaderMessageId));
    held_id = std::string(*held->header(kHeaderMessageId));
    barrier(c);  // the hand-over is journaled: the message comes back redelivered
    crash();
  }
  start();
  auto c = connect();
  auto again = c.receive("work", kLong, kAck);
  ASSERT_TRUE(again) << daemon_->log();
  EXPECT_TRUE(again->redelivered());
  ASSERT_TRUE(again->header(kHeaderMessageId));
  EXPECT_EQ(*again->header(kHeaderMessageId), held_id);
  EXPECT_EQ(again->header("name"), "held");
  c.send_confirmed("work", "new");
  auto fresh = c.receive("work", kLong, kAck);
  ASSERT_TRUE(fresh);
  ASSERT_TRUE(fresh->header(kHeaderMessageId));
  const std::string fresh_id(*fresh->header(kHeaderMessageId));
  EXPECT_NE(fresh_id.substr(0, 17), held_id.substr(0, 17)) << "another incarnation";
}

// ---- 4. delays and ttls keep running while qbusd is down ----

TEST_F(DurableTest, ADelayedMessageWaitsItsTimeAndAnExpiredOneIsNotDelivered) {
  constexpr auto kDelay = milliseconds(3000);
  constexpr auto kTtl = milliseconds(800);
  start();
  SteadyClock::time_point sent;
  {
    auto c = connect();
    c.declare("later", durable());
    c.declare("short.lived", durable());
    QueueOptions expiring = durable();
    expiring.dead_letter = "short.dead";
    expiring.dead_letter_expired = true;
    c.declare("short.dead", durable());
    c.declare("short.lived.dl", expiring);
    sent = SteadyClock::now();
    c.send("later", "delayed", SendOptions{{{"h", "d"}}, true, {}, kDelay});
    c.send("short.lived", "expires", SendOptions{{}, true, kTtl});
    c.send("short.lived.dl", "expires to dead letter", SendOptions{{{"h", "x"}}, true, kTtl});
    c.send("short.lived", "stays", SendOptions{{}, true, std::chrono::hours(1)});
  }
  stop();
  // The ttl runs out while qbusd is down.
  std::this_thread::sleep_until(sent + kTtl + milliseconds(200));
  start();
  auto c = connect();
  auto stays = c.receive("short.lived", kLong);
  ASSERT_TRUE(stays);
  EXPECT_EQ(stays->text(), "stays");
  EXPECT_FALSE(c.receive("short.lived", kShort));
  EXPECT_FALSE(c.receive("short.lived.dl", kShort));
  auto dead = c.receive("short.dead", kLong);
  ASSERT_TRUE(dead) << daemon_->log();
  EXPECT_EQ(dead->text(), "expires to dead letter");
  EXPECT_EQ(dead->header("h"), "x");
  EXPECT_EQ(dead->header("qbus-dead-reason"), "expired");
  EXPECT_EQ(dead->header("qbus-dead-queue"), "short.lived.dl");

  // Not before its time (restarts take far less than the delay), then it comes.
  ASSERT_LT(SteadyClock::now(), sent + kDelay - milliseconds(500)) << "the restart took too long";
  EXPECT_FALSE(c.receive("later", milliseconds(300)));
  const auto q = queue_json("later");
  ASSERT_TRUE(q);
  EXPECT_EQ((*q)["delayed"], 1);
  auto later = c.receive("later", kLong);
  ASSERT_TRUE(later);
  // The journal keeps due times as wall-clock milliseconds, which a restart maps back to
  // the steady clock: a millisecond or two of rounding either way.
  EXPECT_GE(SteadyClock::now(), sent + kDelay - milliseconds(5));
  EXPECT_EQ(later->text(), "delayed");
  EXPECT_EQ(later->header("h"), "d");
}

// ---- 5, 6. what does not come back ----

TEST_F(DurableTest, NonDurableQueuesAreNotRestored) {
  start();
  {
    auto c = connect();
    QueueOptions plain;
    plain.max_messages = 100;
    c.declare("plain", plain);
    c.send_confirmed("plain", "gone with the daemon");
    c.send_confirmed("undeclared", "also gone");
    c.declare("kept", durable());
    c.send_confirmed("kept", "kept");
  }
  stop();
  start();
  EXPECT_FALSE(queue_json("plain"));
  EXPECT_FALSE(queue_json("undeclared"));
  ASSERT_TRUE(queue_json("kept"));
  auto c = connect();
  EXPECT_FALSE(c.receive("plain", kShort));
  EXPECT_FALSE(c.receive("undeclared", kShort));
  auto kept = c.receive("kept", kLong);
  ASSERT_TRUE(kept);
  EXPECT_EQ(kept->text(), "kept");
}

TEST_F(DurableTest, ADeletedDurableQueueDoesNotComeBack) {
  start();
  {
    auto c = connect();
    for (const char* key : {"del.by.ctl", "del.by.client", "del.kept"}) {
      c.declare(key, durable());
      c.send_confirmed(key, std::string("in ") + key);
    }
    const Result r = ctl({"delete", "del.by.ctl"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(c.delete_queue("del.by.client"), 1u);
  }
  stop();
  start();
  EXPECT_TRUE(daemon_->wait_for_log("recovered 1 durable queues and 1 messages")) << daemon_->log();
  EXPECT_FALSE(queue_json("del.by.ctl"));
  EXPECT_FALSE(queue_json("del.by.client"));
  auto c = connect();
  EXPECT_FALSE(c.receive("del.by.ctl", kShort));
  EXPECT_FALSE(c.receive("del.by.client", kShort));
  auto kept = c.receive("del.kept", kLong);
  ASSERT_TRUE(kept);
  EXPECT_EQ(kept->text(), "in del.kept");

  // Deleted, then a crash: still gone (the delete was journaled before the barrier).
  c.delete_queue("del.kept");
  barrier(c);
  crash();
  start();
  EXPECT_FALSE(queue_json("del.kept"));
}

// ---- 7. state directory problems ----

TEST_F(DurableTest, AStateDirThatCannotBeCreatedTurnsDurableQueuesOffOnly) {
  const std::string afile = keep_.file("afile");
  std::ofstream(afile) << "not a directory";
  start(DaemonOptions{.state_dir = afile + "/state"});
  EXPECT_TRUE(daemon_->wait_for_log("durable queues are off: ")) << daemon_->log();
  auto c = connect();
  std::string text;
  EXPECT_EQ(code_of([&] { c.declare("d", durable()); }, &text), Errc::storage_failed);
  // The refusal says why: the directory cannot be created because a file is in the way.
  EXPECT_NE(text.find("Not a directory"), std::string::npos) << text;
  const json s = storage_json();
  EXPECT_EQ(s["available"], false);
  EXPECT_NE(s["error"].get<std::string>().find("Not a directory"), std::string::npos) << s;
  // Other queues are served as usual.
  c.declare("plain", QueueOptions{});
  c.send_confirmed("plain", "fine");
  auto m = c.receive("plain", kLong);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->text(), "fine");
}

TEST_F(DurableTest, ASecondDaemonOnTheSameStateDirRefusesDurableQueues) {
  start();
  Daemon& first = *daemon_;
  auto c1 = connect("first");
  c1.declare("shared", durable(QueueOptions::Fsync::always));
  c1.send_confirmed("shared", "one");

  DaemonOptions o;
  o.state_dir = state_;
  Daemon second(o);
  EXPECT_TRUE(second.wait_for_log("another qbusd uses this state directory")) << second.log();
  Client c2(ClientOptions{second.address(), "second", seconds(30)});
  std::string text;
  EXPECT_EQ(code_of([&] { c2.declare("shared", durable()); }, &text), Errc::storage_failed);
  EXPECT_NE(text.find("another qbusd uses this state directory"), std::string::npos) << text;
  EXPECT_EQ(storage_json(&second)["available"], false);
  c2.send_confirmed("plain", "second serves other queues");
  EXPECT_TRUE(c2.receive("plain", kLong));
  EXPECT_EQ(second.stop(), 0) << second.log();
  // The second never touched the journal: the first goes on, and its messages survive.
  c1.send_confirmed("shared", "two");
  EXPECT_EQ(storage_json(&first)["available"], true);
  stop();
  start();
  auto c = connect();
  for (const char* p : {"one", "two"}) {
    auto m = c.receive("shared", kLong);
    ASSERT_TRUE(m) << p << "\n" << daemon_->log();
    EXPECT_EQ(m->text(), p);
  }
}

// ---- 8. a journal of a newer format is refused and left alone ----

TEST_F(DurableTest, ASegmentOfAnUnknownVersionIsRefusedAndLeftUntouched) {
  fs::create_directories(state_);
  const std::string seg = state_ + "/0000000000000001.qj";
  std::string bytes;
  {
    const auto h = segment_header(2, 1);
    bytes.assign(reinterpret_cast<const char*>(h.data()), h.size());
    bytes += std::string("records of a future format \x01\x02\x03", 30);
    std::ofstream(seg, std::ios::binary) << bytes;
  }
  start();
  EXPECT_TRUE(daemon_->wait_for_log("durable queues are off: ")) << daemon_->log();
  EXPECT_NE(daemon_->log().find("0000000000000001.qj is in journal format version 2"),
            std::string::npos)
      << daemon_->log();
  auto c = connect();
  std::string text;
  EXPECT_EQ(code_of([&] { c.declare("d", durable()); }, &text), Errc::storage_failed);
  EXPECT_NE(text.find("0000000000000001.qj"), std::string::npos) << text;
  EXPECT_NE(text.find("version 2"), std::string::npos) << text;
  c.send_confirmed("plain", "works");
  EXPECT_TRUE(c.receive("plain", kLong));
  stop();
  EXPECT_EQ(read_file(seg), bytes);
  EXPECT_EQ(segments(state_), std::vector<std::string>{"0000000000000001.qj"});
}

// ---- 9. a torn tail ----

TEST_F(DurableTest, ATornTailIsCutAndEverythingBeforeItComesBack) {
  start();
  constexpr int kN = 50;
  {
    auto c = connect();
    c.declare("torn", durable(QueueOptions::Fsync::always));
    for (int i = 0; i < kN; ++i)
      c.send("torn", "m" + std::to_string(i), SendOptions{{{"i", std::to_string(i)}}, true});
  }
  stop();
  const auto segs = segments(state_);
  ASSERT_FALSE(segs.empty());
  const std::string last = state_ + "/" + segs.back();
  const auto size = fs::file_size(last);
  // A fragment cut off by the end of the file: its header says 200 bytes, 40 follow.
  std::string tail(7 + 40, '\x5a');
  tail[4] = static_cast<char>(200);
  tail[5] = 0;
  tail[6] = 1;  // FULL
  const std::uint64_t room = 32768 - size % 32768;
  if (room < 7 + 200) tail.assign("\x5a\x5a\x5a", 3);  // a cut-off fragment header
  {
    std::ofstream f(last, std::ios::binary | std::ios::app);
    f << tail;
  }
  start();
  const std::string warning = "journal: " + segs.back() + ": torn tail at offset " +
                              std::to_string(size) + ": " + std::to_string(tail.size()) +
                              " bytes dropped";
  EXPECT_TRUE(daemon_->wait_for_log(warning)) << daemon_->log();
  EXPECT_EQ(storage_json()["recovery"]["torn_bytes"], tail.size());
  EXPECT_EQ(storage_json()["recovery"]["damaged"], 0);
  {
    auto c = connect();
    for (int i = 0; i < kN; ++i) {
      auto m = c.receive("torn", kLong, kAck);  // not acked: they stay
      ASSERT_TRUE(m) << i << "\n" << daemon_->log();
      EXPECT_EQ(m->text(), "m" + std::to_string(i));
      EXPECT_EQ(m->header("i"), std::to_string(i));
    }
    EXPECT_FALSE(c.receive("torn", kShort, kAck));
  }
  stop();
  // The file was cut back: the next start finds nothing torn.
  EXPECT_EQ(fs::file_size(last), size);
  start();
  EXPECT_EQ(daemon_->log().find("torn tail"), std::string::npos) << daemon_->log();
  EXPECT_EQ(storage_json()["recovery"]["messages"], kN);
  EXPECT_EQ(storage_json()["recovery"]["redelivered"], kN);
}

// A crash while qbusd begins a segment (at a start, or at a rotation) leaves the new file
// empty, or with part of its 32-byte header: the file is created before its first write.
// That is a torn tail like any other, and the segments before it hold the journal.
class DurableCutHeaderTest : public DurableTest, public ::testing::WithParamInterface<int> {};

TEST_P(DurableCutHeaderTest, ALastSegmentCutInItsHeaderIsATornTail) {
  start();
  {
    auto c = connect();
    c.declare("cut", durable(QueueOptions::Fsync::always));
    for (int i = 0; i < 20; ++i)
      c.send_confirmed("cut", "m" + std::to_string(i));
  }
  stop();
  const auto segs = segments(state_);
  ASSERT_FALSE(segs.empty());
  const std::uint64_t next = std::stoull(segs.back().substr(0, 16), nullptr, 16) + 1;
  char name[32];
  std::snprintf(name, sizeof name, "%016llx.qj", static_cast<unsigned long long>(next));
  {
    const auto h = segment_header(1, next);
    std::ofstream(state_ + "/" + name, std::ios::binary)
        .write(reinterpret_cast<const char*>(h.data()), GetParam());
  }
  start();
  const json s = storage_json();
  EXPECT_EQ(s["available"], true) << s;
  EXPECT_EQ(s["recovery"]["messages"], 20) << daemon_->log();
  auto c = connect();
  for (int i = 0; i < 20; ++i) {
    auto m = c.receive("cut", kShort);
    ASSERT_TRUE(m) << i << "\n" << daemon_->log();
    EXPECT_EQ(m->text(), "m" + std::to_string(i));
  }
  EXPECT_EQ(code_of([&] { c.send_confirmed("cut", "journaled again"); }), Errc::ok);
}

INSTANTIATE_TEST_SUITE_P(HeaderBytes, DurableCutHeaderTest, ::testing::Values(0, 12, 31));

// ---- 10. a full disk ----
// The state directory on a 1 MiB tmpfs that the test fills with confirmed sends and then
// grows (remount, size=64m). Skipped where the test may not mount (no root, no
// CAP_SYS_ADMIN).

// A tmpfs mounted on a directory for the test's life; unmounted (lazily if it is still
// busy) when it goes.
class Tmpfs {
 public:
  explicit Tmpfs(std::string dir) : dir_(std::move(dir)) {
    fs::create_directories(dir_);
    if (::mount("tmpfs", dir_.c_str(), "tmpfs", 0, "size=1m,mode=0700") == 0) {
      mounted_ = true;
    } else {
      why_ = std::strerror(errno);
    }
  }
  ~Tmpfs() {
    if (mounted_ && ::umount(dir_.c_str()) != 0) ::umount2(dir_.c_str(), MNT_DETACH);
  }
  Tmpfs(const Tmpfs&) = delete;
  Tmpfs& operator=(const Tmpfs&) = delete;
  bool mounted() const { return mounted_; }
  const std::string& why() const { return why_; }
  bool resize(const std::string& size) {
    return ::mount("tmpfs", dir_.c_str(), "tmpfs", MS_REMOUNT, ("size=" + size).c_str()) == 0;
  }

 private:
  std::string dir_;
  bool mounted_ = false;
  std::string why_;
};

class DurableFullDiskTest : public DurableTest {
 protected:
  void SetUp() override {
    disk_ = std::make_unique<Tmpfs>(keep_.file("disk"));
    if (!disk_->mounted()) {
      GTEST_SKIP() << "cannot mount a 1 MiB tmpfs (needs root and mount rights): " << disk_->why();
    }
  }
  // Daemons and their state directory on the tmpfs.
  void start_on_disk() {
    start(DaemonOptions{.config_json = R"({"storage": {"segment_bytes": 65536}})",
                        .state_dir = keep_.file("disk") + "/state"});
  }
  static std::string message(int i) { return std::to_string(i) + std::string(4000, 'f'); }

  // Fills the disk with confirmed sends to durable queue "full" until one is refused;
  // checks what a full disk refuses and what it does not. Returns how many were confirmed.
  int fill(Client& c) {
    c.declare("full", durable(QueueOptions::Fsync::always));
    int confirmed = 0;
    std::string text;
    Errc failed = Errc::ok;
    for (; confirmed < 1000; ++confirmed) {
      failed = code_of([&] { c.send_confirmed("full", message(confirmed)); }, &text);
      if (failed != Errc::ok) break;
    }
    EXPECT_EQ(failed, Errc::storage_failed) << "1 MiB never filled up: " << confirmed << " sent";
    EXPECT_GT(confirmed, 10);
    EXPECT_NE(text.find("No space left on device"), std::string::npos) << text;
    // While full: more durable sends and declarations are refused, naming the cause ...
    EXPECT_EQ(code_of([&] { c.send_confirmed("full", "more"); }, &text), Errc::storage_failed);
    EXPECT_NE(text.find("No space left on device"), std::string::npos) << text;
    EXPECT_EQ(code_of([&] { c.declare("full.other", durable()); }, &text), Errc::storage_failed);
    EXPECT_NE(text.find("No space left on device"), std::string::npos) << text;
    EXPECT_EQ(storage_json()["available"], false);
    // ... and the other queues are served as usual.
    c.send_confirmed("plain", "not durable");
    auto plain = c.receive("plain", kLong);
    EXPECT_TRUE(plain && plain->text() == "not durable");
    return confirmed;
  }

  // Once the disk has room again, durable sends are taken within a few seconds (qbusd
  // tries the disk every 0.5 s; 15 s allowed); returns the payloads confirmed then (none if
  // they never were).
  std::vector<std::string> send_once_there_is_room(Client& c) {
    EXPECT_TRUE(disk_->resize("64m"));
    std::vector<std::string> sent;
    int attempt = 0;
    EXPECT_TRUE(eventually(
        [&] {
          const std::string p = "after " + std::to_string(attempt++);
          if (code_of([&] { c.send_confirmed("full", p); }) != Errc::ok) return false;
          sent.push_back(p);
          return true;
        },
        seconds(15)))
        << "durable sends are still refused with room on the disk\n"
        << daemon_->log().substr(0, 4000);
    for (int i = 0; i < 5 && !sent.empty(); ++i) {
      const std::string p = "after " + std::to_string(attempt++);
      if (code_of([&] { c.send_confirmed("full", p); }) == Errc::ok) sent.push_back(p);
    }
    if (!sent.empty()) {
      EXPECT_EQ(storage_json()["available"], true);
    }
    return sent;
  }

  // Restarts qbusd and checks that "full" holds the `confirmed` fill messages, then
  // `after`, in order: nothing confirmed is missing. A send refused with storage_failed
  // is not confirmed, but the journal may still write it once there is room
  // (PROTOCOL.md 17.11): refused fill messages may stand between the two, in order.
  void expect_after_restart(int confirmed, const std::vector<std::string>& after) {
    stop();
    start_on_disk();
    std::vector<std::string> got;
    auto r = connect();
    while (auto m = r.receive("full", milliseconds(500)))
      got.emplace_back(m->text());
    const auto head = [](const std::string& m) { return m.substr(0, 12); };
    std::size_t i = 0;
    for (; i < got.size() && i < static_cast<std::size_t>(confirmed); ++i) {
      ASSERT_EQ(head(got[i]), head(message(static_cast<int>(i))))
          << "confirmed message " << i << " is missing or out of order\n"
          << daemon_->log().substr(0, 4000);
    }
    ASSERT_EQ(i, static_cast<std::size_t>(confirmed))
        << "received " << got.size() << " of " << confirmed << " confirmed messages";
    // Refused ones the journal wrote later: the next fill messages, in order.
    int next = confirmed;
    while (i < got.size() && got.size() - i > after.size() && got[i] == message(next)) {
      ++i;
      ++next;
    }
    std::cout << "[          ] " << (next - confirmed)
              << " refused send(s) were written once the disk had room\n";
    const std::vector<std::string> rest(got.begin() + static_cast<std::ptrdiff_t>(i), got.end());
    EXPECT_EQ(rest, after) << "after the refused ones, the sends made once there was room";
  }

  // The daemon stops first (TearDown), then the tmpfs is unmounted (this destructor), then
  // keep_ goes (the base's).
  void TearDown() override { daemon_.reset(); }
  std::unique_ptr<Tmpfs> disk_;
};

TEST_F(DurableFullDiskTest, DurableSendsAreRefusedUntilThereIsRoomAgain) {
  start_on_disk();
  auto c = connect();
  const int confirmed = fill(c);
  const std::vector<std::string> after = send_once_there_is_room(c);
  EXPECT_FALSE(after.empty());
  expect_after_restart(confirmed, after);
}

TEST_F(DurableFullDiskTest, ARestartOnTheFullDiskRecoversAndTakesDurableSendsOnceThereIsRoom) {
  start_on_disk();
  int confirmed = 0;
  {
    auto c = connect();
    confirmed = fill(c);
  }
  stop();
  // Everything confirmed comes back; durable sends are still refused, naming the cause.
  start_on_disk();
  EXPECT_EQ(storage_json()["recovery"]["messages"], confirmed);
  const auto q = queue_json("full");
  ASSERT_TRUE(q) << daemon_->log();
  EXPECT_EQ((*q)["depth"], confirmed);
  auto c = connect();
  // The restart may leave a little room (the journal's own bookkeeping of the refused
  // sends settles): what fits is taken first, in order, and then the disk refuses.
  std::string text;
  Errc failed = Errc::ok;
  for (int room = 0; room < 1000; ++room, ++confirmed) {
    failed = code_of([&] { c.send_confirmed("full", message(confirmed)); }, &text);
    if (failed != Errc::ok) break;
  }
  EXPECT_EQ(failed, Errc::storage_failed);
  EXPECT_NE(text.find("No space left on device"), std::string::npos) << text;
  c.send_confirmed("plain", "not durable");
  EXPECT_TRUE(c.receive("plain", kLong));
  const std::vector<std::string> after = send_once_there_is_room(c);
  expect_after_restart(confirmed, after);
}

// ---- 11. recovery figures ----

TEST_F(DurableTest, StatsShowWhatRecoveryFound) {
  start();
  std::uint64_t bytes = 0;
  {
    auto c = connect();
    c.declare("stats.a", durable(QueueOptions::Fsync::always));
    c.declare("stats.b", durable(QueueOptions::Fsync::none));
    for (int i = 0; i < 40; ++i) {
      const std::string p(static_cast<std::size_t>(10 + i), 'p');
      c.send_confirmed(i % 4 == 0 ? "stats.b" : "stats.a", p);
      bytes += p.size();
    }
    auto held = c.receive("stats.a", kLong, kAck);  // in flight at the crash
    ASSERT_TRUE(held);
    auto taken = c.receive("stats.b", kLong, kAck);
    ASSERT_TRUE(taken);
    c.ack(*taken, true);
    bytes -= taken->size();
    barrier(c);
    bytes += std::string("barrier").size();
    crash();
  }
  start();
  const json s = storage_json();
  EXPECT_EQ(s["dir"], state_);
  EXPECT_EQ(s["available"], true);
  EXPECT_EQ(s["error"], "");
  // The segments recovery read and the one it began are on disk from the start.
  EXPECT_GT(s["disk_bytes"].get<std::uint64_t>(), 0u) << s;
  const json& r = s["recovery"];
  EXPECT_EQ(r["queues"], 3);     // stats.a, stats.b, barrier
  EXPECT_EQ(r["messages"], 40);  // 40 - 1 acked + the barrier's
  EXPECT_EQ(r["redelivered"], 1);
  EXPECT_EQ(r["bytes"], bytes);
  EXPECT_GE(r["segments"].get<int>(), 1);
  EXPECT_GE(r["records"].get<int>(), 40 + 3);
  EXPECT_EQ(r["torn_bytes"], 0);
  EXPECT_EQ(r["damaged"], 0);
  EXPECT_TRUE(daemon_->wait_for_log("recovered 3 durable queues and 40 messages (" +
                                    std::to_string(bytes) + " bytes, 1 redelivered)"))
      << daemon_->log();
  // And the figures are what a client finds.
  auto c = connect();
  int found = 0;
  for (const char* key : {"stats.a", "stats.b", "barrier"}) {
    while (auto m = c.receive(key, kShort))
      ++found;
  }
  EXPECT_EQ(found, 40);
}

}  // namespace
}  // namespace qbus::testing
