#include "broker/topics.hpp"

#include <algorithm>

#include "broker/core.hpp"
#include "qbus/proto/headers.hpp"
#include "qbus/proto/subject.hpp"

namespace qbus::broker {

Topics::Topics(Core& core) : core_(core), sink_(core.sink) {}

Topics::~Topics() {
  // Buffers and retained messages hold region references in the Core's region table,
  // which outlives this registry: give them back. The subscriptions belong to the peers,
  // which outlive this registry too, but their buffered messages are owned here.
  for (const auto& [peer, tp] : by_peer_) {
    for (const auto& s : tp->subscriptions) {
      for (const TopicSubscription::Entry& e : s->buffer)
        unref(e.message);
      s->buffer.clear();
    }
  }
  for (auto& [subject, m] : retained_)
    unref(m);
  retained_.clear();
}

// ---- matching ---------------------------------------------------------------------------

void Topics::take(TopicNode& n) {
  for (TopicSubscription* s : n.plain)
    targets_.push_back(s);
  for (auto& g : n.groups)
    if (TopicSubscription* s = pick(*g)) targets_.push_back(s);
}

void Topics::match(TopicNode& n, std::string_view rest) {
  if (rest.empty()) {
    take(n);
    return;
  }
  if (n.rest) take(*n.rest);  // `>`: one or more tokens remain
  const std::string_view token = proto::next_token(rest);
  if (!n.children.empty()) {
    auto it = n.children.find(token);
    if (it != n.children.end()) match(*it->second, rest);
  }
  if (n.star) match(*n.star, rest);
}

TopicSubscription* Topics::pick(TopicGroup& g) {
  // In turn, preferring a member that can take the message at once, then one with room.
  const std::size_t n = g.members.size();
  TopicSubscription* with_room = nullptr;
  for (std::size_t i = 0; i < n; ++i) {
    TopicSubscription* s = g.members[(g.next + i) % n];
    if (s->buffer.empty() && sink_.wants_more(s->peer)) {
      g.next = (g.next + i + 1) % n;
      return s;
    }
    if (!with_room && s->has_room_for(matching_bytes_)) with_room = s;
  }
  TopicSubscription* s = with_room ? with_room : g.members[g.next % n];
  g.next = (g.next + 1) % n;
  return s;
}

TopicSubscription* Topics::full_blocking(std::size_t bytes) const {
  for (TopicSubscription* s : targets_)
    if (s->slow == proto::SlowPolicy::block && !s->has_room_for(bytes)) return s;
  return nullptr;
}

// ---- publishing -------------------------------------------------------------------------

SendOutcome Topics::publish(PeerId from, Peer& sender, const PublishSend& m) {
  if (m.retain && m.payload.empty()) return retain(sender.id, m);  // clears, delivers nothing
  targets_.clear();
  matching_bytes_ = m.payload.size() + m.headers.size();
  match(root_, m.subject);
  if (TopicSubscription* s = full_blocking(matching_bytes_)) {
    // Nothing is delivered (nor retained) until every blocking subscription has room, so
    // that the retry carries the message out once.
    s->blocked.push_back(from);
    sender.topics.blocked_on = s;
    return SendOutcome{SendResult::blocked, Errc::ok, {}};
  }
  if (m.retain) {
    // A refused retain refuses the publish as a whole: the publisher hears one answer.
    if (auto r = retain(sender.id, m); r.result != SendResult::accepted) return r;
  }
  ++totals_.published;
  if (targets_.empty()) {
    ++totals_.unmatched;
    return SendOutcome{};
  }
  Published* stored = nullptr;
  // A pattern ends at one trie node and a subject visits a node once: each subscription is
  // in targets_ once, and one cut off below (freed) is never met again in this loop.
  for (TopicSubscription* s : targets_) {
    ++s->matched;
    if (s->buffer.empty() && sink_.wants_more(s->peer)) {
      deliver_now(*s, sender.id, m.subject, m.payload, m.headers, m.region, false);
      continue;
    }
    if (!stored) {
      stored = store(sender.id, m);
      ++stored->refs;  // held across the loop, so that a drop cannot free it meanwhile
    }
    buffer(*s, *stored, false);
  }
  if (stored) unref(stored);
  return SendOutcome{};
}

Published* Topics::store(const Identity& sender, const PublishSend& m) {
  auto* p = new Published{sender,
                          std::string(m.subject),
                          {m.payload.begin(), m.payload.end()},
                          {m.headers.begin(), m.headers.end()},
                          m.region,
                          0};
  if (p->region) core_.regions.add_message_ref(p->region.id);
  return p;
}

void Topics::unref(Published* m) {
  if (--m->refs != 0) return;
  if (m->region) core_.regions.drop_message_ref(m->region.id);
  delete m;
}

SendOutcome Topics::retain(const Identity& sender, const PublishSend& m) {
  auto it = retained_.find(m.subject);
  const auto give_back = [&](Published* old) {
    core_.uncharge(old->sender.uid, old->charge());
    retained_bytes_ -= old->charge();
    unref(old);
  };
  if (m.payload.empty()) {  // clears it
    if (it != retained_.end()) {
      give_back(it->second);
      retained_.erase(it);
    }
    return SendOutcome{};
  }
  if (it == retained_.end() && retained_.size() >= core_.limits.max_retained) {
    return rejected(Errc::quota_exceeded, "the broker keeps its maximum of " +
                                              std::to_string(core_.limits.max_retained) +
                                              " retained messages (limits.max_retained)");
  }
  const std::size_t bytes = m.payload.size() + m.headers.size();
  if (auto refusal = core_.over_quota(sender, bytes)) return *refusal;
  Published* p = store(sender, m);
  p->refs = 1;
  core_.charge(sender, bytes);
  retained_bytes_ += bytes;
  if (it != retained_.end()) {
    give_back(it->second);
    it->second = p;
  } else {
    retained_.emplace(std::string(m.subject), p);
  }
  return SendOutcome{};
}

// ---- delivering and buffering -----------------------------------------------------------

void Topics::deliver_now(TopicSubscription& s, const Identity& sender, std::string_view subject,
                         Bytes payload, Bytes headers, RegionRef region, bool retained) {
  Bytes block = headers;
  if (s.gap != 0 || retained) {
    header_scratch_.assign(headers.begin(), headers.end());
    if (s.gap != 0) {
      proto::append_header(header_scratch_, proto::kHeaderDropped, std::to_string(s.gap));
    }
    if (retained) proto::append_header(header_scratch_, proto::kHeaderRetained, "1");
    block = header_scratch_;
    s.gap = 0;
  }
  const DeliveryExtras extras{0, 1, block};
  if (region) core_.regions.hold(s.peer, region.id);
  sink_.deliver(s.peer, s.id, true,
                Delivery{subject, sender, 0, payload, region, block.empty() ? nullptr : &extras});
  ++s.delivered;
  ++totals_.delivered;
}

void Topics::deliver(TopicSubscription& s, const Published& m, bool retained) {
  deliver_now(s, m.sender, m.subject, m.payload, m.headers, m.region, retained);
}

bool Topics::buffer(TopicSubscription& s, Published& m, bool retained) {
  const std::size_t bytes = m.charge();
  const auto fits = [&] { return s.has_room_for(bytes) && !core_.over_quota(s.subscriber, bytes); };
  if (!fits()) {
    if (s.slow == proto::SlowPolicy::disconnect) {
      cut_off(s);
      return false;
    }
    // drop_oldest, and block when the quota rather than the buffer is spent: waiting for a
    // quota that other queues and subscriptions of the uid hold could wait forever.
    const std::size_t before = s.buffer.size();
    while (!s.buffer.empty() && !fits())
      drop_front(s);
    // Drops make room that no drain announces (the buffer may even be empty now): a
    // publisher blocked here tries again.
    if (s.buffer.size() != before && !s.blocked.empty()) release_blocked(s);
    if (!fits()) {  // the quota is spent elsewhere
      ++s.dropped;
      ++s.gap;
      ++totals_.dropped;
      return true;
    }
  }
  ++m.refs;
  s.buffer.push_back({&m, retained});
  s.buffered_bytes += bytes;
  core_.charge(s.subscriber, bytes);
  return true;
}

TopicSubscription::Entry Topics::pop_front(TopicSubscription& s) {
  const TopicSubscription::Entry e = s.buffer.front();
  s.buffer.pop_front();
  const std::size_t bytes = e.message->charge();
  s.buffered_bytes -= bytes;
  core_.uncharge(s.subscriber.uid, bytes);
  return e;
}

void Topics::drop_front(TopicSubscription& s) {
  unref(pop_front(s).message);
  ++s.dropped;
  ++s.gap;
  ++totals_.dropped;
}

void Topics::drain(TopicSubscription& s) {
  bool freed = false;
  while (!s.buffer.empty() && sink_.wants_more(s.peer)) {
    const TopicSubscription::Entry e = pop_front(s);
    deliver(s, *e.message, e.retained);
    unref(e.message);
    freed = true;
  }
  if (freed && !s.blocked.empty() && !s.full()) release_blocked(s);
}

void Topics::release_blocked(TopicSubscription& s) {
  std::vector<PeerId> blocked;
  blocked.swap(s.blocked);
  for (const PeerId producer : blocked) {
    if (Peer* p = core_.peers.find(producer)) p->topics.blocked_on = nullptr;
    sink_.resume(producer);
  }
}

void Topics::output_ready(Peer& p) {
  for (auto& s : p.topics.subscriptions)
    if (!s->buffer.empty()) drain(*s);
}

void Topics::cut_off(TopicSubscription& s) {
  const PeerId peer = s.peer;
  Peer* p = core_.peers.find(peer);
  // A second subscription of a connection already cut ends too, but the connection is
  // counted and closed once.
  const bool first = p == nullptr || !p->topics.cut;
  if (p) p->topics.cut = true;
  const std::string text =
      "subscription to '" + s.pattern + "' had " + std::to_string(s.buffer.size()) + " messages (" +
      std::to_string(s.buffered_bytes) + " bytes) unread and its policy is disconnect";
  sink_.fail(peer, s.id, Errc::slow_subscriber, text);
  // The edge closes the connection later (its other subscriptions go then); this one's
  // buffer goes now, so that no publisher meets it again.
  if (p) unsubscribe(*p, s.id);
  if (!first) return;
  ++totals_.disconnected;
  sink_.cut_off(peer, Errc::slow_subscriber, text);
}

// ---- subscribing ------------------------------------------------------------------------

SendOutcome Topics::subscribe(PeerId peer, Peer& p, const SubjectSubscribe& req, bool confirm) {
  const Limits& limits = core_.limits;
  auto& mine = p.topics.subscriptions;
  if (mine.size() >= limits.max_subscriptions) {
    return rejected(Errc::too_many_subscriptions,
                    "this connection holds " + std::to_string(mine.size()) +
                        " subject subscriptions (limits.max_subscriptions)");
  }
  UidUsage& usage = core_.accounting.of(p.id.uid);
  if (usage.subscriptions >= limits.uid_max_subscriptions) {
    return rejected(Errc::too_many_subscriptions,
                    "uid " + std::to_string(p.id.uid) + " holds " +
                        std::to_string(usage.subscriptions) +
                        " subject subscriptions (limits.uid_max_subscriptions " +
                        std::to_string(limits.uid_max_subscriptions) + ")");
  }
  for (const auto& s : mine) {
    if (s->id == req.correlation) {
      return rejected(Errc::malformed_frame,
                      "correlation " + std::to_string(req.correlation) +
                          " already names a subscription of this connection");
    }
  }
  auto s = std::make_unique<TopicSubscription>();
  s->peer = peer;
  s->id = req.correlation;
  s->subscriber = p.id;
  s->pattern = std::string(req.pattern);
  s->group = std::string(req.group);
  s->slow = req.slow == proto::SlowPolicy::use_default ? proto::SlowPolicy::drop_oldest : req.slow;
  s->max_messages = req.max_messages == 0
                        ? limits.subscription_max_messages
                        : std::min(req.max_messages, limits.subscription_max_messages);
  s->max_bytes = req.max_bytes == 0 ? limits.subscription_max_bytes
                                    : std::min(req.max_bytes, limits.subscription_max_bytes);
  // The trie path of the pattern, made as needed.
  TopicNode* n = &root_;
  std::string_view rest = req.pattern;
  while (!rest.empty()) {
    const std::string_view token = proto::next_token(rest);
    std::unique_ptr<TopicNode>* slot = nullptr;
    if (token == "*") {
      slot = &n->star;
    } else if (token == ">") {
      slot = &n->rest;
    } else {
      slot = &n->children[std::string(token)];
    }
    if (!*slot) {
      *slot = std::make_unique<TopicNode>();
      (*slot)->parent = n;
      (*slot)->token = std::string(token);
    }
    n = slot->get();
  }
  s->node = n;
  bool first_of_group = true;
  if (s->group.empty()) {
    n->plain.push_back(s.get());
  } else {
    auto g = std::find_if(n->groups.begin(), n->groups.end(),
                          [&](const auto& x) { return x->name == s->group; });
    if (g == n->groups.end()) {
      n->groups.push_back(std::make_unique<TopicGroup>());
      n->groups.back()->name = s->group;
      g = std::prev(n->groups.end());
    } else {
      first_of_group = false;
    }
    (*g)->members.push_back(s.get());
    s->in_group = g->get();
  }
  ++usage.subscriptions;
  ++subscriptions_;
  TopicSubscription& live = *s;
  mine.push_back(std::move(s));
  by_peer_[peer] = &p.topics;
  // The OK comes before the retained messages (PROTOCOL.md 18.3): the answer is given
  // here, and the caller gives none.
  if (confirm) sink_.confirm(peer, req.correlation);
  if (first_of_group && !retained_.empty()) send_retained(live);
  return SendOutcome{SendResult::deferred, Errc::ok, {}};
}

void Topics::send_retained(TopicSubscription& s) {
  for (auto& [subject, m] : retained_) {
    if (!proto::subject_matches(s.pattern, subject)) continue;
    ++s.matched;
    if (s.buffer.empty() && sink_.wants_more(s.peer)) {
      deliver(s, *m, true);
    } else if (!buffer(s, *m, true)) {
      return;  // cut off
    }
  }
}

bool Topics::unsubscribe(Peer& p, std::uint64_t id) {
  auto& mine = p.topics.subscriptions;
  for (std::size_t i = 0; i < mine.size(); ++i) {
    if (mine[i]->id == id) {
      remove(p, i);
      return true;
    }
  }
  return false;
}

void Topics::forget(Peer& p) {
  while (!p.topics.subscriptions.empty())
    remove(p, p.topics.subscriptions.size() - 1);
  if (TopicSubscription* s = p.topics.blocked_on) {
    std::erase(s->blocked, p.id.client_id);
    p.topics.blocked_on = nullptr;
  }
}

void Topics::remove(Peer& p, std::size_t index) {
  auto& mine = p.topics.subscriptions;
  TopicSubscription& s = *mine[index];
  // Released by going, not dropped by the policy: not counted as drops.
  while (!s.buffer.empty())
    unref(pop_front(s).message);
  if (!s.blocked.empty()) release_blocked(s);
  detach(s);
  const std::uint32_t uid = s.subscriber.uid;
  const PeerId peer = s.peer;
  mine.erase(mine.begin() + static_cast<std::ptrdiff_t>(index));
  --core_.accounting.of(uid).subscriptions;
  core_.accounting.forget_if_unused(uid);
  --subscriptions_;
  if (mine.empty()) by_peer_.erase(peer);
}

void Topics::detach(TopicSubscription& s) {
  TopicNode* n = s.node;
  if (s.in_group) {
    TopicGroup& g = *s.in_group;
    std::erase(g.members, &s);
    if (g.next >= g.members.size()) g.next = 0;
    if (g.members.empty()) {
      std::erase_if(n->groups, [&](const auto& x) { return x.get() == &g; });
    }
  } else {
    std::erase(n->plain, &s);
  }
  prune(n);
}

void Topics::prune(TopicNode* n) {
  while (n != &root_ && n->empty()) {
    TopicNode* parent = n->parent;
    if (parent->star.get() == n) {
      parent->star.reset();
    } else if (parent->rest.get() == n) {
      parent->rest.reset();
    } else {
      // By iterator: the key erase(k) would compare lives in the node it destroys.
      parent->children.erase(parent->children.find(n->token));
    }
    n = parent;
  }
}

std::string_view slow_policy_name(proto::SlowPolicy p) {
  switch (p) {
    case proto::SlowPolicy::disconnect:
      return "disconnect";
    case proto::SlowPolicy::block:
      return "block";
    case proto::SlowPolicy::use_default:
    case proto::SlowPolicy::drop_oldest:
      break;
  }
  return "drop_oldest";
}

}  // namespace qbus::broker
