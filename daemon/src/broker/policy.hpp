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
// When no rule matches, the baseline decides on a system bus (below), else the default,
// except for `manage`: only a rule grants it (a queue's owner and root need no grant), so a
// policy whose default is allow does not hand every uid the other uids' queues.
//
// The baseline of a system bus (PolicySpec::system_bus): each uid may do every operation on
// the keys of its private namespace `user.<uid>.`, and root may do everything. It is
// consulted only when no rule matched, so any rule that matches beats it, whatever its
// specificity: a configured deny can close even a uid's own namespace.
//
// Direct messages (send_direct, decide_direct) are judged by rules of their own, which name
// targets instead of keys; see decide_direct.
//
// Thread-safety: a Policy is immutable once built; the Broker's thread uses it.
#pragma once

#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "broker/types.hpp"

namespace qbus::broker {

// send, receive, declare, request and manage are operations on a queue key; send_direct is
// a direct message to a process (SEND_DIRECT, SEND_REGION to a pid or client), judged by
// decide_direct.
enum class Operation : std::uint8_t { send, receive, declare, request, send_direct, manage };
// The key operations, manage included (what `"*"` means in the configuration).
inline constexpr std::uint8_t kAllOperations = 0x2F;
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
  // A send_direct rule names no keys but the processes its principals may (or may not)
  // send to, by the receiver's uid, by its primary or supplementary gid, or all of them.
  bool to_everyone = false;
  std::vector<std::uint32_t> to_uids;
  std::vector<std::uint32_t> to_gids;
  // Where the rule was written, for the audit line and policy-check: "policy.rules[2]" or
  // "/etc/qbus/policy.d/20-x.json: rules[3]". Empty: "rules[N]" by its index.
  std::string origin;
};

struct PolicySpec {
  bool default_allow = true;
  std::vector<PolicyRule> rules;
  // A system bus: the baseline (above) decides before the default.
  bool system_bus = false;
};

// Who asks. `groups` are the supplementary groups (SO_PEERGROUPS); they must outlive the
// call.
struct Principal {
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  std::span<const std::uint32_t> groups;
};

// The prefix of every private namespace: uid 1000's is `user.1000.`.
inline constexpr std::string_view kPrivateNamespacePrefix = "user.";

struct Decision {
  // What decided when no rule did (Decision::rule).
  static constexpr int kDefault = -1;
  static constexpr int kPrivateNamespace = -2;  // the baseline: the uid's own `user.<uid>.`
  static constexpr int kRoot = -3;  // the baseline: root may do everything; send_direct: any pair
  static constexpr int kSameUid = -4;  // send_direct: sender and receiver have the same uid
  bool allowed = true;
  int rule = kDefault;  // index of the deciding rule, or one of the constants above
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
  // A direct message from `from` to a process of `to` (the receiving inbox's owner). Of the
  // send_direct rules that name `from` and match `to`, the most specific decides: one that
  // names to's uid beats one that names one of its groups, which beats to_everyone; deny
  // wins ties. When none matches, a sender may send to its own uid and root to any
  // (Decision::kSameUid, Decision::kRoot); the default decides every other pair. Costs a
  // scan of the send_direct rules only (they are few; callers cache the answer per peer).
  Decision decide_direct(const Principal& from, const Principal& to) const;
  std::size_t rule_count() const { return spec_.rules.size(); }
  bool default_allow() const { return spec_.default_allow; }
  bool system_bus() const { return spec_.system_bus; }
  // What decided, for people: the rule's origin ("policy.rules[2]"), "the private namespace
  // user.1000." (for `uid`, the asking principal's), "root", "the same uid" or "the default".
  // `rule` as in Decision. Not for the per-message path: it builds a string.
  std::string describe(int rule, std::uint32_t uid) const;

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
  static bool in_private_namespace(std::uint32_t uid, std::string_view key);
  void walk(const Node& n, std::string_view rest, bool at_end, Operation op, const Principal& who,
            Decision& best, std::uint32_t& best_specificity, bool& any) const;

  PolicySpec spec_;
  EntryMap exact_;
  EntryMap prefixes_;
  std::size_t longest_prefix_ = 0;
  std::unique_ptr<Node> patterns_;
  std::vector<std::uint32_t> direct_;  // the send_direct rules, by index
};

// A peer's cached decisions, valid for one policy generation. Bounded: at kMaxEntries keys
// it is emptied and refilled, so a peer touching many keys costs at most that much memory.
struct PolicyCache {
  static constexpr std::size_t kMaxEntries = 1024;
  std::uint64_t generation = 0;
  // Per key: bit 2*op set when the operation was decided, bit 2*op+1 when it was allowed.
  using Map = std::unordered_map<std::string, std::uint16_t, StringHash, std::equal_to<>>;
  Map decided;
  // send_direct verdicts by the receiving connection's client id (a connection's identity
  // never changes, and a client id is never reused); bounded like `decided`.
  std::unordered_map<std::uint64_t, bool> direct;
  // The entry of the key asked last (nullptr after `decided` is emptied; map nodes do not
  // move): a producer sends runs of messages to one key, which is compared before it is
  // hashed.
  Map::value_type* last = nullptr;

  // Forgets every verdict, for policy generation `current`: `last` points into `decided`, so
  // the two are emptied together, whichever path notices the new generation first.
  void reset(std::uint64_t current) {
    decided.clear();
    direct.clear();
    last = nullptr;
    generation = current;
  }

  // True when `key` is the last key asked and `op` on it was allowed under the policy
  // generation `current`; false means only that the full lookup must answer.
  bool allows_again(std::uint64_t current, Operation op, std::string_view key) const {
    const auto allowed = static_cast<std::uint16_t>(2u << (2 * static_cast<unsigned>(op)));
    return last && generation == current && (last->second & allowed) && same_key(last->first, key);
  }

  // a == b without a call to memcmp, which costs more than the comparison for the short
  // keys of the per-message path: 8 bytes at a time, then 4, 2 and 1.
  static bool same_key(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    const char* x = a.data();
    const char* y = b.data();
    std::size_t n = a.size();
    for (; n >= 8; n -= 8, x += 8, y += 8)
      if (!same_bytes<std::uint64_t>(x, y)) return false;
    if (n >= 4) {
      if (!same_bytes<std::uint32_t>(x, y)) return false;
      n -= 4, x += 4, y += 4;
    }
    if (n >= 2) {
      if (!same_bytes<std::uint16_t>(x, y)) return false;
      n -= 2, x += 2, y += 2;
    }
    return n == 0 || *x == *y;
  }
  template <typename Word>
  static bool same_bytes(const char* x, const char* y) {
    Word u, v;
    std::memcpy(&u, x, sizeof u);
    std::memcpy(&v, y, sizeof v);
    return u == v;
  }
};

}  // namespace qbus::broker
