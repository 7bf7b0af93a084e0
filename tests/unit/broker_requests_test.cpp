// Unit tests of the broker core's request registry: requests and replies, and deadlines
// and shutdown across every registry.
#include <gtest/gtest.h>

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "broker_fixture.hpp"

namespace qbus::broker {
namespace {

using namespace std::chrono_literals;

using namespace fakes;  // the fixture, the recording sink and their helpers

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
