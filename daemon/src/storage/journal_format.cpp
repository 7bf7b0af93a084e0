#include "storage/journal_format.hpp"

#include <algorithm>
#include <cstring>

#include "storage/crc32c.hpp"

namespace qbus::storage {
namespace {

constexpr char kMagic[8] = {'Q', 'B', 'U', 'S', 'J', 'R', 'N', 'L'};

void put_u16(std::byte* at, std::uint16_t v) {
  at[0] = std::byte(v & 0xFF);
  at[1] = std::byte(v >> 8);
}
void put_u32(std::byte* at, std::uint32_t v) {
  for (int i = 0; i < 4; ++i)
    at[i] = std::byte((v >> (8 * i)) & 0xFF);
}
void put_u64(std::byte* at, std::uint64_t v) {
  for (int i = 0; i < 8; ++i)
    at[i] = std::byte((v >> (8 * i)) & 0xFF);
}
std::uint32_t get_u32(const std::byte* at) {
  std::uint32_t v = 0;
  for (int i = 3; i >= 0; --i)
    v = (v << 8) | static_cast<std::uint8_t>(at[i]);
  return v;
}
std::uint64_t get_u64(const std::byte* at) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i)
    v = (v << 8) | static_cast<std::uint8_t>(at[i]);
  return v;
}
std::uint16_t get_u16(const std::byte* at) {
  return static_cast<std::uint16_t>(static_cast<std::uint8_t>(at[0]) |
                                    (static_cast<std::uint8_t>(at[1]) << 8));
}

// The CRC of a fragment covers its type, so that a fragment cannot be taken for another kind.
std::uint32_t fragment_crc(std::uint8_t type, Bytes data) {
  const std::byte t{type};
  return crc32c_extend(crc32c(Bytes(&t, 1)), data);
}

bool all_zero(Bytes b) {
  return std::all_of(b.begin(), b.end(), [](std::byte x) { return x == std::byte{0}; });
}

// Reads the records of a segment whose header was checked; see read_segment().
class Parser {
 public:
  Parser(Bytes file, const std::function<void(Bytes)>& on_record, ReadReport& report)
      : file_(file), on_record_(on_record), report_(report) {}

  void run() {
    std::uint64_t pos = kFileHeaderSize;
    while (pos < file_.size()) {
      const std::uint64_t block_end = (pos / kBlockSize + 1) * kBlockSize;
      if (block_end - pos < kFragmentHeaderSize) {
        pos = block_end;  // the block's zero trailer
        continue;
      }
      const std::uint64_t limit = std::min<std::uint64_t>(block_end, file_.size());
      if (!step(pos, block_end, limit)) return;
    }
    finish(file_.size());
  }

 private:
  // Reads the fragment at `pos` and moves `pos` past it (or past the damage); false once the
  // tail is torn.
  bool step(std::uint64_t& pos, std::uint64_t block_end, std::uint64_t limit) {
    const Bytes rest = file_.subspan(pos);
    if (limit - pos < kFragmentHeaderSize) return torn(pos);
    const std::byte* h = file_.data() + pos;
    const std::uint32_t crc = get_u32(h);
    const std::uint16_t length = get_u16(h + 4);
    const auto type = static_cast<std::uint8_t>(h[6]);
    const std::uint64_t end = pos + kFragmentHeaderSize + length;
    if (type == 0 && length == 0 && crc == 0 && all_zero(rest)) {
      finish(pos);  // zeros to the end: space the file had, never written
      pos = file_.size();
      return false;
    }
    if (end > block_end) return skip(pos, block_end, "a fragment runs past its block");
    if (end > file_.size()) return torn(pos);
    const Bytes data = file_.subspan(pos + kFragmentHeaderSize, length);
    if (fragment_crc(type, data) != crc) {
      // Nothing good after it: a write the crash cut short. Else damage in the middle.
      if (all_zero(file_.subspan(end))) return torn(pos);
      return skip(pos, block_end, "checksum mismatch");
    }
    take(pos, static_cast<FragmentType>(type), data);
    pos = end;
    return true;
  }

  void take(std::uint64_t pos, FragmentType type, Bytes data) {
    switch (type) {
      case FragmentType::full:
        drop_partial(pos, "a record's FIRST fragment without its LAST");
        emit(data);
        return;
      case FragmentType::first:
        drop_partial(pos, "a record's FIRST fragment without its LAST");
        partial_.assign(data.begin(), data.end());
        partial_at_ = pos;
        in_record_ = true;
        return;
      case FragmentType::middle:
      case FragmentType::last:
        if (!in_record_) {
          report_.skipped.push_back({pos, kFragmentHeaderSize + data.size(),
                                     "a MIDDLE or LAST fragment without its FIRST"});
          return;
        }
        partial_.insert(partial_.end(), data.begin(), data.end());
        if (type == FragmentType::last) {
          in_record_ = false;
          emit(partial_);
        }
        return;
    }
    report_.skipped.push_back({pos, kFragmentHeaderSize + data.size(),
                               "unknown fragment type " + std::to_string(int(type))});
  }

  void emit(Bytes record) {
    ++report_.records;
    on_record_(record);
  }

  void drop_partial(std::uint64_t pos, const char* why) {
    if (!in_record_) return;
    in_record_ = false;
    report_.skipped.push_back({partial_at_, pos - partial_at_, why});
  }

  bool skip(std::uint64_t& pos, std::uint64_t block_end, const char* why) {
    if (in_record_) {
      in_record_ = false;
      report_.skipped.push_back({partial_at_, pos - partial_at_, "a record cut by damage"});
    }
    const std::uint64_t to = std::min<std::uint64_t>(block_end, file_.size());
    report_.skipped.push_back({pos, to - pos, why});
    pos = to;
    return true;
  }

  bool torn(std::uint64_t pos) {
    finish(pos);
    return false;
  }

  // The good data ends at `pos`; whatever follows (and a record begun before it) is torn.
  void finish(std::uint64_t pos) {
    const std::uint64_t start = in_record_ ? partial_at_ : pos;
    in_record_ = false;
    report_.end = start;
    report_.torn_bytes = all_zero(file_.subspan(start)) ? 0 : file_.size() - start;
  }

  Bytes file_;
  const std::function<void(Bytes)>& on_record_;
  ReadReport& report_;
  std::vector<std::byte> partial_;
  std::uint64_t partial_at_ = 0;
  bool in_record_ = false;
};

}  // namespace

std::vector<std::byte> segment_header(std::uint64_t segment) {
  std::vector<std::byte> h(kFileHeaderSize);
  std::memcpy(h.data(), kMagic, sizeof kMagic);
  put_u32(h.data() + 8, kFormatVersion);
  put_u64(h.data() + 16, segment);
  put_u32(h.data() + 28, crc32c(Bytes(h.data(), 28)));
  return h;
}

void SegmentWriter::add(Bytes record, std::vector<std::byte>& out) {
  bool begin = true;
  do {
    std::uint64_t room = kBlockSize - offset_ % kBlockSize;
    if (room < kFragmentHeaderSize) {
      out.insert(out.end(), room, std::byte{0});
      offset_ += room;
      room = kBlockSize;
    }
    const std::size_t n = static_cast<std::size_t>(
        std::min<std::uint64_t>(record.size(), room - kFragmentHeaderSize));
    const bool end = n == record.size();
    const FragmentType type = begin && end ? FragmentType::full
                              : begin      ? FragmentType::first
                              : end        ? FragmentType::last
                                           : FragmentType::middle;
    fragment(type, record.first(n), out);
    record = record.subspan(n);
    begin = false;
  } while (!record.empty());
}

void SegmentWriter::fragment(FragmentType type, Bytes data, std::vector<std::byte>& out) {
  const auto t = static_cast<std::uint8_t>(type);
  std::byte h[kFragmentHeaderSize];
  put_u32(h, fragment_crc(t, data));
  put_u16(h + 4, static_cast<std::uint16_t>(data.size()));
  h[6] = std::byte{t};
  out.insert(out.end(), h, h + kFragmentHeaderSize);
  out.insert(out.end(), data.begin(), data.end());
  offset_ += kFragmentHeaderSize + data.size();
}

bool read_segment(Bytes file, const std::function<void(Bytes)>& on_record, ReadReport& report) {
  report = ReadReport{};
  if (file.size() < kFileHeaderSize || std::memcmp(file.data(), kMagic, sizeof kMagic) != 0) {
    report.header = ReadReport::Header::not_a_journal;
    return false;
  }
  report.version = get_u32(file.data() + 8);
  report.segment = get_u64(file.data() + 16);
  if (get_u32(file.data() + 28) != crc32c(file.first(28))) {
    report.header = ReadReport::Header::damaged;
    return false;
  }
  if (report.version != kFormatVersion) {
    report.header = ReadReport::Header::unknown_version;
    return false;
  }
  Parser(file, on_record, report).run();
  return true;
}

}  // namespace qbus::storage
