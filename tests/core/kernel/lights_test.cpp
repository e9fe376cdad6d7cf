// Tests for core/kernel/lights.h: environment mapping and importance sampling, emissive
// triangle sampling, punctual lights.
#include "core/kernel/lights.h"

#include <gtest/gtest.h>

#include <cmath>

#include "core/kernel/sampler.h"
#include "tests/core/kernel/kernel_test_util.h"

namespace pl::kernel {
namespace {

using testing::baseRenderData;

TEST(LightsTest, EnvMappingIsBlenderCompatible) {
  // glTF +Y is the top row; glTF -X (Blender -X) is the image centre, u = 0.5; glTF -Z
  // (Blender +Y) is u = 0.75; glTF +Z (Blender -Y) is u = 0.25.
  EXPECT_NEAR(envDirectionToST(vec3(0.0f, 1.0f, 0.0f)).y, 0.0f, 1e-6f);
  EXPECT_NEAR(envDirectionToST(vec3(0.0f, -1.0f, 0.0f)).y, 1.0f, 1e-6f);
  EXPECT_NEAR(envDirectionToST(vec3(-1.0f, 0.0f, 0.0f)).x, 0.5f, 1e-6f);
  EXPECT_NEAR(envDirectionToST(vec3(0.0f, 0.0f, -1.0f)).x, 0.75f, 1e-6f);
  EXPECT_NEAR(envDirectionToST(vec3(0.0f, 0.0f, 1.0f)).x, 0.25f, 1e-6f);
  EXPECT_NEAR(envDirectionToST(vec3(-1.0f, 0.0f, 0.0f)).y, 0.5f, 1e-6f);
  // Round trip.
  for (float s : {0.1f, 0.3f, 0.55f, 0.9f})
    for (float t : {0.05f, 0.4f, 0.8f}) {
      const Vec3f d = envSTToDirection(s, t);
      EXPECT_NEAR(length(d), 1.0f, 1e-5f);
      const Vec2f st = envDirectionToST(d);
      EXPECT_NEAR(st.x, s, 1e-5f);
      EXPECT_NEAR(st.y, t, 1e-5f);
    }
}

RenderData envScene(uint32_t w, uint32_t h) {
  RenderData rd = baseRenderData(4, 4, vec3(0.0f, 0.0f, 3.0f), 0.5f);
  std::vector<Vec3f> texels(size_t(w) * h);
  for (uint32_t y = 0; y < h; ++y)
    for (uint32_t x = 0; x < w; ++x) {
      float v = 0.2f + 0.5f * std::sin(0.7f * x) * std::sin(0.7f * x) + 0.1f * y;
      if (x == 5 && y == 4) v = 200.0f;  // a sun
      if (y == 9) v = 0.0f;              // a black row
      texels[y * w + x] = vec3(v, 0.5f * v, 0.25f * v);
    }
  testing::setEnvMap(rd, w, h, texels);
  rd.globals[0].envScale = vec3(1.0f);
  return rd;
}

TEST(LightsTest, EnvSamplingPdfMatchesLookup) {
  RenderData rd = envScene(32, 16);
  const SceneView scene = rd.view();
  int mismatches = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    Vec3f dir;
    float pdf;
    const Vec2f u = {sampleDimension(3, 0, 0, i, 0), sampleDimension(3, 0, 0, i, 1)};
    ASSERT_TRUE(sampleEnvDirection(scene, u, &dir, &pdf));
    ASSERT_NEAR(length(dir), 1.0f, 1e-5f);
    const float lookup = envDirectionPdf(scene, dir);
    // Directions on a texel border may round into the neighbour.
    if (std::fabs(lookup - pdf) > 1e-3f * pdf) ++mismatches;
    // Never samples the black row.
    ASSERT_NE(uint32_t(envDirectionToST(dir).y * 16), 9u);
  }
  EXPECT_LT(mismatches, n / 200);
}

TEST(LightsTest, EnvImportanceSamplingEstimatesTheIntegral) {
  const uint32_t w = 32, h = 16;
  RenderData rd = envScene(w, h);
  const SceneView scene = rd.view();
  // f = luminance of the nearest texel (piecewise constant): its integral over the sphere is
  // sum lum(texel) * solid angle(texel), solid angle = 2pi/W * (cos theta0 - cos theta1).
  double analytic = 0;
  for (uint32_t y = 0; y < h; ++y) {
    const double dOmega =
        2.0 * M_PI / w * (std::cos(M_PI * y / h) - std::cos(M_PI * (y + 1) / h));
    for (uint32_t x = 0; x < w; ++x) analytic += luminance(rd.envTexels[y * w + x]) * dOmega;
  }
  auto f = [&](Vec3f d) {
    const Vec2f st = envDirectionToST(d);
    const uint32_t x = std::min(w - 1, uint32_t(st.x * w)), y = std::min(h - 1, uint32_t(st.y * h));
    return double(luminance(rd.envTexels[y * w + x]));
  };
  double sum = 0;
  const int n = 1 << 16;
  for (int i = 0; i < n; ++i) {
    Vec3f dir;
    float pdf;
    const Vec2f u = {sampleDimension(4, 0, 0, i, 0), sampleDimension(4, 0, 0, i, 1)};
    if (sampleEnvDirection(scene, u, &dir, &pdf)) sum += f(dir) / pdf;
  }
  EXPECT_NEAR(sum / n, analytic, 0.01 * analytic);
  // The importance-sampled pdf integrates to 1 over the sphere.
  double pdfIntegral = 0;
  const int g = 400;
  for (int i = 0; i < g; ++i)
    for (int j = 0; j < 2 * g; ++j) {
      const float s = (j + 0.5f) / (2 * g), t = (i + 0.5f) / g;
      const double dOmega = (M_PI / g) * (2.0 * M_PI / (2 * g)) * std::sin(M_PI * t);
      pdfIntegral += envDirectionPdf(scene, envSTToDirection(s, t)) * dOmega;
    }
  EXPECT_NEAR(pdfIntegral, 1.0, 0.01);
}

TEST(LightsTest, ConstantEnvironmentIsUniform) {
  RenderData rd = baseRenderData(4, 4, vec3(0.0f, 0.0f, 3.0f), 0.5f);
  rd.globals[0].envScale = vec3(2.0f, 1.0f, 0.5f);
  rd.globals[0].envIntegral = 1.0f;
  const SceneView scene = rd.view();
  Vec3f mean = vec3(0.0f);
  for (int i = 0; i < 4096; ++i) {
    Vec3f dir;
    float pdf;
    ASSERT_TRUE(sampleEnvDirection(scene, {sampleDimension(5, 0, 0, i, 0),
                                           sampleDimension(5, 0, 0, i, 1)}, &dir, &pdf));
    EXPECT_FLOAT_EQ(pdf, 0.25f * kInvPi);
    EXPECT_FLOAT_EQ(envDirectionPdf(scene, dir), 0.25f * kInvPi);
    mean += dir;
  }
  EXPECT_LT(length(mean / 4096.0f), 0.01f);
  EXPECT_FLOAT_EQ(envRadiance(scene, vec3(0.0f, 1.0f, 0.0f), true).x, 2.0f);
}

// Solid angle of triangle (a, b, c) seen from the origin (Van Oosterom & Strackee 1983).
double triangleSolidAngle(Vec3f a, Vec3f b, Vec3f c) {
  const double la = length(a), lb = length(b), lc = length(c);
  const double num = std::fabs(dot(a, cross(b, c)));
  const double den = la * lb * lc + dot(a, b) * lc + dot(a, c) * lb + dot(b, c) * la;
  double omega = 2.0 * std::atan2(num, den);
  return omega < 0 ? omega + 2.0 * M_PI : omega;
}

TEST(LightsTest, EmissiveTriangleSampling) {
  RenderData rd = baseRenderData(4, 4, vec3(0.0f, 0.0f, 3.0f), 0.5f);
  Material dim = testing::defaultMaterial(), bright = testing::defaultMaterial();
  dim.emission = vec3(1.0f, 1.0f, 1.0f);
  bright.emission = vec3(4.0f, 2.0f, 1.0f);
  Material twoSided = bright;
  twoSided.doubleSided = 1;
  rd.materials = {testing::defaultMaterial(), dim, bright, twoSided};
  testing::addTriangle(rd, vec3(0, 0, 0), vec3(1, 0, 0), vec3(0, 1, 0), 0);  // not emissive
  // Facing the origin (front = cross(p1 - p0, p2 - p0) points to -z, towards the origin).
  testing::addTriangle(rd, vec3(-1, -1, 2), vec3(-1, 1, 2), vec3(1, -1, 2), 1);
  testing::addTriangle(rd, vec3(2, 0, -1), vec3(2, 1, -1), vec3(2, 0, 1), 2);  // front +x: away
  testing::addTriangle(rd, vec3(0, -2, 0), vec3(0.5f, -2, 0), vec3(0, -2, 0.5f), 3);
  testing::buildEmissiveTable(rd);
  const SceneView scene = rd.view();
  ASSERT_EQ(scene.emissiveTrianglesCount, 3u);
  const LightSelection sel = lightSelection(scene);
  EXPECT_FLOAT_EQ(sel.pEmissive, 1.0f);
  const Vec3f x = vec3(0.0f, 0.0f, 0.0f);
  testing::BruteForceTracer tracer{&scene};

  // Estimate the solid angle of the emitting faces visible from x: E[1 / pdf] over samples
  // with non-zero radiance; triangle 2 faces away and is single-sided, so it gives nothing.
  double sum = 0;
  const int n = 1 << 15;
  for (int i = 0; i < n; ++i) {
    LightSample ls;
    const float uSel = sampleDimension(6, 0, 0, i, 2);
    const Vec2f u = {sampleDimension(6, 0, 0, i, 0), sampleDimension(6, 0, 0, i, 1)};
    if (!sampleLight(scene, sel, x, uSel, u, &ls)) continue;
    ASSERT_FALSE(ls.delta);
    // The pdf equals the one computed independently from the triangle the ray hits.
    const Hit hit = tracer.intersect({x, ls.wi}, 0.0f, kInfinity);
    ASSERT_NE(hit.prim, kNoHit);
    const SurfacePoint sp = surfaceAt(scene, hit.prim, hit.u, hit.v);
    const float pTri = emissiveTriangleProbability(scene, hit.prim);
    const float pdf = emissiveSolidAnglePdf(pTri, sp.area, x, sp.p, sp.ng);
    ASSERT_NEAR(ls.pdf, pdf, 2e-3f * pdf);
    ASSERT_NE(hit.prim, 2u);
    EXPECT_EQ(ls.radiance.x, scene.materials[scene.triangles[hit.prim].material].emission.x);
    sum += 1.0 / ls.pdf;
  }
  const Vec3f* p = rd.positions.data();
  const double expected =
      triangleSolidAngle(p[3], p[4], p[5]) + triangleSolidAngle(p[9], p[10], p[11]);
  EXPECT_NEAR(sum / n, expected, 0.01 * expected);
  EXPECT_EQ(emissiveTriangleProbability(scene, 0), 0.0f);
}

TEST(LightsTest, PunctualLights) {
  RenderData rd = baseRenderData(4, 4, vec3(0.0f, 0.0f, 3.0f), 0.5f);
  PunctualLight point{};
  point.type = kLightPoint;
  point.position = vec3(0.0f, 2.0f, 0.0f);
  point.intensity = vec3(8.0f);
  PunctualLight spot = point;
  spot.type = kLightSpot;
  spot.direction = vec3(0.0f, -1.0f, 0.0f);
  spot.cosInnerCone = std::cos(0.2f);
  spot.cosOuterCone = std::cos(0.4f);
  PunctualLight sun{};
  sun.type = kLightDirectional;
  sun.direction = vec3(0.0f, -1.0f, 0.0f);
  sun.intensity = vec3(3.0f);
  rd.lights = {point, spot, sun};
  const SceneView scene = rd.view();
  const LightSelection sel = lightSelection(scene);
  LightSample ls;
  // uSelect in [0, 1/3): the point light; radiance I / d^2.
  ASSERT_TRUE(sampleLight(scene, sel, vec3(0.0f), 0.1f, {0.5f, 0.5f}, &ls));
  EXPECT_TRUE(ls.delta);
  EXPECT_NEAR(ls.radiance.x, 2.0f, 1e-6f);
  EXPECT_NEAR(ls.pdf, 1.0f / 3.0f, 1e-6f);
  EXPECT_NEAR(ls.wi.y, 1.0f, 1e-6f);
  // The spot: full inside the inner cone, smooth falloff, nothing outside the outer cone.
  ASSERT_TRUE(sampleLight(scene, sel, vec3(0.0f), 0.4f, {0.5f, 0.5f}, &ls));
  EXPECT_NEAR(ls.radiance.x, 2.0f, 1e-6f);
  const float r = 2.0f * std::tan(0.3f);  // halfway in angle
  ASSERT_TRUE(sampleLight(scene, sel, vec3(r, 0.0f, 0.0f), 0.4f, {0.5f, 0.5f}, &ls));
  const float cd = std::cos(0.3f);
  const float t = (cd - spot.cosOuterCone) / (spot.cosInnerCone - spot.cosOuterCone);
  EXPECT_NEAR(ls.radiance.x, 8.0f / (4.0f + r * r) * t * t, 1e-4f);
  EXPECT_FALSE(sampleLight(scene, sel, vec3(3.0f, 0.0f, 0.0f), 0.4f, {0.5f, 0.5f}, &ls));
  // Directional: radiance = irradiance, towards -direction, distant.
  ASSERT_TRUE(sampleLight(scene, sel, vec3(0.0f), 0.9f, {0.5f, 0.5f}, &ls));
  EXPECT_TRUE(ls.distant);
  EXPECT_NEAR(ls.wi.y, 1.0f, 1e-6f);
  EXPECT_FLOAT_EQ(ls.radiance.x, 3.0f);
}

}  // namespace
}  // namespace pl::kernel
