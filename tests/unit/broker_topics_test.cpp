// Unit tests of the broker's subject registry (proto/PROTOCOL.md 18, broker/topics.hpp):
// pattern matching with `*` and `>`, one copy per subscription, pruning, the bounded
// buffers of slow subscribers under drop_oldest, disconnect and block, queue groups,
// retained messages, uid charges and the subscription limits.
#include <gtest/gtest.h>

#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "broker_fixture.hpp"

namespace qbus::broker {
namespace {

using namespace fakes;

class BrokerTopicsTest : public BrokerTest {
 protected:
  SubjectSubscribe request(std::string_view pattern, std::uint32_t max_messages = 0,
                           proto::SlowPolicy slow = proto::SlowPolicy::use_default) {
    SubjectSubscribe s;
    s.correlation = next_correlation_++;
    s.pattern = pattern;
    s.max_messages = max_messages;
    s.slow = slow;
    return s;
  }
  // Subscribes and expects the subscription to be live; returns its correlation.
  std::uint64_t subscribe(PeerId peer, const SubjectSubscribe& s) {
    const SendOutcome out = broker().subscribe_subject(peer, s, true);
    EXPECT_EQ(out.result, SendResult::deferred) << out.text;
    return s.correlation;
  }
  std::uint64_t subscribe(PeerId peer, std::string_view pattern, std::uint32_t max_messages = 0,
                          proto::SlowPolicy slow = proto::SlowPolicy::use_default) {
    return subscribe(peer, request(pattern, max_messages, slow));
  }
  std::uint64_t join(PeerId peer, std::string_view pattern, std::string_view group) {
    SubjectSubscribe s = request(pattern);
    s.group = group;
    return subscribe(peer, s);
  }

  SendOutcome publish(PeerId from, std::string_view subject, std::string_view payload,
                      bool retain = false, Bytes headers = {}) {
    PublishSend m;
    m.subject = subject;
    m.payload = bytes_of(payload);
    m.headers = headers;
    m.retain = retain;
    return broker().publish(from, m, now_);
  }
  // Publishes and expects the message to be taken (delivered, buffered or dropped).
  void pub(PeerId from, std::string_view subject, std::string_view payload, bool retain = false) {
    const SendOutcome out = publish(from, subject, payload, retain);
    EXPECT_EQ(out.result, SendResult::accepted) << subject << ": " << out.text;
  }

  std::vector<const Delivered*> to(PeerId peer) const {
    std::vector<const Delivered*> out;
    for (const auto& d : sink_.deliveries)
      if (d.to == peer) out.push_back(&d);
    return out;
  }
  // The subjects delivered to `peer` under `correlation`, in order.
  std::vector<std::string> subjects_to(PeerId peer, std::uint64_t correlation) const {
    std::vector<std::string> out;
    for (const auto& d : sink_.deliveries)
      if (d.to == peer && d.correlation == correlation) out.push_back(d.key);
    return out;
  }
  // The one subscription `peer` holds under `correlation`; null when none.
  const TopicSubscription* subscription(PeerId peer, std::uint64_t correlation) {
    const TopicSubscription* found = nullptr;
    broker().topics().for_each_subscription([&](const TopicSubscription& s) {
      if (s.peer == peer && s.id == correlation) found = &s;
    });
    return found;
  }
  std::size_t patterns() {
    std::size_t n = 0;
    broker().topics().for_each_pattern([&](const TopicNode&) { ++n; });
    return n;
  }
  const TopicTotals& totals() { return broker().topics().totals(); }
  static std::vector<std::string> numbers(int first, int last) {
    std::vector<std::string> out;
    for (int i = first; i < last; ++i)
      out.push_back(std::to_string(i));
    return out;
  }
};

// ---- matching ----------------------------------------------------------------------------

TEST_F(BrokerTopicsTest, EachPatternGetsExactlyTheSubjectsItMatchesInOrder) {
  struct Row {
    std::string pattern;
    std::vector<std::string> expected;
  };
  const std::vector<Row> table = {
      {"a.b", {"a.b"}},
      {"a.*", {"a.b"}},
      {"a.>", {"a.b", "a.b.c", "a.x.c"}},  // `>` needs at least one token: not "a"
      {"*.b", {"a.b", "x.b"}},
      {">", {"a", "a.b", "a.b.c", "x.b", "a.x.c"}},
      {"a.b.c", {"a.b.c"}},
      {"*", {"a"}},
      {"*.*.c", {"a.b.c", "a.x.c"}},
  };
  const PeerId p = connect();
  std::vector<PeerId> peers;
  std::vector<std::uint64_t> correlations;
  for (const Row& row : table) {
    peers.push_back(connect());
    correlations.push_back(subscribe(peers.back(), row.pattern));
  }

  for (const char* subject : {"a", "a.b", "a.b.c", "x.b", "a.x.c"})
    pub(p, subject, subject);

  std::size_t expected_total = 0;
  for (std::size_t i = 0; i < table.size(); ++i) {
    EXPECT_EQ(subjects_to(peers[i], correlations[i]), table[i].expected) << table[i].pattern;
    EXPECT_EQ(to(peers[i]).size(), table[i].expected.size()) << table[i].pattern;
    expected_total += table[i].expected.size();
  }
  for (const auto& d : sink_.deliveries) {
    EXPECT_EQ(d.payload, d.key) << "the delivery's key is the published subject";
    EXPECT_TRUE(d.last) << "each subject delivery is complete";
    EXPECT_FALSE(d.has_extras) << "no headers, no gap, not retained";
  }
  EXPECT_EQ(sink_.deliveries.size(), expected_total);
  EXPECT_EQ(totals().published, 5u);
  EXPECT_EQ(totals().unmatched, 0u);
  EXPECT_EQ(totals().delivered, expected_total);
}

TEST_F(BrokerTopicsTest, APeerGetsOneCopyPerMatchingSubscription) {
  const PeerId p = connect();
  const PeerId s = connect();
  const std::uint64_t star = subscribe(s, "a.*");
  const std::uint64_t exact = subscribe(s, "a.b");
  const std::uint64_t all = subscribe(s, ">");
  subscribe(s, "x.*");

  pub(p, "a.b", "m");

  ASSERT_EQ(to(s).size(), 3u);
  std::set<std::uint64_t> got;
  for (const Delivered* d : to(s)) {
    EXPECT_EQ(d->payload, "m");
    got.insert(d->correlation);
  }
  EXPECT_EQ(got, (std::set<std::uint64_t>{star, exact, all}));

  pub(p, "a.c", "n");
  EXPECT_EQ(subjects_to(s, star), (std::vector<std::string>{"a.b", "a.c"}));
  EXPECT_EQ(subjects_to(s, exact), (std::vector<std::string>{"a.b"}));
  EXPECT_EQ(subjects_to(s, all), (std::vector<std::string>{"a.b", "a.c"}));
}

TEST_F(BrokerTopicsTest, UnsubscribeAndDisconnectLeaveNothingBehind) {
  const PeerId p = connect();
  const PeerId a = connect();
  const PeerId b = connect();
  const std::uint64_t a1 = subscribe(a, "a.b.c");
  const std::uint64_t a2 = join(a, "a.*", "g");
  subscribe(b, "a.>");
  subscribe(b, "a.b.c");  // the same pattern as a1: one trie node for both
  sink_.set_wants_more(b, false);
  pub(p, "a.b.c", "held");  // b buffers it: its disconnect must release it
  EXPECT_EQ(broker().topics().subscription_count(), 4u);
  EXPECT_EQ(patterns(), 3u);
  EXPECT_EQ(usage_of(1000).subscriptions, 4u);

  EXPECT_TRUE(broker().unsubscribe(a, a1, now_));
  EXPECT_FALSE(broker().unsubscribe(a, a1, now_));
  EXPECT_EQ(patterns(), 3u) << "b still subscribes to a.b.c";
  EXPECT_TRUE(broker().unsubscribe(a, a2, now_));
  EXPECT_EQ(patterns(), 2u);
  broker().disconnect(b, now_);

  EXPECT_EQ(broker().topics().subscription_count(), 0u);
  EXPECT_EQ(patterns(), 0u);
  std::size_t subscriptions = 0;
  broker().topics().for_each_subscription([&](const TopicSubscription&) { ++subscriptions; });
  EXPECT_EQ(subscriptions, 0u);
  EXPECT_EQ(usage_of(1000).subscriptions, 0u);
  EXPECT_EQ(usage_of(1000).queued_bytes, 0u);
  EXPECT_EQ(usage_of(1000).queued_messages, 0u);

  const std::size_t delivered = sink_.deliveries.size();
  pub(p, "a.b.c", "late");
  EXPECT_EQ(sink_.deliveries.size(), delivered);
  EXPECT_EQ(totals().published, 2u);
  EXPECT_EQ(totals().unmatched, 1u);
  EXPECT_EQ(totals().dropped, 0u) << "a buffer released by going is not counted as drops";
}

// ---- slow subscribers --------------------------------------------------------------------

TEST_F(BrokerTopicsTest, DropOldestKeepsTheNewestAndTellsHowManyWereDropped) {
  const PeerId p = connect();
  const PeerId s = connect();
  sink_.set_wants_more(s, false);
  const std::uint64_t sub = subscribe(s, "t", 4);

  for (const std::string& m : numbers(0, 10)) {
    const SendOutcome out = publish(p, "t", m);
    EXPECT_EQ(out.result, SendResult::accepted) << "drop_oldest never holds the publisher up";
  }
  EXPECT_TRUE(to(s).empty());
  EXPECT_TRUE(sink_.resumes.empty());
  ASSERT_NE(subscription(s, sub), nullptr);
  EXPECT_EQ(subscription(s, sub)->buffer.size(), 4u);
  EXPECT_EQ(subscription(s, sub)->dropped, 6u);

  sink_.set_wants_more(s, true);
  broker().output_ready(s, now_);

  EXPECT_EQ(payloads_to(s), numbers(6, 10));
  const auto got = to(s);
  ASSERT_EQ(got.size(), 4u);
  EXPECT_TRUE(got[0]->has_extras);
  EXPECT_EQ(header_value(got[0]->headers, proto::kHeaderDropped), "6");
  for (std::size_t i = 1; i < got.size(); ++i) {
    EXPECT_FALSE(got[i]->has_extras) << i;
    EXPECT_EQ(header_value(got[i]->headers, proto::kHeaderDropped), "<none>") << i;
  }
  EXPECT_EQ(totals().dropped, 6u);
  EXPECT_EQ(totals().delivered, 4u);
  EXPECT_TRUE(subscription(s, sub)->buffer.empty());
}

TEST_F(BrokerTopicsTest, TheBufferIsBoundedInBytesTooAndAskedBoundsAreClamped) {
  limits_.subscription_max_bytes = 25;  // room for two payloads of 10 bytes, not three
  const PeerId p = connect();
  const PeerId s = connect();
  sink_.set_wants_more(s, false);
  const std::uint64_t by_default = subscribe(s, "t");
  SubjectSubscribe big = request("t");
  big.max_bytes = 1000;
  const std::uint64_t asked = subscribe(s, big);
  ASSERT_NE(subscription(s, asked), nullptr);
  EXPECT_EQ(subscription(s, by_default)->max_bytes, 25u);
  EXPECT_EQ(subscription(s, asked)->max_bytes, 25u) << "clamped to the limit";

  for (const char* m : {"000000000a", "000000000b", "000000000c", "000000000d", "000000000e"}) {
    pub(p, "t", m);
    for (const std::uint64_t id : {by_default, asked}) {
      EXPECT_LE(subscription(s, id)->buffered_bytes, 25u);
      EXPECT_LE(subscription(s, id)->buffer.size(), 2u);
    }
  }
  EXPECT_EQ(subscription(s, by_default)->buffered_bytes, 20u);
  EXPECT_EQ(totals().dropped, 6u);  // three for each subscription
  EXPECT_EQ(usage_of(1000).queued_bytes, 40u);

  sink_.set_wants_more(s, true);
  broker().output_ready(s, now_);
  for (const std::uint64_t id : {by_default, asked}) {
    std::vector<std::string> got;
    std::vector<std::string> dropped;
    for (const Delivered* d : to(s)) {
      if (d->correlation != id) continue;
      got.push_back(d->payload);
      dropped.push_back(header_value(d->headers, proto::kHeaderDropped));
    }
    EXPECT_EQ(got, (std::vector<std::string>{"000000000d", "000000000e"}));
    EXPECT_EQ(dropped, (std::vector<std::string>{"3", "<none>"}));
  }
  EXPECT_EQ(usage_of(1000).queued_bytes, 0u);
}

TEST_F(BrokerTopicsTest, DisconnectPolicyCutsTheSlowSubscriberAndNobodyElse) {
  const PeerId p = connect();
  const PeerId slow = connect();
  const PeerId fast = connect();
  sink_.set_wants_more(slow, false);
  const std::uint64_t sub = subscribe(slow, "t", 2, proto::SlowPolicy::disconnect);
  subscribe(fast, "t");

  pub(p, "t", "1");
  pub(p, "t", "2");
  EXPECT_TRUE(sink_.cut.empty());
  pub(p, "t", "3");  // the publisher goes on

  EXPECT_EQ(sink_.cut, (std::vector<PeerId>{slow}));
  ASSERT_EQ(failures_to(slow).size(), 1u);
  EXPECT_EQ(failures_to(slow)[0].correlation, sub);
  EXPECT_EQ(failures_to(slow)[0].code, Errc::slow_subscriber);
  EXPECT_NE(failures_to(slow)[0].text.find("disconnect"), std::string::npos)
      << failures_to(slow)[0].text;
  EXPECT_EQ(payloads_to(fast), numbers(1, 4));
  EXPECT_TRUE(payloads_to(slow).empty());
  EXPECT_EQ(totals().disconnected, 1u);
  EXPECT_EQ(totals().dropped, 0u);
  // Its buffer goes at once, before the edge closes the connection.
  EXPECT_EQ(subscription(slow, sub), nullptr);
  EXPECT_EQ(broker().topics().subscription_count(), 1u);
  EXPECT_EQ(usage_of(1000).queued_bytes, 0u);

  broker().disconnect(slow, now_);  // as the edge does after cut_off
  pub(p, "t", "4");
  EXPECT_EQ(payloads_to(fast), numbers(1, 5));
  EXPECT_EQ(totals().disconnected, 1u);
}

TEST_F(BrokerTopicsTest, BlockPolicyHoldsThePublisherUntilThereIsRoom) {
  const PeerId p = connect();
  const PeerId s = connect();
  const PeerId other = connect();
  sink_.set_wants_more(s, false);
  subscribe(s, "t", 2, proto::SlowPolicy::block);
  subscribe(other, "t");

  pub(p, "t", "1");
  pub(p, "t", "2");
  const SendOutcome third = publish(p, "t", "3");

  EXPECT_EQ(third.result, SendResult::blocked);
  EXPECT_EQ(third.error, Errc::ok);
  EXPECT_EQ(payloads_to(other), numbers(1, 3)) << "a blocked publish reaches nobody";
  EXPECT_EQ(totals().published, 2u);
  EXPECT_TRUE(sink_.resumes.empty());

  sink_.set_wants_more(s, true);
  broker().output_ready(s, now_);
  EXPECT_EQ(payloads_to(s), numbers(1, 3));
  EXPECT_EQ(sink_.resumes, (std::vector<PeerId>{p}));

  pub(p, "t", "3");  // the edge sends the frame again
  EXPECT_EQ(payloads_to(s), numbers(1, 4));
  EXPECT_EQ(payloads_to(other), numbers(1, 4));
  EXPECT_EQ(totals().published, 3u);
  EXPECT_EQ(totals().dropped, 0u);
  EXPECT_EQ(totals().delivered, 6u);
}

// The byte bound blocks as the message bound does: a publish that would not fit waits.
// A message larger than the whole bound is taken by an empty buffer alone, under every
// policy, so that it is neither lost nor waits for room that cannot come.
TEST_F(BrokerTopicsTest, TheByteBoundBlocksAndAnEmptyBufferTakesAnyOneMessage) {
  limits_.subscription_max_bytes = 25;  // two payloads of 10 bytes, not three
  const PeerId p = connect();
  const PeerId blocking = connect();
  const PeerId dropping = connect();
  sink_.set_wants_more(blocking, false);
  sink_.set_wants_more(dropping, false);
  subscribe(blocking, "t", 0, proto::SlowPolicy::block);
  const std::uint64_t d = subscribe(dropping, "u", 0, proto::SlowPolicy::drop_oldest);
  const std::string ten(10, 'x');
  const std::string forty(40, 'y');

  pub(p, "t", ten);
  pub(p, "t", ten);
  EXPECT_EQ(publish(p, "t", ten).result, SendResult::blocked) << "20 + 10 bytes > 25";
  sink_.set_wants_more(blocking, true);
  broker().output_ready(blocking, now_);
  EXPECT_EQ(sink_.resumes, (std::vector<PeerId>{p}));
  sink_.set_wants_more(blocking, false);
  pub(p, "t", forty);  // the buffer is empty: it takes the 40 bytes alone
  EXPECT_EQ(publish(p, "t", ten).result, SendResult::blocked);
  sink_.set_wants_more(blocking, true);
  broker().output_ready(blocking, now_);
  EXPECT_EQ(payloads_to(blocking), (std::vector<std::string>{ten, ten, forty}));

  pub(p, "u", ten);
  pub(p, "u", ten);
  pub(p, "u", forty);  // both older ones go, the large one stays
  sink_.set_wants_more(dropping, true);
  broker().output_ready(dropping, now_);
  const auto got = to(dropping);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0]->correlation, d);
  EXPECT_EQ(got[0]->payload, forty);
  EXPECT_EQ(header_value(got[0]->headers, proto::kHeaderDropped), "2");
  EXPECT_EQ(totals().dropped, 2u);
}

// A blocked retained publish is not carried out at all: the retained message stays the
// one before until the publish is sent again and taken.
// A group's turn passes over a member whose buffer could not take this message by its
// bytes when another member can: nothing is dropped while a member has room.
TEST_F(BrokerTopicsTest, AGroupGivesAMessageToAMemberWithRoomForItsBytes) {
  limits_.subscription_max_bytes = 25;
  const PeerId p = connect();
  const PeerId a = connect();
  const PeerId b = connect();
  sink_.set_wants_more(a, false);
  sink_.set_wants_more(b, false);
  join(a, "g", "workers");
  join(b, "g", "workers");
  pub(p, "g", std::string(15, 'a'));  // to a
  pub(p, "g", std::string(5, 'b'));   // to b
  pub(p, "g", std::string(15, 'c'));  // a's turn, but 15 + 15 > 25: to b (5 + 15)
  EXPECT_EQ(totals().dropped, 0u);
  sink_.set_wants_more(a, true);
  sink_.set_wants_more(b, true);
  broker().output_ready(a, now_);
  broker().output_ready(b, now_);
  EXPECT_EQ(payloads_to(a), std::vector<std::string>{std::string(15, 'a')});
  EXPECT_EQ(payloads_to(b), (std::vector<std::string>{std::string(5, 'b'), std::string(15, 'c')}));
}

// Under block, a spent uid quota drops (18.4); the room those drops make releases a
// publisher blocked on the buffer, which no drain would do (the subscriber still reads
// nothing).
TEST_F(BrokerTopicsTest, DropsForASpentQuotaReleaseABlockedPublisher) {
  limits_.subscription_max_bytes = 25;
  limits_.uid_max_queued_bytes = 30;
  const PeerId waiting = connect(2000);
  const PeerId other = connect(2000);
  const PeerId s = connect(1000);
  const PeerId same_uid = connect(1000);
  sink_.set_wants_more(s, false);
  subscribe(s, "t", 0, proto::SlowPolicy::block);
  const std::string ten(10, 'x');
  pub(other, "t", ten);
  pub(other, "t", ten);
  EXPECT_EQ(publish(waiting, "t", ten).result, SendResult::blocked);  // 30 > 25
  put(same_uid, "q", ten);  // uid 1000 now holds 30 bytes: its quota
  pub(other, "t", "abc");   // fits the buffer (23), not the quota: the oldest goes
  EXPECT_EQ(totals().dropped, 1u);
  EXPECT_EQ(sink_.resumes, (std::vector<PeerId>{waiting}));
}

TEST_F(BrokerTopicsTest, ABlockedRetainedPublishDoesNotReplaceTheRetainedMessage) {
  const PeerId p = connect();
  const PeerId s = connect();
  sink_.set_wants_more(s, false);
  subscribe(s, "state", 1, proto::SlowPolicy::block);
  pub(p, "state", "old", true);
  EXPECT_EQ(publish(p, "state", "new", true).result, SendResult::blocked);

  const PeerId late = connect();
  subscribe(late, "state");
  EXPECT_EQ(payloads_to(late), std::vector<std::string>{"old"});
  sink_.set_wants_more(s, true);
  broker().output_ready(s, now_);
  pub(p, "state", "new", true);
  const PeerId later = connect();
  subscribe(later, "state");
  EXPECT_EQ(payloads_to(later), std::vector<std::string>{"new"});
  EXPECT_EQ(payloads_to(s), (std::vector<std::string>{"old", "new"}));
}

// A connection with two subscriptions of policy disconnect that overflow on one publish
// hears slow_subscriber on each, but is cut off and counted once.
TEST_F(BrokerTopicsTest, AConnectionIsCutOffOnceWhateverTheNumberOfItsSlowSubscriptions) {
  const PeerId p = connect();
  const PeerId slow = connect();
  sink_.set_wants_more(slow, false);
  const std::uint64_t a = subscribe(slow, "t.*", 1, proto::SlowPolicy::disconnect);
  const std::uint64_t b = subscribe(slow, "t.>", 1, proto::SlowPolicy::disconnect);
  pub(p, "t.x", "1");
  pub(p, "t.x", "2");

  EXPECT_EQ(sink_.cut, (std::vector<PeerId>{slow}));
  EXPECT_EQ(totals().disconnected, 1u);
  std::set<std::uint64_t> ended;
  for (const auto& f : failures_to(slow)) {
    EXPECT_EQ(f.code, Errc::slow_subscriber);
    ended.insert(f.correlation);
  }
  EXPECT_EQ(ended, (std::set<std::uint64_t>{a, b}));
  EXPECT_EQ(broker().topics().subscription_count(), 0u);
}

TEST_F(BrokerTopicsTest, ABlockedPublisherIsResumedWhenTheSubscriberLeaves) {
  const PeerId p = connect();
  const PeerId s = connect();
  sink_.set_wants_more(s, false);
  subscribe(s, "t", 1, proto::SlowPolicy::block);
  pub(p, "t", "1");
  ASSERT_EQ(publish(p, "t", "2").result, SendResult::blocked);

  broker().disconnect(s, now_);

  EXPECT_EQ(sink_.resumes, (std::vector<PeerId>{p}));
  pub(p, "t", "2");
  EXPECT_EQ(totals().unmatched, 1u);
}

// ---- queue groups ------------------------------------------------------------------------

TEST_F(BrokerTopicsTest, AQueueGroupSharesTheMessagesInTurnAndAPlainSubscriberGetsAll) {
  const PeerId p = connect();
  const std::vector<PeerId> members = {connect(), connect(), connect()};
  for (const PeerId m : members)
    join(m, "jobs.*", "workers");
  const PeerId plain = connect();
  subscribe(plain, "jobs.*");

  for (const std::string& m : numbers(0, 9))
    pub(p, "jobs.run", m);

  std::multiset<std::string> shared;
  for (std::size_t i = 0; i < members.size(); ++i) {
    const auto got = payloads_to(members[i]);
    EXPECT_EQ(got.size(), 3u) << "member " << i;
    shared.insert(got.begin(), got.end());
  }
  const auto all = numbers(0, 9);
  EXPECT_EQ(shared, (std::multiset<std::string>(all.begin(), all.end())))
      << "each message to one member, none twice";
  EXPECT_EQ(payloads_to(members[0]), (std::vector<std::string>{"0", "3", "6"}));
  EXPECT_EQ(payloads_to(members[1]), (std::vector<std::string>{"1", "4", "7"}));
  EXPECT_EQ(payloads_to(plain), all);

  std::size_t groups = 0;
  broker().topics().for_each_pattern([&](const TopicNode& n) {
    groups += n.groups.size();
    ASSERT_EQ(n.groups.size(), 1u);
    EXPECT_EQ(n.groups[0]->members.size(), 3u);
    EXPECT_EQ(n.plain.size(), 1u);
  });
  EXPECT_EQ(groups, 1u);
}

TEST_F(BrokerTopicsTest, AGroupPrefersMembersThatReadAndAMemberLeavingTakesOnlyItsBuffer) {
  const PeerId p = connect();
  const PeerId reads = connect();
  const PeerId stalled = connect();
  join(reads, "t", "g");
  join(stalled, "t", "g");
  sink_.set_wants_more(stalled, false);

  for (const std::string& m : numbers(0, 4))
    pub(p, "t", m);
  EXPECT_EQ(payloads_to(reads), numbers(0, 4)) << "a member that can take it at once wins";

  sink_.set_wants_more(reads, false);
  pub(p, "t", "4");
  pub(p, "t", "5");  // neither reads: both buffer, in turn
  broker().disconnect(stalled, now_);
  sink_.set_wants_more(reads, true);
  broker().output_ready(reads, now_);
  const auto got = payloads_to(reads);
  EXPECT_EQ(got.size(), 5u) << "one of 4 and 5 left with the stalled member";
  pub(p, "t", "6");
  EXPECT_EQ(payloads_to(reads).back(), "6");
}

// ---- retained messages -------------------------------------------------------------------

TEST_F(BrokerTopicsTest, ARetainedMessageComesFirstAndIsReplacedAndCleared) {
  const PeerId p = connect();
  pub(p, "r.a", "v1", true);
  EXPECT_EQ(totals().unmatched, 1u) << "delivered as usual: to nobody yet";
  EXPECT_EQ(broker().topics().retained_count(), 1u);
  EXPECT_EQ(broker().topics().retained_bytes(), 2u);

  const PeerId s = connect();
  const std::uint64_t sub = subscribe(s, "r.>");
  EXPECT_EQ(sink_.confirms, (std::vector<Confirmation>{{s, sub}}));
  pub(p, "r.b", "n1");
  auto got = to(s);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0]->payload, "v1");
  EXPECT_EQ(got[0]->key, "r.a");
  EXPECT_EQ(got[0]->correlation, sub);
  EXPECT_EQ(header_value(got[0]->headers, proto::kHeaderRetained), "1");
  EXPECT_EQ(got[1]->payload, "n1");
  EXPECT_FALSE(got[1]->has_extras);

  pub(p, "r.a", "v2", true);  // replaces v1; a live subscriber gets it as any message
  EXPECT_EQ(broker().topics().retained_count(), 1u);
  got = to(s);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[2]->payload, "v2");
  EXPECT_EQ(header_value(got[2]->headers, proto::kHeaderRetained), "<none>");
  const PeerId late = connect();
  subscribe(late, "r.*");
  EXPECT_EQ(payloads_to(late), (std::vector<std::string>{"v2"}));

  pub(p, "r.a", "", true);  // clears it, and is not delivered
  EXPECT_EQ(to(s).size(), 3u);
  EXPECT_EQ(payloads_to(late).size(), 1u);
  EXPECT_EQ(broker().topics().retained_count(), 0u);
  EXPECT_EQ(broker().topics().retained_bytes(), 0u);
  const PeerId later = connect();
  subscribe(later, ">");
  EXPECT_TRUE(to(later).empty());
}

TEST_F(BrokerTopicsTest, RetainedMessagesKeepTheSendersHeadersAndGoToAGroupsFirstMemberOnly) {
  const PeerId p = connect();
  std::vector<std::byte> block;
  proto::append_header(block, "content-type", "text/plain");
  ASSERT_EQ(publish(p, "r", "v", true, block).result, SendResult::accepted);
  EXPECT_EQ(broker().topics().retained_bytes(), 1u + block.size());

  const PeerId first = connect();
  const PeerId second = connect();
  join(first, "r", "g");
  join(second, "r", "g");

  ASSERT_EQ(to(first).size(), 1u);
  EXPECT_EQ(header_value(to(first)[0]->headers, "content-type"), "text/plain");
  EXPECT_EQ(header_value(to(first)[0]->headers, proto::kHeaderRetained), "1");
  EXPECT_TRUE(to(second).empty());
}

TEST_F(BrokerTopicsTest, RetainedMessagesAreBoundedByMaxRetained) {
  limits_.max_retained = 2;
  const PeerId p = connect();
  const PeerId s = connect();
  subscribe(s, "k.>");
  pub(p, "k.1", "a", true);
  pub(p, "k.2", "b", true);

  const SendOutcome third = publish(p, "k.3", "c", true);

  EXPECT_EQ(third.result, SendResult::rejected);
  EXPECT_EQ(third.error, Errc::quota_exceeded);
  EXPECT_NE(third.text.find("limits.max_retained"), std::string::npos) << third.text;
  EXPECT_EQ(payloads_to(s), (std::vector<std::string>{"a", "b"})) << "refused: not delivered";
  EXPECT_EQ(broker().topics().retained_count(), 2u);
  EXPECT_EQ(totals().published, 2u);

  pub(p, "k.1", "a2", true);  // a subject that has one may replace it at the bound
  pub(p, "k.3", "plain");     // without RETAIN the bound does not apply
  pub(p, "k.2", "", true);
  pub(p, "k.3", "c", true);  // room again
  std::vector<std::string> kept;
  broker().topics().for_each_retained([&](const Published& m) {
    kept.push_back(m.subject + "=" +
                   std::string(reinterpret_cast<const char*>(m.payload.data()), m.payload.size()));
  });
  EXPECT_EQ(kept, (std::vector<std::string>{"k.1=a2", "k.3=c"}));
}

// ---- charges -----------------------------------------------------------------------------

TEST_F(BrokerTopicsTest, BufferedBytesAreChargedToTheSubscribersUid) {
  const PeerId p = connect(1000);
  const PeerId s = connect(2000);
  const PeerId reader = connect(3000);
  sink_.set_wants_more(s, false);
  sink_.set_wants_more(reader, false);
  subscribe(s, "t");
  subscribe(reader, "t");

  for (const char* m : {"12345", "67890", "abcde"})
    pub(p, "t", m);

  EXPECT_EQ(usage_of(2000).queued_bytes, 15u);
  EXPECT_EQ(usage_of(2000).queued_messages, 3u);
  EXPECT_EQ(usage_of(3000).queued_bytes, 15u) << "stored once, charged to every buffer";
  EXPECT_EQ(usage_of(1000).queued_bytes, 0u) << "the publisher is not charged";
  EXPECT_EQ(usage_of(1000).queued_messages, 0u);

  sink_.set_wants_more(reader, true);
  broker().output_ready(reader, now_);
  EXPECT_EQ(usage_of(3000).queued_bytes, 0u);
  EXPECT_EQ(usage_of(3000).queued_messages, 0u);

  broker().disconnect(s, now_);
  const UidUsage gone = usage_of(2000);
  EXPECT_EQ(gone.queued_bytes, 0u);
  EXPECT_EQ(gone.queued_messages, 0u);
  EXPECT_EQ(gone.subscriptions, 0u);
}

TEST_F(BrokerTopicsTest, RetainedBytesAreChargedToThePublishersUidUntilCleared) {
  limits_.uid_max_queued_bytes = 10;
  const PeerId p = connect(1000);
  pub(p, "r.a", "abcdef", true);
  EXPECT_EQ(usage_of(1000).queued_bytes, 6u);
  EXPECT_EQ(usage_of(1000).queued_messages, 1u);

  pub(p, "r.a", "xy", true);  // the replaced one's charge is given back
  EXPECT_EQ(usage_of(1000).queued_bytes, 2u);
  EXPECT_EQ(usage_of(1000).queued_messages, 1u);

  const SendOutcome over = publish(p, "r.b", "123456789", true);
  EXPECT_EQ(over.result, SendResult::rejected);
  EXPECT_EQ(over.error, Errc::quota_exceeded);
  EXPECT_EQ(broker().topics().retained_count(), 1u);

  pub(p, "r.a", "", true);
  EXPECT_EQ(usage_of(1000).queued_bytes, 0u);
  EXPECT_EQ(usage_of(1000).queued_messages, 0u);
  EXPECT_EQ(broker().topics().retained_bytes(), 0u);
  pub(p, "r.b", "123456789", true);
  EXPECT_EQ(usage_of(1000).queued_bytes, 9u);
}

// ---- limits ------------------------------------------------------------------------------

TEST_F(BrokerTopicsTest, MaxSubscriptionsBoundsWhatOneConnectionHolds) {
  limits_.max_subscriptions = 2;
  const PeerId s = connect();
  subscribe(s, "a");
  const std::uint64_t second = subscribe(s, "b");

  const SendOutcome third = broker().subscribe_subject(s, request("c"), true);

  EXPECT_EQ(third.result, SendResult::rejected);
  EXPECT_EQ(third.error, Errc::too_many_subscriptions);
  EXPECT_NE(third.text.find("limits.max_subscriptions"), std::string::npos) << third.text;
  EXPECT_EQ(sink_.confirms.size(), 2u) << "a refusal is not confirmed";
  EXPECT_EQ(broker().topics().subscription_count(), 2u);
  EXPECT_EQ(patterns(), 2u);
  subscribe(connect(), "c");  // another connection has its own count

  ASSERT_TRUE(broker().unsubscribe(s, second, now_));
  subscribe(s, "c");
}

TEST_F(BrokerTopicsTest, UidMaxSubscriptionsCountsEveryConnectionOfTheUid) {
  limits_.uid_max_subscriptions = 3;
  const PeerId a = connect(1000);
  const PeerId b = connect(1000);
  subscribe(a, "a.1");
  subscribe(a, "a.2");
  subscribe(b, "b.1");

  const SendOutcome refused = broker().subscribe_subject(b, request("b.2"), true);

  EXPECT_EQ(refused.result, SendResult::rejected);
  EXPECT_EQ(refused.error, Errc::too_many_subscriptions);
  EXPECT_NE(refused.text.find("uid 1000"), std::string::npos) << refused.text;
  EXPECT_NE(refused.text.find("limits.uid_max_subscriptions 3"), std::string::npos) << refused.text;
  subscribe(connect(2000), "b.2");  // another uid has its own count

  broker().disconnect(a, now_);
  subscribe(b, "b.2");
  EXPECT_EQ(usage_of(1000).subscriptions, 2u);
}

TEST_F(BrokerTopicsTest, ACorrelationNamesOneSubscriptionOfAConnection) {
  const PeerId s = connect();
  const SubjectSubscribe first = request("a");
  subscribe(s, first);
  SubjectSubscribe again = request("b");
  again.correlation = first.correlation;

  const SendOutcome out = broker().subscribe_subject(s, again, true);

  EXPECT_EQ(out.result, SendResult::rejected);
  EXPECT_EQ(out.error, Errc::malformed_frame);
  EXPECT_EQ(broker().topics().subscription_count(), 1u);
}

}  // namespace
}  // namespace qbus::broker
