#pragma once
// The path tracer: unidirectional path tracing with next-event estimation and multiple
// importance sampling over emissive triangles, punctual lights and the environment. Shared by
// the CPU and GPU devices; templated on the Tracer (see scene_view.h).
//
//   template <class Tracer>
//   PL_HOST_DEVICE Vec3f samplePixel(const SceneView& scene, const Tracer& tracer,
//                                    uint32_t px, uint32_t py, uint32_t sampleIndex,
//                                    uint32_t* raysTraced);
//
// returns the radiance estimate of sample `sampleIndex` of pixel (px, py) (camera ray through
// a 1-pixel box filter). The result depends only on (scene, px, py, sampleIndex): the random
// numbers are a pure function of (globals.seed, pixel, sampleIndex, dimension).
// *raysTraced is incremented by the number of rays cast (for Mrays/s statistics). A sample
// whose estimate is not finite returns 0 (black) rather than poisoning the pixel.
//
//   template <class Tracer>
//   PL_HOST_DEVICE void renderPixel(const SceneView& scene, const Tracer& tracer,
//                                   uint32_t px, uint32_t py, uint32_t sampleBegin,
//                                   uint32_t sampleEnd, int64_t* sums, uint32_t* raysTraced);
//
// adds toFixed() of each sample's R, G, B to sums (fixed_point.h), and of its passes when the
// image asks for them (Camera::passes): filmChannels() sums in all (types.h).
//
// Path length: globals.maxDepth is the maximum number of scattering events on a path.
// 0 shows only what the camera sees directly (emitters, environment), 1 is direct lighting,
// and so on; Blender Cycles' "max bounces = N" corresponds to maxDepth = N + 1.
//
// Alpha: MASK surfaces below the cutoff and BLEND surfaces (stochastically, with probability
// 1 - alpha from a hash of (seed, pixel, sample, bounce, hit count)) are passed through by
// camera and bounce rays. Shadow rays, when globals.hasAlpha, walk through cut-out surfaces
// with a loop of intersect() calls and are attenuated by (1 - alpha) at BLEND surfaces; a
// Tracer whose occluded() sees masks (scene_view.h) answers them with one query instead
// (which, unlike the walk, passes more than kMaxPassThrough cut-outs).
//
// Transmission (material.h, bsdf.h): a path that refracts into a volume boundary takes the
// material's absorption coefficient with it and is attenuated by Beer-Lambert along every
// segment until it refracts out again (one volume at a time; a path that leaves the scene
// from inside a volume is absorbed). Shadow rays stop at transmissive surfaces (no caustics
// by next-event estimation), and next-event estimation does not look through a volume
// boundary, so emitters reached by refraction count in full (no MIS weight).
//
// Random dimensions: pair 0 is the position in the pixel; each bounce then takes 4 pairs
// (light selection + Russian roulette, light position, BSDF direction, BSDF lobe), always,
// whatever branch is taken, so that dimension k means the same thing across samples.

#include "core/kernel/camera.h"
#include "core/kernel/fixed_point.h"
#include "core/kernel/lights.h"
#include "core/kernel/material.h"
#include "core/kernel/sampler.h"
#include "core/kernel/scene_view.h"
#include "core/kernel/surface.h"

namespace pl::kernel {

constexpr uint32_t kMaxPassThrough = 64;   // alpha-cut surfaces one ray may cross
constexpr uint32_t kRussianRouletteDepth = 3;

PL_HOST_DEVICE PL_INLINE float powerHeuristic(float pdfA, float pdfB) {
  const float a = pdfA * pdfA, b = pdfB * pdfB;
  if (!(a + b > 0.0f)) return 0.0f;
  // Very large pdfs (near-specular lobes) would overflow the squares.
  if (a > 1.0e30f || b > 1.0e30f) return pdfA >= pdfB ? 1.0f : 0.0f;
  return a / (a + b);
}

enum class TraceResult { kHit, kMiss, kAbsorbed };

// Transmittance of a homogeneous absorbing volume over a distance.
PL_HOST_DEVICE PL_INLINE Vec3f beerLambert(Vec3f sigma, float distance) {
  return vec3(expf(-sigma.x * distance), expf(-sigma.y * distance), expf(-sigma.z * distance));
}

// Finds the first surface along `ray` that stops it, passing through alpha cut-outs.
template <class Tracer>
PL_HOST_DEVICE PL_INLINE TraceResult traceSurface(const SceneView& scene, const Tracer& tracer,
                                                  Ray ray, uint32_t key, uint32_t sampleIndex,
                                                  uint32_t depth, Hit* hit, SurfacePoint* sp,
                                                  uint32_t* raysTraced) {
  for (uint32_t crossing = 0; crossing < kMaxPassThrough; ++crossing) {
    *hit = tracer.intersect(ray, 0.0f, kInfinity);
    ++*raysTraced;
    if (hit->prim == kNoHit) return TraceResult::kMiss;
    *sp = surfaceAt(scene, hit->prim, hit->u, hit->v);
    const Material& m = scene.materials[sp->material];
    if (m.alphaMode == kAlphaOpaque) return TraceResult::kHit;
    const float coverage = materialCoverage(scene, m, sp->uv);
    if (m.alphaMode == kAlphaMask) {
      if (coverage > 0.0f) return TraceResult::kHit;
    } else if (coverage >= 1.0f ||
               hashToUnitFloat(key, sampleIndex, depth, crossing, 0x5a17b1e7u) < coverage) {
      return TraceResult::kHit;
    }
    ray.origin = offsetRayOrigin(sp->p, dot(ray.direction, sp->ng) > 0.0f ? sp->ng : -sp->ng);
  }
  return TraceResult::kAbsorbed;
}

// Transmittance from `origin` to the light sample (1 unoccluded, 0 blocked, in between
// through BLEND surfaces).
template <class Tracer>
PL_HOST_DEVICE PL_INLINE Vec3f shadowTransmittance(const SceneView& scene, const Tracer& tracer,
                                                   Vec3f origin, const LightSample& ls,
                                                   uint32_t* raysTraced) {
  Ray ray;
  ray.origin = origin;
  float tMax = kInfinity;
  if (ls.distant) {
    ray.direction = ls.wi;
  } else {
    const Vec3f d = ls.target - origin;
    tMax = length(d);
    if (!(tMax > 0.0f)) return vec3(0.0f);
    ray.direction = d * (1.0f / tMax);
  }
  if (!scene.global().hasAlpha || tracer.occludedSeesMasks()) {
    ++*raysTraced;
    return tracer.occluded(ray, 0.0f, tMax) ? vec3(0.0f) : vec3(1.0f);
  }
  float transmittance = 1.0f;
  for (uint32_t crossing = 0; crossing < kMaxPassThrough; ++crossing) {
    const Hit hit = tracer.intersect(ray, 0.0f, tMax);
    ++*raysTraced;
    if (hit.prim == kNoHit) return vec3(transmittance);
    // Most blockers are opaque: their material says so without the surface point.
    const Material& m = scene.materials[scene.triangles[hit.prim].material];
    if (m.alphaMode == kAlphaOpaque) return vec3(0.0f);
    const SurfacePoint s =
        surfaceAt<SurfaceParts::kNoShadingFrame>(scene, hit.prim, hit.u, hit.v);
    const float coverage = materialCoverage(scene, m, s.uv);
    transmittance *= 1.0f - coverage;
    if (!(transmittance > 0.0f)) return vec3(0.0f);
    ray.origin = offsetRayOrigin(s.p, dot(ray.direction, s.ng) > 0.0f ? s.ng : -s.ng);
    if (!ls.distant) {
      tMax = dot(ls.target - ray.origin, ray.direction);
      if (!(tMax > 0.0f)) return vec3(transmittance);
    }
  }
  return vec3(0.0f);
}

// What the camera ray's first surface gives the film's passes (types.h, filmChannels()).
struct SurfacePasses {
  Vec3f albedo = {0.0f, 0.0f, 0.0f};
  Vec3f normal = {0.0f, 0.0f, 0.0f};  // unit, world space; 0 where the camera sees nothing
  float depth = kMissDepth;
};

template <class Tracer>
PL_HOST_DEVICE Vec3f samplePixel(const SceneView& scene, const Tracer& tracer, uint32_t px,
                                 uint32_t py, uint32_t sampleIndex, uint32_t* raysTraced,
                                 SurfacePasses* passes = nullptr) {
  const SceneGlobals& g = scene.global();
  Sampler sampler = makeSampler(g.seed, px, py, sampleIndex);
  const Vec2f pixel = sampler.get2D();
  Ray ray = generateCameraRay(scene.cam(), static_cast<float>(px) + pixel.x,
                              static_cast<float>(py) + pixel.y);
  const LightSelection selection = lightSelection(scene);

  Vec3f radiance = vec3(0.0f);
  Vec3f beta = vec3(1.0f);
  float prevBsdfPdf = 0.0f;
  bool prevFromCamera = true;  // emission is seen without MIS
  bool prevLightSampled = true;  // next-event estimation could have sampled the last bounce
  Vec3f prevP = ray.origin;
  Vec3f sigma = vec3(0.0f);  // absorption coefficient of the volume the path is in

  for (uint32_t depth = 0;; ++depth) {
    Hit hit;
    SurfacePoint sp;
    const Vec3f segmentStart = ray.origin;
    const TraceResult tr =
        traceSurface(scene, tracer, ray, sampler.key, sampleIndex, depth, &hit, &sp, raysTraced);
    if (tr == TraceResult::kAbsorbed) break;
    if (tr == TraceResult::kMiss) {
      if (!isBlack(sigma)) break;  // an open volume absorbs everything on the way out
      const Vec3f le = envRadiance(scene, ray.direction, prevFromCamera);
      float w = 1.0f;
      if (!prevFromCamera && prevLightSampled && selection.pEnv > 0.0f)
        w = powerHeuristic(prevBsdfPdf, selection.pEnv * envDirectionPdf(scene, ray.direction));
      radiance += beta * le * w;
      break;
    }
    if (!isBlack(sigma)) beta *= beerLambert(sigma, length(sp.p - segmentStart));

    const Material& m = scene.materials[sp.material];
    const Vec3f wo = -ray.direction;
    const bool front = dot(sp.ng, wo) > 0.0f;
    const Vec3f ng = front ? sp.ng : -sp.ng;

    // Emission from the surface hit.
    const Vec3f le = emittedRadiance(scene, m, sp, wo);
    if (!isBlack(le)) {
      float w = 1.0f;
      if (!prevFromCamera && prevLightSampled && selection.pEmissive > 0.0f) {
        const float pTri = emissiveTriangleProbability(scene, hit.prim);
        const float lightPdf =
            selection.pEmissive * emissiveSolidAnglePdf(pTri, sp.area, prevP, sp.p, sp.ng);
        w = powerHeuristic(prevBsdfPdf, lightPdf);
      }
      radiance += beta * le * w;
    }
    const bool firstSurfacePasses = depth == 0 && passes != nullptr;  // also at maxDepth 0
    if (depth >= g.maxDepth && !firstSurfacePasses) break;
    const GltfBsdf bsdf = materialBsdf(scene, m, sp, front, ng, wo);
    if (firstSurfacePasses) {
      passes->albedo = bsdf.baseColor;
      passes->normal = bsdf.frame.z;
      passes->depth = dot(sp.p - scene.cam().position, scene.cam().forward);
    }
    if (depth >= g.maxDepth) break;
    const bool volume = isVolumeBoundary(m);
    const GltfWo atWo = gltfWo(bsdf, wo);  // shared by the light sample and the BSDF sample

    const Vec2f uSelectRr = sampler.get2D();
    const Vec2f uLight = sampler.get2D();
    const Vec2f uBsdf = sampler.get2D();
    const float uLobe = sampler.get1D();

    // Next-event estimation. Not through a volume boundary: the light would be seen through
    // a refracting surface, which a straight shadow ray cannot follow.
    LightSample ls;
    if (sampleLight(scene, selection, sp.p, uSelectRr.x, uLight, &ls)) {
      const bool through = !(dot(ls.wi, ng) > 0.0f);
      float bsdfPdf;
      const Vec3f f = through && volume ? vec3(0.0f) : evalGltfBsdf(bsdf, atWo, ls.wi, &bsdfPdf);
      if (!isBlack(f)) {
        const Vec3f origin = offsetRayOrigin(sp.p, through ? -ng : ng);
        Vec3f tr = shadowTransmittance(scene, tracer, origin, ls, raysTraced);
        if (!isBlack(sigma) && !isBlack(tr))
          tr = ls.distant ? vec3(0.0f) : tr * beerLambert(sigma, length(ls.target - sp.p));
        if (!isBlack(tr)) {
          const float w = ls.delta ? 1.0f : powerHeuristic(ls.pdf, bsdfPdf);
          radiance += beta * f * ls.radiance * tr * (w / ls.pdf);
        }
      }
    }

    // Continue the path.
    BsdfSample bs;
    if (!sampleGltfBsdf(bsdf, atWo, uLobe, uBsdf, &bs)) break;
    beta *= bs.weight;
    if (depth + 1 >= kRussianRouletteDepth) {
      const float survive = minf(1.0f, maxComponent(beta));
      if (!(uSelectRr.y < survive)) break;
      beta *= 1.0f / survive;
    }
    if (!isFinite(beta)) break;
    const bool crossedVolume = bs.transmitted && volume;
    if (crossedVolume) sigma = front ? volumeAbsorption(m) : vec3(0.0f);
    prevBsdfPdf = bs.pdf;
    prevFromCamera = false;
    prevLightSampled = !crossedVolume;
    prevP = sp.p;
    ray.origin = offsetRayOrigin(sp.p, bs.transmitted ? -ng : ng);
    ray.direction = bs.wi;
  }
  if (!isFinite(radiance)) return vec3(0.0f);
  return max(radiance, vec3(0.0f));
}

template <class Tracer>
PL_HOST_DEVICE void renderPixel(const SceneView& scene, const Tracer& tracer, uint32_t px,
                                uint32_t py, uint32_t sampleBegin, uint32_t sampleEnd,
                                int64_t* sums, uint32_t* raysTraced) {
  const bool withPasses = scene.cam().passes != 0;
  for (uint32_t s = sampleBegin; s < sampleEnd; ++s) {
    SurfacePasses p;
    const Vec3f c = samplePixel(scene, tracer, px, py, s, raysTraced, withPasses ? &p : nullptr);
    sums[0] += toFixed(c.x);
    sums[1] += toFixed(c.y);
    sums[2] += toFixed(c.z);
    if (withPasses) {
      sums[3] += toFixed(p.albedo.x);
      sums[4] += toFixed(p.albedo.y);
      sums[5] += toFixed(p.albedo.z);
      sums[6] += toFixed(0.5f * (p.normal.x + 1.0f));
      sums[7] += toFixed(0.5f * (p.normal.y + 1.0f));
      sums[8] += toFixed(0.5f * (p.normal.z + 1.0f));
      sums[9] += toFixed(p.depth);
    }
  }
}

}  // namespace pl::kernel
