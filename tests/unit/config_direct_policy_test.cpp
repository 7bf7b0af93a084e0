// send_direct rules in the "policy" section: receivers instead of keys, names resolved to
// ids, and each misuse one line naming the field and the rule's index.
#include <gtest/gtest.h>

#include <string>

#include "qbus/config/config.hpp"

namespace qbus::config {
namespace {

std::string error_of(const std::string& rule) {
  auto r = parse(R"({"policy": {"rules": [{"allow": ["send"], "uids": [1], "keys": ["k"]}, )" +
                 rule + "]}}");
  EXPECT_FALSE(r.config.has_value()) << rule;
  return r.error;
}

TEST(ConfigDirectPolicyTest, ASendDirectRuleNamesReceiversResolvedToIds) {
  // root (uid 0) and the group root (gid 0) exist on every system.
  auto r = parse(R"({"policy": {"default": "deny", "rules": [
      {"allow": ["send_direct"], "uids": [1000], "to_users": ["root"], "to_uids": [7]},
      {"deny": ["send_direct"], "everyone": true, "to_groups": ["root"], "to_gids": [9]},
      {"allow": ["send_direct"], "users": ["root"], "to_everyone": true},
      {"allow": "*", "everyone": true, "prefixes": ["a"]}]}})");
  ASSERT_TRUE(r.config) << r.error;
  const auto& rules = r.config->policy.rules;
  ASSERT_EQ(rules.size(), 4u);
  EXPECT_EQ(rules[0].operations, kSendDirectBit);
  EXPECT_EQ(rules[0].to_uids, (std::vector<std::uint32_t>{7, 0}));
  EXPECT_TRUE(rules[0].keys.empty());
  EXPECT_FALSE(rules[1].allow);
  EXPECT_EQ(rules[1].to_gids, (std::vector<std::uint32_t>{9, 0}));
  EXPECT_TRUE(rules[2].to_everyone);
  EXPECT_EQ(rules[2].uids, (std::vector<std::uint32_t>{0}));
  // "*" is the key operations (manage included), not send_direct.
  EXPECT_EQ(rules[3].operations, kEveryKeyOperation);
  const auto text = to_json_text(*r.config, "/s", "/a");
  EXPECT_NE(text.find(R"({"allow":["send_direct"],"to_uids":[7,0],"uids":[1000]})"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find(R"({"allow":["send_direct"],"to_everyone":true,"uids":[0]})"),
            std::string::npos)
      << text;
}

TEST(ConfigDirectPolicyTest, EachMisuseIsNamedByFieldAndIndex) {
  EXPECT_EQ(error_of(R"({"allow": ["send_direct"], "uids": [1], "to_uids": [2], "keys": ["k"]})"),
            "policy.rules[1].keys: a send_direct rule names receivers (to_users, to_groups, "
            "to_uids, to_gids, to_everyone), not keys");
  EXPECT_EQ(
      error_of(R"({"allow": ["send_direct"], "uids": [1], "to_uids": [2], "prefixes": ["k"]})"),
      "policy.rules[1].prefixes: a send_direct rule names receivers (to_users, to_groups, "
      "to_uids, to_gids, to_everyone), not keys");
  EXPECT_EQ(error_of(R"({"allow": ["send", "send_direct"], "uids": [1], "to_uids": [2]})"),
            "policy.rules[1].allow: send_direct names receivers, not keys: give it a rule of its "
            "own");
  EXPECT_EQ(error_of(R"({"allow": ["send"], "uids": [1], "keys": ["k"], "to_gids": [2]})"),
            "policy.rules[1].to_gids: only a send_direct rule names targets; this one names keys");
  EXPECT_EQ(error_of(R"({"deny": ["send_direct"], "uids": [1]})"),
            "policy.rules[1]: sends to nobody: give to_users, to_groups, to_uids, to_gids or "
            "\"to_everyone\": true");
  EXPECT_EQ(error_of(R"({"deny": ["send_direct"], "uids": [1], "to_users": ["no-such-user-qb"]})"),
            "policy.rules[1].to_users: unknown user 'no-such-user-qb'");
  EXPECT_EQ(error_of(R"({"deny": ["send_direct"], "uids": [1], "to_groups": []})"),
            "policy.rules[1].to_groups: must not be empty");
  EXPECT_EQ(error_of(R"({"deny": ["send_direct"], "uids": [1], "to_everyone": 1})"),
            "policy.rules[1].to_everyone: must be true or false");
  EXPECT_EQ(error_of(R"({"deny": ["send_direct"], "to_everyone": true})"),
            "policy.rules[1]: names nobody: give users, groups, uids, gids or \"everyone\": true");
  EXPECT_EQ(error_of(R"({"deny": ["send_direct"], "uids": [1], "to_uids": [2], "to": [3]})"),
            "policy.rules[1].to: unknown setting");
}

}  // namespace
}  // namespace qbus::config
