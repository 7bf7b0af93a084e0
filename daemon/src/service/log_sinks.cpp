#include "service/log_sinks.hpp"

#include <spdlog/details/null_mutex.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <sys/stat.h>
#include <sys/uio.h>
// sd-journal.h otherwise makes sd_journal_sendv a macro that adds this file's own
// CODE_FILE, CODE_LINE and CODE_FUNC beside those of the line's call site.
#define SD_JOURNAL_SUPPRESS_LOCATION
#include <systemd/sd-journal.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <ctime>
#include <iterator>

namespace qbus::daemon {

std::optional<LogFormat> parse_log_format(std::string_view name) {
  if (name == "auto") return LogFormat::automatic;
  if (name == "text") return LogFormat::text;
  if (name == "json") return LogFormat::json;
  if (name == "journal") return LogFormat::journal;
  return std::nullopt;
}

bool names_journal_stream(const char* journal_stream, std::uint64_t dev, std::uint64_t ino) {
  if (journal_stream == nullptr) return false;
  const std::string_view text(journal_stream);
  const auto colon = text.find(':');
  if (colon == std::string_view::npos) return false;
  // from_chars takes no sign, space or base prefix: only the digits systemd writes.
  const auto number = [](std::string_view digits, std::uint64_t& value) {
    const char* end = digits.data() + digits.size();
    const auto r = std::from_chars(digits.data(), end, value);
    return !digits.empty() && r.ec == std::errc() && r.ptr == end;
  };
  std::uint64_t d = 0;
  std::uint64_t i = 0;
  return number(text.substr(0, colon), d) && number(text.substr(colon + 1), i) && d == dev &&
         i == ino;
}

bool stderr_is_journal() {
  struct stat st {};
  if (::fstat(STDERR_FILENO, &st) != 0) return false;
  return names_journal_stream(std::getenv("JOURNAL_STREAM"), st.st_dev, st.st_ino);
}

LogFormat resolve_log_format(LogFormat format) {
  if (format != LogFormat::automatic) return format;
  return stderr_is_journal() ? LogFormat::journal : LogFormat::text;
}

int syslog_priority(spdlog::level::level_enum level) {
  switch (level) {
    case spdlog::level::trace:
    case spdlog::level::debug:
      return 7;
    case spdlog::level::warn:
      return 4;
    case spdlog::level::err:
      return 3;
    case spdlog::level::critical:
      return 2;
    default:
      return 6;
  }
}

namespace {

// Where sd_journal_sendv sends (a unit with LogNamespace= finds its namespace's socket
// mounted here too).
constexpr const char* kJournalSocket = "/run/systemd/journal/socket";

std::string_view level_name(spdlog::level::level_enum level) {
  const auto name = spdlog::level::to_string_view(level);
  return {name.data(), name.size()};
}

// "%*": the line's syslog priority as journald reads it from the start of a stderr line
// ("<4>" for a warning). Only a number is parsed: "<warning>" would stay in the message and
// every line would get the stream's default priority, info.
class SyslogPriority final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    dest.push_back(static_cast<char>('0' + syslog_priority(msg.level)));
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<SyslogPriority>();
  }
};

std::unique_ptr<spdlog::formatter> text_formatter() {
  auto formatter = std::make_unique<spdlog::pattern_formatter>();
  // journald adds its own timestamps and shows the priority; elsewhere we add both.
  formatter->add_flag<SyslogPriority>('*').set_pattern(
      std::getenv("JOURNAL_STREAM") ? "<%*>%v" : "%Y-%m-%d %H:%M:%S.%e %l %v");
  return formatter;
}

class JsonFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    append_json_line(dest, msg.time, msg.level, {msg.payload.data(), msg.payload.size()},
                     current_log_fields());
  }
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JsonFormatter>();
  }
};

// The length of the valid UTF-8 sequence at the start of `s` (RFC 3629: no overlong
// forms, no surrogates, nothing above U+10FFFF), or 0.
std::size_t utf8_sequence(std::string_view s) {
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(s[i]); };
  const unsigned char b = byte(0);
  std::size_t n = 0;
  unsigned char lo = 0x80;
  unsigned char hi = 0xBF;  // the bounds of the second byte; the others are 80..BF
  if (b >= 0xC2 && b <= 0xDF) {
    n = 2;
  } else if (b >= 0xE0 && b <= 0xEF) {
    n = 3;
    if (b == 0xE0) lo = 0xA0;
    if (b == 0xED) hi = 0x9F;
  } else if (b >= 0xF0 && b <= 0xF4) {
    n = 4;
    if (b == 0xF0) lo = 0x90;
    if (b == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (s.size() < n || byte(1) < lo || byte(1) > hi) return 0;
  for (std::size_t i = 2; i < n; ++i) {
    if (byte(i) < 0x80 || byte(i) > 0xBF) return 0;
  }
  return n;
}

void append(spdlog::memory_buf_t& out, std::string_view text) {
  out.append(text.data(), text.data() + text.size());
}

void append_number(spdlog::memory_buf_t& out, std::int64_t n) {
  char digits[24];
  const auto r = std::to_chars(std::begin(digits), std::end(digits), n);
  out.append(digits, r.ptr);
}

// "2024-05-01T12:34:56.123456Z"
void append_time(spdlog::memory_buf_t& out, std::chrono::system_clock::time_point time) {
  using namespace std::chrono;
  const auto since = duration_cast<microseconds>(time.time_since_epoch());
  const auto secs = floor<seconds>(since);
  const std::time_t t = secs.count();
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char text[40];
  const auto n = std::snprintf(text, sizeof(text), "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ",
                               tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                               tm.tm_sec, static_cast<int>((since - secs).count()));
  out.append(text, text + n);
}

// Whatever sd_journal_sendv could not hand to journald goes to stderr, where a service's
// lines end up in the journal all the same (and elsewhere, on the terminal).
void write_stderr(int priority, std::string_view message) {
  std::string line = "<" + std::to_string(priority) + ">";
  line.append(message);
  line.push_back('\n');
  std::size_t done = 0;
  while (done < line.size()) {
    const ssize_t n = ::write(STDERR_FILENO, line.data() + done, line.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    done += static_cast<std::size_t>(n);
  }
}

class JournalSink final : public spdlog::sinks::base_sink<spdlog::details::null_mutex> {
 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    const auto fields = journal_fields(msg, current_log_fields());
    std::vector<iovec> iov;
    iov.reserve(fields.size());
    for (const auto& f : fields)
      iov.push_back(iovec{const_cast<char*>(f.data()), f.size()});
    if (sd_journal_sendv(iov.data(), static_cast<int>(iov.size())) < 0) {
      write_stderr(syslog_priority(msg.level), {msg.payload.data(), msg.payload.size()});
    }
  }
  void flush_() override {}
};

}  // namespace

void append_json_string(spdlog::memory_buf_t& out, std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  out.push_back('"');
  std::size_t i = 0;
  while (i < text.size()) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x80) {
      const std::size_t n = utf8_sequence(text.substr(i));
      if (n == 0) {
        append(out, "\\ufffd");
        ++i;
      } else {
        append(out, text.substr(i, n));
        i += n;
      }
      continue;
    }
    ++i;
    switch (c) {
      case '"':
        append(out, "\\\"");
        break;
      case '\\':
        append(out, "\\\\");
        break;
      case '\n':
        append(out, "\\n");
        break;
      case '\r':
        append(out, "\\r");
        break;
      case '\t':
        append(out, "\\t");
        break;
      default:
        if (c < 0x20 || c == 0x7F) {
          const char esc[] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 0xF]};
          out.append(esc, esc + sizeof(esc));
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
  }
  out.push_back('"');
}

void append_json_line(spdlog::memory_buf_t& out, std::chrono::system_clock::time_point time,
                      spdlog::level::level_enum level, std::string_view message,
                      const LogFields* fields) {
  append(out, "{\"time\":\"");
  append_time(out, time);
  append(out, "\",\"level\":");
  append_json_string(out, level_name(level));
  append(out, ",\"message\":");
  append_json_string(out, message);
  if (fields != nullptr) {
    if (fields->pid >= 0) {
      append(out, ",\"pid\":");
      append_number(out, fields->pid);
    }
    if (fields->uid >= 0) {
      append(out, ",\"uid\":");
      append_number(out, fields->uid);
    }
    if (!fields->key.empty()) {
      append(out, ",\"key\":");
      append_json_string(out, fields->key);
    }
    if (fields->errc != Errc::ok) {
      append(out, ",\"errc\":");
      append_json_string(out, errc_name(fields->errc));
    }
  }
  append(out, "}\n");
}

std::unique_ptr<spdlog::formatter> make_json_formatter() {
  return std::make_unique<JsonFormatter>();
}

std::vector<std::string> journal_fields(const spdlog::details::log_msg& msg,
                                        const LogFields* fields) {
  std::vector<std::string> out;
  out.reserve(10);
  out.push_back("MESSAGE=" + std::string(msg.payload.data(), msg.payload.size()));
  out.push_back("PRIORITY=" + std::to_string(syslog_priority(msg.level)));
  out.emplace_back("SYSLOG_IDENTIFIER=qbusd");
  if (!msg.source.empty()) {
    // The compiler's path may be relative to the build directory ("../../daemon/src/..."):
    // from the source tree's top it says the same and reads better.
    std::string_view file = msg.source.filename;
    while (file.starts_with("../"))
      file.remove_prefix(3);
    out.push_back("CODE_FILE=" + std::string(file));
    out.push_back("CODE_LINE=" + std::to_string(msg.source.line));
    if (msg.source.funcname != nullptr && *msg.source.funcname != '\0') {
      out.push_back("CODE_FUNC=" + std::string(msg.source.funcname));
    }
  }
  if (fields != nullptr) {
    if (fields->pid >= 0) out.push_back("QBUS_PID=" + std::to_string(fields->pid));
    if (fields->uid >= 0) out.push_back("QBUS_UID=" + std::to_string(fields->uid));
    if (!fields->key.empty()) out.push_back("QBUS_KEY=" + std::string(fields->key));
    if (fields->errc != Errc::ok)
      out.push_back("QBUS_ERRC=" + std::string(errc_name(fields->errc)));
  }
  return out;
}

std::shared_ptr<spdlog::logger> make_logger(LogFormat format, const std::string& level) {
  format = resolve_log_format(format);
  // sd_journal_sendv succeeds without sending when there is no journald to send to: asked
  // for by name where there is none, the lines would vanish. (auto chooses the journal only
  // when stderr is connected to it, and so it runs.)
  const bool no_journald = format == LogFormat::journal && ::access(kJournalSocket, F_OK) != 0;
  if (no_journald) format = LogFormat::text;
  std::shared_ptr<spdlog::logger> logger;
  switch (format) {
    case LogFormat::journal:
      logger = std::make_shared<spdlog::logger>("qbusd", std::make_shared<JournalSink>());
      break;
    case LogFormat::json:
      logger = std::make_shared<spdlog::logger>("qbusd",
                                                std::make_shared<spdlog::sinks::stderr_sink_st>());
      logger->set_formatter(make_json_formatter());
      break;
    default:
      logger = std::make_shared<spdlog::logger>("qbusd",
                                                std::make_shared<spdlog::sinks::stderr_sink_st>());
      logger->set_formatter(text_formatter());
      break;
  }
  logger->set_level(spdlog::level::from_str(level));
  logger->flush_on(spdlog::level::trace);
  if (no_journald) {
    logger->warn("--log-format journal: journald is not running (no {}); writing text to stderr",
                 kJournalSocket);
  }
  return logger;
}

}  // namespace qbus::daemon
