// A region sent to a process is a direct message under the access policy: refused with the
// target before the region is sealed, so a denied send leaves the region as it was.
#include <gtest/gtest.h>

#include <memory>

#include "broker_regions_fixture.hpp"

namespace qbus::broker {
namespace {

using namespace fakes;  // the fixture, the recording sink and their helpers

TEST_F(BrokerRegionsTest, ARegionSentToAProcessTheSenderMayNotMessageIsRefusedUnsealed) {
  broker().set_policy(std::make_unique<Policy>(PolicySpec{false, {}}));
  const PeerId sender = connect(1000);
  const PeerId other = connect(1001);
  const PeerId own = connect(1000);
  const RegionId id = allocate(sender, 64);
  const int h = regions().backing_handle(id);

  const SendOutcome by_pid =
      send_region_to(sender, proto::RegionTarget::pid, pid_of(other), slice(id, 0, 8));
  EXPECT_EQ(by_pid.error, Errc::permission_denied);
  EXPECT_EQ(by_pid.text,
            "send_direct to pid " + std::to_string(pid_of(other)) + " denied by policy");
  const SendOutcome by_id =
      send_region_to(sender, proto::RegionTarget::client_id, other, slice(id, 0, 8));
  EXPECT_EQ(by_id.text, "send_direct to client " + std::to_string(other) + " denied by policy");
  EXPECT_EQ(seal_count(h), 0u);
  EXPECT_EQ(message_refs(id), 0u);
  EXPECT_EQ(broker().inbox_depth(other), 0u);
  ASSERT_EQ(sink_.denials.size(), 2u);
  EXPECT_EQ(sink_.denials[0].op, Operation::send_direct);

  // To a process of its own uid it goes, sealed as always.
  const SendOutcome mine =
      send_region_to(sender, proto::RegionTarget::pid, pid_of(own), slice(id, 0, 8));
  EXPECT_EQ(mine.result, SendResult::accepted) << mine.text;
  EXPECT_EQ(seal_count(h), 1u);
  EXPECT_EQ(broker().inbox_depth(own), 1u);
  EXPECT_EQ(sink_.denials.size(), 2u);
}

}  // namespace
}  // namespace qbus::broker
