#include "daemon.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string_view>
#include <thread>

namespace qbus::testing {
namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void die(const std::string& what) {
  throw std::runtime_error(what + ": " + std::strerror(errno));
}

std::vector<char*> c_argv(std::vector<std::string>& args) {
  std::vector<char*> v;
  for (auto& a : args)
    v.push_back(a.data());
  v.push_back(nullptr);
  return v;
}

}  // namespace

// Receives qbusd's sd_notify datagrams on a thread of its own for the daemon's whole life:
// qbusd's sends block while the socket's queue is full, so it must always be drained.
class Daemon::NotifyCollector {
 public:
  explicit NotifyCollector(int fd) : fd_(fd), thread_([this] { loop(); }) {}
  ~NotifyCollector() {
    done_ = true;
    thread_.join();
    ::close(fd_);
  }

  std::vector<std::string> messages() const {
    std::lock_guard lock(mutex_);
    return messages_;
  }

  std::optional<std::size_t> wait_for(const std::string& needle, std::size_t from,
                                      std::chrono::milliseconds timeout) const {
    std::unique_lock lock(mutex_);
    std::optional<std::size_t> found;
    changed_.wait_for(lock, timeout, [&] {
      for (std::size_t i = from; i < messages_.size() && !found; ++i) {
        if (messages_[i].find(needle) != std::string::npos) found = i;
      }
      return found.has_value();
    });
    return found;
  }

 private:
  void loop() {
    while (!done_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      char buf[4096];
      const ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) continue;
      {
        std::lock_guard lock(mutex_);
        messages_.emplace_back(buf, static_cast<std::size_t>(n));
      }
      changed_.notify_all();
    }
  }

  int fd_;
  std::atomic<bool> done_{false};
  mutable std::mutex mutex_;
  mutable std::condition_variable changed_;
  std::vector<std::string> messages_;
  std::thread thread_;  // last: starts once the rest exists
};

std::string qbusd_path() {
  return QBUS_DAEMON_PATH;
}
std::string qbusctl_path() {
  return QBUS_CTL_PATH;
}

TempDir::TempDir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "qbus-test-XXXXXX").string();
  if (!::mkdtemp(tmpl.data())) die("mkdtemp");
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

Daemon::Daemon(DaemonOptions options)
    : socket_path_(options.socket_path.empty() ? dir_.file("qbus.sock") : options.socket_path) {
  const std::string notify_path = dir_.file("notify.sock");
  int notify = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (notify < 0) die("socket");
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::strncpy(sa.sun_path, notify_path.c_str(), sizeof(sa.sun_path) - 1);
  if (::bind(notify, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) die("bind notify");

  std::vector<std::string> args = options.wrapper;
  args.push_back(qbusd_path());
  if (options.pass_socket) {
    args.push_back("--socket");
    args.push_back(socket_path());
  }
  if (!options.log_level.empty()) {
    args.push_back("--log-level");
    args.push_back(options.log_level);
  }
  if (!options.bus.empty()) {
    args.push_back("--bus");
    args.push_back(options.bus);
  }
  args.push_back("--state-dir");
  args.push_back(options.state_dir.empty() ? dir_.file("state") : options.state_dir);
  if (!options.config_json.empty()) {
    std::ofstream(dir_.file("qbusd.json")) << options.config_json;
    args.push_back("--config");
    args.push_back(dir_.file("qbusd.json"));
  }
  for (auto& a : options.extra_args)
    args.push_back(a);
  const std::string log_path = dir_.file("qbusd.log");

  pid_ = ::fork();
  if (pid_ < 0) die("fork");
  if (pid_ == 0) {
    int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd >= 0) ::dup2(fd, 2);
    if (fd > 2) ::close(fd);
    ::setenv("NOTIFY_SOCKET", notify_path.c_str(), 1);
    for (auto& e : options.env)
      ::putenv(e.data());
    if (options.watchdog_usec > 0) {
      ::setenv("WATCHDOG_USEC", std::to_string(options.watchdog_usec).c_str(), 1);
      ::setenv("WATCHDOG_PID", std::to_string(::getpid()).c_str(), 1);
    }
    if (!options.listen_fds.empty()) {
      // Out of the way first, so that moving one to 3 + i never closes another.
      std::vector<int> high;
      for (int lfd : options.listen_fds)
        high.push_back(::fcntl(lfd, F_DUPFD, 100));
      for (std::size_t i = 0; i < high.size(); ++i) {
        ::dup2(high[i], 3 + static_cast<int>(i));
        ::close(high[i]);
      }
      ::setenv("LISTEN_FDS", std::to_string(high.size()).c_str(), 1);
      ::setenv("LISTEN_PID", std::to_string(::getpid()).c_str(), 1);
      if (!options.listen_fdnames.empty()) {
        ::setenv("LISTEN_FDNAMES", options.listen_fdnames.c_str(), 1);
      }
    }
    auto argv = c_argv(args);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }

  if (options.keep_notify || !options.wait_ready) {
    notify_ = std::make_unique<NotifyCollector>(notify);
    if (!options.wait_ready) return;
    const auto deadline = Clock::now() + std::chrono::seconds(30);
    while (!notify_->wait_for("READY=1", 0, std::chrono::milliseconds(100))) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        throw std::runtime_error("qbusd exited before it was ready:\n" + log());
      }
      if (Clock::now() > deadline) {
        throw std::runtime_error("qbusd did not report READY=1 within 30 s:\n" + log());
      }
    }
    return;
  }

  const auto deadline = Clock::now() + std::chrono::seconds(30);
  std::string got;
  while (got.find("READY=1") == std::string::npos) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      ::close(notify);
      throw std::runtime_error("qbusd exited before it was ready:\n" + log());
    }
    if (Clock::now() > deadline) {
      ::close(notify);
      throw std::runtime_error("qbusd did not report READY=1 within 30 s:\n" + log());
    }
    pollfd p{notify, POLLIN, 0};
    if (::poll(&p, 1, 100) > 0) {
      char buf[4096];
      const ssize_t n = ::recv(notify, buf, sizeof(buf), 0);
      if (n > 0) got.append(buf, static_cast<std::size_t>(n));
    }
  }
  ::close(notify);
}

std::vector<std::string> Daemon::notifications() const {
  return notify_ ? notify_->messages() : std::vector<std::string>{};
}

std::optional<std::size_t> Daemon::wait_for_notify(const std::string& needle, std::size_t from,
                                                   std::chrono::milliseconds timeout) const {
  if (!notify_) throw std::logic_error("wait_for_notify needs DaemonOptions::keep_notify");
  return notify_->wait_for(needle, from, timeout);
}

Daemon::~Daemon() {
  if (pid_ <= 0) return;
  // A clean stop runs the daemon's shutdown path (and a sanitizer build's leak check) after
  // every test; anything else is a failure of that test, shown with the daemon's log.
  const int rc = stop();
  if (rc != 0) {
    std::fprintf(stderr, "qbusd did not exit cleanly (status %d); its log:\n%s\n", rc,
                 log().c_str());
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    std::_Exit(99);
  }
}

std::string Daemon::log() const {
  std::ifstream f(dir_.file("qbusd.log"));
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string Daemon::tcp_address() const {
  const std::string text = log();
  const std::string marker = " and tcp ";
  const auto at = text.find(marker);
  if (at == std::string::npos) return {};
  const auto start = at + marker.size();
  return "tcp:" + text.substr(start, text.find_first_of(" \n", start) - start);
}

bool Daemon::wait_for_log(const std::string& needle, std::chrono::milliseconds timeout) const {
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    if (log().find(needle) != std::string::npos) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return log().find(needle) != std::string::npos;
}

int Daemon::stop() {
  if (pid_ <= 0) return -1;
  ::kill(pid_, SIGTERM);
  const auto deadline = Clock::now() + std::chrono::seconds(30);
  int status = 0;
  while (::waitpid(pid_, &status, WNOHANG) == 0) {
    if (Clock::now() > deadline) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  pid_ = -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int Daemon::open_fds() const {
  int n = 0;
  DIR* d = ::opendir(("/proc/" + std::to_string(pid_) + "/fd").c_str());
  if (!d) return -1;
  while (auto* e = ::readdir(d)) {
    if (e->d_name[0] != '.') ++n;
  }
  ::closedir(d);
  return n;
}

int Daemon::open_regions() const {
  const std::string dir = "/proc/" + std::to_string(pid_) + "/fd";
  int n = 0;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return -1;
  while (auto* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    char target[256] = {};
    const auto len = ::readlink((dir + "/" + e->d_name).c_str(), target, sizeof(target) - 1);
    if (len > 0 && std::string_view(target, static_cast<std::size_t>(len)).starts_with("/memfd:")) {
      ++n;
    }
  }
  ::closedir(d);
  return n;
}

long Daemon::rss_bytes() const {
  std::ifstream status("/proc/" + std::to_string(pid_) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.starts_with("VmRSS:")) return std::stol(line.substr(6)) * 1024;
  }
  return -1;
}

Result run(const std::vector<std::string>& argv_in, const std::string& input,
           const std::vector<std::string>& env) {
  ::signal(SIGPIPE, SIG_IGN);  // a child that exits early must not kill the test
  int in_pipe[2], out_pipe[2], err_pipe[2];
  if (::pipe2(in_pipe, O_CLOEXEC) || ::pipe2(out_pipe, O_CLOEXEC) || ::pipe2(err_pipe, O_CLOEXEC)) {
    die("pipe");
  }
  auto args = argv_in;
  const pid_t pid = ::fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    ::dup2(in_pipe[0], 0);
    ::dup2(out_pipe[1], 1);
    ::dup2(err_pipe[1], 2);
    for (const auto& e : env)
      ::putenv(const_cast<char*>(e.c_str()));
    auto argv = c_argv(args);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(in_pipe[0]);
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  // Feed stdin and drain both outputs together so no pipe can fill up and stall.
  std::size_t written = 0;
  int in_fd = in_pipe[1];
  if (input.empty()) {
    ::close(in_fd);
    in_fd = -1;
  }
  Result r;
  bool out_open = true, err_open = true;
  while (out_open || err_open || in_fd >= 0) {
    pollfd p[3] = {{out_open ? out_pipe[0] : -1, POLLIN, 0},
                   {err_open ? err_pipe[0] : -1, POLLIN, 0},
                   {in_fd, POLLOUT, 0}};
    if (::poll(p, 3, -1) < 0) continue;
    char buf[65536];
    for (int i = 0; i < 2; ++i) {
      if (p[i].revents & (POLLIN | POLLHUP)) {
        const ssize_t n = ::read(p[i].fd, buf, sizeof(buf));
        if (n > 0) {
          (i == 0 ? r.out : r.err).append(buf, static_cast<std::size_t>(n));
        } else {
          (i == 0 ? out_open : err_open) = false;
        }
      }
    }
    if (in_fd >= 0 && (p[2].revents & (POLLOUT | POLLERR | POLLHUP))) {
      const ssize_t n = ::write(in_fd, input.data() + written, input.size() - written);
      if (n > 0) written += static_cast<std::size_t>(n);
      if (n <= 0 || written == input.size()) {
        ::close(in_fd);
        in_fd = -1;
      }
    }
  }
  ::close(out_pipe[0]);
  ::close(err_pipe[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

}  // namespace qbus::testing
