// Unit tests of time, priorities and single active consumers in the broker core
// (proto/PROTOCOL.md 17.8-17.10): a message's time to live and the queue's default, what
// happens to an expired message (dropped or dead-lettered, never delivered, even in the
// middle of a batch), delayed sends, priority levels with redelivery at the head of a
// level, and a queue that serves only its oldest subscription. Time is a value the tests
// pass in.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "broker_fixture.hpp"
#include "qbus/proto/headers.hpp"

namespace qbus::broker {
namespace {

using namespace std::chrono_literals;
using namespace fakes;

class BrokerTimeTest : public BrokerTest {
 protected:
  SendOutcome send_with(PeerId from, std::string_view key, std::string_view payload,
                        std::uint32_t ttl_ms, std::uint32_t delay_ms = 0,
                        std::uint8_t priority = 0) {
    MessageProps props;
    props.ttl_ms = ttl_ms;
    props.delay_ms = delay_ms;
    props.priority = priority;
    return broker().send(from, key, bytes_of(payload), now_, props);
  }
  void put_with(PeerId from, std::string_view key, std::string_view payload, std::uint32_t ttl_ms,
                std::uint32_t delay_ms = 0, std::uint8_t priority = 0) {
    const auto out = send_with(from, key, payload, ttl_ms, delay_ms, priority);
    EXPECT_EQ(out.result, SendResult::accepted) << out.text;
  }
  std::uint64_t subscribe(PeerId peer, std::string_view key, std::uint32_t prefetch = 1) {
    const std::uint64_t corr = next_correlation_++;
    broker().subscribe(peer, corr, key, prefetch, true, now_);
    return corr;
  }
  // Runs every deadline due by now_, as the daemon's timer does.
  void tick() { broker().expire(now_); }
};

TEST_F(BrokerTimeTest, AMessagePastItsTimeToLiveIsDroppedAtItsExpiryNeverDelivered) {
  const PeerId p = connect(1000);
  const PeerId c = connect(2000);
  ASSERT_EQ(declare("jobs", QueueOptions{}), Errc::ok);
  put_with(p, "jobs", "short", 100);
  put(p, "jobs", "keeps");
  advance(99ms);
  tick();
  EXPECT_EQ(depth("jobs"), 2u) << "not yet";
  advance(1ms);
  tick();  // the queue's expiry deadline, not a receive, drops it
  EXPECT_EQ(depth("jobs"), 1u);
  EXPECT_EQ(queue("jobs").counters().expired_total, 1u);
  EXPECT_EQ(usage_of(1000).queued_messages, 1u) << "its charge went with it";
  receive_now(c, "jobs");
  EXPECT_EQ(payloads_to(c), std::vector<std::string>{"keeps"});
}

TEST_F(BrokerTimeTest, TheQueueDefaultAppliesToMessagesThatSetNone) {
  const PeerId p = connect();
  const PeerId c = connect();
  QueueOptions o;
  o.default_ttl_ms = 50;
  ASSERT_EQ(declare("jobs", o), Errc::ok);
  put(p, "jobs", "a");
  put_with(p, "jobs", "b", 1000);  // its own TTL wins
  advance(60ms);
  receive(c, "jobs", 10);
  EXPECT_EQ(payloads_to(c), std::vector<std::string>{"b"});
  EXPECT_EQ(queue("jobs").counters().expired_total, 1u);
}

TEST_F(BrokerTimeTest, AnExpiredMessageBehindALiveOneEndsTheBatchAndIsNeverHandedOver) {
  const PeerId p = connect();
  const PeerId c = connect();
  ASSERT_EQ(declare("jobs", QueueOptions{}), Errc::ok);
  put_with(p, "jobs", "a", 1000);
  put_with(p, "jobs", "b", 10);  // expires behind a live one: not first in line yet
  put_with(p, "jobs", "c", 1000);
  advance(20ms);
  receive(c, "jobs", 10);
  ASSERT_EQ(payloads_to(c), std::vector<std::string>{"a"});
  EXPECT_TRUE(sink_.deliveries.back().last) << "the batch ends before the expired one";
  receive(c, "jobs", 10);
  EXPECT_EQ(payloads_to(c), (std::vector<std::string>{"a", "c"}));
  EXPECT_EQ(queue("jobs").counters().expired_total, 1u);
}

TEST_F(BrokerTimeTest, ExpiredMessagesGoToTheDeadLetterQueueWhenAsked) {
  const PeerId p = connect(1000);
  const PeerId c = connect(2000);
  QueueOptions o;
  o.dead_letter = "jobs.dead";
  o.dead_letter_expired = true;
  ASSERT_EQ(declare("jobs", o), Errc::ok);
  put_with(p, "jobs", "a", 10);
  advance(10ms);
  tick();
  EXPECT_EQ(depth("jobs"), 0u);
  EXPECT_EQ(depth("jobs.dead"), 1u);
  EXPECT_EQ(usage_of(1000).queued_messages, 1u) << "the dead letter stays the sender's";
  receive_now(c, "jobs.dead");
  ASSERT_EQ(payloads_to(c), std::vector<std::string>{"a"});
  EXPECT_EQ(header_value(sink_.deliveries.back().headers, "qbus-dead-reason"), "expired");
  EXPECT_EQ(header_value(sink_.deliveries.back().headers, "qbus-dead-queue"), "jobs");
  advance(1h);
  tick();
  EXPECT_EQ(queue("jobs").counters().dead_lettered_total, 1u);
}

TEST_F(BrokerTimeTest, AnExpiredRequestTellsItsRequester) {
  const PeerId requester = connect();
  QueueOptions o;
  o.default_ttl_ms = 30;
  ASSERT_EQ(declare("rpc", o), Errc::ok);
  ASSERT_EQ(broker().request(requester, 77, "rpc", bytes_of("q"), 10'000, now_).result,
            SendResult::accepted);
  advance(30ms);
  tick();
  const auto f = failures_to(requester);
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].correlation, 77u);
  EXPECT_EQ(f[0].code, Errc::timeout);
}

TEST_F(BrokerTimeTest, ADelayedSendIsNeverDeliveredEarlyAndCountsAgainstTheQueue) {
  const PeerId p = connect(1000);
  const PeerId c = connect(2000);
  QueueOptions o;
  o.max_messages = 2;
  o.overflow = Overflow::reject;
  ASSERT_EQ(declare("jobs", o), Errc::ok);
  put_with(p, "jobs", "later", 0, 200);
  put(p, "jobs", "now");
  EXPECT_EQ(send(p, "jobs", "full").error, Errc::queue_full) << "the delayed one takes room";
  EXPECT_EQ(queue("jobs").delayed(), 1u);
  receive(c, "jobs", 10, -1);
  EXPECT_EQ(payloads_to(c), std::vector<std::string>{"now"});
  receive(c, "jobs", 10, -1);  // waits
  advance(199ms);
  tick();
  EXPECT_EQ(payloads_to(c).size(), 1u) << "never early";
  advance(1ms);
  tick();
  EXPECT_EQ(payloads_to(c), (std::vector<std::string>{"now", "later"}));
  EXPECT_EQ(usage_of(1000).queued_messages, 0u);
}

TEST_F(BrokerTimeTest, ADelayedSendJoinsTheBackOfTheQueueWhenDue) {
  const PeerId p = connect();
  const PeerId c = connect();
  put_with(p, "jobs", "delayed", 0, 10);
  put(p, "jobs", "first");
  advance(10ms);
  tick();
  put(p, "jobs", "last");
  receive(c, "jobs", 10);
  EXPECT_EQ(payloads_to(c), (std::vector<std::string>{"first", "delayed", "last"}));
}

TEST_F(BrokerTimeTest, ADelayedSendWhoseTimeToLiveEndsFirstIsNeverDelivered) {
  const PeerId p = connect();
  const PeerId c = connect();
  put_with(p, "jobs", "x", 50, 100);
  receive(c, "jobs", 1, -1);
  advance(100ms);
  tick();
  EXPECT_TRUE(payloads_to(c).empty());
  EXPECT_EQ(broker().find("jobs")->counters().expired_total, 1u);
}

TEST_F(BrokerTimeTest, HigherPrioritiesGoFirstAndFifoWithinALevel) {
  const PeerId p = connect();
  const PeerId c = connect();
  QueueOptions o;
  o.priorities = 3;
  ASSERT_EQ(declare("jobs", o), Errc::ok);
  put_with(p, "jobs", "low1", 0, 0, 0);
  put_with(p, "jobs", "high1", 0, 0, 2);
  put_with(p, "jobs", "mid", 0, 0, 1);
  put_with(p, "jobs", "high2", 0, 0, 9);  // clamped to the top level
  put_with(p, "jobs", "low2", 0, 0, 0);
  receive(c, "jobs", 10);
  EXPECT_EQ(payloads_to(c), (std::vector<std::string>{"high1", "high2", "mid", "low1", "low2"}));
}

TEST_F(BrokerTimeTest, AQueueWithoutLevelsIgnoresPriority) {
  const PeerId p = connect();
  const PeerId c = connect();
  put_with(p, "jobs", "a", 0, 0, 0);
  put_with(p, "jobs", "b", 0, 0, 9);
  receive(c, "jobs", 10);
  EXPECT_EQ(payloads_to(c), (std::vector<std::string>{"a", "b"}));
}

TEST_F(BrokerTimeTest, ARedeliveredMessageGoesToTheHeadOfItsOwnLevel) {
  const PeerId p = connect();
  const PeerId c = connect();
  const PeerId d = connect();
  QueueOptions o;
  o.priorities = 2;
  ASSERT_EQ(declare("jobs", o), Errc::ok);
  put_with(p, "jobs", "low-a", 0, 0, 0);
  put_with(p, "jobs", "low-b", 0, 0, 0);
  broker().receive(c, next_correlation_++, "jobs", 1, 0, now_, true);  // takes low-a
  put_with(p, "jobs", "high", 0, 0, 1);
  ASSERT_EQ(broker().nack(c, last_tag(c), false, proto::NackAction::requeue, 0, now_).error,
            Errc::ok);
  receive(d, "jobs", 10);
  EXPECT_EQ(payloads_to(d), (std::vector<std::string>{"high", "low-a", "low-b"}));
}

TEST_F(BrokerTimeTest, ASingleActiveConsumerQueueServesOnlyItsOldestSubscription) {
  const PeerId p = connect();
  const PeerId first = connect();
  const PeerId second = connect();
  QueueOptions o;
  o.single_active_consumer = true;
  ASSERT_EQ(declare("jobs", o), Errc::ok);
  subscribe(first, "jobs", 10);
  const std::uint64_t standby = subscribe(second, "jobs", 10);
  for (const char* m : {"a", "b", "c"})
    put(p, "jobs", m);
  EXPECT_EQ(payloads_to(first), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_TRUE(payloads_to(second).empty());

  // The active one leaves holding "c" unsettled: the standby takes over, from "c" on.
  ASSERT_EQ(broker().ack(first, last_tag(first) - 1, true, now_).error, Errc::ok);
  broker().disconnect(first, now_);
  put(p, "jobs", "d");
  EXPECT_EQ(payloads_to(second), (std::vector<std::string>{"c", "d"}));
  EXPECT_EQ(sink_.deliveries.back().correlation, standby);
}

TEST_F(BrokerTimeTest, WhatALeavingActiveConsumerHeldComesBackBeforeTheQueuedMessages) {
  const PeerId p = connect();
  const PeerId first = connect();
  const PeerId second = connect();
  QueueOptions o;
  o.single_active_consumer = true;
  ASSERT_EQ(declare("jobs", o), Errc::ok);
  subscribe(first, "jobs", 1);
  subscribe(second, "jobs", 10);
  for (const char* m : {"a", "b", "c"})
    put(p, "jobs", m);
  ASSERT_EQ(payloads_to(first), std::vector<std::string>{"a"});
  broker().disconnect(first, now_);
  EXPECT_EQ(payloads_to(second), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(sink_.deliveries[1].count, 2u) << "redelivered";
}

TEST_F(BrokerTimeTest, ASingleActiveConsumerQueueRefusesPlainReceives) {
  const PeerId c = connect();
  QueueOptions o;
  o.single_active_consumer = true;
  ASSERT_EQ(declare("jobs", o), Errc::ok);
  receive(c, "jobs", 1, 1000);
  const auto f = failures_to(c);
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].code, Errc::single_active_consumer);
}

TEST_F(BrokerTimeTest, UnsubscribingTheActiveConsumerHandsOverToTheNext) {
  const PeerId p = connect();
  const PeerId first = connect();
  const PeerId second = connect();
  QueueOptions o;
  o.single_active_consumer = true;
  ASSERT_EQ(declare("jobs", o), Errc::ok);
  const std::uint64_t sub = subscribe(first, "jobs", 1);
  subscribe(second, "jobs", 1);
  put(p, "jobs", "a");
  put(p, "jobs", "b");
  EXPECT_EQ(payloads_to(first), std::vector<std::string>{"a"});
  EXPECT_TRUE(broker().unsubscribe(first, sub, now_));
  EXPECT_EQ(payloads_to(second), std::vector<std::string>{"b"});
}

TEST_F(BrokerTimeTest, TimeAndPriorityOptionsConflictLikeTheOthers) {
  QueueOptions o;
  o.priorities = 4;
  o.default_ttl_ms = 1000;
  ASSERT_EQ(declare("jobs", o), Errc::ok);
  QueueOptions other = o;
  other.priorities = 5;
  std::string text;
  EXPECT_EQ(declare("jobs", other, &text), Errc::queue_conflict);
  EXPECT_NE(text.find("priorities=4"), std::string::npos) << text;
  QueueOptions one;
  one.priorities = 1;
  EXPECT_EQ(declare("plain", QueueOptions{}), Errc::ok);
  EXPECT_EQ(declare("plain", one), Errc::ok) << "one level either way";
}

}  // namespace
}  // namespace qbus::broker
