#include "service/event_loop.hpp"

#include <chrono>

namespace qbus::daemon {

void run_event_loop(asio::io_context& io, const std::uint32_t& busy_poll_us) {
  using Clock = std::chrono::steady_clock;
  // run_one() sleeps in epoll_wait when nothing is ready, exactly as run() does, and
  // costs next to nothing more per handler: with busy polling off this is io.run().
  while (io.run_one() > 0) {
    if (busy_poll_us == 0) continue;
    auto idle_since = Clock::now();
    while (!io.stopped()) {
      if (io.poll() > 0) {
        idle_since = Clock::now();
      } else if (Clock::now() - idle_since >= std::chrono::microseconds(busy_poll_us)) {
        break;
      }
    }
  }
}

}  // namespace qbus::daemon
