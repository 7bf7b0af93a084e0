// Unit tests of the broker core's limits and accounting: payload limits, per-uid quotas and
// connection limits, per-uid queue and waiting-receive limits, identity and totals.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "broker_fixture.hpp"

namespace qbus::broker {
namespace {

using namespace std::chrono_literals;

using namespace fakes;  // the fixture, the recording sink and their helpers

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

}  // namespace
}  // namespace qbus::broker
