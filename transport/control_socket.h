#pragma once
// The node daemon's local control socket (issue 4 item 4, issue "Render sessions" item 5): a
// Unix stream socket on which the daemon serves Cap'n Proto RPC, NodeControl as the bootstrap
// capability (transport/control.capnp has the protocol). Through it `peerlight render` on the
// same machine either tells the daemon that the owner's job starts (the render stays in its own
// process: NodeControl.ownerJob) or hands the whole job to the daemon, which becomes the
// Primary, pushes progress back and hands the finished film over (NodeControl.render).
//
// The file appears only once the daemon listens (bound as PATH.new, then renamed over PATH):
// a client that finds it is never refused by a daemon still starting.
//
// Access: the socket file is created in a folder of mode 0700 with mode 0600, and the daemon
// accepts only peers of its own uid (SO_PEERCRED). A system daemon serves the members of one
// group besides (Options::group, `--control-group`): the folder is then 0755, the socket 0660
// and owned by that group, and the daemon checks each client's groups (SO_PEERCRED's gid and
// SO_PEERGROUPS), so a client outside the group is refused even where the file's mode would
// let it in. An existing folder must be owned by this uid and not writable by others.
//
// Limits (all checked before the memory is taken):
// - at most kMaxControlClients connections (one more is closed at once, with a log line);
// - every message read is at most kMaxControlMessageBytes (Cap'n Proto's ReaderOptions: the
//   reader refuses a larger frame from its header, before allocating; the connection closes);
// - while more than kMaxControlMessageBytes of replies wait to be written to a client, the
//   daemon reads no more of that client's calls (a client that does not read its replies
//   cannot grow the daemon's memory);
// - per connection, one owner job, one render job and one session at a time; per uid other
//   than the daemon's, Options::renderJobsPerUid, ownerJobsPerUid and sessionsPerUid;
// - a connection that asks for nothing within Options::idleBeforeRequestMs is closed;
// - the render data being uploaded, all clients together, at most Options::maxPayloadBytes
//   (reserved from what NodeControl.render declares; the buffer itself grows as bytes arrive);
// - progress: one call in flight per job (the others are skipped);
// - a finished job's film (at most 4 GiB of sums, RenderJobs::admit) is held until its client
//   drops the RenderJob, at most one per connection.
// Garbage on the socket, a frame beyond the limit or a malformed message: Cap'n Proto tells the
// client why in its Abort message, the daemon logs the same reason once (naming the client's
// uid and pid), and that connection closes; every other client is served as before. A request
// the daemon refuses gets its Outcome and one log line; the connection serves on.
//
// Lifetimes: an owner job lasts while its OwnerJob capability is held and its connection is
// open; a render job while its RenderJob capability is held and its connection is open, and
// a job that loses its client is cancelled (ControlRenderJob::onDisconnect).
//
// Threads: ControlSocket and every ControlRenderJob live on the loop thread of the UvKjLoop
// they are given (KJ on the daemon's one libuv loop: transport/uv_kj_loop.h). The client side
// is transport/control_client.h.

#include <kj/async.h>
#include <kj/time.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/util/status.h"
#include "transport/control.capnp.h"
#include "transport/control_client.h"
#include "transport/control_convert.h"
#include "transport/primary.h"

namespace pl {

class UvKjLoop;

constexpr size_t kMaxControlClients = 64;

// An outcome as a client is told it: control.capnp's Outcome and a message for people.
struct ControlOutcome {
  ctl::Outcome outcome = ctl::Outcome::OK;
  std::string message;
  bool ok() const { return outcome == ctl::Outcome::OK; }
};

// A render job handed to the daemon, as the daemon's job code (apps/peerlight/render_job.h)
// sees it once its data is in. Loop thread only. The object stays valid after the client went
// away (dropped its RenderJob or closed the connection); what is sent to it is then dropped.
class ControlRenderJob {
 public:
  virtual ~ControlRenderJob() = default;
  virtual const std::string& token() const = 0;
  virtual const RenderJobParams& params() const = 0;
  // The encoded scene (serializeEncodedScene()), complete; move it out (on the loop thread) before other threads
  // use it.
  virtual std::vector<uint8_t>& payload() = 0;
  virtual uint32_t clientUid() const = 0;
  virtual bool connected() const = 0;
  // Exactly one of accept() or fail() answers the client's start(); after accept(), exactly one
  // of done() or fail() answers its result(). Later calls are ignored.
  virtual void accept() = 0;
  // Pushed to the client's ProgressListener; skipped while an earlier one is unanswered.
  virtual void progress(uint64_t samplesDone, uint64_t samplesTotal,
                        const ClusterRenderStats& stats) = 0;
  // The film's sums (width x height x channels) and, when pixels hold different counts (a noise
  // threshold), each pixel's samples (else empty); the client reads them with readFilm until it
  // drops the job.
  virtual void done(const ClusterRenderStats& stats, std::vector<int64_t> sums,
                    std::vector<uint32_t> pixelSamples, uint32_t spp) = 0;
  // Before accept(): a refusal (start() answers it; the client may render by itself). After:
  // the job's failure (result() answers it). outcome is never OK.
  virtual void fail(ctl::Outcome outcome, const std::string& why) = 0;
  // Called once, on the loop, when the client goes away after accept() and before done() or
  // fail(): the job is to be cancelled.
  virtual void onDisconnect(std::function<void()> callback) = 0;
};

// A render session asked for (NodeControl.session), once the socket has checked what it can
// (the token, the params' bounds, the data size, one session per connection, sessions per uid).
struct ControlSessionRequest {
  std::string token;
  RenderJobParams params;
  uint64_t dataBytes = 0;
  bool passFilms = false;
  uint32_t uid = 0;
  std::string who;  // "a client of uid N (pid P)", for logs
};

// What the daemon's session code answers: the session (outcome ok) or a refusal.
struct ControlSessionOpened {
  ControlOutcome outcome;
  kj::Maybe<ctl::SessionJob::Client> job;
};

struct ControlSocketOptions {
  uint64_t maxPayloadBytes = uint64_t(1) << 30;  // a render job's data; uploads together
  // The group whose members may use the socket besides this uid (see Access above).
  std::optional<uint32_t> group;
  std::string groupName;  // for messages
  // Per client uid other than the daemon's own (all uids when limitOwnUid): at most this many
  // render jobs and owner jobs at a time (one more is answered `busy`), so that one account of
  // the group cannot take the daemon over or keep remote leases revoked with many owners.
  uint32_t renderJobsPerUid = 1;
  uint32_t ownerJobsPerUid = 2;
  uint32_t sessionsPerUid = 2;  // a viewport and an F12 render, say
  uint32_t connectionsPerUid = 8;  // so that one user cannot take every client slot
  bool limitOwnUid = false;
  // A connection that has been granted nothing this long after it connected is closed (0:
  // never): a refused request does not keep it open.
  uint32_t idleBeforeRequestMs = 10000;
};

class ControlSocket {
 public:
  // Called on the loop thread.
  struct Callbacks {
    // An owner job with `token` started / ended (its capability was dropped or its connection
    // closed). Every start is followed by exactly one end (at the latest when this object goes).
    std::function<void(const std::string& token)> ownerStarted;
    std::function<void(const std::string& token)> ownerEnded;
    // A render request of `dataBytes` of render data, before its data travels: OK to take it,
    // or the refusal. Null: every render request is refused ("this node does not take render
    // jobs").
    std::function<ControlOutcome(const RenderJobParams& params, uint64_t dataBytes)> admitRender;
    // Its data arrived (the client called start()): the callee owns the job from now on and
    // answers start() with accept() or fail(), at once or later.
    std::function<void(std::shared_ptr<ControlRenderJob> job)> renderRequested;
    // A session request: the callee opens the session (its SessionJob server) or refuses.
    // `slot` holds the connection's and the uid's place for a session: keep it as long as the
    // session lives (drop it with the session). Null: every session request is refused.
    std::function<ControlSessionOpened(ControlSessionRequest request,
                                       ctl::SessionListener::Client listener,
                                       kj::Own<void> slot)>
        openSession;
  };
  using Options = ControlSocketOptions;

  // Binds `path` (creating its folder) and serves it on `loop`, which must outlive this object.
  // Fails when another process answers on it (a daemon is running); a stale socket file is
  // replaced.
  static Result<std::unique_ptr<ControlSocket>> listen(UvKjLoop& loop, const std::string& path,
                                                       Callbacks callbacks,
                                                       Options options = Options());
  // Closes the listener and every connection (ending their owner jobs; render jobs see their
  // disconnect) and unlinks the file.
  ~ControlSocket();
  ControlSocket(const ControlSocket&) = delete;
  ControlSocket& operator=(const ControlSocket&) = delete;

  // Resolves once the replies already decided (a job's result, say) have been written to their
  // clients, or after `atMost`: for a daemon about to stop, so that its clients learn why.
  // Loop thread; the object must outlive the promise.
  kj::Promise<void> flush(kj::Duration atMost = 1 * kj::SECONDS);

  const std::string& path() const;
  size_t ownerJobs() const;  // owner jobs held now
  size_t clients() const;    // connections open now

  struct Impl;

 private:
  explicit ControlSocket(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace pl
