// Sockets handed to qbusd by its service manager (systemd socket activation, or
// systemd-socket-activate): LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES, read through
// sd_listen_fds_with_names(). The names are fixed by docs/architecture.md ("Names users rely on"):
// "qbus" for the client socket, "admin" for the admin socket; a single socket with another name (or
// none, which libsystemd reports as "unknown") is the client socket.
#pragma once

#include <string>

#include "qbus/proto/unique_fd.hpp"

namespace qbus::daemon {

struct InheritedSockets {
  proto::UniqueFd main;  // invalid: none passed, bind our own
  std::string main_path;
  proto::UniqueFd admin;  // invalid: none passed, bind our own
  std::string admin_path;
};

// Takes the passed sockets and unsets the LISTEN_* variables (no child may inherit them).
// Every socket must be a listening AF_UNIX stream socket with a known name, each name at
// most once; otherwise throws std::runtime_error with one sentence naming the fd and what
// is wrong with it (and closes every passed fd). No sockets passed: both fds are invalid.
InheritedSockets take_inherited_sockets();

}  // namespace qbus::daemon
