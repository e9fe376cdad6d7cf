#pragma once
// Scene and environment-map loaders. Whatever the bytes, these return a Scene or one Error
// whose message names the file and what is wrong (e.g. "scene.gltf: accessor 7 reads past
// the end of buffer 0"); they never crash, hang or allocate without bound. Loader errors are
// user errors: the CLI maps them to exit status 2.
//
// Thread safety: each call is independent; safe to call from several threads at once.

#include <cstdint>
#include <string>
#include <vector>

#include "core/kernel/math.h"
#include "core/scene/scene.h"
#include "core/util/status.h"

namespace pl {

// Limits checked before allocating.
constexpr uint64_t kMaxSceneTriangles = uint64_t(1) << 28;
constexpr uint64_t kMaxSceneVertices = uint64_t(1) << 26;  // 48 bytes each in RenderData
constexpr uint32_t kMaxTextureDimension = 16384;
constexpr uint64_t kMaxSceneTexels = uint64_t(1) << 30;  // all decoded images of one scene
constexpr uint32_t kMaxEnvironmentDimension = 16384;
constexpr uint64_t kMaxSceneFileBytes = uint64_t(4) << 30;

// Loads a scene, choosing the format by extension (case-insensitive):
//   .gltf (external or base64-embedded buffers), .glb: glTF 2.0, the default scene (else
//         scene 0, else every root node). Metallic-roughness materials, base colour,
//         metallic-roughness, normal and emissive textures, KHR_materials_emissive_strength,
//         KHR_materials_ior, KHR_lights_punctual, cameras. Sparse accessors, non-triangle
//         primitives and unknown required extensions: see the messages / Scene::warnings.
//   .obj (+ .mtl): faces fan-triangulated, materials double-sided, Kd -> base colour,
//         map_Kd -> base colour texture, Ke -> emission (or Ka when the material name
//         contains "light" and Ke is black: the original Cornell box file), metallic 0,
//         roughness 1 when Ks is black else sqrt(2 / (Ns + 2)), d < 1 -> alpha blend.
Result<Scene> loadScene(const std::string& path);

// An equirectangular environment map: linear RGB radiance, row-major, row 0 = top (+Y),
// column 0 at azimuth u = 0 (the kernel defines the direction mapping).
struct EnvironmentMap {
  uint32_t width = 0, height = 0;
  std::vector<kernel::Vec3f> texels;  // width * height; finite and >= 0
};

// Loads .hdr (Radiance RGBE) or .exr (OpenEXR, RGB/RGBA, half or float), at most
// kMaxEnvironmentDimension on a side. Non-finite or negative values become 0.
Result<EnvironmentMap> loadEnvironmentMap(const std::string& path);

}  // namespace pl
