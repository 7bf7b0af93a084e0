// The access policy on the real daemon: a client running as another uid (a forked child
// that drops to nobody) is refused what the policy denies with permission_denied naming
// the operation and key, keeps its connection and what it may use, is named in the
// daemon's audit log with the rule that denied it (a bounded number of lines), reaches a queue
// through a supplementary group (SO_PEERGROUPS), and a SIGHUP that opens the queue lets
// its next receive take the message that waited there.
#include <grp.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <qbus/client.hpp>

#include <chrono>
#include <fstream>
#include <string>

#include "daemon.hpp"
#include "process.hpp"

namespace qbus::testing {
namespace {

using std::chrono::seconds;

constexpr gid_t kJobsGid = 4242;

// Everyone is refused `secret...` but root, whose rule is the more specific.
constexpr const char* kClosed = R"({"policy": {"default": "allow", "rules": [
  {"deny": "*", "everyone": true, "prefixes": ["secret"]},
  {"allow": "*", "uids": [0], "prefixes": ["secret."]}]}})";
// The same, and nobody (uid 65534) may receive from secret.jobs.
constexpr const char* kOpened = R"({"policy": {"default": "allow", "rules": [
  {"deny": "*", "everyone": true, "prefixes": ["secret"]},
  {"allow": "*", "uids": [0], "prefixes": ["secret."]},
  {"allow": ["receive"], "uids": [65534], "keys": ["secret.jobs"]}]}})";
// Members of group 4242 may receive from secret.jobs.
constexpr const char* kGroup = R"({"policy": {"default": "allow", "rules": [
  {"deny": "*", "everyone": true, "prefixes": ["secret"]},
  {"allow": "*", "uids": [0], "prefixes": ["secret."]},
  {"allow": ["receive"], "gids": [4242], "keys": ["secret.jobs"]}]}})";

class DaemonPolicyTest : public ::testing::Test {
 protected:
  explicit DaemonPolicyTest(const char* config = kClosed)
      : daemon_(DaemonOptions{.config_json = config}) {
    // The socket's directory is the test's own: nobody must be able to reach the socket.
    ::chmod(daemon_.dir().path().c_str(), 0755);
  }

  Client connect() { return Client(ClientOptions{daemon_.address(), "policy-test", seconds(30)}); }

  // Drops to nobody (after taking `groups` as its supplementary groups), then runs `body`.
  template <typename F>
  pid_t as_nobody(std::vector<gid_t> groups, F&& body) {
    return spawn([&, groups] {
      if (::setgroups(groups.size(), groups.data()) != 0) return 10;
      if (::setgid(65534) != 0 || ::setuid(65534) != 0) return 11;
      return body();
    });
  }

  // 0 when a receive from secret.jobs is refused with permission_denied naming the key.
  static int expect_receive_denied(Client& c) {
    try {
      (void)c.try_receive("secret.jobs");
      return 1;
    } catch (const Error& e) {
      if (e.code() != Errc::permission_denied) return 2;
      const std::string what = e.what();
      if (what.find("receive from queue 'secret.jobs' denied by policy") == std::string::npos) {
        std::fprintf(stderr, "unexpected text: %s\n", what.c_str());
        return 3;
      }
    }
    return 0;
  }

  void rewrite_config(const std::string& text) {
    const std::string tmp = daemon_.config_path() + ".new";
    {
      std::ofstream f(tmp, std::ios::trunc);
      f << text;
    }
    ASSERT_EQ(::rename(tmp.c_str(), daemon_.config_path().c_str()), 0);
  }

  Daemon daemon_;
};

TEST_F(DaemonPolicyTest, NobodyIsDeniedTheSecretQueueUntilAReloadOpensIt) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run a client as another uid";
  auto root = connect();
  root.send_confirmed("secret.jobs", "root-secret");

  const pid_t denied = as_nobody({}, [&] {
    auto c = connect();
    if (int r = expect_receive_denied(c); r != 0) return r;
    try {
      c.send_confirmed("secret.jobs", "from nobody");
      return 4;
    } catch (const Error& e) {
      if (e.code() != Errc::permission_denied) return 5;
    }
    // The same connection goes on with what it may use.
    c.send_confirmed("public.jobs", "hello");
    auto m = c.receive("public.jobs", seconds(30));
    return m && m->text() == "hello" ? 0 : 6;
  });
  ASSERT_EQ(wait_exit(denied), 0);

  rewrite_config(kOpened);
  ASSERT_EQ(::kill(daemon_.pid(), SIGHUP), 0);
  ASSERT_TRUE(daemon_.wait_for_log("policy: 3 rules, default allow (was 2 rules, default allow)"))
      << daemon_.log();

  // The message sent before the reload waited in the queue.
  const pid_t allowed = as_nobody({}, [&] {
    auto c = connect();
    auto m = c.receive("secret.jobs", seconds(30));
    return m && m->text() == "root-secret" ? 0 : 1;
  });
  EXPECT_EQ(wait_exit(allowed), 0);
}

// How many lines of `log` contain `needle`.
std::size_t lines_with(const std::string& log, const std::string& needle) {
  std::size_t n = 0;
  for (auto at = log.find(needle); at != std::string::npos; at = log.find(needle, at + 1))
    ++n;
  return n;
}

TEST_F(DaemonPolicyTest, EachDenialIsAuditedNamingWhoWhatAndTheRuleButNotWithoutBound) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run a client as another uid";
  // One receive and then sends until the connection's 1000th denial, the first sampled
  // after the 10 logged in full.
  constexpr int kSends = 999;
  const pid_t denied = as_nobody({}, [&] {
    auto c = connect();
    if (int r = expect_receive_denied(c); r != 0) return r;
    for (int i = 0; i < kSends; ++i) {
      try {
        c.send_confirmed("secret.jobs", "from nobody");
        return 4;
      } catch (const Error& e) {
        if (e.code() != Errc::permission_denied) return 5;
      }
    }
    return 0;
  });
  ASSERT_EQ(wait_exit(denied), 0);

  const std::string who = "(pid " + std::to_string(denied) + " uid 65534 comm '";
  ASSERT_TRUE(daemon_.wait_for_log("policy: denied send of 'secret.jobs' to client"))
      << daemon_.log();
  ASSERT_TRUE(daemon_.wait_for_log("(1000 so far)")) << daemon_.log();
  const std::string log = daemon_.log();
  const auto first = log.find("policy: denied receive of 'secret.jobs' to client ");
  ASSERT_NE(first, std::string::npos) << log;
  const std::string line = log.substr(first, log.find('\n', first) - first);
  EXPECT_NE(line.find(who), std::string::npos) << line;
  EXPECT_NE(line.find("): policy.rules[0] (deny)"), std::string::npos) << line;
  EXPECT_EQ(lines_with(log, "policy: denied receive of 'secret.jobs'"), 1u) << log;
  // 9 more in full, then the 1000th saying how many there were; nothing in between.
  EXPECT_EQ(lines_with(log, "policy: denied send of 'secret.jobs'"), 10u) << log;
  EXPECT_EQ(lines_with(log, "policy.rules[0] (deny) (1000 so far)"), 1u) << log;
}

TEST_F(DaemonPolicyTest, ABrokenPolicyIsRefusedByCheckConfigAndByAReloadThatKeepsTheOld) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run a client as another uid";
  const std::string broken = R"({"policy": {"rules": [
    {"allow": "*", "users": ["no-such-user-qbus"], "keys": ["secret.jobs"]}]}})";
  rewrite_config(broken);
  const auto checked = run({qbusd_path(), "--check-config", "--config", daemon_.config_path()});
  EXPECT_EQ(checked.exit_code, 1);
  EXPECT_NE(checked.err.find("policy.rules[0].users: unknown user 'no-such-user-qbus'"),
            std::string::npos)
      << checked.err;

  ASSERT_EQ(::kill(daemon_.pid(), SIGHUP), 0);
  ASSERT_TRUE(daemon_.wait_for_log("reload failed, the running configuration stays"))
      << daemon_.log();
  // The running policy still refuses nobody.
  const pid_t denied = as_nobody({}, [&] {
    auto c = connect();
    return expect_receive_denied(c);
  });
  EXPECT_EQ(wait_exit(denied), 0);
}

class DaemonPolicyGroupTest : public DaemonPolicyTest {
 protected:
  DaemonPolicyGroupTest() : DaemonPolicyTest(kGroup) {}
};

TEST_F(DaemonPolicyGroupTest, ASupplementaryGroupOpensTheQueue) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run a client as another uid";
  auto root = connect();
  root.send_confirmed("secret.jobs", "for the group");

  const pid_t outsider = as_nobody({}, [&] {
    auto c = connect();
    return expect_receive_denied(c);
  });
  EXPECT_EQ(wait_exit(outsider), 0);

  const pid_t member = as_nobody({kJobsGid}, [&] {
    auto c = connect();
    auto m = c.receive("secret.jobs", seconds(30));
    return m && m->text() == "for the group" ? 0 : 1;
  });
  EXPECT_EQ(wait_exit(member), 0);
}

}  // namespace
}  // namespace qbus::testing
