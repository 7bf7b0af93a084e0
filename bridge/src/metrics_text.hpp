// The bridge's counters in Prometheus's text exposition format (version 0.0.4), for
// node_exporter's textfile collector: the bridge writes them to `metrics_file` every
// second, beside its status file (docs/bridge.md lists the metrics).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace qbus::bridge {

// The exposition text of one status snapshot (the JSON the status file holds).
std::string metrics_text(const nlohmann::json& status);

}  // namespace qbus::bridge
