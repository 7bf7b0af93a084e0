// qbusd under a service manager: the unit files, socket activation (LISTEN_FDS, also
// through systemd-socket-activate), sd_notify readiness, status and watchdog, and SIGHUP
// reload. Everything synchronises on notify messages and log lines, never on sleeps.
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <qbus/client.hpp>

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "daemon.hpp"

namespace qbus::testing {
namespace {

using std::chrono::seconds;
namespace fs = std::filesystem;

const std::string kUnitDir = std::string(QBUS_SOURCE_DIR) + "/systemd";

std::string find_tool(const std::string& name) {
  for (const char* dir : {"/usr/bin", "/bin", "/usr/sbin", "/sbin"}) {
    const std::string path = std::string(dir) + "/" + name;
    if (::access(path.c_str(), X_OK) == 0) return path;
  }
  return {};
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::trunc) << text;
}

std::uint64_t monotonic_usec() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000u +
         static_cast<std::uint64_t>(ts.tv_nsec) / 1'000u;
}

// A Unix socket bound at `path`, of `type`, listening or not.
int unix_socket(const std::string& path, int type, bool listening) {
  const int fd = ::socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::strncpy(sa.sun_path, path.c_str(), sizeof(sa.sun_path) - 1);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0 ||
      (listening && ::listen(fd, 16) != 0)) {
    throw std::runtime_error("cannot make test socket " + path + ": " + std::strerror(errno));
  }
  return fd;
}

// Sends one admin request line and returns the answer line.
std::string admin_request(const std::string& path, const std::string& request) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::strncpy(sa.sun_path, path.c_str(), sizeof(sa.sun_path) - 1);
  std::string answer;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0) {
    const std::string line = request + "\n";
    if (::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size())) {
      char c;
      while (::read(fd, &c, 1) == 1 && c != '\n')
        answer.push_back(c);
    }
  }
  ::close(fd);
  return answer;
}

Client connect_to(const std::string& address) {
  return Client(ClientOptions{address, "systemd-test", seconds(30)});
}

// The message comes back: the daemon serves this address.
void expect_serves(const std::string& address) {
  auto c = connect_to(address);
  c.send_confirmed("ping", "pong");
  auto m = c.receive("ping", seconds(30));
  ASSERT_TRUE(m);
  EXPECT_EQ(m->text(), "pong");
}

// ---- unit files -----------------------------------------------------------------------

TEST(SystemdUnits, PassSystemdAnalyzeVerifyWithoutWarnings) {
  const auto analyze = find_tool("systemd-analyze");
  if (analyze.empty()) GTEST_SKIP() << "systemd-analyze is not installed (Debian: systemd)";
  // verify also checks that ExecStart= exists: point it at the qbusd we built.
  TempDir dir;
  std::vector<std::string> argv = {analyze, "verify", "--man=no"};
  for (const char* unit : {"qbusd.service", "qbusd.socket", "qbusd-admin.socket"}) {
    std::string text = read_file(kUnitDir + "/" + unit);
    ASSERT_FALSE(text.empty()) << unit;
    for (auto at = text.find("/usr/sbin/qbusd"); at != std::string::npos;
         at = text.find("/usr/sbin/qbusd", at + 1)) {
      text.replace(at, std::strlen("/usr/sbin/qbusd"), qbusd_path());
    }
    write_file(dir.file(unit), text);
    argv.push_back(dir.file(unit));
  }
  const auto r = run(argv);
  if (r.err.find("Failed to initialize") != std::string::npos) {
    GTEST_SKIP() << "systemd-analyze cannot run here: " << r.err;
  }
  EXPECT_EQ(r.exit_code, 0) << r.err;
  // Unknown keys and bad values are only warnings (exit 0): there must be none.
  EXPECT_EQ(r.err, "");
  EXPECT_EQ(r.out, "");
}

TEST(SystemdUnits, SocketUnitsUseTheContractNamesAndPaths) {
  const auto main_unit = read_file(kUnitDir + "/qbusd.socket");
  EXPECT_NE(main_unit.find("ListenStream=/run/qbus/qbus.sock\n"), std::string::npos);
  EXPECT_NE(main_unit.find("FileDescriptorName=qbus\n"), std::string::npos);
  EXPECT_NE(main_unit.find("SocketMode=0666\n"), std::string::npos);
  const auto admin_unit = read_file(kUnitDir + "/qbusd-admin.socket");
  EXPECT_NE(admin_unit.find("ListenStream=/run/qbus/admin.sock\n"), std::string::npos);
  EXPECT_NE(admin_unit.find("FileDescriptorName=admin\n"), std::string::npos);
  EXPECT_NE(admin_unit.find("SocketMode=0660\n"), std::string::npos);
  EXPECT_NE(admin_unit.find("Service=qbusd.service\n"), std::string::npos);
}

// Expands a seccomp filter group (and the groups in it) the way systemd does.
void expand_filter(const std::string& analyze, const std::string& group,
                   std::set<std::string>& calls) {
  const auto r = run({analyze, "syscall-filter", "--no-pager", group});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::istringstream lines(r.out);
  std::string line;
  std::getline(lines, line);  // the group's own name
  while (std::getline(lines, line)) {
    const auto start = line.find_first_not_of(" \t");
    if (start == std::string::npos || line[start] == '#') continue;
    if (start == 0) break;  // the next group
    const std::string name = line.substr(start, line.find_first_of(" \t", start) - start);
    if (name.front() == '@') {
      expand_filter(analyze, name, calls);
    } else {
      calls.insert(name);
    }
  }
}

TEST(SystemdUnits, SystemServiceFilterAllowsEverySyscallQbusdNeeds) {
  const auto analyze = find_tool("systemd-analyze");
  if (analyze.empty()) GTEST_SKIP() << "systemd-analyze is not installed (Debian: systemd)";
  ASSERT_NE(read_file(kUnitDir + "/qbusd.service").find("SystemCallFilter=@system-service\n"),
            std::string::npos);
  std::set<std::string> allowed;
  expand_filter(analyze, "@system-service", allowed);
  // Regions (memfd, seals, read-only reopen through /proc/self/fd, mappings), peer identity
  // (SO_PEERCRED, SO_PEERPIDFD, pidfd_open, pidfd_send_signal(0)), the fd limit, the
  // socket calls and the event loop, the admin socket's group, and the thread that
  // closes regions (glibc's pthread_create uses clone3 and fails when it is refused).
  for (const char* call : {"memfd_create",
                           "fcntl",
                           "ftruncate",
                           "openat",
                           "mmap",
                           "munmap",
                           "pidfd_open",
                           "pidfd_send_signal",
                           "getsockopt",
                           "setsockopt",
                           "prlimit64",
                           "setrlimit",
                           "socket",
                           "bind",
                           "listen",
                           "accept4",
                           "connect",
                           "getsockname",
                           "sendmsg",
                           "recvmsg",
                           "writev",
                           "epoll_wait",
                           "epoll_ctl",
                           "eventfd2",
                           "timerfd_settime",
                           "rt_sigaction",
                           "clock_gettime",
                           "chown",
                           "fchown",
                           "chmod",
                           "unlink",
                           "mkdir",
                           "clone3",
                           "futex",
                           "set_robust_list"}) {
    EXPECT_TRUE(allowed.count(call)) << call << " is not in @system-service";
  }
}

TEST(SystemdUnits, SysusersAndTmpfilesCreateTheUserGroupsAndRuntimeDirectory) {
  const auto sysusers = find_tool("systemd-sysusers");
  const auto tmpfiles = find_tool("systemd-tmpfiles");
  if (sysusers.empty() || tmpfiles.empty()) {
    GTEST_SKIP() << "systemd-sysusers/systemd-tmpfiles are not installed (Debian: systemd)";
  }
  TempDir root;
  fs::create_directories(root.file("etc"));
  auto r = run({sysusers, "--root=" + root.path(), kUnitDir + "/qbus.sysusers"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto passwd = read_file(root.file("etc/passwd"));
  const auto group = read_file(root.file("etc/group"));
  const auto has_line = [](const std::string& text, const std::string& prefix,
                           const std::string& suffix) {
    std::istringstream lines(text);
    for (std::string line; std::getline(lines, line);) {
      if (line.starts_with(prefix) && line.ends_with(suffix)) return true;
    }
    return false;
  };
  EXPECT_TRUE(has_line(passwd, "qbus:x:", ":/var/lib/qbus:/usr/sbin/nologin")) << passwd;
  EXPECT_TRUE(has_line(group, "qbus:x:", ":")) << group;
  // qbusd may give a socket it binds itself to the admin group.
  EXPECT_TRUE(has_line(group, "qbus-admin:x:", ":qbus")) << group;

  r = run({tmpfiles, "--root=" + root.path(), "--create", kUnitDir + "/qbus.tmpfiles"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  struct stat st {};
  ASSERT_EQ(::stat(root.file("run/qbus").c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0755u);
}

// ---- socket activation ----------------------------------------------------------------

TEST(SocketActivation, SystemdSocketActivateStartsQbusdOnTheFirstClient) {
  const auto activate = find_tool("systemd-socket-activate");
  if (activate.empty()) GTEST_SKIP() << "systemd-socket-activate is not installed";
  TempDir sockets;
  const auto main_path = sockets.file("qbus.sock");
  const auto admin_path = sockets.file("admin.sock");
  DaemonOptions o;
  o.wrapper = {activate, "-l",           main_path, "-l", admin_path, "--fdname=qbus:admin",
               "-E",     "NOTIFY_SOCKET"};
  o.pass_socket = false;
  o.wait_ready = false;
  Daemon d(o);
  // The wrapper listens before it runs qbusd; this connection makes it exec qbusd, which
  // then accepts it from the inherited socket.
  ASSERT_TRUE(d.wait_for_log("Listening on " + admin_path));
  expect_serves("unix:" + main_path);
  ASSERT_TRUE(d.wait_for_notify("READY=1"));
  EXPECT_NE(d.log().find("client socket " + main_path + " passed by the service manager"),
            std::string::npos)
      << d.log();
  EXPECT_NE(d.log().find("admin socket " + admin_path + " passed by the service manager"),
            std::string::npos)
      << d.log();
  EXPECT_NE(admin_request(admin_path, R"({"request":"stats"})").find(R"("ok":true)"),
            std::string::npos);
  EXPECT_EQ(d.stop(), 0);
  // The socket files belong to the service manager: qbusd leaves them.
  EXPECT_TRUE(fs::exists(main_path));
  EXPECT_TRUE(fs::exists(admin_path));
}

TEST(SocketActivation, ASingleUnnamedSocketIsTheClientSocket) {
  TempDir sockets;
  const auto path = sockets.file("inherited.sock");
  const int fd = unix_socket(path, SOCK_STREAM, true);
  DaemonOptions o;
  o.listen_fds = {fd};
  o.pass_socket = false;
  Daemon d(o);
  ::close(fd);
  expect_serves("unix:" + path);
  EXPECT_NE(d.log().find("client socket " + path + " passed"), std::string::npos) << d.log();
  // With no admin socket passed, qbusd binds its own beside the client socket.
  EXPECT_TRUE(fs::exists(sockets.file("admin.sock")));
  EXPECT_EQ(d.stop(), 0);
  EXPECT_TRUE(fs::exists(path));
}

TEST(SocketActivation, NamedSocketsArePickedByNameInAnyOrder) {
  TempDir sockets;
  const int admin_fd = unix_socket(sockets.file("a.sock"), SOCK_STREAM, true);
  const int main_fd = unix_socket(sockets.file("m.sock"), SOCK_STREAM, true);
  DaemonOptions o;
  o.listen_fds = {admin_fd, main_fd};
  o.listen_fdnames = "admin:qbus";
  o.pass_socket = false;
  Daemon d(o);
  ::close(admin_fd);
  ::close(main_fd);
  expect_serves("unix:" + sockets.file("m.sock"));
  EXPECT_NE(admin_request(sockets.file("a.sock"), R"({"request":"queues"})").find(R"("ok":true)"),
            std::string::npos);
}

TEST(SocketActivation, ConfiguredSocketPathIsOverriddenByTheInheritedSocketWithAWarning) {
  TempDir sockets;
  const int fd = unix_socket(sockets.file("m.sock"), SOCK_STREAM, true);
  DaemonOptions o;
  o.listen_fds = {fd};
  o.listen_fdnames = "qbus";
  Daemon d(o);  // passes --socket with another path
  ::close(fd);
  expect_serves("unix:" + sockets.file("m.sock"));
  EXPECT_NE(d.log().find("socket.path " + d.socket_path() + " is not used"), std::string::npos)
      << d.log();
  EXPECT_FALSE(fs::exists(d.socket_path()));
}

// qbusd refuses to start with `why` in its one error line.
void expect_refused(DaemonOptions o, const std::string& why) {
  o.pass_socket = false;
  try {
    Daemon d(o);
    FAIL() << "qbusd started; expected: " << why;
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("qbusd: " + why), std::string::npos) << e.what();
  }
}

TEST(SocketActivation, AnInheritedDatagramSocketStopsStartup) {
  TempDir sockets;
  const int fd = unix_socket(sockets.file("dgram.sock"), SOCK_DGRAM, false);
  DaemonOptions o;
  o.listen_fds = {fd};
  o.listen_fdnames = "qbus";
  expect_refused(o, "inherited socket 'qbus' (fd 3) is not a listening Unix stream socket");
  ::close(fd);
}

TEST(SocketActivation, AnInheritedSocketThatDoesNotListenStopsStartup) {
  TempDir sockets;
  const int fd = unix_socket(sockets.file("idle.sock"), SOCK_STREAM, false);
  DaemonOptions o;
  o.listen_fds = {fd};
  expect_refused(o, "inherited socket 'unknown' (fd 3) is not a listening Unix stream socket");
  ::close(fd);
}

TEST(SocketActivation, AnUnknownNameAmongSeveralStopsStartup) {
  TempDir sockets;
  const int a = unix_socket(sockets.file("a.sock"), SOCK_STREAM, true);
  const int b = unix_socket(sockets.file("b.sock"), SOCK_STREAM, true);
  DaemonOptions o;
  o.listen_fds = {a, b};
  o.listen_fdnames = "qbus:metrics";
  expect_refused(o, "inherited socket 'metrics' (fd 4) has an unknown name");
  o.listen_fdnames = "qbus:qbus";
  expect_refused(o, "inherited socket 'qbus' (fd 4): a second 'qbus' socket");
  ::close(a);
  ::close(b);
}

TEST(SocketActivation, WithoutInheritedSocketsTheDefaultIsTheRuntimeDirectory) {
  TempDir runtime;
  DaemonOptions o;
  o.pass_socket = false;
  o.env = {"RUNTIME_DIRECTORY=" + runtime.path()};
  Daemon d(o);
  expect_serves("unix:" + runtime.file("qbus.sock"));
  EXPECT_TRUE(fs::exists(runtime.file("admin.sock")));
  EXPECT_EQ(d.stop(), 0);
  // Sockets qbusd bound itself are removed when it stops.
  EXPECT_FALSE(fs::exists(runtime.file("qbus.sock")));
}

// ---- sd_notify ------------------------------------------------------------------------

TEST(Notify, ReadyCarriesStatusAndMainPid) {
  DaemonOptions o;
  o.keep_notify = true;
  Daemon d(o);
  const auto ready = d.wait_for_notify("READY=1");
  ASSERT_TRUE(ready);
  const auto m = d.notifications()[*ready];
  EXPECT_NE(m.find("STATUS=listening on " + d.socket_path()), std::string::npos) << m;
  EXPECT_NE(m.find("0 connections, 0 queues"), std::string::npos) << m;
  EXPECT_NE(m.find("MAINPID=" + std::to_string(d.pid())), std::string::npos) << m;
}

TEST(Notify, StatusFollowsConnectionsAndQueues) {
  DaemonOptions o;
  o.keep_notify = true;
  Daemon d(o);
  auto c = connect_to(d.address());
  c.declare("jobs", QueueOptions{});
  EXPECT_TRUE(d.wait_for_notify("STATUS=listening on " + d.socket_path() + " (admin " +
                                d.dir().file("admin.sock") + "); 1 connection, 1 queue"))
      << ::testing::PrintToString(d.notifications());
}

TEST(Notify, WatchdogIsPingedAtHalfTheInterval) {
  DaemonOptions o;
  o.keep_notify = true;
  o.watchdog_usec = 200'000;
  Daemon d(o);
  EXPECT_TRUE(d.wait_for_log("watchdog: pinging every 100 ms"));
  auto ping = d.wait_for_notify("WATCHDOG=1");
  ASSERT_TRUE(ping);
  // Pings keep coming from the event loop, not just one at startup.
  for (int i = 0; i < 3; ++i) {
    ping = d.wait_for_notify("WATCHDOG=1", *ping + 1);
    ASSERT_TRUE(ping) << ::testing::PrintToString(d.notifications());
  }
  expect_serves(d.address());
}

TEST(Notify, AWatchdogMeantForAnotherProcessIsIgnored) {
  DaemonOptions o;
  o.keep_notify = true;
  o.env = {"WATCHDOG_USEC=200000", "WATCHDOG_PID=1"};
  Daemon d(o);
  // The watchdog would be set up, and logged, before READY=1.
  EXPECT_EQ(d.log().find("watchdog:"), std::string::npos) << d.log();
}

TEST(Notify, StoppingIsAnnouncedOnSigterm) {
  DaemonOptions o;
  o.keep_notify = true;
  Daemon d(o);
  EXPECT_EQ(d.stop(), 0);
  EXPECT_TRUE(d.wait_for_notify("STOPPING=1"));
}

// ---- journald -------------------------------------------------------------------------

// Under systemd stderr goes to journald (JOURNAL_STREAM set), which takes a line's priority
// from a leading "<N>". A level name there ("<warning>") stayed in the message and left
// every line at the default priority, info.
TEST(Journal, LinesStartWithTheirSyslogPriority) {
  DaemonOptions o;
  o.config_json = "{}";
  o.keep_notify = true;
  o.env = {"JOURNAL_STREAM=8:12345"};
  Daemon d(o);
  EXPECT_TRUE(d.wait_for_log("<6>qbusd ")) << d.log();
  write_file(d.config_path(), R"({"socket": {"mode": "0600"}})");
  const auto from = d.notifications().size();
  ASSERT_EQ(::kill(d.pid(), SIGHUP), 0);
  const auto reloading = d.wait_for_notify("RELOADING=1", from);
  ASSERT_TRUE(reloading);
  ASSERT_TRUE(d.wait_for_notify("READY=1", *reloading + 1));
  EXPECT_TRUE(d.wait_for_log("<4>socket.mode changed; restart qbusd to apply")) << d.log();
  // Every line starts with a priority journald understands, and nothing else.
  std::istringstream lines(d.log());
  for (std::string line; std::getline(lines, line);) {
    EXPECT_TRUE(line.size() > 3 && line[0] == '<' && line[1] >= '0' && line[1] <= '7' &&
                line[2] == '>')
        << line;
  }
}

// ---- SIGHUP reload --------------------------------------------------------------------

class Reload : public ::testing::Test {
 protected:
  // Starts qbusd with `config` and no --log-level flag (the file decides).
  void start(const std::string& config) {
    DaemonOptions o;
    o.config_json = config;
    o.log_level.clear();
    o.keep_notify = true;
    daemon_ = std::make_unique<Daemon>(o);
  }

  // Rewrites the config file, sends SIGHUP and waits for RELOADING=1 then READY=1.
  void reload(const std::string& config) {
    write_file(daemon_->config_path(), config);
    const auto from = daemon_->notifications().size();
    const auto before = monotonic_usec();
    ASSERT_EQ(::kill(daemon_->pid(), SIGHUP), 0);
    const auto reloading = daemon_->wait_for_notify("RELOADING=1", from);
    ASSERT_TRUE(reloading) << ::testing::PrintToString(daemon_->notifications());
    const auto m = daemon_->notifications()[*reloading];
    const auto at = m.find("MONOTONIC_USEC=");
    ASSERT_NE(at, std::string::npos) << m;
    const auto usec = std::stoull(m.substr(at + std::strlen("MONOTONIC_USEC=")));
    EXPECT_GE(usec, before);
    EXPECT_LE(usec, monotonic_usec());
    ASSERT_TRUE(daemon_->wait_for_notify("READY=1", *reloading + 1));
  }

  bool logged(const std::string& needle) const {
    return daemon_->log().find(needle) != std::string::npos;
  }

  std::unique_ptr<Daemon> daemon_;
};

TEST_F(Reload, ValidFileChangesLogLevelAndDeclaresNewQueues) {
  start(R"({"log": {"level": "info"}})");
  { auto quiet = connect_to(daemon_->address()); }
  EXPECT_FALSE(logged(" connected: ")) << "a debug line at level info";

  reload(R"({"log": {"level": "debug"},
             "queues": [{"key": "jobs", "max_messages": 2, "overflow": "reject"}]})");
  EXPECT_TRUE(logged("log.level: info -> debug")) << daemon_->log();
  EXPECT_TRUE(logged("declared queue 'jobs' (max_messages 2,")) << daemon_->log();
  EXPECT_TRUE(logged("configuration reloaded from " + daemon_->config_path()));

  auto c = connect_to(daemon_->address());
  EXPECT_TRUE(daemon_->wait_for_log(" connected: "));  // debug now
  // The queue exists with the declared options: a different declaration conflicts, and the
  // third message does not fit.
  try {
    c.declare("jobs", QueueOptions{5, 0, Overflow::reject});
    FAIL() << "expected queue_conflict";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::queue_conflict);
  }
  c.send_confirmed("jobs", "1");
  c.send_confirmed("jobs", "2");
  try {
    c.send_confirmed("jobs", "3");
    FAIL() << "expected queue_full";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::queue_full);
  }
  // The admin socket shows the new configuration.
  EXPECT_NE(admin_request(daemon_->dir().file("admin.sock"), R"({"request":"config"})")
                .find(R"("key":"jobs")"),
            std::string::npos);
}

TEST_F(Reload, ShrunkLimitsRefuseNewWorkAndDropNothing) {
  start("{}");
  auto a = connect_to(daemon_->address());
  auto b = connect_to(daemon_->address());
  a.send_confirmed("kept", "x");
  reload(R"({"limits": {"uid_max_connections": 1}})");
  EXPECT_TRUE(logged("limits.uid_max_connections: 1024 -> 1")) << daemon_->log();
  // Both connections and the queued message stay...
  auto m = b.receive("kept", seconds(30));
  ASSERT_TRUE(m);
  EXPECT_EQ(m->text(), "x");
  a.send_confirmed("still", "y");
  // ...and a new connection over the new limit is refused.
  try {
    auto third = connect_to(daemon_->address());
    third.send_confirmed("k", "z");
    FAIL() << "a third connection was admitted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::too_many_connections);
  }
}

TEST_F(Reload, FieldsThatNeedARestartAreNamedAndKept) {
  start(R"({"queues": [{"key": "fixed", "max_messages": 1, "overflow": "reject"}]})");
  reload(R"({"socket": {"mode": "0600"}, "limits": {"max_payload_bytes": 1000},
             "queues": [{"key": "fixed", "max_messages": 5, "overflow": "reject"}]})");
  EXPECT_TRUE(logged("socket.mode changed; restart qbusd to apply")) << daemon_->log();
  EXPECT_TRUE(logged("limits.max_payload_bytes changed; restart qbusd to apply"));
  EXPECT_TRUE(logged("queues[0]: queue 'fixed' is already declared with")) << daemon_->log();
  auto c = connect_to(daemon_->address());
  EXPECT_EQ(c.session().max_payload, 1u << 20);
  struct stat st {};
  ASSERT_EQ(::stat(daemon_->socket_path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0666u);
  c.send_confirmed("fixed", "1");
  EXPECT_THROW(c.send_confirmed("fixed", "2"), Error);  // still max_messages 1
}

TEST_F(Reload, InvalidFileIsRejectedAndTheDaemonKeepsServing) {
  start(R"({"queues": [{"key": "jobs", "max_messages": 2, "overflow": "reject"}]})");
  reload(R"({"limits": {"max_queues": 0}})");
  EXPECT_TRUE(logged("reload failed, the running configuration stays: " + daemon_->config_path() +
                     ": limits.max_queues: must be at least 1"))
      << daemon_->log();
  EXPECT_TRUE(daemon_->wait_for_notify("last reload failed: " + daemon_->config_path() +
                                       ": limits.max_queues"));
  expect_serves(daemon_->address());
  auto c = connect_to(daemon_->address());
  try {
    c.declare("jobs", QueueOptions{5, 0, Overflow::reject});
    FAIL() << "the old declaration should still be in force";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::queue_conflict);
  }

  reload("{ not json");
  EXPECT_TRUE(logged("reload failed, the running configuration stays: " + daemon_->config_path() +
                     ": invalid JSON"))
      << daemon_->log();
  expect_serves(daemon_->address());
}

TEST_F(Reload, AMissingAdminGroupKeepsTheRunningOne) {
  start("{}");
  reload(R"({"admin": {"group": "qbus-test-no-such-group"}})");
  EXPECT_TRUE(logged("no group named 'qbus-test-no-such-group'; keeping admin.group ''"))
      << daemon_->log();
  expect_serves(daemon_->address());
}

// The unit's ExecReload= command line, word by word, with the installed qbusd replaced by the
// one we built and $MAINPID by `pid`.
std::vector<std::string> exec_reload_argv(pid_t pid) {
  const auto unit = read_file(kUnitDir + "/qbusd.service");
  const auto at = unit.find("\nExecReload=");
  if (at == std::string::npos) return {};
  const auto start = at + std::strlen("\nExecReload=");
  std::istringstream line(unit.substr(start, unit.find('\n', start) - start));
  std::vector<std::string> argv;
  for (std::string word; line >> word;) {
    if (word == "/usr/sbin/qbusd") word = qbusd_path();
    if (word == "$MAINPID") word = std::to_string(pid);
    argv.push_back(word);
  }
  return argv;
}

// A minimal Debian has no /bin/kill (procps): `systemctl reload qbusd` failed there with
// 203/EXEC. The unit's own command line must reload a running qbusd with nothing but what
// the package installs, and with no PATH at all.
TEST_F(Reload, TheUnitsExecReloadNeedsOnlyQbusd) {
  start("{}");
  const auto argv = exec_reload_argv(daemon_->pid());
  ASSERT_FALSE(argv.empty()) << "no ExecReload= in qbusd.service";
  ASSERT_EQ(argv[0], qbusd_path())
      << "ExecReload= runs " << argv[0] << ", which the qbus package does not install";
  write_file(daemon_->config_path(), R"({"limits": {"uid_max_connections": 1}})");
  const auto from = daemon_->notifications().size();
  const auto r = run(argv, {}, {"PATH=/nonexistent"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  const auto reloading = daemon_->wait_for_notify("RELOADING=1", from);
  ASSERT_TRUE(reloading) << ::testing::PrintToString(daemon_->notifications());
  EXPECT_TRUE(daemon_->wait_for_notify("READY=1", *reloading + 1));
  EXPECT_TRUE(daemon_->wait_for_log("limits.uid_max_connections: 1024 -> 1")) << daemon_->log();
}

TEST(ReloadCommand, ABadOrGonePidIsNamed) {
  // A pid that no longer exists: a child that has been reaped.
  const pid_t gone = ::fork();
  if (gone == 0) ::_exit(0);
  ASSERT_GT(gone, 0);
  int status = 0;
  ASSERT_EQ(::waitpid(gone, &status, 0), gone);
  const auto r = run({qbusd_path(), "--reload", std::to_string(gone)});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err,
            "qbusd: cannot send SIGHUP to process " + std::to_string(gone) + ": No such process\n");

  // 0 and negative numbers would signal process groups; an empty $MAINPID is no pid.
  for (const std::string bad : {"0", "-1", "", "qbusd"}) {
    const auto b = run({qbusd_path(), "--reload", bad});
    EXPECT_NE(b.exit_code, 0) << "--reload '" << bad << "'";
    EXPECT_NE(b.err.find("--reload"), std::string::npos) << b.err;
  }
  // --reload only signals: it takes no daemon options.
  const auto mixed = run({qbusd_path(), "--reload", "1", "--config", "/dev/null"});
  EXPECT_NE(mixed.exit_code, 0);
  EXPECT_NE(mixed.err.find("excludes"), std::string::npos) << mixed.err;
}

TEST(ReloadWithoutFile, BuiltInDefaultsStay) {
  if (fs::exists("/etc/qbus/qbusd.json")) {
    GTEST_SKIP() << "/etc/qbus/qbusd.json exists: qbusd would read it here";
  }
  DaemonOptions o;
  o.keep_notify = true;
  Daemon d(o);
  const auto from = d.notifications().size();
  ASSERT_EQ(::kill(d.pid(), SIGHUP), 0);
  const auto reloading = d.wait_for_notify("RELOADING=1", from);
  ASSERT_TRUE(reloading);
  EXPECT_TRUE(d.wait_for_notify("READY=1", *reloading + 1));
  EXPECT_TRUE(d.wait_for_log("no configuration file in use; the built-in defaults stay"));
}

}  // namespace
}  // namespace qbus::testing
