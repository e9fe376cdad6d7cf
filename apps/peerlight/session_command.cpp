// `peerlight session SCENE [render flags]`: a long-lived render session driven by JSON lines.
//
// The scene is loaded and compiled once; then the session renders it, held by this machine's
// node daemon when one runs (apps/peerlight/daemon_session.h: the daemon is its Primary, as
// for `peerlight render`), else in this process (in_process_session.h: a RenderSession on this
// process's loop with this machine's devices and the cluster's nodes). Each line on stdin is
// one request; each line on stdout is one event (session_driver.h carries them out). Updates
// (camera, env, material, transform, visibility) start a new generation; `save` writes the
// image once the current generation reaches the asked samples per pixel, bitwise what
// `peerlight render` of that state gives. A bad line gets an `error` event and the session goes
// on. End of stdin or `quit` ends the session (its leases are released as its connections
// close). See the README for the protocol.
//
// Threads: the loop thread does everything; a reader thread only reads stdin lines and posts
// them to the loop.

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "apps/peerlight/cli_util.h"
#include "apps/peerlight/commands.h"
#include "apps/peerlight/daemon_session.h"
#include "apps/peerlight/in_process_session.h"
#include "apps/peerlight/owner_job.h"
#include "apps/peerlight/render_setup.h"
#include "apps/peerlight/session_driver.h"
#include "core/render/image_io.h"
#include "core/scene/compile.h"
#include "core/scene/load.h"
#include "core/scene/texture_mips.h"
#include "core/util/log.h"
#include "transport/auth.h"
#include "transport/uv_kj_loop.h"

namespace pl::app {

namespace {

using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

// Lines from stdin, handed to the loop. The reader thread blocks in a read; it is detached, and
// stops posting once the session is gone. A line is at most kMaxLineBytes (the rest of a longer
// one is dropped and the line reported as too long).
class StdinReader {
 public:
  static constexpr size_t kMaxLineBytes = SessionDriver::kMaxLineBytes;
  using LineFn = std::function<void(std::string line, bool eof, bool tooLong)>;
  struct Shared {
    std::mutex mutex;
    UvKjLoop* loop = nullptr;  // null once the session is over
    LineFn onLine;
  };

  StdinReader(UvKjLoop& loop, LineFn onLine) : shared_(std::make_shared<Shared>()) {
    shared_->loop = &loop;
    shared_->onLine = std::move(onLine);
    std::thread([shared = shared_] {
      for (;;) {
        std::string line;
        bool tooLong = false;
        int c = 0;
        while ((c = getc_unlocked(stdin)) != EOF && c != '\n') {
          if (line.size() < kMaxLineBytes) line.push_back(char(c));
          else tooLong = true;
        }
        const bool eof = c == EOF && line.empty();
        std::lock_guard<std::mutex> lock(shared->mutex);
        if (shared->loop == nullptr) return;
        shared->loop->post([shared, line = std::move(line), eof, tooLong] {
          // On the loop thread; the session may have ended since this was posted.
          std::lock_guard<std::mutex> lock(shared->mutex);
          if (shared->loop != nullptr) shared->onLine(line, eof, tooLong);
        });
        if (eof) return;
      }
    }).detach();
  }
  ~StdinReader() {
    std::lock_guard<std::mutex> lock(shared_->mutex);
    shared_->loop = nullptr;
  }

 private:
  std::shared_ptr<Shared> shared_;
};

void runSession(const RenderArgs& args, const std::string& passImage) {
  const auto commandStart = Clock::now();
  if (args.noLocal && args.localOnly) failUsage("--no-local and --local-only exclude each other");
  if (!passImage.empty()) {
    if (!isSupportedImagePath(passImage))
      failUsage("--pass-image " + passImage + ": unknown image format (use .png or .exr)");
    std::error_code ec;
    const std::filesystem::path parent = std::filesystem::path(passImage).parent_path();
    if (!parent.empty() && !std::filesystem::is_directory(parent, ec))
      failUsage("--pass-image " + passImage + ": folder " + parent.string() +
                " does not exist");
  }
  CompileOptions options = compileOptionsFrom(args);
  (void)regionOf(args);  // checked with the other flags, before the scene loads
  if (options.passes != 0 && !passImage.empty() && !isExrPath(passImage))
    failUsage("--passes needs an .exr --pass-image (the passes are written beside it)");
  // The scene itself for the edits to come; its compiled form from the cache when an unchanged
  // scene was compiled the same way before (already encoded for the nodes), else compiled now.
  Result<Scene> scene = loadScene(args.scene);
  if (!scene.ok()) failUsage(scene.error().message);
  prepareMips(*scene);  // once: every edit compiles the scene again, its textures unchanged
  CompiledScene compiled = findCompiled(args, options);
  if (!compiled.fromCache) {
    Result<RenderData> data = compile(*scene, options);
    if (!data.ok()) failUsage(data.error().message);
    compiled.source.data = std::make_shared<const RenderData>(std::move(data).value());
  }
  const Result<kernel::Camera> firstCamera = compiled.source.camera();
  if (!firstCamera.ok()) fail(firstCamera.error().message, 1);
  const double loadSeconds = std::chrono::duration<double>(Clock::now() - commandStart).count();
  const std::vector<std::string> warnings = scene->warnings;  // also logged by loadScene

  bool failed = false;
  {
    UvKjLoop loop;
    SessionDriver driver(args, std::move(scene).value(), options, passImage);
    SessionBackendEvents events;
    events.onPass = [&](const SessionPassEvent& pass) { driver.onPass(pass); };
    events.onNode = [&](const NodeRenderStats& n, bool joined) { driver.onNode(n, joined); };
    events.onStopped = [&](uint64_t g, uint32_t spp, double s) { driver.onStopped(g, spp, s); };
    events.onFatal = [&](const std::string& message) { driver.onFatal(message); };
    // Held by this machine's node daemon when one runs (it is then the session's Primary, with
    // the machine's devices and its nodes; the session shows in its live view), else rendered
    // in this process. A daemon that refuses it (busy, say): in this process.
    std::unique_ptr<SessionBackend> backend;
    DaemonSession* daemon = nullptr;
    if (const std::string path = daemonSocket(args); !path.empty()) {
      bool refused = false;
      Result<std::unique_ptr<DaemonSession>> opened = DaemonSession::open(
          loop, path, randomHex(16),
          daemonJobParams(args, firstCamera->width, firstCamera->height, args.spp),
          compiled.source, args.spp, !passImage.empty(), events, &refused);
      if (opened.ok()) {
        daemon = opened->get();
        backend = std::move(opened).value();
      } else if (!refused) {
        fail(opened.error().message, 1);
      } else {
        PL_LOG_WARN("%s; the session renders in this process", opened.error().message.c_str());
      }
    }
    ClusterPlan plan;
    std::vector<std::unique_ptr<Device>> owned;
    if (backend == nullptr) {
      // This machine's devices render in this process for the whole session: the node daemon,
      // if one runs, lends them to no other Primary meanwhile (and this session's own mDNS
      // browse then finds its node refusing, not a second lease on the same devices).
      announceOwnerJobIfDaemon(args, &loop);
      plan = planCluster(args, loop);  // later nodes: events on this loop
      if (args.noLocal && !plan.cluster()) fail("--no-local: no node given or found by mDNS", 1);
      if (!args.noLocal) owned = openDevices(args);
      ClusterRenderOptions cluster;
      cluster.peers = plan.peers;
      cluster.peersMayAppear = plan.watch != nullptr;
      for (std::unique_ptr<Device>& device : owned) cluster.localDevices.push_back(device.get());
      cluster.key = plan.key;
      cluster.primaryName = primaryName() + " (session)";
      cluster.start = commandStart;
      cluster.scheduler = interactiveSchedulerOptions();  // the first pass after an update: fast
      cluster.noDeviceTimeout = std::chrono::milliseconds(0);  // a session waits for nodes
      cluster.timeLimit = timeLimitOf(args);
      cluster.region = regionOf(args);
      cluster.noiseThreshold = args.noiseThreshold;
      auto local = std::make_unique<InProcessSession>(loop, cluster, events, !passImage.empty());
      if (Status s = local->start(compiled.source, args.spp); !s.ok()) fail(s.error().message, 1);
      *plan.nodeFound = [session = local.get()](const std::string& address) {
        session->addPeerNow(address);
      };
      backend = std::move(local);
    }
    driver.attach(*backend);
    Json devices = Json::array();
    for (const std::unique_ptr<Device>& d : owned)
      devices.push_back({{"kind", d->info().kind}, {"name", d->info().name}});
    emitEvent({{"event", "ready"},
               {"generation", backend->generation()},
               {"width", firstCamera->width},
               {"height", firstCamera->height},
               {"target_spp", args.spp},
               {"triangles", compiled.source.triangleCount()},
               {"load_seconds", loadSeconds},
               {"devices", devices},
               {"peers", daemon != nullptr ? args.peers : plan.peers},
               {"renders_in", backend->where()},
               {"warnings", warnings}});
    if (daemon != nullptr) daemon->deliverEvents();
    StdinReader reader(loop, [&](std::string line, bool eof, bool tooLong) {
      driver.onLine(line, eof, tooLong);
    });
    driver.finished().wait(loop.waitScope());
    failed = driver.failed();
    backend.reset();  // the session ends: leases are released, device threads joined
  }
  std::fflush(stdout);
  // A scene compiled now is kept for the next session or render of it (after the session: the
  // encoding must not hold up the first passes).
  storeCompiled(compiled);
  if (failed) std::exit(1);
}

}  // namespace

void addSessionCommand(CLI::App& app) {
  auto args = std::make_shared<RenderArgs>();
  auto passImage = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand(
      "session",
      "Keep a scene loaded and render it progressively; JSON lines in on stdin (camera, env, "
      "material, transform, visibility, save, stats, peer, quit), events out on stdout");
  cmd->add_option("scene", args->scene, "Scene file (.gltf, .glb, .obj)")->required();
  addSceneFlags(cmd, *args);
  cmd->add_flag("--no-cache", args->noCache,
                "Compile the scene even when the compiled cache (~/.cache/peerlight/compiled) "
                "holds it");
  cmd->add_option("--time-limit", args->timeLimit,
                  "After this many seconds each generation ends at its last complete pass (at "
                  "its first, if none is complete by then): a `stopped` event; a save without "
                  "spp writes that image (0: none)")
      ->check(CLI::Range(0.0, 1.0e6));
  addOwnerJobFlags(cmd, *args);
  cmd->add_flag("--no-daemon", args->noDaemon,
                "Hold the session in this process even when this machine's node daemon runs "
                "(it then only revokes its remote leases while the session lasts)");
  cmd->add_option("--pass-image", *passImage,
                  "Write every pass's image to this file (.exr or .png; replaced at each pass, "
                  "never half written); the pass event names it")
      ->type_name("FILE");
  cmd->callback([args, passImage] { runSession(*args, *passImage); });
}

}  // namespace pl::app
