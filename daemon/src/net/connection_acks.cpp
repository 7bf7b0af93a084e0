// The frames of protocol version 2 (proto/PROTOCOL.md section 17): a message's headers
// (PROPERTIES, and DELIVERY_INFO before a delivery), settling held messages (ACK, NACK,
// EXTEND), subscriptions, and DECLARE_EX.
#include <spdlog/spdlog.h>

#include "net/connection.hpp"
#include "net/server.hpp"
#include "qbus/proto/buffer.hpp"
#include "qbus/proto/headers.hpp"

namespace qbus::daemon {

using proto::FrameType;

void Connection::deliver_info(std::uint64_t correlation, const broker::DeliveryExtras& e) {
  proto::append_frame(out(), correlation, 0,
                      proto::DeliveryInfo{e.tag, e.count, e.count > 1, e.headers});
}

Connection::Step Connection::handle_properties(const proto::Header& h, proto::Bytes body) {
  proto::Properties m;
  if (proto::decode_body(body, m) != Errc::ok) return bad_queue_body(h, Errc::malformed_frame);
  if (has_properties_) {
    bad_request(properties_correlation_, Errc::unexpected_frame,
                "PROPERTIES must be followed by SEND, SEND_REGION, REQUEST, SEND_DIRECT or "
                "PUBLISH, not by another PROPERTIES");
  }
  has_properties_ = false;
  // The broker's own headers (a dead letter's reasons) need room beside the sender's.
  if (m.headers.size() > proto::kMaxSenderHeadersSize) {
    bad_request(h.correlation, Errc::malformed_frame,
                "a message's headers may take " + std::to_string(proto::kMaxSenderHeadersSize) +
                    " bytes, not " + std::to_string(m.headers.size()));
    return Step::next;
  }
  switch (proto::check_headers(m.headers, true)) {
    case Errc::ok:
      break;
    case Errc::permission_denied:
      error(h.correlation, Errc::permission_denied,
            "header keys starting with \"qbus-\" are the broker's");
      return Step::next;
    default:
      bad_request(h.correlation, Errc::malformed_frame,
                  "malformed header block (at most " + std::to_string(proto::kMaxSenderHeaders) +
                      " entries; keys of 1..64 printable characters without space, '=' or "
                      "':'; values up to 1024 bytes)");
      return Step::next;
  }
  properties_.assign(m.headers.begin(), m.headers.end());
  props_.ttl_ms = m.ttl_ms;
  props_.delay_ms = m.delay_ms;
  props_.priority = m.priority;
  properties_correlation_ = h.correlation;
  has_properties_ = true;
  return Step::next;
}

Connection::Step Connection::refuse_timed(const proto::Header& h) {
  has_properties_ = false;
  bad_request(h.correlation, Errc::malformed_frame,
              "a time to live, a delay or a priority (PROPERTIES) applies to a message sent to "
              "a queue (SEND, or SEND_REGION to a queue), not to " +
                  std::string(proto::frame_type_name(h.type)));
  return Step::next;
}

Connection::Step Connection::answer_settled(const proto::Header& h, const broker::Settled& r) {
  if (r.error != Errc::ok) {
    log_with(log_fields(r.error), spdlog::level::debug, "client {} ({}): {} refused: {}", id_,
             description_, proto::frame_type_name(h.type), r.text);
    error(h.correlation, r.error, r.text);
  } else if ((h.flags & proto::kFlagConfirm) != 0) {
    ok(h.correlation);
  }
  return Step::next;
}

Connection::Step Connection::handle_v2(const proto::Header& h, proto::Bytes body) {
  auto& broker = server_.broker();
  const auto bad_body = [&](Errc e) { return bad_queue_body(h, e); };
  switch (h.type) {
    case FrameType::properties:
      return handle_properties(h, body);
    case FrameType::ack: {
      proto::Ack m;
      if (auto e = proto::decode_body(body, m); e != Errc::ok) return bad_body(e);
      return answer_settled(h, broker.ack(id_, m.delivery_tag, m.multiple, now_));
    }
    case FrameType::nack: {
      proto::Nack m;
      if (auto e = proto::decode_body(body, m); e != Errc::ok) return bad_body(e);
      return answer_settled(
          h, broker.nack(id_, m.delivery_tag, m.multiple, m.action, m.delay_ms, now_));
    }
    case FrameType::extend: {
      proto::Extend m;
      if (auto e = proto::decode_body(body, m); e != Errc::ok) return bad_body(e);
      return answer_settled(h, broker.extend(id_, m.delivery_tag, m.extend_ms, now_));
    }
    case FrameType::subscribe: {
      proto::Subscribe m;
      if (auto e = proto::decode_body(body, m); e != Errc::ok) return bad_body(e);
      broker.subscribe(id_, h.correlation, m.key, m.prefetch, m.ack, now_);
      return Step::next;
    }
    case FrameType::unsubscribe: {
      proto::Unsubscribe m;
      if (auto e = proto::decode_body(body, m); e != Errc::ok) return bad_body(e);
      if (broker.unsubscribe(id_, m.subscription, now_)) {
        ok(h.correlation);
      } else {
        error(h.correlation, Errc::no_such_subscription,
              "this connection has no subscription " + std::to_string(m.subscription));
      }
      return Step::next;
    }
    case FrameType::declare_ex: {
      proto::DeclareEx m;
      if (auto e = proto::decode_body(body, m); e != Errc::ok) return bad_body(e);
      broker::QueueOptions o{m.max_messages, m.max_bytes, m.overflow};
      o.ack_timeout_ms = m.ack_timeout_ms;
      o.max_deliveries = m.max_deliveries;
      o.dead_letter_overflow = (m.flags & proto::kDeclareDeadLetterOverflow) != 0;
      o.dead_letter = std::string(m.dead_letter);
      o.default_ttl_ms = m.ttl_ms;
      o.dead_letter_expired = (m.flags & proto::kDeclareDeadLetterExpired) != 0;
      o.priorities = m.priorities;
      o.single_active_consumer = (m.flags & proto::kDeclareSingleActiveConsumer) != 0;
      o.durable = (m.flags & proto::kDeclareDurable) != 0;
      o.fsync = m.fsync;
      o.message_ids = (m.flags & proto::kDeclareMessageIds) != 0;
      std::string text;
      if (const auto e = broker.declare(id_, m.key, o, text); e != Errc::ok) {
        error(h.correlation, e, text);
      } else {
        ok(h.correlation);
      }
      return Step::next;
    }
    default:
      return Step::next;
  }
}

void Connection::await_journal(std::uint64_t correlation, std::uint64_t ticket, bool confirm) {
  if (unjournaled_.empty()) server_.await_journal(id_);
  unjournaled_.push_back(Unjournaled{ticket, correlation, confirm});
  journal_full_ = unjournaled_.size() >= kMaxUnjournaled;
}

bool Connection::journaled(const storage::JournalProgress& p) {
  const bool was_full = journal_full();
  while (!unjournaled_.empty()) {
    const Unjournaled& u = unjournaled_.front();
    if (u.ticket <= p.durable_through) {
      if (u.confirm) ok(u.correlation);
    } else if (u.ticket <= p.failed_through) {
      // Not known to be on disk: the sender must not count on it surviving a restart.
      error(u.correlation, Errc::storage_failed,
            "the message was not made durable: " +
                (p.error.empty() ? std::string("the journal failed") : p.error));
    } else {
      break;
    }
    unjournaled_.pop_front();
  }
  journal_full_ = unjournaled_.size() >= kMaxUnjournaled;
  if (was_full && !journal_full() && !closed_) resume();
  if (closing_ && unjournaled_.empty()) mark_dirty();  // flush() closes it now
  return unjournaled_.empty();
}

}  // namespace qbus::daemon
