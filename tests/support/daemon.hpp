// Test helpers that run the real qbusd and qbusctl binaries.
//
// Daemon starts qbusd on a socket in a fresh temporary directory and returns once the
// daemon reported READY=1 on a NOTIFY_SOCKET the helper owns: tests synchronise on
// readiness, never on sleeps.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
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
  std::string log_level = "debug";  // empty: no --log-level flag (the config file decides)
  std::string socket_path;          // default: qbus.sock in the daemon's temporary directory
  // qbusd's --bus flag, which wins over the config file's `bus` at startup and at every
  // reload. The helper runs qbusd as root, which alone would make it a system bus (each
  // uid confined to user.<uid>. unless a policy says otherwise); "user" keeps the open bus
  // most tests are about. Empty: no flag (the file, or qbusd's own choice, decides).
  std::string bus = "user";
  // qbusd's --state-dir (durable queues). Empty: "state" in the daemon's temporary
  // directory, so that daemons running side by side never share a journal.
  std::string state_dir;

  // Service-manager emulation (tests/integration/systemd_test.cpp).
  // More environment entries ("NAME=value") for qbusd.
  std::vector<std::string> env;
  // A command qbusd is run through (argv[0] an absolute path; qbusd's argv follows), such
  // as systemd-socket-activate. Its pid is the one stop() signals, so it must exec qbusd.
  std::vector<std::string> wrapper;
  // WATCHDOG_USEC for qbusd, with WATCHDOG_PID set to its pid; 0: no watchdog.
  std::uint64_t watchdog_usec = 0;
  // Sockets passed the way systemd does: dup'ed to fds 3, 4, ... with LISTEN_FDS,
  // LISTEN_PID and, when `listen_fdnames` is not empty, LISTEN_FDNAMES (colon-separated).
  std::vector<int> listen_fds;
  std::string listen_fdnames;
  // false: no --socket flag (qbusd takes an inherited socket or picks its default).
  bool pass_socket = true;
  // Keep receiving sd_notify messages after READY=1 (notifications(), wait_for_notify()).
  bool keep_notify = false;
  // false: return at once instead of waiting for READY=1 (a socket-activation wrapper
  // starts qbusd only when a client connects). Implies keep_notify.
  bool wait_ready = true;
};

class Daemon {
 public:
  explicit Daemon(DaemonOptions options = {});
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  const std::string& socket_path() const { return socket_path_; }
  std::string address() const { return "unix:" + socket_path(); }
  // Where qbusd puts its admin socket by default: beside the client socket.
  std::string admin_socket_path() const {
    return socket_path_.substr(0, socket_path_.rfind('/') + 1) + "admin.sock";
  }
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
  // The sd_notify datagrams received so far (keep_notify), oldest first.
  std::vector<std::string> notifications() const;
  // The index of the first datagram at or after `from` that contains `needle`, waiting for
  // one until `timeout`; nullopt on timeout. Needs keep_notify.
  std::optional<std::size_t> wait_for_notify(
      const std::string& needle, std::size_t from = 0,
      std::chrono::milliseconds timeout = std::chrono::seconds(30)) const;
  // Path of the config file written from config_json (rewrite it, then SIGHUP to reload).
  std::string config_path() const { return dir_.file("qbusd.json"); }

  // Entries in /proc/<pid>/fd of the daemon.
  int open_fds() const;
  // The daemon's region memfds in /proc/<pid>/fd: one per live region (plus, briefly, one
  // per region fd waiting to be written to a client).
  int open_regions() const;
  // VmRSS of the daemon in bytes.
  long rss_bytes() const;

 private:
  class NotifyCollector;

  TempDir dir_;
  std::string socket_path_;
  pid_t pid_ = -1;
  std::unique_ptr<NotifyCollector> notify_;  // with keep_notify: drains NOTIFY_SOCKET
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

// The bytes of the file at `path`; empty when it cannot be read.
std::string read_file(const std::string& path);

}  // namespace qbus::testing
