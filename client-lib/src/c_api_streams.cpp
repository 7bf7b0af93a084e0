// The C API (<qbus/qbus.h>), part 2: subscriptions, publish and regions.
#include <algorithm>

#include "c_api.hpp"

using qbus::Errc;
using qbus::Error;
using namespace qbus::capi;

namespace {

// A call on a subscription: its client's last error records the failure.
template <typename F>
int with_subscription(const qbus_subscription* s, const char* what, F&& body) noexcept {
  qbus_client* owner = live(s, Kind::subscription) ? s->owner : nullptr;
  return guarded(owner, what, [&] { body(subscription_of(s, what)); });
}

qbus_subscription* adopt(qbus_client* c, qbus::Subscription sub) {
  c->subscriptions.reserve(c->subscriptions.size() + 1);  // no throw after the handle exists
  qbus_subscription* s = make<qbus_subscription>(Kind::subscription, std::move(sub));
  s->owner = c;
  c->subscriptions.push_back(s);
  return s;
}

}  // namespace

extern "C" {

// ---- Subscriptions ---------------------------------------------------------------------------

int qbus_subscribe_options_init_size(qbus_subscribe_options* o, size_t size) {
  return init_options(o, size, "qbus_subscribe_options_init_size",
                      [](qbus_subscribe_options& x) { x.ack = 1; });
}

int qbus_subject_options_init_size(qbus_subject_options* o, size_t size) {
  return init_options(o, size, "qbus_subject_options_init_size");
}

int qbus_subscribe(qbus_client* c, const char* key, const qbus_subscribe_options* o,
                   qbus_subscription** subscription) {
  constexpr const char* what = "qbus_subscribe";
  return with_client(c, what, [&](qbus::Client& cl) {
    out_param(subscription, what, "subscription");
    *subscription = nullptr;
    qbus::SubscribeOptions opts;
    if (o != nullptr) {
      check_struct(*o, what);
      opts.prefetch = o->prefetch;
      opts.ack = o->ack != 0;
    }
    *subscription = adopt(c, cl.subscribe(text(key, what, "key"), opts));
  });
}

int qbus_subscribe_subject(qbus_client* c, const char* pattern, const qbus_subject_options* o,
                           qbus_subscription** subscription) {
  constexpr const char* what = "qbus_subscribe_subject";
  return with_client(c, what, [&](qbus::Client& cl) {
    out_param(subscription, what, "subscription");
    *subscription = nullptr;
    qbus::SubjectOptions opts;
    if (o != nullptr) {
      check_struct(*o, what);
      if (o->slow < 0 || o->slow > QBUS_SLOW_BLOCK) {
        throw Error(Errc::invalid_argument,
                    "qbus_subscribe_subject: unknown slow policy " + std::to_string(o->slow));
      }
      if (o->group != nullptr) opts.group = o->group;
      opts.max_messages = o->max_messages;
      opts.max_bytes = o->max_bytes;
      opts.slow = static_cast<qbus::SlowPolicy>(o->slow);
    }
    *subscription = adopt(c, cl.subscribe_subject(text(pattern, what, "pattern"), opts));
  });
}

int qbus_subscription_next(qbus_subscription* s, int64_t timeout_ms, qbus_message** message) {
  constexpr const char* what = "qbus_subscription_next";
  return with_subscription(s, what, [&](qbus_subscription& sub) {
    out_param(message, what, "message");
    *message = nullptr;
    if (auto m = sub.cpp.next(ms(timeout_ms))) {
      *message = make<qbus_message>(Kind::message, std::move(*m));
    }
  });
}

int qbus_subscription_pending(const qbus_subscription* s, size_t* count) {
  return with_subscription(s, "qbus_subscription_pending", [&](qbus_subscription& sub) {
    out_param(count, "qbus_subscription_pending", "count");
    *count = sub.cpp.pending();
  });
}

int qbus_subscription_active(const qbus_subscription* s, int* active) {
  return with_subscription(s, "qbus_subscription_active", [&](qbus_subscription& sub) {
    out_param(active, "qbus_subscription_active", "active");
    *active = sub.cpp.active() ? 1 : 0;
  });
}

int qbus_subscription_cancel(qbus_subscription* s) {
  return with_subscription(s, "qbus_subscription_cancel",
                           [](qbus_subscription& sub) { sub.cpp.cancel(); });
}

void qbus_subscription_free(qbus_subscription* s) {
  if (!untrack_if(s, Kind::subscription)) return;
  if (s->owner != nullptr) std::erase(s->owner->subscriptions, s);
  delete s;  // cancels it, best effort (Subscription's destructor)
}

// ---- Publish ---------------------------------------------------------------------------------

int qbus_publish_options_init_size(qbus_publish_options* o, size_t size) {
  return init_options(o, size, "qbus_publish_options_init_size");
}

int qbus_publish(qbus_client* c, const char* subject, const void* data, size_t len,
                 const qbus_publish_options* o) {
  constexpr const char* what = "qbus_publish";
  return with_client(c, what, [&](qbus::Client& cl) {
    const auto s = text(subject, what, "subject");
    const auto payload = bytes(data, len, what);
    cl.publish(s, payload, publish_options(o, what));
  });
}

// ---- Regions ---------------------------------------------------------------------------------

int qbus_region_allocate(qbus_client* c, size_t size, qbus_region** region) {
  return with_client(c, "qbus_region_allocate", [&](qbus::Client& cl) {
    out_param(region, "qbus_region_allocate", "region");
    *region = nullptr;
    *region = make<qbus_region>(Kind::region, cl.allocate_region(size));
  });
}

int qbus_region_data(qbus_region* r, void** data, size_t* size) {
  return guarded(nullptr, "qbus_region_data", [&] {
    auto& region = region_of(r, "qbus_region_data").cpp;
    out_param(data, "qbus_region_data", "data");
    out_param(size, "qbus_region_data", "size");
    const auto d = region.data();
    *data = d.empty() ? nullptr : d.data();
    *size = d.size();
  });
}

int qbus_region_info(const qbus_region* r, uint64_t* id, int* sealed) {
  return guarded(nullptr, "qbus_region_info", [&] {
    const auto& handle = region_of(const_cast<qbus_region*>(r), "qbus_region_info");
    if (id != nullptr) *id = handle.cpp.id();
    if (sealed != nullptr) *sealed = handle.cpp.sealed() || handle.given_up ? 1 : 0;
  });
}

int qbus_send_region(qbus_client* c, const char* key, qbus_region* r, const qbus_send_options* o) {
  constexpr const char* what = "qbus_send_region";
  return with_client(c, what, [&](qbus::Client& cl) {
    const auto k = text(key, what, "key");
    auto& handle = region_of(r, what);
    const qbus::SendOptions opts = send_options(o, what);
    if (o == nullptr) {
      cl.send(k, std::move(handle.cpp));
    } else {
      cl.send(k, std::move(handle.cpp), opts);
    }
    handle.given_up = true;
  });
}

int qbus_send_region_slice(qbus_client* c, const char* key, qbus_region* r, size_t offset,
                           size_t length) {
  constexpr const char* what = "qbus_send_region_slice";
  return with_client(c, what, [&](qbus::Client& cl) {
    const auto k = text(key, what, "key");
    cl.send(k, region_of(r, what).cpp, offset, length);
  });
}

int qbus_send_region_to_pid(qbus_client* c, uint32_t pid, qbus_region* r,
                            const qbus_direct_options* o) {
  constexpr const char* what = "qbus_send_region_to_pid";
  return with_client(c, what, [&](qbus::Client& cl) {
    auto& handle = region_of(r, what);
    cl.send_to_pid(pid, std::move(handle.cpp), direct_options(o, what));
    handle.given_up = true;
  });
}

int qbus_publish_region(qbus_client* c, const char* subject, qbus_region* r,
                        const qbus_publish_options* o) {
  constexpr const char* what = "qbus_publish_region";
  return with_client(c, what, [&](qbus::Client& cl) {
    const auto s = text(subject, what, "subject");
    auto& handle = region_of(r, what);
    cl.publish(s, std::move(handle.cpp), publish_options(o, what));
    handle.given_up = true;
  });
}

void qbus_region_free(qbus_region* r) {
  if (!untrack_if(r, Kind::region)) return;
  delete r;
}

int qbus_shared_region_create(qbus_client* c, const char* key, size_t size, unsigned mode,
                              qbus_shared_region** region) {
  constexpr const char* what = "qbus_shared_region_create";
  return with_client(c, what, [&](qbus::Client& cl) {
    out_param(region, what, "region");
    *region = nullptr;
    auto r = cl.create_shared_region(text(key, what, "key"), size, mode);
    *region = make<qbus_shared_region>(Kind::shared_region, std::move(r));
  });
}

int qbus_shared_region_attach(qbus_client* c, const char* key, int writable,
                              qbus_shared_region** region) {
  constexpr const char* what = "qbus_shared_region_attach";
  return with_client(c, what, [&](qbus::Client& cl) {
    out_param(region, what, "region");
    *region = nullptr;
    auto r = cl.attach_shared_region(text(key, what, "key"), writable != 0);
    *region = make<qbus_shared_region>(Kind::shared_region, std::move(r));
  });
}

int qbus_shared_region_remove(qbus_client* c, const char* key) {
  return with_client(c, "qbus_shared_region_remove", [&](qbus::Client& cl) {
    cl.remove_shared_region(text(key, "qbus_shared_region_remove", "key"));
  });
}

int qbus_shared_region_data(qbus_shared_region* r, void** data, size_t* size) {
  return guarded(nullptr, "qbus_shared_region_data", [&] {
    auto& region = shared_region_of(r, "qbus_shared_region_data").cpp;
    out_param(data, "qbus_shared_region_data", "data");
    out_param(size, "qbus_shared_region_data", "size");
    const auto d = region.data();
    *data = d.empty() ? nullptr : d.data();
    *size = region.size();
  });
}

int qbus_shared_region_bytes(const qbus_shared_region* r, const void** data, size_t* size) {
  return guarded(nullptr, "qbus_shared_region_bytes", [&] {
    const auto& region = shared_region_of(r, "qbus_shared_region_bytes").cpp;
    out_param(data, "qbus_shared_region_bytes", "data");
    out_param(size, "qbus_shared_region_bytes", "size");
    const auto b = region.bytes();
    *data = b.data();
    *size = b.size();
  });
}

void qbus_shared_region_free(qbus_shared_region* r) {
  if (!untrack_if(r, Kind::shared_region)) return;
  delete r;
}

}  // extern "C"
