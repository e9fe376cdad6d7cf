#pragma once
// The only file in core/kernel that knows about CUDA. Kernel code is header-only and made of
// PL_HOST_DEVICE inline functions over trivially copyable structs: no heap, exceptions,
// virtuals or standard containers, so that both the host compiler and nvcc compile it.

#include <cstdint>

#if defined(__CUDACC__)
#define PL_HOST_DEVICE __host__ __device__
#define PL_INLINE __forceinline__
#else
#define PL_HOST_DEVICE
#define PL_INLINE inline
#endif

#if defined(__CUDA_ARCH__)
#define PL_GPU_CODE 1
#else
#define PL_GPU_CODE 0
#endif

namespace pl::kernel {

constexpr float kPi = 3.14159265358979323846f;
constexpr float kInvPi = 0.31830988618379067154f;
constexpr float kInfinity = 3.402823466e+38f;  // FLT_MAX; used as "no hit yet"

// Bit casts that work on both sides.
PL_HOST_DEVICE PL_INLINE uint32_t floatBits(float f) {
#if PL_GPU_CODE
  return __float_as_uint(f);
#else
  uint32_t u;
  __builtin_memcpy(&u, &f, 4);
  return u;
#endif
}
PL_HOST_DEVICE PL_INLINE float bitsFloat(uint32_t u) {
#if PL_GPU_CODE
  return __uint_as_float(u);
#else
  float f;
  __builtin_memcpy(&f, &u, 4);
  return f;
#endif
}

}  // namespace pl::kernel
