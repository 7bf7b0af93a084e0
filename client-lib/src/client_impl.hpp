// libqbus internals, layer 3 of 3: the operations of Client on top of a Session
// (session.hpp). Client::Impl adds what only Client needs: argument checks, the inbox
// claim, the region threshold, and turning answers into Messages and Regions. The queue
// and direct operations are in client.cpp, the region ones in regions.cpp.
//
// Ownership, lifetime, thread-safety: Client owns its Impl through a unique_ptr and is not
// thread-safe. The handle states below (MappedPayload, RegionState, SharedRegionState)
// are owned by Message, Region and SharedRegion; they may outlive the Client and be
// destroyed on any thread, which is why they reach it only through the session's
// thread-safe ReleaseQueue.
#pragma once

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "qbus/client.hpp"
#include "qbus/proto/codec.hpp"
#include "qbus/proto/shm.hpp"
#include "qbus/proto/unique_fd.hpp"
#include "session.hpp"

namespace qbus {
namespace detail {

// A received region's read-only mapping, shared by the copies of its Message.
struct MappedPayload {
  MappedPayload(proto::shm::Mapping m, std::uint64_t id, std::shared_ptr<ReleaseQueue> r)
      : mapping(std::move(m)), region_id(id), releases(std::move(r)) {}
  MappedPayload(const MappedPayload&) = delete;
  MappedPayload& operator=(const MappedPayload&) = delete;
  ~MappedPayload() {
    mapping.reset();
    releases->push(region_id);
  }
  proto::shm::Mapping mapping;
  std::uint64_t region_id;
  std::shared_ptr<ReleaseQueue> releases;
};

struct RegionState {
  ~RegionState() {
    mapping.reset();
    if (!given_up) releases->push(id);
  }
  proto::UniqueFd fd;
  proto::shm::Mapping mapping;  // writable until the first send
  std::uint64_t id = 0;
  std::size_t size = 0;
  bool sealed = false;
  bool given_up = false;  // handed over with the release flag: the broker dropped our handle
  std::shared_ptr<ReleaseQueue> releases;
};

struct SharedRegionState {
  ~SharedRegionState() {
    mapping.reset();
    releases->push(id);
  }
  proto::shm::Mapping mapping;
  std::uint64_t id = 0;
  std::size_t size = 0;
  bool writable = false;
  std::string key;
  std::shared_ptr<ReleaseQueue> releases;
};

// The library's way into the private parts of the public types.
struct Access {
  static void set_mapped(Message& m, std::shared_ptr<const MappedPayload> p) {
    m.mapped_ = std::move(p);
  }
  static MessageView view(std::string_view key, std::span<const std::byte> bytes, Sender sender,
                          std::uint64_t request_id, const Message* region) {
    MessageView v;
    v.key_ = key;
    v.bytes_ = bytes;
    v.sender_ = sender;
    v.request_id_ = request_id;
    v.region_ = region;
    return v;
  }
  static const Message* region_of(const MessageView& v) { return v.region_; }
  static RegionState* state(Region& r) { return r.state_.get(); }
  static Region make_region(std::unique_ptr<RegionState> st) {
    Region r;
    r.state_ = std::move(st);
    return r;
  }
  static SharedRegion make_shared(std::unique_ptr<SharedRegionState> st) {
    SharedRegion r;
    r.state_ = std::move(st);
    return r;
  }
};

inline std::span<const std::byte> as_bytes(std::string_view s) {
  return std::as_bytes(std::span(s.data(), s.size()));
}

inline std::int32_t to_wire_timeout(std::chrono::milliseconds t) {
  if (t.count() < 0) return -1;
  return static_cast<std::int32_t>(std::min<std::int64_t>(t.count(), INT32_MAX));
}

}  // namespace detail

// Hidden like everything internal (Client itself is exported, and a nested class would
// inherit that): calls within the library stay direct and inlinable, not through the PLT.
struct __attribute__((visibility("hidden"))) Client::Impl {
  detail::Session session;
  std::size_t region_threshold = 0;
  bool inbox_claimed = false;

  void check_key(std::string_view key) const {
    if (!proto::is_valid_key(key)) {
      throw Error(Errc::invalid_key, "invalid queue key '" + std::string(key.substr(0, 64)) +
                                         "': use 1-255 characters of A-Z a-z 0-9 . _ : / -");
    }
  }
  void check_payload(std::size_t size) const {
    const std::uint32_t max = session.info().max_payload;
    if (size > max) {
      throw Error(Errc::payload_too_large, "payload of " + std::to_string(size) +
                                               " bytes exceeds the broker's limit of " +
                                               std::to_string(max));
    }
  }

  // ---- Queues, direct messages, requests (client.cpp) ----------------------------------
  // Declared inline, as they were when all of Impl sat in one class, so that the compiler
  // keeps folding them into send(), receive() and request(); defined in client.cpp, the
  // only file that uses them.

  inline std::uint64_t append_send(std::string_view key, std::span<const std::byte> payload,
                                   std::uint16_t flags);
  inline std::pair<std::uint64_t, std::chrono::milliseconds> ask_receive(
      std::string_view key, std::size_t max, std::chrono::milliseconds timeout);
  inline std::vector<Message> receive(std::string_view key, std::size_t max,
                                      std::chrono::milliseconds timeout);
  inline std::vector<Message> receive_direct(std::size_t max, std::chrono::milliseconds timeout);
  inline void send_direct(proto::TargetKind kind, std::uint64_t target, std::uint64_t in_reply_to,
                          std::span<const std::byte> payload, const DirectOptions& options);
  template <typename OnView>
  inline std::size_t collect_each(std::uint64_t corr, std::chrono::milliseconds timeout,
                                  std::string_view context, OnView&& on_view);
  inline std::vector<Message> collect(std::uint64_t corr, std::chrono::milliseconds timeout,
                                      std::string_view context, std::size_t expected = 1);
  // PURGE (or, with `remove`, DELETE) of `key`: the number of messages dropped.
  std::uint64_t drop(std::string_view key, bool remove);

  // ---- Regions (regions.cpp) -----------------------------------------------------------

  void require_unix(std::string_view what) const;
  // Payloads sent from memory that go through a region instead of inline.
  bool via_region(std::size_t size) const {
    return session.passes_fds() && size > 0 &&
           (size > region_threshold || size > session.info().max_payload);
  }
  std::optional<Region> copy_to_region(std::span<const std::byte> payload);
  Region allocate_region(std::size_t size);
  void send_region(detail::RegionState& st, proto::RegionTarget kind, std::uint64_t target,
                   std::string_view key, std::size_t offset, std::size_t length, bool release,
                   std::chrono::milliseconds wait, bool confirm);
  std::pair<proto::RegionGrantBody, proto::UniqueFd> wait_grant(std::uint64_t corr,
                                                                std::string_view context);
  Message mapped_message(proto::Bytes body, std::string_view context);
};

}  // namespace qbus
