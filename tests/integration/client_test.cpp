// libqbus against the real qbusd.
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <qbus/client.hpp>
#include <qbus/proto/buffer.hpp>
#include <qbus/proto/codec.hpp>

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <future>
#include <thread>

#include "daemon.hpp"

namespace qbus::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

// Sends "ready" and a receive in one write: the broker handles both in one batch, so once
// another client has taken "ready" the receive is certainly registered and waiting.
std::optional<Message> park_receive_after_ready(Client& c, const std::string& key,
                                                std::chrono::milliseconds timeout) {
  Client::Batch batch(c);
  c.send("ready", "1");
  return c.receive(key, timeout);  // writes the buffered send and this receive together
}

class ClientTest : public ::testing::Test {
 protected:
  Client connect() { return Client(ClientOptions{daemon_.address(), "client-test", seconds(30)}); }
  Daemon daemon_;
};

TEST_F(ClientTest, SentMessageIsReceivedWithTheSendersKernelIdentity) {
  auto producer = connect();
  auto consumer = connect();
  producer.send("jobs", "hello");
  auto m = consumer.receive("jobs", seconds(30));
  ASSERT_TRUE(m);
  EXPECT_EQ(m->text(), "hello");
  EXPECT_EQ(m->key(), "jobs");
  EXPECT_EQ(m->sender().pid, static_cast<std::uint32_t>(::getpid()));
  EXPECT_EQ(m->sender().uid, ::getuid());
  EXPECT_EQ(m->sender().client_id, producer.session().client_id);
  EXPECT_NE(producer.session().client_id, consumer.session().client_id);
}

TEST_F(ClientTest, HandshakeReportsOwnIdentityAndLimits) {
  auto c = connect();
  EXPECT_EQ(c.session().pid, static_cast<std::uint32_t>(::getpid()));
  EXPECT_EQ(c.session().uid, ::getuid());
  EXPECT_EQ(c.session().gid, ::getgid());
  EXPECT_EQ(c.session().max_payload, 1u << 20);
  EXPECT_EQ(c.session().address, daemon_.address());
}

TEST_F(ClientTest, MessagesOfOneQueueArriveInFifoOrder) {
  auto c = connect();
  {
    Client::Batch batch(c);
    for (int i = 0; i < 1000; ++i)
      c.send("fifo", std::to_string(i));
  }
  for (int i = 0; i < 1000; ++i) {
    auto m = c.receive("fifo", seconds(30));
    ASSERT_TRUE(m);
    ASSERT_EQ(m->text(), std::to_string(i));
  }
  EXPECT_FALSE(c.try_receive("fifo"));
}

TEST_F(ClientTest, ReceiveBatchTakesWhatIsQueuedInOrder) {
  auto c = connect();
  for (int i = 0; i < 10; ++i)
    c.send("batch", std::to_string(i));
  auto got = c.receive_batch("batch", 7, seconds(30));
  ASSERT_EQ(got.size(), 7u);
  for (int i = 0; i < 7; ++i)
    EXPECT_EQ(got[i].text(), std::to_string(i));
  got = c.receive_batch("batch", 100, seconds(30));
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[2].text(), "9");
  EXPECT_TRUE(c.receive_batch("batch", 5, milliseconds(0)).empty());
}

TEST_F(ClientTest, ReceiveEachSeesTheBatchInPlaceInOrder) {
  auto producer = connect();
  auto c = connect();
  {
    Client::Batch batch(producer);
    for (int i = 0; i < 10; ++i)
      producer.send("each", std::string(100, static_cast<char>('a' + i)));
  }
  producer.sync();
  std::vector<Message> kept;
  int seen = 0;
  const auto n = c.receive_each("each", 7, seconds(30), [&](const MessageView& v) {
    EXPECT_EQ(v.key(), "each");
    EXPECT_EQ(v.text(), std::string(100, static_cast<char>('a' + seen)));
    EXPECT_EQ(v.sender().client_id, producer.session().client_id);
    EXPECT_EQ(v.sender().pid, static_cast<std::uint32_t>(::getpid()));
    EXPECT_FALSE(v.is_request());
    EXPECT_FALSE(v.in_shared_memory());
    if (seen % 2 == 0) kept.push_back(v.to_message());
    ++seen;
  });
  EXPECT_EQ(n, 7u);
  EXPECT_EQ(seen, 7);
  // Messages made from views own their bytes after the buffer has moved on.
  EXPECT_EQ(c.receive_batch("each", 100, seconds(30)).size(), 3u);
  ASSERT_EQ(kept.size(), 4u);
  for (std::size_t i = 0; i < kept.size(); ++i) {
    EXPECT_EQ(kept[i].text(), std::string(100, static_cast<char>('a' + 2 * i)));
    EXPECT_EQ(kept[i].key(), "each");
  }
  // A timeout sees nothing and calls nothing.
  EXPECT_EQ(c.receive_each("each", 5, milliseconds(0), [](const MessageView&) { FAIL(); }), 0u);
}

TEST_F(ClientTest, ReceiveEachRethrowsAfterReadingTheWholeBatch) {
  auto c = connect();
  for (int i = 0; i < 5; ++i)
    c.send("throws", std::to_string(i));
  int calls = 0;
  try {
    c.receive_each("throws", 5, seconds(30), [&](const MessageView& v) {
      ++calls;
      if (v.text() == "1") throw std::runtime_error("handler failed");
    });
    FAIL() << "the handler's exception was swallowed";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "handler failed");
  }
  EXPECT_EQ(calls, 2);  // not called after it threw
  // The connection is in step: the batch was taken whole, the next receive works.
  c.send("throws", "after");
  auto m = c.receive("throws", seconds(30));
  ASSERT_TRUE(m);
  EXPECT_EQ(m->text(), "after");
}

TEST_F(ClientTest, ReceiveTimesOutWithNothing) {
  auto c = connect();
  EXPECT_FALSE(c.receive("empty", milliseconds(50)));
  EXPECT_FALSE(c.try_receive("empty"));
  // The connection stays usable after a timeout.
  c.send("empty", "late");
  auto m = c.receive("empty", seconds(30));
  ASSERT_TRUE(m);
  EXPECT_EQ(m->text(), "late");
}

TEST_F(ClientTest, WaitingReceiverGetsMessageSentLater) {
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    try {
      auto c = connect();
      auto m = park_receive_after_ready(c, "later", seconds(30));
      ::_exit(m && m->text() == "wake up" ? 0 : 1);
    } catch (...) {
      ::_exit(2);
    }
  }
  auto c = connect();
  ASSERT_TRUE(c.receive("ready", seconds(30)));
  c.send("later", "wake up");
  int status = 0;
  ::waitpid(child, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

TEST_F(ClientTest, EmptyAndBinaryPayloadsSurviveUnchanged) {
  auto c = connect();
  std::string binary;
  for (int i = 0; i < 256; ++i)
    binary.push_back(static_cast<char>(i));
  c.send("bin", "");
  c.send("bin", binary);
  auto a = c.receive("bin", seconds(30));
  auto b = c.receive("bin", seconds(30));
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->size(), 0u);
  EXPECT_EQ(b->text(), binary);
}

TEST_F(ClientTest, LargestInlinePayloadTravelsInlineAndOneByteMoreThroughARegion) {
  ClientOptions o{daemon_.address(), "client-test", seconds(30)};
  o.region_threshold = SIZE_MAX;  // only the broker's inline limit decides
  Client c(o);
  std::string big(c.session().max_payload, 'x');
  c.send_confirmed("big", big);
  auto m = c.receive("big", seconds(30));
  ASSERT_TRUE(m);
  EXPECT_EQ(m->size(), big.size());
  EXPECT_FALSE(m->in_shared_memory());
  big.push_back('y');
  c.send_confirmed("big", big);
  auto r = c.receive("big", seconds(30));
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->in_shared_memory());
  EXPECT_EQ(r->text(), big);
}

TEST_F(ClientTest, InvalidKeyIsRefusedWithAClearError) {
  auto c = connect();
  const auto refuse_bad_keys = [&c] {
    for (std::string key : {std::string(), std::string("has space"), std::string(256, 'k'),
                            std::string("good "), std::string("good\0", 5)}) {
      try {
        c.send(key, "x");
        FAIL() << "expected invalid_key for '" << key << "'";
      } catch (const Error& e) {
        EXPECT_EQ(e.code(), Errc::invalid_key);
        EXPECT_NE(std::string(e.what()).find("invalid queue key"), std::string::npos);
      }
    }
  };
  refuse_bad_keys();
  // libqbus remembers the last key that passed; keys near it must still be checked.
  c.send("good", "x");
  refuse_bad_keys();
  c.send("good", "y");
  c.send(std::string(255, 'k'), "longest key is fine");
  EXPECT_TRUE(c.receive(std::string(255, 'k'), seconds(30)));
  EXPECT_EQ(c.receive("good", seconds(30))->text(), "x");
  EXPECT_EQ(c.receive("good", seconds(30))->text(), "y");
}

TEST_F(ClientTest, RejectQueueRefusesConfirmedSendWhenFull) {
  auto c = connect();
  c.declare("small", QueueOptions{2, 0, Overflow::reject});
  c.send_confirmed("small", "1");
  c.send_confirmed("small", "2");
  try {
    c.send_confirmed("small", "3");
    FAIL() << "expected queue_full";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::queue_full);
  }
  EXPECT_EQ(c.receive("small", seconds(30))->text(), "1");
  EXPECT_EQ(c.receive("small", seconds(30))->text(), "2");
}

TEST_F(ClientTest, UnconfirmedSendFailuresAreReportedBySync) {
  auto c = connect();
  c.declare("tiny", QueueOptions{1, 0, Overflow::reject});
  c.send("tiny", "kept");
  c.send("tiny", "refused 1");
  c.send("tiny", "refused 2");
  c.sync();
  EXPECT_EQ(c.send_failures().count, 2u);
  EXPECT_EQ(c.send_failures().last_code, Errc::queue_full);
  EXPECT_EQ(c.receive("tiny", seconds(30))->text(), "kept");
}

TEST_F(ClientTest, DropOldestQueueKeepsTheNewest) {
  auto c = connect();
  c.declare("ring", QueueOptions{3, 0, Overflow::drop_oldest});
  for (int i = 0; i < 10; ++i)
    c.send("ring", std::to_string(i));
  auto got = c.receive_batch("ring", 10, seconds(30));
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0].text(), "7");
  EXPECT_EQ(got[2].text(), "9");
}

TEST_F(ClientTest, DeclareWithOtherOptionsConflicts) {
  auto c = connect();
  c.declare("conf", QueueOptions{10, 1000, Overflow::reject});
  c.declare("conf", QueueOptions{10, 1000, Overflow::reject});
  try {
    c.declare("conf", QueueOptions{20, 1000, Overflow::reject});
    FAIL() << "expected queue_conflict";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::queue_conflict);
    EXPECT_NE(std::string(e.what()).find("max_messages=10"), std::string::npos);
  }
}

TEST_F(ClientTest, BlockingQueuePushesBackOnTheProducerWithoutLoss) {
  auto setup = connect();
  setup.declare("narrow", QueueOptions{4, 0, Overflow::block});
  constexpr int kCount = 2000;
  const pid_t producer = ::fork();
  ASSERT_GE(producer, 0);
  if (producer == 0) {
    try {
      auto c = connect();
      for (int i = 0; i < kCount; ++i)
        c.send("narrow", std::to_string(i));
      c.sync();
      ::_exit(c.send_failures().count == 0 ? 0 : 1);
    } catch (...) {
      ::_exit(2);
    }
  }
  auto consumer = connect();
  for (int i = 0; i < kCount; ++i) {
    auto m = consumer.receive("narrow", seconds(30));
    ASSERT_TRUE(m) << "message " << i;
    ASSERT_EQ(m->text(), std::to_string(i));
  }
  int status = 0;
  ::waitpid(producer, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

TEST_F(ClientTest, ConnectingToNothingFailsClearly) {
  try {
    Client c(ClientOptions{"unix:" + daemon_.dir().file("nothing.sock"), "", seconds(5)});
    FAIL() << "expected connect_failed";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::connect_failed);
    EXPECT_NE(std::string(e.what()).find("nothing.sock"), std::string::npos);
  }
  try {
    Client c(ClientOptions{"carrier-pigeon:x", "", seconds(5)});
    FAIL() << "expected bad_address";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::bad_address);
  }
}

TEST_F(ClientTest, AddressComesFromTheEnvironmentWhenNotGiven) {
  ::setenv("QBUS_ADDRESS", daemon_.address().c_str(), 1);
  Client c;
  ::unsetenv("QBUS_ADDRESS");
  EXPECT_EQ(c.session().address, daemon_.address());
}

TEST_F(ClientTest, WaitingReceiverIsToldWhenTheDaemonShutsDown) {
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    try {
      auto c = connect();
      park_receive_after_ready(c, "never", kForever);
      ::_exit(1);
    } catch (const Error& e) {
      ::_exit(e.code() == Errc::shutting_down ? 0 : 2);
    }
  }
  auto c = connect();
  ASSERT_TRUE(c.receive("ready", seconds(30)));
  EXPECT_EQ(daemon_.stop(), 0);
  int status = 0;
  ::waitpid(child, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_FALSE(std::filesystem::exists(daemon_.socket_path()));
}

// The broker may refuse and close before our next write (qbusd does so for a connection
// over the uid limit, possibly before it has read HELLO): the write then fails with EPIPE,
// and the client must still report the reason the broker sent. A scripted broker makes the
// ordering certain: it welcomes, says why it is leaving, and closes before the client writes.
TEST(ClientClosedByBroker, AWriteAfterTheCloseReportsTheBrokersReason) {
  TempDir dir;
  const std::string path = dir.file("fake.sock");
  const int listener = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(listener, 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)), 0);
  ASSERT_EQ(::listen(listener, 1), 0);

  std::promise<void> closed;
  std::thread broker([&] {
    const int fd = ::accept(listener, nullptr, nullptr);
    proto::ByteBuffer in;
    proto::HeaderResult hr;
    do {  // the whole HELLO frame
      auto dst = in.prepare(4096);
      const ssize_t n = ::read(fd, dst.data(), dst.size());
      if (n <= 0) break;
      in.commit(static_cast<std::size_t>(n));
      hr = proto::decode_header(in.readable(), proto::kMaxBodyCeiling);
    } while (hr.status != proto::HeaderStatus::complete ||
             in.size() < proto::kHeaderSize + hr.header.body_size);
    proto::ByteBuffer out;
    proto::Welcome w;
    w.max_body = 1u << 20;
    w.max_payload = 1u << 16;
    proto::append_welcome(out, hr.header.correlation, w);
    proto::append_error(out, 0, Errc::too_many_connections, "scripted refusal");
    const auto bytes = out.readable();
    EXPECT_EQ(::write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
    ::close(fd);
    closed.set_value();
  });

  Client c(ClientOptions{"unix:" + path, "closed-test", seconds(30)});
  closed.get_future().wait();
  try {
    c.send("k", "v");
    FAIL() << "the send after the broker closed succeeded";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::too_many_connections) << e.what();
    EXPECT_NE(std::string(e.what()).find("scripted refusal"), std::string::npos) << e.what();
  }
  broker.join();
  ::close(listener);
}

}  // namespace
}  // namespace qbus::testing
