// The built-in values of qbusd's limits, from the one table of them (limits.def), and
// what a program needs to walk that table. Data only: no JSON, no I/O, no state. The
// broker core takes its defaults from here (docs/architecture.md, "Layers"), so that a
// default is written once whether qbusd reads a file or a unit test builds a Broker.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <string_view>

#include "qbus/proto/codec.hpp"

namespace qbus::config {

// How a reload treats a limit (the `apply` column of limits.def).
enum class Apply : std::uint8_t {
  live,      // the new value takes effect for new work
  restart,   // logged as "FIELD changed; restart qbusd to apply"; the running value stays
  obsolete,  // accepted and ignored; absent from the effective configuration
};

// Every limit with its built-in value, one member per row of limits.def.
struct LimitValues {
#define QBUS_LIMIT(key, type, min, max, def, apply, owner, member, doc) type key = def;
#include "qbus/config/limits.def"
#undef QBUS_LIMIT
};
inline constexpr LimitValues kLimitDefaults{};

// One row of limits.def as data, for code that walks every limit.
struct LimitSpec {
  std::string_view key;  // under "limits"
  bool wide;             // std::uint64_t; otherwise std::uint32_t
  std::uint64_t min;
  std::uint64_t max;
  std::uint64_t def;
  Apply apply;
  std::string_view doc;
};
inline constexpr LimitSpec kLimits[] = {
#define QBUS_LIMIT(key, type, min, max, def, apply, owner, member, doc) \
  {#key, sizeof(type) == 8, min, max, def, Apply::apply, doc},
#include "qbus/config/limits.def"
#undef QBUS_LIMIT
};

// Calls f(spec, values.KEY...) for every row of limits.def, in its order, with the
// same-named member of each of `values` (LimitValues or Config, const or not): one
// `values` reads or sets a limit, several compare them.
template <typename F, typename... Values>
constexpr void for_each_limit(F&& f, Values&... values) {
  std::size_t row = 0;
#define QBUS_LIMIT(key, type, min, max, def, apply, owner, member, doc) \
  f(kLimits[row++], values.key...);
#include "qbus/config/limits.def"
#undef QBUS_LIMIT
}

// The bounds of one queue or inbox: the "queue_defaults" and "inbox" sections and each
// entry of "queues".
struct QueueBounds {
  std::uint32_t max_messages;
  std::uint64_t max_bytes;
  proto::Overflow overflow;
};
inline constexpr QueueBounds kQueueDefaults{100'000, 64ull << 20, proto::Overflow::block};
// Each process's inbox for direct messages.
inline constexpr QueueBounds kInboxDefaults{10'000, 16ull << 20, proto::Overflow::reject};

}  // namespace qbus::config
