#include "core/cluster/load_admission.h"

#include <algorithm>
#include <utility>

namespace pl {

SceneWindow SceneWindow::with(const HeldScene& scene) const {
  SceneWindow next = *this;
  std::erase_if(next.scenes_, [&](const HeldScene& s) { return s.key == scene.key; });
  next.scenes_.push_back(scene);
  while (next.scenes_.size() > window_) next.scenes_.pop_front();
  return next;
}

bool SceneWindow::contains(const Hash128& key) const {
  return std::any_of(scenes_.begin(), scenes_.end(),
                     [&](const HeldScene& s) { return s.key == key; });
}

uint64_t SceneWindow::bytes() const {
  uint64_t total = 0;
  for (const HeldScene& s : scenes_) total += s.bytes;
  return total;
}

namespace {

std::string mib(uint64_t bytes) { return std::to_string(bytes >> 20) + " MiB"; }

LoadVerdict refuse(LoadOutcome outcome, std::string why) {
  LoadVerdict v;
  v.outcome = outcome;
  v.why = std::move(why);
  return v;
}

}  // namespace

std::string whySceneTooLarge(const MemoryBudget* budget, uint64_t sceneBytes,
                             uint64_t maxSceneBytes, uint64_t cacheBytes) {
  if (sceneBytes > maxSceneBytes)
    return "the scene needs " + mib(sceneBytes) + " of render data, more than this node accepts (" +
           mib(maxSceneBytes) + ")";
  if (budget == nullptr) return "";
  // The cache's lasting share: its capacity as the budget holds it (a daemon reserves it at
  // start; what pins add beyond it is transient).
  const uint64_t cache =
      std::min(cacheBytes, budget->heldBy({MemoryHolder::Kind::ChunkCache, 0}));
  const uint64_t room = budget->capacity() - std::min(budget->capacity(), cache);
  if (sceneBytes > room)
    return "the scene needs " + mib(sceneBytes) +
           " of render data, more than this node accepts (its memory budget holds " + mib(room) +
           " for scenes)";
  return "";
}

LoadVerdict admitLoad(MemoryBudget* budget, const MemoryHolder& holder, const SceneWindow& held,
                      const HeldScene& scene, uint64_t maxSceneBytes, uint64_t cacheBytes) {
  if (scene.bytes > maxSceneBytes || (budget != nullptr && !held.contains(scene.key))) {
    std::string why = whySceneTooLarge(budget, scene.bytes, maxSceneBytes, cacheBytes);
    if (!why.empty()) return refuse(LoadOutcome::SceneTooLarge, std::move(why));
  }
  LoadVerdict v;
  v.scenes = held.with(scene);  // loaded again: the newest, as the devices keep it
  if (budget == nullptr || held.contains(scene.key))
    return v;  // nothing to reserve (no budget), or reserved already (a camera move, or again)
  // With the scenes it holds already it may not fit now: busy.
  MemoryGrant grant = budget->reserve(holder, v.scenes.bytes());
  if (!grant.granted) return refuse(LoadOutcome::Busy, budget->refusalText(grant));
  v.evict = std::move(grant.evict);
  return v;
}

}  // namespace pl
