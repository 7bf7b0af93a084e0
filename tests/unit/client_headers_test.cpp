// libqbus's side of protocol 2 (PROTOCOL.md 17) without a qbusd: the header helpers the
// library encodes and decodes with, and a Client against a scripted fake broker that
// checks the frames the library writes (PROPERTIES before the message frame, RECEIVE with
// kFlagAck, ACK, NACK, EXTEND, SUBSCRIBE, UNSUBSCRIBE, DECLARE_EX) and feeds it the ones it
// must read (DELIVERY_INFO, subscription deliveries among other answers, ERRORs). The fake
// broker is client_fake_broker.hpp; time, delay and priorities are client_time_test.cpp's.
#include <gtest/gtest.h>

#include <qbus/client.hpp>
#include <string>

#include "client_fake_broker.hpp"
#include "headers.hpp"
#include "qbus/proto/codec.hpp"
#include "qbus/proto/headers.hpp"

namespace qbus::testing {
namespace {

using proto::FrameType;
using std::chrono::milliseconds;
using std::chrono::seconds;

// ---- The helpers ------------------------------------------------------------------------

TEST(ClientHeadersTest, EncodeThenDecodeKeepsEntriesAndOrder) {
  const Headers h{{"content-type", "text/plain"},
                  {"traceparent", "00-abc-01"},
                  {"empty", ""},
                  {"content-type", "second"}};
  const auto block = detail::encode_headers(h);
  EXPECT_EQ(proto::check_headers(block, /*from_sender=*/true), Errc::ok);
  EXPECT_EQ(detail::decode_headers(block), h);
  EXPECT_EQ(detail::find_header(block, "content-type"), "text/plain");  // the first wins
  EXPECT_EQ(detail::find_header(block, "empty"), "");
  EXPECT_FALSE(detail::find_header(block, "missing"));
}

TEST(ClientHeadersTest, NoHeadersIsAnEmptyBlock) {
  EXPECT_TRUE(detail::encode_headers({}).empty());
  EXPECT_TRUE(detail::decode_headers({}).empty());
}

TEST(ClientHeadersTest, ValuesMayHoldAnyBytes) {
  const std::string binary("a\0b\xff\n", 5);
  const auto block = detail::encode_headers({{"bin", binary}});
  EXPECT_EQ(detail::decode_headers(block).at(0).second, binary);
}

TEST(ClientHeadersTest, BadHeadersAreRefusedBeforeSending) {
  const auto refused = [](const Headers& h) {
    try {
      (void)detail::encode_headers(h);
    } catch (const Error& e) {
      return e.code() == Errc::invalid_argument;
    }
    return false;
  };
  EXPECT_TRUE(refused({{"", "v"}}));
  EXPECT_TRUE(refused({{"has space", "v"}}));
  EXPECT_TRUE(refused({{"a=b", "v"}}));
  EXPECT_TRUE(refused({{"a:b", "v"}}));
  EXPECT_TRUE(refused({{"tab\t", "v"}}));
  EXPECT_TRUE(refused({{std::string(65, 'k'), "v"}}));
  EXPECT_TRUE(refused({{"qbus-dead-reason", "mine"}}));  // the broker's
  EXPECT_TRUE(refused({{"k", std::string(1025, 'v')}}));
  Headers many;
  for (int i = 0; i < 33; ++i)
    many.emplace_back("k" + std::to_string(i), "v");
  EXPECT_TRUE(refused(many));
  Headers big;  // 5 entries of 1 + 3 + 2 + 1000 bytes: over 4096 in all
  for (int i = 0; i < 5; ++i)
    big.emplace_back("k" + std::to_string(100 + i), std::string(1000, 'v'));
  EXPECT_TRUE(refused(big));
  EXPECT_FALSE(refused({{std::string(64, 'k'), std::string(1024, 'v')}}));
  EXPECT_FALSE(refused({{"QBUS-not-reserved", "v"}}));  // the prefix is case-sensitive
}

TEST(ClientHeadersTest, BlocksFromTheBrokerMayCarryItsOwnKeys) {
  std::vector<std::byte> block;
  proto::append_header(block, proto::kHeaderDeadReason, proto::kDeadReasonRejected);
  EXPECT_TRUE(detail::valid_header_block(block));
  EXPECT_EQ(detail::decode_headers(block).at(0).first, "qbus-dead-reason");
  block.push_back(std::byte{3});  // a truncated entry
  EXPECT_FALSE(detail::valid_header_block(block));
}

TEST(ClientFakeBrokerTest, ProtocolOneBrokerRefusesTheNewCallsButNotTheOldOnes) {
  FakeBroker broker(1, [](RawPeer& peer) {
    // Only the plain send gets through.
    const Frame s = expect_frame(peer, FrameType::send);
    EXPECT_EQ(body_of<proto::Send>(s).key, "plain");
    send_ok(peer, s.correlation);
    // declare without the new options stays a DECLARE.
    const Frame d = expect_frame(peer, FrameType::declare);
    send_ok(peer, d.correlation);
  });
  Client c(broker.options());
  EXPECT_EQ(c.session().protocol_version, 1);
  const auto unsupported = [](auto&& call) {
    try {
      call();
    } catch (const Error& e) {
      return e.code() == Errc::unsupported_version &&
             std::string(e.what()).find("protocol 1") != std::string::npos;
    }
    return false;
  };
  EXPECT_TRUE(unsupported([&] { c.send("q", "x", SendOptions{{{"k", "v"}}, false}); }));
  EXPECT_TRUE(unsupported([&] { c.receive("q", milliseconds(0), ReceiveOptions{true}); }));
  EXPECT_TRUE(unsupported([&] { c.ack_up_to(1); }));
  EXPECT_TRUE(unsupported([&] { c.subscribe("q"); }));
  QueueOptions dl;
  dl.dead_letter = "q.dead";
  EXPECT_TRUE(unsupported([&] { c.declare("q", dl); }));
  c.send("plain", "x", SendOptions{{}, true});  // no headers: a SEND as before
  c.declare("q", QueueOptions{});
}

TEST(ClientFakeBrokerTest, HeadersTravelInPropertiesRightBeforeTheMessageFrame) {
  FakeBroker broker(2, [](RawPeer& peer) {
    const Frame p = expect_frame(peer, FrameType::properties);
    const auto props = body_of<proto::Properties>(p);
    EXPECT_EQ(headers_of(props.headers), (Headers{{"content-type", "text/plain"}, {"n", "1"}}));
    const Frame s = expect_frame(peer, FrameType::send);
    EXPECT_EQ(s.flags & proto::kFlagConfirm, proto::kFlagConfirm);
    EXPECT_EQ(text_of(body_of<proto::Send>(s).payload), "hello");
    send_ok(peer, s.correlation);
    // Pipelined: the same pair without the confirm flag.
    expect_frame(peer, FrameType::properties);
    EXPECT_EQ(expect_frame(peer, FrameType::send).flags & proto::kFlagConfirm, 0);
    // A request's headers.
    const Frame rp = expect_frame(peer, FrameType::properties);
    EXPECT_EQ(headers_of(body_of<proto::Properties>(rp).headers), (Headers{{"r", "q"}}));
    const Frame r = expect_frame(peer, FrameType::request);
    deliver(peer, r.correlation, "", "answer");
    // A direct message's.
    expect_frame(peer, FrameType::properties);
    const Frame d = expect_frame(peer, FrameType::send_direct);
    send_ok(peer, d.correlation);
  });
  Client c(broker.options());
  EXPECT_EQ(c.session().protocol_version, 2);
  c.send("jobs", "hello", SendOptions{{{"content-type", "text/plain"}, {"n", "1"}}, true});
  c.send("jobs", "again", SendOptions{{{"k", "v"}}, false});
  auto reply = c.request("svc", "ask", seconds(30), Headers{{"r", "q"}});
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->text(), "answer");
  DirectOptions direct;
  direct.headers = {{"d", "1"}};
  c.send_to_pid(1234, "direct", direct);
}

TEST(ClientFakeBrokerTest, AReservedHeaderIsRefusedWithNothingSent) {
  FakeBroker broker(2, [](RawPeer& peer) {
    // The first frame after the refused send is the sync's PING: nothing else was written.
    answer_ping(peer);
  });
  Client c(broker.options());
  try {
    c.send("jobs", "x", SendOptions{{{"qbus-dead-reason", "forged"}}, false});
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("qbus-dead-reason"), std::string::npos) << e.what();
  }
  c.sync();
}

TEST(ClientFakeBrokerTest, DeliveryInfoDescribesTheMessageAfterIt) {
  FakeBroker broker(2, [](RawPeer& peer) {
    const Frame r = expect_frame(peer, FrameType::receive);
    EXPECT_EQ(r.flags & proto::kFlagAck, proto::kFlagAck);
    EXPECT_EQ(body_of<proto::Receive>(r).max_count, 3u);
    std::vector<std::byte> block;
    proto::append_header(block, "content-type", "text/plain");
    proto::append_header(block, proto::kHeaderDeadCount, "1");
    // The first message has no DELIVERY_INFO: tag 0, count 1, no headers.
    deliver(peer, r.correlation, "jobs", "one", nullptr, false);
    const proto::DeliveryInfo info{17, 2, true, block};
    deliver(peer, r.correlation, "jobs", "two", &info, false);
    const proto::DeliveryInfo bare{18, 1, false, {}};
    deliver(peer, r.correlation, "jobs", "three", &bare, true);
    // A plain receive: no kFlagAck.
    const Frame plain = expect_frame(peer, FrameType::receive);
    EXPECT_EQ(plain.flags & proto::kFlagAck, 0);
    deliver(peer, plain.correlation, "jobs", "four");
  });
  Client c(broker.options());
  auto got = c.receive_batch("jobs", 3, seconds(30), ReceiveOptions{true});
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0].text(), "one");
  EXPECT_EQ(got[0].delivery_tag(), 0u);
  EXPECT_EQ(got[0].delivery_count(), 1u);
  EXPECT_FALSE(got[0].redelivered());
  EXPECT_TRUE(got[0].headers().empty());
  EXPECT_EQ(got[1].text(), "two");
  EXPECT_EQ(got[1].delivery_tag(), 17u);
  EXPECT_EQ(got[1].delivery_count(), 2u);
  EXPECT_TRUE(got[1].redelivered());
  EXPECT_EQ(got[1].headers(), (Headers{{"content-type", "text/plain"}, {"qbus-dead-count", "1"}}));
  EXPECT_EQ(got[1].header("qbus-dead-count"), "1");
  EXPECT_FALSE(got[1].header("nope"));
  EXPECT_EQ(got[1].sender().pid, 42u);
  EXPECT_EQ(got[2].delivery_tag(), 18u);
  EXPECT_TRUE(got[2].headers().empty());  // DELIVERY_INFO applies to one message only
  auto plain = c.receive("jobs", seconds(30));
  ASSERT_TRUE(plain);
  EXPECT_EQ(plain->delivery_tag(), 0u);
}

TEST(ClientFakeBrokerTest, ReceiveEachSeesHeadersInPlace) {
  FakeBroker broker(2, [](RawPeer& peer) {
    const Frame r = expect_frame(peer, FrameType::receive);
    std::vector<std::byte> block;
    proto::append_header(block, "a", "1");
    proto::append_header(block, "b", "2");
    const proto::DeliveryInfo info{0, 3, true, block};
    deliver(peer, r.correlation, "jobs", "x", &info);
  });
  Client c(broker.options());
  std::size_t seen = c.receive_each("jobs", 1, seconds(30), [](const MessageView& v) {
    EXPECT_EQ(v.header("b"), "2");
    EXPECT_EQ(v.delivery_count(), 3u);
    EXPECT_TRUE(v.redelivered());
    std::string all;
    v.for_each_header([&](std::string_view k, std::string_view val) {
      all += std::string(k) + "=" + std::string(val) + ";";
    });
    EXPECT_EQ(all, "a=1;b=2;");
    const Message m = v.to_message();
    EXPECT_EQ(m.headers(), (Headers{{"a", "1"}, {"b", "2"}}));
    EXPECT_EQ(m.delivery_count(), 3u);
  });
  EXPECT_EQ(seen, 1u);
}

TEST(ClientFakeBrokerTest, AcksNacksAndExtendsCarryTheTag) {
  FakeBroker broker(2, [](RawPeer& peer) {
    const Frame r = expect_frame(peer, FrameType::receive);
    const proto::DeliveryInfo info{5, 1, false, {}};
    deliver(peer, r.correlation, "jobs", "x", &info);
    const Frame a = expect_frame(peer, FrameType::ack);
    EXPECT_EQ(a.flags & proto::kFlagConfirm, proto::kFlagConfirm);
    const auto ack = body_of<proto::Ack>(a);
    EXPECT_EQ(ack.delivery_tag, 5u);
    EXPECT_FALSE(ack.multiple);
    send_ok(peer, a.correlation);
    const auto upto = body_of<proto::Ack>(expect_frame(peer, FrameType::ack));
    EXPECT_EQ(upto.delivery_tag, 9u);
    EXPECT_TRUE(upto.multiple);
    const auto n = body_of<proto::Nack>(expect_frame(peer, FrameType::nack));
    EXPECT_EQ(n.action, proto::NackAction::requeue_after);
    EXPECT_EQ(n.delay_ms, 250u);
    const auto dl = body_of<proto::Nack>(expect_frame(peer, FrameType::nack));
    EXPECT_EQ(dl.action, proto::NackAction::dead_letter);
    EXPECT_EQ(dl.delay_ms, 0u);
    const Frame e = expect_frame(peer, FrameType::extend);
    EXPECT_EQ(body_of<proto::Extend>(e).extend_ms, 30000u);
    send_ok(peer, e.correlation);
  });
  Client c(broker.options());
  auto m = c.receive("jobs", seconds(30), ReceiveOptions{true});
  ASSERT_TRUE(m);
  c.ack(*m, true);
  c.ack_up_to(9);
  c.nack(*m, NackAction::requeue_after, milliseconds(250));
  c.nack(*m, NackAction::dead_letter);
  c.extend(*m, seconds(30), true);
  EXPECT_EQ(c.send_failures().count, 0u);
}

TEST(ClientFakeBrokerTest, SettlingFailuresThrowWhenConfirmedAndAreCountedWhenNot) {
  FakeBroker broker(2, [](RawPeer& peer) {
    const Frame r = expect_frame(peer, FrameType::receive);
    const proto::DeliveryInfo info{3, 1, false, {}};
    deliver(peer, r.correlation, "jobs", "x", &info);
    const Frame a = expect_frame(peer, FrameType::ack);
    send_error(peer, a.correlation, Errc::unknown_delivery);
    const Frame b = expect_frame(peer, FrameType::ack);
    send_error(peer, b.correlation, Errc::delivery_timed_out);
    const Frame n = expect_frame(peer, FrameType::nack);
    send_error(peer, n.correlation, Errc::unknown_delivery);  // pipelined: a send failure
    answer_ping(peer);
  });
  Client c(broker.options());
  auto m = c.receive("jobs", seconds(30), ReceiveOptions{true});
  ASSERT_TRUE(m);
  const auto code_of = [](auto&& call) {
    try {
      call();
    } catch (const Error& e) {
      return e.code();
    }
    return Errc::ok;
  };
  EXPECT_EQ(code_of([&] { c.ack_up_to(77, true); }), Errc::unknown_delivery);
  EXPECT_EQ(code_of([&] { c.ack(*m, true); }), Errc::delivery_timed_out);
  // Nothing to settle without a tag: refused before anything is sent.
  const Message untagged("jobs", "x", Sender{});
  EXPECT_EQ(code_of([&] { c.ack(untagged); }), Errc::invalid_argument);
  EXPECT_EQ(code_of([&] { c.nack(untagged); }), Errc::invalid_argument);
  EXPECT_EQ(code_of([&] { c.extend(untagged, seconds(1)); }), Errc::invalid_argument);
  EXPECT_EQ(code_of([&] { c.ack_up_to(0); }), Errc::invalid_argument);
  // A delay goes with requeue_after only.
  EXPECT_EQ(code_of([&] { c.nack(*m, NackAction::requeue, seconds(1)); }), Errc::invalid_argument);
  c.nack(*m);
  c.sync();
  EXPECT_EQ(c.send_failures().count, 1u);
  EXPECT_EQ(c.send_failures().last_code, Errc::unknown_delivery);
}

TEST(ClientFakeBrokerTest, SubscriptionKeepsDeliveriesThatArriveDuringOtherCalls) {
  FakeBroker broker(2, [](RawPeer& peer) {
    const Frame sub = expect_frame(peer, FrameType::subscribe);
    const auto body = body_of<proto::Subscribe>(sub);
    EXPECT_EQ(body.prefetch, 2u);
    EXPECT_TRUE(body.ack);
    EXPECT_EQ(body.key, "events");
    // A confirmed send, answered after two deliveries for the subscription.
    const Frame s = expect_frame(peer, FrameType::send);
    const proto::DeliveryInfo one{1, 1, false, {}};
    deliver(peer, sub.correlation, "events", "e1", &one);
    const proto::DeliveryInfo two{2, 1, false, {}};
    deliver(peer, sub.correlation, "events", "e2", &two);
    send_ok(peer, s.correlation);
    // A receive of another queue, answered after a third delivery.
    const Frame r = expect_frame(peer, FrameType::receive);
    const proto::DeliveryInfo three{3, 1, false, {}};
    deliver(peer, sub.correlation, "events", "e3", &three);
    deliver(peer, r.correlation, "other", "o1");
    // Cancelled: one more delivery is on its way before the OK.
    const Frame u = expect_frame(peer, FrameType::unsubscribe);
    EXPECT_EQ(body_of<proto::Unsubscribe>(u).subscription, sub.correlation);
    const proto::DeliveryInfo four{4, 1, false, {}};
    deliver(peer, sub.correlation, "events", "e4", &four);
    send_ok(peer, u.correlation);
  });
  Client c(broker.options());
  auto sub = c.subscribe("events", SubscribeOptions{2, true});
  EXPECT_TRUE(sub.active());
  c.send_confirmed("jobs", "x");
  auto other = c.receive("other", seconds(30));
  ASSERT_TRUE(other);
  EXPECT_EQ(other->text(), "o1");
  std::vector<std::string> got;
  for (int i = 0; i < 3; ++i) {
    auto m = sub.next(seconds(30));
    ASSERT_TRUE(m);
    got.emplace_back(m->text());
    EXPECT_EQ(m->delivery_tag(), static_cast<std::uint64_t>(i + 1));
  }
  EXPECT_EQ(got, (std::vector<std::string>{"e1", "e2", "e3"}));
  sub.cancel();
  EXPECT_FALSE(sub.active());
  auto last = sub.next(milliseconds(0));
  ASSERT_TRUE(last);
  EXPECT_EQ(last->text(), "e4");
  EXPECT_FALSE(sub.next(seconds(30)));  // cancelled: no wait
}

TEST(ClientFakeBrokerTest, AnErrorEndsTheSubscriptionAfterWhatCameBefore) {
  FakeBroker broker(2, [](RawPeer& peer) {
    const Frame sub = expect_frame(peer, FrameType::subscribe);
    EXPECT_FALSE(body_of<proto::Subscribe>(sub).ack);
    deliver(peer, sub.correlation, "gone", "m1");
    send_error(peer, sub.correlation, Errc::queue_deleted);
    answer_ping(peer);
  });
  Client c(broker.options());
  auto sub = c.subscribe("gone", SubscribeOptions{0, false});
  c.sync();  // both frames arrive while the Client waits for the PONG
  auto m = sub.next(seconds(30));
  ASSERT_TRUE(m);
  EXPECT_EQ(m->text(), "m1");
  EXPECT_EQ(m->delivery_tag(), 0u);
  try {
    sub.next(seconds(30));
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::queue_deleted);
  }
  EXPECT_FALSE(sub.active());
  sub.cancel();  // ended already: nothing sent
  EXPECT_EQ(c.send_failures().count, 0u);
}

TEST(ClientFakeBrokerTest, DestroyingASubscriptionCancelsItAndGivesBackWhatItKept) {
  FakeBroker broker(2, [](RawPeer& peer) {
    const Frame sub = expect_frame(peer, FrameType::subscribe);
    const proto::DeliveryInfo info{8, 1, false, {}};
    deliver(peer, sub.correlation, "kept", "never handed out", &info);
    answer_ping(peer);
    const Frame u = expect_frame(peer, FrameType::unsubscribe);
    send_ok(peer, u.correlation);
    const auto n = body_of<proto::Nack>(expect_frame(peer, FrameType::nack));
    EXPECT_EQ(n.delivery_tag, 8u);
    EXPECT_EQ(n.action, proto::NackAction::requeue);
    answer_ping(peer);
  });
  Client c(broker.options());
  {
    auto sub = c.subscribe("kept");
    auto moved = std::move(sub);
    EXPECT_FALSE(sub.active());  // NOLINT(bugprone-use-after-move): moved-from is empty
    c.sync();                    // the delivery is in, kept and never taken
  }
  c.sync();
}

TEST(ClientFakeBrokerTest, DeclareUsesDeclareExOnlyForTheNewOptions) {
  FakeBroker broker(2, [](RawPeer& peer) {
    const Frame d = expect_frame(peer, FrameType::declare);
    send_ok(peer, d.correlation);
    const Frame x = expect_frame(peer, FrameType::declare_ex);
    EXPECT_EQ(x.flags & proto::kFlagConfirm, proto::kFlagConfirm);
    const auto ex = body_of<proto::DeclareEx>(x);
    EXPECT_EQ(ex.key, "work");
    EXPECT_EQ(ex.max_messages, 10u);
    EXPECT_EQ(ex.overflow, proto::Overflow::drop_oldest);
    EXPECT_EQ(ex.flags, proto::kDeclareDeadLetterOverflow);
    EXPECT_EQ(ex.max_deliveries, 3u);
    EXPECT_EQ(ex.ack_timeout_ms, 1500u);
    EXPECT_EQ(ex.dead_letter, "work.dead");
    send_error(peer, x.correlation, Errc::queue_conflict);
  });
  Client c(broker.options());
  c.declare("work", QueueOptions{10, 0, Overflow::drop_oldest});
  QueueOptions o{10, 0, Overflow::drop_oldest};
  o.ack_timeout = milliseconds(1500);
  o.max_deliveries = 3;
  o.dead_letter = "work.dead";
  o.dead_letter_overflow = true;
  try {
    c.declare("work", o);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::queue_conflict);
  }
  QueueOptions self;
  self.dead_letter = "work";
  EXPECT_THROW(c.declare("work", self), Error);
  QueueOptions no_target;
  no_target.dead_letter_overflow = true;
  EXPECT_THROW(c.declare("work", no_target), Error);
}

}  // namespace
}  // namespace qbus::testing
