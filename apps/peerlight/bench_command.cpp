// `peerlight bench`: renders a fixed set of scenes at a fixed size and spp on the CPU device
// and prints samples/s and Mrays/s, next to the ray rate of a bare Embree loop over the very
// rays the renderer traced (so the ratio says how much of the time is tracing).

#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "apps/peerlight/cli_util.h"
#include "apps/peerlight/commands.h"
#include "core/render/cpu_device.h"
#include "core/render/local_render.h"
#include "core/render/ray_recorder.h"
#include "core/scene/compile.h"

#ifndef PEERLIGHT_SOURCE_DIR
#define PEERLIGHT_SOURCE_DIR "."
#endif

namespace pl::app {

namespace {

struct BenchArgs {
  std::string scenesDir = PEERLIGHT_SOURCE_DIR "/../shared/scenes";
  std::string size = "256x256";
  uint32_t spp = 16;
  uint32_t threads = 0;
};

struct BenchScene {
  std::string label;
  std::string path;
};

struct BenchRow {
  std::string label;
  uint32_t triangles = 0;
  double samplesPerSecond = 0;
  double rendererMrays = 0;
  double bareMrays = 0;
  uint64_t recordedRays = 0;
};

// Bare-loop rays: the rays of the first sample of every pixel, at most this many.
constexpr size_t kMaxRecordedRays = 4'000'000;

void runBench(const BenchArgs& args) {
  uint32_t width = 0, height = 0;
  if (Status s = parseSize(args.size, &width, &height); !s.ok()) failUsage(s.error().message);
  if (args.spp == 0) failUsage("--spp must be at least 1");

  const std::vector<BenchScene> scenes = {
      {"cornell_box (project)", PEERLIGHT_SOURCE_DIR "/scenes/cornell_box.gltf"},
      {"cornell_box (shared)", args.scenesDir + "/cornell-box/gltf-derived/cornell_box.gltf"},
      {"DamagedHelmet",
       args.scenesDir + "/khronos-gltf/DamagedHelmet/glTF/DamagedHelmet.gltf"},
      {"Sponza", args.scenesDir + "/sponza-crytek-rendu/sponza.gltf"},
  };

  CpuDevice device(args.threads);
  const DeviceInfo info = device.info();
  std::printf("peerlight bench: %ux%u, %u spp, cpu device: %s, %u threads\n", width, height,
              args.spp, info.name.c_str(), info.threads);
  std::fflush(stdout);

  std::vector<BenchRow> rows;
  for (const BenchScene& scene : scenes) {
    std::error_code ec;
    if (!std::filesystem::exists(scene.path, ec)) {
      std::printf("  skipping %s: %s not found\n", scene.label.c_str(), scene.path.c_str());
      continue;
    }
    CompileOptions options;
    options.width = width;
    options.height = height;
    Result<RenderData> compiled = loadAndCompile(scene.path, options);
    if (!compiled.ok()) {
      std::printf("  skipping %s: %s\n", scene.label.c_str(), compiled.error().message.c_str());
      continue;
    }
    auto data = std::make_shared<const RenderData>(std::move(compiled).value());
    if (Status s = device.load(data); !s.ok()) fail(s.error().message, 1);

    Film film(width, height, args.spp);
    Result<LocalRenderStats> stats = renderLocal(device, film);
    if (!stats.ok()) fail(stats.error().message, 1);

    std::vector<RecordedRay> rays = recordRays(*data, *device.embreeScene(),
                                               Rect{0, 0, width, height}, 0, 1, kMaxRecordedRays);
    BareTraceStats bare = traceBare(*data, *device.embreeScene(), rays, device.threadPool(), 0.5);

    BenchRow row;
    row.label = scene.label;
    row.triangles = uint32_t(data->triangles.size());
    row.samplesPerSecond = double(stats->samples) / stats->seconds;
    row.rendererMrays = double(stats->raysTraced) / stats->seconds / 1e6;
    row.bareMrays = bare.seconds > 0 ? double(bare.rays) / bare.seconds / 1e6 : 0.0;
    row.recordedRays = rays.size();
    rows.push_back(row);
    std::printf("  %s: done in %s\n", scene.label.c_str(), formatSeconds(stats->seconds).c_str());
    std::fflush(stdout);
  }

  std::printf("\n%-24s %10s %12s %14s %14s %8s %10s\n", "scene", "triangles", "samples/s",
              "render Mray/s", "bare Mray/s", "ratio", "bare rays");
  for (const BenchRow& r : rows) {
    std::printf("%-24s %10u %12s %14.2f %14.2f %8.2f %10s\n", r.label.c_str(), r.triangles,
                formatCount(r.samplesPerSecond).c_str(), r.rendererMrays, r.bareMrays,
                r.bareMrays > 0 ? r.rendererMrays / r.bareMrays : 0.0,
                formatCount(double(r.recordedRays)).c_str());
  }
  std::printf("\nratio = renderer rays/s / bare Embree rays/s over the same rays (rays of the "
              "first sample of every pixel,\nrtcIntersect1 for path rays, rtcOccluded1 for "
              "shadow rays, with the alpha mask filter where the render used it, same "
              "threads):\nthe share of render time spent tracing.\n");
}

}  // namespace

void addBenchCommand(CLI::App& app) {
  auto args = std::make_shared<BenchArgs>();
  CLI::App* cmd = app.add_subcommand("bench", "Render benchmark scenes and print throughput");
  cmd->add_option("--scenes", args->scenesDir,
                  "Folder of shared scenes (cornell-box/, khronos-gltf/, sponza-crytek-rendu/)")
      ->capture_default_str();
  cmd->add_option("--size", args->size, "Image size WxH")->capture_default_str();
  cmd->add_option("--spp", args->spp, "Samples per pixel")->capture_default_str();
  cmd->add_option("--threads", args->threads, "CPU threads (0: all)")->capture_default_str();
  cmd->callback([args] { runBench(*args); });
}

}  // namespace pl::app
