#pragma once
// The session backend that renders in this process (session_backend.h): a RenderSession on this
// process's loop, with this machine's devices in process and the cluster's nodes. What
// `peerlight session` uses when no daemon runs, or with --no-daemon or a choice of devices.
//
// Threads: the loop thread only.

#include <memory>
#include <string>

#include "apps/peerlight/session_backend.h"
#include "transport/render_session.h"
#include "transport/session_films.h"

namespace pl::app {

class InProcessSession final : public SessionBackend {
 public:
  // passFilms: every pass event carries its film.
  InProcessSession(UvKjLoop& loop, const ClusterRenderOptions& options,
                   SessionBackendEvents events, bool passFilms);
  // Generation 1 (RenderSession::start()).
  Status start(const SceneSource& scene, uint32_t spp);

  uint64_t generation() const override { return session_.generation(); }
  uint32_t targetSpp() const override { return session_.targetSpp(); }
  uint32_t committedSamples() const override { return session_.film().committedSamples(); }
  bool generationDone() const override { return session_.generationDone(); }
  bool generationFinished() const override { return session_.generationFinished(); }
  bool willReach(uint32_t spp) const override { return session_.willReach(spp); }
  uint64_t update(std::shared_ptr<const RenderData> data, uint32_t spp) override;
  uint64_t updateCamera(const kernel::Camera& camera, uint32_t spp) override;
  uint64_t restart(uint32_t spp) override;
  kj::Promise<Status> addPeer(const std::string& address) override;
  // The same, from a discovery event (mDNS found the node usable): RenderSession::addPeer.
  void addPeerNow(const std::string& address) { session_.addPeer(address); }
  kj::Promise<ClusterRenderStats> stats() override { return session_.stats(); }
  kj::Promise<SessionFilm> filmAt(uint64_t generation, uint32_t spp) override {
    return films_.at(generation, spp);
  }
  std::string where() const override { return "this process"; }

 private:
  RenderSessionEvents sessionEvents();

  SessionBackendEvents events_;
  const bool passFilms_;
  RenderSession session_;
  SessionFilms films_{session_};
};

}  // namespace pl::app
