// Glob patterns on queue keys for the admin socket's delete_matching, as fnmatch(3)
// without flags: `*` any run of bytes (dots included), `?` one byte, `[...]` one byte of a
// set (`a-z` ranges, `!` or `^` negates, a leading `]` is literal), a backslash quotes the
// next byte. A matcher of our own rather than fnmatch(3), so that its cost is known: at
// most key length x pattern length steps. Pure functions; thread-safe.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace qbus::daemon {

// One sentence about what is wrong with `pattern`, or empty when it is usable; patterns
// longer than `max_size` bytes are refused.
std::string pattern_problem(std::string_view pattern, std::size_t max_size);
// Whether `key` matches `pattern`, which must have passed pattern_problem().
bool glob_matches(std::string_view pattern, std::string_view key);

}  // namespace qbus::daemon
