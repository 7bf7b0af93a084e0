// The C API (<qbus/qbus.h>), part 1: handles, errors, connecting, queues, acknowledgements,
// direct messages, requests and messages. Part 2 (c_api_streams.cpp): subscriptions,
// publish and regions.
#include "c_api.hpp"

#include <mutex>
#include <unordered_map>

using qbus::Errc;
using qbus::Error;
using namespace qbus::capi;

namespace qbus::capi {
namespace {

struct Registry {
  std::mutex mutex;
  std::unordered_map<const void*, Kind> live;
};
// Never destroyed: handles may be freed from static destructors of the application.
Registry& registry() {
  static auto* r = new Registry;
  return *r;
}

thread_local std::string t_last_error;

}  // namespace

void track(const void* handle, Kind kind) {
  auto& r = registry();
  std::lock_guard lock(r.mutex);
  r.live.emplace(handle, kind);
}

bool untrack_if(const void* handle, Kind kind) noexcept {
  if (handle == nullptr) return false;
  auto& r = registry();
  std::lock_guard lock(r.mutex);
  const auto it = r.live.find(handle);
  if (it == r.live.end() || it->second != kind) return false;
  r.live.erase(it);
  return true;
}

bool live(const void* handle, Kind kind) noexcept {
  if (handle == nullptr) return false;
  auto& r = registry();
  std::lock_guard lock(r.mutex);
  const auto it = r.live.find(handle);
  return it != r.live.end() && it->second == kind;
}

int fail(qbus_client* client, Errc code, const std::string& text) noexcept {
  try {
    t_last_error = text;
    if (client != nullptr) client->last_error = text;
  } catch (...) {
    // Out of memory for the text: the code still tells.
  }
  return static_cast<int>(code);
}

const char* thread_last_error() noexcept {
  return t_last_error.c_str();
}

namespace {
[[noreturn]] void bad_handle(const char* what, const char* kind) {
  throw Error(Errc::invalid_argument,
              std::string(what) + ": " + kind + " is NULL, freed or not a " + kind);
}
}  // namespace

qbus_client& client_of(qbus_client* c, const char* what) {
  if (!live(c, Kind::client)) bad_handle(what, "qbus_client");
  return *c;
}
qbus_message& message_of(const qbus_message* m, const char* what) {
  if (!live(m, Kind::message)) bad_handle(what, "qbus_message");
  return *const_cast<qbus_message*>(m);
}
qbus_region& region_of(qbus_region* r, const char* what) {
  if (!live(r, Kind::region)) bad_handle(what, "qbus_region");
  return *r;
}
qbus_shared_region& shared_region_of(const qbus_shared_region* r, const char* what) {
  if (!live(r, Kind::shared_region)) bad_handle(what, "qbus_shared_region");
  return *const_cast<qbus_shared_region*>(r);
}
qbus_subscription& subscription_of(const qbus_subscription* s, const char* what) {
  if (!live(s, Kind::subscription)) bad_handle(what, "qbus_subscription");
  auto& sub = *const_cast<qbus_subscription*>(s);
  if (sub.owner == nullptr) {
    throw Error(Errc::invalid_argument,
                std::string(what) + ": the subscription's client was freed; free it too");
  }
  return sub;
}

std::string_view text(const char* s, const char* what, const char* name) {
  if (s == nullptr)
    throw Error(Errc::invalid_argument, std::string(what) + ": " + name + " is NULL");
  return s;
}

std::string_view bytes(const void* data, std::size_t len, const char* what) {
  if (data == nullptr && len != 0) {
    throw Error(Errc::invalid_argument,
                std::string(what) + ": data is NULL with length " + std::to_string(len));
  }
  return {static_cast<const char*>(data), len};
}

void check_size(std::size_t struct_size, std::size_t min, const char* what) {
  if (struct_size < min) {
    throw Error(Errc::invalid_argument, std::string(what) + ": options.struct_size is " +
                                            std::to_string(struct_size) + ", expected at least " +
                                            std::to_string(min) +
                                            " (initialise the options with their _init function)");
  }
}

std::chrono::milliseconds ms(std::int64_t v) {
  return v < 0 ? kForever : std::chrono::milliseconds(v);
}

Headers headers(const qbus_header* h, std::size_t count, const char* what) {
  Headers out;
  if (count == 0) return out;
  if (h == nullptr) {
    throw Error(Errc::invalid_argument,
                std::string(what) + ": headers is NULL with header_count " + std::to_string(count));
  }
  out.reserve(count);
  for (std::size_t i = 0; i < count; ++i) {
    if (h[i].key == nullptr) {
      throw Error(Errc::invalid_argument,
                  std::string(what) + ": header " + std::to_string(i) + " has a NULL key");
    }
    out.emplace_back(h[i].key, bytes(h[i].value, h[i].value_len, what));
  }
  return out;
}

SendOptions send_options(const qbus_send_options* o, const char* what) {
  SendOptions s;
  if (o == nullptr) return s;
  check_struct(*o, what);
  s.headers = headers(o->headers, o->header_count, what);
  s.confirm = o->confirm != 0;
  s.ttl = std::chrono::milliseconds(o->ttl_ms);
  s.delay = std::chrono::milliseconds(o->delay_ms);
  s.priority = o->priority;
  return s;
}

DirectOptions direct_options(const qbus_direct_options* o, const char* what) {
  DirectOptions d;
  if (o == nullptr) return d;
  check_struct(*o, what);
  d.wait = ms(o->wait_ms);
  d.confirm = o->confirm != 0;
  d.headers = headers(o->headers, o->header_count, what);
  return d;
}

PublishOptions publish_options(const qbus_publish_options* o, const char* what) {
  PublishOptions p;
  if (o == nullptr) return p;
  check_struct(*o, what);
  p.headers = headers(o->headers, o->header_count, what);
  p.retain = o->retain != 0;
  p.confirm = o->confirm != 0;
  return p;
}

}  // namespace qbus::capi

namespace {

// A call on a handle without a client (messages, options): failures go to the thread only.
template <typename F>
int plain(const char* what, F&& body) noexcept {
  return guarded(nullptr, what, std::forward<F>(body));
}

qbus_message* new_message(qbus::Message m) {
  return make<qbus_message>(Kind::message, std::move(m));
}

// A batch's messages into the caller's array. Handles made first, so that running out of
// memory midway leaks nothing: the messages not handed out are dropped with `got`.
void hand_out(std::vector<qbus::Message> got, qbus_message** messages, size_t* count) {
  std::vector<std::unique_ptr<qbus_message>> made;
  made.reserve(got.size());
  for (auto& m : got)
    made.push_back(std::make_unique<qbus_message>(qbus_message{std::move(m)}));
  for (auto& h : made) {
    track(h.get(), Kind::message);
    messages[(*count)++] = h.release();
  }
}

int receive_flags(int flags, const char* what) {
  if ((flags & ~QBUS_RECEIVE_ACK) != 0) {
    throw Error(Errc::invalid_argument,
                std::string(what) + ": unknown flags " + std::to_string(flags & ~QBUS_RECEIVE_ACK));
  }
  return flags;
}

}  // namespace

extern "C" {

// ---- Errors ----------------------------------------------------------------------------------

const char* qbus_strerror(int code) {
  if (code < 0 || code > 0xffff || !qbus::errc_is_known(static_cast<std::uint16_t>(code))) {
    return "unknown";
  }
  // errc_name's views are of string literals: NUL-terminated.
  return qbus::errc_name(static_cast<Errc>(code)).data();
}

const char* qbus_last_error(void) {
  return thread_last_error();
}

// ---- Connecting ------------------------------------------------------------------------------

int qbus_client_options_init_size(qbus_client_options* o, size_t size) {
  return init_options(o, size, "qbus_client_options_init_size", [](qbus_client_options& x) {
    const qbus::ClientOptions d;
    x.connect_timeout_ms = d.connect_timeout.count();
    x.region_threshold = d.region_threshold;
  });
}

int qbus_client_connect(const qbus_client_options* o, qbus_client** client) {
  constexpr const char* what = "qbus_client_connect";
  return plain(what, [&] {
    out_param(client, what, "client");
    *client = nullptr;
    qbus::ClientOptions opts;
    if (o != nullptr) {
      check_struct(*o, what);
      const auto set = [](std::string& field, const char* s) {
        if (s != nullptr) field = s;
      };
      set(opts.address, o->address);
      set(opts.name, o->name);
      set(opts.token, o->token);
      set(opts.tls_ca, o->tls_ca);
      set(opts.tls_cert, o->tls_cert);
      set(opts.tls_key, o->tls_key);
      opts.connect_timeout = std::chrono::milliseconds(o->connect_timeout_ms);
      opts.region_threshold = o->region_threshold;
      if (QBUS_CAPI_HAS_FIELD(*o, region_pool_bytes)) opts.region_pool_bytes = o->region_pool_bytes;
    }
    *client = make<qbus_client>(Kind::client, qbus::Client(std::move(opts)));
  });
}

void qbus_client_free(qbus_client* c) {
  if (!untrack_if(c, Kind::client)) return;
  // Subscriptions cancel through the client, so they go first; their handles stay valid,
  // empty, until their owner frees them.
  for (qbus_subscription* s : c->subscriptions) {
    try {
      s->cpp = qbus::Subscription();
    } catch (...) {
      // Best effort, as Subscription's destructor.
    }
    s->owner = nullptr;
  }
  c->batches.clear();
  delete c;
}

const char* qbus_client_last_error(const qbus_client* c) {
  if (!live(c, Kind::client)) return nullptr;
  return c->last_error.c_str();
}

int qbus_client_session(const qbus_client* c, qbus_session_info* info) {
  return with_client(const_cast<qbus_client*>(c), "qbus_client_session", [&](qbus::Client& cl) {
    out_param(info, "qbus_client_session", "info");
    const qbus::SessionInfo& s = cl.session();
    *info = qbus_session_info{s.pid, s.uid, s.gid, s.client_id, s.max_payload, s.protocol_version};
  });
}

int qbus_client_fd(const qbus_client* c, int* fd) {
  return with_client(const_cast<qbus_client*>(c), "qbus_client_fd", [&](qbus::Client& cl) {
    out_param(fd, "qbus_client_fd", "fd");
    *fd = cl.fd();
  });
}

int qbus_client_wants_write(const qbus_client* c, int* wants_write) {
  return with_client(const_cast<qbus_client*>(c), "qbus_client_wants_write", [&](qbus::Client& cl) {
    out_param(wants_write, "qbus_client_wants_write", "wants_write");
    *wants_write = cl.wants_write() ? 1 : 0;
  });
}

int qbus_client_process(qbus_client* c) {
  return with_client(c, "qbus_client_process", [](qbus::Client& cl) { cl.process(); });
}

// ---- Queues ----------------------------------------------------------------------------------

int qbus_send_options_init_size(qbus_send_options* o, size_t size) {
  return init_options(o, size, "qbus_send_options_init_size");
}

int qbus_send(qbus_client* c, const char* key, const void* data, size_t len,
              const qbus_send_options* o) {
  constexpr const char* what = "qbus_send";
  return with_client(c, what, [&](qbus::Client& cl) {
    const auto k = text(key, what, "key");
    const auto payload = bytes(data, len, what);
    if (o == nullptr) {
      cl.send(k, payload);
    } else {
      cl.send(k, payload, send_options(o, what));
    }
  });
}

int qbus_receive(qbus_client* c, const char* key, int64_t timeout_ms, int flags,
                 qbus_message** message) {
  constexpr const char* what = "qbus_receive";
  return with_client(c, what, [&](qbus::Client& cl) {
    out_param(message, what, "message");
    *message = nullptr;
    const qbus::ReceiveOptions opts{(receive_flags(flags, what) & QBUS_RECEIVE_ACK) != 0};
    auto m = cl.receive(text(key, what, "key"), ms(timeout_ms), opts);
    if (m) *message = new_message(std::move(*m));
  });
}

int qbus_receive_batch(qbus_client* c, const char* key, size_t max, int64_t timeout_ms, int flags,
                       qbus_message** messages, size_t* count) {
  constexpr const char* what = "qbus_receive_batch";
  return with_client(c, what, [&](qbus::Client& cl) {
    out_param(count, what, "count");
    *count = 0;
    if (max != 0) out_param(messages, what, "messages");
    const qbus::ReceiveOptions opts{(receive_flags(flags, what) & QBUS_RECEIVE_ACK) != 0};
    hand_out(cl.receive_batch(text(key, what, "key"), max, ms(timeout_ms), opts), messages, count);
  });
}

int qbus_queue_options_init_size(qbus_queue_options* o, size_t size) {
  return init_options(o, size, "qbus_queue_options_init_size");
}

int qbus_declare(qbus_client* c, const char* key, const qbus_queue_options* o) {
  constexpr const char* what = "qbus_declare";
  return with_client(c, what, [&](qbus::Client& cl) {
    const auto k = text(key, what, "key");
    qbus::QueueOptions q;
    if (o != nullptr) {
      check_struct(*o, what);
      if (o->overflow < 0 || o->overflow > QBUS_OVERFLOW_BLOCK) {
        throw Error(Errc::invalid_argument,
                    "qbus_declare: unknown overflow " + std::to_string(o->overflow));
      }
      if (o->fsync < 0 || o->fsync > QBUS_FSYNC_NONE) {
        throw Error(Errc::invalid_argument,
                    "qbus_declare: unknown fsync " + std::to_string(o->fsync));
      }
      q.max_messages = o->max_messages;
      q.max_bytes = o->max_bytes;
      q.overflow = static_cast<qbus::Overflow>(o->overflow);
      q.ack_timeout = std::chrono::milliseconds(o->ack_timeout_ms);
      q.max_deliveries = o->max_deliveries;
      if (o->dead_letter != nullptr) q.dead_letter = o->dead_letter;
      q.dead_letter_overflow = o->dead_letter_overflow != 0;
      q.ttl = std::chrono::milliseconds(o->ttl_ms);
      q.priorities = o->priorities;
      q.dead_letter_expired = o->dead_letter_expired != 0;
      q.single_active_consumer = o->single_active_consumer != 0;
      q.durable = o->durable != 0;
      q.fsync = static_cast<qbus::QueueOptions::Fsync>(o->fsync);
      if (QBUS_CAPI_HAS_FIELD(*o, message_ids)) q.message_ids = o->message_ids != 0;
    }
    cl.declare(k, q);
  });
}

int qbus_purge(qbus_client* c, const char* key, uint64_t* dropped) {
  return with_client(c, "qbus_purge", [&](qbus::Client& cl) {
    const std::uint64_t n = cl.purge(text(key, "qbus_purge", "key"));
    if (dropped != nullptr) *dropped = n;
  });
}

int qbus_delete_queue(qbus_client* c, const char* key, uint64_t* dropped) {
  return with_client(c, "qbus_delete_queue", [&](qbus::Client& cl) {
    const std::uint64_t n = cl.delete_queue(text(key, "qbus_delete_queue", "key"));
    if (dropped != nullptr) *dropped = n;
  });
}

int qbus_sync(qbus_client* c) {
  return with_client(c, "qbus_sync", [](qbus::Client& cl) { cl.sync(); });
}

int qbus_send_failures(const qbus_client* c, uint64_t* count, int* last_code,
                       const char** last_text) {
  return with_client(const_cast<qbus_client*>(c), "qbus_send_failures", [&](qbus::Client& cl) {
    const qbus::SendFailures& f = cl.send_failures();
    if (count != nullptr) *count = f.count;
    if (last_code != nullptr) *last_code = static_cast<int>(f.last_code);
    if (last_text != nullptr) *last_text = f.last_message.c_str();
  });
}

int qbus_batch_begin(qbus_client* c) {
  return with_client(c, "qbus_batch_begin", [&](qbus::Client& cl) {
    c->batches.push_back(std::make_unique<qbus::Client::Batch>(cl));
  });
}

int qbus_batch_end(qbus_client* c) {
  return with_client(c, "qbus_batch_end", [&](qbus::Client&) {
    if (c->batches.empty()) {
      throw Error(Errc::invalid_argument, "qbus_batch_end: no batch begun");
    }
    c->batches.pop_back();
  });
}

// ---- Acknowledgements ------------------------------------------------------------------------

int qbus_ack(qbus_client* c, const qbus_message* m, int confirm) {
  return with_client(c, "qbus_ack", [&](qbus::Client& cl) {
    cl.ack(message_of(m, "qbus_ack").cpp, confirm != 0);
  });
}

int qbus_ack_up_to(qbus_client* c, uint64_t tag, int confirm) {
  return with_client(c, "qbus_ack_up_to",
                     [&](qbus::Client& cl) { cl.ack_up_to(tag, confirm != 0); });
}

int qbus_nack(qbus_client* c, const qbus_message* m, int action, int64_t delay_ms, int confirm) {
  return with_client(c, "qbus_nack", [&](qbus::Client& cl) {
    const auto& msg = message_of(m, "qbus_nack").cpp;
    cl.nack(msg, static_cast<qbus::NackAction>(action), std::chrono::milliseconds(delay_ms),
            confirm != 0);
  });
}

int qbus_extend(qbus_client* c, const qbus_message* m, int64_t by_ms, int confirm) {
  return with_client(c, "qbus_extend", [&](qbus::Client& cl) {
    cl.extend(message_of(m, "qbus_extend").cpp, std::chrono::milliseconds(by_ms), confirm != 0);
  });
}

// ---- Direct messages and requests ------------------------------------------------------------

int qbus_direct_options_init_size(qbus_direct_options* o, size_t size) {
  return init_options(o, size, "qbus_direct_options_init_size",
                      [](qbus_direct_options& x) { x.confirm = 1; });
}

int qbus_send_to_pid(qbus_client* c, uint32_t pid, const void* data, size_t len,
                     const qbus_direct_options* o) {
  constexpr const char* what = "qbus_send_to_pid";
  return with_client(c, what, [&](qbus::Client& cl) {
    const auto payload = bytes(data, len, what);
    cl.send_to_pid(pid, payload, direct_options(o, what));
  });
}

int qbus_send_to_client(qbus_client* c, uint64_t client_id, const void* data, size_t len,
                        const qbus_direct_options* o) {
  constexpr const char* what = "qbus_send_to_client";
  return with_client(c, what, [&](qbus::Client& cl) {
    const auto payload = bytes(data, len, what);
    cl.send_to_client(client_id, payload, direct_options(o, what));
  });
}

int qbus_receive_direct(qbus_client* c, int64_t timeout_ms, qbus_message** message) {
  return with_client(c, "qbus_receive_direct", [&](qbus::Client& cl) {
    out_param(message, "qbus_receive_direct", "message");
    *message = nullptr;
    if (auto m = cl.receive_direct(ms(timeout_ms))) *message = new_message(std::move(*m));
  });
}

int qbus_receive_direct_batch(qbus_client* c, size_t max, int64_t timeout_ms,
                              qbus_message** messages, size_t* count) {
  constexpr const char* what = "qbus_receive_direct_batch";
  return with_client(c, what, [&](qbus::Client& cl) {
    out_param(count, what, "count");
    *count = 0;
    if (max != 0) out_param(messages, what, "messages");
    hand_out(cl.receive_direct_batch(max, ms(timeout_ms)), messages, count);
  });
}

int qbus_request(qbus_client* c, const char* key, const void* data, size_t len, int64_t timeout_ms,
                 const qbus_header* hs, size_t header_count, qbus_message** reply) {
  constexpr const char* what = "qbus_request";
  return with_client(c, what, [&](qbus::Client& cl) {
    out_param(reply, what, "reply");
    *reply = nullptr;
    const auto k = text(key, what, "key");
    const auto payload = bytes(data, len, what);
    auto m = cl.request(k, payload, ms(timeout_ms), headers(hs, header_count, what));
    if (m) *reply = new_message(std::move(*m));
  });
}

int qbus_reply(qbus_client* c, const qbus_message* request, const void* data, size_t len) {
  return with_client(c, "qbus_reply", [&](qbus::Client& cl) {
    const auto& req = message_of(request, "qbus_reply").cpp;
    cl.reply(req, bytes(data, len, "qbus_reply"));
  });
}

// ---- Messages --------------------------------------------------------------------------------

int qbus_message_info_init_size(qbus_message_info* info, size_t size) {
  return init_options(info, size, "qbus_message_info_init_size");
}

int qbus_message_key(const qbus_message* m, const char** key) {
  return plain("qbus_message_key", [&] {
    const auto& msg = message_of(m, "qbus_message_key").cpp;
    out_param(key, "qbus_message_key", "key");
    *key = msg.key().c_str();
  });
}

int qbus_message_payload(const qbus_message* m, const void** data, size_t* len) {
  return plain("qbus_message_payload", [&] {
    const auto& msg = message_of(m, "qbus_message_payload").cpp;
    out_param(data, "qbus_message_payload", "data");
    out_param(len, "qbus_message_payload", "len");
    *data = msg.bytes().data();
    *len = msg.size();
  });
}

int qbus_message_info_get(const qbus_message* m, qbus_message_info* info) {
  constexpr const char* what = "qbus_message_info_get";
  return plain(what, [&] {
    const auto& msg = message_of(m, what).cpp;
    out_param(info, what, "info");
    check_struct(*info, what);
    info->sender_pid = msg.sender().pid;
    info->sender_uid = msg.sender().uid;
    info->sender_client_id = msg.sender().client_id;
    info->request_id = msg.request_id();
    info->is_request = msg.is_request() ? 1 : 0;
    info->is_direct = msg.is_direct() ? 1 : 0;
    info->in_shared_memory = msg.in_shared_memory() ? 1 : 0;
    info->delivery_tag = msg.delivery_tag();
    info->delivery_count = msg.delivery_count();
    info->redelivered = msg.redelivered() ? 1 : 0;
    info->dropped_before = msg.dropped_before();
    info->retained = msg.retained() ? 1 : 0;
    info->header_count = msg.headers().size();
    info->key = msg.key().c_str();
    info->payload = msg.bytes().data();
    info->payload_len = msg.size();
  });
}

int qbus_message_header_at(const qbus_message* m, size_t index, qbus_header* header) {
  constexpr const char* what = "qbus_message_header_at";
  return plain(what, [&] {
    const auto& hs = message_of(m, what).cpp.headers();
    out_param(header, what, "header");
    if (index >= hs.size()) {
      throw Error(Errc::invalid_argument, std::string(what) + ": index " + std::to_string(index) +
                                              " of " + std::to_string(hs.size()) + " headers");
    }
    *header =
        qbus_header{hs[index].first.c_str(), hs[index].second.data(), hs[index].second.size()};
  });
}

int qbus_message_header(const qbus_message* m, const char* name, const void** value,
                        size_t* value_len) {
  constexpr const char* what = "qbus_message_header";
  return plain(what, [&] {
    const auto& msg = message_of(m, what).cpp;
    const auto n = text(name, what, "name");
    out_param(value, what, "value");
    out_param(value_len, what, "value_len");
    *value = nullptr;
    *value_len = 0;
    if (const auto v = msg.header(n)) {
      *value = v->data();
      *value_len = v->size();
    }
  });
}

void qbus_message_free(qbus_message* m) {
  if (!untrack_if(m, Kind::message)) return;
  delete m;
}

}  // extern "C"
