// What every qbus-bench mode shares: processes released through pipes (process.hpp), the
// clock, the client connection, the daemon's CPU time and the small number formats of the
// reports. Single-threaded like the bench itself: nothing here is thread-safe.
#pragma once

#include <sys/types.h>
#include <qbus/client.hpp>

#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "process.hpp"

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

// XOR of every 8-byte word (the tail bytes shifted into place): reads each byte once.
std::uint64_t xor_words(std::span<const std::byte> in);
// Fills `out` with a sequence of words depending on `seed`; returns its xor_words().
std::uint64_t fill_words(std::span<std::byte> out, std::uint64_t seed);

}  // namespace qbus::bench
