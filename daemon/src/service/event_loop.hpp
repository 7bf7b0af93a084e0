// qbusd's event loop: io_context::run, optionally polling for a while before each sleep
// (limits.busy_poll_us).
#pragma once

#include <asio/io_context.hpp>
#include <cstdint>

namespace qbus::daemon {

// Runs `io` on the calling thread until it is stopped or has no work left, as io.run()
// does. `busy_poll_us` is read before every sleep, so a reload that changes it applies at
// the next one; it must outlive the call and be written only on this thread (by handlers).
// While it is not 0, the loop goes on polling (epoll_wait with no timeout, one handler
// batch after another) until that many microseconds have passed without a handler to run,
// and only then blocks: a frame arriving meanwhile is handled without the wake-up of a
// sleeping process. A loop with no work at all never polls, so an idle qbusd still sleeps.
// Exceptions from handlers propagate, as from io.run().
void run_event_loop(asio::io_context& io, const std::uint32_t& busy_poll_us);

}  // namespace qbus::daemon
