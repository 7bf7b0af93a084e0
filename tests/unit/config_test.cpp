// Unit tests of the config edge: JSON text becomes a validated Config, and every bad input
// is one line naming the field path.
#include "qbus/config/config.hpp"

#include <gtest/gtest.h>

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

// A file under the test temp dir, removed when the test ends.
class TempFile {
 public:
  TempFile(const std::string& name, std::string_view contents)
      : path_(::testing::TempDir() + "qbus_config_test_" + std::to_string(::getpid()) + "_" +
              name) {
    std::ofstream f(path_, std::ios::binary | std::ios::trunc);
    f << contents;
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
}

TEST(ConfigTest, EmptySectionsKeepTheirDefaults) {
  const Config c =
      parse_ok(R"({"socket": {}, "log": {}, "limits": {}, "queue_defaults": {}, "queues": []})");
  const Config d;

  EXPECT_EQ(c.socket_path, d.socket_path);
  EXPECT_EQ(c.socket_mode, d.socket_mode);
  EXPECT_EQ(c.log_level, d.log_level);
  EXPECT_EQ(c.max_queues, d.max_queues);
  EXPECT_EQ(c.queue_defaults.overflow, d.queue_defaults.overflow);
  EXPECT_TRUE(c.queues.empty());
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
};

INSTANTIATE_TEST_SUITE_P(Config, ConfigBadInputTest, ::testing::ValuesIn(kBadInputs),
                         [](const ::testing::TestParamInfo<BadInput>& param_info) {
                           return std::string(param_info.param.name);
                         });

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

TEST(ConfigTest, LoadFileOnAMissingPathSaysItCannotRead) {
  const std::string path = ::testing::TempDir() + "qbus_config_test_does_not_exist.json";

  auto r = load_file(path);

  EXPECT_FALSE(r.config.has_value());
  EXPECT_EQ(r.error, "cannot read config file " + path);
}

TEST(ConfigTest, LoadFileOnADirectorySaysItCannotRead) {
  const std::string dir = ::testing::TempDir();

  auto r = load_file(dir);

  EXPECT_FALSE(r.config.has_value());
  EXPECT_EQ(r.error, "cannot read config file " + dir);
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

}  // namespace
}  // namespace qbus::config
