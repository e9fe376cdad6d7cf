#pragma once
// The node daemon's worker processes (DESIGN.md section 1, issue 4 item 3).
//
// Daemon side: WorkerProcess starts one `peerlight worker` (uv_spawn), joined to the daemon by
// a socket pair that is the worker's fd 3. Over it runs Cap'n Proto: the worker's bootstrap is
// a proto::Worker; start(supervisor) returns the worker's proto::Node, whose lease() gives the
// RenderSession that the daemon serves to the Primary. The worker calls
// Supervisor.heartbeat() every 250 ms (HeartbeatSender); when none arrives for
// `heartbeatTimeoutMs` the daemon reports the worker failed ("hung"), sends SIGTERM (and
// SIGCONT, so a stopped worker gets it), and SIGKILL `killGraceMs` later if it is still there. A worker that exits on its own
// (crash, abort, segfault) or whose socket closes is reported failed too. Failure is reported
// at most once, through `onFailure`, and never after stop().
//
// Worker side: serveWorker() serves the Worker bootstrap on fd 3 until the socket closes.
//
// A worker may serve several leases one after another (the daemon keeps idle workers warm,
// transport/node_service.h); supervision is the same whether it serves a lease or waits.
//
// The daemon looks every 100 ms and judges by core/cluster/worker_watch.h: a look that comes
// over 400 ms late means its own loop was held up, and it judges on the next look instead, once
// the heartbeats that came meanwhile are read.
//
// Threads: loop thread only. Lifetime: the object may be destroyed at any time on the loop
// thread (it SIGKILLs a worker still running); the loop must outlive it.

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/util/status.h"
#include "transport/protocol.capnp.h"
#include "transport/uv_kj_loop.h"

namespace pl {

class NodeService;

struct WorkerProcessOptions {
  uint32_t heartbeatTimeoutMs = 2000;
  uint32_t killGraceMs = 1000;
  // Cap'n Proto's per-message traversal limit on the socket pair.
  uint64_t maxMessageBytes = uint64_t(64) << 20;
  // The file to execute; empty: argv[0]. The daemon gives "/proc/self/exe", so that its workers
  // run the daemon's own build even after the file at argv[0] was replaced (an upgrade, a
  // rebuild): they must render with the kernel the daemon names (core/render/render_kernel.h).
  std::string executable;
};

class WorkerProcess {
 public:
  using FailureHandler = std::function<void(const std::string& why)>;
  using ExitHandler = std::function<void()>;

  // Starts argv (argv[0]: a path to the executable). `label` names it in log lines (e.g.
  // "lease 3"). Logs "worker <pid> started for <label>". Fails when the socket pair or the
  // spawn fails.
  static Result<std::unique_ptr<WorkerProcess>> start(UvKjLoop& loop,
                                                      const std::vector<std::string>& argv,
                                                      std::string label,
                                                      WorkerProcessOptions options,
                                                      FailureHandler onFailure,
                                                      ExitHandler onExit);
  // SIGKILLs the worker if it still runs, closes the connection and the process handle.
  ~WorkerProcess();
  WorkerProcess(const WorkerProcess&) = delete;
  WorkerProcess& operator=(const WorkerProcess&) = delete;

  // The worker's Node (pipelined: usable at once; calls wait for the worker to be up).
  proto::Node::Client node();
  // What log lines name it by from now on (a warm worker serves several leases).
  void setLabel(std::string label);
  pid_t pid() const;
  bool exited() const;
  // Ends the worker: closes the socket pair, SIGTERM now (+SIGCONT), SIGKILL after
  // killGraceMs if it has not exited. Logs "worker <pid> stopped (<why>)". Idempotent; no
  // failure is reported after it.
  void stop(const std::string& why);

  struct Impl;

 private:
  explicit WorkerProcess(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Worker side: calls supervisor.heartbeat() every `periodMs` from construction on, whether or
// not the earlier calls have been answered: an answer can wait behind megabytes of chunks that
// the daemon is sending the worker on the same socket, and a worker that waited for it would
// fall silent while it is busy receiving. It stops sending (not failing) while 64 calls are
// unanswered (16 s at 250 ms: the daemon then takes it for hung). `onFailure` runs once, when a
// call or the timer fails (the daemon is gone); it must not destroy the sender. Loop thread
// only; destroying it stops the heartbeats.
class HeartbeatSender final : private kj::TaskSet::ErrorHandler {
 public:
  using FailureHandler = std::function<void(const kj::Exception&)>;
  HeartbeatSender(UvKjLoop& loop, proto::Supervisor::Client supervisor, uint32_t periodMs,
                  FailureHandler onFailure);
  ~HeartbeatSender();
  HeartbeatSender(const HeartbeatSender&) = delete;
  HeartbeatSender& operator=(const HeartbeatSender&) = delete;

  uint64_t sent() const { return sent_; }

 private:
  kj::Promise<void> tick();
  void taskFailed(kj::Exception&& exception) override;
  void fail(const kj::Exception& exception);

  UvKjLoop& loop_;
  proto::Supervisor::Client supervisor_;
  uint32_t periodMs_;
  FailureHandler onFailure_;
  uint32_t inFlight_ = 0;
  uint64_t sent_ = 0;
  bool failed_ = false;
  kj::TaskSet calls_;
  kj::Promise<void> ticking_;
};

// Worker side: serves a proto::Worker whose Node is `node`'s trusted node, on the connected
// socket `fd` (taken over), sending heartbeats every `heartbeatMs` once started. Returns when
// the socket closes or a heartbeat fails (the daemon is gone); the caller then exits.
void serveWorker(UvKjLoop& loop, NodeService& node, int fd, uint32_t heartbeatMs = 250);

}  // namespace pl
