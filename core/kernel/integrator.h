#pragma once
// The path tracer: unidirectional path tracing with next-event estimation and multiple
// importance sampling over emissive triangles, punctual lights and the environment. Shared by
// the CPU and GPU devices; templated on the Tracer (see scene_view.h).
//
// OWNER: kernel work (to be implemented). Contract:
//
//   template <class Tracer>
//   PL_HOST_DEVICE Vec3f samplePixel(const SceneView& scene, const Tracer& tracer,
//                                    uint32_t px, uint32_t py, uint32_t sampleIndex,
//                                    uint32_t* raysTraced);
//
// returns the radiance estimate of sample `sampleIndex` of pixel (px, py) (camera ray through
// a 1-pixel box filter). The result depends only on (scene, px, py, sampleIndex): the random
// numbers are a pure function of (globals.seed, pixel, sampleIndex, dimension).
// *raysTraced is incremented by the number of rays cast (for Mrays/s statistics).
//
//   template <class Tracer>
//   PL_HOST_DEVICE void renderPixel(const SceneView& scene, const Tracer& tracer,
//                                   uint32_t px, uint32_t py, uint32_t sampleBegin,
//                                   uint32_t sampleEnd, int64_t sums[3], uint32_t* raysTraced);
//
// adds toFixed() of each sample's R, G, B to sums (fixed_point.h).

#include "core/kernel/fixed_point.h"
#include "core/kernel/scene_view.h"
