// The "tcp.tls" section of the config file (config/README.md): kept apart from config.cpp,
// which reads every other section, so that the TLS rules (paths, the client map, user
// lookups) sit in one place.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "qbus/config/config.hpp"

namespace qbus::config::detail {

// Reads `j` (the value of "tcp.tls") into `out`. Returns "" or one line naming the field,
// "tcp.tls.clients[2].user: unknown user 'x'". Thread-safe (reentrant user lookups).
std::string read_tls(const nlohmann::json& j, TlsSettings& out);

// The section in the file's shape, for the effective configuration.
nlohmann::json tls_json(const TlsSettings& t);

}  // namespace qbus::config::detail
