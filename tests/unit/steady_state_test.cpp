// The broker core allocates nothing per message in steady state: every traffic pattern
// below runs a few warm-up rounds (queues, chunks, stashed nodes and peers' tables come
// into being), then many rounds under the counting operator new of qbus_alloc_counter.
#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string_view>
#include <vector>

#include "broker/broker.hpp"
#include "counting_allocator.hpp"
#include "counting_sink.hpp"
#include "fake_backing.hpp"

namespace qbus::broker {
namespace {

class SteadyState : public ::testing::Test {
 protected:
  static constexpr PeerId kProducer = 1;
  static constexpr PeerId kConsumer = 2;
  static constexpr std::uint32_t kConsumerPid = 20'002;
  static constexpr std::string_view kKey = "steady.jobs";

  SteadyState() {
    connect(kProducer, 20'001);
    connect(kConsumer, kConsumerPid);
  }
  void connect(PeerId peer, std::uint32_t pid) {
    Identity id{pid, 1000, 1000, peer, 1, false};
    ASSERT_EQ(broker_.connect(peer, id, now_), Errc::ok);
  }

  // Runs `round` 20 times to warm up, then 2,000 times counting allocations; every round
  // must deliver `per_round` messages.
  void expect_no_allocations(std::uint64_t per_round, const std::function<void()>& round) {
    for (int i = 0; i < 20; ++i)
      round();
    const auto delivered = sink_.delivered;
    const auto before = support::allocations();
    constexpr int kRounds = 2000;
    for (int i = 0; i < kRounds; ++i)
      round();
    const auto made = support::allocations() - before;
    EXPECT_EQ(sink_.failed, 0u);
    EXPECT_EQ(sink_.delivered - delivered, per_round * kRounds);
    EXPECT_EQ(made, 0u) << made << " allocations for " << per_round * kRounds << " messages";
  }

  fakes::FakeBacking backing_;
  fakes::CountingSink sink_;
  Broker broker_{Limits{}, sink_, backing_};
  Clock::time_point now_ = Clock::now();
  std::vector<std::byte> payload_ = std::vector<std::byte>(64, std::byte{0x42});
  std::uint64_t corr_ = 0;
};

TEST_F(SteadyState, BatchesThroughADeclaredQueue) {
  std::string text;
  ASSERT_EQ(broker_.declare_configured(kKey, QueueOptions{}, text), Errc::ok) << text;
  expect_no_allocations(64, [&] {
    for (int i = 0; i < 64; ++i)
      EXPECT_EQ(broker_.send(kProducer, kKey, payload_, now_).result, SendResult::accepted);
    broker_.receive(kConsumer, ++corr_, kKey, 64, 0, now_);
  });
}

// With an access policy, each peer's decision for the key is cached after the warm-up: the
// policy costs no allocation per message either.
TEST_F(SteadyState, BatchesUnderAnAccessPolicy) {
  PolicyRule rule;
  rule.operations = kAllOperations;
  rule.uids = {1000};
  rule.keys = {"steady.*"};
  broker_.set_policy(std::make_unique<Policy>(PolicySpec{false, {rule}}));
  std::string text;
  ASSERT_EQ(broker_.declare_configured(kKey, QueueOptions{}, text), Errc::ok) << text;
  expect_no_allocations(64, [&] {
    for (int i = 0; i < 64; ++i)
      EXPECT_EQ(broker_.send(kProducer, kKey, payload_, now_).result, SendResult::accepted);
    broker_.receive(kConsumer, ++corr_, kKey, 64, 0, now_);
  });
}

// An implicit queue is collected each time it drains and created again by the next send.
TEST_F(SteadyState, BatchesThroughAnImplicitQueueThatComesAndGoes) {
  expect_no_allocations(64, [&] {
    for (int i = 0; i < 64; ++i)
      EXPECT_EQ(broker_.send(kProducer, kKey, payload_, now_).result, SendResult::accepted);
    broker_.receive(kConsumer, ++corr_, kKey, 64, 0, now_);
    EXPECT_EQ(broker_.find(kKey), nullptr);
  });
}

// The consumer waits (with a deadline) before the message arrives: the send hands it over.
TEST_F(SteadyState, HandOverToAWaitingReceiver) {
  expect_no_allocations(1, [&] {
    broker_.receive(kConsumer, ++corr_, kKey, 1, 30'000, now_);
    EXPECT_EQ(broker_.send(kProducer, kKey, payload_, now_).result, SendResult::accepted);
  });
  EXPECT_FALSE(broker_.next_deadline().has_value());
}

TEST_F(SteadyState, DirectMessagesByPid) {
  DirectSend d;
  d.kind = proto::TargetKind::pid;
  d.target = kConsumerPid;
  expect_no_allocations(16, [&] {
    for (int i = 0; i < 16; ++i)
      EXPECT_EQ(broker_.send_direct(kProducer, d, payload_, now_).result, SendResult::accepted);
    broker_.receive_direct(kConsumer, ++corr_, 16, 0, now_);
  });
}

// A request with a timeout to a waiting worker, and the worker's reply by client id.
TEST_F(SteadyState, RequestAndReply) {
  expect_no_allocations(2, [&] {
    broker_.receive(kConsumer, ++corr_, kKey, 1, 30'000, now_);
    const std::uint64_t request_id = ++corr_;
    ASSERT_EQ(broker_.request(kProducer, request_id, kKey, payload_, 30'000, now_).result,
              SendResult::accepted);
    ASSERT_EQ(sink_.last_request_id, request_id);
    DirectSend reply;
    reply.kind = proto::TargetKind::client_id;
    reply.target = kProducer;
    reply.in_reply_to = request_id;
    ASSERT_EQ(broker_.send_direct(kConsumer, reply, payload_, now_).result, SendResult::accepted);
    ASSERT_EQ(sink_.last_correlation, request_id);
  });
  EXPECT_FALSE(broker_.next_deadline().has_value());
}

}  // namespace
}  // namespace qbus::broker
