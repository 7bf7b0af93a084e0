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
  auto r = proto::shm::seal_write(handle);
  if (r.ok()) return {};
  if (r.error().sys_errno == EBUSY) {
    return broker::RegionStatus{Errc::unexpected_frame,
                                "the region is still mapped writable (in this process or a "
                                "child); unmap it before sending it"};
  }
  return broker::RegionStatus{Errc::internal_error, r.error().text};
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
