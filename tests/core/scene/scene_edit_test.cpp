// Scene edits: each kind changes exactly what it should in the compiled RenderData, gives the
// bytes of a scene loaded in that state where scene_edit.h promises it, and refuses unknown
// names and bad values without changing anything.

#include "core/scene/scene_edit.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "tests/core/scene/test_files.h"

namespace pl {
namespace {

using json = nlohmann::json;
using kernel::Vec3f;
using Matrix = std::array<double, 16>;

json cornellJson() {
  std::ifstream f(std::string(PEERLIGHT_SOURCE_DIR) + "/scenes/cornell_box.gltf");
  return json::parse(f);
}

// The Cornell box as a hierarchy: Room (walls and blocks; mesh "Room") with child Lamp (the
// light panel, mesh "LightPanel", lowered 1 mm) with child Bulb (a point light 10 cm below
// it); and Camera, a root.
json hierarchyJson() {
  json j = cornellJson();
  json prims = j["meshes"][0]["primitives"];
  j["meshes"] = json::array(
      {json{{"name", "Room"}, {"primitives", json::array({prims[0], prims[1], prims[2]})}},
       json{{"name", "LightPanel"}, {"primitives", json::array({prims[3]})}}});
  json camera = j["nodes"][1];
  j["nodes"] = json::array({json{{"name", "Room"}, {"mesh", 0}, {"children", json::array({1})}},
                            json{{"name", "Lamp"},
                                 {"mesh", 1},
                                 {"translation", json::array({0.0, -0.001, 0.0})},
                                 {"children", json::array({2})}},
                            json{{"name", "Bulb"},
                                 {"translation", json::array({0.0, -0.1, 0.0})},
                                 {"extensions", json{{"KHR_lights_punctual", json{{"light", 0}}}}}},
                            camera});
  j["scenes"][0]["nodes"] = json::array({0, 3});
  j["extensionsUsed"].push_back("KHR_lights_punctual");
  j["extensions"]["KHR_lights_punctual"]["lights"] =
      json::array({json{{"type", "point"}, {"intensity", 2.0}}});
  return j;
}

Scene loadJson(const json& j) {
  test::TempDir dir;
  auto s = loadScene(dir.write("scene.gltf", j.dump()));
  EXPECT_TRUE(s.ok()) << (s.ok() ? "" : s.error().message);
  return s.ok() ? std::move(*s) : Scene();
}

Scene cornell() { return loadJson(cornellJson()); }
Scene hierarchy() { return loadJson(hierarchyJson()); }

RenderData compileOk(const Scene& s, const CompileOptions& o = CompileOptions()) {
  auto rd = compile(s, o);
  EXPECT_TRUE(rd.ok()) << (rd.ok() ? "" : rd.error().message);
  return rd.ok() ? std::move(*rd) : RenderData();
}

// The names of the arrays whose bytes differ.
std::set<std::string> changed(const RenderData& a, const RenderData& b) {
  auto ha = a.arrayHashes(), hb = b.arrayHashes();
  std::set<std::string> out;
  for (uint32_t i = 0; i < kRenderDataArrayCount; ++i)
    if (!(ha[i] == hb[i])) out.insert(renderDataArrayName(RenderDataArray(i)));
  return out;
}
using Names = std::set<std::string>;

void expectError(const Status& s, const std::string& needle) {
  ASSERT_FALSE(s.ok()) << "expected an error containing '" << needle << "'";
  EXPECT_NE(s.error().message.find(needle), std::string::npos) << s.error().message;
}

size_t material(const Scene& s, const std::string& name) {
  for (size_t i = 0; i < s.materialNames.size(); ++i)
    if (s.materialNames[i] == name) return i;
  ADD_FAILURE() << "no material " << name;
  return 0;
}

std::vector<size_t> meshesOfNode(const Scene& s, const std::string& node) {
  std::vector<size_t> out;
  for (size_t i = 0; i < s.meshes.size(); ++i)
    if (s.meshes[i].node >= 0 && s.nodes[size_t(s.meshes[i].node)].name == node) out.push_back(i);
  return out;
}

const SceneNode& node(const Scene& s, const std::string& name) {
  for (const SceneNode& n : s.nodes)
    if (n.name == name) return n;
  ADD_FAILURE() << "no node " << name;
  return s.nodes.at(0);
}

// Column-major translate(t) * rotateY(angle) * scale(k).
Matrix trs(Vec3f t, double angle, Vec3f k) {
  double c = std::cos(angle), s = std::sin(angle);
  return {c * k.x, 0, -s * k.x, 0, 0, k.y, 0, 0, s * k.z, 0, c * k.z, 0, t.x, t.y, t.z, 1};
}

float maxDifference(const std::vector<Vec3f>& a, const std::vector<Vec3f>& b) {
  EXPECT_EQ(a.size(), b.size());
  float d = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i)
    d = std::fmax(d, kernel::length(a[i] - b[i]));
  return d;
}

TEST(SceneEdit, LoaderRecordsNodes) {
  Scene s = hierarchy();
  ASSERT_EQ(s.nodes.size(), 4u);
  EXPECT_EQ(s.nodes[0].name, "Room");
  EXPECT_EQ(s.nodes[0].parent, -1);
  EXPECT_EQ(s.nodes[1].name, "Lamp");
  EXPECT_EQ(s.nodes[1].parent, 0);
  EXPECT_EQ(s.nodes[2].name, "Bulb");
  EXPECT_EQ(s.nodes[2].parent, 1);
  EXPECT_EQ(s.nodes[3].name, "Camera");
  EXPECT_EQ(s.nodes[3].parent, -1);
  EXPECT_EQ(s.nodes[1].worldFromLocal.m[13], -0.001);
  EXPECT_NEAR(s.nodes[2].worldFromLocal.m[13], -0.101, 1e-15);
  EXPECT_EQ(meshesOfNode(s, "Room").size(), 3u);
  EXPECT_EQ(meshesOfNode(s, "Lamp").size(), 1u);
  ASSERT_EQ(s.lightNodes.size(), 1u);
  EXPECT_EQ(s.lightNodes[0], 2);
  ASSERT_EQ(s.cameras.size(), 1u);
  EXPECT_EQ(s.cameras[0].node, 3);
  ASSERT_EQ(s.materialEmission.size(), s.materials.size());
  const MaterialEmission& light = s.materialEmission[material(s, "light")];
  EXPECT_EQ(light.strength, 17.0);
  EXPECT_EQ(light.factor[0], 1.0);
  EXPECT_EQ(s.materialEmission[material(s, "white")].strength, 1.0);
}

// --- Materials ---------------------------------------------------------------------------

TEST(SceneEdit, MaterialEditChangesOnlyMaterials) {
  Scene s = cornell();
  RenderData before = compileOk(s);
  MaterialEdit e;
  e.material = "white";
  e.baseColorFactor = {0.25, 0.5, 0.75, 1.0};
  e.metallicFactor = 0.5;
  e.roughnessFactor = 0.25;
  e.ior = 1.33;
  e.alphaCutoff = 0.125;
  ASSERT_TRUE(applyMaterialEdit(s, e).ok());
  RenderData after = compileOk(s);
  EXPECT_EQ(changed(before, after), Names{"materials"});
  const kernel::Material& m = after.materials[material(s, "white")];
  EXPECT_EQ(m.baseColorFactor.y, 0.5f);
  EXPECT_EQ(m.metallicFactor, 0.5f);
  EXPECT_EQ(m.roughnessFactor, 0.25f);
  EXPECT_EQ(m.ior, 1.33f);
  EXPECT_EQ(m.alphaCutoff, 0.125f);
  // Untouched fields and materials keep their bytes.
  EXPECT_EQ(std::memcmp(&after.materials[material(s, "red")], &before.materials[material(s, "red")],
                        sizeof(kernel::Material)),
            0);
  EXPECT_EQ(m.emission.x, 0.0f);
  EXPECT_EQ(m.doubleSided, before.materials[material(s, "white")].doubleSided);
}

TEST(SceneEdit, MaterialEditGivesTheBytesOfALoadedFile) {
  // Values that are not exact in float, so that the conversions must match the loader's.
  Scene s = cornell();
  MaterialEdit white;
  white.material = "white";
  white.baseColorFactor = {0.123456789123, 0.3, 0.7, 0.9};
  MaterialEdit red;
  red.material = "red";
  red.metallicFactor = 0.2;
  red.roughnessFactor = 0.4;
  red.ior = 1.33;
  MaterialEdit green;
  green.material = "green";
  green.alphaCutoff = 0.3;
  green.emissiveFactor = {0.1, 0.2, 0.3};
  MaterialEdit light;
  light.material = "light";
  light.emissiveStrength = 5.3;  // the factor stays the file's
  for (const MaterialEdit& e : {white, red, green, light})
    ASSERT_TRUE(applyMaterialEdit(s, e).ok());

  json j = cornellJson();
  for (json& m : j["materials"]) {
    if (m["name"] == "white")
      m["pbrMetallicRoughness"]["baseColorFactor"] = json::array({0.123456789123, 0.3, 0.7, 0.9});
    if (m["name"] == "red") {
      m["pbrMetallicRoughness"]["metallicFactor"] = 0.2;
      m["pbrMetallicRoughness"]["roughnessFactor"] = 0.4;
      m["extensions"]["KHR_materials_ior"]["ior"] = 1.33;
    }
    if (m["name"] == "green") {
      m["alphaCutoff"] = 0.3;
      m["emissiveFactor"] = json::array({0.1, 0.2, 0.3});
    }
    if (m["name"] == "light")
      m["extensions"]["KHR_materials_emissive_strength"]["emissiveStrength"] = 5.3;
  }
  j["extensionsUsed"].push_back("KHR_materials_ior");
  Scene loaded = loadJson(j);
  EXPECT_EQ(serialize(compileOk(s)), serialize(compileOk(loaded)));
  EXPECT_EQ(s.materials[material(s, "light")].emission.x,
            float(1.0 * 5.3));  // factor 1 * the new strength
}

TEST(SceneEdit, EmissiveEditsChangeTheEmissiveTables) {
  Scene s = cornell();
  RenderData before = compileOk(s);
  const size_t light = material(s, "light"), white = material(s, "white");

  // Twice the strength: the same triangles and CDF, twice the power.
  MaterialEdit stronger;
  stronger.material = "light";
  stronger.emissiveStrength = 34.0;
  ASSERT_TRUE(applyMaterialEdit(s, stronger).ok());
  RenderData brighter = compileOk(s);
  EXPECT_EQ(changed(before, brighter), (Names{"materials", "globals"}));
  EXPECT_EQ(brighter.materials[light].emission.x, 2.0f * before.materials[light].emission.x);
  EXPECT_EQ(brighter.globals[0].emissiveTotalPower, 2.0f * before.globals[0].emissiveTotalPower);

  // A white emitter adds the white triangles to the tables.
  MaterialEdit glow;
  glow.material = "white";
  glow.emissiveFactor = {0.5, 0.5, 0.5};
  ASSERT_TRUE(applyMaterialEdit(s, glow).ok());
  RenderData glowing = compileOk(s);
  size_t whiteTriangles = 0;
  for (const kernel::Triangle& t : glowing.triangles) whiteTriangles += t.material == white;
  EXPECT_EQ(glowing.emissiveTriangles.size(), before.emissiveTriangles.size() + whiteTriangles);
  EXPECT_TRUE(changed(brighter, glowing).count("emissiveTriangles"));
  EXPECT_TRUE(changed(brighter, glowing).count("emissiveCdf"));
  EXPECT_EQ(glowing.materials[white].emission.x, 0.5f);  // strength 1

  // Strength 0 on both: no emitters left.
  for (const char* name : {"light", "white"}) {
    MaterialEdit off;
    off.material = name;
    off.emissiveStrength = 0.0;
    ASSERT_TRUE(applyMaterialEdit(s, off).ok());
  }
  RenderData dark = compileOk(s);
  EXPECT_TRUE(dark.emissiveTriangles.empty());
  EXPECT_TRUE(dark.emissiveCdf.empty());
  EXPECT_EQ(dark.globals[0].emissiveTotalPower, 0.0f);
}

TEST(SceneEdit, MaterialErrorsNameTheFieldAndChangeNothing) {
  Scene s = cornell();
  const std::vector<uint8_t> before = serialize(compileOk(s));
  MaterialEdit unknown;
  unknown.material = "chrome";
  unknown.metallicFactor = 1.0;
  Status st = applyMaterialEdit(s, unknown);
  expectError(st, "no material 'chrome'");
  expectError(st, "'white', 'red', 'green', 'light'");

  auto bad = [&](auto set, const char* field) {
    MaterialEdit e;
    e.material = "light";
    e.roughnessFactor = 0.5;  // a good field alongside: must not be applied either
    set(e);
    Status r = applyMaterialEdit(s, e);
    expectError(r, field);
    expectError(r, "material 'light'");
  };
  bad([](MaterialEdit& e) { e.baseColorFactor = {0.5, 1.5, 0.5, 1.0}; }, "baseColorFactor 1.5");
  bad([](MaterialEdit& e) { e.baseColorFactor = {0.5, 0.5, 0.5, NAN}; }, "baseColorFactor");
  bad([](MaterialEdit& e) { e.metallicFactor = -0.1; }, "metallicFactor");
  bad([](MaterialEdit& e) { e.roughnessFactor = NAN; }, "roughnessFactor");
  bad([](MaterialEdit& e) { e.emissiveFactor = {0.0, 2.0, 0.0}; }, "emissiveFactor 2");
  bad([](MaterialEdit& e) { e.emissiveStrength = -1.0; }, "emissiveStrength -1");
  bad([](MaterialEdit& e) { e.emissiveStrength = INFINITY; }, "emissiveStrength");
  bad([](MaterialEdit& e) { e.emissiveStrength = 1e300; }, "overflows");
  bad([](MaterialEdit& e) { e.ior = 0.5; }, "ior 0.5");
  bad([](MaterialEdit& e) { e.alphaCutoff = -0.25; }, "alphaCutoff -0.25");
  EXPECT_EQ(serialize(compileOk(s)), before);
}

TEST(SceneEdit, MaterialEditOfASceneBuiltInCode) {
  // No materialEmission: the emission is the factor, strength 1.
  Scene s = cornell();
  s.materialEmission.clear();
  const size_t light = material(s, "light");
  const Vec3f e = s.materials[light].emission;
  MaterialEdit twice;
  twice.material = "light";
  twice.emissiveStrength = 2.0;
  ASSERT_TRUE(applyMaterialEdit(s, twice).ok());
  EXPECT_EQ(s.materials[light].emission.y, 2.0f * e.y);
  EXPECT_EQ(s.materialEmission.size(), s.materials.size());
}

// --- Visibility --------------------------------------------------------------------------

TEST(SceneEdit, HiddenNodeGivesTheBytesOfASceneWithoutIt) {
  Scene s = hierarchy();
  const RenderData original = compileOk(s);
  VisibilityEdit hide;
  hide.node = "Lamp";
  hide.visible = false;
  ASSERT_TRUE(applyVisibilityEdit(s, hide).ok());
  RenderData hidden = compileOk(s);
  // The lamp's panel and its child's light are gone.
  EXPECT_TRUE(hidden.emissiveTriangles.empty());
  EXPECT_TRUE(hidden.lights.empty());
  size_t roomTriangles = 0;
  for (size_t i : meshesOfNode(s, "Room")) roomTriangles += s.meshes[i].indices.size() / 3;
  EXPECT_EQ(hidden.triangles.size(), roomTriangles);

  json j = hierarchyJson();
  j["nodes"][0].erase("children");
  EXPECT_EQ(serialize(hidden), serialize(compileOk(loadJson(j))));

  // Shown again: the same bytes, but for the lamp's mesh now being dynamic.
  hide.visible = true;
  ASSERT_TRUE(applyVisibilityEdit(s, hide).ok());
  RenderData shown = compileOk(s);
  EXPECT_EQ(changed(shown, original), Names{"meshes"});
  ASSERT_EQ(shown.meshes.size(), original.meshes.size());
  EXPECT_EQ(shown.meshes.back().flags, uint32_t(kernel::kMeshDynamic));
}

TEST(SceneEdit, HiddenParentHidesDescendants) {
  Scene s = hierarchy();
  VisibilityEdit hide;
  hide.node = "Room";
  hide.visible = false;
  ASSERT_TRUE(applyVisibilityEdit(s, hide).ok());
  for (const Mesh& m : s.meshes) EXPECT_FALSE(s.shown(m)) << m.name;
  EXPECT_FALSE(s.lightShown(0));
  EXPECT_GT(s.boundsMin.x, s.boundsMax.x);  // nothing shown: empty bounds
  // The lamp's own flag is untouched.
  EXPECT_TRUE(node(s, "Lamp").visible);
}

TEST(SceneEdit, HiddenMeshGivesTheBytesOfASceneWithoutIt) {
  Scene s = hierarchy();
  RenderData before = compileOk(s);
  VisibilityEdit hide;
  hide.mesh = "LightPanel";
  hide.visible = false;
  ASSERT_TRUE(applyVisibilityEdit(s, hide).ok());
  RenderData hidden = compileOk(s);
  EXPECT_EQ(hidden.lights.size(), 1u);  // the bulb is not a mesh
  EXPECT_TRUE(hidden.emissiveTriangles.empty());
  EXPECT_LT(hidden.triangles.size(), before.triangles.size());

  Scene without = hierarchy();
  for (size_t i = without.meshes.size(); i-- > 0;)
    if (without.meshes[i].name == "LightPanel") without.meshes.erase(without.meshes.begin() + i);
  without.computeBounds();
  EXPECT_EQ(serialize(hidden), serialize(compileOk(without)));
}

TEST(SceneEdit, VisibilityErrors) {
  Scene s = hierarchy();
  VisibilityEdit e;
  e.node = "Chair";
  Status st = applyVisibilityEdit(s, e);
  expectError(st, "no node 'Chair'");
  expectError(st, "'Room', 'Lamp', 'Bulb', 'Camera'");
  e = VisibilityEdit();
  e.mesh = "Chair";
  st = applyVisibilityEdit(s, e);
  expectError(st, "no mesh 'Chair'");
  expectError(st, "'Room', 'LightPanel'");
  expectError(applyVisibilityEdit(s, VisibilityEdit()), "exactly one of node and mesh");
  e.node = "Room";
  expectError(applyVisibilityEdit(s, e), "exactly one of node and mesh (got both)");
}

// --- Transforms --------------------------------------------------------------------------

TEST(SceneEdit, TransformMovesTheNodeAndItsDescendants) {
  Scene s = hierarchy();
  Scene original = s;
  RenderData before = compileOk(s);
  const Vec3f shift{1.0f, -0.05f, 0.02f};
  NodeTransformEdit e;
  e.node = "Lamp";
  e.worldFromLocal = trs({0.0f + shift.x, -0.001f + shift.y, shift.z}, 0.0, {1, 1, 1});
  ASSERT_TRUE(applyNodeTransformEdit(s, e).ok());
  EXPECT_EQ(node(s, "Lamp").worldFromLocal.m, e.worldFromLocal);

  // The lamp's vertices and its child's light moved; the room's did not.
  const size_t lamp = meshesOfNode(s, "Lamp")[0];
  std::vector<Vec3f> expected = original.meshes[lamp].positions;
  for (Vec3f& p : expected) p = p + shift;
  EXPECT_LT(maxDifference(s.meshes[lamp].positions, expected), 1e-6f);
  for (size_t i : meshesOfNode(s, "Room"))
    EXPECT_EQ(maxDifference(s.meshes[i].positions, original.meshes[i].positions), 0.0f);
  EXPECT_LT(kernel::length(s.lights[0].position - (original.lights[0].position + shift)), 1e-6f);
  EXPECT_NEAR(node(s, "Bulb").worldFromLocal.m[12], 1.0, 1e-12);

  // The bounds follow: the panel now sticks out of the room by 1 m in +x.
  float panelMaxX = -1e30f;
  for (Vec3f p : s.meshes[lamp].positions) panelMaxX = std::fmax(panelMaxX, p.x);
  RenderData after = compileOk(s);
  EXPECT_EQ(after.globals[0].boundsMax.x, panelMaxX);
  EXPECT_GT(after.globals[0].boundsMax.x, before.globals[0].boundsMax.x + 0.5f);
  const Names moved = changed(before, after);
  EXPECT_TRUE(moved.count("positions"));
  EXPECT_TRUE(moved.count("lights"));
  EXPECT_TRUE(moved.count("globals"));
  EXPECT_FALSE(moved.count("triangles"));
  EXPECT_FALSE(moved.count("materials"));
  EXPECT_FALSE(moved.count("camera"));

  // Within float rounding of loading a file with that transform.
  json j = hierarchyJson();
  j["nodes"][1]["translation"] = json::array({shift.x, -0.001 + shift.y, shift.z});
  RenderData loaded = compileOk(loadJson(j));
  EXPECT_LT(maxDifference(after.positions, loaded.positions), 1e-6f);
  EXPECT_LT(maxDifference(after.normals, loaded.normals), 1e-6f);
  EXPECT_LT(kernel::length(after.lights[0].position - loaded.lights[0].position), 1e-6f);
  EXPECT_EQ(changed(after, loaded).count("triangles"), 0u);
}

// compile() lists each shown mesh's triangles and vertices; what an edit moved, hid or showed
// is dynamic from then on (a device's BVH then rebuilds only it when it moves again).
TEST(SceneEdit, MovedHiddenAndShownMeshesBecomeDynamic) {
  Scene s = hierarchy();
  RenderData before = compileOk(s);
  ASSERT_EQ(before.meshes.size(), 4u);  // Room's three primitives, LightPanel
  uint32_t triangles = 0, vertices = 0;
  for (const kernel::MeshRange& m : before.meshes) {
    EXPECT_EQ(m.firstTriangle, triangles);
    EXPECT_EQ(m.firstVertex, vertices);
    EXPECT_EQ(m.flags, 0u);
    triangles += m.triangleCount;
    vertices += m.vertexCount;
  }
  EXPECT_EQ(triangles, before.triangles.size());
  EXPECT_EQ(vertices, before.positions.size());

  // Moving Lamp moves LightPanel (mesh 3) only.
  NodeTransformEdit move;
  move.node = "Lamp";
  move.worldFromLocal = trs({0.1f, -0.001f, 0}, 0.0, {1, 1, 1});
  ASSERT_TRUE(applyNodeTransformEdit(s, move).ok());
  RenderData moved = compileOk(s);
  EXPECT_TRUE(moved.validate().ok());
  ASSERT_EQ(moved.meshes.size(), 4u);
  EXPECT_EQ(moved.meshes[3].flags, uint32_t(kernel::kMeshDynamic));
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(moved.meshes[i].flags, 0u) << i;

  // Showing what is shown changes nothing.
  VisibilityEdit hide;
  hide.node = "Room";
  hide.visible = true;
  ASSERT_TRUE(applyVisibilityEdit(s, hide).ok());
  EXPECT_EQ(serialize(compileOk(s)), serialize(moved));

  // Hiding Room (and so Lamp below it): nothing is compiled; shown again, all four dynamic.
  hide.visible = false;
  ASSERT_TRUE(applyVisibilityEdit(s, hide).ok());
  EXPECT_TRUE(compileOk(s).meshes.empty());
  hide.visible = true;
  ASSERT_TRUE(applyVisibilityEdit(s, hide).ok());
  RenderData shown = compileOk(s);
  ASSERT_EQ(shown.meshes.size(), 4u);
  for (const kernel::MeshRange& m : shown.meshes) EXPECT_EQ(m.flags, uint32_t(kernel::kMeshDynamic));

  // A mesh hidden by name leaves the list; the others keep their ranges in order.
  Scene t = hierarchy();
  VisibilityEdit panel;
  panel.mesh = "LightPanel";
  panel.visible = false;
  ASSERT_TRUE(applyVisibilityEdit(t, panel).ok());
  RenderData hidden = compileOk(t);
  EXPECT_TRUE(hidden.validate().ok());
  ASSERT_EQ(hidden.meshes.size(), 3u);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(hidden.meshes[i].flags, 0u) << i;
  EXPECT_TRUE(t.meshes[meshesOfNode(t, "Lamp")[0]].dynamic);
}

TEST(SceneEdit, TransformThenInverseRestores) {
  Scene s = hierarchy();
  const Scene original = s;
  const Matrix old = node(s, "Room").worldFromLocal.m;
  // Rotate, scale non-uniformly and mirror (negative x scale), then go back.
  for (Vec3f scale : {Vec3f{2.0f, 0.5f, 1.5f}, Vec3f{-1.0f, 1.0f, 2.0f}}) {
    NodeTransformEdit e;
    e.node = "Room";
    e.worldFromLocal = trs({0.3f, -2.0f, 5.0f}, 0.7, scale);
    ASSERT_TRUE(applyNodeTransformEdit(s, e).ok());
    // Normals stay unit and face the same side of each triangle as before.
    for (size_t mi = 0; mi < s.meshes.size(); ++mi) {
      const Mesh& m = s.meshes[mi];
      const Mesh& o = original.meshes[mi];
      for (Vec3f n : m.normals) EXPECT_NEAR(kernel::length(n), 1.0f, 1e-5f);
      for (size_t t = 0; t + 2 < m.indices.size(); t += 3) {
        auto side = [](const Mesh& mesh, size_t t) {
          const auto& p = mesh.positions;
          const auto& i = mesh.indices;
          Vec3f g = kernel::cross(p[i[t + 1]] - p[i[t]], p[i[t + 2]] - p[i[t]]);
          return kernel::dot(g, mesh.normals[i[t]]) > 0.0f;
        };
        EXPECT_EQ(side(m, t), side(o, t)) << m.name << " triangle " << t / 3;
      }
      for (size_t v = 0; v < m.tangents.size(); ++v)
        EXPECT_NEAR(kernel::dot(kernel::xyz(m.tangents[v]), m.normals[v]), 0.0f, 1e-5f);
    }
    NodeTransformEdit back;
    back.node = "Room";
    back.worldFromLocal = old;
    ASSERT_TRUE(applyNodeTransformEdit(s, back).ok());
    for (size_t mi = 0; mi < s.meshes.size(); ++mi) {
      const Mesh& m = s.meshes[mi];
      const Mesh& o = original.meshes[mi];
      EXPECT_EQ(m.indices, o.indices);
      EXPECT_LT(maxDifference(m.positions, o.positions), 1e-5f);
      EXPECT_LT(maxDifference(m.normals, o.normals), 1e-5f);
      for (size_t v = 0; v < m.tangents.size(); ++v) {
        EXPECT_LT(kernel::length(kernel::xyz(m.tangents[v]) - kernel::xyz(o.tangents[v])), 1e-5f);
        EXPECT_EQ(m.tangents[v].w, o.tangents[v].w);
      }
    }
    EXPECT_LT(kernel::length(s.lights[0].position - original.lights[0].position), 1e-5f);
    EXPECT_EQ(node(s, "Room").worldFromLocal.m, old);
  }
}

TEST(SceneEdit, CurrentMatrixChangesNothing) {
  Scene s = hierarchy();
  const std::vector<uint8_t> before = serialize(compileOk(s));
  for (const char* name : {"Room", "Lamp", "Bulb", "Camera"}) {
    NodeTransformEdit e;
    e.node = name;
    e.worldFromLocal = node(s, name).worldFromLocal.m;
    ASSERT_TRUE(applyNodeTransformEdit(s, e).ok()) << name;
  }
  EXPECT_EQ(serialize(compileOk(s)), before);
}

TEST(SceneEdit, TransformMovesTheCamera) {
  Scene s = hierarchy();
  NodeTransformEdit e;
  e.node = "Camera";
  e.worldFromLocal = trs({1, 2, 3}, std::acos(-1.0) / 2, {1, 1, 1});  // 90 degrees about +Y
  ASSERT_TRUE(applyNodeTransformEdit(s, e).ok());
  RenderData rd = compileOk(s);
  const kernel::Camera& c = rd.camera[0];
  EXPECT_NEAR(c.position.x, 1.0f, 1e-6f);
  EXPECT_NEAR(c.position.z, 3.0f, 1e-6f);
  EXPECT_NEAR(c.forward.x, -1.0f, 1e-6f);  // -Z turned to -X
  EXPECT_NEAR(c.up.y, 1.0f, 1e-6f);

  json j = hierarchyJson();
  j["nodes"][3].erase("translation");
  j["nodes"][3]["matrix"] = e.worldFromLocal;
  const kernel::Camera loaded = compileOk(loadJson(j)).camera[0];
  for (Vec3f d : {c.position - loaded.position, c.forward - loaded.forward, c.up - loaded.up,
                  c.right - loaded.right})
    EXPECT_LT(kernel::length(d), 1e-6f);
}

TEST(SceneEdit, TransformErrorsChangeNothing) {
  Scene s = hierarchy();
  const std::vector<uint8_t> before = serialize(compileOk(s));
  NodeTransformEdit e;
  e.node = "Table";
  e.worldFromLocal = trs({0, 0, 0}, 0, {1, 1, 1});
  Status st = applyNodeTransformEdit(s, e);
  expectError(st, "no node 'Table'");
  expectError(st, "'Room'");

  e.node = "Lamp";
  e.worldFromLocal[13] = NAN;
  expectError(applyNodeTransformEdit(s, e), "element 13 (column 3, row 1) is not finite");
  e.worldFromLocal = trs({0, 0, 0}, 0, {1, 1, 1});
  e.worldFromLocal[3] = 1.0;
  expectError(applyNodeTransformEdit(s, e), "last row");
  e.worldFromLocal = trs({0, 0, 0}, 0, {1, 0, 1});
  expectError(applyNodeTransformEdit(s, e), "singular");
  e.worldFromLocal = trs({3e38f, 0, 0}, 0, {1e30f, 1, 1});
  expectError(applyNodeTransformEdit(s, e), "out of float range");
  EXPECT_EQ(serialize(compileOk(s)), before);

  json j = hierarchyJson();
  j["nodes"][2]["name"] = "Lamp";
  Scene twice = loadJson(j);
  e.worldFromLocal = trs({0, 0, 0}, 0, {1, 1, 1});
  expectError(applyNodeTransformEdit(twice, e), "names 2 node instances");
}

TEST(SceneEdit, ObjObjectsAreNodes) {
  test::TempDir dir;
  std::string path = dir.write("two.obj",
                               "v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\n"
                               "o A\nf 1 2 3 4\n"
                               "o B\nf 1 2 3\n");
  auto loaded = loadScene(path);
  ASSERT_TRUE(loaded.ok()) << loaded.error().message;
  Scene s = std::move(*loaded);
  ASSERT_EQ(s.nodes.size(), 2u);
  EXPECT_EQ(s.nodes[0].name, "A");
  EXPECT_EQ(s.nodes[1].worldFromLocal, Mat4::identity());
  VisibilityEdit hide;
  hide.node = "A";
  hide.visible = false;
  ASSERT_TRUE(applyVisibilityEdit(s, hide).ok());
  EXPECT_EQ(compileOk(s).triangles.size(), 1u);
  NodeTransformEdit move;
  move.node = "B";
  move.worldFromLocal = trs({0, 0, 2}, 0, {1, 1, 1});
  ASSERT_TRUE(applyNodeTransformEdit(s, move).ok());
  RenderData rd = compileOk(s);
  EXPECT_EQ(rd.globals[0].boundsMin.z, 2.0f);
  EXPECT_EQ(rd.globals[0].boundsMax.z, 2.0f);
}

// --- Environment and camera --------------------------------------------------------------

TEST(SceneEdit, Environment) {
  Scene s = cornell();
  CompileOptions o;
  o.envFile = "/nonexistent/old.hdr";
  EnvironmentEdit colour;
  colour.color = Vec3f{0.1f, 0.2f, 0.3f};
  ASSERT_TRUE(applyEnvironmentEdit(o, colour).ok());
  EXPECT_TRUE(o.envFile.empty());
  RenderData rd = compileOk(s, o);
  EXPECT_EQ(rd.globals[0].envScale.y, 0.2f);
  EXPECT_EQ(rd.globals[0].envWidth, 0u);

  const CompileOptions kept = o;
  EnvironmentEdit missing;
  missing.mapPath = "/nonexistent/sky.hdr";
  expectError(applyEnvironmentEdit(o, missing), "environment map '/nonexistent/sky.hdr'");
  EnvironmentEdit negative;
  negative.color = Vec3f{0.1f, -1.0f, 0.0f};
  expectError(applyEnvironmentEdit(o, negative), "environment color (0.100000001, -1, 0)");
  EXPECT_EQ(o.envColor->y, kept.envColor->y);

  test::TempDir dir;
  EnvironmentEdit map;
  map.mapPath = dir.write("sky.hdr", std::string("not checked until compile"));
  ASSERT_TRUE(applyEnvironmentEdit(o, map).ok());
  EXPECT_EQ(o.envFile, map.mapPath);
  EXPECT_FALSE(o.envColor.has_value());
}

TEST(SceneEdit, Camera) {
  Scene s = hierarchy();
  CompileOptions o;
  o.width = 300;
  o.height = 200;
  CameraEdit look;
  look.lookAt = LookAt{{0.5f, 0.3f, 1.0f}, {0.2f, 0.2f, 0.2f}, {0, 1, 0}, 50.0f};
  ASSERT_TRUE(applyCameraEdit(s, o, look).ok());
  ASSERT_TRUE(o.lookAt.has_value());
  auto cam = compileCamera(s, o);
  ASSERT_TRUE(cam.ok());
  RenderData rd = compileOk(s, o);
  EXPECT_EQ(std::memcmp(&*cam, &rd.camera[0], sizeof(kernel::Camera)), 0);

  const CompileOptions kept = o;
  CameraEdit unknown;
  unknown.camera = "Drone";
  expectError(applyCameraEdit(s, o, unknown), "no camera 'Drone'");
  CameraEdit bad;
  bad.lookAt = LookAt{{1, 1, 1}, {1, 1, 1}};
  expectError(applyCameraEdit(s, o, bad), "eye and target");
  EXPECT_EQ(o.lookAt->yfovDegrees, kept.lookAt->yfovDegrees);
  EXPECT_TRUE(o.camera.empty());

  CameraEdit scene;
  scene.camera = "Camera";
  ASSERT_TRUE(applyCameraEdit(s, o, scene).ok());
  EXPECT_FALSE(o.lookAt.has_value());
  EXPECT_EQ(o.camera, "Camera");
}

TEST(SceneEdit, ApplyEditDispatches) {
  MaterialEdit m;
  m.material = "white";
  m.roughnessFactor = 0.3;
  NodeTransformEdit t;
  t.node = "Lamp";
  t.worldFromLocal = trs({0.1f, 0, 0}, 0.2, {1, 1, 1});
  VisibilityEdit v;
  v.node = "Bulb";
  v.visible = false;
  EnvironmentEdit env;
  env.color = Vec3f{0.5f, 0.5f, 0.5f};
  CameraEdit cam;
  cam.lookAt = LookAt{{0, 0.3f, 1}, {0, 0.3f, 0}};
  const std::vector<SceneEdit> edits = {m, t, v, env, cam};

  Scene a = hierarchy(), b = hierarchy();
  CompileOptions oa, ob;
  for (const SceneEdit& e : edits) ASSERT_TRUE(applyEdit(a, oa, e).ok());
  ASSERT_TRUE(applyMaterialEdit(b, m).ok());
  ASSERT_TRUE(applyNodeTransformEdit(b, t).ok());
  ASSERT_TRUE(applyVisibilityEdit(b, v).ok());
  ASSERT_TRUE(applyEnvironmentEdit(ob, env).ok());
  ASSERT_TRUE(applyCameraEdit(b, ob, cam).ok());
  RenderData ra = compileOk(a, oa);
  EXPECT_EQ(serialize(ra), serialize(compileOk(b, ob)));
  EXPECT_TRUE(ra.lights.empty());
  EXPECT_EQ(ra.globals[0].envScale.x, 0.5f);
  MaterialEdit unknown;
  unknown.material = "nope";
  expectError(applyEdit(a, oa, unknown), "no material 'nope'");
}

}  // namespace
}  // namespace pl
