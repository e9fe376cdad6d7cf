#pragma once
// Exact, order-independent film accumulation (docs/DESIGN.md section 4). Each sample's
// radiance is converted to a 64-bit fixed-point integer on its own; integer sums are
// associative, so any split of a pixel's samples into work units, merged in any order, gives
// the same bits.

#include "core/kernel/math.h"

namespace pl::kernel {

// 2^24 steps per unit of radiance: resolution 6e-8, and room for 5e11 units of summed radiance
// in an int64 before overflow.
constexpr float kFixedScale = 16777216.0f;
constexpr double kFixedInvScale = 1.0 / 16777216.0;
// Per-sample clamp, only to keep the sums from overflowing (a sample brighter than this is
// a numerical accident, not light).
constexpr float kMaxSampleValue = 1.0e6f;

// Non-finite and negative values count as 0. Scaling by a power of two is exact and the
// float -> int conversion truncates, so the result is the same on every IEEE machine.
PL_HOST_DEVICE PL_INLINE int64_t toFixed(float v) {
  if (!(v > 0.0f)) return 0;  // also NaN
  if (v > kMaxSampleValue) v = kMaxSampleValue;
  return static_cast<int64_t>(v * kFixedScale);
}

}  // namespace pl::kernel
