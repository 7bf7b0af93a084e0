// Unit tests of queue lifetime: queues created by use, declared queues and their options,
// and the grace after a declarer leaves. Time is a value the tests pass in.
#include <gtest/gtest.h>

#include <string>

#include "broker_fixture.hpp"

namespace qbus::broker {
namespace {

using namespace std::chrono_literals;

using namespace fakes;  // the fixture, the recording sink and their helpers

// ---- queue lifetime and declare ----------------------------------------------------------

TEST_F(BrokerTest, AutoCreatedQueueDisappearsOnceDrained) {
  const PeerId p = connect();
  const PeerId c = connect();
  put(p, "jobs", "1");
  put(p, "jobs", "2");
  ASSERT_EQ(broker().queue_count(), 1u);
  EXPECT_FALSE(broker().find("jobs")->declared());

  receive_now(c, "jobs");
  EXPECT_EQ(broker().queue_count(), 1u);
  receive_now(c, "jobs");
  EXPECT_EQ(broker().queue_count(), 0u);
  EXPECT_EQ(broker().find("jobs"), nullptr);
}

TEST_F(BrokerTest, DeclaredQueueStaysWhenEmpty) {
  ASSERT_EQ(declare("jobs", QueueOptions{}), Errc::ok);
  const PeerId p = connect();
  const PeerId c = connect();
  put(p, "jobs", "1");
  receive_now(c, "jobs");
  receive(c, "jobs", 1, 10);
  broker().expire(t0_ + 1s);

  EXPECT_EQ(broker().queue_count(), 1u);
  ASSERT_NE(broker().find("jobs"), nullptr);
  EXPECT_TRUE(broker().find("jobs")->declared());
}

TEST_F(BrokerTest, DeclareFillsZeroOptionsFromTheDefaults) {
  limits_.queue_defaults = options(7, 700, Overflow::reject);

  ASSERT_EQ(declare("all.default", options(0, 0, Overflow::use_default)), Errc::ok);
  ASSERT_EQ(declare("some.default", options(5, 0, Overflow::drop_oldest)), Errc::ok);

  const auto& a = broker().find("all.default")->options();
  EXPECT_EQ(a.max_messages, 7u);
  EXPECT_EQ(a.max_bytes, 700u);
  EXPECT_EQ(a.overflow, Overflow::reject);
  const auto& s = broker().find("some.default")->options();
  EXPECT_EQ(s.max_messages, 5u);
  EXPECT_EQ(s.max_bytes, 700u);
  EXPECT_EQ(s.overflow, Overflow::drop_oldest);
}

TEST_F(BrokerTest, DeclaringTheSameOptionsTwiceSucceeds) {
  limits_.queue_defaults = options(7, 700, Overflow::reject);
  ASSERT_EQ(declare("jobs", options(10, 100, Overflow::block)), Errc::ok);
  EXPECT_EQ(declare("jobs", options(10, 100, Overflow::block)), Errc::ok);

  // Zeros mean the defaults, so they match an explicit declaration of the defaults.
  ASSERT_EQ(declare("dflt", options(0, 0, Overflow::use_default)), Errc::ok);
  EXPECT_EQ(declare("dflt", options(7, 700, Overflow::reject)), Errc::ok);
  EXPECT_EQ(broker().queue_count(), 2u);
}

TEST_F(BrokerTest, DeclaringDifferentOptionsOnADeclaredQueueConflicts) {
  ASSERT_EQ(declare("jobs", options(10, 100, Overflow::reject)), Errc::ok);

  std::string text;
  EXPECT_EQ(declare("jobs", options(10, 100, Overflow::block), &text), Errc::queue_conflict);
  EXPECT_EQ(text,
            "queue 'jobs' is already declared with max_messages=10 max_bytes=100 "
            "overflow=reject");
  EXPECT_EQ(declare("jobs", options(11, 100, Overflow::reject)), Errc::queue_conflict);
  EXPECT_EQ(declare("jobs", options(10, 101, Overflow::reject)), Errc::queue_conflict);

  const auto& o = broker().find("jobs")->options();
  EXPECT_EQ(o.max_messages, 10u);
  EXPECT_EQ(o.max_bytes, 100u);
  EXPECT_EQ(o.overflow, Overflow::reject);
}

TEST_F(BrokerTest, ImplicitlyCreatedQueueAdoptsDeclaredOptions) {
  const PeerId p = connect();
  const PeerId c = connect();
  put(p, "jobs", "1");
  ASSERT_FALSE(broker().find("jobs")->declared());

  ASSERT_EQ(declare("jobs", options(2, 100, Overflow::reject)), Errc::ok);

  const Queue* q = broker().find("jobs");
  EXPECT_TRUE(q->declared());
  EXPECT_EQ(q->options().max_messages, 2u);
  EXPECT_EQ(q->options().overflow, Overflow::reject);
  EXPECT_EQ(q->depth(), 1u);  // messages already queued are kept
  put(p, "jobs", "2");
  EXPECT_EQ(send(p, "jobs", "3").error, Errc::queue_full);

  receive_now(c, "jobs", 10);
  EXPECT_EQ(broker().queue_count(), 1u);  // declared now, so it stays
}

// ---- declared queues whose declarer has gone ----------------------------------------------

TEST_F(BrokerTest, DeclaredQueueStaysWhileItsDeclarerIsConnected) {
  const PeerId d = connect();
  ASSERT_EQ(declare_by(d, "jobs"), Errc::ok);
  EXPECT_FALSE(broker().next_deadline().has_value());
  advance(24h);
  broker().expire(now_);
  ASSERT_NE(broker().find("jobs"), nullptr);
  EXPECT_TRUE(broker().find("jobs")->declared());
}

TEST_F(BrokerTest, EmptyDeclaredQueueGoesAfterTheGraceOnceItsDeclarerLeft) {
  limits_.declared_queue_grace_ms = 1000;
  const PeerId d = connect(1000);
  ASSERT_EQ(declare_by(d, "jobs"), Errc::ok);
  broker().disconnect(d, now_);
  EXPECT_EQ(broker().next_deadline(), now_ + 1000ms);
  advance(999ms);
  broker().expire(now_);
  ASSERT_NE(broker().find("jobs"), nullptr);
  EXPECT_TRUE(broker().find("jobs")->declared());
  EXPECT_EQ(usage_of(1000).queues, 1u);  // charged until it goes
  advance(1ms);
  broker().expire(now_);
  EXPECT_EQ(broker().find("jobs"), nullptr);
  EXPECT_EQ(broker().accounting().find(1000), nullptr);
  EXPECT_FALSE(broker().next_deadline().has_value());
}

TEST_F(BrokerTest, WithNoGraceADeclaredQueueGoesWithItsDeclarer) {
  limits_.declared_queue_grace_ms = 0;
  const PeerId d = connect();
  ASSERT_EQ(declare_by(d, "jobs"), Errc::ok);
  ASSERT_EQ(declare_by(d, "busy"), Errc::ok);
  put(d, "busy", "1");
  broker().disconnect(d, now_);
  EXPECT_EQ(broker().find("jobs"), nullptr);
  ASSERT_NE(broker().find("busy"), nullptr);  // lives until drained
  EXPECT_FALSE(broker().find("busy")->declared());
  const PeerId c = connect();
  receive_now(c, "busy");
  EXPECT_EQ(broker().queue_count(), 0u);
}

TEST_F(BrokerTest, QueueInUseAtTheEndOfTheGraceGoesOnceIdle) {
  limits_.declared_queue_grace_ms = 1000;
  const PeerId d = connect();
  const PeerId p = connect();
  const PeerId c = connect();
  ASSERT_EQ(declare_by(d, "held"), Errc::ok);
  ASSERT_EQ(declare_by(d, "waited"), Errc::ok);
  ASSERT_EQ(declare_by(d, "used"), Errc::ok);
  broker().disconnect(d, now_);
  put(p, "held", "1");   // a message is still queued when the grace ends
  receive(c, "waited");  // a receive still waits
  put(p, "used", "1");   // used and drained within the grace: nothing keeps it
  receive_now(c, "used");
  advance(1s);
  broker().expire(now_);
  EXPECT_EQ(broker().find("used"), nullptr);
  ASSERT_NE(broker().find("held"), nullptr);
  ASSERT_NE(broker().find("waited"), nullptr);
  EXPECT_FALSE(broker().find("held")->declared());

  receive_now(c, "held");
  EXPECT_EQ(broker().find("held"), nullptr);
  put(p, "waited", "1");  // served to the waiter: idle now
  EXPECT_EQ(broker().find("waited"), nullptr);
  EXPECT_EQ(broker().queue_count(), 0u);
}

TEST_F(BrokerTest, RedeclaringDuringTheGraceKeepsTheQueueForTheNewDeclarer) {
  limits_.declared_queue_grace_ms = 1000;
  const PeerId first = connect(1000);
  const PeerId second = connect(2000);
  ASSERT_EQ(declare_by(first, "jobs", options(5, 100, Overflow::reject)), Errc::ok);
  broker().disconnect(first, now_);
  advance(500ms);
  std::string text;  // the declaration still holds during the grace
  EXPECT_EQ(declare_by(second, "jobs", options(6, 100, Overflow::reject), &text),
            Errc::queue_conflict);
  ASSERT_EQ(declare_by(second, "jobs", options(5, 100, Overflow::reject)), Errc::ok);
  EXPECT_FALSE(broker().next_deadline().has_value());
  EXPECT_EQ(usage_of(2000).queues, 1u);
  EXPECT_EQ(broker().accounting().find(1000), nullptr);
  advance(1h);
  broker().expire(now_);
  ASSERT_NE(broker().find("jobs"), nullptr);

  broker().disconnect(second, now_);  // a new grace from this disconnect
  advance(999ms);
  broker().expire(now_);
  EXPECT_NE(broker().find("jobs"), nullptr);
  advance(1ms);
  broker().expire(now_);
  EXPECT_EQ(broker().find("jobs"), nullptr);
}

TEST_F(BrokerTest, ConfiguredQueueIsNeverCollected) {
  limits_.declared_queue_grace_ms = 10;
  ASSERT_EQ(declare("cfg", QueueOptions{}), Errc::ok);
  const PeerId d = connect();
  ASSERT_EQ(declare_by(d, "cfg"), Errc::ok);
  // A client's queue that the configuration declares is the configuration's from then on.
  ASSERT_EQ(declare_by(d, "taken"), Errc::ok);
  ASSERT_EQ(declare("taken", QueueOptions{}), Errc::ok);
  broker().disconnect(d, now_);
  EXPECT_FALSE(broker().next_deadline().has_value());
  advance(24h);
  broker().expire(now_);
  EXPECT_NE(broker().find("cfg"), nullptr);
  EXPECT_NE(broker().find("taken"), nullptr);
}

TEST_F(BrokerTest, QueueDroppedFromTheConfigurationGoesAfterTheGrace) {
  limits_.declared_queue_grace_ms = 1000;
  ASSERT_EQ(declare("cfg", QueueOptions{}), Errc::ok);
  ASSERT_EQ(declare("busy", QueueOptions{}), Errc::ok);
  const PeerId p = connect();
  put(p, "busy", "1");
  EXPECT_FALSE(broker().release_configured("nope", now_));
  put(p, "implicit", "1");
  EXPECT_FALSE(broker().release_configured("implicit", now_));
  EXPECT_TRUE(broker().release_configured("cfg", now_));
  EXPECT_TRUE(broker().release_configured("busy", now_));
  EXPECT_FALSE(broker().release_configured("cfg", now_));  // once only
  advance(1s);
  broker().expire(now_);
  EXPECT_EQ(broker().find("cfg"), nullptr);
  ASSERT_NE(broker().find("busy"), nullptr);
  receive_now(p, "busy");
  EXPECT_EQ(broker().find("busy"), nullptr);
}

TEST_F(BrokerTest, DeletingAQueueInItsGraceEndsTheGrace) {
  limits_.declared_queue_grace_ms = 1000;
  const PeerId d = connect();
  ASSERT_EQ(declare_by(d, "jobs"), Errc::ok);
  broker().disconnect(d, now_);
  ASSERT_TRUE(broker().remove("jobs").has_value());
  EXPECT_FALSE(broker().next_deadline().has_value());
  // The collected queue is made again (from the stash) under the same key, in use.
  const PeerId c = connect();
  receive(c, "jobs");
  advance(1s);
  broker().expire(now_);
  ASSERT_NE(broker().find("jobs"), nullptr);
  EXPECT_TRUE(failures_to(c).empty());
}

TEST_F(BrokerTest, DeclarerLeavingAfterItsQueueWasDeletedLeavesNothingBehind) {
  const PeerId d = connect(1000);
  ASSERT_EQ(declare_by(d, "jobs"), Errc::ok);
  ASSERT_TRUE(broker().remove("jobs").has_value());
  const PeerId other = connect(2000);
  put(other, "reused", "1");  // may take the deleted queue's node
  broker().disconnect(d, now_);
  EXPECT_FALSE(broker().next_deadline().has_value());
  EXPECT_EQ(depth("reused"), 1u);
  EXPECT_EQ(broker().accounting().find(1000), nullptr);
}

}  // namespace
}  // namespace qbus::broker
