// Tests for core/scene/texture_mips.h and the kernel's mip-mapped lookups (core/kernel/texture.h,
// the footprint in core/kernel/surface.h).
#include "core/scene/texture_mips.h"

#include <gtest/gtest.h>

#include <cmath>

#include "core/kernel/surface.h"
#include "core/kernel/texture.h"
#include "core/scene/compile.h"
#include "core/scene/render_data.h"

namespace pl {
namespace {

using kernel::Rgba8;

TEST(TextureMipsTest, LinearToSrgb8InvertsTheDecodingAndRoundsToTheNearest) {
  for (int i = 0; i < 256; ++i)
    EXPECT_EQ(linearToSrgb8(kernel::srgbToLinear(uint8_t(i))), i) << i;
  for (int i = 1; i < 256; ++i) {
    const float lo = kernel::srgbToLinear(uint8_t(i - 1)), hi = kernel::srgbToLinear(uint8_t(i));
    EXPECT_EQ(linearToSrgb8(lo + 0.4f * (hi - lo)), i - 1) << i;
    EXPECT_EQ(linearToSrgb8(lo + 0.6f * (hi - lo)), i) << i;
  }
  EXPECT_EQ(linearToSrgb8(-1.0f), 0);
  EXPECT_EQ(linearToSrgb8(2.0f), 255);
  EXPECT_EQ(linearToSrgb8(std::nanf("")), 0);
}

TEST(TextureMipsTest, LevelCountsAndSizes) {
  EXPECT_EQ(kernel::mipLevelCount(1, 1), 1u);
  EXPECT_EQ(kernel::mipLevelCount(4, 2), 3u);   // 4x2, 2x1, 1x1
  EXPECT_EQ(kernel::mipLevelCount(5, 3), 3u);   // 5x3, 2x1, 1x1
  EXPECT_EQ(kernel::mipLevelCount(1, 8), 4u);   // 1x8, 1x4, 1x2, 1x1
  EXPECT_EQ(kernel::mipLevelCount(1024, 1024), 11u);
  EXPECT_EQ(kernel::mipChainTexels(4, 2, 3), 8u + 2u + 1u);
  EXPECT_EQ(kernel::mipChainTexels(1024, 1024, 11), (4u * 1024 * 1024 - 1) / 3);
  EXPECT_EQ(kernel::mipSize(5, 1), 2u);
  EXPECT_EQ(kernel::mipSize(5, 7), 1u);
}

// Linear textures average the 8-bit values (rounded half up); sRGB colour is averaged in
// linear light; alpha is always linear; an odd last column is left out.
TEST(TextureMipsTest, BoxFilterPerChannel) {
  // 5 x 2: the level below is 2 x 1, then 1 x 1.
  const std::vector<Rgba8> level0 = {
      {0, 10, 0, 0},     {255, 11, 255, 255}, {0, 0, 0, 0}, {0, 0, 0, 0}, {99, 99, 99, 99},
      {0, 10, 0, 0},     {255, 12, 255, 255}, {0, 0, 0, 0}, {0, 0, 0, 0}, {99, 99, 99, 99}};
  std::vector<Rgba8> linear, srgb;
  appendMipLevels(level0, 5, 2, false, linear);
  appendMipLevels(level0, 5, 2, true, srgb);
  ASSERT_EQ(linear.size(), 3u);
  ASSERT_EQ(srgb.size(), 3u);
  EXPECT_EQ(linear[0].r, 128);  // (0 + 255 + 0 + 255 + 2) / 4 = 128
  EXPECT_EQ(linear[0].g, 11);   // (10 + 11 + 10 + 12 + 2) / 4 = 11
  EXPECT_EQ(linear[0].a, 128);
  EXPECT_EQ(linear[1].r, 0);    // texels 2, 3 (column 4 is left out)
  EXPECT_EQ(linear[2].r, 64);   // (128 + 0 + 128 + 0 + 2) / 4 (the 1-row level is repeated)
  // Half black, half white in linear light is 0.5, which sRGB encodes as 188.
  EXPECT_EQ(srgb[0].r, linearToSrgb8(0.5f));
  EXPECT_EQ(srgb[0].r, 188);
  EXPECT_EQ(srgb[0].a, 128);  // alpha stays linear
  EXPECT_EQ(srgb[2].r, linearToSrgb8(0.5f * kernel::srgbToLinear(188)));
}

// Compiled textures carry their full chain; the kernel reads level 0 where a texel covers more
// than a pixel and the 1 x 1 level (the texture's mean) where the whole texture is within one.
struct Checker {
  RenderData rd;
  Checker() {
    // 64 x 64 black-and-white checkerboard of 1-texel squares, linear.
    const uint32_t n = 64;
    std::vector<Rgba8> level0;
    for (uint32_t y = 0; y < n; ++y)
      for (uint32_t x = 0; x < n; ++x) {
        const uint8_t v = ((x + y) & 1) ? 255 : 0;
        level0.push_back({v, v, v, 255});
      }
    rd.texels = level0;
    appendMipLevels(level0, n, n, false, rd.texels);
    kernel::Texture t{n, n, 0, kernel::kWrapRepeat, kernel::kWrapRepeat, kernel::kFilterLinear};
    t.mipLevels = kernel::mipLevelCount(n, n);
    rd.textures = {t};
  }
};

TEST(TextureMipsTest, LookupsBlendTheLevelsAroundTheFootprint) {
  Checker c;
  const kernel::SceneView v = c.rd.view();
  const kernel::Vec2f uv = {19.5f / 64.0f, 44.5f / 64.0f};  // a texel centre
  const float fine = kernel::sampleTexture(v, 0, uv, false).x;
  EXPECT_TRUE(fine == 0.0f || fine == 1.0f) << fine;
  // Magnified (a pixel covers a quarter of a texel) and without a footprint: level 0, the same.
  EXPECT_EQ(kernel::sampleTexture(v, 0, uv, false, std::log2(0.25f / 64.0f)).x, fine);
  EXPECT_EQ(kernel::sampleTexture(v, 0, uv, false, kernel::kNoLod).x, fine);
  EXPECT_EQ(kernel::sampleTexture(v, 0, uv, false, std::nanf("")).x, fine);
  // A pixel covers the whole texture (or more): the last level, the mean (128 / 255).
  EXPECT_NEAR(kernel::sampleTexture(v, 0, uv, false, 0.0f).x, 128.0f / 255.0f, 1e-6f);
  EXPECT_NEAR(kernel::sampleTexture(v, 0, uv, false, 5.0f).x, 128.0f / 255.0f, 1e-6f);
  // Two texels a pixel: level 1, where every texel is the mean of a 2x2 checker (128).
  EXPECT_NEAR(kernel::sampleTexture(v, 0, uv, false, std::log2(2.0f / 64.0f)).x,
              128.0f / 255.0f, 1e-6f);
  // Halfway between level 0 and 1: the blend.
  EXPECT_NEAR(kernel::sampleTexture(v, 0, uv, false, std::log2(std::sqrt(2.0f) / 64.0f)).x,
              0.5f * (fine + 128.0f / 255.0f), 1e-5f);
  // The UV transform's scale counts: a texture repeated 4 times is minified 4 times as much.
  c.rd.textures[0].uv[0] = 4.0f;
  c.rd.textures[0].uv[4] = 4.0f;
  const kernel::SceneView scaled = c.rd.view();
  EXPECT_NEAR(kernel::sampleTexture(scaled, 0, uv, false, std::log2(0.5f / 64.0f)).x,
              128.0f / 255.0f, 1e-6f);
  // Nearest-filtered textures stay on level 0.
  c.rd.textures[0].filter = kernel::kFilterNearest;
  EXPECT_EQ(kernel::sampleTexture(c.rd.view(), 0, uv, false, 5.0f).x,
            kernel::sampleTexture(c.rd.view(), 0, uv, false).x);
}

// surfaceAt's footprint: a triangle whose UVs span its world size (1 UV unit a metre) seen by
// a perspective camera at distance d: one pixel covers d * 2 tan(fov / 2) / height metres.
TEST(TextureMipsTest, SurfaceFootprintFollowsTheCameraDistance) {
  RenderData rd;
  rd.positions = {{0, 0, -10}, {2, 0, -10}, {0, 2, -10}};
  rd.uvs = {{0, 0}, {2, 0}, {0, 2}};
  rd.triangles = {{0, 1, 2, 0}};
  kernel::Camera cam{};
  cam.type = kernel::kCameraPerspective;
  cam.width = cam.height = 100;
  cam.position = {0, 0, 0};
  cam.forward = {0, 0, -1};
  cam.right = {1, 0, 0};
  cam.up = {0, 1, 0};
  cam.tanHalfFovY = 0.5f;
  rd.camera = {cam};
  rd.globals.resize(1);
  const kernel::SceneView v = rd.view();
  const kernel::SurfacePoint s = kernel::surfaceAt(v, 0, 0.25f, 0.25f);
  const float distance = std::sqrt(s.p.x * s.p.x + s.p.y * s.p.y + s.p.z * s.p.z);
  EXPECT_NEAR(s.lod, std::log2(distance * 2.0f * 0.5f / 100.0f), 1e-4f);
  // Twice the UV scale: one level coarser.
  rd.uvs = {{0, 0}, {4, 0}, {0, 4}};
  EXPECT_NEAR(kernel::surfaceAt(rd.view(), 0, 0.25f, 0.25f).lod, s.lod + 1.0f, 1e-4f);
  // No UVs: no footprint (the finest level).
  rd.uvs.clear();
  EXPECT_EQ(kernel::surfaceAt(rd.view(), 0, 0.25f, 0.25f).lod, kernel::kNoLod);
}

// A triangle whose material reads texture 0 as base colour (sRGB) and texture 1 as metallic-
// roughness (linear); both 2 x 1, black and white.
Scene texturedTriangle() {
  Scene scene;
  scene.path = "mips.gltf";
  Mesh mesh;
  mesh.positions = {{0, 0, 0}, {1, 0, 0}, {0, 1, 0}};
  mesh.uvs = {{0, 0}, {1, 0}, {0, 1}};
  mesh.indices = {0, 1, 2};
  generateNormals(mesh);
  generateTangents(mesh);
  scene.meshes = {mesh};
  kernel::Material m = defaultMaterial();
  m.baseColorTexture = 0;
  m.metallicRoughnessTexture = 1;
  scene.materials = {m};
  scene.materialNames = {"m"};
  for (int i = 0; i < 2; ++i) {
    SceneTexture t;
    t.width = 2;
    t.height = 1;
    t.texels = {{0, 0, 0, 0}, {255, 255, 255, 255}};
    scene.textures.push_back(t);
  }
  scene.computeBounds();
  return scene;
}

RenderData compileTextured() {
  CompileOptions options;
  options.width = options.height = 8;
  Result<RenderData> rd = compile(texturedTriangle(), options);
  EXPECT_TRUE(rd.ok()) << rd.error().message;
  return rd.ok() ? std::move(rd).value() : RenderData();
}

// compile() builds each texture's full chain, sRGB where a material reads it as colour.
TEST(TextureMipsTest, CompileStoresFullChains) {
  const RenderData rd = compileTextured();
  ASSERT_EQ(rd.textures.size(), 2u);
  EXPECT_EQ(rd.textures[0].mipLevels, 2u);
  EXPECT_EQ(rd.textures[1].mipLevels, 2u);
  EXPECT_EQ(rd.textures[1].texelOffset, 3u);
  ASSERT_EQ(rd.texels.size(), 6u);
  EXPECT_EQ(rd.texels[2].r, 188);  // base colour: sRGB, averaged in linear light
  EXPECT_EQ(rd.texels[5].r, 128);  // metallic-roughness: linear
}

// validate() bounds the chain a texture declares: its level count and its texels.
TEST(TextureMipsTest, ValidationBoundsTheChain) {
  RenderData rd = compileTextured();
  Status ok = rd.validate();
  ASSERT_TRUE(ok.ok()) << ok.error().message;
  rd.textures[0].mipLevels = 0;
  Status st = rd.validate();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("textures[0] has 0 mip levels (1 to 2 for 2x1)"),
            std::string::npos)
      << st.error().message;
  rd.textures[0].mipLevels = 3;  // 2 x 1 has 2
  EXPECT_FALSE(rd.validate().ok());
  rd.textures[0].mipLevels = 2;
  rd.texels.pop_back();  // texture 1's 1 x 1 level is missing
  st = rd.validate();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("textures[1] reads past the end"), std::string::npos)
      << st.error().message;
  rd.texels.push_back({});
  rd.textures[1].width = 1u << 20;  // beyond any texture a loader takes
  EXPECT_FALSE(rd.validate().ok());
}

}  // namespace
}  // namespace pl
