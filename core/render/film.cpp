#include "core/render/film.h"

#include "core/kernel/fixed_point.h"

namespace pl {

Film::Film(uint32_t width, uint32_t height, uint32_t samplesPerPixel)
    : width_(width), height_(height), spp_(samplesPerPixel),
      sums_(size_t(width) * height * 3, 0) {}

Status Film::add(const TileResult& result) {
  const WorkUnit& u = result.unit;
  if (u.totalSamples != spp_)
    return Error{"tile result " + u.describe() + ": film has " + std::to_string(spp_) + " spp"};
  if (Status s = u.validate(width_, height_); !s.ok()) return s;
  if (result.sums.size() != u.tile.pixelCount() * 3)
    return Error{"tile result " + u.describe() + ": " + std::to_string(result.sums.size()) +
                 " sums, expected " + std::to_string(u.tile.pixelCount() * 3)};
  // Each sample adds 0 .. toFixed(kMaxSampleValue): sums outside sampleCount times that did not
  // come from the kernel (a broken or hostile node), and could overflow the film.
  const double maxSum =
      double(u.sampleCount()) * double(kernel::toFixed(kernel::kMaxSampleValue));
  const int64_t bound = maxSum >= 9.2e18 ? INT64_MAX : int64_t(maxSum);
  for (size_t i = 0; i < result.sums.size(); ++i) {
    if (result.sums[i] < 0 || result.sums[i] > bound)
      return Error{"tile result " + u.describe() + ": sum " + std::to_string(result.sums[i]) +
                   " at value " + std::to_string(i) + " is outside 0.." + std::to_string(bound)};
  }
  const int64_t* src = result.sums.data();
  for (uint32_t y = 0; y < u.tile.height; ++y) {
    int64_t* dst = &sums_[(size_t(u.tile.y + y) * width_ + u.tile.x) * 3];
    for (uint32_t i = 0; i < u.tile.width * 3; ++i) dst[i] += *src++;
  }
  return Status();
}

Status Film::setSums(std::vector<int64_t> sums) {
  if (sums.size() != sums_.size())
    return Error{"film of " + std::to_string(width_) + "x" + std::to_string(height_) + ": " +
                 std::to_string(sums.size()) + " sums, expected " + std::to_string(sums_.size())};
  sums_ = std::move(sums);
  return Status();
}

std::vector<float> Film::linearRgb() const {
  std::vector<float> out(sums_.size());
  const double scale = kernel::kFixedInvScale / double(spp_);
  for (size_t i = 0; i < sums_.size(); ++i) out[i] = float(double(sums_[i]) * scale);
  return out;
}

}  // namespace pl
