#include "core/render/progressive_film.h"

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
    for (size_t i = 0; i < sums.size(); ++i) sums[i] += add[i];
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
  return film;
}

}  // namespace pl
