// Where qbusd's log lines go, in which form (`--log-format`):
//   text     one line per message on stderr, as qbusd always wrote them: with a timestamp
//            and the level, or, with JOURNAL_STREAM set (systemd), only a "<N>" syslog
//            priority for journald to read;
//   journal  straight to journald (sd_journal_sendv), with MESSAGE, PRIORITY,
//            SYSLOG_IDENTIFIER=qbusd, CODE_FILE/CODE_LINE/CODE_FUNC where the call site
//            gave them, and the line's fields as QBUS_PID, QBUS_UID, QBUS_KEY, QBUS_ERRC;
//   json     one JSON object per line on stderr, for collectors other than journald:
//            time (RFC 3339, UTC, microseconds), level, message, and the fields as pid,
//            uid, key and errc;
//   auto     journal when stderr is connected to the journal, else text.
// The fields come from the log site through net/log_fields.hpp.
#pragma once

#include <spdlog/formatter.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "net/log_fields.hpp"

namespace qbus::daemon {

enum class LogFormat { automatic, text, json, journal };

// "auto", "text", "json" or "journal"; nullopt for anything else.
std::optional<LogFormat> parse_log_format(std::string_view name);

// Whether `journal_stream` (JOURNAL_STREAM's value: "DEVICE:INODE" in decimal, as systemd
// sets it for a service whose stdout or stderr it connected to journald) names the stream
// whose fstat(2) gave `dev` and `ino`. Null, empty or malformed: false.
bool names_journal_stream(const char* journal_stream, std::uint64_t dev, std::uint64_t ino);
// The same for this process's stderr. Only the comparison tells: JOURNAL_STREAM is inherited
// by whatever qbusd is started from, and stderr may have been redirected since
// (systemd.exec(5), "JOURNAL_STREAM").
bool stderr_is_journal();

// `automatic` decided (journal or text); anything else as it is.
LogFormat resolve_log_format(LogFormat format);

// The logger "qbusd" writing in `format` (resolved first), at `level` (a --log-level name).
std::shared_ptr<spdlog::logger> make_logger(LogFormat format, const std::string& level);

// The syslog priority (0-7) journald stores for a line of `level`.
int syslog_priority(spdlog::level::level_enum level);

// `text` as a JSON string, quotes included. Quotes, backslashes and control characters are
// escaped, and every byte that is not part of valid UTF-8 becomes U+FFFD: a process name
// or a client's HELLO name is whatever bytes the peer chose, and the line must stay JSON.
void append_json_string(spdlog::memory_buf_t& out, std::string_view text);
// One JSON line, with its '\n'.
void append_json_line(spdlog::memory_buf_t& out, std::chrono::system_clock::time_point time,
                      spdlog::level::level_enum level, std::string_view message,
                      const LogFields* fields);
// The formatter of the json format: append_json_line of each message, with the fields
// current while it is logged.
std::unique_ptr<spdlog::formatter> make_json_formatter();

// The journal's "NAME=value" fields of one line, in the order they are sent.
std::vector<std::string> journal_fields(const spdlog::details::log_msg& msg,
                                        const LogFields* fields);

}  // namespace qbus::daemon
