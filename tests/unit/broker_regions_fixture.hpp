// The fixture of the broker_regions*_test.cpp files (one test suite, BrokerRegionsTest):
// regions allocated, sent and received through the Broker, over the recording sink and the
// fake backing of BrokerFixture.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string_view>
#include <vector>

#include "broker_fixture.hpp"

namespace qbus::broker::fakes {

inline RegionRef slice(RegionId id, std::uint64_t offset, std::uint64_t length) {
  return RegionRef{id, offset, length};
}

inline bool same_ref(const RegionRef& a, const RegionRef& b) {
  return a.id == b.id && a.offset == b.offset && a.length == b.length;
}

constexpr std::uint64_t kMiB = 1ull << 20;

class BrokerRegionsTest : public BrokerFixture {
 protected:
  const RegionTable& regions() { return broker().regions(); }

  // Connects with an explicit gid (for the group class of a named region's mode).
  PeerId connect_with_gid(std::uint32_t uid, std::uint32_t gid) {
    const PeerId peer = next_peer_++;
    Identity id = identity_for(peer, uid);
    id.gid = gid;
    EXPECT_EQ(broker().connect(peer, id, now_), Errc::ok);
    return peer;
  }

  // Allocates and expects success.
  RegionId allocate(PeerId peer, std::uint64_t size) {
    const RegionGrant g = broker().allocate_region(peer, size);
    EXPECT_TRUE(g.ok()) << g.text;
    EXPECT_NE(g.id, 0u);
    EXPECT_TRUE(g.writable);
    return g.id;
  }

  SendOutcome send_region(PeerId from, RegionRef ref, std::string_view key, bool release = false) {
    RegionSend s;
    s.ref = ref;
    s.kind = proto::RegionTarget::queue;
    s.key = key;
    s.release = release;
    s.correlation = next_correlation_++;
    return broker().send_region(from, s, now_);
  }
  // Sends and expects the message to be accepted.
  void put_region(PeerId from, RegionRef ref, std::string_view key, bool release = false) {
    const SendOutcome out = send_region(from, ref, key, release);
    EXPECT_EQ(out.result, SendResult::accepted) << out.text;
    EXPECT_EQ(out.error, Errc::ok);
  }
  SendOutcome send_region_to(PeerId from, proto::RegionTarget kind, std::uint64_t target,
                             RegionRef ref, std::int32_t wait_ms = 0, bool release = false,
                             bool confirm = false, std::uint64_t* corr = nullptr) {
    RegionSend s;
    s.ref = ref;
    s.kind = kind;
    s.target = target;
    s.wait_ms = wait_ms;
    s.release = release;
    s.confirm = confirm;
    s.correlation = next_correlation_++;
    if (corr) *corr = s.correlation;
    return broker().send_region(from, s, now_);
  }

  std::uint64_t receive_direct(PeerId peer, std::uint32_t max_count = 1,
                               std::int32_t timeout_ms = 0) {
    const std::uint64_t corr = next_correlation_++;
    broker().receive_direct(peer, corr, max_count, timeout_ms, now_);
    return corr;
  }

  std::vector<Delivered> deliveries_to(PeerId peer) const {
    std::vector<Delivered> out;
    for (const auto& d : sink_.deliveries) {
      if (d.to == peer) out.push_back(d);
    }
    return out;
  }

  bool alive(RegionId id) { return regions().find(id) != nullptr; }
  std::uint64_t message_refs(RegionId id) {
    const RegionInfo* r = regions().find(id);
    return r ? r->message_refs : 0;
  }
  std::uint64_t handles(PeerId peer, RegionId id) { return regions().handles_of(peer, id); }
  // How often the backing was asked to destroy `handle`.
  std::size_t destroy_count(int handle) const {
    return static_cast<std::size_t>(
        std::count(backing_.destroyed.begin(), backing_.destroyed.end(), handle));
  }
  std::size_t seal_count(int handle) const {
    return static_cast<std::size_t>(
        std::count(backing_.sealed.begin(), backing_.sealed.end(), handle));
  }
};

}  // namespace qbus::broker::fakes
