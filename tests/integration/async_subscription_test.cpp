// qbus::AsyncSubscription against the real qbusd: queue subscriptions in acknowledgement
// mode, subject subscriptions, several async_next()s waiting at once, the broker ending a
// subscription, cancellation of a wait and of the subscription, the bound on what an
// at-most-once subscription keeps, and what a destroyed subscription gives back.
#include <gtest/gtest.h>

#include <asio/bind_cancellation_slot.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <asio/use_awaitable.hpp>
#include <chrono>
#include <string>
#include <vector>

#include "daemon.hpp"
#include "qbus/async_client.hpp"
#include "qbus/client.hpp"

namespace qbus {
namespace {

using namespace std::chrono_literals;
using testing::Daemon;

constexpr auto kLong = 30s;

ClientOptions at(const Daemon& d) {
  ClientOptions o;
  o.address = d.address();
  return o;
}

// Runs `io` until `done` or, should the test be broken, kLong.
template <typename Done>
void run_until(asio::io_context& io, Done&& done) {
  io.restart();
  const auto deadline = std::chrono::steady_clock::now() + kLong;
  while (!done() && std::chrono::steady_clock::now() < deadline && io.run_one_for(kLong) != 0) {
  }
}

// Every frame the AsyncClient sent before is answered once a confirmed send is.
void sync(asio::io_context& io, AsyncClient& c) {
  SendOptions confirm;
  confirm.confirm = true;
  bool synced = false;
  c.async_send("async.sub.sync", "s", confirm, [&](std::error_code ec) {
    EXPECT_FALSE(ec) << ec.message();
    synced = true;
  });
  run_until(io, [&] { return synced; });
  ASSERT_TRUE(synced);
}

TEST(AsyncSubscriptionTest, AQueueSubscriptionDeliversInOrderAndAcksSettleEachMessage) {
  Daemon d;
  asio::io_context io;
  AsyncClient c(io.get_executor(), at(d));
  SubscribeOptions options;
  options.prefetch = 8;
  auto sub = c.subscribe("async.sub.q", options);
  EXPECT_TRUE(sub.active());
  EXPECT_EQ(sub.key(), "async.sub.q");
  constexpr int kMessages = 200;
  Client producer(at(d));
  for (int i = 0; i < kMessages; ++i)
    producer.send("async.sub.q", std::to_string(i));
  producer.sync();

  std::vector<std::string> got;
  bool ended_clean = false;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        while (got.size() < kMessages) {
          auto m = co_await sub.async_next(asio::use_awaitable);
          if (!m) co_return;
          EXPECT_NE(m->delivery_tag(), 0u);
          got.emplace_back(m->text());
          c.ack(*m);
        }
        co_await sub.async_cancel(asio::use_awaitable);
        EXPECT_FALSE(sub.active());
        auto after = co_await sub.async_next(asio::use_awaitable);
        ended_clean = !after.has_value();
      },
      [](std::exception_ptr e) {
        if (e) std::rethrow_exception(e);
      });
  run_until(io, [&] { return ended_clean; });
  ASSERT_EQ(got.size(), static_cast<std::size_t>(kMessages));
  for (int i = 0; i < kMessages; ++i)
    EXPECT_EQ(got[i], std::to_string(i));
  EXPECT_TRUE(ended_clean);
  // Every message was acked: none comes back.
  sync(io, c);
  EXPECT_FALSE(producer.receive("async.sub.q", 0ms).has_value());
}

TEST(AsyncSubscriptionTest, NextsWaitingTogetherCompleteInOrderWithTheSubjectsPublished) {
  Daemon d;
  asio::io_context io;
  AsyncClient c(io.get_executor(), at(d));
  auto sub = c.subscribe_subject("async.events.>");
  std::vector<std::string> got;
  for (int i = 0; i < 3; ++i) {
    sub.async_next([&](std::error_code ec, std::optional<Message> m) {
      ASSERT_FALSE(ec) << ec.message();
      ASSERT_TRUE(m.has_value());
      got.push_back(std::string(m->key()) + "=" + std::string(m->text()));
    });
  }
  sync(io, c);  // subscribed: the broker confirmed it before this send's answer
  Client publisher(at(d));
  publisher.publish("async.events.a", "1");
  publisher.publish("async.other", "not matched");
  publisher.publish("async.events.b.c", "2");
  publisher.publish("async.events.a", "3");
  publisher.sync();
  run_until(io, [&] { return got.size() == 3; });
  EXPECT_EQ(got, (std::vector<std::string>{"async.events.a=1", "async.events.b.c=2",
                                           "async.events.a=3"}));
}

TEST(AsyncSubscriptionTest, TheBrokerEndingASubscriptionIsWhatItsNextCompletesWith) {
  Daemon d;
  asio::io_context io;
  AsyncClient c(io.get_executor(), at(d));
  Client owner(at(d));
  owner.send("async.sub.doomed", "first");
  auto sub = c.subscribe("async.sub.doomed");
  std::optional<Message> first;
  std::error_code ended;
  sub.async_next([&](std::error_code ec, std::optional<Message> m) {
    EXPECT_FALSE(ec) << ec.message();
    first = std::move(m);
  });
  run_until(io, [&] { return first.has_value(); });
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->text(), "first");
  sub.async_next([&](std::error_code ec, std::optional<Message>) { ended = ec; });
  owner.delete_queue("async.sub.doomed");
  run_until(io, [&] { return static_cast<bool>(ended); });
  EXPECT_EQ(ended, Errc::queue_deleted);
  EXPECT_FALSE(sub.active());
  // An ended subscription says so again, and cancelling it has nothing left to do.
  std::error_code again;
  std::error_code cancelled = Errc::internal_error;
  sub.async_next([&](std::error_code ec, std::optional<Message>) { again = ec; });
  sub.async_cancel([&](std::error_code ec) { cancelled = ec; });
  run_until(io, [&] { return again && !cancelled; });
  EXPECT_EQ(again, Errc::queue_deleted);
  EXPECT_FALSE(cancelled) << cancelled.message();
  // A bad pattern is refused before anything is sent.
  EXPECT_THROW(c.subscribe_subject("async..bad"), Error);
  EXPECT_THROW(c.subscribe("bad key!"), Error);
}

TEST(AsyncSubscriptionTest, ACancelledWaitLosesNoMessage) {
  Daemon d;
  asio::io_context io;
  AsyncClient c(io.get_executor(), at(d));
  auto sub = c.subscribe_subject("async.cancel");
  sync(io, c);
  // The message is on its way to the connection when the wait is cancelled: whichever
  // comes first, the wait gets it or the next one does.
  asio::cancellation_signal signal;
  std::error_code first_ec = Errc::internal_error;
  std::optional<Message> first;
  bool first_done = false;
  sub.async_next(asio::bind_cancellation_slot(signal.slot(),
                                              [&](std::error_code ec, std::optional<Message> m) {
                                                first_ec = ec;
                                                first = std::move(m);
                                                first_done = true;
                                              }));
  Client publisher(at(d));
  publisher.publish("async.cancel", "kept");
  publisher.sync();
  signal.emit(asio::cancellation_type::terminal);
  run_until(io, [&] { return first_done; });
  ASSERT_TRUE(first_done);
  if (first_ec == asio::error::operation_aborted) {
    EXPECT_FALSE(first.has_value());
    EXPECT_TRUE(sub.active());
    std::optional<Message> got;
    sub.async_next([&](std::error_code ec, std::optional<Message> m) {
      EXPECT_FALSE(ec) << ec.message();
      got = std::move(m);
    });
    run_until(io, [&] { return got.has_value(); });
    ASSERT_TRUE(got.has_value());
    EXPECT_EQ(got->text(), "kept");
  } else {
    EXPECT_FALSE(first_ec) << first_ec.message();
    ASSERT_TRUE(first.has_value());
    EXPECT_EQ(first->text(), "kept");
  }
  EXPECT_EQ(sub.pending(), 0u);
}

TEST(AsyncSubscriptionTest, AnAtMostOnceSubscriptionKeepsItsNewestWithinItsBound) {
  Daemon d;
  asio::io_context io;
  AsyncClient c(io.get_executor(), at(d));
  SubjectOptions options;
  options.max_messages = 10;
  auto sub = c.subscribe_subject("async.flood", options);
  sync(io, c);
  // Published by this AsyncClient itself, each confirmed: the answers are read, and the
  // deliveries with them, while nobody takes them.
  constexpr int kMessages = 100;
  PublishOptions confirm;
  confirm.confirm = true;
  int published = 0;
  for (int i = 0; i < kMessages; ++i) {
    c.async_publish("async.flood", std::to_string(i), confirm, [&](std::error_code ec) {
      EXPECT_FALSE(ec) << ec.message();
      ++published;
    });
  }
  run_until(io, [&] { return published == kMessages; });
  sync(io, c);
  EXPECT_EQ(sub.pending(), 10u);
  std::vector<std::string> got;
  std::uint64_t dropped_by_broker = 0;
  for (int i = 0; i < 10; ++i) {
    sub.async_next([&](std::error_code ec, std::optional<Message> m) {
      ASSERT_FALSE(ec) << ec.message();
      ASSERT_TRUE(m.has_value());
      dropped_by_broker += m->dropped_before();
      got.emplace_back(m->text());
    });
  }
  run_until(io, [&] { return got.size() == 10; });
  ASSERT_EQ(got.size(), 10u);
  for (int i = 0; i < 10; ++i)
    EXPECT_EQ(got[i], std::to_string(kMessages - 10 + i));
  EXPECT_EQ(sub.dropped() + dropped_by_broker, static_cast<std::uint64_t>(kMessages - 10));
  EXPECT_EQ(sub.pending(), 0u);
}

TEST(AsyncSubscriptionTest, ADestroyedSubscriptionGivesBackWhatItKeptInAckMode) {
  Daemon d;
  asio::io_context io;
  AsyncClient c(io.get_executor(), at(d));
  Client producer(at(d));
  for (int i = 0; i < 5; ++i)
    producer.send("async.sub.back", std::to_string(i));
  producer.sync();
  std::optional<Message> first;
  {
    SubscribeOptions options;
    options.prefetch = 5;
    auto sub = c.subscribe("async.sub.back", options);
    sub.async_next([&](std::error_code ec, std::optional<Message> m) {
      EXPECT_FALSE(ec) << ec.message();
      first = std::move(m);
    });
    run_until(io, [&] { return first.has_value(); });
    ASSERT_TRUE(first.has_value());
    // The other four arrive behind it: read while something waits.
    const auto deadline = std::chrono::steady_clock::now() + kLong;
    while (sub.pending() < 4) {
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "pending " << sub.pending();
      bool answered = false;
      c.async_receive("async.sub.idle", 100ms,
                      [&](std::error_code, std::optional<Message>) { answered = true; });
      run_until(io, [&] { return answered; });
      ASSERT_TRUE(answered);
    }
  }
  // The UNSUBSCRIBE's answer comes before this send's, and the nacks go out behind it;
  // they are processed once the next send is answered.
  sync(io, c);
  sync(io, c);
  // The four kept ones are back in the queue; the one handed out is this client's.
  auto back = producer.receive_batch("async.sub.back", 5, 10s);
  ASSERT_EQ(back.size(), 4u);
  for (std::size_t i = 0; i < back.size(); ++i) {
    EXPECT_EQ(back[i].text(), std::to_string(i + 1));
    EXPECT_TRUE(back[i].redelivered());
  }
  c.nack(*first);
  sync(io, c);
  const auto returned = producer.receive("async.sub.back", 10s);
  ASSERT_TRUE(returned.has_value());
  EXPECT_EQ(returned->text(), "0");
}

TEST(AsyncSubscriptionTest, TheAsyncClientGoingEndsItsSubscriptionsWaitsWithOperationAborted) {
  Daemon d;
  asio::io_context io;
  std::error_code waiting;
  std::error_code later;
  auto c = std::make_unique<AsyncClient>(io.get_executor(), at(d));
  auto sub = c->subscribe_subject("async.gone");
  sub.async_next([&](std::error_code ec, std::optional<Message>) { waiting = ec; });
  c.reset();
  sub.async_next([&](std::error_code ec, std::optional<Message>) { later = ec; });
  run_until(io, [&] { return waiting && later; });
  EXPECT_EQ(waiting, asio::error::operation_aborted);
  EXPECT_EQ(later, asio::error::operation_aborted);
  EXPECT_FALSE(sub.active());
}

TEST(AsyncSubscriptionTest, TheBrokerGoingAwayEndsAWaitWithTheConnectionsError) {
  auto d = std::make_unique<Daemon>();
  asio::io_context io;
  AsyncClient c(io.get_executor(), at(*d));
  auto sub = c.subscribe("async.sub.lost");
  sync(io, c);
  std::error_code lost;
  sub.async_next([&](std::error_code ec, std::optional<Message>) { lost = ec; });
  d.reset();
  run_until(io, [&] { return static_cast<bool>(lost); });
  EXPECT_TRUE(lost == Errc::connection_closed || lost == Errc::io_error ||
              lost == Errc::shutting_down)
      << lost.message();
}

}  // namespace
}  // namespace qbus
