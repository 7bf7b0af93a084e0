#include "broker/policy.hpp"

#include <algorithm>
#include <charconv>
#include <limits>

namespace qbus::broker {

struct Policy::Node {
  std::unordered_map<std::string, std::unique_ptr<Node>, StringHash, std::equal_to<>> literal;
  std::unique_ptr<Node> star;
  std::vector<Entry> here;  // patterns that end at this node
  std::vector<Entry> rest;  // patterns whose `>` stands for what follows this node
};

namespace {

constexpr std::uint32_t kExact = std::numeric_limits<std::uint32_t>::max();

bool contains(const std::vector<std::uint32_t>& ids, std::uint32_t id) {
  return std::find(ids.begin(), ids.end(), id) != ids.end();
}

bool in_groups(const std::vector<std::uint32_t>& gids, const Principal& who) {
  if (contains(gids, who.gid)) return true;
  for (std::uint32_t g : who.groups)
    if (contains(gids, g)) return true;
  return false;
}

bool names(const PolicyRule& r, const Principal& who) {
  return r.everyone || contains(r.uids, who.uid) || in_groups(r.gids, who);
}

// How specifically a send_direct rule names the receiver `to`: 3 by uid, 2 by a group, 1
// as everyone, 0 not at all.
unsigned target_rank(const PolicyRule& r, const Principal& to) {
  if (contains(r.to_uids, to.uid)) return 3;
  if (in_groups(r.to_gids, to)) return 2;
  return r.to_everyone ? 1 : 0;
}

// Wildcards are not key characters (proto::is_valid_key), so they mark a pattern.
bool is_pattern(std::string_view key) {
  return key.find_first_of("*>") != std::string_view::npos;
}

// Literal characters: all but the wildcard tokens themselves.
std::uint32_t literal_length(std::string_view pattern) {
  std::uint32_t n = 0;
  std::size_t start = 0;
  while (true) {
    const auto dot = pattern.find('.', start);
    const auto token = pattern.substr(start, dot == std::string_view::npos ? dot : dot - start);
    if (token != "*" && token != ">") n += static_cast<std::uint32_t>(token.size());
    if (dot == std::string_view::npos) break;
    ++n;  // the separator
    start = dot + 1;
  }
  return n;
}

}  // namespace

std::string_view operation_name(Operation op) {
  switch (op) {
    case Operation::send:
      return "send";
    case Operation::receive:
      return "receive";
    case Operation::declare:
      return "declare";
    case Operation::request:
      return "request";
    case Operation::send_direct:
      return "send_direct";
    case Operation::manage:
      return "manage";
  }
  return "?";
}

Policy::Policy(PolicySpec spec) : spec_(std::move(spec)), patterns_(std::make_unique<Node>()) {
  for (std::uint32_t i = 0; i < spec_.rules.size(); ++i) {
    const PolicyRule& r = spec_.rules[i];
    if (r.operations & operation_bit(Operation::send_direct)) direct_.push_back(i);
    for (const auto& k : r.keys) {
      if (is_pattern(k)) {
        add_pattern(k, Entry{i, literal_length(k)});
      } else {
        exact_[k].push_back(Entry{i, kExact});
      }
    }
    for (const auto& p : r.prefixes) {
      prefixes_[p].push_back(Entry{i, static_cast<std::uint32_t>(p.size())});
      longest_prefix_ = std::max(longest_prefix_, p.size());
    }
  }
}

Policy::~Policy() = default;

void Policy::add_pattern(std::string_view pattern, Entry e) {
  Node* n = patterns_.get();
  std::size_t start = 0;
  while (true) {
    const auto dot = pattern.find('.', start);
    const auto token = pattern.substr(start, dot == std::string_view::npos ? dot : dot - start);
    if (token == ">") {  // valid patterns have it last only
      n->rest.push_back(e);
      return;
    }
    std::unique_ptr<Node>* next = nullptr;
    if (token == "*") {
      next = &n->star;
    } else {
      auto it = n->literal.find(token);
      if (it == n->literal.end()) it = n->literal.emplace(std::string(token), nullptr).first;
      next = &it->second;
    }
    if (!*next) *next = std::make_unique<Node>();
    n = next->get();
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  n->here.push_back(e);
}

void Policy::consider(const std::vector<Entry>& entries, Operation op, const Principal& who,
                      Decision& best, std::uint32_t& best_specificity, bool& any) const {
  for (const Entry& e : entries) {
    const PolicyRule& r = spec_.rules[e.rule];
    if (!(r.operations & operation_bit(op)) || !names(r, who)) continue;
    const bool better = !any || e.specificity > best_specificity ||
                        (e.specificity == best_specificity && best.allowed && !r.allow);
    if (better) {
      any = true;
      best_specificity = e.specificity;
      best = Decision{r.allow, static_cast<int>(e.rule)};
    }
  }
}

// `rest` is the part of the key not yet matched; `at_end` says that nothing is left (an
// empty `rest` may also be one empty last token).
void Policy::walk(const Node& n, std::string_view rest, bool at_end, Operation op,
                  const Principal& who, Decision& best, std::uint32_t& best_specificity,
                  bool& any) const {
  if (at_end) {
    consider(n.here, op, who, best, best_specificity, any);
    return;
  }
  consider(n.rest, op, who, best, best_specificity, any);
  const auto dot = rest.find('.');
  const auto token = rest.substr(0, dot);
  const bool last = dot == std::string_view::npos;
  const auto after = last ? std::string_view{} : rest.substr(dot + 1);
  if (auto it = n.literal.find(token); it != n.literal.end()) {
    walk(*it->second, after, last, op, who, best, best_specificity, any);
  }
  if (n.star) walk(*n.star, after, last, op, who, best, best_specificity, any);
}

Decision Policy::decide(Operation op, const Principal& who, std::string_view key) const {
  Decision best{spec_.default_allow && op != Operation::manage, Decision::kDefault};
  std::uint32_t best_specificity = 0;
  bool any = false;
  if (auto it = exact_.find(key); it != exact_.end()) {
    consider(it->second, op, who, best, best_specificity, any);
    if (any) return best;  // nothing is more specific than an exact key
  }
  const std::size_t longest = std::min(longest_prefix_, key.size());
  for (std::size_t len = 1; len <= longest; ++len) {
    if (auto it = prefixes_.find(key.substr(0, len)); it != prefixes_.end()) {
      consider(it->second, op, who, best, best_specificity, any);
    }
  }
  walk(*patterns_, key, false, op, who, best, best_specificity, any);
  if (!any && spec_.system_bus) {
    if (in_private_namespace(who.uid, key)) return Decision{true, Decision::kPrivateNamespace};
    if (who.uid == 0) return Decision{true, Decision::kRoot};
  }
  return best;
}

Decision Policy::decide_direct(const Principal& from, const Principal& to) const {
  Decision best{spec_.default_allow, -1};
  unsigned best_rank = 0;
  for (std::uint32_t i : direct_) {
    const PolicyRule& r = spec_.rules[i];
    if (!names(r, from)) continue;
    const unsigned rank = target_rank(r, to);
    if (rank == 0) continue;
    if (rank > best_rank || (rank == best_rank && best.allowed && !r.allow)) {
      best_rank = rank;
      best = Decision{r.allow, static_cast<int>(i)};
    }
  }
  if (best_rank > 0) return best;
  if (from.uid == to.uid) return Decision{true, Decision::kSameUid};
  if (from.uid == 0) return Decision{true, Decision::kRoot};
  return best;
}

bool Policy::in_private_namespace(std::uint32_t uid, std::string_view key) {
  if (!key.starts_with(kPrivateNamespacePrefix)) return false;
  key.remove_prefix(kPrivateNamespacePrefix.size());
  char digits[16];
  const auto end = std::to_chars(digits, digits + sizeof(digits), uid).ptr;
  const std::string_view id(digits, static_cast<std::size_t>(end - digits));
  return key.size() > id.size() && key.starts_with(id) && key[id.size()] == '.';
}

std::string Policy::describe(int rule, std::uint32_t uid) const {
  if (rule == Decision::kPrivateNamespace) {
    return "the private namespace " + std::string(kPrivateNamespacePrefix) + std::to_string(uid) +
           ".";
  }
  if (rule == Decision::kRoot) return "root";
  if (rule == Decision::kSameUid) return "the same uid";
  if (rule < 0 || static_cast<std::size_t>(rule) >= spec_.rules.size()) return "the default";
  const std::string& origin = spec_.rules[static_cast<std::size_t>(rule)].origin;
  return origin.empty() ? "rules[" + std::to_string(rule) + "]" : origin;
}

}  // namespace qbus::broker
