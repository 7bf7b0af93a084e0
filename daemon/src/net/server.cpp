#include "net/server.hpp"

#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <stdexcept>

#include "net/connection.hpp"
#include "net/unix_socket.hpp"

namespace qbus::daemon {
namespace {

constexpr std::size_t kScratchSize = 256 * 1024;

std::string read_comm(std::uint32_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/comm");
  std::string comm;
  std::getline(f, comm);
  return comm;
}

}  // namespace

Server::Server(asio::io_context& io, ServerOptions options)
    : io_(io),
      options_(std::move(options)),
      broker_(options_.limits, *this),
      acceptor_(io),
      deadline_timer_(io),
      drain_timer_(io),
      scratch_(kScratchSize) {}

Server::~Server() = default;

void Server::start() {
  bound_ = bind_unix_listener(options_.socket_path, options_.socket_mode);
  acceptor_.assign(asio::local::stream_protocol(), bound_.fd.release());
  accept_next();
}

void Server::accept_next() {
  acceptor_.async_accept(
      [this](const asio::error_code& ec, asio::local::stream_protocol::socket sock) {
        if (stopping_ || ec == asio::error::operation_aborted) return;
        if (ec) {
          // EMFILE and friends: log, then retry shortly rather than spin on the same error.
          spdlog::error("accept on {} failed: {}", options_.socket_path, ec.message());
          drain_timer_.expires_after(std::chrono::milliseconds(100));
          drain_timer_.async_wait([this](const asio::error_code& e) {
            if (!e && !stopping_) accept_next();
          });
          return;
        }
        ucred cred{};
        socklen_t len = sizeof(cred);
        if (::getsockopt(sock.native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
          spdlog::error("SO_PEERCRED failed on a new connection: {}", std::strerror(errno));
          accept_next();
          return;
        }
        const broker::PeerId id = next_id_++;
        broker::Identity who{static_cast<std::uint32_t>(cred.pid), cred.uid, cred.gid, id};
        const int fd = sock.release();
        Connection::Socket generic(io_, asio::generic::stream_protocol(AF_UNIX, 0), fd);
        auto conn =
            std::make_shared<Connection>(*this, std::move(generic), id, who, read_comm(who.pid));
        conns_.emplace(id, conn);
        if (auto e = broker_.connect(id, who); e != Errc::ok) {
          spdlog::warn("refusing client pid {} uid {}: {}", who.pid, who.uid, errc_name(e));
          conn->reject(e, "connection limit reached for this uid or broker");
        } else {
          conn->start();
        }
        end_of_batch();
        accept_next();
      });
}

Connection* Server::find(broker::PeerId id) {
  auto it = conns_.find(id);
  return it == conns_.end() ? nullptr : it->second.get();
}

void Server::mark_dirty(broker::PeerId id) {
  if (Connection* c = find(id); c && !c->flush_pending) {
    c->flush_pending = true;
    dirty_.push_back(id);
  }
}

void Server::end_of_batch() {
  // flush() can close a connection, and a close can dirty nothing else, so one pass does.
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
  broker_.disconnect(id);
  // The connection may be mid-call up the stack; let it die after this handler returns.
  asio::post(io_, [keep = std::move(it->second)] {});
  conns_.erase(it);
  if (stopping_ && conns_.empty() && on_stopped_) {
    drain_timer_.cancel();
    auto done = std::move(on_stopped_);
    on_stopped_ = nullptr;
    asio::post(io_, std::move(done));
  }
}

void Server::stop(std::function<void()> done) {
  if (stopping_) return;
  stopping_ = true;
  on_stopped_ = std::move(done);
  asio::error_code ec;
  acceptor_.close(ec);
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

void Server::deliver(broker::PeerId to, std::uint64_t correlation, bool last, std::string_view key,
                     const broker::Identity& sender, broker::Bytes payload) {
  Connection* c = find(to);
  if (!c) return;
  proto::Deliver d{sender.pid, sender.uid, sender.client_id, key, payload};
  proto::append_deliver(c->out(), correlation, last ? proto::kFlagLast : 0, d);
  mark_dirty(to);
}

void Server::fail(broker::PeerId to, std::uint64_t correlation, Errc code, std::string_view text) {
  Connection* c = find(to);
  if (!c) return;
  proto::append_error(c->out(), correlation, code, text);
  mark_dirty(to);
}

void Server::resume(broker::PeerId producer) {
  asio::post(io_, [this, producer] {
    if (Connection* c = find(producer)) c->unblock();
  });
}

bool Server::wants_more(broker::PeerId peer) {
  Connection* c = find(peer);
  return c && !c->backed_up();
}

}  // namespace qbus::daemon
