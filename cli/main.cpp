// qbusctl: the command-line face of qbus. Exit codes: 0 success, 1 error (one line on
// stderr), 2 usage error, 3 recv/request/sub timed out with nothing received. Here:
// parsing, send, declare, request and the admin commands; recv is in recv.cpp, pub and sub
// in pubsub.cpp.
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>
#include <qbus/client.hpp>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <iterator>
#include <optional>
#include <vector>

#include "admin.hpp"
#include "commands.hpp"

namespace {

using qbusctl::add_recv;
using qbusctl::connect;
using qbusctl::file_error;
using qbusctl::Globals;
using qbusctl::kExitError;
using qbusctl::kExitTimeout;
using qbusctl::kExitUsage;
using qbusctl::parse_headers;
using qbusctl::print;
using qbusctl::RecvArgs;
using qbusctl::run_recv;
using qbusctl::UsageError;
using std::chrono::milliseconds;

std::string read_stdin() {
  return std::string((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
}

// Fills `out` from `fd`; false (errno set) on a read error or a file that shrank.
bool read_exactly(int fd, std::span<std::byte> out) {
  std::size_t done = 0;
  while (done < out.size()) {
    const ssize_t n = ::read(fd, out.data() + done, out.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = EIO;
      return false;
    }
    done += static_cast<std::size_t>(n);
  }
  return true;
}

// A file's bytes as a message. Up to the broker's inline limit they travel inline (the
// library may still choose a region above its threshold); larger files are read straight
// into a shared-memory region, so the bytes are copied once, from the page cache. It goes
// to queue `*key` with `to_queue`, or without a key to process `pid` with `to_pid`.
void send_file(qbus::Client& client, const std::string& path, const std::string* key,
               const qbus::SendOptions& to_queue, std::uint32_t pid,
               const qbus::DirectOptions& to_pid) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw qbus::Error(qbus::Errc::io_error, file_error("cannot open", path));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0)
    throw qbus::Error(qbus::Errc::io_error, file_error("cannot stat", path));
  if (!S_ISREG(st.st_mode)) {
    throw qbus::Error(qbus::Errc::invalid_argument, path + " is not a regular file");
  }
  const auto size = static_cast<std::size_t>(st.st_size);
  if (size <= client.session().max_payload) {
    std::string bytes(size, '\0');
    if (!read_exactly(fd, std::as_writable_bytes(std::span(bytes.data(), bytes.size())))) {
      throw qbus::Error(qbus::Errc::io_error, file_error("cannot read", path));
    }
    if (key) {
      client.send(*key, bytes, to_queue);
    } else {
      client.send_to_pid(pid, bytes, to_pid);
    }
    return;
  }
  if (client.session().address.starts_with("tcp:") ||
      client.session().address.starts_with("tls:")) {
    throw qbus::Error(qbus::Errc::payload_too_large,
                      path + " has " + std::to_string(size) + " bytes, over the inline limit of " +
                          std::to_string(client.session().max_payload) +
                          "; larger payloads need a Unix socket (shared memory)");
  }
  auto region = client.allocate_region(size);
  if (!read_exactly(fd, region.data())) {
    throw qbus::Error(qbus::Errc::io_error, file_error("cannot read", path));
  }
  if (key) {
    client.send(*key, std::move(region), to_queue);
  } else {
    client.send_to_pid(pid, std::move(region), to_pid);
  }
}

struct SendArgs {
  std::vector<std::string> args;  // KEY MESSAGE, KEY, MESSAGE (with --pid) or nothing
  long long pid = 0;              // 0: to a queue
  long long wait_ms = 0;
  std::string file;
  std::vector<std::string> headers;  // KEY=VALUE
  // To a queue only; unset: none (the queue's default ttl, at once, priority 0).
  std::optional<long long> ttl_ms;
  std::optional<long long> delay_ms;
  std::optional<int> priority;
};

CLI::App* add_send(CLI::App& app, SendArgs& a) {
  auto* send = app.add_subcommand(
      "send", "Send MESSAGE (stdin when omitted) to queue KEY, or with --pid to a process");
  send->add_option("KEY MESSAGE", a.args, "Queue key, then the message (stdin when omitted)")
      ->expected(0, 2);
  send->add_option("--pid", a.pid, "Send directly to the process with this pid")
      ->option_text("PID")
      ->check(CLI::Range(1LL, 4'294'967'295LL));
  send->add_option("--file", a.file,
                   "Send the bytes of this file (a shared-memory region when over the inline "
                   "limit)")
      ->option_text("PATH");
  send->add_option("--wait", a.wait_ms,
                   "With --pid: wait up to MS for the process to connect (default: 0)")
      ->option_text("MS")
      ->check(CLI::Range(0LL, 2'000'000'000LL));
  send->add_option("--header", a.headers,
                   "A header of the message, KEY=VALUE; repeatable (needs a protocol-2 qbusd)")
      ->option_text("KEY=VALUE")
      ->allow_extra_args(false);  // one KEY=VALUE each time; MESSAGE may follow
  send->add_option("--ttl", a.ttl_ms,
                   "To a queue: once older than MS milliseconds the message is never delivered "
                   "(dropped, or dead-lettered as the queue says); default: the queue's --ttl")
      ->option_text("MS")
      ->check(CLI::Range(0LL, 4'294'967'295LL));
  send->add_option("--delay", a.delay_ms,
                   "To a queue: not deliverable before MS milliseconds from now")
      ->option_text("MS")
      ->check(CLI::Range(0LL, 4'294'967'295LL));
  send->add_option("--priority", a.priority,
                   "To a queue: 0 to 9, higher first, within the queue's levels (declare "
                   "--priorities); default: 0")
      ->option_text("N")
      ->check(CLI::Range(0, 9));
  return send;
}

int run_send(const Globals& g, const SendArgs& a) {
  const bool to_pid = a.pid != 0;
  if (!to_pid && a.args.empty()) throw UsageError("send: give a queue KEY or --pid PID");
  if (to_pid && a.args.size() > 1) throw UsageError("send --pid takes one MESSAGE, not a KEY");
  if (!to_pid && a.wait_ms != 0) throw UsageError("send: --wait goes with --pid");
  if (to_pid && (a.ttl_ms || a.delay_ms || a.priority)) {
    throw UsageError("send --pid: --ttl, --delay and --priority go with a queue KEY only");
  }
  const std::size_t message_at = to_pid ? 0 : 1;
  const auto pid = static_cast<std::uint32_t>(a.pid);
  qbus::Headers headers;
  try {
    headers = parse_headers(a.headers);
  } catch (const UsageError& e) {
    throw UsageError(std::string("send: ") + e.what());
  }
  qbus::SendOptions to_queue{headers, true};
  to_queue.ttl = milliseconds(a.ttl_ms.value_or(0));
  to_queue.delay = milliseconds(a.delay_ms.value_or(0));
  to_queue.priority = static_cast<std::uint8_t>(a.priority.value_or(0));
  const qbus::DirectOptions direct{milliseconds(a.wait_ms), true, headers};
  if (!a.file.empty()) {
    if (a.args.size() > message_at) throw UsageError("send: give a MESSAGE or --file, not both");
    auto client = connect(g);
    send_file(client, a.file, to_pid ? nullptr : &a.args[0], to_queue, pid, direct);
    return 0;
  }
  const std::string payload = a.args.size() > message_at ? a.args[message_at] : read_stdin();
  auto client = connect(g);
  if (to_pid) {
    client.send_to_pid(pid, payload, direct);
  } else {
    client.send(a.args[0], payload, to_queue);
  }
  return 0;
}

struct DeclareArgs {
  std::string key;
  long long max_messages = 0;
  long long max_bytes = 0;
  std::string overflow;  // empty: the broker's default
  std::string dead_letter;
  long long max_deliveries = 0;
  long long ack_timeout_ms = 0;
  bool dead_letter_overflow = false;
  long long ttl_ms = 0;
  int priorities = 0;
  bool dead_letter_expired = false;
  bool single_active_consumer = false;
  bool durable = false;
  std::string fsync;  // empty: the daemon's storage.fsync
  bool message_ids = false;
};

CLI::App* add_declare(CLI::App& app, DeclareArgs& a) {
  auto* declare = app.add_subcommand(
      "declare",
      "Create queue KEY with these options, or check that it has them (options left "
      "out take the broker's defaults)");
  declare->add_option("KEY", a.key, "Queue key")->required();
  declare->add_option("--max-messages", a.max_messages, "Messages it holds at most")
      ->option_text("N")
      ->check(CLI::Range(0LL, 4'294'967'295LL));
  declare->add_option("--max-bytes", a.max_bytes, "Payload bytes it holds at most")
      ->option_text("N")
      ->check(CLI::NonNegativeNumber);
  declare->add_option("--overflow", a.overflow, "What a send to a full queue does")
      ->check(CLI::IsMember({"reject", "drop_oldest", "block"}));
  declare
      ->add_option("--dead-letter", a.dead_letter,
                   "Queue that takes this queue's dead letters: messages nacked to it, past "
                   "--max-deliveries, (--dead-letter-overflow) pushed out by drop_oldest or "
                   "(--dead-letter-expired) past their time to live")
      ->option_text("KEY");
  declare
      ->add_option("--max-deliveries", a.max_deliveries,
                   "Deliveries after which a message that keeps coming back is dead-lettered "
                   "(default: 0, no limit)")
      ->option_text("N")
      ->check(CLI::Range(0LL, 65'535LL));
  declare
      ->add_option("--ack-timeout", a.ack_timeout_ms,
                   "A message received in acknowledgement mode and not settled within MS goes "
                   "back to the queue (default: 0, no timeout)")
      ->option_text("MS")
      ->check(CLI::Range(0LL, 4'294'967'295LL));
  declare->add_flag("--dead-letter-overflow", a.dead_letter_overflow,
                    "With --overflow drop_oldest: dropped messages go to --dead-letter");
  declare
      ->add_option("--ttl", a.ttl_ms,
                   "Time to live of the messages sent without one (send --ttl): older than MS, "
                   "a message is never delivered (default: 0, none)")
      ->option_text("MS")
      ->check(CLI::Range(0LL, 4'294'967'295LL));
  declare
      ->add_option("--priorities", a.priorities,
                   "Priority levels, 0 to 10: higher send --priority is delivered first, "
                   "clamped to the levels (default: 0, one level)")
      ->option_text("N")
      ->check(CLI::Range(0, 10));
  declare->add_flag("--dead-letter-expired", a.dead_letter_expired,
                    "Messages past their time to live go to --dead-letter instead of being "
                    "dropped");
  declare->add_flag("--single-active-consumer", a.single_active_consumer,
                    "One consumer at a time, through a subscription (recv --ack): plain "
                    "receives are refused");
  declare->add_flag("--durable", a.durable,
                    "Journal the queue and its messages in qbusd's state directory: they "
                    "survive a crash or restart of qbusd");
  declare->add_flag("--message-ids", a.message_ids,
                    "Give every message a broker-unique qbus-id header, the same on each "
                    "delivery, for consumers that deduplicate");
  declare
      ->add_option("--fsync", a.fsync,
                   "With --durable, when a confirmed send is answered: once on disk (always), "
                   "after the next periodic fsync (batch), or once written (none) (default: "
                   "the daemon's storage.fsync)")
      ->check(CLI::IsMember({"always", "batch", "none"}));
  return declare;
}

int run_declare(const Globals& g, const DeclareArgs& a) {
  if (a.dead_letter_overflow && a.dead_letter.empty()) {
    throw UsageError("declare: --dead-letter-overflow needs --dead-letter KEY");
  }
  if (a.dead_letter_expired && a.dead_letter.empty()) {
    throw UsageError("declare: --dead-letter-expired needs --dead-letter KEY");
  }
  if (!a.fsync.empty() && !a.durable) throw UsageError("declare: --fsync needs --durable");
  qbus::QueueOptions o;
  o.max_messages = static_cast<std::uint32_t>(a.max_messages);
  o.max_bytes = static_cast<std::uint64_t>(a.max_bytes);
  o.overflow = a.overflow == "reject"        ? qbus::Overflow::reject
               : a.overflow == "drop_oldest" ? qbus::Overflow::drop_oldest
               : a.overflow == "block"       ? qbus::Overflow::block
                                             : qbus::Overflow::broker_default;
  o.dead_letter = a.dead_letter;
  o.max_deliveries = static_cast<std::uint16_t>(a.max_deliveries);
  o.ack_timeout = milliseconds(a.ack_timeout_ms);
  o.dead_letter_overflow = a.dead_letter_overflow;
  o.ttl = milliseconds(a.ttl_ms);
  o.priorities = static_cast<std::uint8_t>(a.priorities);
  o.dead_letter_expired = a.dead_letter_expired;
  o.single_active_consumer = a.single_active_consumer;
  o.durable = a.durable;
  o.message_ids = a.message_ids;
  using Fsync = qbus::QueueOptions::Fsync;
  o.fsync = a.fsync == "always"  ? Fsync::always
            : a.fsync == "batch" ? Fsync::batch
            : a.fsync == "none"  ? Fsync::none
                                 : Fsync::broker_default;
  auto client = connect(g);
  client.declare(a.key, o);
  return 0;
}

struct RequestArgs {
  std::string key;
  std::optional<std::string> message;  // none: stdin
  long long timeout_ms = 30'000;
};

CLI::App* add_request(CLI::App& app, RequestArgs& a) {
  auto* request = app.add_subcommand(
      "request", "Send MESSAGE (stdin when omitted) to queue KEY and print the direct reply");
  request->add_option("KEY", a.key, "Queue key")->required();
  request->add_option("MESSAGE", a.message, "Request text; read from stdin when omitted");
  request
      ->add_option("--timeout", a.timeout_ms, "Milliseconds to wait for the reply (default: 30000)")
      ->option_text("MS")
      ->check(CLI::Range(-1LL, 2'000'000'000LL));
  return request;
}

int run_request(const Globals& g, const RequestArgs& a) {
  const std::string payload = a.message ? *a.message : read_stdin();
  auto client = connect(g);
  auto reply = client.request(a.key, payload, milliseconds(a.timeout_ms));
  if (!reply) {
    std::cerr << "qbusctl: request " << a.key << ": no reply within the timeout\n";
    return kExitTimeout;
  }
  return print(*reply) ? 0 : kExitError;
}

// The admin subcommands: each is one request to the admin socket.
struct AdminArgs {
  qbusctl::AdminCommand command;  // filled by the parser, completed by run_admin_command
  std::vector<CLI::App*> subcommands;
  CLI::App* del = nullptr;           // `delete`, which needs a KEY or a --pattern
  CLI::App* policy_check = nullptr;  // `policy check`, the admin request policy-check
  std::vector<std::string> groups;   // policy check --group, resolved here
  std::string user;                  // policy check --user, resolved here
  CLI::Option* uid = nullptr;        // policy check --uid, to tell it was given
};

void add_admin_commands(CLI::App& app, AdminArgs& a) {
  qbusctl::AdminCommand& admin = a.command;
  for (const auto& [name, help] : std::vector<std::pair<std::string, std::string>>{
           {"queues", "List the queues: depth, bytes, limits, counters (admin socket)"},
           {"clients", "List the connected clients (admin socket)"},
           {"regions", "List the shared-memory regions (admin socket)"},
           {"stats", "Broker-wide counters and rates (admin socket)"},
           {"topics",
            "Publish/subscribe: the subscribed patterns, the retained messages and the "
            "counters (admin socket)"},
           {"subscriptions",
            "List the subject subscriptions: pattern, group, buffer, counters (admin socket)"}}) {
    a.subcommands.push_back(app.add_subcommand(name, help));
  }
  for (const auto& [name, help] : std::vector<std::pair<std::string, std::string>>{
           {"queue", "Show one queue in detail (admin socket)"},
           {"purge", "Drop every message queued in KEY (admin socket)"},
           {"region-remove",
            "Remove the named shared-memory region KEY: the key is forgotten now, the memory "
            "when its last holder lets go (admin socket)"}}) {
    auto* sub = app.add_subcommand(name, help);
    sub->add_option("KEY", admin.key, name == "region-remove" ? "Named region key" : "Queue key")
        ->required();
    a.subcommands.push_back(sub);
  }
  a.del = app.add_subcommand(
      "delete",
      "Delete queue KEY, or every queue whose key matches --pattern: their messages go, "
      "their waiting receivers are told (admin socket)");
  auto* del_key = a.del->add_option("KEY", admin.key, "Queue key");
  a.del
      ->add_option("--pattern", admin.pattern,
                   "Delete every queue whose key matches this glob (*, ?, [...]; quote it "
                   "from the shell)")
      ->option_text("GLOB")
      ->excludes(del_key);
  a.subcommands.push_back(a.del);
  auto* disconnect = app.add_subcommand(
      "disconnect",
      "Disconnect client ID (as qbusctl clients shows it): it is told why, and everything it "
      "held is released (admin socket)");
  disconnect->add_option("ID", admin.id, "Client id")->required();
  a.subcommands.push_back(disconnect);
  // `qbusctl queues --json` as well as `qbusctl --json queues`.
  for (auto* sub : a.subcommands)
    sub->fallthrough();

  auto* policy = app.add_subcommand("policy", "Ask the access policy (admin socket)");
  policy->require_subcommand(1);
  policy->fallthrough();
  a.policy_check = policy->add_subcommand(
      "check",
      "Explain what the running policy decides for a client, sending nothing: allow or deny, "
      "and the rule or the default that decided (exit 0 allow, 4 deny)");
  a.policy_check->fallthrough();
  a.uid = a.policy_check->add_option("--uid", admin.uid, "The client's uid");
  auto* gid = a.policy_check
                  ->add_option("--gid", admin.gids,
                               "A group of the client, repeatable; the first is its primary group")
                  ->option_text("GID");
  a.policy_check
      ->add_option("--user", a.user,
                   "The client by user name instead of --uid and --gid: its uid, primary group "
                   "and supplementary groups as `id NAME` lists them, resolved here")
      ->option_text("NAME")
      ->excludes(a.uid)
      ->excludes(gid);
  a.policy_check
      ->add_option("--group", a.groups,
                   "A group of the client by name, repeatable; resolved here, after the --gids")
      ->option_text("NAME");
  a.policy_check->add_option("--op", admin.op, "The operation")
      ->required()
      ->check(CLI::IsMember({"send", "receive", "declare", "request", "send_direct", "manage"}));
  a.policy_check->add_option("--key", admin.key, "The queue key (the key operations)");
  a.policy_check->add_option("--to-uid", admin.to_uid, "The receiver's uid (send_direct)");
  a.policy_check
      ->add_option("--to-gid", admin.to_gids,
                   "A group of the receiver (send_direct), repeatable; the first is its primary "
                   "group")
      ->option_text("GID");
}

CLI::App* add_monitor(CLI::App& app, qbusctl::MonitorArgs& m) {
  auto* monitor = app.add_subcommand(
      "monitor",
      "Show live traffic as it passes: sends, requests, direct messages, publishes and "
      "deliveries, with time, process, target, size and the payload's first bytes (admin "
      "socket). A monitor that reads too slowly loses events, never slows the bus");
  monitor->add_option("PATTERN", m.pattern,
                      "Show only messages whose queue key or subject matches this glob (*, ?, "
                      "[...]); direct messages match @PID of their target, or @client:ID");
  monitor->add_option("--payload-bytes", m.payload_bytes, "Bytes of each payload to show")
      ->option_text("N (0..1024, default 64)")
      ->check(CLI::Range(0u, 1024u));
  monitor->add_option("--count", m.count, "Exit after N events")
      ->option_text("N")
      ->check(CLI::PositiveNumber);
  monitor->fallthrough();
  return monitor;
}

// The monitor's admin socket, found as the admin commands find it.
int run_monitor_command(const Globals& g, const qbusctl::MonitorArgs& m) {
  qbusctl::AdminCommand where;
  where.address = g.admin_address;
  where.client_address =
      g.address.empty() && std::getenv("QBUS_ADDRESS") ? std::getenv("QBUS_ADDRESS") : g.address;
  where.json = g.json;
  return qbusctl::run_monitor(where, m);
}

int run_top_command(const Globals& g, const qbusctl::TopArgs& t) {
  qbusctl::AdminCommand where;
  where.address = g.admin_address;
  where.client_address =
      g.address.empty() && std::getenv("QBUS_ADDRESS") ? std::getenv("QBUS_ADDRESS") : g.address;
  return qbusctl::run_top(where, t);
}

CLI::App* add_top(CLI::App& app, qbusctl::TopArgs& t) {
  auto* top = app.add_subcommand(
      "top",
      "A live view of queues and clients, busiest first: depths, bytes and rates in messages "
      "per second, refreshed every --interval (admin socket). On a terminal, keys sort it (r "
      "rate, d depth, b bytes, k key, Tab, q quit); otherwise it prints plain text. For "
      "machines, `qbusctl queues --json` and `qbusctl clients --json`");
  top->add_option("--interval", t.interval, "Seconds between refreshes")
      ->option_text("SECONDS (0.1..3600, default 1)")
      ->check(CLI::Validator(
          [](std::string& text) -> std::string {
            char* end = nullptr;
            const double v = std::strtod(text.c_str(), &end);
            if (text.empty() || *end != '\0' || !(v >= 0.1 && v <= 3600)) {
              return "give 0.1 to 3600 seconds, not '" + text + "'";
            }
            return {};
          },
          ""));
  top->add_option("--iterations", t.iterations, "Exit after N refreshes (default 0: no limit)")
      ->option_text("N")
      ->check(CLI::Validator(
          [](std::string& text) -> std::string {
            if (text.empty() || text.find_first_not_of("0123456789") != std::string::npos) {
              return "give a number of refreshes, 0 or more, not '" + text + "'";
            }
            return {};
          },
          ""));
  top->add_option("--sort", t.sort, "The first sort order (keys change it on a terminal)")
      ->option_text("rate|depth|bytes|key (default rate)")
      ->check(CLI::IsMember({"rate", "depth", "bytes", "key", "name"}));
  top->fallthrough();
  return top;
}

// The uid, primary gid and supplementary groups of user `name` into `admin`, the way
// `id NAME` finds them (the passwd entry, then every group naming the user); false when
// this machine does not know the name.
bool resolve_user(const std::string& name, qbusctl::AdminCommand& admin) {
  const passwd* pw = ::getpwnam(name.c_str());
  if (!pw) return false;
  // Copied before getgrouplist, whose lookups may reuse getpwnam's static entry.
  const std::string user = pw->pw_name;
  const uid_t uid = pw->pw_uid;
  const gid_t primary = pw->pw_gid;
  // NGROUPS_MAX on Linux: more than the kernel would give a process anyway.
  constexpr int kMaxGroups = 65536;
  std::vector<gid_t> groups;
  int n = 64;
  while (true) {
    groups.resize(static_cast<std::size_t>(n));
    const int room = n;
    if (::getgrouplist(user.c_str(), primary, groups.data(), &n) >= 0) break;
    if (room >= kMaxGroups) {
      n = room;  // the first kMaxGroups are what a login process would get
      break;
    }
    n = std::min(std::max(n, 2 * room), kMaxGroups);
  }
  groups.resize(static_cast<std::size_t>(n));
  admin.uid = uid;
  admin.gids = {primary};
  for (gid_t g : groups) {
    if (g != primary) admin.gids.push_back(g);
  }
  return true;
}

int run_admin_command(const Globals& g, AdminArgs& a, CLI::App& sub) {
  qbusctl::AdminCommand& admin = a.command;
  if (&sub == a.del && admin.key.empty() && admin.pattern.empty()) {
    std::cerr << "qbusctl: delete: give a queue KEY or --pattern GLOB\nRun 'qbusctl --help' "
                 "for usage.\n";
    return kExitUsage;
  }
  if (&sub == a.policy_check) {
    if (!a.user.empty()) {
      if (!resolve_user(a.user, admin)) {
        std::cerr << "qbusctl: policy check: --user: unknown user '" << a.user
                  << "'\nRun 'qbusctl --help' for usage.\n";
        return kExitUsage;
      }
    } else if (a.uid->count() == 0) {
      std::cerr << "qbusctl: policy check: give --uid or --user\nRun 'qbusctl --help' for "
                   "usage.\n";
      return kExitUsage;
    }
    // send_direct names a receiver, every other operation a key.
    const bool direct = admin.op == "send_direct";
    const char* problem = direct && !admin.to_uid        ? "--op send_direct needs --to-uid"
                          : direct && !admin.key.empty() ? "--op send_direct takes no --key"
                          : !direct && admin.key.empty() ? "--op needs --key"
                          : !direct && (admin.to_uid || !admin.to_gids.empty())
                              ? "--to-uid and --to-gid go with --op send_direct only"
                              : nullptr;
    if (problem) {
      std::cerr << "qbusctl: policy check: " << problem << "\nRun 'qbusctl --help' for usage.\n";
      return kExitUsage;
    }
  }
  for (const auto& name : a.groups) {
    // Resolved by qbusctl, as the config resolves names when it is loaded: the answer is
    // for the ids this machine gives those names now.
    const group* gr = ::getgrnam(name.c_str());
    if (!gr) {
      std::cerr << "qbusctl: policy check: --group: unknown group '" << name
                << "'\nRun 'qbusctl --help' for usage.\n";
      return kExitUsage;
    }
    admin.gids.push_back(gr->gr_gid);
  }
  admin.request = &sub == a.policy_check ? "policy-check" : sub.get_name();
  admin.address = g.admin_address;
  admin.client_address =
      g.address.empty() && std::getenv("QBUS_ADDRESS") ? std::getenv("QBUS_ADDRESS") : g.address;
  admin.json = g.json;
  return qbusctl::run_admin(admin);
}

void add_globals(CLI::App& app, Globals& g) {
  app.add_option("--address", g.address,
                 "Broker address, unix:/path, tcp:HOST:PORT or tls:HOST:PORT (default: "
                 "$QBUS_ADDRESS, then the default socket)")
      ->option_text("ADDR");
  app.add_option("--tls-ca", g.tls_ca,
                 "tls: addresses: CA file the broker's certificate must chain to (default: "
                 "$QBUS_TLS_CA, then the system's trust store)")
      ->option_text("FILE");
  app.add_option("--tls-cert", g.tls_cert,
                 "tls: addresses: this client's certificate file (default: $QBUS_TLS_CERT)")
      ->option_text("FILE");
  app.add_option("--tls-key", g.tls_key,
                 "tls: addresses: the key of --tls-cert (default: $QBUS_TLS_KEY)")
      ->option_text("FILE");
  app.add_option("--admin-address", g.admin_address,
                 "Admin socket, unix:/path (default: $QBUS_ADMIN_ADDRESS, then admin.sock beside "
                 "the broker's socket)")
      ->option_text("ADDR");
  app.add_flag("--json", g.json,
               "Admin commands print the broker's JSON answer; recv and sub print each message "
               "as a JSON object on a line of its own");
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"qbusctl: send, receive, publish and inspect qbus queues and subjects", "qbusctl"};
  app.require_subcommand(1);
  Globals g;
  add_globals(app, g);
  SendArgs send_args;
  CLI::App* send = add_send(app, send_args);
  RecvArgs recv_args;
  CLI::App* recv = add_recv(app, recv_args);
  RequestArgs request_args;
  CLI::App* request = add_request(app, request_args);
  DeclareArgs declare_args;
  CLI::App* declare = add_declare(app, declare_args);
  qbusctl::PubArgs pub_args;
  CLI::App* pub = qbusctl::add_pub(app, pub_args);
  qbusctl::SubArgs sub_args;
  CLI::App* subscribe = qbusctl::add_sub(app, sub_args);
  AdminArgs admin;
  add_admin_commands(app, admin);
  qbusctl::MonitorArgs monitor_args;
  CLI::App* monitor = add_monitor(app, monitor_args);
  qbusctl::TopArgs top_args;
  CLI::App* top = add_top(app, top_args);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "qbusctl: " << e.what() << "\nRun 'qbusctl --help' for usage.\n";
    return kExitUsage;
  }

  for (auto* sub : admin.subcommands) {
    if (sub->parsed()) return run_admin_command(g, admin, *sub);
  }
  if (admin.policy_check->parsed()) return run_admin_command(g, admin, *admin.policy_check);
  if (monitor->parsed()) return run_monitor_command(g, monitor_args);
  if (top->parsed()) return run_top_command(g, top_args);
  try {
    if (send->parsed()) return run_send(g, send_args);
    if (recv->parsed()) return run_recv(g, recv_args);
    if (request->parsed()) return run_request(g, request_args);
    if (declare->parsed()) return run_declare(g, declare_args);
    if (pub->parsed()) return qbusctl::run_pub(g, pub_args);
    if (subscribe->parsed()) return qbusctl::run_sub(g, sub_args);
  } catch (const UsageError& e) {
    std::cerr << "qbusctl: " << e.what() << "\nRun 'qbusctl --help' for usage.\n";
    return kExitUsage;
  } catch (const qbus::Error& e) {
    std::cerr << "qbusctl: " << e.what() << "\n";
    return kExitError;
  }
  return kExitUsage;
}
