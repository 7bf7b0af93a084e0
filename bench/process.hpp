// Processes released through pipes: what qbus-bench and the peer programs that measure
// Redis and NATS the same way (redis-pubsub, redis-rr, nats-pubsub) share. Plain POSIX, no
// qbus. Single-threaded; a forked Child owns nothing of its parent but what it inherits
// across fork().
#pragma once

#include <signal.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>

namespace qbus::bench {

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
      std::fprintf(stderr, "%s: worker: %s\n", program_invocation_short_name, e.what());
    } catch (...) {
      std::fprintf(stderr, "%s: worker: unknown exception\n", program_invocation_short_name);
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

// `n` values of T in a MAP_SHARED mapping made before a fork: the children write their
// samples into it and the parent reads them after they exited. T must be trivially copyable
// (no pointers into one process's memory).
template <typename T>
class SharedArray {
 public:
  explicit SharedArray(std::size_t n) : n_(n), bytes_(n * sizeof(T)) {
    void* p = ::mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error("mmap of a shared sample array failed");
    values_ = static_cast<T*>(p);
    std::uninitialized_value_construct_n(values_, n_);
  }
  ~SharedArray() { ::munmap(values_, bytes_); }
  SharedArray(const SharedArray&) = delete;
  SharedArray& operator=(const SharedArray&) = delete;
  T& operator[](std::size_t i) { return values_[i]; }
  std::size_t size() const { return n_; }

 private:
  std::size_t n_;
  std::size_t bytes_;
  T* values_ = nullptr;
};

}  // namespace qbus::bench
