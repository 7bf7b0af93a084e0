// Polls, with a generous deadline, for what happens where no answer can be waited on: the
// daemon reading a peer's EOF, its worker thread closing memfds.
#pragma once

#include <chrono>
#include <functional>
#include <thread>

namespace qbus::testing {

inline bool eventually(const std::function<bool()>& done,
                       std::chrono::seconds limit = std::chrono::seconds(30)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

}  // namespace qbus::testing
