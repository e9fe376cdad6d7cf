#pragma once
// The one CUDA kernel: renders a WorkUnit. Host side (cuda_device.cpp, compiled by the host
// compiler) fills a RenderLaunch and calls launchRender(); render_kernel.cu holds the
// __global__ function, a thin wrapper over kernel::renderPixel.

#include <cuda_runtime_api.h>

#include <cstdint>

#include "core/kernel/bvh.h"
#include "core/kernel/scene_view.h"

namespace pl::gpu {

// Kernel parameters, passed by value. All pointers are device memory.
struct RenderLaunch {
  kernel::SceneView scene;
  kernel::BvhTracer tracer;
  uint32_t tileX, tileY, tileWidth, tileHeight;
  uint32_t sampleBegin, sampleEnd;
  // Each thread renders samples [sampleBegin + k * samplesPerThread, ...) of one pixel, so
  // that small tiles with many samples still fill the GPU. chunks = ceil(samples /
  // samplesPerThread); threads = tile pixels * chunks.
  uint32_t samplesPerThread;
  uint32_t chunks;
  // filmChannels() per pixel, row-major over the tile: int64 sums stored as two's complement.
  // Must be zeroed before the launch when chunks > 1 (threads add into them).
  unsigned long long* sums;
  unsigned long long* raysTraced;  // one counter, zeroed before the launch
};

// Threads per block.
constexpr uint32_t kRenderBlockSize = 128;

// Enqueues the kernel on `stream`; returns the launch error (cudaSuccess when enqueued).
cudaError_t launchRender(const RenderLaunch& launch, cudaStream_t stream);

}  // namespace pl::gpu
