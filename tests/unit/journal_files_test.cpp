// Unit tests of the journal's files (daemon/src/storage/files.hpp) and of the segment
// format over them: the POSIX directory's calls and errors, and with the fault-injecting
// directory (fault_dir.hpp) what a power loss leaves: every record a sync covered, in
// order and intact, whatever part of the unsynced bytes survives; and ENOSPC named.
#include <gtest/gtest.h>

#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "fault_dir.hpp"
#include "storage/files.hpp"
#include "storage/journal_format.hpp"

namespace qbus::storage {
namespace {

std::vector<std::byte> record_of(std::mt19937_64& rng, std::size_t size) {
  std::vector<std::byte> r(size);
  for (auto& b : r)
    b = std::byte(rng() & 0xFF);
  return r;
}

std::vector<std::vector<std::byte>> read_records(Dir& dir, const std::string& name,
                                                 ReadReport& report) {
  std::vector<std::byte> file;
  EXPECT_TRUE(dir.read(name, file).ok());
  std::vector<std::vector<std::byte>> out;
  EXPECT_TRUE(read_segment(
      file, [&](Bytes r) { out.emplace_back(r.begin(), r.end()); }, report));
  return out;
}

class TempDir {
 public:
  TempDir() {
    std::string t = (std::filesystem::temp_directory_path() / "qbus-journal-XXXXXX").string();
    path_ = ::mkdtemp(t.data());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(JournalFiles, APosixDirectoryAppendsSyncsReadsTruncatesListsAndRemoves) {
  TempDir tmp;
  IoStatus st;
  auto dir = open_posix_dir(tmp.path(), st);
  ASSERT_TRUE(dir) << st.message();
  std::unique_ptr<AppendFile> f;
  ASSERT_TRUE(dir->open_append("0000000000000001.qj", f).ok());
  std::vector<std::byte> bytes = segment_header(1);
  SegmentWriter w;
  const std::string hello = "hello";
  w.add(Bytes(reinterpret_cast<const std::byte*>(hello.data()), hello.size()), bytes);
  ASSERT_TRUE(f->append(bytes).ok());
  ASSERT_TRUE(f->sync().ok());
  ASSERT_TRUE(dir->sync().ok());
  EXPECT_EQ(f->size(), bytes.size());

  ReadReport report;
  auto got = read_records(*dir, "0000000000000001.qj", report);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(got[0].data()), got[0].size()), hello);

  // Reopened, it appends at its end; truncated, back to the header.
  f.reset();
  ASSERT_TRUE(dir->open_append("0000000000000001.qj", f).ok());
  EXPECT_EQ(f->size(), bytes.size());
  ASSERT_TRUE(f->truncate(kFileHeaderSize).ok());
  EXPECT_EQ(read_records(*dir, "0000000000000001.qj", report).size(), 0u);

  std::vector<std::string> names;
  ASSERT_TRUE(dir->list(names).ok());
  EXPECT_EQ(names, std::vector<std::string>{"0000000000000001.qj"});
  ASSERT_TRUE(dir->remove("0000000000000001.qj").ok());
  const IoStatus gone = dir->remove("0000000000000001.qj");
  EXPECT_EQ(gone.error, ENOENT);
  EXPECT_EQ(gone.message(), "remove 0000000000000001.qj: No such file or directory");
}

TEST(JournalFiles, AMissingDirectoryIsNamedInTheError) {
  IoStatus st;
  EXPECT_FALSE(open_posix_dir("/nonexistent/qbus-state", st));
  EXPECT_EQ(st.message(), "open /nonexistent/qbus-state: No such file or directory");
}

TEST(JournalFiles, APowerLossKeepsEverySyncedRecordWhateverPartOfTheRestSurvives) {
  for (const std::uint64_t seed : {1u, 7u, 99u}) {
    std::mt19937_64 rng(seed);
    fakes::FaultDir dir;
    std::unique_ptr<AppendFile> f;
    ASSERT_TRUE(dir.open_append("j", f).ok());
    ASSERT_TRUE(f->append(segment_header(1)).ok());
    SegmentWriter w;
    std::vector<std::vector<std::byte>> written;
    std::size_t synced_records = 0;
    for (int i = 0; i < 200; ++i) {
      written.push_back(record_of(rng, rng() % 5 == 0 ? rng() % 70'000 : rng() % 200));
      std::vector<std::byte> out;
      w.add(written.back(), out);
      ASSERT_TRUE(f->append(out).ok());
      if (rng() % 7 == 0) {  // a group commit
        ASSERT_TRUE(f->sync().ok());
        synced_records = written.size();
      }
    }
    // A prefix of the unsynced bytes reached the disk: the last write was cut off.
    dir.power_loss([&](std::size_t unsynced) { return unsynced == 0 ? 0 : rng() % unsynced; });
    ReadReport report;
    const auto got = read_records(dir, "j", report);
    ASSERT_GE(got.size(), synced_records) << "seed " << seed;
    for (std::size_t i = 0; i < got.size(); ++i)
      ASSERT_EQ(got[i], written[i]) << "seed " << seed << " record " << i;
    EXPECT_TRUE(report.skipped.empty()) << "seed " << seed;
  }
}

TEST(JournalFiles, ForgettingEveryUnsyncedByteLeavesExactlyTheSyncedRecords) {
  fakes::FaultDir dir;
  std::unique_ptr<AppendFile> f;
  ASSERT_TRUE(dir.open_append("j", f).ok());
  ASSERT_TRUE(f->append(segment_header(1)).ok());
  SegmentWriter w;
  std::mt19937_64 rng(3);
  for (int i = 0; i < 50; ++i) {
    std::vector<std::byte> out;
    w.add(record_of(rng, 100), out);
    ASSERT_TRUE(f->append(out).ok());
    if (i == 29) {
      ASSERT_TRUE(f->sync().ok());
    }
  }
  dir.power_loss();
  ReadReport report;
  EXPECT_EQ(read_records(dir, "j", report).size(), 30u);
  EXPECT_EQ(report.torn_bytes, 0u);
}

TEST(JournalFiles, AFullDiskFailsTheAppendWithENOSPCNamingTheFile) {
  fakes::FaultDir dir;
  dir.set_capacity(100);
  std::unique_ptr<AppendFile> f;
  ASSERT_TRUE(dir.open_append("0000000000000002.qj", f).ok());
  const std::vector<std::byte> big(150, std::byte{1});
  const IoStatus st = f->append(big);
  EXPECT_EQ(st.error, ENOSPC);
  EXPECT_EQ(st.message(), "write 0000000000000002.qj: No space left on device");
  EXPECT_EQ(f->size(), 100u) << "what fitted was written: the caller truncates back";
  ASSERT_TRUE(f->truncate(0).ok());
  dir.set_capacity(1000);
  EXPECT_TRUE(f->append(big).ok()) << "it works again once there is room";
}

}  // namespace
}  // namespace qbus::storage
