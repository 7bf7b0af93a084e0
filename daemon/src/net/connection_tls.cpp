// Connection's TLS handshake (PROTOCOL.md section 10): run before HELLO on a connection of
// a TLS listener, bounded by the handshake timeout that also bounds HELLO. Reading and
// writing through an established session is connection.cpp's and connection_output.cpp's.
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include "net/connection.hpp"
#include "net/server.hpp"

namespace qbus::daemon {
namespace {

constexpr std::string_view kPlaintextRefusal =
    "this port speaks TLS: connect with a tls:HOST:PORT address";

}  // namespace

void Connection::use_tls(TlsServer& tls) {
  tls_server_ = &tls;
  tls_ = std::make_unique<TlsChannel>(tls, socket_.native_handle(), socket_.get_executor());
}

void Connection::continue_handshake() {
  std::string why;
  const auto progress = tls_->handshake(why);
  if (progress == TlsChannel::Progress::done) {
    tls_established();
    return;
  }
  if (progress == TlsChannel::Progress::failed) {
    tls_failed(why);
    server_.end_of_batch();
    return;
  }
  const auto wait =
      progress == TlsChannel::Progress::want_read ? Socket::wait_read : Socket::wait_write;
  socket_.async_wait(wait, [self = shared_from_this()](const asio::error_code& ec) {
    if (ec || self->closed_ || self->held_) return;
    self->continue_handshake();
  });
}

void Connection::tls_established() {
  if (const std::string cn = tls_->peer_cn(); !cn.empty()) {
    description_ += " cert '" + cn + "'";
    if (const TlsPeerMapping* m = tls_server_->mapping(cn)) {
      // Nothing is buffered yet, so the output accounting moves to the new uid as is.
      server_.detach_output(identity_.uid);
      identity_.uid = m->uid;
      identity_.gid = m->gid;
      uid_out_ = &server_.attach_output(identity_.uid);
      mapped_ = m;
      description_ += " as uid " + std::to_string(m->uid);
    }
  }
  log_with(log_fields(), spdlog::level::debug, "client {} ({}): TLS handshake done", id_,
           description_);
  wait_readable();
}

void Connection::tls_failed(std::string_view why) {
  const auto verdict = server_.tcp_auth().handshake_failed(remote_ip_);
  const bool plaintext = tls_->peer_spoke_plaintext();
  // Sampled per address, as wrong tokens are: a remote host must not flood the log.
  if (verdict.failures <= 3 || verdict.failures % 100 == 0) {
    log_with(log_fields(Errc::auth_failed), spdlog::level::warn,
             "client {} ({}): tls_handshake_failed: {}{} ({} failures from this address)", id_,
             description_, why, plaintext ? " (it sent plain qbus, not TLS)" : "",
             verdict.failures);
  }
  if (plaintext) {
    // Best effort, one frame into an empty socket buffer: a plain client learns what to do.
    proto::ByteBuffer b;
    proto::append_error(b, 0, Errc::auth_failed, kPlaintextRefusal);
    const auto bytes = b.readable();
    (void)!::send(socket_.native_handle(), bytes.data(), bytes.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  }
  if (verdict.delay.count() == 0) {
    close();
    return;
  }
  // As for a wrong token: the connection keeps one of its address's few unauthenticated
  // slots until the delay ends, which is what slows down a peer trying certificates.
  held_ = true;
  handshake_timer_.expires_after(verdict.delay);
  handshake_timer_.async_wait([self = shared_from_this()](const asio::error_code& ec) {
    if (!ec) self->close();
  });
}

}  // namespace qbus::daemon
