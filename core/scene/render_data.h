#pragma once
// RenderData: the compiled, flat, pointer-free form of a scene that devices render and that
// travels between machines. Its arrays are listed once, in core/kernel/render_data_arrays.h.
//
// Values, not resources: a RenderData is built once (compile()) or decoded once
// (deserialize()), then shared read-only as std::shared_ptr<const RenderData>.

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "core/kernel/render_data_arrays.h"
#include "core/kernel/scene_view.h"
#include "core/util/hash.h"
#include "core/util/status.h"

namespace pl {

// Index of each array in the X-macro list, for naming arrays in chunks and manifests.
enum class RenderDataArray : uint32_t {
#define PL_RD_ENUM(Type, name) name,
  PL_RENDER_DATA_ARRAYS(PL_RD_ENUM)
#undef PL_RD_ENUM
      kCount
};
constexpr uint32_t kRenderDataArrayCount = static_cast<uint32_t>(RenderDataArray::kCount);
// The arrays a BVH is built from (RenderData::validateGeometry() checks them alone).
constexpr RenderDataArray kGeometryArrays[] = {RenderDataArray::positions, RenderDataArray::triangles,
                                               RenderDataArray::meshes};

// Upper bounds for data that may arrive from the network or from a scene file, checked
// before allocating.
constexpr uint64_t kMaxRenderDataArrayBytes = uint64_t(4) << 30;  // 4 GiB per array
constexpr uint64_t kMaxRenderDataBytes = uint64_t(16) << 30;      // 16 GiB in all
constexpr uint32_t kMaxImageDimension = 32768;

struct RenderData {
#define PL_RD_FIELD(Type, name) std::vector<Type> name;
  PL_RENDER_DATA_ARRAYS(PL_RD_FIELD)
#undef PL_RD_FIELD

  // A view of this data for the CPU kernel (valid while *this lives and is not modified).
  kernel::SceneView view() const;

  // Total bytes of all arrays.
  uint64_t byteSize() const;

  // XXH3-128 of each array's bytes, in list order.
  std::array<Hash128, kRenderDataArrayCount> arrayHashes() const;

  // Byte view of one array (for chunking and hashing).
  struct Bytes {
    const uint8_t* data;
    uint64_t size;
    uint32_t elementSize;
  };
  Bytes arrayBytes(RenderDataArray which) const;

  // Checks every cross-reference (vertex and material indices, texture indices and texel
  // ranges, light and env table sizes, exactly one camera and globals, sane image size), so
  // that the kernel can trust the data. Data from the network must pass this before use.
  Status validate() const;
  // The part of validate() that the geometry arrays (kGeometryArrays) pass alone: their
  // counts, positions finite, triangles' vertices in range, meshes consistent. Reads nothing
  // of the other arrays (not even their sizes), so it may run while they are being sized and
  // filled.
  Status validateGeometry() const;
};

// The meshes as devices build their acceleration structures from them (render/embree_tracer.h,
// render/bvh_builder.h): RenderData::meshes, or one static mesh of everything when none are
// listed; with more than kernel::kMaxDynamicMeshes dynamic meshes, all taken as static.
std::vector<kernel::MeshRange> structureMeshes(const RenderData& data);

// The texture checks of RenderData::validate(), for texels and mipTexels arrays of these sizes:
// each texture's size, levels, filter modes and level 0's range, and the levels below 0 of each
// following the last's to fill mipTexels exactly (texture_mips.h computes them into place).
Status validateTextures(std::span<const kernel::Texture> textures, uint64_t texelCount,
                        uint64_t mipTexelCount);

// The camera checks of RenderData::validate(): a sane image size and type, finite vectors, a
// positive field of view (errors start with "render data: ").
Status validateCamera(const kernel::Camera& camera);

const char* renderDataArrayName(RenderDataArray which);
uint32_t renderDataElementSize(RenderDataArray which);

// Whole-RenderData serialization: a small header and every array with its element size and
// count. deserialize() bounds every size before allocating and validates the result.
std::vector<uint8_t> serialize(const RenderData& data);
Result<RenderData> deserialize(const uint8_t* bytes, size_t size);

}  // namespace pl
