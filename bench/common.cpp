#include "common.hpp"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace qbus::bench {

// CPU time of a process in seconds: the sum of its threads' run times from
// /proc/<pid>/task/*/schedstat (nanoseconds), else utime + stime from /proc/<pid>/stat
// (clock ticks, usually 10 ms: too coarse for an idle daemon).
double cpu_seconds(pid_t pid) {
  const std::string proc = "/proc/" + std::to_string(pid);
  std::error_code ec;
  unsigned long long ns = 0;
  bool have_schedstat = false;
  for (const auto& task : std::filesystem::directory_iterator(proc + "/task", ec)) {
    std::ifstream f(task.path() / "schedstat");
    unsigned long long run = 0;
    if (!(f >> run)) continue;
    ns += run;
    have_schedstat = true;
  }
  if (have_schedstat) return static_cast<double>(ns) / 1e9;
  std::ifstream f(proc + "/stat");
  std::string stat((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::istringstream rest(stat.substr(stat.rfind(')') + 2));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

qbus::Client connect(const std::string& address) {
  return qbus::Client(qbus::ClientOptions{address, "qbus-bench", seconds(30)});
}

int sync_and_check(qbus::Client& c, const char* who) {
  c.sync();
  if (c.send_failures().count == 0) return 0;
  std::fprintf(stderr, "qbus-bench: %s: %llu send(s) failed: %s\n", who,
               static_cast<unsigned long long>(c.send_failures().count),
               c.send_failures().last_message.c_str());
  return 1;
}

long long now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

double us(double ns) {
  return ns / 1e3;
}
double ratio(double a, double b) {
  return b > 0 ? a / b : 0;
}

long cpus_online() {
  return ::sysconf(_SC_NPROCESSORS_ONLN);
}

double median_of(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

bool in_memory_fs(const std::string& path) {
  struct statfs st {};
  if (::statfs(path.c_str(), &st) != 0) return false;
  return st.f_type == TMPFS_MAGIC || st.f_type == RAMFS_MAGIC;
}

StateDir::StateDir(const std::string& parent) {
  std::string base = parent;
  if (base.empty()) {
    const char* t = std::getenv("TMPDIR");
    base = t && *t ? t : "/tmp";
    if (in_memory_fs(base)) base = "/var/tmp";
  }
  std::string tmpl = base + "/qbus-bench-state-XXXXXX";
  if (!::mkdtemp(tmpl.data())) {
    throw std::runtime_error("cannot make a state directory under " + base + ": " +
                             std::strerror(errno));
  }
  path_ = tmpl;
  in_memory_ = in_memory_fs(path_);
}

StateDir::~StateDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

unsigned long long StateDir::bytes() const {
  unsigned long long n = 0;
  std::error_code ec;
  for (const auto& e : std::filesystem::recursive_directory_iterator(path_, ec)) {
    std::error_code size_ec;
    if (e.is_regular_file(size_ec)) {
      const auto size = e.file_size(size_ec);
      if (!size_ec) n += size;
    }
  }
  return n;
}

qbus::QueueOptions with_durable(qbus::QueueOptions q, const std::string& name) {
  using F = qbus::QueueOptions::Fsync;
  if (name == "off") return q;
  q.durable = true;
  q.fsync = name == "always" ? F::always : name == "batch" ? F::batch : F::none;
  return q;
}

std::uint64_t xor_words(std::span<const std::byte> in) {
  std::uint64_t x = 0;
  std::size_t i = 0;
  for (; i + 8 <= in.size(); i += 8) {
    std::uint64_t w;
    std::memcpy(&w, in.data() + i, sizeof w);
    x ^= w;
  }
  for (; i < in.size(); ++i)
    x ^= static_cast<std::uint64_t>(in[i]) << (8 * (i % 8));
  return x;
}

std::uint64_t fill_words(std::span<std::byte> out, std::uint64_t seed) {
  std::uint64_t w = seed;
  std::size_t i = 0;
  for (; i + 8 <= out.size(); i += 8) {
    w = w * 6364136223846793005ULL + 1442695040888963407ULL;
    std::memcpy(out.data() + i, &w, sizeof w);
  }
  for (; i < out.size(); ++i)
    out[i] = static_cast<std::byte>(seed + i);
  return xor_words(out);
}

}  // namespace qbus::bench
