// Unit tests of the journal's on-disk format (daemon/src/storage/journal_format.hpp):
// CRC-32C against published check values, records of random sizes (fixed seeds) through
// the block grid and back, a tail torn at every byte, damage in the middle skipped at the
// next block, and headers of other files and versions refused.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "storage/crc32c.hpp"
#include "storage/journal_format.hpp"

namespace qbus::storage {
namespace {

Bytes as_bytes(std::string_view s) {
  return Bytes(reinterpret_cast<const std::byte*>(s.data()), s.size());
}

std::vector<std::byte> random_record(std::mt19937_64& rng, std::size_t size) {
  std::vector<std::byte> r(size);
  for (auto& b : r)
    b = std::byte(rng() & 0xFF);
  return r;
}

// A segment holding `records`, and the offset each record's first fragment starts at.
struct Segment {
  std::vector<std::byte> bytes = segment_header(7);
  std::vector<std::uint64_t> starts;
  SegmentWriter writer;
  void add(Bytes record) {
    starts.push_back(bytes.size());
    writer.add(record, bytes);
  }
};

std::vector<std::vector<std::byte>> read_all(Bytes file, ReadReport& report) {
  std::vector<std::vector<std::byte>> out;
  const bool ok = read_segment(
      file, [&](Bytes r) { out.emplace_back(r.begin(), r.end()); }, report);
  EXPECT_TRUE(ok);
  return out;
}

TEST(JournalFormat, Crc32cMatchesThePublishedCheckValues) {
  EXPECT_EQ(crc32c(as_bytes("123456789")), 0xE3069283u);  // the catalogue's check value
  const std::vector<std::byte> zeros(32, std::byte{0});
  EXPECT_EQ(crc32c(zeros), 0x8A9136AAu);  // RFC 3720, B.4
  const std::vector<std::byte> ones(32, std::byte{0xFF});
  EXPECT_EQ(crc32c(ones), 0x62A8AB43u);
  // Extending is the same as one pass.
  EXPECT_EQ(crc32c_extend(crc32c(as_bytes("1234")), as_bytes("56789")), 0xE3069283u);
}

TEST(JournalFormat, RecordsOfRandomSizesComeBackWholeAndInOrder) {
  for (const std::uint64_t seed : {1u, 2u, 3u, 42u}) {
    std::mt19937_64 rng(seed);
    Segment s;
    std::vector<std::vector<std::byte>> written;
    for (int i = 0; i < 300; ++i) {
      // Mostly small, some spanning several blocks, some landing near a block's end.
      const std::size_t size = rng() % 8 == 0 ? rng() % (3 * kBlockSize) : rng() % 300;
      written.push_back(random_record(rng, size));
      s.add(written.back());
    }
    ASSERT_EQ(s.writer.offset(), s.bytes.size());
    ReadReport report;
    const auto got = read_all(s.bytes, report);
    EXPECT_EQ(got, written) << "seed " << seed;
    EXPECT_EQ(report.segment, 7u);
    EXPECT_EQ(report.records, written.size());
    EXPECT_EQ(report.end, s.bytes.size());
    EXPECT_EQ(report.torn_bytes, 0u);
    EXPECT_TRUE(report.skipped.empty());
  }
}

TEST(JournalFormat, EveryBlockBoundaryIsHandled) {
  // Record sizes that leave 0..8 bytes in a block, around the 7-byte header.
  for (std::size_t left = 0; left <= 8; ++left) {
    Segment s;
    const std::size_t first = kBlockSize - kFileHeaderSize - kFragmentHeaderSize - left;
    const std::vector<std::byte> a(first, std::byte{1}), b(10, std::byte{2}), empty;
    s.add(a);
    s.add(empty);
    s.add(b);
    ReadReport report;
    const auto got = read_all(s.bytes, report);
    ASSERT_EQ(got.size(), 3u) << left;
    EXPECT_EQ(got[0], a);
    EXPECT_TRUE(got[1].empty());
    EXPECT_EQ(got[2], b);
    EXPECT_TRUE(report.skipped.empty());
  }
}

TEST(JournalFormat, ATailTornAtAnyByteKeepsEveryRecordBeforeIt) {
  std::mt19937_64 rng(9);
  Segment s;
  std::vector<std::vector<std::byte>> written;
  for (int i = 0; i < 12; ++i) {
    written.push_back(random_record(rng, i == 5 ? kBlockSize + 100 : 1 + rng() % 200));
    s.add(written.back());
  }
  for (std::size_t cut = kFileHeaderSize; cut < s.bytes.size(); ++cut) {
    const Bytes file(s.bytes.data(), cut);
    ReadReport report;
    const auto got = read_all(file, report);
    // Whole records before the cut come back; the one it cut does not.
    std::size_t whole = 0;
    while (whole < written.size() &&
           (whole + 1 < s.starts.size() ? s.starts[whole + 1] : s.bytes.size()) <= cut)
      ++whole;
    ASSERT_EQ(got.size(), whole) << "cut at " << cut;
    for (std::size_t i = 0; i < whole; ++i)
      ASSERT_EQ(got[i], written[i]) << "cut at " << cut;
    EXPECT_TRUE(report.skipped.empty()) << "cut at " << cut;
    // The good data ends where the torn record began (after any zero trailer before it).
    if (whole < s.starts.size()) {
      EXPECT_GE(report.end, s.starts[whole]) << "cut at " << cut;
    }
    EXPECT_LE(report.end + report.torn_bytes, cut) << "cut at " << cut;
  }
}

TEST(JournalFormat, ATornTailOfZerosIsNotDamage) {
  Segment s;
  s.add(as_bytes("one"));
  const std::size_t good = s.bytes.size();
  s.bytes.resize(good + 5000, std::byte{0});  // preallocated, never written
  ReadReport report;
  const auto got = read_all(s.bytes, report);
  EXPECT_EQ(got.size(), 1u);
  EXPECT_EQ(report.end, good);
  EXPECT_EQ(report.torn_bytes, 0u);
}

TEST(JournalFormat, DamageInTheMiddleSkipsToTheNextBlockAndGoesOn) {
  std::mt19937_64 rng(5);
  Segment s;
  std::vector<std::vector<std::byte>> written;
  while (s.bytes.size() < 3 * kBlockSize) {
    written.push_back(random_record(rng, 100 + rng() % 400));
    s.add(written.back());
  }
  // Flip a byte inside the first record of block 1's interior.
  std::size_t victim = 0;
  while (s.starts[victim] < kBlockSize + 1000)
    ++victim;
  s.bytes[s.starts[victim] + kFragmentHeaderSize + 3] ^= std::byte{0x40};
  ReadReport report;
  const auto got = read_all(s.bytes, report);
  ASSERT_GE(report.skipped.size(), 1u);
  EXPECT_EQ(report.skipped[0].offset, s.starts[victim]);
  EXPECT_EQ(report.skipped[0].offset + report.skipped[0].bytes, 2 * kBlockSize);
  EXPECT_EQ(report.skipped[0].why, "checksum mismatch");
  // At most one more: the rest of a record that block 1 began, orphaned in block 2.
  ASSERT_LE(report.skipped.size(), 2u);
  if (report.skipped.size() == 2) {
    EXPECT_EQ(report.skipped[1].offset, 2 * kBlockSize);
  }
  EXPECT_EQ(report.torn_bytes, 0u);
  // Everything before the damage and everything starting in a later block is intact.
  std::vector<std::vector<std::byte>> expected;
  for (std::size_t i = 0; i < written.size(); ++i) {
    if (i < victim || s.starts[i] >= 2 * kBlockSize) expected.push_back(written[i]);
  }
  EXPECT_EQ(got, expected);
}

TEST(JournalFormat, OtherFilesAndOtherVersionsAreRefusedNeverMisread) {
  int calls = 0;
  const auto count = [&](Bytes) { ++calls; };
  ReadReport report;
  EXPECT_FALSE(read_segment(as_bytes("not a journal at all, just text....."), count, report));
  EXPECT_EQ(report.header, ReadReport::Header::not_a_journal);

  Segment s;
  s.add(as_bytes("x"));
  std::vector<std::byte> newer = s.bytes;
  newer[8] = std::byte{2};  // version 2, its header CRC made right
  std::vector<std::byte> head(newer.begin(), newer.begin() + 28);
  const std::uint32_t crc = crc32c(head);
  for (int i = 0; i < 4; ++i)
    newer[28 + i] = std::byte((crc >> (8 * i)) & 0xFF);
  EXPECT_FALSE(read_segment(newer, count, report));
  EXPECT_EQ(report.header, ReadReport::Header::unknown_version);
  EXPECT_EQ(report.version, 2u);

  std::vector<std::byte> damaged = s.bytes;
  damaged[20] ^= std::byte{1};
  EXPECT_FALSE(read_segment(damaged, count, report));
  EXPECT_EQ(report.header, ReadReport::Header::damaged);
  EXPECT_EQ(calls, 0);
}

}  // namespace
}  // namespace qbus::storage
