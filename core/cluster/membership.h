#pragma once
// Membership: the Primary's peer-liveness policy, as pure logic. For each Render Node the
// Primary uses, it decides when the node counts as lost, when to try it again and when to give
// up on it; the transport (transport/primary.cpp) keeps the connections, pings and leases and
// reports what happened. No sockets, no threads, no clock of its own: `now` is passed in.
// Not thread-safe; the Primary calls it from its loop thread.
//
//   Membership members({.silenceTimeout = 2s, .reconnectInterval = 1s, .silentAfter = 1s});
//   PeerId p = members.addPeer(now);               // Connecting: start an attempt now
//   members.leaseGranted(p, now);                  // pings and silence detection from here
//   members.replyReceived(p, now);                 // any reply: ping, renew, missing, render
//   PeerFailure f = members.connectionFailed(p, ConnectionFailure::Broken, now);
//   for (const MembershipAction& a : members.tick(now)) ...   // every ~50 ms
//
// States of a peer:
//   Connecting  an attempt is under way (connect, TLS, Gate, info, lease request); its own
//               handshake timeout is the transport's, reported as a failure
//   Leased      lease granted, session open, render data not loaded yet
//   Ready       render data loaded: its devices render
//   Silent      Leased or Ready, but no reply for more than silentAfter (a reply brings it
//               back); declared lost after silenceTimeout without a reply
//   Retry       no connection; the next attempt is due at retryAt()
//   GaveUp      refused for good (AuthFailed, Incompatible, SceneTooLarge): not tried again
//               in this session, unless discovery reports it usable anew (rediscovered())
//
// Decisions, as transport/render_session.cpp carries them out:
// - A peer with a session (Leased, Ready, Silent) that fails, or stays silent for longer than
//   silenceTimeout, is lost: its devices are given up at once (`lost`). Whether that counts
//   as a new loss (statistics, a warning, renewing the other leases with the new holding):
//   always when it was Ready; when only Leased, unless it was lost before and since then has
//   been neither Ready nor refused Busy (a node that keeps failing during its upload after a
//   loss counts once).
// - After any failure the peer is tried again reconnectInterval later; after a lease revoked
//   for fair share, at once (its share of the node is free now), at most once per
//   reconnectInterval; after AuthFailed, Incompatible or SceneTooLarge, never.
// - Failures and silence of a peer that is not connecting or connected (Retry, GaveUp) are
//   ignored: one connection ends once.

#include <chrono>
#include <cstdint>
#include <optional>
#include <vector>

#include "core/cluster/scheduler.h"  // SchedulerTime

namespace pl {

// One peer (Render Node) of the Primary, numbered 0, 1, ... in the order of addPeer().
enum class PeerId : uint32_t {};

enum class PeerState { Connecting, Leased, Ready, Silent, Retry, GaveUp };
const char* peerStateName(PeerState state);  // "connecting", "leased", ...

// How an attempt or a connection ended, as the transport classifies it.
enum class ConnectionFailure {
  Broken,            // unreachable, connection closed or broken, DISCONNECTED, a call failed
  Busy,              // the node refused the lease (or granted no device)
  RevokedFairShare,  // the node revoked our lease for fair share (LeaseEnd::RevokedFairShare)
  AuthFailed,        // TLS or the Gate refused the cluster key: permanent
  Incompatible,      // another protocol version: permanent
  SceneTooLarge,     // the node will never hold the scene (LeaseEnd::SceneTooLarge): permanent
};

struct MembershipOptions {
  // No reply for this long from a peer with a session: lost.
  std::chrono::microseconds silenceTimeout = std::chrono::milliseconds(2000);
  // Wait between a failure and the next attempt.
  std::chrono::microseconds reconnectInterval = std::chrono::milliseconds(1000);
  // No reply for longer than this: Silent (suspect, not lost yet); e.g. two ping intervals.
  std::chrono::microseconds silentAfter = std::chrono::milliseconds(1000);
};

// What to do about a failure (connectionFailed(), or silence in tick()).
struct PeerFailure {
  bool ignored = false;  // the peer was neither connecting nor connected: nothing to do
  bool lost = false;     // it had a session: give up its devices (requeue their work)
  bool newLoss = false;  // count it as a loss (see the header); implies lost
  bool permanent = false;                 // never retried (GaveUp)
  std::optional<SchedulerTime> retryAt;  // the next attempt, unless permanent
};

struct MembershipAction {
  enum class Kind {
    DeclareLost,  // silent past silenceTimeout: drop the connection; `failure` says the rest
    Connect,      // a retry is due: start an attempt now (the peer is Connecting)
    Silent,       // no reply for silentAfter (informational: a node paused or cut off)
  };
  Kind kind = Kind::Connect;
  PeerId peer{};
  PeerFailure failure;  // DeclareLost
};

class Membership {
 public:
  explicit Membership(MembershipOptions options = {});

  // A new peer, Connecting: the caller starts its first attempt now.
  PeerId addPeer(SchedulerTime now);

  // The attempt got a lease and a session: Leased, silence counted from now.
  void leaseGranted(PeerId peer, SchedulerTime now);
  // Its render data is loaded: Ready (counts as a reply).
  void dataLoaded(PeerId peer, SchedulerTime now);
  // Any reply on the peer's session. Ignored unless Leased, Ready or Silent.
  void replyReceived(PeerId peer, SchedulerTime now);
  // The attempt or the connection ended with `failure` (see PeerFailure).
  PeerFailure connectionFailed(PeerId peer, ConnectionFailure failure, SchedulerTime now);
  // Discovery reports the peer usable anew (its advert changed to usable: the node was
  // upgraded to our build, took our key, or came back). A GaveUp or Retry peer becomes
  // Connecting now and true is returned: the caller starts an attempt. Others are unchanged
  // (false), and so is one given up for SceneTooLarge (no advert makes room for the scene; a
  // new attempt could only preempt another Primary's lease for nothing). Only for such events,
  // never for a periodic list: a peer that stays refused would otherwise be asked again and
  // again.
  bool rediscovered(PeerId peer, SchedulerTime now);

  // Silence and retries at `now`, in peer order: peers silent past silenceTimeout are declared
  // lost (and wait for their retry), peers whose retry is due become Connecting, and peers
  // newly silent past silentAfter are reported once.
  std::vector<MembershipAction> tick(SchedulerTime now);

  PeerState state(PeerId peer) const;
  // Retry: when the next attempt is due. Otherwise none.
  std::optional<SchedulerTime> retryAt(PeerId peer) const;
  // The time since the last reply (Leased, Ready, Silent); zero otherwise.
  std::chrono::microseconds silentFor(PeerId peer, SchedulerTime now) const;
  uint32_t losses(PeerId peer) const;  // new losses counted so far
  size_t peerCount() const { return peers_.size(); }
  // Some peer may still render: one is not GaveUp.
  bool anyRetryPossible() const;
  const MembershipOptions& options() const { return options_; }

 private:
  struct Peer {
    PeerState state = PeerState::Connecting;
    bool dataLoaded = false;       // Ready, or Silent after Ready
    bool lostSinceReady = false;   // lost, and neither Ready nor Busy since
    SchedulerTime lastReply{};
    SchedulerTime retryAt{};
    uint32_t losses = 0;
    bool hadImmediateRetry = false;  // after a fair-share revocation
    bool sceneTooLarge = false;      // GaveUp because it can never hold the scene
    SchedulerTime lastImmediateRetry{};
  };
  Peer& peer(PeerId id);
  const Peer& peer(PeerId id) const;
  static bool hasSession(const Peer& p) {
    return p.state == PeerState::Leased || p.state == PeerState::Ready ||
           p.state == PeerState::Silent;
  }
  PeerFailure fail(Peer& p, ConnectionFailure failure, SchedulerTime now);

  MembershipOptions options_;
  std::vector<Peer> peers_;
};

}  // namespace pl
