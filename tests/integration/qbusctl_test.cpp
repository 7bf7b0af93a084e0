// The real qbusctl binary against the real qbusd.
#include <qbus/client.hpp>

#include <gtest/gtest.h>

#include "daemon.hpp"

namespace qbus::testing {
namespace {

using std::chrono::seconds;

class QbusctlTest : public ::testing::Test {
 protected:
  Result ctl(std::vector<std::string> args, const std::string& input = {}) {
    args.insert(args.begin(), {qbusctl_path(), "--address", daemon_.address()});
    return run(args, input);
  }
  Daemon daemon_;
};

TEST_F(QbusctlTest, SendThenRecvPrintsThePayloadAndANewline) {
  auto s = ctl({"send", "greetings", "hello world"});
  EXPECT_EQ(s.exit_code, 0) << s.err;
  EXPECT_EQ(s.out, "");
  auto r = ctl({"recv", "greetings", "--timeout", "30000"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "hello world\n");
}

TEST_F(QbusctlTest, SendReadsStdinWhenNoMessageIsGiven) {
  const std::string text = "line one\nline two\n";
  EXPECT_EQ(ctl({"send", "stdin"}, text).exit_code, 0);
  auto r = ctl({"recv", "stdin", "--timeout", "30000"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out, text + "\n");
}

TEST_F(QbusctlTest, RecvCountTakesSeveralInOrder) {
  for (const char* m : {"a", "b", "c", "d"})
    ASSERT_EQ(ctl({"send", "multi", m}).exit_code, 0);
  auto r = ctl({"recv", "multi", "--count", "3", "--timeout", "30000"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out, "a\nb\nc\n");
  r = ctl({"recv", "multi", "--count", "0", "--timeout", "200"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out, "d\n");
}

TEST_F(QbusctlTest, RecvTimeoutWithNothingExitsWithThree) {
  auto r = ctl({"recv", "nothing", "--timeout", "50"});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_EQ(r.out, "");
  EXPECT_NE(r.err.find("timed out"), std::string::npos);
}

TEST_F(QbusctlTest, RecvSeesMessagesFromTheLibrary) {
  Client c(ClientOptions{daemon_.address(), "lib", seconds(30)});
  c.send("mixed", "from the library");
  auto r = ctl({"recv", "mixed", "--timeout", "30000"});
  EXPECT_EQ(r.out, "from the library\n");
  ASSERT_EQ(ctl({"send", "mixed", "from qbusctl"}).exit_code, 0);
  auto m = c.receive("mixed", seconds(30));
  ASSERT_TRUE(m);
  EXPECT_EQ(m->text(), "from qbusctl");
}

TEST_F(QbusctlTest, UsageErrorsExitWithTwo) {
  EXPECT_EQ(run({qbusctl_path()}).exit_code, 2);
  EXPECT_EQ(run({qbusctl_path(), "frobnicate"}).exit_code, 2);
  EXPECT_EQ(ctl({"send"}).exit_code, 2);
  auto r = ctl({"recv", "k", "--timeout", "soon"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--timeout"), std::string::npos);
}

TEST_F(QbusctlTest, HelpExitsWithZero) {
  auto r = run({qbusctl_path(), "--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("send"), std::string::npos);
}

TEST_F(QbusctlTest, ErrorsExitWithOneAndOneLine) {
  auto r = ctl({"send", "bad key", "x"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("invalid queue key"), std::string::npos);
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1);

  r = run(
      {qbusctl_path(), "--address", "unix:" + daemon_.dir().file("none.sock"), "send", "k", "x"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("none.sock"), std::string::npos);
}

TEST_F(QbusctlTest, AddressComesFromTheEnvironment) {
  auto r =
      run({qbusctl_path(), "send", "env", "via env"}, {}, {"QBUS_ADDRESS=" + daemon_.address()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  Client c(ClientOptions{daemon_.address(), "lib", seconds(30)});
  EXPECT_EQ(c.receive("env", seconds(30))->text(), "via env");
}

TEST_F(QbusctlTest, FullRejectQueueMakesSendFail) {
  Client c(ClientOptions{daemon_.address(), "lib", seconds(30)});
  c.declare("full", QueueOptions{1, 0, Overflow::reject});
  ASSERT_EQ(ctl({"send", "full", "one"}).exit_code, 0);
  auto r = ctl({"send", "full", "two"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("queue_full"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace qbus::testing
