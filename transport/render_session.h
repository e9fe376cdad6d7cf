#pragma once
// RenderSession: the Primary as a long-lived object on the caller's event loop (docs/DESIGN.md
// section 10). It owns the scene state of the current generation (RenderData and its chunk
// manifest), the Scheduler and the ProgressiveFilm of that generation, this process's devices
// (each on a thread of its own) and the leases on Render Nodes, and it accepts updates:
//
//   UvKjLoop loop;
//   RenderSession session(loop, options, events);   // nothing runs yet
//   session.start(data, spp);                       // generation 1
//   ...                                             // events.onPass(generation, spp, ...)
//   session.update(newData, spp);                   // generation 2: a camera move, an edit
//
// Every update starts a new generation: its own Scheduler and film (passes of 1, 2, 4, ...
// samples per pixel up to the target, SchedulerOptions::firstPassSamples), so the film of
// generation g at N spp is a pure function of the generation's data and N, whatever the timing,
// the node count and the failures (DESIGN.md section 4). Units and uploads of the old
// generation are cancelled: dropping a pending Cap'n Proto call tells the node to drop it, and a
// local device finishes at most the unit it is rendering, whose result is ignored. Nodes get
// only the chunks that changed (they keep chunks across loads; encoding skips chunks it has
// already encoded), then load the new manifest.
//
// Local devices render in this process, on threads of their own (never through a connection
// to this process). The session loads each generation's data on them itself.
//
// Peers ("HOST:PORT") connect with TLS 1.3 keyed by the cluster key, Gate.hello/authenticate,
// Node.info, Node.lease (renewed every third of its TTL, with the device count held elsewhere for
// fair share), upload (missing / put / missing again / load), then render. A node that fails
// (connection lost, silent for silenceTimeout, lease revoked) loses its devices in the current
// generation's scheduler (their units requeued) and is retried every reconnectInterval; one
// that refuses authentication or speaks another protocol is not retried.
//
// Events run on the loop thread. A session is used on its loop's thread only; destroying it
// cancels everything it started (leases are released when their connections close; device
// threads are joined, waiting for a unit in progress).

#include <functional>
#include <memory>
#include <string>

#include "core/render/progressive_film.h"
#include "transport/primary.h"
#include "transport/uv_kj_loop.h"

namespace pl {

// What the session tells its owner. Every callback is optional and runs on the loop thread;
// a callback may call update() or destroy nothing (destroy the session later, e.g. after the
// callback returns through a promise).
struct RenderSessionEvents {
  // Every pixel of the current generation's film now holds exactly `spp` samples
  // (session.film().snapshot() is that image); `seconds`: since the generation started.
  std::function<void(uint64_t generation, uint32_t spp, double seconds)> onPass;
  // A result was merged (progress bars): pixel samples accepted / total of the generation.
  std::function<void(uint64_t acceptedWork, uint64_t totalWork)> onProgress;
  // A node became ready (joined: its data is loaded for the first time) or was lost.
  std::function<void(const NodeRenderStats& node, bool joined)> onNode;
  // Any node's state changed (found, refused, unreachable, ready, lost): for progress displays.
  std::function<void()> onNodesChanged;
  // The time limit (ClusterRenderOptions::timeLimit, counted from each generation's start)
  // ended the generation at `spp`, the last pass onPass reported: its film is final, and no
  // more work is handed out for it. Not called for a generation that reached its target.
  std::function<void(uint64_t generation, uint32_t spp, double seconds)> onStopped;
  // The session cannot go on (cancelled, no device left for noDeviceTimeout, a result that
  // cannot be merged). Nothing more happens after it.
  std::function<void(const std::string& message)> onFatal;
};

class RenderSession {
 public:
  // options.localDevices are not owned and must outlive the session; the session loads them.
  // options.peers and addPeer() need options.key.
  RenderSession(UvKjLoop& loop, const ClusterRenderOptions& options, RenderSessionEvents events);
  ~RenderSession();
  RenderSession(const RenderSession&) = delete;
  RenderSession& operator=(const RenderSession&) = delete;

  // Generation 1: renders the scene (its camera gives the image size) to `spp` samples per
  // pixel. Fails for invalid options (no device and no peer, peers without a key, a bad address)
  // or a bad frame; then nothing runs. A scene given in its encoded form goes to nodes as it is
  // (nothing is encoded) and is decoded only if local devices render it, on their threads: a
  // render on warm nodes starts without touching the scene's bytes.
  Status start(const SceneSource& scene, uint32_t spp);
  Status start(std::shared_ptr<const RenderData> data, uint32_t spp) {
    return start(SceneSource{std::move(data), nullptr}, spp);
  }

  // A new generation: `data` (any image size) to `spp` samples per pixel. Results of older
  // generations are dropped from now on. Returns the new generation's number.
  uint64_t update(std::shared_ptr<const RenderData> data, uint32_t spp);
  // The same for a scene in either form (an encoded one goes to nodes as it is, as in
  // start()). Fails, changing nothing, for a camera that does not decode or a bad frame.
  Result<uint64_t> update(const SceneSource& scene, uint32_t spp);
  // A new generation of the current data with another camera (its image size may differ): the
  // data is shared, not copied; local devices only take the camera (Device::setCamera()) and
  // nodes receive only the camera chunk. The image is bitwise that of update() with a copy of
  // the data holding this camera. The camera must pass validateCamera().
  uint64_t updateCamera(const kernel::Camera& camera, uint32_t spp);
  // A new generation of the same state (data and camera) to `spp` (e.g. to save at a count the
  // current schedule never stops at).
  uint64_t restart(uint32_t spp);

  // Whether a generation of `camera` at `spp` can start (the frame, its film's size, the
  // region): updateCamera() and restart() need it.
  Status checkFrame(const kernel::Camera& camera, uint32_t spp) const;

  // A node to use from now on ("HOST:PORT"; "localhost" is spelled 127.0.0.1): a discovery event
  // on the loop (mDNS found it, or found it usable anew). A node already known is tried again at
  // once if it was refused for good or waits for a retry (Membership::rediscovered(): say, it
  // was upgraded to this build), else ignored; false for an address that does not parse or a
  // session without a cluster key.
  bool addPeer(const std::string& address);

  uint64_t generation() const;
  // The current generation's data (decoded on this thread if the session started from an
  // encoded scene that no device has needed yet; null if it does not decode), and its camera
  // (which replaces data()->camera[0]).
  std::shared_ptr<const RenderData> data() const;
  const kernel::Camera& camera() const;
  // The current generation's film (its committed passes) and target.
  const ProgressiveFilm& film() const;
  uint32_t targetSpp() const;
  bool generationDone() const;  // every sample of the target is in the film
  // Done, or ended by the time limit (RenderSessionEvents::onStopped).
  bool generationFinished() const;
  double generationSeconds() const;  // since the current generation started
  // Whether the current generation's film will hold exactly `spp` samples per pixel at some
  // point from now on (a pass ends there and the film has not gone past it; or it holds `spp`
  // now): a save at `spp` can wait for it.
  bool willReach(uint32_t spp) const;

  // Statistics of the whole session (samples: all generations). `finishing`: mark nodes that
  // have been silent for more than two ping intervals as lost (what a finished render reports).
  ClusterRenderStats stats(bool finishing = false) const;
  // Pixel samples accepted per source in the current generation: "local", then each peer's
  // address (only those with samples), for "each device's share".
  std::vector<std::pair<std::string, uint64_t>> shares() const;

  class Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace pl
