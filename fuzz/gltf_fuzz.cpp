// A scene file (core/scene/load.h): the first byte picks .glb or .gltf, the rest is the file.
// Written to a private temporary file, since the loaders read files (and resolve external
// buffers next to them).
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>

#include "core/scene/load.h"
#include "fuzz/fuzz_target.h"
#include "fuzz/seed_scene.h"

namespace {

std::string scratchPath(bool binary) {
  static const std::string dir = [] {
    char templ[] = "/tmp/peerlight-fuzz-XXXXXX";
    const char* made = ::mkdtemp(templ);
    return std::string(made ? made : "/tmp");
  }();
  return dir + (binary ? "/input.glb" : "/input.gltf");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const bool binary = data[0] & 1;
  const std::string path = scratchPath(binary);
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data + 1), std::streamsize(size - 1));
  }
  (void)pl::loadScene(path);
  return 0;
}

std::vector<std::vector<uint8_t>> pl::fuzz::seeds() {
  std::ifstream in(cornellBoxPath(), std::ios::binary);
  std::vector<uint8_t> gltf = {0};
  gltf.insert(gltf.end(), std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  return {gltf};
}
