// libqbus internals: TLS for a tls:HOST:PORT address (PROTOCOL.md section 10), used by the
// transport (transport.hpp) over its non-blocking TCP socket. OpenSSL directly: libqbus
// links no Asio (scripts/check-layers.sh).
//
// Ownership, lifetime, thread-safety: a TlsClient owns its OpenSSL context and session and
// borrows the socket's fd, which must outlive it. Move-only. Not thread-safe.
#pragma once

#include <openssl/ssl.h>

#include <chrono>
#include <cstddef>
#include <exception>
#include <memory>
#include <span>
#include <string>

namespace qbus::detail {

// Where the client's trust and identity come from: the options, else QBUS_TLS_CA,
// QBUS_TLS_CERT and QBUS_TLS_KEY. No CA: the system's trust store.
struct TlsFiles {
  std::string ca;
  std::string cert;
  std::string key;
};
TlsFiles resolve_tls_files(const std::string& ca, const std::string& cert, const std::string& key);

class TlsClient {
 public:
  // Runs the handshake over connected non-blocking socket `fd` until `deadline`, verifying
  // the broker's certificate against `host` (a name or an IP address). Throws
  // Error(connect_failed) naming what failed, Error(invalid_argument) for unusable files.
  TlsClient(int fd, const std::string& host, const TlsFiles& files, const std::string& shown,
            std::chrono::steady_clock::time_point deadline);

  // As Transport::write_some: bytes taken, 0 when the socket would block.
  std::size_t write_some(std::span<const std::byte> data);
  // Decrypts into `dst`; bytes read, 0 when nothing is there. Throws
  // Error(connection_closed) at the end of the session (with the broker's TLS alert, if any).
  std::size_t read_some(std::span<std::byte> dst);
  // Decrypted bytes are waiting inside the session: poll() would not show them.
  bool pending() const { return ::SSL_pending(ssl_.get()) > 0; }

 private:
  std::unique_ptr<SSL_CTX, decltype(&::SSL_CTX_free)> ctx_{nullptr, ::SSL_CTX_free};
  std::unique_ptr<SSL, decltype(&::SSL_free)> ssl_{nullptr, ::SSL_free};
  // How the session ended, thrown again by every later read (OpenSSL may not repeat it).
  std::exception_ptr ended_;
};

}  // namespace qbus::detail
