#pragma once
// Mip chains of 8-bit RGBA textures (kernel::Texture::mipLevels; the kernel's lookups take one
// of two levels around a sample's footprint, core/kernel/texture.h). Built by compile() into
// RenderData::mipTexels, and by every node from level 0 again (writeMipTexels(): they are
// never sent), so every device reads the same texels.
//
// Level l + 1 is the box filter of level l: a side of n texels becomes max(1, n / 2), output
// texel i taking texels 2i and 2i + 1 of the level above, and 2i + 2 too for the last one when
// n is odd (no texel is left out; a side of 1 repeats its texel). Colour is weighted by alpha
// (a transparent texel's colour does not bleed into the rest; plain where all are
// transparent); sRGB colour (`srgb`: R, G, B) is averaged in linear light and re-encoded to the
// nearest 8-bit sRGB value, linear colour and alpha average the 8-bit values, rounded half up.
// Deterministic, whichever thread computes it.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "core/kernel/types.h"
#include "core/scene/render_data.h"
#include "core/scene/scene.h"

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
// Every texture's levels below 0 into data.mipTexels (at its mipTexelOffset, its mipLevels - 1
// levels, as colour where mipColour says so) from its level 0 in data.texels: what compile()
// stored there. Each texture on its own thread (up to one per core). `data` must pass
// RenderData::validate(), which bounds every range read and written here.
void writeMipTexels(RenderData& data);
// One texture's levels below 0, from `texels` into `mipTexels` (arrays that passed
// validateTextures() with `t` among the textures).
void writeMipTexels(const kernel::Texture& t, const kernel::Rgba8* texels,
                    kernel::Rgba8* mipTexels);
// The same, appended to `out` (level0 must not lie in `out`).
void appendMipLevels(std::span<const kernel::Rgba8> level0, uint32_t width, uint32_t height,
                     bool srgb, std::vector<kernel::Rgba8>& out);

// Per texture of `scene`: whether a material reads it as colour (kernel::colourTextures); a
// texture read both ways is filtered as colour.
std::vector<bool> colourTextures(const Scene& scene);

// Computes every texture's chain once into SceneTexture::mips, for a Scene that is compiled
// again and again (a session's edits), so that compile() copies them instead. Safe to call
// again: chains that still match are kept.
void prepareMips(Scene& scene);
// Whether `t` carries the chain prepareMips() makes for it, filtered as colour or not.
bool hasPreparedMips(const SceneTexture& t, bool srgb);

// Runs work(0 .. count - 1), each index once, on up to one thread per core (this one included;
// fewer when no more threads can be started).
void forEachTextureInParallel(size_t count, const std::function<void(size_t)>& work);

}  // namespace pl
