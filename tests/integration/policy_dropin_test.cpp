// Drop-in policy files on the real daemon: a file in policy.d beside the config file opens
// a queue to nobody (uid 65534, a forked child that drops to it) on SIGHUP, removing the
// file closes it again on the next SIGHUP, and a broken drop-in is refused by
// --check-config and by a reload, which keeps the running policy and logs why.
#include <grp.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <qbus/client.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "daemon.hpp"
#include "process.hpp"

namespace qbus::testing {
namespace {

using std::chrono::seconds;

// Everyone is refused `secret...` but root, whose rule is the more specific.
constexpr const char* kClosed = R"({"policy": {"default": "allow", "rules": [
  {"deny": "*", "everyone": true, "prefixes": ["secret"]},
  {"allow": "*", "uids": [0], "prefixes": ["secret."]}]}})";
// A drop-in that lets nobody receive from secret.jobs.
constexpr const char* kOpenToNobody =
    R"({"rules": [{"allow": ["receive"], "uids": [65534], "keys": ["secret.jobs"]}]})";

class DaemonPolicyDropInTest : public ::testing::Test {
 protected:
  DaemonPolicyDropInTest() : daemon_(DaemonOptions{.config_json = kClosed}) {
    // The socket's directory is the test's own: nobody must be able to reach the socket.
    ::chmod(daemon_.dir().path().c_str(), 0755);
  }

  Client connect() {
    return Client(ClientOptions{daemon_.address(), "policy-dropin-test", seconds(30)});
  }

  // policy.d beside the daemon's config file: its default drop-in directory.
  std::string drop_in_path(const std::string& name) const {
    return daemon_.dir().file("policy.d") + "/" + name;
  }
  void write_drop_in(const std::string& name, const std::string& text) {
    std::filesystem::create_directories(daemon_.dir().file("policy.d"));
    const std::string tmp = drop_in_path("." + name + ".tmp");
    {
      std::ofstream f(tmp, std::ios::trunc);
      f << text;
    }
    // Whatever the umask: qbusd refuses a group- or world-writable drop-in.
    ASSERT_EQ(::chmod(daemon_.dir().file("policy.d").c_str(), 0755), 0);
    ASSERT_EQ(::chmod(tmp.c_str(), 0644), 0);
    ASSERT_EQ(::rename(tmp.c_str(), drop_in_path(name).c_str()), 0);
  }

  // Exit code 0 when nobody receives `text` from secret.jobs, 100 when refused with
  // permission_denied naming the operation and key, something else otherwise.
  int nobody_receives(const std::string& text) {
    const pid_t child = spawn([&] {
      if (::setgroups(0, nullptr) != 0) return 10;
      if (::setgid(65534) != 0 || ::setuid(65534) != 0) return 11;
      auto c = connect();
      try {
        auto m = c.receive("secret.jobs", seconds(30));
        return m && m->text() == text ? 0 : 1;
      } catch (const Error& e) {
        if (e.code() != Errc::permission_denied) return 2;
        const std::string what = e.what();
        if (what.find("receive from queue 'secret.jobs' denied by policy") == std::string::npos) {
          std::fprintf(stderr, "unexpected text: %s\n", what.c_str());
          return 3;
        }
        return 100;
      }
    });
    return wait_exit(child);
  }

  Daemon daemon_;
};

TEST_F(DaemonPolicyDropInTest, ADropInOpensAQueueAndRemovingItClosesItOnReload) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run a client as another uid";
  auto root = connect();
  root.send_confirmed("secret.jobs", "first");
  ASSERT_EQ(nobody_receives("first"), 100);

  write_drop_in("50-nobody.json", kOpenToNobody);
  ASSERT_EQ(::kill(daemon_.pid(), SIGHUP), 0);
  ASSERT_TRUE(daemon_.wait_for_log("policy: 3 rules, default allow (was 2 rules, default allow)"))
      << daemon_.log();
  // The message sent before the reload waited in the queue.
  EXPECT_EQ(nobody_receives("first"), 0);

  root.send_confirmed("secret.jobs", "second");
  ASSERT_EQ(::unlink(drop_in_path("50-nobody.json").c_str()), 0);
  ASSERT_EQ(::kill(daemon_.pid(), SIGHUP), 0);
  ASSERT_TRUE(daemon_.wait_for_log("policy: 2 rules, default allow (was 3 rules, default allow)"))
      << daemon_.log();
  EXPECT_EQ(nobody_receives("second"), 100);
}

TEST_F(DaemonPolicyDropInTest, ABrokenDropInIsRefusedByCheckConfigAndByAReloadThatKeepsThePolicy) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run a client as another uid";
  auto root = connect();
  root.send_confirmed("secret.jobs", "kept");
  write_drop_in("60-broken.json", R"({"rules": [
    {"allow": ["receive"], "uids": [65534], "keys": ["secret.jobs"]},
    {"allow": ["receive"], "users": ["no-such-user-qbus"], "keys": ["secret.jobs"]}]})");
  const std::string why =
      drop_in_path("60-broken.json") + ": rules[1].users: unknown user 'no-such-user-qbus'";

  const auto checked = run({qbusd_path(), "--check-config", "--config", daemon_.config_path()});
  EXPECT_EQ(checked.exit_code, 1);
  EXPECT_NE(checked.err.find(why), std::string::npos) << checked.err;

  ASSERT_EQ(::kill(daemon_.pid(), SIGHUP), 0);
  ASSERT_TRUE(daemon_.wait_for_log("reload failed, the running configuration stays: " + why))
      << daemon_.log();
  // The running policy still refuses nobody, though the broken file's first rule would not.
  EXPECT_EQ(nobody_receives("kept"), 100);
}

// Found by the policy fuzz target: a number too large for a double escaped the parser as
// an exception the reload thread did not catch, and qbusd terminated on SIGHUP.
TEST_F(DaemonPolicyDropInTest, ADropInWithAHugeNumberFailsTheReloadAndQbusdGoesOn) {
  write_drop_in("70-huge.json",
                R"({"rules": [{"allow": ["send"], "uids": [1E400], "keys": ["a"]}]})");
  ASSERT_EQ(::kill(daemon_.pid(), SIGHUP), 0);
  ASSERT_TRUE(daemon_.wait_for_log("reload failed, the running configuration stays: " +
                                   drop_in_path("70-huge.json") + ": invalid JSON: "))
      << daemon_.log();
  auto c = connect();
  c.send_confirmed("public.jobs", "still here");
  auto m = c.receive("public.jobs", seconds(30));
  ASSERT_TRUE(m);
  EXPECT_EQ(m->text(), "still here");
}

}  // namespace
}  // namespace qbus::testing
