// The `storage` section and the durable queues of `queues`: what parses, to what, and the
// one-line error naming the field path for everything that does not.
#include <gtest/gtest.h>

#include <cstddef>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>

#include "qbus/config/config.hpp"

namespace qbus::config {
namespace {

using proto::Fsync;

Config parse_ok(std::string_view text) {
  auto r = parse(text);
  EXPECT_TRUE(r.config.has_value()) << r.error << " in " << text;
  return r.config.value_or(Config{});
}

TEST(ConfigStorageTest, AnEmptyFileGivesTheStorageDefaults) {
  const Config c = parse_ok("{}");

  EXPECT_EQ(c.storage.dir, "");
  EXPECT_EQ(c.storage.fsync, Fsync::batch);
  EXPECT_EQ(c.storage.batch_ms, 10u);
  EXPECT_EQ(c.storage.segment_bytes, 67'108'864u);
  EXPECT_EQ(c.storage, StorageSettings{});
}

TEST(ConfigStorageTest, AnEmptyStorageSectionKeepsTheDefaults) {
  EXPECT_EQ(parse_ok(R"({"storage": {}})").storage, StorageSettings{});
}

TEST(ConfigStorageTest, EveryStorageFieldParsesToTheGivenValue) {
  const Config c = parse_ok(R"({"storage": {"dir": "/srv/qbus/state", "fsync": "always",
                                            "batch_ms": 250, "segment_bytes": 1048576}})");

  EXPECT_EQ(c.storage.dir, "/srv/qbus/state");
  EXPECT_EQ(c.storage.fsync, Fsync::always);
  EXPECT_EQ(c.storage.batch_ms, 250u);
  EXPECT_EQ(c.storage.segment_bytes, 1'048'576u);
  // The other sections are untouched by it.
  EXPECT_EQ(c.socket_path, "");
  EXPECT_TRUE(c.queues.empty());
}

TEST(ConfigStorageTest, EveryFsyncNameIsAcceptedButDefaultIsNot) {
  for (const auto& [name, value] :
       {std::pair{"always", Fsync::always}, std::pair{"batch", Fsync::batch},
        std::pair{"none", Fsync::none}}) {
    const std::string text = std::string(R"({"storage": {"fsync": ")") + name + R"("}})";
    const Config c = parse_ok(text);
    EXPECT_EQ(c.storage.fsync, value) << name;
    EXPECT_NE(c.storage.fsync, Fsync::use_default) << name;
    EXPECT_EQ(parse_fsync(name), value);
  }
  EXPECT_EQ(parse_fsync("default"), std::nullopt);
  EXPECT_EQ(parse_fsync(""), std::nullopt);
  EXPECT_EQ(parse_fsync("ALWAYS"), std::nullopt);
}

TEST(ConfigStorageTest, BatchMsAndSegmentBytesAcceptTheirBounds) {
  const Config low = parse_ok(R"({"storage": {"batch_ms": 1, "segment_bytes": 65536}})");
  EXPECT_EQ(low.storage.batch_ms, 1u);
  EXPECT_EQ(low.storage.segment_bytes, 65'536u);

  const Config high = parse_ok(R"({"storage": {"batch_ms": 1000, "segment_bytes": 1073741824}})");
  EXPECT_EQ(high.storage.batch_ms, 1'000u);
  EXPECT_EQ(high.storage.segment_bytes, 1ull << 30);

  EXPECT_EQ(kMinStorageBatchMs, 1u);
  EXPECT_EQ(kMaxStorageBatchMs, 1'000u);
  EXPECT_EQ(kMinSegmentBytes, 65'536u);
  EXPECT_EQ(kMaxSegmentBytes, 1'073'741'824u);
}

TEST(ConfigStorageTest, QueuesAreNotDurableUnlessTheySaySo) {
  const Config c = parse_ok(R"({"queues": [
    {"key": "plain"},
    {"key": "kept", "durable": true},
    {"key": "synced", "durable": true, "fsync": "always"},
    {"key": "written", "durable": true, "fsync": "none"},
    {"key": "off", "durable": false}]})");

  ASSERT_EQ(c.queues.size(), 5u);
  EXPECT_FALSE(c.queues[0].durable);
  EXPECT_EQ(c.queues[0].fsync, Fsync::use_default);
  EXPECT_TRUE(c.queues[1].durable);
  EXPECT_EQ(c.queues[1].fsync, Fsync::use_default);  // storage.fsync decides
  EXPECT_TRUE(c.queues[2].durable);
  EXPECT_EQ(c.queues[2].fsync, Fsync::always);
  EXPECT_TRUE(c.queues[3].durable);
  EXPECT_EQ(c.queues[3].fsync, Fsync::none);
  EXPECT_FALSE(c.queues[4].durable);
  EXPECT_EQ(c.queues[4].fsync, Fsync::use_default);
}

// ---- bad input: one exact error line each ------------------------------------------------

struct BadStorage {
  const char* name;
  const char* json;
  const char* error;
};

void PrintTo(const BadStorage& c, std::ostream* os) {
  *os << c.name;
}

class ConfigStorageBadInputTest : public ::testing::TestWithParam<BadStorage> {};

TEST_P(ConfigStorageBadInputTest, IsRejectedWithTheExactError) {
  const auto& c = GetParam();
  auto r = parse(c.json);
  EXPECT_FALSE(r.config.has_value());
  EXPECT_EQ(r.error, c.error) << "input: " << c.json;
}

const BadStorage kBadStorage[] = {
    {"StorageNotAnObject", R"({"storage": "/var/lib/qbus"})",
     "storage: must be an object, not string"},
    {"StorageNull", R"({"storage": null})", "storage: must be an object, not null"},
    {"UnknownStorageKey", R"({"storage": {"path": "/var/lib/qbus"}})",
     "storage.path: unknown setting"},
    // dir
    {"DirRelative", R"({"storage": {"dir": "var/lib/qbus"}})",
     "storage.dir: must be an absolute path"},
    {"DirDotRelative", R"({"storage": {"dir": "./state"}})",
     "storage.dir: must be an absolute path"},
    {"DirHomeTilde", R"({"storage": {"dir": "~/.local/state/qbus"}})",
     "storage.dir: must be an absolute path"},
    {"DirNumber", R"({"storage": {"dir": 5}})", "storage.dir: must be a string, not number"},
    {"DirNull", R"({"storage": {"dir": null}})", "storage.dir: must be a string, not null"},
    // fsync
    {"FsyncUnknown", R"({"storage": {"fsync": "sometimes"}})",
     R"(storage.fsync: must be "always", "batch" or "none")"},
    {"FsyncDefaultIsNotAPolicy", R"({"storage": {"fsync": "default"}})",
     R"(storage.fsync: must be "always", "batch" or "none")"},
    {"FsyncEmpty", R"({"storage": {"fsync": ""}})",
     R"(storage.fsync: must be "always", "batch" or "none")"},
    {"FsyncUpperCase", R"({"storage": {"fsync": "Always"}})",
     R"(storage.fsync: must be "always", "batch" or "none")"},
    {"FsyncBoolean", R"({"storage": {"fsync": true}})",
     "storage.fsync: must be a string, not boolean"},
    {"FsyncNumber", R"({"storage": {"fsync": 1}})", "storage.fsync: must be a string, not number"},
    // batch_ms
    {"BatchMsZero", R"({"storage": {"batch_ms": 0}})", "storage.batch_ms: must be at least 1"},
    {"BatchMs1001", R"({"storage": {"batch_ms": 1001}})", "storage.batch_ms: must be at most 1000"},
    {"BatchMsNegative", R"({"storage": {"batch_ms": -5}})", "storage.batch_ms: must be at least 1"},
    {"BatchMsString", R"({"storage": {"batch_ms": "10"}})",
     "storage.batch_ms: must be an integer, not string"},
    {"BatchMsFraction", R"({"storage": {"batch_ms": 2.5}})",
     "storage.batch_ms: must be an integer, not number"},
    // segment_bytes
    {"SegmentBytesTooSmall", R"({"storage": {"segment_bytes": 65535}})",
     "storage.segment_bytes: must be at least 65536"},
    {"SegmentBytesZero", R"({"storage": {"segment_bytes": 0}})",
     "storage.segment_bytes: must be at least 65536"},
    {"SegmentBytesTooLarge", R"({"storage": {"segment_bytes": 1073741825}})",
     "storage.segment_bytes: must be at most 1073741824"},
    {"SegmentBytesString", R"({"storage": {"segment_bytes": "64M"}})",
     "storage.segment_bytes: must be an integer, not string"},
    {"SegmentBytesArray", R"({"storage": {"segment_bytes": [65536]}})",
     "storage.segment_bytes: must be an integer, not array"},
    // queues[].durable and queues[].fsync
    {"QueueFsyncWithoutDurable", R"({"queues": [{"key": "a", "fsync": "always"}]})",
     R"(queues[0].fsync: needs "durable": true)"},
    {"QueueFsyncWithDurableFalse",
     R"({"queues": [{"key": "a", "durable": true},
                    {"key": "b", "durable": false, "fsync": "none"}]})",
     R"(queues[1].fsync: needs "durable": true)"},
    {"QueueFsyncUnknown", R"({"queues": [{"key": "a", "durable": true, "fsync": "never"}]})",
     R"(queues[0].fsync: must be "always", "batch" or "none")"},
    {"QueueFsyncDefaultIsNotAPolicy",
     R"({"queues": [{"key": "a", "durable": true, "fsync": "default"}]})",
     R"(queues[0].fsync: must be "always", "batch" or "none")"},
    {"QueueFsyncNumber", R"({"queues": [{"key": "a", "durable": true, "fsync": 2}]})",
     "queues[0].fsync: must be a string, not number"},
    {"QueueDurableString", R"({"queues": [{"key": "a", "durable": "yes"}]})",
     "queues[0].durable: must be true or false, not string"},
    {"QueueDurableNumber", R"({"queues": [{"key": "a", "durable": 1}]})",
     "queues[0].durable: must be true or false, not number"},
};

INSTANTIATE_TEST_SUITE_P(Config, ConfigStorageBadInputTest, ::testing::ValuesIn(kBadStorage),
                         [](const ::testing::TestParamInfo<BadStorage>& param_info) {
                           return std::string(param_info.param.name);
                         });

// ---- the effective configuration (the admin socket's `config` answer) --------------------

TEST(ConfigStorageTest, EffectiveConfigJsonShowsStorageAndReadsBackTheSame) {
  const Config c = parse_ok(R"({"storage": {"dir": "/srv/q", "fsync": "none", "batch_ms": 7,
                                            "segment_bytes": 131072}})");
  const std::string text = to_json_text(c, "/s", "/a");

  EXPECT_NE(text.find(R"("storage":{"batch_ms":7,"dir":"/srv/q","fsync":"none",)"
                      R"("segment_bytes":131072})"),
            std::string::npos)
      << text;
  EXPECT_EQ(parse_ok(text).storage, c.storage);
}

TEST(ConfigStorageTest, EffectiveConfigJsonShowsTheDefaultStorageOfAnEmptyFile) {
  const std::string text = to_json_text(parse_ok("{}"), "/s", "/a");

  EXPECT_NE(text.find(R"("storage":{"batch_ms":10,"dir":"","fsync":"batch",)"
                      R"("segment_bytes":67108864})"),
            std::string::npos)
      << text;
}

// A durable queue shows the policy in effect (its own, else storage.fsync); any other queue
// shows none, since it may not have one: the answer parses back.
TEST(ConfigStorageTest, EffectiveConfigJsonShowsEachQueuesDurabilityAndFsyncInEffect) {
  const Config c = parse_ok(R"({"storage": {"fsync": "always"},
                                "queues": [{"key": "plain"},
                                           {"key": "kept", "durable": true},
                                           {"key": "written", "durable": true,
                                            "fsync": "none"}]})");
  const std::string text = to_json_text(c, "/s", "/a");
  const Config again = parse_ok(text);

  ASSERT_EQ(again.queues.size(), 3u) << text;
  EXPECT_FALSE(again.queues[0].durable);
  EXPECT_EQ(again.queues[0].fsync, Fsync::use_default);
  EXPECT_TRUE(again.queues[1].durable);
  EXPECT_EQ(again.queues[1].fsync, Fsync::always);
  EXPECT_TRUE(again.queues[2].durable);
  EXPECT_EQ(again.queues[2].fsync, Fsync::none);
  EXPECT_EQ(again.storage.fsync, Fsync::always);
  EXPECT_NE(text.find(R"("durable":false)"), std::string::npos) << text;
  // Only the two durable queues and the storage section name an fsync policy.
  std::size_t count = 0;
  for (auto at = text.find("\"fsync\""); at != std::string::npos;
       at = text.find("\"fsync\"", at + 1)) {
    ++count;
  }
  EXPECT_EQ(count, 3u) << text;
}

}  // namespace
}  // namespace qbus::config
