// qbus-bench's subcommands. Each mode declares its options on its subcommand and returns
// what runs it once the command line is parsed; the options live in that callable,
// so it must outlive app.parse() (main keeps both). Single-threaded.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <memory>

namespace qbus::bench {

struct Mode {
  CLI::App* command;         // parsed(): this mode was asked for
  std::function<int()> run;  // the exit code; throws std::exception on failure
};

// Binds subcommand `cmd` to a mode: `add_options(cmd, options)` declares its options into an
// Options object that the returned Mode keeps alive, and `run(options)` runs the mode.
template <typename Options, typename AddOptions, typename Run>
Mode bind_mode(CLI::App& cmd, AddOptions add_options, Run run) {
  const auto o = std::make_shared<Options>();
  add_options(cmd, *o);
  return {&cmd, [o, run] { return run(*o); }};
}

// Each takes its subcommand, made by main with the name and the --help line.
Mode throughput_mode(CLI::App& cmd);
Mode latency_mode(CLI::App& cmd);
Mode direct_mode(CLI::App& cmd);
Mode bulk_mode(CLI::App& cmd);
Mode connections_mode(CLI::App& cmd);
Mode memory_mode(CLI::App& cmd);
Mode redelivery_mode(CLI::App& cmd);
Mode recovery_mode(CLI::App& cmd);
Mode fanout_mode(CLI::App& cmd);
Mode async_mode(CLI::App& cmd);
Mode regions_mode(CLI::App& cmd);

}  // namespace qbus::bench
