#include "net/tls.hpp"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/socket.h>

#include <cerrno>
#include <stdexcept>

namespace qbus::daemon {
namespace {

// Plaintext the channel encrypts per write(): a few records, so that at most this much
// (plus TLS overhead) sits in the carrier beyond the connection's own output bound.
constexpr std::size_t kWriteChunk = 64 * 1024;
// The first byte of a TLS handshake record (ContentType handshake).
constexpr unsigned char kTlsHandshakeRecord = 0x16;

[[noreturn]] void bad(const std::string& field, const std::string& path,
                      const asio::error_code& ec) {
  std::string reason = ec.message();
  if (ec.category() == asio::error::get_ssl_category()) {
    char text[256];
    ::ERR_error_string_n(static_cast<unsigned long>(ec.value()), text, sizeof(text));
    reason = text;
  }
  throw std::runtime_error(field + ": cannot use " + path + ": " + reason);
}

bool would_block(const asio::error_code& ec) {
  return ec == asio::error::would_block || ec == asio::error::try_again;
}

// OpenSSL's short reason for a failed handshake ("certificate verify failed", "wrong
// version number"), for the log.
std::string reason(const asio::error_code& ec) {
  if (ec.category() == asio::error::get_ssl_category()) {
    if (const char* r = ::ERR_reason_error_string(static_cast<unsigned long>(ec.value()))) {
      return r;
    }
  }
  if (ec == asio::error::eof) return "the peer closed the connection";
  return ec.message();
}

}  // namespace

TlsServer::TlsServer(const TlsServerConfig& config) : context(asio::ssl::context::tls_server) {
  asio::error_code ec;
  SSL_CTX* ctx = context.native_handle();
  ::SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  // Renegotiation would let a peer make the engine write while the connection reads.
  context.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::single_dh_use |
                      SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  // Clients reconnect rarely; tickets would be bytes sent after the handshake for nothing.
  ::SSL_CTX_set_num_tickets(ctx, 0);
  ::SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  context.use_certificate_chain_file(config.certificate, ec);
  if (ec) bad("tcp.tls.certificate", config.certificate, ec);
  context.use_private_key(asio::buffer(config.key_pem), asio::ssl::context::pem, ec);
  if (ec && ec.category() == asio::error::get_ssl_category() &&
      ERR_GET_REASON(static_cast<unsigned long>(ec.value())) == X509_R_KEY_VALUES_MISMATCH) {
    throw std::runtime_error("tcp.tls.key: does not match tcp.tls.certificate");
  }
  if (ec) bad("tcp.tls.key", "the key file", ec);
  if (::SSL_CTX_check_private_key(ctx) != 1) {
    throw std::runtime_error("tcp.tls.key: does not match tcp.tls.certificate");
  }
  if (!config.client_ca.empty()) {
    context.load_verify_file(config.client_ca, ec);
    if (ec) bad("tcp.tls.client_ca", config.client_ca, ec);
    // Tells clients which CAs their certificate must come from.
    if (STACK_OF(X509_NAME)* names = ::SSL_load_client_CA_file(config.client_ca.c_str())) {
      ::SSL_CTX_set_client_CA_list(ctx, names);
    }
    context.set_verify_mode(asio::ssl::verify_peer | asio::ssl::verify_fail_if_no_peer_cert);
    client_certificates = true;
  } else {
    context.set_verify_mode(asio::ssl::verify_none);
  }
  clients = config.clients;
}

const TlsPeerMapping* TlsServer::mapping(const std::string& cn) const {
  for (const auto& c : clients)
    if (c.cn == cn) return &c;
  return nullptr;
}

std::size_t TlsCarrier::receive(void* data, std::size_t size, asio::error_code& ec) {
  ec = {};
  while (true) {
    const ssize_t n = ::recv(fd_, data, size, MSG_DONTWAIT);
    if (n > 0) {
      if (!first_byte_seen) {
        first_byte_seen = true;
        first_byte_tls = *static_cast<const unsigned char*>(data) == kTlsHandshakeRecord;
      }
      return static_cast<std::size_t>(n);
    }
    if (n == 0) {
      ec = asio::error::eof;
      return 0;
    }
    if (errno == EINTR) continue;
    ec = asio::error_code(errno, asio::system_category());
    return 0;
  }
}

TlsChannel::TlsChannel(TlsServer& server, int fd, asio::any_io_executor ex)
    : fd_(fd), stream_(TlsCarrier(fd, std::move(ex)), server.context) {}

TlsChannel::Progress TlsChannel::handshake(std::string& why) {
  asio::error_code ec;
  if (!flush(ec)) return ec ? (why = reason(ec), Progress::failed) : Progress::want_write;
  if (established_) return Progress::done;
  stream_.handshake(asio::ssl::stream_base::server, ec);
  if (!ec) {
    established_ = true;
    // The client's first frames may have come with its last handshake bytes and wait in
    // the engine already: the socket will not announce them again.
    input_pending_ = true;
  } else if (!would_block(ec)) {
    why = reason(ec);
    if (peer_spoke_plaintext()) {
      carrier().out.clear();  // a TLS alert would garble the plain ERROR the peer gets instead
    } else {
      asio::error_code ignored;
      (void)flush(ignored);  // the alert, if the socket takes it: the client learns why
    }
    return Progress::failed;
  }
  if (!flush(ec)) return ec ? (why = reason(ec), Progress::failed) : Progress::want_write;
  return established_ ? Progress::done : Progress::want_read;
}

std::string TlsChannel::peer_cn() const {
  SSL* ssl = const_cast<asio::ssl::stream<TlsCarrier>&>(stream_).native_handle();
  X509* cert = ::SSL_get0_peer_certificate(ssl);
  if (!cert || ::SSL_get_verify_result(ssl) != X509_V_OK) return {};
  char cn[256] = {};
  const int n =
      ::X509_NAME_get_text_by_NID(::X509_get_subject_name(cert), NID_commonName, cn, sizeof(cn));
  return n > 0 ? std::string(cn, static_cast<std::size_t>(n)) : std::string();
}

std::size_t TlsChannel::read(std::span<std::byte> dst, asio::error_code& ec) {
  std::size_t got = 0;
  ec = {};
  while (got < dst.size()) {
    const std::size_t n = stream_.read_some(asio::buffer(dst.data() + got, dst.size() - got), ec);
    got += n;
    if (ec) break;
  }
  // Stopped on a full buffer: the engine may hold more than the socket will announce.
  input_pending_ = !ec;
  if (got > 0 && ec) {
    // The bytes first, as a socket gives them: frames sent just before the peer closed
    // must be handled. An end or error comes again at the next read, which is made soon.
    if (!would_block(ec)) input_pending_ = true;
    ec = {};
  }
  return got;
}

std::size_t TlsChannel::write(std::span<const std::byte> src, asio::error_code& ec) {
  if (!flush(ec)) {
    if (!ec) ec = asio::error::would_block;
    return 0;
  }
  std::size_t taken = 0;
  const std::size_t limit = std::min(src.size(), kWriteChunk);
  while (taken < limit) {
    taken += stream_.write_some(asio::buffer(src.data() + taken, limit - taken), ec);
    if (ec) return taken;
  }
  asio::error_code later;  // a full socket now is the next call's would_block
  if (!flush(later) && later) ec = later;
  return taken;
}

void TlsChannel::close_notify() {
  asio::error_code ec;
  stream_.shutdown(ec);  // would_block: the peer's close_notify is not awaited
  (void)flush(ec);
}

bool TlsChannel::flush(asio::error_code& ec) {
  ec = {};
  auto& out = carrier().out;
  while (!out.empty()) {
    const auto data = out.readable();
    const ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        ec = asio::error_code(errno, asio::system_category());
      }
      return false;
    }
    out.consume(static_cast<std::size_t>(n));
  }
  return true;
}

}  // namespace qbus::daemon
