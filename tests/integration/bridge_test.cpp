// qbus-bridge (docs/bridge.md) between two real qbusd, "host A" and "host B", through a real
// nats-server with JetStream (Debian's /usr/sbin/nats-server), which each test starts on a
// free port in its own temporary directory. Bridge A carries A's queue "orders" out to the
// subject fleet.orders of stream FLEET; bridge B feeds B's queue "orders.remote" from that
// stream with the durable pull consumer "hostb".
//
// What is checked: a round trip of 10,000 messages with their payloads and provenance
// headers, exactly once; a NATS outage (messages wait in qbus, then arrive); bridge A
// SIGKILLed five times under load (at least once, and JetStream's Nats-Msg-Id dedup);
// configuration errors (one line, no start); SIGTERM.
//
// Tests synchronise on messages, on the bridges' status files, on qbusd's admin socket and
// on JetStream's own API (asked over NATS's text protocol), polled with a generous deadline;
// never on a fixed sleep, and nothing asserts speed.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <qbus/client.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "admin_json.hpp"
#include "daemon.hpp"
#include "eventually.hpp"
#include "http_peer.hpp"

namespace qbus::testing {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr auto kDeadline = seconds(60);  // for what must happen
const std::string kBridgePath = QBUS_BRIDGE_PATH;
const std::string kNatsServerPath = "/usr/sbin/nats-server";

// ---- child processes ----

// Starts `argv` (argv[0] a path) with stdout and stderr appended to `log`, stdin from
// /dev/null and no other inherited descriptor.
pid_t start_process(std::vector<std::string> argv, const std::string& log) {
  std::vector<char*> args;
  for (auto& a : argv)
    args.push_back(a.data());
  args.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {  // only async-signal-safe calls until execv
    const int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    const int in = ::open("/dev/null", O_RDONLY);
    if (out >= 0) {
      ::dup2(out, 1);
      ::dup2(out, 2);
    }
    if (in >= 0) ::dup2(in, 0);
    ::close_range(3, ~0U, 0);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  if (pid < 0) throw std::runtime_error("fork failed");
  return pid;
}

// The exit code of `pid` (128 + the signal that ended it), or nullopt if it still runs
// when `limit` has passed.
std::optional<int> wait_exit(pid_t pid, Clock::duration limit) {
  const auto deadline = Clock::now() + limit;
  while (true) {
    int status = 0;
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (r < 0) return -1;
    if (Clock::now() > deadline) return std::nullopt;
    std::this_thread::sleep_for(milliseconds(10));
  }
}

// Signals `pid` and reaps it (SIGKILL when it outlives `limit`); its exit code, as above.
std::optional<int> end_process(pid_t pid, int sig, Clock::duration limit = kDeadline) {
  ::kill(pid, sig);
  auto code = wait_exit(pid, limit);
  if (!code) {
    ::kill(pid, SIGKILL);
    (void)wait_exit(pid, kDeadline);
  }
  return code;
}

// ---- NATS ----

int connect_tcp(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// A port nobody listened on a moment ago (the kernel's choice for port 0).
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    ::close(fd);
    throw std::runtime_error("cannot find a free port");
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

// One request to the JetStream API of the server on `port`, in NATS's text protocol, with
// `body` (JSON text, or none); the JSON answer, or null when there was none.
json jetstream_api(int port, const std::string& subject, const std::string& body = {}) {
  const int fd = connect_tcp(port);
  if (fd < 0) return nullptr;
  const timeval limit{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
  const std::string inbox = "_INBOX.bridge_test";
  const std::string request = "CONNECT {\"verbose\":false,\"pedantic\":false}\r\nSUB " + inbox +
                              " 1\r\nPUB " + subject + " " + inbox + " " +
                              std::to_string(body.size()) + "\r\n" + body + "\r\n";
  (void)!::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  std::string in;
  json answer = nullptr;
  const auto more = [&] {
    char buf[65536];
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n > 0) in.append(buf, static_cast<std::size_t>(n));
    return n > 0;
  };
  while (true) {
    const auto eol = in.find("\r\n");
    if (eol == std::string::npos) {
      if (!more()) break;
      continue;
    }
    const std::string line = in.substr(0, eol);
    if (line.starts_with("MSG ")) {
      const std::size_t size = std::stoul(line.substr(line.rfind(' ') + 1));
      if (in.size() < eol + 2 + size) {
        if (!more()) break;
        continue;
      }
      answer = json::parse(in.substr(eol + 2, size), nullptr, false);
      break;
    }
    if (line.starts_with("-ERR")) break;
    if (line == "PING") (void)!::send(fd, "PONG\r\n", 6, MSG_NOSIGNAL);
    in.erase(0, eol + 2);
  }
  ::close(fd);
  return answer.is_discarded() ? json(nullptr) : answer;
}

// Publishes `payload` with `headers` on `subject` (HPUB), then waits for the server's answer
// to a PING, so that the server has taken it; false when it did not answer.
bool nats_publish(int port, const std::string& subject,
                  const std::vector<std::pair<std::string, std::string>>& headers,
                  const std::string& payload) {
  const int fd = connect_tcp(port);
  if (fd < 0) return false;
  const timeval limit{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
  std::string head = "NATS/1.0\r\n";
  for (const auto& [k, v] : headers)
    head += k + ": " + v + "\r\n";
  head += "\r\n";
  const std::string out =
      "CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true}\r\nHPUB " + subject + " " +
      std::to_string(head.size()) + " " + std::to_string(head.size() + payload.size()) + "\r\n" +
      head + payload + "\r\nPING\r\n";
  (void)!::send(fd, out.data(), out.size(), MSG_NOSIGNAL);
  std::string in;
  char buf[4096];
  while (in.find("PONG\r\n") == std::string::npos && in.find("-ERR") == std::string::npos) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    in.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return in.find("PONG\r\n") != std::string::npos && in.find("-ERR") == std::string::npos;
}

// A nats-server with JetStream on 127.0.0.1, its store in `dir`/js and its log in
// `dir`/nats.log. It can be killed and restarted on the same port and store.
class NatsServer {
 public:
  explicit NatsServer(const TempDir& dir) : dir_(dir) {
    for (int attempt = 0; attempt < 5; ++attempt) {
      port_ = free_port();
      if (launch()) return;
    }
    throw std::runtime_error("nats-server did not start:\n" + read_file(log()));
  }
  ~NatsServer() { kill(SIGKILL); }
  NatsServer(const NatsServer&) = delete;
  NatsServer& operator=(const NatsServer&) = delete;

  int port() const { return port_; }
  std::string url() const { return "nats://127.0.0.1:" + std::to_string(port_); }
  std::string log() const { return dir_.file("nats.log"); }
  void kill(int sig) {
    if (pid_ > 0) (void)end_process(pid_, sig);
    pid_ = -1;
  }
  // Starts it again on the same port and store (which a moment ago was its own).
  bool restart() {
    for (int attempt = 0; attempt < 5; ++attempt) {
      if (launch()) return true;
    }
    return false;
  }

 private:
  // True once this server says it is ready and accepts connections on the port; false when
  // it exited first (the port was taken) or did neither within the deadline.
  bool launch() {
    const std::size_t log_before = read_file(log()).size();
    pid_ = start_process({kNatsServerPath, "-js", "-a", "127.0.0.1", "-p", std::to_string(port_),
                          "-sd", dir_.file("js")},
                         log());
    const bool up = eventually(
        [&] {
          if (wait_exit(pid_, {})) {
            pid_ = -1;
            return true;
          }
          if (read_file(log()).find("Server is ready", log_before) == std::string::npos) {
            return false;
          }
          const int fd = connect_tcp(port_);
          if (fd >= 0) ::close(fd);
          return fd >= 0;
        },
        kDeadline);
    if (up && pid_ > 0) return true;
    kill(SIGKILL);
    return false;
  }

  const TempDir& dir_;
  int port_ = 0;
  pid_t pid_ = -1;
};

// ---- the bridge ----

json outbound_route(int batch = 64) {
  return {{"name", "orders-out"},      {"direction", "outbound"}, {"queue", "orders"},
          {"subject", "fleet.orders"}, {"stream", "FLEET"},       {"batch", batch}};
}

json inbound_route() {
  return {{"name", "orders-in"},
          {"direction", "inbound"},
          {"queue", "orders.remote"},
          {"subject", "fleet.orders"},
          {"stream", "FLEET"},
          {"consumer", "hostb"},
          {"batch", 64}};
}

// A qbus-bridge process run on the configuration `config` (its status_file set here),
// started and stopped by the test; its output goes to `dir`/`name`.log.
class Bridge {
 public:
  Bridge(const TempDir& dir, const std::string& name, json config)
      : config_path_(dir.file(name + ".json")),
        status_path_(dir.file(name + "-status.json")),
        metrics_path_(dir.file(name + ".prom")),
        metrics_socket_(dir.file(name + "-metrics.sock")),
        log_path_(dir.file(name + ".log")) {
    config["status_file"] = status_path_;
    config["metrics_file"] = metrics_path_;
    if (!config.contains("metrics_listen")) config["metrics_listen"] = "unix:" + metrics_socket_;
    std::ofstream(config_path_) << config.dump(2) << '\n';
  }
  ~Bridge() {
    if (pid_ > 0) (void)end_process(pid_, SIGTERM);
  }
  Bridge(const Bridge&) = delete;
  Bridge& operator=(const Bridge&) = delete;

  void start() { pid_ = start_process({kBridgePath, "--config", config_path_}, log_path_); }
  // SIGTERM; the exit code, or nullopt when it was still running after `limit`.
  std::optional<int> stop(Clock::duration limit = kDeadline) {
    const auto code = end_process(pid_, SIGTERM, limit);
    pid_ = -1;
    return code;
  }
  // Waits for it to exit by itself; its exit code, or nullopt when it still runs after
  // `limit` (then it is killed).
  std::optional<int> wait(Clock::duration limit = kDeadline) {
    const auto code = wait_exit(pid_, limit);
    if (!code) (void)end_process(pid_, SIGKILL);
    pid_ = -1;
    return code;
  }
  void kill9() {
    (void)end_process(pid_, SIGKILL);
    pid_ = -1;
  }
  pid_t pid() const { return pid_; }
  std::string log() const { return read_file(log_path_); }
  const std::string& metrics_path() const { return metrics_path_; }
  // GET /metrics from its endpoint: the whole response, empty when it did not answer.
  std::string scrape() const {
    try {
      return exchange(0, "GET /metrics HTTP/1.1\r\nHost: bridge\r\n\r\n", metrics_socket_);
    } catch (const std::runtime_error&) {
      return {};
    }
  }
  Result status_command() const { return run({kBridgePath, "--config", config_path_, "--status"}); }

  // The status this process wrote last; null when there is none yet.
  json status() const {
    json s = json::parse(read_file(status_path_), nullptr, false);
    if (s.is_discarded() || !s.is_object() || s.value("pid", 0) != pid_) return nullptr;
    if (!s["nats"].is_object() || !s["routes"].is_array()) return nullptr;
    return s;
  }
  // Route `name` in status(); null when absent.
  json route(const std::string& name) const {
    const json s = status();
    if (s.is_null()) return nullptr;
    for (const auto& r : s["routes"])
      if (r.value("name", "") == name) return r;
    return nullptr;
  }
  std::uint64_t counter(const std::string& route_name, const std::string& counter) const {
    const json r = route(route_name);
    return r.is_null() ? 0 : r.value(counter, std::uint64_t{0});
  }
  // Waits until NATS and every route's qbus connection are up.
  bool wait_ready() const {
    return eventually(
        [&] {
          const json s = status();
          if (s.is_null() || !s["nats"].value("connected", false)) return false;
          return std::all_of(s["routes"].begin(), s["routes"].end(),
                             [](const json& r) { return r.value("qbus_connected", false); });
        },
        kDeadline);
  }

 private:
  std::string config_path_;
  std::string status_path_;
  std::string metrics_path_;
  std::string metrics_socket_;
  std::string log_path_;
  pid_t pid_ = -1;
};

// ---- messages ----

// Binary bytes in every payload, and a few payloads large enough for a shared-memory region.
std::string payload_for(int seq) {
  std::string p = "order " + std::to_string(seq) + std::string("\0\xff\n", 3);
  if (seq % 2500 == 1) p.append(100 * 1024, static_cast<char>('a' + seq % 26));
  return p;
}

Client connect(const Daemon& d, const std::string& name) {
  ClientOptions o;
  o.address = d.address();
  o.name = name;
  o.connect_timeout = seconds(30);
  return Client(o);
}

// Sends orders [from, to) to "orders", each with the header seq, and waits until qbusd took
// them all.
void send_orders(Client& c, int from, int to) {
  {
    Client::Batch batch(c);
    for (int i = from; i < to; ++i) {
      SendOptions o;
      o.headers = {{"seq", std::to_string(i)}};
      c.send("orders", payload_for(i), o);
    }
  }
  c.sync();
  ASSERT_EQ(c.send_failures().count, 0u) << c.send_failures().last_message;
}

// The messages that reached B's "orders.remote": how often each seq came, and what was
// wrong with any of them.
class Arrivals {
 public:
  explicit Arrivals(const Daemon& host_b) : client_(connect(host_b, "bridge-test-receiver")) {}

  // Takes whatever has arrived, waiting up to `wait` for the first; how many it took.
  std::size_t take(milliseconds wait) {
    const auto batch = client_.receive_batch("orders.remote", 1000, wait);
    for (const Message& m : batch)
      check(m);
    return batch.size();
  }
  bool wait_unique(std::size_t n, Clock::duration limit = kDeadline) {
    const auto deadline = Clock::now() + limit;
    while (unique() < n && Clock::now() < deadline)
      take(milliseconds(200));
    return unique() >= n;
  }
  // Everything queued now (the bridge's sends before this are all answered).
  void drain() {
    while (take(milliseconds(0)) > 0) {
    }
  }
  std::size_t unique() const { return counts_.size(); }
  std::size_t received() const { return received_; }
  std::size_t duplicates() const { return received_ - counts_.size(); }
  // The seqs of [from, to) that never came, as text (the first 20).
  std::string missing(int from, int to) const {
    std::string out;
    int n = 0;
    for (int i = from; i < to; ++i) {
      if (counts_.contains(i)) continue;
      if (++n <= 20) out += std::to_string(i) + " ";
    }
    return n == 0 ? "" : std::to_string(n) + " missing: " + out;
  }
  const std::vector<std::string>& problems() const { return problems_; }

 private:
  void problem(const std::string& what) {
    if (problems_.size() < 20) problems_.push_back(what);
  }
  std::string header(const Message& m, std::string_view name) {
    const auto v = m.header(name);
    return v ? std::string(*v) : std::string("<none>");
  }
  void check(const Message& m) {
    ++received_;
    const auto seq_text = m.header("seq");
    if (!seq_text) return problem("a message without seq: " + std::string(m.text().substr(0, 40)));
    const int seq = std::stoi(std::string(*seq_text));
    ++counts_[seq];
    const std::string at = "seq " + std::to_string(seq) + ": ";
    if (m.text() != payload_for(seq)) problem(at + "payload differs");
    const std::string id = header(m, "Nats-Msg-Id");
    if (id.empty() || id == "<none>") problem(at + "Nats-Msg-Id " + id);
    if (auto [it, fresh] = ids_.emplace(seq, id); !fresh && it->second != id) {
      problem(at + "Nats-Msg-Id " + id + " after " + it->second);
    }
    if (auto [it, fresh] = seqs_.emplace(id, seq); !fresh && it->second != seq) {
      problem(at + "Nats-Msg-Id " + id + " also on seq " + std::to_string(it->second));
    }
    const std::string queue = header(m, "Qbus-Origin-Queue");
    const std::string host = header(m, "Qbus-Origin-Host");
    const std::string pid = header(m, "Qbus-Origin-Pid");
    const std::string uid = header(m, "Qbus-Origin-Uid");
    if (queue != "orders") problem(at + "Qbus-Origin-Queue " + queue);
    if (host != "hosta") problem(at + "Qbus-Origin-Host " + host);
    if (pid != std::to_string(::getpid())) problem(at + "Qbus-Origin-Pid " + pid);
    if (uid != std::to_string(::getuid())) problem(at + "Qbus-Origin-Uid " + uid);
  }

  Client client_;
  std::map<int, int> counts_;          // seq -> deliveries
  std::map<int, std::string> ids_;     // seq -> Nats-Msg-Id
  std::map<std::string, int> seqs_;    // Nats-Msg-Id -> seq
  std::vector<std::string> problems_;  // the first 20
  std::size_t received_ = 0;
};

std::string join(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& l : lines)
    out += l + "\n";
  return out;
}

// ---- the fixture: NATS, host A with bridge A (outbound), host B with bridge B (inbound) ----

class BridgeTest : public ::testing::Test {
 protected:
  static json config(const Daemon& d, const NatsServer& nats, const std::string& host,
                     const json& route) {
    return {{"qbus", {{"address", d.address()}, {"name", "bridge-" + host}}},
            {"host", host},
            {"nats", {{"url", nats.url()}, {"reconnect_wait_ms", 200}}},
            {"routes", json::array({route})}};
  }
  // Starts everything, bridge A first (it makes the stream bridge B reads), each ready.
  // A host's qbusd on a socket and state directory of the test's own, so that a
  // restart (restart_host) comes back where the bridge and the durable queues expect it.
  DaemonOptions host_options(const std::string& name) const {
    DaemonOptions o;
    o.socket_path = dir_.file(name) + "/qbus.sock";  // the admin socket goes beside it
    o.state_dir = dir_.file(name) + "/state";
    return o;
  }
  void restart_host(std::unique_ptr<Daemon>& host, const std::string& name) {
    host.reset();  // SIGTERM, and waits for the exit
    host = std::make_unique<Daemon>(host_options(name));
  }
  void start_pair(int outbound_batch = 64, json outbound = nullptr) {
    nats_ = std::make_unique<NatsServer>(dir_);
    host_a_ = std::make_unique<Daemon>(host_options("a"));
    host_b_ = std::make_unique<Daemon>(host_options("b"));
    if (outbound.is_null()) outbound = outbound_route(outbound_batch);
    bridge_a_ =
        std::make_unique<Bridge>(dir_, "bridge-a", config(*host_a_, *nats_, "hosta", outbound));
    bridge_a_->start();
    ASSERT_TRUE(bridge_a_->wait_ready()) << bridge_a_->log();
    bridge_b_ = std::make_unique<Bridge>(dir_, "bridge-b",
                                         config(*host_b_, *nats_, "hostb", inbound_route()));
    bridge_b_->start();
    ASSERT_TRUE(bridge_b_->wait_ready()) << bridge_b_->log();
  }
  std::string logs() const {
    std::string out = "--- nats-server:\n" + read_file(nats_->log());
    if (bridge_a_) out += "--- bridge A:\n" + bridge_a_->log();
    if (bridge_b_) out += "--- bridge B:\n" + bridge_b_->log();
    return out;
  }
  // A's "orders" as qbusd's admin socket shows it; an empty object when there is none.
  json orders_queue() const {
    json a = admin_request(*host_a_, {{"request", "queue"}, {"key", "orders"}});
    return a.value("ok", false) ? a["queue"] : json::object();
  }
  // Messages queued in A's "orders" plus those bridge A holds.
  std::int64_t orders_in_qbus() const {
    const json q = orders_queue();
    if (q.empty()) return -1;
    return q.value("depth", std::int64_t{0}) + q.value("in_flight", std::int64_t{0});
  }
  std::int64_t stream_messages() const {
    const json s = jetstream_api(nats_->port(), "$JS.API.STREAM.INFO.FLEET");
    return s.is_object() ? s["state"].value("messages", std::int64_t{-1}) : -1;
  }
  // True once bridge A acked everything in qbus and bridge B acked everything JetStream
  // had for it: all B will ever receive is in "orders.remote" then.
  // Polled every 50 ms: each look is an admin request and a NATS connection.
  bool settled() const {
    const auto deadline = Clock::now() + kDeadline;
    while (Clock::now() < deadline) {
      const json c = jetstream_api(nats_->port(), "$JS.API.CONSUMER.INFO.FLEET.hostb");
      if (orders_in_qbus() == 0 && c.is_object() && c.value("num_pending", -1) == 0 &&
          c.value("num_ack_pending", -1) == 0) {
        return true;
      }
      std::this_thread::sleep_for(milliseconds(50));
    }
    return false;
  }

  TempDir dir_;  // outlives everything below, which goes in reverse order: bridges first
  std::unique_ptr<NatsServer> nats_;
  std::unique_ptr<Daemon> host_a_;
  std::unique_ptr<Daemon> host_b_;
  std::unique_ptr<Bridge> bridge_a_;
  std::unique_ptr<Bridge> bridge_b_;
};

// ---- 1. a round trip, exactly once when nothing fails ----

TEST_F(BridgeTest, RoundTrip) {
  constexpr int kN = 10'000;
  ASSERT_NO_FATAL_FAILURE(start_pair());
  Client sender = connect(*host_a_, "bridge-test-sender");
  ASSERT_NO_FATAL_FAILURE(send_orders(sender, 0, kN));

  Arrivals got(*host_b_);
  ASSERT_TRUE(got.wait_unique(kN)) << got.missing(0, kN) << "\n" << logs();
  ASSERT_TRUE(settled()) << logs();
  got.drain();
  EXPECT_EQ(got.missing(0, kN), "");
  EXPECT_EQ(got.received(), static_cast<std::size_t>(kN)) << "duplicates: " << got.duplicates();
  EXPECT_TRUE(got.problems().empty()) << join(got.problems());
  EXPECT_EQ(stream_messages(), kN);

  // The status file is rewritten every second: wait for the last counts, then ask --status.
  ASSERT_TRUE(
      eventually([&] { return bridge_a_->counter("orders-out", "acked") == kN; }, kDeadline))
      << bridge_a_->status().dump();
  const Result r = bridge_a_->status_command();
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json status = json::parse(r.out, nullptr, false);
  ASSERT_TRUE(status.is_object()) << r.out;
  EXPECT_EQ(status["pid"], bridge_a_->pid());
  EXPECT_EQ(status["nats"]["url"], nats_->url());
  EXPECT_EQ(status["nats"]["connected"], true);
  ASSERT_EQ(status["routes"].size(), 1u);
  const json& out = status["routes"][0];
  EXPECT_EQ(out["name"], "orders-out");
  EXPECT_EQ(out["direction"], "outbound");
  EXPECT_EQ(out["queue"], "orders");
  EXPECT_EQ(out["subject"], "fleet.orders");
  EXPECT_EQ(out["stream"], "FLEET");
  EXPECT_EQ(out["forwarded"], kN);
  EXPECT_EQ(out["acked"], kN);
  EXPECT_EQ(out["retried"], 0);
  EXPECT_EQ(out["failed"], 0);
  EXPECT_EQ(out["qbus_connected"], true);

  ASSERT_TRUE(eventually([&] { return bridge_b_->counter("orders-in", "acked") == kN; }, kDeadline))
      << bridge_b_->status().dump();
  EXPECT_EQ(bridge_b_->counter("orders-in", "forwarded"), static_cast<std::uint64_t>(kN));
  EXPECT_EQ(bridge_b_->counter("orders-in", "retried"), 0u);
  EXPECT_EQ(bridge_b_->counter("orders-in", "failed"), 0u);
  // JetStream holds nothing more for B; A's backlog is its qbus queue, qbusd's to tell.
  const json drained = {{"pending", 0}, {"unacked", 0}};
  EXPECT_TRUE(
      eventually([&] { return bridge_b_->route("orders-in")["backlog"] == drained; }, kDeadline))
      << bridge_b_->status().dump();
  EXPECT_TRUE(out["backlog"]["pending"].is_null()) << out.dump();

  // The same counts for node_exporter's textfile collector, in a file promtool accepts.
  const std::string forwarded_a =
      "qbus_bridge_forwarded_total{route=\"orders-out\","
      "direction=\"outbound\"} " +
      std::to_string(kN) + "\n";
  ASSERT_TRUE(eventually(
      [&] { return read_file(bridge_a_->metrics_path()).find(forwarded_a) != std::string::npos; },
      kDeadline))
      << read_file(bridge_a_->metrics_path());
  const std::string metrics_b = read_file(bridge_b_->metrics_path());
  EXPECT_NE(metrics_b.find("qbus_bridge_acked_total{route=\"orders-in\",direction=\"inbound\"} "),
            std::string::npos)
      << metrics_b;
  EXPECT_NE(metrics_b.find("qbus_bridge_nats_connected 1\n"), std::string::npos) << metrics_b;
  // The same text scraped from its endpoint.
  std::string scraped;
  EXPECT_TRUE(eventually(
      [&] {
        scraped = bridge_a_->scrape();
        return body_of(scraped).find(forwarded_a) != std::string::npos;
      },
      kDeadline))
      << scraped;
  EXPECT_EQ(status_line(scraped), "HTTP/1.1 200 OK") << scraped;
  struct stat st {};
  ASSERT_EQ(::stat(bridge_a_->metrics_path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0644u);
  for (const Bridge* b : {bridge_a_.get(), bridge_b_.get()}) {
    const Result check = run({"/bin/sh", "-c", "promtool check metrics < " + b->metrics_path()});
    EXPECT_EQ(check.exit_code, 0) << check.out << check.err << read_file(b->metrics_path());
  }
}

// ---- 1b. a queue at B that refuses: the batch comes again, the backlog shows in JetStream --

TEST_F(BridgeTest, AFullQueueAtBHoldsTheBacklogInJetStream) {
  constexpr int kN = 100;
  constexpr std::uint32_t kRoom = 10;
  ASSERT_NO_FATAL_FAILURE(start_pair());
  Client receiver = connect(*host_b_, "bridge-test-receiver");
  QueueOptions small;
  small.max_messages = kRoom;
  small.overflow = Overflow::reject;
  receiver.declare("orders.remote", small);
  Client sender = connect(*host_a_, "bridge-test-sender");
  ASSERT_NO_FATAL_FAILURE(send_orders(sender, 0, kN));

  // B fills the queue, is refused, and gives its batches back to JetStream, which keeps
  // the rest for it: pending or delivered and not acked, never lost.
  const auto held_in_jetstream = [&] {
    const json b = bridge_b_->route("orders-in");
    if (b.is_null() || !b["backlog"]["pending"].is_number()) return std::int64_t{-1};
    return b["backlog"]["pending"].get<std::int64_t>() +
           b["backlog"]["unacked"].get<std::int64_t>();
  };
  ASSERT_TRUE(eventually(
      [&] {
        return bridge_b_->counter("orders-in", "retried") > 0 && held_in_jetstream() > 0 &&
               bridge_b_->counter("orders-in", "acked") + held_in_jetstream() == kN;
      },
      kDeadline))
      << bridge_b_->status().dump() << "\n"
      << logs();
  EXPECT_LE(bridge_b_->counter("orders-in", "acked"), kRoom);

  // Taking from the queue makes room; every order arrives.
  Arrivals got(*host_b_);
  EXPECT_TRUE(got.wait_unique(kN)) << got.missing(0, kN) << "\n" << logs();
  EXPECT_TRUE(got.problems().empty()) << join(got.problems());
  const json drained = {{"pending", 0}, {"unacked", 0}};
  EXPECT_TRUE(
      eventually([&] { return bridge_b_->route("orders-in")["backlog"] == drained; }, kDeadline))
      << bridge_b_->status().dump();
}

// ---- 2. NATS away for 10 s: messages wait in qbus, and come once it is back ----

TEST_F(BridgeTest, Outage) {
  constexpr int kN = 100;
  ASSERT_NO_FATAL_FAILURE(start_pair());
  Client sender = connect(*host_a_, "bridge-test-sender");
  Arrivals got(*host_b_);
  ASSERT_NO_FATAL_FAILURE(send_orders(sender, 0, 1));
  ASSERT_TRUE(got.wait_unique(1)) << logs();

  nats_->kill(SIGKILL);
  const auto back_at = Clock::now() + seconds(10);  // the outage's length, not a wait for sync
  ASSERT_TRUE(eventually(
      [&] {
        const json s = bridge_a_->status();
        return !s.is_null() && !s["nats"].value("connected", true);
      },
      kDeadline))
      << bridge_a_->log();
  ASSERT_NO_FATAL_FAILURE(send_orders(sender, 1, 1 + kN));
  // Bridge A took some and failed to publish them: they are held, the rest queued.
  ASSERT_TRUE(
      eventually([&] { return bridge_a_->counter("orders-out", "retried") > 0; }, kDeadline))
      << bridge_a_->log();
  std::this_thread::sleep_until(back_at);
  // Ten seconds on, nothing has left qbus.
  EXPECT_EQ(orders_in_qbus(), kN);
  EXPECT_EQ(got.take(milliseconds(0)), 0u);
  EXPECT_EQ(bridge_a_->counter("orders-out", "acked"), 1u);

  // The same port and store. The consumer's ack of message 0 may be lost with the
  // SIGKILL: JetStream then delivers it again after its ack wait (30 s), which settled()
  // waits for.
  ASSERT_TRUE(nats_->restart()) << read_file(nats_->log());
  EXPECT_TRUE(got.wait_unique(1 + kN)) << got.missing(0, 1 + kN) << "\n" << logs();
  ASSERT_TRUE(settled()) << logs();
  got.drain();
  EXPECT_EQ(got.missing(0, 1 + kN), "");
  EXPECT_TRUE(got.problems().empty()) << join(got.problems());
  // The publishes retried during the outage were deduplicated by their Nats-Msg-Id.
  EXPECT_EQ(stream_messages(), 1 + kN);
  EXPECT_TRUE(
      eventually([&] { return bridge_a_->counter("orders-out", "acked") == 1 + kN; }, kDeadline))
      << bridge_a_->status().dump();
  RecordProperty("duplicates", static_cast<int>(got.duplicates()));
  std::printf("Outage: %zu received, %zu duplicates\n", got.received(), got.duplicates());
}

// ---- 2a. a cluster's URLs, comma-separated: the bridge reaches the one that answers ----

TEST_F(BridgeTest, AListOfUrlsReachesTheServerThatAnswers) {
  nats_ = std::make_unique<NatsServer>(dir_);
  host_a_ = std::make_unique<Daemon>(host_options("a"));
  json c = config(*host_a_, *nats_, "hosta", outbound_route());
  c["nats"]["url"] = "nats://127.0.0.1:" + std::to_string(free_port()) + "," + nats_->url();
  bridge_a_ = std::make_unique<Bridge>(dir_, "bridge-a", c);
  bridge_a_->start();
  ASSERT_TRUE(bridge_a_->wait_ready()) << bridge_a_->log();
  Client sender = connect(*host_a_, "bridge-test-sender");
  ASSERT_NO_FATAL_FAILURE(send_orders(sender, 0, 1));
  EXPECT_TRUE(eventually([&] { return stream_messages() == 1; }, kDeadline)) << logs();
}

// ---- 2b. qbusd restarts on both sides: the bridges reconnect, durable queues keep the rest --

TEST_F(BridgeTest, QbusdRestartsOnBothSides) {
  constexpr int kN = 400;
  json out = outbound_route();
  out["durable_queue"] = true;
  ASSERT_NO_FATAL_FAILURE(start_pair(64, out));
  {
    Client declarer = connect(*host_b_, "bridge-test-declarer");
    QueueOptions durable;
    durable.durable = true;
    declarer.declare("orders.remote", durable);
    Client sender = connect(*host_a_, "bridge-test-sender");
    ASSERT_NO_FATAL_FAILURE(send_orders(sender, 0, kN / 2));
  }
  // Both restart right after the first half was sent: what of it still waits in A's queue
  // (or was held by bridge A) and in B's is journaled; what bridge B held goes back to
  // JetStream. The second half crosses only if both bridges reconnected.
  restart_host(host_a_, "a");
  restart_host(host_b_, "b");
  {
    Client sender = connect(*host_a_, "bridge-test-sender");
    ASSERT_NO_FATAL_FAILURE(send_orders(sender, kN / 2, kN));
  }
  Arrivals got(*host_b_);
  ASSERT_TRUE(got.wait_unique(kN)) << got.missing(0, kN) << "\n" << logs();
  EXPECT_TRUE(got.problems().empty()) << join(got.problems());
  ASSERT_TRUE(settled()) << logs();
  got.drain();
  EXPECT_EQ(got.missing(0, kN), "");
  // JetStream stored each message once, whatever bridge A published again.
  EXPECT_EQ(stream_messages(), kN);
  EXPECT_TRUE(eventually(
      [&] {
        return bridge_a_->route("orders-out").value("qbus_connected", false) &&
               bridge_b_->route("orders-in").value("qbus_connected", false);
      },
      kDeadline));
  RecordProperty("duplicates", static_cast<int>(got.duplicates()));
  std::printf("QbusdRestartsOnBothSides: %zu received, %zu duplicates\n", got.received(),
              got.duplicates());
}

// ---- 3. bridge A SIGKILLed at random moments under load, and nats-server once ----

// `n` distinct points of [from, to), in order: where the kills land.
std::vector<std::size_t> random_points(std::mt19937& rng, std::size_t n, std::size_t from,
                                       std::size_t to) {
  std::set<std::size_t> points;
  std::uniform_int_distribution<std::size_t> pick(from, to - 1);
  while (points.size() < n)
    points.insert(pick(rng));
  return {points.begin(), points.end()};
}

TEST_F(BridgeTest, Crashes) {
  constexpr int kN = 4'000;
  constexpr std::size_t kWindow = 150;  // sent but not yet arrived at B, at most
  constexpr std::size_t kBridgeKills = 20;
  const unsigned seed = std::random_device{}();
  std::mt19937 rng(seed);
  RecordProperty("seed", static_cast<int>(seed));
  // Every kill lands at a random count of arrivals; the middle one takes nats-server too.
  const std::vector<std::size_t> kill_at = random_points(rng, kBridgeKills, 100, kN - 100);
  const std::size_t nats_kill = kBridgeKills / 2;
  ASSERT_NO_FATAL_FAILURE(start_pair(16));
  Client sender = connect(*host_a_, "bridge-test-sender");
  Arrivals got(*host_b_);

  // The sender stays a window ahead of the arrivals, so that each kill lands while
  // messages are on their way through bridge A.
  int sent = 0;
  std::size_t kills = 0;
  std::vector<std::int64_t> in_qbus;  // A's "orders" (queued and held) at each kill
  std::size_t duplicates_before_nats_kill = 0;
  const auto deadline = Clock::now() + 5 * kDeadline;
  while (got.unique() < static_cast<std::size_t>(kN) && Clock::now() < deadline) {
    if (sent < kN && static_cast<std::size_t>(sent) < got.unique() + kWindow) {
      const int upto = std::min(kN, static_cast<int>(got.unique() + kWindow));
      ASSERT_NO_FATAL_FAILURE(send_orders(sender, sent, upto));
      sent = upto;
    }
    got.take(milliseconds(100));
    if (kills < kill_at.size() && got.unique() >= kill_at[kills]) {
      in_qbus.push_back(orders_in_qbus());
      bridge_a_->kill9();
      if (kills == nats_kill) {
        got.drain();
        duplicates_before_nats_kill = got.duplicates();
        nats_->kill(SIGKILL);
        ASSERT_TRUE(nats_->restart()) << read_file(nats_->log());
      }
      bridge_a_->start();
      ++kills;
    }
  }
  EXPECT_EQ(kills, kill_at.size());
  ASSERT_EQ(got.missing(0, kN), "") << "seed " << seed << "\n" << logs();
  ASSERT_TRUE(settled()) << logs();
  got.drain();
  EXPECT_EQ(got.missing(0, kN), "");
  EXPECT_TRUE(got.problems().empty()) << join(got.problems());
  const std::int64_t stored = stream_messages();
  // Messages bridge A held when it was killed, delivered again to its successor.
  const auto redelivered = orders_queue().value("redelivered_total", std::int64_t{-1});
  RecordProperty("redelivered_in_qbus", static_cast<int>(redelivered));
  RecordProperty("duplicates", static_cast<int>(got.duplicates()));
  RecordProperty("stream_messages", static_cast<int>(stored));
  std::string at_kills;
  for (const auto n : in_qbus)
    at_kills += " " + std::to_string(n);
  std::printf(
      "Crashes (seed %u, %zu kills of bridge A, nats-server killed at the %zuth): %zu "
      "received at B, %zu duplicates (%zu before nats-server's kill), %lld in the stream, "
      "%lld redelivered by qbusd; in qbus at the kills:%s\n",
      seed, kills, nats_kill + 1, got.received(), got.duplicates(), duplicates_before_nats_kill,
      static_cast<long long>(stored), static_cast<long long>(redelivered), at_kills.c_str());
  // The dedup window's promise: resends after a kill of bridge A carry the same
  // Nats-Msg-Id, so JetStream stores each message once and B sees none twice. The kill of
  // nats-server can lose the acks of bridge B it had not yet written to its store:
  // JetStream delivers those again (at least once), and B receives them twice.
  EXPECT_EQ(stored, kN);
  EXPECT_EQ(duplicates_before_nats_kill, 0u);
}

// ---- 4. configuration errors: one line, exit 1, no start ----

class BridgeConfigTest : public ::testing::Test {
 protected:
  // An outbound and an inbound route that do not loop.
  json good() const {
    json in = inbound_route();
    in["subject"] = "fleet.remote.>";
    return {{"qbus", {{"address", "unix:" + dir_.file("none.sock")}}},
            {"status_file", dir_.file("status.json")},
            {"nats", {{"url", "nats://127.0.0.1:4222"}}},
            {"routes", json::array({outbound_route(), in})}};
  }
  Result check(const json& config, const std::string& flag = "--check-config") {
    std::ofstream(path_, std::ios::trunc) << config.dump(2) << '\n';
    std::vector<std::string> argv = {kBridgePath, "--config", path_};
    if (!flag.empty()) argv.push_back(flag);
    return run(argv);
  }
  // Exit 1 and exactly one line on stderr, "qbus-bridge: FILE: FIELD: ...", with `needle`.
  void expect_error(const Result& r, const std::string& field, const std::string& needle) {
    EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_TRUE(r.err.ends_with("\n")) << r.err;
    EXPECT_TRUE(r.err.starts_with("qbus-bridge: " + path_ + ": " + field + ": ")) << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
    EXPECT_EQ(r.out, "");
  }
  std::string secret_file(const std::string& name, mode_t mode) {
    const std::string p = dir_.file(name);
    std::ofstream(p) << "s3cret-token\n";
    ::chmod(p.c_str(), mode);
    return p;
  }

  TempDir dir_;
  const std::string path_ = dir_.file("bridge.json");
};

TEST_F(BridgeConfigTest, BadConfig) {
  const Result ok = check(good());
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_EQ(ok.out, path_ + ": OK, 2 routes\n");
  EXPECT_EQ(ok.err, "");

  json unknown = good();
  unknown["routes"][0]["bogus"] = 1;
  expect_error(check(unknown), "routes[0].bogus", "unknown field");
  // The same without --check-config: the bridge does not start.
  expect_error(check(unknown, ""), "routes[0].bogus", "unknown field");
  EXPECT_FALSE(std::ifstream(dir_.file("status.json")).good());

  json open_token = good();
  const std::string token = secret_file("token", 0644);
  open_token["nats"]["token_file"] = token;
  const Result t = check(open_token);
  expect_error(t, "nats.token_file", "chmod 600");
  EXPECT_NE(t.err.find(token), std::string::npos) << t.err;
  json private_token = good();
  private_token["nats"]["token_file"] = secret_file("token600", 0600);
  const Result t600 = check(private_token);
  EXPECT_EQ(t600.exit_code, 0) << t600.err;

  json same_queue = good();
  same_queue["routes"][1]["queue"] = "orders";
  expect_error(check(same_queue), "routes[0] (orders-out) and routes[1] (orders-in)", "loop");

  json wildcard = good();
  wildcard["routes"][1]["subject"] = "fleet.>";
  const Result w = check(wildcard);
  expect_error(w, "routes[0] (orders-out) and routes[1] (orders-in)", "loop");
  EXPECT_NE(w.err.find("fleet.orders"), std::string::npos) << w.err;
}

// A metrics address the bridge cannot bind stops its start with one line naming it.
TEST_F(BridgeTest, AMetricsAddressItCannotBindStopsTheStart) {
  nats_ = std::make_unique<NatsServer>(dir_);
  host_a_ = std::make_unique<Daemon>(host_options("a"));
  json c = config(*host_a_, *nats_, "hosta", outbound_route());
  c["metrics_listen"] = "unix:" + dir_.file("no-such-dir") + "/metrics.sock";
  bridge_a_ = std::make_unique<Bridge>(dir_, "bridge-a", c);
  bridge_a_->start();
  EXPECT_EQ(bridge_a_->wait(), std::optional<int>(1)) << bridge_a_->log();
  EXPECT_NE(bridge_a_->log().find("qbus-bridge: metrics_listen unix:"), std::string::npos)
      << bridge_a_->log();
}

// ---- 5. SIGTERM ----

TEST_F(BridgeTest, Stop) {
  ASSERT_NO_FATAL_FAILURE(start_pair());
  Client sender = connect(*host_a_, "bridge-test-sender");
  Arrivals got(*host_b_);
  ASSERT_NO_FATAL_FAILURE(send_orders(sender, 0, 10));
  ASSERT_TRUE(got.wait_unique(10)) << logs();

  for (auto* bridge : {bridge_a_.get(), bridge_b_.get()}) {
    ASSERT_EQ(bridge->status_command().exit_code, 0);
    EXPECT_EQ(bridge->stop(), std::optional<int>(0)) << bridge->log();
    // Its last status stays behind, and --status says it is not running.
    const Result r = bridge->status_command();
    EXPECT_EQ(r.exit_code, 1) << r.out;
    EXPECT_NE(r.err.find("is qbus-bridge running?"), std::string::npos) << r.err;
  }
}

// SIGTERM while NATS is away and bridge A holds messages it cannot publish: it stops, and
// what it held goes back to the queue.
TEST_F(BridgeTest, StopWhileNatsIsAway) {
  ASSERT_NO_FATAL_FAILURE(start_pair());
  Client sender = connect(*host_a_, "bridge-test-sender");
  nats_->kill(SIGKILL);
  ASSERT_NO_FATAL_FAILURE(send_orders(sender, 0, 10));
  ASSERT_TRUE(eventually([&] { return orders_queue().value("in_flight", 0) > 0; }, kDeadline))
      << bridge_a_->log();
  EXPECT_EQ(bridge_a_->stop(), std::optional<int>(0)) << bridge_a_->log();
  ASSERT_TRUE(eventually(
      [&] {
        const json q = orders_queue();
        return q.value("depth", 0) == 10 && q.value("in_flight", -1) == 0;
      },
      kDeadline))
      << orders_queue().dump();
  EXPECT_EQ(bridge_b_->stop(), std::optional<int>(0)) << bridge_b_->log();
}

// A message NATS can never take (its payload and the bridge's headers over the server's
// max_payload) is given up, not retried forever: the one behind it still arrives.
TEST_F(BridgeTest, AMessageNatsCannotTakeDoesNotBlockTheRoute) {
  ASSERT_NO_FATAL_FAILURE(start_pair());
  Client sender = connect(*host_a_, "bridge-test-sender");
  sender.send_confirmed("orders", std::string(1048576 - 100, 'x'));
  ASSERT_NO_FATAL_FAILURE(send_orders(sender, 0, 1));
  Arrivals got(*host_b_);
  ASSERT_TRUE(got.wait_unique(1)) << logs();
  // failed is counted during the batch's publishes, forwarded after JetStream's ack: one
  // status snapshot may fall between the two.
  ASSERT_TRUE(eventually(
      [&] {
        return bridge_a_->counter("orders-out", "failed") == 1 &&
               bridge_a_->counter("orders-out", "forwarded") == 1;
      },
      kDeadline))
      << bridge_a_->status().dump();
  EXPECT_NE(bridge_a_->log().find("exceeds NATS's max_payload"), std::string::npos)
      << bridge_a_->log();
}

// Subject routes: at most once, so the test publishes until one message is through (what
// comes before both bridges subscribed is dropped), then looks at how it arrived.
TEST_F(BridgeTest, SubjectsCrossWithTheirPrefixMapped) {
  nats_ = std::make_unique<NatsServer>(dir_);
  host_a_ = std::make_unique<Daemon>();
  host_b_ = std::make_unique<Daemon>();
  bridge_a_ = std::make_unique<Bridge>(dir_, "bridge-a",
                                       config(*host_a_, *nats_, "hosta",
                                              {{"name", "sensors-out"},
                                               {"direction", "outbound"},
                                               {"qbus_subject", "sensors.>"},
                                               {"subject", "fleet.hosta.sensors.>"}}));
  bridge_b_ = std::make_unique<Bridge>(dir_, "bridge-b",
                                       config(*host_b_, *nats_, "hostb",
                                              {{"name", "sensors-in"},
                                               {"direction", "inbound"},
                                               {"qbus_subject", "hosta.sensors.>"},
                                               {"subject", "fleet.hosta.sensors.>"}}));
  bridge_a_->start();
  bridge_b_->start();
  ASSERT_TRUE(bridge_a_->wait_ready()) << logs();
  ASSERT_TRUE(bridge_b_->wait_ready()) << logs();
  Client receiver = connect(*host_b_, "subject-receiver");
  Subscription sub = receiver.subscribe_subject("hosta.sensors.>");
  Client sender = connect(*host_a_, "subject-sender");
  std::optional<Message> m;
  const auto deadline = Clock::now() + kDeadline;
  while (!m && Clock::now() < deadline) {
    sender.publish("sensors.kitchen.temp", "21.5", PublishOptions{{{"unit", "C"}}, false, true});
    m = sub.next(milliseconds(200));
  }
  ASSERT_TRUE(m) << logs();
  EXPECT_EQ(m->key(), "hosta.sensors.kitchen.temp");
  EXPECT_EQ(m->text(), "21.5");
  EXPECT_EQ(m->header("unit"), "C");
  EXPECT_EQ(m->header("Qbus-Origin-Host"), "hosta");
  EXPECT_EQ(m->header("Qbus-Origin-Pid"), std::to_string(::getpid()));
  EXPECT_FALSE(m->header("Qbus-Origin-Queue")) << "a subject has no queue";
  EXPECT_TRUE(
      eventually([&] { return bridge_a_->counter("sensors-out", "forwarded") >= 1; }, kDeadline))
      << bridge_a_->status().dump();

  // A NATS subject qbus cannot carry ('+') is counted as failed; the route goes on, on the
  // same connection.
  const std::uint64_t forwarded = bridge_b_->counter("sensors-in", "forwarded");
  ASSERT_TRUE(nats_publish(nats_->port(), "fleet.hosta.sensors.a+b", {}, "bad")) << logs();
  ASSERT_TRUE(nats_publish(nats_->port(), "fleet.hosta.sensors.hall", {}, "good")) << logs();
  std::optional<Message> good;
  while (!good || good->text() != "good") {
    good = sub.next(kDeadline);
    ASSERT_TRUE(good) << logs();
  }
  EXPECT_EQ(good->key(), "hosta.sensors.hall");
  EXPECT_TRUE(eventually(
      [&] {
        return bridge_b_->counter("sensors-in", "failed") == 1 &&
               bridge_b_->counter("sensors-in", "forwarded") > forwarded;
      },
      kDeadline))
      << bridge_b_->status().dump();
  EXPECT_EQ(bridge_b_->log().find("sensors-in: qbus: "), std::string::npos)
      << "no reconnect: " << bridge_b_->log();
}

// A message the stream refuses for its size (its max_msg_size below NATS's max_payload)
// goes to the queue's dead letters rather than being published again forever; the one
// behind it still arrives. The queue, declared by its owner with a dead-letter queue
// before the bridge came, is carried as it is.
TEST_F(BridgeTest, AMessageTheStreamRefusesGoesToTheDeadLetters) {
  nats_ = std::make_unique<NatsServer>(dir_);
  host_a_ = std::make_unique<Daemon>(host_options("a"));
  const json made = jetstream_api(
      nats_->port(), "$JS.API.STREAM.CREATE.FLEET",
      json{{"name", "FLEET"}, {"subjects", {"fleet.orders"}}, {"max_msg_size", 4096}}.dump());
  ASSERT_TRUE(made.is_object() && !made.contains("error")) << made.dump();
  Client owner = connect(*host_a_, "queue-owner");
  QueueOptions q;
  q.message_ids = true;
  q.dead_letter = "orders.dead";
  owner.declare("orders", q);
  bridge_a_ = std::make_unique<Bridge>(dir_, "bridge-a",
                                       config(*host_a_, *nats_, "hosta", outbound_route()));
  bridge_a_->start();
  ASSERT_TRUE(bridge_a_->wait_ready()) << bridge_a_->log();

  owner.send_confirmed("orders", std::string(8000, 'x'));
  ASSERT_NO_FATAL_FAILURE(send_orders(owner, 0, 1));
  EXPECT_TRUE(eventually([&] { return stream_messages() == 1; }, kDeadline)) << logs();
  const auto dead = owner.receive("orders.dead", kDeadline);
  ASSERT_TRUE(dead) << logs();
  EXPECT_EQ(dead->size(), 8000u);
  EXPECT_TRUE(dead->header("qbus-dead-reason")) << "dead letters carry their reason";
  ASSERT_TRUE(eventually(
      [&] {
        return bridge_a_->counter("orders-out", "failed") == 1 &&
               bridge_a_->counter("orders-out", "acked") == 1;
      },
      kDeadline))
      << bridge_a_->status().dump();
  EXPECT_EQ(orders_in_qbus(), 0);
  const std::string log = bridge_a_->log();
  EXPECT_NE(log.find("exceeds the stream's max_msg_size"), std::string::npos) << log;
  EXPECT_NE(log.find("carrying it as it is"), std::string::npos) << log;
}

// SIGTERM while bridge B's sends are parked by qbusd (its queue is full and blocks): the
// bridge still stops at once, and the batch it held goes back to JetStream, so that a
// bridge started later delivers everything.
TEST_F(BridgeTest, StopWhileAFullQueueBlocksTheRoute) {
  constexpr int kN = 100;
  ASSERT_NO_FATAL_FAILURE(start_pair());
  Client receiver = connect(*host_b_, "bridge-test-receiver");
  QueueOptions small;
  small.max_messages = 5;
  small.overflow = Overflow::block;
  receiver.declare("orders.remote", small);
  Client sender = connect(*host_a_, "bridge-test-sender");
  ASSERT_NO_FATAL_FAILURE(send_orders(sender, 0, kN));
  // Full, with bridge B holding a batch it cannot finish.
  ASSERT_TRUE(eventually(
      [&] {
        const json q =
            admin_request(*host_b_, {{"request", "queue"}, {"key", "orders.remote"}})["queue"];
        const json c = jetstream_api(nats_->port(), "$JS.API.CONSUMER.INFO.FLEET.hostb");
        return q.is_object() && q.value("depth", 0) == 5 && c.is_object() &&
               c.value("num_ack_pending", 0) > 0;
      },
      kDeadline))
      << logs();
  EXPECT_EQ(bridge_b_->stop(seconds(20)), std::optional<int>(0)) << bridge_b_->log();

  bridge_b_ = std::make_unique<Bridge>(dir_, "bridge-b2",
                                       config(*host_b_, *nats_, "hostb", inbound_route()));
  bridge_b_->start();
  Arrivals got(*host_b_);
  EXPECT_TRUE(got.wait_unique(kN)) << got.missing(0, kN) << "\n" << logs();
  EXPECT_TRUE(got.problems().empty()) << join(got.problems());
}

// The consumer deleted under bridge B (an operator's mistake, a stream re-created): the
// bridge subscribes afresh, which makes the consumer again, and carries on.
TEST_F(BridgeTest, ADeletedConsumerIsMadeAgain) {
  ASSERT_NO_FATAL_FAILURE(start_pair());
  Client sender = connect(*host_a_, "bridge-test-sender");
  Arrivals got(*host_b_);
  ASSERT_NO_FATAL_FAILURE(send_orders(sender, 0, 1));
  ASSERT_TRUE(got.wait_unique(1)) << logs();
  const json deleted = jetstream_api(nats_->port(), "$JS.API.CONSUMER.DELETE.FLEET.hostb");
  ASSERT_TRUE(deleted.is_object() && deleted.value("success", false)) << deleted.dump();
  ASSERT_NO_FATAL_FAILURE(send_orders(sender, 1, 11));
  // The new consumer starts at the stream's beginning: order 0 may come again.
  EXPECT_TRUE(got.wait_unique(11)) << got.missing(0, 11) << "\n" << logs();
  EXPECT_TRUE(got.problems().empty()) << join(got.problems());
}

// A NATS message with more headers than a qbus sender may set: the bridge keeps those that
// fit a sender's bound (which ones: libnats does not keep their order) and delivers the
// message rather than being refused.
TEST_F(BridgeTest, HeadersBeyondASendersBoundAreCutNotRefused) {
  ASSERT_NO_FATAL_FAILURE(start_pair());
  const auto value = [](int i) { return std::string(200, static_cast<char>('a' + i % 26)); };
  std::vector<std::pair<std::string, std::string>> headers;
  for (int i = 0; i < 40; ++i)
    headers.emplace_back("h" + std::to_string(i), value(i));
  ASSERT_TRUE(nats_publish(nats_->port(), "fleet.orders", headers, "many headers")) << logs();
  Client receiver = connect(*host_b_, "bridge-test-receiver");
  const auto m = receiver.receive("orders.remote", kDeadline);
  ASSERT_TRUE(m) << logs();
  EXPECT_EQ(m->text(), "many headers");
  std::size_t kept = 0;
  std::size_t encoded = 0;
  for (const auto& [k, v] : m->headers()) {
    if (k.starts_with("qbus-")) continue;
    encoded += 1 + k.size() + 2 + v.size();
    ASSERT_TRUE(k.starts_with("h")) << k;
    EXPECT_EQ(v, value(std::stoi(k.substr(1)))) << k;
    ++kept;
  }
  EXPECT_GT(kept, 0u);
  EXPECT_LT(kept, headers.size());
  EXPECT_LE(encoded, 3584u);
  EXPECT_EQ(bridge_b_->counter("orders-in", "failed"), 0u);
}

}  // namespace
}  // namespace qbus::testing
