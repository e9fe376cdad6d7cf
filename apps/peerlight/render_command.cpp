// `peerlight render SCENE -o OUT`: renders a scene and writes the image.
//
// Who renders (issue 4 item 4): when this machine's node daemon runs (its control socket: the
// --control-socket path, else $XDG_RUNTIME_DIR/peerlight/node.sock or /run/peerlight/node.sock
// exists), the command compiles the scene and hands the job to the daemon (render_job.h),
// which becomes the Primary: it renders on this machine's devices through its own node and on
// every node it knows (--peer, and mDNS, live), streams progress, and sends back the film from
// which the command writes the image. --no-daemon, or choosing this process's devices
// (--device, --threads), renders in this process instead; so does a daemon that refuses the
// job (with a warning). Either way the owner's job is announced on the daemon's control socket
// first, so that its remote leases are revoked at once (unless --no-local or
// --no-owner-preempt), until this process exits.
//
// In this process: on this machine's devices and, with `--peer HOST:PORT`, on Render Nodes too
// (transport/primary.h). With no --peer (and neither --local-only nor --no-mdns) it browses
// mDNS (discovery/peer_watch.h) for --mdns-wait seconds (default 1; at once when no
// avahi-daemon is reachable, which the Discovery backend says in one log line), starts with the
// nodes found whose protocol version and cluster key fingerprint are ours and whose state is
// idle or leased (the others are named on stderr with the reason), and keeps browsing: nodes
// that appear during the render join it.
//
// Exit status 0 on success, 2 for user errors (arguments, a scene that does not load, an
// unknown output format, an unreadable key file), 1 when rendering or writing fails. A peer
// that cannot be used (unreachable, wrong key, other protocol version) is reported, not fatal,
// as long as some device renders the image.

#include <unistd.h>

#include <chrono>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <cstring>
#include <string>
#include <thread>

#include "apps/peerlight/cli_util.h"
#include "apps/peerlight/commands.h"
#include "apps/peerlight/owner_job.h"
#include "apps/peerlight/render_setup.h"
#include "core/render/image_io.h"
#include "core/scene/compile.h"
#include "core/util/log.h"
#include "transport/auth.h"
#include "transport/control_client.h"
#include "transport/primary.h"
#include "transport/protocol_convert.h"
#include "transport/render_session.h"
#include "transport/uv_kj_loop.h"


namespace pl::app {

namespace {

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
  // With the share of each device (or node) in the samples accepted so far.
  void update(uint64_t done, uint64_t total, const std::string& shares) {
    auto now = Clock::now();
    if (done < total && now - lastDraw_ < std::chrono::milliseconds(100)) return;
    lastDraw_ = now;
    double fraction = total ? double(done) / double(total) : 1.0;
    double seconds = std::chrono::duration<double>(now - start_).count();
    double rate = seconds > 0 ? double(done) / seconds : 0.0;
    std::string eta = rate > 0 ? formatSeconds(double(total - done) / rate) : std::string("?");
    std::fprintf(stderr, "\r%3d%% %s samples/s ETA %s | %s   ", int(fraction * 100.0),
                 formatCount(rate).c_str(), eta.c_str(), shares.c_str());
    std::fflush(stderr);
  }
  void finish() { std::fprintf(stderr, "\n"); }

 private:
  using Clock = std::chrono::steady_clock;
  Clock::time_point start_, lastDraw_;
};

// "local 41% | 127.0.0.1:40123 30% | ..." : each source's share of the samples accepted.
std::string shareLine(const ClusterRenderStats& stats, uint64_t total) {
  auto percent = [total](uint64_t samples) {
    return std::to_string(total ? int(100.0 * double(samples) / double(total) + 0.5) : 0) + "%";
  };
  std::string line;
  if (!stats.local.empty()) {
    uint64_t local = 0;
    for (const LocalDeviceRenderStats& d : stats.local) local += d.samples;
    line = "local " + percent(local);
  }
  for (const NodeRenderStats& n : stats.nodes) {
    if (!line.empty()) line += " | ";
    line += n.address + " ";
    if (n.state == "rendering" || n.state == "done" || n.samples > 0)
      line += percent(n.samples);
    else
      line += n.state;
  }
  return line;
}

// Samples per pixel on average over the pixels rendered (`region`, or all when empty): a noise
// threshold stops some early.
double meanSamples(const Film& film, const Rect& region) {
  if (film.pixelSamples().empty()) return film.samplesPerPixel();
  const Rect r = renderedRect(region, film.width(), film.height());
  uint64_t samples = 0;
  for (uint32_t y = r.y; y < r.y + r.height; ++y)
    for (uint32_t x = r.x; x < r.x + r.width; ++x)
      samples += film.samplesAt(size_t(y) * film.width() + x);
  return double(samples) / double(r.pixelCount());
}

void writeOutput(const RenderArgs& args, const Film& film) {
  const std::optional<Film> crop = croppedOutput(args, film);
  if (Status s = writeFilm(args.output, crop ? *crop : film, compileOptionsFrom(args).passes,
                           args.exposure);
      !s.ok())
    fail(s.error().message, 1);
}

// The render across local devices and peers (transport/primary.h).
// The fields every `render --json` result has, local or cluster (an object: keys sorted).
nlohmann::json resultJson(const RenderArgs& args, const Film& film, const SceneSource& scene,
                          double seconds, uint64_t samples, uint64_t raysTraced,
                          double loadSeconds) {
  return {{"scene", args.scene},
          {"output", args.output},
          {"width", film.width()},
          {"height", film.height()},
          {"spp", film.samplesPerPixel()},
          {"seconds", seconds},
          {"load_seconds", loadSeconds},
          {"samples_per_second", seconds > 0 ? double(samples) / seconds : 0.0},
          {"mrays_per_second", seconds > 0 ? double(raysTraced) / seconds / 1e6 : 0.0},
          {"rays_traced", raysTraced},
          {"render_data_bytes", scene.dataBytes()},
          {"triangles", scene.triangleCount()}};
}

// The summary of a cluster render (in this process or by the node daemon): warnings for the
// peers that never answered, the image, and the statistics (--json: one object).
void reportClusterRender(const RenderArgs& args, const Film& film, const SceneSource& scene,
                         const ClusterRenderStats& stats, double loadSeconds,
                         const std::string& daemonPath) {
  // Losses and refusals were logged when they happened; peers that never answered are named
  // here once (rather than once per retry).
  for (const NodeRenderStats& n : stats.nodes) {
    if (!n.error.empty() && n.state != "done" && n.state != "lost" && n.state != "auth_failed" &&
        n.state != "incompatible" && n.state != "too_large")
      std::fprintf(stderr, "peerlight: warning: %s\n", n.error.c_str());
  }
  writeOutput(args, film);

  const double seconds = stats.seconds;
  const double samplesPerSecond = seconds > 0 ? double(stats.samples) / seconds : 0.0;
  const double mraysPerSecond = seconds > 0 ? double(stats.raysTraced) / seconds / 1e6 : 0.0;
  if (args.json) {
    nlohmann::json deviceList = nlohmann::json::array();
    for (const LocalDeviceRenderStats& d : stats.local) {
      deviceList.push_back({{"kind", d.info.kind},
                            {"name", d.info.name},
                            {"threads", d.info.threads},
                            {"memory_bytes", d.info.memoryBytes},
                            {"work_units", d.workUnits},
                            {"samples", d.samples},
                            {"rays_traced", d.raysTraced},
                            {"duplicate_results", d.duplicateResults},
                            {"error", d.error}});
    }
    nlohmann::json nodes = nlohmann::json::array();
    for (const NodeRenderStats& n : stats.nodes) nodes.push_back(nodeJson(n));
    nlohmann::json out = resultJson(args, film, scene, seconds, stats.samples, stats.raysTraced,
                                    loadSeconds);
    out["render_data_chunks"] = stats.renderDataChunks;
    out["render_data_bytes_encoded"] = stats.renderDataEncodedBytes;
    out["render_data_encode_seconds"] = stats.encodeSeconds;
    out["units_issued"] = stats.scheduler.issuedUnits;
    out["units_duplicated"] = stats.scheduler.duplicateUnits;
    out["units_requeued"] = stats.scheduler.requeuedUnits;
    out["noise_threshold"] = args.noiseThreshold;
    out["tiles_retired"] = stats.scheduler.retiredTiles;
    out["mean_spp"] = meanSamples(film, regionOf(args));
    out["devices"] = deviceList;
    out["nodes"] = nodes;
    // The node daemon's control socket when the daemon was the Primary; null otherwise.
    out["node_daemon"] = daemonPath.empty() ? nlohmann::json(nullptr) : nlohmann::json(daemonPath);
    // Node names and errors come from the network: invalid UTF-8 is replaced, not thrown.
    const std::string line = out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    std::printf("%s\n", line.c_str());
  } else {
    std::printf("rendered %ux%u at %u spp in %s: %s samples/s, %.1f Mrays/s, %s\n", film.width(),
                film.height(), film.samplesPerPixel(), formatSeconds(seconds).c_str(),
                formatCount(samplesPerSecond).c_str(), mraysPerSecond, args.output.c_str());
    if (!daemonPath.empty()) std::printf("  rendered by the node daemon (%s)\n", daemonPath.c_str());
    if (args.noiseThreshold > 0)
      std::printf("  noise threshold %g: %llu tiles stopped early, %.1f spp on average\n",
                  args.noiseThreshold, (unsigned long long)stats.scheduler.retiredTiles,
                  meanSamples(film, regionOf(args)));
    uint64_t accepted = 0;  // the samples every device's share is of
    for (const LocalDeviceRenderStats& d : stats.local) accepted += d.samples;
    for (const NodeRenderStats& n : stats.nodes) accepted += n.samples;
    std::printf("  shares: %s\n", shareLine(stats, accepted).c_str());
    for (const NodeRenderStats& n : stats.nodes) {
      std::printf("  %s (%s): %s, %llu units, render data %s sent (%s raw), results %s",
                  n.address.c_str(), n.name.empty() ? "?" : printable(n.name).c_str(),
                  n.state.c_str(),
                  (unsigned long long)n.workUnits, formatBytes(n.renderDataBytesSent).c_str(),
                  formatBytes(n.renderDataBytesRaw).c_str(), formatBytes(n.resultBytes).c_str());
      if (n.secondsToFirstResult >= 0)
        std::printf(", first result after %s", formatSeconds(n.secondsToFirstResult).c_str());
      std::printf("\n");
    }
  }
}

// The render in this process (transport/primary.h), on `loop`: this machine's devices and the
// plan's nodes, and those its watch finds on that loop while the render runs, or this
// machine's devices alone; one path either way.
void runClusterRender(const RenderArgs& args, UvKjLoop& loop, ClusterPlan& plan,
                      const SceneSource& scene, Film& film, const std::vector<Device*>& devices,
                      std::chrono::steady_clock::time_point commandStart, double loadSeconds) {
  ClusterRenderOptions cluster;
  cluster.peers = plan.peers;
  cluster.peersMayAppear = plan.watch != nullptr;
  cluster.localDevices = devices;
  cluster.key = plan.key;
  cluster.primaryName = primaryName();
  cluster.ownerToken = ownerToken();
  cluster.start = commandStart;
  cluster.timeLimit = timeLimitOf(args);
  cluster.region = regionOf(args);
  cluster.noiseThreshold = args.noiseThreshold;

  const bool showProgress = !args.json && isatty(STDERR_FILENO);
  ProgressBar bar;
  ClusterProgressCallback progress;
  if (showProgress) {
    progress = [&bar](const ClusterRenderStats& stats, uint64_t done, uint64_t total) {
      bar.update(done, total, shareLine(stats, total));
    };
  }
  // Each node the watch finds usable from now on is an event on the loop: it joins.
  auto attach = [found = plan.nodeFound](RenderSession* session) {
    if (session != nullptr)
      *found = [session](const std::string& address) { session->addPeer(address); };
    else
      *found = nullptr;
  };
  Result<ClusterRenderStats> result = renderCluster(loop, scene, film, cluster, progress, attach);
  if (showProgress) bar.finish();
  if (!result.ok()) fail(result.error().message, 1);
  reportClusterRender(args, film, scene, *result, loadSeconds, "");
}

// Hands the job to this machine's node daemon (render_job.h) at `path`, over its control socket
// (transport/control_client.h), on a loop that lives for this call: the command waits at top
// level. Returns false when the daemon refused the job before starting it (the caller renders by
// itself); exits on a failure after that.
bool renderThroughDaemon(const RenderArgs& args, const std::string& path,
                         const CompiledScene& compiled, Film& film, double loadSeconds) {
  const RenderJobParams params =
      daemonJobParams(args, film.width(), film.height(), film.samplesPerPixel());
  // The scene's encoded form (the daemon sends its chunks to nodes as they are): the cache
  // file's bytes, or encoded now.
  std::vector<uint8_t> encodedNow;
  std::span<const uint8_t> payload = compiled.cachedBytes;
  if (payload.empty()) {
    ChunkStore chunks;
    const ChunkManifest manifest = encodeRenderData(*compiled.source.data, chunks);
    encodedNow = serializeEncodedScene(manifest, chunks);
    payload = encodedNow;
  }
  const bool showProgress = !args.json && isatty(STDERR_FILENO);
  ProgressBar bar;
  ControlProgressCallback onProgress;
  if (showProgress) {
    onProgress = [&](uint64_t done, uint64_t total, const ClusterRenderStats& stats) {
      bar.update(done, total, shareLine(stats, total));
    };
  }
  bool refused = false;
  Result<ControlRenderResult> reply = Error{""};
  {
    UvKjLoop loop;
    reply = runRenderJob(loop, path, ownerToken().empty() ? randomHex(16) : ownerToken(), params,
                         payload, film.sums().size(), onProgress, &refused);
  }
  if (showProgress) bar.finish();
  if (!reply.ok() && refused) {
    PL_LOG_WARN("%s; rendering in this process", reply.error().message.c_str());
    return false;
  }
  if (!reply.ok()) fail(reply.error().message, 1);
  if (reply->spp != film.samplesPerPixel())  // the time limit ended it at a complete pass
    film = Film(film.width(), film.height(), reply->spp, film.channels());
  if (Status st = film.setSums(std::move(reply->sums)); !st.ok())
    fail("node daemon at " + path + ": " + st.error().message, 1);
  if (Status st = film.setPixelSamples(std::move(reply->pixelSamples)); !st.ok())
    fail("node daemon at " + path + ": " + st.error().message, 1);
  reportClusterRender(args, film, compiled.source, reply->stats, loadSeconds, path);
  return true;
}

void runRender(const RenderArgs& args) {
  const auto commandStart = std::chrono::steady_clock::now();
  if (args.noLocal && args.localOnly) failUsage("--no-local and --local-only exclude each other");
  const bool browse = args.peers.empty() && !args.localOnly && !args.noMdns;
  if (args.noLocal && args.peers.empty() && !browse)
    failUsage("--no-local needs at least one --peer (or mDNS discovery)");
  CompileOptions options = compileOptionsFrom(args);
  (void)regionOf(args);  // checked with the other flags, before anything is loaded or asked
  if (!isSupportedImagePath(args.output))
    failUsage(args.output + ": unknown image format (use .png or .exr)");
  if (options.passes != 0 && !isExrPath(args.output))
    failUsage("--passes needs an .exr output (the passes are its layers)");
  {
    // Fail before a long render, not after it.
    std::error_code ec;
    std::filesystem::path parent = std::filesystem::path(args.output).parent_path();
    if (!parent.empty() && !std::filesystem::is_directory(parent, ec))
      failUsage(args.output + ": folder " + parent.string() + " does not exist");
  }
  // The owner's job starts now (remote leases on this machine's devices are revoked at once),
  // whether the daemon or this process renders it: once the flags are known to be good.
  announceOwnerJobIfDaemon(args);
  const std::string daemonPath = daemonSocket(args);

  const auto loadStart = std::chrono::steady_clock::now();
  const CompiledScene compiled = loadCompiled(args, options);
  Film film(options.width, options.height, args.spp, kernel::filmChannels(options.passes));

  // A node daemon runs on this machine: it becomes the Primary for this job.
  if (!daemonPath.empty()) {
    const double compileSeconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - loadStart).count();
    if (renderThroughDaemon(args, daemonPath, compiled, film, compileSeconds)) {
      storeCompiled(compiled);
      return;
    }
  }

  // With mDNS, nodes that appear during the render join it (events on the render's loop): so a
  // cluster render even when none is there yet.
  UvKjLoop loop;
  ClusterPlan plan = planCluster(args, loop);
  if (args.noLocal && !plan.cluster()) fail("--no-local: no usable node was found by mDNS", 1);
  // This process's devices load the data on their own threads, while the nodes connect.
  std::vector<std::unique_ptr<Device>> owned;
  if (!args.noLocal) owned = openDevices(args);
  std::vector<Device*> devices;
  for (std::unique_ptr<Device>& device : owned) devices.push_back(device.get());
  const double loadSeconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - loadStart).count();
  runClusterRender(args, loop, plan, compiled.source, film, devices, commandStart, loadSeconds);
  storeCompiled(compiled);
}

}  // namespace

void addRenderCommand(CLI::App& app) {
  auto args = std::make_shared<RenderArgs>();
  CLI::App* cmd = app.add_subcommand("render", "Render a scene (glTF 2.0 or OBJ) to PNG or EXR");
  cmd->add_option("scene", args->scene, "Scene file (.gltf, .glb, .obj)")->required();
  cmd->add_option("-o,--output", args->output, "Output image (.png: 8-bit sRGB, .exr: linear)")
      ->required();
  addSceneFlags(cmd, *args);
  cmd->add_flag("--no-cache", args->noCache,
                "Load and compile the scene even when the compiled cache "
                "(~/.cache/peerlight/compiled) holds it");
  addOwnerJobFlags(cmd, *args);
  cmd->add_flag("--no-daemon", args->noDaemon,
                "Render in this process even when this machine's node daemon runs (it then "
                "only revokes its remote leases while this render runs)");
  cmd->add_option("--time-limit", args->timeLimit,
                  "Stop after SECONDS at the last pass (1, 2, 4, ... spp) every pixel completed, "
                  "and write that: bitwise the image of --spp at that count (0: no limit)")
      ->check(CLI::Range(0.0, 1.0e6));
  cmd->callback([args] { runRender(*args); });
}

}  // namespace pl::app
