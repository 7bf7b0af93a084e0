// Client's queue, direct and request operations, and Message; the layers below are
// transport.hpp and session.hpp, the region operations are in regions.cpp.
#include "qbus/client.hpp"

#include <exception>

#include "client_impl.hpp"

namespace qbus {
namespace {

using Clock = std::chrono::steady_clock;
using detail::as_bytes;
using detail::batch_size;
using detail::to_wire_timeout;
using proto::FrameType;

// The broker enforces receive timeouts; ours only catches a broker that stopped answering.
constexpr auto kBrokerGrace = std::chrono::seconds(30);

}  // namespace

// Waits for the DELIVER frames answering `corr` (up to the one flagged LAST), handing
// each message to on_view(const MessageView&) in place; an ERROR `timeout` ends it with
// none. `timeout` is what the broker was told; ours adds a grace. An exception from
// on_view is rethrown once the whole answer has been read, so the connection stays in
// step. Returns how many messages there were.
template <typename OnView>
inline std::size_t Client::Impl::collect_each(std::uint64_t corr, std::chrono::milliseconds timeout,
                                              std::string_view context, OnView&& on_view) {
  auto deadline = detail::Session::kNoDeadline;
  if (timeout.count() >= 0) deadline = Clock::now() + timeout + kBrokerGrace;
  std::size_t seen = 0;
  std::exception_ptr failed;
  auto hand_over = [&](const MessageView& v) {
    ++seen;
    if (failed) return;
    try {
      on_view(v);
    } catch (...) {
      failed = std::current_exception();
    }
  };
  detail::DeliveryAssembler assembler;
  const bool answered =
      session.wait_for(corr, deadline, [&](const proto::Header& h, proto::Bytes b) {
        // The broker is answering: the rest of the answer follows whatever time on_view
        // takes, so only the wait for its start is bounded.
        deadline = detail::Session::kNoDeadline;
        switch (assemble(assembler, h, b, context, hand_over)) {
          case Fed::part:
            return false;
          case Fed::message:
            return (h.flags & proto::kFlagLast) != 0;
          case Fed::other:
            break;
        }
        if (h.type == FrameType::error) {
          proto::ErrorBody e;
          if (proto::decode_error(b, e) == Errc::ok &&
              e.code == static_cast<std::uint16_t>(Errc::timeout)) {
            return true;
          }
          if (failed) std::rethrow_exception(failed);  // the caller's own error comes first
          session.throw_error_frame(b, context);
        }
        session.fail(Errc::protocol_violation, std::string(context) + ": unexpected answer");
      });
  if (!answered) session.fail(Errc::io_error, std::string(context) + ": broker did not answer");
  if (failed) std::rethrow_exception(failed);
  return seen;
}

// collect_each() into Messages; `expected` (the batch asked for) sizes the vector.
inline std::vector<Message> Client::Impl::collect(std::uint64_t corr,
                                                  std::chrono::milliseconds timeout,
                                                  std::string_view context, std::size_t expected) {
  std::vector<Message> got;
  got.reserve(std::min<std::size_t>(expected, 64));  // more would be waste for a short batch
  collect_each(corr, timeout, context,
               [&](const MessageView& v) { got.push_back(v.to_message()); });
  return got;
}

// Asks for up to `max` messages of `key`; returns the correlation and the broker's
// timeout to collect them with.
inline std::vector<Message> Client::Impl::receive(std::string_view key, std::size_t max,
                                                  std::chrono::milliseconds timeout,
                                                  std::uint16_t flags) {
  const auto [corr, wire_timeout] = ask_receive(key, max, timeout, flags);
  return collect(corr, wire_timeout, "receive", max);
}

inline std::vector<Message> Client::Impl::receive_direct(std::size_t max,
                                                         std::chrono::milliseconds timeout) {
  session.check_usable();
  if (!inbox_claimed) {
    const std::uint64_t corr = session.next_correlation();
    proto::append_empty(session.out(), FrameType::claim_inbox, corr);
    session.wait_ok(corr, "claim inbox");
    inbox_claimed = true;
  }
  proto::ReceiveDirect r;
  r.timeout_ms = to_wire_timeout(timeout);
  r.max_count = batch_size(max);
  const std::uint64_t corr = session.next_correlation();
  proto::append_receive_direct(session.out(), corr, r);
  return collect(corr, std::chrono::milliseconds(r.timeout_ms), "receive_direct", max);
}

inline void Client::Impl::send_direct(proto::TargetKind kind, std::uint64_t target,
                                      std::uint64_t in_reply_to, std::span<const std::byte> payload,
                                      const DirectOptions& options) {
  const std::uint64_t corr = append_send_direct(kind, target, in_reply_to, payload, options);
  if (options.confirm) {
    session.wait_ok(corr, "direct send to " +
                              std::string(kind == proto::TargetKind::pid ? "pid " : "client ") +
                              std::to_string(target));
  } else {
    session.flush_unless_corked();
  }
}

Client::Client(ClientOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->region_threshold = options.region_threshold;
  impl_->session.set_stream_handler([impl = impl_.get()](const proto::Header& h, proto::Bytes b) {
    return impl->on_stream_frame(h, b);
  });
  impl_->session.connect(options);
  if (options.region_pool_bytes != 0 && impl_->session.passes_fds()) {
    impl_->region_pool =
        std::make_unique<detail::RegionPool>(options.region_pool_bytes, impl_->session.releases());
  }
}

Client::~Client() {
  if (impl_) impl_->session.close();
}

Client::Client(Client&&) noexcept = default;
Client& Client::operator=(Client&&) noexcept = default;

const SessionInfo& Client::session() const noexcept {
  return impl_->session.info();
}
const SendFailures& Client::send_failures() const noexcept {
  return impl_->session.failures();
}

void Client::send(std::string_view key, std::span<const std::byte> payload) {
  if (impl_->via_region(payload.size())) {
    impl_->check_key(key);
    if (auto r = impl_->copy_to_region(payload)) {
      send(key, std::move(*r));
      return;
    }
  }
  impl_->append_send(key, payload, 0);
  impl_->session.flush_unless_corked();
}

void Client::send(std::string_view key, std::string_view payload) {
  send(key, as_bytes(payload));
}

void Client::send_confirmed(std::string_view key, std::span<const std::byte> payload) {
  if (impl_->via_region(payload.size())) {
    impl_->check_key(key);
    if (auto r = impl_->copy_to_region(payload)) {
      impl_->send_region(*detail::Access::state(*r), proto::RegionTarget::queue, 0, key, 0,
                         r->size(), true, std::chrono::milliseconds(0), true);
      return;
    }
  }
  const auto corr = impl_->append_send(key, payload, proto::kFlagConfirm);
  impl_->session.wait_ok(corr, "send to '" + std::string(key) + "'");
}

void Client::send_confirmed(std::string_view key, std::string_view payload) {
  send_confirmed(key, as_bytes(payload));
}

void Client::send(std::string_view key, std::span<const std::byte> payload,
                  const SendOptions& options) {
  const auto props = detail::message_properties(options);
  if (props.empty()) {
    options.confirm ? send_confirmed(key, payload) : send(key, payload);
    return;
  }
  auto& impl = *impl_;
  impl.require_v2("send with headers, a ttl, a delay or a priority");
  if (impl.via_region(payload.size())) {
    impl.check_key(key);
    if (auto r = impl.copy_to_region(payload)) {
      impl.send_region(*detail::Access::state(*r), proto::RegionTarget::queue, 0, key, 0, r->size(),
                       true, std::chrono::milliseconds(0), options.confirm, &props);
      return;
    }
  }
  const auto corr =
      impl.append_send(key, payload, options.confirm ? proto::kFlagConfirm : 0, &props);
  if (options.confirm) {
    impl.session.wait_ok(corr, "send to '" + std::string(key) + "'");
  } else {
    impl.session.flush_unless_corked();
  }
}

void Client::send(std::string_view key, std::string_view payload, const SendOptions& options) {
  send(key, as_bytes(payload), options);
}

std::optional<Message> Client::receive(std::string_view key, std::chrono::milliseconds timeout) {
  auto got = impl_->receive(key, 1, timeout);
  if (got.empty()) return std::nullopt;
  return std::move(got.front());
}

std::optional<Message> Client::try_receive(std::string_view key) {
  return receive(key, std::chrono::milliseconds(0));
}

std::vector<Message> Client::receive_batch(std::string_view key, std::size_t max,
                                           std::chrono::milliseconds timeout) {
  return impl_->receive(key, max, timeout);
}

std::optional<Message> Client::receive(std::string_view key, std::chrono::milliseconds timeout,
                                       const ReceiveOptions& options) {
  auto got = receive_batch(key, 1, timeout, options);
  if (got.empty()) return std::nullopt;
  return std::move(got.front());
}

std::vector<Message> Client::receive_batch(std::string_view key, std::size_t max,
                                           std::chrono::milliseconds timeout,
                                           const ReceiveOptions& options) {
  if (options.ack) impl_->require_v2("receive in acknowledgement mode");
  return impl_->receive(key, max, timeout, options.ack ? proto::kFlagAck : 0);
}

std::size_t Client::receive_each(std::string_view key, std::size_t max,
                                 std::chrono::milliseconds timeout,
                                 const std::function<void(const MessageView&)>& on_message) {
  if (!on_message) throw Error(Errc::invalid_argument, "receive_each: no callback");
  const auto [corr, wire_timeout] = impl_->ask_receive(key, max, timeout);
  return impl_->collect_each(corr, wire_timeout, "receive", on_message);
}

void Client::send_to_pid(std::uint32_t pid, std::span<const std::byte> payload,
                         const DirectOptions& options) {
  if (pid == 0) throw Error(Errc::invalid_argument, "send_to_pid: pid 0 names no process");
  if (impl_->via_region(payload.size())) {
    if (auto r = impl_->copy_to_region(payload)) {
      send_to_pid(pid, std::move(*r), options);
      return;
    }
  }
  impl_->send_direct(proto::TargetKind::pid, pid, 0, payload, options);
}

void Client::send_to_pid(std::uint32_t pid, std::string_view payload,
                         const DirectOptions& options) {
  send_to_pid(pid, as_bytes(payload), options);
}

void Client::send_to_client(std::uint64_t client_id, std::string_view payload,
                            const DirectOptions& options) {
  if (client_id == 0) throw Error(Errc::invalid_argument, "send_to_client: client id 0");
  impl_->send_direct(proto::TargetKind::client_id, client_id, 0, as_bytes(payload), options);
}

std::optional<Message> Client::receive_direct(std::chrono::milliseconds timeout) {
  auto got = impl_->receive_direct(1, timeout);
  if (got.empty()) return std::nullopt;
  return std::move(got.front());
}

std::vector<Message> Client::receive_direct_batch(std::size_t max,
                                                  std::chrono::milliseconds timeout) {
  return impl_->receive_direct(max, timeout);
}

std::uint64_t Client::Impl::append_request(std::string_view key, std::span<const std::byte> payload,
                                           std::chrono::milliseconds timeout,
                                           const Headers& headers) {
  session.check_usable();
  check_key(key);
  check_payload(payload.size());
  const auto props = detail::message_properties(headers);
  if (!props.empty()) require_v2("request with headers");
  proto::Request r;
  r.key = key;
  r.timeout_ms = to_wire_timeout(timeout);
  r.payload = payload;
  append_properties(props, /*queue_message=*/false);
  const std::uint64_t corr = session.next_correlation();
  proto::append_request(session.out(), corr, r);
  return corr;
}

std::optional<Message> Client::Impl::request(std::string_view key, std::string_view payload,
                                             std::chrono::milliseconds timeout,
                                             const Headers& headers) {
  const std::uint64_t corr = append_request(key, as_bytes(payload), timeout, headers);
  // No local deadline: the broker starts the request's timeout only once a full `block`
  // queue accepts the message, which may be any time later; a dead broker still shows as
  // connection_closed.
  auto got = collect(corr, kForever, "request to '" + std::string(key) + "'");
  if (got.empty()) return std::nullopt;
  return std::move(got.front());
}

std::optional<Message> Client::request(std::string_view key, std::string_view payload,
                                       std::chrono::milliseconds timeout) {
  return impl_->request(key, payload, timeout, {});
}

std::optional<Message> Client::request(std::string_view key, std::string_view payload,
                                       std::chrono::milliseconds timeout, const Headers& headers) {
  return impl_->request(key, payload, timeout, headers);
}

void Client::reply(const Message& request, std::string_view payload) {
  if (!request.is_request()) {
    throw Error(Errc::invalid_argument, "reply: the message is not a request");
  }
  impl_->send_direct(proto::TargetKind::client_id, request.sender().client_id, request.request_id(),
                     as_bytes(payload), DirectOptions{{}, false});
}

static_assert(kHeaderMessageId == proto::kHeaderMessageId);

void Client::declare(std::string_view key, const QueueOptions& options) {
  auto& session = impl_->session;
  session.check_usable();
  impl_->check_key(key);
  const std::uint64_t corr = session.next_correlation();
  if (const auto ex = detail::declare_ex(key, options)) {
    impl_->require_v2(
        "declare with ack_timeout, max_deliveries, dead_letter, ttl, priorities, "
        "single_active_consumer, durable or message_ids");
    proto::append_frame(session.out(), corr, proto::kFlagConfirm, *ex);
  } else {
    proto::Declare d;
    d.key = key;
    d.max_messages = options.max_messages;
    d.max_bytes = options.max_bytes;
    d.overflow = static_cast<proto::Overflow>(options.overflow);
    proto::append_declare(session.out(), corr, proto::kFlagConfirm, d);
  }
  session.wait_ok(corr, "declare '" + std::string(key) + "'");
}

std::uint64_t Client::Impl::drop(std::string_view key, bool remove) {
  session.check_usable();
  check_key(key);
  const std::uint64_t corr = session.next_correlation();
  if (remove) {
    proto::append_delete(session.out(), corr, key);
  } else {
    proto::append_purge(session.out(), corr, key);
  }
  const std::string context = (remove ? "delete '" : "purge '") + std::string(key) + "'";
  std::uint64_t dropped = 0;
  const bool answered = session.wait_for(
      corr, detail::Session::kNoDeadline, [&](const proto::Header& h, proto::Bytes b) {
        if (h.type == FrameType::error) session.throw_error_frame(b, context);
        if (h.type != FrameType::dropped || proto::decode_dropped(b, dropped) != Errc::ok) {
          session.fail(Errc::protocol_violation, context + ": unexpected answer");
        }
        return true;
      });
  if (!answered) session.fail(Errc::io_error, context + ": broker did not answer");
  return dropped;
}

std::uint64_t Client::purge(std::string_view key) {
  return impl_->drop(key, /*remove=*/false);
}

std::uint64_t Client::delete_queue(std::string_view key) {
  return impl_->drop(key, /*remove=*/true);
}

void Client::sync() {
  auto& session = impl_->session;
  session.check_usable();
  const std::uint64_t corr = session.next_correlation();
  proto::append_empty(session.out(), FrameType::ping, corr);
  session.wait_ok(corr, "sync");
}

Client::Batch::Batch(Client& client) : client_(client) {
  client_.impl_->session.cork();
}

Client::Batch::~Batch() {
  client_.impl_->session.uncork();
}

// ---- Message ----------------------------------------------------------------------------

std::span<const std::byte> Message::bytes() const noexcept {
  if (mapped_) return mapped_->mapping.bytes();
  return std::as_bytes(std::span(payload_.data(), payload_.size()));
}

Message MessageView::to_message() const {
  if (const Message* region = detail::Access::region_of(*this)) return *region;
  Message m(std::string(key_), std::string(text()), sender_, request_id_);
  detail::Access::set_delivery(m, header_block_, delivery_tag_, delivery_count_, redelivered_);
  return m;
}

void detail::Access::set_delivery(Message& m, proto::Bytes header_block, std::uint64_t tag,
                                  std::uint32_t count, bool redelivered) {
  if (!header_block.empty()) m.headers_ = decode_headers(header_block);
  m.delivery_tag_ = tag;
  m.delivery_count_ = count;
  m.redelivered_ = redelivered;
}

std::optional<std::string_view> Message::header(std::string_view name) const noexcept {
  for (const auto& [k, v] : headers_) {
    if (k == name) return std::string_view(v);
  }
  return std::nullopt;
}

Headers MessageView::headers() const {
  return detail::decode_headers(header_block_);
}

std::optional<std::string_view> MessageView::header(std::string_view name) const noexcept {
  return detail::find_header(header_block_, name);
}

void MessageView::for_each_header(
    const std::function<void(std::string_view, std::string_view)>& on_header) const {
  proto::HeaderReader r(header_block_);
  proto::HeaderEntry e;
  while (r.next(e))
    on_header(e.key, e.value);
}

std::string Message::take_payload() {
  if (mapped_) {
    std::string copy(text());
    mapped_.reset();
    return copy;
  }
  return std::move(payload_);
}

}  // namespace qbus
