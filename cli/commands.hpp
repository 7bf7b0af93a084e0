// qbusctl's pieces shared by its source files: the global options, the exit codes, the
// usage error and the connection. main.cpp parses and runs the subcommands; recv.cpp is
// `recv`, pubsub.cpp `pub` and `sub`, admin.cpp the admin socket's commands, monitor.cpp
// `monitor`, top.cpp `top` (its model in top_model.cpp).
#pragma once

#include <qbus/client.hpp>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace qbusctl {

// Exit codes: 0 success, 1 error (one line on stderr), 2 usage error, 3 recv/request/sub timed
// out with nothing received (admin.hpp adds kExitDenied).
inline constexpr int kExitError = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitTimeout = 3;

// A command line that parsed but makes no sense; reported with a pointer to --help.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Globals {
  std::string address;
  std::string admin_address;
  bool json = false;
  // tls: addresses (libqbus falls back to QBUS_TLS_CA, QBUS_TLS_CERT, QBUS_TLS_KEY).
  std::string tls_ca, tls_cert, tls_key;
};

inline qbus::Client connect(const Globals& g) {
  qbus::ClientOptions o;
  o.address = g.address;
  o.name = "qbusctl";
  o.tls_ca = g.tls_ca;
  o.tls_cert = g.tls_cert;
  o.tls_key = g.tls_key;
  return qbus::Client(o);
}

// "WHAT PATH: the reason" for the errno of a failed file operation.
inline std::string file_error(const std::string& what, const std::string& path) {
  return what + " " + path + ": " + std::strerror(errno);
}

// The payload and a newline on stdout; with `headers` first a "KEY: VALUE" line per header.
// False when stdout cannot be written.
bool print(const qbus::Message& m, bool headers = false);
// The message as one JSON object on a line of stdout (--json): the payload as text (bytes
// that are not UTF-8 replaced), who sent it, its headers; received in acknowledgement mode
// (`ack`), how it was delivered; a `subject` delivery (sub) has "subject" instead of "key",
// and "retained" and "dropped_before". False when stdout cannot be written.
bool print_json(const qbus::Message& m, bool ack, bool subject = false);

// `qbusctl recv` (recv.cpp).
struct RecvArgs {
  std::vector<std::string> key;  // empty with --direct
  bool direct = false;
  long long timeout_ms = -1;  // -1: forever
  long long count = 1;        // 0: no limit
  std::string out;            // empty: stdout
  bool ack = false;           // acknowledgement mode: each message acked once written
  std::string nack;           // --nack ACTION: nacked instead, once all are written
  bool headers = false;       // print the headers before the payload
};
CLI::App* add_recv(CLI::App& app, RecvArgs& a);
int run_recv(const Globals& g, const RecvArgs& a);

// "KEY=VALUE" arguments of --header (send, pub); UsageError for one without '=' or key.
qbus::Headers parse_headers(const std::vector<std::string>& args);

// `qbusctl pub` and `qbusctl sub` (pubsub.cpp).
struct PubArgs {
  std::string subject;
  std::optional<std::string> message;  // none: stdin
  std::vector<std::string> headers;    // KEY=VALUE
  bool retain = false;
};
CLI::App* add_pub(CLI::App& app, PubArgs& a);
int run_pub(const Globals& g, const PubArgs& a);

struct SubArgs {
  std::string pattern;
  long long count = 0;        // 0: no limit
  long long timeout_ms = -1;  // -1: forever
  std::string group;          // empty: none
  std::string slow;           // empty: the broker's default
  long long max_messages = 0;
  long long max_bytes = 0;
  bool headers = false;  // print the headers before the payload
};
CLI::App* add_sub(CLI::App& app, SubArgs& a);
int run_sub(const Globals& g, const SubArgs& a);

}  // namespace qbusctl
