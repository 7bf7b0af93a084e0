// qbus-bench connections: what idle connections cost the daemon.
//
// connections: N idle connections; the daemon's RSS before and after, and its CPU time
// while they idle for --idle-seconds (the one deliberate sleep in this program).
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "common.hpp"
#include "daemon.hpp"
#include "modes.hpp"

namespace qbus::bench {
namespace {

struct ConnOptions {
  long long connections = 10'000;
  double idle_seconds = 10;
  std::string address;
  bool json = false;
};

void add_options(CLI::App& cmd, ConnOptions& o) {
  cmd.add_option("--connections", o.connections,
                 "Idle connections to open (the bench raises its soft open-file limit to the "
                 "hard one)")
      ->check(CLI::Range(1LL, 999'000LL));
  cmd.add_option("--idle-seconds", o.idle_seconds,
                 "Seconds to measure the daemon's CPU time with the connections open and idle")
      ->check(CLI::Range(0.0, 3600.0));
  cmd.add_option("--address", o.address,
                 "Use a running broker instead of a private one (then no RSS or CPU figures)");
  cmd.add_flag("--json", o.json, "One JSON object instead of the table");
}

// Raises this process's soft open-file limit to the hard one; returns the soft limit.
rlim_t raise_fd_limit() {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) return 0;
  if (lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &lim) != 0) ::getrlimit(RLIMIT_NOFILE, &lim);
  }
  return lim.rlim_cur;
}

// N idle connections: the daemon's RSS before and after, and its CPU time while they idle.
int connections(const ConnOptions& o) {
  const rlim_t fds = raise_fd_limit();
  if (fds != RLIM_INFINITY && static_cast<unsigned long long>(o.connections) + 64 > fds) {
    throw std::runtime_error("the open-file limit (" + std::to_string(fds) + ") is below " +
                             std::to_string(o.connections) + " connections + 64");
  }
  std::unique_ptr<qbus::testing::Daemon> daemon;
  if (o.address.empty()) {
    qbus::testing::DaemonOptions d;
    d.log_level = "warn";
    // qbusd raises its own soft fd limit to the hard one (inherited from here).
    const std::string n = std::to_string(o.connections + 64);
    d.config_json =
        R"({"limits": {"max_connections": )" + n + R"(, "uid_max_connections": )" + n + "}}";
    daemon = std::make_unique<qbus::testing::Daemon>(d);
  }
  const std::string address = daemon ? daemon->address() : o.address;
  const long rss_before = daemon ? daemon->rss_bytes() : -1;
  std::vector<qbus::Client> clients;
  clients.reserve(static_cast<std::size_t>(o.connections));
  const auto start = Clock::now();
  for (long long i = 0; i < o.connections; ++i)
    clients.push_back(connect(address));  // returns after the handshake: the broker has it
  const double open_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const long rss_after = daemon ? daemon->rss_bytes() : -1;
  // Idle: nobody sends anything; whatever CPU the daemon uses now is polling or timers.
  const double cpu_before = daemon ? cpu_seconds(daemon->pid()) : 0;
  const auto idle_start = Clock::now();
  ::usleep(static_cast<useconds_t>(o.idle_seconds * 1e6));
  const double idle_elapsed = std::chrono::duration<double>(Clock::now() - idle_start).count();
  const double idle_cpu_ms = daemon ? (cpu_seconds(daemon->pid()) - cpu_before) * 1e3 : -1;
  const long rss_idle = daemon ? daemon->rss_bytes() : -1;
  const auto n = static_cast<double>(o.connections);
  const double per_connection = daemon ? static_cast<double>(rss_after - rss_before) / n : -1;
  const double mib = 1024.0 * 1024.0;
  if (o.json) {
    std::printf(
        "{\"benchmark\":\"connections\",\"connections\":%lld,\"fd_limit\":%llu,"
        "\"open_seconds\":%.3f,\"connections_per_second\":%.0f,\"daemon_rss_before_bytes\":%ld,"
        "\"daemon_rss_after_bytes\":%ld,\"daemon_rss_after_idle_bytes\":%ld,"
        "\"bytes_per_connection\":%.0f,\"idle_seconds\":%.3f,\"daemon_idle_cpu_ms\":%.3f}\n",
        o.connections, static_cast<unsigned long long>(fds), open_seconds, n / open_seconds,
        rss_before, rss_after, rss_idle, per_connection, idle_elapsed, idle_cpu_ms);
    return 0;
  }
  std::printf("connections: %lld idle connections from one process (open-file limit %llu)\n",
              o.connections, static_cast<unsigned long long>(fds));
  std::printf("  %-36s %12.3f (%.0f/s)\n", "opened in (s)", open_seconds, n / open_seconds);
  if (!daemon) {
    std::printf("  broker at %s: its RSS and CPU are not measured (no pid)\n", o.address.c_str());
    return 0;
  }
  std::printf("  %-36s %12.2f\n", "daemon RSS before (MiB)", static_cast<double>(rss_before) / mib);
  std::printf("  %-36s %12.2f\n", "daemon RSS with them open (MiB)",
              static_cast<double>(rss_after) / mib);
  std::printf("  %-36s %12.2f\n", "added (MiB)", static_cast<double>(rss_after - rss_before) / mib);
  std::printf("  %-36s %12.0f\n", "bytes per connection", per_connection);
  std::printf("  %-36s %12.2f\n", "daemon RSS after the idle time (MiB)",
              static_cast<double>(rss_idle) / mib);
  std::printf("  %-36s %12.3f (over %.2f s, connections open)\n", "daemon CPU while idle (ms)",
              idle_cpu_ms, idle_elapsed);
  return 0;
}

}  // namespace

Mode connections_mode(CLI::App& cmd) {
  return bind_mode<ConnOptions>(cmd, add_options, connections);
}

}  // namespace qbus::bench
