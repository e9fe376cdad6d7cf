#pragma once
// Render sessions started from the live view's page (issue 11): a scene file this daemon can
// read, loaded and compiled on a thread of its own, then rendered as a RenderSession on the
// daemon's loop with this machine's devices (the daemon's own node, in process) and the nodes
// mDNS finds. The page turns its camera (a look-at, the same conversion as `render --look-at`),
// cancels it, and downloads its image once the current state holds the target samples.
//
// Threads: the loop thread, except the scene loads (one thread each, joined when done or at
// destruction, which therefore waits for a load in progress).

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/scene/look_at.h"
#include "core/util/status.h"
#include "transport/auth.h"

namespace pl {
class NodeService;
class PeerWatch;
class RenderSession;
class UvKjLoop;
class MemoryBudget;
}  // namespace pl

namespace pl::app {

class WebSessions {
 public:
  static constexpr size_t kMaxSessions = 4;

  // budget: the daemon's memory budget (may be null). A session reserves its film and twice its
  // scene file's size while it loads, then its film and twice its compiled data; a session that
  // does not fit fails with busy.
  WebSessions(UvKjLoop& loop, NodeService& node, ClusterKey key, PeerWatch* watch,
              MemoryBudget* budget = nullptr);
  ~WebSessions();
  WebSessions(const WebSessions&) = delete;
  WebSessions& operator=(const WebSessions&) = delete;

  struct Info {
    uint64_t id = 0;
    std::string scene;
    std::string state;  // loading, rendering, failed
    std::string error;
    uint32_t width = 0, height = 0, spp = 0;
    LookAt view;                            // the camera now (rendering only)
    const RenderSession* session = nullptr;  // rendering only
  };
  // Starts loading `scene` (a .gltf, .glb or .obj file); fails at once for a bad size or spp,
  // a path that is not such a regular file, or kMaxSessions sessions.
  Result<uint64_t> start(const std::string& scene, uint32_t width, uint32_t height, uint32_t spp);
  // A new camera (a new generation); fails for an unknown or loading session or a bad view.
  Status camera(uint64_t id, const LookAt& view);
  // Ends the session (its leases go at once).
  Status cancel(uint64_t id);
  std::vector<Info> list() const;
  // A usable node appeared (the daemon's PeerWatch, an event on the loop): every rendering
  // session uses it from now on.
  void nodeFound(const std::string& address);
  // Runs on the loop when a session is added, loaded, fails, changes camera or goes.
  std::function<void()> onChange;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace pl::app
