// One hostile local uid against the real qbusd, with limits scaled down: what it can make
// the daemon hold is bounded by that uid's own limits, and another uid keeps being
// served. Each test reproduces a finding of the hardening review (docs/architecture.md
// lists them); the hostile side runs as uid 65534 (nobody), so these tests need root.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <qbus/client.hpp>

#include <nlohmann/json.hpp>

#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "daemon.hpp"
#include "eventually.hpp"
#include "process.hpp"
#include "raw_peer.hpp"

namespace qbus::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
constexpr std::uint64_t kMiB = 1 << 20;

// Shmem in /proc/meminfo: every memfd page on the machine, whoever holds it.
std::uint64_t shmem_bytes() {
  std::ifstream f("/proc/meminfo");
  std::string key;
  std::uint64_t kib = 0;
  std::string unit;
  while (f >> key >> kib >> unit) {
    if (key == "Shmem:") return kib * 1024;
  }
  return 0;
}

// Drops to uid/gid 65534 in a forked child; false when that fails.
bool become_nobody() {
  return ::setgid(65534) == 0 && ::setuid(65534) == 0;
}

// Runs `body` as uid 65534 in a child; `ready` is opened when the body returns early, so
// a parent waiting on it learns of the failure from the exit code instead of hanging.
// After the child opened `ready`: fails the test (with the child's exit code) if the child
// returned early rather than reaching the point the parent waits for.
#define ASSERT_HOSTILE_RUNNING(child)                                    \
  do {                                                                   \
    int status_ = 0;                                                     \
    if (::waitpid(child, &status_, WNOHANG) == child) {                  \
      FAIL() << "the hostile child ended early with status " << status_; \
    }                                                                    \
  } while (0)

template <typename F>
pid_t spawn_hostile(Gate& ready, F&& body) {
  return spawn([&] {
    const int rc = become_nobody() ? body() : 10;
    if (rc != 0) ready.open();
    return rc;
  });
}

class HostileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to run the hostile side as uid 65534";
  }

  void start(const std::string& limits_json, DaemonOptions extra = {}) {
    extra.config_json = R"({"limits": )" + limits_json + "}";
    daemon_ = std::make_unique<Daemon>(std::move(extra));
    ::chmod(daemon_->dir().path().c_str(), 0755);  // let uid 65534 reach the socket
  }

  // A raw connection that said HELLO and has `receives` RECEIVEs for `key` waiting (no
  // timeout), confirmed by a PONG behind them; it then reads nothing more.
  std::unique_ptr<RawPeer> waiting_receiver(const std::string& key, int receives) {
    auto p = std::make_unique<RawPeer>(daemon_->socket_path());
    p->hello();
    proto::ByteBuffer b;
    for (int i = 0; i < receives; ++i)
      proto::append_receive(b, 100 + i, proto::Receive{-1, 1, key});
    proto::append_empty(b, proto::FrameType::ping, 99);
    p->write(b);
    auto f = p->next();
    if (!f || f->type != proto::FrameType::pong) throw std::runtime_error("no PONG");
    return p;
  }

  // Another uid's producer and consumer, meanwhile: every message arrives.
  void expect_root_served(const std::string& key, int messages) {
    Client producer(ClientOptions{.address = daemon_->address()});
    Client consumer(ClientOptions{.address = daemon_->address()});
    for (int i = 0; i < messages; ++i)
      producer.send_confirmed(key, "m" + std::to_string(i));
    for (int i = 0; i < messages; ++i) {
      auto m = consumer.receive(key, seconds(30));
      ASSERT_TRUE(m) << "message " << i << " of root's " << messages << " never arrived";
      EXPECT_EQ(m->text(), "m" + std::to_string(i));
    }
  }

  std::unique_ptr<Daemon> daemon_;
};

// Finding 1: a region's memory was fallocate'd by qbusd, so a client that kept the fd
// after releasing the region kept pages charged to qbusd, beyond its uid's quota. qbusd
// now makes memfds without pages; whoever writes them pays.
TEST_F(HostileTest, RegionFdsKeptAfterReleaseHoldNoMemoryOfTheDaemon) {
  start(R"({"max_region_bytes": 16777216, "uid_max_region_bytes": 67108864,
            "region_pool_bytes": 0})");
  Gate kept, done;
  const std::uint64_t shmem_before = shmem_bytes();
  const pid_t child = spawn_hostile(kept, [&] {
    RawPeer p(daemon_->socket_path());
    p.hello();
    std::vector<proto::UniqueFd> fds;
    for (std::uint64_t i = 0; i < 40; ++i) {
      proto::ByteBuffer b;
      proto::append_region_alloc(b, 10 + i, proto::RegionAlloc{16 * kMiB});
      p.write(b);
      auto f = p.next();
      proto::RegionGrantBody g;
      if (!f || f->type != proto::FrameType::region ||
          proto::decode_region_grant(f->body, g) != Errc::ok) {
        return 11;  // refused: the quota was not given back on release
      }
      auto fd = p.take_fd();
      if (!fd) return 12;
      struct stat st {};
      if (::fstat(fd->get(), &st) != 0 || st.st_blocks != 0) return 13;  // qbusd reserved it
      fds.push_back(std::move(*fd));
      b.clear();
      proto::append_region_release(b, 1000 + i, proto::kFlagConfirm, g.region_id);
      p.write(b);
      f = p.next();
      if (!f || f->type != proto::FrameType::ok) return 14;
    }
    kept.open();
    done.wait();
    return 0;
  });
  kept.wait();
  ASSERT_HOSTILE_RUNNING(child);
  // 640 MiB of regions the client still holds open: none of it is memory.
  EXPECT_LT(shmem_bytes(), shmem_before + 320 * kMiB);
  EXPECT_TRUE(eventually([&] { return daemon_->open_regions() == 0; }));
  done.open();
  EXPECT_EQ(wait_exit(child), 0) << "13: a granted region came with its pages already "
                                    "allocated by qbusd";
}

// Finding 7: allocations ran fallocate on the broker's thread, stalling every client. Now
// nothing is allocated there: a PING pipelined behind 12 allocations of 512 MiB is
// answered, and no granted region holds a page.
TEST_F(HostileTest, RegionAllocationsAllocateNothingOnTheBrokerThread) {
  start(R"({"max_region_bytes": 1073741824, "uid_max_region_bytes": 8589934592,
            "region_pool_bytes": 0})");
  const std::uint64_t shmem_before = shmem_bytes();
  RawPeer p(daemon_->socket_path());
  p.hello();
  proto::ByteBuffer b;
  for (std::uint64_t i = 0; i < 12; ++i)
    proto::append_region_alloc(b, 10 + i, proto::RegionAlloc{512 * kMiB});
  proto::append_empty(b, proto::FrameType::ping, 99);
  p.write(b);
  for (int i = 0; i < 12; ++i) {
    auto f = p.next(seconds(60));
    ASSERT_TRUE(f);
    ASSERT_EQ(f->type, proto::FrameType::region) << "error " << errc_name(f->error_code());
    auto fd = p.take_fd();
    ASSERT_TRUE(fd);
    struct stat st {};
    ASSERT_EQ(::fstat(fd->get(), &st), 0);
    EXPECT_EQ(st.st_blocks, 0) << "region " << i << " was reserved by qbusd";
  }
  auto pong = p.next(seconds(60));
  ASSERT_TRUE(pong);
  EXPECT_EQ(pong->type, proto::FrameType::pong);
  EXPECT_LT(shmem_bytes(), shmem_before + kMiB * 1024);
}

// Finding 2: a message handed straight to a waiting receiver skipped the queue's quota and
// the receiver's backpressure, so receivers that never read grew qbusd without bound. Now
// hand-over stops at the connection's and the uid's output bounds, and what is not handed
// over stays queued, charged to the queue and the sender.
TEST_F(HostileTest, ReceiversThatNeverReadHoldNoMoreThanTheirUidsOutputBound) {
  constexpr std::uint64_t kOutbound = 256 * 1024, kUidOutbound = kMiB, kQueued = 8 * kMiB;
  start(R"({"max_outbound_bytes": 262144, "uid_max_outbound_bytes": 1048576,
            "uid_max_queued_bytes": 8388608})");
  {
    Client admin(ClientOptions{.address = daemon_->address()});
    admin.declare("sink", QueueOptions{100'000, 512 * kMiB, Overflow::reject});
  }
  const long rss_before = daemon_->rss_bytes();
  constexpr int kReceivers = 20;
  Gate sent, measured, drained;
  const pid_t child = spawn_hostile(sent, [&] {
    std::vector<std::unique_ptr<RawPeer>> rx;
    for (int i = 0; i < kReceivers; ++i)
      rx.push_back(waiting_receiver("sink", 64));
    Client sender(ClientOptions{.address = daemon_->address()});
    const std::string payload(60 * 1024, 'x');
    int refused = 0;
    for (int i = 0; i < 2'000 && refused == 0; ++i) {
      try {
        sender.send_confirmed("sink", payload);
      } catch (const Error& e) {
        if (e.code() != Errc::quota_exceeded) {
          std::fprintf(stderr, "hostile sender: %s\n", e.what());
          return 11;
        }
        ++refused;
      }
    }
    if (refused == 0) return 12;  // 117 MiB went somewhere: nothing bounded the uid
    sent.open();
    measured.wait();
    // A receiver that starts reading gets all it asked for, from the queue.
    for (int i = 0; i < 64; ++i) {
      auto f = rx[0]->next(seconds(60));
      if (!f || f->type != proto::FrameType::deliver) return 13;
    }
    drained.open();
    return 0;
  });
  sent.wait();
  ASSERT_HOSTILE_RUNNING(child);
  const long grown = daemon_->rss_bytes() - rss_before;
  const std::uint64_t bound =
      kUidOutbound + kQueued + kReceivers * (kOutbound + 64 * 1024) + 16 * kMiB;
  std::printf("qbusd RSS grew by %.1f MiB; bound %.1f MiB (without it: 75 MiB handed over)\n",
              static_cast<double>(grown) / kMiB, static_cast<double>(bound) / kMiB);
  EXPECT_LT(static_cast<std::uint64_t>(std::max(grown, 0L)), bound);
  auto q = run({qbusctl_path(), "--address", daemon_->address(), "--json", "queue", "sink"});
  ASSERT_EQ(q.exit_code, 0) << q.err;
  EXPECT_GT(nlohmann::json::parse(q.out)["queue"]["depth"].get<int>(), 0)
      << "nothing stayed queued: " << q.out;
  expect_root_served("root.work", 200);
  measured.open();
  drained.wait();
  EXPECT_EQ(wait_exit(child), 0);
}

// Finding 3: each region delivery passes an fd, which waits in qbusd's fd table while the
// receiver's socket is full; deliveries to waiting receivers ignored the pending-fd bound,
// so receivers that never read filled qbusd's fd table. Now they stop at the uid's bound,
// and that uid's further grants are refused with a clear error.
TEST_F(HostileTest, RegionDeliveriesToReceiversThatNeverReadStopAtTheUidsFdBound) {
  constexpr int kUidFds = 16, kReceivers = 8, kRegions = 300;
  start(R"({"uid_max_pending_fds": 16, "region_pool_bytes": 0})");
  const int fds_before = daemon_->open_fds();
  Gate sent, measured;
  const pid_t child = spawn_hostile(sent, [&] {
    ClientOptions inline_only{.address = daemon_->address()};
    inline_only.region_threshold = 2 * kMiB;
    Client sender(inline_only);
    std::vector<std::unique_ptr<RawPeer>> rx;
    for (int i = 0; i < kReceivers; ++i) {
      rx.push_back(waiting_receiver("frames", 64));
      // 900 KiB it never reads: its socket fills, and what follows waits in qbusd.
      sender.send_confirmed("fill", std::string(900 * 1024, 'f'));
      proto::ByteBuffer b;
      proto::append_receive(b, 7, proto::Receive{-1, 1, "fill"});
      rx.back()->write(b);
    }
    int refused = 0;
    for (int i = 0; i < kRegions && refused == 0; ++i) {
      try {
        Region r = sender.allocate_region(4096);
        r.data()[0] = std::byte{1};
        sender.send("frames", std::move(r));
        sender.sync();
      } catch (const Error& e) {
        if (e.code() != Errc::quota_exceeded) {
          std::fprintf(stderr, "hostile sender: %s\n", e.what());
          return 11;
        }
        ++refused;
      }
    }
    if (refused == 0) return 12;
    sent.open();
    measured.wait();
    return 0;
  });
  sent.wait();
  ASSERT_HOSTILE_RUNNING(child);
  const int fds = daemon_->open_fds();
  // Connections, the regions delivered or queued (each one memfd), the fds in flight.
  const int bound = fds_before + kReceivers + 1 + 2 * kUidFds + 2 * kUidFds + 8;
  std::printf("qbusd fds: %d before, %d with the hostile uid at its limit; bound %d\n", fds_before,
              fds, bound);
  EXPECT_LE(fds, bound);
  expect_root_served("root.work", 200);
  measured.open();
  EXPECT_EQ(wait_exit(child), 0) << "12: " << kRegions << " region deliveries were never bounded";
}

// Finding 3: at its open-file limit qbusd left new clients in the backlog until they timed
// out. It keeps one fd in reserve to accept and refuse them with an ERROR.
TEST_F(HostileTest, AtItsOpenFileLimitQbusdRefusesNewClientsWithAnError) {
  DaemonOptions o;
  o.wrapper = {"/usr/bin/prlimit", "--nofile=48:48", "--"};
  start(R"({"region_pool_bytes": 0})", std::move(o));
  std::vector<std::unique_ptr<RawPeer>> peers;
  std::optional<Frame> refusal;
  for (int i = 0; i < 64 && !refusal; ++i) {
    auto p = std::make_unique<RawPeer>(daemon_->socket_path());
    proto::ByteBuffer b;
    proto::append_hello(b, 1, proto::Hello{1, 1, "filler", ""});
    p->write(b);
    auto f = p->next(seconds(20));
    ASSERT_TRUE(f) << "connection " << i << " closed without an answer";
    if (f->type == proto::FrameType::error) refusal = f;
    peers.push_back(std::move(p));
  }
  ASSERT_TRUE(refusal) << "64 connections fit under an open-file limit of 48";
  EXPECT_EQ(refusal->error_code(), Errc::too_many_connections);
  peers.clear();  // room again: a client gets in
  EXPECT_TRUE(eventually([&] {
    try {
      Client c(ClientOptions{.address = daemon_->address()});
      c.send_confirmed("after", "x");
      return true;
    } catch (const Error&) {
      return false;
    }
  }));
}

}  // namespace
}  // namespace qbus::testing
