#include "core/cluster/membership.h"

#include <gtest/gtest.h>

#include <random>

namespace pl {
namespace {

using std::chrono::microseconds;
using std::chrono::milliseconds;
using Kind = MembershipAction::Kind;

// The manual clock: microseconds since an arbitrary origin.
SchedulerTime at(int64_t us) { return SchedulerTime{} + microseconds(us); }
constexpr int64_t kMs = 1000;  // microseconds

MembershipOptions options() {
  MembershipOptions o;
  o.silenceTimeout = milliseconds(2000);
  o.reconnectInterval = milliseconds(1000);
  o.silentAfter = milliseconds(1000);
  return o;
}

TEST(Membership, ConnectsThenLeasesThenRenders) {
  Membership m(options());
  PeerId p = m.addPeer(at(0));
  EXPECT_EQ(p, PeerId{0});
  EXPECT_EQ(m.state(p), PeerState::Connecting);
  EXPECT_EQ(m.addPeer(at(0)), PeerId{1});
  // A handshake takes as long as it takes: no silence detection before a lease.
  EXPECT_TRUE(m.tick(at(10000 * kMs)).empty());
  m.leaseGranted(p, at(10000 * kMs));
  EXPECT_EQ(m.state(p), PeerState::Leased);
  m.dataLoaded(p, at(10500 * kMs));
  EXPECT_EQ(m.state(p), PeerState::Ready);
  EXPECT_EQ(m.silentFor(p, at(10700 * kMs)), milliseconds(200));
  EXPECT_STREQ(peerStateName(m.state(p)), "ready");
}

TEST(Membership, SilenceIsReportedThenLostExactlyAfterTheTimeout) {
  Membership m(options());
  PeerId p = m.addPeer(at(0));
  m.leaseGranted(p, at(0));
  m.dataLoaded(p, at(0));
  m.replyReceived(p, at(500 * kMs));

  // silentAfter (1 s) since the last reply: not yet; just past it: Silent, reported once.
  EXPECT_TRUE(m.tick(at(1500 * kMs)).empty());
  std::vector<MembershipAction> a = m.tick(at(1500 * kMs + 1));
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].kind, Kind::Silent);
  EXPECT_EQ(m.state(p), PeerState::Silent);
  EXPECT_TRUE(m.tick(at(1600 * kMs)).empty());

  // A reply brings it back.
  m.replyReceived(p, at(1700 * kMs));
  EXPECT_EQ(m.state(p), PeerState::Ready);

  // silenceTimeout (2 s) since the last reply: still there at exactly 2 s, lost just after.
  EXPECT_EQ(m.tick(at(2701 * kMs)).size(), 1u);  // Silent again
  EXPECT_TRUE(m.tick(at(3700 * kMs)).empty());
  a = m.tick(at(3700 * kMs + 1));
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].kind, Kind::DeclareLost);
  EXPECT_EQ(a[0].peer, p);
  EXPECT_TRUE(a[0].failure.lost);
  EXPECT_TRUE(a[0].failure.newLoss);
  EXPECT_FALSE(a[0].failure.permanent);
  EXPECT_EQ(a[0].failure.retryAt, at(4700 * kMs + 1));
  EXPECT_EQ(m.state(p), PeerState::Retry);
  EXPECT_EQ(m.losses(p), 1u);

  // The transport's own failure report for that connection comes late: ignored.
  PeerFailure late = m.connectionFailed(p, ConnectionFailure::Broken, at(3800 * kMs));
  EXPECT_TRUE(late.ignored);
  EXPECT_EQ(m.losses(p), 1u);
  // Replies on the dead connection change nothing.
  m.replyReceived(p, at(3900 * kMs));
  EXPECT_EQ(m.state(p), PeerState::Retry);
}

TEST(Membership, LostFromLeasedToo) {
  Membership m(options());
  PeerId p = m.addPeer(at(0));
  m.leaseGranted(p, at(0));  // uploading, never Ready
  std::vector<MembershipAction> a = m.tick(at(2000 * kMs + 1));
  // Silent and lost in the same tick: only the loss is reported.
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].kind, Kind::DeclareLost);
  EXPECT_TRUE(a[0].failure.lost);
  EXPECT_TRUE(a[0].failure.newLoss);
}

TEST(Membership, RetriesAfterTheIntervalAndGivesUpOnAuthOrVersion) {
  Membership m(options());
  PeerId down = m.addPeer(at(0));
  PeerId wrongKey = m.addPeer(at(0));
  PeerId oldVersion = m.addPeer(at(0));

  PeerFailure f = m.connectionFailed(down, ConnectionFailure::Broken, at(100 * kMs));
  EXPECT_FALSE(f.lost);  // never had a session: unreachable
  EXPECT_FALSE(f.newLoss);
  EXPECT_EQ(f.retryAt, at(1100 * kMs));
  EXPECT_EQ(m.retryAt(down), at(1100 * kMs));

  PeerFailure auth = m.connectionFailed(wrongKey, ConnectionFailure::AuthFailed, at(100 * kMs));
  EXPECT_TRUE(auth.permanent);
  EXPECT_FALSE(auth.retryAt.has_value());
  EXPECT_EQ(m.state(wrongKey), PeerState::GaveUp);
  // Even with a session, Incompatible is final.
  m.leaseGranted(oldVersion, at(0));
  PeerFailure version = m.connectionFailed(oldVersion, ConnectionFailure::Incompatible, at(0));
  EXPECT_TRUE(version.permanent);
  EXPECT_TRUE(version.lost);
  EXPECT_EQ(m.state(oldVersion), PeerState::GaveUp);

  EXPECT_TRUE(m.tick(at(1100 * kMs - 1)).empty());
  std::vector<MembershipAction> a = m.tick(at(1100 * kMs));
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].kind, Kind::Connect);
  EXPECT_EQ(a[0].peer, down);
  EXPECT_EQ(m.state(down), PeerState::Connecting);
  EXPECT_EQ(m.retryAt(down), std::nullopt);
  EXPECT_TRUE(m.tick(at(100000 * kMs)).empty());  // never the given-up ones
  EXPECT_TRUE(m.anyRetryPossible());
  m.connectionFailed(down, ConnectionFailure::AuthFailed, at(100000 * kMs));
  EXPECT_FALSE(m.anyRetryPossible());
  EXPECT_TRUE(m.connectionFailed(down, ConnectionFailure::Broken, at(100001 * kMs)).ignored);
}

// Discovery reports a given-up or waiting peer usable anew (a node upgraded to our build): it
// is tried at once, and can be given up again; connected or connecting peers are left alone.
TEST(Membership, RediscoveredPeersAreTriedAgainAtOnce) {
  Membership m(options());
  PeerId upgraded = m.addPeer(at(0));
  PeerId waiting = m.addPeer(at(0));
  PeerId rendering = m.addPeer(at(0));
  PeerId connecting = m.addPeer(at(0));
  PeerId tooSmall = m.addPeer(at(0));
  m.leaseGranted(tooSmall, at(0));
  EXPECT_TRUE(m.connectionFailed(tooSmall, ConnectionFailure::SceneTooLarge, at(0)).permanent);
  EXPECT_FALSE(m.rediscovered(tooSmall, at(50 * kMs))) << "nothing makes room for the scene";
  EXPECT_EQ(m.state(tooSmall), PeerState::GaveUp);
  EXPECT_TRUE(m.connectionFailed(upgraded, ConnectionFailure::Incompatible, at(0)).permanent);
  m.connectionFailed(waiting, ConnectionFailure::Broken, at(0));
  m.leaseGranted(rendering, at(0));
  m.dataLoaded(rendering, at(0));
  EXPECT_FALSE(m.rediscovered(rendering, at(50 * kMs)));
  EXPECT_EQ(m.state(rendering), PeerState::Ready);
  EXPECT_FALSE(m.rediscovered(connecting, at(50 * kMs)));
  EXPECT_EQ(m.state(connecting), PeerState::Connecting);
  m.leaseGranted(connecting, at(50 * kMs));
  EXPECT_FALSE(m.rediscovered(connecting, at(60 * kMs)));
  EXPECT_EQ(m.state(connecting), PeerState::Leased);

  EXPECT_TRUE(m.rediscovered(upgraded, at(50 * kMs)));
  EXPECT_EQ(m.state(upgraded), PeerState::Connecting);
  EXPECT_TRUE(m.rediscovered(waiting, at(50 * kMs)));  // before its retry at 1 s
  EXPECT_EQ(m.state(waiting), PeerState::Connecting);
  EXPECT_EQ(m.retryAt(waiting), std::nullopt);
  EXPECT_TRUE(m.tick(at(1000 * kMs)).empty()) << "no second attempt at the old retry time";
  // Still refused: given up again, until the next such report.
  EXPECT_TRUE(
      m.connectionFailed(upgraded, ConnectionFailure::Incompatible, at(60 * kMs)).permanent);
  EXPECT_EQ(m.state(upgraded), PeerState::GaveUp);
  for (const MembershipAction& a : m.tick(at(100000 * kMs))) EXPECT_NE(a.peer, upgraded);
}

// A node that will never hold the scene (its lease ended SceneTooLarge) is given up at once, as a
// loss of what it was doing, and never asked again; busy ones are asked again.
TEST(Membership, SceneTooLargeIsFinalBusyIsNot) {
  Membership m(options());
  PeerId small = m.addPeer(at(0));
  PeerId busy = m.addPeer(at(0));
  m.leaseGranted(small, at(0));
  m.leaseGranted(busy, at(0));
  PeerFailure f = m.connectionFailed(small, ConnectionFailure::SceneTooLarge, at(10 * kMs));
  EXPECT_TRUE(f.permanent);
  EXPECT_TRUE(f.lost);
  EXPECT_FALSE(f.retryAt.has_value());
  EXPECT_EQ(m.state(small), PeerState::GaveUp);
  EXPECT_FALSE(m.connectionFailed(busy, ConnectionFailure::Busy, at(10 * kMs)).permanent);
  std::vector<MembershipAction> a = m.tick(at(10000 * kMs));
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].peer, busy);
}

TEST(Membership, BusyWaitsTheIntervalFairShareRetriesAtOnce) {
  Membership m(options());
  PeerId p = m.addPeer(at(0));
  PeerFailure busy = m.connectionFailed(p, ConnectionFailure::Busy, at(0));
  EXPECT_EQ(busy.retryAt, at(1000 * kMs));
  EXPECT_EQ(m.tick(at(1000 * kMs)).size(), 1u);
  m.leaseGranted(p, at(1000 * kMs));
  m.dataLoaded(p, at(1100 * kMs));
  PeerFailure revoked = m.connectionFailed(p, ConnectionFailure::RevokedFairShare, at(2000 * kMs));
  EXPECT_TRUE(revoked.lost);
  EXPECT_TRUE(revoked.newLoss);
  EXPECT_EQ(revoked.retryAt, at(2000 * kMs));
  std::vector<MembershipAction> a = m.tick(at(2000 * kMs));
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].kind, Kind::Connect);
  // Revoked again right away (a node that keeps doing it): the next try waits the interval,
  // so such a node cannot make the Primary reconnect on every tick.
  m.leaseGranted(p, at(2010 * kMs));
  PeerFailure again = m.connectionFailed(p, ConnectionFailure::RevokedFairShare, at(2020 * kMs));
  EXPECT_EQ(again.retryAt, at(3020 * kMs));
  EXPECT_TRUE(m.tick(at(2500 * kMs)).empty());
  ASSERT_EQ(m.tick(at(3020 * kMs)).size(), 1u);
  // A revocation a whole interval after the last immediate retry is retried at once again.
  m.leaseGranted(p, at(3030 * kMs));
  EXPECT_EQ(m.connectionFailed(p, ConnectionFailure::RevokedFairShare, at(3040 * kMs)).retryAt,
            at(3040 * kMs));
}

// As transport/primary.cpp counts losses: a node lost while rendering, which then fails again
// during its upload (never Ready in between), counts once; once Ready again, or after a Busy
// refusal, a new failure counts again.
TEST(Membership, ALossCountsOnceUntilThePeerIsReadyAgain) {
  Membership m(options());
  PeerId p = m.addPeer(at(0));
  m.leaseGranted(p, at(0));
  m.dataLoaded(p, at(0));
  EXPECT_TRUE(m.connectionFailed(p, ConnectionFailure::Broken, at(1 * kMs)).newLoss);

  for (int attempt = 0; attempt < 3; ++attempt) {
    ASSERT_EQ(m.tick(at((2000 + 2000 * attempt) * kMs)).size(), 1u);  // Connect
    m.leaseGranted(p, at((2000 + 2000 * attempt) * kMs));
    PeerFailure f = m.connectionFailed(p, ConnectionFailure::Broken,
                                       at((2100 + 2000 * attempt) * kMs));
    EXPECT_TRUE(f.lost) << attempt;     // its lease is gone: nothing to requeue, but lost
    EXPECT_FALSE(f.newLoss) << attempt;  // still the same loss
  }
  EXPECT_EQ(m.losses(p), 1u);

  // Ready again, then lost: a new loss.
  ASSERT_EQ(m.tick(at(9000 * kMs)).size(), 1u);
  m.leaseGranted(p, at(9000 * kMs));
  m.dataLoaded(p, at(9100 * kMs));
  EXPECT_TRUE(m.connectionFailed(p, ConnectionFailure::Broken, at(9200 * kMs)).newLoss);
  EXPECT_EQ(m.losses(p), 2u);

  // Busy in between also starts afresh.
  ASSERT_EQ(m.tick(at(10200 * kMs)).size(), 1u);
  EXPECT_FALSE(m.connectionFailed(p, ConnectionFailure::Busy, at(10300 * kMs)).newLoss);
  ASSERT_EQ(m.tick(at(11300 * kMs)).size(), 1u);
  m.leaseGranted(p, at(11300 * kMs));
  EXPECT_TRUE(m.connectionFailed(p, ConnectionFailure::Broken, at(11400 * kMs)).newLoss);
  EXPECT_EQ(m.losses(p), 3u);

  // A first session that fails before Ready is a loss too.
  PeerId q = m.addPeer(at(0));
  m.leaseGranted(q, at(0));
  EXPECT_TRUE(m.connectionFailed(q, ConnectionFailure::Broken, at(5)).newLoss);
}

TEST(Membership, EventsOutOfOrderAreIgnored) {
  Membership m(options());
  PeerId p = m.addPeer(at(0));
  m.dataLoaded(p, at(0));  // no session yet
  EXPECT_EQ(m.state(p), PeerState::Connecting);
  m.replyReceived(p, at(0));
  EXPECT_EQ(m.state(p), PeerState::Connecting);
  m.connectionFailed(p, ConnectionFailure::Broken, at(0));
  m.leaseGranted(p, at(1));  // a stale attempt's grant while waiting to retry
  EXPECT_EQ(m.state(p), PeerState::Retry);
}

// Random events on several peers: the state machine never loses a peer (every peer not given
// up is connecting, connected or has a retry due within reconnectInterval), a peer with a
// session is never silent past the timeout after a tick, and losses only grow.
TEST(Membership, RandomizedSimulationKeepsItsInvariants) {
  std::mt19937 rng(7);
  Membership m(options());
  for (int i = 0; i < 6; ++i) m.addPeer(at(0));
  int64_t now = 0;
  std::vector<uint32_t> losses(6, 0);
  for (int step = 0; step < 20000; ++step) {
    now += rng() % (300 * kMs);
    const PeerId p{uint32_t(rng() % 6)};
    switch (rng() % 6) {
      case 0: m.leaseGranted(p, at(now)); break;
      case 1: m.dataLoaded(p, at(now)); break;
      case 2:
      case 3: m.replyReceived(p, at(now)); break;
      case 4: {
        const int kind = int(rng() % 20);
        ConnectionFailure f = kind < 14   ? ConnectionFailure::Broken
                              : kind < 18 ? ConnectionFailure::Busy
                              : kind < 19 ? ConnectionFailure::RevokedFairShare
                                          : ConnectionFailure::AuthFailed;
        if (step > 15000 && f == ConnectionFailure::AuthFailed) f = ConnectionFailure::Broken;
        PeerFailure d = m.connectionFailed(p, f, at(now));
        if (!d.ignored) {
          EXPECT_TRUE(!d.newLoss || d.lost);
          EXPECT_EQ(d.permanent, !d.retryAt.has_value());
          if (d.retryAt) {
            EXPECT_GE(*d.retryAt, at(now));
            EXPECT_LE(*d.retryAt, at(now) + milliseconds(1000));
          }
        }
        break;
      }
      case 5:
        for (const MembershipAction& a : m.tick(at(now))) {
          if (a.kind == Kind::Connect) {
            EXPECT_EQ(m.state(a.peer), PeerState::Connecting);
          }
          if (a.kind == Kind::DeclareLost) {
            EXPECT_TRUE(a.failure.lost);
            EXPECT_EQ(m.state(a.peer), PeerState::Retry);
          }
        }
        for (uint32_t i = 0; i < 6; ++i) {
          const PeerState s = m.state(PeerId{i});
          if (s == PeerState::Leased || s == PeerState::Ready || s == PeerState::Silent) {
            EXPECT_LE(m.silentFor(PeerId{i}, at(now)), milliseconds(2000));
          }
          if (s == PeerState::Retry) {
            EXPECT_GT(*m.retryAt(PeerId{i}), at(now));
          }
        }
        break;
    }
    for (uint32_t i = 0; i < 6; ++i) {
      EXPECT_GE(m.losses(PeerId{i}), losses[i]);
      losses[i] = m.losses(PeerId{i});
    }
    if (testing::Test::HasFailure()) FAIL() << "step " << step;
  }
}

}  // namespace
}  // namespace pl
