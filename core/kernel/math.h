#pragma once
// Small vector math for the kernel. Plain structs, no constructors beyond aggregates, so that
// they stay trivially copyable and identical in memory on host and device.

#include <cmath>

#include "core/kernel/compat.h"

namespace pl::kernel {

struct Vec2f {
  float x, y;
};
struct Vec3f {
  float x, y, z;
};
struct Vec4f {
  float x, y, z, w;
};

PL_HOST_DEVICE PL_INLINE Vec2f vec2(float x, float y) { return {x, y}; }
PL_HOST_DEVICE PL_INLINE Vec3f vec3(float x, float y, float z) { return {x, y, z}; }
PL_HOST_DEVICE PL_INLINE Vec3f vec3(float v) { return {v, v, v}; }
PL_HOST_DEVICE PL_INLINE Vec3f xyz(Vec4f v) { return {v.x, v.y, v.z}; }

PL_HOST_DEVICE PL_INLINE Vec2f operator+(Vec2f a, Vec2f b) { return {a.x + b.x, a.y + b.y}; }
PL_HOST_DEVICE PL_INLINE Vec2f operator-(Vec2f a, Vec2f b) { return {a.x - b.x, a.y - b.y}; }
PL_HOST_DEVICE PL_INLINE Vec2f operator*(Vec2f a, float s) { return {a.x * s, a.y * s}; }
PL_HOST_DEVICE PL_INLINE Vec2f operator*(float s, Vec2f a) { return {a.x * s, a.y * s}; }

PL_HOST_DEVICE PL_INLINE Vec3f operator+(Vec3f a, Vec3f b) { return {a.x + b.x, a.y + b.y, a.z + b.z}; }
PL_HOST_DEVICE PL_INLINE Vec3f operator-(Vec3f a, Vec3f b) { return {a.x - b.x, a.y - b.y, a.z - b.z}; }
PL_HOST_DEVICE PL_INLINE Vec3f operator-(Vec3f a) { return {-a.x, -a.y, -a.z}; }
PL_HOST_DEVICE PL_INLINE Vec3f operator*(Vec3f a, Vec3f b) { return {a.x * b.x, a.y * b.y, a.z * b.z}; }
PL_HOST_DEVICE PL_INLINE Vec3f operator*(Vec3f a, float s) { return {a.x * s, a.y * s, a.z * s}; }
PL_HOST_DEVICE PL_INLINE Vec3f operator*(float s, Vec3f a) { return {a.x * s, a.y * s, a.z * s}; }
PL_HOST_DEVICE PL_INLINE Vec3f operator/(Vec3f a, float s) {
  float inv = 1.0f / s;
  return {a.x * inv, a.y * inv, a.z * inv};
}
PL_HOST_DEVICE PL_INLINE Vec3f operator/(Vec3f a, Vec3f b) { return {a.x / b.x, a.y / b.y, a.z / b.z}; }
PL_HOST_DEVICE PL_INLINE Vec3f& operator+=(Vec3f& a, Vec3f b) {
  a = a + b;
  return a;
}
PL_HOST_DEVICE PL_INLINE Vec3f& operator*=(Vec3f& a, Vec3f b) {
  a = a * b;
  return a;
}
PL_HOST_DEVICE PL_INLINE Vec3f& operator*=(Vec3f& a, float s) {
  a = a * s;
  return a;
}

PL_HOST_DEVICE PL_INLINE float dot(Vec3f a, Vec3f b) { return a.x * b.x + a.y * b.y + a.z * b.z; }
PL_HOST_DEVICE PL_INLINE Vec3f cross(Vec3f a, Vec3f b) {
  return {a.y * b.z - a.z * b.y, a.z * b.x - a.x * b.z, a.x * b.y - a.y * b.x};
}
PL_HOST_DEVICE PL_INLINE float length(Vec3f a) { return sqrtf(dot(a, a)); }
PL_HOST_DEVICE PL_INLINE float lengthSquared(Vec3f a) { return dot(a, a); }
PL_HOST_DEVICE PL_INLINE Vec3f normalize(Vec3f a) {
  float l = length(a);
  return l > 0.0f ? a * (1.0f / l) : a;
}
PL_HOST_DEVICE PL_INLINE float minf(float a, float b) { return a < b ? a : b; }
PL_HOST_DEVICE PL_INLINE float maxf(float a, float b) { return a > b ? a : b; }
PL_HOST_DEVICE PL_INLINE float clampf(float v, float lo, float hi) { return minf(maxf(v, lo), hi); }
PL_HOST_DEVICE PL_INLINE Vec3f min(Vec3f a, Vec3f b) { return {minf(a.x, b.x), minf(a.y, b.y), minf(a.z, b.z)}; }
PL_HOST_DEVICE PL_INLINE Vec3f max(Vec3f a, Vec3f b) { return {maxf(a.x, b.x), maxf(a.y, b.y), maxf(a.z, b.z)}; }
PL_HOST_DEVICE PL_INLINE float maxComponent(Vec3f a) { return maxf(a.x, maxf(a.y, a.z)); }
PL_HOST_DEVICE PL_INLINE float luminance(Vec3f c) { return 0.2126f * c.x + 0.7152f * c.y + 0.0722f * c.z; }
PL_HOST_DEVICE PL_INLINE Vec3f lerp(Vec3f a, Vec3f b, float t) { return a * (1.0f - t) + b * t; }
PL_HOST_DEVICE PL_INLINE bool isBlack(Vec3f c) { return c.x == 0.0f && c.y == 0.0f && c.z == 0.0f; }
PL_HOST_DEVICE PL_INLINE bool isFinite(Vec3f c) {
  // x - x is 0 for finite x and NaN for infinities and NaN (valid without fast-math).
  return (c.x - c.x) == 0.0f && (c.y - c.y) == 0.0f && (c.z - c.z) == 0.0f;
}
PL_HOST_DEVICE PL_INLINE float sqr(float x) { return x * x; }
PL_HOST_DEVICE PL_INLINE float safeSqrt(float x) { return sqrtf(maxf(x, 0.0f)); }

// Orthonormal basis around a unit normal n (Duff et al. 2017, "Building an Orthonormal Basis,
// Revisited"). local z is n.
struct Frame {
  Vec3f x, y, z;
};
PL_HOST_DEVICE PL_INLINE Frame frameFromNormal(Vec3f n) {
  float sign = copysignf(1.0f, n.z);
  float a = -1.0f / (sign + n.z);
  float b = n.x * n.y * a;
  Frame f;
  f.x = {1.0f + sign * n.x * n.x * a, sign * b, -sign * n.x};
  f.y = {b, sign + n.y * n.y * a, -n.y};
  f.z = n;
  return f;
}
PL_HOST_DEVICE PL_INLINE Vec3f toLocal(const Frame& f, Vec3f v) {
  return {dot(v, f.x), dot(v, f.y), dot(v, f.z)};
}
PL_HOST_DEVICE PL_INLINE Vec3f toWorld(const Frame& f, Vec3f v) {
  return f.x * v.x + f.y * v.y + f.z * v.z;
}

struct Ray {
  Vec3f origin;
  Vec3f direction;  // unit length
};

}  // namespace pl::kernel
