#pragma once
// A material at a surface point: its textures looked up and its factors combined into the
// BSDF (bsdf.h) that the integrator samples. Texture channels follow the glTF extensions:
// metallic B and roughness G of metallicRoughnessTexture, transmission R, clearcoat R,
// clearcoat roughness G, sheen colour RGB (sRGB) and roughness A, specular A and specular
// colour RGB (sRGB).

#include "core/kernel/bsdf.h"
#include "core/kernel/surface.h"

namespace pl::kernel {

// The shading normal n (unit), bent where needed so that the mirror reflection of wo about it
// stays above the geometric surface (ngFacing: the geometric normal on wo's side) by a margin
// t = min(0.01, 0.9 cos(ngFacing, wo)). A normal map or interpolated normals seen at grazing
// angles often reflect wo into the surface, or face away from wo; the BRDF then has no
// sensible value there. The normal is tilted back towards ngFacing, in the plane of the two,
// to the largest tilt that keeps the reflection above the margin: with x the unit direction of
// n's tangential part and wo = (wz along ngFacing, wx along x), a normal at angle a from
// ngFacing towards x reflects wo to a height of wz cos 2a + wx sin 2a (Cycles makes the same
// correction; falling back to the geometric normal instead flattened normal-mapped surfaces
// seen at grazing angles). A normal more than 45 degrees into the surface, or one that float
// rounding cannot bend (views within about 1e-7 of the surface), becomes ngFacing.
PL_HOST_DEVICE PL_INLINE Vec3f validShadingNormal(Vec3f n, Vec3f ngFacing, Vec3f wo) {
  const float wz = dot(ngFacing, wo);
  if (!(wz > 0.0f)) return ngFacing;
  const float margin = minf(0.01f, 0.9f * wz);
  if (dot(reflect(wo, n), ngFacing) >= margin && dot(n, wo) > 0.0f) return n;
  const float nz = dot(n, ngFacing);
  const Vec3f tangential = n - ngFacing * nz;
  const float len = length(tangential);
  // A normal more than 45 degrees into the surface (vertex normals against the winding) has no
  // direction worth keeping: its tangential part may be rounding.
  if (!(len > 1.0e-6f) || !(nz > -len)) return ngFacing;
  // Made orthogonal to ngFacing again: rounding in a short tangential part tilts it.
  const Vec3f x = normalize(tangential - ngFacing * dot(tangential, ngFacing));
  const float wx = dot(wo, x);
  // wz cos 2a + wx sin 2a = R cos(2a - d) >= margin for 2a up to d + acos(margin / R).
  const float r = sqrtf(wz * wz + wx * wx);
  const float largest = 0.5f * (atan2f(wx, wz) + acosf(clampf(margin / r, -1.0f, 1.0f)));
  const float a = clampf(minf(atan2f(len, nz), largest), 0.0f, 0.5f * kPi);
  const Vec3f bent = normalize(ngFacing * cosf(a) + x * sinf(a));
  // At views within float rounding of the surface the angles cannot be resolved.
  if (!isFinite(bent) || !(dot(bent, wo) > 0.0f) || !(dot(reflect(wo, bent), ngFacing) > 0.0f))
    return ngFacing;
  return bent;
}

// A normal on the viewer's side (wo), normal-mapped by `texture` (kNoTexture: none) when a
// tangent is known. front: whether wo sees the front face; ngFacing: the geometric normal on
// wo's side.
PL_HOST_DEVICE PL_INLINE Vec3f mappedNormal(const SceneView& scene, int32_t texture, float scale,
                                            const SurfacePoint& sp, bool front, Vec3f ngFacing,
                                            Vec3f wo) {
  Vec3f n = sp.ns;
  if (texture != kNoTexture && sp.tangent.w != 0.0f) {
    const Vec3f t0 = xyz(sp.tangent);
    const Vec3f t = normalize(t0 - n * dot(n, t0));
    if (lengthSquared(t) > 0.0f) {
      const Vec3f b = cross(n, t) * sp.tangent.w;
      const Vec4f c = sampleTexture(scene, texture, sp.uv, false, sp.lod);
      const float x = (2.0f * c.x - 1.0f) * scale;
      const float y = (2.0f * c.y - 1.0f) * scale;
      const float z = 2.0f * c.z - 1.0f;
      const Vec3f mapped = normalize(t * x + b * y + n * z);
      if (lengthSquared(mapped) > 0.0f && isFinite(mapped)) n = mapped;
    }
  }
  if (!front) n = -n;
  return validShadingNormal(n, ngFacing, wo);
}

// The shading normal: the vertex normal, normal-mapped by the material's normal texture.
PL_HOST_DEVICE PL_INLINE Vec3f shadingNormal(const SceneView& scene, const Material& m,
                                             const SurfacePoint& sp, bool front, Vec3f ngFacing,
                                             Vec3f wo) {
  return mappedNormal(scene, m.normalTexture, m.normalScale, sp, front, ngFacing, wo);
}

// Whether light that crosses this material's surface enters or leaves a volume (refraction
// and absorption) rather than passing a thin wall.
PL_HOST_DEVICE PL_INLINE bool isVolumeBoundary(const Material& m) {
  return m.transmissionFactor > 0.0f && m.thicknessFactor > 0.0f;
}

// Beer-Lambert absorption coefficient of the volume behind the surface (0: none).
PL_HOST_DEVICE PL_INLINE Vec3f volumeAbsorption(const Material& m) {
  if (!(m.attenuationDistance > 0.0f)) return vec3(0.0f);
  const float inv = 1.0f / m.attenuationDistance;
  const Vec3f c = min(m.attenuationColor, vec3(1.0f));  // a colour above 1 would amplify
  return vec3(-logf(maxf(c.x, 1.0e-6f)) * inv, -logf(maxf(c.y, 1.0e-6f)) * inv,
              -logf(maxf(c.z, 1.0e-6f)) * inv);
}

PL_HOST_DEVICE PL_INLINE float textureChannel(const SceneView& scene, int32_t texture,
                                              const SurfacePoint& sp, int channel) {
  if (texture == kNoTexture) return 1.0f;
  const Vec4f c = sampleTexture(scene, texture, sp.uv, false, sp.lod);
  return channel == 0 ? c.x : channel == 1 ? c.y : channel == 2 ? c.z : c.w;
}
PL_HOST_DEVICE PL_INLINE Vec3f textureColor(const SceneView& scene, int32_t texture,
                                            const SurfacePoint& sp) {
  if (texture == kNoTexture) return vec3(1.0f);
  return xyz(sampleTexture(scene, texture, sp.uv, true, sp.lod));
}

// The BSDF of material m at sp, seen from wo. front: wo sees the front face; ng: the
// geometric normal on wo's side.
PL_HOST_DEVICE PL_INLINE GltfBsdf materialBsdf(const SceneView& scene, const Material& m,
                                               const SurfacePoint& sp, bool front, Vec3f ng,
                                               Vec3f wo) {
  const Vec3f baseColor = xyz(m.baseColorFactor) * textureColor(scene, m.baseColorTexture, sp);
  float metallic = m.metallicFactor, roughness = m.roughnessFactor;
  if (m.metallicRoughnessTexture != kNoTexture) {
    const Vec4f mr = sampleTexture(scene, m.metallicRoughnessTexture, sp.uv, false, sp.lod);
    roughness *= mr.y;
    metallic *= mr.z;
  }
  const Vec3f ns = shadingNormal(scene, m, sp, front, ng, wo);
  GltfLayers layers;
  if (m.transmissionFactor > 0.0f) {
    layers.transmission =
        m.transmissionFactor * textureChannel(scene, m.transmissionTexture, sp, 0);
    layers.volume = isVolumeBoundary(m);
    layers.inside = !front;
  }
  layers.specular = m.specularFactor * textureChannel(scene, m.specularTexture, sp, 3);
  layers.specularColor =
      m.specularColorFactor * textureColor(scene, m.specularColorTexture, sp);
  if (m.clearcoatFactor > 0.0f) {
    layers.clearcoat = m.clearcoatFactor * textureChannel(scene, m.clearcoatTexture, sp, 0);
    layers.clearcoatRoughness =
        m.clearcoatRoughnessFactor * textureChannel(scene, m.clearcoatRoughnessTexture, sp, 1);
    layers.hasCoatFrame = true;
    layers.coatFrame = frameFromNormal(mappedNormal(scene, m.clearcoatNormalTexture,
                                                    m.clearcoatNormalScale, sp, front, ng, wo));
  }
  if (maxComponent(m.sheenColorFactor) > 0.0f) {
    layers.sheenColor = m.sheenColorFactor * textureColor(scene, m.sheenColorTexture, sp);
    layers.sheenRoughness =
        m.sheenRoughnessFactor * textureChannel(scene, m.sheenRoughnessTexture, sp, 3);
    layers.sheenAlbedo = scene.global().sheenAlbedo;
  }
  return makeGltfBsdf(frameFromNormal(ns), ng, baseColor, metallic, roughness, m.ior, layers);
}

}  // namespace pl::kernel
