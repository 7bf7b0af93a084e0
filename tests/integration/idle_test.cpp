// An idle qbusd sleeps: once its last client has gone and the traffic has left the rate
// window, no timer wakes any of its threads, and the next client wakes what sleeps (the
// admin socket's rate sampler, the service status). Busy polling (limits.busy_poll_us)
// lasts only while traffic comes.
#include <dirent.h>

#include <gtest/gtest.h>
#include <qbus/client.hpp>

#include <chrono>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "admin_json.hpp"
#include "daemon.hpp"
#include "eventually.hpp"

namespace qbus::testing {
namespace {

using std::chrono::seconds;
using Clock = std::chrono::steady_clock;

// Context switches of every thread of `pid` so far: each wake-up of a sleeping thread is one.
long long wakeups(pid_t pid) {
  const std::string dir = "/proc/" + std::to_string(pid) + "/task";
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return -1;
  long long total = 0;
  while (const dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::ifstream status(dir + "/" + e->d_name + "/status");
    for (std::string line; std::getline(status, line);) {
      for (const char* field : {"voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:"}) {
        if (line.rfind(field, 0) == 0) total += std::stoll(line.substr(std::strlen(field)));
      }
    }
  }
  ::closedir(d);
  return total;
}

// Waits (60 s at most) for a span of `quiet` in which no thread of `pid` woke; false if
// none came. Polling /proc from here does not wake the daemon.
bool goes_quiet(pid_t pid, std::chrono::milliseconds quiet, long long& last_delta) {
  const auto deadline = Clock::now() + seconds(60);
  while (Clock::now() < deadline) {
    const long long before = wakeups(pid);
    std::this_thread::sleep_for(quiet);
    last_delta = wakeups(pid) - before;
    if (last_delta == 0) return true;
  }
  return false;
}

TEST(IdleTest, NoTimerWakesADaemonWithoutClients) {
  Daemon d;  // with NOTIFY_SOCKET: the status updates are on too
  {
    qbus::ClientOptions o;
    o.address = d.address();
    qbus::Client c(o);
    c.send("idle.k", "one");
    const auto m = c.receive("idle.k", seconds(30));
    ASSERT_TRUE(m);
    ASSERT_EQ(m->text(), "one");
  }
  // The rate sampler ticks every second while the window (5 s) still holds traffic, and
  // the status every 2 s: a quiet span of 3 s means both stopped.
  long long delta = 0;
  ASSERT_TRUE(goes_quiet(d.pid(), std::chrono::milliseconds(3000), delta))
      << "the daemon kept waking: " << delta << " context switches in the last 3 s";
  // And it stays asleep.
  const long long before = wakeups(d.pid());
  std::this_thread::sleep_for(seconds(5));
  EXPECT_EQ(wakeups(d.pid()) - before, 0);
}

TEST(IdleTest, ABusyPollingDaemonAnswersAndStillGoesQuiet) {
  DaemonOptions options;
  options.config_json = R"({"limits": {"busy_poll_us": 2000}})";
  Daemon d(options);
  EXPECT_EQ(admin_request(d, {{"request", "config"}})["config"]["limits"]["busy_poll_us"], 2000)
      << "the setting did not take";
  constexpr int kRounds = 500;
  {
    qbus::ClientOptions o;
    o.address = d.address();
    std::vector<std::string> answered;
    std::thread responder([&] {
      qbus::Client c(o);
      for (int i = 0; i < kRounds; ++i) {
        const auto m = c.receive("idle.svc", seconds(30));
        if (!m) return;
        c.reply(*m, "re:" + std::string(m->text()));
      }
      c.sync();
    });
    qbus::Client c(o);
    for (int i = 0; i < kRounds; ++i) {
      const auto r = c.request("idle.svc", std::to_string(i), seconds(30));
      if (!r) break;
      answered.emplace_back(r->text());
    }
    responder.join();
    ASSERT_EQ(answered.size(), static_cast<std::size_t>(kRounds));
    for (int i = 0; i < kRounds; ++i)
      EXPECT_EQ(answered[i], "re:" + std::to_string(i));
  }
  long long delta = 0;
  EXPECT_TRUE(goes_quiet(d.pid(), std::chrono::milliseconds(3000), delta))
      << "the daemon kept waking: " << delta << " context switches in the last 3 s";
}

TEST(IdleTest, TheNextClientWakesTheRateSampler) {
  Daemon d;
  long long delta = 0;
  ASSERT_TRUE(goes_quiet(d.pid(), std::chrono::milliseconds(3000), delta)) << delta;

  qbus::ClientOptions o;
  o.address = d.address();
  qbus::Client c(o);
  for (int i = 0; i < 100; ++i)
    c.send("idle.k", "m");
  c.sync();
  // The sampler took a sample when the client came; the rates run from it to now.
  nlohmann::json stats;
  EXPECT_TRUE(eventually([&] {
    stats = admin_request(d, {{"request", "stats"}})["stats"];
    return stats["messages_in_per_s"].get<double>() > 0 &&
           stats["rate_window_s"].get<double>() >= 1;
  })) << stats.dump();
  EXPECT_LE(stats["rate_window_s"].get<double>(), 6.5) << stats.dump();
}

}  // namespace
}  // namespace qbus::testing
