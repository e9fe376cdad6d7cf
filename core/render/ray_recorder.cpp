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
  const RecordingTracer tracer{scene.tracer(), &rays};
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

BareTraceStats traceBare(const EmbreeScene& scene, const std::vector<RecordedRay>& rays,
                         ThreadPool& pool, double minSeconds) {
  BareTraceStats stats;
  if (rays.empty()) return stats;
  constexpr uint32_t kChunk = 4096;
  const uint32_t chunks = uint32_t((rays.size() + kChunk - 1) / kChunk);
  const RTCScene rtcScene = scene.scene();
  std::atomic<uint64_t> hits{0};
  const auto start = std::chrono::steady_clock::now();
  for (int repetition = 0;; ++repetition) {
    pool.parallelFor(chunks, [&](uint32_t chunk, uint32_t) {
      const size_t begin = size_t(chunk) * kChunk;
      const size_t end = std::min(rays.size(), begin + kChunk);
      uint64_t chunkHits = 0;
      RTCIntersectContext context;
      rtcInitIntersectContext(&context);
      for (size_t i = begin; i < end; ++i) {
        const RecordedRay& r = rays[i];
        RTCRayHit rh;
        rh.ray.org_x = r.ray.origin.x;
        rh.ray.org_y = r.ray.origin.y;
        rh.ray.org_z = r.ray.origin.z;
        rh.ray.tnear = r.tMin;
        rh.ray.dir_x = r.ray.direction.x;
        rh.ray.dir_y = r.ray.direction.y;
        rh.ray.dir_z = r.ray.direction.z;
        rh.ray.time = 0.0f;
        rh.ray.tfar = r.tMax;
        rh.ray.mask = 0xffffffffu;
        rh.ray.id = 0;
        rh.ray.flags = 0;
        if (r.shadow) {
          rtcOccluded1(rtcScene, &context, &rh.ray);
          chunkHits += rh.ray.tfar < 0.0f;
        } else {
          rh.hit.geomID = RTC_INVALID_GEOMETRY_ID;
          rh.hit.instID[0] = RTC_INVALID_GEOMETRY_ID;
          rtcIntersect1(rtcScene, &context, &rh);
          chunkHits += rh.hit.geomID != RTC_INVALID_GEOMETRY_ID;
        }
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
