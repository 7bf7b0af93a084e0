// What the broker core tells its Sink, recorded for unit tests, plus small helpers the
// broker tests share.
#pragma once

#include <map>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "broker/types.hpp"
#include "fake_backing.hpp"

namespace qbus::broker::fakes {

// A copy of what the core handed to Sink::deliver, with the region it named and how many
// backings had been destroyed when it was handed over.
struct Delivered {
  PeerId to = 0;
  std::uint64_t correlation = 0;
  bool last = false;
  std::string key;
  Identity sender;
  std::uint64_t request_id = 0;
  std::string payload;
  RegionRef region{};
  std::size_t destroyed_before = 0;
  // From Delivery::extras: 0, 1 and none when the delivery had none.
  std::uint64_t tag = 0;
  std::uint32_t count = 1;
  std::string headers;
  bool has_extras = false;
};

struct Failure {
  PeerId to = 0;
  std::uint64_t correlation = 0;
  Errc code = Errc::ok;
  std::string text;
};

// What the core reported through Sink::denied.
struct Denial {
  PeerId peer = 0;
  Operation op{};
  std::string key;
  int rule = 0;
  bool operator==(const Denial&) const = default;
};

struct Confirmation {
  PeerId to = 0;
  std::uint64_t correlation = 0;
  bool operator==(const Confirmation&) const = default;
};

// Records everything the core says; wants_more answers per peer (true unless set), and
// has_exited is false until set_exited.
class RecordingSink : public Sink {
 public:
  RecordingSink() = default;
  explicit RecordingSink(const FakeBacking& backing) : backing_(&backing) {}

  void deliver(PeerId to, std::uint64_t correlation, bool last, const Delivery& d) override {
    deliveries.push_back(
        Delivered{to, correlation, last, std::string(d.key), d.sender, d.request_id,
                  std::string(reinterpret_cast<const char*>(d.payload.data()), d.payload.size()),
                  d.region, backing_ ? backing_->destroyed.size() : 0});
    if (d.extras) {
      Delivered& last_one = deliveries.back();
      last_one.has_extras = true;
      last_one.tag = d.extras->tag;
      last_one.count = d.extras->count;
      last_one.headers.assign(reinterpret_cast<const char*>(d.extras->headers.data()),
                              d.extras->headers.size());
    }
  }
  void fail(PeerId to, std::uint64_t correlation, Errc code, std::string_view text) override {
    failures.push_back(Failure{to, correlation, code, std::string(text)});
  }
  void confirm(PeerId to, std::uint64_t correlation) override {
    confirms.push_back(Confirmation{to, correlation});
  }
  void resume(PeerId producer) override { resumes.push_back(producer); }
  bool wants_more(PeerId peer) override {
    auto it = wants_more_.find(peer);
    return it == wants_more_.end() || it->second;
  }

  bool has_exited(PeerId peer, Clock::time_point) override {
    ++exit_checks;
    return exited_.count(peer) != 0;
  }

  void denied(PeerId peer, Operation op, std::string_view key, int rule) override {
    denials.push_back(Denial{peer, op, std::string(key), rule});
  }
  void cut_off(PeerId peer, Errc, std::string_view) override { cut.push_back(peer); }

  void set_wants_more(PeerId peer, bool value) { wants_more_[peer] = value; }
  // From now on has_exited(peer) is true, as when the edge saw the process exit.
  void set_exited(PeerId peer) { exited_.insert(peer); }

  std::vector<Delivered> deliveries;
  std::vector<Failure> failures;
  std::vector<Confirmation> confirms;
  std::vector<PeerId> resumes;
  std::vector<PeerId> cut;  // peers cut_off (slow subject subscribers)
  std::vector<Denial> denials;
  std::size_t exit_checks = 0;

 private:
  const FakeBacking* backing_ = nullptr;
  std::map<PeerId, bool> wants_more_;
  std::set<PeerId> exited_;
};

inline Bytes bytes_of(std::string_view s) {
  return std::as_bytes(std::span<const char>(s.data(), s.size()));
}

inline QueueOptions options(std::uint32_t max_messages, std::uint64_t max_bytes,
                            Overflow overflow) {
  QueueOptions o;
  o.max_messages = max_messages;
  o.max_bytes = max_bytes;
  o.overflow = overflow;
  return o;
}

}  // namespace qbus::broker::fakes
