// The Prometheus endpoint's answer: the text exposition format (version 0.0.4) rendered
// from the Server's and the Broker's state. docs/admin.md lists the metrics.
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <string_view>
#include <utility>
#include <vector>

#include "admin/metrics_server.hpp"
#include "net/connection.hpp"

namespace qbus::daemon {
namespace {

constexpr std::string_view kOther = "(other)";  // no valid key or uid looks like this

using Label = std::pair<std::string_view, std::string_view>;

// Appends families and their samples; a family's samples follow its HELP and TYPE lines.
class Exposition {
 public:
  explicit Exposition(std::string& out) : out_(out) {}

  void family(std::string_view name, std::string_view type, std::string_view help) {
    name_ = name;
    out_.append("# HELP ").append(name).append(" ").append(help).append("\n# TYPE ");
    out_.append(name).append(" ").append(type).append("\n");
  }
  void sample(std::initializer_list<Label> labels, std::uint64_t v) {
    start(labels);
    char buf[24];
    out_.append(buf, std::to_chars(buf, buf + sizeof(buf), v).ptr).push_back('\n');
  }
  void sample(std::uint64_t v) { sample({}, v); }
  void sample_seconds(std::initializer_list<Label> labels, double v) {
    start(labels);
    char buf[32];
    out_.append(buf, std::to_chars(buf, buf + sizeof(buf), v).ptr).push_back('\n');
  }
  // A family of one unlabelled sample.
  void gauge(std::string_view name, std::string_view help, std::uint64_t v) {
    family(name, "gauge", help);
    sample(v);
  }
  void counter(std::string_view name, std::string_view help, std::uint64_t v) {
    family(name, "counter", help);
    sample(v);
  }

 private:
  void start(std::initializer_list<Label> labels) {
    out_.append(name_);
    if (labels.size() != 0) {
      char sep = '{';
      for (const auto& [k, v] : labels) {
        out_.push_back(sep);
        out_.append(k).append("=\"");
        escape(v);
        out_.push_back('"');
        sep = ',';
      }
      out_.push_back('}');
    }
    out_.push_back(' ');
  }
  // Label values: a backslash, a double quote and a line feed are escaped (the format's
  // rules); keys never hold them, but a version string might.
  void escape(std::string_view v) {
    for (char c : v) {
      if (c == '\\' || c == '"') out_.push_back('\\');
      if (c == '\n') {
        out_.append("\\n");
        continue;
      }
      out_.push_back(c);
    }
  }

  std::string& out_;
  std::string_view name_;
};

struct QueueSums {
  std::uint64_t depth = 0, bytes = 0, in_flight = 0;
  broker::QueueCounters counters;
  void add(const broker::Queue& q) {
    depth += q.depth();
    bytes += q.bytes();
    in_flight += q.held() - q.delayed();
    const auto& c = q.counters();
    counters.enqueued_total += c.enqueued_total;
    counters.dequeued_total += c.dequeued_total;
    counters.dropped_total += c.dropped_total;
    counters.rejected_total += c.rejected_total;
  }
};

// Per-queue families: those with series of their own, then "(other)" when any were summed.
void queue_families(Exposition& x, const std::vector<const broker::Queue*>& own,
                    const QueueSums& other, std::size_t aggregated) {
  struct Family {
    std::string_view name, type, help;
    std::uint64_t (*of_queue)(const broker::Queue&);
    std::uint64_t (*of_sums)(const QueueSums&);
  };
  static constexpr Family kFamilies[] = {
      {"qbus_queue_depth_messages", "gauge", "Messages stored in the queue, ready or delayed.",
       [](const broker::Queue& q) -> std::uint64_t { return q.depth(); },
       [](const QueueSums& s) { return s.depth; }},
      {"qbus_queue_bytes", "gauge", "Payload bytes stored in the queue.",
       [](const broker::Queue& q) -> std::uint64_t { return q.bytes(); },
       [](const QueueSums& s) { return s.bytes; }},
      {"qbus_queue_in_flight_messages", "gauge",
       "Messages handed over in acknowledgement mode and not settled.",
       [](const broker::Queue& q) -> std::uint64_t { return q.held() - q.delayed(); },
       [](const QueueSums& s) { return s.in_flight; }},
      {"qbus_queue_enqueued_total", "counter", "Messages the queue accepted.",
       [](const broker::Queue& q) { return q.counters().enqueued_total; },
       [](const QueueSums& s) { return s.counters.enqueued_total; }},
      {"qbus_queue_dequeued_total", "counter", "Messages the queue handed to receivers.",
       [](const broker::Queue& q) { return q.counters().dequeued_total; },
       [](const QueueSums& s) { return s.counters.dequeued_total; }},
      {"qbus_queue_dropped_total", "counter",
       "Messages dropped by the queue's overflow policy (drop_oldest), a purge or a delete.",
       [](const broker::Queue& q) { return q.counters().dropped_total; },
       [](const QueueSums& s) { return s.counters.dropped_total; }},
      {"qbus_queue_rejected_total", "counter", "Sends the full queue refused.",
       [](const broker::Queue& q) { return q.counters().rejected_total; },
       [](const QueueSums& s) { return s.counters.rejected_total; }},
  };
  for (const auto& f : kFamilies) {
    x.family(f.name, f.type, f.help);
    for (const broker::Queue* q : own)
      x.sample({{"queue", q->key()}}, f.of_queue(*q));
    if (aggregated != 0) x.sample({{"queue", kOther}}, f.of_sums(other));
  }
}

// qbus_uid_usage and qbus_uid_limit: one series per uid and resource, so that
// usage / on(resource) group_left limit is each uid's share of its quota.
void uid_families(Exposition& x, const Server& server) {
  const auto& broker = server.broker();
  const auto& l = broker.limits();
  struct Usage {
    std::uint64_t v[10] = {};
  };
  static constexpr std::string_view kResources[10] = {
      "connections",   "queued_messages", "queued_bytes", "queues",         "waiting_receives",
      "subscriptions", "regions",         "region_bytes", "outbound_bytes", "pending_fds"};
  const std::uint64_t limits[10] = {l.uid_max_connections,      l.uid_max_queued_messages,
                                    l.uid_max_queued_bytes,     l.uid_max_queues,
                                    l.uid_max_waiting_receives, l.uid_max_subscriptions,
                                    l.regions.uid_max_regions,  l.regions.uid_max_region_bytes,
                                    l.uid_max_outbound_bytes,   l.uid_max_pending_fds};
  std::vector<std::pair<std::uint32_t, Usage>> uids;
  broker.accounting().for_each([&](std::uint32_t uid, const broker::UidUsage& u) {
    Usage use;
    const auto r = broker.regions().uid_usage(uid);
    const UidOutput* out = server.uid_output(uid);
    const std::uint64_t v[10] = {u.connections,        u.queued_messages, u.queued_bytes, u.queues,
                                 u.waiting_receives,   u.subscriptions,   r.regions,      r.bytes,
                                 out ? out->bytes : 0, out ? out->fds : 0};
    std::copy(std::begin(v), std::end(v), use.v);
    uids.emplace_back(uid, use);
  });
  std::sort(uids.begin(), uids.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  Usage other;
  const bool aggregate = uids.size() > MetricsServer::kMaxUidSeries;
  if (aggregate) {
    for (std::size_t i = MetricsServer::kMaxUidSeries; i < uids.size(); ++i) {
      for (int r = 0; r < 10; ++r)
        other.v[r] += uids[i].second.v[r];
    }
    uids.resize(MetricsServer::kMaxUidSeries);
  }
  x.family("qbus_uid_usage", "gauge",
           "What one uid holds, over all its connections, by resource (the quota is "
           "qbus_uid_limit of the same resource).");
  for (int r = 0; r < 10; ++r) {
    for (const auto& [uid, use] : uids) {
      char buf[12];
      const std::string_view id(buf, std::to_chars(buf, buf + sizeof(buf), uid).ptr);
      x.sample({{"uid", id}, {"resource", kResources[r]}}, use.v[r]);
    }
    if (aggregate) x.sample({{"uid", kOther}, {"resource", kResources[r]}}, other.v[r]);
  }
  x.family("qbus_uid_limit", "gauge", "Each uid's quota of a resource (config limits.uid_max_*).");
  for (int r = 0; r < 10; ++r)
    x.sample({{"resource", kResources[r]}}, limits[r]);
}

// Connections by transport, and the TCP gate's counters.
void connection_families(Exposition& x, const Server& server) {
  const auto& limits = server.broker().limits();
  std::uint64_t by_transport[3] = {};
  server.for_each_connection([&](const Connection& c) {
    const auto tr = c.transport();
    ++by_transport[tr == "unix" ? 0 : tr == "tcp" ? 1 : 2];
  });
  x.family("qbus_connections", "gauge", "Open client connections, by transport.");
  x.sample({{"transport", "unix"}}, by_transport[0]);
  x.sample({{"transport", "tcp"}}, by_transport[1]);
  x.sample({{"transport", "tls"}}, by_transport[2]);
  x.gauge("qbus_connections_limit", "Connections the broker admits (limits.max_connections).",
          limits.max_connections);
  x.gauge("qbus_tcp_unauthenticated_connections",
          "TCP connections that have not presented the token yet.", server.tcp_auth_pending());
  const auto& auth = server.tcp_auth_counters();
  x.family("qbus_tcp_auth_failures_total", "counter",
           "Failed TCP authentications: a wrong token, a failed TLS handshake, or no token "
           "within the handshake timeout.");
  x.sample({{"reason", "token"}}, auth.wrong_token);
  x.sample({{"reason", "tls"}}, auth.tls_handshake);
  x.sample({{"reason", "timeout"}}, auth.timed_out);
  x.counter("qbus_tcp_evictions_total",
            "Unauthenticated TCP connections closed to make room in a full table.", auth.evicted);
}

// Requests, the event loop, the monitor and the journal.
void activity_families(Exposition& x, const Server& server, const MetricsOptions& options) {
  const auto& broker = server.broker();
  const auto& rq = broker.request_counters();
  x.counter("qbus_requests_accepted_total", "Requests whose message a queue accepted.",
            rq.accepted);
  x.family("qbus_requests_total", "counter", "Requests that ended, by outcome.");
  x.sample({{"outcome", "answered"}}, rq.answered);
  x.sample({{"outcome", "timed_out"}}, rq.timed_out);
  x.sample({{"outcome", "abandoned"}}, rq.abandoned);
  x.sample({{"outcome", "responder_gone"}}, rq.responder_gone);
  x.sample({{"outcome", "requester_gone"}}, rq.requester_gone);
  x.sample({{"outcome", "shut_down"}}, rq.shut_down);

  const auto& loop = server.loop_stats();
  x.family("qbus_event_loop_busy_seconds_total", "counter",
           "Time the event loop spent reading and answering clients' frames.");
  x.sample_seconds({}, std::chrono::duration<double>(loop.busy).count());
  x.counter("qbus_event_loop_batches_total", "Batches of frames the event loop handled.",
            loop.batches);
  x.gauge("qbus_event_loop_last_batch_frames", "Frames in the last batch.", loop.last_batch_frames);

  if (const MonitorCounters* m = options.monitor) {
    x.gauge("qbus_monitor_sessions", "Attached `qbusctl monitor` sessions.", m->sessions);
    x.family("qbus_monitor_events_total", "counter",
             "Events shown to monitors, and those dropped because a monitor read too slowly.");
    x.sample({{"outcome", "sent"}}, m->events_sent);
    x.sample({{"outcome", "dropped"}}, m->events_dropped);
  }
  if (const storage::StorageStatus* s = options.storage) {
    const bool up = s->journal && s->journal->unavailable().empty();
    x.gauge("qbus_journal_available", "1 while durable queues can be written.", up ? 1 : 0);
    x.gauge("qbus_journal_disk_bytes", "Bytes of the journal's segments on disk.",
            s->journal ? s->journal->disk_bytes() : 0);
  }
}

// The standard process metrics of Prometheus client libraries, from /proc.
void process_families(Exposition& x, std::chrono::system_clock::time_point started) {
  const long page = ::sysconf(_SC_PAGESIZE);
  const long ticks = ::sysconf(_SC_CLK_TCK);
  long pages_total = 0, pages_resident = 0;
  std::ifstream("/proc/self/statm") >> pages_total >> pages_resident;
  double cpu = 0;
  if (std::ifstream stat("/proc/self/stat"); stat) {
    std::string line;
    std::getline(stat, line);
    // After the command's closing parenthesis: state is field 3, utime 14, stime 15.
    const auto paren = line.rfind(')');
    if (paren != std::string::npos) {
      unsigned long utime = 0, stime = 0;
      if (std::sscanf(line.c_str() + paren + 1,
                      " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime,
                      &stime) == 2 &&
          ticks > 0) {
        cpu = static_cast<double>(utime + stime) / static_cast<double>(ticks);
      }
    }
  }
  std::uint64_t fds = 0;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec))
    ++fds;
  x.family("process_cpu_seconds_total", "counter", "User and system CPU time spent, in seconds.");
  x.sample_seconds({}, cpu);
  x.gauge("process_resident_memory_bytes", "Resident memory size in bytes.",
          static_cast<std::uint64_t>(pages_resident) * static_cast<std::uint64_t>(page));
  x.gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.",
          static_cast<std::uint64_t>(pages_total) * static_cast<std::uint64_t>(page));
  x.gauge("process_open_fds", "Open file descriptors.", fds);
  x.family("process_start_time_seconds", "gauge", "Start time of the process since the epoch.");
  x.sample_seconds({}, std::chrono::duration<double>(started.time_since_epoch()).count());
}

}  // namespace

std::string MetricsServer::render() {
  const auto& broker = server_.broker();
  const auto& limits = broker.limits();
  std::string text;
  text.reserve(16 * 1024);
  Exposition x(text);

  x.family("qbus_build_info", "gauge", "Always 1; the version of qbusd as a label.");
  x.sample({{"version", options_.version}}, 1);

  const auto& t = broker.totals();
  x.counter("qbus_messages_in_total", "Messages the broker accepted from clients.", t.messages_in);
  x.counter("qbus_messages_out_total", "Messages the broker handed to clients.", t.messages_out);
  x.counter("qbus_bytes_in_total", "Payload bytes the broker accepted from clients.", t.bytes_in);
  x.counter("qbus_bytes_out_total", "Payload bytes the broker handed to clients.", t.bytes_out);

  connection_families(x, server_);

  x.gauge("qbus_queues", "Keyed queues.", broker.queue_count());
  x.gauge("qbus_queues_limit", "Queues the broker holds at most (limits.max_queues).",
          limits.max_queues);
  x.gauge("qbus_inboxes", "Inboxes of direct messages, one per client process.",
          broker.inbox_count());

  // Per queue: those tracked keep their series while they live; a new queue joins them
  // while there is room, else it is summed under "(other)".
  std::erase_if(tracked_, [&](const std::string& key) { return broker.find(key) == nullptr; });
  std::vector<const broker::Queue*> own;
  own.reserve(std::min<std::size_t>(broker.queue_count(), options_.max_queue_series));
  QueueSums other;
  std::size_t aggregated = 0;
  broker.for_each_queue([&](const broker::Queue& q) {
    auto it = tracked_.find(q.key());
    if (it == tracked_.end() && tracked_.size() < options_.max_queue_series) {
      it = tracked_.insert(q.key()).first;
    }
    if (it != tracked_.end()) {
      own.push_back(&q);
    } else {
      other.add(q);
      ++aggregated;
    }
  });
  std::sort(own.begin(), own.end(),
            [](const broker::Queue* a, const broker::Queue* b) { return a->key() < b->key(); });
  x.gauge("qbus_queue_series_limit",
          "Queues given series of their own (metrics.max_queue_series); the rest are summed "
          "under queue=\"(other)\".",
          options_.max_queue_series);
  x.gauge("qbus_queues_aggregated", "Queues summed under queue=\"(other)\" in this answer.",
          aggregated);
  queue_families(x, own, other, aggregated);

  std::uint64_t region_bytes = 0;
  broker.regions().for_each([&](const broker::RegionInfo& r) { region_bytes += r.size; });
  x.gauge("qbus_regions", "Live shared-memory regions.", broker.regions().count());
  x.gauge("qbus_region_bytes", "Bytes of the live shared-memory regions.", region_bytes);
  x.gauge("qbus_regions_limit", "Regions the broker holds at most (limits.max_regions).",
          limits.regions.max_regions);
  x.gauge("qbus_region_fds_in_flight", "Region fds waiting to be passed to clients.",
          server_.fds_in_flight());
  x.gauge("qbus_region_fds_limit", "Region fds that may wait to be passed, over all clients.",
          server_.options().max_fds_in_flight);
  x.gauge("qbus_region_closes_pending",
          "Freed regions whose memory the backing's worker has not released yet.",
          server_.region_closes_pending());

  uid_families(x, server_);

  activity_families(x, server_, options_);
  process_families(x, started_);
  return text;
}

}  // namespace qbus::daemon
