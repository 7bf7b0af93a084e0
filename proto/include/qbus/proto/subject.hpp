// Subjects and subscription patterns (proto/PROTOCOL.md 18.1): dot-separated tokens of
// [A-Za-z0-9_:/-]; in a pattern a whole token may be `*` (one token) and the last may be
// `>` (one or more). Shared by the broker, which refuses what breaks a rule, and libqbus,
// which checks before sending.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace qbus::proto {

inline constexpr std::size_t kMaxSubjectSize = 255;
inline constexpr std::size_t kMaxSubjectTokens = 32;

// Why `s` is not a valid subject (`pattern`: a valid pattern), as a phrase naming the rule
// ("empty token", "'>' before the last token", ...); empty when it is valid. The phrase is
// a static string.
std::string_view subject_rule_broken(std::string_view s, bool pattern) noexcept;
// The refusal of `s` for an error text, such as `invalid subject "a..b": empty token (...)`
// or `invalid subject pattern "a*": ...`, with at most 64 bytes of `s` shown and bytes that
// are not printable ASCII as \xNN (a bad subject cannot garble the text that names it);
// empty when `s` is valid. One wording for the broker, libqbus and qbusctl.
std::string subject_refusal(std::string_view s, bool pattern);

inline bool is_valid_subject(std::string_view s) noexcept {
  return subject_rule_broken(s, false).empty();
}
inline bool is_valid_pattern(std::string_view s) noexcept {
  return subject_rule_broken(s, true).empty();
}

// Whether `subject` (valid) matches `pattern` (valid).
bool subject_matches(std::string_view pattern, std::string_view subject) noexcept;

// Splits off the first token of `rest` (valid subject or pattern), leaving the remainder
// without its dot in `rest`; empty `rest` afterwards means it was the last token.
constexpr std::string_view next_token(std::string_view& rest) noexcept {
  const std::size_t dot = rest.find('.');
  const std::string_view token = rest.substr(0, dot);
  rest = dot == std::string_view::npos ? std::string_view{} : rest.substr(dot + 1);
  return token;
}

}  // namespace qbus::proto
