// One client connection: decodes frames, feeds the broker, buffers answers.
//
// A Connection owns every byte and fd qbusd sends its peer: the Server routes the broker's
// answers to it (deliver, error, ok) and never encodes a frame itself. Reading the socket
// is in connection_read.cpp, decoding and dispatching frames in connection.cpp, the output
// side (encoding, fd passing, inline regions, writing) in connection_output.cpp.
//
// Ownership and lifetime: the Server's registry holds it from accept to close(); a pending
// asynchronous operation holds it too (shared_from_this). Thread-safety: none; everything
// runs on the broker thread.
//
// Reads: a connection keeps one small read posted (into wake_), so an idle connection holds
// 512 bytes and Asio leaves its epoll registration alone (it re-arms epoll with an
// epoll_ctl for every readiness wait, and for every read while a wait for errors is
// pending, hence the hang-up watch is cancelled when reads resume). A wake-up that fills
// wake_ goes on reading into the server's scratch buffer, or behind a partial frame into
// the connection's own buffer; complete frames are decoded where they are and only a
// trailing partial frame is copied. Output is coalesced into one
// buffer and written once per batch. Reads pause while the connection's output is over its
// bound or while it is a producer blocked on a full queue: that is the backpressure.
#pragma once

#include <array>
#include <asio.hpp>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <variant>

#include "broker/broker.hpp"
#include "net/log_fields.hpp"
#include "net/tap.hpp"
#include "net/tls.hpp"
#include "net/uid_output.hpp"
#include "qbus/proto/buffer.hpp"
#include "qbus/proto/shm.hpp"
#include "qbus/proto/unique_fd.hpp"
#include "storage/journal.hpp"

namespace qbus::daemon {

class Server;

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  using Socket = asio::generic::stream_protocol::socket;

  // `description` names the peer in logs ("pid 42 uid 1000 comm 'worker'", "tcp 1.2.3.4:5");
  // `remote_ip` is set for TCP peers, whose failed logins are counted per source (an IPv4
  // address or an IPv6 /64).
  Connection(Server& server, Socket socket, broker::PeerId id, broker::Identity identity,
             std::string description, std::string remote_ip);

  // A connection of a TLS listener: before start(), which then runs the TLS handshake
  // first (within the handshake timeout, which also bounds HELLO). `tls` outlives it.
  void use_tls(TlsServer& tls);
  void start();
  // Sends an ERROR with correlation 0; for framing errors and for refusals before WELCOME
  // the connection then closes once the ERROR is flushed (or after a short grace).
  void reject(Errc code, std::string_view text);
  void close();
  // Flushes what it can; closes once everything is written.
  void drain_and_close();

  // The broker core's answers for this connection (routed here by the Server's Sink), each
  // encoded into the output and written at the end of the batch. deliver() stays inline:
  // it is the per-message path.
  void deliver(std::uint64_t correlation, bool last, const broker::Delivery& d) {
    ++stats_.received_total;
    // A version-1 client knows nothing of tags and headers; it never asks for acks.
    if (d.extras && version_ >= 2) deliver_info(correlation, *d.extras);
    if (d.region) {
      deliver_region(correlation, last, d);
      return;
    }
    proto::append_deliver(out(), correlation, last ? proto::kFlagLast : 0,
                          proto::Deliver{d.sender.pid, d.sender.uid, d.sender.client_id,
                                         d.request_id, d.key, d.payload});
    mark_dirty();
  }
  void error(std::uint64_t correlation, Errc code, std::string_view text);
  void ok(std::uint64_t correlation);
  // Writes the audit line for an operation the access policy denied (Sink::denied), naming
  // the peer, the operation, the key and what decided (a rule by its origin, a baseline rule
  // of a system bus, or the default; broker::Decision::rule). Rate-limited
  // like misbehaved(): a client retrying a denied key must not flood the log.
  void log_denial(broker::Operation op, std::string_view key, int rule);

  // True while the output is over its bound, an inline region is still being streamed, or
  // many fds wait to be written: then reads pause and receive batches end early.
  bool backed_up() const;
  bool closing() const { return closing_ || closed_; }
  // Fds and output bytes this connection's uid has waiting, shared by its connections;
  // null once closed.
  UidOutput* uid_output() const { return uid_out_; }
  // The end of a batch (Server::end_of_batch) for a connection that asked to be flushed
  // then: writes what it can.
  void flush_batch() {
    flush_pending_ = false;
    flush();
  }
  // The Server's bookkeeping of its uid's starved list (UidOutput::starved), which holds
  // each connection at most once. starve() is true when it was not on the list yet.
  bool starve() { return !std::exchange(starved_, true); }
  void unstarve() { starved_ = false; }
  void unblock();  // a queue this producer was blocked on has room again
  // The journal reports `p`: the sends it made durable are confirmed, those it failed are
  // answered storage_failed (confirmed or not: the send-failure path). True once nothing
  // of this connection waits for the journal.
  bool journaled(const storage::JournalProgress& p);

  // What the admin socket shows about a connection.
  struct Stats {
    std::string comm;  // the peer process's name from /proc; empty for TCP peers
    std::string name;  // the name the client gave in HELLO (not verified)
    std::chrono::system_clock::time_point connected_at = std::chrono::system_clock::now();
    std::uint64_t sent_total = 0;      // messages the broker accepted from this connection
    std::uint64_t received_total = 0;  // messages it handed to this connection
  };
  const Stats& stats() const { return stats_; }
  void set_comm(std::string comm) { stats_.comm = std::move(comm); }

  broker::PeerId id() const { return id_; }
  const broker::Identity& identity() const { return identity_; }
  const std::string& description() const { return description_; }
  // The fields of a log line about this peer (net/log_fields.hpp). A TCP peer has no local
  // process, and its uid is the one all TCP peers share unless a client certificate mapped
  // it to a local one: both are left out then rather than logged as if they meant a user.
  LogFields log_fields(Errc code = Errc::ok, std::string_view key = {}) const {
    LogFields f;
    if (!identity_.tcp) f.pid = identity_.pid;
    if (!identity_.tcp || identity_.uid != broker::kTcpUid) f.uid = identity_.uid;
    f.key = key;
    f.errc = code;
    return f;
  }
  const std::string& remote_ip() const { return remote_ip_; }
  // "unix", "tcp" or "tls": how the peer reached qbusd.
  std::string_view transport() const {
    if (!identity_.tcp) return "unix";
    return tls_server_ ? "tls" : "tcp";
  }
  bool authenticated() const { return authenticated_; }
  // The supplementary groups of the uid a TLS client certificate mapped this peer to.
  std::span<const std::uint32_t> mapped_groups() const {
    return mapped_ ? std::span<const std::uint32_t>(mapped_->groups)
                   : std::span<const std::uint32_t>();
  }
  void mark_authenticated() { authenticated_ = true; }
  // TCP: the server's bound on unauthenticated time ran out. Refuses (if nothing was sent
  // yet) and closes now, whatever the connection was waiting for.
  void preauth_expired();

 private:
  enum class Step { next, stop };

  static constexpr std::size_t kReadChunk = 64 * 1024;
  // A request or a small message fits whole; more than that is read on from scratch.
  static constexpr std::size_t kWakeRead = 512;
  enum class Read { more, drained, closed };
  static bool would_block(const asio::error_code& ec) {
    return ec == asio::error::would_block || ec == asio::error::try_again;
  }

  // Where the next answer frame goes: the end of the output, behind any inline region
  // still being streamed.
  proto::ByteBuffer& out();
  // After every append to out(): brings the uid's count of buffered output up to date and
  // has the connection flushed at the end of the batch. Inline: once per message.
  void mark_dirty() {
    note_output();
    if (!flush_pending_) request_flush();
  }
  void request_flush();  // joins the Server's list of connections to flush
  // Brings the uid's count of buffered output up to date after answers were appended (or
  // written).
  void note_output() {
    if (!uid_out_) return;
    // queued_ holds output only while a region streams to a TCP peer.
    const std::uint64_t now = queued_.empty() ? out_.size() : output_with_queued();
    uid_out_->bytes = uid_out_->bytes - accounted_ + now;
    accounted_ = now;
  }
  std::uint64_t output_with_queued() const;
  void flush();
  // A region message: to a Unix peer its fd passes with a DELIVER_REGION; to a TCP peer its
  // bytes go inline (stream_inline).
  void deliver_region(std::uint64_t correlation, bool last, const broker::Delivery& d);
  // Unix sockets: `fd` travels (SCM_RIGHTS) with the next frame appended to out().
  void pass_fd(proto::UniqueFd fd);
  // Unix sockets: a new fd for region `id` (region_fd_for_peer: a duplicate, or reopened
  // read-only) travels with the next frame appended. Returns the region's size, or nullopt
  // and `why` when no fd could be made.
  std::optional<std::uint64_t> pass_region_fd(broker::RegionId id, bool read_only,
                                              std::string& why);
  // TCP: a region message's bytes as DELIVER pieces flagged MORE, produced as the output
  // drains so that only one piece at a time is buffered. The bytes are read with pread from
  // the region's memfd, which this connection's handle on the region keeps open: reading
  // never allocates a hole's page (a mapping would, charged to qbusd).
  void stream_inline(std::uint64_t correlation, bool last, const broker::Delivery& d);

  void wait_readable();
  // TLS (connection_tls.cpp): drives the handshake as the socket allows; once it is done,
  // takes the identity a mapped client certificate gives and starts reading frames.
  void continue_handshake();
  void tls_established();
  // A failed handshake: logged (sampled) and counted against the address like a wrong
  // token, then closed, late when the address has failed often. A peer that spoke plain
  // qbus gets a plain ERROR saying the port needs TLS.
  void tls_failed(std::string_view why);
  bool tls_pending_handshake() const { return tls_ && !tls_->established(); }
  bool tls_output_pending() const { return tls_ && tls_->output_pending(); }
  // Reads from the socket, through TLS when the connection has it.
  std::size_t read_bytes(std::span<std::byte> dst, asio::error_code& ec) {
    if (tls_) return tls_->read(dst, ec);
    return socket_.read_some(asio::buffer(dst.data(), dst.size()), ec);
  }
  // While reads are paused, a peer that hangs up would go unnoticed (nothing reads its
  // EOF): wait for the socket's hang-up or error instead, and close on it.
  void watch_hangup();
  void stop_watching_hangup();
  // The posted read into wake_ completed.
  void on_woken(const asio::error_code& ec, std::size_t n);
  void on_readable();
  // Reads on while the socket has more and the connection may read, for a few rounds.
  void read_rounds();
  void end_reads(broker::Clock::time_point started);
  // Decodes `n` bytes read into `dst` (read in place into in_'s free space, or elsewhere:
  // decoded where they are, a trailing partial frame kept in in_), or closes on EOF or an
  // error. `more` when `dst` was filled, so the socket may hold more.
  Read took(std::span<std::byte> dst, std::size_t n, const asio::error_code& ec, bool in_place);
  bool starts_with_whole_frame() const;
  // Handles every complete frame in `in`; returns how many bytes were used.
  std::size_t process(std::span<const std::byte> in);
  Step handle(const proto::Header& h, proto::Bytes body);
  Step dispatch(const proto::Header& h, proto::Bytes body);
  Step handle_hello(const proto::Header& h, proto::Bytes body);
  // Version 2 (connection_acks.cpp): PROPERTIES, ACK, NACK, EXTEND, SUBSCRIBE, UNSUBSCRIBE
  // and DECLARE_EX.
  Step handle_v2(const proto::Header& h, proto::Bytes body);
  // PUBLISH and SUBSCRIBE_SUBJECT (proto/PROTOCOL.md 18), in connection_pubsub.cpp.
  Step handle_pubsub(const proto::Header& h, proto::Bytes body);
  // invalid_subject, naming the rule `s` breaks.
  Step bad_subject(const proto::Header& h, std::string_view s, bool pattern);
  Step handle_properties(const proto::Header& h, proto::Bytes body);
  Step answer_settled(const proto::Header& h, const broker::Settled& r);
  // The header block the last PROPERTIES gave the frame being handled; empty when none.
  proto::Bytes headers() const {
    return has_properties_ ? proto::Bytes(properties_) : proto::Bytes();
  }
  // All the last PROPERTIES gave it: for a queue's message, also its time to live, delay
  // and priority.
  broker::MessageProps props() const {
    if (!has_properties_) return {};
    broker::MessageProps p = props_;
    p.headers = proto::Bytes(properties_);
    return p;
  }
  // Whether those ask for what only a queue's message can have.
  bool timed_properties() const {
    return has_properties_ && (props_.ttl_ms != 0 || props_.delay_ms != 0 || props_.priority != 0);
  }
  // Refuses a message frame whose PROPERTIES gave it a time to live, delay or priority.
  Step refuse_timed(const proto::Header& h);
  void deliver_info(std::uint64_t correlation, const broker::DeliveryExtras& e);
  // Reports a message this client sent to the attached monitor (tap.hpp), with whether the
  // broker took it. A paused send is reported when it is retried. Callers test
  // server_.tap() first, so that without a monitor a message pays that test only.
  void tap(TapEvent e, const broker::SendOutcome& r);
  void tap_direct(const proto::SendDirect& m, const broker::SendOutcome& r);
  void tap_region(const proto::SendRegion& m, const broker::SendOutcome& r);
  // Turns the broker's verdict on a send into frames: OK (when asked), ERROR, or a pause.
  Step answer(const proto::Header& h, const broker::SendOutcome& r, bool ok_on_success);
  void misbehaved(Errc code, std::string_view text);  // logs, rate-limited
  // Logs a refused region request, rate-limited like misbehaved(): refusals can come in
  // floods and the log must not. `key`, when known, goes into the line's fields only.
  void log_refusal(bool warn, Errc code, std::string_view what, std::string_view text,
                   std::string_view key = {});
  // Logs a purge or delete the client made, as the operator's are (they change what every
  // client of the queue sees), rate-limited like refusals.
  void log_dropped(std::string_view what, std::string_view key, std::size_t dropped);
  // Answers a frame the peer should not have sent (the connection goes on) and logs it.
  void bad_request(std::uint64_t correlation, Errc code, std::string_view text);
  bool can_read() const {
    return !closed_ && !closing_ && !input_ended_ && !blocked_ && !held_ && !backed_up() &&
           !journal_full();
  }
  // After the peer's EOF: once no whole frame is left in in_ (frames held back by a pause
  // are handled first), sends what they produced and closes.
  void finish_input();
  // Sends to durable queues waiting for the journal: at kMaxUnjournaled the connection
  // stops reading, so a slow disk holds back its durable producers and nobody else.
  bool journal_full() const { return journal_full_; }
  void await_journal(std::uint64_t correlation, std::uint64_t ticket, bool confirm);
  // Checks a TCP peer's token: welcomes the right one at once; refuses a wrong one, late
  // when its address has failed often.
  void authenticate(std::uint64_t correlation, std::string_view token, std::string_view name);
  void welcome(std::uint64_t correlation, std::string_view name);
  void wait_writable();
  void resume();  // processes held-back frames, then reads again if allowed
  // Moves the next queued output (a buffer, or the next piece of a stream) into out_.
  bool refill();
  // Writes from out_, with the fds due at its first bytes; bytes written.
  std::size_t write_out(asio::error_code& ec);
  // Answers REGION_ALLOC, REGION_CREATE and REGION_ATTACH.
  // `created_key`: the key of a named region this grant just created, undone when the fd
  // cannot be passed.
  void grant(std::uint64_t correlation, const broker::RegionGrant& g, std::string_view what,
             std::string_view created_key = {});
  Step handle_region(const proto::Header& h, proto::Bytes body);
  // Answers a frame whose body (with a queue key) does not decode, with the decoder's
  // verdict.
  Step bad_queue_body(const proto::Header& h, Errc e);
  // DECLARE, PURGE and DELETE: what a client may do to a queue beyond using it.
  Step handle_queue_change(const proto::Header& h, proto::Bytes body);

  Server& server_;
  Socket socket_;
  broker::PeerId id_;
  broker::Identity identity_;
  std::string description_;
  std::string remote_ip_;
  // TLS connections only: the session, and the mapping their client certificate matched.
  std::unique_ptr<TlsChannel> tls_;
  TlsServer* tls_server_ = nullptr;
  const TlsPeerMapping* mapped_ = nullptr;
  proto::ByteBuffer in_;   // a partial frame (or frames held back by backpressure)
  proto::ByteBuffer out_;  // answers not yet written
  // fds to pass, each with the stream position of the first byte of its frame.
  struct PendingFd {
    std::uint64_t at = 0;
    proto::UniqueFd fd;
  };
  std::deque<PendingFd> fds_;
  UidOutput* uid_out_ = nullptr;  // the Server's entry for identity_.uid, until close()
  std::uint64_t accounted_ = 0;   // output bytes counted in uid_out_->bytes
  std::uint64_t flushed_ = 0;     // bytes of output written so far
  struct InlineStream {
    broker::RegionId region = 0;  // this connection's handle, released when all is written
    std::uint64_t correlation = 0;
    bool last = false;
    std::uint32_t sender_pid = 0;
    std::uint32_t sender_uid = 0;
    std::uint64_t sender_client_id = 0;
    std::uint64_t request_id = 0;
    std::string key;
    std::uint64_t offset = 0;  // of the slice in the region
    std::uint64_t length = 0;
    std::uint64_t sent = 0;
  };
  // Output behind a stream, in order (TCP only; empty when nothing is being streamed).
  std::deque<std::variant<InlineStream, proto::ByteBuffer>> queued_;
  // One timer per connection, used in turn for the handshake timeout, a delayed TCP
  // refusal and the grace before a closing connection is cut.
  asio::steady_timer handshake_timer_;
  Stats stats_;
  std::uint64_t misbehaviours_ = 0;
  std::uint64_t refusals_ = 0;
  std::uint64_t denials_ = 0;
  std::uint64_t drops_ = 0;  // purges and deletes, logged like refusals
  bool welcomed_ = false;
  // The protocol version agreed in the handshake (HELLO, WELCOME).
  std::uint8_t version_ = 1;
  // A PROPERTIES waiting for the message frame that follows it (17.1).
  bool has_properties_ = false;
  std::uint64_t properties_correlation_ = 0;
  std::vector<std::byte> properties_;
  broker::MessageProps props_;     // its times and priority (its headers are properties_)
  broker::Clock::time_point now_;  // when the frames being processed were read
  bool reading_ = false;
  bool watching_hangup_ = false;  // a wait_error is pending on the socket
  // Cancels that wait when reads resume: while it is pending, Asio re-arms epoll for
  // every read. The generation tells a cancelled wait's late completion from a live one.
  asio::cancellation_signal hangup_cancel_;
  std::uint32_t hangup_generation_ = 0;
  std::array<std::byte, kWakeRead> wake_;
  bool writing_ = false;
  struct Unjournaled {
    std::uint64_t ticket = 0;
    std::uint64_t correlation = 0;
    bool confirm = false;
  };
  std::deque<Unjournaled> unjournaled_;  // in ticket order
  static constexpr std::size_t kMaxUnjournaled = 65536;
  bool journal_full_ = false;   // unjournaled_ holds kMaxUnjournaled: a flag, tested per frame
  bool blocked_ = false;        // a producer waiting for room in a full queue
  bool held_ = false;           // a wrong token's refusal is being delayed
  bool authenticated_ = false;  // TCP: presented the token (and became a broker peer)
  bool paused_output_ = false;  // reads paused until the peer reads its answers
  bool input_ended_ = false;    // the peer's EOF was read (it may still read its answers)
  bool closing_ = false;
  bool closed_ = false;
  bool flush_pending_ = false;  // on the Server's list of connections to flush
  bool starved_ = false;        // on its uid's starved list (Server::wants_more)
};

}  // namespace qbus::daemon
