#include "core/cluster/membership.h"

#include "core/util/check.h"

namespace pl {

const char* peerStateName(PeerState state) {
  switch (state) {
    case PeerState::Connecting: return "connecting";
    case PeerState::Leased: return "leased";
    case PeerState::Ready: return "ready";
    case PeerState::Silent: return "silent";
    case PeerState::Retry: return "retry";
    case PeerState::GaveUp: return "gave up";
  }
  PL_CHECK(false);
  return "";
}

Membership::Membership(MembershipOptions options) : options_(options) {}

Membership::Peer& Membership::peer(PeerId id) {
  PL_CHECK(uint32_t(id) < peers_.size());
  return peers_[uint32_t(id)];
}
const Membership::Peer& Membership::peer(PeerId id) const {
  PL_CHECK(uint32_t(id) < peers_.size());
  return peers_[uint32_t(id)];
}

PeerId Membership::addPeer(SchedulerTime now) {
  Peer p;
  p.state = PeerState::Connecting;
  p.lastReply = now;
  peers_.push_back(p);
  return PeerId{uint32_t(peers_.size() - 1)};
}

void Membership::leaseGranted(PeerId id, SchedulerTime now) {
  Peer& p = peer(id);
  if (p.state != PeerState::Connecting) return;
  p.state = PeerState::Leased;
  p.dataLoaded = false;
  p.lastReply = now;
}

void Membership::dataLoaded(PeerId id, SchedulerTime now) {
  Peer& p = peer(id);
  if (!hasSession(p)) return;
  p.state = PeerState::Ready;
  p.dataLoaded = true;
  p.lostSinceReady = false;
  p.lastReply = now;
}

void Membership::replyReceived(PeerId id, SchedulerTime now) {
  Peer& p = peer(id);
  if (!hasSession(p)) return;
  p.lastReply = now;
  if (p.state == PeerState::Silent) p.state = p.dataLoaded ? PeerState::Ready : PeerState::Leased;
}

PeerFailure Membership::connectionFailed(PeerId id, ConnectionFailure failure,
                                         SchedulerTime now) {
  return fail(peer(id), failure, now);
}

PeerFailure Membership::fail(Peer& p, ConnectionFailure failure, SchedulerTime now) {
  PeerFailure decision;
  if (p.state == PeerState::Retry || p.state == PeerState::GaveUp) {
    decision.ignored = true;
    return decision;
  }
  const bool wasReady = p.dataLoaded;
  decision.lost = hasSession(p);
  decision.newLoss = wasReady || (decision.lost && !p.lostSinceReady);
  if (decision.newLoss) p.losses += 1;
  if (decision.lost) p.lostSinceReady = true;
  if (failure == ConnectionFailure::Busy) p.lostSinceReady = false;
  p.dataLoaded = false;
  if (failure == ConnectionFailure::AuthFailed || failure == ConnectionFailure::Incompatible ||
      failure == ConnectionFailure::SceneTooLarge) {
    p.state = PeerState::GaveUp;
    p.sceneTooLarge = failure == ConnectionFailure::SceneTooLarge;
    decision.permanent = true;
    return decision;
  }
  p.state = PeerState::Retry;
  // A lease revoked for fair share left this Primary's share of the node free: ask again at
  // once (the node's fair-share rule counts on it), but at most once per reconnectInterval, so
  // that a node answering every lease with a fair-share revocation cannot make this Primary
  // reconnect on every tick.
  const bool immediate = failure == ConnectionFailure::RevokedFairShare &&
                         (!p.hadImmediateRetry ||
                          now - p.lastImmediateRetry >= options_.reconnectInterval);
  if (immediate) {
    p.hadImmediateRetry = true;
    p.lastImmediateRetry = now;
  }
  p.retryAt = immediate ? now : now + options_.reconnectInterval;
  decision.retryAt = p.retryAt;
  return decision;
}

bool Membership::rediscovered(PeerId id, SchedulerTime now) {
  Peer& p = peer(id);
  if (p.state != PeerState::GaveUp && p.state != PeerState::Retry) return false;
  if (p.sceneTooLarge) return false;  // no advert change makes room for the scene
  p.state = PeerState::Connecting;
  p.lastReply = now;
  return true;
}

std::vector<MembershipAction> Membership::tick(SchedulerTime now) {
  std::vector<MembershipAction> actions;
  for (uint32_t i = 0; i < peers_.size(); ++i) {
    Peer& p = peers_[i];
    const PeerId id{i};
    if (hasSession(p)) {
      const auto silent = now - p.lastReply;
      if (silent > options_.silenceTimeout) {
        actions.push_back({MembershipAction::Kind::DeclareLost, id,
                           fail(p, ConnectionFailure::Broken, now)});
      } else if (silent > options_.silentAfter && p.state != PeerState::Silent) {
        p.state = PeerState::Silent;
        actions.push_back({MembershipAction::Kind::Silent, id, {}});
      }
    } else if (p.state == PeerState::Retry && now >= p.retryAt) {
      p.state = PeerState::Connecting;
      actions.push_back({MembershipAction::Kind::Connect, id, {}});
    }
  }
  return actions;
}

PeerState Membership::state(PeerId id) const { return peer(id).state; }

std::optional<SchedulerTime> Membership::retryAt(PeerId id) const {
  const Peer& p = peer(id);
  if (p.state != PeerState::Retry) return std::nullopt;
  return p.retryAt;
}

std::chrono::microseconds Membership::silentFor(PeerId id, SchedulerTime now) const {
  const Peer& p = peer(id);
  if (!hasSession(p)) return std::chrono::microseconds(0);
  return std::chrono::duration_cast<std::chrono::microseconds>(now - p.lastReply);
}

uint32_t Membership::losses(PeerId id) const { return peer(id).losses; }

bool Membership::anyRetryPossible() const {
  for (const Peer& p : peers_) {
    if (p.state != PeerState::GaveUp) return true;
  }
  return false;
}

}  // namespace pl
