#include "storage/crc32c.hpp"

#include <array>
#include <cstring>

namespace qbus::storage {
namespace {

// The reflected polynomial 0x1EDC6F41: one table, built at compile time.
constexpr std::uint32_t kPolynomial = 0x82F63B78u;

constexpr std::array<std::uint32_t, 256> make_table() {
  std::array<std::uint32_t, 256> t{};
  for (std::uint32_t i = 0; i < 256; ++i) {
    std::uint32_t c = i;
    for (int k = 0; k < 8; ++k)
      c = (c & 1) != 0 ? (c >> 1) ^ kPolynomial : c >> 1;
    t[i] = c;
  }
  return t;
}

constexpr std::array<std::uint32_t, 256> kTable = make_table();

std::uint32_t extend_table(std::uint32_t c, std::span<const std::byte> data) noexcept {
  for (const std::byte b : data)
    c = kTable[(c ^ static_cast<std::uint8_t>(b)) & 0xFF] ^ (c >> 8);
  return c;
}

#if defined(__x86_64__)
// SSE 4.2's crc32 instruction computes CRC-32C itself, eight bytes at a time: the journal
// checksums every byte it writes and reads, on the storage thread's budget.
__attribute__((target("sse4.2"))) std::uint32_t extend_sse42(
    std::uint32_t c, std::span<const std::byte> data) noexcept {
  const std::byte* p = data.data();
  std::size_t n = data.size();
  std::uint64_t c64 = c;
  for (; n >= 8; n -= 8, p += 8) {
    std::uint64_t v;
    std::memcpy(&v, p, sizeof v);
    c64 = __builtin_ia32_crc32di(c64, v);
  }
  c = static_cast<std::uint32_t>(c64);
  for (; n > 0; --n, ++p)
    c = __builtin_ia32_crc32qi(c, static_cast<std::uint8_t>(*p));
  return c;
}
const bool kHaveSse42 = __builtin_cpu_supports("sse4.2");
#endif

}  // namespace

std::uint32_t crc32c_extend(std::uint32_t crc, std::span<const std::byte> data) noexcept {
#if defined(__x86_64__)
  if (kHaveSse42) return ~extend_sse42(~crc, data);
#endif
  return ~extend_table(~crc, data);
}

}  // namespace qbus::storage
