// What qbusd does when a client process exits while a connection it made lives on (inherited
// by its parent) or while the daemon is not reading it (a producer paused by backpressure).
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
#include <fstream>
#include <optional>

#include "daemon.hpp"
#include "eventually.hpp"
#include "process.hpp"
#include "qbus/proto/buffer.hpp"

namespace qbus::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

// Frames on a raw socket the test made itself, so that the process that connects it (and
// says HELLO) can differ from the one that keeps it.
class RawSocket {
 public:
  RawSocket() : fd_(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    if (fd_ < 0) throw std::runtime_error("socket failed");
  }
  ~RawSocket() { ::close(fd_); }
  RawSocket(const RawSocket&) = delete;
  RawSocket& operator=(const RawSocket&) = delete;

  void connect(const std::string& path) {
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::strncpy(sa.sun_path, path.c_str(), sizeof(sa.sun_path) - 1);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
      throw std::runtime_error("connect failed");
    }
  }
  void write(const proto::ByteBuffer& b) {
    auto bytes = b.readable();
    std::size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = ::send(fd_, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
      if (n <= 0) throw std::runtime_error("write failed");
      done += static_cast<std::size_t>(n);
    }
  }
  void shutdown_writing() {
    if (::shutdown(fd_, SHUT_WR) != 0) throw std::runtime_error("shutdown failed");
  }
  bool wait_readable() {
    pollfd pf{fd_, POLLIN, 0};
    return ::poll(&pf, 1, 30'000) == 1;
  }
  // Reads exactly one frame's header and body; nullopt on EOF.
  std::optional<proto::Header> next(std::vector<std::byte>& body) {
    std::byte head[proto::kHeaderSize];
    if (!read_exactly(head, sizeof(head))) return std::nullopt;
    auto hr = proto::decode_header(std::span<const std::byte>(head, sizeof(head)),
                                   proto::kMaxBodyCeiling);
    if (hr.status != proto::HeaderStatus::complete) throw std::runtime_error("bad header");
    body.resize(hr.header.body_size);
    if (!read_exactly(body.data(), body.size())) return std::nullopt;
    return hr.header;
  }

 private:
  bool read_exactly(std::byte* p, std::size_t n) {
    while (n > 0) {
      pollfd pf{fd_, POLLIN, 0};
      if (::poll(&pf, 1, 30'000) != 1) throw std::runtime_error("no frame within 30 s");
      const ssize_t got = ::recv(fd_, p, n, 0);
      if (got <= 0) return false;
      p += got;
      n -= static_cast<std::size_t>(got);
    }
    return true;
  }

  int fd_;
};

class LivenessTest : public ::testing::Test {
 protected:
  explicit LivenessTest(DaemonOptions o = {}) : daemon_(std::move(o)) {}
  Client connect(const std::string& name = "liveness-test") {
    return Client(ClientOptions{daemon_.address(), name, seconds(30)});
  }
  Errc send_to_pid_error(Client& c, pid_t pid, std::string_view text,
                         milliseconds wait = milliseconds(0)) {
    try {
      c.send_to_pid(static_cast<std::uint32_t>(pid), text, DirectOptions{wait, true});
    } catch (const Error& e) {
      return e.code();
    }
    return Errc::ok;
  }
  Daemon daemon_;
};

// What the connection a dead child left to this process holds in its inbox: asks with
// RECEIVE_DIRECT, timeout 0, and returns the payload delivered, or nullopt when the broker
// answers timeout (the inbox is empty).
std::optional<std::string> take_direct(RawSocket& s, std::uint64_t correlation) {
  proto::ByteBuffer b;
  proto::append_receive_direct(b, correlation, proto::ReceiveDirect{0, 1});
  s.write(b);
  std::vector<std::byte> body;
  auto h = s.next(body);
  if (!h) throw std::runtime_error("the broker closed the inherited connection");
  if (h->correlation != correlation) throw std::runtime_error("answer to another request");
  if (h->type == proto::FrameType::error) {
    proto::ErrorBody e;
    if (proto::decode_error(body, e) != Errc::ok || static_cast<Errc>(e.code) != Errc::timeout) {
      throw std::runtime_error("RECEIVE_DIRECT failed other than by timing out");
    }
    return std::nullopt;
  }
  if (h->type != proto::FrameType::deliver) throw std::runtime_error("unexpected frame");
  proto::Deliver d;
  if (proto::decode_deliver(body, d) != Errc::ok) throw std::runtime_error("bad DELIVER");
  return std::string(reinterpret_cast<const char*>(d.payload.data()), d.payload.size());
}

// The child connects and says HELLO (SO_PEERCRED names it), waits until the WELCOME is
// there, so that it was accepted while it lived, and exits; this process keeps the socket
// and reads the WELCOME.
pid_t hello_and_exit(RawSocket& s, const std::string& path) {
  return spawn([&] {
    s.connect(path);
    proto::ByteBuffer b;
    proto::append_hello(b, 1, proto::Hello{1, 1, "short-lived", ""});
    s.write(b);
    return s.wait_readable() ? 0 : 1;
  });
}

std::uint64_t read_welcome(RawSocket& s) {
  std::vector<std::byte> body;
  auto h = s.next(body);
  proto::Welcome w;
  if (!h || h->type != proto::FrameType::welcome || proto::decode_welcome(body, w) != Errc::ok) {
    throw std::runtime_error("no WELCOME");
  }
  return w.client_id;
}

// Connects, says HELLO, writes `requests` and shuts down its writing side, as a client that
// has nothing more to ask does; then reads the WELCOME.
void half_close_after(RawSocket& s, const std::string& path, const proto::ByteBuffer& requests) {
  s.connect(path);
  proto::ByteBuffer hello;
  proto::append_hello(hello, 1, proto::Hello{1, 1, "half-closer", ""});
  s.write(hello);
  s.write(requests);
  s.shutdown_writing();
  read_welcome(s);
}

std::string delivered_payload(const std::vector<std::byte>& body) {
  proto::Deliver d;
  if (proto::decode_deliver(body, d) != Errc::ok) throw std::runtime_error("bad DELIVER");
  return std::string(reinterpret_cast<const char*>(d.payload.data()), d.payload.size());
}

// Forks until a child gets `pid` (with ns_last_pid set just below it), which then runs
// `body`; nullopt when other processes took the pid first.
template <typename F>
std::optional<pid_t> spawn_with_pid(pid_t pid, F&& body) {
  for (int attempt = 0; attempt < 5; ++attempt) {
    {
      std::ofstream last("/proc/sys/kernel/ns_last_pid");
      last << pid - 1;
      if (!last.flush()) return std::nullopt;
    }
    const pid_t child = spawn([&] { return ::getpid() == pid ? body() : 77; });
    if (child == pid) return child;
    wait_exit(child);
  }
  return std::nullopt;
}

// A peer that shuts down its writing side after its last request, as `nc -N` and many
// scripts do, still reads every answer. Here one RECEIVE takes 32 messages of 32 KiB, far
// more than the socket holds, so most of them wait in qbusd when the end of the stream
// comes; they are no longer in the queue, so closing then would lose them.
TEST_F(LivenessTest, APeerThatShutsDownItsWritingSideStillGetsEveryAnswer) {
  constexpr std::uint32_t kMessages = 32;
  const std::string payload(32 * 1024, 'x');
  auto producer = connect("producer");
  for (std::uint32_t i = 0; i < kMessages; ++i)
    producer.send("half", std::to_string(i) + payload);
  producer.sync();

  proto::ByteBuffer b;
  proto::append_receive(b, 2, proto::Receive{0, kMessages, "half"});
  RawSocket s;
  half_close_after(s, daemon_.socket_path(), b);
  std::vector<std::byte> body;
  for (std::uint32_t i = 0; i < kMessages; ++i) {
    auto h = s.next(body);
    ASSERT_TRUE(h) << "qbusd closed after " << i << " of " << kMessages << " messages";
    ASSERT_EQ(h->type, proto::FrameType::deliver) << i;
    EXPECT_EQ(h->correlation, 2u);
    EXPECT_EQ((h->flags & proto::kFlagLast) != 0, i + 1 == kMessages) << i;
    EXPECT_EQ(delivered_payload(body), std::to_string(i) + payload) << i;
  }
  EXPECT_FALSE(s.next(body)) << "qbusd closes once everything went out";
  EXPECT_FALSE(producer.try_receive("half"));
}

// A confirmed send to a durable queue is answered once the journal has it: a peer that
// shut down its writing side right after it still gets that OK before qbusd closes.
TEST_F(LivenessTest, AHalfClosedPeerGetsTheOkOfItsDurableSend) {
  {
    QueueOptions o;
    o.durable = true;
    o.fsync = QueueOptions::Fsync::always;
    connect("declarer").declare("durable.half", o);
  }
  proto::ByteBuffer b;
  proto::append_send(b, 2, proto::kFlagConfirm, "durable.half",
                     std::as_bytes(std::span("kept", 4)));
  RawSocket s;
  half_close_after(s, daemon_.socket_path(), b);
  std::vector<std::byte> body;
  auto h = s.next(body);
  ASSERT_TRUE(h) << "qbusd closed before the send's OK";
  EXPECT_EQ(h->type, proto::FrameType::ok);
  EXPECT_EQ(h->correlation, 2u);
  EXPECT_FALSE(s.next(body));
  auto m = connect("reader").receive("durable.half", seconds(30));
  ASSERT_TRUE(m);
  EXPECT_EQ(m->text(), "kept");
}

// Requests read before the EOF but held back because the peer's answers backed up (a small
// max_outbound_bytes) are still handled once it reads: 200 RECEIVEs of one 8 KiB message.
class HalfCloseBackedUpTest : public LivenessTest {
 protected:
  HalfCloseBackedUpTest()
      : LivenessTest(DaemonOptions{.config_json = R"({"limits": {"max_outbound_bytes": 4096}})"}) {}
};

TEST_F(HalfCloseBackedUpTest, RequestsHeldBackWhenTheEndCameAreAnsweredToo) {
  constexpr std::uint64_t kRequests = 200;
  const std::string payload(8192, 'y');
  auto producer = connect("producer");
  for (std::uint64_t i = 0; i < kRequests; ++i)
    producer.send("held", std::to_string(i) + payload);
  producer.sync();

  proto::ByteBuffer b;
  for (std::uint64_t i = 0; i < kRequests; ++i)
    proto::append_receive(b, 10 + i, proto::Receive{0, 1, "held"});
  RawSocket s;
  half_close_after(s, daemon_.socket_path(), b);
  std::vector<std::byte> body;
  for (std::uint64_t i = 0; i < kRequests; ++i) {
    auto h = s.next(body);
    ASSERT_TRUE(h) << "qbusd closed after answering " << i << " of " << kRequests;
    ASSERT_EQ(h->type, proto::FrameType::deliver) << i;
    EXPECT_EQ(h->correlation, 10 + i);
    EXPECT_EQ(delivered_payload(body), std::to_string(i) + payload) << i;
  }
  EXPECT_FALSE(s.next(body)) << "qbusd closes once everything went out";
  EXPECT_FALSE(producer.try_receive("held"));
}

TEST_F(LivenessTest, DirectSendToAnExitedPidDoesNotReachTheConnectionItLeftBehind) {
  RawSocket inherited;
  const pid_t child = hello_and_exit(inherited, daemon_.socket_path());
  ASSERT_EQ(wait_exit(child), 0);
  const std::uint64_t inherited_id = read_welcome(inherited);
  // The child's process is gone, its connection is not: nothing sent to its pid may be
  // taken by whoever holds that connection now.
  auto sender = connect("sender");
  EXPECT_EQ(send_to_pid_error(sender, child, "stale"), Errc::no_such_peer);
  // A send that may wait is held for a process with the pid, not handed to the old one.
  EXPECT_EQ(send_to_pid_error(sender, child, "stale-waiting", milliseconds(200)),
            Errc::no_such_peer);
  EXPECT_EQ(take_direct(inherited, 7), std::nullopt);
  // The connection itself still works, and is reachable by its client id.
  sender.send_to_client(inherited_id, "by-client-id");
  EXPECT_EQ(take_direct(inherited, 8), "by-client-id");

  if (::geteuid() != 0) {
    GTEST_SKIP() << "reusing the child's pid needs root (ns_last_pid)";
  }
  // A new process with the same pid receives what is sent to the pid; the old
  // connection still receives nothing.
  Gate ready;
  auto reuser = spawn_with_pid(child, [&] {
    auto c = connect("reuser");
    ready.open();
    auto m = c.receive_direct(seconds(30));
    return m && m->text() == "for-the-new-process" ? 0 : 1;
  });
  if (!reuser) GTEST_SKIP() << "another process took pid " << child << " first";
  ready.wait();
  EXPECT_EQ(send_to_pid_error(sender, child, "for-the-new-process"), Errc::ok);
  EXPECT_EQ(wait_exit(*reuser), 0);
  EXPECT_EQ(take_direct(inherited, 9), std::nullopt);
}

class BlockedProducerTest : public LivenessTest {
 protected:
  std::string ctl_json(const std::string& what) {
    auto r = run({qbusctl_path(), "--address", daemon_.address(), "--json", what});
    if (r.exit_code != 0) throw std::runtime_error("qbusctl " + what + ": " + r.err);
    return r.out;
  }
  static bool lists_pid(const std::string& json, pid_t pid) {
    const std::string p = std::to_string(pid);
    return json.find("\"pid\":" + p + ",") != std::string::npos ||
           json.find("\"pid\": " + p + ",") != std::string::npos;
  }
};

TEST_F(BlockedProducerTest, ProducerKilledWhileBlockedIsForgotten) {
  auto c = connect("observer");
  c.declare("tiny", QueueOptions{1, 4096, Overflow::block});
  const pid_t producer = spawn([&] {
    auto p = connect("producer");
    p.send_confirmed("tiny", "fills-it");
    p.send_confirmed("tiny", "blocks");  // never answered: the queue stays full
    return 0;
  });
  // The producer is blocked once the queue shows it.
  ASSERT_TRUE(eventually([&] {
    const auto q = ctl_json("queues");
    return q.find("\"blocked_producers\":1") != std::string::npos ||
           q.find("\"blocked_producers\": 1") != std::string::npos;
  })) << ctl_json("queues");
  ASSERT_TRUE(lists_pid(ctl_json("clients"), producer));
  ::kill(producer, SIGKILL);
  EXPECT_EQ(wait_exit(producer), 100 + SIGKILL);
  EXPECT_TRUE(eventually([&] { return !lists_pid(ctl_json("clients"), producer); }))
      << ctl_json("clients");
  EXPECT_EQ(send_to_pid_error(c, producer, "to-the-dead"), Errc::no_such_peer);
  // Its blocked send never went in; the queue still holds the first message.
  auto m = c.receive("tiny", milliseconds(0));
  ASSERT_TRUE(m);
  EXPECT_EQ(m->text(), "fills-it");
}

// Unblocking resumes reads and drops the hang-up watch; blocking again must watch anew,
// or a producer killed the second time it blocks is never noticed.
TEST_F(BlockedProducerTest, ProducerKilledWhenBlockedASecondTimeIsForgotten) {
  auto c = connect("observer");
  c.declare("tiny", QueueOptions{1, 4096, Overflow::block});
  Gate unblocked;
  const pid_t producer = spawn([&] {
    auto p = connect("producer");
    p.send_confirmed("tiny", "first");
    p.send_confirmed("tiny", "second");  // blocks until the observer takes "first"
    unblocked.open();
    p.send_confirmed("tiny", "third");  // blocks for good
    return 0;
  });
  const auto blocked = [&] {
    const auto q = ctl_json("queues");
    return q.find("\"blocked_producers\":1") != std::string::npos ||
           q.find("\"blocked_producers\": 1") != std::string::npos;
  };
  ASSERT_TRUE(eventually(blocked)) << ctl_json("queues");
  auto first = c.receive("tiny", milliseconds(0));
  ASSERT_TRUE(first);
  EXPECT_EQ(first->text(), "first");
  unblocked.wait();
  // "second" is confirmed, so a blocked producer now is the one sending "third".
  ASSERT_TRUE(eventually(blocked)) << ctl_json("queues");
  ::kill(producer, SIGKILL);
  EXPECT_EQ(wait_exit(producer), 100 + SIGKILL);
  EXPECT_TRUE(eventually([&] { return !lists_pid(ctl_json("clients"), producer); }))
      << ctl_json("clients");
  auto second = c.receive("tiny", milliseconds(0));
  ASSERT_TRUE(second);
  EXPECT_EQ(second->text(), "second");
  EXPECT_FALSE(c.receive("tiny", milliseconds(0)));
}

}  // namespace
}  // namespace qbus::testing
