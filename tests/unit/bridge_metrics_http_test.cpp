// Unit tests of qbus-bridge's scrape endpoint (bridge/src/metrics_http.hpp) over real
// sockets: what it answers on tcp: and unix:, and its bounds. Every wait is for an answer,
// a close or readiness, with a generous timeout; none is a fixed sleep.
#include "metrics_http.hpp"

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "eventually.hpp"
#include "http_peer.hpp"
#include "qbus/proto/address.hpp"

namespace qbus::bridge {
namespace {

using proto::UniqueFd;
using testing::body_of;
using testing::read_all;
using testing::status_line;

constexpr const char* kGet = "GET /metrics HTTP/1.1\r\nHost: bridge\r\n\r\n";

// The port of a "tcp:127.0.0.1:PORT" endpoint.
int port_of(const std::string& endpoint) {
  std::string why;
  const auto address = proto::parse_address(endpoint, why);
  EXPECT_TRUE(address && address->kind == proto::Address::Kind::tcp) << endpoint << ": " << why;
  return address ? address->port : 0;
}

// A connected client socket to a tcp: (loopback IPv4) or unix: endpoint.
UniqueFd connect_to(const std::string& endpoint) {
  if (endpoint.starts_with("unix:")) return UniqueFd(testing::connect_to(0, endpoint.substr(5)));
  return UniqueFd(testing::connect_to(port_of(endpoint)));
}

// Sends `request` on a new connection and returns the whole answer.
std::string round_trip(const std::string& endpoint, const std::string& request) {
  const UniqueFd fd = connect_to(endpoint);
  EXPECT_EQ(::send(fd.get(), request.data(), request.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(request.size()));
  return read_all(fd.get());
}

std::string get(const std::string& endpoint, const std::string& target = "/metrics") {
  return round_trip(endpoint, "GET " + target + " HTTP/1.1\r\nHost: bridge\r\n\r\n");
}

// The value of header `name` in `response`; "" when it has none.
std::string header(const std::string& response, const std::string& name) {
  const std::string head = response.substr(0, response.find("\r\n\r\n"));
  const auto at = head.find("\r\n" + name + ": ");
  if (at == std::string::npos) return "";
  const auto from = at + name.size() + 4;
  return head.substr(from, head.find("\r\n", from) - from);
}

// Whether the endpoint has neither answered `fd` nor closed it.
bool still_waiting(int fd) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 0) == 0;
}

// A directory of its own for socket files, removed with what it holds.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/qbus-bridge-metrics-XXXXXX";
    EXPECT_NE(::mkdtemp(tmpl), nullptr);
    path_ = tmpl;
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// The message MetricsEndpoint(listen) throws; "" when it binds.
std::string error_of(const std::string& listen) {
  try {
    const MetricsEndpoint m(listen);
    return "";
  } catch (const std::runtime_error& e) {
    return e.what();
  }
}

bool is_socket(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode);
}

TEST(MetricsEndpoint, BindsAFreePortAndSays503UntilTheFirstPublish) {
  const MetricsEndpoint m("tcp:127.0.0.1:0");
  const std::string e = m.endpoint();
  ASSERT_TRUE(e.starts_with("tcp:127.0.0.1:")) << e;
  EXPECT_GT(port_of(e), 0) << e;
  const std::string r = get(e);
  EXPECT_EQ(status_line(r), "HTTP/1.1 503 Service Unavailable") << r;
  EXPECT_EQ(header(r, "Connection"), "close") << r;
}

TEST(MetricsEndpoint, ServesExactlyTheTextLastPublished) {
  MetricsEndpoint m("tcp:127.0.0.1:0");
  const std::string text =
      "# TYPE qbus_bridge_nats_connected gauge\nqbus_bridge_nats_connected 1\n";
  m.publish(text);
  const std::string r = get(m.endpoint());
  EXPECT_EQ(status_line(r), "HTTP/1.1 200 OK") << r;
  EXPECT_EQ(header(r, "Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_EQ(header(r, "Content-Length"), std::to_string(text.size()));
  EXPECT_EQ(header(r, "Connection"), "close");
  EXPECT_EQ(body_of(r), text);

  m.publish("b 2\n");
  EXPECT_EQ(body_of(get(m.endpoint(), "/metrics?name[]=b")), "b 2\n") << "a query is ignored";
  EXPECT_EQ(body_of(round_trip(m.endpoint(), "GET /metrics HTTP/1.0\r\n\r\n")), "b 2\n");
  const std::string head = round_trip(m.endpoint(), "HEAD /metrics HTTP/1.1\r\n\r\n");
  EXPECT_EQ(status_line(head), "HTTP/1.1 200 OK") << head;
  EXPECT_EQ(header(head, "Content-Length"), "4");
  EXPECT_EQ(body_of(head), "");
}

TEST(MetricsEndpoint, RefusesOtherPathsMethodsAndMalformedRequests) {
  MetricsEndpoint m("tcp:127.0.0.1:0");
  m.publish("a 1\n");
  const std::string e = m.endpoint();
  EXPECT_EQ(status_line(get(e, "/")), "HTTP/1.1 404 Not Found");
  EXPECT_EQ(status_line(get(e, "/metricsx")), "HTTP/1.1 404 Not Found");
  const std::string post = round_trip(e, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
  EXPECT_EQ(status_line(post), "HTTP/1.1 405 Method Not Allowed") << post;
  EXPECT_EQ(header(post, "Allow"), "GET, HEAD");
  for (const char* bad : {"GARBAGE\r\n\r\n", "GET /metrics\r\n\r\n",
                          "GET  /metrics HTTP/1.1\r\n\r\n", "GET /metrics HTTP/1.1 more\r\n\r\n",
                          "GET /metrics FTP/1.0\r\n\r\n", "G(T /metrics HTTP/1.1\r\n\r\n"}) {
    const std::string r = round_trip(e, bad);
    EXPECT_EQ(status_line(r), "HTTP/1.1 400 Bad Request") << bad;
    EXPECT_EQ(header(r, "Connection"), "close") << bad;
  }
  EXPECT_EQ(status_line(round_trip(e, "GET /metrics HTTP/2.0\r\n\r\n")),
            "HTTP/1.1 505 HTTP Version Not Supported");
}

TEST(MetricsEndpoint, AHeadOverTheBoundGets431) {
  MetricsEndpoint m("tcp:127.0.0.1:0");
  m.publish("a 1\n");
  const std::string start = "GET /metrics HTTP/1.1\r\nX-Filler: ";
  const std::size_t fits = MetricsEndpoint::kMaxRequestBytes - start.size() - 4;
  const std::string at_bound = start + std::string(fits, 'a') + "\r\n\r\n";
  ASSERT_EQ(at_bound.size(), MetricsEndpoint::kMaxRequestBytes);
  EXPECT_EQ(status_line(round_trip(m.endpoint(), at_bound)), "HTTP/1.1 200 OK");
  const std::string over = start + std::string(fits + 1, 'a') + "\r\n\r\n";
  const std::string r = round_trip(m.endpoint(), over);
  EXPECT_EQ(status_line(r), "HTTP/1.1 431 Request Header Fields Too Large") << r;
  // The endpoint stops reading at the bound and says so without waiting for the rest.
  const UniqueFd endless = connect_to(m.endpoint());
  const std::string flood(MetricsEndpoint::kMaxRequestBytes + 1, 'a');
  ASSERT_EQ(::send(endless.get(), flood.data(), flood.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(flood.size()));
  EXPECT_EQ(status_line(read_all(endless.get())), "HTTP/1.1 431 Request Header Fields Too Large");
}

TEST(MetricsEndpoint, ServesOnAUnixSocketReplacingAStaleOneAndRemovesIt) {
  const TempDir dir;
  const std::string path = dir.file("metrics.sock");
  {
    // A socket file nobody listens on, as a bridge that was killed leaves it.
    const UniqueFd stale(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    path.copy(sa.sun_path, sizeof(sa.sun_path) - 1);
    ASSERT_EQ(::bind(stale.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)), 0);
  }
  ASSERT_TRUE(is_socket(path));
  {
    MetricsEndpoint m("unix:" + path);
    EXPECT_EQ(m.endpoint(), "unix:" + path);
    m.publish("u 1\n");
    const std::string r = get(m.endpoint());
    EXPECT_EQ(status_line(r), "HTTP/1.1 200 OK") << r;
    EXPECT_EQ(body_of(r), "u 1\n");
    // A live endpoint on the path is not a stale file: a second one must not take it over.
    const std::string taken = error_of("unix:" + path);
    EXPECT_EQ(taken, "metrics_listen unix:" + path + ": another process is listening on " + path);
    EXPECT_EQ(body_of(get(m.endpoint())), "u 1\n") << "the first one still serves";
  }
  EXPECT_FALSE(std::filesystem::exists(path)) << "the socket file outlived its endpoint";
}

TEST(MetricsEndpoint, NeverReplacesAFileThatIsNotASocket) {
  const TempDir dir;
  const std::string path = dir.file("metrics.sock");
  std::ofstream(path) << "precious\n";
  EXPECT_EQ(error_of("unix:" + path),
            "metrics_listen unix:" + path + ": " + path + " exists and is not a socket");
  std::ifstream in(path);
  std::string kept;
  std::getline(in, kept);
  EXPECT_EQ(kept, "precious");
}

TEST(MetricsEndpoint, ProblemsAreOneSentenceNamingMetricsListen) {
  const MetricsEndpoint first("tcp:127.0.0.1:0");
  const std::string taken = first.endpoint();
  const std::string e = error_of(taken);
  EXPECT_EQ(e.rfind("metrics_listen " + taken + ": cannot bind: ", 0), 0u) << e;
  for (const std::string bad : {"tls:127.0.0.1:0", "/run/m.sock", "unix:relative/m.sock",
                                "tcp:127.0.0.1:http", "tcp:127.0.0.1:65536", "tcp:127.0.0.1"}) {
    const std::string why = error_of(bad);
    EXPECT_EQ(why.rfind("metrics_listen " + bad + ": ", 0), 0u) << bad << " -> " << why;
    EXPECT_EQ(why.find('\n'), std::string::npos) << why;
  }
}

TEST(MetricsEndpoint, BindsAnIpv6LiteralInBrackets) {
  const std::string e = error_of("tcp:[::1]:0");
  if (e.find("Cannot assign requested address") != std::string::npos ||
      e.find("Address family not supported") != std::string::npos) {
    GTEST_SKIP() << "no IPv6 loopback here: " << e;
  }
  EXPECT_EQ(e, "");
  const MetricsEndpoint m("tcp:[::1]:0");
  EXPECT_TRUE(m.endpoint().starts_with("tcp:[::1]:")) << m.endpoint();
  EXPECT_NE(m.endpoint(), "tcp:[::1]:0");
}

TEST(MetricsEndpoint, ASeventeenthConnectionGets503WhileSixteenAreHeld) {
  MetricsEndpoint m("tcp:127.0.0.1:0");
  m.publish("a 1\n");
  const std::string e = m.endpoint();
  std::vector<UniqueFd> held;
  for (std::size_t i = 0; i < MetricsEndpoint::kMaxConnections; ++i)
    held.push_back(connect_to(e));
  // Accepted in the order they came, so the sixteen hold every slot when this one is taken.
  const UniqueFd extra = connect_to(e);
  const std::string r = read_all(extra.get());
  EXPECT_EQ(status_line(r), "HTTP/1.1 503 Service Unavailable") << r;
  for (const UniqueFd& fd : held)
    EXPECT_TRUE(still_waiting(fd.get()));

  // Closing them gives their slots back, once the endpoint has read their ends.
  held.clear();
  std::string answer;
  EXPECT_TRUE(testing::eventually([&] {
    answer = get(e);
    return status_line(answer) == "HTTP/1.1 200 OK";
  })) << answer;
  EXPECT_EQ(body_of(answer), "a 1\n");
}

TEST(MetricsEndpoint, ASilentOrSlowClientDoesNotStallAnother) {
  MetricsEndpoint m("tcp:127.0.0.1:0");
  // More than the socket buffers between a client that does not read and the endpoint
  // hold (by default at most 4 MiB sending, and 128 KiB receiving until the client reads),
  // so that its answer stays half-sent.
  std::string big;
  while (big.size() < (8u << 20))
    big += "qbus_bridge_padding{n=\"" + std::to_string(big.size()) + "\"} 1\n";
  m.publish(big);
  const std::string e = m.endpoint();
  const UniqueFd silent = connect_to(e);
  ASSERT_EQ(::send(silent.get(), "GET /met", 8, MSG_NOSIGNAL), 8);
  const UniqueFd slow = connect_to(e);
  ASSERT_EQ(::send(slow.get(), kGet, std::strlen(kGet), MSG_NOSIGNAL),
            static_cast<ssize_t>(std::strlen(kGet)));
  pollfd started{slow.get(), POLLIN, 0};
  ASSERT_EQ(::poll(&started, 1, 30'000), 1) << "the slow client's answer never started";

  const std::string r = get(e);
  EXPECT_EQ(status_line(r), "HTTP/1.1 200 OK");
  EXPECT_EQ(body_of(r).size(), big.size());
  EXPECT_TRUE(body_of(r) == big);
  EXPECT_TRUE(still_waiting(silent.get())) << "the silent client was answered or closed";
  int queued = 0;
  ASSERT_EQ(::ioctl(slow.get(), FIONREAD, &queued), 0);
  EXPECT_LT(static_cast<std::size_t>(queued), big.size()) << "the slow answer was not stuck";
  const std::string late = read_all(slow.get());
  EXPECT_TRUE(body_of(late) == big) << "the slow client got " << late.size() << " bytes";
}

TEST(MetricsEndpoint, StopsWithoutWaitingForItsConnectionsDeadlines) {
  auto m = std::make_unique<MetricsEndpoint>("tcp:127.0.0.1:0");
  const std::string e = m->endpoint();
  const UniqueFd silent = connect_to(e);
  // Answered after `silent` came, so `silent` is accepted and waits for its head.
  ASSERT_EQ(status_line(get(e)), "HTTP/1.1 503 Service Unavailable");
  ASSERT_TRUE(still_waiting(silent.get()));
  const auto start = std::chrono::steady_clock::now();
  m.reset();
  EXPECT_EQ(read_all(silent.get()), "") << "closed unanswered";
  EXPECT_LT(std::chrono::steady_clock::now() - start, MetricsEndpoint::kExchangeTimeout);
  EXPECT_THROW((void)connect_to(e), std::runtime_error) << "the listener is closed";
}

}  // namespace
}  // namespace qbus::bridge
