// CRC-32C (Castagnoli), the checksum of the journal's records (journal_format.hpp). Chosen
// over CRC-32 for its better error detection on the short bursts a torn or flipped write
// leaves. Pure functions; thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace qbus::storage {

// The CRC of `data` continued from `crc` (the CRC of the bytes before it; 0 to start).
std::uint32_t crc32c_extend(std::uint32_t crc, std::span<const std::byte> data) noexcept;

inline std::uint32_t crc32c(std::span<const std::byte> data) noexcept {
  return crc32c_extend(0, data);
}

}  // namespace qbus::storage
