// Mip chains (texture_mips.h).

#include "core/scene/texture_mips.h"

#include <algorithm>
#include <cstddef>

#include "core/kernel/texture.h"

namespace pl {

namespace {

// kernel::srgbToLinear of every 8-bit value (the kernel's own function: the same bits), and
// for each of kBuckets equal steps of [0, 1] the largest value that decodes at or below the
// step's start (where linearToSrgb8's search begins).
constexpr int kBuckets = 1024;
struct SrgbTables {
  float linear[256];
  uint8_t below[kBuckets + 1];
  SrgbTables() {
    for (int i = 0; i < 256; ++i) linear[i] = kernel::srgbToLinear(static_cast<uint8_t>(i));
    int i = 0;
    for (int k = 0; k <= kBuckets; ++k) {
      const float start = static_cast<float>(k) / kBuckets;
      while (i < 255 && linear[i + 1] <= start) ++i;
      below[k] = static_cast<uint8_t>(i);
    }
  }
};
const SrgbTables& srgbTables() {
  static const SrgbTables tables;
  return tables;
}

uint8_t average8(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
  return static_cast<uint8_t>((uint32_t(a) + b + c + d + 2u) >> 2);
}

}  // namespace

uint8_t linearToSrgb8(float linear) {
  const SrgbTables& t = srgbTables();
  if (!(linear > t.linear[0])) return 0;
  if (linear >= t.linear[255]) return 255;
  // The last value at or below `linear` (from its bucket on: a few steps at most), then the
  // nearer of it and the next.
  int i = t.below[static_cast<int>(linear * kBuckets)];
  while (t.linear[i + 1] <= linear) ++i;
  return static_cast<uint8_t>(linear - t.linear[i] <= t.linear[i + 1] - linear ? i : i + 1);
}

size_t mipLevelsTexels(uint32_t width, uint32_t height) {
  return size_t(kernel::mipChainTexels(width, height, kernel::mipLevelCount(width, height)) -
                uint64_t(width) * height);
}

void appendMipLevels(std::span<const kernel::Rgba8> level0, uint32_t width, uint32_t height,
                     bool srgb, std::vector<kernel::Rgba8>& out) {
  const size_t first = out.size();
  out.resize(first + mipLevelsTexels(width, height));
  writeMipLevels(level0, width, height, srgb, std::span(out).subspan(first));
}

void writeMipLevels(std::span<const kernel::Rgba8> level0, uint32_t width, uint32_t height,
                    bool srgb, std::span<kernel::Rgba8> out) {
  const uint32_t levels = kernel::mipLevelCount(width, height);
  const float* decode = srgbTables().linear;
  const kernel::Rgba8* above = level0.data();  // level l - 1
  kernel::Rgba8* level = out.data();           // level l
  for (uint32_t l = 1; l < levels; ++l) {
    const uint32_t w0 = kernel::mipSize(width, l - 1), h0 = kernel::mipSize(height, l - 1);
    const uint32_t w = kernel::mipSize(width, l), h = kernel::mipSize(height, l);
    for (uint32_t y = 0; y < h; ++y) {
      const kernel::Rgba8* row0 = above + size_t(std::min(2 * y, h0 - 1)) * w0;
      const kernel::Rgba8* row1 = above + size_t(std::min(2 * y + 1, h0 - 1)) * w0;
      kernel::Rgba8* to = level + size_t(y) * w;
      for (uint32_t x = 0; x < w; ++x) {
        const uint32_t x0 = std::min(2 * x, w0 - 1), x1 = std::min(2 * x + 1, w0 - 1);
        const kernel::Rgba8 a = row0[x0], b = row0[x1], c = row1[x0], d = row1[x1];
        kernel::Rgba8& m = to[x];
        if (srgb) {
          auto mean = [&](uint8_t p, uint8_t q, uint8_t r, uint8_t s) {
            return linearToSrgb8(0.25f * (decode[p] + decode[q] + decode[r] + decode[s]));
          };
          m.r = mean(a.r, b.r, c.r, d.r);
          m.g = mean(a.g, b.g, c.g, d.g);
          m.b = mean(a.b, b.b, c.b, d.b);
        } else {
          m.r = average8(a.r, b.r, c.r, d.r);
          m.g = average8(a.g, b.g, c.g, d.g);
          m.b = average8(a.b, b.b, c.b, d.b);
        }
        m.a = average8(a.a, b.a, c.a, d.a);
      }
    }
    above = level;
    level += size_t(w) * h;
  }
}

}  // namespace pl
