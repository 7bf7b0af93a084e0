// qbus-bench: measures qbus end to end with real processes and the real daemon.
//
//   qbus-bench throughput [--producers P] [--consumers C] [--queues K] [--messages N]
//                         [--duration S] [--size BYTES] [--batch N] [--receive each|batch]
//                         [--send-batch N] [--ack] [--subscribe PREFETCH] [--ack-every K]
//                         [--phase both|enqueue|drain] [--durable always|batch|none|off]
//                         [--confirm N] [--state-dir DIR] [--runs R] [--address ADDR] [--json]
//   qbus-bench latency [--requests N] [--warmup N] [--size BYTES] [--runs R] [--rate R]
//                      [--address ADDR] [--json]
//   qbus-bench direct [--messages N] [--warmup N] [--size BYTES] [--runs R]
//                     [--throughput-messages N] [--rate R] [--address ADDR] [--json]
//   qbus-bench bulk [--sizes S,S,...] [--runs R] [--warmup N] [--address ADDR]
//                   [--tcp-address ADDR] [--json]
//   qbus-bench connections [--connections N] [--idle-seconds S] [--address ADDR] [--json]
//   qbus-bench memory [--messages N] [--size BYTES] [--json]
//   qbus-bench redelivery [--rounds N] [--warmup N] [--address ADDR] [--json]
//   qbus-bench recovery [--messages N] [--size BYTES] [--fill-fsync always|batch|none]
//                       [--runs R] [--state-dir DIR] [--drop-caches] [--json]
//   qbus-bench fanout [--subscribers N] [--messages N] [--size BYTES] [--receive each|next]
//                     [--slow block|drop_oldest|disconnect] [--idle-subscriptions K]
//                     [--region SIZE] [--warmup N] [--runs R] [--address ADDR] [--json]
//   qbus-bench async [--requests N] [--blocking-requests N] [--in-flight K] [--size BYTES]
//                    [--runs R] [--address ADDR] [--json]
//   qbus-bench regions [--sizes 4K,1M,64M] [--runs R] [--paced N] [--interval-ms MS]
//                      [--address ADDR] [--json]
//
// Each mode is described at the top of its file: throughput.cpp, latency.cpp, direct.cpp
// (and fixed_rate.cpp for --rate), bulk.cpp, connections.cpp, memory.cpp, redelivery.cpp,
// recovery.cpp, fanout.cpp, async.cpp, regions.cpp; common.*, process.hpp and ping.* hold what they
// share.
//
// Unless --address is given, a private qbusd is started on a temporary socket. With --runs R
// the figures are the median run (per percentile for the latency tables). Processes
// synchronise through pipes and messages, never sleeps (only the fixed-rate sender waits for
// each request's due time, connections idles on purpose, and regions' paced sender keeps
// its period); nothing is pinned to a CPU.
#include <exception>
#include <iostream>

#include "modes.hpp"

int main(int argc, char** argv) {
  CLI::App app{"qbus-bench: end-to-end measurements of qbus", "qbus-bench"};
  app.require_subcommand(1);
  app.option_defaults()->always_capture_default();  // --help shows every default
  app.footer(
      "Each subcommand starts a private qbusd on a temporary socket unless --address is given, "
      "and prints its figures as tables (or one JSON object with --json). Processes are released "
      "by pipes and messages, never sleeps (only a --rate sender waits for each due time, and "
      "connections idles on purpose); nothing is pinned, and latency, direct and bulk show "
      "how "
      "many CPUs sysconf reports online. Run `qbus-bench SUBCOMMAND --help` for its options.");
  // Registered in the order --help lists them.
  const qbus::bench::Mode modes[] = {
      qbus::bench::throughput_mode(*app.add_subcommand(
          "throughput",
          "Producers -> one or K queues -> consumers: messages/s, MB/s, daemon CPU per message")),
      qbus::bench::latency_mode(*app.add_subcommand(
          "latency",
          "request()/reply() round trips through a queue, one outstanding at a time, beside a raw "
          "socketpair ping-pong measured in the same run")),
      qbus::bench::direct_mode(*app.add_subcommand(
          "direct",
          "PID-routed direct messages: send_to_pid()/receive_direct() ping-pong beside a raw "
          "socketpair ping-pong, then one-way direct-send throughput")),
      qbus::bench::bulk_mode(*app.add_subcommand(
          "bulk",
          "Large payloads one at a time: a shared-memory region handed over (until the consumer "
          "holds it, and until it has read every byte) beside the same bytes inline and a plain "
          "memcpy")),
      qbus::bench::connections_mode(*app.add_subcommand(
          "connections",
          "N idle connections: the daemon's RSS before and after, and its CPU time while idle")),
      qbus::bench::memory_mode(*app.add_subcommand(
          "memory",
          "The private daemon's RSS idle, with N messages queued, and after draining them")),
      qbus::bench::redelivery_mode(*app.add_subcommand(
          "redelivery",
          "A consumer holding a message in acknowledgement mode is SIGKILLed: the time until "
          "a waiting consumer has it (median and p99)")),
      qbus::bench::recovery_mode(*app.add_subcommand(
          "recovery",
          "N messages in a durable queue, qbusd SIGKILLed and started again: the time until "
          "it is ready, qbusd's own replay time, and the journal's size on disk")),
      qbus::bench::fanout_mode(*app.add_subcommand(
          "fanout",
          "Publish/subscribe: 1 publisher -> N subscribers, deliveries/s (optionally beside "
          "subscriptions that never match); or --region SIZE: a region fanned out to N "
          "subscribers beside the same region handed over to one")),
      qbus::bench::async_mode(*app.add_subcommand(
          "async",
          "AsyncClient request/reply with K requests in flight on one connection, against the "
          "blocking Client's request() one at a time, alternated in one run")),
      qbus::bench::regions_mode(*app.add_subcommand(
          "regions",
          "allocate_region() + send() until the receiver holds the region, with and without "
          "the client's region pool, beside a plain memfd; then a paced pooled sender")),
  };

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "qbus-bench: " << e.what() << "\n";
    return 2;
  }
  try {
    for (const auto& mode : modes) {
      if (mode.command->parsed()) return mode.run();
    }
  } catch (const std::exception& e) {
    std::cerr << "qbus-bench: " << e.what() << "\n";
    return 1;
  }
  return 2;  // unreachable: require_subcommand(1) made parse() throw
}
