#pragma once
// A copy of one encoded chunk of a ChunkStore (which hands out views), for tests that send,
// corrupt or compare chunk bytes.

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "transport/chunk_codec.h"

namespace pl::test {

// The chunk must be in the store.
inline std::vector<uint8_t> chunkBytes(const ChunkStore& store, const Hash128& hash) {
  const std::optional<std::span<const uint8_t>> bytes = store.find(hash);
  return bytes ? std::vector<uint8_t>(bytes->begin(), bytes->end()) : std::vector<uint8_t>();
}

}  // namespace pl::test
