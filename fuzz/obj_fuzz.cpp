// An OBJ scene with its MTL (core/scene/load.h): the input up to the first 0xff byte is the .obj
// file, the rest its material library (input.mtl, which the seed's `mtllib` names). Written to a
// private temporary folder, since the loader reads files and resolves the library beside them.
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <string>

#include "core/scene/load.h"
#include "fuzz/fuzz_target.h"

namespace {

const std::string& scratchDir() {
  static const std::string dir = [] {
    char templ[] = "/tmp/peerlight-fuzz-obj-XXXXXX";
    const char* made = ::mkdtemp(templ);
    return std::string(made ? made : "/tmp");
  }();
  return dir;
}

void writeFile(const std::string& path, const uint8_t* data, size_t size) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), std::streamsize(size));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const uint8_t* split = std::find(data, data + size, uint8_t(0xff));
  const std::string obj = scratchDir() + "/input.obj";
  writeFile(obj, data, size_t(split - data));
  const uint8_t* mtl = split == data + size ? split : split + 1;
  writeFile(scratchDir() + "/input.mtl", mtl, size_t(data + size - mtl));
  (void)pl::loadScene(obj);
  return 0;
}

std::vector<std::vector<uint8_t>> pl::fuzz::seeds() {
  // A textured quad and a triangle with normals, two materials (one emissive), groups,
  // negative indices and a missing texture (a warning and a placeholder).
  const std::string obj =
      "mtllib input.mtl\n"
      "o floor\n"
      "v -1 0 -1\nv 1 0 -1\nv 1 0 1\nv -1 0 1\n"
      "vt 0 0\nvt 1 0\nvt 1 1\nvt 0 1\n"
      "vn 0 1 0\n"
      "usemtl white\n"
      "f 1/1/1 2/2/1 3/3/1 4/4/1\n"
      "g lamp\n"
      "v 0 2 0\nv 0.5 2 0\nv 0 2 0.5\n"
      "usemtl light\n"
      "f -3 -2 -1\n";
  const std::string mtl =
      "newmtl white\nKd 0.8 0.8 0.8\nNs 10\nmap_Kd missing.png\n"
      "newmtl light\nKd 0 0 0\nKe 4 4 4\nd 1\n";
  std::vector<uint8_t> seed(obj.begin(), obj.end());
  seed.push_back(0xff);
  seed.insert(seed.end(), mtl.begin(), mtl.end());
  return {seed};
}
