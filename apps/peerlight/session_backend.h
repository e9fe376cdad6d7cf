#pragma once
// Where `peerlight session` renders: in this process (InProcessSession: a RenderSession on this
// process's loop) or in this machine's node daemon (DaemonSession: the daemon's SessionJob over
// the control socket). The session driver (session_driver.h) turns requests into calls here
// and these events into the protocol's lines; it does not know which one it talks to.
//
// Generations are numbered 1, 2, ... by every update; both backends answer at once with the
// number the new generation has (the daemon numbers them the same way, and its calls are
// carried out in order). The state below is that of the current generation as this process
// knows it (a daemon's passes arrive a little later than they happen).
//
// Threads: the loop thread only.

#include <kj/async.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/render/film.h"
#include "core/scene/render_data.h"
#include "core/util/status.h"
#include "transport/primary.h"
#include "transport/session_films.h"

namespace pl::app {

struct SessionPassEvent {
  uint64_t generation = 0;
  uint32_t spp = 0;        // every pixel of the film holds this many samples
  uint32_t targetSpp = 0;
  uint32_t width = 0, height = 0;  // the film's
  double seconds = 0;      // since the generation started
  std::vector<std::pair<std::string, uint64_t>> shares;  // pixel samples per source
  uint64_t retiredPixels = 0;  // pixels done early (a noise threshold)
  std::shared_ptr<const Film> film;  // that film, when pass films were asked for
};

struct SessionBackendEvents {
  std::function<void(const SessionPassEvent& pass)> onPass;
  // The time limit ended the generation at `spp` (the last pass).
  std::function<void(uint64_t generation, uint32_t spp, double seconds)> onStopped;
  std::function<void(const NodeRenderStats& node, bool joined)> onNode;
  // The session cannot go on; nothing follows.
  std::function<void(const std::string& message)> onFatal;
};

class SessionBackend {
 public:
  virtual ~SessionBackend() = default;

  virtual uint64_t generation() const = 0;
  virtual uint32_t targetSpp() const = 0;
  virtual uint32_t committedSamples() const = 0;  // of the last pass
  virtual bool generationDone() const = 0;       // every sample of the target is in
  virtual bool generationFinished() const = 0;   // done, or the time limit ended it
  // Whether a film of exactly `spp` samples can still be had from the current generation
  // (filmAt() will give it): else the caller restarts the generation to `spp`.
  virtual bool willReach(uint32_t spp) const = 0;

  // New generations (RenderSession's update, updateCamera, restart); each returns its number.
  virtual uint64_t update(std::shared_ptr<const RenderData> data, uint32_t spp) = 0;
  virtual uint64_t updateCamera(const kernel::Camera& camera, uint32_t spp) = 0;
  virtual uint64_t restart(uint32_t spp) = 0;

  // A node to use from now on; fails for an address that does not parse, or without a key.
  virtual kj::Promise<Status> addPeer(const std::string& address) = 0;
  virtual kj::Promise<ClusterRenderStats> stats() = 0;
  // The film of `generation` once it holds exactly `spp` samples (0: once it is finished); see
  // transport/session_films.h.
  virtual kj::Promise<SessionFilm> filmAt(uint64_t generation, uint32_t spp) = 0;
  // Where it renders, for the `ready` event: "this process" or the daemon's socket.
  virtual std::string where() const = 0;
};

}  // namespace pl::app
