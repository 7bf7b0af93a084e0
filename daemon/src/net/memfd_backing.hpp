// The memory behind the broker's regions: sealed memfds (proto/shm), one fd per region
// held by the daemon for the region's whole life. Also makes the extra fds the edge passes
// to clients, so that what a client is sent never depends on the table's own fd staying
// open until the write.
#pragma once

#include "broker/regions.hpp"
#include "qbus/proto/unique_fd.hpp"

namespace qbus::daemon {

class MemfdBacking final : public broker::RegionBacking {
 public:
  explicit MemfdBacking(std::uint64_t max_region_bytes) : max_(max_region_bytes) {}

  broker::BackingHandle create(std::uint64_t size, std::string_view name) override;
  // Checks that the sender sealed the region against writes (see the .cpp for why the
  // broker does not add that seal itself) and freezes its seals.
  broker::RegionStatus seal_for_handover(int handle) override;
  void destroy(int handle) noexcept override;
  // The largest region create() makes from now on (a configuration reload).
  void set_max_region_bytes(std::uint64_t max) { max_ = max; }

 private:
  std::uint64_t max_;
};

// A new fd for the region behind `handle`: a duplicate (same access), or, for
// `read_only`, the file reopened read-only so the receiver cannot write it even before it
// maps. Returns an invalid fd and sets `why` on failure (EMFILE, ...).
proto::UniqueFd region_fd_for_peer(int handle, bool read_only, std::string& why);

}  // namespace qbus::daemon
