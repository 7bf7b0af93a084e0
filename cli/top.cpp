// `qbusctl top`: queues and clients with their rates, refreshed every --interval, busiest
// first (docs/admin.md, "qbusctl top"). On a terminal ncurses draws it and keys change the
// sort; otherwise each refresh is printed as plain text. The rates come from top_model.
// Functions, not ncurses's macros: erase(), clear() and move() would break std::string's.
#define NCURSES_NOMACROS
#include <curses.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <clocale>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <iostream>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "admin.hpp"
#include "top_model.hpp"

namespace qbusctl {
namespace {

using json = nlohmann::json;
using top::Clock;
using top::SortKey;

struct Failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// One admin connection serves every refresh. The answer's object; an error answer throws,
// naming the request and the reason.
json ask(AdminConnection& link, const std::string& request) {
  json answer = link.ask(json{{"request", request}}.dump());
  const auto ok = answer.find("ok");
  if (ok != answer.end() && ok->is_boolean() && ok->get<bool>()) return answer;
  const json error = answer.value("error", json::object());
  const std::string code = error.value("code", std::string("unknown"));
  const std::string message = error.value("message", std::string("no message"));
  if (code == "permission_denied") {
    throw Failure("access denied by the admin socket " + link.path() + ": " + message);
  }
  throw Failure("the admin socket " + link.path() + " refused " + request + ": " + code + ": " +
                message);
}

// What one refresh learnt: the model's rows and rates and the daemon's own figures.
struct State {
  top::Model model;
  json stats = json::object();
  SortKey sort = SortKey::rate;
  bool clients_first = false;  // the clients' table gets the rows when both do not fit
};

void take_sample(AdminConnection& link, State& s) {
  const json queues = ask(link, "queues");
  const auto at = Clock::now();
  const json clients = ask(link, "clients");
  s.stats = ask(link, "stats").value("stats", json::object());
  s.model.update(top::parse_sample(queues.value("queues", json::array()),
                                   clients.value("clients", json::array()), at));
}

std::string human_duration(std::uint64_t s) {
  char buf[32];
  if (s < 60) {
    std::snprintf(buf, sizeof(buf), "%llus", static_cast<unsigned long long>(s));
  } else if (s < 3600) {
    std::snprintf(buf, sizeof(buf), "%llum%02llus", static_cast<unsigned long long>(s / 60),
                  static_cast<unsigned long long>(s % 60));
  } else if (s < 86400) {
    std::snprintf(buf, sizeof(buf), "%lluh%02llum", static_cast<unsigned long long>(s / 3600),
                  static_cast<unsigned long long>(s / 60 % 60));
  } else {
    std::snprintf(buf, sizeof(buf), "%llud%02lluh", static_cast<unsigned long long>(s / 86400),
                  static_cast<unsigned long long>(s / 3600 % 24));
  }
  return buf;
}

std::string wall_clock() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  ::localtime_r(&now, &tm);
  char buf[16];
  std::strftime(buf, sizeof(buf), "%H:%M:%S", &tm);
  return buf;
}

// The summary line: where, how long up, how many, the summed rates, the time.
std::string summary(const std::string& path, const State& s) {
  const auto number = [&](const char* name) -> std::uint64_t {
    const auto it = s.stats.find(name);
    return it != s.stats.end() && it->is_number() ? it->get<std::uint64_t>() : 0;
  };
  const auto& m = s.model;
  return "qbusctl top  " + path + "  up " + human_duration(number("uptime_s")) + "  " +
         std::to_string(m.queues().size()) + " queues  " + std::to_string(m.clients().size()) +
         " clients  in " + top::format_rate(m.in_rate()) + "/s  out " +
         top::format_rate(m.out_rate()) + "/s  rss " + top::format_bytes(number("rss_bytes")) +
         "  " + wall_clock();
}

// Both tables, sorted, as lines: the title line first, "no queues" (or clients) when empty.
struct Tables {
  std::vector<std::string> queues;
  std::vector<std::string> clients;
};

Tables tables(const State& s) {
  auto queues = s.model.queues();
  top::sort_queues(queues, s.sort);
  auto clients = s.model.clients();
  top::sort_clients(clients, s.sort);
  Tables t{top::queue_table(queues, s.sort), top::client_table(clients, s.sort)};
  if (queues.empty()) t.queues.push_back("no queues");
  if (clients.empty()) t.clients.push_back("no clients");
  return t;
}

// Plain text: one snapshot per refresh, a blank line between them, no escape codes.
void run_plain(AdminConnection& link, double interval, long long iterations, State& s) {
  const auto step =
      std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(interval));
  auto next = Clock::now();
  for (long long i = 0; iterations == 0 || i < iterations; ++i) {
    if (i > 0) std::this_thread::sleep_until(next);
    next += step;
    take_sample(link, s);
    if (i > 0) std::cout << '\n';
    std::cout << summary(link.path(), s) << "\nsort: " << top::sort_name(s.sort) << "\n\n";
    const Tables t = tables(s);
    for (const auto& line : t.queues)
      std::cout << line << '\n';
    std::cout << '\n';
    for (const auto& line : t.clients)
      std::cout << line << '\n';
    if (!std::cout.flush()) throw Failure("cannot write to stdout");
  }
}

// The terminal for the life of the view; ended (the screen given back) before anything is
// written to stderr, so that a last error line is not lost to the alternate screen.
// Ctrl-C quits as q does: ncurses's own SIGINT handler would exit at once with status 1.
volatile std::sig_atomic_t interrupted = 0;

void on_interrupt(int) {
  interrupted = 1;
}

class Screen {
 public:
  Screen() {
    // Installed before newterm, which then leaves SIGINT to us. No SA_RESTART: getch()
    // returns early.
    struct sigaction sa {};
    sa.sa_handler = on_interrupt;
    ::sigemptyset(&sa.sa_mask);
    ::sigaction(SIGINT, &sa, &old_sigint_);
    std::setlocale(LC_ALL, "");
    screen_ = ::newterm(nullptr, stdout, stdin);
    if (!screen_) {
      ::sigaction(SIGINT, &old_sigint_, nullptr);
      const char* term = std::getenv("TERM");
      throw Failure(std::string("cannot draw on this terminal (TERM=") + (term ? term : "") +
                    "); pipe the output for plain text");
    }
    ::cbreak();
    ::noecho();
    ::keypad(stdscr, TRUE);
    ::curs_set(0);
  }
  ~Screen() {
    ::endwin();
    ::delscreen(screen_);
    ::sigaction(SIGINT, &old_sigint_, nullptr);
  }
  Screen(const Screen&) = delete;
  Screen& operator=(const Screen&) = delete;

 private:
  SCREEN* screen_;
  struct sigaction old_sigint_ {};
};

// `text` at line `row`, cut to the window's width; `bar` fills the line in reverse video.
void put(int row, const std::string& text, bool bar = false) {
  if (row >= LINES) return;
  if (bar) ::attron(A_REVERSE);
  ::mvaddnstr(row, 0, text.c_str(), COLS);
  if (bar) {
    for (int x = static_cast<int>(std::min<std::size_t>(text.size(), COLS)); x < COLS; ++x)
      ::mvaddch(row, x, ' ');
    ::attroff(A_REVERSE);
  }
}

void draw(const std::string& path, const State& s) {
  ::erase();
  put(0, summary(path, s));
  put(1, std::string("sort: ") + top::sort_name(s.sort) +
             "   keys: r rate  d depth  b bytes  k key  Tab " +
             (s.clients_first ? "queues" : "clients") + " first  q quit");
  const Tables t = tables(s);
  // Three lines of header, two table titles and the blank line between the tables.
  const std::size_t room = static_cast<std::size_t>(std::max(0, LINES - 6));
  const top::RowSplit split =
      top::split_rows(room, t.queues.size() - 1, t.clients.size() - 1, s.clients_first);
  // A table cut to fit says, on its title bar, how many rows it does not show.
  // ("no queues" is a line of the table, not a row.)
  const auto title = [](const std::vector<std::string>& lines, std::size_t rows,
                        std::size_t shown) {
    const std::size_t hidden = rows - std::min(rows, shown);
    return hidden == 0 ? lines[0] : lines[0] + "   (" + std::to_string(hidden) + " more)";
  };
  int row = 3;
  put(row++, title(t.queues, s.model.queues().size(), split.queues), true);
  for (std::size_t i = 1; i <= split.queues; ++i)
    put(row++, t.queues[i]);
  ++row;
  put(row++, title(t.clients, s.model.clients().size(), split.clients), true);
  for (std::size_t i = 1; i <= split.clients; ++i)
    put(row++, t.clients[i]);
  ::refresh();
}

// A key: false to quit, true to go on (the view redrawn for any key it knows).
bool handle_key(int ch, State& s) {
  switch (ch) {
    case 'q':
    case 'Q':
      return false;
    case 'r':
      s.sort = SortKey::rate;
      break;
    case 'd':
      s.sort = SortKey::depth;
      break;
    case 'b':
      s.sort = SortKey::bytes;
      break;
    case 'k':
    case 'n':
      s.sort = SortKey::key;
      break;
    case '\t':
      s.clients_first = !s.clients_first;
      break;
    default:
      return true;
  }
  return true;
}

// The interactive view: refreshed every `interval`, redrawn at once for a key or a resize.
void run_terminal(AdminConnection& link, double interval, long long iterations, State& s) {
  const Screen screen;
  const auto step =
      std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(interval));
  auto next = Clock::now();
  long long done = 0;
  while (true) {
    if (Clock::now() >= next) {
      if (iterations > 0 && done == iterations) return;
      take_sample(link, s);
      ++done;
      next = std::max(next + step, Clock::now());
      draw(link.path(), s);
    }
    const auto wait =
        std::chrono::duration_cast<std::chrono::milliseconds>(next - Clock::now()).count();
    // In steps of at most 100 ms, so that an interrupted wait that ncurses resumes is
    // still noticed soon.
    ::timeout(static_cast<int>(std::clamp<long long>(wait, 0, 100)));
    const int ch = ::getch();
    if (interrupted) return;
    if (ch == ERR) continue;
    if (!handle_key(ch, s)) return;
    draw(link.path(), s);
  }
}

}  // namespace

int run_top(const AdminCommand& where, const TopArgs& a) {
  try {
    State s;
    s.sort = top::parse_sort(a.sort).value_or(SortKey::rate);
    AdminConnection link(admin_socket_path(where));
    if (::isatty(STDOUT_FILENO) && ::isatty(STDIN_FILENO)) {
      run_terminal(link, a.interval, a.iterations, s);
    } else {
      run_plain(link, a.interval, a.iterations, s);
    }
    return 0;
  } catch (const std::runtime_error& e) {
    std::cout.flush();
    std::cerr << "qbusctl: " << e.what() << "\n";
    return 1;
  }
}

}  // namespace qbusctl
