// Journal::recover: the segments replayed into the broker before any client connects.
#include <algorithm>
#include <chrono>

#include "storage/journal.hpp"

namespace qbus::storage {
namespace {

bool parse_number(const std::string& name, std::uint64_t& number) {
  if (name.size() != 19 || name.compare(16, 3, ".qj") != 0) return false;
  number = 0;
  for (std::size_t i = 0; i < 16; ++i) {
    const char c = name[i];
    const int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (d < 0) return false;
    number = (number << 4) | static_cast<std::uint64_t>(d);
  }
  return number != 0;
}

// A message as the replay last saw it.
struct Replayed {
  std::vector<std::byte> record;
  std::uint64_t segment = 0;
  std::uint32_t deliveries = 0;
  std::uint32_t qid = 0;
  std::uint32_t size = 0;
};

// A record about queues: the queues known so far change. False when it is malformed.
bool replay_queue_record(Bytes r, std::map<std::uint32_t, QueueRecord>& queues,
                         std::uint32_t& max_qid) {
  switch (record_kind(r)) {
    case RecordKind::snapshot: {
      std::vector<QueueRecord> qs;
      if (!decode_snapshot(r, qs)) return false;
      // The queues a segment begins with are all there are: one deleted before it is gone,
      // with whatever older segments still hold of it.
      queues.clear();
      for (QueueRecord& q : qs) {
        max_qid = std::max(max_qid, q.qid);
        queues[q.qid] = std::move(q);
      }
      return true;
    }
    case RecordKind::declare: {
      QueueRecord q;
      if (!decode_queue(r, q)) return false;
      max_qid = std::max(max_qid, q.qid);
      queues[q.qid] = std::move(q);
      return true;
    }
    default: {
      std::uint64_t qid = 0;
      if (!decode_id(r, qid)) return false;
      queues.erase(static_cast<std::uint32_t>(qid));
      return true;
    }
  }
}

}  // namespace

struct Journal::Replay {
  std::map<std::uint32_t, QueueRecord> queues;
  std::unordered_map<std::uint64_t, Replayed> msgs;
  std::uint64_t max_id = 0;
  std::uint32_t max_qid = 0;
  std::vector<std::byte> file;
};

bool Journal::recover(broker::Broker& broker, broker::Clock::time_point now, RecoveryStats& stats,
                      std::string& error) {
  const auto started = std::chrono::steady_clock::now();
  const auto fail = [&](std::string why) {
    error = std::move(why);
    unavailable_ = error;
    segments_.clear();
    return false;
  };
  std::vector<std::string> names;
  if (const IoStatus st = dir_->list(names); !st.ok()) return fail(st.message());
  std::vector<std::uint64_t> numbers;
  for (const std::string& n : names) {
    std::uint64_t number = 0;
    if (parse_number(n, number)) numbers.push_back(number);
  }
  std::sort(numbers.begin(), numbers.end());
  Replay replay;
  for (const std::uint64_t number : numbers) {
    std::string why;
    if (!replay_segment(number, replay, stats, why, number == numbers.back())) {
      return fail(std::move(why));
    }
  }
  restore(broker, now, replay, stats);
  next_id_ = replay.max_id + 1;
  next_qid_ = replay.max_qid + 1;
  // A segment that cannot be begun (a full disk) is tried again by the storage thread, as
  // any failed write is; meanwhile durable sends are refused, and the rest is served.
  if (!begin_segment(numbers.empty() ? 1 : numbers.back() + 1)) {
    progress_.error = error_;
    unavailable_ = "the journal cannot be written: " + error_;
    stats.warnings.push_back("cannot begin a journal segment: " + error_);
  }
  last_sync_ = std::chrono::steady_clock::now();
  for (const auto& [n, s] : segments_)
    disk_bytes_ += s.size;
  reclaim();
  stats.milliseconds =
      static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                     std::chrono::steady_clock::now() - started)
                                     .count());
  return true;
}

bool Journal::replay_segment(std::uint64_t number, Replay& replay, RecoveryStats& stats,
                             std::string& error, bool newest) {
  auto& [queues, msgs, max_id, max_qid, file] = replay;
  const std::string name = segment_name(number);
  if (const IoStatus st = dir_->read(name, file); !st.ok()) {
    error = st.message();
    return false;
  }
  Segment& seg = segments_[number];
  const auto untrack = [&](const Replayed& m) {
    Segment& s = segments_[m.segment];
    --s.live;
    s.live_bytes -= m.size;
  };
  const auto ref = [&](std::uint64_t id) -> Replayed* {
    max_id = std::max(max_id, id);
    const auto it = msgs.find(id);
    if (it == msgs.end()) return nullptr;
    seg.min_ref = std::min(seg.min_ref, it->second.segment);
    return &it->second;
  };
  const auto on_record = [&](Bytes r) {
    ++stats.records;
    switch (record_kind(r)) {
      case RecordKind::snapshot:
      case RecordKind::declare:
      case RecordKind::remove:
        if (replay_queue_record(r, queues, max_qid)) return;
        break;
      case RecordKind::store: {
        StoreRecord m;
        if (!decode_store(r, m)) break;
        max_id = std::max(max_id, m.id);
        max_qid = std::max(max_qid, m.qid);
        auto [it, fresh] = msgs.try_emplace(m.id);
        if (!fresh) untrack(it->second);  // a compacted copy: the later one counts
        Replayed& e = it->second;
        e.record.assign(r.begin(), r.end());
        e.segment = number;
        e.deliveries = m.deliveries;
        e.qid = m.qid;
        e.size = static_cast<std::uint32_t>(r.size() + kFragmentHeaderSize);
        ++seg.live;
        seg.live_bytes += e.size;
        return;
      }
      case RecordKind::settle: {
        std::uint64_t id = 0;
        if (!decode_id(r, id)) break;
        if (Replayed* m = ref(id)) {
          untrack(*m);
          msgs.erase(id);
        }
        return;
      }
      case RecordKind::delivered: {
        std::uint64_t id = 0;
        if (!decode_id(r, id)) break;
        if (Replayed* m = ref(id)) ++m->deliveries;
        return;
      }
      default:
        break;
    }
    stats.warnings.push_back(name + ": a record of " + std::to_string(r.size()) +
                             " bytes could not be read; skipped");
  };
  ReadReport report;
  if (!read_segment(file, on_record, report)) {
    return unreadable_segment(number, report, file.size(), newest, stats, error);
  }
  seg.size = report.end + report.torn_bytes;
  if (report.torn_bytes != 0) {
    stats.torn_bytes += report.torn_bytes;
    stats.warnings.push_back(name + ": torn tail at offset " + std::to_string(report.end) + ": " +
                             std::to_string(report.torn_bytes) + " bytes dropped");
    std::unique_ptr<AppendFile> f;
    if (dir_->open_append(name, f).ok() && f->truncate(report.end).ok()) seg.size = report.end;
  }
  for (const ReadReport::Skip& s : report.skipped) {
    ++stats.damaged;
    stats.warnings.push_back(name + ": damage at offset " + std::to_string(s.offset) + ": " +
                             std::to_string(s.bytes) + " bytes skipped (" + s.why + ")");
  }
  ++stats.segments;
  return true;
}

bool Journal::unreadable_segment(std::uint64_t number, const ReadReport& report, std::size_t size,
                                 bool newest, RecoveryStats& stats, std::string& error) {
  const std::string name = segment_name(number);
  if (newest && report.header != ReadReport::Header::unknown_version) {
    // qbusd stopped while it began this segment: its header never reached the disk whole,
    // and nothing was written after it.
    segments_.erase(number);
    const bool removed = dir_->remove(name).ok();
    stats.warnings.push_back(name + ": a segment begun as qbusd stopped (its header is " +
                             (size < kFileHeaderSize ? "cut short" : "damaged") +
                             "): " + (removed ? "removed" : "ignored"));
    return true;
  }
  if (report.header == ReadReport::Header::unknown_version) {
    error = name + " is in journal format version " + std::to_string(report.version) +
            ", newer than this qbusd reads (" + std::to_string(kFormatVersion) +
            "); durable queues are off and the journal is left untouched";
  } else {
    error = name +
            " is not a qbus journal segment (its header is damaged); durable queues are off "
            "and the journal is left untouched";
  }
  return false;
}

void Journal::restore(broker::Broker& broker, broker::Clock::time_point now, Replay& replay,
                      RecoveryStats& stats) {
  auto& [queues, msgs, max_id, max_qid, file] = replay;
  // Queues come back first, then their messages in the order they were stored.
  std::unordered_map<std::uint32_t, broker::Queue*> made;
  for (const auto& [qid, q] : queues) {
    std::string text;
    broker::Queue* bq = broker.recover_queue(q.key, q.options, q.owner, text);
    if (!bq) {
      stats.warnings.push_back("durable queue '" + q.key + "' could not be restored: " + text);
      continue;
    }
    made[qid] = bq;
    QueueEntry& e = queues_[q.key];
    e.qid = qid;
    const proto::Fsync f =
        q.options.fsync == proto::Fsync::use_default ? settings_.fsync : q.options.fsync;
    e.sync = f != proto::Fsync::none;
    e.always = f == proto::Fsync::always;
    encode_queue(RecordKind::declare, q, declares_[qid]);
    ++stats.queues;
  }
  std::vector<std::uint64_t> ids;
  ids.reserve(msgs.size());
  for (const auto& [id, m] : msgs)
    ids.push_back(id);
  std::sort(ids.begin(), ids.end());
  const auto steady = [&](std::int64_t wall_ms) {
    return broker::Clock::time_point(std::chrono::milliseconds(wall_ms - wall_offset_ms_));
  };
  for (const std::uint64_t id : ids) {
    Replayed& m = msgs[id];
    const auto q = made.find(m.qid);
    StoreRecord s;
    if (q == made.end() || !decode_store(m.record, s)) {
      // Its queue was deleted (or could not come back): it goes with it.
      Segment& seg = segments_[m.segment];
      --seg.live;
      seg.live_bytes -= m.size;
      continue;
    }
    broker::RecoveredMessage r;
    r.meta.sender = broker::Identity{s.pid, s.uid, s.gid, 0, 0, s.tcp};
    r.meta.enqueued = std::min(now, steady(s.enqueued_ms));
    if (s.expires_ms != 0) r.meta.expires = steady(s.expires_ms);
    r.meta.priority = s.priority;
    r.meta.journal_id = id;
    r.deliveries = m.deliveries;
    r.payload = s.payload;
    r.headers = s.headers;
    if (s.due_ms != 0) r.due = steady(s.due_ms);
    broker.recover_message(*q->second, r, now);
    live_[id] = Live{m.segment, m.size, m.deliveries, m.qid};
    ++stats.messages;
    stats.bytes += s.payload.size();
    if (m.deliveries != 0) ++stats.redelivered;
  }
}

}  // namespace qbus::storage
