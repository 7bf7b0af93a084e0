#include "storage/journal.hpp"

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>

namespace qbus::storage {
namespace {

using broker::Clock;
using Steady = std::chrono::steady_clock;

std::uint32_t load_u32(const std::byte* at) {
  std::uint32_t v;
  std::memcpy(&v, at, sizeof v);
  return v;
}

// The milliseconds between the steady clock's epoch and the Unix epoch, now: a steady time
// point plus this is wall-clock time, which survives a restart.
std::int64_t wall_offset_ms() {
  using std::chrono::duration_cast;
  using std::chrono::milliseconds;
  const auto wall =
      duration_cast<milliseconds>(std::chrono::system_clock::now().time_since_epoch());
  const auto steady = duration_cast<milliseconds>(Clock::now().time_since_epoch());
  return wall.count() - steady.count();
}

proto::Fsync resolve(proto::Fsync f, proto::Fsync daemon_default) {
  return f == proto::Fsync::use_default ? daemon_default : f;
}

}  // namespace

std::string Journal::segment_name(std::uint64_t number) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%016" PRIx64 ".qj", number);
  return buf;
}

Journal::Journal(std::unique_ptr<Dir> dir, const JournalSettings& settings)
    : dir_(std::move(dir)), settings_(settings), wall_offset_ms_(wall_offset_ms()) {}

Journal::~Journal() {
  stop();
}

std::unique_ptr<Journal> Journal::open(std::unique_ptr<Dir> dir, const JournalSettings& settings,
                                       std::string& error) {
  if (const IoStatus st = dir->lock(); !st.ok()) {
    error = st.error == EWOULDBLOCK
                ? "another qbusd uses this state directory (it holds qbusd.lock)"
                : st.message();
    return nullptr;
  }
  return std::unique_ptr<Journal>(new Journal(std::move(dir), settings));
}

// ---- the broker thread's side ----

Journal::QueueEntry* Journal::entry(std::string_view key) {
  if (last_entry_ && last_key_ == key) return last_entry_;
  const auto it = queues_.find(std::string(key));
  if (it == queues_.end()) return nullptr;
  last_key_.assign(key);
  last_entry_ = &it->second;
  return last_entry_;
}

template <typename Encode>
std::uint64_t Journal::append(const QueueEntry* q, Encode&& encode) {
  const std::uint64_t ticket = next_ticket_++;
  bool was_empty = false;
  {
    std::lock_guard lk(mu_);
    const std::size_t at = pending_.size();
    pending_.resize(at + sizeof(std::uint32_t));
    encode(pending_);
    // Native order: the buffer never leaves this process.
    const auto n = static_cast<std::uint32_t>(pending_.size() - at - sizeof(std::uint32_t));
    std::memcpy(pending_.data() + at, &n, sizeof n);
    pending_last_ = ticket;
    if (q && q->sync) {
      if (pending_first_sync_ == 0) pending_first_sync_ = ticket;
      pending_always_ = pending_always_ || q->always;
    }
    was_empty = at == 0;
  }
  // The thread looks at the buffer again before it sleeps: one wake per batch is enough.
  if (was_empty) cv_.notify_one();
  return ticket;
}

void Journal::declare(std::string_view key, const broker::QueueOptions& options,
                      std::optional<std::uint32_t> owner) {
  auto [it, fresh] = queues_.try_emplace(std::string(key));
  if (fresh) it->second.qid = next_qid_++;
  const proto::Fsync f = resolve(options.fsync, settings_.fsync);
  it->second.sync = f != proto::Fsync::none;
  it->second.always = f == proto::Fsync::always;
  last_entry_ = nullptr;
  QueueRecord r{it->second.qid, std::string(key), options, owner};
  append(nullptr, [&](std::vector<std::byte>& out) { encode_queue(RecordKind::declare, r, out); });
}

void Journal::remove(std::string_view key) {
  const auto it = queues_.find(std::string(key));
  if (it == queues_.end()) return;
  const std::uint32_t qid = it->second.qid;
  queues_.erase(it);
  last_entry_ = nullptr;
  append(nullptr, [&](std::vector<std::byte>& out) { encode_id(RecordKind::remove, qid, out); });
}

std::uint64_t Journal::store(std::string_view key, const broker::MessageMeta& meta,
                             std::uint32_t deliveries, Bytes payload, Bytes headers,
                             std::optional<Clock::time_point> due) {
  const QueueEntry* q = entry(key);
  if (!q) return 0;  // never: the queue was declared to the journal first
  const auto wall = [&](Clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count() +
           wall_offset_ms_;
  };
  StoreRecord m;
  m.id = meta.journal_id;
  m.qid = q->qid;
  m.deliveries = deliveries;
  m.priority = meta.priority;
  m.pid = meta.sender.pid;
  m.uid = meta.sender.uid;
  m.gid = meta.sender.gid;
  m.tcp = meta.sender.tcp;
  m.enqueued_ms = wall(meta.enqueued);
  if (meta.expires != Clock::time_point{}) m.expires_ms = wall(meta.expires);
  if (due) m.due_ms = wall(*due);
  m.headers = headers;
  m.payload = payload;
  return append(q, [&](std::vector<std::byte>& out) { encode_store(m, out); });
}

void Journal::delivered(std::uint64_t id) {
  append(nullptr, [&](std::vector<std::byte>& out) { encode_id(RecordKind::delivered, id, out); });
}

void Journal::settled(std::uint64_t id) {
  append(nullptr, [&](std::vector<std::byte>& out) { encode_id(RecordKind::settle, id, out); });
}

JournalProgress Journal::progress() {
  JournalProgress p;
  {
    std::lock_guard lk(mu_);
    p = progress_;
  }
  unavailable_ = p.error.empty() ? std::string() : "the journal cannot be written: " + p.error;
  return p;
}

std::uint64_t Journal::disk_bytes() const {
  std::lock_guard lk(mu_);
  return disk_bytes_;
}

void Journal::start(std::function<void()> wake) {
  wake_ = std::move(wake);
  thread_ = std::thread([this] { run(); });
}

void Journal::stop() {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable()) thread_.join();
}

void Journal::abandon() {
  {
    std::lock_guard lk(mu_);
    stop_ = abandon_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable()) thread_.join();
}

// ---- the storage thread's side ----

void Journal::run() {
  std::vector<std::byte> work;
  std::vector<std::byte> retry;  // records a failed write left unwritten, oldest first
  std::uint64_t retry_first_sync = 0;
  bool retry_always = false;
  std::uint64_t written = 0;
  const auto batch = std::chrono::milliseconds(settings_.batch_ms);
  std::unique_lock lk(mu_);
  for (;;) {
    const bool failing = !progress_.error.empty();
    const auto ready = [&] { return stop_ || !pending_.empty(); };
    if (failing) {
      cv_.wait_for(lk, std::chrono::milliseconds(500), ready);  // the disk may have room again
    } else if (unsynced_first_ != 0) {
      cv_.wait_until(lk, last_sync_ + batch, ready);
    } else {
      cv_.wait(lk, ready);
    }
    const bool stopping = stop_;
    if (abandon_) break;
    if (stopping && pending_.empty() && retry.empty() && unsynced_first_ == 0 && !failing) break;
    std::uint64_t first_sync = pending_first_sync_;
    bool always = pending_always_;
    const std::uint64_t last = pending_last_;
    if (!retry.empty()) {
      retry.insert(retry.end(), pending_.begin(), pending_.end());
      work.swap(retry);
      retry.clear();
      if (retry_first_sync != 0) first_sync = retry_first_sync;
      always = always || retry_always;
    } else {
      work.swap(pending_);
    }
    pending_.clear();
    pending_first_sync_ = 0;
    pending_always_ = false;
    lk.unlock();

    // A segment that could not be begun (at recovery, or at a rotation) is begun first.
    bool ok = segment_begun_ || begin_segment(current_);
    if (!work.empty()) {
      const std::size_t done = ok ? write_records(work) : 0;
      if (done != work.size()) {
        ok = false;
        retry.assign(work.begin() + static_cast<std::ptrdiff_t>(done), work.end());
        retry_first_sync = first_sync;
        retry_always = always;
      } else {
        written = last;
        if (first_sync != 0 && unsynced_first_ == 0) unsynced_first_ = first_sync;
      }
      work.clear();
    }
    if (ok && unsynced_first_ != 0) {
      const auto now = Steady::now();
      if (always || stopping || failing || now >= last_sync_ + batch) {
        if (const IoStatus st = file_->sync(); st.ok()) {
          unsynced_first_ = 0;
          last_sync_ = now;
        } else {
          ok = false;
          error_ = st.message();
        }
      }
    }

    lk.lock();
    if (ok) {
      progress_.durable_through = unsynced_first_ != 0 ? unsynced_first_ - 1 : written;
      progress_.error.clear();
    } else {
      progress_.failed_through = last;
      progress_.error = error_;
    }
    disk_bytes_ = 0;
    for (const auto& [n, s] : segments_)
      disk_bytes_ += s.size;
    lk.unlock();
    if (wake_) wake_();
    lk.lock();
    if (stopping && (ok || failing)) break;  // a failing disk gets one last try
  }
}

std::size_t Journal::write_records(const std::vector<std::byte>& records) {
  std::size_t pos = 0;
  std::size_t flushed = 0;
  std::vector<Bytes> framed;  // in out_, not yet written
  const auto commit = [&] {
    if (!flush_out()) return false;
    for (const Bytes r : framed)
      track(r);
    framed.clear();
    flushed = pos;
    return true;
  };
  while (pos < records.size()) {
    const std::uint32_t n = load_u32(records.data() + pos);
    const Bytes r(records.data() + pos + sizeof n, n);
    if (writer_.offset() >= settings_.segment_bytes) {
      if (!commit() || !rotate()) return flushed;
    }
    writer_.add(r, out_);
    framed.push_back(r);
    pos += sizeof n + n;
  }
  return commit() ? pos : flushed;
}

bool Journal::flush_out() {
  if (out_.empty()) return true;
  const std::uint64_t before = file_->size();
  const IoStatus st = file_->append(out_);
  out_.clear();
  if (!st.ok()) {
    // The file holds an unknown prefix of what was written: cut it back, and frame the
    // records again from there when they are retried.
    (void)file_->truncate(before);
    writer_ = SegmentWriter(before);
    error_ = st.message();
    return false;
  }
  segments_[current_].size = file_->size();
  return true;
}

void Journal::track_ref(std::uint64_t id) {
  const auto it = live_.find(id);
  if (it == live_.end()) return;
  Segment& cur = segments_[current_];
  cur.min_ref = std::min(cur.min_ref, it->second.segment);
}

void Journal::track(Bytes record) {
  const auto untrack = [&](const Live& l) {
    Segment& s = segments_[l.segment];
    --s.live;
    s.live_bytes -= l.size;
  };
  switch (record_kind(record)) {
    case RecordKind::store: {
      StoreRecord m;
      if (!decode_store(record, m)) return;
      auto [it, fresh] = live_.try_emplace(m.id);
      if (!fresh) untrack(it->second);  // a copy moved forward, or a retried write
      const auto size = static_cast<std::uint32_t>(record.size() + kFragmentHeaderSize);
      it->second = Live{current_, size, m.deliveries, m.qid};
      Segment& s = segments_[current_];
      ++s.live;
      s.live_bytes += size;
      return;
    }
    case RecordKind::settle: {
      std::uint64_t id = 0;
      if (!decode_id(record, id)) return;
      track_ref(id);
      if (const auto it = live_.find(id); it != live_.end()) {
        untrack(it->second);
        live_.erase(it);
      }
      return;
    }
    case RecordKind::delivered: {
      std::uint64_t id = 0;
      if (!decode_id(record, id)) return;
      track_ref(id);
      if (const auto it = live_.find(id); it != live_.end()) ++it->second.deliveries;
      return;
    }
    case RecordKind::declare: {
      QueueRecord q;
      if (decode_queue(record, q)) declares_[q.qid].assign(record.begin(), record.end());
      return;
    }
    case RecordKind::remove: {
      std::uint64_t qid = 0;
      if (!decode_id(record, qid)) return;
      declares_.erase(static_cast<std::uint32_t>(qid));
      // Its messages are settled with it: the next segment's snapshot no longer names the
      // queue, so recovery drops whatever of it older segments still hold.
      for (auto it = live_.begin(); it != live_.end();) {
        if (it->second.qid == qid) {
          untrack(it->second);
          it = live_.erase(it);
        } else {
          ++it;
        }
      }
      return;
    }
    default:
      return;
  }
}

bool Journal::begin_segment(std::uint64_t number) {
  // From here on records go to segment `number`, once it is begun (run() retries).
  current_ = number;
  segment_begun_ = false;
  segments_.try_emplace(number);
  const std::string name = segment_name(number);
  std::unique_ptr<AppendFile> f;
  if (const IoStatus st = dir_->open_append(name, f); !st.ok()) {
    error_ = st.message();
    return false;
  }
  if (f->size() != 0) (void)f->truncate(0);  // never written whole: begun again
  file_ = std::move(f);
  segments_[number] = Segment{};
  writer_ = SegmentWriter(kFileHeaderSize);
  out_ = segment_header(number);
  std::vector<std::vector<std::byte>> decls;
  decls.reserve(declares_.size());
  for (const auto& [qid, d] : declares_)
    decls.push_back(d);
  std::vector<std::byte> snapshot;
  encode_snapshot(decls, snapshot);
  writer_.add(snapshot, out_);
  if (!flush_out()) return false;
  if (const IoStatus st = dir_->sync(); !st.ok()) {
    error_ = st.message();
    return false;
  }
  segment_begun_ = true;
  return true;
}

bool Journal::rotate() {
  // What the closed segment holds is on disk before anything that depends on it goes.
  if (const IoStatus st = file_->sync(); !st.ok()) {
    error_ = st.message();
    return false;
  }
  unsynced_first_ = 0;
  last_sync_ = Steady::now();
  if (!begin_segment(current_ + 1)) return false;
  reclaim();
  return true;
}

void Journal::reclaim() {
  const auto refs_gone = [&](std::uint64_t number, const Segment& s) {
    const auto it = segments_.lower_bound(s.min_ref);
    return it == segments_.end() || it->first >= number;
  };
  bool removed = false;
  for (bool again = true; again;) {
    again = false;
    for (auto it = segments_.begin(); it != segments_.end() && it->first != current_;) {
      if (it->second.live == 0 && refs_gone(it->first, it->second) &&
          dir_->remove(segment_name(it->first)).ok()) {
        it = segments_.erase(it);
        removed = again = true;
      } else {
        ++it;
      }
    }
    // The oldest segment, once at most half of it is live, is compacted: a few messages
    // that nobody takes must not keep whole segments of settled ones on disk.
    const auto oldest = segments_.begin();
    if (oldest != segments_.end() && oldest->first != current_ && oldest->second.live != 0 &&
        oldest->second.live_bytes * 2 <= oldest->second.size) {
      again = compact(oldest->first) && segments_.begin()->second.live == 0;
    }
  }
  if (removed) (void)dir_->sync();
}

bool Journal::compact(std::uint64_t number) {
  std::vector<std::byte> file;
  if (!dir_->read(segment_name(number), file).ok()) return false;
  std::vector<std::uint64_t> moved;
  std::vector<std::byte> copy;
  ReadReport report;
  const bool read = read_segment(
      file,
      [&](Bytes r) {
        StoreRecord m;
        if (record_kind(r) != RecordKind::store || !decode_store(r, m)) return;
        const auto it = live_.find(m.id);
        if (it == live_.end() || it->second.segment != number) return;
        copy.assign(r.begin(), r.end());
        set_store_deliveries(copy, it->second.deliveries);
        writer_.add(copy, out_);
        moved.push_back(m.id);
      },
      report);
  if (!read || moved.empty()) return false;
  if (!flush_out()) return false;
  if (!file_->sync().ok()) return false;
  Segment& from = segments_[number];
  Segment& to = segments_[current_];
  for (const std::uint64_t id : moved) {
    Live& l = live_[id];
    --from.live;
    from.live_bytes -= l.size;
    l.segment = current_;
    ++to.live;
    to.live_bytes += l.size;
  }
  return true;
}

}  // namespace qbus::storage
