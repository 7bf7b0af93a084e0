// The "policy" section of qbusd.json: rules become PolicySettings with names resolved to
// ids, and every bad rule is one line naming the field and the rule's index.
#include <gtest/gtest.h>

#include <string>

#include "qbus/config/config.hpp"

namespace qbus::config {
namespace {

PolicySettings policy_of(const std::string& text) {
  auto r = parse(text);
  EXPECT_TRUE(r.config.has_value()) << r.error;
  return r.config ? r.config->policy : PolicySettings{};
}

std::string error_of(const std::string& text) {
  auto r = parse(text);
  EXPECT_FALSE(r.config.has_value()) << text;
  return r.error;
}

TEST(ConfigPolicyTest, NoSectionMeansNoPolicy) {
  EXPECT_FALSE(policy_of("{}").configured);
}

TEST(ConfigPolicyTest, RulesParseWithNamesResolvedToIds) {
  // root (uid 0) and the group root (gid 0) exist on every system.
  const auto p = policy_of(R"({"policy": {"default": "deny", "rules": [
      {"allow": ["send", "request"], "users": ["root"], "uids": [1000], "keys": ["a.*", "b"]},
      {"deny": "*", "groups": ["root"], "gids": [7], "prefixes": ["secret."]},
      {"allow": ["receive", "declare"], "everyone": true, "keys": ["pub.>"]}]}})");
  EXPECT_TRUE(p.configured);
  EXPECT_FALSE(p.default_allow);
  ASSERT_EQ(p.rules.size(), 3u);
  EXPECT_TRUE(p.rules[0].allow);
  EXPECT_EQ(p.rules[0].operations, 1 | 8);
  EXPECT_EQ(p.rules[0].uids, (std::vector<std::uint32_t>{1000, 0}));
  EXPECT_EQ(p.rules[0].keys, (std::vector<std::string>{"a.*", "b"}));
  EXPECT_FALSE(p.rules[1].allow);
  EXPECT_EQ(p.rules[1].operations, 0x2F);  // "*": every key operation, manage included
  EXPECT_EQ(p.rules[1].gids, (std::vector<std::uint32_t>{7, 0}));
  EXPECT_EQ(p.rules[1].prefixes, (std::vector<std::string>{"secret."}));
  EXPECT_TRUE(p.rules[2].everyone);
  EXPECT_EQ(p.rules[2].operations, 2 | 4);
}

TEST(ConfigPolicyTest, TheDefaultIsAllowAndAppearsInTheEffectiveJson) {
  auto r = parse(R"({"policy": {"rules": [{"deny": ["send"], "uids": [5], "keys": ["k"]}]}})");
  ASSERT_TRUE(r.config) << r.error;
  EXPECT_TRUE(r.config->policy.default_allow);
  const auto text = to_json_text(*r.config, "/s", "/a");
  EXPECT_NE(text.find(R"("policy":{"default":"allow","rules":[{"deny":["send"],"keys":["k"],)"
                      R"("uids":[5]}]})"),
            std::string::npos)
      << text;
}

TEST(ConfigPolicyTest, ManageIsAnOperationOfItsOwn) {
  auto r = parse(R"({"policy": {"rules": [
      {"allow": ["manage"], "groups": ["root"], "prefixes": ["jobs."]}]}})");
  ASSERT_TRUE(r.config) << r.error;
  ASSERT_EQ(r.config->policy.rules.size(), 1u);
  EXPECT_EQ(r.config->policy.rules[0].operations, 0x20);
  const auto text = to_json_text(*r.config, "/s", "/a");
  EXPECT_NE(text.find(R"({"allow":["manage"],"gids":[0],"prefixes":["jobs."]})"), std::string::npos)
      << text;
}

struct BadRule {
  const char* json;
  const char* error;
};

TEST(ConfigPolicyTest, EachBadRuleIsNamedByFieldAndIndex) {
  const BadRule cases[] = {
      {R"({"policy": {"default": "maybe"}})", R"(policy.default: must be "allow" or "deny")"},
      {R"({"policy": {"rules": {}}})", "policy.rules: must be an array, not object"},
      {R"({"policy": {"bogus": 1}})", "policy.bogus: unknown setting"},
      {R"({"policy": {"rules": [{"uids": [1], "keys": ["k"]}]}})",
       "policy.rules[0]: needs exactly one of allow or deny"},
      {R"({"policy": {"rules": [{"allow": "*", "deny": "*", "uids": [1], "keys": ["k"]}]}})",
       "policy.rules[0]: needs exactly one of allow or deny"},
      {R"({"policy": {"rules": [{"allow": "*", "uids": [1], "keys": ["k"]},
                                {"allow": ["send", "publish"], "uids": [1], "keys": ["k"]}]}})",
       R"(policy.rules[1].allow: unknown operation "publish" (send, receive, declare, request, send_direct, manage))"},
      {R"({"policy": {"rules": [{"deny": [], "uids": [1], "keys": ["k"]}]}})",
       R"(policy.rules[0].deny: must be "*" or a non-empty array of operations)"},
      {R"({"policy": {"rules": [{"allow": "*", "users": ["no-such-user-qbus"], "keys": ["k"]}]}})",
       "policy.rules[0].users: unknown user 'no-such-user-qbus'"},
      {R"({"policy": {"rules": [{"allow": "*", "groups": ["no-such-group-qbus"], "keys": ["k"]}]}})",
       "policy.rules[0].groups: unknown group 'no-such-group-qbus'"},
      {R"({"policy": {"rules": [{"allow": "*", "users": [], "keys": ["k"]}]}})",
       "policy.rules[0].users: must not be empty"},
      {R"({"policy": {"rules": [{"allow": "*", "keys": ["k"]}]}})",
       R"(policy.rules[0]: names nobody: give users, groups, uids, gids or "everyone": true)"},
      {R"({"policy": {"rules": [{"allow": "*", "uids": [-1], "keys": ["k"]}]}})",
       "policy.rules[0].uids: must hold ids from 0 to 4294967294"},
      {R"({"policy": {"rules": [{"allow": "*", "uids": [1]}]}})",
       "policy.rules[0]: matches no key: give keys or prefixes"},
      {R"({"policy": {"rules": [{"allow": "*", "uids": [1], "keys": ["a.>.b"]}]}})",
       "policy.rules[0].keys: 'a.>.b' '>' may only be the last token"},
      {R"({"policy": {"rules": [{"allow": "*", "uids": [1], "keys": ["a.b*"]}]}})",
       "policy.rules[0].keys: 'a.b*' a wildcard must be a whole token ('b*')"},
      {R"({"policy": {"rules": [{"allow": "*", "uids": [1], "keys": ["a b"]}]}})",
       "policy.rules[0].keys: 'a b' must be characters of A-Z a-z 0-9 . _ : / - and the tokens "
       "* and >"},
      {R"({"policy": {"rules": [{"allow": "*", "uids": [1], "prefixes": ["app*"]}]}})",
       "policy.rules[0].prefixes: 'app*' must be 1-255 characters of A-Z a-z 0-9 . _ : / -"},
      {R"({"policy": {"rules": [{"allow": "*", "everyone": 1, "keys": ["k"]}]}})",
       "policy.rules[0].everyone: must be true or false"},
      {R"({"policy": {"rules": [{"allow": "*", "uids": [1], "keys": ["k"], "key": "x"}]}})",
       "policy.rules[0].key: unknown setting"},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(error_of(c.json), c.error);
  }
}

}  // namespace
}  // namespace qbus::config
