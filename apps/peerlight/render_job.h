#pragma once
// Render jobs handed to the node daemon (issue 4 item 4; transport/control.capnp has the
// protocol, transport/control_socket.h the socket). `peerlight render` on a machine whose daemon
// runs loads and compiles the scene itself, then hands the compiled RenderData and the frame to
// the daemon over the control socket (Cap'n Proto: NodeControl.render, then the data in chunks),
// and the daemon becomes the Primary: it leases this machine's devices from its own node (as
// the owner: remote leases are revoked meanwhile, state `primary`) and the devices of the nodes
// it knows (--peer ones and, live, those mDNS finds), pushes progress to the client's listener,
// and hands over the film's exact sums, from which the command writes the image. The client
// dropping its RenderJob capability or closing the connection cancels the job.
//
// Refusals and failures are control.capnp Outcomes: admit() decides before any data travels
// (badParams, tooLarge, busy, shuttingDown), start() once the data is in (badData, busy,
// shuttingDown); a job that started ends ok, failed, or shuttingDown (cancelAll()). A job with a
// time limit (RenderJobParams::timeLimitMs) ends ok at the last complete pass once the limit has
// passed, and its film says at how many samples per pixel.
//
// Threads: RenderJobs and every job's RenderSession (transport/render_session.h) live on the
// daemon's one loop thread, with the control socket; this machine's devices are leased from the
// daemon's own node in process (NodeService::newTrustedNode(), never a connection to itself) and
// render in its worker processes; the job's other nodes are connected as by any Primary.
// Lifetime: the ControlRenderJob objects are shared with the control socket; a RenderJobs
// drops each one a loop turn after its job ended.

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "transport/auth.h"
#include "transport/control_socket.h"

namespace pl {
class MemoryBudget;
class NodeService;
class PeerWatch;
class RenderSession;
class UvKjLoop;
}  // namespace pl

namespace pl::app {

class RenderJobs {
 public:
  // watch: mDNS nodes (may be null); budget: the daemon's memory budget (may be null). node,
  // loop, watch and budget must outlive this object.
  RenderJobs(UvKjLoop& loop, NodeService& node, ClusterKey key, PeerWatch* watch,
             MemoryBudget* budget = nullptr);
  // Cancels the jobs still running (their sessions end; their leases go).
  ~RenderJobs();
  RenderJobs(const RenderJobs&) = delete;
  RenderJobs& operator=(const RenderJobs&) = delete;

  // Whether a job with these parameters would be taken now (ControlSocket::Callbacks::
  // admitRender, before its data travels): badParams for an invalid frame or localOnly with
  // noLocal, tooLarge for a film of more than 4 GiB of sums, busy when kMaxJobs jobs run or
  // when its `dataBytes` of render data and its films (as colour) do not fit in the memory
  // budget now, shuttingDown after cancelAll().
  ControlOutcome admit(const RenderJobParams& params, uint64_t dataBytes) const;
  // Takes a job whose data arrived (ControlSocket::Callbacks::renderRequested) and answers its
  // start() at once: refused (busy, shuttingDown, or badData when the data does not decode or
  // its camera is not the frame; busy when its payload and films, with its passes, do not fit
  // in the memory budget: the job reserves them until it ends) or accepted, and then the job runs as a RenderSession until it
  // is done (the film), fails, or its client goes away.
  void start(std::shared_ptr<ControlRenderJob> job);
  static constexpr size_t kMaxJobs = 4;
  size_t active() const;
  // A render session asked for over the control socket (ControlSocket::Callbacks::
  // openSession; session_job.h): refused (badParams for a bad frame or localOnly with noLocal,
  // tooLarge for a film beyond 4 GiB of sums, busy at kMaxSessions or when its chunks and films
  // do not fit in the memory budget, shuttingDown) or opened. An open session holds its
  // reservation, and the owner job on this machine's devices, until it ends.
  ControlSessionOpened openSession(ControlSessionRequest request,
                                   ctl::SessionListener::Client listener, kj::Own<void> slot);
  static constexpr size_t kMaxSessions = 4;
  // The jobs and sessions rendering now (for the live view): valid until the loop turns.
  struct View {
    std::string label;    // "render job <token prefix>", "session <token prefix>"
    std::string primary;  // who handed it over ("host/pid")
    const RenderSession* session;
  };
  std::vector<View> views() const;
  // A usable node appeared (the daemon's PeerWatch, on the loop): the jobs and sessions that
  // take mDNS nodes use it from now on.
  void nodeFound(const std::string& address);
  // Cancels every job and session and refuses new ones; `whenIdle` runs on the loop once none
  // is left (at once if none is).
  void cancelAll(std::function<void()> whenIdle);

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace pl::app
