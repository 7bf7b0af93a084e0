// Shared-memory regions as sealed memfds (docs/architecture.md, principle 5): the OS layer only.
//
// Lifecycle of a region: the creator calls create_region (sized, sealed against shrink and
// grow), the writer allocates its pages and fills it through populate_writable (or reserve()
// and map_writable), drops that mapping,
// calls seal_write and passes the fd on with SCM_RIGHTS. A receiver never trusts the sender:
// map_readonly re-checks the seals and the bounds itself, so what it maps can neither
// change under it nor SIGBUS.
//
// Error style: every operation that can fail returns Result<T>, which holds either the
// value or a ShmError (an Errc for programs, the errno when a system call failed, and one
// sentence for people). Nothing here throws except std::bad_alloc while composing that
// sentence. Which Errc each failure gets:
//   invalid_argument  size 0, a bad name, a range outside the region or overflowing,
//                     an fd that is not a memfd or lacks the required seals, a writable
//                     mapping still alive at seal_write (sys_errno EBUSY).
//   payload_too_large size above the caller's maximum.
//   quota_exceeded    the kernel would not reserve the pages (ENOSPC, ENOMEM, EFBIG,
//                     EDQUOT): a full tmpfs, a memory cgroup limit, RLIMIT_FSIZE.
//   io_error          any other system call failure; sys_errno says which.
//
// Thread-safety: none beyond the kernel's. UniqueFd and Mapping are plain owners: use one
// object from one thread at a time; distinct objects are independent. Seals are
// per-file, so they hold for every process and every fd that refers to the region.
#pragma once

#include "qbus/proto/unique_fd.hpp"

#include <fcntl.h>

#include <cstddef>
#include <cstdlib>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

#include "qbus/errc.hpp"

namespace qbus::proto::shm {

// Seals every region carries from creation on: its size can never change, so a mapping
// checked against the size once stays inside the file for good.
inline constexpr unsigned kSizeSeals = F_SEAL_SHRINK | F_SEAL_GROW;
// Seals a receiver insists on before mapping: additionally, nobody can write any more, so
// the bytes it validates are the bytes it later uses.
inline constexpr unsigned kReadSeals = kSizeSeals | F_SEAL_WRITE;
// memfd_create forbids longer names (NAME_MAX minus the "memfd:" prefix).
inline constexpr std::size_t kMaxNameSize = 249;

struct ShmError {
  Errc code = Errc::io_error;
  int sys_errno = 0;  // errno of the failing system call; 0 when the check was ours
  std::string text;   // one sentence naming the operation, the size or range, and why
};

// The value or the error. Reading the value of a failed result (or the error of a
// successful one) is a programming error and aborts.
template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}
  Result(ShmError error) : v_(std::in_place_index<1>, std::move(error)) {}

  bool ok() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return ok(); }

  T& value() & noexcept { return *checked<0>(); }
  const T& value() const& noexcept { return *checked<0>(); }
  T&& value() && noexcept { return std::move(*checked<0>()); }
  T* operator->() noexcept { return checked<0>(); }
  const T* operator->() const noexcept { return checked<0>(); }
  T& operator*() & noexcept { return *checked<0>(); }
  const T& operator*() const& noexcept { return *checked<0>(); }
  T&& operator*() && noexcept { return std::move(*checked<0>()); }
  const ShmError& error() const noexcept { return *checked<1>(); }

 private:
  template <std::size_t I>
  auto* checked() noexcept {
    auto* p = std::get_if<I>(&v_);
    if (p == nullptr) std::abort();
    return p;
  }
  template <std::size_t I>
  const auto* checked() const noexcept {
    const auto* p = std::get_if<I>(&v_);
    if (p == nullptr) std::abort();
    return p;
  }

  std::variant<T, ShmError> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(ShmError error) : error_(std::move(error)) {}

  bool ok() const noexcept { return !error_.has_value(); }
  explicit operator bool() const noexcept { return ok(); }
  const ShmError& error() const noexcept {
    if (!error_) std::abort();
    return *error_;
  }

 private:
  std::optional<ShmError> error_;
};

using proto::UniqueFd;  // <qbus/proto/unique_fd.hpp>

// Owns one mmap'ed range and unmaps it on destruction. The mapping keeps the region's
// pages alive on its own: the fd it came from may be closed first. A writable mapping
// blocks seal_write for as long as it exists (in this and in any forked process that
// inherited it), so drop it with reset() before sealing. The kernel counts any MAP_SHARED
// mapping made through a writable fd before the write seal as writable, even PROT_READ,
// which is why this layer offers no read-only mapping of an unsealed region.
class Mapping {
 public:
  Mapping() noexcept = default;
  Mapping(Mapping&& other) noexcept;
  Mapping& operator=(Mapping&& other) noexcept;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() { reset(); }

  // The requested range (not the page-aligned mapping around it). Valid until reset(),
  // destruction or move-from.
  std::span<const std::byte> bytes() const noexcept { return {view_, view_size_}; }
  // The same range for writing; empty for a read-only mapping.
  std::span<std::byte> mutable_bytes() noexcept {
    return writable_ ? std::span<std::byte>{view_, view_size_} : std::span<std::byte>{};
  }
  bool writable() const noexcept { return writable_; }
  bool empty() const noexcept { return base_ == nullptr; }
  void reset() noexcept;

 private:
  friend Result<Mapping> map_writable(int fd, std::size_t size);
  friend Result<Mapping> map_readonly(int fd, std::size_t offset, std::size_t length);

  // Maps the first `size` bytes of a region that stays writable (a named region that other
  // processes write while this one reads) for reading only. Requires kSizeSeals, so the
  // mapping cannot fault; the bytes may change under the reader at any time, which is what
  // sharing a work area means. `fd` may be open read-only.
  Result<Mapping> map_shared_readonly(int fd, std::size_t size);
  friend Result<Mapping> map_shared_readonly(int fd, std::size_t size);
  Mapping(void* base, std::size_t map_size, std::size_t view_offset, std::size_t view_size,
          bool writable) noexcept;

  void* base_ = nullptr;
  std::size_t map_size_ = 0;
  std::byte* view_ = nullptr;
  std::size_t view_size_ = 0;
  bool writable_ = false;
};

// Creates a close-on-exec memfd of exactly `size` bytes, sealed against shrink and grow but
// still writable and still sealable (the creator adds F_SEAL_WRITE with seal_write when
// handing the bytes over). No page is allocated here: a page is charged to the memory
// cgroup of the process that first writes it (or reserve()s it), so qbusd, which creates
// regions for its clients, never pays for their contents. `name` only labels the fd in
// /proc (as "memfd:NAME"); at most kMaxNameSize bytes and no NUL. Size 0 and sizes above
// `max_size` are refused before any system call.
Result<UniqueFd> create_region(std::size_t size, std::string_view name, std::size_t max_size);

// Allocates every page of the first `size` bytes now, charged to the calling process:
// a full tmpfs or an exhausted memory cgroup becomes quota_exceeded here instead of a
// SIGBUS at first touch. The writer of a region calls it before filling the region.
Result<void> reserve(int fd, std::size_t size);

// Adds F_SEAL_WRITE and then F_SEAL_SEAL, making the region immutable for everyone for
// good. Fails with invalid_argument (sys_errno EBUSY) while any writable shared mapping of
// it exists anywhere; nothing is changed then and the call may be retried after unmapping.
// Succeeds without change on a region that is already write-sealed.
Result<void> seal_write(int fd);

// Current size of the file behind `fd` (fstat).
Result<std::size_t> region_size(int fd);

// The F_SEAL_* bits on `fd`. Fails with invalid_argument (sys_errno EINVAL) when the file
// does not support sealing, i.e. it is not a memfd.
Result<unsigned> seals(int fd);

// Checks that `fd` is a memfd carrying at least `required` seals (kReadSeals by default)
// and returns its size, without mapping anything. Because the size seals are checked
// before the size is read, the returned size cannot change afterwards.
Result<std::size_t> verify_sealed(int fd, unsigned required = kReadSeals);

// Maps the first `size` bytes of a region for reading and writing (MAP_SHARED). The fd
// must carry kSizeSeals and must not be write-sealed; `size` must be 1..region size.
Result<Mapping> map_writable(int fd, std::size_t size);

// A fresh region's writable mapping with every page allocated now: map_writable, then
// MADV_POPULATE_WRITE, so a shortage (a memory cgroup limit) is quota_exceeded here
// rather than a SIGBUS on the writer's first store, and filling the region takes no page
// fault. Regions of kHugePageSize or more first ask for transparent huge pages
// (MADV_HUGEPAGE), which the kernel honours when shmem_enabled under
// /sys/kernel/mm/transparent_hugepage is advise, within_size or always: 32 page
// allocations for 64 MiB instead of 16384, about 5x faster to populate and to unmap.
// Where huge pages are off, or the kernel predates MADV_POPULATE_WRITE (5.14: it falls
// back to reserve() and lets pages fault in), the result is the same bytes, only slower.
// `fork_private`: a child forked from now on does not inherit the mapping (MADV_DONTFORK,
// before any page is populated), for a region its writer must be able to seal: the kernel
// refuses the write seal while any writable mapping of it exists, a child's included.
// `between_steps`, when set, runs between the steps populating is done in (256 KiB each),
// outside the kernel's locks; it may block: a pool worker waits there while its process
// unmaps a region (RegionPool::HoldOff in libqbus).
inline constexpr std::size_t kHugePageSize = std::size_t{2} << 20;
Result<Mapping> populate_writable(int fd, std::size_t size, bool fork_private,
                                  const std::function<void()>& between_steps = {});

// Maps bytes [offset, offset + length) of a region read-only, after verify_sealed(fd)
// and a bounds check that cannot overflow. `offset` need not be page-aligned: the mapping
// starts at the page boundary below it and bytes() starts exactly at `offset`. `length`
// must be at least 1.
Result<Mapping> map_readonly(int fd, std::size_t offset, std::size_t length);

// Maps the first `size` bytes of a region that stays writable (a named region that other
// processes write while this one reads) for reading only. Requires kSizeSeals, so the
// mapping cannot fault; the bytes may change under the reader at any time, which is what
// sharing a work area means. `fd` may be open read-only.
Result<Mapping> map_shared_readonly(int fd, std::size_t size);

}  // namespace qbus::proto::shm
