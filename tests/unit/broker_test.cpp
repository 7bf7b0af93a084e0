// Unit tests of the I/O-free broker core: queues, waiting receivers, blocked producers,
// limits, per-uid accounting and deadlines; per-process inboxes and direct messages, parked
// sends, requests and replies. Time is a value the tests pass in.
#include "broker/broker.hpp"

#include "broker_fixture.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace qbus::broker {
namespace {

using namespace std::chrono_literals;

using fakes::bytes_of;
using fakes::Confirmation;
using fakes::Delivered;
using fakes::Failure;
using fakes::options;
using fakes::RecordingSink;

class BrokerTest : public fakes::BrokerFixture {
 protected:
  Errc try_connect(std::uint32_t uid) {
    const PeerId peer = next_peer_++;
    return broker().connect(peer, identity_for(peer, uid), now_);
  }

  // Direct messages. The correlation of a send is returned through `corr` when asked for.
  SendOutcome send_to_pid(PeerId from, std::uint32_t pid, std::string_view payload,
                          std::int32_t wait_ms = 0, bool confirm = false,
                          std::uint64_t* corr = nullptr) {
    DirectSend d;
    d.kind = proto::TargetKind::pid;
    d.target = pid;
    d.wait_ms = wait_ms;
    d.confirm = confirm;
    d.correlation = next_correlation_++;
    if (corr) *corr = d.correlation;
    return broker().send_direct(from, d, bytes_of(payload), now_);
  }
  SendOutcome send_to_client(PeerId from, std::uint64_t client_id, std::string_view payload,
                             std::int32_t wait_ms = 0) {
    DirectSend d;
    d.kind = proto::TargetKind::client_id;
    d.target = client_id;
    d.wait_ms = wait_ms;
    d.correlation = next_correlation_++;
    return broker().send_direct(from, d, bytes_of(payload), now_);
  }
  // A reply as a receiver sends it: to the requester's client id, naming the request.
  SendOutcome reply(PeerId from, std::uint64_t requester, std::uint64_t request_id,
                    std::string_view payload) {
    DirectSend d;
    d.kind = proto::TargetKind::client_id;
    d.target = requester;
    d.in_reply_to = request_id;
    d.correlation = next_correlation_++;
    return broker().send_direct(from, d, bytes_of(payload), now_);
  }
  std::uint64_t receive_direct(PeerId peer, std::uint32_t max_count = 1,
                               std::int32_t timeout_ms = -1) {
    const std::uint64_t corr = next_correlation_++;
    broker().receive_direct(peer, corr, max_count, timeout_ms, now_);
    return corr;
  }
  std::uint64_t receive_direct_now(PeerId peer, std::uint32_t max_count = 1) {
    return receive_direct(peer, max_count, 0);
  }
  SendOutcome request(PeerId from, std::uint64_t request_id, std::string_view key,
                      std::string_view payload, std::int32_t timeout_ms = -1) {
    return broker().request(from, request_id, key, bytes_of(payload), timeout_ms, now_);
  }

  std::vector<std::string> payloads_to(PeerId peer) const {
    std::vector<std::string> out;
    for (const auto& d : sink_.deliveries) {
      if (d.to == peer) out.push_back(d.payload);
    }
    return out;
  }
  std::vector<std::string> all_payloads() const {
    std::vector<std::string> out;
    for (const auto& d : sink_.deliveries)
      out.push_back(d.payload);
    return out;
  }

  std::size_t accounting_entries() {
    std::size_t n = 0;
    broker().accounting().for_each([&](std::uint32_t, const UidUsage&) { ++n; });
    return n;
  }
};

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
  broker().output_ready(c);

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
  broker().output_ready(slow);
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
  broker().output_ready(slow);
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

// ---- payload limits ----------------------------------------------------------------------

TEST_F(BrokerTest, PayloadOverTheInlineLimitIsRejectedWithoutCreatingAQueue) {
  limits_.max_payload = 8;
  const PeerId p = connect();

  const auto out = send(p, "jobs", "123456789");

  EXPECT_EQ(out.result, SendResult::rejected);
  EXPECT_EQ(out.error, Errc::payload_too_large);
  EXPECT_FALSE(out.text.empty());
  EXPECT_EQ(broker().queue_count(), 0u);
  EXPECT_EQ(broker().totals().messages_in, 0u);

  put(p, "jobs", "12345678");  // exactly the limit is fine
  EXPECT_EQ(depth("jobs"), 1u);
}

TEST_F(BrokerTest, PayloadLargerThanTheQueueCanEverHoldIsRejectedNotBlocked) {
  ASSERT_EQ(declare("small", options(10, 4, Overflow::block)), Errc::ok);
  const PeerId p = connect();

  const auto out = send(p, "small", "12345");

  EXPECT_EQ(out.result, SendResult::rejected);
  EXPECT_EQ(out.error, Errc::payload_too_large);
  const Queue* q = broker().find("small");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->counters().rejected_total, 1u);
  EXPECT_EQ(q->depth(), 0u);
  broker().purge("small");  // would resume the producer had it been left blocked
  EXPECT_TRUE(sink_.resumes.empty());
}

TEST_F(BrokerTest, PayloadTooLargeForAnAutoCreatedQueueLeavesNoQueueBehind) {
  limits_.queue_defaults = options(10, 4, Overflow::block);
  const PeerId p = connect();

  EXPECT_EQ(send(p, "jobs", "12345").error, Errc::payload_too_large);

  EXPECT_EQ(broker().queue_count(), 0u);
}

// ---- per-uid quota and connection limits -------------------------------------------------

TEST_F(BrokerTest, QueuedBytesQuotaIsSharedByAllConnectionsOfAUid) {
  limits_.uid_max_queued_bytes = 10;
  const PeerId a1 = connect(1000);
  const PeerId a2 = connect(1000);
  const PeerId b = connect(2000);
  const PeerId c = connect(3000);
  put(a1, "jobs", "123456");

  const auto out = send(a2, "other", "12345");
  EXPECT_EQ(out.result, SendResult::rejected);
  EXPECT_EQ(out.error, Errc::quota_exceeded);
  EXPECT_NE(out.text.find("1000"), std::string::npos) << out.text;
  EXPECT_EQ(broker().find("other"), nullptr);  // the rejected send left no queue

  put(a2, "jobs", "1234");  // exactly up to the quota
  EXPECT_EQ(broker().accounting().find(1000)->queued_bytes, 10u);
  put(b, "jobs", "123456");  // another uid has its own quota
  EXPECT_EQ(broker().accounting().find(2000)->queued_bytes, 6u);

  receive_now(c, "jobs");  // drains a1's 6 bytes
  EXPECT_EQ(broker().accounting().find(1000)->queued_bytes, 4u);
  put(a2, "other", "12345");
}

TEST_F(BrokerTest, QueuedMessageCountQuotaStopsAFloodOfEmptyMessages) {
  limits_.uid_max_queued_messages = 3;
  const PeerId a = connect(1000);
  const PeerId b = connect(2000);
  for (int i = 0; i < 3; ++i)
    put(a, "q" + std::to_string(i), "");
  const auto out = send(a, "q9", "");
  EXPECT_EQ(out.result, SendResult::rejected);
  EXPECT_EQ(out.error, Errc::quota_exceeded);
  EXPECT_NE(out.text.find("messages queued"), std::string::npos) << out.text;
  put(b, "q9", "");  // another uid is unaffected
  receive_now(b, "q0");
  put(a, "q9", "");  // room again
}

TEST_F(BrokerTest, QuotaRejectionIsCountedOnTheQueue) {
  limits_.uid_max_queued_bytes = 4;
  ASSERT_EQ(declare("jobs", QueueOptions{}), Errc::ok);
  const PeerId p = connect();

  EXPECT_EQ(send(p, "jobs", "12345").error, Errc::quota_exceeded);

  EXPECT_EQ(broker().find("jobs")->counters().rejected_total, 1u);
}

TEST_F(BrokerTest, ConnectionsPerUidAreLimited) {
  limits_.uid_max_connections = 2;
  const PeerId first = connect(1000);
  connect(1000);

  EXPECT_EQ(try_connect(1000), Errc::too_many_connections);
  EXPECT_EQ(broker().accounting().find(1000)->connections, 2u);
  EXPECT_EQ(try_connect(2000), Errc::ok);  // other uids are unaffected

  broker().disconnect(first, now_);
  EXPECT_EQ(try_connect(1000), Errc::ok);
  EXPECT_EQ(broker().peer_count(), 3u);
}

TEST_F(BrokerTest, TotalConnectionsAreLimited) {
  limits_.max_connections = 2;
  connect(1000);
  const PeerId second = connect(2000);

  EXPECT_EQ(try_connect(3000), Errc::too_many_connections);
  EXPECT_EQ(broker().peer_count(), 2u);
  EXPECT_EQ(broker().accounting().find(3000), nullptr);

  broker().disconnect(second, now_);
  EXPECT_EQ(try_connect(3000), Errc::ok);
}

TEST_F(BrokerTest, RejectedConnectLeavesNoAccountingEntry) {
  limits_.uid_max_connections = 0;
  EXPECT_EQ(try_connect(4242), Errc::too_many_connections);
  EXPECT_EQ(broker().accounting().find(4242), nullptr);
  EXPECT_EQ(accounting_entries(), 0u);
}

TEST_F(BrokerTest, WaitingReceivesPerConnectionAreLimited) {
  limits_.max_waiting_receives = 2;
  const PeerId p = connect();
  const PeerId c = connect();
  receive(c, "a");
  receive(c, "b", 1, 1000);

  const auto corr = receive(c, "c");

  ASSERT_EQ(sink_.failures.size(), 1u);
  EXPECT_EQ(sink_.failures[0].correlation, corr);
  EXPECT_EQ(sink_.failures[0].code, Errc::too_many_receives);
  EXPECT_EQ(broker().find("c"), nullptr);
  EXPECT_EQ(broker().queue_count(), 2u);

  // Another connection has its own allowance; a receive served at once needs none.
  const PeerId other = connect();
  receive(other, "c");
  put(p, "d", "ready");
  receive(c, "d");
  EXPECT_EQ(payloads_to(c), std::vector<std::string>{"ready"});

  put(p, "a", "frees a slot");
  receive(c, "c");
  EXPECT_EQ(sink_.failures.size(), 1u);
}

TEST_F(BrokerTest, QueueCountIsLimited) {
  limits_.max_queues = 2;
  const PeerId p = connect();
  const PeerId c = connect();
  put(p, "a", "1");
  put(p, "b", "1");

  const auto out = send(p, "c", "1");
  EXPECT_EQ(out.result, SendResult::rejected);
  EXPECT_EQ(out.error, Errc::too_many_queues);
  EXPECT_FALSE(out.text.empty());

  const auto corr = receive(c, "c");
  ASSERT_EQ(sink_.failures.size(), 1u);
  EXPECT_EQ(sink_.failures[0].correlation, corr);
  EXPECT_EQ(sink_.failures[0].code, Errc::too_many_queues);

  std::string text;
  EXPECT_EQ(declare("c", QueueOptions{}, &text), Errc::too_many_queues);
  EXPECT_FALSE(text.empty());

  put(p, "a", "2");  // existing queues still work
  EXPECT_EQ(broker().queue_count(), 2u);
}

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

// ---- per-uid queue and waiting-receive limits --------------------------------------------

TEST_F(BrokerTest, EveryWayOfCreatingAQueueIsChargedToTheCreatorsUid) {
  limits_.uid_max_queues = 4;
  const PeerId p = connect(1000);
  const PeerId other = connect(2000);
  put(p, "by.send", "1");
  receive(p, "by.receive");
  ASSERT_EQ(declare_by(p, "by.declare"), Errc::ok);
  ASSERT_EQ(request(p, 1, "by.request", "1").result, SendResult::accepted);
  EXPECT_EQ(usage_of(1000).queues, 4u);

  const auto out = send(p, "one.more", "1");
  EXPECT_EQ(out.result, SendResult::rejected);
  EXPECT_EQ(out.error, Errc::too_many_queues);
  EXPECT_NE(out.text.find("uid 1000"), std::string::npos) << out.text;
  EXPECT_NE(out.text.find("limit 4"), std::string::npos) << out.text;
  const auto corr = receive(p, "one.more");
  ASSERT_EQ(failures_to(p).size(), 1u);
  EXPECT_EQ(failures_to(p)[0].correlation, corr);
  EXPECT_EQ(failures_to(p)[0].code, Errc::too_many_queues);
  std::string text;
  EXPECT_EQ(declare_by(p, "one.more", {}, &text), Errc::too_many_queues);
  EXPECT_NE(text.find("uid 1000"), std::string::npos) << text;
  EXPECT_EQ(request(p, 2, "one.more", "1").error, Errc::too_many_queues);
  EXPECT_EQ(broker().find("one.more"), nullptr);

  // Nothing else changed: its queues still work, and another uid has its own allowance.
  put(p, "by.send", "2");
  EXPECT_EQ(depth("by.send"), 2u);
  put(other, "one.more", "1");
  EXPECT_EQ(usage_of(2000).queues, 1u);
  EXPECT_EQ(usage_of(1000).queues, 4u);
}

TEST_F(BrokerTest, QueueChargeIsGivenBackWhenTheQueueGoes) {
  limits_.uid_max_queues = 1;
  const PeerId p = connect(1000);
  const PeerId c = connect(2000);
  put(p, "a", "1");
  EXPECT_EQ(send(p, "b", "1").error, Errc::too_many_queues);
  receive_now(c, "a");  // drained: collected
  EXPECT_EQ(usage_of(1000).queues, 0u);
  put(p, "b", "1");
  ASSERT_TRUE(broker().remove("b").has_value());  // deleted by an operator
  EXPECT_EQ(usage_of(1000).queues, 0u);
  receive(p, "c", 1, 100);  // a waiting receive's queue goes with its timeout
  EXPECT_EQ(usage_of(1000).queues, 1u);
  advance(100ms);
  broker().expire(now_);
  EXPECT_EQ(usage_of(1000).queues, 0u);
  put(p, "d", "1");
  EXPECT_EQ(usage_of(1000).queues, 1u);
}

TEST_F(BrokerTest, ConfiguredQueuesAreChargedToNobody) {
  limits_.uid_max_queues = 1;
  ASSERT_EQ(declare("cfg", QueueOptions{}), Errc::ok);
  const PeerId p = connect(1000);
  ASSERT_EQ(declare_by(p, "cfg"), Errc::ok);  // re-declaring takes nothing over
  put(p, "cfg", "1");
  put(p, "mine", "1");
  EXPECT_EQ(usage_of(1000).queues, 1u);
  // A queue a client made and the configuration then declares is charged to nobody.
  const PeerId q = connect(2000);
  put(q, "adopted", "1");
  EXPECT_EQ(usage_of(2000).queues, 1u);
  ASSERT_EQ(declare("adopted", QueueOptions{}), Errc::ok);
  EXPECT_EQ(usage_of(2000).queues, 0u);
}

TEST_F(BrokerTest, RedeclaringMovesTheChargeToTheNewDeclarerWithinItsLimit) {
  limits_.uid_max_queues = 1;
  const PeerId a = connect(1000);
  const PeerId b = connect(2000);
  ASSERT_EQ(declare_by(a, "shared"), Errc::ok);
  put(b, "bs", "1");  // uid 2000 holds its one queue
  std::string text;
  EXPECT_EQ(declare_by(b, "shared", {}, &text), Errc::too_many_queues);
  EXPECT_NE(text.find("uid 2000"), std::string::npos) << text;
  EXPECT_EQ(usage_of(1000).queues, 1u);
  broker().purge("bs");
  EXPECT_EQ(usage_of(2000).queues, 0u);
  ASSERT_EQ(declare_by(b, "shared"), Errc::ok);
  EXPECT_EQ(usage_of(1000).queues, 0u);
  EXPECT_EQ(usage_of(2000).queues, 1u);
  // The former declarer leaving changes nothing: b declares it now.
  broker().disconnect(a, now_);
  advance(1h);
  broker().expire(now_);
  EXPECT_NE(broker().find("shared"), nullptr);
}

TEST_F(BrokerTest, WaitingReceivesPerUidAreLimitedOverItsConnections) {
  limits_.uid_max_waiting_receives = 3;
  const PeerId a = connect(1000);
  const PeerId b = connect(1000);
  const PeerId other = connect(2000);
  receive(a, "x");
  receive(a, "y");
  receive_direct(b);  // inbox receives count too
  const auto corr = receive(b, "z");
  ASSERT_EQ(failures_to(b).size(), 1u);
  EXPECT_EQ(failures_to(b)[0].correlation, corr);
  EXPECT_EQ(failures_to(b)[0].code, Errc::too_many_receives);
  EXPECT_NE(failures_to(b)[0].text.find("uid 1000"), std::string::npos);
  EXPECT_NE(failures_to(b)[0].text.find("limit 3"), std::string::npos);
  EXPECT_EQ(broker().find("z"), nullptr);  // its queue was not kept
  EXPECT_EQ(usage_of(1000).waiting_receives, 3u);
  EXPECT_EQ(usage_of(1000).queues, 2u);

  receive(other, "z");  // another uid has its own allowance
  EXPECT_TRUE(failures_to(other).empty());
  put(other, "x", "1");  // serves a's first receive: a slot comes free
  receive(b, "z");
  EXPECT_EQ(failures_to(b).size(), 1u);
  EXPECT_EQ(usage_of(1000).waiting_receives, 3u);
}

TEST_F(BrokerTest, WaitingReceiveCountReturnsToZeroOnEveryPath) {
  const PeerId p = connect(1000);
  const PeerId w = connect(1000);
  const auto count = [&] { return usage_of(1000).waiting_receives; };

  receive(w, "served");  // a message arrives
  put(p, "served", "1");
  EXPECT_EQ(count(), 0u);

  receive(w, "timed", 1, 10);  // the timeout runs out
  advance(10ms);
  broker().expire(now_);
  EXPECT_EQ(count(), 0u);

  receive(w, "deleted");  // an operator deletes the queue
  broker().remove("deleted");
  EXPECT_EQ(count(), 0u);

  receive(w, "stopping");  // the broker stops
  receive_direct(w);
  EXPECT_EQ(count(), 2u);
  broker().fail_all_waiters(Errc::shutting_down, "stopping");
  EXPECT_EQ(count(), 0u);

  const PeerId first = connect_process(4242, 1, 1000);  // another connection claims the inbox
  const PeerId second = connect_process(4242, 1, 1000);
  receive_direct(first);
  EXPECT_EQ(count(), 1u);
  broker().claim_inbox(second);
  EXPECT_EQ(count(), 0u);

  receive_direct(second);  // the process's inbox goes with its last connection
  receive(second, "gone");
  receive(w, "gone", 1, 1000);
  EXPECT_EQ(count(), 3u);
  broker().disconnect(first, now_);
  broker().disconnect(second, now_);
  EXPECT_EQ(count(), 1u);
  broker().disconnect(w, now_);
  broker().disconnect(p, now_);
  EXPECT_EQ(broker().accounting().find(1000), nullptr);
  EXPECT_EQ(broker().queue_count(), 0u);
  EXPECT_FALSE(broker().next_deadline().has_value());
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

// ---- identity, accounting and totals -----------------------------------------------------

TEST_F(BrokerTest, ClientIdOtherThanThePeerIdIsRefused) {
  Identity id;
  id.pid = 1;
  id.client_id = 7;
  EXPECT_EQ(broker().connect(8, id, now_), Errc::internal_error);
  EXPECT_EQ(broker().peer_count(), 0u);
}

TEST_F(BrokerTest, HandlerLeavingFailsTheRequestsItTookWithNoSuchPeer) {
  const PeerId requester = connect();
  const PeerId worker = connect();
  receive(worker, "svc", 1, -1);
  ASSERT_EQ(request(requester, 41, "svc", "job", -1).result, SendResult::accepted);
  ASSERT_EQ(sink_.deliveries.size(), 1u);
  broker().disconnect(worker, now_);
  ASSERT_EQ(sink_.failures.size(), 1u);
  EXPECT_EQ(sink_.failures[0].to, requester);
  EXPECT_EQ(sink_.failures[0].correlation, 41u);
  EXPECT_EQ(sink_.failures[0].code, Errc::no_such_peer);
}

TEST_F(BrokerTest, ReceiversSeeTheSenderIdentityGivenAtConnect) {
  Identity id;
  id.pid = 4242;
  id.uid = 1000;
  id.gid = 100;
  id.client_id = 500;  // the broker addresses peers by client id: it is their PeerId
  id.process_token = 123456;
  ASSERT_EQ(broker().connect(500, id, now_), Errc::ok);
  const PeerId c = connect(2000);

  broker().send(500, "jobs", bytes_of("queued"), now_);  // stored, then received
  receive_now(c, "jobs");
  receive(c, "jobs");
  broker().send(500, "jobs", bytes_of("direct"), now_);  // handed to a waiter

  ASSERT_EQ(sink_.deliveries.size(), 2u);
  for (const auto& d : sink_.deliveries) {
    EXPECT_EQ(d.sender.pid, 4242u);
    EXPECT_EQ(d.sender.uid, 1000u);
    EXPECT_EQ(d.sender.gid, 100u);
    EXPECT_EQ(d.sender.client_id, 500u);
    EXPECT_EQ(d.sender.process_token, 123456u);
    EXPECT_FALSE(d.sender.tcp);
    EXPECT_EQ(d.request_id, 0u);  // a plain send is no request
  }
}

TEST_F(BrokerTest, SendFromAnUnknownPeerIsAnInternalError) {
  const auto out = broker().send(99, "jobs", bytes_of("x"), now_);
  EXPECT_EQ(out.result, SendResult::rejected);
  EXPECT_EQ(out.error, Errc::internal_error);
  EXPECT_EQ(broker().queue_count(), 0u);
}

TEST_F(BrokerTest, AccountingIsEmptyAfterEverythingIsDrainedAndEveryoneLeft) {
  limits_.queue_defaults = options(2, 1000, Overflow::drop_oldest);
  ASSERT_EQ(declare("blocking", options(1, 1000, Overflow::block)), Errc::ok);
  const PeerId a1 = connect(1000);
  const PeerId a2 = connect(1000);
  const PeerId b = connect(2000);
  const PeerId c = connect(3000);
  put(a1, "jobs", "1");
  put(a2, "jobs", "22");
  put(b, "jobs", "333");  // drops "1"
  put(b, "other", "4444");
  put(a1, "blocking", "x");
  EXPECT_EQ(send(a2, "blocking", "y").result, SendResult::blocked);
  receive(c, "waiting", 1, 10);
  receive(c, "forever");
  EXPECT_EQ(accounting_entries(), 3u);

  receive_now(c, "jobs", 10);
  receive_now(c, "other");
  receive_now(c, "blocking");
  broker().expire(t0_ + 1s);
  for (PeerId p : {a1, a2, b, c})
    broker().disconnect(p, now_);

  EXPECT_EQ(accounting_entries(), 0u);
  EXPECT_EQ(broker().peer_count(), 0u);
  EXPECT_EQ(broker().queue_count(), 1u);  // only the declared one
}

TEST_F(BrokerTest, TotalsCountMessagesAndBytesInAndOut) {
  ASSERT_EQ(declare("tiny", options(1, 100, Overflow::reject)), Errc::ok);
  const PeerId p = connect();
  const PeerId c = connect();
  put(p, "jobs", "abc");  // queued
  put(p, "jobs", "de");   // queued
  receive(c, "direct");
  put(p, "direct", "fghij");                                  // handed over
  put(p, "tiny", "k");                                        // queued
  EXPECT_EQ(send(p, "tiny", "lmn").error, Errc::queue_full);  // not counted

  auto t = broker().totals();
  EXPECT_EQ(t.messages_in, 4u);
  EXPECT_EQ(t.bytes_in, 11u);
  EXPECT_EQ(t.messages_out, 1u);
  EXPECT_EQ(t.bytes_out, 5u);

  receive_now(c, "jobs", 10);
  ASSERT_TRUE(broker().purge("tiny").has_value());  // dropped, not delivered

  t = broker().totals();
  EXPECT_EQ(t.messages_in, 4u);
  EXPECT_EQ(t.bytes_in, 11u);
  EXPECT_EQ(t.messages_out, 3u);
  EXPECT_EQ(t.bytes_out, 10u);
  std::uint64_t delivered_bytes = 0;
  for (const auto& d : sink_.deliveries)
    delivered_bytes += d.payload.size();
  EXPECT_EQ(delivered_bytes, t.bytes_out);
  EXPECT_EQ(sink_.deliveries.size(), t.messages_out);
}

// ---- direct messages and inboxes ---------------------------------------------------------

TEST_F(BrokerTest, DirectSendByPidLandsInThatProcesssInboxAndReceiveDirectTakesIt) {
  const PeerId a = connect(1000);
  const PeerId b = connect(2000);
  EXPECT_EQ(broker().inbox_count(), 2u);

  const auto out = send_to_pid(a, pid_of(b), "hello");

  EXPECT_EQ(out.result, SendResult::accepted) << out.text;
  EXPECT_EQ(out.error, Errc::ok);
  EXPECT_EQ(broker().inbox_depth(b), 1u);
  EXPECT_EQ(broker().inbox_depth(a), 0u);
  EXPECT_EQ(usage_of(1000).queued_bytes, 5u);
  EXPECT_EQ(usage_of(1000).queued_messages, 1u);
  EXPECT_TRUE(sink_.deliveries.empty());

  const auto corr = receive_direct_now(b);

  ASSERT_EQ(sink_.deliveries.size(), 1u);
  const auto& d = sink_.deliveries[0];
  EXPECT_EQ(d.to, b);
  EXPECT_EQ(d.correlation, corr);
  EXPECT_TRUE(d.last);
  EXPECT_EQ(d.key, "");
  EXPECT_EQ(d.request_id, 0u);
  EXPECT_EQ(d.payload, "hello");
  EXPECT_EQ(d.sender.pid, pid_of(a));
  EXPECT_EQ(d.sender.uid, 1000u);
  EXPECT_EQ(d.sender.gid, 1001u);
  EXPECT_EQ(d.sender.client_id, a);
  EXPECT_FALSE(d.sender.tcp);
  EXPECT_EQ(broker().inbox_depth(b), 0u);
  EXPECT_EQ(usage_of(1000).queued_bytes, 0u);
  EXPECT_EQ(usage_of(1000).queued_messages, 0u);
  EXPECT_EQ(broker().queue_count(), 0u);  // an inbox is not a keyed queue
  EXPECT_TRUE(sink_.failures.empty());
}

TEST_F(BrokerTest, DirectSendToAWaitingReceiveDirectIsHandedOverAtOnce) {
  const PeerId a = connect();
  const PeerId b = connect();
  const auto corr = receive_direct(b, 5, 1000);
  EXPECT_EQ(broker().next_deadline(), t0_ + 1000ms);

  const auto out = send_to_pid(a, pid_of(b), "now");

  EXPECT_EQ(out.result, SendResult::accepted);
  ASSERT_EQ(sink_.deliveries.size(), 1u);
  EXPECT_EQ(sink_.deliveries[0].to, b);
  EXPECT_EQ(sink_.deliveries[0].correlation, corr);
  EXPECT_TRUE(sink_.deliveries[0].last);
  EXPECT_EQ(sink_.deliveries[0].key, "");
  EXPECT_EQ(sink_.deliveries[0].sender.client_id, a);
  EXPECT_EQ(broker().inbox_depth(b), 0u);
  EXPECT_FALSE(broker().next_deadline().has_value());
  EXPECT_EQ(usage_of(1000).queued_bytes, 0u);
  broker().expire(t0_ + 1h);
  EXPECT_TRUE(sink_.failures.empty());
}

TEST_F(BrokerTest, ReceiveDirectOnAnEmptyInboxTimesOutAndTheInboxStays) {
  const PeerId a = connect();
  const PeerId b = connect();

  const auto at_once = receive_direct_now(b);
  ASSERT_EQ(sink_.failures.size(), 1u);
  EXPECT_EQ(sink_.failures[0].correlation, at_once);
  EXPECT_EQ(sink_.failures[0].code, Errc::timeout);

  const auto corr = receive_direct(b, 1, 100);
  broker().expire(t0_ + 99ms);
  EXPECT_EQ(sink_.failures.size(), 1u);
  broker().expire(t0_ + 100ms);
  ASSERT_EQ(sink_.failures.size(), 2u);
  EXPECT_EQ(sink_.failures[1].to, b);
  EXPECT_EQ(sink_.failures[1].correlation, corr);
  EXPECT_EQ(sink_.failures[1].code, Errc::timeout);
  EXPECT_EQ(broker().inbox_count(), 2u);

  EXPECT_EQ(send_to_pid(a, pid_of(b), "later").result, SendResult::accepted);
  EXPECT_TRUE(sink_.deliveries.empty());
  EXPECT_EQ(broker().inbox_depth(b), 1u);
}

TEST_F(BrokerTest, BatchReceiveDirectTakesMessagesInSendOrderWithEachSender) {
  const PeerId a = connect(1000);
  const PeerId c = connect(3000);
  const PeerId b = connect(2000);
  EXPECT_EQ(send_to_pid(a, pid_of(b), "1").result, SendResult::accepted);
  EXPECT_EQ(send_to_pid(c, pid_of(b), "2").result, SendResult::accepted);
  EXPECT_EQ(send_to_pid(a, pid_of(b), "3").result, SendResult::accepted);

  receive_direct_now(b, 10);

  ASSERT_EQ(sink_.deliveries.size(), 3u);
  EXPECT_EQ(all_payloads(), (std::vector<std::string>{"1", "2", "3"}));
  EXPECT_FALSE(sink_.deliveries[0].last);
  EXPECT_FALSE(sink_.deliveries[1].last);
  EXPECT_TRUE(sink_.deliveries[2].last);
  EXPECT_EQ(sink_.deliveries[0].sender.client_id, a);
  EXPECT_EQ(sink_.deliveries[1].sender.client_id, c);
  EXPECT_EQ(sink_.deliveries[1].sender.uid, 3000u);
  EXPECT_EQ(sink_.deliveries[2].sender.client_id, a);
}

TEST_F(BrokerTest, DirectPayloadOverTheInlineLimitOrTheInboxSizeIsRejected) {
  limits_.max_payload = 8;
  limits_.inbox = options(10, 4, Overflow::block);
  const PeerId a = connect();
  const PeerId b = connect();

  auto out = send_to_pid(a, pid_of(b), "123456789");
  EXPECT_EQ(out.result, SendResult::rejected);
  EXPECT_EQ(out.error, Errc::payload_too_large);

  out = send_to_pid(a, pid_of(b), "12345");  // fits the frame, never the inbox: not blocked
  EXPECT_EQ(out.result, SendResult::rejected);
  EXPECT_EQ(out.error, Errc::payload_too_large);

  out = send_to_pid(a, 4242, "123456789", 1000);  // checked before parking too
  EXPECT_EQ(out.error, Errc::payload_too_large);
  EXPECT_FALSE(broker().next_deadline().has_value());
  EXPECT_EQ(broker().inbox_depth(b), 0u);
  EXPECT_EQ(broker().totals().messages_in, 0u);
}

TEST_F(BrokerTest, AllConnectionsOfOneProcessShareOneInboxOwnedByTheOldest) {
  const PeerId first = connect_process(777);
  const PeerId second = connect_process(777);
  const PeerId sender = connect();
  EXPECT_EQ(broker().inbox_count(), 2u);  // process 777's and the sender's

  EXPECT_EQ(send_to_pid(sender, 777, "m").result, SendResult::accepted);
  EXPECT_EQ(broker().inbox_depth(first), 1u);
  EXPECT_EQ(broker().inbox_depth(second), 1u);

  const auto denied = receive_direct_now(second);
  const auto denied_waiting = receive_direct(second, 1, 1000);
  ASSERT_EQ(sink_.failures.size(), 2u);
  EXPECT_EQ(sink_.failures[0].to, second);
  EXPECT_EQ(sink_.failures[0].correlation, denied);
  EXPECT_EQ(sink_.failures[0].code, Errc::not_inbox_owner);
  EXPECT_FALSE(sink_.failures[0].text.empty());
  EXPECT_EQ(sink_.failures[1].correlation, denied_waiting);
  EXPECT_EQ(sink_.failures[1].code, Errc::not_inbox_owner);
  EXPECT_FALSE(broker().next_deadline().has_value());  // nothing was left waiting
  EXPECT_TRUE(sink_.deliveries.empty());
  EXPECT_EQ(broker().inbox_depth(first), 1u);

  receive_direct_now(first);
  EXPECT_EQ(payloads_to(first), std::vector<std::string>{"m"});
}

TEST_F(BrokerTest, ClaimInboxMakesTheClaimerTheOwnerAndFailsTheOldOwnersWaitingReceive) {
  const PeerId first = connect_process(777);
  const PeerId second = connect_process(777);
  const PeerId sender = connect();
  const auto waiting = receive_direct(first, 1, 5000);

  broker().claim_inbox(second);

  ASSERT_EQ(sink_.failures.size(), 1u);
  EXPECT_EQ(sink_.failures[0].to, first);
  EXPECT_EQ(sink_.failures[0].correlation, waiting);
  EXPECT_EQ(sink_.failures[0].code, Errc::not_inbox_owner);
  EXPECT_FALSE(broker().next_deadline().has_value());

  EXPECT_EQ(send_to_pid(sender, 777, "after claim").result, SendResult::accepted);
  EXPECT_TRUE(sink_.deliveries.empty());  // the old owner's receive no longer waits
  EXPECT_EQ(broker().inbox_depth(second), 1u);

  const auto denied = receive_direct_now(first);
  ASSERT_EQ(sink_.failures.size(), 2u);
  EXPECT_EQ(sink_.failures[1].correlation, denied);
  EXPECT_EQ(sink_.failures[1].code, Errc::not_inbox_owner);

  receive_direct_now(second);
  EXPECT_EQ(payloads_to(second), std::vector<std::string>{"after claim"});

  broker().claim_inbox(second);  // claiming again changes nothing
  EXPECT_EQ(sink_.failures.size(), 2u);
}

TEST_F(BrokerTest, ClaimingAnInboxOneAlreadyOwnsKeepsItsWaitingReceive) {
  const PeerId owner = connect_process(777);
  connect_process(777);
  const PeerId sender = connect();
  const auto waiting = receive_direct(owner, 1, 5000);

  broker().claim_inbox(owner);

  EXPECT_TRUE(sink_.failures.empty());
  EXPECT_EQ(broker().next_deadline(), t0_ + 5000ms);
  EXPECT_EQ(send_to_pid(sender, 777, "m").result, SendResult::accepted);
  ASSERT_EQ(sink_.deliveries.size(), 1u);
  EXPECT_EQ(sink_.deliveries[0].to, owner);
  EXPECT_EQ(sink_.deliveries[0].correlation, waiting);
}

TEST_F(BrokerTest, WhenTheOwnerDisconnectsOwnershipFallsBackToTheNextOldest) {
  const PeerId a = connect_process(777);
  const PeerId b = connect_process(777);
  const PeerId c = connect_process(777);
  const PeerId sender = connect();
  EXPECT_EQ(send_to_pid(sender, 777, "kept").result, SendResult::accepted);

  broker().disconnect(a, now_);

  EXPECT_EQ(broker().inbox_count(), 2u);
  EXPECT_EQ(broker().inbox_depth(b), 1u);  // the messages stay with the process
  const auto denied = receive_direct_now(c);
  ASSERT_EQ(sink_.failures.size(), 1u);
  EXPECT_EQ(sink_.failures[0].correlation, denied);
  EXPECT_EQ(sink_.failures[0].code, Errc::not_inbox_owner);
  receive_direct_now(b);
  EXPECT_EQ(payloads_to(b), std::vector<std::string>{"kept"});
}

TEST_F(BrokerTest, WhenTheClaimerDisconnectsOwnershipReturnsToTheOldest) {
  const PeerId a = connect_process(777);
  const PeerId b = connect_process(777);
  const PeerId c = connect_process(777);
  broker().claim_inbox(c);
  receive_direct_now(a);
  ASSERT_EQ(sink_.failures.size(), 1u);
  EXPECT_EQ(sink_.failures[0].code, Errc::not_inbox_owner);

  broker().disconnect(c, now_);

  receive_direct_now(a);  // the owner again: an empty inbox times out
  receive_direct_now(b);
  ASSERT_EQ(sink_.failures.size(), 3u);
  EXPECT_EQ(sink_.failures[1].to, a);
  EXPECT_EQ(sink_.failures[1].code, Errc::timeout);
  EXPECT_EQ(sink_.failures[2].to, b);
  EXPECT_EQ(sink_.failures[2].code, Errc::not_inbox_owner);
}

TEST_F(BrokerTest, ANewProcessWithTheSamePidGetsItsOwnInboxAndPidRoutingGoesToIt) {
  const PeerId old_instance = connect_process(777, 1);
  const PeerId sender = connect(2000);
  EXPECT_EQ(send_to_pid(sender, 777, "for the old one").result, SendResult::accepted);

  const PeerId fresh = connect_process(777, 2);

  EXPECT_EQ(broker().inbox_count(), 3u);
  EXPECT_EQ(broker().inbox_depth(fresh), 0u);  // nothing of the old instance's
  EXPECT_EQ(broker().inbox_depth(old_instance), 1u);
  EXPECT_EQ(send_to_pid(sender, 777, "for the new one").result, SendResult::accepted);
  EXPECT_EQ(broker().inbox_depth(fresh), 1u);
  EXPECT_EQ(broker().inbox_depth(old_instance), 1u);

  // Another connection of the new instance joins its inbox; the new instance owns its own.
  const PeerId fresh2 = connect_process(777, 2);
  EXPECT_EQ(broker().inbox_count(), 3u);
  EXPECT_EQ(broker().inbox_depth(fresh2), 1u);

  broker().disconnect(old_instance, now_);
  EXPECT_EQ(broker().inbox_count(), 2u);
  EXPECT_EQ(usage_of(2000).queued_messages, 1u);  // the old instance's message was dropped

  receive_direct_now(fresh, 10);
  EXPECT_EQ(payloads_to(fresh), std::vector<std::string>{"for the new one"});
  EXPECT_EQ(payloads_to(old_instance), std::vector<std::string>{});
  EXPECT_EQ(send_to_pid(sender, 777, "still the new one").result, SendResult::accepted);
  EXPECT_EQ(broker().inbox_depth(fresh), 1u);
}

TEST_F(BrokerTest, PidRoutingNeverFallsBackToAnOlderInstanceOfThePid) {
  const PeerId old_instance = connect_process(777, 1);
  const PeerId fresh = connect_process(777, 2);
  const PeerId sender = connect();

  broker().disconnect(fresh, now_);

  const auto out = send_to_pid(sender, 777, "x");
  EXPECT_EQ(out.result, SendResult::rejected);
  EXPECT_EQ(out.error, Errc::no_such_peer);
  EXPECT_EQ(broker().inbox_depth(old_instance), 0u);
  // The lingering connection of the old instance is still reachable by its client id.
  EXPECT_EQ(send_to_client(sender, old_instance, "by id").result, SendResult::accepted);
  EXPECT_EQ(broker().inbox_depth(old_instance), 1u);
}

TEST_F(BrokerTest, AnExitedProcessIsNoLongerReachableByPidButKeepsItsInbox) {
  const PeerId left_behind = connect_process(777, 1);  // inherited by another process
  const PeerId sender = connect();
  EXPECT_EQ(send_to_pid(sender, 777, "before").result, SendResult::accepted);

  sink_.set_exited(left_behind);
  broker().process_exited(left_behind);

  auto out = send_to_pid(sender, 777, "after", 0, true);
  EXPECT_EQ(out.result, SendResult::rejected);
  EXPECT_EQ(out.error, Errc::no_such_peer);
  // A send that may wait waits for a process with the pid, not for the old one.
  EXPECT_EQ(send_to_pid(sender, 777, "parked", 1000, true).result, SendResult::deferred);
  EXPECT_EQ(broker().inbox_depth(left_behind), 1u);
  // The connection keeps what was in the inbox and what is sent to it by client id.
  EXPECT_EQ(send_to_client(sender, left_behind, "by id").result, SendResult::accepted);
  receive_direct_now(left_behind, 10);
  EXPECT_EQ(payloads_to(left_behind), (std::vector<std::string>{"before", "by id"}));

  // A new process with the pid gets the parked send, and later ones.
  const PeerId fresh = connect_process(777, 2);
  EXPECT_EQ(broker().inbox_depth(fresh), 1u);
  EXPECT_EQ(send_to_pid(sender, 777, "for the new one").result, SendResult::accepted);
  EXPECT_EQ(broker().inbox_depth(fresh), 2u);
  // A late exit report for the old process leaves the new one routed.
  broker().process_exited(left_behind);
  EXPECT_EQ(send_to_pid(sender, 777, "still new").result, SendResult::accepted);
  EXPECT_EQ(broker().inbox_depth(fresh), 3u);
}

TEST_F(BrokerTest, RoutingByPidAsksWhetherTheProcessExitedBeforeTheEdgeSaysSo) {
  const PeerId left_behind = connect_process(777, 1);
  const PeerId sender = connect();
  EXPECT_EQ(send_to_pid(sender, 777, "alive").result, SendResult::accepted);
  EXPECT_GE(sink_.exit_checks, 1u);

  // Exited, but process_exited() has not been called yet.
  sink_.set_exited(left_behind);
  const auto out = send_to_pid(sender, 777, "too late", 0, true);
  EXPECT_EQ(out.result, SendResult::rejected);
  EXPECT_EQ(out.error, Errc::no_such_peer);
  EXPECT_EQ(broker().inbox_depth(left_behind), 1u);
  // Retired on the spot: it stays retired without asking again.
  const std::size_t checks = sink_.exit_checks;
  EXPECT_EQ(send_to_pid(sender, 777, "again").error, Errc::no_such_peer);
  EXPECT_EQ(sink_.exit_checks, checks);
  // Sends by client id do not ask at all.
  EXPECT_EQ(send_to_client(sender, left_behind, "by id").result, SendResult::accepted);
  EXPECT_EQ(sink_.exit_checks, checks);
}

TEST_F(BrokerTest, AConnectionWhoseProcessExitedBeforeItJoinedIsNotReachableByPid) {
  const PeerId sender = connect();
  std::uint64_t corr = 0;
  ASSERT_EQ(send_to_pid(sender, 777, "parked", 1000, true, &corr).result, SendResult::deferred);
  // The edge learned at accept that the process is gone (its connection lives on).
  const PeerId peer = next_peer_;
  sink_.set_exited(peer);
  EXPECT_EQ(connect_process(777, 0), peer);

  EXPECT_EQ(broker().inbox_depth(peer), 0u);  // the parked send was not handed to it
  EXPECT_TRUE(sink_.confirms.empty());
  EXPECT_EQ(send_to_pid(sender, 777, "x").error, Errc::no_such_peer);
  EXPECT_EQ(send_to_client(sender, peer, "by id").result, SendResult::accepted);
}

TEST_F(BrokerTest, ProducersBlockedOnAnInboxRetryWhenItsProcessExits) {
  limits_.inbox = options(1, 1000, Overflow::block);
  const PeerId target = connect_process(777, 1);
  const PeerId by_pid = connect();
  const PeerId by_id = connect();
  EXPECT_EQ(send_to_pid(by_pid, 777, "fills it").result, SendResult::accepted);
  EXPECT_EQ(send_to_pid(by_pid, 777, "blocks").result, SendResult::blocked);
  EXPECT_EQ(send_to_client(by_id, target, "blocks too").result, SendResult::blocked);

  sink_.set_exited(target);
  broker().process_exited(target);
  EXPECT_EQ(sink_.resumes, (std::vector<PeerId>{by_pid, by_id}));
  // Retried: by pid there is no such process any more; by client id the inbox is full.
  EXPECT_EQ(send_to_pid(by_pid, 777, "blocks").error, Errc::no_such_peer);
  EXPECT_EQ(send_to_client(by_id, target, "blocks too").result, SendResult::blocked);
}

TEST_F(BrokerTest, DirectSendByClientIdReachesThatConnectionsProcessInbox) {
  const PeerId a = connect_process(777);
  const PeerId b = connect_process(777);
  const PeerId sender = connect();

  EXPECT_EQ(send_to_client(sender, b, "to b's process").result, SendResult::accepted);

  EXPECT_EQ(broker().inbox_depth(a), 1u);
  receive_direct_now(a);  // a owns the process's inbox
  EXPECT_EQ(payloads_to(a), std::vector<std::string>{"to b's process"});
  EXPECT_EQ(sink_.deliveries[0].key, "");
}

TEST_F(BrokerTest, DirectSendToAnUnknownClientIdFailsAtOnceEvenWithAWait) {
  const PeerId sender = connect();

  auto out = send_to_client(sender, 9999, "nobody");
  EXPECT_EQ(out.result, SendResult::rejected);
  EXPECT_EQ(out.error, Errc::no_such_peer);
  EXPECT_NE(out.text.find("9999"), std::string::npos) << out.text;

  out = send_to_client(sender, 9999, "nobody", 1000);  // client ids are never reused: no parking
  EXPECT_EQ(out.result, SendResult::rejected);
  EXPECT_EQ(out.error, Errc::no_such_peer);
  EXPECT_FALSE(broker().next_deadline().has_value());
  EXPECT_EQ(usage_of(1000).queued_bytes, 0u);
}

TEST_F(BrokerTest, TcpPeersEachHaveTheirOwnInboxAddressedByClientId) {
  const PeerId t1 = connect_tcp();
  const PeerId t2 = connect_tcp();
  const PeerId local = connect();
  EXPECT_EQ(broker().inbox_count(), 3u);
  EXPECT_EQ(usage_of(kTcpUid).connections, 2u);

  EXPECT_EQ(send_to_client(local, t1, "for t1").result, SendResult::accepted);
  EXPECT_EQ(send_to_client(t2, t1, "also t1").result, SendResult::accepted);
  EXPECT_EQ(send_to_client(t1, t2, "for t2").result, SendResult::accepted);
  EXPECT_EQ(broker().inbox_depth(t1), 2u);
  EXPECT_EQ(broker().inbox_depth(t2), 1u);

  receive_direct_now(t1, 10);  // each TCP connection owns its inbox
  receive_direct_now(t2, 10);
  EXPECT_TRUE(sink_.failures.empty());
  EXPECT_EQ(payloads_to(t1), (std::vector<std::string>{"for t1", "also t1"}));
  EXPECT_EQ(payloads_to(t2), std::vector<std::string>{"for t2"});
  const auto& from_tcp = sink_.deliveries[1];
  EXPECT_TRUE(from_tcp.sender.tcp);
  EXPECT_EQ(from_tcp.sender.pid, 0u);
  EXPECT_EQ(from_tcp.sender.uid, kTcpUid);
  EXPECT_EQ(from_tcp.sender.client_id, t2);

  // TCP peers have no pid to be addressed by.
  const auto out = send_to_pid(local, 0, "x");
  EXPECT_EQ(out.error, Errc::no_such_peer);

  broker().disconnect(t1, now_);
  EXPECT_EQ(broker().inbox_count(), 2u);
  EXPECT_EQ(send_to_client(local, t1, "gone").error, Errc::no_such_peer);
}

TEST_F(BrokerTest, DirectSendToAnUnknownPidFailsWithNoSuchPeer) {
  const PeerId sender = connect();

  const auto out = send_to_pid(sender, 4242, "x");

  EXPECT_EQ(out.result, SendResult::rejected);
  EXPECT_EQ(out.error, Errc::no_such_peer);
  EXPECT_NE(out.text.find("4242"), std::string::npos) << out.text;
  EXPECT_FALSE(broker().next_deadline().has_value());
  EXPECT_EQ(usage_of(1000).queued_bytes, 0u);
  EXPECT_EQ(broker().totals().messages_in, 0u);
}

// ---- parked direct sends -----------------------------------------------------------------

TEST_F(BrokerTest, DirectSendWithAWaitIsDeferredThenDeliveredAndConfirmedWhenThePidConnects) {
  const PeerId sender = connect(1000);
  std::uint64_t corr = 0;

  const auto out = send_to_pid(sender, 4242, "parked", 1000, true, &corr);

  EXPECT_EQ(out.result, SendResult::deferred);
  EXPECT_EQ(out.error, Errc::ok);
  EXPECT_TRUE(sink_.confirms.empty());
  EXPECT_TRUE(sink_.failures.empty());
  EXPECT_EQ(broker().next_deadline(), t0_ + 1000ms);
  EXPECT_EQ(usage_of(1000).queued_bytes, 6u);
  EXPECT_EQ(usage_of(1000).queued_messages, 1u);

  advance(300ms);
  const PeerId target = connect_process(4242, 1, 2000);

  EXPECT_EQ(sink_.confirms, (std::vector<Confirmation>{{sender, corr}}));
  EXPECT_EQ(broker().inbox_depth(target), 1u);
  EXPECT_FALSE(broker().next_deadline().has_value());
  EXPECT_EQ(usage_of(1000).queued_bytes, 6u);  // now held by the inbox
  EXPECT_EQ(usage_of(1000).queued_messages, 1u);

  receive_direct_now(target);
  ASSERT_EQ(sink_.deliveries.size(), 1u);
  const auto& d = sink_.deliveries[0];
  EXPECT_EQ(d.payload, "parked");
  EXPECT_EQ(d.key, "");
  EXPECT_EQ(d.sender.client_id, sender);
  EXPECT_EQ(d.sender.pid, pid_of(sender));
  EXPECT_EQ(usage_of(1000).queued_bytes, 0u);
  broker().expire(t0_ + 1h);
  EXPECT_TRUE(sink_.failures.empty());
  EXPECT_EQ(sink_.confirms.size(), 1u);
}

TEST_F(BrokerTest, ParkedSendsAreDeliveredInSendOrderAndUnconfirmedOnesSilently) {
  const PeerId s1 = connect();
  const PeerId s2 = connect();
  EXPECT_EQ(send_to_pid(s1, 4242, "1", 1000).result, SendResult::deferred);
  EXPECT_EQ(send_to_pid(s2, 4242, "2", 500).result, SendResult::deferred);
  EXPECT_EQ(send_to_pid(s1, 4242, "3", 2000).result, SendResult::deferred);
  EXPECT_EQ(send_to_pid(s1, 5555, "elsewhere", 2000).result, SendResult::deferred);

  const PeerId target = connect_process(4242);

  EXPECT_TRUE(sink_.confirms.empty());
  EXPECT_TRUE(sink_.failures.empty());
  receive_direct_now(target, 10);
  EXPECT_EQ(payloads_to(target), (std::vector<std::string>{"1", "2", "3"}));
  EXPECT_EQ(broker().next_deadline(), t0_ + 2000ms);  // the send to 5555 still waits
}

TEST_F(BrokerTest, ParkedSendFailsWithNoSuchPeerAtItsDeadlineAndReleasesItsBytes) {
  const PeerId sender = connect(1000);
  std::uint64_t corr = 0;
  ASSERT_EQ(send_to_pid(sender, 4242, "12345", 500, true, &corr).result, SendResult::deferred);
  EXPECT_EQ(usage_of(1000).queued_bytes, 5u);
  EXPECT_EQ(usage_of(1000).queued_messages, 1u);

  broker().expire(t0_ + 499ms);
  EXPECT_TRUE(sink_.failures.empty());

  broker().expire(t0_ + 500ms);
  ASSERT_EQ(sink_.failures.size(), 1u);
  EXPECT_EQ(sink_.failures[0].to, sender);
  EXPECT_EQ(sink_.failures[0].correlation, corr);
  EXPECT_EQ(sink_.failures[0].code, Errc::no_such_peer);
  EXPECT_NE(sink_.failures[0].text.find("4242"), std::string::npos) << sink_.failures[0].text;
  EXPECT_EQ(usage_of(1000).queued_bytes, 0u);
  EXPECT_EQ(usage_of(1000).queued_messages, 0u);
  EXPECT_FALSE(broker().next_deadline().has_value());

  advance(1s);
  const PeerId late = connect_process(4242);
  EXPECT_EQ(broker().inbox_depth(late), 0u);
  EXPECT_TRUE(sink_.confirms.empty());
  EXPECT_EQ(sink_.failures.size(), 1u);
}

TEST_F(BrokerTest, ParkedSendsCountAgainstTheSendersUidQuota) {
  limits_.uid_max_queued_bytes = 10;
  const PeerId s1 = connect(1000);
  const PeerId s2 = connect(1000);
  ASSERT_EQ(send_to_pid(s1, 4242, "123456", 1000).result, SendResult::deferred);

  auto out = send_to_pid(s2, 4242, "12345", 1000);
  EXPECT_EQ(out.result, SendResult::rejected);
  EXPECT_EQ(out.error, Errc::quota_exceeded);
  EXPECT_EQ(send(s2, "jobs", "12345").error, Errc::quota_exceeded);

  advance(1000ms);
  broker().expire(now_);
  EXPECT_EQ(usage_of(1000).queued_bytes, 0u);
  EXPECT_EQ(send_to_pid(s2, 4242, "12345", 1000).result, SendResult::deferred);
}

TEST_F(BrokerTest, ParkedSendsPerConnectionAreLimitedWithTooManyRequests) {
  limits_.max_parked_sends = 2;
  const PeerId s = connect();
  const PeerId other = connect();
  const PeerId present = connect();
  ASSERT_EQ(send_to_pid(s, 4242, "1", 1000).result, SendResult::deferred);
  ASSERT_EQ(send_to_pid(s, 4243, "2", 2000).result, SendResult::deferred);

  const auto out = send_to_pid(s, 4244, "3", 1000);
  EXPECT_EQ(out.result, SendResult::rejected);
  EXPECT_EQ(out.error, Errc::too_many_requests);
  EXPECT_FALSE(out.text.empty());

  // Another connection has its own allowance; a connected target needs none.
  EXPECT_EQ(send_to_pid(other, 4244, "3", 1000).result, SendResult::deferred);
  EXPECT_EQ(send_to_pid(s, pid_of(present), "here", 1000).result, SendResult::accepted);

  advance(1000ms);
  broker().expire(now_);
  EXPECT_EQ(sink_.failures.size(), 2u);
  EXPECT_EQ(send_to_pid(s, 4244, "3", 1000).result, SendResult::deferred);
}

TEST_F(BrokerTest, ParkedSendsAreDroppedWhenTheSenderDisconnects) {
  const PeerId s = connect(1000);
  ASSERT_EQ(send_to_pid(s, 4242, "x", 1000, true).result, SendResult::deferred);

  broker().disconnect(s, now_);

  EXPECT_FALSE(broker().next_deadline().has_value());
  EXPECT_EQ(accounting_entries(), 0u);
  EXPECT_TRUE(sink_.failures.empty());
  const PeerId target = connect_process(4242, 1, 2000);
  EXPECT_EQ(broker().inbox_depth(target), 0u);
  EXPECT_TRUE(sink_.confirms.empty());
  broker().expire(t0_ + 1h);
  EXPECT_TRUE(sink_.failures.empty());
}

TEST_F(BrokerTest, ParkedSendsThatOverflowTheNewInboxFailWithPeerBusy) {
  limits_.inbox = options(1, 1000, Overflow::block);
  const PeerId s = connect(1000);
  std::uint64_t fits = 0;
  std::uint64_t overflows = 0;
  ASSERT_EQ(send_to_pid(s, 4242, "first", 1000, true, &fits).result, SendResult::deferred);
  ASSERT_EQ(send_to_pid(s, 4242, "second", 1000, true, &overflows).result, SendResult::deferred);

  const PeerId target = connect_process(4242, 1, 2000);

  EXPECT_EQ(sink_.confirms, (std::vector<Confirmation>{{s, fits}}));
  ASSERT_EQ(sink_.failures.size(), 1u);
  EXPECT_EQ(sink_.failures[0].to, s);
  EXPECT_EQ(sink_.failures[0].correlation, overflows);
  EXPECT_EQ(sink_.failures[0].code, Errc::peer_busy);
  EXPECT_TRUE(sink_.resumes.empty());  // nobody to pause: refused, not blocked
  EXPECT_EQ(broker().inbox_depth(target), 1u);
  EXPECT_EQ(usage_of(1000).queued_bytes, 5u);
  EXPECT_FALSE(broker().next_deadline().has_value());
}

// ---- inbox limits and lifetime -----------------------------------------------------------

TEST_F(BrokerTest, FullInboxRejectsDirectSendsWithPeerBusy) {
  limits_.inbox = options(2, 1000, Overflow::reject);
  const PeerId s = connect();
  const PeerId target = connect();
  EXPECT_EQ(send_to_pid(s, pid_of(target), "1").result, SendResult::accepted);
  EXPECT_EQ(send_to_client(s, target, "2").result, SendResult::accepted);

  const auto out = send_to_pid(s, pid_of(target), "3");

  EXPECT_EQ(out.result, SendResult::rejected);
  EXPECT_EQ(out.error, Errc::peer_busy);
  EXPECT_NE(out.text.find("inbox"), std::string::npos) << out.text;
  EXPECT_EQ(broker().inbox_depth(target), 2u);
  EXPECT_EQ(usage_of(1000).queued_messages, 2u);

  receive_direct_now(target);
  EXPECT_EQ(send_to_pid(s, pid_of(target), "3").result, SendResult::accepted);
  receive_direct_now(target, 10);
  EXPECT_EQ(payloads_to(target), (std::vector<std::string>{"1", "2", "3"}));
}

TEST_F(BrokerTest, InboxByteLimitAlsoRejectsWithPeerBusy) {
  limits_.inbox = options(100, 8, Overflow::reject);
  const PeerId s = connect();
  const PeerId target = connect();
  EXPECT_EQ(send_to_pid(s, pid_of(target), "12345").result, SendResult::accepted);

  const auto out = send_to_pid(s, pid_of(target), "1234");

  EXPECT_EQ(out.error, Errc::peer_busy);
  EXPECT_EQ(broker().inbox_depth(target), 1u);
}

TEST_F(BrokerTest, InboxWithTheDropOldestPolicyKeepsTheNewestMessages) {
  limits_.inbox = options(2, 1000, Overflow::drop_oldest);
  const PeerId s = connect(1000);
  const PeerId target = connect(2000);
  for (const char* m : {"1", "2", "3"})
    EXPECT_EQ(send_to_pid(s, pid_of(target), m).result, SendResult::accepted);

  EXPECT_EQ(broker().inbox_depth(target), 2u);
  EXPECT_EQ(usage_of(1000).queued_messages, 2u);
  receive_direct_now(target, 10);
  EXPECT_EQ(payloads_to(target), (std::vector<std::string>{"2", "3"}));
}

TEST_F(BrokerTest, InboxWithTheBlockPolicyBlocksTheProducerUntilTheOwnerReceives) {
  limits_.inbox = options(1, 1000, Overflow::block);
  const PeerId p = connect();
  const PeerId target = connect();
  EXPECT_EQ(send_to_pid(p, pid_of(target), "1").result, SendResult::accepted);

  const auto out = send_to_pid(p, pid_of(target), "2");
  EXPECT_EQ(out.result, SendResult::blocked);
  EXPECT_EQ(out.error, Errc::ok);
  EXPECT_EQ(broker().inbox_depth(target), 1u);
  EXPECT_TRUE(sink_.resumes.empty());

  receive_direct_now(target);
  EXPECT_EQ(sink_.resumes, std::vector<PeerId>{p});
  EXPECT_EQ(send_to_pid(p, pid_of(target), "2").result, SendResult::accepted);
  receive_direct_now(target);
  EXPECT_EQ(payloads_to(target), (std::vector<std::string>{"1", "2"}));
}

TEST_F(BrokerTest, ProducerBlockedOnAnInboxIsResumedWhenItsProcessLeaves) {
  limits_.inbox = options(1, 1000, Overflow::block);
  const PeerId p = connect(1000);
  const PeerId target = connect(2000);
  EXPECT_EQ(send_to_pid(p, pid_of(target), "1").result, SendResult::accepted);
  ASSERT_EQ(send_to_pid(p, pid_of(target), "2").result, SendResult::blocked);

  broker().disconnect(target, now_);

  EXPECT_EQ(sink_.resumes, std::vector<PeerId>{p});
  EXPECT_EQ(usage_of(1000).queued_bytes, 0u);
  EXPECT_EQ(broker().inbox_count(), 1u);
  EXPECT_EQ(send_to_pid(p, pid_of(target), "2").error, Errc::no_such_peer);
}

TEST_F(BrokerTest, DisconnectedProducerBlockedOnAnInboxIsNotResumed) {
  limits_.inbox = options(1, 1000, Overflow::block);
  const PeerId p = connect();
  const PeerId gone = connect();
  const PeerId target = connect();
  EXPECT_EQ(send_to_pid(p, pid_of(target), "1").result, SendResult::accepted);
  ASSERT_EQ(send_to_pid(gone, pid_of(target), "2").result, SendResult::blocked);
  ASSERT_EQ(send_to_pid(p, pid_of(target), "3").result, SendResult::blocked);

  broker().disconnect(gone, now_);
  receive_direct_now(target);

  EXPECT_EQ(sink_.resumes, std::vector<PeerId>{p});
}

TEST_F(BrokerTest, InboxIsDroppedWithItsMessagesWhenTheLastConnectionOfItsProcessLeaves) {
  const PeerId s = connect(1000);
  const PeerId a = connect_process(777, 1, 2000);
  const PeerId b = connect_process(777, 1, 2000);
  EXPECT_EQ(send_to_pid(s, 777, "12").result, SendResult::accepted);
  EXPECT_EQ(send_to_pid(s, 777, "345").result, SendResult::accepted);
  EXPECT_EQ(usage_of(1000).queued_bytes, 5u);
  EXPECT_EQ(broker().inbox_count(), 2u);

  broker().disconnect(a, now_);
  EXPECT_EQ(broker().inbox_count(), 2u);
  EXPECT_EQ(broker().inbox_depth(b), 2u);

  broker().disconnect(b, now_);
  EXPECT_EQ(broker().inbox_count(), 1u);
  EXPECT_EQ(usage_of(1000).queued_bytes, 0u);
  EXPECT_EQ(usage_of(1000).queued_messages, 0u);
  EXPECT_EQ(broker().accounting().find(2000), nullptr);
  EXPECT_TRUE(sink_.failures.empty());
  EXPECT_TRUE(sink_.deliveries.empty());
  EXPECT_EQ(send_to_pid(s, 777, "late").error, Errc::no_such_peer);

  broker().disconnect(s, now_);
  EXPECT_EQ(broker().inbox_count(), 0u);
  EXPECT_EQ(broker().peer_count(), 0u);
  EXPECT_EQ(accounting_entries(), 0u);
}

TEST_F(BrokerTest, ProcessLeavingWhileItsReceiveDirectWaitsLeavesNothingBehind) {
  const PeerId b = connect();
  receive_direct(b, 1, 1000);
  receive(b, "jobs", 1, 500);

  broker().disconnect(b, now_);

  EXPECT_EQ(broker().inbox_count(), 0u);
  EXPECT_EQ(broker().queue_count(), 0u);
  EXPECT_FALSE(broker().next_deadline().has_value());
  EXPECT_TRUE(sink_.failures.empty());
  EXPECT_EQ(accounting_entries(), 0u);
}

// ---- requests and replies ----------------------------------------------------------------

TEST_F(BrokerTest, RequestCarriesItsIdAndTheReplyReachesTheRequesterUnderThatCorrelation) {
  const PeerId requester = connect(1000);
  const PeerId worker = connect(2000);

  const auto out = request(requester, 7, "svc", "ping", 1000);
  EXPECT_EQ(out.result, SendResult::accepted) << out.text;
  EXPECT_EQ(broker().next_deadline(), t0_ + 1000ms);

  receive_now(worker, "svc");
  ASSERT_EQ(sink_.deliveries.size(), 1u);
  const Delivered asked = sink_.deliveries[0];
  EXPECT_EQ(asked.to, worker);
  EXPECT_EQ(asked.key, "svc");
  EXPECT_EQ(asked.request_id, 7u);
  EXPECT_EQ(asked.payload, "ping");
  EXPECT_EQ(asked.sender.client_id, requester);
  EXPECT_EQ(asked.sender.pid, pid_of(requester));

  const auto r = reply(worker, asked.sender.client_id, asked.request_id, "pong");

  EXPECT_EQ(r.result, SendResult::accepted) << r.text;
  ASSERT_EQ(sink_.deliveries.size(), 2u);
  const auto& answer = sink_.deliveries[1];
  EXPECT_EQ(answer.to, requester);
  EXPECT_EQ(answer.correlation, 7u);
  EXPECT_TRUE(answer.last);
  EXPECT_EQ(answer.key, "");
  EXPECT_EQ(answer.request_id, 0u);
  EXPECT_EQ(answer.payload, "pong");
  EXPECT_EQ(answer.sender.client_id, worker);
  EXPECT_EQ(answer.sender.uid, 2000u);
  EXPECT_FALSE(broker().next_deadline().has_value());
  EXPECT_EQ(broker().inbox_depth(requester), 0u);  // a reply bypasses the inbox
  broker().expire(t0_ + 1h);
  EXPECT_TRUE(sink_.failures.empty());

  // The request was answered: a second reply finds nothing waiting.
  const auto again = reply(worker, requester, 7, "pong again");
  EXPECT_EQ(again.result, SendResult::rejected);
  EXPECT_EQ(again.error, Errc::reply_expired);
  EXPECT_EQ(sink_.deliveries.size(), 2u);
}

TEST_F(BrokerTest, RequestHandedToAWaitingReceiverCarriesItsId) {
  const PeerId requester = connect();
  const PeerId worker = connect();
  const auto corr = receive(worker, "svc");

  EXPECT_EQ(request(requester, 42, "svc", "ping", 1000).result, SendResult::accepted);

  ASSERT_EQ(sink_.deliveries.size(), 1u);
  EXPECT_EQ(sink_.deliveries[0].correlation, corr);
  EXPECT_EQ(sink_.deliveries[0].request_id, 42u);
  EXPECT_EQ(reply(worker, requester, 42, "pong").result, SendResult::accepted);
  EXPECT_EQ(payloads_to(requester), std::vector<std::string>{"pong"});
}

TEST_F(BrokerTest, ReplyAfterTheRequestTimedOutFailsWithReplyExpired) {
  const PeerId requester = connect();
  const PeerId worker = connect();
  ASSERT_EQ(request(requester, 7, "svc", "ping", 100).result, SendResult::accepted);
  receive_now(worker, "svc");

  broker().expire(t0_ + 99ms);
  EXPECT_TRUE(sink_.failures.empty());
  broker().expire(t0_ + 100ms);
  ASSERT_EQ(sink_.failures.size(), 1u);
  EXPECT_EQ(sink_.failures[0].to, requester);
  EXPECT_EQ(sink_.failures[0].correlation, 7u);
  EXPECT_EQ(sink_.failures[0].code, Errc::timeout);

  const auto r = reply(worker, requester, 7, "too late");
  EXPECT_EQ(r.result, SendResult::rejected);
  EXPECT_EQ(r.error, Errc::reply_expired);
  EXPECT_FALSE(r.text.empty());
  EXPECT_TRUE(payloads_to(requester).empty());
}

TEST_F(BrokerTest, ReplyNamingAnotherRequestOrClientFailsAndTheRequestStillWaits) {
  const PeerId requester = connect();
  const PeerId worker = connect();
  ASSERT_EQ(request(requester, 7, "svc", "ping", 1000).result, SendResult::accepted);
  receive_now(worker, "svc");

  EXPECT_EQ(reply(worker, requester, 8, "wrong id").error, Errc::reply_expired);
  EXPECT_EQ(reply(worker, 9999, 7, "wrong client").error, Errc::reply_expired);
  EXPECT_EQ(reply(worker, worker, 7, "to itself").error, Errc::reply_expired);

  EXPECT_EQ(broker().next_deadline(), t0_ + 1000ms);
  EXPECT_EQ(reply(worker, requester, 7, "right").result, SendResult::accepted);
  EXPECT_EQ(payloads_to(requester), std::vector<std::string>{"right"});
}

TEST_F(BrokerTest, OnlyTheConnectionARequestWasHandedToMayReply) {
  const PeerId requester = connect();
  const PeerId worker = connect();
  const PeerId bystander = connect();
  ASSERT_EQ(request(requester, 7, "svc", "ping", 1000).result, SendResult::accepted);

  // Not yet handed to anyone: a guessed client id and request id are not enough.
  EXPECT_EQ(reply(bystander, requester, 7, "guess").error, Errc::reply_expired);
  receive_now(worker, "svc");
  EXPECT_EQ(reply(bystander, requester, 7, "guess").error, Errc::reply_expired);

  EXPECT_EQ(broker().next_deadline(), t0_ + 1000ms);
  EXPECT_EQ(reply(worker, requester, 7, "real").result, SendResult::accepted);
  EXPECT_EQ(payloads_to(requester), std::vector<std::string>{"real"});
}

TEST_F(BrokerTest, RequestServedInABatchMayBeAnsweredByItsReceiver) {
  const PeerId r1 = connect();
  const PeerId r2 = connect();
  const PeerId worker = connect();
  ASSERT_EQ(request(r1, 1, "svc", "a", 1000).result, SendResult::accepted);
  put(r2, "svc", "plain");
  ASSERT_EQ(request(r2, 1, "svc", "b", 1000).result, SendResult::accepted);

  receive_now(worker, "svc", 10);

  ASSERT_EQ(sink_.deliveries.size(), 3u);
  EXPECT_EQ(sink_.deliveries[0].request_id, 1u);
  EXPECT_EQ(sink_.deliveries[1].request_id, 0u);
  EXPECT_EQ(sink_.deliveries[2].request_id, 1u);
  EXPECT_EQ(reply(worker, r2, 1, "to r2").result, SendResult::accepted);
  EXPECT_EQ(reply(worker, r1, 1, "to r1").result, SendResult::accepted);
  EXPECT_EQ(payloads_to(r1), std::vector<std::string>{"to r1"});
  EXPECT_EQ(payloads_to(r2), (std::vector<std::string>{"to r2"}));
}

TEST_F(BrokerTest, RequestIdZeroIsRejected) {
  const PeerId requester = connect();

  const auto out = request(requester, 0, "svc", "ping", 1000);

  EXPECT_EQ(out.result, SendResult::rejected);
  EXPECT_NE(out.error, Errc::ok);
  EXPECT_EQ(depth("svc"), 0u);
  EXPECT_FALSE(broker().next_deadline().has_value());
}

TEST_F(BrokerTest, ReplyOverTheInlineLimitIsRejectedAndTheRequestStillWaits) {
  limits_.max_payload = 4;
  const PeerId requester = connect();
  const PeerId worker = connect();
  ASSERT_EQ(request(requester, 7, "svc", "ping", 1000).result, SendResult::accepted);
  receive_now(worker, "svc");

  EXPECT_EQ(reply(worker, requester, 7, "12345").error, Errc::payload_too_large);

  EXPECT_EQ(reply(worker, requester, 7, "1234").result, SendResult::accepted);
  EXPECT_EQ(payloads_to(requester), std::vector<std::string>{"1234"});
}

TEST_F(BrokerTest, RequestIdAlreadyWaitingIsRejected) {
  const PeerId requester = connect();
  const PeerId other = connect();
  const PeerId worker = connect();
  ASSERT_EQ(request(requester, 7, "svc", "a", 1000).result, SendResult::accepted);

  const auto out = request(requester, 7, "svc", "b", 2000);

  EXPECT_EQ(out.result, SendResult::rejected);
  EXPECT_NE(out.error, Errc::ok);
  EXPECT_FALSE(out.text.empty());
  EXPECT_EQ(depth("svc"), 1u);  // the duplicate was not queued
  EXPECT_EQ(broker().next_deadline(), t0_ + 1000ms);

  // Ids are per connection, and free again once answered.
  EXPECT_EQ(request(other, 7, "svc", "c", 1000).result, SendResult::accepted);
  receive_now(worker, "svc");  // requester's "a"
  ASSERT_EQ(sink_.deliveries.size(), 1u);
  EXPECT_EQ(sink_.deliveries[0].payload, "a");
  ASSERT_EQ(reply(worker, requester, 7, "done").result, SendResult::accepted);
  EXPECT_EQ(request(requester, 7, "svc", "d", 1000).result, SendResult::accepted);
}

TEST_F(BrokerTest, PendingRequestsPerConnectionAreLimited) {
  limits_.max_pending_requests = 2;
  const PeerId requester = connect();
  const PeerId other = connect();
  const PeerId worker = connect();
  ASSERT_EQ(request(requester, 1, "svc", "1", 1000).result, SendResult::accepted);
  ASSERT_EQ(request(requester, 2, "svc", "2", -1).result, SendResult::accepted);

  const auto out = request(requester, 3, "svc", "3", 1000);

  EXPECT_EQ(out.result, SendResult::rejected);
  EXPECT_EQ(out.error, Errc::too_many_requests);
  EXPECT_FALSE(out.text.empty());
  EXPECT_EQ(depth("svc"), 2u);

  EXPECT_EQ(request(other, 3, "svc", "3", 1000).result, SendResult::accepted);
  receive_now(worker, "svc");  // request 1
  ASSERT_EQ(reply(worker, requester, 1, "one").result, SendResult::accepted);
  EXPECT_EQ(request(requester, 3, "svc", "3", 1000).result, SendResult::accepted);
}

TEST_F(BrokerTest, RequesterDisconnectDropsItsPendingRequests) {
  const PeerId requester = connect(1000);
  const PeerId worker = connect(2000);
  ASSERT_EQ(request(requester, 7, "svc", "ping", 1000).result, SendResult::accepted);
  ASSERT_EQ(request(requester, 8, "svc", "ping", -1).result, SendResult::accepted);

  broker().disconnect(requester, now_);

  EXPECT_FALSE(broker().next_deadline().has_value());
  EXPECT_TRUE(sink_.failures.empty());
  // The requests themselves are still delivered; their replies have nowhere to go.
  receive_now(worker, "svc", 10);
  ASSERT_EQ(sink_.deliveries.size(), 2u);
  EXPECT_EQ(sink_.deliveries[0].request_id, 7u);
  EXPECT_EQ(sink_.deliveries[1].request_id, 8u);
  EXPECT_EQ(reply(worker, requester, 7, "pong").error, Errc::reply_expired);
  EXPECT_EQ(reply(worker, requester, 8, "pong").error, Errc::reply_expired);
  broker().expire(t0_ + 1h);
  EXPECT_TRUE(sink_.failures.empty());
}

TEST_F(BrokerTest, RequestWithoutATimeoutNeverExpires) {
  const PeerId requester = connect();
  const PeerId worker = connect();
  ASSERT_EQ(request(requester, 7, "svc", "ping", -1).result, SendResult::accepted);
  receive_now(worker, "svc");

  EXPECT_FALSE(broker().next_deadline().has_value());
  broker().expire(t0_ + 24h * 365);
  EXPECT_TRUE(sink_.failures.empty());

  advance(24h * 365);
  EXPECT_EQ(reply(worker, requester, 7, "eventually").result, SendResult::accepted);
  EXPECT_EQ(payloads_to(requester), std::vector<std::string>{"eventually"});
}

TEST_F(BrokerTest, RequestRefusedOrBlockedByItsQueueIsNotLeftPending) {
  ASSERT_EQ(declare("full", options(1, 1000, Overflow::reject)), Errc::ok);
  ASSERT_EQ(declare("slow", options(1, 1000, Overflow::block)), Errc::ok);
  const PeerId requester = connect();
  const PeerId worker = connect();
  put(worker, "full", "x");
  put(worker, "slow", "x");

  const auto refused = request(requester, 7, "full", "ping", 1000);
  EXPECT_EQ(refused.result, SendResult::rejected);
  EXPECT_EQ(refused.error, Errc::queue_full);
  const auto blocked = request(requester, 8, "slow", "ping", 1000);
  EXPECT_EQ(blocked.result, SendResult::blocked);

  EXPECT_FALSE(broker().next_deadline().has_value());
  EXPECT_EQ(reply(worker, requester, 7, "pong").error, Errc::reply_expired);
  EXPECT_EQ(reply(worker, requester, 8, "pong").error, Errc::reply_expired);

  // The blocked request is retried once there is room; it is not a duplicate.
  receive_now(worker, "slow");
  EXPECT_EQ(sink_.resumes, std::vector<PeerId>{requester});
  EXPECT_EQ(request(requester, 8, "slow", "ping", 1000).result, SendResult::accepted);
}

// ---- shutdown and deadlines across kinds -------------------------------------------------

TEST_F(BrokerTest, FailAllWaitersAlsoFailsPendingRequestsAndParkedSends) {
  const PeerId requester = connect(1000);
  const PeerId worker = connect(2000);
  const PeerId b = connect(3000);
  ASSERT_EQ(request(requester, 7, "svc", "ping", 1000).result, SendResult::accepted);
  ASSERT_EQ(request(requester, 8, "svc", "ping", -1).result, SendResult::accepted);
  std::uint64_t parked = 0;
  ASSERT_EQ(send_to_pid(requester, 4242, "parked", 1000, true, &parked).result,
            SendResult::deferred);
  const auto direct = receive_direct(b, 1, -1);
  const auto queued = receive(worker, "other", 1, 100);

  broker().fail_all_waiters(Errc::shutting_down, "the broker is stopping");

  std::set<std::pair<PeerId, std::uint64_t>> failed;
  for (const auto& f : sink_.failures) {
    EXPECT_EQ(f.code, Errc::shutting_down);
    EXPECT_EQ(f.text, "the broker is stopping");
    failed.emplace(f.to, f.correlation);
  }
  EXPECT_EQ(sink_.failures.size(), 5u);
  EXPECT_EQ(
      failed,
      (std::set<std::pair<PeerId, std::uint64_t>>{
          {requester, 7}, {requester, 8}, {requester, parked}, {b, direct}, {worker, queued}}));
  EXPECT_FALSE(broker().next_deadline().has_value());
  EXPECT_EQ(usage_of(1000).queued_bytes, 8u);  // the two queued requests; the parked send went
  EXPECT_EQ(reply(worker, requester, 7, "pong").error, Errc::reply_expired);
  const PeerId target = connect_process(4242);
  EXPECT_EQ(broker().inbox_depth(target), 0u);
  EXPECT_TRUE(sink_.confirms.empty());
}

TEST_F(BrokerTest, NextDeadlineCoversReceivesRequestsAndParkedSends) {
  const PeerId r = connect();
  const PeerId c = connect();
  const auto recv = receive(c, "a", 1, 300);
  ASSERT_EQ(request(r, 7, "svc", "x", 200).result, SendResult::accepted);
  std::uint64_t parked = 0;
  ASSERT_EQ(send_to_pid(r, 4242, "p", 100, false, &parked).result, SendResult::deferred);
  const auto direct = receive_direct(c, 1, 400);

  EXPECT_EQ(broker().next_deadline(), t0_ + 100ms);
  broker().expire(t0_ + 100ms);
  ASSERT_EQ(sink_.failures.size(), 1u);
  EXPECT_EQ(sink_.failures[0].correlation, parked);
  EXPECT_EQ(sink_.failures[0].code, Errc::no_such_peer);

  EXPECT_EQ(broker().next_deadline(), t0_ + 200ms);
  broker().expire(t0_ + 200ms);
  ASSERT_EQ(sink_.failures.size(), 2u);
  EXPECT_EQ(sink_.failures[1].to, r);
  EXPECT_EQ(sink_.failures[1].correlation, 7u);
  EXPECT_EQ(sink_.failures[1].code, Errc::timeout);

  EXPECT_EQ(broker().next_deadline(), t0_ + 300ms);
  broker().expire(t0_ + 300ms);
  ASSERT_EQ(sink_.failures.size(), 3u);
  EXPECT_EQ(sink_.failures[2].correlation, recv);

  EXPECT_EQ(broker().next_deadline(), t0_ + 400ms);
  broker().expire(t0_ + 400ms);
  ASSERT_EQ(sink_.failures.size(), 4u);
  EXPECT_EQ(sink_.failures[3].correlation, direct);
  EXPECT_EQ(sink_.failures[3].code, Errc::timeout);
  EXPECT_FALSE(broker().next_deadline().has_value());
}

TEST_F(BrokerTest, DirectMessagesAndRepliesCountInTheTotals) {
  const PeerId a = connect();
  const PeerId b = connect();
  EXPECT_EQ(send_to_pid(a, pid_of(b), "abc").result, SendResult::accepted);  // queued
  ASSERT_EQ(send_to_pid(a, 4242, "zz", 100).result, SendResult::deferred);   // not yet in
  ASSERT_EQ(request(a, 7, "svc", "q", 1000).result, SendResult::accepted);   // queued
  receive_now(b, "svc");
  EXPECT_EQ(reply(b, a, 7, "12345").result, SendResult::accepted);  // handed over

  auto t = broker().totals();
  EXPECT_EQ(t.messages_in, 3u);
  EXPECT_EQ(t.bytes_in, 9u);
  EXPECT_EQ(t.messages_out, 2u);
  EXPECT_EQ(t.bytes_out, 6u);

  receive_direct_now(b);
  broker().expire(t0_ + 1s);  // the parked send never counted
  t = broker().totals();
  EXPECT_EQ(t.messages_in, 3u);
  EXPECT_EQ(t.messages_out, 3u);
  EXPECT_EQ(t.bytes_out, 9u);
}

}  // namespace
}  // namespace qbus::broker
