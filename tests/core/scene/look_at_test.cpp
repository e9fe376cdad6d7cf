// LookAt: lookAtCamera() is what compile() uses (bit for bit), --look-at parsing, camera
// matrices.

#include "core/scene/look_at.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "core/scene/compile.h"
#include "tests/core/scene/test_files.h"

namespace pl {
namespace {

using kernel::Vec3f;
using test::ownCornellBox;

constexpr double kPi = 3.14159265358979323846;

bool sameBits(const kernel::Camera& a, const kernel::Camera& b) {
  return std::memcmp(&a, &b, sizeof a) == 0;
}

RenderData compileOk(const Scene& s, const CompileOptions& o) {
  auto rd = compile(s, o);
  EXPECT_TRUE(rd.ok()) << (rd.ok() ? "" : rd.error().message);
  return rd.ok() ? std::move(*rd) : RenderData();
}

// The error message contains `needle`.
template <typename T>
void expectError(const Result<T>& r, const std::string& needle) {
  ASSERT_FALSE(r.ok()) << "expected an error containing '" << needle << "'";
  EXPECT_NE(r.error().message.find(needle), std::string::npos) << r.error().message;
}

TEST(LookAt, CompileUsesLookAtCameraBitForBit) {
  Scene s = ownCornellBox();
  ASSERT_EQ(s.cameras.size(), 1u);
  CompileOptions o;
  o.width = 320;
  o.height = 200;
  RenderData plain = compileOk(s, o);

  LookAt l;
  l.eye = {0.4f, 0.3f, 1.2f};
  l.target = {0.25f, 0.2f, 0.1f};
  l.up = {0.1f, 1.0f, 0.0f};
  o.lookAt = l;
  RenderData rd = compileOk(s, o);
  // yfovDegrees 0 keeps the scene camera's field of view.
  auto cam = lookAtCamera(l, 320, 200, std::tan(s.cameras[0].yfov * 0.5f));
  ASSERT_TRUE(cam.ok()) << cam.error().message;
  EXPECT_TRUE(sameBits(*cam, rd.camera[0]));
  EXPECT_EQ(rd.camera[0].tanHalfFovY, plain.camera[0].tanHalfFovY);
  auto session = compileCamera(s, o);
  ASSERT_TRUE(session.ok()) << session.error().message;
  EXPECT_TRUE(sameBits(*session, rd.camera[0]));

  // Only the camera array differs from the compile without a look-at.
  auto a = plain.arrayHashes(), b = rd.arrayHashes();
  for (uint32_t i = 0; i < kRenderDataArrayCount; ++i)
    EXPECT_EQ(a[i] == b[i], RenderDataArray(i) != RenderDataArray::camera)
        << renderDataArrayName(RenderDataArray(i));

  // The frame: forward towards the target, right-handed, up on the side of the given up.
  const kernel::Camera& c = rd.camera[0];
  EXPECT_EQ(c.type, uint32_t(kernel::kCameraPerspective));
  EXPECT_EQ(c.position.x, l.eye.x);
  Vec3f f = kernel::normalize(l.target - l.eye);
  EXPECT_NEAR(kernel::dot(c.forward, f), 1.0f, 1e-6f);
  EXPECT_NEAR(kernel::dot(c.right, c.forward), 0.0f, 1e-6f);
  EXPECT_NEAR(kernel::dot(c.up, c.forward), 0.0f, 1e-6f);
  EXPECT_NEAR(kernel::length(c.up), 1.0f, 1e-6f);
  EXPECT_GT(kernel::dot(c.up, l.up), 0.9f);
  Vec3f rxu = kernel::cross(c.right, c.up);  // = -forward in a right-handed camera frame
  EXPECT_NEAR(kernel::dot(rxu, c.forward), -1.0f, 1e-6f);

  // An explicit field of view.
  l.yfovDegrees = 60.0f;
  o.lookAt = l;
  RenderData wide = compileOk(s, o);
  EXPECT_NEAR(wide.camera[0].tanHalfFovY, std::tan(30.0 * kPi / 180.0), 1e-6);
  auto wideCam = lookAtCamera(l, 320, 200, 123.0f);  // the fallback is not used
  ASSERT_TRUE(wideCam.ok());
  EXPECT_TRUE(sameBits(*wideCam, wide.camera[0]));
}

TEST(LookAt, FallbackFieldOfView) {
  // No scene camera: 40 degrees.
  Scene s = ownCornellBox();
  s.cameras.clear();
  CompileOptions o;
  o.lookAt = LookAt{{0, 0, 5}, {0, 0, 0}, {0, 1, 0}, 0.0f};
  RenderData rd = compileOk(s, o);
  EXPECT_NEAR(rd.camera[0].tanHalfFovY, std::tan(20.0 * kPi / 180.0), 1e-6);
  // An orthographic scene camera: also 40 degrees, and the look-at camera is perspective.
  SceneCamera ortho;
  ortho.name = "top";
  ortho.type = kernel::kCameraOrthographic;
  ortho.ymag = 2.0f;
  s.cameras = {ortho};
  RenderData rd2 = compileOk(s, o);
  EXPECT_TRUE(sameBits(rd.camera[0], rd2.camera[0]));
  EXPECT_EQ(rd2.camera[0].type, uint32_t(kernel::kCameraPerspective));
  EXPECT_EQ(rd2.camera[0].orthoHalfHeight, 0.0f);
  // A named perspective camera gives its fov; an unknown name is still an error.
  SceneCamera persp;
  persp.name = "wide";
  persp.yfov = 1.2f;
  s.cameras = {ortho, persp};
  o.camera = "wide";
  EXPECT_EQ(compileOk(s, o).camera[0].tanHalfFovY, std::tan(1.2f * 0.5f));
  o.camera = "nope";
  expectError(compile(s, o), "no camera 'nope'");
}

TEST(LookAt, Errors) {
  const float t = 0.5f;
  LookAt same{{1, 2, 3}, {1, 2, 3}};
  expectError(lookAtCamera(same, 10, 10, t), "eye and target");
  LookAt parallel{{0, 0, 0}, {0, 5, 0}, {0, 2, 0}};
  expectError(lookAtCamera(parallel, 10, 10, t), "up (0, 2, 0) is parallel");
  LookAt zeroUp{{0, 0, 0}, {0, 0, -1}, {0, 0, 0}};
  expectError(lookAtCamera(zeroUp, 10, 10, t), "up");
  LookAt nanEye{{NAN, 0, 0}, {0, 0, -1}};
  expectError(lookAtCamera(nanEye, 10, 10, t), "eye");
  LookAt infTarget{{0, 0, 0}, {0, INFINITY, -1}};
  expectError(lookAtCamera(infTarget, 10, 10, t), "target");
  LookAt nanUp{{0, 0, 0}, {0, 0, -1}, {0, NAN, 0}};
  expectError(lookAtCamera(nanUp, 10, 10, t), "up");
  for (float fov : {180.0f, 200.0f, -10.0f, NAN, INFINITY}) {
    LookAt l{{0, 0, 0}, {0, 0, -1}, {0, 1, 0}, fov};
    expectError(lookAtCamera(l, 10, 10, t), "yfovDegrees");
  }
  LookAt good{{0, 0, 0}, {0, 0, -1}};
  expectError(lookAtCamera(good, 0, 10, t), "image size");
  expectError(lookAtCamera(good, 10, 10, 0.0f), "fallback");
  EXPECT_TRUE(lookAtCamera(good, 10, 10, t).ok());
  // compile() passes the error on.
  Scene s = ownCornellBox();
  CompileOptions o;
  o.lookAt = same;
  expectError(compile(s, o), "look-at: eye and target");
}

TEST(LookAt, ParseGood) {
  auto l = parseLookAt("1,2,3,4,5,6");
  ASSERT_TRUE(l.ok()) << l.error().message;
  EXPECT_EQ(l->eye.x, 1.0f);
  EXPECT_EQ(l->eye.z, 3.0f);
  EXPECT_EQ(l->target.x, 4.0f);
  EXPECT_EQ(l->target.z, 6.0f);
  EXPECT_EQ(l->up.y, 1.0f);
  EXPECT_EQ(l->up.x, 0.0f);
  EXPECT_EQ(l->yfovDegrees, 0.0f);

  auto u = parseLookAt(" 0.5, -1e-1 ,+2, 0,0,0, 0,0,1");
  ASSERT_TRUE(u.ok()) << u.error().message;
  EXPECT_EQ(u->eye.x, 0.5f);
  EXPECT_EQ(u->eye.y, -0.1f);
  EXPECT_EQ(u->eye.z, 2.0f);
  EXPECT_EQ(u->up.z, 1.0f);
  EXPECT_EQ(u->up.y, 0.0f);
}

TEST(LookAt, ParseBad) {
  struct Case {
    const char* text;
    const char* needle;
  };
  const Case cases[] = {
      {"", "1 comma-separated values, not 6 or 9"},
      {"1,2,3,4,5", "5 comma-separated values"},
      {"1,2,3,4,5,6,7", "7 comma-separated values"},
      {"1,2,3,4,5,6,7,8,9,10", "10 comma-separated values"},
      {"a,2,3,4,5,6", "value 1 (EX) 'a' is not a number"},
      {"1,,3,4,5,6", "value 2 (EY) '' is not a number"},
      {"1,2,3 4,4,5,6", "value 3 (EZ) '3 4' is not a number"},
      {"1,2,3,4,5,0x10", "value 6 (TZ) '0x10' is not a number"},
      {"1,2,3,4,5,nan", "value 6 (TZ) 'nan' is not finite"},
      {"1,2,3,inf,5,6", "value 4 (TX) 'inf' is not finite"},
      {"1,2,3,4,5,6,0,1e50,0", "value 8 (UY) '1e50' is out of float range"},
      {"1,2,3,1,2,3", "eye and target are the same point"},
      {"0,0,0,0,1,0,0,2,0", "up (0, 2, 0) is parallel"},
      {"0,0,0,0,0,-1,0,0,0", "up (0, 0, 0)"},
  };
  for (const Case& c : cases) {
    auto r = parseLookAt(c.text);
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_EQ(r.error().message.rfind("--look-at: ", 0), 0u) << r.error().message;
    EXPECT_NE(r.error().message.find(c.needle), std::string::npos)
        << c.text << " -> " << r.error().message;
  }
}

// The camera-to-world matrix of a lookAtCamera() result, with the axes scaled (scale does
// not change directions).
std::array<float, 16> matrixOf(const kernel::Camera& c, Vec3f scale) {
  Vec3f x = c.right * scale.x, y = c.up * scale.y, z = -c.forward * scale.z;
  return {x.x, x.y, x.z, 0, y.x,          y.y,          y.z,          0,
          z.x, z.y, z.z, 0, c.position.x, c.position.y, c.position.z, 1};
}

TEST(LookAt, MatrixAgreesWithLookAt) {
  const LookAt cases[] = {
      {{0, 0.273f, 1.0796f}, {0, 0.273f, 0}, {0, 1, 0}},
      {{3, 4, -5}, {-1, 0.5f, 2}, {0.2f, 1, 0.1f}},
      {{1e4f, -2e4f, 5e3f}, {1e4f + 1, -2e4f - 2, 5e3f + 0.5f}, {0, 0, 1}},
      {{0, 10, 0}, {0, 0, 0}, {0, 0, -1}},  // looking straight down
  };
  for (const LookAt& l : cases) {
    auto direct = lookAtCamera(l, 64, 48, 0.4f);
    ASSERT_TRUE(direct.ok()) << direct.error().message;
    for (Vec3f scale : {Vec3f{1, 1, 1}, Vec3f{2, 0.5f, 3}}) {
      auto fromMatrix = lookAtFromMatrix(matrixOf(*direct, scale));
      ASSERT_TRUE(fromMatrix.ok()) << fromMatrix.error().message;
      EXPECT_EQ(fromMatrix->yfovDegrees, 0.0f);
      auto cam = lookAtCamera(*fromMatrix, 64, 48, 0.4f);
      ASSERT_TRUE(cam.ok()) << cam.error().message;
      EXPECT_EQ(cam->position.x, direct->position.x);
      EXPECT_EQ(cam->position.y, direct->position.y);
      EXPECT_EQ(cam->position.z, direct->position.z);
      EXPECT_NEAR(kernel::dot(cam->forward, direct->forward), 1.0f, 1e-6f);
      EXPECT_NEAR(kernel::dot(cam->up, direct->up), 1.0f, 1e-6f);
      EXPECT_NEAR(kernel::dot(cam->right, direct->right), 1.0f, 1e-6f);
      for (Vec3f d : {cam->forward - direct->forward, cam->up - direct->up})
        EXPECT_LT(kernel::length(d), 1e-5f);
      EXPECT_EQ(cam->tanHalfFovY, direct->tanHalfFovY);
    }
  }
}

TEST(LookAt, MatrixErrors) {
  std::array<float, 16> identity = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1};
  auto ok = lookAtFromMatrix(identity);
  ASSERT_TRUE(ok.ok()) << ok.error().message;
  EXPECT_EQ(ok->eye.z, 0.0f);
  EXPECT_EQ(ok->target.z, -1.0f);  // looks down -Z

  auto m = identity;
  m[13] = NAN;
  expectError(lookAtFromMatrix(m), "element 13 (column 3, row 1) is not finite");
  m = identity;
  m[3] = 2.0f;  // a translation in the bottom row: row-major input
  expectError(lookAtFromMatrix(m), "bottom row");
  m = identity;
  m[8] = m[9] = m[10] = 0.0f;
  expectError(lookAtFromMatrix(m), "local Z axis");
  m = identity;
  m[4] = 0, m[5] = 0, m[6] = 1;  // +Y along the view axis
  expectError(lookAtFromMatrix(m), "parallel");
  auto r = lookAtFromMatrix(m);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message.rfind("camera matrix: ", 0), 0u) << r.error().message;
}

}  // namespace
}  // namespace pl
