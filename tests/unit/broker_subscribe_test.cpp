// Unit tests of subscriptions in the broker core (proto/PROTOCOL.md 17.5): pushes within
// the prefetch in acknowledgement mode, credit coming back with acks, turns among
// subscribers, output backpressure without acks, cancelling, and limits.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "broker_fixture.hpp"

namespace qbus::broker {
namespace {

using namespace std::chrono_literals;
using namespace fakes;

class BrokerSubscribeTest : public BrokerTest {
 protected:
  std::uint64_t subscribe(PeerId peer, std::string_view key, std::uint32_t prefetch, bool ack) {
    const std::uint64_t corr = next_correlation_++;
    broker().subscribe(peer, corr, key, prefetch, ack, now_);
    return corr;
  }
  std::vector<const Delivered*> to(PeerId peer) const {
    std::vector<const Delivered*> out;
    for (const auto& d : sink_.deliveries)
      if (d.to == peer) out.push_back(&d);
    return out;
  }
};

TEST_F(BrokerSubscribeTest, PushesUpToThePrefetchAndMoreAsAcksComeBack) {
  const PeerId p = connect();
  const PeerId c = connect();
  for (const char* m : {"1", "2", "3", "4", "5"})
    put(p, "jobs", m);
  const std::uint64_t sub = subscribe(c, "jobs", 2, true);
  ASSERT_EQ(to(c).size(), 2u);
  for (const Delivered* d : to(c)) {
    EXPECT_EQ(d->correlation, sub);
    EXPECT_TRUE(d->last) << "each pushed message is complete";
    EXPECT_NE(d->tag, 0u);
  }
  EXPECT_EQ(broker().ack(c, to(c)[0]->tag, false, now_).error, Errc::ok);
  ASSERT_EQ(to(c).size(), 3u);
  EXPECT_EQ(to(c)[2]->payload, "3");
  EXPECT_EQ(broker().ack(c, to(c)[2]->tag, true, now_).error, Errc::ok);  // 2 and 3
  EXPECT_EQ(to(c).size(), 5u);
}

TEST_F(BrokerSubscribeTest, NewMessagesArePushedAsTheyArrive) {
  const PeerId p = connect();
  const PeerId c = connect();
  const std::uint64_t sub = subscribe(c, "jobs", 10, true);
  EXPECT_TRUE(to(c).empty());
  put(p, "jobs", "a");
  put(p, "jobs", "b");
  ASSERT_EQ(to(c).size(), 2u);
  EXPECT_EQ(to(c)[0]->correlation, sub);
  EXPECT_EQ(to(c)[1]->payload, "b");
}

TEST_F(BrokerSubscribeTest, SubscribersTakeTurns) {
  const PeerId p = connect();
  const PeerId a = connect();
  const PeerId b = connect();
  subscribe(a, "jobs", 100, true);
  subscribe(b, "jobs", 100, true);
  for (int i = 0; i < 10; ++i)
    put(p, "jobs", std::to_string(i));
  EXPECT_EQ(to(a).size(), 5u);
  EXPECT_EQ(to(b).size(), 5u);
}

TEST_F(BrokerSubscribeTest, WithoutAcksItPushesWhileTheConsumerReads) {
  const PeerId p = connect();
  const PeerId c = connect();
  subscribe(c, "jobs", 0, false);
  put(p, "jobs", "a");
  ASSERT_EQ(to(c).size(), 1u);
  EXPECT_FALSE(to(c)[0]->has_extras) << "at most once: no tag";
  sink_.set_wants_more(c, false);
  put(p, "jobs", "b");
  EXPECT_EQ(to(c).size(), 1u);
  EXPECT_EQ(depth("jobs"), 1u);
  sink_.set_wants_more(c, true);
  broker().output_ready(c, now_);
  EXPECT_EQ(to(c).size(), 2u);
}

TEST_F(BrokerSubscribeTest, UnsubscribeStopsThePushesAndKeepsWhatIsHeld) {
  const PeerId p = connect();
  const PeerId c = connect();
  const std::uint64_t sub = subscribe(c, "jobs", 10, true);
  put(p, "jobs", "a");
  ASSERT_EQ(to(c).size(), 1u);
  EXPECT_TRUE(broker().unsubscribe(c, sub, now_));
  EXPECT_FALSE(broker().unsubscribe(c, sub, now_));
  put(p, "jobs", "b");
  EXPECT_EQ(to(c).size(), 1u);
  EXPECT_EQ(depth("jobs"), 1u);
  EXPECT_EQ(broker().ack(c, to(c)[0]->tag, false, now_).error, Errc::ok);
}

TEST_F(BrokerSubscribeTest, ASubscriberThatLeavesHasItsMessagesPushedToAnother) {
  const PeerId p = connect();
  const PeerId a = connect();
  const PeerId b = connect();
  subscribe(a, "jobs", 1, true);
  put(p, "jobs", "x");
  ASSERT_EQ(to(a).size(), 1u);
  subscribe(b, "jobs", 1, true);
  EXPECT_TRUE(to(b).empty());
  broker().disconnect(a, now_);
  ASSERT_EQ(to(b).size(), 1u);
  EXPECT_EQ(to(b)[0]->payload, "x");
  EXPECT_EQ(to(b)[0]->count, 2u);
}

TEST_F(BrokerSubscribeTest, ASubscriptionCountsAsAWaitingReceive) {
  limits_.max_waiting_receives = 1;
  const PeerId c = connect();
  subscribe(c, "a", 1, true);
  const std::uint64_t second = subscribe(c, "b", 1, true);
  ASSERT_EQ(failures_to(c).size(), 1u);
  EXPECT_EQ(failures_to(c)[0].correlation, second);
  EXPECT_EQ(failures_to(c)[0].code, Errc::too_many_receives);
  EXPECT_EQ(broker().find("b"), nullptr);
}

TEST_F(BrokerSubscribeTest, DeletingTheQueueEndsTheSubscription) {
  const PeerId c = connect();
  const std::uint64_t sub = subscribe(c, "jobs", 1, true);
  ASSERT_TRUE(broker().remove("jobs").has_value());
  ASSERT_EQ(failures_to(c).size(), 1u);
  EXPECT_EQ(failures_to(c)[0].correlation, sub);
  EXPECT_EQ(failures_to(c)[0].code, Errc::queue_deleted);
  EXPECT_FALSE(broker().unsubscribe(c, sub, now_));
}

}  // namespace
}  // namespace qbus::broker
