#include "admin.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <vector>

#include "qbus/proto/address.hpp"

namespace qbusctl {
namespace {

using json = nlohmann::json;

constexpr int kTimeoutMs = 30'000;

struct Failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace

std::string admin_socket_path(const AdminCommand& cmd) {
  std::string text = cmd.address;
  if (text.empty()) {
    if (const char* env = std::getenv("QBUS_ADMIN_ADDRESS"); env && *env) text = env;
  }
  if (text.empty() && !cmd.client_address.empty()) {
    // qbusd puts its admin socket beside the client socket unless told otherwise.
    std::string why;
    if (auto a = qbus::proto::parse_address(cmd.client_address, why);
        a && a->kind == qbus::proto::Address::Kind::unix_socket) {
      return a->path.substr(0, a->path.rfind('/') + 1) + "admin.sock";
    }
  }
  if (text.empty()) {
    if (::geteuid() != 0) {
      const auto user = qbus::proto::default_admin_socket_path();
      struct stat st {};
      if (::stat(user.c_str(), &st) == 0) return user;
    }
    return "/run/qbus/admin.sock";
  }
  std::string why;
  auto a = qbus::proto::parse_address(text, why);
  if (!a) throw Failure("bad admin address: " + why);
  if (a->kind != qbus::proto::Address::Kind::unix_socket) {
    throw Failure("the admin socket is a Unix socket: use unix:/path, not " + text);
  }
  return a->path;
}

int connect_admin(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw Failure(std::string("socket: ") + std::strerror(errno));
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (path.size() >= sizeof(sa.sun_path)) {
    ::close(fd);
    throw Failure("admin socket path too long: " + path);
  }
  std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
    const int err = errno;
    ::close(fd);
    std::string text = "cannot connect to the admin socket " + path + ": " + std::strerror(err);
    if (err == ENOENT || err == ECONNREFUSED) text += " (is qbusd running?)";
    if (err == EACCES) text += " (run as root or as a member of the admin group)";
    throw Failure(text);
  }
  return fd;
}

AdminConnection::AdminConnection(std::string path)
    : path_(std::move(path)), fd_(connect_admin(path_)) {}

AdminConnection::~AdminConnection() {
  ::close(fd_);
}

json AdminConnection::ask(const std::string& request_line) {
  const std::string line = request_line + "\n";
  for (std::size_t done = 0; done < line.size();) {
    const ssize_t n = ::send(fd_, line.data() + done, line.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    // A refused peer may be closed on before it finished writing; read the refusal anyway.
    if (n <= 0) break;
    done += static_cast<std::size_t>(n);
  }
  std::size_t eol;
  while ((eol = buffer_.find('\n')) == std::string::npos) {
    pollfd p{fd_, POLLIN, 0};
    const int r = ::poll(&p, 1, kTimeoutMs);
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) throw Failure("no answer from the admin socket " + path_ + " within 30 s");
    char chunk[65536];
    const ssize_t n = ::recv(fd_, chunk, sizeof(chunk), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0)
      throw Failure("the admin socket " + path_ + " closed without an answer (qbusd stopped?)");
    buffer_.append(chunk, static_cast<std::size_t>(n));
  }
  const std::string answer = buffer_.substr(0, eol);
  buffer_.erase(0, eol + 1);
  try {
    return json::parse(answer);
  } catch (const json::exception&) {
    throw Failure("the admin socket " + path_ + " answered something that is not JSON");
  }
}

namespace {

json ask_admin(const std::string& path, const json& request) {
  return AdminConnection(path).ask(request.dump());
}

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) {
    b /= 1024;
    ++u;
  }
  char buf[32];
  if (u == 0) {
    std::snprintf(buf, sizeof(buf), "%.0f B", b);
  } else {
    std::snprintf(buf, sizeof(buf), "%.1f %s", b, units[u]);
  }
  return buf;
}

std::string human_age_ms(std::int64_t ms) {
  char buf[32];
  if (ms <= 0) return "0s";
  if (ms < 1000) {
    std::snprintf(buf, sizeof(buf), "%lldms", static_cast<long long>(ms));
  } else if (ms < 60'000) {
    std::snprintf(buf, sizeof(buf), "%.1fs", static_cast<double>(ms) / 1000);
  } else if (ms < 3'600'000) {
    std::snprintf(buf, sizeof(buf), "%lldm%02llds", static_cast<long long>(ms / 60'000),
                  static_cast<long long>(ms / 1000 % 60));
  } else if (ms < 86'400'000) {
    std::snprintf(buf, sizeof(buf), "%lldh%02lldm", static_cast<long long>(ms / 3'600'000),
                  static_cast<long long>(ms / 60'000 % 60));
  } else {
    std::snprintf(buf, sizeof(buf), "%lldd%02lldh", static_cast<long long>(ms / 86'400'000),
                  static_cast<long long>(ms / 3'600'000 % 24));
  }
  return buf;
}

// Members looked up without asserting: an older or newer broker may lack one.
const json& member(const json& o, const char* key) {
  static const json null;
  if (!o.is_object()) return null;
  auto it = o.find(key);
  return it == o.end() ? null : *it;
}

double number(const json& o, const char* key) {
  const json& v = member(o, key);
  return v.is_number() ? v.get<double>() : 0.0;
}

// Names come from other users' processes: control characters must not reach the
// operator's terminal.
std::string printable(std::string s) {
  for (auto& c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) c = '?';
  }
  return s.empty() ? "-" : s;
}

std::string text_of(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_null()) return "-";
  if (v.is_boolean()) return v.get<bool>() ? "yes" : "no";
  return v.dump();
}

// Columns padded to their widest cell; numbers right-aligned.
void print_table(const std::vector<std::string>& header,
                 const std::vector<std::vector<std::string>>& rows,
                 const std::vector<bool>& right) {
  std::vector<std::size_t> width(header.size());
  for (std::size_t i = 0; i < header.size(); ++i)
    width[i] = header[i].size();
  for (const auto& r : rows)
    for (std::size_t i = 0; i < r.size(); ++i)
      width[i] = std::max(width[i], r[i].size());
  const auto line = [&](const std::vector<std::string>& cells) {
    std::string out;
    for (std::size_t i = 0; i < cells.size(); ++i) {
      const std::string pad(width[i] - cells[i].size(), ' ');
      if (i) out += "  ";
      out += right[i] ? pad + cells[i] : (i + 1 == cells.size() ? cells[i] : cells[i] + pad);
    }
    std::cout << out << "\n";
  };
  line(header);
  for (const auto& r : rows)
    line(r);
}

// A queue's owner: its creator's uid, or the configuration's (null in the answer); "-"
// from a qbusd too old to say.
std::string owner_of(const json& q) {
  if (!q.is_object() || !q.contains("owner")) return "-";
  const json& owner = q["owner"];
  return owner.is_null() ? "config" : text_of(owner);
}

void print_queues(const json& queues) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& q : queues) {
    // in_flight: handed over in acknowledgement mode, not settled ("-" from a qbusd
    // without acknowledgements).
    rows.push_back({printable(text_of(member(q, "key"))), text_of(member(q, "depth")),
                    text_of(member(q, "in_flight")), human_bytes(number(q, "bytes")),
                    text_of(member(q, "max_messages")), human_bytes(number(q, "max_bytes")),
                    text_of(member(q, "overflow")), owner_of(q),
                    text_of(member(q, "waiting_receivers")), text_of(member(q, "enqueued_total")),
                    text_of(member(q, "dequeued_total")), text_of(member(q, "dropped_total")),
                    text_of(member(q, "rejected_total")),
                    number(q, "depth") == 0
                        ? "-"
                        : human_age_ms(static_cast<std::int64_t>(number(q, "oldest_age_ms")))});
  }
  if (rows.empty()) {
    std::cout << "no queues\n";
    return;
  }
  print_table(
      {"KEY", "DEPTH", "INFLIGHT", "BYTES", "MAX", "MAX BYTES", "OVERFLOW", "OWNER", "WAITING",
       "IN", "OUT", "DROPPED", "REJECTED", "OLDEST"},
      rows, {false, true, true, true, true, true, false, true, true, true, true, true, true, true});
}

void print_clients(const json& clients) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& c : clients) {
    std::string transport = text_of(member(c, "transport"));
    if (member(c, "remote").is_string()) transport += " " + text_of(member(c, "remote"));
    rows.push_back(
        {text_of(member(c, "id")), text_of(member(c, "pid")), text_of(member(c, "uid")),
         text_of(member(c, "gid")),
         printable(member(c, "comm").is_string() ? member(c, "comm").get<std::string>() : ""),
         printable(member(c, "name").is_string() ? member(c, "name").get<std::string>() : ""),
         transport, human_age_ms(static_cast<std::int64_t>(number(c, "connected_for_s")) * 1000),
         text_of(member(c, "sent_total")), text_of(member(c, "received_total")),
         text_of(member(c, "inbox_depth"))});
  }
  if (rows.empty()) {
    std::cout << "no clients\n";
    return;
  }
  print_table({"ID", "PID", "UID", "GID", "COMM", "NAME", "TRANSPORT", "CONNECTED", "SENT",
               "RECEIVED", "INBOX"},
              rows, {true, true, true, true, false, false, false, true, true, true, true});
}

void print_regions(const json& regions) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& r : regions) {
    rows.push_back({text_of(member(r, "id")), human_bytes(number(r, "size")),
                    text_of(member(r, "owner_pid")), text_of(member(r, "owner_uid")),
                    text_of(member(r, "refs")), text_of(member(r, "sealed")),
                    text_of(member(r, "key"))});
  }
  if (rows.empty()) {
    std::cout << "no regions\n";
    return;
  }
  print_table({"ID", "SIZE", "OWNER PID", "OWNER UID", "REFS", "SEALED", "KEY"}, rows,
              {true, true, true, true, true, false, false});
}

void print_fields(const std::vector<std::pair<std::string, std::string>>& fields) {
  std::size_t width = 0;
  for (const auto& [k, v] : fields)
    width = std::max(width, k.size());
  for (const auto& [k, v] : fields)
    std::cout << k << ":" << std::string(width - k.size() + 1, ' ') << v << "\n";
}

// Subject subscriptions (publish/subscribe): one row each, with its buffer in the broker
// ("BUFFERED" of "MAX", and bytes) and its counters.
void print_subscriptions(const json& subs) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& s : subs) {
    const json& group = member(s, "group");
    rows.push_back(
        {text_of(member(s, "client")), text_of(member(s, "pid")), text_of(member(s, "uid")),
         printable(member(s, "comm").is_string() ? member(s, "comm").get<std::string>() : ""),
         text_of(member(s, "id")), printable(text_of(member(s, "pattern"))),
         printable(group.is_string() ? group.get<std::string>() : ""), text_of(member(s, "slow")),
         text_of(member(s, "buffered_messages")) + "/" + text_of(member(s, "max_messages")),
         human_bytes(number(s, "buffered_bytes")) + "/" + human_bytes(number(s, "max_bytes")),
         text_of(member(s, "matched")), text_of(member(s, "delivered")),
         text_of(member(s, "dropped"))});
  }
  if (rows.empty()) {
    std::cout << "no subscriptions\n";
    return;
  }
  print_table({"CLIENT", "PID", "UID", "COMM", "ID", "PATTERN", "GROUP", "SLOW", "BUFFERED",
               "BYTES", "MATCHED", "DELIVERED", "DROPPED"},
              rows,
              {true, true, true, false, true, false, false, false, true, true, true, true, true});
}

// Publish/subscribe as a whole: the counters, then the subscribed patterns and the
// retained messages, a table each.
void print_topics(const json& t) {
  print_fields({{"subscriptions", text_of(member(t, "subscriptions"))},
                {"published", text_of(member(t, "published_total"))},
                {"unmatched", text_of(member(t, "unmatched_total"))},
                {"delivered", text_of(member(t, "delivered_total"))},
                {"dropped", text_of(member(t, "dropped_total"))},
                {"disconnected", text_of(member(t, "disconnected_total"))},
                {"retained", text_of(member(t, "retained_messages")) + " (" +
                                 human_bytes(number(t, "retained_bytes")) + ")"}});
  std::vector<std::vector<std::string>> patterns;
  for (const auto& p : member(t, "patterns")) {
    patterns.push_back({printable(text_of(member(p, "pattern"))),
                        text_of(member(p, "subscriptions")), text_of(member(p, "groups"))});
  }
  if (!patterns.empty()) {
    std::cout << "\n";
    print_table({"PATTERN", "SUBSCRIPTIONS", "GROUPS"}, patterns, {false, true, true});
  }
  std::vector<std::vector<std::string>> retained;
  for (const auto& r : member(t, "retained")) {
    retained.push_back({printable(text_of(member(r, "subject"))), human_bytes(number(r, "bytes")),
                        text_of(member(r, "uid")), text_of(member(r, "pid"))});
  }
  if (!retained.empty()) {
    std::cout << "\n";
    print_table({"RETAINED SUBJECT", "BYTES", "UID", "PID"}, retained, {false, true, true, true});
  }
}

void print_queue(const json& q) {
  std::vector<std::pair<std::string, std::string>> fields{
      {"key", printable(text_of(member(q, "key")))},
      {"depth", text_of(member(q, "depth"))},
      {"bytes", human_bytes(number(q, "bytes"))},
      {"max_messages", text_of(member(q, "max_messages"))},
      {"max_bytes", human_bytes(number(q, "max_bytes"))},
      {"overflow", text_of(member(q, "overflow"))},
      {"owner", owner_of(q)},
      {"declared", text_of(member(q, "declared"))},
      {"waiting_receivers", text_of(member(q, "waiting_receivers"))},
      {"blocked_producers", text_of(member(q, "blocked_producers"))},
      {"enqueued_total", text_of(member(q, "enqueued_total"))},
      {"dequeued_total", text_of(member(q, "dequeued_total"))},
      {"dropped_total", text_of(member(q, "dropped_total"))},
      {"rejected_total", text_of(member(q, "rejected_total"))},
      {"oldest_age", number(q, "depth") == 0
                         ? "-"
                         : human_age_ms(static_cast<std::int64_t>(number(q, "oldest_age_ms")))}};
  // Acknowledgements (protocol 2): shown when the qbusd is new enough to report them.
  for (const char* name :
       {"in_flight", "delayed", "acked_total", "redelivered_total", "dead_lettered_total",
        "expired_total", "max_deliveries", "priorities"}) {
    if (q.is_object() && q.contains(name)) fields.emplace_back(name, text_of(member(q, name)));
  }
  if (q.is_object() && q.contains("ttl_ms")) {
    const double ms = number(q, "ttl_ms");
    fields.emplace_back("ttl", ms == 0 ? "none" : human_age_ms(static_cast<std::int64_t>(ms)));
  }
  if (q.is_object() && q.contains("ack_timeout_ms")) {
    const double ms = number(q, "ack_timeout_ms");
    fields.emplace_back("ack_timeout",
                        ms == 0 ? "none" : human_age_ms(static_cast<std::int64_t>(ms)));
  }
  for (const char* flag : {"dead_letter_expired", "single_active_consumer", "message_ids"}) {
    if (q.is_object() && q.value(flag, false)) fields.emplace_back(flag, "yes");
  }
  if (q.is_object() && q.value("durable", false)) {
    const std::string fsync = q.value("fsync", std::string("default"));
    fields.emplace_back("durable", "yes (fsync " + printable(fsync) + ")");
  }
  if (q.is_object() && q.contains("dead_letter")) {
    const json& dl = member(q, "dead_letter");
    fields.emplace_back("dead_letter", dl.is_string() && !dl.get<std::string>().empty()
                                           ? printable(dl.get<std::string>())
                                           : "none");
  }
  // One line per subscribed connection: its credit and what it holds.
  if (q.is_object() && q.contains("subscribers") && q["subscribers"].is_array()) {
    for (const json& sub : q["subscribers"]) {
      const std::string credit = sub.value("ack", false)
                                     ? "prefetch " + text_of(member(sub, "prefetch")) + ", " +
                                           text_of(member(sub, "unacked")) + " unacked"
                                     : "no acknowledgements";
      // A single-active-consumer queue serves one of them; the others stand by.
      const std::string role =
          sub.contains("active") ? (sub.value("active", false) ? ", active" : ", standby") : "";
      fields.emplace_back("subscriber",
                          "client " + text_of(member(sub, "client")) + " (" + credit + role + ")");
    }
  }
  print_fields(fields);
}

void print_stats(const json& s) {
  const auto rate = [&](const char* msgs, const char* bytes) {
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%.0f msg/s, %s/s", s[msgs].get<double>(),
                  human_bytes(s[bytes].get<double>()).c_str());
    return std::string(buf);
  };
  std::vector<std::pair<std::string, std::string>> fields{
      {"uptime", human_age_ms(static_cast<std::int64_t>(number(s, "uptime_s")) * 1000)},
      {"connections", text_of(member(s, "connections"))},
      {"queues", text_of(member(s, "queues"))},
      {"inboxes", text_of(member(s, "inboxes"))},
      {"regions",
       text_of(member(s, "regions")) + " (" + human_bytes(number(s, "region_bytes")) + ")"},
      {"messages in", text_of(member(s, "messages_in_total")) + " (" +
                          human_bytes(number(s, "bytes_in_total")) + ")"},
      {"messages out", text_of(member(s, "messages_out_total")) + " (" +
                           human_bytes(number(s, "bytes_out_total")) + ")"},
      {"rate in", rate("messages_in_per_s", "bytes_in_per_s")},
      {"rate out", rate("messages_out_per_s", "bytes_out_per_s")},
      {"rss", human_bytes(number(s, "rss_bytes"))}};
  // Durable queues: where the journal is, and what the last start recovered.
  if (s.is_object() && s.contains("storage") && s["storage"].is_object()) {
    const json& st = s["storage"];
    const std::string dir = printable(st.value("dir", std::string()));
    if (st.value("available", false)) {
      fields.emplace_back("journal", dir + " (" + human_bytes(number(st, "disk_bytes")) + ")");
    } else {
      fields.emplace_back("journal", "off: " + printable(st.value("error", std::string())));
    }
    if (st.contains("recovery") && st["recovery"].is_object()) {
      const json& r = st["recovery"];
      fields.emplace_back("recovered", text_of(member(r, "messages")) + " messages in " +
                                           text_of(member(r, "queues")) + " queues, " +
                                           text_of(member(r, "milliseconds")) + " ms");
    }
  }
  print_fields(fields);
}

// `delete --pattern`: the broker deletes a bounded number of queues per request and says
// how many matching ones remain, so ask until none do (or a round makes no progress).
// The rounds' answers are summed into one of the same shape.
json delete_matching(const std::string& path, const AdminCommand& cmd) {
  const json request{{"request", "delete"}, {"pattern", cmd.pattern}};
  json total;
  while (true) {
    json answer = ask_admin(path, request);
    if (!answer.is_object() || !member(answer, "ok").is_boolean() ||
        !member(answer, "ok").get<bool>()) {
      return answer;
    }
    if (total.is_null()) {
      total = answer;
    } else {
      // Counts are summed as the integers they are (number() is a double).
      for (const char* count : {"deleted", "dropped"}) {
        const json& n = member(answer, count);
        total[count] = total[count].get<std::uint64_t>() +
                       (n.is_number_unsigned() ? n.get<std::uint64_t>() : 0);
      }
      for (const auto& k : member(answer, "keys"))
        total["keys"].push_back(k);
      total["remaining"] = member(answer, "remaining");
    }
    if (number(answer, "remaining") == 0 || number(answer, "deleted") == 0) return total;
  }
}

void print_done(const AdminCommand& cmd, const json& answer) {
  const auto plural = [](double n, const char* one, const char* many) {
    return text_of(json(static_cast<std::uint64_t>(n))) + " " + (n == 1 ? one : many);
  };
  if (cmd.request == "region-remove") {
    std::cout << "removed named region '" << printable(cmd.key) << "'";
    if (member(answer, "freed").is_boolean() && member(answer, "freed").get<bool>()) {
      std::cout << ": freed\n";
    } else {
      // The key is gone; the memory goes when its last holder lets go.
      std::cout << ": still held by " << plural(number(answer, "handles"), "handle", "handles")
                << " and "
                << plural(number(answer, "message_refs"), "queued message", "queued messages")
                << ", freed when they are released\n";
    }
  } else if (cmd.request == "disconnect") {
    std::cout << "disconnected client " << cmd.id << "\n";
  } else if (cmd.request == "delete" && !cmd.pattern.empty()) {
    if (number(answer, "deleted") == 0) {
      std::cout << "no queue matches '" << printable(cmd.pattern) << "': nothing deleted\n";
    } else {
      std::cout << "deleted " << plural(number(answer, "deleted"), "queue", "queues")
                << " matching '" << printable(cmd.pattern)
                << "': " << plural(number(answer, "dropped"), "message", "messages")
                << " dropped\n";
    }
    if (number(answer, "remaining") != 0) {
      std::cout << plural(number(answer, "remaining"), "matching queue", "matching queues")
                << " remain; run the command again\n";
    }
  } else {
    std::cout << (cmd.request == "purge" ? "purged '" : "deleted '") << cmd.key
              << "': " << text_of(member(answer, "dropped"))
              << (number(answer, "dropped") == 1 ? " message" : " messages") << " dropped\n";
  }
}

}  // namespace

int run_admin(const AdminCommand& cmd) {
  try {
    const std::string path = admin_socket_path(cmd);
    json request{{"request", cmd.request}};
    if (!cmd.key.empty()) request["key"] = cmd.key;
    if (cmd.request == "disconnect") request["id"] = cmd.id;
    if (cmd.request == "policy-check") {
      request["uid"] = cmd.uid;
      request["gids"] = cmd.gids;
      request["op"] = cmd.op;
      if (cmd.to_uid) {
        request["to_uid"] = *cmd.to_uid;
        request["to_gids"] = cmd.to_gids;
      }
    }
    const json answer = cmd.request == "delete" && !cmd.pattern.empty() ? delete_matching(path, cmd)
                                                                        : ask_admin(path, request);
    if (!answer.is_object() || !member(answer, "ok").is_boolean() ||
        !member(answer, "ok").get<bool>()) {
      const json& e = member(answer, "error");
      const std::string code =
          member(e, "code").is_string() ? member(e, "code").get<std::string>() : "unknown";
      const std::string message =
          member(e, "message").is_string() ? member(e, "message").get<std::string>() : "no message";
      if (code == "permission_denied") {
        std::cerr << "qbusctl: access denied by the admin socket " << path << ": " << message
                  << "\n";
      } else {
        std::string what = cmd.request;
        if (!cmd.key.empty()) what += " " + cmd.key;
        if (!cmd.pattern.empty()) what += " --pattern " + cmd.pattern;
        if (cmd.request == "disconnect") what += " " + std::to_string(cmd.id);
        std::cerr << "qbusctl: " << printable(what) << ": " << code << ": " << message << "\n";
      }
      return 1;
    }
    if (cmd.request == "policy-check") {
      const bool allowed = member(answer, "allowed").get<bool>();
      if (cmd.json) {
        std::cout << answer.dump(2) << "\n";
      } else {
        const json& rule = member(answer, "rule");
        std::cout << (allowed ? "allow" : "deny") << ": ";
        if (!member(answer, "policy").get<bool>()) {
          std::cout << "no policy configured\n";
        } else {
          // `by` (the rule's origin, a baseline rule, the default); an older qbusd sends
          // only the rule's index.
          if (answer.contains("by") && answer["by"].is_string()) {
            std::cout << printable(answer["by"].get<std::string>());
          } else if (rule.is_number_unsigned()) {
            std::cout << "policy.rules[" << rule.get<std::uint64_t>() << "]";
          } else {
            std::cout << "the default";
          }
          if (rule.is_number_unsigned() && answer.contains("rule_text")) {
            std::cout << " " << answer["rule_text"].dump();
          }
          // The sender's own uid or root decided a direct message.
          if (answer.contains("builtin")) std::cout << " (no send_direct rule matches)";
          std::cout << "\n";
        }
      }
      if (!std::cout.flush()) return 1;
      return allowed ? 0 : kExitDenied;
    }
    if (cmd.json) {
      std::cout << answer.dump(2) << "\n";
    } else if (cmd.request == "queues") {
      print_queues(member(answer, "queues"));
    } else if (cmd.request == "queue") {
      print_queue(member(answer, "queue"));
    } else if (cmd.request == "clients") {
      print_clients(member(answer, "clients"));
    } else if (cmd.request == "regions") {
      print_regions(member(answer, "regions"));
    } else if (cmd.request == "stats") {
      print_stats(member(answer, "stats"));
    } else if (cmd.request == "topics") {
      print_topics(member(answer, "topics"));
    } else if (cmd.request == "subscriptions") {
      print_subscriptions(member(answer, "subscriptions"));
    } else {
      print_done(cmd, answer);
    }
    return std::cout.flush() ? 0 : 1;
  } catch (const Failure& e) {
    std::cerr << "qbusctl: " << e.what() << "\n";
    return 1;
  } catch (const nlohmann::json::exception& e) {
    std::cerr << "qbusctl: unexpected answer from the admin socket: " << e.what() << "\n";
    return 1;
  }
}

}  // namespace qbusctl
