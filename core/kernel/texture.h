#pragma once
// Texture lookups over RenderData::textures / texels: wrap (repeat, clamp, mirror), nearest or
// bilinear filtering, and per-slot colour decoding: sRGB (base colour, emissive) is decoded
// with the exact sRGB EOTF per texel before filtering; other slots are linear. Alpha is always
// linear. Each texture's UV transform (KHR_texture_transform) applies first. UV (0, 0) is the
// top-left corner of the image (glTF), texel row 0 is the top row.

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

// Linear RGBA of texture `index` at uv. index must be a valid texture (not kNoTexture).
PL_HOST_DEVICE PL_INLINE Vec4f sampleTexture(const SceneView& scene, int32_t index, Vec2f uv,
                                             bool srgb) {
  const Texture& tex = scene.textures[index];
  const Rgba8* texels = scene.texels + tex.texelOffset;
  uv = {tex.uv[0] * uv.x + tex.uv[1] * uv.y + tex.uv[2],
        tex.uv[3] * uv.x + tex.uv[4] * uv.y + tex.uv[5]};
  const float x = boundTexelCoord(uv.x * static_cast<float>(tex.width), tex.width, tex.wrapS);
  const float y = boundTexelCoord(uv.y * static_cast<float>(tex.height), tex.height, tex.wrapT);
  if (tex.filter == kFilterNearest) {
    const uint32_t ix = wrapTexel(static_cast<int32_t>(floorf(x)), tex.width, tex.wrapS);
    const uint32_t iy = wrapTexel(static_cast<int32_t>(floorf(y)), tex.height, tex.wrapT);
    return decodeTexel(texels[iy * tex.width + ix], srgb);
  }
  // Bilinear between the four nearest texel centres.
  const float fx = x - 0.5f, fy = y - 0.5f;
  const float x0f = floorf(fx), y0f = floorf(fy);
  const float tx = fx - x0f, ty = fy - y0f;
  const int32_t x0 = static_cast<int32_t>(x0f), y0 = static_cast<int32_t>(y0f);
  const uint32_t ix0 = wrapTexel(x0, tex.width, tex.wrapS);
  const uint32_t ix1 = wrapTexel(x0 + 1, tex.width, tex.wrapS);
  const uint32_t iy0 = wrapTexel(y0, tex.height, tex.wrapT);
  const uint32_t iy1 = wrapTexel(y0 + 1, tex.height, tex.wrapT);
  const Vec4f a = decodeTexel(texels[iy0 * tex.width + ix0], srgb);
  const Vec4f b = decodeTexel(texels[iy0 * tex.width + ix1], srgb);
  const Vec4f c = decodeTexel(texels[iy1 * tex.width + ix0], srgb);
  const Vec4f d = decodeTexel(texels[iy1 * tex.width + ix1], srgb);
  const float wa = (1.0f - tx) * (1.0f - ty), wb = tx * (1.0f - ty);
  const float wc = (1.0f - tx) * ty, wd = tx * ty;
  return {a.x * wa + b.x * wb + c.x * wc + d.x * wd, a.y * wa + b.y * wb + c.y * wc + d.y * wd,
          a.z * wa + b.z * wb + c.z * wc + d.z * wd, a.w * wa + b.w * wb + c.w * wc + d.w * wd};
}

}  // namespace pl::kernel
