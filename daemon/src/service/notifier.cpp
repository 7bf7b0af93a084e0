#include "service/notifier.hpp"

#include <spdlog/spdlog.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

namespace qbus::daemon {
namespace {

// Often enough that `systemctl status` is current, rarely enough to cost nothing; a
// STATUS= message is sent only when the line changed.
constexpr auto kStatusEvery = std::chrono::seconds(2);

std::uint64_t monotonic_usec() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000u +
         static_cast<std::uint64_t>(ts.tv_nsec) / 1'000u;
}

}  // namespace

ServiceNotifier::ServiceNotifier(asio::io_context& io, std::function<std::string()> status,
                                 std::function<bool()> busy)
    : status_(std::move(status)),
      busy_(std::move(busy)),
      watchdog_timer_(io),
      status_timer_(io),
      notify_(std::getenv("NOTIFY_SOCKET") != nullptr) {
  std::uint64_t usec = 0;
  // Checks WATCHDOG_PID too: a watchdog meant for another process (our parent) is not ours.
  if (sd_watchdog_enabled(/*unset_environment=*/0, &usec) > 0 && usec > 0) {
    watchdog_ = std::chrono::microseconds(usec / 2);
  }
}

void ServiceNotifier::send(const std::string& message) {
  const int r = sd_notify(0, message.c_str());
  if (r < 0) spdlog::debug("sd_notify failed: {}", std::strerror(-r));
}

void ServiceNotifier::ready() {
  last_status_ = status_();
  send("READY=1\nSTATUS=" + last_status_ + "\nMAINPID=" + std::to_string(::getpid()));
  if (started_) return;
  started_ = true;
  if (watchdog_.count() > 0) {
    spdlog::debug("watchdog: pinging every {} ms", watchdog_.count() / 1000);
    ping_watchdog();
  }
  if (notify_) update_status();
}

void ServiceNotifier::wake() {
  if (started_ && notify_ && !stopping_ && !status_pending_) update_status();
}

void ServiceNotifier::reloading() {
  send("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(monotonic_usec()) +
       "\nSTATUS=reloading the configuration");
  last_status_.clear();
}

void ServiceNotifier::stopping() {
  stopping_ = true;
  status_timer_.cancel();
  send("STOPPING=1\nSTATUS=shutting down");
}

void ServiceNotifier::ping_watchdog() {
  send("WATCHDOG=1");
  watchdog_timer_.expires_after(watchdog_);
  watchdog_timer_.async_wait([this](const asio::error_code& ec) {
    if (!ec) ping_watchdog();
  });
}

void ServiceNotifier::update_status() {
  status_pending_ = false;
  if (stopping_) return;
  if (auto now = status_(); now != last_status_) {
    last_status_ = std::move(now);
    send("STATUS=" + last_status_);
  }
  // Idle (no clients), the line was just brought up to date and stays so: no more timer.
  if (!busy_()) return;
  status_pending_ = true;
  status_timer_.expires_after(kStatusEvery);
  status_timer_.async_wait([this](const asio::error_code& ec) {
    if (!ec) update_status();
  });
}

}  // namespace qbus::daemon
