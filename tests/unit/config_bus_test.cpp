// The `bus` key and what it does to the policy settings: on a system bus an unset
// policy.default is deny and the effective JSON always shows a policy; each rule knows
// where it was written (the config file's index, or the drop-in file and its index), and
// load_file says which drop-in directory it read.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "qbus/config/config.hpp"

namespace qbus::config {
namespace {

namespace fs = std::filesystem;

Config config_of(const std::string& text) {
  auto r = parse(text);
  EXPECT_TRUE(r.config.has_value()) << r.error;
  return r.config ? *r.config : Config{};
}

TEST(ConfigBusTest, TheBusIsAutoUnlessTheFileNamesOne) {
  EXPECT_EQ(config_of("{}").bus, "auto");
  EXPECT_EQ(config_of(R"({"bus": "system"})").bus, "system");
  EXPECT_EQ(config_of(R"({"bus": "user"})").bus, "user");
  for (const char* bad : {R"({"bus": "session"})", R"({"bus": 1})", R"({"bus": ""})"}) {
    auto r = parse(bad);
    EXPECT_FALSE(r.config.has_value()) << bad;
    EXPECT_EQ(r.error.rfind("bus: ", 0), 0u) << r.error;
  }
}

TEST(ConfigBusTest, ASystemBusDeniesByDefaultUnlessThePolicySaysAllow) {
  Config c = config_of(R"({"bus": "system"})");
  EXPECT_TRUE(is_system_bus(c));
  EXPECT_FALSE(c.policy.configured);
  EXPECT_FALSE(effective_default_allow(c));
  // The effective JSON shows the policy in effect, with the default it has.
  const auto text = to_json_text(c, "/s", "/a");
  EXPECT_NE(text.find(R"("bus":"system")"), std::string::npos) << text;
  EXPECT_NE(text.find(R"("policy":{"default":"deny","rules":[]})"), std::string::npos) << text;

  c = config_of(R"({"bus": "system", "policy": {"default": "allow"}})");
  EXPECT_TRUE(effective_default_allow(c));
  c = config_of(R"({"bus": "system", "policy": {"rules": [
      {"allow": ["send"], "uids": [5], "keys": ["k"]}]}})");
  EXPECT_FALSE(effective_default_allow(c));
  // A user bus keeps allow as the default, and shows no policy when there is none.
  c = config_of(R"({"bus": "user"})");
  EXPECT_TRUE(effective_default_allow(c));
  EXPECT_EQ(to_json_text(c, "/s", "/a").find(R"("policy")"), std::string::npos);
  c = config_of(R"({"bus": "user", "policy": {"default": "deny"}})");
  EXPECT_FALSE(effective_default_allow(c));
}

TEST(ConfigBusTest, ConfigRulesAreNamedByTheirIndex) {
  const Config c = config_of(R"({"policy": {"rules": [
      {"allow": ["send"], "uids": [5], "keys": ["a"]},
      {"deny": ["send"], "uids": [5], "keys": ["b"]}]}})");
  ASSERT_EQ(c.policy.rules.size(), 2u);
  EXPECT_EQ(c.policy.rules[0].origin, "policy.rules[0]");
  EXPECT_EQ(c.policy.rules[1].origin, "policy.rules[1]");
}

TEST(ConfigBusTest, DropInRulesAreNamedByTheirFileAndIndexInIt) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const std::string dir =
      ::testing::TempDir() + "qbus_bus_" + std::to_string(::getpid()) + "_" + info->name();
  fs::remove_all(dir);
  fs::create_directories(dir + "/policy.d");
  fs::permissions(dir + "/policy.d", fs::perms(0755));
  std::ofstream(dir + "/qbusd.json") << R"({"policy": {"rules": [
      {"allow": ["send"], "uids": [5], "keys": ["main"]}]}})";
  const std::string file = dir + "/policy.d/20-x.json";
  std::ofstream(file) << R"({"rules": [{"allow": ["send"], "uids": [6], "keys": ["x0"]},
                                       {"allow": ["send"], "uids": [6], "keys": ["x1"]}]})";
  fs::permissions(file, fs::perms(0644));

  auto r = load_file(dir + "/qbusd.json");
  ASSERT_TRUE(r.config) << r.error;
  const auto& rules = r.config->policy.rules;
  ASSERT_EQ(rules.size(), 3u);
  EXPECT_EQ(rules[0].origin, "policy.rules[0]");
  // Not "rules[2]" (its place among all rules), which no file holds.
  EXPECT_EQ(rules[1].origin, file + ": rules[0]");
  EXPECT_EQ(rules[2].origin, file + ": rules[1]");
  EXPECT_EQ(r.config->policy_dir, dir + "/policy.d");
  EXPECT_NE(to_json_text(*r.config, "/s", "/a").find(R"("policy_dir":")" + dir + "/policy.d\""),
            std::string::npos);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace qbus::config
