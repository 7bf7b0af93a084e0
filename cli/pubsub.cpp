// qbusctl pub and sub: publish a message on a subject, and print the messages of the
// subjects a pattern matches (PROTOCOL.md 18). `topics` and `subscriptions`, which ask the
// admin socket, are in admin.cpp with the other admin commands.
#include <qbus/client.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <iterator>

#include "commands.hpp"
#include "qbus/proto/frames.hpp"
#include "qbus/proto/subject.hpp"

namespace qbusctl {
namespace {

using std::chrono::milliseconds;

// The subject (or pattern) checked here, before connecting or reading stdin, with the
// library's words: a bad one is an error whether or not qbusd runs.
void check_subject(const std::string& s, bool pattern) {
  if (std::string why = qbus::proto::subject_refusal(s, pattern); !why.empty()) {
    throw qbus::Error(qbus::Errc::invalid_subject, why);
  }
}

qbus::SlowPolicy slow_policy(const std::string& name) {
  if (name == "drop_oldest") return qbus::SlowPolicy::drop_oldest;
  if (name == "disconnect") return qbus::SlowPolicy::disconnect;
  if (name == "block") return qbus::SlowPolicy::block;
  return qbus::SlowPolicy::broker_default;
}

bool write_message(const Globals& g, const SubArgs& a, const qbus::Message& m) {
  // Without --json or --headers the drops would go unseen: say so on stderr, which the
  // payloads on stdout do not mix with.
  if (m.dropped_before() != 0 && !g.json && !a.headers) {
    std::cerr << "qbusctl: sub " << a.pattern << ": the broker dropped " << m.dropped_before()
              << (m.dropped_before() == 1 ? " message" : " messages")
              << " before this one: this subscriber read too slowly\n";
  }
  if (g.json ? print_json(m, false, true) : print(m, a.headers)) return true;
  std::cerr << "qbusctl: cannot write to stdout\n";
  return false;
}

}  // namespace

qbus::Headers parse_headers(const std::vector<std::string>& args) {
  qbus::Headers out;
  for (const auto& a : args) {
    const auto eq = a.find('=');
    if (eq == std::string::npos || eq == 0) {
      throw UsageError("--header '" + a + "': use KEY=VALUE");
    }
    out.emplace_back(a.substr(0, eq), a.substr(eq + 1));
  }
  return out;
}

CLI::App* add_pub(CLI::App& app, PubArgs& a) {
  auto* pub = app.add_subcommand(
      "pub",
      "Publish MESSAGE (stdin when omitted) on SUBJECT to every subscription whose pattern "
      "matches it (needs a protocol-2 qbusd)");
  pub->add_option("SUBJECT", a.subject,
                  "Subject: dot-separated tokens of A-Z a-z 0-9 _ : / -, such as "
                  "sensors.kitchen.temp")
      ->required();
  pub->add_option("MESSAGE", a.message, "Message text; read from stdin when omitted");
  pub->add_option("--header", a.headers, "A header of the message, KEY=VALUE; repeatable")
      ->option_text("KEY=VALUE")
      ->allow_extra_args(false);  // one KEY=VALUE each time; MESSAGE may follow
  pub->add_flag("--retain", a.retain,
                "Keep the message as the subject's retained message, which every later "
                "subscription to a matching pattern gets first; an empty MESSAGE clears it");
  return pub;
}

int run_pub(const Globals& g, const PubArgs& a) {
  qbus::PublishOptions o;
  try {
    o.headers = parse_headers(a.headers);
  } catch (const UsageError& e) {
    throw UsageError(std::string("pub: ") + e.what());
  }
  check_subject(a.subject, false);
  o.retain = a.retain;
  o.confirm = true;  // exit 0 means the broker took it
  const std::string payload = a.message ? *a.message
                                        : std::string((std::istreambuf_iterator<char>(std::cin)),
                                                      std::istreambuf_iterator<char>());
  auto client = connect(g);
  client.publish(a.subject, payload, o);
  return 0;
}

CLI::App* add_sub(CLI::App& app, SubArgs& a) {
  auto* sub = app.add_subcommand(
      "sub",
      "Subscribe to the subjects PATTERN matches and print each message published on them "
      "(needs a protocol-2 qbusd)");
  sub->add_option("PATTERN", a.pattern,
                  "Subject pattern: a token '*' matches one token, a last token '>' one or "
                  "more (sensors.*.temp, sensors.>)")
      ->required();
  sub->add_option("--count", a.count,
                  "Exit after N messages; 0 keeps receiving until interrupted or --timeout "
                  "(default: 0)")
      ->option_text("N")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--timeout", a.timeout_ms, "Milliseconds to wait in all (default: forever)")
      ->option_text("MS")
      ->check(CLI::Range(-1LL, 2'000'000'000LL));
  sub->add_option("--group", a.group,
                  "Join queue group NAME: each message goes to one of the group's members")
      ->option_text("NAME");
  sub->add_option("--slow", a.slow,
                  "When this subscriber falls behind and its buffer in the broker is full: drop "
                  "the oldest message, disconnect it, or block the publishers (default: the "
                  "broker's, drop_oldest)")
      ->check(CLI::IsMember({"drop_oldest", "disconnect", "block"}));
  sub->add_option("--max-messages", a.max_messages,
                  "Messages the broker buffers for this subscriber (default and ceiling: "
                  "limits.subscription_max_messages)")
      ->option_text("N")
      ->check(CLI::Range(0LL, 4'294'967'295LL));
  sub->add_option("--max-bytes", a.max_bytes,
                  "Payload bytes the broker buffers for this subscriber (default and ceiling: "
                  "limits.subscription_max_bytes)")
      ->option_text("N")
      ->check(CLI::NonNegativeNumber);
  sub->add_flag("--headers", a.headers,
                "Print the message's headers, one 'KEY: VALUE' line each, before it");
  sub->fallthrough();  // `qbusctl sub PATTERN --json` as well as `qbusctl --json sub PATTERN`
  return sub;
}

int run_sub(const Globals& g, const SubArgs& a) {
  check_subject(a.pattern, true);
  if (!a.group.empty() && !qbus::proto::is_valid_key(a.group)) {
    throw qbus::Error(qbus::Errc::invalid_key,
                      "invalid queue group name '" + a.group.substr(0, 64) +
                          "': use 1-255 characters of A-Z a-z 0-9 . _ : / -");
  }
  qbus::SubjectOptions o;
  o.group = a.group;
  o.max_messages = static_cast<std::uint32_t>(a.max_messages);
  o.max_bytes = static_cast<std::uint64_t>(a.max_bytes);
  o.slow = slow_policy(a.slow);
  auto client = connect(g);
  auto sub = client.subscribe_subject(a.pattern, o);
  using Clock = std::chrono::steady_clock;
  const bool forever = a.timeout_ms < 0;
  const auto deadline = Clock::now() + milliseconds(forever ? 0 : a.timeout_ms);
  long long got = 0;
  while (a.count == 0 || got < a.count) {
    milliseconds wait = qbus::kForever;
    if (!forever) {
      wait = std::max(milliseconds(0),
                      std::chrono::duration_cast<milliseconds>(deadline - Clock::now()));
    }
    auto m = sub.next(wait);
    if (!m) break;
    if (!write_message(g, a, *m)) return kExitError;
    ++got;
  }
  if (got == 0) {
    std::cerr << "qbusctl: sub " << a.pattern << ": timed out with nothing received\n";
    return kExitTimeout;
  }
  return 0;
}

}  // namespace qbusctl
