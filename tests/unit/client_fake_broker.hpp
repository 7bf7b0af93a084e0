// A scripted fake broker for libqbus's unit tests (client_headers_test.cpp,
// client_time_test.cpp): it serves one Client connection over a Unix socket, answers its
// HELLO, then runs a script that reads the frames the library writes and writes the ones it
// must read, so that a test checks the library's bytes without a qbusd.
//
// Thread-safety: the script runs on the FakeBroker's own thread, the Client on the test's;
// the destructor joins the thread once the Client has closed the connection.
#pragma once

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <qbus/client.hpp>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "headers.hpp"
#include "qbus/proto/buffer.hpp"
#include "qbus/proto/codec.hpp"
#include "qbus/proto/headers.hpp"
#include "qbus/proto/shm.hpp"
#include "raw_peer.hpp"

namespace qbus::testing {

inline std::string text_of(proto::Bytes b) {
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

inline Headers headers_of(proto::Bytes block) {
  EXPECT_EQ(proto::check_headers(block, true), Errc::ok);
  return detail::decode_headers(block);
}

// ---- A scripted fake broker -------------------------------------------------------------

class FakeBroker {
 public:
  using Script = std::function<void(RawPeer&)>;

  // Serves one connection: answers HELLO with WELCOME `version`, then runs `script`, then
  // reads until the client closes.
  FakeBroker(std::uint8_t version, Script script) : dir_(make_dir()) {
    path_ = dir_ + "/fake.sock";
    listener_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::strncpy(sa.sun_path, path_.c_str(), sizeof(sa.sun_path) - 1);
    if (::bind(listener_, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0 ||
        ::listen(listener_, 1) != 0) {
      throw std::runtime_error("fake broker: cannot listen on " + path_);
    }
    thread_ = std::thread([this, version, script = std::move(script)] {
      try {
        serve(version, script);
      } catch (const std::exception& e) {
        ADD_FAILURE() << "fake broker: " << e.what();
      }
    });
  }
  ~FakeBroker() {
    thread_.join();
    ::close(listener_);
    ::unlink(path_.c_str());
    ::rmdir(dir_.c_str());
  }
  FakeBroker(const FakeBroker&) = delete;
  FakeBroker& operator=(const FakeBroker&) = delete;

  ClientOptions options() const {
    ClientOptions o;
    o.address = "unix:" + path_;
    o.name = "unit";
    o.connect_timeout = std::chrono::seconds(30);
    return o;
  }

 private:
  static std::string make_dir() {
    char tmpl[] = "/tmp/qbus-fake-XXXXXX";
    if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
    return tmpl;
  }
  void serve(std::uint8_t version, const Script& script) {
    const int fd = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) throw std::runtime_error("accept failed");
    RawPeer peer("", fd);
    auto hello = peer.next();
    if (!hello || hello->type != proto::FrameType::hello) throw std::runtime_error("no HELLO");
    proto::Hello h;
    EXPECT_EQ(proto::decode_hello(hello->body, h), Errc::ok);
    EXPECT_EQ(h.min_version, 1);
    EXPECT_EQ(h.max_version, 2);
    proto::Welcome w;
    w.version = version;
    w.max_body = 1 << 20;
    w.max_payload = 1 << 20;
    w.pid = 1;
    w.client_id = 7;
    proto::ByteBuffer out;
    proto::append_welcome(out, hello->correlation, w);
    peer.write(out);
    script(peer);
    while (peer.next()) {
    }
  }

  std::string dir_;
  std::string path_;
  int listener_ = -1;
  std::thread thread_;
};

// The next frame, which must be of `type`.
inline Frame expect_frame(RawPeer& peer, proto::FrameType type) {
  auto f = peer.next();
  if (!f)
    throw std::runtime_error("client closed, expected " +
                             std::string(proto::frame_type_name(type)));
  EXPECT_EQ(f->type, type) << proto::frame_type_name(f->type);
  return *f;
}

template <typename Body>
Body body_of(const Frame& f) {
  Body b;
  EXPECT_EQ(proto::decode_body(f.body, b), Errc::ok) << proto::frame_type_name(f.type);
  return b;
}

inline void send_ok(RawPeer& peer, std::uint64_t corr) {
  proto::ByteBuffer b;
  proto::append_empty(b, proto::FrameType::ok, corr);
  peer.write(b);
}

inline void send_error(RawPeer& peer, std::uint64_t corr, Errc code) {
  proto::ByteBuffer b;
  proto::append_error(b, corr, code, "from the fake");
  peer.write(b);
}

// DELIVERY_INFO (when `info`) and a DELIVER of `payload` from queue `key`.
inline void deliver(RawPeer& peer, std::uint64_t corr, std::string_view key,
                    std::string_view payload, const proto::DeliveryInfo* info = nullptr,
                    bool last = true) {
  proto::ByteBuffer b;
  if (info) proto::append_frame(b, corr, 0, *info);
  proto::Deliver d;
  d.key = key;
  d.payload = as_bytes(std::span(payload.data(), payload.size()));
  d.sender_pid = 42;
  d.sender_client_id = 9;
  proto::append_deliver(b, corr, last ? proto::kFlagLast : 0, d);
  peer.write(b);
}

// A PING's PONG, for Client::sync().
inline void answer_ping(RawPeer& peer) {
  const Frame ping = expect_frame(peer, proto::FrameType::ping);
  proto::ByteBuffer b;
  proto::append_empty(b, proto::FrameType::pong, ping.correlation);
  peer.write(b);
}

// Answers the next frame, which must be a REGION_ALLOC, as qbusd does: a REGION granting a
// fresh memfd of the size asked for, passed with the frame (SCM_RIGHTS). Returns `id`.
inline std::uint64_t grant_region(RawPeer& peer, std::uint64_t id) {
  const Frame a = expect_frame(peer, proto::FrameType::region_alloc);
  const auto req = body_of<proto::RegionAlloc>(a);
  auto fd = proto::shm::create_region(req.size, "fake", req.size);
  if (!fd) throw std::runtime_error("fake broker: " + fd.error().text);
  proto::ByteBuffer b;
  proto::append_frame(b, a.correlation, 0, proto::RegionGrantBody{id, req.size, true});
  const auto bytes = b.readable();
  iovec iov{const_cast<std::byte*>(bytes.data()), bytes.size()};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  cmsghdr* cm = CMSG_FIRSTHDR(&msg);
  cm->cmsg_level = SOL_SOCKET;
  cm->cmsg_type = SCM_RIGHTS;
  cm->cmsg_len = CMSG_LEN(sizeof(int));
  const int raw = fd->get();
  std::memcpy(CMSG_DATA(cm), &raw, sizeof(int));
  if (::sendmsg(peer.fd(), &msg, MSG_NOSIGNAL) != static_cast<ssize_t>(bytes.size())) {
    throw std::runtime_error("fake broker: cannot pass the region's fd");
  }
  return id;
}

}  // namespace qbus::testing
