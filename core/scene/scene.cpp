#include "core/scene/scene.h"

#include <cmath>

namespace pl {

using kernel::Vec2f;
using kernel::Vec3f;
using kernel::Vec4f;

uint64_t Scene::triangleCount() const {
  uint64_t n = 0;
  for (const Mesh& m : meshes) n += m.indices.size() / 3;
  return n;
}

void Scene::computeBounds() {
  boundsMin = {1e30f, 1e30f, 1e30f};
  boundsMax = {-1e30f, -1e30f, -1e30f};
  for (const Mesh& m : meshes) {
    if (!shown(m)) continue;
    for (Vec3f p : m.positions) {
      boundsMin = kernel::min(boundsMin, p);
      boundsMax = kernel::max(boundsMax, p);
    }
  }
  for (size_t i = 0; i < lights.size(); ++i) {
    const kernel::PunctualLight& l = lights[i];
    if (l.type != kernel::kLightDirectional && lightShown(i)) {
      boundsMin = kernel::min(boundsMin, l.position);
      boundsMax = kernel::max(boundsMax, l.position);
    }
  }
}

bool Scene::nodeShown(int32_t node) const {
  // Parents have smaller indices, so this walk ends; the bound guards hand-built scenes.
  for (size_t steps = 0; node >= 0 && size_t(node) < nodes.size() && steps <= nodes.size();
       ++steps) {
    const SceneNode& n = nodes[size_t(node)];
    if (!n.visible) return false;
    if (n.parent >= node) break;
    node = n.parent;
  }
  return true;
}

bool Scene::shown(const Mesh& mesh) const { return mesh.visible && nodeShown(mesh.node); }

bool Scene::lightShown(size_t light) const {
  return light >= lightNodes.size() || nodeShown(lightNodes[light]);
}

kernel::Material defaultMaterial() {
  kernel::Material m{};
  m.baseColorFactor = {1, 1, 1, 1};
  m.emission = {0, 0, 0};
  m.metallicFactor = 1.0f;
  m.roughnessFactor = 1.0f;
  m.normalScale = 1.0f;
  m.alphaCutoff = 0.5f;
  m.ior = 1.5f;
  m.alphaMode = kernel::kAlphaOpaque;
  m.doubleSided = 0;
  m.baseColorTexture = kernel::kNoTexture;
  m.metallicRoughnessTexture = kernel::kNoTexture;
  m.normalTexture = kernel::kNoTexture;
  m.emissiveTexture = kernel::kNoTexture;
  // The KHR_materials_* fields keep their defaults (types.h): all extensions off.
  return m;
}

void generateNormals(Mesh& mesh) {
  std::vector<Vec3f> sum(mesh.positions.size(), Vec3f{0, 0, 0});
  for (size_t i = 0; i + 2 < mesh.indices.size(); i += 3) {
    uint32_t a = mesh.indices[i], b = mesh.indices[i + 1], c = mesh.indices[i + 2];
    // The cross product's length is twice the area: area weighting for free.
    Vec3f n =
        kernel::cross(mesh.positions[b] - mesh.positions[a], mesh.positions[c] - mesh.positions[a]);
    sum[a] += n;
    sum[b] += n;
    sum[c] += n;
  }
  for (Vec3f& n : sum) {
    float len = kernel::length(n);
    n = len > 0.0f && std::isfinite(len) ? n / len : Vec3f{0, 0, 1};
  }
  mesh.normals = std::move(sum);
}

namespace {
Vec3f anyOrthogonal(Vec3f n) { return kernel::frameFromNormal(n).x; }
}  // namespace

void generateTangents(Mesh& mesh) {
  const size_t n = mesh.positions.size();
  std::vector<Vec3f> tan(n, Vec3f{0, 0, 0}), bitan(n, Vec3f{0, 0, 0});
  if (mesh.uvs.size() == n) {
    for (size_t i = 0; i + 2 < mesh.indices.size(); i += 3) {
      uint32_t a = mesh.indices[i], b = mesh.indices[i + 1], c = mesh.indices[i + 2];
      Vec3f e1 = mesh.positions[b] - mesh.positions[a];
      Vec3f e2 = mesh.positions[c] - mesh.positions[a];
      Vec2f d1 = mesh.uvs[b] - mesh.uvs[a];
      Vec2f d2 = mesh.uvs[c] - mesh.uvs[a];
      float det = d1.x * d2.y - d2.x * d1.y;
      if (!(std::fabs(det) > 1e-20f)) continue;
      // Not divided by det: the sign is kept, the magnitude weights larger UV areas more.
      float s = det > 0.0f ? 1.0f : -1.0f;
      Vec3f t = (e1 * d2.y - e2 * d1.y) * s;
      Vec3f bt = (e2 * d1.x - e1 * d2.x) * s;
      for (uint32_t v : {a, b, c}) {
        tan[v] += t;
        bitan[v] += bt;
      }
    }
  }
  mesh.tangents.resize(n);
  for (size_t v = 0; v < n; ++v) {
    Vec3f nrm = v < mesh.normals.size() ? mesh.normals[v] : Vec3f{0, 0, 1};
    Vec3f t = tan[v] - nrm * kernel::dot(nrm, tan[v]);
    float len = kernel::length(t);
    if (!(len > 1e-20f) || !std::isfinite(len)) {
      Vec3f o = anyOrthogonal(nrm);
      mesh.tangents[v] = {o.x, o.y, o.z, 1.0f};
      continue;
    }
    t = t / len;
    float w = kernel::dot(kernel::cross(nrm, t), bitan[v]) < 0.0f ? 1.0f : -1.0f;
    mesh.tangents[v] = {t.x, t.y, t.z, w};
  }
}

}  // namespace pl
