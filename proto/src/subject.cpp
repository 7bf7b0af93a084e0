#include "qbus/proto/subject.hpp"

namespace qbus::proto {
namespace {

constexpr bool is_token_byte(char c) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == ':' || c == '/' || c == '-';
}

}  // namespace

std::string_view subject_rule_broken(std::string_view s, bool pattern) noexcept {
  if (s.empty()) return "empty";
  if (s.size() > kMaxSubjectSize) return "longer than 255 bytes";
  std::size_t tokens = 0;
  std::string_view rest = s;
  // A trailing dot leaves an empty last token, which next_token cannot show: test it here.
  if (s.back() == '.') return "empty token (a dot at the end)";
  while (!rest.empty()) {
    const std::string_view token = next_token(rest);
    if (++tokens > kMaxSubjectTokens) return "more than 32 tokens";
    if (token.empty()) return "empty token (two dots, or a dot at the start)";
    if (token == "*" || token == ">") {
      if (!pattern) return "wildcard ('*' or '>') in a publish subject";
      if (token == ">" && !rest.empty()) return "'>' before the last token";
      continue;
    }
    for (const char c : token) {
      if (c == '*' || c == '>') {
        return pattern ? "wildcard that is not a whole token"
                       : "wildcard ('*' or '>') in a publish subject";
      }
      if (!is_token_byte(c)) return "byte outside [A-Za-z0-9_:/-] in a token";
    }
  }
  return {};
}

std::string subject_refusal(std::string_view s, bool pattern) {
  const std::string_view rule = subject_rule_broken(s, pattern);
  if (rule.empty()) return {};
  constexpr std::size_t kShown = 64;
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = pattern ? "invalid subject pattern \"" : "invalid subject \"";
  for (const char c : s.substr(0, kShown)) {
    const auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u < 0x7f && c != '"' && c != '\\') {
      out += c;
    } else {
      out += "\\x";
      out += kHex[u >> 4];
      out += kHex[u & 0xf];
    }
  }
  out += s.size() > kShown ? "\"...: " : "\": ";
  out += rule;
  return out;
}

bool subject_matches(std::string_view pattern, std::string_view subject) noexcept {
  while (!pattern.empty()) {
    const std::string_view want = next_token(pattern);
    if (want == ">") return !subject.empty();
    if (subject.empty()) return false;
    const std::string_view have = next_token(subject);
    if (want != "*" && want != have) return false;
  }
  return subject.empty();
}

}  // namespace qbus::proto
