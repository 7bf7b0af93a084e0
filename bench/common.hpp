// What every qbus-bench mode shares: processes released through pipes, the clock, the
// client connection, the daemon's CPU time and the small number formats of the reports.
// Single-threaded like the bench itself: nothing here is thread-safe, and a forked Child
// owns nothing of its parent but what it inherits across fork().
#pragma once

#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#include <qbus/client.hpp>

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <exception>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace qbus::bench {

using Clock = std::chrono::steady_clock;
using std::chrono::seconds;

inline constexpr char kQueue[] = "bench";
inline constexpr char kStop[] = "\x01STOP";
// A helper process gives up when nothing arrives for this long (the other side died).
inline constexpr auto kIdleTimeout = seconds(120);

// CPU time of a process in seconds (every thread's run time).
double cpu_seconds(pid_t pid);

// A client named qbus-bench, with a 30 s connect timeout.
qbus::Client connect(const std::string& address);

// sync()s `c`: 0 when the broker took every send, else 1 after a line on stderr that
// names `who`.
int sync_and_check(qbus::Client& c, const char* who);

// steady_clock (CLOCK_MONOTONIC, the same in every process on the host) in nanoseconds.
long long now_ns();

double us(double ns);
// a / b, or 0 when b is not positive.
double ratio(double a, double b);
long cpus_online();
double median_of(std::vector<double> v);

// A state directory for a private daemon's journal (durable queues), removed with
// everything in it when this goes (after the daemon that used it has stopped). It is made
// under `parent` when given, else under $TMPDIR (or /tmp) unless that is a tmpfs, where an
// fsync costs nothing and would flatter every durable figure: then under /var/tmp.
class StateDir {
 public:
  explicit StateDir(const std::string& parent = {});
  ~StateDir();
  StateDir(const StateDir&) = delete;
  StateDir& operator=(const StateDir&) = delete;
  const std::string& path() const { return path_; }
  // Whether it lies on a tmpfs or ramfs (only when `parent` asked for one).
  bool in_memory() const { return in_memory_; }
  // The bytes of the regular files in it (the journal's segments and its lock).
  unsigned long long bytes() const;

 private:
  std::string path_;
  bool in_memory_ = false;
};

// True when `path` lies on a tmpfs or ramfs.
bool in_memory_fs(const std::string& path);

// --durable's values: "off" (not durable), or the fsync policy of a durable queue.
inline constexpr const char* kDurableNames[] = {"off", "always", "batch", "none"};
// The QueueOptions for --durable `name` (one of kDurableNames) on top of `q`.
qbus::QueueOptions with_durable(qbus::QueueOptions q, const std::string& name);

// Owns one file descriptor: closed by reset() or the destructor.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&&) = delete;
  ~Fd() { reset(); }
  int get() const { return fd_; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

// Both ends of a pipe (O_CLOEXEC); each side of a fork resets the end it does not use.
struct Pipe {
  Fd read;
  Fd write;
};

Pipe make_pipe();

// False on an error before all `n` bytes were written.
bool write_all(int fd, const void* data, std::size_t n);

// False on end of file or an error before `n` bytes arrived.
bool read_all(int fd, void* data, std::size_t n);

// A forked process running `body`, which exits with body's result (1 when it throws).
// A Child that was not wait()ed for is killed and reaped by the destructor, so an exception
// in the parent leaves no stray processes.
class Child {
 public:
  template <typename F>
  explicit Child(F&& body) : pid_(::fork()) {
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ > 0) return;
    int code = 1;
    try {
      code = body();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "qbus-bench: worker: %s\n", e.what());
    } catch (...) {
      std::fprintf(stderr, "qbus-bench: worker: unknown exception\n");
    }
    ::_exit(code);
  }
  ~Child() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  // The process's id; -1 once it was waited for.
  pid_t pid() const { return pid_; }

  // Waits for the exit; true when the process exited with status 0.
  bool wait() {
    int status = 0;
    const pid_t pid = std::exchange(pid_, -1);
    while (::waitpid(pid, &status, 0) < 0) {
      if (errno != EINTR) return false;
    }
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
  }

 private:
  pid_t pid_;
};

// Child side of a readiness pipe: sends `value` once the child is connected.
template <typename T>
bool announce(Pipe& ready, const T& value) {
  ready.read.reset();
  const bool ok = write_all(ready.write.get(), &value, sizeof value);
  ready.write.reset();
  return ok;
}

// Parent side: the value the child announced; a child that died first gives end of file.
template <typename T>
T await_ready(Pipe& ready, const char* who) {
  ready.write.reset();
  T value{};
  if (!read_all(ready.read.get(), &value, sizeof value)) {
    throw std::runtime_error(std::string(who) + " failed to start");
  }
  ready.read.reset();
  return value;
}

}  // namespace qbus::bench
