// The real qbusctl binary against the real qbusd.
#include <qbus/client.hpp>

#include <gtest/gtest.h>

#include <fstream>

#include "daemon.hpp"

namespace qbus::testing {
namespace {

using std::chrono::seconds;

std::string binary_bytes(std::size_t n) {
  std::string s(n, '\0');
  std::uint32_t x = 12345;
  for (auto& c : s) {
    x = x * 1103515245u + 12345u;
    c = static_cast<char>(x >> 24);
  }
  return s;
}

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

TEST_F(QbusctlTest, SendFileOverTheInlineLimitArrivesIntactThroughARegion) {
  const std::string big = binary_bytes(3u << 20);  // over the default 1 MiB inline limit
  const auto in = daemon_.dir().file("big.in");
  const auto out = daemon_.dir().file("big.out");
  std::ofstream(in, std::ios::binary) << big;
  auto s = ctl({"send", "files", "--file", in});
  ASSERT_EQ(s.exit_code, 0) << s.err;
  Client c(ClientOptions{daemon_.address(), "check", seconds(30)});
  auto m = c.receive("files", seconds(30));
  ASSERT_TRUE(m);
  EXPECT_TRUE(m->in_shared_memory());
  EXPECT_EQ(m->text(), big);
  // And back out through qbusctl into a file.
  c.send("files", big);
  auto r = ctl({"recv", "files", "--out", out, "--timeout", "30000"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(read_file(out), big);
}

TEST_F(QbusctlTest, SendSmallFileAndEmptyFileInline) {
  const auto small = daemon_.dir().file("small");
  const auto empty = daemon_.dir().file("empty");
  std::ofstream(small, std::ios::binary) << std::string("no newline\0binary", 17);
  std::ofstream(empty, std::ios::binary).close();
  ASSERT_EQ(ctl({"send", "f", "--file", small}).exit_code, 0);
  ASSERT_EQ(ctl({"send", "f", "--file", empty}).exit_code, 0);
  const auto out = daemon_.dir().file("out");
  auto r = ctl({"recv", "f", "--out", out, "--timeout", "30000"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(read_file(out), std::string("no newline\0binary", 17));
  r = ctl({"recv", "f", "--out", out, "--timeout", "30000"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(read_file(out), "");
}

TEST_F(QbusctlTest, SendFileToAPidUsesARegionToo) {
  Client receiver(ClientOptions{daemon_.address(), "receiver", seconds(30)});
  const std::string big = binary_bytes(2u << 20);
  const auto in = daemon_.dir().file("direct.in");
  std::ofstream(in, std::ios::binary) << big;
  auto s = ctl({"send", "--pid", std::to_string(receiver.session().pid), "--file", in});
  ASSERT_EQ(s.exit_code, 0) << s.err;
  auto m = receiver.receive_direct(seconds(30));
  ASSERT_TRUE(m);
  EXPECT_EQ(m->text(), big);
}

TEST_F(QbusctlTest, FileProblemsAreNamedAndMisuseIsAUsageError) {
  auto missing = ctl({"send", "f", "--file", daemon_.dir().file("nope")});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find("nope"), std::string::npos) << missing.err;
  auto dir = ctl({"send", "f", "--file", daemon_.dir().path()});
  EXPECT_EQ(dir.exit_code, 1);
  EXPECT_NE(dir.err.find("not a regular file"), std::string::npos) << dir.err;
  const auto small = daemon_.dir().file("x");
  std::ofstream(small) << "x";
  EXPECT_EQ(ctl({"send", "f", "text", "--file", small}).exit_code, 2);
  EXPECT_EQ(ctl({"recv", "f", "--out", small, "--count", "2"}).exit_code, 2);
  ASSERT_EQ(ctl({"send", "f", "payload"}).exit_code, 0);
  auto unwritable =
      ctl({"recv", "f", "--out", daemon_.dir().file("no/such/dir"), "--timeout", "30000"});
  EXPECT_EQ(unwritable.exit_code, 1);
  EXPECT_NE(unwritable.err.find("no/such/dir"), std::string::npos) << unwritable.err;
}

}  // namespace
}  // namespace qbus::testing
