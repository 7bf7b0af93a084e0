// A connected peer as the broker core sees it: its kernel identity and one block of state
// per registry (queues.hpp, inboxes.hpp, requests.hpp), each touched only by its registry.
// The PeerTable owns every Peer; a Peer lives from Broker::connect to Broker::disconnect,
// and the registries have forgotten it (Broker::disconnect) before it goes.
//
// Thread-safety: none; owned by the Broker's one thread.
#pragma once

#include <unordered_map>
#include <vector>

#include "broker/inboxes.hpp"
#include "broker/policy.hpp"
#include "broker/queues.hpp"
#include "broker/requests.hpp"
#include "broker/topics.hpp"

namespace qbus::broker {

// The supplementary groups kept per peer (SO_PEERGROUPS); a process in more is judged by
// the first kMaxPeerGroups.
inline constexpr std::size_t kMaxPeerGroups = 64;

struct Peer {
  Identity id;
  // Supplementary groups, for the access policy only (Identity is copied into every
  // message; these are not).
  std::vector<std::uint32_t> groups;
  PolicyCache policy;
  QueuePeer queues;
  InboxPeer inbox;
  RequestPeer requests;
  TopicPeer topics;
};

class PeerTable {
 public:
  // Uncached: for peers met along the way (a waiter, a requester), which must not evict
  // the cached sender.
  Peer* find(PeerId id) {
    auto it = peers_.find(id);
    return it == peers_.end() ? nullptr : &it->second;
  }
  const Peer* find(PeerId id) const {
    auto it = peers_.find(id);
    return it == peers_.end() ? nullptr : &it->second;
  }
  // For the peer a frame comes from: a producer's frames come in runs, so the last one is
  // remembered (nodes do not move).
  Peer* lookup(PeerId id) {
    if (last_ && last_id_ == id) return last_;
    Peer* p = find(id);
    if (p) {
      last_id_ = id;
      last_ = p;
    }
    return p;
  }
  bool contains(PeerId id) const { return peers_.count(id) != 0; }
  Peer& add(PeerId id, const Identity& who) {
    Peer& p = peers_.emplace(id, Peer{}).first->second;
    p.id = who;
    return p;
  }
  void erase(PeerId id) {
    auto it = peers_.find(id);
    if (it == peers_.end()) return;
    if (last_ == &it->second) last_ = nullptr;
    peers_.erase(it);
  }
  std::size_t size() const { return peers_.size(); }
  template <typename F>
  void for_each(F&& f) {
    for (auto& [id, p] : peers_)
      f(id, p);
  }

 private:
  std::unordered_map<PeerId, Peer> peers_;
  PeerId last_id_ = 0;
  Peer* last_ = nullptr;
};

}  // namespace qbus::broker
