// Unit tests of shared-memory regions seen through the broker core (proto/PROTOCOL.md
// section 16): allocation and quotas, region messages to queues, inboxes, parked sends and
// TCP peers, reclaiming regions when their last reference goes, refusals, accounting, named
// regions and totals. The memory is a recording fake; time is a value the tests pass in.
#include "broker/broker.hpp"

#include "broker_fixture.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace qbus::broker {
namespace {

using namespace std::chrono_literals;

using fakes::bytes_of;
using fakes::Confirmation;
using fakes::Delivered;
using fakes::Failure;
using fakes::options;
using fakes::RecordingSink;

RegionRef slice(RegionId id, std::uint64_t offset, std::uint64_t length) {
  return RegionRef{id, offset, length};
}

bool same_ref(const RegionRef& a, const RegionRef& b) {
  return a.id == b.id && a.offset == b.offset && a.length == b.length;
}

constexpr std::uint64_t kMiB = 1ull << 20;

class BrokerRegionsTest : public fakes::BrokerFixture {
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

// ---- allocation and quotas -------------------------------------------------------------

TEST_F(BrokerRegionsTest, AllocateChargesThePeersUidAndGivesItOneWritableHandle) {
  const PeerId p = connect(1000);
  const RegionId id = allocate(p, 4096);

  ASSERT_EQ(backing_.created.size(), 1u);
  EXPECT_EQ(backing_.created[0].size, 4096u);
  EXPECT_EQ(handles(p, id), 1u);
  const RegionInfo* info = regions().find(id);
  ASSERT_NE(info, nullptr);
  EXPECT_EQ(info->owner, p);
  EXPECT_EQ(info->owner_uid, 1000u);
  EXPECT_EQ(info->owner_pid, pid_of(p));
  EXPECT_EQ(info->size, 4096u);
  EXPECT_FALSE(info->sealed);
  EXPECT_FALSE(info->named);
  EXPECT_EQ(regions().uid_usage(1000).bytes, 4096u);
  EXPECT_EQ(regions().uid_usage(1000).regions, 1u);
  EXPECT_EQ(regions().uid_usage(2000).regions, 0u);
}

TEST_F(BrokerRegionsTest, AllocateRefusesOverTheUidByteQuotaAcrossConnections) {
  limits_.regions.uid_max_region_bytes = 8192;
  const PeerId a = connect(1000);
  const PeerId b = connect(1000);
  const PeerId other = connect(2000);
  allocate(a, 8000);

  const RegionGrant g = broker().allocate_region(b, 500);
  EXPECT_EQ(g.error, Errc::quota_exceeded);
  EXPECT_EQ(g.id, 0u);
  EXPECT_EQ(backing_.created.size(), 1u);  // refused before the backing is asked
  EXPECT_EQ(regions().uid_usage(1000).bytes, 8000u);
  EXPECT_EQ(regions().count(), 1u);

  allocate(b, 192);       // exactly up to the limit
  allocate(other, 8192);  // another uid has a quota of its own
}

TEST_F(BrokerRegionsTest, AllocateRefusesOverTheUidRegionCount) {
  limits_.regions.uid_max_regions = 2;
  const PeerId a = connect(1000);
  const PeerId other = connect(2000);
  allocate(a, 1);
  allocate(a, 1);

  const RegionGrant g = broker().allocate_region(a, 1);
  EXPECT_EQ(g.error, Errc::quota_exceeded);
  EXPECT_EQ(backing_.created.size(), 2u);
  allocate(other, 1);
}

TEST_F(BrokerRegionsTest, AllocateRefusesOverTheGlobalRegionCount) {
  limits_.regions.max_regions = 2;
  const PeerId a = connect(1000);
  const PeerId b = connect(2000);
  const PeerId c = connect(3000);
  allocate(a, 1);
  allocate(b, 1);

  const RegionGrant g = broker().allocate_region(c, 1);
  EXPECT_EQ(g.error, Errc::quota_exceeded);
  EXPECT_EQ(backing_.created.size(), 2u);
  EXPECT_EQ(regions().uid_usage(3000).regions, 0u);
}

TEST_F(BrokerRegionsTest, AllocateRefusesSizeZeroAndSizeOverMaxRegionBytes) {
  limits_.regions.max_region_bytes = 1 * kMiB;
  const PeerId a = connect();

  EXPECT_EQ(broker().allocate_region(a, 0).error, Errc::payload_too_large);
  EXPECT_EQ(broker().allocate_region(a, kMiB + 1).error, Errc::payload_too_large);
  EXPECT_TRUE(backing_.created.empty());
  EXPECT_EQ(regions().count(), 0u);
  EXPECT_EQ(regions().uid_usage(1000).regions, 0u);

  allocate(a, kMiB);
}

TEST_F(BrokerRegionsTest, AllocatePassesABackingRefusalThroughAndChargesNothing) {
  const PeerId a = connect();
  backing_.create_error = Errc::quota_exceeded;

  const RegionGrant g = broker().allocate_region(a, 4096);
  EXPECT_EQ(g.error, Errc::quota_exceeded);
  EXPECT_EQ(g.id, 0u);
  EXPECT_EQ(regions().count(), 0u);
  EXPECT_EQ(regions().uid_usage(1000).bytes, 0u);
  EXPECT_TRUE(backing_.destroyed.empty());
}

TEST_F(BrokerRegionsTest, AllocateByAnUnknownPeerIsAnInternalError) {
  EXPECT_EQ(broker().allocate_region(99, 4096).error, Errc::internal_error);
  EXPECT_TRUE(backing_.created.empty());
}

TEST_F(BrokerRegionsTest, AFreedRegionGivesItsQuotaBack) {
  limits_.regions.uid_max_region_bytes = 4096;
  limits_.regions.uid_max_regions = 1;
  const PeerId a = connect();
  const RegionId first = allocate(a, 4096);
  EXPECT_EQ(broker().allocate_region(a, 1).error, Errc::quota_exceeded);

  EXPECT_TRUE(broker().release_region(a, first).ok());
  EXPECT_FALSE(alive(first));
  const RegionId second = allocate(a, 4096);
  EXPECT_NE(second, first);  // ids are never reused
}

// ---- region messages to queues ----------------------------------------------------------

TEST_F(BrokerRegionsTest, RegionMessageToAWaitingReceiverIsDeliveredAsTheSliceWithEmptyPayload) {
  const PeerId sender = connect(1000);
  const PeerId receiver = connect(2000);
  const RegionId id = allocate(sender, 4096);
  const int h = regions().backing_handle(id);
  const std::uint64_t c1 = receive(receiver, "jobs");
  const std::uint64_t c2 = receive(receiver, "jobs");

  put_region(sender, slice(id, 16, 100), "jobs");
  put_region(sender, slice(id, 200, 50), "jobs");

  const auto got = deliveries_to(receiver);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].correlation, c1);
  EXPECT_EQ(got[1].correlation, c2);
  EXPECT_TRUE(same_ref(got[0].region, slice(id, 16, 100)));
  EXPECT_TRUE(same_ref(got[1].region, slice(id, 200, 50)));
  for (const auto& d : got) {
    EXPECT_TRUE(d.payload.empty());
    EXPECT_EQ(d.key, "jobs");
    EXPECT_TRUE(d.last);
    EXPECT_EQ(d.request_id, 0u);
    EXPECT_EQ(d.sender.client_id, sender);
    EXPECT_EQ(d.sender.uid, 1000u);
  }
  // One handle per delivery, even of a region already held.
  EXPECT_EQ(handles(receiver, id), 2u);
  EXPECT_EQ(handles(sender, id), 1u);
  EXPECT_EQ(message_refs(id), 0u);
  EXPECT_EQ(depth("jobs"), 0u);
  // Sealed once, before the first hand-over.
  EXPECT_EQ(seal_count(h), 1u);
  EXPECT_EQ(backing_.sealed.size(), 1u);
  EXPECT_TRUE(regions().find(id)->sealed);
}

TEST_F(BrokerRegionsTest, RegionMessageWithoutReceiverIsQueuedWithAMessageRef) {
  const PeerId sender = connect();
  const PeerId receiver = connect();
  const RegionId id = allocate(sender, 4096);

  put_region(sender, slice(id, 0, 4096), "jobs");
  EXPECT_EQ(depth("jobs"), 1u);
  EXPECT_EQ(message_refs(id), 1u);
  EXPECT_EQ(handles(sender, id), 1u);
  EXPECT_TRUE(sink_.deliveries.empty());
  const Queue* q = broker().find("jobs");
  ASSERT_NE(q, nullptr);
  ASSERT_EQ(q->depth(), 1u);
  EXPECT_TRUE(same_ref(q->front().meta.region, slice(id, 0, 4096)));
  EXPECT_TRUE(q->front().payload.empty());

  receive_now(receiver, "jobs");
  const auto got = deliveries_to(receiver);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_TRUE(same_ref(got[0].region, slice(id, 0, 4096)));
  EXPECT_TRUE(got[0].payload.empty());
  // The message's reference moved to a handle of the receiver.
  EXPECT_EQ(message_refs(id), 0u);
  EXPECT_EQ(handles(receiver, id), 1u);
  EXPECT_EQ(handles(sender, id), 1u);
}

TEST_F(BrokerRegionsTest, ReleaseFlagDropsTheSendersHandleAndTheReceiverKeepsTheRegionAlive) {
  const PeerId sender = connect(1000);
  const PeerId receiver = connect(2000);
  const RegionId id = allocate(sender, 4096);
  const int h = regions().backing_handle(id);

  put_region(sender, slice(id, 0, 10), "jobs", /*release=*/true);
  EXPECT_EQ(handles(sender, id), 0u);
  EXPECT_TRUE(alive(id));  // the queued message holds it
  EXPECT_EQ(message_refs(id), 1u);

  receive_now(receiver, "jobs");
  ASSERT_EQ(sink_.deliveries.size(), 1u);
  // The message's reference kept the region alive through the hand-over.
  EXPECT_EQ(sink_.deliveries[0].destroyed_before, 0u);
  EXPECT_TRUE(alive(id));
  EXPECT_TRUE(backing_.destroyed.empty());
  EXPECT_EQ(handles(receiver, id), 1u);

  EXPECT_EQ(broker().release_region(sender, id).error, Errc::no_such_region);
  EXPECT_TRUE(broker().release_region(receiver, id).ok());
  EXPECT_FALSE(alive(id));
  EXPECT_EQ(destroy_count(h), 1u);
  // The owner's uid got its charge back, though the receiver released it.
  EXPECT_EQ(regions().uid_usage(1000).bytes, 0u);
  EXPECT_EQ(regions().uid_usage(1000).regions, 0u);
  EXPECT_EQ(broker().release_region(receiver, id).error, Errc::no_such_region);
  EXPECT_EQ(destroy_count(h), 1u);
}

TEST_F(BrokerRegionsTest, SlicesOfOneRegionAreDeliveredInOrderAndTheRegionLivesUntilAllAreDone) {
  const PeerId sender = connect();
  const PeerId receiver = connect();
  const RegionId id = allocate(sender, 300);
  const int h = regions().backing_handle(id);

  put_region(sender, slice(id, 0, 100), "jobs");
  put_region(sender, slice(id, 100, 150), "jobs");
  put_region(sender, slice(id, 250, 50), "jobs", /*release=*/true);
  EXPECT_EQ(message_refs(id), 3u);
  EXPECT_EQ(handles(sender, id), 0u);
  EXPECT_EQ(seal_count(h), 1u);

  receive_now(receiver, "jobs");  // takes the first only
  EXPECT_EQ(message_refs(id), 2u);
  EXPECT_TRUE(broker().release_region(receiver, id).ok());
  EXPECT_TRUE(alive(id));  // two messages still refer to it

  receive_now(receiver, "jobs", 10);
  const auto got = deliveries_to(receiver);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_TRUE(same_ref(got[0].region, slice(id, 0, 100)));
  EXPECT_TRUE(same_ref(got[1].region, slice(id, 100, 150)));
  EXPECT_TRUE(same_ref(got[2].region, slice(id, 250, 50)));
  EXPECT_TRUE(got[0].last);
  EXPECT_FALSE(got[1].last);
  EXPECT_TRUE(got[2].last);
  EXPECT_EQ(message_refs(id), 0u);
  EXPECT_EQ(handles(receiver, id), 2u);

  EXPECT_TRUE(broker().release_region(receiver, id).ok());
  EXPECT_TRUE(alive(id));
  EXPECT_TRUE(broker().release_region(receiver, id).ok());
  EXPECT_FALSE(alive(id));
  EXPECT_EQ(destroy_count(h), 1u);
}

TEST_F(BrokerRegionsTest, AReceiverCanForwardARegionItReceivedWithoutSealingItAgain) {
  const PeerId a = connect();
  const PeerId b = connect();
  const PeerId c = connect();
  const RegionId id = allocate(a, 64);
  const int h = regions().backing_handle(id);
  put_region(a, slice(id, 0, 64), "first", /*release=*/true);
  receive_now(b, "first");

  put_region(b, slice(id, 8, 8), "second", /*release=*/true);
  EXPECT_EQ(handles(b, id), 0u);
  receive_now(c, "second");
  const auto got = deliveries_to(c);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_TRUE(same_ref(got[0].region, slice(id, 8, 8)));
  EXPECT_EQ(got[0].sender.client_id, b);
  EXPECT_EQ(seal_count(h), 1u);

  EXPECT_TRUE(broker().release_region(c, id).ok());
  EXPECT_FALSE(alive(id));
}

TEST_F(BrokerRegionsTest, RegionLengthIsNotBoundByMaxPayload) {
  limits_.max_payload = 1024;
  const PeerId sender = connect();
  const PeerId receiver = connect();
  const RegionId id = allocate(sender, 4 * kMiB);

  put_region(sender, slice(id, 0, 4 * kMiB), "big");
  receive_now(receiver, "big");
  ASSERT_EQ(sink_.deliveries.size(), 1u);
  EXPECT_EQ(sink_.deliveries[0].region.length, 4 * kMiB);
}

// ---- reclaiming -------------------------------------------------------------------------

TEST_F(BrokerRegionsTest, DisconnectOfTheAllocatorDestroysAnUnsentRegion) {
  const PeerId a = connect(1000);
  const RegionId id = allocate(a, 4096);
  const RegionId id2 = allocate(a, 4096);
  const int h = regions().backing_handle(id);
  const int h2 = regions().backing_handle(id2);

  broker().disconnect(a, now_);
  EXPECT_FALSE(alive(id));
  EXPECT_FALSE(alive(id2));
  EXPECT_EQ(destroy_count(h), 1u);
  EXPECT_EQ(destroy_count(h2), 1u);
  EXPECT_EQ(regions().uid_usage(1000).regions, 0u);
  EXPECT_EQ(regions().count(), 0u);
}

TEST_F(BrokerRegionsTest, AQueuedRegionMessageOutlivesItsSendersConnection) {
  const PeerId sender = connect();
  const PeerId receiver = connect();
  const RegionId id = allocate(sender, 4096);
  put_region(sender, slice(id, 0, 1), "jobs");

  broker().disconnect(sender, now_);
  EXPECT_TRUE(alive(id));
  EXPECT_EQ(message_refs(id), 1u);

  receive_now(receiver, "jobs");
  ASSERT_EQ(deliveries_to(receiver).size(), 1u);
  EXPECT_TRUE(alive(id));
  EXPECT_TRUE(broker().release_region(receiver, id).ok());
  EXPECT_FALSE(alive(id));
  EXPECT_EQ(backing_.destroyed.size(), 1u);
}

TEST_F(BrokerRegionsTest, DisconnectOfAReceiverHoldingADeliveredRegionDestroysIt) {
  const PeerId sender = connect();
  const PeerId receiver = connect();
  const RegionId id = allocate(sender, 4096);
  const int h = regions().backing_handle(id);
  put_region(sender, slice(id, 0, 1), "jobs");
  put_region(sender, slice(id, 1, 1), "jobs", /*release=*/true);
  EXPECT_EQ(handles(sender, id), 0u);
  receive_now(receiver, "jobs", 2);
  EXPECT_EQ(handles(receiver, id), 2u);
  EXPECT_EQ(message_refs(id), 0u);
  EXPECT_TRUE(alive(id));
  broker().disconnect(receiver, now_);
  EXPECT_FALSE(alive(id));
  EXPECT_EQ(destroy_count(h), 1u);
}

TEST_F(BrokerRegionsTest, PurgeDropsQueuedRegionMessagesAndFreesRegionsNothingElseHolds) {
  const PeerId sender = connect(1000);
  const RegionId released = allocate(sender, 64);
  const RegionId kept = allocate(sender, 64);
  const int hr = regions().backing_handle(released);
  const int hk = regions().backing_handle(kept);
  put_region(sender, slice(released, 0, 8), "jobs", /*release=*/true);
  EXPECT_EQ(handles(sender, released), 0u);
  put_region(sender, slice(kept, 0, 8), "jobs");
  EXPECT_EQ(usage_of(1000).queued_messages, 2u);

  EXPECT_EQ(broker().purge("jobs"), std::optional<std::size_t>(2));
  EXPECT_FALSE(alive(released));
  EXPECT_EQ(destroy_count(hr), 1u);
  EXPECT_TRUE(alive(kept));  // its allocator still holds it
  EXPECT_EQ(message_refs(kept), 0u);
  EXPECT_EQ(destroy_count(hk), 0u);
  EXPECT_EQ(usage_of(1000).queued_messages, 0u);

  EXPECT_TRUE(broker().release_region(sender, kept).ok());
  EXPECT_EQ(destroy_count(hk), 1u);
}

TEST_F(BrokerRegionsTest, RemovingAQueueDropsItsRegionMessagesAndFreesTheirRegions) {
  const PeerId sender = connect();
  const RegionId id = allocate(sender, 64);
  const int h = regions().backing_handle(id);
  put_region(sender, slice(id, 0, 8), "jobs");
  put_region(sender, slice(id, 8, 8), "jobs", /*release=*/true);

  EXPECT_EQ(broker().remove("jobs"), std::optional<std::size_t>(2));
  EXPECT_EQ(broker().find("jobs"), nullptr);
  EXPECT_FALSE(alive(id));
  EXPECT_EQ(destroy_count(h), 1u);
}

TEST_F(BrokerRegionsTest, DropOldestOverflowDropsARegionMessageAndFreesItsRegion) {
  ASSERT_EQ(declare("ring", options(1, 1024, Overflow::drop_oldest)), Errc::ok);
  const PeerId sender = connect();
  const PeerId receiver = connect();
  const RegionId first = allocate(sender, 64);
  const RegionId second = allocate(sender, 64);
  const int h1 = regions().backing_handle(first);
  put_region(sender, slice(first, 0, 64), "ring", /*release=*/true);

  put_region(sender, slice(second, 0, 64), "ring", /*release=*/true);
  EXPECT_FALSE(alive(first));
  EXPECT_EQ(destroy_count(h1), 1u);
  EXPECT_EQ(broker().find("ring")->counters().dropped_total, 1u);
  EXPECT_EQ(depth("ring"), 1u);
  EXPECT_EQ(message_refs(second), 1u);

  receive_now(receiver, "ring");
  ASSERT_EQ(sink_.deliveries.size(), 1u);
  EXPECT_EQ(sink_.deliveries[0].region.id, second);
}

TEST_F(BrokerRegionsTest, InboxOfAProcessWhoseLastConnectionClosesDropsItsRegionMessages) {
  const PeerId sender = connect();
  const std::uint32_t pid = 777;
  const PeerId r1 = connect_process(pid);
  const PeerId r2 = connect_process(pid);
  const RegionId id = allocate(sender, 64);
  const int h = regions().backing_handle(id);
  ASSERT_EQ(send_region_to(sender, proto::RegionTarget::pid, pid, slice(id, 0, 8), 0, true).result,
            SendResult::accepted);
  EXPECT_EQ(broker().inbox_depth(r1), 1u);
  EXPECT_EQ(message_refs(id), 1u);

  broker().disconnect(r1, now_);
  EXPECT_TRUE(alive(id));  // the process still has a connection
  EXPECT_EQ(broker().inbox_depth(r2), 1u);
  broker().disconnect(r2, now_);
  EXPECT_FALSE(alive(id));
  EXPECT_EQ(destroy_count(h), 1u);
  EXPECT_EQ(usage_of(1000).queued_messages, 0u);
}

TEST_F(BrokerRegionsTest, DestroyingTheBrokerDestroysEveryRegionStillReferencedOnce) {
  const PeerId sender = connect();
  const RegionId queued = allocate(sender, 64);
  const RegionId held = allocate(sender, 64);
  const int hq = regions().backing_handle(queued);
  const int hh = regions().backing_handle(held);
  put_region(sender, slice(queued, 0, 8), "jobs", /*release=*/true);

  destroy_broker();
  EXPECT_EQ(destroy_count(hq), 1u);
  EXPECT_EQ(destroy_count(hh), 1u);
  EXPECT_EQ(backing_.destroyed.size(), 2u);
}

// ---- TCP receivers ----------------------------------------------------------------------
// A TCP receiver gets the bytes streamed inline by the edge, which keeps the receiver's
// handle until the last piece is written and then releases it: the region stays charged
// to its owner for as long as the broker still needs its memory.

TEST_F(BrokerRegionsTest, QueuedRegionMessageToATcpReceiverHoldsItUntilTheEdgeReleases) {
  const PeerId sender = connect();
  const PeerId tcp = connect_tcp();
  const RegionId id = allocate(sender, 4096);
  const int h = regions().backing_handle(id);
  put_region(sender, slice(id, 10, 20), "jobs");

  receive_now(tcp, "jobs");
  const auto got = deliveries_to(tcp);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_TRUE(same_ref(got[0].region, slice(id, 10, 20)));
  EXPECT_TRUE(got[0].payload.empty());
  EXPECT_EQ(handles(tcp, id), 1u);
  EXPECT_EQ(message_refs(id), 0u);

  EXPECT_TRUE(broker().release_region(sender, id).ok());
  EXPECT_TRUE(alive(id));  // still being streamed
  EXPECT_TRUE(broker().release_region(tcp, id).ok());
  EXPECT_FALSE(alive(id));
  EXPECT_EQ(destroy_count(h), 1u);
}

TEST_F(BrokerRegionsTest, ReleasedRegionToAWaitingTcpReceiverLivesUntilTheStreamEnds) {
  const PeerId sender = connect();
  const PeerId tcp = connect_tcp();
  const RegionId id = allocate(sender, 4096);
  const int h = regions().backing_handle(id);
  receive(tcp, "jobs");

  put_region(sender, slice(id, 0, 4096), "jobs", /*release=*/true);
  ASSERT_EQ(sink_.deliveries.size(), 1u);
  EXPECT_EQ(sink_.deliveries[0].destroyed_before, 0u);
  EXPECT_TRUE(same_ref(sink_.deliveries[0].region, slice(id, 0, 4096)));
  EXPECT_TRUE(alive(id));
  EXPECT_EQ(regions().uid_usage(1000).regions, 1u) << "still charged while streamed";
  broker().disconnect(tcp, now_);  // the stream ends with the connection
  EXPECT_FALSE(alive(id));
  EXPECT_EQ(destroy_count(h), 1u);
}

TEST_F(BrokerRegionsTest, RegionMessageToATcpPeersInboxByClientIdGivesItAHandle) {
  const PeerId sender = connect();
  const PeerId tcp = connect_tcp();
  const RegionId id = allocate(sender, 64);
  ASSERT_EQ(
      send_region_to(sender, proto::RegionTarget::client_id, tcp, slice(id, 0, 64), 0, true).result,
      SendResult::accepted);
  EXPECT_EQ(broker().inbox_depth(tcp), 1u);

  receive_direct(tcp);
  const auto got = deliveries_to(tcp);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_TRUE(got[0].key.empty());
  EXPECT_EQ(got[0].region.id, id);
  EXPECT_EQ(handles(tcp, id), 1u);
  EXPECT_TRUE(broker().release_region(tcp, id).ok());
  EXPECT_FALSE(alive(id));
}

// ---- direct region messages -------------------------------------------------------------

TEST_F(BrokerRegionsTest, RegionMessageByPidGoesToTheProcessInbox) {
  const PeerId sender = connect();
  const PeerId receiver = connect();
  const RegionId id = allocate(sender, 64);

  const SendOutcome out =
      send_region_to(sender, proto::RegionTarget::pid, pid_of(receiver), slice(id, 4, 8));
  EXPECT_EQ(out.result, SendResult::accepted) << out.text;
  EXPECT_EQ(broker().inbox_depth(receiver), 1u);
  EXPECT_EQ(message_refs(id), 1u);
  EXPECT_EQ(usage_of(1000).queued_messages, 1u);

  const std::uint64_t corr = receive_direct(receiver);
  const auto got = deliveries_to(receiver);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].correlation, corr);
  EXPECT_TRUE(got[0].key.empty());
  EXPECT_TRUE(got[0].payload.empty());
  EXPECT_TRUE(same_ref(got[0].region, slice(id, 4, 8)));
  EXPECT_EQ(handles(receiver, id), 1u);
  EXPECT_EQ(message_refs(id), 0u);
  EXPECT_EQ(broker().inbox_depth(receiver), 0u);
}

TEST_F(BrokerRegionsTest, RegionMessageByClientIdToAWaitingReceiverIsHandedOver) {
  const PeerId sender = connect();
  const PeerId receiver = connect();
  const RegionId id = allocate(sender, 64);
  const std::uint64_t corr = receive_direct(receiver, 1, -1);

  EXPECT_EQ(
      send_region_to(sender, proto::RegionTarget::client_id, receiver, slice(id, 0, 64)).result,
      SendResult::accepted);
  const auto got = deliveries_to(receiver);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].correlation, corr);
  EXPECT_EQ(got[0].region.id, id);
  EXPECT_EQ(handles(receiver, id), 1u);
}

TEST_F(BrokerRegionsTest, RegionMessageToAnAbsentPidWithoutWaitIsRefusedAndReleaseStillApplies) {
  const PeerId sender = connect();
  const RegionId id = allocate(sender, 64);
  const int h = regions().backing_handle(id);

  const SendOutcome out =
      send_region_to(sender, proto::RegionTarget::pid, 4242, slice(id, 0, 8), 0, true);
  EXPECT_EQ(out.result, SendResult::rejected);
  EXPECT_EQ(out.error, Errc::no_such_peer);
  EXPECT_FALSE(alive(id));
  EXPECT_EQ(destroy_count(h), 1u);
}

TEST_F(BrokerRegionsTest, ParkedRegionSendHoldsAMessageRefAndIsDeliveredWhenTheProcessConnects) {
  const PeerId sender = connect();
  const RegionId id = allocate(sender, 64);
  const int h = regions().backing_handle(id);
  const std::uint32_t pid = 4242;
  std::uint64_t corr = 0;

  const SendOutcome out = send_region_to(sender, proto::RegionTarget::pid, pid, slice(id, 0, 32),
                                         1000, /*release=*/true, /*confirm=*/true, &corr);
  EXPECT_EQ(out.result, SendResult::deferred);
  EXPECT_EQ(handles(sender, id), 0u);
  EXPECT_TRUE(alive(id));
  EXPECT_EQ(message_refs(id), 1u);
  EXPECT_EQ(seal_count(h), 1u);

  advance(500ms);
  const PeerId receiver = connect_process(pid);
  EXPECT_EQ(sink_.confirms, (std::vector<Confirmation>{{sender, corr}}));
  EXPECT_EQ(broker().inbox_depth(receiver), 1u);
  EXPECT_EQ(message_refs(id), 1u);
  EXPECT_TRUE(backing_.destroyed.empty());

  receive_direct(receiver);
  const auto got = deliveries_to(receiver);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_TRUE(same_ref(got[0].region, slice(id, 0, 32)));
  EXPECT_EQ(got[0].sender.client_id, sender);
  EXPECT_EQ(handles(receiver, id), 1u);
  EXPECT_EQ(message_refs(id), 0u);

  // The old deadline does nothing any more.
  advance(1s);
  broker().expire(now_);
  EXPECT_TRUE(sink_.failures.empty());
  EXPECT_TRUE(broker().release_region(receiver, id).ok());
  EXPECT_EQ(destroy_count(h), 1u);
}

TEST_F(BrokerRegionsTest, ParkedRegionSendThatExpiresDropsItsRef) {
  const PeerId sender = connect();
  const RegionId id = allocate(sender, 64);
  const int h = regions().backing_handle(id);
  std::uint64_t corr = 0;
  ASSERT_EQ(send_region_to(sender, proto::RegionTarget::pid, 4242, slice(id, 0, 8), 100, true,
                           false, &corr)
                .result,
            SendResult::deferred);
  EXPECT_EQ(usage_of(1000).queued_messages, 1u);

  advance(99ms);
  broker().expire(now_);
  EXPECT_TRUE(alive(id));
  advance(1ms);
  broker().expire(now_);
  const auto f = failures_to(sender);
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].correlation, corr);
  EXPECT_EQ(f[0].code, Errc::no_such_peer);
  EXPECT_FALSE(alive(id));
  EXPECT_EQ(destroy_count(h), 1u);
  EXPECT_EQ(usage_of(1000).queued_messages, 0u);

  // A process connecting later gets nothing.
  const PeerId late = connect_process(4242);
  EXPECT_EQ(broker().inbox_depth(late), 0u);
}

TEST_F(BrokerRegionsTest, ParkedRegionSendKeepsTheRegionWhileTheSenderHoldsIt) {
  const PeerId sender = connect();
  const RegionId id = allocate(sender, 64);
  ASSERT_EQ(send_region_to(sender, proto::RegionTarget::pid, 4242, slice(id, 0, 8), 100).result,
            SendResult::deferred);
  advance(100ms);
  broker().expire(now_);
  EXPECT_TRUE(alive(id));
  EXPECT_EQ(message_refs(id), 0u);
  EXPECT_EQ(handles(sender, id), 1u);
}

TEST_F(BrokerRegionsTest, DisconnectOfTheSenderDropsItsParkedRegionSend) {
  const PeerId sender = connect();
  const RegionId id = allocate(sender, 64);
  const int h = regions().backing_handle(id);
  ASSERT_EQ(send_region_to(sender, proto::RegionTarget::pid, 4242, slice(id, 0, 8), 1000).result,
            SendResult::deferred);

  broker().disconnect(sender, now_);
  EXPECT_FALSE(alive(id));
  EXPECT_EQ(destroy_count(h), 1u);
  const PeerId receiver = connect_process(4242);
  EXPECT_EQ(broker().inbox_depth(receiver), 0u);
}

TEST_F(BrokerRegionsTest, ParkedRegionSendsThatDoNotFitTheNewInboxFailAndFreeTheirRegions) {
  limits_.inbox.max_messages = 1;
  const PeerId sender = connect();
  const RegionId first = allocate(sender, 64);
  const RegionId second = allocate(sender, 64);
  const int h2 = regions().backing_handle(second);
  std::uint64_t c1 = 0;
  std::uint64_t c2 = 0;
  ASSERT_EQ(send_region_to(sender, proto::RegionTarget::pid, 4242, slice(first, 0, 8), 1000, true,
                           true, &c1)
                .result,
            SendResult::deferred);
  ASSERT_EQ(send_region_to(sender, proto::RegionTarget::pid, 4242, slice(second, 0, 8), 1000, true,
                           true, &c2)
                .result,
            SendResult::deferred);

  const PeerId receiver = connect_process(4242);
  EXPECT_EQ(sink_.confirms, (std::vector<Confirmation>{{sender, c1}}));
  const auto f = failures_to(sender);
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].correlation, c2);
  EXPECT_EQ(f[0].code, Errc::peer_busy);
  EXPECT_EQ(broker().inbox_depth(receiver), 1u);
  EXPECT_TRUE(alive(first));
  EXPECT_FALSE(alive(second));
  EXPECT_EQ(destroy_count(h2), 1u);
}

// ---- refusals ---------------------------------------------------------------------------

TEST_F(BrokerRegionsTest, SendingARegionThePeerDoesNotHoldIsNoSuchRegion) {
  const PeerId owner = connect();
  const PeerId other = connect();
  const RegionId id = allocate(owner, 64);

  SendOutcome out = send_region(other, slice(id, 0, 8), "jobs");
  EXPECT_EQ(out.result, SendResult::rejected);
  EXPECT_EQ(out.error, Errc::no_such_region);
  out = send_region(other, slice(9999, 0, 8), "jobs");
  EXPECT_EQ(out.error, Errc::no_such_region);
  out = send_region(other, slice(0, 0, 8), "jobs");
  EXPECT_EQ(out.error, Errc::no_such_region);

  EXPECT_TRUE(backing_.sealed.empty());
  EXPECT_EQ(broker().find("jobs"), nullptr);
  EXPECT_EQ(message_refs(id), 0u);
  EXPECT_EQ(handles(owner, id), 1u);
}

TEST_F(BrokerRegionsTest, SendingAReleasedRegionIsNoSuchRegion) {
  const PeerId a = connect();
  const RegionId id = allocate(a, 64);
  put_region(a, slice(id, 0, 8), "jobs", /*release=*/true);
  EXPECT_EQ(send_region(a, slice(id, 0, 8), "jobs").error, Errc::no_such_region);
  EXPECT_EQ(depth("jobs"), 1u);
}

TEST_F(BrokerRegionsTest, ASliceOutsideTheRegionIsMalformedAndChangesNothing) {
  const PeerId a = connect();
  const RegionId id = allocate(a, 100);

  for (const RegionRef& bad : {slice(id, 0, 101), slice(id, 100, 1), slice(id, 101, 1),
                               slice(id, 50, UINT64_MAX), slice(id, UINT64_MAX, 2)}) {
    const SendOutcome out = send_region(a, bad, "jobs");
    EXPECT_EQ(out.result, SendResult::rejected);
    EXPECT_EQ(out.error, Errc::malformed_frame) << bad.offset << "+" << bad.length;
  }
  EXPECT_TRUE(backing_.sealed.empty());
  EXPECT_FALSE(regions().find(id)->sealed);
  EXPECT_EQ(broker().find("jobs"), nullptr);
  EXPECT_EQ(message_refs(id), 0u);

  put_region(a, slice(id, 99, 1), "jobs");  // the last byte is inside
}

TEST_F(BrokerRegionsTest, AZeroLengthSliceIsMalformed) {
  const PeerId a = connect();
  const RegionId id = allocate(a, 100);
  const SendOutcome out = send_region(a, slice(id, 0, 0), "jobs");
  EXPECT_EQ(out.result, SendResult::rejected);
  EXPECT_EQ(out.error, Errc::malformed_frame);
  EXPECT_TRUE(backing_.sealed.empty());
  EXPECT_EQ(depth("jobs"), 0u);
}

TEST_F(BrokerRegionsTest, ANamedRegionCannotBeSent) {
  const PeerId a = connect();
  const PeerId b = connect();
  const RegionGrant g = broker().create_named_region(a, "work", 4096, 0644);
  ASSERT_TRUE(g.ok()) << g.text;
  const RegionGrant att = broker().attach_named_region(b, "work", false);
  ASSERT_TRUE(att.ok()) << att.text;

  for (PeerId from : {a, b}) {
    const SendOutcome out = send_region(from, slice(g.id, 0, 8), "jobs");
    EXPECT_EQ(out.result, SendResult::rejected);
    EXPECT_EQ(out.error, Errc::unexpected_frame);
    const SendOutcome direct =
        send_region_to(from, proto::RegionTarget::client_id, a, slice(g.id, 0, 8));
    EXPECT_EQ(direct.error, Errc::unexpected_frame);
  }
  EXPECT_TRUE(backing_.sealed.empty());
  EXPECT_EQ(broker().find("jobs"), nullptr);
  EXPECT_EQ(broker().inbox_depth(a), 0u);
  EXPECT_EQ(message_refs(g.id), 0u);
}

TEST_F(BrokerRegionsTest, ASealRefusalIsPassedThroughAndNothingIsQueued) {
  const PeerId a = connect();
  const PeerId waiter = connect();
  const RegionId id = allocate(a, 64);
  const int h = regions().backing_handle(id);
  receive(waiter, "jobs");
  backing_.seal_error = Errc::unexpected_frame;

  SendOutcome out = send_region(a, slice(id, 0, 8), "jobs");
  EXPECT_EQ(out.result, SendResult::rejected);
  EXPECT_EQ(out.error, Errc::unexpected_frame);
  backing_.seal_error = Errc::internal_error;
  out = send_region_to(a, proto::RegionTarget::client_id, waiter, slice(id, 0, 8));
  EXPECT_EQ(out.error, Errc::internal_error);

  EXPECT_TRUE(sink_.deliveries.empty());
  EXPECT_EQ(broker().inbox_depth(waiter), 0u);
  EXPECT_FALSE(regions().find(id)->sealed);
  EXPECT_EQ(message_refs(id), 0u);
  EXPECT_EQ(handles(a, id), 1u);
  EXPECT_EQ(seal_count(h), 2u);

  // Once the writable mapping is gone the same send goes through.
  backing_.seal_error.reset();
  put_region(a, slice(id, 0, 8), "jobs");
  EXPECT_EQ(seal_count(h), 3u);
  ASSERT_EQ(sink_.deliveries.size(), 1u);
  EXPECT_EQ(sink_.deliveries[0].region.id, id);
}

TEST_F(BrokerRegionsTest, ReleaseFlagDropsTheHandleWhenTheQueueRejectsTheSend) {
  ASSERT_EQ(declare("full", options(1, 1024, Overflow::reject)), Errc::ok);
  const PeerId a = connect();
  ASSERT_EQ(send(a, "full", "x").result, SendResult::accepted);
  const RegionId id = allocate(a, 64);
  const int h = regions().backing_handle(id);

  const SendOutcome out = send_region(a, slice(id, 0, 8), "full", /*release=*/true);
  EXPECT_EQ(out.result, SendResult::rejected);
  EXPECT_EQ(out.error, Errc::queue_full);
  EXPECT_EQ(handles(a, id), 0u);
  EXPECT_FALSE(alive(id));
  EXPECT_EQ(destroy_count(h), 1u);
  EXPECT_EQ(depth("full"), 1u);
}

TEST_F(BrokerRegionsTest, WithoutReleaseFlagARejectedSendKeepsTheHandle) {
  ASSERT_EQ(declare("full", options(1, 1024, Overflow::reject)), Errc::ok);
  const PeerId a = connect();
  ASSERT_EQ(send(a, "full", "x").result, SendResult::accepted);
  const RegionId id = allocate(a, 64);

  EXPECT_EQ(send_region(a, slice(id, 0, 8), "full").error, Errc::queue_full);
  EXPECT_EQ(handles(a, id), 1u);
  EXPECT_EQ(message_refs(id), 0u);
}

TEST_F(BrokerRegionsTest, ReleaseFlagKeepsTheHandleWhenTheSendIsBlocked) {
  ASSERT_EQ(declare("slow", options(1, 1024, Overflow::block)), Errc::ok);
  const PeerId a = connect();
  const PeerId receiver = connect();
  ASSERT_EQ(send(a, "slow", "x").result, SendResult::accepted);
  const RegionId id = allocate(a, 64);

  SendOutcome out = send_region(a, slice(id, 0, 8), "slow", /*release=*/true);
  EXPECT_EQ(out.result, SendResult::blocked);
  EXPECT_EQ(handles(a, id), 1u);
  EXPECT_TRUE(alive(id));
  EXPECT_EQ(message_refs(id), 0u);
  EXPECT_EQ(depth("slow"), 1u);

  receive_now(receiver, "slow");
  EXPECT_EQ(sink_.resumes, (std::vector<PeerId>{a}));
  // The retry as a whole: accepted, and now the handle goes.
  out = send_region(a, slice(id, 0, 8), "slow", /*release=*/true);
  EXPECT_EQ(out.result, SendResult::accepted) << out.text;
  EXPECT_EQ(handles(a, id), 0u);
  EXPECT_EQ(message_refs(id), 1u);
  EXPECT_EQ(backing_.sealed.size(), 1u);
}

// BUG (daemon/src/broker/region_messages.cpp, Broker::send_region): RegionSend::release is
// documented (broker.hpp) to drop one of the sender's handles "whether or not the send
// succeeded" unless the send is blocked, but the early returns for check_slice and
// seal_for_handover refusals skip the release. libqbus (Client send_region) marks the Region
// given_up as soon as it sends a frame with release=1, so it never releases that handle
// itself: the region leaks until the connection closes.
TEST_F(BrokerRegionsTest, ReleaseFlagDropsTheHandleWhenTheSliceIsRefused) {
  const PeerId a = connect();
  const RegionId id = allocate(a, 64);
  const int h = regions().backing_handle(id);

  const SendOutcome out = send_region(a, slice(id, 60, 8), "jobs", /*release=*/true);
  EXPECT_EQ(out.error, Errc::malformed_frame);
  EXPECT_EQ(handles(a, id), 0u);
  EXPECT_FALSE(alive(id));
  EXPECT_EQ(destroy_count(h), 1u);
}

// ---- accounting -------------------------------------------------------------------------

TEST_F(BrokerRegionsTest, AQueuedRegionMessageCountsAsAMessageButNoBytes) {
  ASSERT_EQ(declare("tiny", options(10, 10, Overflow::reject)), Errc::ok);
  limits_.uid_max_queued_bytes = 10;
  const PeerId a = connect(1000);
  const RegionId id = allocate(a, kMiB);

  put_region(a, slice(id, 0, kMiB), "tiny");
  const Queue* q = broker().find("tiny");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->depth(), 1u);
  EXPECT_EQ(q->bytes(), 0u);
  EXPECT_EQ(usage_of(1000).queued_bytes, 0u);
  EXPECT_EQ(usage_of(1000).queued_messages, 1u);

  // The inline byte quota is still all there.
  ASSERT_EQ(send(a, "tiny", "0123456789").result, SendResult::accepted);
  EXPECT_EQ(usage_of(1000).queued_bytes, 10u);
  // And a region message still fits when the bytes are used up.
  put_region(a, slice(id, 0, 1), "tiny");
  EXPECT_EQ(usage_of(1000).queued_messages, 3u);
  EXPECT_EQ(q->bytes(), 10u);
}

TEST_F(BrokerRegionsTest, RegionMessagesCountAgainstTheQueuesMaxMessages) {
  ASSERT_EQ(declare("two", options(2, 1024, Overflow::reject)), Errc::ok);
  const PeerId a = connect();
  const RegionId id = allocate(a, 64);
  put_region(a, slice(id, 0, 1), "two");
  put_region(a, slice(id, 1, 1), "two");

  const SendOutcome out = send_region(a, slice(id, 2, 1), "two");
  EXPECT_EQ(out.result, SendResult::rejected);
  EXPECT_EQ(out.error, Errc::queue_full);
  EXPECT_EQ(message_refs(id), 2u);
}

TEST_F(BrokerRegionsTest, RegionMessagesCountAgainstTheUidsQueuedMessages) {
  limits_.uid_max_queued_messages = 2;
  const PeerId a = connect(1000);
  const PeerId b = connect(1000);
  const RegionId id = allocate(a, 64);
  const RegionId id_b = allocate(b, 64);
  put_region(a, slice(id, 0, 1), "x");
  put_region(b, slice(id_b, 0, 1), "y");

  const SendOutcome out = send_region(a, slice(id, 1, 1), "z");
  EXPECT_EQ(out.result, SendResult::rejected);
  EXPECT_EQ(out.error, Errc::quota_exceeded);
  EXPECT_EQ(message_refs(id), 1u);
  // Parked sends are charged the same way.
  EXPECT_EQ(send_region_to(a, proto::RegionTarget::pid, 4242, slice(id, 0, 1), 1000).error,
            Errc::quota_exceeded);
  EXPECT_EQ(message_refs(id), 1u);
}

TEST_F(BrokerRegionsTest, DeliveringARegionMessageUnchargesTheSendersUid) {
  const PeerId a = connect(1000);
  const PeerId b = connect(2000);
  const RegionId id = allocate(a, 64);
  put_region(a, slice(id, 0, 1), "jobs");
  EXPECT_EQ(usage_of(1000).queued_messages, 1u);

  receive_now(b, "jobs");
  EXPECT_EQ(usage_of(1000).queued_messages, 0u);
  EXPECT_EQ(usage_of(1000).queued_bytes, 0u);
  // The region stays charged to its owner while anyone holds it.
  EXPECT_EQ(regions().uid_usage(1000).bytes, 64u);
  EXPECT_EQ(regions().uid_usage(2000).bytes, 0u);
}

// ---- named regions ----------------------------------------------------------------------

TEST_F(BrokerRegionsTest, CreateNamedGivesTheCreatorAWritableHandleAndChargesItsUid) {
  const PeerId a = connect(1000);
  const RegionGrant g = broker().create_named_region(a, "work", 4096, 0600);
  ASSERT_TRUE(g.ok()) << g.text;
  EXPECT_TRUE(g.writable);
  EXPECT_EQ(handles(a, g.id), 1u);
  const RegionInfo* info = regions().find(g.id);
  ASSERT_NE(info, nullptr);
  EXPECT_TRUE(info->named);
  EXPECT_TRUE(info->declared);
  EXPECT_EQ(info->mode, 0600u);
  EXPECT_EQ(info->key, "work");
  EXPECT_EQ(regions().uid_usage(1000).bytes, 4096u);

  EXPECT_EQ(broker().create_named_region(a, "work", 4096, 0600).error, Errc::queue_conflict);
  EXPECT_EQ(broker().create_named_region(a, "other", 4096, 01000).error, Errc::malformed_frame);
  EXPECT_EQ(broker().create_named_region(99, "x", 4096, 0600).error, Errc::internal_error);
  EXPECT_EQ(backing_.created.size(), 1u);
}

TEST_F(BrokerRegionsTest, NamedRegionCreationIsChargedLikeAllocation) {
  limits_.regions.uid_max_regions = 1;
  const PeerId a = connect(1000);
  allocate(a, 64);
  EXPECT_EQ(broker().create_named_region(a, "work", 64, 0600).error, Errc::quota_exceeded);
  EXPECT_EQ(backing_.created.size(), 1u);
  // The key was not taken by the refusal.
  const PeerId b = connect(2000);
  EXPECT_TRUE(broker().create_named_region(b, "work", 64, 0600).ok());
}

TEST_F(BrokerRegionsTest, AttachByAnotherUidIsDeniedByMode0600) {
  const PeerId owner = connect(1000);
  const PeerId same_uid = connect(1000);
  const PeerId other = connect(2000);
  const PeerId root = connect(0);
  ASSERT_TRUE(broker().create_named_region(owner, "work", 4096, 0600).ok());

  EXPECT_EQ(broker().attach_named_region(other, "work", false).error, Errc::permission_denied);
  EXPECT_EQ(broker().attach_named_region(other, "work", true).error, Errc::permission_denied);
  const RegionGrant mine = broker().attach_named_region(same_uid, "work", true);
  EXPECT_TRUE(mine.ok()) << mine.text;
  EXPECT_TRUE(mine.writable);
  EXPECT_TRUE(broker().attach_named_region(root, "work", true).ok());
  EXPECT_EQ(broker().attach_named_region(other, "nope", false).error, Errc::no_such_region);
  EXPECT_EQ(broker().attach_named_region(99, "work", false).error, Errc::internal_error);
}

TEST_F(BrokerRegionsTest, ReadOnlyAttachIsAllowedByMode0644ButWritingIsNot) {
  const PeerId owner = connect(1000);
  const PeerId other = connect(2000);
  const RegionGrant g = broker().create_named_region(owner, "work", 4096, 0644);
  ASSERT_TRUE(g.ok());

  const RegionGrant ro = broker().attach_named_region(other, "work", false);
  ASSERT_TRUE(ro.ok()) << ro.text;
  EXPECT_EQ(ro.id, g.id);
  EXPECT_FALSE(ro.writable);
  EXPECT_EQ(handles(other, g.id), 1u);
  EXPECT_EQ(broker().attach_named_region(other, "work", true).error, Errc::permission_denied);
  EXPECT_EQ(handles(other, g.id), 1u);
}

TEST_F(BrokerRegionsTest, GroupBitsOfTheModeApplyToThePrimaryGid) {
  const PeerId owner = connect_with_gid(1000, 500);
  const PeerId group = connect_with_gid(2000, 500);
  const PeerId stranger = connect_with_gid(3000, 600);
  ASSERT_TRUE(broker().create_named_region(owner, "work", 4096, 0660).ok());

  EXPECT_TRUE(broker().attach_named_region(group, "work", true).ok());
  EXPECT_EQ(broker().attach_named_region(stranger, "work", false).error, Errc::permission_denied);
}

TEST_F(BrokerRegionsTest, RemoveByANonOwnerIsRefusedAndRootMayRemove) {
  const PeerId owner = connect(1000);
  const PeerId other = connect(2000);
  const PeerId root = connect(0);
  ASSERT_TRUE(broker().create_named_region(owner, "work", 4096, 0666).ok());
  ASSERT_TRUE(broker().attach_named_region(other, "work", true).ok());

  EXPECT_EQ(broker().remove_named_region(other, "work").error, Errc::permission_denied);
  EXPECT_TRUE(broker().attach_named_region(other, "work", false).ok());  // still there
  EXPECT_TRUE(broker().remove_named_region(root, "work").ok());
  EXPECT_EQ(broker().remove_named_region(owner, "work").error, Errc::no_such_region);
  EXPECT_EQ(broker().remove_named_region(99, "work").error, Errc::internal_error);
}

TEST_F(BrokerRegionsTest, ANamedRegionSurvivesRemoveWhileAttachedAndIsFreedAfterTheLastRelease) {
  const PeerId owner = connect(1000);
  const PeerId other = connect(2000);
  const RegionGrant g = broker().create_named_region(owner, "work", 4096, 0644);
  ASSERT_TRUE(g.ok());
  const int h = regions().backing_handle(g.id);
  ASSERT_TRUE(broker().attach_named_region(other, "work", false).ok());

  EXPECT_TRUE(broker().remove_named_region(owner, "work").ok());
  EXPECT_TRUE(alive(g.id));
  EXPECT_FALSE(regions().find(g.id)->declared);
  EXPECT_EQ(broker().attach_named_region(other, "work", false).error, Errc::no_such_region);
  // The key is free at once; the new region is another one.
  const RegionGrant again = broker().create_named_region(owner, "work", 64, 0600);
  ASSERT_TRUE(again.ok());
  EXPECT_NE(again.id, g.id);

  EXPECT_TRUE(broker().release_region(owner, g.id).ok());
  EXPECT_TRUE(alive(g.id));
  EXPECT_TRUE(broker().release_region(other, g.id).ok());
  EXPECT_FALSE(alive(g.id));
  EXPECT_EQ(destroy_count(h), 1u);
  EXPECT_TRUE(alive(again.id));
  EXPECT_EQ(regions().uid_usage(1000).bytes, 64u);
}

TEST_F(BrokerRegionsTest, ANamedRegionWithoutHandlesLivesUntilItIsRemoved) {
  const PeerId owner = connect(1000);
  const RegionGrant g = broker().create_named_region(owner, "work", 4096, 0600);
  ASSERT_TRUE(g.ok());
  const int h = regions().backing_handle(g.id);

  broker().disconnect(owner, now_);
  EXPECT_TRUE(alive(g.id));
  EXPECT_EQ(regions().find(g.id)->handles, 0u);
  const PeerId later = connect(1000);
  const RegionGrant att = broker().attach_named_region(later, "work", true);
  ASSERT_TRUE(att.ok());
  EXPECT_EQ(att.id, g.id);
  EXPECT_TRUE(broker().release_region(later, g.id).ok());
  EXPECT_TRUE(alive(g.id));

  EXPECT_TRUE(broker().remove_named_region(later, "work").ok());
  EXPECT_FALSE(alive(g.id));
  EXPECT_EQ(destroy_count(h), 1u);
  EXPECT_EQ(regions().uid_usage(1000).regions, 0u);
}

// ---- totals -----------------------------------------------------------------------------

TEST_F(BrokerRegionsTest, TotalsCountRegionLengthsInAndOut) {
  const PeerId sender = connect();
  const PeerId receiver = connect();
  const RegionId id = allocate(sender, 4 * kMiB);

  put_region(sender, slice(id, 0, 3 * kMiB), "jobs");  // queued
  EXPECT_EQ(broker().totals().messages_in, 1u);
  EXPECT_EQ(broker().totals().bytes_in, 3 * kMiB);
  EXPECT_EQ(broker().totals().messages_out, 0u);
  EXPECT_EQ(broker().totals().bytes_out, 0u);

  receive_now(receiver, "jobs");
  EXPECT_EQ(broker().totals().messages_out, 1u);
  EXPECT_EQ(broker().totals().bytes_out, 3 * kMiB);

  receive(receiver, "jobs");
  put_region(sender, slice(id, 100, 1000), "jobs");  // straight to the waiter
  EXPECT_EQ(broker().totals().messages_in, 2u);
  EXPECT_EQ(broker().totals().bytes_in, 3 * kMiB + 1000);
  EXPECT_EQ(broker().totals().messages_out, 2u);
  EXPECT_EQ(broker().totals().bytes_out, 3 * kMiB + 1000);

  // Direct: counted when it enters the inbox and when it leaves.
  ASSERT_EQ(
      send_region_to(sender, proto::RegionTarget::pid, pid_of(receiver), slice(id, 0, 7)).result,
      SendResult::accepted);
  receive_direct(receiver);
  EXPECT_EQ(broker().totals().bytes_in, 3 * kMiB + 1007);
  EXPECT_EQ(broker().totals().bytes_out, 3 * kMiB + 1007);

  // Refused sends count nothing.
  EXPECT_EQ(send_region(sender, slice(id, 0, 5 * kMiB), "jobs").error, Errc::malformed_frame);
  EXPECT_EQ(broker().totals().messages_in, 3u);
  EXPECT_EQ(broker().totals().bytes_in, 3 * kMiB + 1007);
}

TEST_F(BrokerRegionsTest, RegionSendToANewKeyIsChargedToTheSendersUid) {
  limits_.uid_max_queues = 1;
  const PeerId a = connect(1000);
  const PeerId c = connect(2000);
  const RegionId id = allocate(a, 64);
  put_region(a, {id, 0, 8}, "first");
  EXPECT_EQ(usage_of(1000).queues, 1u);
  const SendOutcome out = send_region(a, {id, 0, 8}, "second");
  EXPECT_EQ(out.error, Errc::too_many_queues);
  EXPECT_NE(out.text.find("uid 1000"), std::string::npos) << out.text;
  EXPECT_EQ(broker().find("second"), nullptr);
  receive_now(c, "first");  // drained: the queue and its charge go
  EXPECT_EQ(usage_of(1000).queues, 0u);
  put_region(a, {id, 0, 8}, "second");
}

}  // namespace
}  // namespace qbus::broker
