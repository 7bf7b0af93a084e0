#include "transport.hpp"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>

#include "qbus/client.hpp"

namespace qbus::detail {
namespace {

using Clock = std::chrono::steady_clock;

constexpr std::size_t kReadChunk = 64 * 1024;
// fds one read can bring; the broker sends at most 16 per write (PROTOCOL.md 16.1).
constexpr std::size_t kMaxFdsPerRead = 32;

std::string sys_error(const std::string& what) {
  return what + ": " + std::strerror(errno);
}

void take_fds(msghdr& msg, std::deque<proto::UniqueFd>& fds) {
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (std::size_t i = 0; i < count; ++i) {
      int received = -1;
      std::memcpy(&received, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      fds.emplace_back(received);
    }
  }
  if (msg.msg_flags & MSG_CTRUNC) {
    throw Error(Errc::protocol_violation,
                "file descriptors from the broker were lost (this process is out of fds, or the "
                "broker sent more at once than allowed)");
  }
}

}  // namespace

std::string resolve_address(const std::string& given) {
  if (!given.empty()) return given;
  if (const char* env = std::getenv("QBUS_ADDRESS"); env && *env) return env;
  if (::geteuid() != 0) {
    const auto user = proto::default_socket_path();
    struct stat st {};
    if (::stat(user.c_str(), &st) == 0) return "unix:" + user;
  }
  return "unix:/run/qbus/qbus.sock";
}

std::string resolve_token(const std::string& given) {
  if (!given.empty()) return given;
  if (const char* env = std::getenv("QBUS_TOKEN"); env && *env) return env;
  if (const char* file = std::getenv("QBUS_TOKEN_FILE"); file && *file) {
    std::ifstream f(file);
    std::string token((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    if (!f && token.empty()) {
      throw Error(Errc::invalid_argument, std::string("cannot read QBUS_TOKEN_FILE ") + file);
    }
    const auto first = token.find_first_not_of(" \t\r\n");
    if (first == std::string::npos) {
      throw Error(Errc::invalid_argument, std::string("QBUS_TOKEN_FILE ") + file + " is empty");
    }
    return token.substr(first, token.find_last_not_of(" \t\r\n") - first + 1);
  }
  throw Error(Errc::invalid_argument,
              "a tcp: address needs the broker's token: set QBUS_TOKEN or QBUS_TOKEN_FILE");
}

void Transport::connect(const proto::Address& address, Clock::time_point deadline,
                        const TlsFiles& tls) {
  const std::string shown = address.to_string();
  if (address.kind == proto::Address::Kind::unix_socket) {
    unix_socket_ = true;
    connect_unix(address.path, shown);
  } else {
    connect_tcp(address, deadline, shown);
    if (address.tls)
      tls_ = std::make_unique<TlsClient>(fd_.get(), address.host, tls, shown, deadline);
  }
}

void Transport::connect_unix(const std::string& path, const std::string& shown) {
  fd_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd_) throw Error(Errc::connect_failed, sys_error("socket"));
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);
  if (::connect(fd_.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
    throw Error(Errc::connect_failed,
                sys_error("cannot connect to " + shown) + " (is qbusd running?)");
  }
  ::fcntl(fd_.get(), F_SETFL, ::fcntl(fd_.get(), F_GETFL) | O_NONBLOCK);
}

void Transport::connect_tcp(const proto::Address& addr, Clock::time_point deadline,
                            const std::string& shown) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const std::string port = std::to_string(addr.port);
  if (int rc = ::getaddrinfo(addr.host.c_str(), port.c_str(), &hints, &found); rc != 0) {
    throw Error(Errc::connect_failed, "cannot resolve " + addr.host + ": " + ::gai_strerror(rc));
  }
  std::string last_error = "no address";
  for (addrinfo* ai = found; ai; ai = ai->ai_next) {
    proto::UniqueFd s(
        ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol));
    if (!s) continue;
    int err = 0;
    if (::connect(s.get(), ai->ai_addr, ai->ai_addrlen) != 0) {
      err = errno;
      if (err == EINPROGRESS) {
        pollfd p{s.get(), POLLOUT, 0};
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
        if (::poll(&p, 1, static_cast<int>(std::max<std::int64_t>(left, 0))) <= 0) {
          err = ETIMEDOUT;
        } else {
          socklen_t len = sizeof(err);
          ::getsockopt(s.get(), SOL_SOCKET, SO_ERROR, &err, &len);
        }
      }
    }
    if (err == 0) {
      const int one = 1;
      ::setsockopt(s.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      ::freeaddrinfo(found);
      fd_ = std::move(s);
      return;
    }
    last_error = std::strerror(err);
  }
  ::freeaddrinfo(found);
  throw Error(Errc::connect_failed, "cannot connect to " + shown + ": " + last_error);
}

std::size_t Transport::write_failed(ssize_t n, std::span<const std::byte> data) {
  while (true) {
    if (n > 0) return static_cast<std::size_t>(n);
    if (n < 0 && errno == EINTR) {
      n = ::send(fd_.get(), data.data(), data.size(), MSG_NOSIGNAL);
      continue;
    }
    if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) {
      throw Error(Errc::connection_closed, sys_error("write to broker"));
    }
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
      throw Error(Errc::io_error, sys_error("write to broker"));
    }
    return 0;
  }
}

bool Transport::read_some(proto::ByteBuffer& in) {
  if (tls_) {
    // Up to a chunk, record by record: what is left stays in the session (pending()).
    auto dst = in.prepare(kReadChunk);
    std::size_t got = 0;
    while (got < dst.size()) {
      std::size_t n = 0;
      try {
        n = tls_->read_some(dst.subspan(got));
      } catch (const Error&) {
        if (got == 0) throw;
        break;  // the bytes before the end first (the broker's parting ERROR); it throws again
      }
      if (n == 0) break;
      got += n;
    }
    in.commit(got);
    return got > 0;
  }
  auto dst = in.prepare(kReadChunk);
  iovec iov{dst.data(), dst.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFdsPerRead)];
  if (unix_socket_) {
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
  }
  const ssize_t n = ::recvmsg(fd_.get(), &msg, MSG_CMSG_CLOEXEC);
  if (n > 0 && unix_socket_) take_fds(msg, fds_in_);
  if (n > 0) {
    in.commit(static_cast<std::size_t>(n));
    return true;
  }
  if (n == 0) throw Error(Errc::connection_closed, "broker closed the connection");
  if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return false;
  throw Error(errno == ECONNRESET ? Errc::connection_closed : Errc::io_error,
              sys_error("read from broker"));
}

void Transport::read_rest(proto::ByteBuffer& in) {
  if (tls_) {
    try {
      while (read_some(in)) {
      }
    } catch (const Error&) {
      // The parting ERROR, if any, was read before the session ended.
    }
    return;
  }
  while (true) {
    auto dst = in.prepare(kReadChunk);
    const ssize_t n = ::recv(fd_.get(), dst.data(), dst.size(), MSG_DONTWAIT);
    if (n <= 0) break;
    in.commit(static_cast<std::size_t>(n));
  }
}

short Transport::wait(bool writable, int timeout_ms) {
  if (tls_ && tls_->pending()) return POLLIN;
  pollfd p{fd_.get(), static_cast<short>(writable ? POLLOUT | POLLIN : POLLIN), 0};
  if (::poll(&p, 1, timeout_ms) < 0 && errno != EINTR) {
    throw Error(Errc::io_error, sys_error("poll"));
  }
  return p.revents;
}

}  // namespace qbus::detail
