// glTF 2.0 loader (.gltf and .glb) on top of tinygltf. tinygltf parses the JSON and loads
// buffers and images; every index, range and count it leaves unchecked is checked here before
// use, and the file's bytes are pre-checked (GLB framing, JSON syntax and nesting, buffer
// files) so that tinygltf only sees well-formed input.

#include <sys/stat.h>
#include <tiny_gltf.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <set>
#include <nlohmann/json.hpp>

#include "core/scene/load.h"
#include "core/scene/load_internal.h"
#include "core/scene/mat4.h"

namespace pl::detail {
namespace {

using kernel::Vec2f;
using kernel::Vec3f;
using kernel::Vec4f;

constexpr uint32_t kMaxJsonDepth = 256;
constexpr uint64_t kMaxNodeVisits = 1u << 20;
constexpr uint32_t kMaxNodeDepth = 1024;
constexpr uint64_t kMaxZeroAccessorCount = uint64_t(1) << 24;

bool finite(Vec3f v) { return std::isfinite(v.x) && std::isfinite(v.y) && std::isfinite(v.z); }

std::string joinLines(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  for (char& c : s)
    if (c == '\n') c = ';';
  return s;
}

uint32_t read32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// GLB framing: header, JSON chunk, optional BIN chunk, all within the file.
Status checkGlb(const std::string& path, const std::vector<uint8_t>& b) {
  if (b.size() < 12)
    return Error{path + ": truncated .glb (" + std::to_string(b.size()) +
                 " bytes, shorter than the 12-byte header)"};
  if (std::memcmp(b.data(), "glTF", 4) != 0) return Error{path + ": not a .glb file (bad magic)"};
  uint32_t version = read32(b.data() + 4), length = read32(b.data() + 8);
  if (version != 2)
    return Error{path + ": .glb version " + std::to_string(version) + " (only 2 is supported)"};
  if (length > b.size())
    return Error{path + ": truncated .glb (header says " + std::to_string(length) +
                 " bytes, the file has " + std::to_string(b.size()) + ")"};
  if (length < 20) return Error{path + ": truncated .glb (no JSON chunk)"};
  uint64_t pos = 12;
  for (int chunk = 0; pos < length; ++chunk) {
    if (length - pos < 8)
      return Error{path + ": truncated .glb (chunk " + std::to_string(chunk) + " header)"};
    uint32_t chunkLength = read32(b.data() + pos), type = read32(b.data() + pos + 4);
    if (chunk == 0 && type != 0x4E4F534Au)
      return Error{path + ": .glb does not start with a JSON chunk"};
    if (uint64_t(chunkLength) > length - pos - 8)
      return Error{path + ": truncated .glb (chunk " + std::to_string(chunk) + " declares " +
                   std::to_string(chunkLength) + " bytes, only " +
                   std::to_string(length - pos - 8) + " remain)"};
    pos += 8 + uint64_t(chunkLength);
  }
  return Status();
}

// JSON syntax and nesting depth, before tinygltf sees it (deep nesting would exhaust the
// stack in recursive code).
Status checkJson(const std::string& path, const char* text, size_t size, nlohmann::json* parsed) {
  if (size == 0) return Error{path + ": empty JSON"};
  uint32_t depth = 0;
  bool inString = false;
  for (size_t i = 0; i < size; ++i) {
    char c = text[i];
    if (inString) {
      if (c == '\\')
        ++i;
      else if (c == '"')
        inString = false;
    } else if (c == '"') {
      inString = true;
    } else if (c == '{' || c == '[') {
      if (++depth > kMaxJsonDepth)
        return Error{path + ": JSON nested deeper than " + std::to_string(kMaxJsonDepth)};
    } else if ((c == '}' || c == ']') && depth > 0) {
      --depth;
    }
  }
  try {
    *parsed = nlohmann::json::parse(text, text + size);
  } catch (const nlohmann::json::exception& e) {
    return Error{path + ": broken JSON (" + e.what() + ")"};
  }
  if (!parsed->is_object()) return Error{path + ": the JSON root is not an object"};
  return Status();
}

// %XX escapes in a URI, as tinygltf decodes them.
std::string urlDecode(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    auto hex = [](char c) {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      return -1;
    };
    if (s[i] == '%' && i + 2 < s.size() && hex(s[i + 1]) >= 0 && hex(s[i + 2]) >= 0) {
      out += char(hex(s[i + 1]) * 16 + hex(s[i + 2]));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

// Buffers that name external files: the file must exist and be large enough.
Status checkBufferFiles(const std::string& path, const nlohmann::json& root) {
  auto it = root.find("buffers");
  if (it == root.end()) return Status();
  if (!it->is_array()) return Error{path + ": 'buffers' is not an array"};
  for (size_t i = 0; i < it->size(); ++i) {
    const nlohmann::json& b = (*it)[i];
    if (!b.is_object()) return Error{path + ": buffer " + std::to_string(i) + " is not an object"};
    auto uri = b.find("uri");
    if (uri == b.end() || !uri->is_string()) continue;
    std::string u = uri->get<std::string>();
    if (u.rfind("data:", 0) == 0) continue;
    std::string file = directoryOf(path) + urlDecode(u);
    struct stat st;
    if (::stat(file.c_str(), &st) != 0)
      return Error{path + ": buffer " + std::to_string(i) + " file '" + u + "' not found"};
    // Not a FIFO, device or folder: reading one could block the load for ever.
    if (!S_ISREG(st.st_mode))
      return Error{path + ": buffer " + std::to_string(i) + " file '" + u +
                   "' is not a regular file"};
    auto len = b.find("byteLength");
    if (len != b.end() && len->is_number_unsigned() && uint64_t(st.st_size) < len->get<uint64_t>())
      return Error{path + ": buffer " + std::to_string(i) + " file '" + u + "' has " +
                   std::to_string(st.st_size) + " bytes, fewer than its byteLength " +
                   std::to_string(len->get<uint64_t>())};
  }
  return Status();
}

// Image decoding for tinygltf: bounded sizes, and failures recorded rather than fatal (an
// image that no material uses may be undecodable without harm).
struct ImageContext {
  const tinygltf::Model* model = nullptr;
  std::map<int, std::string> failures;  // image index -> why
  uint64_t texelBudget = kMaxSceneTexels;
};

bool loadImage(tinygltf::Image* image, const int index, std::string* err, std::string* warn, int,
               int, const unsigned char* bytes, int size, void* user) {
  auto* ctx = static_cast<ImageContext*>(user);
  if (image->bufferView >= 0) {
    // tinygltf computed `bytes` from the bufferView without checking its range.
    const tinygltf::BufferView& view = ctx->model->bufferViews[size_t(image->bufferView)];
    const tinygltf::Buffer& buffer = ctx->model->buffers[size_t(view.buffer)];
    if (view.byteOffset > buffer.data.size() ||
        view.byteLength > buffer.data.size() - view.byteOffset) {
      ctx->failures[index] = "its bufferView " + std::to_string(image->bufferView) +
                             " reads past the end of buffer " + std::to_string(view.buffer);
      return true;
    }
  }
  if (size <= 0) {
    ctx->failures[index] = "no image data";
    return true;
  }
  auto decoded = decodeImage(bytes, size_t(size), &ctx->texelBudget);
  if (!decoded.ok()) {
    ctx->failures[index] = decoded.error().message;
    return true;
  }
  image->width = int(decoded->width);
  image->height = int(decoded->height);
  image->component = 4;
  image->bits = 8;
  image->pixel_type = TINYGLTF_COMPONENT_TYPE_UNSIGNED_BYTE;
  image->image.resize(decoded->texels().size() * 4);
  std::memcpy(image->image.data(), decoded->texels().data(), image->image.size());
  return true;
}

double numberMember(const tinygltf::Value& v, const char* key, double fallback) {
  if (!v.IsObject() || !v.Has(key)) return fallback;
  const tinygltf::Value& n = v.Get(key);
  return n.IsNumber() ? n.GetNumberAsDouble() : fallback;
}

// A JSON number as a float: out-of-range values saturate (the caller checks finiteness).
float toFloat(double v) {
  if (!(v == v)) return std::numeric_limits<float>::quiet_NaN();
  return float(std::clamp(v, -double(std::numeric_limits<float>::max()),
                          double(std::numeric_limits<float>::max())));
}
// A small index (texCoord) from a JSON number: anything out of range becomes -1.
int smallInt(double v) { return v >= 0.0 && v < 1024.0 ? int(v) : -1; }

const tinygltf::Value* extension(const tinygltf::ExtensionMap& map, const char* name) {
  auto it = map.find(name);
  return it == map.end() ? nullptr : &it->second;
}

class GltfLoader {
 public:
  GltfLoader(const std::string& path, const tinygltf::Model& model, const ImageContext& images)
      : path_(path), model_(model), images_(images) {}

  Result<Scene> load();

 private:
  Error fail(const std::string& what) const { return Error{path_ + ": " + what}; }

  Status checkExtensions();
  Status convertMaterials();
  // A textureInfo: which texture, which UV set, and its KHR_texture_transform.
  struct TextureRef {
    int index = -1;
    int texCoord = 0;
    std::array<float, 6> uv{1, 0, 0, 0, 1, 0};
  };
  Result<TextureRef> textureRef(int index, int texCoord, const tinygltf::ExtensionMap& extensions,
                                const std::string& where);
  // A textureInfo given inside an extension's JSON (absent: index -1).
  Result<TextureRef> textureRef(const tinygltf::Value& extension, const char* key,
                                const std::string& where);
  Result<int32_t> texture(const TextureRef& ref, const std::string& where);
  Status convertExtensions(const tinygltf::Material& gm, const std::string& where,
                           kernel::Material& m);
  // parentEntry: the parent's index in Scene::nodes (-1 for a root).
  Status visit(int node, const Mat4& parent, int32_t parentEntry, uint32_t depth);
  // entry: the index in Scene::nodes of the node instance that adds it.
  Status addPrimitive(int mesh, int primitive, const Mat4& world, int32_t entry);
  Status addLight(int light, const Mat4& world, int32_t entry);
  Status addCamera(int camera, const Mat4& world, const std::string& nodeName, int32_t entry);

  struct View {
    const uint8_t* data;  // first element
    uint64_t count, stride;
    int componentType, components;
    bool normalized;
  };
  Result<View> accessorView(int accessor, const std::string& use);
  Result<std::vector<float>> readFloats(int accessor, int components, const std::string& use);
  Result<std::vector<uint32_t>> readIndices(int accessor, uint64_t vertexCount);

  const std::string& path_;
  const tinygltf::Model& model_;
  const ImageContext& images_;
  Scene scene_;
  // (glTF texture, UV transform) -> Scene texture
  std::map<std::pair<int, std::array<float, 6>>, int32_t> textureMap_;
  uint64_t texelsCopied_ = 0;  // of all SceneTextures made
  std::set<int> missingWarned_;  // images whose file is missing, said once each
  int32_t defaultMaterial_ = -1;
  uint64_t triangles_ = 0, vertices_ = 0, visits_ = 0;
  std::vector<bool> onPath_;
};

Status GltfLoader::checkExtensions() {
  static const char* kSupported[] = {
      "KHR_lights_punctual",       "KHR_materials_emissive_strength", "KHR_materials_ior",
      "KHR_mesh_quantization",     "KHR_materials_transmission",      "KHR_materials_volume",
      "KHR_materials_clearcoat",   "KHR_materials_sheen",             "KHR_materials_specular",
      "KHR_texture_transform"};
  for (const std::string& e : model_.extensionsRequired) {
    bool ok = false;
    for (const char* s : kSupported) ok |= e == s;
    if (!ok) return fail("requires extension " + e + ", which is not supported");
  }
  // An optional extension the renderer does not know is ignored, and said so (never silently):
  // naming the materials that use it.
  for (const std::string& e : model_.extensionsUsed) {
    bool ok = false;
    for (const char* s : kSupported) ok |= e == s;
    if (ok) continue;
    std::string users;
    for (const tinygltf::Material& m : model_.materials) {
      if (m.extensions.count(e) == 0) continue;
      users += (users.empty() ? "" : ", ") + ("'" + m.name + "'");
    }
    scene_.warnings.push_back("extension " + e + " is not supported yet and is ignored" +
                              (users.empty() ? "" : " (materials " + users + ")"));
  }
  return Status();
}

Result<GltfLoader::TextureRef> GltfLoader::textureRef(int index, int texCoord,
                                                      const tinygltf::ExtensionMap& extensions,
                                                      const std::string& where) {
  TextureRef ref;
  ref.index = index;
  ref.texCoord = texCoord;
  if (index < 0) return ref;
  const tinygltf::Value* e = extension(extensions, "KHR_texture_transform");
  if (e) {
    double offset[2] = {0, 0}, scale[2] = {1, 1};
    const double rotation = numberMember(*e, "rotation", 0.0);
    for (auto [key, out] : {std::pair{"offset", offset}, std::pair{"scale", scale}}) {
      if (!e->Has(key)) continue;
      const tinygltf::Value& v = e->Get(key);
      if (!v.IsArray() || v.ArrayLen() != 2 || !v.Get(0).IsNumber() || !v.Get(1).IsNumber())
        return fail(where + ": KHR_texture_transform " + key + " needs 2 numbers");
      out[0] = v.Get(0).GetNumberAsDouble();
      out[1] = v.Get(1).GetNumberAsDouble();
    }
    if (e->Has("texCoord")) ref.texCoord = smallInt(numberMember(*e, "texCoord", texCoord));
    // u' = cos sx u + sin sy v + ox, v' = -sin sx u + cos sy v + oy: the matrix
    // translation * rotation * scale of the extension, with the rotation's sign as Blender's
    // importer (and so Cycles) and three.js apply it.
    const double c = std::cos(rotation), sn = std::sin(rotation);
    ref.uv = {toFloat(c * scale[0]),  toFloat(sn * scale[1]), toFloat(offset[0]),
              toFloat(-sn * scale[0]), toFloat(c * scale[1]),  toFloat(offset[1])};
    for (float f : ref.uv)
      if (!std::isfinite(f)) return fail(where + ": KHR_texture_transform is not finite");
  }
  return ref;
}

Result<GltfLoader::TextureRef> GltfLoader::textureRef(const tinygltf::Value& ext, const char* key,
                                                      const std::string& where) {
  if (!ext.IsObject() || !ext.Has(key)) return TextureRef{};
  const tinygltf::Value& info = ext.Get(key);
  const std::string name = where + " " + key;
  if (!info.IsObject() || !info.Has("index") || !info.Get("index").IsNumber())
    return fail(name + " has no texture index");
  const double index = info.Get("index").GetNumberAsDouble();
  if (!(index >= 0 && index < double(model_.textures.size())))
    return fail(name + " refers to texture " + std::to_string(index) + " of " +
                std::to_string(model_.textures.size()));
  tinygltf::ExtensionMap extensions;
  if (info.Has("extensions") && info.Get("extensions").IsObject()) {
    const tinygltf::Value& all = info.Get("extensions");
    for (const std::string& k : all.Keys()) extensions[k] = all.Get(k);
  }
  return textureRef(int(index), smallInt(numberMember(info, "texCoord", 0)), extensions, name);
}

Result<int32_t> GltfLoader::texture(const TextureRef& ref, const std::string& where) {
  const int t = ref.index;
  if (t < 0) return kernel::kNoTexture;
  if (size_t(t) >= model_.textures.size())
    return fail(where + " refers to texture " + std::to_string(t) + " of " +
                std::to_string(model_.textures.size()));
  if (ref.texCoord != 0)
    scene_.warnings.push_back(where + " uses TEXCOORD_" + std::to_string(ref.texCoord) +
                              "; TEXCOORD_0 is used instead");
  auto found = textureMap_.find({t, ref.uv});
  if (found != textureMap_.end()) return found->second;
  const tinygltf::Texture& gt = model_.textures[size_t(t)];
  if (gt.source < 0) {
    scene_.warnings.push_back("texture " + std::to_string(t) +
                              " has no image source that can be decoded; ignored");
    textureMap_[{t, ref.uv}] = kernel::kNoTexture;
    return kernel::kNoTexture;
  }
  if (size_t(gt.source) >= model_.images.size())
    return fail("texture " + std::to_string(t) + " refers to image " + std::to_string(gt.source) +
                " of " + std::to_string(model_.images.size()));
  const tinygltf::Image& image = model_.images[size_t(gt.source)];
  std::string imageName =
      "image " + std::to_string(gt.source) + (image.uri.empty() ? "" : " ('" + image.uri + "')");
  auto failure = images_.failures.find(gt.source);
  if (failure != images_.failures.end()) return fail(imageName + ": " + failure->second);
  // A missing image file (tinygltf leaves the image empty): a magenta placeholder that shows
  // where it is used, and a warning; the rest of the scene renders.
  const bool missing = image.image.empty() && !image.uri.empty() &&
                       image.uri.rfind("data:", 0) != 0;
  if (missing && missingWarned_.insert(gt.source).second)
    scene_.warnings.push_back(imageName + " is missing: " + where +
                              " and any other use of it show magenta");
  if (!missing &&
      (image.image.empty() || image.width <= 0 || image.height <= 0 || image.component != 4 ||
       image.bits != 8 || image.image.size() != size_t(image.width) * size_t(image.height) * 4))
    return fail(imageName + " could not be loaded");
  // Each (texture, UV transform) pair is a header of its own with a copy of the texels:
  // bounded in total like the decoded images.
  const uint64_t texels = missing ? 1 : uint64_t(image.width) * uint64_t(image.height);
  if (texels > kMaxSceneTexels - texelsCopied_)
    return fail(imageName + ": the scene's textures would exceed " +
                std::to_string(kMaxSceneTexels) + " texels in all");
  texelsCopied_ += texels;
  SceneTexture st;
  st.name = image.name.empty() ? image.uri : image.name;
  if (missing) {
    st.width = st.height = 1;
    st.setTexels({kernel::Rgba8{255, 0, 255, 255}});
  } else {
    st.width = uint32_t(image.width);
    st.height = uint32_t(image.height);
    std::vector<kernel::Rgba8> texels(size_t(st.width) * st.height);
    std::memcpy(texels.data(), image.image.data(), image.image.size());
    st.setTexels(std::move(texels));
  }
  if (gt.sampler >= 0) {
    if (size_t(gt.sampler) >= model_.samplers.size())
      return fail("texture " + std::to_string(t) + " refers to sampler " +
                  std::to_string(gt.sampler) + " of " + std::to_string(model_.samplers.size()));
    const tinygltf::Sampler& s = model_.samplers[size_t(gt.sampler)];
    auto wrap = [](int w) -> uint32_t {
      if (w == TINYGLTF_TEXTURE_WRAP_CLAMP_TO_EDGE) return kernel::kWrapClamp;
      if (w == TINYGLTF_TEXTURE_WRAP_MIRRORED_REPEAT) return kernel::kWrapMirror;
      return kernel::kWrapRepeat;
    };
    st.wrapS = wrap(s.wrapS);
    st.wrapT = wrap(s.wrapT);
    st.filter = s.magFilter == TINYGLTF_TEXTURE_FILTER_NEAREST ? kernel::kFilterNearest
                                                               : kernel::kFilterLinear;
  }
  st.uvTransform = ref.uv;
  int32_t index = int32_t(scene_.textures.size());
  scene_.textures.push_back(std::move(st));
  textureMap_[{t, ref.uv}] = index;
  return index;
}

Status GltfLoader::convertExtensions(const tinygltf::Material& gm, const std::string& where,
                                     kernel::Material& m) {
  auto colour = [&](const tinygltf::Value& e, const char* key, kernel::Vec3f fallback,
                    kernel::Vec3f* out) -> Status {
    *out = fallback;
    if (!e.Has(key)) return Status();
    const tinygltf::Value& v = e.Get(key);
    if (!v.IsArray() || v.ArrayLen() != 3 || !v.Get(0).IsNumber() || !v.Get(1).IsNumber() ||
        !v.Get(2).IsNumber())
      return fail(where + ": " + key + " needs 3 numbers");
    *out = {toFloat(v.Get(0).GetNumberAsDouble()), toFloat(v.Get(1).GetNumberAsDouble()),
            toFloat(v.Get(2).GetNumberAsDouble())};
    return Status();
  };
  // Each extension's textures: (JSON key, the material's slot).
  using Slots = std::initializer_list<std::pair<const char*, int32_t*>>;
  auto textures = [&](const tinygltf::Value& e, const std::string& name, Slots slots) -> Status {
    for (const auto& [key, out] : slots) {
      auto ref = textureRef(e, key, where + " " + name);
      if (!ref.ok()) return ref.error();
      auto t = texture(*ref, where + " " + name + " " + key);
      if (!t.ok()) return t.error();
      *out = *t;
    }
    return Status();
  };
  if (const tinygltf::Value* e = extension(gm.extensions, "KHR_materials_transmission")) {
    m.transmissionFactor = toFloat(numberMember(*e, "transmissionFactor", 0.0));
    if (Status st = textures(*e, "KHR_materials_transmission",
                             {{"transmissionTexture", &m.transmissionTexture}});
        !st.ok())
      return st;
  }
  if (const tinygltf::Value* e = extension(gm.extensions, "KHR_materials_volume")) {
    // thicknessTexture only matters to rasterizers, which have no geometry behind the
    // surface; a path tracer follows the real volume.
    m.thicknessFactor = toFloat(numberMember(*e, "thicknessFactor", 0.0));
    const double distance = numberMember(*e, "attenuationDistance", 0.0);
    m.attenuationDistance = distance > 0.0 ? toFloat(distance) : 0.0f;
    if (Status st = colour(*e, "attenuationColor", {1, 1, 1}, &m.attenuationColor); !st.ok())
      return st;
  }
  if (const tinygltf::Value* e = extension(gm.extensions, "KHR_materials_clearcoat")) {
    m.clearcoatFactor = toFloat(numberMember(*e, "clearcoatFactor", 0.0));
    m.clearcoatRoughnessFactor = toFloat(numberMember(*e, "clearcoatRoughnessFactor", 0.0));
    if (Status st = textures(*e, "KHR_materials_clearcoat",
                             {{"clearcoatTexture", &m.clearcoatTexture},
                              {"clearcoatRoughnessTexture", &m.clearcoatRoughnessTexture},
                              {"clearcoatNormalTexture", &m.clearcoatNormalTexture}});
        !st.ok())
      return st;
    if (e->Has("clearcoatNormalTexture"))
      m.clearcoatNormalScale =
          toFloat(numberMember(e->Get("clearcoatNormalTexture"), "scale", 1.0));
  }
  if (const tinygltf::Value* e = extension(gm.extensions, "KHR_materials_sheen")) {
    if (Status st = colour(*e, "sheenColorFactor", {0, 0, 0}, &m.sheenColorFactor); !st.ok())
      return st;
    m.sheenRoughnessFactor = toFloat(numberMember(*e, "sheenRoughnessFactor", 0.0));
    if (Status st = textures(*e, "KHR_materials_sheen",
                             {{"sheenColorTexture", &m.sheenColorTexture},
                              {"sheenRoughnessTexture", &m.sheenRoughnessTexture}});
        !st.ok())
      return st;
  }
  if (const tinygltf::Value* e = extension(gm.extensions, "KHR_materials_specular")) {
    m.specularFactor = toFloat(numberMember(*e, "specularFactor", 1.0));
    if (Status st = colour(*e, "specularColorFactor", {1, 1, 1}, &m.specularColorFactor);
        !st.ok())
      return st;
    if (Status st = textures(*e, "KHR_materials_specular",
                             {{"specularTexture", &m.specularTexture},
                              {"specularColorTexture", &m.specularColorTexture}});
        !st.ok())
      return st;
  }
  const float values[] = {m.transmissionFactor,       m.thicknessFactor,
                          m.attenuationDistance,      m.clearcoatFactor,
                          m.clearcoatRoughnessFactor, m.clearcoatNormalScale,
                          m.sheenRoughnessFactor,     m.specularFactor,
                          m.attenuationColor.x,       m.attenuationColor.y,
                          m.attenuationColor.z,       m.sheenColorFactor.x,
                          m.sheenColorFactor.y,       m.sheenColorFactor.z,
                          m.specularColorFactor.x,    m.specularColorFactor.y,
                          m.specularColorFactor.z};
  for (float v : values)
    if (!std::isfinite(v)) return fail(where + " has non-finite extension factors");
  return Status();
}

Status GltfLoader::convertMaterials() {
  for (size_t i = 0; i < model_.materials.size(); ++i) {
    const tinygltf::Material& gm = model_.materials[i];
    const tinygltf::PbrMetallicRoughness& pbr = gm.pbrMetallicRoughness;
    std::string where = "material " + std::to_string(i);
    kernel::Material m = defaultMaterial();
    if (pbr.baseColorFactor.size() != 4) return fail(where + ": baseColorFactor needs 4 numbers");
    if (!gm.emissiveFactor.empty() && gm.emissiveFactor.size() != 3)
      return fail(where + ": emissiveFactor needs 3 numbers");
    m.baseColorFactor = {float(pbr.baseColorFactor[0]), float(pbr.baseColorFactor[1]),
                         float(pbr.baseColorFactor[2]), float(pbr.baseColorFactor[3])};
    m.metallicFactor = float(pbr.metallicFactor);
    m.roughnessFactor = float(pbr.roughnessFactor);
    MaterialEmission emission;
    if (const tinygltf::Value* e = extension(gm.extensions, "KHR_materials_emissive_strength"))
      emission.strength = numberMember(*e, "emissiveStrength", 1.0);
    if (gm.emissiveFactor.size() == 3) {
      emission.factor = {gm.emissiveFactor[0], gm.emissiveFactor[1], gm.emissiveFactor[2]};
      // Scene edits (scene_edit.cpp) recompute it the same way from the same doubles.
      m.emission = {float(emission.factor[0] * emission.strength),
                    float(emission.factor[1] * emission.strength),
                    float(emission.factor[2] * emission.strength)};
    }
    if (const tinygltf::Value* e = extension(gm.extensions, "KHR_materials_ior"))
      m.ior = float(numberMember(*e, "ior", 1.5));
    m.normalScale = float(gm.normalTexture.scale);
    m.alphaCutoff = float(gm.alphaCutoff);
    if (gm.alphaMode == "MASK")
      m.alphaMode = kernel::kAlphaMask;
    else if (gm.alphaMode == "BLEND")
      m.alphaMode = kernel::kAlphaBlend;
    else if (gm.alphaMode == "OPAQUE" || gm.alphaMode.empty())
      m.alphaMode = kernel::kAlphaOpaque;
    else
      return fail(where + ": unknown alphaMode '" + gm.alphaMode + "'");
    m.doubleSided = gm.doubleSided ? 1u : 0u;
    bool finiteValues = std::isfinite(m.baseColorFactor.x) && std::isfinite(m.baseColorFactor.y) &&
                        std::isfinite(m.baseColorFactor.z) && std::isfinite(m.baseColorFactor.w) &&
                        finite(m.emission) && std::isfinite(m.metallicFactor) &&
                        std::isfinite(m.roughnessFactor) && std::isfinite(m.normalScale) &&
                        std::isfinite(m.alphaCutoff) && std::isfinite(m.ior);
    if (!finiteValues) return fail(where + " has non-finite factors");

    struct Slot {
      const tinygltf::TextureInfo* info;
      const tinygltf::NormalTextureInfo* normal;
      const char* name;
      int32_t* out;
    };
    const Slot slots[] = {
        {&pbr.baseColorTexture, nullptr, "baseColorTexture", &m.baseColorTexture},
        {&pbr.metallicRoughnessTexture, nullptr, "metallicRoughnessTexture",
         &m.metallicRoughnessTexture},
        {nullptr, &gm.normalTexture, "normalTexture", &m.normalTexture},
        {&gm.emissiveTexture, nullptr, "emissiveTexture", &m.emissiveTexture},
    };
    for (const Slot& s : slots) {
      const std::string name = where + " " + s.name;
      auto ref = s.info ? textureRef(s.info->index, s.info->texCoord, s.info->extensions, name)
                        : textureRef(s.normal->index, s.normal->texCoord, s.normal->extensions,
                                     name);
      if (!ref.ok()) return ref.error();
      auto t = texture(*ref, name);
      if (!t.ok()) return t.error();
      *s.out = *t;
    }
    if (Status st = convertExtensions(gm, where, m); !st.ok()) return st;
    scene_.materials.push_back(m);
    scene_.materialNames.push_back(gm.name);
    scene_.materialEmission.push_back(emission);
  }
  return Status();
}

int componentSize(int type) {
  switch (type) {
    case TINYGLTF_COMPONENT_TYPE_BYTE:
    case TINYGLTF_COMPONENT_TYPE_UNSIGNED_BYTE:
      return 1;
    case TINYGLTF_COMPONENT_TYPE_SHORT:
    case TINYGLTF_COMPONENT_TYPE_UNSIGNED_SHORT:
      return 2;
    case TINYGLTF_COMPONENT_TYPE_INT:
    case TINYGLTF_COMPONENT_TYPE_UNSIGNED_INT:
    case TINYGLTF_COMPONENT_TYPE_FLOAT:
      return 4;
    default:
      return 0;
  }
}

int componentCount(int type) {
  switch (type) {
    case TINYGLTF_TYPE_SCALAR:
      return 1;
    case TINYGLTF_TYPE_VEC2:
      return 2;
    case TINYGLTF_TYPE_VEC3:
      return 3;
    case TINYGLTF_TYPE_VEC4:
    case TINYGLTF_TYPE_MAT2:
      return 4;
    case TINYGLTF_TYPE_MAT3:
      return 9;
    case TINYGLTF_TYPE_MAT4:
      return 16;
    default:
      return 0;
  }
}

Result<GltfLoader::View> GltfLoader::accessorView(int a, const std::string& use) {
  if (a < 0 || size_t(a) >= model_.accessors.size())
    return fail(use + " refers to accessor " + std::to_string(a) + " of " +
                std::to_string(model_.accessors.size()));
  const tinygltf::Accessor& acc = model_.accessors[size_t(a)];
  std::string name = "accessor " + std::to_string(a);
  if (acc.sparse.isSparse) return fail(name + " is sparse, which is not supported");
  int cs = componentSize(acc.componentType), cc = componentCount(acc.type);
  if (cs == 0)
    return fail(name + " has unknown componentType " + std::to_string(acc.componentType));
  if (cc == 0) return fail(name + " has an unknown type");
  if (acc.count > kMaxSceneTriangles * 3)
    return fail(name + " declares an absurd count " + std::to_string(acc.count));
  View v{nullptr, acc.count, uint64_t(cs) * cc, acc.componentType, cc, acc.normalized};
  const uint64_t elementSize = uint64_t(cs) * cc;
  if (acc.bufferView < 0) {
    // All zeros (glTF 2.0 3.6.2.1), backed by no data: bound it separately.
    if (acc.count > kMaxZeroAccessorCount)
      return fail(name + " has no bufferView and declares an absurd count " +
                  std::to_string(acc.count));
    return v;
  }
  if (size_t(acc.bufferView) >= model_.bufferViews.size())
    return fail(name + " refers to bufferView " + std::to_string(acc.bufferView) + " of " +
                std::to_string(model_.bufferViews.size()));
  const tinygltf::BufferView& view = model_.bufferViews[size_t(acc.bufferView)];
  std::string viewName = "bufferView " + std::to_string(acc.bufferView);
  if (view.buffer < 0 || size_t(view.buffer) >= model_.buffers.size())
    return fail(viewName + " refers to buffer " + std::to_string(view.buffer) + " of " +
                std::to_string(model_.buffers.size()));
  const tinygltf::Buffer& buffer = model_.buffers[size_t(view.buffer)];
  if (view.byteOffset > buffer.data.size() ||
      view.byteLength > buffer.data.size() - view.byteOffset)
    return fail(viewName + " reads past the end of buffer " + std::to_string(view.buffer));
  uint64_t stride = view.byteStride ? uint64_t(view.byteStride) : elementSize;
  if (stride < elementSize)
    return fail(viewName + " has byteStride " + std::to_string(stride) + ", smaller than the " +
                std::to_string(elementSize) + "-byte elements of " + name);
  if (acc.count > 0) {
    uint64_t end = uint64_t(acc.byteOffset) + stride * (acc.count - 1) + elementSize;
    if (acc.byteOffset > view.byteLength || end > view.byteLength)
      return fail(name + " reads past the end of buffer " + std::to_string(view.buffer) +
                  " (its bufferView " + std::to_string(acc.bufferView) + " has " +
                  std::to_string(view.byteLength) + " bytes)");
    v.data = buffer.data.data() + view.byteOffset + acc.byteOffset;
  }
  v.stride = stride;
  return v;
}

float readComponent(const uint8_t* p, int type, bool normalized) {
  switch (type) {
    case TINYGLTF_COMPONENT_TYPE_FLOAT: {
      float f;
      std::memcpy(&f, p, 4);
      return f;
    }
    case TINYGLTF_COMPONENT_TYPE_BYTE: {
      float f = float(int8_t(*p));
      return normalized ? std::fmax(f / 127.0f, -1.0f) : f;
    }
    case TINYGLTF_COMPONENT_TYPE_UNSIGNED_BYTE:
      return normalized ? float(*p) / 255.0f : float(*p);
    case TINYGLTF_COMPONENT_TYPE_SHORT: {
      int16_t s;
      std::memcpy(&s, p, 2);
      return normalized ? std::fmax(float(s) / 32767.0f, -1.0f) : float(s);
    }
    case TINYGLTF_COMPONENT_TYPE_UNSIGNED_SHORT: {
      uint16_t s;
      std::memcpy(&s, p, 2);
      return normalized ? float(s) / 65535.0f : float(s);
    }
    case TINYGLTF_COMPONENT_TYPE_INT: {
      int32_t s;
      std::memcpy(&s, p, 4);
      return float(s);
    }
    case TINYGLTF_COMPONENT_TYPE_UNSIGNED_INT: {
      uint32_t s;
      std::memcpy(&s, p, 4);
      return float(s);
    }
  }
  return 0.0f;
}

Result<std::vector<float>> GltfLoader::readFloats(int a, int components, const std::string& use) {
  auto v = accessorView(a, use);
  if (!v.ok()) return v.error();
  if (v->components != components)
    return fail(use + " (accessor " + std::to_string(a) + ") has " + std::to_string(v->components) +
                " components, expected " + std::to_string(components));
  std::vector<float> out(v->count * uint64_t(components), 0.0f);
  if (!v->data) return out;
  const int cs = componentSize(v->componentType);
  for (uint64_t i = 0; i < v->count; ++i) {
    const uint8_t* e = v->data + i * v->stride;
    for (int c = 0; c < components; ++c) {
      float f = readComponent(e + c * cs, v->componentType, v->normalized);
      if (!std::isfinite(f))
        return fail("accessor " + std::to_string(a) + " contains a non-finite value");
      out[i * components + c] = f;
    }
  }
  return out;
}

Result<std::vector<uint32_t>> GltfLoader::readIndices(int a, uint64_t vertexCount) {
  auto v = accessorView(a, "indices");
  if (!v.ok()) return v.error();
  std::string name = "accessor " + std::to_string(a);
  if (v->components != 1) return fail(name + " (indices) is not SCALAR");
  if (v->componentType != TINYGLTF_COMPONENT_TYPE_UNSIGNED_BYTE &&
      v->componentType != TINYGLTF_COMPONENT_TYPE_UNSIGNED_SHORT &&
      v->componentType != TINYGLTF_COMPONENT_TYPE_UNSIGNED_INT)
    return fail(name + " (indices) must be unsigned byte, short or int");
  std::vector<uint32_t> out(v->count, 0);
  if (!v->data) return out;
  for (uint64_t i = 0; i < v->count; ++i) {
    const uint8_t* e = v->data + i * v->stride;
    uint32_t idx;
    if (v->componentType == TINYGLTF_COMPONENT_TYPE_UNSIGNED_BYTE) {
      idx = *e;
    } else if (v->componentType == TINYGLTF_COMPONENT_TYPE_UNSIGNED_SHORT) {
      uint16_t s;
      std::memcpy(&s, e, 2);
      idx = s;
    } else {
      std::memcpy(&idx, e, 4);
    }
    if (idx >= vertexCount)
      return fail(name + " (indices) has index " + std::to_string(idx) + " at position " +
                  std::to_string(i) + ", beyond the " + std::to_string(vertexCount) + " vertices");
    out[i] = idx;
  }
  return out;
}

Status GltfLoader::addPrimitive(int meshIndex, int p, const Mat4& world, int32_t entry) {
  const tinygltf::Primitive& prim = model_.meshes[size_t(meshIndex)].primitives[size_t(p)];
  std::string where = "mesh " + std::to_string(meshIndex) + " primitive " + std::to_string(p);
  if (prim.mode != TINYGLTF_MODE_TRIANGLES && prim.mode != -1) {
    scene_.warnings.push_back(where + ": mode " + std::to_string(prim.mode) +
                              " is not triangles; skipped");
    return Status();
  }
  auto attribute = [&prim](const char* name) {
    auto it = prim.attributes.find(name);
    return it == prim.attributes.end() ? -1 : it->second;
  };
  int posAcc = attribute("POSITION");
  if (posAcc < 0) {
    scene_.warnings.push_back(where + " has no POSITION; skipped");
    return Status();
  }
  // Bound the totals (over all instances) before allocating anything for this one.
  auto posView = accessorView(posAcc, where + " POSITION");
  if (!posView.ok()) return posView.error();
  uint64_t indexCount = posView->count;
  if (prim.indices >= 0) {
    auto indexView = accessorView(prim.indices, where + " indices");
    if (!indexView.ok()) return indexView.error();
    indexCount = indexView->count;
  }
  vertices_ += posView->count;
  triangles_ += indexCount / 3;
  if (triangles_ > kMaxSceneTriangles)
    return fail("more than " + std::to_string(kMaxSceneTriangles) + " triangles after instancing");
  if (vertices_ > kMaxSceneVertices)
    return fail("more than " + std::to_string(kMaxSceneVertices) + " vertices after instancing");

  auto pos = readFloats(posAcc, 3, where + " POSITION");
  if (!pos.ok()) return pos.error();
  const uint64_t vertexCount = pos->size() / 3;

  Mesh mesh;
  mesh.name = model_.meshes[size_t(meshIndex)].name;
  mesh.node = entry;
  if (prim.indices >= 0) {
    auto idx = readIndices(prim.indices, vertexCount);
    if (!idx.ok()) return idx.error();
    mesh.indices = std::move(*idx);
  } else {
    mesh.indices.resize(vertexCount);
    for (uint64_t i = 0; i < vertexCount; ++i) mesh.indices[i] = uint32_t(i);
  }
  if (mesh.indices.size() % 3 != 0) {
    scene_.warnings.push_back(where + ": " + std::to_string(mesh.indices.size()) +
                              " indices is not a multiple of 3; the rest is dropped");
    mesh.indices.resize(mesh.indices.size() / 3 * 3);
  }

  if (prim.material >= 0 && size_t(prim.material) >= model_.materials.size())
    return fail(where + " refers to material " + std::to_string(prim.material) + " of " +
                std::to_string(model_.materials.size()));
  if (prim.material >= 0) {
    mesh.material = uint32_t(prim.material);
  } else {
    if (defaultMaterial_ < 0) {
      defaultMaterial_ = int32_t(scene_.materials.size());
      scene_.materials.push_back(defaultMaterial());
      scene_.materialNames.push_back("default");
      scene_.materialEmission.push_back(MaterialEmission());
    }
    mesh.material = uint32_t(defaultMaterial_);
  }

  const bool flip = world.det3() < 0.0;
  const Mat4 normalMatrix = world.normalMatrix();
  mesh.positions.resize(vertexCount);
  for (uint64_t i = 0; i < vertexCount; ++i) {
    Vec3f p3 = world.point({(*pos)[i * 3], (*pos)[i * 3 + 1], (*pos)[i * 3 + 2]});
    if (!finite(p3)) return fail(where + ": a vertex is not finite after its node transform");
    mesh.positions[i] = p3;
  }
  if (flip)
    for (size_t i = 0; i < mesh.indices.size(); i += 3)
      std::swap(mesh.indices[i + 1], mesh.indices[i + 2]);

  auto readAttribute = [&](const char* name, int components) -> Result<std::vector<float>> {
    int acc = attribute(name);
    if (acc < 0) return std::vector<float>();
    auto values = readFloats(acc, components, where + " " + name);
    if (!values.ok()) return values.error();
    if (values->size() / components != vertexCount)
      return fail(where + ": " + name + " has " + std::to_string(values->size() / components) +
                  " entries for " + std::to_string(vertexCount) + " positions");
    return values;
  };
  auto normals = readAttribute("NORMAL", 3);
  if (!normals.ok()) return normals.error();
  auto uvs = readAttribute("TEXCOORD_0", 2);
  if (!uvs.ok()) return uvs.error();
  auto tangents = readAttribute("TANGENT", 4);
  if (!tangents.ok()) return tangents.error();

  generateNormals(mesh);  // the fallback for absent or degenerate normals
  if (!normals->empty()) {
    for (uint64_t i = 0; i < vertexCount; ++i) {
      Vec3f n =
          normalMatrix.vector({(*normals)[i * 3], (*normals)[i * 3 + 1], (*normals)[i * 3 + 2]});
      float len = kernel::length(n);
      if (len > 0.0f && std::isfinite(len)) mesh.normals[i] = n / len;
    }
  }
  mesh.uvs.assign(vertexCount, Vec2f{0, 0});
  for (uint64_t i = 0; i < uvs->size() / 2; ++i) mesh.uvs[i] = {(*uvs)[i * 2], (*uvs)[i * 2 + 1]};
  generateTangents(mesh);
  if (!tangents->empty()) {
    for (uint64_t i = 0; i < vertexCount; ++i) {
      Vec3f t = world.vector({(*tangents)[i * 4], (*tangents)[i * 4 + 1], (*tangents)[i * 4 + 2]});
      float w = (*tangents)[i * 4 + 3] < 0.0f ? -1.0f : 1.0f;
      Vec3f n = mesh.normals[i];
      t = t - n * kernel::dot(n, t);
      float len = kernel::length(t);
      if (len > 1e-20f && std::isfinite(len)) {
        t = t / len;
        mesh.tangents[i] = {t.x, t.y, t.z, flip ? -w : w};
      }
    }
  }
  scene_.meshes.push_back(std::move(mesh));
  return Status();
}

Status GltfLoader::addLight(int l, const Mat4& world, int32_t entry) {
  if (l < 0 || size_t(l) >= model_.lights.size())
    return fail("a node refers to light " + std::to_string(l) + " of " +
                std::to_string(model_.lights.size()));
  const tinygltf::Light& gl = model_.lights[size_t(l)];
  std::string where = "light " + std::to_string(l);
  kernel::PunctualLight light{};
  if (gl.type == "point")
    light.type = kernel::kLightPoint;
  else if (gl.type == "spot")
    light.type = kernel::kLightSpot;
  else if (gl.type == "directional")
    light.type = kernel::kLightDirectional;
  else
    return fail(where + " has unknown type '" + gl.type + "'");
  Vec3f color{1, 1, 1};
  if (gl.color.size() == 3)
    color = {float(gl.color[0]), float(gl.color[1]), float(gl.color[2])};
  else if (!gl.color.empty())
    return fail(where + ": color needs 3 numbers");
  // KHR_lights_punctual's intensities are photometric: candela (point, spot) and lux
  // (directional). peerlight renders radiometric quantities, as Cycles does: W/sr and W/m^2,
  // one lumen per 1/683 W (the convention of Blender's glTF exporter, which multiplies a
  // light's watts by 683, and its importer, which divides again). So a scene exported from
  // Blender renders at the brightness Cycles gives it.
  light.intensity = color * float(gl.intensity / kLumensPerWatt);
  light.position = world.point({0, 0, 0});
  light.direction = kernel::normalize(world.vector({0, 0, -1}));
  light.range = float(gl.range);
  light.cosInnerCone = float(std::cos(gl.spot.innerConeAngle));
  light.cosOuterCone = float(std::cos(gl.spot.outerConeAngle));
  if (!finite(light.intensity) || !finite(light.position) || !finite(light.direction) ||
      !std::isfinite(light.range) || kernel::length(light.direction) == 0.0f)
    return fail(where + " has non-finite values or a degenerate node transform");
  scene_.lights.push_back(light);
  scene_.lightNodes.push_back(entry);
  return Status();
}

Status GltfLoader::addCamera(int c, const Mat4& world, const std::string& nodeName, int32_t entry) {
  if (c < 0 || size_t(c) >= model_.cameras.size())
    return fail("a node refers to camera " + std::to_string(c) + " of " +
                std::to_string(model_.cameras.size()));
  const tinygltf::Camera& gc = model_.cameras[size_t(c)];
  std::string where = "camera " + std::to_string(c);
  SceneCamera cam;
  cam.name = !gc.name.empty() ? gc.name : nodeName;
  cam.node = entry;
  if (gc.type == "perspective") {
    cam.type = kernel::kCameraPerspective;
    cam.yfov = float(gc.perspective.yfov);
    if (!(cam.yfov > 0.0f && cam.yfov < 3.14159f))
      return fail(where + ": yfov " + std::to_string(gc.perspective.yfov) + " is not in (0, pi)");
  } else if (gc.type == "orthographic") {
    cam.type = kernel::kCameraOrthographic;
    cam.ymag = std::fabs(float(gc.orthographic.ymag));
    if (!(cam.ymag > 0.0f) || !std::isfinite(cam.ymag))
      return fail(where + ": ymag must be non-zero");
  } else {
    return fail(where + " has unknown type '" + gc.type + "'");
  }
  cam.position = world.point({0, 0, 0});
  Vec3f forward = kernel::normalize(world.vector({0, 0, -1}));
  Vec3f up = world.vector({0, 1, 0});
  Vec3f right = kernel::normalize(kernel::cross(forward, up));
  up = kernel::cross(right, forward);
  if (!finite(cam.position) || !finite(forward) || !finite(up) || kernel::length(up) < 0.5f)
    return fail(where + " has a degenerate node transform");
  cam.forward = forward;
  cam.up = kernel::normalize(up);
  scene_.cameras.push_back(cam);
  return Status();
}

Status GltfLoader::visit(int n, const Mat4& parent, int32_t parentEntry, uint32_t depth) {
  if (n < 0 || size_t(n) >= model_.nodes.size())
    return fail("node " + std::to_string(n) + " does not exist (" +
                std::to_string(model_.nodes.size()) + " nodes)");
  if (depth > kMaxNodeDepth)
    return fail("node hierarchy deeper than " + std::to_string(kMaxNodeDepth));
  if (onPath_[size_t(n)]) return fail("node " + std::to_string(n) + " is its own ancestor");
  if (++visits_ > kMaxNodeVisits)
    return fail("more than " + std::to_string(kMaxNodeVisits) + " node instances");
  const tinygltf::Node& node = model_.nodes[size_t(n)];
  std::string where = "node " + std::to_string(n);
  Mat4 local = Mat4::identity();
  if (!node.matrix.empty()) {
    if (node.matrix.size() != 16) return fail(where + ": matrix needs 16 numbers");
    for (int i = 0; i < 16; ++i) local.m[i] = node.matrix[size_t(i)];
  } else {
    Mat4 t = Mat4::identity(), r = Mat4::identity(), s = Mat4::identity();
    if (!node.translation.empty()) {
      if (node.translation.size() != 3) return fail(where + ": translation needs 3 numbers");
      t.m[12] = node.translation[0];
      t.m[13] = node.translation[1];
      t.m[14] = node.translation[2];
    }
    if (!node.rotation.empty()) {
      if (node.rotation.size() != 4) return fail(where + ": rotation needs 4 numbers");
      double x = node.rotation[0], y = node.rotation[1], z = node.rotation[2], w = node.rotation[3];
      double len = std::sqrt(x * x + y * y + z * z + w * w);
      if (!(len > 0.0) || !std::isfinite(len))
        return fail(where + ": rotation is not a quaternion");
      x /= len, y /= len, z /= len, w /= len;
      r.m[0] = 1 - 2 * (y * y + z * z);
      r.m[1] = 2 * (x * y + z * w);
      r.m[2] = 2 * (x * z - y * w);
      r.m[4] = 2 * (x * y - z * w);
      r.m[5] = 1 - 2 * (x * x + z * z);
      r.m[6] = 2 * (y * z + x * w);
      r.m[8] = 2 * (x * z + y * w);
      r.m[9] = 2 * (y * z - x * w);
      r.m[10] = 1 - 2 * (x * x + y * y);
    }
    if (!node.scale.empty()) {
      if (node.scale.size() != 3) return fail(where + ": scale needs 3 numbers");
      s.m[0] = node.scale[0];
      s.m[5] = node.scale[1];
      s.m[10] = node.scale[2];
    }
    local = t * r * s;
  }
  for (double v : local.m)
    if (!std::isfinite(v)) return fail(where + " has a non-finite transform");
  Mat4 world = parent * local;
  const int32_t entry = int32_t(scene_.nodes.size());
  scene_.nodes.push_back(SceneNode{node.name, parentEntry, world, true});

  if (node.mesh >= 0) {
    if (size_t(node.mesh) >= model_.meshes.size())
      return fail(where + " refers to mesh " + std::to_string(node.mesh) + " of " +
                  std::to_string(model_.meshes.size()));
    for (size_t p = 0; p < model_.meshes[size_t(node.mesh)].primitives.size(); ++p)
      if (Status s = addPrimitive(node.mesh, int(p), world, entry); !s.ok()) return s;
  }
  if (node.camera >= 0)
    if (Status s = addCamera(node.camera, world, node.name, entry); !s.ok()) return s;
  if (const tinygltf::Value* e = extension(node.extensions, "KHR_lights_punctual")) {
    double l = numberMember(*e, "light", -1.0);
    if (!(l >= 0.0 && l < 2147483647.0))
      return fail(where + " has a KHR_lights_punctual entry without a valid light index");
    if (Status s = addLight(int(l), world, entry); !s.ok()) return s;
  }
  onPath_[size_t(n)] = true;
  for (int child : node.children)
    if (Status s = visit(child, world, entry, depth + 1); !s.ok()) return s;
  onPath_[size_t(n)] = false;
  return Status();
}

Result<Scene> GltfLoader::load() {
  scene_.path = path_;
  // "2.0", "2.1": any glTF 2; a later major version may change what members mean.
  const std::string& version = model_.asset.version;
  if (version.substr(0, version.find('.')) != "2")
    return fail("asset version '" + version + "' is not glTF 2 (only major version 2 is read)");
  if (Status s = checkExtensions(); !s.ok()) return s.error();
  if (Status s = convertMaterials(); !s.ok()) return s.error();
  onPath_.assign(model_.nodes.size(), false);
  std::vector<int> roots;
  int sceneIndex = model_.defaultScene >= 0 ? model_.defaultScene : 0;
  if (!model_.scenes.empty()) {
    if (size_t(sceneIndex) >= model_.scenes.size())
      return fail("default scene " + std::to_string(sceneIndex) + " does not exist");
    roots = model_.scenes[size_t(sceneIndex)].nodes;
  } else {
    // No scenes: every node that is nobody's child.
    std::vector<bool> isChild(model_.nodes.size(), false);
    for (const tinygltf::Node& node : model_.nodes)
      for (int c : node.children)
        if (c >= 0 && size_t(c) < isChild.size()) isChild[size_t(c)] = true;
    for (size_t i = 0; i < model_.nodes.size(); ++i)
      if (!isChild[i]) roots.push_back(int(i));
  }
  for (int root : roots)
    if (Status s = visit(root, Mat4::identity(), -1, 0); !s.ok()) return s.error();
  scene_.computeBounds();
  return std::move(scene_);
}

}  // namespace

Result<Scene> loadGltf(const std::string& path, bool binary) {
  auto bytes = readFile(path, kMaxSceneFileBytes);
  if (!bytes.ok()) return bytes.error();
  const std::vector<uint8_t>& b = *bytes;
  if (b.empty()) return Error{path + ": empty file"};
  if (b.size() >= 0xffffffffu) return Error{path + ": file larger than 4 GiB"};
  const char* json = reinterpret_cast<const char*>(b.data());
  size_t jsonSize = b.size();
  if (binary) {
    if (Status s = checkGlb(path, b); !s.ok()) return s.error();
    json = reinterpret_cast<const char*>(b.data() + 20);
    jsonSize = read32(b.data() + 12);
  }
  nlohmann::json root;
  if (Status s = checkJson(path, json, jsonSize, &root); !s.ok()) return s.error();
  if (Status s = checkBufferFiles(path, root); !s.ok()) return s.error();
  root = nlohmann::json();

  tinygltf::TinyGLTF loader;
  tinygltf::Model model;
  ImageContext images;
  images.model = &model;
  loader.SetImageLoader(&loadImage, &images);
  // Files the glTF names (buffers, images) are read only when they are regular files: a FIFO
  // or a device could block the load for ever.
  // (tinygltf's own FileExists opens the file, which blocks on a FIFO: a stat instead.)
  tinygltf::FsCallbacks files{[](const std::string& file, void*) {
                                struct stat st {};
                                return ::stat(file.c_str(), &st) == 0;
                              },
                              &tinygltf::ExpandFilePath,
                              [](std::vector<unsigned char>* out, std::string* err,
                                 const std::string& file, void* user) {
                                struct stat st {};
                                if (::stat(file.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
                                  if (err != nullptr)
                                    *err += "'" + file + "' is not a regular file\n";
                                  return false;
                                }
                                return tinygltf::ReadWholeFile(out, err, file, user);
                              },
                              &tinygltf::WriteWholeFile, nullptr};
  loader.SetFsCallbacks(files);
  std::string err, warn;
  std::string baseDir = directoryOf(path);
  if (baseDir.empty()) baseDir = "./";
  bool ok =
      binary
          ? loader.LoadBinaryFromMemory(&model, &err, &warn, b.data(), unsigned(b.size()), baseDir)
          : loader.LoadASCIIFromString(&model, &err, &warn, json, unsigned(jsonSize), baseDir);
  if (!ok) return Error{path + ": " + (err.empty() ? "not a valid glTF file" : joinLines(err))};
  GltfLoader gltf(path, model, images);
  auto scene = gltf.load();
  if (scene.ok() && !warn.empty()) scene->warnings.push_back(joinLines(warn));
  return scene;
}

}  // namespace pl::detail
