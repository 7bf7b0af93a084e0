#include "net/tcp_auth.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "net/connection.hpp"
#include "net/server.hpp"

namespace qbus::daemon {
namespace {

constexpr std::size_t kMaxTrackedAuthAddresses = 4096;
constexpr std::uint32_t kFreeAuthFailures = 3;
constexpr auto kMaxAuthDelay = std::chrono::seconds(10);
constexpr auto kAuthMemory = std::chrono::minutes(15);
// Unauthenticated TCP connections: from one source, and in all. A source's cap is what
// bounds its guesses in flight, each held until its refusal goes out.
constexpr std::uint32_t kMaxPreauthPerAddress = 8;
constexpr std::uint32_t kMaxPreauthTotal = 256;

// Compares in time that depends only on the expected token's length, so a client cannot
// learn a prefix from how fast it is refused.
bool token_matches(std::string_view given, std::string_view expected) {
  unsigned diff = given.size() != expected.size() ? 1u : 0u;
  for (std::size_t i = 0; i < expected.size(); ++i) {
    const char g = i < given.size() ? given[i] : '\0';
    diff |= static_cast<unsigned char>(g ^ expected[i]);
  }
  return diff == 0;
}

}  // namespace

TcpAuth::TcpAuth(asio::io_context& io, Server& server, std::string token)
    : server_(server), token_(std::move(token)), timer_(io) {}

std::string TcpAuth::source_key(const asio::ip::address& a) {
  if (a.is_v6()) {
    const auto v6 = a.to_v6();
    if (v6.is_v4_mapped()) return asio::ip::make_address_v4(asio::ip::v4_mapped, v6).to_string();
    auto bytes = v6.to_bytes();
    std::fill(bytes.begin() + 8, bytes.end(), static_cast<unsigned char>(0));
    return asio::ip::address_v6(bytes).to_string() + "/64";
  }
  return a.to_string();
}

std::string_view TcpAuth::admit(const Connection& c, std::chrono::milliseconds handshake_timeout) {
  const std::string& source = c.remote_ip();
  if (auto it = preauth_by_source_.find(source);
      it != preauth_by_source_.end() && it->second >= kMaxPreauthPerAddress) {
    return "too many unauthenticated connections from your address";
  }
  if (preauth_.size() >= kMaxPreauthTotal) {
    if (const auto why = evict_for(c.id(), source); !why.empty()) return why;
  }
  // Bounded whatever the connection waits for: the handshake timeout for its HELLO, then
  // at most the longest refusal delay.
  const auto deadline = broker::Clock::now() + handshake_timeout + kMaxAuthDelay;
  preauth_.push_back(Preauth{c.id(), source, deadline});
  ++preauth_by_source_[source];
  arm_timer();
  return {};
}

std::string_view TcpAuth::evict_for(broker::PeerId newcomer, const std::string& source) {
  // Whoever holds the most gives up its oldest: a newcomer from a quieter source always
  // gets in, and no source can hold the table against the others.
  std::uint32_t most = 0;
  for (const auto& [s, n] : preauth_by_source_)
    most = std::max(most, n);
  const auto victim = std::find_if(preauth_.begin(), preauth_.end(), [&](const Preauth& p) {
    return preauth_by_source_.at(p.source) == most;
  });
  if (victim->source == source) {
    return "too many unauthenticated connections, and your address holds the most";
  }
  const auto c = server_.connection(victim->id);  // a strong reference: closing it forgets it
  release(victim->id);
  if (!c) return {};
  const std::uint64_t evictions = ++counters_.evicted;
  if (evictions <= 3 || evictions % 100 == 0) {
    log_with(c->log_fields(Errc::too_many_connections), spdlog::level::warn,
             "closing unauthenticated client {} ({}) to make room for client {}: {} TCP "
             "connections are waiting to authenticate ({} evictions so far)",
             c->id(), c->description(), newcomer, kMaxPreauthTotal, evictions);
  }
  if (c->closing()) {
    c->close();  // going anyway
  } else {
    c->reject(Errc::too_many_connections,
              "closed to make room for a newer connection: the broker's table of "
              "unauthenticated TCP connections was full, and your address held the most "
              "of them");
  }
  return {};
}

void TcpAuth::release(broker::PeerId id) {
  const auto it =
      std::find_if(preauth_.begin(), preauth_.end(), [&](const Preauth& p) { return p.id == id; });
  if (it == preauth_.end()) return;
  if (auto n = preauth_by_source_.find(it->source); --n->second == 0) {
    preauth_by_source_.erase(n);
  }
  preauth_.erase(it);
}

void TcpAuth::arm_timer() {
  if (preauth_.empty()) return;
  const auto next =
      std::min_element(preauth_.begin(), preauth_.end(), [](const Preauth& x, const Preauth& y) {
        return x.deadline < y.deadline;
      })->deadline;
  // Armed for an earlier one already: that wake-up re-arms for the rest.
  if (armed_for_ != broker::Clock::time_point{} && armed_for_ <= next) return;
  armed_for_ = next;
  timer_.expires_at(next);
  timer_.async_wait([this](const asio::error_code& ec) {
    if (ec) return;  // re-armed for an earlier deadline
    armed_for_ = {};
    expire();
  });
}

void TcpAuth::expire() {
  const auto now = broker::Clock::now();
  std::vector<std::shared_ptr<Connection>> due;
  for (const auto& p : preauth_) {
    if (p.deadline > now) continue;
    if (auto c = server_.connection(p.id)) due.push_back(std::move(c));
  }
  for (const auto& c : due) {
    release(c->id());
    ++counters_.timed_out;
    log_with(c->log_fields(Errc::handshake_timeout), spdlog::level::warn,
             "client {} ({}): closed: still unauthenticated after the handshake timeout "
             "plus the longest refusal delay",
             c->id(), c->description());
    c->preauth_expired();
  }
  server_.end_of_batch();
  arm_timer();
}

TcpAuth::Verdict TcpAuth::check(std::string_view token, const std::string& source) {
  if (token_matches(token, token_)) return Verdict{true};
  // The delay follows the failures before this one, so the first few are answered at once.
  const auto d = delay(source);
  ++counters_.wrong_token;
  return Verdict{false, d, failed(source)};
}

TcpAuth::Verdict TcpAuth::handshake_failed(const std::string& source) {
  const auto d = delay(source);
  ++counters_.tls_handshake;
  return Verdict{false, d, failed(source)};
}

std::chrono::milliseconds TcpAuth::delay(const std::string& source) const {
  auto it = failures_.find(source);
  // After kFreeAuthFailures failures, each further attempt waits 250 ms, then doubling.
  if (it == failures_.end() || it->second.count < kFreeAuthFailures ||
      broker::Clock::now() - it->second.last > kAuthMemory) {
    return std::chrono::milliseconds(0);
  }
  const auto shift = std::min<std::uint32_t>(it->second.count - kFreeAuthFailures, 16);
  return std::min<std::chrono::milliseconds>(std::chrono::milliseconds(250LL << shift),
                                             kMaxAuthDelay);
}

std::uint32_t TcpAuth::failed(const std::string& source) {
  const auto now = broker::Clock::now();
  if (failures_.size() >= kMaxTrackedAuthAddresses && !failures_.count(source)) {
    std::erase_if(failures_, [&](const auto& e) { return now - e.second.last > kAuthMemory; });
    if (failures_.size() >= kMaxTrackedAuthAddresses) {
      // Still full: forget the address heard from least recently, not an arbitrary one.
      failures_.erase(std::min_element(
          failures_.begin(), failures_.end(),
          [](const auto& x, const auto& y) { return x.second.last < y.second.last; }));
    }
  }
  auto& f = failures_[source];
  if (now - f.last > kAuthMemory) f.count = 0;
  ++f.count;
  f.last = now;
  return f.count;
}

}  // namespace qbus::daemon
