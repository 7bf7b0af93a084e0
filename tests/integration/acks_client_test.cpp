// Acknowledgements, headers and subscriptions (PROTOCOL.md 17) through libqbus and qbusctl
// against the real qbusd: what a receiver that settles, gives back, times out or dies
// leaves in the queue and in its dead-letter queue. Tests wait on messages, never on
// sleeps; a "nothing more" check is a short receive that must come back empty.
#include <sys/stat.h>
#include <qbus/client.hpp>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <string>
#include <vector>

#include "daemon.hpp"

namespace qbus::testing {
namespace {

using json = nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr auto kLong = seconds(30);  // for what must arrive
const ReceiveOptions kAck{true};

class AcksClientTest : public ::testing::Test {
 protected:
  Client connect(const std::string& name = "acks-test") {
    return Client(ClientOptions{daemon_.address(), name, seconds(30)});
  }
  Result ctl(std::vector<std::string> args) {
    args.insert(args.begin(), {qbusctl_path(), "--address", daemon_.address()});
    return run(args);
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
  Daemon daemon_;
};

TEST_F(AcksClientTest, TheBrokerSpeaksProtocolTwo) {
  EXPECT_EQ(connect().session().protocol_version, 2);
}

TEST_F(AcksClientTest, AnAckedMessageIsGone) {
  auto producer = connect();
  auto consumer = connect();
  producer.send_confirmed("acked", "one");
  auto m = consumer.receive("acked", kLong, kAck);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->text(), "one");
  EXPECT_NE(m->delivery_tag(), 0u);
  EXPECT_EQ(m->delivery_count(), 1u);
  EXPECT_FALSE(m->redelivered());
  consumer.ack(*m, true);
  // Gone for everyone, the receiver included, also once it has closed.
  EXPECT_FALSE(producer.try_receive("acked"));
  { auto gone = std::move(consumer); }
  EXPECT_FALSE(producer.receive("acked", milliseconds(100), kAck));
}

TEST_F(AcksClientTest, AMessageHeldByAClosedConnectionGoesToTheNextReceiver) {
  auto producer = connect();
  producer.send("held", "payload", SendOptions{{{"content-type", "text/plain"}, {"n", "7"}}, true});
  {
    auto first = connect("first");
    auto m = first.receive("held", kLong, kAck);
    ASSERT_TRUE(m);
    EXPECT_EQ(m->delivery_count(), 1u);
    EXPECT_FALSE(m->redelivered());
  }  // closed without settling it
  auto second = connect("second");
  auto again = second.receive("held", kLong, kAck);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->text(), "payload");
  EXPECT_TRUE(again->redelivered());
  EXPECT_EQ(again->delivery_count(), 2u);
  EXPECT_EQ(again->headers(), (Headers{{"content-type", "text/plain"}, {"n", "7"}}));
  second.ack(*again, true);
}

TEST_F(AcksClientTest, NackRequeuePutsItBackAtTheHead) {
  auto c = connect();
  c.send_confirmed("requeue", "a");
  c.send_confirmed("requeue", "b");
  auto a = c.receive("requeue", kLong, kAck);
  ASSERT_TRUE(a);
  ASSERT_EQ(a->text(), "a");
  c.nack(*a, NackAction::requeue, {}, true);
  auto first = c.receive("requeue", kLong, kAck);
  ASSERT_TRUE(first);
  EXPECT_EQ(first->text(), "a");
  EXPECT_TRUE(first->redelivered());
  EXPECT_EQ(first->delivery_count(), 2u);
  auto second = c.receive("requeue", kLong, kAck);
  ASSERT_TRUE(second);
  EXPECT_EQ(second->text(), "b");
  c.ack_up_to(second->delivery_tag(), true);  // both
  EXPECT_FALSE(c.receive("requeue", milliseconds(100)));
}

TEST_F(AcksClientTest, NackDeadLetterMovesItWithTheReasons) {
  auto c = connect();
  QueueOptions o;
  o.dead_letter = "orders.dead";
  c.declare("orders", o);
  c.send("orders", "bad order", SendOptions{{{"trace", "t1"}}, true});
  auto m = c.receive("orders", kLong, kAck);
  ASSERT_TRUE(m);
  c.nack(*m, NackAction::dead_letter, {}, true);
  auto dead = c.receive("orders.dead", kLong);
  ASSERT_TRUE(dead);
  EXPECT_EQ(dead->text(), "bad order");
  EXPECT_EQ(dead->header("trace"), "t1");
  EXPECT_EQ(dead->header("qbus-dead-reason"), "rejected");
  EXPECT_EQ(dead->header("qbus-dead-queue"), "orders");
  EXPECT_EQ(dead->header("qbus-dead-count"), "1");
  EXPECT_FALSE(c.receive("orders", milliseconds(100)));
}

TEST_F(AcksClientTest, MaxDeliveriesDeadLettersAMessageThatKeepsComingBack) {
  auto setup = connect();
  QueueOptions o;
  o.max_deliveries = 2;
  o.dead_letter = "poison.dead";
  setup.declare("poison", o);
  setup.send_confirmed("poison", "crashes its receiver");
  for (std::uint32_t n = 1; n <= 2; ++n) {
    auto victim = connect("victim");
    auto m = victim.receive("poison", kLong, kAck);
    ASSERT_TRUE(m) << "delivery " << n;
    EXPECT_EQ(m->delivery_count(), n);
  }  // abandoned twice
  auto dead = setup.receive("poison.dead", kLong);
  ASSERT_TRUE(dead);
  EXPECT_EQ(dead->text(), "crashes its receiver");
  EXPECT_EQ(dead->header("qbus-dead-reason"), "max_deliveries");
  EXPECT_EQ(dead->header("qbus-dead-queue"), "poison");
  EXPECT_EQ(dead->header("qbus-dead-count"), "2");
  EXPECT_FALSE(setup.receive("poison", milliseconds(100), kAck));
}

TEST_F(AcksClientTest, AConfirmedAckOfATagThisConnectionDoesNotHoldFails) {
  auto holder = connect("holder");
  auto other = connect("other");
  holder.send_confirmed("bogus", "x");
  auto m = holder.receive("bogus", kLong, kAck);
  ASSERT_TRUE(m);
  // Another connection's tag is unknown here...
  EXPECT_EQ(code_of([&] { other.ack(*m, true); }), Errc::unknown_delivery);
  EXPECT_EQ(code_of([&] { other.extend(*m, seconds(1), true); }), Errc::unknown_delivery);
  // ... and so is a tag acked already.
  holder.ack(*m, true);
  EXPECT_EQ(code_of([&] { holder.ack(*m, true); }), Errc::unknown_delivery);
  // Pipelined, the failure is counted instead.
  holder.nack(*m);
  holder.sync();
  EXPECT_EQ(holder.send_failures().count, 1u);
  EXPECT_EQ(holder.send_failures().last_code, Errc::unknown_delivery);
}

TEST_F(AcksClientTest, AnAckTimeoutRedeliversAndTheLateAckIsRefused) {
  auto slow = connect("slow");
  QueueOptions o;
  o.ack_timeout = milliseconds(200);
  slow.declare("timed", o);
  slow.send_confirmed("timed", "work");
  auto m = slow.receive("timed", kLong, kAck);
  ASSERT_TRUE(m);
  auto fast = connect("fast");
  auto again = fast.receive("timed", kLong, kAck);  // waits out the 200 ms
  ASSERT_TRUE(again);
  EXPECT_EQ(again->text(), "work");
  EXPECT_TRUE(again->redelivered());
  EXPECT_EQ(again->delivery_count(), 2u);
  EXPECT_EQ(code_of([&] { slow.ack(*m, true); }), Errc::delivery_timed_out);
  fast.ack(*again, true);
}

TEST_F(AcksClientTest, ExtendKeepsAMessageBeyondItsAckTimeout) {
  auto c = connect();
  QueueOptions o;
  o.ack_timeout = milliseconds(200);
  c.declare("extended", o);
  c.send_confirmed("extended", "long job");
  auto m = c.receive("extended", kLong, kAck);
  ASSERT_TRUE(m);
  c.extend(*m, seconds(60), true);
  auto other = connect("other");
  // Well past the 200 ms: still held by `c`.
  EXPECT_FALSE(other.receive("extended", milliseconds(1000), kAck));
  c.ack(*m, true);
}

TEST_F(AcksClientTest, ASubscriptionHoldsNoMoreThanItsPrefetchUnsettled) {
  auto producer = connect("producer");
  for (int i = 1; i <= 5; ++i)
    producer.send("feed", "m" + std::to_string(i));
  producer.sync();
  auto consumer = connect("consumer");
  auto sub = consumer.subscribe("feed", SubscribeOptions{2, true});
  auto one = sub.next(kLong);
  auto two = sub.next(kLong);
  ASSERT_TRUE(one);
  ASSERT_TRUE(two);
  EXPECT_EQ(one->text(), "m1");
  EXPECT_EQ(two->text(), "m2");
  EXPECT_FALSE(sub.next(milliseconds(100)));  // two unsettled: no third
  consumer.ack(*one);
  auto three = sub.next(kLong);
  ASSERT_TRUE(three);
  EXPECT_EQ(three->text(), "m3");
  consumer.ack(*two);
  consumer.ack(*three);
  for (const char* want : {"m4", "m5"}) {
    auto m = sub.next(kLong);
    ASSERT_TRUE(m);
    EXPECT_EQ(m->text(), want);
    consumer.ack(*m);
  }
  sub.cancel();
  EXPECT_FALSE(sub.active());
  EXPECT_FALSE(sub.next(milliseconds(100)));
  consumer.sync();
  EXPECT_EQ(consumer.send_failures().count, 0u);
}

TEST_F(AcksClientTest, ASubscriptionSurvivesOtherCallsOnTheSameClient) {
  auto c = connect();
  auto sub = c.subscribe("loop", SubscribeOptions{4, true});
  std::vector<std::string> got;
  for (int i = 0; i < 20; ++i) {
    c.send_confirmed("loop", "n" + std::to_string(i));
    c.send_confirmed("elsewhere", "noise");  // deliveries for `sub` may arrive meanwhile
    auto m = sub.next(kLong);
    ASSERT_TRUE(m) << i;
    got.emplace_back(m->text());
    c.ack(*m);
  }
  for (int i = 0; i < 20; ++i)
    EXPECT_EQ(got[static_cast<std::size_t>(i)], "n" + std::to_string(i));
  EXPECT_EQ(c.receive_batch("elsewhere", 100, kLong).size(), 20u);
  sub.cancel();
  c.sync();
  EXPECT_EQ(c.send_failures().count, 0u);
}

TEST_F(AcksClientTest, AnUnackedSubscriptionTakesWhatIsSent) {
  auto c = connect();
  auto sub = c.subscribe("plain.feed", SubscribeOptions{0, false});
  auto producer = connect("producer");
  for (int i = 0; i < 3; ++i)
    producer.send("plain.feed", std::to_string(i));
  for (int i = 0; i < 3; ++i) {
    auto m = sub.next(kLong);
    ASSERT_TRUE(m);
    EXPECT_EQ(m->text(), std::to_string(i));
    EXPECT_EQ(m->delivery_tag(), 0u);
  }
}

TEST_F(AcksClientTest, HeadersRoundTripThroughAQueue) {
  auto c = connect();
  const Headers h{{"content-type", "application/json"},
                  {"traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
                  {"binary", std::string("\0\x01\xff", 3)},
                  {"empty", ""}};
  c.send("hdr", "{}", SendOptions{h, false});
  c.send("hdr", "{}", SendOptions{h, true});
  auto m = c.receive("hdr", kLong);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->headers(), h);
  EXPECT_EQ(m->delivery_tag(), 0u);
  const auto seen = c.receive_each("hdr", 1, kLong, [&](const MessageView& v) {
    EXPECT_EQ(v.headers(), h);
    EXPECT_EQ(v.header("empty"), "");
  });
  EXPECT_EQ(seen, 1u);
  // Through a shared-memory region (over the region threshold), in acknowledgement mode.
  const std::string big(256 * 1024, 'r');
  c.send("hdr", big, SendOptions{{{"size", "big"}}, true});
  auto region = c.receive("hdr", kLong, kAck);
  ASSERT_TRUE(region);
  EXPECT_TRUE(region->in_shared_memory());
  EXPECT_EQ(region->text(), big);
  EXPECT_EQ(region->header("size"), "big");
  EXPECT_NE(region->delivery_tag(), 0u);
  c.ack(*region, true);
  // A message sent without headers has none.
  c.send_confirmed("hdr", "bare");
  auto bare = c.receive("hdr", kLong);
  ASSERT_TRUE(bare);
  EXPECT_TRUE(bare->headers().empty());
}

// The sender's share of the header block (17.1) leaves room for the broker's: a dead letter
// of a message with as many headers as a sender may give, from a queue that gives message
// ids, is still a block every client reads.
TEST_F(AcksClientTest, ASenderKeepsToItsShareOfTheHeadersAndTheBrokersStillFit) {
  auto c = connect();
  Headers full;
  for (int i = 0; i < 28; ++i)
    full.emplace_back("h" + std::to_string(i), std::string(100, 'v'));
  Headers over = full;
  over.emplace_back("h28", "v");
  try {
    c.send("hdr.limit", "x", SendOptions{over, true});
    FAIL() << "29 headers were taken";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("at most 28"), std::string::npos) << e.what();
  }
  QueueOptions o;
  o.message_ids = true;
  o.dead_letter = "hdr.limit.dead";
  c.declare("hdr.limit", o);
  QueueOptions dead;
  dead.message_ids = true;
  c.declare("hdr.limit.dead", dead);
  c.send("hdr.limit", "x", SendOptions{full, true});
  auto m = c.receive("hdr.limit", kLong, kAck);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->headers().size(), 29u);
  c.nack(*m, NackAction::dead_letter, {}, true);
  auto d = c.receive("hdr.limit.dead", kLong);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->headers().size(), 32u);
  EXPECT_EQ(d->header("qbus-dead-reason"), "rejected");
  ASSERT_TRUE(d->header(kHeaderMessageId));
  EXPECT_NE(*d->header(kHeaderMessageId), *m->header(kHeaderMessageId));
}

TEST_F(AcksClientTest, QbusctlDeclaresAQueueWithMessageIdsAndShowsThem) {
  auto d = ctl({"declare", "cli.ids", "--message-ids"});
  ASSERT_EQ(d.exit_code, 0) << d.err;
  auto conflict = ctl({"declare", "cli.ids"});
  EXPECT_EQ(conflict.exit_code, 1);
  EXPECT_NE(conflict.err.find("message_ids"), std::string::npos) << conflict.err;
  ASSERT_EQ(ctl({"send", "cli.ids", "a"}).exit_code, 0);
  auto r = ctl({"recv", "cli.ids", "--ack", "--json", "--timeout", "30000"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json m = json::parse(r.out);
  ASSERT_TRUE(m["headers"].contains("qbus-id")) << r.out;
  EXPECT_EQ(m["headers"]["qbus-id"].get<std::string>().size() > 17, true) << r.out;
  auto q = ctl({"queue", "cli.ids", "--json"});
  ASSERT_EQ(q.exit_code, 0) << q.err;
  EXPECT_EQ(json::parse(q.out)["queue"]["message_ids"], true);
  auto text = ctl({"queue", "cli.ids"});
  EXPECT_NE(text.out.find("message_ids"), std::string::npos) << text.out;
}

TEST_F(AcksClientTest, QbusctlSendsHeadersAndReceivesWithAck) {
  auto s = ctl({"send", "cli.acks", "hello", "--header", "a=1", "--header", "b=x=y"});
  ASSERT_EQ(s.exit_code, 0) << s.err;
  auto r = ctl({"recv", "cli.acks", "--ack", "--json", "--timeout", "30000"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json m = json::parse(r.out);
  EXPECT_EQ(m["payload"], "hello");
  EXPECT_EQ(m["headers"], json({{"a", "1"}, {"b", "x=y"}}));
  EXPECT_EQ(m["delivery_count"], 1);
  EXPECT_EQ(m["redelivered"], false);
  EXPECT_GT(m["delivery_tag"].get<std::uint64_t>(), 0u);
  // Acked: gone.
  EXPECT_FALSE(connect().receive("cli.acks", milliseconds(100)));

  ASSERT_EQ(ctl({"send", "cli.acks", "again", "--header", "k=v"}).exit_code, 0);
  auto text = ctl({"recv", "cli.acks", "--headers", "--timeout", "30000"});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_EQ(text.out, "k: v\nagain\n");
}

TEST_F(AcksClientTest, QbusctlRefusesABadHeaderNamingIt) {
  auto r = ctl({"send", "cli.bad", "x", "--header", "novalue"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("novalue"), std::string::npos) << r.err;
  auto reserved = ctl({"send", "cli.bad", "x", "--header", "qbus-dead-reason=forged"});
  EXPECT_EQ(reserved.exit_code, 1);
  EXPECT_NE(reserved.err.find("qbus-dead-reason"), std::string::npos) << reserved.err;
  EXPECT_FALSE(connect().receive("cli.bad", milliseconds(100)));
}

TEST_F(AcksClientTest, QbusctlDeclaresTheNewOptionsAndShowsInFlight) {
  auto d = ctl({"declare", "cli.work", "--dead-letter", "cli.work.dead", "--max-deliveries", "3",
                "--ack-timeout", "60000"});
  ASSERT_EQ(d.exit_code, 0) << d.err;
  // Declared with those options: the same again is fine, another dead letter is not.
  EXPECT_EQ(ctl({"declare", "cli.work", "--dead-letter", "cli.work.dead", "--max-deliveries", "3",
                 "--ack-timeout", "60000"})
                .exit_code,
            0);
  auto conflict = ctl({"declare", "cli.work", "--dead-letter", "cli.other"});
  EXPECT_EQ(conflict.exit_code, 1);
  EXPECT_NE(conflict.err.find("queue_conflict"), std::string::npos) << conflict.err;

  auto c = connect();
  c.send_confirmed("cli.work", "job");
  auto m = c.receive("cli.work", kLong, kAck);
  ASSERT_TRUE(m);
  auto q = ctl({"queue", "cli.work"});
  ASSERT_EQ(q.exit_code, 0) << q.err;
  EXPECT_NE(q.out.find("in_flight:"), std::string::npos) << q.out;
  EXPECT_NE(q.out.find("max_deliveries:"), std::string::npos) << q.out;
  EXPECT_NE(q.out.find("cli.work.dead"), std::string::npos) << q.out;
  auto j = ctl({"queue", "cli.work", "--json"});
  ASSERT_EQ(j.exit_code, 0) << j.err;
  const json qj = json::parse(j.out)["queue"];
  EXPECT_EQ(qj["in_flight"], 1);
  EXPECT_EQ(qj["max_deliveries"], 3);
  EXPECT_EQ(qj["ack_timeout_ms"], 60000);
  EXPECT_EQ(qj["dead_letter"], "cli.work.dead");
  auto table = ctl({"queues"});
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_NE(table.out.find("INFLIGHT"), std::string::npos) << table.out;

  c.nack(*m, NackAction::dead_letter, {}, true);
  auto dead = c.receive("cli.work.dead", kLong);
  ASSERT_TRUE(dead);
  EXPECT_EQ(dead->header("qbus-dead-reason"), "rejected");
}

// qbusctl's options for time to live, delays, priorities, single-active-consumer queues
// and recv --nack (proto/PROTOCOL.md 17.8-17.10). Delays are checked as lower bounds (the
// clock read before the command that sends) or made long enough never to come due.

TEST_F(AcksClientTest, QbusctlSendsPrioritiesHighestFirst) {
  ASSERT_EQ(ctl({"declare", "cli.prio", "--priorities", "10"}).exit_code, 0);
  ASSERT_EQ(ctl({"send", "cli.prio", "low"}).exit_code, 0);
  ASSERT_EQ(ctl({"send", "cli.prio", "mid", "--priority", "4"}).exit_code, 0);
  ASSERT_EQ(ctl({"send", "cli.prio", "high", "--priority", "9"}).exit_code, 0);
  auto r = ctl({"recv", "cli.prio", "--count", "3", "--timeout", "30000"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "high\nmid\nlow\n");
}

TEST_F(AcksClientTest, QbusctlDelaysASend) {
  // Not due for a long while: a receive that does not wait gets nothing, and the queue
  // shows it as delayed.
  ASSERT_EQ(ctl({"send", "cli.parked", "much later", "--delay", "600000"}).exit_code, 0);
  auto now = ctl({"recv", "cli.parked", "--timeout", "0"});
  EXPECT_EQ(now.exit_code, 3) << now.out;
  auto j = ctl({"queue", "cli.parked", "--json"});
  ASSERT_EQ(j.exit_code, 0) << j.err;
  EXPECT_EQ(json::parse(j.out)["queue"]["delayed"], 1);
  // Due in 300 ms: never received earlier.
  const auto sent = std::chrono::steady_clock::now();
  ASSERT_EQ(ctl({"send", "cli.delay", "later", "--delay", "300"}).exit_code, 0);
  auto r = ctl({"recv", "cli.delay", "--timeout", "30000"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "later\n");
  EXPECT_GE(std::chrono::steady_clock::now() - sent, milliseconds(300));
}

TEST_F(AcksClientTest, QbusctlTtlDeadLettersAnExpiredMessage) {
  ASSERT_EQ(ctl({"declare", "cli.ttl", "--dead-letter", "cli.ttl.dead", "--dead-letter-expired"})
                .exit_code,
            0);
  // Delayed past its own ttl: it can only expire.
  ASSERT_EQ(ctl({"send", "cli.ttl", "stale", "--ttl", "50", "--delay", "100"}).exit_code, 0);
  auto dead = ctl({"recv", "cli.ttl.dead", "--headers", "--timeout", "30000"});
  ASSERT_EQ(dead.exit_code, 0) << dead.err;
  EXPECT_NE(dead.out.find("qbus-dead-reason: expired"), std::string::npos) << dead.out;
  EXPECT_NE(dead.out.find("stale"), std::string::npos) << dead.out;
  EXPECT_FALSE(connect().receive("cli.ttl", milliseconds(100)));
}

TEST_F(AcksClientTest, QbusctlQueueDefaultTtlApplies) {
  ASSERT_EQ(ctl({"declare", "cli.dttl", "--ttl", "50", "--dead-letter", "cli.dttl.dead",
                 "--dead-letter-expired"})
                .exit_code,
            0);
  ASSERT_EQ(ctl({"send", "cli.dttl", "old", "--delay", "100"}).exit_code, 0);
  auto dead = ctl({"recv", "cli.dttl.dead", "--timeout", "30000"});
  ASSERT_EQ(dead.exit_code, 0) << dead.err;
  EXPECT_EQ(dead.out, "old\n");
}

TEST_F(AcksClientTest, QbusctlRefusesTimeOptionsOutOfPlace) {
  auto prio = ctl({"send", "cli.bad", "x", "--priority", "10"});
  EXPECT_EQ(prio.exit_code, 2);
  EXPECT_NE(prio.err.find("--priority"), std::string::npos) << prio.err;
  auto ttl = ctl({"send", "cli.bad", "x", "--ttl", "-1"});
  EXPECT_EQ(ttl.exit_code, 2);
  EXPECT_NE(ttl.err.find("--ttl"), std::string::npos) << ttl.err;
  auto direct = ctl({"send", "--pid", "1", "x", "--delay", "5"});
  EXPECT_EQ(direct.exit_code, 2);
  EXPECT_NE(direct.err.find("--pid"), std::string::npos) << direct.err;
  auto levels = ctl({"declare", "cli.bad", "--priorities", "11"});
  EXPECT_EQ(levels.exit_code, 2);
  EXPECT_NE(levels.err.find("--priorities"), std::string::npos) << levels.err;
  auto expired = ctl({"declare", "cli.bad", "--dead-letter-expired"});
  EXPECT_EQ(expired.exit_code, 2);
  EXPECT_NE(expired.err.find("--dead-letter"), std::string::npos) << expired.err;
  EXPECT_FALSE(connect().receive("cli.bad", milliseconds(100)));
}

TEST_F(AcksClientTest, QbusctlDeclaresTimeOptionsAndChecksThem) {
  const std::vector<std::string> declare{"declare",
                                         "cli.timed",
                                         "--ttl",
                                         "60000",
                                         "--priorities",
                                         "5",
                                         "--dead-letter",
                                         "cli.timed.dead",
                                         "--dead-letter-expired",
                                         "--single-active-consumer"};
  auto d = ctl(declare);
  ASSERT_EQ(d.exit_code, 0) << d.err;
  EXPECT_EQ(ctl(declare).exit_code, 0);  // the same again is fine
  auto conflict = ctl({"declare", "cli.timed", "--ttl", "1000"});
  EXPECT_EQ(conflict.exit_code, 1);
  EXPECT_NE(conflict.err.find("queue_conflict"), std::string::npos) << conflict.err;
  auto j = ctl({"queue", "cli.timed", "--json"});
  ASSERT_EQ(j.exit_code, 0) << j.err;
  const json qj = json::parse(j.out)["queue"];
  EXPECT_EQ(qj["ttl_ms"], 60000);
  EXPECT_EQ(qj["priorities"], 5);
  EXPECT_EQ(qj["dead_letter_expired"], true);
  EXPECT_EQ(qj["single_active_consumer"], true);
}

TEST_F(AcksClientTest, QbusctlRecvNackRequeueGivesEveryMessageBackOnce) {
  auto c = connect();
  for (const char* m : {"a", "b", "c"})
    c.send_confirmed("cli.nack", m);
  // Three different messages printed (a requeued one is not received again by the same
  // command), then all three given back.
  auto r = ctl({"recv", "cli.nack", "--count", "3", "--nack", "requeue", "--timeout", "30000"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "a\nb\nc\n");
  auto again = c.receive_batch("cli.nack", 3, kLong, kAck);
  ASSERT_EQ(again.size(), 3u);
  EXPECT_EQ(again[0].text(), "a");
  EXPECT_TRUE(again[0].redelivered());
  EXPECT_EQ(again[0].delivery_count(), 2u);
  for (const auto& m : again)
    c.ack(m, true);
}

TEST_F(AcksClientTest, QbusctlRecvNackDeadLetter) {
  ASSERT_EQ(ctl({"declare", "cli.nackdl", "--dead-letter", "cli.nackdl.dead"}).exit_code, 0);
  ASSERT_EQ(ctl({"send", "cli.nackdl", "poison"}).exit_code, 0);
  auto r = ctl({"recv", "cli.nackdl", "--nack", "dead-letter", "--json", "--timeout", "30000"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["payload"], "poison");
  auto dead = connect().receive("cli.nackdl.dead", kLong);
  ASSERT_TRUE(dead);
  EXPECT_EQ(dead->header("qbus-dead-reason"), "rejected");
  EXPECT_FALSE(connect().receive("cli.nackdl", milliseconds(100)));
}

TEST_F(AcksClientTest, QbusctlRecvNackRequeueAfter) {
  ASSERT_EQ(ctl({"send", "cli.nackafter", "retry"}).exit_code, 0);
  const auto before = std::chrono::steady_clock::now();  // before the nack
  auto r = ctl({"recv", "cli.nackafter", "--nack", "requeue-after=300", "--timeout", "30000"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "retry\n");
  // Aside for 300 ms: back no earlier.
  auto back = connect().receive("cli.nackafter", kLong);
  ASSERT_TRUE(back);
  EXPECT_GE(std::chrono::steady_clock::now() - before, milliseconds(300));
  EXPECT_EQ(back->text(), "retry");
  EXPECT_TRUE(back->redelivered());
}

TEST_F(AcksClientTest, QbusctlRecvNackRefusesABadAction) {
  for (const char* bad : {"bogus", "requeue-after=", "requeue-after=x", "requeue-after=-1",
                          "requeue-after=4294967296"}) {
    auto r = ctl({"recv", "cli.any", "--nack", bad, "--timeout", "0"});
    EXPECT_EQ(r.exit_code, 2) << bad;
    EXPECT_NE(r.err.find("--nack"), std::string::npos) << r.err;
  }
  EXPECT_EQ(ctl({"recv", "--direct", "--nack", "requeue"}).exit_code, 2);
}

TEST_F(AcksClientTest, QbusctlOnASingleActiveConsumerQueue) {
  ASSERT_EQ(ctl({"declare", "cli.sac", "--single-active-consumer"}).exit_code, 0);
  auto c = connect();
  c.send_confirmed("cli.sac", "one");
  c.send_confirmed("cli.sac", "two");
  c.send_confirmed("cli.sac", "three");
  EXPECT_EQ(code_of([&] { c.receive("cli.sac", milliseconds(0)); }), Errc::single_active_consumer);
  // A plain recv explains itself.
  auto plain = ctl({"recv", "cli.sac", "--timeout", "0"});
  EXPECT_EQ(plain.exit_code, 1);
  EXPECT_NE(plain.err.find("single-active-consumer"), std::string::npos) << plain.err;
  EXPECT_NE(plain.err.find("--ack"), std::string::npos) << plain.err;
  // --ack goes through a subscription: one message, acked; nothing else taken.
  auto one = ctl({"recv", "cli.sac", "--ack", "--timeout", "30000"});
  ASSERT_EQ(one.exit_code, 0) << one.err;
  EXPECT_EQ(one.out, "one\n");
  // --nack too: both printed, then both back, not redelivered to the same command.
  auto two = ctl({"recv", "cli.sac", "--count", "2", "--nack", "requeue", "--timeout", "30000"});
  ASSERT_EQ(two.exit_code, 0) << two.err;
  EXPECT_EQ(two.out, "two\nthree\n");
  auto sub = c.subscribe("cli.sac", SubscribeOptions{2, true});
  auto m = sub.next(kLong);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->text(), "two");  // "one" was acked by the first recv
  EXPECT_TRUE(m->redelivered());
  c.ack(*m, true);
}

TEST_F(AcksClientTest, QbusctlSendsALargeFileWithOptions) {
  const std::string big(3u << 20, 'z');  // over the default 1 MiB inline limit: a region
  const auto in = daemon_.dir().file("big.in");
  std::ofstream(in, std::ios::binary) << big;
  auto s = ctl({"send", "cli.bigopts", "--file", in, "--header", "k=v", "--priority", "3"});
  ASSERT_EQ(s.exit_code, 0) << s.err;
  auto m = connect().receive("cli.bigopts", kLong);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->size(), big.size());
  EXPECT_EQ(m->header("k"), "v");
}

// Over TCP a region message arrives inline, in DELIVER pieces: its DELIVERY_INFO still
// describes the whole message.
class AcksTcpTest : public ::testing::Test {
 protected:
  AcksTcpTest() : daemon_(options()) {}
  DaemonOptions options() {
    const auto token = secrets_.file("token");
    std::ofstream(token) << kToken << "\n";
    ::chmod(token.c_str(), 0600);
    return DaemonOptions{.config_json = R"({"tcp": {"listen": "127.0.0.1:0", "token_file": ")" +
                                        token + R"("}})"};
  }
  Client tcp_client() {
    ClientOptions o{daemon_.tcp_address(), "acks-tcp", seconds(30)};
    o.token = kToken;
    return Client(o);
  }
  static constexpr const char* kToken = "acks-token-for-tests";
  TempDir secrets_;
  Daemon daemon_;
};

TEST_F(AcksTcpTest, ALargeMessageInPiecesKeepsItsHeadersAndTag) {
  Client local(ClientOptions{daemon_.address(), "acks-unix", seconds(30)});
  const std::string big(3 * 1024 * 1024 / 2, 'p');  // over max_payload: a region
  local.send("tcp.big", big, SendOptions{{{"part", "whole"}}, true});
  auto tcp = tcp_client();
  EXPECT_EQ(tcp.session().protocol_version, 2);
  auto m = tcp.receive("tcp.big", kLong, kAck);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->size(), big.size());
  EXPECT_EQ(m->header("part"), "whole");
  EXPECT_NE(m->delivery_tag(), 0u);
  tcp.ack(*m, true);
  // And pushed to a subscription.
  local.send("tcp.big", big, SendOptions{{{"part", "again"}}, true});
  auto sub = tcp.subscribe("tcp.big", SubscribeOptions{1, true});
  auto pushed = sub.next(kLong);
  ASSERT_TRUE(pushed);
  EXPECT_EQ(pushed->text(), big);
  EXPECT_EQ(pushed->header("part"), "again");
  tcp.ack(*pushed, true);
}

}  // namespace
}  // namespace qbus::testing
