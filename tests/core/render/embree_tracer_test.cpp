#include "core/render/embree_tracer.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "tests/core/kernel/kernel_test_util.h"
#include "tests/core/render/mesh_cases.h"

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

// Where every alpha material is a mask, occluded() passes through the cut-outs (an Embree
// filter), also where the static part is an instance beside a dynamic mesh (the sheet in the
// instance, or dynamic itself), and the kernel's image is the one its walk through them gives.
TEST(EmbreeTracerTest, OccludedPassesThroughAlphaMaskCutOuts) {
  for (int dynamicMesh : {-1, 0, 1}) {
    SCOPED_TRACE("dynamic mesh " + std::to_string(dynamicMesh));
    RenderData d = kernel::testing::maskedSheetScene(dynamicMesh);
    auto scene = EmbreeScene::build(d, 1);
    ASSERT_TRUE(scene.ok()) << scene.error().message;
    EXPECT_EQ((*scene)->buildStats().dynamicMeshes, dynamicMesh < 0 ? 0u : 1u);
    const kernel::SceneView view = d.view();
    const EmbreeTracer masks = (*scene)->tracer(&view), walk = (*scene)->tracer();
    ASSERT_TRUE(masks.occludedSeesMasks());
    EXPECT_FALSE(walk.occludedSeesMasks());
    const kernel::Ray cut{{-1.25f, 2.0f, -1.75f}, {0, -1, 0}};  // a cell alpha cuts out
    const kernel::Ray solid{{-0.25f, 2.0f, -1.75f}, {0, -1, 0}};
    EXPECT_FALSE(masks.occluded(cut, 0.0f, 1.5f));
    EXPECT_TRUE(masks.occluded(cut, 0.0f, 2.5f));  // the floor
    EXPECT_TRUE(masks.occluded(solid, 0.0f, 1.5f));
    EXPECT_TRUE(walk.occluded(cut, 0.0f, 1.5f));
    const kernel::testing::TwoImages images =
        kernel::testing::expectSameImage(view, masks, walk, 4);
    EXPECT_LT(images.raysA, images.raysB);
  }
  // BLEND needs the walk (it attenuates); no alpha at all needs no filter.
  RenderData d = kernel::testing::maskedSheetScene();
  auto scene = EmbreeScene::build(d, 1);
  ASSERT_TRUE(scene.ok()) << scene.error().message;
  d.materials[1].alphaMode = kernel::kAlphaBlend;
  kernel::SceneView view = d.view();
  EXPECT_FALSE((*scene)->tracer(&view).occludedSeesMasks());
  d.materials[1].alphaMode = kernel::kAlphaOpaque;
  d.globals[0].hasAlpha = 0;
  view = d.view();
  EXPECT_FALSE((*scene)->tracer(&view).occludedSeesMasks());
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


// --- Static and dynamic meshes -------------------------------------------------------------

bool sameBits(float a, float b) { return std::memcmp(&a, &b, sizeof(float)) == 0; }

// Whether a hit lies on the triangle it names: origin + t * direction is that triangle's
// point at barycentrics (u, v), within rounding.
bool onItsTriangle(const RenderData& data, const kernel::Ray& ray, const kernel::Hit& hit) {
  if (hit.prim == kernel::kNoHit) return true;
  if (hit.prim >= data.triangles.size()) return false;
  const kernel::Triangle& t = data.triangles[hit.prim];
  const kernel::Vec3f p0 = data.positions[t.v0], p1 = data.positions[t.v1],
                      p2 = data.positions[t.v2];
  const kernel::Vec3f q = p0 * (1.0f - hit.u - hit.v) + p1 * hit.u + p2 * hit.v;
  const kernel::Vec3f p = ray.origin + ray.direction * hit.t;
  return kernel::length(p - q) <= 1e-4f * std::max(1.0f, hit.t);
}

// Traces the same random rays in both: how many hits differ in any bit (triangle, t, u, v,
// occlusion), how many rays hit anything in `a`, and how many hits of either are not on the
// triangle they name.
struct Comparison {
  uint32_t differ = 0, tiesResolvedOtherwise = 0, hits = 0, offTriangle = 0;
};
Comparison compareRays(const RenderData& data, const EmbreeScene& a, const EmbreeScene& b,
                       uint32_t rays) {
  const EmbreeTracer ta = a.tracer(), tb = b.tracer();
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  const kernel::Vec3f lo = data.globals[0].boundsMin, hi = data.globals[0].boundsMax;
  Comparison c;
  for (uint32_t i = 0; i < rays; ++i) {
    kernel::Ray ray;
    ray.origin = {lo.x + (hi.x - lo.x) * unit(rng), lo.y + (hi.y - lo.y) * unit(rng),
                  lo.z + (hi.z - lo.z) * unit(rng)};
    ray.direction = kernel::normalize(
        kernel::Vec3f{unit(rng) - 0.5f, unit(rng) - 0.5f, unit(rng) - 0.5f});
    const kernel::Hit ha = ta.intersect(ray, 0.0f, kernel::kInfinity);
    const kernel::Hit hb = tb.intersect(ray, 0.0f, kernel::kInfinity);
    c.hits += ha.prim != kernel::kNoHit;
    c.offTriangle += !onItsTriangle(data, ray, ha) + !onItsTriangle(data, ray, hb);
    const bool same = ha.prim == hb.prim && sameBits(ha.t, hb.t) && sameBits(ha.u, hb.u) &&
                      sameBits(ha.v, hb.v) &&
                      ta.occluded(ray, 0.0f, kernel::kInfinity) == tb.occluded(ray, 0.0f, kernel::kInfinity);
    if (same) continue;
    // Two triangles at exactly the same distance (a shared edge): the order of the BVH picks.
    if (ha.prim != hb.prim && sameBits(ha.t, hb.t))
      ++c.tiesResolvedOtherwise;
    else
      ++c.differ;
  }
  return c;
}

TEST(EmbreeTracerTest, ReusesTheStaticPartWhenOnlyOtherArraysChange) {
  RenderData data = test::compiledCornellBox();
  ASSERT_EQ(data.meshes.size(), 4u);
  auto first = EmbreeScene::build(data, 1);
  ASSERT_TRUE(first.ok()) << first.error().message;
  EXPECT_FALSE((*first)->buildStats().staticReused);
  EXPECT_EQ((*first)->buildStats().trianglesBuilt, data.triangles.size());

  // A material and the camera change; the geometry does not.
  RenderData edited = data;
  edited.materials[0].roughnessFactor = 0.9f;
  edited.camera[0].position.x += 0.5f;
  auto second = EmbreeScene::build(edited, 1, first->get());
  ASSERT_TRUE(second.ok()) << second.error().message;
  EXPECT_TRUE((*second)->buildStats().staticReused);
  EXPECT_EQ((*second)->buildStats().trianglesBuilt, 0u);
  first->reset();  // the reused part outlives the scene it came from
  auto fresh = EmbreeScene::build(edited, 1);
  ASSERT_TRUE(fresh.ok());
  const Comparison c = compareRays(edited, **second, **fresh, 4000);
  EXPECT_EQ(c.differ + c.tiesResolvedOtherwise + c.offTriangle, 0u);
  EXPECT_GT(c.hits, 1000u);

  // One vertex of a static mesh moves: everything is built again.
  edited.positions[0].y += 0.01f;
  auto third = EmbreeScene::build(edited, 1, second->get());
  ASSERT_TRUE(third.ok());
  EXPECT_FALSE((*third)->buildStats().staticReused);
  EXPECT_EQ((*third)->buildStats().trianglesBuilt, data.triangles.size());
}

TEST(EmbreeTracerTest, MovingADynamicMeshRebuildsOnlyThatMesh) {
  const RenderData data = test::compiledCornellBox();
  for (const std::vector<size_t>& dynamicMeshes : test::dynamicMeshCases()) {
    SCOPED_TRACE(test::describeCase(dynamicMeshes));
    uint32_t dynamicTriangles = 0;
    RenderData d = test::withDynamicMeshes(data, dynamicMeshes, &dynamicTriangles);
    auto first = EmbreeScene::build(d, 1);
    ASSERT_TRUE(first.ok()) << first.error().message;
    EXPECT_EQ((*first)->buildStats().dynamicMeshes, dynamicMeshes.size());
    EXPECT_EQ((*first)->buildStats().staticTriangles, data.triangles.size() - dynamicTriangles);

    for (int move = 1; move <= 2; ++move) {
      for (size_t m : dynamicMeshes) test::moveMesh(d, m, {0.02f, 0.01f, 0.0f});
      auto next = EmbreeScene::build(d, 1, first->get());
      ASSERT_TRUE(next.ok()) << next.error().message;
      EXPECT_TRUE((*next)->buildStats().staticReused);
      EXPECT_EQ((*next)->buildStats().trianglesBuilt, dynamicTriangles);
      *first = std::move(next).value();
    }
    // Warm or fresh, the same data traces the same structure: bit for bit.
    auto fresh = EmbreeScene::build(d, 1);
    ASSERT_TRUE(fresh.ok());
    Comparison c = compareRays(d, **first, *fresh.value(), 4000);
    EXPECT_EQ(c.differ + c.tiesResolvedOtherwise + c.offTriangle, 0u);
    EXPECT_GT(c.hits, 1000u);

    // And as one level (no dynamic mesh): the same triangles at the same distances, the
    // static part's instance (identity) changing no bit. Ties on shared edges may go to the
    // other triangle.
    RenderData flat = d;
    for (size_t m : dynamicMeshes) flat.meshes[m].flags = 0;
    auto oneLevel = EmbreeScene::build(flat, 1);
    ASSERT_TRUE(oneLevel.ok());
    EXPECT_EQ(oneLevel.value()->buildStats().dynamicMeshes, 0u);
    c = compareRays(d, **first, *oneLevel.value(), 4000);
    EXPECT_EQ(c.differ + c.offTriangle, 0u);
    EXPECT_LE(c.tiesResolvedOtherwise, 4u);
  }
}

// Hand-made: a static triangle, a dynamic mesh of vertices only, a dynamic triangle. Each hit
// names its RenderData triangle, also after the data is gone.
TEST(EmbreeTracerTest, HitsNameTheirTrianglesAcrossAnEmptyDynamicMesh) {
  auto scene = [] {
    RenderData d = twoTriangles();
    d.positions.insert(d.positions.begin() + 3, {{5, 5, 5}, {6, 5, 5}, {5, 6, 5}});
    d.triangles[1] = {6, 7, 8, 7};
    d.meshes = {{0, 1, 0, 3, 0},
                {1, 0, 3, 3, kernel::kMeshDynamic},
                {1, 1, 6, 3, kernel::kMeshDynamic}};
    EXPECT_EQ(d.meshes.size(), 3u);
    auto built = EmbreeScene::build(d, 1);
    EXPECT_TRUE(built.ok());
    return built.ok() ? std::move(built).value() : nullptr;
  }();  // the RenderData is freed here
  ASSERT_NE(scene, nullptr);
  EXPECT_EQ(scene->buildStats().dynamicMeshes, 2u);
  EXPECT_EQ(scene->buildStats().staticTriangles, 1u);
  EmbreeTracer tracer = scene->tracer();
  kernel::Ray up{{0.25f, 0.5f, -1.0f}, {0, 0, 1}};
  kernel::Hit hit = tracer.intersect(up, 0.0f, kernel::kInfinity);
  EXPECT_EQ(hit.prim, 0u);
  EXPECT_FLOAT_EQ(hit.t, 1.0f);
  hit = tracer.intersect(up, 1.5f, kernel::kInfinity);
  EXPECT_EQ(hit.prim, 1u);
  EXPECT_FLOAT_EQ(hit.t, 3.0f);
  EXPECT_NEAR(hit.u, 0.25f, 1e-6f);
  EXPECT_NEAR(hit.v, 0.5f, 1e-6f);
  EXPECT_TRUE(tracer.occluded(up, 1.5f, 3.5f));
  EXPECT_FALSE(tracer.occluded(up, 1.5f, 2.5f));
}

TEST(EmbreeTracerTest, AnotherThreadCountBuildsAgain) {
  RenderData data = test::compiledCornellBox();
  auto one = EmbreeScene::build(data, 1);
  ASSERT_TRUE(one.ok());
  auto two = EmbreeScene::build(data, 2, one->get());
  ASSERT_TRUE(two.ok());
  EXPECT_FALSE((*two)->buildStats().staticReused);  // its part belongs to another device
  auto again = EmbreeScene::build(data, 2, two->get());
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE((*again)->buildStats().staticReused);
}

TEST(EmbreeTracerTest, DataWithoutMeshesIsOneStaticMesh) {
  RenderData data = test::compiledCornellBox();
  RenderData bare = data;
  bare.meshes.clear();
  auto a = EmbreeScene::build(bare, 1);
  auto b = EmbreeScene::build(data, 1, nullptr);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ((*a)->buildStats().staticTriangles, data.triangles.size());
  const Comparison c = compareRays(data, **a, **b, 2000);
  EXPECT_EQ(c.differ + c.tiesResolvedOtherwise, 0u);
  // A scene built from the listed meshes reuses the same part for the unlisted form.
  auto reused = EmbreeScene::build(bare, 1, b->get());
  ASSERT_TRUE(reused.ok());
  EXPECT_TRUE((*reused)->buildStats().staticReused);
}

}  // namespace
}  // namespace pl
