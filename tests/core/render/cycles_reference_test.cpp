// Light transport against an independent renderer: the Cornell box rendered by Blender
// Cycles (../shared/reference/README.md: 512x512, 1024 spp, glTF BRDF, glTF camera, black
// world, 16 bounces, 1 px box filter) compared with ours on block averages of the linear
// image.
//
// Metric: the image is cut into 32x32 blocks (16x16 pixels of the 512x512 reference) and each
// block's mean R, G, B is compared.
//   relative RMS = sqrt(mean over blocks and channels of (ours - ref)^2) / mean(ref)
//   mean error   = |mean(ours) - mean(ref)| / mean(ref)          (whole image, all channels)
//   per-block    = sqrt(mean over blocks of ((ours - ref) / ref)^2), on each block's mean of
//                  R + G + B: each block's error relative to its own value, so that dim blocks
//                  count as much as bright ones (printed; bench/cycles_smith_study.sh uses it)
//
// Two variants, built from this file:
//   cycles_reference_test       (default set) 256x256 at 256 spp; 8x8-pixel blocks of it
//                               cover the same area as 16x16-pixel blocks of the reference (a
//                               1 px box filter at half resolution is the 2x2 average).
//   cycles_reference_slow_test  (label "slow") the reference's own 512x512 at 1024 spp.

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "core/render/cpu_device.h"
#include "core/render/image_io.h"
#include "core/render/local_render.h"
#include "core/scene/compile.h"

#ifndef PL_CYCLES_FULL
#define PL_CYCLES_FULL 0
#endif

namespace pl {
namespace {

constexpr uint32_t kBlocks = 32;  // per side
#if PL_CYCLES_FULL
constexpr uint32_t kSize = 512, kSpp = 1024;
#define PL_CYCLES_TEST_NAME CornellBox512At1024Spp
#else
constexpr uint32_t kSize = 256, kSpp = 256;
#define PL_CYCLES_TEST_NAME CornellBox256At256Spp
#endif
// Bounds, as the issue sets them. Noise is small next to them: two 256x256 256 spp renders
// with different seeds differ by 0.6% relative RMS (so one has about 0.4%). The BRDF weights
// diffuse and specular by Fresnel at the shading normal, as the reference does (see
// core/kernel/bsdf.h for why); with the specification's |wo.h| weighting this metric was 5.7%.
constexpr double kMaxRelativeRms = 0.03, kMaxMeanError = 0.015;

// Mean R, G, B of each of kBlocks x kBlocks blocks of a square image.
std::vector<double> blockMeans(const std::vector<float>& rgb, uint32_t size) {
  const uint32_t block = size / kBlocks;
  std::vector<double> out(kBlocks * kBlocks * 3, 0.0);
  for (uint32_t y = 0; y < size; ++y)
    for (uint32_t x = 0; x < size; ++x)
      for (uint32_t c = 0; c < 3; ++c)
        out[((y / block) * kBlocks + x / block) * 3 + c] += rgb[(size_t(y) * size + x) * 3 + c];
  for (double& v : out) v /= double(block) * block;
  return out;
}

TEST(CyclesReferenceTest, PL_CYCLES_TEST_NAME) {
  const std::string shared = PEERLIGHT_SHARED_DIR;
  const std::string scene = shared + "/scenes/cornell-box/gltf-derived/cornell_box.gltf";
  const std::string reference = shared + "/reference/cornell_box_1024spp.exr";
  if (!std::filesystem::exists(scene) || !std::filesystem::exists(reference))
    GTEST_SKIP() << "shared data not found (" << scene << ", " << reference << ")";

  Result<ImageRgb> ref = readExr(reference);
  ASSERT_TRUE(ref.ok()) << ref.error().message;
  ASSERT_EQ(ref->width, 512u);
  ASSERT_EQ(ref->height, 512u);

  CompileOptions options;
  options.width = options.height = kSize;
  options.envColor = kernel::Vec3f{0, 0, 0};
  // Cycles counts bounces after the first hit (0 = direct light only); maxDepth counts
  // scattering events (1 = direct light only).
  options.maxDepth = 17;
  Result<RenderData> data = loadAndCompile(scene, options);
  ASSERT_TRUE(data.ok()) << data.error().message;
  CpuDevice device(0);
  ASSERT_TRUE(device.load(std::make_shared<const RenderData>(std::move(data).value())).ok());
  Film film(kSize, kSize, kSpp);
  Result<LocalRenderStats> stats = renderLocal(device, film, TilingOptions{64, 16});
  ASSERT_TRUE(stats.ok()) << stats.error().message;

  std::vector<double> ours = blockMeans(film.linearRgb(), kSize);
  std::vector<double> theirs = blockMeans(ref->rgb, 512);
  double sqErr = 0, sumOurs = 0, sumTheirs = 0;
  double channelOurs[3] = {0, 0, 0}, channelTheirs[3] = {0, 0, 0};
  for (size_t i = 0; i < ours.size(); ++i) {
    sqErr += (ours[i] - theirs[i]) * (ours[i] - theirs[i]);
    sumOurs += ours[i];
    sumTheirs += theirs[i];
    channelOurs[i % 3] += ours[i];
    channelTheirs[i % 3] += theirs[i];
  }
  const double n = double(ours.size());
  const double meanRef = sumTheirs / n;
  double blockSq = 0;
  for (size_t b = 0; b < ours.size(); b += 3) {
    const double o = ours[b] + ours[b + 1] + ours[b + 2];
    const double t = theirs[b] + theirs[b + 1] + theirs[b + 2];
    blockSq += t > 0 ? (o - t) * (o - t) / (t * t) : 0.0;
  }
  const double perBlock = std::sqrt(blockSq / (n / 3));
  const double relativeRms = std::sqrt(sqErr / n) / meanRef;
  const double meanError = std::fabs(sumOurs - sumTheirs) / sumTheirs;
  std::printf("cornell box %ux%u %u spp in %.1f s (%.2f M samples/s, %u threads): relative RMS "
              "of 32x32 block means %.4f, per-block relative %.4f, mean ours %.5f ref %.5f "
              "(error %.4f); per channel R %.5f/%.5f G %.5f/%.5f B %.5f/%.5f\n",
              kSize, kSize, kSpp, stats->seconds, double(stats->samples) / stats->seconds / 1e6,
              device.info().threads, relativeRms, perBlock, sumOurs / n, meanRef, meanError,
              channelOurs[0] * 3 / n, channelTheirs[0] * 3 / n, channelOurs[1] * 3 / n,
              channelTheirs[1] * 3 / n, channelOurs[2] * 3 / n, channelTheirs[2] * 3 / n);
  EXPECT_LE(relativeRms, kMaxRelativeRms);
  EXPECT_LE(meanError, kMaxMeanError);
}

}  // namespace
}  // namespace pl
