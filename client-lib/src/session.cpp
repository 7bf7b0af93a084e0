#include "session.hpp"

#include <poll.h>
#include <unistd.h>

namespace qbus::detail {
namespace {

using proto::FrameType;

std::string program_name() {
  char buf[64] = {};
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return "libqbus";
  std::string_view path(buf, static_cast<std::size_t>(n));
  return std::string(path.substr(path.rfind('/') + 1));
}

}  // namespace

void Session::connect(const ClientOptions& options) {
  const std::string text = resolve_address(options.address);
  std::string why;
  auto addr = proto::parse_address(text, why);
  if (!addr) throw Error(Errc::bad_address, "bad qbus address: " + why);
  info_.address = addr->to_string();
  const auto deadline = Clock::now() + options.connect_timeout;
  std::string token;
  if (addr->kind == proto::Address::Kind::tcp) token = resolve_token(options.token);
  TlsFiles tls;
  if (addr->tls) tls = resolve_tls_files(options.tls_ca, options.tls_cert, options.tls_key);
  transport_.connect(*addr, deadline, tls);
  hello(options, token, deadline);
}

void Session::hello(const ClientOptions& options, const std::string& token,
                    Clock::time_point deadline) {
  proto::Hello hello;
  hello.token = token;
  std::string name = options.name.empty() ? program_name() : options.name;
  hello.client_name = std::string_view(name).substr(0, proto::kMaxClientNameSize);
  const std::uint64_t corr = next_correlation_++;
  proto::append_hello(out_, corr, hello);
  bool welcomed = false;
  wait_for(corr, deadline, [&](const proto::Header& h, proto::Bytes body) {
    if (h.type == FrameType::error) throw_error_frame(body, "handshake refused");
    proto::Welcome w;
    if (h.type != FrameType::welcome || proto::decode_welcome(body, w) != Errc::ok) {
      fail(Errc::protocol_violation, "broker answered HELLO with something else");
    }
    // The broker picks a version within the range HELLO offered (kMinVersion..kMaxVersion).
    if (w.version < proto::kMinVersion || w.version > proto::kMaxVersion) {
      fail(Errc::unsupported_version, "broker chose protocol version " + std::to_string(w.version) +
                                          ", outside the " + std::to_string(proto::kMinVersion) +
                                          ".." + std::to_string(proto::kMaxVersion) +
                                          " this client speaks");
    }
    info_.protocol_version = w.version;
    info_.pid = w.pid;
    info_.uid = w.uid;
    info_.gid = w.gid;
    info_.client_id = w.client_id;
    info_.max_payload = w.max_payload;
    welcomed = true;
    return true;
  });
  if (!welcomed) fail(Errc::connect_failed, "no answer from " + info_.address + " in time");
}

void Session::close() noexcept {
  if (broken_ || out_.empty()) return;
  try {
    flush();
  } catch (const Error&) {
    // Nothing to report to: the caller is gone. The broker sees the close.
  }
}

void Session::uncork() noexcept {
  if (--corked_ == 0 && !broken_) {
    try {
      flush();
    } catch (const Error&) {
      // Recorded in the session: its next call throws the same error.
    }
  }
}

void Session::flush() {
  while (!write_some()) {
    short revents = 0;
    try {
      revents = transport_.wait(true, -1);
    } catch (const Error& e) {
      fail(e.code(), e.what());
    }
    if (revents & POLLIN) {
      read_some();
      drain_unsolicited();
    }
  }
}

void Session::wait_ok(std::uint64_t corr, std::string_view context) {
  const bool answered = wait_for(corr, kNoDeadline, [&](const proto::Header& h, proto::Bytes b) {
    if (h.type == FrameType::error) throw_error_frame(b, context);
    if (h.type != FrameType::ok && h.type != FrameType::pong) {
      fail(Errc::protocol_violation, std::string(context) + ": unexpected answer");
    }
    return true;
  });
  if (!answered) fail(Errc::io_error, std::string(context) + ": broker did not answer");
}

void Session::drain_unsolicited() {
  wait_step(0, [](const proto::Header&, proto::Bytes) { return false; });
}

void Session::unsolicited(const proto::Header& header, proto::Bytes body) {
  if (header.correlation != 0 && stream_handler_ && stream_handler_(header, body)) return;
  if (header.type != FrameType::error) {
    fail(Errc::protocol_violation, "broker sent an unexpected " +
                                       std::string(proto::frame_type_name(header.type)) + " frame");
  }
  // Correlation 0: the broker refuses the connection as a whole and closes it.
  if (header.correlation == 0) fail_closed_by_broker(body);
  record_failure(body);
}

void Session::record_failure(proto::Bytes body) {
  proto::ErrorBody e;
  if (proto::decode_error(body, e) != Errc::ok) {
    fail(Errc::protocol_violation, "broker sent a malformed ERROR frame");
  }
  const auto code = errc_is_known(e.code) ? static_cast<Errc>(e.code) : Errc::internal_error;
  ++failures_.count;
  failures_.last_code = code;
  failures_.last_message = std::string(e.text);
}

void Session::fail(Errc code, const std::string& text) {
  if (!broken_) broken_.emplace(code, text);
  throw Error(code, text);
}

void Session::throw_error_frame(proto::Bytes body, std::string_view context) {
  throw error_of(body, context);
}

Error Session::error_of(proto::Bytes body, std::string_view context) {
  proto::ErrorBody e;
  if (proto::decode_error(body, e) != Errc::ok) {
    fail(Errc::protocol_violation, "broker sent a malformed ERROR frame");
  }
  const auto code = errc_is_known(e.code) ? static_cast<Errc>(e.code) : Errc::internal_error;
  std::string text = std::string(context) + ": " + std::string(errc_name(code));
  if (!e.text.empty()) text += ": " + std::string(e.text);
  if (errc_is_fatal(code)) fail(code, text);
  return Error(code, text);
}

void Session::fail_bad_header(Errc why) {
  fail(Errc::protocol_violation,
       "broker sent an invalid frame header (" + std::string(errc_name(why)) + ")");
}

void Session::fail_missing_fd(FrameType type) {
  fail(Errc::protocol_violation, "broker sent a " + std::string(proto::frame_type_name(type)) +
                                     " frame without its file descriptor");
}

void Session::fail_closed_by_broker(proto::Bytes body) {
  proto::ErrorBody e;
  const bool ok = proto::decode_error(body, e) == Errc::ok;
  const auto code =
      ok && errc_is_known(e.code) ? static_cast<Errc>(e.code) : Errc::protocol_violation;
  fail(code, "broker closed the connection: " + std::string(errc_name(code)) +
                 (ok && !e.text.empty() ? ": " + std::string(e.text) : std::string()));
}

void Session::fail_write(const Error& e) {
  if (e.code() == Errc::connection_closed) fail_write_to_closed_broker(e.what());
  fail(e.code(), e.what());
}

// A write found the broker gone. When it closed on purpose its reason (a correlation-0
// ERROR, e.g. too_many_connections before HELLO was even read) is already on its way to
// us: report that instead of a bare EPIPE. Frames before it are left unhandled; the
// connection is dead either way.
void Session::fail_write_to_closed_broker(const std::string& why) {
  transport_.read_rest(in_);
  for (auto rest = in_.readable();;) {
    const auto hr = proto::decode_header(rest, proto::kMaxBodyCeiling);
    if (hr.status != proto::HeaderStatus::complete) break;
    const std::size_t size = proto::kHeaderSize + hr.header.body_size;
    if (rest.size() < size) break;
    if (hr.header.type == FrameType::error && hr.header.correlation == 0) {
      fail_closed_by_broker(rest.subspan(proto::kHeaderSize, hr.header.body_size));
    }
    rest = rest.subspan(size);
  }
  fail(Errc::connection_closed, why);
}

}  // namespace qbus::detail
