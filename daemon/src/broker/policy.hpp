// The access policy over queue keys (config/README.md, "policy"): who may send to, receive
// from, declare, send requests to or manage (purge, delete, re-declare with other options)
// which queues, by uid, gid (primary or supplementary) and key. Pure: the configuration layer
// resolves user and group names and validates patterns; the Broker asks decide() before it routes a
// queue operation (and caches the answer per peer and key, see PolicyCache).
//
// Evaluation. Of the rules that name the operation, name the asking principal and match
// the key, the most specific decides: an exact key beats every prefix and pattern, and a
// prefix or pattern with more literal characters (every character but the wildcard
// tokens `*` and `>`) beats one with fewer. At equal specificity deny wins over allow.
// When no rule matches, the policy's default decides, except for `manage`: only a rule
// grants it (a queue's owner and root need no grant), so a policy whose default is allow
// does not hand every uid the other uids' queues.
//
// Thread-safety: a Policy is immutable once built; the Broker's thread uses it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace qbus::broker {

enum class Operation : std::uint8_t { send, receive, declare, request, manage };
inline constexpr std::uint8_t kAllOperations = 0x1F;
constexpr std::uint8_t operation_bit(Operation op) {
  return static_cast<std::uint8_t>(1u << static_cast<unsigned>(op));
}
std::string_view operation_name(Operation op);

// One rule, as the configuration validated it: `keys` are exact keys or patterns
// (dot-separated tokens, `*` for one whole token, `>` as the last token for one or more),
// `prefixes` match every key that starts with them.
struct PolicyRule {
  bool allow = true;
  std::uint8_t operations = 0;  // operation_bit()s
  bool everyone = false;        // matches every principal
  std::vector<std::uint32_t> uids;
  std::vector<std::uint32_t> gids;  // primary or supplementary
  std::vector<std::string> keys;
  std::vector<std::string> prefixes;
};

struct PolicySpec {
  bool default_allow = true;
  std::vector<PolicyRule> rules;
};

// Who asks. `groups` are the supplementary groups (SO_PEERGROUPS); they must outlive the
// call.
struct Principal {
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  std::span<const std::uint32_t> groups;
};

struct Decision {
  bool allowed = true;
  int rule = -1;  // index of the deciding rule, -1 for the default
};

struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

// The rules compiled to lookups: a hash map of exact keys, one of prefixes (probed once per
// prefix length of the key) and a trie of pattern tokens. A decision costs lookups in the
// key's length, not a scan of all rules.
class Policy {
 public:
  explicit Policy(PolicySpec spec);
  ~Policy();
  Policy(const Policy&) = delete;
  Policy& operator=(const Policy&) = delete;

  Decision decide(Operation op, const Principal& who, std::string_view key) const;
  std::size_t rule_count() const { return spec_.rules.size(); }
  bool default_allow() const { return spec_.default_allow; }

 private:
  struct Entry {
    std::uint32_t rule;
    std::uint32_t specificity;
  };
  using EntryMap = std::unordered_map<std::string, std::vector<Entry>, StringHash, std::equal_to<>>;
  struct Node;

  void add_pattern(std::string_view pattern, Entry e);
  void consider(const std::vector<Entry>& entries, Operation op, const Principal& who,
                Decision& best, std::uint32_t& best_specificity, bool& any) const;
  void walk(const Node& n, std::string_view rest, bool at_end, Operation op, const Principal& who,
            Decision& best, std::uint32_t& best_specificity, bool& any) const;

  PolicySpec spec_;
  EntryMap exact_;
  EntryMap prefixes_;
  std::size_t longest_prefix_ = 0;
  std::unique_ptr<Node> patterns_;
};

// A peer's cached decisions, valid for one policy generation. Bounded: at kMaxEntries keys
// it is emptied and refilled, so a peer touching many keys costs at most that much memory.
struct PolicyCache {
  static constexpr std::size_t kMaxEntries = 1024;
  std::uint64_t generation = 0;
  // Per key: bit 2*op set when the operation was decided, bit 2*op+1 when it was allowed.
  std::unordered_map<std::string, std::uint16_t, StringHash, std::equal_to<>> decided;
};

}  // namespace qbus::broker
