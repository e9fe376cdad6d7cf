#include "core/render/embree_tracer.h"

#include <gtest/gtest.h>

namespace pl {
namespace {

// Two triangles: one in the z = 0 plane, one in z = 2, both covering the square [0,1]^2
// in x, y (only the arrays the tracer reads are filled).
RenderData twoTriangles() {
  RenderData d;
  d.positions = {{0, 0, 0}, {1, 0, 0}, {0, 1, 0}, {0, 0, 2}, {1, 0, 2}, {0, 1, 2}};
  d.triangles = {{0, 1, 2, 0}, {3, 4, 5, 7}};
  return d;
}

TEST(EmbreeTracerTest, ClosestHitWithBarycentrics) {
  RenderData d = twoTriangles();
  auto scene = EmbreeScene::build(d, 1);
  ASSERT_TRUE(scene.ok()) << scene.error().message;
  EXPECT_EQ((*scene)->triangleCount(), 2u);
  EmbreeTracer tracer = (*scene)->tracer();

  kernel::Ray up{{0.25f, 0.5f, -1.0f}, {0, 0, 1}};
  kernel::Hit hit = tracer.intersect(up, 0.0f, kernel::kInfinity);
  ASSERT_EQ(hit.prim, 0u);
  EXPECT_FLOAT_EQ(hit.t, 1.0f);
  EXPECT_NEAR(hit.u, 0.25f, 1e-6f);  // weight of v1 = (1,0,0)
  EXPECT_NEAR(hit.v, 0.5f, 1e-6f);   // weight of v2 = (0,1,0)

  // Starting past the first triangle finds the second one.
  hit = tracer.intersect(up, 1.5f, kernel::kInfinity);
  EXPECT_EQ(hit.prim, 1u);
  EXPECT_FLOAT_EQ(hit.t, 3.0f);
  // tMax before the first triangle: a miss.
  EXPECT_EQ(tracer.intersect(up, 0.0f, 0.5f).prim, kernel::kNoHit);
  // Outside the triangles.
  kernel::Ray away{{0.9f, 0.9f, -1.0f}, {0, 0, 1}};
  EXPECT_EQ(tracer.intersect(away, 0.0f, kernel::kInfinity).prim, kernel::kNoHit);

  EXPECT_TRUE(tracer.occluded(up, 0.0f, kernel::kInfinity));
  EXPECT_FALSE(tracer.occluded(up, 0.0f, 0.99f));
  EXPECT_TRUE(tracer.occluded(up, 1.5f, 3.5f));
  EXPECT_FALSE(tracer.occluded(away, 0.0f, kernel::kInfinity));
}

TEST(EmbreeTracerTest, EmptySceneMissesEverything) {
  RenderData d;
  auto scene = EmbreeScene::build(d, 0);
  ASSERT_TRUE(scene.ok()) << scene.error().message;
  EmbreeTracer tracer = (*scene)->tracer();
  kernel::Ray r{{0, 0, 0}, {0, 0, 1}};
  EXPECT_EQ(tracer.intersect(r, 0.0f, kernel::kInfinity).prim, kernel::kNoHit);
  EXPECT_FALSE(tracer.occluded(r, 0.0f, kernel::kInfinity));
  EXPECT_TRUE((*scene)->takeError().ok());
}

}  // namespace
}  // namespace pl
