// `peerlight session SCENE [render flags]`: a long-lived render session driven by JSON lines.
//
// The scene is loaded and compiled once; then a RenderSession (transport/render_session.h) on
// this process's one event loop renders it on this machine's devices and the cluster's nodes
// (the same flags and the same path as `peerlight render`). Each line on stdin is one request;
// each line on stdout is one event. Updates (camera, env, material, transform, visibility)
// start a new generation; `save` writes the image once the current generation reaches the
// asked samples per pixel, bitwise what `peerlight render` of that state gives. A bad line gets
// an `error` event and the session goes on. End of stdin or `quit` ends the session (its
// leases are released as its connections close). See the README for the protocol.
//
// Threads: the loop thread does everything; a reader thread only reads stdin lines and posts
// them to the loop.

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "apps/peerlight/cli_util.h"
#include "apps/peerlight/commands.h"
#include "apps/peerlight/owner_job.h"
#include "apps/peerlight/render_setup.h"
#include "apps/peerlight/session_request.h"
#include "core/render/image_io.h"
#include "core/scene/compile.h"
#include "core/scene/load.h"
#include "core/scene/scene_edit.h"
#include "core/scene/texture_mips.h"
#include "core/util/log.h"
#include "transport/render_session.h"
#include "transport/uv_kj_loop.h"

namespace pl::app {

namespace {

using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

// One line of stdout per event, flushed at once (the reader is another program).
void emit(const Json& event) {
  std::string line = event.dump(-1, ' ', false, Json::error_handler_t::replace);
  line += '\n';
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fflush(stdout);
}

// Lines from stdin, handed to the loop. The reader thread blocks in a read; it is detached, and
// stops posting once the session is gone. A line is at most kMaxLineBytes (the rest of a longer
// one is dropped and the line reported as too long).
class StdinReader {
 public:
  static constexpr size_t kMaxLineBytes = size_t(1) << 20;
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

// The session's state and its requests. Loop thread only.
// Writes `path` through write(partial) and renames it over `path`: a reader never sees half
// an image. False with *error set when either step fails.
bool writeReplacing(const std::string& path,
                    const std::function<Status(const std::string&)>& write, std::string* error) {
  const std::string partial =
      path + ".partial" + std::filesystem::path(path).extension().string();
  if (Status st = write(partial); !st.ok()) {
    *error = st.error().message;
    return false;
  }
  std::error_code ec;
  std::filesystem::rename(partial, path, ec);
  if (ec) {
    *error = path + ": " + ec.message();
    return false;
  }
  return true;
}

class SessionDriver {
 public:
  SessionDriver(const RenderArgs& args, Scene scene, CompileOptions options,
                std::string passImage)
      : args_(args),
        scene_(std::move(scene)),
        options_(std::move(options)),
        passImage_(std::move(passImage)) {}

  void attach(RenderSession& session) { session_ = &session; }
  kj::Promise<void> finished() { return kj::mv(done_.promise); }
  bool quitting() const { return quitting_; }

  // One request line.
  void onLine(const std::string& line, bool eof, bool tooLong) {
    if (eof) return quit();
    if (tooLong) {
      emit({{"event", "error"},
            {"op", ""},
            {"message", "a request line longer than " +
                            std::to_string(StdinReader::kMaxLineBytes) + " bytes (dropped)"}});
      return;
    }
    if (line.find_first_not_of(" \t\r") == std::string::npos) return;
    std::string op;
    std::optional<Json> id;
    try {
      handle(parseSessionRequest(line, &op, &id));
    } catch (const RequestError& e) {
      Json event{{"event", "error"}, {"op", op}, {"message", e.message}};
      if (!e.field.empty()) event["field"] = e.field;
      if (id) event["id"] = *id;
      emit(event);
    }
  }

  void onPass(uint64_t generation, uint32_t spp, double seconds) {
    Json shares = Json::array();
    uint64_t total = 0;
    for (const auto& [source, samples] : session_->shares()) total += samples;
    for (const auto& [source, samples] : session_->shares())
      shares.push_back({{"source", source},
                        {"samples", samples},
                        {"share", total ? double(samples) / double(total) : 0.0}});
    Json event{{"event", "pass"},
               {"generation", generation},
               {"spp", spp},
               {"target_spp", session_->targetSpp()},
               {"seconds", seconds},
               {"shares", shares}};
    // Rendering until clean: the share of the frame's pixels (the region's) that stopped taking
    // samples.
    if (args_.noiseThreshold > 0) {
      const ProgressiveFilm& film = session_->film();
      const Rect rendered = renderedRect(regionOf(args_), film.width(), film.height());
      event["clean"] = double(film.retiredPixels()) / double(rendered.pixelCount());
    }
    if (!passImage_.empty()) {
      const Film film = outputOf(session_->film().snapshot());
      std::string error;
      // The colour alone (a file with layers is one image to most readers: Blender's
      // load_from_file() refuses it), and each pass beside it.
      if (writeReplacing(passImage_, [&](const std::string& path) {
            return writeFilm(path, film, 0, args_.exposure);
          }, &error))
        event["image"] = passImage_;
      else
        event["image_error"] = error;
      // Each pass as an image of its own beside it (FILE.albedo.exr, ...).
      if (isExrPath(passImage_)) {
        Json images = Json::object();
        for (const ExrLayer& layer : filmPassLayers(film, options_.passes)) {
          const std::filesystem::path base(passImage_);
          const std::string path =
              (base.parent_path() / (base.stem().string() + "." + layer.name + ".exr")).string();
          if (writeReplacing(path, [&](const std::string& p) {
                return writeExr(p, film.width(), film.height(), layer.values);
              }, &error))
            images[layer.name] = path;
          else
            event["image_error"] = error;
        }
        if (!images.empty()) event["pass_images"] = images;
      }
    }
    emit(event);
    writeDueSaves();
  }

  // --time-limit ended the generation at `spp` (the last pass reported).
  void onStopped(uint64_t generation, uint32_t spp, double seconds) {
    emit({{"event", "stopped"}, {"generation", generation}, {"spp", spp}, {"seconds", seconds}});
    writeDueSaves();
  }

  void onNode(const NodeRenderStats& node, bool joined) {
    Json event{{"event", "node"},
               {"address", node.address},
               {"name", node.name},
               {"state", joined ? "joined" : "lost"}};
    if (!joined) event["reason"] = node.error;
    emit(event);
  }

  void onFatal(const std::string& message) {
    emit({{"event", "error"}, {"op", ""}, {"fatal", true}, {"message", message}});
    failed_ = true;
    quit();
  }

  bool failed() const { return failed_; }

 private:
  // What the files hold: the --region alone with --crop, else the whole film.
  Film outputOf(Film film) const {
    std::optional<Film> crop = croppedOutput(args_, film);
    return crop ? std::move(*crop) : std::move(film);
  }

  struct PendingSave {
    std::string path;
    uint32_t spp;
    // No spp asked: the generation's end, at its target or where --time-limit ended it.
    bool whenFinished = false;
    uint64_t generation;
    std::optional<Json> id;
  };

  using Id = std::optional<Json>;  // a request's id, echoed in its events

  void handle(const SessionRequest& r) {
    const Id& id = r.id;
    std::visit(
        [&](const auto& request) {
          using T = std::decay_t<decltype(request)>;
          if constexpr (std::is_same_v<T, SceneEdit>) {
            // On copies: a request that fails changes nothing.
            Pending next{scene_, options_, false, std::nullopt};
            applyEdit(request, next);
            commit(next, r.op.c_str(), id);
          } else if constexpr (std::is_same_v<T, BatchRequest>) {
            batch(request, id);
          } else if constexpr (std::is_same_v<T, SaveRequest>) {
            save(request, id);
          } else if constexpr (std::is_same_v<T, StatsRequest>) {
            stats(id);
          } else if constexpr (std::is_same_v<T, PeerRequest>) {
            peer(request);
          } else {
            quit();
          }
        },
        r.request);
  }

  // The scene and options an edit or a batch of them makes, before they are committed. The
  // scene is copied only for an edit of the scene (a camera move must not copy Sponza).
  struct Pending {
    const Scene& current;
    CompileOptions options;
    bool recompile = false;  // anything but the camera changed
    std::optional<Scene> edited;
    const Scene& scene() const { return edited ? *edited : current; }
    Scene& sceneToEdit() {
      if (!edited) edited = current;
      return *edited;
    }
  };

  // Applies one edit to `next`: the camera and the environment change only the options; the
  // others a copy of the scene.
  static void applyEdit(const SceneEdit& edit, Pending& next) {
    if (const auto* camera = std::get_if<CameraEdit>(&edit)) {
      if (Status s = applyCameraEdit(next.scene(), next.options, *camera); !s.ok())
        throw RequestError{"", s.error().message};
      return;
    }
    next.recompile = true;
    if (const auto* env = std::get_if<EnvironmentEdit>(&edit)) {
      if (Status s = applyEnvironmentEdit(next.options, *env); !s.ok())
        throw RequestError{env->mapPath.empty() ? "color" : "map", s.error().message};
      return;
    }
    if (Status s = pl::applyEdit(next.sceneToEdit(), next.options, edit); !s.ok())
      throw RequestError{"", s.error().message};
  }

  // Several edits as one generation (an animation frame: every transform, material and the
  // camera at once): applied in order, compiled once; all or nothing.
  void batch(const BatchRequest& r, const Id& id) {
    Pending next{scene_, options_, false, std::nullopt};
    for (size_t i = 0; i < r.edits.size(); ++i) {
      const std::string where = "ops[" + std::to_string(i) + "]";
      try {
        applyEdit(r.edits[i], next);
      } catch (const RequestError& e) {
        throw RequestError{where + (e.field.empty() ? "" : "." + e.field),
                           where + ": " + e.message};
      }
    }
    if (r.error) throw *r.error;  // the first edit that did not parse, after those before it
    commit(next, "batch", id);
  }

  // A new generation of the edited state: only the camera changed, a camera update (no
  // recompile, nodes get the camera chunk); else the whole state compiled (nodes still get
  // only the chunks that changed).
  void commit(Pending& next, const char* op, const Id& id) {
    if (!next.recompile) {
      Result<kernel::Camera> camera = compileCamera(next.scene(), next.options);
      if (!camera.ok()) throw RequestError{"", camera.error().message};
      options_ = std::move(next.options);
      announce(session_->updateCamera(*camera, args_.spp), op, id, args_.spp);
      return;
    }
    Result<RenderData> compiled = compile(next.scene(), next.options);
    if (!compiled.ok()) throw RequestError{"", compiled.error().message};
    if (next.edited) scene_ = std::move(*next.edited);
    options_ = std::move(next.options);
    announce(session_->update(std::make_shared<RenderData>(std::move(compiled).value()),
                              args_.spp),
             op, id, args_.spp);
  }

  // A Render Node to use from now on (as one found by mDNS): a `node` event follows when it
  // has joined.
  void peer(const PeerRequest& r) {
    if (!session_->addPeer(r.address))
      throw RequestError{"address", "'" + r.address +
                                        "' is not HOST:PORT, or this session has no cluster key "
                                        "(start it with --peer or --key-file)"};
  }

  static void announce(uint64_t generation, const char* op, const Id& id, uint32_t target) {
    Json event{{"event", "generation"}, {"generation", generation}, {"op", op},
               {"target_spp", target}};
    if (id) event["id"] = *id;
    emit(event);
  }

  void save(const SaveRequest& r, const Id& id) {
    PendingSave s;
    s.path = r.path;
    if (!isSupportedImagePath(s.path))
      throw RequestError{"path", s.path + ": unknown image format (use .png or .exr)"};
    std::error_code ec;
    std::filesystem::path parent = std::filesystem::path(s.path).parent_path();
    if (!parent.empty() && !std::filesystem::is_directory(parent, ec))
      throw RequestError{"path", s.path + ": folder " + parent.string() + " does not exist"};
    if (r.spp && (*r.spp < 1 || *r.spp > 1e7 || *r.spp != std::floor(*r.spp)))
      throw RequestError{"spp", "'spp' must be a whole number from 1 to 10000000"};
    s.spp = r.spp ? uint32_t(*r.spp) : session_->targetSpp();
    s.whenFinished = !r.spp;
    s.id = id;
    const uint32_t committed = session_->film().committedSamples();
    if (r.spp && session_->generationFinished() && !session_->generationDone() &&
        s.spp > committed)
      throw RequestError{"spp", s.path + ": the time limit ended generation " +
                                    std::to_string(session_->generation()) + " at " +
                                    std::to_string(committed) + " spp, before " +
                                    std::to_string(s.spp) + " (save without spp, or fewer)"};
    // Saving at N needs a film that holds exactly N samples per pixel at some point: when this
    // generation's schedule never stops at N (or has gone past it, or the time limit ended it
    // before), the same state starts again as a new generation whose target is N.
    if (!(s.whenFinished && session_->generationFinished()) && !session_->willReach(s.spp))
      announce(session_->restart(s.spp), "save", id, s.spp);
    s.generation = session_->generation();
    saves_.push_back(std::move(s));
    writeDueSaves();
  }

  void writeDueSaves() {
    const uint64_t generation = session_->generation();
    const uint32_t committed = session_->film().committedSamples();
    const bool finished = session_->generationFinished();
    for (auto it = saves_.begin(); it != saves_.end();) {
      if (it->generation != generation) {  // an update came first: that state is gone
        Json event{{"event", "error"},
                   {"op", "save"},
                   {"message", it->path + ": the scene changed before it reached " +
                                   std::to_string(it->spp) + " spp (save again)"}};
        if (it->id) event["id"] = *it->id;
        emit(event);
        it = saves_.erase(it);
        continue;
      }
      if (finished && it->spp > committed && !it->whenFinished) {
        Json event{{"event", "error"},
                   {"op", "save"},
                   {"field", "spp"},
                   {"message", it->path + ": the time limit ended generation " +
                                   std::to_string(generation) + " at " +
                                   std::to_string(committed) + " spp, before " +
                                   std::to_string(it->spp) + " (save without spp, or fewer)"}};
        if (it->id) event["id"] = *it->id;
        emit(event);
        it = saves_.erase(it);
        continue;
      }
      if (it->spp != committed && !(it->whenFinished && finished)) {
        ++it;
        continue;
      }
      const Film film = outputOf(session_->film().snapshot());
      Json event;
      if (Status st = writeFilm(it->path, film, options_.passes, args_.exposure); !st.ok()) {
        event = {{"event", "error"}, {"op", "save"}, {"field", "path"},
                 {"message", st.error().message}};
      } else {
        event = {{"event", "saved"}, {"path", it->path}, {"generation", generation},
                 {"spp", committed}};
      }
      if (it->id) event["id"] = *it->id;
      emit(event);
      it = saves_.erase(it);
    }
  }

  void stats(const Id& id) {
    const ClusterRenderStats s = session_->stats();
    Json nodes = Json::array();
    for (const NodeRenderStats& n : s.nodes) nodes.push_back(nodeJson(n));
    Json devices = Json::array();
    for (const LocalDeviceRenderStats& d : s.local)
      devices.push_back({{"kind", d.info.kind},
                         {"name", d.info.name},
                         {"samples", d.samples},
                         {"error", d.error}});
    Json event{{"event", "stats"},
               {"generation", session_->generation()},
               {"spp", session_->film().committedSamples()},
               {"target_spp", session_->targetSpp()},
               {"seconds", s.seconds},
               {"samples", s.samples},
               {"render_data_chunks", s.renderDataChunks},
               {"render_data_bytes", s.renderDataRawBytes},
               {"render_data_encode_seconds", s.encodeSeconds},
               {"devices", devices},
               {"nodes", nodes}};
    if (id) event["id"] = *id;
    emit(event);
  }

  void quit() {
    if (quitting_) return;
    quitting_ = true;
    done_.fulfiller->fulfill();
  }

  const RenderArgs& args_;
  Scene scene_;
  CompileOptions options_;
  const std::string passImage_;  // --pass-image: each pass written there (empty: none)
  // The last compiled data (the session's current camera may differ: camera moves share it).
  RenderSession* session_ = nullptr;
  std::vector<PendingSave> saves_;
  kj::PromiseFulfillerPair<void> done_ = kj::newPromiseAndFulfiller<void>();
  bool quitting_ = false;
  bool failed_ = false;
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
  // This machine's devices render in this process for the whole session: the node daemon, if
  // one runs, lends them to no other Primary meanwhile (and this session's own mDNS browse
  // then finds its node refusing, not a second lease on the same devices).
  announceOwnerJobIfDaemon(args);
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

  ClusterPlan plan = planCluster(args);
  if (args.noLocal && !plan.cluster()) fail("--no-local: no node given or found by mDNS", 1);
  std::vector<std::unique_ptr<Device>> owned;
  if (!args.noLocal) owned = openDevices(args);

  ClusterRenderOptions cluster;
  cluster.peers = plan.peers;
  if (plan.watch != nullptr)
    cluster.morePeers = [watch = plan.watch.get()] { return watch->usableAddresses(); };
  for (std::unique_ptr<Device>& device : owned) cluster.localDevices.push_back(device.get());
  cluster.key = plan.key;
  cluster.primaryName = primaryName() + " (session)";
  cluster.start = commandStart;
  cluster.scheduler = interactiveSchedulerOptions();  // the first pass after an update comes fast
  cluster.noDeviceTimeout = std::chrono::milliseconds(0);  // a session waits for nodes
  cluster.timeLimit = timeLimitOf(args);
  cluster.region = regionOf(args);
  cluster.noiseThreshold = args.noiseThreshold;

  bool failed = false;
  {
    UvKjLoop loop;
    SessionDriver driver(args, std::move(scene).value(), options, passImage);
    RenderSessionEvents events;
    events.onPass = [&](uint64_t g, uint32_t spp, double s) { driver.onPass(g, spp, s); };
    events.onNode = [&](const NodeRenderStats& n, bool joined) { driver.onNode(n, joined); };
    events.onStopped = [&](uint64_t g, uint32_t spp, double s) { driver.onStopped(g, spp, s); };
    events.onFatal = [&](const std::string& message) { driver.onFatal(message); };
    {
      RenderSession session(loop, cluster, events);
      driver.attach(session);
      if (Status s = session.start(compiled.source, args.spp); !s.ok())
        fail(s.error().message, 1);
      Json devices = Json::array();
      for (const std::unique_ptr<Device>& d : owned)
        devices.push_back({{"kind", d->info().kind}, {"name", d->info().name}});
      emit({{"event", "ready"},
            {"generation", session.generation()},
            {"width", firstCamera->width},
            {"height", firstCamera->height},
            {"target_spp", args.spp},
            {"triangles", compiled.source.triangleCount()},
            {"load_seconds", loadSeconds},
            {"devices", devices},
            {"peers", plan.peers},
            {"warnings", warnings}});
      StdinReader reader(loop, [&](std::string line, bool eof, bool tooLong) {
        driver.onLine(line, eof, tooLong);
      });
      driver.finished().wait(loop.waitScope());
      failed = driver.failed();
    }  // the session ends: connections close, leases are released, device threads joined
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
  cmd->add_option("--pass-image", *passImage,
                  "Write every pass's image to this file (.exr or .png; replaced at each pass, "
                  "never half written); the pass event names it")
      ->type_name("FILE");
  cmd->callback([args, passImage] { runSession(*args, *passImage); });
}

}  // namespace pl::app
