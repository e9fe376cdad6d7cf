#pragma once
// Test data for the BVHs built in parts (embree_tracer_test, bvh_test): the project's Cornell
// box compiled (four meshes), which of its meshes to make dynamic, and moving a mesh.

#include <gtest/gtest.h>

#include <vector>

#include "core/scene/compile.h"

namespace pl::test {

inline RenderData compiledCornellBox() {
  CompileOptions options;
  options.width = options.height = 32;
  Result<RenderData> data =
      loadAndCompile(PEERLIGHT_SOURCE_DIR "/scenes/cornell_box.gltf", options);
  EXPECT_TRUE(data.ok()) << (data.ok() ? "" : data.error().message);
  EXPECT_EQ(data.ok() ? data->meshes.size() : 0, 4u);
  return data.ok() ? std::move(data).value() : RenderData();
}

// Dynamic: one mesh in the middle (the static part then skips its triangles), the last one,
// two, and all four (no static part).
inline const std::vector<std::vector<size_t>>& dynamicMeshCases() {
  static const std::vector<std::vector<size_t>> cases = {{1}, {3}, {1, 2}, {0, 1, 2, 3}};
  return cases;
}

// `data` with those meshes dynamic; *triangles (if given) is their triangle count.
inline RenderData withDynamicMeshes(RenderData data, const std::vector<size_t>& meshes,
                                    uint32_t* triangles = nullptr) {
  uint32_t count = 0;
  for (size_t m : meshes) {
    data.meshes[m].flags = kernel::kMeshDynamic;
    count += data.meshes[m].triangleCount;
  }
  if (triangles) *triangles = count;
  return data;
}

// Moves mesh `m`'s vertices by `offset`.
inline void moveMesh(RenderData& data, size_t m, kernel::Vec3f offset) {
  const kernel::MeshRange& r = data.meshes[m];
  for (uint32_t v = r.firstVertex; v < r.firstVertex + r.vertexCount; ++v)
    data.positions[v] = data.positions[v] + offset;
}

inline std::string describeCase(const std::vector<size_t>& meshes) {
  std::string s = "dynamic meshes";
  for (size_t m : meshes) s += " " + std::to_string(m);
  return s;
}

}  // namespace pl::test
