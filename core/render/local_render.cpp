#include "core/render/local_render.h"

#include <algorithm>
#include <chrono>
#include <mutex>
#include <thread>

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
  return renderLocal(std::vector<Device*>{&device}, film, tiling, progress);
}

Result<LocalRenderStats> renderLocal(const std::vector<Device*>& devices, Film& film,
                                     const TilingOptions& tiling,
                                     const ProgressCallback& progress) {
  const auto start = std::chrono::steady_clock::now();
  const std::vector<WorkUnit> units =
      splitIntoWorkUnits(film.width(), film.height(), film.samplesPerPixel(), tiling);
  const uint64_t total = uint64_t(film.width()) * film.height() * film.samplesPerPixel();
  LocalRenderStats stats;
  stats.devices.resize(devices.size());

  std::mutex mutex;                  // guards everything below, the film and progress
  size_t next = 0;                   // next unit of `units` not handed out yet
  std::vector<WorkUnit> retry;       // units given back by failed devices
  size_t alive = devices.size();
  std::string filmError;             // a result the film refused: a bug, stop everything

  auto work = [&](size_t d) {
    Device& device = *devices[d];
    std::unique_lock<std::mutex> lock(mutex);
    while (filmError.empty()) {
      WorkUnit unit;
      if (!retry.empty()) {
        unit = retry.back();
        retry.pop_back();
      } else if (next < units.size()) {
        unit = units[next++];
      } else {
        break;
      }
      lock.unlock();
      Result<TileResult> result = device.render(unit);
      lock.lock();
      if (!result.ok()) {
        stats.devices[d].error = result.error().message;
        retry.push_back(unit);
        --alive;
        return;
      }
      if (Status s = film.add(*result); !s.ok()) {
        filmError = s.error().message;
        break;
      }
      const uint64_t samples = unit.tile.pixelCount() * unit.sampleCount();
      stats.samples += samples;
      stats.raysTraced += result->raysTraced;
      stats.devices[d].units += 1;
      stats.devices[d].samples += samples;
      stats.devices[d].raysTraced += result->raysTraced;
      if (progress) progress(stats.samples, total);
    }
  };
  if (devices.size() == 1) {
    work(0);
  } else {
    std::vector<std::thread> threads;
    for (size_t d = 0; d < devices.size(); ++d) threads.emplace_back(work, d);
    for (std::thread& t : threads) t.join();
  }
  if (!filmError.empty()) return Error{filmError};
  if (alive == 0 || stats.samples != total) {
    std::string why;
    for (const DeviceShare& share : stats.devices)
      if (!share.error.empty()) why += (why.empty() ? "" : "; ") + share.error;
    return Error{why.empty() ? std::string("render incomplete") : why};
  }
  stats.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return stats;
}

}  // namespace pl
