#pragma once
// The live view (issue 11): the node daemon's web page and JSON API, on its one loop
// (transport/web_server.h). It shows this node, the nodes mDNS finds, the render jobs handed to
// the daemon and the sessions started from the page, and pushes a tone-mapped preview of the
// watched render over a WebSocket whenever a pass completes (checked 5 times a second; at most
// 1024 pixels on a side, box-filtered by a whole factor beyond). The page
// starts sessions on scenes this daemon can read, turns their camera, cancels them and
// downloads their images (apps/peerlight/web_sessions.h).
//
// HTTP: GET /                 the page (apps/peerlight/web/index.html)
//       GET /api/state        JSON: node, nodes, jobs, sessions
//       POST /api/sessions    {"scene", "width", "height", "spp"} -> {"id"}
//       GET /api/image?key=K  PNG of render K's film (&format=exr: linear OpenEXR);
//                             409 unless the film holds the target samples (&partial=1: any)
// WebSocket "peerlight" on /ws: in {"op":"watch","key":K}, {"op":"camera","key":K,"eye",
//       "target","up","yfov"}, {"op":"cancel","key":K}; out text {"event":"state",...} and
//       {"event":"error",...}, binary previews: u32 key length, key, u32 generation, u32 spp,
//       then a PNG (the sRGB operator of `render -o x.png`).
// Keys: "s<id>" for page sessions, "j<label>" for render jobs.
//
// Access: from the loopback address with a Host of 127.0.0.1/localhost (no DNS rebinding),
// no token; from anywhere else the token (liveViewToken(): derived from the cluster key, never
// the key itself) as ?token= once, which the page then keeps in a cookie, or the cookie. POSTs
// need Content-Type application/json and WebSocket upgrades an Origin of this server (or none),
// so that another web site in the user's browser cannot drive the daemon.

#include <memory>
#include <string>

#include "core/util/status.h"
#include "transport/auth.h"

namespace pl {
class MemoryBudget;
class NodeService;
class PeerWatch;
class UvKjLoop;
}  // namespace pl

namespace pl::app {

class RenderJobs;

// The live view's access token for a cluster key (hex; HMAC-SHA256 of a fixed label).
std::string liveViewToken(const ClusterKey& key);

class LiveView {
 public:
  // Serves on host:port (port 0: any free one). Fails naming the address. budget: the
  // daemon's memory budget, which page sessions reserve in (may be null).
  static Result<std::unique_ptr<LiveView>> start(UvKjLoop& loop, NodeService& node,
                                                 RenderJobs& jobs, PeerWatch* watch,
                                                 MemoryBudget* budget, ClusterKey key,
                                                 const std::string& host, uint16_t port);
  ~LiveView();
  uint16_t port() const;
  // A usable node appeared (an event on the loop): the page sessions use it from now on.
  void nodeFound(const std::string& address);

  struct Impl;

 private:
  explicit LiveView(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace pl::app
