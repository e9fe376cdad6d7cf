#pragma once
// Surface points: reconstructing a hit (position, normals, UV, tangent, material) from a
// Tracer's Hit, material alpha coverage, surface emission, and robust ray origins.
//
// Barycentrics follow Embree: p = (1 - u - v) p0 + u p1 + v p2. The geometric normal is
// normalize(cross(p1 - p0, p2 - p0)); its side is the triangle's front face (glTF's
// counter-clockwise winding). Per-vertex arrays (normals, uvs, tangents) may be shorter than
// positions (absent attributes); then the geometric normal and UV (0, 0) are used, and a
// tangent is derived from the triangle's UVs when it has them (none without UVs).

#include "core/kernel/scene_view.h"
#include "core/kernel/texture.h"

namespace pl::kernel {

struct SurfacePoint {
  Vec3f p;
  Vec3f ng;        // unit, front face side (not oriented towards the viewer)
  Vec3f ns;        // unit interpolated vertex normal (ng when absent), not normal-mapped
  Vec2f uv;
  Vec4f tangent;   // xyz + handedness w; w == 0 when there is no tangent
  float area;      // of the triangle
  float lod;       // texture level of detail (texture.h): kNoLod without UVs
  uint32_t material;
};

// The width one pixel of the camera covers at p, in world units: the image plane's pixel
// pitch scaled to p's distance (perspective) or the pitch itself (orthographic). Used at every
// surface point, also ones seen through reflections: a footprint for texture filtering that
// depends on the scene and the camera only.
PL_HOST_DEVICE PL_INLINE float pixelFootprint(const Camera& cam, Vec3f p) {
  const float pitch = 2.0f / static_cast<float>(cam.height);
  if (cam.type == kCameraOrthographic) return cam.orthoHalfHeight * pitch;
  return length(p - cam.position) * cam.tanHalfFovY * pitch;
}

// The width of one sample's texture filter against the pixel's footprint: 1/2. A pixel's
// samples spread over it, so each needs to filter only its share: pbrt-v4 scales its ray
// differentials by max(1/8, 1/sqrt(spp)) and filters over twice them, a pixel's width at
// 4 spp, half of it at 16. A session's sample count is open, and a sample's value must not
// depend on it (the determinism contract), so the width is fixed: pbrt-v4's at 16 spp.
// Against Cycles, which reads textures at full resolution, DamagedHelmet at 512 spp agrees to
// 2.64% per block with it, 3.46% with the whole pixel (bench/cycles_agreement.py). Finer levels
// cost speed in cache misses: 1/4 (2.40%) slowed DamagedHelmet by about 15%.
constexpr float kSampleFilterWidth = 0.5f;

// The largest vertex index of a triangle: per-vertex arrays shorter than it are absent.
PL_HOST_DEVICE PL_INLINE uint32_t maxVertex(const Triangle& tri) {
  return tri.v0 > tri.v1 ? (tri.v0 > tri.v2 ? tri.v0 : tri.v2)
                         : (tri.v1 > tri.v2 ? tri.v1 : tri.v2);
}

// The UV at barycentrics (u, v) of a triangle whose vertices have these UVs.
PL_HOST_DEVICE PL_INLINE Vec2f interpolateUv(Vec2f uv0, Vec2f uv1, Vec2f uv2, float u, float v) {
  return uv0 * (1.0f - u - v) + uv1 * u + uv2 * v;
}

// What surfaceAt() computes: everything, or all but the shading frame (ns is ng and there is
// no tangent), which a point on a light or a shadow ray's blocker does not need.
enum class SurfaceParts { kAll, kNoShadingFrame };

template <SurfaceParts kParts = SurfaceParts::kAll>
PL_HOST_DEVICE PL_INLINE SurfacePoint surfaceAt(const SceneView& scene, uint32_t prim, float u,
                                                float v) {
  const Triangle& tri = scene.triangles[prim];
  const Vec3f p0 = scene.positions[tri.v0];
  const Vec3f p1 = scene.positions[tri.v1];
  const Vec3f p2 = scene.positions[tri.v2];
  const float w = 1.0f - u - v;
  SurfacePoint s;
  const Vec3f e1 = p1 - p0, e2 = p2 - p0;
  s.p = p0 + e1 * u + e2 * v;
  const Vec3f c = cross(e1, e2);
  const float cLen = length(c);
  s.area = 0.5f * cLen;
  s.ng = cLen > 0.0f ? c * (1.0f / cLen) : vec3(0.0f, 0.0f, 1.0f);
  s.material = tri.material;
  const uint32_t maxV = maxVertex(tri);
  s.ns = s.ng;
  if constexpr (kParts == SurfaceParts::kAll) {
    if (maxV < scene.normalsCount) {
      const Vec3f n = scene.normals[tri.v0] * w + scene.normals[tri.v1] * u +
                      scene.normals[tri.v2] * v;
      const float nLen = length(n);
      if (nLen > 0.0f && isFinite(n)) s.ns = n * (1.0f / nLen);
    }
  }
  s.uv = {0.0f, 0.0f};
  s.lod = kNoLod;
  if (maxV < scene.uvsCount) {
    const Vec2f uv0 = scene.uvs[tri.v0], uv1 = scene.uvs[tri.v1], uv2 = scene.uvs[tri.v2];
    s.uv = interpolateUv(uv0, uv1, uv2, u, v);
    // One sample's footprint in UV units: its world width times the triangle's UV scale.
    const Vec2f d1 = uv1 - uv0, d2 = uv2 - uv0;
    const float uvArea = 0.5f * fabsf(d1.x * d2.y - d1.y * d2.x);
    const float footprint =
        scene.cameraCount > 0 ? kSampleFilterWidth * pixelFootprint(scene.cam(), s.p) : 0.0f;
    const float ratio = footprint * footprint * uvArea / s.area;
    if (ratio > 0.0f && ratio < kInfinity) s.lod = 0.5f * log2f(ratio);
  }
  s.tangent = {0.0f, 0.0f, 0.0f, 0.0f};
  if constexpr (kParts != SurfaceParts::kAll) return s;
  if (maxV < scene.tangentsCount) {
    const Vec4f t0 = scene.tangents[tri.v0], t1 = scene.tangents[tri.v1],
                t2 = scene.tangents[tri.v2];
    s.tangent = {t0.x * w + t1.x * u + t2.x * v, t0.y * w + t1.y * u + t2.y * v,
                 t0.z * w + t1.z * u + t2.z * v, t0.w < 0.0f ? -1.0f : 1.0f};
  } else if (maxV < scene.uvsCount) {
    // No tangents given: derive one from the UV parameterization of this triangle, with the
    // bitangent towards decreasing v (the image's top), as generateTangents() does.
    const Vec2f d1 = scene.uvs[tri.v1] - scene.uvs[tri.v0];
    const Vec2f d2 = scene.uvs[tri.v2] - scene.uvs[tri.v0];
    const float det = d1.x * d2.y - d1.y * d2.x;
    if (det != 0.0f) {
      const float r = 1.0f / det;
      const Vec3f t = (e1 * d2.y - e2 * d1.y) * r;
      const Vec3f b = (e2 * d1.x - e1 * d2.x) * r;
      const float handed = dot(cross(s.ns, t), b) < 0.0f ? 1.0f : -1.0f;
      if (isFinite(t)) s.tangent = {t.x, t.y, t.z, handed};
    }
  }
  return s;
}

// Alpha = baseColorFactor.a * base colour texture alpha, from the finest level always (the
// alpha of a mask is the surface's shape, not a colour to prefilter).
PL_HOST_DEVICE PL_INLINE float materialAlpha(const SceneView& scene, const Material& m,
                                             Vec2f uv) {
  float a = m.baseColorFactor.w;
  if (m.baseColorTexture != kNoTexture) a *= sampleTexture(scene, m.baseColorTexture, uv, true).w;
  return a;
}

// Fraction of light the surface stops at this point: 1 for opaque, 0 or 1 for alpha mask
// (alpha < cutoff is cut out), alpha for blend (used as a probability or a weight).
PL_HOST_DEVICE PL_INLINE float materialCoverage(const SceneView& scene, const Material& m,
                                                Vec2f uv) {
  if (m.alphaMode == kAlphaOpaque) return 1.0f;
  const float a = materialAlpha(scene, m, uv);
  if (m.alphaMode == kAlphaMask) return a < m.alphaCutoff ? 0.0f : 1.0f;
  return clampf(a, 0.0f, 1.0f);
}

// Whether triangle `prim` is cut out at barycentrics (u, v): an alpha MASK surface whose alpha
// there is below its cutoff (materialCoverage() 0 at surfaceAt()'s UV). Rays pass through it.
PL_HOST_DEVICE PL_INLINE bool maskCutOutAt(const SceneView& scene, uint32_t prim, float u,
                                           float v) {
  const Triangle& tri = scene.triangles[prim];
  const Material& m = scene.materials[tri.material];
  if (m.alphaMode != kAlphaMask) return false;
  const uint32_t maxV = maxVertex(tri);
  const Vec2f uv = maxV < scene.uvsCount ? interpolateUv(scene.uvs[tri.v0], scene.uvs[tri.v1],
                                                         scene.uvs[tri.v2], u, v)
                                         : Vec2f{0.0f, 0.0f};
  return materialCoverage(scene, m, uv) == 0.0f;
}

// Radiance emitted at a surface point towards a direction w (unit, away from the surface):
// emission * emissive texture (sRGB); single-sided materials emit from the front face only.
PL_HOST_DEVICE PL_INLINE Vec3f emittedRadiance(const SceneView& scene, const Material& m,
                                               const SurfacePoint& s, Vec3f w) {
  if (isBlack(m.emission)) return vec3(0.0f);
  if (!m.doubleSided && !(dot(s.ng, w) > 0.0f)) return vec3(0.0f);
  Vec3f e = m.emission;
  if (m.emissiveTexture != kNoTexture)
    e *= xyz(sampleTexture(scene, m.emissiveTexture, s.uv, true, s.lod));
  return e;
}

// Wächter & Binder 2019, "A Fast and Robust Method for Avoiding Self-Intersection" (Ray
// Tracing Gems ch. 6): moves p off the surface along n (unit, pointing to the side the new
// ray leaves to) by a few ulps in integer space, or by a fixed small amount near the origin.
// Rays spawned from the result use tMin = 0.
PL_HOST_DEVICE PL_INLINE float offsetFloat(float p, float n) {
  constexpr float kOrigin = 1.0f / 32.0f;
  constexpr float kFloatScale = 1.0f / 65536.0f;
  constexpr float kIntScale = 256.0f;
  const int32_t of = static_cast<int32_t>(kIntScale * n);
  // Unsigned wrap-around addition on the bit pattern (no signed overflow).
  const float pi = bitsFloat(floatBits(p) + static_cast<uint32_t>(p < 0.0f ? -of : of));
  return fabsf(p) < kOrigin ? p + kFloatScale * n : pi;
}
PL_HOST_DEVICE PL_INLINE Vec3f offsetRayOrigin(Vec3f p, Vec3f n) {
  return {offsetFloat(p.x, n.x), offsetFloat(p.y, n.y), offsetFloat(p.z, n.z)};
}

}  // namespace pl::kernel
