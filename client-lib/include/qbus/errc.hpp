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

enum class Errc : std::uint16_t {
  ok = 0,

  // Framing: the byte stream cannot be trusted any more; the sender closes the connection.
  bad_magic = 1,
  unsupported_version = 2,
  frame_too_large = 3,
  malformed_header = 4,

  // Request errors: the frame is answered with ERROR and the connection goes on.
  malformed_frame = 10,
  unknown_frame_type = 11,
  handshake_required = 12,
  handshake_timeout = 13,
  unexpected_frame = 14,
  invalid_key = 20,
  payload_too_large = 21,
  queue_full = 22,
  timeout = 23,
  quota_exceeded = 24,
  too_many_receives = 25,
  queue_conflict = 26,
  too_many_queues = 27,
  too_many_connections = 28,
  queue_deleted = 29,
  no_such_peer = 30,
  peer_busy = 31,
  reply_expired = 32,
  not_inbox_owner = 33,
  auth_failed = 34,
  too_many_requests = 35,
  no_such_region = 36,
  permission_denied = 37,
  disconnected_by_operator = 38,
  internal_error = 50,
  shutting_down = 51,

  // Local to libqbus, never on the wire.
  connect_failed = 200,
  connection_closed = 201,
  protocol_violation = 202,
  invalid_argument = 203,
  io_error = 204,
  bad_address = 205,
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
