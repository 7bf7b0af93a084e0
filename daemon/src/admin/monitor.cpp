#include "admin/monitor.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>
#include <string_view>
#include <utility>

#include "admin/admin_server.hpp"
#include "admin/glob.hpp"
#include "net/connection.hpp"
#include "qbus/proto/codec.hpp"

namespace qbus::daemon {
namespace {

constexpr std::string_view kKindNames[] = {"send", "request", "direct", "publish", "deliver"};

void append_number(std::string& out, std::uint64_t v) {
  char buf[24];
  out.append(buf, std::to_chars(buf, buf + sizeof(buf), v).ptr);
}

// A JSON string of arbitrary bytes: control bytes and bytes above 0x7E are written as
// \u00XX, so that the line is always valid JSON, whatever a process calls itself.
void append_json_string(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out.push_back('"');
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(c));
    } else if (c < 0x20 || c > 0x7E) {
      out.append("\\u00");
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xF]);
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  out.push_back('"');
}

// The first bytes of a payload as text: printable ASCII as it is, every other byte as the
// four characters \xNN (a backslash itself as \\), so that binary payloads stay readable
// on one line and the shown text says what the bytes were.
void append_payload(std::string& out, broker::Bytes payload, std::size_t limit) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string text;
  text.reserve(std::min(payload.size(), limit) * 2);
  for (std::size_t i = 0; i < payload.size() && i < limit; ++i) {
    const auto c = static_cast<unsigned char>(payload[i]);
    if (c == '\\') {
      text.append("\\\\");
    } else if (c >= 0x20 && c <= 0x7E) {
      text.push_back(static_cast<char>(c));
    } else {
      text.append("\\x");
      text.push_back(kHex[c >> 4]);
      text.push_back(kHex[c & 0xF]);
    }
  }
  append_json_string(out, text);
}

void append_time(std::string& out) {
  const auto now = std::chrono::system_clock::now();
  const auto secs = std::chrono::system_clock::to_time_t(now);
  const auto micros = std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch() %
                                                                            std::chrono::seconds(1))
                          .count();
  std::tm tm{};
  ::gmtime_r(&secs, &tm);
  char buf[40];
  const std::size_t n = std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
  out.append(buf, n);
  char frac[16];
  std::snprintf(frac, sizeof(frac), ".%06lldZ", static_cast<long long>(micros));
  out.append(frac);
}

// "@PID" or "@client:ID": what a pattern is matched against for a message without a key.
std::string direct_target(const TapEvent& e) {
  std::string t = "@";
  if (e.kind == TapKind::deliver) {
    // A direct message delivered: the receiver is the target.
    const auto& id = e.client.identity();
    if (id.tcp) {
      t.append("client:");
      append_number(t, e.client.id());
    } else {
      append_number(t, id.pid);
    }
    return t;
  }
  if (e.target_is_client) t.append("client:");
  append_number(t, e.target);
  return t;
}

bool matches(const std::string& pattern, const TapEvent& e) {
  if (pattern.empty()) return true;
  if (!e.key.empty()) return glob_matches(pattern, e.key);
  return glob_matches(pattern, direct_target(e));
}

}  // namespace

void append_event_line(std::string& out, const TapEvent& e, std::size_t payload_bytes) {
  const auto& id = e.client.identity();
  out.append("{\"time\":\"");
  append_time(out);
  out.append("\",\"event\":\"").append(kKindNames[static_cast<int>(e.kind)]);
  out.append("\",\"client\":");
  append_number(out, e.client.id());
  out.append(",\"pid\":");
  append_number(out, id.pid);
  out.append(",\"uid\":");
  append_number(out, id.uid);
  out.append(",\"comm\":");
  append_json_string(out, e.client.stats().comm);
  out.append(",\"transport\":\"").append(e.client.transport()).append("\"");
  if (!e.key.empty()) {
    out.append(",\"key\":");
    append_json_string(out, e.key);
  } else {
    out.append(",\"target\":");
    append_json_string(out, direct_target(e));
  }
  if (e.reply) out.append(",\"reply\":true");
  if (e.sender) {
    out.append(",\"from_pid\":");
    append_number(out, e.sender->pid);
    out.append(",\"from_uid\":");
    append_number(out, e.sender->uid);
  }
  out.append(",\"size\":");
  append_number(out, e.size);
  if (e.region) {
    out.append(",\"region\":true");
  } else {
    out.append(",\"payload\":");
    append_payload(out, e.payload, payload_bytes);
    out.append(",\"truncated\":").append(e.payload.size() > payload_bytes ? "true" : "false");
  }
  if (e.refused) out.append(",\"refused\":true");
  out.append("}\n");
}

// One attached monitor: its socket, its filter and the lines waiting to be written. Reads
// only to see the peer go.
class Monitor::Stream : public std::enable_shared_from_this<Stream> {
 public:
  Stream(Monitor& monitor, asio::local::stream_protocol::socket socket, std::string pattern,
         std::size_t payload_bytes)
      : monitor_(monitor),
        socket_(std::move(socket)),
        pattern_(std::move(pattern)),
        payload_bytes_(payload_bytes) {}

  void start(std::string first_line) {
    pending_ = std::move(first_line);
    write();
    watch();
  }
  // The event, if it matches and fits.
  void offer(const TapEvent& e) {
    if (closed_ || !matches(pattern_, e)) return;
    if (pending_.size() >= kMaxPendingBytes) {
      ++dropped_;
      ++monitor_.counters_.events_dropped;
      return;
    }
    append_event_line(pending_, e, payload_bytes_);
    ++monitor_.counters_.events_sent;
    if (!writing_ && !scheduled_) {
      // Written after the batch that made the event, with the rest of its events: one
      // write per batch, not one per message.
      scheduled_ = true;
      asio::post(socket_.get_executor(), [self = shared_from_this()] {
        self->scheduled_ = false;
        if (!self->writing_) self->write();
      });
    }
  }
  void close() {
    if (closed_) return;
    closed_ = true;
    asio::error_code ec;
    socket_.close(ec);
    monitor_.detach(this);
  }

 private:
  void write() {
    if (dropped_ != 0) {
      // Said once the monitor has read, before what came after the loss.
      std::string note = "{\"event\":\"dropped\",\"count\":";
      append_number(note, dropped_);
      note.append("}\n");
      pending_.insert(0, note);
      dropped_ = 0;
    }
    if (pending_.empty() || closed_) return;
    out_.clear();
    std::swap(out_, pending_);
    writing_ = true;
    asio::async_write(socket_, asio::buffer(out_),
                      [self = shared_from_this()](const asio::error_code& ec, std::size_t) {
                        self->writing_ = false;
                        if (ec) {
                          self->close();
                          return;
                        }
                        self->write();
                      });
  }
  void watch() {
    socket_.async_read_some(asio::buffer(in_),
                            [self = shared_from_this()](const asio::error_code& ec, std::size_t) {
                              if (ec) {
                                self->close();  // the monitor went away
                                return;
                              }
                              self->watch();  // anything it sends is ignored
                            });
  }

  Monitor& monitor_;
  asio::local::stream_protocol::socket socket_;
  std::string pattern_;
  std::size_t payload_bytes_;
  std::string pending_;  // lines not yet handed to the socket, at most about kMaxPendingBytes
  std::string out_;      // the lines being written
  bool writing_ = false;
  bool scheduled_ = false;  // a write is posted to run after this batch
  bool closed_ = false;
  std::uint64_t dropped_ = 0;  // since the last note
  char in_[256];
};

Monitor::~Monitor() {
  stop();
}

void Monitor::attach(asio::local::stream_protocol::socket socket, std::string pattern,
                     std::size_t payload_bytes, std::string first_line) {
  auto s = std::make_shared<Stream>(*this, std::move(socket), std::move(pattern),
                                    std::min(payload_bytes, kMaxPayloadBytes));
  streams_.push_back(s);
  counters_.sessions = streams_.size();
  server_.set_tap(this);
  s->start(std::move(first_line));
}

void Monitor::stop() {
  for (auto& s : std::vector<std::shared_ptr<Stream>>(streams_))
    s->close();
  streams_.clear();
  server_.set_tap(nullptr);
}

void Monitor::detach(Stream* s) {
  std::erase_if(streams_, [s](const std::shared_ptr<Stream>& p) { return p.get() == s; });
  counters_.sessions = streams_.size();
  if (streams_.empty()) server_.set_tap(nullptr);
}

void Monitor::on_message(const TapEvent& e) {
  for (const auto& s : streams_)
    s->offer(e);
}

nlohmann::json AdminServer::start_monitor(const nlohmann::json& req) {
  using json = nlohmann::json;
  const auto refuse = [](std::string_view code, std::string message) {
    return json{{"ok", false}, {"error", {{"code", code}, {"message", std::move(message)}}}};
  };
  MonitorRequest m;
  if (req.contains("pattern")) {
    if (!req["pattern"].is_string()) {
      return refuse("malformed_request", "\"monitor\" takes a string \"pattern\"");
    }
    m.pattern = req["pattern"];
    if (auto problem = pattern_problem(m.pattern, proto::kMaxKeySize); !problem.empty()) {
      return refuse("invalid_argument",
                    "bad pattern '" + m.pattern.substr(0, 64) + "': " + problem);
    }
  }
  if (req.contains("payload_bytes")) {
    const json& n = req["payload_bytes"];
    if (!n.is_number_unsigned() || n.get<std::uint64_t>() > Monitor::kMaxPayloadBytes) {
      return refuse("invalid_argument", "\"payload_bytes\" must be an integer 0.." +
                                            std::to_string(Monitor::kMaxPayloadBytes));
    }
    m.payload_bytes = n.get<std::size_t>();
  }
  if (!monitor_.has_room()) {
    return refuse("too_many_connections",
                  std::to_string(Monitor::kMaxMonitors) + " monitors are attached already");
  }
  spdlog::info("admin: monitor attached (pattern '{}')", m.pattern);
  json answer{{"ok", true},
              {"monitor", {{"pattern", m.pattern}, {"payload_bytes", m.payload_bytes}}}};
  pending_monitor_ = std::move(m);
  return answer;
}

}  // namespace qbus::daemon
