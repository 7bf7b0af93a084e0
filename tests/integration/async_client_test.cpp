// qbus::AsyncClient against the real qbusd: completion tokens (callbacks, coroutines,
// futures), many operations in flight on one connection, many clients on one thread,
// cancellation, destruction with operations pending, and the broker going away.
#include <gtest/gtest.h>

#include <algorithm>
#include <asio/bind_cancellation_slot.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/use_future.hpp>
#include <atomic>
#include <chrono>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "daemon.hpp"
#include "eventually.hpp"
#include "qbus/async_client.hpp"
#include "qbus/client.hpp"

namespace qbus {
namespace {

using namespace std::chrono_literals;
using testing::Daemon;
using testing::eventually;

constexpr auto kLong = 30s;

ClientOptions at(const Daemon& d) {
  ClientOptions o;
  o.address = d.address();
  return o;
}

// Runs `io`'s ready handlers (a pool's refill grants arrive as handlers) until qbusd holds
// `n` regions; false when it never does.
bool open_regions_reach(asio::io_context& io, const Daemon& d, int n) {
  io.restart();
  return eventually([&] {
    io.poll();
    return d.open_regions() == n;
  });
}

// Answers every request on `key` with its own payload until told to stop (a "stop"
// payload), from a blocking Client of its own.
class Echo {
 public:
  Echo(const Daemon& d, std::string key)
      : client_(at(d)), thread_([this, key = std::move(key)] { serve(key); }) {}
  ~Echo() { thread_.join(); }
  std::size_t served() const { return served_; }

 private:
  void serve(const std::string& key) {
    while (true) {
      auto batch = client_.receive_batch(key, 256, 30s);
      if (batch.empty()) return;
      for (const Message& m : batch) {
        if (m.text() == "stop") return;
        client_.reply(m, m.text());
        ++served_;
      }
    }
  }
  Client client_;
  std::atomic<std::size_t> served_{0};
  std::thread thread_;
};

TEST(AsyncClientTest, CallbacksSendReceiveAndATimeoutThatIsNotAnError) {
  Daemon d;
  asio::io_context io;
  AsyncClient c(io.get_executor(), at(d));
  std::error_code sent_ec = Errc::internal_error;
  std::optional<Message> got;
  std::error_code got_ec = Errc::internal_error;
  bool timed_out = false;
  c.async_send("async.q", "hello", [&](std::error_code ec) { sent_ec = ec; });
  c.async_receive("async.q", 10s, [&](std::error_code ec, std::optional<Message> m) {
    got_ec = ec;
    got = std::move(m);
    c.async_receive("async.q", 50ms, [&](std::error_code ec2, std::optional<Message> none) {
      EXPECT_FALSE(ec2) << ec2.message();
      timed_out = !none.has_value();
    });
  });
  io.run_for(kLong);
  EXPECT_FALSE(sent_ec) << sent_ec.message();
  EXPECT_FALSE(got_ec) << got_ec.message();
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->text(), "hello");
  EXPECT_EQ(got->key(), "async.q");
  EXPECT_EQ(got->sender().pid, c.session().pid);
  EXPECT_TRUE(timed_out);
}

TEST(AsyncClientTest, AThousandConcurrentRequestsOnOneConnectionEachGetTheirOwnReply) {
  Daemon d;
  Echo echo(d, "async.echo");
  asio::io_context io;
  AsyncClient c(io.get_executor(), at(d));
  constexpr int kRequests = 1000;
  std::set<std::string> replies;
  int errors = 0;
  int mismatched = 0;
  for (int i = 0; i < kRequests; ++i) {
    const std::string payload = "request " + std::to_string(i);
    c.async_request("async.echo", payload, 30s,
                    [&, payload](std::error_code ec, std::optional<Message> reply) {
                      if (ec || !reply) {
                        ++errors;
                        return;
                      }
                      if (reply->text() != payload) ++mismatched;
                      replies.insert(std::string(reply->text()));
                    });
  }
  io.run_for(kLong);
  EXPECT_EQ(errors, 0);
  EXPECT_EQ(mismatched, 0);
  EXPECT_EQ(replies.size(), static_cast<std::size_t>(kRequests));
  EXPECT_EQ(echo.served(), static_cast<std::size_t>(kRequests));
  Client(at(d)).send("async.echo", "stop");
}

TEST(AsyncClientTest, CoroutinesAwaitSendRequestAndPublish) {
  Daemon d;
  Echo echo(d, "async.coro");
  asio::io_context io;
  AsyncClient c(io.get_executor(), at(d));
  Client subscriber(at(d));
  auto sub = subscriber.subscribe_subject("async.events.>");
  bool finished = false;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        co_await c.async_send("async.coro.q", "one", asio::use_awaitable);
        auto m = co_await c.async_receive("async.coro.q", 10s, asio::use_awaitable);
        EXPECT_TRUE(m && m->text() == "one");
        auto reply = co_await c.async_request("async.coro", "ping", 10s, asio::use_awaitable);
        EXPECT_TRUE(reply && reply->text() == "ping");
        PublishOptions confirmed;
        confirmed.confirm = true;
        co_await c.async_publish("async.events.a", "event", confirmed, asio::use_awaitable);
        finished = true;
      },
      [](std::exception_ptr e) {
        if (e) std::rethrow_exception(e);
      });
  io.run_for(kLong);
  EXPECT_TRUE(finished);
  const auto event = sub.next(10s);
  ASSERT_TRUE(event.has_value());
  EXPECT_EQ(event->text(), "event");
  EXPECT_EQ(event->key(), "async.events.a");
  Client(at(d)).send("async.coro", "stop");
}

TEST(AsyncClientTest, FuturesCarryTheResultAndErrorsArriveAsErrorCodes) {
  Daemon d;
  asio::io_context io;
  AsyncClient c(io.get_executor(), at(d));
  std::thread runner;
  auto sent = c.async_send("async.f", "x", asio::use_future);
  auto bad = c.async_send("bad key!", "x", asio::use_future);
  SendOptions confirm;
  confirm.confirm = true;
  auto refused =
      c.async_send("async.f", std::string(2 * 1024 * 1024, 'x'), confirm, asio::use_future);
  auto got = c.async_receive("async.f", 10s, asio::use_future);
  runner = std::thread([&] { io.run_for(kLong); });
  EXPECT_NO_THROW(sent.get());
  try {
    bad.get();
    ADD_FAILURE() << "a bad key was accepted";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), Errc::invalid_key);
  }
  try {
    refused.get();
    ADD_FAILURE() << "a payload over max_payload was accepted";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), Errc::payload_too_large);
  }
  const auto m = got.get();
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->text(), "x");
  runner.join();
}

// With a region pool the AsyncClient keeps regions granted ahead of need, as Client does:
// qbusd holds the refills besides the program's own regions, and every region handed out
// is fresh and zero-filled, whether it came ready from the pool or was allocated cold.
TEST(AsyncClientTest, APooledClientAllocatesFreshRegionsAndKeepsRefillsGranted) {
  Daemon d;
  asio::io_context io;
  ClientOptions o = at(d);
  constexpr std::size_t kSize = 1 << 20;
  o.region_pool_bytes = 4 * kSize;
  AsyncClient c(io.get_executor(), o);
  std::vector<Region> held;
  const auto allocate = [&] {
    bool done = false;
    c.async_allocate_region(kSize, [&](std::error_code ec, Region r) {
      done = true;
      ASSERT_FALSE(ec) << ec.message();
      ASSERT_EQ(r.size(), kSize);
      const auto bytes = r.data();
      EXPECT_TRUE(
          std::all_of(bytes.begin(), bytes.end(), [](std::byte b) { return b == std::byte{0}; }));
      held.push_back(std::move(r));
    });
    io.restart();
    while (!done && io.run_one_for(kLong) != 0) {
    }
    ASSERT_TRUE(done);
  };
  allocate();
  // One region of the program's, two refills for the pool.
  EXPECT_TRUE(open_regions_reach(io, d, 3)) << d.open_regions();
  allocate();  // ready in the pool or, while it is still being populated, cold
  EXPECT_TRUE(open_regions_reach(io, d, 4)) << d.open_regions();
  ASSERT_EQ(held.size(), 2u);
  held.clear();
}

// The uid's region quota is short while the pool holds regions: they give way, and the
// allocation is asked again instead of failing.
TEST(AsyncClientTest, APooledClientsRegionsGiveWayWhenTheQuotaIsShort) {
  Daemon d(testing::DaemonOptions{
      .config_json = R"({"limits": {"uid_max_regions": 3, "uid_max_region_bytes": 4194304}})"});
  asio::io_context io;
  ClientOptions o = at(d);
  o.region_pool_bytes = 4 << 20;
  AsyncClient c(io.get_executor(), o);
  std::vector<Region> held;
  for (const std::size_t size : {std::size_t{1} << 20, std::size_t{512} << 10}) {
    std::error_code got = Errc::internal_error;
    c.async_allocate_region(size, [&](std::error_code ec, Region r) {
      got = ec;
      if (!ec) held.push_back(std::move(r));
    });
    io.restart();
    while (got == Errc::internal_error && io.run_one_for(kLong) != 0) {
    }
    ASSERT_FALSE(got) << "size " << size << ": " << got.message();
    if (size == std::size_t{1} << 20) {
      // The program's region and two refills: the uid's 3 regions are all in use.
      ASSERT_TRUE(open_regions_reach(io, d, 3)) << d.open_regions();
    }
  }
  EXPECT_EQ(held.size(), 2u);
}

TEST(AsyncClientTest, RegionsAreAllocatedSentAndPublishedWithoutACopy) {
  Daemon d;
  asio::io_context io;
  AsyncClient c(io.get_executor(), at(d));
  Client receiver(at(d));
  auto sub = receiver.subscribe_subject("async.frames");
  constexpr std::size_t kSize = 1 << 20;
  int sent = 0;
  std::error_code first_ec = Errc::internal_error;
  const auto fill = [](Region& r, char byte) {
    for (auto& b : r.data())
      b = std::byte{static_cast<unsigned char>(byte)};
  };
  c.async_allocate_region(kSize, [&](std::error_code ec, Region r) {
    first_ec = ec;
    if (ec) return;
    EXPECT_EQ(r.size(), kSize);
    fill(r, 'q');
    SendOptions confirm;
    confirm.confirm = true;
    c.async_send("async.bulk", std::move(r), confirm, [&](std::error_code sent_ec) {
      EXPECT_FALSE(sent_ec) << sent_ec.message();
      ++sent;
    });
  });
  c.async_allocate_region(kSize, [&](std::error_code ec, Region r) {
    ASSERT_FALSE(ec) << ec.message();
    fill(r, 's');
    PublishOptions confirm;
    confirm.confirm = true;
    c.async_publish("async.frames", std::move(r), confirm, [&](std::error_code pub_ec) {
      EXPECT_FALSE(pub_ec) << pub_ec.message();
      ++sent;
    });
  });
  io.run_for(kLong);
  EXPECT_FALSE(first_ec) << first_ec.message();
  ASSERT_EQ(sent, 2);
  const auto check = [&](const std::optional<Message>& m, char byte) {
    ASSERT_TRUE(m.has_value());
    EXPECT_TRUE(m->in_shared_memory());
    ASSERT_EQ(m->size(), kSize);
    EXPECT_EQ(m->text().find_first_not_of(byte), std::string_view::npos);
  };
  check(receiver.receive("async.bulk", 10s), 'q');
  check(sub.next(10s), 's');

  // An allocation over the broker's region limits is refused through the handler.
  std::error_code refused;
  c.async_allocate_region(std::size_t{1} << 50, [&](std::error_code ec, Region) { refused = ec; });
  io.restart();
  io.run_for(kLong);
  EXPECT_TRUE(refused == Errc::payload_too_large || refused == Errc::quota_exceeded)
      << refused.message();
}

TEST(AsyncClientTest, ACancelledReceiveEndsAtOnceAndItsLateMessageGoesBack) {
  Daemon d;
  asio::io_context io;
  AsyncClient c(io.get_executor(), at(d));
  asio::cancellation_signal plain_cancel;
  asio::cancellation_signal ack_cancel;
  std::error_code plain_ec;
  std::error_code ack_ec;
  int done = 0;
  c.async_receive("async.plain", 30s,
                  asio::bind_cancellation_slot(plain_cancel.slot(),
                                               [&](std::error_code ec, std::optional<Message>) {
                                                 plain_ec = ec;
                                                 ++done;
                                               }));
  ReceiveOptions ack;
  ack.ack = true;
  c.async_receive("async.acked", 30s, ack,
                  asio::bind_cancellation_slot(ack_cancel.slot(),
                                               [&](std::error_code ec, std::optional<Message>) {
                                                 ack_ec = ec;
                                                 ++done;
                                               }));
  asio::post(io, [&] {
    plain_cancel.emit(asio::cancellation_type::terminal);
    ack_cancel.emit(asio::cancellation_type::terminal);
  });
  while (done < 2 && io.run_one_for(kLong) != 0) {
  }
  EXPECT_EQ(plain_ec, asio::error::operation_aborted);
  EXPECT_EQ(ack_ec, asio::error::operation_aborted);

  // The broker still holds both cancelled receives (each made in acknowledgement mode on
  // the wire): the message it hands to either comes back to its queue, marked
  // redelivered, for the next receiver.
  Client producer(at(d));
  producer.send_confirmed("async.acked", "late");
  producer.send_confirmed("async.plain", "late too");
  // A ping through the async connection reads the late delivery (and nacks it).
  bool pinged = false;
  SendOptions confirm;
  confirm.confirm = true;
  c.async_send("async.ping", "p", confirm, [&](std::error_code) { pinged = true; });
  io.restart();
  while (!pinged && io.run_one_for(kLong) != 0) {
  }
  ASSERT_TRUE(pinged);
  Client other(at(d));
  const auto back = other.receive("async.acked", 10s);
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->text(), "late");
  EXPECT_TRUE(back->redelivered());
  const auto plain_back = other.receive("async.plain", 10s);
  ASSERT_TRUE(plain_back.has_value());
  EXPECT_EQ(plain_back->text(), "late too");
  EXPECT_TRUE(plain_back->redelivered());

  // A cancellable plain receive that is not cancelled hands out a plain message, acked
  // already.
  producer.send_confirmed("async.plain", "kept");
  std::optional<Message> got;
  asio::cancellation_signal never;
  c.async_receive(
      "async.plain", 10s,
      asio::bind_cancellation_slot(
          never.slot(), [&](std::error_code, std::optional<Message> m) { got = std::move(m); }));
  io.restart();
  while (!got && io.run_one_for(kLong) != 0) {
  }
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->text(), "kept");
  EXPECT_EQ(got->delivery_tag(), 0u);
  pinged = false;
  c.async_send("async.ping", "p", confirm, [&](std::error_code) { pinged = true; });
  io.restart();
  while (!pinged && io.run_one_for(kLong) != 0) {
  }
  EXPECT_FALSE(other.receive("async.plain", 0ms).has_value());
  EXPECT_EQ(c.send_failures().count, 0u);
}

TEST(AsyncClientTest, DestroyedWithOperationsPendingCompletesThemWithOperationAborted) {
  Daemon d;
  asio::io_context io;
  std::vector<std::error_code> codes;
  {
    AsyncClient c(io.get_executor(), at(d));
    for (int i = 0; i < 10; ++i) {
      c.async_receive("async.never", 30s, [&](std::error_code ec, std::optional<Message> m) {
        EXPECT_FALSE(m.has_value());
        codes.push_back(ec);
      });
    }
  }
  io.run_for(kLong);
  ASSERT_EQ(codes.size(), 10u);
  for (const auto& ec : codes)
    EXPECT_EQ(ec, asio::error::operation_aborted);
}

TEST(AsyncClientTest, TheBrokerGoingAwayCompletesEveryPendingOperationWithAnError) {
  auto d = std::make_unique<Daemon>();
  asio::io_context io;
  AsyncClient c(io.get_executor(), at(*d));
  std::vector<std::error_code> codes;
  for (int i = 0; i < 50; ++i) {
    c.async_request("async.nobody", "x", 60s,
                    [&](std::error_code ec, std::optional<Message>) { codes.push_back(ec); });
  }
  // Every request is in the broker's hands once a confirmed send behind them is answered.
  SendOptions confirm;
  confirm.confirm = true;
  bool synced = false;
  c.async_send("async.sync", "s", confirm, [&](std::error_code ec) {
    EXPECT_FALSE(ec) << ec.message();
    synced = true;
  });
  while (!synced && io.run_one_for(kLong) != 0) {
  }
  ASSERT_TRUE(synced);
  d->stop();  // SIGTERM: qbusd ends every connection
  io.restart();
  io.run_for(kLong);
  ASSERT_EQ(codes.size(), 50u);
  for (const auto& ec : codes) {
    EXPECT_TRUE(ec == Errc::shutting_down || ec == Errc::connection_closed) << ec.message();
  }
  // Later operations fail at once; a new AsyncClient on a new broker works.
  std::error_code after;
  c.async_send("async.q", "x", [&](std::error_code ec) { after = ec; });
  io.restart();
  io.run_for(kLong);
  EXPECT_TRUE(after == Errc::shutting_down || after == Errc::connection_closed ||
              after == Errc::io_error)
      << after.message();

  d = std::make_unique<Daemon>();
  AsyncClient again(io.get_executor(), at(*d));
  std::optional<Message> m;
  again.async_send("async.q", "back", [](std::error_code) {});
  again.async_receive("async.q", 10s,
                      [&](std::error_code, std::optional<Message> got) { m = std::move(got); });
  io.restart();
  io.run_for(kLong);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->text(), "back");
}

TEST(AsyncClientTest, OneThreadRunsManyClientsEachWithARequestInFlight) {
  Daemon d;
  Echo echo(d, "async.many");
  asio::io_context io;
  constexpr int kClients = 300;
  std::vector<std::unique_ptr<AsyncClient>> clients;
  int ok = 0;
  for (int i = 0; i < kClients; ++i) {
    clients.push_back(std::make_unique<AsyncClient>(io.get_executor(), at(d)));
    const std::string payload = "client " + std::to_string(i);
    clients.back()->async_request("async.many", payload, 30s,
                                  [&, payload](std::error_code ec, std::optional<Message> r) {
                                    if (!ec && r && r->text() == payload) ++ok;
                                  });
  }
  io.run_for(kLong);
  EXPECT_EQ(ok, kClients);
  Client(at(d)).send("async.many", "stop");
}

}  // namespace
}  // namespace qbus
