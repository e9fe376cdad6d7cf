#pragma once
// The session backend that renders in this machine's node daemon (session_backend.h): the
// daemon's SessionJob over its control socket (transport/control.capnp NodeControl.session).
// The daemon is the session's Primary, with this machine's devices (through its own node, as
// the owner) and the nodes it knows; this process keeps the scene, compiles each edit and sends
// only the chunks the daemon lacks, then the generation's manifest; a camera move sends the
// camera alone. Films come back when asked for (saves) and, with pass films, with each pass.
//
// Calls go out in the order they are made (each waits for the one before to be answered); the
// daemon's passes and node events are delivered in the order they arrive, a pass once its film
// has been read. A pass of a generation that an update has replaced is dropped.
//
// Threads: the loop thread only. open() blocks on the loop (top level only).

#include <memory>
#include <string>

#include "apps/peerlight/session_backend.h"
#include "transport/control_convert.h"

namespace pl {
class UvKjLoop;
}

namespace pl::app {

class DaemonSession final : public SessionBackend {
 public:
  // Opens a session on the daemon at `path` and starts generation 1 (`scene` to `spp`): the
  // chunks the daemon lacks go first. Fails with `*refused` set when the daemon could not be
  // reached or refused before anything ran (the caller may render by itself).
  static Result<std::unique_ptr<DaemonSession>> open(UvKjLoop& loop, const std::string& path,
                                                     const std::string& token,
                                                     const RenderJobParams& params,
                                                     const SceneSource& scene, uint32_t spp,
                                                     bool passFilms, SessionBackendEvents events,
                                                     bool* refused);
  ~DaemonSession() override;
  // The daemon's events are held until this is called (after the caller's `ready` line).
  void deliverEvents();

  uint64_t generation() const override;
  uint32_t targetSpp() const override;
  uint32_t committedSamples() const override;
  bool generationDone() const override;
  bool generationFinished() const override;
  bool willReach(uint32_t spp) const override;
  uint64_t update(std::shared_ptr<const RenderData> data, uint32_t spp) override;
  uint64_t updateCamera(const kernel::Camera& camera, uint32_t spp) override;
  uint64_t restart(uint32_t spp) override;
  kj::Promise<Status> addPeer(const std::string& address) override;
  kj::Promise<ClusterRenderStats> stats() override;
  kj::Promise<SessionFilm> filmAt(uint64_t generation, uint32_t spp) override;
  std::string where() const override;

  struct Impl;

 private:
  explicit DaemonSession(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace pl::app
