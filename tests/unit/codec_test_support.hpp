// Helpers shared by the codec's unit tests (codec_*_test.cpp): byte vectors, hex dumps,
// bodies built byte by byte from PROTOCOL.md's tables, and a decoder dispatch that checks
// every returned view lies inside its body.
//
// Bodies built with BodyBuilder are independent of the encoders, so the tests pin the wire
// layout of the specification rather than only checking that the codec agrees with itself.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <initializer_list>
#include <ostream>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "qbus/errc.hpp"
#include "qbus/proto/buffer.hpp"
#include "qbus/proto/codec.hpp"

namespace qbus {
// Lets gtest print "invalid_key (20)" instead of raw bytes when an Errc comparison fails.
inline void PrintTo(Errc e, std::ostream* os) {
  *os << errc_name(e) << " (" << static_cast<int>(e) << ")";
}
}  // namespace qbus

namespace qbus::proto::codec_test {

using Vec = std::vector<std::byte>;

// broker::kTcpUid, the uid every TCP peer is given; the codec itself does not know it.
constexpr std::uint32_t kTcpUidForTests = 4294967294u;

inline Vec vec(std::initializer_list<int> values) {
  Vec out;
  for (int v : values)
    out.push_back(static_cast<std::byte>(v));
  return out;
}

inline Bytes bytes_of(std::string_view s) {
  return std::as_bytes(std::span(s.data(), s.size()));
}

inline std::string str(Bytes b) {
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

inline std::string hex(Bytes b) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (std::byte x : b) {
    const auto v = std::to_integer<unsigned>(x);
    if (!out.empty()) out += ' ';
    out += kDigits[v >> 4];
    out += kDigits[v & 0xF];
  }
  return out;
}

// True when `view` lies entirely inside `whole` (an empty view may sit at its end).
inline bool inside(const void* view, std::size_t size, Bytes whole) {
  const auto* p = static_cast<const std::byte*>(view);
  const std::byte* begin = whole.data();
  const std::byte* end = whole.data() + whole.size();
  return size == 0 ? (p == nullptr || (p >= begin && p <= end))
                   : (p >= begin && p <= end && size <= static_cast<std::size_t>(end - p));
}
inline bool inside(std::string_view view, Bytes whole) {
  return inside(view.data(), view.size(), whole);
}
inline bool inside(Bytes view, Bytes whole) {
  return inside(view.data(), view.size(), whole);
}

// Little-endian body bytes written by hand, following the tables in PROTOCOL.md.
class BodyBuilder {
 public:
  BodyBuilder& u8(std::uint64_t v) { return put(v, 1); }
  BodyBuilder& u16(std::uint64_t v) { return put(v, 2); }
  BodyBuilder& u32(std::uint64_t v) { return put(v, 4); }
  BodyBuilder& u64(std::uint64_t v) { return put(v, 8); }
  BodyBuilder& i32(std::int32_t v) { return put(static_cast<std::uint32_t>(v), 4); }
  BodyBuilder& text(std::string_view s) {
    for (char c : s)
      bytes_.push_back(static_cast<std::byte>(c));
    return *this;
  }
  BodyBuilder& key(std::string_view k) { return u8(k.size()).text(k); }
  const Vec& bytes() const { return bytes_; }

 private:
  BodyBuilder& put(std::uint64_t v, int n) {
    for (int i = 0; i < n; ++i)
      bytes_.push_back(static_cast<std::byte>((v >> (8 * i)) & 0xFF));
    return *this;
  }
  Vec bytes_;
};

inline Vec header_bytes(std::uint8_t type, std::uint16_t flags = 0, std::uint64_t correlation = 0,
                        std::uint32_t body_size = 0) {
  Vec h(kHeaderSize);
  encode_header(h, Header{static_cast<FrameType>(type), flags, correlation, body_size});
  return h;
}

// The single frame a builder appended, copied out so views can be checked against it.
struct Frame {
  Header header;
  Vec body;
};

inline Frame only_frame(const ByteBuffer& buf) {
  const auto in = buf.readable();
  const auto hr = decode_header(in, kMaxBodyCeiling);
  if (hr.status != HeaderStatus::complete || in.size() != kHeaderSize + hr.header.body_size) {
    ADD_FAILURE() << "buffer does not hold exactly one complete frame: " << hex(in);
    return {};
  }
  return {hr.header, Vec(in.begin() + kHeaderSize, in.end())};
}

// Runs the body decoder of `type` (every body in frames.hpp's list) and checks that every
// view it returns lies inside `body`; returns its verdict.
inline Errc decode_checked(FrameType type, Bytes body) {
  Errc e = Errc::internal_error;
  bool found = false;
  for_each_body([&]<typename T>(std::type_identity<T>) {
    if (Layout<T>::kType != type) return;
    found = true;
    T m;
    e = decode_body(body, m);
    if (e == Errc::ok) {
      for_each_view(m,
                    [&](auto view) { EXPECT_TRUE(inside(view, body)) << frame_type_name(type); });
    }
  });
  if (!found) ADD_FAILURE() << "no body decoder for " << frame_type_name(type);
  return e;
}

}  // namespace qbus::proto::codec_test
