// A Sink that counts what the broker tells it and stores nothing, so that it allocates
// nothing itself: for the steady-state allocation tests and the broker microbenchmarks.
#pragma once

#include <cstdint>
#include <string_view>

#include "broker/types.hpp"

namespace qbus::broker::fakes {

class CountingSink : public Sink {
 public:
  void deliver(PeerId, std::uint64_t correlation, bool last, const Delivery& d) override {
    ++delivered;
    batches += last ? 1 : 0;
    bytes += d.payload.size();
    last_correlation = correlation;
    last_request_id = d.request_id;
  }
  void fail(PeerId, std::uint64_t, Errc, std::string_view) override { ++failed; }
  void confirm(PeerId, std::uint64_t) override {}
  void resume(PeerId) override {}
  bool wants_more(PeerId) override { return true; }
  bool has_exited(PeerId, Clock::time_point) override { return false; }
  void denied(PeerId, Operation, std::string_view, int) override { ++denials; }
  void cut_off(PeerId, Errc, std::string_view) override { ++cut; }

  std::uint64_t delivered = 0;
  std::uint64_t cut = 0;
  std::uint64_t batches = 0;
  std::uint64_t bytes = 0;
  std::uint64_t failed = 0;
  std::uint64_t denials = 0;
  std::uint64_t last_correlation = 0;
  std::uint64_t last_request_id = 0;
};

}  // namespace qbus::broker::fakes
