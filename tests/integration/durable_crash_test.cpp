// The crash harness of durable queues (proto/PROTOCOL.md 17.11): qbusd is SIGKILLed again
// and again at random moments while producers send confirmed messages and consumers take
// them with acknowledgements, always on one state directory; at the end nothing confirmed
// may be missing or damaged.
//
// Crash harness
// -------------
// ctest runs 50 iterations (DurableCrashTest, about 10 s on two cores). A longer run by
// hand, from the build directory:
//
//   QBUS_CRASH_ITERATIONS=1000 tests/integration/integration_durable_crash
//
// (about 2 minutes). Each run prints its seed; QBUS_CRASH_SEED=N replays the same kill
// delays and message sizes (how the threads interleave with the kill still varies).
//
// What one iteration does: start qbusd on the kept state directory, whose configuration
// declares two durable queues, crash.always (fsync always) and crash.batch (fsync batch,
// batch_ms 10), with segment_bytes 65536 so that segments rotate and are compacted and
// deleted; two producer threads, each with its own Client, send confirmed messages to both
// queues, alternately; two consumer threads, each with its own Client and each the only
// consumer of one queue, receive in acknowledgement mode: crash.always one message at a
// time, acked each (every seventh ack confirmed), crash.batch up to 16 at once, batch-acked
// with ack_up_to. Every fourth iteration, and the last, runs no consumers, so that a
// backlog builds up for the recoveries and the final drain. Once every thread is connected
// and each producer has a confirmed send in, the harness waits 20-150 ms (seeded) and
// SIGKILLs qbusd. After the last iteration one more qbusd drains both queues, and a last
// start must find them empty.
//
// A message is "p<producer> q<queue> s<sequence> |<pattern>|<checksum>", the pattern's
// length (100-3100 bytes; every 25th message 40,000, longer than a journal block) and
// letters a function of the three numbers and the seed, with the headers producer=<p> and
// seq=<s>. Sequences run on across iterations, one per producer and queue; a send that the
// kill interrupted is "sent, unconfirmed" and its sequence is never used again.
//
// What is asserted, over every reception before the kills and in the final drain:
// - every confirmed message was received at least once, its payload and headers exactly
//   as sent (lost = 0);
// - every received message is one that was sent: well-formed, on the queue it was sent
//   to, with a sequence that producer used for that queue, payload and headers intact;
// - per producer and queue, the sequences of first receptions strictly increase. Each
//   queue has a single consumer at a time and a producer's sends are serial, so the
//   journal stores them in sequence order; a crash may hand earlier messages out again
//   (unsettled ones come back first, as redelivered, or not marked when the crash beat
//   their delivery record to the file), but those are repeats, never first receptions;
// - the journal's recovery never reports damage in the middle of a segment nor an
//   unusable record (a SIGKILL can only leave a torn tail), brings both queues back every
//   time, and the last recovery's message count is what the drain found.
// Duplicates (at-least-once) are counted and printed, with the totals.
#include <signal.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <qbus/client.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "daemon.hpp"
#include "eventually.hpp"

namespace qbus::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using SteadyClock = std::chrono::steady_clock;

constexpr int kProducers = 2;
constexpr int kQueues = 2;
const char* const kKeys[kQueues] = {"crash.always", "crash.batch"};
const ReceiveOptions kAck{true};

constexpr const char* kConfig = R"({
  "storage": {"fsync": "batch", "batch_ms": 10, "segment_bytes": 65536},
  "queues": [
    {"key": "crash.always", "durable": true, "fsync": "always"},
    {"key": "crash.batch", "durable": true, "fsync": "batch"}
  ]
})";

std::uint64_t mix(std::uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  return x ^ (x >> 33);
}

// The one payload that message (p, q, seq) of a run seeded `salt` may have.
std::string make_payload(std::uint64_t salt, int p, int q, std::uint64_t seq) {
  const std::uint64_t h = mix(salt ^ mix((static_cast<std::uint64_t>(p) << 56) ^
                                         (static_cast<std::uint64_t>(q) << 48) ^ seq));
  const std::size_t len = seq % 25 == 24 ? 40000 : 100 + h % 3000;
  std::string s =
      "p" + std::to_string(p) + " q" + std::to_string(q) + " s" + std::to_string(seq) + " |";
  for (std::size_t i = 0; i < len; ++i)
    s.push_back(static_cast<char>('a' + (h + i * 7) % 26));
  std::uint32_t sum = 2166136261u;  // FNV-1a over everything before it
  for (const char c : s)
    sum = (sum ^ static_cast<unsigned char>(c)) * 16777619u;
  char hex[16];
  std::snprintf(hex, sizeof hex, "|%08x", sum);
  return s + hex;
}

Headers make_headers(int p, std::uint64_t seq) {
  return {{"producer", std::to_string(p)}, {"seq", std::to_string(seq)}};
}

// One message a consumer took, checked against what its headers say it is.
struct Reception {
  int producer = -1;
  std::uint64_t seq = 0;
  bool intact = false;  // headers well-formed, payload exactly make_payload(...)
  bool redelivered = false;
  std::uint32_t deliveries = 0;
  int iteration = 0;  // -1: the final drain
  std::string bad;    // what was wrong, when not intact (the payload's start, the headers)
};

Reception check(std::uint64_t salt, int q, const Message& m, int iteration) {
  Reception r;
  r.redelivered = m.redelivered();
  r.deliveries = m.delivery_count();
  r.iteration = iteration;
  const auto p = m.header("producer");
  const auto s = m.header("seq");
  if (p && s && m.headers().size() == 2) {
    try {
      r.producer = std::stoi(std::string(*p));
      r.seq = std::stoull(std::string(*s));
    } catch (const std::exception&) {
      r.producer = -1;
    }
  }
  if (r.producer >= 0 && r.producer < kProducers &&
      m.headers() == make_headers(r.producer, r.seq) &&
      m.text() == make_payload(salt, r.producer, q, r.seq)) {
    r.intact = true;
    return r;
  }
  r.bad = "payload '" + std::string(m.text().substr(0, 60)) + "...' (" + std::to_string(m.size()) +
          " bytes), headers";
  for (const auto& [k, v] : m.headers())
    r.bad += " " + k + "=" + v;
  return r;
}

// What a producer did for one queue, over the whole run.
struct Sent {
  std::uint64_t next = 0;                // sequences below this were sent (tried)
  std::vector<std::uint64_t> confirmed;  // in order
  std::uint64_t unconfirmed = 0;         // sends the kill interrupted
};

bool is_disconnect(Errc e) {
  return e == Errc::connection_closed || e == Errc::io_error || e == Errc::connect_failed;
}

class DurableCrashTest : public ::testing::Test {
 protected:
  static int env_int(const char* name, int fallback) {
    const char* v = std::getenv(name);
    return v && *v ? std::atoi(v) : fallback;
  }
};

TEST_F(DurableCrashTest, NothingConfirmedIsLostAcrossRepeatedSigkills) {
  const int iterations = std::max(1, env_int("QBUS_CRASH_ITERATIONS", 50));
  const std::uint64_t seed = std::getenv("QBUS_CRASH_SEED")
                                 ? std::strtoull(std::getenv("QBUS_CRASH_SEED"), nullptr, 10)
                                 : std::random_device{}();
  std::printf("crash harness: %d iterations, seed %llu (QBUS_CRASH_SEED=%llu replays it)\n",
              iterations, static_cast<unsigned long long>(seed),
              static_cast<unsigned long long>(seed));
  std::fflush(stdout);
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> delay_ms(20, 150);
  const auto started = SteadyClock::now();

  TempDir keep;
  DaemonOptions options;
  options.config_json = kConfig;
  options.state_dir = keep.file("state");
  options.log_level = "info";

  Sent sent[kProducers][kQueues];
  std::vector<Reception> received[kQueues];  // in the order the queue's consumer took them
  std::vector<std::string> unexpected;       // errors other than the kill's disconnects
  int torn_tails = 0;
  std::uint64_t torn_bytes = 0;

  for (int it = 0; it < iterations; ++it) {
    auto daemon = std::make_unique<Daemon>(options);
    {
      const std::string log = daemon->log();
      // The configuration declares the two queues only after recovery: the first start
      // finds an empty journal.
      EXPECT_NE(log.find(it == 0 ? "recovered 0 durable queues and 0 messages"
                                 : "recovered 2 durable queues and "),
                std::string::npos)
          << "iteration " << it << ":\n"
          << log;
      for (const char* bad : {"damage at offset", "could not be read", "could not be restored",
                              "durable queues are off"}) {
        EXPECT_EQ(log.find(bad), std::string::npos) << "iteration " << it << ":\n" << log;
      }
      for (auto at = log.find("torn tail at offset"); at != std::string::npos;
           at = log.find("torn tail at offset", at + 1)) {
        ++torn_tails;
        const auto colon = log.find(": ", at + 20);
        torn_bytes += std::strtoull(log.c_str() + colon + 2, nullptr, 10);
      }
    }
    const ClientOptions copts{daemon->address(), "crash-harness", seconds(30)};
    std::atomic<int> connected{0};
    std::atomic<int> producing{0};  // producers with a confirmed send in this iteration
    std::mutex mu;                  // guards `unexpected`
    const auto note = [&](const std::string& who, const Error& e) {
      if (is_disconnect(e.code())) return;
      std::lock_guard lk(mu);
      unexpected.push_back("iteration " + std::to_string(it) + ": " + who + ": " + e.what());
    };
    std::vector<std::thread> threads;
    for (int p = 0; p < kProducers; ++p) {
      threads.emplace_back([&, p] {
        bool first = true;
        try {
          Client c(copts);
          ++connected;
          for (;;) {
            for (int q = 0; q < kQueues; ++q) {
              Sent& s = sent[p][q];
              const std::uint64_t seq = s.next++;
              try {
                c.send(kKeys[q], make_payload(seed, p, q, seq),
                       SendOptions{make_headers(p, seq), true});
              } catch (const Error&) {
                ++s.unconfirmed;
                throw;
              }
              s.confirmed.push_back(seq);
              if (first) {
                first = false;
                ++producing;
              }
            }
          }
        } catch (const Error& e) {
          note("producer " + std::to_string(p), e);
        } catch (const std::exception& e) {
          std::lock_guard lk(mu);
          unexpected.push_back("iteration " + std::to_string(it) + ": producer: " + e.what());
        }
      });
    }
    // Every fourth iteration, and the last, runs no consumers: a backlog builds up that the
    // next recoveries (and the final drain) must bring back whole.
    const bool consume = it % 4 != 3 && it != iterations - 1;
    for (int q = 0; q < kQueues && consume; ++q) {
      threads.emplace_back([&, q] {
        std::vector<Reception>& out = received[q];
        try {
          Client c(copts);
          ++connected;
          for (std::uint64_t n = 0;; ++n) {
            if (q == 0) {
              auto m = c.receive(kKeys[q], milliseconds(100), kAck);
              if (!m) continue;
              out.push_back(check(seed, q, *m, it));
              c.ack(*m, n % 7 == 0);
            } else {
              auto batch = c.receive_batch(kKeys[q], 16, milliseconds(100), kAck);
              if (batch.empty()) continue;
              for (const Message& m : batch)
                out.push_back(check(seed, q, m, it));
              c.ack_up_to(batch.back().delivery_tag(), n % 5 == 0);
            }
          }
        } catch (const Error& e) {
          note(std::string("consumer of ") + kKeys[q], e);
        } catch (const std::exception& e) {
          std::lock_guard lk(mu);
          unexpected.push_back("iteration " + std::to_string(it) + ": consumer: " + e.what());
        }
      });
    }
    const bool running = eventually(
        [&] {
          return connected == kProducers + (consume ? kQueues : 0) && producing == kProducers;
        },
        seconds(60));
    EXPECT_TRUE(running) << "iteration " << it << ": the clients did not get going\n"
                         << daemon->log();
    std::this_thread::sleep_for(milliseconds(delay_ms(rng)));
    ASSERT_EQ(::kill(daemon->pid(), SIGKILL), 0);
    for (auto& t : threads)
      t.join();
    // Reaps it (the SIGTERM comes too late to matter); -1: it died of a signal.
    EXPECT_EQ(daemon->stop(), -1);
    if (!running) break;
  }

  // The last qbusd: everything left comes out.
  std::uint64_t drained = 0;
  std::uint64_t last_recovered = 0;
  {
    Daemon daemon(options);
    const std::string log = daemon.log();
    const std::string marker = "recovered 2 durable queues and ";
    const auto at = log.find(marker);
    ASSERT_NE(at, std::string::npos) << log;
    last_recovered = std::strtoull(log.c_str() + at + marker.size(), nullptr, 10);
    Client c(ClientOptions{daemon.address(), "crash-drain", seconds(30)});
    for (int q = 0; q < kQueues; ++q) {
      for (;;) {
        auto batch = c.receive_batch(kKeys[q], 64, milliseconds(500), kAck);
        if (batch.empty()) break;
        for (const Message& m : batch)
          received[q].push_back(check(seed, q, m, -1));
        drained += batch.size();
        c.ack_up_to(batch.back().delivery_tag(), true);
      }
    }
    EXPECT_EQ(drained, last_recovered) << "the drain found another count than recovery did";
    EXPECT_EQ(daemon.stop(), 0) << daemon.log();
  }
  {
    Daemon daemon(options);
    EXPECT_TRUE(daemon.wait_for_log("recovered 2 durable queues and 0 messages")) << daemon.log();
    Client c(ClientOptions{daemon.address(), "crash-empty", seconds(30)});
    for (const char* key : kKeys)
      EXPECT_FALSE(c.receive(key, milliseconds(200))) << key;
  }

  // Segments begun by rotation (each start begins one too) and those still on disk.
  std::uint64_t highest = 0, on_disk = 0;
  for (const auto& e : std::filesystem::directory_iterator(options.state_dir)) {
    const std::string n = e.path().filename().string();
    if (n.size() != 19 || !n.ends_with(".qj")) continue;
    ++on_disk;
    highest = std::max<std::uint64_t>(highest, std::stoull(n.substr(0, 16), nullptr, 16));
  }
  const std::uint64_t starts = static_cast<std::uint64_t>(iterations) + 2;

  // The checks.
  for (const std::string& u : unexpected)
    ADD_FAILURE() << "unexpected error: " << u;
  std::uint64_t total_sent = 0, confirmed = 0, receptions = 0, unique = 0, duplicates = 0,
                redelivered = 0, lost = 0, bad = 0, unconfirmed = 0, unconfirmed_arrived = 0;
  for (int q = 0; q < kQueues; ++q) {
    std::map<std::pair<int, std::uint64_t>, int> times;  // (producer, seq) -> receptions
    std::uint64_t last_first[kProducers] = {};
    bool any_first[kProducers] = {};
    int order_failures = 0;
    for (const Reception& r : received[q]) {
      ++receptions;
      if (r.redelivered) ++redelivered;
      if (!r.intact) {
        ++bad;
        ADD_FAILURE() << kKeys[q] << ": a message that was never sent (iteration " << r.iteration
                      << "): " << r.bad;
        continue;
      }
      if (r.seq >= sent[r.producer][q].next) {
        ++bad;
        ADD_FAILURE() << kKeys[q] << ": producer " << r.producer << " never sent seq " << r.seq;
        continue;
      }
      if (times[{r.producer, r.seq}]++ != 0) {
        ++duplicates;
        continue;
      }
      ++unique;
      if (any_first[r.producer] && r.seq <= last_first[r.producer] && order_failures++ < 10) {
        ADD_FAILURE() << kKeys[q] << ": producer " << r.producer << " seq " << r.seq
                      << " first received (iteration " << r.iteration << ") after seq "
                      << last_first[r.producer];
      }
      any_first[r.producer] = true;
      last_first[r.producer] = std::max(last_first[r.producer], r.seq);
    }
    for (int p = 0; p < kProducers; ++p) {
      const Sent& s = sent[p][q];
      total_sent += s.next;
      confirmed += s.confirmed.size();
      unconfirmed += s.unconfirmed;
      std::set<std::uint64_t> confirmed_set(s.confirmed.begin(), s.confirmed.end());
      for (const std::uint64_t seq : s.confirmed) {
        if (times.count({p, seq}) == 0 && lost++ < 20) {
          ADD_FAILURE() << kKeys[q] << ": producer " << p << " seq " << seq
                        << " was confirmed and never received";
        }
      }
      for (std::uint64_t seq = 0; seq < s.next; ++seq) {
        if (confirmed_set.count(seq) == 0 && times.count({p, seq}) != 0) ++unconfirmed_arrived;
      }
    }
  }
  const double secs = std::chrono::duration<double>(SteadyClock::now() - started).count();
  std::printf(
      "crash harness: seed %llu, %d iterations in %.1f s: sent %llu, confirmed %llu, unconfirmed "
      "%llu (%llu of them arrived), received %llu (%llu marked redelivered), unique %llu, "
      "duplicates %llu, lost %llu, never sent or damaged %llu; torn tails %d (%llu bytes); "
      "drained at the end %llu; segments: %llu begun, %llu of them by rotation, %llu left on "
      "disk\n",
      static_cast<unsigned long long>(seed), iterations, secs,
      static_cast<unsigned long long>(total_sent), static_cast<unsigned long long>(confirmed),
      static_cast<unsigned long long>(unconfirmed),
      static_cast<unsigned long long>(unconfirmed_arrived),
      static_cast<unsigned long long>(receptions), static_cast<unsigned long long>(redelivered),
      static_cast<unsigned long long>(unique), static_cast<unsigned long long>(duplicates),
      static_cast<unsigned long long>(lost), static_cast<unsigned long long>(bad), torn_tails,
      static_cast<unsigned long long>(torn_bytes), static_cast<unsigned long long>(drained),
      static_cast<unsigned long long>(highest),
      static_cast<unsigned long long>(highest > starts ? highest - starts : 0),
      static_cast<unsigned long long>(on_disk));
  EXPECT_EQ(lost, 0u);
  EXPECT_EQ(bad, 0u);
  EXPECT_GT(confirmed, 0u);
}

}  // namespace
}  // namespace qbus::testing
