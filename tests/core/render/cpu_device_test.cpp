#include "core/render/cpu_device.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <random>
#include <thread>

#include "core/render/local_render.h"
#include "core/render/ray_recorder.h"
#include "core/scene/compile.h"

namespace pl {
namespace {

constexpr uint32_t kSize = 64;
constexpr uint32_t kSpp = 64;

std::shared_ptr<const RenderData> cornellBox(uint32_t size) {
  CompileOptions options;
  options.width = options.height = size;
  Result<RenderData> data =
      loadAndCompile(PEERLIGHT_SOURCE_DIR "/scenes/cornell_box.gltf", options);
  EXPECT_TRUE(data.ok()) << data.error().message;
  if (!data.ok()) return nullptr;
  return std::make_shared<const RenderData>(std::move(data).value());
}

Film renderUnits(CpuDevice& device, const std::vector<WorkUnit>& units) {
  Film film(kSize, kSize, kSpp);
  for (const WorkUnit& unit : units) {
    Result<TileResult> result = device.render(unit);
    EXPECT_TRUE(result.ok()) << result.error().message;
    if (result.ok()) {
      EXPECT_TRUE(film.add(*result).ok());
    }
  }
  return film;
}

// The determinism contract (docs/DESIGN.md section 4): however the samples are split into
// work units and in whatever order they are merged, the film has the same bits.
TEST(CpuDeviceTest, AnySplitAndOrderGivesBitwiseIdenticalFilm) {
  auto data = cornellBox(kSize);
  ASSERT_TRUE(data);
  CpuDevice device(2);
  ASSERT_TRUE(device.load(data).ok());

  // One unit of 64 spp over the whole image.
  Film whole = renderUnits(device, {WorkUnit{Rect{0, 0, kSize, kSize}, 0, kSpp, kSpp}});

  // Eight units of 8 spp, merged in a shuffled order.
  std::vector<WorkUnit> passes;
  for (uint32_t s = 0; s < kSpp; s += 8)
    passes.push_back(WorkUnit{Rect{0, 0, kSize, kSize}, s, s + 8, kSpp});
  std::shuffle(passes.begin(), passes.end(), std::mt19937(7));
  Film shuffled = renderUnits(device, passes);

  // Sixteen 16x16 tiles of 64 spp.
  std::vector<WorkUnit> tiles;
  for (uint32_t y = 0; y < kSize; y += 16)
    for (uint32_t x = 0; x < kSize; x += 16) tiles.push_back(WorkUnit{Rect{x, y, 16, 16}, 0, kSpp, kSpp});
  Film tiled = renderUnits(device, tiles);

  // A single-threaded device, through the tiling helper (tiles and passes of uneven sizes).
  CpuDevice oneThread(1);
  ASSERT_TRUE(oneThread.load(data).ok());
  Film local(kSize, kSize, kSpp);
  ASSERT_TRUE(renderLocal(oneThread, local, TilingOptions{24, 5}).ok());

  EXPECT_TRUE(whole.sums() == shuffled.sums());
  EXPECT_TRUE(whole.sums() == tiled.sums());
  EXPECT_TRUE(whole.sums() == local.sums());

  // Not trivially equal: the image has light in it, and not the same in every pixel.
  std::vector<float> rgb = whole.linearRgb();
  double sum = 0;
  for (float v : rgb) sum += v;
  EXPECT_GT(sum / double(rgb.size()), 0.01);
  EXPECT_NE(*std::min_element(rgb.begin(), rgb.end()), *std::max_element(rgb.begin(), rgb.end()));
}

// prepareGeometry() ahead of a load (a node decoding a scene as it arrives): the load reuses the
// BVH built then, and renders the same bits as a device that loaded the data alone. Geometry
// it was not prepared for is built again.
TEST(CpuDeviceTest, GeometryPreparedAheadIsReusedByTheLoad) {
  auto data = cornellBox(kSize);
  const WorkUnit unit{Rect{8, 8, 16, 16}, 0, 4, 4};
  CpuDevice plain(2);
  ASSERT_TRUE(plain.load(data).ok());
  const std::vector<int64_t> expected = plain.render(unit).value().sums;

  CpuDevice device(2);
  RenderData geometryOnly;  // what a node holds while the rest of the scene still arrives
  geometryOnly.positions = data->positions;
  geometryOnly.triangles = data->triangles;
  geometryOnly.meshes = data->meshes;
  device.prepareGeometry(geometryOnly);
  ASSERT_TRUE(device.load(data).ok());
  ASSERT_NE(device.embreeScene(), nullptr);
  EXPECT_TRUE(device.embreeScene()->buildStats().staticReused);
  EXPECT_EQ(device.embreeScene()->buildStats().trianglesBuilt, 0u);
  EXPECT_EQ(device.render(unit).value().sums, expected);

  RenderData moved = *data;
  moved.positions[0].y += 0.01f;
  device.prepareGeometry(geometryOnly);  // not the geometry loaded next
  ASSERT_TRUE(device.load(std::make_shared<const RenderData>(moved)).ok());
  EXPECT_FALSE(device.embreeScene()->buildStats().staticReused);
  // Prepared for other geometry than the load's, which the device has loaded: that is reused.
  RenderData movedGeometry = geometryOnly;
  movedGeometry.positions[1].y += 0.02f;
  device.prepareGeometry(movedGeometry);
  ASSERT_TRUE(device.load(std::make_shared<const RenderData>(moved)).ok());
  EXPECT_TRUE(device.embreeScene()->buildStats().staticReused);
}

TEST(CpuDeviceTest, RejectsBadWorkUnitsAndKeepsWorking) {
  CpuDevice device(2);
  WorkUnit good{Rect{8, 8, 8, 8}, 0, 4, 4};
  Result<TileResult> early = device.render(good);
  ASSERT_FALSE(early.ok());
  EXPECT_NE(early.error().message.find("before load"), std::string::npos);

  EXPECT_FALSE(device.load(nullptr).ok());
  ASSERT_TRUE(device.load(cornellBox(kSize)).ok());

  Result<TileResult> before = device.render(good);
  ASSERT_TRUE(before.ok()) << before.error().message;
  EXPECT_GT(before->raysTraced, 0u);

  Result<TileResult> outside = device.render(WorkUnit{Rect{60, 0, 8, 8}, 0, 4, 4});
  ASSERT_FALSE(outside.ok());
  EXPECT_NE(outside.error().message.find("outside the 64x64 image"), std::string::npos)
      << outside.error().message;
  EXPECT_NE(outside.error().message.find("tile 60,0 8x8"), std::string::npos);
  EXPECT_FALSE(device.render(WorkUnit{Rect{64, 64, 1, 1}, 0, 4, 4}).ok());
  EXPECT_FALSE(device.render(WorkUnit{Rect{0, 0, 8, 8}, 4, 4, 4}).ok());   // no samples
  EXPECT_FALSE(device.render(WorkUnit{Rect{0, 0, 8, 8}, 0, 5, 4}).ok());   // past total
  EXPECT_FALSE(device.failed());

  Result<TileResult> after = device.render(good);
  ASSERT_TRUE(after.ok()) << after.error().message;
  EXPECT_EQ(after->sums, before->sums);
  EXPECT_EQ(after->raysTraced, before->raysTraced);

  // Bad data is refused and the previous data stays loaded.
  auto broken = std::make_shared<RenderData>(*device.data());
  broken->triangles[0].v1 = uint32_t(broken->positions.size()) + 5;
  Status s = device.load(broken);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message.find("invalid render data"), std::string::npos) << s.error().message;
  Result<TileResult> again = device.render(good);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->sums, before->sums);
}

// A stopped unit ends with an error naming it, is not a device failure, and leaves nothing
// behind: the next unit renders the same bits as on a fresh device. A stop requested while the
// unit renders (from another thread) ends it too.
TEST(CpuDeviceTest, StoppedUnitEndsWithAnErrorAndTheDeviceGoesOn) {
  auto data = cornellBox(kSize);
  ASSERT_TRUE(data);
  CpuDevice device(2);
  ASSERT_TRUE(device.load(data).ok());
  const WorkUnit unit{Rect{0, 0, kSize, kSize}, 0, 4, 4};
  std::atomic<uint64_t> epoch{1};
  Result<TileResult> stopped = device.render(unit, RenderStop(epoch, 0));
  ASSERT_FALSE(stopped.ok());
  EXPECT_NE(stopped.error().message.find(unit.describe()), std::string::npos)
      << stopped.error().message;
  EXPECT_NE(stopped.error().message.find("stopped"), std::string::npos);
  EXPECT_FALSE(device.failed());

  Result<TileResult> after = device.render(unit, RenderStop(epoch, 1));  // not stopped
  ASSERT_TRUE(after.ok()) << after.error().message;
  CpuDevice fresh(1);
  ASSERT_TRUE(fresh.load(data).ok());
  EXPECT_TRUE(after->sums == fresh.render(unit).value().sums);

  // Minutes of work at 2^16 spp: stopped from another thread after it started.
  const WorkUnit huge{Rect{0, 0, kSize, kSize}, 0, 1u << 16, 1u << 16};
  std::thread stopper([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    epoch = 2;
  });
  Result<TileResult> midway = device.render(huge, RenderStop(epoch, 1));
  stopper.join();
  EXPECT_FALSE(midway.ok());
  EXPECT_FALSE(device.failed());
}

TEST(CpuDeviceTest, InfoDescribesTheCpu) {
  CpuDevice device(3);
  DeviceInfo info = device.info();
  EXPECT_EQ(info.kind, "cpu");
  EXPECT_EQ(info.threads, 3u);
  EXPECT_FALSE(info.name.empty());
  EXPECT_GT(info.memoryBytes, uint64_t(1) << 20);
}

TEST(CpuDeviceTest, RecordedRaysMatchTheRenderer) {
  CpuDevice device(2);
  ASSERT_TRUE(device.load(cornellBox(kSize)).ok());
  const Rect tile{16, 16, 16, 16};
  Result<TileResult> result = device.render(WorkUnit{tile, 0, 2, 2});
  ASSERT_TRUE(result.ok());
  std::vector<RecordedRay> rays =
      recordRays(*device.data(), *device.embreeScene(), tile, 0, 2, size_t(1) << 30);
  EXPECT_EQ(rays.size(), result->raysTraced);
  BareTraceStats bare =
      traceBare(*device.data(), *device.embreeScene(), rays, device.threadPool(), 0.0);
  EXPECT_EQ(bare.rays, rays.size());
  uint64_t pathRays = 0;
  for (const RecordedRay& r : rays) pathRays += !r.shadow;
  EXPECT_GE(pathRays, tile.pixelCount() * 2);  // at least the camera ray of every sample
  // Camera rays through the middle of the image all hit the box's back wall.
  EXPECT_GE(bare.hits, tile.pixelCount() * 2);
  EXPECT_LE(bare.hits, rays.size());
}

}  // namespace
}  // namespace pl
