// Drop-in policy files: load_file reads the `*.json` files of the policy directory after
// the config file and appends their rules; every bad one stops loading with one line naming
// the file and the rule.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "qbus/config/config.hpp"

namespace qbus::config {
namespace {

namespace fs = std::filesystem;

// A config file in a fresh directory of its own, so its default policy.d is its own too.
class ConfigDropInTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = ::testing::TempDir() + "qbus_dropin_" + std::to_string(::getpid()) + "_" + info->name();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    write("qbusd.json", R"({"policy": {"default": "deny", "rules": [
        {"allow": ["send"], "uids": [1], "keys": ["main"]}]}})");
  }
  void TearDown() override {
    std::error_code ec;
    fs::permissions(dropins(), fs::perms::owner_all, ec);
    fs::remove_all(dir_, ec);
  }

  std::string dropins() const { return dir_ + "/policy.d"; }
  std::string config_path() const { return dir_ + "/qbusd.json"; }

  void write(const std::string& relative, const std::string& text) {
    const fs::path p = fs::path(dir_) / relative;
    fs::create_directories(p.parent_path());
    std::ofstream(p) << text;
    // Whatever the umask: a group- or world-writable drop-in is refused.
    fs::permissions(p.parent_path(), fs::perms(0755));
    fs::permissions(p, fs::perms(0644));
  }
  // A drop-in with one rule allowing send to `key` for uid `uid`.
  void drop_in(const std::string& name, const std::string& key, int uid) {
    write("policy.d/" + name, R"({"rules": [{"allow": ["send"], "uids": [)" + std::to_string(uid) +
                                  R"(], "keys": [")" + key + R"("]}]})");
  }

  LoadResult load() { return load_file(config_path()); }
  std::string error() {
    auto r = load();
    EXPECT_FALSE(r.config.has_value());
    return r.error;
  }

  std::string dir_;
};

TEST_F(ConfigDropInTest, AMissingDirectoryAddsNothing) {
  auto r = load();
  ASSERT_TRUE(r.config) << r.error;
  ASSERT_EQ(r.config->policy.rules.size(), 1u);
  EXPECT_EQ(r.config->policy.rules[0].keys[0], "main");
}

TEST_F(ConfigDropInTest, RulesAreAppendedInByteOrderOfFileNames) {
  // "B" sorts before "a" in byte order; "10-" before "9-".
  drop_in("a.json", "from_a", 3);
  drop_in("B.json", "from_B", 2);
  drop_in("9-x.json", "from_9", 5);
  drop_in("10-x.json", "from_10", 4);
  auto r = load();
  ASSERT_TRUE(r.config) << r.error;
  const auto& rules = r.config->policy.rules;
  ASSERT_EQ(rules.size(), 5u);
  EXPECT_EQ(rules[0].keys[0], "main");
  EXPECT_EQ(rules[1].keys[0], "from_10");
  EXPECT_EQ(rules[2].keys[0], "from_9");
  EXPECT_EQ(rules[3].keys[0], "from_B");
  EXPECT_EQ(rules[4].keys[0], "from_a");
  EXPECT_FALSE(r.config->policy.default_allow);
}

TEST_F(ConfigDropInTest, ADropInTurnsThePolicyOnWithoutAPolicySection) {
  write("qbusd.json", "{}");
  drop_in("a.json", "k", 1);
  auto r = load();
  ASSERT_TRUE(r.config) << r.error;
  EXPECT_TRUE(r.config->policy.configured);
  EXPECT_TRUE(r.config->policy.default_allow);
  EXPECT_EQ(r.config->policy.rules.size(), 1u);
}

// What a system bus without a config file reads: the defaults and the drop-ins alone.
TEST_F(ConfigDropInTest, WithoutAConfigFileTheDropInsAloneAreRead) {
  drop_in("50-a.json", "k", 7);
  auto r = load_dropins(dropins());
  ASSERT_TRUE(r.config) << r.error;
  EXPECT_TRUE(r.config->policy.configured);
  ASSERT_EQ(r.config->policy.rules.size(), 1u);
  EXPECT_EQ(r.config->policy.rules[0].origin, dropins() + "/50-a.json: rules[0]");
  EXPECT_EQ(r.config->policy_dir, dropins());
  EXPECT_EQ(r.config->log_level, Config{}.log_level);

  auto none = load_dropins(dir_ + "/missing");
  ASSERT_TRUE(none.config) << none.error;
  EXPECT_FALSE(none.config->policy.configured);
  EXPECT_TRUE(none.config->policy.rules.empty());

  write("policy.d/60-bad.json", "{");
  auto bad = load_dropins(dropins());
  EXPECT_FALSE(bad.config);
  EXPECT_NE(bad.error.find("60-bad.json"), std::string::npos) << bad.error;
}

TEST_F(ConfigDropInTest, FilesNotEndingInJsonAreIgnored) {
  write("policy.d/README", "not json at all");
  write("policy.d/a.json~", "{");
  write("policy.d/a.json.dpkg-old", "{");
  write("policy.d/.json", "{");
  drop_in("a.json", "k", 1);
  auto r = load();
  ASSERT_TRUE(r.config) << r.error;
  EXPECT_EQ(r.config->policy.rules.size(), 2u);
}

TEST_F(ConfigDropInTest, ABadRuleNamesTheFileAndTheRule) {
  drop_in("10-ok.json", "k", 1);
  write("policy.d/20-jobs.json", R"({"rules": [
      {"allow": ["send"], "uids": [1], "keys": ["a"]},
      {"allow": ["send"], "users": ["no_such_user_qbus_test"], "keys": ["a"]}]})");
  EXPECT_EQ(error(), dropins() + "/20-jobs.json: rules[1].users: unknown user " +
                         "'no_such_user_qbus_test'");
}

TEST_F(ConfigDropInTest, AnUnknownKeyNamesTheFileAndTheKey) {
  write("policy.d/a.json", R"({"rules": [], "default": "allow"})");
  EXPECT_EQ(error(), dropins() + "/a.json: default: unknown setting");
}

TEST_F(ConfigDropInTest, RulesAreRequiredAndMustBeAnArray) {
  write("policy.d/a.json", "{}");
  EXPECT_EQ(error(), dropins() + "/a.json: rules: is required");
  write("policy.d/a.json", R"({"rules": {}})");
  EXPECT_EQ(error(), dropins() + "/a.json: rules: must be an array, not object");
  write("policy.d/a.json", "[]");
  EXPECT_EQ(error(), dropins() + "/a.json: (top level): must be an object, not array");
}

TEST_F(ConfigDropInTest, MalformedJsonNamesTheFile) {
  write("policy.d/a.json", R"({"rules": [)");
  EXPECT_EQ(error().rfind(dropins() + "/a.json: invalid JSON: ", 0), 0u);
}

TEST_F(ConfigDropInTest, AnEntryThatIsNotARegularFileIsAnError) {
  fs::create_directories(dropins() + "/sub.json");
  EXPECT_EQ(error(), "policy file " + dropins() + "/sub.json is not a regular file (a directory)");
}

TEST_F(ConfigDropInTest, AnUnreadableFileIsAnError) {
  if (::geteuid() == 0) GTEST_SKIP() << "root reads a file of mode 0000";
  drop_in("a.json", "k", 1);
  fs::permissions(dropins() + "/a.json", fs::perms::none);
  EXPECT_EQ(error(), "cannot open policy file " + dropins() + "/a.json: Permission denied");
}

TEST_F(ConfigDropInTest, AnUnreadableDirectoryIsAnError) {
  if (::geteuid() == 0) GTEST_SKIP() << "root reads a directory of mode 0000";
  drop_in("a.json", "k", 1);
  fs::permissions(dropins(), fs::perms::none);
  EXPECT_EQ(error(), "cannot read policy directory " + dropins() + ": Permission denied");
}

TEST_F(ConfigDropInTest, AFileOrDirectoryOthersCanWriteIsRefused) {
  drop_in("a.json", "k", 1);
  fs::permissions(dropins() + "/a.json", fs::perms::others_write, fs::perm_options::add);
  EXPECT_EQ(error(),
            "policy file " + dropins() + "/a.json is writable by group or others (mode 0646)");
  fs::permissions(dropins() + "/a.json", fs::perms::others_write, fs::perm_options::remove);
  ASSERT_TRUE(load().config);
  fs::permissions(dropins(), fs::perms::group_write, fs::perm_options::add);
  EXPECT_EQ(error().rfind("policy directory " + dropins() + " is writable by group or others", 0),
            0u);
}

TEST_F(ConfigDropInTest, AFileOwnedByAnotherUserIsRefused) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to give a file away";
  drop_in("a.json", "k", 1);
  ASSERT_EQ(::chown((dropins() + "/a.json").c_str(), 65534, 65534), 0);
  EXPECT_EQ(error(), "policy file " + dropins() +
                         "/a.json is owned by uid 65534; it must be owned by root or by the uid "
                         "reading it (0)");
}

TEST_F(ConfigDropInTest, APolicyDirThatIsAFileIsAnError) {
  write("policy.d", "x");
  EXPECT_EQ(error(), "cannot read policy directory " + dropins() + ": Not a directory");
}

TEST_F(ConfigDropInTest, PolicyDirOverridesTheDefault) {
  drop_in("a.json", "default_dir", 1);
  write("elsewhere/b.json", R"({"rules": [{"deny": "*", "everyone": true, "keys": ["other"]}]})");
  write("qbusd.json", R"({"policy_dir": ")" + dir_ + R"(/elsewhere"})");
  auto r = load();
  ASSERT_TRUE(r.config) << r.error;
  ASSERT_EQ(r.config->policy.rules.size(), 1u);
  EXPECT_EQ(r.config->policy.rules[0].keys[0], "other");
}

TEST_F(ConfigDropInTest, PolicyDirMustBeAbsolute) {
  write("qbusd.json", R"({"policy_dir": "policy.d"})");
  EXPECT_EQ(error(), config_path() + ": policy_dir: must be an absolute path");
}

TEST_F(ConfigDropInTest, AtMostMaxPolicyFilesAreRead) {
  for (std::size_t i = 0; i < kMaxPolicyFiles; ++i) {
    write("policy.d/" + std::to_string(1000 + i) + ".json", R"({"rules": []})");
  }
  ASSERT_TRUE(load().config);
  write("policy.d/9999.json", R"({"rules": []})");
  EXPECT_EQ(error(), "policy directory " + dropins() + " holds more than " +
                         std::to_string(kMaxPolicyFiles) + " .json files");
}

TEST_F(ConfigDropInTest, AtMostMaxPolicyRulesInAll) {
  // The config file holds one rule; two drop-ins fill the policy to the bound exactly.
  const std::string rule = R"({"allow": ["send"], "uids": [1], "keys": ["k"]})";
  const auto file_of = [&](std::size_t n) {
    std::string text = R"({"rules": [)";
    for (std::size_t i = 0; i < n; ++i)
      text += (i ? "," : "") + rule;
    return text + "]}";
  };
  write("policy.d/a.json", file_of(kMaxPolicyRules / 2));
  write("policy.d/b.json", file_of(kMaxPolicyRules - kMaxPolicyRules / 2 - 1));
  auto r = load();
  ASSERT_TRUE(r.config) << r.error;
  EXPECT_EQ(r.config->policy.rules.size(), kMaxPolicyRules);
  write("policy.d/c.json", file_of(1));
  EXPECT_EQ(error(), dropins() + "/c.json: rules: the policy would hold more than " +
                         std::to_string(kMaxPolicyRules) + " rules");
}

TEST_F(ConfigDropInTest, ParsePolicyRulesReadsOneDropIn) {
  std::string why;
  auto rules = parse_policy_rules(
      R"({"rules": [{"deny": ["receive"], "groups": ["root"], "prefixes": ["x"]}]})", why);
  ASSERT_TRUE(rules) << why;
  ASSERT_EQ(rules->size(), 1u);
  EXPECT_FALSE((*rules)[0].allow);
  EXPECT_EQ((*rules)[0].gids, (std::vector<std::uint32_t>{0}));
  EXPECT_FALSE(parse_policy_rules(R"({"rules": [{"allow": "*", "keys": ["x"]}]})", why));
  EXPECT_EQ(why, "rules[0]: names nobody: give users, groups, uids, gids or \"everyone\": true");
}

}  // namespace
}  // namespace qbus::config

namespace qbus::config {
namespace {

// Found by the policy fuzz target: nlohmann::json reports a number too large for a double
// with out_of_range, not parse_error; it escaped both parsers and terminated qbusd (at
// startup, or on the reload thread at SIGHUP).
TEST(ConfigHugeNumberTest, ANumberTooLargeForADoubleIsAnErrorNotACrash) {
  auto r = parse(R"({"limits": {"max_queues": 1E400}})");
  EXPECT_FALSE(r.config.has_value());
  EXPECT_EQ(r.error.rfind("invalid JSON: ", 0), 0u) << r.error;
  std::string why;
  EXPECT_FALSE(parse_policy_rules(R"({"rules": [1E400]})", why));
  EXPECT_EQ(why.rfind("invalid JSON: ", 0), 0u) << why;
}

}  // namespace
}  // namespace qbus::config
