// chunksToUpload (core/cluster/upload_plan.h): a node's missing() answer, which comes from the
// network, decides nothing beyond which of the scene's chunks go, each once.

#include "core/cluster/upload_plan.h"

#include <gtest/gtest.h>

namespace pl {
namespace {

Hash128 h(uint64_t n) { return Hash128{n, n * 3}; }

TEST(UploadPlan, EachMissingChunkGoesOnceInTheNodesOrder) {
  const std::vector<Hash128> scene = {h(1), h(2), h(3), h(4)};
  // A node that lists chunk 3 a thousand times gets it once.
  std::vector<Hash128> missing = {h(3), h(1)};
  for (int i = 0; i < 1000; ++i) missing.push_back(h(3));
  Result<std::vector<Hash128>> plan = chunksToUpload(scene, missing);
  ASSERT_TRUE(plan.ok()) << plan.error().message;
  EXPECT_EQ(*plan, (std::vector<Hash128>{h(3), h(1)}));
  EXPECT_TRUE(chunksToUpload(scene, {}).value().empty());
}

TEST(UploadPlan, AChunkOutsideTheSceneFailsNamingIt) {
  const std::vector<Hash128> scene = {h(1), h(2)};
  const std::vector<Hash128> missing = {h(1), h(9)};
  Result<std::vector<Hash128>> plan = chunksToUpload(scene, missing);
  ASSERT_FALSE(plan.ok());
  EXPECT_NE(plan.error().message.find(h(9).hex()), std::string::npos) << plan.error().message;
}

}  // namespace
}  // namespace pl
