#include "process.hpp"

#include <fcntl.h>

namespace qbus::bench {

Pipe make_pipe() {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
  return {Fd(p[0]), Fd(p[1])};
}

namespace {

// Moves `n` bytes with `io` (::read or ::write), resuming after EINTR and short transfers;
// false on an error, or on end of file before all of them.
template <typename Io, typename Byte>
bool transfer_all(Io io, int fd, Byte* p, std::size_t n) {
  while (n > 0) {
    const ssize_t done = io(fd, p, n);
    if (done < 0 && errno == EINTR) continue;
    if (done <= 0) return false;
    p += done;
    n -= static_cast<std::size_t>(done);
  }
  return true;
}

}  // namespace

bool write_all(int fd, const void* data, std::size_t n) {
  return transfer_all(::write, fd, static_cast<const char*>(data), n);
}

bool read_all(int fd, void* data, std::size_t n) {
  return transfer_all(::read, fd, static_cast<char*>(data), n);
}

}  // namespace qbus::bench
