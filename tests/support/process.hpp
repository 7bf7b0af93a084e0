// Child processes for tests: run a function in a fork, collect its exit code, and signal
// between processes without sleeping.
#pragma once

#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <exception>
#include <stdexcept>

namespace qbus::testing {

// Runs `body` in a forked child whose exit code is body's result (99 on an exception).
// The child leaves with _exit: no destructors of the parent's objects run twice.
template <typename F>
pid_t spawn(F&& body) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    int code = 99;
    try {
      code = body();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "child %d: %s\n", ::getpid(), e.what());
    }
    ::_exit(code);
  }
  if (pid < 0) throw std::runtime_error("fork failed");
  return pid;
}

// The child's exit code, or 100 + signal number when a signal ended it.
inline int wait_exit(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 100 + WTERMSIG(status);
}

// A one-shot signal between processes: wait() blocks until open() (or the opener exits
// and the pipe closes).
class Gate {
 public:
  Gate() {
    if (::pipe(fds_) != 0) throw std::runtime_error("pipe failed");
  }
  ~Gate() {
    ::close(fds_[0]);
    ::close(fds_[1]);
  }
  Gate(const Gate&) = delete;
  Gate& operator=(const Gate&) = delete;
  void open() { (void)!::write(fds_[1], "x", 1); }
  void wait() {
    char c;
    (void)!::read(fds_[0], &c, 1);
  }

 private:
  int fds_[2];
};

}  // namespace qbus::testing
