#pragma once
// Rendering a whole image on this process's Devices: the image is cut into tiles
// and progressive sample passes (every tile gets samples [0, k), then [k, 2k), ...), each
// (tile, pass) one WorkUnit, and the results are merged into a Film. Used by
// `peerlight render`, `peerlight bench` and tests.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/render/device.h"
#include "core/render/film.h"
#include "core/render/work_unit.h"

namespace pl {

struct TilingOptions {
  uint32_t tileSize = 64;       // pixels, square tiles (clipped at the image border)
  uint32_t samplesPerPass = 4;  // samples per pixel of each pass
};

// All work units for a width x height image at spp samples per pixel, pass by pass and, within
// a pass, tile rows top to bottom. Together they cover every (pixel, sample) exactly once.
std::vector<WorkUnit> splitIntoWorkUnits(uint32_t width, uint32_t height, uint32_t spp,
                                         const TilingOptions& tiling = {});

// Progress after each work unit: pixel samples done so far, of the total (width*height*spp).
// Called on the thread that called renderLocal().
using ProgressCallback = std::function<void(uint64_t samplesDone, uint64_t samplesTotal)>;

struct DeviceShare {
  uint64_t units = 0;       // work units this device rendered and the film accepted
  uint64_t samples = 0;     // pixel samples in them
  uint64_t raysTraced = 0;
  std::string error;        // the device's error if it failed (its units went to the others)
};

struct LocalRenderStats {
  double seconds = 0;       // wall time of all device render() calls and merges
  uint64_t samples = 0;     // pixel samples rendered
  uint64_t raysTraced = 0;  // as reported by the devices
  std::vector<DeviceShare> devices;  // one per device, in the order given
};

// Renders every work unit of film's size and spp on device (already loaded with data whose
// camera has the film's size) and adds the results to film. Stops at the first error.
Result<LocalRenderStats> renderLocal(Device& device, Film& film, const TilingOptions& tiling = {},
                                     const ProgressCallback& progress = nullptr);

// The same on several devices at once (each already loaded with the same data): one thread per
// device takes the next unit from a shared list. A device that fails is dropped and the unit it
// held goes back to the others; the render fails only when every device has failed. With one
// kind of device the image is bitwise identical to a one-device render; a CPU and a GPU
// together agree with either alone within noise (docs/DESIGN.md section 4). progress is called
// from the device threads, one call at a time.
Result<LocalRenderStats> renderLocal(const std::vector<Device*>& devices, Film& film,
                                     const TilingOptions& tiling = {},
                                     const ProgressCallback& progress = nullptr);

}  // namespace pl
