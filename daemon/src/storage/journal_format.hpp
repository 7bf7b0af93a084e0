// The journal's on-disk format (docs/journal.md): a segment file is a 32-byte header and
// then blocks of kBlockSize bytes, each holding record fragments behind a 7-byte header
// (CRC-32C of type and data, data length, type). A record larger than what is left of a
// block is split into FIRST, MIDDLE... and LAST fragments; a block's last 6 bytes or fewer,
// too few for a header, are zeros. The fixed block grid is what lets a reader step over a
// damaged record: it resumes at the next block, losing at most one block's records.
//
// SegmentWriter frames records into a byte sink; read_segment() takes a whole segment back
// apart, telling a torn tail (cut, as a crash leaves it) from damage in the middle
// (skipped). Neither does I/O or keeps state between calls beyond its own object; not
// thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

namespace qbus::storage {

using Bytes = std::span<const std::byte>;

inline constexpr std::size_t kBlockSize = 32 * 1024;
inline constexpr std::size_t kFileHeaderSize = 32;
inline constexpr std::size_t kFragmentHeaderSize = 7;  // crc u32, length u16, type u8
inline constexpr std::uint32_t kFormatVersion = 1;

enum class FragmentType : std::uint8_t { full = 1, first = 2, middle = 3, last = 4 };

// The 32 bytes a segment starts with: "QBUSJRNL", the format version, the segment's number,
// and a CRC-32C of the 28 bytes before it.
std::vector<std::byte> segment_header(std::uint64_t segment);

// Frames records, appending the bytes to `out` (the caller writes them to the file).
// `offset` is the segment's size so far: a writer may continue a segment it reopened.
class SegmentWriter {
 public:
  explicit SegmentWriter(std::uint64_t offset = kFileHeaderSize) : offset_(offset) {}
  // Appends `record`'s fragments (one, for an empty record) to `out`.
  void add(Bytes record, std::vector<std::byte>& out);
  std::uint64_t offset() const { return offset_; }

 private:
  void fragment(FragmentType type, Bytes data, std::vector<std::byte>& out);
  std::uint64_t offset_;
};

// What read_segment() found besides the records.
struct ReadReport {
  enum class Header : std::uint8_t { ok, not_a_journal, unknown_version, damaged };
  Header header = Header::ok;
  std::uint32_t version = 0;  // the header's, unless not_a_journal
  std::uint64_t segment = 0;
  std::uint64_t records = 0;
  // Where the good data ends: a torn tail (a record cut off by the end of the file, or one
  // whose checksum fails with nothing after it) starts here, and `torn_bytes` follow it.
  std::uint64_t end = 0;
  std::uint64_t torn_bytes = 0;
  // Damage before the tail: each skipped stretch, as the offset it starts at and its size.
  struct Skip {
    std::uint64_t offset = 0;
    std::uint64_t bytes = 0;
    std::string why;
  };
  std::vector<Skip> skipped;
};

// Reads segment `file` from its start, calling `on_record` for each whole record in order
// (the span is valid during the call). Returns false, calling nothing, when the header is
// not a journal's of a version this code reads.
bool read_segment(Bytes file, const std::function<void(Bytes)>& on_record, ReadReport& report);

}  // namespace qbus::storage
