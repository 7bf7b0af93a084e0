// `qbusctl top`'s model, apart from any terminal: successive samples of the admin socket's
// `queues` and `clients` answers become rows with rates (messages per second, from the
// counters' deltas between two samples), sorted busiest first, and aligned text lines.
// top.cpp draws these lines with ncurses or prints them as plain text.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <vector>

namespace qbusctl::top {

using Clock = std::chrono::steady_clock;

// What the rows are sorted by. rate: in + out (sent + received for clients), busiest
// first; depth: messages waiting (a client's inbox); bytes: a queue's inline bytes (clients
// have none: they sort by rate); key: a queue's key, a client's name, in ascending order.
// Ties are broken by key (queues) or by name then id (clients), so the order is stable.
enum class SortKey { rate, depth, bytes, key };

const char* sort_name(SortKey k);
// "rate", "depth", "bytes", "key" (and "name", a synonym of key); nullopt for anything else.
std::optional<SortKey> parse_sort(const std::string& text);

struct QueueCounters {
  std::string key;
  std::uint64_t depth = 0;
  std::uint64_t bytes = 0;
  std::uint64_t enqueued_total = 0;
  std::uint64_t dequeued_total = 0;
  std::uint64_t dropped_total = 0;
  std::uint64_t consumers = 0;  // subscribers plus waiting receivers
};

struct ClientCounters {
  std::uint64_t id = 0;
  std::uint64_t pid = 0;
  std::uint64_t uid = 0;
  std::string comm;
  std::string name;
  std::string transport;
  std::uint64_t sent_total = 0;
  std::uint64_t received_total = 0;
  std::uint64_t inbox_depth = 0;
  std::uint64_t unacked = 0;
};

// One refresh: what the admin socket said, and when it was asked.
struct Sample {
  Clock::time_point at;
  std::vector<QueueCounters> queues;
  std::vector<ClientCounters> clients;
};

// The `queues` and `clients` arrays of the admin socket's answers as a sample. Members a
// qbusd does not send count as 0 (or ""); entries that are not objects are skipped.
Sample parse_sample(const nlohmann::json& queues, const nlohmann::json& clients,
                    Clock::time_point at);

// A rate is nullopt where there is nothing to compare with: the first sample, or a queue
// or client that was not in the previous one. It is 0, never negative, when a counter went
// backwards (qbusd restarted, the queue was deleted and created again) or no time passed.
struct QueueRow {
  QueueCounters counters;
  std::optional<double> in_rate;
  std::optional<double> out_rate;
};

struct ClientRow {
  ClientCounters counters;
  std::optional<double> sent_rate;
  std::optional<double> received_rate;
};

// The rates of the latest sample against the one before. A queue (by key) or client (by
// id) that vanished is gone from the rows.
class Model {
 public:
  void update(Sample sample);
  const std::vector<QueueRow>& queues() const { return queues_; }
  const std::vector<ClientRow>& clients() const { return clients_; }
  // Sums of the known rates, 0 on the first sample.
  double in_rate() const;
  double out_rate() const;

 private:
  std::optional<Sample> previous_;
  std::vector<QueueRow> queues_;
  std::vector<ClientRow> clients_;
};

// Messages per second from `before` to `now` over `seconds`; 0 when the counter went back
// or `seconds` is not positive.
double rate_of(std::uint64_t before, std::uint64_t now, double seconds);

void sort_queues(std::vector<QueueRow>& rows, SortKey key);
void sort_clients(std::vector<ClientRow>& rows, SortKey key);

// A table as aligned lines: the column titles first (the sort key's columns marked with a
// trailing '*'), then one line per row. Names are made printable (control characters
// become '?').
std::vector<std::string> queue_table(const std::vector<QueueRow>& rows, SortKey key);
std::vector<std::string> client_table(const std::vector<ClientRow>& rows, SortKey key);

// "12.5", "1.2k", "3.4M"; "-" for an unknown rate.
std::string format_rate(std::optional<double> rate);
std::string format_bytes(std::uint64_t bytes);

// How many rows of each table fit in `lines` lines (the tables' rows only, titles apart):
// all of both when they fit, else the favoured table (the clients when `clients_first`)
// gets up to two thirds, more when the other needs less.
struct RowSplit {
  std::size_t queues = 0;
  std::size_t clients = 0;
};
RowSplit split_rows(std::size_t lines, std::size_t queues, std::size_t clients, bool clients_first);

}  // namespace qbusctl::top
