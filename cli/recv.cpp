// qbusctl recv: takes messages from a queue or from this process's inbox and prints them,
// or writes one to a file. With --ack or --nack they are taken in acknowledgement mode and
// settled once written; a single-active-consumer queue, which refuses receives, is then
// consumed through a subscription instead.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string_view>

#include "commands.hpp"

namespace qbusctl {
namespace {

using std::chrono::milliseconds;

bool write_file(const std::string& path, const qbus::Message& m) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd < 0) return false;
  auto bytes = m.bytes();
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      errno = err;
      return false;
    }
    done += static_cast<std::size_t>(n);
  }
  return ::close(fd) == 0;
}

// Receives until `count` messages (0: no limit) or the overall timeout (-1: none).
template <typename Take, typename Output>
int receive_loop(long long timeout_ms, long long count, const std::string& what, Take take,
                 Output output) {
  using namespace std::chrono;
  const bool forever = timeout_ms < 0;
  const auto deadline = steady_clock::now() + milliseconds(forever ? 0 : timeout_ms);
  long long got = 0;
  while (count == 0 || got < count) {
    milliseconds wait = qbus::kForever;
    if (!forever)
      wait = std::max(milliseconds(0), duration_cast<milliseconds>(deadline - steady_clock::now()));
    const std::size_t want = count == 0 ? 1024 : static_cast<std::size_t>(count - got);
    auto batch = take(want, wait);
    if (batch.empty()) break;
    for (const auto& m : batch) {
      if (!output(m)) return kExitError;
      ++got;
    }
  }
  if (got == 0) {
    std::cerr << "qbusctl: " << what << ": timed out with nothing received\n";
    return kExitTimeout;
  }
  return 0;
}

// --nack ACTION: what happens to the messages once they are written.
struct Nack {
  qbus::NackAction action = qbus::NackAction::requeue;
  milliseconds delay{0};  // requeue-after only
};

std::optional<Nack> parse_nack(const std::string& arg) {
  if (arg.empty()) return std::nullopt;
  if (arg == "requeue") return Nack{qbus::NackAction::requeue};
  if (arg == "dead-letter") return Nack{qbus::NackAction::dead_letter};
  constexpr std::string_view kAfter = "requeue-after=";
  if (arg.starts_with(kAfter)) {
    const std::string_view ms = std::string_view(arg).substr(kAfter.size());
    std::uint32_t value = 0;
    const auto [end, ec] = std::from_chars(ms.data(), ms.data() + ms.size(), value);
    if (!ms.empty() && ec == std::errc() && end == ms.data() + ms.size()) {
      return Nack{qbus::NackAction::requeue_after, milliseconds(value)};
    }
  }
  throw UsageError("recv --nack '" + arg +
                   "': use requeue, dead-letter or requeue-after=MS (MS 0 to 4294967295)");
}

// Settles what was received in acknowledgement mode: each message acked once written, or
// with --nack kept and nacked in finish(), after the last one; nacked at once, each one,
// a requeued message would come straight back to this same command. A message that
// could not be written goes back to the queue at once.
class Settler {
 public:
  Settler(qbus::Client& client, std::optional<Nack> nack) : client_(client), nack_(nack) {}

  void written(const qbus::Message& m, bool ok) {
    if (m.delivery_tag() == 0) return;  // not received in acknowledgement mode
    if (!ok) {
      client_.nack(m, qbus::NackAction::requeue, {}, true);
    } else if (nack_) {
      held_.push_back(m);
    } else {
      // Confirmed, so that exit 0 means the broker let go of it.
      client_.ack(m, true);
    }
  }

  // Nacks what is held: pipelined, then one round trip for the verdicts. Should this not
  // run (an error before), the messages go back to their queue as the connection closes.
  void finish() {
    if (held_.empty()) return;
    for (const auto& m : held_)
      client_.nack(
          m, nack_->action,
          nack_->action == qbus::NackAction::requeue_after ? nack_->delay : milliseconds(0));
    held_.clear();
    client_.sync();
    const auto& failures = client_.send_failures();
    if (failures.count > 0) {
      throw qbus::Error(failures.last_code, "recv --nack: " + failures.last_message);
    }
  }

 private:
  qbus::Client& client_;
  std::optional<Nack> nack_;
  std::vector<qbus::Message> held_;
};

// A queue's messages: by RECEIVE, or, after the broker answered that the queue is
// single-active-consumer, in acknowledgement mode through a subscription (a receive
// without acknowledgements cannot be one: what the broker pushed beyond --count would be
// lost).
class QueueSource {
 public:
  QueueSource(qbus::Client& client, const RecvArgs& a, bool ack, bool deferred)
      : client_(client), key_(a.key.at(0)), ack_(ack), count_(a.count), deferred_(deferred) {}

  std::vector<qbus::Message> take(std::size_t max, milliseconds timeout) {
    if (!sub_) {
      try {
        return client_.receive_batch(key_, max, timeout, qbus::ReceiveOptions{ack_});
      } catch (const qbus::Error& e) {
        if (e.code() != qbus::Errc::single_active_consumer) throw;
        if (!ack_) {
          throw qbus::Error(e.code(), "recv " + key_ + ": queue '" + key_ +
                                          "' is single-active-consumer and takes no plain "
                                          "receives: consume it through a subscription, as "
                                          "'qbusctl recv " +
                                          key_ + " --ack' does (Client::subscribe())");
        }
        sub_ = client_.subscribe(key_, qbus::SubscribeOptions{prefetch(), true});
      }
    }
    std::vector<qbus::Message> got;
    for (auto m = sub_->next(timeout); m; m = sub_->next(milliseconds(0))) {
      got.push_back(std::move(*m));
      if (got.size() >= max) break;
    }
    // The last wanted: stop the pushes before this command settles anything (each ack
    // would open the window for one more message, given back unseen when qbusctl exits).
    if (count_ != 0 && got.size() >= max) sub_->cancel();
    return got;
  }

  // Before --nack settles: a requeued message must not come back to this subscription.
  void stop() {
    if (sub_) sub_->cancel();
  }

 private:
  // Messages settled once all are written (--nack) are held together: room for --count.
  // Acked one by one, one at a time: no message pushed that this command will not take.
  std::uint32_t prefetch() const {
    if (count_ == 0) return 0;  // the broker's default
    if (!deferred_) return 1;
    return static_cast<std::uint32_t>(std::min<long long>(count_, UINT32_MAX));
  }

  qbus::Client& client_;
  std::string key_;
  bool ack_;
  long long count_;
  bool deferred_;
  std::optional<qbus::Subscription> sub_;
};

bool write_message(const Globals& g, const RecvArgs& a, bool ack, const qbus::Message& m) {
  if (!a.out.empty()) {
    if (write_file(a.out, m)) return true;
    std::cerr << "qbusctl: " << file_error("cannot write", a.out) << "\n";
    return false;
  }
  if (g.json ? print_json(m, ack) : print(m, a.headers)) return true;
  std::cerr << "qbusctl: cannot write to stdout\n";
  return false;
}

}  // namespace

bool print_json(const qbus::Message& m, bool ack, bool subject) {
  nlohmann::json o{
      {subject ? "subject" : "key", m.key()},
      {"payload", std::string(m.text())},
      {"sender",
       {{"pid", m.sender().pid}, {"uid", m.sender().uid}, {"client_id", m.sender().client_id}}}};
  nlohmann::json headers = nlohmann::json::object();
  for (const auto& [k, v] : m.headers())
    headers[k] = v;
  o["headers"] = std::move(headers);
  if (ack) {
    o["delivery_tag"] = m.delivery_tag();
    o["delivery_count"] = m.delivery_count();
    o["redelivered"] = m.redelivered();
  }
  if (subject) {
    o["retained"] = m.retained();
    o["dropped_before"] = m.dropped_before();
  }
  const std::string line = o.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fputc('\n', stdout);
  return std::fflush(stdout) == 0;
}

bool print(const qbus::Message& m, bool headers) {
  if (headers) {
    for (const auto& [k, v] : m.headers()) {
      std::fwrite(k.data(), 1, k.size(), stdout);
      std::fputs(": ", stdout);
      std::fwrite(v.data(), 1, v.size(), stdout);
      std::fputc('\n', stdout);
    }
  }
  std::fwrite(m.text().data(), 1, m.size(), stdout);
  std::fputc('\n', stdout);
  return std::fflush(stdout) == 0;
}

CLI::App* add_recv(CLI::App& app, RecvArgs& a) {
  auto* recv = app.add_subcommand(
      "recv", "Receive from queue KEY, or with --direct this process's direct messages");
  recv->add_option("KEY", a.key, "Queue key")->expected(0, 1);
  recv->add_option("--out", a.out, "Write the message's bytes to this file instead of stdout")
      ->option_text("PATH");
  recv->add_flag("--direct", a.direct, "Receive messages sent to this process's pid");
  recv->add_option("--timeout", a.timeout_ms, "Milliseconds to wait in all (default: forever)")
      ->option_text("MS")
      ->check(CLI::Range(-1LL, 2'000'000'000LL));
  recv->add_option("--count", a.count, "Messages to receive; 0 keeps receiving (default: 1)")
      ->option_text("N")
      ->check(CLI::NonNegativeNumber);
  recv->add_flag("--ack", a.ack,
                 "Receive in acknowledgement mode and acknowledge each message once it is "
                 "written; one that cannot be written goes back to the queue. A "
                 "single-active-consumer queue is received from through a subscription (needs "
                 "a protocol-2 qbusd)");
  recv->add_option("--nack", a.nack,
                   "As --ack, but once every message is written nack them instead: requeue "
                   "(back to the head of the queue), dead-letter (to the queue's dead-letter "
                   "queue) or requeue-after=MS (back to the queue after MS milliseconds)")
      ->option_text("ACTION");
  recv->fallthrough();  // `qbusctl recv KEY --json` as well as `qbusctl --json recv KEY`
  recv->add_flag("--headers", a.headers,
                 "Print the message's headers, one 'KEY: VALUE' line each, before it");
  return recv;
}

int run_recv(const Globals& g, const RecvArgs& a) {
  if (a.direct && !a.key.empty()) throw UsageError("recv --direct takes no KEY");
  if (!a.direct && a.key.empty()) throw UsageError("recv: give a queue KEY or --direct");
  if (!a.out.empty() && a.count != 1) throw UsageError("recv --out takes one message (--count 1)");
  if (a.direct && a.ack) throw UsageError("recv --ack takes a queue KEY, not --direct");
  if (a.direct && !a.nack.empty()) throw UsageError("recv --nack takes a queue KEY, not --direct");
  if (!a.out.empty() && (g.json || a.headers)) {
    throw UsageError("recv --out writes the bytes alone: not with --json or --headers");
  }
  const std::optional<Nack> nack = parse_nack(a.nack);
  const bool ack = a.ack || nack;
  auto client = connect(g);
  Settler settler(client, nack);
  const auto output = [&](const qbus::Message& m) {
    const bool written = write_message(g, a, ack, m);
    settler.written(m, written);
    return written;
  };
  if (a.direct) {
    return receive_loop(
        a.timeout_ms, a.count, "recv --direct",
        [&](std::size_t n, milliseconds t) { return client.receive_direct_batch(n, t); }, output);
  }
  QueueSource source(client, a, ack, nack.has_value());
  const int rc = receive_loop(
      a.timeout_ms, a.count, "recv " + a.key[0],
      [&](std::size_t n, milliseconds t) { return source.take(n, t); }, output);
  source.stop();
  settler.finish();
  return rc;
}

}  // namespace qbusctl
