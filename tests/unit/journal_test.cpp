// The journal of durable queues (daemon/src/storage/journal.hpp) over a disk that forgets
// what no sync covered (fault_dir.hpp), driven through a real Broker: what each fsync
// policy promises survives a crash and a power loss, settled messages stay settled, the
// disk use of a queue that keeps up stays bounded, and a damaged, torn, incomplete, full or
// newer journal is handled as docs/journal.md says.
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <mutex>

#include "broker_fixture.hpp"
#include "fault_dir.hpp"
#include "storage/crc32c.hpp"
#include "storage/journal.hpp"

namespace qbus::storage {
namespace {

using broker::QueueOptions;
using broker::SendResult;
using fakes::FaultDir;
using namespace std::chrono_literals;

// The test's disk, lent to one journal after another (the journal owns its Dir).
class DirRef final : public Dir {
 public:
  explicit DirRef(FaultDir& d) : d_(d) {}
  IoStatus open_append(const std::string& n, std::unique_ptr<AppendFile>& out) override {
    return d_.open_append(n, out);
  }
  IoStatus read(const std::string& n, std::vector<std::byte>& out) override {
    return d_.read(n, out);
  }
  IoStatus list(std::vector<std::string>& names) override { return d_.list(names); }
  IoStatus remove(const std::string& n) override { return d_.remove(n); }
  IoStatus sync() override { return d_.sync(); }

 private:
  FaultDir& d_;
};

QueueOptions durable(proto::Fsync f) {
  QueueOptions o;
  o.durable = true;
  o.fsync = f;
  return o;
}

class JournalTest : public broker::fakes::BrokerFixture {
 protected:
  ~JournalTest() override { close(); }

  // A new journal on the disk, replayed into a new broker (a restart).
  RecoveryStats open() {
    close();
    std::string error;
    journal_ = Journal::open(std::make_unique<DirRef>(disk_), settings_, error);
    EXPECT_TRUE(journal_) << error;
    RecoveryStats stats;
    recovered_ = journal_->recover(broker(), now_, stats, error);
    error_ = error;
    broker().set_journal(journal_.get());
    if (recovered_) {
      journal_->start([this] {
        std::lock_guard lk(mu_);
        ++wakes_;
        cv_.notify_all();
      });
    }
    return stats;
  }
  // The broker and the journal go; with `crash`, what the journal had pending is lost.
  void close(bool crash = false) {
    destroy_broker();
    if (journal_) crash ? journal_->abandon() : journal_->stop();
    journal_.reset();
  }
  // Waits until the journal says `ticket` is durable or failed.
  JournalProgress wait_for(std::uint64_t ticket) {
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    for (;;) {
      const JournalProgress p = journal_->progress();
      if (p.durable_through >= ticket || p.failed_through >= ticket) return p;
      if (std::chrono::steady_clock::now() > deadline) {
        ADD_FAILURE() << "ticket " << ticket << " never settled";
        return p;
      }
      std::unique_lock lk(mu_);
      cv_.wait_for(lk, 50ms);
    }
  }
  std::uint64_t put_durable(broker::PeerId from, std::string_view key, std::string_view payload,
                            const broker::MessageProps& props = {}) {
    const auto out = broker().send(from, key, broker::fakes::bytes_of(payload), now_, props);
    EXPECT_EQ(out.result, SendResult::accepted) << out.text;
    EXPECT_NE(out.ticket, 0u);
    return out.ticket;
  }
  std::vector<std::string> payloads_to(broker::PeerId peer) const {
    std::vector<std::string> out;
    for (const auto& d : sink_.deliveries)
      if (d.to == peer) out.push_back(d.payload);
    return out;
  }
  static std::string header_value(const std::string& block, std::string_view name) {
    std::string_view v;
    return proto::find_header(broker::fakes::bytes_of(block), name, v) ? std::string(v) : "<none>";
  }
  std::vector<std::string> drain(std::string_view key) {
    sink_.deliveries.clear();
    const broker::PeerId p = connect();
    receive_now(p, key, 1'000'000);
    return payloads_to(p);
  }

  FaultDir disk_;
  JournalSettings settings_;
  std::unique_ptr<Journal> journal_;
  bool recovered_ = false;
  std::string error_;
  std::mutex mu_;
  std::condition_variable cv_;
  int wakes_ = 0;
};

TEST_F(JournalTest, AConfirmedAlwaysSendSurvivesAPowerLoss) {
  open();
  const auto p = connect();
  ASSERT_EQ(declare_by(p, "jobs", durable(proto::Fsync::always)), Errc::ok);
  std::uint64_t last = 0;
  for (int i = 0; i < 200; ++i)
    last = put_durable(p, "jobs", "m" + std::to_string(i));
  const JournalProgress progress = wait_for(last);
  ASSERT_GE(progress.durable_through, last);
  close(true);
  disk_.power_loss();
  const RecoveryStats stats = open();
  ASSERT_TRUE(recovered_) << error_;
  EXPECT_EQ(stats.queues, 1u);
  EXPECT_EQ(stats.messages, 200u);
  const auto got = drain("jobs");
  ASSERT_EQ(got.size(), 200u);
  for (int i = 0; i < 200; ++i)
    EXPECT_EQ(got[static_cast<std::size_t>(i)], "m" + std::to_string(i));
}

TEST_F(JournalTest, ABatchSendIsConfirmedOnlyByTheFsyncThatCoversIt) {
  settings_.batch_ms = 5;
  open();
  const auto p = connect();
  ASSERT_EQ(declare_by(p, "jobs", durable(proto::Fsync::batch)), Errc::ok);
  // Whatever the journal called durable at any moment is on disk after a power loss; what
  // came after may be lost, and only from the end (the batch window).
  std::uint64_t confirmed = 0;
  std::vector<std::uint64_t> tickets;
  for (int i = 0; i < 3000; ++i) {
    tickets.push_back(put_durable(p, "jobs", "m" + std::to_string(i)));
    if (i % 500 == 499) confirmed = wait_for(tickets.back()).durable_through;
  }
  confirmed = std::max(confirmed, journal_->progress().durable_through);
  close(true);
  disk_.power_loss();
  open();
  ASSERT_TRUE(recovered_) << error_;
  const auto got = drain("jobs");
  const auto n_confirmed = static_cast<std::size_t>(
      std::upper_bound(tickets.begin(), tickets.end(), confirmed) - tickets.begin());
  ASSERT_GE(n_confirmed, 2500u);
  ASSERT_GE(got.size(), n_confirmed);
  for (std::size_t i = 0; i < got.size(); ++i)
    ASSERT_EQ(got[i], "m" + std::to_string(i)) << "a gap or a reorder at " << i;
}

TEST_F(JournalTest, ANoneSendSurvivesACrashOfTheBroker) {
  open();
  const auto p = connect();
  ASSERT_EQ(declare_by(p, "jobs", durable(proto::Fsync::none)), Errc::ok);
  std::uint64_t last = 0;
  for (int i = 0; i < 100; ++i)
    last = put_durable(p, "jobs", "m" + std::to_string(i));
  wait_for(last);
  close(true);  // the page cache survives a crash of the process: no power_loss
  open();
  EXPECT_EQ(drain("jobs").size(), 100u);
}

TEST_F(JournalTest, SettledMessagesStaySettledAndHeldOnesComeBackRedelivered) {
  open();
  const auto p = connect();
  ASSERT_EQ(declare_by(p, "jobs", durable(proto::Fsync::always)), Errc::ok);
  ASSERT_EQ(declare_by(p, "marker", durable(proto::Fsync::always)), Errc::ok);
  for (int i = 0; i < 10; ++i)
    put_durable(p, "jobs", "m" + std::to_string(i));
  const auto plain = connect();
  receive_now(plain, "jobs", 4);  // m0..m3, at most once: settled at delivery
  const auto acker = connect();
  sink_.deliveries.clear();
  broker().receive(acker, 77, "jobs", 3, 0, now_, true);  // m4..m6 held
  ASSERT_EQ(sink_.deliveries.size(), 3u);
  ASSERT_TRUE(broker().ack(acker, sink_.deliveries[0].tag, false, now_).error == Errc::ok);
  ASSERT_TRUE(broker().ack(acker, sink_.deliveries[1].tag, false, now_).error == Errc::ok);
  wait_for(put_durable(p, "marker", "end"));  // everything before it is on disk
  close(true);
  disk_.power_loss();
  const RecoveryStats stats = open();
  EXPECT_EQ(stats.redelivered, 1u);
  sink_.deliveries.clear();
  const auto c = connect();
  broker().receive(c, 5, "jobs", 100, 0, now_, true);
  std::vector<std::string> got;
  for (const auto& d : sink_.deliveries) {
    got.push_back(d.payload);
    if (d.payload == "m6") {
      EXPECT_EQ(d.count, 2u) << "m6 was delivered once before the crash";
    }
  }
  EXPECT_EQ(got, (std::vector<std::string>{"m6", "m7", "m8", "m9"}));
}

TEST_F(JournalTest, HeadersPrioritiesExpiryAndDelaysSurvive) {
  open();
  const auto p = connect();
  QueueOptions o = durable(proto::Fsync::always);
  o.priorities = 3;
  ASSERT_EQ(declare_by(p, "jobs", o), Errc::ok);
  std::vector<std::byte> headers;
  proto::append_header(headers, "trace", "t-1");
  broker::MessageProps with_headers(headers);
  put_durable(p, "jobs", "low", with_headers);
  broker::MessageProps high;
  high.priority = 2;
  put_durable(p, "jobs", "high", high);
  broker::MessageProps short_ttl;
  short_ttl.ttl_ms = 1;
  put_durable(p, "jobs", "expires", short_ttl);
  broker::MessageProps later;
  later.delay_ms = 60'000;
  const auto last = put_durable(p, "jobs", "later", later);
  wait_for(last);
  close(true);
  disk_.power_loss();
  advance(10ms);
  open();
  EXPECT_EQ(broker().find("jobs")->options().priorities, 3u);
  EXPECT_TRUE(broker().find("jobs")->options().durable);
  EXPECT_EQ(broker().find("jobs")->delayed(), 1u);
  sink_.deliveries.clear();
  const auto c = connect();
  receive_now(c, "jobs", 10);
  ASSERT_EQ(payloads_to(c), (std::vector<std::string>{"high", "low"}));
  EXPECT_EQ(header_value(sink_.deliveries[1].headers, "trace"), "t-1");
}

TEST_F(JournalTest, ADeletedQueueDoesNotComeBack) {
  settings_.segment_bytes = 64 * 1024;
  open();
  const auto p = connect();
  ASSERT_EQ(declare_by(p, "gone", durable(proto::Fsync::always)), Errc::ok);
  ASSERT_EQ(declare_by(p, "kept", durable(proto::Fsync::always)), Errc::ok);
  const std::string kb(1024, 'x');
  for (int i = 0; i < 100; ++i)
    put_durable(p, "gone", kb);
  ASSERT_TRUE(broker().remove("gone").has_value());
  std::uint64_t last = 0;
  for (int i = 0; i < 200; ++i)
    last = put_durable(p, "kept", kb);  // past a few segments: the removal's is not the last
  wait_for(last);
  close(true);
  open();
  EXPECT_EQ(broker().find("gone"), nullptr);
  ASSERT_NE(broker().find("kept"), nullptr);
  EXPECT_EQ(broker().find("kept")->depth(), 200u);
}

TEST_F(JournalTest, TheDiskUseOfAQueueThatKeepsUpStaysBounded) {
  settings_.segment_bytes = 64 * 1024;
  open();
  const auto p = connect();
  ASSERT_EQ(declare_by(p, "jobs", durable(proto::Fsync::none)), Errc::ok);
  put_durable(p, "jobs", "stuck");  // first in line, never taken
  const auto c = connect();
  const std::string kb(1000, 'x');
  std::uint64_t last = 0;
  for (int i = 0; i < 5000; ++i) {
    last = put_durable(p, "jobs", kb);
    // The receiver takes every message but the stuck one: it holds it unacknowledged.
    if (i == 0) broker().receive(c, 1, "jobs", 1, 0, now_, true);
    receive_now(c, "jobs", 1);
  }
  wait_for(last);
  close();
  // About 5 MB went through; a few segments of 64 KiB remain.
  std::size_t bytes = 0;
  for (const auto& n : disk_.names()) {
    if (n.ends_with(".qj")) bytes += disk_.file(n).data.size();
  }
  EXPECT_LT(bytes, 4u * 64 * 1024) << disk_.names().size() << " files";
  open();
  sink_.deliveries.clear();
  const auto d = connect();
  receive_now(d, "jobs", 10);
  EXPECT_EQ(payloads_to(d), (std::vector<std::string>{"stuck"}));
}

TEST_F(JournalTest, ATornTailIsCutAtTheLastGoodRecordWithAWarning) {
  open();
  const auto p = connect();
  ASSERT_EQ(declare_by(p, "jobs", durable(proto::Fsync::always)), Errc::ok);
  std::uint64_t last = 0;
  for (int i = 0; i < 20; ++i)
    last = put_durable(p, "jobs", "m" + std::to_string(i));
  wait_for(last);
  close();
  const std::string seg = "0000000000000001.qj";
  auto& bytes = disk_.bytes(seg);
  const std::size_t good = bytes.size();
  // Half a record's header and some of its data: a write the crash cut short.
  for (int i = 0; i < 11; ++i)
    bytes.push_back(std::byte{0x5a});
  const RecoveryStats stats = open();
  ASSERT_TRUE(recovered_) << error_;
  EXPECT_EQ(stats.torn_bytes, 11u);
  ASSERT_FALSE(stats.warnings.empty());
  EXPECT_NE(stats.warnings[0].find(seg + ": torn tail at offset " + std::to_string(good)),
            std::string::npos)
      << stats.warnings[0];
  EXPECT_EQ(disk_.file(seg).data.size(), good) << "the tail is cut";
  EXPECT_EQ(drain("jobs").size(), 20u);
}

TEST_F(JournalTest, DamageInTheMiddleAndAMissingSegmentCostOnlyWhatTheyHeld) {
  settings_.segment_bytes = 64 * 1024;
  open();
  const auto p = connect();
  ASSERT_EQ(declare_by(p, "jobs", durable(proto::Fsync::none)), Errc::ok);
  const std::string kb(1000, 'x');
  std::uint64_t last = 0;
  const int n = 400;  // about 6 segments
  for (int i = 0; i < n; ++i)
    last = put_durable(p, "jobs", std::to_string(i) + kb);
  wait_for(last);
  close();
  std::vector<std::string> segs;
  for (const auto& name : disk_.names()) {
    if (name.ends_with(".qj")) segs.push_back(name);
  }
  ASSERT_GE(segs.size(), 4u);
  // Bytes flipped in the middle of the first segment, the third one gone.
  disk_.bytes(segs[0])[40 * 1024] ^= std::byte{0xff};
  ASSERT_TRUE(disk_.remove(segs[2]).ok());
  const RecoveryStats stats = open();
  ASSERT_TRUE(recovered_) << error_;
  // The damaged record, and the rest of one that crossed into the next block.
  EXPECT_GE(stats.damaged, 1u);
  EXPECT_LE(stats.damaged, 2u);
  bool named = false;
  for (const auto& w : stats.warnings) {
    named = named || w.find(segs[0] + ": damage at offset") != std::string::npos;
  }
  EXPECT_TRUE(named);
  const auto got = drain("jobs");
  // A damaged block costs at most about 33 messages of 1 KB, a segment about 65.
  EXPECT_GT(got.size(), static_cast<std::size_t>(n - 33 - 70));
  EXPECT_LT(got.size(), static_cast<std::size_t>(n));
  for (std::size_t i = 1; i < got.size(); ++i)
    ASSERT_LT(std::stoi(got[i - 1]), std::stoi(got[i])) << "out of order at " << i;
}

TEST_F(JournalTest, AJournalOfANewerFormatIsRefusedAndLeftAlone) {
  std::vector<std::byte> header = segment_header(1);
  header[8] = std::byte{2};  // version 2
  const std::uint32_t crc = crc32c(Bytes(header.data(), 28));
  std::memcpy(header.data() + 28, &crc, 4);  // little-endian, as the format says
  std::unique_ptr<AppendFile> f;
  ASSERT_TRUE(disk_.open_append("0000000000000001.qj", f).ok());
  ASSERT_TRUE(f->append(header).ok());
  const auto before = disk_.file("0000000000000001.qj").data;
  open();
  EXPECT_FALSE(recovered_);
  EXPECT_NE(error_.find("0000000000000001.qj is in journal format version 2"), std::string::npos)
      << error_;
  EXPECT_EQ(disk_.file("0000000000000001.qj").data, before);
  EXPECT_EQ(disk_.names().size(), 1u) << "no new segment is begun";
  const auto p = connect();
  std::string text;
  EXPECT_EQ(declare_by(p, "jobs", durable(proto::Fsync::always), &text), Errc::storage_failed);
  EXPECT_NE(text.find("version 2"), std::string::npos) << text;
  EXPECT_EQ(send(p, "plain", "still served").result, SendResult::accepted);
}

TEST_F(JournalTest, AFullDiskFailsDurableSendsOnlyAndRecoversWhenSpaceReturns) {
  open();
  const auto p = connect();
  ASSERT_EQ(declare_by(p, "jobs", durable(proto::Fsync::always)), Errc::ok);
  std::vector<std::uint64_t> confirmed;
  for (int i = 0; i < 50; ++i)
    confirmed.push_back(put_durable(p, "jobs", "ok" + std::to_string(i)));
  wait_for(confirmed.back());
  disk_.set_capacity(disk_.file("0000000000000001.qj").data.size() + 2000);
  JournalProgress failed;
  for (int i = 0; i < 1000 && failed.error.empty(); ++i) {
    const auto out = send(p, "jobs", std::string(100, 'f'));
    if (out.result != SendResult::accepted) break;
    failed = wait_for(out.ticket);
  }
  EXPECT_NE(failed.error.find("No space left on device"), std::string::npos) << failed.error;
  (void)journal_->progress();
  const auto refused = send(p, "jobs", "refused");
  EXPECT_EQ(refused.error, Errc::storage_failed) << refused.text;
  EXPECT_NE(refused.text.find("No space left on device"), std::string::npos) << refused.text;
  EXPECT_EQ(send(p, "plain", "still served").result, SendResult::accepted);
  disk_.set_capacity(SIZE_MAX);
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (!journal_->progress().error.empty() && std::chrono::steady_clock::now() < deadline) {
    std::unique_lock lk(mu_);
    cv_.wait_for(lk, 50ms);
  }
  EXPECT_TRUE(journal_->unavailable().empty()) << journal_->unavailable();
  wait_for(put_durable(p, "jobs", "after"));
  close(true);
  disk_.power_loss();
  open();
  const auto got = drain("jobs");
  for (int i = 0; i < 50; ++i)
    EXPECT_EQ(got[static_cast<std::size_t>(i)], "ok" + std::to_string(i));
  EXPECT_EQ(got.back(), "after");
}

TEST_F(JournalTest, ASegmentThatCouldNotBeBegunIsBegunAgainWhenSpaceReturns) {
  settings_.segment_bytes = 64 * 1024;
  open();
  const auto p = connect();
  ASSERT_EQ(declare_by(p, "jobs", durable(proto::Fsync::always)), Errc::ok);
  const std::string kb(1000, 'x');
  std::vector<std::uint64_t> ok;
  // The disk fills about where the first segment ends, so the next one cannot begin.
  disk_.set_capacity(64 * 1024 + 16);
  JournalProgress p1;
  for (int i = 0; i < 200 && p1.error.empty(); ++i) {
    const auto out = send(p, "jobs", std::to_string(i) + kb);
    if (out.result != SendResult::accepted) break;
    p1 = wait_for(out.ticket);
    if (p1.error.empty()) ok.push_back(out.ticket);
  }
  ASSERT_FALSE(p1.error.empty()) << "the disk never filled";
  disk_.set_capacity(SIZE_MAX);
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (!journal_->progress().error.empty() && std::chrono::steady_clock::now() < deadline) {
    std::unique_lock lk(mu_);
    cv_.wait_for(lk, 50ms);
  }
  const auto last = put_durable(p, "jobs", "after");
  EXPECT_GE(wait_for(last).durable_through, last);
  close(true);
  disk_.power_loss();
  open();
  ASSERT_TRUE(recovered_) << error_;
  const auto got = drain("jobs");
  ASSERT_GE(got.size(), ok.size() + 1);
  for (std::size_t i = 0; i < ok.size(); ++i)
    EXPECT_EQ(got[i], std::to_string(i) + kb);
  EXPECT_EQ(got.back(), "after");
}

TEST_F(JournalTest, TheConfigurationTakesOverARecoveredQueueWithItsOwnOptions) {
  open();
  const auto p = connect();
  QueueOptions o = durable(proto::Fsync::always);
  o.max_messages = 10;
  ASSERT_EQ(declare_by(p, "jobs", o), Errc::ok);
  wait_for(put_durable(p, "jobs", "kept"));
  close(true);
  open();
  o.max_messages = 20;
  std::string text;
  ASSERT_EQ(declare("jobs", o, &text), Errc::ok) << text;
  EXPECT_EQ(broker().find("jobs")->options().max_messages, 20u);
  EXPECT_EQ(broker().find("jobs")->depth(), 1u);
  close();
  open();  // and the journal has the new options
  EXPECT_EQ(broker().find("jobs")->options().max_messages, 20u);
}

TEST_F(JournalTest, ARegionPayloadIsCopiedIntoTheJournalAndComesBackInline) {
  open();
  const auto p = connect();
  ASSERT_EQ(declare_by(p, "jobs", durable(proto::Fsync::always)), Errc::ok);
  const broker::RegionGrant g = broker().allocate_region(p, 4096);
  ASSERT_EQ(g.error, Errc::ok) << g.text;
  broker::RegionSend rs;
  rs.ref = broker::RegionRef{g.id, 16, 8};
  rs.key = "jobs";
  const auto out = broker().send_region(p, rs, now_);
  ASSERT_EQ(out.result, SendResult::accepted) << out.text;
  wait_for(out.ticket);
  // Over the inline limit: it could not come back inline, so it is refused.
  limits_.max_payload = 1024;
  close(true);
  disk_.power_loss();
  open();
  const auto c = connect();
  sink_.deliveries.clear();
  receive_now(c, "jobs", 1);
  ASSERT_EQ(sink_.deliveries.size(), 1u);
  // FakeBacking's bytes read as their offsets: 16, 17, ... 23.
  std::string expected;
  for (int i = 16; i < 24; ++i)
    expected.push_back(static_cast<char>(i));
  EXPECT_EQ(sink_.deliveries[0].payload, expected);
  EXPECT_FALSE(sink_.deliveries[0].region);
  const broker::RegionGrant big = broker().allocate_region(c, 4096);
  rs.ref = broker::RegionRef{big.id, 0, 2048};
  const auto refused = broker().send_region(c, rs, now_);
  EXPECT_EQ(refused.error, Errc::storage_failed) << refused.text;
  EXPECT_NE(refused.text.find("over the inline limit of 1024"), std::string::npos) << refused.text;
}

TEST(JournalLock, AStateDirectoryHeldByAnotherJournalIsRefused) {
  const auto path =
      std::filesystem::temp_directory_path() / ("qbus-journal-lock-" + std::to_string(::getpid()));
  std::filesystem::create_directories(path);
  IoStatus st;
  std::string error;
  auto first = Journal::open(open_posix_dir(path, st), {}, error);
  ASSERT_TRUE(first) << error;
  auto second = Journal::open(open_posix_dir(path, st), {}, error);
  EXPECT_FALSE(second);
  EXPECT_NE(error.find("another qbusd uses this state directory"), std::string::npos) << error;
  first.reset();
  auto third = Journal::open(open_posix_dir(path, st), {}, error);
  EXPECT_TRUE(third) << "the lock goes with its holder: " << error;
  third.reset();
  std::filesystem::remove_all(path);
}

}  // namespace
}  // namespace qbus::storage
