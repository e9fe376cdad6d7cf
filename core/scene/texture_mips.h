#pragma once
// Mip chains of 8-bit RGBA textures (kernel::Texture::mipLevels; the kernel's lookups blend two
// levels around the pixel's footprint, core/kernel/texture.h). Built by compile() and shipped
// with the render data, so every device reads the same texels.
//
// Level l + 1 is the 2x2 box filter of level l (a side of n texels becomes max(1, n / 2); an odd
// last row or column is left out, a side of 1 is repeated). sRGB colour (`srgb`: R, G, B) is
// averaged in linear light and re-encoded to the nearest 8-bit sRGB value; alpha, and every
// channel of a linear texture, average the 8-bit values, rounded half up. Deterministic.

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "core/kernel/types.h"

namespace pl {

// The 8-bit sRGB value whose decoding (kernel::srgbToLinear) is nearest to `linear` (ties to
// the lower value; below 0: 0, above 1: 255).
uint8_t linearToSrgb8(float linear);

// Texels of levels 1 .. kernel::mipLevelCount(width, height) - 1 together.
size_t mipLevelsTexels(uint32_t width, uint32_t height);

// Writes those levels of the width x height image `level0` (row-major, top row first) to `out`,
// which holds exactly mipLevelsTexels(width, height) texels and does not overlap level0.
void writeMipLevels(std::span<const kernel::Rgba8> level0, uint32_t width, uint32_t height,
                    bool srgb, std::span<kernel::Rgba8> out);
// The same, appended to `out` (level0 must not lie in `out`).
void appendMipLevels(std::span<const kernel::Rgba8> level0, uint32_t width, uint32_t height,
                     bool srgb, std::vector<kernel::Rgba8>& out);

}  // namespace pl
