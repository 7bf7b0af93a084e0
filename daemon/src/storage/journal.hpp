// The journal of durable queues (docs/journal.md): the broker's broker::Journal, written by
// a storage thread of its own.
//
// The broker's thread encodes each record into a shared pending buffer (one short lock per
// record) and never waits for the disk. The storage thread takes the whole buffer at once,
// frames it into the current segment (journal_format.hpp), writes it with one append and
// syncs as the records' fsync policies ask: at once for `always` (so records that arrived
// meanwhile share the next fsync: group commit), at most every batch_ms for `batch`, never
// for `none`. It then calls `wake`, and the broker's thread reads progress(): every ticket
// up to durable_through is durable, and every ticket up to failed_through that was not
// failed. A segment past segment_bytes is closed and a new one begun with a snapshot of
// every durable queue; a closed segment whose messages are all settled is deleted, and the
// oldest one, once at most half of it is live, is compacted (its live messages copied
// forward), so the disk use of a queue that keeps up stays bounded.
//
// Lifetime: open() takes the state directory's lock; recover() replays the segments into
// a Broker before any client connects; start() starts the thread; stop() writes and syncs
// what is pending and joins it. Thread-safety: every member but the thread's own is called
// on the broker's thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "broker/broker.hpp"
#include "broker/journal.hpp"
#include "storage/files.hpp"
#include "storage/journal_format.hpp"
#include "storage/journal_records.hpp"

namespace qbus::storage {

struct JournalSettings {
  proto::Fsync fsync = proto::Fsync::batch;  // for queues that ask for the default
  std::uint32_t batch_ms = 10;
  std::uint64_t segment_bytes = 64ull << 20;
};

// What recover() found, for the log and the admin socket's stats.
struct RecoveryStats {
  std::uint32_t segments = 0;
  std::uint64_t records = 0;
  std::uint32_t queues = 0;
  std::uint64_t messages = 0;
  std::uint64_t redelivered = 0;  // in flight at the crash: they come back as redelivered
  std::uint64_t bytes = 0;        // payload bytes recovered
  std::uint64_t torn_bytes = 0;   // cut from torn tails
  std::uint64_t damaged = 0;      // stretches skipped for damage in the middle
  std::uint64_t milliseconds = 0;
  // One line per torn tail, damaged stretch or record that could not be used, naming the
  // file and the offset; the caller logs them.
  std::vector<std::string> warnings;
};

// Where durable queues stand, for qbusd's log and the admin socket's stats.
struct StorageStatus {
  std::string dir;    // the state directory
  std::string error;  // why durable queues are off; empty when they are on
  const class Journal* journal = nullptr;
  RecoveryStats recovery;
};

// What the storage thread has done, for the broker's thread.
struct JournalProgress {
  std::uint64_t durable_through = 0;  // every ticket up to this is durable
  std::uint64_t failed_through = 0;   // every ticket up to this that is not durable failed
  std::string error;                  // why, while failing; empty once it works again
};

class Journal final : public broker::Journal {
 public:
  // Opens the journal in `dir`, taking its lock. Null, with `error` saying why (another
  // qbusd holds the directory, it cannot be written), when it cannot be used.
  static std::unique_ptr<Journal> open(std::unique_ptr<Dir> dir, const JournalSettings& settings,
                                       std::string& error);
  ~Journal() override;
  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;

  // Replays every segment into `broker` and begins a new segment. On a journal this qbusd
  // cannot read (a newer format), returns false with `error` and leaves the files alone:
  // the journal is then unavailable().
  bool recover(broker::Broker& broker, broker::Clock::time_point now, RecoveryStats& stats,
               std::string& error);
  // Starts the storage thread; `wake` is called on it after each step that changed
  // progress() (it must be thread-safe: qbusd posts to its event loop).
  void start(std::function<void()> wake);
  // Writes and syncs everything pending, then joins the thread. Idempotent.
  void stop();
  // Joins the thread without writing what is pending, as a killed process leaves its
  // journal (the tests' crash).
  void abandon();
  JournalProgress progress();

  // broker::Journal
  const std::string& unavailable() const override { return unavailable_; }
  void declare(std::string_view key, const broker::QueueOptions& options,
               std::optional<std::uint32_t> owner) override;
  void remove(std::string_view key) override;
  std::uint64_t next_id() override { return next_id_++; }
  std::uint64_t store(std::string_view key, const broker::MessageMeta& meta,
                      std::uint32_t deliveries, Bytes payload, Bytes headers,
                      std::optional<broker::Clock::time_point> due) override;
  void delivered(std::uint64_t id) override;
  void settled(std::uint64_t id) override;

  // For the admin socket: segments on disk and their bytes (as of the thread's last step).
  std::uint64_t disk_bytes() const;

 private:
  Journal(std::unique_ptr<Dir> dir, const JournalSettings& settings);

  // The broker thread's side.
  struct QueueEntry {
    std::uint32_t qid = 0;
    bool sync = true;  // its records wait for an fsync (always or batch)
    bool always = false;
  };
  // Appends one record to the pending buffer; `encode` writes it. Returns its ticket.
  template <typename Encode>
  std::uint64_t append(const QueueEntry* q, Encode&& encode);
  QueueEntry* entry(std::string_view key);

  // The storage thread's side.
  struct Segment {
    std::uint64_t size = 0;
    std::uint64_t live = 0;
    std::uint64_t live_bytes = 0;
    // The oldest segment whose messages this one's settle and delivered records name: it
    // may go only once those are gone, or their messages would come back.
    std::uint64_t min_ref = UINT64_MAX;
  };
  struct Live {
    std::uint64_t segment = 0;
    std::uint32_t size = 0;
    std::uint32_t deliveries = 0;
    std::uint32_t qid = 0;
  };
  // recover()'s steps (journal_recovery.cpp): what the segments say, read one by one, and
  // then given to the broker.
  struct Replay;
  // `newest`: the last segment, which qbusd may have been beginning when it stopped.
  bool replay_segment(std::uint64_t number, Replay& replay, RecoveryStats& stats,
                      std::string& error, bool newest);
  // A segment whose header read_segment refused: a newest one begun as qbusd stopped is
  // removed (true); otherwise false, with `error`.
  bool unreadable_segment(std::uint64_t number, const ReadReport& report, std::size_t size,
                          bool newest, RecoveryStats& stats, std::string& error);
  void restore(broker::Broker& broker, broker::Clock::time_point now, Replay& replay,
               RecoveryStats& stats);
  void run();
  // Frames and appends `records` ([u32 size][record]...). Returns how many of its bytes
  // are written (all of them, unless a write failed: `error_` then says why).
  std::size_t write_records(const std::vector<std::byte>& records);
  void track(Bytes record);
  void track_ref(std::uint64_t id);
  bool begin_segment(std::uint64_t number);
  bool flush_out();
  bool rotate();
  void reclaim();
  bool compact(std::uint64_t number);
  static std::string segment_name(std::uint64_t number);

  std::unique_ptr<Dir> dir_;
  const JournalSettings settings_;
  // Wall-clock minus steady-clock milliseconds: the records keep wall-clock times.
  const std::int64_t wall_offset_ms_;

  // Broker thread only.
  std::string unavailable_;
  std::unordered_map<std::string, QueueEntry> queues_;
  QueueEntry* last_entry_ = nullptr;
  std::string last_key_;
  std::uint32_t next_qid_ = 1;
  std::uint64_t next_id_ = 1;
  std::uint64_t next_ticket_ = 1;

  // Shared, under mu_.
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::byte> pending_;
  std::uint64_t pending_last_ = 0;        // the ticket of its last record
  std::uint64_t pending_first_sync_ = 0;  // the first that waits for an fsync; 0: none
  bool pending_always_ = false;
  bool stop_ = false;
  bool abandon_ = false;
  JournalProgress progress_;
  std::uint64_t disk_bytes_ = 0;

  // Storage thread only (and recover(), before the thread starts).
  std::function<void()> wake_;
  std::thread thread_;
  std::unique_ptr<AppendFile> file_;
  std::uint64_t current_ = 0;
  bool segment_begun_ = false;  // the current segment's header and snapshot are written
  SegmentWriter writer_;
  std::vector<std::byte> out_;
  std::map<std::uint64_t, Segment> segments_;
  std::unordered_map<std::uint64_t, Live> live_;
  std::map<std::uint32_t, std::vector<std::byte>> declares_;  // qid -> its declare record
  std::uint64_t unsynced_first_ = 0;  // the first written ticket waiting for an fsync
  std::chrono::steady_clock::time_point last_sync_{};
  std::string error_;
};

}  // namespace qbus::storage
