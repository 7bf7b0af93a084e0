// `qbusctl monitor [PATTERN]`: asks the admin socket for a monitor and prints its events as
// they come, one line each (docs/admin.md, "monitor"). qbusd never waits for us: when we
// read too slowly it drops events and says how many.
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iostream>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <string_view>

#include "admin.hpp"

namespace qbusctl {
namespace {

using json = nlohmann::json;

struct Fd {
  int fd;
  ~Fd() { ::close(fd); }
};

template <typename T>
T field(const json& j, const char* name, T fallback) {
  const auto it = j.find(name);
  if (it == j.end() || it->is_null()) return fallback;
  try {
    return it->get<T>();
  } catch (const json::exception&) {
    return fallback;
  }
}

// One event as a line for people: time, what, who, where, size and the payload's start.
void print_event(const json& e) {
  const std::string event = field<std::string>(e, "event", "?");
  if (event == "dropped") {
    std::cout << "-- " << field<std::uint64_t>(e, "count", 0)
              << " events dropped: this monitor read too slowly\n";
    return;
  }
  const std::string time = field<std::string>(e, "time", "");
  // "2026-12-06T08:30:00.123456Z" -> "08:30:00.123456"
  std::cout << (time.size() >= 26 ? time.substr(11, 15) : time) << ' ';
  std::string padded = event;
  padded.resize(std::max<std::size_t>(padded.size(), 8), ' ');
  std::cout << padded << " pid " << field<std::uint64_t>(e, "pid", 0) << " uid "
            << field<std::uint64_t>(e, "uid", 0);
  if (const auto comm = field<std::string>(e, "comm", ""); !comm.empty()) std::cout << ' ' << comm;
  const std::string where =
      e.contains("key") ? field<std::string>(e, "key", "") : field<std::string>(e, "target", "");
  std::cout << (event == "deliver" ? " <- " : " -> ") << where;
  if (field<bool>(e, "reply", false)) std::cout << " (reply)";
  if (e.contains("from_pid")) {
    std::cout << " from pid " << field<std::uint64_t>(e, "from_pid", 0) << " uid "
              << field<std::uint64_t>(e, "from_uid", 0);
  }
  std::cout << ' ' << field<std::uint64_t>(e, "size", 0) << " B";
  if (field<bool>(e, "region", false)) {
    std::cout << " (shared-memory region)";
  } else {
    std::cout << " \"" << field<std::string>(e, "payload", "") << '"';
    if (field<bool>(e, "truncated", false)) std::cout << "...";
  }
  if (field<bool>(e, "refused", false)) std::cout << " REFUSED";
  std::cout << '\n';
}

void send_line(int fd, const std::string& line) {
  for (std::size_t done = 0; done < line.size();) {
    const ssize_t n = ::send(fd, line.data() + done, line.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // a refusal may close before we finish; its answer is read anyway
    done += static_cast<std::size_t>(n);
  }
}

}  // namespace

int run_monitor(const AdminCommand& where, const MonitorArgs& a) {
  try {
    const std::string path = admin_socket_path(where);
    const Fd socket{connect_admin(path)};
    json request{{"request", "monitor"}, {"payload_bytes", a.payload_bytes}};
    if (!a.pattern.empty()) request["pattern"] = a.pattern;
    send_line(socket.fd, request.dump() + "\n");
    std::string buffer;
    bool answered = false;
    long long shown = 0;
    char chunk[65536];
    while (true) {
      const ssize_t n = ::recv(socket.fd, chunk, sizeof(chunk), 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        throw std::runtime_error(
            answered ? "the admin socket " + path + " closed the monitor (qbusd stopped?)"
                     : "the admin socket " + path + " closed without an answer");
      }
      buffer.append(chunk, static_cast<std::size_t>(n));
      std::size_t start = 0;
      for (std::size_t eol; (eol = buffer.find('\n', start)) != std::string::npos;
           start = eol + 1) {
        const std::string_view line(buffer.data() + start, eol - start);
        json j;
        try {
          j = json::parse(line);
        } catch (const json::exception&) {
          throw std::runtime_error("the admin socket " + path + " sent something that is not JSON");
        }
        if (!answered) {
          answered = true;
          if (!field<bool>(j, "ok", false)) {
            const json err = j.value("error", json::object());
            throw std::runtime_error(
                "monitor refused: " + field<std::string>(err, "message", "no reason given") + " (" +
                field<std::string>(err, "code", "?") + ")");
          }
          continue;
        }
        if (where.json) {
          std::cout << line << '\n';
        } else {
          print_event(j);
        }
        const bool note = field<std::string>(j, "event", "") == "dropped";
        if (!note && a.count > 0 && ++shown == a.count) {
          std::cout.flush();
          return 0;
        }
      }
      buffer.erase(0, start);
      // Flushed once per read, not per line: a pipe gets whole batches.
      if (!std::cout.flush()) throw std::runtime_error("cannot write to stdout");
    }
  } catch (const std::runtime_error& e) {
    std::cout.flush();
    std::cerr << "qbusctl: " << e.what() << "\n";
    return 1;
  }
}

}  // namespace qbusctl
