// Loading real scenes: the project's own Cornell box, and the Khronos samples, Cornell boxes
// and Sponza in the shared data folder (skipped when it is missing). Triangle counts are those
// of /work/shared/scenes/README.md.

#include "core/scene/load.h"

#include <gtest/gtest.h>

#include <cmath>

#include "tests/core/scene/test_files.h"

namespace pl {
namespace {

using test::haveShared;
using test::shared;

#define REQUIRE_SHARED(rel) \
  if (!haveShared(rel)) GTEST_SKIP() << "shared scene data missing: " << shared(rel)

struct Expect {
  uint64_t triangles;
  size_t materials, textures, cameras, lights;
};

Scene loadOk(const std::string& path) {
  auto s = loadScene(path);
  EXPECT_TRUE(s.ok()) << (s.ok() ? "" : s.error().message);
  if (!s.ok()) return Scene();
  return std::move(*s);
}

void expectCounts(const Scene& s, const Expect& e) {
  EXPECT_EQ(s.triangleCount(), e.triangles);
  EXPECT_EQ(s.materials.size(), e.materials);
  EXPECT_EQ(s.textures.size(), e.textures);
  EXPECT_EQ(s.cameras.size(), e.cameras);
  EXPECT_EQ(s.lights.size(), e.lights);
  // Every mesh is consistent.
  for (const Mesh& m : s.meshes) {
    ASSERT_EQ(m.normals.size(), m.positions.size());
    ASSERT_EQ(m.uvs.size(), m.positions.size());
    ASSERT_EQ(m.tangents.size(), m.positions.size());
    ASSERT_EQ(m.indices.size() % 3, 0u);
    ASSERT_LT(m.material, s.materials.size());
    for (uint32_t i : m.indices) ASSERT_LT(i, m.positions.size());
    for (const kernel::Vec3f& n : m.normals) ASSERT_NEAR(kernel::length(n), 1.0f, 1e-3f);
  }
}

void expectBounds(const Scene& s, kernel::Vec3f lo, kernel::Vec3f hi, float tol) {
  EXPECT_NEAR(s.boundsMin.x, lo.x, tol);
  EXPECT_NEAR(s.boundsMin.y, lo.y, tol);
  EXPECT_NEAR(s.boundsMin.z, lo.z, tol);
  EXPECT_NEAR(s.boundsMax.x, hi.x, tol);
  EXPECT_NEAR(s.boundsMax.y, hi.y, tol);
  EXPECT_NEAR(s.boundsMax.z, hi.z, tol);
}

TEST(LoadScene, OwnCornellBox) {
  Scene s = loadOk(std::string(PEERLIGHT_SOURCE_DIR) + "/scenes/cornell_box.gltf");
  expectCounts(s, {32, 4, 0, 1, 0});
  expectBounds(s, {-0.278f, 0.0f, -0.2796f}, {0.278f, 0.5488f, 0.2796f}, 1e-4f);
  ASSERT_EQ(s.cameras.size(), 1u);
  EXPECT_EQ(s.cameras[0].name, "Camera");
  EXPECT_NEAR(s.cameras[0].yfov, 2.0f * std::atan(12.5f / 35.0f), 1e-6f);
  EXPECT_NEAR(s.cameras[0].forward.z, -1.0f, 1e-6f);
  EXPECT_NEAR(s.cameras[0].position.z, 1.0796f, 1e-5f);
  // The light: emission (17, 12, 4), single-sided, facing down.
  int light = -1;
  for (size_t i = 0; i < s.materials.size(); ++i)
    if (s.materialNames[i] == "light") light = int(i);
  ASSERT_GE(light, 0);
  EXPECT_NEAR(s.materials[light].emission.x, 17.0f, 1e-4f);
  EXPECT_NEAR(s.materials[light].emission.y, 12.0f, 1e-4f);
  EXPECT_NEAR(s.materials[light].emission.z, 4.0f, 1e-4f);
  EXPECT_EQ(s.materials[light].doubleSided, 0u);
  for (const Mesh& m : s.meshes) {
    if (m.material != uint32_t(light)) continue;
    for (size_t i = 0; i < m.indices.size(); i += 3) {
      kernel::Vec3f a = m.positions[m.indices[i]], b = m.positions[m.indices[i + 1]],
                    c = m.positions[m.indices[i + 2]];
      kernel::Vec3f n = kernel::normalize(kernel::cross(b - a, c - a));
      EXPECT_NEAR(n.y, -1.0f, 1e-5f);
    }
  }
}

// The project's glass scene (scenes/make_glass_scene.py): a solid, refracting, absorbing
// sphere (KHR_materials_transmission, _ior, _volume), loaded with nothing dropped.
TEST(LoadScene, OwnGlassSphere) {
  Scene s = loadOk(std::string(PEERLIGHT_SOURCE_DIR) + "/scenes/glass_sphere.gltf");
  expectCounts(s, {2520, 5, 0, 1, 0});
  EXPECT_TRUE(s.warnings.empty()) << s.warnings.front();
  expectBounds(s, {-1.5f, 0.0f, -1.5f}, {1.5f, 1.5f, 1.5f}, 1e-5f);
  ASSERT_EQ(s.materialNames[0], "Glass");
  const kernel::Material& glass = s.materials[0];
  EXPECT_EQ(glass.transmissionFactor, 1.0f);
  EXPECT_EQ(glass.ior, 1.5f);
  EXPECT_NEAR(glass.thicknessFactor, 0.7f, 1e-6f);
  EXPECT_EQ(glass.attenuationDistance, 0.5f);
  EXPECT_EQ(glass.attenuationColor.y, 0.95f);
}

// Generated tangents put a normal map's green (+Y, "up" in the image: glTF's v = 0 row) on the
// side of the surface where the image's top lies, also where the UVs are mirrored (glTF's
// convention; three.js and Blender's importer give the same). A quad in z = 0, facing +z, with
// the image upright on it: its top row (v = 0) at y = 1.
TEST(Tangents, GreenPointsToTheImagesTop) {
  for (const bool mirrored : {false, true}) {
    SCOPED_TRACE(mirrored ? "u mirrored" : "upright");
    Mesh m;
    m.positions = {{0, 0, 0}, {1, 0, 0}, {1, 1, 0}, {0, 1, 0}};
    m.indices = {0, 1, 2, 0, 2, 3};
    m.uvs = {{0, 1}, {1, 1}, {1, 0}, {0, 0}};
    if (mirrored)
      for (kernel::Vec2f& uv : m.uvs) uv.x = 1.0f - uv.x;
    generateNormals(m);
    generateTangents(m);
    for (size_t v = 0; v < 4; ++v) {
      const kernel::Vec4f& t = m.tangents[v];
      EXPECT_NEAR(t.x, mirrored ? -1.0f : 1.0f, 1e-6f);  // along +u
      const kernel::Vec3f b = kernel::cross(m.normals[v], kernel::xyz(t)) * t.w;
      EXPECT_NEAR(b.y, 1.0f, 1e-6f);  // towards the image's top
    }
  }
}

TEST(LoadScene, Box) {
  REQUIRE_SHARED("scenes/khronos-gltf/Box/glTF/Box.gltf");
  for (const char* f :
       {"scenes/khronos-gltf/Box/glTF/Box.gltf", "scenes/khronos-gltf/Box/glTF-Binary/Box.glb"}) {
    SCOPED_TRACE(f);
    Scene s = loadOk(shared(f));
    expectCounts(s, {12, 1, 0, 0, 0});
    // The root node's matrix turns the unit box's Z up into glTF's Y up: still a unit cube.
    expectBounds(s, {-0.5f, -0.5f, -0.5f}, {0.5f, 0.5f, 0.5f}, 1e-5f);
  }
}

TEST(LoadScene, Duck) {
  REQUIRE_SHARED("scenes/khronos-gltf/Duck/glTF/Duck.gltf");
  for (const char* f : {"scenes/khronos-gltf/Duck/glTF/Duck.gltf",
                        "scenes/khronos-gltf/Duck/glTF-Binary/Duck.glb"}) {
    SCOPED_TRACE(f);
    Scene s = loadOk(shared(f));
    expectCounts(s, {4212, 1, 1, 1, 0});
    // The mesh spans about 165 units; its node scales it by 0.01.
    expectBounds(s, {-0.692985f, 0.0992937f, -0.613282f}, {0.961799f, 1.6397f, 0.539252f}, 1e-4f);
    ASSERT_EQ(s.textures.size(), 1u);
    EXPECT_EQ(s.textures[0].width, 512u);
    EXPECT_EQ(s.textures[0].height, 512u);
    EXPECT_EQ(s.materials[0].baseColorTexture, 0);
    EXPECT_EQ(s.cameras[0].type, uint32_t(kernel::kCameraPerspective));
  }
}

TEST(LoadScene, DamagedHelmet) {
  REQUIRE_SHARED("scenes/khronos-gltf/DamagedHelmet/glTF/DamagedHelmet.gltf");
  Scene s = loadOk(shared("scenes/khronos-gltf/DamagedHelmet/glTF/DamagedHelmet.gltf"));
  // 5 images, but only 4 are used by material slots we render (occlusion is not).
  expectCounts(s, {15452, 1, 4, 0, 0});
  const kernel::Material& m = s.materials[0];
  EXPECT_GE(m.baseColorTexture, 0);
  EXPECT_GE(m.metallicRoughnessTexture, 0);
  EXPECT_GE(m.normalTexture, 0);
  EXPECT_GE(m.emissiveTexture, 0);
  // Tangents were generated (the file has none): unit and orthogonal to the normals.
  const Mesh& mesh = s.meshes[0];
  for (size_t i = 0; i < mesh.tangents.size(); i += 97) {
    kernel::Vec3f t = kernel::xyz(mesh.tangents[i]);
    EXPECT_NEAR(kernel::length(t), 1.0f, 1e-3f);
    EXPECT_NEAR(kernel::dot(t, mesh.normals[i]), 0.0f, 1e-3f);
    EXPECT_EQ(std::fabs(mesh.tangents[i].w), 1.0f);
  }
  Scene glb = loadOk(shared("scenes/khronos-gltf/DamagedHelmet/glTF-Binary/DamagedHelmet.glb"));
  EXPECT_EQ(glb.triangleCount(), 15452u);
  EXPECT_EQ(glb.textures.size(), 4u);
}

TEST(LoadScene, WaterBottle) {
  REQUIRE_SHARED("scenes/khronos-gltf/WaterBottle/glTF/WaterBottle.gltf");
  Scene s = loadOk(shared("scenes/khronos-gltf/WaterBottle/glTF/WaterBottle.gltf"));
  expectCounts(s, {4510, 1, 4, 0, 0});
  EXPECT_GE(s.materials[0].emissiveTexture, 0);
  EXPECT_GE(s.materials[0].normalTexture, 0);
}

TEST(LoadScene, ToyCar) {
  // Clearcoat, sheen, thin-walled transmission and texture transforms, all without a warning.
  REQUIRE_SHARED("scenes/khronos-gltf/ToyCar/glTF/ToyCar.gltf");
  Scene s = loadOk(shared("scenes/khronos-gltf/ToyCar/glTF/ToyCar.gltf"));
  for (const std::string& w : s.warnings) ADD_FAILURE() << w;
  ASSERT_EQ(s.materials.size(), s.materialNames.size());
  bool glass = false, fabric = false, paint = false;
  for (size_t i = 0; i < s.materials.size(); ++i) {
    const kernel::Material& m = s.materials[i];
    if (s.materialNames[i] == "Glass") {
      glass = true;
      EXPECT_EQ(m.transmissionFactor, 1.0f);
      EXPECT_EQ(m.thicknessFactor, 0.0f);  // no KHR_materials_volume: a thin wall
    } else if (s.materialNames[i] == "Fabric") {
      fabric = true;
      EXPECT_GT(kernel::maxComponent(m.sheenColorFactor), 0.0f);
      ASSERT_GE(m.baseColorTexture, 0);
      EXPECT_EQ(s.textures[size_t(m.baseColorTexture)].uvTransform[0], 3.0f);
    } else if (s.materialNames[i] == "ToyCar") {
      paint = true;
      EXPECT_EQ(m.clearcoatFactor, 1.0f);
      EXPECT_GE(m.clearcoatTexture, 0);
    }
  }
  EXPECT_TRUE(glass && fabric && paint);
}

TEST(LoadScene, AlphaBlendModeTest) {
  REQUIRE_SHARED("scenes/khronos-gltf/AlphaBlendModeTest/glTF/AlphaBlendModeTest.gltf");
  Scene s = loadOk(shared("scenes/khronos-gltf/AlphaBlendModeTest/glTF/AlphaBlendModeTest.gltf"));
  expectCounts(s, {61, 6, 4, 0, 0});
  int mask = 0, blend = 0;
  bool cutoff25 = false;
  for (const kernel::Material& m : s.materials) {
    mask += m.alphaMode == kernel::kAlphaMask;
    blend += m.alphaMode == kernel::kAlphaBlend;
    cutoff25 |= m.alphaMode == kernel::kAlphaMask && std::fabs(m.alphaCutoff - 0.25f) < 1e-6f;
  }
  EXPECT_GE(mask, 2);
  EXPECT_GE(blend, 1);
  EXPECT_TRUE(cutoff25);
}

TEST(LoadScene, LightsPunctualLamp) {
  REQUIRE_SHARED("scenes/khronos-gltf/LightsPunctualLamp/glTF/LightsPunctualLamp.gltf");
  Scene s = loadOk(shared("scenes/khronos-gltf/LightsPunctualLamp/glTF/LightsPunctualLamp.gltf"));
  EXPECT_EQ(s.triangleCount(), 6000u);
  EXPECT_EQ(s.lights.size(), 5u);
  // All five are point lights; the first is color (1, 0.632, 0.239) * intensity 15.
  for (const kernel::PunctualLight& l : s.lights) {
    EXPECT_EQ(l.type, uint32_t(kernel::kLightPoint));
    EXPECT_GT(kernel::maxComponent(l.intensity), 0.0f);
  }
  EXPECT_NEAR(s.lights[0].intensity.x, 15.0f / 683.0f, 1e-6f);  // candela -> W/sr
  EXPECT_NEAR(s.lights[0].intensity.z, 15.0f / 683.0f * 0.23909975588321689f, 1e-6f);
}

TEST(LoadScene, EmissiveStrengthTest) {
  REQUIRE_SHARED("scenes/khronos-gltf/EmissiveStrengthTest/glTF/EmissiveStrengthTest.gltf");
  Scene s =
      loadOk(shared("scenes/khronos-gltf/EmissiveStrengthTest/glTF/EmissiveStrengthTest.gltf"));
  EXPECT_EQ(s.triangleCount(), 90u);
  // Emission above 1 can only come from KHR_materials_emissive_strength.
  float strongest = 0.0f;
  for (const kernel::Material& m : s.materials)
    strongest = std::max(strongest, kernel::maxComponent(m.emission));
  EXPECT_GT(strongest, 1.5f);
}

TEST(LoadScene, Cameras) {
  REQUIRE_SHARED("scenes/khronos-gltf/Cameras/glTF/Cameras.gltf");
  Scene s = loadOk(shared("scenes/khronos-gltf/Cameras/glTF/Cameras.gltf"));
  expectCounts(s, {2, 1, 0, 2, 0});
  EXPECT_EQ(s.cameras[0].type, uint32_t(kernel::kCameraPerspective));
  EXPECT_NEAR(s.cameras[0].yfov, 0.7f, 1e-6f);
  EXPECT_EQ(s.cameras[1].type, uint32_t(kernel::kCameraOrthographic));
  EXPECT_NEAR(s.cameras[1].ymag, 1.0f, 1e-6f);
  EXPECT_NEAR(s.cameras[0].position.z, 3.0f, 1e-5f);
}

TEST(LoadScene, CornellOriginalObj) {
  REQUIRE_SHARED("scenes/cornell-box/original/cornell_box.obj");
  Scene s = loadOk(shared("scenes/cornell-box/original/cornell_box.obj"));
  EXPECT_EQ(s.triangleCount(), 36u);
  expectBounds(s, {0, 0, 0}, {556.0f, 548.8f, 559.2f}, 1e-3f);
  // `Ka 20 20 20` on the material named light becomes emission; Kd stays the base colour.
  int emissive = 0;
  for (size_t i = 0; i < s.materials.size(); ++i) {
    EXPECT_EQ(s.materials[i].doubleSided, 1u);
    EXPECT_EQ(s.materials[i].metallicFactor, 0.0f);
    if (s.materialNames[i] == "light") {
      EXPECT_EQ(s.materials[i].emission.x, 20.0f);
      ++emissive;
    } else {
      EXPECT_TRUE(kernel::isBlack(s.materials[i].emission)) << s.materialNames[i];
    }
  }
  EXPECT_EQ(emissive, 1);
}

TEST(LoadScene, CornellMcGuireObj) {
  REQUIRE_SHARED("scenes/cornell-box/mcguire/CornellBox-Original.obj");
  Scene s = loadOk(shared("scenes/cornell-box/mcguire/CornellBox-Original.obj"));
  EXPECT_EQ(s.triangleCount(), 36u);
  EXPECT_EQ(s.materials.size(), 8u);
  bool found = false;
  for (size_t i = 0; i < s.materials.size(); ++i)
    if (s.materialNames[i] == "light") {
      EXPECT_EQ(s.materials[i].emission.x, 17.0f);
      EXPECT_EQ(s.materials[i].emission.y, 12.0f);
      EXPECT_EQ(s.materials[i].emission.z, 4.0f);
      found = true;
    } else if (s.materialNames[i] == "leftWall") {
      EXPECT_NEAR(s.materials[i].baseColorFactor.x, 0.63f, 1e-6f);
      EXPECT_EQ(s.materials[i].roughnessFactor, 1.0f);  // Ks 0: diffuse
    }
  EXPECT_TRUE(found);
}

TEST(LoadScene, CornellSharedGltf) {
  REQUIRE_SHARED("scenes/cornell-box/gltf-derived/cornell_box.gltf");
  Scene s = loadOk(shared("scenes/cornell-box/gltf-derived/cornell_box.gltf"));
  expectCounts(s, {36, 4, 0, 1, 0});
  expectBounds(s, {0, 0, 0}, {0.556f, 0.5488f, 0.5592f}, 1e-5f);
  // Rotated 180 degrees about Y: looks along +Z.
  EXPECT_NEAR(s.cameras[0].forward.z, 1.0f, 1e-6f);
  EXPECT_NEAR(s.cameras[0].position.z, -0.8f, 1e-6f);
}

TEST(LoadScene, Sponza) {
  REQUIRE_SHARED("scenes/sponza-crytek-rendu/sponza.gltf");
  Scene s = loadOk(shared("scenes/sponza-crytek-rendu/sponza.gltf"));
  expectCounts(s, {262267, 25, 60, 1, 0});
  int masked = 0;
  for (const kernel::Material& m : s.materials) masked += m.alphaMode == kernel::kAlphaMask;
  EXPECT_GE(masked, 1);
}

}  // namespace
}  // namespace pl
