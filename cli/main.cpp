// qbusctl: the command-line face of qbus. Exit codes: 0 success, 1 error (one line on
// stderr), 2 usage error, 3 recv timed out with nothing received.
#include <qbus/client.hpp>

#include <unistd.h>
#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <iterator>
#include <optional>

namespace {

constexpr int kExitError = 1;
constexpr int kExitUsage = 2;
constexpr int kExitTimeout = 3;

struct Globals {
  std::string address;
};

qbus::Client connect(const Globals& g) {
  qbus::ClientOptions o;
  o.address = g.address;
  o.name = "qbusctl";
  return qbus::Client(o);
}

std::string read_stdin() {
  std::string data((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  return data;
}

int cmd_send(const Globals& g, const std::string& key, const std::optional<std::string>& message) {
  const std::string payload = message ? *message : read_stdin();
  auto client = connect(g);
  client.send_confirmed(key, payload);
  return 0;
}

int cmd_recv(const Globals& g, const std::string& key, long long timeout_ms, long long count) {
  using namespace std::chrono;
  auto client = connect(g);
  const bool forever = timeout_ms < 0;
  const auto deadline = steady_clock::now() + milliseconds(forever ? 0 : timeout_ms);
  long long got = 0;
  while (count == 0 || got < count) {
    milliseconds wait = qbus::kForever;
    if (!forever) {
      wait = duration_cast<milliseconds>(deadline - steady_clock::now());
      if (wait.count() < 0) wait = milliseconds(0);
    }
    const std::size_t want = count == 0 ? 1024 : static_cast<std::size_t>(count - got);
    auto batch = client.receive_batch(key, want, wait);
    if (batch.empty()) break;
    for (const auto& m : batch) {
      std::fwrite(m.text().data(), 1, m.size(), stdout);
      std::fputc('\n', stdout);
      ++got;
    }
    if (std::fflush(stdout) != 0) {
      std::cerr << "qbusctl: cannot write to stdout\n";
      return kExitError;
    }
  }
  if (got == 0) {
    std::cerr << "qbusctl: recv " << key << ": timed out with nothing received\n";
    return kExitTimeout;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"qbusctl: send, receive and inspect qbus queues", "qbusctl"};
  app.require_subcommand(1);
  Globals g;
  app.add_option("--address", g.address,
                 "Broker address, unix:/path (default: $QBUS_ADDRESS, then the default socket)")
      ->option_text("ADDR");

  auto* send = app.add_subcommand("send", "Send MESSAGE (stdin when omitted) to queue KEY");
  std::string send_key;
  std::optional<std::string> send_message;
  send->add_option("KEY", send_key, "Queue key")->required();
  send->add_option("MESSAGE", send_message, "Message text; read from stdin when omitted");

  auto* recv = app.add_subcommand("recv", "Receive from queue KEY; each payload then a newline");
  std::string recv_key;
  long long timeout_ms = -1;
  long long count = 1;
  recv->add_option("KEY", recv_key, "Queue key")->required();
  recv->add_option("--timeout", timeout_ms, "Milliseconds to wait in all (default: forever)")
      ->option_text("MS")
      ->check(CLI::Range(-1LL, 2'000'000'000LL));
  recv->add_option("--count", count, "Messages to receive; 0 keeps receiving (default: 1)")
      ->option_text("N")
      ->check(CLI::NonNegativeNumber);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "qbusctl: " << e.what() << "\nRun 'qbusctl --help' for usage.\n";
    return kExitUsage;
  }

  try {
    if (send->parsed()) return cmd_send(g, send_key, send_message);
    if (recv->parsed()) return cmd_recv(g, recv_key, timeout_ms, count);
  } catch (const qbus::Error& e) {
    std::cerr << "qbusctl: " << e.what() << "\n";
    return kExitError;
  }
  return kExitUsage;
}
