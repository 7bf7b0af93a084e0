#include "net/memfd_backing.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "qbus/proto/shm.hpp"

namespace qbus::daemon {

broker::BackingHandle MemfdBacking::create(std::uint64_t size, std::string_view name) {
  auto fd = proto::shm::create_region(static_cast<std::size_t>(size), name,
                                      static_cast<std::size_t>(max_));
  if (fd.ok()) return broker::BackingHandle{Errc::ok, {}, std::move(fd).value().release()};
  const auto& e = fd.error();
  // Only wire codes may reach the peer: a full tmpfs or memory cgroup is its quota,
  // anything else (EMFILE, say) is the broker's own trouble.
  Errc code = e.code;
  if (code != Errc::quota_exceeded && code != Errc::payload_too_large) code = Errc::internal_error;
  return broker::BackingHandle{code, e.text, -1};
}

broker::RegionStatus MemfdBacking::seal_for_handover(int handle) {
  // The sender adds F_SEAL_WRITE itself: the kernel may wait a long time for pinned pages
  // while adding it, and that wait must cost the sender, not the broker's one thread.
  // Here we only read the seals (never blocks) and freeze them.
  auto have = proto::shm::seals(handle);
  if (!have) return broker::RegionStatus{Errc::internal_error, have.error().text};
  if ((*have & F_SEAL_WRITE) == 0) {
    return broker::RegionStatus{Errc::unexpected_frame,
                                "the region is not sealed against writes: unmap it and add "
                                "F_SEAL_WRITE before sending it (libqbus does)"};
  }
  if ((*have & F_SEAL_SEAL) == 0 && ::fcntl(handle, F_ADD_SEALS, F_SEAL_SEAL) != 0) {
    return broker::RegionStatus{Errc::internal_error,
                                std::string("cannot freeze a region's seals: ") +
                                    std::strerror(errno)};
  }
  return {};
}

void MemfdBacking::destroy(int handle) noexcept {
  ::close(handle);
}

proto::UniqueFd region_fd_for_peer(int handle, bool read_only, std::string& why) {
  int fd = -1;
  if (read_only) {
    // A new open file description: O_RDONLY here really limits the receiver (a dup would
    // share the daemon's read-write one).
    const std::string path = "/proc/self/fd/" + std::to_string(handle);
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  } else {
    fd = ::fcntl(handle, F_DUPFD_CLOEXEC, 0);
  }
  if (fd < 0)
    why = std::string(read_only ? "reopen" : "dup") + " of a region fd: " + std::strerror(errno);
  return proto::UniqueFd(fd);
}

}  // namespace qbus::daemon
