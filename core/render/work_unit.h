#pragma once
// WorkUnit and TileResult: the unit of distributed work and its answer. A WorkUnit says
// "render samples [sampleBegin, sampleEnd) of every pixel in this rectangle"; the answer holds
// per-pixel fixed-point sums over exactly those samples (core/kernel/fixed_point.h).

#include <cstdint>
#include <string>
#include <vector>

#include "core/util/status.h"

namespace pl {

struct Rect {
  uint32_t x = 0, y = 0;           // top-left pixel
  uint32_t width = 0, height = 0;
  uint64_t pixelCount() const { return uint64_t(width) * height; }
  bool operator==(const Rect&) const = default;
};

// The pixels a render border covers: `region`, or the whole width x height image when it is
// empty (width 0: no border).
inline Rect renderedRect(const Rect& region, uint32_t width, uint32_t height) {
  return region.width == 0 ? Rect{0, 0, width, height} : region;
}

struct WorkUnit {
  Rect tile;
  uint32_t sampleBegin = 0;  // first sample index, inclusive
  uint32_t sampleEnd = 0;    // last sample index, exclusive
  uint32_t totalSamples = 0; // samples per pixel of the whole image
  bool operator==(const WorkUnit&) const = default;

  uint32_t sampleCount() const { return sampleEnd - sampleBegin; }
  // Checks the unit against an image of width x height: tile inside the image and non-empty,
  // sample range non-empty and inside [0, totalSamples).
  Status validate(uint32_t imageWidth, uint32_t imageHeight) const;
  std::string describe() const;  // "tile 0,0 64x64 samples [0,8) of 64"
};

struct TileResult {
  WorkUnit unit;
  // 3 sums (R, G, B) per pixel, row-major over unit.tile, in fixed point
  // (kernel::kFixedScale steps per unit radiance).
  std::vector<int64_t> sums;
  uint64_t raysTraced = 0;  // for statistics only; not part of the image
};

}  // namespace pl
