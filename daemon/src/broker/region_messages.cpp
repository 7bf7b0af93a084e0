// Shared-memory regions seen from the broker: allocation and named regions go to the
// RegionTable with the peer's kernel identity; a region message is a send whose payload is
// a slice, routed exactly like SEND and SEND_DIRECT.
#include "broker/broker.hpp"

namespace qbus::broker {
namespace {

RegionGrant no_peer_grant() {
  return RegionGrant{Errc::internal_error, "unknown peer", 0, false};
}

// A named-region key is judged by the policy as a queue key would be: creating it as
// declare, attaching to it as receive (config/README.md, "Access policy").
RegionGrant region_denied(std::string_view what, Operation op, std::string_view key) {
  return RegionGrant{Errc::permission_denied,
                     std::string(what) + " of region '" + std::string(key) +
                         "' denied by policy (judged as " + std::string(operation_name(op)) + ")",
                     0, false};
}

}  // namespace

RegionGrant Broker::allocate_region(PeerId peer, std::uint64_t size) {
  const Peer* p = core_.peers.find(peer);
  if (!p) return no_peer_grant();
  return core_.regions.allocate(peer, p->id, size);
}

RegionStatus Broker::release_region(PeerId peer, RegionId id) {
  return core_.regions.release(peer, id);
}

RegionGrant Broker::create_named_region(PeerId peer, std::string_view key, std::uint64_t size,
                                        std::uint32_t mode) {
  Peer* p = core_.peers.find(peer);
  if (!p) return no_peer_grant();
  if (core_.policy && !permitted(*p, Operation::declare, key)) {
    return region_denied("create", Operation::declare, key);
  }
  return core_.regions.create_named(key, peer, p->id, size, mode);
}

RegionGrant Broker::attach_named_region(PeerId peer, std::string_view key, bool writable) {
  Peer* p = core_.peers.find(peer);
  if (!p) return no_peer_grant();
  if (core_.policy && !permitted(*p, Operation::receive, key)) {
    return region_denied("attach", Operation::receive, key);
  }
  return core_.regions.attach(key, peer, p->id, writable);
}

RegionStatus Broker::remove_named_region(PeerId peer, std::string_view key) {
  const Peer* p = core_.peers.find(peer);
  if (!p) return RegionStatus{Errc::internal_error, "unknown peer"};
  return core_.regions.remove_named(key, p->id);
}

SendOutcome Broker::send_region(PeerId from, const RegionSend& s, Clock::time_point now) {
  SendOutcome out = route_region(from, s, now);
  // The sender gave the handle up with the frame, whatever became of it; only a blocked
  // send is retried as a whole later and keeps it until then.
  if (s.release && out.result != SendResult::blocked) (void)core_.regions.release(from, s.ref.id);
  return out;
}

SendOutcome Broker::route_region(PeerId from, const RegionSend& s, Clock::time_point now) {
  Peer* p = core_.peers.find(from);
  if (!p) return unknown_peer();
  const MessageProps& props = s.props;
  if (s.kind != proto::RegionTarget::queue &&
      (props.ttl_ms != 0 || props.delay_ms != 0 || props.priority != 0)) {
    return rejected(Errc::malformed_frame,
                    "a time to live, a delay or a priority (PROPERTIES) applies to a message "
                    "sent to a queue, not to a SEND_REGION to a process or a subject");
  }
  DirectSend d;
  d.kind =
      s.kind == proto::RegionTarget::pid ? proto::TargetKind::pid : proto::TargetKind::client_id;
  d.target = s.target;
  d.wait_ms = s.wait_ms;
  d.correlation = s.correlation;
  d.confirm = s.confirm;
  d.headers = s.props.headers;
  if (core_.policy) {
    if (s.kind == proto::RegionTarget::queue || s.kind == proto::RegionTarget::subject) {
      if (!permitted(*p, Operation::send, s.key)) {
        return denied(Operation::send, s.key,
                      s.kind == proto::RegionTarget::subject ? "subject" : "queue");
      }
    } else if (Inbox* inbox = inboxes_.route(d, now);
               inbox && !core_.direct_permitted(*p, *inbox, d.kind, d.target)) {
      // Refused before the region is sealed: a denied send changes nothing.
      return Core::direct_denied(d.kind, d.target);
    }
  }
  if (core_.regions.handles_of(from, s.ref.id) == 0) {
    return rejected(Errc::no_such_region, "this connection holds no region " +
                                              std::to_string(s.ref.id) +
                                              " (unknown, freed, or never received)");
  }
  if (auto c = core_.regions.check_slice(s.ref.id, s.ref.offset, s.ref.length); !c.ok()) {
    return rejected(c.error, c.text);
  }
  // Sealed before anything can be queued: from here on no process can change the bytes a
  // receiver will validate and read.
  if (auto sealed = core_.regions.seal_for_handover(from, s.ref.id); !sealed.ok()) {
    return rejected(sealed.error, sealed.text);
  }
  if (s.kind == proto::RegionTarget::subject) {
    return topics_.publish(from, *p, PublishSend{s.key, {}, s.props.headers, s.ref, false});
  }
  if (s.kind == proto::RegionTarget::queue) {
    SendOutcome out;
    Queue* q = queues_.get_or_create(s.key, &out, &p->id);
    if (!q) return out;
    out = queues_.enqueue(*q, from, *p, {}, now, 0, 0, s.ref, s.props);
    queues_.collect_if_idle(*q);
    return out;
  }
  return send_direct(from, d, {}, now, s.ref);
}

RegionStatus Broker::remove_named_region_as_operator(std::string_view key) {
  Identity root;  // uid 0: the same right root has over REGION_REMOVE
  root.uid = 0;
  return core_.regions.remove_named(key, root);
}

}  // namespace qbus::broker
