#pragma once
// Deterministic random numbers for the path tracer: every value is a pure function of
// (scene seed, pixel, sample index, dimension), computed with 32-bit integer operations only,
// so that the CPU and the GPU produce the same bits (docs/DESIGN.md section 4).
//
// The sequence is Owen-scrambled Sobol in 2D pairs with a hashed, nested-uniform index shuffle
// per (pixel, dimension pair), after Burley 2020, "Practical Hash-based Owen Scrambling".
// Dimension pair k of a pixel is an independently scrambled and shuffled (0,2)-sequence, so
// each pair is well stratified over the samples of a pixel and pairs are decorrelated from
// each other ("padding"). Conversion to float keeps the top 24 bits: values lie in [0, 1)
// and are never 1.0.

#include "core/kernel/math.h"

namespace pl::kernel {

// A 32-bit integer hash with good avalanche (Wellons' "lowbias32").
PL_HOST_DEVICE PL_INLINE uint32_t hashU32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

// Order-dependent combination of a running hash with one more word.
PL_HOST_DEVICE PL_INLINE uint32_t hashCombine(uint32_t h, uint32_t v) {
  return hashU32(h ^ (v + 0x9e3779b9u + (h << 6) + (h >> 2)));
}

PL_HOST_DEVICE PL_INLINE uint32_t hash3(uint32_t a, uint32_t b, uint32_t c) {
  return hashCombine(hashCombine(hashU32(a), b), c);
}

// [0, 1) from the top 24 bits: exact conversion, never 1.0.
PL_HOST_DEVICE PL_INLINE float u32ToUnitFloat(uint32_t x) {
  return static_cast<float>(x >> 8) * (1.0f / 16777216.0f);
}

PL_HOST_DEVICE PL_INLINE uint32_t reverseBits32(uint32_t x) {
#if PL_GPU_CODE
  return __brev(x);
#else
  x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
  x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
  x = ((x >> 4) & 0x0f0f0f0fu) | ((x & 0x0f0f0f0fu) << 4);
  x = ((x >> 8) & 0x00ff00ffu) | ((x & 0x00ff00ffu) << 8);
  return (x >> 16) | (x << 16);
#endif
}

// Laine-Karras style permutation: each bit is flipped depending only on lower bits, which,
// applied to bit-reversed values, is a nested uniform (Owen) scramble. Constants from Burley
// 2020's improved hash.
PL_HOST_DEVICE PL_INLINE uint32_t laineKarrasPermutation(uint32_t x, uint32_t seed) {
  x += seed;
  x ^= x * 0x6c50b47cu;
  x ^= x * 0xb82f1e52u;
  x ^= x * 0xc7afe638u;
  x ^= x * 0x8d22f6e6u;
  return x;
}

// Owen scramble of a 0.32 fixed-point value (its most significant bit is the first base-2
// digit).
PL_HOST_DEVICE PL_INLINE uint32_t nestedUniformScramble(uint32_t x, uint32_t seed) {
  return reverseBits32(laineKarrasPermutation(reverseBits32(x), seed));
}

// The first two Sobol dimensions as 0.32 fixed point: van der Corput, and the dimension with
// primitive polynomial x + 1 (direction numbers v_1 = 2^31, v_{i+1} = v_i ^ (v_i >> 1)).
// Index bit k contributes bit 31 - m of dimension 1 exactly when C(k, m) is odd, that is
// (Lucas) when the bits of m are a subset of those of k. So bit m of the bit-reversed result
// is the XOR of the index bits over all supersets of m: a superset-sum transform over the
// 5-bit lattice, five shift-and-mask steps instead of a loop over the index bits.
PL_HOST_DEVICE PL_INLINE uint32_t supersetXor(uint32_t x) {
  x ^= (x >> 1) & 0x55555555u;
  x ^= (x >> 2) & 0x33333333u;
  x ^= (x >> 4) & 0x0f0f0f0fu;
  x ^= (x >> 8) & 0x00ff00ffu;
  x ^= (x >> 16) & 0x0000ffffu;
  return x;
}
PL_HOST_DEVICE PL_INLINE uint32_t sobolDim0(uint32_t index) { return reverseBits32(index); }
PL_HOST_DEVICE PL_INLINE uint32_t sobolDim1(uint32_t index) {
  return reverseBits32(supersetXor(index));
}

// Per-pixel key: the scene seed and the pixel, hashed.
PL_HOST_DEVICE PL_INLINE uint32_t pixelKey(uint32_t seed, uint32_t px, uint32_t py) {
  return hash3(seed, px, py);
}

// Dimension pair `pair` of the pixel with key `key`: its key and its shuffled Sobol index for
// sample `sampleIndex`.
struct SobolPair {
  uint32_t key;
  uint32_t index;
};
PL_HOST_DEVICE PL_INLINE SobolPair sobolPair(uint32_t key, uint32_t sampleIndex, uint32_t pair) {
  const uint32_t pairKey = hashCombine(key, pair);
  return {pairKey, nestedUniformScramble(sampleIndex, pairKey)};
}
// The pair's two values as 0.32 fixed point: nestedUniformScramble(sobolDimN(index), seed),
// with the bit reversals that cancel out removed (sobolDim0 = reverse(index), sobolDim1 =
// reverse(supersetXor(index))).
PL_HOST_DEVICE PL_INLINE uint32_t sobolOwenX(SobolPair p) {
  return reverseBits32(laineKarrasPermutation(p.index, hashCombine(p.key, 0x68bc21ebu)));
}
PL_HOST_DEVICE PL_INLINE uint32_t sobolOwenY(SobolPair p) {
  return reverseBits32(
      laineKarrasPermutation(supersetXor(p.index), hashCombine(p.key, 0x02e5be93u)));
}

// Sample `sampleIndex` of dimension pair `pair` for the pixel with key `key`, as two 0.32
// fixed-point integers.
PL_HOST_DEVICE PL_INLINE void sobolOwen2D(uint32_t key, uint32_t sampleIndex, uint32_t pair,
                                          uint32_t* x, uint32_t* y) {
  const SobolPair p = sobolPair(key, sampleIndex, pair);
  *x = sobolOwenX(p);
  *y = sobolOwenY(p);
}

// The value of one dimension (pairs are dimensions 2k and 2k+1), as a pure function.
PL_HOST_DEVICE PL_INLINE float sampleDimension(uint32_t seed, uint32_t px, uint32_t py,
                                               uint32_t sampleIndex, uint32_t dimension) {
  uint32_t x, y;
  sobolOwen2D(pixelKey(seed, px, py), sampleIndex, dimension >> 1, &x, &y);
  return u32ToUnitFloat((dimension & 1u) ? y : x);
}

// A cursor over the dimensions of one sample of one pixel. Dimensions are consumed in pairs:
// get2D() takes the next pair, get1D() takes the first value of the next pair (the second is
// wasted, which keeps every 1D value as well stratified as a 2D one). Trivially copyable and
// cheap: the state is three words.
struct Sampler {
  uint32_t key;
  uint32_t sampleIndex;
  uint32_t pair;

  PL_HOST_DEVICE PL_INLINE Vec2f get2D();
  PL_HOST_DEVICE PL_INLINE float get1D();
};

PL_HOST_DEVICE PL_INLINE Sampler makeSampler(uint32_t seed, uint32_t px, uint32_t py,
                                             uint32_t sampleIndex) {
  return Sampler{pixelKey(seed, px, py), sampleIndex, 0};
}

PL_HOST_DEVICE PL_INLINE Vec2f Sampler::get2D() {
  uint32_t x, y;
  sobolOwen2D(key, sampleIndex, pair++, &x, &y);
  return {u32ToUnitFloat(x), u32ToUnitFloat(y)};
}

PL_HOST_DEVICE PL_INLINE float Sampler::get1D() {
  return u32ToUnitFloat(sobolOwenX(sobolPair(key, sampleIndex, pair++)));
}

// A one-off random number from a hash of several words (for decisions that must not consume
// sampler dimensions, such as stochastic transparency at the n-th surface hit).
PL_HOST_DEVICE PL_INLINE float hashToUnitFloat(uint32_t a, uint32_t b, uint32_t c, uint32_t d,
                                               uint32_t e) {
  return u32ToUnitFloat(hashCombine(hashCombine(hash3(a, b, c), d), e));
}

}  // namespace pl::kernel
