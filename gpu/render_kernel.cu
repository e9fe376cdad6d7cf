// The CUDA entry point: one thread per (pixel, chunk of samples), each calling the shared
// kernel's renderPixel with the project's BVH as the Tracer.

#include "core/kernel/integrator.h"
#include "gpu/render_kernel.h"

namespace pl::gpu {

__global__ void __launch_bounds__(kRenderBlockSize) renderKernel(const RenderLaunch p) {
  const uint64_t pixelCount = uint64_t(p.tileWidth) * p.tileHeight;
  const uint64_t id = uint64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  unsigned long long rays = 0;
  if (id < pixelCount * p.chunks) {
    // Neighbouring threads take neighbouring pixels (coherent camera rays in a warp).
    const uint32_t pixel = static_cast<uint32_t>(id % pixelCount);
    const uint32_t chunk = static_cast<uint32_t>(id / pixelCount);
    const uint32_t px = p.tileX + pixel % p.tileWidth;
    const uint32_t py = p.tileY + pixel / p.tileWidth;
    const uint32_t s0 = p.sampleBegin + chunk * p.samplesPerThread;
    const uint32_t s1 = min(p.sampleEnd, s0 + p.samplesPerThread);
    int64_t sums[kernel::kMaxFilmChannels] = {};
    uint32_t threadRays = 0;
    kernel::renderPixel(p.scene, p.tracer, px, py, s0, s1, sums, &threadRays);
    rays = threadRays;
    const uint32_t channels = kernel::filmChannels(p.scene.cam().passes);
    unsigned long long* out = p.sums + channels * uint64_t(pixel);
    if (p.chunks == 1) {
      for (uint32_t c = 0; c < channels; ++c) out[c] = static_cast<unsigned long long>(sums[c]);
    } else {
      // Integer addition is associative: the result does not depend on thread order.
      for (uint32_t c = 0; c < channels; ++c)
        atomicAdd(out + c, static_cast<unsigned long long>(sums[c]));
    }
  }
  // One atomic per warp for the ray count (every lane takes part in the shuffle).
  for (int offset = 16; offset > 0; offset /= 2)
    rays += __shfl_down_sync(0xffffffffu, rays, offset);
  if ((threadIdx.x & 31) == 0 && rays != 0) atomicAdd(p.raysTraced, rays);
}

cudaError_t launchRender(const RenderLaunch& launch, cudaStream_t stream) {
  const uint64_t threads = uint64_t(launch.tileWidth) * launch.tileHeight * launch.chunks;
  const uint64_t blocks = (threads + kRenderBlockSize - 1) / kRenderBlockSize;
  if (blocks == 0) return cudaSuccess;
  if (blocks > 0x7fffffffu) return cudaErrorInvalidConfiguration;
  renderKernel<<<static_cast<unsigned>(blocks), kRenderBlockSize, 0, stream>>>(launch);
  return cudaGetLastError();
}

}  // namespace pl::gpu
