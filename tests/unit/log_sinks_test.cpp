// qbusd's log formats (daemon/src/service/log_sinks.hpp): the JSON line (its fields, its
// escaping of whatever bytes a message holds, the levels), the journal's fields, the fields
// reaching a sink from log_with() and no further, and the detection of a journal stream.
#include "service/log_sinks.hpp"

#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/ostream_sink.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <algorithm>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

namespace qbus::daemon {
namespace {

using std::chrono::system_clock;

// 2024-05-01 12:34:56.123456 UTC (and 789 ns, which a microsecond clock drops).
system_clock::time_point sample_time() {
  using namespace std::chrono;
  const auto day = sys_days{year{2024} / May / 1};
  return time_point_cast<system_clock::duration>(day + 12h + 34min + 56s + 123456789ns);
}

std::string json_line(std::string_view message, const LogFields* fields,
                      spdlog::level::level_enum level = spdlog::level::warn) {
  spdlog::memory_buf_t buf;
  append_json_line(buf, sample_time(), level, message, fields);
  return fmt::to_string(buf);
}

std::string json_string(std::string_view text) {
  spdlog::memory_buf_t buf;
  append_json_string(buf, text);
  return fmt::to_string(buf);
}

TEST(JsonLine, CarriesTimeLevelMessageAndEveryField) {
  const LogFields f{.pid = 4242, .uid = 1000, .key = "jobs.high", .errc = Errc::malformed_frame};
  EXPECT_EQ(json_line("client 7 (pid 4242 uid 1000 comm 'w'): malformed_frame: bad", &f),
            R"({"time":"2024-05-01T12:34:56.123456Z","level":"warning",)"
            R"("message":"client 7 (pid 4242 uid 1000 comm 'w'): malformed_frame: bad",)"
            R"("pid":4242,"uid":1000,"key":"jobs.high","errc":"malformed_frame"})"
            "\n");
}

TEST(JsonLine, LeavesOutWhatIsNotKnown) {
  EXPECT_EQ(json_line("qbusd stopped", nullptr, spdlog::level::info),
            R"({"time":"2024-05-01T12:34:56.123456Z","level":"info","message":"qbusd stopped"})"
            "\n");
  // A TCP peer: no pid, no uid; a key without an error code; uid 0 is a uid.
  const LogFields tcp{.errc = Errc::auth_failed};
  EXPECT_EQ(nlohmann::json::parse(json_line("m", &tcp)),
            (nlohmann::json{{"time", "2024-05-01T12:34:56.123456Z"},
                            {"level", "warning"},
                            {"message", "m"},
                            {"errc", "auth_failed"}}));
  const LogFields root{.pid = 1, .uid = 0, .key = "k"};
  const auto j = nlohmann::json::parse(json_line("m", &root));
  EXPECT_EQ(j["uid"], 0);
  EXPECT_EQ(j["key"], "k");
  EXPECT_FALSE(j.contains("errc"));
}

TEST(JsonLine, NamesEveryLevel) {
  const std::vector<std::pair<spdlog::level::level_enum, std::string>> levels = {
      {spdlog::level::trace, "trace"}, {spdlog::level::debug, "debug"},
      {spdlog::level::info, "info"},   {spdlog::level::warn, "warning"},
      {spdlog::level::err, "error"},   {spdlog::level::critical, "critical"}};
  for (const auto& [level, name] : levels) {
    EXPECT_EQ(nlohmann::json::parse(json_line("m", nullptr, level))["level"], name);
  }
}

TEST(JsonLine, TimeIsUtcWithMicrosecondsAtEveryEdge) {
  using namespace std::chrono;
  spdlog::memory_buf_t buf;
  append_json_line(buf, system_clock::time_point{}, spdlog::level::info, "", nullptr);
  EXPECT_NE(fmt::to_string(buf).find(R"("time":"1970-01-01T00:00:00.000000Z")"), std::string::npos);
  buf.clear();
  const auto last = sys_days{year{1999} / December / 31} + 23h + 59min + 59s + 999999us;
  append_json_line(buf, time_point_cast<system_clock::duration>(last), spdlog::level::info, "",
                   nullptr);
  EXPECT_NE(fmt::to_string(buf).find(R"("time":"1999-12-31T23:59:59.999999Z")"), std::string::npos);
}

TEST(JsonString, EscapesQuotesBackslashesAndControlCharacters) {
  EXPECT_EQ(json_string(R"(say "hi" \ bye)"), R"("say \"hi\" \\ bye")");
  EXPECT_EQ(json_string("a\nb\rc\td"), R"("a\nb\rc\td")");
  EXPECT_EQ(json_string(std::string("\x00\x01\x1f\x7f", 4)), R"("\u0000\u0001\u001f\u007f")");
  EXPECT_EQ(json_string("\b\f"), R"("\u0008\u000c")");
  EXPECT_EQ(json_string(""), R"("")");
  EXPECT_EQ(json_string("/ < > & '"), R"("/ < > & '")");
}

TEST(JsonString, KeepsValidUtf8AndReplacesEveryInvalidByte) {
  // Two, three and four bytes, and the edges of each range.
  for (const std::string ok :
       {"\xc2\x80", "\xdf\xbf", "\xe2\x82\xac", "\xe0\xa0\x80", "\xed\x9f\xbf", "\xee\x80\x80",
        "\xef\xbf\xbf", "\xf0\x9f\x98\x80", "\xf0\x90\x80\x80", "\xf4\x8f\xbf\xbf"}) {
    EXPECT_EQ(json_string(ok), "\"" + ok + "\"") << ok;
  }
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"\xff", R"("\ufffd")"},
      {"\x80", R"("\ufffd")"},
      {"a\xfe"
       "b",
       R"("a\ufffdb")"},
      {"\xc0\xaf", R"("\ufffd\ufffd")"},                      // overlong '/'
      {"\xc1\xbf", R"("\ufffd\ufffd")"},                      // overlong
      {"\xe0\x80\xaf", R"("\ufffd\ufffd\ufffd")"},            // overlong, three bytes
      {"\xed\xa0\x80", R"("\ufffd\ufffd\ufffd")"},            // a surrogate
      {"\xf4\x90\x80\x80", R"("\ufffd\ufffd\ufffd\ufffd")"},  // above U+10FFFF
      {"\xf5\x80\x80\x80", R"("\ufffd\ufffd\ufffd\ufffd")"},
      {"\xe2\x82", R"("\ufffd\ufffd")"},  // cut short at the end
      {"\xe2\x82"
       "\"",
       R"("\ufffd\ufffd\"")"},  // cut short by a quote
      {"\xf0\x9f\x98"
       "x",
       R"("\ufffd\ufffd\ufffdx")"},
  };
  for (const auto& [in, out] : bad) {
    EXPECT_EQ(json_string(in), out);
  }
}

// Whatever the bytes, the line is one line of valid JSON that gives the text back where
// it was valid UTF-8. nlohmann's parser rejects invalid UTF-8 itself.
TEST(JsonLine, IsValidJsonForEveryByte) {
  std::string all;
  for (int b = 0; b < 256; ++b)
    all.push_back(static_cast<char>(b));
  const std::string name = "comm '\"\xff\n'";
  const LogFields f{.pid = 1, .uid = 2, .key = all};
  const auto line = json_line(all + name, &f);
  ASSERT_EQ(std::count(line.begin(), line.end(), '\n'), 1);
  ASSERT_EQ(line.back(), '\n');
  const auto j = nlohmann::json::parse(line);
  const std::string message = j["message"];
  EXPECT_EQ(message.substr(0, 0x7f), all.substr(0, 0x7f));
  EXPECT_NE(message.find("comm '\"\xef\xbf\xbd\n'"), std::string::npos);
  EXPECT_EQ(j["key"], message.substr(0, message.size() - (name.size() + 2)));
}

// A logger as qbusd's, on a stream instead of stderr.
class JsonLogger : public ::testing::Test {
 protected:
  JsonLogger() : logger_("qbusd", std::make_shared<spdlog::sinks::ostream_sink_st>(out_)) {
    logger_.set_formatter(make_json_formatter());
    logger_.set_level(spdlog::level::info);
    previous_ = spdlog::default_logger();
    spdlog::set_default_logger(std::shared_ptr<spdlog::logger>(&logger_, [](auto*) {}));
  }
  ~JsonLogger() override { spdlog::set_default_logger(previous_); }

  std::vector<nlohmann::json> lines() {
    std::vector<nlohmann::json> v;
    std::istringstream in(out_.str());
    for (std::string line; std::getline(in, line);)
      v.push_back(nlohmann::json::parse(line));
    return v;
  }

  std::ostringstream out_;
  spdlog::logger logger_;
  std::shared_ptr<spdlog::logger> previous_;
};

TEST_F(JsonLogger, FieldsReachTheLineTheyWereGivenWithAndNoOther) {
  const std::string key = "orders";
  log_with(LogFields{.pid = 10, .uid = 20, .key = key, .errc = Errc::permission_denied},
           spdlog::level::warn, "denied {} of '{}'", "send", key);
  spdlog::info("a line without fields");
  log_with(LogFields{.pid = 11}, spdlog::level::debug, "below the level: {}", 1);
  const auto v = lines();
  ASSERT_EQ(v.size(), 2u) << out_.str();
  EXPECT_EQ(v[0]["message"], "denied send of 'orders'");
  EXPECT_EQ(v[0]["pid"], 10);
  EXPECT_EQ(v[0]["uid"], 20);
  EXPECT_EQ(v[0]["key"], "orders");
  EXPECT_EQ(v[0]["errc"], "permission_denied");
  EXPECT_EQ(v[1]["message"], "a line without fields");
  EXPECT_FALSE(v[1].contains("pid"));
  EXPECT_EQ(current_log_fields(), nullptr);
}

TEST_F(JsonLogger, ScopesNestAndRestore) {
  const LogFields outer{.pid = 1};
  const LogFieldsScope scope(outer);
  log_with(LogFields{.pid = 2}, spdlog::level::info, "inner");
  EXPECT_EQ(current_log_fields(), &outer);
  spdlog::info("outer");
  const auto v = lines();
  ASSERT_EQ(v.size(), 2u);
  EXPECT_EQ(v[0]["pid"], 2);
  EXPECT_EQ(v[1]["pid"], 1);
}

// Keeps what the journal would be sent for each line.
class JournalCapture final : public spdlog::sinks::base_sink<spdlog::details::null_mutex> {
 public:
  std::vector<std::vector<std::string>> sent;

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    sent.push_back(journal_fields(msg, current_log_fields()));
  }
  void flush_() override {}
};

TEST(JournalFields, MessagePriorityIdentifierCodeAndQbusFields) {
  auto capture = std::make_shared<JournalCapture>();
  auto logger = std::make_shared<spdlog::logger>("qbusd", capture);
  logger->set_level(spdlog::level::trace);
  const auto previous = spdlog::default_logger();
  spdlog::set_default_logger(logger);
  const int line = __LINE__ + 1;
  log_with(LogFields{.pid = 5, .uid = 0, .key = "a.b", .errc = Errc::bad_magic}, spdlog::level::err,
           "two\nlines");
  log_with(LogFields{.uid = 7}, spdlog::level::debug, "tcp");
  spdlog::warn("plain");
  spdlog::set_default_logger(previous);

  ASSERT_EQ(capture->sent.size(), 3u);
  const auto& f = capture->sent[0];
  ASSERT_GE(f.size(), 8u);
  EXPECT_EQ(f[0], "MESSAGE=two\nlines");
  EXPECT_EQ(f[1], "PRIORITY=3");
  EXPECT_EQ(f[2], "SYSLOG_IDENTIFIER=qbusd");
  EXPECT_TRUE(f[3].starts_with("CODE_FILE=") && f[3].ends_with("log_sinks_test.cpp")) << f[3];
  EXPECT_EQ(f[3].find("../"), std::string::npos) << f[3];
  EXPECT_EQ(f[4], "CODE_LINE=" + std::to_string(line));
  EXPECT_TRUE(f[5].starts_with("CODE_FUNC=")) << f[5];
  EXPECT_EQ(std::vector<std::string>(f.begin() + 6, f.end()),
            (std::vector<std::string>{"QBUS_PID=5", "QBUS_UID=0", "QBUS_KEY=a.b",
                                      "QBUS_ERRC=bad_magic"}));
  const auto& tcp = capture->sent[1];
  EXPECT_EQ(tcp[1], "PRIORITY=7");
  EXPECT_EQ(tcp.back(), "QBUS_UID=7");
  EXPECT_EQ(std::count_if(tcp.begin(), tcp.end(),
                          [](const std::string& s) { return s.starts_with("QBUS_"); }),
            1);
  // spdlog's own calls name no place and no fields.
  EXPECT_EQ(capture->sent[2],
            (std::vector<std::string>{"MESSAGE=plain", "PRIORITY=4", "SYSLOG_IDENTIFIER=qbusd"}));
}

TEST(SyslogPriority, FollowsTheLevel) {
  EXPECT_EQ(syslog_priority(spdlog::level::trace), 7);
  EXPECT_EQ(syslog_priority(spdlog::level::debug), 7);
  EXPECT_EQ(syslog_priority(spdlog::level::info), 6);
  EXPECT_EQ(syslog_priority(spdlog::level::warn), 4);
  EXPECT_EQ(syslog_priority(spdlog::level::err), 3);
  EXPECT_EQ(syslog_priority(spdlog::level::critical), 2);
}

TEST(LogFormat, ParsesItsFourNames) {
  EXPECT_EQ(parse_log_format("auto"), LogFormat::automatic);
  EXPECT_EQ(parse_log_format("text"), LogFormat::text);
  EXPECT_EQ(parse_log_format("json"), LogFormat::json);
  EXPECT_EQ(parse_log_format("journal"), LogFormat::journal);
  EXPECT_EQ(parse_log_format("JSON"), std::nullopt);
  EXPECT_EQ(parse_log_format(""), std::nullopt);
}

TEST(JournalStream, MatchesOnlyTheSameDeviceAndInode) {
  EXPECT_TRUE(names_journal_stream("8:12345", 8, 12345));
  EXPECT_TRUE(names_journal_stream("18446744073709551615:1", UINT64_MAX, 1));
  EXPECT_FALSE(names_journal_stream("8:12345", 8, 12346));
  EXPECT_FALSE(names_journal_stream("8:12345", 9, 12345));
  for (const char* bad : {"", "8", "8:", ":12345", "8:12345x", "8:12345:1", "-8:12345", " 8:12345",
                          "8: 12345", "8:+12345", "0x8:12345", "18446744073709551616:12345"}) {
    EXPECT_FALSE(names_journal_stream(bad, 8, 12345)) << bad;
  }
  EXPECT_FALSE(names_journal_stream(nullptr, 0, 0));
}

// JOURNAL_STREAM as systemd would set it for this process's stderr, then stale (inherited
// by a process whose stderr went elsewhere), then unset.
TEST(JournalStream, AutoIsJournalOnlyWhenStderrIsTheNamedStream) {
  struct stat st {};
  ASSERT_EQ(::fstat(STDERR_FILENO, &st), 0);
  const char* saved = std::getenv("JOURNAL_STREAM");
  const std::string kept = saved ? saved : "";
  const std::string ours = std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino);
  ASSERT_EQ(::setenv("JOURNAL_STREAM", ours.c_str(), 1), 0);
  EXPECT_TRUE(stderr_is_journal());
  EXPECT_EQ(resolve_log_format(LogFormat::automatic), LogFormat::journal);
  EXPECT_EQ(resolve_log_format(LogFormat::json), LogFormat::json);
  EXPECT_EQ(resolve_log_format(LogFormat::text), LogFormat::text);
  const std::string other = std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino + 1);
  ASSERT_EQ(::setenv("JOURNAL_STREAM", other.c_str(), 1), 0);
  EXPECT_FALSE(stderr_is_journal());
  EXPECT_EQ(resolve_log_format(LogFormat::automatic), LogFormat::text);
  ASSERT_EQ(::unsetenv("JOURNAL_STREAM"), 0);
  EXPECT_FALSE(stderr_is_journal());
  EXPECT_EQ(resolve_log_format(LogFormat::automatic), LogFormat::text);
  EXPECT_EQ(resolve_log_format(LogFormat::journal), LogFormat::journal);
  if (saved) ::setenv("JOURNAL_STREAM", kept.c_str(), 1);
}

}  // namespace
}  // namespace qbus::daemon
