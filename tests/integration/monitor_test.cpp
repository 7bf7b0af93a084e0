// `qbusctl monitor` on a live daemon: it sees sends, deliveries and direct messages of other
// processes, filters by pattern, loses (and counts) what it reads too slowly without
// slowing the producer, and is refused to those the admin socket refuses.
#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <qbus/client.hpp>

#include <cstring>
#include <optional>
#include <sstream>
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

std::vector<json> json_lines(const std::string& text) {
  std::vector<json> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) out.push_back(json::parse(line));
  }
  return out;
}

class MonitorTest : public ::testing::Test {
 protected:
  explicit MonitorTest(DaemonOptions o = {}) : daemon_(std::move(o)) {}
  std::string admin_path() const { return daemon_.dir().file("admin.sock"); }
  Client connect(const std::string& name) {
    return Client(ClientOptions{daemon_.address(), name, seconds(30)});
  }
  std::vector<std::string> monitor_argv(std::vector<std::string> args) const {
    std::vector<std::string> argv{qbusctl_path(), "--admin-address", "unix:" + admin_path(),
                                  "monitor"};
    argv.insert(argv.end(), args.begin(), args.end());
    return argv;
  }
  // Runs `qbusctl monitor ARGS` on a thread; returns once qbusd has attached it (its log
  // says so: the n-th "monitor attached").
  std::thread start_monitor(std::vector<std::string> args, Result& result, int nth = 1) {
    std::thread t([this, args, &result] { result = run(monitor_argv(args)); });
    EXPECT_TRUE(eventually([&] { return attached() >= nth; })) << daemon_.log();
    return t;
  }
  int attached() const {
    const std::string log = daemon_.log();
    int n = 0;
    for (auto at = log.find("monitor attached"); at != std::string::npos;
         at = log.find("monitor attached", at + 1))
      ++n;
    return n;
  }

  Daemon daemon_;
};

TEST_F(MonitorTest, SeesSendsDeliveriesAndDirectMessagesOfOtherProcesses) {
  auto consumer = connect("consumer");
  consumer.sync();  // connected, so that its pid has an inbox to be sent to
  Result monitor;
  auto t = start_monitor({"--json", "--count", "4"}, monitor);
  const pid_t me = ::getpid();
  const pid_t producer = spawn([&] {
    auto p = connect("producer");
    p.send("orders", "hello monitor");
    p.send_to_pid(static_cast<std::uint32_t>(me), "psst");
    p.sync();
    return 0;
  });
  ASSERT_EQ(wait_exit(producer), 0);
  ASSERT_TRUE(consumer.receive("orders", seconds(30)).has_value());
  ASSERT_TRUE(consumer.receive_direct(seconds(30)).has_value());
  t.join();
  ASSERT_EQ(monitor.exit_code, 0) << monitor.err;
  const auto events = json_lines(monitor.out);
  ASSERT_EQ(events.size(), 4u) << monitor.out;

  const auto find = [&](const std::string& event, const std::string& where) -> const json* {
    for (const auto& e : events) {
      if (e["event"] == event && (e.value("key", "") == where || e.value("target", "") == where)) {
        return &e;
      }
    }
    return nullptr;
  };
  const json* send = find("send", "orders");
  ASSERT_NE(send, nullptr) << monitor.out;
  EXPECT_EQ((*send)["pid"], producer);
  EXPECT_EQ((*send)["uid"], ::getuid());
  EXPECT_EQ((*send)["size"], 13);
  EXPECT_EQ((*send)["payload"], "hello monitor");
  EXPECT_FALSE((*send)["truncated"].get<bool>());
  EXPECT_EQ((*send)["transport"], "unix");
  EXPECT_TRUE((*send)["time"].get<std::string>().ends_with("Z"));

  const std::string target = "@" + std::to_string(me);
  const json* direct = find("direct", target);
  ASSERT_NE(direct, nullptr) << monitor.out;
  EXPECT_EQ((*direct)["pid"], producer);
  EXPECT_EQ((*direct)["payload"], "psst");

  const json* delivered = find("deliver", "orders");
  ASSERT_NE(delivered, nullptr) << monitor.out;
  EXPECT_EQ((*delivered)["pid"], me);
  EXPECT_EQ((*delivered)["from_pid"], producer);
  EXPECT_EQ((*delivered)["payload"], "hello monitor");

  const json* delivered_direct = find("deliver", target);
  ASSERT_NE(delivered_direct, nullptr) << monitor.out;
  EXPECT_EQ((*delivered_direct)["pid"], me);
  EXPECT_EQ((*delivered_direct)["from_pid"], producer);
}

TEST_F(MonitorTest, APatternShowsOnlyWhatMatchesAndPayloadsAreCut) {
  Result monitor;
  auto t = start_monitor({"orders.*", "--payload-bytes", "4", "--count", "1"}, monitor);
  auto p = connect("producer");
  p.send("audit", "not shown");
  p.send("orders.eu", std::string("abc\x01\xff-tail", 10));
  p.sync();
  t.join();
  ASSERT_EQ(monitor.exit_code, 0) << monitor.err;
  // One line for people: what, who, where, size and the payload's first bytes, escaped.
  EXPECT_NE(monitor.out.find("send"), std::string::npos) << monitor.out;
  EXPECT_NE(monitor.out.find("pid " + std::to_string(::getpid())), std::string::npos)
      << monitor.out;
  EXPECT_NE(monitor.out.find("-> orders.eu 10 B \"abc\\x01\"..."), std::string::npos)
      << monitor.out;
  EXPECT_EQ(monitor.out.find("audit"), std::string::npos) << monitor.out;
}

TEST_F(MonitorTest, AMonitorThatNeverReadsLosesEventsCountedAndTheProducerGoesOn) {
  // A raw admin connection that asks for a monitor and then reads nothing for a while.
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::strncpy(sa.sun_path, admin_path().c_str(), sizeof(sa.sun_path) - 1);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)), 0);
  const std::string ask = R"({"request": "monitor", "payload_bytes": 16})"
                          "\n";
  ASSERT_EQ(::send(fd, ask.data(), ask.size(), MSG_NOSIGNAL), static_cast<ssize_t>(ask.size()));
  std::string in;
  const auto next_line = [&]() -> std::optional<std::string> {
    while (in.find('\n') == std::string::npos) {
      char buf[65536];
      const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
      if (n <= 0) return std::nullopt;
      in.append(buf, static_cast<std::size_t>(n));
    }
    std::string line = in.substr(0, in.find('\n'));
    in.erase(0, line.size() + 1);
    return line;
  };
  const auto answer = next_line();
  ASSERT_TRUE(answer.has_value());
  EXPECT_TRUE(json::parse(*answer)["ok"].get<bool>()) << *answer;

  // Far more events than the monitor's buffer and socket hold; all accepted.
  constexpr int kMessages = 50'000;
  auto p = connect("producer");
  {
    Client::Batch b(p);
    for (int i = 0; i < kMessages; ++i)
      p.send("firehose", "message " + std::to_string(i));
  }
  p.sync();
  EXPECT_EQ(p.send_failures().count, 0u);
  const json stats = json::parse(run({qbusctl_path(), "--admin-address", "unix:" + admin_path(),
                                      "--json", "queue", "firehose"})
                                     .out);
  EXPECT_EQ(stats["queue"]["depth"], kMessages) << stats.dump();

  // Now it reads: every event is either shown or counted as dropped, never both, never lost.
  std::uint64_t shown = 0, dropped = 0;
  std::int64_t last = -1;
  bool ordered = true;
  while (shown + dropped < kMessages) {
    const auto line = next_line();
    ASSERT_TRUE(line.has_value()) << shown << " shown, " << dropped << " dropped";
    const json e = json::parse(*line);
    if (e["event"] == "dropped") {
      dropped += e["count"].get<std::uint64_t>();
      continue;
    }
    ASSERT_EQ(e["event"], "send") << *line;
    // Shown in order: "message N", cut to 16 bytes.
    const std::string payload = e["payload"];
    const auto n = std::stoll(payload.substr(std::strlen("message ")));
    ordered = ordered && n > last;
    last = n;
    ++shown;
  }
  ::close(fd);
  EXPECT_TRUE(ordered);
  EXPECT_GT(dropped, 0u);
  EXPECT_GT(shown, 0u);
  EXPECT_EQ(shown + dropped, static_cast<std::uint64_t>(kMessages));
}

class MonitorAccessTest : public MonitorTest {
 protected:
  // The admin socket's file lets everyone connect: qbusd's own check must refuse.
  MonitorAccessTest() : MonitorTest(DaemonOptions{R"({"admin": {"mode": "0666"}})"}) {}
};

TEST_F(MonitorAccessTest, SomeoneNotAllowedIsRefused) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run qbusctl as another uid";
  ::chmod(daemon_.dir().path().c_str(), 0755);  // let uid 65534 reach the socket
  const auto argv = monitor_argv({"--count", "1"});
  const pid_t other = spawn([&] {
    if (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0) return 10;
    const Result r = run(argv);
    if (r.exit_code != 1) return 1;
    if (r.err.find("permission_denied") == std::string::npos) return 2;
    if (!r.out.empty()) return 3;
    return 0;
  });
  EXPECT_EQ(wait_exit(other), 0);
  EXPECT_TRUE(daemon_.wait_for_log("admin socket: refused pid")) << daemon_.log();
  EXPECT_EQ(attached(), 0);
}

}  // namespace
}  // namespace qbus::testing
