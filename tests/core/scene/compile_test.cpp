// compile(): emissive CDF, camera choice and framing, environment tables, defaults.

#include "core/scene/compile.h"

#include <OpenEXR/ImfRgbaFile.h>
#include <gtest/gtest.h>

#include <cmath>

#include "tests/core/scene/test_files.h"

namespace pl {
namespace {

using kernel::Vec3f;
using test::ownCornellBox;

constexpr double kPi = 3.14159265358979323846;

// Two unit quads in z = 0 (x in [0,1] and [2,4] x [0,1]) with given materials.
Scene twoQuads(const kernel::Material& a, const kernel::Material& b) {
  Scene s;
  s.path = "two-quads";
  s.materials = {a, b};
  s.materialNames = {"a", "b"};
  for (int q = 0; q < 2; ++q) {
    Mesh m;
    float x0 = q == 0 ? 0.0f : 2.0f, x1 = q == 0 ? 1.0f : 4.0f;
    m.positions = {{x0, 0, 0}, {x1, 0, 0}, {x1, 1, 0}, {x0, 1, 0}};
    m.indices = {0, 1, 2, 0, 2, 3};
    m.material = uint32_t(q);
    m.uvs.assign(4, {0, 0});
    generateNormals(m);
    generateTangents(m);
    s.meshes.push_back(std::move(m));
  }
  s.computeBounds();
  return s;
}

kernel::Material emitter(Vec3f e) {
  kernel::Material m = defaultMaterial();
  m.emission = e;
  return m;
}

RenderData compileOk(const Scene& s, const CompileOptions& o) {
  auto rd = compile(s, o);
  EXPECT_TRUE(rd.ok()) << (rd.ok() ? "" : rd.error().message);
  return rd.ok() ? std::move(*rd) : RenderData();
}

TEST(Compile, EmissiveTrianglesAndCdf) {
  // Quad a (area 1) emits luminance 1; quad b (area 2) emits luminance 3 in green only.
  const float green = 3.0f / 0.7152f;
  Scene s = twoQuads(emitter({1, 1, 1}), emitter({0, green, 0}));
  RenderData rd = compileOk(s, CompileOptions());
  ASSERT_EQ(rd.emissiveTriangles.size(), 4u);
  ASSERT_EQ(rd.emissiveCdf.size(), 4u);
  // Weights: 0.5, 0.5 (quad a), 3, 3 (quad b), total 7.
  EXPECT_NEAR(rd.globals[0].emissiveTotalPower, 7.0f, 1e-4f);
  EXPECT_NEAR(rd.emissiveCdf[0], 0.5f / 7, 1e-6f);
  EXPECT_NEAR(rd.emissiveCdf[1], 1.0f / 7, 1e-6f);
  EXPECT_NEAR(rd.emissiveCdf[2], 4.0f / 7, 1e-6f);
  EXPECT_EQ(rd.emissiveCdf[3], 1.0f);
  // Only emitters are listed.
  Scene one = twoQuads(emitter({0, 0, 0}), emitter({2, 2, 2}));
  RenderData rd1 = compileOk(one, CompileOptions());
  ASSERT_EQ(rd1.emissiveTriangles.size(), 2u);
  EXPECT_EQ(rd1.emissiveTriangles[0], 2u);
  EXPECT_EQ(rd1.emissiveTriangles[1], 3u);
  EXPECT_NEAR(rd1.globals[0].emissiveTotalPower, 4.0f, 1e-5f);
}

TEST(Compile, CornellBoxLight) {
  RenderData rd = compileOk(ownCornellBox(), CompileOptions());
  ASSERT_EQ(rd.emissiveTriangles.size(), 2u);
  // 130 x 105 mm at luminance(17, 12, 4).
  double expected = 0.130 * 0.105 * (0.2126 * 17 + 0.7152 * 12 + 0.0722 * 4);
  EXPECT_NEAR(rd.globals[0].emissiveTotalPower, expected, 1e-5);
  EXPECT_EQ(rd.emissiveCdf.back(), 1.0f);
  // Emissive scene without an environment: black, not sampled.
  EXPECT_TRUE(kernel::isBlack(rd.globals[0].envScale));
  EXPECT_EQ(rd.globals[0].envIntegral, 0.0f);
  EXPECT_EQ(rd.globals[0].hasAlpha, 0u);
  EXPECT_EQ(rd.globals[0].maxDepth, 16u);
}

TEST(Compile, CameraFromScene) {
  CompileOptions o;
  o.width = 200;
  o.height = 100;
  RenderData rd = compileOk(ownCornellBox(), o);
  const kernel::Camera& c = rd.camera[0];
  EXPECT_EQ(c.width, 200u);
  EXPECT_EQ(c.height, 100u);
  EXPECT_EQ(c.type, uint32_t(kernel::kCameraPerspective));
  EXPECT_NEAR(c.tanHalfFovY, 12.5f / 35.0f, 1e-6f);
  EXPECT_NEAR(c.forward.z, -1.0f, 1e-6f);
  EXPECT_NEAR(c.up.y, 1.0f, 1e-6f);
  EXPECT_NEAR(c.right.x, 1.0f, 1e-6f);
  EXPECT_NEAR(c.position.y, 0.273f, 1e-6f);
}

TEST(Compile, CameraByNameAndIndex) {
  Scene s = twoQuads(defaultMaterial(), defaultMaterial());
  SceneCamera persp;
  persp.name = "wide";
  persp.yfov = 1.0f;
  persp.position = {0, 0, 5};
  SceneCamera ortho;
  ortho.name = "top";
  ortho.type = kernel::kCameraOrthographic;
  ortho.ymag = 3.0f;
  ortho.position = {0, 10, 0};
  ortho.forward = {0, -1, 0};
  ortho.up = {0, 0, -1};
  s.cameras = {persp, ortho};

  CompileOptions o;
  RenderData first = compileOk(s, o);
  EXPECT_NEAR(first.camera[0].tanHalfFovY, std::tan(0.5f), 1e-6f);

  o.camera = "top";
  RenderData byName = compileOk(s, o);
  EXPECT_EQ(byName.camera[0].type, uint32_t(kernel::kCameraOrthographic));
  EXPECT_EQ(byName.camera[0].orthoHalfHeight, 3.0f);
  EXPECT_NEAR(byName.camera[0].forward.y, -1.0f, 1e-6f);
  // right = forward x up = (0,-1,0) x (0,0,-1) = (1, 0, 0).
  EXPECT_NEAR(byName.camera[0].right.x, 1.0f, 1e-6f);

  o.camera = "1";
  RenderData byIndex = compileOk(s, o);
  EXPECT_EQ(byIndex.camera[0].type, uint32_t(kernel::kCameraOrthographic));

  for (const char* bad : {"2", "nope", "-1", "1x"}) {
    o.camera = bad;
    auto r = compile(s, o);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.error().message.find(std::string("no camera '") + bad + "'"), std::string::npos)
        << r.error().message;
    EXPECT_NE(r.error().message.find("'top'"), std::string::npos) << r.error().message;
  }
}

TEST(Compile, SharedCamerasSample) {
  std::string rel = "scenes/khronos-gltf/Cameras/glTF/Cameras.gltf";
  if (!test::haveShared(rel)) GTEST_SKIP() << "shared scene data missing: " << test::shared(rel);
  CompileOptions o;
  o.camera = "1";
  auto rd = loadAndCompile(test::shared(rel), o);
  ASSERT_TRUE(rd.ok()) << rd.error().message;
  EXPECT_EQ(rd->camera[0].type, uint32_t(kernel::kCameraOrthographic));
  EXPECT_EQ(rd->camera[0].orthoHalfHeight, 1.0f);
}

TEST(Compile, FramesSceneWithoutCamera) {
  Scene s = twoQuads(defaultMaterial(), defaultMaterial());
  for (auto [w, h] : {std::pair{100u, 100u}, std::pair{100u, 300u}, std::pair{400u, 100u}}) {
    CompileOptions o;
    o.width = w;
    o.height = h;
    RenderData rd = compileOk(s, o);
    const kernel::Camera& c = rd.camera[0];
    EXPECT_NEAR(c.tanHalfFovY, std::tan(20.0 * kPi / 180.0), 1e-6);
    EXPECT_NEAR(c.forward.z, -1.0f, 1e-6f);
    // Looks at the centre (2, 0.5, 0) from +Z.
    EXPECT_NEAR(c.position.x, 2.0f, 1e-6f);
    EXPECT_NEAR(c.position.y, 0.5f, 1e-6f);
    EXPECT_GT(c.position.z, 0.0f);
    // Every corner of the bounds projects inside the image.
    float aspect = float(w) / float(h);
    for (Vec3f p : {Vec3f{0, 0, 0}, Vec3f{4, 1, 0}, Vec3f{0, 1, 0}, Vec3f{4, 0, 0}}) {
      Vec3f d = p - c.position;
      float z = kernel::dot(d, c.forward);
      float x = kernel::dot(d, c.right) / z, y = kernel::dot(d, c.up) / z;
      EXPECT_LE(std::fabs(y), c.tanHalfFovY);
      EXPECT_LE(std::fabs(x), c.tanHalfFovY * aspect);
    }
  }
}

TEST(Compile, DefaultEnvironmentRule) {
  // No emitters, no lights: uniform white.
  Scene plain = twoQuads(defaultMaterial(), defaultMaterial());
  RenderData white = compileOk(plain, CompileOptions());
  EXPECT_EQ(white.globals[0].envScale.x, 1.0f);
  EXPECT_EQ(white.globals[0].envScale.z, 1.0f);
  EXPECT_EQ(white.globals[0].envWidth, 0u);
  EXPECT_EQ(white.globals[0].envIntegral, 1.0f);
  EXPECT_TRUE(white.envTexels.empty());
  EXPECT_TRUE(white.envMarginalCdf.empty());

  // A punctual light makes the default black.
  Scene lit = plain;
  kernel::PunctualLight l{};
  l.type = kernel::kLightPoint;
  l.position = {0, 3, 0};
  l.direction = {0, -1, 0};
  l.intensity = {10, 10, 10};
  lit.lights.push_back(l);
  RenderData black = compileOk(lit, CompileOptions());
  EXPECT_TRUE(kernel::isBlack(black.globals[0].envScale));
  EXPECT_EQ(black.globals[0].envIntegral, 0.0f);
  ASSERT_EQ(black.lights.size(), 1u);

  // An explicit colour wins.
  CompileOptions o;
  o.envColor = Vec3f{0.5f, 0.25f, 0.125f};
  RenderData coloured = compileOk(lit, o);
  EXPECT_EQ(coloured.globals[0].envScale.y, 0.25f);
  EXPECT_EQ(coloured.globals[0].envIntegral, 1.0f);
  o.envColor = Vec3f{0, 0, 0};
  EXPECT_EQ(compileOk(plain, o).globals[0].envIntegral, 0.0f);
}

TEST(Compile, EnvironmentTables) {
  // 4 x 2 map: row 0 (top) has luminance 1, 3, 0, 0; row 1 is black.
  EnvironmentMap env;
  env.width = 4;
  env.height = 2;
  env.texels.assign(8, Vec3f{0, 0, 0});
  env.texels[0] = {1, 1, 1};
  env.texels[1] = {3, 3, 3};
  Scene s = twoQuads(defaultMaterial(), defaultMaterial());
  auto rd = compile(s, CompileOptions(), &env);
  ASSERT_TRUE(rd.ok()) << rd.error().message;
  const kernel::SceneGlobals& g = rd->globals[0];
  EXPECT_EQ(g.envWidth, 4u);
  EXPECT_EQ(g.envHeight, 2u);
  EXPECT_EQ(g.envScale.x, 1.0f);
  ASSERT_EQ(rd->envTexels.size(), 8u);
  ASSERT_EQ(rd->envConditionalCdf.size(), 8u);
  ASSERT_EQ(rd->envMarginalCdf.size(), 2u);
  // Row 0 weights 1, 3, 0, 0 times sin(pi/4).
  const float s0 = float(std::sin(kPi * 0.5 / 2.0));
  EXPECT_NEAR(rd->envConditionalCdf[0], 0.25f, 1e-6f);
  EXPECT_NEAR(rd->envConditionalCdf[1], 1.0f, 1e-6f);
  EXPECT_EQ(rd->envConditionalCdf[3], 1.0f);
  // Row 1 is black: uniform.
  EXPECT_NEAR(rd->envConditionalCdf[4], 0.25f, 1e-6f);
  EXPECT_NEAR(rd->envConditionalCdf[5], 0.5f, 1e-6f);
  EXPECT_NEAR(rd->envConditionalCdf[6], 0.75f, 1e-6f);
  EXPECT_EQ(rd->envConditionalCdf[7], 1.0f);
  EXPECT_EQ(rd->envMarginalCdf[0], 1.0f);
  EXPECT_EQ(rd->envMarginalCdf[1], 1.0f);
  EXPECT_NEAR(g.envIntegral, 4.0f * s0, 1e-5f);
  Status v = rd->validate();
  EXPECT_TRUE(v.ok());
}

TEST(Compile, EnvironmentMapFile) {
  // A 2 x 1 Radiance .hdr written by hand (flat RGBE scanline): texel 0 = (1, 1, 1),
  // texel 1 = (2, 0, 0) (RGBE 128 0 0 130).
  test::TempDir dir;
  std::string hdr = "#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 1 +X 2\n";
  hdr += std::string("\x80\x80\x80\x81", 4);
  hdr += std::string("\x80\x00\x00\x82", 4);
  CompileOptions o;
  o.envFile = dir.write("sky.hdr", hdr);
  Scene s = twoQuads(defaultMaterial(), defaultMaterial());
  auto rd = compile(s, o);
  ASSERT_TRUE(rd.ok()) << rd.error().message;
  ASSERT_EQ(rd->envTexels.size(), 2u);
  EXPECT_NEAR(rd->envTexels[0].x, 1.0f, 1e-6f);
  EXPECT_NEAR(rd->envTexels[1].x, 2.0f, 1e-6f);
  EXPECT_NEAR(rd->envTexels[1].y, 0.0f, 1e-6f);
  // luminance 1 and 2 * 0.2126.
  EXPECT_NEAR(rd->envConditionalCdf[0], 1.0f / (1.0f + 2 * 0.2126f), 1e-5f);

  o.envFile = dir.write("bad.hdr", std::string("not an image"));
  auto bad = compile(s, o);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("bad.hdr"), std::string::npos);
  o.envFile = dir.file("missing.exr");
  bad = compile(s, o);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("missing.exr"), std::string::npos);
}

TEST(EnvironmentMap, ExrAndLimits) {
  test::TempDir dir;
  // 3 x 2 half-float RGBA EXR; row 0 (top) first.
  std::string path = dir.file("env.exr");
  {
    Imf::Rgba pixels[6];
    for (int i = 0; i < 6; ++i) pixels[i] = Imf::Rgba(float(i), 0.5f, 2.0f * float(i), 1.0f);
    Imf::RgbaOutputFile out(path.c_str(), 3, 2, Imf::WRITE_RGBA);
    out.setFrameBuffer(pixels, 1, 3);
    out.writePixels(2);
  }
  auto env = loadEnvironmentMap(path);
  ASSERT_TRUE(env.ok()) << env.error().message;
  EXPECT_EQ(env->width, 3u);
  EXPECT_EQ(env->height, 2u);
  ASSERT_EQ(env->texels.size(), 6u);
  EXPECT_EQ(env->texels[4].x, 4.0f);
  EXPECT_EQ(env->texels[4].y, 0.5f);
  EXPECT_EQ(env->texels[4].z, 8.0f);

  // A .hdr header that declares 100000 x 100000 pixels is refused before decoding.
  std::string huge = "#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 100000 +X 100000\n";
  auto r = loadEnvironmentMap(dir.write("huge.hdr", huge + std::string(64, '\x80')));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("huge.hdr"), std::string::npos);
  r = loadEnvironmentMap(dir.write("sky.png", std::string("x")));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("unsupported environment map format"), std::string::npos);
  r = loadEnvironmentMap(dir.write("empty.hdr", std::string()));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("empty file"), std::string::npos);
  r = loadEnvironmentMap(dir.write("junk.exr", std::string("not an exr file at all")));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("junk.exr"), std::string::npos);
}

TEST(Compile, RejectsBadImageSize) {
  Scene s = twoQuads(defaultMaterial(), defaultMaterial());
  CompileOptions o;
  o.width = 0;
  EXPECT_FALSE(compile(s, o).ok());
  o.width = kMaxImageDimension + 1;
  EXPECT_FALSE(compile(s, o).ok());
}

TEST(Compile, SharedScenesCompileAndValidate) {
  for (const char* rel : {"scenes/khronos-gltf/DamagedHelmet/glTF-Binary/DamagedHelmet.glb",
                          "scenes/khronos-gltf/AlphaBlendModeTest/glTF/AlphaBlendModeTest.gltf",
                          "scenes/khronos-gltf/LightsPunctualLamp/glTF/LightsPunctualLamp.gltf",
                          "scenes/cornell-box/original/cornell_box.obj"}) {
    if (!test::haveShared(rel)) GTEST_SKIP() << "shared scene data missing: " << test::shared(rel);
    SCOPED_TRACE(rel);
    auto rd = loadAndCompile(test::shared(rel), CompileOptions());
    ASSERT_TRUE(rd.ok()) << rd.error().message;
    EXPECT_TRUE(rd->validate().ok());
    EXPECT_EQ(rd->positions.size(), rd->tangents.size());
  }
  auto alpha = loadAndCompile(
      test::shared("scenes/khronos-gltf/AlphaBlendModeTest/glTF/AlphaBlendModeTest.gltf"),
      CompileOptions());
  ASSERT_TRUE(alpha.ok());
  EXPECT_EQ(alpha->globals[0].hasAlpha, 1u);
}

}  // namespace
}  // namespace pl
