#include "routes.hpp"

#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <thread>
#include <utility>
#include <vector>

#include "qbus/client.hpp"
#include "qbus/proto/headers.hpp"

namespace qbus::bridge {

void StopSignal::force() {
  std::lock_guard lock(mutex_);
  stopped_ = true;
  forced_ = true;
  for (const int fd : fds_)
    ::shutdown(fd, SHUT_RDWR);
}

StopSignal::Watch::Watch(StopSignal& stop, int fd) : stop_(stop), fd_(fd) {
  std::lock_guard lock(stop_.mutex_);
  stop_.fds_.insert(fd_);
  if (stop_.forced_) ::shutdown(fd_, SHUT_RDWR);  // force() came before this Watch
}

StopSignal::Watch::~Watch() {
  std::lock_guard lock(stop_.mutex_);
  stop_.fds_.erase(fd_);
}

namespace {

using std::chrono::milliseconds;

// How long a side's wait lasts before the stop flag is looked at again.
constexpr milliseconds kPoll{500};
// How often an idle inbound route asks whether its consumer still exists.
constexpr milliseconds kConsumerCheck{5000};

// Waits out a failure, doubling from 100 ms to 5 s; false when stopped meanwhile.
class Backoff {
 public:
  bool wait(const StopSignal& stop) {
    const auto until = std::chrono::steady_clock::now() + delay_;
    delay_ = std::min(delay_ * 2, milliseconds(5000));
    while (!stop && std::chrono::steady_clock::now() < until)
      std::this_thread::sleep_for(milliseconds(20));
    return !stop;
  }
  void reset() { delay_ = milliseconds(100); }

 private:
  milliseconds delay_{100};
};

// Runs `session`, one connection's worth of a route's work, again after every failure of
// either side, waiting out the backoff in between, until `stop` (a session returns once it
// sees `stop`).
template <typename Session>
void keep_running(const Route& route, StopSignal& stop, RouteStats& stats, Session session) {
  Backoff backoff;
  while (!stop) {
    try {
      session(backoff);
    } catch (const Error& e) {
      stats.qbus_connected = false;
      if (stop) return;  // its connection may have been shut down to end a parked call
      spdlog::warn("route {}: qbus: {}", route.name, e.what());
      if (!backoff.wait(stop)) return;
    } catch (const NatsError& e) {
      spdlog::warn("route {}: {}", route.name, e.what());
      if (!backoff.wait(stop)) return;
    }
  }
}

// Whether `e` ended the qbus connection (a client-side code from 200 on, or one after which
// qbusd closes it), rather than refusing one message.
bool connection_failed(const Error& e) {
  return errc_is_fatal(e.code()) || static_cast<std::uint16_t>(e.code()) >= 200;
}

ClientOptions client_options(const BridgeConfig& config) {
  ClientOptions o;
  o.address = config.qbus_address;
  o.name = config.client_name;
  return o;
}

// A route's connection to qbusd, watched by the stop signal while it lives.
struct Connection {
  Connection(const BridgeConfig& config, StopSignal& stop)
      : client(client_options(config)), watch(stop, client.fd()) {}
  Client client;
  StopSignal::Watch watch;  // after the client: gone before its socket closes
};

// A NATS header value must be one line of printable text.
bool printable(std::string_view v) {
  return std::all_of(v.begin(), v.end(), [](char c) { return c >= ' ' && c <= '~'; });
}

struct MsgDeleter {
  void operator()(natsMsg* m) const { natsMsg_Destroy(m); }
};
using MsgPtr = std::unique_ptr<natsMsg, MsgDeleter>;

// The NATS message of qbus message `m` for `subject`: its payload, its headers, and where
// it came from (`queue`: empty for a subject's message).
MsgPtr to_nats(const Message& m, const std::string& subject, const std::string& queue,
               const std::string& host) {
  natsMsg* raw = nullptr;
  const auto data = m.bytes();
  if (natsMsg_Create(&raw, subject.c_str(), nullptr, reinterpret_cast<const char*>(data.data()),
                     static_cast<int>(data.size())) != NATS_OK) {
    throw NatsError(nats_error_text("cannot make a NATS message", NATS_NO_MEMORY));
  }
  MsgPtr msg(raw);
  for (const auto& [key, value] : m.headers()) {
    if (key == kHeaderMessageId || !printable(value)) continue;
    natsMsgHeader_Add(raw, key.c_str(), value.c_str());
  }
  natsMsgHeader_Set(raw, kOriginHost, host.c_str());
  natsMsgHeader_Set(raw, kOriginPid, std::to_string(m.sender().pid).c_str());
  natsMsgHeader_Set(raw, kOriginUid, std::to_string(m.sender().uid).c_str());
  if (!queue.empty()) natsMsgHeader_Set(raw, kOriginQueue, queue.c_str());
  return msg;
}

// Makes the route's stream with its subject when it does not exist yet.
void ensure_stream(NatsLink& nats, const Route& route) {
  if (route.stream.empty()) return;
  jsStreamInfo* info = nullptr;
  jsErrCode jerr{};
  natsStatus s = js_GetStreamInfo(&info, nats.js(), route.stream.c_str(), nullptr, &jerr);
  if (s == NATS_OK) {
    jsStreamInfo_Destroy(info);
    return;
  }
  if (s != NATS_NOT_FOUND) throw NatsError(nats_error_text("stream " + route.stream, s));
  jsStreamConfig cfg;
  jsStreamConfig_Init(&cfg);
  cfg.Name = route.stream.c_str();
  const char* subjects[] = {route.subject.c_str()};
  cfg.Subjects = subjects;
  cfg.SubjectsLen = 1;
  cfg.Storage = js_FileStorage;
  s = js_AddStream(&info, nats.js(), &cfg, nullptr, &jerr);
  if (s != NATS_OK) throw NatsError(nats_error_text("cannot make stream " + route.stream, s));
  jsStreamInfo_Destroy(info);
  spdlog::info("route {}: made JetStream stream {} for {}", route.name, route.stream,
               route.subject);
}

// One outbound route's JetStream context: a batch is published without waiting for each
// acknowledgement, then its acknowledgements are awaited together, so a batch costs one
// round trip to the server rather than one per message.
class Publisher {
 public:
  Publisher(NatsLink& nats, std::uint32_t window) {
    jsOptions o;
    jsOptions_Init(&o);
    o.PublishAsync.MaxPending = window;
    o.PublishAsync.ErrHandler = &Publisher::on_error;
    o.PublishAsync.ErrHandlerClosure = this;
    if (const natsStatus s = natsConnection_JetStream(&js_, nats.connection(), &o); s != NATS_OK)
      throw NatsError(nats_error_text("JetStream context", s));
  }
  ~Publisher() { jsCtx_Destroy(js_); }
  Publisher(const Publisher&) = delete;
  Publisher& operator=(const Publisher&) = delete;

  // Hands `msg`, the batch's message `index`, to libnats, which owns it from then on (on
  // success and on failure).
  natsStatus publish(MsgPtr msg, std::string_view id, std::size_t index) {
    jsPubOptions opts;
    jsPubOptions_Init(&opts);
    const std::string msg_id(id);
    if (!msg_id.empty()) opts.MsgId = msg_id.c_str();
    natsMsg* raw = msg.release();
    {
      // Before the publish: its refusal may come before js_PublishMsgAsync returns. An
      // address libnats freed and reused later in the batch is simply found again: the
      // earlier message was answered by then.
      std::lock_guard lock(mutex_);
      in_flight_.emplace_back(raw, index);
    }
    const natsStatus s = js_PublishMsgAsync(js_, &raw, &opts);
    natsMsg_Destroy(raw);  // null once libnats took it
    return s;
  }

  // The batch indexes of the messages the stream refused because of their size since the
  // last call: publishing them again would be refused again.
  std::vector<std::size_t> take_unstorable() {
    std::lock_guard lock(mutex_);
    return std::exchange(unstorable_, {});
  }

  // Waits until every publish since the last call is acknowledged; false with `error` set
  // when one was refused, the wait ran out, or `stop` was set. What is still unanswered
  // then is forgotten: the caller publishes the whole batch again, and the ids make the
  // copies JetStream already stored duplicates it drops.
  bool settle(const StopSignal& stop, std::string& error) {
    const auto until = std::chrono::steady_clock::now() + kAckWait;
    natsStatus s = NATS_TIMEOUT;
    while (s == NATS_TIMEOUT && !stop && std::chrono::steady_clock::now() < until) {
      jsPubOptions opts;
      jsPubOptions_Init(&opts);
      opts.MaxWait = kPoll.count();
      s = js_PublishAsyncComplete(js_, &opts);
    }
    if (s != NATS_OK) {
      natsMsgList pending{};
      if (js_PublishAsyncGetPendingList(&pending, js_) == NATS_OK) natsMsgList_Destroy(&pending);
      error = stop ? "stopped" : nats_error_text("JetStream acknowledgements", s);
    }
    std::lock_guard lock(mutex_);
    in_flight_.clear();
    if (s == NATS_OK && refused_.empty()) return true;
    if (!refused_.empty()) error = refused_;
    refused_.clear();
    return false;
  }

 private:
  static constexpr std::chrono::seconds kAckWait{10};

  // On libnats's thread; libnats destroys the message afterwards.
  static void on_error(jsCtx*, jsPubAckErr* pae, void* closure) {
    auto* self = static_cast<Publisher*>(closure);
    std::lock_guard lock(self->mutex_);
    if (pae->ErrCode == JSStreamMessageExceedsMaximumErr) {
      // Latest first: see publish().
      const auto it = std::find_if(self->in_flight_.rbegin(), self->in_flight_.rend(),
                                   [&](const auto& f) { return f.first == pae->Msg; });
      if (it != self->in_flight_.rend()) {
        self->unstorable_.push_back(it->second);
        return;
      }
    }
    if (self->refused_.empty()) {
      self->refused_ = "JetStream refused a publish: " +
                       std::string(pae->ErrText ? pae->ErrText : natsStatus_GetText(pae->Err));
    }
  }

  jsCtx* js_ = nullptr;
  std::mutex mutex_;
  std::string refused_;  // the first refusal since the last settle
  // Since the last settle: what was published (libnats's message, batch index), and the
  // indexes of those the stream can never store.
  std::vector<std::pair<const natsMsg*, std::size_t>> in_flight_;
  std::vector<std::size_t> unstorable_;
};

// Publishes `batch` until JetStream acknowledged every message of it that NATS can take;
// the others (over the server's max_payload: retrying would only repeat forever) are
// dead-lettered in qbus. The tag of the last message forwarded (0: none), nullopt when
// stopped first.
std::optional<std::uint64_t> forward(Client& c, Publisher& pub, const Route& route,
                                     const std::vector<Message>& batch, const std::string& host,
                                     const StopSignal& stop, RouteStats& stats) {
  std::vector<bool> never(batch.size(), false);
  const auto dead_letter = [&](std::size_t i, const char* why) {
    spdlog::error(
        "route {}: a message of {} bytes with its headers exceeds {}; sent to the "
        "queue's dead letters (dropped if it has none)",
        route.name, batch[i].size(), why);
    c.nack(batch[i], NackAction::dead_letter, {}, true);
    never[i] = true;
    ++stats.failed;
  };
  Backoff backoff;
  for (bool first = true;; first = false) {
    std::string error;
    bool published = true;
    for (std::size_t i = 0; i < batch.size() && published; ++i) {
      if (never[i]) continue;
      const Message& m = batch[i];
      const natsStatus s = pub.publish(to_nats(m, route.subject, route.queue, host),
                                       m.header(kHeaderMessageId).value_or(""), i);
      // libnats checks the payload and headers against the server's max_payload itself.
      if (s == NATS_MAX_PAYLOAD) {
        dead_letter(i, "NATS's max_payload");
      } else if (s != NATS_OK) {
        error = nats_error_text("publish to " + route.subject, s);
        published = false;
      }
    }
    const bool settled = pub.settle(stop, error);
    for (const std::size_t i : pub.take_unstorable()) {
      if (!never[i]) dead_letter(i, "the stream's max_msg_size");
    }
    if (settled && published) {
      std::uint64_t last = 0;
      for (std::size_t i = 0; i < batch.size(); ++i) {
        if (never[i]) continue;
        ++stats.forwarded;
        last = batch[i].delivery_tag();
      }
      return last;
    }
    if (stop) return std::nullopt;
    if (first) spdlog::warn("route {}: {}; publishing the batch again", route.name, error);
    stats.retried += static_cast<std::uint64_t>(std::count(never.begin(), never.end(), false));
    if (!backoff.wait(stop)) return std::nullopt;
  }
}

// Declares the route's queue with message ids, the Nats-Msg-Id that makes a resend a
// duplicate. A queue the operator declared with other options (limits, a dead-letter
// queue: qbusd.json's `queues`) is used as it is: the bridge must not refuse to carry it.
void declare_outbound_queue(Client& c, const Route& route) {
  QueueOptions q;
  q.message_ids = true;
  q.durable = route.durable_queue;
  try {
    c.declare(route.queue, q);
  } catch (const Error& e) {
    if (e.code() != Errc::queue_conflict) throw;
    spdlog::info("route {}: queue {} is declared with other options; carrying it as it is ({})",
                 route.name, route.queue, e.what());
  }
}

}  // namespace

void run_outbound(const BridgeConfig& config, const Route& route, const std::string& host,
                  NatsLink& nats, StopSignal& stop, RouteStats& stats) {
  bool stream_ready = route.stream.empty();
  bool warned_no_id = false;
  Publisher pub(nats, route.batch);
  keep_running(route, stop, stats, [&](Backoff& backoff) {
    if (!stream_ready) {
      ensure_stream(nats, route);
      stream_ready = true;
    }
    Connection conn(config, stop);
    Client& c = conn.client;
    declare_outbound_queue(c, route);
    stats.qbus_connected = true;
    backoff.reset();
    while (!stop) {
      auto batch = c.receive_batch(route.queue, route.batch, kPoll, ReceiveOptions{true});
      if (batch.empty()) continue;
      if (!warned_no_id && !batch.front().header(kHeaderMessageId)) {
        warned_no_id = true;
        spdlog::warn(
            "route {}: messages of queue {} carry no qbus-id (declare it with message_ids): "
            "JetStream cannot drop the copies a crash of the bridge may publish twice",
            route.name, route.queue);
      }
      const auto last = forward(c, pub, route, batch, host, stop, stats);
      // Stopped with messages held: they go back to the queue when the connection closes.
      if (!last) return;
      if (*last == 0) continue;
      c.ack_up_to(*last, true);              // what was dead-lettered is no longer held
      stats.acked = stats.forwarded.load();  // this thread alone counts the route's
    }
  });
}

namespace {

struct SubDeleter {
  void operator()(natsSubscription* s) const { natsSubscription_Destroy(s); }
};
using SubPtr = std::unique_ptr<natsSubscription, SubDeleter>;

SubPtr pull_subscribe(NatsLink& nats, const Route& route) {
  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = route.stream.c_str();
  natsSubscription* sub = nullptr;
  jsErrCode jerr{};
  const natsStatus s = js_PullSubscribe(&sub, nats.js(), route.subject.c_str(),
                                        route.consumer.c_str(), nullptr, &so, &jerr);
  if (s != NATS_OK) {
    throw NatsError(
        nats_error_text("consumer " + route.consumer + " of stream " + route.stream, s));
  }
  return SubPtr(sub);
}

// False when JetStream says the route's consumer (or its stream) does not exist; true too
// when it does not answer or NATS is away, so that neither makes the route churn, and
// asked within kPoll, so that the route still sees a stop in time.
bool consumer_exists(NatsLink& nats, const Route& route) {
  if (!nats.connected()) return true;
  jsOptions o;
  jsOptions_Init(&o);
  o.Wait = kPoll.count();
  jsConsumerInfo* info = nullptr;
  jsErrCode jerr{};
  const natsStatus s =
      js_GetConsumerInfo(&info, nats.js(), route.stream.c_str(), route.consumer.c_str(), &o, &jerr);
  jsConsumerInfo_Destroy(info);
  return s != NATS_NOT_FOUND;
}

// The qbus headers of NATS message `msg`: those qbus can carry (a valid key, not the
// broker's own, a value within bounds), at most a sender's share.
Headers to_qbus_headers(natsMsg* msg) {
  Headers out;
  const char** keys = nullptr;
  int count = 0;
  if (natsMsgHeader_Keys(msg, &keys, &count) != NATS_OK) return out;
  std::size_t encoded = 0;  // as libqbus will encode the block, within a sender's bound
  for (int i = 0; i < count && out.size() < proto::kMaxSenderHeaders; ++i) {
    const std::string_view key(keys[i]);
    if (!proto::is_valid_header_key(key) || key.starts_with(proto::kReservedHeaderPrefix)) {
      continue;
    }
    const char* value = nullptr;
    if (natsMsgHeader_Get(msg, keys[i], &value) != NATS_OK || !value) continue;
    const std::size_t size = std::string_view(value).size();
    const std::size_t entry = proto::header_entry_size(key, value);
    if (size > proto::kMaxHeaderValueSize || encoded + entry > proto::kMaxSenderHeadersSize) {
      continue;
    }
    encoded += entry;
    out.emplace_back(std::string(key), value);
  }
  free(static_cast<void*>(keys));
  return out;
}

std::string_view data_of(natsMsg* m) {
  return {natsMsg_GetData(m), static_cast<std::size_t>(natsMsg_GetDataLength(m))};
}

// Gives `msgs` back to JetStream, which delivers them again at once (rather than after
// its ack wait).
void give_back(std::span<natsMsg* const> msgs, RouteStats& stats) {
  for (natsMsg* m : msgs)
    natsMsg_Nak(m, nullptr);
  stats.retried += msgs.size();
}

// Sends `msgs` to the queue pipelined and waits for qbusd's answers (sync); true when it
// took them all. Which one it refused is not known then. When the connection fails, the
// messages go back to JetStream and the error propagates.
bool send_pipelined(Client& c, const Route& route, const std::vector<natsMsg*>& msgs,
                    RouteStats& stats) {
  const std::uint64_t failures_before = c.send_failures().count;
  try {
    {
      Client::Batch writes(c);
      for (natsMsg* m : msgs)
        c.send(route.queue, data_of(m), SendOptions{to_qbus_headers(m), false});
    }
    c.sync();
  } catch (const Error&) {
    give_back(msgs, stats);
    throw;
  }
  if (c.send_failures().count == failures_before) return true;
  spdlog::warn("route {}: qbusd refused a send to {}: {}; the batch comes again, one at a time",
               route.name, route.queue, c.send_failures().last_message);
  return false;
}

// Sends `msgs` one at a time, each confirmed and then acked in JetStream, so that a queue
// with room for fewer than a batch still makes progress; at the first refusal the rest
// goes back to JetStream. How many went.
std::size_t send_each_confirmed(Client& c, const Route& route, const std::vector<natsMsg*>& msgs,
                                RouteStats& stats) {
  for (std::size_t i = 0; i < msgs.size(); ++i) {
    try {
      c.send(route.queue, data_of(msgs[i]), SendOptions{to_qbus_headers(msgs[i]), true});
    } catch (const Error& e) {
      give_back(std::span(msgs).subspan(i), stats);
      if (connection_failed(e)) throw;
      spdlog::warn("route {}: qbusd refused a send to {}: {}", route.name, route.queue, e.what());
      return i;
    }
    natsMsg_Ack(msgs[i], nullptr);
    ++stats.forwarded;
    ++stats.acked;
  }
  return msgs.size();
}

// The messages of `list` qbus can take; the others (over qbusd's payload limit) are
// terminated in JetStream rather than redelivered forever.
std::vector<natsMsg*> deliverable(const Client& c, const Route& route, const natsMsgList& list,
                                  RouteStats& stats) {
  std::vector<natsMsg*> out;
  for (int i = 0; i < list.Count; ++i) {
    natsMsg* m = list.Msgs[i];
    const std::size_t size = data_of(m).size();
    if (size <= c.session().max_payload) {
      out.push_back(m);
      continue;
    }
    spdlog::error("route {}: a message of {} bytes exceeds qbusd's limit of {}; dropped",
                  route.name, size, c.session().max_payload);
    natsMsg_Term(m, nullptr);
    ++stats.failed;
  }
  return out;
}

}  // namespace

void run_inbound(const BridgeConfig& config, const Route& route, NatsLink& nats, StopSignal& stop,
                 RouteStats& stats) {
  SubPtr sub;
  keep_running(route, stop, stats, [&](Backoff& backoff) {
    if (!sub) sub = pull_subscribe(nats, route);
    Connection conn(config, stop);
    Client& c = conn.client;
    stats.qbus_connected = true;
    backoff.reset();
    // After a refusal, until a whole batch went: one message at a time.
    bool careful = false;
    auto next_check = std::chrono::steady_clock::now() + kConsumerCheck;
    while (!stop) {
      natsMsgList list{};
      jsErrCode jerr{};
      const natsStatus s = natsSubscription_Fetch(&list, sub.get(), static_cast<int>(route.batch),
                                                  kPoll.count(), &jerr);
      // The consumer (or its stream) may be gone: subscribing afresh makes it again. A fetch
      // that was waiting when it went fails; one made after only times out.
      if (s == NATS_TIMEOUT) {
        if (const auto now = std::chrono::steady_clock::now(); now >= next_check) {
          next_check = now + kConsumerCheck;
          if (!consumer_exists(nats, route)) {
            sub.reset();
            throw NatsError("consumer " + route.consumer + " of stream " + route.stream +
                            " is gone; making it again");
          }
        }
        continue;
      }
      if (s != NATS_OK) {
        sub.reset();
        throw NatsError(nats_error_text("fetch from " + route.stream, s));
      }
      struct ListGuard {
        natsMsgList* l;
        ~ListGuard() { natsMsgList_Destroy(l); }
      } guard{&list};
      const std::vector<natsMsg*> msgs = deliverable(c, route, list, stats);
      if (careful) {
        const std::size_t went = send_each_confirmed(c, route, msgs, stats);
        careful = went < msgs.size();
        if (went > 0) backoff.reset();  // room is being made: look again soon
      } else if (send_pipelined(c, route, msgs, stats)) {
        stats.forwarded += msgs.size();
        for (natsMsg* m : msgs)
          natsMsg_Ack(m, nullptr);
        stats.acked += msgs.size();
      } else {
        give_back(msgs, stats);
        careful = true;
      }
      if (!careful) {
        backoff.reset();
      } else if (!backoff.wait(stop)) {
        return;
      }
    }
  });
}

std::optional<Backlog> inbound_backlog(NatsLink& nats, const Route& route) {
  // Not a wait per route while NATS is away: the status must come every second.
  if (!nats.connected()) return std::nullopt;
  jsOptions o;
  jsOptions_Init(&o);
  o.Wait = 500;
  jsConsumerInfo* info = nullptr;
  jsErrCode jerr{};
  if (js_GetConsumerInfo(&info, nats.js(), route.stream.c_str(), route.consumer.c_str(), &o,
                         &jerr) != NATS_OK) {
    return std::nullopt;
  }
  const Backlog b{info->NumPending, info->NumAckPending};
  jsConsumerInfo_Destroy(info);
  return b;
}

void run_subjects_outbound(const BridgeConfig& config, const Route& route, const std::string& host,
                           NatsLink& nats, StopSignal& stop, RouteStats& stats) {
  keep_running(route, stop, stats, [&](Backoff& backoff) {
    Connection conn(config, stop);
    Client& c = conn.client;
    Subscription sub = c.subscribe_subject(route.qbus_subject);
    stats.qbus_connected = true;
    backoff.reset();
    while (!stop) {
      auto m = sub.next(kPoll);
      if (!m) {
        if (!sub.active()) throw Error(Errc::connection_closed, "the subscription ended");
        continue;
      }
      const std::string subject = map_subject(m->key(), route.qbus_subject, route.subject);
      MsgPtr msg = to_nats(*m, subject, {}, host);
      const natsStatus s = natsConnection_PublishMsg(nats.connection(), msg.get());
      if (s == NATS_OK) {
        ++stats.forwarded;
      } else {
        ++stats.failed;
        spdlog::warn("route {}: publish to {} failed; dropped: {}", route.name, subject,
                     nats_error_text("NATS", s));
      }
    }
  });
}

void run_subjects_inbound(const BridgeConfig& config, const Route& route, NatsLink& nats,
                          StopSignal& stop, RouteStats& stats) {
  natsSubscription* raw = nullptr;
  if (const natsStatus s =
          natsConnection_SubscribeSync(&raw, nats.connection(), route.subject.c_str());
      s != NATS_OK) {
    spdlog::error("route {}: cannot subscribe to {}: {}", route.name, route.subject,
                  nats_error_text("NATS", s));
    return;
  }
  const SubPtr sub(raw);
  keep_running(route, stop, stats, [&](Backoff& backoff) {
    Connection conn(config, stop);
    Client& c = conn.client;
    stats.qbus_connected = true;
    backoff.reset();
    std::uint64_t failures = c.send_failures().count;
    while (!stop) {
      natsMsg* raw_msg = nullptr;
      const natsStatus s = natsSubscription_NextMsg(&raw_msg, sub.get(), kPoll.count());
      if (s == NATS_TIMEOUT) continue;
      if (s != NATS_OK) {
        // A slow consumer (libnats dropped messages) is reported, not fatal.
        spdlog::warn("route {}: {}", route.name, nats_error_text("NATS subscription", s));
        continue;
      }
      const MsgPtr m(raw_msg);
      const std::string subject =
          map_subject(natsMsg_GetSubject(m.get()), route.subject, route.qbus_subject);
      const auto size = static_cast<std::size_t>(natsMsg_GetDataLength(m.get()));
      try {
        c.publish(subject, std::string_view(natsMsg_GetData(m.get()), size),
                  PublishOptions{to_qbus_headers(m.get()), false, false});
      } catch (const Error& e) {
        ++stats.failed;  // at most once: the message in hand is not carried over
        if (connection_failed(e)) throw;
        // libqbus's own checks: a subject qbus cannot carry, a payload over its limit.
        spdlog::warn("route {}: cannot publish {} in qbus: {}", route.name, subject, e.what());
        continue;
      }
      ++stats.forwarded;
      // Pipelined: refusals (a subject qbus cannot carry, a payload over its limit) are
      // counted as they come back.
      if (const std::uint64_t now = c.send_failures().count; now != failures) {
        stats.failed += now - failures;
        stats.forwarded -= now - failures;
        failures = now;
        spdlog::warn("route {}: qbusd refused a publish: {}", route.name,
                     c.send_failures().last_message);
      }
    }
  });
}

}  // namespace qbus::bridge
