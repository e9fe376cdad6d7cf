#pragma once
// ProgressiveFilm: a Film for progressive passes whose results arrive out of order.
//
// The scheduler (core/cluster/scheduler.h) hands out pass k+1 once pass k is handed out, so a
// result of a later pass can be accepted before an earlier pass is complete. The image shown or
// saved at "N samples per pixel" must hold exactly the samples [0, N) of every pixel, so results
// are kept per pass until their pass and every earlier one is complete, and only then merged
// into the committed sums. Merging stays exact integer addition (film.h): a snapshot at N spp
// is bitwise the film that one device rendering samples [0, N) would give.
//
//   ProgressiveFilm film(width, height, spp);
//   if (scheduler.complete(device, unit, now)) {
//     film.add(result, scheduler.passOf(unit));
//     film.commit(scheduler.completedPasses(), scheduler.completedSamples());
//   }
//   Film image = film.snapshot();  // committedSamples() spp
//
// Adaptive sampling: after committing pass k, the caller may retire pixels (retire(), the tiles
// the scheduler's decide() was told are done): they keep the samples they hold, and results of
// later passes that reach them are left out. noise() measures, before pass k is committed, how
// far its samples disagree with those before it.
//
// Memory: one sums buffer for the committed passes plus one per pass that has results but is
// not committed yet (usually one or two). Not thread-safe.

#include <cstdint>
#include <map>
#include <vector>

#include "core/render/film.h"

namespace pl {

class ProgressiveFilm {
 public:
  // spp: the samples per pixel of the whole frame (WorkUnit::totalSamples of its units).
  // channels: kernel::filmChannels() of the scene's passes.
  ProgressiveFilm(uint32_t width, uint32_t height, uint32_t spp,
                  uint32_t channels = kernel::kBeautyChannels);

  // Adds an accepted result of pass `pass`. Fails (changing nothing) as Film::add does, and for
  // a pass that is committed already (a bug in the caller: the scheduler accepts a result once).
  Status add(const TileResult& result, uint32_t pass);

  // Passes [0, passes) are complete and hold exactly samples [0, samples) of every pixel:
  // merges their results into the committed sums. Returns true when this committed something.
  bool commit(uint32_t passes, uint32_t samples);

  uint32_t width() const { return width_; }
  uint32_t height() const { return height_; }
  uint32_t samplesPerPixel() const { return spp_; }
  uint32_t channels() const { return channels_; }
  uint32_t committedPasses() const { return committedPasses_; }
  uint32_t committedSamples() const { return committedSamples_; }
  // The committed image as a Film of committedSamples() spp (which must be >= 1); retired
  // pixels hold fewer (Film::pixelSamples()).
  Film snapshot() const;
  // The committed sums (channels() per pixel, row-major).
  const std::vector<int64_t>& committedSums() const { return committed_.sums(); }
  // Committed samples of each pixel (row-major), or empty when no pixel is retired (all hold
  // committedSamples()).
  std::vector<uint32_t> pixelSamples() const;

  // The noise of `rect`'s pixels (within the film: checked) once pass committedPasses() is
  // complete (not committed yet), which holds `passSamples` samples per pixel: the largest
  // per-pixel error estimate over the rectangle, from two halves, a = the committed samples and
  // b = the pass's (each a mean radiance):
  //   I = the mean of all the pixel's samples,
  //   error = (|I - a|.r + |I - a|.g + |I - a|.b) / (0.0001 + sqrt(I.r + I.g + I.b)).
  // The denominator makes it relative to the pixel's brightness, with a square root as the eye
  // sees noise. Pixels without committed samples (outside a render border) count 0.
  double noise(const Rect& rect, uint32_t passSamples) const;
  // The pixels of `rect` keep the samples they hold now: later passes leave them out.
  void retire(const Rect& rect);
  uint64_t retiredPixels() const { return retiredPixels_; }

 private:
  uint32_t width_, height_, spp_, channels_;
  uint32_t committedPasses_ = 0;
  uint32_t committedSamples_ = 0;
  Film committed_;
  std::map<uint32_t, Film> pending_;  // by pass
  // Per pixel: 0 while it takes new passes, else the samples it kept when it retired. Empty
  // until a pixel retires.
  std::vector<uint32_t> retired_;
  uint64_t retiredPixels_ = 0;
};

}  // namespace pl
