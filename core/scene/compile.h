#pragma once
// compile(): Scene -> RenderData, the flat arrays that devices render and that travel between
// machines. The result always passes RenderData::validate().

#include <cstdint>
#include <optional>
#include <string>

#include "core/kernel/math.h"
#include "core/scene/load.h"
#include "core/scene/look_at.h"
#include "core/scene/render_data.h"
#include "core/scene/scene.h"
#include "core/util/status.h"

namespace pl {

struct CompileOptions {
  uint32_t width = 512, height = 512;  // 1 .. kMaxImageDimension
  // A camera name, or a decimal index into Scene::cameras. Empty: the scene's first camera,
  // or, when it has none, one that looks at the bounds' centre from +Z and frames the
  // bounding sphere with a 40 degree field of view.
  std::string camera;
  // When set, a perspective camera built by lookAtCamera() replaces the scene camera; its
  // yfovDegrees 0 keeps the camera chosen above's field of view (40 degrees when that one is
  // orthographic or there is none).
  std::optional<LookAt> lookAt;
  std::string
      envFile;  // .hdr/.exr equirectangular map, or empty; envColor, if also given, scales it
  // Constant environment radiance. When neither envFile nor envColor is given: black when
  // the scene has punctual lights or emissive triangles without an emissive texture, else
  // uniform white 1.0 (emissive textures alone do not light a scene).
  std::optional<kernel::Vec3f> envColor;
  uint32_t seed = 0;
  uint32_t maxDepth = 16;
  // kernel::FilmPass bits: the film also holds the first surface's albedo, normal and depth
  // (kernel::Camera::passes). 0: colour only.
  uint32_t passes = 0;
};

// Only shown meshes and lights (Scene::shown(), Scene::lightShown()) are compiled: a hidden
// one leaves the same bytes as a scene without it, provided the scene's bounds were
// recomputed (Scene::computeBounds(); scene edits do).
//
// Emissive triangles: those whose material has luminance(emission) > 0 and whose weight is
// > 0, weight = area * luminance(emission) * (mean linear luminance of the emissive texture,
// when there is one). The CDF over them is inclusive and ends at exactly 1;
// globals.emissiveTotalPower is the sum of the weights.
//
// Environment map sampling: weight(x, y) = luminance(texel) * sin(pi * (y + 0.5) / H);
// envConditionalCdf has H rows of W inclusive CDF entries (uniform for a black row),
// envMarginalCdf H inclusive entries over the row sums, globals.envIntegral the sum of all
// weights. A constant environment has envWidth = envHeight = 0, envScale = its colour and
// envIntegral 1 (non-black: sample it uniformly over the sphere) or 0 (black).
Result<RenderData> compile(const Scene& scene, const CompileOptions& options);

// The camera compile() puts in RenderData::camera[0], bit for bit, from the scene and
// options.width, height, camera, lookAt and passes only. A session that changes only those options
// can replace camera[0] with it instead of recompiling.
Result<kernel::Camera> compileCamera(const Scene& scene, const CompileOptions& options);

// compile() with an environment map already loaded (options.envFile is ignored).
Result<RenderData> compile(const Scene& scene, const CompileOptions& options,
                           const EnvironmentMap* environment);

// loadScene(path) then compile().
Result<RenderData> loadAndCompile(const std::string& path, const CompileOptions& options);

}  // namespace pl
