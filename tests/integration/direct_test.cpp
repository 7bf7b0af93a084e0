// Direct messages by pid, inboxes and request/reply, across real processes.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <qbus/client.hpp>

#include <gtest/gtest.h>

#include <thread>

#include "daemon.hpp"
#include "process.hpp"

namespace qbus::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

class DirectTest : public ::testing::Test {
 protected:
  explicit DirectTest(DaemonOptions o = {}) : daemon_(std::move(o)) {}
  Client connect(const std::string& name = "direct-test") {
    return Client(ClientOptions{daemon_.address(), name, seconds(30)});
  }
  Daemon daemon_;
};

TEST_F(DirectTest, EachChildReceivesExactlyItsOwnDirectMessages) {
  constexpr int kChildren = 4;
  constexpr int kEach = 50;
  std::vector<pid_t> children;
  for (int i = 0; i < kChildren; ++i) {
    children.push_back(spawn([&] {
      auto c = connect();
      const std::string mine = std::to_string(::getpid());
      for (int n = 0; n < kEach; ++n) {
        auto m = c.receive_direct(seconds(30));
        if (!m || m->text() != mine + ":" + std::to_string(n) || !m->is_direct()) return 1;
      }
      // Nothing else was meant for this process.
      return c.receive_direct(milliseconds(100)) ? 2 : 0;
    }));
  }
  auto c = connect();
  for (int n = 0; n < kEach; ++n) {
    for (pid_t child : children) {
      // The child may not have connected yet: wait for it as long as the test allows.
      c.send_to_pid(static_cast<std::uint32_t>(child),
                    std::to_string(child) + ":" + std::to_string(n),
                    DirectOptions{seconds(30), true});
    }
  }
  for (pid_t child : children)
    EXPECT_EQ(wait_exit(child), 0);
}

TEST_F(DirectTest, ReceiverSeesTheSendersKernelIdentity) {
  const pid_t child = spawn([&] {
    auto c = connect("claims-to-be-init");
    c.send_to_pid(static_cast<std::uint32_t>(::getppid()), "from child",
                  DirectOptions{seconds(30), true});
    return 0;
  });
  auto c = connect();
  auto m = c.receive_direct(seconds(30));
  ASSERT_TRUE(m);
  EXPECT_EQ(m->text(), "from child");
  EXPECT_EQ(m->sender().pid, static_cast<std::uint32_t>(child));
  EXPECT_EQ(m->sender().uid, ::getuid());
  EXPECT_NE(m->sender().client_id, c.session().client_id);
  EXPECT_EQ(wait_exit(child), 0);
}

TEST_F(DirectTest, SendToAPidWithNoConnectionFailsAtOnce) {
  auto c = connect();
  const pid_t gone = spawn([] { return 0; });
  ASSERT_EQ(wait_exit(gone), 0);
  try {
    c.send_to_pid(static_cast<std::uint32_t>(gone), "anyone?");
    FAIL() << "expected no_such_peer";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::no_such_peer);
  }
  // The refusal was the answer to a confirmed send, not a failure of some other send.
  c.sync();
  EXPECT_EQ(c.send_failures().count, 0u);
}

TEST_F(DirectTest, PeerThatExitedMakesLaterSendsFail) {
  Gate connected, may_exit;
  const pid_t child = spawn([&] {
    auto c = connect();
    c.sync();
    connected.open();
    may_exit.wait();
    return 0;
  });
  connected.wait();
  auto c = connect();
  c.send_to_pid(static_cast<std::uint32_t>(child), "while it lives");
  may_exit.open();
  ASSERT_EQ(wait_exit(child), 0);
  // The broker notices the close asynchronously; from then on every send fails.
  Errc last = Errc::ok;
  for (int i = 0; i < 3000 && last != Errc::no_such_peer; ++i) {
    try {
      c.send_to_pid(static_cast<std::uint32_t>(child), "after exit");
      std::this_thread::sleep_for(milliseconds(10));
    } catch (const Error& e) {
      last = e.code();
    }
  }
  EXPECT_EQ(last, Errc::no_such_peer);
}

TEST_F(DirectTest, SendCanWaitForTheProcessToConnect) {
  Gate go;
  const pid_t child = spawn([&] {
    go.wait();  // connects only once the parent's send is parked in the broker
    auto c = connect();
    auto m = c.receive_direct(seconds(30));
    return m && m->text() == "was waiting" ? 0 : 1;
  });
  auto c = connect();
  c.send_to_pid(static_cast<std::uint32_t>(child), "was waiting",
                DirectOptions{seconds(30), false});
  c.sync();  // the broker has parked the send
  go.open();
  EXPECT_EQ(wait_exit(child), 0);
  c.sync();
  EXPECT_EQ(c.send_failures().count, 0u);
}

TEST_F(DirectTest, WaitingSendGivesUpWithNoSuchPeer) {
  auto c = connect();
  const pid_t gone = spawn([] { return 0; });
  ASSERT_EQ(wait_exit(gone), 0);
  try {
    c.send_to_pid(static_cast<std::uint32_t>(gone), "x", DirectOptions{milliseconds(100), true});
    FAIL() << "expected no_such_peer";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::no_such_peer);
    EXPECT_NE(std::string(e.what()).find("connected in time"), std::string::npos);
  }
}

class SmallInboxTest : public DirectTest {
 protected:
  SmallInboxTest()
      : DirectTest(DaemonOptions{.config_json = R"({"inbox": {"max_messages": 5}})"}) {}
};

TEST_F(SmallInboxTest, FullInboxAnswersPeerBusyAndKeepsWhatItHolds) {
  Gate connected, done;
  const pid_t child = spawn([&] {
    auto c = connect();
    c.sync();
    connected.open();
    done.wait();
    auto got = c.receive_direct_batch(100, seconds(30));
    if (got.size() != 5) return 1;
    for (int i = 0; i < 5; ++i) {
      if (got[i].text() != std::to_string(i)) return 2;
    }
    return 0;
  });
  connected.wait();
  auto c = connect();
  for (int i = 0; i < 5; ++i)
    c.send_to_pid(static_cast<std::uint32_t>(child), std::to_string(i));
  try {
    c.send_to_pid(static_cast<std::uint32_t>(child), "one too many");
    FAIL() << "expected peer_busy";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::peer_busy);
  }
  done.open();
  EXPECT_EQ(wait_exit(child), 0);
}

TEST_F(DirectTest, SecondConnectionClaimsTheProcessInbox) {
  auto first = connect("first");
  auto second = connect("second");
  first.send_to_pid(static_cast<std::uint32_t>(::getpid()), "one");
  // second claims the inbox on its first receive_direct and takes what is there.
  auto m = second.receive_direct(seconds(30));
  ASSERT_TRUE(m);
  EXPECT_EQ(m->text(), "one");
  first.send_to_pid(static_cast<std::uint32_t>(::getpid()), "two");
  // first claims it back the same way.
  m = first.receive_direct(seconds(30));
  ASSERT_TRUE(m);
  EXPECT_EQ(m->text(), "two");
}

TEST_F(DirectTest, RequestGetsTheDirectReplyFromAnotherProcess) {
  const pid_t responder = spawn([&] {
    auto c = connect("responder");
    for (int i = 0; i < 20; ++i) {
      auto m = c.receive("svc", seconds(30));
      if (!m || !m->is_request()) return 1;
      c.reply(*m, "re:" + std::string(m->text()));
    }
    c.sync();
    return c.send_failures().count == 0 ? 0 : 2;
  });
  auto c = connect();
  for (int i = 0; i < 20; ++i) {
    auto r = c.request("svc", "q" + std::to_string(i), seconds(30));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->text(), "re:q" + std::to_string(i));
    EXPECT_EQ(r->sender().pid, static_cast<std::uint32_t>(responder));
    EXPECT_TRUE(r->is_direct());
  }
  EXPECT_EQ(wait_exit(responder), 0);
}

TEST_F(DirectTest, LateReplyIsDroppedAndNeverAnswersTheNextRequest) {
  Gate timed_out;
  const pid_t responder = spawn([&] {
    auto c = connect("slow-responder");
    auto first = c.receive("slow", seconds(30));
    if (!first) return 1;
    timed_out.wait();  // answer only after the requester gave up
    c.reply(*first, "too late");
    c.sync();
    if (c.send_failures().count != 1 || c.send_failures().last_code != Errc::reply_expired) {
      return 2;
    }
    auto second = c.receive("slow", seconds(30));
    if (!second) return 3;
    c.reply(*second, "on time");
    return 0;
  });
  auto c = connect();
  EXPECT_FALSE(c.request("slow", "first", milliseconds(200)));
  timed_out.open();
  auto r = c.request("slow", "second", seconds(30));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->text(), "on time");
  EXPECT_EQ(wait_exit(responder), 0);
}

TEST_F(DirectTest, OnlyTheReceiverOfARequestCanReplyToIt) {
  Gate taken, spoofed;
  const pid_t responder = spawn([&] {
    auto c = connect("responder");
    auto m = c.receive("guarded", seconds(30));
    if (!m) return 1;
    taken.open();
    spoofed.wait();
    c.reply(*m, "genuine");
    c.sync();
    return c.send_failures().count == 0 ? 0 : 2;
  });
  auto requester = connect("requester");
  std::optional<Message> reply;
  std::thread waiting([&] { reply = requester.request("guarded", "q", seconds(30)); });
  taken.wait();
  // Another connection that guesses the requester's client id and request id (the
  // library counts from 1) gets nowhere.
  auto intruder = connect("intruder");
  for (std::uint64_t guess = 1; guess < 10; ++guess) {
    Message fake("guarded", "", Sender{0, 0, requester.session().client_id}, guess);
    intruder.reply(fake, "forged");
  }
  intruder.sync();
  EXPECT_EQ(intruder.send_failures().count, 9u);
  EXPECT_EQ(intruder.send_failures().last_code, Errc::reply_expired);
  spoofed.open();
  waiting.join();
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->text(), "genuine");
  EXPECT_EQ(wait_exit(responder), 0);
}

TEST_F(DirectTest, RequestFailsWhenItsReceiverLeavesWithoutReplying) {
  const pid_t quitter = spawn([&] {
    auto c = connect("quitter");
    return c.receive("flaky", seconds(30)) ? 0 : 1;  // takes the request, then exits
  });
  auto c = connect();
  try {
    c.request("flaky", "anyone?", kForever);
    FAIL() << "expected no_such_peer";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::no_such_peer);
    EXPECT_NE(std::string(e.what()).find("without replying"), std::string::npos);
  }
  EXPECT_EQ(wait_exit(quitter), 0);
}

TEST_F(DirectTest, ReplyToSomethingThatIsNotARequestIsRefused) {
  auto c = connect();
  c.send("plain", "x");
  auto m = c.receive("plain", seconds(30));
  ASSERT_TRUE(m);
  EXPECT_FALSE(m->is_request());
  EXPECT_THROW(c.reply(*m, "nope"), Error);
}

TEST_F(DirectTest, QbusctlSendPidAndRecvDirect) {
  // qbusctl recv --direct in its own process; qbusctl send --pid waits for it to connect.
  int out[2];
  ASSERT_EQ(::pipe(out), 0);
  const pid_t receiver = ::fork();
  ASSERT_GE(receiver, 0);
  if (receiver == 0) {
    ::dup2(out[1], 1);
    ::execl(qbusctl_path().c_str(), "qbusctl", "--address", daemon_.address().c_str(), "recv",
            "--direct", "--timeout", "30000", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(out[1]);
  auto s = run({qbusctl_path(), "--address", daemon_.address(), "send", "--pid",
                std::to_string(receiver), "--wait", "30000", "hello process"});
  EXPECT_EQ(s.exit_code, 0) << s.err;
  std::string got(64, '\0');
  const ssize_t n = ::read(out[0], got.data(), got.size());
  ::close(out[0]);
  ASSERT_GT(n, 0);
  got.resize(static_cast<std::size_t>(n));
  EXPECT_EQ(got, "hello process\n");
  EXPECT_EQ(wait_exit(receiver), 0);
}

TEST_F(DirectTest, QbusctlRequestPrintsTheReplyAndTimesOutWithThree) {
  const pid_t responder = spawn([&] {
    auto c = connect("responder");
    auto m = c.receive("echo", seconds(30));
    if (!m) return 1;
    c.reply(*m, "echo:" + std::string(m->text()));
    c.sync();
    return 0;
  });
  auto r = run({qbusctl_path(), "--address", daemon_.address(), "request", "echo", "hi",
                "--timeout", "30000"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "echo:hi\n");
  EXPECT_EQ(wait_exit(responder), 0);
  r = run({qbusctl_path(), "--address", daemon_.address(), "request", "nobody", "hi", "--timeout",
           "100"});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_NE(r.err.find("no reply"), std::string::npos);
}

TEST_F(DirectTest, QbusctlDirectUsageErrors) {
  const auto ctl = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {qbusctl_path(), "--address", daemon_.address()});
    return run(args).exit_code;
  };
  EXPECT_EQ(ctl({"send"}), 2);
  EXPECT_EQ(ctl({"send", "--pid", "1", "key", "message"}), 2);
  EXPECT_EQ(ctl({"send", "k", "m", "--wait", "5"}), 2);
  EXPECT_EQ(ctl({"recv"}), 2);
  EXPECT_EQ(ctl({"recv", "k", "--direct"}), 2);
  EXPECT_EQ(ctl({"send", "--pid", "0", "x"}), 2);
}

}  // namespace
}  // namespace qbus::testing
