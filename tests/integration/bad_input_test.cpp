// Hostile and broken peers against the real qbusd: each gets a clear ERROR and/or a
// disconnect with a log line, while a well-behaved client keeps being served and queued
// messages stay queued.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <qbus/client.hpp>

#include <gtest/gtest.h>
#include <cstring>
#include <random>

#include "daemon.hpp"
#include "qbus/proto/buffer.hpp"
#include "raw_peer.hpp"

namespace qbus::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;

class BadInputTest : public ::testing::Test {
 protected:
  BadInputTest()
      : daemon_(DaemonOptions{.config_json = R"({"limits": {"handshake_timeout_ms": 300}})"}) {}

  void SetUp() override {
    keeper_.emplace(ClientOptions{daemon_.address(), "keeper", seconds(30)});
    for (int i = 0; i < 100; ++i)
      keeper_->send("keep", std::to_string(i));
    keeper_->sync();
    start_canary();
  }

  void TearDown() override {
    expect_canary_progress();
    stop_canary();
    auto kept = keeper_->receive_batch("keep", 1000, seconds(30));
    ASSERT_EQ(kept.size(), 100u) << "queued messages were lost";
    for (int i = 0; i < 100; ++i)
      EXPECT_EQ(kept[i].text(), std::to_string(i));
    EXPECT_EQ(daemon_.stop(), 0) << daemon_.log();
  }

  // A separate process doing send/receive round trips all along; it reports each one on a
  // pipe so the test can see it is still being served.
  void start_canary() {
    int progress[2];
    ASSERT_EQ(::pipe2(progress, O_CLOEXEC), 0);
    canary_ = ::fork();
    ASSERT_GE(canary_, 0);
    if (canary_ == 0) {
      ::signal(SIGPIPE, SIG_IGN);  // the end of the test shows up as EPIPE
      ::close(progress[0]);
      try {
        Client c(ClientOptions{daemon_.address(), "canary", seconds(30)});
        for (std::uint64_t i = 0;; ++i) {
          c.send_confirmed("canary", std::to_string(i));
          auto m = c.receive("canary", seconds(30));
          if (!m || m->text() != std::to_string(i)) ::_exit(1);
          if (::write(progress[1], "x", 1) != 1) ::_exit(0);  // the test went away
        }
      } catch (...) {
        ::_exit(2);
      }
    }
    ::close(progress[1]);
    progress_fd_ = progress[0];
    expect_canary_progress();
  }

  void expect_canary_progress() {
    // Drain what it reported so far, then wait for one more round trip.
    char buf[4096];
    ::fcntl(progress_fd_, F_SETFL, O_NONBLOCK);
    while (::read(progress_fd_, buf, sizeof(buf)) > 0) {
    }
    pollfd p{progress_fd_, POLLIN, 0};
    ASSERT_EQ(::poll(&p, 1, 30'000), 1) << "the well-behaved client stopped being served";
    ASSERT_EQ(::read(progress_fd_, buf, 1), 1) << "the well-behaved client failed";
  }

  void stop_canary() {
    ::close(progress_fd_);
    int status = 0;
    ::waitpid(canary_, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "canary failed";
  }

  void expect_error_then_close(RawPeer& peer, Errc code) {
    auto f = peer.next();
    ASSERT_TRUE(f) << "no ERROR before the close";
    EXPECT_EQ(f->error_code(), code) << errc_name(f->error_code());
    EXPECT_TRUE(peer.closed_by_broker());
  }

  Daemon daemon_;
  std::optional<Client> keeper_;
  pid_t canary_ = -1;
  int progress_fd_ = -1;
};

TEST_F(BadInputTest, GarbageIsAnsweredWithBadMagicAndDisconnected) {
  RawPeer peer(daemon_.socket_path());
  peer.write(bytes_of("GET / HTTP/1.1\r\nHost: qbus\r\n\r\n"));
  expect_error_then_close(peer, Errc::bad_magic);
  EXPECT_TRUE(daemon_.wait_for_log("bad_magic"));
}

TEST_F(BadInputTest, RandomBytesAfterHandshakeAreRefused) {
  std::mt19937 rng(12345);
  std::vector<std::byte> junk(4096);
  for (auto& b : junk)
    b = static_cast<std::byte>(rng());
  RawPeer peer(daemon_.socket_path());
  peer.hello();
  peer.write(junk);
  expect_error_then_close(peer, Errc::bad_magic);
}

TEST_F(BadInputTest, HugeDeclaredLengthIsRefusedBeforeAnythingIsAllocated) {
  RawPeer peer(daemon_.socket_path());
  peer.hello();
  proto::ByteBuffer b;
  proto::encode_header(b.append(proto::kHeaderSize),
                       proto::Header{proto::FrameType::send, 0, 7, 0xFFFFFFF0u});
  peer.write(b);
  expect_error_then_close(peer, Errc::frame_too_large);
  EXPECT_TRUE(daemon_.wait_for_log("frame_too_large"));
}

TEST_F(BadInputTest, ClientThatNeverSpeaksIsDisconnectedAfterTheHandshakeTimeout) {
  RawPeer peer(daemon_.socket_path());
  expect_error_then_close(peer, Errc::handshake_timeout);
  EXPECT_TRUE(daemon_.wait_for_log("handshake_timeout"));
}

TEST_F(BadInputTest, FrameBeforeHelloIsRefused) {
  RawPeer peer(daemon_.socket_path());
  peer.write(frame(proto::FrameType::ping, 1, ""));
  expect_error_then_close(peer, Errc::handshake_required);
}

TEST_F(BadInputTest, HelloWithNoCommonVersionIsRefused) {
  RawPeer peer(daemon_.socket_path());
  proto::ByteBuffer b;
  proto::append_hello(b, 1, proto::Hello{3, 4, "future", ""});
  peer.write(b);
  expect_error_then_close(peer, Errc::unsupported_version);
}

TEST_F(BadInputTest, HeaderOfAnotherVersionIsRefused) {
  RawPeer peer(daemon_.socket_path());
  auto b = frame(proto::FrameType::hello, 1, "");
  std::vector<std::byte> raw(b.readable().begin(), b.readable().end());
  raw[4] = std::byte{2};
  peer.write(raw);
  expect_error_then_close(peer, Errc::unsupported_version);
}

TEST_F(BadInputTest, FrameCutOffMidwayIsCompletedLater) {
  RawPeer peer(daemon_.socket_path());
  peer.hello();
  proto::ByteBuffer b;
  const std::string payload(1000, 'p');
  proto::append_send(b, 42, proto::kFlagConfirm, "halves",
                     std::as_bytes(std::span(payload.data(), payload.size())));
  auto all = b.readable();
  peer.write(all.first(500));
  expect_canary_progress();  // the daemon serves others while our frame is incomplete
  peer.write(all.subspan(500));
  auto ok = peer.next();
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->type, proto::FrameType::ok);
  EXPECT_EQ(ok->correlation, 42u);
  auto m = keeper_->receive("halves", seconds(30));
  ASSERT_TRUE(m);
  EXPECT_EQ(m->text(), payload);
}

TEST_F(BadInputTest, ClientDyingMidFrameIsLoggedAndForgotten) {
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    RawPeer peer(daemon_.socket_path());
    peer.hello();
    proto::ByteBuffer b;
    proto::append_send(b, 1, 0, "dying", std::as_bytes(std::span("0123456789", 10)));
    peer.write(b.readable().first(30));
    ::_exit(0);
  }
  ::waitpid(child, nullptr, 0);
  EXPECT_TRUE(daemon_.wait_for_log("disconnected in the middle of a frame"));
  EXPECT_FALSE(keeper_->try_receive("dying"));
}

TEST_F(BadInputTest, UnknownFrameTypeIsAnsweredAndTheConnectionGoesOn) {
  RawPeer peer(daemon_.socket_path());
  peer.hello();
  peer.write(frame(static_cast<proto::FrameType>(99), 5, "abc"));
  auto f = peer.next();
  ASSERT_TRUE(f);
  EXPECT_EQ(f->error_code(), Errc::unknown_frame_type);
  EXPECT_EQ(f->correlation, 5u);
  peer.write(frame(proto::FrameType::ping, 6, ""));
  auto pong = peer.next();
  ASSERT_TRUE(pong);
  EXPECT_EQ(pong->type, proto::FrameType::pong);
  EXPECT_EQ(pong->correlation, 6u);
}

TEST_F(BadInputTest, RepeatedMistakesAreAnsweredEachTimeButLoggedSparingly) {
  RawPeer peer(daemon_.socket_path());
  peer.hello();
  proto::ByteBuffer b;
  for (std::uint64_t i = 1; i <= 500; ++i)
    proto::append_send(b, i, 0, "bad key!", {});
  proto::append_empty(b, proto::FrameType::ping, 501);
  peer.write(b);
  for (std::uint64_t i = 1; i <= 500; ++i) {
    auto f = peer.next();
    ASSERT_TRUE(f);
    ASSERT_EQ(f->error_code(), Errc::invalid_key);
  }
  auto pong = peer.next();
  ASSERT_TRUE(pong);
  ASSERT_EQ(pong->type, proto::FrameType::pong);
  const auto log = daemon_.log();
  std::size_t lines = 0;
  for (auto pos = log.find("invalid_key"); pos != std::string::npos;
       pos = log.find("invalid_key", pos + 1)) {
    ++lines;
  }
  EXPECT_GE(lines, 1u);
  EXPECT_LE(lines, 10u);
  EXPECT_NE(log.find("pid " + std::to_string(::getpid())), std::string::npos);
}

TEST_F(BadInputTest, MalformedBodiesAreAnsweredAndTheConnectionGoesOn) {
  RawPeer peer(daemon_.socket_path());
  peer.hello();
  proto::ByteBuffer b;
  proto::append_send(b, 10, 0, "bad key", {});                    // space is not allowed in keys
  proto::append_receive(b, 11, proto::Receive{-1, 0, "ok-key"});  // max_count 0
  proto::append_declare(b, 12, 0, proto::Declare{0, 0, proto::Overflow::reject, "k"});
  std::vector<std::byte> raw(b.readable().begin(), b.readable().end());
  raw[raw.size() - 3] = std::byte{9};  // overflow byte of the DECLARE: out of range
  peer.write(raw);
  b.clear();
  proto::append_send(b, 13, 0x8000, "k", {});             // unknown flag bit
  proto::append_empty(b, proto::FrameType::deliver, 14);  // not a client frame
  proto::append_send(b, 15, proto::kFlagConfirm, "k", {});
  peer.write(b);
  const std::pair<std::uint64_t, Errc> expected[] = {{10, Errc::invalid_key},
                                                     {11, Errc::malformed_frame},
                                                     {12, Errc::malformed_frame},
                                                     {13, Errc::malformed_frame},
                                                     {14, Errc::unexpected_frame}};
  for (const auto& [corr, code] : expected) {
    auto f = peer.next();
    ASSERT_TRUE(f);
    EXPECT_EQ(f->correlation, corr);
    EXPECT_EQ(f->error_code(), code) << "correlation " << corr;
  }
  auto ok = peer.next();
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->type, proto::FrameType::ok);
  EXPECT_EQ(ok->correlation, 15u);
}

TEST_F(BadInputTest, TooManyWaitingReceivesAreRefused) {
  RawPeer peer(daemon_.socket_path());
  peer.hello();
  proto::ByteBuffer b;
  for (std::uint64_t i = 1; i <= 65; ++i) {
    proto::append_receive(b, i, proto::Receive{-1, 1, "parked"});
  }
  peer.write(b);
  auto f = peer.next();
  ASSERT_TRUE(f);
  EXPECT_EQ(f->correlation, 65u);
  EXPECT_EQ(f->error_code(), Errc::too_many_receives);
}

TEST_F(BadInputTest, ReaderThatNeverReadsDoesNotStopOthers) {
  // A consumer asks for everything in big batches and then never reads its socket.
  {
    Client filler(ClientOptions{daemon_.address(), "filler", seconds(30)});
    Client::Batch batch(filler);
    const std::string payload(60'000, 'f');
    for (int i = 0; i < 400; ++i)
      filler.send("flood", payload);
  }
  RawPeer stuck(daemon_.socket_path());
  stuck.hello();
  proto::ByteBuffer b;
  for (std::uint64_t i = 1; i <= 20; ++i) {
    proto::append_receive(b, i, proto::Receive{-1, 4096, "flood"});
  }
  stuck.write(b);
  expect_canary_progress();
  // What the stuck reader could not take stays queued for someone else.
  Client other(ClientOptions{daemon_.address(), "other", seconds(30)});
  EXPECT_TRUE(other.receive("flood", seconds(30)));
}

TEST_F(BadInputTest, RegionRequestsFromAPeerThatNeverReadsHoldFewFdsInTheDaemon) {
  Client owner(ClientOptions{daemon_.address(), "owner", seconds(30)});
  auto area = owner.create_shared_region("open-area", 4096, 0666);
  RawPeer greedy(daemon_.socket_path());
  greedy.hello();
  // Every answer carries an fd; the peer reads none of them.
  proto::ByteBuffer b;
  for (std::uint64_t i = 1; i <= 3000; ++i)
    proto::append_region_attach(b, i, proto::RegionAttach{false, "open-area"});
  greedy.write(b);
  expect_canary_progress();
  owner.sync();
  // The region itself, and at most one connection's worth of fds waiting to be written.
  EXPECT_LE(daemon_.open_regions(), 1 + 32 + 1);
}

TEST_F(BadInputTest, UnsealedRegionIsRefusedAndTheConnectionGoesOn) {
  RawPeer peer(daemon_.socket_path());
  peer.hello();
  proto::ByteBuffer b;
  proto::append_region_alloc(b, 2, proto::RegionAlloc{4096});
  peer.write(b);
  auto grant = peer.next();  // its fd is dropped by the plain recv: never mapped, never sealed
  ASSERT_TRUE(grant);
  ASSERT_EQ(grant->type, proto::FrameType::region);
  proto::RegionGrantBody g;
  ASSERT_EQ(proto::decode_region_grant(grant->body, g), Errc::ok);
  proto::ByteBuffer s;
  proto::SendRegion m;
  m.region_id = g.region_id;
  m.length = 16;
  m.key = "never";
  proto::append_send_region(s, 3, proto::kFlagConfirm, m);
  proto::append_empty(s, proto::FrameType::ping, 4);
  peer.write(s);
  auto f = peer.next();
  ASSERT_TRUE(f);
  EXPECT_EQ(f->correlation, 3u);
  EXPECT_EQ(f->error_code(), Errc::unexpected_frame);
  f = peer.next();
  ASSERT_TRUE(f);
  EXPECT_EQ(f->type, proto::FrameType::pong);
}

}  // namespace
}  // namespace qbus::testing
