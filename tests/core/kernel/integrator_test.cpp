// Tests for core/kernel/integrator.h on hand-built scenes with known answers: white furnaces,
// a point light and an area light over a diffuse plane, alpha cut-outs, determinism.
#include "core/kernel/integrator.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "tests/core/kernel/kernel_test_util.h"

namespace pl::kernel {
namespace {

using testing::BruteForceTracer;

struct ImageStats {
  double mean;
  uint64_t rays;
};

// Mean radiance (channel `c`) over all pixels, spp samples each, through renderPixel.
ImageStats renderMean(const SceneView& scene, uint32_t spp, int c = 0) {
  BruteForceTracer tracer{&scene};
  const Camera& cam = scene.cam();
  double sum = 0;
  uint32_t rays = 0;
  for (uint32_t y = 0; y < cam.height; ++y)
    for (uint32_t x = 0; x < cam.width; ++x) {
      int64_t sums[3] = {0, 0, 0};
      renderPixel(scene, tracer, x, y, 0, spp, sums, &rays);
      sum += double(sums[c]) * kFixedInvScale;
    }
  return {sum / (double(spp) * cam.width * cam.height), rays};
}

// A sphere that fills the whole 16x16 image, in a constant white environment.
RenderData furnaceScene(const Material& m) {
  RenderData rd = testing::baseRenderData(16, 16, vec3(0.0f, 0.3f, 3.0f), 0.12f);
  rd.materials = {m};
  testing::addSphere(rd, vec3(0.0f), 1.0f, 20, 10, 0);
  rd.globals[0].envScale = vec3(1.0f);
  rd.globals[0].envIntegral = 1.0f;
  return rd;
}

TEST(IntegratorTest, SphereIsOutwardFacingAndFillsTheImage) {
  RenderData rd = furnaceScene(testing::defaultMaterial());
  for (const Triangle& t : rd.triangles) {
    const Vec3f p0 = rd.positions[t.v0], p1 = rd.positions[t.v1], p2 = rd.positions[t.v2];
    ASSERT_GT(dot(cross(p1 - p0, p2 - p0), p0 + p1 + p2), 0.0f);
  }
  const SceneView scene = rd.view();
  BruteForceTracer tracer{&scene};
  for (float y : {0.0f, 16.0f})
    for (float x : {0.0f, 16.0f})
      EXPECT_NE(tracer.intersect(generateCameraRay(scene.cam(), x, y), 0, kInfinity).prim, kNoHit);
}

TEST(IntegratorTest, WhiteLambertianFurnaceIsOne) {
  // ior 1 removes the specular layer (see bsdf.h): an exactly energy-conserving white
  // Lambertian, so every pixel's expected radiance is 1. The sphere is convex, so a path
  // leaves it after one bounce: NEE towards the environment and BSDF sampling share the
  // work through MIS, and a wrong weight or pdf moves the mean away from 1.
  Material m = testing::defaultMaterial();
  m.ior = 1.0f;
  RenderData rd = furnaceScene(m);
  const ImageStats s = renderMean(rd.view(), 64);
  EXPECT_NEAR(s.mean, 1.0, 0.005);
  // Camera ray + escaping bounce ray per sample, and a shadow ray for the environment
  // samples above the surface (about half of them).
  EXPECT_GT(s.rays, 2.4 * 64 * 256);
  EXPECT_LT(s.rays, 2.6 * 64 * 256);
  // Without NEE the BSDF alone must also give 1.
  rd.globals[0].envIntegral = 0.0f;
  EXPECT_NEAR(renderMean(rd.view(), 64).mean, 1.0, 0.005);
}

TEST(IntegratorTest, WhiteMirrorFurnaceIsOne) {
  Material m = testing::defaultMaterial();
  m.metallicFactor = 1.0f;
  m.roughnessFactor = 0.0f;
  RenderData rd = furnaceScene(m);
  EXPECT_NEAR(renderMean(rd.view(), 16).mean, 1.0, 0.005);
}

TEST(IntegratorTest, GltfDielectricFurnaceMatchesBsdfAlbedo) {
  // The glTF dielectric with base colour 1 is not exactly white (fresnel_mix, single-scatter
  // GGX): each pixel's expected value is the directional albedo A(wo) of its facet. The
  // reference averages A over the pixel centres' hit points, estimated from the BSDF alone.
  Material m = testing::defaultMaterial();
  m.roughnessFactor = 0.5f;
  RenderData rd = furnaceScene(m);
  const SceneView scene = rd.view();
  BruteForceTracer tracer{&scene};
  double reference = 0;
  for (uint32_t y = 0; y < 16; ++y)
    for (uint32_t x = 0; x < 16; ++x) {
      const Ray ray = generateCameraRay(scene.cam(), x + 0.5f, y + 0.5f);
      const Hit hit = tracer.intersect(ray, 0.0f, kInfinity);
      const SurfacePoint sp = surfaceAt(scene, hit.prim, hit.u, hit.v);
      const GltfBsdf b = makeGltfBsdf(frameFromNormal(sp.ng), sp.ng, vec3(1.0f), 0.0f, 0.5f, 1.5f);
      double a = 0;
      for (uint32_t i = 0; i < 2048; ++i) {
        BsdfSample bs;
        if (sampleGltfBsdf(b, -ray.direction, sampleDimension(8, x, y, i, 2),
                           {sampleDimension(8, x, y, i, 0), sampleDimension(8, x, y, i, 1)}, &bs))
          a += bs.weight.x;
      }
      reference += a / 2048;
    }
  reference /= 256;
  const double mean = renderMean(scene, 64).mean;
  EXPECT_NEAR(mean, reference, 0.01 * reference);
  EXPECT_GT(mean, 0.9);
}

// A white Lambertian floor (y = 0, 20 x 20) seen from above; the camera looks straight down.
RenderData floorScene() {
  RenderData rd = testing::baseRenderData(9, 9, vec3(0.0f, 4.0f, 0.0f), 0.05f);
  Camera& c = rd.camera[0];
  c.forward = vec3(0.0f, -1.0f, 0.0f);
  c.right = vec3(1.0f, 0.0f, 0.0f);
  c.up = vec3(0.0f, 0.0f, -1.0f);
  Material m = testing::defaultMaterial();
  m.ior = 1.0f;
  rd.materials = {m};
  testing::addTriangle(rd, vec3(-10, 0, -10), vec3(-10, 0, 10), vec3(10, 0, 10), 0);
  testing::addTriangle(rd, vec3(-10, 0, -10), vec3(10, 0, 10), vec3(10, 0, -10), 0);
  rd.globals[0].maxDepth = 1;
  return rd;
}

// Radiance of the centre pixel.
double centrePixel(const SceneView& scene, uint32_t spp) {
  BruteForceTracer tracer{&scene};
  int64_t sums[3] = {0, 0, 0};
  uint32_t rays = 0;
  renderPixel(scene, tracer, 4, 4, 0, spp, sums, &rays);
  return double(sums[0]) * kFixedInvScale / spp;
}

TEST(IntegratorTest, WhiteGlassFurnaceIsOne) {
  // A lossless glass sphere (smooth, white, no absorption) in a white environment: whatever
  // refracts in leaves again, so every pixel is 1: as a volume (refraction, total internal
  // reflection) and as a thin wall.
  for (float thickness : {1.0f, 0.0f}) {
    Material m = testing::defaultMaterial();
    m.roughnessFactor = 0.0f;
    m.transmissionFactor = 1.0f;
    m.thicknessFactor = thickness;
    RenderData rd = furnaceScene(m);
    rd.globals[0].maxDepth = 64;
    EXPECT_NEAR(renderMean(rd.view(), 64).mean, 1.0, 0.01) << "thickness " << thickness;
  }
}

TEST(IntegratorTest, AbsorbingGlassFollowsBeerLambert) {
  // Straight through the middle of a smooth glass ball of radius 1 whose volume keeps 0.5 of
  // the light after a distance of 2 (its diameter): the 4% reflected at the front, plus 0.96
  // in x 0.5 x 0.96 out, plus the first internal reflection (0.96 x 0.5 x 0.04 x 0.5 x 0.96).
  Material m = testing::defaultMaterial();
  m.roughnessFactor = 0.0f;
  m.transmissionFactor = 1.0f;
  m.thicknessFactor = 1.0f;
  m.attenuationColor = vec3(0.5f, 0.5f, 1.0f);
  m.attenuationDistance = 2.0f;
  RenderData rd = testing::baseRenderData(4, 4, vec3(0.0f, 0.0f, 3.0f), 0.01f);
  rd.materials = {m};
  testing::addSphere(rd, vec3(0.0f), 1.0f, 64, 32, 0);
  rd.globals[0].envScale = vec3(1.0f);
  rd.globals[0].envIntegral = 1.0f;
  rd.globals[0].maxDepth = 16;
  const double f = 0.04;
  const double expected = f + (1 - f) * 0.5 * (1 - f) + (1 - f) * 0.5 * f * 0.5 * (1 - f);
  EXPECT_NEAR(renderMean(rd.view(), 32, 0).mean, expected, 0.02);
  EXPECT_NEAR(renderMean(rd.view(), 32, 2).mean, 1.0, 0.01);  // blue is not absorbed
}

TEST(IntegratorTest, PointLightOverDiffuseFloor) {
  RenderData rd = floorScene();
  PunctualLight l{};
  l.type = kLightPoint;
  l.position = vec3(1.0f, 2.0f, 0.0f);
  l.intensity = vec3(10.0f);
  rd.lights = {l};
  // L = (1 / pi) * I cos / d^2 at the origin: cos = 2 / sqrt(5), d^2 = 5.
  const double expected = 10.0 / M_PI * (2.0 / std::sqrt(5.0)) / 5.0;
  EXPECT_NEAR(centrePixel(rd.view(), 16), expected, 0.01 * expected);
}

// Irradiance at the origin (normal +y) from a uniformly emitting polygon (Lambert's formula).
double polygonIrradiance(const Vec3f* v, int n, double le) {
  double sum = 0;
  for (int i = 0; i < n; ++i) {
    const Vec3f a = normalize(v[i]), b = normalize(v[(i + 1) % n]);
    const double theta = std::acos(std::clamp(double(dot(a, b)), -1.0, 1.0));
    sum += theta * normalize(cross(a, b)).y;
  }
  return le * 0.5 * std::fabs(sum);
}

TEST(IntegratorTest, AreaLightOverDiffuseFloorWithMis) {
  RenderData rd = floorScene();
  Material emitter = testing::defaultMaterial();
  emitter.emission = vec3(5.0f);
  emitter.baseColorFactor = {0.0f, 0.0f, 0.0f, 1.0f};
  rd.materials.push_back(emitter);
  // A 1 x 1 square at height 1.5, offset in x, facing down (-y is its front).
  const Vec3f q[4] = {vec3(0.5f, 1.5f, -0.5f), vec3(1.5f, 1.5f, -0.5f), vec3(1.5f, 1.5f, 0.5f),
                      vec3(0.5f, 1.5f, 0.5f)};
  testing::addTriangle(rd, q[0], q[1], q[2], 1);
  testing::addTriangle(rd, q[0], q[2], q[3], 1);
  ASSERT_LT(cross(q[1] - q[0], q[2] - q[0]).y, 0.0f);
  testing::buildEmissiveTable(rd);
  const double expected = polygonIrradiance(q, 4, 5.0) / M_PI;
  EXPECT_NEAR(centrePixel(rd.view(), 1024), expected, 0.01 * expected);
  // The same with BSDF sampling only (no light sampling): MIS weights must then be 1.
  rd.emissiveTriangles.clear();
  rd.emissiveCdf.clear();
  rd.globals[0].emissiveTotalPower = 0.0f;
  EXPECT_NEAR(centrePixel(rd.view(), 4096), expected, 0.03 * expected);
  // Single-sided: flipped, it lights nothing.
  std::swap(rd.triangles[2].v1, rd.triangles[2].v2);
  std::swap(rd.triangles[3].v1, rd.triangles[3].v2);
  testing::buildEmissiveTable(rd);
  EXPECT_EQ(centrePixel(rd.view(), 64), 0.0);
}

TEST(IntegratorTest, EnvironmentMapOverDiffuseFloorWithMis) {
  RenderData rd = floorScene();
  const uint32_t w = 64, h = 32;
  std::vector<Vec3f> texels(size_t(w) * h);
  for (uint32_t y = 0; y < h; ++y)
    for (uint32_t x = 0; x < w; ++x)
      texels[y * w + x] = vec3(0.1f + 0.05f * float(x % 7) + (x == 10 && y == 8 ? 400.0f : 0.0f));
  testing::setEnvMap(rd, w, h, texels);
  rd.globals[0].envScale = vec3(1.0f);
  const SceneView scene = rd.view();
  // Reference: E = integral over the upper hemisphere of L cos, on a fine grid; L_o = E / pi.
  double e = 0;
  const int n = 1024;
  for (int i = 0; i < n / 2; ++i)
    for (int j = 0; j < 2 * n; ++j) {
      const float t = (i + 0.5f) / n, s = (j + 0.5f) / (2 * n);
      const Vec3f d = envSTToDirection(s, t);
      const double dOmega = (M_PI / n) * (2.0 * M_PI / (2 * n)) * std::sin(M_PI * t);
      e += envRadiance(scene, d, false).x * d.y * dOmega;
    }
  const double expected = e / M_PI;
  EXPECT_NEAR(centrePixel(scene, 1024), expected, 0.02 * expected);
  rd.globals[0].envIntegral = 0.0f;
  EXPECT_NEAR(centrePixel(rd.view(), 1 << 14), expected, 0.02 * expected) << "BSDF only";
}

TEST(IntegratorTest, AlphaCutoutsAreInvisibleToCameraAndShadowRays) {
  RenderData rd = floorScene();
  PunctualLight l{};
  l.type = kLightPoint;
  l.position = vec3(0.0f, 2.0f, 0.0f);
  l.intensity = vec3(10.0f);
  rd.lights = {l};
  const double lit = centrePixel(rd.view(), 4);
  // A black occluder between the floor and both the light and the camera.
  Material cut = testing::defaultMaterial();
  cut.baseColorFactor = {0.0f, 0.0f, 0.0f, 0.2f};
  cut.alphaMode = kAlphaMask;
  cut.alphaCutoff = 0.5f;
  cut.ior = 1.0f;  // no specular layer: truly black
  rd.materials.push_back(cut);
  testing::addTriangle(rd, vec3(-3, 1, -3), vec3(-3, 1, 3), vec3(3, 1, 3), 1);
  testing::addTriangle(rd, vec3(-3, 1, -3), vec3(3, 1, 3), vec3(3, 1, -3), 1);
  rd.globals[0].hasAlpha = 1;
  EXPECT_NEAR(centrePixel(rd.view(), 4), lit, 1e-6 * lit);
  // Above the cutoff it is an opaque black sheet.
  rd.materials[1].baseColorFactor.w = 0.8f;
  EXPECT_EQ(centrePixel(rd.view(), 4), 0.0);
  // BLEND with alpha 0.25: the camera sees the floor 75% of the time, and the floor receives
  // 75% of the light: 0.5625 of the unoccluded value on average.
  rd.materials[1].alphaMode = kAlphaBlend;
  rd.materials[1].baseColorFactor.w = 0.25f;
  EXPECT_NEAR(centrePixel(rd.view(), 4096), 0.5625 * lit, 0.03 * lit);
}

// A Tracer whose occluded() sees alpha masks answers a shadow ray through cut-outs with one
// query: the same image as the integrator's walk from hit to hit, with fewer rays.
TEST(IntegratorTest, ShadowRaysThroughMasksInOneQueryGiveTheWalksImage) {
  const RenderData rd = testing::maskedSheetScene();
  const SceneView view = rd.view();
  const BruteForceTracer oneQuery{&view, true}, walk{&view, false};
  const testing::TwoImages images = testing::expectSameImage(view, oneQuery, walk, 4);
  EXPECT_LT(images.raysA, images.raysB);
  EXPECT_GT(images.distinctValues, 100u);  // light, shadows and holes: not a flat image
}

TEST(IntegratorTest, NormalMapFollowsTheTangentFrame) {
  // A flat triangle in z = 0 with tangent +x; texels encode tangent-space normals.
  RenderData rd;
  rd.positions = {vec3(0, 0, 0), vec3(1, 0, 0), vec3(0, 1, 0)};
  rd.normals = {vec3(0, 0, 1), vec3(0, 0, 1), vec3(0, 0, 1)};
  rd.uvs = {vec2(0, 0), vec2(1, 0), vec2(0, 1)};
  rd.tangents = {{1, 0, 0, 1}, {1, 0, 0, 1}, {1, 0, 0, 1}};
  rd.triangles = {{0, 1, 2, 0}};
  Material m = testing::defaultMaterial();
  m.normalTexture = 0;
  rd.materials = {m};
  rd.textures = {{1, 1, 0, kWrapRepeat, kWrapRepeat, kFilterNearest}};
  const Vec3f wo = vec3(0.0f, 0.0f, 1.0f), ng = vec3(0.0f, 0.0f, 1.0f);
  auto normalFor = [&](Rgba8 texel, float handedness, float scale) {
    rd.texels = {texel};
    for (Vec4f& t : rd.tangents) t.w = handedness;
    rd.materials[0].normalScale = scale;
    const SceneView scene = rd.view();
    const SurfacePoint sp = surfaceAt(scene, 0, 0.25f, 0.25f);
    return shadingNormal(scene, scene.materials[0], sp, true, ng, wo);
  };
  const Vec3f flat = normalFor({128, 128, 255, 255}, 1.0f, 1.0f);
  EXPECT_GT(flat.z, 0.9999f);
  const Vec3f towardT = normalFor({218, 128, 218, 255}, 1.0f, 1.0f);
  EXPECT_NEAR(towardT.x, std::sqrt(0.5f), 0.01f);
  EXPECT_NEAR(towardT.z, std::sqrt(0.5f), 0.01f);
  // Green follows the bitangent cross(N, T) * w: +y for w = 1, -y for w = -1.
  EXPECT_NEAR(normalFor({128, 218, 218, 255}, 1.0f, 1.0f).y, std::sqrt(0.5f), 0.01f);
  EXPECT_NEAR(normalFor({128, 218, 218, 255}, -1.0f, 1.0f).y, -std::sqrt(0.5f), 0.01f);
  // normalScale 0 flattens the map.
  EXPECT_GT(normalFor({218, 128, 218, 255}, 1.0f, 0.0f).z, 0.9999f);
}

// Seen at a grazing angle, a tilted shading normal can reflect wo into the surface. It is bent
// just enough that the reflection clears the surface by the margin, keeping its tilt; a valid
// normal is kept as it is.
TEST(IntegratorTest, ShadingNormalsAreBentToReflectAboveTheSurface) {
  const Vec3f ng = vec3(0.0f, 0.0f, 1.0f);
  const Vec3f tilted = normalize(vec3(0.3f, 0.0f, 1.0f));
  const Vec3f head = validShadingNormal(tilted, ng, ng);
  EXPECT_EQ(head.x, tilted.x);
  EXPECT_EQ(head.z, tilted.z);
  for (const Vec3f n : {normalize(vec3(-0.5f, 0.0f, 1.0f)), normalize(vec3(-0.5f, 0.3f, 1.0f)),
                        normalize(vec3(-3.0f, 0.0f, 1.0f)), normalize(vec3(-1.0f, 0.0f, -0.1f))}) {
    for (const float z : {0.3f, 0.05f, 0.005f}) {
      const Vec3f wo = normalize(vec3(1.0f, 0.0f, z));
      SCOPED_TRACE(::testing::Message() << "n (" << n.x << ", " << n.y << ", " << n.z
                                        << "), wo.z " << wo.z);
      const Vec3f bent = validShadingNormal(n, ng, wo);
      const float margin = std::min(0.01f, 0.9f * wo.z);
      EXPECT_NEAR(length(bent), 1.0f, 1e-5f);
      EXPECT_GT(dot(bent, wo), 0.0f);
      EXPECT_GE(dot(reflect(wo, bent), ng), margin - 1e-4f);
      // Still tilted away from wo, as n is (the geometric normal would not be), within the
      // plane of n and the geometric normal, and just enough: the reflection at the margin.
      EXPECT_LT(bent.x, 0.0f);
      EXPECT_NEAR(bent.y * n.x, bent.x * n.y, 1e-5f);
      EXPECT_NEAR(dot(reflect(wo, bent), ng), margin, 1e-3f);
    }
  }
  // Edge cases: into the surface, in its plane, nearly into it, views at 1e-6 of the surface.
  const Vec3f cases[] = {vec3(0.0f, 0.0f, -1.0f), vec3(1.0f, 0.0f, 0.0f),
                         vec3(-1.0f, 0.0f, 0.0f), normalize(vec3(1e-3f, 0.0f, -1.0f)),
                         normalize(vec3(0.0f, 1e-5f, -1.0f)), normalize(vec3(-1.0f, 0.0f, -0.5f))};
  for (const Vec3f n : cases) {
    for (const float z : {1.0f, 0.3f, 1e-3f, 1e-6f}) {
      const Vec3f wo = normalize(vec3(1.0f, 0.0f, z));
      SCOPED_TRACE(::testing::Message() << "n (" << n.x << ", " << n.y << ", " << n.z
                                        << "), wo.z " << wo.z);
      const Vec3f bent = validShadingNormal(n, ng, wo);
      EXPECT_NEAR(length(bent), 1.0f, 1e-5f);
      EXPECT_GT(dot(bent, wo), 0.0f);
      EXPECT_GE(dot(reflect(wo, bent), ng), 0.0f);
      if (n.z < -0.7f) {
        EXPECT_EQ(bent.z, 1.0f);  // into the surface: the geometric normal
      }
    }
  }
}

// Without tangents in the data, the kernel derives one per triangle from its UVs, with green
// towards the image's top (decreasing v), as generated tangents do.
TEST(IntegratorTest, DerivedTangentsPutGreenTowardsTheImagesTop) {
  RenderData rd;
  rd.positions = {vec3(0, 0, 0), vec3(1, 0, 0), vec3(0, 1, 0)};
  rd.normals = {vec3(0, 0, 1), vec3(0, 0, 1), vec3(0, 0, 1)};
  rd.uvs = {vec2(0, 1), vec2(1, 1), vec2(0, 0)};  // the image upright: its top row at y = 1
  rd.triangles = {{0, 1, 2, 0}};
  Material m = testing::defaultMaterial();
  m.normalTexture = 0;
  rd.materials = {m};
  rd.textures = {{1, 1, 0, kWrapRepeat, kWrapRepeat, kFilterNearest}};
  rd.texels = {{128, 218, 218, 255}};  // tilted towards +Y of the map
  const SceneView scene = rd.view();
  const SurfacePoint sp = surfaceAt(scene, 0, 0.25f, 0.25f);
  const Vec3f n = shadingNormal(scene, scene.materials[0], sp, true, vec3(0.0f, 0.0f, 1.0f),
                                vec3(0.0f, 0.0f, 1.0f));
  EXPECT_NEAR(n.y, std::sqrt(0.5f), 0.01f);
}

TEST(IntegratorTest, SampleRangesSplitExactly) {
  Material m = testing::defaultMaterial();
  m.roughnessFactor = 0.4f;
  m.baseColorFactor = {0.8f, 0.5f, 0.3f, 1.0f};
  RenderData rd = furnaceScene(m);
  const SceneView scene = rd.view();
  BruteForceTracer tracer{&scene};
  int64_t whole[3] = {0, 0, 0}, split[3] = {0, 0, 0};
  uint32_t rays = 0;
  renderPixel(scene, tracer, 5, 7, 0, 32, whole, &rays);
  renderPixel(scene, tracer, 5, 7, 20, 32, split, &rays);
  renderPixel(scene, tracer, 5, 7, 0, 20, split, &rays);
  for (int c = 0; c < 3; ++c) EXPECT_EQ(whole[c], split[c]);
  EXPECT_GT(whole[0], whole[2]);  // it is coloured
}

TEST(IntegratorTest, CameraConventions) {
  RenderData rd = testing::baseRenderData(200, 100, vec3(0.0f, 0.0f, 5.0f), 0.5f);
  const Camera& cam = rd.camera[0];
  // The image centre looks forward; raster y grows downwards; the horizontal extent follows
  // the aspect ratio.
  EXPECT_NEAR(dot(generateCameraRay(cam, 100.0f, 50.0f).direction, cam.forward), 1.0f, 1e-6f);
  EXPECT_GT(dot(generateCameraRay(cam, 100.0f, 0.0f).direction, cam.up), 0.0f);
  const Vec3f corner = generateCameraRay(cam, 200.0f, 0.0f).direction;
  EXPECT_NEAR(dot(corner, cam.right) / dot(corner, cam.forward), 1.0f, 1e-5f);
  EXPECT_NEAR(dot(corner, cam.up) / dot(corner, cam.forward), 0.5f, 1e-5f);
  Camera ortho = cam;
  ortho.type = kCameraOrthographic;
  ortho.orthoHalfHeight = 2.0f;
  const Ray r = generateCameraRay(ortho, 0.0f, 100.0f);
  EXPECT_NEAR(dot(r.origin - ortho.position, ortho.right), -4.0f, 1e-5f);
  EXPECT_NEAR(dot(r.origin - ortho.position, ortho.up), -2.0f, 1e-5f);
  EXPECT_NEAR(dot(r.direction, ortho.forward), 1.0f, 1e-6f);
}

}  // namespace
}  // namespace pl::kernel
