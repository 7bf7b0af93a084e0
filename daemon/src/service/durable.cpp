#include "service/durable.hpp"

#include <pwd.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <system_error>

namespace qbus::daemon {

std::string default_state_dir(bool system_instance) {
  // systemd may list several, separated by colons; the unit names one.
  if (const char* d = std::getenv("STATE_DIRECTORY"); d && *d) {
    const std::string s(d);
    return s.substr(0, s.find(':'));
  }
  if (system_instance) return "/var/lib/qbus";
  if (const char* x = std::getenv("XDG_STATE_HOME"); x && *x == '/') {
    return std::string(x) + "/qbus";
  }
  const char* home = std::getenv("HOME");
  std::string h = home && *home == '/' ? home : "";
  if (h.empty()) {
    if (const passwd* pw = ::getpwuid(::getuid()); pw && pw->pw_dir) h = pw->pw_dir;
  }
  return h.empty() ? std::string() : h + "/.local/state/qbus";
}

std::unique_ptr<storage::Journal> open_journal(const config::Config& config, Server& server,
                                               storage::StorageStatus& status) {
  const auto off = [&](std::string why) -> std::unique_ptr<storage::Journal> {
    status.error = std::move(why);
    spdlog::warn("durable queues are off: {}", status.error);
    server.broker().set_journal(nullptr, status.error);
    return nullptr;
  };
  if (status.dir.empty()) return off("no state directory (set storage.dir or --state-dir)");
  std::error_code ec;
  std::filesystem::create_directories(status.dir, ec);
  if (ec) return off("cannot create state directory " + status.dir + ": " + ec.message());
  storage::IoStatus io;
  auto dir = storage::open_posix_dir(status.dir, io);
  if (!dir) return off("state directory " + io.message());
  if (::access(status.dir.c_str(), W_OK) != 0) {
    return off("state directory " + status.dir + " is not writable");
  }
  storage::JournalSettings settings;
  settings.fsync = config.storage.fsync;
  settings.batch_ms = config.storage.batch_ms;
  settings.segment_bytes = config.storage.segment_bytes;
  std::string error;
  auto journal = storage::Journal::open(std::move(dir), settings, error);
  if (!journal) return off(status.dir + ": " + error);
  if (!journal->recover(server.broker(), broker::Clock::now(), status.recovery, error)) {
    return off(error);
  }
  const storage::RecoveryStats& r = status.recovery;
  for (const std::string& w : r.warnings)
    spdlog::warn("journal: {}", w);
  spdlog::info(
      "journal {}: recovered {} durable queues and {} messages ({} bytes, {} redelivered) "
      "from {} segments ({} records) in {} ms",
      status.dir, r.queues, r.messages, r.bytes, r.redelivered, r.segments, r.records,
      r.milliseconds);
  status.journal = journal.get();
  server.attach_journal(journal.get());
  return journal;
}

}  // namespace qbus::daemon
