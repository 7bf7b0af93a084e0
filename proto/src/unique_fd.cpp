#include "qbus/proto/unique_fd.hpp"

#include <unistd.h>

namespace qbus::proto {

void UniqueFd::reset(int fd) noexcept {
  // On Linux close() releases the descriptor even when it reports EINTR, so no retry.
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

}  // namespace qbus::proto
