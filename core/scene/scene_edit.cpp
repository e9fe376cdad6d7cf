// Scene edits: materials, node transforms, visibility, environment, camera. Each function
// checks everything first and changes the scene only when nothing can fail any more.

#include "core/scene/scene_edit.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <set>
#include <utility>
#include <vector>

namespace pl {
namespace {

using kernel::Vec3f;
using kernel::Vec4f;

std::string inQuotes(const std::string& s) { return "'" + s + "'"; }

std::string number(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

// "no node 'x' (the scene has 'a', 'b', 'c', and 12 more)": the first few distinct names.
Error unknownName(const char* what, const std::string& name,
                  const std::vector<std::string>& names) {
  constexpr size_t kListed = 8;
  std::vector<std::string> listed;
  std::set<std::string> seen;
  size_t more = 0;
  for (const std::string& n : names) {
    if (!seen.insert(n).second) continue;
    if (listed.size() < kListed)
      listed.push_back(n.empty() ? "(unnamed)" : inQuotes(n));
    else
      ++more;
  }
  std::string known;
  for (size_t i = 0; i < listed.size(); ++i) known += (i ? ", " : "") + listed[i];
  if (more) known += ", and " + std::to_string(more) + " more";
  return Error{std::string("no ") + what + " " + inQuotes(name) + " (the scene has " +
               (known.empty() ? std::string("none") : known) + ")"};
}

bool inUnit(double v) { return std::isfinite(v) && v >= 0.0 && v <= 1.0; }

Status checkUnit(const std::string& where, const char* field, double v) {
  if (!inUnit(v)) return Error{where + ": " + field + " " + number(v) + " is not in [0, 1]"};
  return Status();
}

bool finite(Vec3f v) { return kernel::isFinite(v); }

// --- Materials ---------------------------------------------------------------------------

MaterialEmission currentEmission(const Scene& scene, size_t i) {
  if (scene.materialEmission.size() == scene.materials.size()) return scene.materialEmission[i];
  const Vec3f e = scene.materials[i].emission;
  return MaterialEmission{{double(e.x), double(e.y), double(e.z)}, 1.0};
}

Status checkMaterialEdit(const MaterialEdit& e, const std::string& where) {
  if (e.baseColorFactor)
    for (double v : *e.baseColorFactor)
      if (Status s = checkUnit(where, "baseColorFactor", v); !s.ok()) return s;
  if (e.metallicFactor)
    if (Status s = checkUnit(where, "metallicFactor", *e.metallicFactor); !s.ok()) return s;
  if (e.roughnessFactor)
    if (Status s = checkUnit(where, "roughnessFactor", *e.roughnessFactor); !s.ok()) return s;
  if (e.emissiveFactor)
    for (double v : *e.emissiveFactor)
      if (Status s = checkUnit(where, "emissiveFactor", v); !s.ok()) return s;
  if (e.emissiveStrength && !(std::isfinite(*e.emissiveStrength) && *e.emissiveStrength >= 0.0))
    return Error{where + ": emissiveStrength " + number(*e.emissiveStrength) +
                 " is not finite and >= 0"};
  if (e.ior && !(std::isfinite(*e.ior) && *e.ior >= 1.0))
    return Error{where + ": ior " + number(*e.ior) + " is not finite and >= 1"};
  if (e.alphaCutoff && !(std::isfinite(*e.alphaCutoff) && *e.alphaCutoff >= 0.0))
    return Error{where + ": alphaCutoff " + number(*e.alphaCutoff) + " is not finite and >= 0"};
  return Status();
}

// --- Node transforms ---------------------------------------------------------------------

// New per-vertex data for one mesh, staged until the whole edit is known to succeed.
struct StagedMesh {
  size_t mesh;
  std::vector<Vec3f> positions, normals;
  std::vector<Vec4f> tangents;
};

// Transforms a mesh by delta (normals by normalDelta, its sign-corrected inverse transpose).
// false when a result is not finite.
bool transformMesh(const Mesh& m, const Mat4& delta, const Mat4& normalDelta, bool flip,
                   StagedMesh& out) {
  const size_t n = m.positions.size();
  out.positions.resize(n);
  out.normals.resize(m.normals.size());
  out.tangents.resize(m.tangents.size());
  for (size_t i = 0; i < n; ++i) {
    out.positions[i] = delta.point(m.positions[i]);
    if (!finite(out.positions[i])) return false;
  }
  for (size_t i = 0; i < m.normals.size(); ++i) {
    Vec3f v = normalDelta.vector(m.normals[i]);
    float len = kernel::length(v);
    if (!(len > 0.0f) || !std::isfinite(len)) return false;
    out.normals[i] = v / len;
  }
  // As the loader does for tangents from the file: transform, orthogonalize, normalize.
  for (size_t i = 0; i < m.tangents.size(); ++i) {
    const Vec4f t4 = m.tangents[i];
    const Vec3f nrm = i < out.normals.size() ? out.normals[i] : Vec3f{0, 0, 1};
    Vec3f t = delta.vector({t4.x, t4.y, t4.z});
    t = t - nrm * kernel::dot(nrm, t);
    float len = kernel::length(t);
    if (len > 1e-20f && std::isfinite(len)) {
      t = t / len;
      out.tangents[i] = {t.x, t.y, t.z, flip ? -t4.w : t4.w};
    } else {
      Vec3f o = kernel::frameFromNormal(nrm).x;  // as generateTangents() does
      out.tangents[i] = {o.x, o.y, o.z, 1.0f};
    }
  }
  return true;
}

// The loader's camera frame (load_gltf.cpp addCamera()), from moved axes.
bool transformCamera(SceneCamera& c, const Mat4& delta) {
  c.position = delta.point(c.position);
  Vec3f forward = kernel::normalize(delta.vector(c.forward));
  Vec3f up = delta.vector(c.up);
  Vec3f right = kernel::normalize(kernel::cross(forward, up));
  up = kernel::cross(right, forward);
  if (!finite(c.position) || !finite(forward) || !finite(up) || kernel::length(up) < 0.5f)
    return false;
  c.forward = forward;
  c.up = kernel::normalize(up);
  return true;
}

bool transformLight(kernel::PunctualLight& l, const Mat4& delta) {
  l.position = delta.point(l.position);
  l.direction = kernel::normalize(delta.vector(l.direction));
  return finite(l.position) && finite(l.direction) && kernel::length(l.direction) > 0.0f;
}

std::vector<std::string> nodeNames(const Scene& scene) {
  std::vector<std::string> names;
  for (const SceneNode& n : scene.nodes) names.push_back(n.name);
  return names;
}

}  // namespace

Status applyMaterialEdit(Scene& scene, const MaterialEdit& e) {
  const std::string where = "material " + inQuotes(e.material);
  std::vector<size_t> targets;
  for (size_t i = 0; i < scene.materials.size() && i < scene.materialNames.size(); ++i)
    if (scene.materialNames[i] == e.material) targets.push_back(i);
  if (targets.empty()) return unknownName("material", e.material, scene.materialNames);
  if (Status s = checkMaterialEdit(e, where); !s.ok()) return s;

  const bool emissionChanges = e.emissiveFactor || e.emissiveStrength;
  std::vector<std::pair<kernel::Material, MaterialEmission>> staged;
  for (size_t i : targets) {
    kernel::Material m = scene.materials[i];
    MaterialEmission em = currentEmission(scene, i);
    if (e.baseColorFactor) {
      const auto& c = *e.baseColorFactor;
      m.baseColorFactor = {float(c[0]), float(c[1]), float(c[2]), float(c[3])};
    }
    if (e.metallicFactor) m.metallicFactor = float(*e.metallicFactor);
    if (e.roughnessFactor) m.roughnessFactor = float(*e.roughnessFactor);
    if (e.ior) m.ior = float(*e.ior);
    if (e.alphaCutoff) m.alphaCutoff = float(*e.alphaCutoff);
    if (emissionChanges) {
      if (e.emissiveFactor) em.factor = *e.emissiveFactor;
      if (e.emissiveStrength) em.strength = *e.emissiveStrength;
      // Exactly as load_gltf.cpp convertMaterials() computes it.
      m.emission = {float(em.factor[0] * em.strength), float(em.factor[1] * em.strength),
                    float(em.factor[2] * em.strength)};
      if (!finite(m.emission))
        return Error{where + ": emissiveFactor * emissiveStrength (" + number(em.factor[0]) + ", " +
                     number(em.factor[1]) + ", " + number(em.factor[2]) + ") * " +
                     number(em.strength) + " overflows a float"};
    }
    staged.emplace_back(m, em);
  }

  if (emissionChanges && scene.materialEmission.size() != scene.materials.size()) {
    std::vector<MaterialEmission> all;
    for (size_t i = 0; i < scene.materials.size(); ++i) all.push_back(currentEmission(scene, i));
    scene.materialEmission = std::move(all);
  }
  for (size_t k = 0; k < targets.size(); ++k) {
    scene.materials[targets[k]] = staged[k].first;
    if (emissionChanges) scene.materialEmission[targets[k]] = staged[k].second;
  }
  return Status();
}

Status applyNodeTransformEdit(Scene& scene, const NodeTransformEdit& e) {
  const std::string where = "node " + inQuotes(e.node);
  std::vector<int32_t> found;
  for (size_t i = 0; i < scene.nodes.size(); ++i)
    if (scene.nodes[i].name == e.node) found.push_back(int32_t(i));
  if (found.empty()) return unknownName("node", e.node, nodeNames(scene));
  if (found.size() > 1)
    return Error{where + " names " + std::to_string(found.size()) +
                 " node instances; a transform edit needs a unique name"};
  const int32_t target = found[0];

  for (size_t i = 0; i < 16; ++i)
    if (!std::isfinite(e.worldFromLocal[i]))
      return Error{where + ": worldFromLocal element " + std::to_string(i) + " (column " +
                   std::to_string(i / 4) + ", row " + std::to_string(i % 4) + ") is not finite"};
  const Mat4 next = Mat4::fromColumnMajor(e.worldFromLocal);
  if (next.at(3, 0) != 0.0 || next.at(3, 1) != 0.0 || next.at(3, 2) != 0.0 || next.at(3, 3) != 1.0)
    return Error{where + ": worldFromLocal's last row is not 0 0 0 1 (is it row-major?)"};
  if (!next.affineInverse()) return Error{where + ": worldFromLocal is singular (a zero scale?)"};
  const Mat4 old = scene.nodes[size_t(target)].worldFromLocal;
  if (next == old) return Status();
  const std::optional<Mat4> oldInverse = old.affineInverse();
  if (!oldInverse)
    return Error{where +
                 ": its current world matrix is singular (a zero scale), so what it "
                 "instanced cannot be moved"};
  const Mat4 delta = next * *oldInverse;
  const Mat4 normalDelta = delta.normalMatrix();
  const bool flip = delta.det3() < 0.0;

  // The node and its descendants (parents come before children).
  std::vector<bool> moved(scene.nodes.size(), false);
  moved[size_t(target)] = true;
  for (size_t i = size_t(target) + 1; i < scene.nodes.size(); ++i) {
    const int32_t p = scene.nodes[i].parent;
    if (p >= 0 && size_t(p) < i && moved[size_t(p)]) moved[i] = true;
  }
  auto isMoved = [&moved](int32_t node) {
    return node >= 0 && size_t(node) < moved.size() && moved[size_t(node)];
  };

  const Error notFinite{where + ": the new matrix moves something out of float range"};
  std::vector<StagedMesh> meshes;
  for (size_t i = 0; i < scene.meshes.size(); ++i) {
    if (!isMoved(scene.meshes[i].node)) continue;
    meshes.push_back(StagedMesh{i, {}, {}, {}});
    if (!transformMesh(scene.meshes[i], delta, normalDelta, flip, meshes.back())) return notFinite;
  }
  std::vector<SceneCamera> cameras = scene.cameras;
  for (SceneCamera& c : cameras)
    if (isMoved(c.node) && !transformCamera(c, delta))
      return Error{where + ": the new matrix makes camera " + inQuotes(c.name) + " degenerate"};
  std::vector<kernel::PunctualLight> lights = scene.lights;
  for (size_t i = 0; i < lights.size() && i < scene.lightNodes.size(); ++i)
    if (isMoved(scene.lightNodes[i]) && !transformLight(lights[i], delta)) return notFinite;

  // Nothing can fail from here on.
  for (StagedMesh& s : meshes) {
    Mesh& m = scene.meshes[s.mesh];
    m.positions = std::move(s.positions);
    m.normals = std::move(s.normals);
    m.tangents = std::move(s.tangents);
    m.dynamic = true;
    if (flip)
      for (size_t i = 0; i + 2 < m.indices.size(); i += 3)
        std::swap(m.indices[i + 1], m.indices[i + 2]);
  }
  scene.cameras = std::move(cameras);
  scene.lights = std::move(lights);
  for (size_t i = 0; i < scene.nodes.size(); ++i)
    if (moved[i])
      scene.nodes[i].worldFromLocal =
          int32_t(i) == target ? next : delta * scene.nodes[i].worldFromLocal;
  scene.computeBounds();
  return Status();
}

Status applyVisibilityEdit(Scene& scene, const VisibilityEdit& e) {
  if (e.node.empty() == e.mesh.empty())
    return Error{"visibility edit: give exactly one of node and mesh (got " +
                 (e.node.empty() ? std::string("neither") : "both") + ")"};
  std::vector<bool> wasShown(scene.meshes.size());
  for (size_t i = 0; i < scene.meshes.size(); ++i) wasShown[i] = scene.shown(scene.meshes[i]);
  if (!e.node.empty()) {
    bool any = false;
    for (const SceneNode& n : scene.nodes) any |= n.name == e.node;
    if (!any) return unknownName("node", e.node, nodeNames(scene));
    for (SceneNode& n : scene.nodes)
      if (n.name == e.node) n.visible = e.visible;
  } else {
    bool any = false;
    for (const Mesh& m : scene.meshes) any |= m.name == e.mesh;
    if (!any) {
      std::vector<std::string> names;
      for (const Mesh& m : scene.meshes) names.push_back(m.name);
      return unknownName("mesh", e.mesh, names);
    }
    for (Mesh& m : scene.meshes)
      if (m.name == e.mesh) m.visible = e.visible;
  }
  // A mesh that appeared or disappeared is dynamic from now on (Mesh::dynamic).
  for (size_t i = 0; i < scene.meshes.size(); ++i)
    if (scene.shown(scene.meshes[i]) != wasShown[i]) scene.meshes[i].dynamic = true;
  scene.computeBounds();
  return Status();
}

Status applyEnvironmentEdit(CompileOptions& options, const EnvironmentEdit& e) {
  if (e.color &&
      !(finite(*e.color) && e.color->x >= 0.0f && e.color->y >= 0.0f && e.color->z >= 0.0f))
    return Error{"environment color (" + number(e.color->x) + ", " + number(e.color->y) + ", " +
                 number(e.color->z) + ") is not finite and >= 0"};
  if (!e.mapPath.empty()) {
    std::error_code ec;
    if (!std::filesystem::is_regular_file(e.mapPath, ec))
      return Error{"environment map " + inQuotes(e.mapPath) + " is not a readable file"};
  }
  options.envFile = e.mapPath;
  options.envColor = e.color;
  return Status();
}

Status applyCameraEdit(const Scene& scene, CompileOptions& options, const CameraEdit& e) {
  CompileOptions next = options;
  next.camera = e.camera;
  next.lookAt = e.lookAt;
  auto camera = compileCamera(scene, next);
  if (!camera.ok()) return camera.error();
  options = std::move(next);
  return Status();
}

Status applyEdit(Scene& scene, CompileOptions& options, const SceneEdit& edit) {
  struct Apply {
    Scene& scene;
    CompileOptions& options;
    Status operator()(const MaterialEdit& e) const { return applyMaterialEdit(scene, e); }
    Status operator()(const NodeTransformEdit& e) const { return applyNodeTransformEdit(scene, e); }
    Status operator()(const VisibilityEdit& e) const { return applyVisibilityEdit(scene, e); }
    Status operator()(const EnvironmentEdit& e) const { return applyEnvironmentEdit(options, e); }
    Status operator()(const CameraEdit& e) const { return applyCameraEdit(scene, options, e); }
  };
  return std::visit(Apply{scene, options}, edit);
}

}  // namespace pl
