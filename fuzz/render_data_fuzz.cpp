// Compiled render data as the compiled cache stores it (core/scene/render_data.h
// deserialize(): bounded sizes, then RenderData::validate()).
#include "core/scene/render_data.h"
#include "fuzz/fuzz_target.h"
#include "fuzz/seed_scene.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)pl::deserialize(data, size);
  return 0;
}

std::vector<std::vector<uint8_t>> pl::fuzz::seeds() {
  return {serialize(seedRenderData()), serialize(seedRenderData(kernel::kAllPasses))};
}
