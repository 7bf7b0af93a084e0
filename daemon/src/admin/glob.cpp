// The admin socket's glob matcher (glob.hpp).
#include "admin/glob.hpp"

namespace qbus::daemon {
namespace {

// The index just past the bracket expression opening at p[i] == '['; npos when unclosed.
std::size_t class_end(std::string_view p, std::size_t i) {
  std::size_t j = i + 1;
  if (j < p.size() && (p[j] == '!' || p[j] == '^')) ++j;
  if (j < p.size() && p[j] == ']') ++j;
  while (j < p.size() && p[j] != ']')
    j += p[j] == '\\' ? 2 : 1;
  return j < p.size() ? j + 1 : std::string_view::npos;
}

// Whether byte c is in the bracket expression p[i, end).
bool class_matches(std::string_view p, std::size_t i, std::size_t end, unsigned char c) {
  std::size_t j = i + 1;
  const bool negate = p[j] == '!' || p[j] == '^';
  if (negate) ++j;
  const std::size_t close = end - 1;
  bool found = false;
  while (j < close) {
    if (p[j] == '\\') ++j;
    const auto lo = static_cast<unsigned char>(p[j++]);
    auto hi = lo;
    // `a-z`; a `-` first or last is literal.
    if (j + 1 < close && p[j] == '-') {
      std::size_t k = j + 1;
      if (p[k] == '\\') ++k;
      hi = static_cast<unsigned char>(p[k]);
      j = k + 1;
    }
    if (c >= lo && c <= hi) found = true;
  }
  return found != negate;
}

}  // namespace

std::string pattern_problem(std::string_view p, std::size_t max_size) {
  if (p.empty()) return "the pattern is empty";
  if (p.size() > max_size) {
    return "the pattern is longer than " + std::to_string(max_size) + " bytes";
  }
  for (std::size_t i = 0; i < p.size();) {
    if (p[i] == '\\') {
      if (i + 1 == p.size()) return "the pattern ends in a lone backslash";
      i += 2;
    } else if (p[i] == '[') {
      const std::size_t end = class_end(p, i);
      if (end == std::string_view::npos) {
        return "'[' at byte " + std::to_string(i) + " has no closing ']'";
      }
      i = end;
    } else {
      ++i;
    }
  }
  return {};
}

// `p` must have passed pattern_problem(). A star remembers where to resume: on a mismatch
// the last star takes one byte more, which is enough for globs (every other element
// matches exactly one byte).
bool glob_matches(std::string_view p, std::string_view s) {
  constexpr auto npos = std::string_view::npos;
  std::size_t pi = 0, si = 0, star = npos, star_si = 0;
  while (si < s.size()) {
    if (pi < p.size() && p[pi] == '*') {
      star = ++pi;
      star_si = si;
      continue;
    }
    if (pi < p.size()) {
      std::size_t next = pi + 1;
      bool ok = false;
      if (p[pi] == '?') {
        ok = true;
      } else if (p[pi] == '[') {
        next = class_end(p, pi);
        ok = class_matches(p, pi, next, static_cast<unsigned char>(s[si]));
      } else if (p[pi] == '\\') {
        next = pi + 2;
        ok = p[pi + 1] == s[si];
      } else {
        ok = p[pi] == s[si];
      }
      if (ok) {
        pi = next;
        ++si;
        continue;
      }
    }
    if (star == npos) return false;
    pi = star;
    si = ++star_si;
  }
  while (pi < p.size() && p[pi] == '*')
    ++pi;
  return pi == p.size();
}

}  // namespace qbus::daemon
