#include "core/scene/compiled_cache.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

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

// A scene input (the user's own files; the key only hashes them).
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
    // OBJ: the material libraries and texture maps it reads are only known to the loader
    // (paths inside .mtl files, subfolders): no key, so never a stale cache entry.
    return Error{scenePath + ": only glTF scenes are cached"};
  }
  if (!options.envFile.empty()) {
    if (Status s = addFile(options.envFile); !s.ok()) return s.error();
  }
  char buffer[512];
  std::snprintf(buffer, sizeof(buffer), "size %u %u seed %u depth %u passes %u camera %zu:",
                options.width, options.height, options.seed, options.maxDepth, options.passes,
                options.camera.size());
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

// The cache folder, when it is safe to use: a real folder (not a link) owned by this user that
// nobody else may enter. Created (mode 0700) when missing. Once unsafe, unused for the process.
bool CompiledCache::usable() {
  if (checked_) return usable_;
  checked_ = true;
  if (dir_.empty()) return usable_ = false;
  std::error_code ec;
  fs::create_directories(fs::path(dir_).parent_path(), ec);
  ::mkdir(dir_.c_str(), 0700);
  struct stat st {};
  if (::lstat(dir_.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != ::geteuid() ||
      (st.st_mode & 077) != 0) {
    PL_LOG_WARN("compiled cache %s: not a folder of this user's that only it may use; not "
                "caching",
                dir_.c_str());
    return usable_ = false;
  }
  return usable_ = true;
}

namespace {

// A read-only private mapping of a whole file.
struct Mapping {
  void* address = MAP_FAILED;
  size_t size = 0;
  ~Mapping() {
    if (address != MAP_FAILED) ::munmap(address, size);
  }
};

}  // namespace

std::optional<CachedBytes> CompiledCache::find(const Hash128& key) {
  if (!usable()) return std::nullopt;
  const std::string file = path(key);
  // Never through a link, only a regular file of this user's, bounded before mapping.
  const int fd = ::open(file.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  struct stat st {};
  auto mapping = std::make_shared<Mapping>();
  const bool ok = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == ::geteuid() &&
                  uint64_t(st.st_size) > sizeof(Hash128) &&
                  uint64_t(st.st_size) <= kMaxRenderDataBytes + (uint64_t(1) << 20);
  if (ok) {
    mapping->size = size_t(st.st_size);
    mapping->address = ::mmap(nullptr, mapping->size, PROT_READ, MAP_PRIVATE, fd, 0);
  }
  ::close(fd);
  if (mapping->address == MAP_FAILED) return std::nullopt;
  // 16 bytes of XXH3-128 of the rest, then the caller's bytes.
  const auto* bytes = static_cast<const uint8_t*>(mapping->address);
  Hash128 stored;
  std::memcpy(&stored, bytes, sizeof stored);
  const std::span<const uint8_t> payload(bytes + sizeof stored, mapping->size - sizeof stored);
  if (!(hash128(payload.data(), payload.size()) == stored)) {
    PL_LOG_WARN("compiled cache %s: its bytes do not match their hash (removed)", file.c_str());
    ::unlink(file.c_str());
    return std::nullopt;
  }
  std::error_code ec;
  fs::last_write_time(file, fs::file_time_type::clock::now(), ec);  // recently used
  return CachedBytes{std::move(mapping), payload};
}

void CompiledCache::remove(const Hash128& key, const std::string& why) {
  if (!usable()) return;
  PL_LOG_WARN("compiled cache %s: %s (removed)", path(key).c_str(), why.c_str());
  ::unlink(path(key).c_str());
}

void CompiledCache::store(const Hash128& key, std::span<const uint8_t> bytes) {
  if (maxBytes_ == 0 || !usable()) return;
  if (bytes.size() + sizeof(Hash128) > maxBytes_) return;
  const std::string file = path(key);
  std::string temp = file + ".XXXXXX";
  const int fd = ::mkstemp(temp.data());  // mode 0600, a fresh name
  if (fd < 0) {
    PL_LOG_WARN("compiled cache: cannot create a file in %s", dir_.c_str());
    return;
  }
  const Hash128 hash = hash128(bytes.data(), bytes.size());
  auto writeAll = [fd](const void* data, size_t size) {
    const auto* p = static_cast<const uint8_t*>(data);
    while (size > 0) {
      const ssize_t n = ::write(fd, p, size);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      p += n;
      size -= size_t(n);
    }
    return true;
  };
  const bool written = writeAll(&hash, sizeof hash) && writeAll(bytes.data(), bytes.size());
  ::close(fd);
  if (!written || ::rename(temp.c_str(), file.c_str()) != 0) {
    PL_LOG_WARN("compiled cache: cannot store %s", file.c_str());
    ::unlink(temp.c_str());
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
