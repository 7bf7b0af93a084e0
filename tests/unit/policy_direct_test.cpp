// The access policy's decisions on direct messages (Policy::decide_direct), without a
// broker: the built-in same-uid and root allowances, receivers named by uid, group
// (primary or supplementary) or everyone, specificity and deny over allow.
#include <gtest/gtest.h>

#include <vector>

#include "broker/policy.hpp"

namespace qbus::broker {
namespace {

constexpr std::uint32_t kAlice = 1000;
constexpr std::uint32_t kBob = 1001;
constexpr std::uint32_t kCarol = 1002;
constexpr std::uint32_t kWorkers = 2000;  // a supplementary group of bob

const std::vector<std::uint32_t> kBobGroups{3000, kWorkers};

Principal alice() {
  return Principal{kAlice, kAlice, {}};
}
Principal bob() {
  return Principal{kBob, kBob, kBobGroups};
}
Principal carol() {
  return Principal{kCarol, kCarol, {}};
}
Principal root() {
  return Principal{0, 0, {}};
}

// A send_direct rule from alice to the receivers `to` names.
PolicyRule from_alice(bool allow, void (*to)(PolicyRule&)) {
  PolicyRule r;
  r.allow = allow;
  r.operations = operation_bit(Operation::send_direct);
  r.uids = {kAlice};
  to(r);
  return r;
}
void to_bob(PolicyRule& r) {
  r.to_uids = {kBob};
}
void to_workers(PolicyRule& r) {
  r.to_gids = {kWorkers};
}
void to_everyone(PolicyRule& r) {
  r.to_everyone = true;
}

TEST(PolicyDirectTest, WithoutARuleTheSameUidAndRootMaySendAndTheDefaultDecidesTheRest) {
  for (bool default_allow : {false, true}) {
    const Policy p(PolicySpec{default_allow, {}});
    const Principal alice_again{kAlice, kAlice, {}};
    EXPECT_EQ(p.decide_direct(alice(), alice_again).rule, Decision::kSameUid);
    EXPECT_TRUE(p.decide_direct(alice(), alice_again).allowed);
    EXPECT_EQ(p.decide_direct(root(), bob()).rule, Decision::kRoot);
    EXPECT_TRUE(p.decide_direct(root(), bob()).allowed);
    EXPECT_EQ(p.decide_direct(alice(), bob()).rule, -1);
    EXPECT_EQ(p.decide_direct(alice(), bob()).allowed, default_allow);
    // Root is a receiver like any other.
    EXPECT_EQ(p.decide_direct(alice(), root()).allowed, default_allow);
  }
}

TEST(PolicyDirectTest, AGroupRuleMatchesTheReceiversSupplementaryGroup) {
  const Policy p(PolicySpec{false, {from_alice(true, to_workers)}});
  const Decision d = p.decide_direct(alice(), bob());
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.rule, 0);
  // Carol is not a worker; bob, not named as a sender, may not send to alice.
  EXPECT_FALSE(p.decide_direct(alice(), carol()).allowed);
  EXPECT_FALSE(p.decide_direct(bob(), alice()).allowed);
  // The primary group counts too.
  EXPECT_TRUE(p.decide_direct(alice(), Principal{kCarol, kWorkers, {}}).allowed);
}

TEST(PolicyDirectTest, AUidTargetBeatsAGroupTargetWhichBeatsEveryone) {
  // Deny to everyone, allow to workers, deny to bob: bob is denied by rule 2 and another
  // worker allowed by rule 1, whatever the order of the rules.
  const std::vector<PolicyRule> rules{from_alice(false, to_everyone), from_alice(true, to_workers),
                                      from_alice(false, to_bob)};
  const Policy p(PolicySpec{true, rules});
  EXPECT_EQ(p.decide_direct(alice(), bob()).rule, 2);
  EXPECT_FALSE(p.decide_direct(alice(), bob()).allowed);
  const Principal worker{kCarol, kCarol, kBobGroups};
  EXPECT_EQ(p.decide_direct(alice(), worker).rule, 1);
  EXPECT_TRUE(p.decide_direct(alice(), worker).allowed);
  EXPECT_EQ(p.decide_direct(alice(), carol()).rule, 0);
  EXPECT_FALSE(p.decide_direct(alice(), carol()).allowed);

  const Policy reversed(PolicySpec{true, {rules[2], rules[1], rules[0]}});
  EXPECT_EQ(reversed.decide_direct(alice(), bob()).rule, 0);
  EXPECT_EQ(reversed.decide_direct(alice(), worker).rule, 1);
}

TEST(PolicyDirectTest, DenyWinsOverAllowAtEqualSpecificityInEitherOrder) {
  const PolicyRule allow = from_alice(true, to_bob);
  const PolicyRule deny = from_alice(false, to_bob);
  for (const auto& rules :
       {std::vector<PolicyRule>{allow, deny}, std::vector<PolicyRule>{deny, allow}}) {
    const Decision d = Policy(PolicySpec{true, rules}).decide_direct(alice(), bob());
    EXPECT_FALSE(d.allowed);
    EXPECT_EQ(d.rule, rules[0].allow ? 1 : 0);
  }
}

TEST(PolicyDirectTest, ARuleOverridesTheSameUidAllowance) {
  PolicyRule r = from_alice(false, to_everyone);
  const Decision d = Policy(PolicySpec{true, {r}}).decide_direct(alice(), alice());
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.rule, 0);
}

TEST(PolicyDirectTest, DirectRulesAndKeyRulesDoNotDecideForEachOther) {
  PolicyRule keys;
  keys.allow = false;
  keys.operations = kAllOperations;
  keys.everyone = true;
  keys.prefixes = {"a"};
  const Policy p(PolicySpec{true, {keys, from_alice(false, to_everyone)}});
  // The key rule does not judge a direct message, and the direct rule no key.
  EXPECT_EQ(p.decide_direct(bob(), alice()).rule, -1);
  EXPECT_TRUE(p.decide_direct(bob(), alice()).allowed);
  EXPECT_TRUE(p.decide(Operation::send, alice(), "b").allowed);
  EXPECT_EQ(p.decide(Operation::send, alice(), "b").rule, -1);
  EXPECT_EQ(p.decide(Operation::send, alice(), "a").rule, 0);
}

}  // namespace
}  // namespace qbus::broker
