// TLS on the TCP listener (PROTOCOL.md section 10) against the real daemon, with
// certificates made at test time: good, from another CA, expired, missing, and plain qbus
// sent to the TLS port. Every refusal is logged and counted against the address, and the
// broker goes on serving. A client certificate mapped to a uid is judged by the policy as
// that uid. The peer here is OpenSSL used directly, so the server is tested on its own.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <qbus/client.hpp>

#include <chrono>
#include <fstream>
#include <optional>
#include <string>

#include "daemon.hpp"
#include "qbus/proto/address.hpp"
#include "qbus/proto/buffer.hpp"
#include "test_pki.hpp"

namespace qbus::testing {
namespace {

using std::chrono::seconds;

constexpr char kToken[] = "tls-test-token";

std::string write_token(const TempDir& dir) {
  const auto path = dir.file("token");
  std::ofstream(path) << kToken << "\n";
  ::chmod(path.c_str(), 0600);
  return path;
}

// What the broker answered a HELLO with: a WELCOME, an ERROR, or nothing (the connection
// ended, as a refused TLS session does).
struct Answer {
  proto::FrameType type = proto::FrameType::error;
  bool closed = false;
  std::uint16_t code = 0;
  std::string text;
  std::uint32_t uid = 0;
  std::string tls_error;  // why the TLS session failed, when it did
};

// One blocking connection to the broker, TLS or plain, speaking raw frames.
class RawPeer {
 public:
  RawPeer(const std::string& address, bool tls, const std::string& ca, const std::string& cert = {},
          const std::string& key = {}) {
    std::string why;
    auto addr = proto::parse_address(address, why);
    if (!addr) throw std::runtime_error(why);
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    timeval tv{30, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(addr->port);
    ::inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
      throw std::runtime_error("connect failed");
    }
    if (!tls) return;
    ctx_ = SSL_CTX_new(TLS_client_method());
    SSL_CTX_load_verify_locations(ctx_, ca.c_str(), nullptr);
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
    if (!cert.empty()) {
      SSL_CTX_use_certificate_file(ctx_, cert.c_str(), SSL_FILETYPE_PEM);
      SSL_CTX_use_PrivateKey_file(ctx_, key.c_str(), SSL_FILETYPE_PEM);
    }
    ssl_ = SSL_new(ctx_);
    SSL_set_fd(ssl_, fd_);
    SSL_set1_host(ssl_, "127.0.0.1");
    if (SSL_connect(ssl_) != 1) tls_error_ = last_error();
  }
  ~RawPeer() {
    if (ssl_) SSL_free(ssl_);
    if (ctx_) SSL_CTX_free(ctx_);
    ::close(fd_);
  }

  const std::string& tls_error() const { return tls_error_; }
  // Ends the TLS session and the connection at once.
  void shutdown() {
    if (ssl_) SSL_shutdown(ssl_);
    ::shutdown(fd_, SHUT_WR);
  }

  bool send(const proto::ByteBuffer& b) {
    const auto bytes = b.readable();
    if (ssl_) return SSL_write(ssl_, bytes.data(), static_cast<int>(bytes.size())) > 0;
    return ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(b.size());
  }

  // Reads one frame; nullopt when the connection ends (or TLS fails) first.
  std::optional<std::pair<proto::Header, std::vector<std::byte>>> read_frame() {
    while (true) {
      auto hr = proto::decode_header(in_.readable(), proto::kMaxBodyCeiling);
      if (hr.status == proto::HeaderStatus::complete &&
          in_.size() >= proto::kHeaderSize + hr.header.body_size) {
        auto body = in_.readable().subspan(proto::kHeaderSize, hr.header.body_size);
        std::vector<std::byte> copy(body.begin(), body.end());
        in_.consume(proto::kHeaderSize + hr.header.body_size);
        return std::make_pair(hr.header, std::move(copy));
      }
      if (hr.status == proto::HeaderStatus::bad) return std::nullopt;
      auto dst = in_.prepare(4096);
      const int n = ssl_ ? SSL_read(ssl_, dst.data(), static_cast<int>(dst.size()))
                         : static_cast<int>(::recv(fd_, dst.data(), dst.size(), 0));
      if (n <= 0) {
        if (ssl_ && tls_error_.empty()) tls_error_ = last_error();
        return std::nullopt;
      }
      in_.commit(static_cast<std::size_t>(n));
    }
  }

  Answer hello(const std::string& token) {
    Answer a;
    proto::ByteBuffer b;
    proto::append_hello(b, 1, proto::Hello{1, 1, "raw-tls", token});
    if (tls_error_.empty()) (void)send(b);
    auto f = tls_error_.empty() ? read_frame() : std::nullopt;
    a.tls_error = tls_error_;
    if (!f) {
      a.closed = true;
      return a;
    }
    a.type = f->first.type;
    if (a.type == proto::FrameType::welcome) {
      proto::Welcome w;
      if (proto::decode_welcome(f->second, w) == Errc::ok) a.uid = w.uid;
    } else if (a.type == proto::FrameType::error) {
      proto::ErrorBody e;
      if (proto::decode_error(f->second, e) == Errc::ok) {
        a.code = e.code;
        a.text = std::string(e.text);
      }
    }
    return a;
  }

  // SEND with CONFIRM; the broker's answer (OK or ERROR).
  Answer send_confirmed(const std::string& key, const std::string& text) {
    proto::ByteBuffer b;
    proto::append_send(b, 7, proto::kFlagConfirm, key,
                       std::as_bytes(std::span<const char>(text.data(), text.size())));
    Answer a;
    if (!send(b)) {
      a.closed = true;
      return a;
    }
    auto f = read_frame();
    if (!f) {
      a.closed = true;
      return a;
    }
    a.type = f->first.type;
    if (a.type == proto::FrameType::error) {
      proto::ErrorBody e;
      if (proto::decode_error(f->second, e) == Errc::ok) {
        a.code = e.code;
        a.text = std::string(e.text);
      }
    }
    return a;
  }

 private:
  static std::string last_error() {
    const unsigned long e = ERR_get_error();
    if (e == 0) return "connection closed";
    char text[256];
    ERR_error_string_n(e, text, sizeof(text));
    ERR_clear_error();
    return text;
  }

  int fd_ = -1;
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  std::string tls_error_;
  proto::ByteBuffer in_;
};

// A TLS client whose HELLO leaves in the same send() as its last handshake bytes (memory
// BIOs hold both until then), as a fast client's can: the broker must read that HELLO
// although the socket never turns readable for it again. Returns the answer's frame type,
// or nullopt when none came.
std::optional<proto::FrameType> hello_with_last_flight(const std::string& address,
                                                       const std::string& ca) {
  std::string why;
  auto addr = proto::parse_address(address, why);
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  timeval tv{30, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(addr->port);
  ::inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) return std::nullopt;
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_load_verify_locations(ctx, ca.c_str(), nullptr);
  SSL* ssl = SSL_new(ctx);
  BIO* in = BIO_new(BIO_s_mem());
  BIO* out = BIO_new(BIO_s_mem());
  SSL_set_bio(ssl, in, out);
  const auto send_out = [&] {
    char buf[16384];
    int n = 0;
    while ((n = BIO_read(out, buf, sizeof(buf))) > 0)
      (void)::send(fd, buf, static_cast<std::size_t>(n), MSG_NOSIGNAL);
  };
  const auto receive_in = [&] {
    char buf[16384];
    const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n > 0) BIO_write(in, buf, static_cast<int>(n));
    return n > 0;
  };
  std::optional<proto::FrameType> answer;
  int rc = 0;
  while ((rc = SSL_connect(ssl)) != 1) {
    if (SSL_get_error(ssl, rc) != SSL_ERROR_WANT_READ) break;
    send_out();
    if (!receive_in()) break;
  }
  proto::ByteBuffer hello;
  proto::append_hello(hello, 1, proto::Hello{1, 1, "coalesced", kToken});
  if (rc == 1 && SSL_write(ssl, hello.readable().data(), static_cast<int>(hello.size())) > 0) {
    send_out();  // the client's Finished and the HELLO, together
    proto::ByteBuffer got;
    while (!answer) {
      auto dst = got.prepare(4096);
      const int n = SSL_read(ssl, dst.data(), static_cast<int>(dst.size()));
      if (n > 0) {
        got.commit(static_cast<std::size_t>(n));
        auto hr = proto::decode_header(got.readable(), proto::kMaxBodyCeiling);
        if (hr.status == proto::HeaderStatus::complete) answer = hr.header.type;
      } else if (SSL_get_error(ssl, n) != SSL_ERROR_WANT_READ || !receive_in()) {
        break;
      }
    }
  }
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  ::close(fd);
  return answer;
}

class TlsTest : public ::testing::Test {
 protected:
  TlsTest()
      : pki_(secrets_.path()),
        ca_(pki_.ca("qbus test CA")),
        other_ca_(pki_.ca("another CA")),
        server_(pki_.leaf("127.0.0.1", ca_, true)),
        alice_(pki_.leaf("alice", ca_, false)),
        mallory_(pki_.leaf("alice", other_ca_, false)),
        expired_(pki_.leaf("alice", ca_, false, -30, -1)),
        stranger_(pki_.leaf("stranger", ca_, false)) {}

  // A daemon serving TLS on 127.0.0.1:0; `client_ca`: client certificates are required.
  // Uid 4321 (the mapped "alice") may send to tls.ok and nothing else under tls; root may
  // use them all.
  void start(bool client_ca) {
    std::string tls = R"("certificate": ")" + server_.cert + R"(", "key": ")" + server_.key + "\"";
    if (client_ca) {
      tls += R"(, "client_ca": ")" + ca_.cert + R"(", "clients": [{"cn": "alice", "uid": 4321}])";
    }
    config_ = R"({"tcp": {"listen": "127.0.0.1:0", "token_file": ")" + write_token(secrets_) +
              R"(", "tls": {)" + tls + R"(}},
          "policy": {"default": "allow", "rules": [
            {"deny": "*", "everyone": true, "prefixes": ["tls"]},
            {"allow": "*", "uids": [0], "prefixes": ["tls."]},
            {"allow": ["send"], "uids": [4321], "keys": ["tls.ok"]}]}})";
    daemon_.emplace(DaemonOptions{.config_json = config_});
    port_address_ = daemon_->tcp_address();
    ASSERT_FALSE(port_address_.empty()) << daemon_->log();
  }

  // A good TLS client and a Unix client still work: the refusals before changed nothing.
  void expect_still_serving(const TestPki::Issued* cert) {
    RawPeer good(port_address_, true, ca_.cert, cert ? cert->cert : "", cert ? cert->key : "");
    ASSERT_EQ(good.tls_error(), "");
    const auto a = good.hello(kToken);
    ASSERT_EQ(a.type, proto::FrameType::welcome) << a.text << a.tls_error;
    EXPECT_EQ(good.send_confirmed("still.serving", "yes").type, proto::FrameType::ok);
    Client local(ClientOptions{daemon_->address(), "tls-test-local", seconds(30)});
    auto m = local.receive("still.serving", seconds(30));
    ASSERT_TRUE(m);
    EXPECT_EQ(m->text(), "yes");
  }

  TempDir secrets_;
  TestPki pki_;
  TestPki::Issued ca_, other_ca_, server_, alice_, mallory_, expired_, stranger_;
  std::string config_;  // the daemon's config file's text
  std::optional<Daemon> daemon_;
  std::string port_address_;
};

TEST_F(TlsTest, GoodCertificateExchangesMessagesWithUnixClients) {
  start(false);
  RawPeer peer(port_address_, true, ca_.cert);
  ASSERT_EQ(peer.tls_error(), "");
  const auto a = peer.hello(kToken);
  ASSERT_EQ(a.type, proto::FrameType::welcome) << a.text;
  EXPECT_EQ(a.uid, 4294967294u);  // no client certificate: the shared TCP uid
  EXPECT_EQ(peer.send_confirmed("over.tls", "encrypted hello").type, proto::FrameType::ok);
  Client local(ClientOptions{daemon_->address(), "tls-test-local", seconds(30)});
  auto m = local.receive("over.tls", seconds(30));
  ASSERT_TRUE(m);
  EXPECT_EQ(m->text(), "encrypted hello");
  EXPECT_EQ(m->sender().uid, 4294967294u);
}

TEST_F(TlsTest, HelloSentWithTheLastHandshakeBytesIsAnswered) {
  start(false);
  const auto answer = hello_with_last_flight(port_address_, ca_.cert);
  ASSERT_TRUE(answer) << daemon_->log();
  EXPECT_EQ(*answer, proto::FrameType::welcome);
}

TEST_F(TlsTest, FramesBeforeTheClientsCloseAreHandled) {
  start(false);
  Client local(ClientOptions{daemon_->address(), "tls-test-local", seconds(30)});
  for (int i = 0; i < 100; ++i) {
    RawPeer peer(port_address_, true, ca_.cert);
    ASSERT_EQ(peer.hello(kToken).type, proto::FrameType::welcome);
    // Unconfirmed, then close_notify and FIN at once: the SEND and the end of the session
    // reach the broker together, and the SEND must not be lost with the connection.
    proto::ByteBuffer b;
    const std::string text = "last words " + std::to_string(i);
    proto::append_send(b, 2, 0, "last.words",
                       std::as_bytes(std::span<const char>(text.data(), text.size())));
    ASSERT_TRUE(peer.send(b));
    peer.shutdown();
    auto m = local.receive("last.words", seconds(30));
    ASSERT_TRUE(m) << "message " << i << " lost";
    EXPECT_EQ(m->text(), text);
  }
}

TEST_F(TlsTest, WrongTokenOverTlsIsRefusedAndCounted) {
  start(false);
  RawPeer peer(port_address_, true, ca_.cert);
  ASSERT_EQ(peer.tls_error(), "");
  const auto a = peer.hello("not the token");
  ASSERT_EQ(a.type, proto::FrameType::error) << a.tls_error;
  EXPECT_EQ(a.code, static_cast<std::uint16_t>(Errc::auth_failed));
  EXPECT_TRUE(daemon_->wait_for_log("auth_failed: wrong token (1 failures from this address)"));
  expect_still_serving(nullptr);
}

TEST_F(TlsTest, PlainHelloToTheTlsPortIsRefusedWithAnErrorAndCounted) {
  start(false);
  RawPeer plain(port_address_, false, "");
  const auto a = plain.hello(kToken);
  ASSERT_EQ(a.type, proto::FrameType::error) << (a.closed ? "closed" : "");
  EXPECT_EQ(a.code, static_cast<std::uint16_t>(Errc::auth_failed));
  EXPECT_NE(a.text.find("tls:HOST:PORT"), std::string::npos) << a.text;
  EXPECT_TRUE(daemon_->wait_for_log("tls_handshake_failed"));
  EXPECT_TRUE(
      daemon_->wait_for_log("(it sent plain qbus, not TLS) (1 failures from this address)"));
  expect_still_serving(nullptr);
}

TEST_F(TlsTest, ClientCertificateFromAnotherCaIsRefused) {
  start(true);
  RawPeer peer(port_address_, true, ca_.cert, mallory_.cert, mallory_.key);
  const auto a = peer.hello(kToken);
  EXPECT_TRUE(a.closed) << "answered with frame type " << static_cast<int>(a.type);
  EXPECT_TRUE(daemon_->wait_for_log("tls_handshake_failed: certificate verify failed"));
  EXPECT_TRUE(daemon_->wait_for_log("(1 failures from this address)"));
  expect_still_serving(&alice_);
}

TEST_F(TlsTest, ExpiredClientCertificateIsRefused) {
  start(true);
  RawPeer peer(port_address_, true, ca_.cert, expired_.cert, expired_.key);
  const auto a = peer.hello(kToken);
  EXPECT_TRUE(a.closed) << "answered with frame type " << static_cast<int>(a.type);
  EXPECT_TRUE(daemon_->wait_for_log("tls_handshake_failed: certificate verify failed"));
  expect_still_serving(&alice_);
}

TEST_F(TlsTest, MissingClientCertificateIsRefusedWhenOneIsRequired) {
  start(true);
  RawPeer peer(port_address_, true, ca_.cert);
  const auto a = peer.hello(kToken);
  EXPECT_TRUE(a.closed) << "answered with frame type " << static_cast<int>(a.type);
  EXPECT_TRUE(daemon_->wait_for_log("tls_handshake_failed: peer did not return a certificate"));
  expect_still_serving(&alice_);
}

TEST_F(TlsTest, RepeatedHandshakeFailuresAreCountedPerAddress) {
  start(true);
  for (int i = 0; i < 2; ++i) {
    RawPeer peer(port_address_, true, ca_.cert);
    EXPECT_TRUE(peer.hello(kToken).closed);
  }
  EXPECT_TRUE(daemon_->wait_for_log("(2 failures from this address)"));
  // The count is the token's too: a wrong token now is the address's third failure.
  RawPeer peer(port_address_, true, ca_.cert, alice_.cert, alice_.key);
  EXPECT_EQ(peer.hello("wrong").code, static_cast<std::uint16_t>(Errc::auth_failed));
  EXPECT_TRUE(daemon_->wait_for_log("wrong token (3 failures from this address)"));
  expect_still_serving(&alice_);
}

TEST_F(TlsTest, MappedCertificateIsJudgedByThePolicyAsItsUid) {
  start(true);
  RawPeer alice(port_address_, true, ca_.cert, alice_.cert, alice_.key);
  const auto a = alice.hello(kToken);
  ASSERT_EQ(a.type, proto::FrameType::welcome) << a.text << a.tls_error;
  EXPECT_EQ(a.uid, 4321u);
  EXPECT_EQ(alice.send_confirmed("tls.ok", "allowed").type, proto::FrameType::ok);
  const auto denied = alice.send_confirmed("tls.other", "denied");
  EXPECT_EQ(denied.code, static_cast<std::uint16_t>(Errc::permission_denied)) << denied.text;
  EXPECT_TRUE(daemon_->wait_for_log("cert 'alice' as uid 4321"));

  // A verified but unmapped certificate keeps the shared TCP uid, which the rule does not name.
  RawPeer stranger(port_address_, true, ca_.cert, stranger_.cert, stranger_.key);
  const auto s = stranger.hello(kToken);
  ASSERT_EQ(s.type, proto::FrameType::welcome) << s.text << s.tls_error;
  EXPECT_EQ(s.uid, 4294967294u);
  EXPECT_EQ(stranger.send_confirmed("tls.ok", "denied").code,
            static_cast<std::uint16_t>(Errc::permission_denied));
}

TEST_F(TlsTest, StalledHandshakeIsClosedWithinTheHandshakeTimeout) {
  start(false);
  // Connected, silent: no ClientHello ever comes.
  RawPeer silent(port_address_, false, "");
  EXPECT_TRUE(daemon_->wait_for_log("no TLS handshake within the handshake timeout"));
  expect_still_serving(nullptr);
}

// ---- libqbus and qbusctl with tls: addresses -------------------------------------------

class TlsClientTest : public TlsTest {
 protected:
  std::string tls_address() const { return "tls:" + port_address_.substr(4); }
  ClientOptions options(const std::string& ca, const TestPki::Issued* cert = nullptr,
                        const std::string& token = kToken) const {
    ClientOptions o{tls_address(), "tls-client", seconds(30)};
    o.token = token;
    o.tls_ca = ca;
    if (cert) {
      o.tls_cert = cert->cert;
      o.tls_key = cert->key;
    }
    return o;
  }
};

TEST_F(TlsClientTest, LibqbusExchangesMessagesOverTls) {
  start(false);
  Client tls(options(ca_.cert));
  EXPECT_EQ(tls.session().address, tls_address());
  EXPECT_EQ(tls.session().uid, 4294967294u);
  Client local(ClientOptions{daemon_->address(), "tls-test-local", seconds(30)});
  tls.send_confirmed("both.ways", "from tls");
  EXPECT_EQ(local.receive("both.ways", seconds(30))->text(), "from tls");
  // Larger than one TLS record, so that it arrives in several.
  const std::string big(200 * 1024, 'x');
  local.send_confirmed("both.ways", big);
  auto m = tls.receive("both.ways", seconds(30));
  ASSERT_TRUE(m);
  EXPECT_EQ(m->text(), big);
}

TEST_F(TlsClientTest, LibqbusRefusesABrokerItsCaDidNotSign) {
  start(false);
  try {
    Client c(options(other_ca_.cert));
    FAIL() << "connected to a broker whose certificate the CA did not sign";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::connect_failed) << e.what();
    EXPECT_NE(std::string(e.what()).find("certificate verify failed"), std::string::npos)
        << e.what();
  }
  Client good(options(ca_.cert));
  good.send_confirmed("after", "refusal");
}

TEST_F(TlsClientTest, LibqbusTokenOverTlsGoodAndBad) {
  start(false);
  try {
    Client c(options(ca_.cert, nullptr, "wrong token"));
    FAIL() << "a wrong token was welcomed";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::auth_failed) << e.what();
  }
  Client good(options(ca_.cert));
  good.send_confirmed("token", "ok");
}

TEST_F(TlsClientTest, LibqbusWithAMappedCertificateIsJudgedAsItsUid) {
  start(true);
  Client alice(options(ca_.cert, &alice_));
  EXPECT_EQ(alice.session().uid, 4321u);
  alice.send_confirmed("tls.ok", "allowed");
  try {
    alice.send_confirmed("tls.other", "denied");
    FAIL() << "the policy let uid 4321 send to tls.other";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::permission_denied) << e.what();
  }
  // Without a certificate the broker ends the session; libqbus says so.
  EXPECT_THROW(Client{options(ca_.cert)}, Error);
  Client again(options(ca_.cert, &alice_));
  again.send_confirmed("tls.ok", "still serving");
}

TEST_F(TlsClientTest, QbusctlTakesTlsOptionsAndEnvironment) {
  start(true);
  const std::vector<std::string> env{"QBUS_TOKEN=" + std::string(kToken)};
  auto r = run({qbusctl_path(), "--address", tls_address(), "--tls-ca", ca_.cert, "--tls-cert",
                alice_.cert, "--tls-key", alice_.key, "send", "tls.ok", "by flags"},
               "", env);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  auto with_env = env;
  with_env.push_back("QBUS_TLS_CA=" + ca_.cert);
  with_env.push_back("QBUS_TLS_CERT=" + alice_.cert);
  with_env.push_back("QBUS_TLS_KEY=" + alice_.key);
  r = run({qbusctl_path(), "--address", tls_address(), "send", "tls.ok", "by environment"}, "",
          with_env);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  Client local(ClientOptions{daemon_->address(), "tls-test-local", seconds(30)});
  EXPECT_EQ(local.receive("tls.ok", seconds(30))->text(), "by flags");
  EXPECT_EQ(local.receive("tls.ok", seconds(30))->text(), "by environment");

  // Without the CA the broker's certificate is not trusted: one line, exit 1.
  r = run({qbusctl_path(), "--address", tls_address(), "send", "tls.ok", "x"}, "", env);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("TLS handshake"), std::string::npos) << r.err;
}

TEST_F(TlsClientTest, ReloadKeepsTheTlsSettingsUntilARestart) {
  start(false);
  // Another certificate, from a CA the clients do not trust, and a client CA: all restart-only.
  const auto other = pki_.leaf("127.0.0.1", other_ca_, true);
  std::string changed = config_;
  changed.replace(changed.find(server_.cert), server_.cert.size(), other.cert);
  changed.replace(changed.find(server_.key), server_.key.size(), other.key);
  std::ofstream(daemon_->config_path()) << changed;
  ::kill(daemon_->pid(), SIGHUP);
  EXPECT_TRUE(daemon_->wait_for_log("tcp.tls changed; restart qbusd to apply")) << daemon_->log();
  Client c(options(ca_.cert));
  c.send_confirmed("reload.ok", "same certificate as before");
}

// ---- startup -------------------------------------------------------------------------

Result check_config(const TempDir& dir, const std::string& tcp) {
  std::ofstream(dir.file("c.json"))
      << R"({"tcp": {"token_file": ")" + write_token(dir) + R"(", )" + tcp + "}}";
  return run(
      {qbusd_path(), "--config", dir.file("c.json"), "--socket", dir.file("s"), "--check-config"});
}

TEST(TlsStartup, PlainTcpBeyondLoopbackIsRefusedUnlessAllowed) {
  TempDir dir;
  auto r = check_config(dir, R"("listen": "0.0.0.0:7878")");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("tcp.allow_plaintext:"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;

  r = check_config(dir, R"("listen": "0.0.0.0:7878", "allow_plaintext": true)");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = check_config(dir, R"("listen": "127.0.0.1:7878")");
  EXPECT_EQ(r.exit_code, 0) << r.err;

  // Startup itself refuses too (the flag overrides the file's address).
  r = run({qbusd_path(), "--config", dir.file("c.json"), "--socket", dir.file("s"), "--tcp",
           "0.0.0.0:0"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("tcp.allow_plaintext:"), std::string::npos) << r.err;
}

TEST(TlsStartup, TlsOnAnyAddressNeedsNoPlaintextPermission) {
  TempDir dir;
  TestPki pki(dir.path());
  const auto ca = pki.ca("ca");
  const auto server = pki.leaf("127.0.0.1", ca, true);
  auto r = check_config(dir, R"("listen": "0.0.0.0:7878", "tls": {"certificate": ")" + server.cert +
                                 R"(", "key": ")" + server.key + R"("})");
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

TEST(TlsStartup, UnusableTlsFilesStopStartupNamingTheField) {
  TempDir dir;
  TestPki pki(dir.path());
  const auto ca = pki.ca("ca");
  const auto server = pki.leaf("127.0.0.1", ca, true);
  const auto other = pki.leaf("127.0.0.1", ca, true);
  const auto tls = [&](const std::string& cert, const std::string& key, const std::string& more) {
    return check_config(dir, R"("listen": "127.0.0.1:0", "tls": {"certificate": ")" + cert +
                                 R"(", "key": ")" + key + "\"" + more + "}");
  };
  auto r = tls(dir.file("missing.pem"), server.key, "");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("tcp.tls.certificate:"), std::string::npos) << r.err;

  r = tls(server.cert, other.key, "");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("tcp.tls.key: does not match"), std::string::npos) << r.err;

  ::chmod(server.key.c_str(), 0644);
  r = tls(server.cert, server.key, "");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("tcp.tls.key:"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("chmod 600"), std::string::npos) << r.err;
  ::chmod(server.key.c_str(), 0600);

  r = tls(server.cert, server.key, R"(, "client_ca": ")" + dir.file("nope.pem") + "\"");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("tcp.tls.client_ca:"), std::string::npos) << r.err;

  r = tls(server.cert, server.key, "");
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

}  // namespace
}  // namespace qbus::testing
