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
#include "apps/peerlight/render_job.h"
#include "discovery/peer_watch.h"
#include "core/render/cpu_device.h"
#include "core/render/image_io.h"
#include "core/render/local_render.h"
#include "core/scene/compile.h"
#include "core/util/log.h"
#include "discovery/discovery.h"
#include "discovery/node_advert.h"
#include "discovery/peer_directory.h"
#include "transport/auth.h"
#include "transport/control_socket.h"
#include "transport/primary.h"
#include "transport/protocol_convert.h"
#include "transport/uv_kj_loop.h"

#if defined(PEERLIGHT_HAVE_CUDA)
#include "gpu/cuda_devices.h"
#endif

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
  std::string device = "auto";
  bool json = false;
  std::vector<std::string> peers;
  bool noLocal = false;
  bool localOnly = false;
  bool noMdns = false;
  double mdnsWaitSeconds = 1.0;
  std::string keyFile;
  std::string controlSocket;  // empty: defaultControlSocketPath()
  bool noOwnerPreempt = false;
  bool noDaemon = false;
};

// The owner token this render announced on the node daemon's control socket ("" if none).
std::string& ownerToken() {
  static std::string token;
  return token;
}

// "host/pid": the nodes' log lines tell apart two renders started on one machine.
std::string primaryName() {
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) != 0) std::snprintf(host, sizeof(host), "primary");
  return std::string(host) + "/" + std::to_string(::getpid());
}

// This machine's node daemon's control socket: --control-socket, else the first default
// location where a daemon answers (a socket file nobody answers on, a daemon that died, is no
// daemon); "" when there is none.
std::string findDaemonSocket(const RenderArgs& args) {
  if (!args.controlSocket.empty()) return args.controlSocket;
  for (const std::string& path : controlSocketCandidates()) {
    if (::access(path.c_str(), F_OK) == 0 && controlSocketAnswers(path)) return path;
  }
  return "";
}

// Owner preemption (issue 4 item 4): a render that uses this machine's devices tells this
// machine's node daemon, over its control socket, that the owner's job starts; the daemon
// revokes its remote leases and refuses new ones until this process exits (the kernel closes
// the socket). No daemon at the default path: nothing to do. The socket stays open for the
// rest of the process on purpose.
void announceOwnerJobIfDaemon(const RenderArgs& args) {
  if (args.noLocal || args.noOwnerPreempt) return;
  const bool explicitPath = !args.controlSocket.empty();
  const std::string path = findDaemonSocket(args);
  if (path.empty()) return;
  std::string token = randomHex(16);
  Result<int> fd = announceOwnerJob(path, token);
  if (!fd.ok()) {
    if (explicitPath) PL_LOG_WARN("%s (rendering anyway)", fd.error().message.c_str());
    else PL_LOG_DEBUG("%s", fd.error().message.c_str());
    return;
  }
  PL_LOG_INFO("owner job announced to the node daemon at %s", path.c_str());
  ownerToken() = token;
}

// Starts browsing mDNS for Render Nodes this Primary can use (discovery/peer_watch.h: our
// protocol version and key fingerprint, idle or leased) and waits `seconds` for the first
// answers; the nodes found then that cannot be used are named on stderr with the reason. The
// watch keeps browsing: the render adds nodes that appear later (morePeers). Null when no mDNS
// service is reachable.
std::unique_ptr<PeerWatch> watchPeers(const std::string& fingerprint, double seconds) {
  const auto start = std::chrono::steady_clock::now();
  auto watch = std::make_unique<PeerWatch>(
      PeerWatchOptions{kProtocolVersion, fingerprint, "", /*acceptLeased=*/true});
  if (!watch->available()) return nullptr;
  if (seconds > 0)
    std::this_thread::sleep_for(std::chrono::milliseconds(int64_t(seconds * 1000)));
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

void writeOutput(const RenderArgs& args, const Film& film) {
  if (Status s = writeImage(args.output, film.width(), film.height(), film.linearRgb(),
                            args.exposure);
      !s.ok())
    fail(s.error().message, 1);
}

// The render across local devices and peers (transport/primary.h).
// The fields every `render --json` result has, local or cluster (an object: keys sorted).
nlohmann::json resultJson(const RenderArgs& args, const Film& film, const RenderData& data,
                          double seconds, uint64_t samples, uint64_t raysTraced,
                          double loadSeconds) {
  return {{"scene", args.scene},
          {"output", args.output},
          {"width", film.width()},
          {"height", film.height()},
          {"spp", args.spp},
          {"seconds", seconds},
          {"load_seconds", loadSeconds},
          {"samples_per_second", seconds > 0 ? double(samples) / seconds : 0.0},
          {"mrays_per_second", seconds > 0 ? double(raysTraced) / seconds / 1e6 : 0.0},
          {"rays_traced", raysTraced},
          {"render_data_bytes", data.byteSize()},
          {"triangles", data.triangles.size()}};
}

// The summary of a cluster render (in this process or by the node daemon): warnings for the
// peers that never answered, the image, and the statistics (--json: one object).
void reportClusterRender(const RenderArgs& args, const Film& film, const RenderData& data,
                         const ClusterRenderStats& stats, double loadSeconds,
                         const std::string& daemonPath) {
  // Losses and refusals were logged when they happened; peers that never answered are named
  // here once (rather than once per retry).
  for (const NodeRenderStats& n : stats.nodes) {
    if (!n.error.empty() && n.state != "done" && n.state != "lost" && n.state != "auth_failed" &&
        n.state != "incompatible")
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
    nlohmann::json out = resultJson(args, film, data, seconds, stats.samples, stats.raysTraced,
                                    loadSeconds);
    out["render_data_chunks"] = stats.renderDataChunks;
    out["render_data_bytes_encoded"] = stats.renderDataEncodedBytes;
    out["render_data_encode_seconds"] = stats.encodeSeconds;
    out["units_issued"] = stats.scheduler.issuedUnits;
    out["units_duplicated"] = stats.scheduler.duplicateUnits;
    out["units_requeued"] = stats.scheduler.requeuedUnits;
    out["devices"] = deviceList;
    out["nodes"] = nodes;
    // The node daemon's control socket when the daemon was the Primary; null otherwise.
    out["node_daemon"] = daemonPath.empty() ? nlohmann::json(nullptr) : nlohmann::json(daemonPath);
    std::printf("%s\n", out.dump().c_str());
  } else {
    std::printf("rendered %ux%u at %u spp in %s: %s samples/s, %.1f Mrays/s, %s\n", film.width(),
                film.height(), args.spp, formatSeconds(seconds).c_str(),
                formatCount(samplesPerSecond).c_str(), mraysPerSecond, args.output.c_str());
    if (!daemonPath.empty()) std::printf("  rendered by the node daemon (%s)\n", daemonPath.c_str());
    uint64_t total = uint64_t(film.width()) * film.height() * args.spp;
    std::printf("  shares: %s\n", shareLine(stats, total).c_str());
    for (const NodeRenderStats& n : stats.nodes) {
      std::printf("  %s (%s): %s, %llu units, render data %s sent (%s raw), results %s",
                  n.address.c_str(), n.name.empty() ? "?" : n.name.c_str(), n.state.c_str(),
                  (unsigned long long)n.workUnits, formatBytes(n.renderDataBytesSent).c_str(),
                  formatBytes(n.renderDataBytesRaw).c_str(), formatBytes(n.resultBytes).c_str());
      if (n.secondsToFirstResult >= 0)
        std::printf(", first result after %s", formatSeconds(n.secondsToFirstResult).c_str());
      std::printf("\n");
    }
  }
}

void runClusterRender(const RenderArgs& args, const std::vector<std::string>& peers,
                      PeerWatch* watch, const RenderData& data, Film& film,
                      const std::vector<Device*>& devices, ClusterKey key,
                      std::chrono::steady_clock::time_point commandStart, double loadSeconds) {
  ClusterRenderOptions cluster;
  cluster.peers = peers;
  if (watch != nullptr) cluster.morePeers = [watch] { return watch->usableAddresses(); };
  cluster.localDevices = devices;
  cluster.key = std::move(key);
  cluster.primaryName = primaryName();
  cluster.ownerToken = ownerToken();
  cluster.start = commandStart;

  const bool showProgress = !args.json && isatty(STDERR_FILENO);
  ProgressBar bar;
  ClusterProgressCallback progress;
  if (showProgress) {
    progress = [&bar](const ClusterRenderStats& stats, uint64_t done, uint64_t total) {
      bar.update(done, total, shareLine(stats, total));
    };
  }
  Result<ClusterRenderStats> result = renderCluster(data, film, cluster, progress);
  if (showProgress) bar.finish();
  if (!result.ok()) fail(result.error().message, 1);
  reportClusterRender(args, film, data, *result, loadSeconds, "");
}

// Hands the job to this machine's node daemon (render_job.h) at `path`. Returns false when
// the daemon refused it before starting (the caller renders by itself); exits on a failure
// after that.
bool renderThroughDaemon(const RenderArgs& args, const std::string& path, const RenderData& data,
                         Film& film, double loadSeconds) {
  RenderJobParams params;
  params.width = film.width();
  params.height = film.height();
  params.spp = film.samplesPerPixel();
  params.peers = args.peers;
  params.localOnly = args.localOnly;
  params.noLocal = args.noLocal;
  params.noOwnerPreempt = args.noOwnerPreempt;
  params.noMdns = args.noMdns;
  params.primaryName = primaryName();
  std::vector<uint8_t> payload = serialize(data);
  const bool showProgress = !args.json && isatty(STDERR_FILENO);
  ProgressBar bar;
  auto onProgress = [&](const std::string& text) {
    if (!showProgress) return;
    nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
    if (!j.is_object() || !j.contains("stats")) return;
    Result<ClusterRenderStats> stats = statsFromJson(j["stats"]);
    if (!stats.ok()) return;
    uint64_t done = j.value("done", uint64_t(0)), total = j.value("total", uint64_t(0));
    bar.update(done, total, shareLine(*stats, total));
  };
  bool refused = false;
  Result<ControlRenderReply> reply =
      submitRenderJob(path, ownerToken().empty() ? randomHex(16) : ownerToken(),
                      paramsToJson(params).dump(), payload,
                      uint64_t(film.sums().size()) * sizeof(int64_t), onProgress, &refused);
  if (showProgress) bar.finish();
  if (!reply.ok() && refused) {
    PL_LOG_WARN("%s; rendering in this process", reply.error().message.c_str());
    return false;
  }
  if (!reply.ok()) fail(reply.error().message, 1);
  nlohmann::json j = nlohmann::json::parse(reply->text, nullptr, false);
  Result<ClusterRenderStats> stats = statsFromJson(j);
  if (!stats.ok()) fail(stats.error().message, 1);
  std::vector<int64_t> sums(reply->bytes.size() / sizeof(int64_t));
  if (reply->bytes.size() != sums.size() * sizeof(int64_t))
    fail("node daemon at " + path + ": a film of " + std::to_string(reply->bytes.size()) +
             " bytes",
         1);
  std::memcpy(sums.data(), reply->bytes.data(), reply->bytes.size());
  if (Status st = film.setSums(std::move(sums)); !st.ok())
    fail("node daemon at " + path + ": " + st.error().message, 1);
  reportClusterRender(args, film, data, *stats, loadSeconds, path);
  return true;
}

// The node daemon's control socket this render hands its job to, or "" to render in this
// process: --no-daemon, or a choice of this process's devices (--device, --threads), or no
// daemon socket found.
std::string daemonSocket(const RenderArgs& args) {
  if (args.noDaemon || args.device != "auto" || args.threads != 0) return "";
  return findDaemonSocket(args);
}

void runRender(const RenderArgs& args) {
  const auto commandStart = std::chrono::steady_clock::now();
  if (args.noLocal && args.localOnly) failUsage("--no-local and --local-only exclude each other");
  // The owner's job starts now (remote leases on this machine's devices are revoked at once),
  // whether the daemon or this process renders it.
  announceOwnerJobIfDaemon(args);
  const std::string daemonPath = daemonSocket(args);
  const bool browse = args.peers.empty() && !args.localOnly && !args.noMdns;
  if (args.noLocal && args.peers.empty() && !browse)
    failUsage("--no-local needs at least one --peer (or mDNS discovery)");
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
  Film film(options.width, options.height, args.spp);

  // A node daemon runs on this machine: it becomes the Primary for this job.
  if (!daemonPath.empty()) {
    const double compileSeconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - loadStart).count();
    if (renderThroughDaemon(args, daemonPath, *data, film, compileSeconds)) return;
  }

  ClusterKey key;
  std::unique_ptr<PeerWatch> watch;
  std::vector<std::string> peers = args.localOnly ? std::vector<std::string>{} : args.peers;
  if (!peers.empty()) {
    Result<std::string> keyPath = clusterKeyPath(args.keyFile);
    if (!keyPath.ok()) failUsage(keyPath.error().message);
    Result<ClusterKey> loaded = loadClusterKey(*keyPath, /*createIfMissing=*/true);
    if (!loaded.ok()) failUsage(loaded.error().message);
    key = std::move(loaded).value();
  } else if (browse) {
    // Without a key no node can be used: then no key is created and nothing is browsed.
    Result<std::string> keyPath = clusterKeyPath(args.keyFile);
    Result<ClusterKey> loaded = keyPath.ok()
                                    ? loadClusterKey(*keyPath, /*createIfMissing=*/false)
                                    : Result<ClusterKey>(keyPath.error());
    if (loaded.ok()) {
      key = std::move(loaded).value();
      watch = watchPeers(keyFingerprint(key), args.mdnsWaitSeconds);
      if (watch) peers = watch->usableAddresses();
    } else {
      PL_LOG_DEBUG("no mDNS browse: %s", loaded.error().message.c_str());
    }
  }
  // With mDNS, nodes that appear during the render join it: so a cluster render even when
  // none is there yet (a local-only render needs no Primary).
  const bool cluster = !peers.empty() || (watch && !args.noLocal);
  if (args.noLocal && !cluster) fail("--no-local: no usable node was found by mDNS", 1);

  std::vector<std::unique_ptr<Device>> owned;
  if (!args.noLocal) owned = openDevices(args);
  std::vector<Device*> devices;
  for (std::unique_ptr<Device>& device : owned) {
    if (Status s = device->load(data); !s.ok()) {
      PL_LOG_WARN("%s", s.error().message.c_str());
      continue;
    }
    devices.push_back(device.get());
  }
  if (devices.empty() && !args.noLocal) {
    if (!cluster) fail("no device could load the scene", 1);
    PL_LOG_WARN("no local device could load the scene; rendering on the peers only");
  }
  // GPUs need big units to fill them (about 10^6 pixel samples); CPUs refine the image in
  // small, quick ones.
  bool anyGpu = false;
  for (Device* device : devices) anyGpu |= device->info().kind == "cuda";
  const TilingOptions tiling = anyGpu ? TilingOptions{256, 16} : TilingOptions{};
  const double loadSeconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - loadStart).count();

  if (cluster) {
    runClusterRender(args, peers, watch.get(), *data, film, devices, std::move(key), commandStart,
                     loadSeconds);
    return;
  }
  const bool showProgress = !args.json && isatty(STDERR_FILENO);
  ProgressBar bar;
  ProgressCallback progress;
  if (showProgress) progress = [&bar](uint64_t done, uint64_t total) { bar.update(done, total); };
  Result<LocalRenderStats> stats = renderLocal(devices, film, tiling, progress);
  if (showProgress) bar.finish();
  if (!stats.ok()) fail(stats.error().message, 1);

  writeOutput(args, film);

  const double seconds = stats->seconds;
  const double samplesPerSecond = seconds > 0 ? double(stats->samples) / seconds : 0.0;
  const double mraysPerSecond = seconds > 0 ? double(stats->raysTraced) / seconds / 1e6 : 0.0;
  if (args.json) {
    nlohmann::json deviceList = nlohmann::json::array();
    for (size_t i = 0; i < devices.size(); ++i) {
      const DeviceInfo info = devices[i]->info();
      const DeviceShare& share = stats->devices[i];
      deviceList.push_back({{"kind", info.kind},
                            {"name", info.name},
                            {"threads", info.threads},
                            {"memory_bytes", info.memoryBytes},
                            {"work_units", share.units},
                            {"samples", share.samples},
                            {"rays_traced", share.raysTraced},
                            {"error", share.error}});
    }
    nlohmann::json out = resultJson(args, film, *data, seconds, stats->samples,
                                    stats->raysTraced, loadSeconds);
    out["devices"] = deviceList;
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
  cmd->add_option("--control-socket", args->controlSocket,
                  "The node daemon's control socket: the job is handed to that daemon, or "
                  "announced there as the owner's (default: "
                  "$XDG_RUNTIME_DIR/peerlight/node.sock, /run/peerlight/node.sock for root)");
  cmd->add_flag("--no-daemon", args->noDaemon,
                "Render in this process even when this machine's node daemon runs (it then "
                "only revokes its remote leases while this render runs)");
  cmd->add_flag("--no-owner-preempt", args->noOwnerPreempt,
                "Do not make this machine's node daemon revoke its remote leases");
  cmd->add_option("--key-file", args->keyFile,
                  "Cluster key file (default: $PEERLIGHT_KEY_FILE, else "
                  "~/.config/peerlight/cluster.key; created if missing when --peer is given)");
  cmd->callback([args] { runRender(*args); });
}

}  // namespace pl::app
