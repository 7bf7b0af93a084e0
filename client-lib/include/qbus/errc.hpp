// Error codes shared by the wire protocol and the client library.
//
// Values below 200 travel in ERROR frames and are fixed forever once published (see
// proto/PROTOCOL.md). Values from 200 up are produced locally by libqbus and never sent.
#pragma once

#include <cstdint>
#include <string_view>

// Marks the symbols libqbus exports; everything else in the library stays hidden.
#ifndef QBUS_API
#define QBUS_API __attribute__((visibility("default")))
#endif

namespace qbus {

// Every code, once: QBUS_ERRC(X) calls X(name, value) for each, in order of value. The
// enum below, errc_name() and errc_is_known() come from it, and a unit test checks
// proto/PROTOCOL.md's table of codes against it. A new code is one line here (and its row
// in PROTOCOL.md). Values never change once published.
#define QBUS_ERRC(X)                                                                 \
  X(ok, 0)                                                                           \
  /* Framing: the byte stream cannot be trusted any more; the sender closes the      \
     connection. */                                                                  \
  X(bad_magic, 1)                                                                    \
  X(unsupported_version, 2)                                                          \
  X(frame_too_large, 3)                                                              \
  X(malformed_header, 4)                                                             \
  /* Request errors: the frame is answered with ERROR and the connection goes on. */ \
  X(malformed_frame, 10)                                                             \
  X(unknown_frame_type, 11)                                                          \
  X(handshake_required, 12)                                                          \
  X(handshake_timeout, 13)                                                           \
  X(unexpected_frame, 14)                                                            \
  X(invalid_key, 20)                                                                 \
  X(payload_too_large, 21)                                                           \
  X(queue_full, 22)                                                                  \
  X(timeout, 23)                                                                     \
  X(quota_exceeded, 24)                                                              \
  X(too_many_receives, 25)                                                           \
  X(queue_conflict, 26)                                                              \
  X(too_many_queues, 27)                                                             \
  X(too_many_connections, 28)                                                        \
  X(queue_deleted, 29)                                                               \
  X(no_such_peer, 30)                                                                \
  X(peer_busy, 31)                                                                   \
  X(reply_expired, 32)                                                               \
  X(not_inbox_owner, 33)                                                             \
  X(auth_failed, 34)                                                                 \
  X(too_many_requests, 35)                                                           \
  X(no_such_region, 36)                                                              \
  X(permission_denied, 37)                                                           \
  X(disconnected_by_operator, 38)                                                    \
  X(no_such_queue, 39)                                                               \
  X(unknown_delivery, 40)                                                            \
  X(delivery_timed_out, 41)                                                          \
  X(too_many_unacked, 42)                                                            \
  X(no_such_subscription, 43)                                                        \
  X(single_active_consumer, 44)                                                      \
  X(storage_failed, 45)                                                              \
  X(invalid_subject, 46)                                                             \
  X(too_many_subscriptions, 47)                                                      \
  X(slow_subscriber, 48)                                                             \
  X(internal_error, 50)                                                              \
  X(shutting_down, 51)                                                               \
  /* Local to libqbus, never on the wire. */                                         \
  X(connect_failed, 200)                                                             \
  X(connection_closed, 201)                                                          \
  X(protocol_violation, 202)                                                         \
  X(invalid_argument, 203)                                                           \
  X(io_error, 204)                                                                   \
  X(bad_address, 205)                                                                \
  X(out_of_memory, 206)

enum class Errc : std::uint16_t {
#define QBUS_ERRC_ENUMERATOR(name, value) name = value,
  QBUS_ERRC(QBUS_ERRC_ENUMERATOR)
#undef QBUS_ERRC_ENUMERATOR
};

// Stable snake_case name of a code ("queue_full"); "unknown" for values not listed above.
QBUS_API std::string_view errc_name(Errc code) noexcept;

// True for codes after which the broker closes the connection.
constexpr bool errc_is_fatal(Errc code) noexcept {
  const auto v = static_cast<std::uint16_t>(code);
  return v >= 1 && v <= 4;
}

// True when `value` is one of the codes above; used to reject unknown codes off the wire.
QBUS_API bool errc_is_known(std::uint16_t value) noexcept;

}  // namespace qbus
