// Purge and delete through the client protocol, and re-declaring with other options, on the
// real daemon (issue 12, capability 3): the queue's owner may, root may, a client the
// policy grants `manage` of the key may; anyone else is refused with permission_denied
// naming the operation and the key, and the queue keeps its messages. A delete wakes a
// receiver waiting on the queue with queue_deleted.
//
// Clients of another uid are forked children that drop to nobody (65534), taking the
// supplementary groups a test gives them; the daemon runs as root.
#include <grp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <qbus/client.hpp>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "daemon.hpp"
#include "eventually.hpp"
#include "process.hpp"

namespace qbus::testing {
namespace {

using json = nlohmann::json;
using std::chrono::seconds;

constexpr uid_t kNobody = 65534;
constexpr gid_t kOps = 4242;

// Members of group 4242 may manage the `jobs.` queues; everything else is as without a
// policy (the default allows every other operation, and never grants manage).
constexpr const char* kManagePolicy = R"({"policy": {"rules": [
  {"allow": ["manage"], "gids": [4242], "prefixes": ["jobs."]}]}})";

class QueueManageTest : public ::testing::Test {
 protected:
  explicit QueueManageTest(const char* config = "{}")
      : daemon_(DaemonOptions{.config_json = config}) {
    ::chmod(daemon_.dir().path().c_str(), 0755);  // let uid 65534 reach the socket
  }

  Client connect(const std::string& name = "manage-test") {
    return Client(ClientOptions{daemon_.address(), name, seconds(30)});
  }

  // Runs `body` in a child that dropped to nobody with `groups` as its supplementary
  // groups; its exit code is body's result.
  template <typename F>
  pid_t as_nobody(std::vector<gid_t> groups, F&& body) {
    return spawn([&, groups] {
      if (::setgroups(groups.size(), groups.data()) != 0) return 10;
      if (::setgid(kNobody) != 0 || ::setuid(kNobody) != 0) return 11;
      return body();
    });
  }

  // The admin socket's view of queue `key` (qbusctl queue KEY --json); null when none.
  json queue(const std::string& key) {
    const auto r = run({qbusctl_path(), "--address", daemon_.address(), "--json", "queue", key});
    if (r.exit_code != 0) return nullptr;
    return json::parse(r.out)["queue"];
  }

  // qbusctl policy check for uid 65534 with `gids` and op manage on `key`.
  Result check_manage(std::vector<std::string> gids, const std::string& key) {
    std::vector<std::string> args = {
        qbusctl_path(), "--address", daemon_.address(), "policy", "check", "--uid", "65534"};
    for (const auto& g : gids) {
      args.push_back("--gid");
      args.push_back(g);
    }
    for (const char* a : {"--op", "manage", "--key"})
      args.emplace_back(a);
    args.push_back(key);
    return run(args);
  }

  Daemon daemon_;
};

// 0 when `op` on `c` is refused with permission_denied whose text names `needle`.
template <typename Op>
int expect_denied(Op&& op, const std::string& needle) {
  try {
    (void)op();
    return 1;
  } catch (const Error& e) {
    if (e.code() != Errc::permission_denied) {
      std::fprintf(stderr, "unexpected error: %s\n", e.what());
      return 2;
    }
    if (std::string(e.what()).find(needle) == std::string::npos) {
      std::fprintf(stderr, "unexpected text: %s\n", e.what());
      return 3;
    }
  }
  return 0;
}

TEST_F(QueueManageTest, TheOwnerPurgesAndDeletesItsQueue) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run a client as another uid";
  const pid_t owner = as_nobody({}, [&] {
    auto c = connect("owner");
    for (int i = 0; i < 3; ++i)
      c.send_confirmed("mine", "m" + std::to_string(i));
    if (c.purge("mine") != 3) return 1;
    if (c.try_receive("mine")) return 2;  // nothing left
    c.send_confirmed("mine", "again");
    if (c.delete_queue("mine") != 1) return 3;
    try {
      (void)c.purge("mine");
      return 4;
    } catch (const Error& e) {
      if (e.code() != Errc::no_such_queue) return 5;
    }
    return 0;
  });
  ASSERT_EQ(wait_exit(owner), 0);
  EXPECT_TRUE(queue("mine").is_null());
  EXPECT_TRUE(daemon_.wait_for_log("purge of 'mine' dropped 3 messages")) << daemon_.log();
  EXPECT_TRUE(daemon_.wait_for_log("delete of 'mine' dropped 1 messages")) << daemon_.log();
}

TEST_F(QueueManageTest, NobodyCannotPurgeOrDeleteRootsQueueButRootCan) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run a client as another uid";
  auto root = connect("root");
  root.send_confirmed("orders", "first");
  root.send_confirmed("orders", "second");
  const pid_t other = as_nobody({}, [&] {
    auto c = connect("other");
    if (int r = expect_denied([&] { return c.purge("orders"); },
                              "purge of queue 'orders': owned by uid 0");
        r != 0)
      return r;
    if (int r = expect_denied([&] { return c.delete_queue("orders"); },
                              "delete of queue 'orders': owned by uid 0");
        r != 0)
      return 10 + r;
    // The connection goes on.
    c.sync();
    return 0;
  });
  ASSERT_EQ(wait_exit(other), 0);
  const json q = queue("orders");
  ASSERT_FALSE(q.is_null());
  EXPECT_EQ(q["depth"], 2) << q.dump();

  EXPECT_EQ(root.purge("orders"), 2u);
  root.send_confirmed("orders", "third");
  EXPECT_EQ(root.delete_queue("orders"), 1u);
  EXPECT_TRUE(queue("orders").is_null());
}

TEST_F(QueueManageTest, DeletingWakesAWaitingReceiverWithQueueDeleted) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run a client as another uid";
  auto owner = connect("owner");
  owner.declare("jobs.wait", QueueOptions{});
  std::optional<Errc> ended;
  std::thread receiver([&] {
    auto r = connect("waiter");
    try {
      (void)r.receive("jobs.wait", seconds(120));
    } catch (const Error& e) {
      ended = e.code();
    }
  });
  // Deleted only once the receive waits, so it is the waiter that is told.
  ASSERT_TRUE(eventually([&] {
    const json q = queue("jobs.wait");
    return !q.is_null() && q["waiting_receivers"] == 1;
  }));
  try {
    EXPECT_EQ(owner.delete_queue("jobs.wait"), 0u);
  } catch (const Error& e) {
    ADD_FAILURE() << e.what();
    owner.send_confirmed("jobs.wait", "wake up");  // so the receiver ends now
  }
  receiver.join();
  ASSERT_TRUE(ended.has_value());
  EXPECT_EQ(*ended, Errc::queue_deleted);
}

TEST_F(QueueManageTest, WithoutAPolicyNobodyIsGrantedManage) {
  const auto r = check_manage({}, "jobs.a");
  EXPECT_EQ(r.exit_code, 4) << r.err;
  EXPECT_EQ(r.out, "deny: no policy configured\n");
}

class QueueManagePolicyTest : public QueueManageTest {
 protected:
  QueueManagePolicyTest() : QueueManageTest(kManagePolicy) {}
};

TEST_F(QueueManagePolicyTest, AManageGrantLetsNobodyPurgeAndDelete) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run a client as another uid";
  auto root = connect("root");
  root.declare("jobs.a", QueueOptions{});  // stays when purged
  root.send_confirmed("jobs.a", "1");
  root.send_confirmed("jobs.a", "2");
  root.send_confirmed("jobs.b", "1");
  root.send_confirmed("other", "1");
  const pid_t ops = as_nobody({kOps}, [&] {
    auto c = connect("ops");
    if (c.purge("jobs.a") != 2) return 1;
    if (c.delete_queue("jobs.b") != 1) return 2;
    // The grant covers `jobs.` only.
    return expect_denied([&] { return c.purge("other"); },
                         "purge of queue 'other': owned by uid 0; no policy rule grants manage");
  });
  ASSERT_EQ(wait_exit(ops), 0);
  EXPECT_EQ(queue("jobs.a")["depth"], 0);
  EXPECT_TRUE(queue("jobs.b").is_null());
  EXPECT_EQ(queue("other")["depth"], 1);

  // Without the group: refused, audited with what decided, and the messages stay.
  root.send_confirmed("jobs.a", "3");
  const pid_t outsider = as_nobody({}, [&] {
    auto c = connect("outsider");
    return expect_denied([&] { return c.delete_queue("jobs.a"); },
                         "delete of queue 'jobs.a': owned by uid 0; no policy rule grants "
                         "manage of it");
  });
  ASSERT_EQ(wait_exit(outsider), 0);
  EXPECT_EQ(queue("jobs.a")["depth"], 1);
  EXPECT_TRUE(daemon_.wait_for_log("policy: denied manage of 'jobs.a' to client")) << daemon_.log();
}

TEST_F(QueueManagePolicyTest, PolicyCheckExplainsAManageDecision) {
  const auto member = check_manage({"65534", "4242"}, "jobs.a");
  EXPECT_EQ(member.exit_code, 0) << member.err;
  EXPECT_EQ(
      member.out,
      "allow: policy.rules[0] {\"allow\":[\"manage\"],\"gids\":[4242],\"prefixes\":[\"jobs.\"]}\n");
  // The default allows, but never grants manage.
  const auto outsider = check_manage({"65534"}, "jobs.a");
  EXPECT_EQ(outsider.exit_code, 4) << outsider.err;
  EXPECT_EQ(outsider.out, "deny: the default\n");
}

TEST_F(QueueManagePolicyTest, RedeclaringWithOtherOptionsTakesAManageGrant) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run a client as another uid";
  auto root = connect("root");
  root.send_confirmed("jobs.c", "1");
  const QueueOptions squeeze{1, 0, Overflow::drop_oldest};
  const pid_t outsider = as_nobody({}, [&] {
    auto c = connect("outsider");
    return expect_denied(
        [&] {
          c.declare("jobs.c", squeeze);
          return 0;
        },
        "declare of queue 'jobs.c' with other options: owned by uid 0");
  });
  ASSERT_EQ(wait_exit(outsider), 0);
  EXPECT_EQ(queue("jobs.c")["overflow"], "block");

  const pid_t ops = as_nobody({kOps}, [&] {
    auto c = connect("ops");
    c.declare("jobs.c", squeeze);
    return 0;
  });
  ASSERT_EQ(wait_exit(ops), 0);
  const json q = queue("jobs.c");
  EXPECT_EQ(q["overflow"], "drop_oldest") << q.dump();
  EXPECT_EQ(q["max_messages"], 1) << q.dump();
  EXPECT_EQ(q["owner"], 0) << q.dump();  // a grant manages the queue; it does not take it
}

}  // namespace
}  // namespace qbus::testing
