#include "apps/peerlight/in_process_session.h"

namespace pl::app {

InProcessSession::InProcessSession(UvKjLoop& loop, const ClusterRenderOptions& options,
                                   SessionBackendEvents events, bool passFilms)
    : events_(std::move(events)), passFilms_(passFilms), session_(loop, options, sessionEvents()) {}

RenderSessionEvents InProcessSession::sessionEvents() {
  RenderSessionEvents e;
  e.onPass = [this](uint64_t generation, uint32_t spp, double seconds) {
    films_.settle();
    SessionPassEvent pass;
    pass.generation = generation;
    pass.spp = spp;
    pass.targetSpp = session_.targetSpp();
    pass.width = session_.film().width();
    pass.height = session_.film().height();
    pass.seconds = seconds;
    pass.shares = session_.shares();
    pass.retiredPixels = session_.film().retiredPixels();
    if (passFilms_) pass.film = std::make_shared<const Film>(session_.film().snapshot());
    if (events_.onPass) events_.onPass(pass);
  };
  e.onStopped = [this](uint64_t generation, uint32_t spp, double seconds) {
    films_.settle();
    if (events_.onStopped) events_.onStopped(generation, spp, seconds);
  };
  e.onNode = [this](const NodeRenderStats& node, bool joined) {
    if (events_.onNode) events_.onNode(node, joined);
  };
  e.onFatal = [this](const std::string& message) {
    if (events_.onFatal) events_.onFatal(message);
  };
  return e;
}

Status InProcessSession::start(const SceneSource& scene, uint32_t spp) {
  return session_.start(scene, spp);
}

uint64_t InProcessSession::update(std::shared_ptr<const RenderData> data, uint32_t spp) {
  const uint64_t generation = session_.update(std::move(data), spp);
  films_.settle();
  return generation;
}

uint64_t InProcessSession::updateCamera(const kernel::Camera& camera, uint32_t spp) {
  const uint64_t generation = session_.updateCamera(camera, spp);
  films_.settle();
  return generation;
}

uint64_t InProcessSession::restart(uint32_t spp) {
  const uint64_t generation = session_.restart(spp);
  films_.settle();
  return generation;
}

kj::Promise<Status> InProcessSession::addPeer(const std::string& address) {
  if (session_.addPeer(address)) return Status();
  return Status(Error{"'" + address + "' is not HOST:PORT, or this session has no cluster key "
                      "(start it with --peer or --key-file)"});
}

}  // namespace pl::app
