// Unit tests of shared-memory regions seen through the broker core (proto/PROTOCOL.md
// section 16): allocation and quotas, region messages to queues and TCP peers, reclaiming
// regions when their last reference goes, accounting and totals. Direct region messages,
// refusals and named regions are in broker_regions_direct_test.cpp. The memory is a
// recording fake; time is a value the tests pass in.
#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "broker_regions_fixture.hpp"

namespace qbus::broker {
namespace {

using namespace fakes;  // the fixture, the recording sink and their helpers
using fakes::same_ref;

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

TEST_F(BrokerRegionsTest, AQueueARegionMessageCreatesIsOwnedByTheSendersUid) {
  const PeerId sender = connect(1234);
  const RegionId id = allocate(sender, 4096);
  put_region(sender, slice(id, 0, 4096), "made.by.region");
  const Queue* q = broker().find("made.by.region");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->keeper().owner, 1234u);
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

// A region sent to a queue is a send under the access policy: refused with the key, the
// handle given up with the frame as with any other refusal, and no queue made.
TEST_F(BrokerRegionsTest, ARegionSentToADeniedQueueIsRefusedByThePolicy) {
  PolicyRule deny;
  deny.allow = false;
  deny.operations = operation_bit(Operation::send);
  deny.uids = {1000};
  deny.prefixes = {"secret."};
  broker().set_policy(std::make_unique<Policy>(PolicySpec{true, {deny}}));
  const PeerId p = connect(1000);
  const RegionId id = allocate(p, 4096);
  const auto out = send_region(p, slice(id, 0, 4096), "secret.bulk", /*release=*/true);
  EXPECT_EQ(out.result, SendResult::rejected);
  EXPECT_EQ(out.error, Errc::permission_denied);
  EXPECT_EQ(out.text, "send to queue 'secret.bulk' denied by policy");
  EXPECT_EQ(broker().find("secret.bulk"), nullptr);
  EXPECT_EQ(handles(p, id), 0u);

  // Published to a subject, it is refused naming the subject.
  const RegionId published = allocate(p, 4096);
  RegionSend to_subject;
  to_subject.ref = slice(published, 0, 4096);
  to_subject.kind = proto::RegionTarget::subject;
  to_subject.key = "secret.frames";
  to_subject.release = true;
  to_subject.correlation = next_correlation_++;
  const auto refused = broker().send_region(p, to_subject, now_);
  EXPECT_EQ(refused.error, Errc::permission_denied);
  EXPECT_EQ(refused.text, "send to subject 'secret.frames' denied by policy");
  EXPECT_EQ(handles(p, published), 0u);

  const RegionId other = allocate(p, 4096);
  put_region(p, slice(other, 0, 4096), "open.bulk", /*release=*/true);
  EXPECT_EQ(depth("open.bulk"), 1u);
}

}  // namespace
}  // namespace qbus::broker
