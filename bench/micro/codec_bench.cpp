// The wire codec: header decoding, SEND and DELIVER framing into a ByteBuffer, and the
// broker's per-read loop over a buffer of many SEND frames.
#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "alloc_counter.hpp"
#include "qbus/proto/buffer.hpp"
#include "qbus/proto/codec.hpp"

namespace qbus::micro {
namespace {

using proto::ByteBuffer;
using proto::Bytes;

constexpr std::string_view kKey = "bench.jobs";
constexpr std::uint32_t kMaxBody = proto::kMaxBodyCeiling;
// Frames appended before the output buffer is recycled, as a connection flushes a batch.
constexpr std::size_t kFlushBytes = 256 * 1024;

std::vector<std::byte> payload_of(std::size_t n) {
  std::vector<std::byte> p(n);
  for (std::size_t i = 0; i < n; ++i)
    p[i] = static_cast<std::byte>(i * 31 + 7);
  return p;
}

std::vector<std::byte> to_vector(Bytes b) {
  return {b.begin(), b.end()};
}

void BM_DecodeHeader(benchmark::State& state) {
  ByteBuffer buf;
  const auto payload = payload_of(64);
  proto::append_send(buf, 42, 0, kKey, payload);
  const auto frame = to_vector(buf.readable());
  for (auto _ : state) {
    benchmark::DoNotOptimize(frame.data());
    auto hr = proto::decode_header(frame, kMaxBody);
    benchmark::DoNotOptimize(hr);
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(proto::kHeaderSize));
}
BENCHMARK(BM_DecodeHeader);

// One SEND frame (header, key, payload) appended per iteration; the buffer is recycled
// every 256 KiB, so its memory is reused as a connection's output buffer is.
void BM_AppendSend(benchmark::State& state) {
  const auto payload = payload_of(static_cast<std::size_t>(state.range(0)));
  ByteBuffer out;
  proto::append_send(out, 1, 0, kKey, payload);  // warm: the buffer reaches its size
  out.clear();
  const auto frame = proto::kHeaderSize + proto::body_size(proto::Send{kKey, payload});
  std::uint64_t corr = 0;
  const auto allocs = allocations();
  for (auto _ : state) {
    proto::append_send(out, ++corr, 0, kKey, payload);
    if (out.size() >= kFlushBytes) {
      benchmark::DoNotOptimize(out.readable().data());
      benchmark::ClobberMemory();
      out.clear();
    }
  }
  benchmark::ClobberMemory();
  report_allocations(state, allocs, state.iterations());
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(frame));
}
BENCHMARK(BM_AppendSend)->Arg(64)->Arg(1024);

void BM_DecodeSend(benchmark::State& state) {
  const auto payload = payload_of(static_cast<std::size_t>(state.range(0)));
  ByteBuffer buf;
  proto::append_send(buf, 1, 0, kKey, payload);
  const auto frame = to_vector(buf.readable());
  const Bytes body = Bytes(frame).subspan(proto::kHeaderSize);
  for (auto _ : state) {
    benchmark::DoNotOptimize(body.data());
    proto::Send m;
    auto e = proto::decode_send(body, m);
    benchmark::DoNotOptimize(e);
    benchmark::DoNotOptimize(m);
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(frame.size()));
}
BENCHMARK(BM_DecodeSend)->Arg(64)->Arg(1024);

// What the broker writes per delivered message, and what the client does with it.
void BM_DeliverRoundTrip(benchmark::State& state) {
  const auto payload = payload_of(static_cast<std::size_t>(state.range(0)));
  proto::Deliver d;
  d.sender_pid = 4242;
  d.sender_uid = 1000;
  d.sender_client_id = 7;
  d.key = kKey;
  d.payload = payload;
  ByteBuffer buf;
  proto::append_deliver(buf, 1, proto::kFlagLast, d);
  buf.clear();
  const auto frame = proto::kHeaderSize + proto::body_size(d);
  std::uint64_t corr = 0;
  const auto allocs = allocations();
  for (auto _ : state) {
    proto::append_deliver(buf, ++corr, proto::kFlagLast, d);
    auto in = buf.readable();
    auto hr = proto::decode_header(in, kMaxBody);
    proto::Deliver got;
    auto e = proto::decode_deliver(in.subspan(proto::kHeaderSize, hr.header.body_size), got);
    benchmark::DoNotOptimize(e);
    benchmark::DoNotOptimize(got);
    buf.consume(proto::kHeaderSize + hr.header.body_size);
  }
  report_allocations(state, allocs, state.iterations());
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(frame));
}
BENCHMARK(BM_DeliverRoundTrip)->Arg(64)->Arg(1024);

// The broker's per-read path (Connection::process): split a read buffer of 1000
// concatenated SEND frames into headers and bodies and decode every body.
void BM_ParseSendBatch(benchmark::State& state) {
  constexpr std::int64_t kFrames = 1000;
  const auto payload = payload_of(static_cast<std::size_t>(state.range(0)));
  ByteBuffer buf;
  for (std::int64_t i = 0; i < kFrames; ++i)
    proto::append_send(buf, static_cast<std::uint64_t>(i + 1), 0, kKey, payload);
  const auto input = to_vector(buf.readable());
  const auto allocs = allocations();
  for (auto _ : state) {
    benchmark::DoNotOptimize(input.data());
    const Bytes in(input);
    std::size_t used = 0;
    std::int64_t frames = 0;
    while (true) {
      auto rest = in.subspan(used);
      auto hr = proto::decode_header(rest, kMaxBody);
      if (hr.status != proto::HeaderStatus::complete) break;
      const std::size_t size = proto::kHeaderSize + hr.header.body_size;
      if (rest.size() < size) break;
      proto::Send m;
      auto e = proto::decode_send(rest.subspan(proto::kHeaderSize, hr.header.body_size), m);
      benchmark::DoNotOptimize(e);
      benchmark::DoNotOptimize(m);
      used += size;
      ++frames;
    }
    if (frames != kFrames) {
      state.SkipWithError("parsed the wrong number of frames");
      break;
    }
  }
  report_allocations(state, allocs, state.iterations() * kFrames);
  state.SetItemsProcessed(state.iterations() * kFrames);
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(input.size()));
}
BENCHMARK(BM_ParseSendBatch)->Arg(64)->Arg(1024);

}  // namespace
}  // namespace qbus::micro
