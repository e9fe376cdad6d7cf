// The kernel BVH (core/kernel/bvh.h) and its builder (core/render/bvh_builder.h): tree
// invariants, and traversal against a brute-force loop over every triangle on random rays.

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "core/kernel/bvh.h"
#include "core/kernel/integrator.h"
#include "core/render/bvh_builder.h"
#include "core/render/cpu_device.h"
#include "core/render/embree_tracer.h"
#include "core/scene/compile.h"
#include "core/scene/load.h"
#include "tests/core/render/mesh_cases.h"
#include "tests/gpu/block_compare.h"

namespace pl {
namespace {

using kernel::Hit;
using kernel::Ray;
using kernel::Triangle;
using kernel::Vec3f;

struct TestMesh {
  std::vector<Vec3f> positions;
  std::vector<Triangle> triangles;

  void addTriangle(Vec3f a, Vec3f b, Vec3f c) {
    uint32_t base = static_cast<uint32_t>(positions.size());
    positions.push_back(a);
    positions.push_back(b);
    positions.push_back(c);
    triangles.push_back({base, base + 1, base + 2, 0});
  }
  void addBox(Vec3f lo, Vec3f hi) {
    Vec3f p[8];
    for (int i = 0; i < 8; ++i)
      p[i] = {i & 1 ? hi.x : lo.x, i & 2 ? hi.y : lo.y, i & 4 ? hi.z : lo.z};
    const int quads[6][4] = {{0, 1, 3, 2}, {4, 6, 7, 5}, {0, 4, 5, 1},
                             {2, 3, 7, 6}, {0, 2, 6, 4}, {1, 5, 7, 3}};
    for (const auto& q : quads) {  // shared vertices, as indexed meshes have
      uint32_t base = static_cast<uint32_t>(positions.size());
      for (int k = 0; k < 4; ++k) positions.push_back(p[q[k]]);
      triangles.push_back({base, base + 1, base + 2, 0});
      triangles.push_back({base, base + 2, base + 3, 0});
    }
  }
  // UV sphere with shared vertices (so rays through edges and poles test watertightness).
  void addSphere(Vec3f center, float radius, uint32_t rings, uint32_t segments) {
    uint32_t base = static_cast<uint32_t>(positions.size());
    for (uint32_t r = 0; r <= rings; ++r) {
      float theta = kernel::kPi * float(r) / float(rings);
      for (uint32_t s = 0; s <= segments; ++s) {
        float phi = 2.0f * kernel::kPi * float(s) / float(segments);
        positions.push_back(center + Vec3f{std::sin(theta) * std::cos(phi), std::cos(theta),
                                           std::sin(theta) * std::sin(phi)} *
                                         radius);
      }
    }
    for (uint32_t r = 0; r < rings; ++r) {
      for (uint32_t s = 0; s < segments; ++s) {
        uint32_t a = base + r * (segments + 1) + s, b = a + segments + 1;
        triangles.push_back({a, b, a + 1, 0});
        triangles.push_back({a + 1, b, b + 1, 0});
      }
    }
  }
};

Vec3f randomIn(std::mt19937& rng, Vec3f lo, Vec3f hi) {
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  return {lo.x + (hi.x - lo.x) * u(rng), lo.y + (hi.y - lo.y) * u(rng),
          lo.z + (hi.z - lo.z) * u(rng)};
}

Vec3f randomDirection(std::mt19937& rng) {
  std::normal_distribution<float> n(0.0f, 1.0f);
  for (;;) {
    Vec3f d{n(rng), n(rng), n(rng)};
    if (kernel::length(d) > 1e-3f) return kernel::normalize(d);
  }
}

void meshBounds(const TestMesh& mesh, Vec3f* lo, Vec3f* hi) {
  *lo = kernel::vec3(kernel::kInfinity);
  *hi = kernel::vec3(-kernel::kInfinity);
  for (const Vec3f& p : mesh.positions) {
    *lo = kernel::min(*lo, p);
    *hi = kernel::max(*hi, p);
  }
}

bool inside(Vec3f innerLo, Vec3f innerHi, Vec3f outerLo, Vec3f outerHi) {
  return innerLo.x >= outerLo.x && innerLo.y >= outerLo.y && innerLo.z >= outerLo.z &&
         innerHi.x <= outerHi.x && innerHi.y <= outerHi.y && innerHi.z <= outerHi.z;
}

// The reference: every triangle, with the same triangle test.
struct BruteForce {
  const TestMesh* mesh;
  float triangleT(uint32_t prim, const Ray& ray, float tMin, float tMax) const {
    kernel::BvhRay r = kernel::makeBvhRay(ray);
    const Triangle& tri = mesh->triangles[prim];
    float t, u, v;
    if (!kernel::intersectTriangle(r, mesh->positions[tri.v0], mesh->positions[tri.v1],
                                   mesh->positions[tri.v2], tMin, tMax, &t, &u, &v))
      return kernel::kInfinity;
    return t;
  }
  Hit intersect(const Ray& ray, float tMin, float tMax) const {
    kernel::BvhRay r = kernel::makeBvhRay(ray);
    Hit hit{tMax, kernel::kNoHit, 0.0f, 0.0f};
    for (uint32_t i = 0; i < mesh->triangles.size(); ++i) {
      const Triangle& tri = mesh->triangles[i];
      if (isDegenerateTriangle(mesh->positions[tri.v0], mesh->positions[tri.v1],
                               mesh->positions[tri.v2]))
        continue;  // the BVH leaves these out by contract
      float t, u, v;
      if (kernel::intersectTriangle(r, mesh->positions[tri.v0], mesh->positions[tri.v1],
                                    mesh->positions[tri.v2], tMin, hit.t, &t, &u, &v))
        hit = {t, i, u, v};
    }
    return hit;
  }
};

void checkInvariants(const TestMesh& mesh, const Bvh& bvh, uint32_t maxLeafSize) {
  ASSERT_FALSE(bvh.nodes.empty());
  uint32_t degenerate = 0;
  for (const Triangle& t : mesh.triangles)
    degenerate += isDegenerateTriangle(mesh.positions[t.v0], mesh.positions[t.v1],
                                       mesh.positions[t.v2]);
  EXPECT_EQ(bvh.degenerateCount, degenerate);
  ASSERT_EQ(bvh.primIndices.size() + degenerate, mesh.triangles.size());
  EXPECT_LE(bvh.depth, kernel::kBvhMaxDepth);
  EXPECT_LE(bvh.maxLeafSize, maxLeafSize);
  std::vector<int> referenced(mesh.triangles.size(), 0);
  std::vector<int> nodeSeen(bvh.nodes.size(), 0);
  // (node, depth)
  std::vector<std::pair<uint32_t, uint32_t>> todo{{0, 0}};
  uint32_t maxDepth = 0, leaves = 0;
  while (!todo.empty()) {
    auto [index, depth] = todo.back();
    todo.pop_back();
    ASSERT_LT(index, bvh.nodes.size());
    ASSERT_EQ(nodeSeen[index]++, 0) << "node " << index << " reached twice";
    maxDepth = std::max(maxDepth, depth);
    const kernel::BvhNode& n = bvh.nodes[index];
    if (n.count > 0) {
      ++leaves;
      EXPECT_LE(n.count, maxLeafSize);
      ASSERT_LE(uint64_t(n.first) + n.count, bvh.primIndices.size());
      for (uint32_t i = n.first; i < n.first + n.count; ++i) {
        uint32_t prim = bvh.primIndices[i];
        ASSERT_LT(prim, mesh.triangles.size());
        referenced[prim] += 1;
        const Triangle& t = mesh.triangles[prim];
        for (uint32_t v : {t.v0, t.v1, t.v2})
          EXPECT_TRUE(inside(mesh.positions[v], mesh.positions[v], n.boundsMin, n.boundsMax))
              << "leaf " << index << " does not contain a vertex of triangle " << prim;
      }
    } else {
      ASSERT_LT(uint64_t(n.first) + 1, bvh.nodes.size());
      for (uint32_t c : {n.first, n.first + 1}) {
        const kernel::BvhNode& child = bvh.nodes[c];
        EXPECT_TRUE(inside(child.boundsMin, child.boundsMax, n.boundsMin, n.boundsMax))
            << "child " << c << " sticks out of node " << index;
        todo.push_back({c, depth + 1});
      }
    }
  }
  EXPECT_LT(maxDepth, kernel::kBvhMaxDepth);
  EXPECT_EQ(maxDepth + 1, bvh.depth);
  EXPECT_EQ(leaves, bvh.leafCount);
  for (size_t i = 0; i < referenced.size(); ++i) {
    const Triangle& t = mesh.triangles[i];
    int expected = isDegenerateTriangle(mesh.positions[t.v0], mesh.positions[t.v1],
                                        mesh.positions[t.v2])
                       ? 0
                       : 1;
    ASSERT_EQ(referenced[i], expected) << "triangle " << i << " referenced " << referenced[i]
                                       << " times";
  }
  for (size_t i = 0; i < nodeSeen.size(); ++i) EXPECT_EQ(nodeSeen[i], 1) << "orphan node " << i;
}

// Random rays of three kinds: from outside the bounds, from inside, and aimed at the centroid
// of a random triangle (so that most of them hit); some with axis-aligned directions.
// Compares closest hits and occlusion with the brute-force reference.
void checkTraversal(const TestMesh& mesh, const Bvh& bvh, uint32_t rayCount, uint32_t seed) {
  kernel::BvhTracer tracer{bvh.nodes.data(), bvh.primIndices.data(), mesh.positions.data(),
                           mesh.triangles.data()};
  BruteForce ref{&mesh};
  std::mt19937 rng(seed);
  Vec3f lo, hi;
  meshBounds(mesh, &lo, &hi);
  Vec3f size = hi - lo;
  Vec3f outerLo = lo - size * 0.5f, outerHi = hi + size * 0.5f;
  uint32_t hits = 0, mismatches = 0, ties = 0;
  for (uint32_t i = 0; i < rayCount; ++i) {
    Ray ray;
    uint32_t kind = i % 4;
    ray.origin = randomIn(rng, kind == 1 ? lo : outerLo, kind == 1 ? hi : outerHi);
    if (kind == 2 && !mesh.triangles.empty()) {
      const Triangle& t = mesh.triangles[rng() % mesh.triangles.size()];
      Vec3f c = (mesh.positions[t.v0] + mesh.positions[t.v1] + mesh.positions[t.v2]) / 3.0f;
      Vec3f d = c - ray.origin;
      ray.direction = kernel::length(d) > 0.0f ? kernel::normalize(d) : randomDirection(rng);
    } else if (kind == 3) {
      Vec3f d{0, 0, 0};
      float s = (rng() & 1) ? 1.0f : -1.0f;
      switch (rng() % 3) {
        case 0: d.x = s; break;
        case 1: d.y = s; break;
        default: d.z = s; break;
      }
      ray.direction = d;
    } else {
      ray.direction = randomDirection(rng);
    }
    float tMin = (i % 3 == 0) ? 1e-4f : 0.0f;
    float tMax = (i % 5 == 0) ? kernel::length(size) * 0.3f : kernel::kInfinity;

    Hit expected = ref.intersect(ray, tMin, tMax);
    Hit got = tracer.intersect(ray, tMin, tMax);
    if (expected.prim != kernel::kNoHit) ++hits;
    if (got.prim != expected.prim) {
      // Only acceptable as an exact tie: both triangles at the same distance.
      bool tie = got.prim != kernel::kNoHit && expected.prim != kernel::kNoHit &&
                 got.t == expected.t && ref.triangleT(got.prim, ray, tMin, tMax) == got.t;
      if (tie) {
        ++ties;
      } else if (++mismatches <= 5) {
        ADD_FAILURE() << "ray " << i << " origin (" << ray.origin.x << ", " << ray.origin.y
                      << ", " << ray.origin.z << ") dir (" << ray.direction.x << ", "
                      << ray.direction.y << ", " << ray.direction.z << "): bvh prim "
                      << got.prim << " t " << got.t << ", brute force prim " << expected.prim
                      << " t " << expected.t;
      }
    } else if (got.prim != kernel::kNoHit) {
      // Same triangle, same arithmetic: same bits.
      EXPECT_EQ(got.t, expected.t);
      EXPECT_EQ(got.u, expected.u);
      EXPECT_EQ(got.v, expected.v);
    }
    EXPECT_EQ(tracer.occluded(ray, tMin, tMax), expected.prim != kernel::kNoHit) << "ray " << i;
  }
  EXPECT_EQ(mismatches, 0u);
  // The ray set must actually exercise hits (guards against a test that only sees misses).
  if (!mesh.triangles.empty()) {
    EXPECT_GT(hits, rayCount / 8);
  }
  std::printf("  %u rays, %u hits, %u exact ties\n", rayCount, hits, ties);
}

void buildAndCheck(const TestMesh& mesh, uint32_t rayCount, BvhBuildOptions options = {}) {
  Bvh bvh = buildBvh(mesh.positions, mesh.triangles, options);
  std::printf("  %zu triangles: %zu nodes, %u leaves, depth %u, largest leaf %u\n",
              mesh.triangles.size(), bvh.nodes.size(), bvh.leafCount, bvh.depth,
              bvh.maxLeafSize);
  checkInvariants(mesh, bvh, options.maxLeafSize);
  checkTraversal(mesh, bvh, rayCount, 1234);
}

TEST(BvhTriangle, BarycentricsAndDistance) {
  Ray ray{{0.25f, 0.25f, 5.0f}, {0.0f, 0.0f, -1.0f}};
  kernel::BvhRay r = kernel::makeBvhRay(ray);
  float t, u, v;
  ASSERT_TRUE(kernel::intersectTriangle(r, {0, 0, 0}, {1, 0, 0}, {0, 1, 0}, 0.0f, 100.0f, &t,
                                        &u, &v));
  EXPECT_FLOAT_EQ(t, 5.0f);
  EXPECT_FLOAT_EQ(u, 0.25f);  // weight of p1 = (1,0,0)
  EXPECT_FLOAT_EQ(v, 0.25f);
  // Back face too, and the t interval is open at both ends.
  Ray back{{0.25f, 0.5f, -5.0f}, {0.0f, 0.0f, 1.0f}};
  kernel::BvhRay rb = kernel::makeBvhRay(back);
  ASSERT_TRUE(kernel::intersectTriangle(rb, {0, 0, 0}, {1, 0, 0}, {0, 1, 0}, 0.0f, 100.0f, &t,
                                        &u, &v));
  EXPECT_FLOAT_EQ(u, 0.25f);
  EXPECT_FLOAT_EQ(v, 0.5f);
  EXPECT_FALSE(kernel::intersectTriangle(rb, {0, 0, 0}, {1, 0, 0}, {0, 1, 0}, 0.0f, 5.0f, &t,
                                         &u, &v));
  EXPECT_FALSE(kernel::intersectTriangle(rb, {0, 0, 0}, {1, 0, 0}, {0, 1, 0}, 5.0f, 100.0f,
                                         &t, &u, &v));
  // Outside, and degenerate.
  EXPECT_FALSE(kernel::intersectTriangle(r, {1, 1, 0}, {2, 1, 0}, {1, 2, 0}, 0.0f, 100.0f, &t,
                                         &u, &v));
  EXPECT_FALSE(kernel::intersectTriangle(r, {0, 0, 0}, {1, 1, 0}, {2, 2, 0}, 0.0f, 100.0f, &t,
                                         &u, &v));
}

TEST(BvhTriangle, WatertightOnSharedEdges) {
  // A ray through the shared diagonal of a quad, and through a shared vertex of a fan, must hit
  // at least one of the triangles.
  Vec3f a{0, 0, 0}, b{1, 0, 0}, c{1, 1, 0}, d{0, 1, 0};
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> uni(0.0f, 1.0f);
  for (int i = 0; i < 2000; ++i) {
    float s = 0.01f + 0.98f * uni(rng);
    Vec3f target{s, s, 0.0f};  // on the diagonal a-c (rounded, may be off by an ulp)
    Vec3f origin{uni(rng) * 4 - 2, uni(rng) * 4 - 2, 1.0f + uni(rng)};
    Ray ray{origin, kernel::normalize(target - origin)};
    kernel::BvhRay r = kernel::makeBvhRay(ray);
    float t, u, v;
    bool h1 = kernel::intersectTriangle(r, a, b, c, 0.0f, 100.0f, &t, &u, &v);
    bool h2 = kernel::intersectTriangle(r, a, c, d, 0.0f, 100.0f, &t, &u, &v);
    EXPECT_TRUE(h1 || h2) << "ray " << i << " fell through the diagonal at s = " << s;
  }
}

TEST(Bvh, EmptyScene) {
  TestMesh mesh;
  Bvh bvh = buildBvh(mesh.positions, mesh.triangles);
  ASSERT_EQ(bvh.nodes.size(), 1u);
  EXPECT_EQ(bvh.nodes[0].count, 0u);
  kernel::BvhTracer tracer{bvh.nodes.data(), bvh.primIndices.data(), nullptr, nullptr};
  Ray ray{{0, 0, 0}, {0, 0, 1}};
  EXPECT_EQ(tracer.intersect(ray, 0.0f, kernel::kInfinity).prim, kernel::kNoHit);
  EXPECT_FALSE(tracer.occluded(ray, 0.0f, kernel::kInfinity));
}

TEST(Bvh, SingleTriangle) {
  TestMesh mesh;
  mesh.addTriangle({-1, -1, 2}, {1, -1, 2}, {0, 1, 2});
  Bvh bvh = buildBvh(mesh.positions, mesh.triangles);
  checkInvariants(mesh, bvh, 4);
  kernel::BvhTracer tracer{bvh.nodes.data(), bvh.primIndices.data(), mesh.positions.data(),
                           mesh.triangles.data()};
  Hit hit = tracer.intersect({{0, 0, 0}, {0, 0, 1}}, 0.0f, kernel::kInfinity);
  EXPECT_EQ(hit.prim, 0u);
  EXPECT_FLOAT_EQ(hit.t, 2.0f);
  EXPECT_EQ(tracer.intersect({{0, 0, 0}, {0, 0, -1}}, 0.0f, kernel::kInfinity).prim,
            kernel::kNoHit);
  EXPECT_FALSE(tracer.occluded({{0, 0, 0}, {0, 0, 1}}, 0.0f, 1.5f));
  EXPECT_TRUE(tracer.occluded({{0, 0, 0}, {0, 0, 1}}, 0.0f, 2.5f));
}

TEST(Bvh, SpheresAndBoxes) {
  TestMesh mesh;
  std::mt19937 rng(42);
  for (int i = 0; i < 12; ++i) {
    Vec3f c = randomIn(rng, {-10, -10, -10}, {10, 10, 10});
    mesh.addSphere(c, 0.5f + float(rng() % 100) / 50.0f, 12 + rng() % 12, 16 + rng() % 16);
  }
  for (int i = 0; i < 300; ++i) {
    Vec3f p = randomIn(rng, {-12, -12, -12}, {12, 12, 12});
    Vec3f s = randomIn(rng, {0.05f, 0.05f, 0.05f}, {2, 2, 2});
    mesh.addBox(p, p + s);
  }
  // A ground plane of two huge triangles, which overlap everything.
  mesh.addTriangle({-50, -11, -50}, {50, -11, -50}, {50, -11, 50});
  mesh.addTriangle({-50, -11, -50}, {50, -11, 50}, {-50, -11, 50});
  buildAndCheck(mesh, 4000);
}

TEST(Bvh, RandomSoupAndLeafSizes) {
  TestMesh mesh;
  std::mt19937 rng(3);
  for (int i = 0; i < 3000; ++i) {
    Vec3f p = randomIn(rng, {-5, -5, -5}, {5, 5, 5});
    mesh.addTriangle(p, p + randomDirection(rng) * 0.7f, p + randomDirection(rng) * 0.4f);
  }
  for (uint32_t leaf : {1u, 4u, 8u}) {
    for (uint32_t bins : {2u, 16u, 32u}) {
      SCOPED_TRACE("maxLeafSize " + std::to_string(leaf) + " bins " + std::to_string(bins));
      BvhBuildOptions options;
      options.maxLeafSize = leaf;
      options.binCount = bins;
      buildAndCheck(mesh, 1000, options);
    }
  }
}

TEST(Bvh, CoincidentAndDegenerateTriangles) {
  // Every centroid equal (no SAH split possible), plus zero-area triangles and a sliver line:
  // the builder must still terminate with small leaves and a bounded depth.
  TestMesh mesh;
  for (int i = 0; i < 500; ++i) mesh.addTriangle({-1, -1, 0}, {1, -1, 0}, {0, 2, 0});
  for (int i = 0; i < 100; ++i) mesh.addTriangle({0, 0, 1}, {0, 0, 1}, {0, 0, 1});
  for (int i = 0; i < 100; ++i)
    mesh.addTriangle({0, 0, float(i)}, {0, 0, float(i) + 1}, {0, 0, float(i) + 2});
  buildAndCheck(mesh, 500);
}

TEST(Bvh, DepthLimitOnGeometricSeries) {
  // Triangles at geometrically shrinking positions: SAH alone would peel one off per level.
  TestMesh mesh;
  float x = 1.0f;
  for (int i = 0; i < 3000; ++i) {
    mesh.addTriangle({x, 0, 0}, {x * 1.001f, 1, 0}, {x, 0, 1});
    x *= 0.98f;
  }
  Bvh bvh = buildBvh(mesh.positions, mesh.triangles);
  checkInvariants(mesh, bvh, 4);
  checkTraversal(mesh, bvh, 1000, 5);
}

// Real meshes from disk (the loader flattens instances into world space).
TestMesh meshFromFile(const std::string& path) {
  TestMesh mesh;
  Result<Scene> scene = loadScene(path);
  EXPECT_TRUE(scene.ok()) << (scene.ok() ? "" : scene.error().message);
  if (!scene.ok()) return mesh;
  for (const pl::Mesh& m : scene->meshes) {
    uint32_t base = static_cast<uint32_t>(mesh.positions.size());
    mesh.positions.insert(mesh.positions.end(), m.positions.begin(), m.positions.end());
    for (size_t i = 0; i + 2 < m.indices.size(); i += 3)
      mesh.triangles.push_back(
          {base + m.indices[i], base + m.indices[i + 1], base + m.indices[i + 2], m.material});
  }
  return mesh;
}

std::string cornellBoxPath() {
  std::string own = std::string(PEERLIGHT_SOURCE_DIR) + "/scenes/cornell_box.gltf";
  std::string shared =
      std::string(PEERLIGHT_SHARED_DIR) + "/scenes/cornell-box/gltf-derived/cornell_box.gltf";
  return std::filesystem::exists(own) ? own : shared;
}

void checkFile(const std::string& path, uint32_t rayCount) {
  if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " is missing";
  TestMesh mesh = meshFromFile(path);
  ASSERT_FALSE(mesh.triangles.empty());
  auto start = std::chrono::steady_clock::now();
  Bvh bvh = buildBvh(mesh.positions, mesh.triangles);
  double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                  .count();
  std::printf("  %s: build %.1f ms\n", path.c_str(), ms);
  checkInvariants(mesh, bvh, 4);
  checkTraversal(mesh, bvh, rayCount, 99);
}

TEST(BvhScenes, CornellBox) { checkFile(cornellBoxPath(), 4000); }

TEST(BvhScenes, Duck) {
  checkFile(std::string(PEERLIGHT_SHARED_DIR) + "/scenes/khronos-gltf/Duck/glTF/Duck.gltf",
            1500);
}

TEST(BvhScenes, StanfordBunny) {
  // ~70k triangles: brute force is the slow part, so few rays.
  checkFile(std::string(PEERLIGHT_SHARED_DIR) + "/scenes/stanford-bunny/stanford-bunny.obj",
            300);
}


// The BVH and Embree see the same triangles: on random rays they report the same closest
// triangle (up to ties on shared edges) at nearly the same distance.
void checkAgainstEmbree(const std::string& path, uint32_t rayCount) {
  if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " is missing";
  CompileOptions options;
  options.width = options.height = 64;
  Result<RenderData> data = loadAndCompile(path, options);
  ASSERT_TRUE(data.ok()) << data.error().message;
  Bvh bvh = buildBvh(data->positions, data->triangles);
  kernel::BvhTracer tracer = bvh.tracer(*data);
  Result<std::unique_ptr<EmbreeScene>> embree = EmbreeScene::build(*data, 1);
  ASSERT_TRUE(embree.ok()) << embree.error().message;
  EmbreeTracer reference = (*embree)->tracer();

  std::mt19937 rng(11);
  Vec3f lo = data->globals[0].boundsMin, hi = data->globals[0].boundsMax;
  uint32_t hits = 0, disagreements = 0;
  for (uint32_t i = 0; i < rayCount; ++i) {
    Ray ray{randomIn(rng, lo, hi), randomDirection(rng)};
    Hit e = reference.intersect(ray, 0.0f, kernel::kInfinity);
    Hit b = tracer.intersect(ray, 0.0f, kernel::kInfinity);
    if (e.prim != kernel::kNoHit) ++hits;
    bool agree = e.prim == b.prim;
    if (e.prim != kernel::kNoHit && b.prim != kernel::kNoHit)
      agree = std::fabs(e.t - b.t) <= 1e-4f * std::max(1.0f, e.t) &&
              (e.prim == b.prim || std::fabs(e.t - b.t) <= 1e-5f * std::max(1.0f, e.t));
    if (agree && e.prim == b.prim && e.prim != kernel::kNoHit) {
      EXPECT_NEAR(e.u, b.u, 1e-3f) << "ray " << i;
      EXPECT_NEAR(e.v, b.v, 1e-3f) << "ray " << i;
    }
    if (agree) {
      EXPECT_EQ(reference.occluded(ray, 0.0f, kernel::kInfinity),
                tracer.occluded(ray, 0.0f, kernel::kInfinity))
          << "ray " << i;
    }
    if (!agree) ++disagreements;
  }
  std::printf("  %u rays, %u hits, %u disagreements with Embree\n", rayCount, hits,
              disagreements);
  EXPECT_GT(hits, rayCount / 4);
  // Rays grazing an edge may go either way in two different triangle tests.
  EXPECT_LE(disagreements, rayCount / 1000 + 1);
}

// --- Built in parts: static meshes and dynamic ones --------------------------------------

TestMesh testMeshOf(const RenderData& data) {
  TestMesh mesh;
  mesh.positions = data.positions;
  mesh.triangles = data.triangles;
  return mesh;
}

bool sameTree(const Bvh& a, const Bvh& b) {
  return a.nodes.size() == b.nodes.size() && a.primIndices == b.primIndices &&
         std::memcmp(a.nodes.data(), b.nodes.data(), a.nodes.size() * sizeof(kernel::BvhNode)) ==
             0 &&
         a.depth == b.depth && a.leafCount == b.leafCount;
}

TEST(MeshBvh, WithoutDynamicMeshesItIsTheWholeTree) {
  RenderData data = test::compiledCornellBox();
  std::shared_ptr<const StaticBvh> part;
  Bvh whole = buildMeshBvh(data, &part);
  ASSERT_NE(part, nullptr);
  EXPECT_TRUE(sameTree(whole, buildBvh(data.positions, data.triangles)));
  // A camera or material change keeps the part; a moved static vertex does not.
  const std::shared_ptr<const StaticBvh> kept = part;  // alive: a new one gets another address
  data.camera[0].position.x += 1.0f;
  data.materials[0].roughnessFactor = 0.1f;
  buildMeshBvh(data, &part);
  EXPECT_EQ(part, kept);
  data.positions[0].x += 0.01f;
  buildMeshBvh(data, &part);
  EXPECT_NE(part, kept);
}

TEST(MeshBvh, MovingDynamicMeshesKeepsTheStaticTree) {
  const RenderData data = test::compiledCornellBox();
  for (const std::vector<size_t>& dynamicMeshes : test::dynamicMeshCases()) {
    SCOPED_TRACE(test::describeCase(dynamicMeshes));
    RenderData d = test::withDynamicMeshes(data, dynamicMeshes);
    std::shared_ptr<const StaticBvh> part;
    Bvh first = buildMeshBvh(d, &part);
    checkInvariants(testMeshOf(d), first, 4);
    checkTraversal(testMeshOf(d), first, 3000, 7);
    const std::shared_ptr<const StaticBvh> kept = part;  // alive: a new one gets another address

    for (size_t m : dynamicMeshes) test::moveMesh(d, m, {0.03f, 0.02f, -0.01f});
    Bvh moved = buildMeshBvh(d, &part);
    EXPECT_EQ(part, kept) << "the static tree was built again";
    checkInvariants(testMeshOf(d), moved, 4);
    checkTraversal(testMeshOf(d), moved, 3000, 8);
    // Warm or fresh: the same tree, bit for bit.
    std::shared_ptr<const StaticBvh> none;
    EXPECT_TRUE(sameTree(moved, buildMeshBvh(d, &none)));
    // The static tree's root is the root's first child, whatever the number of dynamic meshes.
    if (dynamicMeshes.size() < data.meshes.size()) {
      const kernel::BvhNode& root = moved.nodes[0];
      ASSERT_EQ(root.count, 0u);
      const kernel::BvhNode& child = moved.nodes[root.first];
      const kernel::BvhNode& staticRoot = part->bvh.nodes[0];
      EXPECT_EQ(std::memcmp(&child.boundsMin, &staticRoot.boundsMin, sizeof(Vec3f)), 0);
      EXPECT_EQ(std::memcmp(&child.boundsMax, &staticRoot.boundsMax, sizeof(Vec3f)), 0);
      EXPECT_EQ(child.count, staticRoot.count);
    }

    // Another mesh becoming dynamic changes the static meshes: a new static tree.
    RenderData more = d;
    for (kernel::MeshRange& m : more.meshes) m.flags = kernel::kMeshDynamic;
    more.meshes[0].flags = 0;
    std::shared_ptr<const StaticBvh> other = part;
    Bvh changed = buildMeshBvh(more, &other);
    EXPECT_NE(other.get(), part.get());
    checkInvariants(testMeshOf(more), changed, 4);
  }
}

TEST(MeshBvh, DataListingNoMeshesIsOneStaticMesh) {
  RenderData data = test::compiledCornellBox();
  data.meshes.clear();
  std::shared_ptr<const StaticBvh> part;
  EXPECT_TRUE(sameTree(buildMeshBvh(data, &part), buildBvh(data.positions, data.triangles)));
}

TEST(BvhScenes, AgreesWithEmbreeCornellBox) { checkAgainstEmbree(cornellBoxPath(), 20000); }

TEST(BvhScenes, AgreesWithEmbreeDuck) {
  checkAgainstEmbree(
      std::string(PEERLIGHT_SHARED_DIR) + "/scenes/khronos-gltf/Duck/glTF/Duck.gltf", 20000);
}

// What the CUDA device computes, but on the host: kernel::renderPixel over the BvhTracer,
// compared with the CPU device (Embree) within noise (tests/gpu/block_compare.h). Catches a
// BVH that disagrees with the integrator's Tracer contract (prim, barycentrics, t interval)
// on machines without a GPU.
TEST(BvhScenes, HostRenderMatchesCpuDevice) {
  constexpr uint32_t kSize = 64, kHalf = 32;
  CompileOptions options;
  options.width = options.height = kSize;
  Result<RenderData> compiled = loadAndCompile(cornellBoxPath(), options);
  ASSERT_TRUE(compiled.ok()) << compiled.error().message;
  auto data = std::make_shared<const RenderData>(std::move(compiled).value());
  Bvh bvh = buildBvh(data->positions, data->triangles);
  kernel::BvhTracer tracer = bvh.tracer(*data);
  kernel::SceneView view = data->view();

  std::vector<int64_t> bvhHalves[2], cpuHalves[2];
  CpuDevice cpu(2);
  ASSERT_TRUE(cpu.load(data).ok());
  for (uint32_t h = 0; h < 2; ++h) {
    bvhHalves[h].assign(size_t(kSize) * kSize * 3, 0);
    for (uint32_t y = 0; y < kSize; ++y) {
      for (uint32_t x = 0; x < kSize; ++x) {
        uint32_t rays = 0;
        kernel::renderPixel(view, tracer, x, y, h * kHalf, (h + 1) * kHalf,
                            &bvhHalves[h][(size_t(y) * kSize + x) * 3], &rays);
      }
    }
    Result<TileResult> r =
        cpu.render(WorkUnit{Rect{0, 0, kSize, kSize}, h * kHalf, (h + 1) * kHalf, 2 * kHalf});
    ASSERT_TRUE(r.ok()) << r.error().message;
    cpuHalves[h] = r->sums;
  }
  test::BlockComparison cmp = test::compareBlocks(kSize, kSize, 16, kHalf, bvhHalves[0],
                                                  bvhHalves[1], cpuHalves[0], cpuHalves[1], 4.0);
  std::printf("  mean %.5f (BVH) vs %.5f (Embree), max |z| %.2f over %u block-channels\n",
              cmp.meanA, cmp.meanB, cmp.maxZ, cmp.tests);
  EXPECT_GT(cmp.meanA, 0.01);
  EXPECT_LT(cmp.maxZ, 6.0) << cmp.worst;
  EXPECT_LE(cmp.overSoft, cmp.tests / 50 + 1) << cmp.worst;
}

}  // namespace
}  // namespace pl
