#pragma once
// Render jobs handed to the node daemon (issue 4 item 4; transport/control_socket.h has the
// socket protocol). `peerlight render` on a machine whose daemon runs loads and compiles the
// scene itself, then sends the compiled RenderData and the frame to the daemon, which becomes
// the Primary: it leases this machine's devices from its own node (as the owner: remote leases
// are revoked meanwhile, state `primary`) and the devices of the nodes it knows (--peer ones
// and, live, those mDNS finds), streams progress back, and returns the film's exact sums, from
// which the command writes the image. Closing the connection cancels the job.
//
// Threads: RenderJobs and every job's RenderSession (transport/render_session.h) live on the
// daemon's one loop thread; this machine's devices are leased from the daemon's own node in
// process (NodeService::newTrustedNode(), never a connection to itself) and render in its worker
// processes; the job's other nodes are connected as by any Primary.

#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <vector>

#include "core/util/status.h"
#include "transport/auth.h"
#include "transport/primary.h"

namespace pl {
class ControlRenderJob;
class NodeService;
class PeerWatch;
class UvKjLoop;
}  // namespace pl

namespace pl::app {

// ClusterRenderStats on the control socket (both ways; keys are the member names).
nlohmann::json statsToJson(const ClusterRenderStats& stats);
Result<ClusterRenderStats> statsFromJson(const nlohmann::json& json);

// What `peerlight render` asks of the daemon (the request's params). Without `peers` (and
// unless noMdns) the daemon adds the nodes its mDNS browse finds, also during the render.
struct RenderJobParams {
  uint32_t width = 0, height = 0, spp = 0;
  std::vector<std::string> peers;  // --peer
  bool localOnly = false;          // this machine's devices only
  bool noLocal = false;            // not this machine's devices
  bool noOwnerPreempt = false;     // do not revoke remote leases on this machine's devices
  bool noMdns = false;             // only `peers` (and this machine), no mDNS nodes
  std::string primaryName;         // "host/pid" of the command
};
nlohmann::json paramsToJson(const RenderJobParams& params);
Result<RenderJobParams> paramsFromJson(const std::string& text);

class RenderJobs {
 public:
  // watch: mDNS nodes (may be null). node, loop and watch must outlive this object.
  RenderJobs(UvKjLoop& loop, NodeService& node, ClusterKey key, PeerWatch* watch);
  // Cancels the jobs still running (their sessions end; their leases go).
  ~RenderJobs();
  RenderJobs(const RenderJobs&) = delete;
  RenderJobs& operator=(const RenderJobs&) = delete;

  // Takes a job whose request arrived (ControlSocket::Callbacks::renderRequested). Refused
  // (the client gets an error line) when its params are bad, its film would not fit the
  // memory budget, kMaxJobs jobs run already, or the node is shutting down.
  void start(std::shared_ptr<ControlRenderJob> job);
  static constexpr size_t kMaxJobs = 4;
  size_t active() const;
  // A usable node appeared (the daemon's PeerWatch, on the loop): the jobs that take mDNS nodes
  // use it from now on.
  void nodeFound(const std::string& address);
  // Cancels every job and refuses new ones; `whenIdle` runs on the loop once none is left (at
  // once if none is).
  void cancelAll(std::function<void()> whenIdle);

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace pl::app
