// The Grafana dashboard (docs/grafana/qbus-dashboard.json) held to the metrics: every
// metric name its queries and template variables use is a family that qbusd's /metrics
// answer declares, so that a renamed or removed metric fails here instead of leaving an
// empty panel. Also that every query parses as PromQL, and that the file is a dashboard
// Grafana can import.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cctype>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "daemon.hpp"
#include "http_peer.hpp"

namespace qbus::testing {
namespace {

using json = nlohmann::json;

// The names of the families the exposition text declares ("# TYPE <name> <type>").
std::set<std::string> typed_families(const std::string& text) {
  std::set<std::string> names;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    static constexpr std::string_view kType = "# TYPE ";
    if (line.compare(0, kType.size(), kType) != 0) continue;
    const auto end = line.find(' ', kType.size());
    if (end != std::string::npos) names.insert(line.substr(kType.size(), end - kType.size()));
  }
  return names;
}

bool ident_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_' || c == ':';
}

// The metric names a query uses: the identifiers ([a-zA-Z_:][a-zA-Z0-9_:]*) that start
// with qbus_ or process_. String literals (label values such as queue="(other)") are
// skipped, and so are runs that start with a digit (durations such as 1m, numbers).
std::set<std::string> metric_names(const std::string& expr) {
  std::set<std::string> names;
  std::size_t i = 0;
  while (i < expr.size()) {
    const char c = expr[i];
    if (c == '"' || c == '\'' || c == '`') {
      for (++i; i < expr.size() && expr[i] != c; ++i) {
        if (expr[i] == '\\' && c != '`') ++i;
      }
      ++i;
      continue;
    }
    if (!ident_char(c)) {
      ++i;
      continue;
    }
    const std::size_t start = i;
    while (i < expr.size() && ident_char(expr[i]))
      ++i;
    if (std::isdigit(static_cast<unsigned char>(c)) != 0) continue;
    const std::string word = expr.substr(start, i - start);
    if (word.starts_with("qbus_") || word.starts_with("process_")) names.insert(word);
  }
  return names;
}

json read_dashboard() {
  std::ifstream in(QBUS_DASHBOARD);
  if (!in) throw std::runtime_error(std::string("cannot read ") + QBUS_DASHBOARD);
  return json::parse(in);  // throws, naming the place, when it is no JSON
}

struct Queries {
  std::vector<std::string> exprs;  // panels' targets, then template variables
  std::size_t panels_with_targets = 0;
};

// Every target's expr of `panels`, and of the panels of rows among them (a collapsed row
// holds its panels; an open one is followed by them).
void collect_panels(const json& panels, Queries& q) {
  if (!panels.is_array()) return;
  for (const json& p : panels) {
    if (p.contains("targets") && p["targets"].is_array() && !p["targets"].empty()) {
      ++q.panels_with_targets;
      for (const json& t : p["targets"]) {
        if (t.contains("expr") && t["expr"].is_string()) q.exprs.push_back(t["expr"]);
      }
    }
    if (p.contains("panels")) collect_panels(p["panels"], q);
  }
}

Queries collect(const json& dashboard) {
  Queries q;
  collect_panels(dashboard.value("panels", json::array()), q);
  const json list = dashboard.value("templating", json::object()).value("list", json::array());
  for (const json& v : list) {
    // Grafana writes a Prometheus variable's query as a string or as {"query": ...}, and
    // repeats it as "definition".
    if (v.contains("query")) {
      const json& query = v["query"];
      if (query.is_string()) q.exprs.push_back(query);
      if (query.is_object() && query.contains("query") && query["query"].is_string()) {
        q.exprs.push_back(query["query"]);
      }
    }
    if (v.contains("definition") && v["definition"].is_string()) q.exprs.push_back(v["definition"]);
  }
  return q;
}

TEST(DashboardTest, IsAnImportableDashboard) {
  const json d = read_dashboard();
  ASSERT_TRUE(d.is_object());
  EXPECT_FALSE(d.value("title", "").empty());
  EXPECT_FALSE(d.value("uid", "").empty());
  EXPECT_TRUE(d.contains("schemaVersion") && d["schemaVersion"].is_number_integer());
  // The data source is chosen at import: an input named DS_PROMETHEUS.
  bool input = false;
  for (const json& i : d.value("__inputs", json::array()))
    input = input ||
            (i.value("name", "") == "DS_PROMETHEUS" && i.value("pluginId", "") == "prometheus");
  EXPECT_TRUE(input) << d.value("__inputs", json::array()).dump();

  const Queries q = collect(d);
  EXPECT_GE(q.panels_with_targets, 10u);
  for (const std::string& expr : q.exprs)
    EXPECT_FALSE(metric_names(expr).empty()) << "a query that names no qbusd metric: " << expr;
}

// qbusd with the metrics endpoint on a free port, nothing attached.
class DashboardMetricsTest : public ::testing::Test {
 protected:
  DashboardMetricsTest() : daemon_(DaemonOptions{R"({"metrics": {"listen": "tcp:127.0.0.1:0"}})"}) {
    // The port qbusd bound, from its startup line ("..., metrics tcp:127.0.0.1:PORT)").
    EXPECT_TRUE(daemon_.wait_for_log("metrics tcp:127.0.0.1:")) << daemon_.log();
    const std::string log = daemon_.log();
    const auto at = log.find("metrics tcp:127.0.0.1:") + std::strlen("metrics tcp:127.0.0.1:");
    port_ = std::stoi(log.substr(at));
  }

  std::string scrape() {
    const std::string r =
        exchange(port_, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    EXPECT_EQ(status_line(r), "HTTP/1.1 200 OK") << r.substr(0, 300);
    return body_of(r);
  }

  Daemon daemon_;
  int port_ = 0;
};

TEST_F(DashboardMetricsTest, UsesOnlyMetricsQbusdServes) {
  const std::string text = scrape();
  const std::set<std::string> served = typed_families(text);
  // Families qbusd declares whatever its state: the per-queue and per-uid ones without a
  // queue or a uid, the monitor's and the journal's (qbusd always passes both to the
  // endpoint), and the process ones.
  ASSERT_TRUE(served.contains("qbus_build_info")) << text;
  ASSERT_TRUE(served.contains("qbus_journal_disk_bytes")) << text;

  const Queries q = collect(read_dashboard());
  ASSERT_FALSE(q.exprs.empty());
  std::set<std::string> used;
  for (const std::string& expr : q.exprs) {
    for (const std::string& name : metric_names(expr)) {
      used.insert(name);
      EXPECT_TRUE(served.contains(name))
          << name << " is not a family of /metrics; in the dashboard's query: " << expr;
    }
  }
  // The name extraction found the dashboard's metrics, not nothing.
  EXPECT_GE(used.size(), 20u);
}

// Every query is PromQL that Prometheus parses: each becomes a recording rule, which
// promtool (Debian's prometheus package) checks without a server. Grafana's template
// variables sit inside label matchers' strings, where the parser takes them as text.
TEST(DashboardTest, QueriesParseAsPromQL) {
  Queries q;
  collect_panels(read_dashboard().value("panels", json::array()), q);
  ASSERT_FALSE(q.exprs.empty());
  TempDir dir;
  const std::string rules = dir.file("dashboard-rules.yml");
  {
    std::ofstream out(rules);
    out << "groups:\n  - name: dashboard\n    rules:\n";
    // A JSON string is a YAML double-quoted scalar.
    for (std::size_t i = 0; i < q.exprs.size(); ++i)
      out << "      - record: dashboard:query" << i << "\n        expr: " << json(q.exprs[i]).dump()
          << "\n";
  }
  const auto check = run({"/usr/bin/promtool", "check", "rules", rules});
  EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
  EXPECT_NE(check.out.find("SUCCESS: " + std::to_string(q.exprs.size()) + " rules found"),
            std::string::npos)
      << check.out << check.err;
}

TEST(DashboardMetricNames, ExtractsIdentifiersOutsideStrings) {
  EXPECT_EQ(metric_names(R"x(topk(10, sum by (queue) (rate(qbus_queue_enqueued_total{)x"
                         R"x(instance=~"$instance", queue!="qbus_(other)"}[1m]))))x"),
            std::set<std::string>{"qbus_queue_enqueued_total"});
  EXPECT_EQ(metric_names("qbus_uid_usage / on(resource) group_left qbus_uid_limit"),
            (std::set<std::string>{"qbus_uid_usage", "qbus_uid_limit"}));
  EXPECT_EQ(metric_names("time() - process_start_time_seconds[5m:1m] offset 1h"),
            std::set<std::string>{"process_start_time_seconds"});
  EXPECT_EQ(metric_names("label_values(qbus_build_info, instance)"),
            std::set<std::string>{"qbus_build_info"});
  EXPECT_EQ(metric_names("x_qbus_y + my:qbus_rule"), std::set<std::string>{});
}

}  // namespace
}  // namespace qbus::testing
