#pragma once
// The tile codec: a TileResult (its WorkUnit and per-pixel int64 fixed-point sums) as bytes
// and back, exactly. The sums are byte-shuffled in 8 planes (the high bytes of sums of
// similar pixels are nearly constant) and compressed with zstd level 1.
//
// Format (little-endian): magic "PLTR", u16 version 1, u8 shuffle stride, u8 channels per
// pixel (3, or 10 with passes; kernel::filmChannels()); the WorkUnit as 7 u32 (x, y, width,
// height, sampleBegin, sampleEnd, totalSamples); u64 raysTraced; u64 raw size of the sums
// (= pixels * channels * 8); u64 checksum (low half of XXH3-128 of the 52 bytes
// before it); one zstd frame of exactly that declared content size,
// with zstd's content checksum (a tile has no content hash to verify it by).
//
// Decoding checks every declared size against the unit's pixel count and limits before it
// allocates, and rejects truncated, oversized, trailing or corrupt input with an error that
// names the tile. The caller still checks that the unit is one it asked for.

#include <cstdint>
#include <vector>

#include "core/render/work_unit.h"
#include "core/util/status.h"

namespace pl {

// 4 Mi pixels: 96 MiB of sums (320 MiB with passes), above the scheduler's default unit cap of 1 Mi pixels.
constexpr uint64_t kMaxTileResultPixels = uint64_t(1) << 22;

// result.sums must hold 3 or 10 per pixel of result.unit.tile (checked).
std::vector<uint8_t> encodeTileResult(const TileResult& result, int zstdLevel = 1);

Result<TileResult> decodeTileResult(const uint8_t* bytes, size_t size,
                                    uint64_t maxPixels = kMaxTileResultPixels);

}  // namespace pl
