// `qbusd --log-format json` against the real daemon: every line on stderr is one JSON
// object, and the lines about a peer carry its pid and uid (this test's own, the peer being
// this process), the key and the error code as fields: a malformed frame, a policy denial,
// an operator's purge, and a client whose HELLO name is quotes, control characters and
// invalid UTF-8. An unknown format is a usage error naming the option.
#include <unistd.h>
#include <qbus/client.hpp>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "admin_json.hpp"
#include "daemon.hpp"
#include "eventually.hpp"
#include "qbus/proto/buffer.hpp"
#include "raw_peer.hpp"

namespace qbus::testing {
namespace {

using nlohmann::json;
using std::chrono::seconds;

constexpr const char* kPolicy = R"({"policy": {"default": "allow", "rules": [
  {"deny": "*", "everyone": true, "keys": ["closed.jobs"]}]}})";

class JsonLogTest : public ::testing::Test {
 protected:
  JsonLogTest()
      : daemon_(DaemonOptions{.config_json = kPolicy, .extra_args = {"--log-format", "json"}}) {}

  // Every complete line of the log so far, each parsed (a line that is not JSON fails the
  // test and is skipped).
  std::vector<json> lines() const {
    std::vector<json> out;
    std::istringstream in(daemon_.log());
    for (std::string line; std::getline(in, line);) {
      if (in.eof()) break;  // no '\n' yet: still being written
      try {
        out.push_back(json::parse(line));
      } catch (const json::exception& e) {
        ADD_FAILURE() << "not a JSON line (" << e.what() << "): " << line;
      }
    }
    return out;
  }

  // The first line whose string `field` contains `value`, waiting for one to appear.
  std::optional<json> wait_for(const std::string& field, const std::string& value) const {
    std::optional<json> found;
    eventually([&] {
      for (const auto& j : lines()) {
        if (j.contains(field) && j[field].is_string() &&
            j[field].get<std::string>().find(value) != std::string::npos) {
          found = j;
          return true;
        }
      }
      return false;
    });
    return found;
  }

  static void expect_peer_is_us(const json& line) {
    EXPECT_EQ(line.value("pid", -1), static_cast<int>(::getpid())) << line.dump();
    EXPECT_EQ(line.value("uid", -1), static_cast<int>(::getuid())) << line.dump();
  }

  Daemon daemon_;
};

TEST_F(JsonLogTest, EveryLineIsJsonWithTimeLevelAndMessage) {
  const auto started = wait_for("message", "listening on");
  ASSERT_TRUE(started) << daemon_.log();
  EXPECT_EQ((*started)["level"], "info");
  EXPECT_TRUE(std::regex_match((*started)["time"].get<std::string>(),
                               std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z)")))
      << started->dump();
  // A startup line names no peer.
  EXPECT_FALSE(started->contains("pid"));
  EXPECT_FALSE(started->contains("errc"));
  for (const auto& j : lines()) {
    EXPECT_TRUE(j.contains("time") && j.contains("level") && j.contains("message")) << j.dump();
  }
}

TEST_F(JsonLogTest, MalformedFrameLineCarriesThePeerAndTheErrorCode) {
  RawPeer peer(daemon_.socket_path());
  const std::string garbage = "GET / HTTP/1.1\r\n\r\n";
  peer.write(std::as_bytes(std::span(garbage)));
  const auto reply = peer.next();
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->error_code(), Errc::bad_magic);
  const auto line = wait_for("errc", "bad_magic");
  ASSERT_TRUE(line) << daemon_.log();
  expect_peer_is_us(*line);
  EXPECT_EQ((*line)["level"], "warning");
  EXPECT_NE((*line)["message"].get<std::string>().find("pid " + std::to_string(::getpid())),
            std::string::npos);
  EXPECT_FALSE(line->contains("key"));
}

TEST_F(JsonLogTest, PolicyDenialCarriesTheKey) {
  Client c(ClientOptions{daemon_.address(), "log-test", seconds(30)});
  try {
    c.send_confirmed("closed.jobs", "x");
    ADD_FAILURE() << "the policy let the send through";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::permission_denied) << e.what();
  }
  const auto line = wait_for("errc", "permission_denied");
  ASSERT_TRUE(line) << daemon_.log();
  expect_peer_is_us(*line);
  EXPECT_EQ((*line)["key"], "closed.jobs");
  EXPECT_NE((*line)["message"].get<std::string>().find("policy: denied send of 'closed.jobs'"),
            std::string::npos)
      << line->dump();
}

// The operator is this process too: admin_request() connects from here.
TEST_F(JsonLogTest, AdminPurgeCarriesTheKeyAndTheOperator) {
  Client c(ClientOptions{daemon_.address(), "log-test", seconds(30)});
  c.send_confirmed("purged.jobs", "x");
  const auto answer = admin_request(daemon_, json{{"request", "purge"}, {"key", "purged.jobs"}});
  ASSERT_EQ(answer.value("ok", false), true) << answer.dump();
  const auto line = wait_for("message", "admin: purge 'purged.jobs' dropped 1 messages");
  ASSERT_TRUE(line) << daemon_.log();
  expect_peer_is_us(*line);
  EXPECT_EQ((*line)["key"], "purged.jobs");
  EXPECT_FALSE(line->contains("errc"));
}

// The HELLO name is the peer's to choose, and the connected line (debug) quotes it.
TEST_F(JsonLogTest, ArbitraryBytesInAMessageStayValidJson) {
  RawPeer peer(daemon_.socket_path());
  const std::string name = "we\"ird\\\n\x01\xff\xc0\xafok\xe2\x82\xac";
  proto::ByteBuffer b;
  proto::append_hello(b, 1, proto::Hello{1, 1, name, ""});
  peer.write(b);
  const auto welcome = peer.next();
  ASSERT_TRUE(welcome);
  ASSERT_EQ(welcome->type, proto::FrameType::welcome);
  const auto line = wait_for("message", "name 'we\"ird");
  ASSERT_TRUE(line) << daemon_.log();
  expect_peer_is_us(*line);
  const std::string message = (*line)["message"];
  EXPECT_NE(
      message.find("name 'we\"ird\\\n\x01\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbdok\xe2\x82\xac'"),
      std::string::npos)
      << message;
}

// sd_journal_sendv drops lines silently when there is no journald: qbusd says so instead,
// and writes text.
TEST(LogFormatFlag, JournalWithoutJournaldFallsBackToText) {
  if (::access("/run/systemd/journal/socket", F_OK) == 0) {
    GTEST_SKIP() << "journald runs here; its lines would go there";
  }
  Daemon d(DaemonOptions{.extra_args = {"--log-format", "journal"}});
  EXPECT_TRUE(d.wait_for_log("warning --log-format journal: journald is not running")) << d.log();
  EXPECT_TRUE(d.wait_for_log(" info qbusd ")) << d.log();
}

TEST(LogFormatFlag, UnknownFormatIsAUsageErrorNamingTheOption) {
  TempDir dir;
  const auto r = run({qbusd_path(), "--log-format", "xml", "--socket", dir.file("s")});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--log-format"), std::string::npos) << r.err;
  const auto help = run({qbusd_path(), "--help"});
  EXPECT_NE(help.out.find("--log-format"), std::string::npos);
}

}  // namespace
}  // namespace qbus::testing
