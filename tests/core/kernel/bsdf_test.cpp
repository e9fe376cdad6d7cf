// Tests for core/kernel/bsdf.h: sampling/pdf consistency, albedo by two estimators, energy.
#include "core/kernel/bsdf.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/kernel/sampler.h"

namespace pl::kernel {
namespace {

struct Config {
  float roughness, metallic;
  Vec3f baseColor;
  float ior;
};

const Config kConfigs[] = {
    {1.0f, 0.0f, {1.0f, 1.0f, 1.0f}, 1.5f}, {0.5f, 0.0f, {0.8f, 0.3f, 0.1f}, 1.5f},
    {0.3f, 1.0f, {0.9f, 0.6f, 0.2f}, 1.5f}, {0.7f, 0.5f, {0.5f, 0.5f, 0.9f}, 1.5f},
    {0.4f, 0.0f, {0.2f, 0.9f, 0.2f}, 1.33f}, {0.05f, 1.0f, {1.0f, 1.0f, 1.0f}, 1.5f},
    {0.1f, 0.0f, {0.5f, 0.5f, 0.5f}, 1.5f},
};

GltfBsdf flatBsdf(const Config& c) {
  const Vec3f n = vec3(0.0f, 0.0f, 1.0f);
  return makeGltfBsdf(frameFromNormal(n), n, c.baseColor, c.metallic, c.roughness, c.ior);
}

Vec3f dirFromCos(float cosTheta) {
  return vec3(std::sqrt(1.0f - cosTheta * cosTheta), 0.0f, cosTheta);
}

// Mean of the sampled weights f cos / pdf: the directional albedo by importance sampling.
Vec3f sampledAlbedo(const GltfBsdf& b, Vec3f wo, uint32_t n) {
  Vec3f sum = vec3(0.0f);
  for (uint32_t i = 0; i < n; ++i) {
    BsdfSample s;
    const Vec2f u = {sampleDimension(1, 0, 0, i, 0), sampleDimension(1, 0, 0, i, 1)};
    if (sampleGltfBsdf(b, wo, sampleDimension(1, 0, 0, i, 2), u, &s)) sum += s.weight;
  }
  return sum / float(n);
}

// The same albedo by a stratified uniform hemisphere grid (pdf 1 / 2pi).
Vec3f uniformAlbedo(const GltfBsdf& b, Vec3f wo, int n) {
  double sum[3] = {0, 0, 0};
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) {
      const float z = (i + 0.5f) / n;
      const float phi = 2.0f * kPi * (j + 0.5f) / n;
      const float r = std::sqrt(1.0f - z * z);
      float pdf;
      const Vec3f f = evalGltfBsdf(b, wo, vec3(r * std::cos(phi), r * std::sin(phi), z), &pdf);
      sum[0] += f.x;
      sum[1] += f.y;
      sum[2] += f.z;
    }
  const double scale = 2.0 * M_PI / (double(n) * n);
  return vec3(float(sum[0] * scale), float(sum[1] * scale), float(sum[2] * scale));
}

TEST(BsdfTest, SamplePdfMatchesPdfAndWeightMatchesEval) {
  for (const Config& c : kConfigs) {
    const GltfBsdf b = flatBsdf(c);
    for (float cosO : {0.95f, 0.6f, 0.2f}) {
      const Vec3f wo = dirFromCos(cosO);
      int produced = 0;
      for (uint32_t i = 0; i < 2000; ++i) {
        BsdfSample s;
        const Vec2f u = {sampleDimension(2, 1, 0, i, 0), sampleDimension(2, 1, 0, i, 1)};
        if (!sampleGltfBsdf(b, wo, sampleDimension(2, 1, 0, i, 2), u, &s)) continue;
        ++produced;
        ASSERT_NEAR(length(s.wi), 1.0f, 1e-4f);
        float pdf;
        const Vec3f f = evalGltfBsdf(b, wo, s.wi, &pdf);
        ASSERT_NEAR(s.pdf, pdf, 1e-4f * pdf) << "roughness " << c.roughness;
        EXPECT_NEAR(pdfGltfBsdf(b, wo, s.wi), pdf, 1e-6f * pdf);
        const Vec3f expected = f / pdf;
        ASSERT_NEAR(s.weight.x, expected.x, 1e-4f * (1.0f + expected.x));
        ASSERT_NEAR(s.weight.z, expected.z, 1e-4f * (1.0f + expected.z));
      }
      EXPECT_GT(produced, 1000) << "roughness " << c.roughness << " cosO " << cosO;
    }
  }
}

TEST(BsdfTest, PdfIntegratesToAtMostOne) {
  for (const Config& c : kConfigs) {
    if (c.roughness < 0.3f) continue;  // too peaked for a grid
    const GltfBsdf b = flatBsdf(c);
    const Vec3f wo = dirFromCos(0.7f);
    double sum = 0;
    const int n = 400;
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < n; ++j) {
        const float z = (i + 0.5f) / n, phi = 2.0f * kPi * (j + 0.5f) / n;
        const float r = std::sqrt(1.0f - z * z);
        sum += pdfGltfBsdf(b, wo, vec3(r * std::cos(phi), r * std::sin(phi), z));
      }
    sum *= 2.0 * M_PI / (double(n) * n);
    // Mass of VNDF-sampled reflections that would go below the horizon is rejected.
    EXPECT_LE(sum, 1.01) << "roughness " << c.roughness;
    EXPECT_GE(sum, 0.85) << "roughness " << c.roughness;
  }
}

TEST(BsdfTest, SampledAlbedoMatchesUniformEstimate) {
  for (const Config& c : kConfigs) {
    if (c.roughness < 0.3f) continue;  // a grid cannot resolve a sharp lobe
    const GltfBsdf b = flatBsdf(c);
    for (float cosO : {0.9f, 0.5f, 0.25f}) {
      const Vec3f wo = dirFromCos(cosO);
      const Vec3f a = sampledAlbedo(b, wo, 1 << 16);
      const Vec3f ref = uniformAlbedo(b, wo, 500);
      SCOPED_TRACE(::testing::Message() << "roughness " << c.roughness << " cos " << cosO);
      EXPECT_NEAR(a.x, ref.x, 0.01f + 0.01f * ref.x);
      EXPECT_NEAR(a.y, ref.y, 0.01f + 0.01f * ref.y);
      EXPECT_NEAR(a.z, ref.z, 0.01f + 0.01f * ref.z);
    }
  }
}

TEST(BsdfTest, WhiteMaterialsDoNotCreateEnergy) {
  // Metals (specular only) never reflect more than they receive. Single-scattering GGX loses
  // energy with roughness: at alpha = 1 and normal incidence the albedo is 1 - ln 2 = 0.307.
  // Dielectrics weight their two lobes by Fresnel at the shading normal (bsdf.h), a convex
  // mix, so they conserve energy at every angle. (The specification's per-direction
  // 1 - F(wo.h) weighting reflected 1.29 at cos 0.1, roughness 0.3: this test catches it.)
  const Vec3f white = vec3(1.0f);
  const Vec3f n = vec3(0.0f, 0.0f, 1.0f);
  for (float roughness : {0.0f, 0.1f, 0.3f, 0.6f, 1.0f}) {
    for (float cosO : {1.0f, 0.7f, 0.3f, 0.1f}) {
      const GltfBsdf metal = makeGltfBsdf(frameFromNormal(n), n, white, 1.0f, roughness, 1.5f);
      const Vec3f a = sampledAlbedo(metal, dirFromCos(cosO), 1 << 14);
      EXPECT_LE(maxComponent(a), 1.002f) << "metal, roughness " << roughness << " cos " << cosO;
      EXPECT_GT(a.x, 0.25f) << "metal, roughness " << roughness << " cos " << cosO;
      for (float metallic : {0.0f, 0.5f}) {
        const GltfBsdf b = makeGltfBsdf(frameFromNormal(n), n, white, metallic, roughness, 1.5f);
        const Vec3f d = sampledAlbedo(b, dirFromCos(cosO), 1 << 14);
        EXPECT_LE(maxComponent(d), 1.005f) << roughness << " " << metallic << " " << cosO;
        EXPECT_GT(d.x, 0.6f) << roughness << " " << metallic << " " << cosO;
      }
    }
  }
  // The analytic value at alpha = 1, cos = 1: f = 1 / (2 pi (cos_i + 1)), albedo 1 - ln 2.
  const GltfBsdf rough = makeGltfBsdf(frameFromNormal(n), n, white, 1.0f, 1.0f, 1.5f);
  EXPECT_NEAR(sampledAlbedo(rough, n, 1 << 16).x, 1.0f - std::log(2.0f), 0.003f);
}

TEST(BsdfTest, IndexMatchedDielectricIsExactLambert) {
  // ior 1: no specular layer; f = baseColor / pi and every sample weighs baseColor.
  const Config c = {0.5f, 0.0f, {1.0f, 1.0f, 1.0f}, 1.0f};
  const GltfBsdf b = flatBsdf(c);
  const Vec3f wo = dirFromCos(0.3f);
  for (uint32_t i = 0; i < 1000; ++i) {
    BsdfSample s;
    const Vec2f u = {sampleDimension(3, 0, 0, i, 0), sampleDimension(3, 0, 0, i, 1)};
    if (!sampleGltfBsdf(b, wo, 0.5f, u, &s)) continue;
    EXPECT_NEAR(s.weight.x, 1.0f, 1e-5f);
    EXPECT_NEAR(s.pdf, s.wi.z * kInvPi, 1e-5f);
  }
}

TEST(BsdfTest, SmoothWhiteMetalIsAMirror) {
  const Config c = {0.0f, 1.0f, {1.0f, 1.0f, 1.0f}, 1.5f};
  const GltfBsdf b = flatBsdf(c);
  const Vec3f wo = normalize(vec3(0.3f, 0.2f, 0.8f));
  BsdfSample s;
  ASSERT_TRUE(sampleGltfBsdf(b, wo, 0.5f, {0.3f, 0.6f}, &s));
  const Vec3f mirror = vec3(-wo.x, -wo.y, wo.z);
  EXPECT_GT(dot(s.wi, mirror), 0.999f);
  EXPECT_NEAR(s.weight.x, 1.0f, 0.01f);
}

TEST(BsdfTest, NoLightBelowTheGeometricSurface) {
  // Shading normal tilted 40 degrees away from the geometric normal (as with a normal map):
  // directions above the shading hemisphere but below the geometry get nothing.
  const Vec3f ng = vec3(0.0f, 0.0f, 1.0f);
  const Vec3f ns = normalize(vec3(std::sin(0.7f), 0.0f, std::cos(0.7f)));
  const GltfBsdf b = makeGltfBsdf(frameFromNormal(ns), ng, vec3(0.8f), 0.0f, 0.8f, 1.5f);
  const Vec3f wo = normalize(vec3(-0.2f, 0.1f, 0.9f));
  const Vec3f below = normalize(vec3(1.0f, 0.0f, -0.1f));  // above ns, below ng
  ASSERT_GT(dot(below, ns), 0.0f);
  float pdf;
  EXPECT_TRUE(isBlack(evalGltfBsdf(b, wo, below, &pdf)));
  for (uint32_t i = 0; i < 2000; ++i) {
    BsdfSample s;
    const Vec2f u = {sampleDimension(4, 0, 0, i, 0), sampleDimension(4, 0, 0, i, 1)};
    if (sampleGltfBsdf(b, wo, sampleDimension(4, 0, 0, i, 2), u, &s)) {
      ASSERT_GT(dot(s.wi, ng), 0.0f);
      ASSERT_GT(dot(s.wi, ns), 0.0f);
    }
  }
}

// ---- The KHR_materials_* layers ----

const float* sheenTable() {
  static float table[kSheenAlbedoSize * kSheenAlbedoSize];
  static const bool filled = (fillSheenAlbedoTable(table), true);
  (void)filled;
  return table;
}

struct Layered {
  const char* name;
  float roughness, metallic;
  Vec3f baseColor;
  float ior;
  GltfLayers layers;
  float shadingTilt = 0.0f;  // radians: the shading normal (a normal map's) leans towards +x
};

std::vector<Layered> layeredConfigs() {
  std::vector<Layered> out;
  GltfLayers thin;
  thin.transmission = 1.0f;
  out.push_back({"thin glass", 0.3f, 0.0f, vec3(1.0f), 1.5f, thin});
  out.push_back({"thin half glass", 0.5f, 0.0f, vec3(0.8f, 0.5f, 0.3f), 1.5f, thin});
  GltfLayers volume = thin;
  volume.volume = true;
  out.push_back({"glass entering", 0.3f, 0.0f, vec3(1.0f), 1.5f, volume});
  volume.inside = true;
  out.push_back({"glass leaving", 0.4f, 0.0f, vec3(1.0f), 1.5f, volume});
  volume.inside = false;
  volume.transmission = 0.5f;
  out.push_back({"half glass entering", 0.6f, 0.0f, vec3(0.9f, 0.6f, 0.3f), 1.33f, volume});
  GltfLayers coat;
  coat.clearcoat = 1.0f;
  coat.clearcoatRoughness = 0.3f;
  out.push_back({"clearcoat on paint", 0.6f, 0.0f, vec3(0.7f, 0.1f, 0.1f), 1.5f, coat});
  coat.clearcoatRoughness = 0.5f;
  out.push_back({"clearcoat on metal", 0.4f, 1.0f, vec3(0.9f, 0.7f, 0.3f), 1.5f, coat});
  // A normal-mapped base under a coat on the geometry's normal: two different frames.
  coat.hasCoatFrame = true;
  coat.coatFrame = frameFromNormal(vec3(0.0f, 0.0f, 1.0f));
  out.push_back({"clearcoat over a normal map", 0.3f, 0.0f, vec3(0.6f), 1.5f, coat, 0.45f});
  GltfLayers sheen;
  sheen.sheenColor = vec3(0.9f, 0.8f, 0.7f);
  sheen.sheenRoughness = 0.5f;
  sheen.sheenAlbedo = sheenTable();
  out.push_back({"sheen on fabric", 1.0f, 0.0f, vec3(0.2f, 0.3f, 0.6f), 1.5f, sheen});
  GltfLayers specular;
  specular.specular = 0.5f;
  specular.specularColor = vec3(1.0f, 0.5f, 0.2f);
  out.push_back({"tinted specular", 0.4f, 0.0f, vec3(0.5f), 1.5f, specular});
  GltfLayers all = volume;
  all.clearcoat = 0.7f;
  all.clearcoatRoughness = 0.4f;
  all.sheenColor = vec3(0.3f);
  all.sheenRoughness = 0.7f;
  all.sheenAlbedo = sheenTable();
  out.push_back({"everything", 0.5f, 0.2f, vec3(0.6f), 1.45f, all});
  return out;
}

GltfBsdf layeredBsdf(const Layered& c) {
  const Vec3f ng = vec3(0.0f, 0.0f, 1.0f);
  const Vec3f ns = vec3(std::sin(c.shadingTilt), 0.0f, std::cos(c.shadingTilt));
  return makeGltfBsdf(frameFromNormal(ns), ng, c.baseColor, c.metallic, c.roughness, c.ior,
                      c.layers);
}

// Over the whole sphere of directions (reflection and transmission), stratified in cos.
Vec3f uniformSphereAlbedo(const GltfBsdf& b, Vec3f wo, int n, double* pdfMass = nullptr) {
  double sum[3] = {0, 0, 0}, mass = 0;
  for (int i = 0; i < 2 * n; ++i)
    for (int j = 0; j < n; ++j) {
      const float z = -1.0f + (i + 0.5f) / n;
      const float phi = 2.0f * kPi * (j + 0.5f) / n;
      const float r = std::sqrt(std::max(0.0f, 1.0f - z * z));
      float pdf;
      const Vec3f f = evalGltfBsdf(b, wo, vec3(r * std::cos(phi), r * std::sin(phi), z), &pdf);
      sum[0] += f.x;
      sum[1] += f.y;
      sum[2] += f.z;
      mass += pdf;
    }
  const double scale = 2.0 * M_PI / (double(n) * n);
  if (pdfMass) *pdfMass = mass * scale;
  return vec3(float(sum[0] * scale), float(sum[1] * scale), float(sum[2] * scale));
}

TEST(BsdfLayersTest, SamplePdfMatchesPdfAndWeightMatchesEval) {
  for (const Layered& c : layeredConfigs()) {
    const GltfBsdf b = layeredBsdf(c);
    for (float cosO : {0.95f, 0.6f, 0.2f}) {
      const Vec3f wo = dirFromCos(cosO);
      int produced = 0, transmitted = 0;
      for (uint32_t i = 0; i < 4000; ++i) {
        BsdfSample s;
        const Vec2f u = {sampleDimension(5, 1, 0, i, 0), sampleDimension(5, 1, 0, i, 1)};
        if (!sampleGltfBsdf(b, wo, sampleDimension(5, 1, 0, i, 2), u, &s)) continue;
        ++produced;
        transmitted += s.transmitted;
        ASSERT_EQ(s.transmitted, s.wi.z < 0.0f) << c.name;
        ASSERT_NEAR(length(s.wi), 1.0f, 1e-4f);
        float pdf;
        const Vec3f f = evalGltfBsdf(b, wo, s.wi, &pdf);
        ASSERT_NEAR(s.pdf, pdf, 1e-3f * pdf) << c.name;
        const Vec3f expected = f / pdf;
        ASSERT_NEAR(s.weight.x, expected.x, 1e-3f * (1.0f + expected.x)) << c.name;
        ASSERT_NEAR(s.weight.z, expected.z, 1e-3f * (1.0f + expected.z)) << c.name;
      }
      EXPECT_GT(produced, 2000) << c.name << " cosO " << cosO;
      if (c.layers.transmission > 0.0f && !(c.layers.inside && cosO < 0.75f))
        EXPECT_GT(transmitted, 200) << c.name << " cosO " << cosO;
      if (c.layers.transmission == 0.0f) EXPECT_EQ(transmitted, 0) << c.name;
    }
  }
}

TEST(BsdfLayersTest, PdfIntegratesToAtMostOneAndAlbedosAgree) {
  for (const Layered& c : layeredConfigs()) {
    const GltfBsdf b = layeredBsdf(c);
    for (float cosO : {0.9f, 0.5f}) {
      SCOPED_TRACE(::testing::Message() << c.name << " cos " << cosO);
      const Vec3f wo = dirFromCos(cosO);
      double mass;
      const Vec3f ref = uniformSphereAlbedo(b, wo, 400, &mass);
      EXPECT_LE(mass, 1.01);
      EXPECT_GE(mass, 0.8);
      const Vec3f a = sampledAlbedo(b, wo, 1 << 16);
      EXPECT_NEAR(a.x, ref.x, 0.015f + 0.015f * ref.x);
      EXPECT_NEAR(a.y, ref.y, 0.015f + 0.015f * ref.y);
      EXPECT_NEAR(a.z, ref.z, 0.015f + 0.015f * ref.z);
    }
  }
}

// White furnaces: a white, lossless layer stack never reflects and transmits more than it
// receives, and a smooth one (where single-scattering GGX loses nothing) all of it.
TEST(BsdfLayersTest, WhiteGlassConservesEnergy) {
  for (bool volume : {false, true})
    for (bool inside : {false, true}) {
      if (inside && !volume) continue;
      GltfLayers l;
      l.transmission = 1.0f;
      l.volume = volume;
      l.inside = inside;
      for (float roughness : {0.0f, 0.2f, 0.5f})
        for (float cosO : {1.0f, 0.8f, 0.5f, 0.2f}) {
          const GltfBsdf b = makeGltfBsdf(frameFromNormal(vec3(0.0f, 0.0f, 1.0f)),
                                          vec3(0.0f, 0.0f, 1.0f), vec3(1.0f), 0.0f, roughness,
                                          1.5f, l);
          // An index-matched volume (ior 1) passes everything straight on.
          const GltfBsdf matched = makeGltfBsdf(frameFromNormal(vec3(0.0f, 0.0f, 1.0f)),
                                                vec3(0.0f, 0.0f, 1.0f), vec3(1.0f), 0.0f,
                                                roughness, 1.0f, l);
          EXPECT_GT(sampledAlbedo(matched, dirFromCos(cosO), 1 << 10).x, 0.7f);
          const Vec3f a = sampledAlbedo(b, dirFromCos(cosO), 1 << 14);
          SCOPED_TRACE(::testing::Message() << "volume " << volume << " inside " << inside
                                            << " roughness " << roughness << " cos " << cosO);
          EXPECT_LE(a.x, 1.005f);
          // Rough glass loses what single-scattering GGX loses, and from inside also the
          // microfacets that reflect totally (no multiple scattering between them).
          EXPECT_GT(a.x, roughness == 0.0f ? 0.995f : inside ? 0.6f : 0.75f);
        }
    }
}

TEST(BsdfLayersTest, SmoothGlassSplitsByFresnelAndRefractsBySnell) {
  GltfLayers l;
  l.transmission = 1.0f;
  l.volume = true;
  const Vec3f n = vec3(0.0f, 0.0f, 1.0f);
  const GltfBsdf b = makeGltfBsdf(frameFromNormal(n), n, vec3(1.0f), 0.0f, 0.0f, 1.5f, l);
  const float cosO = 0.6f, sinO = 0.8f;
  const Vec3f wo = dirFromCos(cosO);
  double reflected = 0, transmitted = 0;
  uint32_t bent = 0, offSnell = 0;
  const uint32_t count = 1 << 14;
  for (uint32_t i = 0; i < count; ++i) {
    BsdfSample s;
    const Vec2f u = {sampleDimension(6, 0, 0, i, 0), sampleDimension(6, 0, 0, i, 1)};
    if (!sampleGltfBsdf(b, wo, sampleDimension(6, 0, 0, i, 2), u, &s)) continue;
    if (s.transmitted) {
      transmitted += s.weight.x;
      // Snell: sin(theta_t) = sin(theta_o) / 1.5, on the far side of wo's plane of incidence
      // (but for GGX's long tails, which even alpha = 0.001 has).
      ++bent;
      offSnell += std::fabs(std::sqrt(s.wi.x * s.wi.x + s.wi.y * s.wi.y) - sinO / 1.5f) > 0.01f ||
                  !(s.wi.x < 0.0f);
    } else {
      reflected += s.weight.x;
    }
  }
  EXPECT_LT(offSnell, bent / 200);
  EXPECT_NEAR(reflected / count, fresnelDielectric(cosO, 1.5f), 0.005);
  EXPECT_NEAR(transmitted / count, 1.0 - fresnelDielectric(cosO, 1.5f), 0.005);
}

// Reciprocity. The refracting BTDF carries no 1/eta^2 radiance scaling (bsdf.h), so it obeys
// f(wo -> wi, eta) = eta^2 f(wi -> wo, 1/eta); the thin wall's and the sheen's lobes are
// symmetric. Clearcoat and the dielectric's Fresnel weights are taken at wo (bsdf.h), which
// is not reciprocal by design, so they are off here (specular 0, ior 1).
TEST(BsdfLayersTest, Reciprocity) {
  const Vec3f up = vec3(0.0f, 0.0f, 1.0f), down = vec3(0.0f, 0.0f, -1.0f);
  const Vec3f a = normalize(vec3(0.3f, 0.2f, 0.9f));
  const Vec3f below = normalize(vec3(-0.2f, -0.1f, -0.8f));
  float pdf;
  {
    GltfLayers l;
    l.transmission = 1.0f;
    l.volume = true;
    l.specular = 0.0f;
    const GltfBsdf enter = makeGltfBsdf(frameFromNormal(up), up, vec3(1.0f), 0.0f, 0.4f, 1.5f, l);
    l.inside = true;
    const GltfBsdf leave =
        makeGltfBsdf(frameFromNormal(down), down, vec3(1.0f), 0.0f, 0.4f, 1.5f, l);
    const float fIn = evalGltfBsdf(enter, a, below, &pdf).x / std::fabs(below.z);
    const float fOut = evalGltfBsdf(leave, below, a, &pdf).x / std::fabs(a.z);
    ASSERT_GT(fIn, 0.0f);
    EXPECT_NEAR(fIn, 1.5f * 1.5f * fOut, 1e-4f * fIn);
  }
  {
    GltfLayers l;
    l.transmission = 1.0f;
    l.specular = 0.0f;
    const GltfBsdf top = makeGltfBsdf(frameFromNormal(up), up, vec3(1.0f), 0.0f, 0.4f, 1.5f, l);
    const GltfBsdf bottom =
        makeGltfBsdf(frameFromNormal(down), down, vec3(1.0f), 0.0f, 0.4f, 1.5f, l);
    const float f1 = evalGltfBsdf(top, a, below, &pdf).x / std::fabs(below.z);
    const float f2 = evalGltfBsdf(bottom, below, a, &pdf).x / std::fabs(a.z);
    ASSERT_GT(f1, 0.0f);
    EXPECT_NEAR(f1, f2, 1e-5f * f1);
  }
  {
    GltfLayers l;
    l.sheenColor = vec3(0.8f);
    l.sheenRoughness = 0.4f;
    l.sheenAlbedo = sheenTable();
    const GltfBsdf b = makeGltfBsdf(frameFromNormal(up), up, vec3(0.5f), 0.0f, 1.0f, 1.0f, l);
    const Vec3f c = normalize(vec3(-0.7f, 0.1f, 0.3f));
    const float f1 = evalGltfBsdf(b, a, c, &pdf).x / c.z;
    const float f2 = evalGltfBsdf(b, c, a, &pdf).x / a.z;
    EXPECT_NEAR(f1, f2, 1e-5f * f1);
  }
}

TEST(BsdfLayersTest, SheenTableIsTheLobesAlbedo) {
  // The table (a grid integral) against Monte Carlo: a black, specular-free base under a white
  // sheen reflects exactly the sheen lobe's albedo E(wo).
  for (float roughness : {0.2f, 0.5f, 1.0f})
    for (float cosO : {0.9f, 0.5f, 0.2f}) {
      GltfLayers l;
      l.sheenColor = vec3(1.0f);
      l.sheenRoughness = roughness;
      l.sheenAlbedo = sheenTable();
      const Vec3f n = vec3(0.0f, 0.0f, 1.0f);
      const GltfBsdf b = makeGltfBsdf(frameFromNormal(n), n, vec3(0.0f), 0.0f, 1.0f, 1.0f, l);
      const float e = sheenAlbedo(sheenTable(), roughness, cosO);
      EXPECT_NEAR(sampledAlbedo(b, dirFromCos(cosO), 1 << 17).x, e, 0.01f + 0.03f * e)
          << "roughness " << roughness << " cos " << cosO;
    }
}

TEST(BsdfLayersTest, CoatsAndSheenDoNotCreateEnergy) {
  // White Lambertian (ior 1: no specular layer) under a white clearcoat or a white sheen.
  const Vec3f n = vec3(0.0f, 0.0f, 1.0f);
  for (float cosO : {1.0f, 0.6f, 0.2f}) {
    for (float coatRoughness : {0.0f, 0.3f}) {
      GltfLayers l;
      l.clearcoat = 1.0f;
      l.clearcoatRoughness = coatRoughness;
      const GltfBsdf b = makeGltfBsdf(frameFromNormal(n), n, vec3(1.0f), 0.0f, 1.0f, 1.0f, l);
      const float a = sampledAlbedo(b, dirFromCos(cosO), 1 << 15).x;
      EXPECT_LE(a, 1.005f) << "coat " << coatRoughness << " cos " << cosO;
      EXPECT_GT(a, 0.93f) << "coat " << coatRoughness << " cos " << cosO;
    }
    for (float sheenRoughness : {0.3f, 0.8f}) {
      GltfLayers l;
      l.sheenColor = vec3(1.0f);
      l.sheenRoughness = sheenRoughness;
      l.sheenAlbedo = sheenTable();
      const GltfBsdf b = makeGltfBsdf(frameFromNormal(n), n, vec3(1.0f), 0.0f, 1.0f, 1.0f, l);
      const float a = sampledAlbedo(b, dirFromCos(cosO), 1 << 15).x;
      EXPECT_LE(a, 1.01f) << "sheen " << sheenRoughness << " cos " << cosO;
      EXPECT_GT(a, 0.8f) << "sheen " << sheenRoughness << " cos " << cosO;
    }
  }
}

TEST(BsdfLayersTest, SpecularExtensionScalesAndTintsTheFresnelWeight) {
  const Vec3f n = vec3(0.0f, 0.0f, 1.0f);
  GltfLayers l;
  const GltfBsdf plain = makeGltfBsdf(frameFromNormal(n), n, vec3(0.5f), 0.0f, 0.3f, 1.5f, l);
  for (float c : {1.0f, 0.5f, 0.1f})
    EXPECT_NEAR(dielectricFresnel(plain, c).x, fresnelDielectric(c, 1.5f), 1e-6f);
  l.specular = 0.5f;
  l.specularColor = vec3(1.0f, 0.5f, 0.0f);
  const GltfBsdf tinted = makeGltfBsdf(frameFromNormal(n), n, vec3(0.5f), 0.0f, 0.3f, 1.5f, l);
  const Vec3f f0 = dielectricFresnel(tinted, 1.0f);
  EXPECT_NEAR(f0.x, 0.5f * 0.04f, 1e-6f);
  EXPECT_NEAR(f0.y, 0.5f * 0.02f, 1e-6f);
  EXPECT_NEAR(f0.z, 0.0f, 1e-6f);
  EXPECT_NEAR(dielectricFresnel(tinted, 0.0f).z, 0.5f, 1e-6f);  // grazing goes to specular
  l.specular = 0.0f;
  const GltfBsdf none = makeGltfBsdf(frameFromNormal(n), n, vec3(1.0f), 0.0f, 0.3f, 1.5f, l);
  EXPECT_NEAR(sampledAlbedo(none, dirFromCos(0.3f), 1 << 12).x, 1.0f, 1e-4f);  // Lambert
}

}  // namespace
}  // namespace pl::kernel
