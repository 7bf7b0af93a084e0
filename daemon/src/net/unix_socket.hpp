// Creating the listening Unix socket safely: its directory, a stale file left by a crashed
// daemon, and a live daemon already on the path (which must make us refuse to start).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "qbus/proto/unique_fd.hpp"

namespace qbus::daemon {

using proto::UniqueFd;

struct BoundSocket {
  UniqueFd fd;
  dev_t dev = 0;  // identity of the socket file we created, so that shutdown removes
  ino_t ino = 0;  // only our own file and never a successor's
};

// Creates the parent directory when missing, replaces a stale socket file, binds, applies
// `mode` and listens. Throws std::runtime_error with one sentence naming the problem.
BoundSocket bind_unix_listener(const std::string& path, std::uint32_t mode);

// Takes over a listening AF_UNIX stream socket another process created and passed to us
// (systemd socket activation). The socket file is not ours: the result's dev/ino stay 0,
// so unlink_if_ours never removes it. Sets `path` to the socket's path (empty for an
// abstract or unnamed socket). Throws std::runtime_error when `fd` is not such a socket.
BoundSocket adopt_unix_listener(UniqueFd fd, std::string& path);

// Removes `path` if it is still the socket file described by `bound`.
void unlink_if_ours(const std::string& path, const BoundSocket& bound);

}  // namespace qbus::daemon
