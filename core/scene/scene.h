#pragma once
// Scene: a loaded scene file on the host, with node hierarchies and instancing already
// flattened. Everything is in world space (glTF conventions: metres, right-handed, +Y up).
// compile() (core/scene/compile.h) turns a Scene into RenderData.
//
// A Scene is a plain value; loaders build it, and scene edits (core/scene/scene_edit.h)
// change it in place. It keeps what edits need after flattening: the node hierarchy with each
// node's world matrix (Scene::nodes), which node instanced each mesh, light and camera,
// per-mesh and per-node visibility, and each material's emission as the file gave it.

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/kernel/types.h"
#include "core/scene/mat4.h"

namespace pl {

// Lumens per watt: glTF's punctual lights are photometric (candela, lux); Scene lights are
// radiometric (W/sr, W/m^2), as in Blender and Cycles. Blender's glTF exporter multiplies by
// this, its importer divides by it, and so does peerlight's loader.
constexpr double kLumensPerWatt = 683.0;

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
  int32_t node = -1;                    // index into Scene::nodes that instanced it; -1: none
  // false: compile() leaves the mesh out, as if it were not in the scene. See Scene::shown().
  bool visible = true;
  // Moved, hidden or shown by an edit (scene_edit.h) since the scene was loaded: compile()
  // marks it kMeshDynamic, so that CPU devices keep it out of the static meshes' BVH and its
  // next move does not rebuild that (render/embree_tracer.h).
  bool dynamic = false;
};

// A node of the file's hierarchy as it was instanced: glTF makes one entry per visit of a
// node (a node reached from two parents has two entries, both with its name); OBJ makes one
// root per object ('o'/'g' name). Mesh::node, SceneCamera::node and Scene::lightNodes point
// here.
struct SceneNode {
  std::string name;     // may be empty, and need not be unique
  int32_t parent = -1;  // index into Scene::nodes, always smaller than this node's; -1: a root
  Mat4 worldFromLocal = Mat4::identity();  // what positions were transformed with
  // false hides this node's meshes and lights and those of all its descendants (the
  // semantics of KHR_node_visibility).
  bool visible = true;
};

// A material's emission as the file gave it, kept so that editing the factor or the strength
// alone recomputes kernel::Material::emission exactly as the loader does:
// emission = float(factor * strength), multiplied in double.
struct MaterialEmission {
  std::array<double, 3> factor{0, 0, 0};  // glTF emissiveFactor, OBJ Ke
  double strength = 1.0;                  // KHR_materials_emissive_strength
};

// A decoded texture image: RGBA 8 bits per channel, row-major, top row of the image file
// first, not linearized (sRGB decoding depends on the material slot that uses it).
struct SceneTexture {
  std::string name;
  uint32_t width = 0, height = 0;
  // Level 0: width * height texels, row 0 at the top. Shared by copies of the Scene (a
  // session's edits copy the Scene; its textures never change after loading): texels() reads
  // it, setTexels() replaces it.
  std::shared_ptr<const std::vector<kernel::Rgba8>> level0;
  uint32_t wrapS = kernel::kWrapRepeat, wrapT = kernel::kWrapRepeat;  // kernel::TextureWrap
  uint32_t filter = kernel::kFilterLinear;                            // kernel::TextureFilter
  // KHR_texture_transform as kernel::Texture::uv; identity when the file gives none.
  std::array<float, 6> uvTransform{1, 0, 0, 0, 1, 0};
  // Levels 1 and below of the mip chain, when prepareMips() (core/scene/texture_mips.h) made
  // them, filtered as colour when mipsSrgb; compile() builds the chain itself otherwise.
  std::shared_ptr<const std::vector<kernel::Rgba8>> mips;
  bool mipsSrgb = false;

  const std::vector<kernel::Rgba8>& texels() const {
    static const std::vector<kernel::Rgba8> none;
    return level0 ? *level0 : none;
  }
  void setTexels(std::vector<kernel::Rgba8> texels) {
    level0 = std::make_shared<const std::vector<kernel::Rgba8>>(std::move(texels));
  }
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
  int32_t node = -1;                // index into Scene::nodes that instanced it; -1: none
};

struct Scene {
  std::string path;  // the file it came from
  std::vector<Mesh> meshes;
  // Material texture indices point into textures (kernel::kNoTexture when absent).
  std::vector<kernel::Material> materials;
  std::vector<std::string> materialNames;  // parallel to materials
  // Parallel to materials, or empty (scenes built in code): then emission is the factor and
  // the strength is 1.
  std::vector<MaterialEmission> materialEmission;
  std::vector<SceneTexture> textures;
  std::vector<kernel::PunctualLight> lights;  // world space
  std::vector<SceneCamera> cameras;           // in node order (depth-first)
  // Parallel to lights: the index into nodes of the node that instanced each light, -1 for
  // none. May be shorter than lights (scenes built in code): missing entries are -1.
  std::vector<int32_t> lightNodes;
  std::vector<SceneNode> nodes;  // parents before children; empty for scenes built in code
  // Of all shown mesh vertices and shown point/spot light positions; min > max when there
  // are none.
  kernel::Vec3f boundsMin{1e30f, 1e30f, 1e30f};
  kernel::Vec3f boundsMax{-1e30f, -1e30f, -1e30f};
  std::vector<std::string> warnings;  // things the loader skipped or approximated

  uint64_t triangleCount() const;  // of all meshes, shown or not
  // Recomputes boundsMin/boundsMax from the shown meshes and lights. Call it after changing
  // visibility or geometry by hand (scene edits do).
  void computeBounds();

  // Whether compile() includes it: the mesh is visible and so are its node and all the
  // node's ancestors. Out-of-range node indices count as no node.
  bool shown(const Mesh& mesh) const;
  bool lightShown(size_t light) const;  // its node (if any) and the node's ancestors visible
  bool nodeShown(int32_t node) const;   // the node and all its ancestors visible; true for -1
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
