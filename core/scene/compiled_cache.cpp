#include "core/scene/compiled_cache.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <vector>

#include "core/util/log.h"

namespace pl {

namespace fs = std::filesystem;

namespace {

Result<std::vector<uint8_t>> readAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Error{path + ": cannot be read"};
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                             std::istreambuf_iterator<char>());
  return bytes;
}

std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// URIs of external files in a glTF JSON document (buffers and images; data: URIs are inside
// the document already). Percent-escapes are decoded as tinygltf does.
std::vector<std::string> gltfFileUris(const nlohmann::json& document) {
  std::vector<std::string> uris;
  for (const char* kind : {"buffers", "images"}) {
    auto it = document.find(kind);
    if (it == document.end() || !it->is_array()) continue;
    for (const auto& entry : *it) {
      if (!entry.is_object() || !entry.contains("uri") || !entry["uri"].is_string()) continue;
      std::string uri = entry["uri"].get<std::string>();
      if (uri.rfind("data:", 0) == 0) continue;
      std::string decoded;
      for (size_t i = 0; i < uri.size(); ++i) {
        if (uri[i] == '%' && i + 2 < uri.size()) {
          decoded += char(std::strtol(uri.substr(i + 1, 2).c_str(), nullptr, 16));
          i += 2;
        } else {
          decoded += uri[i];
        }
      }
      uris.push_back(decoded);
    }
  }
  return uris;
}

// The JSON chunk of a GLB file (12-byte header, then chunk 0: length, "JSON", bytes).
nlohmann::json glbJson(const std::vector<uint8_t>& bytes) {
  if (bytes.size() < 20 || std::memcmp(bytes.data(), "glTF", 4) != 0) return nullptr;
  uint32_t length = 0;
  std::memcpy(&length, bytes.data() + 12, 4);
  if (std::memcmp(bytes.data() + 16, "JSON", 4) != 0 || uint64_t(length) + 20 > bytes.size())
    return nullptr;
  return nlohmann::json::parse(bytes.begin() + 20, bytes.begin() + 20 + length, nullptr, false);
}

}  // namespace

std::string defaultCompiledCacheDir() {
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg != nullptr && *xdg == '/')
    return std::string(xdg) + "/peerlight/compiled";
  if (const char* home = std::getenv("HOME"); home != nullptr && *home == '/')
    return std::string(home) + "/.cache/peerlight/compiled";
  return "";
}

Result<Hash128> compiledCacheKey(const std::string& scenePath, const CompileOptions& options,
                                 const Hash128& salt) {
  // "name hash" lines for every input, then the options: hashed together.
  std::string inputs = "peerlight compiled cache 1\n" + salt.hex() + "\n";
  auto addFile = [&](const std::string& path) -> Status {
    Result<std::vector<uint8_t>> bytes = readAll(path);
    if (!bytes.ok()) return bytes.error();
    inputs += path + " " + hash128(bytes->data(), bytes->size()).hex() + "\n";
    return Status();
  };
  Result<std::vector<uint8_t>> scene = readAll(scenePath);
  if (!scene.ok()) return scene.error();
  inputs += scenePath + " " + hash128(scene->data(), scene->size()).hex() + "\n";
  const fs::path dir = fs::path(scenePath).parent_path();
  const std::string ext = lower(fs::path(scenePath).extension().string());
  if (ext == ".gltf" || ext == ".glb") {
    nlohmann::json document =
        ext == ".glb" ? glbJson(*scene)
                      : nlohmann::json::parse(scene->begin(), scene->end(), nullptr, false);
    if (document.is_object()) {
      for (const std::string& uri : gltfFileUris(document)) {
        if (Status s = addFile((dir / uri).string()); !s.ok()) return s.error();
      }
    }
  } else {
    // OBJ: material libraries and texture maps by any name in the scene's folder.
    std::error_code ec;
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(dir.empty() ? "." : dir, ec)) {
      const std::string e = lower(entry.path().extension().string());
      if (entry.is_regular_file(ec) &&
          (e == ".mtl" || e == ".png" || e == ".jpg" || e == ".jpeg" || e == ".tga" ||
           e == ".bmp" || e == ".hdr" || e == ".exr"))
        names.push_back(entry.path().string());
    }
    std::sort(names.begin(), names.end());
    for (const std::string& name : names) {
      if (Status s = addFile(name); !s.ok()) return s.error();
    }
  }
  if (!options.envFile.empty()) {
    if (Status s = addFile(options.envFile); !s.ok()) return s.error();
  }
  char buffer[512];
  std::snprintf(buffer, sizeof(buffer), "size %u %u seed %u depth %u camera %zu:", options.width,
                options.height, options.seed, options.maxDepth, options.camera.size());
  inputs += buffer + options.camera + "\n";
  if (options.envColor) {
    std::snprintf(buffer, sizeof(buffer), "env %a %a %a\n", options.envColor->x,
                  options.envColor->y, options.envColor->z);
    inputs += buffer;
  }
  if (options.lookAt) {
    const LookAt& l = *options.lookAt;
    std::snprintf(buffer, sizeof(buffer), "look %a %a %a %a %a %a %a %a %a %a\n", l.eye.x, l.eye.y,
                  l.eye.z, l.target.x, l.target.y, l.target.z, l.up.x, l.up.y, l.up.z,
                  l.yfovDegrees);
    inputs += buffer;
  }
  return hash128(inputs.data(), inputs.size());
}

CompiledCache::CompiledCache(std::string dir, uint64_t maxBytes)
    : dir_(std::move(dir)), maxBytes_(maxBytes) {}

std::string CompiledCache::path(const Hash128& key) const {
  return dir_ + "/" + key.hex() + ".plrd";
}

std::optional<RenderData> CompiledCache::find(const Hash128& key) {
  if (dir_.empty()) return std::nullopt;
  const std::string file = path(key);
  Result<std::vector<uint8_t>> bytes = readAll(file);
  if (!bytes.ok()) return std::nullopt;
  // 16 bytes of XXH3-128 of the rest, then serialize()'s bytes.
  Result<RenderData> data = Error{"shorter than its hash"};
  if (bytes->size() >= sizeof(Hash128)) {
    Hash128 stored;
    std::memcpy(&stored, bytes->data(), sizeof stored);
    const uint8_t* payload = bytes->data() + sizeof stored;
    const size_t size = bytes->size() - sizeof stored;
    if (!(hash128(payload, size) == stored)) data = Error{"its bytes do not match their hash"};
    else data = deserialize(payload, size);
  }
  if (!data.ok()) {
    PL_LOG_WARN("compiled cache %s: %s (removed)", file.c_str(), data.error().message.c_str());
    std::error_code ec;
    fs::remove(file, ec);
    return std::nullopt;
  }
  std::error_code ec;
  fs::last_write_time(file, fs::file_time_type::clock::now(), ec);  // recently used
  return std::move(data).value();
}

void CompiledCache::store(const Hash128& key, const RenderData& data) {
  if (dir_.empty() || maxBytes_ == 0) return;
  std::error_code ec;
  fs::create_directories(dir_, ec);
  ::chmod(dir_.c_str(), 0700);
  const std::vector<uint8_t> bytes = serialize(data);
  if (bytes.size() > maxBytes_) return;
  const std::string file = path(key);
  const std::string temp = file + ".tmp" + std::to_string(::getpid());
  {
    const Hash128 hash = hash128(bytes.data(), bytes.size());
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(&hash), sizeof hash);
    out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
    if (!out) {
      PL_LOG_WARN("compiled cache: cannot write %s", temp.c_str());
      fs::remove(temp, ec);
      return;
    }
  }
  fs::rename(temp, file, ec);
  if (ec) {
    PL_LOG_WARN("compiled cache: cannot store %s: %s", file.c_str(), ec.message().c_str());
    fs::remove(temp, ec);
    return;
  }
  evict();
}

void CompiledCache::evict() {
  struct Entry {
    fs::path path;
    fs::file_time_type used;
    uint64_t bytes;
  };
  std::vector<Entry> entries;
  uint64_t total = 0;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    if (entry.path().extension() != ".plrd" || !entry.is_regular_file(ec)) continue;
    Entry e{entry.path(), entry.last_write_time(ec), entry.file_size(ec)};
    total += e.bytes;
    entries.push_back(std::move(e));
  }
  std::sort(entries.begin(), entries.end(),
            [](const Entry& a, const Entry& b) { return a.used < b.used; });
  for (const Entry& e : entries) {
    if (total <= maxBytes_) break;
    fs::remove(e.path, ec);
    total -= e.bytes;
  }
}

}  // namespace pl
