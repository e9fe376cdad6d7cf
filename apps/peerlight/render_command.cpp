// `peerlight render SCENE -o OUT`: renders a scene on this machine's devices and writes the
// image. Exit status 0 on success, 2 for user errors (arguments, a scene that does not load,
// an unknown output format), 1 when rendering or writing fails.

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "apps/peerlight/cli_util.h"
#include "apps/peerlight/commands.h"
#include "core/render/cpu_device.h"
#include "core/render/image_io.h"
#include "core/render/local_render.h"
#include "core/scene/compile.h"

namespace pl::app {

namespace {

struct RenderArgs {
  std::string scene;
  std::string output;
  uint32_t spp = 64;
  std::string size = "512x512";
  std::string camera;
  std::string env;
  uint32_t threads = 0;
  uint32_t seed = 0;
  float exposure = 0.0f;
  uint32_t maxDepth = 16;
  bool json = false;
};

// A one-line progress bar on stderr, redrawn at most 10 times a second.
class ProgressBar {
 public:
  ProgressBar() : start_(Clock::now()), lastDraw_(start_ - std::chrono::seconds(1)) {}

  void update(uint64_t done, uint64_t total) {
    auto now = Clock::now();
    if (done < total && now - lastDraw_ < std::chrono::milliseconds(100)) return;
    lastDraw_ = now;
    double seconds = std::chrono::duration<double>(now - start_).count();
    double rate = seconds > 0 ? double(done) / seconds : 0.0;
    double fraction = total ? double(done) / double(total) : 1.0;
    constexpr int kWidth = 30;
    int filled = int(fraction * kWidth);
    std::string bar(size_t(filled), '#');
    bar.append(size_t(kWidth - filled), ' ');
    std::string eta = rate > 0 ? formatSeconds(double(total - done) / rate) : std::string("?");
    std::fprintf(stderr, "\r%3d%% [%s] %s/%s samples  %s samples/s  ETA %s   ",
                 int(fraction * 100.0), bar.c_str(), formatCount(double(done)).c_str(),
                 formatCount(double(total)).c_str(), formatCount(rate).c_str(), eta.c_str());
    std::fflush(stderr);
  }
  void finish() { std::fprintf(stderr, "\n"); }

 private:
  using Clock = std::chrono::steady_clock;
  Clock::time_point start_, lastDraw_;
};

void runRender(const RenderArgs& args) {
  CompileOptions options;
  if (Status s = parseSize(args.size, &options.width, &options.height); !s.ok())
    failUsage(s.error().message);
  if (args.spp == 0) failUsage("--spp must be at least 1");
  if (!isSupportedImagePath(args.output))
    failUsage(args.output + ": unknown image format (use .png or .exr)");
  {
    // Fail before a long render, not after it.
    std::error_code ec;
    std::filesystem::path parent = std::filesystem::path(args.output).parent_path();
    if (!parent.empty() && !std::filesystem::is_directory(parent, ec))
      failUsage(args.output + ": folder " + parent.string() + " does not exist");
  }
  options.camera = args.camera;
  options.seed = args.seed;
  options.maxDepth = args.maxDepth;
  if (!args.env.empty()) {
    if (Status s = parseEnv(args.env, &options); !s.ok()) failUsage(s.error().message);
  }

  const auto loadStart = std::chrono::steady_clock::now();
  Result<RenderData> compiled = loadAndCompile(args.scene, options);
  if (!compiled.ok()) failUsage(compiled.error().message);
  auto data = std::make_shared<const RenderData>(std::move(compiled).value());

  CpuDevice device(args.threads);
  if (Status s = device.load(data); !s.ok()) fail(s.error().message, 1);
  const double loadSeconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - loadStart).count();

  Film film(options.width, options.height, args.spp);
  const bool showProgress = !args.json && isatty(STDERR_FILENO);
  ProgressBar bar;
  ProgressCallback progress;
  if (showProgress) progress = [&bar](uint64_t done, uint64_t total) { bar.update(done, total); };
  Result<LocalRenderStats> stats = renderLocal(device, film, TilingOptions{}, progress);
  if (showProgress) bar.finish();
  if (!stats.ok()) fail(stats.error().message, 1);

  if (Status s = writeImage(args.output, film.width(), film.height(), film.linearRgb(),
                            args.exposure);
      !s.ok())
    fail(s.error().message, 1);

  const double seconds = stats->seconds;
  const double samplesPerSecond = seconds > 0 ? double(stats->samples) / seconds : 0.0;
  const double mraysPerSecond = seconds > 0 ? double(stats->raysTraced) / seconds / 1e6 : 0.0;
  if (args.json) {
    nlohmann::json devices = nlohmann::json::array();
    DeviceInfo info = device.info();
    devices.push_back({{"kind", info.kind},
                       {"name", info.name},
                       {"threads", info.threads},
                       {"memory_bytes", info.memoryBytes}});
    nlohmann::json out = {{"scene", args.scene},
                          {"output", args.output},
                          {"width", film.width()},
                          {"height", film.height()},
                          {"spp", args.spp},
                          {"seconds", seconds},
                          {"load_seconds", loadSeconds},
                          {"samples_per_second", samplesPerSecond},
                          {"mrays_per_second", mraysPerSecond},
                          {"rays_traced", stats->raysTraced},
                          {"render_data_bytes", data->byteSize()},
                          {"triangles", data->triangles.size()},
                          {"devices", devices}};
    std::printf("%s\n", out.dump().c_str());
  } else {
    std::printf("rendered %ux%u at %u spp in %s: %s samples/s, %.1f Mrays/s, render data %s, "
                "%zu triangles -> %s\n",
                film.width(), film.height(), args.spp, formatSeconds(seconds).c_str(),
                formatCount(samplesPerSecond).c_str(), mraysPerSecond,
                formatBytes(data->byteSize()).c_str(), data->triangles.size(),
                args.output.c_str());
  }
}

}  // namespace

void addRenderCommand(CLI::App& app) {
  auto args = std::make_shared<RenderArgs>();
  CLI::App* cmd = app.add_subcommand("render", "Render a scene (glTF 2.0 or OBJ) to PNG or EXR");
  cmd->add_option("scene", args->scene, "Scene file (.gltf, .glb, .obj)")->required();
  cmd->add_option("-o,--output", args->output, "Output image (.png: 8-bit sRGB, .exr: linear)")
      ->required();
  cmd->add_option("--spp", args->spp, "Samples per pixel")->capture_default_str();
  cmd->add_option("--size", args->size, "Image size WxH")->capture_default_str();
  cmd->add_option("--camera", args->camera, "Camera name or index (default: the first)");
  cmd->add_option("--env", args->env,
                  "Environment: an equirectangular .hdr/.exr file, or a constant R,G,B radiance "
                  "(default: black when the scene has lights, else white)");
  cmd->add_option("--threads", args->threads, "CPU threads (0: all)")->capture_default_str();
  cmd->add_option("--seed", args->seed, "Sampler seed")->capture_default_str();
  cmd->add_option("--exposure", args->exposure, "Exposure in stops for PNG output")
      ->capture_default_str();
  cmd->add_option("--max-depth", args->maxDepth, "Maximum path length in bounces")
      ->capture_default_str();
  cmd->add_flag("--json", args->json, "Print one JSON object with the statistics on stdout");
  cmd->callback([args] { runRender(*args); });
}

}  // namespace pl::app
