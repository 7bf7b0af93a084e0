#include "tls.hpp"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "qbus/client.hpp"

namespace qbus::detail {
namespace {

using Clock = std::chrono::steady_clock;

std::string env_or(const std::string& given, const char* name) {
  if (!given.empty()) return given;
  const char* v = std::getenv(name);
  return v ? v : "";
}

// OpenSSL's first queued error, as text, and the queue cleared.
std::string ssl_error_text() {
  const unsigned long e = ::ERR_get_error();
  ::ERR_clear_error();
  if (e == 0) return std::strerror(errno);
  const char* reason = ::ERR_reason_error_string(e);
  return reason ? reason : "error " + std::to_string(e);
}

bool is_ip(const std::string& host) {
  unsigned char buf[16];
  return ::inet_pton(AF_INET, host.c_str(), buf) == 1 ||
         ::inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

}  // namespace

TlsFiles resolve_tls_files(const std::string& ca, const std::string& cert, const std::string& key) {
  return TlsFiles{env_or(ca, "QBUS_TLS_CA"), env_or(cert, "QBUS_TLS_CERT"),
                  env_or(key, "QBUS_TLS_KEY")};
}

TlsClient::TlsClient(int fd, const std::string& host, const TlsFiles& files,
                     const std::string& shown, Clock::time_point deadline) {
  ctx_.reset(::SSL_CTX_new(::TLS_client_method()));
  if (!ctx_) throw Error(Errc::io_error, "cannot make a TLS context: " + ssl_error_text());
  ::SSL_CTX_set_min_proto_version(ctx_.get(), TLS1_2_VERSION);
  const bool own_ca = !files.ca.empty();
  if (own_ca ? ::SSL_CTX_load_verify_locations(ctx_.get(), files.ca.c_str(), nullptr) != 1
             : ::SSL_CTX_set_default_verify_paths(ctx_.get()) != 1) {
    throw Error(
        Errc::invalid_argument,
        "cannot use TLS CA file " + (own_ca ? files.ca : "(system)") + ": " + ssl_error_text());
  }
  if (files.cert.empty() != files.key.empty()) {
    throw Error(Errc::invalid_argument,
                "a TLS client certificate needs its key and a key its certificate (QBUS_TLS_CERT, "
                "QBUS_TLS_KEY)");
  }
  if (!files.cert.empty()) {
    if (::SSL_CTX_use_certificate_chain_file(ctx_.get(), files.cert.c_str()) != 1) {
      throw Error(Errc::invalid_argument,
                  "cannot use TLS certificate " + files.cert + ": " + ssl_error_text());
    }
    if (::SSL_CTX_use_PrivateKey_file(ctx_.get(), files.key.c_str(), SSL_FILETYPE_PEM) != 1 ||
        ::SSL_CTX_check_private_key(ctx_.get()) != 1) {
      throw Error(Errc::invalid_argument,
                  "cannot use TLS key " + files.key + ": " + ssl_error_text());
    }
  }
  ::SSL_CTX_set_verify(ctx_.get(), SSL_VERIFY_PEER, nullptr);
  ssl_.reset(::SSL_new(ctx_.get()));
  if (!ssl_) throw Error(Errc::io_error, "cannot make a TLS session: " + ssl_error_text());
  // Partial writes and a moving buffer: the session retries with whatever its output
  // buffer holds then, which starts with the bytes not taken.
  ::SSL_set_mode(ssl_.get(), SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  ::SSL_set_fd(ssl_.get(), fd);
  // The broker's certificate must name what the client dialled: an IP address in its SAN,
  // or the host name.
  X509_VERIFY_PARAM* param = ::SSL_get0_param(ssl_.get());
  if (is_ip(host)) {
    ::X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str());
  } else {
    ::SSL_set_tlsext_host_name(ssl_.get(), host.c_str());
    ::SSL_set1_host(ssl_.get(), host.c_str());
  }
  while (true) {
    const int rc = ::SSL_connect(ssl_.get());
    if (rc == 1) return;
    const int e = ::SSL_get_error(ssl_.get(), rc);
    if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
      std::string why = ssl_error_text();
      if (const long v = ::SSL_get_verify_result(ssl_.get()); v != X509_V_OK) {
        why += " (" + std::string(::X509_verify_cert_error_string(v)) + ")";
      }
      throw Error(Errc::connect_failed, "TLS handshake with " + shown + " failed: " + why);
    }
    pollfd p{fd, static_cast<short>(e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT), 0};
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0 || ::poll(&p, 1, static_cast<int>(left)) == 0) {
      throw Error(Errc::connect_failed, "TLS handshake with " + shown + " timed out");
    }
  }
}

std::size_t TlsClient::write_some(std::span<const std::byte> data) {
  if (data.empty()) return 0;
  const int n = ::SSL_write(ssl_.get(), data.data(),
                            static_cast<int>(std::min<std::size_t>(data.size(), 1u << 30)));
  if (n > 0) return static_cast<std::size_t>(n);
  const int e = ::SSL_get_error(ssl_.get(), n);
  if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) return 0;
  if (e == SSL_ERROR_ZERO_RETURN ||
      (e == SSL_ERROR_SYSCALL && (errno == EPIPE || errno == ECONNRESET))) {
    ::ERR_clear_error();
    throw Error(Errc::connection_closed, "write to broker: the TLS session ended");
  }
  throw Error(Errc::io_error, "write to broker over TLS: " + ssl_error_text());
}

std::size_t TlsClient::read_some(std::span<std::byte> dst) {
  if (ended_) std::rethrow_exception(ended_);
  const int n = ::SSL_read(ssl_.get(), dst.data(),
                           static_cast<int>(std::min<std::size_t>(dst.size(), 1u << 30)));
  if (n > 0) return static_cast<std::size_t>(n);
  const int e = ::SSL_get_error(ssl_.get(), n);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return 0;
  if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && ::ERR_peek_error() == 0)) {
    ::ERR_clear_error();
    ended_ =
        std::make_exception_ptr(Error(Errc::connection_closed, "broker closed the connection"));
  } else {
    // An alert: the broker refused this client's certificate, say.
    ended_ = std::make_exception_ptr(
        Error(Errc::connection_closed, "broker ended the TLS session: " + ssl_error_text()));
  }
  std::rethrow_exception(ended_);
}

}  // namespace qbus::detail
