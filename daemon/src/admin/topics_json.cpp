// The admin socket's publish/subscribe requests (docs/admin.md): `subscriptions`, every
// subject subscription with its subscriber and counts, and `topics`, the patterns, the
// retained messages and the totals.
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "admin/admin_server.hpp"
#include "broker/topics.hpp"
#include "net/connection.hpp"

namespace qbus::daemon {

using json = nlohmann::json;

json AdminServer::list_subscriptions(const json&) {
  // The subscriber's command name lives at the edge, with its connection.
  std::unordered_map<broker::PeerId, std::string> comm;
  server_.for_each_connection([&](const Connection& c) { comm[c.id()] = c.stats().comm; });
  json list = json::array();
  server_.broker().topics().for_each_subscription([&](const broker::TopicSubscription& s) {
    list.push_back(json{{"client", s.peer},
                        {"pid", s.subscriber.pid},
                        {"uid", s.subscriber.uid},
                        {"comm", comm[s.peer]},
                        {"id", s.id},
                        {"pattern", s.pattern},
                        {"group", s.group},
                        {"slow", broker::slow_policy_name(s.slow)},
                        {"max_messages", s.max_messages},
                        {"max_bytes", s.max_bytes},
                        {"buffered_messages", s.buffer.size()},
                        {"buffered_bytes", s.buffered_bytes},
                        {"matched", s.matched},
                        {"delivered", s.delivered},
                        {"dropped", s.dropped}});
  });
  return json{{"ok", true}, {"subscriptions", std::move(list)}};
}

json AdminServer::show_topics(const json&) {
  const broker::Topics& topics = server_.broker().topics();
  json patterns = json::array();
  topics.for_each_pattern([&](const broker::TopicNode& n) {
    // The node's pattern, from its path to the root.
    std::string pattern;
    for (const broker::TopicNode* p = &n; p->parent != nullptr; p = p->parent) {
      pattern = pattern.empty() ? p->token : p->token + "." + pattern;
    }
    std::size_t members = n.plain.size();
    for (const auto& g : n.groups)
      members += g->members.size();
    patterns.push_back(
        json{{"pattern", pattern}, {"subscriptions", members}, {"groups", n.groups.size()}});
  });
  json retained = json::array();
  topics.for_each_retained([&](const broker::Published& m) {
    retained.push_back(json{{"subject", m.subject},
                            {"bytes", m.charge()},
                            {"uid", m.sender.uid},
                            {"pid", m.sender.pid}});
  });
  const broker::TopicTotals& t = topics.totals();
  return json{{"ok", true},
              {"topics",
               {{"subscriptions", topics.subscription_count()},
                {"patterns", std::move(patterns)},
                {"published_total", t.published},
                {"unmatched_total", t.unmatched},
                {"delivered_total", t.delivered},
                {"dropped_total", t.dropped},
                {"disconnected_total", t.disconnected},
                {"retained_messages", topics.retained_count()},
                {"retained_bytes", topics.retained_bytes()},
                {"retained", std::move(retained)}}}};
}

}  // namespace qbus::daemon
