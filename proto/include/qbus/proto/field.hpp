// The vocabulary frame bodies are described in, and the one reader, writer and sizer that
// walk a description (see frames.hpp for the descriptions, proto/PROTOCOL.md for the wire).
//
// A body's description is a list of fields in wire order. Every field owns some bytes of
// the body's fixed part (an integer, a reserved zero, or the length of a string); string
// bytes and the payload follow the fixed part, in field order. That one rule reproduces
// every layout of protocol v1, including HELLO's two lengths before its two strings.
//
// Everything here is a template over the description, so each body's code is generated at
// compile time: no virtual call, no table walked at run time, no allocation. The fixed
// part is bounds-checked once, then read at constant offsets. Like the rest of the codec,
// these functions are pure and never throw; decoded views borrow from the input span.
//
// Decoding checks in a fixed order, which is part of the protocol's observable behaviour
// (it decides malformed_frame against invalid_key when a body has both faults):
//   1. the fixed part is present and every fixed field passes its own check;
//   2. each string in turn is present (malformed_frame) and, for a key, valid (invalid_key);
//   3. the body has no trailing bytes unless it ends in a payload;
//   4. the body's own rule (Layout<T>::check), for what involves several fields.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>
#include <type_traits>
#include <utility>

#include "qbus/errc.hpp"

namespace qbus::proto {

using Bytes = std::span<const std::byte>;
using MutableBytes = std::span<std::byte>;

// Keys are 1..255 bytes of [A-Za-z0-9._:/-].
bool is_valid_key(std::string_view key) noexcept;

// Specialised once per body type (frames.hpp) with its frame type, its `Fields` and,
// where fields constrain one another, a `static Errc check(const T&) noexcept`.
template <typename T>
struct Layout;

namespace wire {

// Explicit little-endian access keeps the wire format independent of the host; on a
// little-endian host it is one unaligned load or store (a byte loop was not merged by the
// compiler and cost ~10 instructions per byte on every frame).
template <typename T>
T load(const std::byte* p) noexcept {
  if constexpr (std::endian::native == std::endian::little) {
    T v;
    std::memcpy(&v, p, sizeof(T));
    return v;
  } else {
    using U = std::make_unsigned_t<T>;
    U v = 0;
    for (std::size_t i = 0; i < sizeof(T); ++i) {
      v = static_cast<U>(v | (static_cast<U>(std::to_integer<std::uint8_t>(p[i])) << (8 * i)));
    }
    return static_cast<T>(v);
  }
}

template <typename T>
void store(std::byte* p, T v) noexcept {
  if constexpr (std::endian::native == std::endian::little) {
    std::memcpy(p, &v, sizeof(T));
  } else {
    const auto u = static_cast<std::make_unsigned_t<T>>(v);
    for (std::size_t i = 0; i < sizeof(T); ++i) {
      p[i] = static_cast<std::byte>((u >> (8 * i)) & 0xFFu);
    }
  }
}

template <typename P>
struct MemberPointer;
template <typename C, typename V>
struct MemberPointer<V C::*> {
  using Value = V;
};
template <auto M>
using ValueOf = typename MemberPointer<decltype(M)>::Value;

}  // namespace wire

namespace field {

// Defaults for the parts of the field interface a kind does not use.
struct FixedOnly {
  static constexpr bool kRest = false;
  template <typename T>
  static Errc read_tail(Bytes, std::size_t&, const std::byte*, T&) noexcept {
    return Errc::ok;
  }
  template <typename T>
  static std::size_t tail_size(const T&) noexcept {
    return 0;
  }
  template <typename T>
  static void write_tail(std::byte*&, const T&) noexcept {}
  template <typename T, typename F>
  static void visit_view(const T&, F&&) noexcept {}
};

// An integer member (u8..u64, i32), little-endian, as it is.
template <auto M>
struct Int : FixedOnly {
  using V = wire::ValueOf<M>;
  static constexpr std::size_t kFixed = sizeof(V);
  template <typename T>
  static bool read(const std::byte* at, T& m) noexcept {
    m.*M = wire::load<V>(at);
    return true;
  }
  template <typename T>
  static void write(std::byte* at, const T& m) noexcept {
    wire::store<V>(at, m.*M);
  }
};

// An integer member refused below kMin as soon as it is read, before any key is looked at.
template <auto M, wire::ValueOf<M> kMin>
struct IntAtLeast : Int<M> {
  template <typename T>
  static bool read(const std::byte* at, T& m) noexcept {
    Int<M>::read(at, m);
    return m.*M >= kMin;
  }
};

// Reserved bytes: written as zero, refused unless zero.
template <typename U>
struct Zero : FixedOnly {
  static constexpr std::size_t kFixed = sizeof(U);
  template <typename T>
  static bool read(const std::byte* at, T&) noexcept {
    return wire::load<U>(at) == 0;
  }
  template <typename T>
  static void write(std::byte* at, const T&) noexcept {
    wire::store<U>(at, U{0});
  }
};

// A bool carried as one byte, 0 or 1; anything else is refused.
template <auto M>
struct Bool : FixedOnly {
  static constexpr std::size_t kFixed = 1;
  template <typename T>
  static bool read(const std::byte* at, T& m) noexcept {
    const auto v = wire::load<std::uint8_t>(at);
    m.*M = v == 1;
    return v <= 1;
  }
  template <typename T>
  static void write(std::byte* at, const T& m) noexcept {
    wire::store<std::uint8_t>(at, m.*M ? 1 : 0);
  }
};

// A one-byte enum; values outside [kLo, kHi] are refused.
template <auto M, wire::ValueOf<M> kLo, wire::ValueOf<M> kHi>
struct Enum : FixedOnly {
  using E = wire::ValueOf<M>;
  static_assert(sizeof(E) == 1);
  static constexpr std::size_t kFixed = 1;
  template <typename T>
  static bool read(const std::byte* at, T& m) noexcept {
    const auto v = wire::load<std::uint8_t>(at);
    m.*M = static_cast<E>(v);
    return v >= static_cast<std::uint8_t>(kLo) && v <= static_cast<std::uint8_t>(kHi);
  }
  template <typename T>
  static void write(std::byte* at, const T& m) noexcept {
    wire::store<std::uint8_t>(at, static_cast<std::uint8_t>(m.*M));
  }
};

// How a string's bytes are checked once present.
enum class Check : std::uint8_t {
  none,          // any bytes (or checked by the body's own rule)
  key,           // a valid key, else invalid_key
  key_or_empty,  // empty, or a valid key
};

// A string_view member: its length (type L, refused above kMax when read) sits in the fixed
// part, its bytes after the fixed part. kTruncate: the encoder cuts it to kMax instead of
// writing a length the receiver will refuse.
template <auto M, typename L, std::size_t kMax, Check kCheck = Check::none, bool kTruncate = false>
struct Str {
  static constexpr std::size_t kFixed = sizeof(L);
  static constexpr bool kRest = false;

  template <typename T>
  static bool read(const std::byte* at, T&) noexcept {
    return wire::load<L>(at) <= kMax;
  }
  template <typename T>
  static Errc read_tail(Bytes body, std::size_t& pos, const std::byte* at, T& m) noexcept {
    const std::size_t n = wire::load<L>(at);
    if (body.size() - pos < n) return Errc::malformed_frame;
    const std::string_view s(reinterpret_cast<const char*>(body.data() + pos), n);
    pos += n;
    m.*M = s;
    if constexpr (kCheck == Check::key) {
      if (!is_valid_key(s)) return Errc::invalid_key;
    } else if constexpr (kCheck == Check::key_or_empty) {
      if (!s.empty() && !is_valid_key(s)) return Errc::invalid_key;
    }
    return Errc::ok;
  }
  template <typename T>
  static std::size_t tail_size(const T& m) noexcept {
    if constexpr (kTruncate) return std::min((m.*M).size(), kMax);
    return (m.*M).size();
  }
  template <typename T>
  static void write(std::byte* at, const T& m) noexcept {
    wire::store<L>(at, static_cast<L>(tail_size(m)));
  }
  template <typename T>
  static void write_tail(std::byte*& p, const T& m) noexcept {
    const std::size_t n = tail_size(m);
    if (n != 0) std::memcpy(p, (m.*M).data(), n);
    p += n;
  }
  template <typename T, typename F>
  static void visit_view(const T& m, F&& f) noexcept {
    f(m.*M);
  }
};

// Keys: one length byte, then the key.
template <auto M>
using Key = Str<M, std::uint8_t, 255, Check::key>;
template <auto M>
using KeyOrEmpty = Str<M, std::uint8_t, 255, Check::key_or_empty>;
template <auto M>
using KeyBytes = Str<M, std::uint8_t, 255, Check::none>;

// A Bytes member holding the rest of the body; only the last field may be one.
template <auto M>
struct Payload {
  static constexpr std::size_t kFixed = 0;
  static constexpr bool kRest = true;
  template <typename T>
  static bool read(const std::byte*, T&) noexcept {
    return true;
  }
  template <typename T>
  static Errc read_tail(Bytes body, std::size_t& pos, const std::byte*, T& m) noexcept {
    m.*M = body.subspan(pos);
    pos = body.size();
    return Errc::ok;
  }
  template <typename T>
  static void write(std::byte*, const T&) noexcept {}
  template <typename T>
  static std::size_t tail_size(const T& m) noexcept {
    return (m.*M).size();
  }
  template <typename T>
  static void write_tail(std::byte*& p, const T& m) noexcept {
    const std::size_t n = (m.*M).size();
    if (n != 0) std::memcpy(p, (m.*M).data(), n);
    p += n;
  }
  template <typename T, typename F>
  static void visit_view(const T& m, F&& f) noexcept {
    f(m.*M);
  }
};

// A body's fields in wire order.
template <typename... Fs>
struct List {
  static constexpr std::size_t kFixed = (Fs::kFixed + ... + 0);
  static constexpr bool kEndsInPayload = (Fs::kRest || ... || false);
  static_assert(
      [] {
        const bool rest[] = {Fs::kRest..., false};
        for (std::size_t i = 0; i + 1 < sizeof...(Fs); ++i) {
          if (rest[i]) return false;
        }
        return true;
      }(),
      "only the last field may take the rest of the body");
  // Where each field's fixed bytes start.
  static constexpr std::array<std::size_t, sizeof...(Fs)> kOffsets = [] {
    std::array<std::size_t, sizeof...(Fs)> out{};
    std::size_t at = 0, i = 0;
    ((out[i++] = at, at += Fs::kFixed), ...);
    return out;
  }();

  template <typename T, std::size_t... I>
  static Errc read(Bytes body, T& m, std::index_sequence<I...>) noexcept {
    if (body.size() < kFixed) return Errc::malformed_frame;
    const std::byte* p = body.data();
    if (!(Fs::read(p + kOffsets[I], m) && ...)) return Errc::malformed_frame;
    std::size_t pos = kFixed;
    Errc e = Errc::ok;
    // Stops at the first string that is short or not a valid key.
    static_cast<void>((((e = Fs::read_tail(body, pos, p + kOffsets[I], m)) == Errc::ok) && ...));
    if (e != Errc::ok) return e;
    if (!kEndsInPayload && pos != body.size()) return Errc::malformed_frame;
    return Errc::ok;
  }

  template <typename T, std::size_t... I>
  static void write(MutableBytes out, const T& m, std::index_sequence<I...>) noexcept {
    std::byte* p = out.data();
    (Fs::write(p + kOffsets[I], m), ...);
    std::byte* tail = p + kFixed;
    (Fs::write_tail(tail, m), ...);
  }

  template <typename T>
  static std::size_t size(const T& m) noexcept {
    return kFixed + (Fs::tail_size(m) + ... + std::size_t{0});
  }

  template <typename T, typename F>
  static void visit_views(const T& m, F&& f) noexcept {
    (Fs::visit_view(m, f), ...);
  }

  static constexpr auto kIndices = std::index_sequence_for<Fs...>{};
};

}  // namespace field

template <typename T>
inline constexpr std::size_t fixed_size = Layout<T>::Fields::kFixed;

template <typename T>
inline constexpr bool ends_in_payload = Layout<T>::Fields::kEndsInPayload;

// Decodes a body (exactly header.body_size bytes) into `out`: Errc::ok or the reason the
// body is unacceptable (malformed_frame, invalid_key). Views in `out` borrow from `body`.
template <typename T>
Errc decode_body(Bytes body, T& out) noexcept {
  using F = typename Layout<T>::Fields;
  if (const Errc e = F::read(body, out, F::kIndices); e != Errc::ok) return e;
  if constexpr (requires { Layout<T>::check(out); }) {
    return Layout<T>::check(out);
  } else {
    return Errc::ok;
  }
}

// The body's size on the wire; callers reserve kHeaderSize + this.
template <typename T>
std::size_t body_size(const T& m) noexcept {
  return Layout<T>::Fields::size(m);
}

// Writes exactly body_size(m) bytes into `out`, which must be at least that large. Does
// not validate: the sender is responsible for keys and limits.
template <typename T>
void encode_body(MutableBytes out, const T& m) noexcept {
  using F = typename Layout<T>::Fields;
  F::write(out, m, F::kIndices);
}

// Calls f(view) for every string_view and Bytes a decoded body borrows from its input.
template <typename T, typename F>
void for_each_view(const T& m, F&& f) noexcept {
  Layout<T>::Fields::visit_views(m, f);
}

}  // namespace qbus::proto
