// qbus-bridge's Prometheus scrape endpoint (config `metrics_listen`, docs/bridge.md):
// `GET /metrics` over HTTP/1.1 on tcp:HOST:PORT or unix:/path, answering with the text the
// main thread last published, the same metrics_text() that `metrics_file` holds.
//
// Narrow on purpose: one path to GET (and HEAD), one request per connection, then close;
// anything else is refused (404, 405, 400). It has no authentication, so it belongs on
// loopback or a Unix socket. Its bounds keep a slow, silent or hostile peer cheap (one
// that holds every slot makes scrapes fail with 503 until its deadlines pass, but costs
// the bridge nothing more):
//   - at most kMaxConnections connections at once; one beyond gets a 503 and is closed;
//   - a request head of at most kMaxRequestBytes; a longer one gets a 431 and is closed;
//   - one deadline of kExchangeTimeout for a whole exchange, from accept to close, so a
//     silent client holds its slot that long at most;
//   - every socket is non-blocking and one thread poll()s them all, so a slow scraper
//     cannot stall another; answers go out with MSG_NOSIGNAL, so a peer that went away
//     cannot kill the process with SIGPIPE.
//
// Ownership and lifetime: the object owns its listening socket, its connections, the Unix
// socket file it made (mode 0660; removed on destruction if it is still the file it made)
// and its thread. The constructor binds and starts the thread; the destructor wakes it
// through an eventfd, joins it and closes what is still open, unanswered. Idle, the
// thread blocks in poll() without a timeout.
//
// Thread-safety: publish() may be called from any thread (a mutex guards the text);
// endpoint() reads what the constructor fixed. Construction and destruction are the
// owner's business, on one thread.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "qbus/proto/unique_fd.hpp"

namespace qbus::bridge {

class MetricsEndpoint {
 public:
  static constexpr std::size_t kMaxConnections = 16;
  static constexpr std::size_t kMaxRequestBytes = 8 * 1024;
  static constexpr std::chrono::seconds kExchangeTimeout{10};

  // Binds `listen` (metrics_listen's syntax, bridge_config.hpp) and starts serving: 503
  // until the first publish(). Throws std::runtime_error with one sentence naming
  // metrics_listen and the problem.
  explicit MetricsEndpoint(const std::string& listen);
  ~MetricsEndpoint();
  MetricsEndpoint(const MetricsEndpoint&) = delete;
  MetricsEndpoint& operator=(const MetricsEndpoint&) = delete;

  // The bound address in metrics_listen's syntax, with the real port when 0 was asked.
  std::string endpoint() const;

  // Replaces the exposition text served from now on.
  void publish(std::string text);

 private:
  struct Connection;

  void run();
  void accept_all(std::vector<Connection>& connections,
                  std::chrono::steady_clock::time_point& paused_until);
  void advance(Connection& c) const;
  std::shared_ptr<const std::string> text() const;

  std::string endpoint_;
  proto::UniqueFd listener_;
  proto::UniqueFd wake_;  // an eventfd: the destructor's stop signal
  // The Unix socket file made (empty for TCP), and its identity, so that the destructor
  // removes this file and never a successor's.
  std::string socket_path_;
  dev_t socket_dev_ = 0;
  ino_t socket_ino_ = 0;

  mutable std::mutex mutex_;
  std::shared_ptr<const std::string> text_;  // guarded by mutex_; null until publish()
  std::thread thread_;                       // last: started once the rest is ready
};

}  // namespace qbus::bridge
