// Connects to the broker at $QBUS_ADDRESS, sends a message to a queue and takes it back.
// Exit 0 when the same bytes came back, 1 on any failure (with one line on stderr).
#include <qbus/client.hpp>
#include <qbus/errc.hpp>

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <exception>
#include <string>

int main(int argc, char** argv) {
  const std::string key = argc > 1 ? argv[1] : "install-test." + std::to_string(::getpid());
  const std::string payload = "hello from an installed libqbus";
  try {
    qbus::Client client;  // the address comes from $QBUS_ADDRESS
    client.send_confirmed(key, payload);
    const auto message = client.receive(key, std::chrono::seconds(10));
    if (!message) {
      std::fprintf(stderr, "consumer: nothing came back from queue %s\n", key.c_str());
      return 1;
    }
    if (message->text() != payload) {
      std::fprintf(stderr, "consumer: queue %s returned '%.*s'\n", key.c_str(),
                   static_cast<int>(message->text().size()), message->text().data());
      return 1;
    }
    std::printf("consumer: %s round trip ok (pid %u)\n", key.c_str(), client.session().pid);
    return 0;
  } catch (const qbus::Error& e) {
    std::fprintf(stderr, "consumer: %s (%s)\n", e.what(),
                 std::string(qbus::errc_name(e.code())).c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "consumer: %s\n", e.what());
  }
  return 1;
}
