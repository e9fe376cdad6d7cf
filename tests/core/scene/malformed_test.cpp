// Malformed and unsupported input: each gives one clear error that names the file and what is
// wrong (the CLI turns these into exit status 2), never a crash. Also small synthetic glTF
// files for transforms, which only hand-made files can pin down exactly.

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <array>
#include <cmath>
#include <random>

#include "core/scene/compile.h"
#include "core/scene/load.h"
#include "tests/core/scene/test_files.h"

namespace pl {
namespace {

using test::TempDir;
using test::TriangleGltf;

// Loads and expects an error containing every one of `parts` and the file's path.
void expectError(const std::string& path, std::initializer_list<const char*> parts) {
  auto s = loadScene(path);
  ASSERT_FALSE(s.ok()) << "loaded " << path << " without error";
  const std::string& msg = s.error().message;
  EXPECT_EQ(msg.rfind(path, 0), 0u) << "message does not start with the path: " << msg;
  for (const char* p : parts) EXPECT_NE(msg.find(p), std::string::npos) << msg;
}

TEST(Malformed, ValidTriangleLoads) {
  // The base of every variant below loads, so each failure is due to its one change.
  TempDir dir;
  auto s = loadScene(dir.write("ok.gltf", TriangleGltf().json()));
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->triangleCount(), 1u);
  EXPECT_EQ(s->materials.size(), 1u);  // the glTF default material
  auto glb = loadScene(dir.write("ok.glb", test::triangleGlb()));
  ASSERT_TRUE(glb.ok()) << glb.error().message;
  EXPECT_EQ(glb->triangleCount(), 1u);
}

TEST(Malformed, EmptyFiles) {
  TempDir dir;
  expectError(dir.write("empty.gltf", std::string()), {"empty file"});
  expectError(dir.write("empty.glb", std::string()), {"empty file"});
  expectError(dir.write("empty.obj", std::string()), {"empty file"});
}

TEST(Malformed, MissingFileAndUnknownFormat) {
  TempDir dir;
  expectError(dir.file("nothing.gltf"), {"cannot open"});
  expectError(dir.write("scene.fbx", std::string("x")), {"unsupported scene format", ".fbx"});
}

TEST(Malformed, BrokenJson) {
  TempDir dir;
  std::string json = TriangleGltf().json();
  expectError(dir.write("broken.gltf", json.substr(0, json.size() / 2)), {"broken JSON"});
  expectError(dir.write("array.gltf", std::string("[1, 2, 3]")), {"not an object"});
  expectError(dir.write("deep.gltf", std::string(100000, '[')), {"nested deeper"});
}

TEST(Malformed, TruncatedGlb) {
  TempDir dir;
  std::vector<uint8_t> glb = test::triangleGlb();
  for (size_t keep : {size_t(5), size_t(16), size_t(40), glb.size() - 1}) {
    SCOPED_TRACE(keep);
    std::vector<uint8_t> cut(glb.begin(), glb.begin() + keep);
    expectError(dir.write("cut.glb", cut), {"truncated .glb"});
  }
  std::vector<uint8_t> bad = glb;
  bad[0] = 'X';
  expectError(dir.write("magic.glb", bad), {"bad magic"});
}

TEST(Malformed, AccessorPastBuffer) {
  TempDir dir;
  TriangleGltf g;
  g.positionCount = "4";  // 48 bytes from a 36-byte bufferView
  expectError(dir.write("past.gltf", g.json()), {"accessor 0 reads past the end of buffer 0"});
  TriangleGltf offset;
  offset.positionExtra = ", \"byteOffset\": 4";
  expectError(dir.write("offset.gltf", offset.json()), {"accessor 0 reads past the end"});
}

TEST(Malformed, MissingBufferFile) {
  TempDir dir;
  TriangleGltf g;
  g.bufferUri = "missing.bin";
  expectError(dir.write("missing.gltf", g.json()), {"buffer 0", "missing.bin", "not found"});
  // Present but too short.
  dir.write("short.bin", std::string(10, '\0'));
  g.bufferUri = "short.bin";
  expectError(dir.write("short.gltf", g.json()), {"buffer 0", "short.bin", "fewer"});
}

// A buffer or an image that names a FIFO (or a device) is refused, not read: reading one would
// block the load for ever (a daemon loading a scene for its live view would hang).
TEST(Malformed, FilesThatAreNotRegularAreNotRead) {
  TempDir dir;
  ASSERT_EQ(::mkfifo(dir.file("pipe.bin").c_str(), 0600), 0);
  TriangleGltf g;
  g.bufferUri = "pipe.bin";
  expectError(dir.write("fifo.gltf", g.json()), {"buffer 0", "pipe.bin", "not a regular file"});
  ASSERT_EQ(::mkfifo(dir.file("pipe.png").c_str(), 0600), 0);
  TriangleGltf image;
  image.topLevelExtra = "\"images\": [{\"uri\": \"pipe.png\"}],";
  // Returns (an error or a scene whose unused image failed), and does not block.
  (void)loadScene(dir.write("image.gltf", image.json()));
}

TEST(Malformed, ExternalBufferLoads) {
  TempDir dir;
  dir.write("tri.bin", test::triangleBuffer());
  TriangleGltf g;
  g.bufferUri = "tri.bin";
  auto s = loadScene(dir.write("ext.gltf", g.json()));
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->triangleCount(), 1u);
}

TEST(Malformed, AbsurdCounts) {
  TempDir dir;
  TriangleGltf g;
  g.positionCount = "1000000000000";
  expectError(dir.write("count.gltf", g.json()), {"accessor 0", "absurd count"});
  TriangleGltf idx;
  idx.indexCount = "4000000000";
  expectError(dir.write("indices.gltf", idx.json()), {"accessor 1", "absurd count"});
}

TEST(Malformed, IndexBeyondVertices) {
  TempDir dir;
  TriangleGltf g;
  g.positionCount = "2";  // indices refer to vertex 2 of 2
  expectError(dir.write("index.gltf", g.json()),
              {"accessor 1", "index 2", "beyond the 2 vertices"});
}

TEST(Malformed, BadReferences) {
  TempDir dir;
  TriangleGltf material;
  material.materialField = "\"material\": 3,";
  expectError(dir.write("material.gltf", material.json()), {"refers to material 3 of 0"});

  TriangleGltf texture;
  texture.materialField = "\"material\": 0,";
  texture.topLevelExtra =
      "\"materials\": [{\"pbrMetallicRoughness\": {\"baseColorTexture\": {\"index\": 5}}}],";
  expectError(dir.write("texture.gltf", texture.json()),
              {"material 0 baseColorTexture refers to texture 5 of 0"});

  TriangleGltf cycle;
  cycle.nodeExtra = "\"children\": [0],";
  expectError(dir.write("cycle.gltf", cycle.json()), {"node 0 is its own ancestor"});

  TriangleGltf child;
  child.nodeExtra = "\"children\": [7],";
  expectError(dir.write("child.gltf", child.json()), {"node 7 does not exist"});
}

TEST(Malformed, UnsupportedFeatures) {
  TempDir dir;
  TriangleGltf sparse;
  sparse.positionExtra =
      ", \"sparse\": {\"count\": 1, \"indices\": {\"bufferView\": 1, \"componentType\": 5123},"
      " \"values\": {\"bufferView\": 0}}";
  expectError(dir.write("sparse.gltf", sparse.json()), {"accessor 0 is sparse"});

  TriangleGltf draco;
  draco.topLevelExtra =
      "\"extensionsRequired\": [\"KHR_draco_mesh_compression\"],"
      "\"extensionsUsed\": [\"KHR_draco_mesh_compression\"],";
  expectError(dir.write("draco.gltf", draco.json()),
              {"requires extension KHR_draco_mesh_compression"});
}

TEST(Malformed, UnknownOptionalExtensionsAreNamedInAWarning) {
  // An extension the renderer does not implement: the scene loads, and the warning names the
  // extension and the material (never dropped silently). Implemented ones give no warning.
  TempDir dir;
  TriangleGltf glass;
  glass.materialField = "\"material\": 0,";
  glass.topLevelExtra =
      "\"extensionsUsed\": [\"KHR_materials_iridescence\", \"KHR_materials_transmission\","
      " \"KHR_materials_ior\"],"
      "\"materials\": [{\"name\": \"Glass\", \"extensions\": {"
      "\"KHR_materials_iridescence\": {\"iridescenceFactor\": 1},"
      "\"KHR_materials_transmission\": {\"transmissionFactor\": 1},"
      "\"KHR_materials_ior\": {\"ior\": 1.5}}}],";
  auto s = loadScene(dir.write("glass.gltf", glass.json()));
  ASSERT_TRUE(s.ok()) << s.error().message;
  ASSERT_EQ(s->warnings.size(), 1u);
  EXPECT_NE(s->warnings[0].find("KHR_materials_iridescence"), std::string::npos);
  EXPECT_NE(s->warnings[0].find("'Glass'"), std::string::npos) << s->warnings[0];
  EXPECT_EQ(s->materials[0].transmissionFactor, 1.0f);
}

TEST(Malformed, OversizedImage) {
  // A PNG whose header claims 20000 x 10 pixels: refused before decoding.
  std::vector<uint8_t> png = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0,    0, 0,
                              13,   'I', 'H', 'D', 'R',  0,    0,    0x4e, 0x20, 0, 0,
                              0,    10,  8,   6,   0,    0,    0,    0,    0,    0, 0};
  TempDir dir;
  dir.write("huge.png", png);
  TriangleGltf g;
  g.materialField = "\"material\": 0,";
  g.topLevelExtra =
      "\"materials\": [{\"pbrMetallicRoughness\": {\"baseColorTexture\": {\"index\": 0}}}],"
      "\"textures\": [{\"source\": 0}], \"images\": [{\"uri\": \"huge.png\"}],";
  expectError(dir.write("huge.gltf", g.json()),
              {"image 0", "huge.png", "20000x10", "larger than the limit"});
}

TEST(Malformed, DecodedImagesAreBoundedInTotal) {
  // One small file that declares a 16384 x 16384 image (2^28 texels, allowed alone), named by
  // five images: the fifth would pass the 2^30-texel budget and is refused before decoding.
  std::vector<uint8_t> png = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0,
                              13,   'I', 'H', 'D', 'R',  0,    0,    0x40, 0, 0, 0,
                              0x40, 0,   8,   6,   0,    0,    0,    0,    0, 0, 0};
  TempDir dir;
  dir.write("big.png", png);
  TriangleGltf g;
  g.materialField = "\"material\": 0,";
  std::string images;
  for (int i = 0; i < 5; ++i) images += std::string(i ? "," : "") + "{\"uri\": \"big.png\"}";
  g.topLevelExtra =
      "\"materials\": [{\"pbrMetallicRoughness\": {\"baseColorTexture\": {\"index\": 0}}}],"
      "\"textures\": [{\"source\": 4}], \"images\": [" +
      images + "],";
  expectError(dir.write("many.gltf", g.json()), {"image 4", "texels in all images"});
}

TEST(Malformed, ObjBadIndices) {
  TempDir dir;
  expectError(dir.write("bad.obj", std::string("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 9\n")),
              {"refers to vertex 9 of 3"});
  expectError(dir.write("neg.obj", std::string("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 -7\n")),
              {"vertex"});
  expectError(
      dir.write("vn.obj", std::string("v 0 0 0\nv 1 0 0\nv 0 1 0\nvn 0 0 1\nf 1//1 2//1 3//4\n")),
      {"refers to normal 4 of 1"});
}

TEST(Malformed, ObjQuadIsFanTriangulated) {
  TempDir dir;
  auto s = loadScene(dir.write(
      "quad.obj", std::string("v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0.5 1.5 0\nv 0 1 0\nf 1 2 3 4 5\n")));
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->triangleCount(), 3u);
  ASSERT_EQ(s->meshes.size(), 1u);
  EXPECT_EQ(s->materials[s->meshes[0].material].doubleSided, 1u);
  // Generated normals face +Z (counter-clockwise seen from +Z).
  for (const kernel::Vec3f& n : s->meshes[0].normals) EXPECT_NEAR(n.z, 1.0f, 1e-6f);
}

TEST(Malformed, ObjMaterialsAndTexture) {
  TempDir dir;
  // A 2 x 1 top-left-origin 32-bit TGA: red, then green (stored BGRA).
  std::vector<uint8_t> tga = {0, 0, 2, 0,  0,    0, 0, 0,   0,   0, 0,   0, 2,
                              0, 1, 0, 32, 0x28, 0, 0, 255, 255, 0, 255, 0, 255};
  dir.write("tex.tga", tga);
  dir.write("m.mtl", std::string("newmtl paint\nKd 0.5 0.25 1\nKs 0.04 0.04 0.04\nNs 98\n"
                                 "map_Kd tex.tga\nnewmtl lamp\nKe 3 2 1\n"));
  auto s = loadScene(dir.write(
      "m.obj",
      std::string("mtllib m.mtl\nv 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nvt 1 0\nvt 0 1\n"
                  "usemtl paint\nf 1/1 2/2 3/3\nusemtl lamp\nf 1 3 2\nusemtl missing\nf 1 2 3\n")));
  ASSERT_TRUE(s.ok()) << s.error().message;
  ASSERT_EQ(s->textures.size(), 1u);
  const SceneTexture& t = s->textures[0];
  ASSERT_EQ(t.width, 2u);
  EXPECT_EQ(t.texels()[0].r, 255);  // row 0 = top row of the file, left pixel red
  EXPECT_EQ(t.texels()[1].g, 255);
  const kernel::Material& paint = s->materials[0];
  EXPECT_EQ(paint.baseColorTexture, 0);
  EXPECT_EQ(paint.baseColorFactor.y, 0.25f);
  EXPECT_NEAR(paint.roughnessFactor, std::sqrt(2.0f / 100.0f), 1e-6f);
  EXPECT_EQ(s->materials[1].emission.x, 3.0f);
  EXPECT_EQ(s->triangleCount(), 3u);
  // OBJ v = 1 (top) becomes glTF v = 0.
  for (const Mesh& m : s->meshes)
    if (m.material == 0) {
      for (size_t i = 0; i < m.positions.size(); ++i) {
        if (m.positions[i].y == 1.0f) {
          EXPECT_EQ(m.uvs[i].y, 0.0f);
        }
      }
    }
  // A missing map: a magenta placeholder and a warning naming it, not an error.
  dir.write("gone.mtl", std::string("newmtl paint\nmap_Kd nowhere.png\n"));
  auto gone = loadScene(dir.write("gone.obj", std::string("mtllib gone.mtl\nv 0 0 0\nv 1 0 0\n"
                                                          "v 0 1 0\nusemtl paint\nf 1 2 3\n")));
  ASSERT_TRUE(gone.ok()) << gone.error().message;
  ASSERT_EQ(gone->textures.size(), 1u);
  EXPECT_EQ(gone->textures[0].texels()[0].g, 0);
  EXPECT_EQ(gone->textures[0].texels()[0].r, 255);
  ASSERT_FALSE(gone->warnings.empty());
  EXPECT_NE(gone->warnings.back().find("nowhere.png"), std::string::npos);
  // An unreadable one is still an error.
  dir.write("bad.png", std::string("not a png"));
  dir.write("bad.mtl", std::string("newmtl paint\nmap_Kd bad.png\n"));
  expectError(dir.write("bad.obj", std::string("mtllib bad.mtl\nv 0 0 0\nv 1 0 0\nv 0 1 0\n"
                                               "usemtl paint\nf 1 2 3\n")),
              {"material 'paint'", "bad.png", "cannot decode"});
}

TEST(Malformed, MissingGltfImageIsAMagentaPlaceholder) {
  TempDir dir;
  TriangleGltf g;
  g.materialField = "\"material\": 0,";
  g.topLevelExtra =
      "\"images\": [{\"uri\": \"missing.png\"}], \"textures\": [{\"source\": 0}],"
      "\"materials\": [{\"name\": \"Paint\", \"pbrMetallicRoughness\": {"
      "\"baseColorTexture\": {\"index\": 0}}}],";
  auto s = loadScene(dir.write("missing.gltf", g.json()));
  ASSERT_TRUE(s.ok()) << s.error().message;
  ASSERT_EQ(s->textures.size(), 1u);
  EXPECT_EQ(s->textures[0].width, 1u);
  EXPECT_EQ(s->textures[0].texels()[0].r, 255);
  EXPECT_EQ(s->textures[0].texels()[0].g, 0);
  bool named = false;
  for (const std::string& w : s->warnings)
    named |= w.find("missing.png") != std::string::npos && w.find("magenta") != std::string::npos;
  EXPECT_TRUE(named);
}

TEST(Malformed, MaterialExtensionsAndTextureTransforms) {
  // Every KHR_materials_* extension the kernel implements, with its factors, and two uses of
  // one texture, one through KHR_texture_transform: two texture headers over the same image.
  TempDir dir;
  std::vector<uint8_t> tga = {0, 0, 2, 0,  0,    0, 0, 0,   0,   0, 0,   0, 2,
                              0, 1, 0, 32, 0x28, 0, 0, 255, 255, 0, 255, 0, 255};
  dir.write("tex.tga", tga);
  TriangleGltf g;
  g.materialField = "\"material\": 0,";
  g.topLevelExtra =
      "\"extensionsUsed\": [\"KHR_materials_transmission\", \"KHR_materials_volume\","
      " \"KHR_materials_clearcoat\", \"KHR_materials_sheen\", \"KHR_materials_specular\","
      " \"KHR_texture_transform\"],"
      "\"images\": [{\"uri\": \"tex.tga\"}], \"textures\": [{\"source\": 0}],"
      "\"materials\": [{\"name\": \"All\", \"pbrMetallicRoughness\": {"
      "  \"baseColorTexture\": {\"index\": 0, \"extensions\": {\"KHR_texture_transform\": {"
      "    \"offset\": [0.25, 0.5], \"rotation\": 1.5707963, \"scale\": [2, 3]}}}},"
      " \"extensions\": {"
      "  \"KHR_materials_transmission\": {\"transmissionFactor\": 0.75,"
      "    \"transmissionTexture\": {\"index\": 0}},"
      "  \"KHR_materials_volume\": {\"thicknessFactor\": 0.1, \"attenuationDistance\": 2,"
      "    \"attenuationColor\": [0.5, 0.6, 0.7]},"
      "  \"KHR_materials_clearcoat\": {\"clearcoatFactor\": 0.9,"
      "    \"clearcoatRoughnessFactor\": 0.2, \"clearcoatNormalTexture\": {\"index\": 0,"
      "    \"scale\": 0.5}},"
      "  \"KHR_materials_sheen\": {\"sheenColorFactor\": [0.1, 0.2, 0.3],"
      "    \"sheenRoughnessFactor\": 0.4},"
      "  \"KHR_materials_specular\": {\"specularFactor\": 0.3,"
      "    \"specularColorFactor\": [1, 0.5, 0.25]}}}],";
  auto s = loadScene(dir.write("all.gltf", g.json()));
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_TRUE(s->warnings.empty()) << s->warnings[0];
  const kernel::Material& m = s->materials[0];
  EXPECT_EQ(m.transmissionFactor, 0.75f);
  EXPECT_EQ(m.thicknessFactor, 0.1f);
  EXPECT_EQ(m.attenuationDistance, 2.0f);
  EXPECT_EQ(m.attenuationColor.y, 0.6f);
  EXPECT_EQ(m.clearcoatFactor, 0.9f);
  EXPECT_EQ(m.clearcoatRoughnessFactor, 0.2f);
  EXPECT_EQ(m.clearcoatNormalScale, 0.5f);
  EXPECT_EQ(m.sheenColorFactor.z, 0.3f);
  EXPECT_EQ(m.sheenRoughnessFactor, 0.4f);
  EXPECT_EQ(m.specularFactor, 0.3f);
  EXPECT_EQ(m.specularColorFactor.z, 0.25f);
  // The transformed use and the plain uses are different headers.
  ASSERT_EQ(s->textures.size(), 2u);
  EXPECT_NE(m.baseColorTexture, m.transmissionTexture);
  EXPECT_EQ(m.transmissionTexture, m.clearcoatNormalTexture);
  const std::array<float, 6>& plain = s->textures[size_t(m.transmissionTexture)].uvTransform;
  EXPECT_EQ(plain, (std::array<float, 6>{1, 0, 0, 0, 1, 0}));
  // u' = cos sx u + sin sy v + ox, v' = -sin sx u + cos sy v + oy with a quarter turn:
  // u' = 3 v + 0.25, v' = -2 u + 0.5 (Blender's importer agrees; see load_gltf.cpp).
  const std::array<float, 6>& uv = s->textures[size_t(m.baseColorTexture)].uvTransform;
  EXPECT_NEAR(uv[0], 0.0f, 1e-6f);
  EXPECT_NEAR(uv[1], 3.0f, 1e-6f);
  EXPECT_NEAR(uv[2], 0.25f, 1e-6f);
  EXPECT_NEAR(uv[3], -2.0f, 1e-6f);
  EXPECT_NEAR(uv[4], 0.0f, 1e-6f);
  EXPECT_NEAR(uv[5], 0.5f, 1e-6f);
  // And compiled into the kernel's texture header.
  CompileOptions options;
  options.width = options.height = 4;
  auto rd = compile(*s, options);
  ASSERT_TRUE(rd.ok()) << rd.error().message;
  EXPECT_NEAR(rd->textures[size_t(m.baseColorTexture)].uv[1], 3.0f, 1e-6f);

  // A malformed transform is refused, naming the slot.
  TriangleGltf bad = g;
  bad.topLevelExtra.replace(bad.topLevelExtra.find("\"scale\": [2, 3]"), 15, "\"scale\": [2]   ");
  expectError(dir.write("bad.gltf", bad.json()),
              {"material 0 baseColorTexture", "KHR_texture_transform scale", "2 numbers"});
}

TEST(Malformed, NoGeometryAndOtherGltfVersionsAreRefused) {
  TempDir dir;
  TriangleGltf three;
  std::string json = three.json();
  json.replace(json.find("\"2.0\""), 5, "\"3.0\"");
  expectError(dir.write("three.gltf", json), {"three.gltf", "asset version '3.0'", "glTF 2"});
  TriangleGltf empty;
  json = empty.json();
  json.replace(json.find("\"nodes\": [0]"), 12, "\"nodes\": []");
  expectError(dir.write("empty.gltf", json), {"empty.gltf", "no geometry"});
  expectError(dir.write("empty.obj", std::string("v 0 0 0\nv 1 0 0\n")),
              {"empty.obj", "no geometry"});
}

// Random corruption of a valid .glb and .gltf: every outcome is a Scene or an Error.
TEST(Malformed, RandomCorruptionNeverCrashes) {
  TempDir dir;
  std::vector<uint8_t> glb = test::triangleGlb();
  std::string gltf = TriangleGltf().json();
  std::mt19937 rng(1234);
  int errors = 0;
  for (int i = 0; i < 300; ++i) {
    std::vector<uint8_t> b = glb;
    int edits = 1 + int(rng() % 4);
    for (int e = 0; e < edits; ++e) b[rng() % b.size()] = uint8_t(rng());
    if (rng() % 4 == 0) b.resize(rng() % b.size());
    auto s = loadScene(dir.write("fuzz.glb", b));
    errors += !s.ok();
    std::string t = gltf;
    for (int e = 0; e < edits; ++e) t[rng() % t.size()] = "0123456789{}[]\",:-e "[rng() % 20];
    auto s2 = loadScene(dir.write("fuzz.gltf", t));
    errors += !s2.ok();
  }
  EXPECT_GT(errors, 0);
}

// Transforms: TRS and matrix, nesting, and a mirroring scale that must flip the winding.
TEST(Transforms, NodeHierarchyAndMirroring) {
  TempDir dir;
  TriangleGltf g;
  // Mirror in X, then translate by (10, 0, 0) in the parent.
  std::string json = g.json();
  size_t at = json.find("\"nodes\": [{");
  json.replace(at, std::string("\"nodes\": [{\"mesh\": 0}]").size(),
               "\"nodes\": [{\"translation\": [10, 0, 0], \"children\": [1]},"
               " {\"scale\": [-1, 1, 1], \"mesh\": 0}]");
  auto s = loadScene(dir.write("mirror.gltf", json));
  ASSERT_TRUE(s.ok()) << s.error().message;
  ASSERT_EQ(s->meshes.size(), 1u);
  const Mesh& m = s->meshes[0];
  EXPECT_NEAR(s->boundsMin.x, 9.0f, 1e-6f);
  EXPECT_NEAR(s->boundsMax.x, 10.0f, 1e-6f);
  // The original triangle faces +Z; mirrored in X it still faces +Z (a mirror does not turn
  // a surface around), so the winding must have been flipped to keep its normal at +Z.
  kernel::Vec3f a = m.positions[m.indices[0]], b = m.positions[m.indices[1]],
                c = m.positions[m.indices[2]];
  EXPECT_GT(kernel::cross(b - a, c - a).z, 0.0f);
  EXPECT_NEAR(m.normals[0].z, 1.0f, 1e-6f);

  // The same with a column-major matrix: scale 2 and translation (0, 5, 0).
  json = g.json();
  at = json.find("\"nodes\": [{");
  json.replace(at, std::string("\"nodes\": [{\"mesh\": 0}]").size(),
               "\"nodes\": [{\"matrix\": [2,0,0,0, 0,2,0,0, 0,0,2,0, 0,5,0,1], \"mesh\": 0}]");
  auto s2 = loadScene(dir.write("matrix.gltf", json));
  ASSERT_TRUE(s2.ok()) << s2.error().message;
  EXPECT_NEAR(s2->boundsMax.x, 2.0f, 1e-6f);
  EXPECT_NEAR(s2->boundsMin.y, 5.0f, 1e-6f);
  EXPECT_NEAR(s2->boundsMax.y, 7.0f, 1e-6f);
}

TEST(Transforms, SpotLightOnRotatedNode) {
  TempDir dir;
  TriangleGltf g;
  g.topLevelExtra =
      "\"extensionsUsed\": [\"KHR_lights_punctual\"], \"extensions\": {\"KHR_lights_punctual\":"
      " {\"lights\": [{\"type\": \"spot\", \"color\": [1, 0.5, 0.25], \"intensity\": 10,"
      " \"spot\": {\"innerConeAngle\": 0.2, \"outerConeAngle\": 0.5}}]}},";
  // -90 degrees about X: the light's local -Z turns to world -Y.
  g.nodeExtra =
      "\"translation\": [1, 2, 3], \"rotation\": [-0.70710678, 0, 0, 0.70710678],"
      " \"extensions\": {\"KHR_lights_punctual\": {\"light\": 0}},";
  auto s = loadScene(dir.write("spot.gltf", g.json()));
  ASSERT_TRUE(s.ok()) << s.error().message;
  ASSERT_EQ(s->lights.size(), 1u);
  const kernel::PunctualLight& l = s->lights[0];
  EXPECT_EQ(l.type, uint32_t(kernel::kLightSpot));
  EXPECT_NEAR(l.position.x, 1.0f, 1e-6f);
  EXPECT_NEAR(l.position.y, 2.0f, 1e-6f);
  EXPECT_NEAR(l.position.z, 3.0f, 1e-6f);
  EXPECT_NEAR(l.direction.y, -1.0f, 1e-6f);
  EXPECT_NEAR(l.intensity.x, 10.0f / 683.0f, 1e-7f);  // candela -> W/sr
  EXPECT_NEAR(l.intensity.y, 5.0f / 683.0f, 1e-7f);
  EXPECT_NEAR(l.intensity.z, 2.5f / 683.0f, 1e-7f);
  EXPECT_NEAR(l.cosInnerCone, std::cos(0.2f), 1e-6f);
  EXPECT_NEAR(l.cosOuterCone, std::cos(0.5f), 1e-6f);
  // The light's position is part of the bounds.
  EXPECT_GE(s->boundsMax.z, 3.0f);

  g.nodeExtra = "\"extensions\": {\"KHR_lights_punctual\": {\"light\": 4}},";
  expectError(dir.write("nolight.gltf", g.json()), {"refers to light 4 of 1"});
}

TEST(Transforms, NormalizedUbyteTexcoords) {
  // TEXCOORD_0 as normalized unsigned bytes (KHR_mesh_quantization style), stride 4.
  TempDir dir;
  std::vector<uint8_t> buf = test::triangleBuffer();
  uint8_t uv[12] = {0, 0, 0, 0, 255, 0, 0, 0, 0, 255, 0, 0};
  buf.insert(buf.end(), uv, uv + 12);
  TriangleGltf g;
  g.bufferByteLength = buf.size();
  std::string json = g.json();
  json.replace(json.find(test::base64(test::triangleBuffer())),
               test::base64(test::triangleBuffer()).size(), test::base64(buf));
  json.replace(json.find("\"POSITION\": 0}"), std::string("\"POSITION\": 0}").size(),
               "\"POSITION\": 0, \"TEXCOORD_0\": 2}");
  json.replace(json.find("\"bufferViews\": ["), std::string("\"bufferViews\": [").size(),
               "\"bufferViews\": [{\"buffer\": 0, \"byteOffset\": 44, \"byteLength\": 12, "
               "\"byteStride\": 4}, ");
  // bufferView indices shift by one: 0 -> 1, 1 -> 2.
  json.replace(json.find("\"bufferView\": 1"), 15, "\"bufferView\": 2");
  json.replace(json.find("\"bufferView\": 0"), 15, "\"bufferView\": 1");
  size_t end = json.find("], \"bufferViews\"");
  json.insert(end,
              ", {\"bufferView\": 0, \"componentType\": 5121, \"normalized\": true, "
              "\"count\": 3, \"type\": \"VEC2\"}");
  auto s = loadScene(dir.write("uv.gltf", json));
  ASSERT_TRUE(s.ok()) << s.error().message;
  const Mesh& m = s->meshes[0];
  EXPECT_EQ(m.uvs[1].x, 1.0f);
  EXPECT_EQ(m.uvs[2].y, 1.0f);
  EXPECT_EQ(m.uvs[0].x, 0.0f);
}

}  // namespace
}  // namespace pl
