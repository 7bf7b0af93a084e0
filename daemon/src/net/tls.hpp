// TLS on the TCP listener (PROTOCOL.md section 10): the server's context, built once from
// the configured files, and one TlsChannel per TLS connection, through which that
// Connection reads and writes its bytes.
//
// A channel runs asio::ssl's engine over a carrier that never blocks: ciphertext read from
// the connection's non-blocking socket as the engine asks for it, and ciphertext the
// engine makes collected in a buffer that flush() writes. So the Connection keeps its
// reactor style (wait for readiness, then read or write without blocking) whatever the
// socket carries, and only TLS connections pay for the channel: the Unix path never sees it.
//
// Ownership: a channel belongs to its Connection and borrows the context (which the
// Server owns and outlives every connection) and the socket's fd (which the Connection
// owns). Thread-safety: none; everything runs on the broker thread.
#pragma once

#include <asio.hpp>
#include <asio/ssl.hpp>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "qbus/proto/buffer.hpp"

namespace qbus::daemon {

// A client certificate's subject CN and the local identity its holder gets.
struct TlsPeerMapping {
  std::string cn;
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  std::vector<std::uint32_t> groups;
};

struct TlsServerConfig {
  std::string certificate;  // file: PEM chain
  std::string key_pem;      // the private key's text (read under the token file's rule)
  std::string client_ca;    // file: PEM CAs; empty: no client certificate is asked for
  std::vector<TlsPeerMapping> clients;
};

// The context every TLS connection of one listener shares. Throws std::runtime_error with
// one line naming the field ("tcp.tls.certificate: ...") when a file cannot be used.
struct TlsServer {
  explicit TlsServer(const TlsServerConfig& config);
  // The mapping for a verified client certificate's CN, or null.
  const TlsPeerMapping* mapping(const std::string& cn) const;

  asio::ssl::context context;
  std::vector<TlsPeerMapping> clients;
  bool client_certificates = false;
};

// The byte stream under the engine (asio::ssl::stream's next layer): reads the socket
// without blocking, and collects writes in `out` for TlsChannel::flush().
class TlsCarrier {
 public:
  using executor_type = asio::any_io_executor;
  using lowest_layer_type = TlsCarrier;

  TlsCarrier(int fd, executor_type ex) : fd_(fd), ex_(std::move(ex)) {}
  lowest_layer_type& lowest_layer() { return *this; }
  const lowest_layer_type& lowest_layer() const { return *this; }
  executor_type get_executor() { return ex_; }

  template <typename Buffers>
  std::size_t read_some(const Buffers& buffers, asio::error_code& ec) {
    const asio::mutable_buffer b = *asio::buffer_sequence_begin(buffers);
    return receive(b.data(), b.size(), ec);
  }
  template <typename Buffers>
  std::size_t write_some(const Buffers& buffers, asio::error_code& ec) {
    ec = {};
    std::size_t n = 0;
    for (auto it = asio::buffer_sequence_begin(buffers); it != asio::buffer_sequence_end(buffers);
         ++it) {
      const asio::const_buffer b = *it;
      auto dst = out.append(b.size());
      std::memcpy(dst.data(), b.data(), b.size());
      n += b.size();
    }
    return n;
  }

  proto::ByteBuffer out;         // ciphertext not yet written to the socket
  bool first_byte_seen = false;  // something came from the peer
  bool first_byte_tls = true;    // ... and it began a TLS handshake record

 private:
  std::size_t receive(void* data, std::size_t size, asio::error_code& ec);

  int fd_;
  executor_type ex_;
};

class TlsChannel {
 public:
  TlsChannel(TlsServer& server, int fd, asio::any_io_executor ex);

  enum class Progress { done, want_read, want_write, failed };
  // Drives the server side of the handshake as far as the socket allows. `why` says what
  // failed (OpenSSL's reason, such as "certificate verify failed").
  Progress handshake(std::string& why);
  bool established() const { return established_; }
  // The peer sent bytes that cannot begin a TLS handshake (say, a plain qbus HELLO).
  bool peer_spoke_plaintext() const {
    return carrier().first_byte_seen && !carrier().first_byte_tls;
  }
  // The verified client certificate's subject CN; empty when there is none.
  std::string peer_cn() const;

  // Decrypts into `dst` until it is full or nothing more is there (ec would_block then,
  // unless some bytes were read). End of stream and TLS errors come as ec, after the bytes
  // before them: a call that read some returns them, and the next one the end.
  std::size_t read(std::span<std::byte> dst, asio::error_code& ec);
  // True when decrypted input may be waiting inside the engine: the socket may not turn
  // readable again, so the reader must read before it waits.
  bool input_pending() const { return input_pending_; }

  // Encrypts up to a bounded chunk of `src` and writes what the socket takes. Returns the
  // plaintext bytes taken; ec would_block when earlier ciphertext does not fit yet.
  std::size_t write(std::span<const std::byte> src, asio::error_code& ec);
  // Ciphertext waiting for the socket (written by write() and flush()).
  bool output_pending() const { return !carrier().out.empty(); }
  // Writes waiting ciphertext; false while some is left (the socket would block).
  bool flush(asio::error_code& ec);
  // Ends the session politely before the socket closes: a close_notify, if the socket takes
  // it now, tells the peer that what it read was all there was.
  void close_notify();

 private:
  const TlsCarrier& carrier() const { return stream_.next_layer(); }
  TlsCarrier& carrier() { return stream_.next_layer(); }

  int fd_;
  asio::ssl::stream<TlsCarrier> stream_;
  bool established_ = false;
  bool input_pending_ = false;
};

}  // namespace qbus::daemon
