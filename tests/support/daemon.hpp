// Test helpers that run the real qbusd and qbusctl binaries.
//
// Daemon starts qbusd on a socket in a fresh temporary directory and returns once the
// daemon reported READY=1 on a NOTIFY_SOCKET the helper owns: tests synchronise on
// readiness, never on sleeps.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

namespace qbus::testing {

class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

struct DaemonOptions {
  std::string config_json;  // written to a file and passed with --config when not empty
  std::vector<std::string> extra_args;
  std::string log_level = "debug";
  std::string socket_path;  // default: qbus.sock in the daemon's temporary directory
};

class Daemon {
 public:
  explicit Daemon(DaemonOptions options = {});
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  const std::string& socket_path() const { return socket_path_; }
  std::string address() const { return "unix:" + socket_path(); }
  pid_t pid() const { return pid_; }
  const TempDir& dir() const { return dir_; }

  // "tcp:HOST:PORT" of the TCP listener (as the daemon logged it at startup); empty if none.
  std::string tcp_address() const;

  std::string log() const;
  // True once `needle` appears in the daemon's log, polling until `timeout`.
  bool wait_for_log(const std::string& needle,
                    std::chrono::milliseconds timeout = std::chrono::seconds(30)) const;
  // Sends SIGTERM and waits; returns the exit status (or -1 on a signal/timeout).
  int stop();
  // Entries in /proc/<pid>/fd of the daemon.
  int open_fds() const;
  // The daemon's region memfds in /proc/<pid>/fd: one per live region (plus, briefly, one
  // per region fd waiting to be written to a client).
  int open_regions() const;
  // VmRSS of the daemon in bytes.
  long rss_bytes() const;

 private:
  TempDir dir_;
  std::string socket_path_;
  pid_t pid_ = -1;
};

struct Result {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs `argv` (argv[0] a path) with `input` on stdin and extra environment entries.
Result run(const std::vector<std::string>& argv, const std::string& input = {},
           const std::vector<std::string>& env = {});

std::string qbusd_path();
std::string qbusctl_path();

}  // namespace qbus::testing
