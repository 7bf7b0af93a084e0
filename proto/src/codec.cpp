#include "qbus/proto/codec.hpp"

#include <algorithm>
#include <array>
#include <cstring>

// The bodies' readers and writers are generated from frames.hpp in the callers' own
// translation units; what is left here is the header and the key alphabet.
namespace qbus::proto {

using wire::load;

std::string_view overflow_name(Overflow o) noexcept {
  switch (o) {
    case Overflow::use_default:
      return "default";
    case Overflow::reject:
      return "reject";
    case Overflow::drop_oldest:
      return "drop_oldest";
    case Overflow::block:
      return "block";
  }
  return "unknown";
}

std::string_view fsync_name(Fsync f) noexcept {
  switch (f) {
    case Fsync::use_default:
      return "default";
    case Fsync::always:
      return "always";
    case Fsync::batch:
      return "batch";
    case Fsync::none:
      return "none";
  }
  return "unknown";
}

namespace {
// Every key of every SEND is checked: a table beats the chain of comparisons.
constexpr std::array<bool, 256> kKeyChars = [] {
  std::array<bool, 256> t{};
  for (int c = 0; c < 256; ++c) {
    t[static_cast<std::size_t>(c)] = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                                     (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' ||
                                     c == '/' || c == '-';
  }
  return t;
}();
}  // namespace

bool is_valid_key(std::string_view key) noexcept {
  if (key.empty() || key.size() > kMaxKeySize) return false;
  return std::all_of(key.begin(), key.end(),
                     [](char c) { return kKeyChars[static_cast<unsigned char>(c)]; });
}

HeaderResult decode_header(Bytes in, std::uint32_t max_body) noexcept {
  HeaderResult r;
  if (in.size() < kHeaderSize) {
    // Reject a wrong magic as soon as its bytes are here, so garbage is not waited on.
    std::byte magic[4];
    wire::store(magic, kMagic);
    const auto n = std::min<std::size_t>(in.size(), 4);
    if (n > 0 && std::memcmp(in.data(), magic, n) != 0) {
      r.status = HeaderStatus::bad;
      r.error = Errc::bad_magic;
    }
    return r;
  }
  const std::byte* p = in.data();
  r.status = HeaderStatus::bad;
  if (load<std::uint32_t>(p) != kMagic) {
    r.error = Errc::bad_magic;
    return r;
  }
  if (load<std::uint8_t>(p + 4) != kFrameVersion) {
    r.error = Errc::unsupported_version;
    return r;
  }
  if (load<std::uint32_t>(p + 20) != 0) {
    r.error = Errc::malformed_header;
    return r;
  }
  r.header.type = static_cast<FrameType>(load<std::uint8_t>(p + 5));
  r.header.flags = load<std::uint16_t>(p + 6);
  r.header.correlation = load<std::uint64_t>(p + 8);
  r.header.body_size = load<std::uint32_t>(p + 16);
  if (r.header.body_size > std::min(max_body, kMaxBodyCeiling)) {
    r.error = Errc::frame_too_large;
    return r;
  }
  r.status = HeaderStatus::complete;
  return r;
}

}  // namespace qbus::proto
