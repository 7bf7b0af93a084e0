// Direct messages on the real daemon as several uids (forked children that drop to nobody
// or another uid): under a policy a process may send to its own uid and root to any, other
// pairs need a send_direct rule (here one naming the receiver's supplementary group), a
// refusal is permission_denied naming the pid and is audited, a reply always reaches its
// requester, and `qbusctl policy check` explains it. Without a policy, inbox space is
// shared out per sending uid, so one uid filling root's inbox does not shut out the others.
#include <grp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <qbus/client.hpp>

#include <chrono>
#include <string>
#include <vector>

#include "daemon.hpp"
#include "process.hpp"

namespace qbus::testing {
namespace {

using std::chrono::seconds;

constexpr uid_t kNobody = 65534;
constexpr gid_t kWorkersGid = 4242;
constexpr uid_t kOther = 65533;  // a second unprivileged uid; needs no passwd entry

// Every key under "svc" is open; nobody may send to members of group 4242; other direct
// messages only to the sender's own uid, or from root.
constexpr const char* kDirectRules = R"({"policy": {"default": "deny", "rules": [
  {"allow": "*", "everyone": true, "prefixes": ["svc"]},
  {"allow": ["send_direct"], "uids": [65534], "to_gids": [4242]}]}})";

// Small inboxes, so that filling one takes a handful of messages.
constexpr const char* kSmallInboxes = R"({"inbox": {"max_messages": 5, "overflow": "reject"}})";

class DirectPolicyTest : public ::testing::Test {
 protected:
  explicit DirectPolicyTest(const char* config) : daemon_(DaemonOptions{.config_json = config}) {
    // The children, running as other uids, must reach the socket.
    ::chmod(daemon_.dir().path().c_str(), 0755);
  }

  Client connect() {
    return Client(ClientOptions{daemon_.address(), "direct-policy-test", seconds(30)});
  }

  // Runs `body` in a child that has dropped to `uid` (its gid the same number) with
  // `groups` as its supplementary groups.
  template <typename F>
  pid_t as_uid(uid_t uid, std::vector<gid_t> groups, F&& body) {
    return spawn([&, uid, groups] {
      if (::setgroups(groups.size(), groups.data()) != 0) return 10;
      if (::setgid(uid) != 0 || ::setuid(uid) != 0) return 11;
      return body();
    });
  }

  Daemon daemon_;
};

// The code a confirmed direct send to `pid` got (Errc::ok when accepted).
Errc send_direct(Client& c, pid_t pid, const std::string& text, std::string* what = nullptr) {
  try {
    c.send_to_pid(static_cast<std::uint32_t>(pid), text, DirectOptions{{}, true});
    return Errc::ok;
  } catch (const Error& e) {
    if (what) *what = e.what();
    return e.code();
  }
}

class DaemonDirectPolicyTest : public DirectPolicyTest {
 protected:
  DaemonDirectPolicyTest() : DirectPolicyTest(kDirectRules) {}

  Result ctl(std::vector<std::string> args) {
    args.insert(args.begin(), {qbusctl_path(), "--address", daemon_.address()});
    return run(args);
  }
};

TEST_F(DaemonDirectPolicyTest, TheSameUidMaySendRootToAnyOtherPairsAreDeniedAndAudited) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run clients as other uids";
  auto root = connect();
  root.sync();
  const pid_t me = ::getpid();
  Gate ready;
  const pid_t receiver = as_uid(kNobody, {}, [&] {
    auto c = connect();
    c.sync();
    ready.open();
    for (const char* text : {"same uid", "still connected"}) {
      auto m = c.receive_direct(seconds(30));
      if (!m || m->text() != text || m->sender().uid != kNobody) return 1;
    }
    auto m = c.receive_direct(seconds(30));
    return m && m->text() == "from root" && m->sender().uid == 0 ? 0 : 2;
  });
  ready.wait();
  const pid_t sender = as_uid(kNobody, {}, [&] {
    auto c = connect();
    if (send_direct(c, receiver, "same uid") != Errc::ok) return 1;
    std::string what;
    if (send_direct(c, me, "to root", &what) != Errc::permission_denied) return 2;
    const std::string expected = "send_direct to pid " + std::to_string(me) + " denied by policy";
    if (what.find(expected) == std::string::npos) {
      std::fprintf(stderr, "unexpected text: %s\n", what.c_str());
      return 3;
    }
    // The connection goes on.
    return send_direct(c, receiver, "still connected") == Errc::ok ? 0 : 4;
  });
  ASSERT_EQ(wait_exit(sender), 0) << daemon_.log();
  root.send_to_pid(static_cast<std::uint32_t>(receiver), "from root", DirectOptions{{}, true});
  EXPECT_EQ(wait_exit(receiver), 0);
  EXPECT_TRUE(daemon_.wait_for_log("policy: denied send_direct to pid " + std::to_string(me) +
                                   " (uid 0) for client"))
      << daemon_.log();
  EXPECT_NE(daemon_.log().find("uid 65534"), std::string::npos) << daemon_.log();
}

TEST_F(DaemonDirectPolicyTest, AGroupRuleAdmitsThroughTheReceiversSupplementaryGroup) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run clients as other uids";
  Gate worker_ready, outsider_ready, done;
  const pid_t worker = as_uid(kOther, {kWorkersGid}, [&] {
    auto c = connect();
    c.sync();
    worker_ready.open();
    auto m = c.receive_direct(seconds(30));
    return m && m->text() == "via the group" ? 0 : 1;
  });
  const pid_t outsider = as_uid(kOther, {}, [&] {
    auto c = connect();
    c.sync();
    outsider_ready.open();
    done.wait();
    return 0;
  });
  worker_ready.wait();
  outsider_ready.wait();
  const pid_t sender = as_uid(kNobody, {}, [&] {
    auto c = connect();
    if (send_direct(c, worker, "via the group") != Errc::ok) return 1;
    return send_direct(c, outsider, "not a member") == Errc::permission_denied ? 0 : 2;
  });
  EXPECT_EQ(wait_exit(sender), 0);
  done.open();
  EXPECT_EQ(wait_exit(worker), 0);
  EXPECT_EQ(wait_exit(outsider), 0);
}

TEST_F(DaemonDirectPolicyTest, AReplyReachesARequesterThePairMayNotOtherwiseMessage) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run clients as other uids";
  Gate ready;
  // 65533 answers nobody's request, though neither may send the other a direct message.
  const pid_t replier = as_uid(kOther, {}, [&] {
    auto c = connect();
    c.sync();
    ready.open();
    auto m = c.receive("svc.echo", seconds(30));
    if (!m || !m->is_request()) return 1;
    if (send_direct(c, static_cast<pid_t>(m->sender().pid), "x") != Errc::permission_denied) {
      return 2;
    }
    c.reply(*m, "pong");
    c.sync();
    return c.send_failures().count == 0 ? 0 : 3;
  });
  ready.wait();
  const pid_t requester = as_uid(kNobody, {}, [&] {
    auto c = connect();
    if (send_direct(c, replier, "x") != Errc::permission_denied) return 1;
    auto answer = c.request("svc.echo", "ping", seconds(30));
    return answer && answer->text() == "pong" && answer->sender().uid == kOther ? 0 : 2;
  });
  EXPECT_EQ(wait_exit(requester), 0);
  EXPECT_EQ(wait_exit(replier), 0);
}

TEST_F(DaemonDirectPolicyTest, QbusctlPolicyCheckExplainsADirectMessage) {
  const auto group = ctl({"policy", "check", "--uid", "65534", "--op", "send_direct", "--to-uid",
                          "65533", "--to-gid", "65533", "--to-gid", "4242"});
  EXPECT_EQ(group.exit_code, 0) << group.err;
  EXPECT_EQ(group.out,
            R"(allow: policy.rules[1] {"allow":["send_direct"],"to_gids":[4242],"uids":[65534]})"
            "\n");
  const auto other =
      ctl({"policy", "check", "--uid", "65534", "--op", "send_direct", "--to-uid", "65533"});
  EXPECT_EQ(other.exit_code, 4) << other.err;
  EXPECT_EQ(other.out, "deny: the default\n");
  const auto same =
      ctl({"policy", "check", "--uid", "65533", "--op", "send_direct", "--to-uid", "65533"});
  EXPECT_EQ(same.exit_code, 0) << same.err;
  EXPECT_EQ(same.out, "allow: the same uid (no send_direct rule matches)\n");
  const auto root = ctl({"policy", "check", "--uid", "0", "--op", "send_direct", "--to-uid", "7"});
  EXPECT_EQ(root.out, "allow: root (no send_direct rule matches)\n");
  const auto as_json =
      ctl({"--json", "policy", "check", "--uid", "0", "--op", "send_direct", "--to-uid", "7"});
  EXPECT_NE(as_json.out.find(R"("builtin": "root")"), std::string::npos) << as_json.out;
  EXPECT_NE(as_json.out.find(R"("rule": null)"), std::string::npos) << as_json.out;

  const auto no_target = ctl({"policy", "check", "--uid", "0", "--op", "send_direct"});
  EXPECT_EQ(no_target.exit_code, 2);
  EXPECT_NE(no_target.err.find("--op send_direct needs --to-uid"), std::string::npos)
      << no_target.err;
  const auto with_key =
      ctl({"policy", "check", "--uid", "0", "--op", "send", "--key", "a", "--to-uid", "1"});
  EXPECT_EQ(with_key.exit_code, 2);
  EXPECT_NE(with_key.err.find("--to-uid and --to-gid go with --op send_direct only"),
            std::string::npos)
      << with_key.err;
}

class InboxFairnessTest : public DirectPolicyTest {
 protected:
  InboxFairnessTest() : DirectPolicyTest(kSmallInboxes) {}
};

TEST_F(InboxFairnessTest, OneUidFillingAnInboxDoesNotShutOutAnother) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run clients as other uids";
  auto root = connect();
  root.sync();
  const pid_t me = ::getpid();

  // nobody fills its share of root's inbox; its next send is refused.
  const pid_t filler = as_uid(kNobody, {}, [&] {
    auto c = connect();
    for (int i = 0; i < 5; ++i)
      if (send_direct(c, me, "nobody " + std::to_string(i)) != Errc::ok) return 1;
    return send_direct(c, me, "one too many") == Errc::peer_busy ? 0 : 2;
  });
  ASSERT_EQ(wait_exit(filler), 0);

  // Another uid still has room of its own in the same inbox.
  const pid_t other = as_uid(kOther, {}, [&] {
    auto c = connect();
    std::string what;
    const Errc e = send_direct(c, me, "from 65533", &what);
    if (e != Errc::ok) std::fprintf(stderr, "65533's send: %s\n", what.c_str());
    return e == Errc::ok ? 0 : 1;
  });
  ASSERT_EQ(wait_exit(other), 0);

  const auto got = root.receive_direct_batch(16, seconds(30));
  ASSERT_EQ(got.size(), 6u);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(got[i].text(), "nobody " + std::to_string(i));
    EXPECT_EQ(got[i].sender().uid, kNobody);
  }
  EXPECT_EQ(got[5].text(), "from 65533");
  EXPECT_EQ(got[5].sender().uid, kOther);
}

}  // namespace
}  // namespace qbus::testing
