// Unit tests of the I/O-free broker core: queues, waiting receivers, blocked producers,
// limits, per-uid accounting and receive deadlines. Time is a value the tests pass in.
#include "broker/broker.hpp"

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

struct Delivery {
  PeerId to = 0;
  std::uint64_t correlation = 0;
  bool last = false;
  std::string key;
  Identity sender;
  std::string payload;
};

struct Failure {
  PeerId to = 0;
  std::uint64_t correlation = 0;
  Errc code = Errc::ok;
  std::string text;
};

// Records everything the core says; wants_more answers per peer (true unless set).
class RecordingSink : public Sink {
 public:
  void deliver(PeerId to, std::uint64_t correlation, bool last, std::string_view key,
               const Identity& sender, Bytes payload) override {
    deliveries.push_back(
        Delivery{to, correlation, last, std::string(key), sender,
                 std::string(reinterpret_cast<const char*>(payload.data()), payload.size())});
  }
  void fail(PeerId to, std::uint64_t correlation, Errc code, std::string_view text) override {
    failures.push_back(Failure{to, correlation, code, std::string(text)});
  }
  void resume(PeerId producer) override { resumes.push_back(producer); }
  bool wants_more(PeerId peer) override {
    auto it = wants_more_.find(peer);
    return it == wants_more_.end() || it->second;
  }

  void set_wants_more(PeerId peer, bool value) { wants_more_[peer] = value; }

  std::vector<Delivery> deliveries;
  std::vector<Failure> failures;
  std::vector<PeerId> resumes;

 private:
  std::map<PeerId, bool> wants_more_;
};

Bytes bytes_of(std::string_view s) {
  return std::as_bytes(std::span<const char>(s.data(), s.size()));
}

QueueOptions options(std::uint32_t max_messages, std::uint64_t max_bytes, Overflow overflow) {
  QueueOptions o;
  o.max_messages = max_messages;
  o.max_bytes = max_bytes;
  o.overflow = overflow;
  return o;
}

class BrokerTest : public ::testing::Test {
 protected:
  // Tests adjust limits_ before the first call that needs the broker.
  Broker& broker() {
    if (!broker_) broker_.emplace(limits_, sink_);
    return *broker_;
  }

  Identity identity_for(PeerId peer, std::uint32_t uid) const {
    Identity id;
    id.pid = static_cast<std::uint32_t>(10'000 + peer);
    id.uid = uid;
    id.gid = uid + 1;
    id.client_id = peer * 100;
    return id;
  }

  // Connects a new peer with `uid` and expects success.
  PeerId connect(std::uint32_t uid = 1000) {
    const PeerId peer = next_peer_++;
    EXPECT_EQ(broker().connect(peer, identity_for(peer, uid)), Errc::ok);
    return peer;
  }
  Errc try_connect(std::uint32_t uid) {
    const PeerId peer = next_peer_++;
    return broker().connect(peer, identity_for(peer, uid));
  }

  SendOutcome send(PeerId from, std::string_view key, std::string_view payload) {
    return broker().send(from, key, bytes_of(payload), now_);
  }
  // Sends and expects the message to be accepted.
  void put(PeerId from, std::string_view key, std::string_view payload) {
    const auto out = send(from, key, payload);
    EXPECT_EQ(out.result, SendResult::accepted) << out.text;
    EXPECT_EQ(out.error, Errc::ok);
  }

  // Issues a receive and returns its correlation id.
  std::uint64_t receive(PeerId peer, std::string_view key, std::uint32_t max_count = 1,
                        std::int32_t timeout_ms = -1) {
    const std::uint64_t corr = next_correlation_++;
    broker().receive(peer, corr, key, max_count, timeout_ms, now_);
    return corr;
  }
  std::uint64_t receive_now(PeerId peer, std::string_view key, std::uint32_t max_count = 1) {
    return receive(peer, key, max_count, 0);
  }

  Errc declare(std::string_view key, const QueueOptions& o, std::string* text = nullptr) {
    std::string t;
    const Errc e = broker().declare(key, o, t);
    if (text) *text = t;
    return e;
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

  std::size_t depth(std::string_view key) {
    const Queue* q = broker().find(key);
    return q ? q->depth() : 0;
  }

  std::size_t accounting_entries() {
    std::size_t n = 0;
    broker().accounting().for_each([&](std::uint32_t, const UidUsage&) { ++n; });
    return n;
  }

  void advance(Clock::duration d) { now_ += d; }

  const Clock::time_point t0_ = Clock::time_point{} + 1000h;
  Clock::time_point now_ = t0_;
  Limits limits_;
  RecordingSink sink_;

 private:
  std::optional<Broker> broker_;
  PeerId next_peer_ = 1;
  std::uint64_t next_correlation_ = 1;
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

TEST_F(BrokerTest, BatchEndsEarlyWhenReceiverOutputIsBackedUpButDeliversAtLeastOne) {
  const PeerId p = connect();
  const PeerId c = connect();
  for (const char* m : {"1", "2", "3", "4"})
    put(p, "jobs", m);
  sink_.set_wants_more(c, false);

  receive_now(c, "jobs", 4);

  ASSERT_EQ(sink_.deliveries.size(), 1u);
  EXPECT_EQ(sink_.deliveries[0].payload, "1");
  EXPECT_TRUE(sink_.deliveries[0].last);
  EXPECT_EQ(depth("jobs"), 3u);
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

  broker().disconnect(first);
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

  broker().disconnect(second);
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

// ---- disconnect --------------------------------------------------------------------------

TEST_F(BrokerTest, DisconnectedReceiverIsSkippedForTheNextWaiter) {
  const PeerId p = connect();
  const PeerId gone = connect();
  const PeerId stays = connect();
  receive(gone, "jobs", 1, 500);
  const auto corr = receive(stays, "jobs");

  broker().disconnect(gone);
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

  broker().disconnect(gone);
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

  broker().disconnect(gone);

  receive_now(c, "jobs");
  EXPECT_EQ(sink_.resumes, std::vector<PeerId>{p});
}

TEST_F(BrokerTest, AutoCreatedQueueGoesWhenItsOnlyBlockedProducerDisconnects) {
  limits_.queue_defaults = options(1, 1000, Overflow::block);
  const PeerId p = connect();
  const PeerId c = connect();
  put(p, "jobs", "1");
  ASSERT_EQ(send(p, "jobs", "2").result, SendResult::blocked);

  broker().disconnect(p);
  EXPECT_EQ(broker().queue_count(), 1u);  // its message is still queued
  receive_now(c, "jobs");

  EXPECT_TRUE(sink_.resumes.empty());
  EXPECT_EQ(broker().queue_count(), 0u);
}

TEST_F(BrokerTest, MessagesOfADisconnectedSenderAreStillDelivered) {
  const PeerId p = connect(1000);
  const PeerId c = connect(2000);
  put(p, "jobs", "orphan");
  broker().disconnect(p);
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

TEST_F(BrokerTest, ReceiversSeeTheSenderIdentityGivenAtConnect) {
  Identity id;
  id.pid = 4242;
  id.uid = 1000;
  id.gid = 100;
  id.client_id = 77;
  ASSERT_EQ(broker().connect(500, id), Errc::ok);
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
    EXPECT_EQ(d.sender.client_id, 77u);
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
    broker().disconnect(p);

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

}  // namespace
}  // namespace qbus::broker
