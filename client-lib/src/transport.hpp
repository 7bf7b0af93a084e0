// libqbus internals, layer 1 of 3: the transport. Bytes and file descriptors on one
// non-blocking stream socket to the broker, and nothing about frames. The session
// (session.hpp) frames on top of it and Client (client_impl.hpp) adds the operations; an
// event-loop client can drive a Transport from its own poller through fd(), read_some()
// and write_some() and never block.
//
// Errors: every failure throws qbus::Error with the code and text the public API
// documents (connect_failed, connection_closed, io_error, protocol_violation); the caller
// decides whether the connection is still usable (the session marks it broken).
//
// Ownership, lifetime, thread-safety: a Transport owns its socket and the fds received and
// not yet taken; destroying it closes them all. Move-only. Not thread-safe: one thread at a
// time.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <deque>
#include <memory>
#include <span>
#include <string>

#include "qbus/proto/address.hpp"
#include "qbus/proto/buffer.hpp"
#include "qbus/proto/unique_fd.hpp"
#include "tls.hpp"

namespace qbus::detail {

// Where to connect: `given`, else $QBUS_ADDRESS, else the per-user socket when it exists
// (not for root), else /run/qbus/qbus.sock.
std::string resolve_address(const std::string& given);

// The broker's token for a tcp: address: `given`, else $QBUS_TOKEN, else the trimmed
// contents of the file named by $QBUS_TOKEN_FILE. Throws Error(invalid_argument) when
// there is none.
std::string resolve_token(const std::string& given);

class Transport {
 public:
  Transport() noexcept = default;
  Transport(Transport&&) noexcept = default;
  Transport& operator=(Transport&&) noexcept = default;
  Transport(const Transport&) = delete;
  Transport& operator=(const Transport&) = delete;

  // Connects to `address`, waiting until `deadline` for a TCP handshake (and for a tls:
  // address, the TLS handshake, trusting and presenting `tls`); the socket is non-blocking
  // afterwards (TCP with TCP_NODELAY). Throws Error(connect_failed).
  void connect(const proto::Address& address, std::chrono::steady_clock::time_point deadline,
               const TlsFiles& tls = {});

  int fd() const noexcept { return fd_.get(); }
  // True on a Unix socket: file descriptors travel with frames (never over TCP).
  bool passes_fds() const noexcept { return unix_socket_; }

  // Writes what the socket takes now of `data`; returns the bytes written, 0 when it would
  // block (wait() for POLLOUT). Throws Error(connection_closed) when the broker is gone,
  // Error(io_error) on any other failure.
  std::size_t write_some(std::span<const std::byte> data) {
    if (tls_) return tls_->write_some(data);
    const ssize_t n = ::send(fd_.get(), data.data(), data.size(), MSG_NOSIGNAL);
    return n > 0 ? static_cast<std::size_t>(n) : write_failed(n, data);
  }

  // Reads what is available (up to 64 KiB) into `in`, queueing the fds that came with it;
  // false when nothing was there. Throws Error(connection_closed) at end of stream,
  // Error(io_error) on failure, Error(protocol_violation) when fds were lost (the
  // kernel truncated them: this process is out of fds, or the broker sent too many).
  bool read_some(proto::ByteBuffer& in);

  // After a write found the broker gone: reads whatever it sent before closing (its
  // parting ERROR), ignoring fds and errors.
  void read_rest(proto::ByteBuffer& in);

  // Waits until the socket is readable (or also writable, with `writable`) for up to
  // `timeout_ms` (-1: no limit). Returns poll()'s revents; 0 on timeout or a signal.
  // POLLIN at once when a TLS session holds decrypted bytes (an event-loop client on a
  // tls: address reads until read_some() is false before it polls fd()).
  // Throws Error(io_error) when poll fails.
  short wait(bool writable, int timeout_ms);

  // Moves the oldest received fd not yet taken into `into`; false when there is none.
  // The broker sends fds in the order of the frames that carry them (PROTOCOL.md 16.1).
  bool take_fd(proto::UniqueFd& into) {
    if (fds_in_.empty()) return false;
    into = std::move(fds_in_.front());
    fds_in_.pop_front();
    return true;
  }

 private:
  // send() returned `n` <= 0: retries after a signal, 0 when the socket would block,
  // throws on failure. Kept out of line so that the common write is one call.
  std::size_t write_failed(ssize_t n, std::span<const std::byte> data);
  void connect_unix(const std::string& path, const std::string& shown);
  void connect_tcp(const proto::Address& address, std::chrono::steady_clock::time_point deadline,
                   const std::string& shown);

  proto::UniqueFd fd_;
  bool unix_socket_ = false;
  std::deque<proto::UniqueFd> fds_in_;  // received, not yet matched with their frame
  std::unique_ptr<TlsClient> tls_;      // a tls: address
};

}  // namespace qbus::detail
