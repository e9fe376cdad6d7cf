// peerlight-gpu-bench: renders one scene at the same settings on the CPU device and on each
// CUDA GPU and prints samples/s and Mrays/s for each, plus the image mean so that the
// devices can be seen to agree. Used by tests/gpu/check.sh.
//
//   peerlight-gpu-bench SCENE [--size WxH] [--spp N] [--pass N] [--tile N]
//                             [--device cpu|cuda|all] [--threads N] [--env R,G,B]
//
// --pass and --tile cut the image into work units as `peerlight render` does (0, the
// default: the whole image and all samples in one unit, which is what a GPU likes best).
// --env sets a constant white/coloured environment (CompileOptions::envColor).
//
// Exit status: 0 on success; 1 on a render or load error; 2 on bad arguments; 3 when
// --device cuda was asked for and no CUDA GPU was found.

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>

#include "core/render/cpu_device.h"
#include "core/render/film.h"
#include "core/render/local_render.h"
#include "core/scene/compile.h"
#include "core/util/log.h"
#include "gpu/cuda_device.h"
#include "gpu/cuda_devices.h"

namespace {

struct Args {
  std::string scene;
  uint32_t width = 512, height = 512;
  uint32_t spp = 16;
  uint32_t pass = 0;  // 0: all samples in one pass
  uint32_t tile = 0;  // 0: the whole image as one tile
  uint32_t threads = 0;
  std::string device = "all";
  bool hasEnv = false;
  float env[3] = {0, 0, 0};
};

int usage(const char* msg) {
  std::fprintf(stderr,
               "peerlight-gpu-bench: %s\nusage: peerlight-gpu-bench SCENE [--size WxH] "
               "[--spp N] [--pass N] [--tile N] [--device cpu|cuda|all] [--threads N] "
               "[--env R,G,B]\n",
               msg);
  return 2;
}

bool parseUint(const char* s, uint32_t* out) {
  char* end = nullptr;
  unsigned long v = std::strtoul(s, &end, 10);
  if (end == s || *end != '\0' || v > 1000000) return false;
  *out = static_cast<uint32_t>(v);
  return true;
}

// Renders on one device; prints one line. Returns false on error (printed).
bool benchDevice(pl::Device& device, const std::string& label,
                 std::shared_ptr<const pl::RenderData> data, const Args& args) {
  auto t0 = std::chrono::steady_clock::now();
  if (pl::Status s = device.load(data); !s.ok()) {
    std::printf("%-44s load failed: %s\n", label.c_str(), s.error().message.c_str());
    return false;
  }
  double loadSeconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  // Warm-up (first launch, caches), not timed: one sample of a small tile.
  pl::WorkUnit warm;
  warm.tile = {0, 0, std::min(args.width, 64u), std::min(args.height, 64u)};
  warm.sampleBegin = 0;
  warm.sampleEnd = 1;
  warm.totalSamples = args.spp;
  if (auto r = device.render(warm); !r.ok()) {
    std::printf("%-44s render failed: %s\n", label.c_str(), r.error().message.c_str());
    return false;
  }
  pl::Film film(args.width, args.height, args.spp);
  pl::TilingOptions tiling;
  tiling.tileSize = args.tile ? args.tile : std::max(args.width, args.height);
  tiling.samplesPerPass = args.pass ? args.pass : args.spp;
  pl::Result<pl::LocalRenderStats> stats = pl::renderLocal(device, film, tiling);
  if (!stats.ok()) {
    std::printf("%-44s render failed: %s\n", label.c_str(), stats.error().message.c_str());
    return false;
  }
  std::vector<float> rgb = film.linearRgb();
  double mean = 0.0;
  for (float v : rgb) mean += v;
  mean /= double(rgb.size());
  double seconds = stats->seconds > 0 ? stats->seconds : 1e-9;
  std::printf("%-44s load %6.2f s  render %7.3f s  %8.2f Msamples/s  %8.2f Mrays/s  "
              "mean %.5f\n",
              label.c_str(), loadSeconds, seconds, double(stats->samples) / seconds * 1e-6,
              double(stats->raysTraced) / seconds * 1e-6, mean);
  std::fflush(stdout);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    if (a == "--size") {
      const char* v = next();
      if (!v || std::sscanf(v, "%ux%u", &args.width, &args.height) != 2 || args.width == 0 ||
          args.height == 0 || args.width > 16384 || args.height > 16384)
        return usage("--size wants WxH");
    } else if (a == "--spp" || a == "--pass" || a == "--tile" || a == "--threads") {
      const char* v = next();
      uint32_t* dst = a == "--spp" ? &args.spp
                      : a == "--pass" ? &args.pass
                      : a == "--tile" ? &args.tile
                                      : &args.threads;
      if (!v || !parseUint(v, dst)) return usage((a + " wants a number").c_str());
    } else if (a == "--env") {
      const char* v = next();
      if (!v || std::sscanf(v, "%f,%f,%f", &args.env[0], &args.env[1], &args.env[2]) != 3 ||
          !(args.env[0] >= 0 && args.env[1] >= 0 && args.env[2] >= 0))
        return usage("--env wants R,G,B (>= 0)");
      args.hasEnv = true;
    } else if (a == "--device") {
      const char* v = next();
      if (!v || (std::strcmp(v, "cpu") && std::strcmp(v, "cuda") && std::strcmp(v, "all")))
        return usage("--device wants cpu, cuda or all");
      args.device = v;
    } else if (!a.empty() && a[0] == '-') {
      return usage(("unknown option " + a).c_str());
    } else if (args.scene.empty()) {
      args.scene = a;
    } else {
      return usage("one scene only");
    }
  }
  if (args.scene.empty()) return usage("no scene given");
  if (args.spp == 0) return usage("--spp must be at least 1");

  pl::CompileOptions options;
  options.width = args.width;
  options.height = args.height;
  if (args.hasEnv) options.envColor = pl::kernel::Vec3f{args.env[0], args.env[1], args.env[2]};
  auto t0 = std::chrono::steady_clock::now();
  pl::Result<pl::RenderData> compiled = pl::loadAndCompile(args.scene, options);
  if (!compiled.ok()) {
    std::fprintf(stderr, "peerlight-gpu-bench: %s\n", compiled.error().message.c_str());
    return 1;
  }
  auto data = std::make_shared<const pl::RenderData>(std::move(compiled).value());
  double compileSeconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("scene %s: %zu triangles, %ux%u, %u spp (pass %u, tile %u), loaded in %.2f s\n",
              args.scene.c_str(), data->triangles.size(), args.width, args.height, args.spp,
              args.pass ? args.pass : args.spp,
              args.tile ? args.tile : std::max(args.width, args.height), compileSeconds);

  bool ok = true;
  if (args.device == "cpu" || args.device == "all") {
    pl::CpuDevice cpu(args.threads);
    pl::DeviceInfo info = cpu.info();
    std::string label = "cpu (" + info.name + ", " + std::to_string(info.threads) + " threads)";
    ok = benchDevice(cpu, label, data, args) && ok;
  }
  if (args.device == "cuda" || args.device == "all") {
    std::vector<pl::DeviceInfo> gpus = pl::enumerateCudaDevices();
    if (gpus.empty()) {
      std::printf("cuda: no CUDA GPUs found (no GPU figures)\n");
      if (args.device == "cuda") return 3;
    }
    for (const pl::DeviceInfo& gpu : gpus) {
      pl::Result<std::unique_ptr<pl::CudaDevice>> device = pl::CudaDevice::open(gpu.ordinal);
      if (!device.ok()) {
        std::printf("%s\n", device.error().message.c_str());
        ok = false;
        continue;
      }
      ok = benchDevice(**device, (*device)->label(), data, args) && ok;
      if (ok) {
        pl::CudaDevice::LoadStats s = (*device)->loadStats();
        std::printf("  %s: BVH %u nodes, depth %u, built in %.3f s; %.1f MiB uploaded in %.3f s\n",
                    (*device)->label().c_str(), s.bvhNodes, s.bvhDepth, s.bvhBuildSeconds,
                    double(s.bytesUploaded) / (1024.0 * 1024.0), s.uploadSeconds);
      }
    }
  }
  return ok ? 0 : 1;
}
