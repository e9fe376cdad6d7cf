#pragma once
// Helpers for kernel tests: a brute-force Tracer (every triangle, Möller-Trumbore) and
// hand-built RenderData (camera, globals, spheres, environment and emitter tables).

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/kernel/integrator.h"
#include "core/kernel/scene_view.h"
#include "core/kernel/surface.h"
#include "core/scene/render_data.h"

namespace pl::kernel::testing {

// Intersects every triangle: fine for a few hundred triangles.
// seesMasks: occluded() passes through alpha mask cut-outs (the Tracer contract, scene_view.h).
struct BruteForceTracer {
  const SceneView* scene;
  bool seesMasks = false;

  Hit intersect(const Ray& ray, float tMin, float tMax) const {
    return closest(ray, tMin, tMax, false);
  }
  bool occluded(const Ray& ray, float tMin, float tMax) const {
    return closest(ray, tMin, tMax, seesMasks).prim != kNoHit;
  }
  bool occludedSeesMasks() const { return seesMasks; }

  Hit closest(const Ray& ray, float tMin, float tMax, bool skipCutOuts) const {
    Hit best{tMax, kNoHit, 0.0f, 0.0f};
    for (uint32_t i = 0; i < scene->trianglesCount; ++i) {
      const Triangle& t = scene->triangles[i];
      const Vec3f p0 = scene->positions[t.v0];
      const Vec3f e1 = scene->positions[t.v1] - p0, e2 = scene->positions[t.v2] - p0;
      const Vec3f pv = cross(ray.direction, e2);
      const float det = dot(e1, pv);
      if (det == 0.0f) continue;
      const float inv = 1.0f / det;
      const Vec3f tv = ray.origin - p0;
      const float u = dot(tv, pv) * inv;
      if (u < 0.0f || u > 1.0f) continue;
      const Vec3f qv = cross(tv, e1);
      const float v = dot(ray.direction, qv) * inv;
      if (v < 0.0f || u + v > 1.0f) continue;
      const float d = dot(e2, qv) * inv;
      if (d > tMin && d < best.t && !(skipCutOuts && maskCutOutAt(*scene, i, u, v)))
        best = {d, i, u, v};
    }
    return best;
  }
};

// glTF's default material but dielectric (metallic 0), opaque, single-sided.
inline Material defaultMaterial() {
  Material m{};
  m.baseColorFactor = {1.0f, 1.0f, 1.0f, 1.0f};
  m.emission = {0.0f, 0.0f, 0.0f};
  m.metallicFactor = 0.0f;
  m.roughnessFactor = 1.0f;
  m.normalScale = 1.0f;
  m.alphaCutoff = 0.5f;
  m.ior = 1.5f;
  m.alphaMode = kAlphaOpaque;
  m.doubleSided = 0;
  m.baseColorTexture = m.metallicRoughnessTexture = m.normalTexture = m.emissiveTexture =
      kNoTexture;
  return m;
}

// A perspective camera at `position` looking at the origin, +Y up, and default globals.
inline RenderData baseRenderData(uint32_t width, uint32_t height, Vec3f position,
                                 float tanHalfFovY) {
  RenderData rd;
  Camera c{};
  c.type = kCameraPerspective;
  c.width = width;
  c.height = height;
  c.position = position;
  c.forward = normalize(-position);
  c.right = normalize(cross(c.forward, vec3(0.0f, 1.0f, 0.0f)));
  c.up = cross(c.right, c.forward);
  c.tanHalfFovY = tanHalfFovY;
  c.orthoHalfHeight = 1.0f;
  rd.camera.push_back(c);
  SceneGlobals g{};
  g.boundsMin = vec3(-1.0f);
  g.boundsMax = vec3(1.0f);
  g.envScale = vec3(0.0f);
  g.maxDepth = 8;
  g.seed = 1;
  rd.globals.push_back(g);
  return rd;
}

// A flat-shaded UV sphere (no vertex normals), outward-facing counter-clockwise triangles.
inline void addSphere(RenderData& rd, Vec3f center, float radius, uint32_t nPhi, uint32_t nTheta,
                      uint32_t material) {
  const uint32_t base = static_cast<uint32_t>(rd.positions.size());
  for (uint32_t j = 0; j <= nTheta; ++j)
    for (uint32_t i = 0; i <= nPhi; ++i) {
      const float theta = kPi * float(j) / float(nTheta);
      const float phi = 2.0f * kPi * float(i) / float(nPhi);
      rd.positions.push_back(center + vec3(std::sin(theta) * std::cos(phi), std::cos(theta),
                                           -std::sin(theta) * std::sin(phi)) * radius);
    }
  auto idx = [&](uint32_t i, uint32_t j) { return base + j * (nPhi + 1) + i; };
  for (uint32_t j = 0; j < nTheta; ++j)
    for (uint32_t i = 0; i < nPhi; ++i) {
      const uint32_t a = idx(i, j), b = idx(i + 1, j), c = idx(i, j + 1), d = idx(i + 1, j + 1);
      if (j != 0) rd.triangles.push_back({a, c, b, material});
      if (j != nTheta - 1) rd.triangles.push_back({b, c, d, material});
    }
}

inline void addTriangle(RenderData& rd, Vec3f p0, Vec3f p1, Vec3f p2, uint32_t material) {
  const uint32_t base = static_cast<uint32_t>(rd.positions.size());
  rd.positions.push_back(p0);
  rd.positions.push_back(p1);
  rd.positions.push_back(p2);
  rd.triangles.push_back({base, base + 1, base + 2, material});
}

inline void addQuad(RenderData& rd, Vec3f p0, Vec3f p1, Vec3f p2, Vec3f p3, uint32_t material) {
  addTriangle(rd, p0, p1, p2, material);
  addTriangle(rd, p0, p2, p3, material);
}

// Emissive table as compile() builds it (without textures): weight = area * luminance.
inline void buildEmissiveTable(RenderData& rd) {
  rd.emissiveTriangles.clear();
  rd.emissiveCdf.clear();
  std::vector<double> weights;
  double total = 0;
  for (uint32_t i = 0; i < rd.triangles.size(); ++i) {
    const Triangle& t = rd.triangles[i];
    const float lum = luminance(rd.materials[t.material].emission);
    const Vec3f p0 = rd.positions[t.v0];
    const float area =
        0.5f * length(cross(rd.positions[t.v1] - p0, rd.positions[t.v2] - p0));
    if (lum > 0.0f && area > 0.0f) {
      rd.emissiveTriangles.push_back(i);
      weights.push_back(double(area) * lum);
      total += weights.back();
    }
  }
  double running = 0;
  for (double w : weights) {
    running += w;
    rd.emissiveCdf.push_back(float(running / total));
  }
  if (!rd.emissiveCdf.empty()) rd.emissiveCdf.back() = 1.0f;
  rd.globals[0].emissiveTotalPower = float(total);
}

// Environment tables as compile() builds them: weight = luminance * sin(pi (y + 0.5) / H).
inline void setEnvMap(RenderData& rd, uint32_t w, uint32_t h, const std::vector<Vec3f>& texels) {
  rd.envTexels = texels;
  rd.envConditionalCdf.assign(size_t(w) * h, 0.0f);
  rd.envMarginalCdf.assign(h, 0.0f);
  std::vector<double> rowSums(h);
  double total = 0;
  for (uint32_t y = 0; y < h; ++y) {
    const double s = std::sin(M_PI * (y + 0.5) / h);
    double row = 0;
    for (uint32_t x = 0; x < w; ++x) row += luminance(texels[y * w + x]) * s;
    double running = 0;
    for (uint32_t x = 0; x < w; ++x) {
      running += row > 0 ? luminance(texels[y * w + x]) * s : 1.0;
      rd.envConditionalCdf[y * w + x] = float(running / (row > 0 ? row : double(w)));
    }
    rd.envConditionalCdf[y * w + w - 1] = 1.0f;
    rowSums[y] = row;
    total += row;
  }
  double running = 0;
  for (uint32_t y = 0; y < h; ++y) {
    running += rowSums[y];
    rd.envMarginalCdf[y] = float(running / total);
  }
  rd.envMarginalCdf[h - 1] = 1.0f;
  rd.globals[0].envWidth = w;
  rd.globals[0].envHeight = h;
  rd.globals[0].envIntegral = float(total);
}

// A white floor (y = 0) lit by a square emitter (y = 3, 1 x 1) through a sheet (y = 1, 4 x 4)
// that an alpha MASK cuts out in a checker of 1 x 1 cells (a 4 x 4 nearest texture, alpha 0 or
// 255, cutoff 0.5; the cell at x, z in [-2, -1] is cut out), seen from above (y = 5), 16 x 16
// pixels. Meshes: floor, sheet, light; mesh `dynamicMesh` (if any) is kMeshDynamic.
inline RenderData maskedSheetScene(int dynamicMesh = -1) {
  RenderData rd = baseRenderData(16, 16, vec3(0.0f, 5.0f, 0.0f), 0.6f);
  Camera& c = rd.camera[0];
  c.forward = vec3(0.0f, -1.0f, 0.0f);
  c.right = vec3(1.0f, 0.0f, 0.0f);
  c.up = vec3(0.0f, 0.0f, -1.0f);
  Material white = defaultMaterial();
  white.ior = 1.0f;
  white.doubleSided = 1;
  Material sheet = white;
  sheet.alphaMode = kAlphaMask;
  sheet.baseColorTexture = 0;
  Material light = white;
  light.emission = vec3(4.0f);
  rd.materials = {white, sheet, light};
  addQuad(rd, vec3(-10, 0, -10), vec3(-10, 0, 10), vec3(10, 0, 10), vec3(10, 0, -10), 0);
  addQuad(rd, vec3(-2, 1, -2), vec3(-2, 1, 2), vec3(2, 1, 2), vec3(2, 1, -2), 1);
  addQuad(rd, vec3(-0.5f, 3, -0.5f), vec3(-0.5f, 3, 0.5f), vec3(0.5f, 3, 0.5f),
          vec3(0.5f, 3, -0.5f), 2);
  for (const Vec3f& p : rd.positions) rd.uvs.push_back(vec2((p.x + 2) / 4, (p.z + 2) / 4));
  rd.textures = {{4, 4, 0, kWrapRepeat, kWrapRepeat, kFilterNearest}};
  for (uint32_t j = 0; j < 4; ++j)
    for (uint32_t i = 0; i < 4; ++i)
      rd.texels.push_back({255, 255, 255, uint8_t((i + j) % 2 ? 255 : 0)});
  for (uint32_t m = 0; m < 3; ++m)
    rd.meshes.push_back({2 * m, 2, 6 * m, 6, int(m) == dynamicMesh ? kMeshDynamic : 0u});
  buildEmissiveTable(rd);
  rd.globals[0].hasAlpha = 1;
  rd.globals[0].maxDepth = 3;
  rd.globals[0].boundsMin = vec3(-10.0f, 0.0f, -10.0f);
  rd.globals[0].boundsMax = vec3(10.0f, 3.0f, 10.0f);
  return rd;
}

// Renders every pixel of the view's camera at `spp` with two Tracers and expects the same
// sums, bit for bit; returns the rays each traced and how many distinct red sums there were.
struct TwoImages {
  uint32_t raysA = 0, raysB = 0;
  size_t distinctValues = 0;
};
template <class TracerA, class TracerB>
TwoImages expectSameImage(const SceneView& view, const TracerA& a, const TracerB& b,
                          uint32_t spp) {
  TwoImages out;
  std::vector<int64_t> values;
  for (uint32_t y = 0; y < view.cam().height; ++y)
    for (uint32_t x = 0; x < view.cam().width; ++x) {
      int64_t sa[3] = {0, 0, 0}, sb[3] = {0, 0, 0};
      renderPixel(view, a, x, y, 0, spp, sa, &out.raysA);
      renderPixel(view, b, x, y, 0, spp, sb, &out.raysB);
      for (int c = 0; c < 3; ++c) EXPECT_EQ(sa[c], sb[c]) << "pixel " << x << "," << y;
      values.push_back(sa[0]);
    }
  std::sort(values.begin(), values.end());
  out.distinctValues = size_t(std::unique(values.begin(), values.end()) - values.begin());
  return out;
}

}  // namespace pl::kernel::testing
