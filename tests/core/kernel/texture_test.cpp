// Tests for core/kernel/texture.h: sRGB decoding, wrap modes, filtering.
#include "core/kernel/texture.h"

#include <gtest/gtest.h>

#include <cmath>

#include "core/scene/render_data.h"

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

}  // namespace
}  // namespace pl::kernel
