#include "qbus/client.hpp"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <fstream>
#include <iterator>
#include <mutex>

#include "qbus/proto/address.hpp"
#include "qbus/proto/buffer.hpp"
#include "qbus/proto/shm.hpp"
#include "qbus/proto/unique_fd.hpp"

namespace qbus {
namespace detail {

// Region ids whose handles this process gave up (a Message, Region or SharedRegion went,
// possibly on another thread); the Client sends REGION_RELEASE for them with its next call.
struct ReleaseQueue {
  std::mutex mutex;
  std::vector<std::uint64_t> ids;

  void push(std::uint64_t id) noexcept {
    try {
      std::lock_guard lock(mutex);
      ids.push_back(id);
    } catch (...) {
      // Out of memory: the handle is then released when the connection closes.
    }
  }
  std::vector<std::uint64_t> take() {
    std::vector<std::uint64_t> out;
    std::lock_guard lock(mutex);
    out.swap(ids);
    return out;
  }
};

struct MappedPayload {
  MappedPayload(proto::shm::Mapping m, std::uint64_t id, std::shared_ptr<ReleaseQueue> r)
      : mapping(std::move(m)), region_id(id), releases(std::move(r)) {}
  MappedPayload(const MappedPayload&) = delete;
  MappedPayload& operator=(const MappedPayload&) = delete;
  ~MappedPayload() {
    mapping.reset();
    releases->push(region_id);
  }
  proto::shm::Mapping mapping;
  std::uint64_t region_id;
  std::shared_ptr<ReleaseQueue> releases;
};

struct RegionState {
  ~RegionState() {
    mapping.reset();
    if (!given_up) releases->push(id);
  }
  proto::UniqueFd fd;
  proto::shm::Mapping mapping;  // writable until the first send
  std::uint64_t id = 0;
  std::size_t size = 0;
  bool sealed = false;
  bool given_up = false;  // handed over with the release flag: the broker dropped our handle
  std::shared_ptr<ReleaseQueue> releases;
};

struct SharedRegionState {
  ~SharedRegionState() {
    mapping.reset();
    releases->push(id);
  }
  proto::shm::Mapping mapping;
  std::uint64_t id = 0;
  std::size_t size = 0;
  bool writable = false;
  std::string key;
  std::shared_ptr<ReleaseQueue> releases;
};

struct Access {
  static void set_mapped(Message& m, std::shared_ptr<const MappedPayload> p) {
    m.mapped_ = std::move(p);
  }
  static MessageView view(std::string_view key, std::span<const std::byte> bytes, Sender sender,
                          std::uint64_t request_id, const Message* region) {
    MessageView v;
    v.key_ = key;
    v.bytes_ = bytes;
    v.sender_ = sender;
    v.request_id_ = request_id;
    v.region_ = region;
    return v;
  }
  static const Message* region_of(const MessageView& v) { return v.region_; }
  static RegionState* state(Region& r) { return r.state_.get(); }
  static Region make_region(std::unique_ptr<RegionState> st) {
    Region r;
    r.state_ = std::move(st);
    return r;
  }
  static SharedRegion make_shared(std::unique_ptr<SharedRegionState> st) {
    SharedRegion r;
    r.state_ = std::move(st);
    return r;
  }
};

}  // namespace detail

namespace {

using Clock = std::chrono::steady_clock;
using proto::FrameType;

constexpr std::size_t kBatchFlushBytes = 64 * 1024;
constexpr std::size_t kReadChunk = 64 * 1024;
// fds one read can bring; the broker sends at most 16 per write (PROTOCOL.md 16.1).
constexpr std::size_t kMaxFdsPerRead = 32;
// The broker enforces receive timeouts; ours only catches a broker that stopped answering.
constexpr auto kBrokerGrace = std::chrono::seconds(30);

std::string sys_error(const std::string& what) {
  return what + ": " + std::strerror(errno);
}

std::span<const std::byte> as_bytes(std::string_view s) {
  return std::as_bytes(std::span(s.data(), s.size()));
}

std::string program_name() {
  char buf[64] = {};
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return "libqbus";
  std::string_view path(buf, static_cast<std::size_t>(n));
  return std::string(path.substr(path.rfind('/') + 1));
}

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

std::int32_t to_wire_timeout(std::chrono::milliseconds t) {
  if (t.count() < 0) return -1;
  return static_cast<std::int32_t>(std::min<std::int64_t>(t.count(), INT32_MAX));
}

}  // namespace

struct Client::Impl {
  int fd = -1;
  SessionInfo session;
  proto::ByteBuffer in;
  proto::ByteBuffer out;
  std::uint64_t next_correlation = 1;
  int corked = 0;
  bool inbox_claimed = false;
  bool unix_socket = false;
  std::size_t region_threshold = 0;
  SendFailures failures;
  std::optional<Error> broken;  // set once the connection cannot be used any more
  std::shared_ptr<detail::ReleaseQueue> releases = std::make_shared<detail::ReleaseQueue>();
  // fds received and not yet matched with their frame, in order (PROTOCOL.md 16.1).
  std::deque<proto::UniqueFd> fds_in;
  proto::UniqueFd frame_fd;  // the fd of the frame being handled, for its handler to take

  ~Impl() {
    if (fd >= 0) ::close(fd);
  }

  [[noreturn]] void fail(Errc code, const std::string& text) {
    if (!broken) broken.emplace(code, text);
    throw Error(code, text);
  }
  // Called before every request is appended: region releases go out ahead of it, so that
  // the request is always the last frame written and its answer the first one awaited.
  void check_usable() {
    if (broken) throw *broken;
    queue_releases();
  }

  void connect(const ClientOptions& options) {
    const std::string text = resolve_address(options.address);
    std::string why;
    auto addr = proto::parse_address(text, why);
    if (!addr) throw Error(Errc::bad_address, "bad qbus address: " + why);
    session.address = addr->to_string();
    const auto deadline = Clock::now() + options.connect_timeout;
    std::string token;
    region_threshold = options.region_threshold;
    if (addr->kind == proto::Address::Kind::unix_socket) {
      unix_socket = true;
      connect_unix(addr->path);
    } else {
      token = resolve_token(options.token);
      connect_tcp(*addr, deadline);
    }

    proto::Hello hello;
    hello.token = token;
    std::string name = options.name.empty() ? program_name() : options.name;
    hello.client_name = std::string_view(name).substr(0, proto::kMaxClientNameSize);
    const std::uint64_t corr = next_correlation++;
    proto::append_hello(out, corr, hello);
    bool welcomed = false;
    wait_for(corr, deadline, [&](const proto::Header& h, proto::Bytes body) {
      if (h.type == FrameType::error) throw_error_frame(body, "handshake refused");
      proto::Welcome w;
      if (h.type != FrameType::welcome || proto::decode_welcome(body, w) != Errc::ok ||
          w.version != proto::kVersion) {
        fail(Errc::protocol_violation, "broker answered HELLO with something else");
      }
      session.pid = w.pid;
      session.uid = w.uid;
      session.gid = w.gid;
      session.client_id = w.client_id;
      session.max_payload = w.max_payload;
      welcomed = true;
      return true;
    });
    if (!welcomed) fail(Errc::connect_failed, "no answer from " + session.address + " in time");
  }

  void connect_unix(const std::string& path) {
    fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw Error(Errc::connect_failed, sys_error("socket"));
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
      throw Error(Errc::connect_failed,
                  sys_error("cannot connect to " + session.address) + " (is qbusd running?)");
    }
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  }

  void connect_tcp(const proto::Address& addr, Clock::time_point deadline) {
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
      fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
      if (fd < 0) continue;
      int err = 0;
      if (::connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        err = errno;
        if (err == EINPROGRESS) {
          pollfd p{fd, POLLOUT, 0};
          const auto left =
              std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now())
                  .count();
          if (::poll(&p, 1, static_cast<int>(std::max<std::int64_t>(left, 0))) <= 0) {
            err = ETIMEDOUT;
          } else {
            socklen_t len = sizeof(err);
            ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
          }
        }
      }
      if (err == 0) {
        const int one = 1;
        ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        ::freeaddrinfo(found);
        return;
      }
      last_error = std::strerror(err);
      ::close(fd);
      fd = -1;
    }
    ::freeaddrinfo(found);
    throw Error(Errc::connect_failed, "cannot connect to " + session.address + ": " + last_error);
  }

  static std::string resolve_token(const std::string& given) {
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

  [[noreturn]] void throw_error_frame(proto::Bytes body, std::string_view context) {
    proto::ErrorBody e;
    if (proto::decode_error(body, e) != Errc::ok) {
      fail(Errc::protocol_violation, "broker sent a malformed ERROR frame");
    }
    const auto code = errc_is_known(e.code) ? static_cast<Errc>(e.code) : Errc::internal_error;
    std::string text = std::string(context) + ": " + std::string(errc_name(code));
    if (!e.text.empty()) text += ": " + std::string(e.text);
    if (errc_is_fatal(code)) fail(code, text);
    throw Error(code, text);
  }

  // Correlation 0: the broker refuses the connection as a whole and closes it.
  [[noreturn]] void fail_closed_by_broker(proto::Bytes body) {
    proto::ErrorBody e;
    const bool ok = proto::decode_error(body, e) == Errc::ok;
    const auto code =
        ok && errc_is_known(e.code) ? static_cast<Errc>(e.code) : Errc::protocol_violation;
    fail(code, "broker closed the connection: " + std::string(errc_name(code)) +
                   (ok && !e.text.empty() ? ": " + std::string(e.text) : std::string()));
  }

  // A write found the broker gone. When it closed on purpose its reason (a correlation-0
  // ERROR, e.g. too_many_connections before HELLO was even read) is already in our receive
  // buffer: report that instead of a bare EPIPE. Frames before it are left unhandled; the
  // connection is dead either way.
  [[noreturn]] void fail_write_to_closed_broker() {
    const std::string why = sys_error("write to broker");
    while (true) {
      auto dst = in.prepare(kReadChunk);
      const ssize_t n = ::recv(fd, dst.data(), dst.size(), MSG_DONTWAIT);
      if (n <= 0) break;
      in.commit(static_cast<std::size_t>(n));
    }
    for (auto rest = in.readable();;) {
      const auto hr = proto::decode_header(rest, proto::kMaxBodyCeiling);
      if (hr.status != proto::HeaderStatus::complete) break;
      const std::size_t size = proto::kHeaderSize + hr.header.body_size;
      if (rest.size() < size) break;
      if (hr.header.type == FrameType::error && hr.header.correlation == 0) {
        fail_closed_by_broker(rest.subspan(proto::kHeaderSize, hr.header.body_size));
      }
      rest = rest.subspan(size);
    }
    fail(Errc::connection_closed, why);
  }

  // Writes all of `out`, reading (and handling) incoming frames meanwhile so that a broker
  // blocked writing to us can never deadlock with us blocked writing to it.
  void write_all() {
    while (!out.empty()) {
      const auto data = out.readable();
      const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
      if (n > 0) {
        out.consume(static_cast<std::size_t>(n));
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) fail_write_to_closed_broker();
      if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
        fail(Errc::io_error, sys_error("write to broker"));
      }
      pollfd p{fd, POLLOUT | POLLIN, 0};
      if (::poll(&p, 1, -1) < 0 && errno != EINTR) fail(Errc::io_error, sys_error("poll"));
      if (p.revents & POLLIN) {
        read_some();
        drain_unsolicited();
      }
    }
  }

  // Reads what is available; false on would-block.
  bool read_some() {
    auto dst = in.prepare(kReadChunk);
    iovec iov{dst.data(), dst.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFdsPerRead)];
    if (unix_socket) {
      msg.msg_control = control;
      msg.msg_controllen = sizeof(control);
    }
    const ssize_t n = ::recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
    if (n > 0 && unix_socket) take_fds(msg);
    if (n > 0) {
      in.commit(static_cast<std::size_t>(n));
      return true;
    }
    if (n == 0) fail(Errc::connection_closed, "broker closed the connection");
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return false;
    fail(errno == ECONNRESET ? Errc::connection_closed : Errc::io_error,
         sys_error("read from broker"));
  }

  void take_fds(msghdr& msg) {
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (std::size_t i = 0; i < count; ++i) {
        int received = -1;
        std::memcpy(&received, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        fds_in.emplace_back(received);
      }
    }
    if (msg.msg_flags & MSG_CTRUNC) {
      fail(Errc::protocol_violation,
           "file descriptors from the broker were lost (this process is out of fds, or the "
           "broker sent more at once than allowed)");
    }
  }

  void queue_releases() {
    if (broken) return;
    for (std::uint64_t id : releases->take())
      proto::append_region_release(out, next_correlation++, 0, id);
  }

  // Handles complete frames that answer nothing we wait for (send failures).
  void drain_unsolicited() {
    wait_step(0, [](const proto::Header&, proto::Bytes) { return false; });
  }

  void record_failure(proto::Bytes body) {
    proto::ErrorBody e;
    if (proto::decode_error(body, e) != Errc::ok) {
      fail(Errc::protocol_violation, "broker sent a malformed ERROR frame");
    }
    const auto code = errc_is_known(e.code) ? static_cast<Errc>(e.code) : Errc::internal_error;
    ++failures.count;
    failures.last_code = code;
    failures.last_message = std::string(e.text);
  }

  // Processes complete frames in `in`; true once `handler` accepted a frame for `corr`.
  // Handler: bool(const proto::Header&, proto::Bytes), true once the awaited answer is in.
  template <typename Handler>
  bool wait_step(std::uint64_t corr, const Handler& handler) {
    while (true) {
      auto hr = proto::decode_header(in.readable(), proto::kMaxBodyCeiling);
      if (hr.status == proto::HeaderStatus::need_more) return false;
      if (hr.status == proto::HeaderStatus::bad) {
        fail(Errc::protocol_violation,
             "broker sent an invalid frame header (" + std::string(errc_name(hr.error)) + ")");
      }
      const std::size_t size = proto::kHeaderSize + hr.header.body_size;
      if (in.size() < size) return false;
      const auto body = in.readable().subspan(proto::kHeaderSize, hr.header.body_size);
      // Consumed before it is handled, so a handler that throws (an ERROR answer) does not
      // leave the frame to be counted again by the next call. consume() only moves the
      // read cursor; `body` stays valid until the buffer is next written.
      in.consume(size);
      frame_fd.reset();
      if (proto::carries_fd(hr.header.type)) {
        if (fds_in.empty()) {
          fail(Errc::protocol_violation, "broker sent a " +
                                             std::string(proto::frame_type_name(hr.header.type)) +
                                             " frame without its file descriptor");
        }
        frame_fd = std::move(fds_in.front());
        fds_in.pop_front();
      }
      bool done = false;
      if (corr != 0 && hr.header.correlation == corr) {
        done = handler(hr.header, body);
      } else if (hr.header.type == FrameType::error && hr.header.correlation == 0) {
        fail_closed_by_broker(body);
      } else if (hr.header.type == FrameType::error) {
        record_failure(body);
      } else {
        fail(Errc::protocol_violation, "broker sent an unexpected " +
                                           std::string(proto::frame_type_name(hr.header.type)) +
                                           " frame");
      }
      if (done) return true;
    }
  }

  // Flushes, then handles frames until `handler` returns true for a frame carrying `corr`.
  // Returns false when `deadline` passed first. `deadline` is read before every wait, so a
  // handler may lift it (it refers to the caller's).
  template <typename Handler>
  bool wait_for(std::uint64_t corr, const std::optional<Clock::time_point>& deadline,
                const Handler& handler) {
    write_all();
    while (true) {
      if (wait_step(corr, handler)) return true;
      if (read_some()) continue;
      int ms = -1;
      if (deadline) {
        const auto left =
            std::chrono::ceil<std::chrono::milliseconds>(*deadline - Clock::now()).count();
        if (left <= 0) return false;
        ms = static_cast<int>(std::min<std::int64_t>(left, INT_MAX));
      }
      pollfd p{fd, POLLIN, 0};
      const int r = ::poll(&p, 1, ms);
      if (r < 0 && errno != EINTR) fail(Errc::io_error, sys_error("poll"));
    }
  }

  void check_key(std::string_view key) const {
    if (!proto::is_valid_key(key)) {
      throw Error(Errc::invalid_key, "invalid queue key '" + std::string(key.substr(0, 64)) +
                                         "': use 1-255 characters of A-Z a-z 0-9 . _ : / -");
    }
  }
  void check_payload(std::size_t size) const {
    if (size > session.max_payload) {
      throw Error(Errc::payload_too_large, "payload of " + std::to_string(size) +
                                               " bytes exceeds the broker's limit of " +
                                               std::to_string(session.max_payload));
    }
  }

  std::uint64_t append_send(std::string_view key, std::span<const std::byte> payload,
                            std::uint16_t flags) {
    check_usable();
    check_key(key);
    check_payload(payload.size());
    const std::uint64_t corr = next_correlation++;
    proto::append_send(out, corr, flags, key, payload);
    return corr;
  }

  // Answer of a request that expects OK.
  void wait_ok(std::uint64_t corr, std::string_view context) {
    const bool answered = wait_for(corr, std::nullopt, [&](const proto::Header& h, proto::Bytes b) {
      if (h.type == FrameType::error) throw_error_frame(b, context);
      if (h.type != FrameType::ok && h.type != FrameType::pong) {
        fail(Errc::protocol_violation, std::string(context) + ": unexpected answer");
      }
      return true;
    });
    if (!answered) fail(Errc::io_error, std::string(context) + ": broker did not answer");
  }

  // Waits for the DELIVER frames answering `corr` (up to the one flagged LAST), handing
  // each message to on_view(const MessageView&) in place; an ERROR `timeout` ends it with
  // none. `timeout` is what the broker was told; ours adds a grace. An exception from
  // on_view is rethrown once the whole answer has been read, so the connection stays in
  // step. Returns how many messages there were.
  template <typename OnView>
  std::size_t collect_each(std::uint64_t corr, std::chrono::milliseconds timeout,
                           std::string_view context, OnView&& on_view) {
    std::optional<Clock::time_point> deadline;
    if (timeout.count() >= 0) deadline = Clock::now() + timeout + kBrokerGrace;
    std::size_t seen = 0;
    std::exception_ptr failed;
    auto hand_over = [&](const MessageView& v) {
      ++seen;
      if (failed) return;
      try {
        on_view(v);
      } catch (...) {
        failed = std::current_exception();
      }
    };
    std::string pieces;  // a payload arriving in DELIVER pieces flagged MORE (TCP)
    bool in_pieces = false;
    const bool answered = wait_for(corr, deadline, [&](const proto::Header& h, proto::Bytes b) {
      // The broker is answering: the rest of the answer follows whatever time on_view
      // takes, so only the wait for its start is bounded.
      deadline.reset();
      if (h.type == FrameType::deliver_region) {
        const Message m = mapped_message(b, context);
        hand_over(detail::Access::view(m.key(), m.bytes(), m.sender(), m.request_id(), &m));
        return (h.flags & proto::kFlagLast) != 0;
      }
      if (h.type == FrameType::error) {
        proto::ErrorBody e;
        if (proto::decode_error(b, e) == Errc::ok &&
            e.code == static_cast<std::uint16_t>(Errc::timeout)) {
          return true;
        }
        if (failed) std::rethrow_exception(failed);  // the caller's own error comes first
        throw_error_frame(b, context);
      }
      proto::Deliver d;
      if (h.type != FrameType::deliver || proto::decode_deliver(b, d) != Errc::ok) {
        fail(Errc::protocol_violation, std::string(context) + ": unexpected answer");
      }
      const Sender sender{d.sender_pid, d.sender_uid, d.sender_client_id};
      if ((h.flags & proto::kFlagMore) != 0) {
        pieces.append(reinterpret_cast<const char*>(d.payload.data()), d.payload.size());
        in_pieces = true;
        return false;
      }
      if (in_pieces) {
        pieces.append(reinterpret_cast<const char*>(d.payload.data()), d.payload.size());
        hand_over(detail::Access::view(d.key, as_bytes(std::string_view(pieces)), sender,
                                       d.request_id, nullptr));
        pieces.clear();
        in_pieces = false;
      } else {
        hand_over(detail::Access::view(d.key, d.payload, sender, d.request_id, nullptr));
      }
      return (h.flags & proto::kFlagLast) != 0;
    });
    if (!answered) fail(Errc::io_error, std::string(context) + ": broker did not answer");
    if (failed) std::rethrow_exception(failed);
    return seen;
  }

  // collect_each() into Messages; `expected` (the batch asked for) sizes the vector.
  std::vector<Message> collect(std::uint64_t corr, std::chrono::milliseconds timeout,
                               std::string_view context, std::size_t expected = 1) {
    std::vector<Message> got;
    got.reserve(std::min<std::size_t>(expected, 64));  // more would be waste for a short batch
    collect_each(corr, timeout, context,
                 [&](const MessageView& v) { got.push_back(v.to_message()); });
    return got;
  }

  // A DELIVER_REGION: the payload is a read-only mapping of the region's fd, checked to be
  // sealed against any change first.
  Message mapped_message(proto::Bytes body, std::string_view context) {
    proto::DeliverRegion d;
    if (proto::decode_deliver_region(body, d) != Errc::ok) {
      fail(Errc::protocol_violation, std::string(context) + ": malformed DELIVER_REGION");
    }
    proto::UniqueFd region_fd = std::move(frame_fd);
    auto map = proto::shm::map_readonly(region_fd.get(), d.offset, d.length);
    if (!map) {
      releases->push(d.region_id);
      fail(Errc::protocol_violation,
           std::string(context) + ": unusable region from the broker: " + map.error().text);
    }
    Message m(std::string(d.key), {}, Sender{d.sender_pid, d.sender_uid, d.sender_client_id},
              d.request_id);
    detail::Access::set_mapped(m, std::make_shared<const detail::MappedPayload>(
                                      std::move(map).value(), d.region_id, releases));
    return m;
  }

  void require_unix(std::string_view what) const {
    if (!unix_socket) {
      throw Error(Errc::unexpected_frame,
                  std::string(what) + " needs a Unix socket connection (fds cannot cross TCP)");
    }
  }

  // Waits for the REGION answering `corr`; returns its fields and fd.
  std::pair<proto::RegionGrantBody, proto::UniqueFd> wait_grant(std::uint64_t corr,
                                                                std::string_view context) {
    proto::RegionGrantBody g;
    proto::UniqueFd got_fd;
    const bool answered = wait_for(corr, std::nullopt, [&](const proto::Header& h, proto::Bytes b) {
      if (h.type == FrameType::error) throw_error_frame(b, context);
      if (h.type != FrameType::region || proto::decode_region_grant(b, g) != Errc::ok) {
        fail(Errc::protocol_violation, std::string(context) + ": unexpected answer");
      }
      got_fd = std::move(frame_fd);
      return true;
    });
    if (!answered) fail(Errc::io_error, std::string(context) + ": broker did not answer");
    return {g, std::move(got_fd)};
  }

  Region allocate_region(std::size_t size) {
    check_usable();
    require_unix("allocate_region");
    if (size == 0) throw Error(Errc::invalid_argument, "allocate_region: size 0");
    const std::uint64_t corr = next_correlation++;
    proto::append_region_alloc(out, corr, proto::RegionAlloc{size});
    auto [g, region_fd] =
        wait_grant(corr, "allocate a region of " + std::to_string(size) + " bytes");
    auto st = std::make_unique<detail::RegionState>();
    st->releases = releases;
    st->id = g.region_id;  // from here on the destructor releases the handle
    st->size = static_cast<std::size_t>(g.size);
    if (st->size != size) {
      fail(Errc::protocol_violation, "broker granted a region of " + std::to_string(g.size) +
                                         " bytes for " + std::to_string(size));
    }
    // The broker made the memfd but allocated none of it: the pages are ours, charged to
    // this process's memory cgroup, and a shortage is an error here, not a SIGBUS later.
    if (auto r = proto::shm::reserve(region_fd.get(), st->size); !r) {
      throw Error(r.error().code, "allocate_region: " + r.error().text);
    }
    auto map = proto::shm::map_writable(region_fd.get(), st->size);
    if (!map) throw Error(map.error().code, "allocate_region: " + map.error().text);
    st->mapping = std::move(map).value();
    // A child forked while we fill the region must not inherit a writable mapping: it
    // would keep the broker from sealing the region when we send it.
    ::madvise(st->mapping.mutable_bytes().data(), st->size, MADV_DONTFORK);
    st->fd = std::move(region_fd);
    return detail::Access::make_region(std::move(st));
  }

  void send_region(detail::RegionState& st, proto::RegionTarget kind, std::uint64_t target,
                   std::string_view key, std::size_t offset, std::size_t length, bool release,
                   std::chrono::milliseconds wait, bool confirm) {
    check_usable();
    require_unix("sending a region");
    if (st.id == 0 || st.given_up) {
      throw Error(Errc::invalid_argument, "send: the Region is empty (moved from or given up)");
    }
    if (length == 0 || offset > st.size || length > st.size - offset) {
      throw Error(Errc::invalid_argument, "send: slice of " + std::to_string(length) +
                                              " bytes at offset " + std::to_string(offset) +
                                              " is outside the region of " +
                                              std::to_string(st.size) + " bytes");
    }
    if (kind == proto::RegionTarget::queue) check_key(key);
    if (!st.sealed) {
      // Immutable before anyone else sees it: the kernel refuses the write seal while a
      // writable mapping exists, and the broker refuses regions without it.
      st.mapping.reset();
      if (auto sealed = proto::shm::seal_write(st.fd.get()); !sealed) {
        throw Error(sealed.error().code, "send: " + sealed.error().text);
      }
      st.fd.reset();
      st.sealed = true;
    }
    proto::SendRegion m;
    m.region_id = st.id;
    m.offset = offset;
    m.length = length;
    m.target_kind = kind;
    m.release = release;
    m.target = target;
    m.key = key;
    if (kind == proto::RegionTarget::pid) {
      m.wait_ms = wait.count() < 0 ? INT32_MAX : to_wire_timeout(wait);
    }
    const std::uint64_t corr = next_correlation++;
    proto::append_send_region(out, corr, confirm ? proto::kFlagConfirm : 0, m);
    if (release) st.given_up = true;
    if (confirm) {
      wait_ok(corr, kind == proto::RegionTarget::queue
                        ? "send to '" + std::string(key) + "'"
                        : "region send to " + std::to_string(target));
    } else if (corked == 0 || out.size() >= kBatchFlushBytes) {
      write_all();
    }
  }

  // Payloads sent from memory that go through a region instead of inline.
  bool via_region(std::size_t size) const {
    return unix_socket && size > 0 && (size > region_threshold || size > session.max_payload);
  }
  // A region holding a copy of `payload`; nullopt when the region quota is used up and the
  // payload may go inline instead (sending it then behaves exactly as below the threshold:
  // the queue's max_bytes and overflow policy apply).
  std::optional<Region> copy_to_region(std::span<const std::byte> payload) {
    try {
      Region r = allocate_region(payload.size());
      std::memcpy(r.data().data(), payload.data(), payload.size());
      return r;
    } catch (const Error& e) {
      if (e.code() == Errc::quota_exceeded && payload.size() <= session.max_payload) {
        return std::nullopt;
      }
      throw;
    }
  }

  static std::uint32_t batch_size(std::size_t max) {
    if (max == 0) throw Error(Errc::invalid_argument, "a batch must take at least 1 message");
    return static_cast<std::uint32_t>(std::min<std::size_t>(max, UINT32_MAX));
  }

  // Asks for up to `max` messages of `key`; returns the correlation and the broker's
  // timeout to collect them with.
  std::pair<std::uint64_t, std::chrono::milliseconds> ask_receive(
      std::string_view key, std::size_t max, std::chrono::milliseconds timeout) {
    check_usable();
    check_key(key);
    proto::Receive r;
    r.key = key;
    r.timeout_ms = to_wire_timeout(timeout);
    r.max_count = batch_size(max);
    const std::uint64_t corr = next_correlation++;
    proto::append_receive(out, corr, r);
    return {corr, std::chrono::milliseconds(r.timeout_ms)};
  }

  std::vector<Message> receive(std::string_view key, std::size_t max,
                               std::chrono::milliseconds timeout) {
    const auto [corr, wire_timeout] = ask_receive(key, max, timeout);
    return collect(corr, wire_timeout, "receive", max);
  }

  std::vector<Message> receive_direct(std::size_t max, std::chrono::milliseconds timeout) {
    check_usable();
    if (!inbox_claimed) {
      const std::uint64_t corr = next_correlation++;
      proto::append_empty(out, FrameType::claim_inbox, corr);
      wait_ok(corr, "claim inbox");
      inbox_claimed = true;
    }
    proto::ReceiveDirect r;
    r.timeout_ms = to_wire_timeout(timeout);
    r.max_count = batch_size(max);
    const std::uint64_t corr = next_correlation++;
    proto::append_receive_direct(out, corr, r);
    return collect(corr, std::chrono::milliseconds(r.timeout_ms), "receive_direct", max);
  }

  void send_direct(proto::TargetKind kind, std::uint64_t target, std::uint64_t in_reply_to,
                   std::span<const std::byte> payload, const DirectOptions& options) {
    check_usable();
    check_payload(payload.size());
    proto::SendDirect d;
    d.kind = kind;
    d.target = target;
    d.in_reply_to = in_reply_to;
    // kForever: as long as the wire allows (about 24 days).
    d.wait_ms = options.wait.count() < 0 ? INT32_MAX : to_wire_timeout(options.wait);
    d.payload = payload;
    const std::uint64_t corr = next_correlation++;
    proto::append_send_direct(out, corr, options.confirm ? proto::kFlagConfirm : 0, d);
    if (options.confirm) {
      wait_ok(corr, "direct send to " +
                        std::string(kind == proto::TargetKind::pid ? "pid " : "client ") +
                        std::to_string(target));
    } else if (corked == 0 || out.size() >= kBatchFlushBytes) {
      write_all();
    }
  }
};

Client::Client(ClientOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->connect(options);
}

Client::~Client() {
  if (impl_ && !impl_->broken && !impl_->out.empty()) {
    try {
      impl_->write_all();
    } catch (const Error&) {
      // Nothing to report to: the caller is gone. The broker sees the close.
    }
  }
}

Client::Client(Client&&) noexcept = default;
Client& Client::operator=(Client&&) noexcept = default;

const SessionInfo& Client::session() const noexcept {
  return impl_->session;
}
const SendFailures& Client::send_failures() const noexcept {
  return impl_->failures;
}

void Client::send(std::string_view key, std::span<const std::byte> payload) {
  if (impl_->via_region(payload.size())) {
    impl_->check_key(key);
    if (auto r = impl_->copy_to_region(payload)) {
      send(key, std::move(*r));
      return;
    }
  }
  impl_->append_send(key, payload, 0);
  if (impl_->corked == 0 || impl_->out.size() >= kBatchFlushBytes) impl_->write_all();
}

void Client::send(std::string_view key, std::string_view payload) {
  send(key, as_bytes(payload));
}

void Client::send_confirmed(std::string_view key, std::span<const std::byte> payload) {
  if (impl_->via_region(payload.size())) {
    impl_->check_key(key);
    if (auto r = impl_->copy_to_region(payload)) {
      impl_->send_region(*detail::Access::state(*r), proto::RegionTarget::queue, 0, key, 0,
                         r->size(), true, std::chrono::milliseconds(0), true);
      return;
    }
  }
  const auto corr = impl_->append_send(key, payload, proto::kFlagConfirm);
  impl_->wait_ok(corr, "send to '" + std::string(key) + "'");
}

void Client::send_confirmed(std::string_view key, std::string_view payload) {
  send_confirmed(key, as_bytes(payload));
}

std::optional<Message> Client::receive(std::string_view key, std::chrono::milliseconds timeout) {
  auto got = impl_->receive(key, 1, timeout);
  if (got.empty()) return std::nullopt;
  return std::move(got.front());
}

std::optional<Message> Client::try_receive(std::string_view key) {
  return receive(key, std::chrono::milliseconds(0));
}

std::vector<Message> Client::receive_batch(std::string_view key, std::size_t max,
                                           std::chrono::milliseconds timeout) {
  return impl_->receive(key, max, timeout);
}

std::size_t Client::receive_each(std::string_view key, std::size_t max,
                                 std::chrono::milliseconds timeout,
                                 const std::function<void(const MessageView&)>& on_message) {
  if (!on_message) throw Error(Errc::invalid_argument, "receive_each: no callback");
  const auto [corr, wire_timeout] = impl_->ask_receive(key, max, timeout);
  return impl_->collect_each(corr, wire_timeout, "receive", on_message);
}

void Client::send_to_pid(std::uint32_t pid, std::span<const std::byte> payload,
                         const DirectOptions& options) {
  if (pid == 0) throw Error(Errc::invalid_argument, "send_to_pid: pid 0 names no process");
  if (impl_->via_region(payload.size())) {
    if (auto r = impl_->copy_to_region(payload)) {
      send_to_pid(pid, std::move(*r), options);
      return;
    }
  }
  impl_->send_direct(proto::TargetKind::pid, pid, 0, payload, options);
}

void Client::send_to_pid(std::uint32_t pid, std::string_view payload,
                         const DirectOptions& options) {
  send_to_pid(pid, as_bytes(payload), options);
}

void Client::send_to_client(std::uint64_t client_id, std::string_view payload,
                            const DirectOptions& options) {
  if (client_id == 0) throw Error(Errc::invalid_argument, "send_to_client: client id 0");
  impl_->send_direct(proto::TargetKind::client_id, client_id, 0, as_bytes(payload), options);
}

std::optional<Message> Client::receive_direct(std::chrono::milliseconds timeout) {
  auto got = impl_->receive_direct(1, timeout);
  if (got.empty()) return std::nullopt;
  return std::move(got.front());
}

std::vector<Message> Client::receive_direct_batch(std::size_t max,
                                                  std::chrono::milliseconds timeout) {
  return impl_->receive_direct(max, timeout);
}

std::optional<Message> Client::request(std::string_view key, std::string_view payload,
                                       std::chrono::milliseconds timeout) {
  auto& impl = *impl_;
  impl.check_usable();
  impl.check_key(key);
  impl.check_payload(payload.size());
  proto::Request r;
  r.key = key;
  r.timeout_ms = to_wire_timeout(timeout);
  r.payload = as_bytes(payload);
  const std::uint64_t corr = impl.next_correlation++;
  proto::append_request(impl.out, corr, r);
  // No local deadline: the broker starts the request's timeout only once a full `block`
  // queue accepts the message, which may be any time later; a dead broker still shows as
  // connection_closed.
  auto got = impl.collect(corr, kForever, "request to '" + std::string(key) + "'");
  if (got.empty()) return std::nullopt;
  return std::move(got.front());
}

void Client::reply(const Message& request, std::string_view payload) {
  if (!request.is_request()) {
    throw Error(Errc::invalid_argument, "reply: the message is not a request");
  }
  impl_->send_direct(proto::TargetKind::client_id, request.sender().client_id, request.request_id(),
                     as_bytes(payload), DirectOptions{{}, false});
}

void Client::declare(std::string_view key, const QueueOptions& options) {
  impl_->check_usable();
  impl_->check_key(key);
  proto::Declare d;
  d.key = key;
  d.max_messages = options.max_messages;
  d.max_bytes = options.max_bytes;
  d.overflow = static_cast<proto::Overflow>(options.overflow);
  const std::uint64_t corr = impl_->next_correlation++;
  proto::append_declare(impl_->out, corr, proto::kFlagConfirm, d);
  impl_->wait_ok(corr, "declare '" + std::string(key) + "'");
}

void Client::sync() {
  impl_->check_usable();
  const std::uint64_t corr = impl_->next_correlation++;
  proto::append_empty(impl_->out, FrameType::ping, corr);
  impl_->wait_ok(corr, "sync");
}

Client::Batch::Batch(Client& client) : client_(client) {
  ++client_.impl_->corked;
}

Client::Batch::~Batch() {
  auto& impl = *client_.impl_;
  if (--impl.corked == 0 && !impl.broken) {
    try {
      impl.write_all();
    } catch (const Error&) {
      // Recorded in the client: its next call throws the same error.
    }
  }
}

Region Client::allocate_region(std::size_t size) {
  return impl_->allocate_region(size);
}

void Client::send(std::string_view key, Region&& region) {
  auto* st = detail::Access::state(region);
  if (st == nullptr) throw Error(Errc::invalid_argument, "send: the Region is empty");
  impl_->send_region(*st, proto::RegionTarget::queue, 0, key, 0, st->size, true,
                     std::chrono::milliseconds(0), false);
  region = Region();
}

void Client::send(std::string_view key, Region& region, std::size_t offset, std::size_t length) {
  auto* st = detail::Access::state(region);
  if (st == nullptr) throw Error(Errc::invalid_argument, "send: the Region is empty");
  impl_->send_region(*st, proto::RegionTarget::queue, 0, key, offset, length, false,
                     std::chrono::milliseconds(0), false);
}

void Client::send_to_pid(std::uint32_t pid, Region&& region, const DirectOptions& options) {
  if (pid == 0) throw Error(Errc::invalid_argument, "send_to_pid: pid 0 names no process");
  auto* st = detail::Access::state(region);
  if (st == nullptr) throw Error(Errc::invalid_argument, "send_to_pid: the Region is empty");
  impl_->send_region(*st, proto::RegionTarget::pid, pid, {}, 0, st->size, true, options.wait,
                     options.confirm);
  region = Region();
}

SharedRegion Client::create_shared_region(std::string_view key, std::size_t size, unsigned mode) {
  auto& impl = *impl_;
  impl.check_usable();
  impl.require_unix("create_shared_region");
  impl.check_key(key);
  if (size == 0) throw Error(Errc::invalid_argument, "create_shared_region: size 0");
  if ((mode & ~0666u) != 0) {
    throw Error(Errc::invalid_argument, "create_shared_region: mode may only hold bits of 0666");
  }
  const std::uint64_t corr = impl.next_correlation++;
  proto::append_region_create(impl.out, corr,
                              proto::RegionCreate{size, static_cast<std::uint16_t>(mode), key});
  auto [g, fd] = impl.wait_grant(corr, "create shared region '" + std::string(key) + "'");
  auto st = std::make_unique<detail::SharedRegionState>();
  st->releases = impl.releases;
  st->id = g.region_id;
  st->size = static_cast<std::size_t>(g.size);
  st->writable = true;
  st->key = std::string(key);
  // The creator pays for the pages (see allocate_region); attachers share them.
  if (auto r = proto::shm::reserve(fd.get(), st->size); !r) {
    throw Error(r.error().code, "create_shared_region: " + r.error().text);
  }
  auto map = proto::shm::map_writable(fd.get(), st->size);
  if (!map) throw Error(map.error().code, "create_shared_region: " + map.error().text);
  st->mapping = std::move(map).value();
  return detail::Access::make_shared(std::move(st));
}

SharedRegion Client::attach_shared_region(std::string_view key, bool writable) {
  auto& impl = *impl_;
  impl.check_usable();
  impl.require_unix("attach_shared_region");
  impl.check_key(key);
  const std::uint64_t corr = impl.next_correlation++;
  proto::append_region_attach(impl.out, corr, proto::RegionAttach{writable, key});
  auto [g, fd] = impl.wait_grant(corr, "attach shared region '" + std::string(key) + "'");
  auto st = std::make_unique<detail::SharedRegionState>();
  st->releases = impl.releases;
  st->id = g.region_id;
  st->size = static_cast<std::size_t>(g.size);
  st->writable = g.writable;
  st->key = std::string(key);
  auto map = g.writable ? proto::shm::map_writable(fd.get(), st->size)
                        : proto::shm::map_shared_readonly(fd.get(), st->size);
  if (!map) throw Error(map.error().code, "attach_shared_region: " + map.error().text);
  st->mapping = std::move(map).value();
  return detail::Access::make_shared(std::move(st));
}

void Client::remove_shared_region(std::string_view key) {
  auto& impl = *impl_;
  impl.check_usable();
  impl.require_unix("remove_shared_region");
  impl.check_key(key);
  const std::uint64_t corr = impl.next_correlation++;
  proto::append_region_remove(impl.out, corr, key);
  impl.wait_ok(corr, "remove shared region '" + std::string(key) + "'");
}

// ---- Message, Region, SharedRegion ------------------------------------------------------

std::span<const std::byte> Message::bytes() const noexcept {
  if (mapped_) return mapped_->mapping.bytes();
  return std::as_bytes(std::span(payload_.data(), payload_.size()));
}

Message MessageView::to_message() const {
  if (const Message* region = detail::Access::region_of(*this)) return *region;
  return Message(std::string(key_), std::string(text()), sender_, request_id_);
}

std::string Message::take_payload() {
  if (mapped_) {
    std::string copy(text());
    mapped_.reset();
    return copy;
  }
  return std::move(payload_);
}

Region::Region() noexcept = default;
Region::~Region() = default;
Region::Region(Region&&) noexcept = default;
Region& Region::operator=(Region&&) noexcept = default;

std::span<std::byte> Region::data() noexcept {
  return state_ ? state_->mapping.mutable_bytes() : std::span<std::byte>{};
}
std::size_t Region::size() const noexcept {
  return state_ ? state_->size : 0;
}
std::uint64_t Region::id() const noexcept {
  return state_ ? state_->id : 0;
}
bool Region::sealed() const noexcept {
  return state_ && state_->sealed;
}

SharedRegion::SharedRegion() noexcept = default;
SharedRegion::~SharedRegion() = default;
SharedRegion::SharedRegion(SharedRegion&&) noexcept = default;
SharedRegion& SharedRegion::operator=(SharedRegion&&) noexcept = default;

std::span<std::byte> SharedRegion::data() noexcept {
  return state_ ? state_->mapping.mutable_bytes() : std::span<std::byte>{};
}
std::span<const std::byte> SharedRegion::bytes() const noexcept {
  return state_ ? state_->mapping.bytes() : std::span<const std::byte>{};
}
std::size_t SharedRegion::size() const noexcept {
  return state_ ? state_->size : 0;
}
bool SharedRegion::writable() const noexcept {
  return state_ && state_->writable;
}
std::uint64_t SharedRegion::id() const noexcept {
  return state_ ? state_->id : 0;
}
const std::string& SharedRegion::key() const noexcept {
  static const std::string empty;
  return state_ ? state_->key : empty;
}

}  // namespace qbus
