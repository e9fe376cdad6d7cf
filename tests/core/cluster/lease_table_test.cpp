#include "core/cluster/lease_table.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>

namespace pl {
namespace {

using std::chrono::microseconds;
using std::chrono::milliseconds;
using Devices = std::vector<uint32_t>;

// The manual clock: microseconds since an arbitrary origin.
SchedulerTime at(int64_t us) { return SchedulerTime{} + microseconds(us); }
constexpr int64_t kMs = 1000;  // microseconds

LeaseGrantRequest ask(Devices devices = {}, uint32_t ttlMs = 0) {
  LeaseGrantRequest r;
  r.devices = std::move(devices);
  r.ttlMs = ttlMs;
  return r;
}
// A Primary that reports its holding (as transport/primary.cpp always does).
LeaseGrantRequest fair(uint32_t held, bool preempt, std::string requester = "p") {
  LeaseGrantRequest r;
  r.heldDevices = held;
  r.preempt = preempt;
  r.requester = std::move(requester);
  return r;
}
LeaseGrantRequest owner(std::string token, Devices devices = {}) {
  LeaseGrantRequest r = ask(std::move(devices));
  r.ownerToken = std::move(token);
  return r;
}
std::vector<LeaseId> idsOf(const std::vector<LeaseEnding>& endings) {
  std::vector<LeaseId> ids;
  for (const LeaseEnding& e : endings) ids.push_back(e.lease);
  return ids;
}

TEST(LeaseTable, EndingsAndRefusalsKeepTheNodesWords) {
  EXPECT_EQ(leaseEndText(LeaseEnd::Released),
            "released (dropped by the primary, or its connection closed)");
  EXPECT_EQ(leaseEndText(LeaseEnd::ConnectionLost), "connection lost");
  EXPECT_EQ(leaseEndText(LeaseEnd::Expired), "expired");
  EXPECT_EQ(leaseEndText(LeaseEnd::RevokedOwner), "revoked: the owner is rendering");
  EXPECT_EQ(leaseEndText(LeaseEnd::RevokedFairShare, "x"), "revoked: fair share (x)");
  EXPECT_EQ(leaseEndText(LeaseEnd::NodeShutdown), "node shutting down");
  EXPECT_EQ(leaseEndText(LeaseEnd::NodeShutdown, "test over"), "test over");
  EXPECT_EQ(leaseEndText(LeaseEnd::WorkerFailed, "worker 7 hung"), "worker 7 hung");
  EXPECT_EQ((LeaseEnding{LeaseId{1}, LeaseEnd::Expired, "", {}}).summary(), "expired");
  EXPECT_EQ((LeaseEnding{LeaseId{1}, LeaseEnd::RevokedOwner, "", {}}).summary(),
            "ended: revoked: the owner is rendering");

  LeaseTable table(2);
  EXPECT_EQ(describeRefusal(table.grant(ask({5}), at(0))), "lease: no device 5 (this node has 2)");
  table.ownerJobStarted("t");
  EXPECT_EQ(describeRefusal(table.grant(ask(), at(0))), "busy: the owner is rendering");
  table.ownerJobEnded("t");
  ASSERT_TRUE(table.grant(ask(), at(0)).granted());
  EXPECT_EQ(describeRefusal(table.grant(ask(), at(0))),
            "busy: the devices asked for are leased to another primary");
}

TEST(LeaseTable, GrantsTheFreeDevicesAskedForInOrder) {
  LeaseTable table(3);
  LeaseGrant a = table.grant(ask({2, 0, 2}), at(0));
  ASSERT_TRUE(a.granted());
  EXPECT_EQ(a.lease, LeaseId{1});
  EXPECT_EQ(a.devices, (Devices{2, 0}));  // duplicates once, in the order asked for
  EXPECT_TRUE(a.revoked.empty());
  EXPECT_EQ(table.holderOf(0), LeaseId{1});
  EXPECT_EQ(table.holderOf(1), std::nullopt);
  EXPECT_EQ(table.freeDeviceCount(), 1u);

  // Only the free ones among those asked for; then nothing is left.
  LeaseGrant b = table.grant(ask({0, 1}), at(0));
  ASSERT_TRUE(b.granted());
  EXPECT_EQ(b.lease, LeaseId{2});
  EXPECT_EQ(b.devices, (Devices{1}));
  LeaseGrant c = table.grant(ask(), at(0));
  EXPECT_EQ(c.refusal, LeaseRefusal::AllDevicesLeased);
  EXPECT_TRUE(c.devices.empty());

  LeaseGrant bad = table.grant(ask({1, 3}), at(0));
  EXPECT_EQ(bad.refusal, LeaseRefusal::NoSuchDevice);
  EXPECT_EQ(bad.badDevice, 3u);
  EXPECT_EQ(bad.deviceCount, 3u);
  EXPECT_EQ(table.activeLeaseCount(), 2u);

  // A node without devices grants nothing.
  LeaseTable none(0);
  EXPECT_EQ(none.grant(ask(), at(0)).refusal, LeaseRefusal::AllDevicesLeased);
}

TEST(LeaseTable, TtlIsClampedToTheNodesRange) {
  LeaseTable table(8, {.defaultTtlMs = 2000, .minTtlMs = 100, .maxTtlMs = 5000});
  auto ttlFor = [&](uint32_t asked) {
    LeaseGrant g = table.grant(ask({}, asked), at(7));
    EXPECT_TRUE(g.granted());
    EXPECT_EQ(g.expiresAt, at(7) + milliseconds(g.ttlMs));
    table.release(g.lease, LeaseEnd::Released);
    return g.ttlMs;
  };
  EXPECT_EQ(ttlFor(0), 2000u);  // the default
  EXPECT_EQ(ttlFor(5), 100u);
  EXPECT_EQ(ttlFor(100), 100u);
  EXPECT_EQ(ttlFor(3000), 3000u);
  EXPECT_EQ(ttlFor(5000), 5000u);
  EXPECT_EQ(ttlFor(100000), 5000u);

  // Options out of order are made consistent: min >= 1, max >= min, default within.
  LeaseTable odd(1, {.defaultTtlMs = 90000, .minTtlMs = 0, .maxTtlMs = 0});
  EXPECT_EQ(odd.options().minTtlMs, 1u);
  EXPECT_EQ(odd.options().maxTtlMs, 1u);
  EXPECT_EQ(odd.options().defaultTtlMs, 1u);
  LeaseTable low(1, {.defaultTtlMs = 10, .minTtlMs = 1000, .maxTtlMs = 60000});
  EXPECT_EQ(low.grant(ask(), at(0)).ttlMs, 1000u);
}

TEST(LeaseTable, ExpiresExactlyAtTheTtl) {
  LeaseTable table(2, {.defaultTtlMs = 1000, .minTtlMs = 1, .maxTtlMs = 60000});
  LeaseGrant a = table.grant(ask({0}), at(0));
  LeaseGrant b = table.grant(ask({1}, 500), at(100));
  EXPECT_EQ(table.nextExpiry(), at(100 + 500 * kMs));

  LeaseExpiry early = table.expire(at(100 + 500 * kMs - 1));
  EXPECT_TRUE(early.ended.empty());
  EXPECT_EQ(early.next, at(100 + 500 * kMs));

  LeaseExpiry first = table.expire(at(100 + 500 * kMs));
  ASSERT_EQ(first.ended.size(), 1u);
  EXPECT_EQ(first.ended[0].lease, b.lease);
  EXPECT_EQ(first.ended[0].reason, LeaseEnd::Expired);
  EXPECT_EQ(first.ended[0].devices, (Devices{1}));
  EXPECT_EQ(first.next, at(1000 * kMs));
  EXPECT_EQ(table.holderOf(1), std::nullopt);
  EXPECT_EQ(table.find(b.lease), nullptr);

  // Late: still ended once, and the table is empty.
  LeaseExpiry second = table.expire(at(5000 * kMs));
  EXPECT_EQ(idsOf(second.ended), (std::vector<LeaseId>{a.lease}));
  EXPECT_EQ(second.next, std::nullopt);
  EXPECT_TRUE(table.expire(at(9000 * kMs)).ended.empty());
  EXPECT_EQ(table.freeDeviceCount(), 2u);
}

TEST(LeaseTable, ExpiryOrderIsByTimeThenId) {
  LeaseTable table(3, {.defaultTtlMs = 1000, .minTtlMs = 1, .maxTtlMs = 60000});
  LeaseId late = table.grant(ask({0}, 300), at(0)).lease;
  LeaseId same1 = table.grant(ask({1}, 200), at(0)).lease;
  LeaseId same2 = table.grant(ask({2}, 100), at(100 * kMs)).lease;
  LeaseExpiry all = table.expire(at(1000 * kMs));
  EXPECT_EQ(idsOf(all.ended), (std::vector<LeaseId>{same1, same2, late}));
}

TEST(LeaseTable, RenewExtendsFromNow) {
  LeaseTable table(1, {.defaultTtlMs = 1000, .minTtlMs = 1, .maxTtlMs = 60000});
  LeaseGrant g = table.grant(ask(), at(0));
  LeaseRenewal r = table.renew(g.lease, 0, at(600 * kMs));
  ASSERT_EQ(r.outcome, LeaseRenewal::Outcome::Renewed);
  EXPECT_EQ(r.ttlMs, 1000u);
  EXPECT_EQ(r.expiresAt, at(1600 * kMs));
  EXPECT_EQ(table.nextExpiry(), at(1600 * kMs));
  EXPECT_TRUE(table.expire(at(1600 * kMs - 1)).ended.empty());  // the old expiry is gone
  EXPECT_EQ(table.expire(at(1600 * kMs)).ended.size(), 1u);

  EXPECT_EQ(table.renew(g.lease, 0, at(1601 * kMs)).outcome,
            LeaseRenewal::Outcome::UnknownLease);
  EXPECT_EQ(table.renew(LeaseId{77}, 0, at(0)).outcome, LeaseRenewal::Outcome::UnknownLease);
}

TEST(LeaseTable, RenewAtTheExpiryIsTooLateAndEndsTheLease) {
  LeaseTable table(2, {.defaultTtlMs = 1000, .minTtlMs = 1, .maxTtlMs = 60000});
  LeaseGrant g = table.grant(ask(), at(0));
  LeaseRenewal r = table.renew(g.lease, 0, at(1000 * kMs));
  ASSERT_EQ(r.outcome, LeaseRenewal::Outcome::Expired);
  ASSERT_TRUE(r.ending.has_value());
  EXPECT_EQ(r.ending->lease, g.lease);
  EXPECT_EQ(r.ending->reason, LeaseEnd::Expired);
  EXPECT_EQ(r.ending->devices, (Devices{0, 1}));
  EXPECT_EQ(table.activeLeaseCount(), 0u);
  EXPECT_EQ(table.nextExpiry(), std::nullopt);
  EXPECT_TRUE(table.expire(at(2000 * kMs)).ended.empty());  // reported once
}

TEST(LeaseTable, ReleaseFreesTheDevicesAtOnce) {
  LeaseTable table(2);
  LeaseGrant a = table.grant(ask({0}), at(0));
  LeaseGrant b = table.grant(ask(), at(0));
  EXPECT_EQ(b.devices, (Devices{1}));
  std::optional<LeaseEnding> ended = table.release(a.lease, LeaseEnd::ConnectionLost);
  ASSERT_TRUE(ended.has_value());
  EXPECT_EQ(ended->reason, LeaseEnd::ConnectionLost);
  EXPECT_EQ(ended->devices, (Devices{0}));
  EXPECT_EQ(table.freeDeviceCount(), 1u);
  EXPECT_FALSE(table.release(a.lease, LeaseEnd::Released).has_value());  // once
  EXPECT_EQ(table.renew(a.lease, 0, at(1)).outcome, LeaseRenewal::Outcome::UnknownLease);
  EXPECT_EQ(table.nextExpiry(), b.expiresAt);  // a's expiry went with it

  LeaseGrant c = table.grant(ask(), at(2));
  EXPECT_EQ(c.devices, (Devices{0}));
  EXPECT_EQ(c.lease, LeaseId{3});  // ids are never reused

  std::vector<LeaseEnding> all = table.releaseAll(LeaseEnd::NodeShutdown, "test over");
  EXPECT_EQ(idsOf(all), (std::vector<LeaseId>{b.lease, c.lease}));
  EXPECT_EQ(all[0].text(), "test over");
  EXPECT_EQ(table.freeDeviceCount(), 2u);
  EXPECT_EQ(table.nextExpiry(), std::nullopt);
}

TEST(LeaseTable, OwnerJobRevokesOtherLeasesAndRefusesNewOnesUntilEveryJobEnded) {
  LeaseTable table(4);
  LeaseId remote = table.grant(ask({0}), at(0)).lease;
  LeaseId ownLease = table.grant(owner("t1", {1}), at(0)).lease;  // before its job started
  LeaseId stale = table.grant(owner("old", {2}), at(0)).lease;    // a job long over

  std::vector<LeaseEnding> revoked = table.ownerJobStarted("t1");
  EXPECT_EQ(idsOf(revoked), (std::vector<LeaseId>{remote, stale}));
  for (const LeaseEnding& e : revoked) EXPECT_EQ(e.reason, LeaseEnd::RevokedOwner);
  EXPECT_NE(table.find(ownLease), nullptr);
  EXPECT_TRUE(table.ownerActive());
  EXPECT_EQ(table.freeDeviceCount(), 3u);

  EXPECT_EQ(table.grant(ask(), at(1)).refusal, LeaseRefusal::OwnerRendering);
  EXPECT_EQ(table.grant(owner("old"), at(1)).refusal, LeaseRefusal::OwnerRendering);
  // Even a fair-share request cannot take the owner's devices.
  EXPECT_EQ(table.grant(fair(0, true), at(1)).refusal, LeaseRefusal::OwnerRendering);
  LeaseGrant second = table.grant(owner("t1", {0}), at(1));
  ASSERT_TRUE(second.granted());

  // A second owner job (another token) keeps the first one's leases.
  EXPECT_TRUE(table.ownerJobStarted("t2").empty());
  // The same token twice: two jobs.
  EXPECT_TRUE(table.ownerJobStarted("t2").empty());
  EXPECT_FALSE(table.ownerJobEnded("nobody"));
  EXPECT_FALSE(table.ownerJobEnded("t1"));
  EXPECT_FALSE(table.ownerJobEnded("t2"));
  EXPECT_TRUE(table.ownerActive());
  EXPECT_EQ(table.grant(ask(), at(2)).refusal, LeaseRefusal::OwnerRendering);
  EXPECT_TRUE(table.ownerJobEnded("t2"));  // the last one
  EXPECT_FALSE(table.ownerActive());
  EXPECT_FALSE(table.ownerJobEnded("t2"));

  // Offered again; the owner's leases were never revoked and live on.
  LeaseGrant after = table.grant(ask(), at(3));
  ASSERT_TRUE(after.granted());
  EXPECT_EQ(after.devices, (Devices{2, 3}));
  EXPECT_NE(table.find(ownLease), nullptr);
  EXPECT_NE(table.find(second.lease), nullptr);
}

TEST(LeaseTable, FairShareSplitsAFourDeviceNodeTwoAndTwo) {
  LeaseTable table(4);
  LeaseGrant a = table.grant(fair(0, true, "A"), at(0));
  ASSERT_EQ(a.devices.size(), 4u);
  EXPECT_EQ(table.find(a.lease)->heldDevices, 4u);  // its report plus what it got here

  // Without preempt, or holding too many, nothing changes hands.
  EXPECT_EQ(table.grant(fair(0, false, "B"), at(1)).refusal, LeaseRefusal::AllDevicesLeased);
  LeaseGrant tooMany = table.grant(fair(3, true, "B"), at(1));  // (4 - 3) / 2 = 0
  EXPECT_EQ(tooMany.refusal, LeaseRefusal::AllDevicesLeased);
  EXPECT_TRUE(tooMany.revoked.empty());
  EXPECT_NE(table.find(a.lease), nullptr);
  // Not reporting is not fair-sharing.
  LeaseGrantRequest silent = ask();
  silent.preempt = true;
  EXPECT_EQ(table.grant(silent, at(1)).refusal, LeaseRefusal::AllDevicesLeased);

  // B holds none: A's lease is revoked whole, B gets 2, 2 stay free.
  LeaseGrant b = table.grant(fair(0, true, "B"), at(2));
  ASSERT_TRUE(b.granted());
  EXPECT_EQ(b.devices, (Devices{0, 1}));
  ASSERT_EQ(b.revoked.size(), 1u);
  EXPECT_EQ(b.revoked[0].lease, a.lease);
  EXPECT_EQ(b.revoked[0].reason, LeaseEnd::RevokedFairShare);
  EXPECT_EQ(b.revoked[0].devices, (Devices{0, 1, 2, 3}));
  EXPECT_EQ(b.revoked[0].text(),
            "revoked: fair share (its primary holds 4 devices, B holds 0; 2 change hands)");
  EXPECT_EQ(table.freeDeviceCount(), 2u);

  // A comes back holding none and gets the rest without revoking anyone.
  LeaseGrant a2 = table.grant(fair(0, true, "A"), at(3));
  ASSERT_TRUE(a2.granted());
  EXPECT_EQ(a2.devices, (Devices{2, 3}));
  EXPECT_TRUE(a2.revoked.empty());

  // 2 + 2: neither can take from the other, whatever they ask (no ping-pong).
  for (int round = 0; round < 3; ++round) {
    EXPECT_EQ(table.grant(fair(2, true, "B"), at(4)).refusal, LeaseRefusal::AllDevicesLeased);
    EXPECT_EQ(table.grant(fair(2, true, "A"), at(4)).refusal, LeaseRefusal::AllDevicesLeased);
    EXPECT_EQ(table.grant(fair(1, true, "C"), at(4)).refusal, LeaseRefusal::AllDevicesLeased);
  }
  EXPECT_EQ(table.activeLeaseCount(), 2u);
}

TEST(LeaseTable, FairShareTakesFromThePrimaryHoldingTheMost) {
  LeaseTable table(3);
  auto holding = [](uint32_t held, uint32_t device) {
    LeaseGrantRequest r = fair(held, false);
    r.devices = {device};
    return r;
  };
  LeaseId x = table.grant(holding(4, 0), at(0)).lease;
  LeaseId y = table.grant(holding(10, 1), at(0)).lease;
  LeaseId z = table.grant(holding(7, 2), at(0)).lease;
  EXPECT_EQ(table.find(y)->heldDevices, 11u);

  LeaseGrant g = table.grant(fair(1, true, "R"), at(1));
  ASSERT_TRUE(g.granted());
  EXPECT_EQ(idsOf(g.revoked), (std::vector<LeaseId>{y}));
  EXPECT_EQ(g.devices, (Devices{1}));  // t = min(1 device, (11 - 1) / 2)
  EXPECT_NE(table.find(x), nullptr);
  EXPECT_NE(table.find(z), nullptr);

  // Renewals report the holding (never fewer than the lease's own devices).
  ASSERT_EQ(table.renew(x, 0, at(2)).outcome, LeaseRenewal::Outcome::Renewed);
  EXPECT_EQ(table.find(x)->heldDevices, 1u);
  ASSERT_EQ(table.renew(z, 30, at(2)).outcome, LeaseRenewal::Outcome::Renewed);
  EXPECT_EQ(table.find(z)->heldDevices, 30u);
  LeaseGrant h = table.grant(fair(1, true, "R"), at(3));
  EXPECT_EQ(idsOf(h.revoked), (std::vector<LeaseId>{z}));
}

TEST(LeaseTable, FairShareNeverRevokesTheOwnersOrUnreportedLeases) {
  LeaseTable table(2);
  LeaseGrantRequest unreported = ask({0});
  LeaseId quiet = table.grant(unreported, at(0)).lease;
  LeaseGrantRequest ownerHeld = owner("me", {1});
  ownerHeld.heldDevices = 50;
  LeaseId own = table.grant(ownerHeld, at(0)).lease;
  LeaseGrant g = table.grant(fair(0, true), at(1));
  EXPECT_EQ(g.refusal, LeaseRefusal::AllDevicesLeased);
  EXPECT_TRUE(g.revoked.empty());
  EXPECT_NE(table.find(quiet), nullptr);
  EXPECT_NE(table.find(own), nullptr);
  // A renewal of an unreported lease does not start reporting.
  table.renew(quiet, 40, at(2));
  EXPECT_FALSE(table.find(quiet)->heldDevices.has_value());
}

TEST(LeaseTable, FairShareOnlyAmongTheDevicesAskedFor) {
  LeaseTable table(4);
  LeaseGrantRequest big = fair(6, false);
  big.devices = {0, 1};
  LeaseId holder = table.grant(big, at(0)).lease;  // holds 8 in the cluster
  LeaseGrantRequest other = fair(0, false);
  other.devices = {2, 3};
  table.grant(other, at(0));
  // Asking for device 3 only: its holder (2 in the cluster) cannot give any to a requester
  // holding 1.
  LeaseGrantRequest r = fair(1, true);
  r.devices = {3};
  EXPECT_EQ(table.grant(r, at(1)).refusal, LeaseRefusal::AllDevicesLeased);
  // Asking for device 1: the big holder's lease is revoked whole, t = min(2, (8 - 1) / 2) = 2,
  // but only device 1 was asked for.
  r.devices = {1};
  LeaseGrant g = table.grant(r, at(1));
  ASSERT_TRUE(g.granted());
  EXPECT_EQ(idsOf(g.revoked), (std::vector<LeaseId>{holder}));
  EXPECT_EQ(g.devices, (Devices{1}));
  EXPECT_EQ(table.holderOf(0), std::nullopt);
}

// Two Primaries and n single-device nodes, each Primary acting as transport/primary.cpp does:
// it asks every node it does not hold (one preempting request at a time), reports what it holds,
// renews, and after losing a lease renews the others at once with its new holding. Whoever
// starts first, they end n/2 + n/2 (one apart when n is odd; 4 nodes: 2 + 2) after n/2 leases
// changed hands in the first round, and stay there: no swapping back and forth.
TEST(LeaseTable, TwoPrimariesSettleOnAnEvenSplit) {
  for (int nodeCount = 3; nodeCount <= 6; ++nodeCount) {
    for (int firstMover = 0; firstMover < 2; ++firstMover) {
      SCOPED_TRACE("nodes " + std::to_string(nodeCount) + ", first mover " +
                   std::to_string(firstMover));
      std::vector<LeaseTable> nodes;
      for (int i = 0; i < nodeCount; ++i) nodes.emplace_back(1);
      std::map<std::pair<int, int>, LeaseId> held;  // (primary, node) -> lease
      auto holding = [&](int p) {
        uint32_t n = 0;
        for (const auto& [key, id] : held) n += key.first == p ? 1 : 0;
        return n;
      };
      int64_t t = 0;
      int changes = 0, lastChangeRound = -1;
      for (int round = 0; round < 40; ++round) {
        for (int k = 0; k < 2; ++k) {
          const int p = (k + firstMover + round) % 2;
          for (int n = 0; n < nodeCount; ++n) {
            t += 10 * kMs;
            if (held.count({p, n})) {
              EXPECT_EQ(nodes[n].renew(held.at({p, n}), holding(p), at(t)).outcome,
                        LeaseRenewal::Outcome::Renewed);
              continue;
            }
            LeaseGrant g = nodes[n].grant(fair(holding(p), true), at(t));
            for (const LeaseEnding& e : g.revoked) {
              const int loser = 1 - p;
              EXPECT_EQ(held.at({loser, n}), e.lease);
              held.erase({loser, n});
              ++changes;
              lastChangeRound = round;
              for (const auto& [key, id] : held) {
                if (key.first != loser) continue;
                EXPECT_EQ(nodes[key.second].renew(id, holding(loser), at(t)).outcome,
                          LeaseRenewal::Outcome::Renewed);
              }
            }
            if (g.granted()) held[{p, n}] = g.lease;
          }
        }
      }
      EXPECT_EQ(holding(0) + holding(1), uint32_t(nodeCount));
      EXPECT_EQ(std::max(holding(0), holding(1)), uint32_t(nodeCount + 1) / 2);
      EXPECT_EQ(changes, nodeCount / 2) << "leases kept changing hands";
      EXPECT_EQ(lastChangeRound, 0);
    }
  }
}

// Random grants, renewals, releases, owner jobs and time: after every step a device belongs
// to at most one lease, the table's view is consistent, every ending is reported once and
// holds nothing afterwards, and expiry is exact.
TEST(LeaseTable, RandomizedSimulationKeepsItsInvariants) {
  std::mt19937 rng(20240611);
  for (int trial = 0; trial < 40; ++trial) {
    const uint32_t deviceCount = 1 + rng() % 6;
    LeaseTable table(deviceCount, {.defaultTtlMs = 500, .minTtlMs = 50, .maxTtlMs = 2000});
    std::map<LeaseId, LeaseRecord> mirror;  // what the caller believes is active
    std::vector<std::string> ownerTokens;
    int64_t now = 0;
    auto pick = [&](uint32_t n) { return uint32_t(rng() % n); };
    auto ended = [&](const LeaseEnding& e) {
      ASSERT_EQ(mirror.count(e.lease), 1u) << "ended twice or never granted";
      EXPECT_EQ(e.devices, mirror.at(e.lease).devices);
      mirror.erase(e.lease);
      EXPECT_EQ(table.find(e.lease), nullptr);
      for (uint32_t d : e.devices) EXPECT_NE(table.holderOf(d), e.lease);
    };
    for (int step = 0; step < 400; ++step) {
      now += int64_t(pick(200)) * kMs / 2 + pick(1000);
      switch (pick(8)) {
        case 0:
        case 1:
        case 2: {
          LeaseGrantRequest r;
          for (uint32_t i = pick(3); i > 0; --i) r.devices.push_back(pick(deviceCount + 1));
          r.ttlMs = pick(3000);
          if (pick(2)) r.heldDevices = pick(8);
          r.preempt = pick(2);
          if (!ownerTokens.empty() && pick(3) == 0) {
            r.ownerToken = ownerTokens[pick(uint32_t(ownerTokens.size()))];
          } else if (pick(8) == 0) {
            r.ownerToken = "t" + std::to_string(pick(3));  // maybe not running
          }
          bool anyAskedFree = r.devices.empty() && table.freeDeviceCount() > 0;
          for (uint32_t d : r.devices) {
            anyAskedFree |= d < deviceCount && !table.holderOf(d).has_value();
          }
          LeaseGrant g = table.grant(r, at(now));
          for (const LeaseEnding& e : g.revoked) {
            // Fair share: only when nothing asked for was free, only from a reporting remote
            // lease, and never so much that the requester ends above the holder.
            EXPECT_EQ(e.reason, LeaseEnd::RevokedFairShare);
            EXPECT_FALSE(anyAskedFree);
            EXPECT_TRUE(r.preempt);
            const LeaseRecord& victim = mirror.at(e.lease);
            ASSERT_TRUE(victim.heldDevices.has_value());
            EXPECT_TRUE(victim.ownerToken.empty());
            EXPECT_LE(2 * int64_t(g.devices.size()),
                      int64_t(*victim.heldDevices) - int64_t(*r.heldDevices));
            ended(e);
          }
          if (g.granted()) {
            EXPECT_FALSE(g.devices.empty());
            EXPECT_GE(g.ttlMs, 50u);
            EXPECT_LE(g.ttlMs, 2000u);
            EXPECT_EQ(g.expiresAt, at(now) + milliseconds(g.ttlMs));
            const LeaseRecord* record = table.find(g.lease);
            ASSERT_NE(record, nullptr);
            EXPECT_EQ(mirror.count(g.lease), 0u);
            mirror[g.lease] = *record;
            EXPECT_TRUE(!table.ownerActive() || !r.ownerToken.empty());
          } else {
            EXPECT_TRUE(g.revoked.empty());
          }
          break;
        }
        case 3:
          if (!mirror.empty()) {
            auto it = std::next(mirror.begin(), pick(uint32_t(mirror.size())));
            const LeaseId id = it->first;
            const SchedulerTime due = it->second.expiresAt;
            LeaseRenewal r = table.renew(id, pick(8), at(now));
            if (at(now) >= due) {
              ASSERT_EQ(r.outcome, LeaseRenewal::Outcome::Expired);
              ended(*r.ending);
            } else {
              ASSERT_EQ(r.outcome, LeaseRenewal::Outcome::Renewed);
              mirror[id] = *table.find(id);
              EXPECT_EQ(r.expiresAt, at(now) + milliseconds(r.ttlMs));
            }
          }
          break;
        case 4:
          if (!mirror.empty()) {
            LeaseId id = std::next(mirror.begin(), pick(uint32_t(mirror.size())))->first;
            std::optional<LeaseEnding> e = table.release(id, LeaseEnd::Released);
            ASSERT_TRUE(e.has_value());
            ended(*e);
          }
          break;
        case 5: {
          std::string token = "t" + std::to_string(pick(3));
          ownerTokens.push_back(token);
          for (const LeaseEnding& e : table.ownerJobStarted(token)) {
            EXPECT_EQ(e.reason, LeaseEnd::RevokedOwner);
            ended(e);
          }
          // Only leases of a running owner job are left.
          for (const auto& [id, lease] : mirror) {
            EXPECT_FALSE(lease.ownerToken.empty());
            EXPECT_NE(std::find(ownerTokens.begin(), ownerTokens.end(), lease.ownerToken),
                      ownerTokens.end());
          }
          break;
        }
        case 6:
          if (!ownerTokens.empty()) {
            size_t i = pick(uint32_t(ownerTokens.size()));
            const bool last = ownerTokens.size() == 1;
            EXPECT_EQ(table.ownerJobEnded(ownerTokens[i]), last);
            ownerTokens.erase(ownerTokens.begin() + i);
          }
          break;
        case 7: {
          LeaseExpiry x = table.expire(at(now));
          for (const LeaseEnding& e : x.ended) {
            EXPECT_EQ(e.reason, LeaseEnd::Expired);
            ended(e);
          }
          break;
        }
      }
      // Invariants.
      EXPECT_EQ(table.ownerActive(), !ownerTokens.empty());
      EXPECT_EQ(table.activeLeaseCount(), mirror.size());
      std::vector<int> owners(deviceCount, 0);
      std::optional<SchedulerTime> earliest;
      for (const auto& [id, lease] : mirror) {
        const LeaseRecord* record = table.find(id);
        ASSERT_NE(record, nullptr);
        EXPECT_EQ(record->devices, lease.devices);
        EXPECT_EQ(record->expiresAt, lease.expiresAt);
        EXPECT_FALSE(lease.devices.empty());
        for (uint32_t d : lease.devices) {
          ++owners[d];
          EXPECT_EQ(table.holderOf(d), id);
        }
        if (!earliest || lease.expiresAt < *earliest) earliest = lease.expiresAt;
      }
      size_t free = 0;
      for (uint32_t d = 0; d < deviceCount; ++d) {
        EXPECT_LE(owners[d], 1) << "device " << d << " in two leases";
        if (owners[d] == 0) {
          EXPECT_EQ(table.holderOf(d), std::nullopt);
          ++free;
        }
      }
      EXPECT_EQ(table.freeDeviceCount(), free);
      EXPECT_EQ(table.nextExpiry(), earliest);
      if (testing::Test::HasFailure()) {
        FAIL() << "trial " << trial << " step " << step;
      }
    }
  }
}

}  // namespace
}  // namespace pl
