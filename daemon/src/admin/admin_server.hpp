// The admin socket: newline-delimited JSON requests and answers about queues, clients,
// regions and counters, plus the operator's actions (purge, delete, removing a named
// region, disconnecting a client, log level). The request/answer shapes are documented in
// docs/admin.md; JSON exists only in this module.
//
// Access is decided per connection by the kernel's view of the peer (SO_PEERCRED and
// SO_PEERGROUPS), not only by the socket file's mode: root, qbusd's own uid and members of
// the configured admin group. Refusals get one error line and are logged.
//
// Thread-safety: none; everything runs on the broker's io_context thread, like the Server
// whose state it reads.
#pragma once

#include <asio.hpp>
#include <chrono>
#include <deque>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <unordered_map>

#include "admin/monitor.hpp"
#include "net/log_fields.hpp"
#include "net/server.hpp"
#include "net/unix_socket.hpp"

namespace qbus::daemon {

struct AdminOptions {
  // Durable queues, shown by `stats`; owned by qbusd's run(), outliving the AdminServer.
  const storage::StorageStatus* storage = nullptr;
  std::string socket_path;
  std::uint32_t socket_mode = 0660;
  std::string group;  // group name; empty: none
  // The effective configuration as JSON text, shown by the `config` request.
  std::string config_json = "{}";
};

class AdminServer {
 public:
  AdminServer(asio::io_context& io, Server& server, AdminOptions options);
  ~AdminServer();
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  // Binds the admin socket (or, with inherited_fd >= 0, uses that listening socket, which
  // systemd owns) and starts accepting. Throws std::runtime_error with one sentence (a
  // missing group, a path in use).
  void start(int inherited_fd = -1);
  // Stops accepting, closes every admin connection and removes the socket file we made.
  void stop();
  // After a configuration reload: the group allowed in and the `config` answer.
  void update(const std::string& group, std::string config_json);

  const std::string& socket_path() const { return options_.socket_path; }
  const MonitorCounters& monitor_counters() const { return monitor_.counters(); }

 private:
  class Session;
  struct Sample {
    std::chrono::steady_clock::time_point at;
    broker::BrokerTotals totals;
  };

  void accept();
  // Whether the peer on `fd` may use the admin socket; `who` describes it for the log, and
  // `peer` holds its pid and uid for the log's fields.
  bool permitted(int fd, LogFields& peer, std::string& who) const;
  // Answers one request line: parses it and hands it to the member function that its
  // "request" names.
  nlohmann::json handle(const std::string& line);
  // Takes a sample and arms the next one a second later, unless nothing can change the
  // totals: with no client connected and no traffic over the window it stops, so that an
  // idle qbusd has no timer waking it; the next client restarts it (wake_sampler).
  void sample();
  void wake_sampler();
  // The requests of docs/admin.md, one each; `req` is the parsed request object. Not
  // const, even the ones that only read: handle() keeps them in one table of one type.
  nlohmann::json list_queues(const nlohmann::json& req);
  nlohmann::json show_queue(const nlohmann::json& req);
  nlohmann::json list_clients(const nlohmann::json& req);
  nlohmann::json list_regions(const nlohmann::json& req);
  nlohmann::json show_stats(const nlohmann::json& req);
  nlohmann::json delete_queues(const nlohmann::json& req);
  nlohmann::json purge_queue(const nlohmann::json& req);
  nlohmann::json remove_region(const nlohmann::json& req);
  nlohmann::json disconnect_client(const nlohmann::json& req);
  nlohmann::json show_config(const nlohmann::json& req);
  nlohmann::json set_log_level(const nlohmann::json& req);
  nlohmann::json check_policy(const nlohmann::json& req);
  // Publish/subscribe (topics_json.cpp).
  nlohmann::json list_subscriptions(const nlohmann::json& req);
  nlohmann::json show_topics(const nlohmann::json& req);
  // `monitor` (monitor.cpp): checks the request and leaves it in pending_monitor_ for the
  // session, which hands its connection to the Monitor once the answer is written.
  nlohmann::json start_monitor(const nlohmann::json& req);
  // `purge` or `delete` (`what`) of the one queue named by "key".
  nlohmann::json drop_queue(const std::string& what, const nlohmann::json& req);
  // `delete` with a glob "pattern" instead of a key.
  nlohmann::json delete_matching(const nlohmann::json& req);

  Server& server_;
  AdminOptions options_;
  std::optional<unsigned> group_gid_;
  asio::local::stream_protocol::acceptor acceptor_;
  asio::steady_timer sampler_;
  asio::steady_timer retry_;
  BoundSocket bound_;
  bool own_socket_ = false;
  bool stopped_ = false;
  std::deque<Sample> samples_;  // one a second over the rate window
  bool sampling_ = false;       // the sampler's timer is armed
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  std::unordered_map<Session*, std::weak_ptr<Session>> sessions_;
  Monitor monitor_;
  struct MonitorRequest {
    std::string pattern;
    std::size_t payload_bytes = Monitor::kDefaultPayloadBytes;
  };
  std::optional<MonitorRequest> pending_monitor_;  // set by start_monitor, taken by a Session
  // The pid and uid of the operator whose request is being answered, for the fields of the
  // lines its actions log (a purge, a deletion, a new log level).
  LogFields requester_;
};

}  // namespace qbus::daemon
