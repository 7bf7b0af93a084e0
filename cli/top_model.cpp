#include "top_model.hpp"

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <tuple>
#include <unordered_map>

namespace qbusctl::top {
namespace {

using json = nlohmann::json;

// Members read without asserting: an older or newer qbusd may lack one or type it otherwise.
std::uint64_t count(const json& o, const char* name) {
  const auto it = o.find(name);
  if (it == o.end() || !it->is_number()) return 0;
  if (it->is_number_unsigned()) return it->get<std::uint64_t>();
  if (it->is_number_integer())
    return static_cast<std::uint64_t>(std::max<long long>(0, it->get<long long>()));
  return static_cast<std::uint64_t>(std::max(0.0, it->get<double>()));
}

std::string text(const json& o, const char* name) {
  const auto it = o.find(name);
  return it != o.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// Names come from other users' processes: control characters must not reach the terminal.
std::string printable(std::string s) {
  for (auto& c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) c = '?';
  }
  return s.empty() ? "-" : s;
}

double queue_rate(const QueueRow& r) {
  return r.in_rate.value_or(0) + r.out_rate.value_or(0);
}

double client_rate(const ClientRow& r) {
  return r.sent_rate.value_or(0) + r.received_rate.value_or(0);
}

// Columns padded to their widest cell, two spaces apart; `right` ones right-aligned.
std::vector<std::string> align(const std::vector<std::vector<std::string>>& lines,
                               const std::vector<bool>& right) {
  std::vector<std::size_t> width(right.size(), 0);
  for (const auto& cells : lines)
    for (std::size_t i = 0; i < cells.size(); ++i)
      width[i] = std::max(width[i], cells[i].size());
  std::vector<std::string> out;
  out.reserve(lines.size());
  for (const auto& cells : lines) {
    std::string line;
    for (std::size_t i = 0; i < cells.size(); ++i) {
      const std::string pad(width[i] - cells[i].size(), ' ');
      if (i) line += "  ";
      line += right[i] ? pad + cells[i] : cells[i] + pad;
    }
    line.erase(line.find_last_not_of(' ') + 1);
    out.push_back(std::move(line));
  }
  return out;
}

std::string marked(const char* title, bool sorted) {
  return sorted ? std::string(title) + "*" : std::string(title);
}

}  // namespace

const char* sort_name(SortKey k) {
  switch (k) {
    case SortKey::rate:
      return "rate";
    case SortKey::depth:
      return "depth";
    case SortKey::bytes:
      return "bytes";
    case SortKey::key:
      return "key";
  }
  return "rate";
}

std::optional<SortKey> parse_sort(const std::string& t) {
  if (t == "rate") return SortKey::rate;
  if (t == "depth") return SortKey::depth;
  if (t == "bytes") return SortKey::bytes;
  if (t == "key" || t == "name") return SortKey::key;
  return std::nullopt;
}

Sample parse_sample(const json& queues, const json& clients, Clock::time_point at) {
  Sample s;
  s.at = at;
  if (queues.is_array()) {
    for (const auto& q : queues) {
      if (!q.is_object()) continue;
      QueueCounters c;
      c.key = text(q, "key");
      c.depth = count(q, "depth");
      c.bytes = count(q, "bytes");
      c.enqueued_total = count(q, "enqueued_total");
      c.dequeued_total = count(q, "dequeued_total");
      c.dropped_total = count(q, "dropped_total");
      c.consumers = count(q, "waiting_receivers");
      if (const auto it = q.find("subscribers"); it != q.end() && it->is_array()) {
        c.consumers += it->size();
      }
      s.queues.push_back(std::move(c));
    }
  }
  if (clients.is_array()) {
    for (const auto& o : clients) {
      if (!o.is_object()) continue;
      ClientCounters c;
      c.id = count(o, "id");
      c.pid = count(o, "pid");
      c.uid = count(o, "uid");
      c.comm = text(o, "comm");
      c.name = text(o, "name");
      c.transport = text(o, "transport");
      c.sent_total = count(o, "sent_total");
      c.received_total = count(o, "received_total");
      c.inbox_depth = count(o, "inbox_depth");
      c.unacked = count(o, "unacked");
      s.clients.push_back(std::move(c));
    }
  }
  return s;
}

double rate_of(std::uint64_t before, std::uint64_t now, double seconds) {
  if (now < before || !(seconds > 0)) return 0;
  return static_cast<double>(now - before) / seconds;
}

void Model::update(Sample sample) {
  std::unordered_map<std::string, const QueueCounters*> old_queues;
  std::unordered_map<std::uint64_t, const ClientCounters*> old_clients;
  double seconds = 0;
  if (previous_) {
    seconds = std::chrono::duration<double>(sample.at - previous_->at).count();
    for (const auto& q : previous_->queues)
      old_queues.emplace(q.key, &q);
    for (const auto& c : previous_->clients)
      old_clients.emplace(c.id, &c);
  }
  queues_.clear();
  for (const auto& q : sample.queues) {
    QueueRow row{q, std::nullopt, std::nullopt};
    if (const auto it = old_queues.find(q.key); it != old_queues.end()) {
      row.in_rate = rate_of(it->second->enqueued_total, q.enqueued_total, seconds);
      row.out_rate = rate_of(it->second->dequeued_total, q.dequeued_total, seconds);
    }
    queues_.push_back(std::move(row));
  }
  clients_.clear();
  for (const auto& c : sample.clients) {
    ClientRow row{c, std::nullopt, std::nullopt};
    if (const auto it = old_clients.find(c.id); it != old_clients.end()) {
      row.sent_rate = rate_of(it->second->sent_total, c.sent_total, seconds);
      row.received_rate = rate_of(it->second->received_total, c.received_total, seconds);
    }
    clients_.push_back(std::move(row));
  }
  previous_ = std::move(sample);
}

double Model::in_rate() const {
  double sum = 0;
  for (const auto& q : queues_)
    sum += q.in_rate.value_or(0);
  return sum;
}

double Model::out_rate() const {
  double sum = 0;
  for (const auto& q : queues_)
    sum += q.out_rate.value_or(0);
  return sum;
}

void sort_queues(std::vector<QueueRow>& rows, SortKey key) {
  // Busiest first: the measure descending, then the key ascending.
  const auto measure = [key](const QueueRow& r) -> double {
    switch (key) {
      case SortKey::rate:
        return queue_rate(r);
      case SortKey::depth:
        return static_cast<double>(r.counters.depth);
      case SortKey::bytes:
        return static_cast<double>(r.counters.bytes);
      case SortKey::key:
        return 0;
    }
    return 0;
  };
  std::stable_sort(rows.begin(), rows.end(), [&](const QueueRow& a, const QueueRow& b) {
    const double ma = measure(a);
    const double mb = measure(b);
    if (ma != mb) return ma > mb;
    return a.counters.key < b.counters.key;
  });
}

void sort_clients(std::vector<ClientRow>& rows, SortKey key) {
  const auto measure = [key](const ClientRow& r) -> double {
    switch (key) {
      case SortKey::rate:
      case SortKey::bytes:  // clients hold no bytes of their own
        return client_rate(r);
      case SortKey::depth:
        return static_cast<double>(r.counters.inbox_depth);
      case SortKey::key:
        return 0;
    }
    return 0;
  };
  std::stable_sort(rows.begin(), rows.end(), [&](const ClientRow& a, const ClientRow& b) {
    const double ma = measure(a);
    const double mb = measure(b);
    if (ma != mb) return ma > mb;
    return std::tie(a.counters.name, a.counters.id) < std::tie(b.counters.name, b.counters.id);
  });
}

std::string format_rate(std::optional<double> rate) {
  if (!rate) return "-";
  char buf[32];
  const double r = *rate;
  if (r < 1000) {
    std::snprintf(buf, sizeof(buf), "%.1f", r);
  } else if (r < 1e6) {
    std::snprintf(buf, sizeof(buf), "%.1fk", r / 1e3);
  } else {
    std::snprintf(buf, sizeof(buf), "%.1fM", r / 1e6);
  }
  return buf;
}

std::string format_bytes(std::uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  auto b = static_cast<double>(bytes);
  int u = 0;
  while (b >= 1024 && u < 4) {
    b /= 1024;
    ++u;
  }
  char buf[32];
  if (u == 0) {
    std::snprintf(buf, sizeof(buf), "%llu B", static_cast<unsigned long long>(bytes));
  } else {
    std::snprintf(buf, sizeof(buf), "%.1f %s", b, units[u]);
  }
  return buf;
}

std::vector<std::string> queue_table(const std::vector<QueueRow>& rows, SortKey key) {
  const bool by_rate = key == SortKey::rate;
  std::vector<std::vector<std::string>> lines{
      {marked("KEY", key == SortKey::key), marked("DEPTH", key == SortKey::depth),
       marked("BYTES", key == SortKey::bytes), marked("IN/S", by_rate), marked("OUT/S", by_rate),
       "CONSUMERS", "DROPPED"}};
  for (const auto& r : rows) {
    const auto& c = r.counters;
    lines.push_back({printable(c.key), std::to_string(c.depth), format_bytes(c.bytes),
                     format_rate(r.in_rate), format_rate(r.out_rate), std::to_string(c.consumers),
                     std::to_string(c.dropped_total)});
  }
  return align(lines, {false, true, true, true, true, true, true});
}

std::vector<std::string> client_table(const std::vector<ClientRow>& rows, SortKey key) {
  const bool by_rate = key == SortKey::rate || key == SortKey::bytes;
  std::vector<std::vector<std::string>> lines{{"ID", "PID", "UID", "COMM",
                                               marked("NAME", key == SortKey::key), "TRANSPORT",
                                               marked("SENT/S", by_rate), marked("RECV/S", by_rate),
                                               marked("INBOX", key == SortKey::depth), "UNACKED"}};
  for (const auto& r : rows) {
    const auto& c = r.counters;
    lines.push_back({std::to_string(c.id), std::to_string(c.pid), std::to_string(c.uid),
                     printable(c.comm), printable(c.name), printable(c.transport),
                     format_rate(r.sent_rate), format_rate(r.received_rate),
                     std::to_string(c.inbox_depth), std::to_string(c.unacked)});
  }
  return align(lines, {true, true, true, false, false, false, true, true, true, true});
}

RowSplit split_rows(std::size_t lines, std::size_t queues, std::size_t clients,
                    bool clients_first) {
  if (queues + clients <= lines) return {queues, clients};
  const std::size_t favoured_needs = clients_first ? clients : queues;
  const std::size_t other_needs = clients_first ? queues : clients;
  const std::size_t share = lines - std::min(lines, other_needs);  // what the other leaves
  const std::size_t favoured = std::min(favoured_needs, std::max(share, lines * 2 / 3));
  const std::size_t other = std::min(other_needs, lines - favoured);
  return clients_first ? RowSplit{other, favoured} : RowSplit{favoured, other};
}

}  // namespace qbusctl::top
