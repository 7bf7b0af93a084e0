// A Dir in memory for the storage tests (daemon/src/storage/files.hpp) that models what a
// disk keeps when the power goes: power_loss() forgets every byte no sync covered (or keeps
// a prefix of them: a write partly on the platter), and a capacity makes appends fail with
// ENOSPC, as a full file system does. Not thread-safe, but for the capacity, which a test
// may change while a journal's thread writes.
#pragma once

#include <atomic>
#include <cerrno>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "storage/files.hpp"

namespace qbus::storage::fakes {

class FaultDir final : public Dir {
 public:
  struct File {
    std::vector<std::byte> data;
    std::size_t synced = 0;  // bytes a sync covered
  };

  IoStatus open_append(const std::string& name, std::unique_ptr<AppendFile>& out) override {
    out = std::make_unique<Handle>(*this, name);
    files_[name];
    return {};
  }
  IoStatus read(const std::string& name, std::vector<std::byte>& out) override {
    auto it = files_.find(name);
    if (it == files_.end()) return IoStatus{ENOENT, "open " + name};
    out = it->second.data;
    return {};
  }
  IoStatus list(std::vector<std::string>& names) override {
    names.clear();
    for (const auto& [n, f] : files_)
      names.push_back(n);
    return {};
  }
  IoStatus remove(const std::string& name) override {
    return files_.erase(name) != 0 ? IoStatus{} : IoStatus{ENOENT, "remove " + name};
  }
  IoStatus sync() override { return {}; }

  // The power goes: each file keeps what a sync covered and `keep(unsynced bytes)` more.
  template <typename Keep>
  void power_loss(Keep keep) {
    for (auto& [n, f] : files_) {
      const std::size_t extra = keep(f.data.size() - f.synced);
      f.data.resize(f.synced + extra);
    }
  }
  void power_loss() {
    power_loss([](std::size_t) { return std::size_t{0}; });
  }
  // Appends past this many bytes in all fail with ENOSPC (after writing what fits).
  void set_capacity(std::size_t bytes) { capacity_ = bytes; }
  const File& file(const std::string& name) { return files_[name]; }
  // Changes a file's bytes behind the journal's back (damage, a torn write).
  std::vector<std::byte>& bytes(const std::string& name) { return files_[name].data; }
  std::vector<std::string> names() const {
    std::vector<std::string> v;
    for (const auto& [n, f] : files_)
      v.push_back(n);
    return v;
  }

 private:
  class Handle final : public AppendFile {
   public:
    Handle(FaultDir& dir, std::string name) : dir_(dir), name_(std::move(name)) {}
    IoStatus append(Bytes data) override {
      File& f = dir_.files_[name_];
      const std::size_t used = dir_.used();
      const std::size_t room = used >= dir_.capacity_ ? 0 : dir_.capacity_ - used;
      const std::size_t n = std::min(room, data.size());
      f.data.insert(f.data.end(), data.begin(), data.begin() + static_cast<std::ptrdiff_t>(n));
      if (n < data.size()) return IoStatus{ENOSPC, "write " + name_};
      return {};
    }
    IoStatus sync() override {
      File& f = dir_.files_[name_];
      f.synced = f.data.size();
      return {};
    }
    IoStatus truncate(std::uint64_t size) override {
      File& f = dir_.files_[name_];
      f.data.resize(size);
      if (f.synced > size) f.synced = size;
      return {};
    }
    std::uint64_t size() const override { return dir_.files_[name_].data.size(); }

   private:
    FaultDir& dir_;
    std::string name_;
  };

  std::size_t used() const {
    std::size_t n = 0;
    for (const auto& [name, f] : files_)
      n += f.data.size();
    return n;
  }

  std::map<std::string, File> files_;
  std::atomic<std::size_t> capacity_ = SIZE_MAX;
};

}  // namespace qbus::storage::fakes
