// ByteBuffer: the append/consume cycles of a connection's input and output buffers.
#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "alloc_counter.hpp"
#include "qbus/proto/buffer.hpp"

namespace qbus::micro {
namespace {

using proto::ByteBuffer;

// Append n bytes, then consume them: the buffer empties and rewinds every time.
void BM_ByteBuffer_AppendConsume(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  std::vector<std::byte> src(n, std::byte{0x5a});
  ByteBuffer buf;
  buf.append(n);  // warm
  buf.clear();
  const auto allocs = allocations();
  for (auto _ : state) {
    auto dst = buf.append(n);
    std::memcpy(dst.data(), src.data(), n);
    benchmark::DoNotOptimize(buf.readable().data());
    benchmark::ClobberMemory();
    buf.consume(n);
  }
  report_allocations(state, allocs, state.iterations());
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_ByteBuffer_AppendConsume)->Arg(64)->Arg(1024);

// A stream: 64 KiB reads (prepare/commit) consumed in frame-sized pieces, so a partial
// frame is left behind at the end of most reads and make_room() compacts it to the front.
// One item is one frame consumed.
void BM_ByteBuffer_Stream(benchmark::State& state) {
  constexpr std::size_t kRead = 64 * 1024;
  const auto frame = static_cast<std::size_t>(state.range(0));
  std::vector<std::byte> src(kRead, std::byte{0x5a});
  ByteBuffer buf;
  buf.prepare(kRead + frame);  // warm
  std::int64_t frames = 0;
  const auto allocs = allocations();
  for (auto _ : state) {
    auto dst = buf.prepare(kRead);
    std::memcpy(dst.data(), src.data(), kRead);
    buf.commit(kRead);
    while (buf.size() >= frame) {
      benchmark::DoNotOptimize(buf.readable().data());
      buf.consume(frame);
      ++frames;
    }
  }
  benchmark::ClobberMemory();
  report_allocations(state, allocs, static_cast<std::uint64_t>(frames));
  state.SetItemsProcessed(frames);
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(kRead));
}
BENCHMARK(BM_ByteBuffer_Stream)->Arg(99)->Arg(1059);  // 64 B and 1 KiB SEND frames with kKey

}  // namespace
}  // namespace qbus::micro
