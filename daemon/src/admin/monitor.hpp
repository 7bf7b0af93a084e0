// `qbusctl monitor`: live traffic streamed to admin connections that asked for it
// (docs/admin.md, "monitor"). The AdminServer parses the request and hands the connection
// over; from then on the connection gets one JSON line per matching event.
//
// The bus never waits for a monitor. The Server's tap is installed only while a monitor is
// attached (tap.hpp: otherwise a message pays one null test). Each monitor has
// kMaxPendingBytes of lines waiting to be written; an event that does not fit is dropped
// and counted, and the count is reported in the stream (an event "dropped") once the
// monitor has read. A non-matching event costs a pattern test; a matching one, its line.
//
// Thread-safety: none; the broker's io_context thread, like the Server.
#pragma once

#include <asio.hpp>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "net/server.hpp"
#include "net/tap.hpp"

namespace qbus::daemon {

// For the metrics (qbus_monitor_*).
struct MonitorCounters {
  std::uint64_t sessions = 0;
  std::uint64_t events_sent = 0;
  std::uint64_t events_dropped = 0;
};

class Monitor final : public TapListener {
 public:
  static constexpr std::size_t kMaxMonitors = 16;
  static constexpr std::size_t kMaxPendingBytes = 256 * 1024;
  static constexpr std::size_t kMaxPayloadBytes = 1024;
  static constexpr std::size_t kDefaultPayloadBytes = 64;

  explicit Monitor(Server& server) : server_(server) {}
  ~Monitor() override;
  Monitor(const Monitor&) = delete;
  Monitor& operator=(const Monitor&) = delete;

  // Whether another monitor may attach now.
  bool has_room() const { return streams_.size() < kMaxMonitors; }
  // Streams matching events to `socket` from now on, after `first_line` (the answer to the
  // request, newline included). `pattern` (a glob of glob.hpp, checked by the caller; empty:
  // everything) is matched against a message's queue key or subject, or "@PID" for a direct
  // message (its target's pid, or "@client:ID"); at most `payload_bytes` of each payload
  // are shown.
  void attach(asio::local::stream_protocol::socket socket, std::string pattern,
              std::size_t payload_bytes, std::string first_line);
  // Closes every monitor (shutdown).
  void stop();
  const MonitorCounters& counters() const { return counters_; }

  void on_message(const TapEvent& e) override;

 private:
  class Stream;
  void detach(Stream* s);

  Server& server_;
  std::vector<std::shared_ptr<Stream>> streams_;
  MonitorCounters counters_;
};

// One event as its JSON line (newline included), appended to `out`; `payload_bytes` of the
// payload are shown. Pure; for tests.
void append_event_line(std::string& out, const TapEvent& e, std::size_t payload_bytes);

}  // namespace qbus::daemon
