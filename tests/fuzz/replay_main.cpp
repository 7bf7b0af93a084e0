// Runs a libFuzzer target over saved inputs without libFuzzer, so the seed corpus (and any
// crash reproducer) is exercised by a plain build under ctest.
//
// Usage: fuzz_codec_replay PATH...   (each PATH a file, or a directory whose regular files
// are all replayed). Exits non-zero when no input was found or a path cannot be read; an
// input that violates an invariant aborts the process.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <system_error>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace {

namespace fs = std::filesystem;

bool replay(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "cannot read %s\n", file.c_str());
    return false;
  }
  const std::vector<char> bytes{std::istreambuf_iterator<char>(in),
                                std::istreambuf_iterator<char>()};
  // An empty heap block rather than nullptr: libFuzzer never passes a null pointer either.
  std::vector<std::uint8_t> copy(bytes.size() + 1);
  for (std::size_t i = 0; i < bytes.size(); ++i)
    copy[i] = static_cast<std::uint8_t>(bytes[i]);
  LLVMFuzzerTestOneInput(copy.data(), bytes.size());
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  std::size_t count = 0;
  bool ok = true;
  for (int i = 1; i < argc; ++i) {
    const fs::path path(argv[i]);
    std::error_code ec;
    if (fs::is_directory(path, ec)) {
      for (const auto& entry : fs::directory_iterator(path, ec)) {
        if (!entry.is_regular_file()) continue;
        ok = replay(entry.path()) && ok;
        ++count;
      }
    } else if (fs::is_regular_file(path, ec)) {
      ok = replay(path) && ok;
      ++count;
    } else {
      std::fprintf(stderr, "no such file or directory: %s\n", argv[i]);
      ok = false;
    }
    if (ec) {
      std::fprintf(stderr, "%s: %s\n", argv[i], ec.message().c_str());
      ok = false;
    }
  }
  std::printf("replayed %zu input(s)\n", count);
  if (count == 0) {
    std::fprintf(stderr, "no inputs given\n");
    return 1;
  }
  return ok ? 0 : 1;
}
