#pragma once
// The CPU device's intersection back end: an Embree 3 scene over RenderData's triangles, and
// EmbreeTracer, the Tracer (core/kernel/scene_view.h) that the kernel's integrator calls.
//
// Ownership: EmbreeScene owns its Embree device and scene. It shares the triangle index array
// with the RenderData it was built from (no copy), so that RenderData must outlive it; the
// vertex positions are copied into a padded buffer (Embree reads 16 bytes at a time).
//
// Threads: build() uses up to `threads` threads (Embree's own pool). After build, intersect()
// and occluded() may be called from any number of threads at once.

#include <embree3/rtcore.h>

#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/kernel/scene_view.h"
#include "core/scene/render_data.h"
#include "core/util/status.h"

namespace pl {

// Trivially copyable view of a committed Embree scene. Valid while its EmbreeScene lives.
struct EmbreeTracer {
  RTCScene scene = nullptr;

  kernel::Hit intersect(const kernel::Ray& ray, float tMin, float tMax) const {
    RTCIntersectContext context;
    rtcInitIntersectContext(&context);
    RTCRayHit rh;
    rh.ray.org_x = ray.origin.x;
    rh.ray.org_y = ray.origin.y;
    rh.ray.org_z = ray.origin.z;
    rh.ray.tnear = tMin;
    rh.ray.dir_x = ray.direction.x;
    rh.ray.dir_y = ray.direction.y;
    rh.ray.dir_z = ray.direction.z;
    rh.ray.time = 0.0f;
    rh.ray.tfar = tMax;
    rh.ray.mask = 0xffffffffu;
    rh.ray.id = 0;
    rh.ray.flags = 0;
    rh.hit.geomID = RTC_INVALID_GEOMETRY_ID;
    rh.hit.primID = RTC_INVALID_GEOMETRY_ID;
    rh.hit.instID[0] = RTC_INVALID_GEOMETRY_ID;
    rtcIntersect1(scene, &context, &rh);
    if (rh.hit.geomID == RTC_INVALID_GEOMETRY_ID) return {tMax, kernel::kNoHit, 0.0f, 0.0f};
    return {rh.ray.tfar, rh.hit.primID, rh.hit.u, rh.hit.v};
  }

  bool occluded(const kernel::Ray& ray, float tMin, float tMax) const {
    RTCIntersectContext context;
    rtcInitIntersectContext(&context);
    RTCRay r;
    r.org_x = ray.origin.x;
    r.org_y = ray.origin.y;
    r.org_z = ray.origin.z;
    r.tnear = tMin;
    r.dir_x = ray.direction.x;
    r.dir_y = ray.direction.y;
    r.dir_z = ray.direction.z;
    r.time = 0.0f;
    r.tfar = tMax;
    r.mask = 0xffffffffu;
    r.id = 0;
    r.flags = 0;
    rtcOccluded1(scene, &context, &r);
    // Embree sets tfar to -inf when the ray is blocked.
    return r.tfar == -std::numeric_limits<float>::infinity();
  }
};

class EmbreeScene {
 public:
  // Builds the acceleration structure over data.triangles (indices must already be valid:
  // RenderData::validate()). threads == 0 lets Embree use every hardware thread.
  static Result<std::unique_ptr<EmbreeScene>> build(const RenderData& data, uint32_t threads);

  ~EmbreeScene();
  EmbreeScene(const EmbreeScene&) = delete;
  EmbreeScene& operator=(const EmbreeScene&) = delete;

  EmbreeTracer tracer() const { return EmbreeTracer{scene_}; }
  RTCScene scene() const { return scene_; }
  uint32_t triangleCount() const { return triangleCount_; }

  // The first Embree device error reported since the last call (Embree errors are rare after
  // a successful build: out of memory, or a bug). Thread-safe.
  Status takeError();

 private:
  EmbreeScene() = default;
  static void errorCallback(void* user, RTCError code, const char* message);

  RTCDevice device_ = nullptr;
  RTCScene scene_ = nullptr;
  uint32_t triangleCount_ = 0;
  std::vector<float> positions_;  // xyz per vertex, plus padding for 16-byte loads
  std::mutex errorMutex_;
  std::string error_;  // first error since takeError(); empty when none
};

}  // namespace pl
