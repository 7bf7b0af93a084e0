// The access policy, row by row, on one real daemon: every operation (send, receive,
// declare, request) allowed and denied, for every kind of principal (a uid, a primary gid,
// a supplementary gid, a user name and a group name) and every kind of key (exact, a
// prefix, a `*` and a `>` pattern). Each row runs in a forked process that has dropped to
// the row's identity, over a real connection; the users and groups behind the names are
// created for the run (useradd/groupadd --system) and removed at its end. A denied row
// must be refused with permission_denied naming the operation and key and leave the queue
// holding what it held; an allowed row must have its effect. Then `qbusctl policy check
// --user` is asked about the same users.
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <qbus/client.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <string>
#include <vector>

#include "daemon.hpp"
#include "process.hpp"

namespace qbus::testing {
namespace {

using json = nlohmann::json;
using std::chrono::seconds;

constexpr uid_t kNobody = 65534;

// ---- the users and groups of the run ----------------------------------------------------

std::string shadow_tool(const char* name) {
  for (const char* dir : {"/usr/sbin/", "/sbin/"}) {
    const std::string path = std::string(dir) + name;
    if (::access(path.c_str(), X_OK) == 0) return path;
  }
  throw std::runtime_error(std::string(name) +
                           " not found: install Debian's passwd package (scripts/deps.sh)");
}

// A system group G and a system user U (with its own user group, and a member of G in
// /etc/group), named after this process so parallel runs cannot collide. The destructor
// removes whatever the constructor made, also when the constructor failed halfway.
class Accounts {
 public:
  Accounts() {
    const std::string tag = "qbt-" + std::to_string(::getpid());
    user = tag + "-a";
    group = tag + "-g";
    try {
      tool("groupadd", {"--system", group});
      group_made_ = true;
      tool("useradd", {"--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                       "--user-group", "--groups", group, user});
      user_made_ = true;
      const passwd* pw = ::getpwnam(user.c_str());
      const struct group* gr = ::getgrnam(group.c_str());
      if (!pw || !gr) throw std::runtime_error("the new user or group is not in the database");
      uid = pw->pw_uid;
      user_gid = pw->pw_gid;
      group_gid = gr->gr_gid;
      // The groups `id USER` lists, as login would set them: the user's primary group and
      // every group naming it as a member.
      int n = 64;
      user_groups.resize(static_cast<std::size_t>(n));
      if (::getgrouplist(user.c_str(), user_gid, user_groups.data(), &n) < 0) {
        throw std::runtime_error("getgrouplist failed for " + user);
      }
      user_groups.resize(static_cast<std::size_t>(n));
    } catch (...) {
      remove();
      throw;
    }
  }
  ~Accounts() { remove(); }
  Accounts(const Accounts&) = delete;
  Accounts& operator=(const Accounts&) = delete;

  std::string user;
  std::string group;
  uid_t uid = 0;
  gid_t user_gid = 0;
  gid_t group_gid = 0;
  std::vector<gid_t> user_groups;

 private:
  static void tool(const char* name, std::vector<std::string> args) {
    args.insert(args.begin(), shadow_tool(name));
    const Result r = run(args);
    if (r.exit_code != 0) {
      throw std::runtime_error(std::string(name) + " failed (" + std::to_string(r.exit_code) +
                               "): " + r.err);
    }
  }

  void remove() {
    // Best effort, each step on its own: one failure must not leave the rest behind.
    if (user_made_) (void)run({shadow_tool("userdel"), user});
    user_made_ = false;
    if (::getgrnam(user.c_str())) (void)run({shadow_tool("groupdel"), user});
    if (group_made_) (void)run({shadow_tool("groupdel"), group});
    group_made_ = false;
  }

  bool user_made_ = false;
  bool group_made_ = false;
};

// ---- the rows -----------------------------------------------------------------------------

enum class Op { send, receive, declare, request };
enum class Who { uid, primary_gid, supplementary_gid, user_name, group_name };
enum class KeyKind { exact, prefix, star, chevron };

struct Row {
  Op op;
  bool allowed;
  Who who;
  KeyKind kind;
};

const char* op_name(Op op) {
  constexpr const char* kNames[] = {"send", "receive", "declare", "request"};
  return kNames[static_cast<int>(op)];
}
const char* who_name(Who w) {
  constexpr const char* kNames[] = {"uid", "primary_gid", "supplementary_gid", "user_name",
                                    "group_name"};
  return kNames[static_cast<int>(w)];
}
const char* kind_name(KeyKind k) {
  constexpr const char* kNames[] = {"exact", "prefix", "star", "chevron"};
  return kNames[static_cast<int>(k)];
}

std::string row_name(const Row& r) {
  return std::string(op_name(r.op)) + (r.allowed ? "_allowed_" : "_denied_") + who_name(r.who) +
         "_" + kind_name(r.kind);
}

// gtest names a failing row by this rather than by its bytes.
void PrintTo(const Row& r, std::ostream* os) {
  *os << row_name(r);
}

// Every row owns the keys under its own base, so one config holds every row's rule.
// Allowed rows live under `ta.`, which only their rules open (the default denies); denied
// rows under `td.`, which a rule opens to everyone, so that the row's deny rule, more
// specific, is what refuses.
std::string row_base(const Row& r) {
  return std::string(r.allowed ? "ta." : "td.") + op_name(r.op) + "." + who_name(r.who) + "." +
         kind_name(r.kind);
}

// The key the row's process uses.
std::string row_key(const Row& r) {
  const std::string base = row_base(r);
  switch (r.kind) {
    case KeyKind::exact:
    case KeyKind::star:
      return base + ".q";
    case KeyKind::prefix:
      return base + ".queue";  // a prefix is characters, not tokens: `.q` matches `.queue`
    case KeyKind::chevron:
      return base + ".q.r";
  }
  return base;
}

json row_rule(const Row& r, const Accounts& a) {
  json rule;
  rule[r.allowed ? "allow" : "deny"] = json::array({op_name(r.op)});
  switch (r.who) {
    case Who::uid:
      rule["uids"] = {a.uid};
      break;
    case Who::primary_gid:
    case Who::supplementary_gid:
      rule["gids"] = {a.group_gid};
      break;
    case Who::user_name:
      rule["users"] = {a.user};
      break;
    case Who::group_name:
      rule["groups"] = {a.group};
      break;
  }
  const std::string base = row_base(r);
  switch (r.kind) {
    case KeyKind::exact:
      rule["keys"] = {base + ".q"};
      break;
    case KeyKind::prefix:
      rule["prefixes"] = {base + ".q"};
      break;
    case KeyKind::star:
      rule["keys"] = {base + ".*"};
      break;
    case KeyKind::chevron:
      rule["keys"] = {base + ".>"};
      break;
  }
  return rule;
}

std::vector<Row> all_rows() {
  std::vector<Row> rows;
  for (Op op : {Op::send, Op::receive, Op::declare, Op::request})
    for (bool allowed : {true, false})
      for (Who who :
           {Who::uid, Who::primary_gid, Who::supplementary_gid, Who::user_name, Who::group_name})
        for (KeyKind kind : {KeyKind::exact, KeyKind::prefix, KeyKind::star, KeyKind::chevron})
          rows.push_back({op, allowed, who, kind});
  return rows;
}

// The process identity a row runs as. The numeric kinds carry only the id under test
// (nobody's otherwise); the named kinds are the created user as login would set it up,
// its groups read from the group database in the parent (a forked child of a test should
// not have to use NSS).
struct Identity {
  uid_t uid = kNobody;
  gid_t gid = kNobody;
  std::vector<gid_t> groups;
};

Identity identity_of(Who who, const Accounts& a) {
  switch (who) {
    case Who::uid:
      return {a.uid, kNobody, {}};
    case Who::primary_gid:
      return {kNobody, a.group_gid, {}};
    case Who::supplementary_gid:
      return {kNobody, kNobody, {a.group_gid}};
    case Who::user_name:
    case Who::group_name:
      return {a.uid, a.user_gid, a.user_groups};
  }
  return {};
}

std::string config_for(const Accounts& a) {
  json rules = json::array();
  // Root prepares and inspects every row's queue; its prefix is the least specific.
  rules.push_back({{"allow", "*"}, {"uids", {0}}, {"prefixes", {"t"}}});
  rules.push_back({{"allow", "*"}, {"everyone", true}, {"prefixes", {"td"}}});
  for (const Row& r : all_rows())
    rules.push_back(row_rule(r, a));
  return json{{"policy", {{"default", "deny"}, {"rules", rules}}}}.dump();
}

// ---- the suite's daemon -------------------------------------------------------------------

// Set up once for the whole binary (ctest runs it as one test, see CMakeLists.txt): the
// accounts and the daemon whose config names them.
struct SuiteState {
  std::unique_ptr<Accounts> accounts;
  std::unique_ptr<Daemon> daemon;
  std::string error;  // why the set-up failed, reported by every test
};
SuiteState& suite() {
  static SuiteState s;
  return s;
}

class PolicyTableEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    if (::geteuid() != 0) return;
    try {
      suite().accounts = std::make_unique<Accounts>();
      suite().daemon =
          std::make_unique<Daemon>(DaemonOptions{.config_json = config_for(*suite().accounts)});
      // The socket's directory is the test's own: the rows' identities must reach it.
      ::chmod(suite().daemon->dir().path().c_str(), 0755);
    } catch (const std::exception& e) {
      suite().error = e.what();
    }
  }
  // Runs however the tests went: the accounts must not outlive the run.
  void TearDown() override {
    suite().daemon.reset();
    suite().accounts.reset();
  }
};
[[maybe_unused]] const auto* const kEnvironment =
    ::testing::AddGlobalTestEnvironment(new PolicyTableEnvironment);

Client connect() {
  return Client(ClientOptions{suite().daemon->address(), "policy-table", seconds(30)});
}

// Runs `body` in a forked child that has taken the identity `id`.
template <typename F>
pid_t spawn_as(const Identity& id, F&& body) {
  return spawn([&] {
    if (::setgroups(id.groups.size(), id.groups.data()) != 0) return 10;
    if (::setgid(id.gid) != 0 || ::setuid(id.uid) != 0) return 11;
    return body();
  });
}

int failed(const std::string& why) {
  std::fprintf(stderr, "child %d: %s\n", ::getpid(), why.c_str());
  return 1;
}

// The words of the broker's refusal of `op` on `key`.
std::string refusal_text(Op op, const std::string& key) {
  constexpr const char* kPhrase[] = {"send to", "receive from", "declare of", "request to"};
  return std::string(kPhrase[static_cast<int>(op)]) + " queue '" + key + "' denied by policy";
}

// The row's operation, as its process performs it: 0 when it had the row's outcome.
int perform(const Row& r, const std::string& key) {
  auto c = connect();
  try {
    switch (r.op) {
      case Op::send:
        c.send_confirmed(key, "sent by the row");
        break;
      case Op::receive: {
        auto m = r.allowed ? c.receive(key, seconds(30)) : c.try_receive(key);
        if (r.allowed && (!m || m->text() != "for the row")) return failed("wrong message");
        break;
      }
      case Op::declare:
        c.declare(key, QueueOptions{7, 0, Overflow::reject});
        break;
      case Op::request: {
        auto reply = c.request(key, "ask", seconds(30));
        if (r.allowed && (!reply || reply->text() != "answer to ask")) return failed("no answer");
        break;
      }
    }
  } catch (const Error& e) {
    if (r.allowed) return failed(std::string("refused: ") + e.what());
    if (e.code() != Errc::permission_denied) return failed(std::string("not denied: ") + e.what());
    if (std::string(e.what()).find(refusal_text(r.op, key)) == std::string::npos) {
      return failed(std::string("unexpected text: ") + e.what());
    }
    return 0;
  }
  return r.allowed ? 0 : failed("the operation was not refused");
}

// The admin socket's view of one queue (`qbusctl --json queue KEY`).
json queue_state(const std::string& key) {
  const Result r =
      run({qbusctl_path(), "--address", suite().daemon->address(), "--json", "queue", key});
  if (r.exit_code != 0) return json{{"missing", r.err}};
  return json::parse(r.out)["queue"];
}

class PolicyTableTest : public ::testing::TestWithParam<Row> {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to create users and run clients as them";
    ASSERT_TRUE(suite().error.empty()) << suite().error;
    ASSERT_TRUE(suite().daemon);
  }
};

TEST_P(PolicyTableTest, RowHasItsEffectOrIsRefusedLeavingTheQueueAsItWas) {
  const Row& r = GetParam();
  const std::string key = row_key(r);
  const Identity id = identity_of(r.who, *suite().accounts);
  auto root = connect();

  // What the queue holds before: a message for a receive to take, else for a refusal to
  // leave alone. An allowed send or declare starts from no queue at all.
  if (!r.allowed) {
    root.send_confirmed(key, "held");
  } else if (r.op == Op::receive) {
    root.send_confirmed(key, "for the row");
  }
  // A root responder answers an allowed request.
  std::optional<pid_t> responder;
  if (r.op == Op::request && r.allowed) {
    responder = spawn([&] {
      auto c = connect();
      auto m = c.receive(key, seconds(30));
      if (!m || !m->is_request() || m->text() != "ask") return failed("no request");
      c.reply(*m, "answer to ask");
      c.sync();
      return 0;
    });
  }

  EXPECT_EQ(wait_exit(spawn_as(id, [&] { return perform(r, key); })), 0) << row_name(r);
  if (responder) {
    EXPECT_EQ(wait_exit(*responder), 0);
  }

  if (!r.allowed) {
    // Exactly what it held, nothing taken, nothing added, its options unchanged. The options
    // are read first: a queue made by use is gone once emptied.
    if (r.op == Op::declare) {
      const json q = queue_state(key);
      ASSERT_TRUE(q.contains("max_messages")) << q;
      EXPECT_NE(q.at("max_messages"), 7) << q;
    }
    auto m = root.try_receive(key);
    ASSERT_TRUE(m);
    EXPECT_EQ(m->text(), "held");
    EXPECT_FALSE(root.try_receive(key));
    return;
  }
  switch (r.op) {
    case Op::send: {
      auto m = root.try_receive(key);
      ASSERT_TRUE(m);
      EXPECT_EQ(m->text(), "sent by the row");
      break;
    }
    case Op::declare: {
      const json q = queue_state(key);
      ASSERT_TRUE(q.contains("max_messages") && q.contains("owner")) << q;
      EXPECT_EQ(q.at("max_messages"), 7) << q;
      EXPECT_EQ(q.at("owner"), id.uid) << q;
      break;
    }
    case Op::receive:
    case Op::request:
      break;  // the process checked the message or the answer
  }
  EXPECT_FALSE(root.try_receive(key));
}

std::string param_name(const ::testing::TestParamInfo<Row>& p) {
  return row_name(p.param);
}

INSTANTIATE_TEST_SUITE_P(Rows, PolicyTableTest, ::testing::ValuesIn(all_rows()), param_name);

// ---- qbusctl policy check --user ----------------------------------------------------------

class PolicyCheckUserTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to create users";
    ASSERT_TRUE(suite().error.empty()) << suite().error;
    ASSERT_TRUE(suite().daemon);
  }
  static Result check(std::vector<std::string> args) {
    args.insert(args.begin(),
                {qbusctl_path(), "--address", suite().daemon->address(), "policy", "check"});
    return run(args);
  }
};

// The index of `r`'s rule in config_for()'s list.
std::size_t rule_index(const Row& r) {
  const auto rows = all_rows();
  for (std::size_t i = 0; i < rows.size(); ++i) {
    if (row_name(rows[i]) == row_name(r)) return i + 2;
  }
  throw std::logic_error("no such row");
}

TEST_F(PolicyCheckUserTest, AUserNameStandsForItsUidPrimaryGroupAndSupplementaryGroups) {
  const Accounts& a = *suite().accounts;
  const Row by_group{Op::send, true, Who::group_name, KeyKind::exact};
  const Row by_user{Op::receive, true, Who::user_name, KeyKind::star};
  const Row by_uid{Op::declare, false, Who::uid, KeyKind::prefix};
  // The user is in its group only through the group database: qbusctl must read it.
  auto r = check({"--user", a.user, "--op", "send", "--key", row_key(by_group)});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.rfind("allow: policy.rules[" + std::to_string(rule_index(by_group)) + "] ", 0),
            0u)
      << r.out;
  r = check({"--user", a.user, "--op", "receive", "--key", row_key(by_user)});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.rfind("allow: policy.rules[" + std::to_string(rule_index(by_user)) + "] ", 0), 0u)
      << r.out;
  r = check({"--user", a.user, "--op", "declare", "--key", row_key(by_uid)});
  EXPECT_EQ(r.exit_code, 4) << r.err;
  EXPECT_EQ(r.out.rfind("deny: policy.rules[" + std::to_string(rule_index(by_uid)) + "] ", 0), 0u)
      << r.out;
  // nobody is not in the group: the default decides.
  r = check({"--user", "nobody", "--op", "send", "--key", row_key(by_group)});
  EXPECT_EQ(r.exit_code, 4) << r.err;
  EXPECT_EQ(r.out, "deny: the default\n");
}

TEST_F(PolicyCheckUserTest, AnUnknownUserOrAUserWithAUidIsAUsageError) {
  const std::string unknown = "no-such-user-" + std::to_string(::getpid());
  auto r = check({"--user", unknown, "--op", "send", "--key", "ta.x"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--user: unknown user '" + unknown + "'"), std::string::npos) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
  r = check({"--user", "nobody", "--uid", "0", "--op", "send", "--key", "ta.x"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--uid"), std::string::npos) << r.err;
  r = check({"--op", "send", "--key", "ta.x"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--uid or --user"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace qbus::testing
