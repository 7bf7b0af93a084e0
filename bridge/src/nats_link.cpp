#include "nats_link.hpp"

#include <algorithm>
#include <vector>

namespace qbus::bridge {

std::string nats_error_text(const std::string& what, natsStatus s) {
  std::string text = what + ": " + natsStatus_GetText(s);
  natsStatus last = NATS_OK;
  if (const char* detail = nats_GetLastError(&last); detail && *detail) {
    text += " (";
    text += detail;
    text += ")";
  }
  return text;
}

namespace {

void check(natsStatus s, const std::string& what) {
  if (s != NATS_OK) throw NatsError(nats_error_text(what, s));
}

}  // namespace

NatsLink::NatsLink(const BridgeConfig& config) : url_(config.nats.url) {
  const NatsSettings& n = config.nats;
  try {
    check(natsOptions_Create(&opts_), "nats options");
    // natsOptions_SetURL takes one server: a cluster's comma-separated list is a server list.
    std::vector<std::string> urls;
    for (std::size_t from = 0; from <= n.url.size();) {
      const std::size_t comma = std::min(n.url.find(',', from), n.url.size());
      urls.push_back(n.url.substr(from, comma - from));
      from = comma + 1;
    }
    std::vector<const char*> servers;
    for (const auto& u : urls)
      servers.push_back(u.c_str());
    check(natsOptions_SetServers(opts_, servers.data(), static_cast<int>(servers.size())),
          "nats.url " + n.url);
    check(natsOptions_SetName(opts_, config.client_name.c_str()), "qbus.name");
    // Forever: a bridge outlives any outage of the server; messages wait in qbus meanwhile.
    check(natsOptions_SetMaxReconnect(opts_, -1), "nats reconnect");
    check(natsOptions_SetReconnectWait(opts_, n.reconnect_wait_ms), "nats.reconnect_wait_ms");
    check(natsOptions_SetRetryOnFailedConnect(opts_, true, nullptr, nullptr),
          "nats retry on failed connect");
    // libnats otherwise holds what is not a request (async publishes, acks, pull requests)
    // up to 1 ms for more to write with it: that wait was most of a message's trip through
    // the bridge. Batches are written in one go anyway.
    check(natsOptions_SetSendAsap(opts_, true), "nats send asap");
    if (!n.user.empty()) {
      check(natsOptions_SetUserInfo(opts_, n.user.c_str(), n.password.c_str()), "nats.user");
    }
    if (!n.token.empty()) check(natsOptions_SetToken(opts_, n.token.c_str()), "nats.token_file");
    if (!n.creds_file.empty()) {
      check(natsOptions_SetUserCredentialsFromFiles(opts_, n.creds_file.c_str(), nullptr),
            "nats.creds_file " + n.creds_file);
    }
    if (!n.tls_ca.empty() || !n.tls_certificate.empty()) {
      check(natsOptions_SetSecure(opts_, true), "nats.tls");
      if (!n.tls_ca.empty()) {
        check(natsOptions_LoadCATrustedCertificates(opts_, n.tls_ca.c_str()),
              "nats.tls.ca " + n.tls_ca);
      }
      if (!n.tls_certificate.empty()) {
        check(
            natsOptions_LoadCertificatesChain(opts_, n.tls_certificate.c_str(), n.tls_key.c_str()),
            "nats.tls.certificate " + n.tls_certificate);
      }
    }
    // With retry on failed connect, NATS_NOT_YET_CONNECTED means "trying in the background".
    const natsStatus s = natsConnection_Connect(&nc_, opts_);
    if (s != NATS_OK && s != NATS_NOT_YET_CONNECTED) check(s, "cannot connect to " + n.url);
    check(natsConnection_JetStream(&js_, nc_, nullptr), "JetStream context");
  } catch (...) {
    release();
    throw;
  }
}

NatsLink::~NatsLink() {
  release();
}

void NatsLink::release() {
  if (js_) jsCtx_Destroy(js_);
  js_ = nullptr;
  if (nc_) {
    natsConnection_Close(nc_);
    natsConnection_Destroy(nc_);
  }
  nc_ = nullptr;
  if (opts_) natsOptions_Destroy(opts_);
  opts_ = nullptr;
}

bool NatsLink::connected() const {
  return nc_ && natsConnection_Status(nc_) == NATS_CONN_STATUS_CONNECTED;
}

}  // namespace qbus::bridge
