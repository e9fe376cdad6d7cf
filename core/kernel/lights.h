#pragma once
// Light sampling for next-event estimation, and the matching pdfs for multiple importance
// sampling: emissive triangles, punctual lights (KHR_lights_punctual) and the environment.
//
// A light sample first picks a category among those present ({emissive triangles, punctual
// lights, environment}, uniformly), then a light within it: an emissive triangle by
// emissiveCdf and a uniform point on it; a punctual light uniformly; an environment direction
// uniformly on the sphere (constant) or by the equirectangular map's CDFs. pdfs are in solid
// angle at the shading point and include the selection probabilities; punctual lights are
// delta lights (pdf = selection probability, no MIS).
//
// Environment directions (glTF world, +Y up) map to equirectangular (s, t) in [0,1)^2, t = 0
// the top row, Blender-compatibly: Blender's world is Z up with blender (x, y, z) =
// glTF (x, -z, y), and Blender's lookup is u = atan2(y, -x) / 2pi + 0.5,
// v = atan2(z, hypot(x, y)) / pi + 0.5 with v = 1 the top row; so s = u and t = 1 - v:
//   s = atan2(-dir.z, -dir.x) / 2pi + 0.5,   t = acos(dir.y) / pi.
//
// Requirement on RenderData: emissiveTriangles is sorted ascending (the MIS pdf of a triangle
// hit by a BSDF ray is found by binary search over it).

#include "core/kernel/surface.h"

namespace pl::kernel {

// ---- CDF helpers ----

// The smallest i in [0, n) with cdf[i] > u (inclusive CDF, cdf[n-1] == 1), clamped to n - 1.
PL_HOST_DEVICE PL_INLINE uint32_t searchCdf(const float* cdf, uint32_t n, float u) {
  uint32_t lo = 0, hi = n - 1;
  while (lo < hi) {
    const uint32_t mid = lo + (hi - lo) / 2;
    if (cdf[mid] > u)
      hi = mid;
    else
      lo = mid + 1;
  }
  return lo;
}
PL_HOST_DEVICE PL_INLINE float cdfProbability(const float* cdf, uint32_t i) {
  return i == 0 ? cdf[0] : cdf[i] - cdf[i - 1];
}

// ---- Environment ----

PL_HOST_DEVICE PL_INLINE Vec2f envDirectionToST(Vec3f d) {
  float s = atan2f(-d.z, -d.x) * (0.5f * kInvPi) + 0.5f;
  const float t = acosf(clampf(d.y, -1.0f, 1.0f)) * kInvPi;
  if (s >= 1.0f) s -= 1.0f;
  if (s < 0.0f) s += 1.0f;
  return {s, t};
}
PL_HOST_DEVICE PL_INLINE Vec3f envSTToDirection(float s, float t) {
  const float theta = t * kPi;
  const float phi = (s - 0.5f) * (2.0f * kPi);
  const float sinTheta = sinf(theta);
  return {-sinTheta * cosf(phi), cosf(theta), -sinTheta * sinf(phi)};
}

PL_HOST_DEVICE PL_INLINE bool hasEnvMap(const SceneView& scene) {
  const SceneGlobals& g = scene.global();
  return g.envWidth > 0 && g.envHeight > 0;
}

// Environment radiance seen along direction d (unit): envScale times the map, or envScale for
// a constant environment. Lighting lookups (filtered = false) take the nearest texel, so that
// the radiance is piecewise constant exactly like the sampling pdf: a bilinear lookup would
// spread a small bright texel (a sun) into neighbours that the pdf barely samples, which makes
// next-event estimation extremely heavy-tailed. Camera rays that see the background directly
// (no MIS involved) may use the bilinear lookup (filtered = true, wrapping horizontally and
// clamped vertically), which matches Blender's default "Linear" interpolation.
PL_HOST_DEVICE PL_INLINE Vec3f envRadiance(const SceneView& scene, Vec3f d, bool filtered) {
  const SceneGlobals& g = scene.global();
  if (!hasEnvMap(scene)) return g.envScale;
  const Vec2f st = envDirectionToST(d);
  const int32_t w = static_cast<int32_t>(g.envWidth), h = static_cast<int32_t>(g.envHeight);
  const Vec3f* tex = scene.envTexels;
  if (!filtered) {
    int32_t x = static_cast<int32_t>(st.x * static_cast<float>(w));
    int32_t y = static_cast<int32_t>(st.y * static_cast<float>(h));
    x = x < 0 ? 0 : (x >= w ? w - 1 : x);
    y = y < 0 ? 0 : (y >= h ? h - 1 : y);
    return g.envScale * tex[y * w + x];
  }
  const float fx = st.x * static_cast<float>(w) - 0.5f;
  const float fy = st.y * static_cast<float>(h) - 0.5f;
  const float x0f = floorf(fx), y0f = floorf(fy);
  const float tx = fx - x0f, ty = fy - y0f;
  int32_t x0 = static_cast<int32_t>(x0f), y0 = static_cast<int32_t>(y0f);
  int32_t x1 = x0 + 1, y1 = y0 + 1;
  x0 = (x0 % w + w) % w;
  x1 = (x1 % w + w) % w;
  y0 = y0 < 0 ? 0 : (y0 >= h ? h - 1 : y0);
  y1 = y1 < 0 ? 0 : (y1 >= h ? h - 1 : y1);
  const Vec3f c = (tex[y0 * w + x0] * (1.0f - tx) + tex[y0 * w + x1] * tx) * (1.0f - ty) +
                  (tex[y1 * w + x0] * (1.0f - tx) + tex[y1 * w + x1] * tx) * ty;
  return g.envScale * c;
}

// Solid-angle pdf of sampleEnvDirection() for direction d, without category selection.
PL_HOST_DEVICE PL_INLINE float envDirectionPdf(const SceneView& scene, Vec3f d) {
  const SceneGlobals& g = scene.global();
  if (!(g.envIntegral > 0.0f)) return 0.0f;
  if (!hasEnvMap(scene)) return 0.25f * kInvPi;
  const Vec2f st = envDirectionToST(d);
  const float sinTheta = sqrtf(d.x * d.x + d.z * d.z);
  if (!(sinTheta > 0.0f)) return 0.0f;
  uint32_t col = static_cast<uint32_t>(st.x * static_cast<float>(g.envWidth));
  uint32_t row = static_cast<uint32_t>(st.y * static_cast<float>(g.envHeight));
  if (col >= g.envWidth) col = g.envWidth - 1;
  if (row >= g.envHeight) row = g.envHeight - 1;
  const float pRow = cdfProbability(scene.envMarginalCdf, row);
  const float pCol = cdfProbability(scene.envConditionalCdf + uint64_t(row) * g.envWidth, col);
  return pRow * pCol * static_cast<float>(g.envWidth) * static_cast<float>(g.envHeight) /
         (2.0f * kPi * kPi * sinTheta);
}

// Samples an environment direction; returns false when none (pdf 0).
PL_HOST_DEVICE PL_INLINE bool sampleEnvDirection(const SceneView& scene, Vec2f u, Vec3f* dir,
                                                 float* pdf) {
  const SceneGlobals& g = scene.global();
  if (!(g.envIntegral > 0.0f)) return false;
  if (!hasEnvMap(scene)) {
    const float z = 1.0f - 2.0f * u.x;
    const float r = safeSqrt(1.0f - z * z);
    const float phi = 2.0f * kPi * u.y;
    *dir = vec3(r * cosf(phi), r * sinf(phi), z);
    *pdf = 0.25f * kInvPi;
    return true;
  }
  const uint32_t w = g.envWidth, h = g.envHeight;
  const uint32_t row = searchCdf(scene.envMarginalCdf, h, u.y);
  const float pRow = cdfProbability(scene.envMarginalCdf, row);
  const float* cond = scene.envConditionalCdf + uint64_t(row) * w;
  const uint32_t col = searchCdf(cond, w, u.x);
  const float pCol = cdfProbability(cond, col);
  if (!(pRow > 0.0f) || !(pCol > 0.0f)) return false;
  // Reuse the position of u inside the chosen bucket as the offset inside the texel.
  const float rowStart = row == 0 ? 0.0f : scene.envMarginalCdf[row - 1];
  const float colStart = col == 0 ? 0.0f : cond[col - 1];
  const float fy = clampf((u.y - rowStart) / pRow, 0.0f, 0.99999994f);
  const float fx = clampf((u.x - colStart) / pCol, 0.0f, 0.99999994f);
  const float s = (static_cast<float>(col) + fx) / static_cast<float>(w);
  const float t = (static_cast<float>(row) + fy) / static_cast<float>(h);
  *dir = envSTToDirection(s, t);
  const float sinTheta = sinf(t * kPi);
  if (!(sinTheta > 0.0f)) return false;
  *pdf = pRow * pCol * static_cast<float>(w) * static_cast<float>(h) /
         (2.0f * kPi * kPi * sinTheta);
  return *pdf > 0.0f;
}

// ---- Category selection ----

struct LightSelection {
  float pEmissive, pPunctual, pEnv;
};

PL_HOST_DEVICE PL_INLINE LightSelection lightSelection(const SceneView& scene) {
  const SceneGlobals& g = scene.global();
  const bool emissive = scene.emissiveTrianglesCount > 0 && g.emissiveTotalPower > 0.0f;
  const bool punctual = scene.lightsCount > 0;
  const bool env = g.envIntegral > 0.0f;
  const int n = int(emissive) + int(punctual) + int(env);
  const float p = n > 0 ? 1.0f / static_cast<float>(n) : 0.0f;
  return {emissive ? p : 0.0f, punctual ? p : 0.0f, env ? p : 0.0f};
}

// ---- Emissive triangles ----

// Probability that sampleEmissiveTriangle picks triangle `prim` (0 when it is not emissive).
PL_HOST_DEVICE PL_INLINE float emissiveTriangleProbability(const SceneView& scene, uint32_t prim) {
  const uint32_t n = scene.emissiveTrianglesCount;
  if (n == 0) return 0.0f;
  uint32_t lo = 0, hi = n;
  while (lo < hi) {
    const uint32_t mid = lo + (hi - lo) / 2;
    if (scene.emissiveTriangles[mid] < prim)
      lo = mid + 1;
    else
      hi = mid;
  }
  if (lo >= n || scene.emissiveTriangles[lo] != prim) return 0.0f;
  return cdfProbability(scene.emissiveCdf, lo);
}

// Solid-angle pdf of reaching point y on emissive triangle with area `area` and unit normal ng
// from x by light sampling (without the category probability).
PL_HOST_DEVICE PL_INLINE float emissiveSolidAnglePdf(float pTriangle, float area, Vec3f x,
                                                     Vec3f y, Vec3f ng) {
  const Vec3f d = y - x;
  const float dist2 = lengthSquared(d);
  const float cosL = fabsf(dot(ng, d)) / sqrtf(dist2);
  if (!(cosL > 0.0f) || !(area > 0.0f)) return 0.0f;
  return pTriangle * dist2 / (area * cosL);
}

// ---- Light samples ----

struct LightSample {
  Vec3f wi;         // unit, from the shading point towards the light
  Vec3f radiance;   // incident radiance (delta lights: irradiance-like intensity / d^2)
  Vec3f target;     // shadow ray end point (offset off the emitter); unused when distant
  float pdf;        // solid angle, with selection (delta lights: selection probability)
  bool delta;       // punctual light: no MIS
  bool distant;     // environment or directional light: shadow ray to infinity
};

PL_HOST_DEVICE PL_INLINE bool sampleEmissive(const SceneView& scene, Vec3f x, float uSelect,
                                             Vec2f u, LightSample* out) {
  const uint32_t k = searchCdf(scene.emissiveCdf, scene.emissiveTrianglesCount, uSelect);
  const float pTri = cdfProbability(scene.emissiveCdf, k);
  if (!(pTri > 0.0f)) return false;
  const uint32_t prim = scene.emissiveTriangles[k];
  // Uniform barycentrics: (b1, b2) = (su (1 - u.y), su u.y) with su = sqrt(u.x).
  const float su = sqrtf(u.x);
  const SurfacePoint s =
      surfaceAt<SurfaceParts::kNoShadingFrame>(scene, prim, su * (1.0f - u.y), su * u.y);
  const Vec3f d = s.p - x;
  const float dist2 = lengthSquared(d);
  if (!(dist2 > 0.0f)) return false;
  const Vec3f wi = d * (1.0f / sqrtf(dist2));
  const Material& m = scene.materials[s.material];
  Vec3f le = emittedRadiance(scene, m, s, -wi);
  if (m.alphaMode != kAlphaOpaque) le *= materialCoverage(scene, m, s.uv);
  if (isBlack(le)) return false;
  const float pdf = emissiveSolidAnglePdf(pTri, s.area, x, s.p, s.ng);
  if (!(pdf > 0.0f)) return false;
  out->wi = wi;
  out->radiance = le;
  out->target = offsetRayOrigin(s.p, dot(s.ng, wi) < 0.0f ? s.ng : -s.ng);
  out->pdf = pdf;
  out->delta = false;
  out->distant = false;
  return true;
}

PL_HOST_DEVICE PL_INLINE bool samplePunctual(const SceneView& scene, Vec3f x, float uSelect,
                                             LightSample* out) {
  const uint32_t n = scene.lightsCount;
  uint32_t i = static_cast<uint32_t>(uSelect * static_cast<float>(n));
  if (i >= n) i = n - 1;
  const PunctualLight& l = scene.lights[i];
  out->delta = true;
  out->pdf = 1.0f / static_cast<float>(n);
  if (l.type == kLightDirectional) {
    out->wi = -l.direction;
    out->radiance = l.intensity;
    out->distant = true;
    out->target = x;
    return !isBlack(l.intensity);
  }
  const Vec3f d = l.position - x;
  const float dist2 = lengthSquared(d);
  if (!(dist2 > 0.0f)) return false;
  out->wi = d * (1.0f / sqrtf(dist2));
  out->distant = false;
  out->target = l.position;
  float atten = 1.0f / dist2;
  if (l.type == kLightSpot) {
    // glTF KHR_lights_punctual: squared linear ramp between the outer and inner cone.
    const float cd = dot(l.direction, -out->wi);
    const float scale = 1.0f / maxf(1.0e-3f, l.cosInnerCone - l.cosOuterCone);
    const float t = clampf((cd - l.cosOuterCone) * scale, 0.0f, 1.0f);
    atten *= t * t;
  }
  // glTF's optional range cut-off is not applied (Blender ignores it too).
  out->radiance = l.intensity * atten;
  return !isBlack(out->radiance);
}

// Picks a light for the shading point x. uSelect picks the category and the light within it
// (it is rescaled into each bucket), u the point on it.
PL_HOST_DEVICE PL_INLINE bool sampleLight(const SceneView& scene, const LightSelection& sel,
                                          Vec3f x, float uSelect, Vec2f u, LightSample* out) {
  if (uSelect < sel.pEmissive) {
    if (!sampleEmissive(scene, x, uSelect / sel.pEmissive, u, out)) return false;
    out->pdf *= sel.pEmissive;
    return true;
  }
  uSelect -= sel.pEmissive;
  if (uSelect < sel.pPunctual) {
    if (!samplePunctual(scene, x, minf(uSelect / sel.pPunctual, 0.99999994f), out))
      return false;
    out->pdf *= sel.pPunctual;
    return true;
  }
  if (!(sel.pEnv > 0.0f)) return false;
  Vec3f dir;
  float pdf;
  if (!sampleEnvDirection(scene, u, &dir, &pdf)) return false;
  out->wi = dir;
  out->radiance = envRadiance(scene, dir, false);
  out->target = x;
  out->pdf = pdf * sel.pEnv;
  out->delta = false;
  out->distant = true;
  return !isBlack(out->radiance);
}

}  // namespace pl::kernel
