#pragma once
// Film: the image being assembled from TileResults. Merging is exact integer addition, so the
// result does not depend on how the samples were split or in which order results arrive.
// The film does not deduplicate: the scheduler adds each (tile, sample range) exactly once.

#include <cstdint>
#include <vector>

#include "core/kernel/types.h"
#include "core/render/work_unit.h"
#include "core/util/status.h"

namespace pl {

class Film {
 public:
  // channels: kernel::filmChannels() of the scene's passes (3: R, G, B only).
  Film(uint32_t width, uint32_t height, uint32_t samplesPerPixel,
       uint32_t channels = kernel::kBeautyChannels);

  // Adds a result. Fails (and changes nothing) if its tile lies outside the film, its sums
  // have the wrong length, or its sample count does not match this film.
  Status add(const TileResult& result);

  uint32_t width() const { return width_; }
  uint32_t height() const { return height_; }
  uint32_t samplesPerPixel() const { return spp_; }
  uint32_t channels() const { return channels_; }
  bool hasPasses() const { return channels_ > kernel::kBeautyChannels; }
  const std::vector<int64_t>& sums() const { return sums_; }
  // Replaces every sum (e.g. with a film rendered in another process, sent as its exact sums).
  // Fails (and changes nothing) unless there are exactly channels() per pixel.
  Status setSums(std::vector<int64_t> sums);

  // Samples per pixel where they differ between pixels (adaptive sampling: pixels that were
  // done early hold fewer than samplesPerPixel()). Empty: every pixel holds samplesPerPixel().
  const std::vector<uint32_t>& pixelSamples() const { return pixelSamples_; }
  uint32_t samplesAt(size_t pixel) const {
    return pixelSamples_.empty() ? spp_ : pixelSamples_[pixel];
  }
  // Fails (and changes nothing) unless there is one count per pixel, each <= samplesPerPixel();
  // empty: every pixel holds samplesPerPixel().
  Status setPixelSamples(std::vector<uint32_t> samples);

  // The pixels of `region` (within the film: checked) as a film of their own (a cropped
  // render border).
  Film cropped(const Rect& region) const;

  // Linear RGB, 3 floats per pixel, row-major, top row first: sums / samples of the pixel (0
  // for a pixel with none).
  std::vector<float> linearRgb() const;
  // One pass (hasPasses() only), 3 floats per pixel, row-major: the mean albedo, the mean
  // shading normal (decoded to -1..1; not renormalized), or the mean depth repeated 3 times.
  std::vector<float> pass(kernel::FilmPass which) const;

 private:
  // 1 / samples of the pixel in radiance units (0 for none).
  double scaleAt(size_t pixel) const;

  uint32_t width_, height_, spp_, channels_;
  std::vector<int64_t> sums_;  // channels_ per pixel
  std::vector<uint32_t> pixelSamples_;  // empty: spp_ everywhere
};

}  // namespace pl
