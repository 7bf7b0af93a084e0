// Connection's reading of its socket: the posted read that waits, the hang-up watch while
// reads are paused, and the rounds of reads that feed process().
#include <poll.h>
#include <spdlog/spdlog.h>

#include <cstring>

#include "net/connection.hpp"
#include "net/server.hpp"

namespace qbus::daemon {
namespace {

constexpr int kReadRoundsPerWakeup = 8;  // then yield to other connections

}  // namespace

void Connection::wait_readable() {
  if (reading_) return;
  if (!can_read()) {
    // Output that backed up while the broker pushed deliveries (a subscription, a waiting
    // receive) stops reading as surely as one that backed up in process(): flush() must
    // know to resume, or the frames the peer sends meanwhile are never read.
    if (backed_up()) paused_output_ = true;
    watch_hangup();
    return;
  }
  reading_ = true;
  stop_watching_hangup();
  if (tls_) {
    if (tls_->input_pending()) {
      // Decrypted bytes may wait in the engine, which the socket's readiness does not show.
      asio::post(socket_.get_executor(), [self = shared_from_this()] {
        self->reading_ = false;
        if (!self->closed_) self->on_readable();
      });
      return;
    }
    // The engine reads the socket itself, so TLS waits for readiness.
    socket_.async_wait(Socket::wait_read, [self = shared_from_this()](const asio::error_code& ec) {
      self->reading_ = false;
      if (ec || self->closed_) return;
      self->on_readable();
    });
    return;
  }
  socket_.async_read_some(asio::buffer(wake_),
                          [self = shared_from_this()](const asio::error_code& ec, std::size_t n) {
                            self->reading_ = false;
                            if (ec == asio::error::operation_aborted || self->closed_) return;
                            self->on_woken(ec, n);
                          });
}

void Connection::watch_hangup() {
  if (watching_hangup_ || closed_ || closing_) return;
  // The reactor reports a hang-up once, as it happens: one that came while we were
  // reading has been reported already, so look before waiting.
  pollfd p{socket_.native_handle(), 0, 0};
  if (::poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR)) != 0) {
    log_with(log_fields(), spdlog::level::debug,
             "client {} ({}) hung up while its reads were paused", id_, description_);
    close();
    return;
  }
  watching_hangup_ = true;
  // wait_error completes on EPOLLERR or EPOLLHUP (and EPOLLPRI, which only TCP urgent
  // data raises); close() and stop_watching_hangup() cancel it.
  socket_.async_wait(
      Socket::wait_error,
      asio::bind_cancellation_slot(
          hangup_cancel_.slot(),
          [self = shared_from_this(), generation = hangup_generation_](const asio::error_code& ec) {
            if (generation != self->hangup_generation_) return;  // cancelled; maybe rewatched
            self->watching_hangup_ = false;
            if (ec || self->closed_) return;
            if (self->can_read()) {
              // Reading again: the read path takes what is left and then the end of the stream.
              if (!self->reading_) self->on_readable();
              return;
            }
            self->watch_hangup();  // closes on a hang-up or error; waits again after urgent data
          }));
}

void Connection::stop_watching_hangup() {
  if (!watching_hangup_) return;
  watching_hangup_ = false;
  ++hangup_generation_;
  hangup_cancel_.emit(asio::cancellation_type::all);
}

void Connection::on_woken(const asio::error_code& ec, std::size_t n) {
  // A closing connection reads nothing more, as one paused before the read was posted:
  // its drain or its grace timer closes it, and a peer's EOF must not cut the drain short.
  if (closing_) return;
  const auto started = broker::Clock::now();
  if (took(wake_, n, ec, false) == Read::more) read_rounds();
  end_reads(started);
}

void Connection::on_readable() {
  const auto started = broker::Clock::now();
  read_rounds();
  end_reads(started);
}

void Connection::read_rounds() {
  for (int round = 0; round < kReadRoundsPerWakeup && can_read(); ++round) {
    asio::error_code ec;
    std::span<std::byte> dst;
    const bool in_place = !in_.empty();
    if (!in_place) {
      dst = server_.scratch();
    } else {
      std::size_t want = kReadChunk;
      auto hr = proto::decode_header(in_.readable(), server_.options().max_body);
      if (hr.status == proto::HeaderStatus::complete) {
        want = std::max(want, proto::kHeaderSize + hr.header.body_size - in_.size());
      }
      dst = in_.prepare(want);
    }
    const std::size_t n = read_bytes(dst, ec);
    if (took(dst, n, ec, in_place) != Read::more) break;
  }
}

Connection::Read Connection::took(std::span<std::byte> dst, std::size_t n,
                                  const asio::error_code& ec, bool in_place) {
  if (would_block(ec)) return Read::drained;
  if (ec || n == 0) {
    if (ec && ec != asio::error::eof && ec != asio::error::connection_reset) {
      log_with(log_fields(), spdlog::level::debug, "client {} ({}): read failed: {}", id_,
               description_, ec.message());
    }
    if (!ec || ec == asio::error::eof) {
      // The end of the peer's stream, not of the connection: a peer that shut down only its
      // writing side still reads what it asked for, messages taken from queues among it.
      input_ended_ = true;
      finish_input();
      return Read::closed;
    }
    if (!in_.empty() && !starts_with_whole_frame()) {
      misbehaved(Errc::malformed_frame, "disconnected in the middle of a frame (" +
                                            std::to_string(in_.size()) + " bytes pending)");
    }
    close();
    return Read::closed;
  }
  if (in_place) {
    in_.commit(n);
    in_.consume(process(in_.readable()));
  } else if (in_.empty()) {
    auto got = dst.first(n);
    const std::size_t used = process(got);
    if (used < n && !closed_) {
      auto rest = got.subspan(used);
      std::memcpy(in_.append(rest.size()).data(), rest.data(), rest.size());
    }
  } else {
    // The start of a frame waits in in_: the rest joins it there.
    std::memcpy(in_.append(n).data(), dst.data(), n);
    in_.consume(process(in_.readable()));
  }
  return n < dst.size() ? Read::drained : Read::more;
}

void Connection::finish_input() {
  if (!input_ended_ || closing_ || closed_) return;
  if (!in_.empty() && starts_with_whole_frame()) return;  // resume() handles them first
  if (!in_.empty()) {
    misbehaved(Errc::malformed_frame, "disconnected in the middle of a frame (" +
                                          std::to_string(in_.size()) + " bytes pending)");
  }
  // A peer that is gone fails a write (TCP: once its RST is back); one that never reads
  // meets the close grace.
  drain_and_close();
}

bool Connection::starts_with_whole_frame() const {
  // Frames held back by a pause are whole; only a cut one is the peer's fault.
  const auto hr = proto::decode_header(in_.readable(), server_.options().max_body);
  return hr.status == proto::HeaderStatus::complete &&
         in_.size() >= proto::kHeaderSize + hr.header.body_size;
}

void Connection::end_reads(broker::Clock::time_point started) {
  if (in_.empty() && in_.capacity() > 4 * kReadChunk) in_.shrink_to(kReadChunk);
  // Reading can make the engine answer (an alert, a key update) with nothing to send.
  if (tls_output_pending() && !flush_pending_ && !closed_) request_flush();
  server_.end_of_batch();
  server_.note_busy(started);
  wait_readable();
}

}  // namespace qbus::daemon
