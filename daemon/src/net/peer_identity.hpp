// What the kernel says about a Unix-socket peer.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "qbus/proto/unique_fd.hpp"

namespace qbus::daemon {

struct PeerCredentials {
  std::uint32_t pid = 0;
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  // The peer process's start time (clock ticks since boot), which with the pid names one
  // process instance; 0 when it cannot be established (see process_token()).
  std::uint64_t process_token = 0;
  std::string comm;
  // Supplementary groups (SO_PEERGROUPS), for the access policy: the first
  // broker::kMaxPeerGroups of the kernel's list, the rest dropped. Empty when there are none
  // or the kernel does not tell.
  std::vector<std::uint32_t> groups;
  // The pidfd the token was verified through, kept when the token is known: it becomes
  // readable when the process exits, which is how the server learns that the pid no longer
  // names this process (PROTOCOL.md section 8.2).
  proto::UniqueFd pidfd;
  // The process had already exited when it was accepted (its connection may live on in
  // another process that inherited it): it must not be reachable by pid.
  bool exited = false;
};

// SO_PEERCRED for identity, SO_PEERGROUPS for the supplementary groups. The process token is read
// from /proc/<pid>/stat and then checked against a pidfd for the peer: SO_PEERPIDFD (Linux 6.5+)
// names exactly the process that connected; older kernels fall back to pidfd_open(pid), which is
// exact unless the peer already exited before the accept. If the pidfd shows the process gone, the
// token is 0 and `exited` is set. Returns false when SO_PEERCRED itself fails.
bool read_peer_credentials(int fd, PeerCredentials& out);

}  // namespace qbus::daemon
