#include "core/render/cpu_device.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <fstream>

#include "core/kernel/integrator.h"
#include "core/util/log.h"
#include "core/util/system.h"

namespace pl {

namespace {
// Pixels are handed to threads in blocks of this size: small enough to balance 2..64 threads
// over a 64x64 tile, large enough that the atomic counter costs nothing.
constexpr uint32_t kBlockSize = 8;
}  // namespace

std::string cpuModelName() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      size_t colon = line.find(':');
      if (colon == std::string::npos) break;
      size_t begin = line.find_first_not_of(" \t", colon + 1);
      return begin == std::string::npos ? std::string("unknown CPU") : line.substr(begin);
    }
  }
  return "unknown CPU";
}

CpuDevice::CpuDevice(uint32_t threads) : pool_(threads) {}

CpuDevice::~CpuDevice() = default;

DeviceInfo cpuDeviceInfo(uint32_t threads) {
  DeviceInfo info;
  info.kind = "cpu";
  info.name = cpuModelName();
  info.memoryBytes = physicalMemoryBytes();
  info.threads = threads;
  return info;
}

DeviceInfo CpuDevice::info() const { return cpuDeviceInfo(pool_.threadCount()); }

Status CpuDevice::load(std::shared_ptr<const RenderData> data) {
  if (!data) return Error{"cpu device: no render data given"};
  if (Status s = data->validate(); !s.ok())
    return Error{"cpu device: invalid render data: " + s.error().message};
  // The previous scene's static part is reused when only a camera, a material, a light or a
  // moved object changed (embree_tracer.h).
  const auto start = std::chrono::steady_clock::now();
  std::unique_ptr<EmbreeScene> prepared = std::move(prepared_);  // only ever for this load
  auto embree = EmbreeScene::build(*data, pool_.threadCount(), embree_.get(), prepared.get());
  if (!embree.ok()) return Error{"cpu device: " + embree.error().message};
  const EmbreeScene::BuildStats& built = (*embree)->buildStats();
  PL_LOG_DEBUG(
      "cpu device: BVH over %llu of %u triangles in %.1f ms (static part %s, %u dynamic meshes)",
      (unsigned long long)built.trianglesBuilt, (*embree)->triangleCount(),
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count(),
      built.staticReused ? "reused" : "built", built.dynamicMeshes);
  // The new scene holds copies of what it reads: the old data may go first.
  embree_ = std::move(embree).value();
  data_ = std::move(data);
  camera_ = data_->camera[0];
  return Status();
}

void CpuDevice::prepareGeometry(const RenderData& data) {
  const auto start = std::chrono::steady_clock::now();
  auto embree = EmbreeScene::build(data, pool_.threadCount(), embree_.get());
  if (!embree.ok()) {
    PL_LOG_DEBUG("cpu device: no BVH ahead of the load: %s", embree.error().message.c_str());
    prepared_.reset();
    return;
  }
  PL_LOG_DEBUG("cpu device: BVH over %llu triangles ahead of the load in %.1f ms",
               (unsigned long long)(*embree)->buildStats().trianglesBuilt,
               std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                   .count());
  prepared_ = std::move(embree).value();
}

Status CpuDevice::setCamera(const kernel::Camera& camera) {
  if (!data_) return Error{"cpu device: setCamera() before load()"};
  // The loaded data with the new camera must still be valid data (same checks, same words).
  if (Status s = validateCamera(camera); !s.ok()) return Error{"cpu device: " + s.error().message};
  camera_ = camera;
  return Status();
}

Result<TileResult> CpuDevice::renderUnit(const WorkUnit& unit, const RenderStop& stop) {
  if (failed_) return Error{"cpu device: failed earlier; no more work"};
  if (!data_) return Error{"cpu device: render(" + unit.describe() + ") before load()"};
  const kernel::Camera& camera = camera_;
  if (Status s = unit.validate(camera.width, camera.height); !s.ok())
    return Error{"cpu device: " + s.error().message};

  TileResult result;
  result.unit = unit;
  const uint32_t channels = kernel::filmChannels(camera.passes);
  result.sums.assign(unit.tile.pixelCount() * channels, 0);

  kernel::SceneView view = data_->view();
  view.camera = &camera_;
  const EmbreeTracer tracer = embree_->tracer(&view);
  const uint32_t blocksX = (unit.tile.width + kBlockSize - 1) / kBlockSize;
  const uint32_t blocksY = (unit.tile.height + kBlockSize - 1) / kBlockSize;
  std::atomic<uint64_t> rays{0};
  std::atomic<bool> stopped{false};
  int64_t* sums = result.sums.data();

  // A stop is seen before each pixel (one relaxed load): the rest of the unit is skipped.
  pool_.parallelFor(blocksX * blocksY, [&](uint32_t block, uint32_t) {
    const uint32_t bx = (block % blocksX) * kBlockSize;
    const uint32_t by = (block / blocksX) * kBlockSize;
    const uint32_t xEnd = std::min(bx + kBlockSize, unit.tile.width);
    const uint32_t yEnd = std::min(by + kBlockSize, unit.tile.height);
    uint64_t blockRays = 0;
    for (uint32_t y = by; y < yEnd; ++y) {
      for (uint32_t x = bx; x < xEnd; ++x) {
        if (stop.requested()) {
          stopped.store(true, std::memory_order_relaxed);
          return;
        }
        uint32_t pixelRays = 0;
        int64_t* out = sums + (size_t(y) * unit.tile.width + x) * channels;
        kernel::renderPixel(view, tracer, unit.tile.x + x, unit.tile.y + y, unit.sampleBegin,
                            unit.sampleEnd, out, &pixelRays);
        blockRays += pixelRays;
      }
    }
    rays.fetch_add(blockRays, std::memory_order_relaxed);
  });
  result.raysTraced = rays.load();

  if (Status s = embree_->takeError(); !s.ok()) {
    failed_ = true;
    return Error{"cpu device: " + s.error().message};
  }
  if (stopped.load())
    return Error{"cpu device: " + unit.describe() + " stopped before it was done"};
  return result;
}

}  // namespace pl
