#pragma once
// A fuzz target: LLVMFuzzerTestOneInput (libFuzzer's entry point) over one decoder of untrusted
// bytes, and the valid inputs its corpus starts from. Built two ways (fuzz/CMakeLists.txt):
// with libFuzzer, ASan and UBSan under clang (PEERLIGHT_FUZZ=ON, `./run fuzz`), or with
// replay_main.cpp in the default suite, which feeds the seeds and deterministic mutations of
// them (a smoke run, not a fuzzer).

#include <cstddef>
#include <cstdint>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace pl::fuzz {

// Valid inputs for this target, made from the project's own scenes.
std::vector<std::vector<uint8_t>> seeds();

}  // namespace pl::fuzz
