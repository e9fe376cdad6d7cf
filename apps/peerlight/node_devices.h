#pragma once
// This machine's render devices as `peerlight node` and its workers number them
// (node_devices.cpp).
//
// The protocol index of a device is a pure function of enumeration: 0 is the CPU, then each
// GPU that enumerateCudaDevices() lists, in its order (CUDA builds). Enumeration opens nothing
// (no CUDA context, no allocation), so the daemon and every worker agree on the numbering
// whatever each of them opens:
//   - the daemon of worker processes opens no device: placeholders that describe each one
//     (for leases, Node.info and the mDNS TXT) and fail load()/render();
//   - a worker opens only the devices of its lease (`--devices I,J`) and puts placeholders at
//     every other index; a leased device that does not open stays at its index as a failed
//     device whose load()/render() errors name it (indices never shift);
//   - a node that renders in its own process (--in-process) opens every device.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/render/device.h"
#include "core/util/status.h"

namespace pl::app {

// A device that this process does not render on: info() is the real DeviceInfo; load() and
// render() fail with "<device>: <why>". failed() is `failed` (true for a device that was meant
// to render here but could not be opened, so callers give it no work).
class UnopenedDevice final : public Device {
 public:
  UnopenedDevice(DeviceInfo info, std::string why, bool failed);
  DeviceInfo info() const override { return info_; }
  Status load(std::shared_ptr<const RenderData> data) override;
  bool failed() const override { return failed_; }
  const std::string& why() const { return why_; }

 protected:
  Result<TileResult> renderUnit(const WorkUnit& unit, const RenderStop& stop) override;

 private:
  DeviceInfo info_;
  std::string why_;
  bool failed_;
};

// "cpu" or "cuda:1 (NVIDIA H100)": a device as log lines and errors name it.
std::string describeDevice(const DeviceInfo& info);

// The DeviceInfo of every device of this machine, by protocol index (see above). The CPU's is
// what CpuDevice(threads) reports (threads 0: one per hardware thread). Opens nothing.
std::vector<DeviceInfo> enumerateNodeDevices(uint32_t threads);

// Parses a worker's `--devices` list: comma-separated decimal indices, each < deviceCount, no
// duplicates, at least one; spaces around the numbers are allowed. Returns them in the given
// order. A bad list: an error naming the list and what is wrong with it.
Result<std::vector<uint32_t>> parseDeviceIndices(const std::string& list, size_t deviceCount);

// Opens the device at `index` (described by `info`) for rendering.
using DeviceOpener =
    std::function<Result<std::unique_ptr<Device>>(uint32_t index, const DeviceInfo& info)>;

// One device per entry of `infos`, at the same index: opened with `open` where the index is
// in `toOpen`, an UnopenedDevice elsewhere ("not opened in this process"), and a failed
// UnopenedDevice carrying the opener's error where opening failed (logged as a warning).
// Indices in `toOpen` must be < infos.size() (checked).
std::vector<std::unique_ptr<Device>> assembleNodeDevices(const std::vector<DeviceInfo>& infos,
                                                         const std::vector<uint32_t>& toOpen,
                                                         const DeviceOpener& open);

// The real opener: CpuDevice(threads) for kind "cpu", makeCudaDevice(ordinal) for "cuda".
DeviceOpener nodeDeviceOpener(uint32_t threads);

// For `peerlight worker --devices LIST`: every device of this machine, only those of LIST
// opened. A bad LIST fails (parseDeviceIndices); a device that does not open does not.
Result<std::vector<std::unique_ptr<Device>>> openLeasedNodeDevices(uint32_t threads,
                                                                   const std::string& list);

}  // namespace pl::app
