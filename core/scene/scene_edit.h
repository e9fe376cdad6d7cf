#pragma once
// Scene edits: what a long-lived render session applies to its loaded Scene and
// CompileOptions between compiles (user edits from the CLI or a DCC add-on). Plain values in,
// Status out; no I/O except checking that an environment map file exists.
//
// Atomic: every edit is checked completely before anything changes; on error the scene and
// options are as they were. Errors name the field or the unknown name (listing a few known
// ones).
//
// Determinism: edits change only the Scene / CompileOptions values that compile() reads, and
// compile() is a pure function of those, so the same edits in the same order give the same
// RenderData bytes on any machine.
// - Material, visibility, environment and camera edits give exactly the bytes of a scene
//   loaded in that state (a file with those factors; a scene without the hidden meshes).
// - A transform edit moves vertices by newWorld * inverse(oldWorld), in double, rounded to
//   float once: within float rounding of loading a file with that matrix, not bitwise. Normals
//   and tangents are transformed, not regenerated (a loader regenerates them from world-space
//   positions when the file has none, which differs under non-uniform scale). An edit back
//   to the previous matrix restores positions within float tolerance; an edit to the current
//   matrix changes nothing at all.
//
// Not thread-safe: the caller owns the Scene and serializes edits and compiles.

#include <array>
#include <optional>
#include <string>
#include <variant>

#include "core/scene/compile.h"
#include "core/scene/look_at.h"
#include "core/scene/scene.h"
#include "core/util/status.h"

namespace pl {

// Changes the given factors of every material named `material` (Scene::materialNames);
// absent fields keep their values. Values are doubles, as in a glTF file, converted exactly
// as the loader converts them. Ranges are glTF's.
struct MaterialEdit {
  std::string material;
  std::optional<std::array<double, 4>> baseColorFactor;  // linear RGBA, each in [0, 1]
  std::optional<double> metallicFactor;                  // [0, 1]
  std::optional<double> roughnessFactor;                 // [0, 1]
  std::optional<std::array<double, 3>> emissiveFactor;   // each in [0, 1]
  std::optional<double> emissiveStrength;  // >= 0; Material::emission = factor * strength
  // >= 1 (KHR_materials_ior also allows 0, which the kernel does not implement: refused).
  std::optional<double> ior;
  std::optional<double> alphaCutoff;  // >= 0; used by alphaMode MASK materials
};

// Sets the world matrix of the node instance named `node` (SceneNode::name; the name must be
// unique in Scene::nodes). Everything the node and its descendants instanced moves with it:
// meshes (positions; normals by the inverse transpose, renormalized; tangents, re-orthogonalized;
// winding flipped when the determinant changes sign), cameras (position, forward, up) and
// punctual lights (position, direction). Descendants keep their transform relative to it.
struct NodeTransformEdit {
  std::string node;
  std::array<double, 16> worldFromLocal;  // column-major, affine (last row 0 0 0 1), invertible
};

// Shows or hides by node or by mesh name; exactly one of the two is given.
// - node: every node instance of that name, with all its descendants (as KHR_node_visibility:
//   a mesh or light is shown when its node and all ancestors are visible); lights attached
//   to hidden nodes are left out too.
// - mesh: every Mesh of that name (all primitives of a glTF mesh, all its instances).
struct VisibilityEdit {
  std::string node;
  std::string mesh;
  bool visible = true;
};

// The environment, an edit of CompileOptions: mapPath empty sets a constant environment
// (envFile cleared; color nullopt: compile()'s default rule), else the .hdr/.exr map that
// compile() loads, scaled by color when given.
struct EnvironmentEdit {
  std::string mapPath;
  std::optional<kernel::Vec3f> color;  // finite, >= 0
};

// The camera, an edit of CompileOptions::camera and lookAt (see compile.h). Only the camera
// changes: a session can replace RenderData::camera[0] with compileCamera() instead of
// recompiling.
struct CameraEdit {
  std::string camera;  // a scene camera name or index; empty: the first
  std::optional<LookAt> lookAt;
};

using SceneEdit =
    std::variant<MaterialEdit, NodeTransformEdit, VisibilityEdit, EnvironmentEdit, CameraEdit>;

Status applyMaterialEdit(Scene& scene, const MaterialEdit& edit);
Status applyNodeTransformEdit(Scene& scene, const NodeTransformEdit& edit);
Status applyVisibilityEdit(Scene& scene, const VisibilityEdit& edit);
Status applyEnvironmentEdit(CompileOptions& options, const EnvironmentEdit& edit);
Status applyCameraEdit(const Scene& scene, CompileOptions& options, const CameraEdit& edit);

// Applies whichever edit it holds. Scene edits recompute Scene bounds where they change.
Status applyEdit(Scene& scene, CompileOptions& options, const SceneEdit& edit);

}  // namespace pl
