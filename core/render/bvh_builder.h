#pragma once
// Host-side builder of the kernel BVH (core/kernel/bvh.h): binned SAH over the triangles of
// a RenderData, whole (buildBvh) or in parts that a device reuses between loads
// (buildMeshBvh). Used by the CUDA device at load(); the result is plain arrays ready to upload.

#include <cstdint>
#include <memory>
#include <vector>

#include "core/kernel/bvh.h"
#include "core/scene/render_data.h"
#include "core/util/hash.h"

namespace pl {

struct Bvh {
  std::vector<kernel::BvhNode> nodes;  // nodes[0] is the root
  std::vector<uint32_t> primIndices;   // leaf entries, indices into RenderData::triangles
  uint32_t degenerateCount = 0;        // triangles left out (isDegenerateTriangle)
  uint32_t depth = 0;                  // levels (a lone root leaf is depth 1)
  uint32_t leafCount = 0;
  uint32_t maxLeafSize = 0;  // largest leaf built

  // A Tracer over this tree and the given data (host pointers; both must outlive it).
  kernel::BvhTracer tracer(const RenderData& data) const {
    return {nodes.data(), primIndices.data(), data.positions.data(), data.triangles.data()};
  }
};

struct BvhBuildOptions {
  uint32_t binCount = 16;     // SAH bins per axis, 2..64
  uint32_t maxLeafSize = 4;   // 1..255; a leaf never holds more
  float traversalCost = 1.0f;   // relative to one triangle test
};

// True for triangles the BVH leaves out: a non-finite vertex, or an exactly zero cross
// product of two edges (no area, no normal; the triangle test could still report rounding
// noise along such a line as hits).
bool isDegenerateTriangle(kernel::Vec3f p0, kernel::Vec3f p1, kernel::Vec3f p2);

// Builds a BVH over positions/triangles. The data must be valid (RenderData::validate():
// every vertex index in range). Every triangle that is not degenerate (above) is referenced
// exactly once; degenerate ones are not referenced.
// Deterministic: the same input gives the same tree. Single-threaded; about 0.1-0.3 s per
// million triangles.
Bvh buildBvh(const std::vector<kernel::Vec3f>& positions,
             const std::vector<kernel::Triangle>& triangles, const BvhBuildOptions& options = {});

// The static meshes' part of a BVH built by buildMeshBvh(), which a device keeps between loads.
struct StaticBvh {
  Hash128 key;  // of the build options and the static meshes' ranges, triangles, positions
  Bvh bvh;      // over their triangles; primIndices index RenderData::triangles
};

// The BVH of `data`, built in parts: one tree over the static meshes (RenderData::meshes
// without kMeshDynamic; all triangles when none are listed) and one per dynamic mesh, joined
// into one tree (the kernel traverses it as any other): the root's children are the static
// tree and a top tree over the dynamic trees' bounds. The static tree is
// taken from *staticPart when its key matches, else built; *staticPart is then the one used.
// So moving a dynamic mesh rebuilds only that mesh's tree. Without dynamic meshes (or more
// than kMaxDynamicMeshes) the result is buildBvh()'s tree. Deterministic: the same data gives
// the same tree, whatever *staticPart held. data must be valid (RenderData::validate()).
Bvh buildMeshBvh(const RenderData& data, std::shared_ptr<const StaticBvh>* staticPart,
                 const BvhBuildOptions& options = {});

}  // namespace pl
