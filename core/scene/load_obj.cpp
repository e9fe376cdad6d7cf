// Wavefront OBJ + MTL loader on top of tinyobjloader, mapped onto the glTF material model.
//
// Material mapping (documented in load.h): Kd -> baseColorFactor, map_Kd -> base colour
// texture, d -> alpha (BLEND when < 1), Ke -> emission; when Ke is black and the material's
// name contains "light", Ka is taken as emission instead (the original Cornell box file
// writes its light as `Ka 20 20 20`). metallic 0; roughness 1 when Ks is black (a diffuse
// material), else sqrt(2 / (Ns + 2)). All OBJ materials are double-sided. Faces are
// fan-triangulated; OBJ texture coordinates (v up) are flipped to glTF's (v down).

#include <tiny_obj_loader.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <map>
#include <tuple>
#include <unordered_map>

#include "core/scene/load.h"
#include "core/scene/load_internal.h"

namespace pl::detail {
namespace {

using kernel::Vec2f;
using kernel::Vec3f;

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return char(std::tolower(c)); });
  return s;
}

std::string joinLines(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  for (char& c : s)
    if (c == '\n') c = ';';
  return s;
}

kernel::Material objDefaultMaterial() {
  kernel::Material m = defaultMaterial();
  m.baseColorFactor = {0.8f, 0.8f, 0.8f, 1.0f};
  m.metallicFactor = 0.0f;
  m.doubleSided = 1;
  return m;
}

struct Key {
  int v, n, t;
  bool operator==(const Key& o) const { return v == o.v && n == o.n && t == o.t; }
};
struct KeyHash {
  size_t operator()(const Key& k) const {
    uint64_t h = uint64_t(uint32_t(k.v)) * 0x9E3779B97F4A7C15ull;
    h ^= uint64_t(uint32_t(k.n)) * 0xC2B2AE3D27D4EB4Full + (h << 6) + (h >> 2);
    h ^= uint64_t(uint32_t(k.t)) * 0x165667B19E3779F9ull + (h << 6) + (h >> 2);
    return size_t(h);
  }
};

}  // namespace

Result<Scene> loadObj(const std::string& path) {
  // Read once ourselves: clear errors for missing and empty files, and a size bound.
  auto bytes = readFile(path, kMaxSceneFileBytes);
  if (!bytes.ok()) return bytes.error();
  if (bytes->empty()) return Error{path + ": empty file"};
  bytes = std::vector<uint8_t>();

  tinyobj::ObjReaderConfig config;
  config.triangulate = false;
  config.vertex_color = false;
  tinyobj::ObjReader reader;
  if (!reader.ParseFromFile(path, config))
    return Error{
        path + ": " +
        (reader.Error().empty() ? std::string("cannot parse OBJ") : joinLines(reader.Error()))};
  const tinyobj::attrib_t& attrib = reader.GetAttrib();
  const std::vector<tinyobj::shape_t>& shapes = reader.GetShapes();
  const std::vector<tinyobj::material_t>& objMaterials = reader.GetMaterials();

  Scene scene;
  scene.path = path;
  if (!reader.Warning().empty()) scene.warnings.push_back(joinLines(reader.Warning()));

  // Materials.
  std::map<std::string, int32_t> textureCache;
  uint64_t texelBudget = kMaxSceneTexels;
  auto loadTexture = [&](const std::string& name, const std::string& material) -> Result<int32_t> {
    auto found = textureCache.find(name);
    if (found != textureCache.end()) return found->second;
    std::string file = directoryOf(path) + name;
    std::error_code ec;
    if (!std::filesystem::exists(file, ec)) {
      // A missing map: a magenta placeholder that shows where it is used, and a warning.
      scene.warnings.push_back("material '" + material + "' texture '" + name +
                               "' is missing: it shows magenta");
      SceneTexture placeholder;
      placeholder.name = name;
      placeholder.width = placeholder.height = 1;
      placeholder.setTexels({kernel::Rgba8{255, 0, 255, 255}});
      textureCache[name] = int32_t(scene.textures.size());
      scene.textures.push_back(std::move(placeholder));
      return textureCache[name];
    }
    auto data = readFile(file, kMaxSceneFileBytes);
    if (!data.ok())
      return Error{path + ": material '" + material + "' texture '" + name +
                   "': " + data.error().message};
    auto image = decodeImage(data->data(), data->size(), &texelBudget);
    if (!image.ok())
      return Error{path + ": material '" + material + "' texture '" + name +
                   "': " + image.error().message};
    image->name = name;
    int32_t index = int32_t(scene.textures.size());
    scene.textures.push_back(std::move(*image));
    textureCache[name] = index;
    return index;
  };
  for (const tinyobj::material_t& om : objMaterials) {
    kernel::Material m = objDefaultMaterial();
    m.baseColorFactor = {float(om.diffuse[0]), float(om.diffuse[1]), float(om.diffuse[2]),
                         float(om.dissolve)};
    if (om.dissolve < 1.0) m.alphaMode = kernel::kAlphaBlend;
    m.emission = {float(om.emission[0]), float(om.emission[1]), float(om.emission[2])};
    if (kernel::isBlack(m.emission) && lower(om.name).find("light") != std::string::npos)
      m.emission = {float(om.ambient[0]), float(om.ambient[1]), float(om.ambient[2])};
    Vec3f ks{float(om.specular[0]), float(om.specular[1]), float(om.specular[2])};
    m.roughnessFactor =
        kernel::isBlack(ks) ? 1.0f : std::sqrt(2.0f / (std::max(float(om.shininess), 0.0f) + 2.0f));
    bool finiteValues = std::isfinite(m.baseColorFactor.x) && std::isfinite(m.baseColorFactor.y) &&
                        std::isfinite(m.baseColorFactor.z) && std::isfinite(m.baseColorFactor.w) &&
                        std::isfinite(m.emission.x) && std::isfinite(m.emission.y) &&
                        std::isfinite(m.emission.z) && std::isfinite(m.roughnessFactor);
    if (!finiteValues) return Error{path + ": material '" + om.name + "' has non-finite values"};
    if (!om.diffuse_texname.empty()) {
      auto t = loadTexture(om.diffuse_texname, om.name);
      if (!t.ok()) return t.error();
      m.baseColorTexture = *t;
    }
    scene.materials.push_back(m);
    scene.materialNames.push_back(om.name);
    scene.materialEmission.push_back(
        MaterialEmission{{double(m.emission.x), double(m.emission.y), double(m.emission.z)}, 1.0});
  }
  int32_t defaultIndex = -1;

  const uint64_t nv = attrib.vertices.size() / 3, nn = attrib.normals.size() / 3,
                 nt = attrib.texcoords.size() / 2;
  for (size_t i = 0; i < attrib.vertices.size(); ++i)
    if (!std::isfinite(attrib.vertices[i]))
      return Error{path + ": vertex " + std::to_string(i / 3 + 1) + " is not finite"};

  uint64_t triangles = 0, vertices = 0;
  for (const tinyobj::shape_t& shape : shapes) {
    const tinyobj::mesh_t& sm = shape.mesh;
    // Each object is a root node (identity matrix), so that scene edits can move or hide it.
    const int32_t entry = int32_t(scene.nodes.size());
    scene.nodes.push_back(SceneNode{shape.name, -1, Mat4::identity(), true});
    // One Mesh per material used by the shape.
    std::map<int32_t, Mesh> byMaterial;
    std::map<int32_t, std::unordered_map<Key, uint32_t, KeyHash>> vertexMaps;
    std::map<int32_t, std::vector<bool>> hasNormal;
    size_t offset = 0;
    for (size_t f = 0; f < sm.num_face_vertices.size(); ++f) {
      const size_t count = sm.num_face_vertices[f];
      if (offset + count > sm.indices.size())
        return Error{path + ": shape '" + shape.name + "' face " + std::to_string(f + 1) +
                     " is truncated"};
      if (count < 3) {
        offset += count;
        continue;
      }
      int materialId = f < sm.material_ids.size() ? sm.material_ids[f] : -1;
      int32_t material;
      if (materialId >= 0 && size_t(materialId) < scene.materials.size()) {
        material = materialId;
      } else {
        if (defaultIndex < 0) {
          defaultIndex = int32_t(scene.materials.size());
          scene.materials.push_back(objDefaultMaterial());
          scene.materialNames.push_back("default");
          scene.materialEmission.push_back(MaterialEmission());
        }
        material = defaultIndex;
      }
      Mesh& mesh = byMaterial[material];
      auto& vertexMap = vertexMaps[material];
      auto& withNormal = hasNormal[material];
      mesh.material = uint32_t(material);
      mesh.name = shape.name;
      mesh.node = entry;
      uint32_t corner[256];
      for (size_t k = 0; k < count; ++k) {
        const tinyobj::index_t& idx = sm.indices[offset + k];
        auto bad = [&](const char* what, int value, uint64_t n) {
          return Error{path + ": shape '" + shape.name + "' face " + std::to_string(f + 1) +
                       " refers to " + what + " " + std::to_string(value + 1) + " of " +
                       std::to_string(n)};
        };
        if (idx.vertex_index < 0 || uint64_t(idx.vertex_index) >= nv)
          return bad("vertex", idx.vertex_index, nv);
        if (idx.normal_index < -1 || (idx.normal_index >= 0 && uint64_t(idx.normal_index) >= nn))
          return bad("normal", idx.normal_index, nn);
        if (idx.texcoord_index < -1 ||
            (idx.texcoord_index >= 0 && uint64_t(idx.texcoord_index) >= nt))
          return bad("texture coordinate", idx.texcoord_index, nt);
        Key key{idx.vertex_index, idx.normal_index, idx.texcoord_index};
        auto [it, inserted] = vertexMap.emplace(key, uint32_t(mesh.positions.size()));
        if (inserted) {
          const size_t v = size_t(idx.vertex_index) * 3;
          mesh.positions.push_back({float(attrib.vertices[v]), float(attrib.vertices[v + 1]),
                                    float(attrib.vertices[v + 2])});
          Vec3f n{0, 0, 0};
          if (idx.normal_index >= 0) {
            const size_t i = size_t(idx.normal_index) * 3;
            n = {float(attrib.normals[i]), float(attrib.normals[i + 1]),
                 float(attrib.normals[i + 2])};
          }
          mesh.normals.push_back(n);
          withNormal.push_back(idx.normal_index >= 0);
          Vec2f uv{0, 0};
          if (idx.texcoord_index >= 0) {
            const size_t i = size_t(idx.texcoord_index) * 2;
            uv = {float(attrib.texcoords[i]), 1.0f - float(attrib.texcoords[i + 1])};
          }
          mesh.uvs.push_back(uv);
        }
        corner[k] = it->second;
      }
      triangles += count - 2;
      if (triangles > kMaxSceneTriangles)
        return Error{path + ": more than " + std::to_string(kMaxSceneTriangles) + " triangles"};
      for (size_t k = 1; k + 1 < count; ++k) {
        mesh.indices.push_back(corner[0]);
        mesh.indices.push_back(corner[k]);
        mesh.indices.push_back(corner[k + 1]);
      }
      offset += count;
    }
    for (auto& [material, mesh] : byMaterial) {
      vertices += mesh.positions.size();
      if (vertices > kMaxSceneVertices)
        return Error{path + ": more than " + std::to_string(kMaxSceneVertices) + " vertices"};
      std::vector<Vec3f> fileNormals = std::move(mesh.normals);
      generateNormals(mesh);
      const std::vector<bool>& withNormal = hasNormal[material];
      for (size_t i = 0; i < fileNormals.size(); ++i) {
        float len = kernel::length(fileNormals[i]);
        if (withNormal[i] && len > 0.0f && std::isfinite(len))
          mesh.normals[i] = fileNormals[i] / len;
      }
      generateTangents(mesh);
      scene.meshes.push_back(std::move(mesh));
    }
  }
  scene.computeBounds();
  return scene;
}

}  // namespace pl::detail
