#pragma once
// CpuDevice: renders WorkUnits on this machine's CPU cores with the shared kernel
// (kernel::renderPixel) over Embree.
//
// Threads: like every Device, used from one thread at a time; render() blocks and spreads the
// unit's pixels over a persistent pool of `threads` threads (the caller's thread included).

#include <memory>

#include "core/render/device.h"
#include "core/render/embree_tracer.h"
#include "core/render/thread_pool.h"

namespace pl {

class CpuDevice : public Device {
 public:
  // threads == 0: one per hardware thread.
  explicit CpuDevice(uint32_t threads = 0);
  ~CpuDevice() override;

  DeviceInfo info() const override;
  // Validates the data and builds the Embree scene. On failure the previous data (if any)
  // stays loaded.
  Status load(std::shared_ptr<const RenderData> data) override;
  // Builds the Embree scene of the geometry; the next load() reuses its static part (the BVH of
  // every static mesh) when its geometry is the same.
  void prepareGeometry(const RenderData& data) override;
  // Checks the camera as RenderData::validate() does, then renders with it (the Embree scene
  // stays).
  Status setCamera(const kernel::Camera& camera) override;
  bool failed() const override { return failed_; }

  // For benchmarks and tests: the loaded data and its Embree scene (null before load()).
  const RenderData* data() const { return data_.get(); }
  const EmbreeScene* embreeScene() const { return embree_.get(); }
  ThreadPool& threadPool() { return pool_; }

 protected:
  // Fails with a message naming the unit when it does not fit the loaded camera's image, when
  // nothing is loaded, or when `stop` ended it; the device keeps working afterwards. An Embree
  // error makes the device failed() for good.
  Result<TileResult> renderUnit(const WorkUnit& unit, const RenderStop& stop) override;

 private:
  ThreadPool pool_;
  std::shared_ptr<const RenderData> data_;
  std::unique_ptr<EmbreeScene> embree_;  // built over *data_
  std::unique_ptr<EmbreeScene> prepared_;  // prepareGeometry()'s, until the next load()
  kernel::Camera camera_{};              // data_->camera[0], or the one setCamera() gave
  bool failed_ = false;
};

// What a CpuDevice rendering with `threads` threads reports: kind "cpu", the model, the
// machine's physical memory.
DeviceInfo cpuDeviceInfo(uint32_t threads);

// "model name" from /proc/cpuinfo ("unknown CPU" when absent).
std::string cpuModelName();

}  // namespace pl
