// The GGX specular layer of core/kernel/bsdf.h against the glTF 2.0 specification's formulas,
// computed here independently in double precision (Appendix B, "Specular BRDF": the
// Trowbridge-Reitz/GGX D and the height-correlated Smith joint masking-shadowing G, as the
// specification's current text writes them; earlier revisions gave the separable G1(L) G1(V)),
// and the directional albedo of that layer by numerical integration against the kernel's
// importance-sampled estimate. The table it prints beside each also gives the albedo with the
// separable G that Blender 3.4's Cycles uses (bench/cycles_smith_study.sh measures what that
// does to an image).

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "core/kernel/bsdf.h"
#include "core/kernel/sampler.h"

namespace pl::kernel {
namespace {

struct Dir {
  double x, y, z;
};

Dir normalized(Dir d) {
  const double l = std::sqrt(d.x * d.x + d.y * d.y + d.z * d.z);
  return {d.x / l, d.y / l, d.z / l};
}

double dotd(Dir a, Dir b) { return a.x * b.x + a.y * b.y + a.z * b.z; }

// The specification's D: alpha^2 chi(N.H) / (pi ((N.H)^2 (alpha^2 - 1) + 1)^2).
double specD(double nh, double alpha) {
  if (nh <= 0) return 0;
  const double a2 = alpha * alpha, d = nh * nh * (a2 - 1) + 1;
  return a2 / (M_PI * d * d);
}

// The specification's visibility G / (4 |N.L| |N.V|), height-correlated:
//   chi(H.L) chi(H.V) / (2 (|N.V| sqrt(a2 + (1 - a2) (N.L)^2) + |N.L| sqrt(a2 + (1 - a2) (N.V)^2))).
double specVisibility(double nl, double nv, double hl, double hv, double alpha) {
  if (hl <= 0 || hv <= 0) return 0;
  const double a2 = alpha * alpha;
  return 1.0 / (2 * (nv * std::sqrt(a2 + (1 - a2) * nl * nl) +
                     nl * std::sqrt(a2 + (1 - a2) * nv * nv)));
}

// The separable form (earlier revisions of the specification, and Blender 3.4's Cycles):
//   G1(L) G1(V) / (4 |N.L| |N.V|), G1(X) = 2 |N.X| / (|N.X| + sqrt(a2 + (1 - a2) (N.X)^2)).
double separableVisibility(double nl, double nv, double hl, double hv, double alpha) {
  if (hl <= 0 || hv <= 0) return 0;
  const double a2 = alpha * alpha;
  return 1.0 / ((nl + std::sqrt(a2 + (1 - a2) * nl * nl)) *
                (nv + std::sqrt(a2 + (1 - a2) * nv * nv)));
}

// A white metal: the specification's metal_brdf with baseColor 1 is specular_brdf alone.
GltfBsdf whiteMetal(float roughness) {
  const Vec3f n = vec3(0.0f, 0.0f, 1.0f);
  return makeGltfBsdf(frameFromNormal(n), n, vec3(1.0f), 1.0f, roughness, 1.5f);
}

TEST(GgxSpecTest, WhiteMetalIsTheSpecificationsSpecularBrdf) {
  uint32_t checked = 0;
  for (float roughness : {0.2f, 0.35f, 0.5f, 0.75f, 1.0f}) {
    const double alpha = double(roughness) * roughness;
    const GltfBsdf b = whiteMetal(roughness);
    for (uint32_t i = 0; i < 4000; ++i) {
      // Directions over the upper hemisphere (cosines from 0.05 up).
      auto dir = [&](uint32_t dim) {
        const double z = 0.05 + 0.95 * sampleDimension(7, 0, 0, i, dim);
        const double phi = 2 * M_PI * sampleDimension(7, 0, 0, i, dim + 1);
        const double r = std::sqrt(1 - z * z);
        return Dir{r * std::cos(phi), r * std::sin(phi), z};
      };
      const Dir wo = dir(0), wi = dir(2);
      const Dir h = normalized({wo.x + wi.x, wo.y + wi.y, wo.z + wi.z});
      const double spec = specD(h.z, alpha) *
                          specVisibility(wi.z, wo.z, dotd(h, wi), dotd(h, wo), alpha) * wi.z;
      float pdf;
      const Vec3f f = evalGltfBsdf(b, vec3(float(wo.x), float(wo.y), float(wo.z)),
                                   vec3(float(wi.x), float(wi.y), float(wi.z)), &pdf);
      SCOPED_TRACE(::testing::Message() << "roughness " << roughness << " sample " << i);
      ASSERT_NEAR(f.x, spec, 2e-4 * spec + 1e-7) << "f cos(wi), against the specification";
      EXPECT_EQ(f.x, f.y);
      EXPECT_EQ(f.x, f.z);
      ++checked;
    }
  }
  EXPECT_EQ(checked, 20000u);
}

// The directional albedo of the specular BRDF, E(mu) = integral of f cos(wi) over the
// hemisphere, by the midpoint rule in (cos theta_i, phi_i) with `visibility` as the G term.
template <typename Visibility>
double quadratureAlbedo(double mu, double alpha, Visibility visibility) {
  const Dir wo{std::sqrt(1 - mu * mu), 0, mu};
  const int nz = 1500, nphi = 1500;
  double sum = 0;
  for (int i = 0; i < nz; ++i) {
    const double z = (i + 0.5) / nz;
    const double r = std::sqrt(1 - z * z);
    for (int j = 0; j < nphi; ++j) {
      const double phi = M_PI * (j + 0.5) / nphi;  // symmetric in phi: half the circle, twice
      const Dir wi{r * std::cos(phi), r * std::sin(phi), z};
      const Dir h = normalized({wo.x + wi.x, wo.y + wi.y, wo.z + wi.z});
      sum += specD(h.z, alpha) * visibility(z, mu, dotd(h, wi), dotd(h, wo), alpha) * z;
    }
  }
  return sum * 2 * M_PI / (double(nz) * nphi);
}

// The kernel's estimate: the mean sampled weight f cos / pdf (VNDF sampling).
double sampledAlbedo(const GltfBsdf& b, double mu, uint32_t n) {
  const Vec3f wo = vec3(float(std::sqrt(1 - mu * mu)), 0.0f, float(mu));
  double sum = 0;
  for (uint32_t i = 0; i < n; ++i) {
    BsdfSample s;
    const Vec2f u = {sampleDimension(3, 0, 0, i, 0), sampleDimension(3, 0, 0, i, 1)};
    if (sampleGltfBsdf(b, wo, sampleDimension(3, 0, 0, i, 2), u, &s)) sum += s.weight.x;
  }
  return sum / n;
}

TEST(GgxSpecTest, AlbedoTableMatchesNumericalIntegrationOfTheSpecification) {
  std::printf("GGX directional albedo E(mu), white metal: specification (quadrature) / kernel "
              "(sampled) / separable G as in Cycles 3.4 (quadrature)\n");
  for (float roughness : {0.3f, 0.5f, 0.7f, 1.0f}) {
    const double alpha = double(roughness) * roughness;
    const GltfBsdf b = whiteMetal(roughness);
    std::printf("  roughness %.1f:", roughness);
    for (double mu : {1.0, 0.7, 0.4, 0.2}) {
      const double spec = quadratureAlbedo(mu, alpha, specVisibility);
      const double sep = quadratureAlbedo(mu, alpha, separableVisibility);
      const double ours = sampledAlbedo(b, mu, 1 << 17);
      std::printf("  mu %.1f %.4f/%.4f/%.4f", mu, spec, ours, sep);
      EXPECT_NEAR(ours, spec, 0.004 + 0.004 * spec) << "roughness " << roughness << " mu " << mu;
      // Rough and grazing, the two G terms differ by more than that: the comparison tells them
      // apart.
      if (roughness >= 0.7f && mu <= 0.4) {
        EXPECT_GT(spec - sep, 0.01) << "roughness " << roughness << " mu " << mu;
      }
    }
    std::printf("\n");
  }
}

}  // namespace
}  // namespace pl::kernel
