// The bridge's one connection to NATS and its JetStream context, shared by every route's
// thread (libnats connections and JetStream contexts are thread-safe). libnats reconnects
// by itself, forever, every reconnect_wait_ms; a publish or fetch while it is away fails
// and the route retries it.
#pragma once

#include <nats/nats.h>

#include <stdexcept>
#include <string>

#include "bridge_config.hpp"

namespace qbus::bridge {

class NatsError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// "what: the status's text (libnats's last error)".
std::string nats_error_text(const std::string& what, natsStatus s);

class NatsLink {
 public:
  // Connects (or, with the server away, keeps trying in the background: the constructor
  // returns and publishes fail until it is back). Throws NatsError for bad settings.
  explicit NatsLink(const BridgeConfig& config);
  ~NatsLink();
  NatsLink(const NatsLink&) = delete;
  NatsLink& operator=(const NatsLink&) = delete;

  jsCtx* js() const { return js_; }
  natsConnection* connection() const { return nc_; }
  bool connected() const;
  const std::string& url() const { return url_; }

 private:
  void release();
  natsOptions* opts_ = nullptr;
  natsConnection* nc_ = nullptr;
  jsCtx* js_ = nullptr;
  std::string url_;
};

}  // namespace qbus::bridge
