// relay: the ceiling for any message broker on this machine, plus two raw-socket baselines.
//
//   relay relay    [--messages N] [--size B] [--runs R] [--json]
//   relay oneway   [--messages N] [--size B] [--runs R] [--json]
//   relay pingpong [--round-trips N] [--warmup N] [--size B] [--runs R] [--json]
//   relay all      [all of the above options] [--json]
//
// relay:    producer -> relay -> consumer, three fork()ed processes joined by two Unix
//           SOCK_STREAM socketpairs. The producer writes length-prefixed frames (4-byte
//           little-endian length + payload) in ~64 KiB writes; the relay reads big chunks,
//           walks the length prefixes and writes every complete frame of the chunk on in one
//           write (the partial tail waits for the next read); the consumer counts frames.
//           This is the least work any broker must do per message (read, split, write), so
//           its rate is the ceiling a broker is measured against.
// oneway:   the same producer straight into the same consumer, no relay.
// pingpong: one frame at a time between two processes over one socketpair; the round-trip
//           time percentiles (p50/p99 in µs) over N round trips.
//
// Every figure is the median of --runs runs. Plain POSIX and C++20, no dependencies.

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  std::string mode;
  long long messages = 10'000'000;
  long long round_trips = 100'000;
  long long warmup = 10'000;
  std::size_t size = 64;
  int runs = 3;
  bool json = false;
};

constexpr std::size_t kBatchBytes = 64 * 1024;  // producer write size
constexpr std::size_t kReadBytes = 256 * 1024;  // relay and consumer read size
constexpr std::size_t kPrefix = 4;

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "relay: %s: %s\n", what, std::strerror(errno));
  std::_Exit(1);
}

void write_all(int fd, const char* p, std::size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      die("write");
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

// Reads exactly n bytes; false on EOF before the first byte.
bool read_all(int fd, char* p, std::size_t n) {
  std::size_t got = 0;
  while (got < n) {
    const ssize_t r = ::read(fd, p + got, n - got);
    if (r < 0) {
      if (errno == EINTR) continue;
      die("read");
    }
    if (r == 0) {
      if (got == 0) return false;
      errno = EPIPE;
      die("read: short frame");
    }
    got += static_cast<std::size_t>(r);
  }
  return true;
}

std::uint32_t load_len(const char* p) {
  unsigned char b[kPrefix];
  std::memcpy(b, p, kPrefix);
  return static_cast<std::uint32_t>(b[0]) | static_cast<std::uint32_t>(b[1]) << 8 |
         static_cast<std::uint32_t>(b[2]) << 16 | static_cast<std::uint32_t>(b[3]) << 24;
}

void store_len(char* p, std::uint32_t v) {
  const unsigned char b[kPrefix] = {
      static_cast<unsigned char>(v), static_cast<unsigned char>(v >> 8),
      static_cast<unsigned char>(v >> 16), static_cast<unsigned char>(v >> 24)};
  std::memcpy(p, b, kPrefix);
}

// Length of the prefix of [p, p+n) made of complete frames; counts them into *frames.
std::size_t complete_frames(const char* p, std::size_t n, long long* frames) {
  std::size_t off = 0;
  long long f = 0;
  while (n - off >= kPrefix) {
    const std::size_t len = kPrefix + load_len(p + off);
    if (n - off < len) break;
    off += len;
    ++f;
  }
  *frames += f;
  return off;
}

void producer(int out, long long messages, std::size_t size) {
  const std::size_t frame = kPrefix + size;
  const std::size_t per_batch = std::max<std::size_t>(1, kBatchBytes / frame);
  std::vector<char> batch(per_batch * frame);
  for (std::size_t i = 0; i < per_batch; ++i) {
    store_len(batch.data() + i * frame, static_cast<std::uint32_t>(size));
    std::memset(batch.data() + i * frame + kPrefix, static_cast<int>('a' + i % 26), size);
  }
  for (long long left = messages; left > 0;) {
    const auto n =
        static_cast<std::size_t>(std::min<long long>(left, static_cast<long long>(per_batch)));
    write_all(out, batch.data(), n * frame);
    left -= static_cast<long long>(n);
  }
}

// Reads chunks, forwards the complete frames of each chunk in one write, keeps the tail.
void relay(int in, int out) {
  std::vector<char> buf(kReadBytes + kBatchBytes);
  std::size_t have = 0;
  long long ignored = 0;
  for (;;) {
    const ssize_t r = ::read(in, buf.data() + have, buf.size() - have);
    if (r < 0) {
      if (errno == EINTR) continue;
      die("relay read");
    }
    if (r == 0) return;
    have += static_cast<std::size_t>(r);
    const std::size_t done = complete_frames(buf.data(), have, &ignored);
    if (done > 0) write_all(out, buf.data(), done);
    std::memmove(buf.data(), buf.data() + done, have - done);
    have -= done;
  }
}

long long consumer(int in, long long messages) {
  std::vector<char> buf(kReadBytes + kBatchBytes);
  std::size_t have = 0;
  long long frames = 0;
  while (frames < messages) {
    const ssize_t r = ::read(in, buf.data() + have, buf.size() - have);
    if (r < 0) {
      if (errno == EINTR) continue;
      die("consumer read");
    }
    if (r == 0) break;
    have += static_cast<std::size_t>(r);
    const std::size_t done = complete_frames(buf.data(), have, &frames);
    std::memmove(buf.data(), buf.data() + done, have - done);
    have -= done;
  }
  return frames;
}

void socket_pair(int fds[2]) {
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) die("socketpair");
}

// Forks a child that waits for the go byte on `go`, runs fn, and exits.
template <class Fn>
pid_t spawn(int go, const std::vector<int>& close_fds, Fn fn) {
  const pid_t pid = ::fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    for (int fd : close_fds)
      ::close(fd);
    char c;
    if (go >= 0 && !read_all(go, &c, 1)) std::_Exit(1);
    fn();
    std::_Exit(0);
  }
  return pid;
}

void reap(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) die("waitpid");
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::fprintf(stderr, "relay: child %d failed\n", static_cast<int>(pid));
    std::exit(1);
  }
}

// One streaming run: producer -> [relay ->] consumer. Returns messages per second, timed
// from the go byte until the consumer reports the last frame counted.
double stream_run(const Options& o, bool with_relay) {
  int a[2], b[2] = {-1, -1}, go[2], done[2];
  socket_pair(a);
  if (with_relay) socket_pair(b);
  if (::pipe2(go, O_CLOEXEC) != 0 || ::pipe2(done, O_CLOEXEC) != 0) die("pipe");
  // a: producer -> (relay | consumer); b: relay -> consumer.
  const int consumer_in = with_relay ? b[1] : a[1];
  const std::vector<int> all = {a[0], a[1], b[0], b[1], go[1], done[0]};
  auto others = [&](std::vector<int> keep) {
    std::vector<int> v;
    for (int fd : all)
      if (fd >= 0 && std::find(keep.begin(), keep.end(), fd) == keep.end()) v.push_back(fd);
    return v;
  };
  const pid_t cons = spawn(-1, others({consumer_in}), [&] {
    const long long n = consumer(consumer_in, o.messages);
    write_all(done[1], reinterpret_cast<const char*>(&n), sizeof n);
  });
  pid_t rel = -1;
  if (with_relay) rel = spawn(-1, others({a[1], b[0]}), [&] { relay(a[1], b[0]); });
  const pid_t prod = spawn(go[0], others({a[0]}), [&] { producer(a[0], o.messages, o.size); });
  for (int fd : {a[0], a[1], b[0], b[1], go[0], done[1]})
    if (fd >= 0) ::close(fd);

  const auto t0 = Clock::now();
  write_all(go[1], "g", 1);
  long long counted = 0;
  if (!read_all(done[0], reinterpret_cast<char*>(&counted), sizeof counted)) {
    std::fprintf(stderr, "relay: consumer died\n");
    std::exit(1);
  }
  const auto t1 = Clock::now();
  ::close(go[1]);
  ::close(done[0]);
  reap(prod);
  if (rel >= 0) reap(rel);
  reap(cons);
  if (counted != o.messages) {
    std::fprintf(stderr, "relay: consumer counted %lld of %lld frames\n", counted, o.messages);
    std::exit(1);
  }
  return static_cast<double>(o.messages) / std::chrono::duration<double>(t1 - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

double percentile(const std::vector<double>& sorted, double p) {
  const auto i = static_cast<std::size_t>(p * static_cast<double>(sorted.size() - 1) + 0.5);
  return sorted[std::min(i, sorted.size() - 1)];
}

struct PingResult {
  double p50_us, p99_us;
};

// One ping-pong run: the parent sends a frame, the child echoes it back; every round trip
// timed on its own.
PingResult ping_run(const Options& o) {
  int s[2];
  socket_pair(s);
  const std::size_t frame = kPrefix + o.size;
  const pid_t echo = spawn(-1, {s[0]}, [&] {
    std::vector<char> buf(frame);
    while (read_all(s[1], buf.data(), frame))
      write_all(s[1], buf.data(), frame);
  });
  ::close(s[1]);
  std::vector<char> buf(frame, 'p');
  store_len(buf.data(), static_cast<std::uint32_t>(o.size));
  std::vector<double> rtt;
  rtt.reserve(static_cast<std::size_t>(o.round_trips));
  for (long long i = 0; i < o.warmup + o.round_trips; ++i) {
    const auto t0 = Clock::now();
    write_all(s[0], buf.data(), frame);
    if (!read_all(s[0], buf.data(), frame)) die("echo closed");
    const auto t1 = Clock::now();
    if (i >= o.warmup) rtt.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
  }
  ::close(s[0]);
  reap(echo);
  std::sort(rtt.begin(), rtt.end());
  return {percentile(rtt, 0.50), percentile(rtt, 0.99)};
}

struct StreamFigure {
  double rate;
  std::vector<double> runs;
};

StreamFigure stream(const Options& o, bool with_relay) {
  StreamFigure f{};
  for (int i = 0; i < o.runs; ++i)
    f.runs.push_back(stream_run(o, with_relay));
  f.rate = median(f.runs);
  return f;
}

struct PingFigure {
  double p50_us, p99_us;
};

PingFigure pingpong(const Options& o) {
  std::vector<double> p50, p99;
  for (int i = 0; i < o.runs; ++i) {
    const PingResult r = ping_run(o);
    p50.push_back(r.p50_us);
    p99.push_back(r.p99_us);
  }
  return {median(p50), median(p99)};
}

std::string runs_json(const std::vector<double>& v) {
  std::string s = "[";
  for (std::size_t i = 0; i < v.size(); ++i) {
    char b[32];
    std::snprintf(b, sizeof b, "%s%.0f", i ? "," : "", v[i]);
    s += b;
  }
  return s + "]";
}

void usage(FILE* f) {
  std::fprintf(f,
               "usage: relay {relay|oneway|pingpong|all} [options]\n"
               "  relay     producer -> relay process (splits frames) -> consumer: msgs/s\n"
               "  oneway    producer -> consumer directly, batched writes: msgs/s\n"
               "  pingpong  socketpair round trips, one frame at a time: p50/p99 us\n"
               "  all       the three above\n"
               "options:\n"
               "  --messages N     frames per streaming run (default 10000000)\n"
               "  --round-trips N  measured round trips per ping-pong run (default 100000)\n"
               "  --warmup N       unmeasured round trips before them (default 10000)\n"
               "  --size B         payload bytes per frame, after the 4-byte length (default 64)\n"
               "  --runs R         runs; medians are reported (default 3)\n"
               "  --json           one JSON object instead of text\n");
}

long long parse_num(const char* flag, const char* v, long long lo, long long hi) {
  char* end = nullptr;
  errno = 0;
  const long long n = std::strtoll(v, &end, 10);
  if (errno != 0 || end == v || *end != '\0' || n < lo || n > hi) {
    std::fprintf(stderr, "relay: %s: expected an integer in [%lld, %lld], got '%s'\n", flag, lo, hi,
                 v);
    std::exit(2);
  }
  return n;
}

Options parse(int argc, char** argv) {
  Options o;
  if (argc < 2) {
    usage(stderr);
    std::exit(2);
  }
  o.mode = argv[1];
  if (o.mode == "-h" || o.mode == "--help") {
    usage(stdout);
    std::exit(0);
  }
  if (o.mode != "relay" && o.mode != "oneway" && o.mode != "pingpong" && o.mode != "all") {
    std::fprintf(stderr, "relay: unknown subcommand '%s'\n", argv[1]);
    usage(stderr);
    std::exit(2);
  }
  for (int i = 2; i < argc; ++i) {
    const std::string_view a = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "relay: %s needs a value\n", argv[i]);
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--json")
      o.json = true;
    else if (a == "-h" || a == "--help") {
      usage(stdout);
      std::exit(0);
    } else if (a == "--messages")
      o.messages = parse_num("--messages", value(), 1, 1LL << 40);
    else if (a == "--round-trips")
      o.round_trips = parse_num("--round-trips", value(), 1, 1LL << 32);
    else if (a == "--warmup")
      o.warmup = parse_num("--warmup", value(), 0, 1LL << 32);
    else if (a == "--size")
      o.size = static_cast<std::size_t>(parse_num("--size", value(), 0, 1 << 20));
    else if (a == "--runs")
      o.runs = static_cast<int>(parse_num("--runs", value(), 1, 99));
    else {
      std::fprintf(stderr, "relay: unknown option '%s'\n", argv[i]);
      usage(stderr);
      std::exit(2);
    }
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  const bool all = o.mode == "all";
  StreamFigure rel{}, one{};
  PingFigure ping{};
  if (all || o.mode == "relay") rel = stream(o, true);
  if (all || o.mode == "oneway") one = stream(o, false);
  if (all || o.mode == "pingpong") ping = pingpong(o);

  if (o.json) {
    std::string out = "{\"benchmark\":\"relay\",\"size\":" + std::to_string(o.size) +
                      ",\"runs\":" + std::to_string(o.runs) +
                      ",\"cpus_online\":" + std::to_string(::sysconf(_SC_NPROCESSORS_ONLN));
    char b[160];
    if (all || o.mode == "relay") {
      std::snprintf(b, sizeof b, ",\"messages\":%lld,\"relay_messages_per_second\":%.0f",
                    o.messages, rel.rate);
      out += b;
      out += ",\"relay_runs\":" + runs_json(rel.runs);
    }
    if (all || o.mode == "oneway") {
      if (!(all || o.mode == "relay")) out += ",\"messages\":" + std::to_string(o.messages);
      std::snprintf(b, sizeof b, ",\"oneway_messages_per_second\":%.0f", one.rate);
      out += b;
      out += ",\"oneway_runs\":" + runs_json(one.runs);
    }
    if (all || o.mode == "pingpong") {
      std::snprintf(b, sizeof b,
                    ",\"round_trips\":%lld,\"pingpong_p50_us\":%.3f,\"pingpong_p99_us\":%.3f",
                    o.round_trips, ping.p50_us, ping.p99_us);
      out += b;
    }
    std::printf("%s}\n", out.c_str());
    return 0;
  }
  std::printf("relay: %zu-byte payloads + 4-byte length, median of %d run(s)\n", o.size, o.runs);
  if (all || o.mode == "relay")
    std::printf("  %-40s %14.0f msgs/s  (%lld msgs/run)\n", "producer -> relay -> consumer",
                rel.rate, o.messages);
  if (all || o.mode == "oneway")
    std::printf("  %-40s %14.0f msgs/s  (%lld msgs/run)\n", "producer -> consumer (one-way)",
                one.rate, o.messages);
  if (all || o.mode == "pingpong")
    std::printf("  %-40s p50 %.2f us, p99 %.2f us  (%lld round trips/run)\n",
                "socketpair ping-pong RTT", ping.p50_us, ping.p99_us, o.round_trips);
  return 0;
}
