#pragma once
// The client side of the node daemon's control socket (transport/control.capnp; the daemon's
// side is transport/control_socket.h): where the socket is, one Cap'n Proto connection to it,
// and the two things `peerlight render` asks there (an owner job, a render job handed over).
//
// Threads and blocking: ControlConnection lives on the loop thread of the UvKjLoop it is given.
// announceOwnerJob() and runRenderJob() block the calling thread on the loop they are given
// (promise.wait()): top-level code only, never from inside a uv or KJ callback. Neither builds
// a loop of its own.

#include <kj/async.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/util/status.h"
#include "transport/control.capnp.h"
#include "transport/control_convert.h"
#include "transport/primary.h"

namespace pl {

class UvKjLoop;

// $XDG_RUNTIME_DIR/peerlight/node.sock; /run/peerlight/node.sock for root; otherwise
// /tmp/peerlight-<uid>/node.sock.
std::string defaultControlSocketPath();
// Whether a process accepts connections on `path` now (a stale socket file of a daemon that
// died does not). Blocking (a connect and a close).
bool controlSocketAnswers(const std::string& path);

// Whether the daemon connected on `fd` at `path` may be trusted with this user's jobs: the
// socket's folder is a real folder (lstat), writable by nobody else, and either this user's
// (the daemon then runs as this user, or root) or, for a system daemon (/run/peerlight), the
// daemon's own in a folder only root may change; the daemon's uid comes from SO_PEERCRED. The
// error names the path and both uids. ControlConnection::open() checks it before anything is
// sent.
Status checkDaemonTrusted(const std::string& path, int fd);
// The same for the daemon answering at `path` (connects, checks, closes).
Status checkDaemonAt(const std::string& path);
// Where a client looks for a daemon, in order: defaultControlSocketPath(), then the system
// daemon's /run/peerlight/node.sock (packaging/peerlight-node.service).
std::vector<std::string> controlSocketCandidates();

// One connection to a daemon's control socket: Cap'n Proto RPC on the caller's loop (messages
// it reads bounded by kMaxControlMessageBytes). Loop thread only; destroy it before the loop.
class ControlConnection {
 public:
  // Connects (blocking: a local connect does not wait on the daemon). Fails naming the path.
  static Result<std::unique_ptr<ControlConnection>> open(UvKjLoop& loop, const std::string& path);
  ~ControlConnection();
  ControlConnection(const ControlConnection&) = delete;
  ControlConnection& operator=(const ControlConnection&) = delete;

  // The daemon's bootstrap capability. A call on a connection the daemon closed fails with a
  // DISCONNECTED exception (with the reason of its Abort message, if it sent one).
  ctl::NodeControl::Client& control();
  const std::string& path() const;
  // Resolves when the connection ends (the daemon closed it or went away).
  kj::Promise<void> onDisconnect();

  // Leaves the connection open but silent, for a process that cannot keep a loop running while
  // a job lasts (`peerlight render` announces its owner job before its render's loop exists):
  // nothing more is written or read on it through this object, so the releases of capabilities
  // and the goodbye that destroying it would send are dropped, and the daemon keeps what it
  // handed out (an OwnerJob) until the returned fd is closed (by the caller, or by the kernel
  // when the process ends). Destroy this object soon after; the fd is the caller's.
  int keepOpenSilently();

  struct Impl;

 private:
  explicit ControlConnection(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The owner job of `peerlight render` (the machine's owner is rendering): connects to `path`,
// calls NodeControl.ownerJob(token) and waits (at most timeoutMs) for the reply, which comes
// once the node revoked its remote leases. Then keeps the connection open silently
// (ControlConnection::keepOpenSilently) and returns its fd: the owner job lasts until the caller
// closes it or the process exits. Fails with a message naming the path when nothing listens
// there, the daemon refused (the outcome's message), or no reply came. Blocks on `loop`.
Result<int> announceOwnerJob(UvKjLoop& loop, const std::string& path, const std::string& token,
                             int timeoutMs = 2000);

// A render job handed to the daemon at `path`, to its end. Blocks on `loop` (top level only).
// Uploads `data` (a serialized RenderData) in chunks with Cap'n Proto flow control, starts the
// job, calls onProgress (on the loop thread) for each progress update, and returns the final
// statistics and the film's sums (filmValues int64 values: width x height x 3).
// Fails with `refused` set when the daemon could not be reached or refused the job before
// starting it (the caller may render by itself); with it clear once the job ran and failed (the
// daemon's outcome message), or the connection broke.
struct ControlRenderResult {
  ClusterRenderStats stats;
  std::vector<int64_t> sums;
  uint32_t spp = 0;  // of the sums: params.spp, or fewer when params.timeLimitMs ended the job
  // Each pixel's samples (width x height) when params.noiseThreshold retired some early (at most
  // spp each: Film::setPixelSamples checks); empty: spp everywhere.
  std::vector<uint32_t> pixelSamples;
};
using ControlProgressCallback = std::function<void(uint64_t samplesDone, uint64_t samplesTotal,
                                                   const ClusterRenderStats& stats)>;
Result<ControlRenderResult> runRenderJob(UvKjLoop& loop, const std::string& path,
                                         const std::string& token, const RenderJobParams& params,
                                         std::span<const uint8_t> data, uint64_t filmValues,
                                         const ControlProgressCallback& onProgress,
                                         bool* refused);

}  // namespace pl
