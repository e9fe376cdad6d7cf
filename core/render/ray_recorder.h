#pragma once
// Measuring how much of the renderer's time is ray tracing: record the exact rays that the
// kernel casts (a recording Tracer around EmbreeTracer), then trace the same rays with Embree
// alone. Used by `peerlight bench`.

#include <cstdint>
#include <vector>

#include "core/kernel/scene_view.h"
#include "core/render/embree_tracer.h"
#include "core/render/thread_pool.h"
#include "core/render/work_unit.h"
#include "core/scene/render_data.h"

namespace pl {

struct RecordedRay {
  kernel::Ray ray;
  float tMin, tMax;
  uint32_t shadow;  // 1: an occluded() query, 0: an intersect() query
};

// The Tracer that records each query into *rays before answering it with the inner tracer.
// Single-threaded (the vector is not synchronized).
struct RecordingTracer {
  EmbreeTracer inner;
  std::vector<RecordedRay>* rays;

  kernel::Hit intersect(const kernel::Ray& ray, float tMin, float tMax) const {
    rays->push_back({ray, tMin, tMax, 0});
    return inner.intersect(ray, tMin, tMax);
  }
  bool occluded(const kernel::Ray& ray, float tMin, float tMax) const {
    rays->push_back({ray, tMin, tMax, 1});
    return inner.occluded(ray, tMin, tMax);
  }
  bool occludedSeesMasks() const { return inner.occludedSeesMasks(); }
};

// Renders samples [sampleBegin, sampleEnd) of every pixel of `tile` with the kernel on this
// thread and returns every ray it cast, in order (stops recording new pixels once maxRays is
// reached).
std::vector<RecordedRay> recordRays(const RenderData& data, const EmbreeScene& scene,
                                    const Rect& tile, uint32_t sampleBegin, uint32_t sampleEnd,
                                    size_t maxRays);

struct BareTraceStats {
  uint64_t rays = 0;     // queries traced (all repetitions)
  uint64_t hits = 0;     // intersect() hits plus occluded() blocks, of the first repetition
  double seconds = 0;
};

// Traces rays with the EmbreeTracer alone (as recorded: rtcIntersect1 / rtcOccluded1, the
// latter with the alpha mask filter where the render used it), spread over pool, repeating
// the whole list until at least minSeconds have passed. `data` and `scene` as recorded.
BareTraceStats traceBare(const RenderData& data, const EmbreeScene& scene,
                         const std::vector<RecordedRay>& rays, ThreadPool& pool,
                         double minSeconds);

}  // namespace pl
