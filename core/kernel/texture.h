#pragma once
// Texture lookups over RenderData::textures / texels: wrap (repeat, clamp, mirror), nearest or
// bilinear filtering, mip levels chosen by the lookup's footprint (stochastic trilinear: one of
// the two levels around it, drawn by a hash of the uv; the chains are built by
// core/scene/texture_mips.h), and per-slot colour decoding: sRGB (base colour,
// emissive, kernel::colourTextures) is decoded with the exact sRGB EOTF per texel before
// filtering; other slots are linear. Alpha is always linear. Each texture's UV transform
// (KHR_texture_transform) applies first. UV (0, 0) is the top-left corner of the image (glTF),
// texel row 0 is the top row.

#include "core/kernel/sampler.h"
#include "core/kernel/scene_view.h"

namespace pl::kernel {

// The exact sRGB EOTF (IEC 61966-2-1) of an 8-bit value.
PL_HOST_DEVICE PL_INLINE float srgbToLinear(uint8_t value) {
  float c = static_cast<float>(value) * (1.0f / 255.0f);
  return c <= 0.04045f ? c * (1.0f / 12.92f) : powf((c + 0.055f) * (1.0f / 1.055f), 2.4f);
}

// Maps an integer texel coordinate (any int) into [0, size) according to the wrap mode.
PL_HOST_DEVICE PL_INLINE uint32_t wrapTexel(int32_t i, uint32_t size, uint32_t wrap) {
  const int32_t n = static_cast<int32_t>(size);
  if (wrap == kWrapClamp) return static_cast<uint32_t>(i < 0 ? 0 : (i >= n ? n - 1 : i));
  if (wrap == kWrapMirror) {
    const int32_t period = 2 * n;
    int32_t m = i % period;
    if (m < 0) m += period;
    return static_cast<uint32_t>(m < n ? m : period - 1 - m);
  }
  int32_t m = i % n;  // repeat
  return static_cast<uint32_t>(m < 0 ? m + n : m);
}

// Texel-space coordinate x = u * size, reduced so that converting floor(x) to int is defined
// (repeat and mirror are periodic; clamp saturates), and 0 for NaN.
PL_HOST_DEVICE PL_INLINE float boundTexelCoord(float x, uint32_t size, uint32_t wrap) {
  if (!(x == x)) return 0.0f;
  const float n = static_cast<float>(size);
  if (wrap == kWrapClamp) return clampf(x, -1.0f, n + 1.0f);
  const float period = wrap == kWrapMirror ? 2.0f * n : n;
  if (fabsf(x) > 16777216.0f) return 0.0f;  // no fractional precision left anyway
  return x - floorf(x / period) * period;
}

#if !PL_GPU_CODE
// The host decodes 8-bit sRGB through a table of srgbToLinear()'s own values: the same bits,
// without the twelve powf calls of a bilinear lookup. (The GPU computes them.)
struct SrgbTable {
  float linear[256];
  SrgbTable() {
    for (int i = 0; i < 256; ++i) linear[i] = srgbToLinear(static_cast<uint8_t>(i));
  }
};
inline const SrgbTable kSrgbTable;
#endif

PL_HOST_DEVICE PL_INLINE float decodeSrgb(uint8_t value) {
#if PL_GPU_CODE
  return srgbToLinear(value);
#else
  return kSrgbTable.linear[value];
#endif
}

PL_HOST_DEVICE PL_INLINE Vec4f decodeTexel(const Rgba8& t, bool srgb) {
  if (srgb) return {decodeSrgb(t.r), decodeSrgb(t.g), decodeSrgb(t.b), t.a * (1.0f / 255.0f)};
  return {t.r * (1.0f / 255.0f), t.g * (1.0f / 255.0f), t.b * (1.0f / 255.0f),
          t.a * (1.0f / 255.0f)};
}

// Mip levels (Texture::mipLevels): level l of a side of `size` texels has max(1, size >> l);
// a full chain ends at 1x1.
PL_HOST_DEVICE PL_INLINE uint32_t mipSize(uint32_t size, uint32_t level) {
  const uint32_t s = level < 32 ? size >> level : 0u;
  return s > 0 ? s : 1u;
}
PL_HOST_DEVICE PL_INLINE uint32_t mipLevelCount(uint32_t width, uint32_t height) {
  uint32_t levels = 1;
  while (mipSize(width, levels - 1) > 1 || mipSize(height, levels - 1) > 1) ++levels;
  return levels;
}
// Texels of levels [0, levels) together.
PL_HOST_DEVICE PL_INLINE uint64_t mipChainTexels(uint32_t width, uint32_t height,
                                                 uint32_t levels) {
  uint64_t n = 0;
  for (uint32_t l = 0; l < levels; ++l)
    n += static_cast<uint64_t>(mipSize(width, l)) * mipSize(height, l);
  return n;
}

// The level of detail of a texture lookup, before the texture's own size: log2 of the width
// of what one sample filters at the lookup, in UV units (surfaceAt() computes it from the
// camera: half a pixel's width, kSampleFilterWidth; kNoLod: the finest level).
constexpr float kNoLod = -1.0e30f;

// Filtered (bilinear, or nearest) linear RGBA of one mip level at uv (already transformed by
// the texture's UV transform).
PL_HOST_DEVICE PL_INLINE Vec4f sampleTextureLevel(const SceneView& scene, const Texture& tex,
                                                  uint32_t level, Vec2f uv, bool srgb) {
  const uint32_t width = mipSize(tex.width, level), height = mipSize(tex.height, level);
  const Rgba8* texels =
      level == 0 ? scene.texels + tex.texelOffset
                 : scene.mipTexels + tex.mipTexelOffset +
                       (mipChainTexels(tex.width, tex.height, level) -
                        static_cast<uint64_t>(tex.width) * tex.height);
  const float x = boundTexelCoord(uv.x * static_cast<float>(width), width, tex.wrapS);
  const float y = boundTexelCoord(uv.y * static_cast<float>(height), height, tex.wrapT);
  if (tex.filter == kFilterNearest) {
    const uint32_t ix = wrapTexel(static_cast<int32_t>(floorf(x)), width, tex.wrapS);
    const uint32_t iy = wrapTexel(static_cast<int32_t>(floorf(y)), height, tex.wrapT);
    return decodeTexel(texels[iy * width + ix], srgb);
  }
  // Bilinear between the four nearest texel centres.
  const float fx = x - 0.5f, fy = y - 0.5f;
  const float x0f = floorf(fx), y0f = floorf(fy);
  const float tx = fx - x0f, ty = fy - y0f;
  const int32_t x0 = static_cast<int32_t>(x0f), y0 = static_cast<int32_t>(y0f);
  const uint32_t ix0 = wrapTexel(x0, width, tex.wrapS);
  const uint32_t ix1 = wrapTexel(x0 + 1, width, tex.wrapS);
  const uint32_t iy0 = wrapTexel(y0, height, tex.wrapT);
  const uint32_t iy1 = wrapTexel(y0 + 1, height, tex.wrapT);
  const Vec4f a = decodeTexel(texels[iy0 * width + ix0], srgb);
  const Vec4f b = decodeTexel(texels[iy0 * width + ix1], srgb);
  const Vec4f c = decodeTexel(texels[iy1 * width + ix0], srgb);
  const Vec4f d = decodeTexel(texels[iy1 * width + ix1], srgb);
  const float wa = (1.0f - tx) * (1.0f - ty), wb = tx * (1.0f - ty);
  const float wc = (1.0f - tx) * ty, wd = tx * ty;
  return {a.x * wa + b.x * wb + c.x * wc + d.x * wd, a.y * wa + b.y * wb + c.y * wc + d.y * wd,
          a.z * wa + b.z * wb + c.z * wc + d.z * wd, a.w * wa + b.w * wb + c.w * wc + d.w * wd};
}

// Linear RGBA of texture `index` at uv. index must be a valid texture (not kNoTexture). lod:
// the lookup's footprint (kNoLod above); where the texture is magnified (a texel covers more
// than the footprint) or has no mips, level 0 is looked up alone, else one of the two levels around
// the footprint, each with its trilinear weight's probability. Texels whose filter is nearest
// always come from level 0.
PL_HOST_DEVICE PL_INLINE Vec4f sampleTexture(const SceneView& scene, int32_t index, Vec2f uv,
                                             bool srgb, float lod = kNoLod) {
  const Texture& tex = scene.textures[index];
  const Vec2f st = {tex.uv[0] * uv.x + tex.uv[1] * uv.y + tex.uv[2],
                    tex.uv[3] * uv.x + tex.uv[4] * uv.y + tex.uv[5]};
  if (tex.mipLevels <= 1 || tex.filter == kFilterNearest || !(lod > -64.0f))
    return sampleTextureLevel(scene, tex, 0, st, srgb);
  // The footprint in texels of level 0: the UV footprint scaled by the transform and the size.
  const float det = fabsf(tex.uv[0] * tex.uv[4] - tex.uv[1] * tex.uv[3]);
  const float level =
      lod + 0.5f * log2f(det * static_cast<float>(tex.width) * static_cast<float>(tex.height));
  if (!(level > 0.0f)) return sampleTextureLevel(scene, tex, 0, st, srgb);
  const float last = static_cast<float>(tex.mipLevels - 1);
  if (!(level < last)) return sampleTextureLevel(scene, tex, tex.mipLevels - 1, st, srgb);
  const uint32_t l0 = static_cast<uint32_t>(level);
  const float f = level - static_cast<float>(l0);
  // One of the two levels, the coarser with probability f: a hash of the lookup's uv and the
  // texture (never of the path or the sample count) draws it. In expectation over a pixel's
  // samples this is the trilinear blend, at half its texel reads (texel loads that miss the
  // cache are much of the render's time on textured scenes).
  const float u = u32ToUnitFloat(hash3(floatBits(uv.x), floatBits(uv.y),
                                       static_cast<uint32_t>(index)));
  return sampleTextureLevel(scene, tex, u < f ? l0 + 1 : l0, st, srgb);
}

}  // namespace pl::kernel
