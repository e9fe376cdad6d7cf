#include "core/cluster/pass_commit.h"

#include <vector>

namespace pl {

bool commitNextPass(Scheduler& scheduler, ProgressiveFilm& film, double noiseThreshold) {
  const uint32_t pass = film.committedPasses();
  if (pass >= scheduler.completedPasses()) return false;
  std::vector<uint32_t> done;
  const bool judge = scheduler.pendingDecision() == pass;
  if (judge && noiseThreshold > 0) {
    const auto [begin, end] = scheduler.passRange(pass);
    for (uint32_t tile = 0; tile < scheduler.tileCount(); ++tile)
      if (scheduler.tileActive(tile, pass) &&
          film.noise(scheduler.tile(tile), end - begin) < noiseThreshold)
        done.push_back(tile);
  }
  film.commit(pass + 1, scheduler.passRange(pass).second);
  for (uint32_t tile : done) film.retire(scheduler.tile(tile));
  if (judge) scheduler.decide(pass, done);
  return true;
}

}  // namespace pl
