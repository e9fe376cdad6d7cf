// An encoded scene as a Primary hands it to its node daemon (transport/chunk_codec.h: the
// manifest and its chunks), parsed, then decoded into RenderData and validated.
#include <memory>

#include "fuzz/fuzz_target.h"
#include "fuzz/seed_scene.h"
#include "transport/chunk_codec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto copy = std::make_shared<std::vector<uint8_t>>(data, data + size);
  pl::Result<pl::EncodedScene> scene =
      pl::parseEncodedScene(std::span<const uint8_t>(copy->data(), copy->size()), copy);
  if (scene.ok()) (void)pl::decodeRenderData(scene->manifest, scene->chunks);
  return 0;
}

std::vector<std::vector<uint8_t>> pl::fuzz::seeds() {
  ChunkStore store;
  const ChunkManifest manifest = encodeRenderData(seedRenderData(), store);
  return {serializeEncodedScene(manifest, store)};
}
