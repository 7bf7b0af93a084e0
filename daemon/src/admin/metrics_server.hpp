// The Prometheus endpoint: `GET /metrics` over HTTP/1.1 on the address of config
// `metrics.listen` (unix:/path or tcp:HOST:PORT), answering in the text exposition format
// (version 0.0.4) from the event loop's own state. docs/admin.md lists every metric.
//
// Read-only and narrow on purpose: it serves one path to one method and says no to the
// rest (404, 405, 400), one request per connection. Its bounds: kMaxConnections at once
// (beyond, a 503 and close), a request head of at most kMaxRequestBytes, and one deadline
// for the whole exchange, so a slow or silent scraper holds one answer at most, for
// kExchangeTimeout at most. The answer is bounded too: queues beyond max_queue_series and
// uids beyond kMaxUidSeries are summed under one label value, "(other)", which is no valid
// key, so that a client spraying keys cannot explode the number of series.
//
// Thread-safety: none; everything runs on the broker's io_context thread, like the Server
// whose state it reads (no lock: the answer is rendered between two batches).
#pragma once

#include <asio.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "admin/monitor.hpp"
#include "net/server.hpp"
#include "net/unix_socket.hpp"
#include "storage/journal.hpp"

namespace qbus::daemon {

struct MetricsOptions {
  std::string listen;  // "unix:/path" or "tcp:HOST:PORT"
  std::uint32_t max_queue_series = 1000;
  std::string version;  // qbus_build_info
  // Durable queues (null: none); owned by qbusd's run(), outliving the MetricsServer.
  const storage::StorageStatus* storage = nullptr;
  // The monitor's counters (null: none); owned by the AdminServer, which outlives it.
  const MonitorCounters* monitor = nullptr;
};

class MetricsServer {
 public:
  static constexpr std::size_t kMaxConnections = 16;
  static constexpr std::size_t kMaxRequestBytes = 8 * 1024;
  static constexpr auto kExchangeTimeout = std::chrono::seconds(30);
  static constexpr std::size_t kMaxUidSeries = 1000;

  MetricsServer(asio::io_context& io, const Server& server, MetricsOptions options);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // Binds the listening socket and starts accepting. Throws std::runtime_error with one
  // sentence naming metrics.listen and the problem.
  void start();
  // Stops accepting and closes every connection; removes a Unix socket file it made.
  void stop();
  // The bound address as metrics.listen would name it (the real port when 0 was asked).
  std::string endpoint() const;

  // The exposition text of the state now. Public for tests.
  std::string render();

 private:
  class Session;
  friend class Session;

  void accept();

  asio::io_context& io_;
  const Server& server_;
  MetricsOptions options_;
  asio::basic_socket_acceptor<asio::generic::stream_protocol> acceptor_;
  asio::steady_timer retry_;
  BoundSocket bound_;  // a Unix socket we made, removed at stop()
  bool own_socket_ = false;
  bool stopped_ = false;
  std::chrono::system_clock::time_point started_ = std::chrono::system_clock::now();
  // Queues that have series of their own: a queue keeps its series while it lives, so the
  // set of series changes only as queues come and go.
  std::unordered_set<std::string, broker::StringHash, std::equal_to<>> tracked_;
  std::unordered_map<Session*, std::weak_ptr<Session>> sessions_;
};

}  // namespace qbus::daemon
