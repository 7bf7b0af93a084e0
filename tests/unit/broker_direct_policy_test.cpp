// Direct messages under the access policy (Core::direct_permitted): a refusal is
// permission_denied naming the target and audited, the same uid and root pass by default,
// replies always pass, held sends are judged when their process connects, and a reload
// voids the cached verdicts.
#include <memory>

#include "broker_fixture.hpp"

namespace qbus::broker::fakes {
namespace {

constexpr std::uint32_t kRoot = 0;
constexpr std::uint32_t kAlice = 1000;
constexpr std::uint32_t kBob = 1001;
constexpr std::uint32_t kWorkers = 4242;

// Nothing but the built-in direct allowances; every key is open.
std::unique_ptr<const Policy> deny_by_default(std::vector<PolicyRule> rules = {}) {
  PolicyRule keys;
  keys.operations = kAllOperations;
  keys.everyone = true;
  keys.prefixes = {"svc"};
  rules.insert(rules.begin(), keys);
  return std::make_unique<Policy>(PolicySpec{false, std::move(rules)});
}

class BrokerDirectPolicyTest : public BrokerTest {
 protected:
  PeerId connect_with_groups(std::uint32_t uid, std::vector<std::uint32_t> groups) {
    const PeerId peer = next_peer_++;
    EXPECT_EQ(broker().connect(peer, identity_for(peer, uid), now_, groups), Errc::ok);
    return peer;
  }
};

TEST_F(BrokerDirectPolicyTest, CrossUidIsDeniedNamingThePidWhileTheSameUidAndRootPass) {
  broker().set_policy(deny_by_default());
  const PeerId alice = connect(kAlice);
  const PeerId alice2 = connect(kAlice);
  const PeerId bob = connect(kBob);
  const PeerId root = connect(kRoot);

  const auto out = send_to_pid(alice, pid_of(bob), "x");
  EXPECT_EQ(out.result, SendResult::rejected);
  EXPECT_EQ(out.error, Errc::permission_denied);
  EXPECT_EQ(out.text, "send_direct to pid " + std::to_string(pid_of(bob)) + " denied by policy");
  const auto by_id = send_to_client(alice, bob, "x");
  EXPECT_EQ(by_id.text, "send_direct to client " + std::to_string(bob) + " denied by policy");
  // Audited once per refusal, with the target and its uid, and the default as the decider.
  const Denial first{alice, Operation::send_direct,
                     "pid " + std::to_string(pid_of(bob)) + " (uid 1001)", -1};
  const Denial second{alice, Operation::send_direct,
                      "client " + std::to_string(bob) + " (uid 1001)", -1};
  EXPECT_EQ(sink_.denials, (std::vector<Denial>{first, second}));
  EXPECT_EQ(broker().inbox_depth(bob), 0u);

  EXPECT_EQ(send_to_pid(alice, pid_of(alice2), "same uid").result, SendResult::accepted);
  EXPECT_EQ(send_to_pid(root, pid_of(bob), "from root").result, SendResult::accepted);
  EXPECT_EQ(broker().inbox_depth(alice2), 1u);
  EXPECT_EQ(broker().inbox_depth(bob), 1u);
  EXPECT_EQ(sink_.denials.size(), 2u);
}

TEST_F(BrokerDirectPolicyTest, AGroupRuleAdmitsThroughTheReceiversSupplementaryGroup) {
  PolicyRule workers;
  workers.operations = operation_bit(Operation::send_direct);
  workers.uids = {kAlice};
  workers.to_gids = {kWorkers};
  broker().set_policy(deny_by_default({workers}));
  const PeerId alice = connect(kAlice);
  const PeerId worker = connect_with_groups(kBob, {7, kWorkers});
  const PeerId other = connect(kBob);
  EXPECT_EQ(send_to_pid(alice, pid_of(worker), "hi").result, SendResult::accepted);
  EXPECT_EQ(send_to_pid(alice, pid_of(other), "hi").error, Errc::permission_denied);
  ASSERT_EQ(sink_.denials.size(), 1u);
  EXPECT_EQ(sink_.denials[0].rule, -1);
}

TEST_F(BrokerDirectPolicyTest, DenyBeatsAllowAtEqualSpecificityAndTheRuleIsAudited) {
  PolicyRule allow;
  allow.operations = operation_bit(Operation::send_direct);
  allow.everyone = true;
  allow.to_uids = {kBob};
  PolicyRule deny = allow;
  deny.allow = false;
  deny.everyone = false;
  deny.uids = {kAlice};
  broker().set_policy(deny_by_default({allow, deny}));  // rules 1 and 2
  const PeerId alice = connect(kAlice);
  const PeerId carol = connect(1002);
  const PeerId bob = connect(kBob);
  EXPECT_EQ(send_to_pid(alice, pid_of(bob), "x").error, Errc::permission_denied);
  EXPECT_EQ(send_to_pid(carol, pid_of(bob), "x").result, SendResult::accepted);
  ASSERT_EQ(sink_.denials.size(), 1u);
  EXPECT_EQ(sink_.denials[0].rule, 2);
}

TEST_F(BrokerDirectPolicyTest, AReplyReachesARequesterTheReplierMayNotSendTo) {
  broker().set_policy(deny_by_default());
  const PeerId requester = connect(kAlice);
  const PeerId worker = connect(kBob);
  const auto asked = receive(worker, "svc", 1, 1000);
  ASSERT_EQ(request(requester, 7, "svc", "ping", 1000).result, SendResult::accepted);
  ASSERT_EQ(sink_.deliveries.size(), 1u);
  EXPECT_EQ(sink_.deliveries[0].correlation, asked);
  // Neither may send the other a direct message...
  EXPECT_EQ(send_to_client(worker, requester, "x").error, Errc::permission_denied);
  EXPECT_EQ(send_to_client(requester, worker, "x").error, Errc::permission_denied);
  // ...but the reply is not judged.
  EXPECT_EQ(reply(worker, requester, 7, "pong").result, SendResult::accepted);
  EXPECT_EQ(payloads_to(requester), std::vector<std::string>{"pong"});
}

TEST_F(BrokerDirectPolicyTest, AHeldSendIsJudgedWhenItsProcessConnects) {
  broker().set_policy(deny_by_default());
  const PeerId alice = connect(kAlice);
  constexpr std::uint32_t kPid = 777;
  std::uint64_t corr = 0;
  EXPECT_EQ(send_to_pid(alice, kPid, "later", 1000, true, &corr).result, SendResult::deferred);
  const PeerId bob = connect_process(kPid, 1, kBob);
  const auto failed = failures_to(alice);
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_EQ(failed[0].correlation, corr);
  EXPECT_EQ(failed[0].code, Errc::permission_denied);
  EXPECT_EQ(failed[0].text, "send_direct to pid 777 denied by policy");
  EXPECT_EQ(broker().inbox_depth(bob), 0u);
  EXPECT_EQ(usage_of(kAlice).queued_messages, 0u);
}

TEST_F(BrokerDirectPolicyTest, AReloadedPolicyVoidsTheCachedDirectVerdicts) {
  broker().set_policy(deny_by_default());
  const PeerId alice = connect(kAlice);
  const PeerId bob = connect(kBob);
  EXPECT_EQ(send_to_pid(alice, pid_of(bob), "x").error, Errc::permission_denied);
  broker().set_policy(std::make_unique<Policy>(PolicySpec{true, {}}));
  EXPECT_EQ(send_to_pid(alice, pid_of(bob), "x").result, SendResult::accepted);
  broker().set_policy(deny_by_default());
  EXPECT_EQ(send_to_pid(alice, pid_of(bob), "x").error, Errc::permission_denied);
}

// The key fast path remembers the key allowed last; a reload noticed first by a direct
// message must forget it too, or the next send reads a freed entry and may pass a key the
// new policy denies (found in review; ASan reported a heap-use-after-free here).
TEST_F(BrokerDirectPolicyTest, AReloadNoticedByADirectMessageVoidsTheLastAllowedKey) {
  broker().set_policy(deny_by_default());
  const PeerId alice = connect(kAlice);
  const PeerId alice2 = connect(kAlice);
  EXPECT_EQ(send(alice, "svc.a", "1").result, SendResult::accepted);
  broker().set_policy(std::make_unique<Policy>(PolicySpec{false, {}}));
  EXPECT_EQ(send_to_pid(alice, pid_of(alice2), "same uid").result, SendResult::accepted);
  EXPECT_EQ(send(alice, "svc.a", "2").error, Errc::permission_denied);
}

}  // namespace
}  // namespace qbus::broker::fakes
