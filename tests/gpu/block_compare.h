#pragma once
// Comparing two renders of one image that agree only "within noise" (a CPU and a GPU device,
// or two intersection back ends): means over square blocks of pixels, with a tolerance
// derived from each render's own noise.
//
// Each render comes as two independent halves of its samples (fixed-point sums of samples
// [0, n) and [n, 2n) over the whole image). For a pixel with half means a and b, the full mean
// is (a + b) / 2 and (a - b)^2 / 4 is an unbiased estimate of its variance (Var(a - b) =
// 2 Var(half) = 4 Var(full)). A block's mean is the average of its pixels' means, so its
// variance is the sum of the pixel variances over pixels^2 — a sum over 256 terms for 16x16
// blocks, so the estimate itself is good to about 10%. For two independent renders
// Var(mA - mB) = Var(mA) + Var(mB); the devices here share random numbers (same seed and
// sample indices), so their real difference is smaller still, and a k-sigma test with
// independent-noise sigma is conservative. A small relative floor absorbs systematic
// last-bits differences (GPU vs libm transcendental functions) in noise-free blocks.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "core/kernel/fixed_point.h"

namespace pl::test {

struct BlockComparison {
  uint32_t tests = 0;       // blocks x 3 channels
  uint32_t overSoft = 0;    // |z| > softSigma
  double maxZ = 0.0;
  std::string worst;        // where maxZ was found
  double meanA = 0.0, meanB = 0.0;  // whole-image means (all channels)
};

// a0/a1 and b0/b1: whole-image sums (3 per pixel) of two halves of halfSpp samples each.
inline BlockComparison compareBlocks(uint32_t width, uint32_t height, uint32_t block,
                                     uint32_t halfSpp, const std::vector<int64_t>& a0,
                                     const std::vector<int64_t>& a1,
                                     const std::vector<int64_t>& b0,
                                     const std::vector<int64_t>& b1, double softSigma,
                                     double relativeFloor = 1e-3) {
  BlockComparison out;
  const double scale = kernel::kFixedInvScale / double(halfSpp);
  double sumA = 0.0, sumB = 0.0;
  for (uint32_t by = 0; by < height; by += block) {
    for (uint32_t bx = 0; bx < width; bx += block) {
      for (int c = 0; c < 3; ++c) {
        double mA = 0, mB = 0, vA = 0, vB = 0;
        uint32_t n = 0;
        for (uint32_t y = by; y < std::min(height, by + block); ++y) {
          for (uint32_t x = bx; x < std::min(width, bx + block); ++x) {
            size_t i = (size_t(y) * width + x) * 3 + c;
            double ha = double(a0[i]) * scale, hb = double(a1[i]) * scale;
            double ga = double(b0[i]) * scale, gb = double(b1[i]) * scale;
            mA += 0.5 * (ha + hb);
            mB += 0.5 * (ga + gb);
            vA += 0.25 * (ha - hb) * (ha - hb);
            vB += 0.25 * (ga - gb) * (ga - gb);
            ++n;
          }
        }
        sumA += mA;
        sumB += mB;
        mA /= n;
        mB /= n;
        vA /= double(n) * n;
        vB /= double(n) * n;
        double floor = relativeFloor * std::max(std::fabs(mA), std::fabs(mB)) + 1e-6;
        double sigma = std::sqrt(vA + vB + floor * floor);
        double z = std::fabs(mA - mB) / sigma;
        ++out.tests;
        if (z > softSigma) ++out.overSoft;
        if (z > out.maxZ) {
          out.maxZ = z;
          char buf[160];
          std::snprintf(buf, sizeof buf,
                        "block at (%u, %u) channel %d: means %.6f vs %.6f, sigma %.6f", bx, by,
                        c, mA, mB, sigma);
          out.worst = buf;
        }
      }
    }
  }
  out.meanA = sumA / (double(width) * height * 3);
  out.meanB = sumB / (double(width) * height * 3);
  return out;
}

}  // namespace pl::test
