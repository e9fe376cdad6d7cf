#pragma once
// Scene: a loaded scene file on the host, with node hierarchies and instancing already
// flattened. Everything is in world space (glTF conventions: metres, right-handed, +Y up).
// compile() (core/scene/compile.h) turns a Scene into RenderData.
//
// A Scene is a plain value; loaders build it, nothing else mutates it.

#include <cstdint>
#include <string>
#include <vector>

#include "core/kernel/types.h"

namespace pl {

// One triangle mesh instance, transformed to world space. positions, normals, tangents and
// uvs have one entry each per vertex; the loaders always fill normals, uvs (zeros when the
// file has none) and tangents (from the file, else generated from the UVs, else any unit
// vector orthogonal to the normal with w = 1). Triangles wind counter-clockwise seen from
// the front (the side the geometric normal points to).
struct Mesh {
  std::string name;
  std::vector<kernel::Vec3f> positions;
  std::vector<kernel::Vec3f> normals;   // unit
  std::vector<kernel::Vec2f> uvs;       // UV set 0
  std::vector<kernel::Vec4f> tangents;  // unit xyz, w = +1 or -1 (bitangent sign)
  std::vector<uint32_t> indices;        // 3 per triangle, each < positions.size()
  uint32_t material = 0;                // index into Scene::materials
};

// A decoded texture image: RGBA 8 bits per channel, row-major, top row of the image file
// first, not linearized (sRGB decoding depends on the material slot that uses it).
struct SceneTexture {
  std::string name;
  uint32_t width = 0, height = 0;
  std::vector<kernel::Rgba8> texels;                                  // width * height
  uint32_t wrapS = kernel::kWrapRepeat, wrapT = kernel::kWrapRepeat;  // kernel::TextureWrap
  uint32_t filter = kernel::kFilterLinear;                            // kernel::TextureFilter
};

// A camera with its world transform. The camera looks down its local -Z with +Y up.
struct SceneCamera {
  std::string name;
  uint32_t type = kernel::kCameraPerspective;  // kernel::CameraType
  kernel::Vec3f position{0, 0, 0};
  kernel::Vec3f forward{0, 0, -1};  // unit, world space
  kernel::Vec3f up{0, 1, 0};        // unit, orthogonal to forward
  float yfov = 0.0f;                // perspective: full vertical field of view, radians
  float ymag = 0.0f;                // orthographic: half height of the view, world units
};

struct Scene {
  std::string path;  // the file it came from
  std::vector<Mesh> meshes;
  // Material texture indices point into textures (kernel::kNoTexture when absent).
  std::vector<kernel::Material> materials;
  std::vector<std::string> materialNames;  // parallel to materials
  std::vector<SceneTexture> textures;
  std::vector<kernel::PunctualLight> lights;  // world space
  std::vector<SceneCamera> cameras;           // in node order (depth-first)
  // Of all mesh vertices and point/spot light positions; min > max when there are none.
  kernel::Vec3f boundsMin{1e30f, 1e30f, 1e30f};
  kernel::Vec3f boundsMax{-1e30f, -1e30f, -1e30f};
  std::vector<std::string> warnings;  // things the loader skipped or approximated

  uint64_t triangleCount() const;
  // Recomputes boundsMin/boundsMax from meshes and lights.
  void computeBounds();
};

// The glTF 2.0 default material (white, metallic 1, roughness 1, opaque, single-sided).
kernel::Material defaultMaterial();

// Per-vertex helpers shared by the loaders. Both read mesh.positions and mesh.indices.
// Area-weighted smooth normals (shared vertices are averaged, so unshared ones come out flat).
void generateNormals(Mesh& mesh);
// Tangents from UV gradients, orthogonalized against the normals; vertices without a usable
// UV parameterization get any unit vector orthogonal to the normal (w = 1).
void generateTangents(Mesh& mesh);

}  // namespace pl
