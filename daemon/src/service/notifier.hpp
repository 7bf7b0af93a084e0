// What qbusd tells its service manager through sd_notify (Type=notify): READY=1 once it
// listens, STATUS= with its connection and queue counts, WATCHDOG=1 at half of
// WATCHDOG_USEC, RELOADING=1 (with MONOTONIC_USEC) and READY=1 around a reload, STOPPING=1.
// Without NOTIFY_SOCKET every message is a no-op; nothing here fails the daemon.
//
// The watchdog and status timers run on the broker's io_context, so a stuck event loop
// stops the pings and systemd notices. Thread-safety: none; use from the loop's thread.
#pragma once

#include <asio.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

namespace qbus::daemon {

class ServiceNotifier {
 public:
  // `status` makes the STATUS= line; it is sent with READY=1 and then every status
  // interval when it changed, while `busy` says the line may change (clients are
  // connected). Once it is idle no timer runs until wake(). Without NOTIFY_SOCKET there
  // are no status updates at all.
  ServiceNotifier(asio::io_context& io, std::function<std::string()> status,
                  std::function<bool()> busy);
  ServiceNotifier(const ServiceNotifier&) = delete;
  ServiceNotifier& operator=(const ServiceNotifier&) = delete;

  // READY=1 and the status; the first call also starts the watchdog (when systemd asked
  // for one: WATCHDOG_USEC, and WATCHDOG_PID naming us) and the status updates.
  void ready();
  // RELOADING=1 with MONOTONIC_USEC=now; follow it with ready() once the reload is done.
  void reloading();
  // STOPPING=1. The watchdog keeps pinging while the daemon drains its connections.
  void stopping();

  // Resumes the status updates after an idle spell (a client connected).
  void wake();

  // The watchdog period systemd asked for; zero when it asked for none.
  std::chrono::microseconds watchdog_interval() const { return watchdog_; }

 private:
  void ping_watchdog();
  void update_status();
  void send(const std::string& message);

  std::function<std::string()> status_;
  std::function<bool()> busy_;
  asio::steady_timer watchdog_timer_;
  asio::steady_timer status_timer_;
  std::chrono::microseconds watchdog_{0};
  std::string last_status_;
  bool started_ = false;
  bool notify_ = false;          // NOTIFY_SOCKET is set: a service manager listens
  bool status_pending_ = false;  // the status timer is armed
  bool stopping_ = false;
};

}  // namespace qbus::daemon
