#pragma once
// Element types of the RenderData arrays (see render_data_arrays.h). All trivially copyable,
// fixed layout, 4-byte aligned fields only: the same bytes are hashed, sent over the network,
// uploaded to the GPU and read by the CPU kernel.

#include "core/kernel/math.h"

namespace pl::kernel {

// One world-space triangle: three indices into the per-vertex arrays and a material index.
struct Triangle {
  uint32_t v0, v1, v2;
  uint32_t material;
};

// The triangles and vertices of one mesh (a glTF primitive instance): RenderData::meshes
// lists them in order, each mesh's triangles index only its own vertices. kMeshDynamic: a
// session moved, hid or showed it; CPU devices keep such meshes out of the static meshes' BVH,
// which they then reuse while those are unchanged (render/embree_tracer.h). The kernel itself
// never reads this array.
enum MeshFlags : uint32_t { kMeshDynamic = 1u };
// Beyond this many dynamic meshes a device treats them all as static: each would be a BVH of
// its own, and their number comes from the network.
constexpr uint32_t kMaxDynamicMeshes = 1024;
struct MeshRange {
  uint32_t firstTriangle, triangleCount;
  uint32_t firstVertex, vertexCount;
  uint32_t flags;  // MeshFlags
};

enum AlphaMode : uint32_t { kAlphaOpaque = 0, kAlphaMask = 1, kAlphaBlend = 2 };
enum TextureWrap : uint32_t { kWrapRepeat = 0, kWrapClamp = 1, kWrapMirror = 2 };
enum TextureFilter : uint32_t { kFilterNearest = 0, kFilterLinear = 1 };

constexpr int32_t kNoTexture = -1;

// glTF 2.0 metallic-roughness material with the KHR_materials_* extensions the kernel
// implements (see bsdf.h). Texture indices point into RenderData::textures (kNoTexture when
// absent); all use UV set 0, each through its texture's UV transform. The extensions' fields
// default to "off" (as the extensions' own defaults), so Material{} is a plain glTF material.
struct Material {
  Vec4f baseColorFactor;     // linear RGBA
  Vec3f emission;            // emissiveFactor * KHR_materials_emissive_strength (radiance)
  float metallicFactor;
  float roughnessFactor;
  float normalScale;
  float alphaCutoff;         // for kAlphaMask
  float ior;                 // 1.5 unless KHR_materials_ior
  uint32_t alphaMode;        // AlphaMode
  uint32_t doubleSided;      // 0 or 1; single-sided emitters emit from the front face only
  int32_t baseColorTexture;  // sRGB
  int32_t metallicRoughnessTexture;  // linear; roughness in G, metallic in B
  int32_t normalTexture;     // linear, tangent space
  int32_t emissiveTexture;   // sRGB
  // KHR_materials_transmission and KHR_materials_volume. thicknessFactor == 0 is a thin-walled
  // surface (light passes straight through); > 0 a boundary of a volume that refracts by ior
  // and absorbs by Beer-Lambert: attenuationColor after attenuationDistance (0: no absorption).
  float transmissionFactor = 0.0f;
  int32_t transmissionTexture = kNoTexture;  // linear, R
  float thicknessFactor = 0.0f;
  float attenuationDistance = 0.0f;
  Vec3f attenuationColor = {1.0f, 1.0f, 1.0f};
  // KHR_materials_clearcoat: a dielectric (ior 1.5) GGX layer over everything else.
  float clearcoatFactor = 0.0f;
  float clearcoatRoughnessFactor = 0.0f;
  int32_t clearcoatTexture = kNoTexture;           // linear, R
  int32_t clearcoatRoughnessTexture = kNoTexture;  // linear, G
  int32_t clearcoatNormalTexture = kNoTexture;  // tangent space; absent: the geometry's normal
  float clearcoatNormalScale = 1.0f;
  // KHR_materials_sheen: a Charlie-distribution layer over the base (sheenColor 0: none).
  Vec3f sheenColorFactor = {0.0f, 0.0f, 0.0f};
  float sheenRoughnessFactor = 0.0f;
  int32_t sheenColorTexture = kNoTexture;      // sRGB, RGB
  int32_t sheenRoughnessTexture = kNoTexture;  // linear, A
  // KHR_materials_specular: the dielectric specular layer's strength and F0 tint.
  float specularFactor = 1.0f;
  Vec3f specularColorFactor = {1.0f, 1.0f, 1.0f};
  int32_t specularTexture = kNoTexture;       // linear, A
  int32_t specularColorTexture = kNoTexture;  // sRGB, RGB
};

// The texture slots a material reads as sRGB colour (material.h and surface.h look them up
// with srgb = true; compile() averages their mip chains in linear light). Every other slot is
// linear.
struct ColourTextureSlots {
  int32_t slots[4];
};
PL_HOST_DEVICE PL_INLINE ColourTextureSlots colourTextures(const Material& m) {
  return {{m.baseColorTexture, m.emissiveTexture, m.sheenColorTexture, m.specularColorTexture}};
}

// A texture's header. Its texels are RenderData::texels[texelOffset .. +width*height),
// row-major, top row first (as in the image file), RGBA 8 bits each, not yet linearized:
// sRGB decoding happens on lookup, depending on the material slot. Its mip levels below 0
// lie one after the other at RenderData::mipTexels[mipTexelOffset ..]: level l is
// mipSize(width, l) x mipSize(height, l) (texture.h), each the 2x2 box filter of the level
// above (core/scene/texture_mips.h; sRGB colour averaged in linear light when mipColour).
// Being a function of level 0, they are never sent: a node computes them (chunk_codec.h).
struct Texture {
  uint32_t width, height;
  uint32_t texelOffset;  // in texels, into RenderData::texels
  uint32_t wrapS, wrapT; // TextureWrap
  uint32_t filter;       // TextureFilter (kFilterNearest: never minified through the mips)
  uint32_t mipLevels = 1;  // levels stored, level 0 included (1: no mips)
  uint32_t mipTexelOffset = 0;  // in texels, into RenderData::mipTexels (level 1)
  uint32_t mipColour = 0;       // 1: the levels average R, G, B as sRGB colour, in linear light
  // KHR_texture_transform, applied to the UV before lookup: u' = uv[0] u + uv[1] v + uv[2],
  // v' = uv[3] u + uv[4] v + uv[5]. Identity for an untransformed texture.
  float uv[6] = {1.0f, 0.0f, 0.0f, 0.0f, 1.0f, 0.0f};
};

struct Rgba8 {
  uint8_t r, g, b, a;
};

enum LightType : uint32_t { kLightPoint = 0, kLightSpot = 1, kLightDirectional = 2 };

// KHR_lights_punctual light, in world space. intensity is color * intensity in the units of
// the extension (candela for point/spot, lux for directional), used as radiometric values.
struct PunctualLight {
  uint32_t type;        // LightType
  Vec3f position;
  Vec3f direction;      // unit, the direction the light points to (spot, directional)
  Vec3f intensity;
  float range;          // 0 = infinite
  float cosInnerCone;   // spot only
  float cosOuterCone;   // spot only
};

enum CameraType : uint32_t { kCameraPerspective = 0, kCameraOrthographic = 1 };

// The camera and the image it makes. Raster (0,0) is the top-left pixel corner.
struct Camera {
  uint32_t type;   // CameraType
  uint32_t width, height;
  Vec3f position;
  Vec3f right;     // unit, image +x
  Vec3f up;        // unit, image +y (raster y grows downwards)
  Vec3f forward;   // unit, view direction
  float tanHalfFovY;  // perspective
  float orthoHalfHeight;  // orthographic (ymag)
  uint32_t passes;    // FilmPass bits of the image asked for; 0: the film holds R, G, B only
};

constexpr uint32_t kSheenAlbedoSize = 16;

// The film's channels per pixel: R, G, B, then, when Camera::passes is not 0, the
// passes of the first surface the camera sees: albedo R, G, B; shading normal X, Y, Z (world
// space, stored as (n + 1) / 2, since sums are of non-negative values); depth (distance along
// the camera's view axis; kMissDepth where the camera sees no surface).
enum FilmPass : uint32_t { kPassAlbedo = 1u, kPassNormal = 2u, kPassDepth = 4u };
constexpr uint32_t kAllPasses = kPassAlbedo | kPassNormal | kPassDepth;
constexpr uint32_t kBeautyChannels = 3;
constexpr uint32_t kMaxFilmChannels = 10;
constexpr float kMissDepth = 1.0e6f;
PL_HOST_DEVICE PL_INLINE uint32_t filmChannels(uint32_t passes) {
  return passes != 0 ? kMaxFilmChannels : kBeautyChannels;
}

// Scalars that describe the whole scene. Exactly one element in RenderData::globals.
struct SceneGlobals {
  Vec3f boundsMin, boundsMax;  // of all triangles and punctual lights
  // Environment: radiance = envScale * (envWidth ? texel lookup : 1). envWidth == 0 means a
  // constant environment of radiance envScale.
  Vec3f envScale;
  uint32_t envWidth, envHeight;  // equirectangular map, envTexels has width*height entries
  float envIntegral;             // sum of the env sampling weights (0: do not sample env)
  float emissiveTotalPower;      // sum of the emissive triangle weights (0: none)
  uint32_t maxDepth;             // maximum path length in bounces
  uint32_t seed;                 // scene seed for the sampler
  uint32_t hasAlpha;             // any material with alpha mask or blend
  // Directional albedo of the sheen lobe (bsdf.h), kSheenAlbedoSize^2 entries: row r is
  // sheen roughness r / (size - 1), column c is cos(theta) = c / (size - 1). Computed by the
  // host (compile.cpp) and shipped with the scene, so every device reads the same numbers.
  float sheenAlbedo[kSheenAlbedoSize * kSheenAlbedoSize];
};

}  // namespace pl::kernel
