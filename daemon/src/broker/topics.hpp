// The subject registry (proto/PROTOCOL.md section 18): subscriptions indexed by a token
// trie of their patterns, so that a publish visits only the trie nodes its subject can
// reach, whatever the number of subscriptions elsewhere; queue groups; per-subscription
// bounded buffers with their slow-subscriber policy; retained messages.
//
// A published message is written straight to every subscriber that reads its output, and
// stored once (a Published, reference-counted) only when some subscription has to buffer
// it: its buffer refers to it, and the last reference frees it, with its region reference.
//
// Ownership: owns every subscription, every Published and the retained table; holds a
// reference to the Core, which outlives it. Thread-safety: none; the Broker's one thread.
#pragma once

#include <deque>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "broker/outcome.hpp"
#include "broker/types.hpp"

namespace qbus::broker {

struct Core;
struct Peer;

// One PUBLISH that a buffer (or the retained table) holds: stored once, whatever the number
// of references.
struct Published {
  Identity sender;
  std::string subject;
  std::vector<std::byte> payload;
  std::vector<std::byte> headers;
  RegionRef region;  // holds one message reference on the region while the Published lives
  std::uint32_t refs = 0;
  // What a buffer holding it is charged (its subscriber's uid quota): its bytes in broker
  // memory. A region's pages are charged to the region's owner, not here.
  std::size_t charge() const { return payload.size() + headers.size(); }
};

struct TopicNode;
struct TopicGroup;

struct TopicSubscription {
  struct Entry {
    Published* message = nullptr;
    bool retained = false;  // delivered with the header qbus-retained
  };
  PeerId peer = 0;
  std::uint64_t id = 0;  // the SUBSCRIBE_SUBJECT's correlation
  Identity subscriber;   // whose uid its buffer is charged to
  std::string pattern;
  std::string group;  // empty: none
  proto::SlowPolicy slow = proto::SlowPolicy::drop_oldest;
  std::uint32_t max_messages = 0;
  std::uint64_t max_bytes = 0;
  std::deque<Entry> buffer;
  std::uint64_t buffered_bytes = 0;
  std::uint64_t matched = 0;    // messages published on a subject it matched (its group's
                                // share, for a group member)
  std::uint64_t delivered = 0;  // handed to the connection
  std::uint64_t dropped = 0;    // dropped by drop_oldest
  std::uint64_t gap = 0;        // dropped since its last delivery: the next one says so
  // Producers whose PUBLISH waits for room in this buffer (policy block).
  std::vector<PeerId> blocked;
  TopicNode* node = nullptr;
  TopicGroup* in_group = nullptr;

  // Whether the buffer takes a message of `bytes` more. An empty buffer takes any one
  // message (a payload is bounded by limits.max_payload_bytes), so that a message larger
  // than max_bytes is buffered alone rather than dropped, and a blocked publisher of one
  // never waits for room that cannot come.
  bool has_room_for(std::size_t bytes) const {
    return buffer.empty() || (buffer.size() < max_messages && buffered_bytes + bytes <= max_bytes);
  }
  bool full() const { return !has_room_for(1); }
};

// Subscriptions of one pattern with one group name: each message goes to one of them.
struct TopicGroup {
  std::string name;
  std::vector<TopicSubscription*> members;  // in joining order
  std::size_t next = 0;                     // whose turn it is
};

// A trie node: the subscriptions whose pattern ends at it, and its children by token;
// `*` and `>` are children of their own, so matching never compares wildcards.
struct TopicNode {
  TopicNode* parent = nullptr;
  std::string token;  // the token leading here from parent
  std::unordered_map<std::string, std::unique_ptr<TopicNode>, StringHash, std::equal_to<>> children;
  std::unique_ptr<TopicNode> star;  // `*`
  std::unique_ptr<TopicNode> rest;  // `>`: its subscriptions match one or more tokens more
  std::vector<TopicSubscription*> plain;
  std::vector<std::unique_ptr<TopicGroup>> groups;
  bool empty() const {
    return children.empty() && !star && !rest && plain.empty() && groups.empty();
  }
};

// A peer's state in the subject registry.
struct TopicPeer {
  std::vector<std::unique_ptr<TopicSubscription>> subscriptions;
  TopicSubscription* blocked_on = nullptr;  // a PUBLISH of its waits for room there
  bool cut = false;  // cut off (policy disconnect): the edge closes the connection
};

// What SUBSCRIBE_SUBJECT asks for.
struct SubjectSubscribe {
  std::uint64_t correlation = 0;
  std::string_view pattern;
  std::string_view group;
  std::uint32_t max_messages = 0;  // 0: the limit's default
  std::uint64_t max_bytes = 0;
  proto::SlowPolicy slow = proto::SlowPolicy::use_default;
};

// What PUBLISH (or SEND_REGION to a subject) carries.
struct PublishSend {
  std::string_view subject;
  Bytes payload;
  Bytes headers;
  RegionRef region;
  bool retain = false;
};

struct TopicTotals {
  std::uint64_t published = 0;
  std::uint64_t unmatched = 0;  // published with no subscription to take it
  std::uint64_t delivered = 0;
  std::uint64_t dropped = 0;
  std::uint64_t disconnected = 0;  // subscribers cut off by the policy disconnect
};

// "drop_oldest", "disconnect" or "block".
std::string_view slow_policy_name(proto::SlowPolicy p);

class Topics {
 public:
  explicit Topics(Core& core);
  ~Topics();
  Topics(const Topics&) = delete;
  Topics& operator=(const Topics&) = delete;

  SendOutcome publish(PeerId from, Peer& sender, const PublishSend& m);
  // Deferred once the subscription is live (answered OK here when `confirm`, before the
  // retained messages it gets), else the refusal.
  SendOutcome subscribe(PeerId peer, Peer& p, const SubjectSubscribe& s, bool confirm);
  bool unsubscribe(Peer& p, std::uint64_t id);
  // Everything the peer held goes: subscriptions, buffered references, its wait.
  void forget(Peer& p);
  // The peer reads its output again: its buffers drain while it wants more.
  void output_ready(Peer& p);

  template <typename F>
  void for_each_subscription(F&& f) const {
    for (const auto& [peer, tp] : by_peer_)
      for (const auto& s : tp->subscriptions)
        f(*s);
  }
  template <typename F>
  void for_each_retained(F&& f) const {
    for (const auto& [subject, m] : retained_)
      f(*m);
  }
  // Every pattern with its subscriptions and groups.
  template <typename F>
  void for_each_pattern(F&& f) const {
    visit_patterns(root_, f);
  }
  const TopicTotals& totals() const { return totals_; }
  std::size_t subscription_count() const { return subscriptions_; }
  std::uint64_t retained_bytes() const { return retained_bytes_; }
  std::size_t retained_count() const { return retained_.size(); }

 private:
  template <typename F>
  static void visit_patterns(const TopicNode& n, F& f) {
    if (!n.plain.empty() || !n.groups.empty()) f(n);
    for (const auto& [t, c] : n.children)
      visit_patterns(*c, f);
    if (n.star) visit_patterns(*n.star, f);
    if (n.rest) visit_patterns(*n.rest, f);
  }
  // The subscriptions `subject` reaches (one member per group) into targets_.
  void match(TopicNode& n, std::string_view rest);
  void take(TopicNode& n);
  TopicSubscription* pick(TopicGroup& g);
  // A subscription of policy block among targets_ with a full buffer, if any.
  TopicSubscription* full_blocking(std::size_t bytes) const;
  SendOutcome retain(const Identity& sender, const PublishSend& m);
  Published* store(const Identity& sender, const PublishSend& m);
  void unref(Published* m);
  // Hands `e` to the subscriber (the delivery's header block carries the gap and the
  // retained mark when there are any).
  void deliver(TopicSubscription& s, const Published& m, bool retained);
  void deliver_now(TopicSubscription& s, const Identity& sender, std::string_view subject,
                   Bytes payload, Bytes headers, RegionRef region, bool retained);
  // Buffers `m` for `s` under its policy; false when `s` was cut off (and is freed).
  bool buffer(TopicSubscription& s, Published& m, bool retained);
  // Takes the oldest entry out of the buffer and gives back its charge; the caller owns
  // the entry's reference.
  TopicSubscription::Entry pop_front(TopicSubscription& s);
  void drop_front(TopicSubscription& s);
  void drain(TopicSubscription& s);
  void cut_off(TopicSubscription& s);
  void remove(Peer& p, std::size_t index);  // frees the subscription
  void detach(TopicSubscription& s);
  void prune(TopicNode* n);
  void release_blocked(TopicSubscription& s);
  void send_retained(TopicSubscription& s);

  Core& core_;
  Sink& sink_;
  TopicNode root_;
  // The peers holding subscriptions, for the admin socket's listing in a stable order.
  std::map<PeerId, const TopicPeer*> by_peer_;
  std::map<std::string, Published*, std::less<>> retained_;
  std::uint64_t retained_bytes_ = 0;
  std::size_t subscriptions_ = 0;
  TopicTotals totals_;
  std::vector<TopicSubscription*> targets_;  // match's output, kept to reuse its capacity
  std::size_t matching_bytes_ = 0;           // the size of the message being matched (pick's room)
  std::vector<std::byte> header_scratch_;
};

}  // namespace qbus::broker
