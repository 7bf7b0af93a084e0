// Unit tests of queue owners: which uid a queue records as its creator, and that changing a
// live queue's options by DECLARE takes that uid, root or the policy's manage grant, while
// declaring the options it already has stays open to every uid (issue 12, capability 3).
#include <gtest/gtest.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "broker_fixture.hpp"

namespace qbus::broker {
namespace {

using namespace fakes;  // the fixture, the recording sink and their helpers

constexpr std::uint32_t kRoot = 0;
constexpr std::uint32_t kNobody = 65534;
constexpr std::uint32_t kOps = 4242;

std::optional<std::uint32_t> owner_of(const Broker& b, std::string_view key) {
  const Queue* q = b.find(key);
  EXPECT_NE(q, nullptr) << key;
  return q ? q->keeper().owner : std::nullopt;
}

TEST_F(BrokerTest, QueueRecordsTheUidWhoseFrameCreatedIt) {
  const PeerId sender = connect(1000);
  const PeerId receiver = connect(2000);
  const PeerId declarer = connect(3000);
  const PeerId requester = connect(4000);
  put(sender, "sent", "1");
  ASSERT_EQ(request(requester, 1, "requested", "1").result, SendResult::accepted);
  receive(receiver, "waited");
  ASSERT_EQ(declare_by(declarer, "declared"), Errc::ok);
  ASSERT_EQ(declare("configured", QueueOptions{}), Errc::ok);

  EXPECT_EQ(owner_of(broker(), "sent"), 1000u);
  EXPECT_EQ(owner_of(broker(), "waited"), 2000u);
  EXPECT_EQ(owner_of(broker(), "declared"), 3000u);
  EXPECT_EQ(owner_of(broker(), "requested"), 4000u);
  EXPECT_EQ(owner_of(broker(), "configured"), std::nullopt);
}

TEST_F(BrokerTest, AQueueMadeAgainFromTheStashHasItsNewCreatorAsOwner) {
  const PeerId first = connect(1000);
  const PeerId second = connect(2000);
  put(first, "jobs", "1");
  receive_now(first, "jobs");
  ASSERT_EQ(broker().find("jobs"), nullptr);  // collected, its node kept for reuse
  put(second, "jobs", "2");
  EXPECT_EQ(owner_of(broker(), "jobs"), 2000u);
}

TEST_F(BrokerTest, OwnerStaysWhenTheDeclarerAndTheChargeMove) {
  const PeerId creator = connect(1000);
  const PeerId other = connect(2000);
  put(creator, "jobs", "1");
  // The queue's current options, asked for by another uid: allowed as before, and that
  // uid becomes the declarer and is charged the queue.
  ASSERT_EQ(declare_by(other, "jobs", options(0, 0, Overflow::use_default)), Errc::ok);
  EXPECT_TRUE(broker().find("jobs")->declared());
  EXPECT_EQ(broker().find("jobs")->keeper().declarer, other);
  EXPECT_EQ(usage_of(2000).queues, 1u);
  EXPECT_EQ(usage_of(1000).queues, 0u);
  EXPECT_EQ(owner_of(broker(), "jobs"), 1000u);
}

TEST_F(BrokerTest, AnotherUidMayDeclareExactlyTheCurrentOptions) {
  const PeerId creator = connect(1000);
  const PeerId other = connect(2000);
  put(creator, "jobs", "1");
  const QueueOptions current = broker().find("jobs")->options();
  ASSERT_EQ(declare_by(other, "jobs", current), Errc::ok);
  const Queue* q = broker().find("jobs");
  EXPECT_TRUE(q->declared());
  EXPECT_EQ(q->options().max_messages, current.max_messages);
  EXPECT_EQ(q->options().overflow, current.overflow);
}

TEST_F(BrokerTest, AnotherUidMayNotDeclareOtherOptionsOnALiveQueue) {
  const PeerId owner = connect(kRoot);
  const PeerId attacker = connect(kNobody);
  put(owner, "orders", "1");
  const QueueOptions before = broker().find("orders")->options();

  std::string text;
  EXPECT_EQ(declare_by(attacker, "orders", options(1, 0, Overflow::drop_oldest), &text),
            Errc::permission_denied);
  EXPECT_EQ(text, "declare of queue 'orders' with other options: owned by uid 0");

  // Nothing changed: options, declaration, declarer, charge.
  const Queue* q = broker().find("orders");
  EXPECT_EQ(q->options().max_messages, before.max_messages);
  EXPECT_EQ(q->options().overflow, before.overflow);
  EXPECT_FALSE(q->declared());
  EXPECT_EQ(q->keeper().declarer, 0u);
  EXPECT_EQ(usage_of(kRoot).queues, 1u);
  EXPECT_EQ(usage_of(kNobody).queues, 0u);
  put(owner, "orders", "2");
  put(owner, "orders", "3");
  EXPECT_EQ(depth("orders"), 3u);
  EXPECT_EQ(q->counters().dropped_total, 0u);
}

TEST_F(BrokerTest, TheOwnerMayDeclareOtherOptions) {
  const PeerId sender = connect(1000);
  const PeerId declarer = connect(1000);  // another connection of the same uid
  put(sender, "jobs", "1");
  ASSERT_EQ(declare_by(declarer, "jobs", options(2, 100, Overflow::reject)), Errc::ok);
  const Queue* q = broker().find("jobs");
  EXPECT_TRUE(q->declared());
  EXPECT_EQ(q->options().max_messages, 2u);
  EXPECT_EQ(q->options().overflow, Overflow::reject);
}

TEST_F(BrokerTest, RootMayDeclareOtherOptionsOnAnotherUidsQueue) {
  const PeerId sender = connect(1000);
  const PeerId root = connect(kRoot);
  put(sender, "jobs", "1");
  ASSERT_EQ(declare_by(root, "jobs", options(2, 100, Overflow::reject)), Errc::ok);
  const Queue* q = broker().find("jobs");
  EXPECT_EQ(q->options().max_messages, 2u);
  EXPECT_EQ(usage_of(kRoot).queues, 1u);         // the charge moves to the declarer, as before
  EXPECT_EQ(owner_of(broker(), "jobs"), 1000u);  // the owner does not
}

TEST_F(BrokerTest, OnlyRootMayChangeAConfiguredQueueOnceItWasReleased) {
  limits_.declared_queue_grace_ms = 0;
  ASSERT_EQ(declare("cfg", options(5, 100, Overflow::reject)), Errc::ok);
  const PeerId user = connect(1000);
  const PeerId root = connect(kRoot);
  std::string text;
  // While configured, other options conflict for everyone, as before.
  EXPECT_EQ(declare_by(user, "cfg", options(6, 100, Overflow::reject), &text),
            Errc::queue_conflict);
  EXPECT_EQ(declare_by(root, "cfg", options(6, 100, Overflow::reject)), Errc::queue_conflict);

  put(user, "cfg", "1");  // keeps it alive once released
  ASSERT_TRUE(broker().release_configured("cfg", now_));
  ASSERT_FALSE(broker().find("cfg")->declared());
  EXPECT_EQ(owner_of(broker(), "cfg"), std::nullopt);
  EXPECT_EQ(declare_by(user, "cfg", options(6, 100, Overflow::reject), &text),
            Errc::permission_denied);
  EXPECT_EQ(text, "declare of queue 'cfg' with other options: owned by the configuration");
  EXPECT_EQ(declare_by(root, "cfg", options(6, 100, Overflow::reject)), Errc::ok);
  EXPECT_EQ(broker().find("cfg")->options().max_messages, 6u);
}

TEST_F(BrokerTest, AConfiguredQueueTakenFromAUidIsTheConfigurations) {
  const PeerId user = connect(1000);
  put(user, "jobs", "1");
  ASSERT_EQ(owner_of(broker(), "jobs"), 1000u);
  ASSERT_EQ(declare("jobs", QueueOptions{}), Errc::ok);
  EXPECT_EQ(owner_of(broker(), "jobs"), std::nullopt);
}

TEST_F(BrokerTest, RedeclaringWithOtherOptionsTakesTheOwnerRootOrAManageGrant) {
  // Members of `kOps` may manage the `jobs.` queues; the default allows the rest.
  PolicySpec spec;
  PolicyRule grant;
  grant.operations = operation_bit(Operation::manage);
  grant.gids = {kOps};
  grant.prefixes = {"jobs."};
  spec.rules = {grant};
  broker().set_policy(std::make_unique<Policy>(std::move(spec)));
  const PeerId owner = connect(kRoot);
  const PeerId other = connect(kNobody);
  const PeerId ops = next_peer_++;
  const std::vector<std::uint32_t> groups = {kOps};
  ASSERT_EQ(broker().connect(ops, identity_for(ops, kNobody), now_, groups), Errc::ok);
  put(owner, "jobs.a", "1");
  std::string text;
  EXPECT_EQ(declare_by(other, "jobs.a", options(1, 0, Overflow::drop_oldest), &text),
            Errc::permission_denied);
  EXPECT_EQ(text,
            "declare of queue 'jobs.a' with other options: owned by uid 0; no policy rule "
            "grants manage of it");
  EXPECT_FALSE(broker().find("jobs.a")->declared());
  ASSERT_EQ(declare_by(ops, "jobs.a", options(2, 0, Overflow::reject)), Errc::ok);
  EXPECT_EQ(broker().find("jobs.a")->options().max_messages, 2u);
  // Asking for the options it has is still open to all, and asks the policy nothing.
  sink_.denials.clear();
  put(owner, "jobs.b", "1");
  EXPECT_EQ(declare_by(other, "jobs.b", broker().find("jobs.b")->options()), Errc::ok);
  EXPECT_TRUE(sink_.denials.empty());
}

}  // namespace
}  // namespace qbus::broker
