// RenderData serialization round trip, rejection of corrupt data, and validate().

#include "core/scene/render_data.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "core/scene/compile.h"

namespace pl {
namespace {

RenderData cornellBox() {
  CompileOptions o;
  o.width = 64;
  o.height = 48;
  auto rd = loadAndCompile(std::string(PEERLIGHT_SOURCE_DIR) + "/scenes/cornell_box.gltf", o);
  EXPECT_TRUE(rd.ok()) << (rd.ok() ? "" : rd.error().message);
  return rd.ok() ? std::move(*rd) : RenderData();
}

TEST(RenderData, CompiledDataValidates) {
  RenderData rd = cornellBox();
  Status s = rd.validate();
  EXPECT_TRUE(s.ok()) << (s.ok() ? "" : s.error().message);
}

TEST(RenderData, SerializeRoundTrip) {
  RenderData rd = cornellBox();
  std::vector<uint8_t> bytes = serialize(rd);
  auto back = deserialize(bytes.data(), bytes.size());
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(serialize(*back), bytes);
  EXPECT_EQ(back->arrayHashes(), rd.arrayHashes());
  EXPECT_EQ(back->byteSize(), rd.byteSize());
  EXPECT_EQ(back->triangles.size(), rd.triangles.size());
}

TEST(RenderData, HashesChangeWithContent) {
  RenderData rd = cornellBox();
  auto before = rd.arrayHashes();
  rd.camera[0].position.x += 0.01f;
  auto after = rd.arrayHashes();
  EXPECT_NE(before[uint32_t(RenderDataArray::camera)], after[uint32_t(RenderDataArray::camera)]);
  EXPECT_EQ(before[uint32_t(RenderDataArray::triangles)],
            after[uint32_t(RenderDataArray::triangles)]);
}

TEST(RenderData, TruncatedDataRejected) {
  std::vector<uint8_t> bytes = serialize(cornellBox());
  for (size_t keep :
       {size_t(0), size_t(7), size_t(12), size_t(20), bytes.size() / 2, bytes.size() - 1}) {
    auto r = deserialize(bytes.data(), keep);
    EXPECT_FALSE(r.ok()) << "accepted " << keep << " of " << bytes.size() << " bytes";
    if (!r.ok()) {
      EXPECT_NE(r.error().message.find("render data"), std::string::npos);
    }
  }
  std::vector<uint8_t> longer = bytes;
  longer.push_back(0);
  auto r = deserialize(longer.data(), longer.size());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("trailing"), std::string::npos);
}

TEST(RenderData, CorruptDataRejected) {
  std::vector<uint8_t> bytes = serialize(cornellBox());
  std::vector<uint8_t> magic = bytes;
  magic[0] ^= 0xff;
  auto r = deserialize(magic.data(), magic.size());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("magic"), std::string::npos);

  // An absurd element count in the first array's header (after the 12-byte file header and
  // its 4-byte element size).
  std::vector<uint8_t> count = bytes;
  uint64_t huge = uint64_t(1) << 60;
  std::memcpy(count.data() + 16, &huge, 8);
  r = deserialize(count.data(), count.size());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("absurd count"), std::string::npos);

  // A triangle index pointing past the vertices: the bytes decode, validate() refuses them.
  RenderData rd = cornellBox();
  rd.triangles[3].v1 = uint32_t(rd.positions.size());
  std::vector<uint8_t> bad = serialize(rd);
  r = deserialize(bad.data(), bad.size());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("triangles[3]"), std::string::npos) << r.error().message;
}

// Each mutation breaks one cross-reference; validate() names it.
TEST(RenderData, ValidateCatchesBrokenReferences) {
  struct Case {
    const char* expect;
    void (*mutate)(RenderData&);
  };
  const Case cases[] = {
      {"triangles[0] has a vertex index", [](RenderData& d) { d.triangles[0].v2 = 1u << 30; }},
      {"triangles[1] has material", [](RenderData& d) { d.triangles[1].material = 99; }},
      {"per-vertex arrays differ", [](RenderData& d) { d.uvs.pop_back(); }},
      {"positions[2] is not finite",
       [](RenderData& d) { d.positions[2].y = std::numeric_limits<float>::quiet_NaN(); }},
      {"materials[0] refers to a texture", [](RenderData& d) { d.materials[0].normalTexture = 0; }},
      {"exactly one camera", [](RenderData& d) { d.camera.push_back(d.camera[0]); }},
      {"exactly one globals", [](RenderData& d) { d.globals.clear(); }},
      {"image size", [](RenderData& d) { d.camera[0].width = 0; }},
      {"image size", [](RenderData& d) { d.camera[0].height = kMaxImageDimension + 1; }},
      {"emissiveTriangles[0] is beyond", [](RenderData& d) { d.emissiveTriangles[0] = 1000; }},
      {"emissiveCdf has", [](RenderData& d) { d.emissiveCdf.pop_back(); }},
      {"emissiveCdf does not end at 1", [](RenderData& d) { d.emissiveCdf.back() = 0.75f; }},
      {"environment arrays",
       [](RenderData& d) { d.globals[0].envWidth = d.globals[0].envHeight = 2; }},
      {"textures[0] reads past the end",
       [](RenderData& d) {
         d.textures.push_back({4, 4, 0, 0, 0, 0});
         d.texels.resize(15);
       }},
      {"meshes[1] does not start where", [](RenderData& d) { d.meshes[1].firstTriangle += 1; }},
      {"meshes[3] reaches beyond", [](RenderData& d) { d.meshes[3].vertexCount += 1; }},
      {"meshes[0] has unknown flags", [](RenderData& d) { d.meshes[0].flags = 2; }},
      {"triangles[0] of meshes[0] indexes a vertex outside its mesh",
       [](RenderData& d) { d.triangles[0].v1 = d.meshes[1].firstVertex; }},
      {"the meshes cover", [](RenderData& d) { d.meshes.pop_back(); }},
      {"meshes[4] is empty",
       [](RenderData& d) { d.meshes.push_back({uint32_t(d.triangles.size()), 0,
                                               uint32_t(d.positions.size()), 0, 0}); }},
      {"meshes[0] reaches beyond",
       [](RenderData& d) { d.meshes[0].triangleCount = 0xffffffffu; }},
      {"lights[0] has unknown type",
       [](RenderData& d) {
         kernel::PunctualLight l{};
         l.type = 7;
         d.lights.push_back(l);
       }},
  };
  {
    // Absent attributes (empty arrays) are allowed.
    RenderData rd = cornellBox();
    rd.normals.clear();
    rd.uvs.clear();
    rd.tangents.clear();
    EXPECT_TRUE(rd.validate().ok());
    // So is data that lists no meshes (one mesh of everything).
    rd.meshes.clear();
    EXPECT_TRUE(rd.validate().ok());
  }
  for (const Case& c : cases) {
    RenderData rd = cornellBox();
    c.mutate(rd);
    Status s = rd.validate();
    ASSERT_FALSE(s.ok()) << "not caught: " << c.expect;
    EXPECT_NE(s.error().message.find(c.expect), std::string::npos) << s.error().message;
  }
}

// What devices build their BVHs from: the listed meshes, one mesh of everything when none are
// listed, and no dynamic mesh at all beyond kMaxDynamicMeshes of them.
TEST(RenderData, StructureMeshes) {
  RenderData rd = cornellBox();
  rd.meshes[1].flags = kernel::kMeshDynamic;
  std::vector<kernel::MeshRange> meshes = structureMeshes(rd);
  ASSERT_EQ(meshes.size(), rd.meshes.size());
  EXPECT_EQ(meshes[1].flags, uint32_t(kernel::kMeshDynamic));

  RenderData bare = rd;
  bare.meshes.clear();
  meshes = structureMeshes(bare);
  ASSERT_EQ(meshes.size(), 1u);
  EXPECT_EQ(meshes[0].triangleCount, rd.triangles.size());
  EXPECT_EQ(meshes[0].vertexCount, rd.positions.size());
  EXPECT_EQ(meshes[0].flags, 0u);

  RenderData many;
  for (uint32_t i = 0; i <= kernel::kMaxDynamicMeshes; ++i)
    many.meshes.push_back({i, 1, 3 * i, 3, kernel::kMeshDynamic});
  meshes = structureMeshes(many);
  ASSERT_EQ(meshes.size(), size_t(kernel::kMaxDynamicMeshes) + 1);
  for (const kernel::MeshRange& m : meshes) EXPECT_EQ(m.flags, 0u);
  many.meshes.pop_back();
  EXPECT_EQ(structureMeshes(many).back().flags, uint32_t(kernel::kMeshDynamic));
}

}  // namespace
}  // namespace pl
