#include "metrics_text.hpp"

#include <cstdint>

namespace qbus::bridge {
namespace {

using nlohmann::json;

// A label value as the format wants it: backslash, double quote and newline escaped.
std::string escaped(const std::string& v) {
  std::string out;
  out.reserve(v.size());
  for (const char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

void header(std::string& out, const char* name, const char* type, const char* help) {
  out.append("# HELP ").append(name).append(" ").append(help).append("\n");
  out.append("# TYPE ").append(name).append(" ").append(type).append("\n");
}

std::string route_labels(const json& r) {
  return "route=\"" + escaped(r.value("name", "")) + "\",direction=\"" +
         escaped(r.value("direction", "")) + "\"";
}

// One counter family: a sample per route of the status field `field`.
void counter(std::string& out, const json& routes, const char* name, const char* field,
             const char* help) {
  header(out, name, "counter", help);
  for (const json& r : routes) {
    out.append(name).append("{").append(route_labels(r)).append("} ");
    out.append(std::to_string(r.value(field, std::uint64_t{0}))).append("\n");
  }
}

void backlog(std::string& out, const json& routes) {
  header(out, "qbus_bridge_backlog_messages", "gauge",
         "Messages JetStream holds for an inbound queue route's consumer: not yet delivered "
         "(pending) or delivered and not yet acked (unacked).");
  for (const json& r : routes) {
    const json& b = r.contains("backlog") ? r["backlog"] : json();
    for (const char* state : {"pending", "unacked"}) {
      if (!b.is_object() || !b.contains(state) || !b[state].is_number()) continue;
      out.append("qbus_bridge_backlog_messages{").append(route_labels(r));
      out.append(",state=\"").append(state).append("\"} ");
      out.append(std::to_string(b[state].get<std::int64_t>())).append("\n");
    }
  }
}

}  // namespace

std::string metrics_text(const json& status) {
  const json& routes = status["routes"];
  std::string out;
  counter(out, routes, "qbus_bridge_forwarded_total", "forwarded",
          "Messages the route handed to the other side.");
  counter(out, routes, "qbus_bridge_acked_total", "acked",
          "Messages the route acknowledged to the side they came from.");
  counter(out, routes, "qbus_bridge_retried_total", "retried",
          "Messages the route handed over again after a failure.");
  counter(out, routes, "qbus_bridge_failed_total", "failed",
          "Messages the route gave up (the other side can never take them, or a subject "
          "route's other side was away).");
  backlog(out, routes);
  header(out, "qbus_bridge_qbus_connected", "gauge",
         "1 while the route's connection to qbusd is up.");
  for (const json& r : routes) {
    out.append("qbus_bridge_qbus_connected{").append(route_labels(r)).append("} ");
    out.append(r.value("qbus_connected", false) ? "1\n" : "0\n");
  }
  header(out, "qbus_bridge_nats_connected", "gauge", "1 while the connection to NATS is up.");
  out.append("qbus_bridge_nats_connected ");
  out.append(status["nats"].value("connected", false) ? "1\n" : "0\n");
  return out;
}

}  // namespace qbus::bridge
