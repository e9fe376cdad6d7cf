// The default suite's run of a fuzz target without libFuzzer: every seed, then deterministic
// mutations of each (bit flips, byte changes, truncations, duplicated runs), then the files
// given on the command line (a folder: each file in it, such as the corpus kept in
// fuzz/corpus/X). It checks that nothing crashes or hangs (the decoders return errors); the
// sanitizers and the search for new inputs are `./run fuzz`'s.
//
//   fuzz_X [--mutations N] [--write-seeds DIR] [FILE | DIR ...]

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>

#include "fuzz/fuzz_target.h"

namespace {

std::vector<uint8_t> mutate(const std::vector<uint8_t>& seed, std::mt19937& rng) {
  std::vector<uint8_t> m = seed;
  const int edits = 1 + int(rng() % 4);
  for (int e = 0; e < edits && !m.empty(); ++e) {
    const size_t at = rng() % m.size();
    switch (rng() % 5) {
      case 0: m[at] ^= uint8_t(1u << (rng() % 8)); break;
      case 1: m[at] = uint8_t(rng()); break;
      case 2: m.resize(at); break;
      case 3: {
        const size_t n = std::min<size_t>(1 + rng() % 16, m.size() - at);
        m.insert(m.begin() + long(at), m.begin() + long(at), m.begin() + long(at + n));
        break;
      }
      default: m[at] = uint8_t(m[at] + 1); break;
    }
  }
  return m;
}

}  // namespace

int main(int argc, char** argv) {
  long mutations = 2000;
  std::vector<std::string> files;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--mutations") == 0 && i + 1 < argc) {
      mutations = std::strtol(argv[++i], nullptr, 10);
    } else if (std::strcmp(argv[i], "--write-seeds") == 0 && i + 1 < argc) {
      const std::string dir = argv[++i];
      const auto seeds = pl::fuzz::seeds();
      for (size_t s = 0; s < seeds.size(); ++s) {
        std::ofstream out(dir + "/seed-" + std::to_string(s), std::ios::binary);
        out.write(reinterpret_cast<const char*>(seeds[s].data()), std::streamsize(seeds[s].size()));
        if (!out) {
          std::fprintf(stderr, "cannot write %s/seed-%zu\n", dir.c_str(), s);
          return 1;
        }
      }
      return 0;
    } else {
      files.push_back(argv[i]);
    }
  }
  std::mt19937 rng(20261206);
  size_t runs = 0;
  for (const std::vector<uint8_t>& seed : pl::fuzz::seeds()) {
    LLVMFuzzerTestOneInput(seed.data(), seed.size());
    ++runs;
    for (long m = 0; m < mutations; ++m) {
      const std::vector<uint8_t> input = mutate(seed, rng);
      LLVMFuzzerTestOneInput(input.data(), input.size());
      ++runs;
    }
  }
  std::vector<std::string> inputs;
  for (const std::string& f : files) {
    if (!std::filesystem::is_directory(f)) {
      inputs.push_back(f);
      continue;
    }
    std::vector<std::string> inFolder;
    for (const auto& entry : std::filesystem::directory_iterator(f)) {
      if (entry.is_regular_file()) inFolder.push_back(entry.path().string());
    }
    std::sort(inFolder.begin(), inFolder.end());
    inputs.insert(inputs.end(), inFolder.begin(), inFolder.end());
  }
  for (const std::string& f : inputs) {
    std::ifstream in(f, std::ios::binary);
    if (!in) {
      std::fprintf(stderr, "cannot read %s\n", f.c_str());
      return 1;
    }
    std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    LLVMFuzzerTestOneInput(bytes.data(), bytes.size());
    ++runs;
  }
  std::printf("%zu inputs, no crash\n", runs);
  return 0;
}
