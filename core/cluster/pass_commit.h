#pragma once
// Committing a frame's passes into its film, in order, and (adaptive sampling) judging at each
// pass end which tiles are done. Pure logic over a Scheduler and a ProgressiveFilm: the render
// session calls it after every accepted result.

#include <cstdint>

#include "core/cluster/scheduler.h"
#include "core/render/progressive_film.h"

namespace pl {

// Adaptive frames judge noise per tile of this size (pixels, at most; FrameSpec::tileSize).
constexpr uint32_t kAdaptiveTileSize = 16;

// Commits the next pass if the scheduler counts it complete, and returns whether it did (call
// until false: a later pass's results may complete several at once).
//
// Adaptive frames (FrameSpec::adaptive, noiseThreshold > 0): when the scheduler waits for the
// pass's decision, each tile that took part in the pass is judged before the commit
// (ProgressiveFilm::noise(): the pass's samples against those before it, which are as many), and
// a tile whose noise is below the threshold retires: the film keeps its samples and the scheduler
// gives it no more (Scheduler::decide()). The decision depends only on the film's samples, so
// the image is the same whatever the timing and the number of devices.
bool commitNextPass(Scheduler& scheduler, ProgressiveFilm& film, double noiseThreshold);

}  // namespace pl
