// Unit tests of acknowledgement mode in the broker core (proto/PROTOCOL.md section 17):
// held messages and their tags, ACK/NACK/EXTEND, redelivery at the head in order when a
// consumer leaves or its ack timeout passes, max_deliveries and dead letters, headers,
// and what stays charged meanwhile. Time is a value the tests pass in.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "broker_fixture.hpp"
#include "qbus/proto/headers.hpp"

namespace qbus::broker {
namespace {

using namespace std::chrono_literals;
using namespace fakes;

class BrokerAckTest : public BrokerTest {
 protected:
  std::uint64_t receive_acked(PeerId peer, std::string_view key, std::uint32_t max = 1,
                              std::int32_t timeout_ms = 0) {
    const std::uint64_t corr = next_correlation_++;
    broker().receive(peer, corr, key, max, timeout_ms, now_, true);
    return corr;
  }
  std::vector<const Delivered*> to(PeerId peer) const {
    std::vector<const Delivered*> out;
    for (const auto& d : sink_.deliveries)
      if (d.to == peer) out.push_back(&d);
    return out;
  }
  QueueOptions with_dead_letter(std::string dlq, std::uint16_t max_deliveries = 0) {
    QueueOptions o;
    o.dead_letter = std::move(dlq);
    o.max_deliveries = max_deliveries;
    return o;
  }
};

TEST_F(BrokerAckTest, AckedReceiveHoldsTheMessageUntilAcked) {
  const PeerId p = connect(1000);
  const PeerId c = connect(2000);
  put(p, "jobs", "a");
  receive_acked(c, "jobs");

  ASSERT_EQ(to(c).size(), 1u);
  const Delivered& d = *to(c)[0];
  EXPECT_EQ(d.payload, "a");
  EXPECT_TRUE(d.has_extras);
  EXPECT_NE(d.tag, 0u);
  EXPECT_EQ(d.count, 1u);
  // Held: not deliverable, not gone, still the sender's.
  EXPECT_EQ(depth("jobs"), 0u);
  EXPECT_EQ(queue("jobs").held(), 1u);
  EXPECT_EQ(usage_of(1000).queued_messages, 1u);

  const Settled r = broker().ack(c, d.tag, false, now_);
  EXPECT_EQ(r.error, Errc::ok) << r.text;
  EXPECT_EQ(usage_of(1000).queued_messages, 0u);
  EXPECT_EQ(broker().find("jobs"), nullptr) << "an idle queue goes once nothing is held";
}

TEST_F(BrokerAckTest, PlainReceiveKeepsItsCostAndCarriesNoExtras) {
  const PeerId p = connect();
  const PeerId c = connect();
  put(p, "jobs", "a");
  receive_now(c, "jobs");
  ASSERT_EQ(to(c).size(), 1u);
  EXPECT_FALSE(to(c)[0]->has_extras);
  EXPECT_EQ(broker().find("jobs"), nullptr);
}

TEST_F(BrokerAckTest, ConsumerLeavingReturnsItsMessagesToTheHeadInOrder) {
  const PeerId p = connect();
  const PeerId c1 = connect();
  const PeerId c2 = connect();
  for (const char* m : {"1", "2", "3", "4", "5"})
    put(p, "jobs", m);
  receive_acked(c1, "jobs", 3);  // 1, 2, 3 held by c1
  ASSERT_EQ(to(c1).size(), 3u);
  EXPECT_EQ(depth("jobs"), 2u);

  broker().disconnect(c1, now_);
  EXPECT_EQ(depth("jobs"), 5u);
  receive_acked(c2, "jobs", 10);
  std::vector<std::string> got;
  for (const Delivered* d : to(c2))
    got.push_back(d->payload);
  EXPECT_EQ(got, (std::vector<std::string>{"1", "2", "3", "4", "5"}));
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(to(c2)[i]->count, 2u) << i;
  }
  EXPECT_EQ(to(c2)[3]->count, 1u);
  EXPECT_EQ(queue("jobs").counters().redelivered_total, 3u);
}

TEST_F(BrokerAckTest, AProcessExitingReturnsWhatItsLiveConnectionHeld) {
  const PeerId p = connect();
  const PeerId c1 = connect();
  const PeerId c2 = connect();
  put(p, "jobs", "a");
  receive_acked(c1, "jobs");
  const std::uint64_t tag = last_tag(c1);
  receive_acked(c2, "jobs", 1, -1);   // waits
  broker().process_exited(c1, now_);  // its connection lives on, inherited
  ASSERT_EQ(to(c2).size(), 1u);
  EXPECT_EQ(to(c2)[0]->payload, "a");
  EXPECT_EQ(to(c2)[0]->count, 2u);
  EXPECT_EQ(broker().ack(c1, tag, false, now_).error, Errc::unknown_delivery);
}

TEST_F(BrokerAckTest, AReturnedMessageGoesStraightToAWaitingReceiver) {
  const PeerId p = connect();
  const PeerId c1 = connect();
  const PeerId c2 = connect();
  put(p, "jobs", "a");
  receive_acked(c1, "jobs");
  receive_acked(c2, "jobs", 1, -1);  // waits
  EXPECT_TRUE(to(c2).empty());
  broker().disconnect(c1, now_);
  ASSERT_EQ(to(c2).size(), 1u);
  EXPECT_EQ(to(c2)[0]->payload, "a");
  EXPECT_EQ(to(c2)[0]->count, 2u);
}

TEST_F(BrokerAckTest, AckMultipleSettlesEverythingUpToTheTag) {
  const PeerId p = connect(1000);
  const PeerId c = connect(2000);
  for (const char* m : {"1", "2", "3"})
    put(p, "jobs", m);
  receive_acked(c, "jobs", 3);
  ASSERT_EQ(to(c).size(), 3u);
  EXPECT_EQ(broker().ack(c, to(c)[1]->tag, true, now_).error, Errc::ok);
  EXPECT_EQ(queue("jobs").held(), 1u);
  EXPECT_EQ(usage_of(1000).queued_messages, 1u);
  EXPECT_EQ(broker().ack(c, to(c)[0]->tag, false, now_).error, Errc::unknown_delivery);
  EXPECT_EQ(broker().ack(c, to(c)[2]->tag, false, now_).error, Errc::ok);
}

TEST_F(BrokerAckTest, SettlingAnotherConnectionsOrAnUnknownTagIsRefused) {
  const PeerId p = connect();
  const PeerId c = connect();
  const PeerId other = connect();
  put(p, "jobs", "a");
  receive_acked(c, "jobs");
  const std::uint64_t tag = last_tag(c);
  const Settled r = broker().ack(other, tag, false, now_);
  EXPECT_EQ(r.error, Errc::unknown_delivery);
  EXPECT_NE(r.text.find(std::to_string(tag)), std::string::npos) << r.text;
  EXPECT_EQ(broker().nack(c, 999'999, false, proto::NackAction::requeue, 0, now_).error,
            Errc::unknown_delivery);
  EXPECT_EQ(broker().extend(c, 999'999, 10, now_).error, Errc::unknown_delivery);
  EXPECT_EQ(queue("jobs").held(), 1u) << "a refused settle changes nothing";
}

TEST_F(BrokerAckTest, NackRequeuePutsItBackFirst) {
  const PeerId p = connect();
  const PeerId c = connect();
  put(p, "jobs", "a");
  put(p, "jobs", "b");
  receive_acked(c, "jobs");
  EXPECT_EQ(broker().nack(c, last_tag(c), false, proto::NackAction::requeue, 0, now_).error,
            Errc::ok);
  receive_acked(c, "jobs");
  EXPECT_EQ(to(c).back()->payload, "a");
  EXPECT_EQ(to(c).back()->count, 2u);
}

TEST_F(BrokerAckTest, NackRequeueAfterWaitsOutItsDelay) {
  const PeerId p = connect();
  const PeerId c = connect();
  put(p, "jobs", "a");
  receive_acked(c, "jobs");
  EXPECT_EQ(broker().nack(c, last_tag(c), false, proto::NackAction::requeue_after, 500, now_).error,
            Errc::ok);
  EXPECT_EQ(depth("jobs"), 0u);
  EXPECT_EQ(queue("jobs").delayed(), 1u);
  receive_acked(c, "jobs", 1, -1);  // waits
  advance(499ms);
  broker().expire(now_);
  EXPECT_EQ(to(c).size(), 1u);
  advance(1ms);
  broker().expire(now_);
  ASSERT_EQ(to(c).size(), 2u);
  EXPECT_EQ(to(c).back()->payload, "a");
  EXPECT_EQ(to(c).back()->count, 2u);
}

TEST_F(BrokerAckTest, AckTimeoutRedeliversElsewhereAndRefusesTheLateAck) {
  const PeerId p = connect();
  const PeerId hung = connect();
  const PeerId c = connect();
  QueueOptions o;
  o.ack_timeout_ms = 1000;
  ASSERT_EQ(declare("jobs", o), Errc::ok);
  put(p, "jobs", "a");
  receive_acked(hung, "jobs");
  const std::uint64_t tag = last_tag(hung);
  receive_acked(c, "jobs", 1, -1);
  advance(999ms);
  broker().expire(now_);
  EXPECT_TRUE(to(c).empty());
  advance(1ms);
  broker().expire(now_);
  ASSERT_EQ(to(c).size(), 1u);
  EXPECT_EQ(to(c)[0]->count, 2u);
  const Settled late = broker().ack(hung, tag, false, now_);
  EXPECT_EQ(late.error, Errc::delivery_timed_out) << late.text;
}

TEST_F(BrokerAckTest, ExtendPushesTheAckTimeoutBack) {
  const PeerId p = connect();
  const PeerId c = connect();
  QueueOptions o;
  o.ack_timeout_ms = 1000;
  ASSERT_EQ(declare("jobs", o), Errc::ok);
  put(p, "jobs", "a");
  receive_acked(c, "jobs");
  advance(900ms);
  EXPECT_EQ(broker().extend(c, last_tag(c), 5000, now_).error, Errc::ok);
  advance(4000ms);
  broker().expire(now_);
  EXPECT_EQ(queue("jobs").held(), 1u) << "still held: the extension runs to 5.9 s";
  EXPECT_EQ(broker().ack(c, last_tag(c), false, now_).error, Errc::ok);
}

TEST_F(BrokerAckTest, NackToDeadLetterMovesItWithHeadersSayingWhy) {
  const PeerId p = connect(1000);
  const PeerId c = connect(2000);
  ASSERT_EQ(declare("jobs", with_dead_letter("jobs.dead")), Errc::ok);
  std::vector<std::byte> headers;
  proto::append_header(headers, "trace", "t-1");
  ASSERT_EQ(broker().send(p, "jobs", bytes_of("a"), now_, Bytes(headers)).result,
            SendResult::accepted);
  receive_acked(c, "jobs");
  EXPECT_EQ(header_value(to(c)[0]->headers, "trace"), "t-1");
  EXPECT_EQ(broker().nack(c, last_tag(c), false, proto::NackAction::dead_letter, 0, now_).error,
            Errc::ok);
  EXPECT_EQ(depth("jobs.dead"), 1u);
  EXPECT_EQ(queue("jobs").counters().dead_lettered_total, 1u);
  EXPECT_EQ(usage_of(1000).queued_messages, 1u) << "the dead letter stays the sender's";

  receive_now(c, "jobs.dead");
  const Delivered& d = *to(c).back();
  EXPECT_EQ(d.payload, "a");
  EXPECT_EQ(d.sender.pid, pid_of(p)) << "the original sender stays";
  EXPECT_EQ(header_value(d.headers, "trace"), "t-1");
  EXPECT_EQ(header_value(d.headers, "qbus-dead-reason"), "rejected");
  EXPECT_EQ(header_value(d.headers, "qbus-dead-queue"), "jobs");
  EXPECT_EQ(header_value(d.headers, "qbus-dead-count"), "1");
}

TEST_F(BrokerAckTest, MaxDeliveriesDeadLettersOnTheLastReturn) {
  const PeerId p = connect();
  ASSERT_EQ(declare("jobs", with_dead_letter("jobs.dead", 2)), Errc::ok);
  put(p, "jobs", "poison");
  for (int i = 0; i < 2; ++i) {
    const PeerId c = connect();
    receive_acked(c, "jobs");
    ASSERT_EQ(to(c).size(), 1u) << i;
    broker().disconnect(c, now_);  // crashes on it
  }
  EXPECT_EQ(depth("jobs"), 0u);
  ASSERT_EQ(depth("jobs.dead"), 1u);
  const PeerId c = connect();
  receive_now(c, "jobs.dead");
  EXPECT_EQ(header_value(to(c)[0]->headers, "qbus-dead-reason"), "max_deliveries");
  EXPECT_EQ(header_value(to(c)[0]->headers, "qbus-dead-count"), "2");
}

TEST_F(BrokerAckTest, WithoutADeadLetterQueueMaxDeliveriesDrops) {
  const PeerId p = connect(1000);
  QueueOptions o;
  o.max_deliveries = 1;
  ASSERT_EQ(declare("jobs", o), Errc::ok);
  put(p, "jobs", "poison");
  const PeerId c = connect(2000);
  receive_acked(c, "jobs");
  broker().disconnect(c, now_);
  EXPECT_EQ(depth("jobs"), 0u);
  EXPECT_EQ(queue("jobs").counters().dropped_total, 1u);
  EXPECT_EQ(usage_of(1000).queued_messages, 0u);
}

TEST_F(BrokerAckTest, OverflowCanGoToTheDeadLetterQueue) {
  const PeerId p = connect();
  QueueOptions o = with_dead_letter("jobs.dead");
  o.max_messages = 2;
  o.overflow = Overflow::drop_oldest;
  o.dead_letter_overflow = true;
  ASSERT_EQ(declare("jobs", o), Errc::ok);
  for (const char* m : {"1", "2", "3"})
    put(p, "jobs", m);
  EXPECT_EQ(depth("jobs"), 2u);
  ASSERT_EQ(depth("jobs.dead"), 1u);
  const PeerId c = connect();
  receive_now(c, "jobs.dead");
  EXPECT_EQ(to(c)[0]->payload, "1");
  EXPECT_EQ(header_value(to(c)[0]->headers, "qbus-dead-reason"), "overflow");
}

TEST_F(BrokerAckTest, MaxUnackedBoundsWhatOneConnectionHolds) {
  limits_.max_unacked = 2;
  const PeerId p = connect();
  const PeerId c = connect();
  for (const char* m : {"1", "2", "3"})
    put(p, "jobs", m);
  receive_acked(c, "jobs", 10);
  EXPECT_EQ(to(c).size(), 2u) << "a batch takes no more than the rest of max_unacked";
  const std::uint64_t corr = receive_acked(c, "jobs");
  ASSERT_EQ(failures_to(c).size(), 1u);
  EXPECT_EQ(failures_to(c)[0].code, Errc::too_many_unacked);
  EXPECT_EQ(failures_to(c)[0].correlation, corr);
  EXPECT_EQ(depth("jobs"), 1u);
  receive_now(c, "jobs");  // at-most-once receives are not bound by it
  EXPECT_EQ(to(c).size(), 3u);
}

TEST_F(BrokerAckTest, HeldMessagesCountAgainstTheQueueLimitsUntilAcked) {
  const PeerId p = connect();
  const PeerId c = connect();
  QueueOptions o;
  o.max_messages = 2;
  o.overflow = Overflow::block;
  ASSERT_EQ(declare("jobs", o), Errc::ok);
  put(p, "jobs", "1");
  put(p, "jobs", "2");
  receive_acked(c, "jobs", 2);
  ASSERT_EQ(to(c).size(), 2u);
  EXPECT_EQ(send(p, "jobs", "3").result, SendResult::blocked)
      << "taken but not acked: the queue is still full";
  EXPECT_TRUE(sink_.resumes.empty() || sink_.resumes.back() != p);
  sink_.resumes.clear();
  EXPECT_EQ(broker().ack(c, to(c)[0]->tag, false, now_).error, Errc::ok);
  ASSERT_EQ(sink_.resumes.size(), 1u);
  EXPECT_EQ(sink_.resumes[0], p);
  put(p, "jobs", "3");
}

TEST_F(BrokerAckTest, DeletingAQueueOrphansWhatIsHeldAndTheAckStillSucceeds) {
  const PeerId p = connect(1000);
  const PeerId c = connect(2000);
  put(p, "jobs", "a");
  put(p, "jobs", "b");
  receive_acked(c, "jobs");
  const std::uint64_t tag = last_tag(c);
  ASSERT_TRUE(broker().remove("jobs").has_value());
  EXPECT_EQ(broker().find("jobs"), nullptr);
  EXPECT_EQ(usage_of(1000).queued_messages, 1u) << "held until settled";
  EXPECT_EQ(broker().nack(c, tag, false, proto::NackAction::requeue, 0, now_).error, Errc::ok);
  EXPECT_EQ(usage_of(1000).queued_messages, 0u);
  EXPECT_EQ(broker().find("jobs"), nullptr) << "a requeue into a deleted queue drops";
}

TEST_F(BrokerAckTest, RequestsAreHandedOverAtMostOnceEvenInAckMode) {
  const PeerId requester = connect();
  const PeerId c = connect();
  ASSERT_EQ(request(requester, 7, "svc", "q").result, SendResult::accepted);
  receive_acked(c, "svc");
  ASSERT_EQ(to(c).size(), 1u);
  EXPECT_EQ(to(c)[0]->tag, 0u);
  EXPECT_EQ(broker().find("svc"), nullptr);
}

TEST_F(BrokerAckTest, HeadersTravelWithAPlainMessage) {
  const PeerId p = connect();
  const PeerId c = connect();
  std::vector<std::byte> headers;
  proto::append_header(headers, "content-type", "text/plain");
  ASSERT_EQ(broker().send(p, "jobs", bytes_of("a"), now_, Bytes(headers)).result,
            SendResult::accepted);
  receive_now(c, "jobs");
  ASSERT_TRUE(to(c)[0]->has_extras);
  EXPECT_EQ(to(c)[0]->tag, 0u);
  EXPECT_EQ(header_value(to(c)[0]->headers, "content-type"), "text/plain");
  // Straight to a waiting receiver too.
  receive(c, "jobs");
  ASSERT_EQ(broker().send(p, "jobs", bytes_of("b"), now_, Bytes(headers)).result,
            SendResult::accepted);
  EXPECT_EQ(header_value(to(c).back()->headers, "content-type"), "text/plain");
}

TEST_F(BrokerAckTest, DeclaredAckOptionsConflictLikeTheOthers) {
  ASSERT_EQ(declare("jobs", with_dead_letter("jobs.dead", 3)), Errc::ok);
  std::string text;
  EXPECT_EQ(declare("jobs", with_dead_letter("elsewhere", 3), &text), Errc::queue_conflict);
  EXPECT_NE(text.find("dead_letter=jobs.dead"), std::string::npos) << text;
  EXPECT_EQ(declare("jobs", with_dead_letter("jobs.dead", 3)), Errc::ok);
}

// 17.12: the id is the message's, not the delivery's.
class BrokerMessageIdTest : public BrokerAckTest {
 protected:
  static QueueOptions with_ids(std::string dlq = {}) {
    QueueOptions o;
    o.message_ids = true;
    o.dead_letter = std::move(dlq);
    return o;
  }
  static std::string id_of(const Delivered& d) { return header_value(d.headers, "qbus-id"); }
};

TEST_F(BrokerMessageIdTest, EachMessageGetsItsOwnIdAfterTheSendersHeaders) {
  const PeerId p = connect();
  const PeerId c = connect();
  ASSERT_EQ(declare("jobs", with_ids()), Errc::ok);
  std::vector<std::byte> headers;
  proto::append_header(headers, "trace", "t-1");
  ASSERT_EQ(broker().send(p, "jobs", bytes_of("a"), now_, Bytes(headers)).result,
            SendResult::accepted);
  put(p, "jobs", "b");
  receive_now(c, "jobs", 2);
  ASSERT_EQ(to(c).size(), 2u);
  const std::string a = id_of(*to(c)[0]);
  const std::string b = id_of(*to(c)[1]);
  EXPECT_EQ(header_value(to(c)[0]->headers, "trace"), "t-1");
  EXPECT_EQ(proto::check_headers(bytes_of(to(c)[0]->headers), false), Errc::ok);
  // 16 hex digits of the incarnation, '-', a decimal count.
  ASSERT_NE(a, "<none>");
  ASSERT_GE(a.size(), 18u) << a;
  EXPECT_EQ(a.find_first_not_of("0123456789abcdef"), 16u) << a;
  EXPECT_EQ(a[16], '-') << a;
  EXPECT_EQ(a.substr(0, 17), b.substr(0, 17)) << "one incarnation";
  EXPECT_NE(a, b);
}

TEST_F(BrokerMessageIdTest, AMessageHandedStraightToAWaitingReceiverHasOneToo) {
  const PeerId p = connect();
  const PeerId c = connect();
  ASSERT_EQ(declare("jobs", with_ids()), Errc::ok);
  broker().receive(c, next_correlation_++, "jobs", 1, 1000, now_, false);
  put(p, "jobs", "a");
  ASSERT_EQ(to(c).size(), 1u);
  EXPECT_TRUE(to(c)[0]->has_extras);
  EXPECT_NE(id_of(*to(c)[0]), "<none>");
}

TEST_F(BrokerMessageIdTest, ARedeliveryCarriesTheSameId) {
  const PeerId p = connect();
  ASSERT_EQ(declare("jobs", with_ids()), Errc::ok);
  put(p, "jobs", "a");
  put(p, "jobs", "b");
  const PeerId c1 = connect();
  receive_acked(c1, "jobs", 2);
  ASSERT_EQ(to(c1).size(), 2u);
  const std::string a = id_of(*to(c1)[0]);
  const std::string b = id_of(*to(c1)[1]);
  // One by a nack, the other by the consumer's crash.
  ASSERT_EQ(broker().nack(c1, to(c1)[0]->tag, false, proto::NackAction::requeue, 0, now_).error,
            Errc::ok);
  broker().disconnect(c1, now_);
  const PeerId c2 = connect();
  receive_acked(c2, "jobs", 2);
  ASSERT_EQ(to(c2).size(), 2u);
  EXPECT_EQ(to(c2)[0]->payload, "a");
  EXPECT_EQ(to(c2)[0]->count, 2u);
  EXPECT_EQ(id_of(*to(c2)[0]), a);
  EXPECT_EQ(id_of(*to(c2)[1]), b);
}

TEST_F(BrokerMessageIdTest, ADeadLetterGetsANewIdFromAQueueThatGivesThem) {
  const PeerId p = connect();
  const PeerId c = connect();
  ASSERT_EQ(declare("jobs", with_ids("jobs.dead")), Errc::ok);
  ASSERT_EQ(declare("jobs.dead", with_ids()), Errc::ok);
  put(p, "jobs", "a");
  receive_acked(c, "jobs");
  const std::string first = id_of(*to(c)[0]);
  ASSERT_EQ(broker().nack(c, last_tag(c), false, proto::NackAction::dead_letter, 0, now_).error,
            Errc::ok);
  receive_now(c, "jobs.dead");
  const Delivered& d = *to(c).back();
  EXPECT_EQ(header_value(d.headers, "qbus-dead-reason"), "rejected");
  EXPECT_NE(id_of(d), "<none>");
  EXPECT_NE(id_of(d), first);
  std::size_t ids = 0;
  proto::HeaderReader r(bytes_of(d.headers));
  for (proto::HeaderEntry e; r.next(e);)
    ids += e.key == "qbus-id" ? 1 : 0;
  EXPECT_EQ(ids, 1u) << "the old queue's id is not carried over";
}

// A message journaled when a sender could give 32 headers still dead-letters into a block
// of at most 32 entries, which every client reads.
TEST_F(BrokerMessageIdTest, ADeadLetterKeepsASendersShareOfAnOldMessagesHeaders) {
  const PeerId p = connect();
  const PeerId c = connect();
  ASSERT_EQ(declare("jobs", with_dead_letter("jobs.dead")), Errc::ok);
  ASSERT_EQ(declare("jobs.dead", with_ids()), Errc::ok);
  std::vector<std::byte> headers;
  for (std::size_t i = 0; i < proto::kMaxHeaders; ++i)
    proto::append_header(headers, "h" + std::to_string(i), "v");
  ASSERT_EQ(broker().send(p, "jobs", bytes_of("a"), now_, Bytes(headers)).result,
            SendResult::accepted);
  receive_acked(c, "jobs");
  ASSERT_EQ(broker().nack(c, last_tag(c), false, proto::NackAction::dead_letter, 0, now_).error,
            Errc::ok);
  receive_now(c, "jobs.dead");
  const Delivered& d = *to(c).back();
  EXPECT_EQ(proto::check_headers(bytes_of(d.headers), false), Errc::ok);
  EXPECT_EQ(header_value(d.headers, "h27"), "v");
  EXPECT_EQ(header_value(d.headers, "h28"), "<none>");
  EXPECT_EQ(header_value(d.headers, "qbus-dead-reason"), "rejected");
  EXPECT_NE(id_of(d), "<none>");
}

TEST_F(BrokerMessageIdTest, TheOptionConflictsLikeTheOthers) {
  ASSERT_EQ(declare("jobs", with_ids()), Errc::ok);
  std::string text;
  EXPECT_EQ(declare("jobs", QueueOptions{}, &text), Errc::queue_conflict);
  EXPECT_NE(text.find("message_ids"), std::string::npos) << text;
}

TEST(MessageIds, SpellTheIncarnationInHexAndCountFromOne) {
  MessageIds ids(0x0123456789abcdefULL);
  EXPECT_EQ(ids.next(), "0123456789abcdef-1");
  EXPECT_EQ(ids.next(), "0123456789abcdef-2");
  MessageIds max(~0ULL);
  EXPECT_EQ(max.next(), "ffffffffffffffff-1");
  EXPECT_NE(MessageIds().incarnation(), MessageIds().incarnation()) << "drawn at random";
}

}  // namespace
}  // namespace qbus::broker
