// qbusd: the qbus broker daemon. Runs in the foreground, logs to stderr, and exits
// non-zero with one clear line when it cannot start.
#include <grp.h>
#include <netdb.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <optional>
#include <string_view>

#include "admin/admin_server.hpp"
#include "admin/metrics_server.hpp"
#include "net/server.hpp"
#include "qbus/config/config.hpp"
#include "qbus/proto/address.hpp"
#include "service/durable.hpp"
#include "service/event_loop.hpp"
#include "service/listen_fds.hpp"
#include "service/log_sinks.hpp"
#include "service/notifier.hpp"
#include "service/reload.hpp"
#include "version.hpp"

namespace {

using qbus::config::Config;

// The command-line settings that win over the config file, at startup and at every reload.
struct Flags {
  std::string socket_path, admin_socket_path, log_level, tcp_listen, bus, state_dir;
  std::string log_format = "auto";  // how lines are written; startup only (not in the file)
};

bool system_instance();

// Flags over the file, then the system service's own defaults: it is a system bus unless
// `bus` says otherwise, and members of the qbus-admin group its package creates may use the
// admin socket unless admin.group says otherwise.
void apply_flags(Config& c, const Flags& f) {
  if (!f.socket_path.empty()) c.socket_path = f.socket_path;
  if (!f.admin_socket_path.empty()) c.admin_socket_path = f.admin_socket_path;
  if (!f.log_level.empty()) c.log_level = f.log_level;
  if (!f.tcp_listen.empty()) c.tcp_listen = f.tcp_listen;
  if (!f.bus.empty()) c.bus = f.bus;
  // Every user on the machine can reach a system broker's socket, only its own user a
  // per-user one's (config/README.md, "bus").
  if (c.bus == "auto") c.bus = system_instance() ? "system" : "user";
  if (!f.state_dir.empty()) c.storage.dir = f.state_dir;
  if (c.storage.dir.empty()) c.storage.dir = qbus::daemon::default_state_dir(system_instance());
  if (c.admin_group.empty() && system_instance() && ::getgrnam("qbus-admin") != nullptr) {
    c.admin_group = "qbus-admin";
  }
}

// Under the system's systemd (INVOCATION_ID is set for every unit it starts, and the system
// manager is PID 1, the parent of its services), or as root, qbusd is the system broker: it
// reads /etc/qbus/qbusd.json when that exists. The service runs as user qbus, so "root"
// alone would miss it; a user's own systemd (`systemctl --user`) also sets INVOCATION_ID but
// is not PID 1, and starts a per-user bus.
bool system_instance() {
  const char* invocation = std::getenv("INVOCATION_ID");
  return ::geteuid() == 0 || (invocation && *invocation && ::getppid() == 1);
}

// A system bus started without a config file reads the system's drop-in policy files at
// startup and on SIGHUP (the bus as flags and the environment decide it; there is no file).
bool system_bus_without_file(const Flags& f) {
  return f.bus == "system" || ((f.bus.empty() || f.bus == "auto") && system_instance());
}

// Where qbusd puts its sockets when neither flags nor config name them: the directory
// systemd made for it (RuntimeDirectory=, /run/qbus for the system service), else the
// per-user default of docs/architecture.md.
std::string default_socket_path() {
  if (const char* dirs = std::getenv("RUNTIME_DIRECTORY"); dirs && *dirs == '/') {
    const std::string_view first = std::string_view(dirs).substr(0, std::strcspn(dirs, ":"));
    return std::string(first) + "/qbus.sock";
  }
  return qbus::proto::default_socket_path();
}

qbus::daemon::ServerOptions server_options(const Config& c) {
  qbus::daemon::ServerOptions o;
  o.socket_path = c.socket_path.empty() ? default_socket_path() : c.socket_path;
  o.socket_mode = c.socket_mode;
  o.limits = qbus::daemon::broker_limits(c);
  o.tcp_listen = c.tcp_listen;
  // Room for the largest fixed part and key on top of the largest payload.
  o.max_body = c.max_payload_bytes + 1024;
  o.max_outbound_bytes = c.max_outbound_bytes;
  o.handshake_timeout_ms = c.handshake_timeout_ms;
  // A quarter of the open-file limit (raised by raise_fd_limit before this) may be region
  // fds on their way to clients; the rest stays for connections, regions and accept.
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY) {
    o.max_fds_in_flight =
        static_cast<std::uint32_t>(std::clamp<rlim_t>(lim.rlim_cur / 4, 16, 1u << 20));
  }
  return o;
}

std::string plural(std::size_t n, const char* what) {
  return std::to_string(n) + " " + what + (n == 1 ? "" : "s");
}

void setup_logging(const std::string& level, const std::string& format) {
  spdlog::set_default_logger(qbus::daemon::make_logger(
      qbus::daemon::parse_log_format(format).value_or(qbus::daemon::LogFormat::automatic), level));
}

// A key older files may carry: it still loads, so that a configuration in /etc never stops
// an upgraded qbusd from starting, but it does nothing, and every load says so.
void warn_obsolete_keys(const Config& c) {
  if (c.region_pool_bytes != 0) {
    spdlog::warn(
        "limits.region_pool_bytes is obsolete and ignored: qbusd no longer allocates region "
        "memory");
  }
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
  const std::uint64_t wanted = std::uint64_t{c.max_connections} + c.max_regions + 64 +
                               qbus::daemon::MemfdBacking::kMaxPendingCloses;
  if (lim.rlim_cur != RLIM_INFINITY && lim.rlim_cur < wanted) {
    // Only debug: the defaults are generous and most hosts never get near them; a broker
    // that does run out logs each refused region or connection.
    spdlog::debug("open-file limit {} is below max_connections + max_regions ({})", lim.rlim_cur,
                  wanted);
  }
}

// What startup settled before it binds anything.
struct Startup {
  Config config;  // the file (or the defaults) with the flags applied
  std::string tcp_token;
  std::shared_ptr<qbus::daemon::TlsServer> tls;  // set: the TCP listener speaks TLS
  std::string config_path;                       // the file read, read again on SIGHUP; empty: none
  std::string source;                            // for messages: the file, or "built-in defaults"
};

// The socket paths the daemon binds when the service manager passes none.
std::string client_socket_path(const Config& c) {
  return c.socket_path.empty() ? default_socket_path() : c.socket_path;
}
std::string admin_socket_path(const Config& c, const std::string& client_path) {
  // By default beside the client socket, wherever that is: two daemons on two sockets
  // never share an admin socket.
  return c.admin_socket_path.empty()
             ? (std::filesystem::path(client_path).parent_path() / "admin.sock").string()
             : c.admin_socket_path;
}

// The address the TCP listener binds (Server::start_tcp makes the same lookup: asio's
// resolver, the first result), without binding: a tcp.listen host that does not resolve
// would otherwise stop startup only once the Unix socket is bound, and --check-config would
// not see it at all.
std::optional<asio::ip::address> listen_address(const std::string& host) {
  asio::error_code ec;
  auto ip = asio::ip::make_address(host, ec);
  if (!ec) return ip;
  asio::io_context io;
  asio::ip::tcp::resolver resolver(io);
  auto results = resolver.resolve(host, "0", ec);
  if (ec || results.empty()) return std::nullopt;
  return results.begin()->endpoint().address();
}

// tcp.*: the token, the address, plain text only where no other host can listen, and the
// TLS files (the context is built here, so that --check-config tries them too). "" or the
// line to fail with.
std::string prepare_tcp(const Config& c, Startup& s) {
  if (c.tcp_token_file.empty()) return "TCP needs a token: set tcp.token_file in the config file";
  std::string why;
  auto t = qbus::config::load_token(c.tcp_token_file, why);
  if (!t) return why;
  s.tcp_token = std::move(*t);
  auto addr = qbus::proto::parse_address("tcp:" + c.tcp_listen, why, true);
  if (!addr) return "tcp.listen: " + why;
  const auto ip = listen_address(addr->host);
  if (!ip) return "tcp.listen: cannot resolve '" + addr->host + "'";
  if (!c.tcp_tls.enabled()) {
    // 0.0.0.0 and :: are every interface, so not loopback either.
    if (!ip->is_loopback() && !c.tcp_allow_plaintext) {
      return "tcp.allow_plaintext: tcp.listen " + c.tcp_listen + " is reachable from other " +
             "hosts and would carry the token and every message in plain text; set " +
             "tcp.tls.certificate and tcp.tls.key, or tcp.allow_plaintext: true";
    }
    return {};
  }
  qbus::daemon::TlsServerConfig tls;
  tls.certificate = c.tcp_tls.certificate;
  tls.client_ca = c.tcp_tls.client_ca;
  auto key = qbus::config::load_private_key(c.tcp_tls.key, why);
  if (!key) return "tcp.tls.key: " + why;
  tls.key_pem = std::move(*key);
  for (const auto& m : c.tcp_tls.clients)
    tls.clients.push_back({m.cn, m.uid, m.gid, m.groups});
  try {
    s.tls = std::make_shared<qbus::daemon::TlsServer>(tls);
  } catch (const std::exception& e) {
    return e.what();
  }
  return {};
}

// Every check startup makes before it binds a socket. `--check-config` runs exactly this
// and startup runs it first, so the two cannot disagree about a configuration. On failure
// prints one line "qbusd: ..." and sets `exit_code` (2: a bad flag, 1: a bad
// configuration), as startup always has.
std::optional<Startup> prepare(std::string config_path, const Flags& flags, int& exit_code) {
  const auto fail = [&](int code, const std::string& line) -> std::optional<Startup> {
    std::cerr << "qbusd: " << line << "\n";
    exit_code = code;
    return std::nullopt;
  };
  if (!flags.socket_path.empty() && flags.socket_path.front() != '/') {
    return fail(2, "--socket must be an absolute path");
  }
  if (!flags.admin_socket_path.empty() && flags.admin_socket_path.front() != '/') {
    return fail(2, "--admin-socket must be an absolute path");
  }
  if (!flags.tcp_listen.empty()) {
    std::string why;
    if (!qbus::proto::parse_address("tcp:" + flags.tcp_listen, why, true)) {
      return fail(2, "--tcp: " + why);
    }
  }

  Startup s;
  s.source = "built-in defaults";
  if (config_path.empty() && system_instance() &&
      std::filesystem::exists(qbus::config::kSystemConfigPath)) {
    config_path = qbus::config::kSystemConfigPath;
  }
  if (!config_path.empty()) {
    auto r = qbus::config::load_file(config_path);
    if (!r.config) return fail(1, r.error);
    s.config = std::move(*r.config);
    s.source = config_path;
  } else if (system_bus_without_file(flags)) {
    // No config file, yet the system's drop-in policy files count: the package ships none,
    // and a drop-in is how a queue is opened to a group on a fresh install.
    auto r = qbus::config::load_dropins(std::string(qbus::config::kSystemPolicyDir));
    if (!r.config) return fail(1, r.error);
    s.config = std::move(*r.config);
    s.source = "built-in defaults and " + std::string(qbus::config::kSystemPolicyDir);
  }
  s.config_path = config_path;
  Config& c = s.config;
  apply_flags(c, flags);

  if (!c.tcp_listen.empty()) {
    if (auto why = prepare_tcp(c, s); !why.empty()) return fail(1, why);
  }
  // The admin socket's start would refuse it, but only after the client socket is bound.
  if (!c.admin_group.empty() && ::getgrnam(c.admin_group.c_str()) == nullptr) {
    return fail(1, "admin.group: no group named '" + c.admin_group + "'");
  }
  // A path the kernel cannot bind (sun_path is 108 bytes with its NUL). The service
  // manager's sockets take their place when it passes them, but a file that only works
  // under socket activation is still a broken file.
  const auto client_path = client_socket_path(c);
  for (const auto& path : {client_path, admin_socket_path(c, client_path)}) {
    if (path.size() >= sizeof(sockaddr_un::sun_path)) {
      return fail(1, "socket path " + path + " is longer than " +
                         std::to_string(sizeof(sockaddr_un::sun_path) - 1) + " bytes");
    }
  }
  return s;
}

// Startup's failures after logging is set up still print one "qbusd: ..." line on stderr,
// like prepare()'s: the service manager shows it whatever the log level.
bool startup_failed(const std::string& line) {
  std::cerr << "qbusd: " << line << "\n";
  return false;
}

// The sockets the service manager passed, or none; false (after its line) when one of
// them is unusable.
bool take_inherited(qbus::daemon::InheritedSockets& inherited) {
  try {
    inherited = qbus::daemon::take_inherited_sockets();
  } catch (const std::exception& e) {
    return startup_failed(e.what());
  }
  return true;
}

// Binds (or takes over) the client socket and the TCP listener.
bool start_server(qbus::daemon::Server& server, qbus::daemon::InheritedSockets& inherited,
                  const Config& config) {
  try {
    if (inherited.main) {
      server.start(std::move(inherited.main));
      spdlog::info("client socket {} passed by the service manager", server.options().socket_path);
      if (!config.socket_path.empty() && config.socket_path != server.options().socket_path) {
        spdlog::warn("socket.path {} is not used: the service manager passed {}",
                     config.socket_path, server.options().socket_path);
      }
    } else {
      server.start();
    }
  } catch (const std::exception& e) {
    return startup_failed(e.what());
  }
  return true;
}

// The queues the configuration declares, and its access policy, are in place before the
// first client can connect.
bool declare_queues(qbus::daemon::Server& server, const Config& config) {
  for (const auto& q : config.queues) {
    std::string text;
    const auto e =
        server.broker().declare_configured(q.key, qbus::daemon::declared_options(q), text);
    if (e != qbus::Errc::ok) return startup_failed("cannot declare queue " + q.key + ": " + text);
  }
  // Before the first client: no operation is judged by anything but the configured policy.
  server.broker().set_policy(qbus::daemon::broker_policy(config));
  if (server.broker().policy()) {
    spdlog::info("policy: {}", qbus::daemon::describe_policy(config));
  }
  return true;
}

// `inherited_admin_fd`: the admin socket systemd passed (FileDescriptorName=admin), or -1.
qbus::daemon::AdminOptions admin_options(const Config& config, const qbus::daemon::Server& server,
                                         int inherited_admin_fd,
                                         const std::string& inherited_path) {
  qbus::daemon::AdminOptions o;
  o.socket_path = admin_socket_path(config, server.options().socket_path);
  if (inherited_admin_fd >= 0 && !inherited_path.empty()) o.socket_path = inherited_path;
  o.socket_mode = config.admin_socket_mode;
  o.group = config.admin_group;
  o.config_json = qbus::config::to_json_text(config, server.options().socket_path, o.socket_path);
  return o;
}

bool start_admin(qbus::daemon::AdminServer& admin, int inherited_admin_fd) {
  try {
    admin.start(inherited_admin_fd);
  } catch (const std::exception& e) {
    return startup_failed(e.what());
  }
  return true;
}

// The started daemon as its event loop sees it: what systemd is told (READY, RELOADING,
// STOPPING and the status line), SIGHUP reloads of the configuration file, and the orderly
// stop on SIGINT or SIGTERM. Lives on run()'s stack while the loop runs; the server and
// admin socket it refers to were built before it and outlive it. Members are declared in
// the order they must be built (and torn down in reverse): the notifier's status line
// reads listening_ and status_note_, the reloader's callbacks use the notifier and the
// hooks, and the signal handlers use all of them.
class Service {
 public:
  Service(asio::io_context& io, qbus::daemon::Server& server, qbus::daemon::AdminServer& admin,
          qbus::daemon::MetricsServer* metrics, Config config, std::string config_path,
          const Flags& flags)
      : io_(io),
        server_(server),
        admin_(admin),
        metrics_(metrics),
        config_(std::move(config)),
        config_path_(std::move(config_path)),
        flags_(flags),
        listening_(listening_text(server, admin, metrics)),
        notifier_(
            io, [this] { return status(); }, [this] { return server_.connection_count() > 0; }),
        hooks_{[this](const Config& c) {
          admin_.update(c.admin_group, qbus::config::to_json_text(c, server_.options().socket_path,
                                                                  admin_.socket_path()));
        }},
        // The file is read and parsed off this thread (a FIFO or a slow file system at the
        // path must not stall the broker); what it gave is applied here, where the broker
        // lives.
        reloader_(
            io, config_path_,
            [this] {
              notifier_.reloading();
              spdlog::info("SIGHUP: reloading {}", reload_source());
            },
            [this](qbus::config::LoadResult r) { reloaded(std::move(r)); }),
        stop_signals_(io, SIGINT, SIGTERM),
        hup_(io, SIGHUP) {
    server_.add_first_client_hook([this] { notifier_.wake(); });
    stop_signals_.async_wait([this](const asio::error_code& ec, int sig) {
      if (!ec) stop(sig);
    });
    wait_hup();
  }
  Service(const Service&) = delete;
  Service& operator=(const Service&) = delete;

  // Runs the event loop until the daemon stopped; the process's exit code.
  int run() {
    spdlog::info("qbusd {} listening on {}", QBUS_VERSION, listening_);
    notifier_.ready();
    try {
      qbus::daemon::run_event_loop(io_, config_.busy_poll_us);
    } catch (const std::exception& e) {
      spdlog::critical("internal error in the event loop: {}", e.what());
      return 1;
    }
    spdlog::info("qbusd stopped");
    return 0;
  }

 private:
  static std::string listening_text(const qbus::daemon::Server& server,
                                    const qbus::daemon::AdminServer& admin,
                                    const qbus::daemon::MetricsServer* metrics) {
    std::string text = server.options().socket_path;
    if (const auto tcp = server.tcp_endpoint(); !tcp.empty()) text += " and tcp " + tcp;
    text += " (admin " + admin.socket_path();
    if (metrics) text += ", metrics " + metrics->endpoint();
    return text + ")";
  }

  // What SIGHUP reads: the config file, or a system bus's drop-ins when it has none.
  std::string reload_source() const {
    return config_path_.empty() ? std::string(qbus::config::kSystemPolicyDir) : config_path_;
  }

  std::string status() const {
    const auto& b = server_.broker();
    return "listening on " + listening_ + "; " + plural(b.peer_count(), "connection") + ", " +
           plural(b.queue_count(), "queue") + status_note_;
  }

  void reloaded(qbus::config::LoadResult r) {
    if (!r.config) {
      spdlog::error("reload failed, the running configuration stays: {}", r.error);
      status_note_ = "; last reload failed: " + r.error;
    } else {
      apply_flags(*r.config, flags_);
      warn_obsolete_keys(*r.config);
      config_ = qbus::daemon::apply_reload(config_, *r.config, server_, hooks_);
      status_note_.clear();
      spdlog::info("configuration reloaded from {}", reload_source());
    }
    notifier_.ready();
  }

  void wait_hup() {
    hup_.async_wait([this](const asio::error_code& ec, int) {
      if (ec) return;
      if (config_path_.empty() && !system_bus_without_file(flags_)) {
        notifier_.reloading();
        spdlog::info("SIGHUP: no configuration file in use; the built-in defaults stay");
        notifier_.ready();
      } else if (!reloader_.request()) {
        spdlog::info("SIGHUP: a reload is in progress; {} is read again after it", reload_source());
      }
      wait_hup();
    });
  }

  // Stops taking work first (signals, reloads, the admin socket), then lets the server
  // close its connections; the loop ends once it has.
  void stop(int sig) {
    spdlog::info("received {}, shutting down", sig == SIGINT ? "SIGINT" : "SIGTERM");
    notifier_.stopping();
    hup_.cancel();
    reloader_.stop();
    admin_.stop();
    if (metrics_) metrics_->stop();
    server_.stop([this] { io_.stop(); });
  }

  asio::io_context& io_;
  qbus::daemon::Server& server_;
  qbus::daemon::AdminServer& admin_;
  qbus::daemon::MetricsServer* metrics_;  // null: no metrics.listen
  Config config_;                         // the configuration in effect; each reload replaces it
  const std::string config_path_;         // the file SIGHUP reads again; empty: none
  const Flags& flags_;                    // they win over the file at every reload too
  const std::string listening_;
  std::string status_note_;  // the outcome of the last reload, while it matters
  qbus::daemon::ServiceNotifier notifier_;
  const qbus::daemon::ReloadHooks hooks_;
  qbus::daemon::ConfigReloader reloader_;
  asio::signal_set stop_signals_;
  asio::signal_set hup_;
};

int run(Startup startup, const Flags& flags) {
  Config config = std::move(startup.config);
  setup_logging(config.log_level, flags.log_format);
  warn_obsolete_keys(config);
  raise_fd_limit(config);
  qbus::daemon::InheritedSockets inherited;
  if (!take_inherited(inherited)) return 1;
  asio::io_context io(1);
  auto options = server_options(config);
  options.tcp_token = std::move(startup.tcp_token);
  options.tls = std::move(startup.tls);
  qbus::storage::StorageStatus storage{config.storage.dir};
  // Declared before the server: it is stopped (what is pending written) after the server,
  // whose broker reports to it, has gone.
  std::unique_ptr<qbus::storage::Journal> journal;
  qbus::daemon::Server server(io, std::move(options));
  if (!start_server(server, inherited, config)) return 1;
  // Durable queues come back before the event loop accepts the first client (connections
  // wait in the listener's backlog meanwhile), and before the configuration declares its
  // own queues.
  journal = qbus::daemon::open_journal(config, server, storage);
  if (journal) {
    journal->start([&io, &server] { asio::post(io, [&server] { server.on_journal_progress(); }); });
  }
  if (!declare_queues(server, config)) return 1;
  if (inherited.admin) {
    spdlog::info("admin socket {} passed by the service manager", inherited.admin_path);
  }
  const int inherited_admin_fd = inherited.admin.release();
  auto admin_opts = admin_options(config, server, inherited_admin_fd, inherited.admin_path);
  admin_opts.storage = &storage;
  qbus::daemon::AdminServer admin(io, server, std::move(admin_opts));
  if (!start_admin(admin, inherited_admin_fd)) return 1;
  std::optional<qbus::daemon::MetricsServer> metrics;
  if (!config.metrics.listen.empty()) {
    metrics.emplace(
        io, server,
        qbus::daemon::MetricsOptions{config.metrics.listen, config.metrics.max_queue_series,
                                     QBUS_VERSION, &storage, &admin.monitor_counters()});
    try {
      metrics->start();
    } catch (const std::exception& e) {
      startup_failed(e.what());
      return 1;
    }
  }
  Service service(io, server, admin, metrics ? &*metrics : nullptr, std::move(config),
                  std::move(startup.config_path), flags);
  return service.run();
}

// Sends SIGHUP to the qbusd at `pid`. Only the signal: the daemon reports the reload itself
// (RELOADING=1 ... READY=1, and its log).
int send_reload(pid_t pid) {
  if (::kill(pid, SIGHUP) != 0) {
    std::cerr << "qbusd: cannot send SIGHUP to process " << pid << ": " << std::strerror(errno)
              << "\n";
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  CLI::App app{"qbusd: the qbus message broker daemon (runs in the foreground)", "qbusd"};
  std::string config_path;
  Flags flags;
  bool check_config = false;
  pid_t reload_pid = 0;
  app.add_option("--config", config_path, "Configuration file (JSON)")->option_text("FILE");
  app.add_option("--socket", flags.socket_path, "Path of the client socket")->option_text("PATH");
  app.add_option("--admin-socket", flags.admin_socket_path, "Path of the admin socket")
      ->option_text("PATH");
  app.add_option("--tcp", flags.tcp_listen,
                 "Also listen on TCP (needs tcp.token_file in the config)")
      ->option_text("HOST:PORT");
  app.add_option("--bus", flags.bus,
                 "system (private namespaces and root by default) or user (open); default: "
                 "system when run as root or by systemd")
      ->option_text("system|user")
      ->check(CLI::IsMember({"system", "user"}));
  app.add_option("--state-dir", flags.state_dir,
                 "Directory of the journal of durable queues (default: /var/lib/qbus for the "
                 "system bus, else $XDG_STATE_HOME/qbus or ~/.local/state/qbus)")
      ->option_text("DIR");
  app.add_option("--log-level", flags.log_level, "trace, debug, info, warn or error")
      ->option_text("LEVEL")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}));
  app.add_option("--log-format", flags.log_format,
                 "auto (journal when stderr is connected to the journal, else text), text, "
                 "json (one object per line on stderr) or journal (native, with QBUS_* fields)")
      ->option_text("FORMAT")
      ->check(CLI::IsMember({"auto", "text", "json", "journal"}));
  app.add_flag("--check-config", check_config, "Validate the configuration and exit");
  // ExecReload= of qbusd.service: a minimal system has no /bin/kill (procps), and the
  // unit must not depend on anything the package does not bring.
  auto* reload_opt =
      app.add_option("--reload", reload_pid,
                     "Ask the qbusd with process ID PID to re-read its configuration "
                     "(sends SIGHUP) and exit")
          ->type_name("PID");
  for (auto* other : {"--config", "--socket", "--admin-socket", "--tcp", "--bus", "--state-dir",
                      "--log-level", "--log-format", "--check-config"}) {
    reload_opt->excludes(other);
  }
  app.set_version_flag("--version", std::string("qbusd ") + QBUS_VERSION);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  if (reload_opt->count() > 0) {
    // 0 and negative numbers would signal process groups.
    if (reload_pid <= 0) {
      std::cerr << "qbusd: --reload: " << reload_pid << " is not a process ID\n";
      return 2;
    }
    return send_reload(reload_pid);
  }

  int exit_code = 0;
  auto startup = prepare(config_path, flags, exit_code);
  if (!startup) return exit_code;
  if (check_config) {
    std::cout << "configuration OK (" << startup->source << ")\n";
    return 0;
  }
  return run(std::move(*startup), flags);
}
