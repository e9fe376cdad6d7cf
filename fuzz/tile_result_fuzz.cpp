// A TileResult from a node (transport/tile_codec.h): header, channel count, zstd frame.
#include "fuzz/fuzz_target.h"
#include "transport/tile_codec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)pl::decodeTileResult(data, size, uint64_t(1) << 16);
  return 0;
}

std::vector<std::vector<uint8_t>> pl::fuzz::seeds() {
  std::vector<std::vector<uint8_t>> out;
  for (uint32_t channels : {3u, 10u}) {
    TileResult r;
    r.unit = {{8, 4, 5, 3}, 2, 6, 16};
    for (uint32_t i = 0; i < 15 * channels; ++i) r.sums.push_back(int64_t(i) * 977 % 5003);
    out.push_back(encodeTileResult(r));
  }
  return out;
}
