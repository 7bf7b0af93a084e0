// qbus-bench regions: what a region costs from allocate_region() until the receiver holds it,
// not counting the time the sender takes to fill it, with and without the client's region
// pool (ClientOptions::region_pool_bytes), beside a plain memfd the sender makes itself.
//
// Per size and round: t0 allocate_region() t1, fill (not timed), t2 send(key, region), and the
// consumer's receive() returns at t3 in another process (it waited in receive before t2, as in
// `bulk`). The figure is (t1 - t0) + (t3 - t2).
//   cold  a Client without a pool: the grant, then the pages allocated and zeroed inline;
//   warm  a Client with a pool, each round started once the pool has a region of that size
//         ready again (what a sender that allocates no faster than the pool refills sees);
//   plain memfd_create + ftruncate + fallocate in the sender, no broker: the reference for
//         the cold allocation, shown as is and with every page first written as well (shmem's
//         fallocate reserves pages but leaves zeroing them to the first write).
// Then --paced: a pooled sender allocates one region of the largest size every
// --interval-ms and sends it (one byte written per page), and the pool's hits and misses and
// the allocation time are reported. shmem_enabled is printed: huge pages change the figures.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "common.hpp"
#include "daemon.hpp"
#include "modes.hpp"
#include "process.hpp"

namespace qbus::bench {
namespace {

constexpr char kKey[] = "bench.regions";
constexpr char kReady[] = "bench.regions.ready";

struct RegionsOptions {
  std::vector<std::size_t> sizes = {std::size_t{4} << 10, std::size_t{1} << 20,
                                    std::size_t{64} << 20};
  int runs = 9;
  int paced = 100;  // allocations of the paced sender; 0: none
  int interval_ms = 10;
  std::string address;
  bool json = false;
};

void add_options(CLI::App& cmd, RegionsOptions& o) {
  cmd.add_option("--sizes", o.sizes, "Region sizes, comma-separated; K, M, G suffixes (4K,64M)")
      ->delimiter(',')
      ->transform(CLI::AsSizeValue(false))
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 30));
  cmd.add_option("--runs", o.runs, "Rounds per size and case; medians and p90 are reported")
      ->check(CLI::Range(1, 999));
  cmd.add_option("--paced", o.paced, "Allocations of the paced pooled sender (0: skip it)")
      ->check(CLI::Range(0, 100000));
  cmd.add_option("--interval-ms", o.interval_ms, "The paced sender's period")
      ->check(CLI::Range(1, 10000));
  cmd.add_option("--address", o.address, "Use a running broker instead of a private one");
  cmd.add_flag("--json", o.json, "One JSON object instead of the table");
}

std::string shmem_enabled() {
  std::ifstream f("/sys/kernel/mm/transparent_hugepage/shmem_enabled");
  std::string line;
  std::getline(f, line);
  const auto open = line.find('['), close = line.find(']');
  return open != std::string::npos && close > open ? line.substr(open + 1, close - open - 1)
                                                   : "unknown";
}

void touch_pages(std::span<std::byte> bytes) {
  for (std::size_t i = 0; i < bytes.size(); i += 4096)
    bytes[i] = std::byte{1};
}

qbus::Client region_client(const std::string& address, std::size_t pool_bytes) {
  qbus::ClientOptions co{address, "qbus-bench", seconds(30)};
  co.region_pool_bytes = pool_bytes;
  return qbus::Client(co);
}

// One consumer process that takes `total` region messages, each after announcing that it
// waits; writes the time each receive() returned into `received`.
struct Consumer {
  Consumer(const std::string& address, int total)
      : received(static_cast<std::size_t>(total)), child([this, address, total] {
          auto c = region_client(address, 0);
          for (int i = 0; i < total; ++i) {
            std::optional<qbus::Message> m;
            {
              qbus::Client::Batch batch(c);  // READY and RECEIVE in one write, in order
              c.send(kReady, "r");
              m = c.receive(kKey, kIdleTimeout);
              received[static_cast<std::size_t>(i)] = now_ns();
            }
            if (!m || !m->in_shared_memory()) return 1;
          }
          c.sync();
          return 0;
        }) {}
  SharedArray<long long> received;
  Child child;
};

struct Percentiles {
  double p50 = 0, p90 = 0, max = 0;
};

Percentiles percentiles(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const auto at = [&](double q) {
    return v[std::min(v.size() - 1, static_cast<std::size_t>(q * static_cast<double>(v.size())))];
  };
  return {median_of(v), at(0.9), v.back()};
}

struct CaseResult {
  std::vector<double> alloc, total;  // ns per round
};

// Rounds of allocate, fill, send to a waiting consumer; `pool_bytes` 0: no pool.
CaseResult run_case(const std::string& address, std::size_t size, std::size_t pool_bytes,
                    int runs) {
  const int total = runs + 1;  // the first round (cold in both cases) is not reported
  Consumer consumer(address, total);
  auto c = region_client(address, pool_bytes);
  std::vector<long long> t0(total), t1(total), t2(total);
  for (int i = 0; i < total; ++i) {
    if (pool_bytes != 0 && i > 0) {
      // Warm: the pool's worker has populated what it was asked for (a size it does not
      // pool, below 256 KiB, asks for nothing).
      for (auto st = c.region_pool_stats(); st.ready_bytes < st.held_bytes;
           st = c.region_pool_stats())
        std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    if (!c.receive(kReady, kIdleTimeout)) throw std::runtime_error("regions: no consumer");
    const auto k = static_cast<std::size_t>(i);
    t0[k] = now_ns();
    qbus::Region r = c.allocate_region(size);
    t1[k] = now_ns();
    fill_words(r.data(), k);
    t2[k] = now_ns();
    c.send(kKey, std::move(r));
  }
  if (sync_and_check(c, "regions producer") != 0 || !consumer.child.wait()) {
    throw std::runtime_error("regions: the consumer failed");
  }
  CaseResult out;
  for (std::size_t k = 1; k < static_cast<std::size_t>(total); ++k) {
    out.alloc.push_back(static_cast<double>(t1[k] - t0[k]));
    out.total.push_back(static_cast<double>(t1[k] - t0[k] + consumer.received[k] - t2[k]));
  }
  return out;
}

// memfd_create + ftruncate + fallocate, then (for `first_write`) mmap and one write per page.
std::vector<double> run_plain(std::size_t size, int runs, bool first_write) {
  std::vector<double> out;
  for (int i = 0; i <= runs; ++i) {
    const long long start = now_ns();
    Fd fd(::memfd_create("qbus-bench-plain", MFD_CLOEXEC | MFD_ALLOW_SEALING));
    if (fd.get() < 0 || ::ftruncate(fd.get(), static_cast<off_t>(size)) != 0 ||
        ::fallocate(fd.get(), 0, 0, static_cast<off_t>(size)) != 0) {
      throw std::runtime_error("regions: memfd_create/ftruncate/fallocate failed");
    }
    void* p = nullptr;
    if (first_write) {
      p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
      if (p == MAP_FAILED) throw std::runtime_error("regions: mmap failed");
      touch_pages({static_cast<std::byte*>(p), size});
    }
    const long long end = now_ns();
    if (p != nullptr) ::munmap(p, size);
    if (i > 0) out.push_back(static_cast<double>(end - start));
  }
  return out;
}

struct Paced {
  std::size_t size = 0;
  qbus::RegionPoolStats stats;
  std::vector<double> alloc;
};

Paced run_paced(const RegionsOptions& o, std::size_t size) {
  Paced out;
  out.size = size;
  // The consumer drops each message as the next one comes; nothing else paces it.
  Child consumer([&] {
    auto c = region_client(o.address, 0);
    for (int i = 0; i < o.paced; ++i) {
      if (!c.receive(kKey, kIdleTimeout)) return 1;
    }
    c.sync();
    return 0;
  });
  auto c = region_client(o.address, 2 * size);
  const auto period = std::chrono::milliseconds(o.interval_ms);
  auto next = std::chrono::steady_clock::now();
  for (int i = 0; i < o.paced; ++i) {
    std::this_thread::sleep_until(next);
    next += period;
    const long long start = now_ns();
    qbus::Region r = c.allocate_region(size);
    out.alloc.push_back(static_cast<double>(now_ns() - start));
    touch_pages(r.data());
    c.send(kKey, std::move(r));
  }
  out.stats = c.region_pool_stats();
  if (sync_and_check(c, "paced producer") != 0 || !consumer.wait()) {
    throw std::runtime_error("regions: the paced consumer failed");
  }
  return out;
}

struct Row {
  std::size_t size = 0;
  CaseResult cold, warm;
  std::vector<double> plain, plain_written;
};

std::string ms(double ns) {
  char buf[32];
  std::snprintf(buf, sizeof buf, ns < 1e6 ? "%.1f us" : "%.2f ms", ns < 1e6 ? ns / 1e3 : ns / 1e6);
  return buf;
}

int regions(RegionsOptions o) {
  ::signal(SIGPIPE, SIG_IGN);
  std::unique_ptr<qbus::testing::Daemon> daemon;
  if (o.address.empty()) {
    qbus::testing::DaemonOptions d;
    d.config_json = R"({"limits": {"uid_max_region_bytes": 4294967296}})";
    daemon = std::make_unique<qbus::testing::Daemon>(d);
    o.address = daemon->address();
  }
  std::vector<Row> rows;
  for (const std::size_t size : o.sizes) {
    Row r;
    r.size = size;
    r.cold = run_case(o.address, size, 0, o.runs);
    r.warm = run_case(o.address, size, 2 * size, o.runs);
    r.plain = run_plain(size, o.runs, false);
    r.plain_written = run_plain(size, o.runs, true);
    rows.push_back(std::move(r));
  }
  const std::size_t largest = *std::max_element(o.sizes.begin(), o.sizes.end());
  std::optional<Paced> paced;
  if (o.paced > 0) paced = run_paced(o, largest);

  const Row& base = *std::min_element(rows.begin(), rows.end(),
                                      [](const Row& a, const Row& b) { return a.size < b.size; });
  const double base_cold = median_of(base.cold.total);
  if (o.json) {
    std::printf("{\"benchmark\":\"regions\",\"shmem_enabled\":\"%s\",\"runs\":%d,\"sizes\":[",
                shmem_enabled().c_str(), o.runs);
    for (std::size_t i = 0; i < rows.size(); ++i) {
      const Row& r = rows[i];
      std::printf(
          "%s{\"size\":%zu,\"cold_us\":%.3f,\"cold_alloc_us\":%.3f,\"warm_us\":%.3f,"
          "\"warm_p90_us\":%.3f,\"warm_alloc_us\":%.3f,\"plain_fallocate_us\":%.3f,"
          "\"plain_written_us\":%.3f,\"ratio_warm_to_smallest_cold\":%.3f}",
          i ? "," : "", r.size, us(median_of(r.cold.total)), us(median_of(r.cold.alloc)),
          us(median_of(r.warm.total)), us(percentiles(r.warm.total).p90),
          us(median_of(r.warm.alloc)), us(median_of(r.plain)), us(median_of(r.plain_written)),
          ratio(median_of(r.warm.total), base_cold));
    }
    std::printf("]");
    if (paced) {
      const auto p = percentiles(paced->alloc);
      std::printf(
          ",\"paced\":{\"size\":%zu,\"interval_ms\":%d,\"allocations\":%d,\"hits\":%llu,"
          "\"waits\":%llu,\"misses\":%llu,\"alloc_p50_us\":%.3f,\"alloc_p90_us\":%.3f,\"alloc_max_"
          "us\":%.3f}",
          paced->size, o.interval_ms, o.paced, static_cast<unsigned long long>(paced->stats.hits),
          static_cast<unsigned long long>(paced->stats.waits),
          static_cast<unsigned long long>(paced->stats.misses), us(p.p50), us(p.p90), us(p.max));
    }
    std::printf("}\n");
    return 0;
  }
  std::printf(
      "regions: allocate_region() + send() until the receiver holds the region, filling not "
      "timed; median of %d round(s); shmem_enabled [%s]; %ld CPU(s)\n",
      o.runs, shmem_enabled().c_str(), cpus_online());
  std::printf("  %-9s %11s %11s %11s %11s %11s %13s %14s %10s\n", "size", "cold", "cold alloc",
              "warm", "warm alloc", "warm p90", "plain memfd", "plain+written", "warm/base");
  for (const Row& r : rows) {
    std::printf("  %-9s %11s %11s %11s %11s %11s %13s %14s %9.2fx\n",
                (std::to_string(r.size >> 10) + " KiB").c_str(),
                ms(median_of(r.cold.total)).c_str(), ms(median_of(r.cold.alloc)).c_str(),
                ms(median_of(r.warm.total)).c_str(), ms(median_of(r.warm.alloc)).c_str(),
                ms(percentiles(r.warm.total).p90).c_str(), ms(median_of(r.plain)).c_str(),
                ms(median_of(r.plain_written)).c_str(), ratio(median_of(r.warm.total), base_cold));
  }
  std::printf(
      "  cold: no pool; warm: a pool with a region of the size ready; base: the smallest "
      "size's cold figure\n"
      "  plain memfd: memfd_create+ftruncate+fallocate, no broker; plain+written: and every "
      "page written once (a cold region comes with its pages already zeroed)\n");
  if (paced) {
    const auto p = percentiles(paced->alloc);
    std::printf(
        "  paced: one %s region every %d ms, %d allocations: %llu ready in the pool, %llu "
        "waited for the one being populated, %llu missed; allocate_region p50 %s, p90 %s, "
        "max %s\n",
        (std::to_string(paced->size >> 10) + " KiB").c_str(), o.interval_ms, o.paced,
        static_cast<unsigned long long>(paced->stats.hits),
        static_cast<unsigned long long>(paced->stats.waits),
        static_cast<unsigned long long>(paced->stats.misses), ms(p.p50).c_str(), ms(p.p90).c_str(),
        ms(p.max).c_str());
  }
  return 0;
}

}  // namespace

Mode regions_mode(CLI::App& cmd) {
  return bind_mode<RegionsOptions>(cmd, add_options,
                                   [](const RegionsOptions& o) { return regions(o); });
}

}  // namespace qbus::bench
