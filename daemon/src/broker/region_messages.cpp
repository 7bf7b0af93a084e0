// Shared-memory regions seen from the broker: allocation and named regions go to the
// RegionTable with the peer's kernel identity; a region message is a send whose payload is
// a slice, routed exactly like SEND and SEND_DIRECT.
#include "broker/broker.hpp"

namespace qbus::broker {
namespace {

RegionGrant no_peer_grant() {
  return RegionGrant{Errc::internal_error, "unknown peer", 0, false};
}

}  // namespace

RegionGrant Broker::allocate_region(PeerId peer, std::uint64_t size) {
  auto pit = peers_.find(peer);
  if (pit == peers_.end()) return no_peer_grant();
  return regions_.allocate(peer, pit->second.id, size);
}

RegionStatus Broker::release_region(PeerId peer, RegionId id) {
  return regions_.release(peer, id);
}

RegionGrant Broker::create_named_region(PeerId peer, std::string_view key, std::uint64_t size,
                                        std::uint32_t mode) {
  auto pit = peers_.find(peer);
  if (pit == peers_.end()) return no_peer_grant();
  return regions_.create_named(key, peer, pit->second.id, size, mode);
}

RegionGrant Broker::attach_named_region(PeerId peer, std::string_view key, bool writable) {
  auto pit = peers_.find(peer);
  if (pit == peers_.end()) return no_peer_grant();
  return regions_.attach(key, peer, pit->second.id, writable);
}

RegionStatus Broker::remove_named_region(PeerId peer, std::string_view key) {
  auto pit = peers_.find(peer);
  if (pit == peers_.end()) return RegionStatus{Errc::internal_error, "unknown peer"};
  return regions_.remove_named(key, pit->second.id);
}

SendOutcome Broker::send_region(PeerId from, const RegionSend& s, Clock::time_point now) {
  SendOutcome out = route_region(from, s, now);
  // The sender gave the handle up with the frame, whatever became of it; only a blocked
  // send is retried as a whole later and keeps it until then.
  if (s.release && out.result != SendResult::blocked) (void)regions_.release(from, s.ref.id);
  return out;
}

SendOutcome Broker::route_region(PeerId from, const RegionSend& s, Clock::time_point now) {
  auto pit = peers_.find(from);
  if (pit == peers_.end()) return rejected(Errc::internal_error, "unknown peer");
  if (regions_.handles_of(from, s.ref.id) == 0) {
    return rejected(Errc::no_such_region, "this connection holds no region " +
                                              std::to_string(s.ref.id) +
                                              " (unknown, freed, or never received)");
  }
  if (auto c = regions_.check_slice(s.ref.id, s.ref.offset, s.ref.length); !c.ok()) {
    return rejected(c.error, c.text);
  }
  // Sealed before anything can be queued: from here on no process can change the bytes a
  // receiver will validate and read.
  if (auto sealed = regions_.seal_for_handover(from, s.ref.id); !sealed.ok()) {
    return rejected(sealed.error, sealed.text);
  }
  if (s.kind == proto::RegionTarget::queue) {
    SendOutcome out;
    Queue* q = get_or_create(s.key, &out, &pit->second.id);
    if (!q) return out;
    out = enqueue(*q, from, pit->second, {}, now, 0, 0, s.ref);
    collect_if_idle(*q);
    return out;
  }
  DirectSend d;
  d.kind =
      s.kind == proto::RegionTarget::pid ? proto::TargetKind::pid : proto::TargetKind::client_id;
  d.target = s.target;
  d.wait_ms = s.wait_ms;
  d.correlation = s.correlation;
  d.confirm = s.confirm;
  return send_direct(from, d, {}, now, s.ref);
}

}  // namespace qbus::broker
