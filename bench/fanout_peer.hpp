// The command line the fan-out peers of bench/compare.sh share (redis-pubsub,
// nats-pubsub): the measurement's options, and main's parse-run-report frame.
#pragma once

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "fanout_harness.hpp"

namespace qbus::bench::fanout {

struct PeerOptions {
  Spec spec;
  int runs = 3;
  bool json = false;
};

inline void add_peer_options(CLI::App& app, PeerOptions& o) {
  app.add_option("--subscribers", o.spec.subscribers, "Subscriber processes")
      ->check(CLI::Range(1, 256));
  app.add_option("--messages", o.spec.messages, "Messages published")
      ->check(CLI::Range(1LL, 1'000'000'000LL));
  app.add_option("--size", o.spec.size, "Payload bytes")->check(CLI::Range(0, 1 << 20));
  app.add_option("--runs", o.runs, "Runs; the median is reported")->check(CLI::Range(1, 99));
  app.add_flag("--json", o.json, "One JSON object instead of the table");
}

// Prints the runs of a peer system (redis-pubsub, nats-pubsub) as qbus-bench fanout prints
// its own: the run with the median rate, as a table or one JSON object; 1 when it lost
// deliveries. `setup` says in a few words how the system was driven.
inline int report(const char* system, const Spec& spec, const std::vector<Result>& runs,
                  const std::string& setup, bool json) {
  const Result& m = runs[median_run(runs.size(), [&](std::size_t i) { return runs[i]; })];
  if (json) {
    std::printf(
        "{\"benchmark\":\"fanout\",\"system\":\"%s\",\"setup\":\"%s\",\"subscribers\":%d,"
        "\"messages\":%lld,\"size\":%zu,\"runs\":%zu,\"deliveries_per_second\":%.0f,"
        "\"publishes_per_second\":%.0f,\"delivered\":%lld,\"expected\":%lld,"
        "\"run_deliveries_per_second\":[",
        system, setup.c_str(), spec.subscribers, spec.messages, spec.size, runs.size(),
        m.deliveries_per_second(), static_cast<double>(spec.messages) / m.seconds, m.delivered,
        m.expected);
    for (std::size_t i = 0; i < runs.size(); ++i)
      std::printf("%s%.0f", i ? "," : "", runs[i].deliveries_per_second());
    std::printf("]}\n");
  } else {
    std::printf(
        "%s fanout: 1 publisher -> %d subscriber(s); %s\n  %lld x %zu B; median of %zu run(s)\n",
        system, spec.subscribers, setup.c_str(), spec.messages, spec.size, runs.size());
    std::printf("  %-28s %14.0f\n", "deliveries/s", m.deliveries_per_second());
    std::printf("  %-28s %14.0f\n", "publishes/s", static_cast<double>(spec.messages) / m.seconds);
    std::printf("  %-28s %14lld of %lld\n", "delivered", m.delivered, m.expected);
    for (const auto& r : runs)
      std::printf("  run: %.0f deliveries/s\n", r.deliveries_per_second());
  }
  if (m.lost() == 0) return 0;
  std::fprintf(stderr, "%s fanout: %lld deliveries lost\n", system, m.lost());
  return 1;
}

// Runs the measurement o.runs times with the peer's subscriber and publisher, and reports.
inline int run_peer(const char* system, const PeerOptions& o, const std::string& setup,
                    const Subscriber& subscriber, const Publisher& publisher) {
  std::vector<Result> runs;
  for (int i = 0; i < o.runs; ++i)
    runs.push_back(run_once(o.spec, subscriber, publisher));
  return report(system, o.spec, runs, setup, o.json);
}

// Parses the command line into what `app` declared and returns run()'s exit code; an
// exception is one line "NAME: what" on stderr and exit code 1.
template <typename Run>
int peer_main(CLI::App& app, int argc, char** argv, const char* name, Run run) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    return run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", name, e.what());
    return 1;
  }
}

}  // namespace qbus::bench::fanout
