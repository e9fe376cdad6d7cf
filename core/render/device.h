#pragma once
// Device: something that renders WorkUnits of one loaded RenderData (the CPU device, one CUDA
// GPU). Devices are used from one thread at a time; render() blocks until done and may use
// many threads internally.
//
// Errors are sticky (as in Cycles): once a device reports a device error (not a bad work
// unit), failed() is true and the caller gives it no more work.

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "core/render/work_unit.h"
#include "core/scene/render_data.h"
#include "core/util/status.h"

namespace pl {

struct DeviceInfo {
  std::string kind;   // "cpu" or "cuda"
  std::string name;   // CPU model or GPU name
  uint64_t memoryBytes = 0;
  uint32_t threads = 0;  // CPU threads used (cpu)
  int computeMajor = 0, computeMinor = 0;  // (cuda)
  int ordinal = 0;                         // GPU index (cuda)
};

// Asks a unit that is being rendered to give up early: its owner moves `epoch` on from the
// value the unit was started with (from any thread), and the device sees it between pieces of
// its work (the CPU device: before each pixel). A stopped unit ends with an error
// saying so; nothing of it is kept, and the device goes on working. Default: never stops.
class RenderStop {
 public:
  RenderStop() = default;
  RenderStop(const std::atomic<uint64_t>& epoch, uint64_t started)
      : epoch_(&epoch), started_(started) {}
  bool requested() const {
    return epoch_ != nullptr && epoch_->load(std::memory_order_relaxed) != started_;
  }

 private:
  const std::atomic<uint64_t>* epoch_ = nullptr;
  uint64_t started_ = 0;
};

class Device {
 public:
  virtual ~Device() = default;
  virtual DeviceInfo info() const = 0;
  // Takes shared ownership of validated data and builds what the device needs (BVH, upload).
  virtual Status load(std::shared_ptr<const RenderData> data) = 0;
  // Ahead of a load(): builds what depends only on the geometry arrays (kGeometryArrays) of
  // `data`, which passed RenderData::validateGeometry() and whose other arrays may still be
  // being written (by other threads: this reads none of them). A load() of data with the same
  // geometry then reuses it. Optional (does nothing by default); renders as before.
  virtual void prepareGeometry(const RenderData& data) { (void)data; }
  // Renders one unit of the loaded data; `stop` may end it early (above).
  Result<TileResult> render(const WorkUnit& unit, const RenderStop& stop = RenderStop()) {
    return renderUnit(unit, stop);
  }
  // Replaces the loaded data's camera for the units rendered from now on, keeping everything
  // else loaded (a camera move without a reload; any image size). The result is bitwise what
  // loading the same data with that camera gives. Fails when nothing is loaded, or when the
  // device cannot: the caller then loads data that holds the new camera.
  virtual Status setCamera(const kernel::Camera& camera) {
    (void)camera;
    return Error{"this device cannot replace its camera without a load"};
  }
  virtual bool failed() const { return false; }

 protected:
  virtual Result<TileResult> renderUnit(const WorkUnit& unit, const RenderStop& stop) = 0;
};

}  // namespace pl
