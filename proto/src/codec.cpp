#include "qbus/proto/codec.hpp"

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>

namespace qbus::proto {
namespace {

// Explicit little-endian access keeps the wire format independent of the host; on a
// little-endian host it is one unaligned load or store (the byte loop was not merged by
// the compiler and cost ~10 instructions per byte on every frame).
template <typename T>
T load(const std::byte* p) noexcept {
  if constexpr (std::endian::native == std::endian::little) {
    T v;
    std::memcpy(&v, p, sizeof(T));
    return v;
  } else {
    T v = 0;
    for (std::size_t i = 0; i < sizeof(T); ++i) {
      v = static_cast<T>(v | (static_cast<T>(std::to_integer<std::uint8_t>(p[i])) << (8 * i)));
    }
    return v;
  }
}

template <typename T>
void store(std::byte* p, T v) noexcept {
  if constexpr (std::endian::native == std::endian::little) {
    std::memcpy(p, &v, sizeof(T));
  } else {
    using U = std::make_unsigned_t<T>;
    auto u = static_cast<U>(v);
    for (std::size_t i = 0; i < sizeof(T); ++i) {
      p[i] = static_cast<std::byte>((u >> (8 * i)) & 0xFFu);
    }
  }
}

// Sequential reader over a body; every take checks the remaining length first.
class Reader {
 public:
  explicit Reader(Bytes in) noexcept : in_(in) {}

  template <typename T>
  bool take(T& v) noexcept {
    if (in_.size() - pos_ < sizeof(T)) return false;
    v = load<T>(in_.data() + pos_);
    pos_ += sizeof(T);
    return true;
  }
  bool take_string(std::size_t n, std::string_view& s) noexcept {
    if (in_.size() - pos_ < n) return false;
    s = std::string_view(reinterpret_cast<const char*>(in_.data() + pos_), n);
    pos_ += n;
    return true;
  }
  Bytes rest() noexcept {
    auto r = in_.subspan(pos_);
    pos_ = in_.size();
    return r;
  }
  bool at_end() const noexcept { return pos_ == in_.size(); }

 private:
  Bytes in_;
  std::size_t pos_ = 0;
};

class Writer {
 public:
  explicit Writer(MutableBytes out) noexcept : p_(out.data()) {}
  template <typename T>
  void put(T v) noexcept {
    store(p_, v);
    p_ += sizeof(T);
  }
  void put_string(std::string_view s) noexcept {
    if (!s.empty()) std::memcpy(p_, s.data(), s.size());
    p_ += s.size();
  }

 private:
  std::byte* p_;
};

Errc read_key(Reader& r, std::string_view& key) noexcept {
  std::uint8_t n = 0;
  if (!r.take(n) || !r.take_string(n, key)) return Errc::malformed_frame;
  return is_valid_key(key) ? Errc::ok : Errc::invalid_key;
}

constexpr std::string_view kTypeNames[] = {
    "hello",         "welcome",        "error",          "ok",
    "send",          "receive",        "deliver",        "declare",
    "ping",          "pong",           "send_direct",    "receive_direct",
    "claim_inbox",   "request",        "region_alloc",   "region",
    "send_region",   "deliver_region", "region_release", "region_create",
    "region_attach", "region_remove"};

}  // namespace

std::string_view overflow_name(Overflow o) noexcept {
  switch (o) {
    case Overflow::use_default:
      return "default";
    case Overflow::reject:
      return "reject";
    case Overflow::drop_oldest:
      return "drop_oldest";
    case Overflow::block:
      return "block";
  }
  return "unknown";
}

bool is_known_type(std::uint8_t type) noexcept {
  return type >= static_cast<std::uint8_t>(FrameType::hello) &&
         type <= static_cast<std::uint8_t>(FrameType::region_remove);
}

bool carries_fd(FrameType t) noexcept {
  return t == FrameType::region || t == FrameType::deliver_region;
}

std::string_view frame_type_name(FrameType t) noexcept {
  const auto v = static_cast<std::uint8_t>(t);
  return is_known_type(v) ? kTypeNames[v - 1] : std::string_view("unknown");
}

namespace {
// Every key of every SEND is checked: a table beats the chain of comparisons.
constexpr std::array<bool, 256> kKeyChars = [] {
  std::array<bool, 256> t{};
  for (int c = 0; c < 256; ++c) {
    t[static_cast<std::size_t>(c)] = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                                     (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' ||
                                     c == '/' || c == '-';
  }
  return t;
}();
}  // namespace

bool is_valid_key(std::string_view key) noexcept {
  if (key.empty() || key.size() > kMaxKeySize) return false;
  return std::all_of(key.begin(), key.end(),
                     [](char c) { return kKeyChars[static_cast<unsigned char>(c)]; });
}

HeaderResult decode_header(Bytes in, std::uint32_t max_body) noexcept {
  HeaderResult r;
  if (in.size() < kHeaderSize) {
    // Reject a wrong magic as soon as its bytes are here, so garbage is not waited on.
    std::byte magic[4];
    store(magic, kMagic);
    const auto n = std::min<std::size_t>(in.size(), 4);
    if (n > 0 && std::memcmp(in.data(), magic, n) != 0) {
      r.status = HeaderStatus::bad;
      r.error = Errc::bad_magic;
    }
    return r;
  }
  const std::byte* p = in.data();
  r.status = HeaderStatus::bad;
  if (load<std::uint32_t>(p) != kMagic) {
    r.error = Errc::bad_magic;
    return r;
  }
  if (load<std::uint8_t>(p + 4) != kVersion) {
    r.error = Errc::unsupported_version;
    return r;
  }
  if (load<std::uint32_t>(p + 20) != 0) {
    r.error = Errc::malformed_header;
    return r;
  }
  r.header.type = static_cast<FrameType>(load<std::uint8_t>(p + 5));
  r.header.flags = load<std::uint16_t>(p + 6);
  r.header.correlation = load<std::uint64_t>(p + 8);
  r.header.body_size = load<std::uint32_t>(p + 16);
  if (r.header.body_size > std::min(max_body, kMaxBodyCeiling)) {
    r.error = Errc::frame_too_large;
    return r;
  }
  r.status = HeaderStatus::complete;
  return r;
}

void encode_header(MutableBytes out, const Header& h) noexcept {
  Writer w(out);
  w.put<std::uint32_t>(kMagic);
  w.put<std::uint8_t>(kVersion);
  w.put<std::uint8_t>(static_cast<std::uint8_t>(h.type));
  w.put<std::uint16_t>(h.flags);
  w.put<std::uint64_t>(h.correlation);
  w.put<std::uint32_t>(h.body_size);
  w.put<std::uint32_t>(0);
}

Errc decode_hello(Bytes body, Hello& out) noexcept {
  Reader r(body);
  std::uint16_t name_len = 0, token_len = 0, reserved = 0;
  if (!r.take(out.min_version) || !r.take(out.max_version) || !r.take(name_len) ||
      !r.take(token_len) || !r.take(reserved)) {
    return Errc::malformed_frame;
  }
  if (reserved != 0 || out.min_version == 0 || out.min_version > out.max_version ||
      name_len > kMaxClientNameSize || token_len > kMaxTokenSize) {
    return Errc::malformed_frame;
  }
  if (!r.take_string(name_len, out.client_name) || !r.take_string(token_len, out.token) ||
      !r.at_end()) {
    return Errc::malformed_frame;
  }
  return Errc::ok;
}

Errc decode_welcome(Bytes body, Welcome& out) noexcept {
  if (body.size() != kWelcomeSize) return Errc::malformed_frame;
  Reader r(body);
  std::uint8_t reserved8 = 0;
  std::uint16_t reserved16 = 0;
  r.take(out.version);
  r.take(reserved8);
  r.take(reserved16);
  r.take(out.max_body);
  r.take(out.max_payload);
  r.take(out.pid);
  r.take(out.uid);
  r.take(out.gid);
  r.take(out.client_id);
  return reserved8 == 0 && reserved16 == 0 && out.version >= kMinVersion ? Errc::ok
                                                                         : Errc::malformed_frame;
}

Errc decode_error(Bytes body, ErrorBody& out) noexcept {
  Reader r(body);
  std::uint16_t len = 0;
  if (!r.take(out.code) || !r.take(len) || len > kMaxErrorTextSize ||
      !r.take_string(len, out.text) || !r.at_end()) {
    return Errc::malformed_frame;
  }
  return Errc::ok;
}

Errc decode_send(Bytes body, Send& out) noexcept {
  Reader r(body);
  if (auto e = read_key(r, out.key); e != Errc::ok) return e;
  out.payload = r.rest();
  return Errc::ok;
}

Errc decode_receive(Bytes body, Receive& out) noexcept {
  Reader r(body);
  if (!r.take(out.timeout_ms) || !r.take(out.max_count)) return Errc::malformed_frame;
  if (auto e = read_key(r, out.key); e != Errc::ok) return e;
  if (!r.at_end() || out.timeout_ms < -1 || out.max_count == 0) return Errc::malformed_frame;
  return Errc::ok;
}

Errc decode_deliver(Bytes body, Deliver& out) noexcept {
  Reader r(body);
  std::uint8_t key_len = 0;
  if (!r.take(out.sender_pid) || !r.take(out.sender_uid) || !r.take(out.sender_client_id) ||
      !r.take(out.request_id) || !r.take(key_len) || !r.take_string(key_len, out.key)) {
    return Errc::malformed_frame;
  }
  // An empty key marks a direct message or a reply.
  if (!out.key.empty() && !is_valid_key(out.key)) return Errc::invalid_key;
  out.payload = r.rest();
  return Errc::ok;
}

Errc decode_send_direct(Bytes body, SendDirect& out) noexcept {
  Reader r(body);
  std::uint8_t kind = 0, reserved8 = 0;
  std::uint16_t reserved16 = 0;
  if (!r.take(kind) || !r.take(reserved8) || !r.take(reserved16) || !r.take(out.wait_ms) ||
      !r.take(out.target) || !r.take(out.in_reply_to)) {
    return Errc::malformed_frame;
  }
  if (reserved8 != 0 || reserved16 != 0 || out.wait_ms < 0 || out.target == 0) {
    return Errc::malformed_frame;
  }
  if (kind != static_cast<std::uint8_t>(TargetKind::pid) &&
      kind != static_cast<std::uint8_t>(TargetKind::client_id)) {
    return Errc::malformed_frame;
  }
  out.kind = static_cast<TargetKind>(kind);
  if (out.kind == TargetKind::pid && out.target > 0xFFFFFFFFu) return Errc::malformed_frame;
  // A reply goes to the requesting connection, which only a client id names.
  if (out.in_reply_to != 0 && out.kind != TargetKind::client_id) return Errc::malformed_frame;
  out.payload = r.rest();
  return Errc::ok;
}

Errc decode_receive_direct(Bytes body, ReceiveDirect& out) noexcept {
  if (body.size() != kReceiveDirectSize) return Errc::malformed_frame;
  Reader r(body);
  r.take(out.timeout_ms);
  r.take(out.max_count);
  return out.timeout_ms < -1 || out.max_count == 0 ? Errc::malformed_frame : Errc::ok;
}

Errc decode_request(Bytes body, Request& out) noexcept {
  Reader r(body);
  if (!r.take(out.timeout_ms) || out.timeout_ms < -1) return Errc::malformed_frame;
  if (auto e = read_key(r, out.key); e != Errc::ok) return e;
  out.payload = r.rest();
  return Errc::ok;
}

Errc decode_declare(Bytes body, Declare& out) noexcept {
  Reader r(body);
  std::uint8_t overflow = 0;
  if (!r.take(out.max_messages) || !r.take(out.max_bytes) || !r.take(overflow)) {
    return Errc::malformed_frame;
  }
  if (overflow > static_cast<std::uint8_t>(Overflow::block)) return Errc::malformed_frame;
  out.overflow = static_cast<Overflow>(overflow);
  if (auto e = read_key(r, out.key); e != Errc::ok) return e;
  return r.at_end() ? Errc::ok : Errc::malformed_frame;
}

Errc decode_region_alloc(Bytes body, RegionAlloc& out) noexcept {
  if (body.size() != kRegionAllocSize) return Errc::malformed_frame;
  Reader r(body);
  r.take(out.size);
  return out.size == 0 ? Errc::malformed_frame : Errc::ok;
}

Errc decode_region_grant(Bytes body, RegionGrantBody& out) noexcept {
  if (body.size() != kRegionGrantSize) return Errc::malformed_frame;
  Reader r(body);
  std::uint8_t writable = 0, reserved8 = 0;
  std::uint16_t reserved16 = 0;
  std::uint32_t reserved32 = 0;
  r.take(out.region_id);
  r.take(out.size);
  r.take(writable);
  r.take(reserved8);
  r.take(reserved16);
  r.take(reserved32);
  if (out.region_id == 0 || out.size == 0 || writable > 1 || reserved8 != 0 || reserved16 != 0 ||
      reserved32 != 0) {
    return Errc::malformed_frame;
  }
  out.writable = writable == 1;
  return Errc::ok;
}

Errc decode_send_region(Bytes body, SendRegion& out) noexcept {
  Reader r(body);
  std::uint8_t kind = 0, release = 0, key_len = 0;
  std::uint16_t reserved = 0;
  if (!r.take(out.region_id) || !r.take(out.offset) || !r.take(out.length) || !r.take(kind) ||
      !r.take(release) || !r.take(reserved) || !r.take(out.wait_ms) || !r.take(out.target) ||
      !r.take(key_len) || !r.take_string(key_len, out.key) || !r.at_end()) {
    return Errc::malformed_frame;
  }
  if (out.region_id == 0 || out.length == 0 || release > 1 || reserved != 0 || out.wait_ms < 0) {
    return Errc::malformed_frame;
  }
  out.release = release == 1;
  switch (kind) {
    case static_cast<std::uint8_t>(RegionTarget::queue):
      if (out.target != 0 || out.wait_ms != 0) return Errc::malformed_frame;
      out.target_kind = RegionTarget::queue;
      return is_valid_key(out.key) ? Errc::ok : Errc::invalid_key;
    case static_cast<std::uint8_t>(RegionTarget::pid):
      if (out.target > 0xFFFFFFFFu) return Errc::malformed_frame;
      out.target_kind = RegionTarget::pid;
      break;
    case static_cast<std::uint8_t>(RegionTarget::client_id):
      out.target_kind = RegionTarget::client_id;
      break;
    default:
      return Errc::malformed_frame;
  }
  return out.target == 0 || !out.key.empty() ? Errc::malformed_frame : Errc::ok;
}

Errc decode_deliver_region(Bytes body, DeliverRegion& out) noexcept {
  Reader r(body);
  std::uint8_t key_len = 0;
  if (!r.take(out.sender_pid) || !r.take(out.sender_uid) || !r.take(out.sender_client_id) ||
      !r.take(out.request_id) || !r.take(out.region_id) || !r.take(out.region_size) ||
      !r.take(out.offset) || !r.take(out.length) || !r.take(key_len) ||
      !r.take_string(key_len, out.key) || !r.at_end()) {
    return Errc::malformed_frame;
  }
  if (!out.key.empty() && !is_valid_key(out.key)) return Errc::invalid_key;
  // The slice must lie inside the region; the receiver checks it against the fd again.
  if (out.region_id == 0 || out.length == 0 || out.offset > out.region_size ||
      out.length > out.region_size - out.offset) {
    return Errc::malformed_frame;
  }
  return Errc::ok;
}

Errc decode_region_release(Bytes body, std::uint64_t& region_id) noexcept {
  if (body.size() != kRegionReleaseSize) return Errc::malformed_frame;
  Reader r(body);
  r.take(region_id);
  return region_id == 0 ? Errc::malformed_frame : Errc::ok;
}

Errc decode_region_create(Bytes body, RegionCreate& out) noexcept {
  Reader r(body);
  if (!r.take(out.size) || !r.take(out.mode)) return Errc::malformed_frame;
  if (auto e = read_key(r, out.key); e != Errc::ok) return e;
  if (!r.at_end() || out.size == 0 || (out.mode & ~0666u) != 0) return Errc::malformed_frame;
  return Errc::ok;
}

Errc decode_region_attach(Bytes body, RegionAttach& out) noexcept {
  Reader r(body);
  std::uint8_t writable = 0;
  if (!r.take(writable) || writable > 1) return Errc::malformed_frame;
  out.writable = writable == 1;
  if (auto e = read_key(r, out.key); e != Errc::ok) return e;
  return r.at_end() ? Errc::ok : Errc::malformed_frame;
}

Errc decode_region_remove(Bytes body, std::string_view& key) noexcept {
  Reader r(body);
  if (auto e = read_key(r, key); e != Errc::ok) return e;
  return r.at_end() ? Errc::ok : Errc::malformed_frame;
}

std::size_t hello_size(const Hello& m) noexcept {
  return kHelloFixed + m.client_name.size() + m.token.size();
}
std::size_t error_size(std::string_view text) noexcept {
  return kErrorFixed + std::min(text.size(), kMaxErrorTextSize);
}
std::size_t send_size(std::string_view key, std::size_t payload) noexcept {
  return kSendFixed + key.size() + payload;
}
std::size_t receive_size(std::string_view key) noexcept {
  return kReceiveFixed + key.size();
}
std::size_t deliver_size(std::string_view key, std::size_t payload) noexcept {
  return kDeliverFixed + key.size() + payload;
}
std::size_t declare_size(std::string_view key) noexcept {
  return kDeclareFixed + key.size();
}
std::size_t send_direct_size(std::size_t payload) noexcept {
  return kSendDirectFixed + payload;
}
std::size_t request_size(std::string_view key, std::size_t payload) noexcept {
  return kRequestFixed + key.size() + payload;
}
std::size_t send_region_size(std::string_view key) noexcept {
  return kSendRegionFixed + key.size();
}
std::size_t deliver_region_size(std::string_view key) noexcept {
  return kDeliverRegionFixed + key.size();
}
std::size_t region_create_size(std::string_view key) noexcept {
  return kRegionCreateFixed + key.size();
}
std::size_t region_attach_size(std::string_view key) noexcept {
  return kRegionAttachFixed + key.size();
}
std::size_t region_remove_size(std::string_view key) noexcept {
  return kRegionRemoveFixed + key.size();
}

void encode_hello(MutableBytes out, const Hello& m) noexcept {
  Writer w(out);
  w.put(m.min_version);
  w.put(m.max_version);
  w.put(static_cast<std::uint16_t>(m.client_name.size()));
  w.put(static_cast<std::uint16_t>(m.token.size()));
  w.put<std::uint16_t>(0);
  w.put_string(m.client_name);
  w.put_string(m.token);
}

void encode_welcome(MutableBytes out, const Welcome& m) noexcept {
  Writer w(out);
  w.put(m.version);
  w.put<std::uint8_t>(0);
  w.put<std::uint16_t>(0);
  w.put(m.max_body);
  w.put(m.max_payload);
  w.put(m.pid);
  w.put(m.uid);
  w.put(m.gid);
  w.put(m.client_id);
}

void encode_error(MutableBytes out, std::uint16_t code, std::string_view text) noexcept {
  text = text.substr(0, kMaxErrorTextSize);
  Writer w(out);
  w.put(code);
  w.put(static_cast<std::uint16_t>(text.size()));
  w.put_string(text);
}

void encode_send_prefix(MutableBytes out, std::string_view key) noexcept {
  Writer w(out);
  w.put(static_cast<std::uint8_t>(key.size()));
  w.put_string(key);
}

void encode_receive(MutableBytes out, const Receive& m) noexcept {
  Writer w(out);
  w.put(m.timeout_ms);
  w.put(m.max_count);
  w.put(static_cast<std::uint8_t>(m.key.size()));
  w.put_string(m.key);
}

void encode_deliver_prefix(MutableBytes out, const Deliver& m) noexcept {
  Writer w(out);
  w.put(m.sender_pid);
  w.put(m.sender_uid);
  w.put(m.sender_client_id);
  w.put(m.request_id);
  w.put(static_cast<std::uint8_t>(m.key.size()));
  w.put_string(m.key);
}

void encode_declare(MutableBytes out, const Declare& m) noexcept {
  Writer w(out);
  w.put(m.max_messages);
  w.put(m.max_bytes);
  w.put(static_cast<std::uint8_t>(m.overflow));
  w.put(static_cast<std::uint8_t>(m.key.size()));
  w.put_string(m.key);
}

void encode_send_direct_prefix(MutableBytes out, const SendDirect& m) noexcept {
  Writer w(out);
  w.put(static_cast<std::uint8_t>(m.kind));
  w.put<std::uint8_t>(0);
  w.put<std::uint16_t>(0);
  w.put(m.wait_ms);
  w.put(m.target);
  w.put(m.in_reply_to);
}

void encode_receive_direct(MutableBytes out, const ReceiveDirect& m) noexcept {
  Writer w(out);
  w.put(m.timeout_ms);
  w.put(m.max_count);
}

void encode_request_prefix(MutableBytes out, const Request& m) noexcept {
  Writer w(out);
  w.put(m.timeout_ms);
  w.put(static_cast<std::uint8_t>(m.key.size()));
  w.put_string(m.key);
}

void encode_region_alloc(MutableBytes out, const RegionAlloc& m) noexcept {
  Writer w(out);
  w.put(m.size);
}

void encode_region_grant(MutableBytes out, const RegionGrantBody& m) noexcept {
  Writer w(out);
  w.put(m.region_id);
  w.put(m.size);
  w.put<std::uint8_t>(m.writable ? 1 : 0);
  w.put<std::uint8_t>(0);
  w.put<std::uint16_t>(0);
  w.put<std::uint32_t>(0);
}

void encode_send_region(MutableBytes out, const SendRegion& m) noexcept {
  Writer w(out);
  w.put(m.region_id);
  w.put(m.offset);
  w.put(m.length);
  w.put(static_cast<std::uint8_t>(m.target_kind));
  w.put<std::uint8_t>(m.release ? 1 : 0);
  w.put<std::uint16_t>(0);
  w.put(m.wait_ms);
  w.put(m.target);
  w.put(static_cast<std::uint8_t>(m.key.size()));
  w.put_string(m.key);
}

void encode_deliver_region(MutableBytes out, const DeliverRegion& m) noexcept {
  Writer w(out);
  w.put(m.sender_pid);
  w.put(m.sender_uid);
  w.put(m.sender_client_id);
  w.put(m.request_id);
  w.put(m.region_id);
  w.put(m.region_size);
  w.put(m.offset);
  w.put(m.length);
  w.put(static_cast<std::uint8_t>(m.key.size()));
  w.put_string(m.key);
}

void encode_region_release(MutableBytes out, std::uint64_t region_id) noexcept {
  Writer w(out);
  w.put(region_id);
}

void encode_region_create(MutableBytes out, const RegionCreate& m) noexcept {
  Writer w(out);
  w.put(m.size);
  w.put(m.mode);
  w.put(static_cast<std::uint8_t>(m.key.size()));
  w.put_string(m.key);
}

void encode_region_attach(MutableBytes out, const RegionAttach& m) noexcept {
  Writer w(out);
  w.put<std::uint8_t>(m.writable ? 1 : 0);
  w.put(static_cast<std::uint8_t>(m.key.size()));
  w.put_string(m.key);
}

void encode_region_remove(MutableBytes out, std::string_view key) noexcept {
  Writer w(out);
  w.put(static_cast<std::uint8_t>(key.size()));
  w.put_string(key);
}

}  // namespace qbus::proto
