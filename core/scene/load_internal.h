#pragma once
// Pieces shared by the loaders in core/scene (not part of the public API).

#include <cstdint>
#include <string>
#include <vector>

#include "core/scene/scene.h"
#include "core/util/status.h"

namespace pl::detail {

// Reads a whole file, refusing files larger than maxBytes. Errors name the path.
Result<std::vector<uint8_t>> readFile(const std::string& path, uint64_t maxBytes);

// The directory part of a path ("" for a bare file name), with a trailing '/'.
std::string directoryOf(const std::string& path);

// Decodes a PNG/JPEG/BMP/TGA/... image to RGBA8 with stb_image, refusing images larger than
// kMaxTextureDimension on a side, or with more texels than *texelBudget (which is reduced by
// the image's texel count, before decoding: one scene file may name one small, highly
// compressed, huge image many times). On failure returns an Error whose message says why,
// without naming a file (callers add that).
Result<SceneTexture> decodeImage(const uint8_t* bytes, size_t size, uint64_t* texelBudget);

Result<Scene> loadGltf(const std::string& path, bool binary);
Result<Scene> loadObj(const std::string& path);

}  // namespace pl::detail
