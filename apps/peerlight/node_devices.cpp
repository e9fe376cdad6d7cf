// This machine's render devices as a node serves them (commands.h: openNodeDevices).

#include <memory>
#include <vector>

#include "apps/peerlight/commands.h"
#include "core/render/cpu_device.h"
#include "core/util/log.h"

#if defined(PEERLIGHT_HAVE_CUDA)
#include "gpu/cuda_devices.h"
#endif

namespace pl::app {

std::vector<std::unique_ptr<Device>> openNodeDevices(uint32_t threads) {
  std::vector<std::unique_ptr<Device>> devices;
  devices.push_back(std::make_unique<CpuDevice>(threads));
#if defined(PEERLIGHT_HAVE_CUDA)
  for (const DeviceInfo& gpu : enumerateCudaDevices()) {
    auto device = makeCudaDevice(gpu.ordinal);
    if (!device.ok()) {
      PL_LOG_WARN("not serving GPU %d (%s): %s", gpu.ordinal, gpu.name.c_str(),
                  device.error().message.c_str());
      continue;
    }
    devices.push_back(std::move(*device));
  }
#endif
  return devices;
}

}  // namespace pl::app
