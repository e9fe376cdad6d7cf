#include "core/render/local_render.h"

#include <algorithm>
#include <chrono>

namespace pl {

std::vector<WorkUnit> splitIntoWorkUnits(uint32_t width, uint32_t height, uint32_t spp,
                                         const TilingOptions& tiling) {
  const uint32_t tileSize = std::max<uint32_t>(1, tiling.tileSize);
  const uint32_t perPass = std::max<uint32_t>(1, tiling.samplesPerPass);
  std::vector<WorkUnit> units;
  for (uint32_t s0 = 0; s0 < spp; s0 += std::min(perPass, spp - s0)) {
    const uint32_t s1 = s0 + std::min(perPass, spp - s0);
    for (uint32_t y = 0; y < height; y += tileSize) {
      for (uint32_t x = 0; x < width; x += tileSize) {
        WorkUnit unit;
        unit.tile = {x, y, std::min(tileSize, width - x), std::min(tileSize, height - y)};
        unit.sampleBegin = s0;
        unit.sampleEnd = s1;
        unit.totalSamples = spp;
        units.push_back(unit);
      }
    }
  }
  return units;
}

Result<LocalRenderStats> renderLocal(Device& device, Film& film, const TilingOptions& tiling,
                                     const ProgressCallback& progress) {
  const auto start = std::chrono::steady_clock::now();
  const std::vector<WorkUnit> units =
      splitIntoWorkUnits(film.width(), film.height(), film.samplesPerPixel(), tiling);
  LocalRenderStats stats;
  const uint64_t total = uint64_t(film.width()) * film.height() * film.samplesPerPixel();
  for (const WorkUnit& unit : units) {
    Result<TileResult> result = device.render(unit);
    if (!result.ok()) return result.error();
    if (Status s = film.add(*result); !s.ok()) return s.error();
    stats.samples += unit.tile.pixelCount() * unit.sampleCount();
    stats.raysTraced += result->raysTraced;
    if (progress) progress(stats.samples, total);
  }
  stats.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return stats;
}

}  // namespace pl
