// The C API (<qbus/qbus.h>) through the real qbusd: each TEST runs one case of
// c_api_cases.c, which is compiled as C11 so that the header is used as a C program uses it.
// Every case gets a daemon of its own, so that no queue, subject, inbox or retained message
// of one case is seen by another.
#include <gtest/gtest.h>

#include <cstddef>

#include "c_api_cases.h"
#include "daemon.hpp"

namespace qbus::testing {
namespace {

using CCase = int (*)(const char* address, char* why, std::size_t why_len);

class CApiTest : public ::testing::Test {
 protected:
  // Runs `c_case` against this test's daemon; a failure reports the check the case names.
  void expect_passes(CCase c_case) {
    char why[4096] = "";
    const int rc = c_case(daemon_.address().c_str(), why, sizeof why);
    EXPECT_EQ(rc, 0) << why;
  }

  Daemon daemon_;
};

TEST_F(CApiTest, OptionsInitSetsTheDefaultsAndAnUninitialisedStructIsRefused) {
  expect_passes(qbus_ctest_options);
}

TEST_F(CApiTest, SendAndReceiveWithHeadersConfirmPriorityDelayTtlAndReceiveBatch) {
  expect_passes(qbus_ctest_send_receive);
}

TEST_F(CApiTest, DeclarePurgeDeleteSyncAndSendFailures) {
  expect_passes(qbus_ctest_queues);
}

TEST_F(CApiTest, NestedBatchesWriteOnTheLastEnd) {
  expect_passes(qbus_ctest_batch);
}

TEST_F(CApiTest, AcknowledgementModeAckNackAckUpToExtendAndDeadLetters) {
  expect_passes(qbus_ctest_acks);
}

TEST_F(CApiTest, DirectMessagesByPidAndClientId) {
  expect_passes(qbus_ctest_direct);
}

TEST_F(CApiTest, RequestGetsTheReplyOfAResponderThread) {
  expect_passes(qbus_ctest_request_reply);
}

TEST_F(CApiTest, QueueSubscriptionWithPrefetchAndCancel) {
  expect_passes(qbus_ctest_queue_subscription);
}

TEST_F(CApiTest, SubjectsWildcardsRetainedAndQueueGroups) {
  expect_passes(qbus_ctest_subjects);
}

TEST_F(CApiTest, EventLoopPollsTheFdProcessesAndDrains) {
  expect_passes(qbus_ctest_event_loop);
}

TEST_F(CApiTest, RegionsWholeSlicedToAPidPublishedAndAutomatic) {
  expect_passes(qbus_ctest_regions);
}

TEST_F(CApiTest, SharedRegionsCreateAttachAndRemove) {
  expect_passes(qbus_ctest_shared_regions);
}

TEST_F(CApiTest, ErrorNamesAndLastErrorsPerThreadAndPerClient) {
  expect_passes(qbus_ctest_errors);
}

TEST_F(CApiTest, EveryFunctionRefusesANullHandle) {
  expect_passes(qbus_ctest_null_handles);
}

TEST_F(CApiTest, NullBuffersAndNullOutParametersAreRefusedAndSendNothing) {
  expect_passes(qbus_ctest_bad_arguments);
}

TEST_F(CApiTest, FreedHandlesAreRefusedAndHandlesOutliveTheirClient) {
  expect_passes(qbus_ctest_handle_lifetimes);
}

}  // namespace
}  // namespace qbus::testing
