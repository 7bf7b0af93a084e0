// Structured fields of a log line: the peer's pid and uid, the key and the error code it
// concerns (QBUS_PID, QBUS_UID, QBUS_KEY, QBUS_ERRC in the journal; pid, uid, key, errc in
// JSON lines). The edge is the lowest layer that logs, and it must not know about journald
// or JSON (docs/architecture.md, "Layers"): a log site hands its fields to log_with(),
// which makes them the thread's current fields for the length of one spdlog call, and the
// sinks qbusd installs (service/log_sinks.hpp) read them from current_log_fields(). A text
// sink ignores them, so the text output is what the line's message says and nothing more.
//
// This relies on spdlog calling its sinks synchronously, on the logging thread (qbusd's
// logger is not asynchronous). thread_local rather than a plain global: a helper thread
// that logs never sees the event loop's fields.
#pragma once

#include <spdlog/spdlog.h>

#include <cstdint>
#include <source_location>
#include <string_view>
#include <utility>

#include "qbus/errc.hpp"

namespace qbus::daemon {

struct LogFields {
  static constexpr std::int64_t kUnknown = -1;
  std::int64_t pid = kUnknown;  // unknown for TCP peers, which have no local process
  std::int64_t uid = kUnknown;
  std::string_view key;  // empty: none (no valid key is empty)
  Errc errc = Errc::ok;  // ok: none
};

namespace detail {
inline thread_local const LogFields* current_log_fields = nullptr;
}  // namespace detail

// The fields of the line being logged on this thread, or null for a line that has none.
inline const LogFields* current_log_fields() {
  return detail::current_log_fields;
}

// Makes `fields` the current ones until the scope ends, then restores what was there.
class LogFieldsScope {
 public:
  explicit LogFieldsScope(const LogFields& fields)
      : previous_(std::exchange(detail::current_log_fields, &fields)) {}
  ~LogFieldsScope() { detail::current_log_fields = previous_; }
  LogFieldsScope(const LogFieldsScope&) = delete;
  LogFieldsScope& operator=(const LogFieldsScope&) = delete;

 private:
  const LogFields* previous_;
};

// A level with the place of the log_with() call that names it (the journal's CODE_FILE,
// CODE_LINE and CODE_FUNC): a default argument is evaluated where the conversion happens,
// in the caller's line.
struct LogAt {
  // NOLINTNEXTLINE(google-explicit-constructor): the conversion is the point
  LogAt(spdlog::level::level_enum l, std::source_location w = std::source_location::current())
      : level(l), where(w) {}
  spdlog::level::level_enum level;
  std::source_location where;
};

// spdlog::log with fields. A line below the logger's level costs one comparison, as
// spdlog's own calls do: nothing is formatted and no field is looked at.
template <typename... Args>
void log_with(const LogFields& fields, LogAt at, spdlog::format_string_t<Args...> fmt,
              Args&&... args) {
  spdlog::logger* logger = spdlog::default_logger_raw();
  if (!logger->should_log(at.level)) return;
  const LogFieldsScope scope(fields);
  logger->log(spdlog::source_loc{at.where.file_name(), static_cast<int>(at.where.line()),
                                 at.where.function_name()},
              at.level, fmt, std::forward<Args>(args)...);
}

}  // namespace qbus::daemon
