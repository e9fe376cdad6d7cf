#pragma once
// Which chunks a Primary uploads to a node, from the node's answer to missing() (DESIGN.md,
// "Data path"), as pure logic. The answer comes from the network: a node may list a chunk many
// times, or name chunks that are not in the scene. Each chunk goes at most once, in the order
// the node listed them; a chunk that is not in the scene fails the upload (the node is broken
// or hostile), naming it.

#include <span>
#include <vector>

#include "core/util/hash.h"
#include "core/util/status.h"

namespace pl {

Result<std::vector<Hash128>> chunksToUpload(std::span<const Hash128> sceneChunks,
                                            std::span<const Hash128> missing);

}  // namespace pl
