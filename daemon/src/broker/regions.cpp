#include "broker/regions.hpp"

#include <utility>

namespace qbus::broker {
namespace {

RegionStatus refuse(Errc code, std::string text) {
  return RegionStatus{code, std::move(text)};
}

RegionGrant refuse_grant(Errc code, std::string text) {
  return RegionGrant{code, std::move(text), 0, false};
}

std::string region_name(RegionId id) {
  return "region " + std::to_string(id);
}

std::string not_held(RegionId id) {
  return "this connection holds no " + region_name(id) + " (unknown, freed, or never received)";
}

// open(2)'s rule: exactly one class of bits applies; root is never refused.
bool permits(const RegionInfo& r, const Identity& who, bool want_write) {
  if (who.uid == 0) return true;
  unsigned shift = 0;
  if (who.uid == r.owner_uid) {
    shift = 6;
  } else if (who.gid == r.owner_gid) {
    shift = 3;
  }
  const unsigned bits = (r.mode >> shift) & 07u;
  const unsigned need = want_write ? 06u : 04u;
  return (bits & need) == need;
}

}  // namespace

RegionTable::~RegionTable() {
  for (auto& [id, r] : regions_)
    backing_.destroy(r.handle);
}

RegionGrant RegionTable::allocate(PeerId owner, const Identity& who, std::uint64_t size) {
  return create(owner, who, size);
}

RegionGrant RegionTable::create(PeerId peer, const Identity& who, std::uint64_t size) {
  if (size == 0 || size > limits_.max_region_bytes) {
    return refuse_grant(Errc::payload_too_large,
                        "a region of " + std::to_string(size) + " bytes is outside 1.." +
                            std::to_string(limits_.max_region_bytes) + " bytes");
  }
  if (regions_.size() >= limits_.max_regions) {
    return refuse_grant(Errc::quota_exceeded, "the broker already holds its maximum of " +
                                                  std::to_string(limits_.max_regions) + " regions");
  }
  const RegionUsage used = uid_usage(who.uid);
  if (used.regions >= limits_.uid_max_regions) {
    return refuse_grant(Errc::quota_exceeded,
                        "uid " + std::to_string(who.uid) + " already owns its maximum of " +
                            std::to_string(limits_.uid_max_regions) + " regions");
  }
  if (size > limits_.uid_max_region_bytes || used.bytes > limits_.uid_max_region_bytes - size) {
    return refuse_grant(Errc::quota_exceeded,
                        "uid " + std::to_string(who.uid) + " owns " + std::to_string(used.bytes) +
                            " bytes of regions; " + std::to_string(size) +
                            " more would exceed its limit of " +
                            std::to_string(limits_.uid_max_region_bytes) + " bytes");
  }

  const RegionId id = next_id_;
  BackingHandle b = backing_.create(size, "qbus-region-" + std::to_string(id));
  if (!b.ok()) return refuse_grant(b.error, std::move(b.text));
  if (b.handle < 0) {
    return refuse_grant(Errc::internal_error,
                        "the region backing reported success without a handle");
  }
  ++next_id_;

  Region r;
  r.handle = b.handle;
  r.info.id = id;
  r.info.size = size;
  r.info.owner = peer;
  r.info.owner_pid = who.pid;
  r.info.owner_uid = who.uid;
  r.info.owner_gid = who.gid;
  try {
    Region& stored = regions_.emplace(id, std::move(r)).first->second;
    add_handle(peer, stored);
    RegionUsage& u = usage_[who.uid];
    u.bytes += size;
    ++u.regions;
  } catch (...) {
    // Out of memory while recording: undo it all, so no fd is left that nobody closes.
    regions_.erase(id);
    if (auto p = held_.find(peer); p != held_.end()) {
      p->second.erase(id);
      if (p->second.empty()) held_.erase(p);
    }
    backing_.destroy(b.handle);
    throw;
  }
  return RegionGrant{Errc::ok, {}, id, true};
}

void RegionTable::add_handle(PeerId peer, Region& r) {
  ++held_[peer][r.info.id];
  ++r.info.handles;
}

RegionStatus RegionTable::hold(PeerId peer, RegionId id) {
  auto it = regions_.find(id);
  if (it == regions_.end()) return refuse(Errc::internal_error, "no " + region_name(id));
  add_handle(peer, it->second);
  return {};
}

RegionStatus RegionTable::release(PeerId peer, RegionId id) {
  auto p = held_.find(peer);
  if (p == held_.end()) return refuse(kNoSuchRegion, not_held(id));
  auto h = p->second.find(id);
  if (h == p->second.end()) return refuse(kNoSuchRegion, not_held(id));
  if (--h->second == 0) {
    p->second.erase(h);
    if (p->second.empty()) held_.erase(p);
  }
  auto it = regions_.find(id);
  --it->second.info.handles;
  collect_if_unreferenced(it);
  return {};
}

void RegionTable::disconnect(PeerId peer) {
  auto p = held_.find(peer);
  if (p == held_.end()) return;
  const auto handles = std::move(p->second);
  held_.erase(p);
  for (const auto& [id, n] : handles) {
    auto it = regions_.find(id);
    it->second.info.handles -= n;
    collect_if_unreferenced(it);
  }
}

RegionStatus RegionTable::add_message_ref(RegionId id) {
  auto it = regions_.find(id);
  if (it == regions_.end()) return refuse(Errc::internal_error, "no " + region_name(id));
  ++it->second.info.message_refs;
  return {};
}

RegionStatus RegionTable::drop_message_ref(RegionId id) {
  auto it = regions_.find(id);
  if (it == regions_.end() || it->second.info.message_refs == 0) {
    return refuse(Errc::internal_error, "no message refers to " + region_name(id));
  }
  --it->second.info.message_refs;
  collect_if_unreferenced(it);
  return {};
}

RegionStatus RegionTable::seal_for_handover(PeerId peer, RegionId id) {
  if (handles_of(peer, id) == 0) return refuse(kNoSuchRegion, not_held(id));
  RegionInfo& info = regions_.find(id)->second.info;
  if (info.named) {
    return refuse(Errc::unexpected_frame,
                  region_name(id) + " is the named region '" + info.key +
                      "', a shared work area that stays writable; it cannot be sealed");
  }
  if (info.sealed) return {};
  RegionStatus s = backing_.seal_for_handover(regions_.find(id)->second.handle);
  if (s.ok()) info.sealed = true;
  return s;
}

RegionStatus RegionTable::check_slice(RegionId id, std::uint64_t offset,
                                      std::uint64_t length) const {
  const RegionInfo* r = find(id);
  if (r == nullptr) return refuse(kNoSuchRegion, "no " + region_name(id));
  if (length == 0) {
    return refuse(Errc::malformed_frame, "a slice of " + region_name(id) +
                                             " must not be empty; send empty payloads inline");
  }
  if (offset > r->size || length > r->size - offset) {
    return refuse(Errc::malformed_frame, "the slice at offset " + std::to_string(offset) +
                                             " of length " + std::to_string(length) +
                                             " does not fit " + region_name(id) + " of " +
                                             std::to_string(r->size) + " bytes");
  }
  return {};
}

RegionGrant RegionTable::create_named(std::string_view key, PeerId peer, const Identity& who,
                                      std::uint64_t size, std::uint32_t mode) {
  if (!proto::is_valid_key(key)) {
    return refuse_grant(Errc::invalid_key, "a region key is 1..255 bytes of [A-Za-z0-9._:/-]");
  }
  if ((mode & ~0666u) != 0) {
    return refuse_grant(Errc::malformed_frame,
                        "region mode " + std::to_string(mode) + " (decimal) has bits outside 0666");
  }
  if (named_.find(key) != named_.end()) {
    return refuse_grant(Errc::queue_conflict,
                        "a named region '" + std::string(key) + "' already exists");
  }
  RegionGrant g = create(peer, who, size);
  if (!g.ok()) return g;
  RegionInfo& info = regions_.find(g.id)->second.info;
  try {
    info.key = std::string(key);
    named_.emplace(info.key, g.id);
  } catch (...) {
    release(peer, g.id);  // the creator's handle is the only reference: frees it
    throw;
  }
  info.named = true;
  info.declared = true;
  info.mode = mode;
  return g;
}

RegionStatus RegionTable::remove_named(std::string_view key, const Identity& who) {
  auto n = named_.find(key);
  if (n == named_.end()) {
    return refuse(kNoSuchRegion, "no named region '" + std::string(key) + "'");
  }
  auto it = regions_.find(n->second);
  if (who.uid != 0 && who.uid != it->second.info.owner_uid) {
    return refuse(kRegionAccessDenied, "only uid " + std::to_string(it->second.info.owner_uid) +
                                           " or root may remove the named region '" +
                                           std::string(key) + "'");
  }
  named_.erase(n);
  it->second.info.declared = false;
  collect_if_unreferenced(it);
  return {};
}

RegionGrant RegionTable::attach(std::string_view key, PeerId peer, const Identity& who,
                                bool want_write) {
  auto n = named_.find(key);
  if (n == named_.end()) {
    return refuse_grant(kNoSuchRegion, "no named region '" + std::string(key) + "'");
  }
  Region& r = regions_.find(n->second)->second;
  if (!permits(r.info, who, want_write)) {
    return refuse_grant(kRegionAccessDenied, "uid " + std::to_string(who.uid) + " gid " +
                                                 std::to_string(who.gid) + " may not " +
                                                 (want_write ? "write" : "read") +
                                                 " the named region '" + std::string(key) + "'");
  }
  add_handle(peer, r);
  return RegionGrant{Errc::ok, {}, r.info.id, want_write};
}

const RegionInfo* RegionTable::find(RegionId id) const {
  auto it = regions_.find(id);
  return it == regions_.end() ? nullptr : &it->second.info;
}

int RegionTable::backing_handle(RegionId id) const {
  auto it = regions_.find(id);
  return it == regions_.end() ? -1 : it->second.handle;
}

std::uint64_t RegionTable::handles_of(PeerId peer, RegionId id) const {
  auto p = held_.find(peer);
  if (p == held_.end()) return 0;
  auto h = p->second.find(id);
  return h == p->second.end() ? 0 : h->second;
}

RegionUsage RegionTable::uid_usage(std::uint32_t uid) const {
  auto it = usage_.find(uid);
  return it == usage_.end() ? RegionUsage{} : it->second;
}

void RegionTable::collect_if_unreferenced(Regions::iterator it) {
  const RegionInfo& info = it->second.info;
  if (info.handles != 0 || info.message_refs != 0 || info.declared) return;
  backing_.destroy(it->second.handle);
  auto u = usage_.find(info.owner_uid);
  u->second.bytes -= info.size;
  if (--u->second.regions == 0) usage_.erase(u);
  regions_.erase(it);
}

}  // namespace qbus::broker
