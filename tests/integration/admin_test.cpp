// The admin socket on a live daemon: the shape of every answer with real queues, clients
// and regions, the operator's actions, malformed requests, access by peer credentials, and
// qbusctl's tables and --json.
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <qbus/client.hpp>

#include <csignal>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <thread>

#include "daemon.hpp"
#include "eventually.hpp"
#include "process.hpp"

namespace qbus::testing {
namespace {

using json = nlohmann::json;
using std::chrono::seconds;

// A raw admin connection: lines out, lines in.
class AdminConn {
 public:
  explicit AdminConn(const std::string& path) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::strncpy(sa.sun_path, path.c_str(), sizeof(sa.sun_path) - 1);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
      throw std::runtime_error("cannot connect to " + path + ": " + std::strerror(errno));
    }
  }
  ~AdminConn() { ::close(fd_); }
  void write_raw(const std::string& text) {
    (void)!::send(fd_, text.data(), text.size(), MSG_NOSIGNAL);
  }
  // The next line, or nullopt once the daemon closed the connection.
  std::optional<std::string> line() {
    while (true) {
      if (auto nl = buf_.find('\n'); nl != std::string::npos) {
        std::string l = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        return l;
      }
      char b[65536];
      const ssize_t n = ::recv(fd_, b, sizeof(b), 0);
      if (n <= 0) return std::nullopt;
      buf_.append(b, static_cast<std::size_t>(n));
    }
  }
  json ask(const json& request) {
    write_raw(request.dump() + "\n");
    auto l = line();
    if (!l) throw std::runtime_error("admin socket closed");
    return json::parse(*l);
  }

 private:
  int fd_ = -1;
  std::string buf_;
};

class AdminTest : public ::testing::Test {
 protected:
  explicit AdminTest(DaemonOptions o = {}) : daemon_(std::move(o)) {}
  std::string admin_path() const { return daemon_.dir().file("admin.sock"); }
  Client connect(const std::string& name = "admin-test") {
    return Client(ClientOptions{daemon_.address(), name, seconds(30)});
  }
  Result ctl(std::vector<std::string> args) {
    args.insert(args.begin(), {qbusctl_path(), "--address", daemon_.address()});
    return run(args);
  }
  Daemon daemon_;
};

void expect_keys(const json& object, const std::vector<std::string>& keys) {
  for (const auto& k : keys)
    EXPECT_TRUE(object.contains(k)) << "missing '" << k << "' in " << object.dump();
}

TEST_F(AdminTest, QueuesAnswerHasTheDocumentedShape) {
  auto c = connect();
  c.declare("jobs", QueueOptions{10, 4096, Overflow::reject});
  c.send("jobs", "one");
  c.send("jobs", "two");
  c.sync();
  AdminConn admin(admin_path());
  const json a = admin.ask({{"request", "queues"}});
  ASSERT_TRUE(a["ok"].get<bool>()) << a.dump();
  ASSERT_EQ(a["queues"].size(), 1u);
  const json& q = a["queues"][0];
  expect_keys(
      q, {"key", "depth", "bytes", "max_messages", "max_bytes", "overflow", "waiting_receivers",
          "enqueued_total", "dequeued_total", "dropped_total", "rejected_total", "oldest_age_ms"});
  EXPECT_EQ(q["key"], "jobs");
  EXPECT_EQ(q["depth"], 2);
  EXPECT_EQ(q["bytes"], 6);
  EXPECT_EQ(q["max_messages"], 10);
  EXPECT_EQ(q["max_bytes"], 4096);
  EXPECT_EQ(q["overflow"], "reject");
  EXPECT_EQ(q["enqueued_total"], 2);
  EXPECT_GE(q["oldest_age_ms"].get<std::int64_t>(), 0);
  const json one = admin.ask({{"request", "queue"}, {"key", "jobs"}});
  ASSERT_TRUE(one["ok"].get<bool>());
  EXPECT_EQ(one["queue"]["depth"], 2);
}

// Queues with an owner: one the configuration declares (owner null) beside those clients
// create.
class QueueOwnerTest : public AdminTest {
 protected:
  QueueOwnerTest()
      : AdminTest(DaemonOptions{.config_json = R"({"queues": [{"key": "configured"}]})"}) {}
};

TEST_F(QueueOwnerTest, QueuesAnswerNamesEachQueuesOwner) {
  auto c = connect();
  c.send_confirmed("made.by.use", "1");
  AdminConn admin(admin_path());
  const json a = admin.ask({{"request", "queues"}});
  ASSERT_TRUE(a["ok"].get<bool>()) << a.dump();
  std::map<std::string, json> owners;
  for (const auto& q : a["queues"])
    owners[q["key"].get<std::string>()] = q["owner"];
  ASSERT_EQ(owners.size(), 2u) << a.dump();
  EXPECT_EQ(owners["made.by.use"], ::getuid());
  EXPECT_TRUE(owners["configured"].is_null()) << a.dump();
  const json one = admin.ask({{"request", "queue"}, {"key", "made.by.use"}});
  EXPECT_EQ(one["queue"]["owner"], ::getuid()) << one.dump();

  auto table = ctl({"queues"});
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_NE(table.out.find(" OWNER "), std::string::npos) << table.out;
  EXPECT_NE(table.out.find(" config "), std::string::npos) << table.out;
}

// The attack of issue 12: another uid re-declares root's live queue as one message with
// drop_oldest, so root's confirmed sends are all answered OK while all but one are dropped.
TEST_F(QueueOwnerTest, AnotherUidCannotRedeclareALiveQueueToDropItsOwnersMessages) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run a client as another uid";
  ::chmod(daemon_.dir().path().c_str(), 0755);  // let uid 65534 reach the socket
  auto owner = connect("orders-owner");
  owner.send_confirmed("orders", "first");
  const pid_t other = spawn([&] {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) return 10;
    auto c = connect("squatter");
    try {
      c.declare("orders", QueueOptions{1, 0, Overflow::drop_oldest});
      return 1;
    } catch (const Error& e) {
      if (e.code() != Errc::permission_denied) return 2;
      const std::string text = e.what();
      if (text.find("'orders'") == std::string::npos) return 3;
      if (text.find("owned by uid 0") == std::string::npos) return 4;
    }
    // The queue's current options are still open to it, as before.
    try {
      c.declare("orders", QueueOptions{});
    } catch (const Error&) {
      return 5;
    }
    return 0;
  });
  EXPECT_EQ(wait_exit(other), 0);

  for (int i = 0; i < 100; ++i)
    owner.send_confirmed("orders", "m" + std::to_string(i));
  AdminConn admin(admin_path());
  const json q = admin.ask({{"request", "queue"}, {"key", "orders"}});
  ASSERT_TRUE(q["ok"].get<bool>()) << q.dump();
  EXPECT_EQ(q["queue"]["depth"], 101) << q.dump();
  EXPECT_EQ(q["queue"]["dropped_total"], 0) << q.dump();
  EXPECT_EQ(q["queue"]["owner"], 0) << q.dump();
  EXPECT_NE(q["queue"]["overflow"], "drop_oldest") << q.dump();
  // Every message is there, in order.
  auto m = owner.receive("orders", seconds(30));
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->text(), "first");
  for (int i = 0; i < 100; ++i) {
    m = owner.receive("orders", seconds(30));
    ASSERT_TRUE(m.has_value()) << i;
    ASSERT_EQ(m->text(), "m" + std::to_string(i));
  }
}

TEST_F(AdminTest, QueueAndClientsShowWhatIsHeldUnacknowledged) {
  auto producer = connect("producer");
  for (const char* m : {"1", "2", "3"})
    producer.send("jobs", m);
  producer.sync();
  auto consumer = connect("consumer");
  auto sub = consumer.subscribe("jobs", SubscribeOptions{2, true});
  auto first = sub.next(seconds(30));
  ASSERT_TRUE(first);
  auto second = sub.next(seconds(30));
  ASSERT_TRUE(second);
  AdminConn admin(admin_path());
  const json q = admin.ask({{"request", "queue"}, {"key", "jobs"}})["queue"];
  EXPECT_EQ(q["depth"], 1);
  EXPECT_EQ(q["in_flight"], 2);
  EXPECT_EQ(q["waiting_receivers"], 0);
  ASSERT_EQ(q["subscribers"].size(), 1u) << q.dump();
  EXPECT_EQ(q["subscribers"][0]["client"], consumer.session().client_id);
  EXPECT_EQ(q["subscribers"][0]["prefetch"], 2);
  EXPECT_EQ(q["subscribers"][0]["unacked"], 2);
  const json clients = admin.ask({{"request", "clients"}})["clients"];
  bool seen = false;
  for (const auto& c : clients) {
    if (c["id"] != consumer.session().client_id) continue;
    seen = true;
    EXPECT_EQ(c["unacked"], 2);
  }
  EXPECT_TRUE(seen) << clients.dump();
  consumer.ack_up_to(second->delivery_tag(), true);
  auto third = sub.next(seconds(30));
  ASSERT_TRUE(third);
  EXPECT_EQ(third->text(), "3");
  const json after = admin.ask({{"request", "queue"}, {"key", "jobs"}})["queue"];
  EXPECT_EQ(after["acked_total"], 2);
  EXPECT_EQ(after["in_flight"], 1);
}

TEST_F(AdminTest, PolicyCheckWithoutAPolicyAllowsEverything) {
  AdminConn admin(admin_path());
  const json a = admin.ask(
      {{"request", "policy-check"}, {"uid", 65534}, {"op", "receive"}, {"key", "secret.jobs"}});
  EXPECT_EQ(a, (json{{"ok", true}, {"allowed", true}, {"policy", false}, {"rule", nullptr}}));
}

class PolicyCheckTest : public AdminTest {
 protected:
  PolicyCheckTest()
      : AdminTest(DaemonOptions{.config_json = R"({"policy": {"default": "deny", "rules": [
          {"deny": "*", "everyone": true, "prefixes": ["secret"]},
          {"allow": "*", "uids": [0], "prefixes": ["secret."]},
          {"allow": ["receive"], "gids": [4242, 0], "keys": ["secret.jobs"]}]}})"}) {}
  json check(std::uint32_t uid, std::vector<std::uint32_t> gids, const std::string& op,
             const std::string& key) {
    AdminConn admin(admin_path());
    return admin.ask(
        {{"request", "policy-check"}, {"uid", uid}, {"gids", gids}, {"op", op}, {"key", key}});
  }
};

// The rules of PolicyCheckTest's config as the config answer shows them ("*" is every
// operation, manage included).
const json kRules = json::parse(R"([
  {"deny": ["send", "receive", "declare", "request", "manage"], "everyone": true,
   "prefixes": ["secret"]},
  {"allow": ["send", "receive", "declare", "request", "manage"], "uids": [0],
   "prefixes": ["secret."]},
  {"allow": ["receive"], "gids": [4242, 0], "keys": ["secret.jobs"]}])");

json verdict(bool allowed, json rule) {
  json v{{"ok", true}, {"allowed", allowed}, {"policy", true}, {"rule", rule}};
  if (rule.is_number()) v["rule_text"] = kRules[rule.get<std::size_t>()];
  // What decided, in the audit log's words: the rule where the config file has it.
  v["by"] = rule.is_number() ? "policy.rules[" + rule.dump() + "]" : "the default";
  return v;
}

TEST_F(PolicyCheckTest, PolicyCheckNamesTheRuleOrTheDefaultThatDecides) {
  EXPECT_EQ(check(0, {}, "send", "secret.jobs"), verdict(true, 1));
  EXPECT_EQ(check(65534, {65534}, "receive", "secret.jobs"), verdict(false, 0));
  // A supplementary group (any gid after the first) is a principal too.
  EXPECT_EQ(check(65534, {65534, 7, 4242}, "receive", "secret.jobs"), verdict(true, 2));
  EXPECT_EQ(check(65534, {65534, 4242}, "send", "secret.jobs"), verdict(false, 0));
  EXPECT_EQ(check(65534, {}, "declare", "public.x"), verdict(false, nullptr));
}

TEST_F(PolicyCheckTest, PolicyCheckNamesABadArgument) {
  const json op = check(0, {}, "write", "secret.jobs");
  EXPECT_EQ(op["error"]["code"], "invalid_argument") << op.dump();
  EXPECT_NE(op["error"]["message"].get<std::string>().find("unknown op 'write'"), std::string::npos)
      << op.dump();
  EXPECT_EQ(check(0, {}, "send", "bad key!")["error"]["code"], "invalid_key");
  AdminConn admin(admin_path());
  const json uid = admin.ask({{"request", "policy-check"}, {"op", "send"}, {"key", "a"}});
  EXPECT_EQ(uid["error"]["code"], "malformed_request") << uid.dump();
  const json gids = admin.ask(
      {{"request", "policy-check"}, {"uid", 0}, {"gids", {-1}}, {"op", "send"}, {"key", "a"}});
  EXPECT_EQ(gids["error"]["code"], "malformed_request") << gids.dump();
  // send_direct names a receiver instead of a key: its uid, and its groups as ids.
  const json no_to = admin.ask({{"request", "policy-check"}, {"uid", 0}, {"op", "send_direct"}});
  EXPECT_EQ(no_to["error"]["code"], "malformed_request") << no_to.dump();
  EXPECT_NE(no_to["error"]["message"].get<std::string>().find("\"to_uid\""), std::string::npos)
      << no_to.dump();
  const json to_gids = admin.ask({{"request", "policy-check"},
                                  {"uid", 0},
                                  {"op", "send_direct"},
                                  {"to_uid", 1},
                                  {"to_gids", "4242"}});
  EXPECT_EQ(to_gids["error"]["code"], "malformed_request") << to_gids.dump();
}

TEST_F(PolicyCheckTest, QbusctlPolicyCheckPrintsTheVerdictAndExitsByIt) {
  const auto root = ctl({"policy", "check", "--uid", "0", "--op", "send", "--key", "secret.jobs"});
  EXPECT_EQ(root.exit_code, 0) << root.err;
  EXPECT_EQ(root.out, "allow: policy.rules[1] " + kRules[1].dump() + "\n");
  const auto member = ctl({"policy", "check", "--uid", "65534", "--gid", "65534", "--gid", "4242",
                           "--op", "receive", "--key", "secret.jobs"});
  EXPECT_EQ(member.exit_code, 0) << member.err;
  EXPECT_EQ(member.out, "allow: policy.rules[2] " + kRules[2].dump() + "\n");
  const auto nobody =
      ctl({"policy", "check", "--uid", "65534", "--op", "receive", "--key", "secret.jobs"});
  EXPECT_EQ(nobody.exit_code, 4) << nobody.err;
  EXPECT_EQ(nobody.out, "deny: policy.rules[0] " + kRules[0].dump() + "\n");
  const auto by_default =
      ctl({"policy", "check", "--uid", "65534", "--op", "declare", "--key", "public.x"});
  EXPECT_EQ(by_default.exit_code, 4) << by_default.err;
  EXPECT_EQ(by_default.out, "deny: the default\n");

  // Group 0 is named root on every Linux system, and rule 2 names gid 0.
  const auto by_name = ctl({"policy", "check", "--uid", "65534", "--group", "root", "--op",
                            "receive", "--key", "secret.jobs"});
  EXPECT_EQ(by_name.exit_code, 0) << by_name.err;
  EXPECT_EQ(by_name.out, "allow: policy.rules[2] " + kRules[2].dump() + "\n");
  const auto no_group = ctl({"policy", "check", "--uid", "0", "--group", "no-such-group-qbus",
                             "--op", "send", "--key", "a"});
  EXPECT_EQ(no_group.exit_code, 2);
  EXPECT_NE(no_group.err.find("unknown group 'no-such-group-qbus'"), std::string::npos)
      << no_group.err;
  const auto bad_op = ctl({"policy", "check", "--uid", "0", "--op", "write", "--key", "a"});
  EXPECT_EQ(bad_op.exit_code, 2);
  EXPECT_NE(bad_op.err.find("--op"), std::string::npos) << bad_op.err;
  EXPECT_NE(bad_op.err.find("write"), std::string::npos) << bad_op.err;
  const auto no_uid = ctl({"policy", "check", "--op", "send", "--key", "a"});
  EXPECT_EQ(no_uid.exit_code, 2);
  EXPECT_NE(no_uid.err.find("--uid"), std::string::npos) << no_uid.err;
}

TEST_F(AdminTest, QbusctlPolicyCheckWithoutAPolicyAllows) {
  const auto r = ctl({"policy", "check", "--uid", "65534", "--op", "receive", "--key", "a"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "allow: no policy configured\n");
}

TEST_F(AdminTest, ClientsAnswerNamesEachConnectionByKernelIdentity) {
  auto c = connect("worker");
  c.send("q", "x");
  c.sync();
  AdminConn admin(admin_path());
  const json a = admin.ask({{"request", "clients"}});
  ASSERT_TRUE(a["ok"].get<bool>());
  ASSERT_EQ(a["clients"].size(), 1u);
  const json& cl = a["clients"][0];
  expect_keys(cl, {"id", "pid", "uid", "gid", "comm", "transport", "connected_at", "sent_total",
                   "received_total", "inbox_depth"});
  EXPECT_EQ(cl["id"], c.session().client_id);
  EXPECT_EQ(cl["pid"], ::getpid());
  EXPECT_EQ(cl["uid"], ::getuid());
  EXPECT_EQ(cl["transport"], "unix");
  EXPECT_EQ(cl["sent_total"], 1);
  EXPECT_FALSE(cl["comm"].get<std::string>().empty());
  EXPECT_TRUE(cl["connected_at"].get<std::string>().ends_with("Z"));
}

TEST_F(AdminTest, RegionsAndStatsAnswersHaveTheirShapes) {
  auto c = connect();
  auto r = c.allocate_region(8192);
  auto named = c.create_shared_region("shared-area", 4096);
  AdminConn admin(admin_path());
  const json a = admin.ask({{"request", "regions"}});
  ASSERT_TRUE(a["ok"].get<bool>());
  ASSERT_EQ(a["regions"].size(), 2u);
  bool saw_named = false;
  for (const auto& reg : a["regions"]) {
    expect_keys(reg, {"id", "size", "owner_pid", "owner_uid", "refs", "key"});
    EXPECT_EQ(reg["owner_pid"], ::getpid());
    if (reg["key"].is_string()) {
      saw_named = true;
      EXPECT_EQ(reg["key"], "shared-area");
      EXPECT_EQ(reg["size"], 4096);
    } else {
      EXPECT_EQ(reg["size"], 8192);
      EXPECT_EQ(reg["refs"], 1);
    }
  }
  EXPECT_TRUE(saw_named);
  const json s = admin.ask({{"request", "stats"}});
  ASSERT_TRUE(s["ok"].get<bool>());
  expect_keys(s["stats"],
              {"uptime_s", "connections", "queues", "messages_in_total", "messages_out_total",
               "bytes_in_total", "bytes_out_total", "messages_in_per_s", "messages_out_per_s",
               "bytes_in_per_s", "bytes_out_per_s", "rss_bytes", "regions", "region_bytes"});
  EXPECT_EQ(s["stats"]["connections"], 1);
  EXPECT_EQ(s["stats"]["regions"], 2);
  EXPECT_GT(s["stats"]["rss_bytes"].get<long>(), 0);
}

TEST_F(AdminTest, PurgeAndDeleteDropMessagesAndTellWaiters) {
  auto c = connect();
  for (int i = 0; i < 5; ++i)
    c.send("doomed", "m");
  c.sync();
  auto p = ctl({"purge", "doomed"});
  EXPECT_EQ(p.exit_code, 0) << p.err;
  EXPECT_EQ(p.out, "purged 'doomed': 5 messages dropped\n");
  EXPECT_FALSE(c.try_receive("doomed"));
  // A receiver waiting on a deleted queue is told so.
  Gate waiting;
  const pid_t receiver = spawn([&] {
    Client r(ClientOptions{daemon_.address(), "waiter", seconds(30)});
    r.declare("gone", QueueOptions{});
    waiting.open();
    try {
      r.receive("gone", seconds(60));
      return 1;
    } catch (const Error& e) {
      return e.code() == Errc::queue_deleted ? 0 : 2;
    }
  });
  waiting.wait();
  // The receive is in flight right after the declare; the admin answer comes after the
  // broker handled the delete, which fails whatever waits then or later.
  AdminConn admin(admin_path());
  json d;
  for (int tries = 0; tries < 3000; ++tries) {
    const json q = admin.ask({{"request", "queue"}, {"key", "gone"}});
    if (q["ok"].get<bool>() && q["queue"]["waiting_receivers"] == 1) break;
  }
  d = admin.ask({{"request", "delete"}, {"key", "gone"}});
  EXPECT_TRUE(d["ok"].get<bool>()) << d.dump();
  EXPECT_EQ(wait_exit(receiver), 0);
  auto missing = ctl({"delete", "never-existed"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find("no_such_queue"), std::string::npos) << missing.err;
}

TEST_F(AdminTest, DeleteByPatternRemovesExactlyTheMatchingQueues) {
  auto c = connect();
  for (const char* key :
       {"jobs.a", "jobs.a", "jobs.b", "jobs", "jobsx", "other.jobs.a", "log.1", "log.2", "log.x"})
    c.send(key, "m");
  c.sync();
  const auto keys = [&] {
    std::set<std::string> out;
    const json a = AdminConn(admin_path()).ask({{"request", "queues"}});
    for (const auto& q : a["queues"])
      out.insert(q["key"].get<std::string>());
    return out;
  };
  auto r = ctl({"delete", "--pattern", "jobs.*"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "deleted 2 queues matching 'jobs.*': 3 messages dropped\n");
  EXPECT_EQ(keys(),
            (std::set<std::string>{"jobs", "jobsx", "other.jobs.a", "log.1", "log.2", "log.x"}));
  auto j = ctl({"--json", "delete", "--pattern", "log.[0-9]"});
  ASSERT_EQ(j.exit_code, 0) << j.err;
  const json a = json::parse(j.out);
  EXPECT_EQ(a["deleted"], 2);
  EXPECT_EQ(a["dropped"], 2);
  EXPECT_EQ(a["remaining"], 0);
  EXPECT_EQ(a["keys"].get<std::set<std::string>>(), (std::set<std::string>{"log.1", "log.2"}));
  EXPECT_EQ(keys(), (std::set<std::string>{"jobs", "jobsx", "other.jobs.a", "log.x"}));
  // `?` is one byte, `[!...]` a negated set, a backslash quotes.
  auto q = ctl({"delete", "--pattern", "job?[!.]"});
  ASSERT_EQ(q.exit_code, 0) << q.err;
  EXPECT_EQ(q.out, "deleted 1 queue matching 'job?[!.]': 1 message dropped\n");
  EXPECT_EQ(keys(), (std::set<std::string>{"jobs", "other.jobs.a", "log.x"}));
  // No match is not an error, but says so.
  auto none = ctl({"delete", "--pattern", "nothing*"});
  EXPECT_EQ(none.exit_code, 0) << none.err;
  EXPECT_EQ(none.out, "no queue matches 'nothing*': nothing deleted\n");
  EXPECT_EQ(keys().size(), 3u);
  // Bad patterns and bad usage.
  auto bad = ctl({"delete", "--pattern", "log.[0-9"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("invalid_argument"), std::string::npos) << bad.err;
  EXPECT_NE(bad.err.find("no closing ']'"), std::string::npos) << bad.err;
  EXPECT_EQ(ctl({"delete"}).exit_code, 2);
  EXPECT_EQ(ctl({"delete", "jobs", "--pattern", "j*"}).exit_code, 2);
  AdminConn admin(admin_path());
  const json both = admin.ask({{"request", "delete"}, {"key", "jobs"}, {"pattern", "j*"}});
  EXPECT_EQ(both["error"]["code"], "malformed_request") << both.dump();
  const json trailing = admin.ask({{"request", "delete"}, {"pattern", "jobs\\"}});
  EXPECT_EQ(trailing["error"]["code"], "invalid_argument") << trailing.dump();
  EXPECT_EQ(keys().size(), 3u);
  // `delete KEY` is as it was (keys cannot hold *, ? or [, so it never means a pattern).
  auto one = ctl({"delete", "jobs"});
  ASSERT_EQ(one.exit_code, 0) << one.err;
  EXPECT_EQ(one.out, "deleted 'jobs': 1 message dropped\n");
  EXPECT_EQ(keys(), (std::set<std::string>{"other.jobs.a", "log.x"}));
}

TEST_F(AdminTest, DeleteByPatternIsBoundedPerRequestAndQbusctlFinishesTheJob) {
  auto c = connect();
  constexpr int kQueues = 1100;  // over the 1000 queues one request may delete
  for (int i = 0; i < kQueues; ++i)
    c.send("bulk." + std::to_string(i), "m");
  c.send("keep", "m");
  c.sync();
  AdminConn admin(admin_path());
  const json first = admin.ask({{"request", "delete"}, {"pattern", "bulk.*"}});
  ASSERT_TRUE(first["ok"].get<bool>()) << first.dump();
  EXPECT_EQ(first["deleted"], 1000);
  EXPECT_EQ(first["keys"].size(), 1000u);
  EXPECT_EQ(first["remaining"], kQueues - 1000);
  c.send("bulk.late", "m");  // one more appears between the requests
  c.sync();
  auto r = ctl({"delete", "--pattern", "bulk.*"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "deleted 101 queues matching 'bulk.*': 101 messages dropped\n");
  const json left = admin.ask({{"request", "queues"}});
  ASSERT_EQ(left["queues"].size(), 1u) << left.dump();
  EXPECT_EQ(left["queues"][0]["key"], "keep");
}

TEST_F(AdminTest, RegionRemoveForgetsTheKeyWhileHoldersKeepTheirMapping) {
  auto owner = connect("owner");
  auto area = owner.create_shared_region("frames", 4096, 0666);
  std::memcpy(area.data().data(), "before", 6);
  auto r = ctl({"region-remove", "frames"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out,
            "removed named region 'frames': still held by 1 handle and 0 queued messages, "
            "freed when they are released\n");
  EXPECT_TRUE(daemon_.wait_for_log("admin: removed named region 'frames'")) << daemon_.log();
  // Nobody can attach it any more, whoever asks.
  auto other = connect("other");
  try {
    other.attach_shared_region("frames", false);
    ADD_FAILURE() << "attached a region the operator removed";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::no_such_region) << e.what();
  }
  // The holder's mapping is untouched and the key is free for a new region.
  std::memcpy(area.data().data(), "after", 5);
  EXPECT_EQ(std::memcmp(area.bytes().data(), "after", 5), 0);
  auto fresh = owner.create_shared_region("frames", 8192);
  EXPECT_EQ(fresh.size(), 8192u);
  // The old region goes with its last holder.
  AdminConn admin(admin_path());
  const auto region_count = [&] { return admin.ask({{"request", "regions"}})["regions"].size(); };
  EXPECT_EQ(region_count(), 2u);
  area = SharedRegion();
  owner.sync();  // the release goes out with the next request
  EXPECT_TRUE(eventually([&] { return region_count() == 1u; }));
  // A region nobody holds is freed at once.
  fresh = SharedRegion();
  owner.sync();
  const json j = admin.ask({{"request", "region-remove"}, {"key", "frames"}});
  ASSERT_TRUE(j["ok"].get<bool>()) << j.dump();
  EXPECT_EQ(j["freed"], true);
  EXPECT_EQ(region_count(), 0u);
  // Unknown and invalid keys.
  auto missing = ctl({"region-remove", "frames"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find("no_such_region"), std::string::npos) << missing.err;
  EXPECT_EQ(admin.ask({{"request", "region-remove"}, {"key", "bad key!"}})["error"]["code"],
            "invalid_key");
  EXPECT_EQ(admin.ask({{"request", "region-remove"}})["error"]["code"], "malformed_request");
}

TEST_F(AdminTest, DisconnectTellsTheClientWhyAndReleasesWhatItHeld) {
  auto victim = connect("victim");
  victim.send("kept", "queued before the disconnect");
  auto region = victim.allocate_region(4096);
  auto named = victim.create_shared_region("victim-area", 4096);
  victim.sync();
  const std::uint64_t id = victim.session().client_id;
  AdminConn admin(admin_path());
  EXPECT_EQ(admin.ask({{"request", "stats"}})["stats"]["regions"], 2);
  auto r = ctl({"disconnect", std::to_string(id)});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "disconnected client " + std::to_string(id) + "\n");
  EXPECT_TRUE(daemon_.wait_for_log("admin: disconnected client " + std::to_string(id)))
      << daemon_.log();
  // The client learns why on its next call, and stays unusable.
  try {
    victim.receive("anything", seconds(30));
    ADD_FAILURE() << "a disconnected client could still receive";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::disconnected_by_operator) << e.what();
    EXPECT_NE(std::string(e.what()).find("operator"), std::string::npos) << e.what();
  }
  EXPECT_THROW(victim.sync(), Error);
  // What it held is released: its anonymous region and handle; the named region stays
  // declared, as after any disconnect, and its queued message stays queued.
  const auto clients = [&] { return admin.ask({{"request", "clients"}})["clients"]; };
  EXPECT_TRUE(eventually([&] { return clients().empty(); })) << clients().dump();
  EXPECT_TRUE(eventually([&] {
    const json regions = admin.ask({{"request", "regions"}})["regions"];
    return regions.size() == 1u && regions[0]["key"] == "victim-area" && regions[0]["handles"] == 0;
  })) << admin.ask({{"request", "regions"}}).dump();
  auto after = connect("after");
  const auto m = after.receive("kept", seconds(30));
  ASSERT_TRUE(m);
  EXPECT_EQ(m->text(), "queued before the disconnect");
  // Unknown and malformed ids.
  auto missing = ctl({"disconnect", std::to_string(id)});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find("no_such_client"), std::string::npos) << missing.err;
  EXPECT_EQ(ctl({"disconnect", "not-a-number"}).exit_code, 2);
  EXPECT_EQ(admin.ask({{"request", "disconnect"}, {"id", "7"}})["error"]["code"],
            "malformed_request");
  EXPECT_EQ(admin.ask({{"request", "disconnect"}, {"id", -1}})["error"]["code"],
            "malformed_request");
}

TEST_F(AdminTest, MalformedRequestsGetAnErrorAndTheConnectionStaysUsable) {
  AdminConn admin(admin_path());
  const auto code = [&](const std::string& text) {
    admin.write_raw(text + "\n");
    auto l = admin.line();
    if (!l) return std::string("closed");
    const json a = json::parse(*l);
    EXPECT_FALSE(a["ok"].get<bool>());
    return a["error"]["code"].get<std::string>();
  };
  EXPECT_EQ(code("this is not json"), "malformed_request");
  EXPECT_EQ(code("[1, 2, 3]"), "malformed_request");
  EXPECT_EQ(code(R"({"request": 7})"), "malformed_request");
  EXPECT_EQ(code(R"({"request": "make-coffee"})"), "unknown_request");
  EXPECT_EQ(code(R"({"request": "queue"})"), "malformed_request");
  EXPECT_EQ(code(R"({"request": "queue", "key": "bad key!"})"), "invalid_key");
  EXPECT_EQ(code(R"({"request": "purge", "key": "nothing-here"})"), "no_such_queue");
  EXPECT_EQ(code(R"({"request": "set-log-level", "level": "loud"})"), "invalid_argument");
  // A number too large for a double is JSON the parser refuses, not an internal fault.
  EXPECT_EQ(code(R"({"request": "stats", "n": 1E400})"), "malformed_request");
  // Still usable.
  EXPECT_TRUE(admin.ask({{"request", "stats"}})["ok"].get<bool>());
  // An endless line is cut off with an error, and only that connection closes.
  admin.write_raw(std::string(70'000, 'x'));
  auto l = admin.line();
  ASSERT_TRUE(l);
  EXPECT_EQ(json::parse(*l)["error"]["code"], "malformed_request");
  EXPECT_FALSE(admin.line());
  AdminConn again(admin_path());
  EXPECT_TRUE(again.ask({{"request", "queues"}})["ok"].get<bool>());
}

TEST_F(AdminTest, SetLogLevelAndConfigAnswers) {
  AdminConn admin(admin_path());
  const json a = admin.ask({{"request", "set-log-level"}, {"level", "trace"}});
  ASSERT_TRUE(a["ok"].get<bool>()) << a.dump();
  EXPECT_EQ(a["previous"], "debug");
  EXPECT_TRUE(daemon_.wait_for_log("log level set to trace"));
  const json c = admin.ask({{"request", "config"}});
  ASSERT_TRUE(c["ok"].get<bool>());
  EXPECT_EQ(c["config"]["socket"]["path"], daemon_.socket_path());
  EXPECT_EQ(c["config"]["admin"]["path"], admin_path());
  EXPECT_TRUE(c["config"]["limits"].contains("max_payload_bytes"));
}

TEST_F(AdminTest, QbusctlPrintsAlignedTablesAndJson) {
  auto c = connect("table-client");
  c.send("alpha", "1");
  c.send("beta-queue", "22");
  c.sync();
  auto q = ctl({"queues"});
  ASSERT_EQ(q.exit_code, 0) << q.err;
  EXPECT_TRUE(q.out.starts_with("KEY ")) << q.out;
  EXPECT_NE(q.out.find("alpha"), std::string::npos);
  EXPECT_NE(q.out.find("beta-queue"), std::string::npos);
  // Aligned: every line puts the DEPTH column's end at the same place.
  std::vector<std::string> lines;
  for (std::size_t at = 0, nl; (nl = q.out.find('\n', at)) != std::string::npos; at = nl + 1)
    lines.push_back(q.out.substr(at, nl - at));
  ASSERT_EQ(lines.size(), 3u);
  const auto depth_end = lines[0].find("DEPTH") + 5;
  for (const auto& l : lines)
    EXPECT_EQ(l[depth_end - 1] == ' ', false) << l;
  auto cl = ctl({"clients"});
  ASSERT_EQ(cl.exit_code, 0) << cl.err;
  EXPECT_NE(cl.out.find("table-client"), std::string::npos) << cl.out;
  auto j = ctl({"--json", "queues"});
  ASSERT_EQ(j.exit_code, 0);
  EXPECT_EQ(json::parse(j.out)["queues"].size(), 2u);
  auto st = ctl({"stats"});
  EXPECT_EQ(st.exit_code, 0);
  EXPECT_NE(st.out.find("connections:"), std::string::npos);
  EXPECT_NE(st.out.find("regions:"), std::string::npos) << st.out;
}

TEST_F(AdminTest, HostileNamesAndBytesNeitherCrashTheDaemonNorReachTheTerminal) {
  // A client name with invalid UTF-8 and terminal escapes (the name is the client's say).
  Client hostile(ClientOptions{daemon_.address(), "\xff\x1b[2J\x1b]0;x\x07", seconds(30)});
  AdminConn admin(admin_path());
  const json a = admin.ask({{"request", "stats"}});  // warm up: the daemon is fine
  ASSERT_TRUE(a["ok"].get<bool>());
  admin.write_raw(R"({"request": "clients"})"
                  "\n");
  auto l = admin.line();
  ASSERT_TRUE(l) << "the daemon closed or died answering 'clients'";
  EXPECT_TRUE(json::parse(*l)["ok"].get<bool>());
  // Request bytes that are not UTF-8, and a multi-byte character cut by truncation.
  admin.write_raw("\xff\xfe\n");
  l = admin.line();
  ASSERT_TRUE(l);
  EXPECT_EQ(json::parse(*l)["error"]["code"], "malformed_request");
  admin.write_raw(R"({"request": ")" + std::string(63, 'a') + "\xc3\xa9\"}\n");
  l = admin.line();
  ASSERT_TRUE(l);
  EXPECT_EQ(json::parse(*l)["error"]["code"], "unknown_request");
  auto table = ctl({"clients"});
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_EQ(table.out.find('\x1b'), std::string::npos) << "an escape reached the terminal";
  EXPECT_TRUE(connect().try_receive("still-alive") == std::nullopt);
}

TEST_F(AdminTest, JsonFlagWorksAfterTheCommandToo) {
  auto r = ctl({"queues", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(json::parse(r.out)["ok"].get<bool>());
}

TEST_F(AdminTest, MissingAdminSocketIsAClearError) {
  auto r =
      run({qbusctl_path(), "--admin-address", "unix:" + daemon_.dir().file("none.sock"), "queues"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("none.sock"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("is qbusd running?"), std::string::npos) << r.err;
}

class AdminAccessTest : public AdminTest {
 protected:
  // The file mode lets everyone connect: only the credential check stands in the way.
  AdminAccessTest() : AdminTest(DaemonOptions{.config_json = R"({"admin": {"mode": "0666"}})"}) {}
};

TEST_F(AdminAccessTest, OtherUidIsRefusedByCredentialsEvenWhenTheFileModeAllows) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run a client as another uid";
  ::chmod(daemon_.dir().path().c_str(), 0755);
  const pid_t other = spawn([&] {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) return 10;
    AdminConn admin(admin_path());
    const json a = admin.ask({{"request", "queues"}});
    return !a["ok"].get<bool>() && a["error"]["code"] == "permission_denied" ? 0 : 1;
  });
  EXPECT_EQ(wait_exit(other), 0);
  EXPECT_TRUE(daemon_.wait_for_log("admin socket: refused pid")) << daemon_.log();
  // qbusctl as that user says access was denied.
  const pid_t cli = spawn([&] {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) return 10;
    auto r = run({qbusctl_path(), "--admin-address", "unix:" + admin_path(), "queues"});
    return r.exit_code == 1 && r.err.find("access denied") != std::string::npos ? 0 : 1;
  });
  EXPECT_EQ(wait_exit(cli), 0);
  // The operator's actions are refused the same way, and change nothing.
  auto c = connect("bystander");
  c.send("safe.queue", "m");
  auto area = c.create_shared_region("safe-area", 4096);
  c.sync();
  const std::string id = std::to_string(c.session().client_id);
  for (const std::vector<std::string>& args : {std::vector<std::string>{"disconnect", id},
                                               {"region-remove", "safe-area"},
                                               {"delete", "--pattern", "safe.*"}}) {
    const pid_t actor = spawn([&] {
      if (::setgid(65534) != 0 || ::setuid(65534) != 0) return 10;
      std::vector<std::string> argv{qbusctl_path(), "--admin-address", "unix:" + admin_path()};
      argv.insert(argv.end(), args.begin(), args.end());
      auto r = run(argv);
      return r.exit_code == 1 && r.err.find("access denied") != std::string::npos ? 0 : 1;
    });
    EXPECT_EQ(wait_exit(actor), 0) << args[0];
  }
  Client checker(ClientOptions{daemon_.address(), "checker", seconds(30)});
  EXPECT_NO_THROW(checker.attach_shared_region("safe-area", false));
  EXPECT_TRUE(c.receive("safe.queue", seconds(30)));  // still connected, queue intact
}

// A file from before the region pool went: it must still start qbusd (a config in /etc
// survives upgrades), and qbusd must say the key does nothing, at startup and at reloads.
class ObsoleteRegionPoolKeyTest : public AdminTest {
 protected:
  ObsoleteRegionPoolKeyTest()
      : AdminTest(DaemonOptions{.config_json = R"({"limits": {"region_pool_bytes": 8388608}})"}) {}
  int count_in_log(const std::string& needle) const {
    const std::string log = daemon_.log();
    int n = 0;
    for (auto at = log.find(needle); at != std::string::npos; at = log.find(needle, at + 1))
      ++n;
    return n;
  }
  static constexpr char kWarning[] =
      "limits.region_pool_bytes is obsolete and ignored: qbusd no longer allocates region "
      "memory";
};

TEST_F(ObsoleteRegionPoolKeyTest, LoadsWithOneWarningAtStartupAndAtEachReloadThatSetsIt) {
  auto c = connect();
  auto r = c.allocate_region(1 << 20);  // regions work as ever
  EXPECT_EQ(count_in_log(kWarning), 1) << daemon_.log();
  AdminConn admin(admin_path());
  const json s = admin.ask({{"request", "stats"}});
  ASSERT_TRUE(s["ok"].get<bool>()) << s.dump();
  EXPECT_EQ(s["stats"]["regions"], 1);
  for (const char* gone : {"region_pool_bytes", "region_pool_hits", "region_pool_misses"})
    EXPECT_FALSE(s["stats"].contains(gone)) << s.dump();
  const json cfg = admin.ask({{"request", "config"}});
  ASSERT_TRUE(cfg["ok"].get<bool>()) << cfg.dump();
  EXPECT_FALSE(cfg["config"]["limits"].contains("region_pool_bytes")) << cfg.dump();

  // The same file again: warned again. Then a file with 0: loaded silently, and not logged
  // as a limit that changed, since nothing uses it.
  ::kill(daemon_.pid(), SIGHUP);
  ASSERT_TRUE(eventually([&] { return count_in_log("configuration reloaded from") == 1; }))
      << daemon_.log();
  EXPECT_EQ(count_in_log(kWarning), 2) << daemon_.log();
  std::ofstream(daemon_.config_path(), std::ios::trunc)
      << R"({"limits": {"region_pool_bytes": 0}})";
  ::kill(daemon_.pid(), SIGHUP);
  ASSERT_TRUE(eventually([&] { return count_in_log("configuration reloaded from") == 2; }))
      << daemon_.log();
  EXPECT_EQ(count_in_log(kWarning), 2) << daemon_.log();
  EXPECT_EQ(count_in_log("limits.region_pool_bytes: "), 0) << daemon_.log();
  auto again = c.allocate_region(1 << 20);
  EXPECT_EQ(again.size(), 1u << 20);
}

class AdminGroupTest : public AdminTest {
 protected:
  AdminGroupTest()
      : AdminTest(
            DaemonOptions{.config_json = R"({"admin": {"mode": "0666", "group": "nogroup"}})"}) {}
};

TEST_F(AdminGroupTest, MemberOfTheAdminGroupIsLetIn) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run a client as another uid";
  ::chmod(daemon_.dir().path().c_str(), 0755);
  const pid_t member = spawn([&] {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) return 10;  // nobody:nogroup
    AdminConn admin(admin_path());
    return admin.ask({{"request", "stats"}})["ok"].get<bool>() ? 0 : 1;
  });
  EXPECT_EQ(wait_exit(member), 0);
}

}  // namespace
}  // namespace qbus::testing
