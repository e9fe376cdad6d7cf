#include "gpu/cuda_devices.h"

#include <cuda_runtime_api.h>

#include <cstring>
#include <string>

#include "core/util/log.h"
#include "gpu/cuda_device.h"

namespace pl {

std::vector<DeviceInfo> enumerateCudaDevices() {
  std::vector<DeviceInfo> out;
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count <= 0) {
    // Typical: cudaErrorNoDevice (no GPU) or cudaErrorInsufficientDriver (no driver).
    const char* why = err == cudaErrorInsufficientDriver ? "no NVIDIA driver is installed"
                      : err == cudaErrorNoDevice         ? "no CUDA GPU is present"
                      : err != cudaSuccess               ? cudaGetErrorString(err)
                                                         : "the driver reports none";
    log(LogLevel::Info, "no CUDA GPUs: %s", why);
    cudaGetLastError();
    return out;
  }
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop;
    std::memset(&prop, 0, sizeof prop);
    if (err = cudaGetDeviceProperties(&prop, i); err != cudaSuccess) {
      log(LogLevel::Warn, "cuda:%d: cannot read the GPU's properties: %s", i,
          cudaGetErrorString(err));
      cudaGetLastError();
      continue;
    }
    DeviceInfo info;
    info.kind = "cuda";
    info.name = prop.name;
    info.memoryBytes = prop.totalGlobalMem;
    info.computeMajor = prop.major;
    info.computeMinor = prop.minor;
    info.ordinal = i;
    out.push_back(std::move(info));
  }
  return out;
}

Result<std::unique_ptr<Device>> makeCudaDevice(int ordinal) {
  Result<std::unique_ptr<CudaDevice>> device = CudaDevice::open(ordinal);
  if (!device.ok()) return device.error();
  return std::unique_ptr<Device>(std::move(device).value());
}

}  // namespace pl
