// libqbus internals: what the two files of the C API (<qbus/qbus.h>) share. The C API is a
// front end over the C++ Client (client.hpp), not a second client: each handle holds the
// C++ object, and every entry point turns exceptions into a code and a last-error text.
//
// Handle checks: every handle the API gives out is recorded in one registry with its kind
// until it is freed, and every call looks its arguments up there first, so that a NULL,
// foreign or freed handle is an error code instead of a crash. The registry is a mutex
// and a hash set (handles are freed on any thread: messages, after their client).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "qbus/client.hpp"
#include "qbus/qbus.h"

struct qbus_client {
  explicit qbus_client(qbus::Client c) : cpp(std::move(c)) {}
  qbus::Client cpp;
  std::string last_error;
  std::vector<std::unique_ptr<qbus::Client::Batch>> batches;
  std::vector<qbus_subscription*> subscriptions;  // freed with the client's first
};

struct qbus_message {
  qbus::Message cpp;
};

struct qbus_region {
  qbus::Region cpp;
  bool given_up = false;  // sent whole: `cpp` is empty, but the region was sealed by it
};

struct qbus_shared_region {
  qbus::SharedRegion cpp;
};

struct qbus_subscription {
  qbus::Subscription cpp;
  qbus_client* owner = nullptr;  // null once the client was freed
};

namespace qbus::capi {

enum class Kind : std::uint8_t { client, message, region, shared_region, subscription };

void track(const void* handle, Kind kind);
// Forgets `handle` if it is a live handle of `kind`, in one step (two threads freeing the
// same message: one of them frees it); true when it did.
bool untrack_if(const void* handle, Kind kind) noexcept;
// True when `handle` is a live handle of `kind`.
bool live(const void* handle, Kind kind) noexcept;

// Records the failure (the thread's last error, and the client's when there is one) and
// returns its code.
int fail(qbus_client* client, Errc code, const std::string& text) noexcept;
const char* thread_last_error() noexcept;

// Runs `body`, turning what it throws into a code.
template <typename F>
int guarded(qbus_client* client, const char* what, F&& body) noexcept {
  try {
    body();
    return QBUS_OK;
  } catch (const Error& e) {
    return fail(client, e.code(), e.what());
  } catch (const std::bad_alloc&) {
    return fail(client, Errc::out_of_memory, std::string(what) + ": out of memory");
  } catch (const std::exception& e) {
    return fail(client, Errc::internal_error, std::string(what) + ": " + e.what());
  } catch (...) {
    return fail(client, Errc::internal_error, std::string(what) + ": unknown failure");
  }
}

// Argument checks: each throws Error(invalid_argument) naming the argument.
qbus_client& client_of(qbus_client* c, const char* what);
qbus_message& message_of(const qbus_message* m, const char* what);
qbus_region& region_of(qbus_region* r, const char* what);
qbus_shared_region& shared_region_of(const qbus_shared_region* r, const char* what);
qbus_subscription& subscription_of(const qbus_subscription* s, const char* what);
std::string_view text(const char* s, const char* what, const char* name);
std::string_view bytes(const void* data, std::size_t len, const char* what);
template <typename T>
void out_param(T* p, const char* what, const char* name) {
  if (p == nullptr) {
    throw Error(Errc::invalid_argument, std::string(what) + ": " + name + " is NULL");
  }
}
// The first field of every options struct; `min` is the size of its first version.
void check_size(std::size_t struct_size, std::size_t min, const char* what);
std::chrono::milliseconds ms(std::int64_t v);
Headers headers(const qbus_header* h, std::size_t count, const char* what);
SendOptions send_options(const qbus_send_options* o, const char* what);
DirectOptions direct_options(const qbus_direct_options* o, const char* what);
PublishOptions publish_options(const qbus_publish_options* o, const char* what);

// A client call: the handle checked, its failures recorded on it.
template <typename F>
int with_client(qbus_client* c, const char* what, F&& body) noexcept {
  if (!live(c, Kind::client)) {
    return guarded(nullptr, what, [&] { client_of(c, what); });
  }
  return guarded(c, what, [&] { body(c->cpp); });
}

// The least struct_size a struct of the C API takes: its size in QBUS_0, the first
// version of the ABI. A field added later goes at or after that offset (not into tail
// padding, where an older caller's struct_size would seem to cover it), is read or
// written only when the caller's struct_size covers it, and gets its default only then;
// a program built against an older qbus.h then keeps working with a later libqbus.
template <typename T>
inline constexpr std::size_t kQbus0Size = sizeof(T);
template <>
inline constexpr std::size_t kQbus0Size<qbus_client_options> =
    offsetof(qbus_client_options, region_pool_bytes);  // the first field added after QBUS_0
template <>
inline constexpr std::size_t kQbus0Size<qbus_queue_options> = offsetof(qbus_queue_options,
                                                                       message_ids);
// Whether the caller's struct `o` is recent enough to hold `field` (see kQbus0Size).
#define QBUS_CAPI_HAS_FIELD(o, field) \
  ((o).struct_size >= offsetof(std::remove_cvref_t<decltype(o)>, field) + sizeof((o).field))
// Tripwire: QBUS_0's sizes on LP64. A struct that grows must keep its old size above (the
// offset of its first new field) instead of sizeof.
static_assert(sizeof(void*) != 8 ||
                  (kQbus0Size<qbus_client_options> == 72 && kQbus0Size<qbus_send_options> == 56 &&
                   kQbus0Size<qbus_queue_options> == 96 && kQbus0Size<qbus_direct_options> == 40 &&
                   kQbus0Size<qbus_publish_options> == 32 && kQbus0Size<qbus_message_info> == 112 &&
                   kQbus0Size<qbus_subscribe_options> == 16 &&
                   kQbus0Size<qbus_subject_options> == 40),
              "a qbus.h struct changed size: keep its QBUS_0 size as the minimum");

// Refuses a struct that is not initialised (struct_size 0) or older than QBUS_0.
template <typename T>
void check_struct(const T& o, const char* what) {
  check_size(o.struct_size, kQbus0Size<T>, what);
}

// An options struct's _init_size: the caller's `size` bytes zeroed, struct_size set, then
// `defaults(*o)`, which sets QBUS_0's fields only (see kQbus0Size).
template <typename T, typename F>
int init_options(T* o, std::size_t size, const char* what, F&& defaults) noexcept {
  return guarded(nullptr, what, [&] {
    out_param(o, what, "options");
    check_size(size, kQbus0Size<T>, what);
    std::memset(static_cast<void*>(o), 0, size);
    o->struct_size = size;
    defaults(*o);
  });
}
template <typename T>
int init_options(T* o, std::size_t size, const char* what) noexcept {
  return init_options(o, size, what, [](T&) {});
}

// A new handle owning `value`, registered.
template <typename Handle, typename Value>
Handle* make(Kind kind, Value&& value) {
  auto h = std::make_unique<Handle>(Handle{std::forward<Value>(value)});
  track(h.get(), kind);
  return h.release();
}

}  // namespace qbus::capi
