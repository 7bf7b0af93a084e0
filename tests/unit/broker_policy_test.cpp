// The Broker's enforcement of the access policy (broker/policy.hpp): each queue operation
// asks it, a refusal is permission_denied naming the operation and key and loses nothing
// else, replies pass, and replacing the policy voids the cached decisions.
#include <memory>

#include "broker_fixture.hpp"

namespace qbus::broker::fakes {
namespace {

constexpr std::uint32_t kOwner = 0;
constexpr std::uint32_t kNobody = 65534;
constexpr std::uint32_t kJobsGid = 4242;

// Denies everything on `secret...` to everyone but root, allows the rest. Root's rule is the
// more specific ("secret." over "secret"): at equal specificity the deny would win.
std::unique_ptr<const Policy> secret_policy(bool open_to_jobs = false) {
  PolicySpec spec;
  PolicyRule deny;
  deny.allow = false;
  deny.operations = kAllOperations;
  deny.everyone = true;
  deny.prefixes = {"secret"};
  PolicyRule root;
  root.operations = kAllOperations;
  root.uids = {kOwner};
  root.prefixes = {"secret."};
  spec.rules = {deny, root};
  if (open_to_jobs) {
    PolicyRule jobs;
    jobs.operations = operation_bit(Operation::receive);
    jobs.gids = {kJobsGid};
    jobs.keys = {"secret.jobs"};
    spec.rules.push_back(jobs);
  }
  return std::make_unique<Policy>(std::move(spec));
}

class BrokerPolicyTest : public BrokerTest {
 protected:
  PeerId connect_with_groups(std::uint32_t uid, std::vector<std::uint32_t> groups) {
    const PeerId peer = next_peer_++;
    EXPECT_EQ(broker().connect(peer, identity_for(peer, uid), now_, groups), Errc::ok);
    return peer;
  }
};

// A publish is judged as a send to its subject, a subject subscription as a receive of its
// pattern as written; the refusals say which, and a refused publish reaches nobody.
TEST_F(BrokerPolicyTest, PublishAndSubjectSubscriptionsAreJudgedAndRefusedNamingTheSubject) {
  broker().set_policy(secret_policy());
  const PeerId root = connect(kOwner);
  const PeerId nobody = connect(kNobody);
  SubjectSubscribe all;
  all.correlation = 5;
  all.pattern = "secret.>";
  EXPECT_EQ(broker().subscribe_subject(root, all, false).result, SendResult::deferred);

  PublishSend m;
  m.subject = "secret.plans";
  m.payload = bytes_of("x");
  const auto published = broker().publish(nobody, m, now_);
  EXPECT_EQ(published.error, Errc::permission_denied);
  EXPECT_EQ(published.text, "send to subject 'secret.plans' denied by policy");
  EXPECT_TRUE(payloads_to(root).empty());

  const auto subscribed = broker().subscribe_subject(nobody, all, false);
  EXPECT_EQ(subscribed.error, Errc::permission_denied);
  EXPECT_EQ(subscribed.text, "receive from subjects 'secret.>' denied by policy");
  EXPECT_EQ(broker().topics().subscription_count(), 1u);

  m.payload = bytes_of("root's");
  EXPECT_EQ(broker().publish(root, m, now_).error, Errc::ok);
  EXPECT_EQ(payloads_to(root), std::vector<std::string>{"root's"});
}

TEST_F(BrokerPolicyTest, EveryQueueOperationIsAskedAndRefusedWithTheKey) {
  broker().set_policy(secret_policy());
  const PeerId root = connect(kOwner);
  const PeerId nobody = connect(kNobody);
  put(root, "secret.jobs", "root-secret");

  const auto sent = send(nobody, "secret.jobs", "x");
  EXPECT_EQ(sent.result, SendResult::rejected);
  EXPECT_EQ(sent.error, Errc::permission_denied);
  EXPECT_EQ(sent.text, "send to queue 'secret.jobs' denied by policy");

  const auto corr = receive_now(nobody, "secret.jobs");
  const auto failed = failures_to(nobody);
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_EQ(failed[0].correlation, corr);
  EXPECT_EQ(failed[0].code, Errc::permission_denied);
  EXPECT_EQ(failed[0].text, "receive from queue 'secret.jobs' denied by policy");

  std::string text;
  EXPECT_EQ(declare_by(nobody, "secret.other", {}, &text), Errc::permission_denied);
  EXPECT_EQ(text, "declare of queue 'secret.other' denied by policy");
  EXPECT_EQ(broker().find("secret.other"), nullptr);

  const auto asked = request(nobody, 9, "secret.svc", "ping", 1000);
  EXPECT_EQ(asked.error, Errc::permission_denied);
  EXPECT_EQ(asked.text, "request to queue 'secret.svc' denied by policy");
  EXPECT_EQ(broker().find("secret.svc"), nullptr);

  // Nothing else was lost: the queue keeps root's message, and nobody may use other keys.
  EXPECT_EQ(depth("secret.jobs"), 1u);
  put(nobody, "public", "hello");
  receive_now(root, "secret.jobs");
  EXPECT_EQ(payloads_to(root), std::vector<std::string>{"root-secret"});
}

TEST_F(BrokerPolicyTest, EachDenialIsReportedOnceWithTheRuleThatDecided) {
  broker().set_policy(secret_policy());
  const PeerId root = connect(kOwner);
  const PeerId nobody = connect(kNobody);
  put(root, "secret.jobs", "root-secret");
  put(nobody, "public", "allowed, not reported");
  EXPECT_TRUE(sink_.denials.empty());

  send(nobody, "secret.jobs", "x");
  send(nobody, "secret.jobs", "x");  // the verdict from the cache, the rule worked out again
  receive_now(nobody, "secret.jobs");
  std::string text;
  declare_by(nobody, "secret.other", {}, &text);
  request(nobody, 9, "secret.svc", "ping", 1000);
  put(root, "secret.jobs", "still allowed, not reported");

  const std::vector<Denial> expected = {
      {nobody, Operation::send, "secret.jobs", 0},
      {nobody, Operation::send, "secret.jobs", 0},
      {nobody, Operation::receive, "secret.jobs", 0},
      {nobody, Operation::declare, "secret.other", 0},
      {nobody, Operation::request, "secret.svc", 0},
  };
  EXPECT_EQ(sink_.denials, expected);
}

TEST_F(BrokerPolicyTest, ADenialByTheDefaultIsReportedAsTheDefault) {
  PolicyRule root;
  root.operations = kAllOperations;
  root.uids = {kOwner};
  root.prefixes = {"jobs."};
  broker().set_policy(std::make_unique<Policy>(PolicySpec{false, {root}}));
  const PeerId nobody = connect(kNobody);
  EXPECT_EQ(send(nobody, "jobs.a", "x").error, Errc::permission_denied);
  EXPECT_EQ(send(nobody, "jobs.a", "x").error, Errc::permission_denied);
  const std::vector<Denial> expected = {{nobody, Operation::send, "jobs.a", -1},
                                        {nobody, Operation::send, "jobs.a", -1}};
  EXPECT_EQ(sink_.denials, expected);
}

TEST_F(BrokerPolicyTest, ASupplementaryGroupIsAPrincipal) {
  broker().set_policy(secret_policy(/*open_to_jobs=*/true));
  const PeerId root = connect(kOwner);
  const PeerId member = connect_with_groups(kNobody, {7, kJobsGid});
  const PeerId outsider = connect_with_groups(kNobody, {7});
  put(root, "secret.jobs", "one");
  receive_now(outsider, "secret.jobs");
  ASSERT_EQ(failures_to(outsider).size(), 1u);
  EXPECT_EQ(failures_to(outsider)[0].code, Errc::permission_denied);
  receive_now(member, "secret.jobs");
  EXPECT_EQ(payloads_to(member), std::vector<std::string>{"one"});
  EXPECT_TRUE(failures_to(member).empty());
  // The group rule names receive only.
  EXPECT_EQ(send(member, "secret.jobs", "x").error, Errc::permission_denied);
}

TEST_F(BrokerPolicyTest, ReplacingThePolicyVoidsCachedDecisions) {
  broker().set_policy(secret_policy());
  const PeerId root = connect(kOwner);
  const PeerId member = connect_with_groups(kNobody, {kJobsGid});
  put(root, "secret.jobs", "kept");
  receive_now(member, "secret.jobs");  // denied, and cached
  receive_now(member, "secret.jobs");  // denied from the cache
  EXPECT_EQ(failures_to(member).size(), 2u);

  broker().set_policy(secret_policy(/*open_to_jobs=*/true));
  receive_now(member, "secret.jobs");
  EXPECT_EQ(payloads_to(member), std::vector<std::string>{"kept"});
  EXPECT_EQ(failures_to(member).size(), 2u);

  // And back: no policy at all allows everything again.
  broker().set_policy(nullptr);
  put(member, "secret.jobs", "open");
}

TEST_F(BrokerPolicyTest, DecisionsStayRightPastTheCacheBound) {
  // More keys than a peer's cache holds: it starts over, and every answer is still the
  // policy's.
  broker().set_policy(secret_policy());
  const PeerId nobody = connect(kNobody);
  for (std::size_t round = 0; round < 2; ++round) {
    for (std::size_t i = 0; i < PolicyCache::kMaxEntries + 10; ++i) {
      const std::string n = std::to_string(i);
      EXPECT_EQ(send(nobody, "secret.k" + n, "x").error, Errc::permission_denied) << n;
      EXPECT_EQ(send(nobody, "open.k" + n, "x").error, Errc::ok) << n;
    }
  }
}

TEST_F(BrokerPolicyTest, TheKeyAllowedLastIsNeverTakenForAnother) {
  // A peer's last allowed key is compared with the next before anything is hashed: a key
  // that differs from it in one byte, at any place in keys of any length up to 20, gets
  // its own answer, and so does another operation on the same key.
  PolicyRule deny;
  deny.allow = false;
  deny.operations = kAllOperations;
  deny.everyone = true;
  std::vector<std::pair<std::string, std::string>> pairs;  // allowed, then denied
  for (std::size_t len = 1; len <= 20; ++len) {
    for (std::size_t at = 0; at < len; ++at) {
      std::string denied(len, 'a');
      denied[at] = 'b';
      deny.keys.push_back(denied);
      pairs.emplace_back(std::string(len, 'a'), denied);
    }
  }
  broker().set_policy(std::make_unique<Policy>(PolicySpec{true, {deny}}));
  const PeerId nobody = connect(kNobody);
  for (const auto& [allowed, denied] : pairs) {
    EXPECT_EQ(send(nobody, allowed, "x").error, Errc::ok) << allowed;
    EXPECT_EQ(send(nobody, denied, "x").error, Errc::permission_denied) << denied;
    EXPECT_EQ(send(nobody, allowed, "x").error, Errc::ok) << allowed;
  }

  broker().set_policy(secret_policy(/*open_to_jobs=*/true));
  const PeerId root = connect(kOwner);
  const PeerId member = connect_with_groups(kNobody, {kJobsGid});
  put(root, "secret.jobs", "for the group");
  receive_now(member, "secret.jobs");
  EXPECT_EQ(payloads_to(member), std::vector<std::string>{"for the group"});
  EXPECT_EQ(send(member, "secret.jobs", "x").error, Errc::permission_denied);
}

TEST_F(BrokerPolicyTest, RepliesPassUnderADenyingDefault) {
  // Nothing is allowed but nobody's request on "svc" and root's receive from it; the reply
  // is not a queue operation and is never asked about.
  PolicyRule ask;
  ask.operations = operation_bit(Operation::request);
  ask.uids = {kNobody};
  ask.keys = {"svc"};
  PolicyRule serve;
  serve.operations = operation_bit(Operation::receive);
  serve.uids = {kOwner};
  serve.keys = {"svc"};
  broker().set_policy(std::make_unique<Policy>(PolicySpec{false, {ask, serve}}));
  const PeerId requester = connect(kNobody);
  const PeerId worker = connect(kOwner);
  ASSERT_EQ(request(requester, 7, "svc", "ping", 1000).result, SendResult::accepted);
  receive_now(worker, "svc");
  ASSERT_EQ(sink_.deliveries.size(), 1u);
  EXPECT_EQ(reply(worker, requester, sink_.deliveries[0].request_id, "pong").result,
            SendResult::accepted);
  EXPECT_EQ(payloads_to(requester), std::vector<std::string>{"pong"});
  EXPECT_EQ(send(worker, "svc", "x").error, Errc::permission_denied);
}

}  // namespace
}  // namespace qbus::broker::fakes
