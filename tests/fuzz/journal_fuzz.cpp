// libFuzzer target for the journal's segment reader (docs/journal.md).
//
// The input is what a crash, a bad disk or a hostile file could leave in a segment: it is
// read once as a whole file and once behind a valid header (so that most inputs reach the
// fragment parser). Whatever comes back must be consistent with the input's size, and the
// records read, written again into a fresh segment, must read back the same with nothing
// torn or skipped. A violated invariant aborts, so both libFuzzer and the plain replay
// driver report it as a crash.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <vector>

#include "storage/journal_format.hpp"

namespace {

using namespace qbus::storage;

[[noreturn]] void violated(const char* what, int line) {
  std::fprintf(stderr, "journal_fuzz: invariant violated at line %d: %s\n", line, what);
  std::abort();
}
#define CHECK(cond) \
  if (!(cond)) violated(#cond, __LINE__)

void check_segment(Bytes file) {
  std::vector<std::vector<std::byte>> records;
  std::uint64_t total = 0;
  ReadReport report;
  const bool ok = read_segment(
      file,
      [&](Bytes r) {
        total += r.size();
        records.emplace_back(r.begin(), r.end());
      },
      report);
  CHECK(ok == (report.header == ReadReport::Header::ok));
  if (!ok) {
    CHECK(records.empty());
    return;
  }
  CHECK(report.records == records.size());
  CHECK(total <= file.size());
  CHECK(report.end <= file.size());
  CHECK(report.end + report.torn_bytes <= file.size());
  std::uint64_t last = 0;
  for (const auto& s : report.skipped) {
    CHECK(s.offset + s.bytes <= file.size());
    CHECK(s.offset >= kFileHeaderSize);
    last = s.offset;
  }
  CHECK(last <= file.size());

  // What was read writes and reads back exactly.
  std::vector<std::byte> again = segment_header(report.segment);
  SegmentWriter w;
  for (const auto& r : records)
    w.add(r, again);
  std::vector<std::vector<std::byte>> back;
  ReadReport second;
  CHECK(read_segment(
      again, [&](Bytes r) { back.emplace_back(r.begin(), r.end()); }, second));
  CHECK(back == records);
  CHECK(second.skipped.empty());
  CHECK(second.torn_bytes == 0);
  CHECK(second.end == again.size());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const Bytes input(reinterpret_cast<const std::byte*>(data), size);
  check_segment(input);
  std::vector<std::byte> file = segment_header(1);
  file.insert(file.end(), input.begin(), input.end());
  check_segment(file);
  return 0;
}
