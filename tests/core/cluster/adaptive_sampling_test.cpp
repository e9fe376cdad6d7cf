// Adaptive sampling (--noise-threshold): the scheduler's retiring of tiles at pass ends
// (Scheduler::decide), the film's noise estimate and retired pixels (ProgressiveFilm), and the
// two together (commitNextPass), on the manual clock with simulated devices.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>

#include "core/cluster/pass_commit.h"
#include "core/cluster/scheduler.h"
#include "core/kernel/fixed_point.h"
#include "core/render/progressive_film.h"
#include "tests/core/cluster/scheduler_sim.h"

namespace pl {
namespace {

using namespace sim;

constexpr DeviceId kA{1}, kB{2}, kC{3};

uint32_t hash3(uint32_t a, uint32_t b, uint32_t c) {
  uint32_t h = a * 0x9E3779B1u ^ (b + 0x7F4A7C15u) * 0x85EBCA77u ^ (c + 0x165667B1u) * 0xC2B2AE3Du;
  h ^= h >> 15;
  h *= 0x2C1B3C6Du;
  h ^= h >> 12;
  return h;
}

// A random cluster: devices of random speeds join, die (their late results arrive and are
// rejected) and fail units while the frame renders. Calls onAccepted(unit) for each accepted
// result and afterResult() after every result.
template <typename OnAccepted, typename AfterResult>
void simulate(Scheduler& s, std::mt19937& rng, OnAccepted&& onAccepted, AfterResult&& afterResult) {
  auto uniform = [&](uint32_t lo, uint32_t hi) {
    return std::uniform_int_distribution<uint32_t>(lo, hi)(rng);
  };
  std::vector<SimDevice> devices;
  auto join = [&] { joinRandomDevice(s, devices, rng); };
  for (uint32_t i = uniform(1, 4); i > 0; --i) join();
  for (int64_t t = 0; !s.done() && t < 400000; ++t) {
    step(s, devices, t, [&](SimDevice&, const WorkUnit& u, bool ok) {
      if (ok) onAccepted(u);
      afterResult();
    });
    const uint32_t event = uniform(1, 80);
    if (event == 1) {
      SimDevice& d = devices[uniform(0, uint32_t(devices.size() - 1))];
      if (d.alive) {
        d.alive = false;
        s.deviceLost(d.id, at(t));
        for (const WorkUnit& u : d.queue) EXPECT_FALSE(s.complete(d.id, u, at(t)));
        d.queue.clear();
      }
    } else if (event == 2 || std::none_of(devices.begin(), devices.end(),
                                          [](const SimDevice& d) { return d.alive; })) {
      join();
    } else if (event == 3) {
      SimDevice& d = devices[uniform(0, uint32_t(devices.size() - 1))];
      if (d.alive && !d.queue.empty()) {
        EXPECT_TRUE(s.unitFailed(d.id, d.queue.front(), at(t)));
        d.queue.pop_front();
        d.progress = 0;
      }
    }
  }
}

// Tiles retire at random pass ends (a rule of the tile, the pass and the seed). Every sample
// that counts (pixel in a tile, sample below the end of the tile's last pass) is accepted
// exactly once, and the film holds exactly those samples per pixel.
TEST(AdaptiveSamplingTest, RetiredTilesTakeNoLaterPassAndTheRestIsCoveredOnce) {
  uint64_t retired = 0, wasted = 0;
  for (uint32_t seed = 1; seed <= 120; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937 rng(seed);
    auto uniform = [&](uint32_t lo, uint32_t hi) {
      return std::uniform_int_distribution<uint32_t>(lo, hi)(rng);
    };
    FrameSpec f{uniform(1, 120), uniform(1, 90), uniform(1, 70), uniform(4, 32)};
    f.adaptive = true;
    f.adaptiveMinSamples = uniform(1, 8);
    SchedulerOptions options;
    options.firstPassSamples = uniform(1, 4);
    options.targetUnitMs = uniform(20, 300);
    options.initialUnitWork = uniform(1, 20000);
    options.maxCopies = uniform(1, 3);
    Scheduler s(f, options);
    ProgressiveFilm film(f.width, f.height, f.spp);
    std::vector<uint8_t> count(size_t(f.width) * f.height * f.spp, 0);
    std::vector<WorkUnit> accepted;
    uint32_t decisions = 0;

    auto onAccepted = [&](const WorkUnit& u) {
      ASSERT_TRUE(film.add(syntheticResult(u), s.passOf(u)).ok());
      accepted.push_back(u);
    };
    auto afterResult = [&] {
      while (film.committedPasses() < s.completedPasses()) {
        const uint32_t pass = film.committedPasses();
        std::vector<uint32_t> done;
        const bool judge = s.pendingDecision() == pass;
        if (judge)
          for (uint32_t t = 0; t < s.tileCount(); ++t)
            if (s.tileActive(t, pass) && hash3(t, pass, seed) % 3 == 0) done.push_back(t);
        film.commit(pass + 1, s.passRange(pass).second);
        for (uint32_t t : done) film.retire(s.tile(t));
        if (judge) {
          s.decide(pass, done);
          ++decisions;
          for (uint32_t t : done) EXPECT_FALSE(s.tileActive(t, pass + 1));
        }
      }
    };
    simulate(s, rng, onAccepted, afterResult);
    ASSERT_TRUE(s.done()) << f.width << "x" << f.height << " spp " << f.spp;
    EXPECT_EQ(s.acceptedWork(), s.totalWork());
    retired += s.stats().retiredTiles;

    // The samples that count, each exactly once.
    std::vector<uint32_t> tileEnd(s.tileCount());
    for (uint32_t t = 0; t < s.tileCount(); ++t) {
      uint32_t last = 0;
      while (last + 1 < s.passCount() && s.tileActive(t, last + 1)) ++last;
      tileEnd[t] = s.passRange(last).second;
    }
    auto tileOf = [&](uint32_t x, uint32_t y) {
      const uint32_t tilesX = (f.width + f.tileSize - 1) / f.tileSize;
      return (y / f.tileSize) * tilesX + x / f.tileSize;
    };
    for (const WorkUnit& u : accepted)
      for (uint32_t y = u.tile.y; y < u.tile.y + u.tile.height; ++y)
        for (uint32_t x = u.tile.x; x < u.tile.x + u.tile.width; ++x)
          for (uint32_t smp = u.sampleBegin; smp < u.sampleEnd; ++smp) {
            if (smp < tileEnd[tileOf(x, y)])
              ++count[(size_t(y) * f.width + x) * f.spp + smp];
            else
              ++wasted;
          }
    size_t wrong = 0;
    for (uint32_t y = 0; y < f.height; ++y)
      for (uint32_t x = 0; x < f.width; ++x)
        for (uint32_t smp = 0; smp < f.spp; ++smp)
          wrong += count[(size_t(y) * f.width + x) * f.spp + smp] !=
                   (smp < tileEnd[tileOf(x, y)] ? 1 : 0);
    EXPECT_EQ(wrong, 0u);

    // The film holds exactly samples [0, end of the tile's last pass) of each pixel.
    const Film image = film.snapshot();
    size_t bad = 0;
    for (uint32_t y = 0; y < f.height; ++y)
      for (uint32_t x = 0; x < f.width; ++x) {
        const size_t p = size_t(y) * f.width + x;
        const int64_t n = tileEnd[tileOf(x, y)];
        bad += image.samplesAt(p) != n || image.sums()[p * 3] != n ||
               image.sums()[p * 3 + 1] != n * (n - 1) / 2 ||
               image.sums()[p * 3 + 2] != (n - 1) * n * (2 * n - 1) / 6;
      }
    EXPECT_EQ(bad, 0u);
  }
  std::printf("adaptive simulations: %llu tiles retired, %llu pixel samples rendered in vain\n",
              (unsigned long long)retired, (unsigned long long)wasted);
  EXPECT_GT(retired, 500u);
}

// Units of pass k+2 wait for pass k's decision (one pass of speculation at most), and an idle
// device meanwhile duplicates the unit that holds the pass back.
TEST(AdaptiveSamplingTest, APassTwoAheadWaitsForTheDecision) {
  FrameSpec f{64, 64, 64, 32};
  f.adaptive = true;
  f.adaptiveMinSamples = 2;  // judged from pass 1 ([1, 2)) on
  SchedulerOptions options;
  options.firstPassSamples = 1;
  options.initialUnitWork = 32 * 32;  // one tile, one sample, always
  options.growthFactor = 1;
  options.defaultMaxInFlight = 1;
  Scheduler s(f, options);
  // Pass 0 and pass 1 (4 tiles each), all but one unit of pass 1 on A; the last one on B.
  std::vector<WorkUnit> units;
  for (int i = 0; i < 7; ++i) {
    std::optional<WorkUnit> u = s.nextUnit(kA, at(i));
    ASSERT_TRUE(u);
    ASSERT_TRUE(s.complete(kA, *u, at(i)));
  }
  std::optional<WorkUnit> straggler = s.nextUnit(kB, at(7));
  ASSERT_TRUE(straggler);
  EXPECT_EQ(s.passOf(*straggler), 1u);
  // A cuts pass 2, samples [2, 4) (speculative: its tiles are not decided yet), 8 units...
  std::optional<WorkUnit> next;
  int pass2 = 0;
  for (int64_t t = 8; (next = s.nextUnit(kA, at(t))) && s.passOf(*next) == 2; ++t, ++pass2)
    ASSERT_TRUE(s.complete(kA, *next, at(t)));
  EXPECT_EQ(pass2, 8);
  // ...but not pass 3: it gets a copy of the straggler instead.
  ASSERT_TRUE(next);
  EXPECT_EQ(*next, *straggler);
  EXPECT_EQ(s.stats().duplicateUnits, 1u);
  ASSERT_TRUE(s.complete(kA, *next, at(21)));
  EXPECT_EQ(s.completedPasses(), 2u);
  ASSERT_EQ(s.pendingDecision(), std::optional<uint32_t>(1));
  EXPECT_FALSE(s.nextUnit(kC, at(22))) << "pass 3 before pass 1 is decided";
  // Tiles 0 and 3 are done: pass 2 is complete with tiles 1 and 2 (tile 0's and 3's pass-2
  // samples, rendered already, do not count), and pass 3 takes only tiles 1 and 2.
  s.decide(1, {0, 3});
  EXPECT_EQ(s.completedPasses(), 3u);
  EXPECT_EQ(s.pendingDecision(), std::optional<uint32_t>(2));
  EXPECT_EQ(s.totalWork(), 64u * 64 * 2 + 2u * 32 * 32 * 62);
  s.decide(2, {});
  std::optional<WorkUnit> third = s.nextUnit(kC, at(23));
  ASSERT_TRUE(third);
  EXPECT_EQ(s.passOf(*third), 3u);
  EXPECT_TRUE(third->tile == s.tile(1) || third->tile == s.tile(2)) << third->describe();
}

// Scattered clean tiles do not cut a fast device's work into tile-sized units: a run passes
// over retired tiles while they are at most half its pixels. Here every other tile retires at
// 8 spp (a checkerboard): each later pass of a 1024x512 frame goes in at most one unit per row
// of tiles (32; a unit per active tile would be 1024), and passes 0 and 1 in one each.
TEST(AdaptiveSamplingTest, ScatteredCleanTilesDoNotCutTheWorkIntoTiles) {
  FrameSpec f{1024, 512, 64, 16};
  f.adaptive = true;
  SchedulerOptions options;
  options.firstPassSamples = 4;
  options.initialUnitWork = uint64_t(1) << 40;  // as much as a unit may hold
  options.defaultMaxInFlight = 1;
  Scheduler s(f, options);
  std::map<uint32_t, int> unitsPerPass;
  for (int64_t t = 0; !s.done(); ++t) {
    std::optional<WorkUnit> u = s.nextUnit(kA, at(t));
    ASSERT_TRUE(u) << "at " << t;
    ++unitsPerPass[s.passOf(*u)];
    ASSERT_TRUE(s.complete(kA, *u, at(t)) || s.completedPasses() > s.passOf(*u));
    if (std::optional<uint32_t> pass = s.pendingDecision()) {
      std::vector<uint32_t> done;
      if (*pass == 1)
        for (uint32_t i = 0; i < s.tileCount(); ++i)
          if ((i + i / 64) % 2 == 0) done.push_back(i);  // a checkerboard of 16x16 tiles
      s.decide(*pass, done);
    }
  }
  EXPECT_EQ(s.stats().retiredTiles, s.tileCount() / 2);
  for (const auto& [pass, units] : unitsPerPass)
    EXPECT_LE(units, pass <= 1 ? 1 : 32) << "pass " << pass;
}

// A pixel's samples: flat (0.5) in the left half of the image, noisy around 0.5 in the right.
TileResult halfNoisyResult(const WorkUnit& u, uint32_t width) {
  TileResult r;
  r.unit = u;
  for (uint32_t y = u.tile.y; y < u.tile.y + u.tile.height; ++y)
    for (uint32_t x = u.tile.x; x < u.tile.x + u.tile.width; ++x) {
      int64_t sum = 0;
      for (uint32_t smp = u.sampleBegin; smp < u.sampleEnd; ++smp) {
        double v = 0.5;
        if (x >= width / 2) v += 0.4 * (double(hash3(x, y, smp) % 2001) / 1000.0 - 1.0);
        sum += kernel::toFixed(float(v));
      }
      r.sums.insert(r.sums.end(), {sum, sum, sum});
    }
  return r;
}

// The frame rendered until clean (threshold 0.03) by a random simulated cluster, with
// halfNoisyResult() as the renderer and commitNextPass() judging the passes.
Film renderUntilClean(const FrameSpec& f, SchedulerOptions options, uint32_t seed,
                      uint64_t* retiredTiles = nullptr) {
  std::mt19937 rng(seed);
  options.targetUnitMs = std::uniform_int_distribution<int>(20, 300)(rng);
  Scheduler s(f, options);
  ProgressiveFilm film(f.width, f.height, f.spp);
  simulate(
      s, rng,
      [&](const WorkUnit& u) {
        ASSERT_TRUE(film.add(halfNoisyResult(u, f.width), s.passOf(u)).ok());
      },
      [&] {
        while (commitNextPass(s, film, 0.03)) {
        }
      });
  EXPECT_TRUE(s.done());
  if (retiredTiles != nullptr) *retiredTiles = s.stats().retiredTiles;
  return film.snapshot();
}

// commitNextPass with the film's noise estimate: flat tiles retire at the first decision (8
// samples), noisy ones go on; and the image (sums and samples per pixel) is the same whatever
// the devices, their speeds, losses and failures.
TEST(AdaptiveSamplingTest, TheImageDoesNotDependOnDevicesOrTiming) {
  FrameSpec f{96, 64, 256, 16};
  f.adaptive = true;
  SchedulerOptions options;
  options.firstPassSamples = 2;
  uint64_t retired = 0;
  const Film first = renderUntilClean(f, options, 1, &retired);
  // Flat tiles: samples [0, 8) (judged first at 8); noisy ones more.
  uint32_t flatSamples = 0, noisyMin = 1u << 30;
  for (uint32_t x = 0; x < f.width; ++x) {
    if (x < f.width / 2)
      flatSamples = std::max(flatSamples, first.samplesAt(x));
    else
      noisyMin = std::min(noisyMin, first.samplesAt(x));
  }
  EXPECT_EQ(flatSamples, 8u);
  EXPECT_GT(noisyMin, 8u);
  EXPECT_GE(retired, 12u);  // the 12 flat tiles at least
  for (uint32_t seed = 2; seed <= 12; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    const Film image = renderUntilClean(f, options, seed);
    EXPECT_EQ(image.sums(), first.sums());
    EXPECT_EQ(image.pixelSamples(), first.pixelSamples());
  }
}

// A session's passes (1, 2, 4, ... samples) and a render's (4, 8, 16, ...) judge the tiles at
// the same sample counts (8, 16, ...), so `session` then `save` gives the image of `render`.
TEST(AdaptiveSamplingTest, FirstPassesOfOneAndFourSamplesGiveOneImage) {
  FrameSpec f{80, 48, 200, 16};
  f.adaptive = true;
  SchedulerOptions session, render;
  session.firstPassSamples = 1;
  render.firstPassSamples = 4;
  const Film a = renderUntilClean(f, session, 3);
  const Film b = renderUntilClean(f, render, 4);
  EXPECT_EQ(a.sums(), b.sums());
  EXPECT_EQ(a.pixelSamples(), b.pixelSamples());
  EXPECT_FALSE(a.pixelSamples().empty());
}

}  // namespace
}  // namespace pl
