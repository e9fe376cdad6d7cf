// RenderData::validate(): every cross-reference checked, so that the kernel can index the
// arrays without bounds checks. Data that arrives from the network goes through this.

#include <cmath>
#include <string>

#include "core/kernel/texture.h"
#include "core/scene/load.h"
#include "core/scene/render_data.h"

namespace pl {
namespace {

using kernel::Vec3f;

std::string at(const char* array, uint64_t index) {
  return std::string(array) + "[" + std::to_string(index) + "]";
}

Error invalid(const std::string& what) { return Error{"render data: " + what}; }

bool finite(float v) { return std::isfinite(v); }
bool finite(Vec3f v) { return finite(v.x) && finite(v.y) && finite(v.z); }

bool validTexture(int32_t index, size_t textureCount) {
  return index == kernel::kNoTexture || (index >= 0 && size_t(index) < textureCount);
}

// An inclusive CDF: finite, non-decreasing, within [0, 1], last entry 1.
Status checkCdf(const float* cdf, size_t n, const std::string& name) {
  float previous = 0.0f;
  for (size_t i = 0; i < n; ++i) {
    float c = cdf[i];
    if (!finite(c) || c < previous || c > 1.0f)
      return invalid(name + " is not a non-decreasing CDF in [0, 1] at entry " + std::to_string(i));
    previous = c;
  }
  if (n > 0 && cdf[n - 1] != 1.0f) return invalid(name + " does not end at 1");
  return Status();
}

}  // namespace

Status validateCamera(const kernel::Camera& cam) {
  if (cam.width == 0 || cam.height == 0 || cam.width > kMaxImageDimension ||
      cam.height > kMaxImageDimension)
    return invalid("image size " + std::to_string(cam.width) + "x" + std::to_string(cam.height) +
                   " is not within 1.." + std::to_string(kMaxImageDimension));
  if (cam.type != kernel::kCameraPerspective && cam.type != kernel::kCameraOrthographic)
    return invalid("camera has unknown type " + std::to_string(cam.type));
  if (!finite(cam.position) || !finite(cam.right) || !finite(cam.up) || !finite(cam.forward) ||
      !finite(cam.tanHalfFovY) || !finite(cam.orthoHalfHeight))
    return invalid("camera has non-finite values");
  if (cam.type == kernel::kCameraPerspective && !(cam.tanHalfFovY > 0.0f))
    return invalid("perspective camera needs tanHalfFovY > 0");
  if (cam.type == kernel::kCameraOrthographic && !(cam.orthoHalfHeight > 0.0f))
    return invalid("orthographic camera needs orthoHalfHeight > 0");
  if ((cam.passes & ~kernel::kAllPasses) != 0)
    return invalid("camera asks for unknown passes " + std::to_string(cam.passes));
  return Status();
}

Status RenderData::validateGeometry() const {
  // The kernel indexes with uint32_t.
  const uint64_t kMaxCount = 0xffffffffu;
  for (RenderDataArray which : kGeometryArrays) {
    const Bytes bytes = arrayBytes(which);
    if (bytes.size / bytes.elementSize >= kMaxCount)
      return invalid(std::string(renderDataArrayName(which)) + " has too many elements (" +
                     std::to_string(bytes.size / bytes.elementSize) + ")");
  }
  const size_t vertexCount = positions.size();
  for (size_t i = 0; i < vertexCount; ++i)
    if (!finite(positions[i])) return invalid(at("positions", i) + " is not finite");

  for (size_t i = 0; i < triangles.size(); ++i) {
    const kernel::Triangle& t = triangles[i];
    if (t.v0 >= vertexCount || t.v1 >= vertexCount || t.v2 >= vertexCount)
      return invalid(at("triangles", i) + " has a vertex index beyond the " +
                     std::to_string(vertexCount) + " vertices");
  }

  // Meshes: none (all one mesh), or consecutive ranges that cover every triangle and every
  // vertex, each mesh's triangles indexing only its own vertices.
  if (!meshes.empty()) {
    uint64_t triangleEnd = 0, vertexEnd = 0;
    for (size_t i = 0; i < meshes.size(); ++i) {
      const kernel::MeshRange& m = meshes[i];
      if (m.firstTriangle != triangleEnd || m.firstVertex != vertexEnd)
        return invalid(at("meshes", i) + " does not start where the mesh before it ends");
      if (uint64_t(m.firstTriangle) + m.triangleCount > triangles.size() ||
          uint64_t(m.firstVertex) + m.vertexCount > vertexCount)
        return invalid(at("meshes", i) + " reaches beyond the " +
                       std::to_string(triangles.size()) + " triangles or " +
                       std::to_string(vertexCount) + " vertices");
      if ((m.flags & ~uint32_t(kernel::kMeshDynamic)) != 0)
        return invalid(at("meshes", i) + " has unknown flags " + std::to_string(m.flags));
      // So that there are never more meshes than triangles and vertices.
      if (m.triangleCount == 0 && m.vertexCount == 0)
        return invalid(at("meshes", i) + " is empty");
      const uint32_t vBegin = m.firstVertex, vEnd = m.firstVertex + m.vertexCount;
      for (uint32_t t = m.firstTriangle; t < m.firstTriangle + m.triangleCount; ++t) {
        const kernel::Triangle& tri = triangles[t];
        for (uint32_t v : {tri.v0, tri.v1, tri.v2})
          if (v < vBegin || v >= vEnd)
            return invalid(at("triangles", t) + " of " + at("meshes", i) +
                           " indexes a vertex outside its mesh");
      }
      triangleEnd = uint64_t(m.firstTriangle) + m.triangleCount;
      vertexEnd = uint64_t(m.firstVertex) + m.vertexCount;
    }
    if (triangleEnd != triangles.size() || vertexEnd != vertexCount)
      return invalid("the meshes cover " + std::to_string(triangleEnd) + " of " +
                     std::to_string(triangles.size()) + " triangles and " +
                     std::to_string(vertexEnd) + " of " + std::to_string(vertexCount) +
                     " vertices");
  }

  return Status();
}

Status validateTextures(std::span<const kernel::Texture> textures, uint64_t texelCount,
                        uint64_t mipTexelCount) {
  uint64_t mipTexelsUsed = 0;
  for (size_t i = 0; i < textures.size(); ++i) {
    const kernel::Texture& t = textures[i];
    if (t.width == 0 || t.height == 0) return invalid(at("textures", i) + " has an empty image");
    if (t.width > kMaxTextureDimension || t.height > kMaxTextureDimension)
      return invalid(at("textures", i) + " is larger than " +
                     std::to_string(kMaxTextureDimension) + " texels a side");
    if (t.mipLevels < 1 || t.mipLevels > kernel::mipLevelCount(t.width, t.height))
      return invalid(at("textures", i) + " has " + std::to_string(t.mipLevels) +
                     " mip levels (1 to " +
                     std::to_string(kernel::mipLevelCount(t.width, t.height)) + " for " +
                     std::to_string(t.width) + "x" + std::to_string(t.height) + ")");
    const uint64_t count = uint64_t(t.width) * t.height;
    if (uint64_t(t.texelOffset) + count > texelCount)
      return invalid(at("textures", i) + " reads past the end of the " +
                     std::to_string(texelCount) + " texels");
    // The levels below 0 of each texture follow the last texture's, filling mipTexels exactly:
    // a node computes them into their places (core/scene/texture_mips.h).
    if (t.mipTexelOffset != mipTexelsUsed)
      return invalid(at("textures", i) + "'s mip levels start at texel " +
                     std::to_string(t.mipTexelOffset) + " of mipTexels, not " +
                     std::to_string(mipTexelsUsed) + " (after the textures before it)");
    if (t.mipColour > 1)
      return invalid(at("textures", i) + " has an unknown mip filter " +
                     std::to_string(t.mipColour));
    mipTexelsUsed += kernel::mipChainTexels(t.width, t.height, t.mipLevels) - count;
    if (mipTexelsUsed > mipTexelCount)
      return invalid(at("textures", i) + "'s mip levels run past the end of the " +
                     std::to_string(mipTexelCount) + " mipTexels");
    if (t.wrapS > kernel::kWrapMirror || t.wrapT > kernel::kWrapMirror ||
        t.filter > kernel::kFilterLinear)
      return invalid(at("textures", i) + " has an unknown wrap or filter mode");
    for (float f : t.uv)
      if (!finite(f)) return invalid(at("textures", i) + " has a non-finite UV transform");
  }
  if (mipTexelsUsed != mipTexelCount)
    return invalid("mipTexels holds " + std::to_string(mipTexelCount) +
                   " texels, the textures' mip levels " + std::to_string(mipTexelsUsed));
  return Status();
}

Status RenderData::validate() const {
  // Exactly one camera and one globals, with a sane image size.
  if (camera.size() != 1)
    return invalid("expected exactly one camera, found " + std::to_string(camera.size()));
  if (globals.size() != 1)
    return invalid("expected exactly one globals entry, found " + std::to_string(globals.size()));
  if (Status s = validateCamera(camera[0]); !s.ok()) return s;

  // The kernel indexes with uint32_t.
  const uint64_t kMaxCount = 0xffffffffu;
#define PL_RD_COUNT(Type, name)                                                                    \
  if (name.size() >= kMaxCount)                                                                    \
    return invalid(std::string(#name) + " has too many elements (" + std::to_string(name.size()) + \
                   ")");
  PL_RENDER_DATA_ARRAYS(PL_RD_COUNT)
#undef PL_RD_COUNT

  // Per-vertex attribute arrays have one entry per position, or none at all (an absent
  // attribute: the kernel then uses the geometric normal, UV (0, 0), a tangent from the
  // triangle's UVs). compile() always fills all of them.
  const size_t vertexCount = positions.size();
  auto perVertex = [vertexCount](size_t n) { return n == 0 || n == vertexCount; };
  if (!perVertex(normals.size()) || !perVertex(uvs.size()) || !perVertex(tangents.size()))
    return invalid("per-vertex arrays differ in length: positions " + std::to_string(vertexCount) +
                   ", normals " + std::to_string(normals.size()) + ", uvs " +
                   std::to_string(uvs.size()) + ", tangents " + std::to_string(tangents.size()));
  if (Status s = validateGeometry(); !s.ok()) return s;
  for (size_t i = 0; i < triangles.size(); ++i) {
    if (triangles[i].material >= materials.size())
      return invalid(at("triangles", i) + " has material " +
                     std::to_string(triangles[i].material) + " of " +
                     std::to_string(materials.size()));
  }

  for (size_t i = 0; i < materials.size(); ++i) {
    const kernel::Material& m = materials[i];
    const size_t n = textures.size();
    for (int32_t t : {m.baseColorTexture, m.metallicRoughnessTexture, m.normalTexture,
                      m.emissiveTexture, m.transmissionTexture, m.clearcoatTexture,
                      m.clearcoatRoughnessTexture, m.clearcoatNormalTexture, m.sheenColorTexture,
                      m.sheenRoughnessTexture, m.specularTexture, m.specularColorTexture})
      if (!validTexture(t, n))
        return invalid(at("materials", i) + " refers to a texture beyond the " +
                       std::to_string(n) + " textures");
    if (m.alphaMode > kernel::kAlphaBlend)
      return invalid(at("materials", i) + " has unknown alpha mode " + std::to_string(m.alphaMode));
    const float factors[] = {m.baseColorFactor.x, m.baseColorFactor.y, m.baseColorFactor.z,
                             m.baseColorFactor.w, m.metallicFactor, m.roughnessFactor,
                             m.normalScale, m.transmissionFactor, m.thicknessFactor,
                             m.attenuationDistance, m.clearcoatFactor,
                             m.clearcoatRoughnessFactor, m.clearcoatNormalScale,
                             m.sheenRoughnessFactor, m.specularFactor};
    bool finiteFactors = true;
    for (float f : factors) finiteFactors &= finite(f);
    if (!finiteFactors || !finite(m.attenuationColor) || !finite(m.sheenColorFactor) ||
        !finite(m.specularColorFactor) || !finite(m.emission) || !finite(m.ior) ||
        !finite(m.alphaCutoff))
      return invalid(at("materials", i) + " has non-finite values");
  }

  if (Status s = validateTextures(textures, texels.size(), mipTexels.size()); !s.ok()) return s;

  // Emissive triangles and their CDF.
  if (emissiveCdf.size() != emissiveTriangles.size())
    return invalid("emissiveCdf has " + std::to_string(emissiveCdf.size()) + " entries for " +
                   std::to_string(emissiveTriangles.size()) + " emissive triangles");
  for (size_t i = 0; i < emissiveTriangles.size(); ++i)
    if (emissiveTriangles[i] >= triangles.size())
      return invalid(at("emissiveTriangles", i) + " is beyond the " +
                     std::to_string(triangles.size()) + " triangles");
  if (Status s = checkCdf(emissiveCdf.data(), emissiveCdf.size(), "emissiveCdf"); !s.ok()) return s;

  for (size_t i = 0; i < lights.size(); ++i) {
    const kernel::PunctualLight& l = lights[i];
    if (l.type > kernel::kLightDirectional)
      return invalid(at("lights", i) + " has unknown type " + std::to_string(l.type));
    if (!finite(l.position) || !finite(l.direction) || !finite(l.intensity))
      return invalid(at("lights", i) + " has non-finite values");
  }

  // Environment.
  const kernel::SceneGlobals& g = globals[0];
  if (!finite(g.envScale) || !finite(g.envIntegral) || !finite(g.emissiveTotalPower) ||
      !finite(g.boundsMin) || !finite(g.boundsMax))
    return invalid("globals have non-finite values");
  if ((g.envWidth == 0) != (g.envHeight == 0))
    return invalid("environment map size " + std::to_string(g.envWidth) + "x" +
                   std::to_string(g.envHeight) + " has one zero dimension");
  if (g.envWidth > kMaxImageDimension || g.envHeight > kMaxImageDimension)
    return invalid("environment map size " + std::to_string(g.envWidth) + "x" +
                   std::to_string(g.envHeight) + " beyond the limit");
  const uint64_t envCount = uint64_t(g.envWidth) * g.envHeight;
  if (envTexels.size() != envCount || envConditionalCdf.size() != envCount ||
      envMarginalCdf.size() != g.envHeight)
    return invalid("environment arrays do not match the " + std::to_string(g.envWidth) + "x" +
                   std::to_string(g.envHeight) + " map (texels " +
                   std::to_string(envTexels.size()) + ", conditional CDF " +
                   std::to_string(envConditionalCdf.size()) + ", marginal CDF " +
                   std::to_string(envMarginalCdf.size()) + ")");
  for (uint32_t y = 0; y < g.envHeight; ++y) {
    Status s = checkCdf(envConditionalCdf.data() + uint64_t(y) * g.envWidth, g.envWidth,
                        "envConditionalCdf row " + std::to_string(y));
    if (!s.ok()) return s;
  }
  if (Status s = checkCdf(envMarginalCdf.data(), envMarginalCdf.size(), "envMarginalCdf"); !s.ok())
    return s;
  return Status();
}

}  // namespace pl
