#pragma once
// The project's Cornell box, compiled small: what the seeds are made of.

#include <string>

#include "core/scene/compile.h"
#include "core/util/check.h"

namespace pl::fuzz {

inline std::string cornellBoxPath() {
  return std::string(PEERLIGHT_SOURCE_DIR) + "/scenes/cornell_box.gltf";
}

inline RenderData seedRenderData(uint32_t passes = 0) {
  CompileOptions options;
  options.width = options.height = 16;
  options.passes = passes;
  Result<RenderData> data = loadAndCompile(cornellBoxPath(), options);
  PL_CHECK_MSG(data.ok(), "%s", data.ok() ? "" : data.error().message.c_str());
  return std::move(*data);
}

}  // namespace pl::fuzz
