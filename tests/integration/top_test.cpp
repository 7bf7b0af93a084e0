// `qbusctl top` on a live daemon. On a terminal (a tmux pane with its own server, read with
// capture-pane and driven with send-keys) it shows a queue receiving traffic with its rate,
// busiest first, and a key sorts it otherwise; with stdout a pipe it prints plain text;
// errors are one line on stderr, after the screen is given back.
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <qbus/client.hpp>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "daemon.hpp"
#include "eventually.hpp"
#include "process.hpp"

namespace qbus::testing {
namespace {

using std::chrono::seconds;

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    out.push_back(line);
  return out;
}

// A table line's cells: columns are two or more spaces apart ("0 B" has one).
std::vector<std::string> cells(const std::string& line) {
  static const std::regex gap(" {2,}");
  std::vector<std::string> out;
  const std::string trimmed = line.substr(std::min(line.size(), line.find_first_not_of(' ')));
  for (std::sregex_token_iterator it(trimmed.begin(), trimmed.end(), gap, -1), end; it != end;
       ++it) {
    if (!it->str().empty()) out.push_back(*it);
  }
  return out;
}

// The queues' table in a screen or a snapshot: the row of each key, by its place, and the
// cell under a column title (a sort mark '*' ignored).
struct QueueTable {
  std::vector<std::string> titles;
  std::vector<std::vector<std::string>> rows;

  static QueueTable find(const std::string& screen) {
    QueueTable t;
    bool in_table = false;
    for (const auto& line : lines_of(screen)) {
      if (line.rfind("KEY", 0) == 0) {
        in_table = true;
        for (auto title : cells(line)) {
          if (!title.empty() && title.back() == '*') title.pop_back();
          t.titles.push_back(title);
        }
        continue;
      }
      if (!in_table) continue;
      if (line.find_first_not_of(' ') == std::string::npos) break;  // the end of the table
      t.rows.push_back(cells(line));
    }
    return t;
  }
  std::optional<std::size_t> place(const std::string& key) const {
    for (std::size_t i = 0; i < rows.size(); ++i)
      if (!rows[i].empty() && rows[i][0] == key) return i;
    return std::nullopt;
  }
  std::string cell(const std::string& key, const std::string& title) const {
    const auto p = place(key);
    for (std::size_t c = 0; p && c < titles.size(); ++c) {
      if (titles[c] == title && c < rows[*p].size()) return rows[*p][c];
    }
    return "";
  }
};

// A rate cell that shows traffic: a number, and not 0.
bool busy_rate(const std::string& cell) {
  return !cell.empty() && cell != "-" && std::strtod(cell.c_str(), nullptr) > 0;
}

std::string find_tmux() {
  for (const char* dir : {"/usr/bin", "/bin", "/usr/local/bin"}) {
    const std::string path = std::string(dir) + "/tmux";
    if (::access(path.c_str(), X_OK) == 0) return path;
  }
  return "";
}

class TopTest : public ::testing::Test {
 protected:
  ~TopTest() override {
    stop_traffic();
    if (!tmux_path_.empty()) tmux({"kill-server"});
  }

  std::string admin_address() const { return "unix:" + daemon_.dir().file("admin.sock"); }
  std::string status_path() const { return scratch_.file("status"); }

  Result tmux(std::vector<std::string> args) {
    args.insert(args.begin(), {tmux_path_, "-f", "/dev/null", "-S", scratch_.file("tmux.sock")});
    return run(args, {}, {"TERM=xterm-256color"});
  }

  // `qbusctl top ARGS` in a detached 200x50 pane of our own tmux server; its exit status
  // goes to status_path(), then the pane stays (`then`) or closes.
  void start_in_tmux(const std::string& args, const std::string& then = "") {
    tmux_path_ = find_tmux();
    ASSERT_FALSE(tmux_path_.empty()) << "tmux is needed (scripts/deps.sh installs it)";
    const std::string command = "TERM=xterm-256color " + qbusctl_path() + " --admin-address " +
                                admin_address() + " top " + args + "; echo $? > " + status_path() +
                                then;
    const Result r = tmux({"new-session", "-d", "-s", "top", "-x", "200", "-y", "50", command});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }

  std::string screen() { return tmux({"capture-pane", "-p", "-t", "top"}).out; }

  // Polls the pane until `done` holds for what it shows; the last screen for messages.
  bool screen_until(const std::function<bool(const std::string&)>& done, std::string& last) {
    return eventually(
        [&] {
          last = screen();
          if (done(last)) return true;
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
          return false;
        },
        seconds(30));
  }

  // Steady traffic through queue `key`: each message sent is taken again, so that the
  // queue's depth stays at 0 or 1 while its rates are high. Declared first: an implicit
  // queue goes whenever it is empty with nobody waiting, and would flicker in and out.
  // Returns once the queue is declared.
  void start_traffic(const std::string& key) {
    Gate declared;
    traffic_ = std::thread([this, key, &declared] {
      Client c(ClientOptions{daemon_.address(), "producer", seconds(30)});
      c.declare(key, QueueOptions{});
      declared.open();
      while (!stop_.load()) {
        c.send(key, "tick");
        (void)c.receive(key, seconds(30));
        std::this_thread::sleep_for(std::chrono::milliseconds(2));  // pacing, not waiting
      }
    });
    declared.wait();
  }
  void stop_traffic() {
    stop_ = true;
    if (traffic_.joinable()) traffic_.join();
  }
  void fill(const std::string& key, int n) {
    Client c(ClientOptions{daemon_.address(), "filler", seconds(30)});
    for (int i = 0; i < n; ++i)
      c.send(key, "deep message");
    c.sync();
  }

  Daemon daemon_;
  TempDir scratch_;
  std::string tmux_path_;
  std::atomic<bool> stop_{false};
  std::thread traffic_;
};

TEST_F(TopTest, OnATerminalShowsTheBusyQueueWithItsRateFirstAndKeysSortIt) {
  fill("deep", 500);
  start_traffic("busy");
  ASSERT_NO_FATAL_FAILURE(start_in_tmux("--interval 0.2"));

  // Sorted by rate (the default): busy, with a rate above 0, before deep.
  std::string last;
  ASSERT_TRUE(screen_until(
      [](const std::string& s) {
        const QueueTable t = QueueTable::find(s);
        return busy_rate(t.cell("busy", "IN/S")) && t.place("deep") &&
               *t.place("busy") < *t.place("deep");
      },
      last))
      << last;
  EXPECT_NE(last.find("sort: rate"), std::string::npos) << last;
  EXPECT_NE(last.find("IN/S*"), std::string::npos) << last;
  EXPECT_EQ(QueueTable::find(last).cell("deep", "DEPTH"), "500") << last;

  // d: by depth, deep (500 waiting) before busy (0 or 1).
  ASSERT_EQ(tmux({"send-keys", "-t", "top", "d"}).exit_code, 0);
  ASSERT_TRUE(screen_until(
      [](const std::string& s) {
        const QueueTable t = QueueTable::find(s);
        return s.find("sort: depth") != std::string::npos && t.place("busy") && t.place("deep") &&
               *t.place("deep") < *t.place("busy");
      },
      last))
      << last;
  EXPECT_NE(last.find("DEPTH*"), std::string::npos) << last;

  // r: by rate again.
  ASSERT_EQ(tmux({"send-keys", "-t", "top", "r"}).exit_code, 0);
  ASSERT_TRUE(screen_until(
      [](const std::string& s) {
        const QueueTable t = QueueTable::find(s);
        return s.find("sort: rate") != std::string::npos && t.place("busy") && t.place("deep") &&
               *t.place("busy") < *t.place("deep");
      },
      last))
      << last;

  // q: quits, exit 0.
  ASSERT_EQ(tmux({"send-keys", "-t", "top", "q"}).exit_code, 0);
  ASSERT_TRUE(eventually([&] { return read_file(status_path()) == "0\n"; }, seconds(30)))
      << "status: '" << read_file(status_path()) << "'\n"
      << screen();
}

TEST_F(TopTest, OnATerminalADaemonThatStopsIsOneLineOnTheScreenAfterTheView) {
  // The pane stays after qbusctl exits, so that what it left on the screen can be read.
  ASSERT_NO_FATAL_FAILURE(start_in_tmux("--interval 0.2", "; exec sleep 600"));
  std::string last;
  ASSERT_TRUE(screen_until(
      [](const std::string& s) { return s.find("sort: rate") != std::string::npos; }, last))
      << last;
  ASSERT_EQ(daemon_.stop(), 0);
  ASSERT_TRUE(eventually([&] { return read_file(status_path()) == "1\n"; }, seconds(30)))
      << "status: '" << read_file(status_path()) << "'\n"
      << screen();
  // endwin() came first: the view is gone and the error line is on the shell's screen.
  ASSERT_TRUE(screen_until(
      [](const std::string& s) {
        return s.find("qbusctl: the admin socket") != std::string::npos &&
               s.find("qbusd stopped?") != std::string::npos;
      },
      last))
      << last;
  EXPECT_EQ(last.find("sort: rate"), std::string::npos) << last;
}

TEST_F(TopTest, OnATerminalCtrlCQuitsLikeQ) {
  // A long interval: the interrupt is noticed while waiting for the next refresh.
  ASSERT_NO_FATAL_FAILURE(start_in_tmux("--interval 60"));
  std::string last;
  ASSERT_TRUE(screen_until(
      [](const std::string& s) { return s.find("sort: rate") != std::string::npos; }, last))
      << last;
  ASSERT_EQ(tmux({"send-keys", "-t", "top", "C-c"}).exit_code, 0);
  ASSERT_TRUE(eventually([&] { return read_file(status_path()) == "0\n"; }, seconds(30)))
      << "status: '" << read_file(status_path()) << "'\n"
      << screen();
}

TEST_F(TopTest, WithStdoutAPipeItPrintsPlainSnapshots) {
  fill("jobs", 3);
  const Result r = run({qbusctl_path(), "--admin-address", admin_address(), "top", "--interval",
                        "0.2", "--iterations", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  EXPECT_EQ(r.out.find('\x1b'), std::string::npos) << r.out;
  // Two snapshots, a blank line between them; the first has no rate yet, the second has.
  const auto at = r.out.find("\n\nqbusctl top ");
  ASSERT_NE(at, std::string::npos) << r.out;
  EXPECT_EQ(r.out.rfind("qbusctl top ", 0), 0u) << r.out;
  const QueueTable first = QueueTable::find(r.out.substr(0, at));
  const QueueTable second = QueueTable::find(r.out.substr(at + 2));
  EXPECT_EQ(first.cell("jobs", "DEPTH"), "3") << r.out;
  EXPECT_EQ(first.cell("jobs", "IN/S"), "-") << r.out;
  EXPECT_EQ(second.cell("jobs", "DEPTH"), "3") << r.out;
  EXPECT_EQ(second.cell("jobs", "IN/S"), "0.0") << r.out;
  EXPECT_NE(r.out.find("sort: rate"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\nID "), std::string::npos) << r.out;  // the clients' table
}

TEST_F(TopTest, SortOptionChoosesThePlainOrder) {
  fill("a.small", 1);
  fill("b.large", 20);
  const Result r = run({qbusctl_path(), "--admin-address", admin_address(), "top", "--iterations",
                        "1", "--sort", "depth"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const QueueTable t = QueueTable::find(r.out);
  ASSERT_TRUE(t.place("a.small") && t.place("b.large")) << r.out;
  EXPECT_LT(*t.place("b.large"), *t.place("a.small")) << r.out;
  EXPECT_NE(r.out.find("sort: depth"), std::string::npos) << r.out;
}

TEST_F(TopTest, AMissingAdminSocketIsOneLineNamingItAndExit1) {
  const std::string path = scratch_.file("no-such-dir/admin.sock");
  const Result r = run({qbusctl_path(), "--admin-address", "unix:" + path, "top"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.out, "");
  ASSERT_FALSE(r.err.empty());
  EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << r.err;  // one line
  EXPECT_NE(r.err.find(path), std::string::npos) << r.err;
}

TEST_F(TopTest, BadOptionsAreUsageErrorsNamingThem) {
  for (const auto& [option, value] :
       std::vector<std::pair<std::string, std::string>>{{"--interval", "0.05"},
                                                        {"--interval", "soon"},
                                                        {"--iterations", "-1"},
                                                        {"--sort", "speed"}}) {
    const Result r =
        run({qbusctl_path(), "--admin-address", admin_address(), "top", option, value});
    EXPECT_EQ(r.exit_code, 2) << option << " " << value << ": " << r.err;
    EXPECT_NE(r.err.find(option), std::string::npos) << r.err;
    EXPECT_EQ(r.out, "") << r.out;
  }
}

}  // namespace
}  // namespace qbus::testing
