// qbusd's life cycle: start, refuse, replace stale sockets, stop cleanly.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <qbus/client.hpp>

#include <gtest/gtest.h>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "daemon.hpp"

namespace qbus::testing {
namespace {

using std::chrono::seconds;

TEST(DaemonTest, SigtermStopsCleanlyAndRemovesTheSocket) {
  Daemon d;
  ASSERT_TRUE(std::filesystem::exists(d.socket_path()));
  EXPECT_EQ(std::filesystem::status(d.socket_path()).permissions() & std::filesystem::perms::all,
            std::filesystem::perms(0666));
  EXPECT_EQ(d.stop(), 0);
  EXPECT_FALSE(std::filesystem::exists(d.socket_path()));
  EXPECT_NE(d.log().find("shutting down"), std::string::npos);
}

TEST(DaemonTest, SecondDaemonOnTheSamePathRefusesToStart) {
  Daemon d;
  auto r = run({qbusd_path(), "--socket", d.socket_path()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "qbusd: another qbusd is already listening on " + d.socket_path() + "\n");
  // The first one is unharmed.
  Client c(ClientOptions{d.address(), "t", seconds(30)});
  c.send_confirmed("still", "here");
}

TEST(DaemonTest, StaleSocketFileIsReplaced) {
  TempDir dir;
  const auto path = dir.file("qbus.sock");
  {
    // A socket file with nobody listening, as a crashed daemon leaves it.
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::strncpy(sa.sun_path, path.c_str(), sizeof(sa.sun_path) - 1);
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)), 0);
    ::close(fd);
  }
  ASSERT_TRUE(std::filesystem::exists(path));
  Daemon d(DaemonOptions{.socket_path = path});
  Client c(ClientOptions{"unix:" + path, "t", seconds(30)});
  c.send_confirmed("k", "v");
  EXPECT_NE(d.log().find("removing stale socket file"), std::string::npos);
}

TEST(DaemonTest, PathThatIsNotASocketIsLeftAlone) {
  TempDir dir;
  const auto path = dir.file("not-a-socket");
  std::ofstream(path) << "precious";
  auto r = run({qbusd_path(), "--socket", path});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("exists and is not a socket"), std::string::npos) << r.err;
  std::ifstream in(path);
  std::string content;
  in >> content;
  EXPECT_EQ(content, "precious");
}

TEST(DaemonTest, InvalidConfigStopsStartupWithTheFieldPath) {
  TempDir dir;
  std::ofstream(dir.file("bad.json")) << R"({"limits": {"max_queues": -1}})";
  auto r = run({qbusd_path(), "--config", dir.file("bad.json"), "--socket", dir.file("s")});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "qbusd: " + dir.file("bad.json") + ": limits.max_queues: must be at least 1\n");
  EXPECT_FALSE(std::filesystem::exists(dir.file("s")));
}

TEST(DaemonTest, CheckConfigValidatesAndExits) {
  TempDir dir;
  std::ofstream(dir.file("ok.json")) << R"({"log": {"level": "warn"}})";
  auto r = run({qbusd_path(), "--config", dir.file("ok.json"), "--check-config"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("configuration OK"), std::string::npos);
}

TEST(DaemonTest, ExampleConfigIsValid) {
  auto r = run({qbusd_path(), "--check-config", "--config",
                std::string(QBUS_SOURCE_DIR) + "/config/qbusd.example.json"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

TEST(DaemonTest, VersionAndHelpAnswer) {
  auto v = run({qbusd_path(), "--version"});
  EXPECT_EQ(v.exit_code, 0);
  EXPECT_NE(v.out.find("qbusd "), std::string::npos);
  auto h = run({qbusd_path(), "--help"});
  EXPECT_EQ(h.exit_code, 0);
  EXPECT_NE(h.out.find("--socket"), std::string::npos);
  EXPECT_NE(run({qbusd_path(), "--no-such-flag"}).exit_code, 0);
}

TEST(DaemonTest, PredeclaredQueuesFromConfigExist) {
  Daemon d(DaemonOptions{
      .config_json =
          R"({"queues": [{"key": "orders", "max_messages": 2, "overflow": "reject"}]})"});
  Client c(ClientOptions{d.address(), "t", seconds(30)});
  c.send_confirmed("orders", "1");
  c.send_confirmed("orders", "2");
  EXPECT_THROW(c.send_confirmed("orders", "3"), Error);
  c.declare("orders", QueueOptions{2, 0, Overflow::reject});  // same options: fine
}

TEST(DaemonTest, DisconnectedClientsReleaseTheirFileDescriptors) {
  Daemon d;
  Client first(ClientOptions{d.address(), "first", seconds(30)});
  first.sync();
  const int baseline = d.open_fds();
  ASSERT_GT(baseline, 0);
  for (int i = 0; i < 50; ++i) {
    Client c(ClientOptions{d.address(), "churn", seconds(30)});
    c.send("churn", "x");
  }
  EXPECT_EQ(first.receive_batch("churn", 100, seconds(30)).size(), 50u);
  // The closes are noticed asynchronously; wait (generously) for the count to settle.
  const auto deadline = std::chrono::steady_clock::now() + seconds(30);
  while (d.open_fds() != baseline && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(d.open_fds(), baseline);
}

}  // namespace
}  // namespace qbus::testing
