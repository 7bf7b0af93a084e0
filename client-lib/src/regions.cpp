// Client's shared-memory operations (regions and shared regions) and the handles they
// return. The fd work is proto::shm's; the session carries the frames and the fds.
#include <cstring>
#include <tuple>

#include "client_impl.hpp"

namespace qbus {
namespace {

using proto::FrameType;

// Allocates the pages of a fresh region (charged to this process's memory cgroup, so a
// shortage is an error here and not a SIGBUS later) and maps them writable; `fork_private`
// as proto::shm::populate_writable's.
proto::shm::Mapping reserve_and_map(int fd, std::size_t size, std::string_view what,
                                    bool fork_private) {
  auto map = proto::shm::populate_writable(fd, size, fork_private);
  if (!map) throw Error(map.error().code, std::string(what) + ": " + map.error().text);
  return std::move(map).value();
}

}  // namespace

void Client::Impl::require_unix(std::string_view what) const {
  if (!session.passes_fds()) {
    throw Error(Errc::unexpected_frame,
                std::string(what) + " needs a Unix socket connection (fds cannot cross TCP)");
  }
}

// A region holding a copy of `payload`; nullopt when the region quota is used up and the
// payload may go inline instead (sending it then behaves exactly as below the threshold:
// the queue's max_bytes and overflow policy apply).
std::optional<Region> Client::Impl::copy_to_region(std::span<const std::byte> payload) {
  try {
    Region r = allocate_region(payload.size());
    std::memcpy(r.data().data(), payload.data(), payload.size());
    return r;
  } catch (const Error& e) {
    if (e.code() == Errc::quota_exceeded && payload.size() <= session.info().max_payload) {
      return std::nullopt;
    }
    throw;
  }
}

// Waits for the REGION answering `corr`; returns its fields and fd.
std::pair<proto::RegionGrantBody, proto::UniqueFd> Client::Impl::wait_grant(
    std::uint64_t corr, std::string_view context) {
  proto::RegionGrantBody g;
  proto::UniqueFd got_fd;
  const bool answered = session.wait_for(
      corr, detail::Session::kNoDeadline, [&](const proto::Header& h, proto::Bytes b) {
        if (h.type == FrameType::error) session.throw_error_frame(b, context);
        if (h.type != FrameType::region || proto::decode_region_grant(b, g) != Errc::ok) {
          session.fail(Errc::protocol_violation, std::string(context) + ": unexpected answer");
        }
        got_fd = session.take_frame_fd();
        return true;
      });
  if (!answered) session.fail(Errc::io_error, std::string(context) + ": broker did not answer");
  return {g, std::move(got_fd)};
}

std::uint64_t Client::Impl::ask_region(std::size_t size) {
  session.check_usable();
  require_unix("allocate_region");
  if (size == 0) throw Error(Errc::invalid_argument, "allocate_region: size 0");
  const std::uint64_t corr = session.next_correlation();
  proto::append_region_alloc(session.out(), corr, proto::RegionAlloc{size});
  return corr;
}

Region Client::Impl::granted_region(const proto::RegionGrantBody& g, proto::UniqueFd region_fd,
                                    std::size_t size) {
  if (g.size != size) {
    session.releases()->push(g.region_id);
    session.fail(Errc::protocol_violation, "broker granted a region of " + std::to_string(g.size) +
                                               " bytes for " + std::to_string(size));
  }
  // The broker made the memfd but allocated none of it: the pages are ours. A child forked
  // while we fill the region must not inherit a writable mapping: it would keep us from
  // sealing the region when we send it.
  proto::shm::Mapping mapping;
  try {
    mapping = reserve_and_map(region_fd.get(), size, "allocate_region", /*fork_private=*/true);
  } catch (...) {
    session.releases()->push(g.region_id);  // the grant is ours to give back
    throw;
  }
  return writable_region(g.region_id, size, std::move(region_fd), std::move(mapping));
}

Region Client::Impl::writable_region(std::uint64_t id, std::size_t size, proto::UniqueFd fd,
                                     proto::shm::Mapping mapping) {
  auto st = std::make_unique<detail::RegionState>();
  st->releases = session.releases();
  st->id = id;  // from here on the destructor releases the handle
  st->size = size;
  st->mapping = std::move(mapping);
  st->fd = std::move(fd);
  return detail::Access::make_region(std::move(st));
}

Region Client::Impl::allocate_region(std::size_t size) {
  if (region_pool && region_pool->poolable(size)) return allocate_pooled(size);
  const std::uint64_t corr = ask_region(size);
  auto [g, region_fd] = wait_grant(corr, "allocate a region of " + std::to_string(size) + " bytes");
  return granted_region(g, std::move(region_fd), size);
}

Region Client::Impl::allocate_pooled(std::size_t size) {
  session.check_usable();
  const std::string context = "allocate a region of " + std::to_string(size) + " bytes";
  auto ready = region_pool->take(size);
  // Evictions first, so that their releases go out ahead of every REGION_ALLOC; then the
  // caller's own grant, so the refills never take quota it needs. All of them travel in
  // one write and one round trip.
  const std::size_t n = region_pool->wanted(size);
  const std::uint64_t corr = ready ? 0 : ask_region(size);
  std::uint64_t refills[detail::RegionPool::kDepth] = {};
  for (std::size_t i = 0; i < n; ++i)
    refills[i] = ask_region(size);

  std::optional<Error> refused;
  proto::RegionGrantBody grant;
  proto::UniqueFd grant_fd;
  if (!ready) {
    try {
      std::tie(grant, grant_fd) = wait_grant(corr, context);
    } catch (const Error& e) {
      if (session.broken()) throw;
      refused = e;  // answered after the refills below are read
    }
  }
  for (std::size_t i = 0; i < n; ++i) {
    try {
      auto [g, fd] = wait_grant(refills[i], context + " for the pool");
      region_pool->add(g.region_id, size, std::move(fd));
    } catch (const Error&) {
      if (session.broken()) throw;  // a refused refill only leaves the pool short
    }
  }
  if (ready) {
    return writable_region(ready->id, size, std::move(ready->fd), std::move(ready->mapping));
  }
  if (!refused) return granted_region(grant, std::move(grant_fd), size);
  // The quota is the uid's: regions the pool keeps ready for other sizes give way.
  if (refused->code() == Errc::quota_exceeded && region_pool->drain() > 0) {
    const std::uint64_t again = ask_region(size);
    auto [g, fd] = wait_grant(again, context);
    return granted_region(g, std::move(fd), size);
  }
  throw *refused;
}

std::uint64_t Client::Impl::append_region_send(detail::RegionState& st, proto::RegionTarget kind,
                                               std::uint64_t target, std::string_view key,
                                               std::size_t offset, std::size_t length, bool release,
                                               std::chrono::milliseconds wait, bool confirm,
                                               const detail::MessageProperties* props) {
  session.check_usable();
  require_unix("sending a region");
  if (st.id == 0 || st.given_up) {
    throw Error(Errc::invalid_argument, "send: the Region is empty (moved from or given up)");
  }
  if (length == 0 || offset > st.size || length > st.size - offset) {
    throw Error(Errc::invalid_argument, "send: slice of " + std::to_string(length) +
                                            " bytes at offset " + std::to_string(offset) +
                                            " is outside the region of " + std::to_string(st.size) +
                                            " bytes");
  }
  if (kind == proto::RegionTarget::queue) check_key(key);
  if (!st.sealed) {
    // Immutable before anyone else sees it: the kernel refuses the write seal while a
    // writable mapping exists, and the broker refuses regions without it.
    {
      const detail::RegionPool::HoldOff quiet(region_pool.get());
      st.mapping.reset();
    }
    if (auto sealed = proto::shm::seal_write(st.fd.get()); !sealed) {
      throw Error(sealed.error().code, "send: " + sealed.error().text);
    }
    st.fd.reset();
    st.sealed = true;
  }
  proto::SendRegion m;
  m.region_id = st.id;
  m.offset = offset;
  m.length = length;
  m.target_kind = kind;
  m.release = release;
  m.target = target;
  m.key = key;
  if (kind == proto::RegionTarget::pid) {
    m.wait_ms = wait.count() < 0 ? INT32_MAX : detail::to_wire_timeout(wait);
  }
  if (props) append_properties(*props, /*queue_message=*/kind == proto::RegionTarget::queue);
  const std::uint64_t corr = session.next_correlation();
  proto::append_send_region(session.out(), corr, confirm ? proto::kFlagConfirm : 0, m);
  if (release) st.given_up = true;
  return corr;
}

void Client::Impl::send_region(detail::RegionState& st, proto::RegionTarget kind,
                               std::uint64_t target, std::string_view key, std::size_t offset,
                               std::size_t length, bool release, std::chrono::milliseconds wait,
                               bool confirm, const detail::MessageProperties* props) {
  const std::uint64_t corr =
      append_region_send(st, kind, target, key, offset, length, release, wait, confirm, props);
  if (confirm) {
    session.wait_ok(corr, kind == proto::RegionTarget::queue ? "send to '" + std::string(key) + "'"
                          : kind == proto::RegionTarget::subject
                              ? "publish to '" + std::string(key) + "'"
                              : "region send to " + std::to_string(target));
  } else {
    session.flush_unless_corked();
  }
}

// A DELIVER_REGION: the payload is a read-only mapping of the region's fd, checked to be
// sealed against any change first.
Message Client::Impl::mapped_message(proto::Bytes body, std::string_view context) {
  proto::DeliverRegion d;
  if (proto::decode_deliver_region(body, d) != Errc::ok) {
    session.fail(Errc::protocol_violation, std::string(context) + ": malformed DELIVER_REGION");
  }
  proto::UniqueFd region_fd = session.take_frame_fd();
  auto map = proto::shm::map_readonly(region_fd.get(), d.offset, d.length);
  if (!map) {
    session.releases()->push(d.region_id);
    session.fail(Errc::protocol_violation,
                 std::string(context) + ": unusable region from the broker: " + map.error().text);
  }
  Message m(std::string(d.key), {}, Sender{d.sender_pid, d.sender_uid, d.sender_client_id},
            d.request_id);
  detail::Access::set_mapped(m, std::make_shared<const detail::MappedPayload>(
                                    std::move(map).value(), d.region_id, session.releases()));
  return m;
}

Region Client::allocate_region(std::size_t size) {
  return impl_->allocate_region(size);
}

RegionPoolStats Client::region_pool_stats() const {
  return impl_->region_pool ? impl_->region_pool->stats() : RegionPoolStats{};
}

void Client::send(std::string_view key, Region&& region) {
  auto* st = detail::Access::state(region);
  if (st == nullptr) throw Error(Errc::invalid_argument, "send: the Region is empty");
  impl_->send_region(*st, proto::RegionTarget::queue, 0, key, 0, st->size, true,
                     std::chrono::milliseconds(0), false);
  region = Region();
}

void Client::send(std::string_view key, Region&& region, const SendOptions& options) {
  auto* st = detail::Access::state(region);
  if (st == nullptr) throw Error(Errc::invalid_argument, "send: the Region is empty");
  const auto props = detail::message_properties(options);
  if (!props.empty()) impl_->require_v2("send with headers, a ttl, a delay or a priority");
  impl_->send_region(*st, proto::RegionTarget::queue, 0, key, 0, st->size, true,
                     std::chrono::milliseconds(0), options.confirm, &props);
  region = Region();
}

void Client::send(std::string_view key, Region& region, std::size_t offset, std::size_t length) {
  auto* st = detail::Access::state(region);
  if (st == nullptr) throw Error(Errc::invalid_argument, "send: the Region is empty");
  impl_->send_region(*st, proto::RegionTarget::queue, 0, key, offset, length, false,
                     std::chrono::milliseconds(0), false);
}

void Client::send_to_pid(std::uint32_t pid, Region&& region, const DirectOptions& options) {
  if (pid == 0) throw Error(Errc::invalid_argument, "send_to_pid: pid 0 names no process");
  auto* st = detail::Access::state(region);
  if (st == nullptr) throw Error(Errc::invalid_argument, "send_to_pid: the Region is empty");
  const auto props = detail::message_properties(options.headers);
  if (!props.empty()) impl_->require_v2("direct message with headers");
  impl_->send_region(*st, proto::RegionTarget::pid, pid, {}, 0, st->size, true, options.wait,
                     options.confirm, &props);
  region = Region();
}

// ---- Shared regions ---------------------------------------------------------------------

SharedRegion Client::create_shared_region(std::string_view key, std::size_t size, unsigned mode) {
  auto& impl = *impl_;
  impl.session.check_usable();
  impl.require_unix("create_shared_region");
  impl.check_key(key);
  if (size == 0) throw Error(Errc::invalid_argument, "create_shared_region: size 0");
  if ((mode & ~0666u) != 0) {
    throw Error(Errc::invalid_argument, "create_shared_region: mode may only hold bits of 0666");
  }
  const std::uint64_t corr = impl.session.next_correlation();
  proto::append_region_create(impl.session.out(), corr,
                              proto::RegionCreate{size, static_cast<std::uint16_t>(mode), key});
  auto [g, fd] = impl.wait_grant(corr, "create shared region '" + std::string(key) + "'");
  auto st = std::make_unique<detail::SharedRegionState>();
  st->releases = impl.session.releases();
  st->id = g.region_id;
  st->size = static_cast<std::size_t>(g.size);
  st->writable = true;
  st->key = std::string(key);
  // The creator pays for the pages (see allocate_region); attachers share them.
  st->mapping = reserve_and_map(fd.get(), st->size, "create_shared_region", /*fork_private=*/false);
  return detail::Access::make_shared(std::move(st));
}

SharedRegion Client::attach_shared_region(std::string_view key, bool writable) {
  auto& impl = *impl_;
  impl.session.check_usable();
  impl.require_unix("attach_shared_region");
  impl.check_key(key);
  const std::uint64_t corr = impl.session.next_correlation();
  proto::append_region_attach(impl.session.out(), corr, proto::RegionAttach{writable, key});
  auto [g, fd] = impl.wait_grant(corr, "attach shared region '" + std::string(key) + "'");
  auto st = std::make_unique<detail::SharedRegionState>();
  st->releases = impl.session.releases();
  st->id = g.region_id;
  st->size = static_cast<std::size_t>(g.size);
  st->writable = g.writable;
  st->key = std::string(key);
  auto map = g.writable ? proto::shm::map_writable(fd.get(), st->size)
                        : proto::shm::map_shared_readonly(fd.get(), st->size);
  if (!map) throw Error(map.error().code, "attach_shared_region: " + map.error().text);
  st->mapping = std::move(map).value();
  return detail::Access::make_shared(std::move(st));
}

void Client::remove_shared_region(std::string_view key) {
  auto& impl = *impl_;
  impl.session.check_usable();
  impl.require_unix("remove_shared_region");
  impl.check_key(key);
  const std::uint64_t corr = impl.session.next_correlation();
  proto::append_region_remove(impl.session.out(), corr, key);
  impl.session.wait_ok(corr, "remove shared region '" + std::string(key) + "'");
}

// ---- Region, SharedRegion ---------------------------------------------------------------

Region::Region() noexcept = default;
Region::~Region() = default;
Region::Region(Region&&) noexcept = default;
Region& Region::operator=(Region&&) noexcept = default;

std::span<std::byte> Region::data() noexcept {
  return state_ ? state_->mapping.mutable_bytes() : std::span<std::byte>{};
}
std::size_t Region::size() const noexcept {
  return state_ ? state_->size : 0;
}
std::uint64_t Region::id() const noexcept {
  return state_ ? state_->id : 0;
}
bool Region::sealed() const noexcept {
  return state_ && state_->sealed;
}

SharedRegion::SharedRegion() noexcept = default;
SharedRegion::~SharedRegion() = default;
SharedRegion::SharedRegion(SharedRegion&&) noexcept = default;
SharedRegion& SharedRegion::operator=(SharedRegion&&) noexcept = default;

std::span<std::byte> SharedRegion::data() noexcept {
  return state_ ? state_->mapping.mutable_bytes() : std::span<std::byte>{};
}
std::span<const std::byte> SharedRegion::bytes() const noexcept {
  return state_ ? state_->mapping.bytes() : std::span<const std::byte>{};
}
std::size_t SharedRegion::size() const noexcept {
  return state_ ? state_->size : 0;
}
bool SharedRegion::writable() const noexcept {
  return state_ && state_->writable;
}
std::uint64_t SharedRegion::id() const noexcept {
  return state_ ? state_->id : 0;
}
const std::string& SharedRegion::key() const noexcept {
  static const std::string empty;
  return state_ ? state_->key : empty;
}

}  // namespace qbus
