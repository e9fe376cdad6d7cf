#include "gpu/cuda_device.h"

#include <cuda_runtime_api.h>

#include <chrono>
#include <cstring>
#include <string>
#include <vector>

#include "core/render/bvh_builder.h"
#include "core/util/log.h"
#include "gpu/cuda_devices.h"
#include "gpu/render_kernel.h"

namespace pl {

namespace {

std::string cudaMessage(cudaError_t err) {
  return std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err);
}

std::string mib(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MiB", double(bytes) / (1024.0 * 1024.0));
  return buf;
}

// One device allocation, freed on destruction (errors at that point are ignored: the context
// may already be gone).
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) {
    o.ptr_ = nullptr;
    o.bytes_ = 0;
  }
  ~DeviceBuffer() { reset(); }

  cudaError_t allocate(uint64_t bytes) {
    reset();
    if (bytes == 0) return cudaSuccess;
    cudaError_t err = cudaMalloc(&ptr_, bytes);
    if (err != cudaSuccess) {
      ptr_ = nullptr;
      return err;
    }
    bytes_ = bytes;
    return cudaSuccess;
  }
  void reset() {
    if (ptr_ != nullptr) cudaFree(ptr_);
    ptr_ = nullptr;
    bytes_ = 0;
  }
  void* get() const { return ptr_; }
  uint64_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  uint64_t bytes_ = 0;
};

}  // namespace

struct CudaDevice::Impl {
  int ordinal = 0;
  DeviceInfo info;
  int smCount = 1;
  cudaStream_t stream = nullptr;

  bool failed = false;
  Error firstError;

  std::shared_ptr<const RenderData> data;
  std::vector<DeviceBuffer> buffers;  // every RenderData array and the BVH
  // The static meshes' tree of the last load (on the host), reused while they are unchanged.
  std::shared_ptr<const StaticBvh> staticBvh;
  kernel::SceneView view{};
  kernel::BvhTracer tracer{};
  LoadStats stats;

  DeviceBuffer sums;  // grown as needed; filmChannels() x uint64 per pixel
  DeviceBuffer rays;  // one uint64

  std::string label() const {
    return "cuda:" + std::to_string(ordinal) + " (" + info.name + ")";
  }

  // Marks the device failed (first error wins) and returns the error for the caller.
  Error fail(const std::string& what, cudaError_t err) {
    Error e{label() + ": " + what + ": " + cudaMessage(err)};
    if (!failed) {
      failed = true;
      staticBvh.reset();  // a failed device loads nothing again
      firstError = e;
      log(LogLevel::Error, "%s (device disabled)", e.message.c_str());
    }
    // Clear the per-thread last error so that it does not leak into unrelated calls.
    cudaGetLastError();
    return e;
  }

  Error failedError() const {
    return Error{firstError.message + " (device failed earlier)"};
  }

  void unload() {
    buffers.clear();
    view = {};
    tracer = {};
    data.reset();
  }

  // Allocates and copies one array; fills *devicePtr (nullptr for an empty array).
  template <typename T>
  cudaError_t upload(const std::vector<T>& host, const T** devicePtr, uint64_t* bytes) {
    *devicePtr = nullptr;
    if (host.empty()) return cudaSuccess;
    DeviceBuffer buf;
    uint64_t size = uint64_t(host.size()) * sizeof(T);
    if (cudaError_t err = buf.allocate(size); err != cudaSuccess) return err;
    if (cudaError_t err = cudaMemcpy(buf.get(), host.data(), size, cudaMemcpyHostToDevice);
        err != cudaSuccess)
      return err;
    *devicePtr = static_cast<const T*>(buf.get());
    *bytes += size;
    buffers.push_back(std::move(buf));
    return cudaSuccess;
  }
};

CudaDevice::CudaDevice(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

CudaDevice::~CudaDevice() {
  if (!impl_) return;
  cudaSetDevice(impl_->ordinal);
  impl_->unload();
  impl_->sums.reset();
  impl_->rays.reset();
  if (impl_->stream != nullptr) cudaStreamDestroy(impl_->stream);
  cudaGetLastError();
}

Result<std::unique_ptr<CudaDevice>> CudaDevice::open(int ordinal) {
  std::string name = "cuda:" + std::to_string(ordinal);
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return Error{name + ": no usable CUDA GPU: " + cudaMessage(err)};
  }
  if (ordinal < 0 || ordinal >= count)
    return Error{name + ": no such GPU (" + std::to_string(count) + " found)"};
  cudaDeviceProp prop;
  std::memset(&prop, 0, sizeof prop);
  if (err = cudaGetDeviceProperties(&prop, ordinal); err != cudaSuccess) {
    cudaGetLastError();
    return Error{name + ": cannot read the GPU's properties: " + cudaMessage(err)};
  }
  auto impl = std::make_unique<Impl>();
  impl->ordinal = ordinal;
  impl->info.kind = "cuda";
  impl->info.name = prop.name;
  impl->info.memoryBytes = prop.totalGlobalMem;
  impl->info.computeMajor = prop.major;
  impl->info.computeMinor = prop.minor;
  impl->info.ordinal = ordinal;
  impl->smCount = prop.multiProcessorCount > 0 ? prop.multiProcessorCount : 1;
  // Create the context now, so that an unusable GPU is reported here rather than at load().
  if (err = cudaSetDevice(ordinal); err == cudaSuccess) err = cudaFree(nullptr);
  if (err == cudaSuccess) err = cudaStreamCreateWithFlags(&impl->stream, cudaStreamNonBlocking);
  if (err == cudaSuccess) err = impl->rays.allocate(sizeof(unsigned long long));
  if (err != cudaSuccess) {
    std::string label = impl->label();
    cudaGetLastError();
    return Error{label + ": cannot initialize the GPU: " + cudaMessage(err)};
  }
  return std::unique_ptr<CudaDevice>(new CudaDevice(std::move(impl)));
}

DeviceInfo CudaDevice::info() const { return impl_->info; }
bool CudaDevice::failed() const { return impl_->failed; }
std::string CudaDevice::label() const { return impl_->label(); }
CudaDevice::LoadStats CudaDevice::loadStats() const { return impl_->stats; }

Status CudaDevice::load(std::shared_ptr<const RenderData> data) {
  Impl& d = *impl_;
  if (d.failed) return d.failedError();
  if (!data) return Error{d.label() + ": load() without render data"};
  if (Status s = data->validate(); !s.ok())
    return Error{d.label() + ": invalid render data: " + s.error().message};

  cudaError_t err = cudaSetDevice(d.ordinal);
  if (err != cudaSuccess) return d.fail("cannot select the GPU", err);
  d.unload();

  auto t0 = std::chrono::steady_clock::now();
  Bvh bvh = buildMeshBvh(*data, &d.staticBvh);
  auto t1 = std::chrono::steady_clock::now();

  LoadStats stats;
  stats.bvhBuildSeconds = std::chrono::duration<double>(t1 - t0).count();
  stats.bvhNodes = static_cast<uint32_t>(bvh.nodes.size());
  stats.bvhDepth = bvh.depth;

  // Every RenderData array, generically, from the one list of arrays.
  kernel::SceneView view{};
#define PL_GPU_UPLOAD(Type, name)                                                    \
  if (err = d.upload(data->name, &view.name, &stats.bytesUploaded); err != cudaSuccess) { \
    d.unload();                                                                      \
    return d.fail("uploading " #name " (" + mib(data->name.size() * sizeof(Type)) + ")", err); \
  }                                                                                  \
  view.name##Count = static_cast<uint32_t>(data->name.size());
  PL_RENDER_DATA_ARRAYS(PL_GPU_UPLOAD)
#undef PL_GPU_UPLOAD

  kernel::BvhTracer tracer{};
  const kernel::BvhNode* nodes = nullptr;
  const uint32_t* primIndices = nullptr;
  err = d.upload(bvh.nodes, &nodes, &stats.bytesUploaded);
  if (err == cudaSuccess) err = d.upload(bvh.primIndices, &primIndices, &stats.bytesUploaded);
  if (err != cudaSuccess) {
    d.unload();
    return d.fail("uploading the BVH (" + mib(bvh.nodes.size() * sizeof(kernel::BvhNode)) + ")",
                  err);
  }
  tracer.nodes = nodes;
  tracer.primIndices = primIndices;
  tracer.positions = view.positions;
  tracer.triangles = view.triangles;
  auto t2 = std::chrono::steady_clock::now();
  stats.uploadSeconds = std::chrono::duration<double>(t2 - t1).count();

  d.view = view;
  d.tracer = tracer;
  d.data = std::move(data);
  d.stats = stats;
  log(LogLevel::Debug, "%s: loaded %u triangles, BVH %u nodes depth %u in %.3f s, %s uploaded",
      d.label().c_str(), view.trianglesCount, stats.bvhNodes, stats.bvhDepth,
      stats.bvhBuildSeconds, mib(stats.bytesUploaded).c_str());
  return Status();
}

Result<TileResult> CudaDevice::renderUnit(const WorkUnit& unit, const RenderStop& stop) {
  Impl& d = *impl_;
  // One launch per unit (units are sized to take a fraction of a second): a stop is seen
  // before it only.
  if (stop.requested())
    return Error{d.label() + ": " + unit.describe() + " stopped before it was started"};
  if (d.failed) return d.failedError();
  if (!d.data) return Error{d.label() + ": render() before load()"};
  const kernel::Camera& cam = d.data->camera[0];
  if (Status s = unit.validate(cam.width, cam.height); !s.ok())
    return Error{d.label() + ": bad work unit " + unit.describe() + ": " + s.error().message};

  cudaError_t err = cudaSetDevice(d.ordinal);
  if (err != cudaSuccess) return d.fail("cannot select the GPU", err);

  const uint64_t pixels = unit.tile.pixelCount();
  const uint32_t channels = kernel::filmChannels(cam.passes);
  const uint64_t sumBytes = pixels * channels * sizeof(unsigned long long);
  if (d.sums.bytes() < sumBytes) {
    if (err = d.sums.allocate(sumBytes); err != cudaSuccess)
      return d.fail("allocating the tile buffer (" + mib(sumBytes) + ")", err);
  }

  // Enough threads to fill the GPU several times over (2048 resident threads per SM at
  // most), but whole pixels per thread when the tile alone does that.
  const uint32_t samples = unit.sampleCount();
  const uint64_t targetThreads = uint64_t(d.smCount) * 2048 * 4;
  uint32_t chunks = 1;
  if (pixels < targetThreads) {
    uint64_t wanted = (targetThreads + pixels - 1) / pixels;
    chunks = static_cast<uint32_t>(wanted < samples ? wanted : samples);
  }
  const uint32_t perThread = (samples + chunks - 1) / chunks;
  chunks = (samples + perThread - 1) / perThread;

  gpu::RenderLaunch launch{};
  launch.scene = d.view;
  launch.tracer = d.tracer;
  launch.tileX = unit.tile.x;
  launch.tileY = unit.tile.y;
  launch.tileWidth = unit.tile.width;
  launch.tileHeight = unit.tile.height;
  launch.sampleBegin = unit.sampleBegin;
  launch.sampleEnd = unit.sampleEnd;
  launch.samplesPerThread = perThread;
  launch.chunks = chunks;
  launch.sums = static_cast<unsigned long long*>(d.sums.get());
  launch.raysTraced = static_cast<unsigned long long*>(d.rays.get());

  TileResult result;
  result.unit = unit;
  result.sums.resize(pixels * channels);
  unsigned long long rays = 0;
  if (chunks > 1) err = cudaMemsetAsync(launch.sums, 0, sumBytes, d.stream);
  if (err == cudaSuccess)
    err = cudaMemsetAsync(launch.raysTraced, 0, sizeof(unsigned long long), d.stream);
  if (err != cudaSuccess) return d.fail("clearing the tile buffer", err);
  if (err = gpu::launchRender(launch, d.stream); err != cudaSuccess)
    return d.fail("launching the render kernel for " + unit.describe(), err);
  err = cudaMemcpyAsync(result.sums.data(), launch.sums, sumBytes, cudaMemcpyDeviceToHost,
                        d.stream);
  if (err == cudaSuccess)
    err = cudaMemcpyAsync(&rays, launch.raysTraced, sizeof rays, cudaMemcpyDeviceToHost,
                          d.stream);
  if (err == cudaSuccess) err = cudaStreamSynchronize(d.stream);
  if (err != cudaSuccess) return d.fail("rendering " + unit.describe(), err);
  result.raysTraced = rays;
  return result;
}

}  // namespace pl
