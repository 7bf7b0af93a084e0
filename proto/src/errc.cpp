#include "qbus/errc.hpp"

namespace qbus {
namespace {

struct Entry {
  Errc code;
  std::string_view name;
};

constexpr Entry kTable[] = {
    {Errc::ok, "ok"},
    {Errc::bad_magic, "bad_magic"},
    {Errc::unsupported_version, "unsupported_version"},
    {Errc::frame_too_large, "frame_too_large"},
    {Errc::malformed_header, "malformed_header"},
    {Errc::malformed_frame, "malformed_frame"},
    {Errc::unknown_frame_type, "unknown_frame_type"},
    {Errc::handshake_required, "handshake_required"},
    {Errc::handshake_timeout, "handshake_timeout"},
    {Errc::unexpected_frame, "unexpected_frame"},
    {Errc::invalid_key, "invalid_key"},
    {Errc::payload_too_large, "payload_too_large"},
    {Errc::queue_full, "queue_full"},
    {Errc::timeout, "timeout"},
    {Errc::quota_exceeded, "quota_exceeded"},
    {Errc::too_many_receives, "too_many_receives"},
    {Errc::queue_conflict, "queue_conflict"},
    {Errc::too_many_queues, "too_many_queues"},
    {Errc::too_many_connections, "too_many_connections"},
    {Errc::queue_deleted, "queue_deleted"},
    {Errc::no_such_peer, "no_such_peer"},
    {Errc::peer_busy, "peer_busy"},
    {Errc::reply_expired, "reply_expired"},
    {Errc::not_inbox_owner, "not_inbox_owner"},
    {Errc::auth_failed, "auth_failed"},
    {Errc::too_many_requests, "too_many_requests"},
    {Errc::no_such_region, "no_such_region"},
    {Errc::permission_denied, "permission_denied"},
    {Errc::disconnected_by_operator, "disconnected_by_operator"},
    {Errc::internal_error, "internal_error"},
    {Errc::shutting_down, "shutting_down"},
    {Errc::connect_failed, "connect_failed"},
    {Errc::connection_closed, "connection_closed"},
    {Errc::protocol_violation, "protocol_violation"},
    {Errc::invalid_argument, "invalid_argument"},
    {Errc::io_error, "io_error"},
    {Errc::bad_address, "bad_address"},
};

}  // namespace

std::string_view errc_name(Errc code) noexcept {
  for (const auto& e : kTable) {
    if (e.code == code) return e.name;
  }
  return "unknown";
}

bool errc_is_known(std::uint16_t value) noexcept {
  for (const auto& e : kTable) {
    if (static_cast<std::uint16_t>(e.code) == value) return true;
  }
  return false;
}

}  // namespace qbus
