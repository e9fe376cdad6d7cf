// PendingAdmissions (core/cluster/pending_admissions.h): the per-source limit, eviction at the
// global cap from the source that holds the most, and the sources of IPv4 and IPv6 addresses.

#include "core/cluster/pending_admissions.h"

#include <gtest/gtest.h>

namespace pl {
namespace {

using Refusal = AdmissionDecision::Refusal;

TEST(PendingAdmissions, OneSourceHoldsAtMostItsShare) {
  PendingAdmissions p({.perSource = 4, .globalCap = 32});
  uint64_t id = 0;
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(p.admit(id++, "10.0.0.1").admitted);
  AdmissionDecision fifth = p.admit(id++, "10.0.0.1");
  EXPECT_FALSE(fifth.admitted);
  EXPECT_EQ(fifth.refusal, Refusal::kSourceFull);
  EXPECT_FALSE(fifth.evict);
  EXPECT_TRUE(p.admit(id++, "10.0.0.2").admitted);  // another host is not affected
  EXPECT_EQ(p.pendingFrom("10.0.0.1"), 4u);
  // One authenticates (or closes): room for one more from that source.
  p.remove(0);
  EXPECT_TRUE(p.admit(id++, "10.0.0.1").admitted);
  p.remove(12345);  // unknown: ignored
  EXPECT_EQ(p.pending(), 5u);
}

TEST(PendingAdmissions, AtTheCapTheSourceHoldingTheMostLosesItsOldest) {
  PendingAdmissions p({.perSource = 4, .globalCap = 6});
  // 10.0.0.1 holds 4, 10.0.0.2 holds 2: the cap.
  for (uint64_t id : {1, 2, 3, 4}) ASSERT_TRUE(p.admit(id, "10.0.0.1").admitted);
  for (uint64_t id : {5, 6}) ASSERT_TRUE(p.admit(id, "10.0.0.2").admitted);
  // A probe from a third host: 10.0.0.1's oldest (1) makes room.
  AdmissionDecision probe = p.admit(7, "10.0.0.3");
  EXPECT_TRUE(probe.admitted);
  ASSERT_TRUE(probe.evict);
  EXPECT_EQ(*probe.evict, 1u);
  EXPECT_EQ(probe.evictedSource, "10.0.0.1");
  EXPECT_EQ(p.pending(), 6u);
  EXPECT_EQ(p.pendingFrom("10.0.0.1"), 3u);
  // Now 10.0.0.1 holds 3, 10.0.0.2 two, 10.0.0.3 one. One more from 10.0.0.2 (2 < 3):
  // 10.0.0.1's oldest again.
  AdmissionDecision more = p.admit(8, "10.0.0.2");
  EXPECT_TRUE(more.admitted);
  EXPECT_EQ(*more.evict, 2u);
  // 10.0.0.2 holds 3 now, the most: one more from it is refused, nothing evicted.
  AdmissionDecision refused = p.admit(9, "10.0.0.2");
  EXPECT_FALSE(refused.admitted);
  EXPECT_EQ(refused.refusal, Refusal::kCapReached);
  EXPECT_FALSE(refused.evict);
  EXPECT_EQ(p.pending(), 6u);
}

TEST(PendingAdmissions, ATieGoesAgainstTheSourceWhoseOldestIsOlder) {
  PendingAdmissions p({.perSource = 4, .globalCap = 4});
  for (uint64_t id : {1, 2}) ASSERT_TRUE(p.admit(id, "10.0.0.2").admitted);
  for (uint64_t id : {3, 4}) ASSERT_TRUE(p.admit(id, "10.0.0.1").admitted);
  AdmissionDecision d = p.admit(5, "10.0.0.3");
  EXPECT_TRUE(d.admitted);
  EXPECT_EQ(*d.evict, 1u);
  EXPECT_EQ(d.evictedSource, "10.0.0.2");
}

TEST(PendingAdmissions, IdleFloodsFromTwoHostsLeaveRoomForAThird) {
  // The case: 64 idle connections from 127.0.0.1 and more from 127.0.0.2, then a
  // keyed probe from 127.0.0.3.
  PendingAdmissions p({.perSource = 4, .globalCap = 32});
  uint64_t id = 0;
  size_t admitted = 0;
  for (int i = 0; i < 64; ++i) admitted += p.admit(id++, "127.0.0.1").admitted;
  for (int i = 0; i < 64; ++i) admitted += p.admit(id++, "127.0.0.2").admitted;
  EXPECT_EQ(admitted, 8u);
  EXPECT_TRUE(p.admit(id++, "127.0.0.3").admitted);
}

TEST(PendingAdmissions, NoLimitsAdmitEverything) {
  PendingAdmissions p({.perSource = 0, .globalCap = 0});
  for (uint64_t id = 0; id < 1000; ++id) EXPECT_TRUE(p.admit(id, "10.0.0.1").admitted);
}

TEST(PendingAdmissions, SourcesOfAddresses) {
  EXPECT_EQ(admissionSource("192.168.1.20"), "192.168.1.20");
  // One host owns a whole /64: every address in it is one source.
  EXPECT_EQ(admissionSource("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "[2001:db8:1:2::]/64");
  EXPECT_EQ(admissionSource("2001:db8:1:2::1"), admissionSource("2001:db8:1:2:ffff::9"));
  EXPECT_NE(admissionSource("2001:db8:1:2::1"), admissionSource("2001:db8:1:3::1"));
  EXPECT_EQ(admissionSource("::ffff:10.1.2.3"), "10.1.2.3");
  // Link-local: the whole segment shares fe80::/64, so each address is a source of its own.
  EXPECT_NE(admissionSource("fe80::1"), admissionSource("fe80::2"));
  EXPECT_EQ(admissionSource("fe80::a:b"), "[fe80::a:b]");
  EXPECT_EQ(admissionSource("unix peer"), "unix peer");
}

}  // namespace
}  // namespace pl
