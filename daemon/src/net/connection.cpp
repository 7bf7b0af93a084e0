#include "net/connection.hpp"

#include <spdlog/spdlog.h>

#include <optional>

#include "net/server.hpp"

namespace qbus::daemon {
namespace {

using proto::FrameType;

constexpr auto kCloseGrace = std::chrono::seconds(2);
constexpr std::uint64_t kLoggedMisbehaviours = 10;

constexpr std::string_view kAuthFailedText = "TCP clients must present the broker's token";

}  // namespace

Connection::Connection(Server& server, Socket socket, broker::PeerId id, broker::Identity identity,
                       std::string description, std::string remote_ip)
    : server_(server),
      socket_(std::move(socket)),
      id_(id),
      identity_(identity),
      description_(std::move(description)),
      remote_ip_(std::move(remote_ip)),
      handshake_timer_(socket_.get_executor()) {
  uid_out_ = &server.attach_output(identity_.uid);
  asio::error_code ec;
  socket_.non_blocking(true, ec);
}

void Connection::start() {
  handshake_timer_.expires_after(std::chrono::milliseconds(server_.options().handshake_timeout_ms));
  handshake_timer_.async_wait([self = shared_from_this()](const asio::error_code& ec) {
    if (ec || self->welcomed_ || self->closed_ || self->held_) return;
    if (self->tls_pending_handshake()) {
      self->tls_failed("no TLS handshake within the handshake timeout");
      return;
    }
    self->misbehaved(Errc::handshake_timeout, "no HELLO within the handshake timeout");
    self->reject(Errc::handshake_timeout, "no HELLO within the handshake timeout");
    self->server_.end_of_batch();
  });
  if (tls_) {
    continue_handshake();
    return;
  }
  wait_readable();
}

std::size_t Connection::process(std::span<const std::byte> in) {
  std::size_t used = 0;
  // One clock read per batch of frames, not per message: the frames of one read arrived
  // together, and deadlines and ages need no finer grain.
  now_ = broker::Clock::now();
  while (!closing_ && !closed_ && !blocked_ && !held_ && !journal_full()) {
    if (backed_up()) {
      paused_output_ = true;  // flush() resumes us once the peer has read enough
      break;
    }
    auto rest = in.subspan(used);
    auto hr = proto::decode_header(rest, server_.options().max_body);
    if (hr.status == proto::HeaderStatus::need_more) break;
    if (hr.status == proto::HeaderStatus::bad) {
      std::string text = hr.error == Errc::frame_too_large
                             ? "declared body size exceeds the limit of " +
                                   std::to_string(server_.options().max_body) + " bytes"
                             : "invalid frame header";
      misbehaved(hr.error, text);
      reject(hr.error, text);
      return in.size();
    }
    const std::size_t frame = proto::kHeaderSize + hr.header.body_size;
    if (rest.size() < frame) break;
    if (handle(hr.header, rest.subspan(proto::kHeaderSize, hr.header.body_size)) == Step::stop) {
      break;  // the frame stays unconsumed and is retried on unblock()
    }
    server_.count_frame();
    used += frame;
  }
  return used;
}

void Connection::tap(TapEvent e, const broker::SendOutcome& r) {
  if (r.result == broker::SendResult::blocked) return;
  e.refused = r.result == broker::SendResult::rejected;
  if (!e.region) e.size = e.payload.size();
  server_.tap()->on_message(e);
}

void Connection::tap_direct(const proto::SendDirect& m, const broker::SendOutcome& r) {
  tap({.kind = TapKind::direct,
       .client = *this,
       .target = m.target,
       .target_is_client = m.kind == proto::TargetKind::client_id,
       .reply = m.in_reply_to != 0,
       .payload = m.payload},
      r);
}

void Connection::tap_region(const proto::SendRegion& m, const broker::SendOutcome& r) {
  TapEvent e{
      .kind = TapKind::send, .client = *this, .key = m.key, .size = m.length, .region = true};
  switch (m.target_kind) {
    case proto::RegionTarget::queue:
      break;
    case proto::RegionTarget::subject:
      e.kind = TapKind::publish;
      break;
    case proto::RegionTarget::pid:
    case proto::RegionTarget::client_id:
      e.kind = TapKind::direct;
      e.key = {};
      e.target = m.target;
      e.target_is_client = m.target_kind == proto::RegionTarget::client_id;
      break;
  }
  tap(e, r);
}

Connection::Step Connection::answer(const proto::Header& h, const broker::SendOutcome& r,
                                    bool ok_on_success) {
  if (r.result == broker::SendResult::accepted || r.result == broker::SendResult::deferred) {
    ++stats_.sent_total;
  }
  switch (r.result) {
    case broker::SendResult::accepted:
      if (r.ticket != 0) {
        await_journal(h.correlation, r.ticket, ok_on_success);
      } else if (ok_on_success) {
        ok(h.correlation);
      }
      return Step::next;
    case broker::SendResult::rejected:
      if (r.error == Errc::malformed_frame) {
        misbehaved(r.error, r.text);  // a broken request, not a full queue
      } else {
        log_with(log_fields(r.error), spdlog::level::debug, "client {} ({}): {} refused: {}", id_,
                 description_, proto::frame_type_name(h.type), r.text);
      }
      error(h.correlation, r.error, r.text);
      return Step::next;
    case broker::SendResult::blocked:
      blocked_ = true;
      return Step::stop;
    case broker::SendResult::deferred:
      return Step::next;
  }
  return Step::next;
}

Connection::Step Connection::handle(const proto::Header& h, proto::Bytes body) {
  if (!welcomed_) return handle_hello(h, body);
  const proto::FrameTraits* row = proto::frame_traits(h.type);
  if (row && row->min_version > version_) {
    bad_request(h.correlation, Errc::unknown_frame_type,
                std::string(row->name) + " needs protocol version " +
                    std::to_string(row->min_version) + "; this connection speaks version " +
                    std::to_string(version_));
    return Step::next;
  }
  // The flags a client may set: those PROTOCOL.md allows on frames a client sends. A frame
  // only the broker sends (a DELIVER flagged LAST, say) is refused for its flags first.
  const std::uint16_t allowed =
      row && row->direction == proto::Direction::to_broker ? row->flags : 0;
  if ((h.flags & ~allowed) != 0 || (version_ < 2 && (h.flags & proto::kFlagAck) != 0)) {
    bad_request(h.correlation, Errc::malformed_frame, "unknown flag bits set");
    return Step::next;
  }
  if (!has_properties_) return dispatch(h, body);
  const bool message = h.type == FrameType::send || h.type == FrameType::request ||
                       h.type == FrameType::send_direct || h.type == FrameType::send_region ||
                       h.type == FrameType::publish;
  if (!message) {
    has_properties_ = false;
    bad_request(properties_correlation_, Errc::unexpected_frame,
                "PROPERTIES must be followed by SEND, SEND_REGION, REQUEST, SEND_DIRECT or "
                "PUBLISH, not " +
                    std::string(proto::frame_type_name(h.type)));
    return dispatch(h, body);
  }
  if (timed_properties() && (h.type == FrameType::request || h.type == FrameType::send_direct ||
                             h.type == FrameType::publish)) {
    return refuse_timed(h);
  }
  const Step step = dispatch(h, body);
  if (step != Step::stop) has_properties_ = false;  // a paused send keeps them for its retry
  return step;
}

Connection::Step Connection::dispatch(const proto::Header& h, proto::Bytes body) {
  auto& broker = server_.broker();
  const auto now = now_;
  const bool confirm = (h.flags & proto::kFlagConfirm) != 0;
  const auto bad_body = [&](Errc e) { return bad_queue_body(h, e); };
  switch (h.type) {
    case FrameType::send: {
      proto::Send m;
      if (auto e = proto::decode_send(body, m); e != Errc::ok) return bad_body(e);
      const auto r = broker.send(id_, m.key, m.payload, now, props());
      if (server_.tap()) [[unlikely]] {
        tap({.kind = TapKind::send, .client = *this, .key = m.key, .payload = m.payload}, r);
      }
      return answer(h, r, confirm);
    }
    case FrameType::receive: {
      proto::Receive m;
      if (auto e = proto::decode_receive(body, m); e != Errc::ok) return bad_body(e);
      broker.receive(id_, h.correlation, m.key, m.max_count, m.timeout_ms, now,
                     (h.flags & proto::kFlagAck) != 0);
      return Step::next;
    }
    case FrameType::declare:
    case FrameType::purge:
    case FrameType::delete_queue:
      return handle_queue_change(h, body);
    case FrameType::send_direct: {
      proto::SendDirect m;
      if (auto e = proto::decode_send_direct(body, m); e != Errc::ok) return bad_body(e);
      const broker::DirectSend d{m.kind,        m.target, m.in_reply_to, m.wait_ms,
                                 h.correlation, confirm,  headers()};
      const auto r = broker.send_direct(id_, d, m.payload, now);
      if (server_.tap()) [[unlikely]]
        tap_direct(m, r);
      return answer(h, r, confirm);
    }
    case FrameType::receive_direct: {
      proto::ReceiveDirect m;
      if (auto e = proto::decode_receive_direct(body, m); e != Errc::ok) return bad_body(e);
      broker.receive_direct(id_, h.correlation, m.max_count, m.timeout_ms, now);
      return Step::next;
    }
    case FrameType::claim_inbox:
      if (!body.empty()) return bad_body(Errc::malformed_frame);
      broker.claim_inbox(id_);
      ok(h.correlation);
      return Step::next;
    case FrameType::request: {
      proto::Request m;
      if (auto e = proto::decode_request(body, m); e != Errc::ok) return bad_body(e);
      // Accepted: the answer is the reply (or a timeout) under this correlation, later.
      const auto r =
          broker.request(id_, h.correlation, m.key, m.payload, m.timeout_ms, now, headers());
      if (server_.tap()) [[unlikely]] {
        tap({.kind = TapKind::request, .client = *this, .key = m.key, .payload = m.payload}, r);
      }
      return answer(h, r, false);
    }
    case FrameType::ping:
      if (!body.empty()) return bad_body(Errc::malformed_frame);
      proto::append_empty(out(), FrameType::pong, h.correlation);
      mark_dirty();
      return Step::next;
    case FrameType::region_alloc:
    case FrameType::send_region:
    case FrameType::region_release:
    case FrameType::region_create:
    case FrameType::region_attach:
    case FrameType::region_remove:
      return handle_region(h, body);
    case FrameType::properties:
    case FrameType::ack:
    case FrameType::nack:
    case FrameType::extend:
    case FrameType::subscribe:
    case FrameType::unsubscribe:
    case FrameType::declare_ex:
      return handle_v2(h, body);
    case FrameType::publish:
    case FrameType::subscribe_subject:
      return handle_pubsub(h, body);
    case FrameType::hello:
    case FrameType::welcome:
    case FrameType::error:
    case FrameType::ok:
    case FrameType::deliver:
    case FrameType::pong:
    case FrameType::region:
    case FrameType::deliver_region:
    case FrameType::dropped:
    case FrameType::delivery_info:
      bad_request(h.correlation, Errc::unexpected_frame,
                  std::string(proto::frame_type_name(h.type)) + " is not valid from a client here");
      return Step::next;
  }
  bad_request(h.correlation, Errc::unknown_frame_type,
              "unknown frame type " + std::to_string(static_cast<unsigned>(h.type)));
  return Step::next;
}

Connection::Step Connection::handle_region(const proto::Header& h, proto::Bytes body) {
  auto& broker = server_.broker();
  const bool confirm = (h.flags & proto::kFlagConfirm) != 0;
  if (identity_.tcp) {
    bad_request(h.correlation, Errc::unexpected_frame,
                "shared-memory regions need a Unix socket connection (fds cannot cross TCP)");
    return Step::next;
  }
  const auto bad_body = [&](Errc e) {
    bad_request(h.correlation, e,
                e == Errc::invalid_key
                    ? std::string("invalid key")
                    : "malformed " + std::string(proto::frame_type_name(h.type)) + " body");
    return Step::next;
  };
  const auto status = [&](const broker::RegionStatus& st) {
    if (!st.ok()) {
      log_refusal(false, st.error, proto::frame_type_name(h.type), st.text);
      error(h.correlation, st.error, st.text);
    } else if (confirm || h.type == FrameType::region_remove) {
      ok(h.correlation);
    }
    return Step::next;
  };
  // Each grant passes an fd: a uid whose connections do not read their answers gets an
  // error instead of more open files in qbusd.
  if (h.type == FrameType::region_alloc || h.type == FrameType::region_create ||
      h.type == FrameType::region_attach) {
    if (auto why = server_.fd_budget_refusal(*this)) {
      log_refusal(true, Errc::quota_exceeded, proto::frame_type_name(h.type), *why);
      error(h.correlation, Errc::quota_exceeded, *why);
      return Step::next;
    }
  }
  switch (h.type) {
    case FrameType::region_alloc: {
      proto::RegionAlloc m;
      if (auto e = proto::decode_region_alloc(body, m); e != Errc::ok) return bad_body(e);
      grant(h.correlation, broker.allocate_region(id_, m.size), "region allocation");
      return Step::next;
    }
    case FrameType::send_region: {
      proto::SendRegion m;
      if (auto e = proto::decode_send_region(body, m); e != Errc::ok) {
        if (e == Errc::invalid_subject) return bad_subject(h, m.key, false);
        return bad_body(e);
      }
      broker::RegionSend rs;
      rs.ref = broker::RegionRef{m.region_id, m.offset, m.length};
      rs.kind = m.target_kind;
      rs.key = m.key;
      rs.target = m.target;
      rs.wait_ms = m.wait_ms;
      rs.correlation = h.correlation;
      rs.confirm = confirm;
      rs.release = m.release;
      rs.props = props();
      const auto r = broker.send_region(id_, rs, now_);
      if (server_.tap()) [[unlikely]]
        tap_region(m, r);
      return answer(h, r, confirm);
    }
    case FrameType::region_release: {
      std::uint64_t rid = 0;
      if (auto e = proto::decode_region_release(body, rid); e != Errc::ok) return bad_body(e);
      return status(broker.release_region(id_, rid));
    }
    case FrameType::region_create: {
      proto::RegionCreate m;
      if (auto e = proto::decode_region_create(body, m); e != Errc::ok) return bad_body(e);
      grant(h.correlation, broker.create_named_region(id_, m.key, m.size, m.mode),
            "named region creation", m.key);
      return Step::next;
    }
    case FrameType::region_attach: {
      proto::RegionAttach m;
      if (auto e = proto::decode_region_attach(body, m); e != Errc::ok) return bad_body(e);
      grant(h.correlation, broker.attach_named_region(id_, m.key, m.writable), "region attach");
      return Step::next;
    }
    case FrameType::region_remove: {
      std::string_view key;
      if (auto e = proto::decode_region_remove(body, key); e != Errc::ok) return bad_body(e);
      return status(broker.remove_named_region(id_, key));
    }
    default:
      return Step::next;
  }
}

Connection::Step Connection::bad_queue_body(const proto::Header& h, Errc e) {
  bad_request(h.correlation, e,
              e == Errc::invalid_key
                  ? std::string("invalid queue key")
                  : "malformed " + std::string(proto::frame_type_name(h.type)) + " body");
  return Step::next;
}

Connection::Step Connection::handle_queue_change(const proto::Header& h, proto::Bytes body) {
  auto& broker = server_.broker();
  const auto bad_body = [&](Errc e) { return bad_queue_body(h, e); };
  if (h.type == FrameType::declare) {
    proto::Declare m;
    if (auto e = proto::decode_declare(body, m); e != Errc::ok) return bad_body(e);
    std::string text;
    const auto e = broker.declare(id_, m.key, {m.max_messages, m.max_bytes, m.overflow}, text);
    if (e != Errc::ok) {
      error(h.correlation, e, text);
    } else {
      ok(h.correlation);
    }
    return Step::next;
  }
  std::string_view key;
  const bool remove = h.type == FrameType::delete_queue;
  if (auto e = remove ? proto::decode_delete(body, key) : proto::decode_purge(body, key);
      e != Errc::ok) {
    return bad_body(e);
  }
  const broker::DropOutcome r = remove ? broker.remove_for(id_, key) : broker.purge_for(id_, key);
  if (r.error != Errc::ok) {
    log_refusal(false, r.error, proto::frame_type_name(h.type), r.text, key);
    error(h.correlation, r.error, r.text);
    return Step::next;
  }
  log_dropped(proto::frame_type_name(h.type), key, r.dropped);
  proto::append_dropped(out(), h.correlation, r.dropped);
  mark_dirty();
  return Step::next;
}

void Connection::grant(std::uint64_t correlation, const broker::RegionGrant& g,
                       std::string_view what, std::string_view created_key) {
  auto& broker = server_.broker();
  if (!g.ok()) {
    // A quota refusal is the operator's business: the text names the uid and the limit.
    log_refusal(g.error == Errc::quota_exceeded, g.error, what, g.text, created_key);
    error(correlation, g.error, g.text);
    return;
  }
  std::string why;
  const auto size = pass_region_fd(g.id, !g.writable, why);
  if (!size) {
    log_refusal(true, Errc::internal_error, what, why, created_key);
    if (!created_key.empty()) (void)broker.remove_named_region(id_, created_key);
    (void)broker.release_region(id_, g.id);
    error(correlation, Errc::internal_error, "the broker could not pass the region: " + why);
    return;
  }
  proto::append_region_grant(out(), correlation, {g.id, *size, g.writable});
  mark_dirty();
}

Connection::Step Connection::handle_hello(const proto::Header& h, proto::Bytes body) {
  if (h.type != FrameType::hello) {
    misbehaved(Errc::handshake_required, "first frame was not HELLO");
    reject(Errc::handshake_required, "the first frame must be HELLO");
    return Step::next;
  }
  proto::Hello m;
  if (h.flags != 0 || proto::decode_hello(body, m) != Errc::ok) {
    misbehaved(Errc::malformed_frame, "malformed HELLO");
    reject(Errc::malformed_frame, "malformed HELLO");
    return Step::next;
  }
  if (m.min_version > proto::kMaxVersion || m.max_version < proto::kMinVersion) {
    const auto text = "client speaks protocol versions " + std::to_string(m.min_version) + ".." +
                      std::to_string(m.max_version) + ", this broker speaks " +
                      std::to_string(proto::kMinVersion) + ".." +
                      std::to_string(proto::kMaxVersion);
    misbehaved(Errc::unsupported_version, text);
    reject(Errc::unsupported_version, text);
    return Step::next;
  }
  version_ = std::min(m.max_version, proto::kMaxVersion);
  if (identity_.tcp) {
    authenticate(h.correlation, m.token, m.client_name);
    return Step::next;
  }
  welcome(h.correlation, m.client_name);
  return Step::next;
}

void Connection::welcome(std::uint64_t correlation, std::string_view name) {
  welcomed_ = true;
  stats_.name = std::string(name);
  handshake_timer_.cancel();
  proto::Welcome w;
  w.version = version_;
  w.max_body = server_.options().max_body;
  w.max_payload = server_.broker().limits().max_payload;
  w.pid = identity_.pid;
  w.uid = identity_.uid;
  w.gid = identity_.gid;
  w.client_id = identity_.client_id;
  proto::append_welcome(out(), correlation, w);
  mark_dirty();
  log_with(log_fields(), spdlog::level::debug, "client {} connected: {} name '{}'", id_,
           description_, name);
}

void Connection::authenticate(std::uint64_t correlation, std::string_view token,
                              std::string_view name) {
  const auto verdict = server_.tcp_auth().check(token, remote_ip_);
  if (verdict.ok) {
    // At once, however often this address failed: the delay below slows guessing, and the
    // right answer is not a guess.
    if (const Errc e = server_.authenticated(*this); e != Errc::ok) {
      log_with(log_fields(e), spdlog::level::warn, "refusing client {} ({}): {}", id_, description_,
               errc_name(e));
      reject(e, "connection limit reached for TCP clients");
      return;
    }
    welcome(correlation, name);
    return;
  }
  // Logged per address, sparingly: a remote host must not be able to flood the log.
  if (verdict.failures <= 3 || verdict.failures % 100 == 0) {
    log_with(log_fields(Errc::auth_failed), spdlog::level::warn,
             "client {} ({}): auth_failed: {} ({} failures from this address)", id_, description_,
             token.empty() ? "no token presented" : "wrong token", verdict.failures);
  }
  if (verdict.delay.count() == 0) {
    reject(Errc::auth_failed, kAuthFailedText);
    return;
  }
  // A guesser sees no WELCOME and knows at once that it guessed wrong; what slows it down
  // is that the connection keeps one of its address's few unauthenticated slots until the
  // refusal goes out. Nothing more is read meanwhile, so not even closing frees the slot.
  held_ = true;
  handshake_timer_.expires_after(verdict.delay);
  handshake_timer_.async_wait([self = shared_from_this()](const asio::error_code& ec) {
    if (ec || self->closed_) return;
    self->reject(Errc::auth_failed, kAuthFailedText);
    self->server_.end_of_batch();
  });
}

void Connection::preauth_expired() {
  if (closed_) return;
  if (!closing_) {
    // Only reached when this connection's own timers did not end it first (a refusal's
    // delay always runs out before this bound).
    if (held_) {
      reject(Errc::auth_failed, kAuthFailedText);
    } else {
      reject(Errc::handshake_timeout, "not authenticated in time");
    }
  }
  flush();
  close();
}

void Connection::bad_request(std::uint64_t correlation, Errc code, std::string_view text) {
  misbehaved(code, text);
  error(correlation, code, text);
}

namespace {

// A peer repeating itself must not flood the log: the first few, then every 1000th, each
// sampled line saying how many there were. nullopt: skip this one.
std::optional<std::string> sampled(std::uint64_t& count) {
  ++count;
  if (count <= kLoggedMisbehaviours) return std::string();
  if (count % 1000 != 0) return std::nullopt;
  return " (" + std::to_string(count) + " so far)";
}

}  // namespace

void Connection::misbehaved(Errc code, std::string_view text) {
  if (auto so_far = sampled(misbehaviours_)) {
    log_with(log_fields(code), spdlog::level::warn, "client {} ({}): {}: {}{}", id_, description_,
             errc_name(code), text, *so_far);
  }
}

void Connection::log_refusal(bool warn, Errc code, std::string_view what, std::string_view text,
                             std::string_view key) {
  if (auto so_far = sampled(refusals_)) {
    log_with(log_fields(code, key), warn ? spdlog::level::warn : spdlog::level::debug,
             "client {} ({}): {} refused: {}{}", id_, description_, what, text, *so_far);
  }
}

void Connection::log_denial(broker::Operation op, std::string_view key, int rule) {
  if (auto so_far = sampled(denials_)) {
    // Asked during the broker's call that denied, so this is the policy that decided.
    const broker::Policy* policy = server_.broker().policy();
    const std::string by =
        policy ? policy->describe(rule, identity_.uid) : std::string("the default");
    // A direct message names its target (such as "pid 4242 (uid 1001)") instead of a key.
    if (op == broker::Operation::send_direct) {
      log_with(log_fields(Errc::permission_denied), spdlog::level::warn,
               "policy: denied send_direct to {} for client {} ({}): {} (deny){}", key, id_,
               description_, by, *so_far);
      return;
    }
    log_with(log_fields(Errc::permission_denied, key), spdlog::level::warn,
             "policy: denied {} of '{}' to client {} ({}): {} (deny){}", broker::operation_name(op),
             key, id_, description_, by, *so_far);
  }
}

void Connection::log_dropped(std::string_view what, std::string_view key, std::size_t dropped) {
  if (auto so_far = sampled(drops_)) {
    log_with(log_fields(Errc::ok, key), spdlog::level::info,
             "client {} ({}): {} of '{}' dropped {} messages{}", id_, description_, what, key,
             dropped, *so_far);
  }
}

void Connection::reject(Errc code, std::string_view text) {
  if (tls_pending_handshake()) {
    // Nothing can reach a peer in the middle of a handshake, nor should anything else.
    log_with(log_fields(code), spdlog::level::debug,
             "client {} ({}): closed before its TLS handshake ended: {}", id_, description_, text);
    close();
    return;
  }
  error(0, code, text);
  if (errc_is_fatal(code) || !welcomed_ || code == Errc::too_many_connections) {
    drain_and_close();
  }
}

void Connection::drain_and_close() {
  if (closing_ || closed_) return;
  closing_ = true;
  mark_dirty();
  // A peer that never reads must not keep a closing connection alive.
  handshake_timer_.expires_after(kCloseGrace);
  handshake_timer_.async_wait([self = shared_from_this()](const asio::error_code& ec) {
    if (!ec) self->close();
  });
}

void Connection::unblock() {
  blocked_ = false;
  resume();
}

void Connection::resume() {
  if (closed_) return;
  if (!in_.empty()) in_.consume(process(in_.readable()));
  finish_input();
  server_.end_of_batch();
  wait_readable();
}

void Connection::close() {
  if (closed_) return;
  closed_ = true;
  handshake_timer_.cancel();
  server_.fds_in_flight(*this, -static_cast<int>(fds_.size()));
  fds_.clear();
  queued_.clear();
  out_.clear();
  note_output();
  uid_out_ = nullptr;
  server_.detach_output(identity_.uid);
  if (tls_ && tls_->established()) tls_->close_notify();
  asio::error_code ec;
  socket_.shutdown(Socket::shutdown_both, ec);
  socket_.close(ec);
  server_.forget(id_);
}

}  // namespace qbus::daemon
