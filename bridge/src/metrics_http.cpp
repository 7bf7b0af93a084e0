// The scrape endpoint's sockets: binding tcp: or unix:, and one poll() loop that accepts,
// reads one request head per connection, answers it and closes.
#include "metrics_http.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string_view>
#include <system_error>
#include <utility>

#include "bridge_config.hpp"
#include "qbus/proto/address.hpp"

namespace qbus::bridge {

using Clock = std::chrono::steady_clock;
using proto::UniqueFd;

struct MetricsEndpoint::Connection {
  enum class Phase : std::uint8_t {
    reading,   // the request head
    writing,   // the answer
    draining,  // answered and half-closed: what the peer still sends, until it closes
    done,
  };

  UniqueFd fd;
  Clock::time_point deadline;
  Phase phase = Phase::reading;
  std::string in;
  std::string out;
  std::size_t sent = 0;
  std::size_t drained = 0;
};

namespace {

// How long accepting pauses when the process is out of descriptors or memory.
constexpr auto kAcceptPause = std::chrono::seconds(1);
// Connections accepted per wake-up, so that a flood cannot keep the others waiting.
constexpr int kAcceptBurst = 64;

std::string error_text(int err) {
  return std::system_category().message(err);
}

[[noreturn]] void fail(const std::string& listen, const std::string& what) {
  throw std::runtime_error("metrics_listen " + listen + ": " + what);
}

// An HTTP/1.1 answer; `head_only` (a HEAD request) leaves out the body, not its length.
std::string response(std::string_view status, std::string_view content_type, std::string_view body,
                     bool head_only, std::string_view extra_headers = {}) {
  std::string r;
  r.reserve(192 + body.size());
  r.append("HTTP/1.1 ").append(status).append("\r\nContent-Type: ").append(content_type);
  r.append("\r\nContent-Length: ").append(std::to_string(body.size()));
  r.append("\r\nConnection: close\r\nCache-Control: no-store\r\n").append(extra_headers);
  r.append("\r\n");
  if (!head_only) r.append(body);
  return r;
}

std::string refusal(std::string_view status, std::string_view why, bool head_only = false,
                    std::string_view extra_headers = {}) {
  return response(status, "text/plain; charset=utf-8", std::string(why) + "\n", head_only,
                  extra_headers);
}

// RFC 9110's token characters, which a method is made of.
bool is_token(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
  });
}

// The answer to a request head (up to and with its blank line). The headers are not
// looked at: nothing in them changes the answer. A query string is ignored, as
// Prometheus may add one.
std::string answer(std::string_view head, const std::string* text) {
  const std::string_view line = head.substr(0, head.find("\r\n"));
  const auto sp1 = line.find(' ');
  const auto sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos ||
      !is_token(line.substr(0, sp1)) || sp2 == sp1 + 1 ||
      !line.substr(sp2 + 1).starts_with("HTTP/")) {
    return refusal("400 Bad Request", "a request line is METHOD SP TARGET SP HTTP-VERSION");
  }
  const std::string_view method = line.substr(0, sp1);
  const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  const std::string_view version = line.substr(sp2 + 1);
  const bool head_only = method == "HEAD";
  if (version != "HTTP/1.1" && version != "HTTP/1.0") {
    return refusal("505 HTTP Version Not Supported", "only HTTP/1.0 and HTTP/1.1", head_only);
  }
  if (target.substr(0, target.find('?')) != "/metrics") {
    return refusal("404 Not Found", "only /metrics is served here", head_only);
  }
  if (method != "GET" && !head_only) {
    return refusal("405 Method Not Allowed", "/metrics answers GET and HEAD only", false,
                   "Allow: GET, HEAD\r\n");
  }
  if (!text) {
    return refusal("503 Service Unavailable", "no metrics yet: the bridge is starting", head_only,
                   "Retry-After: 1\r\n");
  }
  return response("200 OK", "text/plain; version=0.0.4; charset=utf-8", *text, head_only);
}

// Whether the socket file at `addr` is stale: nobody listens on it (ECONNREFUSED). Any
// other answer (a listener, one with a full backlog, a socket of another user or kind, no
// descriptor to ask with) leaves it alone: it may be someone's.
bool stale_socket(const sockaddr_un& addr) {
  const UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) return false;
  return ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0 &&
         errno == ECONNREFUSED;
}

UniqueFd bind_unix(const std::string& listen, const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), path.size());  // parse_address checked its length
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) fail(listen, path + " exists and is not a socket");
    if (!stale_socket(addr)) fail(listen, "another process is listening on " + path);
    // A socket file nobody listens on: left by a bridge that did not stop cleanly.
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      fail(listen, "cannot remove the stale socket: " + error_text(errno));
    }
  } else if (errno != ENOENT) {
    fail(listen, "cannot inspect " + path + ": " + error_text(errno));
  }
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) fail(listen, "cannot make a socket: " + error_text(errno));
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    fail(listen, "cannot bind: " + error_text(errno));
  }
  // The bridge's user and group (the unit's UMask would leave it to the user alone).
  const auto undo = [&](const char* step) {
    const int err = errno;
    ::unlink(path.c_str());
    fail(listen, step + error_text(err));
  };
  if (::chmod(path.c_str(), 0660) != 0) undo("cannot set its mode: ");
  if (::listen(fd.get(), SOMAXCONN) != 0) undo("cannot listen: ");
  return fd;
}

// The first of the host's addresses that binds (a literal IP address gives just itself).
UniqueFd bind_tcp(const std::string& listen, const std::string& host, std::uint16_t port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found);
  if (rc != 0) {
    fail(listen, "cannot resolve '" + host +
                     "': " + (rc == EAI_SYSTEM ? error_text(errno) : ::gai_strerror(rc)));
  }
  const std::unique_ptr<addrinfo, void (*)(addrinfo*)> owned(found, ::freeaddrinfo);
  std::string problem = "cannot resolve '" + host + "': no address";
  for (const addrinfo* ai = found; ai; ai = ai->ai_next) {
    UniqueFd fd(
        ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol));
    if (!fd) {
      problem = "cannot make a socket: " + error_text(errno);
      continue;
    }
    // A restarted bridge binds again while its last connections sit in TIME_WAIT.
    const int one = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(fd.get(), ai->ai_addr, ai->ai_addrlen) != 0) {
      problem = "cannot bind: " + error_text(errno);
      continue;
    }
    if (::listen(fd.get(), SOMAXCONN) != 0) {
      problem = "cannot listen: " + error_text(errno);
      continue;
    }
    return fd;
  }
  fail(listen, problem);
}

// "tcp:ADDRESS:PORT" of a bound TCP socket.
std::string tcp_endpoint(const std::string& listen, int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    fail(listen, "cannot read the bound address: " + error_text(errno));
  }
  char host[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET6) {
    const auto& a = reinterpret_cast<const sockaddr_in6&>(ss);
    ::inet_ntop(AF_INET6, &a.sin6_addr, host, sizeof(host));
    return "tcp:[" + std::string(host) + "]:" + std::to_string(ntohs(a.sin6_port));
  }
  const auto& a = reinterpret_cast<const sockaddr_in&>(ss);
  ::inet_ntop(AF_INET, &a.sin_addr, host, sizeof(host));
  return "tcp:" + std::string(host) + ":" + std::to_string(ntohs(a.sin_port));
}

// Says 503 to a connection beyond kMaxConnections and lets it go. What the peer already
// sent is read first: closing with unread data would reset the connection, and the peer
// might lose the answer. The socket's send buffer is empty, so one send takes it all.
void refuse_busy(int fd) {
  char scrap[4096];
  for (int i = 0; i < 4 && ::recv(fd, scrap, sizeof(scrap), 0) > 0; ++i) {
  }
  const std::string busy = refusal("503 Service Unavailable", "too many connections");
  (void)::send(fd, busy.data(), busy.size(), MSG_NOSIGNAL);
  ::shutdown(fd, SHUT_WR);
}

// poll()'s timeout until `t`, rounded up so that the deadline has passed on waking.
int timeout_until(Clock::time_point t, Clock::time_point now) {
  if (t == Clock::time_point::max()) return -1;
  if (t <= now) return 0;
  const auto ms = std::chrono::ceil<std::chrono::milliseconds>(t - now).count();
  return static_cast<int>(std::min<std::int64_t>(ms, INT_MAX));
}

bool would_block(int err) {
  return err == EAGAIN || err == EWOULDBLOCK;
}

}  // namespace

MetricsEndpoint::MetricsEndpoint(const std::string& listen) {
  if (const std::string why = metrics_listen_problem(listen); !why.empty()) fail(listen, why);
  std::string why;
  const auto address = proto::parse_address(listen, why, true);
  if (!address) fail(listen, why);
  wake_ = UniqueFd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!wake_) fail(listen, "cannot make an eventfd: " + error_text(errno));
  if (address->kind == proto::Address::Kind::unix_socket) {
    listener_ = bind_unix(listen, address->path);
    socket_path_ = address->path;
    struct stat st {};
    if (::stat(socket_path_.c_str(), &st) == 0) {
      socket_dev_ = st.st_dev;
      socket_ino_ = st.st_ino;
    }
    endpoint_ = "unix:" + socket_path_;
  } else {
    listener_ = bind_tcp(listen, address->host, address->port);
    endpoint_ = tcp_endpoint(listen, listener_.get());
  }
  try {
    thread_ = std::thread([this] { run(); });
  } catch (...) {
    if (!socket_path_.empty()) ::unlink(socket_path_.c_str());
    throw;
  }
}

MetricsEndpoint::~MetricsEndpoint() {
  const std::uint64_t one = 1;
  (void)!::write(wake_.get(), &one, sizeof(one));
  thread_.join();
  struct stat st {};
  if (!socket_path_.empty() && ::lstat(socket_path_.c_str(), &st) == 0 &&
      st.st_dev == socket_dev_ && st.st_ino == socket_ino_) {
    ::unlink(socket_path_.c_str());
  }
}

std::string MetricsEndpoint::endpoint() const {
  return endpoint_;
}

void MetricsEndpoint::publish(std::string text) {
  auto next = std::make_shared<const std::string>(std::move(text));
  const std::lock_guard lock(mutex_);
  text_.swap(next);
  // The old text is freed after the unlock (connections answer with copies).
}

std::shared_ptr<const std::string> MetricsEndpoint::text() const {
  const std::lock_guard lock(mutex_);
  return text_;
}

void MetricsEndpoint::run() {
  using Phase = Connection::Phase;
  std::vector<Connection> connections;
  std::vector<pollfd> fds;
  Clock::time_point paused_until{};
  while (true) {
    const auto now = Clock::now();
    const bool paused = now < paused_until;
    Clock::time_point next = paused ? paused_until : Clock::time_point::max();
    fds.clear();
    fds.push_back({wake_.get(), POLLIN, 0});
    fds.push_back({paused ? -1 : listener_.get(), POLLIN, 0});  // poll() skips -1
    for (const Connection& c : connections) {
      const short events = c.phase == Phase::writing ? POLLOUT : POLLIN;
      fds.push_back({c.fd.get(), events, 0});
      next = std::min(next, c.deadline);
    }
    if (::poll(fds.data(), fds.size(), timeout_until(next, now)) < 0) {
      // EINTR, or ENOMEM, which passes: serving stops only with the destructor.
      if (errno != EINTR) std::this_thread::sleep_for(std::chrono::milliseconds(100));
      continue;
    }
    if (fds[0].revents != 0) return;  // the destructor's wake-up
    const auto after = Clock::now();
    for (std::size_t i = 0; i < connections.size(); ++i) {
      if (fds[i + 2].revents != 0) advance(connections[i]);
      if (after >= connections[i].deadline) connections[i].phase = Phase::done;
    }
    std::erase_if(connections, [](const Connection& c) { return c.phase == Phase::done; });
    if (fds[1].revents != 0) accept_all(connections, paused_until);
  }
}

void MetricsEndpoint::accept_all(std::vector<Connection>& connections,
                                 Clock::time_point& paused_until) {
  for (int i = 0; i < kAcceptBurst; ++i) {
    UniqueFd fd(::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!fd) {
      if (would_block(errno)) return;
      // Out of descriptors or memory: the listener stays readable; wait rather than spin.
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        paused_until = Clock::now() + kAcceptPause;
        return;
      }
      continue;  // this connection's own failure (ECONNABORTED, EPERM, ...)
    }
    if (connections.size() >= kMaxConnections) {
      refuse_busy(fd.get());
      continue;
    }
    Connection c;
    c.fd = std::move(fd);
    c.deadline = Clock::now() + kExchangeTimeout;
    connections.push_back(std::move(c));
  }
}

// Moves `c` on as far as its socket allows without blocking; a failed or closed socket
// ends it (there is nobody left to answer).
void MetricsEndpoint::advance(Connection& c) const {
  using Phase = Connection::Phase;
  char buffer[4096];
  while (c.phase == Phase::reading) {
    // Never more than one byte past the bound: enough to know the head is too long.
    const std::size_t room = std::min(sizeof(buffer), kMaxRequestBytes + 1 - c.in.size());
    const ssize_t n = ::recv(c.fd.get(), buffer, room, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && would_block(errno)) return;
    if (n <= 0) {
      c.phase = Phase::done;
      return;
    }
    const std::size_t from = c.in.size() < 3 ? 0 : c.in.size() - 3;
    c.in.append(buffer, static_cast<std::size_t>(n));
    const auto end = c.in.find("\r\n\r\n", from);
    if (end != std::string::npos && end + 4 <= kMaxRequestBytes) {
      const auto snapshot = text();
      c.out = answer(std::string_view(c.in).substr(0, end + 4), snapshot.get());
    } else if (c.in.size() > kMaxRequestBytes) {
      c.out = refusal("431 Request Header Fields Too Large",
                      "the request head is over " + std::to_string(kMaxRequestBytes) + " bytes");
    } else {
      continue;
    }
    c.in = std::string();
    c.phase = Phase::writing;
  }
  while (c.phase == Phase::writing) {
    const ssize_t n =
        ::send(c.fd.get(), c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && would_block(errno)) return;
    if (n < 0) {
      c.phase = Phase::done;
      return;
    }
    c.sent += static_cast<std::size_t>(n);
    if (c.sent == c.out.size()) {
      // The peer sees the end of the answer; closing only once it has closed too (or
      // the deadline passes) keeps unread request bytes from resetting the connection.
      ::shutdown(c.fd.get(), SHUT_WR);
      c.out = std::string();
      c.phase = Phase::draining;
    }
  }
  while (c.phase == Phase::draining) {
    const ssize_t n = ::recv(c.fd.get(), buffer, sizeof(buffer), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && would_block(errno)) return;
    c.drained += n > 0 ? static_cast<std::size_t>(n) : 0;
    if (n <= 0 || c.drained > kMaxRequestBytes) c.phase = Phase::done;
  }
}

}  // namespace qbus::bridge
