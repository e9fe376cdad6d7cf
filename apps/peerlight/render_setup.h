#pragma once
// What `peerlight render` and `peerlight session` share: their scene and cluster flags, the
// compile options those give, this machine's devices, and the Render Nodes to use (--peer, or
// mDNS with the cluster key). Both commands then run a RenderSession (transport/render_session.h).

#include <CLI/CLI.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/render/device.h"
#include "core/render/film.h"
#include "core/scene/compile.h"
#include "core/util/hash.h"
#include "discovery/peer_watch.h"
#include "transport/auth.h"
#include "transport/primary.h"
#include "transport/uv_kj_loop.h"

namespace pl::app {

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
  std::string lookAt;       // --look-at EX,EY,EZ,TX,TY,TZ[,UX,UY,UZ]
  float yfovDegrees = 0.0f;  // --yfov (0: the camera's)
  bool noCache = false;      // --no-cache: always load and compile
  std::string passes;        // --passes albedo,normal,depth
  double timeLimit = 0;      // --time-limit SECONDS (render and session); 0: none
  double noiseThreshold = 0;  // --noise-threshold T (render and session); 0: none
  std::string region;        // --region X,Y,W,H: a render border
  bool crop = false;         // --crop: write the region alone
};

// The flags both commands take (scene, image, sampling, devices, peers, key, camera).
void addSceneFlags(CLI::App* cmd, RenderArgs& args);

// The compile options the flags give (--size, --camera, --look-at/--yfov, --env, --seed,
// --max-depth); exits with status 2 naming the flag on bad values.
CompileOptions compileOptionsFrom(const RenderArgs& args);
// --time-limit in whole milliseconds, rounded up (a limit never rounds to none); 0: none. The
// flag is checked to be within 0 .. 10^6 s.
std::chrono::milliseconds timeLimitOf(const RenderArgs& args);
// --region within --size (exits with status 2 naming the flag when it is not); empty: none.
// --crop without --region is a usage error too.
Rect regionOf(const RenderArgs& args);
// With --crop, the region as a film of its own (what the output files hold); else nothing:
// they hold the whole film.
std::optional<Film> croppedOutput(const RenderArgs& args, const Film& film);

// The scene compiled with `options`: from the compiled cache (core/scene/compiled_cache.h) when
// an unchanged scene was compiled the same way before, in its encoded form (mapped, not read:
// what nodes need is sent as it is and the data is decoded only where this machine renders),
// else loaded and compiled (exits with status 2 naming the file when it does not load).
// --no-cache skips the cache.
struct CompiledScene {
  SceneSource source;  // .data when compiled now, .encoded when from the cache
  // From the cache: the file's bytes (serializeEncodedScene()'s form), kept alive by
  // source.encoded.
  std::span<const uint8_t> cachedBytes;
  bool fromCache = false;
  std::optional<Hash128> key;  // the cache key, when the cache is in use
};
CompiledScene loadCompiled(const RenderArgs& args, const CompileOptions& options);
// The cache's part of loadCompiled(): the encoded scene when the cache holds it, else a scene
// with no source (and the key to store under, when the cache is in use).
CompiledScene findCompiled(const RenderArgs& args, const CompileOptions& options);
// Stores a scene that was compiled (not read from the cache), after the render, in its encoded
// form: the cache is an optimisation, so failures only log.
void storeCompiled(const CompiledScene& scene);

// "host/pid": the nodes' log lines tell apart two Primaries started on one machine.
std::string primaryName();

// The devices `--device` names: auto (every CUDA GPU, else the CPU), cpu, cuda, or all
// (exits with status 2 for cuda on a machine without one).
std::vector<std::unique_ptr<Device>> openDevices(const RenderArgs& args);

// The Render Nodes a Primary starts with and how it finds more: --peer (with the cluster key,
// created if missing), else, unless --local-only or --no-mdns, an mDNS watch (browsed for
// --mdns-wait seconds first; null when no avahi-daemon answers or there is no key).
struct ClusterPlan {
  ClusterKey key;
  std::vector<std::string> peers;
  // Each node found usable later, an event on planCluster()'s loop; the caller sets it once it
  // can use one. Declared before the watch that calls it.
  std::shared_ptr<std::function<void(const std::string& address)>> nodeFound =
      std::make_shared<std::function<void(const std::string&)>>();
  std::unique_ptr<PeerWatch> watch;
  // Peers given or found, or a watch that may find some (then a cluster session even with
  // none yet).
  bool cluster() const { return !peers.empty() || watch != nullptr; }
};
// The watch browses on `loop` (the command's, which its render or session runs on) and reports
// later nodes through plan.nodeFound; --mdns-wait runs the loop.
ClusterPlan planCluster(const RenderArgs& args, UvKjLoop& loop);

// One node's statistics as JSON (render --json, session stats).
nlohmann::json nodeJson(const NodeRenderStats& n);

}  // namespace pl::app
