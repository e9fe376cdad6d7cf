// Tests for core/kernel/sampler.h: determinism, range, and stratification.
#include "core/kernel/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <vector>

namespace pl::kernel {
namespace {

TEST(SamplerTest, PureFunctionOfInputs) {
  for (uint32_t dim = 0; dim < 8; ++dim)
    for (uint32_t s = 0; s < 16; ++s)
      EXPECT_EQ(floatBits(sampleDimension(7, 3, 4, s, dim)),
                floatBits(sampleDimension(7, 3, 4, s, dim)));
  // The cursor gives the same values as the pure function.
  Sampler sampler = makeSampler(7, 3, 4, 5);
  const Vec2f a = sampler.get2D();
  const float b = sampler.get1D();
  const Vec2f c = sampler.get2D();
  EXPECT_EQ(a.x, sampleDimension(7, 3, 4, 5, 0));
  EXPECT_EQ(a.y, sampleDimension(7, 3, 4, 5, 1));
  EXPECT_EQ(b, sampleDimension(7, 3, 4, 5, 2));
  EXPECT_EQ(c.x, sampleDimension(7, 3, 4, 5, 4));
  EXPECT_EQ(c.y, sampleDimension(7, 3, 4, 5, 5));
}

// get1D() computes the first value of its pair alone: the same bits as get2D().x.
TEST(SamplerTest, OneValueIsTheFirstOfItsPair) {
  for (uint32_t s = 0; s < 4096; ++s) {
    Sampler one = makeSampler(11, s % 7, s / 7, s), two = one;
    for (int pair = 0; pair < 6; ++pair)
      ASSERT_EQ(floatBits(one.get1D()), floatBits(two.get2D().x)) << s << " " << pair;
  }
}

// The second Sobol dimension computed by its definition: XOR of the direction numbers
// v_1 = 2^31, v_{i+1} = v_i ^ (v_i >> 1) over the set bits of the index.
uint32_t sobolDim1ByDirectionNumbers(uint32_t index) {
  uint32_t result = 0;
  for (uint32_t v = 0x80000000u; index != 0; index >>= 1, v ^= v >> 1)
    if (index & 1u) result ^= v;
  return result;
}

TEST(SamplerTest, FastSobolMatchesItsDefinition) {
  EXPECT_EQ(sobolDim1(1), 0x80000000u);
  EXPECT_EQ(sobolDim1(2), 0xc0000000u);
  EXPECT_EQ(sobolDim1(3), 0x40000000u);
  uint32_t x = 12345;
  for (int i = 0; i < 100000; ++i) {
    x = hashU32(x + uint32_t(i));
    ASSERT_EQ(sobolDim1(x), sobolDim1ByDirectionNumbers(x)) << x;
    ASSERT_EQ(sobolDim1(uint32_t(i)), sobolDim1ByDirectionNumbers(uint32_t(i))) << i;
  }
}

TEST(SamplerTest, DifferentInputsGiveDifferentValues) {
  const float base = sampleDimension(1, 10, 20, 30, 4);
  EXPECT_NE(base, sampleDimension(2, 10, 20, 30, 4));  // seed
  EXPECT_NE(base, sampleDimension(1, 11, 20, 30, 4));  // pixel x
  EXPECT_NE(base, sampleDimension(1, 10, 21, 30, 4));  // pixel y
  EXPECT_NE(base, sampleDimension(1, 10, 20, 31, 4));  // sample
  EXPECT_NE(base, sampleDimension(1, 10, 20, 30, 6));  // dimension
  // x/y swapped pixels are not correlated either.
  EXPECT_NE(sampleDimension(1, 3, 5, 0, 0), sampleDimension(1, 5, 3, 0, 0));
  // Values across many pixels are (almost) all distinct.
  std::set<float> values;
  for (uint32_t y = 0; y < 64; ++y)
    for (uint32_t x = 0; x < 64; ++x) values.insert(sampleDimension(9, x, y, 0, 0));
  EXPECT_GT(values.size(), 4000u);
}

TEST(SamplerTest, ValuesInHalfOpenUnitInterval) {
  EXPECT_LT(u32ToUnitFloat(0xffffffffu), 1.0f);
  EXPECT_EQ(u32ToUnitFloat(0u), 0.0f);
  for (uint32_t p = 0; p < 16; ++p)
    for (uint32_t s = 0; s < 256; ++s)
      for (uint32_t d = 0; d < 6; ++d) {
        const float v = sampleDimension(3, p, p * 7, s, d);
        ASSERT_GE(v, 0.0f);
        ASSERT_LT(v, 1.0f);
      }
}

TEST(SamplerTest, EachPairIsStratifiedOverPowerOfTwoPrefixes) {
  // Owen-scrambled Sobol (0,2)-sequences with a nested-uniform index shuffle: the first 2^k
  // samples of a pixel's pair hit each of the 2^k elementary intervals once in 1D, and for 2D
  // each cell of a 4x4 grid holds 1 of the first 16 points.
  for (uint32_t pixel = 0; pixel < 8; ++pixel)
    for (uint32_t pair = 0; pair < 4; ++pair) {
      const uint32_t key = pixelKey(42, pixel, 2 * pixel + 1);
      int cells[16] = {};
      int xStrata[16] = {}, yStrata[16] = {};
      for (uint32_t s = 0; s < 16; ++s) {
        uint32_t x, y;
        sobolOwen2D(key, s, pair, &x, &y);
        const float fx = u32ToUnitFloat(x), fy = u32ToUnitFloat(y);
        cells[int(fx * 4) + 4 * int(fy * 4)]++;
        xStrata[int(fx * 16)]++;
        yStrata[int(fy * 16)]++;
      }
      for (int i = 0; i < 16; ++i) {
        EXPECT_EQ(cells[i], 1) << "pixel " << pixel << " pair " << pair << " cell " << i;
        EXPECT_EQ(xStrata[i], 1);
        EXPECT_EQ(yStrata[i], 1);
      }
    }
}

TEST(SamplerTest, RoughlyUniformAcrossPixelsAndDimensions) {
  // Pairs are decorrelated across pixels: a histogram over many pixels is flat.
  constexpr int kBins = 10;
  int hist[kBins] = {};
  const int n = 100000;
  for (int i = 0; i < n; ++i) hist[int(sampleDimension(5, i % 317, i / 317, i % 3, 9) * kBins)]++;
  for (int b = 0; b < kBins; ++b) EXPECT_NEAR(hist[b], n / kBins, 5 * 100) << "bin " << b;
  // Two dimensions of different pairs are uncorrelated.
  double sxy = 0, sx = 0, sy = 0;
  for (uint32_t s = 0; s < 4096; ++s) {
    const double x = sampleDimension(5, 1, 2, s, 2), y = sampleDimension(5, 1, 2, s, 4);
    sxy += x * y;
    sx += x;
    sy += y;
  }
  const double cov = sxy / 4096 - (sx / 4096) * (sy / 4096);
  EXPECT_NEAR(cov, 0.0, 0.005);
}

TEST(SamplerTest, HashToUnitFloat) {
  EXPECT_EQ(hashToUnitFloat(1, 2, 3, 4, 5), hashToUnitFloat(1, 2, 3, 4, 5));
  EXPECT_NE(hashToUnitFloat(1, 2, 3, 4, 5), hashToUnitFloat(1, 2, 3, 5, 5));
  double sum = 0;
  for (uint32_t i = 0; i < 10000; ++i) {
    const float v = hashToUnitFloat(9, i, 0, 0, 0);
    ASSERT_GE(v, 0.0f);
    ASSERT_LT(v, 1.0f);
    sum += v;
  }
  EXPECT_NEAR(sum / 10000, 0.5, 0.01);
}

}  // namespace
}  // namespace pl::kernel
