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

std::string resolve_admin_path(const AdminCommand& cmd) {
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

// One request line out, one answer line back.
json ask_admin(const std::string& path, const json& request) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw Failure(std::string("socket: ") + std::strerror(errno));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (path.size() >= sizeof(sa.sun_path)) throw Failure("admin socket path too long: " + path);
  std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
    const int err = errno;
    std::string text = "cannot connect to the admin socket " + path + ": " + std::strerror(err);
    if (err == ENOENT || err == ECONNREFUSED) text += " (is qbusd running?)";
    if (err == EACCES) text += " (run as root or as a member of the admin group)";
    throw Failure(text);
  }
  const std::string line = request.dump() + "\n";
  for (std::size_t done = 0; done < line.size();) {
    const ssize_t n = ::send(fd, line.data() + done, line.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    // A refused peer may be closed on before it finished writing; read the refusal anyway.
    if (n <= 0) break;
    done += static_cast<std::size_t>(n);
  }
  std::string answer;
  char buf[65536];
  while (answer.find('\n') == std::string::npos) {
    pollfd p{fd, POLLIN, 0};
    const int r = ::poll(&p, 1, kTimeoutMs);
    if (r == 0) throw Failure("no answer from the admin socket " + path + " within 30 s");
    if (r < 0 && errno == EINTR) continue;
    const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw Failure("the admin socket " + path + " closed without an answer");
    answer.append(buf, static_cast<std::size_t>(n));
  }
  answer.resize(answer.find('\n'));
  try {
    return json::parse(answer);
  } catch (const json::parse_error&) {
    throw Failure("the admin socket " + path + " answered something that is not JSON");
  }
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

void print_queues(const json& queues) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& q : queues) {
    rows.push_back(
        {q["key"].get<std::string>(), text_of(q["depth"]), human_bytes(q["bytes"].get<double>()),
         text_of(q["max_messages"]), human_bytes(q["max_bytes"].get<double>()),
         text_of(q["overflow"]), text_of(q["waiting_receivers"]), text_of(q["enqueued_total"]),
         text_of(q["dequeued_total"]), text_of(q["dropped_total"]), text_of(q["rejected_total"]),
         q["depth"] == 0 ? "-" : human_age_ms(q["oldest_age_ms"].get<std::int64_t>())});
  }
  if (rows.empty()) {
    std::cout << "no queues\n";
    return;
  }
  print_table({"KEY", "DEPTH", "BYTES", "MAX", "MAX BYTES", "OVERFLOW", "WAITING", "IN", "OUT",
               "DROPPED", "REJECTED", "OLDEST"},
              rows, {false, true, true, true, true, false, true, true, true, true, true, true});
}

void print_clients(const json& clients) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& c : clients) {
    std::string transport = c["transport"].get<std::string>();
    if (c.contains("remote")) transport += " " + c["remote"].get<std::string>();
    rows.push_back({text_of(c["id"]), text_of(c["pid"]), text_of(c["uid"]), text_of(c["gid"]),
                    c["comm"].get<std::string>().empty() ? "-" : c["comm"].get<std::string>(),
                    c["name"].get<std::string>().empty() ? "-" : c["name"].get<std::string>(),
                    transport, human_age_ms(c["connected_for_s"].get<std::int64_t>() * 1000),
                    text_of(c["sent_total"]), text_of(c["received_total"]),
                    text_of(c["inbox_depth"])});
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
    rows.push_back({text_of(r["id"]), human_bytes(r["size"].get<double>()), text_of(r["owner_pid"]),
                    text_of(r["owner_uid"]), text_of(r["refs"]), text_of(r["sealed"]),
                    text_of(r["key"])});
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

void print_queue(const json& q) {
  print_fields({{"key", q["key"].get<std::string>()},
                {"depth", text_of(q["depth"])},
                {"bytes", human_bytes(q["bytes"].get<double>())},
                {"max_messages", text_of(q["max_messages"])},
                {"max_bytes", human_bytes(q["max_bytes"].get<double>())},
                {"overflow", text_of(q["overflow"])},
                {"declared", text_of(q["declared"])},
                {"waiting_receivers", text_of(q["waiting_receivers"])},
                {"blocked_producers", text_of(q["blocked_producers"])},
                {"enqueued_total", text_of(q["enqueued_total"])},
                {"dequeued_total", text_of(q["dequeued_total"])},
                {"dropped_total", text_of(q["dropped_total"])},
                {"rejected_total", text_of(q["rejected_total"])},
                {"oldest_age",
                 q["depth"] == 0 ? "-" : human_age_ms(q["oldest_age_ms"].get<std::int64_t>())}});
}

void print_stats(const json& s) {
  const auto rate = [&](const char* msgs, const char* bytes) {
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%.0f msg/s, %s/s", s[msgs].get<double>(),
                  human_bytes(s[bytes].get<double>()).c_str());
    return std::string(buf);
  };
  print_fields({{"uptime", human_age_ms(s["uptime_s"].get<std::int64_t>() * 1000)},
                {"connections", text_of(s["connections"])},
                {"queues", text_of(s["queues"])},
                {"inboxes", text_of(s["inboxes"])},
                {"regions",
                 text_of(s["regions"]) + " (" + human_bytes(s["region_bytes"].get<double>()) + ")"},
                {"messages in", text_of(s["messages_in_total"]) + " (" +
                                    human_bytes(s["bytes_in_total"].get<double>()) + ")"},
                {"messages out", text_of(s["messages_out_total"]) + " (" +
                                     human_bytes(s["bytes_out_total"].get<double>()) + ")"},
                {"rate in", rate("messages_in_per_s", "bytes_in_per_s")},
                {"rate out", rate("messages_out_per_s", "bytes_out_per_s")},
                {"rss", human_bytes(s["rss_bytes"].get<double>())}});
}

}  // namespace

int run_admin(const AdminCommand& cmd) {
  try {
    const std::string path = resolve_admin_path(cmd);
    json request{{"request", cmd.request}};
    if (!cmd.key.empty()) request["key"] = cmd.key;
    const json answer = ask_admin(path, request);
    if (!answer.value("ok", false)) {
      const auto& e = answer.contains("error") ? answer["error"] : json::object();
      const std::string code = e.value("code", "unknown");
      const std::string message = e.value("message", "no message");
      if (code == "permission_denied") {
        std::cerr << "qbusctl: access denied by the admin socket " << path << ": " << message
                  << "\n";
      } else {
        std::cerr << "qbusctl: " << cmd.request << (cmd.key.empty() ? "" : " " + cmd.key) << ": "
                  << code << ": " << message << "\n";
      }
      return 1;
    }
    if (cmd.json) {
      std::cout << answer.dump(2) << "\n";
    } else if (cmd.request == "queues") {
      print_queues(answer["queues"]);
    } else if (cmd.request == "queue") {
      print_queue(answer["queue"]);
    } else if (cmd.request == "clients") {
      print_clients(answer["clients"]);
    } else if (cmd.request == "regions") {
      print_regions(answer["regions"]);
    } else if (cmd.request == "stats") {
      print_stats(answer["stats"]);
    } else {
      std::cout << (cmd.request == "purge" ? "purged '" : "deleted '") << cmd.key
                << "': " << answer["dropped"].get<std::uint64_t>() << " messages dropped\n";
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
