// Publish/subscribe frames (proto/PROTOCOL.md section 18). A SEND_REGION to a subject is
// handled with the other region frames (connection.cpp).
#include <spdlog/spdlog.h>

#include "net/connection.hpp"
#include "net/server.hpp"
#include "qbus/proto/subject.hpp"

namespace qbus::daemon {

using proto::FrameType;

Connection::Step Connection::bad_subject(const proto::Header& h, std::string_view s, bool pattern) {
  bad_request(h.correlation, Errc::invalid_subject, proto::subject_refusal(s, pattern));
  return Step::next;
}

Connection::Step Connection::handle_pubsub(const proto::Header& h, proto::Bytes body) {
  auto& broker = server_.broker();
  const bool confirm = (h.flags & proto::kFlagConfirm) != 0;
  if (h.type == FrameType::publish) {
    proto::Publish m;
    if (auto e = proto::decode_body(body, m); e != Errc::ok) {
      if (e != Errc::invalid_subject) return bad_queue_body(h, e);
      return bad_subject(h, m.subject, false);
    }
    const broker::PublishSend p{
        m.subject, m.payload, headers(), {}, (h.flags & proto::kFlagRetain) != 0};
    const auto r = broker.publish(id_, p, now_);
    if (server_.tap()) [[unlikely]] {
      tap({.kind = TapKind::publish, .client = *this, .key = m.subject, .payload = m.payload}, r);
    }
    return answer(h, r, confirm);
  }
  proto::SubscribeSubject m;
  if (auto e = proto::decode_body(body, m); e != Errc::ok) {
    if (e == Errc::invalid_subject) return bad_subject(h, m.pattern, true);
    if (e != Errc::invalid_key) return bad_queue_body(h, e);
    bad_request(h.correlation, e,
                "invalid queue group name (a key: 1..255 bytes of [A-Za-z0-9._:/-])");
    return Step::next;
  }
  const broker::SubjectSubscribe s{h.correlation,  m.pattern,   m.group,
                                   m.max_messages, m.max_bytes, m.slow};
  return answer(h, broker.subscribe_subject(id_, s, confirm), confirm);
}

}  // namespace qbus::daemon
