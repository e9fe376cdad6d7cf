// Tests for core/scene/texture_mips.h: the chains compile() ships (the kernel's lookups are
// tested in tests/core/kernel/texture_test.cpp).
#include "core/scene/texture_mips.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "core/kernel/texture.h"
#include "core/scene/compile.h"
#include "core/scene/load.h"
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
  // Against a search of all 256 values, over 200 001 points of [0, 1]: the last value at or
  // below, then the nearer of it and the next (ties to the lower).
  const float* table = kernel::kSrgbTable.linear;
  int wrong = 0;
  for (int k = 0; k <= 200000; ++k) {
    const float v = float(k) / 200000.0f;
    int i = 0;
    while (i < 255 && table[i + 1] <= v) ++i;
    const int want = i == 255 ? 255 : (v - table[i] <= table[i + 1] - v ? i : i + 1);
    wrong += linearToSrgb8(v) != want;
  }
  EXPECT_EQ(wrong, 0);
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
// linear light; alpha is always linear.
TEST(TextureMipsTest, BoxFilterPerChannel) {
  // 4 x 2 (opaque colour, varied alpha): the level below is 2 x 1, then 1 x 1.
  const std::vector<Rgba8> level0 = {
      {0, 10, 0, 255}, {255, 11, 255, 255}, {0, 0, 0, 255},   {0, 0, 0, 255},
      {0, 10, 0, 255}, {255, 12, 255, 255}, {40, 0, 0, 255}, {0, 0, 0, 251}};
  std::vector<Rgba8> linear, srgb;
  appendMipLevels(level0, 4, 2, false, linear);
  appendMipLevels(level0, 4, 2, true, srgb);
  ASSERT_EQ(linear.size(), 3u);
  ASSERT_EQ(srgb.size(), 3u);
  EXPECT_EQ(linear[0].r, 128);  // (0 + 255 + 0 + 255 + 2) / 4 = 128
  EXPECT_EQ(linear[0].g, 11);   // (10 + 11 + 10 + 12 + 2) / 4 = 11
  EXPECT_EQ(linear[0].a, 255);
  EXPECT_EQ(linear[1].a, 254);  // (255 * 3 + 251 + 2) / 4
  EXPECT_EQ(linear[1].r, 10);   // 40 weighted by its alpha among 255, 255, 255, 251
  EXPECT_EQ(linear[2].r, 69);   // (128 * 255 + 10 * 254) / (255 + 254), rounded
  // Half black, half white in linear light is 0.5, which sRGB encodes as 188.
  EXPECT_EQ(srgb[0].r, linearToSrgb8(0.5f));
  EXPECT_EQ(srgb[0].r, 188);
  EXPECT_EQ(srgb[0].a, 255);  // alpha stays linear
  EXPECT_EQ(srgb[1].a, 254);
}

// An odd side gives its last texel to the last texel below (three taps): nothing is left out,
// and the 1 x 1 level of a 3 x 1 image is its mean.
TEST(TextureMipsTest, OddSidesLeaveNoTexelOut) {
  const std::vector<Rgba8> row = {{0, 0, 0, 255}, {0, 0, 0, 255}, {255, 255, 255, 255}};
  std::vector<Rgba8> linear;
  appendMipLevels(row, 3, 1, false, linear);
  ASSERT_EQ(linear.size(), 1u);
  EXPECT_EQ(linear[0].r, 85);  // (0 + 0 + 255) / 3
  // 5 x 1: texels 0-1, then 2-4.
  const std::vector<Rgba8> five = {
      {10, 0, 0, 255}, {20, 0, 0, 255}, {30, 0, 0, 255}, {40, 0, 0, 255}, {50, 0, 0, 255}};
  std::vector<Rgba8> chain;
  appendMipLevels(five, 5, 1, false, chain);
  ASSERT_EQ(chain.size(), 3u);  // 2 x 1, 1 x 1
  EXPECT_EQ(chain[0].r, 15);
  EXPECT_EQ(chain[1].r, 40);
  EXPECT_EQ(chain[2].r, 28);  // (15 + 40 + 1) / 2, rounded half up
}

// Level 1 of random 9 x 7 and 10 x 8 images, opaque and with random alpha (zero included), is
// the header's formula written out plainly: whatever shortcuts the filter takes (four opaque
// taps, the sRGB search's buckets) give the same bytes.
TEST(TextureMipsTest, EveryTexelIsTheFormulaWrittenOut) {
  uint32_t state = 99;
  auto next = [&] {
    state = state * 1664525u + 1013904223u;
    return uint8_t(state >> 24);
  };
  const float* decode = kernel::kSrgbTable.linear;
  for (auto [w0, h0] : {std::pair(9u, 7u), std::pair(10u, 8u)}) {
    for (int alphaKind = 0; alphaKind < 2; ++alphaKind) {
      std::vector<Rgba8> level0(size_t(w0) * h0);
      for (Rgba8& t : level0) {
        t = {next(), next(), next(), alphaKind == 0 ? uint8_t(255) : next()};
        if (alphaKind == 1 && next() < 64) t.a = 0;
      }
      for (bool srgb : {false, true}) {
        SCOPED_TRACE(std::to_string(w0) + "x" + std::to_string(h0) + (srgb ? " sRGB" : " linear") +
                     (alphaKind ? " alpha" : " opaque"));
        std::vector<Rgba8> chain;
        appendMipLevels(level0, w0, h0, srgb, chain);
        const uint32_t w = w0 / 2, h = h0 / 2;
        for (uint32_t y = 0; y < h; ++y) {
          for (uint32_t x = 0; x < w; ++x) {
            const uint32_t nx = (w0 & 1) && x + 1 == w ? 3 : 2, ny = (h0 & 1) && y + 1 == h ? 3 : 2;
            uint32_t alphaSum = 0, n = nx * ny;
            for (uint32_t j = 0; j < ny; ++j)
              for (uint32_t i = 0; i < nx; ++i) alphaSum += level0[(2 * y + j) * w0 + 2 * x + i].a;
            const uint32_t total = alphaSum > 0 ? alphaSum : n;
            const Rgba8 got = chain[y * w + x];
            for (int k = 0; k < 3; ++k) {
              float sum = 0.0f;
              uint32_t sum8 = 0;
              for (uint32_t j = 0; j < ny; ++j) {
                for (uint32_t i = 0; i < nx; ++i) {
                  const Rgba8 t = level0[(2 * y + j) * w0 + 2 * x + i];
                  const uint32_t weight = alphaSum > 0 ? t.a : 1;
                  const uint8_t c = k == 0 ? t.r : k == 1 ? t.g : t.b;
                  sum += decode[c] * float(weight);
                  sum8 += c * weight;
                }
              }
              const uint8_t want = srgb ? linearToSrgb8(sum / float(total))
                                        : uint8_t((sum8 + total / 2) / total);
              EXPECT_EQ(k == 0 ? got.r : k == 1 ? got.g : got.b, want) << x << "," << y;
            }
            EXPECT_EQ(got.a, (alphaSum + n / 2) / n);
          }
        }
      }
    }
  }
}

// Colour is weighted by alpha: a transparent texel's colour (here black, as around a cut-out
// leaf) does not darken the visible one; where every texel is transparent, colour is the plain
// mean.
TEST(TextureMipsTest, TransparentTexelsDoNotBleedColour) {
  const std::vector<Rgba8> leaf = {{0, 200, 0, 255}, {0, 0, 0, 0}, {0, 0, 0, 0}, {0, 0, 0, 0}};
  std::vector<Rgba8> linear, srgb;
  appendMipLevels(leaf, 2, 2, false, linear);
  appendMipLevels(leaf, 2, 2, true, srgb);
  ASSERT_EQ(linear.size(), 1u);
  EXPECT_EQ(linear[0].g, 200);
  EXPECT_EQ(linear[0].a, 64);  // (255 + 2) / 4
  EXPECT_EQ(srgb[0].g, 200);
  const std::vector<Rgba8> clear = {{0, 0, 0, 0}, {200, 0, 0, 0}, {0, 0, 0, 0}, {0, 0, 0, 0}};
  std::vector<Rgba8> empty;
  appendMipLevels(clear, 2, 2, false, empty);
  EXPECT_EQ(empty[0].r, 50);
  EXPECT_EQ(empty[0].a, 0);
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
    t.setTexels({{0, 0, 0, 255}, {255, 255, 255, 255}});
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

// compile() builds each texture's full chain into mipTexels, sRGB where a material reads it as
// colour, and writeMipTexels() (what a node that receives the render data runs) makes the same.
TEST(TextureMipsTest, CompileStoresFullChains) {
  const RenderData rd = compileTextured();
  ASSERT_EQ(rd.textures.size(), 2u);
  EXPECT_EQ(rd.textures[0].mipLevels, 2u);
  EXPECT_EQ(rd.textures[1].mipLevels, 2u);
  EXPECT_EQ(rd.textures[1].texelOffset, 2u);
  EXPECT_EQ(rd.textures[0].mipTexelOffset, 0u);
  EXPECT_EQ(rd.textures[1].mipTexelOffset, 1u);
  EXPECT_EQ(rd.textures[0].mipColour, 1u);
  EXPECT_EQ(rd.textures[1].mipColour, 0u);
  ASSERT_EQ(rd.texels.size(), 4u);
  ASSERT_EQ(rd.mipTexels.size(), 2u);
  EXPECT_EQ(rd.mipTexels[0].r, 188);  // base colour: sRGB, averaged in linear light
  EXPECT_EQ(rd.mipTexels[1].r, 128);  // metallic-roughness: linear

  RenderData again = rd;
  again.mipTexels.assign(again.mipTexels.size(), kernel::Rgba8{});
  writeMipTexels(again);
  EXPECT_EQ(serialize(again), serialize(rd));
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
  rd.texels.pop_back();  // texture 1's level 0 lacks a texel
  st = rd.validate();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("textures[1] reads past the end"), std::string::npos)
      << st.error().message;
  rd.texels.push_back({});
  // mipTexels holds each texture's levels below 0 after the last's, and nothing else.
  rd.mipTexels.pop_back();  // texture 1's 1 x 1 level is missing
  st = rd.validate();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("textures[1]'s mip levels run past the end of the 1 mipTexels"),
            std::string::npos)
      << st.error().message;
  rd.mipTexels.push_back({});
  rd.mipTexels.push_back({});
  st = rd.validate();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("mipTexels holds 3 texels, the textures' mip levels 2"),
            std::string::npos)
      << st.error().message;
  rd.mipTexels.pop_back();
  rd.textures[1].mipTexelOffset = 0;  // the same texels as texture 0's
  st = rd.validate();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(
      st.error().message.find("textures[1]'s mip levels start at texel 0 of mipTexels, not 1"),
      std::string::npos)
      << st.error().message;
  rd.textures[1].mipTexelOffset = 1;
  rd.textures[1].mipColour = 2;
  EXPECT_FALSE(rd.validate().ok());
  rd.textures[1].mipColour = 0;
  ASSERT_TRUE(rd.validate().ok());
  // A side beyond any a loader takes, with every texel there: refused for its size alone.
  rd.textures[1].width = kMaxTextureDimension + 1;
  rd.textures[1].mipLevels = 1;
  rd.texels.resize(rd.textures[1].texelOffset + kMaxTextureDimension + 1);
  st = rd.validate();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("larger than 16384"), std::string::npos) << st.error().message;
}

// prepareMips() makes the chains compile() would make: the render data is the same either way
// (a session prepares them once and compiles after every edit).
TEST(TextureMipsTest, PreparedChainsAreTheChainsCompileBuilds) {
  Scene scene = texturedTriangle();
  CompileOptions options;
  options.width = options.height = 8;
  Result<RenderData> built = compile(scene, options);
  ASSERT_TRUE(built.ok()) << built.error().message;
  prepareMips(scene);
  ASSERT_NE(scene.textures[0].mips, nullptr);
  EXPECT_TRUE(scene.textures[0].mipsSrgb);
  EXPECT_FALSE(scene.textures[1].mipsSrgb);
  Result<RenderData> prepared = compile(scene, options);
  ASSERT_TRUE(prepared.ok()) << prepared.error().message;
  EXPECT_EQ(serialize(*prepared), serialize(*built));
  // A chain made for the other use is not taken: compile() builds its own.
  scene.textures[0].mipsSrgb = false;
  Result<RenderData> other = compile(scene, options);
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(serialize(*other), serialize(*built));
}

// The mip filter's time on Sponza's 60 textures (65 M texels of level 0), one thread, best of
// three (what a node spends computing the levels it is not sent; printed, not asserted).
TEST(TextureMipsTest, PrintsFilterTimeOnSponza) {
  const std::string path =
      std::string(PEERLIGHT_SHARED_DIR) + "/scenes/sponza-crytek-rendu/sponza.gltf";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " not present";
  Result<Scene> scene = loadScene(path);
  ASSERT_TRUE(scene.ok()) << scene.error().message;
  const std::vector<bool> srgb = colourTextures(*scene);
  std::vector<std::vector<Rgba8>> chains(scene->textures.size());
  uint64_t texels = 0;
  for (size_t i = 0; i < chains.size(); ++i) {
    chains[i].resize(mipLevelsTexels(scene->textures[i].width, scene->textures[i].height));
    texels += chains[i].size();
  }
  double best = 1e9;
  for (int run = 0; run < 3; ++run) {
    const auto start = std::chrono::steady_clock::now();
    for (size_t i = 0; i < chains.size(); ++i) {
      const SceneTexture& t = scene->textures[i];
      writeMipLevels(t.texels(), t.width, t.height, srgb[i], chains[i]);
    }
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
                              .count());
  }
  std::printf("[ info ] Sponza mip levels: %zu textures, %.1f M texels computed in %.3f s on one "
              "thread (%.1f ns a texel)\n",
              chains.size(), texels / 1e6, best, best * 1e9 / double(texels));
}

}  // namespace
}  // namespace pl
