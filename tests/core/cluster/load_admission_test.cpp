// admitLoad and SceneWindow (core/cluster/load_admission.h): the scenes a lease holds, and the
// three verdicts on a load (admitted, busy now, too large for this node ever).

#include "core/cluster/load_admission.h"

#include <gtest/gtest.h>

namespace pl {
namespace {

using Kind = MemoryHolder::Kind;
constexpr uint64_t MiB = uint64_t(1) << 20;

HeldScene scene(uint64_t key, uint64_t mib) { return {Hash128{key, 0}, mib * MiB}; }
const MemoryHolder kLease{Kind::Lease, 1};

TEST(SceneWindow, KeepsTheLastDistinctScenesAndCountsEachOnce) {
  SceneWindow w(2);
  w = w.with(scene(1, 10));
  w = w.with(scene(2, 20));
  EXPECT_EQ(w.bytes(), 30 * MiB);
  w = w.with(scene(1, 10));  // loaded again: the newest, still counted once
  EXPECT_EQ(w.bytes(), 30 * MiB);
  ASSERT_EQ(w.scenes().size(), 2u);
  EXPECT_EQ(w.scenes().back().key, (Hash128{1, 0}));
  w = w.with(scene(3, 40));  // scene 2 is now the oldest, and falls out
  EXPECT_FALSE(w.contains(Hash128{2, 0}));
  EXPECT_TRUE(w.contains(Hash128{1, 0}));
  EXPECT_EQ(w.bytes(), 50 * MiB);
  EXPECT_EQ(SceneWindow(0).with(scene(1, 1)).with(scene(2, 1)).scenes().size(), 1u);
}

TEST(LoadAdmission, WithoutABudgetOnlyTheSceneLimitApplies) {
  SceneWindow held(4);
  LoadVerdict v = admitLoad(nullptr, kLease, held, scene(1, 100), 100 * MiB, 0);
  EXPECT_EQ(v.outcome, LoadOutcome::Admitted);
  EXPECT_TRUE(v.scenes.contains(Hash128{1, 0}));
  v = admitLoad(nullptr, kLease, held, scene(1, 101), 100 * MiB, 0);
  EXPECT_EQ(v.outcome, LoadOutcome::SceneTooLarge);
  EXPECT_EQ(v.why, "the scene needs 101 MiB of render data, more than this node accepts (100 MiB)");
}

TEST(LoadAdmission, ReservesTheWindowAndRefusesWhatDoesNotFitNowAsBusy) {
  MemoryBudget budget(100 * MiB);
  ASSERT_TRUE(budget.reserve({Kind::ChunkCache, 0}, 20 * MiB).granted);
  ASSERT_TRUE(budget.reserve({Kind::RenderJob, 1}, 30 * MiB).granted);
  SceneWindow held(4);
  LoadVerdict v = admitLoad(&budget, kLease, held, scene(1, 30), ~uint64_t(0), 0);
  ASSERT_EQ(v.outcome, LoadOutcome::Admitted);
  EXPECT_EQ(budget.heldBy(kLease), 30 * MiB);
  held = v.scenes;
  // The same scene again (a camera move): nothing more.
  v = admitLoad(&budget, kLease, held, scene(1, 30), ~uint64_t(0), 0);
  EXPECT_EQ(v.outcome, LoadOutcome::Admitted);
  EXPECT_EQ(budget.heldBy(kLease), 30 * MiB);
  // A second scene of 30 MiB would make the lease hold 60 MiB beside the job's 30: busy, and
  // the reservation stays as it was.
  v = admitLoad(&budget, kLease, held, scene(2, 30), ~uint64_t(0), 0);
  EXPECT_EQ(v.outcome, LoadOutcome::Busy);
  EXPECT_NE(v.why.find("busy: lease 1 needs 60 MiB"), std::string::npos) << v.why;
  EXPECT_EQ(budget.heldBy(kLease), 30 * MiB);
  // Once the job is gone it fits.
  budget.release({Kind::RenderJob, 1});
  v = admitLoad(&budget, kLease, held, scene(2, 30), ~uint64_t(0), 0);
  EXPECT_EQ(v.outcome, LoadOutcome::Admitted);
  EXPECT_EQ(budget.heldBy(kLease), 60 * MiB);
}

// A scene larger than the budget less the chunk cache could never load here, whatever else
// goes: SceneTooLarge (the Primary stops asking), not busy (it would ask again and again). Pins
// beyond the cache's capacity (another lease's chunks waiting for their load) are transient:
// a scene that does not fit beside them is busy, not too large.
TEST(LoadAdmission, ASceneBeyondWhatTheBudgetCouldEverHoldIsTooLarge) {
  MemoryBudget budget(100 * MiB);
  const uint64_t cache = 25 * MiB;
  ASSERT_TRUE(budget.reserve({Kind::ChunkCache, 0}, cache).granted);
  LoadVerdict v = admitLoad(&budget, kLease, SceneWindow(4), scene(1, 76), ~uint64_t(0), cache);
  EXPECT_EQ(v.outcome, LoadOutcome::SceneTooLarge);
  EXPECT_EQ(v.why,
            "the scene needs 76 MiB of render data, more than this node accepts (its memory "
            "budget holds 75 MiB for scenes)");
  EXPECT_FALSE(budget.holds(kLease));
  // The cache's pins grow it to 45 MiB for a while: 75 MiB does not fit now, but will.
  ASSERT_TRUE(budget.reserve({Kind::ChunkCache, 0}, 45 * MiB).granted);
  EXPECT_EQ(admitLoad(&budget, kLease, SceneWindow(4), scene(1, 75), ~uint64_t(0), cache).outcome,
            LoadOutcome::Busy);
  ASSERT_TRUE(budget.reserve({Kind::ChunkCache, 0}, cache).granted);
  EXPECT_EQ(admitLoad(&budget, kLease, SceneWindow(4), scene(1, 75), ~uint64_t(0), cache).outcome,
            LoadOutcome::Admitted);
}

// Before an upload the node asks the same question of the size the Primary names: the scene
// limit, then the budget less the cache's capacity; pins and other leases do not make a scene
// too large (they pass).
TEST(LoadAdmission, WhetherASceneIsTooLargeIsKnownBeforeItsUpload) {
  MemoryBudget budget(100 * MiB);
  const uint64_t cache = 25 * MiB;
  ASSERT_TRUE(budget.reserve({Kind::ChunkCache, 0}, cache).granted);
  EXPECT_EQ(whySceneTooLarge(&budget, 75 * MiB, ~uint64_t(0), cache), "");
  EXPECT_EQ(whySceneTooLarge(&budget, 76 * MiB, ~uint64_t(0), cache),
            "the scene needs 76 MiB of render data, more than this node accepts (its memory "
            "budget holds 75 MiB for scenes)");
  EXPECT_EQ(whySceneTooLarge(nullptr, 76 * MiB, 80 * MiB, cache), "");
  EXPECT_EQ(whySceneTooLarge(nullptr, 81 * MiB, 80 * MiB, cache),
            "the scene needs 81 MiB of render data, more than this node accepts (80 MiB)");
  ASSERT_TRUE(budget.reserve({Kind::ChunkCache, 0}, 45 * MiB).granted);  // pins, for a while
  ASSERT_TRUE(budget.reserve(kLease, 30 * MiB).granted);                   // another lease
  EXPECT_EQ(whySceneTooLarge(&budget, 75 * MiB, ~uint64_t(0), cache), "");
}

// A scene loaded again (a camera move) becomes the newest, as the devices keep it: with a window
// of 2, loading A, B, A, C leaves A and C held and reserved (not B and C).
TEST(LoadAdmission, ASceneLoadedAgainIsTheNewestInTheWindow) {
  MemoryBudget budget(1000 * MiB);
  SceneWindow held(2);
  for (const HeldScene& s : {scene(1, 100), scene(2, 10), scene(1, 100), scene(3, 10)}) {
    LoadVerdict v = admitLoad(&budget, kLease, held, s, ~uint64_t(0), 0);
    ASSERT_EQ(v.outcome, LoadOutcome::Admitted);
    held = v.scenes;
  }
  EXPECT_TRUE(held.contains(Hash128{1, 0}));
  EXPECT_FALSE(held.contains(Hash128{2, 0}));
  EXPECT_EQ(budget.heldBy(kLease), 110 * MiB);
}

// Room is made by evicting warm workers, which the verdict lists for the caller to stop.
TEST(LoadAdmission, AnAdmittedLoadListsTheWarmWorkersEvictedForIt) {
  MemoryBudget budget(100 * MiB);
  ASSERT_TRUE(budget.reserve({Kind::WarmWorker, 5}, 60 * MiB, /*evictable=*/true).granted);
  LoadVerdict v = admitLoad(&budget, kLease, SceneWindow(4), scene(1, 50), ~uint64_t(0), 0);
  ASSERT_EQ(v.outcome, LoadOutcome::Admitted);
  ASSERT_EQ(v.evict.size(), 1u);
  EXPECT_EQ(v.evict[0], (MemoryHolder{Kind::WarmWorker, 5}));
  EXPECT_FALSE(budget.holds({Kind::WarmWorker, 5}));
}

}  // namespace
}  // namespace pl
