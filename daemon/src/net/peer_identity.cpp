#include "net/peer_identity.hpp"

#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <iterator>
#include <sstream>

#include "broker/peer.hpp"

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif

namespace qbus::daemon {
namespace {

int peer_pidfd(int fd, pid_t pid) {
  int pidfd = -1;
  socklen_t len = sizeof(pidfd);
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) == 0 && pidfd >= 0) return pidfd;
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
}

std::uint64_t start_time(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const auto paren = stat.rfind(')');
  if (paren == std::string::npos) return 0;
  // Fields after "pid (comm)" start at field 3; the start time is field 22.
  std::istringstream rest(stat.substr(paren + 2));
  std::string field;
  for (int i = 3; i <= 22; ++i) {
    if (!(rest >> field)) return 0;
  }
  try {
    return std::stoull(field);
  } catch (const std::exception&) {
    return 0;
  }
}

// The kernel refuses a short buffer with ERANGE and says how much it needs (at most
// NGROUPS_MAX, 65536); a process in more than kMaxPeerGroups groups is judged by the first
// ones only, so that no peer costs more than that to keep.
std::vector<std::uint32_t> peer_groups(int fd) {
  using broker::kMaxPeerGroups;
  std::vector<gid_t> groups(kMaxPeerGroups);
  socklen_t len = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &len) != 0) {
    if (errno != ERANGE) return {};
    std::vector<gid_t> all(len / sizeof(gid_t));
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, all.data(), &len) != 0) return {};
    all.resize(std::min(all.size(), kMaxPeerGroups));
    return {all.begin(), all.end()};
  }
  groups.resize(len / sizeof(gid_t));
  return {groups.begin(), groups.end()};
}

std::string read_comm(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/comm");
  std::string comm;
  std::getline(f, comm);
  return comm;
}

}  // namespace

bool read_peer_credentials(int fd, PeerCredentials& out) {
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return false;
  out.pid = static_cast<std::uint32_t>(cred.pid);
  out.uid = cred.uid;
  out.gid = cred.gid;
  out.comm = read_comm(cred.pid);
  out.groups = peer_groups(fd);
  out.process_token = 0;
  out.pidfd.reset();
  out.exited = false;
  proto::UniqueFd pidfd(peer_pidfd(fd, cred.pid));
  if (!pidfd) {
    // pidfd_open's ESRCH: no process has the peer's pid any more.
    out.exited = errno == ESRCH && cred.pid != 0;
    return true;
  }
  const std::uint64_t token = start_time(cred.pid);
  // Read first, verify after: if the pidfd's process still lives, /proc/<pid> was its own.
  // (EPERM: alive, but not ours to signal; ESRCH: exited.)
  if (::syscall(SYS_pidfd_send_signal, pidfd.get(), 0, nullptr, 0) == 0 || errno == EPERM) {
    out.process_token = token;
    if (token != 0) out.pidfd = std::move(pidfd);
  } else if (errno == ESRCH) {
    out.exited = true;
  }
  return true;
}

}  // namespace qbus::daemon
