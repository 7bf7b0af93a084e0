// libqbus's time to live, delay and priority of a message and the queue options that go
// with them (PROTOCOL.md 17.1 and 17.6), without a qbusd: the checks and the encoding of
// client-lib/src/properties.hpp, and the bytes a Client writes to a scripted fake broker
// (client_fake_broker.hpp) for PROPERTIES, SEND_REGION and DECLARE_EX.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <qbus/client.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "client_fake_broker.hpp"
#include "properties.hpp"
#include "qbus/proto/codec.hpp"
#include "qbus/proto/headers.hpp"

namespace qbus::testing {
namespace {

using proto::FrameType;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr milliseconds kMaxWireMs{4'294'967'295LL};

std::vector<std::byte> bytes_of(std::initializer_list<int> values) {
  std::vector<std::byte> out;
  for (int v : values)
    out.push_back(static_cast<std::byte>(v));
  return out;
}

// Bytes [from, from + n) of a frame's body.
std::vector<std::byte> slice(const Frame& f, std::size_t from, std::size_t n) {
  EXPECT_GE(f.body.size(), from + n) << proto::frame_type_name(f.type);
  if (f.body.size() < from + n) return {};
  return {f.body.begin() + static_cast<std::ptrdiff_t>(from),
          f.body.begin() + static_cast<std::ptrdiff_t>(from + n)};
}

// The code `call` threw; Errc::ok when it threw nothing. With `naming`, the message must
// contain it too.
template <typename Call>
Errc code_of(Call&& call, std::string_view naming = {}) {
  try {
    call();
  } catch (const Error& e) {
    EXPECT_NE(std::string_view(e.what()).find(naming), std::string_view::npos) << e.what();
    return e.code();
  }
  return Errc::ok;
}

SendOptions timed(milliseconds ttl, milliseconds delay, std::uint8_t priority) {
  SendOptions o;
  o.ttl = ttl;
  o.delay = delay;
  o.priority = priority;
  return o;
}

// ---- The helpers ------------------------------------------------------------------------

TEST(ClientTimeTest, SendOptionsBecomeProperties) {
  SendOptions o = timed(milliseconds(1500), milliseconds(250), 7);
  const auto p = detail::message_properties(o);
  EXPECT_EQ(p.ttl_ms, 1500u);
  EXPECT_EQ(p.delay_ms, 250u);
  EXPECT_EQ(p.priority, 7u);
  EXPECT_TRUE(p.headers.empty());
  EXPECT_TRUE(p.timed());
  EXPECT_FALSE(p.empty());
  // Each alone is something to say; headers alone are not timed.
  EXPECT_FALSE(detail::message_properties(timed(milliseconds(1), {}, 0)).empty());
  EXPECT_FALSE(detail::message_properties(timed({}, milliseconds(1), 0)).empty());
  EXPECT_FALSE(detail::message_properties(timed({}, {}, 1)).empty());
  EXPECT_TRUE(detail::message_properties(SendOptions{}).empty());
  const auto headers_only = detail::message_properties(SendOptions{{{"k", "v"}}, false});
  EXPECT_FALSE(headers_only.empty());
  EXPECT_FALSE(headers_only.timed());
  // The wire's limits are in range.
  const auto max = detail::message_properties(timed(kMaxWireMs, kMaxWireMs, 9));
  EXPECT_EQ(max.ttl_ms, UINT32_MAX);
  EXPECT_EQ(max.delay_ms, UINT32_MAX);
  EXPECT_EQ(max.priority, proto::kMaxPriority);
}

TEST(ClientTimeTest, OutOfRangeSendOptionsAreRefusedNamingTheField) {
  const auto refused = [](const SendOptions& o, std::string_view field) {
    return code_of([&] { (void)detail::message_properties(o); }, field);
  };
  EXPECT_EQ(refused(timed(milliseconds(-1), {}, 0), "SendOptions::ttl"), Errc::invalid_argument);
  EXPECT_EQ(refused(timed(kMaxWireMs + milliseconds(1), {}, 0), "SendOptions::ttl"),
            Errc::invalid_argument);
  EXPECT_EQ(refused(timed({}, milliseconds(-5), 0), "SendOptions::delay"), Errc::invalid_argument);
  EXPECT_EQ(refused(timed({}, std::chrono::hours(24 * 50), 0), "SendOptions::delay"),
            Errc::invalid_argument);
  EXPECT_EQ(refused(timed({}, {}, 10), "SendOptions::priority"), Errc::invalid_argument);
  EXPECT_EQ(refused(timed({}, {}, 255), "SendOptions::priority"), Errc::invalid_argument);
  // A bad header still names the header.
  EXPECT_EQ(refused(SendOptions{{{"qbus-x", "v"}}, false}, "qbus-x"), Errc::invalid_argument);
}

TEST(ClientTimeTest, EachNewQueueOptionMakesADeclareEx) {
  EXPECT_FALSE(detail::declare_ex("q", QueueOptions{}));
  EXPECT_FALSE(detail::declare_ex("q", QueueOptions{5, 100, Overflow::reject}));
  QueueOptions ttl;
  ttl.ttl = seconds(60);
  EXPECT_EQ(detail::declare_ex("q", ttl)->ttl_ms, 60'000u);
  QueueOptions levels;
  levels.priorities = 10;
  EXPECT_EQ(detail::declare_ex("q", levels)->priorities, proto::kMaxPriorities);
  QueueOptions one;
  one.priorities = 1;
  EXPECT_EQ(detail::declare_ex("q", one)->priorities, 1u);
  QueueOptions sac;
  sac.single_active_consumer = true;
  EXPECT_EQ(detail::declare_ex("q", sac)->flags, proto::kDeclareSingleActiveConsumer);
  QueueOptions expired;
  expired.dead_letter = "q.dead";
  expired.dead_letter_expired = true;
  const auto ex = detail::declare_ex("q", expired);
  ASSERT_TRUE(ex);
  EXPECT_EQ(ex->flags, proto::kDeclareDeadLetterExpired);
  EXPECT_EQ(ex->dead_letter, "q.dead");
  expired.dead_letter_overflow = true;
  expired.single_active_consumer = true;
  expired.durable = true;
  expired.message_ids = true;
  EXPECT_EQ(detail::declare_ex("q", expired)->flags, proto::kDeclareFlags);
  QueueOptions ids;
  ids.message_ids = true;
  EXPECT_EQ(detail::declare_ex("q", ids)->flags, proto::kDeclareMessageIds);
  QueueOptions durable;
  durable.durable = true;
  durable.fsync = QueueOptions::Fsync::always;
  const auto d = detail::declare_ex("q", durable);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->flags, proto::kDeclareDurable);
  EXPECT_EQ(d->fsync, proto::Fsync::always);
}

TEST(ClientTimeTest, AnFsyncPolicyNeedsADurableQueue) {
  QueueOptions o;
  o.fsync = QueueOptions::Fsync::none;
  try {
    (void)detail::declare_ex("q", o);
    FAIL() << "an fsync policy without durable was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("fsync needs durable"), std::string::npos) << e.what();
  }
}

TEST(ClientTimeTest, OutOfRangeQueueOptionsAreRefusedNamingTheField) {
  const auto refused = [](const QueueOptions& o, std::string_view field) {
    return code_of([&] { (void)detail::declare_ex("q", o); }, field);
  };
  QueueOptions o;
  o.ttl = milliseconds(-1);
  EXPECT_EQ(refused(o, "QueueOptions::ttl"), Errc::invalid_argument);
  o.ttl = kMaxWireMs + milliseconds(1);
  EXPECT_EQ(refused(o, "QueueOptions::ttl"), Errc::invalid_argument);
  o.ttl = kMaxWireMs;
  EXPECT_EQ(refused(o, ""), Errc::ok);
  o.priorities = 11;
  EXPECT_EQ(refused(o, "QueueOptions::priorities"), Errc::invalid_argument);
  o.priorities = 10;
  EXPECT_EQ(refused(o, ""), Errc::ok);
  QueueOptions no_target;
  no_target.dead_letter_expired = true;
  EXPECT_EQ(refused(no_target, "dead_letter_expired"), Errc::invalid_argument);
  QueueOptions ack;
  ack.ack_timeout = milliseconds(-1);
  EXPECT_EQ(refused(ack, "QueueOptions::ack_timeout"), Errc::invalid_argument);
}

// ---- Against the fake broker --------------------------------------------------------------

TEST(ClientTimeFakeBrokerTest, TtlDelayAndPriorityAreThePropertiesFirstTwelveBytes) {
  FakeBroker broker(2, [](RawPeer& peer) {
    // ttl 1500 ms, delay 250 ms, priority 7, little-endian, then 3 zero bytes and the
    // header block.
    const Frame p = expect_frame(peer, FrameType::properties);
    std::vector<std::byte> want = bytes_of({0xdc, 0x05, 0, 0, 0xfa, 0, 0, 0, 7, 0, 0, 0});
    proto::append_header(want, "k", "v");
    EXPECT_EQ(p.body, want);
    const Frame s = expect_frame(peer, FrameType::send);
    EXPECT_EQ(s.flags & proto::kFlagConfirm, proto::kFlagConfirm);
    send_ok(peer, s.correlation);
    // A priority alone: PROPERTIES without headers, then a pipelined SEND.
    EXPECT_EQ(expect_frame(peer, FrameType::properties).body,
              bytes_of({0, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0}));
    EXPECT_EQ(expect_frame(peer, FrameType::send).flags & proto::kFlagConfirm, 0);
    // The largest ttl and delay the wire holds.
    EXPECT_EQ(expect_frame(peer, FrameType::properties).body,
              bytes_of({0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0}));
    expect_frame(peer, FrameType::send);
    // Nothing set: a SEND alone, as before protocol 2.
    const Frame plain = expect_frame(peer, FrameType::send);
    EXPECT_EQ(text_of(body_of<proto::Send>(plain).payload), "plain");
    send_ok(peer, plain.correlation);
  });
  Client c(broker.options());
  SendOptions o = timed(milliseconds(1500), milliseconds(250), 7);
  o.headers = {{"k", "v"}};
  o.confirm = true;
  c.send("jobs", "first", o);
  c.send("jobs", "urgent", timed({}, {}, 9));
  c.send("jobs", "patient", timed(kMaxWireMs, kMaxWireMs, 0));
  c.send("jobs", "plain", SendOptions{{}, true});
}

TEST(ClientTimeFakeBrokerTest, BadValuesAreRefusedWithNothingSent) {
  FakeBroker broker(2, [](RawPeer& peer) {
    // The first frame after the refused calls is the sync's PING: nothing else was written.
    answer_ping(peer);
  });
  Client c(broker.options());
  EXPECT_EQ(code_of([&] { c.send("q", "x", timed(milliseconds(-1), {}, 0)); }, "ttl"),
            Errc::invalid_argument);
  EXPECT_EQ(code_of([&] { c.send("q", "x", timed({}, kMaxWireMs * 2, 0)); }, "delay"),
            Errc::invalid_argument);
  EXPECT_EQ(code_of([&] { c.send("q", "x", timed({}, {}, 10)); }, "priority"),
            Errc::invalid_argument);
  QueueOptions levels;
  levels.priorities = 11;
  EXPECT_EQ(code_of([&] { c.declare("q", levels); }, "priorities"), Errc::invalid_argument);
  QueueOptions expired;
  expired.dead_letter_expired = true;
  EXPECT_EQ(code_of([&] { c.declare("q", expired); }, "dead_letter_expired"),
            Errc::invalid_argument);
  c.sync();
}

TEST(ClientTimeFakeBrokerTest, AProtocolOneBrokerRefusesTimeAndPriorities) {
  FakeBroker broker(1, [](RawPeer& peer) { answer_ping(peer); });
  Client c(broker.options());
  EXPECT_EQ(code_of([&] { c.send("q", "x", timed(seconds(1), {}, 0)); }, "protocol 1"),
            Errc::unsupported_version);
  EXPECT_EQ(code_of([&] { c.send("q", "x", timed({}, {}, 3)); }), Errc::unsupported_version);
  QueueOptions o;
  o.single_active_consumer = true;
  EXPECT_EQ(code_of([&] { c.declare("q", o); }, "protocol 1"), Errc::unsupported_version);
  QueueOptions ttl;
  ttl.ttl = seconds(1);
  EXPECT_EQ(code_of([&] { c.declare("q", ttl); }), Errc::unsupported_version);
  c.sync();
}

TEST(ClientTimeFakeBrokerTest, DeclareExCarriesTheTtlTheLevelsAndTheNewFlags) {
  FakeBroker broker(2, [](RawPeer& peer) {
    const Frame x = expect_frame(peer, FrameType::declare_ex);
    EXPECT_EQ(x.flags & proto::kFlagConfirm, proto::kFlagConfirm);
    // Offsets of 17.6: flags at 13; ttl_ms (u32) at 20, priorities at 24, 3 zero bytes.
    EXPECT_EQ(slice(x, 13, 1), bytes_of({0x02 | 0x04}));
    EXPECT_EQ(slice(x, 20, 8), bytes_of({0x60, 0xea, 0, 0, 10, 0, 0, 0}));
    const auto ex = body_of<proto::DeclareEx>(x);
    EXPECT_EQ(ex.key, "work");
    EXPECT_EQ(ex.ttl_ms, 60'000u);
    EXPECT_EQ(ex.priorities, 10u);
    EXPECT_EQ(ex.flags, proto::kDeclareDeadLetterExpired | proto::kDeclareSingleActiveConsumer);
    EXPECT_EQ(ex.dead_letter, "work.dead");
    send_ok(peer, x.correlation);
    // single_active_consumer alone: DECLARE_EX with the flag and nothing else.
    const Frame sac = expect_frame(peer, FrameType::declare_ex);
    const auto alone = body_of<proto::DeclareEx>(sac);
    EXPECT_EQ(alone.flags, proto::kDeclareSingleActiveConsumer);
    EXPECT_EQ(alone.ttl_ms, 0u);
    EXPECT_EQ(alone.priorities, 0u);
    EXPECT_TRUE(alone.dead_letter.empty());
    send_error(peer, sac.correlation, Errc::queue_conflict);
  });
  Client c(broker.options());
  QueueOptions o;
  o.ttl = seconds(60);
  o.priorities = 10;
  o.dead_letter = "work.dead";
  o.dead_letter_expired = true;
  o.single_active_consumer = true;
  c.declare("work", o);
  QueueOptions sac;
  sac.single_active_consumer = true;
  EXPECT_EQ(code_of([&] { c.declare("work", sac); }), Errc::queue_conflict);
}

TEST(ClientTimeFakeBrokerTest, AReceiveOnASingleActiveConsumerQueueThrowsItsCode) {
  FakeBroker broker(2, [](RawPeer& peer) {
    const Frame r = expect_frame(peer, FrameType::receive);
    send_error(peer, r.correlation, Errc::single_active_consumer);
    answer_ping(peer);
  });
  Client c(broker.options());
  EXPECT_EQ(code_of([&] { c.receive("one.at.a.time", seconds(30)); }),
            Errc::single_active_consumer);
  EXPECT_EQ(errc_name(Errc::single_active_consumer), "single_active_consumer");
  c.sync();  // a request error: the Client goes on
}

TEST(ClientTimeFakeBrokerTest, ARegionSentWithOptionsCarriesThemInProperties) {
  FakeBroker broker(2, [](RawPeer& peer) {
    // send(key, Region&&, SendOptions).
    const std::uint64_t id = grant_region(peer, 5);
    const auto p = body_of<proto::Properties>(expect_frame(peer, FrameType::properties));
    EXPECT_EQ(p.ttl_ms, 10'000u);
    EXPECT_EQ(p.priority, 3u);
    EXPECT_TRUE(p.headers.empty());
    const Frame s = expect_frame(peer, FrameType::send_region);
    EXPECT_EQ(s.flags & proto::kFlagConfirm, proto::kFlagConfirm);
    const auto region = body_of<proto::SendRegion>(s);
    EXPECT_EQ(region.region_id, id);
    EXPECT_EQ(region.key, "big");
    EXPECT_TRUE(region.release);
    EXPECT_EQ(region.length, 4096u);
    send_ok(peer, s.correlation);
    // send(key, payload, SendOptions) over the region threshold: through a region too.
    grant_region(peer, 6);
    const Frame qf = expect_frame(peer, FrameType::properties);  // q's headers point into it
    const auto q = body_of<proto::Properties>(qf);
    EXPECT_EQ(q.delay_ms, 2'000u);
    EXPECT_EQ(headers_of(q.headers), (Headers{{"k", "v"}}));
    EXPECT_EQ(body_of<proto::SendRegion>(expect_frame(peer, FrameType::send_region)).region_id, 6u);
    answer_ping(peer);
  });
  ClientOptions options = broker.options();
  options.region_threshold = 16;
  Client c(options);
  Region r = c.allocate_region(4096);
  std::memset(r.data().data(), 'x', r.size());
  SendOptions o = timed(seconds(10), {}, 3);
  o.confirm = true;
  c.send("big", std::move(r), o);
  EXPECT_EQ(r.id(), 0u);  // NOLINT(bugprone-use-after-move): given up, empty
  SendOptions later = timed({}, seconds(2), 0);
  later.headers = {{"k", "v"}};
  c.send("big", std::string(100, 'y'), later);
  c.sync();
}

}  // namespace
}  // namespace qbus::testing
