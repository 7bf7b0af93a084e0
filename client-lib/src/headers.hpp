// libqbus internals: a message's headers between the public Headers (client.hpp) and the
// wire's header block (proto/headers.hpp, PROTOCOL.md 17.1). Header-only so that the unit
// tests compile the same code the library runs.
//
// The checks here are the broker's, made before anything is sent, so that a bad header
// is an Error(invalid_argument) naming it rather than a frame the broker refuses later
// (asynchronously, for a pipelined send).
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "qbus/client.hpp"
#include "qbus/proto/headers.hpp"

namespace qbus::detail {

// The header block for `headers`; empty for none. Throws Error(invalid_argument) for a
// key that is not a valid header key or is the broker's (qbus-...), a value over 1024
// bytes, more than 28 entries or a block over 3584 bytes (the rest of the protocol's 32
// and 4096 is the broker's, for the headers it adds).
inline std::vector<std::byte> encode_headers(const Headers& headers) {
  std::vector<std::byte> block;
  if (headers.empty()) return block;
  if (headers.size() > proto::kMaxSenderHeaders) {
    throw Error(Errc::invalid_argument, std::to_string(headers.size()) +
                                            " headers: a message may carry at most " +
                                            std::to_string(proto::kMaxSenderHeaders));
  }
  for (const auto& [key, value] : headers) {
    const std::string shown = "header '" + std::string(std::string_view(key).substr(0, 64)) + "'";
    if (!proto::is_valid_header_key(key)) {
      throw Error(Errc::invalid_argument,
                  shown + ": a key is 1-64 printable ASCII characters without space, '=' or ':'");
    }
    if (key.starts_with(proto::kReservedHeaderPrefix)) {
      throw Error(Errc::invalid_argument,
                  shown + ": keys starting \"qbus-\" are reserved for the broker");
    }
    if (value.size() > proto::kMaxHeaderValueSize) {
      throw Error(Errc::invalid_argument, shown + ": value of " + std::to_string(value.size()) +
                                              " bytes, over the limit of " +
                                              std::to_string(proto::kMaxHeaderValueSize));
    }
    proto::append_header(block, key, value);
  }
  if (block.size() > proto::kMaxSenderHeadersSize) {
    throw Error(Errc::invalid_argument, "headers of " + std::to_string(block.size()) +
                                            " bytes encoded, over the limit of " +
                                            std::to_string(proto::kMaxSenderHeadersSize));
  }
  return block;
}

// Whether a block from the broker may be read: it may hold the broker's own (qbus-) keys.
inline bool valid_header_block(proto::Bytes block) noexcept {
  return proto::check_headers(block, /*from_sender=*/false) == Errc::ok;
}

// The entries of a block that valid_header_block() accepted.
inline Headers decode_headers(proto::Bytes block) {
  Headers out;
  proto::HeaderReader r(block);
  proto::HeaderEntry e;
  while (r.next(e))
    out.emplace_back(std::string(e.key), std::string(e.value));
  return out;
}

inline std::optional<std::string_view> find_header(proto::Bytes block,
                                                   std::string_view name) noexcept {
  std::string_view value;
  if (!proto::find_header(block, name, value)) return std::nullopt;
  return value;
}

}  // namespace qbus::detail
