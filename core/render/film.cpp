#include "core/render/film.h"

#include <algorithm>

#include "core/kernel/fixed_point.h"
#include "core/util/check.h"

namespace pl {

Film::Film(uint32_t width, uint32_t height, uint32_t samplesPerPixel, uint32_t channels)
    : width_(width), height_(height), spp_(samplesPerPixel), channels_(channels),
      sums_(size_t(width) * height * channels, 0) {}

Status Film::add(const TileResult& result) {
  const WorkUnit& u = result.unit;
  if (u.totalSamples != spp_)
    return Error{"tile result " + u.describe() + ": film has " + std::to_string(spp_) + " spp"};
  if (Status s = u.validate(width_, height_); !s.ok()) return s;
  if (result.sums.size() != u.tile.pixelCount() * channels_)
    return Error{"tile result " + u.describe() + ": " + std::to_string(result.sums.size()) +
                 " sums, expected " + std::to_string(u.tile.pixelCount() * channels_)};
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
    int64_t* dst = &sums_[(size_t(u.tile.y + y) * width_ + u.tile.x) * channels_];
    for (uint32_t i = 0; i < u.tile.width * channels_; ++i) dst[i] += *src++;
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

Status Film::setPixelSamples(std::vector<uint32_t> samples) {
  if (!samples.empty() && samples.size() != size_t(width_) * height_)
    return Error{"film of " + std::to_string(width_) + "x" + std::to_string(height_) + ": " +
                 std::to_string(samples.size()) + " sample counts, expected " +
                 std::to_string(size_t(width_) * height_)};
  for (size_t p = 0; p < samples.size(); ++p)
    if (samples[p] > spp_)
      return Error{"film: pixel " + std::to_string(p) + " holds " + std::to_string(samples[p]) +
                   " samples, more than the film's " + std::to_string(spp_)};
  pixelSamples_ = std::move(samples);
  return Status();
}

double Film::scaleAt(size_t pixel) const {
  const uint32_t n = samplesAt(pixel);
  return n == 0 ? 0.0 : kernel::kFixedInvScale / double(n);
}

Film Film::cropped(const Rect& r) const {
  PL_CHECK(r.width > 0 && r.height > 0 && uint64_t(r.x) + r.width <= width_ &&
           uint64_t(r.y) + r.height <= height_);
  Film out(r.width, r.height, spp_, channels_);
  for (uint32_t y = 0; y < r.height; ++y) {
    const auto from = sums_.begin() + long((size_t(r.y + y) * width_ + r.x) * channels_);
    std::copy(from, from + long(size_t(r.width) * channels_),
              out.sums_.begin() + long(size_t(y) * r.width * channels_));
  }
  if (!pixelSamples_.empty()) {
    out.pixelSamples_.resize(r.pixelCount());
    for (uint32_t y = 0; y < r.height; ++y)
      for (uint32_t x = 0; x < r.width; ++x)
        out.pixelSamples_[size_t(y) * r.width + x] =
            pixelSamples_[size_t(r.y + y) * width_ + r.x + x];
  }
  return out;
}

std::vector<float> Film::linearRgb() const {
  const size_t pixels = size_t(width_) * height_;
  std::vector<float> out(pixels * 3);
  for (size_t p = 0; p < pixels; ++p) {
    const double scale = scaleAt(p);
    for (size_t c = 0; c < 3; ++c) out[p * 3 + c] = float(double(sums_[p * channels_ + c]) * scale);
  }
  return out;
}

std::vector<float> Film::pass(kernel::FilmPass which) const {
  const size_t pixels = size_t(width_) * height_;
  std::vector<float> out(pixels * 3, 0.0f);
  if (!hasPasses()) return out;
  for (size_t p = 0; p < pixels; ++p) {
    const double scale = scaleAt(p);
    const int64_t* s = &sums_[p * channels_];
    for (size_t c = 0; c < 3; ++c) {
      double v;
      if (which == kernel::kPassAlbedo)
        v = double(s[3 + c]) * scale;
      else if (which == kernel::kPassNormal)
        v = 2.0 * double(s[6 + c]) * scale - 1.0;
      else
        v = double(s[9]) * scale;
      out[p * 3 + c] = float(v);
    }
  }
  return out;
}

}  // namespace pl
