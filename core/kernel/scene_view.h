#pragma once
// SceneView: what the kernel sees of RenderData. Pointers into host memory (CPU device) or
// device memory (GPU device), plus element counts. Non-owning and trivially copyable.

#include "core/kernel/render_data_arrays.h"

namespace pl::kernel {

struct SceneView {
#define PL_SCENE_VIEW_FIELD(Type, name) \
  const Type* name;                     \
  uint32_t name##Count;
  PL_RENDER_DATA_ARRAYS(PL_SCENE_VIEW_FIELD)
#undef PL_SCENE_VIEW_FIELD

  PL_HOST_DEVICE const Camera& cam() const { return camera[0]; }
  PL_HOST_DEVICE const SceneGlobals& global() const { return globals[0]; }
};

// A closest hit as reported by a Tracer. prim == kNoHit on a miss. (u, v) are the barycentric
// coordinates of vertices v1 and v2 of the triangle (Embree's convention).
constexpr uint32_t kNoHit = 0xffffffffu;
struct Hit {
  float t;
  uint32_t prim;
  float u, v;
};

// The intersection back end the integrator is written against (Embree on the CPU, the
// project's BVH on the GPU). A Tracer is any type with:
//
//   PL_HOST_DEVICE Hit intersect(const Ray& ray, float tMin, float tMax) const;
//   PL_HOST_DEVICE bool occluded(const Ray& ray, float tMin, float tMax) const;
//   PL_HOST_DEVICE bool occludedSeesMasks() const;
//
// intersect() ignores alpha: the integrator handles cut-outs and stochastic transparency
// itself. So does occluded(), unless occludedSeesMasks(): then a surface that its alpha MASK
// cuts out at the hit (maskCutOutAt(), surface.h) does not block, and the integrator traces a
// shadow ray through cut-outs with one occluded() query instead of a walk of intersect()
// queries from hit to hit (the CPU's Embree, with a filter in its traversal, in scenes whose
// alpha materials are all masks). The walk gives up after kMaxPassThrough cut-outs (blocked);
// the one query passes any number.

}  // namespace pl::kernel
