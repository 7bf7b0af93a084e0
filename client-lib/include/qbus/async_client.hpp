// libqbus: an asynchronous client on a caller's Asio executor.
//
//   asio::io_context io;
//   qbus::AsyncClient client(io.get_executor());
//   client.async_request("echo", "ping", std::chrono::seconds(5),
//                        [](std::error_code ec, std::optional<qbus::Message> reply) { ... });
//   io.run();
//
// Every operation takes an Asio completion token: a callback, asio::use_awaitable in a
// coroutine, asio::use_future, or any other. Many operations may be outstanding on one
// connection at once (each is matched to its answer by the protocol's correlation ids),
// and one thread may run thousands of AsyncClients. Semantics are those of the blocking
// Client's calls of the same names (client.hpp); this header says what differs.
//
// Completion. Handlers get a std::error_code: empty on success, a qbus::Errc (category
// qbus::error_category(), compare with `ec == qbus::Errc::queue_full`) on failure, or
// asio::error::operation_aborted when the operation was cancelled or the AsyncClient was
// destroyed first. A receive or request that times out is not a failure: it completes with
// an empty error and std::nullopt. Handlers run on the AsyncClient's executor (a handler
// bound to another executor or strand is not moved there), never inside the call that
// started the operation.
//
// The connection. The constructor connects and completes the handshake before it returns
// (on a local socket, well under a millisecond; it throws Error as Client's does). When the
// connection fails (the broker restarts, say), every outstanding operation completes with
// its error (connection_closed, io_error, shutting_down) and every later one at once: make
// a new AsyncClient to reconnect.
//
// Cancellation. Asio's per-operation cancellation slots (asio::bind_cancellation_slot,
// the awaitable operators, timeouts through a cancellation signal) complete the operation
// with operation_aborted at once. The protocol has no cancel request, so the broker may
// still answer it: a message it hands to a cancelled async_receive goes back to its queue
// (an async_receive with a cancellation slot, as every one in a coroutine has, is made
// in acknowledgement mode on the wire: it counts against the broker's
// limits.max_unacked until its message arrives, which is then acked at once and handed
// out without a delivery tag; if the connection fails in between, the message is
// delivered again elsewhere); a message handed to a cancelled async_receive_direct is
// lost, as with a receiver that died holding it, and so is a receive's on a protocol-1
// broker; a cancelled request's reply is dropped; a cancelled send was sent.
//
// Sends. async_send, async_send_to_pid, async_reply and async_publish (bytes or a whole
// Region) without confirm complete as soon as the frame is buffered, unless this connection already
// has more than kOutputHighWater bytes waiting for the socket: then once it has drained below (the
// backpressure of a broker that does not read); the broker's refusals are counted in
// send_failures(). With confirm they complete with the broker's verdict. Byte payloads go
// inline, up to the broker's max_payload; bulk data goes in a Region
// (async_allocate_region, then async_send or async_publish of the Region).
//
// Subscriptions. subscribe() and subscribe_subject() return an AsyncSubscription at once
// (the request is pipelined); its async_next() takes the pushed messages in order. See
// AsyncSubscription below.
//
// Arguments (keys, payloads, headers, options) are copied into the connection's buffer
// when the operation starts, which a deferred token (asio::use_awaitable, asio::deferred)
// delays until it is awaited or launched: keep what they refer to alive until then (as
// `co_await c.async_send(key, payload, asio::use_awaitable)` does in one expression).
//
// Thread-safety, ownership: an AsyncClient is not thread-safe. Start operations and
// destroy it on its executor's thread (when several threads run the io_context, give it a
// strand). Destroying it completes every outstanding operation with operation_aborted.
// Move-only. This header needs Asio (Debian's libasio-dev, standalone).
#pragma once

#include <fcntl.h>

#include <asio/any_io_executor.hpp>
#include <asio/associated_cancellation_slot.hpp>
#include <asio/async_result.hpp>
#include <asio/error.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/post.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>

#include "qbus/async_engine.hpp"
#include "qbus/client.hpp"
#include "qbus/errc.hpp"

namespace qbus {

class AsyncSubscription;

class AsyncClient {
 public:
  using executor_type = asio::any_io_executor;
  // Output buffered beyond this holds pipelined sends until it drains (see the top).
  static constexpr std::size_t kOutputHighWater = detail::kAsyncOutputHighWater;

  explicit AsyncClient(const executor_type& executor, ClientOptions options = {})
      : state_(std::make_shared<State>(executor, std::move(options))) {}
  ~AsyncClient() {
    if (state_) state_->shut_down();
  }
  AsyncClient(AsyncClient&&) noexcept = default;
  AsyncClient& operator=(AsyncClient&& other) noexcept {
    if (this != &other) {
      if (state_) state_->shut_down();
      state_ = std::move(other.state_);
    }
    return *this;
  }
  AsyncClient(const AsyncClient&) = delete;
  AsyncClient& operator=(const AsyncClient&) = delete;

  executor_type get_executor() const noexcept { return state_->executor; }
  const SessionInfo& session() const noexcept { return state_->engine.session(); }
  const SendFailures& send_failures() const noexcept { return state_->engine.send_failures(); }

  // ---- Queues: void(std::error_code) ----
  template <typename Token>
  auto async_send(std::string_view key, std::string_view payload, const SendOptions& options,
                  Token&& token) {
    return start<void(std::error_code)>(
        std::forward<Token>(token),
        [key, payload, options](detail::AsyncEngine& e, detail::AsyncEngine::Op op) {
          return e.send(key, as_bytes(payload), options, std::move(op));
        });
  }
  template <typename Token>
  auto async_send(std::string_view key, std::string_view payload, Token&& token) {
    return async_send(key, payload, SendOptions{}, std::forward<Token>(token));
  }

  // ---- Receiving: void(std::error_code, std::optional<Message>) ----
  template <typename Token>
  auto async_receive(std::string_view key, std::chrono::milliseconds timeout,
                     const ReceiveOptions& options, Token&& token) {
    return start<void(std::error_code, std::optional<Message>)>(
        std::forward<Token>(token),
        [key, timeout, options](detail::AsyncEngine& e, detail::AsyncEngine::Op op) {
          return e.receive(key, timeout, options.ack, std::move(op));
        });
  }
  template <typename Token>
  auto async_receive(std::string_view key, std::chrono::milliseconds timeout, Token&& token) {
    return async_receive(key, timeout, ReceiveOptions{}, std::forward<Token>(token));
  }
  template <typename Token>
  auto async_receive_direct(std::chrono::milliseconds timeout, Token&& token) {
    return start<void(std::error_code, std::optional<Message>)>(
        std::forward<Token>(token), [timeout](detail::AsyncEngine& e, detail::AsyncEngine::Op op) {
          return e.receive_direct(timeout, std::move(op));
        });
  }
  // Settles a message received with ReceiveOptions::ack; pipelined: the broker's refusal
  // is counted in send_failures(). Throws Error for a message received without ack mode
  // or on a failed connection.
  void ack(const Message& message);
  void nack(const Message& message);

  // ---- Requests and direct messages ----
  // void(std::error_code, std::optional<Message>): the reply, or nullopt on timeout.
  template <typename Token>
  auto async_request(std::string_view key, std::string_view payload,
                     std::chrono::milliseconds timeout, const Headers& headers, Token&& token) {
    return start<void(std::error_code, std::optional<Message>)>(
        std::forward<Token>(token),
        [key, payload, timeout, headers](detail::AsyncEngine& e, detail::AsyncEngine::Op op) {
          return e.request(key, as_bytes(payload), timeout, headers, std::move(op));
        });
  }
  template <typename Token>
  auto async_request(std::string_view key, std::string_view payload,
                     std::chrono::milliseconds timeout, Token&& token) {
    return async_request(key, payload, timeout, Headers{}, std::forward<Token>(token));
  }
  // void(std::error_code)
  template <typename Token>
  auto async_reply(const Message& request, std::string_view payload, Token&& token) {
    return start<void(std::error_code)>(
        std::forward<Token>(token),
        [&request, payload](detail::AsyncEngine& e, detail::AsyncEngine::Op op) {
          return e.reply(request, as_bytes(payload), std::move(op));
        });
  }
  template <typename Token>
  auto async_send_to_pid(std::uint32_t pid, std::string_view payload, const DirectOptions& options,
                         Token&& token) {
    return start<void(std::error_code)>(
        std::forward<Token>(token),
        [pid, payload, options](detail::AsyncEngine& e, detail::AsyncEngine::Op op) {
          return e.send_direct(true, pid, as_bytes(payload), options, std::move(op));
        });
  }
  template <typename Token>
  auto async_send_to_client(std::uint64_t client_id, std::string_view payload,
                            const DirectOptions& options, Token&& token) {
    return start<void(std::error_code)>(
        std::forward<Token>(token),
        [client_id, payload, options](detail::AsyncEngine& e, detail::AsyncEngine::Op op) {
          return e.send_direct(false, client_id, as_bytes(payload), options, std::move(op));
        });
  }

  // ---- Shared-memory regions (Unix sockets) ----
  // void(std::error_code, Region): a writable region of `size` bytes, as
  // Client::allocate_region's.
  template <typename Token>
  auto async_allocate_region(std::size_t size, Token&& token) {
    return start<void(std::error_code, Region)>(
        std::forward<Token>(token), [size](detail::AsyncEngine& e, detail::AsyncEngine::Op op) {
          return e.allocate_region(size, std::move(op));
        });
  }
  // void(std::error_code): sends the whole region to queue `key` and gives it up (the
  // call itself takes it, also with a deferred token).
  template <typename Token>
  auto async_send(std::string_view key, Region&& region, const SendOptions& options,
                  Token&& token) {
    return start<void(std::error_code)>(
        std::forward<Token>(token),
        [key, r = std::move(region), options](detail::AsyncEngine& e,
                                              detail::AsyncEngine::Op op) mutable {
          return e.send_region(key, std::move(r), options, std::move(op));
        });
  }
  // void(std::error_code): every subscriber maps the same sealed pages.
  template <typename Token>
  auto async_publish(std::string_view subject, Region&& region, const PublishOptions& options,
                     Token&& token) {
    return start<void(std::error_code)>(
        std::forward<Token>(token),
        [subject, r = std::move(region), options](detail::AsyncEngine& e,
                                                  detail::AsyncEngine::Op op) mutable {
          return e.publish_region(subject, std::move(r), options, std::move(op));
        });
  }

  // ---- Subscriptions (protocol 2) ----
  // Subscribe to queue `key` (Client::subscribe) or to the subjects `pattern` matches
  // (Client::subscribe_subject) without waiting: a refusal by the broker ends the
  // subscription and is what its async_next() completes with. Throw Error for a bad key,
  // pattern or group, a protocol-1 broker, or a failed connection.
  AsyncSubscription subscribe(std::string_view key, const SubscribeOptions& options = {});
  AsyncSubscription subscribe_subject(std::string_view pattern, const SubjectOptions& options = {});

  // ---- Publish: void(std::error_code) ----
  template <typename Token>
  auto async_publish(std::string_view subject, std::string_view payload,
                     const PublishOptions& options, Token&& token) {
    return start<void(std::error_code)>(
        std::forward<Token>(token),
        [subject, payload, options](detail::AsyncEngine& e, detail::AsyncEngine::Op op) {
          return e.publish(subject, as_bytes(payload), options, std::move(op));
        });
  }

 private:
  static std::span<const std::byte> as_bytes(std::string_view s) noexcept {
    return std::as_bytes(std::span(s.data(), s.size()));
  }

  // The engine and the waits on its socket, shared with the waits' handlers so that they
  // outlive a destroyed AsyncClient until Asio has run them.
  struct State : std::enable_shared_from_this<State> {
    State(const executor_type& ex, ClientOptions options)
        : executor(ex), engine(std::move(options)), socket(ex, dup_fd(engine.fd())) {}

    static int dup_fd(int fd) {
      const int copy = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
      if (copy < 0) throw Error(Errc::io_error, "AsyncClient: cannot duplicate the socket");
      return copy;
    }

    // Runs an engine call, then waits on the socket for what the engine now needs.
    template <typename F>
    auto run(F&& f) {
      if (closed) throw Error(Errc::invalid_argument, "AsyncClient: used after it was destroyed");
      struct Rearm {
        State& s;
        ~Rearm() { s.arm(); }
      } rearm{*this};
      return f(engine);
    }

    void arm() {
      if (closed) return;
      if (!reading && engine.busy()) {
        reading = true;
        socket.async_wait(asio::posix::stream_descriptor::wait_read,
                          [self = shared_from_this()](std::error_code ec) {
                            self->reading = false;
                            if (self->closed) return;
                            if (ec) return self->failed(ec);
                            self->engine.on_readable();
                            self->arm();
                          });
      }
      if (!writing && engine.wants_write()) {
        writing = true;
        socket.async_wait(asio::posix::stream_descriptor::wait_write,
                          [self = shared_from_this()](std::error_code ec) {
                            self->writing = false;
                            if (self->closed) return;
                            if (ec) return self->failed(ec);
                            self->engine.on_writable();
                            self->arm();
                          });
      }
    }

    // A wait on the socket failed (not cancelled: the AsyncClient is open): nothing would
    // ever complete what is outstanding, so the connection ends here.
    void failed(std::error_code ec) {
      if (ec == asio::error::operation_aborted) return;
      engine.fail(Errc::io_error, "AsyncClient: waiting on the socket failed: " + ec.message());
    }

    void shut_down() {
      if (closed) return;
      closed = true;
      engine.abort_all();
      std::error_code ignored;
      socket.cancel(ignored);
      socket.close(ignored);
    }

    executor_type executor;
    detail::AsyncEngine engine;
    asio::posix::stream_descriptor socket;
    bool reading = false;
    bool writing = false;
    bool closed = false;
  };

  // One operation's handler, completed on the AsyncClient's executor.
  template <typename Signature, typename Handler>
  class Operation;
  template <typename Handler, typename... Args>
  class Operation<void(std::error_code, Args...), Handler> final
      : public detail::AsyncEngine::Completion {
   public:
    Operation(Handler h, const executor_type& io)
        : handler_(std::move(h)),
          io_(io),
          cancellable_(asio::get_associated_cancellation_slot(handler_).is_connected()) {}

    bool cancellable() const noexcept override { return cancellable_; }

    void complete(detail::AsyncEngine::Result&& r) override {
      auto slot = asio::get_associated_cancellation_slot(handler_);
      if (slot.is_connected()) slot.clear();
      std::error_code ec;
      if (r.aborted) {
        ec = asio::error::operation_aborted;
      } else if (r.code != Errc::ok) {
        ec = make_error_code(r.code);
      }
      // Posted to the AsyncClient's executor, not the handler's associated one: some
      // associated executors (use_future's) refer into the handler, which the post moves.
      if constexpr (sizeof...(Args) == 0) {
        asio::post(io_, [h = std::move(handler_), ec]() mutable { std::move(h)(ec); });
      } else if constexpr ((std::is_same_v<Args, Region> && ...)) {
        asio::post(io_, [h = std::move(handler_), ec, x = std::move(r.region)]() mutable {
          std::move(h)(ec, std::move(x));
        });
      } else {
        asio::post(io_, [h = std::move(handler_), ec, x = std::move(r.message)]() mutable {
          std::move(h)(ec, std::move(x));
        });
      }
    }

   private:
    Handler handler_;
    executor_type io_;
    bool cancellable_;
  };

  template <typename Signature, typename Token, typename Start>
  auto start(Token&& token, Start begin) {
    return start<Signature>(state_, state_->executor, std::forward<Token>(token), std::move(begin));
  }
  // The state is held weakly, not `this`: a deferred token may launch after the AsyncClient
  // moved, or is gone (then the operation completes with operation_aborted).
  template <typename Signature, typename Token, typename Start>
  static auto start(std::weak_ptr<State> state, const executor_type& executor, Token&& token,
                    Start begin) {
    return asio::async_initiate<Token, Signature>(
        [weak = std::move(state), executor](auto handler, Start go) {
          using Handler = std::decay_t<decltype(handler)>;
          auto slot = asio::get_associated_cancellation_slot(handler);
          auto op = std::make_unique<Operation<Signature, Handler>>(std::move(handler), executor);
          const auto s = weak.lock();
          if (!s || s->closed) {
            op->complete(detail::AsyncEngine::Result{Errc::ok, true, {}, {}, {}});
            return;
          }
          const std::uint64_t id =
              s->run([&](detail::AsyncEngine& e) { return go(e, std::move(op)); });
          if (id != 0 && slot.is_connected()) {
            // Posted: the operation's completion clears this slot, which must not happen
            // while the slot's own handler runs.
            slot.assign([weak, id](asio::cancellation_type t) {
              if (t == asio::cancellation_type::none) return;
              if (auto st = weak.lock()) {
                asio::post(st->executor, [weak, id] {
                  if (auto live = weak.lock(); live && !live->closed)
                    live->run([&](auto& e) { return e.cancel(id); });
                });
              }
            });
          }
        },
        token, std::move(begin));
  }

  friend class AsyncSubscription;
  std::shared_ptr<State> state_;
};

// A subscription of an AsyncClient: the broker pushes its messages (a queue's, PROTOCOL.md
// 17.5, or the subjects a pattern matches, 18.3) and async_next() takes them in order.
//
// What is kept. Deliveries are read from the connection while any operation of the
// AsyncClient waits (an async_next() among them), and kept here until taken. In
// acknowledgement mode (SubscribeOptions::ack, a queue subscription's default) the prefetch
// bounds them; an at-most-once subscription keeps at most detail::kAsyncKeepMessages
// messages and detail::kAsyncKeepBytes bytes (a subject subscription's
// SubjectOptions::max_messages and max_bytes instead, when set) and beyond that drops the
// oldest, counted in dropped(). While nothing waits nothing is read, and the broker's own
// bounds hold the rest: the prefetch, or a subject subscription's buffer and SlowPolicy.
//
// Ending. async_next() completes, once what came before is taken, with the ERROR that ended
// the subscription (queue_deleted, permission_denied, slow_subscriber, ...), or with an
// empty error and std::nullopt once async_cancel() was answered, or with the connection's
// error when it failed.
//
// Ownership, lifetime, thread-safety: move-only, used on its AsyncClient's executor like
// the AsyncClient. It does not keep the AsyncClient alive: once that is destroyed,
// async_next() and async_cancel() complete with operation_aborted. Destroying it completes
// its waiting async_next()s with operation_aborted and cancels it; in acknowledgement mode
// what it kept and never handed out goes back to the queue (what it handed out stays the
// AsyncClient's to ack() or nack()).
class AsyncSubscription {
 public:
  using executor_type = AsyncClient::executor_type;

  AsyncSubscription() noexcept = default;
  ~AsyncSubscription() { release(); }
  AsyncSubscription(AsyncSubscription&& other) noexcept
      : state_(std::move(other.state_)),
        executor_(std::move(other.executor_)),
        id_(std::exchange(other.id_, 0)),
        key_(std::move(other.key_)) {}
  AsyncSubscription& operator=(AsyncSubscription&& other) noexcept {
    if (this != &other) {
      release();
      state_ = std::move(other.state_);
      executor_ = std::move(other.executor_);
      id_ = std::exchange(other.id_, 0);
      key_ = std::move(other.key_);
    }
    return *this;
  }
  AsyncSubscription(const AsyncSubscription&) = delete;
  AsyncSubscription& operator=(const AsyncSubscription&) = delete;

  // void(std::error_code, std::optional<Message>): the next message. Several may wait at
  // once; they complete in order. Throws Error(invalid_argument) on an empty subscription.
  template <typename Token>
  auto async_next(Token&& token) {
    check("async_next");
    return AsyncClient::start<void(std::error_code, std::optional<Message>)>(
        state_, executor_, std::forward<Token>(token),
        [id = id_](detail::AsyncEngine& e, detail::AsyncEngine::Op op) {
          return e.next(id, std::move(op));
        });
  }
  // void(std::error_code): asks the broker to stop, completing on its answer; messages that
  // came before it remain for async_next(). At once when already cancelled or ended.
  template <typename Token>
  auto async_cancel(Token&& token) {
    check("async_cancel");
    return AsyncClient::start<void(std::error_code)>(
        state_, executor_, std::forward<Token>(token),
        [id = id_](detail::AsyncEngine& e, detail::AsyncEngine::Op op) {
          return e.unsubscribe(id, std::move(op));
        });
  }

  // Subscribed, and neither cancelled nor ended.
  bool active() const noexcept { return status().active; }
  // Messages read and kept, which async_next() hands out without waiting.
  std::size_t pending() const noexcept { return status().pending; }
  // At most once: messages dropped here because the kept ones were over their bounds.
  std::uint64_t dropped() const noexcept { return status().dropped; }
  // The queue key, or a subject subscription's pattern.
  const std::string& key() const noexcept { return key_; }

 private:
  friend class AsyncClient;
  AsyncSubscription(const std::shared_ptr<AsyncClient::State>& state, std::uint64_t id,
                    std::string key)
      : state_(state), executor_(state->executor), id_(id), key_(std::move(key)) {}

  void check(const char* what) const {
    if (id_ == 0)
      throw Error(Errc::invalid_argument, std::string(what) + ": an empty AsyncSubscription");
  }
  detail::AsyncEngine::StreamStatus status() const noexcept {
    const auto s = state_.lock();
    return s && !s->closed ? s->engine.status(id_) : detail::AsyncEngine::StreamStatus{};
  }
  void release() noexcept {
    const auto s = std::exchange(state_, {}).lock();
    if (s && !s->closed) s->run([&](detail::AsyncEngine& e) { e.release(id_); });
  }

  std::weak_ptr<AsyncClient::State> state_;
  executor_type executor_;
  std::uint64_t id_ = 0;  // the SUBSCRIBE's correlation
  std::string key_;
};

inline AsyncSubscription AsyncClient::subscribe(std::string_view key,
                                                const SubscribeOptions& options) {
  const std::uint64_t id =
      state_->run([&](detail::AsyncEngine& e) { return e.subscribe(key, options); });
  return AsyncSubscription(state_, id, std::string(key));
}

inline AsyncSubscription AsyncClient::subscribe_subject(std::string_view pattern,
                                                        const SubjectOptions& options) {
  const std::uint64_t id =
      state_->run([&](detail::AsyncEngine& e) { return e.subscribe_subject(pattern, options); });
  return AsyncSubscription(state_, id, std::string(pattern));
}

inline void AsyncClient::ack(const Message& message) {
  state_->run([&](detail::AsyncEngine& e) { e.ack(message); });
}
inline void AsyncClient::nack(const Message& message) {
  state_->run([&](detail::AsyncEngine& e) { e.nack(message); });
}

}  // namespace qbus
