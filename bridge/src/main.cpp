// qbus-bridge: carries chosen qbus queues to and from NATS JetStream, at least once
// (docs/bridge.md).
//
//   qbus-bridge --config FILE [--check-config] [--status]
#include <fcntl.h>
#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

#include "bridge_config.hpp"
#include "metrics_http.hpp"
#include "metrics_text.hpp"
#include "nats_link.hpp"
#include "routes.hpp"

namespace {

using qbus::bridge::BridgeConfig;
using qbus::bridge::Direction;
using qbus::bridge::RouteStats;

std::string this_host(const BridgeConfig& c) {
  if (!c.host.empty()) return c.host;
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0) return "unknown";
  return name;
}

// An inbound queue route's backlog in JetStream, as the status shows it; null where the
// bridge cannot know it (outbound routes: the qbus queue's depth is qbusd's to tell).
nlohmann::json backlog_json(qbus::bridge::NatsLink& nats, const qbus::bridge::Route& r) {
  if (r.direction != Direction::inbound || r.queue.empty()) return {{"pending", nullptr}};
  const auto b = qbus::bridge::inbound_backlog(nats, r);
  if (!b) return {{"pending", nullptr}, {"unacked", nullptr}};
  return {{"pending", b->pending}, {"unacked", b->unacked}};
}

nlohmann::json status_json(const BridgeConfig& c, qbus::bridge::NatsLink& nats,
                           const std::vector<std::unique_ptr<RouteStats>>& stats) {
  nlohmann::json routes = nlohmann::json::array();
  for (std::size_t i = 0; i < c.routes.size(); ++i) {
    const auto& r = c.routes[i];
    const RouteStats& s = *stats[i];
    routes.push_back({{"name", r.name},
                      {"backlog", backlog_json(nats, r)},
                      {"direction", r.direction == Direction::outbound ? "outbound" : "inbound"},
                      {"queue", r.queue},
                      {"qbus_subject", r.qbus_subject},
                      {"subject", r.subject},
                      {"stream", r.stream},
                      {"forwarded", s.forwarded.load()},
                      {"acked", s.acked.load()},
                      {"retried", s.retried.load()},
                      {"failed", s.failed.load()},
                      {"qbus_connected", s.qbus_connected.load()}});
  }
  return {{"pid", ::getpid()},
          {"updated_unix_ms", std::chrono::duration_cast<std::chrono::milliseconds>(
                                  std::chrono::system_clock::now().time_since_epoch())
                                  .count()},
          {"nats", {{"url", nats.url()}, {"connected", nats.connected()}}},
          {"routes", routes}};
}

// Replaced whole (a rename), so a reader never sees half of it; `mode` applies to the new
// file whatever the umask. A failure is logged once, until writing works again. Called by
// the main thread only.
void write_atomically(const std::string& path, const std::string& text, mode_t mode) {
  static std::set<std::string> failing;
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  bool ok = fd >= 0 && ::fchmod(fd, mode) == 0 &&
            ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  if (fd >= 0) ok = ::close(fd) == 0 && ok;
  ok = ok && std::rename(tmp.c_str(), path.c_str()) == 0;
  if (ok) {
    failing.erase(path);
    return;
  }
  const int error = errno;
  if (fd >= 0) ::unlink(tmp.c_str());
  if (failing.insert(path).second) spdlog::warn("cannot write {}: {}", path, std::strerror(error));
}

// The status file, and the metrics file and endpoint when there are, from one snapshot.
void write_status(const BridgeConfig& c, qbus::bridge::NatsLink& nats,
                  const std::vector<std::unique_ptr<RouteStats>>& stats,
                  qbus::bridge::MetricsEndpoint* endpoint) {
  const nlohmann::json status = status_json(c, nats, stats);
  write_atomically(c.status_file, status.dump(2) + "\n", 0600);
  if (c.metrics_file.empty() && !endpoint) return;
  std::string metrics = qbus::bridge::metrics_text(status);
  // Counts only, no secret: readable by node_exporter's user.
  if (!c.metrics_file.empty()) write_atomically(c.metrics_file, metrics, 0644);
  if (endpoint) endpoint->publish(std::move(metrics));
}

// --status: the running bridge's last status, refused when it is stale (the bridge writes
// it every second).
int print_status(const BridgeConfig& c) {
  std::ifstream in(c.status_file);
  if (!in) {
    std::cerr << "qbus-bridge: no status in " << c.status_file << " (is qbus-bridge running?)\n";
    return 1;
  }
  std::stringstream text;
  text << in.rdbuf();
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text.str());
  } catch (const nlohmann::json::exception&) {
    std::cerr << "qbus-bridge: the status file " << c.status_file << " is not valid JSON\n";
    return 1;
  }
  const auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
  const auto age = now - j.value("updated_unix_ms", std::int64_t{0});
  std::cout << j.dump(2) << '\n';
  if (age > 10'000 || ::kill(j.value("pid", 0), 0) != 0) {
    std::cerr << "qbus-bridge: the status in " << c.status_file << " is stale (" << age / 1000
              << " s old; is qbus-bridge running?)\n";
    return 1;
  }
  return 0;
}

void run_route(const BridgeConfig& c, const qbus::bridge::Route& r, const std::string& host,
               qbus::bridge::NatsLink& nats, qbus::bridge::StopSignal& stop, RouteStats& s) {
  using namespace qbus::bridge;
  const bool out = r.direction == Direction::outbound;
  if (!r.queue.empty()) {
    out ? run_outbound(c, r, host, nats, stop, s) : run_inbound(c, r, nats, stop, s);
  } else {
    out ? run_subjects_outbound(c, r, host, nats, stop, s)
        : run_subjects_inbound(c, r, nats, stop, s);
  }
}

int run(const BridgeConfig& c) {
  // Signals are taken by this thread alone (sigtimedwait); the route threads inherit the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  // Before anything runs: an address it cannot bind stops the start.
  std::unique_ptr<qbus::bridge::MetricsEndpoint> endpoint;
  if (!c.metrics_listen.empty()) {
    endpoint = std::make_unique<qbus::bridge::MetricsEndpoint>(c.metrics_listen);
    spdlog::info("metrics on {}", endpoint->endpoint());
  }
  qbus::bridge::NatsLink nats(c);
  const std::string host = this_host(c);
  qbus::bridge::StopSignal stop;
  std::vector<std::unique_ptr<RouteStats>> stats;
  std::vector<std::thread> threads;
  std::atomic<std::size_t> running{c.routes.size()};
  for (const auto& r : c.routes) {
    stats.push_back(std::make_unique<RouteStats>());
    RouteStats& s = *stats.back();
    threads.emplace_back([&, r] {
      run_route(c, r, host, nats, stop, s);
      --running;
    });
    const bool out = r.direction == Direction::outbound;
    const std::string local = r.queue.empty() ? "subjects " + r.qbus_subject : "queue " + r.queue;
    spdlog::info("route {}: {} {} {} NATS {}", r.name, out ? "from" : "into", local,
                 out ? "to" : "from", r.subject);
  }
  spdlog::info("qbus-bridge running: {} routes, NATS at {}", c.routes.size(), c.nats.url);
  const timespec second{1, 0};
  while (true) {
    write_status(c, nats, stats, endpoint.get());
    const int sig = sigtimedwait(&signals, nullptr, &second);
    if (sig == SIGTERM || sig == SIGINT) break;
  }
  spdlog::info("stopping: held messages go back to their queues");
  // A route ends after the batch in hand (its waits look at the flag every half second);
  // one still running after the grace is parked in qbusd, and its socket is shut down.
  stop.request();
  const auto grace = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (running > 0 && std::chrono::steady_clock::now() < grace)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  if (running > 0) {
    spdlog::info("{} routes still busy: closing their qbus connections", running.load());
    stop.force();
  }
  for (auto& t : threads)
    t.join();
  write_status(c, nats, stats, endpoint.get());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"qbus-bridge: carries qbus queues to and from NATS JetStream"};
  std::string config_path = "/etc/qbus/bridge.json";
  bool check_only = false;
  bool status = false;
  app.add_option("--config", config_path, "The configuration (default /etc/qbus/bridge.json)");
  app.add_flag("--check-config", check_only, "Check the configuration and exit");
  app.add_flag("--status", status, "Print the running bridge's counts per route and exit");
  CLI11_PARSE(app, argc, argv);

  auto logger = spdlog::stderr_color_mt("qbus-bridge");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("%^%l%$: %v");

  BridgeConfig config;
  try {
    config = qbus::bridge::load_bridge_config(
        config_path, status ? qbus::bridge::Secrets::skip : qbus::bridge::Secrets::read);
  } catch (const qbus::bridge::BridgeConfigError& e) {
    std::cerr << "qbus-bridge: " << e.what() << '\n';
    return 1;
  }
  if (check_only) {
    std::cout << config_path << ": OK, " << config.routes.size() << " routes\n";
    return 0;
  }
  if (status) return print_status(config);
  try {
    return run(config);
  } catch (const std::exception& e) {
    std::cerr << "qbus-bridge: " << e.what() << '\n';
    return 1;
  }
}
