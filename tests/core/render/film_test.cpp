#include "core/render/film.h"
#include "core/kernel/fixed_point.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "core/render/local_render.h"

namespace pl {
namespace {

// A deterministic fake result: sums depend on (pixel, channel, sample range) only.
TileResult fakeResult(const WorkUnit& unit) {
  TileResult r;
  r.unit = unit;
  r.sums.resize(unit.tile.pixelCount() * 3);
  size_t i = 0;
  for (uint32_t y = 0; y < unit.tile.height; ++y)
    for (uint32_t x = 0; x < unit.tile.width; ++x)
      for (uint32_t c = 0; c < 3; ++c) {
        int64_t v = 0;
        for (uint32_t s = unit.sampleBegin; s < unit.sampleEnd; ++s)
          v += int64_t((unit.tile.x + x) * 1000003u ^ (unit.tile.y + y) * 7919u ^ c * 31u ^
                       s * 2654435761u) & 0xffffff;
        r.sums[i++] = v;
      }
  return r;
}

TEST(FilmTest, MergeOrderDoesNotMatter) {
  const uint32_t w = 37, h = 23, spp = 12;
  TilingOptions tiling;
  tiling.tileSize = 8;
  tiling.samplesPerPass = 5;  // passes 5 + 5 + 2
  std::vector<WorkUnit> units = splitIntoWorkUnits(w, h, spp, tiling);
  Film ordered(w, h, spp);
  for (const WorkUnit& u : units) ASSERT_TRUE(ordered.add(fakeResult(u)).ok());

  std::mt19937 rng(42);
  std::shuffle(units.begin(), units.end(), rng);
  Film shuffled(w, h, spp);
  for (const WorkUnit& u : units) ASSERT_TRUE(shuffled.add(fakeResult(u)).ok());

  // One unit for everything.
  Film whole(w, h, spp);
  ASSERT_TRUE(whole.add(fakeResult(WorkUnit{Rect{0, 0, w, h}, 0, spp, spp})).ok());

  EXPECT_EQ(ordered.sums(), shuffled.sums());
  EXPECT_EQ(ordered.sums(), whole.sums());
  EXPECT_NE(std::count(whole.sums().begin(), whole.sums().end(), 0), int64_t(whole.sums().size()));
}

TEST(FilmTest, SplitCoversEveryPixelSampleOnce) {
  const uint32_t w = 70, h = 65, spp = 7;
  TilingOptions tiling;
  tiling.tileSize = 32;
  tiling.samplesPerPass = 3;
  std::vector<int> count(size_t(w) * h * spp, 0);
  for (const WorkUnit& u : splitIntoWorkUnits(w, h, spp, tiling)) {
    ASSERT_TRUE(u.validate(w, h).ok()) << u.describe();
    for (uint32_t y = u.tile.y; y < u.tile.y + u.tile.height; ++y)
      for (uint32_t x = u.tile.x; x < u.tile.x + u.tile.width; ++x)
        for (uint32_t s = u.sampleBegin; s < u.sampleEnd; ++s) ++count[(size_t(y) * w + x) * spp + s];
  }
  EXPECT_EQ(std::count(count.begin(), count.end(), 1), int64_t(count.size()));
}

TEST(FilmTest, RejectsResultsThatDoNotFit) {
  Film film(16, 16, 8);
  const std::vector<int64_t> before = film.sums();

  // Tile past the right edge.
  Status s = film.add(fakeResult(WorkUnit{Rect{10, 0, 8, 8}, 0, 8, 8}));
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message.find("outside"), std::string::npos) << s.error().message;
  // Tile starting outside.
  EXPECT_FALSE(film.add(fakeResult(WorkUnit{Rect{16, 0, 1, 1}, 0, 8, 8})).ok());
  // Empty tile.
  EXPECT_FALSE(film.add(fakeResult(WorkUnit{Rect{0, 0, 0, 4}, 0, 8, 8})).ok());
  // Wrong spp for this film.
  EXPECT_FALSE(film.add(fakeResult(WorkUnit{Rect{0, 0, 4, 4}, 0, 4, 4})).ok());
  // Sample range beyond the total.
  EXPECT_FALSE(film.add(fakeResult(WorkUnit{Rect{0, 0, 4, 4}, 4, 9, 8})).ok());
  // Sums of the wrong length.
  TileResult shortResult = fakeResult(WorkUnit{Rect{0, 0, 4, 4}, 0, 8, 8});
  shortResult.sums.pop_back();
  EXPECT_FALSE(film.add(shortResult).ok());
  // Sums no kernel can give (a broken or hostile node): negative, or beyond the per-sample
  // clamp times the samples (which could overflow the film).
  TileResult negative = fakeResult(WorkUnit{Rect{0, 0, 4, 4}, 0, 8, 8});
  negative.sums[5] = -1;
  EXPECT_FALSE(film.add(negative).ok());
  TileResult huge = fakeResult(WorkUnit{Rect{0, 0, 4, 4}, 0, 2, 8});
  huge.sums[0] = 2 * kernel::toFixed(kernel::kMaxSampleValue) + 1;
  s = film.add(huge);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message.find("outside 0.."), std::string::npos) << s.error().message;
  huge.sums[0] = 2 * kernel::toFixed(kernel::kMaxSampleValue);  // the brightest two samples
  Film other(16, 16, 8);
  EXPECT_TRUE(other.add(huge).ok());

  EXPECT_EQ(film.sums(), before);  // nothing changed
  EXPECT_TRUE(film.add(fakeResult(WorkUnit{Rect{8, 8, 8, 8}, 0, 8, 8})).ok());
  EXPECT_NE(film.sums(), before);
}

TEST(FilmTest, LinearRgbDividesBySpp) {
  Film film(1, 1, 4);
  TileResult r;
  r.unit = WorkUnit{Rect{0, 0, 1, 1}, 0, 4, 4};
  r.sums = {int64_t(16777216) * 2, int64_t(16777216), 0};  // 2.0, 1.0, 0.0 summed over 4
  ASSERT_TRUE(film.add(r).ok());
  std::vector<float> rgb = film.linearRgb();
  ASSERT_EQ(rgb.size(), 3u);
  EXPECT_FLOAT_EQ(rgb[0], 0.5f);
  EXPECT_FLOAT_EQ(rgb[1], 0.25f);
  EXPECT_FLOAT_EQ(rgb[2], 0.0f);
}

}  // namespace
}  // namespace pl
