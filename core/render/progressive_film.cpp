#include "core/render/progressive_film.h"

#include <algorithm>
#include <cmath>

#include "core/kernel/fixed_point.h"
#include "core/util/check.h"

namespace pl {

ProgressiveFilm::ProgressiveFilm(uint32_t width, uint32_t height, uint32_t spp,
                                 uint32_t channels)
    : width_(width), height_(height), spp_(spp), channels_(channels),
      committed_(width, height, spp, channels) {}

Status ProgressiveFilm::add(const TileResult& result, uint32_t pass) {
  if (pass < committedPasses_)
    return Error{"tile result " + result.unit.describe() + ": pass " + std::to_string(pass) +
                 " is complete already"};
  auto it = pending_.find(pass);
  if (it == pending_.end()) it = pending_.emplace(pass, Film(width_, height_, spp_, channels_)).first;
  return it->second.add(result);
}

bool ProgressiveFilm::commit(uint32_t passes, uint32_t samples) {
  if (passes <= committedPasses_) return false;
  std::vector<int64_t> sums = committed_.sums();
  for (auto it = pending_.begin(); it != pending_.end() && it->first < passes;) {
    const std::vector<int64_t>& add = it->second.sums();
    if (retired_.empty()) {
      for (size_t i = 0; i < sums.size(); ++i) sums[i] += add[i];
    } else {
      for (size_t p = 0; p < retired_.size(); ++p) {
        if (retired_[p] != 0) continue;
        for (size_t c = p * channels_; c < (p + 1) * channels_; ++c) sums[c] += add[c];
      }
    }
    it = pending_.erase(it);
  }
  Status set = committed_.setSums(std::move(sums));
  PL_CHECK(set.ok());
  committedPasses_ = passes;
  committedSamples_ = samples;
  return true;
}

Film ProgressiveFilm::snapshot() const {
  PL_CHECK(committedSamples_ >= 1);
  Film film(width_, height_, committedSamples_, channels_);
  Status set = film.setSums(committed_.sums());
  PL_CHECK(set.ok());
  set = film.setPixelSamples(pixelSamples());
  PL_CHECK(set.ok());
  return film;
}

std::vector<uint32_t> ProgressiveFilm::pixelSamples() const {
  if (retired_.empty()) return {};
  std::vector<uint32_t> samples(retired_.size());
  for (size_t p = 0; p < retired_.size(); ++p)
    samples[p] = retired_[p] != 0 ? retired_[p] : committedSamples_;
  return samples;
}

double ProgressiveFilm::noise(const Rect& r, uint32_t passSamples) const {
  PL_CHECK(r.width > 0 && r.height > 0 && uint64_t(r.x) + r.width <= width_ &&
           uint64_t(r.y) + r.height <= height_);
  const uint32_t before = committedSamples_;
  if (before == 0 || passSamples == 0) return 0.0;
  auto it = pending_.find(committedPasses_);
  const std::vector<int64_t>& a = committed_.sums();
  const std::vector<int64_t>* b = it == pending_.end() ? nullptr : &it->second.sums();
  const double scale = kernel::kFixedInvScale;
  const double total = double(before) + double(passSamples);
  double worst = 0.0;
  for (uint32_t y = r.y; y < r.y + r.height; ++y) {
    for (uint32_t x = r.x; x < r.x + r.width; ++x) {
      const size_t p = size_t(y) * width_ + x;
      if (!retired_.empty() && retired_[p] != 0) continue;
      double difference = 0.0, brightness = 0.0;
      for (size_t c = 0; c < 3; ++c) {
        const double sa = double(a[p * channels_ + c]) * scale;
        const double sb = b == nullptr ? 0.0 : double((*b)[p * channels_ + c]) * scale;
        const double mean = (sa + sb) / total;
        difference += std::fabs(mean - sa / double(before));
        brightness += mean;
      }
      worst = std::max(worst, difference / (0.0001 + std::sqrt(brightness)));
    }
  }
  return worst;
}

void ProgressiveFilm::retire(const Rect& r) {
  PL_CHECK(r.width > 0 && r.height > 0 && uint64_t(r.x) + r.width <= width_ &&
           uint64_t(r.y) + r.height <= height_ && committedSamples_ > 0);
  if (retired_.empty()) retired_.assign(size_t(width_) * height_, 0);
  for (uint32_t y = r.y; y < r.y + r.height; ++y)
    for (uint32_t x = r.x; x < r.x + r.width; ++x) {
      uint32_t& kept = retired_[size_t(y) * width_ + x];
      if (kept != 0) continue;
      kept = committedSamples_;
      ++retiredPixels_;
    }
}

}  // namespace pl
