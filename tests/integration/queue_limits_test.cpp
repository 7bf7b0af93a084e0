// The queue table against one hostile uid on the real qbusd: a process of uid 65534
// pipelines DECLAREs or waiting RECEIVEs of fresh keys and meets its own per-uid bound
// (uid_max_queues, uid_max_waiting_receives) well before the broker's max_queues, so root
// can still create a queue; and what it declared goes once it has gone and the grace
// (declared_queue_grace_ms) has passed, while a queue of the configuration stays.
// Limits are scaled down so that each test is fast; every test runs as root (it skips
// otherwise) because the hostile client runs as another uid.
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <csignal>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "daemon.hpp"
#include "eventually.hpp"
#include "process.hpp"
#include "qbus/proto/buffer.hpp"
#include "raw_peer.hpp"

namespace qbus::testing {
namespace {

using json = nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;

constexpr int kMaxQueues = 2000;
constexpr int kUidMaxQueues = 500;
constexpr int kUidMaxWaiting = 200;
constexpr std::uint32_t kNobody = 65534;

// Answers one connection got back, by kind.
struct Tally {
  int ok = 0;
  int too_many_queues = 0;
  int too_many_receives = 0;
  int other = 0;
  std::string last_error;  // the text of the last ERROR, for the messages
};

// A raw connection that said HELLO, so that it can pipeline thousands of frames.
std::unique_ptr<RawPeer> raw_peer(const std::string& path) {
  auto p = std::make_unique<RawPeer>(path);
  p->hello();
  return p;
}

// Reads answers up to the PONG of a PING sent after everything else, counting them.
void tally_until_pong(RawPeer& peer, Tally& t) {
  constexpr std::uint64_t kPing = 0xFFFF'FFFF;
  proto::ByteBuffer b;
  proto::append_empty(b, proto::FrameType::ping, kPing);
  peer.write(b);
  while (true) {
    const auto f = peer.next();
    if (!f) throw std::runtime_error("the broker closed the connection");
    if (f->type == proto::FrameType::pong && f->correlation == kPing) return;
    if (f->type == proto::FrameType::ok) {
      ++t.ok;
      continue;
    }
    proto::ErrorBody e;
    if (f->type != proto::FrameType::error || proto::decode_error(f->body, e) != Errc::ok) {
      ++t.other;
      continue;
    }
    t.last_error = std::string(e.text);
    switch (static_cast<Errc>(e.code)) {
      case Errc::too_many_queues:
        ++t.too_many_queues;
        break;
      case Errc::too_many_receives:
        ++t.too_many_receives;
        break;
      default:
        ++t.other;
    }
  }
}

// A pipe the hostile child reports its tally through.
class TallyPipe {
 public:
  TallyPipe() {
    if (::pipe(fds_) != 0) throw std::runtime_error("pipe failed");
  }
  ~TallyPipe() {
    ::close(fds_[0]);
    if (fds_[1] >= 0) ::close(fds_[1]);
  }
  TallyPipe(const TallyPipe&) = delete;
  TallyPipe& operator=(const TallyPipe&) = delete;
  // In the parent once the child has its copy: a child that dies unreported ends get().
  void close_writer() {
    ::close(fds_[1]);
    fds_[1] = -1;
  }
  void put(const Tally& t) {
    const std::string line = json{{"ok", t.ok},
                                  {"too_many_queues", t.too_many_queues},
                                  {"too_many_receives", t.too_many_receives},
                                  {"other", t.other},
                                  {"last_error", t.last_error}}
                                 .dump() +
                             "\n";
    (void)!::write(fds_[1], line.data(), line.size());
  }
  Tally get() {
    std::string line;
    char c = 0;
    while (::read(fds_[0], &c, 1) == 1 && c != '\n')
      line.push_back(c);
    if (line.empty()) throw std::runtime_error("the child reported nothing");
    const json j = json::parse(line);
    return Tally{j["ok"], j["too_many_queues"], j["too_many_receives"], j["other"],
                 j["last_error"]};
  }

 private:
  int fds_[2];
};

class QueueLimitsTest : public ::testing::Test {
 protected:
  QueueLimitsTest()
      : daemon_(DaemonOptions{
            .config_json = R"({"limits": {"max_queues": )" + std::to_string(kMaxQueues) +
                           R"(, "uid_max_queues": )" + std::to_string(kUidMaxQueues) +
                           R"(, "uid_max_waiting_receives": )" + std::to_string(kUidMaxWaiting) +
                           R"(, "declared_queue_grace_ms": 200},
                "queues": [{"key": "configured"}]})",
            .log_level = "info"}) {}

  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to run a client as another uid";
    ::chmod(daemon_.dir().path().c_str(), 0755);  // let uid 65534 reach the socket
  }

  Result ctl(std::vector<std::string> args) {
    args.insert(args.begin(), {qbusctl_path(), "--address", daemon_.address()});
    return run(args);
  }
  // Keys of the queues the admin socket lists.
  std::vector<std::string> queue_keys() {
    const Result r = ctl({"queues", "--json"});
    if (r.exit_code != 0) throw std::runtime_error("qbusctl queues failed: " + r.err);
    const json answer = json::parse(r.out);
    std::vector<std::string> keys;
    for (const auto& q : answer["queues"])
      keys.push_back(q["key"]);
    return keys;
  }
  std::size_t count_with_prefix(const std::string& prefix) {
    std::size_t n = 0;
    for (const auto& k : queue_keys())
      n += k.starts_with(prefix) ? 1 : 0;
    return n;
  }

  Daemon daemon_;
};

// `body` run as uid 65534 in a child that reports its tally, then holds its connections
// until finish() (or the end of the test, whatever failed before) lets it go.
class Hostile {
 public:
  template <typename F>
  explicit Hostile(F body) {
    pid_ = spawn([&] {
      if (::setgid(kNobody) != 0 || ::setuid(kNobody) != 0) return 10;
      Tally t;
      auto held = body(t);  // the connections stay open until released
      report_.put(t);
      release_.wait();
      return 0;
    });
    report_.close_writer();
  }
  ~Hostile() {
    if (pid_ > 0) finish();
  }
  Hostile(const Hostile&) = delete;
  Hostile& operator=(const Hostile&) = delete;

  Tally tally() { return report_.get(); }
  // Lets the child go and returns its exit code.
  int finish() {
    release_.open();
    const int code = wait_exit(pid_);
    pid_ = -1;
    return code;
  }

 private:
  TallyPipe report_;
  Gate release_;
  pid_t pid_ = -1;
};

TEST_F(QueueLimitsTest, PipelinedDeclaresOfOneUidStopAtItsOwnLimit) {
  const std::string path = daemon_.socket_path();
  Hostile child([path](Tally& t) {
    auto peer = raw_peer(path);
    proto::ByteBuffer b;
    // More than the whole table: before per-uid limits this took every slot.
    for (int i = 0; i < kMaxQueues + 500; ++i) {
      proto::append_declare(
          b, 100 + static_cast<std::uint64_t>(i), proto::kFlagConfirm,
          proto::Declare{0, 0, proto::Overflow::use_default, "hostile.d." + std::to_string(i)});
    }
    peer->write(b);
    tally_until_pong(*peer, t);
    return peer;
  });
  const Tally t = child.tally();
  EXPECT_EQ(t.ok, kUidMaxQueues);
  EXPECT_EQ(t.too_many_queues, kMaxQueues + 500 - kUidMaxQueues);
  EXPECT_EQ(t.other, 0);
  EXPECT_NE(t.last_error.find("uid 65534"), std::string::npos) << t.last_error;
  EXPECT_NE(t.last_error.find(std::to_string(kUidMaxQueues)), std::string::npos) << t.last_error;

  // Root, with the hostile declarer still connected, still gets a queue of its own.
  const Result sent = ctl({"send", "jobs", "x"});
  EXPECT_EQ(sent.exit_code, 0) << sent.err;
  const Result got = ctl({"recv", "jobs", "--timeout", "30000"});
  EXPECT_EQ(got.exit_code, 0) << got.err;
  EXPECT_EQ(got.out, "x\n");
  EXPECT_EQ(child.finish(), 0);
}

TEST_F(QueueLimitsTest, WaitingReceivesOfOneUidStopAtItsOwnLimit) {
  constexpr int kConnections = 40;  // 40 x 64 waiting receives: more than max_queues
  constexpr int kPerConnection = 64;
  const std::string path = daemon_.socket_path();
  Hostile child([path](Tally& t) {
    std::vector<std::unique_ptr<RawPeer>> peers;
    for (int c = 0; c < kConnections; ++c) {
      peers.push_back(raw_peer(path));
      proto::ByteBuffer b;
      for (int i = 0; i < kPerConnection; ++i) {
        const std::string key = "hostile.r." + std::to_string(c) + "." + std::to_string(i);
        proto::append_receive(b, 100 + static_cast<std::uint64_t>(i), proto::Receive{-1, 1, key});
      }
      peers.back()->write(b);
      tally_until_pong(*peers.back(), t);  // a waiting receive is not answered
    }
    return peers;
  });
  const Tally t = child.tally();
  // Nothing waits beyond the uid's allowance; the rest are refused, none lost.
  EXPECT_EQ(t.too_many_receives, kConnections * kPerConnection - kUidMaxWaiting);
  EXPECT_EQ(t.too_many_queues, 0);
  EXPECT_EQ(t.other + t.ok, 0);
  EXPECT_NE(t.last_error.find("uid 65534"), std::string::npos) << t.last_error;
  EXPECT_NE(t.last_error.find(std::to_string(kUidMaxWaiting)), std::string::npos) << t.last_error;
  EXPECT_EQ(count_with_prefix("hostile.r."), static_cast<std::size_t>(kUidMaxWaiting));

  const Result sent = ctl({"send", "jobs", "x"});
  EXPECT_EQ(sent.exit_code, 0) << sent.err;
  EXPECT_EQ(child.finish(), 0);
  // The waits went with their connections, and their implicit queues with them.
  EXPECT_TRUE(eventually([&] { return count_with_prefix("hostile.r.") == 0; }));
}

TEST_F(QueueLimitsTest, QueuesDeclaredByAProcessThatLeftAreCollectedAfterTheGrace) {
  constexpr int kDeclared = 100;
  const std::string path = daemon_.socket_path();
  Hostile child([path](Tally& t) {
    auto peer = raw_peer(path);
    proto::ByteBuffer b;
    for (int i = 0; i < kDeclared; ++i) {
      proto::append_declare(
          b, 100 + static_cast<std::uint64_t>(i), proto::kFlagConfirm,
          proto::Declare{0, 0, proto::Overflow::use_default, "hostile.g." + std::to_string(i)});
    }
    // One of them holds a message: it stays until that is taken.
    proto::append_send(b, 7, proto::kFlagConfirm, "hostile.g.0", {});
    peer->write(b);
    tally_until_pong(*peer, t);
    return peer;
  });
  const Tally t = child.tally();
  ASSERT_EQ(t.ok, kDeclared + 1) << t.last_error;
  // Declared queues outlive emptiness while their declarer is connected.
  EXPECT_EQ(count_with_prefix("hostile.g."), static_cast<std::size_t>(kDeclared));
  EXPECT_EQ(child.finish(), 0);

  EXPECT_TRUE(eventually([&] { return count_with_prefix("hostile.g.") == 1; }))
      << count_with_prefix("hostile.g.") << " of its queues are left";
  const Result got = ctl({"recv", "hostile.g.0", "--timeout", "30000"});
  EXPECT_EQ(got.exit_code, 0) << got.err;
  EXPECT_TRUE(eventually([&] { return count_with_prefix("hostile.g.") == 0; }));
  // The configuration's queue is nobody's to lose.
  const auto keys = queue_keys();
  EXPECT_NE(std::find(keys.begin(), keys.end(), "configured"), keys.end());
}

TEST_F(QueueLimitsTest, QueueDroppedFromTheConfigurationGoesAfterTheGrace) {
  auto keys = queue_keys();
  ASSERT_NE(std::find(keys.begin(), keys.end(), "configured"), keys.end());
  std::ofstream(daemon_.config_path()) << R"({"limits": {"declared_queue_grace_ms": 200}})";
  ASSERT_EQ(::kill(daemon_.pid(), SIGHUP), 0);
  ASSERT_TRUE(daemon_.wait_for_log("queue 'configured' is no longer in the configuration"))
      << daemon_.log();
  EXPECT_TRUE(eventually([&] {
    keys = queue_keys();
    return std::find(keys.begin(), keys.end(), "configured") == keys.end();
  }));
}

}  // namespace
}  // namespace qbus::testing
