// Connection's output side: every frame the daemon sends a peer is encoded here, into the
// connection's buffer, with the fds that travel with it (or, to a TCP peer, a region's bytes
// inline), and written once per batch. The input side is connection.cpp.
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "net/connection.hpp"
#include "net/memfd_backing.hpp"
#include "net/server.hpp"

namespace qbus::daemon {
namespace {

// fds per sendmsg; PROTOCOL.md section 16.1 promises clients no more.
constexpr std::size_t kMaxFdsPerWrite = 16;
// fds a connection may have waiting to be written before it counts as backed up: every one
// is an open file in qbusd, and a peer that does not read must not collect thousands.
constexpr std::size_t kMaxPendingFds = 32;

}  // namespace

std::uint64_t Connection::output_with_queued() const {
  std::uint64_t n = out_.size();
  for (const auto& q : queued_)
    if (const auto* b = std::get_if<proto::ByteBuffer>(&q)) n += b->size();
  return n;
}

bool Connection::backed_up() const {
  return out_.size() > server_.options().max_outbound_bytes || !queued_.empty() ||
         fds_.size() >= kMaxPendingFds;
}

proto::ByteBuffer& Connection::out() {
  if (queued_.empty()) return out_;
  if (auto* b = std::get_if<proto::ByteBuffer>(&queued_.back())) return *b;
  return std::get<proto::ByteBuffer>(queued_.emplace_back(proto::ByteBuffer{}));
}

void Connection::pass_fd(proto::UniqueFd fd) {
  // Unix connections never stream, so the next frame starts at the end of out_.
  fds_.push_back(PendingFd{flushed_ + out_.size(), std::move(fd)});
  server_.fds_in_flight(*this, 1);
}

std::optional<std::uint64_t> Connection::pass_region_fd(broker::RegionId id, bool read_only,
                                                        std::string& why) {
  const auto& regions = server_.broker().regions();
  auto fd = region_fd_for_peer(regions.backing_handle(id), read_only, why);
  if (!fd) return std::nullopt;
  pass_fd(std::move(fd));
  return regions.find(id)->size;
}

void Connection::deliver_region(std::uint64_t correlation, bool last, const broker::Delivery& d) {
  const broker::RegionRef& ref = d.region;
  if (identity_.tcp) {
    // No fds over TCP: the bytes go inline, read from the region as the output drains.
    stream_inline(correlation, last, d);
    return;
  }
  std::string why;
  // A duplicate, not a read-only reopen: the sender's write seal keeps everyone from
  // writing already.
  const auto size = pass_region_fd(ref.id, false, why);
  if (!size) {
    // The message is gone from its queue already; the peer must learn it lost one.
    log_with(log_fields(Errc::internal_error), spdlog::level::err,
             "client {} ({}): cannot pass region {}: {}", id_, description_, ref.id, why);
    reject(Errc::internal_error, "the broker could not pass a region message's fd");
    drain_and_close();
    return;
  }
  proto::DeliverRegion m;
  m.sender_pid = d.sender.pid;
  m.sender_uid = d.sender.uid;
  m.sender_client_id = d.sender.client_id;
  m.request_id = d.request_id;
  m.region_id = ref.id;
  m.region_size = *size;
  m.offset = ref.offset;
  m.length = ref.length;
  m.key = d.key;
  proto::append_deliver_region(out(), correlation, last ? proto::kFlagLast : 0, m);
  mark_dirty();
}

void Connection::stream_inline(std::uint64_t correlation, bool last, const broker::Delivery& d) {
  InlineStream st;
  st.region = d.region.id;
  st.correlation = correlation;
  st.last = last;
  st.sender_pid = d.sender.pid;
  st.sender_uid = d.sender.uid;
  st.sender_client_id = d.sender.client_id;
  st.request_id = d.request_id;
  st.key = std::string(d.key);
  st.offset = d.region.offset;
  st.length = d.region.length;
  queued_.emplace_back(std::move(st));
  mark_dirty();
}

bool Connection::refill() {
  if (queued_.empty()) return false;
  if (auto* b = std::get_if<proto::ByteBuffer>(&queued_.front())) {
    out_.swap(*b);
    queued_.pop_front();
    return true;
  }
  auto& st = std::get<InlineStream>(queued_.front());
  // Pieces leave room for the DELIVER fields (at most 280 bytes) under max_body.
  const std::size_t max_body = server_.options().max_body;
  const std::size_t piece_max = max_body > 2048 ? max_body - 1024 : max_body / 2;
  const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(piece_max, st.length - st.sent));
  const bool more = st.sent + n < st.length;
  std::vector<std::byte> piece(n);  // per piece of up to ~1 MiB: nothing kept between streams
  const int fd = server_.broker().regions().backing_handle(st.region);
  std::size_t got = 0;
  while (got < n) {
    const ssize_t r =
        ::pread(fd, piece.data() + got, n - got, static_cast<off_t>(st.offset + st.sent + got));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      // Sealed and range-checked, so only a broken fd gets here: the message is lost and
      // the peer must learn that.
      log_with(log_fields(Errc::internal_error), spdlog::level::err,
               "client {} ({}): cannot read region {} to send it inline: {}", id_, description_,
               st.region, r < 0 ? std::strerror(errno) : "end of file");
      queued_.clear();
      proto::append_error(out_, 0, Errc::internal_error,
                          "the broker could not read a region message for you");
      drain_and_close();
      return true;
    }
    got += static_cast<std::size_t>(r);
  }
  const proto::Deliver d{st.sender_pid,
                         st.sender_uid,
                         st.sender_client_id,
                         st.request_id,
                         std::string_view(st.key),
                         std::span<const std::byte>(piece)};
  const std::uint16_t flags = more ? proto::kFlagMore : (st.last ? proto::kFlagLast : 0);
  proto::append_deliver(out_, st.correlation, flags, d);
  st.sent += n;
  if (!more) {
    const broker::RegionId region = st.region;
    queued_.pop_front();
    // Every byte is in out_ now: the region may go (a closing connection's handles go with
    // its disconnect instead).
    (void)server_.broker().release_region(id_, region);
  }
  return true;
}

std::size_t Connection::write_out(asio::error_code& ec) {
  auto data = out_.readable();
  if (tls_) return tls_->write(data, ec);
  if (fds_.empty()) return socket_.write_some(asio::buffer(data.data(), data.size()), ec);

  // Every fd goes with a sendmsg whose data starts at its frame's first byte (or earlier),
  // so the client has it by the time it decodes the frame; the kernel attaches the fds to
  // the first bytes of the call.
  std::size_t len = data.size();
  int fds[kMaxFdsPerWrite];
  std::size_t nfds = 0;
  if (fds_.front().at > flushed_) {
    len = std::min<std::uint64_t>(len, fds_.front().at - flushed_);
  } else {
    for (const auto& p : fds_) {
      if (p.at >= flushed_ + len) break;
      if (nfds == kMaxFdsPerWrite) {
        len = p.at - flushed_;
        break;
      }
      fds[nfds++] = p.fd.get();
    }
  }
  iovec iov{const_cast<std::byte*>(data.data()), len};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFdsPerWrite)];
  if (nfds > 0) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    std::memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
  }
  const ssize_t n = ::sendmsg(socket_.native_handle(), &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
  if (n < 0) {
    ec = asio::error_code(errno, asio::system_category());
    return 0;
  }
  // The receiving socket holds its own references now; ours close.
  for (std::size_t i = 0; i < nfds; ++i)
    fds_.pop_front();
  if (nfds > 0) server_.fds_in_flight(*this, -static_cast<int>(nfds));
  return static_cast<std::size_t>(n);
}

void Connection::error(std::uint64_t correlation, Errc code, std::string_view text) {
  proto::append_error(out(), correlation, code, text);
  mark_dirty();
}

void Connection::ok(std::uint64_t correlation) {
  proto::append_empty(out(), proto::FrameType::ok, correlation);
  mark_dirty();
}

void Connection::request_flush() {
  flush_pending_ = true;
  server_.flush_at_end_of_batch(id_);
}

void Connection::flush() {
  if (closed_ || writing_) return;
  // A TLS connection is written only once its ciphertext, too, has gone.
  while (!out_.empty() || refill() || tls_output_pending()) {
    if (out_.empty() && !tls_output_pending()) continue;
    asio::error_code ec;
    const std::size_t n = write_out(ec);
    if (would_block(ec)) {
      note_output();
      server_.output_drained(*this);
      wait_writable();
      return;
    }
    if (ec) {
      if (ec != asio::error::broken_pipe && ec != asio::error::connection_reset) {
        log_with(log_fields(), spdlog::level::debug, "client {} ({}): write failed: {}", id_,
                 description_, ec.message());
      }
      close();
      return;
    }
    out_.consume(n);
    flushed_ += n;
  }
  if (out_.capacity() > 16 * kReadChunk) out_.shrink_to(kReadChunk);
  note_output();
  server_.output_drained(*this);
  if (closing_) {
    // Sends waiting for the journal get their OK or ERROR first (journaled() queues it and
    // flushes again); the close grace bounds the wait.
    if (unjournaled_.empty()) close();
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

}  // namespace qbus::daemon
