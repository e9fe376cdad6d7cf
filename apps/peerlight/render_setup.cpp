#include "apps/peerlight/render_setup.h"

#include <elf.h>
#include <link.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <cstdio>
#include <thread>

#include "apps/peerlight/cli_util.h"
#include "core/render/cpu_device.h"
#include "core/scene/compiled_cache.h"
#include "core/scene/look_at.h"
#include "core/util/log.h"
#include "discovery/node_advert.h"
#include "transport/protocol_convert.h"

#if defined(PEERLIGHT_HAVE_CUDA)
#include "gpu/cuda_devices.h"
#endif

namespace pl::app {

void addSceneFlags(CLI::App* cmd, RenderArgs& a) {
  RenderArgs* args = &a;
  cmd->add_option("--spp", args->spp, "Samples per pixel")->capture_default_str();
  cmd->add_option("--size", args->size, "Image size WxH")->capture_default_str();
  cmd->add_option("--camera", args->camera, "Camera name or index (default: the first)");
  cmd->add_option("--env", args->env,
                  "Environment: an equirectangular .hdr/.exr file, or a constant R,G,B radiance "
                  "(default: black when the scene has lights, else white)");
  cmd->add_option("--noise-threshold", args->noiseThreshold,
                  "Render until clean: from 8 spp on, each 16x16 tile whose per-pixel noise "
                  "estimate is below this stops taking samples (typical: 0.01 to 0.1; 0: every "
                  "pixel takes --spp)")
      ->check(CLI::Validator(
          [](std::string& value) -> std::string {
            // CLI::Range lets NaN through (every comparison with it is false).
            char* end = nullptr;
            const double t = std::strtod(value.c_str(), &end);
            return std::isfinite(t) && t >= 0 && t <= 1 ? "" : "a number from 0 to 1";
          },
          "0..1"));
  cmd->add_option("--threads", args->threads, "CPU threads (0: all)")->capture_default_str();
  cmd->add_option("--seed", args->seed, "Sampler seed")->capture_default_str();
  cmd->add_option("--exposure", args->exposure, "Exposure in stops for PNG output")
      ->capture_default_str();
  cmd->add_option("--max-depth", args->maxDepth, "Maximum path length in bounces")
      ->capture_default_str();
  cmd->add_option("--device", args->device,
                  "Devices to render on: auto (the CUDA GPUs, else the CPU), cpu, cuda, all")
      ->check(CLI::IsMember({"auto", "cpu", "cuda", "all"}))
      ->capture_default_str();
  cmd->add_flag("--json", args->json, "Print one JSON object with the statistics on stdout");
  cmd->add_option("--peer", args->peers,
                  "A Render Node to render on, HOST:PORT (repeatable; see `peerlight node`)");
  cmd->add_flag("--no-local", args->noLocal, "Render on the peers only, not on this machine");
  cmd->add_flag("--local-only", args->localOnly,
                "Ignore --peer and mDNS: render on this machine only");
  cmd->add_flag("--no-mdns", args->noMdns,
                "Without --peer: do not look for Render Nodes over mDNS (render locally)");
  cmd->add_option("--mdns-wait", args->mdnsWaitSeconds,
                  "Seconds to browse mDNS for nodes when no --peer is given")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 60.0));
  cmd->add_option("--key-file", args->keyFile,
                  "Cluster key file (default: $PEERLIGHT_KEY_FILE, else "
                  "~/.config/peerlight/cluster.key; created if missing when --peer is given)");
  cmd->add_option("--look-at", args->lookAt,
                  "Camera position and target EX,EY,EZ,TX,TY,TZ[,UX,UY,UZ] (instead of "
                  "--camera; up defaults to +Y)");
  cmd->add_option("--yfov", args->yfovDegrees,
                  "Vertical field of view in degrees with --look-at (default: the scene "
                  "camera's, else 40)")
      ->check(CLI::Range(0.0, 179.9));
  cmd->add_option("--region", args->region,
                  "Render only these pixels, X,Y,W,H from the top-left corner (a render border; "
                  "the rest of the image stays black)");
  cmd->add_flag("--crop", args->crop, "With --region: write the region alone");
  cmd->add_option("--passes", args->passes,
                  "Passes for compositing and denoising, written as layers of the .exr: any of "
                  "albedo,normal,depth (the first surface the camera sees)");
}

std::chrono::milliseconds timeLimitOf(const RenderArgs& args) {
  if (!(args.timeLimit > 0)) return std::chrono::milliseconds(0);
  return std::chrono::milliseconds(int64_t(std::ceil(std::min(args.timeLimit, 1.0e6) * 1000.0)));
}

Rect regionOf(const RenderArgs& args) {
  if (args.region.empty()) {
    if (args.crop) failUsage("--crop needs --region");
    return Rect{};
  }
  uint32_t width = 0, height = 0;
  if (Status s = parseSize(args.size, &width, &height); !s.ok()) failUsage(s.error().message);
  Result<Rect> region = parseRegion(args.region, width, height);
  if (!region.ok()) failUsage(region.error().message);
  return *region;
}

std::optional<Film> croppedOutput(const RenderArgs& args, const Film& film) {
  const Rect region = regionOf(args);
  if (!args.crop || region.width == 0) return std::nullopt;
  return film.cropped(region);
}

CompileOptions compileOptionsFrom(const RenderArgs& args) {
  CompileOptions options;
  if (Status s = parseSize(args.size, &options.width, &options.height); !s.ok())
    failUsage(s.error().message);
  if (args.spp == 0) failUsage("--spp must be at least 1");
  options.camera = args.camera;
  options.seed = args.seed;
  options.maxDepth = args.maxDepth;
  if (!args.env.empty()) {
    if (Status s = parseEnv(args.env, &options); !s.ok()) failUsage(s.error().message);
  }
  if (!args.lookAt.empty()) {
    Result<LookAt> lookAt = parseLookAt(args.lookAt);
    if (!lookAt.ok()) failUsage(lookAt.error().message);
    lookAt->yfovDegrees = args.yfovDegrees;
    options.lookAt = *lookAt;
  } else if (args.yfovDegrees != 0.0f) {
    failUsage("--yfov needs --look-at");
  }
  if (!args.passes.empty()) {
    Result<uint32_t> passes = parsePasses(args.passes);
    if (!passes.ok()) failUsage(passes.error().message);
    options.passes = *passes;
  }
  return options;
}

namespace {

// The cache's salt: this executable's GNU build ID (a hash the linker writes of the program),
// so that another build never reads this one's data. Without one: the executable's size and
// modification time.
Hash128 programHash() {
  std::string id;
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* out) -> int {
        if (info->dlpi_name != nullptr && info->dlpi_name[0] != '\0') return 0;  // the program
        for (int i = 0; i < info->dlpi_phnum; ++i) {
          const ElfW(Phdr)& ph = info->dlpi_phdr[i];
          if (ph.p_type != PT_NOTE) continue;
          const auto* p = reinterpret_cast<const uint8_t*>(info->dlpi_addr + ph.p_vaddr);
          const uint8_t* end = p + ph.p_memsz;
          while (p + sizeof(ElfW(Nhdr)) <= end) {
            const auto* note = reinterpret_cast<const ElfW(Nhdr)*>(p);
            const uint8_t* name = p + sizeof(ElfW(Nhdr));
            const uint8_t* desc = name + ((note->n_namesz + 3) & ~3u);
            if (note->n_type == NT_GNU_BUILD_ID && note->n_namesz == 4 &&
                std::memcmp(name, "GNU", 4) == 0 && desc + note->n_descsz <= end) {
              static_cast<std::string*>(out)->assign(reinterpret_cast<const char*>(desc),
                                                     note->n_descsz);
              return 1;
            }
            p = desc + ((note->n_descsz + 3) & ~3u);
          }
        }
        return 1;
      },
      &id);
  if (id.empty()) {
    struct stat st {};
    if (::stat("/proc/self/exe", &st) == 0)
      id = std::to_string(st.st_size) + "/" + std::to_string(st.st_mtim.tv_sec) + "." +
           std::to_string(st.st_mtim.tv_nsec);
  }
  return hash128(id.data(), id.size());
}

constexpr uint64_t kCompiledCacheBytes = uint64_t(4) << 30;

}  // namespace

CompiledScene findCompiled(const RenderArgs& args, const CompileOptions& options) {
  CompiledScene scene;
  if (args.noCache || defaultCompiledCacheDir().empty()) return scene;
  const auto start = std::chrono::steady_clock::now();
  Result<Hash128> key = compiledCacheKey(args.scene, options, programHash());
  if (!key.ok()) return scene;
  scene.key = *key;
  CompiledCache cache(defaultCompiledCacheDir(), kCompiledCacheBytes);
  std::optional<CachedBytes> cached = cache.find(*key);
  if (!cached) return scene;
  Result<EncodedScene> encoded = parseEncodedScene(cached->bytes, cached->owner);
  if (!encoded.ok()) {
    cache.remove(*key, encoded.error().message);
    return scene;
  }
  scene.source.encoded = std::make_shared<const EncodedScene>(std::move(encoded).value());
  scene.fromCache = true;
  scene.cachedBytes = cached->bytes;
  PL_LOG_INFO("%s: compiled data from the cache (%.2f s)", args.scene.c_str(),
              std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  return scene;
}

CompiledScene loadCompiled(const RenderArgs& args, const CompileOptions& options) {
  CompiledScene scene = findCompiled(args, options);
  if (scene.fromCache) return scene;
  Result<RenderData> compiled = loadAndCompile(args.scene, options);
  if (!compiled.ok()) failUsage(compiled.error().message);
  scene.source.data = std::make_shared<const RenderData>(std::move(compiled).value());
  return scene;
}

void storeCompiled(const CompiledScene& scene) {
  if (scene.fromCache || !scene.key || scene.source.data == nullptr) return;
  CompiledCache cache(defaultCompiledCacheDir(), kCompiledCacheBytes);
  ChunkStore chunks;
  const ChunkManifest manifest = encodeRenderData(*scene.source.data, chunks);
  cache.store(*scene.key, serializeEncodedScene(manifest, chunks));
}

// "host/pid": the nodes' log lines tell apart two renders started on one machine.
std::string primaryName() {
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) != 0) std::snprintf(host, sizeof(host), "primary");
  return std::string(host) + "/" + std::to_string(::getpid());
}

// Starts browsing mDNS on `loop` for Render Nodes this Primary can use (discovery/peer_watch.h:
// our protocol version and key fingerprint, idle or leased) and runs the loop `seconds` for
// the first answers; the nodes found then that cannot be used are named on stderr with the
// reason. The watch keeps browsing and hands each node that becomes usable later to *found
// (when set): the render or session joins it. Null when no mDNS service is reachable.
std::unique_ptr<PeerWatch> watchPeers(
    const std::string& fingerprint, double seconds, UvKjLoop& loop,
    std::shared_ptr<std::function<void(const std::string&)>> found) {
  const auto start = std::chrono::steady_clock::now();
  const PeerWatchOptions options{kProtocolVersion, fingerprint, "", /*acceptLeased=*/true};
  PeerWatchEvents events;
  events.onUsable = [found](const PeerVerdict& v) {
    if (*found) (*found)(v.address);
  };
  auto watch = std::make_unique<PeerWatch>(options, loop.uv(), std::move(events));
  if (!watch->available()) return nullptr;
  const auto wait = std::chrono::milliseconds(int64_t(seconds * 1000));
  if (seconds > 0)
    loop.timer().afterDelay(wait.count() * kj::MILLISECONDS).wait(loop.waitScope());
  size_t usable = 0;
  for (const PeerVerdict& v : watch->snapshot()) {
    if (v.usable) {
      usable += 1;
      continue;
    }
    std::fprintf(stderr, "peerlight: mDNS: not using %s at %s: %s\n", v.instanceName.c_str(),
                 v.address.c_str(), v.why.c_str());
  }
  PL_LOG_INFO("mDNS: %zu usable node(s) found in %.1f s", usable,
              std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  return watch;
}

// The devices `--device` names: auto (every CUDA GPU, else the CPU), cpu, cuda, or all.
// A GPU renders a unit in milliseconds and a CPU in about a second, so without a scheduler that
// duplicates the last units (core/cluster, coming with the cluster transport) mixing them only
// pays off for long renders: hence auto prefers the GPUs alone.
std::vector<std::unique_ptr<Device>> openDevices(const RenderArgs& args) {
  std::vector<std::unique_ptr<Device>> devices;
  const bool wantCpu = args.device == "cpu" || args.device == "all";
  const bool wantCuda = args.device != "cpu";
#if defined(PEERLIGHT_HAVE_CUDA)
  if (wantCuda) {
    for (const DeviceInfo& info : enumerateCudaDevices()) {
      Result<std::unique_ptr<Device>> gpu = makeCudaDevice(info.ordinal);
      if (gpu.ok())
        devices.push_back(std::move(gpu).value());
      else
        PL_LOG_WARN("%s", gpu.error().message.c_str());
    }
  }
#endif
  if (args.device == "cuda" && devices.empty())
    failUsage("--device cuda: no CUDA GPU is available on this machine");
  if (wantCpu || devices.empty()) devices.push_back(std::make_unique<CpuDevice>(args.threads));
  (void)wantCuda;
  return devices;
}

ClusterPlan planCluster(const RenderArgs& args, UvKjLoop& loop) {
  ClusterPlan plan;
  const bool browse = args.peers.empty() && !args.localOnly && !args.noMdns;
  if (!args.localOnly) plan.peers = args.peers;
  if (!plan.peers.empty()) {
    Result<std::string> keyPath = clusterKeyPath(args.keyFile);
    if (!keyPath.ok()) failUsage(keyPath.error().message);
    Result<ClusterKey> loaded = loadClusterKey(*keyPath, /*createIfMissing=*/true);
    if (!loaded.ok()) failUsage(loaded.error().message);
    plan.key = std::move(loaded).value();
  } else if (browse) {
    // Without a key no node can be used: then no key is created and nothing is browsed.
    Result<std::string> keyPath = clusterKeyPath(args.keyFile);
    Result<ClusterKey> loaded = keyPath.ok()
                                    ? loadClusterKey(*keyPath, /*createIfMissing=*/false)
                                    : Result<ClusterKey>(keyPath.error());
    if (loaded.ok()) {
      plan.key = std::move(loaded).value();
      plan.watch = watchPeers(keyFingerprint(plan.key), args.mdnsWaitSeconds, loop,
                              plan.nodeFound);
      if (plan.watch) plan.peers = plan.watch->usableAddresses();
    } else {
      PL_LOG_DEBUG("no mDNS browse: %s", loaded.error().message.c_str());
    }
  }
  return plan;
}

nlohmann::json nodeJson(const NodeRenderStats& n) {
  return {{"address", n.address},
          {"name", n.name},
          {"node_id", n.nodeId},
          {"devices", n.devices},
          {"work_units", n.workUnits},
          {"samples", n.samples},
          {"rays_traced", n.raysTraced},
          {"duplicate_results", n.duplicateResults},
          {"render_data_bytes_raw", n.renderDataBytesRaw},
          {"render_data_bytes_sent", n.renderDataBytesSent},
          {"chunks_sent", n.chunksSent},
          {"chunks_total", n.chunksTotal},
          {"manifest_bytes", n.manifestBytes},
          {"result_bytes", n.resultBytes},
          {"result_bytes_raw", n.resultBytesRaw},
          {"seconds_to_first_result",
           n.secondsToFirstResult < 0 ? nlohmann::json(nullptr)
                                      : nlohmann::json(n.secondsToFirstResult)},
          {"upload_seconds", n.uploadSeconds},
          {"seconds_to_data_loaded",
           n.secondsToDataLoaded < 0 ? nlohmann::json(nullptr)
                                     : nlohmann::json(n.secondsToDataLoaded)},
          {"connections", n.connections},
          {"losses", n.losses},
          {"state", n.state},
          {"error", n.error}};
}

}  // namespace pl::app
