// The Prometheus endpoint on a live daemon: what it answers (checked by promtool from
// Debian's prometheus package), what it refuses, its bound on connections, the bound on
// per-queue series against 100,000 keys, and a real Prometheus scraping it and answering
// a query about it.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <qbus/client.hpp>

#include <cstring>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "daemon.hpp"
#include "eventually.hpp"
#include "http_peer.hpp"
#include "process.hpp"

namespace qbus::testing {
namespace {

using json = nlohmann::json;
using std::chrono::seconds;

// The value of the sample `series` (name and labels exactly as written) in `text`.
std::optional<double> sample(const std::string& text, const std::string& series) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.size() > series.size() && line.compare(0, series.size(), series) == 0 &&
        line[series.size()] == ' ') {
      return std::stod(line.substr(series.size() + 1));
    }
  }
  return std::nullopt;
}

std::size_t count_lines_starting(const std::string& text, const std::string& prefix) {
  std::size_t n = 0;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    n += line.compare(0, prefix.size(), prefix) == 0 ? 1 : 0;
  return n;
}

// A port nothing listens on now (bound and released: a tiny race nothing else here joins).
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa));
  socklen_t len = sizeof(sa);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
  ::close(fd);
  return ntohs(sa.sin_port);
}

class MetricsTest : public ::testing::Test {
 protected:
  explicit MetricsTest(std::string extra_config = {})
      : daemon_(
            DaemonOptions{R"({"metrics": {"listen": "tcp:127.0.0.1:0")" + extra_config + "}}"}) {
    // The port qbusd bound, from its startup line ("..., metrics tcp:127.0.0.1:PORT)").
    EXPECT_TRUE(daemon_.wait_for_log("metrics tcp:127.0.0.1:")) << daemon_.log();
    const std::string log = daemon_.log();
    const auto at = log.find("metrics tcp:127.0.0.1:") + std::strlen("metrics tcp:127.0.0.1:");
    port_ = std::stoi(log.substr(at));
  }
  Client connect(const std::string& name = "metrics-test") {
    return Client(ClientOptions{daemon_.address(), name, seconds(30)});
  }
  std::string scrape() {
    const std::string r = exchange(port_, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_EQ(status_line(r), "HTTP/1.1 200 OK") << r.substr(0, 300);
    return body_of(r);
  }

  Daemon daemon_;
  int port_ = 0;
};

TEST_F(MetricsTest, PromtoolAcceptsTheAnswerAndItShowsTheBroker) {
  auto c = connect();
  for (int i = 0; i < 3; ++i)
    c.send("orders", "order " + std::to_string(i));
  c.send("audit", "x");
  ASSERT_TRUE(c.receive("audit", seconds(30)).has_value());
  c.sync();

  const std::string text = scrape();
  const std::string file = daemon_.dir().file("metrics.txt");
  std::ofstream(file) << text;
  const auto check = run({"/bin/sh", "-c", "promtool check metrics < " + file});
  EXPECT_EQ(check.exit_code, 0) << check.out << check.err << "\n" << text;
  EXPECT_EQ(check.out + check.err, "") << text;

  EXPECT_EQ(sample(text, R"(qbus_queue_depth_messages{queue="orders"})"), 3) << text;
  EXPECT_EQ(sample(text, R"(qbus_queue_enqueued_total{queue="orders"})"), 3) << text;
  // The audit queue went once empty and unused: its series with it.
  EXPECT_EQ(sample(text, R"(qbus_queue_dequeued_total{queue="audit"})"), std::nullopt) << text;
  EXPECT_EQ(sample(text, "qbus_messages_in_total"), 4) << text;
  EXPECT_EQ(sample(text, "qbus_messages_out_total"), 1) << text;
  EXPECT_EQ(sample(text, R"(qbus_connections{transport="unix"})"), 1) << text;
  EXPECT_EQ(sample(text, R"(qbus_uid_usage{uid=")" + std::to_string(::getuid()) +
                             R"(",resource="queued_messages"})"),
            3)
      << text;
  EXPECT_EQ(sample(text, R"(qbus_uid_limit{resource="connections"})"), 1024) << text;
  EXPECT_EQ(sample(text, R"(qbus_build_info{version=")" + std::string(QBUS_TEST_VERSION) + "\"}"),
            1)
      << text;
  EXPECT_GT(sample(text, "qbus_event_loop_batches_total").value_or(0), 0) << text;
  EXPECT_GT(sample(text, "process_resident_memory_bytes").value_or(0), 0) << text;
  // Nothing was summed: two queues, far below the bound.
  EXPECT_EQ(sample(text, "qbus_queues_aggregated"), 0) << text;
  EXPECT_EQ(sample(text, R"x(qbus_queue_depth_messages{queue="(other)"})x"), std::nullopt);
}

TEST_F(MetricsTest, RequestOutcomesAreCounted) {
  auto requester = connect("requester");
  EXPECT_FALSE(requester.request("nobody.answers", "ping", std::chrono::milliseconds(50)));
  const std::string text = scrape();
  EXPECT_EQ(sample(text, "qbus_requests_accepted_total"), 1) << text;
  EXPECT_EQ(sample(text, R"(qbus_requests_total{outcome="timed_out"})"), 1) << text;
  EXPECT_EQ(sample(text, R"(qbus_requests_total{outcome="answered"})"), 0) << text;
}

TEST_F(MetricsTest, RefusesAnythingButGetMetrics) {
  const auto refused = [&](const std::string& request) {
    return status_line(exchange(port_, request));
  };
  EXPECT_EQ(refused("POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
            "HTTP/1.1 405 Method Not Allowed");
  EXPECT_EQ(refused("HEAD /metrics HTTP/1.1\r\n\r\n"), "HTTP/1.1 405 Method Not Allowed");
  EXPECT_EQ(refused("DELETE /metrics HTTP/1.1\r\n\r\n"), "HTTP/1.1 405 Method Not Allowed");
  EXPECT_EQ(refused("GET / HTTP/1.1\r\n\r\n"), "HTTP/1.1 404 Not Found");
  EXPECT_EQ(refused("GET /metrics/../admin HTTP/1.1\r\n\r\n"), "HTTP/1.1 404 Not Found");
  EXPECT_EQ(refused("GET /metricsx HTTP/1.1\r\n\r\n"), "HTTP/1.1 404 Not Found");
  EXPECT_EQ(refused("garbage\r\n\r\n"), "HTTP/1.1 400 Bad Request");
  EXPECT_EQ(refused("GET /metrics HTTP/2.0\r\n\r\n"), "HTTP/1.1 505 HTTP Version Not Supported");
  EXPECT_EQ(refused("GET /metrics HTTP/1.1\r\nX: " + std::string(10'000, 'a') + "\r\n\r\n"),
            "HTTP/1.1 431 Request Header Fields Too Large");
  // A query string is no other path.
  EXPECT_EQ(status_line(exchange(port_, "GET /metrics?x=1 HTTP/1.0\r\n\r\n")), "HTTP/1.1 200 OK");
  // A peer that sends half a request and goes away costs nothing.
  {
    const int fd = connect_to(port_);
    (void)!::send(fd, "GET /met", 8, MSG_NOSIGNAL);
    ::close(fd);
  }
  // The broker itself was never disturbed.
  auto c = connect();
  c.send("still", "served");
  EXPECT_TRUE(c.receive("still", seconds(30)).has_value());
  EXPECT_FALSE(scrape().empty());
}

TEST_F(MetricsTest, BoundsItsConnections) {
  // Scrapers that connect and say nothing hold a connection each, up to the bound.
  std::vector<int> silent;
  for (std::size_t i = 0; i < 16; ++i)
    silent.push_back(connect_to(port_));
  // The 17th is told at once; those already in wait on.
  EXPECT_EQ(status_line(exchange(port_, "GET /metrics HTTP/1.1\r\n\r\n")),
            "HTTP/1.1 503 Service Unavailable");
  for (int fd : silent)
    ::close(fd);
  // Their places free up as qbusd sees them go.
  EXPECT_TRUE(eventually([&] {
    return status_line(exchange(port_, "GET /metrics HTTP/1.1\r\n\r\n")) == "HTTP/1.1 200 OK";
  }));
}

class MetricsSeriesTest : public MetricsTest {
 protected:
  MetricsSeriesTest()
      : MetricsTest(R"(}, "limits": {"max_queues": 200000, "uid_max_queues": 200000)") {}
};

TEST_F(MetricsSeriesTest, TheCardinalityBoundHoldsAgainst100000Keys) {
  constexpr int kKeys = 100'000;
  auto c = connect("key-sprayer");
  {
    Client::Batch b(c);
    for (int i = 0; i < kKeys; ++i)
      c.send("spray." + std::to_string(i), "x");
  }
  c.sync();
  const std::string text = scrape();
  // The default bound: 1,000 queues with series of their own, the rest summed.
  EXPECT_EQ(sample(text, "qbus_queues"), kKeys);
  EXPECT_EQ(sample(text, "qbus_queue_series_limit"), 1000);
  EXPECT_EQ(sample(text, "qbus_queues_aggregated"), kKeys - 1000);
  EXPECT_EQ(count_lines_starting(text, "qbus_queue_depth_messages{"), 1001u);
  EXPECT_EQ(sample(text, R"x(qbus_queue_depth_messages{queue="(other)"})x"), kKeys - 1000);
  // Every per-queue family is bounded the same way, and so is the whole answer.
  EXPECT_EQ(count_lines_starting(text, "qbus_queue_enqueued_total{"), 1001u);
  EXPECT_LT(text.size(), 1'000'000u);
  // The queues that have series keep them from one scrape to the next.
  std::set<std::string> first;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with("qbus_queue_depth_messages{"))
      first.insert(line.substr(0, line.find(' ')));
  }
  c.send("spray.new", "x");
  c.sync();
  const std::string again = scrape();
  std::set<std::string> second;
  std::istringstream in2(again);
  for (std::string line; std::getline(in2, line);) {
    if (line.starts_with("qbus_queue_depth_messages{")) {
      second.insert(line.substr(0, line.find(' ')));
    }
  }
  EXPECT_EQ(first, second);
  EXPECT_EQ(sample(again, "qbus_queues_aggregated"), kKeys - 1000 + 1);
}

// Prometheus itself, from Debian's package: it scrapes qbusd and answers a query about it.
TEST_F(MetricsTest, ARealPrometheusScrapesAndAnswersAQuery) {
  const std::string prometheus = "/usr/bin/prometheus";
  ASSERT_EQ(::access(prometheus.c_str(), X_OK), 0)
      << "prometheus is missing: scripts/deps.sh installs Debian's prometheus package";
  auto c = connect();
  for (int i = 0; i < 7; ++i)
    c.send("scraped.orders", "o");
  c.sync();

  const int web_port = free_port();
  const std::string config = daemon_.dir().file("prometheus.yml");
  std::ofstream(config) << "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                           "scrape_configs:\n  - job_name: qbus\n    static_configs:\n"
                           "      - targets: ['127.0.0.1:"
                        << port_ << "']\n";
  const std::string data = daemon_.dir().file("prometheus-data");
  const std::string listen = "127.0.0.1:" + std::to_string(web_port);
  const std::string log = daemon_.dir().file("prometheus.log");
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ::dup2(out, 1);
    ::dup2(out, 2);
    ::execl(prometheus.c_str(), "prometheus", ("--config.file=" + config).c_str(),
            ("--storage.tsdb.path=" + data).c_str(), ("--web.listen-address=" + listen).c_str(),
            nullptr);
    ::_exit(127);
  }
  struct Stop {
    pid_t pid;
    ~Stop() {
      ::kill(pid, SIGTERM);
      wait_exit(pid);
    }
  } stop{pid};
  const std::string base = "http://" + listen;
  const auto curl = [&](const std::vector<std::string>& args) {
    std::vector<std::string> argv{"/usr/bin/curl", "-sS", "--max-time", "10"};
    argv.insert(argv.end(), args.begin(), args.end());
    return run(argv);
  };
  ASSERT_TRUE(eventually(
      [&] {
        return curl({"-f", base + "/-/ready"}).exit_code == 0;
      },
      seconds(120)))
      << std::ifstream(log).rdbuf();
  // The value qbusd holds, read back through Prometheus's HTTP API once it has scraped.
  std::string last;
  const auto value_of = [&](const std::string& query) -> std::optional<std::string> {
    const auto r = curl({"-G", base + "/api/v1/query", "--data-urlencode", "query=" + query});
    last = r.out + r.err;
    if (r.exit_code != 0) return std::nullopt;
    const json j = json::parse(r.out, nullptr, false);
    if (j.is_discarded() || j.value("status", "") != "success") return std::nullopt;
    const auto& result = j["data"]["result"];
    if (!result.is_array() || result.empty()) return std::nullopt;
    return result[0]["value"][1].get<std::string>();
  };
  EXPECT_TRUE(eventually([&] { return value_of(R"(up{job="qbus"})") == "1"; }, seconds(120)))
      << last << std::ifstream(log).rdbuf();
  EXPECT_TRUE(eventually(
      [&] { return value_of(R"(qbus_queue_depth_messages{queue="scraped.orders"})") == "7"; },
      seconds(120)))
      << last;
  // A counter Prometheus can take a rate of.
  EXPECT_TRUE(eventually(
      [&] { return value_of(R"(qbus_queue_enqueued_total{queue="scraped.orders"})") == "7"; },
      seconds(120)))
      << last;
}

TEST(MetricsUnixTest, ServesOnAUnixSocket) {
  TempDir dir;
  const std::string path = dir.file("metrics.sock");
  Daemon daemon(DaemonOptions{R"({"metrics": {"listen": "unix:)" + path + R"("}})"});
  ASSERT_TRUE(daemon.wait_for_log("metrics unix:" + path)) << daemon.log();
  const std::string r = exchange(0, "GET /metrics HTTP/1.1\r\n\r\n", path);
  EXPECT_EQ(status_line(r), "HTTP/1.1 200 OK") << r.substr(0, 300);
  EXPECT_TRUE(sample(body_of(r), "qbus_queues").has_value());
  EXPECT_EQ(daemon.stop(), 0);
  // Its socket file goes with it.
  EXPECT_NE(::access(path.c_str(), F_OK), 0);
}

TEST(MetricsConfigTest, ABadListenAddressIsRefusedNamingTheField) {
  for (const char* listen : {"tls:127.0.0.1:9464", "127.0.0.1:9464", "tcp:nohost", "unix:"}) {
    TempDir dir;
    const std::string config = dir.file("qbusd.json");
    std::ofstream(config) << R"({"metrics": {"listen": ")" << listen << R"("}})";
    const auto r = run({qbusd_path(), "--config", config, "--check-config"});
    EXPECT_NE(r.exit_code, 0) << listen;
    EXPECT_NE(r.err.find("metrics.listen"), std::string::npos) << listen << ": " << r.err;
  }
}

}  // namespace
}  // namespace qbus::testing
