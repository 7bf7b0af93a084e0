#include "qbus/proto/shm.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>

// Older C libraries (glibc 2.36 included) predate these; the values are the kernel ABI.
#ifndef MFD_NOEXEC_SEAL
#define MFD_NOEXEC_SEAL 0x0008U
#endif

namespace qbus::proto::shm {
namespace {

ShmError sys_error(Errc code, int err, std::string what) {
  what += ": ";
  what += std::strerror(err);
  return ShmError{code, err, std::move(what)};
}

ShmError check_error(Errc code, std::string what) {
  return ShmError{code, 0, std::move(what)};
}

// Resource exhaustion while sizing or reserving is the caller's quota, not our fault.
bool is_quota_errno(int err) {
  return err == ENOSPC || err == ENOMEM || err == EFBIG || err == EDQUOT;
}

std::string bytes_text(std::size_t n) {
  return std::to_string(n) + " bytes";
}

std::string seal_names(unsigned bits) {
  static constexpr struct {
    unsigned bit;
    const char* name;
  } kNames[] = {{F_SEAL_SHRINK, "shrink"},
                {F_SEAL_GROW, "grow"},
                {F_SEAL_WRITE, "write"},
                {F_SEAL_SEAL, "seal"}};
  std::string out;
  for (const auto& n : kNames) {
    if ((bits & n.bit) == 0) continue;
    if (!out.empty()) out += ", ";
    out += n.name;
  }
  return out;
}

std::size_t page_size() {
  static const std::size_t kPage = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  return kPage;
}

int memfd_with_fallback(const std::string& name) {
  constexpr unsigned kBase = MFD_CLOEXEC | MFD_ALLOW_SEALING;
  int fd = ::memfd_create(name.c_str(), kBase | MFD_NOEXEC_SEAL);
  // Kernels before 6.3 reject the unknown flag; the name was validated already, so
  // EINVAL here means exactly that.
  if (fd < 0 && errno == EINVAL) fd = ::memfd_create(name.c_str(), kBase);
  return fd;
}

}  // namespace

Mapping::Mapping(void* base, std::size_t map_size, std::size_t view_offset, std::size_t view_size,
                 bool writable) noexcept
    : base_(base),
      map_size_(map_size),
      view_(static_cast<std::byte*>(base) + view_offset),
      view_size_(view_size),
      writable_(writable) {}

Mapping::Mapping(Mapping&& other) noexcept
    : base_(std::exchange(other.base_, nullptr)),
      map_size_(std::exchange(other.map_size_, 0)),
      view_(std::exchange(other.view_, nullptr)),
      view_size_(std::exchange(other.view_size_, 0)),
      writable_(std::exchange(other.writable_, false)) {}

Mapping& Mapping::operator=(Mapping&& other) noexcept {
  if (this != &other) {
    reset();
    base_ = std::exchange(other.base_, nullptr);
    map_size_ = std::exchange(other.map_size_, 0);
    view_ = std::exchange(other.view_, nullptr);
    view_size_ = std::exchange(other.view_size_, 0);
    writable_ = std::exchange(other.writable_, false);
  }
  return *this;
}

void Mapping::reset() noexcept {
  // munmap fails only for arguments we never produce.
  if (base_ != nullptr) ::munmap(base_, map_size_);
  base_ = nullptr;
  map_size_ = 0;
  view_ = nullptr;
  view_size_ = 0;
  writable_ = false;
}

Result<UniqueFd> create_region(std::size_t size, std::string_view name, std::size_t max_size) {
  if (size == 0) return check_error(Errc::invalid_argument, "shared-memory region of 0 bytes");
  if (size > max_size) {
    return check_error(Errc::payload_too_large, "shared-memory region of " + bytes_text(size) +
                                                    " exceeds the limit of " +
                                                    bytes_text(max_size));
  }
  // off_t is signed; the kernel would refuse larger sizes with a less clear EINVAL/EFBIG.
  if (size > static_cast<std::size_t>(std::numeric_limits<off_t>::max())) {
    return check_error(Errc::payload_too_large,
                       "shared-memory region of " + bytes_text(size) + " exceeds off_t");
  }
  if (name.size() > kMaxNameSize || name.find('\0') != std::string_view::npos) {
    return check_error(Errc::invalid_argument,
                       "shared-memory region name must be at most 249 bytes without NUL");
  }

  UniqueFd fd(memfd_with_fallback(std::string(name)));
  if (!fd) {
    const int err = errno;
    return sys_error(is_quota_errno(err) ? Errc::quota_exceeded : Errc::io_error, err,
                     "memfd_create for a shared-memory region failed");
  }
  const auto length = static_cast<off_t>(size);
  if (::ftruncate(fd.get(), length) != 0) {
    const int err = errno;
    return sys_error(is_quota_errno(err) ? Errc::quota_exceeded : Errc::io_error, err,
                     "cannot size shared-memory region to " + bytes_text(size));
  }
  // Not F_SEAL_SEAL yet: seal_write must still be able to add F_SEAL_WRITE.
  if (::fcntl(fd.get(), F_ADD_SEALS, static_cast<int>(kSizeSeals)) != 0) {
    const int err = errno;  // read before the message is built: allocation may touch it
    return sys_error(Errc::io_error, err, "cannot seal shared-memory region against resizing");
  }
  return fd;
}

Result<void> reserve(int fd, std::size_t size) {
  int rc;
  do {
    rc = ::fallocate(fd, 0, 0, static_cast<off_t>(size));
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    const int err = errno;
    return sys_error(is_quota_errno(err) ? Errc::quota_exceeded : Errc::io_error, err,
                     "cannot reserve " + bytes_text(size) + " for a shared-memory region");
  }
  return {};
}

Result<void> seal_write(int fd) {
  if (::fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE) != 0) {
    const int err = errno;
    if (err == EBUSY) {
      return sys_error(Errc::invalid_argument, err,
                       "cannot seal shared-memory region against writes while a writable "
                       "mapping of it exists; unmap the writable mapping before sending the "
                       "region");
    }
    if (err == EINVAL) {
      return sys_error(Errc::invalid_argument, err,
                       "cannot seal against writes: the fd is not a sealable memfd");
    }
    if (err == EPERM) {
      // F_SEAL_SEAL is set: fine if that happened after an earlier F_SEAL_WRITE.
      auto have = seals(fd);
      if (have && (*have & F_SEAL_WRITE) != 0) return {};
      return sys_error(Errc::invalid_argument, err,
                       "cannot seal against writes: the region's seals are already frozen");
    }
    return sys_error(Errc::io_error, err, "cannot seal shared-memory region against writes");
  }
  if (::fcntl(fd, F_ADD_SEALS, F_SEAL_SEAL) != 0) {
    const int err = errno;
    return sys_error(Errc::io_error, err, "cannot seal shared-memory region's seals");
  }
  return {};
}

Result<std::size_t> region_size(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    return sys_error(err == EBADF ? Errc::invalid_argument : Errc::io_error, err,
                     "cannot stat shared-memory region");
  }
  if (!S_ISREG(st.st_mode)) {
    return check_error(Errc::invalid_argument, "shared-memory fd is not a regular file");
  }
  return static_cast<std::size_t>(st.st_size);
}

Result<unsigned> seals(int fd) {
  const int bits = ::fcntl(fd, F_GET_SEALS);
  if (bits < 0) {
    const int err = errno;
    if (err == EINVAL) {
      return sys_error(Errc::invalid_argument, err,
                       "fd is not a memfd (the file does not support seals)");
    }
    return sys_error(err == EBADF ? Errc::invalid_argument : Errc::io_error, err,
                     "cannot read the seals of a shared-memory region");
  }
  return static_cast<unsigned>(bits);
}

Result<std::size_t> verify_sealed(int fd, unsigned required) {
  auto have = seals(fd);
  if (!have) return have.error();
  const unsigned missing = required & ~*have;
  if (missing != 0) {
    return check_error(Errc::invalid_argument,
                       "shared-memory region lacks required seals: " + seal_names(missing));
  }
  // Only now: with the size seals in place the size read below is final.
  return region_size(fd);
}

// The checks before mapping the first `size` bytes of a region that keeps its size.
static Result<void> check_prefix(int fd, std::size_t size) {
  if (size == 0) return check_error(Errc::invalid_argument, "cannot map 0 bytes");
  auto region = verify_sealed(fd, kSizeSeals);
  if (!region) return region.error();
  if (size > *region) {
    return check_error(
        Errc::invalid_argument,
        "cannot map " + bytes_text(size) + " of a shared-memory region of " + bytes_text(*region));
  }
  return {};
}

Result<Mapping> map_writable(int fd, std::size_t size) {
  if (auto ok = check_prefix(fd, size); !ok) return ok.error();
  void* base = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) {
    const int err = errno;
    if (err == EPERM) {
      return sys_error(Errc::invalid_argument, err,
                       "cannot map shared-memory region for writing: it is sealed against "
                       "writes");
    }
    return sys_error(Errc::io_error, err,
                     "cannot map " + bytes_text(size) + " of a shared-memory region");
  }
  return Mapping(base, size, 0, size, true);
}

Result<Mapping> populate_writable(int fd, std::size_t size, bool fork_private,
                                  const std::function<void()>& between_steps) {
  auto map = map_writable(fd, size);
  if (!map) return map;
  void* base = map->mutable_bytes().data();
  if (fork_private) ::madvise(base, size, MADV_DONTFORK);  // fails only for a bad range
  // Advice only: refused (no THP in this kernel) it leaves small pages, which still work.
  if (size >= kHugePageSize) ::madvise(base, size, MADV_HUGEPAGE);
  // In steps: populating holds the process's mmap lock, and a thread of the same process
  // that unmaps (a sender sealing its region while a pool worker populates the next) waits
  // for it. Measured on a 2-core VM, unmapping 64 MiB beside a worker populating 64 MiB
  // took 3.3 ms with one call, 1.0 ms in 2 MiB steps and 0.21 ms in 256 KiB steps, against
  // 0.19 ms with no worker (huge pages on; the steps cost 256 system calls per 64 MiB).
  // Steps alone still let each new step's lock overtake the waiting unmap (rwsem readers
  // may steal the lock from a waiting writer for milliseconds), hence between_steps, where
  // a pool worker stops while its process unmaps.
  constexpr std::size_t kStep = std::size_t{256} << 10;
  int rc = 0;
  for (std::size_t done = 0; done < size && rc == 0;) {
    const std::size_t step = std::min(kStep, size - done);
    rc = ::madvise(static_cast<std::byte*>(base) + done, step, MADV_POPULATE_WRITE);
    if (rc == 0) {
      done += step;
      if (between_steps && done < size) between_steps();
    } else if (errno == EINTR) {
      rc = 0;
    }
  }
  if (rc == 0) return map;
  const int err = errno;
  if (err == EINVAL) {  // before Linux 5.14: reserve the pages, let the writer fault them in
    if (auto r = reserve(fd, size); !r) return r.error();
    return map;
  }
  // ENOMEM (among the quota errnos): the memory cgroup's limit; EFAULT: what would have
  // been a SIGBUS.
  return sys_error(err == EFAULT || is_quota_errno(err) ? Errc::quota_exceeded : Errc::io_error,
                   err, "cannot allocate the " + bytes_text(size) + " of a shared-memory region");
}

Result<Mapping> map_readonly(int fd, std::size_t offset, std::size_t length) {
  if (length == 0) return check_error(Errc::invalid_argument, "cannot map 0 bytes");
  auto region = verify_sealed(fd, kReadSeals);
  if (!region) return region.error();
  const std::size_t size = *region;
  // Written so that no sum can wrap: offset <= size first, then compare with what is left.
  if (offset > size || length > size - offset) {
    return check_error(Errc::invalid_argument,
                       "range of " + bytes_text(length) + " at offset " + std::to_string(offset) +
                           " lies outside the shared-memory region of " + bytes_text(size));
  }
  const std::size_t start = offset - offset % page_size();
  const std::size_t lead = offset - start;
  const std::size_t map_size = lead + length;  // <= size, so no overflow
  void* base = ::mmap(nullptr, map_size, PROT_READ, MAP_SHARED, fd, static_cast<off_t>(start));
  if (base == MAP_FAILED) {
    const int err = errno;
    return sys_error(Errc::io_error, err,
                     "cannot map " + bytes_text(length) + " of a shared-memory region");
  }
  return Mapping(base, map_size, lead, length, false);
}

Result<Mapping> map_shared_readonly(int fd, std::size_t size) {
  if (auto ok = check_prefix(fd, size); !ok) return ok.error();
  void* base = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) {
    const int err = errno;
    return sys_error(Errc::io_error, err,
                     "cannot map " + bytes_text(size) + " of a shared-memory region");
  }
  return Mapping(base, size, 0, size, false);
}

}  // namespace qbus::proto::shm
