#include "apps/peerlight/session_driver.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <variant>

#include "core/render/image_io.h"
#include "core/scene/scene_edit.h"
#include "core/util/log.h"

namespace pl::app {

namespace {

using Json = nlohmann::json;

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

}  // namespace

void emitEvent(const Json& event) {
  std::string line = event.dump(-1, ' ', false, Json::error_handler_t::replace);
  line += '\n';
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fflush(stdout);
}

// The scene and options an edit or a batch of them makes, before they are committed. The scene
// is copied only for an edit of the scene (a camera move must not copy Sponza).
struct SessionDriver::Pending {
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

SessionDriver::SessionDriver(const RenderArgs& args, Scene scene, CompileOptions options,
                             std::string passImage)
    : args_(args),
      scene_(std::move(scene)),
      options_(std::move(options)),
      passImage_(std::move(passImage)) {}

void SessionDriver::onLine(const std::string& line, bool eof, bool tooLong) {
  if (eof) return quit();
  if (tooLong) {
    emitEvent({{"event", "error"},
               {"op", ""},
               {"message", "a request line longer than " + std::to_string(kMaxLineBytes) +
                               " bytes (dropped)"}});
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
    emitEvent(event);
  }
}

void SessionDriver::onPass(const SessionPassEvent& pass) {
  Json shares = Json::array();
  uint64_t total = 0;
  for (const auto& [source, samples] : pass.shares) total += samples;
  for (const auto& [source, samples] : pass.shares)
    shares.push_back({{"source", source},
                      {"samples", samples},
                      {"share", total ? double(samples) / double(total) : 0.0}});
  Json event{{"event", "pass"},
             {"generation", pass.generation},
             {"spp", pass.spp},
             {"target_spp", pass.targetSpp},
             {"seconds", pass.seconds},
             {"shares", shares}};
  // Rendering until clean: the share of the frame's pixels (the region's) that stopped taking
  // samples.
  if (args_.noiseThreshold > 0) {
    const Rect rendered = renderedRect(regionOf(args_), pass.width, pass.height);
    event["clean"] = double(pass.retiredPixels) / double(rendered.pixelCount());
  }
  if (!passImage_.empty() && pass.film != nullptr) {
    const Film film = outputOf(*pass.film);
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
  emitEvent(event);
}

void SessionDriver::onStopped(uint64_t generation, uint32_t spp, double seconds) {
  emitEvent({{"event", "stopped"}, {"generation", generation}, {"spp", spp},
             {"seconds", seconds}});
}

void SessionDriver::onNode(const NodeRenderStats& node, bool joined) {
  Json event{{"event", "node"},
             {"address", node.address},
             {"name", node.name},
             {"state", joined ? "joined" : "lost"}};
  if (!joined) event["reason"] = node.error;
  emitEvent(event);
}

void SessionDriver::onFatal(const std::string& message) {
  emitEvent({{"event", "error"}, {"op", ""}, {"fatal", true}, {"message", message}});
  failed_ = true;
  quit();
}

Film SessionDriver::outputOf(const Film& film) const {
  std::optional<Film> crop = croppedOutput(args_, film);
  return crop ? std::move(*crop) : film;
}

void SessionDriver::handle(const SessionRequest& r) {
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
          peer(request, id);
        } else {
          quit();
        }
      },
      r.request);
}

// Applies one edit to `next`: the camera and the environment change only the options; the
// others a copy of the scene.
void SessionDriver::applyEdit(const SceneEdit& edit, Pending& next) {
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

// Several edits as one generation (an animation frame: every transform, material and the camera
// at once): applied in order, compiled once; all or nothing.
void SessionDriver::batch(const BatchRequest& r, const Id& id) {
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
// recompile, nodes get the camera chunk); else the whole state compiled (nodes still get only
// the chunks that changed).
void SessionDriver::commit(Pending& next, const char* op, const Id& id) {
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

// A Render Node to use from now on (as one found by mDNS): a `node` event follows when it has
// joined; an error event when the address is refused.
void SessionDriver::peer(const PeerRequest& r, const Id& id) {
  tasks_.add(session_->addPeer(r.address).then([address = r.address, id](Status st) {
    if (st.ok()) return;
    Json event{{"event", "error"},
               {"op", "peer"},
               {"field", "address"},
               {"message", st.error().message}};
    if (id) event["id"] = *id;
    emitEvent(event);
  }));
}

void SessionDriver::announce(uint64_t generation, const char* op, const Id& id,
                             uint32_t target) {
  Json event{{"event", "generation"}, {"generation", generation}, {"op", op},
             {"target_spp", target}};
  if (id) event["id"] = *id;
  emitEvent(event);
}

void SessionDriver::save(const SaveRequest& r, const Id& id) {
  const std::string path = r.path;
  if (!isSupportedImagePath(path))
    throw RequestError{"path", path + ": unknown image format (use .png or .exr)"};
  std::error_code ec;
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty() && !std::filesystem::is_directory(parent, ec))
    throw RequestError{"path", path + ": folder " + parent.string() + " does not exist"};
  if (r.spp && (*r.spp < 1 || *r.spp > 1e7 || *r.spp != std::floor(*r.spp)))
    throw RequestError{"spp", "'spp' must be a whole number from 1 to 10000000"};
  // No spp: the generation's end, at its target or where --time-limit ended it.
  const bool whenFinished = !r.spp;
  const uint32_t spp = r.spp ? uint32_t(*r.spp) : session_->targetSpp();
  const uint32_t committed = session_->committedSamples();
  if (r.spp && session_->generationFinished() && !session_->generationDone() && spp > committed)
    throw RequestError{"spp", path + ": the time limit ended generation " +
                                  std::to_string(session_->generation()) + " at " +
                                  std::to_string(committed) + " spp, before " +
                                  std::to_string(spp) + " (save without spp, or fewer)"};
  // Saving at N needs a film that holds exactly N samples per pixel at some point: when this
  // generation's schedule never stops at N (or has gone past it, or the time limit ended it
  // before), the same state starts again as a new generation whose target is N.
  if (!(whenFinished && session_->generationFinished()) && !session_->willReach(spp))
    announce(session_->restart(spp), "save", id, spp);
  awaitSave(Save{path, whenFinished ? 0 : spp, id, false});
}

// The film for `s` from the backend, then the file. A generation that went past the samples
// before the backend was asked (a daemon's passes arrive a little late) restarts once at them.
void SessionDriver::awaitSave(Save s) {
  tasks_.add(session_->filmAt(session_->generation(), s.spp)
                 .then([this, s = std::move(s)](SessionFilm film) mutable {
                   if (film.outcome == SessionFilm::Outcome::passed && !s.restarted &&
                       film.generation == session_->generation()) {
                     announce(session_->restart(s.spp), "save", s.id, s.spp);
                     s.restarted = true;
                     return awaitSave(std::move(s));
                   }
                   writeSave(s.path, film, s.id);
                 }));
}

void SessionDriver::writeSave(const std::string& path, const SessionFilm& film, const Id& id) {
  Json event;
  switch (film.outcome) {
    case SessionFilm::Outcome::ok:
      if (Status st = writeFilm(path, outputOf(*film.film), options_.passes, args_.exposure);
          !st.ok())
        event = {{"event", "error"}, {"op", "save"}, {"field", "path"},
                 {"message", st.error().message}};
      else
        event = {{"event", "saved"}, {"path", path}, {"generation", film.generation},
                 {"spp", film.spp}};
      break;
    case SessionFilm::Outcome::replaced:
      event = {{"event", "error"}, {"op", "save"},
               {"message", path + ": " + film.message + " (save again)"}};
      break;
    case SessionFilm::Outcome::passed:
    case SessionFilm::Outcome::stopped:
      event = {{"event", "error"}, {"op", "save"}, {"field", "spp"},
               {"message", path + ": " + film.message + " (save without spp, or fewer)"}};
      break;
    case SessionFilm::Outcome::refused:
      event = {{"event", "error"}, {"op", "save"},
               {"message", path + ": " + film.message + " (save again)"}};
      break;
  }
  if (id) event["id"] = *id;
  emitEvent(event);
}

void SessionDriver::stats(const Id& id) {
  tasks_.add(session_->stats().then([this, id](ClusterRenderStats s) {
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
               {"spp", session_->committedSamples()},
               {"target_spp", session_->targetSpp()},
               {"seconds", s.seconds},
               {"samples", s.samples},
               {"render_data_chunks", s.renderDataChunks},
               {"render_data_bytes", s.renderDataRawBytes},
               {"render_data_encode_seconds", s.encodeSeconds},
               {"devices", devices},
               {"nodes", nodes}};
    if (id) event["id"] = *id;
    emitEvent(event);
  }));
}

void SessionDriver::quit() {
  if (quitting_) return;
  quitting_ = true;
  done_.fulfiller->fulfill();
}

void SessionDriver::taskFailed(kj::Exception&& e) {
  onFatal(std::string("session: ") + e.getDescription().cStr());
}

}  // namespace pl::app
