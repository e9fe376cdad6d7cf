#pragma once
// CudaDevice: one NVIDIA GPU as a render Device. load() validates the RenderData, builds a
// BVH on the host (core/render/bvh_builder.h: buildMeshBvh, keeping the static meshes' tree of
// the previous load while they are unchanged) and uploads every RenderData array and the BVH;
// render() runs kernel::renderPixel over kernel::BvhTracer for every pixel of the unit and
// copies the fixed-point sums back.
//
// Threads: like every Device, used from one thread at a time (any thread: each call selects
// its GPU for the calling thread). render() blocks until the GPU is done.
//
// Errors: a bad work unit, or render() before load(), is the caller's error and changes
// nothing. A CUDA error (no driver, out of memory, failed launch, a fault in the kernel) is a
// device error: it is returned as a pl::Error naming the GPU, and the device is failed() for
// good (the first error is repeated by every later call). Nothing here aborts the process.
//
// Results are deterministic: the same unit rendered twice gives the same bits (per-pixel
// sums are exact integer additions, whatever the order of the threads).

#include <memory>
#include <string>

#include "core/render/device.h"

namespace pl {

class CudaDevice : public Device {
 public:
  // Opens GPU `ordinal` (see also makeCudaDevice in cuda_devices.h).
  static Result<std::unique_ptr<CudaDevice>> open(int ordinal);
  ~CudaDevice() override;
  CudaDevice(const CudaDevice&) = delete;
  CudaDevice& operator=(const CudaDevice&) = delete;

  DeviceInfo info() const override;
  // Frees the previous data first (GPU memory is scarce), so after a failed load() nothing is
  // loaded.
  Status load(std::shared_ptr<const RenderData> data) override;
  bool failed() const override;

  // Statistics of the last load(), for benchmarks and logs.
  struct LoadStats {
    double bvhBuildSeconds = 0.0;
    double uploadSeconds = 0.0;
    uint64_t bytesUploaded = 0;
    uint32_t bvhNodes = 0, bvhDepth = 0;
  };
  LoadStats loadStats() const;

  // "cuda:0 (NVIDIA H100 80GB HBM3)", used in every error message.
  std::string label() const;

 protected:
  Result<TileResult> renderUnit(const WorkUnit& unit, const RenderStop& stop) override;

 private:
  struct Impl;
  explicit CudaDevice(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace pl
