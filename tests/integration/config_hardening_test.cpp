// Configuration hardening against the real qbusd: a token file someone else owns is
// refused, --check-config runs the checks startup runs, and a reload of something that is
// not a regular file (a FIFO, a link to /dev/zero) neither stalls the broker nor grows its
// memory. Everything synchronises on log lines and answers, never on sleeps.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <qbus/client.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "daemon.hpp"
#include "qbus/proto/buffer.hpp"
#include "qbus/proto/codec.hpp"

namespace qbus::testing {
namespace {

using std::chrono::seconds;
using Clock = std::chrono::steady_clock;

constexpr const char* kNoSuchGroup = "qbus-test-no-such-group";

void write_file(const std::string& path, const std::string& text, mode_t mode = 0644) {
  { std::ofstream(path, std::ios::trunc) << text; }
  ::chmod(path.c_str(), mode);
}

// A connected Unix stream socket whose reads give up after 30 s, so that a stalled broker
// fails the test instead of hanging it.
int connect_unix(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::strncpy(sa.sun_path, path.c_str(), sizeof(sa.sun_path) - 1);
  if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
    throw std::runtime_error("cannot connect to " + path + ": " + std::strerror(errno));
  }
  timeval tv{30, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  return fd;
}

// One admin request and its answer line (empty when none came).
std::string admin_request(const std::string& path, const std::string& request) {
  const int fd = connect_unix(path);
  const std::string line = request + "\n";
  std::string answer;
  if (::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size())) {
    char c;
    while (::read(fd, &c, 1) == 1 && c != '\n')
      answer += c;
  }
  ::close(fd);
  return answer;
}

// HELLO then PING on a raw connection: true when the broker answers PONG.
bool ping_answers(const std::string& socket_path) {
  const int fd = connect_unix(socket_path);
  proto::ByteBuffer out;
  proto::append_hello(out, 1, proto::Hello{1, 1, "config-hardening", ""});
  proto::append_empty(out, proto::FrameType::ping, 2);
  const auto bytes = out.readable();
  bool ok =
      ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size());
  proto::ByteBuffer in;
  bool pong = false;
  const auto deadline = Clock::now() + seconds(30);
  while (ok && !pong && Clock::now() < deadline) {
    auto hr = proto::decode_header(in.readable(), proto::kMaxBodyCeiling);
    if (hr.status == proto::HeaderStatus::bad) break;
    if (hr.status == proto::HeaderStatus::complete &&
        in.size() >= proto::kHeaderSize + hr.header.body_size) {
      pong = hr.header.type == proto::FrameType::pong && hr.header.correlation == 2;
      in.consume(proto::kHeaderSize + hr.header.body_size);
      continue;
    }
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 1000) <= 0) continue;
    auto dst = in.prepare(4096);
    const ssize_t n = ::recv(fd, dst.data(), dst.size(), 0);
    if (n <= 0) break;
    in.commit(static_cast<std::size_t>(n));
  }
  ::close(fd);
  return pong;
}

// The daemon serves: a client's message comes back, and a PING is answered.
void expect_serves(const Daemon& d) {
  Client c(ClientOptions{d.address(), "config-hardening", seconds(30)});
  c.send_confirmed("still-serving", "yes");
  auto m = c.receive("still-serving", seconds(30));
  ASSERT_TRUE(m);
  EXPECT_EQ(m->text(), "yes");
  EXPECT_TRUE(ping_answers(d.socket_path()));
}

// The peak resident size of `pid` (VmHWM): catches memory that grew and was given back.
long peak_rss_bytes(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.starts_with("VmHWM:")) return std::stol(line.substr(6)) * 1024;
  }
  return -1;
}

// limits.max_queues as the admin socket's `config` answer shows it; 0 without an answer.
std::uint64_t configured_max_queues(const Daemon& d) {
  const auto answer = admin_request(d.dir().file("admin.sock"), R"({"request":"config"})");
  const std::string field = "\"max_queues\":";
  const auto at = answer.find(field);
  if (answer.find("\"ok\":true") == std::string::npos || at == std::string::npos) return 0;
  return std::stoull(answer.substr(at + field.size()));
}

// The config file replaced by something else at the same path.
void replace_with_fifo(const std::string& path) {
  ASSERT_EQ(::unlink(path.c_str()), 0);
  ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0) << std::strerror(errno);
}
void replace_with_link(const std::string& path, const std::string& target) {
  ASSERT_EQ(::unlink(path.c_str()), 0);
  ASSERT_EQ(::symlink(target.c_str(), path.c_str()), 0) << std::strerror(errno);
}
void replace_with_text(const std::string& path, const std::string& text) {
  ASSERT_EQ(::unlink(path.c_str()), 0);
  write_file(path, text);
}

// A qbusd that does start must not hang the test: `timeout` ends it.
Result run_qbusd(std::vector<std::string> args) {
  args.insert(args.begin(), {"/usr/bin/timeout", "60", qbusd_path()});
  return run(args);
}

// ---- token file ownership -------------------------------------------------------------

TEST(ConfigHardening, TokenFileOwnedByAnotherUidIsRefusedAtStartupAndByCheckConfig) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to give the token file to uid 65534";
  TempDir dir;
  const auto token = dir.file("token");
  write_file(token, "secret-token\n", 0600);
  ASSERT_EQ(::chown(token.c_str(), 65534, 65534), 0) << std::strerror(errno);
  const auto config = dir.file("qbusd.json");
  write_file(config, R"({"tcp": {"listen": "127.0.0.1:0", "token_file": ")" + token + R"("}})");

  const auto started =
      run_qbusd({"--config", config, "--socket", dir.file("s"), "--log-level", "debug"});
  EXPECT_EQ(started.exit_code, 1) << started.err;
  EXPECT_NE(started.err.find("token file " + token + " is owned by uid 65534"), std::string::npos)
      << started.err;
  EXPECT_EQ(std::count(started.err.begin(), started.err.end(), '\n'), 1) << started.err;

  const auto checked = run_qbusd({"--check-config", "--config", config});
  EXPECT_EQ(checked.exit_code, 1) << checked.out;
  EXPECT_EQ(checked.err, started.err);
}

// ---- --check-config runs startup's checks ---------------------------------------------

TEST(ConfigHardening, CheckConfigRefusesAnAdminGroupThatDoesNotExistAsStartupDoes) {
  TempDir dir;
  const auto config = dir.file("qbusd.json");
  write_file(config, std::string(R"({"admin": {"group": ")") + kNoSuchGroup + R"("}})");

  const auto checked = run_qbusd({"--check-config", "--config", config});
  EXPECT_NE(checked.exit_code, 0) << checked.out;
  EXPECT_NE(checked.err.find("admin.group"), std::string::npos) << checked.err;
  EXPECT_NE(checked.err.find(kNoSuchGroup), std::string::npos) << checked.err;
  EXPECT_EQ(checked.out.find("configuration OK"), std::string::npos) << checked.out;

  // The same line and exit code as a real start, which binds nothing.
  const auto started = run_qbusd({"--config", config, "--socket", dir.file("s")});
  EXPECT_EQ(started.exit_code, checked.exit_code);
  EXPECT_EQ(started.err, checked.err);
  EXPECT_FALSE(std::filesystem::exists(dir.file("s")));
}

// ---- reload of something that is not a regular file -----------------------------------

class ReloadHardening : public ::testing::Test {
 protected:
  ReloadHardening() : daemon_(DaemonOptions{.config_json = R"({"limits": {"max_queues": 100}})"}) {}

  void hup() { ASSERT_EQ(::kill(daemon_.pid(), SIGHUP), 0); }

  // A valid, changed file still reloads afterwards, and the admin socket shows it.
  void expect_valid_reload_applies() {
    replace_with_text(daemon_.config_path(), R"({"limits": {"max_queues": 7}})");
    hup();
    ASSERT_TRUE(daemon_.wait_for_log("limits.max_queues: 100 -> 7")) << daemon_.log();
    ASSERT_TRUE(daemon_.wait_for_log("configuration reloaded from " + daemon_.config_path()));
    EXPECT_EQ(configured_max_queues(daemon_), 7u);
  }

  std::string refused_line() const {
    return "reload failed, the running configuration stays: config file " + daemon_.config_path() +
           " is not a regular file";
  }

  Daemon daemon_;
};

TEST_F(ReloadHardening, AFifoIsRefusedAndTheBrokerKeepsServing) {
  ASSERT_EQ(configured_max_queues(daemon_), 100u);
  replace_with_fifo(daemon_.config_path());
  hup();
  const bool refused = daemon_.wait_for_log(refused_line());
  if (!refused) {
    // Unstick a daemon blocked opening the FIFO, so the failure is reported, not a hang.
    const int w = ::open(daemon_.config_path().c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    if (w >= 0) ::close(w);
  }
  ASSERT_TRUE(refused) << daemon_.log();
  expect_serves(daemon_);
  EXPECT_EQ(configured_max_queues(daemon_), 100u);
  expect_valid_reload_applies();
  expect_serves(daemon_);
}

TEST_F(ReloadHardening, ALinkToDevZeroIsRefusedWithoutGrowingMemory) {
  constexpr long kBound = 64l << 20;
  const long before = daemon_.rss_bytes();
  ASSERT_GT(before, 0);
  replace_with_link(daemon_.config_path(), "/dev/zero");
  hup();
  ASSERT_TRUE(daemon_.wait_for_log(refused_line())) << daemon_.log().substr(0, 4096);
  EXPECT_LT(peak_rss_bytes(daemon_.pid()), before + kBound);
  expect_serves(daemon_);
  EXPECT_EQ(configured_max_queues(daemon_), 100u);
  EXPECT_LT(daemon_.rss_bytes(), before + kBound);
  expect_valid_reload_applies();
}

TEST_F(ReloadHardening, AFileOverTheSizeBoundIsRefusedNamingTheBound) {
  // Valid JSON, so that only the bound can refuse it: {} and 2 MiB of blanks.
  replace_with_text(daemon_.config_path(),
                    R"({"limits": {"max_queues": 5}})" + std::string(2u << 20, ' '));
  hup();
  ASSERT_TRUE(daemon_.wait_for_log("reload failed, the running configuration stays: config file " +
                                   daemon_.config_path() + " is larger than 1048576 bytes"))
      << daemon_.log();
  EXPECT_EQ(configured_max_queues(daemon_), 100u);
  expect_serves(daemon_);
  expect_valid_reload_applies();
}

TEST_F(ReloadHardening, ManySighupsApplyTheChangeOnceAndReloadsNeverOverlap) {
  replace_with_text(daemon_.config_path(), R"({"limits": {"max_queues": 7}})");
  for (int i = 0; i < 50; ++i)
    hup();
  ASSERT_TRUE(daemon_.wait_for_log("limits.max_queues: 100 -> 7")) << daemon_.log();
  expect_serves(daemon_);
  // In the log, every reload that starts finishes before the next one starts (the last one
  // may still be running), and the change is applied once.
  std::istringstream lines(daemon_.log());
  std::string line;
  int running = 0, started = 0, changed = 0;
  while (std::getline(lines, line)) {
    if (line.find("SIGHUP: reloading ") != std::string::npos) {
      EXPECT_EQ(running, 0) << "a reload started while another ran:\n" << daemon_.log();
      ++running;
      ++started;
    } else if (line.find("configuration reloaded from ") != std::string::npos) {
      EXPECT_EQ(running, 1) << daemon_.log();
      running = 0;
    }
    if (line.find("limits.max_queues: 100 -> 7") != std::string::npos) ++changed;
  }
  EXPECT_GE(started, 1);
  EXPECT_LE(started, 50);
  EXPECT_EQ(changed, 1) << daemon_.log();
  EXPECT_EQ(configured_max_queues(daemon_), 7u);
}

TEST_F(ReloadHardening, StoppingWhileAReloadIsUnderWayExitsCleanly) {
  hup();
  EXPECT_EQ(daemon_.stop(), 0) << daemon_.log();
}

}  // namespace
}  // namespace qbus::testing
