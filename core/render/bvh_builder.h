#pragma once
// Host-side builder of the kernel BVH (core/kernel/bvh.h): binned SAH over the triangles of
// a RenderData. Used by the CUDA device at load(); the result is plain arrays ready to upload.

#include <cstdint>
#include <vector>

#include "core/kernel/bvh.h"
#include "core/scene/render_data.h"

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

}  // namespace pl
