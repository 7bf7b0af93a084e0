// A RegionBacking that records what the broker asks of it, for unit tests without memfds.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "broker/regions.hpp"

namespace qbus::broker::fakes {

// Records every call; create and seal fail on demand.
class FakeBacking : public RegionBacking {
 public:
  BackingHandle create(std::uint64_t size, std::string_view name) override {
    created.push_back({size, std::string(name)});
    if (create_error) return BackingHandle{*create_error, "tmpfs is full", -1};
    return BackingHandle{Errc::ok, {}, next_handle++};
  }
  RegionStatus seal_for_handover(int handle) override {
    sealed.push_back(handle);
    if (seal_error) return RegionStatus{*seal_error, "a writable mapping is still alive"};
    return {};
  }
  void destroy(int handle) noexcept override { destroyed.push_back(handle); }
  // The fake's regions hold no bytes: each reads as its offset's low byte.
  bool read(int, std::uint64_t offset, std::span<std::byte> out) override {
    for (std::size_t i = 0; i < out.size(); ++i)
      out[i] = std::byte(static_cast<std::uint8_t>(offset + i));
    return true;
  }

  struct Created {
    std::uint64_t size;
    std::string name;
  };
  std::vector<Created> created;
  std::vector<int> sealed;
  std::vector<int> destroyed;
  std::optional<Errc> create_error;
  std::optional<Errc> seal_error;
  int next_handle = 100;
};

}  // namespace qbus::broker::fakes
