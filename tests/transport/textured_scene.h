#pragma once
// A textured scene for tests of the data path: render data with mip levels (mipTexels), which
// no chunk carries and every device computes for itself (transport/chunk_codec.h).

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "core/scene/compile.h"
#include "core/scene/load.h"

namespace pl::testing {

// The Cornell box with two textures of random texels (67 x 45, odd sides, and 16 x 16): the
// first material's base colour (its mip levels averaged as sRGB colour) and the second's
// metallic-roughness (linear), UVs from the vertices' x and y: render data with a mipTexels
// array that every device derives for itself.
inline RenderData texturedCornellBox(uint32_t size) {
  Result<Scene> scene = loadScene(std::string(PEERLIGHT_SOURCE_DIR) + "/scenes/cornell_box.gltf");
  EXPECT_TRUE(scene.ok()) << scene.error().message;
  if (!scene.ok()) return RenderData();
  for (Mesh& mesh : scene->meshes) {
    for (size_t i = 0; i < mesh.positions.size(); ++i)
      mesh.uvs[i] = {0.7f * mesh.positions[i].x, 0.7f * mesh.positions[i].y};
  }
  uint32_t state = 77;
  for (auto [width, height] : {std::pair(67u, 45u), std::pair(16u, 16u)}) {
    SceneTexture t;
    t.name = "random " + std::to_string(width);
    t.width = width;
    t.height = height;
    std::vector<kernel::Rgba8> texels(size_t(width) * height);
    for (kernel::Rgba8& texel : texels) {
      state = state * 1664525u + 1013904223u;
      texel = {uint8_t(state >> 24), uint8_t(state >> 16), uint8_t(state >> 8), 255};
    }
    t.setTexels(std::move(texels));
    scene->textures.push_back(std::move(t));
  }
  scene->materials.at(0).baseColorTexture = 0;
  scene->materials.at(1).metallicRoughnessTexture = 1;
  CompileOptions options;
  options.width = options.height = size;
  Result<RenderData> data = compile(*scene, options);
  EXPECT_TRUE(data.ok()) << data.error().message;
  EXPECT_FALSE(data.ok() && data->mipTexels.empty());
  return data.ok() ? std::move(data).value() : RenderData();
}

}  // namespace pl::testing
