// renderLocal over several devices: the shared unit list, a failing device's units going to
// the others, and the image staying bitwise identical to a one-device render.

#include "core/render/local_render.h"

#include <gtest/gtest.h>

#include <atomic>

#include "core/render/cpu_device.h"
#include "core/scene/compile.h"

namespace pl {
namespace {

constexpr uint32_t kSize = 48;
constexpr uint32_t kSpp = 16;

std::shared_ptr<const RenderData> cornellBox() {
  CompileOptions options;
  options.width = options.height = kSize;
  Result<RenderData> data =
      loadAndCompile(PEERLIGHT_SOURCE_DIR "/scenes/cornell_box.gltf", options);
  EXPECT_TRUE(data.ok()) << data.error().message;
  if (!data.ok()) return nullptr;
  return std::make_shared<const RenderData>(std::move(data).value());
}

// A device that renders `goodUnits` units through a real CpuDevice, then fails for good.
class FailingDevice : public Device {
 public:
  explicit FailingDevice(int goodUnits) : inner_(1), goodUnits_(goodUnits) {}
  DeviceInfo info() const override { return inner_.info(); }
  Status load(std::shared_ptr<const RenderData> data) override { return inner_.load(data); }
  bool failed() const override { return failed_; }

 protected:
  Result<TileResult> renderUnit(const WorkUnit& unit, const RenderStop& stop) override {
    if (goodUnits_-- <= 0) {
      failed_ = true;
      return Error{"test device: simulated failure"};
    }
    return inner_.render(unit, stop);
  }

 private:
  CpuDevice inner_;
  std::atomic<int> goodUnits_;
  std::atomic<bool> failed_{false};
};

TEST(LocalRenderTest, SeveralDevicesGiveTheOneDeviceImage) {
  auto data = cornellBox();
  ASSERT_TRUE(data);
  const TilingOptions tiling{16, 4};

  CpuDevice single(2);
  ASSERT_TRUE(single.load(data).ok());
  Film reference(kSize, kSize, kSpp);
  ASSERT_TRUE(renderLocal(single, reference, tiling).ok());

  CpuDevice a(1), b(1), c(1);
  for (CpuDevice* d : {&a, &b, &c}) ASSERT_TRUE(d->load(data).ok());
  Film film(kSize, kSize, kSpp);
  Result<LocalRenderStats> stats = renderLocal({&a, &b, &c}, film, tiling);
  ASSERT_TRUE(stats.ok()) << stats.error().message;
  EXPECT_EQ(film.sums(), reference.sums());
  ASSERT_EQ(stats->devices.size(), 3u);
  uint64_t units = 0;
  for (const DeviceShare& share : stats->devices) units += share.units;
  EXPECT_EQ(units, splitIntoWorkUnits(kSize, kSize, kSpp, tiling).size());
  EXPECT_EQ(stats->samples, uint64_t(kSize) * kSize * kSpp);
}

TEST(LocalRenderTest, AFailedDevicesUnitsGoToTheOthers) {
  auto data = cornellBox();
  ASSERT_TRUE(data);
  const TilingOptions tiling{16, 4};
  CpuDevice single(2);
  ASSERT_TRUE(single.load(data).ok());
  Film reference(kSize, kSize, kSpp);
  ASSERT_TRUE(renderLocal(single, reference, tiling).ok());

  FailingDevice flaky(3);
  CpuDevice steady(1);
  ASSERT_TRUE(flaky.load(data).ok());
  ASSERT_TRUE(steady.load(data).ok());
  Film film(kSize, kSize, kSpp);
  Result<LocalRenderStats> stats = renderLocal({&flaky, &steady}, film, tiling);
  ASSERT_TRUE(stats.ok()) << stats.error().message;
  EXPECT_EQ(film.sums(), reference.sums());
  EXPECT_LE(stats->devices[0].units, 3u);
  EXPECT_NE(stats->devices[0].error.find("simulated failure"), std::string::npos);
  EXPECT_TRUE(stats->devices[1].error.empty());
}

TEST(LocalRenderTest, FailsWhenEveryDeviceFails) {
  auto data = cornellBox();
  ASSERT_TRUE(data);
  FailingDevice a(1), b(0);
  ASSERT_TRUE(a.load(data).ok());
  ASSERT_TRUE(b.load(data).ok());
  Film film(kSize, kSize, kSpp);
  Result<LocalRenderStats> stats = renderLocal({&a, &b}, film, TilingOptions{16, 4});
  ASSERT_FALSE(stats.ok());
  EXPECT_NE(stats.error().message.find("simulated failure"), std::string::npos);
}

}  // namespace
}  // namespace pl
