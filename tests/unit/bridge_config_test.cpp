// Unit tests of qbus-bridge's configuration (docs/bridge.md): what a valid file gives, and
// one line naming the field for everything that must keep the bridge from starting.
#include "bridge_config.hpp"
#include "metrics_text.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

namespace qbus::bridge {
namespace {

constexpr const char* kOut =
    R"({"name": "out", "direction": "outbound", "queue": "orders", "subject": "fleet.orders"})";
constexpr const char* kIn =
    R"({"name": "in", "direction": "inbound", "queue": "remote", "subject": "fleet.remote.>",
        "stream": "FLEET"})";

std::string with_routes(const std::string& routes, const std::string& more = "") {
  return R"({"nats": {"url": "nats://127.0.0.1:4222"}, )" + more + R"("routes": [)" + routes + "]}";
}

// The error parse_bridge_config throws for `text`; "" when it parses.
std::string error_of(const std::string& text) {
  try {
    (void)parse_bridge_config(text);
    return "";
  } catch (const BridgeConfigError& e) {
    return e.what();
  }
}

class SecretFile {
 public:
  explicit SecretFile(mode_t mode, const std::string& text = "s3cret\n") {
    char tmpl[] = "/tmp/qbus-bridge-secret-XXXXXX";
    const int fd = ::mkstemp(tmpl);
    EXPECT_GE(fd, 0);
    path_ = tmpl;
    EXPECT_EQ(::write(fd, text.data(), text.size()), static_cast<ssize_t>(text.size()));
    ::close(fd);
    EXPECT_EQ(::chmod(path_.c_str(), mode), 0);
  }
  ~SecretFile() { ::unlink(path_.c_str()); }
  SecretFile(const SecretFile&) = delete;
  SecretFile& operator=(const SecretFile&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(BridgeConfig, AValidFileGivesItsRoutesAndTheDefaults) {
  const BridgeConfig c = parse_bridge_config(with_routes(std::string(kOut) + "," + kIn));
  ASSERT_EQ(c.routes.size(), 2u);
  EXPECT_EQ(c.routes[0].direction, Direction::outbound);
  EXPECT_EQ(c.routes[0].batch, 64u);
  EXPECT_FALSE(c.routes[0].durable_queue);
  EXPECT_EQ(c.routes[1].direction, Direction::inbound);
  EXPECT_EQ(c.routes[1].consumer, "in") << "the route's name by default";
  EXPECT_EQ(c.client_name, "qbus-bridge");
  EXPECT_EQ(c.status_file, "/run/qbus-bridge/status.json");
  EXPECT_EQ(c.nats.reconnect_wait_ms, 1000);
}

TEST(BridgeConfig, UnknownFieldsAreNamed) {
  EXPECT_EQ(error_of(with_routes(kOut, R"("colour": "blue", )")), "colour: unknown field");
  EXPECT_EQ(
      error_of(with_routes(
          R"({"name": "out", "direction": "outbound", "queue": "q", "subject": "s", "bogus": 1})")),
      "routes[0].bogus: unknown field");
  EXPECT_EQ(error_of(R"({"nats": {"uri": "x"}, "routes": [)" + std::string(kOut) + "]}"),
            "nats.uri: unknown field");
}

TEST(BridgeConfig, EachRouteFieldIsChecked) {
  const auto route = [](const std::string& fields) {
    return error_of(with_routes("{" + fields + "}"));
  };
  EXPECT_EQ(route(R"("name": "a b", "direction": "outbound", "queue": "q", "subject": "s")")
                .rfind("routes[0].name: ", 0),
            0u);
  EXPECT_EQ(route(R"("name": "r", "direction": "sideways", "queue": "q", "subject": "s")"),
            "routes[0].direction: must be \"outbound\" or \"inbound\"");
  EXPECT_NE(route(R"("name": "r", "direction": "outbound", "queue": "bad key!", "subject": "s")")
                .find("routes[0].queue"),
            std::string::npos);
  EXPECT_EQ(route(R"("name": "r", "direction": "outbound", "queue": "q", "subject": "a.*")"),
            "routes[0].subject: must be a NATS subject without wildcards");
  EXPECT_EQ(route(R"("name": "r", "direction": "inbound", "queue": "q", "subject": "a.>")"),
            "routes[0].stream: an inbound route needs its stream");
  EXPECT_EQ(route(R"("name": "r", "direction": "outbound", "queue": "q", "subject": "s",
                     "batch": 0)"),
            "routes[0].batch: must be 1..1000");
  EXPECT_EQ(error_of(with_routes(std::string(kOut) + "," + kOut)),
            "routes[1].name: 'out' is used twice");
  EXPECT_EQ(error_of(R"({"routes": []})"), "routes: must be a non-empty array of routes");
}

TEST(BridgeConfig, RoutesThatWouldCarryTheirOwnMessagesBackAreRefused) {
  const std::string same_queue =
      R"({"name": "in", "direction": "inbound", "queue": "orders", "subject": "other",
          "stream": "S"})";
  EXPECT_NE(error_of(with_routes(std::string(kOut) + "," + same_queue)).find("loop: queue"),
            std::string::npos);
  const std::string matching =
      R"({"name": "in", "direction": "inbound", "queue": "remote", "subject": "fleet.>",
          "stream": "S"})";
  const std::string e = error_of(with_routes(std::string(kOut) + "," + matching));
  EXPECT_EQ(e,
            "routes[0] (out) and routes[1] (in): loop: subject 'fleet.orders' is both "
            "published and consumed");
}

TEST(BridgeConfig, CredentialsComeFromFilesOnlyOthersCannotRead) {
  SecretFile good(0600);
  SecretFile open(0644);
  const auto nats = [](const std::string& fields) {
    return error_of(R"({"nats": {)" + fields + R"(}, "routes": [)" + std::string(kOut) + "]}");
  };
  EXPECT_EQ(nats(R"("user": "u", "password_file": ")" + good.path() + "\""), "");
  const BridgeConfig c = parse_bridge_config(R"({"nats": {"user": "u", "password_file": ")" +
                                             good.path() + R"("}, "routes": [)" + kOut + "]}");
  EXPECT_EQ(c.nats.password, "s3cret") << "the trailing newline is not part of it";
  const std::string refused = nats(R"("token_file": ")" + open.path() + "\"");
  EXPECT_EQ(refused.rfind("nats.token_file: ", 0), 0u) << refused;
  EXPECT_NE(refused.find(open.path()), std::string::npos) << refused;
  EXPECT_NE(refused.find("chmod 600"), std::string::npos) << refused;
  EXPECT_NE(nats(R"("token_file": "/nonexistent/token")").find("is missing"), std::string::npos);
  EXPECT_EQ(nats(R"("token_file": "relative")"), "nats.token_file: must be an absolute path");
  EXPECT_EQ(nats(R"("user": "u")"), "nats.user: needs nats.password_file");
  EXPECT_EQ(nats(R"("password_file": ")" + good.path() + "\""),
            "nats.password_file: needs nats.user");
  EXPECT_EQ(nats(R"("user": "u", "password_file": ")" + good.path() + R"(", "token_file": ")" +
                 good.path() + "\""),
            "nats: give at most one of user, token_file and creds_file");
  EXPECT_EQ(nats(R"("tls": {"certificate": "/c.pem"})"),
            "nats.tls: certificate and key go together");
}

// --status reads the status file the config names, not the credentials: an operator who
// may not read the bridge's secrets can still look at its counts.
TEST(BridgeConfig, TheStatusReaderSkipsTheSecretsButNotThePathChecks) {
  SecretFile open_to_all(0644);
  const std::string text = with_routes(kOut, R"("status_file": "/tmp/s.json", )");
  const auto with_token = [&](const std::string& file) {
    std::string t = text;
    t.replace(t.find(R"("url")"), 0, R"("token_file": ")" + file + R"(", )");
    return t;
  };
  EXPECT_NE(error_of(with_token(open_to_all.path())).find("nats.token_file"), std::string::npos);
  const BridgeConfig c = parse_bridge_config(with_token(open_to_all.path()), Secrets::skip);
  EXPECT_EQ(c.status_file, "/tmp/s.json");
  EXPECT_EQ(c.nats.token, "");
  EXPECT_THROW((void)parse_bridge_config(with_token("relative"), Secrets::skip), BridgeConfigError);
}

TEST(BridgeConfig, NotJsonIsOneLine) {
  const std::string e = error_of("{\"routes\": [");
  EXPECT_EQ(e.rfind("not valid JSON: ", 0), 0u) << e;
  EXPECT_EQ(e.find('\n'), std::string::npos) << e;
}

TEST(BridgeConfig, TheExampleIsValidButForItsPasswordFile) {
  // The example names /etc/qbus/nats-password, which this machine does not have.
  try {
    (void)load_bridge_config(std::string(QBUS_SOURCE_DIR) + "/config/bridge.example.json");
    FAIL() << "the example's password file exists here";
  } catch (const BridgeConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("nats.password_file: file "
                                         "/etc/qbus/nats-password is missing"),
              std::string::npos)
        << e.what();
  }
}

TEST(BridgeConfig, SubjectRoutesMapOnePatternOntoTheOther) {
  const BridgeConfig c = parse_bridge_config(with_routes(
      R"({"name": "s-out", "direction": "outbound", "qbus_subject": "sensors.>",
          "subject": "fleet.web01.sensors.>"},
         {"name": "s-in", "direction": "inbound", "qbus_subject": "remote.*.cmd",
          "subject": "fleet.cmd.*.cmd"})"));
  ASSERT_EQ(c.routes.size(), 2u);
  EXPECT_TRUE(c.routes[0].queue.empty());
  EXPECT_EQ(map_subject("sensors.kitchen.temp", "sensors.>", "fleet.web01.sensors.>"),
            "fleet.web01.sensors.kitchen.temp");
  EXPECT_EQ(map_subject("fleet.cmd.reboot.cmd", "fleet.cmd.*.cmd", "remote.*.cmd"),
            "remote.reboot.cmd");
  EXPECT_EQ(map_subject("a.b", "a.b", "x.y.z"), "x.y.z");
  EXPECT_EQ(map_subject("a.b", ">", "fleet.>"), "fleet.a.b");

  const auto route = [](const std::string& fields) {
    return error_of(with_routes("{" + fields + "}"));
  };
  EXPECT_EQ(route(R"("name": "r", "direction": "outbound", "qbus_subject": "a.>",
                     "subject": "b.*")"),
            "routes[0].subject: must end in the same wildcards as qbus_subject 'a.>' (only the "
            "part before them is mapped)");
  EXPECT_EQ(route(R"("name": "r", "direction": "outbound", "qbus_subject": "a.>",
                     "subject": "b.>", "stream": "S")"),
            "routes[0].stream: is for queue routes only");
  EXPECT_EQ(route(R"("name": "r", "direction": "outbound", "queue": "q", "qbus_subject": "a",
                     "subject": "b")"),
            "routes[0]: give either \"queue\" (to JetStream) or \"qbus_subject\" (to NATS "
            "subjects)");
  EXPECT_NE(route(R"("name": "r", "direction": "outbound", "qbus_subject": "a b",
                     "subject": "b")")
                .find("routes[0].qbus_subject"),
            std::string::npos);
  // Out on fleet.a.>, in from fleet.*.x: a subject both published and consumed.
  EXPECT_NE(error_of(with_routes(
                         R"({"name": "o", "direction": "outbound", "qbus_subject": "a.>",
                    "subject": "fleet.a.>"},
                   {"name": "i", "direction": "inbound", "qbus_subject": "b.*.x",
                    "subject": "fleet.*.x"})"))
                .find("loop: subject"),
            std::string::npos);
  EXPECT_NE(error_of(with_routes(
                         R"({"name": "o", "direction": "outbound", "qbus_subject": "a.>",
                    "subject": "out.>"},
                   {"name": "i", "direction": "inbound", "qbus_subject": "a.in",
                    "subject": "in"})"))
                .find("loop: qbus subjects"),
            std::string::npos);
}

TEST(NatsSubjects, ValidityAndMatching) {
  EXPECT_TRUE(is_valid_nats_subject("a.b.c", false));
  EXPECT_FALSE(is_valid_nats_subject("a..b", false));
  EXPECT_FALSE(is_valid_nats_subject("a b", false));
  EXPECT_FALSE(is_valid_nats_subject("a.*", false));
  EXPECT_TRUE(is_valid_nats_subject("a.*.c", true));
  EXPECT_TRUE(is_valid_nats_subject("a.>", true));
  EXPECT_FALSE(is_valid_nats_subject("a.>.c", true));
  EXPECT_FALSE(is_valid_nats_subject("a.b*", true));
  EXPECT_TRUE(patterns_overlap("a.*.c", "a.b.c"));
  EXPECT_TRUE(patterns_overlap("a.>", "a.b.c"));
  EXPECT_FALSE(patterns_overlap("a.>", "a"));
  EXPECT_FALSE(patterns_overlap("a.*", "a.b.c"));
  EXPECT_TRUE(patterns_overlap("a.b", "a.b"));
  EXPECT_FALSE(patterns_overlap("a.b", "a.b.c"));
  EXPECT_TRUE(patterns_overlap("a.*.c", "a.b.>"));
  EXPECT_TRUE(patterns_overlap(">", "x"));
  EXPECT_FALSE(patterns_overlap("a.*", "a.b.c"));
  EXPECT_FALSE(patterns_overlap("a.b", "a.c"));
}

TEST(BridgeConfig, TheMetricsFileIsOptionalAbsoluteAndEndsInProm) {
  EXPECT_EQ(parse_bridge_config(with_routes(kOut)).metrics_file, "");
  EXPECT_EQ(
      parse_bridge_config(with_routes(kOut, R"("metrics_file": "/run/b/m.prom", )")).metrics_file,
      "/run/b/m.prom");
  EXPECT_NE(error_of(with_routes(kOut, R"("metrics_file": "m.prom", )")).find("metrics_file"),
            std::string::npos);
  EXPECT_EQ(error_of(with_routes(kOut, R"("metrics_file": "/run/b/m.txt", )")),
            "metrics_file: must end in .prom (node_exporter's textfile collector reads only "
            "those)");
}

TEST(BridgeConfig, TheMetricsListenerIsOptionalTcpOrUnix) {
  EXPECT_EQ(parse_bridge_config(with_routes(kOut)).metrics_listen, "") << "off by default";
  const auto listen = [](const std::string& value) {
    return with_routes(kOut, R"("metrics_listen": ")" + value + R"(", )");
  };
  for (const std::string good : {"", "tcp:127.0.0.1:9465", "tcp:127.0.0.1:0", "tcp:[::1]:65535",
                                 "tcp:localhost:9465", "unix:/run/qbus-bridge/metrics.sock"}) {
    EXPECT_EQ(parse_bridge_config(listen(good)).metrics_listen, good);
  }
  const std::string syntax =
      R"(metrics_listen: must be tcp:HOST:PORT or unix:/path, such as "tcp:127.0.0.1:9465")";
  EXPECT_EQ(error_of(listen("127.0.0.1:9465")), syntax);
  EXPECT_EQ(error_of(listen("/run/qbus-bridge/metrics.sock")), syntax) << "unix: is required";
  EXPECT_EQ(error_of(listen("tls:127.0.0.1:9465")), syntax) << "no TLS";
  EXPECT_EQ(error_of(listen("tcp:127.0.0.1")), "metrics_listen: tcp address must be tcp:HOST:PORT");
  EXPECT_EQ(error_of(listen("tcp:127.0.0.1:65536")),
            "metrics_listen: tcp port '65536' is not a number from 0 to 65535");
  EXPECT_EQ(error_of(listen("tcp:127.0.0.1:http")),
            "metrics_listen: tcp port 'http' is not a number from 0 to 65535");
  EXPECT_EQ(error_of(listen("tcp:127.0.0.1:-1")),
            "metrics_listen: tcp port '-1' is not a number from 0 to 65535");
  EXPECT_EQ(error_of(listen("tcp::9465")), "metrics_listen: tcp address must be tcp:HOST:PORT");
  EXPECT_EQ(error_of(listen("unix:")), "metrics_listen: unix address has an empty path");
  EXPECT_EQ(error_of(listen("unix:run/metrics.sock")),
            "metrics_listen: a unix: path must be absolute");
  EXPECT_EQ(error_of(with_routes(kOut, R"("metrics_listen": 9465, )")),
            "metrics_listen: must be a string");
}

TEST(BridgeMetrics, EveryRouteHasItsCountsAndAnInboundOneItsBacklog) {
  const nlohmann::json status = {{"nats", {{"connected", true}, {"url", "nats://x"}}},
                                 {"routes",
                                  {{{"name", "out"},
                                    {"direction", "outbound"},
                                    {"forwarded", 7},
                                    {"acked", 6},
                                    {"retried", 1},
                                    {"failed", 0},
                                    {"qbus_connected", true},
                                    {"backlog", {{"pending", nullptr}}}},
                                   {{"name", "in\"x"},
                                    {"direction", "inbound"},
                                    {"forwarded", 3},
                                    {"acked", 3},
                                    {"retried", 0},
                                    {"failed", 2},
                                    {"qbus_connected", false},
                                    {"backlog", {{"pending", 5}, {"unacked", 1}}}}}}};
  const std::string text = metrics_text(status);
  for (const char* line : {
           "# TYPE qbus_bridge_forwarded_total counter\n",
           "qbus_bridge_forwarded_total{route=\"out\",direction=\"outbound\"} 7\n",
           "qbus_bridge_acked_total{route=\"out\",direction=\"outbound\"} 6\n",
           "qbus_bridge_retried_total{route=\"out\",direction=\"outbound\"} 1\n",
           "qbus_bridge_failed_total{route=\"in\\\"x\",direction=\"inbound\"} 2\n",
           "qbus_bridge_backlog_messages{route=\"in\\\"x\",direction=\"inbound\",state=\"pending\"}"
           " 5\n",
           "qbus_bridge_backlog_messages{route=\"in\\\"x\",direction=\"inbound\",state=\"unacked\"}"
           " 1\n",
           "qbus_bridge_qbus_connected{route=\"out\",direction=\"outbound\"} 1\n",
           "qbus_bridge_qbus_connected{route=\"in\\\"x\",direction=\"inbound\"} 0\n",
           "qbus_bridge_nats_connected 1\n",
       }) {
    EXPECT_NE(text.find(line), std::string::npos) << line << "\nnot in:\n" << text;
  }
  // An outbound route's backlog is qbusd's to tell: no sample rather than a made-up 0.
  EXPECT_EQ(text.find("qbus_bridge_backlog_messages{route=\"out\""), std::string::npos) << text;
}

}  // namespace
}  // namespace qbus::bridge
