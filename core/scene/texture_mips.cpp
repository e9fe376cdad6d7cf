// Mip chains (texture_mips.h).

#include "core/scene/texture_mips.h"

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <system_error>
#include <thread>

#include "core/kernel/texture.h"
#include "core/util/check.h"

namespace pl {

namespace {

// For each of kBuckets equal steps of [0, 1], the largest 8-bit value whose decoding
// (kernel::kSrgbTable, the kernel's own values) is at or below the step's start: where
// linearToSrgb8's search begins. The steps are narrower than the closest two decoded values
// (1 / (255 x 12.92), at the dark end), so the value sought is that one or the next.
constexpr int kBuckets = 16384;  // a power of two: linear x kBuckets is exact
struct SrgbBuckets {
  uint8_t below[kBuckets + 1];
  SrgbBuckets() {
    const float* linear = kernel::kSrgbTable.linear;
    int i = 0;
    for (int k = 0; k <= kBuckets; ++k) {
      const float start = static_cast<float>(k) / kBuckets;
      while (i < 255 && linear[i + 1] <= start) ++i;
      below[k] = static_cast<uint8_t>(i);
      PL_CHECK(k == 0 || below[k] - below[k - 1] <= 1);
    }
  }
};
const SrgbBuckets& srgbBuckets() {
  static const SrgbBuckets buckets;
  return buckets;
}

// The source texels (along one axis) that output texel i of a level of `size` takes from the
// level above, of `above` texels: 2i and 2i + 1, and 2i + 2 for the last one when `above` is
// odd (so that no texel is left out); a side of 1 repeats its one texel.
struct Taps {
  uint32_t first, count;
};
Taps taps(uint32_t i, uint32_t size, uint32_t above) {
  if (above == 1) return {0, 1};
  const bool oddLast = (above & 1u) != 0 && i + 1 == size;
  return {2 * i, oddLast ? 3u : 2u};
}

uint8_t nearestSrgb8(float linear, const float* table, const uint8_t* below) {
  if (!(linear > table[0])) return 0;
  if (linear >= table[255]) return 255;
  // The last value at or below `linear` (its bucket's or the next), then the nearer of it and
  // the next.
  int i = below[static_cast<int>(linear * kBuckets)];
  i += table[i + 1] <= linear ? 1 : 0;
  return static_cast<uint8_t>(linear - table[i] <= table[i + 1] - linear ? i : i + 1);
}

// One texel of a level below: the average of the n taps `t` of the level above (in row-major
// order: the sums below add them in that order, whatever n), colour weighted by alpha, plain
// where every tap is transparent; alpha itself averaged.
template <bool kSrgb, uint32_t kTaps>
kernel::Rgba8 average(const kernel::Rgba8* t, uint32_t n, const SrgbBuckets& buckets) {
  if constexpr (kTaps != 0) n = kTaps;
  uint32_t alphaSum = 0;
  for (uint32_t i = 0; i < n; ++i) alphaSum += t[i].a;
  if constexpr (kTaps == 4) {
    // Four opaque taps (most texels of most textures): each weighs 255, which the general case
    // below computes at length; linear colour is then (sum + 2) / 4, exactly
    // (255 sum + 510) / 1020.
    if (alphaSum == 4 * 255) {
      if constexpr (kSrgb) {
        const float* decode = kernel::kSrgbTable.linear;
        auto mean = [&](uint8_t kernel::Rgba8::*c) {
          float sum = 0.0f;
          for (uint32_t i = 0; i < 4; ++i) sum += decode[t[i].*c] * 255.0f;
          return nearestSrgb8(sum / 1020.0f, decode, buckets.below);
        };
        return {mean(&kernel::Rgba8::r), mean(&kernel::Rgba8::g), mean(&kernel::Rgba8::b), 255};
      } else {
        auto mean = [t](uint8_t kernel::Rgba8::*c) {
          return static_cast<uint8_t>((t[0].*c + t[1].*c + t[2].*c + t[3].*c + 2u) >> 2);
        };
        return {mean(&kernel::Rgba8::r), mean(&kernel::Rgba8::g), mean(&kernel::Rgba8::b), 255};
      }
    }
  }
  const bool weighted = alphaSum > 0;
  const uint32_t total = weighted ? alphaSum : n;
  uint8_t rgb[3];
  if constexpr (kSrgb) {
    const float* decode = kernel::kSrgbTable.linear;
    float sum[3] = {0.0f, 0.0f, 0.0f};
    for (uint32_t i = 0; i < n; ++i) {
      const float weight = static_cast<float>(weighted ? t[i].a : 1u);
      sum[0] += decode[t[i].r] * weight;
      sum[1] += decode[t[i].g] * weight;
      sum[2] += decode[t[i].b] * weight;
    }
    for (int k = 0; k < 3; ++k)
      rgb[k] = nearestSrgb8(sum[k] / static_cast<float>(total), decode, buckets.below);
  } else {
    uint32_t sum[3] = {0, 0, 0};
    for (uint32_t i = 0; i < n; ++i) {
      const uint32_t weight = weighted ? t[i].a : 1u;
      sum[0] += t[i].r * weight;
      sum[1] += t[i].g * weight;
      sum[2] += t[i].b * weight;
    }
    for (int k = 0; k < 3; ++k) rgb[k] = static_cast<uint8_t>((sum[k] + total / 2) / total);
  }
  return {rgb[0], rgb[1], rgb[2], static_cast<uint8_t>((alphaSum + n / 2) / n)};
}

// Levels 1 .. levels - 1 of the chain below `level0` into `out`, as writeMipLevels() says.
template <bool kSrgb>
void writeLevels(const kernel::Rgba8* level0, uint32_t width, uint32_t height, uint32_t levels,
                 kernel::Rgba8* out) {
  const SrgbBuckets& buckets = srgbBuckets();
  const kernel::Rgba8* above = level0;  // level l - 1
  kernel::Rgba8* level = out;           // level l
  for (uint32_t l = 1; l < levels; ++l) {
    const uint32_t w0 = kernel::mipSize(width, l - 1), h0 = kernel::mipSize(height, l - 1);
    const uint32_t w = kernel::mipSize(width, l), h = kernel::mipSize(height, l);
    for (uint32_t y = 0; y < h; ++y) {
      const Taps ty = taps(y, h, h0);
      kernel::Rgba8* row = level + size_t(y) * w;
      uint32_t x = 0;
      if (ty.count == 2 && w0 > 1) {
        // Two rows of two taps each: every texel but an odd side's last.
        const kernel::Rgba8* r0 = above + size_t(ty.first) * w0;
        const kernel::Rgba8* r1 = r0 + w0;
        const uint32_t pairs = (w0 & 1u) != 0 ? w - 1 : w;
        for (; x < pairs; ++x) {
          const kernel::Rgba8 t[4] = {r0[2 * x], r0[2 * x + 1], r1[2 * x], r1[2 * x + 1]};
          row[x] = average<kSrgb, 4>(t, 4, buckets);
        }
      }
      for (; x < w; ++x) {
        const Taps tx = taps(x, w, w0);
        kernel::Rgba8 t[9];
        uint32_t n = 0;
        for (uint32_t j = 0; j < ty.count; ++j)
          for (uint32_t i = 0; i < tx.count; ++i)
            t[n++] = above[size_t(ty.first + j) * w0 + tx.first + i];
        row[x] = average<kSrgb, 0>(t, n, buckets);
      }
    }
    above = level;
    level += size_t(w) * h;
  }
}

}  // namespace

uint8_t linearToSrgb8(float linear) {
  return nearestSrgb8(linear, kernel::kSrgbTable.linear, srgbBuckets().below);
}

size_t mipLevelsTexels(uint32_t width, uint32_t height) {
  return size_t(kernel::mipChainTexels(width, height, kernel::mipLevelCount(width, height)) -
                uint64_t(width) * height);
}

void writeMipLevels(std::span<const kernel::Rgba8> level0, uint32_t width, uint32_t height,
                    bool srgb, std::span<kernel::Rgba8> out) {
  const uint32_t levels = kernel::mipLevelCount(width, height);
  if (srgb) writeLevels<true>(level0.data(), width, height, levels, out.data());
  else writeLevels<false>(level0.data(), width, height, levels, out.data());
}

void writeMipTexels(const kernel::Texture& t, const kernel::Rgba8* texels,
                    kernel::Rgba8* mipTexels) {
  const kernel::Rgba8* level0 = texels + t.texelOffset;
  kernel::Rgba8* out = mipTexels + t.mipTexelOffset;
  if (t.mipColour != 0) writeLevels<true>(level0, t.width, t.height, t.mipLevels, out);
  else writeLevels<false>(level0, t.width, t.height, t.mipLevels, out);
}

void writeMipTexels(RenderData& data) {
  forEachTextureInParallel(data.textures.size(), [&data](size_t i) {
    writeMipTexels(data.textures[i], data.texels.data(), data.mipTexels.data());
  });
}

void appendMipLevels(std::span<const kernel::Rgba8> level0, uint32_t width, uint32_t height,
                     bool srgb, std::vector<kernel::Rgba8>& out) {
  const size_t first = out.size();
  out.resize(first + mipLevelsTexels(width, height));
  writeMipLevels(level0, width, height, srgb, std::span(out).subspan(first));
}

void forEachTextureInParallel(size_t count, const std::function<void(size_t)>& work) {
  std::atomic<size_t> next{0};
  auto worker = [&] {
    for (size_t i; (i = next.fetch_add(1)) < count;) work(i);
  };
  std::vector<std::thread> helpers;
  const size_t threads =
      std::min<size_t>(std::max(1u, std::thread::hardware_concurrency()), count);
  for (size_t k = 1; k < threads; ++k) {
    try {
      helpers.emplace_back(worker);
    } catch (const std::system_error&) {
      break;  // no more threads to be had: the ones started (and this one) do the rest
    }
  }
  worker();
  for (std::thread& h : helpers) h.join();
}

std::vector<bool> colourTextures(const Scene& scene) {
  std::vector<bool> srgb(scene.textures.size(), false);
  for (const kernel::Material& m : scene.materials)
    for (int32_t t : kernel::colourTextures(m).slots)
      if (t >= 0 && size_t(t) < srgb.size()) srgb[size_t(t)] = true;
  return srgb;
}

bool hasPreparedMips(const SceneTexture& t, bool srgb) {
  return t.mips != nullptr && t.mipsSrgb == srgb &&
         t.mips->size() == mipLevelsTexels(t.width, t.height);
}

void prepareMips(Scene& scene) {
  const std::vector<bool> srgb = colourTextures(scene);
  forEachTextureInParallel(scene.textures.size(), [&](size_t i) {
    SceneTexture& t = scene.textures[i];
    if (hasPreparedMips(t, srgb[i])) return;
    if (t.width == 0 || t.height == 0 || t.texels().size() != size_t(t.width) * t.height) return;
    auto chain = std::make_shared<std::vector<kernel::Rgba8>>(mipLevelsTexels(t.width, t.height));
    writeMipLevels(t.texels(), t.width, t.height, srgb[i], *chain);
    t.mips = std::move(chain);
    t.mipsSrgb = srgb[i];
  });
}

}  // namespace pl
