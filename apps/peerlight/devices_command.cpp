// `peerlight devices [--json]`: the render devices of this machine: the CPU, and each CUDA GPU
// when this build has CUDA support and the machine has GPUs and a driver.

#include <unistd.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "apps/peerlight/cli_util.h"
#include "apps/peerlight/commands.h"
#include "core/render/cpu_device.h"
#include "core/render/device.h"

#if defined(PEERLIGHT_HAVE_CUDA)
#include "gpu/cuda_devices.h"
#endif

namespace pl::app {

namespace {

// The CPU as the CPU device would use it by default (every hardware thread), without starting
// its thread pool.
DeviceInfo localCpu() {
  unsigned threads = std::thread::hardware_concurrency();
  return cpuDeviceInfo(threads > 0 ? threads : 1);
}

void printDevices(bool json) {
  constexpr bool kCudaBuild =
#if defined(PEERLIGHT_HAVE_CUDA)
      true;
#else
      false;
#endif
  std::vector<DeviceInfo> devices{localCpu()};
#if defined(PEERLIGHT_HAVE_CUDA)
  for (DeviceInfo& gpu : enumerateCudaDevices()) devices.push_back(std::move(gpu));
#endif
  const size_t gpuCount = devices.size() - 1;

  if (json) {
    nlohmann::json list = nlohmann::json::array();
    for (const DeviceInfo& d : devices) {
      nlohmann::json j{{"kind", d.kind}, {"name", d.name}, {"memoryBytes", d.memoryBytes}};
      if (d.kind == "cpu") {
        j["threads"] = d.threads;
      } else {
        j["ordinal"] = d.ordinal;
        j["computeCapability"] =
            std::to_string(d.computeMajor) + "." + std::to_string(d.computeMinor);
      }
      list.push_back(std::move(j));
    }
    nlohmann::json out{{"cudaSupport", kCudaBuild}, {"devices", std::move(list)}};
    std::printf("%s\n", out.dump(2).c_str());
    return;
  }
  for (const DeviceInfo& d : devices) {
    if (d.kind == "cpu") {
      std::printf("cpu     %s, %u threads, %s memory\n", d.name.c_str(), d.threads,
                  formatBytes(d.memoryBytes).c_str());
    } else {
      std::printf("cuda:%-3d%s, %s, compute capability %d.%d\n", d.ordinal, d.name.c_str(),
                  formatBytes(d.memoryBytes).c_str(), d.computeMajor, d.computeMinor);
    }
  }
  if (gpuCount == 0) {
    std::printf("no CUDA GPUs found%s\n",
                kCudaBuild ? "" : " (this build of peerlight has no CUDA support)");
  }
}

}  // namespace

void addDevicesCommand(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("devices", "List this machine's render devices");
  auto json = std::make_shared<bool>(false);
  cmd->add_flag("--json", *json, "Print JSON instead of text");
  cmd->callback([json] { printDevices(*json); });
}

}  // namespace pl::app
