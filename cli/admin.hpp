// qbusctl's admin commands: one JSON request over the admin socket, printed as an aligned
// table (or the raw JSON answer with --json). docs/admin.md documents the protocol.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
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

// One connection to the admin socket for any number of requests in turn: the socket answers
// each with one line, in order. Owns its socket; not thread-safe.
class AdminConnection {
 public:
  // Connects (connect_admin); throws std::runtime_error naming the problem.
  explicit AdminConnection(std::string path);
  ~AdminConnection();
  AdminConnection(const AdminConnection&) = delete;
  AdminConnection& operator=(const AdminConnection&) = delete;

  // Sends `request_line` (one JSON object, no newline) and returns the answer line as it is,
  // an error answer included. Throws std::runtime_error when the socket closes, stays silent
  // for 30 s, or answers something that is not JSON.
  nlohmann::json ask(const std::string& request_line);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_;
  std::string buffer_;  // read past the last answer's newline
};

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
