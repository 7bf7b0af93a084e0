#include "qbus/errc.hpp"

namespace qbus {
namespace {

struct Entry {
  Errc code;
  std::string_view name;
};

constexpr Entry kTable[] = {
#define QBUS_ERRC_ENTRY(name, value) {Errc::name, #name},
    QBUS_ERRC(QBUS_ERRC_ENTRY)
#undef QBUS_ERRC_ENTRY
};

}  // namespace

std::string_view errc_name(Errc code) noexcept {
  for (const auto& e : kTable) {
    if (e.code == code) return e.name;
  }
  return "unknown";
}

bool errc_is_known(std::uint16_t value) noexcept {
  for (const auto& e : kTable) {
    if (static_cast<std::uint16_t>(e.code) == value) return true;
  }
  return false;
}

}  // namespace qbus
