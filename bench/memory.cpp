// qbus-bench memory: what a queued message costs the daemon.
//
// memory: the daemon's RSS idle (nobody connected), with N messages queued, and once they
// are drained again.
#include <cstdint>
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>

#include "common.hpp"
#include "daemon.hpp"
#include "modes.hpp"

namespace qbus::bench {
namespace {

struct MemOptions {
  long long messages = 1'000'000;
  int size = 64;
  bool json = false;
};

void add_options(CLI::App& cmd, MemOptions& o) {
  cmd.add_option("--messages", o.messages, "Messages to queue (one queue, one producer)")
      ->check(CLI::Range(1LL, 4'000'000'000LL));
  cmd.add_option("--size", o.size, "Payload bytes")->check(CLI::Range(0, 1 << 20));
  cmd.add_flag("--json", o.json, "One JSON object instead of the table");
}

// RSS of a private daemon idle, with N messages queued in one queue, and after draining.
int memory(const MemOptions& o) {
  qbus::testing::DaemonOptions d;
  d.log_level = "warn";
  const std::string n = std::to_string(o.messages);
  // Room for exactly N messages under the uid quotas; the queue itself is declared below.
  d.config_json = R"({"limits": {"uid_max_queued_messages": )" + n +
                  R"(, "uid_max_queued_bytes": 1099511627776}})";
  qbus::testing::Daemon daemon(d);
  const long rss_idle = daemon.rss_bytes();
  auto c = connect(daemon.address());
  c.declare(kQueue, qbus::QueueOptions{static_cast<std::uint32_t>(o.messages),
                                       std::uint64_t{1} << 40, qbus::Overflow::reject});
  const long rss_connected = daemon.rss_bytes();
  const std::string payload(static_cast<std::size_t>(o.size), 'm');
  {
    qbus::Client::Batch batch(c);
    for (long long i = 0; i < o.messages; ++i)
      c.send(kQueue, payload);
  }
  c.sync();
  if (c.send_failures().count != 0) {
    throw std::runtime_error("the broker refused " + std::to_string(c.send_failures().count) +
                             " sends: " + c.send_failures().last_message);
  }
  const long rss_queued = daemon.rss_bytes();
  long long drained = 0;
  while (drained < o.messages) {
    const auto got = c.receive_batch(kQueue, 4096, seconds(30));
    if (got.empty()) throw std::runtime_error("queued messages were lost");
    drained += static_cast<long long>(got.size());
  }
  const long rss_drained = daemon.rss_bytes();
  const double added = static_cast<double>(rss_queued - rss_connected);
  const double per_message = added / static_cast<double>(o.messages);
  const double mib = 1024.0 * 1024.0;
  if (o.json) {
    std::printf(
        "{\"benchmark\":\"memory\",\"messages\":%lld,\"size\":%d,\"daemon_rss_idle_bytes\":%ld,"
        "\"daemon_rss_connected_bytes\":%ld,\"daemon_rss_queued_bytes\":%ld,"
        "\"daemon_rss_drained_bytes\":%ld,\"queued_added_bytes\":%.0f,"
        "\"bytes_per_queued_message\":%.1f}\n",
        o.messages, o.size, rss_idle, rss_connected, rss_queued, rss_drained, added, per_message);
    return 0;
  }
  std::printf("memory: %lld messages of %d bytes queued in one queue\n", o.messages, o.size);
  std::printf("  %-36s %12.2f\n", "daemon RSS idle (MiB)", static_cast<double>(rss_idle) / mib);
  std::printf("  %-36s %12.2f\n", "... one client connected (MiB)",
              static_cast<double>(rss_connected) / mib);
  std::printf("  %-36s %12.2f\n", "... messages queued (MiB)",
              static_cast<double>(rss_queued) / mib);
  std::printf("  %-36s %12.2f\n", "added by the messages (MiB)", added / mib);
  std::printf("  %-36s %12.1f\n", "bytes per queued message", per_message);
  std::printf("  %-36s %12.2f\n", "daemon RSS after draining (MiB)",
              static_cast<double>(rss_drained) / mib);
  return 0;
}

}  // namespace

Mode memory_mode(CLI::App& cmd) {
  return bind_mode<MemOptions>(cmd, add_options, memory);
}

}  // namespace qbus::bench
