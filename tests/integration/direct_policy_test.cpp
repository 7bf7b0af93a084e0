// Direct messages on the real daemon as several uids (forked children that drop to nobody
// or another uid): inbox space is shared out per sending uid, so one uid filling root's
// inbox does not shut out the others.
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
constexpr uid_t kOther = 65533;  // a second unprivileged uid; needs no passwd entry

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
