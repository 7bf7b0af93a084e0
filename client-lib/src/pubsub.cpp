// Client's publish/subscribe (PROTOCOL.md 18): PUBLISH, SEND_REGION to a subject and
// SUBSCRIBE_SUBJECT, and the Message accessors of the headers the broker adds to subject
// deliveries. Subject subscriptions share the queue subscriptions' machinery (acks.cpp):
// their deliveries are DELIVER or DELIVER_REGION frames under the SUBSCRIBE_SUBJECT's
// correlation, fed to the same SubscriptionState with ack mode off.
#include <charconv>

#include "client_impl.hpp"
#include "qbus/proto/subject.hpp"

namespace qbus {
namespace {

// The wire's SlowPolicy; Error(invalid_argument) for a value outside the enum.
proto::SlowPolicy wire_policy(SlowPolicy p) {
  if (static_cast<std::uint8_t>(p) > static_cast<std::uint8_t>(SlowPolicy::block)) {
    throw Error(Errc::invalid_argument,
                "SubjectOptions::slow " + std::to_string(static_cast<unsigned>(p)) +
                    ": use broker_default, drop_oldest, disconnect or block");
  }
  return static_cast<proto::SlowPolicy>(p);
}

}  // namespace

void Client::Impl::check_subject(std::string_view subject, bool pattern) const {
  if (std::string why = proto::subject_refusal(subject, pattern); !why.empty()) {
    throw Error(Errc::invalid_subject, why);
  }
}

void Client::Impl::publish_inline(std::string_view subject, std::span<const std::byte> payload,
                                  const PublishOptions& options,
                                  const detail::MessageProperties& props) {
  session.check_usable();
  check_payload(payload.size());
  append_properties(props, /*queue_message=*/false);
  const std::uint64_t corr = session.next_correlation();
  const auto flags = static_cast<std::uint16_t>((options.confirm ? proto::kFlagConfirm : 0) |
                                                (options.retain ? proto::kFlagRetain : 0));
  proto::append_frame(session.out(), corr, flags, proto::Publish{subject, payload});
  if (options.confirm) {
    session.wait_ok(corr, "publish to '" + std::string(subject) + "'");
  } else {
    // A refusal comes back as an ERROR with this correlation, counted in send_failures().
    session.flush_unless_corked();
  }
}

// ---- Client -------------------------------------------------------------------------------

void Client::publish(std::string_view subject, std::span<const std::byte> payload,
                     const PublishOptions& options) {
  auto& impl = *impl_;
  impl.require_v2("publish");
  impl.check_subject(subject, /*pattern=*/false);
  const auto props = detail::message_properties(options.headers);
  // Above the threshold through a region, as send() does; a retained message cannot be
  // one (RETAIN is not valid on SEND_REGION), so it goes inline within max_payload.
  if (!options.retain && impl.via_region(payload.size())) {
    if (auto r = impl.copy_to_region(payload)) {
      impl.send_region(*detail::Access::state(*r), proto::RegionTarget::subject, 0, subject, 0,
                       r->size(), true, std::chrono::milliseconds(0), options.confirm, &props);
      return;
    }
  }
  impl.publish_inline(subject, payload, options, props);
}

void Client::publish(std::string_view subject, std::string_view payload,
                     const PublishOptions& options) {
  publish(subject, detail::as_bytes(payload), options);
}

void Client::publish(std::string_view subject, Region&& region, const PublishOptions& options) {
  auto& impl = *impl_;
  impl.require_v2("publish");
  impl.check_subject(subject, /*pattern=*/false);
  if (options.retain) {
    throw Error(Errc::invalid_argument,
                "publish to '" + std::string(subject) +
                    "': a region cannot be retained (publish the bytes inline to retain them)");
  }
  auto* st = detail::Access::state(region);
  if (st == nullptr) throw Error(Errc::invalid_argument, "publish: the Region is empty");
  const auto props = detail::message_properties(options.headers);
  impl.send_region(*st, proto::RegionTarget::subject, 0, subject, 0, st->size, true,
                   std::chrono::milliseconds(0), options.confirm, &props);
  region = Region();
}

std::uint64_t Client::Impl::open_subject_subscription(std::string_view pattern,
                                                      const SubjectOptions& options) {
  require_v2("subscribe_subject");
  session.check_usable();
  check_subject(pattern, /*pattern=*/true);
  if (!options.group.empty() && !proto::is_valid_key(options.group)) {
    throw Error(Errc::invalid_key, "invalid queue group name '" + options.group.substr(0, 64) +
                                       "': use 1-255 characters of A-Z a-z 0-9 . _ : / -");
  }
  proto::SubscribeSubject body;
  body.max_messages = options.max_messages;
  body.max_bytes = options.max_bytes;
  body.slow = wire_policy(options.slow);
  body.pattern = pattern;
  body.group = options.group;
  const std::uint64_t corr = session.next_correlation();
  // Registered before it is sent: the retained messages and the first deliveries may come
  // right behind the OK, and are read with it.
  auto& st = subscriptions[corr];
  st.key = std::string(pattern);
  st.ack = false;
  try {
    proto::append_frame(session.out(), corr, proto::kFlagConfirm, body);
  } catch (...) {
    subscriptions.erase(corr);
    throw;
  }
  return corr;
}

Subscription Client::subscribe_subject(std::string_view pattern, const SubjectOptions& options) {
  auto& impl = *impl_;
  const std::uint64_t corr = impl.open_subject_subscription(pattern, options);
  try {
    impl.session.wait_ok(corr, "subscribe to subjects '" + std::string(pattern) + "'");
  } catch (...) {
    impl.subscriptions.erase(corr);
    throw;
  }
  return Subscription(impl_.get(), corr, std::string(pattern));
}

// ---- Message ------------------------------------------------------------------------------

namespace {

// The count in a qbus-dropped header; 0 for none or for a value that is not a decimal count.
std::uint64_t dropped_count(std::optional<std::string_view> v) noexcept {
  if (!v || v->empty()) return 0;
  std::uint64_t n = 0;
  const auto [end, ec] = std::from_chars(v->data(), v->data() + v->size(), n);
  if (ec != std::errc() || end != v->data() + v->size()) return 0;
  return n;
}

}  // namespace

std::uint64_t Message::dropped_before() const noexcept {
  return dropped_count(header(proto::kHeaderDropped));
}

bool Message::retained() const noexcept {
  return header(proto::kHeaderRetained).has_value();
}

std::uint64_t MessageView::dropped_before() const noexcept {
  return dropped_count(header(proto::kHeaderDropped));
}

bool MessageView::retained() const noexcept {
  return header(proto::kHeaderRetained).has_value();
}

}  // namespace qbus
