// Bookkeeping of shared-memory regions (docs/architecture.md, principle 5): which regions exist,
// who holds them, what they cost their owner's uid, and when the last reference is gone so the
// region can be reclaimed. The memory itself lives behind a RegionBacking (sealed memfds at
// the edge, a recording fake in tests); this module does no I/O of its own.
//
// A region stays alive while anything refers to it. Three kinds of reference count:
//   handles       per peer: the allocating peer holds one; the broker adds one whenever it
//                 hands the region's fd to a peer (hold), e.g. on delivering a region
//                 message, even to a peer that already holds it. release() drops one;
//                 disconnect() drops all of that peer's.
//   message refs  one per queued message that refers to the region (or a slice of it).
//   declaration   a named region's key, from create_named until remove_named.
// When the count of all three reaches zero the backing is destroyed, exactly once, and the
// owner's uid gets its charge back. The id is never handed out again.
//
// Error codes: this module answers with codes that travel in ERROR frames (PROTOCOL.md,
// section 11); the constants below name the two it uses for refusals.
//
// Thread-safety: none. One thread (the broker's) owns a RegionTable, and the backing is
// called synchronously on that thread; the backing must not call back into the table.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "broker/types.hpp"

namespace qbus::broker {

// The id (or key) names no region this peer may use: unknown, already freed, or not held.
// One code for all three, so that a peer learns nothing about other peers' regions.
inline constexpr Errc kNoSuchRegion = Errc::no_such_region;
// Access to a named region is refused by its mode, or remove_named by a non-owner.
inline constexpr Errc kRegionAccessDenied = Errc::permission_denied;

// The outcome of an operation that yields nothing but success or a refusal.
struct RegionStatus {
  Errc error = Errc::ok;
  std::string text;  // for a refusal: one sentence for the ERROR frame
  bool ok() const { return error == Errc::ok; }
};

// The outcome of allocate, create_named and attach: on success the region and whether the
// caller's handle allows writing.
struct RegionGrant {
  Errc error = Errc::ok;
  std::string text;
  RegionId id = 0;
  bool writable = false;
  bool ok() const { return error == Errc::ok; }
};

// What RegionBacking::create answers: a handle (an fd at the edge), or why not.
struct BackingHandle {
  Errc error = Errc::ok;
  std::string text;
  int handle = -1;
  bool ok() const { return error == Errc::ok; }
};

// The memory behind regions, implemented by the edge with memfds. Codes a backing returns
// are passed on to the peer unchanged, so they must be wire codes (below 200): for example
// quota_exceeded when tmpfs or the memory cgroup is full.
class RegionBacking {
 public:
  virtual ~RegionBacking() = default;
  // A new writable region of exactly `size` bytes; `name` only labels it (e.g. in /proc).
  virtual BackingHandle create(std::uint64_t size, std::string_view name) = 0;
  // Makes sure the region is immutable for everyone, or refuses (and changes nothing),
  // e.g. because it is not write-sealed yet; the peer may then retry. Must not block.
  virtual RegionStatus seal_for_handover(int handle) = 0;
  // Releases the broker's handle (closes the fd). Called exactly once per created handle.
  virtual void destroy(int handle) noexcept = 0;
  // Copies bytes [offset, offset + out.size()) of a sealed region into `out` (a durable
  // queue journals a region message's bytes); false when they cannot be read.
  virtual bool read(int handle, std::uint64_t offset, std::span<std::byte> out) = 0;
};

// What the admin socket shows about one region.
struct RegionInfo {
  RegionId id = 0;
  std::uint64_t size = 0;
  PeerId owner = 0;  // the allocating (or creating) connection, which may have gone since
  std::uint32_t owner_pid = 0;
  std::uint32_t owner_uid = 0;  // the uid charged for the region
  std::uint32_t owner_gid = 0;
  std::uint64_t handles = 0;  // over all peers
  std::uint64_t message_refs = 0;
  bool sealed = false;
  bool named = false;      // made by create_named; never sealed
  bool declared = false;   // named and not yet removed
  std::uint32_t mode = 0;  // named: the rw bits of 0666, as for a file
  std::string key;         // named: its key, kept after remove_named for display
};

struct RegionUsage {
  std::uint64_t bytes = 0;
  std::uint32_t regions = 0;
};

class RegionTable {
 public:
  // `backing` must outlive the table.
  RegionTable(RegionLimits limits, RegionBacking& backing) : limits_(limits), backing_(backing) {}
  RegionTable(const RegionTable&) = delete;
  RegionTable& operator=(const RegionTable&) = delete;
  // Destroys the backing of every region still alive (the broker is going away).
  ~RegionTable();

  const RegionLimits& limits() const { return limits_; }
  // New limits apply to later allocations; live regions stay even when over them.
  void set_limits(const RegionLimits& limits) { limits_ = limits; }

  // A new anonymous region of `size` bytes, charged to who.uid until it is freed; `owner`
  // holds one writable handle to it. Refusals: payload_too_large (size 0 or over
  // max_region_bytes), quota_exceeded (the uid's bytes or regions, or the global count),
  // or the backing's error. Nothing is charged or recorded on refusal.
  RegionGrant allocate(PeerId owner, const Identity& who, std::uint64_t size);

  // One more handle of `peer` on `id`: the broker is handing the region's fd to `peer`. Not
  // a client request (it checks no permission): receiving the region is the permission.
  // internal_error when no such region exists, which is a bug in the caller.
  RegionStatus hold(PeerId peer, RegionId id);
  // Drops one of `peer`'s handles; kNoSuchRegion when it holds none.
  RegionStatus release(PeerId peer, RegionId id);
  // Drops every handle `peer` holds (its connection closed).
  void disconnect(PeerId peer);
  // A queued message refers to `id` / no longer does. internal_error when the region is
  // unknown or has no message reference left to drop: a bug in the caller.
  RegionStatus add_message_ref(RegionId id);
  RegionStatus drop_message_ref(RegionId id);

  // Makes an anonymous region immutable before it is queued. `peer` must hold it
  // (kNoSuchRegion); named regions stay writable (unexpected_frame). Idempotent: a sealed
  // region answers ok without asking the backing again. A backing refusal is passed on
  // and the region stays unsealed.
  RegionStatus seal_for_handover(PeerId peer, RegionId id);

  // Whether [offset, offset + length) lies inside region `id` (overflow-safe).
  // malformed_frame for a range that does not: the frame's own fields are inconsistent
  // with the region it names, as with a length field that overruns its frame. A zero
  // length is refused too: it would pin a whole region for a message that carries
  // nothing, and an empty payload travels inline. kNoSuchRegion for an unknown id.
  RegionStatus check_slice(RegionId id, std::uint64_t offset, std::uint64_t length) const;

  // A named region: a shared work area under `key` (queue key syntax, in a namespace of
  // its own), charged like allocate, never sealed. The creator gets a writable handle,
  // whatever `mode` says (as open(O_CREAT) does); the key's declaration keeps the region
  // alive until remove_named. `mode` holds only rw bits of 0666 (else malformed_frame).
  // Refusals as for allocate, plus invalid_key, and queue_conflict when the key exists.
  RegionGrant create_named(std::string_view key, PeerId peer, const Identity& who,
                           std::uint64_t size, std::uint32_t mode);
  // Forgets the key (it may be created anew at once); the region lives on while handles or
  // message refs remain. Only the owner's uid or root may remove (else
  // kRegionAccessDenied); kNoSuchRegion for an unknown key.
  RegionStatus remove_named(std::string_view key, const Identity& who);
  // A handle on the region named `key`, checked like open(2) of a file with the region's
  // owner uid, gid and mode: reading needs r, writing (as O_RDWR) needs r and w, in the
  // one class that applies (owner, else group, else other); root passes. Only the peer's
  // primary gid is known (SO_PEERCRED), so supplementary groups do not count.
  // kNoSuchRegion for an unknown or removed key, kRegionAccessDenied when refused.
  RegionGrant attach(std::string_view key, PeerId peer, const Identity& who, bool want_write);

  const RegionInfo* find(RegionId id) const;
  // The backing handle of a live region, for the edge to pass on; -1 when unknown.
  int backing_handle(RegionId id) const;
  // Copies `ref`'s bytes of its region into `out` (resized); false when it cannot.
  bool read(RegionRef ref, std::vector<std::byte>& out) const {
    const int h = backing_handle(ref.id);
    if (h < 0) return false;
    out.resize(ref.length);
    return backing_.read(h, ref.offset, out);
  }
  // How many handles `peer` holds on `id`.
  std::uint64_t handles_of(PeerId peer, RegionId id) const;
  // Visits every live region, in no particular order.
  template <typename F>
  void for_each(F&& f) const {
    for (const auto& [id, r] : regions_)
      f(r.info);
  }
  std::size_t count() const { return regions_.size(); }
  RegionUsage uid_usage(std::uint32_t uid) const;

 private:
  struct Region {
    RegionInfo info;
    int handle = -1;
  };
  using Regions = std::unordered_map<RegionId, Region>;

  // Checks size and quotas, creates the backing, charges who.uid and records the region
  // with one handle of `peer`.
  RegionGrant create(PeerId peer, const Identity& who, std::uint64_t size);
  void add_handle(PeerId peer, Region& r);
  // Destroys `it` when nothing refers to it any more.
  void collect_if_unreferenced(Regions::iterator it);

  RegionLimits limits_;
  RegionBacking& backing_;
  Regions regions_;
  std::unordered_map<std::string, RegionId, StringHash, std::equal_to<>> named_;
  // peer -> (region -> handles): makes disconnect proportional to what the peer holds.
  std::unordered_map<PeerId, std::unordered_map<RegionId, std::uint64_t>> held_;
  std::unordered_map<std::uint32_t, RegionUsage> usage_;  // only uids owning a region
  RegionId next_id_ = 1;
};

}  // namespace qbus::broker
