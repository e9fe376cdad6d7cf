// loadScene() dispatch, file reading, image decoding and environment maps.

#include "core/scene/load.h"

#include <OpenEXR/ImfChannelList.h>
#include <OpenEXR/ImfFrameBuffer.h>
#include <OpenEXR/ImfHeader.h>
#include <OpenEXR/ImfInputFile.h>
#include <stb/stb_image.h>
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>

#include "core/scene/load_internal.h"
#include "core/util/log.h"

namespace pl {
namespace detail {

Result<std::vector<uint8_t>> readFile(const std::string& path, uint64_t maxBytes) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0)
    return Error{path + ": cannot open file (" + std::strerror(errno) + ")"};
  if (S_ISDIR(st.st_mode)) return Error{path + ": is a directory, not a file"};
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) return Error{path + ": cannot open file (" + std::strerror(errno) + ")"};
  if (std::fseek(f.get(), 0, SEEK_END) != 0) return Error{path + ": cannot seek"};
  long size = std::ftell(f.get());
  if (size < 0) return Error{path + ": cannot tell its size"};
  if (uint64_t(size) > maxBytes)
    return Error{path + ": file of " + std::to_string(size) + " bytes is larger than the " +
                 std::to_string(maxBytes) + "-byte limit"};
  std::fseek(f.get(), 0, SEEK_SET);
  std::vector<uint8_t> bytes(static_cast<size_t>(size));
  if (size > 0 && std::fread(bytes.data(), 1, bytes.size(), f.get()) != bytes.size())
    return Error{path + ": read error"};
  return bytes;
}

std::string directoryOf(const std::string& path) {
  size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? std::string() : path.substr(0, slash + 1);
}

Result<SceneTexture> decodeImage(const uint8_t* bytes, size_t size, uint64_t* texelBudget) {
  if (size == 0) return Error{"empty image data"};
  if (size > size_t(1) << 31) return Error{"image data larger than 2 GiB"};
  int w = 0, h = 0, comp = 0;
  if (!stbi_info_from_memory(bytes, int(size), &w, &h, &comp)) {
    const char* why = stbi_failure_reason();
    return Error{std::string("cannot decode image (") + (why ? why : "unknown format") + ")"};
  }
  if (w <= 0 || h <= 0 || uint32_t(w) > kMaxTextureDimension || uint32_t(h) > kMaxTextureDimension)
    return Error{"image of " + std::to_string(w) + "x" + std::to_string(h) +
                 " pixels is larger than the limit of " + std::to_string(kMaxTextureDimension) +
                 " on a side"};
  const uint64_t texels = uint64_t(w) * uint64_t(h);
  if (texels > *texelBudget)
    return Error{"decoding this " + std::to_string(w) + "x" + std::to_string(h) +
                 " image would exceed the scene's limit of " + std::to_string(kMaxSceneTexels) +
                 " texels in all images"};
  *texelBudget -= texels;
  int w2 = 0, h2 = 0;
  stbi_uc* pixels = stbi_load_from_memory(bytes, int(size), &w2, &h2, &comp, 4);
  if (!pixels) {
    const char* why = stbi_failure_reason();
    return Error{std::string("cannot decode image (") + (why ? why : "unknown") + ")"};
  }
  std::unique_ptr<stbi_uc, void (*)(void*)> guard(pixels, &stbi_image_free);
  if (w2 != w || h2 != h) return Error{"image size changed while decoding"};
  SceneTexture t;
  t.width = uint32_t(w);
  t.height = uint32_t(h);
  std::vector<kernel::Rgba8> level0(size_t(w) * size_t(h));
  std::memcpy(level0.data(), pixels, level0.size() * 4);
  t.setTexels(std::move(level0));
  return t;
}

}  // namespace detail

namespace {

std::string lowerExtension(const std::string& path) {
  size_t dot = path.find_last_of('.');
  size_t slash = path.find_last_of('/');
  if (dot == std::string::npos || (slash != std::string::npos && dot < slash)) return "";
  std::string ext = path.substr(dot);
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return char(std::tolower(c)); });
  return ext;
}

void sanitize(EnvironmentMap& env) {
  for (kernel::Vec3f& t : env.texels) {
    if (!(t.x >= 0.0f) || !std::isfinite(t.x)) t.x = 0.0f;
    if (!(t.y >= 0.0f) || !std::isfinite(t.y)) t.y = 0.0f;
    if (!(t.z >= 0.0f) || !std::isfinite(t.z)) t.z = 0.0f;
  }
}

Result<EnvironmentMap> loadHdr(const std::string& path) {
  auto bytes = detail::readFile(path, kMaxSceneFileBytes);
  if (!bytes.ok()) return bytes.error();
  const std::vector<uint8_t>& b = *bytes;
  if (b.empty()) return Error{path + ": empty file"};
  if (b.size() > size_t(1) << 31) return Error{path + ": file larger than 2 GiB"};
  int w = 0, h = 0, comp = 0;
  if (!stbi_info_from_memory(b.data(), int(b.size()), &w, &h, &comp) ||
      !stbi_is_hdr_from_memory(b.data(), int(b.size()))) {
    const char* why = stbi_failure_reason();
    return Error{path + ": not a Radiance .hdr image (" + (why ? why : "unknown") + ")"};
  }
  if (w <= 0 || h <= 0 || uint32_t(w) > kMaxEnvironmentDimension ||
      uint32_t(h) > kMaxEnvironmentDimension)
    return Error{path + ": environment map of " + std::to_string(w) + "x" + std::to_string(h) +
                 " pixels is beyond the limit of " + std::to_string(kMaxEnvironmentDimension)};
  int w2 = 0, h2 = 0;
  float* data = stbi_loadf_from_memory(b.data(), int(b.size()), &w2, &h2, &comp, 3);
  if (!data) {
    const char* why = stbi_failure_reason();
    return Error{path + ": cannot decode (" + (why ? why : "unknown") + ")"};
  }
  std::unique_ptr<float, void (*)(void*)> guard(data, &stbi_image_free);
  if (w2 != w || h2 != h) return Error{path + ": image size changed while decoding"};
  EnvironmentMap env;
  env.width = uint32_t(w);
  env.height = uint32_t(h);
  env.texels.resize(size_t(w) * size_t(h));
  std::memcpy(env.texels.data(), data, env.texels.size() * sizeof(kernel::Vec3f));
  sanitize(env);
  return env;
}

Result<EnvironmentMap> loadExr(const std::string& path) {
  try {
    Imf::InputFile file(path.c_str());
    const Imf::Header& header = file.header();
    Imath::Box2i dw = header.dataWindow();
    int64_t w = int64_t(dw.max.x) - dw.min.x + 1;
    int64_t h = int64_t(dw.max.y) - dw.min.y + 1;
    if (w <= 0 || h <= 0 || w > kMaxEnvironmentDimension || h > kMaxEnvironmentDimension)
      return Error{path + ": environment map of " + std::to_string(w) + "x" + std::to_string(h) +
                   " pixels is beyond the limit of " + std::to_string(kMaxEnvironmentDimension)};
    const Imf::ChannelList& channels = header.channels();
    bool rgb = channels.findChannel("R") && channels.findChannel("G") && channels.findChannel("B");
    bool luminance = channels.findChannel("Y") != nullptr;
    if (!rgb && !luminance) return Error{path + ": EXR has neither R, G, B nor Y channels"};
    EnvironmentMap env;
    env.width = uint32_t(w);
    env.height = uint32_t(h);
    env.texels.assign(size_t(w) * size_t(h), kernel::Vec3f{0, 0, 0});
    Imf::FrameBuffer fb;
    char* base = reinterpret_cast<char*>(env.texels.data());
    const size_t xs = sizeof(kernel::Vec3f), ys = xs * size_t(w);
    if (rgb) {
      fb.insert("R", Imf::Slice::Make(Imf::FLOAT, base, dw, xs, ys));
      fb.insert("G", Imf::Slice::Make(Imf::FLOAT, base + 4, dw, xs, ys));
      fb.insert("B", Imf::Slice::Make(Imf::FLOAT, base + 8, dw, xs, ys));
    } else {
      fb.insert("Y", Imf::Slice::Make(Imf::FLOAT, base, dw, xs, ys));
    }
    file.setFrameBuffer(fb);
    file.readPixels(dw.min.y, dw.max.y);
    if (!rgb)
      for (kernel::Vec3f& t : env.texels) t.y = t.z = t.x;
    sanitize(env);
    return env;
  } catch (const std::exception& e) {
    return Error{path + ": cannot read EXR (" + e.what() + ")"};
  }
}

}  // namespace

Result<Scene> loadScene(const std::string& path) {
  std::string ext = lowerExtension(path);
  try {
    if (ext == ".gltf" || ext == ".glb" || ext == ".obj") {
      Result<Scene> scene =
          ext == ".obj" ? detail::loadObj(path) : detail::loadGltf(path, ext == ".glb");
      if (!scene.ok()) return scene;
      for (const std::string& w : scene->warnings) PL_LOG_WARN("%s: %s", path.c_str(), w.c_str());
      if (scene->triangleCount() == 0)
        return Error{path + ": the scene has no geometry (no triangles to render)"};
      return scene;
    }
  } catch (const std::bad_alloc&) {
    return Error{path + ": out of memory while loading"};
  } catch (const std::exception& e) {
    return Error{path + ": " + e.what()};
  }
  return Error{path + ": unsupported scene format '" + ext + "' (use .gltf, .glb or .obj)"};
}

Result<EnvironmentMap> loadEnvironmentMap(const std::string& path) {
  std::string ext = lowerExtension(path);
  try {
    if (ext == ".hdr") return loadHdr(path);
    if (ext == ".exr") return loadExr(path);
  } catch (const std::bad_alloc&) {
    return Error{path + ": out of memory while loading"};
  } catch (const std::exception& e) {
    return Error{path + ": " + e.what()};
  }
  return Error{path + ": unsupported environment map format '" + ext + "' (use .hdr or .exr)"};
}

}  // namespace pl
