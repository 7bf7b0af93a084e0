// Counts heap allocations made through the global operator new (replaced in
// alloc_counter.cpp for the whole qbus-micro binary), so a benchmark can report how many
// allocations each message costs in steady state.
#pragma once

#include <benchmark/benchmark.h>

#include <cstdint>

namespace qbus::micro {

// Allocations through operator new since the program started.
std::uint64_t allocations() noexcept;

// Adds the counter "allocs/msg": allocations between `before` and now, per message.
inline void report_allocations(benchmark::State& state, std::uint64_t before,
                               std::uint64_t messages) {
  const auto made = allocations() - before;
  state.counters["allocs/msg"] =
      messages == 0 ? 0.0 : static_cast<double>(made) / static_cast<double>(messages);
}

}  // namespace qbus::micro
