// The TCP transport: token authentication and exchange with Unix-socket peers.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <qbus/client.hpp>

#include <gtest/gtest.h>
#include <algorithm>
#include <fstream>
#include <optional>
#include <system_error>
#include <utility>
#include <vector>

#include "daemon.hpp"
#include "qbus/proto/address.hpp"
#include "qbus/proto/buffer.hpp"

namespace qbus::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr char kToken[] = "s3cret-token-for-tests";

std::string write_token(const TempDir& dir, const std::string& content, mode_t mode = 0600) {
  const auto path = dir.file("token");
  std::ofstream(path) << content;
  ::chmod(path.c_str(), mode);
  return path;
}

class TcpTest : public ::testing::Test {
 protected:
  TcpTest() : daemon_(options()) {}

  DaemonOptions options() {
    const auto token = write_token(secrets_, std::string(kToken) + "\n");
    return DaemonOptions{.config_json = R"({"tcp": {"listen": "127.0.0.1:0", "token_file": ")" +
                                        token + R"("}})"};
  }
  Client tcp_client(const std::string& token = kToken) {
    ClientOptions o{daemon_.tcp_address(), "tcp-test", seconds(30)};
    o.token = token;
    return Client(o);
  }
  Client unix_client() {
    return Client(ClientOptions{daemon_.address(), "unix-test", seconds(30)});
  }

  TempDir secrets_;
  Daemon daemon_;
};

TEST_F(TcpTest, ListenerAddressIsLogged) {
  ASSERT_TRUE(daemon_.tcp_address().starts_with("tcp:127.0.0.1:")) << daemon_.log();
}

TEST_F(TcpTest, RightTokenExchangesQueueMessagesWithUnixClientsBothWays) {
  auto tcp = tcp_client();
  auto local = unix_client();
  EXPECT_EQ(tcp.session().pid, 0u);
  tcp.send("bridge", "from tcp");
  auto m = local.receive("bridge", seconds(30));
  ASSERT_TRUE(m);
  EXPECT_EQ(m->text(), "from tcp");
  EXPECT_EQ(m->sender().pid, 0u);
  EXPECT_EQ(m->sender().uid, 4294967294u);
  EXPECT_EQ(m->sender().client_id, tcp.session().client_id);

  local.send("bridge", "from unix");
  m = tcp.receive("bridge", seconds(30));
  ASSERT_TRUE(m);
  EXPECT_EQ(m->text(), "from unix");
  EXPECT_EQ(m->sender().pid, static_cast<std::uint32_t>(::getpid()));
}

TEST_F(TcpTest, DirectMessagesCrossTransportsBothWays) {
  auto tcp = tcp_client();
  auto local = unix_client();
  local.send_to_client(tcp.session().client_id, "unix to tcp");
  auto m = tcp.receive_direct(seconds(30));
  ASSERT_TRUE(m);
  EXPECT_EQ(m->text(), "unix to tcp");
  tcp.send_to_pid(static_cast<std::uint32_t>(::getpid()), "tcp to unix");
  m = local.receive_direct(seconds(30));
  ASSERT_TRUE(m);
  EXPECT_EQ(m->text(), "tcp to unix");
  EXPECT_EQ(m->sender().client_id, tcp.session().client_id);
}

TEST_F(TcpTest, RequestFromTcpIsAnsweredByAUnixResponder) {
  auto tcp = tcp_client();
  auto local = unix_client();
  std::optional<Message> reply;
  std::thread requester([&] { reply = tcp.request("rpc", "ping", seconds(30)); });
  auto req = local.receive("rpc", seconds(30));
  ASSERT_TRUE(req);
  local.reply(*req, "pong");
  requester.join();
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->text(), "pong");
}

TEST_F(TcpTest, WrongTokenIsRefusedAndLoggedWithTheRemoteAddress) {
  try {
    tcp_client("not the token");
    FAIL() << "expected auth_failed";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::auth_failed) << e.what();
  }
  EXPECT_TRUE(daemon_.wait_for_log("auth_failed: wrong token"));
  EXPECT_NE(daemon_.log().find("(tcp 127.0.0.1:"), std::string::npos);
  // The listener goes on serving the right token.
  tcp_client().send_confirmed("after", "ok");
}

TEST_F(TcpTest, HelloWithoutTokenIsRefused) {
  std::string why;
  auto addr = proto::parse_address(daemon_.tcp_address(), why);
  ASSERT_TRUE(addr);
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(addr->port);
  ::inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)), 0);
  proto::ByteBuffer b;
  proto::append_hello(b, 1, proto::Hello{1, 1, "raw", ""});
  ASSERT_EQ(::send(fd, b.readable().data(), b.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(b.size()));
  proto::ByteBuffer in;
  pollfd p{fd, POLLIN, 0};
  while (::poll(&p, 1, 30'000) == 1) {
    auto dst = in.prepare(4096);
    const ssize_t n = ::recv(fd, dst.data(), dst.size(), 0);
    if (n <= 0) break;  // closed by the broker after its ERROR
    in.commit(static_cast<std::size_t>(n));
  }
  ::close(fd);
  auto hr = proto::decode_header(in.readable(), proto::kMaxBodyCeiling);
  ASSERT_EQ(hr.status, proto::HeaderStatus::complete);
  ASSERT_EQ(hr.header.type, proto::FrameType::error);
  proto::ErrorBody e;
  ASSERT_EQ(proto::decode_error(in.readable().subspan(proto::kHeaderSize, hr.header.body_size), e),
            Errc::ok);
  EXPECT_EQ(e.code, static_cast<std::uint16_t>(Errc::auth_failed));
  EXPECT_TRUE(daemon_.wait_for_log("no token presented"));
}

TEST_F(TcpTest, RepeatedFailuresFromOneAddressAreSlowedDown) {
  const auto fail_once = [&] {
    const auto start = std::chrono::steady_clock::now();
    EXPECT_THROW(tcp_client("guess"), Error);
    return std::chrono::steady_clock::now() - start;
  };
  for (int i = 0; i < 3; ++i)
    fail_once();
  // From the fourth failure on, the refusal is held back (250 ms, then doubling).
  EXPECT_GE(fail_once(), milliseconds(240));
  EXPECT_GE(fail_once(), milliseconds(490));
  tcp_client().send_confirmed("still", "served");
}

std::uint16_t tcp_port(const Daemon& d) {
  std::string why;
  auto addr = proto::parse_address(d.tcp_address(), why);
  if (!addr) throw std::runtime_error("no TCP address: " + why);
  return addr->port;
}

// A bare TCP connection to the daemon, for what libqbus does not do: stay idle before
// HELLO, guess concurrently, come from another source address (Linux routes all of
// 127.0.0.0/8 to the loopback interface, so each address there is a source of its own).
class RawTcp {
 public:
  struct Reply {
    proto::FrameType type{};
    std::uint16_t code = 0;  // of an ERROR
    std::string text;
  };

  RawTcp(std::uint16_t port, const std::string& source = "127.0.0.1")
      : fd_(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    if (fd_ < 0) throw std::system_error(errno, std::system_category(), "socket");
    sockaddr_in from{};
    from.sin_family = AF_INET;
    ::inet_pton(AF_INET, source.c_str(), &from.sin_addr);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&from), sizeof(from)) != 0) {
      throw std::system_error(errno, std::system_category(), "bind to " + source);
    }
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(port);
    ::inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&to), sizeof(to)) != 0) {
      throw std::system_error(errno, std::system_category(), "connect from " + source);
    }
  }
  RawTcp(RawTcp&& o) noexcept : fd_(std::exchange(o.fd_, -1)), in_(std::move(o.in_)) {}
  RawTcp& operator=(RawTcp&& o) noexcept {
    if (this != &o) {
      if (fd_ >= 0) ::close(fd_);
      fd_ = std::exchange(o.fd_, -1);
      in_ = std::move(o.in_);
    }
    return *this;
  }
  ~RawTcp() {
    if (fd_ >= 0) ::close(fd_);
  }

  void hello(const std::string& token) {
    proto::ByteBuffer b;
    proto::append_hello(b, 1, proto::Hello{1, 1, "raw", token});
    if (::send(fd_, b.readable().data(), b.size(), MSG_NOSIGNAL) !=
        static_cast<ssize_t>(b.size())) {
      throw std::system_error(errno, std::system_category(), "send HELLO");
    }
  }
  int fd() const { return fd_; }
  // Whether the daemon has sent anything (or closed) by now.
  bool answered() const {
    pollfd p{fd_, POLLIN, 0};
    return ::poll(&p, 1, 0) == 1;
  }
  // The first frame the daemon sends, waiting at most `timeout`; nullopt when none came
  // (the connection closed or the time ran out).
  std::optional<Reply> reply(std::chrono::milliseconds timeout = seconds(30)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      auto hr = proto::decode_header(in_.readable(), proto::kMaxBodyCeiling);
      if (hr.status == proto::HeaderStatus::complete &&
          in_.size() >= proto::kHeaderSize + hr.header.body_size) {
        Reply r{hr.header.type, 0, {}};
        if (r.type == proto::FrameType::error) {
          proto::ErrorBody e;
          if (proto::decode_error(in_.readable().subspan(proto::kHeaderSize, hr.header.body_size),
                                  e) == Errc::ok) {
            r.code = e.code;
            r.text = std::string(e.text);
          }
        }
        return r;
      }
      const auto left =
          std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
      pollfd p{fd_, POLLIN, 0};
      if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) != 1) {
        return std::nullopt;
      }
      auto dst = in_.prepare(4096);
      const ssize_t n = ::recv(fd_, dst.data(), dst.size(), 0);
      if (n <= 0) return std::nullopt;
      in_.commit(static_cast<std::size_t>(n));
    }
  }

 private:
  int fd_;
  proto::ByteBuffer in_;
};

void expect_refused(RawTcp& c, Errc code) {
  const auto r = c.reply();
  ASSERT_TRUE(r) << "no answer";
  EXPECT_EQ(r->type, proto::FrameType::error);
  EXPECT_EQ(r->code, static_cast<std::uint16_t>(code)) << r->text;
}

// Fails `count` logins from 127.0.0.1 one after another, each refusal awaited.
void fail_logins(std::uint16_t port, int count) {
  for (int i = 0; i < count; ++i) {
    RawTcp guess(port);
    guess.hello("guess");
    expect_refused(guess, Errc::auth_failed);
  }
}

TEST_F(TcpTest, RightTokenIsWelcomedAtOnceFromAnAddressThatFailedOften) {
  const auto port = tcp_port(daemon_);
  // 3 refusals at once, then 250 ms and 500 ms.
  fail_logins(port, 5);
  // Seven more guesses at once (the address's eighth unauthenticated slot stays free for
  // the right token): 12 in all. Their refusals wait 1 s, 2 s, 4 s, 8 s, then 10 s.
  std::vector<RawTcp> guesses;
  for (int i = 0; i < 7; ++i)
    guesses.emplace_back(port).hello("guess");
  auto c = tcp_client();
  // Welcomed while refusals of guesses sent before it are still pending: the right token
  // did not wait for the address's delay.
  const auto pending =
      std::count_if(guesses.begin(), guesses.end(), [](const RawTcp& g) { return !g.answered(); });
  EXPECT_GE(pending, 1);
  c.send_confirmed("welcomed", "at once");
  EXPECT_EQ(c.receive("welcomed", seconds(30))->text(), "at once");
}

TEST_F(TcpTest, WrongTokenAfterManyFailuresIsStillRefusedLateEvenAfterARightOne) {
  const auto port = tcp_port(daemon_);
  // 3 refusals at once, then 250 ms, 500 ms and 1 s.
  fail_logins(port, 6);
  // A right token from the same address gets in, and gives guessers there no fresh free
  // attempts.
  tcp_client().send_confirmed("in", "between");
  // Started before the guess is even sent, so the daemon's delay (2 s after 6 failures)
  // cannot be shorter than what this measures.
  const auto start = std::chrono::steady_clock::now();
  RawTcp guess(port);
  guess.hello("guess");
  expect_refused(guess, Errc::auth_failed);
  EXPECT_GE(std::chrono::steady_clock::now() - start, milliseconds(1500));
}

TEST_F(TcpTest, TokenComesFromTheEnvironmentForQbusctl) {
  auto r = run({qbusctl_path(), "--address", daemon_.tcp_address(), "send", "env", "via tcp"}, {},
               {std::string("QBUS_TOKEN=") + kToken});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  const auto file = write_token(secrets_, kToken);
  r = run({qbusctl_path(), "--address", daemon_.tcp_address(), "recv", "env", "--timeout", "30000"},
          {}, {"QBUS_TOKEN_FILE=" + file});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "via tcp\n");
  r = run({qbusctl_path(), "--address", daemon_.tcp_address(), "send", "env", "x"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("QBUS_TOKEN"), std::string::npos) << r.err;
}

TEST_F(TcpTest, WaitingRefusalsBoundTheGuessesOneSourceHasInFlight) {
  const auto port = tcp_port(daemon_);
  fail_logins(port, 5);
  // Eight guesses fill the address's unauthenticated slots; their refusals wait 1 s, 2 s,
  // 4 s, 8 s, then 10 s.
  std::vector<RawTcp> guesses;
  for (int i = 0; i < 8; ++i)
    guesses.emplace_back(port).hello("guess");
  // The three quickest refusals free their slots, which three more guesses take (10 s
  // each): every slot is then held for seconds to come.
  std::vector<bool> refused(guesses.size(), false);
  for (int n = 0; n < 3;) {
    std::vector<pollfd> polls;
    for (const auto& g : guesses)
      polls.push_back(pollfd{g.fd(), POLLIN, 0});
    ASSERT_GT(::poll(polls.data(), polls.size(), 30'000), 0) << "no refusal came";
    for (std::size_t i = 0; i < polls.size(); ++i) {
      if (polls[i].revents == 0 || refused[i]) continue;
      expect_refused(guesses[i], Errc::auth_failed);
      refused[i] = true;
      ++n;
    }
  }
  for (std::size_t i = 0; i < guesses.size(); ++i) {
    if (refused[i]) guesses[i] = RawTcp(port);
  }
  for (std::size_t i = 0; i < guesses.size(); ++i) {
    if (refused[i]) guesses[i].hello("guess");
  }
  // A ninth connection from the address gets no slot while the refusals wait.
  RawTcp ninth(port);
  expect_refused(ninth, Errc::too_many_connections);
  // Another source is not affected.
  RawTcp other(port, "127.0.0.2");
  other.hello(kToken);
  const auto r = other.reply();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->type, proto::FrameType::welcome) << r->text;
}

TEST(TcpPreauth, AFullTableMakesRoomByClosingTheOldestConnectionOfTheBusiestSource) {
  TempDir dir;
  const auto token = write_token(dir, kToken);
  // The idle connections must not time out while the test runs, however slow the machine.
  Daemon d(DaemonOptions{.config_json = R"({"tcp": {"listen": "127.0.0.1:0", "token_file": ")" +
                                        token +
                                        R"("}, "limits": {"handshake_timeout_ms": 600000}})"});
  const auto port = tcp_port(d);
  // 32 sources with 8 idle connections each fill the 256 unauthenticated slots.
  std::vector<RawTcp> idle;
  for (int host = 2; host <= 33; ++host) {
    for (int i = 0; i < 8; ++i)
      idle.emplace_back(port, "127.0.0." + std::to_string(host));
  }
  // The kernel hands connections to accept() in the order they were made, so the daemon
  // holds all 256 before it sees this one.
  ClientOptions o{d.tcp_address(), "newcomer", seconds(30)};
  o.token = kToken;
  Client c(o);
  c.send_confirmed("room", "made");
  auto m = c.receive("room", seconds(30));
  ASSERT_TRUE(m);
  EXPECT_EQ(m->text(), "made");
  // Every source held 8: the oldest connection of them all was closed, and told why.
  const auto r = idle.front().reply();
  ASSERT_TRUE(r) << "the oldest idle connection got no ERROR";
  EXPECT_EQ(r->type, proto::FrameType::error);
  EXPECT_EQ(r->code, static_cast<std::uint16_t>(Errc::too_many_connections));
  EXPECT_NE(r->text.find("make room"), std::string::npos) << r->text;
  for (std::size_t i = 1; i < idle.size(); ++i)
    EXPECT_FALSE(idle[i].answered()) << "idle connection " << i;
  EXPECT_TRUE(d.wait_for_log("to make room for client"));
}

TEST(TcpStartup, TokenFileProblemsStopTheDaemonWithOneLine) {
  TempDir dir;
  const auto start = [&](const std::string& token_file) {
    std::ofstream(dir.file("c.json"))
        << R"({"tcp": {"listen": "127.0.0.1:0", "token_file": ")" + token_file + R"("}})";
    return run({qbusd_path(), "--config", dir.file("c.json"), "--socket", dir.file("s")});
  };
  auto r = start(dir.file("missing"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("is missing"), std::string::npos) << r.err;

  const auto readable = write_token(dir, kToken, 0644);
  r = start(readable);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("chmod 600"), std::string::npos) << r.err;

  const auto empty = write_token(dir, "\n", 0600);
  r = start(empty);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("is empty"), std::string::npos) << r.err;

  r = run({qbusd_path(), "--tcp", "127.0.0.1:0", "--socket", dir.file("s")});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("tcp.token_file"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1);
}

bool ipv6_loopback_available() {
  const int fd = ::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in6 sa{};
  sa.sin6_family = AF_INET6;
  sa.sin6_addr = in6addr_loopback;
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0;
  ::close(fd);
  return ok;
}

TEST(TcpStartup, Ipv6LoopbackWorksAndFailuresAreCountedPerSlash64) {
  if (!ipv6_loopback_available()) GTEST_SKIP() << "no IPv6 loopback on this machine";
  TempDir dir;
  const auto token = write_token(dir, kToken);
  Daemon d(DaemonOptions{.config_json = R"({"tcp": {"listen": "[::1]:0", "token_file": ")" + token +
                                        R"("}})"});
  ASSERT_TRUE(d.tcp_address().starts_with("tcp:[::1]:")) << d.log();
  ClientOptions o{d.tcp_address(), "v6", seconds(30)};
  o.token = kToken;
  Client c(o);
  c.send_confirmed("v6", "over ipv6");
  EXPECT_EQ(c.receive("v6", seconds(30))->text(), "over ipv6");
  o.token = "wrong";
  EXPECT_THROW(Client{o}, Error);
  EXPECT_TRUE(d.wait_for_log("(tcp ::1:"));
  EXPECT_TRUE(d.wait_for_log("1 failures from this address"));
}

TEST(TcpStartup, ListeningBeyondLoopbackWarns) {
  TempDir dir;
  const auto token = write_token(dir, kToken);
  Daemon d(DaemonOptions{.config_json = R"({"tcp": {"listen": "0.0.0.0:0", "token_file": ")" +
                                        token + R"(", "allow_plaintext": true}})"});
  EXPECT_NE(d.log().find("reachable from other hosts"), std::string::npos) << d.log();
}

}  // namespace
}  // namespace qbus::testing
