// qbusd: the qbus broker daemon. Runs in the foreground, logs to stderr, and exits
// non-zero with one clear line when it cannot start.
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <iostream>

#include "net/server.hpp"
#include "qbus/config/config.hpp"
#include "qbus/proto/address.hpp"
#include "version.hpp"

namespace {

using qbus::config::Config;

qbus::daemon::ServerOptions server_options(const Config& c) {
  qbus::daemon::ServerOptions o;
  o.socket_path = c.socket_path.empty() ? qbus::proto::default_socket_path() : c.socket_path;
  o.socket_mode = c.socket_mode;
  o.limits.max_payload = c.max_payload_bytes;
  o.limits.queue_defaults = {c.queue_defaults.max_messages, c.queue_defaults.max_bytes,
                             c.queue_defaults.overflow};
  o.limits.max_queues = c.max_queues;
  o.limits.max_connections = c.max_connections;
  o.limits.uid_max_connections = c.uid_max_connections;
  o.limits.uid_max_queued_bytes = c.uid_max_queued_bytes;
  o.limits.uid_max_queued_messages = c.uid_max_queued_messages;
  o.limits.max_waiting_receives = c.max_waiting_receives;
  o.limits.max_receive_batch = c.max_receive_batch;
  o.limits.inbox = {c.inbox.max_messages, c.inbox.max_bytes, c.inbox.overflow};
  o.limits.max_pending_requests = c.max_pending_requests;
  o.limits.max_parked_sends = c.max_parked_sends;
  o.limits.regions = {c.max_region_bytes, c.uid_max_region_bytes, c.uid_max_regions, c.max_regions};
  o.tcp_listen = c.tcp_listen;
  // Room for the largest fixed part and key on top of the largest payload.
  o.max_body = c.max_payload_bytes + 1024;
  o.max_outbound_bytes = c.max_outbound_bytes;
  o.handshake_timeout_ms = c.handshake_timeout_ms;
  return o;
}

void setup_logging(const std::string& level) {
  auto logger =
      std::make_shared<spdlog::logger>("qbusd", std::make_shared<spdlog::sinks::stderr_sink_st>());
  // journald adds its own timestamps; elsewhere we add ours.
  logger->set_pattern(std::getenv("JOURNAL_STREAM") ? "<%l> %v" : "%Y-%m-%d %H:%M:%S.%e %l %v");
  logger->set_level(spdlog::level::from_str(level));
  logger->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(logger);
}

// Every connection and every live region holds an fd; the soft limit of 1024 most systems
// start us with is far below max_connections + max_regions. (The fds we pass to clients
// go through select()-free code only, so a high limit costs nothing.)
void raise_fd_limit(const Config& c) {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) return;
  if (lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &lim);
  }
  const std::uint64_t wanted = std::uint64_t{c.max_connections} + c.max_regions + 64;
  if (lim.rlim_cur != RLIM_INFINITY && lim.rlim_cur < wanted) {
    // Only debug: the defaults are generous and most hosts never get near them; a broker
    // that does run out logs each refused region or connection.
    spdlog::debug("open-file limit {} is below max_connections + max_regions ({})", lim.rlim_cur,
                  wanted);
  }
}

int run(const Config& config, std::string tcp_token) {
  setup_logging(config.log_level);
  raise_fd_limit(config);
  asio::io_context io(1);
  auto options = server_options(config);
  options.tcp_token = std::move(tcp_token);
  qbus::daemon::Server server(io, std::move(options));
  try {
    server.start();
  } catch (const std::exception& e) {
    std::cerr << "qbusd: " << e.what() << "\n";
    return 1;
  }
  for (const auto& q : config.queues) {
    std::string text;
    const auto e = server.broker().declare(
        q.key, {q.settings.max_messages, q.settings.max_bytes, q.settings.overflow}, text);
    if (e != qbus::Errc::ok) {
      std::cerr << "qbusd: cannot declare queue " << q.key << ": " << text << "\n";
      return 1;
    }
  }

  asio::signal_set stop_signals(io, SIGINT, SIGTERM);
  asio::signal_set hup(io, SIGHUP);
  stop_signals.async_wait([&](const asio::error_code& ec, int sig) {
    if (ec) return;
    spdlog::info("received {}, shutting down", sig == SIGINT ? "SIGINT" : "SIGTERM");
    sd_notify(0, "STOPPING=1");
    hup.cancel();
    server.stop([&] { io.stop(); });
  });
  std::function<void()> wait_hup = [&] {
    hup.async_wait([&](const asio::error_code& ec, int) {
      if (ec) return;
      spdlog::warn("SIGHUP: configuration reload is not supported by this version; ignored");
      wait_hup();
    });
  };
  wait_hup();

  std::string listening = server.options().socket_path;
  if (const auto tcp = server.tcp_endpoint(); !tcp.empty()) listening += " and tcp " + tcp;
  spdlog::info("qbusd {} listening on {}", QBUS_VERSION, listening);
  sd_notifyf(0, "READY=1\nSTATUS=listening on %s\nMAINPID=%lu", listening.c_str(),
             static_cast<unsigned long>(::getpid()));
  try {
    io.run();
  } catch (const std::exception& e) {
    spdlog::critical("internal error in the event loop: {}", e.what());
    return 1;
  }
  spdlog::info("qbusd stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  CLI::App app{"qbusd: the qbus message broker daemon (runs in the foreground)", "qbusd"};
  std::string config_path, socket_path, log_level, tcp_listen;
  bool check_config = false;
  app.add_option("--config", config_path, "Configuration file (JSON)")->option_text("FILE");
  app.add_option("--socket", socket_path, "Path of the client socket")->option_text("PATH");
  app.add_option("--tcp", tcp_listen, "Also listen on TCP (needs tcp.token_file in the config)")
      ->option_text("HOST:PORT");
  app.add_option("--log-level", log_level, "trace, debug, info, warn or error")
      ->option_text("LEVEL")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}));
  app.add_flag("--check-config", check_config, "Validate the configuration and exit");
  app.set_version_flag("--version", std::string("qbusd ") + QBUS_VERSION);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  Config config;
  std::string source = "built-in defaults";
  if (config_path.empty() && ::geteuid() == 0 &&
      std::filesystem::exists(qbus::config::kSystemConfigPath)) {
    config_path = qbus::config::kSystemConfigPath;
  }
  if (!config_path.empty()) {
    auto r = qbus::config::load_file(config_path);
    if (!r.config) {
      std::cerr << "qbusd: " << r.error << "\n";
      return 1;
    }
    config = std::move(*r.config);
    source = config_path;
  }
  if (!socket_path.empty()) {
    if (socket_path.front() != '/') {
      std::cerr << "qbusd: --socket must be an absolute path\n";
      return 2;
    }
    config.socket_path = socket_path;
  }
  if (!log_level.empty()) config.log_level = log_level;
  if (!tcp_listen.empty()) {
    std::string why;
    if (!qbus::proto::parse_address("tcp:" + tcp_listen, why, true)) {
      std::cerr << "qbusd: --tcp: " << why << "\n";
      return 2;
    }
    config.tcp_listen = tcp_listen;
  }
  std::string token;
  if (!config.tcp_listen.empty()) {
    if (config.tcp_token_file.empty()) {
      std::cerr << "qbusd: TCP needs a token: set tcp.token_file in the config file\n";
      return 1;
    }
    std::string why;
    auto t = qbus::config::load_token(config.tcp_token_file, why);
    if (!t) {
      std::cerr << "qbusd: " << why << "\n";
      return 1;
    }
    token = std::move(*t);
  }

  if (check_config) {
    std::cout << "configuration OK (" << source << ")\n";
    return 0;
  }
  return run(config, std::move(token));
}
