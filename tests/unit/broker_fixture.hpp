// The fixture the broker's unit tests share: a Broker built on first use (tests adjust
// limits_ before), a RecordingSink and a FakeBacking, peers with made-up kernel
// identities, and the verbs most tests need. Time is a value the tests advance.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "broker/broker.hpp"
#include "qbus/proto/headers.hpp"
#include "recording_sink.hpp"

namespace qbus::broker::fakes {

class BrokerFixture : public ::testing::Test {
 protected:
  Broker& broker() {
    if (!broker_) broker_.emplace(limits_, sink_, backing_);
    return *broker_;
  }
  void destroy_broker() { broker_.reset(); }

  // A local process of its own: pid 10'000 + peer. As at the edge, the client id is the
  // PeerId.
  Identity identity_for(PeerId peer, std::uint32_t uid) const {
    Identity id;
    id.pid = static_cast<std::uint32_t>(10'000 + peer);
    id.uid = uid;
    id.gid = uid + 1;
    id.client_id = peer;
    id.process_token = 1;
    return id;
  }
  // Connects a new peer with `uid` and expects success.
  PeerId connect(std::uint32_t uid = 1000) {
    const PeerId peer = next_peer_++;
    EXPECT_EQ(broker().connect(peer, identity_for(peer, uid), now_), Errc::ok);
    return peer;
  }
  // Connects one more connection of the local process `pid` (started at `token`).
  PeerId connect_process(std::uint32_t pid, std::uint64_t token = 1, std::uint32_t uid = 1000) {
    const PeerId peer = next_peer_++;
    Identity id = identity_for(peer, uid);
    id.pid = pid;
    id.process_token = token;
    EXPECT_EQ(broker().connect(peer, id, now_), Errc::ok);
    return peer;
  }
  // Connects a TCP peer: no pid, the shared TCP uid.
  PeerId connect_tcp() {
    const PeerId peer = next_peer_++;
    Identity id;
    id.uid = kTcpUid;
    id.gid = kTcpUid;
    id.client_id = peer;
    id.tcp = true;
    EXPECT_EQ(broker().connect(peer, id, now_), Errc::ok);
    return peer;
  }
  std::uint32_t pid_of(PeerId peer) const { return static_cast<std::uint32_t>(10'000 + peer); }

  SendOutcome send(PeerId from, std::string_view key, std::string_view payload) {
    return broker().send(from, key, bytes_of(payload), now_);
  }
  // Sends and expects the message to be accepted.
  void put(PeerId from, std::string_view key, std::string_view payload) {
    const auto out = send(from, key, payload);
    EXPECT_EQ(out.result, SendResult::accepted) << out.text;
    EXPECT_EQ(out.error, Errc::ok);
  }
  // Issues a receive and returns its correlation id.
  std::uint64_t receive(PeerId peer, std::string_view key, std::uint32_t max_count = 1,
                        std::int32_t timeout_ms = -1) {
    const std::uint64_t corr = next_correlation_++;
    broker().receive(peer, corr, key, max_count, timeout_ms, now_);
    return corr;
  }
  std::uint64_t receive_now(PeerId peer, std::string_view key, std::uint32_t max_count = 1) {
    return receive(peer, key, max_count, 0);
  }
  // Declares as the configuration does: the queue is nobody's and stays.
  Errc declare(std::string_view key, const QueueOptions& o, std::string* text = nullptr) {
    std::string t;
    const Errc e = broker().declare_configured(key, o, t);
    if (text) *text = t;
    return e;
  }
  // Declares as a client's DECLARE does: `peer` becomes the declarer.
  Errc declare_by(PeerId peer, std::string_view key, const QueueOptions& o = {},
                  std::string* text = nullptr) {
    std::string t;
    const Errc e = broker().declare(peer, key, o, t);
    if (text) *text = t;
    return e;
  }

  std::vector<Failure> failures_to(PeerId peer) const {
    std::vector<Failure> out;
    for (const auto& f : sink_.failures) {
      if (f.to == peer) out.push_back(f);
    }
    return out;
  }
  std::size_t depth(std::string_view key) {
    const Queue* q = broker().find(key);
    return q ? q->depth() : 0;
  }
  // Bytes and messages charged to `uid`; zeros when it has no entry.
  UidUsage usage_of(std::uint32_t uid) {
    const UidUsage* u = broker().accounting().find(uid);
    return u ? *u : UidUsage{};
  }

  void advance(Clock::duration d) { now_ += d; }

  const Clock::time_point t0_ = Clock::time_point{} + std::chrono::hours(1000);
  Clock::time_point now_ = t0_;
  Limits limits_;
  FakeBacking backing_;
  RecordingSink sink_{backing_};
  std::uint64_t next_correlation_ = 1;
  PeerId next_peer_ = 1;

 private:
  std::optional<Broker> broker_;
};

// The fixture of the broker_*_test.cpp files (one test suite, BrokerTest, over the files
// that split it by concern): direct sends, replies, requests and what the sink recorded.
class BrokerTest : public BrokerFixture {
 protected:
  Errc try_connect(std::uint32_t uid) {
    const PeerId peer = next_peer_++;
    return broker().connect(peer, identity_for(peer, uid), now_);
  }

  // Direct messages. The correlation of a send is returned through `corr` when asked for.
  SendOutcome send_to_pid(PeerId from, std::uint32_t pid, std::string_view payload,
                          std::int32_t wait_ms = 0, bool confirm = false,
                          std::uint64_t* corr = nullptr) {
    DirectSend d;
    d.kind = proto::TargetKind::pid;
    d.target = pid;
    d.wait_ms = wait_ms;
    d.confirm = confirm;
    d.correlation = next_correlation_++;
    if (corr) *corr = d.correlation;
    return broker().send_direct(from, d, bytes_of(payload), now_);
  }
  SendOutcome send_to_client(PeerId from, std::uint64_t client_id, std::string_view payload,
                             std::int32_t wait_ms = 0) {
    DirectSend d;
    d.kind = proto::TargetKind::client_id;
    d.target = client_id;
    d.wait_ms = wait_ms;
    d.correlation = next_correlation_++;
    return broker().send_direct(from, d, bytes_of(payload), now_);
  }
  // A reply as a receiver sends it: to the requester's client id, naming the request.
  SendOutcome reply(PeerId from, std::uint64_t requester, std::uint64_t request_id,
                    std::string_view payload) {
    DirectSend d;
    d.kind = proto::TargetKind::client_id;
    d.target = requester;
    d.in_reply_to = request_id;
    d.correlation = next_correlation_++;
    return broker().send_direct(from, d, bytes_of(payload), now_);
  }
  std::uint64_t receive_direct(PeerId peer, std::uint32_t max_count = 1,
                               std::int32_t timeout_ms = -1) {
    const std::uint64_t corr = next_correlation_++;
    broker().receive_direct(peer, corr, max_count, timeout_ms, now_);
    return corr;
  }
  std::uint64_t receive_direct_now(PeerId peer, std::uint32_t max_count = 1) {
    return receive_direct(peer, max_count, 0);
  }
  SendOutcome request(PeerId from, std::uint64_t request_id, std::string_view key,
                      std::string_view payload, std::int32_t timeout_ms = -1) {
    return broker().request(from, request_id, key, bytes_of(payload), timeout_ms, now_);
  }

  // Acknowledgement mode: the tag of the last delivery to `peer`.
  std::uint64_t last_tag(PeerId peer) const {
    for (auto it = sink_.deliveries.rbegin(); it != sink_.deliveries.rend(); ++it)
      if (it->to == peer) return it->tag;
    return 0;
  }
  const Queue& queue(std::string_view key) {
    const Queue* q = broker().find(key);
    EXPECT_NE(q, nullptr) << key;
    return *q;
  }
  // The value of header `name` in a delivered header block; "<none>" when absent.
  static std::string header_value(const std::string& block, std::string_view name) {
    std::string_view v;
    const auto b = bytes_of(block);
    return proto::find_header(b, name, v) ? std::string(v) : std::string("<none>");
  }

  std::vector<std::string> payloads_to(PeerId peer) const {
    std::vector<std::string> out;
    for (const auto& d : sink_.deliveries) {
      if (d.to == peer) out.push_back(d.payload);
    }
    return out;
  }
  std::vector<std::string> all_payloads() const {
    std::vector<std::string> out;
    for (const auto& d : sink_.deliveries)
      out.push_back(d.payload);
    return out;
  }

  std::size_t accounting_entries() {
    std::size_t n = 0;
    broker().accounting().for_each([&](std::uint32_t, const UidUsage&) { ++n; });
    return n;
  }
};

}  // namespace qbus::broker::fakes
