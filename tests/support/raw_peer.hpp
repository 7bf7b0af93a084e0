// A client speaking raw protocol bytes over a Unix socket, for what libqbus would never
// send: malformed frames, pipelined floods, peers that keep fds or never read. Frames are
// read with recvmsg, so region fds the broker passes (SCM_RIGHTS) are collected in order.
#pragma once

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <deque>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "qbus/proto/buffer.hpp"
#include "qbus/proto/codec.hpp"
#include "qbus/proto/unique_fd.hpp"

namespace qbus::testing {

struct Frame {
  proto::FrameType type{};
  std::uint16_t flags = 0;
  std::uint64_t correlation = 0;
  std::vector<std::byte> body;

  Errc error_code() const {
    proto::ErrorBody e;
    if (type != proto::FrameType::error || proto::decode_error(body, e) != Errc::ok)
      return Errc::ok;
    return static_cast<Errc>(e.code);
  }
};

class RawPeer {
 public:
  using Clock = std::chrono::steady_clock;

  // Connects; `connected_fd` >= 0 adopts a socket that is connected already.
  explicit RawPeer(const std::string& path, int connected_fd = -1) : fd_(connected_fd) {
    if (fd_ >= 0) return;
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::strncpy(sa.sun_path, path.c_str(), sizeof(sa.sun_path) - 1);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
      ::close(fd_);
      throw std::runtime_error("connect failed");
    }
  }
  ~RawPeer() {
    if (fd_ >= 0) ::close(fd_);
  }
  RawPeer(const RawPeer&) = delete;
  RawPeer& operator=(const RawPeer&) = delete;

  int fd() const { return fd_; }

  void write(std::span<const std::byte> bytes) {
    std::size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = ::send(fd_, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
      if (n <= 0) throw std::runtime_error("write failed");
      done += static_cast<std::size_t>(n);
    }
  }
  void write(const proto::ByteBuffer& b) { write(b.readable()); }
  // Completes the handshake speaking protocol versions 1..max_version.
  void hello(std::uint8_t max_version = 1) {
    proto::ByteBuffer b;
    proto::append_hello(b, 1, proto::Hello{1, max_version, "raw", ""});
    write(b);
    auto f = next();
    if (!f || f->type != proto::FrameType::welcome) throw std::runtime_error("no WELCOME");
  }

  // The next frame, or nullopt once the broker closed the connection.
  std::optional<Frame> next(std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
    const auto deadline = Clock::now() + timeout;
    while (true) {
      auto hr = proto::decode_header(in_.readable(), proto::kMaxBodyCeiling);
      if (hr.status == proto::HeaderStatus::bad) throw std::runtime_error("broker sent garbage");
      if (hr.status == proto::HeaderStatus::complete &&
          in_.size() >= proto::kHeaderSize + hr.header.body_size) {
        Frame f{hr.header.type, hr.header.flags, hr.header.correlation, {}};
        auto body = in_.readable().subspan(proto::kHeaderSize, hr.header.body_size);
        f.body.assign(body.begin(), body.end());
        in_.consume(proto::kHeaderSize + hr.header.body_size);
        return f;
      }
      if (eof_) return std::nullopt;
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) throw std::runtime_error("no frame within the timeout");
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      receive_some();
    }
  }

  // True when the broker closed the connection (after any frames still pending).
  bool closed_by_broker() {
    while (next()) {
    }
    return true;
  }

  // Fds received so far and not yet taken, in arrival order.
  std::optional<proto::UniqueFd> take_fd() {
    if (fds_.empty()) return std::nullopt;
    proto::UniqueFd fd = std::move(fds_.front());
    fds_.pop_front();
    return fd;
  }

 private:
  void receive_some() {
    auto dst = in_.prepare(65536);
    iovec iov{dst.data(), dst.size()};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 64)];
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    const ssize_t n = ::recvmsg(fd_, &msg, MSG_CMSG_CLOEXEC);
    if (n <= 0) {
      eof_ = true;
      return;
    }
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (std::size_t i = 0; i < count; ++i) {
        int got;
        std::memcpy(&got, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        fds_.emplace_back(got);
      }
    }
    in_.commit(static_cast<std::size_t>(n));
  }

  int fd_ = -1;
  proto::ByteBuffer in_;
  std::deque<proto::UniqueFd> fds_;
  bool eof_ = false;
};

inline std::vector<std::byte> bytes_of(std::string_view s) {
  auto b = std::as_bytes(std::span(s.data(), s.size()));
  return {b.begin(), b.end()};
}

// A frame with a raw body, whatever the body says.
inline proto::ByteBuffer frame(proto::FrameType type, std::uint64_t corr, std::string_view body,
                               std::uint16_t flags = 0) {
  proto::ByteBuffer b;
  auto s = b.append(proto::kHeaderSize + body.size());
  proto::encode_header(s,
                       proto::Header{type, flags, corr, static_cast<std::uint32_t>(body.size())});
  std::memcpy(s.data() + proto::kHeaderSize, body.data(), body.size());
  return b;
}

}  // namespace qbus::testing
