#pragma once
// The glTF 2.0 metallic-roughness BRDF (glTF 2.0 specification, appendix B):
//
//   specular    = D(h) * V(wo, wi)              Trowbridge-Reitz (GGX) D, alpha = roughness^2,
//                                               height-correlated Smith visibility V
//   dielectric  = fresnel_mix: (1 - Fd) * baseColor / pi + Fd * specular,
//                 Fd = exact dielectric Fresnel(ior, |n.wo|)
//   metal       = Fm * specular, Fm = Schlick(f0 = baseColor, |wo.h|)
//   f           = mix(dielectric, metal, metallic)
//
// Two deliberate deviations from appendix B:
// - The dielectric's Fresnel weight is taken at the shading normal (|n.wo|), not at the
//   microfacet half-vector (|wo.h|). With |wo.h| the mix is not energy conserving: a white
//   dielectric of roughness 0.3 reflects 1.29 times what it receives at cos 0.1, because the
//   diffuse weight (1 - F) then varies with wi. With |n.wo| the mix is a convex combination
//   of two lobes, each at most 1, and it is what Blender's glTF node setup (and so the Cycles
//   references in tests) computes, with the exact Fresnel equations rather than Schlick's
//   approximation (the weight no longer depends on wi, so the exact form costs one evaluation
//   per shading point). On the Cornell box the |wo.h| form differed from Cycles by
//   5.6% relative RMS over 16x16 blocks, against 2-3% with this one.
// - ior == 1 (an index-matched interface) has no specular layer at all, as exact Fresnel
//   says, instead of Schlick's spurious grazing reflection (Blender's Principled BSDF agrees).
//   It also gives an exactly white Lambertian for furnace tests.
//
// The KHR_materials_* layers (each off unless the material sets it), outermost first:
//
//   clearcoat = C * GGX(coat normal, coatAlpha) + (1 - C) * below, C = clearcoat * F(1.5, n_c.wo)
//   sheen     = sheenColor * Charlie D * Neubelt V + s * below,
//               s = min(1 - max(sheenColor) E(wo), 1 - max(sheenColor) E(wi)), E the sheen
//               lobe's directional albedo (a table the host computes: fillSheenAlbedoTable())
//   base      = mix(dielectric, metal, metallic) as above, where the dielectric's part under
//               the specular layer is (1 - T) * diffuse + T * baseColor * btdf
//   specular  (KHR_materials_specular) scales and tints the dielectric Fresnel weight:
//               F = specular * (f0 + (1 - f0) * S), f0 = min(F0(ior) * specularColor, 1), S the
//               exact Fresnel curve rescaled to run from 0 to 1; the part under it is weighted
//               by 1 - max(F), as the specification's "1 - specular * max(F)".
//
// Transmission (KHR_materials_transmission): a thin-walled surface (no KHR_materials_volume,
// or thickness 0) passes light straight through, blurred by the specular GGX lobe mirrored
// below the surface. A volume boundary refracts by ior (GGX microfacet BTDF, Walter et al.
// 2007):
//
//   btdf = eta^2 D(h) G2 |wi.h| |wo.h| / (|n.wo| |n.wi| (wo.h + eta wi.h)^2),
//   h = normalize(wo + eta wi), eta = index beyond the surface / index on wo's side,
//
// without the 1/eta^2 radiance scaling: a camera path that enters and leaves a closed object
// gets it back anyway, and without it a sampled transmission weighs G2/G1 <= 1 both ways (as
// in Cycles). Inside a volume the integrator applies Beer-Lambert absorption.
//
// Sampling picks one lobe (coat, specular, diffuse, transmission, sheen) with probabilities
// from their estimated albedos at wo (the same for sample() and pdf(); 10% is spread evenly
// over the lobes that are on). Specular lobes sample GGX visible normals (Heitz 2018,
// "Sampling the GGX Distribution of Visible Normals"), diffuse and sheen the cosine
// hemisphere. Reflection lobes give nothing below the geometric surface (ng, oriented to
// wo's side) or their own normal's surface, which keeps normal maps from leaking light; the
// transmission lobe gives nothing above either. The sheen lobe is scaled by
// 1 / max(1, E(wo), E(wi)), since Charlie's D with Neubelt's V reflects up to ~4x what it
// receives at grazing angles of smooth sheens.
//
// Directions are unit vectors pointing away from the surface (wo towards the viewer).

#include "core/kernel/types.h"

namespace pl::kernel {

constexpr float kMinGgxAlpha = 1.0e-3f;
constexpr float kClearcoatIor = 1.5f;
constexpr float kMinSheenAlpha = 1.0e-2f;

// The layers over the metallic-roughness base; the defaults turn every one off.
struct GltfLayers {
  float transmission = 0.0f;
  bool volume = false;      // a volume boundary (refracts) rather than a thin wall
  bool inside = false;      // wo is on the back side of a volume boundary
  float specular = 1.0f;
  Vec3f specularColor = {1.0f, 1.0f, 1.0f};
  float clearcoat = 0.0f;
  float clearcoatRoughness = 0.0f;
  bool hasCoatFrame = false;  // else the coat shares the shading frame
  Frame coatFrame = {};
  Vec3f sheenColor = {0.0f, 0.0f, 0.0f};
  float sheenRoughness = 0.0f;
  const float* sheenAlbedo = nullptr;  // SceneGlobals::sheenAlbedo; null: no sheen
};

// The BSDF at one shading point. Built by makeGltfBsdf(); frame.z is the shading normal,
// coatFrame.z the clearcoat's normal and ng the geometric normal, all on wo's side.
struct GltfBsdf {
  Frame frame;
  Frame coatFrame;
  Vec3f ng;
  Vec3f baseColor;
  float metallic;
  float alpha;         // GGX alpha = max(roughness^2, kMinGgxAlpha)
  float f0Dielectric;  // F0 of ior; 0 means no dielectric specular layer
  float ior;
  float eta;           // index ratio across the surface seen from wo (ior, or 1/ior inside)
  float specular;
  Vec3f specularColor;
  float transmission;
  bool volume;
  float clearcoat;
  float coatAlpha;
  Vec3f sheenColor;
  float sheenRoughness;
  const float* sheenAlbedo;
};

PL_HOST_DEVICE PL_INLINE GltfBsdf makeGltfBsdf(const Frame& shadingFrame, Vec3f ng,
                                               Vec3f baseColor, float metallic, float roughness,
                                               float ior, const GltfLayers& layers = {}) {
  GltfBsdf b;
  b.frame = shadingFrame;
  b.coatFrame = layers.hasCoatFrame ? layers.coatFrame : shadingFrame;
  b.ng = ng;
  b.baseColor = baseColor;
  b.metallic = clampf(metallic, 0.0f, 1.0f);
  const float r = clampf(roughness, 0.0f, 1.0f);
  b.alpha = maxf(r * r, kMinGgxAlpha);
  if (!(ior > 0.0f)) ior = 1.5f;
  b.f0Dielectric = sqr((ior - 1.0f) / (ior + 1.0f));
  b.ior = ior;
  b.transmission = clampf(layers.transmission, 0.0f, 1.0f);
  // An index-matched volume (ior 1) bends nothing: its boundary is a thin wall.
  b.volume = layers.volume && b.transmission > 0.0f && fabsf(ior - 1.0f) > 1.0e-3f;
  b.eta = b.volume && layers.inside ? 1.0f / ior : ior;
  b.specular = clampf(layers.specular, 0.0f, 1.0f);
  b.specularColor = max(layers.specularColor, vec3(0.0f));  // f0 * colour is clamped to 1
  b.clearcoat = clampf(layers.clearcoat, 0.0f, 1.0f);
  const float cr = clampf(layers.clearcoatRoughness, 0.0f, 1.0f);
  b.coatAlpha = maxf(cr * cr, kMinGgxAlpha);
  b.sheenColor = layers.sheenAlbedo ? min(max(layers.sheenColor, vec3(0.0f)), vec3(1.0f))
                                    : vec3(0.0f);
  b.sheenRoughness = clampf(layers.sheenRoughness, 0.0f, 1.0f);
  b.sheenAlbedo = layers.sheenAlbedo;
  return b;
}

// ---- GGX pieces, in the local frame (z = normal) ----

PL_HOST_DEVICE PL_INLINE float ggxD(float cosH, float alpha) {
  const float a2 = alpha * alpha;
  const float d = cosH * cosH * (a2 - 1.0f) + 1.0f;
  return a2 / (kPi * d * d);
}

// Smith G1 for GGX with |cos| = c.
PL_HOST_DEVICE PL_INLINE float ggxG1(float c, float alpha) {
  const float a2 = alpha * alpha;
  return 2.0f * c / (c + sqrtf(a2 + (1.0f - a2) * c * c));
}

// Height-correlated V = G2 / (4 |n.wo| |n.wi|), for |cos| values.
//
// Study hook (bench/cycles_smith_study.sh; never defined in a build of peerlight): Blender
// 3.4's Cycles gives its GGX Glossy BSDF the separable G1(wo) G1(wi) (its kernel source,
// closure/bsdf_microfacet.h), where the glTF specification asks for the height-correlated
// G2. PL_STUDY_SEPARABLE_SMITH renders with Cycles' G, to measure how much of our difference
// from the Cycles reference that explains.
PL_HOST_DEVICE PL_INLINE float ggxV(float cosO, float cosI, float alpha) {
#ifdef PL_STUDY_SEPARABLE_SMITH
  const float separable = 4.0f * cosO * cosI;
  return separable > 0.0f ? ggxG1(cosO, alpha) * ggxG1(cosI, alpha) / separable : 0.0f;
#else
  const float a2 = alpha * alpha;
  const float lo = cosI * sqrtf(cosO * cosO * (1.0f - a2) + a2);
  const float li = cosO * sqrtf(cosI * cosI * (1.0f - a2) + a2);
  const float denom = lo + li;
  return denom > 0.0f ? 0.5f / denom : 0.0f;
#endif
}

PL_HOST_DEVICE PL_INLINE float schlickWeight(float c) {
  const float m = clampf(1.0f - c, 0.0f, 1.0f);
  const float m2 = m * m;
  return m2 * m2 * m;
}

// Heitz 2018: a GGX microfacet normal distributed as D_wo(h), for isotropic alpha; wo local,
// upper hemisphere.
PL_HOST_DEVICE PL_INLINE Vec3f sampleGgxVisibleNormal(Vec3f wo, float alpha, Vec2f u) {
  const Vec3f vh = normalize(vec3(alpha * wo.x, alpha * wo.y, wo.z));
  const float lenSq = vh.x * vh.x + vh.y * vh.y;
  const Vec3f t1 = lenSq > 0.0f ? vec3(-vh.y, vh.x, 0.0f) * (1.0f / sqrtf(lenSq))
                                : vec3(1.0f, 0.0f, 0.0f);
  const Vec3f t2 = cross(vh, t1);
  const float r = sqrtf(u.x);
  const float phi = 2.0f * kPi * u.y;
  const float p1 = r * cosf(phi);
  float p2 = r * sinf(phi);
  const float s = 0.5f * (1.0f + vh.z);
  p2 = (1.0f - s) * safeSqrt(1.0f - p1 * p1) + s * p2;
  const Vec3f nh = t1 * p1 + t2 * p2 + vh * safeSqrt(1.0f - p1 * p1 - p2 * p2);
  return normalize(vec3(alpha * nh.x, alpha * nh.y, maxf(1.0e-6f, nh.z)));
}

// pdf of reflecting wo about a VNDF-sampled h (local, wo.z > 0).
PL_HOST_DEVICE PL_INLINE float ggxReflectionPdf(float cosO, float cosH, float alpha) {
  return ggxG1(cosO, alpha) * ggxD(cosH, alpha) / (4.0f * cosO);
}

// Unpolarized Fresnel reflectance of a dielectric interface for light arriving from outside
// at cosine cosI (> 0), relative index of refraction eta.
PL_HOST_DEVICE PL_INLINE float fresnelDielectric(float cosI, float eta) {
  cosI = clampf(cosI, 0.0f, 1.0f);
  const float sinT2 = (1.0f - cosI * cosI) / (eta * eta);
  if (sinT2 >= 1.0f) return 1.0f;  // total internal reflection (eta < 1)
  const float cosT = sqrtf(1.0f - sinT2);
  const float rs = (cosI - eta * cosT) / (cosI + eta * cosT);
  const float rp = (eta * cosI - cosT) / (eta * cosI + cosT);
  return 0.5f * (rs * rs + rp * rp);
}

// The dielectric layer's Fresnel weight at the shading normal (see the header comment),
// per colour channel: specular * (f0 + (1 - f0) * S(cosO)).
PL_HOST_DEVICE PL_INLINE Vec3f dielectricFresnel(const GltfBsdf& b, float cosO) {
  if (!(b.f0Dielectric > 0.0f)) return vec3(0.0f);
  const float fe = fresnelDielectric(cosO, b.eta);
  const float shape =
      b.f0Dielectric < 1.0f ? clampf((fe - b.f0Dielectric) / (1.0f - b.f0Dielectric), 0.0f, 1.0f)
                            : 1.0f;
  const Vec3f f0 = min(b.specularColor * b.f0Dielectric, vec3(1.0f));
  return (f0 + (vec3(1.0f) - f0) * shape) * b.specular;
}

PL_HOST_DEVICE PL_INLINE Vec3f reflect(Vec3f w, Vec3f n) { return n * (2.0f * dot(w, n)) - w; }

// Refracts w (pointing away, w.n > 0) through the microfacet n with eta = n_t / n_i. False
// on total internal reflection.
PL_HOST_DEVICE PL_INLINE bool refract(Vec3f w, Vec3f n, float eta, Vec3f* out) {
  const float cosI = dot(w, n);
  const float sinT2 = (1.0f - cosI * cosI) / (eta * eta);
  if (sinT2 >= 1.0f) return false;
  const float cosT = sqrtf(1.0f - sinT2);
  *out = -w * (1.0f / eta) + n * (cosI / eta - cosT);
  return true;
}

// ---- Sheen (KHR_materials_sheen): Charlie D (Estevez & Kulla 2017), Neubelt's V ----

PL_HOST_DEVICE PL_INLINE float sheenAlpha(float roughness) {
  return maxf(roughness * roughness, kMinSheenAlpha);
}
// D * V at cos(h) = cosH, for |cos| values cosO, cosI.
PL_HOST_DEVICE PL_INLINE float sheenDV(float cosH, float cosO, float cosI, float alpha) {
  const float sin2 = maxf(1.0f - cosH * cosH, 0.0f);
  const float invAlpha = 1.0f / alpha;
  const float d = (2.0f + invAlpha) * powf(sin2, 0.5f * invAlpha) * (0.5f * kInvPi);
  const float denom = 4.0f * (cosI + cosO - cosI * cosO);
  return denom > 0.0f ? d / denom : 0.0f;
}

// The sheen lobe's directional albedo, integral of D V cos(wi) over the hemisphere, as a
// kSheenAlbedoSize^2 table by roughness (rows) and cos(wo) (columns), computed on a midpoint
// grid. Host code calls it once; the kernel reads the table from SceneGlobals.
PL_HOST_DEVICE PL_INLINE void fillSheenAlbedoTable(float* table) {
  constexpr int kTheta = 96, kPhi = 96;
  const float last = static_cast<float>(kSheenAlbedoSize - 1);
  for (uint32_t row = 0; row < kSheenAlbedoSize; ++row) {
    const float alpha = sheenAlpha(static_cast<float>(row) / last);
    for (uint32_t col = 0; col < kSheenAlbedoSize; ++col) {
      const float cosO = maxf(static_cast<float>(col) / last, 1.0e-3f);
      const Vec3f wo = vec3(safeSqrt(1.0f - cosO * cosO), 0.0f, cosO);
      double sum = 0.0;
      for (int i = 0; i < kTheta; ++i) {
        // Uniform in cos(theta_i): solid angle d(cos) dphi.
        const float cosI = (static_cast<float>(i) + 0.5f) / kTheta;
        const float sinI = safeSqrt(1.0f - cosI * cosI);
        for (int j = 0; j < kPhi; ++j) {
          const float phi = 2.0f * kPi * (static_cast<float>(j) + 0.5f) / kPhi;
          const Vec3f wi = vec3(sinI * cosf(phi), sinI * sinf(phi), cosI);
          const Vec3f h = normalize(wo + wi);
          sum += static_cast<double>(sheenDV(h.z, cosO, cosI, alpha) * cosI);
        }
      }
      table[row * kSheenAlbedoSize + col] =
          static_cast<float>(sum * (2.0 * 3.14159265358979323846) / (kTheta * kPhi));
    }
  }
}

// Bilinear lookup of the table at (roughness, cos).
PL_HOST_DEVICE PL_INLINE float sheenAlbedo(const float* table, float roughness, float cosT) {
  const float last = static_cast<float>(kSheenAlbedoSize - 1);
  const float x = clampf(cosT, 0.0f, 1.0f) * last, y = clampf(roughness, 0.0f, 1.0f) * last;
  const uint32_t x0 = static_cast<uint32_t>(minf(floorf(x), last - 1.0f));
  const uint32_t y0 = static_cast<uint32_t>(minf(floorf(y), last - 1.0f));
  const float tx = x - static_cast<float>(x0), ty = y - static_cast<float>(y0);
  const float* r0 = table + y0 * kSheenAlbedoSize;
  const float* r1 = r0 + kSheenAlbedoSize;
  const float a = r0[x0] + (r0[x0 + 1] - r0[x0]) * tx;
  const float c = r1[x0] + (r1[x0 + 1] - r1[x0]) * tx;
  return a + (c - a) * ty;
}

// ---- The mixture ----

enum GltfLobe : uint32_t {
  kLobeCoat = 0,
  kLobeSpecular,
  kLobeDiffuse,
  kLobeTransmission,
  kLobeSheen,
  kLobeCount
};

// What depends on wo only: layer weights and lobe probabilities.
struct GltfWoTerms {
  Vec3f fd;          // dielectric Fresnel weight per channel
  float fdMax;
  float coat;        // C: the clearcoat's share
  float sheenMax;    // max(sheenColor)
  float sheenScale;  // 1 - sheenMax * E(wo)
  float sheenEo;     // E(wo)
  float p[kLobeCount];
};

// woL: wo in the shading frame (z > 0); cosOc: wo's cosine to the coat normal.
PL_HOST_DEVICE PL_INLINE GltfWoTerms gltfWoTerms(const GltfBsdf& b, float cosO, float cosOc) {
  GltfWoTerms t;
  t.fd = dielectricFresnel(b, cosO);
  t.fdMax = minf(maxComponent(t.fd), 1.0f);
  t.coat = b.clearcoat > 0.0f && cosOc > 0.0f
               ? b.clearcoat * fresnelDielectric(cosOc, kClearcoatIor)
               : 0.0f;
  t.sheenMax = maxComponent(b.sheenColor);
  const float sheenE =
      t.sheenMax > 0.0f ? sheenAlbedo(b.sheenAlbedo, b.sheenRoughness, cosO) : 0.0f;
  t.sheenEo = sheenE;
  t.sheenScale = clampf(1.0f - t.sheenMax * sheenE, 0.0f, 1.0f);
  const float under = (1.0f - t.coat) * t.sheenScale;
  const Vec3f fm = b.baseColor + (vec3(1.0f) - b.baseColor) * schlickWeight(cosO);
  const float dielectric = (1.0f - b.metallic) * (1.0f - t.fdMax) * luminance(b.baseColor);
  float w[kLobeCount];
  w[kLobeCoat] = t.coat;
  w[kLobeSpecular] = under * ((1.0f - b.metallic) * t.fdMax + b.metallic * luminance(fm));
  w[kLobeDiffuse] = under * dielectric * (1.0f - b.transmission);
  w[kLobeTransmission] = under * dielectric * b.transmission;
  w[kLobeSheen] = (1.0f - t.coat) * t.sheenMax * minf(sheenE, 1.0f);
  float total = 0.0f;
  uint32_t on = 0;
  for (uint32_t i = 0; i < kLobeCount; ++i) {
    if (!(w[i] > 0.0f)) w[i] = 0.0f;
    total += w[i];
    on += w[i] > 0.0f ? 1u : 0u;
  }
  for (uint32_t i = 0; i < kLobeCount; ++i)
    t.p[i] = total > 0.0f && w[i] > 0.0f ? 0.9f * w[i] / total + 0.1f / static_cast<float>(on)
                                         : 0.0f;
  return t;
}

// f * |cos(wi)| and the mixture pdf. woL, wiL: in the shading frame (woL.z > 0); woC, wiC: in
// the coat frame. reflectSide: wi is on wo's side of the geometric surface.
PL_HOST_DEVICE PL_INLINE Vec3f evalGltfBsdfLocal(const GltfBsdf& b, const GltfWoTerms& t,
                                                 Vec3f woL, Vec3f wiL, Vec3f woC, Vec3f wiC,
                                                 bool reflectSide, float* pdf) {
  *pdf = 0.0f;
  Vec3f fCos = vec3(0.0f);
  const float cosO = woL.z, cosI = wiL.z;
  if (!(cosO > 0.0f)) return fCos;
  if (reflectSide) {
    if (cosI > 0.0f) {
      Vec3f h = woL + wiL;
      const float hLen = length(h);
      if (hLen > 0.0f) {
        h = h * (1.0f / hLen);
        const float cosOH = clampf(dot(woL, h), 0.0f, 1.0f);
        const Vec3f fm = b.baseColor + (vec3(1.0f) - b.baseColor) * schlickWeight(cosOH);
        const float d = ggxD(h.z, b.alpha);
        const float specular = d * ggxV(cosO, cosI, b.alpha);
        const Vec3f diffuse = b.baseColor * (kInvPi * (1.0f - b.transmission));
        const Vec3f dielectric = diffuse * (1.0f - t.fdMax) + t.fd * specular;
        const Vec3f metal = fm * specular;
        Vec3f f = lerp(dielectric, metal, b.metallic);
        if (t.sheenMax > 0.0f) {
          const float eI = sheenAlbedo(b.sheenAlbedo, b.sheenRoughness, cosI);
          const float scale = minf(t.sheenScale, clampf(1.0f - t.sheenMax * eI, 0.0f, 1.0f));
          // Charlie with Neubelt's V reflects more than it receives at grazing angles of
          // smooth sheens (E up to ~4): scaled down there, symmetrically in wo and wi.
          const float norm = 1.0f / maxf(1.0f, maxf(t.sheenEo, eI));
          f = f * scale +
              b.sheenColor * (sheenDV(h.z, cosO, cosI, sheenAlpha(b.sheenRoughness)) * norm);
        }
        fCos += f * ((1.0f - t.coat) * cosI);
        *pdf += t.p[kLobeSpecular] * ggxReflectionPdf(cosO, h.z, b.alpha) +
                (t.p[kLobeDiffuse] + t.p[kLobeSheen]) * cosI * kInvPi;
      }
    }
    if (t.coat > 0.0f && woC.z > 0.0f && wiC.z > 0.0f) {
      const Vec3f h = normalize(woC + wiC);
      const float d = ggxD(h.z, b.coatAlpha);
      fCos += vec3(t.coat * d * ggxV(woC.z, wiC.z, b.coatAlpha) * wiC.z);
      *pdf += t.p[kLobeCoat] * ggxReflectionPdf(woC.z, h.z, b.coatAlpha);
    }
    return fCos;
  }
  // The transmission side.
  if (!(t.p[kLobeTransmission] > 0.0f) || !(cosI < 0.0f)) return fCos;
  const Vec3f tint = b.baseColor * ((1.0f - t.coat) * t.sheenScale * (1.0f - b.metallic) *
                                    (1.0f - t.fdMax) * b.transmission);
  if (!b.volume) {
    // Thin wall: the specular lobe mirrored through the surface.
    const Vec3f wiM = vec3(wiL.x, wiL.y, -cosI);
    const Vec3f h = normalize(woL + wiM);
    const float d = ggxD(h.z, b.alpha);
    fCos = tint * (d * ggxV(cosO, -cosI, b.alpha) * -cosI);
    *pdf = t.p[kLobeTransmission] * ggxReflectionPdf(cosO, h.z, b.alpha);
    return fCos;
  }
  const float eta = b.eta;
  Vec3f h = woL + wiL * eta;
  const float hLen = length(h);
  if (!(hLen > 0.0f)) return fCos;
  h = h * (1.0f / hLen);
  if (h.z < 0.0f) h = -h;
  const float cosOH = dot(woL, h), cosIH = dot(wiL, h);
  if (!(cosOH > 0.0f) || !(cosIH < 0.0f)) return fCos;
  const float denom = sqr(cosOH + eta * cosIH);
  if (!(denom > 1.0e-12f)) return fCos;
  const float d = ggxD(h.z, b.alpha);
  const float g2 = 4.0f * cosO * -cosI * ggxV(cosO, -cosI, b.alpha);
  const float jacobian = eta * eta * -cosIH / denom;  // |d h / d wi|
  fCos = tint * (d * g2 * cosOH * jacobian / cosO);
  *pdf = t.p[kLobeTransmission] * ggxG1(cosO, b.alpha) * d * cosOH / cosO * jacobian;
  return fCos;
}

// What a vertex's evaluations and its sample share: wo in both frames and the wo terms,
// computed once per vertex (gltfWo()). valid: wo is above the shading surface (else the BSDF is
// black and samples nothing).
struct GltfWo {
  Vec3f wo, woL, woC;
  GltfWoTerms t;
  bool valid;
};

PL_HOST_DEVICE PL_INLINE GltfWo gltfWo(const GltfBsdf& b, Vec3f wo) {
  GltfWo w{};
  w.wo = wo;
  w.woL = toLocal(b.frame, wo);
  w.valid = w.woL.z > 0.0f;
  if (!w.valid) return w;
  w.woC = toLocal(b.coatFrame, wo);
  w.t = gltfWoTerms(b, w.woL.z, w.woC.z);
  return w;
}

// World-space evaluation: f(wo, wi) * |cos(wi, n_s)| and the pdf that sampleGltfBsdf() would
// give wi.
PL_HOST_DEVICE PL_INLINE Vec3f evalGltfBsdf(const GltfBsdf& b, const GltfWo& w, Vec3f wi,
                                            float* pdf) {
  if (!w.valid) {
    *pdf = 0.0f;
    return vec3(0.0f);
  }
  return evalGltfBsdfLocal(b, w.t, w.woL, toLocal(b.frame, wi), w.woC, toLocal(b.coatFrame, wi),
                           dot(wi, b.ng) > 0.0f, pdf);
}
PL_HOST_DEVICE PL_INLINE Vec3f evalGltfBsdf(const GltfBsdf& b, Vec3f wo, Vec3f wi, float* pdf) {
  return evalGltfBsdf(b, gltfWo(b, wo), wi, pdf);
}

PL_HOST_DEVICE PL_INLINE float pdfGltfBsdf(const GltfBsdf& b, Vec3f wo, Vec3f wi) {
  float pdf;
  evalGltfBsdf(b, wo, wi, &pdf);
  return pdf;
}

PL_HOST_DEVICE PL_INLINE Vec3f sampleCosineHemisphere(Vec2f u) {
  // Concentric disk mapping.
  const float sx = 2.0f * u.x - 1.0f, sy = 2.0f * u.y - 1.0f;
  float r, phi;
  if (sx == 0.0f && sy == 0.0f) {
    r = 0.0f;
    phi = 0.0f;
  } else if (fabsf(sx) > fabsf(sy)) {
    r = sx;
    phi = (kPi * 0.25f) * (sy / sx);
  } else {
    r = sy;
    phi = kPi * 0.5f - (kPi * 0.25f) * (sx / sy);
  }
  const float dx = r * cosf(phi), dy = r * sinf(phi);
  return vec3(dx, dy, safeSqrt(1.0f - dx * dx - dy * dy));
}

struct BsdfSample {
  Vec3f wi;
  Vec3f weight;  // f * |cos(wi, n_s)| / pdf
  float pdf;     // solid angle, of the whole mixture
  bool transmitted;  // wi is on the far side of the geometric surface
};

// Samples wi. uLobe picks the lobe, u the direction. Returns false (no sample) when the
// direction falls on the wrong side of the shading or geometric surface for its lobe, on
// total internal reflection at the sampled microfacet, or when the weight is not finite.
PL_HOST_DEVICE PL_INLINE bool sampleGltfBsdf(const GltfBsdf& b, const GltfWo& w, float uLobe,
                                             Vec2f u, BsdfSample* out) {
  if (!w.valid) return false;
  const Vec3f woL = w.woL, woC = w.woC;
  const GltfWoTerms& t = w.t;
  uint32_t lobe = kLobeCount;
  float cdf = 0.0f;
  for (uint32_t i = 0; i < kLobeCount; ++i) {
    if (!(t.p[i] > 0.0f)) continue;
    cdf += t.p[i];
    lobe = i;  // the last lobe that is on takes what rounding leaves
    if (uLobe < cdf) break;
  }
  Vec3f wi;
  bool transmitted = false;
  switch (lobe) {
    case kLobeCoat: {
      // Each reflection lobe keeps to its own hemisphere: eval() counts a lobe's pdf only
      // there (the coat's normal and the shading normal differ under normal maps).
      if (!(woC.z > 0.0f)) return false;
      const Vec3f wiC = reflect(woC, sampleGgxVisibleNormal(woC, b.coatAlpha, u));
      if (!(wiC.z > 0.0f)) return false;
      wi = toWorld(b.coatFrame, wiC);
      break;
    }
    case kLobeSpecular: {
      const Vec3f wiL = reflect(woL, sampleGgxVisibleNormal(woL, b.alpha, u));
      if (!(wiL.z > 0.0f)) return false;
      wi = toWorld(b.frame, wiL);
      break;
    }
    case kLobeDiffuse:
    case kLobeSheen:
      wi = toWorld(b.frame, sampleCosineHemisphere(u));
      break;
    case kLobeTransmission: {
      const Vec3f h = sampleGgxVisibleNormal(woL, b.alpha, u);
      Vec3f wiL;
      if (b.volume) {
        if (!refract(woL, h, b.eta, &wiL)) return false;
      } else {
        wiL = reflect(woL, h);
        wiL.z = -wiL.z;
      }
      wi = toWorld(b.frame, wiL);
      transmitted = true;
      break;
    }
    default:
      return false;
  }
  wi = normalize(wi);
  const bool reflectSide = dot(wi, b.ng) > 0.0f;
  if (reflectSide == transmitted) return false;
  float pdf;
  const Vec3f fCos = evalGltfBsdfLocal(b, t, woL, toLocal(b.frame, wi), woC,
                                       toLocal(b.coatFrame, wi), reflectSide, &pdf);
  if (!(pdf > 0.0f)) return false;
  out->wi = wi;
  out->pdf = pdf;
  out->weight = fCos * (1.0f / pdf);
  out->transmitted = transmitted;
  return isFinite(out->weight);
}
PL_HOST_DEVICE PL_INLINE bool sampleGltfBsdf(const GltfBsdf& b, Vec3f wo, float uLobe, Vec2f u,
                                             BsdfSample* out) {
  return sampleGltfBsdf(b, gltfWo(b, wo), uLobe, u, out);
}

}  // namespace pl::kernel
