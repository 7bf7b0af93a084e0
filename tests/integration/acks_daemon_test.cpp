// Acknowledgement mode against the real qbusd, from the broker's side: the version-2 wire
// rules a version-1 connection and a careless client meet, and redelivery when consumer
// processes are killed with SIGKILL (one holding 100 messages; 4 producers and 4
// consumers with consumers killed at random while 10,000 messages flow).
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <qbus/client.hpp>

#include <cstdio>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "daemon.hpp"
#include "process.hpp"
#include "qbus/proto/buffer.hpp"
#include "qbus/proto/headers.hpp"
#include "raw_peer.hpp"

namespace qbus::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

class AcksDaemonTest : public ::testing::Test {
 protected:
  ClientOptions options(const char* name) const {
    return ClientOptions{daemon_.address(), name, seconds(30)};
  }
  // Reads what a child wrote on its pipe, one text line per record, until it closes.
  static std::vector<std::string> read_lines(int fd) {
    std::string all;
    char buf[4096];
    for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;)
      all.append(buf, static_cast<std::size_t>(n));
    std::vector<std::string> lines;
    for (std::size_t at = 0, nl; (nl = all.find('\n', at)) != std::string::npos; at = nl + 1)
      lines.push_back(all.substr(at, nl - at));
    return lines;
  }

  // Polls `qbusctl queue KEY --json` until its in_flight count is `n` (false after 30 s).
  bool in_flight_reaches(const std::string& key, int n) const {
    const auto deadline = std::chrono::steady_clock::now() + seconds(30);
    do {
      const auto r = run({qbusctl_path(), "--address", daemon_.address(), "queue", key, "--json"});
      if (r.exit_code == 0 && nlohmann::json::parse(r.out)["queue"]["in_flight"] == n) return true;
      std::this_thread::sleep_for(milliseconds(20));
    } while (std::chrono::steady_clock::now() < deadline);
    return false;
  }

  Daemon daemon_;
};

std::optional<Frame> next_skipping_nothing(RawPeer& peer) {
  return peer.next(seconds(30));
}

TEST_F(AcksDaemonTest, AVersionOneConnectionKnowsNothingOfVersionTwo) {
  RawPeer peer(daemon_.socket_path());
  peer.hello(1);
  proto::ByteBuffer b;
  proto::append_frame(b, 7, 0, proto::Ack{1, false});
  proto::append_frame(b, 8, proto::kFlagAck, proto::Receive{0, 1, "jobs"});
  proto::append_empty(b, proto::FrameType::ping, 9);
  peer.write(b);
  auto f = next_skipping_nothing(peer);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->correlation, 7u);
  EXPECT_EQ(f->error_code(), Errc::unknown_frame_type);
  f = next_skipping_nothing(peer);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->correlation, 8u);
  EXPECT_EQ(f->error_code(), Errc::malformed_frame);
  f = next_skipping_nothing(peer);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->type, proto::FrameType::pong) << "the connection goes on";

  // A message with headers reaches it as a plain DELIVER.
  Client sender(options("sender"));
  sender.send("jobs", "hi", SendOptions{{{"trace", "t-1"}}, true});
  proto::ByteBuffer r;
  proto::append_receive(r, 10, proto::Receive{-1, 1, "jobs"});
  peer.write(r);
  f = next_skipping_nothing(peer);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->type, proto::FrameType::deliver);
  EXPECT_EQ(f->correlation, 10u);
}

TEST_F(AcksDaemonTest, PropertiesMustBeFollowedByAMessage) {
  RawPeer peer(daemon_.socket_path());
  peer.hello(2);
  std::vector<std::byte> headers;
  proto::append_header(headers, "k", "v");
  proto::ByteBuffer b;
  proto::append_frame(b, 5, 0, proto::Properties{0, 0, 0, headers});
  proto::append_empty(b, proto::FrameType::ping, 6);
  peer.write(b);
  auto f = next_skipping_nothing(peer);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->correlation, 5u);
  EXPECT_EQ(f->error_code(), Errc::unexpected_frame);
  f = next_skipping_nothing(peer);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->type, proto::FrameType::pong);
}

TEST_F(AcksDaemonTest, BrokerHeadersAndOversizedBlocksAreRefused) {
  RawPeer peer(daemon_.socket_path());
  peer.hello(2);
  std::vector<std::byte> reserved;
  proto::append_header(reserved, "qbus-dead-reason", "forged");
  std::vector<std::byte> big;
  while (big.size() <= proto::kMaxSenderHeadersSize)
    proto::append_header(big, "k" + std::to_string(big.size()), std::string(200, 'x'));
  proto::ByteBuffer b;
  proto::append_frame(b, 5, 0, proto::Properties{0, 0, 0, reserved});
  proto::append_frame(b, 6, 0, proto::Properties{0, 0, 0, big});
  proto::append_send(b, 7, proto::kFlagConfirm, "jobs", bytes_of("plain"));
  peer.write(b);
  auto f = next_skipping_nothing(peer);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->correlation, 5u);
  EXPECT_EQ(f->error_code(), Errc::permission_denied);
  f = next_skipping_nothing(peer);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->correlation, 6u);
  EXPECT_EQ(f->error_code(), Errc::malformed_frame);
  f = next_skipping_nothing(peer);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->type, proto::FrameType::ok) << "the send after them goes through";
  Client c(options("reader"));
  auto m = c.receive("jobs", seconds(30));
  ASSERT_TRUE(m);
  EXPECT_TRUE(m->headers().empty());
}

// The headline: a consumer process holding 100 unacknowledged messages is killed; another
// consumer gets all 100 at once, in their order, marked redelivered.
TEST_F(AcksDaemonTest, AKilledConsumersMessagesGoToAnotherAtOnceInOrder) {
  Client producer(options("producer"));
  for (int i = 0; i < 150; ++i)
    producer.send("jobs", std::to_string(i));
  producer.sync();

  Gate holding;
  const pid_t victim = spawn([&] {
    Client c(options("victim"));
    auto held = c.receive_batch("jobs", 100, seconds(30), ReceiveOptions{true});
    if (held.size() != 100) return 1;
    holding.open();
    ::pause();  // killed here, with 100 messages in flight
    return 2;
  });
  holding.wait();
  Client survivor(options("survivor"));
  ASSERT_EQ(::kill(victim, SIGKILL), 0);
  EXPECT_EQ(wait_exit(victim), 100 + SIGKILL);
  // The victim is reaped, but qbusd learns of it only when it reads the hang-up, and a
  // RECEIVE on another connection can be read first. Wait until the 100 are back.
  ASSERT_TRUE(in_flight_reaches("jobs", 0));

  std::vector<Message> got;
  while (got.size() < 150) {
    auto batch = survivor.receive_batch("jobs", 200, seconds(30), ReceiveOptions{true});
    ASSERT_FALSE(batch.empty()) << "only " << got.size() << " of 150 came back";
    for (auto& m : batch)
      got.push_back(std::move(m));
  }
  for (int i = 0; i < 150; ++i) {
    EXPECT_EQ(got[i].text(), std::to_string(i)) << i;
    EXPECT_EQ(got[i].redelivered(), i < 100) << i;
    EXPECT_EQ(got[i].delivery_count(), i < 100 ? 2u : 1u) << i;
  }
  survivor.ack_up_to(got.back().delivery_tag(), true);
  EXPECT_FALSE(survivor.try_receive("jobs"));
}

// 4 producers send 10,000 numbered messages; 4 consumer slots take them in acknowledgement
// mode, and consumers are killed with SIGKILL at random moments and replaced. Each consumer
// reports "PID g N" when it has message N and "PID a N" once the broker confirmed its ack.
// Every message must end acked, except at most one per killed consumer: the one it
// reported getting and not acking, which it may have acked just before it died (had it
// not, the message came back and another consumer acked it).
TEST_F(AcksDaemonTest, RandomlyKilledConsumersLoseNothing) {
  constexpr int kProducers = 4, kSlots = 4, kPerProducer = 2500, kKills = 12;
  constexpr int kTotal = kProducers * kPerProducer;
  int reports[2];
  ASSERT_EQ(::pipe(reports), 0);
  const auto consumer = [&](int slot) {
    return spawn([&, slot] {
      ::close(reports[0]);
      Client c(options(("consumer-" + std::to_string(slot)).c_str()));
      const std::string me = std::to_string(::getpid());
      for (;;) {
        for (const auto& m : c.receive_batch("work", 16, seconds(60), ReceiveOptions{true})) {
          const std::string got = me + " g " + std::string(m.text()) + "\n";
          if (::write(reports[1], got.data(), got.size()) < 0) return 3;
          c.ack(m, true);
          const std::string acked = me + " a " + std::string(m.text()) + "\n";
          if (::write(reports[1], acked.data(), acked.size()) < 0) return 3;
        }
      }
    });
  };
  std::vector<pid_t> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.push_back(spawn([&, p] {
      ::close(reports[0]);
      Client c(options("producer"));
      for (int i = 0; i < kPerProducer; ++i)
        c.send("work", std::to_string(p * kPerProducer + i));
      c.sync();
      return 0;
    }));
  }
  std::vector<pid_t> slots;
  for (int s = 0; s < kSlots; ++s)
    slots.push_back(consumer(s));

  std::set<int> acked;
  std::set<pid_t> killed;
  std::map<pid_t, int> pending;  // a consumer's last "g" without its "a"
  std::string partial;
  std::mt19937 rng(13);
  int kills = 0;
  std::size_t read_total = 0, next_kill = 200 + rng() % 4000;
  // What a killed consumer wrote before it died may still be in the pipe: its pending id
  // is what the reports say once they are all read, so it is worked out anew each time.
  const auto ambiguous = [&] {
    std::set<int> ids;
    for (pid_t p : killed)
      if (auto it = pending.find(p); it != pending.end()) ids.insert(it->second);
    return ids;
  };
  const auto accounted = [&] {
    std::size_t n = acked.size();
    for (int id : ambiguous())
      n += acked.count(id) ? 0 : 1;
    return n;
  };
  while (accounted() < static_cast<std::size_t>(kTotal)) {
    pollfd pfd{reports[0], POLLIN, 0};
    ASSERT_EQ(::poll(&pfd, 1, 60'000), 1)
        << "no progress for 60 s with " << accounted() << " of " << kTotal << " accounted for";
    char buf[4096];
    const ssize_t n = ::read(reports[0], buf, sizeof buf);
    ASSERT_GT(n, 0);
    read_total += static_cast<std::size_t>(n);
    partial.append(buf, static_cast<std::size_t>(n));
    for (std::size_t nl; (nl = partial.find('\n')) != std::string::npos;) {
      const std::string line = partial.substr(0, nl);
      partial.erase(0, nl + 1);
      pid_t pid = 0;
      char kind = 0;
      int id = -1;
      ASSERT_EQ(std::sscanf(line.c_str(), "%d %c %d", &pid, &kind, &id), 3) << line;
      if (kind == 'g') {
        pending[pid] = id;
      } else {
        acked.insert(id);
        pending.erase(pid);
      }
    }
    if (kills < kKills && read_total >= next_kill) {
      const auto s = static_cast<std::size_t>(rng() % kSlots);
      ASSERT_EQ(::kill(slots[s], SIGKILL), 0);
      EXPECT_EQ(wait_exit(slots[s]), 100 + SIGKILL);
      killed.insert(slots[s]);
      slots[s] = consumer(static_cast<int>(s));
      ++kills;
      next_kill = read_total + 200 + rng() % 4000;
    }
  }
  for (pid_t p : producers)
    EXPECT_EQ(wait_exit(p), 0);
  for (pid_t c : slots) {
    ::kill(c, SIGKILL);
    wait_exit(c);
  }
  ::close(reports[0]);
  ::close(reports[1]);
  EXPECT_EQ(kills, kKills) << "the kills must fall while messages flow";
  const std::set<int> unsure = ambiguous();
  for (int id = 0; id < kTotal; ++id)
    EXPECT_TRUE(acked.count(id) || unsure.count(id)) << "message " << id << " was lost";
  EXPECT_LE(unsure.size(), static_cast<std::size_t>(kKills));
  Client check(options("check"));
  EXPECT_FALSE(check.try_receive("work")) << "everything was acked";
}

}  // namespace
}  // namespace qbus::testing
