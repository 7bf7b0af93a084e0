// Unit tests of who may manage a queue (issue 12, capability 3): a client's purge and
// delete (PURGE, DELETE) and a re-declaration with other options take the queue's owner,
// root, or the policy's `manage` grant for the key; a refusal names the operation and the
// key and changes nothing, and the effects are the operator's purge and delete.
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "broker_fixture.hpp"

namespace qbus::broker {
namespace {

using namespace fakes;

constexpr std::uint32_t kRoot = 0;
constexpr std::uint32_t kNobody = 65534;
constexpr std::uint32_t kOps = 4242;

// `ops` may manage `jobs.`...; every operation is otherwise left to `default_allow`.
std::unique_ptr<const Policy> manage_policy(bool default_allow = true) {
  PolicySpec spec;
  spec.default_allow = default_allow;
  PolicyRule ops;
  ops.operations = operation_bit(Operation::manage);
  ops.gids = {kOps};
  ops.prefixes = {"jobs."};
  spec.rules = {ops};
  return std::make_unique<Policy>(std::move(spec));
}

class BrokerManageTest : public BrokerTest {
 protected:
  PeerId connect_in_ops(std::uint32_t uid) {
    const PeerId peer = next_peer_++;
    const std::vector<std::uint32_t> groups = {kOps};
    EXPECT_EQ(broker().connect(peer, identity_for(peer, uid), now_, groups), Errc::ok);
    return peer;
  }
};

TEST_F(BrokerManageTest, TheOwnerPurgesItsQueueAndTheWaitersStay) {
  const PeerId owner = connect(1000);
  const PeerId waiter = connect(2000);
  put(owner, "jobs.a", "1");
  put(owner, "jobs.a", "2");
  const DropOutcome purged = broker().purge_for(owner, "jobs.a");
  ASSERT_EQ(purged.error, Errc::ok) << purged.text;
  EXPECT_EQ(purged.dropped, 2u);
  EXPECT_EQ(depth("jobs.a"), 0u);
  EXPECT_EQ(usage_of(1000).queued_messages, 0u);
  // A purge keeps the queue's waiters: the next message goes to one.
  receive(waiter, "jobs.a");
  put(owner, "jobs.a", "3");
  EXPECT_EQ(payloads_to(waiter), std::vector<std::string>{"3"});
}

TEST_F(BrokerManageTest, TheOwnerDeletesItsQueueWithItsMessages) {
  const PeerId owner = connect(1000);
  put(owner, "jobs.a", "1");
  put(owner, "jobs.a", "2");
  const DropOutcome deleted = broker().remove_for(owner, "jobs.a");
  ASSERT_EQ(deleted.error, Errc::ok) << deleted.text;
  EXPECT_EQ(deleted.dropped, 2u);
  EXPECT_EQ(broker().find("jobs.a"), nullptr);
  EXPECT_EQ(usage_of(1000).queues, 0u);
  EXPECT_EQ(usage_of(1000).queued_messages, 0u);
}

TEST_F(BrokerManageTest, DeletingEndsTheWaitingReceivesWithQueueDeleted) {
  const PeerId owner = connect(1000);
  const PeerId waiter = connect(2000);
  ASSERT_EQ(declare_by(owner, "jobs.a"), Errc::ok);
  const std::uint64_t corr = receive(waiter, "jobs.a");
  const DropOutcome deleted = broker().remove_for(owner, "jobs.a");
  ASSERT_EQ(deleted.error, Errc::ok) << deleted.text;
  EXPECT_EQ(deleted.dropped, 0u);
  const auto failed = failures_to(waiter);
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_EQ(failed[0].correlation, corr);
  EXPECT_EQ(failed[0].code, Errc::queue_deleted);
  EXPECT_EQ(failed[0].text, "queue 'jobs.a' was deleted");
  EXPECT_EQ(broker().find("jobs.a"), nullptr);
}

TEST_F(BrokerManageTest, AnotherUidIsRefusedNamingTheOperationAndKeyAndNothingChanges) {
  const PeerId owner = connect(kRoot);
  const PeerId other = connect(kNobody);
  put(owner, "orders", "1");
  const DropOutcome purged = broker().purge_for(other, "orders");
  EXPECT_EQ(purged.error, Errc::permission_denied);
  EXPECT_EQ(purged.text, "purge of queue 'orders': owned by uid 0");
  const DropOutcome deleted = broker().remove_for(other, "orders");
  EXPECT_EQ(deleted.error, Errc::permission_denied);
  EXPECT_EQ(deleted.text, "delete of queue 'orders': owned by uid 0");
  EXPECT_EQ(depth("orders"), 1u);
  EXPECT_TRUE(sink_.denials.empty());  // no policy: nothing to audit by rule
}

TEST_F(BrokerManageTest, RootMayPurgeAndDeleteAnyQueueAndAConfiguredOne) {
  const PeerId user = connect(1000);
  const PeerId root = connect(kRoot);
  put(user, "jobs.a", "1");
  ASSERT_EQ(declare("cfg", QueueOptions{}), Errc::ok);
  put(user, "cfg", "1");
  EXPECT_EQ(broker().purge_for(root, "jobs.a").dropped, 1u);
  EXPECT_EQ(broker().remove_for(root, "cfg").error, Errc::ok);
  EXPECT_EQ(broker().find("cfg"), nullptr);
}

TEST_F(BrokerManageTest, AConfiguredQueueIsNobodysToManageButRoots) {
  const PeerId user = connect(1000);
  ASSERT_EQ(declare("cfg", QueueOptions{}), Errc::ok);
  put(user, "cfg", "1");
  const DropOutcome purged = broker().purge_for(user, "cfg");
  EXPECT_EQ(purged.error, Errc::permission_denied);
  EXPECT_EQ(purged.text, "purge of queue 'cfg': owned by the configuration");
  EXPECT_EQ(depth("cfg"), 1u);
}

TEST_F(BrokerManageTest, NoSuchQueueIsNamed) {
  const PeerId user = connect(1000);
  const DropOutcome purged = broker().purge_for(user, "nothing.here");
  EXPECT_EQ(purged.error, Errc::no_such_queue);
  EXPECT_EQ(purged.text, "purge: no queue 'nothing.here'");
  EXPECT_EQ(broker().remove_for(user, "nothing.here").error, Errc::no_such_queue);
  EXPECT_EQ(broker().find("nothing.here"), nullptr);  // asking did not create it
}

TEST_F(BrokerManageTest, AManageGrantLetsAnotherUidPurgeAndDelete) {
  broker().set_policy(manage_policy());
  const PeerId owner = connect(kRoot);
  const PeerId ops = connect_in_ops(kNobody);
  put(owner, "jobs.a", "1");
  put(owner, "jobs.b", "1");
  EXPECT_EQ(broker().purge_for(ops, "jobs.a").dropped, 1u);
  EXPECT_EQ(broker().remove_for(ops, "jobs.b").error, Errc::ok);
  EXPECT_EQ(broker().find("jobs.b"), nullptr);
  EXPECT_TRUE(sink_.denials.empty());
}

TEST_F(BrokerManageTest, AnAllowDefaultGrantsNoManageAndTheRefusalIsAudited) {
  broker().set_policy(manage_policy(/*default_allow=*/true));
  const PeerId owner = connect(kRoot);
  const PeerId other = connect(kNobody);  // not in ops
  put(owner, "jobs.a", "1");
  put(owner, "other", "1");
  const DropOutcome purged = broker().purge_for(other, "other");
  EXPECT_EQ(purged.error, Errc::permission_denied);
  EXPECT_EQ(purged.text,
            "purge of queue 'other': owned by uid 0; no policy rule grants manage of it");
  EXPECT_EQ(broker().remove_for(other, "jobs.a").error, Errc::permission_denied);
  EXPECT_EQ(depth("other"), 1u);
  EXPECT_EQ(depth("jobs.a"), 1u);
  ASSERT_EQ(sink_.denials.size(), 2u);
  EXPECT_EQ(sink_.denials[0], (Denial{other, Operation::manage, "other", -1}));
  EXPECT_EQ(sink_.denials[1], (Denial{other, Operation::manage, "jobs.a", -1}));
}

TEST_F(BrokerManageTest, TheOwnerNeedsNoGrantEvenWhereThePolicyDeniesManage) {
  const PeerId owner = connect(1000);
  put(owner, "jobs.a", "1");  // before the policy, which refuses the owner's sends too
  PolicySpec spec;
  spec.default_allow = false;
  PolicyRule deny;
  deny.allow = false;
  deny.operations = kAllOperations;
  deny.everyone = true;
  deny.prefixes = {"jobs."};
  spec.rules = {deny};
  broker().set_policy(std::make_unique<Policy>(std::move(spec)));
  EXPECT_EQ(broker().purge_for(owner, "jobs.a").dropped, 1u);
  EXPECT_TRUE(sink_.denials.empty());
}

}  // namespace
}  // namespace qbus::broker
