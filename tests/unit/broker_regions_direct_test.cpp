// Unit tests of shared-memory regions seen through the broker core, continued: region
// messages to inboxes and parked sends, refusals, and named regions. The memory is a
// recording fake; time is a value the tests pass in.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "broker_regions_fixture.hpp"

namespace qbus::broker {
namespace {

using namespace std::chrono_literals;

using namespace fakes;  // the fixture, the recording sink and their helpers
using fakes::same_ref;

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

}  // namespace
}  // namespace qbus::broker
