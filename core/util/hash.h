#pragma once
// Content hashes: XXH3-128 over raw bytes. Used to name RenderData arrays and chunks.

#include <cstddef>
#include <cstdint>
#include <string>

namespace pl {

struct Hash128 {
  uint64_t lo = 0;
  uint64_t hi = 0;
  bool operator==(const Hash128&) const = default;
  std::string hex() const;  // 32 lowercase hex digits, hi first
};

Hash128 hash128(const void* data, size_t bytes);

}  // namespace pl
