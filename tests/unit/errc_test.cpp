// Unit tests for the error codes (qbus/errc.hpp) and overflow policy names.
#include <gtest/gtest.h>

#include <cstdint>
#include <string_view>
#include <utility>

#include "qbus/errc.hpp"
#include "qbus/proto/codec.hpp"

namespace qbus::proto {
namespace {

// ---- error codes ----------------------------------------------------------------------

const std::pair<Errc, std::string_view> kAllCodes[] = {
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
    {Errc::no_such_queue, "no_such_queue"},
    {Errc::internal_error, "internal_error"},
    {Errc::shutting_down, "shutting_down"},
    {Errc::connect_failed, "connect_failed"},
    {Errc::connection_closed, "connection_closed"},
    {Errc::protocol_violation, "protocol_violation"},
    {Errc::invalid_argument, "invalid_argument"},
    {Errc::io_error, "io_error"},
    {Errc::bad_address, "bad_address"},
    {Errc::out_of_memory, "out_of_memory"},
};

TEST(codec_errc, WireCodesKeepTheirPublishedValues) {
  const std::pair<Errc, int> values[] = {
      {Errc::ok, 0},
      {Errc::bad_magic, 1},
      {Errc::unsupported_version, 2},
      {Errc::frame_too_large, 3},
      {Errc::malformed_header, 4},
      {Errc::malformed_frame, 10},
      {Errc::unknown_frame_type, 11},
      {Errc::handshake_required, 12},
      {Errc::handshake_timeout, 13},
      {Errc::unexpected_frame, 14},
      {Errc::invalid_key, 20},
      {Errc::payload_too_large, 21},
      {Errc::queue_full, 22},
      {Errc::timeout, 23},
      {Errc::quota_exceeded, 24},
      {Errc::too_many_receives, 25},
      {Errc::queue_conflict, 26},
      {Errc::too_many_queues, 27},
      {Errc::too_many_connections, 28},
      {Errc::queue_deleted, 29},
      {Errc::no_such_peer, 30},
      {Errc::peer_busy, 31},
      {Errc::reply_expired, 32},
      {Errc::not_inbox_owner, 33},
      {Errc::auth_failed, 34},
      {Errc::too_many_requests, 35},
      {Errc::no_such_region, 36},
      {Errc::permission_denied, 37},
      {Errc::disconnected_by_operator, 38},
      {Errc::no_such_queue, 39},
      {Errc::invalid_subject, 46},
      {Errc::too_many_subscriptions, 47},
      {Errc::slow_subscriber, 48},
      {Errc::internal_error, 50},
      {Errc::shutting_down, 51},
      {Errc::connect_failed, 200},
      {Errc::connection_closed, 201},
      {Errc::protocol_violation, 202},
      {Errc::invalid_argument, 203},
      {Errc::io_error, 204},
      {Errc::bad_address, 205},
      {Errc::out_of_memory, 206},
  };
  for (const auto& [code, value] : values) {
    EXPECT_EQ(static_cast<int>(code), value) << errc_name(code);
  }
}

TEST(codec_errc, EveryListedCodeHasItsName) {
  for (const auto& [code, name] : kAllCodes) {
    EXPECT_EQ(errc_name(code), name) << static_cast<int>(code);
    EXPECT_TRUE(errc_is_known(static_cast<std::uint16_t>(code))) << name;
  }
}

TEST(codec_errc, UnlistedCodesAreUnknown) {
  for (int v : {5, 9, 15, 19, 49, 52, 199, 207, 1000, 65535}) {
    EXPECT_EQ(errc_name(static_cast<Errc>(v)), "unknown") << v;
    EXPECT_FALSE(errc_is_known(static_cast<std::uint16_t>(v))) << v;
  }
}

TEST(codec_errc, DirectMessagingAndAuthCodesHaveTheirNames) {
  EXPECT_EQ(errc_name(static_cast<Errc>(30)), "no_such_peer");
  EXPECT_EQ(errc_name(static_cast<Errc>(31)), "peer_busy");
  EXPECT_EQ(errc_name(static_cast<Errc>(32)), "reply_expired");
  EXPECT_EQ(errc_name(static_cast<Errc>(33)), "not_inbox_owner");
  EXPECT_EQ(errc_name(static_cast<Errc>(34)), "auth_failed");
  EXPECT_EQ(errc_name(static_cast<Errc>(35)), "too_many_requests");
  for (int v = 30; v <= 35; ++v) {
    EXPECT_TRUE(errc_is_known(static_cast<std::uint16_t>(v))) << v;
  }
}

// auth_failed ends the connection, but as a handshake refusal (sent before WELCOME), like
// handshake_required: errc_is_fatal() marks only the framing errors.
TEST(codec_errc, OnlyFramingErrorsAreFatal) {
  for (const auto& [code, name] : kAllCodes) {
    const auto v = static_cast<int>(code);
    EXPECT_EQ(errc_is_fatal(code), v >= 1 && v <= 4) << name;
  }
  static_assert(errc_is_fatal(Errc::bad_magic) && !errc_is_fatal(Errc::timeout));
}

TEST(codec_errc, OverflowPoliciesHaveStableNames) {
  EXPECT_EQ(overflow_name(Overflow::use_default), "default");
  EXPECT_EQ(overflow_name(Overflow::reject), "reject");
  EXPECT_EQ(overflow_name(Overflow::drop_oldest), "drop_oldest");
  EXPECT_EQ(overflow_name(Overflow::block), "block");
  EXPECT_EQ(overflow_name(static_cast<Overflow>(4)), "unknown");
}

}  // namespace
}  // namespace qbus::proto
