// Competing producers and consumers in separate processes through the real qbusd.
#include <sys/wait.h>
#include <unistd.h>
#include <qbus/client.hpp>

#include <gtest/gtest.h>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "daemon.hpp"
#include "process.hpp"

namespace qbus::testing {
namespace {

using std::chrono::seconds;

constexpr int kProducers = 4;
constexpr int kConsumers = 4;
constexpr int kPerProducer = 10'000;
constexpr char kQueue[] = "work";
constexpr char kStop[] = "STOP";

Client connect(const Daemon& d) {
  return Client(ClientOptions{d.address(), "stress", seconds(30)});
}

// Producers send "P:SEQ"; consumers write what they got, one payload a line, to a file.
int produce(const Daemon& d, int id, bool batched) {
  auto c = connect(d);
  std::optional<Client::Batch> batch;
  if (batched) batch.emplace(c);
  for (int seq = 0; seq < kPerProducer; ++seq) {
    c.send(kQueue, std::to_string(id) + ":" + std::to_string(seq));
  }
  batch.reset();
  c.sync();
  return c.send_failures().count == 0 ? 0 : 1;
}

int consume(const Daemon& d, const std::string& out_path, std::size_t batch) {
  auto c = connect(d);
  std::ofstream out(out_path);
  while (true) {
    auto got = c.receive_batch(kQueue, batch, seconds(60));
    if (got.empty()) return 2;  // starved for a minute: something is lost
    for (const auto& m : got) {
      if (m.text() == kStop) {
        // Data precedes every STOP in the queue, so whatever follows in this batch is
        // another consumer's STOP: hand it back.
        for (const auto* rest = &m + 1; rest != got.data() + got.size(); ++rest) {
          if (rest->text() != kStop) return 5;
          c.send(kQueue, kStop);
        }
        out.flush();
        return out ? 0 : 4;
      }
      out << m.text() << '\n';
    }
  }
}

TEST(ManyProcesses, EveryMessageIsReceivedExactlyOnceInPerProducerOrder) {
  Daemon daemon(DaemonOptions{.log_level = "info"});
  std::vector<pid_t> consumers, producers;
  for (int i = 0; i < kConsumers; ++i) {
    // Half take one message per round trip, half take batches: both paths are exercised.
    const std::size_t batch = i % 2 == 0 ? 1 : 64;
    const auto path = daemon.dir().file("consumer" + std::to_string(i));
    consumers.push_back(spawn([&, path, batch] { return consume(daemon, path, batch); }));
  }
  for (int i = 0; i < kProducers; ++i) {
    producers.push_back(spawn([&, i] { return produce(daemon, i, i % 2 == 1); }));
  }
  for (pid_t p : producers)
    ASSERT_EQ(wait_exit(p), 0);

  // Every data message is queued before the stops (producers synced), so FIFO puts the
  // stops last.
  auto control = connect(daemon);
  for (int i = 0; i < kConsumers; ++i)
    control.send(kQueue, kStop);
  for (pid_t c : consumers)
    ASSERT_EQ(wait_exit(c), 0);

  std::map<int, std::set<int>> seen;
  std::size_t total = 0;
  for (int i = 0; i < kConsumers; ++i) {
    std::ifstream in(daemon.dir().file("consumer" + std::to_string(i)));
    std::map<int, int> last;  // per producer, within this consumer
    std::string line;
    while (std::getline(in, line)) {
      const auto colon = line.find(':');
      ASSERT_NE(colon, std::string::npos) << line;
      const int producer = std::stoi(line.substr(0, colon));
      const int seq = std::stoi(line.substr(colon + 1));
      auto it = last.find(producer);
      if (it != last.end()) {
        ASSERT_LT(it->second, seq) << "consumer " << i << " out of order";
      }
      last[producer] = seq;
      ASSERT_TRUE(seen[producer].insert(seq).second) << "duplicate " << line;
      ++total;
    }
  }
  EXPECT_EQ(total, static_cast<std::size_t>(kProducers * kPerProducer));
  for (int p = 0; p < kProducers; ++p) {
    EXPECT_EQ(seen[p].size(), static_cast<std::size_t>(kPerProducer)) << "producer " << p;
  }
  EXPECT_EQ(daemon.stop(), 0);
}

}  // namespace
}  // namespace qbus::testing
