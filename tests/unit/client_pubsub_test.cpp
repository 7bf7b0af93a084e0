// libqbus's publish/subscribe (PROTOCOL.md 18) without a qbusd: the subjects, patterns and
// options refused before anything is sent, the bytes a Client writes for PUBLISH,
// SEND_REGION to a subject and SUBSCRIBE_SUBJECT, and what it makes of the deliveries (the
// headers qbus-dropped and qbus-retained), against a scripted fake broker
// (client_fake_broker.hpp).
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <optional>
#include <qbus/client.hpp>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "client_fake_broker.hpp"
#include "qbus/proto/codec.hpp"
#include "qbus/proto/headers.hpp"

namespace qbus::testing {
namespace {

using proto::FrameType;
using std::chrono::milliseconds;
using std::chrono::seconds;

std::vector<std::byte> bytes_of(std::initializer_list<int> values) {
  std::vector<std::byte> out;
  for (int v : values)
    out.push_back(static_cast<std::byte>(v));
  return out;
}

void append_text(std::vector<std::byte>& out, std::string_view s) {
  for (char c : s)
    out.push_back(static_cast<std::byte>(c));
}

// The code `call` threw; Errc::ok when it threw nothing. The message must contain `naming`.
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

// A DELIVERY_INFO carrying `headers` as the broker writes them (its own qbus- keys
// allowed), for deliver().
proto::DeliveryInfo info_with(std::vector<std::byte>& block, const Headers& headers) {
  for (const auto& [k, v] : headers)
    proto::append_header(block, k, v);
  proto::DeliveryInfo info{0, 1, false, {}};
  info.headers = block;
  return info;
}

// ---- Refused before sending ---------------------------------------------------------------

TEST(ClientPubsubTest, BadSubjectsPatternsAndOptionsAreRefusedWithNothingSent) {
  FakeBroker broker(2, [](RawPeer& peer) {
    // The first frame after the refused calls is the sync's PING: nothing else was written.
    answer_ping(peer);
  });
  Client c(broker.options());
  const auto publish = [&](std::string_view subject, std::string_view naming) {
    return code_of([&] { c.publish(subject, "x"); }, naming);
  };
  EXPECT_EQ(publish("a..b", R"(invalid subject "a..b": empty token)"), Errc::invalid_subject);
  EXPECT_EQ(publish("a.b.", "empty token"), Errc::invalid_subject);
  EXPECT_EQ(publish("", "invalid subject \"\": empty"), Errc::invalid_subject);
  EXPECT_EQ(publish(std::string(256, 'a'), "longer than 255 bytes"), Errc::invalid_subject);
  EXPECT_EQ(publish("sensors.*", "wildcard"), Errc::invalid_subject);
  EXPECT_EQ(publish("sensors.>", "wildcard"), Errc::invalid_subject);
  EXPECT_EQ(publish("a b", "byte outside"), Errc::invalid_subject);
  // A byte that is not printable is shown escaped.
  EXPECT_EQ(publish(std::string_view("a\x01", 2), R"("a\x01")"), Errc::invalid_subject);
  std::string many = "t";
  for (int i = 0; i < 32; ++i)
    many += ".t";
  EXPECT_EQ(publish(many, "more than 32 tokens"), Errc::invalid_subject);

  const auto subscribe = [&](std::string_view pattern, const SubjectOptions& o,
                             std::string_view naming) {
    return code_of([&] { (void)c.subscribe_subject(pattern, o); }, naming);
  };
  EXPECT_EQ(subscribe("a*", {}, R"(invalid subject pattern "a*": wildcard that is not a whole)"),
            Errc::invalid_subject);
  EXPECT_EQ(subscribe("a.>.b", {}, "'>' before the last token"), Errc::invalid_subject);
  EXPECT_EQ(subscribe(".a", {}, "empty token"), Errc::invalid_subject);
  SubjectOptions group;
  group.group = "bad group";
  EXPECT_EQ(subscribe("a.>", group, "invalid queue group name 'bad group'"), Errc::invalid_key);
  SubjectOptions slow;
  slow.slow = static_cast<SlowPolicy>(9);
  EXPECT_EQ(subscribe("a.>", slow, "SubjectOptions::slow"), Errc::invalid_argument);

  // Headers follow send()'s rules.
  PublishOptions reserved;
  reserved.headers = {{"qbus-dropped", "1"}};
  EXPECT_EQ(code_of([&] { c.publish("a.b", "x", reserved); }, "qbus-dropped"),
            Errc::invalid_argument);
  // A region cannot be retained, and an empty one cannot be published.
  PublishOptions retain;
  retain.retain = true;
  EXPECT_EQ(code_of([&] { c.publish("a.b", Region(), retain); }, "cannot be retained"),
            Errc::invalid_argument);
  EXPECT_EQ(code_of([&] { c.publish("a.b", Region()); }, "empty"), Errc::invalid_argument);
  c.sync();
  EXPECT_EQ(c.send_failures().count, 0u);
}

TEST(ClientPubsubTest, AProtocolOneBrokerRefusesPublishAndSubjectSubscriptions) {
  FakeBroker broker(1, [](RawPeer& peer) { answer_ping(peer); });
  Client c(broker.options());
  EXPECT_EQ(code_of([&] { c.publish("a.b", "x"); }, "protocol 1"), Errc::unsupported_version);
  EXPECT_EQ(code_of([&] { (void)c.subscribe_subject("a.>"); }, "protocol 1"),
            Errc::unsupported_version);
  c.sync();
}

// ---- PUBLISH ------------------------------------------------------------------------------

TEST(ClientPubsubTest, PublishWritesPropertiesForHeadersAndItsFlags) {
  FakeBroker broker(2, [](RawPeer& peer) {
    // Headers: a PROPERTIES with ttl, delay and priority 0, right before the PUBLISH.
    const Frame p = expect_frame(peer, FrameType::properties);
    std::vector<std::byte> props = bytes_of({0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0});
    proto::append_header(props, "unit", "C");
    EXPECT_EQ(p.body, props);
    const Frame first = expect_frame(peer, FrameType::publish);
    EXPECT_EQ(first.flags, proto::kFlagConfirm | proto::kFlagRetain);
    std::vector<std::byte> want = bytes_of({20});
    append_text(want, "sensors.kitchen.temp");
    append_text(want, "21.5");
    EXPECT_EQ(first.body, want);
    send_ok(peer, first.correlation);
    // Pipelined, no headers: the PUBLISH alone, without flags; refused asynchronously.
    const Frame plain = expect_frame(peer, FrameType::publish);
    EXPECT_EQ(plain.flags, 0);
    const auto body = body_of<proto::Publish>(plain);
    EXPECT_EQ(body.subject, "a.b");
    EXPECT_EQ(text_of(body.payload), "x");
    send_error(peer, plain.correlation, Errc::permission_denied);
    answer_ping(peer);
    // Clearing a retained message: RETAIN with an empty payload; refused with CONFIRM.
    const Frame clear = expect_frame(peer, FrameType::publish);
    EXPECT_EQ(clear.flags, proto::kFlagConfirm | proto::kFlagRetain);
    std::vector<std::byte> just_subject = bytes_of({3});
    append_text(just_subject, "a.b");
    EXPECT_EQ(clear.body, just_subject);
    send_error(peer, clear.correlation, Errc::quota_exceeded);
    answer_ping(peer);
  });
  Client c(broker.options());
  PublishOptions o;
  o.headers = {{"unit", "C"}};
  o.retain = true;
  o.confirm = true;
  c.publish("sensors.kitchen.temp", "21.5", o);
  c.publish("a.b", "x");
  c.sync();
  EXPECT_EQ(c.send_failures().count, 1u);
  EXPECT_EQ(c.send_failures().last_code, Errc::permission_denied);
  PublishOptions clear;
  clear.retain = true;
  clear.confirm = true;
  EXPECT_EQ(code_of([&] { c.publish("a.b", "", clear); }, "publish to 'a.b'"),
            Errc::quota_exceeded);
  c.sync();  // a refusal, not a broken connection
}

TEST(ClientPubsubTest, LargePayloadsAndRegionsArePublishedAsSendRegionToASubject) {
  FakeBroker broker(2, [](RawPeer& peer) {
    // Over the region threshold: copied to a region, SEND_REGION with target_kind subject.
    grant_region(peer, 5);
    const Frame pf = expect_frame(peer, FrameType::properties);  // p's headers point into it
    const auto p = body_of<proto::Properties>(pf);
    EXPECT_EQ(p.ttl_ms, 0u);
    EXPECT_EQ(headers_of(p.headers), (Headers{{"k", "v"}}));
    const Frame s = expect_frame(peer, FrameType::send_region);
    EXPECT_EQ(s.flags, 0);
    const auto copied = body_of<proto::SendRegion>(s);
    EXPECT_EQ(copied.region_id, 5u);
    EXPECT_EQ(copied.target_kind, proto::RegionTarget::subject);
    EXPECT_EQ(copied.key, "big.data");
    EXPECT_EQ(copied.target, 0u);
    EXPECT_EQ(copied.wait_ms, 0);
    EXPECT_TRUE(copied.release);
    EXPECT_EQ(copied.length, 100u);
    // publish(subject, Region&&), confirmed.
    grant_region(peer, 6);
    const Frame r = expect_frame(peer, FrameType::send_region);
    EXPECT_EQ(r.flags, proto::kFlagConfirm);
    const auto whole = body_of<proto::SendRegion>(r);
    EXPECT_EQ(whole.region_id, 6u);
    EXPECT_EQ(whole.target_kind, proto::RegionTarget::subject);
    EXPECT_EQ(whole.key, "big.region");
    EXPECT_EQ(whole.length, 4096u);
    send_ok(peer, r.correlation);
    // Retained: inline, whatever its size (RETAIN is not valid on SEND_REGION).
    const Frame kept = expect_frame(peer, FrameType::publish);
    EXPECT_EQ(kept.flags, proto::kFlagRetain);
    EXPECT_EQ(body_of<proto::Publish>(kept).payload.size(), 100u);
    answer_ping(peer);
  });
  ClientOptions options = broker.options();
  options.region_threshold = 16;
  Client c(options);
  PublishOptions with_header;
  with_header.headers = {{"k", "v"}};
  c.publish("big.data", std::string(100, 'y'), with_header);
  Region r = c.allocate_region(4096);
  std::memset(r.data().data(), 'x', r.size());
  PublishOptions confirm;
  confirm.confirm = true;
  c.publish("big.region", std::move(r), confirm);
  EXPECT_EQ(r.id(), 0u);  // NOLINT(bugprone-use-after-move): given up, empty
  PublishOptions retain;
  retain.retain = true;
  c.publish("big.data", std::string(100, 'z'), retain);
  c.sync();
  EXPECT_EQ(c.send_failures().count, 0u);
}

// ---- SUBSCRIBE_SUBJECT --------------------------------------------------------------------

TEST(ClientPubsubTest, SubscribeSubjectWritesItsBodyAndWaitsForTheOk) {
  FakeBroker broker(2, [](RawPeer& peer) {
    const Frame sub = expect_frame(peer, FrameType::subscribe_subject);
    EXPECT_EQ(sub.flags, proto::kFlagConfirm);
    // max_messages 100 (u32), max_bytes 65536 (u64), slow 2 (disconnect), 3 zero bytes,
    // then, as in every body with two strings (DECLARE_EX, 17.6), both lengths before both
    // strings: pattern_len 9, group_len 7, the pattern, the group.
    std::vector<std::byte> want =
        bytes_of({100, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 2, 0, 0, 0, 9, 7});
    append_text(want, "sensors.>");
    append_text(want, "workers");
    EXPECT_EQ(sub.body, want);
    const auto decoded = body_of<proto::SubscribeSubject>(sub);
    EXPECT_EQ(decoded.pattern, "sensors.>");
    EXPECT_EQ(decoded.group, "workers");
    EXPECT_EQ(decoded.max_messages, 100u);
    EXPECT_EQ(decoded.max_bytes, 65536u);
    EXPECT_EQ(decoded.slow, proto::SlowPolicy::disconnect);
    send_ok(peer, sub.correlation);
    // Defaults: zero bounds, the broker's policy, no group.
    const Frame plain = expect_frame(peer, FrameType::subscribe_subject);
    std::vector<std::byte> defaults =
        bytes_of({0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0});
    append_text(defaults, "x");
    EXPECT_EQ(plain.body, defaults);
    send_ok(peer, plain.correlation);
    // Refused: the Client throws and keeps no subscription.
    const Frame refused = expect_frame(peer, FrameType::subscribe_subject);
    EXPECT_EQ(body_of<proto::SubscribeSubject>(refused).pattern, "y.*");
    send_error(peer, refused.correlation, Errc::too_many_subscriptions);
    // Destroyed: UNSUBSCRIBE of each live one, and nothing to nack.
    for (const std::uint64_t corr : {plain.correlation, sub.correlation}) {
      const Frame u = expect_frame(peer, FrameType::unsubscribe);
      EXPECT_EQ(body_of<proto::Unsubscribe>(u).subscription, corr);
      send_ok(peer, u.correlation);
    }
    answer_ping(peer);
  });
  Client c(broker.options());
  {
    SubjectOptions o;
    o.group = "workers";
    o.max_messages = 100;
    o.max_bytes = 65536;
    o.slow = SlowPolicy::disconnect;
    auto sub = c.subscribe_subject("sensors.>", o);
    EXPECT_TRUE(sub.active());
    EXPECT_EQ(sub.key(), "sensors.>");
    auto plain = c.subscribe_subject("x");
    EXPECT_EQ(code_of([&] { (void)c.subscribe_subject("y.*"); }, "y.*"),
              Errc::too_many_subscriptions);
    EXPECT_FALSE(plain.next(milliseconds(0)));
  }
  c.sync();
  EXPECT_EQ(c.send_failures().count, 0u);
}

TEST(ClientPubsubTest, DeliveriesCarryTheirSubjectAndTheBrokersHeaders) {
  FakeBroker broker(2, [](RawPeer& peer) {
    const Frame sub = expect_frame(peer, FrameType::subscribe_subject);
    send_ok(peer, sub.correlation);
    std::vector<std::byte> b1;
    const auto retained = info_with(b1, {{"qbus-retained", "1"}});
    deliver(peer, sub.correlation, "sensors.hall.temp", "19", &retained);
    std::vector<std::byte> b2;
    const auto dropped = info_with(b2, {{"unit", "C"}, {"qbus-dropped", "5"}});
    deliver(peer, sub.correlation, "sensors.kitchen.temp", "21", &dropped);
    deliver(peer, sub.correlation, "sensors.kitchen.temp", "22");
    answer_ping(peer);
    const Frame u = expect_frame(peer, FrameType::unsubscribe);
    send_ok(peer, u.correlation);
  });
  Client c(broker.options());
  auto sub = c.subscribe_subject("sensors.>");
  c.sync();  // the deliveries arrive while the Client waits for the PONG
  auto first = sub.next(seconds(30));
  ASSERT_TRUE(first);
  EXPECT_EQ(first->key(), "sensors.hall.temp");
  EXPECT_EQ(first->text(), "19");
  EXPECT_TRUE(first->retained());
  EXPECT_EQ(first->dropped_before(), 0u);
  EXPECT_EQ(first->delivery_tag(), 0u);
  auto second = sub.next(seconds(30));
  ASSERT_TRUE(second);
  EXPECT_EQ(second->key(), "sensors.kitchen.temp");
  EXPECT_FALSE(second->retained());
  EXPECT_EQ(second->dropped_before(), 5u);
  EXPECT_EQ(second->header("unit"), "C");
  auto third = sub.next(seconds(30));
  ASSERT_TRUE(third);
  EXPECT_EQ(third->text(), "22");
  EXPECT_FALSE(third->retained());
  EXPECT_EQ(third->dropped_before(), 0u);
  EXPECT_TRUE(third->headers().empty());
  sub.cancel();
  EXPECT_FALSE(sub.active());
}

TEST(ClientPubsubTest, DroppedBeforeReadsADecimalCountAndNothingElse) {
  const std::vector<std::pair<std::string, std::uint64_t>> cases{
      {"0", 0},
      {"7", 7},
      {"18446744073709551615", std::numeric_limits<std::uint64_t>::max()},
      {"18446744073709551616", 0},  // over u64: not a count
      {"-1", 0},
      {"+3", 0},
      {"12abc", 0},
      {" 4", 0},
      {"", 0}};
  FakeBroker broker(2, [&cases](RawPeer& peer) {
    const Frame sub = expect_frame(peer, FrameType::subscribe_subject);
    send_ok(peer, sub.correlation);
    for (const auto& [value, count] : cases) {
      std::vector<std::byte> block;
      const auto info = info_with(block, {{"qbus-dropped", value}});
      deliver(peer, sub.correlation, "s", value, &info);
    }
    answer_ping(peer);
    const Frame u = expect_frame(peer, FrameType::unsubscribe);
    send_ok(peer, u.correlation);
  });
  EXPECT_EQ(Message().dropped_before(), 0u);
  EXPECT_FALSE(Message().retained());
  Client c(broker.options());
  auto sub = c.subscribe_subject("s");
  c.sync();
  for (const auto& [value, count] : cases) {
    auto m = sub.next(seconds(30));
    ASSERT_TRUE(m);
    EXPECT_EQ(m->text(), value);
    EXPECT_EQ(m->dropped_before(), count) << "qbus-dropped: '" << value << "'";
    EXPECT_FALSE(m->retained());
  }
}

TEST(ClientPubsubTest, SlowSubscriberEndsTheSubscriptionAfterWhatCameBefore) {
  FakeBroker broker(2, [](RawPeer& peer) {
    const Frame sub = expect_frame(peer, FrameType::subscribe_subject);
    EXPECT_EQ(body_of<proto::SubscribeSubject>(sub).slow, proto::SlowPolicy::disconnect);
    send_ok(peer, sub.correlation);
    deliver(peer, sub.correlation, "a.b", "m1");
    send_error(peer, sub.correlation, Errc::slow_subscriber);
    answer_ping(peer);
  });
  Client c(broker.options());
  SubjectOptions o;
  o.slow = SlowPolicy::disconnect;
  {
    auto sub = c.subscribe_subject("a.*", o);
    c.sync();  // both frames arrive while the Client waits for the PONG
    auto m = sub.next(seconds(30));
    ASSERT_TRUE(m);
    EXPECT_EQ(m->text(), "m1");
    EXPECT_EQ(code_of([&] { (void)sub.next(seconds(30)); }, "subscription to 'a.*'"),
              Errc::slow_subscriber);
    EXPECT_FALSE(sub.active());
  }  // ended: destroying it sends nothing
  EXPECT_EQ(c.send_failures().count, 0u);
}

// next_each() hands out what the Client kept while it waited for something else (views
// with the headers encoded again), then deliveries in place as they are read, at most
// `max` a call; a callback that throws loses only its own message; the ERROR that ends the
// subscription comes after everything delivered before it.
TEST(ClientPubsubTest, NextEachHandsKeptThenBufferedDeliveriesInOrderAndEndsWithTheError) {
  FakeBroker broker(2, [](RawPeer& peer) {
    const Frame sub = expect_frame(peer, FrameType::subscribe_subject);
    send_ok(peer, sub.correlation);
    std::vector<std::byte> b1;
    const auto retained = info_with(b1, {{"qbus-retained", "1"}});
    deliver(peer, sub.correlation, "s.a", "d1", &retained);
    std::vector<std::byte> b2;
    const auto dropped = info_with(b2, {{"unit", "C"}, {"qbus-dropped", "5"}});
    deliver(peer, sub.correlation, "s.b", "d2", &dropped);
    answer_ping(peer);
    expect_frame(peer, FrameType::publish);  // the test's signal for the rest
    for (const char* d : {"d3", "d4", "d5", "d6"})
      deliver(peer, sub.correlation, "s.c", d);
    send_error(peer, sub.correlation, Errc::slow_subscriber);
  });
  Client c(broker.options());
  auto sub = c.subscribe_subject("s.*");
  c.sync();  // d1 and d2 arrive while the Client waits for the PONG: kept
  std::vector<std::string> seen;
  EXPECT_EQ(sub.next_each(1, seconds(30),
                          [&](const MessageView& v) {
                            seen.emplace_back(v.text());
                            EXPECT_EQ(v.key(), "s.a");
                            EXPECT_TRUE(v.retained());
                            EXPECT_EQ(v.dropped_before(), 0u);
                          }),
            1u);
  c.publish("go", "now");  // written by next_each's flush
  EXPECT_EQ(sub.next_each(10, seconds(30),
                          [&](const MessageView& v) {
                            seen.emplace_back(v.text());
                            EXPECT_EQ(v.key(), "s.b");
                            EXPECT_FALSE(v.retained());
                            EXPECT_EQ(v.dropped_before(), 5u);
                            EXPECT_EQ(v.header("unit"), "C");
                          }),
            1u);  // only the kept one: it does not wait for more
  EXPECT_THROW(sub.next_each(10, seconds(30),
                             [&](const MessageView& v) {
                               seen.emplace_back(v.text());
                               throw std::runtime_error("the callback gives up");
                             }),
               std::runtime_error);
  Errc end = Errc::ok;
  while (end == Errc::ok) {
    end = code_of([&] {
      const std::size_t n =
          sub.next_each(2, seconds(30), [&](const MessageView& v) { seen.emplace_back(v.text()); });
      EXPECT_GE(n, 1u);
      EXPECT_LE(n, 2u);
    });
  }
  EXPECT_EQ(end, Errc::slow_subscriber);
  EXPECT_EQ(seen, (std::vector<std::string>{"d1", "d2", "d3", "d4", "d5", "d6"}));
  EXPECT_FALSE(sub.active());
  EXPECT_EQ(code_of([&] { sub.next_each(1, milliseconds(0), [](const MessageView&) {}); }),
            Errc::slow_subscriber);
}

}  // namespace
}  // namespace qbus::testing
