// This machine's render devices as a node and its workers number and open them
// (node_devices.h; commands.h: nodeDevices).

#include "apps/peerlight/node_devices.h"

#include <unistd.h>

#include <thread>

#include "apps/peerlight/commands.h"
#include "core/render/cpu_device.h"
#include "core/util/check.h"
#include "core/util/log.h"

#if defined(PEERLIGHT_HAVE_CUDA)
#include "gpu/cuda_devices.h"
#endif

namespace pl::app {

UnopenedDevice::UnopenedDevice(DeviceInfo info, std::string why, bool failed)
    : info_(std::move(info)), why_(std::move(why)), failed_(failed) {}

Status UnopenedDevice::load(std::shared_ptr<const RenderData>) {
  return Error{describeDevice(info_) + ": " + why_};
}

Result<TileResult> UnopenedDevice::renderUnit(const WorkUnit& unit, const RenderStop&) {
  return Error{describeDevice(info_) + ": cannot render " + unit.describe() + ": " + why_};
}

std::string describeDevice(const DeviceInfo& info) {
  if (info.kind == "cuda") return "cuda:" + std::to_string(info.ordinal) + " (" + info.name + ")";
  return info.kind;
}

namespace {

// What CpuDevice(threads).info() reports, without starting its thread pool (ThreadPool's rule
// for threads == 0).
DeviceInfo cpuInfo(uint32_t threads) {
  if (threads == 0) threads = std::thread::hardware_concurrency();
  return cpuDeviceInfo(threads == 0 ? 1 : threads);
}

}  // namespace

std::vector<DeviceInfo> enumerateNodeDevices(uint32_t threads) {
  std::vector<DeviceInfo> infos;
  infos.push_back(cpuInfo(threads));
#if defined(PEERLIGHT_HAVE_CUDA)
  // cudaGetDeviceCount + cudaGetDeviceProperties: the driver is loaded, no context is made.
  for (DeviceInfo& gpu : enumerateCudaDevices()) infos.push_back(std::move(gpu));
#endif
  return infos;
}

Result<std::vector<uint32_t>> parseDeviceIndices(const std::string& list, size_t deviceCount) {
  auto bad = [&](const std::string& what) -> Error {
    return Error{"--devices \"" + list + "\": " + what};
  };
  std::vector<uint32_t> indices;
  std::vector<bool> seen(deviceCount, false);
  size_t at = 0;
  while (true) {
    size_t comma = list.find(',', at);
    std::string item = list.substr(at, comma == std::string::npos ? std::string::npos : comma - at);
    size_t first = item.find_first_not_of(' ');
    size_t last = item.find_last_not_of(' ');
    item = first == std::string::npos ? "" : item.substr(first, last - first + 1);
    if (item.empty()) return bad(list.empty() ? "no device index" : "an empty entry");
    for (char c : item) {
      if (c < '0' || c > '9') return bad("\"" + item + "\" is not a device index");
    }
    uint64_t value = item.size() > 9 ? UINT64_MAX : std::stoull(item);
    if (value >= deviceCount) {
      return bad("device " + item + " does not exist (this machine has " +
                 std::to_string(deviceCount) + (deviceCount == 1 ? " device" : " devices") +
                 ", 0.." + std::to_string(deviceCount == 0 ? 0 : deviceCount - 1) + ")");
    }
    if (seen[value]) return bad("device " + item + " is listed twice");
    seen[value] = true;
    indices.push_back(uint32_t(value));
    if (comma == std::string::npos) break;
    at = comma + 1;
  }
  return indices;
}

std::vector<std::unique_ptr<Device>> assembleNodeDevices(const std::vector<DeviceInfo>& infos,
                                                         const std::vector<uint32_t>& toOpen,
                                                         const DeviceOpener& open) {
  std::vector<std::unique_ptr<Device>> devices(infos.size());
  for (uint32_t index : toOpen) {
    PL_CHECK(index < infos.size());
    if (devices[index] != nullptr) continue;
    Result<std::unique_ptr<Device>> opened = open(index, infos[index]);
    if (opened.ok() && *opened != nullptr) {
      devices[index] = std::move(*opened);
      continue;
    }
    std::string why = opened.ok() ? "no device was made" : opened.error().message;
    PL_LOG_WARN("device %u, %s: cannot be opened: %s", index, describeDevice(infos[index]).c_str(),
                why.c_str());
    devices[index] = std::make_unique<UnopenedDevice>(
        infos[index], "could not be opened in process " + std::to_string(getpid()) + ": " + why,
        /*failed=*/true);
  }
  for (size_t i = 0; i < infos.size(); ++i) {
    if (devices[i] != nullptr) continue;
    devices[i] = std::make_unique<UnopenedDevice>(
        infos[i],
        "not opened in this process (pid " + std::to_string(getpid()) +
            "; a node daemon renders only in its workers, a worker only on its lease's devices)",
        /*failed=*/false);
  }
  return devices;
}

DeviceOpener nodeDeviceOpener(uint32_t threads) {
  return [threads](uint32_t, const DeviceInfo& info) -> Result<std::unique_ptr<Device>> {
    if (info.kind == "cpu") return std::unique_ptr<Device>(std::make_unique<CpuDevice>(threads));
#if defined(PEERLIGHT_HAVE_CUDA)
    if (info.kind == "cuda") return makeCudaDevice(info.ordinal);
#endif
    return Error{"this build cannot open a device of kind \"" + info.kind + "\""};
  };
}

Result<std::vector<std::unique_ptr<Device>>> openLeasedNodeDevices(uint32_t threads,
                                                                   const std::string& list) {
  std::vector<DeviceInfo> infos = enumerateNodeDevices(threads);
  Result<std::vector<uint32_t>> indices = parseDeviceIndices(list, infos.size());
  if (!indices.ok()) return indices.error();
  return assembleNodeDevices(infos, *indices, nodeDeviceOpener(threads));
}

std::vector<std::unique_ptr<Device>> nodeDevices(uint32_t threads, bool inProcess) {
  std::vector<DeviceInfo> infos = enumerateNodeDevices(threads);
  if (!inProcess) return assembleNodeDevices(infos, {}, nodeDeviceOpener(threads));
  // Rendering in this process: every device opened. No other process shares the numbering,
  // so a GPU that does not open is left out rather than offered as a failed device.
  std::vector<std::unique_ptr<Device>> devices;
  DeviceOpener open = nodeDeviceOpener(threads);
  for (uint32_t i = 0; i < infos.size(); ++i) {
    Result<std::unique_ptr<Device>> device = open(i, infos[i]);
    if (!device.ok()) {
      PL_LOG_WARN("not serving %s: %s", describeDevice(infos[i]).c_str(),
                  device.error().message.c_str());
      continue;
    }
    devices.push_back(std::move(*device));
  }
  return devices;
}

}  // namespace pl::app
