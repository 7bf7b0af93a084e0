// Unit tests of the shared-memory region bookkeeping: allocation and per-uid quotas, the
// three kinds of reference and when the backing is destroyed, sealing, slices, and named
// regions with file-like permissions. The backing is a fake that records every call.
#include "broker/regions.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "fake_backing.hpp"

namespace qbus::broker {
namespace {

using fakes::FakeBacking;

Identity user(std::uint32_t uid, std::uint32_t gid = 100, std::uint32_t pid = 4000) {
  Identity id;
  id.pid = pid;
  id.uid = uid;
  id.gid = gid;
  return id;
}

const Identity kAlice = user(1000, 100, 4001);
const Identity kBob = user(1001, 100, 4002);    // same group as alice
const Identity kCarol = user(1002, 200, 4003);  // another group
const Identity kRoot = user(0, 0, 1);

class RegionTableTest : public ::testing::Test {
 protected:
  RegionTableTest() : table_(make_limits(), backing_) {}

  static RegionLimits make_limits() {
    RegionLimits l;
    l.max_region_bytes = 1000;
    l.uid_max_region_bytes = 2500;
    l.uid_max_regions = 4;
    l.max_regions = 8;
    return l;
  }

  // Allocates and insists on success.
  RegionId allocate(PeerId peer, const Identity& who, std::uint64_t size = 100) {
    RegionGrant g = table_.allocate(peer, who, size);
    EXPECT_TRUE(g.ok()) << g.text;
    return g.id;
  }
  bool alive(RegionId id) const { return table_.find(id) != nullptr; }
  std::size_t destroy_calls(int handle) const {
    return static_cast<std::size_t>(
        std::count(backing_.destroyed.begin(), backing_.destroyed.end(), handle));
  }

  FakeBacking backing_;
  RegionTable table_;
};

TEST_F(RegionTableTest, AllocationChargesOwnerUidUntilFreed) {
  RegionId id = allocate(1, kAlice, 300);
  ASSERT_NE(id, 0u);
  const RegionInfo* info = table_.find(id);
  ASSERT_NE(info, nullptr);
  EXPECT_EQ(info->size, 300u);
  EXPECT_EQ(info->owner, 1u);
  EXPECT_EQ(info->owner_pid, kAlice.pid);
  EXPECT_EQ(info->owner_uid, kAlice.uid);
  EXPECT_EQ(info->handles, 1u);
  EXPECT_EQ(info->message_refs, 0u);
  EXPECT_FALSE(info->sealed);
  EXPECT_FALSE(info->named);
  EXPECT_EQ(table_.handles_of(1, id), 1u);
  EXPECT_EQ(table_.uid_usage(kAlice.uid).bytes, 300u);
  EXPECT_EQ(table_.uid_usage(kAlice.uid).regions, 1u);
  ASSERT_EQ(backing_.created.size(), 1u);
  EXPECT_EQ(backing_.created[0].size, 300u);
  EXPECT_EQ(table_.backing_handle(id), 100);

  ASSERT_TRUE(table_.release(1, id).ok());
  EXPECT_FALSE(alive(id));
  EXPECT_EQ(table_.count(), 0u);
  EXPECT_EQ(table_.uid_usage(kAlice.uid).bytes, 0u);
  EXPECT_EQ(table_.uid_usage(kAlice.uid).regions, 0u);
  EXPECT_EQ(backing_.destroyed, std::vector<int>{100});
  EXPECT_EQ(table_.backing_handle(id), -1);
}

TEST_F(RegionTableTest, ZeroAndOversizeAreRefusedWithoutTouchingBacking) {
  for (std::uint64_t size : {std::uint64_t{0}, std::uint64_t{1001}, ~std::uint64_t{0}}) {
    RegionGrant g = table_.allocate(1, kAlice, size);
    EXPECT_EQ(g.error, Errc::payload_too_large) << size;
    EXPECT_NE(g.text.find("1000"), std::string::npos) << g.text;
  }
  EXPECT_TRUE(table_.allocate(1, kAlice, 1000).ok());
  EXPECT_EQ(backing_.created.size(), 1u);
  EXPECT_EQ(table_.uid_usage(kAlice.uid).bytes, 1000u);
}

TEST_F(RegionTableTest, UidByteQuotaSpansAllPeersOfThatUid) {
  allocate(1, kAlice, 1000);
  allocate(2, kAlice, 1000);
  RegionGrant g = table_.allocate(3, kAlice, 501);  // 2000 + 501 > 2500
  EXPECT_EQ(g.error, Errc::quota_exceeded);
  EXPECT_NE(g.text.find("uid 1000"), std::string::npos) << g.text;
  EXPECT_NE(g.text.find("2500"), std::string::npos) << g.text;
  EXPECT_EQ(backing_.created.size(), 2u);
  EXPECT_TRUE(table_.allocate(3, kAlice, 500).ok());  // exactly at the limit
  EXPECT_EQ(table_.uid_usage(kAlice.uid).bytes, 2500u);
}

TEST_F(RegionTableTest, UidRegionCountQuotaSpansAllPeersOfThatUid) {
  for (PeerId p = 1; p <= 4; ++p)
    allocate(p, kAlice, 1);
  RegionGrant g = table_.allocate(5, kAlice, 1);
  EXPECT_EQ(g.error, Errc::quota_exceeded);
  EXPECT_NE(g.text.find("uid 1000"), std::string::npos) << g.text;
  EXPECT_NE(g.text.find("4 regions"), std::string::npos) << g.text;
}

TEST_F(RegionTableTest, OneUidsQuotaLeavesOtherUidsUntouched) {
  for (PeerId p = 1; p <= 4; ++p)
    allocate(p, kAlice, 1);
  ASSERT_FALSE(table_.allocate(1, kAlice, 1).ok());
  RegionId bobs = allocate(9, kBob, 1000);
  EXPECT_TRUE(alive(bobs));
  EXPECT_EQ(table_.uid_usage(kBob.uid).regions, 1u);
  EXPECT_EQ(table_.uid_usage(kBob.uid).bytes, 1000u);
  EXPECT_EQ(table_.uid_usage(kAlice.uid).regions, 4u);
}

TEST_F(RegionTableTest, FreeingReturnsQuotaForNewAllocations) {
  std::vector<RegionId> ids;
  for (PeerId p = 1; p <= 4; ++p)
    ids.push_back(allocate(p, kAlice, 1));
  ASSERT_FALSE(table_.allocate(1, kAlice, 1).ok());
  ASSERT_TRUE(table_.release(2, ids[1]).ok());
  EXPECT_TRUE(table_.allocate(1, kAlice, 1).ok());
}

TEST_F(RegionTableTest, GlobalRegionLimitRefusesEveryUid) {
  for (PeerId p = 1; p <= 4; ++p)
    allocate(p, kAlice, 1);
  for (PeerId p = 5; p <= 8; ++p)
    allocate(p, kBob, 1);
  RegionGrant g = table_.allocate(9, kCarol, 1);
  EXPECT_EQ(g.error, Errc::quota_exceeded);
  EXPECT_NE(g.text.find("maximum of 8 regions"), std::string::npos) << g.text;
  EXPECT_EQ(table_.uid_usage(kCarol.uid).regions, 0u);
}

TEST_F(RegionTableTest, BackingCreateFailurePropagatesAndChargesNothing) {
  backing_.create_error = Errc::quota_exceeded;
  RegionGrant g = table_.allocate(1, kAlice, 100);
  EXPECT_EQ(g.error, Errc::quota_exceeded);
  EXPECT_EQ(g.text, "tmpfs is full");
  EXPECT_EQ(g.id, 0u);
  EXPECT_EQ(table_.count(), 0u);
  EXPECT_EQ(table_.uid_usage(kAlice.uid).bytes, 0u);
  EXPECT_EQ(table_.uid_usage(kAlice.uid).regions, 0u);
  EXPECT_EQ(table_.handles_of(1, 1), 0u);
  EXPECT_TRUE(backing_.destroyed.empty());
}

TEST_F(RegionTableTest, IdsAreNonzeroAndNeverReused) {
  std::set<RegionId> seen;
  for (int i = 0; i < 20; ++i) {
    RegionId id = allocate(1, kAlice, 1);
    EXPECT_NE(id, 0u);
    EXPECT_TRUE(seen.insert(id).second) << "id " << id << " handed out twice";
    ASSERT_TRUE(table_.release(1, id).ok());
    if (i == 10) {  // a failed creation in between takes no id and breaks nothing
      backing_.create_error = Errc::quota_exceeded;
      ASSERT_FALSE(table_.allocate(1, kAlice, 1).ok());
      backing_.create_error.reset();
    }
  }
  // The id of a freed region names nothing any more.
  EXPECT_EQ(table_.release(1, *seen.begin()).error, kNoSuchRegion);
}

TEST_F(RegionTableTest, HoldAndReleaseCountHandlesPerPeer) {
  RegionId id = allocate(1, kAlice);
  ASSERT_TRUE(table_.hold(1, id).ok());  // the sender also receives it
  ASSERT_TRUE(table_.hold(2, id).ok());
  EXPECT_EQ(table_.handles_of(1, id), 2u);
  EXPECT_EQ(table_.handles_of(2, id), 1u);
  EXPECT_EQ(table_.find(id)->handles, 3u);

  ASSERT_TRUE(table_.release(1, id).ok());
  EXPECT_EQ(table_.handles_of(1, id), 1u);
  ASSERT_TRUE(table_.release(1, id).ok());
  EXPECT_EQ(table_.handles_of(1, id), 0u);
  EXPECT_TRUE(alive(id));
  EXPECT_EQ(table_.find(id)->handles, 1u);
  ASSERT_TRUE(table_.release(2, id).ok());
  EXPECT_FALSE(alive(id));
}

TEST_F(RegionTableTest, ReleasingARegionNotHeldIsRefusedAndChangesNothing) {
  RegionId id = allocate(1, kAlice);
  RegionStatus s = table_.release(2, id);
  EXPECT_EQ(s.error, kNoSuchRegion);
  EXPECT_NE(s.text.find("region " + std::to_string(id)), std::string::npos) << s.text;
  EXPECT_EQ(table_.release(1, id + 1000).error, kNoSuchRegion);
  EXPECT_EQ(table_.find(id)->handles, 1u);

  ASSERT_TRUE(table_.release(1, id).ok());
  EXPECT_EQ(table_.release(1, id).error, kNoSuchRegion);  // twice: the second is refused
  EXPECT_EQ(backing_.destroyed.size(), 1u);
}

TEST_F(RegionTableTest, HoldOfUnknownRegionIsAnInternalError) {
  EXPECT_EQ(table_.hold(1, 42).error, Errc::internal_error);
  EXPECT_EQ(table_.handles_of(1, 42), 0u);
}

TEST_F(RegionTableTest, MessageRefsKeepRegionAliveAfterSenderReleasesAndDisconnects) {
  RegionId id = allocate(1, kAlice);
  ASSERT_TRUE(table_.add_message_ref(id).ok());
  ASSERT_TRUE(table_.release(1, id).ok());
  table_.disconnect(1);
  ASSERT_TRUE(alive(id));
  EXPECT_EQ(table_.find(id)->handles, 0u);
  EXPECT_EQ(table_.find(id)->message_refs, 1u);
  EXPECT_EQ(table_.uid_usage(kAlice.uid).regions, 1u);  // still charged to its owner
  EXPECT_TRUE(backing_.destroyed.empty());

  ASSERT_TRUE(table_.hold(2, id).ok());  // delivered to a receiver
  ASSERT_TRUE(table_.drop_message_ref(id).ok());
  EXPECT_TRUE(alive(id));
  ASSERT_TRUE(table_.release(2, id).ok());
  EXPECT_FALSE(alive(id));
  EXPECT_EQ(table_.uid_usage(kAlice.uid).regions, 0u);
}

TEST_F(RegionTableTest, DroppingAMessageRefThatDoesNotExistIsAnInternalError) {
  RegionId id = allocate(1, kAlice);
  EXPECT_EQ(table_.drop_message_ref(id).error, Errc::internal_error);
  EXPECT_EQ(table_.add_message_ref(id + 1).error, Errc::internal_error);
  EXPECT_EQ(table_.drop_message_ref(id + 1).error, Errc::internal_error);
  EXPECT_TRUE(alive(id));
}

// Every order of dropping the references: the owner's release, a receiver that held it
// twice disconnecting, two queued messages being consumed, and a third peer's release.
// The backing is destroyed exactly once, by the last of them, and not before.
TEST_F(RegionTableTest, DestroyHappensExactlyOnceAtTheLastReferenceInEveryOrder) {
  enum Step { owner_release, receiver_disconnect, message_consumed, third_release };
  std::vector<Step> steps{owner_release, receiver_disconnect, message_consumed, message_consumed,
                          third_release};
  int orders = 0;
  do {
    FakeBacking backing;
    RegionTable table(make_limits(), backing);
    RegionId id = table.allocate(1, kAlice, 10).id;
    ASSERT_TRUE(table.hold(2, id).ok());
    ASSERT_TRUE(table.hold(2, id).ok());
    ASSERT_TRUE(table.hold(3, id).ok());
    ASSERT_TRUE(table.add_message_ref(id).ok());
    ASSERT_TRUE(table.add_message_ref(id).ok());
    const int handle = table.backing_handle(id);
    std::string order;
    for (std::size_t i = 0; i < steps.size(); ++i) {
      order += std::to_string(steps[i]);
      switch (steps[i]) {
        case owner_release:
          ASSERT_TRUE(table.release(1, id).ok()) << order;
          break;
        case receiver_disconnect:
          table.disconnect(2);
          break;
        case message_consumed:
          ASSERT_TRUE(table.drop_message_ref(id).ok()) << order;
          break;
        case third_release:
          ASSERT_TRUE(table.release(3, id).ok()) << order;
          break;
      }
      const bool last = i + 1 == steps.size();
      EXPECT_EQ(table.find(id) == nullptr, last) << order;
      EXPECT_EQ(backing.destroyed.size(), last ? 1u : 0u) << order;
    }
    EXPECT_EQ(backing.destroyed, std::vector<int>{handle}) << order;
    EXPECT_EQ(table.uid_usage(kAlice.uid).bytes, 0u) << order;
    ++orders;
  } while (std::next_permutation(steps.begin(), steps.end()));
  EXPECT_EQ(orders, 60);  // 5! / 2!: the two messages are interchangeable
}

TEST_F(RegionTableTest, DisconnectDropsOnlyThatPeersHandles) {
  RegionId a = allocate(1, kAlice);
  RegionId b = allocate(2, kBob);
  ASSERT_TRUE(table_.hold(1, b).ok());
  ASSERT_TRUE(table_.hold(2, a).ok());
  ASSERT_TRUE(table_.hold(1, a).ok());
  table_.disconnect(1);
  EXPECT_EQ(table_.handles_of(1, a), 0u);
  EXPECT_EQ(table_.handles_of(1, b), 0u);
  EXPECT_EQ(table_.handles_of(2, a), 1u);
  EXPECT_EQ(table_.handles_of(2, b), 1u);
  EXPECT_EQ(table_.find(a)->handles, 1u);
  EXPECT_EQ(table_.find(b)->handles, 1u);
  EXPECT_TRUE(backing_.destroyed.empty());

  table_.disconnect(1);  // twice, or a peer that never held anything: nothing happens
  table_.disconnect(77);
  EXPECT_TRUE(backing_.destroyed.empty());
  table_.disconnect(2);
  EXPECT_EQ(table_.count(), 0u);
  EXPECT_EQ(backing_.destroyed.size(), 2u);
}

TEST_F(RegionTableTest, SealIsIdempotentAndCallsBackingOnce) {
  RegionId id = allocate(1, kAlice);
  ASSERT_TRUE(table_.seal_for_handover(1, id).ok());
  EXPECT_TRUE(table_.find(id)->sealed);
  ASSERT_TRUE(table_.seal_for_handover(1, id).ok());
  ASSERT_TRUE(table_.hold(2, id).ok());
  ASSERT_TRUE(table_.seal_for_handover(2, id).ok());  // any holder may ask
  EXPECT_EQ(backing_.sealed, std::vector<int>{table_.backing_handle(id)});
}

TEST_F(RegionTableTest, SealByNonHolderIsRefused) {
  RegionId id = allocate(1, kAlice);
  EXPECT_EQ(table_.seal_for_handover(2, id).error, kNoSuchRegion);
  EXPECT_EQ(table_.seal_for_handover(1, id + 5).error, kNoSuchRegion);
  EXPECT_FALSE(table_.find(id)->sealed);
  EXPECT_TRUE(backing_.sealed.empty());
}

TEST_F(RegionTableTest, SealFailureOfBackingPropagatesAndLeavesRegionUnsealed) {
  RegionId id = allocate(1, kAlice);
  backing_.seal_error = Errc::peer_busy;
  RegionStatus s = table_.seal_for_handover(1, id);
  EXPECT_EQ(s.error, Errc::peer_busy);
  EXPECT_EQ(s.text, "a writable mapping is still alive");
  EXPECT_FALSE(table_.find(id)->sealed);

  backing_.seal_error.reset();  // the sender unmapped: a retry succeeds
  ASSERT_TRUE(table_.seal_for_handover(1, id).ok());
  EXPECT_TRUE(table_.find(id)->sealed);
  EXPECT_EQ(backing_.sealed.size(), 2u);
}

TEST_F(RegionTableTest, SliceInsideTheRegionIsAccepted) {
  RegionId id = allocate(1, kAlice, 100);
  EXPECT_TRUE(table_.check_slice(id, 0, 100).ok());
  EXPECT_TRUE(table_.check_slice(id, 10, 20).ok());
  EXPECT_TRUE(table_.check_slice(id, 99, 1).ok());  // the last byte
}

TEST_F(RegionTableTest, SlicePastTheEndIsMalformed) {
  RegionId id = allocate(1, kAlice, 100);
  RegionStatus s = table_.check_slice(id, 99, 2);
  EXPECT_EQ(s.error, Errc::malformed_frame);
  EXPECT_NE(s.text.find("100 bytes"), std::string::npos) << s.text;
  EXPECT_EQ(table_.check_slice(id, 0, 101).error, Errc::malformed_frame);
  EXPECT_EQ(table_.check_slice(id, 100, 1).error, Errc::malformed_frame);
  EXPECT_EQ(table_.check_slice(id, 1000, 1).error, Errc::malformed_frame);
}

TEST_F(RegionTableTest, SliceWhoseEndWrapsAroundIsMalformed) {
  RegionId id = allocate(1, kAlice, 100);
  const std::uint64_t max = ~std::uint64_t{0};
  EXPECT_EQ(table_.check_slice(id, 50, max - 10).error, Errc::malformed_frame);  // 50+len wraps
  EXPECT_EQ(table_.check_slice(id, max, 2).error, Errc::malformed_frame);
  EXPECT_EQ(table_.check_slice(id, max, max).error, Errc::malformed_frame);
}

// A zero-length slice would pin a whole region for a message carrying nothing; empty
// payloads go inline instead.
TEST_F(RegionTableTest, EmptySliceIsRefusedEvenInsideTheRegion) {
  RegionId id = allocate(1, kAlice, 100);
  EXPECT_EQ(table_.check_slice(id, 0, 0).error, Errc::malformed_frame);
  EXPECT_EQ(table_.check_slice(id, 100, 0).error, Errc::malformed_frame);
}

TEST_F(RegionTableTest, SliceOfUnknownRegionIsRefused) {
  EXPECT_EQ(table_.check_slice(9, 0, 1).error, kNoSuchRegion);
}

TEST_F(RegionTableTest, InspectionListsLiveRegions) {
  RegionId a = allocate(1, kAlice, 10);
  RegionId b = allocate(2, kBob, 20);
  ASSERT_TRUE(table_.add_message_ref(b).ok());
  EXPECT_EQ(table_.count(), 2u);
  std::set<RegionId> seen;
  std::uint64_t bytes = 0;
  table_.for_each([&](const RegionInfo& r) {
    seen.insert(r.id);
    bytes += r.size;
  });
  EXPECT_EQ(seen, (std::set<RegionId>{a, b}));
  EXPECT_EQ(bytes, 30u);
  EXPECT_EQ(table_.find(b)->message_refs, 1u);
  EXPECT_EQ(table_.find(a + b + 1), nullptr);
}

TEST(RegionTableLifetimeTest, DestroyingTheTableDestroysEveryLiveBacking) {
  FakeBacking backing;
  {
    RegionTable table(RegionLimits{}, backing);
    RegionId a = table.allocate(1, kAlice, 10).id;
    ASSERT_TRUE(table.add_message_ref(a).ok());
    ASSERT_TRUE(table.create_named("work", 2, kBob, 10, 0600).ok());
    RegionId gone = table.allocate(3, kCarol, 10).id;
    ASSERT_TRUE(table.release(3, gone).ok());
    ASSERT_EQ(backing.destroyed.size(), 1u);
  }
  std::vector<int> destroyed = backing.destroyed;
  std::sort(destroyed.begin(), destroyed.end());
  EXPECT_EQ(destroyed, (std::vector<int>{100, 101, 102}));
}

// ---- named regions ----------------------------------------------------------------------

class NamedRegionTest : public RegionTableTest {
 protected:
  RegionId create(std::string_view key, std::uint32_t mode, const Identity& who = kAlice,
                  PeerId peer = 1) {
    RegionGrant g = table_.create_named(key, peer, who, 100, mode);
    EXPECT_TRUE(g.ok()) << g.text;
    EXPECT_TRUE(g.writable);
    return g.id;
  }
};

TEST_F(NamedRegionTest, CreateGivesCreatorAWritableHandleAndDeclaresTheKey) {
  RegionId id = create("jobs/frame-buffer", 0640);
  const RegionInfo* info = table_.find(id);
  ASSERT_NE(info, nullptr);
  EXPECT_TRUE(info->named);
  EXPECT_TRUE(info->declared);
  EXPECT_FALSE(info->sealed);
  EXPECT_EQ(info->key, "jobs/frame-buffer");
  EXPECT_EQ(info->mode, 0640u);
  EXPECT_EQ(info->owner_gid, kAlice.gid);
  EXPECT_EQ(info->handles, 1u);
  EXPECT_EQ(table_.uid_usage(kAlice.uid).bytes, 100u);

  // The declaration alone keeps it alive once the creator lets go.
  table_.disconnect(1);
  EXPECT_TRUE(alive(id));
  EXPECT_TRUE(backing_.destroyed.empty());
}

TEST_F(NamedRegionTest, AttachAddsAHandleOnTheSameRegion) {
  RegionId id = create("shared", 0666);
  RegionGrant g = table_.attach("shared", 2, kCarol, true);
  ASSERT_TRUE(g.ok()) << g.text;
  EXPECT_EQ(g.id, id);
  EXPECT_TRUE(g.writable);
  g = table_.attach("shared", 2, kCarol, false);
  ASSERT_TRUE(g.ok()) << g.text;
  EXPECT_FALSE(g.writable);
  EXPECT_EQ(table_.handles_of(2, id), 2u);
  EXPECT_EQ(table_.find(id)->handles, 3u);
}

// open(2)'s rule: the one class that applies decides (owner, else group, else other), reading
// needs r and writing needs r and w; root passes everything.
TEST_F(NamedRegionTest, AttachFollowsFilePermissions) {
  struct Case {
    std::uint32_t mode;
    const Identity* who;
    bool read;
    bool write;
  };
  const Case cases[] = {
      {0600, &kAlice, true, true},   {0600, &kBob, false, false},   {0600, &kCarol, false, false},
      {0640, &kBob, true, false},    {0640, &kCarol, false, false}, {0660, &kBob, true, true},
      {0604, &kBob, false, false},  // group class applies, so other's r does not help
      {0604, &kCarol, true, false},  {0606, &kCarol, true, true},   {0666, &kCarol, true, true},
      {0400, &kAlice, true, false},   // the owner is bound by the owner bits too
      {0066, &kAlice, false, false},  // ... even when group and other may
      {0200, &kAlice, false, false},  // write without read cannot be mapped
      {0000, &kRoot, true, true},    {0000, &kAlice, false, false},
  };
  int n = 0;
  for (const Case& c : cases) {
    const std::string key = "perm-" + std::to_string(n++);
    SCOPED_TRACE(key + " mode " + std::to_string(c.mode) + " uid " + std::to_string(c.who->uid));
    RegionId id = create(key, c.mode);
    RegionGrant r = table_.attach(key, 5, *c.who, false);
    EXPECT_EQ(r.ok(), c.read) << r.text;
    EXPECT_EQ(r.error, c.read ? Errc::ok : kRegionAccessDenied);
    RegionGrant w = table_.attach(key, 5, *c.who, true);
    EXPECT_EQ(w.ok(), c.write) << w.text;
    EXPECT_EQ(w.error, c.write ? Errc::ok : kRegionAccessDenied);
    EXPECT_EQ(table_.handles_of(5, id), (c.read ? 1u : 0u) + (c.write ? 1u : 0u));
    table_.disconnect(5);
    table_.disconnect(1);
    ASSERT_TRUE(table_.remove_named(key, kAlice).ok());
  }
}

TEST_F(NamedRegionTest, DeniedAttachNamesWhoAndWhat) {
  create("private", 0600);
  RegionGrant g = table_.attach("private", 2, kCarol, true);
  EXPECT_EQ(g.error, kRegionAccessDenied);
  EXPECT_NE(g.text.find("uid 1002"), std::string::npos) << g.text;
  EXPECT_NE(g.text.find("write"), std::string::npos) << g.text;
  EXPECT_NE(g.text.find("private"), std::string::npos) << g.text;
}

TEST_F(NamedRegionTest, DuplicateKeyIsAConflictAndChargesNothing) {
  create("dup", 0600);
  RegionGrant g = table_.create_named("dup", 2, kBob, 100, 0600);
  EXPECT_EQ(g.error, Errc::queue_conflict);
  EXPECT_NE(g.text.find("dup"), std::string::npos) << g.text;
  EXPECT_EQ(table_.uid_usage(kBob.uid).regions, 0u);
  EXPECT_EQ(backing_.created.size(), 1u);
}

TEST_F(NamedRegionTest, InvalidKeyAndModeAreRefused) {
  EXPECT_EQ(table_.create_named("", 1, kAlice, 100, 0600).error, Errc::invalid_key);
  EXPECT_EQ(table_.create_named("has space", 1, kAlice, 100, 0600).error, Errc::invalid_key);
  EXPECT_EQ(table_.create_named("x", 1, kAlice, 100, 0700).error, Errc::malformed_frame);
  EXPECT_EQ(table_.create_named("x", 1, kAlice, 100, 04600).error, Errc::malformed_frame);
  EXPECT_TRUE(backing_.created.empty());
}

TEST_F(NamedRegionTest, RefusedCreationLeavesTheKeyFree) {
  EXPECT_EQ(table_.create_named("big", 1, kAlice, 1001, 0600).error, Errc::payload_too_large);
  backing_.create_error = Errc::quota_exceeded;
  EXPECT_EQ(table_.create_named("big", 1, kAlice, 100, 0600).error, Errc::quota_exceeded);
  backing_.create_error.reset();
  EXPECT_EQ(table_.attach("big", 2, kRoot, false).error, kNoSuchRegion);
  create("big", 0600);
}

TEST_F(NamedRegionTest, NamedRegionsCountAgainstTheSameUidQuota) {
  for (PeerId p = 1; p <= 3; ++p)
    allocate(p, kAlice, 1);
  create("last", 0600);
  EXPECT_EQ(table_.create_named("one-too-many", 1, kAlice, 1, 0600).error, Errc::quota_exceeded);
  EXPECT_EQ(table_.uid_usage(kAlice.uid).regions, 4u);
}

TEST_F(NamedRegionTest, RemoveByAnotherUidIsRefused) {
  RegionId id = create("mine", 0666);
  RegionStatus s = table_.remove_named("mine", kBob);
  EXPECT_EQ(s.error, kRegionAccessDenied);
  EXPECT_NE(s.text.find("uid 1000"), std::string::npos) << s.text;
  EXPECT_TRUE(table_.find(id)->declared);
  EXPECT_TRUE(table_.attach("mine", 2, kBob, false).ok());
}

TEST_F(NamedRegionTest, RootAndOwnerUidFromAnotherPeerMayRemove) {
  create("a", 0600);
  create("b", 0600);
  table_.disconnect(1);
  EXPECT_TRUE(table_.remove_named("a", kRoot).ok());
  Identity alice_elsewhere = kAlice;
  alice_elsewhere.pid = 9999;
  EXPECT_TRUE(table_.remove_named("b", alice_elsewhere).ok());
  EXPECT_EQ(table_.count(), 0u);
  EXPECT_EQ(backing_.destroyed.size(), 2u);
  EXPECT_EQ(table_.remove_named("a", kRoot).error, kNoSuchRegion);
}

TEST_F(NamedRegionTest, RegionOutlivesRemoveWhileAttached) {
  RegionId id = create("work", 0666);
  ASSERT_TRUE(table_.attach("work", 2, kBob, true).ok());
  ASSERT_TRUE(table_.remove_named("work", kAlice).ok());
  ASSERT_TRUE(alive(id));
  EXPECT_FALSE(table_.find(id)->declared);
  EXPECT_EQ(table_.find(id)->key, "work");  // still shown by the admin socket
  EXPECT_EQ(table_.uid_usage(kAlice.uid).regions, 1u);

  ASSERT_TRUE(table_.release(1, id).ok());
  EXPECT_TRUE(alive(id));
  table_.disconnect(2);
  EXPECT_FALSE(alive(id));
  EXPECT_EQ(backing_.destroyed.size(), 1u);
  EXPECT_EQ(table_.uid_usage(kAlice.uid).regions, 0u);
}

TEST_F(NamedRegionTest, AttachAfterRemoveFailsAndTheKeyCanBeCreatedAnew) {
  RegionId old_id = create("cycle", 0666);
  ASSERT_TRUE(table_.remove_named("cycle", kAlice).ok());
  RegionGrant g = table_.attach("cycle", 2, kBob, false);
  EXPECT_EQ(g.error, kNoSuchRegion);
  EXPECT_TRUE(alive(old_id));  // the creator still holds it

  RegionId new_id = create("cycle", 0600, kBob, 3);
  EXPECT_NE(new_id, old_id);
  g = table_.attach("cycle", 4, kBob, true);
  ASSERT_TRUE(g.ok()) << g.text;
  EXPECT_EQ(g.id, new_id);
}

TEST_F(NamedRegionTest, NamedRegionsAreNeverSealed) {
  RegionId id = create("area", 0600);
  RegionStatus s = table_.seal_for_handover(1, id);
  EXPECT_EQ(s.error, Errc::unexpected_frame);
  EXPECT_NE(s.text.find("area"), std::string::npos) << s.text;
  EXPECT_FALSE(table_.find(id)->sealed);
  EXPECT_TRUE(backing_.sealed.empty());
}

}  // namespace
}  // namespace qbus::broker
