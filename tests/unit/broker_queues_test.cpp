// Unit tests of the broker core's queue registry: order and batches, competing consumers
// and waiters, receive timeouts, overflow policies, disconnects and operator actions.
// Time is a value the tests pass in.
#include <gtest/gtest.h>

#include <optional>
#include <set>
#include <string>
#include <vector>

#include "broker_fixture.hpp"

namespace qbus::broker {
namespace {

using namespace std::chrono_literals;

using namespace fakes;  // the fixture, the recording sink and their helpers

// ---- ordering and batches ---------------------------------------------------------------

TEST_F(BrokerTest, MessagesOnOneQueueAreReceivedInSendOrder) {
  const PeerId p = connect();
  const PeerId c = connect();
  put(p, "jobs", "a");
  put(p, "jobs", "b");
  put(p, "jobs", "c");
  EXPECT_EQ(depth("jobs"), 3u);

  for (int i = 0; i < 3; ++i)
    receive_now(c, "jobs");

  EXPECT_EQ(payloads_to(c), (std::vector<std::string>{"a", "b", "c"}));
  for (const auto& d : sink_.deliveries) {
    EXPECT_TRUE(d.last);
    EXPECT_EQ(d.key, "jobs");
  }
  EXPECT_TRUE(sink_.failures.empty());
}

TEST_F(BrokerTest, QueuesKeepSeparateOrders) {
  const PeerId p = connect();
  const PeerId c = connect();
  put(p, "x", "x1");
  put(p, "y", "y1");
  put(p, "x", "x2");
  put(p, "y", "y2");

  receive_now(c, "y", 10);
  receive_now(c, "x", 10);

  EXPECT_EQ(all_payloads(), (std::vector<std::string>{"y1", "y2", "x1", "x2"}));
}

TEST_F(BrokerTest, BatchReceiveReturnsMessagesInOrderAndFlagsOnlyTheLast) {
  const PeerId p = connect();
  const PeerId c = connect();
  for (const char* m : {"1", "2", "3", "4", "5"})
    put(p, "jobs", m);

  const auto corr = receive_now(c, "jobs", 3);

  ASSERT_EQ(sink_.deliveries.size(), 3u);
  EXPECT_EQ(all_payloads(), (std::vector<std::string>{"1", "2", "3"}));
  EXPECT_FALSE(sink_.deliveries[0].last);
  EXPECT_FALSE(sink_.deliveries[1].last);
  EXPECT_TRUE(sink_.deliveries[2].last);
  for (const auto& d : sink_.deliveries) {
    EXPECT_EQ(d.correlation, corr);
    EXPECT_EQ(d.to, c);
  }
  EXPECT_EQ(depth("jobs"), 2u);
}

TEST_F(BrokerTest, BatchStopsAtTheEndOfTheQueueAndFlagsLast) {
  const PeerId p = connect();
  const PeerId c = connect();
  put(p, "jobs", "1");
  put(p, "jobs", "2");

  receive_now(c, "jobs", 10);

  ASSERT_EQ(sink_.deliveries.size(), 2u);
  EXPECT_FALSE(sink_.deliveries[0].last);
  EXPECT_TRUE(sink_.deliveries[1].last);
  EXPECT_TRUE(sink_.failures.empty());
}

TEST_F(BrokerTest, ReceiveOfABackedUpConnectionIsNotServedAndWithNoTimeoutFails) {
  const PeerId p = connect();
  const PeerId c = connect();
  for (const char* m : {"1", "2", "3", "4"})
    put(p, "jobs", m);
  sink_.set_wants_more(c, false);

  receive_now(c, "jobs", 4);

  EXPECT_TRUE(sink_.deliveries.empty());
  ASSERT_EQ(failures_to(c).size(), 1u);
  EXPECT_EQ(failures_to(c)[0].code, Errc::timeout);
  EXPECT_EQ(depth("jobs"), 4u);
}

TEST_F(BrokerTest, ReceiveOfABackedUpConnectionWaitsAndIsServedWhenItsOutputIsRead) {
  const PeerId p = connect();
  const PeerId c = connect();
  for (const char* m : {"1", "2", "3", "4"})
    put(p, "jobs", m);
  sink_.set_wants_more(c, false);

  receive(c, "jobs", 3);
  EXPECT_TRUE(sink_.deliveries.empty());
  EXPECT_EQ(depth("jobs"), 4u);

  sink_.set_wants_more(c, true);
  broker().output_ready(c, now_);

  EXPECT_EQ(payloads_to(c), (std::vector<std::string>{"1", "2", "3"}));
  EXPECT_EQ(depth("jobs"), 1u);
}

TEST_F(BrokerTest, AMessageForAWaiterThatDoesNotReadIsQueuedAndChargedToItsSender) {
  const PeerId p = connect(1000);
  const PeerId slow = connect(2000);
  receive(slow, "jobs");
  sink_.set_wants_more(slow, false);

  put(p, "jobs", "kept");

  EXPECT_TRUE(sink_.deliveries.empty());
  EXPECT_EQ(depth("jobs"), 1u);
  EXPECT_EQ(usage_of(1000).queued_bytes, 4u);

  sink_.set_wants_more(slow, true);
  broker().output_ready(slow, now_);
  EXPECT_EQ(payloads_to(slow), (std::vector<std::string>{"kept"}));
  EXPECT_EQ(depth("jobs"), 0u);
  EXPECT_EQ(usage_of(1000).queued_bytes, 0u);
}

TEST_F(BrokerTest, HandOverSkipsAWaiterThatDoesNotReadForOneThatDoes) {
  const PeerId p = connect();
  const PeerId slow = connect();
  const PeerId fast = connect();
  receive(slow, "jobs");
  receive(fast, "jobs");
  sink_.set_wants_more(slow, false);

  put(p, "jobs", "a");

  EXPECT_EQ(payloads_to(fast), (std::vector<std::string>{"a"}));
  EXPECT_TRUE(payloads_to(slow).empty());
}

TEST_F(BrokerTest, WhileMessagesAreQueuedANewOneQueuesBehindThemEvenWithAReadyWaiter) {
  const PeerId p = connect();
  const PeerId slow = connect();
  receive(slow, "jobs");
  sink_.set_wants_more(slow, false);
  put(p, "jobs", "first");
  const PeerId fast = connect();
  receive(fast, "jobs");  // served from the queue at once: FIFO
  put(p, "jobs", "second");

  EXPECT_EQ(payloads_to(fast), (std::vector<std::string>{"first"}));
  EXPECT_EQ(depth("jobs"), 1u);
  sink_.set_wants_more(slow, true);
  broker().output_ready(slow, now_);
  EXPECT_EQ(payloads_to(slow), (std::vector<std::string>{"second"}));
}

TEST_F(BrokerTest, BackedUpOutputOfOnePeerDoesNotShortenAnothersBatch) {
  const PeerId p = connect();
  const PeerId slow = connect();
  const PeerId fast = connect();
  for (const char* m : {"1", "2", "3", "4"})
    put(p, "jobs", m);
  sink_.set_wants_more(slow, false);

  receive_now(fast, "jobs", 3);

  EXPECT_EQ(payloads_to(fast), (std::vector<std::string>{"1", "2", "3"}));
}

TEST_F(BrokerTest, BatchSizeIsClampedToTheLimitAndZeroMeansOne) {
  limits_.max_receive_batch = 2;
  const PeerId p = connect();
  const PeerId c = connect();
  for (const char* m : {"1", "2", "3", "4"})
    put(p, "jobs", m);

  receive_now(c, "jobs", 100);
  EXPECT_EQ(payloads_to(c), (std::vector<std::string>{"1", "2"}));
  EXPECT_TRUE(sink_.deliveries.back().last);

  receive_now(c, "jobs", 0);
  EXPECT_EQ(payloads_to(c), (std::vector<std::string>{"1", "2", "3"}));
  EXPECT_TRUE(sink_.deliveries.back().last);
}

// ---- competing consumers and waiters -----------------------------------------------------

TEST_F(BrokerTest, EachQueuedMessageGoesToExactlyOneCompetingConsumer) {
  const PeerId p = connect();
  const PeerId c1 = connect();
  const PeerId c2 = connect();
  const PeerId c3 = connect();
  std::vector<std::string> sent;
  for (int i = 0; i < 9; ++i) {
    sent.push_back("m" + std::to_string(i));
    put(p, "jobs", sent.back());
  }

  for (int round = 0; round < 3; ++round) {
    for (PeerId c : {c1, c2, c3})
      receive_now(c, "jobs");
  }

  auto got = all_payloads();
  EXPECT_EQ(got, sent);  // served in turn, so global order is kept too
  EXPECT_EQ(std::set<std::string>(got.begin(), got.end()).size(), got.size());
  EXPECT_EQ(payloads_to(c1).size(), 3u);
  EXPECT_EQ(payloads_to(c2).size(), 3u);
  EXPECT_EQ(payloads_to(c3).size(), 3u);
  EXPECT_EQ(depth("jobs"), 0u);
}

TEST_F(BrokerTest, EachSentMessageGoesToExactlyOneWaitingConsumer) {
  const PeerId p = connect();
  const PeerId c1 = connect();
  const PeerId c2 = connect();
  const PeerId c3 = connect();
  for (PeerId c : {c1, c2, c3})
    receive(c, "jobs");

  put(p, "jobs", "a");
  put(p, "jobs", "b");
  put(p, "jobs", "c");
  put(p, "jobs", "d");  // nobody waits any more: queued

  ASSERT_EQ(sink_.deliveries.size(), 3u);
  EXPECT_EQ(payloads_to(c1).size(), 1u);
  EXPECT_EQ(payloads_to(c2).size(), 1u);
  EXPECT_EQ(payloads_to(c3).size(), 1u);
  EXPECT_EQ(depth("jobs"), 1u);
}

TEST_F(BrokerTest, WaitingReceiversAreServedInArrivalOrder) {
  const PeerId p = connect();
  const PeerId c1 = connect();
  const PeerId c2 = connect();
  const PeerId c3 = connect();
  const auto r2 = receive(c2, "jobs");
  const auto r3 = receive(c3, "jobs");
  const auto r1 = receive(c1, "jobs");

  put(p, "jobs", "first");
  put(p, "jobs", "second");
  put(p, "jobs", "third");

  ASSERT_EQ(sink_.deliveries.size(), 3u);
  EXPECT_EQ(sink_.deliveries[0].to, c2);
  EXPECT_EQ(sink_.deliveries[0].correlation, r2);
  EXPECT_EQ(sink_.deliveries[0].payload, "first");
  EXPECT_EQ(sink_.deliveries[1].to, c3);
  EXPECT_EQ(sink_.deliveries[1].correlation, r3);
  EXPECT_EQ(sink_.deliveries[1].payload, "second");
  EXPECT_EQ(sink_.deliveries[2].to, c1);
  EXPECT_EQ(sink_.deliveries[2].correlation, r1);
  EXPECT_EQ(sink_.deliveries[2].payload, "third");
}

TEST_F(BrokerTest, SendToQueueWithWaiterIsDeliveredDirectlyAndCounted) {
  ASSERT_EQ(declare("jobs", QueueOptions{}), Errc::ok);
  const PeerId p = connect();
  const PeerId c = connect();
  const auto corr = receive(c, "jobs", 5);

  put(p, "jobs", "hello");

  ASSERT_EQ(sink_.deliveries.size(), 1u);
  const auto& d = sink_.deliveries[0];
  EXPECT_EQ(d.to, c);
  EXPECT_EQ(d.correlation, corr);
  EXPECT_TRUE(d.last);  // a waiting batch receive is answered with the one message
  EXPECT_EQ(d.key, "jobs");
  EXPECT_EQ(d.payload, "hello");
  const Queue* q = broker().find("jobs");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->depth(), 0u);
  EXPECT_TRUE(q->waiters().empty());
  EXPECT_EQ(q->counters().enqueued_total, 1u);
  EXPECT_EQ(q->counters().dequeued_total, 1u);
  // Nothing was stored, so nothing is charged to the sender.
  const UidUsage* u = broker().accounting().find(1000);
  ASSERT_NE(u, nullptr);
  EXPECT_EQ(u->queued_bytes, 0u);
  EXPECT_EQ(u->queued_messages, 0u);
}

TEST_F(BrokerTest, AutoCreatedQueueDisappearsAfterDirectDelivery) {
  const PeerId p = connect();
  const PeerId c = connect();
  receive(c, "reply.1");
  ASSERT_EQ(broker().queue_count(), 1u);

  put(p, "reply.1", "answer");

  ASSERT_EQ(sink_.deliveries.size(), 1u);
  EXPECT_EQ(broker().queue_count(), 0u);
  EXPECT_EQ(broker().find("reply.1"), nullptr);
}

// ---- timeouts and deadlines --------------------------------------------------------------

TEST_F(BrokerTest, ReceiveWithZeroTimeoutOnUnknownQueueFailsWithTimeoutAndCreatesNothing) {
  const PeerId c = connect();

  const auto corr = receive_now(c, "nothing.here");

  ASSERT_EQ(sink_.failures.size(), 1u);
  EXPECT_EQ(sink_.failures[0].to, c);
  EXPECT_EQ(sink_.failures[0].correlation, corr);
  EXPECT_EQ(sink_.failures[0].code, Errc::timeout);
  EXPECT_TRUE(sink_.deliveries.empty());
  EXPECT_EQ(broker().queue_count(), 0u);
  EXPECT_EQ(broker().find("nothing.here"), nullptr);
  EXPECT_FALSE(broker().next_deadline().has_value());
}

TEST_F(BrokerTest, ReceiveWithZeroTimeoutOnEmptyDeclaredQueueFailsWithTimeout) {
  ASSERT_EQ(declare("jobs", QueueOptions{}), Errc::ok);
  const PeerId c = connect();

  receive_now(c, "jobs");

  ASSERT_EQ(sink_.failures.size(), 1u);
  EXPECT_EQ(sink_.failures[0].code, Errc::timeout);
  const Queue* q = broker().find("jobs");
  ASSERT_NE(q, nullptr);
  EXPECT_TRUE(q->waiters().empty());
}

TEST_F(BrokerTest, WaiterTimesOutExactlyAtItsDeadline) {
  const PeerId c = connect();
  const auto corr = receive(c, "jobs", 1, 100);
  ASSERT_EQ(broker().next_deadline(), t0_ + 100ms);

  broker().expire(t0_ + 99ms);
  EXPECT_TRUE(sink_.failures.empty());
  EXPECT_EQ(broker().next_deadline(), t0_ + 100ms);

  broker().expire(t0_ + 100ms);
  ASSERT_EQ(sink_.failures.size(), 1u);
  EXPECT_EQ(sink_.failures[0].to, c);
  EXPECT_EQ(sink_.failures[0].correlation, corr);
  EXPECT_EQ(sink_.failures[0].code, Errc::timeout);
  EXPECT_FALSE(broker().next_deadline().has_value());
  EXPECT_EQ(broker().queue_count(), 0u);  // the auto-created queue went with its waiter

  broker().expire(t0_ + 1h);
  EXPECT_EQ(sink_.failures.size(), 1u);
}

TEST_F(BrokerTest, ExpireAfterTheDeadlineFailsEveryDueWaiterAndKeepsTheRest) {
  const PeerId c = connect();
  const auto late = receive(c, "a", 1, 300);
  const auto early = receive(c, "b", 1, 100);
  const auto middle = receive(c, "a", 1, 200);

  EXPECT_EQ(broker().next_deadline(), t0_ + 100ms);

  broker().expire(t0_ + 250ms);
  ASSERT_EQ(sink_.failures.size(), 2u);
  EXPECT_EQ(sink_.failures[0].correlation, early);
  EXPECT_EQ(sink_.failures[1].correlation, middle);
  EXPECT_EQ(broker().next_deadline(), t0_ + 300ms);

  const PeerId p = connect();
  put(p, "a", "still waiting");
  ASSERT_EQ(sink_.deliveries.size(), 1u);
  EXPECT_EQ(sink_.deliveries[0].correlation, late);
  EXPECT_FALSE(broker().next_deadline().has_value());
}

TEST_F(BrokerTest, NextDeadlineReportsTheEarliestAcrossQueues) {
  const PeerId c = connect();
  advance(5ms);
  receive(c, "a", 1, 300);
  receive(c, "b", 1, 50);
  receive(c, "c", 1, -1);

  EXPECT_EQ(broker().next_deadline(), t0_ + 55ms);
}

TEST_F(BrokerTest, ServedWaiterNoLongerHasADeadline) {
  const PeerId p = connect();
  const PeerId c = connect();
  receive(c, "jobs", 1, 100);

  put(p, "jobs", "in time");

  EXPECT_FALSE(broker().next_deadline().has_value());
  broker().expire(t0_ + 1s);
  EXPECT_TRUE(sink_.failures.empty());
}

TEST_F(BrokerTest, ReceivesWaitingForeverNeverExpire) {
  const PeerId p = connect();
  const PeerId c = connect();
  const auto corr = receive(c, "jobs", 1, -1);

  EXPECT_FALSE(broker().next_deadline().has_value());
  broker().expire(t0_ + 24h * 365);
  EXPECT_TRUE(sink_.failures.empty());

  put(p, "jobs", "eventually");
  ASSERT_EQ(sink_.deliveries.size(), 1u);
  EXPECT_EQ(sink_.deliveries[0].correlation, corr);
}

// ---- overflow policies -------------------------------------------------------------------

TEST_F(BrokerTest, RejectOverflowFailsWithQueueFullAndCountsIt) {
  ASSERT_EQ(declare("jobs", options(2, 1000, Overflow::reject)), Errc::ok);
  const PeerId p = connect();
  const PeerId c = connect();
  put(p, "jobs", "1");
  put(p, "jobs", "2");

  const auto out = send(p, "jobs", "3");

  EXPECT_EQ(out.result, SendResult::rejected);
  EXPECT_EQ(out.error, Errc::queue_full);
  EXPECT_NE(out.text.find("jobs"), std::string::npos) << out.text;
  const Queue* q = broker().find("jobs");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->depth(), 2u);
  EXPECT_EQ(q->counters().rejected_total, 1u);
  EXPECT_EQ(q->counters().enqueued_total, 2u);
  receive_now(c, "jobs", 10);
  EXPECT_EQ(payloads_to(c), (std::vector<std::string>{"1", "2"}));
}

TEST_F(BrokerTest, RejectOverflowAlsoAppliesToTheByteLimit) {
  ASSERT_EQ(declare("jobs", options(100, 8, Overflow::reject)), Errc::ok);
  const PeerId p = connect();
  put(p, "jobs", "12345");

  const auto out = send(p, "jobs", "1234");

  EXPECT_EQ(out.error, Errc::queue_full);
  EXPECT_EQ(broker().find("jobs")->bytes(), 5u);
}

TEST_F(BrokerTest, DropOldestOverflowKeepsTheNewestMessages) {
  ASSERT_EQ(declare("jobs", options(3, 1000, Overflow::drop_oldest)), Errc::ok);
  const PeerId p = connect();
  const PeerId c = connect();
  for (const char* m : {"1", "2", "3", "4", "5"})
    put(p, "jobs", m);

  const Queue* q = broker().find("jobs");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->depth(), 3u);
  EXPECT_EQ(q->counters().dropped_total, 2u);
  EXPECT_EQ(q->counters().rejected_total, 0u);
  EXPECT_EQ(broker().accounting().find(1000)->queued_messages, 3u);
  EXPECT_EQ(broker().accounting().find(1000)->queued_bytes, 3u);

  receive_now(c, "jobs", 10);
  EXPECT_EQ(payloads_to(c), (std::vector<std::string>{"3", "4", "5"}));
}

TEST_F(BrokerTest, DropOldestOverflowAlsoEnforcesTheByteLimit) {
  ASSERT_EQ(declare("jobs", options(100, 10, Overflow::drop_oldest)), Errc::ok);
  const PeerId p = connect();
  const PeerId c = connect();
  put(p, "jobs", "aaaa");
  put(p, "jobs", "bbbb");
  put(p, "jobs", "cccccc");  // 14 bytes would not fit: "aaaa" goes

  const Queue* q = broker().find("jobs");
  EXPECT_EQ(q->bytes(), 10u);
  EXPECT_EQ(q->depth(), 2u);
  EXPECT_EQ(q->counters().dropped_total, 1u);

  put(p, "jobs", "dddddddddd");  // exactly max_bytes: everything older goes
  EXPECT_EQ(q->depth(), 1u);
  EXPECT_EQ(q->counters().dropped_total, 3u);

  receive_now(c, "jobs", 10);
  EXPECT_EQ(payloads_to(c), (std::vector<std::string>{"dddddddddd"}));
}

TEST_F(BrokerTest, BlockOverflowBlocksTheProducerUntilAReceiveFreesSpace) {
  ASSERT_EQ(declare("jobs", options(1, 1000, Overflow::block)), Errc::ok);
  const PeerId p = connect();
  const PeerId other = connect();
  const PeerId c = connect();
  put(p, "jobs", "1");

  const auto out = send(p, "jobs", "2");
  EXPECT_EQ(out.result, SendResult::blocked);
  EXPECT_EQ(out.error, Errc::ok);
  EXPECT_EQ(depth("jobs"), 1u);  // the blocked message was not stored
  EXPECT_EQ(broker().totals().messages_in, 1u);
  EXPECT_EQ(broker().find("jobs")->counters().rejected_total, 0u);

  // Nothing that frees no space resumes the producer.
  put(other, "elsewhere", "x");
  broker().expire(t0_ + 1h);
  receive_now(c, "empty.queue");
  EXPECT_TRUE(sink_.resumes.empty());

  receive_now(c, "jobs");
  EXPECT_EQ(sink_.resumes, std::vector<PeerId>{p});

  put(p, "jobs", "2");  // the retry now fits
  receive_now(c, "jobs");
  EXPECT_EQ(payloads_to(c), (std::vector<std::string>{"1", "2"}));
  EXPECT_EQ(sink_.resumes.size(), 1u);  // nobody was blocked the second time
}

TEST_F(BrokerTest, EveryBlockedProducerIsResumedWhenSpaceFrees) {
  ASSERT_EQ(declare("jobs", options(1, 1000, Overflow::block)), Errc::ok);
  const PeerId p1 = connect();
  const PeerId p2 = connect();
  const PeerId c = connect();
  put(p1, "jobs", "1");
  EXPECT_EQ(send(p1, "jobs", "2").result, SendResult::blocked);
  EXPECT_EQ(send(p2, "jobs", "3").result, SendResult::blocked);
  EXPECT_TRUE(sink_.resumes.empty());

  receive_now(c, "jobs");

  EXPECT_EQ(sink_.resumes, (std::vector<PeerId>{p1, p2}));
}

TEST_F(BrokerTest, PurgeResumesBlockedProducers) {
  ASSERT_EQ(declare("jobs", options(1, 1000, Overflow::block)), Errc::ok);
  const PeerId p = connect();
  put(p, "jobs", "1");
  ASSERT_EQ(send(p, "jobs", "2").result, SendResult::blocked);

  EXPECT_EQ(broker().purge("jobs"), 1u);

  EXPECT_EQ(sink_.resumes, std::vector<PeerId>{p});
}

TEST_F(BrokerTest, DeclaringLooserLimitsOnAnImplicitQueueResumesBlockedProducers) {
  limits_.queue_defaults = options(1, 1000, Overflow::block);
  const PeerId p = connect();
  put(p, "jobs", "1");
  ASSERT_EQ(send(p, "jobs", "2").result, SendResult::blocked);

  ASSERT_EQ(declare("jobs", options(10, 1000, Overflow::block)), Errc::ok);

  EXPECT_EQ(sink_.resumes, std::vector<PeerId>{p});
  put(p, "jobs", "2");
  EXPECT_EQ(depth("jobs"), 2u);
}

// ---- disconnect --------------------------------------------------------------------------

TEST_F(BrokerTest, DisconnectedReceiverIsSkippedForTheNextWaiter) {
  const PeerId p = connect();
  const PeerId gone = connect();
  const PeerId stays = connect();
  receive(gone, "jobs", 1, 500);
  const auto corr = receive(stays, "jobs");

  broker().disconnect(gone, now_);
  EXPECT_EQ(broker().peer_count(), 2u);
  EXPECT_FALSE(broker().next_deadline().has_value());

  put(p, "jobs", "m");
  ASSERT_EQ(sink_.deliveries.size(), 1u);
  EXPECT_EQ(sink_.deliveries[0].to, stays);
  EXPECT_EQ(sink_.deliveries[0].correlation, corr);
  broker().expire(t0_ + 1h);
  EXPECT_TRUE(sink_.failures.empty());
}

TEST_F(BrokerTest, SendAfterTheOnlyWaiterDisconnectedIsQueued) {
  const PeerId p = connect();
  const PeerId gone = connect();
  receive(gone, "jobs");
  receive(gone, "jobs");

  broker().disconnect(gone, now_);
  EXPECT_EQ(broker().queue_count(), 0u);  // nothing refers to the auto-created queue any more

  put(p, "jobs", "m");
  EXPECT_TRUE(sink_.deliveries.empty());
  EXPECT_EQ(depth("jobs"), 1u);
}

TEST_F(BrokerTest, DisconnectedBlockedProducerIsNotResumed) {
  ASSERT_EQ(declare("jobs", options(1, 1000, Overflow::block)), Errc::ok);
  const PeerId p = connect();
  const PeerId gone = connect();
  const PeerId c = connect();
  put(p, "jobs", "1");
  ASSERT_EQ(send(gone, "jobs", "2").result, SendResult::blocked);
  ASSERT_EQ(send(p, "jobs", "3").result, SendResult::blocked);

  broker().disconnect(gone, now_);

  receive_now(c, "jobs");
  EXPECT_EQ(sink_.resumes, std::vector<PeerId>{p});
}

TEST_F(BrokerTest, AutoCreatedQueueGoesWhenItsOnlyBlockedProducerDisconnects) {
  limits_.queue_defaults = options(1, 1000, Overflow::block);
  const PeerId p = connect();
  const PeerId c = connect();
  put(p, "jobs", "1");
  ASSERT_EQ(send(p, "jobs", "2").result, SendResult::blocked);

  broker().disconnect(p, now_);
  EXPECT_EQ(broker().queue_count(), 1u);  // its message is still queued
  receive_now(c, "jobs");

  EXPECT_TRUE(sink_.resumes.empty());
  EXPECT_EQ(broker().queue_count(), 0u);
}

TEST_F(BrokerTest, MessagesOfADisconnectedSenderAreStillDelivered) {
  const PeerId p = connect(1000);
  const PeerId c = connect(2000);
  put(p, "jobs", "orphan");
  broker().disconnect(p, now_);
  EXPECT_EQ(broker().accounting().find(1000)->connections, 0u);
  EXPECT_EQ(broker().accounting().find(1000)->queued_bytes, 6u);

  receive_now(c, "jobs");

  EXPECT_EQ(payloads_to(c), std::vector<std::string>{"orphan"});
  EXPECT_EQ(broker().accounting().find(1000), nullptr);
}

// ---- operator actions --------------------------------------------------------------------

TEST_F(BrokerTest, PurgeDropsQueuedMessagesAndReturnsHowMany) {
  ASSERT_EQ(declare("jobs", QueueOptions{}), Errc::ok);
  const PeerId p = connect();
  for (const char* m : {"1", "2", "3"})
    put(p, "jobs", m);

  EXPECT_EQ(broker().purge("jobs"), std::optional<std::size_t>(3));

  const Queue* q = broker().find("jobs");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->depth(), 0u);
  EXPECT_EQ(q->bytes(), 0u);
  EXPECT_EQ(q->counters().dropped_total, 3u);
  EXPECT_EQ(broker().accounting().find(1000)->queued_bytes, 0u);
  EXPECT_EQ(broker().purge("jobs"), std::optional<std::size_t>(0));
}

TEST_F(BrokerTest, PurgeOfAnUnknownQueueReturnsNothing) {
  EXPECT_FALSE(broker().purge("nope").has_value());
  EXPECT_FALSE(broker().remove("nope").has_value());
  EXPECT_EQ(broker().queue_count(), 0u);
}

TEST_F(BrokerTest, PurgeKeepsWaitersAndForgetsAnEmptiedAutoCreatedQueue) {
  const PeerId p = connect();
  const PeerId c = connect();
  put(p, "auto", "1");
  ASSERT_EQ(broker().purge("auto"), std::optional<std::size_t>(1));
  EXPECT_EQ(broker().find("auto"), nullptr);

  ASSERT_EQ(declare("jobs", QueueOptions{}), Errc::ok);
  const auto corr = receive(c, "jobs");
  EXPECT_EQ(broker().purge("jobs"), std::optional<std::size_t>(0));
  EXPECT_TRUE(sink_.failures.empty());
  put(p, "jobs", "after purge");
  ASSERT_EQ(sink_.deliveries.size(), 1u);
  EXPECT_EQ(sink_.deliveries[0].correlation, corr);
}

TEST_F(BrokerTest, RemoveFailsWaitersWithQueueDeletedAndForgetsTheQueue) {
  ASSERT_EQ(declare("jobs", options(5, 1000, Overflow::reject)), Errc::ok);
  const PeerId p = connect();
  const PeerId c1 = connect();
  const PeerId c2 = connect();
  const auto r1 = receive(c1, "jobs", 1, 100);
  const auto r2 = receive(c2, "jobs");

  EXPECT_EQ(broker().remove("jobs"), std::optional<std::size_t>(0));

  ASSERT_EQ(sink_.failures.size(), 2u);
  EXPECT_EQ(sink_.failures[0].to, c1);
  EXPECT_EQ(sink_.failures[0].correlation, r1);
  EXPECT_EQ(sink_.failures[0].code, Errc::queue_deleted);
  EXPECT_EQ(sink_.failures[0].text, "queue 'jobs' was deleted");
  EXPECT_EQ(sink_.failures[1].to, c2);
  EXPECT_EQ(sink_.failures[1].correlation, r2);
  EXPECT_EQ(sink_.failures[1].code, Errc::queue_deleted);
  EXPECT_EQ(broker().find("jobs"), nullptr);
  EXPECT_EQ(broker().queue_count(), 0u);
  EXPECT_FALSE(broker().next_deadline().has_value());

  // A later send starts over with an implicit queue on the defaults.
  put(p, "jobs", "new");
  const Queue* q = broker().find("jobs");
  ASSERT_NE(q, nullptr);
  EXPECT_FALSE(q->declared());
  EXPECT_EQ(q->options().max_messages, limits_.queue_defaults.max_messages);
  EXPECT_TRUE(sink_.deliveries.empty());
}

TEST_F(BrokerTest, RemoveDropsQueuedMessagesAndReleasesTheirQuota) {
  const PeerId p = connect();
  put(p, "jobs", "12");
  put(p, "jobs", "345");

  EXPECT_EQ(broker().remove("jobs"), std::optional<std::size_t>(2));

  EXPECT_EQ(broker().queue_count(), 0u);
  EXPECT_EQ(broker().accounting().find(1000)->queued_bytes, 0u);
  EXPECT_EQ(broker().accounting().find(1000)->queued_messages, 0u);
}

TEST_F(BrokerTest, FailAllWaitersAnswersEveryWaitingReceive) {
  ASSERT_EQ(declare("declared", QueueOptions{}), Errc::ok);
  const PeerId c1 = connect();
  const PeerId c2 = connect();
  receive(c1, "a", 1, 100);
  receive(c2, "a");
  receive(c2, "declared", 3, -1);

  broker().fail_all_waiters(Errc::shutting_down, "the broker is stopping");

  ASSERT_EQ(sink_.failures.size(), 3u);
  for (const auto& f : sink_.failures) {
    EXPECT_EQ(f.code, Errc::shutting_down);
    EXPECT_EQ(f.text, "the broker is stopping");
  }
  EXPECT_FALSE(broker().next_deadline().has_value());
  EXPECT_EQ(broker().find("a"), nullptr);
  ASSERT_NE(broker().find("declared"), nullptr);
  EXPECT_TRUE(broker().find("declared")->waiters().empty());
  EXPECT_EQ(broker().queue_count(), 1u);
}

}  // namespace
}  // namespace qbus::broker
