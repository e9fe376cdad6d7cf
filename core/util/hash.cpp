#include "core/util/hash.h"

#include <xxhash.h>

#include <cstdio>

namespace pl {

std::string Hash128::hex() const {
  char buf[33];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(hi),
                static_cast<unsigned long long>(lo));
  return buf;
}

Hash128 hash128(const void* data, size_t bytes) {
  XXH128_hash_t h = XXH3_128bits(data, bytes);
  return Hash128{h.low64, h.high64};
}

}  // namespace pl
