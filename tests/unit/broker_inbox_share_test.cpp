// An inbox's limits bind each sending uid on its own (proto/PROTOCOL.md 8.4): one uid
// filling an inbox leaves the room of the others, taking a message gives room back to its
// sender's uid only, and drop_oldest drops only the sender's own messages.
#include "broker_fixture.hpp"

namespace qbus::broker::fakes {
namespace {

constexpr std::uint32_t kRoot = 0;
constexpr std::uint32_t kAlice = 1000;
constexpr std::uint32_t kBob = 1001;

using BrokerInboxShareTest = BrokerTest;

TEST_F(BrokerInboxShareTest, EachSendingUidHasTheInboxLimitsToItself) {
  limits_.inbox = options(2, 1000, Overflow::reject);
  const PeerId root = connect(kRoot);
  const PeerId alice = connect(kAlice);
  const PeerId alice2 = connect(kAlice);
  const PeerId bob = connect(kBob);
  EXPECT_EQ(send_to_pid(alice, pid_of(root), "a1").result, SendResult::accepted);
  EXPECT_EQ(send_to_pid(alice2, pid_of(root), "a2").result, SendResult::accepted);
  // Alice's uid holds its share, whichever of its connections sends.
  const auto full = send_to_pid(alice, pid_of(root), "a3");
  EXPECT_EQ(full.error, Errc::peer_busy);
  EXPECT_EQ(full.text, "inbox of 'pid:" + std::to_string(pid_of(root)) +
                           "' is full for uid 1000 (2 messages, 4 bytes of its own)");
  EXPECT_EQ(send_to_pid(bob, pid_of(root), "b1").result, SendResult::accepted);
  EXPECT_EQ(send_to_pid(bob, pid_of(root), "b2").result, SendResult::accepted);
  EXPECT_EQ(send_to_pid(bob, pid_of(root), "b3").error, Errc::peer_busy);
  EXPECT_EQ(broker().inbox_depth(root), 4u);

  // Taking alice's first message gives alice, and only alice, room for one more.
  receive_direct_now(root, 1);
  EXPECT_EQ(payloads_to(root), std::vector<std::string>{"a1"});
  EXPECT_EQ(send_to_pid(bob, pid_of(root), "b3").error, Errc::peer_busy);
  EXPECT_EQ(send_to_pid(alice, pid_of(root), "a3").result, SendResult::accepted);
  EXPECT_EQ(send_to_pid(alice, pid_of(root), "a4").error, Errc::peer_busy);
}

TEST_F(BrokerInboxShareTest, EachSendingUidHasTheInboxBytesToItself) {
  limits_.inbox = options(100, 10, Overflow::reject);
  const PeerId root = connect(kRoot);
  const PeerId alice = connect(kAlice);
  const PeerId bob = connect(kBob);
  EXPECT_EQ(send_to_pid(alice, pid_of(root), "0123456789").result, SendResult::accepted);
  EXPECT_EQ(send_to_pid(alice, pid_of(root), "x").error, Errc::peer_busy);
  EXPECT_EQ(send_to_pid(bob, pid_of(root), "0123456789").result, SendResult::accepted);
}

TEST_F(BrokerInboxShareTest, DropOldestDropsOnlyTheSendersOwnMessagesFromTheFront) {
  limits_.inbox = options(2, 1000, Overflow::drop_oldest);
  const PeerId root = connect(kRoot);
  const PeerId alice = connect(kAlice);
  const PeerId bob = connect(kBob);
  EXPECT_EQ(send_to_pid(alice, pid_of(root), "a1").result, SendResult::accepted);
  EXPECT_EQ(send_to_pid(alice, pid_of(root), "a2").result, SendResult::accepted);
  // Alice's oldest is the inbox's: it goes.
  EXPECT_EQ(send_to_pid(alice, pid_of(root), "a3").result, SendResult::accepted);
  EXPECT_EQ(send_to_pid(bob, pid_of(root), "b1").result, SendResult::accepted);
  EXPECT_EQ(send_to_pid(bob, pid_of(root), "b2").result, SendResult::accepted);
  // Bob's oldest is behind alice's: nothing of alice's is dropped, and bob is refused.
  EXPECT_EQ(send_to_pid(bob, pid_of(root), "b3").error, Errc::peer_busy);
  EXPECT_EQ(broker().inbox_depth(root), 4u);
  receive_direct_now(root, 10);
  EXPECT_EQ(payloads_to(root), (std::vector<std::string>{"a2", "a3", "b1", "b2"}));
  EXPECT_EQ(usage_of(kAlice).queued_messages, 0u);
  EXPECT_EQ(usage_of(kBob).queued_messages, 0u);
}

}  // namespace
}  // namespace qbus::broker::fakes
