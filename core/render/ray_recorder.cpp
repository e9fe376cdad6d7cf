#include "core/render/ray_recorder.h"

#include <atomic>
#include <chrono>

#include "core/kernel/integrator.h"

namespace pl {

std::vector<RecordedRay> recordRays(const RenderData& data, const EmbreeScene& scene,
                                    const Rect& tile, uint32_t sampleBegin, uint32_t sampleEnd,
                                    size_t maxRays) {
  std::vector<RecordedRay> rays;
  const kernel::SceneView view = data.view();
  const RecordingTracer tracer{scene.tracer(&view), &rays};
  for (uint32_t y = tile.y; y < tile.y + tile.height; ++y) {
    for (uint32_t x = tile.x; x < tile.x + tile.width; ++x) {
      if (rays.size() >= maxRays) return rays;
      int64_t sums[3] = {0, 0, 0};
      uint32_t traced = 0;
      kernel::renderPixel(view, tracer, x, y, sampleBegin, sampleEnd, sums, &traced);
    }
  }
  return rays;
}

BareTraceStats traceBare(const RenderData& data, const EmbreeScene& scene,
                         const std::vector<RecordedRay>& rays, ThreadPool& pool,
                         double minSeconds) {
  BareTraceStats stats;
  if (rays.empty()) return stats;
  constexpr uint32_t kChunk = 4096;
  const uint32_t chunks = uint32_t((rays.size() + kChunk - 1) / kChunk);
  const kernel::SceneView view = data.view();
  const EmbreeTracer tracer = scene.tracer(&view);
  std::atomic<uint64_t> hits{0};
  const auto start = std::chrono::steady_clock::now();
  for (int repetition = 0;; ++repetition) {
    pool.parallelFor(chunks, [&](uint32_t chunk, uint32_t) {
      const size_t begin = size_t(chunk) * kChunk;
      const size_t end = std::min(rays.size(), begin + kChunk);
      uint64_t chunkHits = 0;
      for (size_t i = begin; i < end; ++i) {
        const RecordedRay& r = rays[i];
        if (r.shadow)
          chunkHits += tracer.occluded(r.ray, r.tMin, r.tMax);
        else
          chunkHits += tracer.intersect(r.ray, r.tMin, r.tMax).prim != kernel::kNoHit;
      }
      hits.fetch_add(chunkHits, std::memory_order_relaxed);
    });
    stats.rays += rays.size();
    if (repetition == 0) stats.hits = hits.load();
    stats.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (stats.seconds >= minSeconds) break;
  }
  return stats;
}

}  // namespace pl
