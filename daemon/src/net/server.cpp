#include "net/server.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <stdexcept>

#include "net/connection.hpp"
#include "net/memfd_backing.hpp"
#include "net/peer_identity.hpp"
#include "qbus/proto/address.hpp"

namespace qbus::daemon {
namespace {

constexpr std::size_t kScratchSize = 256 * 1024;
constexpr std::size_t kMaxTrackedAuthAddresses = 4096;
constexpr std::uint32_t kFreeAuthFailures = 3;
constexpr auto kMaxAuthDelay = std::chrono::seconds(10);
constexpr auto kAuthMemory = std::chrono::minutes(15);
// Unauthenticated TCP connections: from one address, and in all.
constexpr std::uint32_t kMaxPreauthPerAddress = 8;
constexpr std::uint32_t kMaxPreauthTotal = 256;
// A TCP peer that vanishes without a FIN is noticed within about two minutes.
constexpr int kKeepIdleSeconds = 60;
constexpr int kKeepIntervalSeconds = 10;
constexpr int kKeepCount = 6;

// Who failed logins and pre-auth connections are counted against: the IPv4 address, or
// the /64 of an IPv6 address (one host can use a whole /64, so one address would be free).
std::string source_key(const asio::ip::address& a) {
  if (a.is_v6()) {
    const auto v6 = a.to_v6();
    if (v6.is_v4_mapped()) return asio::ip::make_address_v4(asio::ip::v4_mapped, v6).to_string();
    auto bytes = v6.to_bytes();
    std::fill(bytes.begin() + 8, bytes.end(), static_cast<unsigned char>(0));
    return asio::ip::address_v6(bytes).to_string() + "/64";
  }
  return a.to_string();
}

}  // namespace

Server::Server(asio::io_context& io, ServerOptions options)
    : io_(io),
      options_(std::move(options)),
      backing_(options_.limits.regions.max_region_bytes, options_.region_pool_bytes),
      broker_(options_.limits, *this, backing_),
      acceptor_(io),
      tcp_acceptor_(io),
      unix_retry_(io),
      tcp_retry_(io),
      deadline_timer_(io),
      drain_timer_(io),
      scratch_(kScratchSize) {}

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
  acceptor_.assign(asio::local::stream_protocol(), unix_fd);
  if (!options_.tcp_listen.empty()) start_tcp();
  accept_unix();
  if (tcp_acceptor_.is_open()) accept_tcp();
}

void Server::set_limits(const broker::Limits& limits, std::size_t max_outbound_bytes,
                        std::uint32_t handshake_timeout_ms, std::uint64_t region_pool_bytes) {
  broker::Limits l = limits;
  l.max_payload = options_.limits.max_payload;
  options_.limits = l;
  options_.max_outbound_bytes = max_outbound_bytes;
  options_.handshake_timeout_ms = handshake_timeout_ms;
  options_.region_pool_bytes = region_pool_bytes;
  backing_.set_max_region_bytes(l.regions.max_region_bytes);
  backing_.set_pool_bytes(region_pool_bytes);
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
        "TCP listener on {} is reachable from other hosts; clients must present the "
        "token",
        tcp_endpoint());
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
    if (ec)
      return retry_accept(
          unix_retry_, [this] { accept_unix(); }, ec);
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
    const int fd = sock.release();
    admit(
        asio::generic::stream_protocol::socket(io_, asio::generic::stream_protocol(AF_UNIX, 0), fd),
        who, std::move(description), {}, cred.comm);
    accept_unix();
  });
}

void Server::accept_tcp() {
  tcp_acceptor_.async_accept([this](const asio::error_code& ec, asio::ip::tcp::socket sock) {
    if (stopping_ || ec == asio::error::operation_aborted) return;
    if (ec)
      return retry_accept(
          tcp_retry_, [this] { accept_tcp(); }, ec);
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
          who, "tcp " + ip + ":" + std::to_string(remote.port()), source_key(remote.address()));
    accept_tcp();
  });
}

void Server::admit(asio::generic::stream_protocol::socket socket, broker::Identity who,
                   std::string description, std::string remote_ip, std::string comm) {
  const broker::PeerId id = who.client_id;
  auto conn = std::make_shared<Connection>(*this, std::move(socket), id, who,
                                           std::move(description), remote_ip);
  conn->set_comm(std::move(comm));
  conns_.emplace(id, conn);
  Errc e = Errc::ok;
  if (who.tcp) {
    auto& from_ip = preauth_by_ip_[remote_ip];
    if (from_ip >= kMaxPreauthPerAddress || preauth_total_ >= kMaxPreauthTotal) {
      e = Errc::too_many_connections;
    }
    ++from_ip;  // counted either way; forget() gives it back
    ++preauth_total_;
  } else {
    e = broker_.connect(id, who, broker::Clock::now());
  }
  if (e != Errc::ok) {
    spdlog::warn("refusing client {} ({}): {}", id, conn->description(), errc_name(e));
    conn->reject(e, who.tcp ? "too many unauthenticated connections"
                            : "connection limit reached for this uid or broker");
  } else {
    conn->start();
  }
  end_of_batch();
}

void Server::end_preauth(const std::string& address) {
  auto it = preauth_by_ip_.find(address);
  if (it == preauth_by_ip_.end()) return;
  if (--it->second == 0) preauth_by_ip_.erase(it);
  --preauth_total_;
}

Errc Server::authenticated(Connection& c) {
  auth_failures_.erase(c.remote_ip());
  end_preauth(c.remote_ip());
  c.mark_authenticated();
  return broker_.connect(c.id(), c.identity(), broker::Clock::now());
}

std::chrono::milliseconds Server::auth_delay(const std::string& address) const {
  auto it = auth_failures_.find(address);
  // After kFreeAuthFailures failures, each further attempt waits 250 ms, then doubling.
  if (it == auth_failures_.end() || it->second.count < kFreeAuthFailures ||
      broker::Clock::now() - it->second.last > kAuthMemory) {
    return std::chrono::milliseconds(0);
  }
  const auto shift = std::min<std::uint32_t>(it->second.count - kFreeAuthFailures, 16);
  return std::min<std::chrono::milliseconds>(std::chrono::milliseconds(250LL << shift),
                                             kMaxAuthDelay);
}

std::uint32_t Server::auth_failed(const std::string& address) {
  const auto now = broker::Clock::now();
  if (auth_failures_.size() >= kMaxTrackedAuthAddresses && !auth_failures_.count(address)) {
    std::erase_if(auth_failures_, [&](const auto& e) { return now - e.second.last > kAuthMemory; });
    if (auth_failures_.size() >= kMaxTrackedAuthAddresses) {
      // Still full: forget the address heard from least recently, not an arbitrary one.
      auth_failures_.erase(std::min_element(
          auth_failures_.begin(), auth_failures_.end(),
          [](const auto& x, const auto& y) { return x.second.last < y.second.last; }));
    }
  }
  auto& f = auth_failures_[address];
  if (now - f.last > kAuthMemory) f.count = 0;
  ++f.count;
  f.last = now;
  return f.count;
}

Connection* Server::find(broker::PeerId id) {
  // Deliveries come in runs to one receiver: remember the last one found.
  if (id == last_found_id_ && last_found_) return last_found_;
  auto it = conns_.find(id);
  if (it == conns_.end()) return nullptr;
  last_found_id_ = id;
  last_found_ = it->second.get();
  return last_found_;
}

void Server::mark_dirty(broker::PeerId id) {
  if (Connection* c = find(id); c && !c->flush_pending) {
    c->flush_pending = true;
    dirty_.push_back(id);
  }
}

void Server::end_of_batch() {
  // flush() can close a connection; what that close answers others is flushed by the
  // end_of_batch() forget() posts.
  for (std::size_t i = 0; i < dirty_.size(); ++i) {
    if (Connection* c = find(dirty_[i])) {
      c->flush_pending = false;
      c->flush();
    }
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
  if (it->second->identity().tcp && !it->second->authenticated()) {
    end_preauth(it->second->remote_ip());
  }
  broker_.disconnect(id);
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
  Connection* c = find(to);
  if (!c) return;
  c->count_received();
  proto::Deliver frame{d.sender.pid, d.sender.uid, d.sender.client_id,
                       d.request_id, d.key,        d.payload};
  if (d.region) {
    deliver_region(*c, correlation, last, frame, d.region);
    return;
  }
  proto::append_deliver(c->out(), correlation, last ? proto::kFlagLast : 0, frame);
  mark_dirty(to);
}

void Server::deliver_region(Connection& c, std::uint64_t correlation, bool last,
                            const proto::Deliver& fields, const broker::RegionRef& ref) {
  const int handle = broker_.regions().backing_handle(ref.id);
  if (c.identity().tcp) {
    // No fds over TCP: the bytes go inline, read from a mapping of our own.
    auto map = proto::shm::map_readonly(handle, ref.offset, ref.length);
    if (!map) {
      spdlog::error("client {} ({}): cannot map region {} to send it inline: {}", c.id(),
                    c.description(), ref.id, map.error().text);
      c.reject(Errc::internal_error, "the broker could not read a region message for you");
      c.drain_and_close();
      return;
    }
    c.stream_inline(ref.id, correlation, last, fields, std::move(map).value());
    return;
  }
  std::string why;
  auto fd = region_fd_for_peer(handle, false, why);
  if (!fd) {
    // The message is gone from its queue already; the peer must learn it lost one.
    spdlog::error("client {} ({}): cannot pass region {}: {}", c.id(), c.description(), ref.id,
                  why);
    c.reject(Errc::internal_error, "the broker could not pass a region message's fd");
    c.drain_and_close();
    return;
  }
  c.pass_fd(std::move(fd));
  const auto* info = broker_.regions().find(ref.id);
  proto::DeliverRegion m;
  m.sender_pid = fields.sender_pid;
  m.sender_uid = fields.sender_uid;
  m.sender_client_id = fields.sender_client_id;
  m.request_id = fields.request_id;
  m.region_id = ref.id;
  m.region_size = info->size;
  m.offset = ref.offset;
  m.length = ref.length;
  m.key = fields.key;
  proto::append_deliver_region(c.out(), correlation, last ? proto::kFlagLast : 0, m);
  mark_dirty(c.id());
}

void Server::fail(broker::PeerId to, std::uint64_t correlation, Errc code, std::string_view text) {
  Connection* c = find(to);
  if (!c) return;
  proto::append_error(c->out(), correlation, code, text);
  mark_dirty(to);
}

void Server::confirm(broker::PeerId to, std::uint64_t correlation) {
  Connection* c = find(to);
  if (!c) return;
  proto::append_empty(c->out(), proto::FrameType::ok, correlation);
  mark_dirty(to);
}

void Server::resume(broker::PeerId producer) {
  asio::post(io_, [this, producer] {
    if (Connection* c = find(producer)) c->unblock();
  });
}

bool Server::wants_more(broker::PeerId peer) {
  Connection* c = find(peer);
  // A closing connection takes nothing more: what it would be given would be lost.
  return c && !c->closing() && !c->backed_up();
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

}  // namespace qbus::daemon
