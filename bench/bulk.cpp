// qbus-bench bulk: large payloads, in shared memory and inline.
//
// bulk: large payloads one at a time from a producer process to a consumer process blocked
// in receive(): a shared-memory region handed over with send(key, std::move(region)) (time
// until the consumer holds the mapping, and until it has read every byte), the same bytes
// inline through the socket, and a plain memcpy in one process as the floor. Payloads over
// the broker's inline limit are taken inline by a consumer on TCP, if there is one. The
// private qbusd raises the inline limit to its maximum and listens on loopback TCP for this.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "common.hpp"
#include "daemon.hpp"
#include "modes.hpp"

namespace qbus::bench {
namespace {

constexpr char kBulkKey[] = "bench.bulk";
constexpr char kBulkReady[] = "bench.bulk.ready";
// The largest limits.max_payload_bytes qbusd accepts: the private daemon's inline limit.
constexpr std::uint32_t kMaxInlineLimit = 67107840;
// Bound of the bench queue: any inline payload fits (the default, 64 MiB, would not).
constexpr std::uint64_t kBulkQueueBytes = std::uint64_t{1} << 40;

struct BulkOptions {
  std::vector<std::size_t> sizes = {std::size_t{4} << 10, std::size_t{64} << 10,
                                    std::size_t{1} << 20, std::size_t{64} << 20,
                                    std::size_t{256} << 20};
  int runs = 5;
  int warmup = 1;
  std::string address;
  std::string tcp_address;
  bool json = false;
};

void add_options(CLI::App& cmd, BulkOptions& o) {
  cmd.add_option("--sizes", o.sizes,
                 "Payload sizes, comma-separated; K, M, G suffixes are powers of 1024 (4K,64M)")
      ->delimiter(',')
      ->transform(CLI::AsSizeValue(false))
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 30));
  cmd.add_option("--runs", o.runs, "Measured messages per size and path; the median is reported")
      ->check(CLI::Range(1, 99));
  cmd.add_option("--warmup", o.warmup, "Unmeasured messages before them")->check(CLI::Range(0, 9));
  cmd.add_option("--address", o.address,
                 "Use a running broker (a Unix socket) instead of a private one");
  cmd.add_option("--tcp-address", o.tcp_address,
                 "With --address: the same broker over TCP, to take payloads over its inline "
                 "limit inline (token from $QBUS_TOKEN or $QBUS_TOKEN_FILE)");
  cmd.add_flag("--json", o.json, "One JSON object instead of the table");
}

// How the payload of one measurement travels.
enum class BulkPath {
  region,        // allocate_region(), fill, send(key, std::move(region)); the consumer maps it
  inline_unix,   // send(key, bytes) inline through the Unix socket (region_threshold SIZE_MAX)
  tcp_receiver,  // sent as `region`, taken by a TCP consumer: the broker streams it inline
  none,          // no inline path for this size
};

const char* path_name(BulkPath p) {
  constexpr const char* kNames[] = {"region", "unix", "tcp_receiver", "none"};  // by BulkPath
  return kNames[static_cast<int>(p)];
}

// One message's timestamps (CLOCK_MONOTONIC, ns), written by the producer and the consumer
// into a SharedArray made before the fork; the parent reads them after both exited.
struct BulkSample {
  long long send_ns = 0;      // just before send()
  long long sent_ns = 0;      // send() returned
  long long received_ns = 0;  // receive() returned: the consumer holds the bytes
  long long read_ns = 0;      // the consumer has read every byte
  std::uint64_t xor_sent = 0;
  std::uint64_t xor_read = 0;
  std::uint64_t size_read = 0;
  int shared_memory = 0;  // Message::in_shared_memory() at the consumer
};

struct BulkEndpoints {
  std::string unix_address;
  std::string tcp_address;  // the same broker over TCP; empty: no TCP receiver
  std::string token;        // empty: $QBUS_TOKEN / $QBUS_TOKEN_FILE
  std::uint32_t max_payload = 0;
};

qbus::Client bulk_client(const BulkEndpoints& ep, bool tcp) {
  qbus::ClientOptions co{tcp ? ep.tcp_address : ep.unix_address, "qbus-bench", seconds(30)};
  if (tcp) co.token = ep.token;
  co.region_threshold = SIZE_MAX;  // what the bench sends inline stays inline
  return qbus::Client(co);
}

// A producer and a consumer process pass warmup + runs payloads of `size` bytes one at a
// time along `path`; returns the samples of the measured runs.
std::vector<BulkSample> run_bulk(const BulkOptions& o, const BulkEndpoints& ep, std::size_t size,
                                 BulkPath path) {
  const int total = o.warmup + o.runs;
  SharedArray<BulkSample> samples(static_cast<std::size_t>(total));
  Child consumer([&] {
    auto c = bulk_client(ep, path == BulkPath::tcp_receiver);
    for (int i = 0; i < total; ++i) {
      BulkSample& s = samples[static_cast<std::size_t>(i)];
      std::optional<qbus::Message> m;
      {
        // READY and RECEIVE leave in one write and the broker handles a connection's frames
        // in order, so the producer hears READY only once this receive waits on the queue.
        qbus::Client::Batch batch(c);
        c.send(kBulkReady, "r");
        m = c.receive(kBulkKey, kIdleTimeout);
        s.received_ns = now_ns();
      }
      if (!m) return 1;
      const auto bytes = m->bytes();
      s.xor_read = xor_words(bytes);
      s.read_ns = now_ns();
      s.size_read = bytes.size();
      s.shared_memory = m->in_shared_memory() ? 1 : 0;
    }  // the Message goes here: its region is released with the next call
    c.sync();
    return c.send_failures().count == 0 ? 0 : 1;
  });
  Child producer([&] {
    auto c = bulk_client(ep, false);
    std::string payload(path == BulkPath::inline_unix ? size : 0, '\0');
    for (int i = 0; i < total; ++i) {
      if (!c.receive(kBulkReady, kIdleTimeout)) return 1;  // the consumer waits in receive
      BulkSample& s = samples[static_cast<std::size_t>(i)];
      const std::uint64_t seed = size * 131 + static_cast<std::uint64_t>(i);
      if (path == BulkPath::inline_unix) {
        s.xor_sent = fill_words(std::as_writable_bytes(std::span(payload)), seed);
        s.send_ns = now_ns();
        c.send(kBulkKey, payload);
        s.sent_ns = now_ns();
      } else {
        qbus::Region region = c.allocate_region(size);
        s.xor_sent = fill_words(region.data(), seed);  // not measured
        s.send_ns = now_ns();
        c.send(kBulkKey, std::move(region));
        s.sent_ns = now_ns();
      }
    }
    return sync_and_check(c, "bulk producer");
  });
  const std::string what =
      std::string("bulk ") + path_name(path) + " " + std::to_string(size) + " B";
  if (!producer.wait()) throw std::runtime_error(what + ": the producer failed");
  if (!consumer.wait()) throw std::runtime_error(what + ": the consumer failed");
  std::vector<BulkSample> out;
  for (int i = o.warmup; i < total; ++i) {
    const BulkSample& s = samples[static_cast<std::size_t>(i)];
    if (s.size_read != size || s.xor_read != s.xor_sent) {
      throw std::runtime_error(what + ": the consumer read " + std::to_string(s.size_read) +
                               " bytes that differ from what was sent");
    }
    if ((s.shared_memory != 0) != (path == BulkPath::region)) {
      throw std::runtime_error(what + ": the consumer got " +
                               (s.shared_memory ? "a shared-memory mapping" : "inline bytes") +
                               ", not what this path should deliver");
    }
    out.push_back(s);
  }
  return out;
}

// Plain memcpy of `size` bytes between two buffers whose pages are already touched, in ns.
std::vector<double> run_memcpy(std::size_t size, int warmup, int runs) {
  const std::unique_ptr<std::byte[]> src(new std::byte[size]), dst(new std::byte[size]);
  std::memset(src.get(), 0x5a, size);
  std::memset(dst.get(), 0xa5, size);
  std::vector<double> out;
  for (int i = 0; i < warmup + runs; ++i) {
    const long long start = now_ns();
    std::memcpy(dst.get(), src.get(), size);
    asm volatile("" : : "r"(dst.get()) : "memory");  // the copy must happen
    const long long end = now_ns();
    if (i >= warmup) out.push_back(static_cast<double>(end - start));
  }
  return out;
}

struct BulkRow {
  std::size_t size = 0;
  std::vector<double> handoff, end_to_end, send_call;  // region, ns per run
  BulkPath inline_path = BulkPath::none;
  std::vector<double> inline_received, inline_end_to_end;  // ns per run
  std::vector<double> copy;                                // memcpy, ns per run
  double median_handoff() const { return median_of(handoff); }
  double median_end_to_end() const { return median_of(end_to_end); }
  double median_inline() const {
    return inline_end_to_end.empty() ? -1 : median_of(inline_end_to_end);
  }
};

std::string format_size(std::size_t b) {
  const std::pair<std::size_t, const char*> units[] = {
      {std::size_t{1} << 30, "GiB"}, {std::size_t{1} << 20, "MiB"}, {std::size_t{1} << 10, "KiB"}};
  for (const auto& [unit, name] : units) {
    if (b >= unit && b % unit == 0) return std::to_string(b / unit) + " " + name;
  }
  return std::to_string(b) + " B";
}

std::string format_ns(double ns) {
  char buf[32];
  if (ns < 1e6) {
    std::snprintf(buf, sizeof buf, "%.1f us", ns / 1e3);
  } else if (ns < 1e9) {
    std::snprintf(buf, sizeof buf, "%.2f ms", ns / 1e6);
  } else {
    std::snprintf(buf, sizeof buf, "%.3f s", ns / 1e9);
  }
  return buf;
}

std::string format_ratio(double r) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2fx", r);
  return buf;
}

std::string json_us_list(const std::vector<double>& v) {
  std::string out = "[";
  for (std::size_t i = 0; i < v.size(); ++i) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%s%.3f", i ? "," : "", us(v[i]));
    out += buf;
  }
  return out + "]";
}

std::string json_us(double ns) {
  if (ns < 0) return "null";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", us(ns));
  return buf;
}

// The row whose handoff the ratio column divides by: 4 KiB when measured, else the smallest.
const BulkRow& handoff_base(const std::vector<BulkRow>& rows) {
  for (const auto& r : rows) {
    if (r.size == std::size_t{4} << 10) return r;
  }
  return *std::min_element(rows.begin(), rows.end(),
                           [](const BulkRow& a, const BulkRow& b) { return a.size < b.size; });
}

// handoff(64 MiB) / handoff(4 KiB), or -1 when either size was not measured.
double handoff_ratio_64m_4k(const std::vector<BulkRow>& rows) {
  const BulkRow *small = nullptr, *large = nullptr;
  for (const auto& r : rows) {
    if (r.size == std::size_t{4} << 10) small = &r;
    if (r.size == std::size_t{64} << 20) large = &r;
  }
  return small && large ? ratio(large->median_handoff(), small->median_handoff()) : -1;
}

void print_bulk_json(const BulkOptions& o, const BulkEndpoints& ep,
                     const std::vector<BulkRow>& rows) {
  std::printf(
      "{\"benchmark\":\"bulk\",\"cpus_online\":%ld,\"runs\":%d,\"warmup\":%d,"
      "\"max_payload\":%u,\"tcp_receiver\":%s,\"sizes\":[",
      cpus_online(), o.runs, o.warmup, ep.max_payload, ep.tcp_address.empty() ? "false" : "true");
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const BulkRow& r = rows[i];
    const double inl = r.median_inline();
    std::printf(
        "%s{\"size\":%zu,\"region\":{\"handoff_us\":%s,\"end_to_end_us\":%s,"
        "\"send_call_us\":%s,\"runs_handoff_us\":%s,\"runs_end_to_end_us\":%s},",
        i ? "," : "", r.size, json_us(r.median_handoff()).c_str(),
        json_us(r.median_end_to_end()).c_str(), json_us(median_of(r.send_call)).c_str(),
        json_us_list(r.handoff).c_str(), json_us_list(r.end_to_end).c_str());
    if (r.inline_path == BulkPath::none) {
      std::printf("\"inline\":null,");
    } else {
      std::printf(
          "\"inline\":{\"path\":\"%s\",\"end_to_end_us\":%s,\"receive_returned_us\":%s,"
          "\"runs_end_to_end_us\":%s},",
          path_name(r.inline_path), json_us(inl).c_str(),
          json_us(median_of(r.inline_received)).c_str(), json_us_list(r.inline_end_to_end).c_str());
    }
    std::printf("\"memcpy_us\":%s,\"ratio_inline_region_end_to_end\":%s}",
                json_us(median_of(r.copy)).c_str(),
                inl < 0 ? "null" : std::to_string(ratio(inl, r.median_end_to_end())).c_str());
  }
  const double h = handoff_ratio_64m_4k(rows);
  std::printf("],\"ratio_handoff_64MiB_4KiB\":%s}\n", h < 0 ? "null" : std::to_string(h).c_str());
}

void print_bulk_table(const BulkOptions& o, const BulkEndpoints& ep,
                      const std::vector<BulkRow>& rows, bool own_daemon) {
  std::printf(
      "bulk: one payload at a time, producer process -> queue -> consumer process blocked in "
      "receive; median of %d run(s) (+%d warmup) per cell\n",
      o.runs, o.warmup);
  std::printf("  %ld CPU(s) online (sysconf), nothing pinned; %s; inline limit %u B%s\n",
              cpus_online(), own_daemon ? "private qbusd" : ("broker at " + o.address).c_str(),
              ep.max_payload,
              ep.tcp_address.empty() ? "; no TCP receiver"
                                     : ("; TCP receiver at " + ep.tcp_address).c_str());
  const BulkRow& base = handoff_base(rows);
  const std::string base_col = "handoff/" + format_size(base.size);
  std::printf("  %-9s %14s %14s %18s %11s %13s %14s\n", "size", "region handoff", "region e2e",
              "inline e2e", "memcpy", "inline/region", base_col.c_str());
  bool tcp_note = false, none_note = false;
  for (const auto& r : rows) {
    std::string inl = "n/a (over limit)";
    std::string inl_ratio = "-";
    if (r.inline_path != BulkPath::none) {
      inl = format_ns(r.median_inline());
      if (r.inline_path == BulkPath::tcp_receiver) inl += " [tcp]";
      inl_ratio = format_ratio(ratio(r.median_inline(), r.median_end_to_end()));
    }
    tcp_note |= r.inline_path == BulkPath::tcp_receiver;
    none_note |= r.inline_path == BulkPath::none;
    std::printf("  %-9s %14s %14s %18s %11s %13s %14s\n", format_size(r.size).c_str(),
                format_ns(r.median_handoff()).c_str(), format_ns(r.median_end_to_end()).c_str(),
                inl.c_str(), format_ns(median_of(r.copy)).c_str(), inl_ratio.c_str(),
                format_ratio(ratio(r.median_handoff(), base.median_handoff())).c_str());
  }
  if (const double h = handoff_ratio_64m_4k(rows); h >= 0) {
    std::printf("  region handoff 64 MiB / 4 KiB: %.2fx\n", h);
  }
  std::printf(
      "  region handoff: send(key, std::move(region)) starts -> the consumer's receive() returned "
      "a read-only mapping (filling the region is not timed)\n"
      "  e2e: send() starts -> the consumer has read every byte (XOR of all 8-byte words)\n"
      "  inline e2e: send(key, bytes) of the same payload inline through the Unix socket "
      "(region_threshold SIZE_MAX)\n");
  if (tcp_note) {
    std::printf(
        "  [tcp]: over the inline limit nothing can be sent inline; the region is handed over "
        "as above and the consumer is on TCP, so the broker streams the bytes to it inline in "
        "pieces\n");
  }
  if (none_note) {
    std::printf(
        "  n/a: over the broker's inline limit and no TCP receiver (--tcp-address) to take it "
        "inline\n");
  }
  std::printf("  memcpy: one process, both buffers already touched (the floor)\n");
}

std::string random_token() {
  std::random_device rd;
  std::string token;
  for (int i = 0; i < 4; ++i) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "%08x", rd());
    token += buf;
  }
  return token;
}

// Writes `content` to a new file only its owner may read, as qbusd requires of token files.
void write_private_file(const std::string& path, const std::string& content) {
  Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (fd.get() < 0 || !write_all(fd.get(), content.data(), content.size())) {
    throw std::runtime_error("cannot write " + path);
  }
}

int bulk(const BulkOptions& o) {
  ::signal(SIGPIPE, SIG_IGN);
  // Declared first, destroyed last: the token file outlives the daemon reading it.
  std::optional<qbus::testing::TempDir> secrets;
  std::unique_ptr<qbus::testing::Daemon> daemon;
  BulkEndpoints ep;
  if (o.address.empty()) {
    secrets.emplace();
    ep.token = random_token();
    const std::string token_file = secrets->file("token");
    write_private_file(token_file, ep.token + "\n");
    qbus::testing::DaemonOptions d;
    d.log_level = "info";  // the daemon logs the TCP port it got at info
    d.config_json = R"({"limits": {"max_payload_bytes": )" + std::to_string(kMaxInlineLimit) +
                    R"(, "uid_max_queued_bytes": 4294967296},
                        "tcp": {"listen": "127.0.0.1:0", "token_file": ")" +
                    token_file + R"("}})";
    daemon = std::make_unique<qbus::testing::Daemon>(d);
    ep.unix_address = daemon->address();
    ep.tcp_address = daemon->tcp_address();
  } else {
    ep.unix_address = o.address;
    ep.tcp_address = o.tcp_address;
  }
  auto admin = connect(ep.unix_address);
  ep.max_payload = admin.session().max_payload;
  try {
    admin.declare(kBulkKey, qbus::QueueOptions{0, kBulkQueueBytes, qbus::Overflow::block});
  } catch (const qbus::Error& e) {
    if (e.code() != qbus::Errc::queue_conflict) throw;
    std::fprintf(stderr, "qbus-bench: %s; using the queue as it is\n", e.what());
  }
  while (admin.try_receive(kBulkKey) || admin.try_receive(kBulkReady)) {
  }  // leftovers of an interrupted run on a shared broker

  std::vector<BulkRow> rows;
  for (const std::size_t size : o.sizes) {
    BulkRow row;
    row.size = size;
    for (const auto& s : run_bulk(o, ep, size, BulkPath::region)) {
      row.handoff.push_back(static_cast<double>(s.received_ns - s.send_ns));
      row.end_to_end.push_back(static_cast<double>(s.read_ns - s.send_ns));
      row.send_call.push_back(static_cast<double>(s.sent_ns - s.send_ns));
    }
    if (size <= ep.max_payload) {
      row.inline_path = BulkPath::inline_unix;
    } else if (!ep.tcp_address.empty()) {
      row.inline_path = BulkPath::tcp_receiver;
    }
    if (row.inline_path != BulkPath::none) {
      for (const auto& s : run_bulk(o, ep, size, row.inline_path)) {
        row.inline_received.push_back(static_cast<double>(s.received_ns - s.send_ns));
        row.inline_end_to_end.push_back(static_cast<double>(s.read_ns - s.send_ns));
      }
    }
    row.copy = run_memcpy(size, o.warmup, o.runs);
    rows.push_back(std::move(row));
  }
  if (o.json) {
    print_bulk_json(o, ep, rows);
  } else {
    print_bulk_table(o, ep, rows, daemon != nullptr);
  }
  return 0;
}

}  // namespace

Mode bulk_mode(CLI::App& cmd) {
  return bind_mode<BulkOptions>(cmd, add_options, bulk);
}

}  // namespace qbus::bench
