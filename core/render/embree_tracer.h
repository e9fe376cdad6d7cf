#pragma once
// The CPU device's intersection back end: Embree 3 scenes over RenderData's triangles, and
// EmbreeTracer, the Tracer (core/kernel/scene_view.h) that the kernel's integrator calls.
//
// Structure, decided by the data alone (so every CPU device that loads the same RenderData
// traces the same structure, whatever it loaded before):
// - The static meshes (RenderData::meshes without kMeshDynamic; all triangles when the data
//   lists no meshes) share one high-quality BVH, the static part.
// - Without dynamic meshes the static part is the whole scene. With them, a top-level scene
//   holds the static part as one instance (identity transform) and each dynamic mesh as a
//   geometry of its own, rebuilt at every load; a session's moved objects are dynamic.
// - build() given the scene of the data loaded before reuses its static part when the static
//   meshes' vertices and triangles are the same bytes: a camera, material or light change,
//   or a dynamic mesh's move, builds nothing big again.
//
// Ownership: every part owns copies of its vertices and indices, so a RenderData may be freed
// after build(). Scenes built with a `previous` share its Embree device (at the same thread
// count) and maybe its static part, whichever of them is destroyed first.
//
// More than 1024 dynamic meshes are traced as all static (each would be a geometry of its own).
//
// Threads: build() uses up to `threads` threads (Embree's own pool). After build, intersect()
// and occluded() may be called from any number of threads at once.

#include <embree3/rtcore.h>

#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "core/kernel/scene_view.h"
#include "core/scene/render_data.h"
#include "core/util/status.h"

namespace pl {

struct EmbreeTracer;

namespace detail {
// An occluded() query's context when it sees alpha masks: Embree hands it to the filter,
// passMaskCutOuts(), at each hit its traversal finds.
struct MaskFilterContext {
  RTCIntersectContext context;  // first: Embree's pointer to it is a pointer to this
  const EmbreeTracer* tracer;
};
// Rejects each hit that the tracer's view cuts out with an alpha mask (kernel::maskCutOutAt),
// so that the traversal goes on past it.
void passMaskCutOuts(const RTCFilterFunctionNArguments* args);
}  // namespace detail

// Trivially copyable view of a committed Embree scene. Valid while its EmbreeScene lives.
struct EmbreeTracer {
  RTCScene scene = nullptr;
  // The static part's triangle i is RenderData triangle staticTriangles[i] (null: i itself).
  const uint32_t* staticTriangles = nullptr;
  // Geometry 1 + k of the top-level scene is dynamic mesh k, whose triangle i is RenderData
  // triangle dynamicFirstTriangle[k] + i. Geometry 0 is the static part (its instance).
  const uint32_t* dynamicFirstTriangle = nullptr;
  // When set, occluded() passes through surfaces that this view's alpha masks cut out
  // (EmbreeScene::tracer(view) sets it where every alpha material is a mask). The view must
  // outlive the queries.
  const kernel::SceneView* masks = nullptr;

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
    return {rh.ray.tfar, triangle(rh.hit), rh.hit.u, rh.hit.v};
  }

  bool occludedSeesMasks() const { return masks != nullptr; }

  bool occluded(const kernel::Ray& ray, float tMin, float tMax) const {
    detail::MaskFilterContext context;
    rtcInitIntersectContext(&context.context);
    if (masks) context.context.filter = &detail::passMaskCutOuts;
    context.tracer = this;
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
    rtcOccluded1(scene, &context.context, &r);
    // Embree sets tfar to -inf when the ray is blocked.
    return r.tfar == -std::numeric_limits<float>::infinity();
  }

  // The RenderData triangle of a hit.
  uint32_t triangle(const RTCHit& hit) const {
    // A hit in the static part: through its instance (two levels), or directly (one level).
    if (hit.instID[0] != RTC_INVALID_GEOMETRY_ID || dynamicFirstTriangle == nullptr)
      return staticTriangles ? staticTriangles[hit.primID] : hit.primID;
    return dynamicFirstTriangle[hit.geomID - 1] + hit.primID;
  }
};

struct EmbreeDevice;      // the Embree device and its first error (embree_tracer.cpp)
struct EmbreeStaticPart;  // the static meshes' scene (embree_tracer.cpp)

// What one Embree triangle geometry reads in place: vertices (xyz, one float of padding after
// the last: Embree loads 16 bytes) and 3 indices per triangle into them.
struct EmbreeMeshBuffers {
  std::vector<float> positions;
  std::vector<uint32_t> indices;
};

class EmbreeScene {
 public:
  // Builds the acceleration structures over data.triangles (indices and meshes must already be
  // valid: RenderData::validate()). threads == 0 lets Embree use every hardware thread.
  // previous: the scene of the data this one replaces, or null; its Embree device and, when
  // the static meshes are unchanged, its static part are reused (it may be destroyed after).
  // also: another scene on previous's Embree device (one built ahead of the load from the
  // geometry alone) whose static part is reused when it, not previous's, matches.
  static Result<std::unique_ptr<EmbreeScene>> build(const RenderData& data, uint32_t threads,
                                                    const EmbreeScene* previous = nullptr,
                                                    const EmbreeScene* also = nullptr);

  ~EmbreeScene();
  EmbreeScene(const EmbreeScene&) = delete;
  EmbreeScene& operator=(const EmbreeScene&) = delete;

  // The tracer of this scene. With a view of the data it was built over (or of data with the
  // same triangles): its occluded() sees the view's alpha masks when the view has alpha and
  // every alpha material is a mask (BLEND needs the integrator's walk). Every CPU device takes
  // the same path for the same data: build() refuses an Embree without filter functions.
  EmbreeTracer tracer(const kernel::SceneView* view = nullptr) const;
  RTCScene scene() const { return scene_; }
  uint32_t triangleCount() const { return triangleCount_; }

  // What build() did: whether it took the static part from `previous`, how many triangles it
  // built a BVH over (0 when everything was reused), and the dynamic meshes.
  struct BuildStats {
    bool staticReused = false;
    uint64_t trianglesBuilt = 0;
    uint32_t staticTriangles = 0;
    uint32_t dynamicMeshes = 0;
  };
  const BuildStats& buildStats() const { return stats_; }

  // The first Embree device error reported since the last call (Embree errors are rare after
  // a successful build: out of memory, or a bug). Thread-safe.
  Status takeError();

 private:
  EmbreeScene() = default;
  void buildStaticPart(const RenderData& data, const std::vector<kernel::MeshRange>& meshes,
                       const EmbreeScene* previous, const EmbreeScene* also);
  void buildTopLevel(const RenderData& data, const std::vector<kernel::MeshRange>& meshes);

  std::shared_ptr<EmbreeDevice> device_;
  std::shared_ptr<const EmbreeStaticPart> static_;
  RTCScene top_ = nullptr;    // with dynamic meshes: the static part's instance and them
  RTCScene scene_ = nullptr;  // what rays are traced in: top_, or the static part's scene
  uint32_t triangleCount_ = 0;
  std::vector<uint32_t> staticTriangles_;  // empty: the identity
  std::vector<uint32_t> dynamicFirstTriangle_;
  std::vector<std::unique_ptr<EmbreeMeshBuffers>> dynamic_;  // what their geometries read
  BuildStats stats_;
};

}  // namespace pl
