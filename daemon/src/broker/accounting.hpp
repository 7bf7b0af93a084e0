// Per-uid resource usage. Everything a peer holds is charged to its uid, so opening more
// connections never grants a fresh quota. Not thread-safe (owned by the Broker's Core).
#pragma once

#include <cstdint>
#include <unordered_map>

namespace qbus::broker {

struct UidUsage {
  std::uint32_t connections = 0;
  std::uint64_t queued_messages = 0;
  std::uint64_t queued_bytes = 0;
  // Queues charged to this uid (it created them, or declared them last).
  std::uint32_t queues = 0;
  // Receives of its connections waiting for a message, over queues and inboxes.
  std::uint32_t waiting_receives = 0;
  // Subject subscriptions of its connections.
  std::uint32_t subscriptions = 0;
};

class Accounting {
 public:
  // Every message is charged and released: the uid looked up last is remembered (entries
  // are nodes, so the pointer is stable until erased).
  UidUsage& of(std::uint32_t uid) {
    if (last_ && last_uid_ == uid) return *last_;
    UidUsage& u = usage_[uid];
    last_uid_ = uid;
    last_ = &u;
    return u;
  }
  const UidUsage* find(std::uint32_t uid) const {
    if (last_ && last_uid_ == uid) return last_;
    auto it = usage_.find(uid);
    return it == usage_.end() ? nullptr : &it->second;
  }
  // Drops the entry once a uid holds nothing, so the table tracks only live users.
  void forget_if_unused(std::uint32_t uid) {
    const UidUsage* u = find(uid);
    if (!u || u->connections != 0 || u->queued_messages != 0 || u->queues != 0 ||
        u->waiting_receives != 0 || u->subscriptions != 0) {
      return;
    }
    if (u == last_) last_ = nullptr;
    usage_.erase(uid);
  }
  template <typename F>
  void for_each(F&& f) const {
    for (const auto& [uid, u] : usage_)
      f(uid, u);
  }

 private:
  std::unordered_map<std::uint32_t, UidUsage> usage_;
  std::uint32_t last_uid_ = 0;
  UidUsage* last_ = nullptr;
};

}  // namespace qbus::broker
