#include "net/connection.hpp"

#include <spdlog/spdlog.h>

#include <cstring>

#include "net/server.hpp"

namespace qbus::daemon {
namespace {

constexpr std::size_t kReadChunk = 64 * 1024;
constexpr int kReadRoundsPerWakeup = 8;  // then yield to other connections
constexpr auto kCloseGrace = std::chrono::seconds(2);
constexpr std::uint64_t kLoggedMisbehaviours = 10;

bool would_block(const asio::error_code& ec) {
  return ec == asio::error::would_block || ec == asio::error::try_again;
}

}  // namespace

Connection::Connection(Server& server, Socket socket, broker::PeerId id, broker::Identity identity,
                       std::string comm)
    : server_(server),
      socket_(std::move(socket)),
      id_(id),
      identity_(identity),
      comm_(std::move(comm)),
      handshake_timer_(socket_.get_executor()) {
  asio::error_code ec;
  socket_.non_blocking(true, ec);
}

void Connection::start() {
  handshake_timer_.expires_after(std::chrono::milliseconds(server_.options().handshake_timeout_ms));
  handshake_timer_.async_wait([self = shared_from_this()](const asio::error_code& ec) {
    if (ec || self->welcomed_ || self->closed_) return;
    self->misbehaved(Errc::handshake_timeout, "no HELLO within the handshake timeout");
    self->reject(Errc::handshake_timeout, "no HELLO within the handshake timeout");
    self->server_.end_of_batch();
  });
  wait_readable();
}

bool Connection::backed_up() const {
  return out_.size() > server_.options().max_outbound_bytes;
}

void Connection::wait_readable() {
  if (reading_ || !can_read()) return;
  reading_ = true;
  socket_.async_wait(Socket::wait_read, [self = shared_from_this()](const asio::error_code& ec) {
    self->reading_ = false;
    if (ec || self->closed_) return;
    self->on_readable();
  });
}

void Connection::on_readable() {
  for (int round = 0; round < kReadRoundsPerWakeup && can_read(); ++round) {
    asio::error_code ec;
    std::span<std::byte> dst;
    const bool direct = in_.empty();
    if (direct) {
      dst = server_.scratch();
    } else {
      std::size_t want = kReadChunk;
      auto hr = proto::decode_header(in_.readable(), server_.options().max_body);
      if (hr.status == proto::HeaderStatus::complete) {
        want = std::max(want, proto::kHeaderSize + hr.header.body_size - in_.size());
      }
      dst = in_.prepare(want);
    }
    const std::size_t n = socket_.read_some(asio::buffer(dst.data(), dst.size()), ec);
    if (would_block(ec)) break;
    if (ec || n == 0) {
      if (ec && ec != asio::error::eof && ec != asio::error::connection_reset) {
        spdlog::debug("client {} (pid {}): read failed: {}", id_, identity_.pid, ec.message());
      }
      if (!in_.empty()) {
        misbehaved(Errc::malformed_frame, "disconnected in the middle of a frame (" +
                                              std::to_string(in_.size()) + " bytes pending)");
      }
      close();
      break;
    }
    if (direct) {
      auto got = dst.first(n);
      const std::size_t used = process(got);
      if (used < n && !closed_) {
        auto rest = got.subspan(used);
        std::memcpy(in_.append(rest.size()).data(), rest.data(), rest.size());
      }
    } else {
      in_.commit(n);
      in_.consume(process(in_.readable()));
    }
    if (n < dst.size()) break;  // the socket is drained
  }
  if (in_.empty() && in_.capacity() > 4 * kReadChunk) in_.shrink_to(kReadChunk);
  server_.end_of_batch();
  wait_readable();
}

std::size_t Connection::process(std::span<const std::byte> in) {
  std::size_t used = 0;
  while (!closing_ && !closed_ && !blocked_) {
    if (backed_up()) {
      paused_output_ = true;  // flush() resumes us once the peer has read enough
      break;
    }
    auto rest = in.subspan(used);
    auto hr = proto::decode_header(rest, server_.options().max_body);
    if (hr.status == proto::HeaderStatus::need_more) break;
    if (hr.status == proto::HeaderStatus::bad) {
      std::string text = hr.error == Errc::frame_too_large
                             ? "declared body size exceeds the limit of " +
                                   std::to_string(server_.options().max_body) + " bytes"
                             : "invalid frame header";
      misbehaved(hr.error, text);
      reject(hr.error, text);
      return in.size();
    }
    const std::size_t frame = proto::kHeaderSize + hr.header.body_size;
    if (rest.size() < frame) break;
    if (handle(hr.header, rest.subspan(proto::kHeaderSize, hr.header.body_size)) == Step::stop) {
      break;  // the frame stays unconsumed and is retried on unblock()
    }
    used += frame;
  }
  return used;
}

Connection::Step Connection::handle(const proto::Header& h, proto::Bytes body) {
  using proto::FrameType;
  if (!welcomed_) return handle_hello(h, body);
  auto& broker = server_.broker();
  const auto allowed_flags = (h.type == FrameType::send || h.type == FrameType::declare)
                                 ? proto::kFlagConfirm
                                 : std::uint16_t{0};
  if ((h.flags & ~allowed_flags) != 0) {
    bad_request(h.correlation, Errc::malformed_frame, "unknown flag bits set");
    return Step::next;
  }
  switch (h.type) {
    case FrameType::send: {
      proto::Send m;
      if (auto e = proto::decode_send(body, m); e != Errc::ok) {
        bad_request(h.correlation, e,
                    e == Errc::invalid_key ? "invalid queue key" : "malformed SEND");
        return Step::next;
      }
      auto r = broker.send(id_, m.key, m.payload, broker::Clock::now());
      switch (r.result) {
        case broker::SendResult::accepted:
          if (h.flags & proto::kFlagConfirm) {
            proto::append_empty(out_, FrameType::ok, h.correlation);
            server_.mark_dirty(id_);
          }
          return Step::next;
        case broker::SendResult::rejected:
          spdlog::debug("client {} (pid {} uid {}): send to '{}' refused: {}", id_, identity_.pid,
                        identity_.uid, m.key, r.text);
          error(h.correlation, r.error, r.text);
          return Step::next;
        case broker::SendResult::blocked:
          blocked_ = true;
          return Step::stop;
      }
      return Step::next;
    }
    case FrameType::receive: {
      proto::Receive m;
      if (auto e = proto::decode_receive(body, m); e != Errc::ok) {
        bad_request(h.correlation, e,
                    e == Errc::invalid_key ? "invalid queue key" : "malformed RECEIVE");
        return Step::next;
      }
      broker.receive(id_, h.correlation, m.key, m.max_count, m.timeout_ms, broker::Clock::now());
      return Step::next;
    }
    case FrameType::declare: {
      proto::Declare m;
      if (auto e = proto::decode_declare(body, m); e != Errc::ok) {
        bad_request(h.correlation, e,
                    e == Errc::invalid_key ? "invalid queue key" : "malformed DECLARE");
        return Step::next;
      }
      std::string text;
      const auto e = broker.declare(m.key, {m.max_messages, m.max_bytes, m.overflow}, text);
      if (e == Errc::ok) {
        proto::append_empty(out_, FrameType::ok, h.correlation);
        server_.mark_dirty(id_);
      } else {
        error(h.correlation, e, text);
      }
      return Step::next;
    }
    case FrameType::ping:
      if (!body.empty()) {
        bad_request(h.correlation, Errc::malformed_frame, "PING has no body");
        return Step::next;
      }
      proto::append_empty(out_, FrameType::pong, h.correlation);
      server_.mark_dirty(id_);
      return Step::next;
    case FrameType::hello:
    case FrameType::welcome:
    case FrameType::error:
    case FrameType::ok:
    case FrameType::deliver:
    case FrameType::pong:
      bad_request(h.correlation, Errc::unexpected_frame,
                  std::string(proto::frame_type_name(h.type)) + " is not valid from a client here");
      return Step::next;
  }
  bad_request(h.correlation, Errc::unknown_frame_type,
              "unknown frame type " + std::to_string(static_cast<unsigned>(h.type)));
  return Step::next;
}

Connection::Step Connection::handle_hello(const proto::Header& h, proto::Bytes body) {
  if (h.type != proto::FrameType::hello) {
    misbehaved(Errc::handshake_required, "first frame was not HELLO");
    reject(Errc::handshake_required, "the first frame must be HELLO");
    return Step::next;
  }
  proto::Hello m;
  if (h.flags != 0 || proto::decode_hello(body, m) != Errc::ok) {
    misbehaved(Errc::malformed_frame, "malformed HELLO");
    reject(Errc::malformed_frame, "malformed HELLO");
    return Step::next;
  }
  if (m.min_version > proto::kMaxVersion || m.max_version < proto::kMinVersion) {
    const auto text = "client speaks protocol versions " + std::to_string(m.min_version) + ".." +
                      std::to_string(m.max_version) + ", this broker speaks " +
                      std::to_string(proto::kMinVersion) + ".." +
                      std::to_string(proto::kMaxVersion);
    misbehaved(Errc::unsupported_version, text);
    reject(Errc::unsupported_version, text);
    return Step::next;
  }
  welcomed_ = true;
  handshake_timer_.cancel();
  proto::Welcome w;
  w.version = proto::kVersion;
  w.max_body = server_.options().max_body;
  w.max_payload = server_.broker().limits().max_payload;
  w.pid = identity_.pid;
  w.uid = identity_.uid;
  w.gid = identity_.gid;
  w.client_id = identity_.client_id;
  proto::append_welcome(out_, h.correlation, w);
  server_.mark_dirty(id_);
  spdlog::debug("client {} connected: pid {} uid {} comm '{}' name '{}'", id_, identity_.pid,
                identity_.uid, comm_, m.client_name);
  return Step::next;
}

void Connection::error(std::uint64_t correlation, Errc code, std::string_view text) {
  proto::append_error(out_, correlation, code, text);
  server_.mark_dirty(id_);
}

void Connection::bad_request(std::uint64_t correlation, Errc code, std::string_view text) {
  misbehaved(code, text);
  error(correlation, code, text);
}

void Connection::misbehaved(Errc code, std::string_view text) {
  // A peer repeating the same mistake must not flood the log: the first few, then a sample.
  ++misbehaviours_;
  if (misbehaviours_ > kLoggedMisbehaviours && misbehaviours_ % 1000 != 0) return;
  spdlog::warn("client {} (pid {} uid {} comm '{}'): {}: {}{}", id_, identity_.pid, identity_.uid,
               comm_, errc_name(code), text,
               misbehaviours_ > kLoggedMisbehaviours
                   ? " (" + std::to_string(misbehaviours_) + " so far)"
                   : std::string());
}

void Connection::reject(Errc code, std::string_view text) {
  error(0, code, text);
  if (errc_is_fatal(code) || !welcomed_ || code == Errc::too_many_connections) {
    drain_and_close();
  }
}

void Connection::drain_and_close() {
  if (closing_ || closed_) return;
  closing_ = true;
  server_.mark_dirty(id_);
  // A peer that never reads must not keep a closing connection alive.
  handshake_timer_.expires_after(kCloseGrace);
  handshake_timer_.async_wait([self = shared_from_this()](const asio::error_code& ec) {
    if (!ec) self->close();
  });
}

void Connection::flush() {
  if (closed_ || writing_) return;
  while (!out_.empty()) {
    asio::error_code ec;
    auto data = out_.readable();
    const std::size_t n = socket_.write_some(asio::buffer(data.data(), data.size()), ec);
    if (would_block(ec)) {
      wait_writable();
      return;
    }
    if (ec) {
      if (ec != asio::error::broken_pipe && ec != asio::error::connection_reset) {
        spdlog::debug("client {} (pid {}): write failed: {}", id_, identity_.pid, ec.message());
      }
      close();
      return;
    }
    out_.consume(n);
  }
  if (out_.capacity() > 16 * kReadChunk) out_.shrink_to(kReadChunk);
  if (closing_) {
    close();
    return;
  }
  if (paused_output_) {
    paused_output_ = false;
    // Posted: flush() runs inside other connections' batches, which must not nest.
    asio::post(socket_.get_executor(), [self = shared_from_this()] { self->resume(); });
  }
}

void Connection::wait_writable() {
  writing_ = true;
  socket_.async_wait(Socket::wait_write, [self = shared_from_this()](const asio::error_code& ec) {
    self->writing_ = false;
    if (ec || self->closed_) return;
    self->flush();
  });
}

void Connection::unblock() {
  blocked_ = false;
  resume();
}

void Connection::resume() {
  if (closed_) return;
  if (!in_.empty()) in_.consume(process(in_.readable()));
  server_.end_of_batch();
  wait_readable();
}

void Connection::close() {
  if (closed_) return;
  closed_ = true;
  handshake_timer_.cancel();
  asio::error_code ec;
  socket_.shutdown(Socket::shutdown_both, ec);
  socket_.close(ec);
  server_.forget(id_);
}

}  // namespace qbus::daemon
