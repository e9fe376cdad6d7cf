// The CUDA device (gpu/cuda_device.h): clean errors everywhere; on a GPU, deterministic
// results and agreement with the CPU device within noise on real scenes.

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <string>

#include "core/render/cpu_device.h"
#include "core/scene/compile.h"
#include "gpu/cuda_device.h"
#include "gpu/cuda_devices.h"
#include "tests/gpu/block_compare.h"

namespace pl {
namespace {

std::string cornellBoxPath() { return PEERLIGHT_SOURCE_DIR "/scenes/cornell_box.gltf"; }
std::string helmetPath() {
  return PEERLIGHT_SHARED_DIR "/scenes/khronos-gltf/DamagedHelmet/glTF/DamagedHelmet.gltf";
}

std::shared_ptr<const RenderData> compileScene(const std::string& path, uint32_t size,
                                               bool whiteEnvironment = false) {
  CompileOptions options;
  options.width = options.height = size;
  if (whiteEnvironment) options.envColor = kernel::Vec3f{1.0f, 1.0f, 1.0f};
  Result<RenderData> data = loadAndCompile(path, options);
  EXPECT_TRUE(data.ok()) << data.error().message;
  if (!data.ok()) return nullptr;
  return std::make_shared<const RenderData>(std::move(data).value());
}

WorkUnit unit(uint32_t x, uint32_t y, uint32_t w, uint32_t h, uint32_t s0, uint32_t s1,
              uint32_t total) {
  return WorkUnit{Rect{x, y, w, h}, s0, s1, total};
}

// Runs everywhere: on machines without a GPU or driver this is the "zero GPUs" path.
TEST(CudaDevices, EnumerationNeverFails) {
  std::vector<DeviceInfo> gpus = enumerateCudaDevices();
  for (const DeviceInfo& gpu : gpus) {
    EXPECT_EQ(gpu.kind, "cuda");
    EXPECT_FALSE(gpu.name.empty());
    EXPECT_GT(gpu.memoryBytes, 0u);
    EXPECT_GE(gpu.computeMajor * 10 + gpu.computeMinor, 75);  // CUDA 13 needs Turing or newer
  }
  std::printf("  %zu CUDA GPU(s)\n", gpus.size());
}

TEST(CudaDevices, InvalidOrdinalIsAnErrorNotACrash) {
  for (int ordinal : {-1, 1000}) {
    Result<std::unique_ptr<Device>> device = makeCudaDevice(ordinal);
    ASSERT_FALSE(device.ok());
    EXPECT_NE(device.error().message.find("cuda:" + std::to_string(ordinal)), std::string::npos)
        << device.error().message;
  }
}

class GpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (enumerateCudaDevices().empty())
      GTEST_SKIP() << "no CUDA GPU on this machine (or no NVIDIA driver); GPU tests skipped";
    Result<std::unique_ptr<CudaDevice>> device = CudaDevice::open(0);
    ASSERT_TRUE(device.ok()) << device.error().message;
    gpu_ = std::move(device).value();
  }
  std::unique_ptr<CudaDevice> gpu_;
};

TEST_F(GpuTest, ReportsItsInfo) {
  DeviceInfo info = gpu_->info();
  EXPECT_EQ(info.kind, "cuda");
  EXPECT_EQ(info.ordinal, 0);
  EXPECT_FALSE(info.name.empty());
  EXPECT_GT(info.memoryBytes, uint64_t(1) << 30);
  EXPECT_NE(gpu_->label().find("cuda:0"), std::string::npos);
  std::printf("  %s, %.1f GiB, compute %d.%d\n", info.name.c_str(),
              double(info.memoryBytes) / (1 << 30), info.computeMajor, info.computeMinor);
}

// Mistakes of the caller are errors, and leave the device usable.
TEST_F(GpuTest, BadUseIsAnErrorButNotADeviceFailure) {
  EXPECT_FALSE(gpu_->render(unit(0, 0, 8, 8, 0, 1, 1)).ok());  // nothing loaded
  EXPECT_FALSE(gpu_->load(nullptr).ok());
  auto data = compileScene(cornellBoxPath(), 32);
  ASSERT_TRUE(data);
  auto broken = std::make_shared<RenderData>(*data);
  broken->triangles[0].v1 = 1u << 30;  // vertex index out of range
  Status s = gpu_->load(broken);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message.find("cuda:0"), std::string::npos) << s.error().message;
  EXPECT_FALSE(gpu_->failed());

  ASSERT_TRUE(gpu_->load(data).ok());
  EXPECT_FALSE(gpu_->render(unit(16, 16, 32, 32, 0, 1, 1)).ok());  // outside the image
  EXPECT_FALSE(gpu_->render(unit(0, 0, 32, 32, 4, 4, 8)).ok());    // empty sample range
  EXPECT_FALSE(gpu_->render(unit(0, 0, 0, 32, 0, 1, 1)).ok());     // empty tile
  EXPECT_FALSE(gpu_->failed());
  Result<TileResult> ok = gpu_->render(unit(0, 0, 32, 32, 0, 2, 2));
  ASSERT_TRUE(ok.ok()) << ok.error().message;
  EXPECT_EQ(ok->sums.size(), 32u * 32u * 3u);
  // At least one camera ray per sample.
  EXPECT_GE(ok->raysTraced, 32u * 32u * 2u);
}

// Determinism (docs/DESIGN.md section 4) on the GPU: the same unit twice gives the same bits,
// and so does any split of it into samples ranges and tiles (the kernel's per-pixel sample
// chunks are summed with integer atomics, whose order does not matter).
TEST_F(GpuTest, RendersAreBitwiseReproducibleAndSplitInvariant) {
  constexpr uint32_t kSize = 128, kSpp = 16;
  auto data = compileScene(cornellBoxPath(), kSize);
  ASSERT_TRUE(data);
  ASSERT_TRUE(gpu_->load(data).ok());
  Result<TileResult> a = gpu_->render(unit(0, 0, kSize, kSize, 0, kSpp, kSpp));
  Result<TileResult> b = gpu_->render(unit(0, 0, kSize, kSize, 0, kSpp, kSpp));
  ASSERT_TRUE(a.ok()) << a.error().message;
  ASSERT_TRUE(b.ok()) << b.error().message;
  EXPECT_TRUE(a->sums == b->sums) << "same unit, different bits";
  EXPECT_EQ(a->raysTraced, b->raysTraced);

  // Sample by sample (one sample per thread, stored without atomics) then summed.
  std::vector<int64_t> bySample(a->sums.size(), 0);
  for (uint32_t s = 0; s < kSpp; ++s) {
    Result<TileResult> r = gpu_->render(unit(0, 0, kSize, kSize, s, s + 1, kSpp));
    ASSERT_TRUE(r.ok()) << r.error().message;
    for (size_t i = 0; i < bySample.size(); ++i) bySample[i] += r->sums[i];
  }
  EXPECT_TRUE(bySample == a->sums) << "sample-by-sample sum differs from the whole unit";

  // 32x32 tiles (small tiles run many sample chunks per pixel).
  std::vector<int64_t> byTile(a->sums.size(), 0);
  for (uint32_t y = 0; y < kSize; y += 32) {
    for (uint32_t x = 0; x < kSize; x += 32) {
      Result<TileResult> r = gpu_->render(unit(x, y, 32, 32, 0, kSpp, kSpp));
      ASSERT_TRUE(r.ok()) << r.error().message;
      for (uint32_t ty = 0; ty < 32; ++ty)
        for (uint32_t tx = 0; tx < 32; ++tx)
          for (int c = 0; c < 3; ++c)
            byTile[((y + ty) * kSize + x + tx) * 3 + c] = r->sums[(ty * 32 + tx) * 3 + c];
    }
  }
  EXPECT_TRUE(byTile == a->sums) << "tiled render differs from the whole unit";
  EXPECT_FALSE(gpu_->failed());
}

// GPU vs CPU within noise: 16x16-pixel block means, tolerance from each render's own
// per-pixel variance (tests/gpu/block_compare.h explains the estimate). No block may be
// beyond 6 sigma, and at most 2% beyond 4 sigma (the noise is not exactly Gaussian:
// fireflies).
void compareWithCpu(CudaDevice& gpu, const std::string& path, bool whiteEnvironment) {
  if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " is missing";
  constexpr uint32_t kSize = 256, kHalf = 32;
  auto data = compileScene(path, kSize, whiteEnvironment);
  ASSERT_TRUE(data);
  ASSERT_TRUE(gpu.load(data).ok());
  CpuDevice cpu(0);
  ASSERT_TRUE(cpu.load(data).ok());
  std::vector<int64_t> g[2], c[2];
  for (uint32_t h = 0; h < 2; ++h) {
    WorkUnit u = unit(0, 0, kSize, kSize, h * kHalf, (h + 1) * kHalf, 2 * kHalf);
    Result<TileResult> rg = gpu.render(u);
    ASSERT_TRUE(rg.ok()) << rg.error().message;
    Result<TileResult> rc = cpu.render(u);
    ASSERT_TRUE(rc.ok()) << rc.error().message;
    g[h] = std::move(rg->sums);
    c[h] = std::move(rc->sums);
  }
  test::BlockComparison cmp =
      test::compareBlocks(kSize, kSize, 16, kHalf, g[0], g[1], c[0], c[1], 4.0);
  std::printf("  %s: mean %.5f (GPU) vs %.5f (CPU); max |z| %.2f, %u of %u block-channels "
              "over 4 sigma\n",
              std::filesystem::path(path).filename().c_str(), cmp.meanA, cmp.meanB, cmp.maxZ,
              cmp.overSoft, cmp.tests);
  EXPECT_GT(cmp.meanB, 1e-3) << "the CPU image is black: the comparison would prove nothing";
  EXPECT_LT(cmp.maxZ, 6.0) << cmp.worst;
  EXPECT_LE(cmp.overSoft, cmp.tests / 50) << cmp.worst;
  EXPECT_FALSE(gpu.failed());
}

TEST_F(GpuTest, MatchesCpuOnCornellBox) { compareWithCpu(*gpu_, cornellBoxPath(), false); }

TEST_F(GpuTest, MatchesCpuOnDamagedHelmet) {
  // Lit by a white environment (its own emission alone leaves it nearly black), so that
  // textures, normal maps and metal all show.
  compareWithCpu(*gpu_, helmetPath(), true);
}

TEST_F(GpuTest, ReloadingReplacesTheScene) {
  auto small = compileScene(cornellBoxPath(), 16);
  auto large = compileScene(cornellBoxPath(), 48);
  ASSERT_TRUE(small && large);
  ASSERT_TRUE(gpu_->load(small).ok());
  EXPECT_FALSE(gpu_->render(unit(0, 0, 48, 48, 0, 1, 1)).ok());
  ASSERT_TRUE(gpu_->load(large).ok());
  Result<TileResult> r = gpu_->render(unit(0, 0, 48, 48, 0, 1, 1));
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_GT(gpu_->loadStats().bvhNodes, 0u);
  EXPECT_GT(gpu_->loadStats().bytesUploaded, 0u);
}


// A device error (here: out of memory, provoked by taking nearly all GPU memory first) is a
// clean pl::Error naming the GPU, and it is sticky: the device reports failed() and refuses
// further work with the same message, and nothing crashes.
TEST_F(GpuTest, OutOfMemoryIsAStickyDeviceError) {
  auto cornell = compileScene(cornellBoxPath(), 32);
  ASSERT_TRUE(cornell);
  // The Cornell box plus an unreferenced 64 MiB texture, more than what will be left.
  auto big = std::make_shared<RenderData>(*cornell);
  big->textures.push_back(kernel::Texture{4096, 4096, uint32_t(big->texels.size()),
                                          kernel::kWrapRepeat, kernel::kWrapRepeat,
                                          kernel::kFilterLinear});
  big->textures.back().mipTexelOffset = uint32_t(big->mipTexels.size());  // no levels below 0
  big->texels.resize(big->texels.size() + 4096u * 4096u, kernel::Rgba8{1, 2, 3, 4});
  ASSERT_TRUE(big->validate().ok()) << big->validate().error().message;

  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  std::vector<void*> hog;
  for (size_t chunk : {size_t(1) << 30, size_t(256) << 20, size_t(16) << 20, size_t(1) << 20}) {
    void* p = nullptr;
    while (cudaMalloc(&p, chunk) == cudaSuccess) hog.push_back(p);
  }
  cudaGetLastError();
  ASSERT_FALSE(hog.empty());

  Status s = gpu_->load(big);
  for (void* p : hog) cudaFree(p);
  ASSERT_FALSE(s.ok()) << "a 64 MiB upload fit in a full GPU";
  std::printf("  %s\n", s.error().message.c_str());
  EXPECT_NE(s.error().message.find("cuda:0"), std::string::npos) << s.error().message;
  EXPECT_TRUE(gpu_->failed());
  // Sticky: even now that memory is free again, the device stays failed.
  Status again = gpu_->load(cornell);
  ASSERT_FALSE(again.ok());
  EXPECT_NE(again.error().message.find("failed earlier"), std::string::npos);
  Result<TileResult> r = gpu_->render(unit(0, 0, 8, 8, 0, 1, 1));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(gpu_->failed());

  // Another device object on the same GPU works: the error was the device's, not the process's.
  Result<std::unique_ptr<CudaDevice>> fresh = CudaDevice::open(0);
  ASSERT_TRUE(fresh.ok()) << fresh.error().message;
  ASSERT_TRUE((*fresh)->load(cornell).ok());
  EXPECT_TRUE((*fresh)->render(unit(0, 0, 32, 32, 0, 1, 1)).ok());
}

}  // namespace
}  // namespace pl
