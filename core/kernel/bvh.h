#pragma once
// The project's own BVH: a flat, pointer-free binary tree over RenderData::triangles, and a
// Tracer (scene_view.h) that traverses it. Used by the CUDA device (Embree serves the CPU);
// built on the host by core/render/bvh_builder.h.
//
// Layout: nodes[0] is the root. An interior node (count == 0) has its two children at
// nodes[first] and nodes[first + 1]. A leaf (count > 0) references primIndices[first ..
// first + count), each an index into RenderData::triangles. A tree is at most kBvhMaxDepth
// levels deep (root = depth 0 .. leaves <= kBvhMaxDepth - 1), which the builder guarantees
// and which bounds the traversal stack. An empty scene is a lone root with count 0 and
// first 0 (no interior node can have child 0, the root).
//
// Determinism: traversal and the triangle test use only IEEE +, -, *, / (no FMA contraction
// is allowed on either side: -ffp-contract=off on the host, --fmad=false under nvcc), so a
// given (tree, ray) gives the same hit on the CPU and the GPU.

#include "core/kernel/scene_view.h"

namespace pl::kernel {

// 32 bytes; two nodes fill one 64-byte line, and siblings are always adjacent.
struct BvhNode {
  Vec3f boundsMin;
  uint32_t first;  // interior: index of the left child; leaf: first entry in primIndices
  Vec3f boundsMax;
  uint32_t count;  // 0 for an interior node, else number of triangles in the leaf
};
static_assert(sizeof(BvhNode) == 32, "BvhNode must stay 32 bytes");

// Enough for every tree the builder makes (it forces balanced splits near this depth).
constexpr uint32_t kBvhMaxDepth = 64;

// Per-ray constants shared by the box and triangle tests.
struct BvhRay {
  Vec3f origin;
  Vec3f invDir;      // 1 / direction, with +-FLT_MAX in place of +-inf (no 0 * inf NaNs)
  uint32_t kx, ky, kz;  // watertight test: kz = dominant axis of the direction
  float sx, sy, sz;     // shear constants
};

PL_HOST_DEVICE PL_INLINE float bvhAxis(Vec3f v, uint32_t axis) {
  return axis == 0 ? v.x : (axis == 1 ? v.y : v.z);
}

PL_HOST_DEVICE PL_INLINE float bvhAbs(float x) { return x < 0.0f ? -x : x; }

PL_HOST_DEVICE PL_INLINE float bvhSafeInverse(float d) {
  if (d == 0.0f) return copysignf(kInfinity, d);
  float inv = 1.0f / d;
  // Denormal directions overflow to inf; clamp so that 0 * inv stays 0.
  return inv > kInfinity ? kInfinity : (inv < -kInfinity ? -kInfinity : inv);
}

PL_HOST_DEVICE PL_INLINE BvhRay makeBvhRay(const Ray& ray) {
  BvhRay r;
  r.origin = ray.origin;
  Vec3f d = ray.direction;
  r.invDir = {bvhSafeInverse(d.x), bvhSafeInverse(d.y), bvhSafeInverse(d.z)};
  float ax = bvhAbs(d.x), ay = bvhAbs(d.y), az = bvhAbs(d.z);
  uint32_t kz = (ax > ay) ? (ax > az ? 0u : 2u) : (ay > az ? 1u : 2u);
  uint32_t kx = kz == 2 ? 0u : kz + 1;
  uint32_t ky = kx == 2 ? 0u : kx + 1;
  float dz = bvhAxis(d, kz);
  if (dz < 0.0f) {  // keep the winding of the projected triangle
    uint32_t t = kx;
    kx = ky;
    ky = t;
  }
  r.kx = kx;
  r.ky = ky;
  r.kz = kz;
  r.sx = bvhAxis(d, kx) / dz;
  r.sy = bvhAxis(d, ky) / dz;
  r.sz = 1.0f / dz;
  return r;
}

// Slab test. Returns the entry distance, or kInfinity when the box is missed within
// [tMin, tMax]. tFar is widened by 1 + 2 * gamma(3) (Ize 2013) so that rounding never loses
// a box that a triangle inside it would hit.
PL_HOST_DEVICE PL_INLINE float intersectBox(const BvhRay& r, Vec3f bmin, Vec3f bmax, float tMin,
                                            float tMax) {
  float tx0 = (bmin.x - r.origin.x) * r.invDir.x;
  float tx1 = (bmax.x - r.origin.x) * r.invDir.x;
  float ty0 = (bmin.y - r.origin.y) * r.invDir.y;
  float ty1 = (bmax.y - r.origin.y) * r.invDir.y;
  float tz0 = (bmin.z - r.origin.z) * r.invDir.z;
  float tz1 = (bmax.z - r.origin.z) * r.invDir.z;
  float tNear = maxf(maxf(minf(tx0, tx1), minf(ty0, ty1)), maxf(minf(tz0, tz1), tMin));
  float tFar = minf(minf(maxf(tx0, tx1), maxf(ty0, ty1)), minf(maxf(tz0, tz1), tMax));
  tFar *= 1.00000072f;  // >= 1 + 2 * gamma(3)
  return tNear <= tFar ? tNear : kInfinity;
}

// Watertight ray-triangle test (Woop, Benthin, Wald 2013), both faces. On a hit with
// tMin < t < tMax, writes t and the barycentrics (u, v) of p1 and p2 and returns true.
PL_HOST_DEVICE PL_INLINE bool intersectTriangle(const BvhRay& r, Vec3f p0, Vec3f p1, Vec3f p2,
                                                float tMin, float tMax, float* tOut,
                                                float* uOut, float* vOut) {
  Vec3f a = p0 - r.origin, b = p1 - r.origin, c = p2 - r.origin;
  float az = bvhAxis(a, r.kz), bz = bvhAxis(b, r.kz), cz = bvhAxis(c, r.kz);
  float ax = bvhAxis(a, r.kx) - r.sx * az, ay = bvhAxis(a, r.ky) - r.sy * az;
  float bx = bvhAxis(b, r.kx) - r.sx * bz, by = bvhAxis(b, r.ky) - r.sy * bz;
  float cx = bvhAxis(c, r.kx) - r.sx * cz, cy = bvhAxis(c, r.ky) - r.sy * cz;
  float e0 = cx * by - cy * bx;  // weight of p0
  float e1 = ax * cy - ay * cx;  // weight of p1
  float e2 = bx * ay - by * ax;  // weight of p2
  if (e0 == 0.0f || e1 == 0.0f || e2 == 0.0f) {
    // On an edge in single precision: decide in double, so neighbours agree (watertight).
    e0 = float(double(cx) * double(by) - double(cy) * double(bx));
    e1 = float(double(ax) * double(cy) - double(ay) * double(cx));
    e2 = float(double(bx) * double(ay) - double(by) * double(ax));
  }
  if ((e0 < 0.0f || e1 < 0.0f || e2 < 0.0f) && (e0 > 0.0f || e1 > 0.0f || e2 > 0.0f))
    return false;
  float det = e0 + e1 + e2;
  if (det == 0.0f) return false;
  float tScaled = (e0 * az + e1 * bz + e2 * cz) * r.sz;
  float invDet = 1.0f / det;
  float t = tScaled * invDet;
  if (!(t > tMin && t < tMax)) return false;  // also rejects NaN
  *tOut = t;
  *uOut = e1 * invDet;
  *vOut = e2 * invDet;
  return true;
}

// The Tracer over a BvhNode tree. Non-owning, trivially copyable; all pointers refer to the
// same memory space (host for tests, device for the CUDA device). Triangles are
// RenderData::triangles and positions RenderData::positions, unchanged: Hit.prim is an index
// into triangles.
struct BvhTracer {
  const BvhNode* nodes;
  const uint32_t* primIndices;
  const Vec3f* positions;
  const Triangle* triangles;

  // Closest hit with tMin < t < tMax; prim == kNoHit on a miss.
  PL_HOST_DEVICE Hit intersect(const Ray& ray, float tMin, float tMax) const {
    return traverse<false>(ray, tMin, tMax);
  }
  // Any hit with tMin < t < tMax.
  PL_HOST_DEVICE bool occluded(const Ray& ray, float tMin, float tMax) const {
    return traverse<true>(ray, tMin, tMax).prim != kNoHit;
  }
  // Alpha masks block like any surface: the integrator walks through them.
  PL_HOST_DEVICE bool occludedSeesMasks() const { return false; }

  template <bool kAnyHit>
  PL_HOST_DEVICE Hit traverse(const Ray& ray, float tMin, float tMax) const {
    Hit hit;
    hit.t = tMax;
    hit.prim = kNoHit;
    hit.u = 0.0f;
    hit.v = 0.0f;
    BvhRay r = makeBvhRay(ray);
    // Far children waiting to be visited, with their entry distances, so that a closer hit
    // found meanwhile culls them without another box test.
    uint32_t stackNode[kBvhMaxDepth];
    float stackT[kBvhMaxDepth];
    uint32_t stackSize = 0;
    uint32_t node = 0;
    if (nodes[0].count == 0 && nodes[0].first == 0) return hit;  // empty tree
    if (intersectBox(r, nodes[0].boundsMin, nodes[0].boundsMax, tMin, hit.t) == kInfinity)
      return hit;
    for (;;) {
      const BvhNode n = nodes[node];
      if (n.count > 0) {
        for (uint32_t i = 0; i < n.count; ++i) {
          uint32_t prim = primIndices[n.first + i];
          Triangle tri = triangles[prim];
          float t, u, v;
          if (intersectTriangle(r, positions[tri.v0], positions[tri.v1], positions[tri.v2],
                                tMin, hit.t, &t, &u, &v)) {
            hit.t = t;
            hit.prim = prim;
            hit.u = u;
            hit.v = v;
            if (kAnyHit) return hit;
          }
        }
      } else {
        const BvhNode& left = nodes[n.first];
        const BvhNode& right = nodes[n.first + 1];
        float tl = intersectBox(r, left.boundsMin, left.boundsMax, tMin, hit.t);
        float tr = intersectBox(r, right.boundsMin, right.boundsMax, tMin, hit.t);
        bool hitL = tl != kInfinity, hitR = tr != kInfinity;
        if (hitL && hitR) {
          // Near child first; the far one waits on the stack.
          bool leftFirst = tl <= tr;
          stackNode[stackSize] = leftFirst ? n.first + 1 : n.first;
          stackT[stackSize] = leftFirst ? tr : tl;
          ++stackSize;
          node = leftFirst ? n.first : n.first + 1;
          continue;
        }
        if (hitL || hitR) {
          node = hitL ? n.first : n.first + 1;
          continue;
        }
      }
      // Pop the next far child that may still hold a closer hit.
      bool found = false;
      while (stackSize > 0) {
        --stackSize;
        if (stackT[stackSize] <= hit.t) {
          node = stackNode[stackSize];
          found = true;
          break;
        }
      }
      if (!found) break;
    }
    return hit;
  }
};

}  // namespace pl::kernel
