// libFuzzer target for the access policy's parser (config/README.md, "Access policy").
//
// The input is read twice: as a drop-in policy file (parse_policy_rules) and as a whole
// config file (parse), whose "policy" section holds the same rules. Whatever parses must
// survive a round trip through the effective JSON (to_json_text, as the admin socket's
// config answer shows it): that JSON parses again, to the same rules. Since the parser
// validates every rule, the round trip also checks that no rule it accepted is one it
// would refuse. A violated invariant aborts, for libFuzzer and the replay driver alike.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "qbus/config/config.hpp"

namespace {

using qbus::config::Config;
using qbus::config::PolicyRuleSettings;
using qbus::config::PolicySettings;

[[noreturn]] void violated(const char* what, const std::string& detail, int line) {
  std::fprintf(stderr, "policy_fuzz: invariant violated at line %d: %s: %s\n", line, what,
               detail.c_str());
  std::abort();
}
#define CHECK(cond, detail) \
  if (!(cond)) violated(#cond, detail, __LINE__)

// What any rule the parser returns must be, whatever the input was.
void check_rule(const PolicyRuleSettings& r) {
  CHECK(r.everyone || !r.uids.empty() || !r.gids.empty(), "a rule that names nobody");
  const bool has_receivers = r.to_everyone || !r.to_uids.empty() || !r.to_gids.empty();
  // A send_direct rule names receivers and no keys; a rule of the key operations the reverse.
  if (r.operations & qbus::config::kSendDirectBit) {
    CHECK(r.operations == qbus::config::kSendDirectBit, std::to_string(r.operations));
    CHECK(r.keys.empty() && r.prefixes.empty(), "a send_direct rule with keys");
    CHECK(has_receivers, "a send_direct rule that sends to nobody");
    return;
  }
  CHECK(r.operations != 0 && (r.operations & ~qbus::config::kEveryKeyOperation) == 0,
        std::to_string(r.operations));
  CHECK(!r.keys.empty() || !r.prefixes.empty(), "a rule that matches no key");
  CHECK(!has_receivers, "a rule of the key operations with receivers");
}

// The effective JSON of `policy`, parsed again as a config file and as a drop-in, gives
// the same policy back.
void check_round_trip(const PolicySettings& policy) {
  Config c;
  c.policy = policy;
  const std::string text = qbus::config::to_json_text(c, "", "");
  auto again = qbus::config::parse(text);
  CHECK(again.config.has_value(), again.error + " in " + text);
  // The effective JSON always states the default, so it comes back as given.
  PolicySettings stated = policy;
  stated.default_set = true;
  CHECK(again.config->policy == stated, text);

  const auto root = nlohmann::json::parse(text);
  const std::string drop_in = nlohmann::json{{"rules", root["policy"]["rules"]}}.dump();
  std::string why;
  auto rules = qbus::config::parse_policy_rules(drop_in, why);
  CHECK(rules.has_value(), why + " in " + drop_in);
  CHECK(*rules == policy.rules, drop_in);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  std::string why;
  if (auto rules = qbus::config::parse_policy_rules(text, why)) {
    CHECK(rules->size() <= qbus::config::kMaxPolicyRules, std::to_string(rules->size()));
    PolicySettings p;
    p.configured = true;
    p.rules = std::move(*rules);
    for (const auto& r : p.rules)
      check_rule(r);
    check_round_trip(p);
  } else {
    CHECK(!why.empty() && why.find('\n') == std::string::npos, why);
  }

  auto whole = qbus::config::parse(text);
  if (whole.config) {
    const auto& p = whole.config->policy;
    for (const auto& r : p.rules)
      check_rule(r);
    if (p.configured) check_round_trip(p);
  } else {
    CHECK(!whole.error.empty(), "a refusal without a reason");
  }
  return 0;
}
