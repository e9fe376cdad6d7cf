#include "core/cluster/upload_plan.h"

#include <unordered_map>

namespace pl {

namespace {
struct HashOf {
  size_t operator()(const Hash128& h) const { return size_t(h.lo ^ (h.hi * 0x9e3779b97f4a7c15ull)); }
};
}  // namespace

Result<std::vector<Hash128>> chunksToUpload(std::span<const Hash128> sceneChunks,
                                            std::span<const Hash128> missing) {
  std::unordered_map<Hash128, bool, HashOf> wanted;  // chunk -> listed already
  wanted.reserve(sceneChunks.size());
  for (const Hash128& h : sceneChunks) wanted.emplace(h, false);
  std::vector<Hash128> out;
  for (const Hash128& h : missing) {
    auto it = wanted.find(h);
    if (it == wanted.end())
      return Error{"the node asked for chunk " + h.hex() + ", which is not in this scene"};
    if (it->second) continue;
    it->second = true;
    out.push_back(h);
  }
  return out;
}

}  // namespace pl
