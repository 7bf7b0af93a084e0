// The Prometheus endpoint's HTTP side: accepting, reading one request head, answering it,
// closing. The metrics themselves are rendered in metrics_text.cpp.
#include "admin/metrics_server.hpp"

#include <spdlog/spdlog.h>

#include <stdexcept>
#include <string_view>
#include <utility>

#include "qbus/proto/address.hpp"

namespace qbus::daemon {
namespace {

using Socket = asio::generic::stream_protocol::socket;

std::string response(std::string_view status, std::string_view content_type, std::string_view body,
                     std::string_view extra_headers = {}) {
  std::string r;
  r.reserve(160 + body.size());
  r.append("HTTP/1.1 ").append(status).append("\r\nContent-Type: ").append(content_type);
  r.append("\r\nContent-Length: ").append(std::to_string(body.size()));
  r.append("\r\nConnection: close\r\nCache-Control: no-store\r\n").append(extra_headers);
  r.append("\r\n").append(body);
  return r;
}

std::string refusal(std::string_view status, std::string_view text,
                    std::string_view extra_headers = {}) {
  return response(status, "text/plain; charset=utf-8", std::string(text) + "\n", extra_headers);
}

// The answer to a request head (the bytes up to the blank line). Only `GET /metrics` is
// served; a query string is ignored, as Prometheus may add one.
std::string answer_head(std::string_view head, MetricsServer& metrics) {
  const auto eol = head.find("\r\n");
  const std::string_view line = head.substr(0, eol);
  const auto sp1 = line.find(' ');
  const auto sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos) {
    return refusal("400 Bad Request", "a request line is METHOD SP TARGET SP HTTP-VERSION");
  }
  const std::string_view method = line.substr(0, sp1);
  const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  const std::string_view version = line.substr(sp2 + 1);
  if (version != "HTTP/1.1" && version != "HTTP/1.0") {
    return refusal("505 HTTP Version Not Supported", "only HTTP/1.0 and HTTP/1.1");
  }
  const std::string_view path = target.substr(0, target.find('?'));
  if (path != "/metrics") return refusal("404 Not Found", "only /metrics is served here");
  if (method != "GET") {
    return refusal("405 Method Not Allowed", "/metrics answers GET only", "Allow: GET\r\n");
  }
  return response("200 OK", "text/plain; version=0.0.4; charset=utf-8", metrics.render());
}

}  // namespace

// One scrape: reads the request head, writes the answer, closes. The deadline covers the
// whole exchange, so a peer that sends slowly or reads slowly is cut off.
class MetricsServer::Session : public std::enable_shared_from_this<Session> {
 public:
  Session(MetricsServer& metrics, Socket socket)
      : metrics_(metrics),
        socket_(std::move(socket)),
        in_(kMaxRequestBytes),
        deadline_(metrics.io_) {}

  void start() {
    deadline_.expires_after(kExchangeTimeout);
    deadline_.async_wait([weak = weak_from_this()](const asio::error_code& ec) {
      if (auto self = weak.lock(); self && !ec) self->close();
    });
    asio::async_read_until(socket_, in_, "\r\n\r\n",
                           [self = shared_from_this()](const asio::error_code& ec, std::size_t n) {
                             self->on_head(ec, n);
                           });
  }
  void refuse(std::string text) { write(std::move(text)); }
  void close() {
    asio::error_code ec;
    deadline_.cancel();
    socket_.close(ec);
    metrics_.sessions_.erase(this);
  }

 private:
  void on_head(const asio::error_code& ec, std::size_t n) {
    if (ec == asio::error::not_found) {
      write(refusal("431 Request Header Fields Too Large",
                    "the request head is over " + std::to_string(kMaxRequestBytes) + " bytes"));
      return;
    }
    if (ec) {
      close();
      return;
    }
    const auto data = in_.data();
    const std::string head(asio::buffers_begin(data),
                           asio::buffers_begin(data) + static_cast<std::ptrdiff_t>(n));
    write(answer_head(head, metrics_));
  }
  void write(std::string text) {
    out_ = std::move(text);
    asio::async_write(socket_, asio::buffer(out_),
                      [self = shared_from_this()](const asio::error_code&, std::size_t) {
                        asio::error_code ignored;
                        self->socket_.shutdown(asio::socket_base::shutdown_send, ignored);
                        self->close();
                      });
  }

  MetricsServer& metrics_;
  Socket socket_;
  asio::streambuf in_;
  asio::steady_timer deadline_;
  std::string out_;
};

MetricsServer::MetricsServer(asio::io_context& io, const Server& server, MetricsOptions options)
    : io_(io), server_(server), options_(std::move(options)), acceptor_(io), retry_(io) {}

MetricsServer::~MetricsServer() {
  stop();
}

void MetricsServer::start() {
  std::string why;
  const auto address = proto::parse_address(options_.listen, why, true);
  if (!address) throw std::runtime_error("metrics.listen: " + why);
  if (address->kind == proto::Address::Kind::unix_socket) {
    bound_ = bind_unix_listener(address->path, 0660);
    own_socket_ = true;
    acceptor_.assign(asio::generic::stream_protocol(AF_UNIX, 0), bound_.fd.release());
  } else {
    asio::ip::tcp::acceptor tcp(io_);
    asio::error_code ec;
    const auto ip = asio::ip::make_address(address->host, ec);
    asio::ip::tcp::resolver resolver(io_);
    asio::ip::tcp::endpoint endpoint;
    if (!ec) {
      endpoint = asio::ip::tcp::endpoint(ip, address->port);
    } else {
      const auto found = resolver.resolve(address->host, std::to_string(address->port), ec);
      if (ec || found.empty()) {
        throw std::runtime_error("metrics.listen: cannot resolve '" + address->host + "'");
      }
      endpoint = found.begin()->endpoint();
    }
    tcp.open(endpoint.protocol());
    tcp.set_option(asio::socket_base::reuse_address(true));
    tcp.bind(endpoint, ec);
    if (ec) {
      throw std::runtime_error("metrics.listen: cannot bind " + options_.listen + ": " +
                               ec.message());
    }
    tcp.listen(asio::socket_base::max_listen_connections);
    const int family = endpoint.protocol().family();
    acceptor_.assign(asio::generic::stream_protocol(family, IPPROTO_TCP), tcp.release());
  }
  accept();
}

std::string MetricsServer::endpoint() const {
  if (own_socket_) return options_.listen;
  asio::error_code ec;
  const auto local = acceptor_.local_endpoint(ec);
  if (ec) return options_.listen;
  // The generic endpoint holds a sockaddr; asio's tcp endpoint reads it.
  asio::ip::tcp::endpoint tcp;
  std::memcpy(tcp.data(), local.data(), std::min<std::size_t>(local.size(), tcp.capacity()));
  tcp.resize(local.size());
  const auto host =
      tcp.address().is_v6() ? "[" + tcp.address().to_string() + "]" : tcp.address().to_string();
  return "tcp:" + host + ":" + std::to_string(tcp.port());
}

void MetricsServer::stop() {
  if (stopped_) return;
  stopped_ = true;
  asio::error_code ec;
  acceptor_.close(ec);
  retry_.cancel();
  for (auto& [ptr, weak] : std::unordered_map<Session*, std::weak_ptr<Session>>(sessions_)) {
    if (auto s = weak.lock()) s->close();
  }
  sessions_.clear();
  if (own_socket_) {
    std::string why;
    if (const auto a = proto::parse_address(options_.listen, why, true)) {
      unlink_if_ours(a->path, bound_);
    }
  }
}

void MetricsServer::accept() {
  acceptor_.async_accept([this](const asio::error_code& ec, Socket socket) {
    if (stopped_ || ec == asio::error::operation_aborted) return;
    if (ec) {
      // EMFILE and the like: pause instead of spinning.
      spdlog::error("metrics endpoint: accept failed: {}", ec.message());
      retry_.expires_after(std::chrono::milliseconds(200));
      retry_.async_wait([this](const asio::error_code& e) {
        if (!e) accept();
      });
      return;
    }
    auto session = std::make_shared<Session>(*this, std::move(socket));
    sessions_.emplace(session.get(), session);
    if (sessions_.size() > kMaxConnections) {
      session->refuse(refusal("503 Service Unavailable", "too many scrapes at once"));
    } else {
      session->start();
    }
    accept();
  });
}

}  // namespace qbus::daemon
