// Unit tests of the broker core's inbox registry: direct messages by pid and client id,
// inbox ownership, parked direct sends, inbox limits and lifetime.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "broker_fixture.hpp"

namespace qbus::broker {
namespace {

using namespace std::chrono_literals;

using namespace fakes;  // the fixture, the recording sink and their helpers

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
  broker().process_exited(left_behind, now_);

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
  broker().process_exited(left_behind, now_);
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
  broker().process_exited(target, now_);
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

}  // namespace
}  // namespace qbus::broker
