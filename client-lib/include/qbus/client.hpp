// libqbus: the C++ client of the qbus broker.
//
//   qbus::Client client;                        // QBUS_ADDRESS or the default socket
//   client.send("jobs", "hello");               // pipelined: no round trip
//   if (auto m = client.receive("jobs", std::chrono::seconds(1))) use(m->text());
//
// Besides keyed queues, every process has an inbox: send_to_pid() puts a message there
// and receive_direct() takes from it. request() sends to a queue and waits for the
// receiver's reply(), which travels back directly. publish() fans a message out to every
// subscribe_subject() whose pattern matches its subject (publish/subscribe, protocol 2).
//
// Delivery is at most once by default: a message leaves its queue when the broker hands it
// to a receiver, and is lost if that receiver dies before processing it. Receiving in
// acknowledgement mode (ReceiveOptions::ack, subscribe()) makes it at least once: the
// message stays the broker's until this Client ack()s it, and goes to another receiver
// when this connection closes, nack()s it or lets the queue's ack timeout pass, so a
// receiver must cope with seeing a message twice (redelivered()). Acknowledgements,
// headers, subscriptions, a message's ttl, delay and priority, and the queue options that
// go with them need a broker speaking protocol 2 (SessionInfo::protocol_version); on an
// older one they throw Error(unsupported_version). Queues live in the daemon's memory
// only, so a restart of qbusd loses every queued message.
//
// Errors: every failure throws qbus::Error, whose code() is a qbus::Errc (see
// <qbus/errc.hpp> and proto/PROTOCOL.md for the table). A receive that times out is not
// a failure: it returns an empty optional or vector. After connection_closed,
// protocol_violation or io_error the Client is unusable and every call throws again; make
// a new one to reconnect.
//
// Thread-safety: a Client is not thread-safe. Use it from one thread at a time (or guard
// it yourself); separate Clients are fully independent, one per thread is the usual shape.
// Message is a plain value and may move between threads freely.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "qbus/errc.hpp"

namespace qbus {

class QBUS_API Error : public std::runtime_error {
 public:
  Error(Errc code, const std::string& message) : std::runtime_error(message), code_(code) {}
  Errc code() const noexcept { return code_; }

 private:
  Errc code_;
};

// Waits without limit (receive, request timeouts).
inline constexpr std::chrono::milliseconds kForever{-1};

// Who sent a message, as the kernel reported it to the broker (never what the sender
// claimed). client_id is the broker's id for the sending connection.
struct Sender {
  std::uint32_t pid = 0;
  std::uint32_t uid = 0;
  std::uint64_t client_id = 0;
};

// A message's headers: a few key/value properties that travel beside the payload (a
// content type, a trace id, the reasons the broker adds when it dead-letters a message), in
// the order they were given. Keys are 1-64 printable ASCII characters without space, '='
// or ':'; values at most 1024 bytes; at most 28 entries and 3584 bytes encoded in all (the
// broker may add a few of its own, up to the protocol's 32 entries and 4096 bytes).
// Keys starting "qbus-" are the broker's: a sender may not set them.
using Headers = std::vector<std::pair<std::string, std::string>>;

namespace detail {
struct MappedPayload;
struct RegionState;
struct SharedRegionState;
struct Access;
class AsyncEngine;
}  // namespace detail

// A received message. Its payload is inline bytes, or, for a payload that came through a
// shared-memory region, a read-only mapping of the sender's bytes (no copy was made); the
// accessors are the same either way. Copies share one mapping; when the last copy goes,
// the mapping is unmapped and the region is released back to the broker with the
// receiving Client's next call (its memory is freed once nobody else holds it). Copying,
// moving and destroying are safe on any thread, also after the Client is gone.
class QBUS_API Message {
 public:
  Message() = default;
  Message(std::string key, std::string payload, Sender sender, std::uint64_t request_id = 0)
      : key_(std::move(key)),
        payload_(std::move(payload)),
        sender_(sender),
        request_id_(request_id) {}

  // The queue it came from; empty for a direct message or a reply.
  const std::string& key() const noexcept { return key_; }
  bool is_direct() const noexcept { return key_.empty(); }
  // True when the sender waits for an answer: pass this message to Client::reply().
  bool is_request() const noexcept { return request_id_ != 0; }
  std::uint64_t request_id() const noexcept { return request_id_; }
  // Valid while this Message (or a copy sharing its mapping) lives.
  std::span<const std::byte> bytes() const noexcept;
  std::string_view text() const noexcept {
    const auto b = bytes();
    return {reinterpret_cast<const char*>(b.data()), b.size()};
  }
  std::size_t size() const noexcept { return bytes().size(); }
  // True when the payload is a mapping of a shared-memory region.
  bool in_shared_memory() const noexcept { return mapped_ != nullptr; }
  const Sender& sender() const noexcept { return sender_; }
  // Takes the payload out, leaving the message empty (a region's bytes are copied out and
  // the region released).
  std::string take_payload();

  // The headers the sender (or the broker, when it dead-lettered the message) set.
  const Headers& headers() const noexcept { return headers_; }
  // The value of the first header named `name`; valid while this Message lives unchanged.
  std::optional<std::string_view> header(std::string_view name) const noexcept;
  // Received in acknowledgement mode: the tag to settle it with (Client::ack, nack,
  // extend); 0 when it was not, and then there is nothing to settle.
  std::uint64_t delivery_tag() const noexcept { return delivery_tag_; }
  // Deliveries of this message so far, this one included (1 the first time).
  std::uint32_t delivery_count() const noexcept { return delivery_count_; }
  // True when it was handed over before and came back (the receiver closed, nacked it or
  // let its ack timeout pass): it may have been processed already.
  bool redelivered() const noexcept { return redelivered_; }

  // Subject deliveries (Client::subscribe_subject): key() is the message's subject.
  // Messages the broker dropped from this subscription's buffer since its previous
  // delivery, because this Client read too slowly (SlowPolicy::drop_oldest): the header
  // qbus-dropped, else 0 (also for a value that is not a decimal count).
  std::uint64_t dropped_before() const noexcept;
  // True for a subject's retained message handed to a new subscription (the header
  // qbus-retained): published before the subscription began.
  bool retained() const noexcept;

 private:
  friend struct detail::Access;
  std::string key_;
  std::string payload_;
  Sender sender_;
  std::uint64_t request_id_ = 0;
  std::shared_ptr<const detail::MappedPayload> mapped_;
  Headers headers_;
  std::uint64_t delivery_tag_ = 0;
  std::uint32_t delivery_count_ = 1;
  bool redelivered_ = false;
};

// A received message read in place, for Client::receive_each(): the key and payload point
// into the Client's receive buffer (or, for a region message, its mapping), so seeing it
// costs no copy and no allocation. Valid only during the receive_each() callback that was
// given it; to_message() makes a Message to keep.
class QBUS_API MessageView {
 public:
  std::string_view key() const noexcept { return key_; }
  bool is_direct() const noexcept { return key_.empty(); }
  bool is_request() const noexcept { return request_id_ != 0; }
  std::uint64_t request_id() const noexcept { return request_id_; }
  std::span<const std::byte> bytes() const noexcept { return bytes_; }
  std::string_view text() const noexcept {
    return {reinterpret_cast<const char*>(bytes_.data()), bytes_.size()};
  }
  std::size_t size() const noexcept { return bytes_.size(); }
  bool in_shared_memory() const noexcept { return region_ != nullptr; }
  const Sender& sender() const noexcept { return sender_; }
  // A Message owning a copy of the payload (and the headers), or sharing the mapping of a
  // region message.
  Message to_message() const;

  // As Message's. The headers are read in place from the received header block: headers()
  // copies them out, header() and for_each_header() do not.
  Headers headers() const;
  std::optional<std::string_view> header(std::string_view name) const noexcept;
  // Calls on_header(key, value) for each header, in order.
  void for_each_header(
      const std::function<void(std::string_view key, std::string_view value)>& on_header) const;
  std::uint64_t delivery_tag() const noexcept { return delivery_tag_; }
  std::uint32_t delivery_count() const noexcept { return delivery_count_; }
  bool redelivered() const noexcept { return redelivered_; }
  // As Message's (subject deliveries).
  std::uint64_t dropped_before() const noexcept;
  bool retained() const noexcept;

 private:
  friend struct detail::Access;
  MessageView() = default;
  std::string_view key_;
  std::span<const std::byte> bytes_;
  Sender sender_;
  std::uint64_t request_id_ = 0;
  const Message* region_ = nullptr;          // the region message viewed, alive during the call
  std::span<const std::byte> header_block_;  // the wire's header block, checked
  std::uint64_t delivery_tag_ = 0;
  std::uint32_t delivery_count_ = 1;
  bool redelivered_ = false;
};

// A shared-memory region the broker made for this process: fill data() and send it, and
// the bytes reach the receiver without being copied through the socket (the receiver maps
// the same pages read-only). Make one with Client::allocate_region().
//
// Life cycle: writable until it is first sent. Sending seals it: data() is unmapped here
// and the broker makes the region immutable for everyone, so what receivers read can never
// change under them. Several slices of one region may be sent (send(key, region, offset,
// length)); send(key, std::move(region)) sends it whole and gives it up in the same frame.
// Destroying a Region that was not given up releases this process's handle with the
// Client's next call; the memory is freed when no queued message or receiver holds it.
//
// In a queue, a region message counts against max_messages but not max_bytes: its memory
// is charged to the allocating uid's region quota (limits.uid_max_region_bytes and
// uid_max_regions) until every holder has let go.
//
// Ownership and thread-safety: move-only; owns the fd and the writable mapping. A Region
// belongs to the Client that allocated it: send it through that Client only. Use it from
// one thread at a time; it may outlive its Client (the handle then went with the
// connection).
class QBUS_API Region {
 public:
  Region() noexcept;
  ~Region();
  Region(Region&&) noexcept;
  Region& operator=(Region&&) noexcept;
  Region(const Region&) = delete;
  Region& operator=(const Region&) = delete;

  // The writable bytes; empty once the region has been sent (or for an empty Region).
  std::span<std::byte> data() noexcept;
  std::size_t size() const noexcept;
  std::uint64_t id() const noexcept;  // the broker's region id; 0 for an empty Region
  bool sealed() const noexcept;       // sent at least once

 private:
  friend struct detail::Access;
  std::unique_ptr<detail::RegionState> state_;
};

// A named shared region: one buffer several processes map and work in at the same time
// (Client::create_shared_region / attach_shared_region). It is never sealed: writers must
// agree on how they share it, for example through an SpscRing (<qbus/ring.hpp>) placed
// over data(). The region lives while its key is declared (until remove_shared_region) or
// any process holds it.
//
// Ownership and thread-safety: move-only; owns the fd and the mapping and releases this
// process's handle when destroyed (with the Client's next call). The object is not
// thread-safe; the memory is shared with other processes by design.
class QBUS_API SharedRegion {
 public:
  SharedRegion() noexcept;
  ~SharedRegion();
  SharedRegion(SharedRegion&&) noexcept;
  SharedRegion& operator=(SharedRegion&&) noexcept;
  SharedRegion(const SharedRegion&) = delete;
  SharedRegion& operator=(const SharedRegion&) = delete;

  // Writable bytes; empty when attached read-only. Page-aligned.
  std::span<std::byte> data() noexcept;
  std::span<const std::byte> bytes() const noexcept;
  std::size_t size() const noexcept;
  bool writable() const noexcept;
  std::uint64_t id() const noexcept;
  const std::string& key() const noexcept;

 private:
  friend struct detail::Access;
  std::unique_ptr<detail::SharedRegionState> state_;
};

enum class Overflow : std::uint8_t {
  broker_default = 0,
  reject = 1,       // a send to a full queue fails with queue_full
  drop_oldest = 2,  // the oldest message is discarded to make room
  block = 3,        // the sender is paused until a receiver makes room (backpressure)
};

// Limits for declare(); zero (or broker_default) takes the broker's configured default.
// The options from ack_timeout on need a protocol-2 broker; declare() sends them only when
// one of them is set, so a queue without them can still be declared on an older broker.
struct QueueOptions {
  std::uint32_t max_messages = 0;
  std::uint64_t max_bytes = 0;
  Overflow overflow = Overflow::broker_default;
  // A message handed over in acknowledgement mode and not settled within this long goes
  // back to the queue for another receiver. 0: no timeout (it waits for the receiver's
  // ack, nack or disconnect). At most about 49 days (the wire's u32 of milliseconds).
  std::chrono::milliseconds ack_timeout{0};
  // Deliveries after which a message that keeps coming back goes to `dead_letter` (or is
  // dropped when there is none) instead of being handed over again. 0: no limit.
  std::uint16_t max_deliveries = 0;
  // The queue that takes this queue's dead letters: messages nacked with
  // NackAction::dead_letter, past max_deliveries, (dead_letter_overflow) pushed out by
  // overflow drop_oldest, or (dead_letter_expired) past their ttl. They arrive with the
  // headers qbus-dead-reason, qbus-dead-queue and qbus-dead-count. Empty: none (dead
  // letters are dropped).
  std::string dead_letter;
  bool dead_letter_overflow = false;
  // The time to live of a message sent without one of its own (SendOptions::ttl). 0:
  // none, such messages live until taken. At most about 49 days (the wire's u32 of ms).
  std::chrono::milliseconds ttl{0};
  // Priority levels, 0 to 10; a message's SendOptions::priority is clamped to them, and
  // higher levels are delivered first. 0 and 1: one level, first in first out.
  std::uint8_t priorities = 0;
  // Expired messages (ttl) go to `dead_letter`, which this needs, instead of being dropped.
  bool dead_letter_expired = false;
  // One consumer at a time, so that messages are processed in order: consume the queue
  // with subscribe(); receive() on it throws Error(single_active_consumer).
  bool single_active_consumer = false;
  // The queue and its messages outlive qbusd (a crash, a restart): the broker journals
  // them in its state directory. A send to it that the broker cannot journal (a full
  // disk) fails with Errc::storage_failed. A region payload is copied into the journal.
  bool durable = false;
  // When a confirmed send to a durable queue is answered (needs `durable`): after the
  // message is on disk (always), after the next periodic fsync (batch), or once written to
  // the page cache (none: survives a qbusd crash, not a power loss). broker_default: the
  // daemon's storage.fsync.
  enum class Fsync : std::uint8_t { broker_default = 0, always = 1, batch = 2, none = 3 };
  Fsync fsync = Fsync::broker_default;
  // Every message stored gets a broker-unique id in its header "qbus-id" (kHeaderMessageId),
  // the same on each delivery and, in a durable queue, after a restart of the broker: what a
  // consumer that may see a message twice (acknowledgement mode) deduplicates by.
  bool message_ids = false;
};

// The header a queue declared with QueueOptions::message_ids gives each message.
inline constexpr std::string_view kHeaderMessageId = "qbus-id";

// Client::send() with more to say than a payload. Everything but `confirm` needs a
// protocol-2 broker. ttl, delay and priority belong to a queue's messages: direct
// messages and requests have none. An out-of-range value throws Error(invalid_argument)
// naming the field before anything is sent.
struct SendOptions {
  Headers headers;
  // Wait for the broker's verdict and throw on refusal, as send_confirmed() does.
  bool confirm = false;
  // Time to live: once the message is older than this it is never delivered; it is
  // dropped, or dead-lettered when its queue says so (QueueOptions::dead_letter_expired).
  // 0: the queue's default (QueueOptions::ttl). 0 to about 49 days (the wire's u32 of ms).
  std::chrono::milliseconds ttl{0};
  // Not deliverable before now + delay. 0: at once. Same range as ttl.
  std::chrono::milliseconds delay{0};
  // 0 to 9, higher first; the broker clamps it to the queue's levels
  // (QueueOptions::priorities), so on a queue of one level it changes nothing.
  std::uint8_t priority = 0;
};

// Client::receive() and receive_batch() in acknowledgement mode (ack = true): each message
// stays the broker's, "in flight", until this Client settles it with ack() or nack(), or
// the connection closes (it then goes to another receiver at once), or the queue's
// ack_timeout passes. The broker refuses (Error(too_many_unacked)) a receive when this
// connection already holds its limit of unsettled messages.
struct ReceiveOptions {
  bool ack = false;
};

// What nack() does with a message.
enum class NackAction : std::uint8_t {
  requeue = 1,        // back to the head of its queue now
  requeue_after = 2,  // back to its queue after the given delay
  dead_letter = 3,    // to the queue's dead-letter queue (dropped if it has none)
};

struct SubscribeOptions {
  // In acknowledgement mode: at most this many messages unsettled at once; the broker
  // pushes the next one when one is acked or nacked. 0: the broker's default.
  std::uint32_t prefetch = 0;
  // false: at most once, the broker pushes as fast as this Client reads.
  bool ack = true;
};

// What a subject subscription does when its buffer in the broker is full: the broker
// writes deliveries while this Client reads its connection and buffers them otherwise
// (PROTOCOL.md 18.4).
enum class SlowPolicy : std::uint8_t {
  broker_default = 0,  // drop_oldest
  // The oldest buffered message is dropped; the next delivery says how many went
  // (Message::dropped_before()). Publishers go on at full speed.
  drop_oldest = 1,
  // The broker ends the subscription with Error(slow_subscriber) and closes the connection.
  disconnect = 2,
  // Publishers of a matching subject wait until the buffer has room. Dangerous: a
  // subscriber that stops reading stops them all; only between processes that trust each
  // other.
  block = 3,
};

// Client::publish() with more to say than a payload.
struct PublishOptions {
  // Headers of the message, as SendOptions' (the same rules).
  Headers headers;
  // Also keep the message as its subject's retained message, replacing the one before,
  // which every later subscription to a matching pattern gets first. An empty payload
  // clears it (and is not delivered). Not with a Region (Error(invalid_argument)).
  bool retain = false;
  // Wait for the broker's OK, given once every matching subscription has the message
  // (delivered or buffered), and throw its refusal as Error; false pipelines the publish
  // like send() and counts refusals in send_failures().
  bool confirm = false;
};

// Client::subscribe_subject(): the subscription's buffer in the broker and its company.
struct SubjectOptions {
  // Queue group: subscriptions with the same pattern and group share its messages, each
  // going to one member (in turn). A valid key; empty: no group, every message.
  std::string group;
  // The buffer's bounds, in messages and payload bytes; 0: the broker's defaults
  // (limits.subscription_max_messages and _max_bytes), which are also the ceilings.
  std::uint32_t max_messages = 0;
  std::uint64_t max_bytes = 0;
  SlowPolicy slow = SlowPolicy::broker_default;
};

struct ClientOptions {
  // "unix:/path/to.sock", "tcp:HOST:PORT" or "tls:HOST:PORT" (TCP with TLS). Empty:
  // $QBUS_ADDRESS, else the per-user socket when it exists (not for root), else
  // /run/qbus/qbus.sock.
  std::string address;
  // Shown to operators in `qbusctl clients`; at most 64 bytes.
  std::string name;
  std::chrono::milliseconds connect_timeout{5000};
  // TCP only: the broker's token. Empty: $QBUS_TOKEN, else the contents of the file named
  // by $QBUS_TOKEN_FILE.
  std::string token;
  // tls: addresses only, PEM files. tls_ca: the CAs that may sign the broker's certificate
  // (empty: $QBUS_TLS_CA, else the system's trust store); the certificate must name the
  // address's host (a name, or an IP address in its subjectAltName). tls_cert and tls_key:
  // this client's certificate and key, for a broker that requires one (empty:
  // $QBUS_TLS_CERT and $QBUS_TLS_KEY; none).
  std::string tls_ca;
  std::string tls_cert;
  std::string tls_key;
  // On a Unix socket, payloads sent from memory that are larger than this travel through a
  // shared-memory region (one copy into the region, none through the socket); so do all
  // payloads above the broker's inline limit. When the uid's region quota is used up, a
  // payload within the inline limit goes inline instead. SIZE_MAX keeps everything it can
  // inline.
  std::size_t region_threshold = 64 * 1024;
  // Bytes of shared-memory regions this client keeps granted and populated ahead of need
  // (0: none). With a pool, allocate_region() of a size of 256 KiB or more that this client
  // allocated before takes a region whose pages are already allocated and zeroed (or waits
  // for the one a worker thread is populating), and asks for its replacement, which the
  // worker populates; so do sends from memory above region_threshold. A sender that
  // allocates no faster than the worker populates (15 ms for 64 MiB, 3 ms with shmem huge
  // pages) then never waits for the kernel's page work. The pool holds up to 2 regions of a size,
  // never more than this many bytes in all; they count against the uid's region quota and this
  // process's memory until taken or the Client is destroyed. Unix sockets only (ignored on TCP).
  std::size_t region_pool_bytes = 0;
};

// How the region pool has served this client (ClientOptions::region_pool_bytes).
struct RegionPoolStats {
  std::uint64_t hits = 0;       // allocations served at once by a region the pool had ready
  std::uint64_t waits = 0;      // ... that waited for the worker to finish populating one
  std::uint64_t misses = 0;     // allocations of a poolable size the pool had nothing for
  std::uint64_t failures = 0;   // regions the worker could not populate (memory), released
  std::uint64_t evictions = 0;  // ready regions released to make room for another size
  std::size_t held_bytes = 0;   // being populated or ready now
  std::size_t ready_bytes = 0;  // of those, populated and ready to take
};

// What the broker said about this connection in its handshake.
struct SessionInfo {
  std::uint32_t pid = 0;  // this process as the broker sees it
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  std::uint64_t client_id = 0;
  std::uint32_t max_payload = 0;  // largest payload one message may carry
  std::string address;
  // The protocol version the broker chose (1 or 2): acknowledgements, headers and
  // subscriptions need 2.
  std::uint8_t protocol_version = 0;
};

struct DirectOptions {
  // When no process with the pid is connected: wait this long for one to connect before
  // failing with no_such_peer (0: fail at once; kForever: about 24 days, the wire's limit).
  std::chrono::milliseconds wait{0};
  // Wait for the broker's verdict and throw no_such_peer, peer_busy, ... on failure;
  // false pipelines the send like send() and counts failures in send_failures().
  bool confirm = true;
  // Headers of the message (protocol 2).
  Headers headers;
};

// Failures of fire-and-forget sends, reported by the broker asynchronously.
struct SendFailures {
  std::uint64_t count = 0;
  Errc last_code = Errc::ok;
  std::string last_message;
};

class Subscription;

class QBUS_API Client {
 public:
  // Connects and completes the handshake; throws Error (connect_failed, bad_address, ...).
  explicit Client(ClientOptions options = {});
  // Writes sends still buffered by a Batch (best effort) and closes the connection. It
  // does not wait for the broker: sends it has not read yet (a producer paused by a full
  // queue with overflow=block, say) are lost when the connection closes. Call sync()
  // first to know every send was taken.
  ~Client();
  Client(Client&&) noexcept;
  Client& operator=(Client&&) noexcept;
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  const SessionInfo& session() const noexcept;

  // Queues `payload` under `key` without waiting for the broker. Failures the broker
  // detects later (a full queue with overflow=reject, a quota) are counted in
  // send_failures(); use send_confirmed() or sync() to learn the outcome. When the queue
  // applies backpressure this call blocks until the broker reads again.
  void send(std::string_view key, std::span<const std::byte> payload);
  void send(std::string_view key, std::string_view payload);
  // send() with headers, a ttl, a delay or a priority, or confirmed (options.confirm, as
  // send_confirmed()); see SendOptions.
  void send(std::string_view key, std::span<const std::byte> payload, const SendOptions& options);
  void send(std::string_view key, std::string_view payload, const SendOptions& options);

  // Shared-memory regions (Unix sockets only; on TCP they throw unexpected_frame).
  // A writable region of `size` bytes, charged to this process's uid until freed; throws
  // quota_exceeded or payload_too_large when the broker refuses.
  Region allocate_region(std::size_t size);
  // What the region pool did so far; all zero without one.
  RegionPoolStats region_pool_stats() const;
  // Sends the whole region to queue `key` and gives it up (`region` is empty afterwards).
  // Pipelined like send(); errors are counted in send_failures().
  void send(std::string_view key, Region&& region);
  // send(key, std::move(region)) with SendOptions, as send(key, payload, options).
  void send(std::string_view key, Region&& region, const SendOptions& options);
  // Sends bytes [offset, offset + length) of `region`, which stays usable for more slices.
  void send(std::string_view key, Region& region, std::size_t offset, std::size_t length);
  void send_to_pid(std::uint32_t pid, Region&& region, const DirectOptions& options = {});

  // A named region of `size` bytes under `key` (region keys are their own namespace),
  // mapped writable here; `mode` holds the rw bits of 0666 checked when others attach.
  // Throws queue_conflict when the key exists.
  SharedRegion create_shared_region(std::string_view key, std::size_t size, unsigned mode = 0600);
  // Maps the named region `key`; throws no_such_region or permission_denied.
  SharedRegion attach_shared_region(std::string_view key, bool writable = true);
  // Forgets the key; the memory lives on while any process holds the region.
  void remove_shared_region(std::string_view key);

  // Sends and waits for the broker's acknowledgement; throws Error with the broker's
  // code (queue_full, quota_exceeded, payload_too_large, ...) when it was refused.
  void send_confirmed(std::string_view key, std::span<const std::byte> payload);
  void send_confirmed(std::string_view key, std::string_view payload);

  // Takes the oldest message of `key`, waiting up to `timeout` (kForever: no limit,
  // 0: do not wait). Competing receivers each get different messages, first come first
  // served. Returns nullopt when the timeout passed with nothing to take. A queue declared
  // single_active_consumer refuses receives (Error(single_active_consumer)): subscribe().
  std::optional<Message> receive(std::string_view key, std::chrono::milliseconds timeout);
  std::optional<Message> try_receive(std::string_view key);
  // Up to `max` messages in one round trip: whatever is queued now, or the first one to
  // arrive within `timeout`. Empty when the timeout passed.
  std::vector<Message> receive_batch(std::string_view key, std::size_t max,
                                     std::chrono::milliseconds timeout);
  // receive_batch() without building Messages: each message is handed to `on_message` in
  // place, in order, with no copy and no allocation per message; the fastest way to drain
  // a queue. Returns how many messages it saw (0: the timeout passed). `on_message` must
  // not use this Client (the view points into its buffer). If it throws, the rest of the
  // batch is still read from the connection, without calling it, and then the exception
  // propagates: those messages were taken from the queue and are dropped.
  std::size_t receive_each(std::string_view key, std::size_t max, std::chrono::milliseconds timeout,
                           const std::function<void(const MessageView&)>& on_message);
  // receive() and receive_batch() in acknowledgement mode when options.ack (see
  // ReceiveOptions): settle every message received so with ack() or nack().
  std::optional<Message> receive(std::string_view key, std::chrono::milliseconds timeout,
                                 const ReceiveOptions& options);
  std::vector<Message> receive_batch(std::string_view key, std::size_t max,
                                     std::chrono::milliseconds timeout,
                                     const ReceiveOptions& options);

  // Settling messages received in acknowledgement mode (delivery_tag() != 0; a message
  // with tag 0 throws Error(invalid_argument)). Only the Client that received a message
  // can settle it. Pipelined like send() unless `confirm`: a failure is then counted in
  // send_failures(); with `confirm` it throws Error(unknown_delivery) for a tag this
  // connection does not hold, or Error(delivery_timed_out) when the ack timeout passed
  // and the message went back to its queue (someone else may be processing it now).
  //
  // ack: done with it; the broker forgets it.
  void ack(const Message& message, bool confirm = false);
  // Acks every message this connection holds with a tag up to and including `tag`
  // (tags grow with each delivery on a connection).
  void ack_up_to(std::uint64_t tag, bool confirm = false);
  // Gives it back: see NackAction. `delay` is for requeue_after only (else it must be 0).
  void nack(const Message& message, NackAction action = NackAction::requeue,
            std::chrono::milliseconds delay = {}, bool confirm = false);
  // Still working on it: its ack deadline becomes now + `by` (0: now + the queue's
  // ack_timeout).
  void extend(const Message& message, std::chrono::milliseconds by, bool confirm = false);

  // Has the broker push the messages of `key` to this Client, without a receive each
  // time; take them with Subscription::next(). See SubscribeOptions and Subscription.
  Subscription subscribe(std::string_view key, const SubscribeOptions& options = {});

  // ---- Publish/subscribe (protocol 2; PROTOCOL.md 18) ----
  // A subject is 1-255 bytes of 1 to 32 dot-separated tokens of A-Z a-z 0-9 _ : / -
  // ("sensors.kitchen.temp"); a pattern may have a whole token `*` (one token) and a last
  // token `>` (one or more): "sensors.*.temp", "sensors.>". A subject or pattern that
  // breaks a rule throws Error(invalid_subject) naming the rule before anything is sent.
  //
  // Publishes `payload` on `subject` to every subscription whose pattern matches it, one
  // copy each. A message no subscription matches is dropped: not an error. Pipelined
  // like send() unless options.confirm; a payload over the region threshold goes through
  // a shared-memory region, as send()'s, unless options.retain. Errors: invalid_subject,
  // payload_too_large, permission_denied (the access policy judges it as a send to the
  // subject), quota_exceeded (a retained message over the uid's quota).
  void publish(std::string_view subject, std::string_view payload,
               const PublishOptions& options = {});
  void publish(std::string_view subject, std::span<const std::byte> payload,
               const PublishOptions& options = {});
  // Publishes the whole region and gives it up (`region` is empty afterwards): every
  // subscriber maps the same sealed pages. options.retain throws Error(invalid_argument).
  void publish(std::string_view subject, Region&& region, const PublishOptions& options = {});
  // Subscribes to every subject `pattern` matches; take the messages with
  // Subscription::next() (key() is the pattern, each Message's key() its subject).
  // Returns once the broker has answered: anything published afterwards reaches the
  // subscription, after the retained messages of the subjects it matches. Deliveries are
  // at most once and have nothing to settle. Throws Error(invalid_subject), invalid_key
  // (the group), too_many_subscriptions (limits.max_subscriptions of the connection or
  // uid_max_subscriptions of the uid) or permission_denied (the access policy judges it
  // as a receive of the pattern as written).
  Subscription subscribe_subject(std::string_view pattern, const SubjectOptions& options = {});

  // Direct messages to a process's inbox, by the pid the kernel reported for it (a process
  // with several connections receives them on the connection that claimed the inbox most
  // recently, each Client claiming it on its first receive_direct, else on its oldest).
  // TCP peers have no pid: address them by client id.
  void send_to_pid(std::uint32_t pid, std::span<const std::byte> payload,
                   const DirectOptions& options = {});
  void send_to_pid(std::uint32_t pid, std::string_view payload, const DirectOptions& options = {});
  void send_to_client(std::uint64_t client_id, std::string_view payload,
                      const DirectOptions& options = {});
  // Takes direct messages sent to this process. The first call claims the process's inbox
  // for this connection.
  std::optional<Message> receive_direct(std::chrono::milliseconds timeout);
  std::vector<Message> receive_direct_batch(std::size_t max, std::chrono::milliseconds timeout);

  // Sends `payload` to queue `key` as a request and waits up to `timeout` for the reply;
  // nullopt when none came in time (a reply sent later is dropped by the broker, never
  // delivered to a later request). Throws Error(no_such_peer) when the receiver that took
  // the request disconnected without replying, queue_full/queue_deleted when the request
  // was dropped unread, and the usual send errors when it was refused. The timeout runs
  // from when the broker accepts the request: a full queue with overflow=block delays that.
  std::optional<Message> request(std::string_view key, std::string_view payload,
                                 std::chrono::milliseconds timeout);
  // request() with headers on the request (protocol 2).
  std::optional<Message> request(std::string_view key, std::string_view payload,
                                 std::chrono::milliseconds timeout, const Headers& headers);
  // Answers a message for which is_request() is true. Pipelined like send(); a reply that
  // comes too late is counted in send_failures() (reply_expired). A serving loop that keeps
  // a Batch open sends each reply in one write with its next receive(), one system call
  // fewer per request; the reply then waits for that receive().
  void reply(const Message& request, std::string_view payload);

  // Creates the queue or checks it; throws Error(queue_conflict) when it was declared
  // before with different options. The dead-letter queue is not declared by this: declare
  // it too for limits of its own. Options out of range throw Error(invalid_argument)
  // naming the field (a bad dead_letter key invalid_key) before anything is sent.
  void declare(std::string_view key, const QueueOptions& options);

  // Drops every message queued under `key` and returns how many it dropped. The queue
  // stays, with its options and its waiting receivers, and producers blocked on it go on
  // (an undeclared queue left idle goes, as it would after its last receive).
  // Only the queue's owner (the uid whose frame created it), root, or a uid the broker's
  // access policy grants `manage` of the key may (see config/README.md, "Access policy");
  // anyone else gets Error(permission_denied) and nothing changes. A key with no queue is
  // Error(no_such_queue). Waits for the broker's answer.
  std::uint64_t purge(std::string_view key);
  // Like purge(), and the queue goes too: receives waiting on it, in any process, end with
  // Error(queue_deleted), and a later send or receive creates a new queue with the broker's
  // defaults. Same rights and errors as purge().
  std::uint64_t delete_queue(std::string_view key);

  // Writes buffered sends and waits until the broker has processed everything sent
  // before; afterwards send_failures() is complete for those sends.
  void sync();
  const SendFailures& send_failures() const noexcept;

  // ---- Driving a Client from an event loop (glib, libuv, epoll, Asio) ----
  // Every call above blocks until the broker answers (a send until its bytes are written).
  // A loop that must not block watches fd() for readability (and for writability while
  // wants_write()), calls process() when it is ready, then takes what arrived with
  // Subscription::next(0) until it returns nullopt. Deliveries that any other call read
  // are kept for their subscription as well and do not make fd() readable again, so drain
  // the subscriptions after every call, not only after readiness.
  //
  // The connection's socket; owned by the Client (never close it). -1 once closed.
  int fd() const noexcept;
  // Output is buffered (a Batch, or a socket that took only part of it).
  bool wants_write() const noexcept;
  // Never blocks: writes what the socket takes, reads what has arrived and files every
  // delivery with its subscription (and every asynchronous send failure). Throws Error
  // when the connection failed, as any call would.
  void process();

  // While a Batch lives, send() buffers and writes in large chunks (about 64 KiB), which
  // raises throughput many times over. Destroying the Batch writes what is left; so does
  // any receive, confirmed send or sync().
  class QBUS_API Batch {
   public:
    explicit Batch(Client& client);
    ~Batch();
    Batch(const Batch&) = delete;
    Batch& operator=(const Batch&) = delete;

   private:
    Client& client_;
  };

 private:
  friend class Subscription;
  friend class detail::AsyncEngine;  // AsyncClient's core (async_client.hpp) reuses Impl
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Messages the broker pushes for one queue key (Client::subscribe), or for the subjects
// one pattern matches (Client::subscribe_subject). Deliveries are read with the Client's
// other traffic: those that arrive while the Client waits for another answer are kept here
// for next(), so a subscription may be interleaved with sends, receives, publishes and
// other subscriptions on the same Client. In acknowledgement mode (the default of a queue
// subscription) at most `prefetch` messages are unsettled at once, which also bounds what
// is kept; without it (always, for a subject subscription) the broker pushes while the
// Client reads, and what arrives during other calls is kept without bound. A subject
// subscription's own bound is its buffer in the broker (SubjectOptions), which fills only
// while this Client does not read.
//
// An ERROR from the broker (queue_deleted, permission_denied, slow_subscriber, ...) ends
// the subscription: next() hands out what arrived before it, then throws it.
//
// Ownership, lifetime, thread-safety: move-only; refers to the Client that made it, which
// must outlive it (the Client may move meanwhile). Not thread-safe, like the Client, and
// used from the Client's thread. Destroying it cancels it, best effort. In ack mode the
// messages it kept and never handed out go back to the queue (nack requeue); messages
// next() handed out stay this Client's to settle. A subject subscription's kept messages
// are simply dropped: there is nothing to give back.
class QBUS_API Subscription {
 public:
  Subscription() noexcept = default;
  ~Subscription();
  Subscription(Subscription&& other) noexcept;
  Subscription& operator=(Subscription&& other) noexcept;
  Subscription(const Subscription&) = delete;
  Subscription& operator=(const Subscription&) = delete;

  // The next message, waiting up to `timeout` (kForever: no limit; 0: only what has
  // arrived); nullopt when none came, or once the subscription is cancelled and what it
  // kept is handed out.
  std::optional<Message> next(std::chrono::milliseconds timeout);
  // next() without building Messages, the fastest way to follow a busy subject: waits up
  // to `timeout` for a delivery, then hands it and every one already read from the
  // connection, up to `max`, to `on_message` in place (no copy and no allocation per
  // message). Deliveries kept while the Client waited for something else are handed out
  // first, by themselves (the call then reads nothing more). Returns how many it handed
  // out; 0 when none came in time or the subscription is cancelled and drained. A view is
  // valid only during its call, and `on_message` must not use this Client (the view points
  // into its buffer). If `on_message` throws, the exception propagates: the delivery it was
  // given is consumed, those not yet handed out stay for the next call. An ERROR that
  // ended the subscription is thrown once what came before it is handed out.
  std::size_t next_each(std::size_t max, std::chrono::milliseconds timeout,
                        const std::function<void(const MessageView&)>& on_message);
  // Asks the broker to stop and waits for its answer; deliveries that arrived before it
  // remain for next(). Messages in flight stay held until settled or the Client closes.
  // Does nothing when already cancelled or ended.
  void cancel();
  // Subscribed and not cancelled nor ended by an error.
  bool active() const noexcept;
  // Deliveries already read from the connection and kept for next(), which hands them
  // out without waiting.
  std::size_t pending() const noexcept;
  // The queue key, or a subject subscription's pattern.
  const std::string& key() const noexcept { return key_; }

 private:
  friend class Client;
  Subscription(Client::Impl* impl, std::uint64_t id, std::string key) noexcept
      : impl_(impl), id_(id), key_(std::move(key)) {}
  void release() noexcept;

  Client::Impl* impl_ = nullptr;
  std::uint64_t id_ = 0;  // the SUBSCRIBE's correlation
  std::string key_;
};

}  // namespace qbus
