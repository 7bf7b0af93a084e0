// Unit tests for broker addresses (proto/address.hpp).
#include <gtest/gtest.h>

#include <string>

#include "qbus/proto/address.hpp"

namespace qbus::proto {
namespace {

// ---- addresses ------------------------------------------------------------------------

TEST(codec_address, UnixPrefixGivesAUnixPath) {
  std::string error;
  const auto a = parse_address("unix:/run/qbus/qbus.sock", error);
  ASSERT_TRUE(a) << error;
  EXPECT_EQ(a->kind, Address::Kind::unix_socket);
  EXPECT_EQ(a->path, "/run/qbus/qbus.sock");
  EXPECT_EQ(a->to_string(), "unix:/run/qbus/qbus.sock");
}

TEST(codec_address, BareAbsolutePathIsAUnixAddress) {
  std::string error;
  const auto a = parse_address("/tmp/q.sock", error);
  ASSERT_TRUE(a) << error;
  EXPECT_EQ(a->kind, Address::Kind::unix_socket);
  EXPECT_EQ(a->path, "/tmp/q.sock");
  EXPECT_EQ(a->to_string(), "unix:/tmp/q.sock");
}

TEST(codec_address, TcpHostAndPort) {
  std::string error;
  const auto a = parse_address("tcp:127.0.0.1:7878", error);
  ASSERT_TRUE(a) << error;
  EXPECT_EQ(a->kind, Address::Kind::tcp);
  EXPECT_EQ(a->host, "127.0.0.1");
  EXPECT_EQ(a->port, 7878);
  EXPECT_EQ(a->to_string(), "tcp:127.0.0.1:7878");
  const auto named = parse_address("tcp:localhost:65535", error);
  ASSERT_TRUE(named) << error;
  EXPECT_EQ(named->host, "localhost");
  EXPECT_EQ(named->port, 65535);
}

TEST(codec_address, TlsIsATcpAddressWithTls) {
  std::string error;
  const auto a = parse_address("tls:127.0.0.1:7878", error);
  ASSERT_TRUE(a) << error;
  EXPECT_EQ(a->kind, Address::Kind::tcp);
  EXPECT_TRUE(a->tls);
  EXPECT_EQ(a->host, "127.0.0.1");
  EXPECT_EQ(a->port, 7878);
  EXPECT_EQ(a->to_string(), "tls:127.0.0.1:7878");
  EXPECT_FALSE(parse_address("tcp:127.0.0.1:7878", error)->tls);
  EXPECT_FALSE(parse_address("tls:7878", error));
  EXPECT_EQ(error, "tls address must be tls:HOST:PORT");
  EXPECT_FALSE(parse_address("tls:host:0", error));
  EXPECT_EQ(error, "tls port '0' is not a number from 1 to 65535");
  EXPECT_FALSE(parse_address("ssl:host:1", error));
  EXPECT_EQ(error, "address 'ssl:host:1' must start with unix:, tcp: or tls:");
}

TEST(codec_address, TcpBracketedIpv6HostLosesItsBrackets) {
  std::string error;
  const auto a = parse_address("tcp:[::1]:7878", error);
  ASSERT_TRUE(a) << error;
  EXPECT_EQ(a->kind, Address::Kind::tcp);
  EXPECT_EQ(a->host, "::1");
  EXPECT_EQ(a->port, 7878);
}

TEST(codec_address, TcpBadPortIsRejected) {
  for (std::string_view text : {"tcp:host:0", "tcp:host:65536", "tcp:host:http", "tcp:host:",
                                "tcp:host:80x", "tcp:host:-1", "tcp:host:99999999999"}) {
    std::string error;
    EXPECT_FALSE(parse_address(text, error)) << text;
    EXPECT_NE(error.find("port"), std::string::npos) << text << ": " << error;
  }
}

TEST(codec_address, TcpWithoutHostOrPortIsRejected) {
  for (std::string_view text : {"tcp:", "tcp:host", "tcp::80"}) {
    std::string error;
    EXPECT_FALSE(parse_address(text, error)) << text;
    EXPECT_FALSE(error.empty()) << text;
  }
}

TEST(codec_address, MissingSchemeIsRejected) {
  for (std::string_view text : {"", "qbus.sock", "relative/path.sock", "udp:1.2.3.4:5"}) {
    std::string error;
    EXPECT_FALSE(parse_address(text, error)) << text;
    EXPECT_NE(error.find("unix:, tcp: or tls:"), std::string::npos) << text << ": " << error;
  }
}

TEST(codec_address, EmptyUnixPathIsRejected) {
  std::string error;
  EXPECT_FALSE(parse_address("unix:", error));
  EXPECT_NE(error.find("empty"), std::string::npos) << error;
}

TEST(codec_address, UnixPathMustFitInSockaddrUn) {
  std::string error;
  const std::string longest = "/" + std::string(106, 'p');  // 107 bytes + NUL = 108
  EXPECT_TRUE(parse_address("unix:" + longest, error)) << error;
  EXPECT_TRUE(parse_address(longest, error)) << error;
  const std::string too_long = longest + "p";
  EXPECT_FALSE(parse_address("unix:" + too_long, error));
  EXPECT_NE(error.find("longer than 107"), std::string::npos) << error;
  error.clear();
  EXPECT_FALSE(parse_address(too_long, error));
  EXPECT_FALSE(error.empty());
}

}  // namespace
}  // namespace qbus::proto
