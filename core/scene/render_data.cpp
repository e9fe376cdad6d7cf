#include "core/scene/render_data.h"

#include <cstring>
#include <type_traits>

namespace pl {

#define PL_RD_TRIVIAL(Type, name) \
  static_assert(std::is_trivially_copyable_v<Type>, #name " must be trivially copyable");
PL_RENDER_DATA_ARRAYS(PL_RD_TRIVIAL)
#undef PL_RD_TRIVIAL

namespace {
constexpr uint32_t kMagic = 0x44524c50;  // "PLRD"
constexpr uint32_t kFormatVersion = 2;  // 2: mipTexels

template <typename T>
RenderData::Bytes bytesOf(const std::vector<T>& v) {
  return {reinterpret_cast<const uint8_t*>(v.data()), uint64_t(v.size()) * sizeof(T),
          uint32_t(sizeof(T))};
}
}  // namespace

const char* renderDataArrayName(RenderDataArray which) {
  switch (which) {
#define PL_RD_NAME(Type, name) \
  case RenderDataArray::name:  \
    return #name;
    PL_RENDER_DATA_ARRAYS(PL_RD_NAME)
#undef PL_RD_NAME
    default:
      return "unknown";
  }
}

uint32_t renderDataElementSize(RenderDataArray which) {
  switch (which) {
#define PL_RD_SIZE(Type, name) \
  case RenderDataArray::name:  \
    return sizeof(Type);
    PL_RENDER_DATA_ARRAYS(PL_RD_SIZE)
#undef PL_RD_SIZE
    default:
      return 0;
  }
}

kernel::SceneView RenderData::view() const {
  kernel::SceneView v{};
#define PL_RD_VIEW(Type, name) \
  v.name = name.data();        \
  v.name##Count = static_cast<uint32_t>(name.size());
  PL_RENDER_DATA_ARRAYS(PL_RD_VIEW)
#undef PL_RD_VIEW
  return v;
}

RenderData::Bytes RenderData::arrayBytes(RenderDataArray which) const {
  switch (which) {
#define PL_RD_BYTES(Type, name) \
  case RenderDataArray::name:   \
    return bytesOf(name);
    PL_RENDER_DATA_ARRAYS(PL_RD_BYTES)
#undef PL_RD_BYTES
    default:
      PL_CHECK(false);
  }
  return {};
}

uint64_t RenderData::byteSize() const {
  uint64_t total = 0;
  for (uint32_t i = 0; i < kRenderDataArrayCount; ++i)
    total += arrayBytes(static_cast<RenderDataArray>(i)).size;
  return total;
}

std::array<Hash128, kRenderDataArrayCount> RenderData::arrayHashes() const {
  std::array<Hash128, kRenderDataArrayCount> out;
  for (uint32_t i = 0; i < kRenderDataArrayCount; ++i) {
    Bytes b = arrayBytes(static_cast<RenderDataArray>(i));
    out[i] = hash128(b.data, b.size);
  }
  return out;
}

std::vector<kernel::MeshRange> structureMeshes(const RenderData& data) {
  std::vector<kernel::MeshRange> meshes = data.meshes;
  if (meshes.empty())
    meshes.push_back({0, uint32_t(data.triangles.size()), 0, uint32_t(data.positions.size()), 0});
  size_t dynamicCount = 0;
  for (const kernel::MeshRange& m : meshes) dynamicCount += (m.flags & kernel::kMeshDynamic) != 0;
  if (dynamicCount > kernel::kMaxDynamicMeshes)
    for (kernel::MeshRange& m : meshes) m.flags &= ~uint32_t(kernel::kMeshDynamic);
  return meshes;
}

std::vector<uint8_t> serialize(const RenderData& data) {
  std::vector<uint8_t> out;
  auto put = [&out](const void* p, size_t n) {
    if (n == 0) return;
    const uint8_t* b = static_cast<const uint8_t*>(p);
    out.insert(out.end(), b, b + n);
  };
  out.reserve(16 + data.byteSize() + kRenderDataArrayCount * 16);
  uint32_t header[3] = {kMagic, kFormatVersion, kRenderDataArrayCount};
  put(header, sizeof header);
  for (uint32_t i = 0; i < kRenderDataArrayCount; ++i) {
    RenderData::Bytes b = data.arrayBytes(static_cast<RenderDataArray>(i));
    uint64_t count = b.size / b.elementSize;
    put(&b.elementSize, 4);
    put(&count, 8);
    put(b.data, b.size);
  }
  return out;
}

Result<RenderData> deserialize(const uint8_t* bytes, size_t size) {
  size_t pos = 0;
  auto take = [&](void* dst, size_t n) {
    if (size - pos < n) return false;
    if (n == 0) return true;  // dst may be null (an empty vector): memcpy forbids that
    std::memcpy(dst, bytes + pos, n);
    pos += n;
    return true;
  };
  uint32_t header[3];
  if (!take(header, sizeof header)) return Error{"render data: truncated header"};
  if (header[0] != kMagic) return Error{"render data: bad magic"};
  if (header[1] != kFormatVersion)
    return Error{"render data: format version " + std::to_string(header[1]) + ", expected " +
                 std::to_string(kFormatVersion)};
  if (header[2] != kRenderDataArrayCount)
    return Error{"render data: " + std::to_string(header[2]) + " arrays, expected " +
                 std::to_string(kRenderDataArrayCount)};
  RenderData data;
  uint64_t total = 0;
  auto readArray = [&](auto& vec, RenderDataArray which) -> Status {
    using T = typename std::decay_t<decltype(vec)>::value_type;
    const char* name = renderDataArrayName(which);
    uint32_t elementSize;
    uint64_t count;
    if (!take(&elementSize, 4) || !take(&count, 8))
      return Error{std::string("render data: truncated header of array ") + name};
    if (elementSize != sizeof(T))
      return Error{std::string("render data: array ") + name + " has element size " +
                   std::to_string(elementSize) + ", expected " + std::to_string(sizeof(T))};
    if (count > kMaxRenderDataArrayBytes / sizeof(T))
      return Error{std::string("render data: array ") + name + " declares an absurd count " +
                   std::to_string(count)};
    uint64_t n = count * sizeof(T);
    total += n;
    if (total > kMaxRenderDataBytes) return Error{"render data: total size beyond limit"};
    if (size - pos < n)
      return Error{std::string("render data: array ") + name + " is truncated"};
    vec.resize(count);
    take(vec.data(), n);
    return Status();
  };
#define PL_RD_READ(Type, name)                                       \
  if (Status s = readArray(data.name, RenderDataArray::name); !s.ok()) \
    return s.error();
  PL_RENDER_DATA_ARRAYS(PL_RD_READ)
#undef PL_RD_READ
  if (pos != size) return Error{"render data: trailing bytes after the last array"};
  if (Status s = data.validate(); !s.ok()) return s.error();
  return data;
}

}  // namespace pl
