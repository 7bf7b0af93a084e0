// The documents that restate the table of limits (config/limits.def) say what it says:
// config/README.md's rows for limits.* and its reload table, and qbusd.example.json. When
// a row changes, the failing test prints what the document should hold. The same holds
// them to the queue, inbox and storage defaults.
#include <gtest/gtest.h>

#include <bit>
#include <cstdint>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "qbus/config/config.hpp"
#include "qbus/config/limits.hpp"

namespace qbus::config {
namespace {

std::string read_source(const std::string& relative) {
  std::ifstream in(std::string(QBUS_SOURCE_DIR) + "/" + relative);
  EXPECT_TRUE(in.good()) << relative;
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// 1099511627776 reads better as 2^40; smaller bounds are shown in full.
std::string bound_text(std::uint64_t v) {
  if (v >= (1ull << 32) && std::has_single_bit(v))
    return "2^" + std::to_string(std::countr_zero(v));
  return std::to_string(v);
}

std::string type_text(const LimitSpec& s) {
  const std::uint64_t widest = s.wide ? std::numeric_limits<std::uint64_t>::max() / 2
                                      : std::numeric_limits<std::uint32_t>::max();
  if (s.max >= widest) return "integer ≥ " + std::to_string(s.min);
  return "integer, " + std::to_string(s.min) + ".." + bound_text(s.max);
}

// A byte count of whole MiB or GiB also shows it so.
std::string default_text(const LimitSpec& s) {
  std::string text = std::to_string(s.def);
  if (!s.key.ends_with("_bytes") || s.def == 0) return text;
  if (s.def % (1ull << 30) == 0) return text + " (" + std::to_string(s.def >> 30) + " GiB)";
  if (s.def % (1ull << 20) == 0) return text + " (" + std::to_string(s.def >> 20) + " MiB)";
  return text;
}

std::vector<std::string> rendered_rows() {
  std::vector<std::string> rows;
  for (const auto& s : kLimits) {
    rows.push_back("| `limits." + std::string(s.key) + "` | " + type_text(s) + " | " +
                   default_text(s) + " | " + std::string(s.doc) + " |");
  }
  return rows;
}

std::vector<std::string> readme_rows(const std::string& readme) {
  std::vector<std::string> rows;
  std::istringstream in(readme);
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with("| `limits.")) rows.push_back(line);
  }
  return rows;
}

std::string joined(const std::vector<std::string>& rows) {
  std::string text;
  for (const auto& r : rows)
    text += r + "\n";
  return text;
}

TEST(ConfigDoc, ReadmeLimitRowsAreWhatLimitsDefSays) {
  const auto expected = rendered_rows();
  const auto actual = readme_rows(read_source("config/README.md"));
  // As text, so that a difference shows as a diff of lines.
  EXPECT_EQ(joined(actual), joined(expected))
      << "config/README.md's rows for limits.* should read:\n"
      << joined(expected);
}

TEST(ConfigDoc, ReadmeReloadTableNamesTheRestartOnlyLimits) {
  std::string except;
  for (const auto& s : kLimits) {
    if (s.apply != Apply::restart) continue;
    except += (except.empty() ? "`" : ", `") + std::string(s.key) + "`";
  }
  ASSERT_FALSE(except.empty());
  EXPECT_NE(read_source("config/README.md").find("| every `limits.*` except " + except + " |"),
            std::string::npos)
      << "the reload table should say: every `limits.*` except " << except;
}

// The queue and inbox bounds are not rows of limits.def, but their defaults are one constant
// each (kQueueDefaults, kInboxDefaults), which the README's rows must show.
TEST(ConfigDoc, ReadmeShowsTheBuiltInQueueAndInboxBounds) {
  const std::string readme = read_source("config/README.md");
  for (const auto& [section, bounds] :
       {std::pair{"queue_defaults", kQueueDefaults}, std::pair{"inbox", kInboxDefaults}}) {
    const std::string field = std::string("| `") + section + ".";
    for (const std::string& row :
         {field + "max_messages` | integer ≥ 1 | " + std::to_string(bounds.max_messages) + " |",
          field + "max_bytes` | integer ≥ 1 | " + std::to_string(bounds.max_bytes) + " (" +
              std::to_string(bounds.max_bytes >> 20) + " MiB) |",
          field + "overflow` | `reject` `drop_oldest` `block` | `" +
              std::string(proto::overflow_name(bounds.overflow)) + "` |"}) {
      EXPECT_NE(readme.find(row), std::string::npos) << "config/README.md should have " << row;
    }
  }
}

// The storage section's defaults are StorageSettings' and its bounds constants of config.hpp,
// which the README's rows must show; it needs a restart, which its reload table must say.
TEST(ConfigDoc, ReadmeShowsTheStorageDefaultsBoundsAndRestart) {
  const std::string readme = read_source("config/README.md");
  const StorageSettings d;
  const auto range = [](std::uint64_t min, std::uint64_t max) {
    return "integer, " + std::to_string(min) + ".." + std::to_string(max);
  };
  for (const std::string& row :
       {std::string("| `storage.dir` | string, absolute | "),
        "| `storage.fsync` | `always` `batch` `none` | `" +
            std::string(proto::fsync_name(d.fsync)) + "` |",
        "| `storage.batch_ms` | " + range(kMinStorageBatchMs, kMaxStorageBatchMs) + " | " +
            std::to_string(d.batch_ms) + " |",
        "| `storage.segment_bytes` | " + range(kMinSegmentBytes, kMaxSegmentBytes) + " | " +
            std::to_string(d.segment_bytes) + " (" + std::to_string(d.segment_bytes >> 20) +
            " MiB) |"}) {
    EXPECT_NE(readme.find(row), std::string::npos) << "config/README.md should have " << row;
  }
  bool in_restart_column = false;
  std::istringstream in(readme);
  for (std::string line; std::getline(in, line);) {
    in_restart_column = in_restart_column || (line.starts_with("| ") &&
                                              line.find(" | `storage.*`") != std::string::npos);
  }
  EXPECT_TRUE(in_restart_column) << "the reload table should list `storage.*` as needing a restart";
}

TEST(ConfigDoc, ExampleFileShowsTheStorageDefaults) {
  const std::string example = read_source("config/qbusd.example.json");
  const StorageSettings d;
  for (const std::string& entry : {std::string("\"storage\": {"), std::string("\"dir\": \"\""),
                                   "\"fsync\": \"" + std::string(proto::fsync_name(d.fsync)) + "\"",
                                   "\"batch_ms\": " + std::to_string(d.batch_ms),
                                   "\"segment_bytes\": " + std::to_string(d.segment_bytes)}) {
    EXPECT_NE(example.find(entry), std::string::npos) << "missing " << entry;
  }
  const auto r = parse(example);
  ASSERT_TRUE(r.config) << r.error;
  EXPECT_EQ(r.config->storage, d);
}

TEST(ConfigDoc, ExampleFileShowsTheMetricsDefaults) {
  const std::string example = read_source("config/qbusd.example.json");
  const MetricsSettings d;
  for (const std::string& entry :
       {std::string("\"metrics\": {"), std::string("\"listen\": \"\""),
        "\"max_queue_series\": " + std::to_string(d.max_queue_series)}) {
    EXPECT_NE(example.find(entry), std::string::npos) << "missing " << entry;
  }
  const auto r = parse(example);
  ASSERT_TRUE(r.config) << r.error;
  EXPECT_EQ(r.config->metrics, d);
}

// The example claims to show every setting with its default; obsolete ones are left out.
TEST(ConfigDoc, ExampleFileShowsEveryLimitWithItsDefault) {
  const std::string example = read_source("config/qbusd.example.json");
  for (const auto& s : kLimits) {
    const std::string entry = "\"" + std::string(s.key) + "\": " + std::to_string(s.def);
    if (s.apply == Apply::obsolete) {
      EXPECT_EQ(example.find("\"" + std::string(s.key) + "\""), std::string::npos) << s.key;
    } else {
      EXPECT_NE(example.find(entry), std::string::npos) << "missing " << entry;
    }
  }
}

TEST(ConfigLimits, EveryDefaultIsWithinItsBoundsAndItsType) {
  for (const auto& s : kLimits) {
    EXPECT_LE(s.min, s.def) << s.key;
    EXPECT_LE(s.def, s.max) << s.key;
    if (!s.wide) {
      EXPECT_LE(s.max, std::numeric_limits<std::uint32_t>::max()) << s.key;
    }
    EXPECT_FALSE(s.doc.empty()) << s.key;
  }
}

TEST(ConfigLimits, AnEmptyFileGivesTheTablesDefaults) {
  const auto r = parse("{}");
  ASSERT_TRUE(r.config) << r.error;
  for_each_limit([](const LimitSpec& s, const auto& value) { EXPECT_EQ(value, s.def) << s.key; },
                 *r.config);
}

}  // namespace
}  // namespace qbus::config
