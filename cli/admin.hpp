// qbusctl's admin commands: one JSON request over the admin socket, printed as an aligned
// table (or the raw JSON answer with --json). docs/admin.md documents the protocol.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace qbusctl {

struct AdminCommand {
  std::string address;         // --admin-address; empty: $QBUS_ADMIN_ADDRESS, then the defaults
  std::string client_address;  // --address, whose directory holds the admin socket too
  bool json = false;
  // queues, queue, clients, regions, stats, topics, subscriptions, purge, delete,
  // region-remove, disconnect
  std::string request;
  std::string key;       // queue, purge, delete, region-remove
  std::string pattern;   // delete --pattern (instead of key)
  std::uint64_t id = 0;  // disconnect
  // policy-check (`qbusctl policy check`)
  std::uint32_t uid = 0;
  std::vector<std::uint32_t> gids;  // the first is the primary group
  std::string op;
  std::optional<std::uint32_t> to_uid;  // send_direct: the receiver
  std::vector<std::uint32_t> to_gids;   // its groups, the first its primary group
};

// The admin socket's path for `cmd`: --admin-address, else $QBUS_ADMIN_ADDRESS, else beside
// --address's socket, else the defaults. Throws std::runtime_error naming the problem.
std::string admin_socket_path(const AdminCommand& cmd);
// A connected socket to the admin socket at `path`, which the caller closes. Throws
// std::runtime_error with one line naming the problem (and the likely cause).
int connect_admin(const std::string& path);

// `qbusctl monitor [PATTERN]` (monitor.cpp): live traffic through the admin socket.
struct MonitorArgs {
  std::string pattern;               // empty: everything
  std::uint32_t payload_bytes = 64;  // of each payload shown
  long long count = 0;               // events to show before exiting; 0: no limit
};
int run_monitor(const AdminCommand& where, const MonitorArgs& a);

// `qbusctl top` (top.cpp): queues and clients with their rates, refreshed; ncurses on a
// terminal, plain text otherwise.
struct TopArgs {
  double interval = 1.0;      // seconds between refreshes, at least 0.1
  long long iterations = 0;   // refreshes before exiting; 0: until q (or a signal)
  std::string sort = "rate";  // rate, depth, bytes, key (or name)
};
int run_top(const AdminCommand& where, const TopArgs& a);

// Runs the command; returns the exit code (0, or 1 with one line on stderr; policy-check
// exits kExitDenied when the policy denies).
inline constexpr int kExitDenied = 4;
int run_admin(const AdminCommand& cmd);

}  // namespace qbusctl
