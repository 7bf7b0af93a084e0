// The access policy's evaluation (broker/policy.hpp), without a broker: which rule matches
// which key and principal, specificity, deny over allow, the default.
#include "broker/policy.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace qbus::broker {
namespace {

constexpr std::uint32_t kAlice = 1000;
constexpr std::uint32_t kAliceGid = 1000;
constexpr std::uint32_t kJobsGid = 2000;  // a supplementary group of alice
constexpr std::uint32_t kBob = 1001;
constexpr std::uint32_t kBobGid = 1001;

const std::vector<std::uint32_t> kAliceGroups{kJobsGid, 3000};

Principal alice() {
  return Principal{kAlice, kAliceGid, kAliceGroups};
}
Principal bob() {
  return Principal{kBob, kBobGid, {}};
}

enum class Who { uid, gid, group };
enum class Match { exact, prefix, pattern };

// One rule naming alice by `who`, for `op`, on the keys of secret.jobs by `match`.
PolicyRule rule_for(bool allow, Operation op, Who who, Match match) {
  PolicyRule r;
  r.allow = allow;
  r.operations = operation_bit(op);
  if (who == Who::uid) r.uids = {kAlice};
  if (who == Who::gid) r.gids = {kAliceGid};
  if (who == Who::group) r.gids = {kJobsGid};
  if (match == Match::exact) r.keys = {"secret.jobs"};
  if (match == Match::prefix) r.prefixes = {"secret."};
  if (match == Match::pattern) r.keys = {"secret.*"};
  return r;
}

TEST(PolicyTest, EachOperationPrincipalAndMatchDecidesForTheNamedOnly) {
  for (Operation op :
       {Operation::send, Operation::receive, Operation::declare, Operation::request}) {
    for (bool allow : {true, false}) {
      for (Who who : {Who::uid, Who::gid, Who::group}) {
        for (Match match : {Match::exact, Match::prefix, Match::pattern}) {
          SCOPED_TRACE(std::string(operation_name(op)) + (allow ? " allow" : " deny") + " who " +
                       std::to_string(static_cast<int>(who)) + " match " +
                       std::to_string(static_cast<int>(match)));
          PolicySpec spec;
          spec.default_allow = !allow;
          spec.rules.push_back(rule_for(allow, op, who, match));
          const Policy p(spec);
          // The named principal, the operation and a matching key: the rule decides.
          const Decision d = p.decide(op, alice(), "secret.jobs");
          EXPECT_EQ(d.allowed, allow);
          EXPECT_EQ(d.rule, 0);
          // Anyone else, another operation or a key outside: the default.
          EXPECT_EQ(p.decide(op, bob(), "secret.jobs").allowed, !allow);
          EXPECT_EQ(p.decide(op, alice(), "public.jobs").allowed, !allow);
          const Operation other = op == Operation::send ? Operation::receive : Operation::send;
          EXPECT_EQ(p.decide(other, alice(), "secret.jobs").rule, -1);
        }
      }
    }
  }
}

TEST(PolicyTest, NoRuleMeansTheDefault) {
  EXPECT_TRUE(Policy(PolicySpec{true, {}}).decide(Operation::send, bob(), "a").allowed);
  EXPECT_FALSE(Policy(PolicySpec{false, {}}).decide(Operation::send, bob(), "a").allowed);
}

TEST(PolicyTest, ManageIsGrantedByARuleNeverByTheDefault) {
  const Policy p(PolicySpec{true, {rule_for(true, Operation::manage, Who::group, Match::prefix)}});
  const Decision granted = p.decide(Operation::manage, alice(), "secret.jobs");
  EXPECT_TRUE(granted.allowed);
  EXPECT_EQ(granted.rule, 0);
  // The default allows every other operation, not manage: no rule, no grant.
  const Decision none = p.decide(Operation::manage, bob(), "secret.jobs");
  EXPECT_FALSE(none.allowed);
  EXPECT_EQ(none.rule, -1);
  EXPECT_TRUE(p.decide(Operation::send, bob(), "secret.jobs").allowed);
  EXPECT_FALSE(p.decide(Operation::manage, alice(), "public.jobs").allowed);
}

TEST(PolicyTest, EveryOperationIncludesManage) {
  PolicyRule r;
  r.operations = kAllOperations;
  r.uids = {kBob};
  r.keys = {"jobs"};
  EXPECT_TRUE(Policy(PolicySpec{false, {r}}).decide(Operation::manage, bob(), "jobs").allowed);
  EXPECT_EQ(operation_name(Operation::manage), "manage");
}

TEST(PolicyTest, PatternsMatchWholeTokens) {
  PolicyRule r;
  r.operations = kAllOperations;
  r.everyone = true;
  r.keys = {"a.*.c", "b.>"};
  const Policy p(PolicySpec{false, {r}});
  const auto allowed = [&](std::string_view key) {
    return p.decide(Operation::send, bob(), key).allowed;
  };
  EXPECT_TRUE(allowed("a.x.c"));
  EXPECT_FALSE(allowed("a.x.y.c"));  // * is one token
  EXPECT_FALSE(allowed("a.x.cd"));
  EXPECT_TRUE(allowed("b.x"));
  EXPECT_TRUE(allowed("b.x.y.z"));  // > is one or more
  EXPECT_FALSE(allowed("b"));       // ... not zero
  r.keys = {"*"};
  const Policy one(PolicySpec{false, {r}});
  EXPECT_TRUE(one.decide(Operation::send, bob(), "single").allowed);
  EXPECT_FALSE(one.decide(Operation::send, bob(), "two.tokens").allowed);
}

TEST(PolicyTest, PrefixesMatchCharactersNotTokens) {
  PolicyRule r;
  r.operations = kAllOperations;
  r.everyone = true;
  r.prefixes = {"app"};
  const Policy p(PolicySpec{false, {r}});
  EXPECT_TRUE(p.decide(Operation::send, bob(), "app").allowed);
  EXPECT_TRUE(p.decide(Operation::send, bob(), "apple.x").allowed);
  EXPECT_FALSE(p.decide(Operation::send, bob(), "ap").allowed);
}

PolicyRule everyone(bool allow, std::vector<std::string> keys,
                    std::vector<std::string> prefixes = {}) {
  PolicyRule r;
  r.allow = allow;
  r.operations = kAllOperations;
  r.everyone = true;
  r.keys = std::move(keys);
  r.prefixes = std::move(prefixes);
  return r;
}

TEST(PolicyTest, TheMostSpecificRuleWins) {
  PolicySpec spec;
  spec.default_allow = false;
  spec.rules = {everyone(true, {}, {"jobs."}),         // 0: 5 literal characters
                everyone(false, {}, {"jobs.secret"}),  // 1: 11
                everyone(true, {"jobs.secret.open"}),  // 2: exact
                everyone(false, {"jobs.*.x"})};        // 3: 7
  const Policy p(spec);
  const auto decide = [&](std::string_view key) { return p.decide(Operation::send, bob(), key); };
  EXPECT_EQ(decide("jobs.a").rule, 0);
  EXPECT_TRUE(decide("jobs.a").allowed);
  EXPECT_EQ(decide("jobs.secret.a").rule, 1);
  EXPECT_FALSE(decide("jobs.secret.a").allowed);
  EXPECT_EQ(decide("jobs.secret.open").rule, 2);
  EXPECT_TRUE(decide("jobs.secret.open").allowed);
  EXPECT_EQ(decide("jobs.a.x").rule, 3);  // 7 literal characters beat the prefix's 5
  EXPECT_FALSE(decide("jobs.a.x").allowed);
  EXPECT_EQ(decide("other").rule, -1);
}

TEST(PolicyTest, DenyWinsAtEqualSpecificity) {
  // The prefix "jobs." and the pattern "jobs.>" both have 5 literal characters; two exact
  // rules tie too. In either order, deny decides.
  for (bool deny_first : {true, false}) {
    PolicySpec spec;
    spec.rules = {everyone(true, {"jobs.>", "k"}), everyone(false, {"k"}, {"jobs."})};
    if (deny_first) std::swap(spec.rules[0], spec.rules[1]);
    const Policy p(spec);
    EXPECT_FALSE(p.decide(Operation::send, bob(), "jobs.a").allowed);
    EXPECT_FALSE(p.decide(Operation::send, bob(), "k").allowed);
  }
}

TEST(PolicyTest, AnExactRuleForOthersLeavesTheWildcardsToDecide) {
  PolicyRule mine = rule_for(false, Operation::send, Who::uid, Match::exact);
  const Policy p(PolicySpec{false, {mine, everyone(true, {"secret.>"})}});
  EXPECT_FALSE(p.decide(Operation::send, alice(), "secret.jobs").allowed);
  EXPECT_TRUE(p.decide(Operation::send, bob(), "secret.jobs").allowed);
}

// The system bus's baseline (PolicySpec::system_bus), below every rule.
namespace baseline {

constexpr std::uint32_t kNobody = 65534;

Principal as(std::uint32_t uid) {
  return Principal{uid, uid, {}};
}

Policy system_bus(std::vector<PolicyRule> rules = {}, bool default_allow = false) {
  PolicySpec spec;
  spec.default_allow = default_allow;
  spec.rules = std::move(rules);
  spec.system_bus = true;
  return Policy(std::move(spec));
}

constexpr Operation kOps[] = {Operation::send, Operation::receive, Operation::declare,
                              Operation::request};

TEST(PolicyBaselineTest, EachUidMayUseItsPrivateNamespaceOnly) {
  const Policy p = system_bus();
  for (Operation op : kOps) {
    SCOPED_TRACE(operation_name(op));
    const Decision own = p.decide(op, as(kNobody), "user.65534.x");
    EXPECT_TRUE(own.allowed);
    EXPECT_EQ(own.rule, Decision::kPrivateNamespace);
    EXPECT_TRUE(p.decide(op, as(kNobody), "user.65534.").allowed);
    EXPECT_TRUE(p.decide(op, as(kNobody), "user.65534.a.b.c").allowed);
    // Another uid's namespace, one that only starts with the same digits, the namespace's
    // own name without the dot, and keys elsewhere: the default.
    for (std::string_view key : {"user.0.x", "user.6553.x", "user.655341.x", "user.65534",
                                 "user.65534x", "shared.x", "xuser.65534.x"}) {
      SCOPED_TRACE(std::string(key));
      const Decision d = p.decide(op, as(kNobody), key);
      EXPECT_FALSE(d.allowed);
      EXPECT_EQ(d.rule, Decision::kDefault);
    }
  }
}

TEST(PolicyBaselineTest, RootMayDoEverything) {
  const Policy p = system_bus();
  for (Operation op : kOps) {
    const Decision shared = p.decide(op, as(0), "shared.x");
    EXPECT_TRUE(shared.allowed);
    EXPECT_EQ(shared.rule, Decision::kRoot);
    EXPECT_TRUE(p.decide(op, as(0), "user.65534.x").allowed);
    EXPECT_EQ(p.decide(op, as(0), "user.0.x").rule, Decision::kPrivateNamespace);
  }
}

TEST(PolicyBaselineTest, AnyMatchingRuleBeatsTheBaselineWhateverItsSpecificity) {
  PolicyRule deny_root = everyone(false, {}, {"s"});
  deny_root.everyone = false;
  deny_root.uids = {0};
  PolicyRule deny_own = everyone(false, {"user.*.locked"});
  const Policy p = system_bus({deny_root, deny_own});
  // One literal character denies root what the baseline would allow it.
  EXPECT_FALSE(p.decide(Operation::send, as(0), "shared.x").allowed);
  EXPECT_EQ(p.decide(Operation::send, as(0), "shared.x").rule, 0);
  EXPECT_TRUE(p.decide(Operation::send, as(0), "other").allowed);
  // A pattern closes a key in every uid's own namespace.
  EXPECT_FALSE(p.decide(Operation::receive, as(kNobody), "user.65534.locked").allowed);
  EXPECT_EQ(p.decide(Operation::receive, as(kNobody), "user.65534.locked").rule, 1);
  EXPECT_TRUE(p.decide(Operation::receive, as(kNobody), "user.65534.open").allowed);
}

TEST(PolicyBaselineTest, ARuleOpeningOneQueueOpensOnlyThatQueue) {
  PolicyRule orders = everyone(true, {"orders"});
  orders.everyone = false;
  orders.gids = {kJobsGid};
  orders.operations = operation_bit(Operation::send) | operation_bit(Operation::receive);
  const Policy p = system_bus({orders});
  EXPECT_TRUE(p.decide(Operation::send, alice(), "orders").allowed);
  EXPECT_TRUE(p.decide(Operation::receive, alice(), "orders").allowed);
  EXPECT_FALSE(p.decide(Operation::declare, alice(), "orders").allowed);
  EXPECT_FALSE(p.decide(Operation::send, alice(), "orders.x").allowed);
  EXPECT_FALSE(p.decide(Operation::send, alice(), "shared.x").allowed);
  EXPECT_FALSE(p.decide(Operation::send, bob(), "orders").allowed);  // not in the group
}

TEST(PolicyBaselineTest, AnAllowDefaultStillNamesTheBaselineFirst) {
  const Policy p = system_bus({}, /*default_allow=*/true);
  EXPECT_EQ(p.decide(Operation::send, as(kNobody), "user.65534.x").rule,
            Decision::kPrivateNamespace);
  const Decision d = p.decide(Operation::send, as(kNobody), "shared.x");
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.rule, Decision::kDefault);
}

TEST(PolicyBaselineTest, AUserBusHasNoBaseline) {
  PolicySpec spec;
  spec.default_allow = false;
  const Policy p(spec);
  EXPECT_FALSE(p.decide(Operation::send, as(kNobody), "user.65534.x").allowed);
  EXPECT_FALSE(p.decide(Operation::send, as(0), "shared.x").allowed);
}

TEST(PolicyBaselineTest, DescribeNamesWhatDecided) {
  PolicyRule r = everyone(true, {"a"});
  r.origin = "/etc/qbus/policy.d/20-x.json: rules[3]";
  PolicyRule unnamed = everyone(true, {"b"});
  const Policy p = system_bus({r, unnamed});
  EXPECT_EQ(p.describe(0, kNobody), "/etc/qbus/policy.d/20-x.json: rules[3]");
  EXPECT_EQ(p.describe(1, kNobody), "rules[1]");
  EXPECT_EQ(p.describe(Decision::kPrivateNamespace, 1000), "the private namespace user.1000.");
  EXPECT_EQ(p.describe(Decision::kRoot, 0), "root");
  EXPECT_EQ(p.describe(Decision::kDefault, kNobody), "the default");
}

}  // namespace baseline

}  // namespace
}  // namespace qbus::broker
