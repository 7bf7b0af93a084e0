// Unit tests of the config edge: JSON text becomes a validated Config, and every bad input
// is one line naming the field path.
#include "qbus/config/config.hpp"

#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <ostream>
#include <string>
#include <string_view>

namespace qbus::config {
namespace {

using proto::Overflow;

// Parses text that must be valid and returns the config.
Config parse_ok(std::string_view text) {
  auto r = parse(text);
  EXPECT_TRUE(r.config.has_value()) << r.error;
  EXPECT_EQ(r.error, "");
  return r.config.value_or(Config{});
}

std::string temp_path(const std::string& name) {
  return ::testing::TempDir() + "qbus_config_test_" + std::to_string(::getpid()) + "_" + name;
}

// A file under the test temp dir with exactly `mode` (whatever the umask), removed when the
// test ends.
class TempFile {
 public:
  TempFile(const std::string& name, std::string_view contents, mode_t mode = 0644)
      : path_(temp_path(name)) {
    {
      std::ofstream f(path_, std::ios::binary | std::ios::trunc);
      f << contents;
    }
    EXPECT_EQ(::chmod(path_.c_str(), mode), 0) << path_;
  }
  ~TempFile() { std::remove(path_.c_str()); }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;

  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(ConfigTest, EmptyObjectGivesAllDefaults) {
  const Config c = parse_ok("{}");
  const Config d;

  EXPECT_EQ(c.socket_path, "");
  EXPECT_EQ(c.socket_mode, 0666u);
  EXPECT_EQ(c.log_level, "info");
  EXPECT_EQ(c.max_payload_bytes, d.max_payload_bytes);
  EXPECT_EQ(c.max_payload_bytes, 1u << 20);
  EXPECT_EQ(c.max_queues, 65'536u);
  EXPECT_EQ(c.uid_max_queues, 4'096u);
  EXPECT_EQ(c.uid_max_waiting_receives, 4'096u);
  EXPECT_EQ(c.declared_queue_grace_ms, 60'000u);
  EXPECT_EQ(c.max_connections, 16'384u);
  EXPECT_EQ(c.uid_max_connections, 1'024u);
  EXPECT_EQ(c.uid_max_queued_bytes, 1ull << 30);
  EXPECT_EQ(c.max_waiting_receives, d.max_waiting_receives);
  EXPECT_EQ(c.max_receive_batch, d.max_receive_batch);
  EXPECT_EQ(c.max_outbound_bytes, d.max_outbound_bytes);
  EXPECT_EQ(c.handshake_timeout_ms, d.handshake_timeout_ms);
  EXPECT_EQ(c.queue_defaults.max_messages, 100'000u);
  EXPECT_EQ(c.queue_defaults.max_bytes, 64ull << 20);
  EXPECT_EQ(c.queue_defaults.overflow, Overflow::block);
  EXPECT_TRUE(c.queues.empty());
  EXPECT_EQ(c.tcp_listen, "");  // TCP is off
  EXPECT_EQ(c.tcp_token_file, "");
  EXPECT_EQ(c.inbox.max_messages, 10'000u);
  EXPECT_EQ(c.inbox.max_bytes, 16ull << 20);
  EXPECT_EQ(c.inbox.overflow, Overflow::reject);
  EXPECT_EQ(c.max_pending_requests, 1'024u);
  EXPECT_EQ(c.max_parked_sends, 64u);
  EXPECT_EQ(c.region_pool_bytes, d.region_pool_bytes);
  EXPECT_EQ(c.region_pool_bytes, 0u);  // obsolete: qbusd warns about anything else
}

TEST(ConfigTest, EmptySectionsKeepTheirDefaults) {
  const Config c =
      parse_ok(R"({"socket": {}, "tcp": {}, "log": {}, "limits": {}, "queue_defaults": {},
                   "inbox": {}, "queues": []})");
  const Config d;

  EXPECT_EQ(c.socket_path, d.socket_path);
  EXPECT_EQ(c.socket_mode, d.socket_mode);
  EXPECT_EQ(c.log_level, d.log_level);
  EXPECT_EQ(c.max_queues, d.max_queues);
  EXPECT_EQ(c.queue_defaults.overflow, d.queue_defaults.overflow);
  EXPECT_EQ(c.tcp_listen, d.tcp_listen);
  EXPECT_EQ(c.tcp_token_file, d.tcp_token_file);
  EXPECT_EQ(c.inbox.max_messages, d.inbox.max_messages);
  EXPECT_EQ(c.inbox.max_bytes, d.inbox.max_bytes);
  EXPECT_EQ(c.inbox.overflow, d.inbox.overflow);
  EXPECT_EQ(c.max_pending_requests, d.max_pending_requests);
  EXPECT_EQ(c.max_parked_sends, d.max_parked_sends);
  EXPECT_EQ(c.region_pool_bytes, d.region_pool_bytes);
  EXPECT_TRUE(c.queues.empty());
}

// Obsolete, but a file from an older qbusd that sets it must still load.
TEST(ConfigTest, ObsoleteRegionPoolBytesStillLoadsFromZeroUpToTwoToTheForty) {
  EXPECT_EQ(parse_ok(R"({"limits": {"region_pool_bytes": 0}})").region_pool_bytes, 0u);
  EXPECT_EQ(parse_ok(R"({"limits": {"region_pool_bytes": 67108864}})").region_pool_bytes,
            64ull << 20);
  EXPECT_EQ(parse_ok(R"({"limits": {"region_pool_bytes": 1099511627776}})").region_pool_bytes,
            1ull << 40);
}

TEST(ConfigTest, FullConfigParsesToTheGivenValues) {
  const Config c = parse_ok(R"({
    "socket": {"path": "/run/test/qbus.sock", "mode": "0660"},
    "log": {"level": "debug"},
    "limits": {
      "max_payload_bytes": 2048,
      "max_queues": 10,
      "max_connections": 20,
      "uid_max_connections": 5,
      "uid_max_queued_bytes": 123456789012,
      "max_waiting_receives": 7,
      "max_receive_batch": 32,
      "max_outbound_bytes": 8192,
      "handshake_timeout_ms": 250
    },
    "queue_defaults": {"max_messages": 50, "max_bytes": 5000, "overflow": "reject"},
    "queues": [
      {"key": "jobs"},
      {"key": "events/log", "max_messages": 3, "overflow": "drop_oldest"},
      {"key": "big.one", "max_bytes": 99, "max_messages": 9, "overflow": "block"}
    ]
  })");

  EXPECT_EQ(c.socket_path, "/run/test/qbus.sock");
  EXPECT_EQ(c.socket_mode, 0660u);
  EXPECT_EQ(c.log_level, "debug");
  EXPECT_EQ(c.max_payload_bytes, 2048u);
  EXPECT_EQ(c.max_queues, 10u);
  EXPECT_EQ(c.max_connections, 20u);
  EXPECT_EQ(c.uid_max_connections, 5u);
  EXPECT_EQ(c.uid_max_queued_bytes, 123456789012u);
  EXPECT_EQ(c.max_waiting_receives, 7u);
  EXPECT_EQ(c.max_receive_batch, 32u);
  EXPECT_EQ(c.max_outbound_bytes, 8192u);
  EXPECT_EQ(c.handshake_timeout_ms, 250u);
  EXPECT_EQ(c.queue_defaults.max_messages, 50u);
  EXPECT_EQ(c.queue_defaults.max_bytes, 5000u);
  EXPECT_EQ(c.queue_defaults.overflow, Overflow::reject);

  ASSERT_EQ(c.queues.size(), 3u);
  EXPECT_EQ(c.queues[0].key, "jobs");  // everything from queue_defaults
  EXPECT_EQ(c.queues[0].settings.max_messages, 50u);
  EXPECT_EQ(c.queues[0].settings.max_bytes, 5000u);
  EXPECT_EQ(c.queues[0].settings.overflow, Overflow::reject);
  EXPECT_EQ(c.queues[1].key, "events/log");
  EXPECT_EQ(c.queues[1].settings.max_messages, 3u);
  EXPECT_EQ(c.queues[1].settings.max_bytes, 5000u);
  EXPECT_EQ(c.queues[1].settings.overflow, Overflow::drop_oldest);
  EXPECT_EQ(c.queues[2].key, "big.one");
  EXPECT_EQ(c.queues[2].settings.max_messages, 9u);
  EXPECT_EQ(c.queues[2].settings.max_bytes, 99u);
  EXPECT_EQ(c.queues[2].settings.overflow, Overflow::block);
}

TEST(ConfigTest, PerUidQueueLimitsAndTheGraceParse) {
  const Config c = parse_ok(R"({"limits": {"max_queues": 2000, "uid_max_queues": 2000,
                                           "uid_max_waiting_receives": 9,
                                           "declared_queue_grace_ms": 0}})");
  EXPECT_EQ(c.uid_max_queues, 2'000u);
  EXPECT_EQ(c.uid_max_waiting_receives, 9u);
  EXPECT_EQ(c.declared_queue_grace_ms, 0u);
  // Left out, the per-uid bound follows a table smaller than its default.
  EXPECT_EQ(parse_ok(R"({"limits": {"max_queues": 10}})").uid_max_queues, 10u);
  EXPECT_EQ(parse_ok(R"({"limits": {"uid_max_queues": 5}})").uid_max_queues, 5u);
}

TEST(ConfigTest, QueuesInheritQueueDefaultsWrittenAfterThem) {
  const Config c = parse_ok(R"({"queues": [{"key": "a"}],
                               "queue_defaults": {"max_messages": 12, "overflow": "reject"}})");

  ASSERT_EQ(c.queues.size(), 1u);
  EXPECT_EQ(c.queues[0].settings.max_messages, 12u);
  EXPECT_EQ(c.queues[0].settings.max_bytes, QueueSettings{}.max_bytes);
  EXPECT_EQ(c.queues[0].settings.overflow, Overflow::reject);
}

TEST(ConfigTest, LimitsAcceptTheirBoundaryValues) {
  const Config lo = parse_ok(R"({"limits": {
      "max_payload_bytes": 1, "max_queues": 1, "max_connections": 1, "uid_max_connections": 1,
      "uid_max_queued_bytes": 1, "max_waiting_receives": 1, "max_receive_batch": 1,
      "max_outbound_bytes": 4096, "handshake_timeout_ms": 1}})");
  EXPECT_EQ(lo.max_payload_bytes, 1u);
  EXPECT_EQ(lo.max_outbound_bytes, 4096u);

  const Config hi = parse_ok(R"({"limits": {
      "max_payload_bytes": 67107840, "max_queues": 10000000, "max_connections": 1000000,
      "uid_max_connections": 1000000, "uid_max_queued_bytes": 9223372036854775807,
      "max_waiting_receives": 65536, "max_receive_batch": 1000000,
      "max_outbound_bytes": 4294967296, "handshake_timeout_ms": 3600000},
      "queue_defaults": {"max_messages": 4294967295, "max_bytes": 9223372036854775807}})");
  EXPECT_EQ(hi.max_payload_bytes, proto::kMaxBodyCeiling - 1024);
  EXPECT_EQ(hi.max_queues, 10'000'000u);
  EXPECT_EQ(hi.uid_max_queued_bytes, 9223372036854775807u);
  EXPECT_EQ(hi.max_waiting_receives, 65'536u);
  EXPECT_EQ(hi.max_outbound_bytes, 4294967296u);
  EXPECT_EQ(hi.handshake_timeout_ms, 3'600'000u);
  EXPECT_EQ(hi.queue_defaults.max_messages, 4294967295u);
  EXPECT_EQ(hi.queue_defaults.max_bytes, 9223372036854775807u);
}

TEST(ConfigTest, EveryLogLevelAndOverflowNameIsAccepted) {
  for (const char* level : {"trace", "debug", "info", "warn", "error"}) {
    EXPECT_EQ(parse_ok(std::string(R"({"log": {"level": ")") + level + "\"}}").log_level, level);
    EXPECT_TRUE(is_valid_log_level(level));
  }
  EXPECT_FALSE(is_valid_log_level("warning"));
  EXPECT_FALSE(is_valid_log_level("INFO"));

  EXPECT_EQ(parse_overflow("reject"), Overflow::reject);
  EXPECT_EQ(parse_overflow("drop_oldest"), Overflow::drop_oldest);
  EXPECT_EQ(parse_overflow("block"), Overflow::block);
  EXPECT_FALSE(parse_overflow("default").has_value());
  EXPECT_FALSE(parse_overflow("").has_value());
}

TEST(ConfigTest, SocketModeIsReadAsOctal) {
  EXPECT_EQ(parse_ok(R"({"socket": {"mode": "0600"}})").socket_mode, 0600u);
  EXPECT_EQ(parse_ok(R"({"socket": {"mode": "660"}})").socket_mode, 0660u);
  EXPECT_EQ(parse_ok(R"({"socket": {"mode": "0777"}})").socket_mode, 0777u);
  EXPECT_EQ(parse_ok(R"({"socket": {"mode": "0"}})").socket_mode, 0u);
}

TEST(ConfigTest, SocketModeRejectsSignsAndWhitespace) {
  // std::stoul skips leading whitespace and accepts a sign, which no octal mode has.
  std::string accepted;
  for (const char* mode : {" 0660", "+0660", "-0", "\\t0600"}) {
    auto r = parse(std::string(R"({"socket": {"mode": ")") + mode + "\"}}");
    if (r.config) {
      accepted += " \"" + std::string(mode) + "\"";
    } else {
      EXPECT_EQ(r.error, R"(socket.mode: must be an octal string such as "0660")");
    }
  }
  EXPECT_EQ(accepted, "") << "socket.mode accepted text that is not octal";
}

TEST(ConfigTest, CommentsAreAccepted) {
  const Config c = parse_ok(R"(// qbusd test config
{
  /* where to listen */
  "socket": {"path": "/tmp/q.sock"},  // trailing comment
  "log": {"level": "warn"}
})");
  EXPECT_EQ(c.socket_path, "/tmp/q.sock");
  EXPECT_EQ(c.log_level, "warn");
}

// ---- bad input: one exact error line each ------------------------------------------------

struct BadInput {
  const char* name;
  const char* json;
  const char* error;
};

// Names the case in test output (and in the ctest name gtest_discover_tests builds).
void PrintTo(const BadInput& c, std::ostream* os) {
  *os << c.name;
}

class ConfigBadInputTest : public ::testing::TestWithParam<BadInput> {};

TEST_P(ConfigBadInputTest, IsRejectedWithTheExactError) {
  const auto& c = GetParam();
  auto r = parse(c.json);
  EXPECT_FALSE(r.config.has_value());
  EXPECT_EQ(r.error, c.error) << "input: " << c.json;
}

const BadInput kBadInputs[] = {
    // Top level
    {"UnknownTopLevelKey", R"({"bogus": 1})", "bogus: unknown setting"},
    {"TopLevelArray", "[]", "(top level): must be an object, not array"},
    {"TopLevelString", R"("x")", "(top level): must be an object, not string"},
    {"SectionNotAnObject", R"({"limits": 5})", "limits: must be an object, not number"},
    {"SectionNull", R"({"socket": null})", "socket: must be an object, not null"},
    // Limits: types
    {"LimitString", R"({"limits": {"max_queues": "x"}})",
     "limits.max_queues: must be an integer, not string"},
    {"LimitFraction", R"({"limits": {"max_queues": 1.5}})",
     "limits.max_queues: must be an integer, not number"},
    {"LimitBoolean", R"({"limits": {"max_connections": true}})",
     "limits.max_connections: must be an integer, not boolean"},
    {"LimitTooBigForAnyInteger", R"({"limits": {"uid_max_queued_bytes": 1e30}})",
     "limits.uid_max_queued_bytes: must be an integer, not number"},
    {"UnknownLimit", R"({"limits": {"max_payload": 10}})", "limits.max_payload: unknown setting"},
    // Limits: ranges
    {"NegativeLimit", R"({"limits": {"max_connections": -1}})",
     "limits.max_connections: must be at least 1"},
    {"NegativeByteLimit", R"({"limits": {"uid_max_queued_bytes": -9223372036854775808}})",
     "limits.uid_max_queued_bytes: must be at least 1"},
    {"ZeroLimit", R"({"limits": {"max_queues": 0}})", "limits.max_queues: must be at least 1"},
    {"PayloadOverCeiling", R"({"limits": {"max_payload_bytes": 67107841}})",
     "limits.max_payload_bytes: must be at most 67107840"},
    {"QueuesOverMax", R"({"limits": {"max_queues": 10000001}})",
     "limits.max_queues: must be at most 10000000"},
    {"ConnectionsOverMax", R"({"limits": {"max_connections": 1000001}})",
     "limits.max_connections: must be at most 1000000"},
    {"UidConnectionsOverMax", R"({"limits": {"uid_max_connections": 1000001}})",
     "limits.uid_max_connections: must be at most 1000000"},
    {"UidBytesOverMax", R"({"limits": {"uid_max_queued_bytes": 9223372036854775808}})",
     "limits.uid_max_queued_bytes: must be at most 9223372036854775807"},
    {"WaitingReceivesOverMax", R"({"limits": {"max_waiting_receives": 65537}})",
     "limits.max_waiting_receives: must be at most 65536"},
    {"UidQueuesOverTheTable", R"({"limits": {"max_queues": 100, "uid_max_queues": 101}})",
     "limits.uid_max_queues: must be at most limits.max_queues (100)"},
    {"UidQueuesOverTheDefaultTable", R"({"limits": {"uid_max_queues": 65537}})",
     "limits.uid_max_queues: must be at most limits.max_queues (65536)"},
    {"ZeroUidQueues", R"({"limits": {"uid_max_queues": 0}})",
     "limits.uid_max_queues: must be at least 1"},
    {"ZeroUidWaitingReceives", R"({"limits": {"uid_max_waiting_receives": 0}})",
     "limits.uid_max_waiting_receives: must be at least 1"},
    {"UidWaitingReceivesOverMax", R"({"limits": {"uid_max_waiting_receives": 1000001}})",
     "limits.uid_max_waiting_receives: must be at most 1000000"},
    {"NegativeGrace", R"({"limits": {"declared_queue_grace_ms": -1}})",
     "limits.declared_queue_grace_ms: must be at least 0"},
    {"GraceOverMax", R"({"limits": {"declared_queue_grace_ms": 86400001}})",
     "limits.declared_queue_grace_ms: must be at most 86400000"},
    {"BatchOverMax", R"({"limits": {"max_receive_batch": 1000001}})",
     "limits.max_receive_batch: must be at most 1000000"},
    {"OutboundUnderMin", R"({"limits": {"max_outbound_bytes": 4095}})",
     "limits.max_outbound_bytes: must be at least 4096"},
    {"OutboundOverMax", R"({"limits": {"max_outbound_bytes": 4294967297}})",
     "limits.max_outbound_bytes: must be at most 4294967296"},
    {"HandshakeTimeoutOverMax", R"({"limits": {"handshake_timeout_ms": 3600001}})",
     "limits.handshake_timeout_ms: must be at most 3600000"},
    // Socket
    {"SocketModeNotOctal", R"({"socket": {"mode": "0999"}})",
     R"(socket.mode: must be an octal string such as "0660")"},
    {"SocketModeWords", R"({"socket": {"mode": "rw-rw----"}})",
     R"(socket.mode: must be an octal string such as "0660")"},
    {"SocketModeEmpty", R"({"socket": {"mode": ""}})",
     R"(socket.mode: must be an octal string such as "0660")"},
    {"SocketModeOverFullPermissions", R"({"socket": {"mode": "01000"}})",
     R"(socket.mode: must be an octal string such as "0660")"},
    {"SocketModeNumber", R"({"socket": {"mode": 438}})",
     "socket.mode: must be a string, not number"},
    {"SocketPathRelative", R"({"socket": {"path": "run/qbus.sock"}})",
     "socket.path: must be an absolute path"},
    {"SocketPathNotString", R"({"socket": {"path": 5}})",
     "socket.path: must be a string, not number"},
    {"UnknownSocketKey", R"({"socket": {"group": "qbus"}})", "socket.group: unknown setting"},
    // Admin socket
    {"AdminPathRelative", R"({"admin": {"path": "admin.sock"}})",
     "admin.path: must be an absolute path"},
    {"AdminModeNotOctal", R"({"admin": {"mode": "0880"}})",
     R"(admin.mode: must be an octal string such as "0660")"},
    {"AdminGroupWithSpace", R"({"admin": {"group": "qbus admins"}})",
     "admin.group: must be a group name"},
    {"AdminGroupNumber", R"({"admin": {"group": 1000}})",
     "admin.group: must be a string, not number"},
    {"UnknownAdminKey", R"({"admin": {"owner": "root"}})", "admin.owner: unknown setting"},
    // Regions
    {"RegionBytesZero", R"({"limits": {"max_region_bytes": 0}})",
     "limits.max_region_bytes: must be at least 1"},
    {"UidRegionsOverMax", R"({"limits": {"uid_max_regions": 1000001}})",
     "limits.uid_max_regions: must be at most 1000000"},
    {"MaxRegionsString", R"({"limits": {"max_regions": "many"}})",
     "limits.max_regions: must be an integer, not string"},
    {"RegionPoolOverMax", R"({"limits": {"region_pool_bytes": 1099511627777}})",
     "limits.region_pool_bytes: must be at most 1099511627776"},
    {"RegionPoolNegative", R"({"limits": {"region_pool_bytes": -1}})",
     "limits.region_pool_bytes: must be at least 0"},
    {"RegionPoolString", R"({"limits": {"region_pool_bytes": "64M"}})",
     "limits.region_pool_bytes: must be an integer, not string"},
    // Log
    {"LogLevelInvalid", R"({"log": {"level": "verbose"}})",
     "log.level: must be one of trace, debug, info, warn, error"},
    {"LogLevelUpperCase", R"({"log": {"level": "INFO"}})",
     "log.level: must be one of trace, debug, info, warn, error"},
    {"LogLevelNull", R"({"log": {"level": null}})", "log.level: must be a string, not null"},
    // Queue defaults
    {"OverflowInvalid", R"({"queue_defaults": {"overflow": "sometimes"}})",
     R"(queue_defaults.overflow: must be "reject", "drop_oldest" or "block")"},
    {"OverflowDefaultIsNotAPolicy", R"({"queue_defaults": {"overflow": "default"}})",
     R"(queue_defaults.overflow: must be "reject", "drop_oldest" or "block")"},
    {"OverflowNotString", R"({"queue_defaults": {"overflow": 1}})",
     "queue_defaults.overflow: must be a string, not number"},
    {"DefaultMaxMessagesZero", R"({"queue_defaults": {"max_messages": 0}})",
     "queue_defaults.max_messages: must be at least 1"},
    {"DefaultMaxMessagesOver32Bits", R"({"queue_defaults": {"max_messages": 4294967296}})",
     "queue_defaults.max_messages: must be at most 4294967295"},
    {"DefaultMaxBytesZero", R"({"queue_defaults": {"max_bytes": 0}})",
     "queue_defaults.max_bytes: must be at least 1"},
    {"UnknownQueueDefaultsKey", R"({"queue_defaults": {"durable": true}})",
     "queue_defaults.durable: unknown setting"},
    // Queues
    {"QueuesNotArray", R"({"queues": {"key": "a"}})", "queues: must be an array, not object"},
    {"QueueNotObject", R"({"queues": ["a"]})", "queues[0]: must be an object, not string"},
    {"QueueKeyMissing", R"({"queues": [{"key": "a"}, {"max_messages": 1}]})",
     "queues[1].key: is required"},
    {"QueueKeyInvalid", R"({"queues": [{"key": "a"}, {"key": "bad key"}]})",
     "queues[1].key: must be 1-255 characters of A-Z a-z 0-9 . _ : / -"},
    {"QueueKeyEmpty", R"({"queues": [{"key": ""}]})",
     "queues[0].key: must be 1-255 characters of A-Z a-z 0-9 . _ : / -"},
    {"QueueKeyNotString", R"({"queues": [{"key": 7}]})",
     "queues[0].key: must be a string, not number"},
    {"QueueKeyDuplicate", R"({"queues": [{"key": "a"}, {"key": "a"}]})",
     "queues[1].key: 'a' is declared twice"},
    {"UnknownQueueKey", R"({"queues": [{"key": "a", "colour": "red"}]})",
     "queues[0].colour: unknown setting"},
    {"QueueOverflowInvalid", R"({"queues": [{"key": "a", "overflow": "spill"}]})",
     R"(queues[0].overflow: must be "reject", "drop_oldest" or "block")"},
    {"QueueMaxMessagesNegative", R"({"queues": [{"key": "a", "max_messages": -5}]})",
     "queues[0].max_messages: must be at least 1"},
    // New limits
    {"PendingRequestsZero", R"({"limits": {"max_pending_requests": 0}})",
     "limits.max_pending_requests: must be at least 1"},
    {"PendingRequestsOverMax", R"({"limits": {"max_pending_requests": 1000001}})",
     "limits.max_pending_requests: must be at most 1000000"},
    {"PendingRequestsString", R"({"limits": {"max_pending_requests": "10"}})",
     "limits.max_pending_requests: must be an integer, not string"},
    {"ParkedSendsZero", R"({"limits": {"max_parked_sends": 0}})",
     "limits.max_parked_sends: must be at least 1"},
    {"ParkedSendsNegative", R"({"limits": {"max_parked_sends": -1}})",
     "limits.max_parked_sends: must be at least 1"},
    {"ParkedSendsOverMax", R"({"limits": {"max_parked_sends": 65537}})",
     "limits.max_parked_sends: must be at most 65536"},
    // TCP
    {"TcpNotAnObject", R"({"tcp": "127.0.0.1:7878"})", "tcp: must be an object, not string"},
    {"TcpListenNotString", R"({"tcp": {"listen": 7878, "token_file": "/etc/qbus/token"}})",
     "tcp.listen: must be a string, not number"},
    {"TcpTokenFileNotString", R"({"tcp": {"token_file": true}})",
     "tcp.token_file: must be a string, not boolean"},
    {"TcpListenWithoutTokenFile", R"({"tcp": {"listen": "127.0.0.1:7878"}})",
     "tcp.token_file: is required when tcp.listen is set"},
    {"TcpListenWithEmptyTokenFile", R"({"tcp": {"listen": "127.0.0.1:7878", "token_file": ""}})",
     "tcp.token_file: is required when tcp.listen is set"},
    {"TcpTokenFileRelative",
     R"({"tcp": {"listen": "127.0.0.1:7878", "token_file": "etc/qbus/token"}})",
     "tcp.token_file: must be an absolute path"},
    {"TcpTokenFileRelativeWithoutListen", R"({"tcp": {"token_file": "token"}})",
     "tcp.token_file: must be an absolute path"},
    {"UnknownTcpKey",
     R"({"tcp": {"listen": "127.0.0.1:7878", "token_file": "/etc/qbus/token", "port": 1}})",
     "tcp.port: unknown setting"},
    {"TcpTokenInline", R"({"tcp": {"token": "s3cret"}})", "tcp.token: unknown setting"},
    // Inbox
    {"InboxNotAnObject", R"({"inbox": []})", "inbox: must be an object, not array"},
    {"InboxOverflowInvalid", R"({"inbox": {"overflow": "sometimes"}})",
     R"(inbox.overflow: must be "reject", "drop_oldest" or "block")"},
    {"InboxMaxMessagesZero", R"({"inbox": {"max_messages": 0}})",
     "inbox.max_messages: must be at least 1"},
    {"InboxMaxMessagesOver32Bits", R"({"inbox": {"max_messages": 4294967296}})",
     "inbox.max_messages: must be at most 4294967295"},
    {"InboxMaxBytesZero", R"({"inbox": {"max_bytes": 0}})", "inbox.max_bytes: must be at least 1"},
    {"InboxMaxBytesString", R"({"inbox": {"max_bytes": "1M"}})",
     "inbox.max_bytes: must be an integer, not string"},
    {"UnknownInboxKey", R"({"inbox": {"key": "x"}})", "inbox.key: unknown setting"},
};

INSTANTIATE_TEST_SUITE_P(Config, ConfigBadInputTest, ::testing::ValuesIn(kBadInputs),
                         [](const ::testing::TestParamInfo<BadInput>& param_info) {
                           return std::string(param_info.param.name);
                         });

TEST(ConfigTest, MoreDeclaredQueuesThanMaxQueuesIsRejected) {
  const std::string queues = R"("queues": [{"key": "a"}, {"key": "b"}, {"key": "c"}])";
  parse_ok(R"({"limits": {"max_queues": 3}, )" + queues + "}");

  auto r = parse(R"({"limits": {"max_queues": 2}, )" + queues + "}");

  EXPECT_FALSE(r.config.has_value());
  EXPECT_EQ(r.error, "queues: declares 3 queues, more than limits.max_queues (2)");
}

TEST(ConfigTest, OverlongQueueKeyIsRejected) {
  const std::string key(256, 'k');
  auto r = parse(R"({"queues": [{"key": ")" + key + R"("}]})");
  EXPECT_FALSE(r.config.has_value());
  EXPECT_EQ(r.error, "queues[0].key: must be 1-255 characters of A-Z a-z 0-9 . _ : / -");

  const std::string longest(255, 'k');
  EXPECT_EQ(parse_ok(R"({"queues": [{"key": ")" + longest + R"("}]})").queues.at(0).key, longest);
}

TEST(ConfigTest, InvalidJsonIsReportedAsSuch) {
  for (const char* text : {"", "{", R"({"limits": })", R"({"a": 1,})", "{} {}", "nul"}) {
    auto r = parse(text);
    EXPECT_FALSE(r.config.has_value()) << "input: " << text;
    EXPECT_EQ(r.error.rfind("invalid JSON", 0), 0u) << "input: " << text << "\nerror: " << r.error;
    EXPECT_EQ(r.error.find('\n'), std::string::npos) << r.error;
  }
}

// ---- load_file ---------------------------------------------------------------------------

TEST(ConfigTest, LoadFileOnAMissingPathSaysItIsMissing) {
  const std::string path = ::testing::TempDir() + "qbus_config_test_does_not_exist.json";

  auto r = load_file(path);

  EXPECT_FALSE(r.config.has_value());
  EXPECT_EQ(r.error, "config file " + path + " is missing");
}

TEST(ConfigTest, LoadFileOnADirectorySaysItIsNotARegularFile) {
  const std::string dir = ::testing::TempDir();

  auto r = load_file(dir);

  EXPECT_FALSE(r.config.has_value());
  EXPECT_EQ(r.error, "config file " + dir + " is not a regular file (a directory)");
}

TEST(ConfigTest, LoadFileRefusesAFifoWithoutWaitingForAWriter) {
  const std::string path = temp_path("fifo.json");
  ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0) << path;

  auto r = load_file(path);  // a blocking open would wait here forever

  EXPECT_FALSE(r.config.has_value());
  EXPECT_EQ(r.error, "config file " + path + " is not a regular file (a FIFO)");
  std::remove(path.c_str());
}

TEST(ConfigTest, LoadFileRefusesALinkToADeviceAndFollowsALinkToAFile) {
  const std::string to_zero = temp_path("zero.json");
  ASSERT_EQ(::symlink("/dev/zero", to_zero.c_str()), 0) << to_zero;
  auto r = load_file(to_zero);
  EXPECT_FALSE(r.config.has_value());
  EXPECT_EQ(r.error, "config file " + to_zero + " is not a regular file (a character device)");
  std::remove(to_zero.c_str());

  TempFile target("link_target.json", R"({"log": {"level": "warn"}})");
  const std::string to_file = temp_path("link.json");
  ASSERT_EQ(::symlink(target.path().c_str(), to_file.c_str()), 0) << to_file;
  auto ok = load_file(to_file);
  ASSERT_TRUE(ok.config.has_value()) << ok.error;
  EXPECT_EQ(ok.config->log_level, "warn");
  std::remove(to_file.c_str());
}

TEST(ConfigTest, LoadFileTakesUpToOneMiBAndRefusesMoreNamingTheBound) {
  const std::string json = R"({"log": {"level": "error"}})";
  ASSERT_EQ(kMaxConfigFileBytes, 1u << 20);
  TempFile largest("largest.json", json + std::string(kMaxConfigFileBytes - json.size(), ' '));
  auto ok = load_file(largest.path());
  ASSERT_TRUE(ok.config.has_value()) << ok.error;
  EXPECT_EQ(ok.config->log_level, "error");

  TempFile too_large("too_large.json",
                     json + std::string(kMaxConfigFileBytes - json.size() + 1, ' '));
  auto r = load_file(too_large.path());
  EXPECT_FALSE(r.config.has_value());
  EXPECT_EQ(r.error, "config file " + too_large.path() + " is larger than 1048576 bytes");
}

TEST(ConfigTest, LoadFileReadsAValidFile) {
  TempFile f("valid.json", R"({"log": {"level": "trace"}, "queues": [{"key": "k"}]})");

  auto r = load_file(f.path());

  ASSERT_TRUE(r.config.has_value()) << r.error;
  EXPECT_EQ(r.config->log_level, "trace");
  ASSERT_EQ(r.config->queues.size(), 1u);
  EXPECT_EQ(r.config->queues[0].key, "k");
}

TEST(ConfigTest, LoadFilePrefixesErrorsWithThePath) {
  TempFile bad_setting("bad_setting.json", R"({"bogus": 1})");
  TempFile bad_json("bad_json.json", "{\"log\": ");

  auto r1 = load_file(bad_setting.path());
  EXPECT_FALSE(r1.config.has_value());
  EXPECT_EQ(r1.error, bad_setting.path() + ": bogus: unknown setting");

  auto r2 = load_file(bad_json.path());
  EXPECT_FALSE(r2.config.has_value());
  EXPECT_EQ(r2.error.rfind(bad_json.path() + ": invalid JSON", 0), 0u) << r2.error;
}

// ---- tcp, inbox and the request limits ---------------------------------------------------

TEST(ConfigTest, TcpSectionTurnsTcpOnWithItsTokenFile) {
  const Config c =
      parse_ok(R"({"tcp": {"listen": "127.0.0.1:7878", "token_file": "/etc/qbus/token"}})");

  EXPECT_EQ(c.tcp_listen, "127.0.0.1:7878");
  EXPECT_EQ(c.tcp_token_file, "/etc/qbus/token");
}

TEST(ConfigTest, TcpListenAcceptsHostNamesAndIpv6) {
  for (const char* listen : {"localhost:7878", "0.0.0.0:1", "[::1]:65535", "::1:7878"}) {
    const Config c = parse_ok(std::string(R"({"tcp": {"listen": ")") + listen +
                              R"(", "token_file": "/etc/qbus/token"}})");
    EXPECT_EQ(c.tcp_listen, listen);
  }
}

TEST(ConfigTest, TcpTokenFileAloneLeavesTcpOff) {
  const Config c = parse_ok(R"({"tcp": {"token_file": "/etc/qbus/token"}})");

  EXPECT_EQ(c.tcp_listen, "");
  EXPECT_EQ(c.tcp_token_file, "/etc/qbus/token");
}

TEST(ConfigTest, TcpListenThatIsNotHostColonPortIsRejectedNamingTheField) {
  for (const char* listen :
       {"127.0.0.1", "127.0.0.1:", ":7878", "127.0.0.1:http", "127.0.0.1:65536", "127.0.0.1:-1",
        "127.0.0.1:7878 ", "127.0.0.1:99999999999"}) {
    auto r = parse(std::string(R"({"tcp": {"listen": ")") + listen +
                   R"(", "token_file": "/etc/qbus/token"}})");
    EXPECT_FALSE(r.config.has_value()) << "listen: '" << listen << "'";
    EXPECT_EQ(r.error.rfind("tcp.listen: ", 0), 0u) << "listen: '" << listen << "': " << r.error;
    EXPECT_GT(r.error.size(), std::string("tcp.listen: ").size());
    EXPECT_EQ(r.error.find('\n'), std::string::npos) << r.error;
  }
  // The port is named when it is the problem.
  auto r = parse(R"({"tcp": {"listen": "127.0.0.1:65536", "token_file": "/etc/qbus/token"}})");
  EXPECT_NE(r.error.find("65536"), std::string::npos) << r.error;
}

TEST(ConfigTest, TcpListenWithAnAddressPrefixIsRejected) {
  // tcp.listen is HOST:PORT (config/README.md); "tcp:HOST:PORT" must not pass as host "tcp:HOST".
  auto r = parse(R"({"tcp": {"listen": "tcp:127.0.0.1:7878", "token_file": "/etc/qbus/token"}})");
  EXPECT_FALSE(r.config.has_value());
  EXPECT_EQ(r.error.rfind("tcp.listen: ", 0), 0u) << r.error;
  // Likewise an empty bracketed host.
  r = parse(R"({"tcp": {"listen": "[]:7878", "token_file": "/etc/qbus/token"}})");
  EXPECT_FALSE(r.config.has_value());
}

TEST(ConfigTest, TcpListenAcceptsPortZeroLikeTheTcpFlag) {
  // qbusd --tcp HOST:0 listens on any free port; every flag is also settable in the file.
  const Config c =
      parse_ok(R"({"tcp": {"listen": "127.0.0.1:0", "token_file": "/etc/qbus/token"}})");
  EXPECT_EQ(c.tcp_listen, "127.0.0.1:0");
}

TEST(ConfigTest, InboxSectionSetsTheInboxLimitsAndNothingElse) {
  const Config c = parse_ok(
      R"({"inbox": {"max_messages": 5, "max_bytes": 100, "overflow": "block"},
          "queues": [{"key": "jobs"}]})");
  const Config d;

  EXPECT_EQ(c.inbox.max_messages, 5u);
  EXPECT_EQ(c.inbox.max_bytes, 100u);
  EXPECT_EQ(c.inbox.overflow, Overflow::block);
  EXPECT_EQ(c.queue_defaults.max_messages, d.queue_defaults.max_messages);
  EXPECT_EQ(c.queue_defaults.overflow, d.queue_defaults.overflow);
  ASSERT_EQ(c.queues.size(), 1u);
  EXPECT_EQ(c.queues[0].settings.max_messages, d.queue_defaults.max_messages);
}

TEST(ConfigTest, InboxDoesNotInheritQueueDefaults) {
  const Config c = parse_ok(
      R"({"queue_defaults": {"max_messages": 3, "max_bytes": 30, "overflow": "drop_oldest"},
          "inbox": {"max_messages": 7}})");
  const Config d;

  EXPECT_EQ(c.inbox.max_messages, 7u);
  EXPECT_EQ(c.inbox.max_bytes, d.inbox.max_bytes);
  EXPECT_EQ(c.inbox.overflow, Overflow::reject);
}

TEST(ConfigTest, EveryOverflowPolicyIsAcceptedForTheInbox) {
  EXPECT_EQ(parse_ok(R"({"inbox": {"overflow": "reject"}})").inbox.overflow, Overflow::reject);
  EXPECT_EQ(parse_ok(R"({"inbox": {"overflow": "drop_oldest"}})").inbox.overflow,
            Overflow::drop_oldest);
  EXPECT_EQ(parse_ok(R"({"inbox": {"overflow": "block"}})").inbox.overflow, Overflow::block);
}

TEST(ConfigTest, RequestLimitsAcceptTheirBoundaryValues) {
  const Config lo = parse_ok(R"({"limits": {"max_pending_requests": 1, "max_parked_sends": 1}})");
  EXPECT_EQ(lo.max_pending_requests, 1u);
  EXPECT_EQ(lo.max_parked_sends, 1u);

  const Config hi =
      parse_ok(R"({"limits": {"max_pending_requests": 1000000, "max_parked_sends": 65536}})");
  EXPECT_EQ(hi.max_pending_requests, 1'000'000u);
  EXPECT_EQ(hi.max_parked_sends, 65'536u);
}

// ---- load_token --------------------------------------------------------------------------

TEST(ConfigTest, LoadTokenReadsAPrivateFile) {
  TempFile f("token_ok", "s3cr3t\n", 0600);
  std::string error;

  auto t = load_token(f.path(), error);

  ASSERT_TRUE(t.has_value()) << error;
  EXPECT_EQ(*t, "s3cr3t");
}

TEST(ConfigTest, LoadTokenAcceptsAnOwnerReadOnlyFile) {
  TempFile f("token_ro", "abc", 0400);
  std::string error;

  auto t = load_token(f.path(), error);

  ASSERT_TRUE(t.has_value()) << error;
  EXPECT_EQ(*t, "abc");
}

TEST(ConfigTest, LoadTokenTrimsSurroundingWhitespaceOnly) {
  TempFile f("token_ws", " \t\r\n  two words\tand tab \r\n\n", 0600);
  std::string error;

  auto t = load_token(f.path(), error);

  ASSERT_TRUE(t.has_value()) << error;
  EXPECT_EQ(*t, "two words\tand tab");
}

TEST(ConfigTest, LoadTokenOnAMissingFileNamesIt) {
  const std::string path = temp_path("token_does_not_exist");
  std::string error;

  auto t = load_token(path, error);

  EXPECT_FALSE(t.has_value());
  EXPECT_NE(error.find(path), std::string::npos) << error;
  EXPECT_NE(error.find("missing"), std::string::npos) << error;
  EXPECT_EQ(error.find('\n'), std::string::npos) << error;
}

TEST(ConfigTest, LoadTokenOnADirectoryIsAnError) {
  const std::string dir = temp_path("token_dir");
  ASSERT_EQ(::mkdir(dir.c_str(), 0700), 0) << dir;
  std::string error;

  auto t = load_token(dir, error);

  EXPECT_FALSE(t.has_value());
  EXPECT_NE(error.find(dir), std::string::npos) << error;
  EXPECT_NE(error.find("not a regular file"), std::string::npos) << error;
  ::rmdir(dir.c_str());
}

TEST(ConfigTest, LoadTokenRefusesAFifoWithoutWaitingForAWriter) {
  const std::string path = temp_path("token_fifo");
  ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0) << path;
  std::string error;

  auto t = load_token(path, error);

  EXPECT_FALSE(t.has_value());
  EXPECT_EQ(error, "token file " + path + " is not a regular file (a FIFO)");
  std::remove(path.c_str());
}

TEST(ConfigTest, LoadTokenRefusesAFileOwnedByAnotherUidEvenAtMode0600) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to give the file to uid 65534";
  TempFile f("token_nobody", "s3cr3t\n", 0600);
  ASSERT_EQ(::chown(f.path().c_str(), 65534, 65534), 0);
  std::string error;

  auto t = load_token(f.path(), error);

  EXPECT_FALSE(t.has_value());
  EXPECT_EQ(error, "token file " + f.path() +
                       " is owned by uid 65534; it must be owned by root or by the uid reading "
                       "it (0)");
}

TEST(ConfigTest, LoadTokenChecksTheOwnerBeforeTheMode) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to give the file to uid 65534";
  TempFile f("token_nobody_0644", "s3cr3t\n", 0644);
  ASSERT_EQ(::chown(f.path().c_str(), 65534, 65534), 0);
  std::string error;

  EXPECT_FALSE(load_token(f.path(), error).has_value());
  EXPECT_NE(error.find("owned by uid 65534"), std::string::npos) << error;
}

TEST(ConfigTest, LoadTokenRefusesAFileOverItsBound) {
  TempFile f("token_huge", std::string(kMaxTokenFileBytes + 1, ' ') + "s3cr3t", 0600);
  std::string error;

  EXPECT_FALSE(load_token(f.path(), error).has_value());
  EXPECT_EQ(error, "token file " + f.path() + " is larger than 65536 bytes");
}

TEST(ConfigTest, LoadTokenRefusesAFileOthersCanReadAndSaysHowToFixIt) {
  TempFile f("token_0644", "s3cr3t\n", 0644);
  std::string error;

  auto t = load_token(f.path(), error);

  EXPECT_FALSE(t.has_value());
  EXPECT_NE(error.find(f.path()), std::string::npos) << error;
  EXPECT_NE(error.find("0644"), std::string::npos) << error;
  EXPECT_NE(error.find("chmod 600"), std::string::npos) << error;
  EXPECT_EQ(error.find('\n'), std::string::npos) << error;
}

TEST(ConfigTest, LoadTokenRefusesAnyGroupOrOtherPermission) {
  for (mode_t mode : {0640, 0620, 0610, 0604, 0602, 0601, 0660}) {
    TempFile f("token_mode", "s3cr3t", mode);
    std::string error;
    char octal[8];
    std::snprintf(octal, sizeof(octal), "%04o", static_cast<unsigned>(mode));

    auto t = load_token(f.path(), error);

    EXPECT_FALSE(t.has_value()) << octal;
    EXPECT_NE(error.find(octal), std::string::npos) << error;
    EXPECT_NE(error.find("chmod 600"), std::string::npos) << error;
  }
}

TEST(ConfigTest, LoadTokenOnAnEmptyOrBlankFileSaysItIsEmpty) {
  for (const char* contents : {"", " ", "\n", " \t\r\n \n"}) {
    TempFile f("token_empty", contents, 0600);
    std::string error;

    auto t = load_token(f.path(), error);

    EXPECT_FALSE(t.has_value()) << "contents: '" << contents << "'";
    EXPECT_NE(error.find(f.path()), std::string::npos) << error;
    EXPECT_NE(error.find("is empty"), std::string::npos) << error;
  }
}

TEST(ConfigTest, LoadTokenRefusesATokenLongerThan1024Bytes) {
  TempFile too_long("token_long", std::string(1025, 'x') + "\n", 0600);
  std::string error;

  auto t = load_token(too_long.path(), error);

  EXPECT_FALSE(t.has_value());
  EXPECT_NE(error.find(too_long.path()), std::string::npos) << error;
  EXPECT_NE(error.find("1024"), std::string::npos) << error;

  // Exactly the limit is fine, and surrounding whitespace does not count.
  TempFile longest("token_longest", "  " + std::string(1024, 'y') + "\n\n", 0600);
  error.clear();
  auto ok = load_token(longest.path(), error);
  ASSERT_TRUE(ok.has_value()) << error;
  EXPECT_EQ(ok->size(), 1024u);
}

TEST(ConfigTest, EffectiveConfigJsonReadsBackAsTheSameConfig) {
  const auto c = parse_ok(R"({"admin": {"group": "qbus-admin", "mode": "0640"},
                              "limits": {"max_region_bytes": 4096, "max_queues": 7,
                                         "region_pool_bytes": 12288,
                                         "uid_max_waiting_receives": 11,
                                         "declared_queue_grace_ms": 250},
                              "queues": [{"key": "jobs", "max_messages": 3}]})");
  const std::string text = to_json_text(c, "/run/x/q.sock", "/run/x/admin.sock");
  const auto again = parse_ok(text);
  EXPECT_EQ(again.admin_group, "qbus-admin");
  EXPECT_EQ(again.admin_socket_mode, 0640u);
  EXPECT_EQ(again.max_region_bytes, 4096u);
  EXPECT_EQ(again.max_queues, 7u);
  EXPECT_EQ(again.uid_max_queues, 7u);
  EXPECT_EQ(again.uid_max_waiting_receives, 11u);
  EXPECT_EQ(again.declared_queue_grace_ms, 250u);
  // Ignored, so not part of the effective configuration.
  EXPECT_EQ(text.find("region_pool_bytes"), std::string::npos) << text;
  EXPECT_EQ(again.region_pool_bytes, 0u);
  ASSERT_EQ(again.queues.size(), 1u);
  EXPECT_EQ(again.queues[0].settings.max_messages, 3u);
  EXPECT_EQ(again.socket_path, "/run/x/q.sock");
  EXPECT_EQ(again.admin_socket_path, "/run/x/admin.sock");
  EXPECT_EQ(text.find("token\""), std::string::npos);  // only token_file, never a token
}

}  // namespace
}  // namespace qbus::config
