#pragma once
// The `peerlight session` protocol carried out (README, "Render sessions"): each request line
// (session_request.h parses it) becomes a call on the session backend (session_backend.h: this
// process's RenderSession or the node daemon's), and each of the backend's events becomes an
// event line on stdout. The driver keeps the scene and compiles each edit: a camera move
// compiles the camera alone; any other edit compiles the whole state on a copy, so a request
// that fails changes nothing. Saves are written here, from the film the backend hands over
// once the generation holds the samples asked for.
//
// Threads: the loop thread only.

#include <kj/async.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "apps/peerlight/render_setup.h"
#include "apps/peerlight/session_backend.h"
#include "apps/peerlight/session_request.h"
#include "core/scene/compile.h"
#include "core/scene/scene.h"

namespace pl::app {

// Writes one event line to stdout, flushed at once (the reader is another program).
void emitEvent(const nlohmann::json& event);

class SessionDriver final : private kj::TaskSet::ErrorHandler {
 public:
  // The longest request line (the rest of a longer one is dropped and the line reported).
  static constexpr size_t kMaxLineBytes = size_t(1) << 20;

  // `passImage`: the file each pass is written to ("" for none: the backend then need not send
  // pass films).
  SessionDriver(const RenderArgs& args, Scene scene, CompileOptions options,
                std::string passImage);

  void attach(SessionBackend& session) { session_ = &session; }
  // Resolves at `quit`, the end of stdin, or a fatal error.
  kj::Promise<void> finished() { return kj::mv(done_.promise); }
  bool failed() const { return failed_; }

  // One request line (tooLong: it was cut at kMaxLineBytes; eof: stdin ended).
  void onLine(const std::string& line, bool eof, bool tooLong);
  // The backend's events.
  void onPass(const SessionPassEvent& pass);
  void onStopped(uint64_t generation, uint32_t spp, double seconds);
  void onNode(const NodeRenderStats& node, bool joined);
  void onFatal(const std::string& message);

 private:
  using Json = nlohmann::json;
  using Id = std::optional<Json>;  // a request's id, echoed in its events
  struct Pending;

  void handle(const SessionRequest& r);
  static void applyEdit(const SceneEdit& edit, Pending& next);
  void batch(const BatchRequest& r, const Id& id);
  void commit(Pending& next, const char* op, const Id& id);
  void peer(const PeerRequest& r, const Id& id);
  void save(const SaveRequest& r, const Id& id);
  struct Save {
    std::string path;
    uint32_t spp;  // 0: the generation's end
    Id id;
    bool restarted;  // the generation was restarted at spp for it after the backend's `passed`
  };
  void awaitSave(Save s);
  void writeSave(const std::string& path, const SessionFilm& film, const Id& id);
  void stats(const Id& id);
  void quit();
  static void announce(uint64_t generation, const char* op, const Id& id, uint32_t target);
  // What the files hold: the --region alone with --crop, else the whole film.
  Film outputOf(const Film& film) const;
  void taskFailed(kj::Exception&& e) override;

  const RenderArgs& args_;
  Scene scene_;
  CompileOptions options_;
  const std::string passImage_;
  SessionBackend* session_ = nullptr;
  kj::PromiseFulfillerPair<void> done_ = kj::newPromiseAndFulfiller<void>();
  kj::TaskSet tasks_{*this};  // saves, stats and peers waiting for their answers
  bool quitting_ = false;
  bool failed_ = false;
};

}  // namespace pl::app
