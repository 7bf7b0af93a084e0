// AsyncClient's core (async_client.hpp): Client's session driven without waiting. Each
// operation appends its frames as Client's blocking call would, then, instead of waiting
// for the answer, registers a Pending under its correlation; on_readable() hands every
// frame that arrives to the Pending it answers (through Client::Impl::assemble for
// deliveries, as the blocking receives do) and completes it once whole.
#include <deque>
#include <unordered_map>
#include <unordered_set>

#include "client_impl.hpp"
#include "qbus/async_engine.hpp"

namespace qbus {
namespace {

class QbusCategory final : public std::error_category {
 public:
  const char* name() const noexcept override { return "qbus"; }
  std::string message(int code) const override {
    return std::string(errc_name(static_cast<Errc>(code)));
  }
};

}  // namespace

const std::error_category& error_category() noexcept {
  static const QbusCategory category;
  return category;
}

namespace detail {

using Result = AsyncEngine::Result;
using Handled = Session::Handled;

struct AsyncEngine::Impl {
  explicit Impl(ClientOptions options) : client(std::move(options)) {}

  // What an answered operation waits for.
  struct Pending {
    enum class Kind : std::uint8_t {
      ok,            // OK (or an ERROR): a confirmed send
      claim,         // CLAIM_INBOX's OK, or the ERROR that leaves the inbox unclaimed
      messages,      // DELIVERs up to LAST, or ERROR timeout: none
      region,        // REGION with its fd: a region of `size` bytes
      pool_refill,   // REGION for the region pool, or the ERROR that leaves it short
      subscribed,    // SUBSCRIBE_SUBJECT's OK, or the ERROR that ends it
      unsubscribed,  // UNSUBSCRIBE's OK or ERROR, for subscription `size`
    };
    Kind kind = Kind::ok;
    Op done;  // null once cancelled: its answer is still read, and dropped
    std::string context;
    DeliveryAssembler assembler;
    std::optional<Message> message;
    std::size_t size = 0;
    // A receive asked in acknowledgement mode for the library's sake: its message is acked
    // as it arrives and handed out as a plain one.
    bool auto_ack = false;
  };
  using Waiting = std::deque<std::pair<std::uint64_t, Op>>;

  Client client;
  std::unordered_map<std::uint64_t, Pending> pending;
  // Pipelined sends waiting for the output to drain below the high-water mark, in order.
  Waiting draining;
  // Subscriptions' waiting next()s, by subscription, each in order.
  std::unordered_map<std::uint64_t, Waiting> nexts;
  // Subscriptions whose handle is gone, waiting for their UNSUBSCRIBE's answer.
  std::unordered_set<std::uint64_t> released;
  // Subscriptions with an UNSUBSCRIBE on its way.
  std::unordered_set<std::uint64_t> closing;

  Client::Impl& ci() { return *client.impl_; }
  Session& session() { return client.impl_->session; }

  static void finish(Op& done, Result&& r) {
    if (done) std::exchange(done, nullptr)->complete(std::move(r));
  }
  static Result failure(const Error& e) { return Result{e.code(), false, e.what(), {}, {}}; }

  // Starts an operation: `append` writes its frames and returns the correlation of the one
  // answered. With `kind` it waits for that answer; without, it is a pipelined send, done
  // once buffered (or drained below the mark). Errors complete it at once.
  template <typename Append>
  std::uint64_t start(Op done, std::optional<Pending::Kind> kind, std::string context,
                      Append&& append) {
    std::uint64_t corr = 0;
    try {
      session().check_usable();
      corr = append();
      if (kind)
        pending.emplace(corr, Pending{*kind, std::move(done), std::move(context), {}, {}, 0});
    } catch (const Error& e) {
      finish(done, failure(e));
      return 0;
    }
    write();
    if (const Error* broken = session().broken()) {  // the write failed: not sent
      finish(done, failure(*broken));
      return 0;
    }
    if (!kind) {
      if (session().has_output() && output_size() > kAsyncOutputHighWater) {
        draining.emplace_back(corr, std::move(done));
        return corr;
      }
      finish(done, Result{});
      return 0;
    }
    return pending.contains(corr) ? corr : 0;
  }

  std::size_t output_size() { return session().out().size(); }

  // Writes what the socket takes; a failure ends every operation.
  void write() {
    try {
      session().write_some();
    } catch (const Error& e) {
      fail_all(failure(e));
      return;
    }
    while (!draining.empty() && output_size() <= kAsyncOutputHighWater) {
      Op done = std::move(draining.front().second);
      draining.pop_front();
      finish(done, Result{});
    }
  }

  Handled on_frame(const proto::Header& h, proto::Bytes b) {
    // Not awaited: a subscription's frame (Client::Impl's stream handler keeps it), or a
    // pipelined send's failure (counted).
    const auto it = pending.find(h.correlation);
    if (it == pending.end()) return Handled::unsolicited;
    Pending& p = it->second;
    if (p.kind == Pending::Kind::subscribed || p.kind == Pending::Kind::unsubscribed) {
      subscription_answer(it, h, b);
      return Handled::more;
    }
    if (p.kind == Pending::Kind::messages) {
      const auto fed = ci().assemble(p.assembler, h, b, p.context,
                                     [&](const MessageView& v) { p.message = v.to_message(); });
      if (fed == Client::Impl::Fed::part) return Handled::more;
      if (fed == Client::Impl::Fed::message) {
        if ((h.flags & proto::kFlagLast) != 0) close(it, Result{});
        return Handled::more;
      }
    } else if (p.kind == Pending::Kind::pool_refill) {
      if (h.type == proto::FrameType::region) {
        proto::RegionGrantBody g;
        if (proto::decode_region_grant(b, g) != Errc::ok || g.size != p.size) {
          session().fail(Errc::protocol_violation, p.context + ": malformed REGION");
        }
        ci().region_pool->add(g.region_id, p.size, session().take_frame_fd());
      } else if (h.type != proto::FrameType::error) {
        session().fail(Errc::protocol_violation, p.context + ": unexpected answer");
      }  // an ERROR (the uid's quota) only leaves the pool short
      close(it, Result{});
      return Handled::more;
    } else if (p.kind == Pending::Kind::region && h.type == proto::FrameType::region) {
      proto::RegionGrantBody g;
      if (proto::decode_region_grant(b, g) != Errc::ok) {
        session().fail(Errc::protocol_violation, p.context + ": malformed REGION");
      }
      Result r;
      // A region granted to a cancelled allocation is released when `r` goes.
      r.region = ci().granted_region(g, session().take_frame_fd(), p.size);
      close(it, std::move(r));
      return Handled::more;
    } else if (h.type == proto::FrameType::ok || h.type == proto::FrameType::pong) {
      close(it, Result{});
      return Handled::more;
    }
    if (p.kind == Pending::Kind::claim) ci().inbox_claimed = false;  // refused: ask again
    if (h.type != proto::FrameType::error) {
      session().fail(Errc::protocol_violation, p.context + ": unexpected answer");
    }
    proto::ErrorBody e;
    if (p.kind == Pending::Kind::messages && proto::decode_error(b, e) == Errc::ok &&
        e.code == static_cast<std::uint16_t>(Errc::timeout)) {
      close(it, Result{});  // nothing came in time: not a failure
      return Handled::more;
    }
    if (p.kind == Pending::Kind::region && p.done && ci().region_pool &&
        proto::decode_error(b, e) == Errc::ok &&
        e.code == static_cast<std::uint16_t>(Errc::quota_exceeded) &&
        ci().region_pool->drain() > 0) {
      // The uid's quota is short: the pool's regions give way (their releases go out
      // first) and the allocation is asked again, as Client's allocate_pooled does.
      Pending again = std::move(p);
      pending.erase(it);
      const std::uint64_t corr = ci().ask_region(again.size);
      pending.emplace(corr, std::move(again));
      return Handled::more;
    }
    close(it, failure(session().error_of(b, p.context)));
    return Handled::more;
  }

  // The answer of `it` is whole: complete it, or, cancelled, give back what it brought.
  void close(std::unordered_map<std::uint64_t, Pending>::iterator it, Result&& r) {
    Pending p = std::move(it->second);
    pending.erase(it);
    if (p.message && !p.done) {
      // A message handed to a cancelled receive: in acknowledgement mode it goes back to
      // its queue; without (protocol 1), the broker has let go of it already.
      if (p.message->delivery_tag() != 0) nack(*p.message);
      return;
    }
    if (p.message && p.auto_ack && p.message->delivery_tag() != 0) {
      proto::append_frame(session().out(), session().next_correlation(), 0,
                          proto::Ack{p.message->delivery_tag(), false});
      Access::clear_delivery_tag(*p.message);
    }
    if (r.code == Errc::ok && !r.aborted) r.message = std::move(p.message);
    finish(p.done, std::move(r));
  }

  // A subscription's own answer: SUBSCRIBE_SUBJECT's confirmation or refusal, or
  // UNSUBSCRIBE's; a released subscription is forgotten once the latter came.
  void subscription_answer(std::unordered_map<std::uint64_t, Pending>::iterator it,
                           const proto::Header& h, proto::Bytes b) {
    const std::uint64_t sub =
        it->second.kind == Pending::Kind::subscribed ? h.correlation : it->second.size;
    // Checked while the operation is still pending: a broken session fails it with the rest.
    if (h.type != proto::FrameType::ok && h.type != proto::FrameType::error) {
      session().fail(Errc::protocol_violation, it->second.context + ": unexpected answer");
    }
    std::optional<Error> refused;
    if (h.type == proto::FrameType::error) refused = session().error_of(b, it->second.context);
    Pending p = std::move(it->second);
    pending.erase(it);
    if (p.kind == Pending::Kind::unsubscribed) closing.erase(sub);
    const auto st = ci().subscriptions.find(sub);
    Result r;
    if (refused) {
      const Error& e = *refused;
      if (st != ci().subscriptions.end() && !st->second.ended && !st->second.cancelled) {
        // A refused subscription ends; an UNSUBSCRIBE refused after it ended or was
        // cancelled had nothing left to do.
        if (p.kind == Pending::Kind::subscribed) st->second.ended = e;
        r = failure(e);
      }
    } else if (p.kind == Pending::Kind::unsubscribed && st != ci().subscriptions.end()) {
      st->second.cancelled = true;
    }
    finish(p.done, std::move(r));
    if (p.kind == Pending::Kind::unsubscribed && released.contains(sub)) {
      forget(sub);
    } else {
      serve(sub);
    }
  }

  // Hands what subscription `sub` has to its waiting next()s, in order.
  void serve(std::uint64_t sub) {
    const auto w = nexts.find(sub);
    if (w == nexts.end()) return;
    const auto st = ci().subscriptions.find(sub);
    auto& queue = w->second;
    while (!queue.empty()) {
      Result r;
      if (st == ci().subscriptions.end()) {
        r.aborted = true;
      } else if (!st->second.ready.empty()) {
        r.message = st->second.take();
      } else if (st->second.ended) {
        r = failure(*st->second.ended);
      } else if (!st->second.cancelled) {
        break;
      }
      Op done = std::move(queue.front().second);
      queue.pop_front();
      finish(done, std::move(r));
    }
    if (queue.empty()) nexts.erase(w);
  }

  void serve_all() {
    std::vector<std::uint64_t> subs;
    subs.reserve(nexts.size());
    for (const auto& [sub, queue] : nexts)
      subs.push_back(sub);
    for (const std::uint64_t sub : subs)
      serve(sub);
  }

  // Drops subscription `sub`, giving back what it kept in acknowledgement mode.
  void forget(std::uint64_t sub) noexcept {
    released.erase(sub);
    const auto st = ci().subscriptions.find(sub);
    if (st == ci().subscriptions.end()) return;
    if (st->second.ack && !session().broken()) {
      try {
        for (const Message& m : st->second.ready)
          if (m.delivery_tag() != 0) nack(m);
      } catch (const std::exception&) {
        // Not appended: held until the ack timeout or the connection closes.
      }
    }
    ci().subscriptions.erase(st);
  }

  void nack(const Message& m) {
    proto::Nack n;
    n.delivery_tag = m.delivery_tag();
    n.action = proto::NackAction::requeue;
    proto::append_frame(session().out(), session().next_correlation(), 0, n);
  }

  void fail_all(const Result& r) {
    // A failed connection still hands out what subscriptions kept; a shutdown does not.
    if (!r.aborted) serve_all();
    auto all = std::move(pending);
    pending.clear();
    auto waiting = std::move(draining);
    draining.clear();
    auto subs = std::move(nexts);
    nexts.clear();
    const auto copy = [&] { return Result{r.code, r.aborted, r.text, {}, {}}; };
    for (auto& [corr, p] : all)
      finish(p.done, copy());
    for (auto& [corr, done] : waiting)
      finish(done, copy());
    for (auto& [sub, queue] : subs)
      for (auto& [id, done] : queue)
        finish(done, copy());
  }
};

AsyncEngine::AsyncEngine(ClientOptions options)
    : impl_(std::make_unique<Impl>(std::move(options))) {}

AsyncEngine::~AsyncEngine() = default;

const SessionInfo& AsyncEngine::session() const noexcept {
  return impl_->client.session();
}
const SendFailures& AsyncEngine::send_failures() const noexcept {
  return impl_->client.send_failures();
}
int AsyncEngine::fd() const noexcept {
  return impl_->client.fd();
}
bool AsyncEngine::wants_write() const noexcept {
  return impl_->client.wants_write();
}
bool AsyncEngine::busy() const noexcept {
  return !impl_->pending.empty() || !impl_->draining.empty() || !impl_->nexts.empty();
}

std::uint64_t AsyncEngine::send(std::string_view key, std::span<const std::byte> payload,
                                const SendOptions& options, Op done) {
  auto& ci = impl_->ci();
  std::optional<Impl::Pending::Kind> kind;
  if (options.confirm) kind = Impl::Pending::Kind::ok;
  return impl_->start(std::move(done), kind, "send to '" + std::string(key) + "'", [&] {
    const auto props = message_properties(options);
    if (!props.empty()) ci.require_v2("send with headers, a ttl, a delay or a priority");
    return ci.append_send(key, payload, options.confirm ? proto::kFlagConfirm : 0,
                          props.empty() ? nullptr : &props);
  });
}

std::uint64_t AsyncEngine::receive(std::string_view key, std::chrono::milliseconds timeout,
                                   bool ack, Op done) {
  auto& ci = impl_->ci();
  // The protocol cannot take back a RECEIVE, so a cancelled one may still be handed a
  // message. A receive that can be cancelled is asked in acknowledgement mode (protocol
  // 2): that message then goes back to its queue instead of being lost, and one that
  // reaches a live receive is acked at once.
  const bool auto_ack =
      !ack && done && done->cancellable() && ci.session.info().protocol_version >= 2;
  const std::uint64_t id =
      impl_->start(std::move(done), Impl::Pending::Kind::messages, "receive", [&] {
        if (ack) ci.require_v2("receive in acknowledgement mode");
        return ci.ask_receive(key, 1, timeout, ack || auto_ack ? proto::kFlagAck : 0).first;
      });
  if (const auto it = impl_->pending.find(id); it != impl_->pending.end()) {
    it->second.auto_ack = auto_ack;
  }
  return id;
}

std::uint64_t AsyncEngine::request(std::string_view key, std::span<const std::byte> payload,
                                   std::chrono::milliseconds timeout, const Headers& headers,
                                   Op done) {
  auto& ci = impl_->ci();
  return impl_->start(std::move(done), Impl::Pending::Kind::messages,
                      "request to '" + std::string(key) + "'",
                      [&] { return ci.append_request(key, payload, timeout, headers); });
}

std::uint64_t AsyncEngine::receive_direct(std::chrono::milliseconds timeout, Op done) {
  auto& ci = impl_->ci();
  return impl_->start(std::move(done), Impl::Pending::Kind::messages, "receive_direct", [&] {
    if (!ci.inbox_claimed) {
      // Pipelined ahead of the receive, which the broker then serves as the inbox's owner;
      // a refused claim shows as the receive's not_inbox_owner.
      const std::uint64_t claim = ci.session.next_correlation();
      proto::append_empty(ci.session.out(), proto::FrameType::claim_inbox, claim);
      impl_->pending.emplace(claim,
                             Impl::Pending{Impl::Pending::Kind::claim, nullptr, "claim", {}, {}});
      ci.inbox_claimed = true;  // until refused: one claim for the receives behind it
    }
    proto::ReceiveDirect r;
    r.timeout_ms = to_wire_timeout(timeout);
    r.max_count = 1;
    const std::uint64_t corr = ci.session.next_correlation();
    proto::append_receive_direct(ci.session.out(), corr, r);
    return corr;
  });
}

std::uint64_t AsyncEngine::send_direct(bool by_pid, std::uint64_t target,
                                       std::span<const std::byte> payload,
                                       const DirectOptions& options, Op done) {
  auto& ci = impl_->ci();
  std::optional<Impl::Pending::Kind> kind;
  if (options.confirm) kind = Impl::Pending::Kind::ok;
  const std::string context =
      std::string("direct send to ") + (by_pid ? "pid " : "client ") + std::to_string(target);
  return impl_->start(std::move(done), kind, context, [&] {
    return ci.append_send_direct(by_pid ? proto::TargetKind::pid : proto::TargetKind::client_id,
                                 target, 0, payload, options);
  });
}

std::uint64_t AsyncEngine::reply(const Message& request, std::span<const std::byte> payload,
                                 Op done) {
  auto& ci = impl_->ci();
  return impl_->start(std::move(done), std::nullopt, "reply", [&] {
    if (!request.is_request()) {
      throw Error(Errc::invalid_argument, "reply: the message is not a request");
    }
    return ci.append_send_direct(proto::TargetKind::client_id, request.sender().client_id,
                                 request.request_id(), payload, DirectOptions{{}, false});
  });
}

std::uint64_t AsyncEngine::publish(std::string_view subject, std::span<const std::byte> payload,
                                   const PublishOptions& options, Op done) {
  auto& ci = impl_->ci();
  std::optional<Impl::Pending::Kind> kind;
  if (options.confirm) kind = Impl::Pending::Kind::ok;
  return impl_->start(std::move(done), kind, "publish to '" + std::string(subject) + "'", [&] {
    ci.require_v2("publish");
    ci.check_subject(subject, /*pattern=*/false);
    ci.check_payload(payload.size());
    ci.append_properties(message_properties(options.headers), /*queue_message=*/false);
    const std::uint64_t corr = ci.session.next_correlation();
    const auto flags = static_cast<std::uint16_t>((options.confirm ? proto::kFlagConfirm : 0) |
                                                  (options.retain ? proto::kFlagRetain : 0));
    proto::append_frame(ci.session.out(), corr, flags, proto::Publish{subject, payload});
    return corr;
  });
}

std::uint64_t AsyncEngine::allocate_region(std::size_t size, Op done) {
  auto& ci = impl_->ci();
  const std::string context = "allocate a region of " + std::to_string(size) + " bytes";
  const auto ask = [&](Op op, Impl::Pending::Kind kind, const std::string& what) {
    const std::uint64_t id =
        impl_->start(std::move(op), kind, what, [&] { return ci.ask_region(size); });
    if (const auto it = impl_->pending.find(id); it != impl_->pending.end()) it->second.size = size;
    return id;
  };
  detail::RegionPool* pool = ci.region_pool.get();
  if (pool == nullptr || !pool->poolable(size) || impl_->session().broken()) {
    return ask(std::move(done), Impl::Pending::Kind::region, context);
  }
  // As Client's allocate_pooled, except that a region still being populated is not waited
  // for (the event loop goes on) and the refills' grants reach the pool as they come.
  auto ready = pool->take(size, /*wait=*/false);
  const std::size_t n = pool->wanted(size);  // evictions' releases go out first
  std::uint64_t id = 0;
  if (!ready) id = ask(std::move(done), Impl::Pending::Kind::region, context);
  for (std::size_t i = 0; i < n; ++i)
    ask(nullptr, Impl::Pending::Kind::pool_refill, context + " for the pool");
  if (ready) {
    Result r;
    r.region = ci.writable_region(ready->id, size, std::move(ready->fd), std::move(ready->mapping));
    Impl::finish(done, std::move(r));
  }
  return id;
}

std::uint64_t AsyncEngine::send_region(std::string_view key, Region&& region,
                                       const SendOptions& options, Op done) {
  auto& ci = impl_->ci();
  std::optional<Impl::Pending::Kind> kind;
  if (options.confirm) kind = Impl::Pending::Kind::ok;
  Region spent = std::move(region);  // given up by the send, or dropped on a refusal
  return impl_->start(std::move(done), kind, "send to '" + std::string(key) + "'", [&] {
    auto* st = Access::state(spent);
    if (st == nullptr) throw Error(Errc::invalid_argument, "send: the Region is empty");
    const auto props = message_properties(options);
    if (!props.empty()) ci.require_v2("send with headers, a ttl, a delay or a priority");
    return ci.append_region_send(*st, proto::RegionTarget::queue, 0, key, 0, st->size, true,
                                 std::chrono::milliseconds(0), options.confirm, &props);
  });
}

std::uint64_t AsyncEngine::publish_region(std::string_view subject, Region&& region,
                                          const PublishOptions& options, Op done) {
  auto& ci = impl_->ci();
  std::optional<Impl::Pending::Kind> kind;
  if (options.confirm) kind = Impl::Pending::Kind::ok;
  Region spent = std::move(region);
  return impl_->start(std::move(done), kind, "publish to '" + std::string(subject) + "'", [&] {
    ci.require_v2("publish");
    ci.check_subject(subject, /*pattern=*/false);
    if (options.retain) {
      throw Error(Errc::invalid_argument,
                  "publish to '" + std::string(subject) + "': a region cannot be retained");
    }
    auto* st = Access::state(spent);
    if (st == nullptr) throw Error(Errc::invalid_argument, "publish: the Region is empty");
    const auto props = message_properties(options.headers);
    return ci.append_region_send(*st, proto::RegionTarget::subject, 0, subject, 0, st->size, true,
                                 std::chrono::milliseconds(0), options.confirm, &props);
  });
}

void AsyncEngine::ack(const Message& message) {
  if (message.delivery_tag() == 0) {
    throw Error(Errc::invalid_argument, "ack: the message was not received in ack mode");
  }
  impl_->session().check_usable();
  proto::append_frame(impl_->session().out(), impl_->session().next_correlation(), 0,
                      proto::Ack{message.delivery_tag(), false});
  impl_->write();
}

void AsyncEngine::nack(const Message& message) {
  if (message.delivery_tag() == 0) {
    throw Error(Errc::invalid_argument, "nack: the message was not received in ack mode");
  }
  impl_->session().check_usable();
  impl_->nack(message);
  impl_->write();
}

std::uint64_t AsyncEngine::subscribe(std::string_view key, const SubscribeOptions& options) {
  auto& ci = impl_->ci();
  const std::uint64_t sub = ci.open_subscription(key, options);
  auto& st = ci.subscriptions.at(sub);
  st.keep_messages = kAsyncKeepMessages;
  st.keep_bytes = kAsyncKeepBytes;
  impl_->write();
  return sub;
}

std::uint64_t AsyncEngine::subscribe_subject(std::string_view pattern,
                                             const SubjectOptions& options) {
  auto& ci = impl_->ci();
  const std::uint64_t sub = ci.open_subject_subscription(pattern, options);
  auto& st = ci.subscriptions.at(sub);
  st.keep_messages = options.max_messages != 0 ? options.max_messages : kAsyncKeepMessages;
  st.keep_bytes = options.max_bytes != 0 ? options.max_bytes : kAsyncKeepBytes;
  impl_->pending.emplace(sub, Impl::Pending{Impl::Pending::Kind::subscribed,
                                            nullptr,
                                            "subscribe to subjects '" + std::string(pattern) + "'",
                                            {},
                                            {},
                                            0});
  impl_->write();
  return sub;
}

std::uint64_t AsyncEngine::next(std::uint64_t subscription, Op done) {
  auto& subs = impl_->ci().subscriptions;
  if (!subs.contains(subscription) || impl_->released.contains(subscription)) {
    Impl::finish(done, Result{Errc::ok, true, {}, {}, {}});
    return 0;
  }
  const std::uint64_t id = impl_->session().next_correlation();
  auto& queue = impl_->nexts[subscription];
  queue.emplace_back(id, std::move(done));
  impl_->serve(subscription);
  const auto w = impl_->nexts.find(subscription);
  if (w == impl_->nexts.end() || w->second.back().first != id) return 0;  // served
  if (const Error* broken = impl_->session().broken()) {
    Op op = std::move(w->second.back().second);
    w->second.pop_back();
    if (w->second.empty()) impl_->nexts.erase(w);
    Impl::finish(op, Impl::failure(*broken));
    return 0;
  }
  return id;
}

std::uint64_t AsyncEngine::unsubscribe(std::uint64_t subscription, Op done) {
  auto& ci = impl_->ci();
  const auto st = ci.subscriptions.find(subscription);
  if (st == ci.subscriptions.end() || st->second.cancelled || st->second.ended) {
    Impl::finish(done, Result{});
    return 0;
  }
  const std::uint64_t id = impl_->start(std::move(done), Impl::Pending::Kind::unsubscribed,
                                        "unsubscribe from '" + st->second.key + "'",
                                        [&] { return ci.append_unsubscribe(subscription); });
  if (const auto it = impl_->pending.find(id); it != impl_->pending.end()) {
    it->second.size = subscription;
    impl_->closing.insert(subscription);
  }
  return id;
}

void AsyncEngine::release(std::uint64_t subscription) noexcept {
  auto& impl = *impl_;
  if (const auto w = impl.nexts.find(subscription); w != impl.nexts.end()) {
    auto queue = std::move(w->second);
    impl.nexts.erase(w);
    for (auto& [id, done] : queue)
      Impl::finish(done, Result{Errc::ok, true, {}, {}, {}});
  }
  const auto st = impl.ci().subscriptions.find(subscription);
  if (st == impl.ci().subscriptions.end()) return;
  if (!st->second.cancelled && !st->second.ended && !impl.session().broken()) {
    try {
      impl.released.insert(subscription);
      if (impl.closing.contains(subscription)) return;  // forgotten on that one's answer
      const std::uint64_t corr = impl.ci().append_unsubscribe(subscription);
      Impl::Pending p{Impl::Pending::Kind::unsubscribed, nullptr, "unsubscribe", {}, {}, 0};
      p.size = subscription;
      impl.pending.emplace(corr, std::move(p));
      impl.closing.insert(subscription);
      impl.write();
      return;
    } catch (const std::exception&) {
      // Not cancelled: what comes for it is dropped (in acknowledgement mode, held until
      // the connection closes), as the blocking Subscription does.
      impl.released.erase(subscription);
      st->second.orphaned = true;
      st->second.ready.clear();
      st->second.ready_bytes = 0;
      return;
    }
  }
  impl.forget(subscription);
  try {
    impl.write();  // its nacks
  } catch (const std::exception&) {
  }
}

AsyncEngine::StreamStatus AsyncEngine::status(std::uint64_t subscription) const noexcept {
  const auto& subs = impl_->ci().subscriptions;
  const auto st = subs.find(subscription);
  if (st == subs.end()) return {};
  const auto& s = st->second;
  return {!s.cancelled && !s.ended, s.ready.size(), s.dropped};
}

bool AsyncEngine::cancel(std::uint64_t id) {
  if (const auto it = impl_->pending.find(id); it != impl_->pending.end() && it->second.done) {
    Impl::finish(it->second.done, Result{Errc::ok, true, {}, {}, {}});
    return true;
  }
  const auto take = [&](Impl::Waiting& d) {
    for (auto it = d.begin(); it != d.end(); ++it) {
      if (it->first == id) {
        Op done = std::move(it->second);
        d.erase(it);
        Impl::finish(done, Result{Errc::ok, true, {}, {}, {}});
        return true;
      }
    }
    return false;
  };
  if (take(impl_->draining)) return true;
  for (auto it = impl_->nexts.begin(); it != impl_->nexts.end(); ++it) {
    if (take(it->second)) {
      if (it->second.empty()) impl_->nexts.erase(it);
      return true;
    }
  }
  return false;
}

void AsyncEngine::on_readable() {
  auto& s = impl_->session();
  // Bounded, so that a busy stream does not hold the executor: what stays unread makes
  // the socket readable again, and the other handlers get their turn first.
  constexpr int kReadsPerWakeup = 64;
  try {
    int reads = 0;
    do {
      s.handle_frames(
          [&](const proto::Header& h, proto::Bytes b) { return impl_->on_frame(h, b); });
      impl_->serve_all();  // waiting next()s take deliveries before any are dropped
    } while (++reads < kReadsPerWakeup && s.read_some());
  } catch (const Error& e) {
    // An answer that could not be taken in (a region that would not map) leaves its
    // operation unanswered and the stream in doubt: the connection ends as a whole.
    if (!s.broken()) {
      try {
        s.fail(e.code(), e.what());
      } catch (const Error&) {
      }
    }
    impl_->fail_all(Impl::failure(e));
    return;
  } catch (const std::bad_alloc&) {
    try {
      s.fail(Errc::out_of_memory, "out of memory reading answers");
    } catch (const Error&) {
    }
    impl_->fail_all(Result{Errc::out_of_memory, false, "out of memory reading answers", {}, {}});
    return;
  }
  impl_->write();
}

void AsyncEngine::on_writable() {
  impl_->write();
}

void AsyncEngine::abort_all() {
  impl_->fail_all(Result{Errc::ok, true, {}, {}, {}});
}

void AsyncEngine::fail(Errc code, const std::string& text) {
  auto& s = impl_->session();
  if (!s.broken()) {
    try {
      s.fail(code, text);
    } catch (const Error&) {
    }
  }
  impl_->fail_all(Result{code, false, text, {}, {}});
}

}  // namespace detail
}  // namespace qbus
