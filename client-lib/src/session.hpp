// libqbus internals, layer 2 of 3: the session. Frames on a Transport: the handshake,
// correlation ids, the outbound buffer (written at once, or in large chunks while corked
// by a Client::Batch), and the inbound side that matches answers to the correlation
// awaited, takes each frame's fd, records the broker's asynchronous send failures and
// puts pending region releases out ahead of the next request. It knows frames, not
// operations: Client (client_impl.hpp) appends operation frames with proto::append_* and
// reads their answers with wait_for(); a C API or another front end can do the same
// without Client. It uses only the plain value types of <qbus/client.hpp> (Error,
// ClientOptions, SessionInfo, SendFailures), never Client or Message.
//
// Blocking: connect(), flush() and wait_for() block the calling thread (wait_for() up to
// its deadline), which is what Client and a blocking C API want. An event loop instead
// polls fd() itself and calls write_some(), read_some() and handle_frames(), which never
// block.
//
// Failures: a transport failure, a protocol violation or a fatal broker error makes the
// session unusable for good: the first error is kept and every later check_usable()
// throws it again. An ERROR answering a request throws Error without breaking anything.
//
// Ownership, lifetime, thread-safety: a Session owns its Transport and buffers. It is not
// thread-safe (one thread at a time) and does not move (Client keeps it in its Impl).
// The ReleaseQueue is shared with the region handles the session hands out, which may
// outlive it and be dropped on any thread.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "qbus/client.hpp"
#include "qbus/proto/buffer.hpp"
#include "qbus/proto/codec.hpp"
#include "qbus/proto/unique_fd.hpp"
#include "transport.hpp"

namespace qbus::detail {

// Region ids whose handles this process gave up (a Message, Region or SharedRegion went,
// possibly on another thread); the session sends REGION_RELEASE for them with its next
// request. Thread-safe.
struct ReleaseQueue {
  std::mutex mutex;
  std::vector<std::uint64_t> ids;
  // Whether ids may hold something: take() runs before every request, and a lock there
  // was a sixth of the instructions of a 64-byte send (callgrind). Set and cleared under
  // the mutex; a push that take() misses goes with the next request.
  std::atomic<bool> pending{false};

  void push(std::uint64_t id) noexcept {
    try {
      std::lock_guard lock(mutex);
      ids.push_back(id);
      pending.store(true, std::memory_order_release);
    } catch (...) {
      // Out of memory: the handle is then released when the connection closes.
    }
  }
  std::vector<std::uint64_t> take() {
    std::vector<std::uint64_t> out;
    if (!pending.load(std::memory_order_acquire)) return out;
    std::lock_guard lock(mutex);
    out.swap(ids);
    pending.store(false, std::memory_order_relaxed);
    return out;
  }
};

class Session {
 public:
  using Clock = std::chrono::steady_clock;
  // wait_for() without a time limit.
  static constexpr Clock::time_point kNoDeadline = Clock::time_point::max();

  Session() = default;
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Connects to options.address (resolved as ClientOptions says) and completes the
  // handshake within options.connect_timeout, introducing itself as options.name and, on
  // TCP, with options.token. Throws Error (bad_address, connect_failed, invalid_argument
  // for a missing token, or the broker's refusal). Call once.
  void connect(const ClientOptions& options);

  // Writes what a Batch left buffered, best effort (failures are swallowed: nobody is
  // left to tell). Destroying a Session without it drops what is buffered.
  void close() noexcept;

  const SessionInfo& info() const noexcept { return info_; }
  const SendFailures& failures() const noexcept { return failures_; }
  bool passes_fds() const noexcept { return transport_.passes_fds(); }
  const std::shared_ptr<ReleaseQueue>& releases() const noexcept { return releases_; }
  int fd() const noexcept { return transport_.fd(); }

  // ---- Frames out ----------------------------------------------------------------------

  // Call before appending a frame: throws the error that broke the session, and appends
  // the pending region releases first, so that the caller's frame is the last one written
  // and its answer the first one awaited.
  void check_usable() {
    if (broken_) throw *broken_;
    queue_releases();
  }
  std::uint64_t next_correlation() noexcept { return next_correlation_++; }
  // Append frames here (proto::append_*), then flush() or flush_unless_corked().
  proto::ByteBuffer& out() noexcept { return out_; }
  bool has_output() const noexcept { return !out_.empty(); }
  // The error that broke the session for good, or null while it is usable.
  const Error* broken() const noexcept { return broken_ ? &*broken_ : nullptr; }
  // Writes all of out(), handling incoming frames meanwhile so that a broker blocked
  // writing to us can never deadlock with us blocked writing to it.
  void flush();
  // Writes what the socket takes now; true once out() is empty. Like read_some(), a
  // transport failure breaks the session and throws.
  bool write_some() {
    while (!out_.empty()) {
      std::size_t written = 0;
      try {
        written = transport_.write_some(out_.readable());
      } catch (const Error& e) {
        fail_write(e);
      }
      if (written == 0) return false;
      out_.consume(written);
    }
    return true;
  }
  // flush(), unless corked and less than a chunk is buffered.
  void flush_unless_corked() {
    if (corked_ == 0 || out_.size() >= kBatchFlushBytes) flush();
  }
  // Corks nest; the last uncork() flushes (a failure there is kept for the next call).
  void cork() noexcept { ++corked_; }
  void uncork() noexcept;

  // ---- Answers in ----------------------------------------------------------------------

  // Reads what is available; false when nothing was there.
  bool read_some() {
    try {
      return transport_.read_some(in_);
    } catch (const Error& e) {
      fail(e.code(), e.what());
    }
  }

  // What a frame handler made of a frame.
  enum class Handled {
    more,         // part of an answer: go on
    done,         // the awaited answer is complete: stop here
    unsolicited,  // answers nothing awaited: a send failure, or the broker closing
  };
  // Hands each complete frame already received to on_frame(const proto::Header&,
  // proto::Bytes) -> Handled, until it says done (returns true) or the input runs out
  // (false). The session deals with unsolicited frames itself. During on_frame,
  // take_frame_fd() has the frame's fd.
  template <typename OnFrame>
  bool handle_frames(const OnFrame& on_frame);

  // handle_frames() for one awaited request: frames carrying `corr` go to `handler`, a
  // bool(const proto::Header&, proto::Bytes) that returns true once the answer is in.
  template <typename Handler>
  bool wait_step(std::uint64_t corr, const Handler& handler) {
    return handle_frames([&](const proto::Header& h, proto::Bytes body) {
      if (corr == 0 || h.correlation != corr) return Handled::unsolicited;
      return handler(h, body) ? Handled::done : Handled::more;
    });
  }

  // Flushes, then handles frames until `handler` returns true for a frame carrying `corr`.
  // Returns false when `deadline` (kNoDeadline: none) passed first. `deadline` is read
  // before every wait, so a handler may lift it (it refers to the caller's).
  template <typename Handler>
  bool wait_for(std::uint64_t corr, const Clock::time_point& deadline, const Handler& handler);

  // Waits for the OK (or PONG) answering `corr`; throws the broker's ERROR as Error.
  void wait_ok(std::uint64_t corr, std::string_view context);

  // The fd of the frame being handled (see handle_frames).
  proto::UniqueFd take_frame_fd() noexcept { return std::move(frame_fd_); }

  // Streams: answers that keep coming after the request without anyone waiting for them
  // (SUBSCRIBE's deliveries). A frame nobody awaits goes to `handler` first, a
  // bool(const proto::Header&, proto::Bytes) that returns true when it took the frame (it
  // may take the frame's fd); only the frames it refuses are send failures or violations.
  // The handler runs inside whatever call is reading, so it must not wait or send, and
  // throws only through fail().
  void set_stream_handler(std::function<bool(const proto::Header&, proto::Bytes)> handler) {
    stream_handler_ = std::move(handler);
  }

  // ---- Failures ------------------------------------------------------------------------

  // Breaks the session (keeping the first error) and throws.
  [[noreturn]] void fail(Errc code, const std::string& text);
  // Throws the ERROR frame `body` as Error, prefixed by `context`; a fatal code breaks the
  // session.
  [[noreturn]] void throw_error_frame(proto::Bytes body, std::string_view context);
  // The same Error, returned for the caller to keep (a fatal code still breaks the session
  // and throws).
  Error error_of(proto::Bytes body, std::string_view context);

 private:
  static constexpr std::size_t kBatchFlushBytes = 64 * 1024;

  void hello(const ClientOptions& options, const std::string& token, Clock::time_point deadline);
  void queue_releases() {
    if (broken_) return;
    for (std::uint64_t id : releases_->take())
      proto::append_region_release(out_, next_correlation_++, 0, id);
  }
  void wait_readable(int timeout_ms) {
    try {
      transport_.wait(false, timeout_ms);
    } catch (const Error& e) {
      fail(e.code(), e.what());
    }
  }
  [[noreturn]] void fail_write(const Error& e);
  void drain_unsolicited();
  void unsolicited(const proto::Header& header, proto::Bytes body);
  void record_failure(proto::Bytes body);
  [[noreturn]] void fail_bad_header(Errc why);
  [[noreturn]] void fail_missing_fd(proto::FrameType type);
  [[noreturn]] void fail_closed_by_broker(proto::Bytes body);
  [[noreturn]] void fail_write_to_closed_broker(const std::string& why);

  Transport transport_;
  SessionInfo info_;
  proto::ByteBuffer in_;
  proto::ByteBuffer out_;
  std::uint64_t next_correlation_ = 1;
  int corked_ = 0;
  SendFailures failures_;
  std::optional<Error> broken_;  // set once the connection cannot be used any more
  std::shared_ptr<ReleaseQueue> releases_ = std::make_shared<ReleaseQueue>();
  proto::UniqueFd frame_fd_;  // the fd of the frame being handled, for its handler to take
  std::function<bool(const proto::Header&, proto::Bytes)> stream_handler_;
};

template <typename OnFrame>
bool Session::handle_frames(const OnFrame& on_frame) {
  while (true) {
    const auto hr = proto::decode_header(in_.readable(), proto::kMaxBodyCeiling);
    if (hr.status == proto::HeaderStatus::need_more) return false;
    if (hr.status == proto::HeaderStatus::bad) fail_bad_header(hr.error);
    const std::size_t size = proto::kHeaderSize + hr.header.body_size;
    if (in_.size() < size) return false;
    const auto body = in_.readable().subspan(proto::kHeaderSize, hr.header.body_size);
    // Consumed before it is handled, so a handler that throws (an ERROR answer) does not
    // leave the frame to be counted again by the next call. consume() only moves the
    // read cursor; `body` stays valid until the buffer is next written.
    in_.consume(size);
    frame_fd_.reset();
    if (proto::carries_fd(hr.header.type) && !transport_.take_fd(frame_fd_)) {
      fail_missing_fd(hr.header.type);
    }
    switch (on_frame(hr.header, body)) {
      case Handled::more:
        break;
      case Handled::done:
        return true;
      case Handled::unsolicited:
        unsolicited(hr.header, body);
        break;
    }
  }
}

template <typename Handler>
bool Session::wait_for(std::uint64_t corr, const Clock::time_point& deadline,
                       const Handler& handler) {
  // What this call writes cannot have been answered yet: its first wait polls before it
  // reads, rather than reading nothing (EAGAIN), polling and reading again.
  bool answer_on_its_way = !out_.empty();
  flush();
  while (true) {
    if (wait_step(corr, handler)) return true;
    if (!answer_on_its_way && read_some()) continue;
    int ms = -1;
    if (deadline != kNoDeadline) {
      const auto left =
          std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) {
        if (!answer_on_its_way) return false;
        answer_on_its_way = false;  // no time to wait: one read of what is there, as ever
        continue;
      }
      ms = static_cast<int>(std::min<std::int64_t>(left, INT_MAX));
    }
    answer_on_its_way = false;
    wait_readable(ms);
  }
}

}  // namespace qbus::detail
