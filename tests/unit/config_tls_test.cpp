// The "tcp.tls" section and tcp.allow_plaintext of qbusd.json: paths, the client map with
// names resolved to ids, and every bad value one line naming the field.
#include <gtest/gtest.h>

#include <string>

#include "qbus/config/config.hpp"

namespace qbus::config {
namespace {

Config parse_ok(const std::string& text) {
  auto r = parse(text);
  EXPECT_TRUE(r.config.has_value()) << r.error;
  return r.config.value_or(Config{});
}

std::string error_of(const std::string& text) {
  auto r = parse(text);
  EXPECT_FALSE(r.config.has_value()) << text;
  return r.error;
}

std::string tcp(const std::string& inner) {
  return R"({"tcp": {"listen": "127.0.0.1:7878", "token_file": "/etc/qbus/token", )" + inner + "}}";
}

TEST(ConfigTlsTest, OffAndPlaintextRefusedByDefault) {
  const Config c = parse_ok("{}");
  EXPECT_FALSE(c.tcp_tls.enabled());
  EXPECT_FALSE(c.tcp_allow_plaintext);
  EXPECT_TRUE(parse_ok(tcp(R"("allow_plaintext": true)")).tcp_allow_plaintext);
}

TEST(ConfigTlsTest, FilesAndClientMapParse) {
  const Config c = parse_ok(tcp(R"("tls": {"certificate": "/etc/qbus/cert.pem",
      "key": "/etc/qbus/key.pem", "client_ca": "/etc/qbus/ca.pem",
      "clients": [{"cn": "sensor-1", "uid": 4321}, {"cn": "ops", "user": "nobody"},
                  {"cn": "batch", "uid": 4322, "gid": 77}]})"));
  const auto& t = c.tcp_tls;
  EXPECT_TRUE(t.enabled());
  EXPECT_EQ(t.certificate, "/etc/qbus/cert.pem");
  EXPECT_EQ(t.key, "/etc/qbus/key.pem");
  EXPECT_EQ(t.client_ca, "/etc/qbus/ca.pem");
  ASSERT_EQ(t.clients.size(), 3u);
  EXPECT_EQ(t.clients[0].cn, "sensor-1");
  EXPECT_EQ(t.clients[0].uid, 4321u);
  EXPECT_EQ(t.clients[0].gid, 4321u);   // no passwd entry: only itself
  EXPECT_EQ(t.clients[1].uid, 65534u);  // nobody exists on every Debian system
  EXPECT_EQ(t.clients[1].gid, 65534u);
  EXPECT_EQ(t.clients[2].gid, 77u);
}

struct Bad {
  const char* name;
  std::string text;
  const char* error;
};

class ConfigTlsBadTest : public ::testing::TestWithParam<Bad> {};

TEST_P(ConfigTlsBadTest, IsRejectedNamingTheField) {
  EXPECT_EQ(error_of(GetParam().text), GetParam().error);
}

const Bad kBad[] = {
    {"PlaintextNotBool", tcp(R"("allow_plaintext": "yes")"),
     "tcp.allow_plaintext: must be true or false"},
    {"TlsNotObject", tcp(R"("tls": true)"), "tcp.tls: must be an object, not boolean"},
    {"UnknownKey", tcp(R"("tls": {"cert": "/a"})"), "tcp.tls.cert: unknown setting"},
    {"CertificateWithoutKey", tcp(R"("tls": {"certificate": "/a"})"),
     "tcp.tls.key: is required with tcp.tls.certificate"},
    {"KeyWithoutCertificate", tcp(R"("tls": {"key": "/a"})"),
     "tcp.tls.certificate: is required with tcp.tls.key"},
    {"RelativeCertificate", tcp(R"("tls": {"certificate": "cert.pem", "key": "/k"})"),
     "tcp.tls.certificate: must be an absolute path"},
    {"KeyNotString", tcp(R"("tls": {"certificate": "/c", "key": 1})"),
     "tcp.tls.key: must be a string, not number"},
    {"CaWithoutCertificate", tcp(R"("tls": {"client_ca": "/ca"})"),
     "tcp.tls.client_ca: needs tcp.tls.certificate and tcp.tls.key"},
    {"ClientsWithoutCa",
     tcp(R"("tls": {"certificate": "/c", "key": "/k", "clients": [{"cn": "a", "uid": 1}]})"),
     "tcp.tls.clients: needs tcp.tls.client_ca (only verified certificates are mapped)"},
    {"ClientWithoutCn", tcp(R"("tls": {"certificate": "/c", "key": "/k", "client_ca": "/ca",
                    "clients": [{"uid": 1}]})"),
     "tcp.tls.clients[0].cn: must be the client certificate's subject common name (a non-empty "
     "string)"},
    {"ClientUserAndUid", tcp(R"("tls": {"certificate": "/c", "key": "/k", "client_ca": "/ca",
                    "clients": [{"cn": "a", "uid": 1, "user": "root"}]})"),
     "tcp.tls.clients[0]: needs exactly one of user or uid"},
    {"ClientMappedToRoot", tcp(R"("tls": {"certificate": "/c", "key": "/k", "client_ca": "/ca",
                    "clients": [{"cn": "ops", "user": "root"}]})"),
     "tcp.tls.clients[0]: maps 'ops' to root (uid 0); a client certificate may not act as root"},
    {"ClientUnknownUser", tcp(R"("tls": {"certificate": "/c", "key": "/k", "client_ca": "/ca",
                    "clients": [{"cn": "a", "user": "no-such-user-qbus"}]})"),
     "tcp.tls.clients[0].user: unknown user 'no-such-user-qbus'"},
    {"ClientUidTooLarge", tcp(R"("tls": {"certificate": "/c", "key": "/k", "client_ca": "/ca",
                    "clients": [{"cn": "a", "uid": 4294967295}]})"),
     "tcp.tls.clients[0].uid: must be an id from 0 to 4294967294"},
    {"ClientCnTwice", tcp(R"("tls": {"certificate": "/c", "key": "/k", "client_ca": "/ca",
                    "clients": [{"cn": "a", "uid": 1}, {"cn": "a", "uid": 2}]})"),
     "tcp.tls.clients[1].cn: 'a' is mapped twice"},
    {"ClientUnknownKey", tcp(R"("tls": {"certificate": "/c", "key": "/k", "client_ca": "/ca",
                    "clients": [{"cn": "a", "uid": 1, "groups": [1]}]})"),
     "tcp.tls.clients[0].groups: unknown setting"},
};

INSTANTIATE_TEST_SUITE_P(ConfigTls, ConfigTlsBadTest, ::testing::ValuesIn(kBad),
                         [](const auto& p) { return std::string(p.param.name); });

}  // namespace
}  // namespace qbus::config
