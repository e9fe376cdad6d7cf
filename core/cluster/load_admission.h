#pragma once
// Which scene loads a Render Node admits (DESIGN.md, "Memory"), as pure logic: the scenes a
// lease (or the worker process serving it) holds decoded, and the verdict on a load that adds
// one. The node carries the verdict out: it ends the lease with LeaseEnd::MemoryBudget (busy:
// ask again later) or LeaseEnd::SceneTooLarge (this node will never hold it: do not ask again
// for this scene).
//
// A lease holds at most `window` distinct scenes: a session whose edits change geometry
// loads a new scene per edit, and the node keeps the most recent ones (maxScenesPerSession).
// Scenes are named by their geometry key (a camera move loads the same scene again). No clock,
// no threads.
//
//   SceneWindow scenes(4);
//   LoadVerdict v = admitLoad(&budget, {MemoryHolder::Kind::Lease, 7}, scenes,
//                             {key, decodedBytes}, maxSceneBytes, cacheCapacity);
//   if (v.outcome == LoadOutcome::Admitted) { scenes = v.scenes; stopWarmWorkers(v.evict); }

#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "core/cluster/memory_budget.h"
#include "core/util/hash.h"

namespace pl {

struct HeldScene {
  Hash128 key;         // the scene's geometry key
  uint64_t bytes = 0;  // its decoded render data
};

// The last `window` scenes loaded (oldest first); one loaded again counts once, at its latest.
class SceneWindow {
 public:
  explicit SceneWindow(uint32_t window) : window_(window < 1 ? 1 : window) {}

  // The window after loading `scene`: it moves to the newest end, and the oldest falls out
  // beyond the window.
  SceneWindow with(const HeldScene& scene) const;
  bool contains(const Hash128& key) const;
  // Decoded bytes of the scenes held (each once).
  uint64_t bytes() const;
  bool empty() const { return scenes_.empty(); }
  const std::deque<HeldScene>& scenes() const { return scenes_; }

 private:
  uint32_t window_;
  std::deque<HeldScene> scenes_;  // distinct keys, oldest first
};

enum class LoadOutcome {
  Admitted,
  Busy,           // does not fit the memory budget now: the lease ends, the Primary asks later
  SceneTooLarge,  // beyond the node's scene limit, or more than its budget could ever hold
};

struct LoadVerdict {
  LoadOutcome outcome = LoadOutcome::Admitted;
  std::string why;  // refused: "the scene needs 900 MiB of render data, more than ..."
  // Admitted: the holder's scenes from now on, and the evictable holders released to make room
  // (the caller stops them).
  SceneWindow scenes{1};
  std::vector<MemoryHolder> evict;
};

// The verdict on `holder` loading `scene` while holding `held`. maxSceneBytes bounds any one
// scene. With a budget (null: none), the holder's reservation becomes the window's bytes after
// the load (the scene moves to its newest end); a load of a scene it holds already reserves
// nothing more. The chunks waiting for the load are the chunk cache's reservation (its
// capacity `cacheBytes`, or more while pins hold more: transport/chunk_cache.h). A scene
// larger than the budget less the cache's capacity (as far as the budget holds it) is
// SceneTooLarge; what pins hold beyond it is transient, so a scene that does not fit beside
// them is Busy. A scene that could never fit,
// however little else is reserved (the chunk cache's reservation aside), is SceneTooLarge; one
// that does not fit now, beside what is reserved (the holder's other scenes included), is Busy.
// An admitted reservation is made in `budget` here.
LoadVerdict admitLoad(MemoryBudget* budget, const MemoryHolder& holder, const SceneWindow& held,
                      const HeldScene& scene, uint64_t maxSceneBytes, uint64_t cacheBytes);

// Why a scene of `sceneBytes` decoded bytes can never load here (admitLoad's SceneTooLarge:
// beyond maxSceneBytes, or more than the budget, null for none, less the cache's capacity as
// far as the budget holds it), or "" when it may. The node asks it before an upload too (the
// Primary names the scene's size with missing()), so that no chunk of such a scene is sent.
std::string whySceneTooLarge(const MemoryBudget* budget, uint64_t sceneBytes,
                             uint64_t maxSceneBytes, uint64_t cacheBytes);

}  // namespace pl
