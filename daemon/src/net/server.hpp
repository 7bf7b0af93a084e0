// The daemon's network edge: the acceptor (Unix, optionally TCP), the registry of
// connections, the per-uid output accounting, the deadline timer, and the Sink through
// which the broker core answers: each Sink call is a route to one Connection, which does
// the encoding and fd passing itself. TCP authentication is TcpAuth's (tcp_auth.hpp).
//
// Ownership: the Server owns the Broker, every Connection and the TcpAuth, and lives as
// long as the io_context runs. Thread-safety: none; everything runs on one io_context
// thread (docs/architecture.md, principle 1).
#pragma once

#include <asio.hpp>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "broker/broker.hpp"
#include "net/memfd_backing.hpp"
#include "net/tap.hpp"
#include "net/tcp_auth.hpp"
#include "net/tls.hpp"
#include "net/uid_output.hpp"
#include "net/unix_socket.hpp"
#include "storage/journal.hpp"

namespace qbus::daemon {

class Connection;

struct ServerOptions {
  std::string socket_path;
  std::uint32_t socket_mode = 0666;
  std::string tcp_listen;  // "HOST:PORT"; empty: no TCP
  std::string tcp_token;   // required of TCP clients in HELLO
  // Set: the TCP listener speaks TLS only (PROTOCOL.md section 10), with this context.
  std::shared_ptr<TlsServer> tls;
  broker::Limits limits;
  std::uint32_t max_body = 1u << 20;          // announced in WELCOME; > max_payload + fixed
  std::size_t max_outbound_bytes = 4u << 20;  // per connection, before its reads pause
  std::uint32_t handshake_timeout_ms = 5'000;
  // Region fds waiting to be passed, over all connections: each is an open file of qbusd,
  // so this keeps room under RLIMIT_NOFILE for connections and regions (qbusd sets it to a
  // quarter of that limit).
  std::uint32_t max_fds_in_flight = 4096;
};

class Server final : public broker::Sink {
 public:
  Server(asio::io_context& io, ServerOptions options);
  ~Server() override;

  // Binds the listening sockets; throws std::runtime_error with one clear sentence.
  void start();
  // The same with the client socket the service manager passed (socket activation)
  // instead of binding one: options().socket_path becomes that socket's path, and its file
  // is left in place at shutdown (it belongs to systemd).
  void start(UniqueFd inherited_unix);
  // A configuration reload: new broker limits (max_payload stays: clients were told it),
  // per-connection output bound and handshake timeout. Nothing admitted is dropped.
  void set_limits(const broker::Limits& limits, std::size_t max_outbound_bytes,
                  std::uint32_t handshake_timeout_ms);
  // Stops accepting, fails waiting receives, flushes what can be flushed and closes every
  // connection; `done` runs once all are gone (or the drain deadline passed).
  void stop(std::function<void()> done);

  // Durable queues: the journal (null: none), which the Server wakes up for. The caller
  // stops it before the Server goes.
  void attach_journal(storage::Journal* journal);
  // Connection `id` has sends waiting for the journal (Connection::journaled).
  void await_journal(broker::PeerId id) { journal_waiters_.push_back(id); }
  // The journal's thread made progress (posted by its wake): the waiting connections
  // answer their sends.
  void on_journal_progress();

  broker::Broker& broker() { return broker_; }
  const broker::Broker& broker() const { return broker_; }
  // Every open connection (authenticated or not), for the admin socket.
  template <typename F>
  void for_each_connection(F&& f) const {
    for (const auto& [id, c] : conns_)
      f(*c);
  }
  std::size_t connection_count() const { return conns_.size(); }
  // The connection with this id (a strong reference, for closing it), or null.
  std::shared_ptr<Connection> connection(broker::PeerId id) const;
  const ServerOptions& options() const { return options_; }
  std::span<std::byte> scratch() { return scratch_; }
  // "host:port" the TCP listener is bound to (the real port when 0 was asked for).
  std::string tcp_endpoint() const;

  // The monitor's tap (tap.hpp): null while no monitor is attached. The listener outlives
  // its installation; set_tap(nullptr) removes it.
  TapListener* tap() const { return tap_; }
  void set_tap(TapListener* listener) { tap_ = listener; }

  // Called when a client connects to a broker that had none, so that what sleeps while
  // nobody is connected (the admin socket's rate sampler, the service status) wakes
  // again. Called on the event loop; what it refers to must live while the loop runs.
  void add_first_client_hook(std::function<void()> f) { on_first_client_.push_back(std::move(f)); }

  // How busy the event loop is with clients' frames (qbus_event_loop_*): the time from a
  // connection's wake-up to the end of the batch it read, summed; batches; and the frames
  // of the last one.
  struct LoopStats {
    broker::Clock::duration busy{};
    std::uint64_t batches = 0;
    std::uint32_t last_batch_frames = 0;
  };
  const LoopStats& loop_stats() const { return loop_; }
  // The output accounting of `uid`'s connections; null when it has none.
  const UidOutput* uid_output(std::uint32_t uid) const {
    const auto it = uid_output_.find(uid);
    return it == uid_output_.end() ? nullptr : &it->second;
  }
  // Region fds waiting to be passed, over all connections.
  std::uint64_t fds_in_flight() const { return fds_in_flight_; }
  // The memfds handed to the backing's worker and not closed yet.
  std::size_t region_closes_pending() const { return backing_.pending_closes(); }

  // Called by connections.
  void count_frame() { ++frames_in_batch_; }
  // A connection's wake-up that began at `started` is done (its batch flushed).
  void note_busy(broker::Clock::time_point started);
  // Connection `id` has output to write: it is flushed at the end of the batch. Each
  // connection asks once per batch (Connection::mark_dirty).
  void flush_at_end_of_batch(broker::PeerId id) { dirty_.push_back(id); }
  void end_of_batch();  // flush dirty connections, re-arm the deadline timer
  void forget(broker::PeerId id);
  TcpAuth& tcp_auth() { return tcp_auth_; }
  const TcpAuth::Counters& tcp_auth_counters() const { return tcp_auth_.counters(); }
  std::size_t tcp_auth_pending() const { return tcp_auth_.pending(); }
  // A TCP peer presented the token: it becomes a broker peer now (TCP peers are not
  // registered before, so unauthenticated connections hold no quota, inbox or id).
  Errc authenticated(Connection& c);
  // An operator's disconnect (the admin socket): the connection gets an ERROR with
  // correlation 0, `code` and `text`, is flushed and closed, and the broker forgets the
  // peer as on any disconnect. False when no connection has that id.
  bool disconnect(broker::PeerId id, Errc code, std::string_view text);

  // Output accounting per uid (uid_output.hpp). A connection attaches to its uid's entry
  // when made and detaches when closed; the entry lives while any connection uses it.
  UidOutput& attach_output(std::uint32_t uid);
  void detach_output(std::uint32_t uid);
  // `c` queued (delta > 0) or passed/dropped (delta < 0) region fds.
  void fds_in_flight(Connection& c, int delta);
  // Why `c` may not be handed another fd now (its uid's or the broker's fd budget is
  // spent), or nullopt when it may.
  std::optional<std::string> fd_budget_refusal(const Connection& c) const;
  // `c` wrote some of its output: receivers refused more output that now fit are served.
  void output_drained(Connection& c);

  // broker::Sink
  void deliver(broker::PeerId to, std::uint64_t correlation, bool last,
               const broker::Delivery& d) override;
  void fail(broker::PeerId to, std::uint64_t correlation, Errc code,
            std::string_view text) override;
  void confirm(broker::PeerId to, std::uint64_t correlation) override;
  void resume(broker::PeerId producer) override;
  bool wants_more(broker::PeerId peer) override;
  bool has_exited(broker::PeerId peer, broker::Clock::time_point as_of) override;
  void denied(broker::PeerId peer, broker::Operation op, std::string_view key, int rule) override;
  void cut_off(broker::PeerId peer, Errc code, std::string_view text) override;

 private:
  // One pidfd per peer process (pid and process token), shared by its connections and
  // closed with the last of them: it turns readable when the process exits, which is when
  // its pid stops naming it (PROTOCOL.md section 8.2).
  struct ProcessWatch {
    explicit ProcessWatch(asio::io_context& io) : pidfd(io) {}
    asio::posix::stream_descriptor pidfd;
    std::vector<broker::PeerId> conns;  // the process's open connections
    bool exited = false;
    // The process was alive at a poll made after this time: frames read before it need
    // no new poll (a sender of many direct messages pays one per read, not one each).
    broker::Clock::time_point alive_after{};
  };
  using ProcessKey = std::pair<std::uint32_t, std::uint64_t>;  // pid, process token
  struct ProcessKeyHash {
    std::size_t operator()(const ProcessKey& k) const noexcept {
      return std::hash<std::uint64_t>{}(k.second * 0x9E3779B97F4A7C15ull ^ k.first);
    }
  };

  void listen_on(int unix_fd);
  void start_tcp();
  void accept_unix();
  void accept_tcp();
  // Logs an accept error and retries after a pause instead of spinning (EMFILE...).
  void retry_accept(asio::steady_timer& timer, std::function<void()> again,
                    const asio::error_code& ec);
  void admit(asio::generic::stream_protocol::socket socket, broker::Identity who,
             std::vector<std::uint32_t> groups, std::string description, std::string remote_ip,
             std::string comm = {});
  void arm_deadline_timer();
  // Deliveries come in runs to one receiver: the last one found is remembered, and that
  // check stays inline on the per-message path.
  Connection* find(broker::PeerId id) {
    return id == last_found_id_ && last_found_ ? last_found_ : find_and_remember(id);
  }
  Connection* find_and_remember(broker::PeerId id);
  bool uid_has_room(const UidOutput& u) const;
  // Accepts one pending connection on `listener` and refuses it with an ERROR, using the
  // fd kept in reserve for this: qbusd at its fd limit still answers, instead of leaving
  // clients to time out in the backlog.
  void shed_connection(int listener);
  // Adds connection `id` to its process's watch, taking `pidfd` when it is the first.
  void watch_process(broker::PeerId id, const broker::Identity& who, proto::UniqueFd pidfd);
  void unwatch_process(broker::PeerId id, const broker::Identity& who);
  void on_process_exit(const ProcessKey& key);

  asio::io_context& io_;
  ServerOptions options_;
  storage::Journal* journal_ = nullptr;
  std::vector<broker::PeerId> journal_waiters_;  // each once: added when its first send waits
  MemfdBacking backing_;  // before broker_, which uses it until its last region is gone
  broker::Broker broker_;
  asio::local::stream_protocol::acceptor acceptor_;
  asio::ip::tcp::acceptor tcp_acceptor_;
  asio::steady_timer unix_retry_;
  asio::steady_timer tcp_retry_;
  asio::steady_timer deadline_timer_;
  broker::Clock::time_point armed_for_{};
  asio::steady_timer drain_timer_;
  std::unordered_map<broker::PeerId, std::shared_ptr<Connection>> conns_;
  std::unordered_map<std::uint32_t, UidOutput> uid_output_;
  std::uint64_t fds_in_flight_ = 0;
  bool fd_starved_ = false;           // someone was refused for the broker-wide fd budget
  std::vector<broker::PeerId> wake_;  // to be served by the posted output_ready round
  bool wake_posted_ = false;
  UniqueFd reserve_fd_;  // /dev/null, closed to make room for shed_connection()
  // find()'s cache; forget() clears it with the entry.
  broker::PeerId last_found_id_ = 0;
  Connection* last_found_ = nullptr;
  std::vector<broker::PeerId> dirty_;
  TapListener* tap_ = nullptr;
  LoopStats loop_;
  std::uint32_t frames_in_batch_ = 0;
  std::unordered_map<ProcessKey, std::unique_ptr<ProcessWatch>, ProcessKeyHash> processes_;
  // Unix connections whose process had exited before they were accepted.
  std::unordered_set<broker::PeerId> exited_at_accept_;
  std::vector<std::byte> scratch_;
  TcpAuth tcp_auth_;
  broker::PeerId next_id_ = 1;
  BoundSocket bound_;
  bool stopping_ = false;
  std::function<void()> on_stopped_;
  std::vector<std::function<void()>> on_first_client_;
};

}  // namespace qbus::daemon
