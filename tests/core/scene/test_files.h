#pragma once
// Helpers for scene tests: a scratch directory, file writing, and tiny glTF files built in
// code, so that malformed-input tests do not depend on shared data.

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/scene/load.h"

namespace pl::test {

// A fresh directory under the system temp dir, removed on destruction.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "pl_scene_XXXXXX").string();
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    char* made = mkdtemp(buf.data());
    path_ = made ? made : "";
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  std::string write(const std::string& name, const std::string& text) const {
    std::ofstream(file(name), std::ios::binary) << text;
    return file(name);
  }
  std::string write(const std::string& name, const std::vector<uint8_t>& bytes) const {
    std::ofstream f(file(name), std::ios::binary);
    f.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
    return file(name);
  }

 private:
  std::string path_;
};

inline std::string base64(const std::vector<uint8_t>& in) {
  static const char* k = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t v = (in[i] << 16) | (in[i + 1] << 8) | in[i + 2];
    out += k[v >> 18];
    out += k[(v >> 12) & 63];
    out += k[(v >> 6) & 63];
    out += k[v & 63];
  }
  if (i + 1 == in.size()) {
    uint32_t v = in[i] << 16;
    out += k[v >> 18];
    out += k[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == in.size()) {
    uint32_t v = (in[i] << 16) | (in[i + 1] << 8);
    out += k[v >> 18];
    out += k[(v >> 12) & 63];
    out += k[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

// The bytes of one triangle: 3 float3 positions (36 bytes) then 3 uint16 indices (6 bytes,
// padded to 8).
inline std::vector<uint8_t> triangleBuffer() {
  float p[9] = {0, 0, 0, 1, 0, 0, 0, 1, 0};
  uint16_t idx[4] = {0, 1, 2, 0};
  std::vector<uint8_t> b(sizeof p + sizeof idx);
  std::memcpy(b.data(), p, sizeof p);
  std::memcpy(b.data() + sizeof p, idx, sizeof idx);
  return b;
}

// A one-triangle glTF. `bufferUri` empty: embedded base64 data URI. The extra strings are
// spliced into the JSON to make variants: accessor fields, node fields, extra top-level members.
struct TriangleGltf {
  std::string bufferUri;
  uint64_t bufferByteLength = 44;
  std::string positionCount = "3";
  std::string indexCount = "3";
  std::string materialField;  // e.g. "\"material\": 0,"
  std::string nodeExtra;      // e.g. "\"children\": [0],"
  std::string topLevelExtra;  // e.g. "\"materials\": [...],"
  std::string positionExtra;  // extra members of accessor 0
  std::string json() const {
    std::string uri = bufferUri.empty()
                          ? "data:application/octet-stream;base64," + base64(triangleBuffer())
                          : bufferUri;
    return std::string("{\"asset\": {\"version\": \"2.0\"}, \"scene\": 0,") + topLevelExtra +
           "\"scenes\": [{\"nodes\": [0]}], \"nodes\": [{" + nodeExtra +
           "\"mesh\": 0}], \"meshes\": [{\"primitives\": [{" + materialField +
           "\"attributes\": {\"POSITION\": 0}, \"indices\": 1}]}], \"accessors\": [" +
           "{\"bufferView\": 0, \"componentType\": 5126, \"count\": " + positionCount +
           ", \"type\": \"VEC3\"" + positionExtra + "}," +
           "{\"bufferView\": 1, \"componentType\": 5123, \"count\": " + indexCount +
           ", \"type\": \"SCALAR\"}], \"bufferViews\": [" +
           "{\"buffer\": 0, \"byteOffset\": 0, \"byteLength\": 36}," +
           "{\"buffer\": 0, \"byteOffset\": 36, \"byteLength\": 6}], \"buffers\": [" +
           "{\"byteLength\": " + std::to_string(bufferByteLength) + ", \"uri\": \"" + uri + "\"}]}";
  }
};

// A .glb of the one-triangle glTF with its buffer in the BIN chunk.
inline std::vector<uint8_t> triangleGlb() {
  TriangleGltf g;
  std::string json = g.json();
  // Drop the uri member: GLB buffer 0 without uri is the BIN chunk.
  size_t at = json.find(", \"uri\"");
  size_t end = json.find("\"}", at);
  json = json.substr(0, at) + json.substr(end + 1);
  while (json.size() % 4) json += ' ';
  std::vector<uint8_t> bin = triangleBuffer();
  std::vector<uint8_t> out = {'g', 'l', 'T', 'F'};
  auto put32 = [&out](uint32_t v) {
    for (int i = 0; i < 4; ++i) out.push_back(uint8_t(v >> (8 * i)));
  };
  put32(2);
  put32(uint32_t(12 + 8 + json.size() + 8 + bin.size()));
  put32(uint32_t(json.size()));
  put32(0x4E4F534Au);
  out.insert(out.end(), json.begin(), json.end());
  put32(uint32_t(bin.size()));
  put32(0x004E4942u);
  out.insert(out.end(), bin.begin(), bin.end());
  return out;
}

inline bool haveShared(const std::string& relative) {
  return std::filesystem::exists(std::string(PEERLIGHT_SHARED_DIR) + "/" + relative);
}
inline std::string shared(const std::string& relative) {
  return std::string(PEERLIGHT_SHARED_DIR) + "/" + relative;
}

// The project's own Cornell box (scenes/cornell_box.gltf), loaded; an empty scene and a test
// failure when it does not load.
inline Scene ownCornellBox() {
  auto s = loadScene(std::string(PEERLIGHT_SOURCE_DIR) + "/scenes/cornell_box.gltf");
  EXPECT_TRUE(s.ok()) << (s.ok() ? "" : s.error().message);
  return s.ok() ? std::move(*s) : Scene();
}

}  // namespace pl::test
