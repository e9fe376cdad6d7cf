// compile(): Scene -> RenderData. See compile.h for the sampling tables' definitions.

#include "core/scene/compile.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstdlib>

#include "core/kernel/bsdf.h"
#include "core/kernel/texture.h"
#include "core/scene/texture_mips.h"

namespace pl {
namespace {

using kernel::Vec3f;

constexpr double kPi = 3.14159265358979323846;
constexpr float kDefaultFovY = float(40.0 * kPi / 180.0);

float srgbToLinear(uint8_t v) {
  float c = float(v) / 255.0f;
  return c <= 0.04045f ? c / 12.92f : std::pow((c + 0.055f) / 1.055f, 2.4f);
}

// Mean linear luminance of an sRGB-encoded texture.
double meanLuminance(const SceneTexture& t) {
  float table[256];
  for (int i = 0; i < 256; ++i) table[i] = srgbToLinear(uint8_t(i));
  double sum = 0.0;
  for (const kernel::Rgba8& p : t.texels())
    sum += kernel::luminance({table[p.r], table[p.g], table[p.b]});
  return t.texels().empty() ? 0.0 : sum / double(t.texels().size());
}

// Writes an inclusive CDF of weights[0..n) into cdf, last entry exactly 1; uniform when the
// weights sum to 0. Returns the sum.
double buildCdf(const double* weights, size_t n, float* cdf) {
  double total = 0.0;
  for (size_t i = 0; i < n; ++i) total += weights[i];
  if (n == 0) return total;
  if (!(total > 0.0)) {
    for (size_t i = 0; i < n; ++i) cdf[i] = float(double(i + 1) / double(n));
  } else {
    double running = 0.0;
    for (size_t i = 0; i < n; ++i) {
      running += weights[i];
      cdf[i] = std::fmin(float(running / total), 1.0f);
    }
  }
  cdf[n - 1] = 1.0f;
  return total;
}

Status checkImageSize(const CompileOptions& options) {
  if (options.width == 0 || options.height == 0 || options.width > kMaxImageDimension ||
      options.height > kMaxImageDimension)
    return Error{"image size " + std::to_string(options.width) + "x" +
                 std::to_string(options.height) + " is not within 1.." +
                 std::to_string(kMaxImageDimension)};
  return Status();
}

void fillEnvironment(const EnvironmentMap& env, RenderData& rd, kernel::SceneGlobals& g) {
  const uint32_t w = env.width, h = env.height;
  g.envWidth = w;
  g.envHeight = h;
  g.envScale = {1, 1, 1};
  rd.envTexels = env.texels;
  rd.envConditionalCdf.resize(size_t(w) * h);
  rd.envMarginalCdf.resize(h);
  std::vector<double> weights(w), rowSums(h);
  for (uint32_t y = 0; y < h; ++y) {
    double s = std::sin(kPi * (double(y) + 0.5) / double(h));
    for (uint32_t x = 0; x < w; ++x)
      weights[x] = std::fmax(double(kernel::luminance(env.texels[size_t(y) * w + x])), 0.0) * s;
    rowSums[y] = buildCdf(weights.data(), w, rd.envConditionalCdf.data() + size_t(y) * w);
  }
  g.envIntegral = float(buildCdf(rowSums.data(), h, rd.envMarginalCdf.data()));
}

// Whether the scene brings its own lighting, so that the default environment is black:
// punctual lights, or emissive triangles whose material has no emissive texture. Emissive
// textures are screens, decals and lamps' glow (DamagedHelmet, ToyCar), not what lights a
// scene: with only those, the default sky stays white.
bool lightsTheScene(const RenderData& rd) {
  if (!rd.lights.empty()) return true;
  for (uint32_t t : rd.emissiveTriangles)
    if (rd.materials[rd.triangles[t].material].emissiveTexture == kernel::kNoTexture) return true;
  return false;
}

}  // namespace

namespace {

Result<kernel::Camera> sceneCamera(const Scene& scene, const CompileOptions& o) {
  kernel::Camera cam{};
  cam.width = o.width;
  cam.height = o.height;
  const float aspect = float(o.width) / float(o.height);
  const SceneCamera* chosen = nullptr;
  if (!o.camera.empty()) {
    for (const SceneCamera& c : scene.cameras)
      if (c.name == o.camera) {
        chosen = &c;
        break;
      }
    if (!chosen) {
      char* end = nullptr;
      errno = 0;
      unsigned long index = std::strtoul(o.camera.c_str(), &end, 10);
      bool isNumber = end && *end == '\0' && errno == 0 && o.camera[0] >= '0' && o.camera[0] <= '9';
      if (!isNumber || index >= scene.cameras.size()) {
        std::string names;
        for (size_t i = 0; i < scene.cameras.size(); ++i)
          names += (i ? ", " : "") + std::to_string(i) + " '" + scene.cameras[i].name + "'";
        return Error{scene.path + ": no camera '" + o.camera + "' (the scene has " +
                     (names.empty() ? std::string("none") : names) + ")"};
      }
      chosen = &scene.cameras[index];
    }
  } else if (!scene.cameras.empty()) {
    chosen = &scene.cameras[0];
  }
  if (o.lookAt) {
    const float fallback = chosen && chosen->type == kernel::kCameraPerspective
                               ? std::tan(chosen->yfov * 0.5f)
                               : std::tan(kDefaultFovY * 0.5f);
    return lookAtCamera(*o.lookAt, o.width, o.height, fallback);
  }
  if (chosen) {
    cam.type = chosen->type;
    cam.position = chosen->position;
    cam.forward = kernel::normalize(chosen->forward);
    cam.right = kernel::normalize(kernel::cross(cam.forward, chosen->up));
    cam.up = kernel::cross(cam.right, cam.forward);
    cam.tanHalfFovY =
        chosen->type == kernel::kCameraPerspective ? std::tan(chosen->yfov * 0.5f) : 0.0f;
    cam.orthoHalfHeight = chosen->type == kernel::kCameraOrthographic ? chosen->ymag : 0.0f;
    return cam;
  }
  // Frame the bounding sphere from +Z with a 40 degree vertical field of view (narrower
  // horizontally when the image is taller than wide).
  Vec3f lo = scene.boundsMin, hi = scene.boundsMax;
  Vec3f centre{0, 0, 0};
  float radius = 1.0f;
  if (lo.x <= hi.x && lo.y <= hi.y && lo.z <= hi.z) {
    centre = (lo + hi) * 0.5f;
    radius = kernel::length(hi - lo) * 0.5f;
    if (!(radius > 0.0f)) radius = 1.0f;
  }
  float tanHalf = std::tan(kDefaultFovY * 0.5f);
  float halfFov = std::atan(tanHalf * std::fmin(aspect, 1.0f));
  float distance = radius / std::sin(halfFov);
  cam.type = kernel::kCameraPerspective;
  cam.position = centre + Vec3f{0, 0, distance};
  cam.forward = {0, 0, -1};
  cam.right = {1, 0, 0};
  cam.up = {0, 1, 0};
  cam.tanHalfFovY = tanHalf;
  cam.orthoHalfHeight = 0.0f;
  return cam;
}

}  // namespace

Result<kernel::Camera> compileCamera(const Scene& scene, const CompileOptions& o) {
  if (Status s = checkImageSize(o); !s.ok()) return s.error();
  if ((o.passes & ~kernel::kAllPasses) != 0)
    return Error{"unknown passes " + std::to_string(o.passes)};
  Result<kernel::Camera> cam = sceneCamera(scene, o);
  if (cam.ok()) cam->passes = o.passes;
  return cam;
}

Result<RenderData> compile(const Scene& scene, const CompileOptions& options) {
  if (options.envFile.empty()) return compile(scene, options, nullptr);
  auto env = loadEnvironmentMap(options.envFile);
  if (!env.ok()) return env.error();
  return compile(scene, options, &*env);
}

Result<RenderData> compile(const Scene& scene, const CompileOptions& options,
                           const EnvironmentMap* environment) {
  if (Status s = checkImageSize(options); !s.ok()) return s.error();
  if (options.envColor && !(kernel::isFinite(*options.envColor) && options.envColor->x >= 0 &&
                            options.envColor->y >= 0 && options.envColor->z >= 0))
    return Error{"environment colour must be finite and not negative"};
  if (environment &&
      (environment->width == 0 || environment->height == 0 ||
       environment->texels.size() != size_t(environment->width) * environment->height))
    return Error{"environment map has an inconsistent size"};

  RenderData rd;
  // Geometry.
  uint64_t vertexCount = 0, triangleCount = 0;
  for (const Mesh& m : scene.meshes) {
    if (!scene.shown(m)) continue;
    vertexCount += m.positions.size();
    triangleCount += m.indices.size() / 3;
  }
  if (vertexCount >= 0xffffffffu || triangleCount >= 0xffffffffu)
    return Error{scene.path + ": too many vertices or triangles for 32-bit indices"};
  rd.positions.reserve(vertexCount);
  rd.normals.reserve(vertexCount);
  rd.uvs.reserve(vertexCount);
  rd.tangents.reserve(vertexCount);
  rd.triangles.reserve(triangleCount);
  for (const Mesh& m : scene.meshes) {
    if (!scene.shown(m)) continue;
    const size_t n = m.positions.size();
    if (m.normals.size() != n || m.uvs.size() != n || m.tangents.size() != n ||
        m.material >= scene.materials.size())
      return Error{scene.path + ": mesh '" + m.name + "' is inconsistent (a loader bug)"};
    const uint32_t base = uint32_t(rd.positions.size());
    if (n > 0 || m.indices.size() >= 3)  // empty meshes are not listed (validate())
      rd.meshes.push_back({uint32_t(rd.triangles.size()), uint32_t(m.indices.size() / 3), base,
                           uint32_t(n), m.dynamic ? uint32_t(kernel::kMeshDynamic) : 0u});
    rd.positions.insert(rd.positions.end(), m.positions.begin(), m.positions.end());
    rd.normals.insert(rd.normals.end(), m.normals.begin(), m.normals.end());
    rd.uvs.insert(rd.uvs.end(), m.uvs.begin(), m.uvs.end());
    rd.tangents.insert(rd.tangents.end(), m.tangents.begin(), m.tangents.end());
    for (size_t i = 0; i + 2 < m.indices.size(); i += 3)
      rd.triangles.push_back(
          {base + m.indices[i], base + m.indices[i + 1], base + m.indices[i + 2], m.material});
  }

  // Materials and textures.
  rd.materials = scene.materials;
  // Each texture's level 0 in `texels`, its levels below in `mipTexels` (texture_mips.h).
  const std::vector<bool> srgb = colourTextures(scene);
  uint64_t texelCount = 0, mipTexelCount = 0;
  for (const SceneTexture& t : scene.textures) {
    if (t.width == 0 || t.height == 0 || t.texels().size() != size_t(t.width) * t.height)
      return Error{scene.path + ": texture '" + t.name + "' is inconsistent (a loader bug)"};
    texelCount += t.texels().size();
    mipTexelCount += mipLevelsTexels(t.width, t.height);
  }
  if (texelCount >= 0xffffffffu || texelCount * sizeof(kernel::Rgba8) > kMaxRenderDataArrayBytes ||
      mipTexelCount >= 0xffffffffu ||
      mipTexelCount * sizeof(kernel::Rgba8) > kMaxRenderDataArrayBytes)
    return Error{scene.path + ": textures too large in total (" + std::to_string(texelCount) +
                 " texels, " + std::to_string(mipTexelCount) + " more in their mip levels)"};
  rd.texels.reserve(texelCount);
  rd.mipTexels.resize(mipTexelCount);
  uint32_t mipOffset = 0;
  for (size_t i = 0; i < scene.textures.size(); ++i) {
    const SceneTexture& t = scene.textures[i];
    kernel::Texture kt{};
    kt.width = t.width;
    kt.height = t.height;
    kt.texelOffset = uint32_t(rd.texels.size());
    kt.wrapS = t.wrapS;
    kt.wrapT = t.wrapT;
    kt.filter = t.filter;
    kt.mipLevels = kernel::mipLevelCount(t.width, t.height);
    kt.mipTexelOffset = mipOffset;
    mipOffset += uint32_t(mipLevelsTexels(t.width, t.height));
    kt.mipColour = srgb[i] ? 1u : 0u;
    for (int k = 0; k < 6; ++k) kt.uv[k] = t.uvTransform[size_t(k)];
    rd.textures.push_back(kt);
    rd.texels.insert(rd.texels.end(), t.texels().begin(), t.texels().end());
  }
  // Each texture's chain on its own (the same texels whichever thread wrote them), or the one
  // prepareMips() made.
  forEachTextureInParallel(scene.textures.size(), [&](size_t i) {
    const SceneTexture& t = scene.textures[i];
    kernel::Rgba8* at = rd.mipTexels.data() + rd.textures[i].mipTexelOffset;
    const size_t n = mipLevelsTexels(t.width, t.height);
    if (hasPreparedMips(t, srgb[i]))
      std::copy(t.mips->begin(), t.mips->end(), at);
    else
      writeMipLevels(t.texels(), t.width, t.height, srgb[i], {at, n});
  });

  // Emissive triangles.
  std::vector<double> materialWeight(scene.materials.size(), 0.0);
  for (size_t i = 0; i < scene.materials.size(); ++i) {
    const kernel::Material& m = scene.materials[i];
    double lum = kernel::luminance(m.emission);
    if (!(lum > 0.0)) continue;
    if (m.emissiveTexture >= 0 && size_t(m.emissiveTexture) < scene.textures.size())
      lum *= meanLuminance(scene.textures[size_t(m.emissiveTexture)]);
    materialWeight[i] = lum;
  }
  std::vector<double> weights;
  for (size_t i = 0; i < rd.triangles.size(); ++i) {
    const kernel::Triangle& t = rd.triangles[i];
    double mw = materialWeight[t.material];
    if (!(mw > 0.0)) continue;
    Vec3f a = rd.positions[t.v0], b = rd.positions[t.v1], c = rd.positions[t.v2];
    double area = 0.5 * double(kernel::length(kernel::cross(b - a, c - a)));
    double w = area * mw;
    if (!(w > 0.0) || !std::isfinite(w)) continue;
    rd.emissiveTriangles.push_back(uint32_t(i));
    weights.push_back(w);
  }
  rd.emissiveCdf.resize(weights.size());
  double totalPower = buildCdf(weights.data(), weights.size(), rd.emissiveCdf.data());

  for (size_t i = 0; i < scene.lights.size(); ++i)
    if (scene.lightShown(i)) rd.lights.push_back(scene.lights[i]);

  // Camera.
  auto cam = compileCamera(scene, options);
  if (!cam.ok()) return cam.error();
  rd.camera.push_back(*cam);

  // Globals and environment.
  kernel::SceneGlobals g{};
  g.boundsMin = scene.boundsMin;
  g.boundsMax = scene.boundsMax;
  if (!(g.boundsMin.x <= g.boundsMax.x)) g.boundsMin = g.boundsMax = {0, 0, 0};
  g.emissiveTotalPower = float(totalPower);
  g.maxDepth = options.maxDepth;
  g.seed = options.seed;
  g.hasAlpha = 0;
  static const std::array<float, kernel::kSheenAlbedoSize * kernel::kSheenAlbedoSize> kSheen = [] {
    std::array<float, kernel::kSheenAlbedoSize * kernel::kSheenAlbedoSize> table{};
    kernel::fillSheenAlbedoTable(table.data());
    return table;
  }();
  std::copy(kSheen.begin(), kSheen.end(), g.sheenAlbedo);
  for (const kernel::Material& m : rd.materials)
    if (m.alphaMode != kernel::kAlphaOpaque) g.hasAlpha = 1;
  if (environment) {
    fillEnvironment(*environment, rd, g);
    if (options.envColor) g.envScale = *options.envColor;
  } else {
    Vec3f colour;
    if (options.envColor)
      colour = *options.envColor;
    else if (lightsTheScene(rd))
      colour = {0, 0, 0};
    else
      colour = {1, 1, 1};
    g.envScale = colour;
    g.envWidth = g.envHeight = 0;
    g.envIntegral = kernel::isBlack(colour) ? 0.0f : 1.0f;
  }
  rd.globals.push_back(g);

  if (Status s = rd.validate(); !s.ok())
    return Error{scene.path + ": compiled data is invalid: " + s.error().message};
  return rd;
}

Result<RenderData> loadAndCompile(const std::string& path, const CompileOptions& options) {
  auto scene = loadScene(path);
  if (!scene.ok()) return scene.error();
  return compile(*scene, options);
}

}  // namespace pl
