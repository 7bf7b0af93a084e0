// Counts heap allocations made through the global operator new, which counting_allocator.cpp
// replaces for the whole binary it is linked into (target qbus_alloc_counter): a test can
// assert, and a benchmark report, how many allocations a message costs in steady state.
#pragma once

#include <cstdint>

namespace qbus::support {

// Allocations through operator new since the program started; any thread.
std::uint64_t allocations() noexcept;

}  // namespace qbus::support
