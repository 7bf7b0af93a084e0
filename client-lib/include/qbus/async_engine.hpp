// libqbus: the non-blocking core under qbus::AsyncClient (<qbus/async_client.hpp>), and
// qbus::Errc as a std::error_code. Compiled into libqbus without Asio; AsyncClient, a
// header, adapts it to Asio's executors and completion tokens. Not meant to be used
// directly: its interface may change with AsyncClient's.
//
// Ownership, thread-safety: AsyncEngine owns its connection (a Client); it is not
// thread-safe (its AsyncClient calls it on one executor). A Completion is owned by the
// engine until it completes, exactly once.
#pragma once

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

#include "qbus/client.hpp"
#include "qbus/errc.hpp"

namespace qbus {

// The std::error_category of qbus::Errc ("qbus"); message() is the code's name.
QBUS_API const std::error_category& error_category() noexcept;
inline std::error_code make_error_code(Errc code) noexcept {
  return {static_cast<int>(code), error_category()};
}

}  // namespace qbus

template <>
struct std::is_error_code_enum<qbus::Errc> : std::true_type {};

namespace qbus {
namespace detail {

inline constexpr std::size_t kAsyncOutputHighWater = 1024 * 1024;
// What an at-most-once subscription keeps read and not yet taken, at most (a subject
// subscription's own SubjectOptions bounds, when set, replace these).
inline constexpr std::size_t kAsyncKeepMessages = 4096;
inline constexpr std::size_t kAsyncKeepBytes = 16 * 1024 * 1024;

// The non-blocking core under AsyncClient, compiled into libqbus: frames out, answers
// matched to their operations by correlation, no Asio and no waiting. AsyncClient is its
// only intended user; it is exported because AsyncClient is a header.
class QBUS_API AsyncEngine {
 public:
  struct Result {
    Errc code = Errc::ok;
    bool aborted = false;  // cancelled, or the engine was shut down
    std::string text;      // the error's text, for a failure
    std::optional<Message> message;
    Region region;  // allocate_region's
  };
  // What an operation completes with, exactly once, from within the engine call that
  // finishes it (its start, on_readable(), on_writable(), cancel(), release(), abort_all(),
  // fail()).
  class Completion {
   public:
    virtual ~Completion() = default;
    virtual void complete(Result&& result) = 0;
    // Whether its caller may cancel it (receive() then asks in acknowledgement mode, so
    // that a message reaching it after a cancel goes back to its queue).
    virtual bool cancellable() const noexcept { return false; }
  };
  using Op = std::unique_ptr<Completion>;

  explicit AsyncEngine(ClientOptions options);  // connects; throws Error
  ~AsyncEngine();
  AsyncEngine(const AsyncEngine&) = delete;
  AsyncEngine& operator=(const AsyncEngine&) = delete;

  const SessionInfo& session() const noexcept;
  const SendFailures& send_failures() const noexcept;
  int fd() const noexcept;
  bool wants_write() const noexcept;
  // Operations waiting for an answer, a delivery, or the output to drain.
  bool busy() const noexcept;

  // Each starts an operation and returns its id for cancel(), or 0 when it completed
  // already (a bad argument, a broken connection, a pipelined send).
  std::uint64_t send(std::string_view key, std::span<const std::byte> payload,
                     const SendOptions& options, Op done);
  std::uint64_t receive(std::string_view key, std::chrono::milliseconds timeout, bool ack, Op done);
  std::uint64_t request(std::string_view key, std::span<const std::byte> payload,
                        std::chrono::milliseconds timeout, const Headers& headers, Op done);
  std::uint64_t receive_direct(std::chrono::milliseconds timeout, Op done);
  std::uint64_t send_direct(bool by_pid, std::uint64_t target, std::span<const std::byte> payload,
                            const DirectOptions& options, Op done);
  std::uint64_t reply(const Message& request, std::span<const std::byte> payload, Op done);
  std::uint64_t publish(std::string_view subject, std::span<const std::byte> payload,
                        const PublishOptions& options, Op done);
  // Shared-memory regions (Unix sockets): a writable region of `size` bytes; a region sent
  // whole to a queue or published, and given up (its handle is spent when this returns).
  std::uint64_t allocate_region(std::size_t size, Op done);
  std::uint64_t send_region(std::string_view key, Region&& region, const SendOptions& options,
                            Op done);
  std::uint64_t publish_region(std::string_view subject, Region&& region,
                               const PublishOptions& options, Op done);
  // Pipelined settlements of messages received in acknowledgement mode.
  void ack(const Message& message);
  void nack(const Message& message);

  // Subscriptions, each named by its SUBSCRIBE's correlation. subscribe*() append the
  // request and return that id (nothing waits: a refusal ends the subscription, and its
  // next() completes with it); they throw Error for a bad argument or a failed connection.
  std::uint64_t subscribe(std::string_view key, const SubscribeOptions& options);
  std::uint64_t subscribe_subject(std::string_view pattern, const SubjectOptions& options);
  // The subscription's next delivery, in order, as receive()'s; an empty result once it is
  // cancelled and what it kept is handed out; its ending ERROR once ended.
  std::uint64_t next(std::uint64_t subscription, Op done);
  // UNSUBSCRIBE: completes on the broker's answer; at once when cancelled or ended.
  std::uint64_t unsubscribe(std::uint64_t subscription, Op done);
  // Its handle is gone: its waiting next()s complete aborted, it is cancelled, and once the
  // broker has answered, what it kept in acknowledgement mode goes back to the queue.
  void release(std::uint64_t subscription) noexcept;
  struct StreamStatus {
    bool active = false;        // subscribed, not cancelled nor ended
    std::size_t pending = 0;    // read and kept for next()
    std::uint64_t dropped = 0;  // at most once: kept ones dropped over the bounds above
  };
  StreamStatus status(std::uint64_t subscription) const noexcept;

  // Completes operation `id` with aborted; false when it is not outstanding.
  bool cancel(std::uint64_t id);
  // The socket is readable / writable: handles what arrived, writes what it takes. Never
  // block; a connection failure completes every operation with its error.
  void on_readable();
  void on_writable();
  // Completes every outstanding operation aborted (shutdown).
  void abort_all();
  // Ends the connection with `code`: every outstanding operation, and every later one,
  // completes with it (the wait on the socket itself failed).
  void fail(Errc code, const std::string& text);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace detail

}  // namespace qbus
