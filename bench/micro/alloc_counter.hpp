// Reports heap allocations per message, counted by the replaced global operator new
// (tests/support/counting_allocator.cpp, linked into the whole qbus-micro binary).
#pragma once

#include <benchmark/benchmark.h>

#include <cstdint>

#include "counting_allocator.hpp"  // tests/support

namespace qbus::micro {

using support::allocations;

// Adds the counter "allocs/msg": allocations between `before` and now, per message.
inline void report_allocations(benchmark::State& state, std::uint64_t before,
                               std::uint64_t messages) {
  const auto made = allocations() - before;
  state.counters["allocs/msg"] =
      messages == 0 ? 0.0 : static_cast<double>(made) / static_cast<double>(messages);
}

}  // namespace qbus::micro
