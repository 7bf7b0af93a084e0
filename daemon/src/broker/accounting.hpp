// Per-uid resource usage. Everything a peer holds is charged to its uid, so opening more
// connections never grants a fresh quota. Not thread-safe (owned by the Broker).
#pragma once

#include <cstdint>
#include <unordered_map>

namespace qbus::broker {

struct UidUsage {
  std::uint32_t connections = 0;
  std::uint64_t queued_messages = 0;
  std::uint64_t queued_bytes = 0;
};

class Accounting {
 public:
  UidUsage& of(std::uint32_t uid) { return usage_[uid]; }
  const UidUsage* find(std::uint32_t uid) const {
    auto it = usage_.find(uid);
    return it == usage_.end() ? nullptr : &it->second;
  }
  // Drops the entry once a uid holds nothing, so the table tracks only live users.
  void forget_if_unused(std::uint32_t uid) {
    auto it = usage_.find(uid);
    if (it != usage_.end() && it->second.connections == 0 && it->second.queued_messages == 0) {
      usage_.erase(it);
    }
  }
  template <typename F>
  void for_each(F&& f) const {
    for (const auto& [uid, u] : usage_)
      f(uid, u);
  }

 private:
  std::unordered_map<std::uint32_t, UidUsage> usage_;
};

}  // namespace qbus::broker
