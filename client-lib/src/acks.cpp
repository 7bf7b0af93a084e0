// Client's acknowledgements (ACK, NACK, EXTEND) and subscriptions (SUBSCRIBE, UNSUBSCRIBE,
// Subscription), PROTOCOL.md 17.3-17.5. Receiving in acknowledgement mode is in client.cpp
// with the other receives; both read deliveries through Client::Impl::assemble.
#include <climits>

#include "client_impl.hpp"

namespace qbus {
namespace {

using Clock = std::chrono::steady_clock;

std::uint64_t tag_of(const Message& m, std::string_view what) {
  if (m.delivery_tag() == 0) {
    throw Error(Errc::invalid_argument,
                std::string(what) +
                    ": the message was not received in acknowledgement mode (delivery tag 0)");
  }
  return m.delivery_tag();
}

std::uint32_t wire_ms(std::chrono::milliseconds t, std::string_view what) {
  if (t.count() < 0 || t.count() > UINT32_MAX) {
    throw Error(Errc::invalid_argument,
                std::string(what) + ": " + std::to_string(t.count()) + " ms is out of range");
  }
  return static_cast<std::uint32_t>(t.count());
}

}  // namespace

template <typename Body>
void Client::Impl::settle(const Body& body, bool confirm, std::string_view what) {
  session.check_usable();
  const std::uint64_t corr = session.next_correlation();
  proto::append_frame(session.out(), corr, confirm ? proto::kFlagConfirm : 0, body);
  if (confirm) {
    session.wait_ok(corr, what);
  } else {
    // A failure comes back as an ERROR with this correlation, counted in send_failures().
    session.flush_unless_corked();
  }
}

bool Client::Impl::feed(detail::SubscriptionState& st, const proto::Header& h, proto::Bytes b) {
  return feed(st, h, b, [&](const MessageView& v) {
    if (!st.orphaned) st.keep(v.to_message());
  });
}

void Client::Impl::unexpected_frame(const detail::SubscriptionState& st, const proto::Header& h) {
  session.fail(Errc::protocol_violation, "subscription to '" + st.key + "': unexpected " +
                                             std::string(proto::frame_type_name(h.type)) +
                                             " frame");
}

bool Client::Impl::on_stream_frame(const proto::Header& h, proto::Bytes b) {
  const auto it = subscriptions.find(h.correlation);
  if (it == subscriptions.end()) return false;
  return feed(it->second, h, b);
}

// ---- Client -------------------------------------------------------------------------------

void Client::ack(const Message& message, bool confirm) {
  impl_->require_v2("ack");
  impl_->settle(proto::Ack{tag_of(message, "ack"), false}, confirm, "ack");
}

void Client::ack_up_to(std::uint64_t tag, bool confirm) {
  impl_->require_v2("ack_up_to");
  if (tag == 0) throw Error(Errc::invalid_argument, "ack_up_to: delivery tag 0");
  impl_->settle(proto::Ack{tag, true}, confirm, "ack_up_to");
}

void Client::nack(const Message& message, NackAction action, std::chrono::milliseconds delay,
                  bool confirm) {
  impl_->require_v2("nack");
  proto::Nack n;
  n.delivery_tag = tag_of(message, "nack");
  n.delay_ms = wire_ms(delay, "nack delay");
  switch (action) {
    case NackAction::requeue:
      n.action = proto::NackAction::requeue;
      break;
    case NackAction::requeue_after:
      n.action = proto::NackAction::requeue_after;
      break;
    case NackAction::dead_letter:
      n.action = proto::NackAction::dead_letter;
      break;
    default:
      throw Error(Errc::invalid_argument, "nack: unknown action");
  }
  if (action != NackAction::requeue_after && n.delay_ms != 0) {
    throw Error(Errc::invalid_argument, "nack: a delay goes with NackAction::requeue_after only");
  }
  impl_->settle(n, confirm, "nack");
}

void Client::extend(const Message& message, std::chrono::milliseconds by, bool confirm) {
  impl_->require_v2("extend");
  impl_->settle(proto::Extend{tag_of(message, "extend"), wire_ms(by, "extend")}, confirm, "extend");
}

std::uint64_t Client::Impl::open_subscription(std::string_view key,
                                              const SubscribeOptions& options) {
  require_v2("subscribe");
  session.check_usable();
  check_key(key);
  const std::uint64_t corr = session.next_correlation();
  // Registered before it is sent: deliveries may come back during the flush.
  auto& st = subscriptions[corr];
  st.key = std::string(key);
  st.ack = options.ack;
  try {
    proto::append_frame(session.out(), corr, 0,
                        proto::Subscribe{options.prefetch, options.ack, key});
  } catch (...) {
    subscriptions.erase(corr);
    throw;
  }
  return corr;
}

Subscription Client::subscribe(std::string_view key, const SubscribeOptions& options) {
  auto& impl = *impl_;
  const std::uint64_t corr = impl.open_subscription(key, options);
  try {
    impl.session.flush_unless_corked();
  } catch (...) {
    impl.subscriptions.erase(corr);
    throw;
  }
  return Subscription(impl_.get(), corr, std::string(key));
}

int Client::fd() const noexcept {
  return impl_ ? impl_->session.fd() : -1;
}

bool Client::wants_write() const noexcept {
  return impl_ && impl_->session.has_output();
}

void Client::process() {
  auto& session = impl_->session;
  session.check_usable();
  session.write_some();
  // Every frame nobody awaits goes to the session's own handling: a subscription's stream
  // handler keeps deliveries for next(), a send failure is counted.
  const auto unsolicited = [](const proto::Header&, proto::Bytes) {
    return detail::Session::Handled::unsolicited;
  };
  do {
    session.handle_frames(unsolicited);
  } while (session.read_some());
}

// ---- Subscription ---------------------------------------------------------------------------

Subscription::~Subscription() {
  release();
}

Subscription::Subscription(Subscription&& other) noexcept
    : impl_(std::exchange(other.impl_, nullptr)),
      id_(std::exchange(other.id_, 0)),
      key_(std::move(other.key_)) {}

Subscription& Subscription::operator=(Subscription&& other) noexcept {
  if (this != &other) {
    release();
    impl_ = std::exchange(other.impl_, nullptr);
    id_ = std::exchange(other.id_, 0);
    key_ = std::move(other.key_);
  }
  return *this;
}

std::size_t Subscription::pending() const noexcept {
  if (impl_ == nullptr) return 0;
  const auto it = impl_->subscriptions.find(id_);
  return it == impl_->subscriptions.end() ? 0 : it->second.ready.size();
}

bool Subscription::active() const noexcept {
  if (impl_ == nullptr) return false;
  const auto it = impl_->subscriptions.find(id_);
  return it != impl_->subscriptions.end() && !it->second.cancelled && !it->second.ended;
}

std::optional<Message> Subscription::next(std::chrono::milliseconds timeout) {
  if (impl_ == nullptr) throw Error(Errc::invalid_argument, "next: an empty Subscription");
  auto& impl = *impl_;
  auto& st = impl.subscriptions.at(id_);
  const auto take = [&]() -> std::optional<Message> {
    if (!st.ready.empty()) return st.take();
    if (st.ended) throw *st.ended;
    return std::nullopt;
  };
  if (!st.ready.empty() || st.ended || st.cancelled) return take();
  impl.session.check_usable();
  const auto on_frame = [&](const proto::Header& h, proto::Bytes b) {
    if (!impl.feed(st, h, b)) impl.unexpected_frame(st, h);
    return !st.ready.empty() || st.ended.has_value();
  };
  // A fast subscriber finds its next delivery already read from the socket: taken without
  // reading the clock for a deadline (a tenth of its time per message otherwise).
  impl.session.flush();
  if (impl.session.wait_step(id_, on_frame)) return take();
  const auto deadline = timeout.count() < 0 ? detail::Session::kNoDeadline : Clock::now() + timeout;
  impl.session.wait_for(id_, deadline, on_frame);
  return take();
}

std::size_t Subscription::next_each(std::size_t max, std::chrono::milliseconds timeout,
                                    const std::function<void(const MessageView&)>& on_message) {
  if (impl_ == nullptr) throw Error(Errc::invalid_argument, "next_each: an empty Subscription");
  if (!on_message) throw Error(Errc::invalid_argument, "next_each: no callback");
  auto& impl = *impl_;
  auto& st = impl.subscriptions.at(id_);
  std::size_t seen = 0;
  // Deliveries kept while the Client waited for something else come first, in order.
  while (seen < max && !st.ready.empty()) {
    const Message m = st.take();
    detail::DeliveryMeta meta;
    ++seen;
    on_message(detail::Access::view_of(m, meta));
  }
  if (seen > 0 || max == 0) return seen;
  if (st.ended) throw *st.ended;
  if (st.cancelled) return 0;
  impl.session.check_usable();
  const auto on_frame = [&](const proto::Header& h, proto::Bytes b) {
    const bool fed = impl.feed(st, h, b, [&](const MessageView& v) {
      ++seen;
      on_message(v);
    });
    if (!fed) impl.unexpected_frame(st, h);
    return seen >= max || st.ended.has_value();
  };
  impl.session.flush();
  if (!impl.session.wait_step(id_, on_frame) && seen == 0 && !st.ended) {
    const auto deadline =
        timeout.count() < 0 ? detail::Session::kNoDeadline : Clock::now() + timeout;
    impl.session.wait_for(id_, deadline, [&](const proto::Header& h, proto::Bytes b) {
      return on_frame(h, b) || seen > 0;
    });
    // The rest of what that read brought in.
    if (seen > 0 && seen < max && !st.ended) impl.session.wait_step(id_, on_frame);
  }
  if (seen == 0 && st.ended) throw *st.ended;
  return seen;
}

std::uint64_t Client::Impl::append_unsubscribe(std::uint64_t id) {
  session.check_usable();
  const std::uint64_t corr = session.next_correlation();
  proto::append_frame(session.out(), corr, 0, proto::Unsubscribe{id});
  return corr;
}

void Client::Impl::unsubscribe(std::uint64_t id) {
  auto& st = subscriptions.at(id);
  if (st.cancelled || st.ended) return;
  const std::uint64_t corr = append_unsubscribe(id);
  try {
    // Deliveries still on their way arrive before the OK and are kept (the stream
    // handler takes them).
    session.wait_ok(corr, "unsubscribe from '" + st.key + "'");
  } catch (const Error&) {
    if (st.ended) return;  // the broker ended it first: nothing left to cancel
    throw;
  }
  st.cancelled = true;
}

void Subscription::cancel() {
  if (impl_ != nullptr) impl_->unsubscribe(id_);
}

// Cancels (best effort) and hands back what was never handed out, so that it goes to
// other receivers now rather than when the connection closes.
void Subscription::release() noexcept {
  if (impl_ == nullptr) return;
  auto& impl = *std::exchange(impl_, nullptr);
  const auto it = impl.subscriptions.find(id_);
  if (it == impl.subscriptions.end()) return;
  auto& st = it->second;
  bool settled = false;
  try {
    impl.unsubscribe(id_);
    settled = true;
    // A subject subscription (ack false) has nothing to give back: its deliveries carry
    // no tag.
    for (const Message& m : st.ready) {
      if (!st.ack || m.delivery_tag() == 0) continue;
      proto::Nack n;
      n.delivery_tag = m.delivery_tag();
      impl.settle(n, false, "nack");
    }
  } catch (...) {
    // Nobody to tell: what it held stays held until its ack timeout or the Client closes.
  }
  if (settled) {
    impl.subscriptions.erase(it);
  } else {
    st.orphaned = true;
    st.ready.clear();
    st.ready_bytes = 0;
  }
}

}  // namespace qbus
