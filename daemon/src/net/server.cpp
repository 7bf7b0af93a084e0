#include "net/server.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <stdexcept>

#include "net/connection.hpp"
#include "net/memfd_backing.hpp"
#include "net/peer_identity.hpp"
#include "qbus/proto/address.hpp"

namespace qbus::daemon {
namespace {

constexpr std::size_t kScratchSize = 256 * 1024;
// A TCP peer that vanishes without a FIN is noticed within about two minutes.
constexpr int kKeepIdleSeconds = 60;
constexpr int kKeepIntervalSeconds = 10;
constexpr int kKeepCount = 6;

}  // namespace

Server::Server(asio::io_context& io, ServerOptions options)
    : io_(io),
      options_(std::move(options)),
      backing_(options_.limits.regions.max_region_bytes),
      broker_(options_.limits, *this, backing_),
      acceptor_(io),
      tcp_acceptor_(io),
      unix_retry_(io),
      tcp_retry_(io),
      deadline_timer_(io),
      drain_timer_(io),
      scratch_(kScratchSize),
      tcp_auth_(io, *this, options_.tcp_token) {}

Server::~Server() = default;

void Server::start() {
  bound_ = bind_unix_listener(options_.socket_path, options_.socket_mode);
  listen_on(bound_.fd.release());
}

void Server::start(UniqueFd inherited_unix) {
  std::string path;
  bound_ = adopt_unix_listener(std::move(inherited_unix), path);
  if (!path.empty()) options_.socket_path = path;
  listen_on(bound_.fd.release());
}

void Server::listen_on(int unix_fd) {
  reserve_fd_ = UniqueFd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  acceptor_.assign(asio::local::stream_protocol(), unix_fd);
  if (!options_.tcp_listen.empty()) start_tcp();
  accept_unix();
  if (tcp_acceptor_.is_open()) accept_tcp();
}

void Server::set_limits(const broker::Limits& limits, std::size_t max_outbound_bytes,
                        std::uint32_t handshake_timeout_ms) {
  broker::Limits l = limits;
  l.max_payload = options_.limits.max_payload;
  options_.limits = l;
  options_.max_outbound_bytes = max_outbound_bytes;
  options_.handshake_timeout_ms = handshake_timeout_ms;
  backing_.set_max_region_bytes(l.regions.max_region_bytes);
  broker_.set_limits(l);
}

void Server::start_tcp() {
  std::string why;
  auto addr = proto::parse_address("tcp:" + options_.tcp_listen, why, true);
  if (!addr) throw std::runtime_error("tcp.listen: " + why);
  asio::error_code ec;
  auto ip = asio::ip::make_address(addr->host, ec);
  if (ec) {
    // A host name: resolve it once, at startup.
    asio::ip::tcp::resolver resolver(io_);
    auto results = resolver.resolve(addr->host, std::to_string(addr->port), ec);
    if (ec || results.empty()) {
      throw std::runtime_error("tcp.listen: cannot resolve '" + addr->host + "'");
    }
    ip = results.begin()->endpoint().address();
  }
  if (options_.tcp_token.empty()) throw std::runtime_error("TCP needs a non-empty token");
  const asio::ip::tcp::endpoint endpoint(ip, addr->port);
  tcp_acceptor_.open(endpoint.protocol());
  tcp_acceptor_.set_option(asio::socket_base::reuse_address(true));
  tcp_acceptor_.bind(endpoint, ec);
  if (ec) {
    throw std::runtime_error("cannot listen on tcp " + options_.tcp_listen + ": " + ec.message());
  }
  tcp_acceptor_.listen(asio::socket_base::max_listen_connections);
  if (!ip.is_loopback()) {
    spdlog::warn(
        "TCP listener on {} is reachable from other hosts{}; clients must present the token",
        tcp_endpoint(), options_.tls ? " (TLS)" : " in PLAIN TEXT (tcp.allow_plaintext)");
  }
}

std::string Server::tcp_endpoint() const {
  if (!tcp_acceptor_.is_open()) return {};
  asio::error_code ec;
  const auto ep = tcp_acceptor_.local_endpoint(ec);
  if (ec) return {};
  const auto host = ep.address().to_string();
  return (ep.address().is_v6() ? "[" + host + "]" : host) + ":" + std::to_string(ep.port());
}

void Server::shed_connection(int listener) {
  if (!reserve_fd_) return;
  reserve_fd_.reset();
  pollfd p{listener, POLLIN, 0};
  if (::poll(&p, 1, 0) == 1) {
    const int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd >= 0) {
      proto::ByteBuffer b;
      proto::append_error(b, 0, Errc::too_many_connections,
                          "qbusd is at its limit of open files; try again later");
      const auto bytes = b.readable();
      (void)!::send(fd, bytes.data(), bytes.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
      ::close(fd);
    }
  }
  reserve_fd_ = UniqueFd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
}

void Server::retry_accept(asio::steady_timer& timer, std::function<void()> again,
                          const asio::error_code& ec) {
  spdlog::error("accept failed: {}; retrying in 100 ms", ec.message());
  timer.expires_after(std::chrono::milliseconds(100));
  timer.async_wait([this, again = std::move(again)](const asio::error_code& e) {
    if (!e && !stopping_) again();
  });
}

void Server::accept_unix() {
  acceptor_.async_accept([this](const asio::error_code& ec,
                                asio::local::stream_protocol::socket sock) {
    if (stopping_ || ec == asio::error::operation_aborted) return;
    if (ec) {
      if (ec == asio::error::no_descriptors || ec.value() == ENFILE)
        shed_connection(acceptor_.native_handle());
      return retry_accept(
          unix_retry_, [this] { accept_unix(); }, ec);
    }
    PeerCredentials cred;
    if (!read_peer_credentials(sock.native_handle(), cred)) {
      spdlog::error("SO_PEERCRED failed on a new connection: {}", std::strerror(errno));
      accept_unix();
      return;
    }
    const broker::PeerId id = next_id_++;
    broker::Identity who{cred.pid, cred.uid, cred.gid, id, cred.process_token, false};
    std::string description = "pid " + std::to_string(cred.pid) + " uid " +
                              std::to_string(cred.uid) + " comm '" + cred.comm + "'";
    if (cred.pidfd) {
      watch_process(id, who, std::move(cred.pidfd));
    } else if (cred.exited) {
      exited_at_accept_.insert(id);
    }
    const int fd = sock.release();
    admit(
        asio::generic::stream_protocol::socket(io_, asio::generic::stream_protocol(AF_UNIX, 0), fd),
        who, std::move(cred.groups), std::move(description), {}, cred.comm);
    accept_unix();
  });
}

void Server::accept_tcp() {
  tcp_acceptor_.async_accept([this](const asio::error_code& ec, asio::ip::tcp::socket sock) {
    if (stopping_ || ec == asio::error::operation_aborted) return;
    if (ec) {
      if (ec == asio::error::no_descriptors || ec.value() == ENFILE)
        shed_connection(tcp_acceptor_.native_handle());
      return retry_accept(
          tcp_retry_, [this] { accept_tcp(); }, ec);
    }
    asio::error_code ignored;
    sock.set_option(asio::ip::tcp::no_delay(true), ignored);
    sock.set_option(asio::socket_base::keep_alive(true), ignored);
    const int fd_opt = sock.native_handle();
    ::setsockopt(fd_opt, IPPROTO_TCP, TCP_KEEPIDLE, &kKeepIdleSeconds, sizeof(int));
    ::setsockopt(fd_opt, IPPROTO_TCP, TCP_KEEPINTVL, &kKeepIntervalSeconds, sizeof(int));
    ::setsockopt(fd_opt, IPPROTO_TCP, TCP_KEEPCNT, &kKeepCount, sizeof(int));
    const auto remote = sock.remote_endpoint(ignored);
    const std::string ip = remote.address().to_string();
    const broker::PeerId id = next_id_++;
    broker::Identity who{0, broker::kTcpUid, broker::kTcpUid, id, 0, true};
    const auto family = remote.address().is_v6() ? AF_INET6 : AF_INET;
    const int fd = sock.release();
    admit(asio::generic::stream_protocol::socket(
              io_, asio::generic::stream_protocol(family, IPPROTO_TCP), fd),
          who, {}, "tcp " + ip + ":" + std::to_string(remote.port()),
          TcpAuth::source_key(remote.address()));
    accept_tcp();
  });
}

void Server::admit(asio::generic::stream_protocol::socket socket, broker::Identity who,
                   std::vector<std::uint32_t> groups, std::string description,
                   std::string remote_ip, std::string comm) {
  const broker::PeerId id = who.client_id;
  auto conn = std::make_shared<Connection>(*this, std::move(socket), id, who,
                                           std::move(description), remote_ip);
  conn->set_comm(std::move(comm));
  if (who.tcp && options_.tls) conn->use_tls(*options_.tls);
  conns_.emplace(id, conn);
  if (conns_.size() == 1) {
    for (const auto& wake : on_first_client_)
      wake();
  }
  Errc e = Errc::ok;
  std::string_view why;
  if (who.tcp) {
    why = tcp_auth_.admit(*conn, std::chrono::milliseconds(options_.handshake_timeout_ms));
    if (!why.empty()) e = Errc::too_many_connections;
  } else {
    e = broker_.connect(id, who, broker::Clock::now(), groups);
    why = "connection limit reached for this uid or broker";
  }
  if (e != Errc::ok) {
    log_with(conn->log_fields(e), spdlog::level::warn, "refusing client {} ({}): {}", id,
             conn->description(), errc_name(e));
    conn->reject(e, why);
  } else {
    conn->start();
  }
  end_of_batch();
}

Errc Server::authenticated(Connection& c) {
  // The address's failure count stays: it delays only wrong tokens now, and a client that
  // got in must not give a guesser behind the same address fresh free attempts.
  tcp_auth_.release(c.id());
  c.mark_authenticated();
  return broker_.connect(c.id(), c.identity(), broker::Clock::now(), c.mapped_groups());
}

std::shared_ptr<Connection> Server::connection(broker::PeerId id) const {
  auto it = conns_.find(id);
  return it == conns_.end() ? nullptr : it->second;
}

Connection* Server::find_and_remember(broker::PeerId id) {
  auto it = conns_.find(id);
  if (it == conns_.end()) return nullptr;
  last_found_id_ = id;
  last_found_ = it->second.get();
  return last_found_;
}

void Server::watch_process(broker::PeerId id, const broker::Identity& who, proto::UniqueFd pidfd) {
  const ProcessKey key{who.pid, who.process_token};
  auto& w = processes_[key];
  if (!w) {
    auto fresh = std::make_unique<ProcessWatch>(io_);
    asio::error_code ec;
    fresh->pidfd.assign(pidfd.get(), ec);
    if (ec) {
      // The connection is then routed by pid as before watching: until its last
      // connection closes.
      log_with(LogFields{.pid = who.pid, .uid = who.uid}, spdlog::level::warn,
               "cannot watch pid {} for its exit: {}", who.pid, ec.message());
      processes_.erase(key);
      return;
    }
    (void)pidfd.release();
    fresh->pidfd.async_wait(asio::posix::stream_descriptor::wait_read,
                            [this, key](const asio::error_code& e) {
                              if (!e) on_process_exit(key);
                            });
    w = std::move(fresh);
  }
  w->conns.push_back(id);
}

void Server::unwatch_process(broker::PeerId id, const broker::Identity& who) {
  auto it = processes_.find(ProcessKey{who.pid, who.process_token});
  if (it == processes_.end()) return;
  std::erase(it->second->conns, id);
  // Closing the pidfd cancels the wait, whose handler then touches nothing.
  if (it->second->conns.empty()) processes_.erase(it);
}

void Server::on_process_exit(const ProcessKey& key) {
  auto it = processes_.find(key);
  if (it == processes_.end()) return;
  it->second->exited = true;
  // Copy: the broker's answers (resumed producers) do not close connections now, but the
  // list must not change under the loop whatever they do.
  const auto conns = it->second->conns;
  for (broker::PeerId id : conns)
    broker_.process_exited(id, broker::Clock::now());
  end_of_batch();
}

bool Server::has_exited(broker::PeerId peer, broker::Clock::time_point as_of) {
  Connection* c = find(peer);
  if (!c) return false;
  const auto& who = c->identity();
  if (who.process_token == 0) return exited_at_accept_.count(peer) != 0;
  auto it = processes_.find(ProcessKey{who.pid, who.process_token});
  if (it == processes_.end()) return false;
  ProcessWatch& w = *it->second;
  if (w.exited) return true;
  // `as_of` was read after the frame being handled: a poll made later covers it.
  if (as_of <= w.alive_after) return false;
  // The exit may be known to the kernel and not yet to us: a pidfd is readable from the
  // moment its process has exited (a zombie included).
  const auto before_poll = broker::Clock::now();
  pollfd p{w.pidfd.native_handle(), POLLIN, 0};
  w.exited = ::poll(&p, 1, 0) == 1 && (p.revents & POLLIN) != 0;
  if (!w.exited) w.alive_after = before_poll;
  return w.exited;
}

void Server::end_of_batch() {
  // flush() can close a connection; what that close answers others is flushed by the
  // end_of_batch() forget() posts.
  for (std::size_t i = 0; i < dirty_.size(); ++i) {
    if (Connection* c = find(dirty_[i])) c->flush_batch();
  }
  dirty_.clear();
  arm_deadline_timer();
}

void Server::arm_deadline_timer() {
  auto next = broker_.next_deadline();
  if (!next || *next == armed_for_) return;
  armed_for_ = *next;
  deadline_timer_.expires_at(*next);
  deadline_timer_.async_wait([this](const asio::error_code& ec) {
    if (ec) return;  // re-armed for another deadline
    armed_for_ = {};
    broker_.expire(broker::Clock::now());
    end_of_batch();
  });
}

void Server::forget(broker::PeerId id) {
  auto it = conns_.find(id);
  if (it == conns_.end()) return;
  if (it->second->identity().tcp && !it->second->authenticated()) tcp_auth_.release(id);
  broker_.disconnect(id, broker::Clock::now());
  if (!it->second->identity().tcp) {
    unwatch_process(id, it->second->identity());
    exited_at_accept_.erase(id);
  }
  // The connection may be mid-call up the stack; let it die after this handler returns.
  // The disconnect may also have answered other peers (failed requests): flush them.
  asio::post(io_, [this, keep = std::move(it->second)] { end_of_batch(); });
  if (last_found_id_ == id) last_found_ = nullptr;
  conns_.erase(it);
  if (stopping_ && conns_.empty() && on_stopped_) {
    drain_timer_.cancel();
    asio::post(io_, std::exchange(on_stopped_, nullptr));
  }
}

void Server::stop(std::function<void()> done) {
  if (stopping_) return;
  stopping_ = true;
  on_stopped_ = std::move(done);
  asio::error_code ec;
  acceptor_.close(ec);
  tcp_acceptor_.close(ec);
  unix_retry_.cancel();
  tcp_retry_.cancel();
  if (bound_.ino != 0) unlink_if_ours(options_.socket_path, bound_);
  broker_.fail_all_waiters(Errc::shutting_down, "qbusd is shutting down");
  std::vector<std::shared_ptr<Connection>> all;
  for (auto& [id, c] : conns_)
    all.push_back(c);
  for (auto& c : all)
    c->drain_and_close();
  end_of_batch();
  deadline_timer_.cancel();
  if (conns_.empty()) {
    if (on_stopped_) asio::post(io_, std::exchange(on_stopped_, nullptr));
    return;
  }
  drain_timer_.expires_after(std::chrono::seconds(5));
  drain_timer_.async_wait([this](const asio::error_code& e) {
    if (e) return;
    spdlog::warn("{} connections did not drain in time; closing them", conns_.size());
    std::vector<std::shared_ptr<Connection>> left;
    for (auto& [id, c] : conns_)
      left.push_back(c);
    for (auto& c : left)
      c->close();
  });
}

void Server::deliver(broker::PeerId to, std::uint64_t correlation, bool last,
                     const broker::Delivery& d) {
  if (Connection* c = find(to)) {
    c->deliver(correlation, last, d);
    if (tap_) [[unlikely]] {
      tap_->on_message(TapEvent{.kind = TapKind::deliver,
                                .client = *c,
                                .key = d.key,
                                .sender = &d.sender,
                                .size = d.region.id != 0 ? d.region.length : d.payload.size(),
                                .region = d.region.id != 0,
                                .payload = d.payload});
    }
  }
}

void Server::note_busy(broker::Clock::time_point started) {
  loop_.busy += broker::Clock::now() - started;
  ++loop_.batches;
  loop_.last_batch_frames = frames_in_batch_;
  frames_in_batch_ = 0;
}

void Server::fail(broker::PeerId to, std::uint64_t correlation, Errc code, std::string_view text) {
  if (Connection* c = find(to)) c->error(correlation, code, text);
}

void Server::denied(broker::PeerId peer, broker::Operation op, std::string_view key, int rule) {
  if (Connection* c = find(peer)) c->log_denial(op, key, rule);
}

void Server::cut_off(broker::PeerId peer, Errc code, std::string_view text) {
  Connection* c = find(peer);
  if (c == nullptr || c->closing()) return;
  log_with(c->log_fields(code), spdlog::level::warn, "client {}: disconnected ({}): {}", peer,
           errc_name(code), text);
  // Closed from the loop, not from inside the broker's call; the ERROR already sent goes
  // out first, within the close grace.
  asio::post(io_, [this, peer] {
    if (Connection* conn = find(peer)) {
      conn->drain_and_close();
      end_of_batch();
    }
  });
}

void Server::confirm(broker::PeerId to, std::uint64_t correlation) {
  if (Connection* c = find(to)) c->ok(correlation);
}

void Server::resume(broker::PeerId producer) {
  asio::post(io_, [this, producer] {
    if (Connection* c = find(producer)) c->unblock();
  });
}

bool Server::wants_more(broker::PeerId peer) {
  Connection* c = find(peer);
  // A closing connection takes nothing more: what it would be given would be lost.
  if (!c || c->closing()) return false;
  if (!c->backed_up() && uid_has_room(*c->uid_output()) &&
      fds_in_flight_ < options_.max_fds_in_flight) {
    return true;
  }
  if (fds_in_flight_ >= options_.max_fds_in_flight) fd_starved_ = true;
  if (c->starve()) c->uid_output()->starved.push_back(peer);
  return false;
}

bool Server::uid_has_room(const UidOutput& u) const {
  const auto& l = broker_.limits();
  return u.bytes <= l.uid_max_outbound_bytes && u.fds < l.uid_max_pending_fds;
}

UidOutput& Server::attach_output(std::uint32_t uid) {
  UidOutput& u = uid_output_[uid];
  ++u.connections;
  return u;
}

void Server::detach_output(std::uint32_t uid) {
  auto it = uid_output_.find(uid);
  if (it != uid_output_.end() && --it->second.connections == 0) uid_output_.erase(it);
}

void Server::fds_in_flight(Connection& c, int delta) {
  if (delta == 0) return;
  if (UidOutput* u = c.uid_output()) u->fds += static_cast<std::uint32_t>(delta);
  fds_in_flight_ += static_cast<std::uint64_t>(static_cast<std::int64_t>(delta));
}

std::optional<std::string> Server::fd_budget_refusal(const Connection& c) const {
  const UidOutput* u = c.uid_output();
  if (u && u->fds >= broker_.limits().uid_max_pending_fds) {
    return "uid " + std::to_string(c.identity().uid) + " has " + std::to_string(u->fds) +
           " region fds waiting to be read by its connections (limit " +
           std::to_string(broker_.limits().uid_max_pending_fds) + "); read your answers first";
  }
  if (fds_in_flight_ >= options_.max_fds_in_flight) {
    return "the broker has " + std::to_string(fds_in_flight_) +
           " region fds waiting to be read by clients (its limit); try again later";
  }
  return std::nullopt;
}

void Server::output_drained(Connection& c) {
  UidOutput* u = c.uid_output();
  if (!u || fds_in_flight_ >= options_.max_fds_in_flight) return;
  const auto wake_from = [this](UidOutput& uo) {
    if (uo.starved.empty() || !uid_has_room(uo)) return;
    std::erase_if(uo.starved, [this](broker::PeerId id) {
      Connection* s = find(id);
      if (!s || s->closing()) return true;
      if (s->backed_up()) return false;  // its own backlog: it wakes when it has written
      s->unstarve();
      wake_.push_back(id);
      return true;
    });
  };
  if (fd_starved_) {
    // Rare: the broker-wide fd budget was spent. Anyone may have been refused for it.
    fd_starved_ = false;
    for (auto& [uid, uo] : uid_output_)
      wake_from(uo);
  } else {
    wake_from(*u);
  }
  if (wake_.empty() || wake_posted_) return;
  wake_posted_ = true;
  // Posted: output_drained runs inside flush(), which may run inside another connection's
  // batch, and serving delivers to (and flushes) other connections.
  asio::post(io_, [this] {
    wake_posted_ = false;
    std::vector<broker::PeerId> ids;
    ids.swap(wake_);
    for (const broker::PeerId id : ids)
      broker_.output_ready(id, broker::Clock::now());
    end_of_batch();
  });
}

bool Server::disconnect(broker::PeerId id, Errc code, std::string_view text) {
  Connection* c = find(id);
  if (c == nullptr) return false;
  // Already on its way out (a framing error, a refused handshake): it is closing anyway.
  if (c->closing()) return true;
  // reject() closes by itself only for fatal codes and before WELCOME; an operator's
  // disconnect closes a welcomed connection too.
  c->reject(code, text);
  c->drain_and_close();
  end_of_batch();
  return true;
}

void Server::attach_journal(storage::Journal* journal) {
  journal_ = journal;
  broker_.set_journal(journal);
}

void Server::on_journal_progress() {
  if (!journal_) return;
  const storage::JournalProgress p = journal_->progress();
  // A connection that resumes reading may send again and join the list meanwhile.
  std::vector<broker::PeerId> waiting;
  waiting.swap(journal_waiters_);
  for (const broker::PeerId id : waiting) {
    Connection* c = find(id);
    if (c && !c->journaled(p) &&
        std::find(journal_waiters_.begin(), journal_waiters_.end(), id) == journal_waiters_.end()) {
      journal_waiters_.push_back(id);
    }
  }
  end_of_batch();
}

}  // namespace qbus::daemon
