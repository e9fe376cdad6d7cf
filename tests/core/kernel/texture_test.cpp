// Tests for core/kernel/texture.h: sRGB decoding, wrap modes, filtering.
#include "core/kernel/texture.h"

#include <gtest/gtest.h>

#include <cmath>

#include "core/kernel/material.h"
#include "core/scene/render_data.h"
#include "core/scene/texture_mips.h"
#include "tests/core/kernel/kernel_test_util.h"

namespace pl::kernel {
namespace {

TEST(TextureTest, SrgbDecodeIsTheExactEotf) {
  EXPECT_EQ(srgbToLinear(0), 0.0f);
  EXPECT_FLOAT_EQ(srgbToLinear(255), 1.0f);
  EXPECT_NEAR(srgbToLinear(10), 10.0f / 255.0f / 12.92f, 1e-7f);  // linear segment
  EXPECT_NEAR(srgbToLinear(128), std::pow((128.0 / 255.0 + 0.055) / 1.055, 2.4), 1e-6);
  for (int i = 1; i < 256; ++i) EXPECT_GT(srgbToLinear(uint8_t(i)), srgbToLinear(uint8_t(i - 1)));
}

// The host's table gives the EOTF's own bits (what a lookup returned before the table), also
// through decodeTexel.
TEST(TextureTest, HostSrgbTableHoldsTheEotfBitForBit) {
  for (int i = 0; i < 256; ++i) {
    const uint8_t v = static_cast<uint8_t>(i);
    EXPECT_EQ(floatBits(decodeSrgb(v)), floatBits(srgbToLinear(v))) << i;
    const Vec4f t = decodeTexel(Rgba8{v, v, v, v}, true);
    EXPECT_EQ(floatBits(t.x), floatBits(srgbToLinear(v))) << i;
    EXPECT_EQ(t.w, v * (1.0f / 255.0f)) << i;
  }
}

TEST(TextureTest, WrapModes) {
  EXPECT_EQ(wrapTexel(-1, 4, kWrapRepeat), 3u);
  EXPECT_EQ(wrapTexel(5, 4, kWrapRepeat), 1u);
  EXPECT_EQ(wrapTexel(-1, 4, kWrapClamp), 0u);
  EXPECT_EQ(wrapTexel(9, 4, kWrapClamp), 3u);
  EXPECT_EQ(wrapTexel(4, 4, kWrapMirror), 3u);
  EXPECT_EQ(wrapTexel(-1, 4, kWrapMirror), 0u);
  EXPECT_EQ(wrapTexel(-2, 4, kWrapMirror), 1u);
  EXPECT_EQ(wrapTexel(9, 4, kWrapMirror), 1u);
}

struct OneRow {
  RenderData rd;
  SceneView view;
};

// A 4 x 1 texture with red = 0, 85, 170, 255 (linear slot values 0, 1/3, 2/3, 1).
void makeRow(RenderData& rd, uint32_t wrap, uint32_t filter) {
  rd.texels = {{0, 0, 0, 255}, {85, 0, 0, 255}, {170, 0, 0, 128}, {255, 0, 0, 0}};
  rd.textures = {{4, 1, 0, wrap, wrap, filter}};
}

TEST(TextureTest, NearestAndBilinear) {
  RenderData rd;
  makeRow(rd, kWrapRepeat, kFilterNearest);
  SceneView v = rd.view();
  EXPECT_FLOAT_EQ(sampleTexture(v, 0, {0.3f, 0.5f}, false).x, 85.0f / 255.0f);
  EXPECT_FLOAT_EQ(sampleTexture(v, 0, {1.3f, 7.5f}, false).x, 85.0f / 255.0f);  // repeat
  EXPECT_FLOAT_EQ(sampleTexture(v, 0, {-0.3f, 0.5f}, false).x, 170.0f / 255.0f);
  EXPECT_FLOAT_EQ(sampleTexture(v, 0, {0.6f, 0.5f}, false).w, 128.0f / 255.0f);  // alpha
  EXPECT_NEAR(sampleTexture(v, 0, {0.3f, 0.5f}, true).x, srgbToLinear(85), 1e-7f);
  rd.textures[0].wrapS = kWrapClamp;
  v = rd.view();
  EXPECT_FLOAT_EQ(sampleTexture(v, 0, {-0.2f, 0.5f}, false).x, 0.0f);
  EXPECT_FLOAT_EQ(sampleTexture(v, 0, {3.0f, 0.5f}, false).x, 1.0f);
  rd.textures[0].wrapS = kWrapMirror;
  v = rd.view();
  EXPECT_FLOAT_EQ(sampleTexture(v, 0, {1.1f, 0.5f}, false).x, 1.0f);  // mirrored texel 3
  // Bilinear: halfway between texel centres 1 and 2; sRGB decodes before filtering.
  rd.textures[0].filter = kFilterLinear;
  rd.textures[0].wrapS = kWrapRepeat;
  v = rd.view();
  EXPECT_NEAR(sampleTexture(v, 0, {0.5f, 0.5f}, false).x, 127.5f / 255.0f, 1e-6f);
  EXPECT_NEAR(sampleTexture(v, 0, {0.5f, 0.5f}, true).x,
              0.5f * (srgbToLinear(85) + srgbToLinear(170)), 1e-6f);
  // Repeat wraps the filter footprint: at u = 0 halfway between texels 3 and 0.
  EXPECT_NEAR(sampleTexture(v, 0, {0.0f, 0.5f}, false).x, 0.5f, 1e-6f);
  // Non-finite and huge coordinates do not crash.
  EXPECT_TRUE(std::isfinite(sampleTexture(v, 0, {NAN, 1e30f}, true).x));
}

// A 16 x 16 texture of random texels with its full chain (every level differs from the
// others at a given uv), as compile() lays it out.
struct RandomMips {
  RenderData rd;
  explicit RandomMips(bool alphaOpaque = true) {
    uint32_t state = 12345;
    auto next = [&] {
      state = state * 1664525u + 1013904223u;
      return static_cast<uint8_t>(state >> 24);
    };
    std::vector<Rgba8> level0;
    for (int i = 0; i < 16 * 16; ++i)
      level0.push_back({next(), next(), next(), alphaOpaque ? uint8_t(255) : next()});
    rd.texels = level0;
    appendMipLevels(level0, 16, 16, false, rd.mipTexels);
    Texture t{16, 16, 0, kWrapRepeat, kWrapRepeat, kFilterLinear};
    t.mipLevels = mipLevelCount(16, 16);  // 5
    rd.textures = {t};
  }
};

// The footprint (lod: log2 of a sample's filter width in UV units) picks the two levels around it:
// level = lod + log2(16) for a 16 x 16 texture; below 0 (magnified) level 0 alone, beyond the
// last level the last alone. Between two levels a lookup takes one of them, the coarser with
// probability f (the fraction of the level), drawn by a hash of its uv: the same uv always takes
// the same one, and over many uvs the shares are the trilinear weights.
TEST(TextureTest, MipLookupsTakeTheTwoLevelsAroundTheFootprintByTheirWeights) {
  RandomMips m;
  const SceneView v = m.rd.view();
  const Texture& t = m.rd.textures[0];
  // Which level a lookup at uv took (-1: neither of l0, l0 + 1).
  auto levelTaken = [&](const SceneView& view, const Texture& tex, Vec2f uv, Vec2f st, float lod,
                        uint32_t l0) {
    const float x = sampleTexture(view, 0, uv, false, lod).x;
    if (x == sampleTextureLevel(view, tex, l0, st, false).x) return int(l0);
    if (x == sampleTextureLevel(view, tex, l0 + 1, st, false).x) return int(l0 + 1);
    return -1;
  };
  const Vec2f uv = {0.37f, 0.61f};
  for (bool srgb : {false, true}) {
    Vec4f level[5];
    for (uint32_t l = 0; l < 5; ++l) level[l] = sampleTextureLevel(v, t, l, uv, srgb);
    for (uint32_t l = 0; l + 1 < 5; ++l) EXPECT_NE(level[l].x, level[l + 1].x) << l;
    auto at = [&](float lvl) { return sampleTexture(v, 0, uv, srgb, lvl - 4.0f); };
    EXPECT_EQ(at(-3.0f).x, level[0].x);
    EXPECT_EQ(sampleTexture(v, 0, uv, srgb).x, level[0].x);  // no footprint
    EXPECT_EQ(at(0.0f).x, level[0].x);
    EXPECT_EQ(at(4.0f).x, level[4].x);
    EXPECT_EQ(at(9.0f).x, level[4].x);
    for (float lvl : {0.25f, 1.5f, 3.75f}) {
      const Vec4f a = at(lvl);
      const uint32_t l0 = uint32_t(lvl);
      EXPECT_TRUE((a.x == level[l0].x && a.w == level[l0].w) ||
                  (a.x == level[l0 + 1].x && a.w == level[l0 + 1].w))
          << lvl;
      EXPECT_EQ(at(lvl).x, a.x);  // the same uv, the same level
    }
  }
  // Over many uvs, each level's share is its weight (4000 lookups: a standard deviation of
  // under 0.008).
  for (float lvl : {0.25f, 1.5f, 3.75f}) {
    const uint32_t l0 = uint32_t(lvl);
    int coarser = 0, lookups = 0;
    for (int i = 0; i < 4000; ++i) {
      const Vec2f p = {0.05f + 0.9f * float(i % 63) / 63.0f, 0.05f + 0.9f * float(i / 63) / 64.0f};
      const int taken = levelTaken(v, t, p, p, lvl - 4.0f, l0);
      ASSERT_NE(taken, -1) << i;
      coarser += taken == int(l0 + 1);
      ++lookups;
    }
    EXPECT_NEAR(double(coarser) / lookups, lvl - float(l0), 0.04) << lvl;
  }
  // The UV transform's scale counts: repeated 4 times, a texture is 2 levels coarser.
  m.rd.textures[0].uv[0] = m.rd.textures[0].uv[4] = 4.0f;
  const SceneView scaled = m.rd.view();
  const Vec2f st = {4.0f * uv.x, 4.0f * uv.y};
  EXPECT_NE(levelTaken(scaled, m.rd.textures[0], uv, st, -4.0f + 0.5f, 2), -1);
  int coarser = 0;
  for (int i = 0; i < 400; ++i) {
    const Vec2f p = {0.1f + 0.002f * float(i), 0.3f};
    const Vec2f q = {4.0f * p.x, 4.0f * p.y};
    const int taken = levelTaken(scaled, m.rd.textures[0], p, q, -4.0f + 0.5f, 2);
    ASSERT_NE(taken, -1) << i;
    coarser += taken == 3;
  }
  EXPECT_GT(coarser, 140);
  EXPECT_LT(coarser, 260);
  // Nearest-filtered textures stay on level 0.
  m.rd.textures[0] = t;
  m.rd.textures[0].filter = kFilterNearest;
  EXPECT_EQ(sampleTexture(m.rd.view(), 0, uv, false, 5.0f).x,
            sampleTexture(m.rd.view(), 0, uv, false).x);
}

// A triangle at z = -10 facing a perspective camera at the origin, its UVs spanning it 1:1.
RenderData footprintScene() {
  RenderData rd;
  rd.positions = {{0, 0, -10}, {2, 0, -10}, {0, 2, -10}};
  rd.uvs = {{0, 0}, {2, 0}, {0, 2}};
  rd.triangles = {{0, 1, 2, 0}};
  Camera cam{};
  cam.type = kCameraPerspective;
  cam.width = cam.height = 100;
  cam.position = {0, 0, 0};
  cam.forward = {0, 0, -1};
  cam.right = {1, 0, 0};
  cam.up = {0, 1, 0};
  cam.tanHalfFovY = 0.5f;
  rd.camera = {cam};
  rd.globals.resize(1);
  return rd;
}

// surfaceAt's footprint: one pixel covers d * 2 tan(fov / 2) / height metres at distance d,
// times the triangle's UV units per metre; one sample filters half of that width
// (kSampleFilterWidth): one level finer.
TEST(TextureTest, SurfaceFootprintFollowsTheCameraDistanceAndTheUvScale) {
  RenderData rd = footprintScene();
  const SurfacePoint s = surfaceAt(rd.view(), 0, 0.25f, 0.25f);
  const float distance = std::sqrt(s.p.x * s.p.x + s.p.y * s.p.y + s.p.z * s.p.z);
  EXPECT_NEAR(pixelFootprint(rd.view().cam(), s.p), distance * 2.0f * 0.5f / 100.0f, 1e-6f);
  EXPECT_NEAR(s.lod, std::log2(distance * 2.0f * 0.5f / 100.0f) - 1.0f, 1e-4f);
  rd.uvs = {{0, 0}, {4, 0}, {0, 4}};  // twice the UV scale: one level coarser
  EXPECT_NEAR(surfaceAt(rd.view(), 0, 0.25f, 0.25f).lod, s.lod + 1.0f, 1e-4f);
  rd.camera[0].type = kCameraOrthographic;  // the pixel pitch, whatever the distance
  rd.camera[0].orthoHalfHeight = 3.0f;
  EXPECT_NEAR(surfaceAt(rd.view(), 0, 0.25f, 0.25f).lod,
              std::log2(2.0f * 3.0f / 100.0f * 2.0f) - 1.0f, 1e-4f);
  rd.uvs.clear();  // no UVs: no footprint (the finest level)
  EXPECT_EQ(surfaceAt(rd.view(), 0, 0.25f, 0.25f).lod, kNoLod);
  rd.camera.clear();  // no camera (a test's bare view): none either
  rd.uvs = {{0, 0}, {2, 0}, {0, 2}};
  EXPECT_EQ(surfaceAt(rd.view(), 0, 0.25f, 0.25f).lod, kNoLod);
}

// The material's colour, factors and emission are looked up at the surface point's footprint
// (the wiring from surfaceAt through material.h and surface.h).
TEST(TextureTest, MaterialsReadTheLevelsOfTheFootprint) {
  RenderData rd = footprintScene();
  RandomMips m;
  rd.texels = m.rd.texels;
  rd.mipTexels = m.rd.mipTexels;
  rd.textures = m.rd.textures;
  Material mat = testing::defaultMaterial();
  mat.baseColorTexture = mat.metallicRoughnessTexture = mat.emissiveTexture = 0;
  mat.metallicFactor = 1.0f;
  mat.emission = {1, 1, 1};
  mat.doubleSided = 1;
  rd.materials = {mat};
  const SceneView v = rd.view();
  SurfacePoint sp = surfaceAt(v, 0, 0.25f, 0.25f);
  sp.lod = -4.0f + 2.5f;  // halfway between levels 2 and 3
  const Vec3f wo = {0, 0, 1};
  const GltfBsdf b = materialBsdf(v, mat, sp, true, sp.ng, wo);
  const Vec4f colour = sampleTexture(v, 0, sp.uv, true, sp.lod);
  const Vec4f fine = sampleTexture(v, 0, sp.uv, true);
  ASSERT_NE(colour.x, fine.x);
  EXPECT_EQ(b.baseColor.x, colour.x);
  EXPECT_EQ(b.baseColor.z, colour.z);
  EXPECT_EQ(b.metallic, clampf(sampleTexture(v, 0, sp.uv, false, sp.lod).z, 0.0f, 1.0f));
  EXPECT_EQ(emittedRadiance(v, mat, sp, wo).y, colour.y);
}

}  // namespace
}  // namespace pl::kernel
