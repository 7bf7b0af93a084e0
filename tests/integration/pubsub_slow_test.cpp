// Publish/subscribe with subscribers that do not keep up (proto/PROTOCOL.md 18.4), and the
// broker's resources under fan-out: a subscriber that never reads under drop_oldest (the
// newest kept, every gap counted exactly), disconnect (the subscription ends with
// slow_subscriber while the others complete) and block (the publisher held until it
// reads, nothing lost); qbusd's memory bounded by the buffers whatever is published; and a
// 64 MiB region fanned out to four subscribers without a copy (pages shared, qbusd's fds
// back to their baseline).
//
// The daemon runs with a small per-connection output bound (limits.max_outbound_bytes),
// so that a subscriber that does not read has its messages buffered in its subscription
// after a few KiB rather than after 4 MiB. Publishers finish with sync(): once it returns
// the broker has carried out every publish. Waits are on messages and on the admin
// socket's JSON; the memory checks are limits, not speeds.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <qbus/client.hpp>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <future>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "admin_json.hpp"
#include "daemon.hpp"
#include "eventually.hpp"

namespace qbus::testing {
namespace {

using json = nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr auto kLong = seconds(60);  // for what must arrive
constexpr int kCount = 20000;        // messages of the slow-subscriber tests
constexpr std::uint32_t kSlowBuffer = 16;

// One admin request whose answer must be ok.
json admin(const Daemon& d, const std::string& request) {
  const json answer = admin_answer(d, request);
  if (!answer.value("ok", false)) throw std::runtime_error(request + ": " + answer.dump());
  return answer;
}

// The admin view of the subscription of connection `client_id`; null when it has none.
json subscription_of(const Daemon& d, std::uint64_t client_id) {
  const json answer = admin(d, "subscriptions");
  for (const auto& s : answer["subscriptions"]) {
    if (s["client"] == client_id) return s;
  }
  return nullptr;
}

json topics(const Daemon& d) {
  return admin(d, "topics")["topics"];
}

// The sequence number at the start of a payload, and the gap the broker reported before it.
struct Got {
  int seq = -1;
  std::uint64_t dropped = 0;
};

Got got_of(const Message& m) {
  return Got{std::stoi(std::string(m.text())), m.dropped_before()};
}

// A payload of `size` bytes that starts with the decimal `seq`.
std::string numbered(int seq, std::size_t size) {
  std::string p = std::to_string(seq) + ":";
  p.resize(std::max(size, p.size()), '.');
  return p;
}

// Every one of 0..n-1, in order, with no gap reported.
void expect_complete(const std::vector<Got>& got, int n, const std::string& who) {
  ASSERT_EQ(got.size(), static_cast<std::size_t>(n)) << who;
  for (int i = 0; i < n; ++i) {
    if (got[i].seq != i || got[i].dropped != 0) {
      ADD_FAILURE() << who << ": message " << i << " is " << got[i].seq << " after a gap of "
                    << got[i].dropped;
      return;
    }
  }
}

// A subscriber on its own thread that reads `n` messages as fast as it can. Constructed
// once its subscription is live. Its policy is block, so that however the threads are
// scheduled it gets everything (the publisher waits for it instead).
class FastReader {
 public:
  FastReader(const std::string& address, const std::string& pattern, int n) {
    std::promise<void> subscribed;
    auto live = subscribed.get_future();
    thread_ = std::thread([this, address, pattern, n, p = std::move(subscribed)]() mutable {
      bool told = false;
      try {
        Client c(ClientOptions{address, "fast", seconds(30)});
        auto sub = c.subscribe_subject(pattern, SubjectOptions{.slow = SlowPolicy::block});
        told = true;
        p.set_value();
        while (got_.size() < static_cast<std::size_t>(n)) {
          auto m = sub.next(kLong);
          if (!m) break;
          got_.push_back(got_of(*m));
        }
      } catch (const std::exception& e) {
        error_ = e.what();
        if (!told) p.set_value();
      }
    });
    live.wait();
  }
  ~FastReader() {
    if (thread_.joinable()) thread_.join();
  }
  FastReader(const FastReader&) = delete;
  FastReader& operator=(const FastReader&) = delete;
  std::vector<Got> join() {
    thread_.join();
    EXPECT_EQ(error_, "") << "fast subscriber";
    return got_;
  }

 private:
  std::thread thread_;
  std::vector<Got> got_;
  std::string error_;
};

class PubSubSlowTest : public ::testing::Test {
 protected:
  PubSubSlowTest()
      : daemon_(DaemonOptions{.config_json = R"({"limits": {"max_outbound_bytes": 65536}})"}) {}
  Client connect(const std::string& name, std::size_t region_threshold = 64 * 1024) {
    ClientOptions o{daemon_.address(), name, seconds(30)};
    o.region_threshold = region_threshold;
    return Client(o);
  }
  // Publishes 0..n-1 on feed.data, pipelined, and returns once the broker carried them out.
  void publish_feed(int n, std::size_t size) {
    auto pub = connect("publisher", SIZE_MAX);
    {
      Client::Batch batch(pub);
      for (int i = 0; i < n; ++i)
        pub.publish("feed.data", numbered(i, size));
    }
    pub.sync();
    EXPECT_EQ(pub.send_failures().count, 0u) << pub.send_failures().last_message;
  }

  Daemon daemon_;
};

TEST_F(PubSubSlowTest, DropOldestKeepsTheNewestAndCountsEveryGapExactly) {
  auto slow_client = connect("slow");
  auto slow = slow_client.subscribe_subject(
      "feed.>", SubjectOptions{.max_messages = kSlowBuffer, .slow = SlowPolicy::drop_oldest});
  FastReader fast(daemon_.address(), "feed.>", kCount);
  publish_feed(kCount, 256);
  expect_complete(fast.join(), kCount, "fast subscriber");

  // Only now does the slow one read: what was written to its connection before it fell
  // behind, then its buffer, the newest messages, each gap announced by the next delivery.
  std::vector<Got> got;
  while (got.empty() || got.back().seq != kCount - 1) {
    auto m = slow.next(kLong);
    ASSERT_TRUE(m) << "the newest message never came; last " << (got.empty() ? -1 : got.back().seq);
    got.push_back(got_of(*m));
  }
  std::uint64_t dropped = 0;
  int prev = -1;
  for (const auto& g : got) {
    ASSERT_GT(g.seq, prev);
    EXPECT_EQ(g.dropped, static_cast<std::uint64_t>(g.seq - prev - 1)) << "before " << g.seq;
    dropped += g.dropped;
    prev = g.seq;
  }
  EXPECT_EQ(dropped + got.size(), static_cast<std::uint64_t>(kCount));
  EXPECT_GT(dropped, 0u) << "the slow subscriber was never slow";
  ASSERT_GE(got.size(), kSlowBuffer);
  for (std::size_t i = 0; i < kSlowBuffer; ++i) {
    EXPECT_EQ(got[got.size() - kSlowBuffer + i].seq, kCount - static_cast<int>(kSlowBuffer - i))
        << "the buffer's newest " << kSlowBuffer;
  }

  const json s = subscription_of(daemon_, slow_client.session().client_id);
  ASSERT_FALSE(s.is_null()) << "client " << slow_client.session().client_id << " not in "
                            << admin(daemon_, "subscriptions").dump();
  EXPECT_EQ(s["pattern"], "feed.>");
  EXPECT_EQ(s["slow"], "drop_oldest");
  EXPECT_EQ(s["max_messages"], kSlowBuffer);
  EXPECT_EQ(s["matched"], kCount);
  EXPECT_EQ(s["delivered"], got.size());
  EXPECT_EQ(s["dropped"], dropped);
  EXPECT_EQ(s["buffered_messages"], 0);
  EXPECT_EQ(topics(daemon_)["dropped_total"], dropped);
  slow.cancel();
  EXPECT_FALSE(slow.next(milliseconds(0))) << "something after the newest";
}

TEST_F(PubSubSlowTest, DisconnectEndsTheSlowSubscriptionAndTheOthersComplete) {
  auto slow_client = connect("slow");
  const auto slow_id = slow_client.session().client_id;
  auto slow = slow_client.subscribe_subject(
      "feed.>", SubjectOptions{.max_messages = kSlowBuffer, .slow = SlowPolicy::disconnect});
  FastReader fast(daemon_.address(), "feed.>", kCount);
  publish_feed(kCount, 256);
  expect_complete(fast.join(), kCount, "fast subscriber");

  // What reached its connection before the buffer overflowed comes first, whole and in
  // order; then the subscription ends.
  std::vector<Got> got;
  Errc ended = Errc::ok;
  std::string why;
  while (true) {
    try {
      auto m = slow.next(kLong);
      if (!m) break;
      got.push_back(got_of(*m));
    } catch (const Error& e) {
      ended = e.code();
      why = e.what();
      break;
    }
  }
  EXPECT_TRUE(ended == Errc::slow_subscriber || ended == Errc::connection_closed)
      << "ended with " << errc_name(ended) << ": " << why;
  EXPECT_FALSE(slow.active());
  EXPECT_LT(got.size(), static_cast<std::size_t>(kCount));
  expect_complete(got, static_cast<int>(got.size()), "slow subscriber before its end");

  EXPECT_TRUE(subscription_of(daemon_, slow_id).is_null());
  const json t = topics(daemon_);
  EXPECT_EQ(t["disconnected_total"], 1);
  EXPECT_EQ(t["dropped_total"], 0);
}

TEST_F(PubSubSlowTest, BlockHoldsThePublisherUntilTheSlowOneReadsAndLosesNothing) {
  // 4 MiB: far more than the output bound, the sockets and the buffer hold together.
  constexpr int kBlockCount = 4000;
  auto slow_client = connect("slow");
  const auto slow_id = slow_client.session().client_id;
  auto slow = slow_client.subscribe_subject(
      "feed.>", SubjectOptions{.max_messages = kSlowBuffer, .slow = SlowPolicy::block});
  FastReader fast(daemon_.address(), "feed.>", kBlockCount);
  std::atomic<bool> done{false};
  std::thread publisher([&] {
    publish_feed(kBlockCount, 1024);
    done = true;
  });
  // The slow one's buffer fills, and then the publisher is held.
  EXPECT_TRUE(eventually([&] {
    const json s = subscription_of(daemon_, slow_id);
    return !s.is_null() && s["buffered_messages"] == kSlowBuffer;
  })) << subscription_of(daemon_, slow_id).dump();
  EXPECT_FALSE(done.load()) << "the publisher finished while the slow subscriber was full";

  std::vector<Got> got;
  for (int i = 0; i < kBlockCount; ++i) {
    auto m = slow.next(kLong);
    ASSERT_TRUE(m) << "message " << i << " never came";
    got.push_back(got_of(*m));
  }
  publisher.join();
  EXPECT_TRUE(done.load());
  expect_complete(got, kBlockCount, "slow subscriber");
  expect_complete(fast.join(), kBlockCount, "fast subscriber");
  const json s = subscription_of(daemon_, slow_id);
  ASSERT_FALSE(s.is_null());
  EXPECT_EQ(s["slow"], "block");
  EXPECT_EQ(s["dropped"], 0);
  EXPECT_EQ(s["delivered"], kBlockCount);
  EXPECT_EQ(topics(daemon_)["dropped_total"], 0);
}

// Cancels `sub` on another thread and waits up to `limit` for the broker's answer. Should
// it never come, qbusd is stopped, which ends the call (connection_closed), and the answer
// is false: the test fails instead of hanging until ctest's timeout.
bool cancel_within(Subscription& sub, Daemon& d, seconds limit) {
  auto done = std::async(std::launch::async, [&] { sub.cancel(); });
  if (done.wait_for(limit) == std::future_status::ready) {
    done.get();
    return true;
  }
  d.stop();
  done.wait();
  return false;
}

// A /proc/<pid>/status field in bytes ("VmHWM", "VmRSS").
long status_bytes(pid_t pid, const std::string& field) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);) {
    if (line.starts_with(field + ":")) return std::stol(line.substr(field.size() + 1)) * 1024;
  }
  return -1;
}

TEST_F(PubSubSlowTest, MemoryStaysBoundedByTheBufferWhateverIsPublished) {
  constexpr std::size_t kMessage = 64 * 1024;
  constexpr int kMessages = 3200;  // 200 MiB
  constexpr long kBound = 128l << 20;
  auto never = connect("never-reads");
  const auto never_id = never.session().client_id;
  auto sub = never.subscribe_subject(
      "bulk.>", SubjectOptions{.max_bytes = 1 << 20, .slow = SlowPolicy::drop_oldest});
  const long baseline = daemon_.rss_bytes();
  ASSERT_GT(baseline, 0);
  auto pub = connect("publisher", SIZE_MAX);  // inline payloads, through qbusd's memory
  {
    Client::Batch batch(pub);
    for (int i = 0; i < kMessages; ++i)
      pub.publish("bulk.data", numbered(i, kMessage));
  }
  pub.sync();
  EXPECT_EQ(pub.send_failures().count, 0u);
  // VmHWM: the peak over the whole run, not a sample after it.
  const long peak = status_bytes(daemon_.pid(), "VmHWM");
#if defined(__SANITIZE_ADDRESS__)
  // ASan keeps freed memory in quarantine (up to 256 MiB), so RSS bounds nothing here; the
  // counts below and the leak check at the daemon's exit still hold in this build.
  (void)peak;
  (void)kBound;
#else
  EXPECT_LT(peak - baseline, kBound) << "baseline " << baseline << ", peak " << peak;
  EXPECT_LT(daemon_.rss_bytes() - baseline, kBound);
#endif

  const json s = subscription_of(daemon_, never_id);
  ASSERT_FALSE(s.is_null()) << "client " << never_id << " not in "
                            << admin(daemon_, "subscriptions").dump();
  EXPECT_LE(s["buffered_bytes"].get<std::uint64_t>(), 1u << 20);
  EXPECT_EQ(s["matched"], kMessages);
  EXPECT_GT(s["dropped"].get<std::uint64_t>(), 0u);
  EXPECT_EQ(s["dropped"].get<std::uint64_t>() + s["delivered"].get<std::uint64_t>() +
                s["buffered_messages"].get<std::uint64_t>(),
            static_cast<std::uint64_t>(kMessages))
      << s.dump();
  // Its output is still backed up when its UNSUBSCRIBE comes: the broker must read that
  // frame once the subscriber has read enough, and answer it.
  EXPECT_TRUE(cancel_within(sub, daemon_, seconds(60)))
      << "qbusd never answered the UNSUBSCRIBE of a subscriber whose output was backed up";
}

// Deterministic bytes from a seed (splitmix64), so that every subscriber can check them.
void fill(std::span<std::byte> out, std::uint64_t seed) {
  std::uint64_t x = seed;
  std::size_t i = 0;
  for (; i + 8 <= out.size(); i += 8) {
    std::uint64_t z = (x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    std::memcpy(out.data() + i, &z, 8);
  }
  for (; i < out.size(); ++i)
    out[i] = static_cast<std::byte>(i);
}

// FNV-1a over 64-bit words.
std::uint64_t checksum(std::span<const std::byte> in) {
  std::uint64_t h = 0xCBF29CE484222325ull;
  std::size_t i = 0;
  for (; i + 8 <= in.size(); i += 8) {
    std::uint64_t w;
    std::memcpy(&w, in.data() + i, 8);
    h = (h ^ w) * 0x100000001B3ull;
  }
  for (; i < in.size(); ++i)
    h = (h ^ std::to_integer<std::uint64_t>(in[i])) * 0x100000001B3ull;
  return h;
}

TEST_F(PubSubSlowTest, ARegionFansOutToFourSubscribersWithoutACopy) {
  constexpr std::size_t kSize = 64u << 20;
  constexpr int kSubscribers = 4;
  std::vector<Client> clients;
  std::vector<Subscription> subs;
  for (int i = 0; i < kSubscribers; ++i) {
    clients.push_back(connect("subscriber-" + std::to_string(i)));
    subs.push_back(clients.back().subscribe_subject("blob.*"));
  }
  auto pub = connect("publisher");
  const int fds = daemon_.open_fds();
  const long rss = daemon_.rss_bytes();
  std::uint64_t want = 0;
  {
    auto r = pub.allocate_region(kSize);
    fill(r.data(), 2026);
    want = checksum(r.data());
    pub.publish("blob.big", std::move(r));
    pub.sync();
    EXPECT_EQ(pub.send_failures().count, 0u) << pub.send_failures().last_message;
    std::vector<Message> got;
    for (int i = 0; i < kSubscribers; ++i) {
      auto m = subs[i].next(kLong);
      ASSERT_TRUE(m) << "subscriber " << i;
      EXPECT_EQ(m->key(), "blob.big");
      EXPECT_TRUE(m->in_shared_memory()) << "subscriber " << i;
      ASSERT_EQ(m->size(), kSize);
      EXPECT_EQ(checksum(m->bytes()), want) << "subscriber " << i;
      got.push_back(std::move(*m));
    }
    // One region serves all four, and its pages were never copied into qbusd.
    EXPECT_TRUE(eventually([&] { return daemon_.open_regions() == 1; }))
        << daemon_.open_regions() << " region memfds";
    EXPECT_LT(daemon_.rss_bytes() - rss, 16l << 20) << "qbusd's RSS grew by the region";
  }
  // The messages are gone; each Client releases its handle with its next call.
  for (auto& c : clients)
    c.sync();
  pub.sync();
  EXPECT_TRUE(eventually([&] { return daemon_.open_regions() == 0; }))
      << daemon_.open_regions() << " region memfds still open";
  EXPECT_TRUE(eventually([&] { return daemon_.open_fds() == fds; }))
      << daemon_.open_fds() << " fds open, baseline " << fds;
}

}  // namespace
}  // namespace qbus::testing
