// MemoryBudget (core/cluster/memory_budget.h): reservations within the capacity, refusals that
// change nothing, warm workers evicted least recently kept first, resizing and release.

#include "core/cluster/memory_budget.h"

#include <gtest/gtest.h>

namespace pl {
namespace {

using Kind = MemoryHolder::Kind;
constexpr uint64_t MiB = uint64_t(1) << 20;

MemoryHolder job(uint64_t id) { return {Kind::RenderJob, id}; }
MemoryHolder lease(uint64_t id) { return {Kind::Lease, id}; }
MemoryHolder warm(uint64_t id) { return {Kind::WarmWorker, id}; }

TEST(MemoryBudget, GrantsWithinTheCapacityAndRefusesBeyondWithoutChangingAnything) {
  MemoryBudget b(100 * MiB);
  EXPECT_TRUE(b.reserve({Kind::ChunkCache, 0}, 25 * MiB).granted);
  EXPECT_TRUE(b.reserve(job(1), 50 * MiB).granted);
  EXPECT_TRUE(b.fits(25 * MiB));
  EXPECT_FALSE(b.fits(25 * MiB + 1));
  EXPECT_FALSE(b.assess(lease(1), 26 * MiB).granted);
  EXPECT_TRUE(b.assess(lease(1), 25 * MiB).granted);
  EXPECT_FALSE(b.holds(lease(1)));  // assess() reserves nothing
  MemoryGrant refused = b.reserve(lease(1), 26 * MiB);
  EXPECT_FALSE(refused.granted);
  EXPECT_TRUE(refused.evict.empty());
  EXPECT_FALSE(b.holds(lease(1)));
  EXPECT_EQ(b.reserved(), 75 * MiB);
  EXPECT_EQ(b.refusalText(refused),
            "busy: lease 1 needs 26 MiB; this node's memory budget of 100 MiB has 75 MiB "
            "reserved by others (peerlight node --memory-budget)");
  EXPECT_TRUE(b.reserve(lease(1), 25 * MiB).granted);  // exactly full
  EXPECT_EQ(b.reserved(), 100 * MiB);
  EXPECT_FALSE(b.fits(1));
  b.release(job(1));
  EXPECT_EQ(b.reserved(), 50 * MiB);
  b.release(job(1));  // twice: nothing more
  EXPECT_EQ(b.reserved(), 50 * MiB);
}

TEST(MemoryBudget, AbsurdSizesAreRefusedNotWrapped) {
  MemoryBudget b(100 * MiB);
  EXPECT_TRUE(b.reserve(job(1), 10 * MiB).granted);
  EXPECT_FALSE(b.fits(UINT64_MAX));
  EXPECT_FALSE(b.reserve(job(2), UINT64_MAX).granted);
  EXPECT_FALSE(b.reserve(job(2), UINT64_MAX - 5 * MiB).granted);
  EXPECT_EQ(b.reserved(), 10 * MiB);
  MemoryBudget none(0);
  EXPECT_FALSE(none.reserve(job(1), 1).granted);
  EXPECT_TRUE(none.reserve(job(1), 0).granted);
}

TEST(MemoryBudget, AGrowingHolderCountsItsOwnReservationOnce) {
  MemoryBudget b(100 * MiB);
  EXPECT_TRUE(b.reserve(lease(1), 60 * MiB).granted);
  // 60 -> 90: only 30 more are needed.
  EXPECT_TRUE(b.reserve(lease(1), 90 * MiB).granted);
  EXPECT_EQ(b.reserved(), 90 * MiB);
  EXPECT_FALSE(b.reserve(lease(1), 101 * MiB).granted);
  EXPECT_EQ(b.heldBy(lease(1)), 90 * MiB);  // a refused growth keeps what it held
  EXPECT_TRUE(b.reserve(lease(1), 10 * MiB).granted);  // shrinking
  EXPECT_EQ(b.reserved(), 10 * MiB);
}

TEST(MemoryBudget, WarmWorkersMakeRoomLeastRecentlyKeptFirst) {
  MemoryBudget b(100 * MiB);
  EXPECT_TRUE(b.reserve(warm(1), 30 * MiB, true).granted);
  EXPECT_TRUE(b.reserve(warm(2), 30 * MiB, true).granted);
  EXPECT_TRUE(b.reserve(warm(3), 30 * MiB, true).granted);
  EXPECT_EQ(b.evictableBytes(), 90 * MiB);
  // Warm workers count as free room.
  EXPECT_TRUE(b.fits(100 * MiB));
  MemoryGrant g = b.reserve(lease(7), 50 * MiB);
  ASSERT_TRUE(g.granted);
  // 90 + 50 > 100: the oldest two go (one alone would leave 110).
  ASSERT_EQ(g.evict.size(), 2u);
  EXPECT_EQ(g.evict[0], warm(1));
  EXPECT_EQ(g.evict[1], warm(2));
  EXPECT_FALSE(b.holds(warm(1)));
  EXPECT_TRUE(b.holds(warm(3)));
  EXPECT_EQ(b.reserved(), 80 * MiB);
  EXPECT_EQ(b.evictableBytes(), 30 * MiB);
}

TEST(MemoryBudget, NothingIsEvictedForARequestThatCannotFitAnyway) {
  MemoryBudget b(100 * MiB);
  EXPECT_TRUE(b.reserve(job(1), 50 * MiB).granted);
  EXPECT_TRUE(b.reserve(warm(1), 40 * MiB, true).granted);
  MemoryGrant g = b.reserve(lease(1), 60 * MiB);  // 50 firm + 60 > 100 even without warm 1
  EXPECT_FALSE(g.granted);
  EXPECT_TRUE(g.evict.empty());
  EXPECT_TRUE(b.holds(warm(1)));
  EXPECT_EQ(b.reserved(), 90 * MiB);
  EXPECT_NE(b.refusalText(g).find("has 50 MiB reserved by others"), std::string::npos);
}

TEST(MemoryBudget, AWarmWorkerTakenBackIntoALeaseIsNoLongerEvictable) {
  MemoryBudget b(100 * MiB);
  EXPECT_TRUE(b.reserve(warm(1), 40 * MiB, true).granted);
  b.release(warm(1));
  EXPECT_TRUE(b.reserve(lease(2), 40 * MiB).granted);  // the worker serves lease 2 now
  EXPECT_EQ(b.evictableBytes(), 0u);
  EXPECT_FALSE(b.reserve(lease(3), 61 * MiB).granted);
  // A holder re-reserved as evictable moves to the back of the eviction order.
  EXPECT_TRUE(b.reserve(warm(5), 10 * MiB, true).granted);
  EXPECT_TRUE(b.reserve(warm(6), 10 * MiB, true).granted);
  EXPECT_TRUE(b.reserve(warm(5), 10 * MiB, true).granted);
  MemoryGrant g = b.reserve(lease(3), 50 * MiB);
  ASSERT_TRUE(g.granted);
  ASSERT_EQ(g.evict.size(), 1u);
  EXPECT_EQ(g.evict[0], warm(6));
}

}  // namespace
}  // namespace pl
