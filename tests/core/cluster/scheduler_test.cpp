#include "core/cluster/scheduler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <deque>
#include <map>
#include <random>

#include "core/render/film.h"
#include "core/render/progressive_film.h"
#include "tests/core/cluster/scheduler_sim.h"

namespace pl {
namespace {

using namespace sim;

using std::chrono::milliseconds;

constexpr DeviceId kA{1}, kB{2}, kC{3};

// Every (pixel, sample) of the frame, counted as results are accepted.
class Coverage {
 public:
  explicit Coverage(const FrameSpec& f) : f_(f), count_(size_t(f.width) * f.height * f.spp, 0) {}
  void add(const WorkUnit& u) {
    for (uint32_t y = u.tile.y; y < u.tile.y + u.tile.height; ++y)
      for (uint32_t x = u.tile.x; x < u.tile.x + u.tile.width; ++x)
        for (uint32_t s = u.sampleBegin; s < u.sampleEnd; ++s)
          ++count_[(size_t(y) * f_.width + x) * f_.spp + s];
  }
  // Number of (pixel, sample) entries not covered exactly once.
  size_t wrong() const {
    return size_t(std::count_if(count_.begin(), count_.end(), [](uint8_t c) { return c != 1; }));
  }

 private:
  FrameSpec f_;
  std::vector<uint8_t> count_;
};


void expectFilmComplete(const Film& film) {
  int64_t sum = 0, squares = 0;
  for (int64_t s = 0; s < film.samplesPerPixel(); ++s) {
    sum += s;
    squares += s * s;
  }
  size_t bad = 0;
  for (size_t i = 0; i < film.sums().size(); i += 3)
    bad += film.sums()[i] != film.samplesPerPixel() || film.sums()[i + 1] != sum ||
           film.sums()[i + 2] != squares;
  EXPECT_EQ(bad, 0u) << "pixels not covered by exactly samples [0, spp)";
}

TEST(SchedulerTest, ValidatesFrame) {
  EXPECT_FALSE(Scheduler::validateFrame({0, 10, 4, 8}).ok());
  EXPECT_FALSE(Scheduler::validateFrame({10, 10, 0, 8}).ok());
  EXPECT_FALSE(Scheduler::validateFrame({10, 10, 4, 0}).ok());
  EXPECT_FALSE(Scheduler::validateFrame({40000, 10, 4, 8}).ok());
  EXPECT_TRUE(Scheduler::validateFrame({10, 10, 4, 8}).ok());
}

// A render border: units cover exactly the region's pixels x spp, none outside; passes complete
// when the region holds them. A region outside the image is refused.
TEST(SchedulerTest, ARegionIsRenderedExactlyOnceAndNothingElse) {
  FrameSpec f{100, 70, 16, 16};
  f.region = Rect{13, 9, 50, 41};
  ASSERT_TRUE(Scheduler::validateFrame(f).ok());
  Scheduler s(f, {.firstPassSamples = 2, .initialUnitWork = 16 * 16 * 2});
  EXPECT_EQ(s.totalWork(), uint64_t(50) * 41 * 16);
  FrameSpec whole = f;
  whole.region = Rect{};
  Coverage coverage(whole);
  int64_t t = 0;
  while (!s.done()) {
    std::optional<WorkUnit> u = s.nextUnit(kA, at(t));
    ASSERT_TRUE(u);
    EXPECT_GE(u->tile.x, 13u) << u->describe();
    EXPECT_GE(u->tile.y, 9u) << u->describe();
    EXPECT_LE(u->tile.x + u->tile.width, 63u) << u->describe();
    EXPECT_LE(u->tile.y + u->tile.height, 50u) << u->describe();
    t += 10;
    ASSERT_TRUE(s.complete(kA, *u, at(t)));
    coverage.add(*u);
  }
  EXPECT_EQ(s.completedSamples(), 16u);
  // Every (pixel, sample) of the region once; the rest of the image never.
  EXPECT_EQ(coverage.wrong(), size_t(100 * 70 - 50 * 41) * 16);
  FrameSpec outside = f;
  outside.region = Rect{60, 0, 41, 10};
  EXPECT_FALSE(Scheduler::validateFrame(outside).ok());
  outside.region = Rect{0, 0, 10, 0};
  EXPECT_FALSE(Scheduler::validateFrame(outside).ok());
}

TEST(SchedulerTest, PassesDoubleTheSamplesSoFar) {
  Scheduler s({64, 64, 100, 16}, {.firstPassSamples = 4});
  ASSERT_EQ(s.passCount(), 6u);
  EXPECT_EQ(s.passRange(0), std::make_pair(0u, 4u));
  EXPECT_EQ(s.passRange(1), std::make_pair(4u, 8u));
  EXPECT_EQ(s.passRange(2), std::make_pair(8u, 16u));
  EXPECT_EQ(s.passRange(4), std::make_pair(32u, 64u));
  EXPECT_EQ(s.passRange(5), std::make_pair(64u, 100u));
  Scheduler one({8, 8, 3, 8}, {.firstPassSamples = 4});
  EXPECT_EQ(one.passCount(), 1u);
  EXPECT_EQ(one.passRange(0), std::make_pair(0u, 3u));
}

// passEndsAt() (what a client of a session held elsewhere predicts) says exactly the ends of
// passRange() for every frame.
TEST(SchedulerTest, PassEndsAtMatchesThePassRanges) {
  for (uint32_t first : {1u, 2u, 4u}) {
    for (uint32_t spp : {1u, 3u, 4u, 7u, 16u, 100u, 257u}) {
      Scheduler s({16, 16, spp, 16}, {.firstPassSamples = first});
      std::vector<bool> ends(spp + 2, false);
      for (uint32_t pass = 0; pass < s.passCount(); ++pass) ends[s.passRange(pass).second] = true;
      for (uint32_t n = 0; n <= spp + 1; ++n)
        EXPECT_EQ(passEndsAt(spp, first, n), ends[n]) << "spp " << spp << " first " << first
                                                      << " n " << n;
    }
  }
}

// One device, units completed at once: every unit of pass k comes before any of pass k+1 and
// stays within its pass, and pass 0 covers every pixel.
TEST(SchedulerTest, ProgressivePassesCoverTheImageInOrder) {
  const FrameSpec f{100, 70, 64, 16};
  Scheduler s(f, {.firstPassSamples = 2, .initialUnitWork = 16 * 16 * 2});
  Coverage coverage(f);
  uint32_t lastPass = 0;
  int64_t t = 0;
  std::vector<uint8_t> pass0(100 * 70, 0);
  while (!s.done()) {
    std::optional<WorkUnit> u = s.nextUnit(kA, at(t));
    ASSERT_TRUE(u);
    uint32_t pass = 0;
    while (s.passRange(pass).second <= u->sampleBegin) ++pass;
    EXPECT_GE(pass, lastPass) << u->describe();
    EXPECT_LE(u->sampleEnd, s.passRange(pass).second) << "unit spans passes: " << u->describe();
    lastPass = pass;
    if (pass == 0) {
      for (uint32_t y = u->tile.y; y < u->tile.y + u->tile.height; ++y)
        for (uint32_t x = u->tile.x; x < u->tile.x + u->tile.width; ++x) pass0[y * 100 + x] = 1;
    } else {
      EXPECT_EQ(std::count(pass0.begin(), pass0.end(), 0), 0) << "pass 1 before pass 0 ended";
    }
    t += 10;
    ASSERT_TRUE(s.complete(kA, *u, at(t)));
    coverage.add(*u);
  }
  EXPECT_EQ(coverage.wrong(), 0u);
  EXPECT_FALSE(s.nextUnit(kA, at(t)));
}

TEST(SchedulerTest, PassesCompleteOnlyWhenEveryEarlierPassIsIn) {
  // 4 tiles, passes [0,1) [1,2) [2,4): a tile of pass 1 accepted before pass 0 is complete does
  // not count until it is.
  const FrameSpec f{32, 32, 4, 16};
  SchedulerOptions o;
  o.firstPassSamples = 1;
  o.initialUnitWork = 16 * 16;  // one tile of one sample
  o.defaultMaxInFlight = 8;
  Scheduler s(f, o);
  ASSERT_EQ(s.passCount(), 3u);
  std::vector<WorkUnit> units;
  while (auto u = s.nextUnit(kA, at(0))) units.push_back(*u);
  ASSERT_EQ(units.size(), 8u);  // pass 0 and pass 1, one tile each
  for (const WorkUnit& u : units) EXPECT_EQ(s.passOf(u), u.sampleBegin == 0 ? 0u : 1u);
  ProgressiveFilm film(f.width, f.height, f.spp);
  // Pass 1 first, then pass 0 except its last tile.
  for (size_t i = 4; i < 8; ++i) {
    ASSERT_TRUE(s.complete(kA, units[i], at(1)));
    ASSERT_TRUE(film.add(syntheticResult(units[i]), s.passOf(units[i])).ok());
  }
  for (size_t i = 0; i < 3; ++i) {
    ASSERT_TRUE(s.complete(kA, units[i], at(1)));
    ASSERT_TRUE(film.add(syntheticResult(units[i]), 0).ok());
  }
  EXPECT_EQ(s.completedPasses(), 0u);
  EXPECT_EQ(s.completedSamples(), 0u);
  EXPECT_FALSE(film.commit(s.completedPasses(), s.completedSamples()));
  ASSERT_TRUE(s.complete(kA, units[3], at(1)));
  ASSERT_TRUE(film.add(syntheticResult(units[3]), 0).ok());
  // The last tile of pass 0 completes passes 0 and 1 at once.
  EXPECT_EQ(s.completedPasses(), 2u);
  EXPECT_EQ(s.completedSamples(), 2u);
  EXPECT_TRUE(film.commit(s.completedPasses(), s.completedSamples()));
  expectFilmComplete(film.snapshot());
  EXPECT_EQ(film.snapshot().samplesPerPixel(), 2u);
  EXPECT_FALSE(film.add(syntheticResult(units[0]), 0).ok()) << "pass 0 is committed";
}

TEST(SchedulerTest, NewDeviceStartsSmallAndGrowsGradually) {
  Scheduler s({1024, 1024, 256, 64}, {.initialUnitWork = 64 * 64 * 4, .growthFactor = 4});
  std::optional<WorkUnit> u = s.nextUnit(kA, at(0));
  ASSERT_TRUE(u);
  EXPECT_LE(work(*u), 64u * 64 * 4);
  // An extremely fast device (a unit per ms). Units grow, but by at most 4x the largest
  // completed one per step.
  const uint64_t first = work(*u);
  uint64_t largest = 0;
  int64_t t = 0;
  for (int i = 0; i < 5; ++i) {
    largest = std::max(largest, work(*u));
    ASSERT_TRUE(s.complete(kA, *u, at(++t)));
    u = s.nextUnit(kA, at(t));
    ASSERT_TRUE(u);
    EXPECT_LE(work(*u), largest * 4) << u->describe();
  }
  EXPECT_GE(work(*u), first * 64) << "a fast device should get much bigger units";
}

// A device added with a larger first unit (a GPU) gets it; the others keep the default, and
// growth from there is still bounded by the growth factor.
TEST(SchedulerTest, PerDeviceInitialUnitWork) {
  Scheduler s({1024, 1024, 256, 64}, {.initialUnitWork = 64 * 64 * 4, .growthFactor = 4});
  s.addDevice(kA, at(0), 0, 512 * 512 * 4);
  std::optional<WorkUnit> gpu = s.nextUnit(kA, at(0));
  std::optional<WorkUnit> cpu = s.nextUnit(kB, at(0));
  ASSERT_TRUE(gpu && cpu);
  EXPECT_GT(work(*gpu), 64u * 64 * 4 * 16) << gpu->describe();
  EXPECT_LE(work(*gpu), 512u * 512 * 4) << gpu->describe();
  EXPECT_LE(work(*cpu), 64u * 64 * 4) << cpu->describe();
}

// The ms at which the first pass of a 256x256 frame completes, for a local device (1000 pixel
// samples per ms) ready at once and two nodes (700 each) ready `nodesReadyMs` later.
int64_t firstPassMs(const SchedulerOptions& options, int64_t nodesReadyMs) {
  Scheduler s({256, 256, 64, 64}, options);
  std::vector<SimDevice> devices = {{kA, 1000}};
  for (int64_t t = 0; t < 1000; ++t) {
    if (t == nodesReadyMs) devices.insert(devices.end(), {{kB, 700}, {kC, 700}});
    step(s, devices, t, [](SimDevice&, const WorkUnit&, bool) {});
    if (s.completedPasses() > 0) return t + 1;
  }
  return -1;
}

// A session's first pass after an update (interactiveSchedulerOptions): nodes that become
// ready a few ms after the local device still share the pass, which then ends near the ideal
// (the nodes' delay plus what is left over all three devices, plus one tile on a node: 36 ms).
// With the batch's first units (four tiles) the local device takes half the pass in its first
// two units and the pass waits for it.
TEST(SchedulerTest, InteractiveFirstPassIsSharedByDevicesReadyLater) {
  const SchedulerOptions interactive = interactiveSchedulerOptions();
  EXPECT_EQ(interactive.firstPassSamples, 1u);
  SchedulerOptions batch;
  batch.firstPassSamples = 1;
  const int64_t delay = 5;
  const double ideal = delay + (256.0 * 256 - 1000.0 * delay) / 2400 + 64.0 * 64 / 700;
  const int64_t shared = firstPassMs(interactive, delay);
  const int64_t alone = firstPassMs(batch, delay);
  EXPECT_LE(shared, ideal) << "interactive: " << shared << " ms, ideal " << ideal;
  EXPECT_LT(shared, alone) << "batch: " << alone << " ms";
}

// The last units of a pass get small (guided self-scheduling): two equal devices of measured
// rate finish a pass within one tile's time of each other, however large the units they were
// getting before.
TEST(SchedulerTest, APassEndsWithSmallUnitsOnEveryDevice) {
  Scheduler s({512, 512, 64, 64}, {.firstPassSamples = 4, .targetUnitMs = 300});
  std::vector<SimDevice> devices = {{kA, 500}, {kB, 500}};
  std::map<uint64_t, int64_t> lastOfPass0;  // device -> ms of its last pass-0 result
  for (int64_t t = 0; t < 10000 && s.completedPasses() == 0; ++t) {
    step(s, devices, t, [&](SimDevice& d, const WorkUnit& u, bool accepted) {
      if (accepted && s.passOf(u) == 0) lastOfPass0[uint64_t(d.id)] = t;
    });
  }
  ASSERT_EQ(lastOfPass0.size(), 2u);
  const int64_t tileMs = 64 * 64 * 4 / 500;  // 32 ms
  EXPECT_LE(std::abs(lastOfPass0[uint64_t(kA)] - lastOfPass0[uint64_t(kB)]), tileMs + 1);
}

// Registered devices that hold no work (one whose connection died silently) take no share of
// a pass: a lone working device gets the units it gets with no other device registered.
TEST(SchedulerTest, DevicesThatHoldNoWorkTakeNoShareOfThePass) {
  auto units = [](uint64_t silent) {
    Scheduler s({512, 512, 16, 64});
    for (uint64_t i = 0; i < silent; ++i) s.addDevice(DeviceId{10 + i}, at(0));
    std::vector<SimDevice> devices = {{kA, 1000}};
    for (int64_t t = 0; t < 100000 && !s.done(); ++t)
      step(s, devices, t, [](SimDevice&, const WorkUnit&, bool) {});
    EXPECT_TRUE(s.done());
    return s.stats().issuedUnits;
  };
  EXPECT_EQ(units(3), units(0));
}

TEST(SchedulerTest, RespectsMaxInFlight) {
  Scheduler s({256, 256, 16, 32});
  s.addDevice(kA, at(0), 3);
  EXPECT_TRUE(s.nextUnit(kA, at(0)));
  EXPECT_TRUE(s.nextUnit(kA, at(0)));
  EXPECT_TRUE(s.nextUnit(kA, at(0)));
  EXPECT_FALSE(s.nextUnit(kA, at(0)));
  EXPECT_EQ(s.inFlight(kA), 3u);
  s.setMaxInFlight(kA, 4);
  EXPECT_TRUE(s.nextUnit(kA, at(0)));
  EXPECT_FALSE(s.nextUnit(kA, at(0)));
  // Default for a device first seen in nextUnit().
  EXPECT_TRUE(s.nextUnit(kB, at(0)));
  EXPECT_TRUE(s.nextUnit(kB, at(0)));
  EXPECT_FALSE(s.nextUnit(kB, at(0)));
}

// A simulated device: renders its units in order at `speed` pixel samples per ms.


TEST(SchedulerTest, FastDeviceGetsBiggerUnits) {
  const FrameSpec f{1920, 1080, 256, 64};
  Scheduler s(f, {.targetUnitMs = 300});
  std::vector<SimDevice> devices{{kA, 2000.0, true, {}},
                                 {kB, 20000.0, true, {}}};  // pixel samples per ms
  std::map<uint64_t, std::vector<uint64_t>> sizes;
  for (int64_t t = 0; t < 6000; ++t)
    step(s, devices, t,
         [&](SimDevice& d, const WorkUnit& u, bool) { sizes[uint64_t(d.id)].push_back(work(u)); });
  ASSERT_GE(sizes[1].size(), 5u);
  ASSERT_GE(sizes[2].size(), 5u);
  // Measured rates within 20% of the truth (per second).
  EXPECT_NEAR(s.rate(kA), 2e6, 0.2 * 2e6);
  EXPECT_NEAR(s.rate(kB), 2e7, 0.2 * 2e7);
  // Budgets aim at 300 ms of work.
  EXPECT_NEAR(double(s.unitBudget(kA)), 2e6 * 0.3, 0.2 * 2e6 * 0.3);
  EXPECT_NEAR(double(s.unitBudget(kB)), 2e7 * 0.3, 0.2 * 2e7 * 0.3);
  // The last units handed out follow the rates (about 10x apart).
  const double slowLast = double(sizes[1].back()), fastLast = double(sizes[2].back());
  EXPECT_GT(fastLast, 5 * slowLast) << slowLast << " vs " << fastLast;
  EXPECT_LE(fastLast, 2e7 * 0.3 * 1.2);
}

TEST(SchedulerTest, UnitsRespectMaxUnitPixels) {
  Scheduler s({2048, 2048, 4, 64}, {.firstPassSamples = 4, .maxUnitPixels = 100000});
  int64_t t = 0;
  while (!s.done()) {
    std::optional<WorkUnit> u = s.nextUnit(kA, at(t));
    ASSERT_TRUE(u);
    EXPECT_LE(u->tile.pixelCount(), 100000u);
    t += 1;  // absurdly fast: budgets would otherwise cover the image
    ASSERT_TRUE(s.complete(kA, *u, at(t)));
  }
}

TEST(SchedulerTest, LostDeviceUnitsAreRequeuedFirstAndLateResultsRejected) {
  const FrameSpec f{256, 256, 16, 32};
  Scheduler s(f);
  Coverage coverage(f);
  s.addDevice(kA, at(0), 3);
  std::vector<WorkUnit> lost;
  for (int i = 0; i < 3; ++i) lost.push_back(*s.nextUnit(kA, at(0)));
  WorkUnit bFirst = *s.nextUnit(kB, at(0));  // new work, after A's
  s.deviceLost(kA, at(100));
  EXPECT_EQ(s.inFlight(kA), 0u);
  EXPECT_EQ(s.stats().requeuedUnits, 3u);
  // A's late results are not merged.
  EXPECT_FALSE(s.complete(kA, lost[0], at(101)));
  // The requeued units come back, oldest first, before new work.
  ASSERT_TRUE(s.complete(kB, bFirst, at(110)));
  coverage.add(bFirst);
  std::vector<WorkUnit> again;
  for (int i = 0; i < 3; ++i) {
    std::optional<WorkUnit> u = s.nextUnit(kB, at(110));
    ASSERT_TRUE(u);
    again.push_back(*u);
    ASSERT_TRUE(s.complete(kB, *u, at(111 + i)));
    coverage.add(*u);
  }
  EXPECT_EQ(again, lost);
  int64_t t = 200;
  while (!s.done()) {
    std::optional<WorkUnit> u = s.nextUnit(kB, at(t));
    ASSERT_TRUE(u);
    ASSERT_TRUE(s.complete(kB, *u, at(++t)));
    coverage.add(*u);
  }
  EXPECT_EQ(coverage.wrong(), 0u);
}

// A big unit lost by a fast device is cut to the size of the slow device that takes it over.
TEST(SchedulerTest, RequeuedUnitIsSplitForASlowerDevice) {
  const FrameSpec f{512, 512, 64, 64};
  Scheduler s(f);
  Coverage coverage(f);
  // A is very fast (a unit per ms): its units grow until one is big.
  int64_t t = 0;
  WorkUnit big;
  for (;;) {
    big = *s.nextUnit(kA, at(t));
    if (work(big) >= 500000) break;
    ASSERT_TRUE(s.complete(kA, big, at(++t)));
    coverage.add(big);
  }
  s.deviceLost(kA, at(++t));
  // B renders 50 000 pixel samples per second: after its first unit, 15 000 per 300 ms unit.
  s.addDevice(kB, at(t), 1);
  uint64_t covered = 0;
  bool first = true;
  while (covered < work(big)) {
    const WorkUnit u = *s.nextUnit(kB, at(t));
    if (first) {
      EXPECT_LE(work(u), SchedulerOptions{}.initialUnitWork) << u.describe();
    } else {
      EXPECT_LE(work(u), 15000u * 1.1) << u.describe();
    }
    first = false;
    // Pieces of the lost unit come first, before any new work.
    EXPECT_GE(u.sampleBegin, big.sampleBegin) << u.describe();
    EXPECT_LE(u.sampleEnd, big.sampleEnd) << u.describe();
    EXPECT_GE(u.tile.y, big.tile.y) << u.describe();
    EXPECT_LE(u.tile.y + u.tile.height, big.tile.y + big.tile.height) << u.describe();
    t += int64_t(1000 * work(u) / 50000);
    ASSERT_TRUE(s.complete(kB, u, at(t)));
    coverage.add(u);
    covered += work(u);
  }
  EXPECT_EQ(covered, work(big));
  while (!s.done()) {
    const WorkUnit u = *s.nextUnit(kB, at(t));
    ASSERT_TRUE(s.complete(kB, u, at(t += 1)));
    coverage.add(u);
  }
  EXPECT_EQ(coverage.wrong(), 0u);
}

TEST(SchedulerTest, IdleDeviceDuplicatesOldestUnitAndFirstResultWins) {
  // Two tiles, one unit each.
  const FrameSpec f{64, 32, 4, 32};
  Scheduler s(f, {.firstPassSamples = 4, .initialUnitWork = 32 * 32 * 4});
  const WorkUnit b1 = *s.nextUnit(kB, at(0));
  const WorkUnit a2 = *s.nextUnit(kA, at(1));
  EXPECT_NE(b1, a2);
  // Everything is handed out; A still holds a unit, so it gets no duplicate.
  EXPECT_EQ(s.currentPass(), s.passCount());
  EXPECT_FALSE(s.nextUnit(kA, at(2)));
  // A third device joins: it is idle and gets a copy of the oldest unit in flight.
  std::optional<WorkUnit> dup = s.nextUnit(kC, at(6));
  ASSERT_TRUE(dup);
  EXPECT_EQ(*dup, b1) << "the oldest unit in flight is duplicated";
  EXPECT_EQ(s.stats().duplicateUnits, 1u);
  // maxCopies = 2: no third copy of b1; a fourth device gets a copy of a2.
  std::optional<WorkUnit> dup2 = s.nextUnit(DeviceId{4}, at(7));
  ASSERT_TRUE(dup2);
  EXPECT_EQ(*dup2, a2);
  EXPECT_FALSE(s.nextUnit(DeviceId{5}, at(7)));
  // C finishes first: accepted; B's copy is now redundant and rejected.
  EXPECT_TRUE(s.complete(kC, b1, at(8)));
  EXPECT_EQ(s.redundantUnits(kB), std::vector<WorkUnit>{b1});
  EXPECT_FALSE(s.complete(kB, b1, at(9)));
  EXPECT_FALSE(s.complete(kB, b1, at(9))) << "a repeated result is rejected too";
  // A finishes a2 before device 4; 4 cancels its copy.
  EXPECT_TRUE(s.complete(kA, a2, at(10)));
  EXPECT_TRUE(s.unitFailed(DeviceId{4}, a2, at(11)));
  EXPECT_TRUE(s.done());
  EXPECT_EQ(s.stats().requeuedUnits, 0u) << "a cancelled redundant copy is not requeued";
}

TEST(SchedulerTest, LostUnitWithACopyElsewhereIsNotRequeued) {
  // When the original's device dies, the duplicate still in flight covers the unit: nothing
  // is requeued. When the last copy fails, the unit is requeued.
  Scheduler s({32, 32, 4, 32}, {.firstPassSamples = 4, .initialUnitWork = 32 * 32 * 4});
  const WorkUnit u = *s.nextUnit(kA, at(0));
  EXPECT_EQ(*s.nextUnit(kB, at(1)), u);  // duplicate
  s.deviceLost(kA, at(2));
  EXPECT_EQ(s.stats().requeuedUnits, 0u);
  EXPECT_TRUE(s.unitFailed(kB, u, at(4)));
  EXPECT_FALSE(s.unitFailed(kB, u, at(4))) << "B no longer holds it";
  EXPECT_EQ(s.stats().requeuedUnits, 1u);
  EXPECT_EQ(*s.nextUnit(kC, at(5)), u);
  EXPECT_TRUE(s.complete(kC, u, at(6)));
  EXPECT_TRUE(s.done());
}

TEST(SchedulerTest, DeviceJoiningMidFrameGetsWorkAtOnce) {
  const FrameSpec f{512, 512, 64, 64};
  Scheduler s(f);
  std::vector<SimDevice> devices{{kA, 3000.0, true, {}}};
  int64_t t = 0;
  for (; t < 2000; ++t) step(s, devices, t, [](auto&, auto&, bool) {});
  ASSERT_FALSE(s.done());
  std::optional<WorkUnit> u = s.nextUnit(kB, at(t));
  ASSERT_TRUE(u);
  EXPECT_LE(work(*u), SchedulerOptions{}.initialUnitWork) << "a new device starts small";
  devices.push_back({kB, 3000.0, true, {*u}});
  uint64_t byB = 0;
  for (; !s.done() && t < 100000; ++t)
    step(s, devices, t, [&](SimDevice& d, const WorkUnit& w, bool ok) {
      if (ok && d.id == kB) byB += work(w);
    });
  EXPECT_TRUE(s.done());
  EXPECT_GT(byB, s.totalWork() / 5) << "the joined device took a share of the rest";
}

// Randomized simulations: devices of different speeds and pipelines, deaths, joins, failed
// units, results delivered twice, late results of dead devices. The accepted units must tile
// [0, spp) x image exactly once, checked both sample by sample and through a Film.
TEST(SchedulerTest, RandomSimulationsTileTheFrameExactlyOnce) {
  SchedulerStats total;
  uint64_t losses = 0, failures = 0, lateResults = 0;
  for (uint32_t seed = 1; seed <= 300; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937 rng(seed);
    auto uniform = [&](uint32_t lo, uint32_t hi) {
      return std::uniform_int_distribution<uint32_t>(lo, hi)(rng);
    };
    const FrameSpec f{uniform(1, 160), uniform(1, 120), uniform(1, 70), uniform(1, 48)};
    SchedulerOptions options;
    options.firstPassSamples = uniform(1, 8);
    options.targetUnitMs = uniform(20, 300);
    options.initialUnitWork = uniform(1, 20000);
    options.maxCopies = uniform(1, 3);
    options.maxUnitPixels = uniform(1, 4) == 1 ? uniform(1, 500) : (1u << 20);
    Scheduler s(f, options);
    Coverage coverage(f);
    Film film(f.width, f.height, f.spp);
    ProgressiveFilm progressive(f.width, f.height, f.spp);
    uint32_t commits = 0;

    std::vector<SimDevice> devices;
    auto join = [&] { joinRandomDevice(s, devices, rng); };
    for (uint32_t i = uniform(1, 4); i > 0; --i) join();

    std::vector<std::pair<DeviceId, WorkUnit>> late;  // results of devices declared lost
    uint64_t accepted = 0;
    auto onResult = [&](SimDevice& d, const WorkUnit& u, bool ok) {
      if (ok) {
        coverage.add(u);
        ASSERT_TRUE(film.add(syntheticResult(u)).ok());
        ++accepted;
        // The progressive film shows exactly the complete passes: samples [0, N) everywhere.
        const uint32_t before = progressive.committedSamples();
        ASSERT_TRUE(progressive.add(syntheticResult(u), s.passOf(u)).ok());
        if (progressive.commit(s.completedPasses(), s.completedSamples())) {
          EXPECT_GT(progressive.committedSamples(), before);
          if (++commits % 3 == 1 || s.done()) expectFilmComplete(progressive.snapshot());
        }
      }
      if (uniform(1, 10) == 1) {
        EXPECT_FALSE(s.complete(d.id, u, at(0))) << "delivered twice";
      }
    };
    int64_t t = 0;
    for (; !s.done() && t < 200000; ++t) {
      step(s, devices, t, onResult);
      const uint32_t event = uniform(1, 60);
      size_t alive =
          std::count_if(devices.begin(), devices.end(), [](const SimDevice& d) { return d.alive; });
      if (event == 1 && alive > 0) {  // a device dies; its partial work is lost
        SimDevice& d = devices[uniform(0, uint32_t(devices.size() - 1))];
        if (d.alive) {
          d.alive = false;
          for (const WorkUnit& u : d.queue) late.push_back({d.id, u});
          d.queue.clear();
          s.deviceLost(d.id, at(t));
          ++losses;
        }
      } else if (event == 2 || alive == 0) {
        join();
      } else if (event == 3) {  // a device fails its current unit
        SimDevice& d = devices[uniform(0, uint32_t(devices.size() - 1))];
        if (d.alive && !d.queue.empty()) {
          EXPECT_TRUE(s.unitFailed(d.id, d.queue.front(), at(t)));
          ++failures;
          d.queue.pop_front();
          d.progress = 0;
        }
      } else if (event == 4) {  // cancel redundant copies
        for (SimDevice& d : devices) {
          if (!d.alive) continue;
          for (const WorkUnit& u : s.redundantUnits(d.id)) {
            auto it = std::find(d.queue.begin(), d.queue.end(), u);
            ASSERT_NE(it, d.queue.end());
            if (it == d.queue.begin()) d.progress = 0;
            d.queue.erase(it);
            EXPECT_TRUE(s.unitFailed(d.id, u, at(t)));
          }
        }
      }
      if (!late.empty() && uniform(1, 20) == 1) {
        EXPECT_FALSE(s.complete(late.back().first, late.back().second, at(t)));
        late.pop_back();
        ++lateResults;
      }
    }
    ASSERT_TRUE(s.done()) << "frame " << f.width << "x" << f.height << " spp " << f.spp;
    EXPECT_EQ(s.acceptedWork(), s.totalWork());
    EXPECT_EQ(s.stats().acceptedUnits, accepted);
    EXPECT_EQ(coverage.wrong(), 0u);
    expectFilmComplete(film);
    EXPECT_EQ(s.completedPasses(), s.passCount());
    EXPECT_EQ(progressive.committedSamples(), f.spp);
    EXPECT_EQ(progressive.committedSums(), film.sums());
    // Nothing more to hand out; stragglers still in flight are rejected.
    for (SimDevice& d : devices) {
      if (!d.alive) continue;
      EXPECT_FALSE(s.nextUnit(d.id, at(t)));
      for (const WorkUnit& u : d.queue) EXPECT_FALSE(s.complete(d.id, u, at(t)));
    }
    total.issuedUnits += s.stats().issuedUnits;
    total.duplicateUnits += s.stats().duplicateUnits;
    total.acceptedUnits += s.stats().acceptedUnits;
    total.rejectedResults += s.stats().rejectedResults;
    total.requeuedUnits += s.stats().requeuedUnits;
  }
  std::printf(
      "simulations: %llu units issued, %llu accepted, %llu duplicates, %llu rejected, "
      "%llu requeued; %llu devices lost, %llu units failed, %llu late results\n",
      (unsigned long long)total.issuedUnits, (unsigned long long)total.acceptedUnits,
      (unsigned long long)total.duplicateUnits, (unsigned long long)total.rejectedResults,
      (unsigned long long)total.requeuedUnits, (unsigned long long)losses,
      (unsigned long long)failures, (unsigned long long)lateResults);
  // The simulations exercised every path.
  EXPECT_GT(total.duplicateUnits, 100u);
  EXPECT_GT(total.requeuedUnits, 100u);
  EXPECT_GT(losses, 50u);
  EXPECT_GT(lateResults, 10u);
}

}  // namespace
}  // namespace pl

namespace pl {
namespace {

using namespace sim;

// The time limit (FrameSpec::deadline), on the manual clock: before the deadline nothing stops
// the frame; at the deadline without a complete pass it goes on; the first pass that completes
// after it ends the frame there, and no unit is handed out any more.
TEST(SchedulerTest, ADeadlineEndsTheFrameAtTheLastCompletePass) {
  FrameSpec frame{64, 64, 64, 64};
  frame.deadline = at(1000);
  SchedulerOptions options;
  options.firstPassSamples = 1;
  options.initialUnitWork = 64 * 64;  // one whole pass of one sample per unit at first
  options.maxCopies = 1;
  Scheduler s(frame, options);
  EXPECT_FALSE(s.finished(at(0)));
  EXPECT_FALSE(s.finished(at(1000)));  // due, but no pass is complete
  std::optional<WorkUnit> first = s.nextUnit(kA, at(0));
  ASSERT_TRUE(first);
  EXPECT_EQ(first->sampleBegin, 0u);
  EXPECT_EQ(first->sampleEnd, 1u);
  ASSERT_TRUE(s.complete(kA, *first, at(500)));
  EXPECT_EQ(s.completedSamples(), 1u);
  EXPECT_FALSE(s.finished(at(999)));  // a pass is complete, but the deadline has not come
  EXPECT_EQ(s.finishedSamples(at(999)), 64u);
  // Work goes on before the deadline: pass 1 ([1, 2)) is handed out and completes after it.
  std::optional<WorkUnit> second = s.nextUnit(kA, at(999));
  ASSERT_TRUE(second);
  EXPECT_EQ(s.passOf(*second), 1u);
  EXPECT_TRUE(s.finished(at(1000)));
  EXPECT_EQ(s.finishedSamples(at(1000)), 1u);
  EXPECT_FALSE(s.nextUnit(kB, at(1000)));  // nothing new once finished
  // A result in flight still counts, and may complete the next pass: the frame ends there.
  ASSERT_TRUE(s.complete(kA, *second, at(1200)));
  EXPECT_EQ(s.completedSamples(), 2u);
  EXPECT_EQ(s.finishedSamples(at(1200)), 2u);
  EXPECT_FALSE(s.done());
}

TEST(SchedulerTest, ADeadlineMissedByTheFirstPassWaitsForIt) {
  FrameSpec frame{32, 32, 8, 32};
  frame.deadline = at(10);
  SchedulerOptions options;
  options.firstPassSamples = 1;
  options.initialUnitWork = 16 * 16;  // a quarter of pass 0 per unit
  Scheduler s(frame, options);
  std::vector<WorkUnit> units;
  for (int64_t t = 0; s.completedPasses() == 0; t += 20) {
    std::optional<WorkUnit> u = s.nextUnit(kA, at(t));
    ASSERT_TRUE(u) << "the first pass must be handed out in full, deadline or not";
    ASSERT_TRUE(s.complete(kA, *u, at(t + 10)));
    EXPECT_EQ(s.finished(at(t + 10)), s.completedPasses() > 0);
  }
  EXPECT_EQ(s.finishedSamples(at(1000)), 1u);
}

TEST(SchedulerTest, UnitsWithPassesHoldAsManySumsAsColourUnits) {
  SchedulerOptions options;
  options.maxUnitPixels = 3000;
  options.initialUnitWork = 1u << 30;  // as large as allowed at once
  FrameSpec colour{256, 256, 1, 16};
  FrameSpec passes = colour;
  passes.channels = 10;
  EXPECT_FALSE(Scheduler::validateFrame(FrameSpec{8, 8, 1, 8, 0}).ok());
  EXPECT_FALSE(Scheduler::validateFrame(FrameSpec{8, 8, 1, 8, 65}).ok());
  Scheduler a(colour, options), b(passes, options);
  std::optional<WorkUnit> ua = a.nextUnit(kA, at(0)), ub = b.nextUnit(kA, at(0));
  ASSERT_TRUE(ua && ub);
  EXPECT_LE(ua->tile.pixelCount(), 3000u);
  EXPECT_GT(ua->tile.pixelCount(), 900u);
  EXPECT_LE(ub->tile.pixelCount(), 900u);  // 3000 * 3 / 10 pixels of 10 sums
}

}  // namespace
}  // namespace pl
