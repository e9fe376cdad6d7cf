#pragma once
// A render session held by the node daemon for a client of its control socket (NodeControl.
// session in transport/control.capnp): `peerlight session` on a machine whose daemon runs. The
// client keeps the scene and compiles its edits; this object keeps the chunks it was sent (so a
// new generation needs only the chunks that changed), runs the RenderSession on the daemon's
// loop (the daemon is its Primary, with this machine's devices through its own node, in
// process, and the nodes it knows), sends each pass to the client's listener, and serves films
// at the samples the client asks for (saves).
//
// Lifetime: the SessionJob capability's. Dropping it (or the connection closing) destroys this
// object, which ends the session (its leases go with it) and calls `onEnd`. end() ends the
// session earlier (a daemon that stops): the listener is told, and later calls fail.
//
// Bounds: the chunks held add up to at most Limits::chunkBytes (puts beyond fail); at most
// 65536 names per missing(); a film at most 4 GiB of sums; the listener at most
// kMaxUnansweredCalls calls ahead (passes that are not a generation's last are skipped beyond;
// beyond kMaxUnansweredHard the session ends); at most kMaxWaitingFilms filmAt() calls waiting,
// and kMaxHeldFilms pass films and as many saved films held by the client (beyond, a pass goes
// without its film and filmAt() answers busy). Every generation's film must fit the memory the
// daemon reserves for the session (Limits::fit), and so must its decoded scene.
//
// Threads: the daemon's loop thread only.

#include <kj/async.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "transport/control.capnp.h"
#include "transport/control_socket.h"
#include "core/kernel/types.h"
#include "transport/primary.h"

namespace pl {
class RenderSession;
class UvKjLoop;
}  // namespace pl

namespace pl::app {

class SessionJob final : public ctl::SessionJob::Server {
 public:
  static constexpr uint32_t kMaxUnansweredCalls = 8;
  // Beyond this many listener calls waiting (a client that answers none), the session ends.
  static constexpr uint32_t kMaxUnansweredHard = 256;
  static constexpr uint32_t kMaxMissingNames = 65536;
  // A session whose first update() has not come this long after it opened ends.
  static constexpr int kFirstUpdateSeconds = 60;
  static constexpr size_t kMaxWaitingFilms = 64;  // filmAt() calls waiting for their pass
  // Films served that the client still holds: this many pass films, and as many for saves.
  static constexpr size_t kMaxHeldFilms = 2;

  struct Limits {
    // The encoded chunks held, all together (each charged at least 512 bytes).
    uint64_t chunkBytes = 0;
    // Whether a generation with this camera (its film: size and passes) and a scene of
    // `sceneBytes` decoded (0: the current one's) may start: ok, or the refusal (the daemon's,
    // which grows the session's memory reservation to fit).
    std::function<ControlOutcome(const kernel::Camera& camera, uint64_t sceneBytes)> fit;
  };

  // `options` are the RenderSession's (the job's leases, peers and key); the session starts at
  // the first update(). `slot` is the control socket's (kept while this object lives).
  SessionJob(UvKjLoop& loop, ClusterRenderOptions options, ControlSessionRequest request,
             Limits limits, ctl::SessionListener::Client listener, kj::Own<void> slot,
             std::function<void()> onEnd);
  ~SessionJob();

  const std::string& label() const { return label_; }
  const ControlSessionRequest& request() const { return request_; }
  // The session once it runs (after the first update) and until it ends; else null.
  const RenderSession* session() const { return session_.get(); }
  // A node found by mDNS, for a session that takes them.
  void nodeFound(const std::string& address);
  // Ends the session: the listener hears `outcome` and `message`, later calls fail, and
  // `onEnd` runs. The RenderSession goes a loop turn later (this may run inside one of its
  // callbacks), or at once with `now` (never from inside its callbacks).
  void end(ctl::Outcome outcome, const std::string& message, bool now = false);

 protected:
  kj::Promise<void> missing(MissingContext context) override;
  kj::Promise<void> put(PutContext context) override;
  kj::Promise<void> update(UpdateContext context) override;
  kj::Promise<void> camera(CameraContext context) override;
  kj::Promise<void> restart(RestartContext context) override;
  kj::Promise<void> peer(PeerContext context) override;
  kj::Promise<void> stats(StatsContext context) override;
  kj::Promise<void> filmAt(FilmAtContext context) override;

  struct State;

 private:
  void onPass(uint64_t generation, uint32_t spp, double seconds);
  void sendPass(uint64_t generation, uint32_t spp, double seconds);

  UvKjLoop& loop_;
  std::string label_;
  ControlSessionRequest request_;
  std::unique_ptr<State> state_;
  std::unique_ptr<RenderSession> session_;
};

}  // namespace pl::app
