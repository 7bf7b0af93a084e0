// The system bus's defaults on the real daemon (config/README.md, "bus"): with no policy at
// all, each uid may use only its private namespace `user.<uid>.` and root everything, so
// nobody (uid 65534, a forked child that drops to it) can neither read another's keys nor
// squat a queue or named-region key that root's service expects; a drop-in opening one
// queue to a group opens that queue only; qbusctl policy check and the denial log name the
// baseline rule or the file a rule came from. A per-user bus with no policy stays open.
#include <grp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <qbus/client.hpp>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "daemon.hpp"
#include "process.hpp"

namespace qbus::testing {
namespace {

using nlohmann::json;
using std::chrono::seconds;

constexpr gid_t kOrdersGid = 4242;

class PolicyDefaultsTest : public ::testing::Test {
 protected:
  // A config file (even an empty one) makes qbusd read policy.d beside it.
  explicit PolicyDefaultsTest(const std::string& bus = "system")
      : daemon_(DaemonOptions{.config_json = "{}", .bus = bus}) {
    // The socket's directory is the test's own: nobody must be able to reach the socket.
    ::chmod(daemon_.dir().path().c_str(), 0755);
  }

  Client connect() {
    return Client(ClientOptions{daemon_.address(), "policy-defaults-test", seconds(30)});
  }

  // Drops to nobody (after taking `groups` as its supplementary groups), then runs `body`.
  template <typename F>
  pid_t as_nobody(std::vector<gid_t> groups, F&& body) {
    return spawn([&, groups] {
      if (::setgroups(groups.size(), groups.data()) != 0) return 10;
      if (::setgid(65534) != 0 || ::setuid(65534) != 0) return 11;
      return body();
    });
  }

  std::string admin_path() const { return daemon_.dir().file("admin.sock"); }
  Result ctl(std::vector<std::string> args) {
    args.insert(args.begin(), {qbusctl_path(), "--admin-address", "unix:" + admin_path()});
    return run(args);
  }

  // The admin socket's answer to one request.
  json admin(const json& request) {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::strncpy(sa.sun_path, admin_path().c_str(), sizeof(sa.sun_path) - 1);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
      ::close(fd);
      return json{};
    }
    const std::string line = request.dump() + "\n";
    (void)!::send(fd, line.data(), line.size(), MSG_NOSIGNAL);
    std::string buf;
    char b[65536];
    while (buf.find('\n') == std::string::npos) {
      const ssize_t n = ::recv(fd, b, sizeof(b), 0);
      if (n <= 0) break;
      buf.append(b, static_cast<std::size_t>(n));
    }
    ::close(fd);
    return json::parse(buf.substr(0, buf.find('\n')), nullptr, false);
  }

  void write_drop_in(const std::string& name, const std::string& text) {
    const std::string dir = daemon_.dir().file("policy.d");
    std::filesystem::create_directories(dir);
    const std::string tmp = dir + "/." + name + ".tmp";
    std::ofstream(tmp, std::ios::trunc) << text;
    // Whatever the umask: qbusd refuses a group- or world-writable drop-in.
    ASSERT_EQ(::chmod(dir.c_str(), 0755), 0);
    ASSERT_EQ(::chmod(tmp.c_str(), 0644), 0);
    ASSERT_EQ(::rename(tmp.c_str(), (dir + "/" + name).c_str()), 0);
  }

  Daemon daemon_;
};

// 0 when `call` is refused with permission_denied whose text holds `text`.
template <typename F>
int refused(F&& call, const std::string& text) {
  try {
    call();
    std::fprintf(stderr, "not refused: %s\n", text.c_str());
    return 1;
  } catch (const Error& e) {
    if (e.code() != Errc::permission_denied) {
      std::fprintf(stderr, "%s: %s\n", text.c_str(), e.what());
      return 2;
    }
    if (std::string(e.what()).find(text) == std::string::npos) {
      std::fprintf(stderr, "unexpected text: %s\n", e.what());
      return 3;
    }
  }
  return 0;
}

TEST_F(PolicyDefaultsTest, EachUidHasItsPrivateNamespaceAndRootEverything) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run a client as another uid";
  auto root = connect();
  root.send_confirmed("user.65534.inbox", "for nobody");
  root.send_confirmed("user.0.secret", "root's own");
  root.send_confirmed("shared.x", "shared");
  root.declare("shared.declared", QueueOptions{});

  const pid_t nobody = as_nobody({}, [&] {
    auto c = connect();
    // Its own namespace: every operation.
    c.declare("user.65534.x", QueueOptions{5, 0, Overflow::reject});
    c.send_confirmed("user.65534.x", "mine");
    auto own = c.receive("user.65534.x", seconds(30));
    if (!own || own->text() != "mine") return 20;
    auto from_root = c.receive("user.65534.inbox", seconds(30));
    if (!from_root || from_root->text() != "for nobody") return 21;
    // Another uid's namespace and everything else: nothing.
    if (int r = refused([&] { (void)c.try_receive("user.0.secret"); },
                        "receive from queue 'user.0.secret' denied by policy")) {
      return 30 + r;
    }
    if (int r = refused([&] { c.send_confirmed("user.0.secret", "x"); },
                        "send to queue 'user.0.secret' denied by policy")) {
      return 40 + r;
    }
    if (int r =
            refused([&] { (void)c.try_receive("shared.x"); }, "receive from queue 'shared.x'")) {
      return 50 + r;
    }
    if (int r = refused([&] { c.send_confirmed("shared.x", "x"); }, "send to queue 'shared.x'")) {
      return 60 + r;
    }
    if (int r = refused([&] { c.declare("shared.y", QueueOptions{}); }, "'shared.y'")) {
      return 70 + r;
    }
    return 0;
  });
  ASSERT_EQ(wait_exit(nobody), 0) << daemon_.log();

  // What nobody could not take is still there for root.
  auto m = root.receive("user.0.secret", seconds(30));
  ASSERT_TRUE(m);
  EXPECT_EQ(m->text(), "root's own");
  m = root.receive("shared.x", seconds(30));
  ASSERT_TRUE(m);
  EXPECT_EQ(m->text(), "shared");
  // The audit names the default that decided.
  EXPECT_TRUE(daemon_.wait_for_log("policy: denied receive of 'user.0.secret' to client"))
      << daemon_.log();
  EXPECT_NE(daemon_.log().find("uid 65534 comm '"), std::string::npos);
  EXPECT_NE(daemon_.log().find("): the default (deny)"), std::string::npos) << daemon_.log();
}

TEST_F(PolicyDefaultsTest, NobodyCannotSquatAQueueKeyRootsServiceExpects) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run a client as another uid";
  // Today's squat: nobody declares `orders` first with room for one message, dropping the
  // oldest, so root's confirmed sends are answered OK and all but one lost.
  const pid_t squatter = as_nobody({}, [&] {
    auto c = connect();
    if (int r = refused(
            [&] {
              c.declare("orders", QueueOptions{1, 0, Overflow::drop_oldest});
            },
            "declare of queue 'orders' denied by policy")) {
      return 10 + r;
    }
    // Nor may it create the queue by use.
    if (int r = refused([&] { c.send_confirmed("orders", "squat"); }, "'orders'")) return 20 + r;
    if (int r = refused([&] { (void)c.try_receive("orders"); }, "'orders'")) return 30 + r;
    return 0;
  });
  ASSERT_EQ(wait_exit(squatter), 0) << daemon_.log();

  auto root = connect();
  root.declare("orders", QueueOptions{});
  constexpr int kSends = 100;
  for (int i = 0; i < kSends; ++i)
    root.send_confirmed("orders", "order " + std::to_string(i));
  for (int i = 0; i < kSends; ++i) {
    auto m = root.try_receive("orders");
    ASSERT_TRUE(m) << "message " << i << " is missing";
    EXPECT_EQ(m->text(), "order " + std::to_string(i));
  }
  // The queue is root's.
  const auto q = ctl({"--json", "queue", "orders"});
  ASSERT_EQ(q.exit_code, 0) << q.err;
  EXPECT_EQ(json::parse(q.out)["queue"]["owner"], 0) << q.out;
}

TEST_F(PolicyDefaultsTest, NobodyCannotSquatANamedRegionKeyButMayCreateItsOwn) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run a client as another uid";
  const pid_t squatter = as_nobody({}, [&] {
    auto c = connect();
    if (int r = refused([&] { (void)c.create_shared_region("frames", 4096, 0666); },
                        "create of region 'frames' denied by policy (judged as declare)")) {
      return 10 + r;
    }
    // Its own namespace holds regions too.
    auto own = c.create_shared_region("user.65534.frames", 4096, 0600);
    own.data()[0] = std::byte{7};
    auto again = c.attach_shared_region("user.65534.frames");
    return again.bytes()[0] == std::byte{7} ? 0 : 20;
  });
  ASSERT_EQ(wait_exit(squatter), 0) << daemon_.log();

  // Root's CREATE succeeds, and an ATTACH maps root's memory, not a squatter's.
  auto root = connect();
  auto frames = root.create_shared_region("frames", 4096, 0644);
  frames.data()[0] = std::byte{42};
  auto attached = root.attach_shared_region("frames");
  EXPECT_EQ(attached.bytes()[0], std::byte{42});

  // Even with the mode open to others, nobody may not attach: the policy judges it as
  // receive.
  const pid_t reader = as_nobody({}, [&] {
    auto c = connect();
    return refused([&] { (void)c.attach_shared_region("frames", false); },
                   "attach of region 'frames' denied by policy (judged as receive)");
  });
  EXPECT_EQ(wait_exit(reader), 0) << daemon_.log();
}

TEST_F(PolicyDefaultsTest, ADropInOpeningOneQueueToAGroupOpensOnlyThatQueue) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run a client as another uid";
  write_drop_in("50-orders.json", R"({"rules": [
    {"allow": ["send", "receive"], "gids": [4242], "keys": ["orders"]}
  ]})");
  ASSERT_EQ(::kill(daemon_.pid(), SIGHUP), 0);
  ASSERT_TRUE(daemon_.wait_for_log("policy: 1 rules, default deny, system bus")) << daemon_.log();

  auto root = connect();
  root.send_confirmed("orders", "for the group");
  const pid_t member = as_nobody({kOrdersGid}, [&] {
    auto c = connect();
    auto m = c.receive("orders", seconds(30));
    if (!m || m->text() != "for the group") return 10;
    c.send_confirmed("orders", "from the group");
    // Nothing else opened: not declare, not a longer key, not another queue.
    if (int r = refused(
            [&] {
              c.declare("orders", QueueOptions{1, 0, Overflow::reject});
            },
            "declare of queue 'orders'")) {
      return 20 + r;
    }
    if (int r = refused([&] { c.send_confirmed("orders.x", "x"); }, "'orders.x'")) return 30 + r;
    if (int r = refused([&] { c.send_confirmed("shared.x", "x"); }, "'shared.x'")) return 40 + r;
    return 0;
  });
  ASSERT_EQ(wait_exit(member), 0) << daemon_.log();
  const pid_t outsider = as_nobody({}, [&] {
    auto c = connect();
    return refused([&] { (void)c.try_receive("orders"); }, "receive from queue 'orders'");
  });
  ASSERT_EQ(wait_exit(outsider), 0) << daemon_.log();
  auto m = root.receive("orders", seconds(30));
  ASSERT_TRUE(m);
  EXPECT_EQ(m->text(), "from the group");

  // policy check names the drop-in file and the rule's index in it, and the baseline.
  const std::string file = daemon_.dir().file("policy.d") + "/50-orders.json";
  auto r = ctl({"policy", "check", "--uid", "65534", "--gid", "65534", "--gid", "4242", "--op",
                "send", "--key", "orders"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.rfind("allow: " + file + ": rules[0] {", 0), 0u) << r.out;
  r = ctl({"policy", "check", "--uid", "65534", "--op", "declare", "--key", "user.65534.jobs"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "allow: the private namespace user.65534.\n");
  r = ctl({"policy", "check", "--uid", "0", "--op", "receive", "--key", "shared.x"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "allow: root\n");
  r = ctl({"policy", "check", "--uid", "65534", "--op", "send", "--key", "shared.x"});
  EXPECT_EQ(r.exit_code, 4) << r.err;
  EXPECT_EQ(r.out, "deny: the default\n");

  // The config answer says which bus is in effect and where the drop-ins came from.
  const json config = admin(json{{"request", "config"}});
  ASSERT_TRUE(config.contains("config")) << config.dump();
  EXPECT_EQ(config["config"]["bus"], "system");
  EXPECT_EQ(config["config"]["policy_dir"], daemon_.dir().file("policy.d"));
  EXPECT_EQ(config["config"]["policy"]["default"], "deny");
}

class UserBusDefaultsTest : public PolicyDefaultsTest {
 protected:
  UserBusDefaultsTest() : PolicyDefaultsTest("user") {}
};

TEST_F(UserBusDefaultsTest, WithNoPolicyEveryoneMayUseEveryKeyAsBefore) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run a client as another uid";
  auto root = connect();
  root.send_confirmed("secret.jobs", "root-secret");
  const pid_t nobody = as_nobody({}, [&] {
    auto c = connect();
    auto m = c.receive("secret.jobs", seconds(30));
    if (!m || m->text() != "root-secret") return 10;
    c.send_confirmed("user.0.x", "anywhere");
    (void)c.create_shared_region("frames", 4096, 0600);
    // Today's squat still works on a user bus, which only its own user can reach.
    c.declare("orders", QueueOptions{1, 0, Overflow::drop_oldest});
    return 0;
  });
  ASSERT_EQ(wait_exit(nobody), 0) << daemon_.log();
  for (int i = 0; i < 3; ++i)
    root.send_confirmed("orders", "order " + std::to_string(i));
  auto m = root.try_receive("orders");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->text(), "order 2");
  EXPECT_FALSE(root.try_receive("orders"));
  // No policy was built: nothing is asked.
  EXPECT_EQ(daemon_.log().find("policy: "), std::string::npos) << daemon_.log();
  const auto r = ctl({"policy", "check", "--uid", "65534", "--op", "send", "--key", "x"});
  EXPECT_EQ(r.out, "allow: no policy configured\n");
  EXPECT_EQ(admin(json{{"request", "config"}})["config"]["bus"], "user");
}

}  // namespace
}  // namespace qbus::testing
