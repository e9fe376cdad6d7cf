#include "transport/derived_arrays.h"

#include <string>

#include "core/scene/texture_mips.h"

namespace pl {

Status deriveArrays(const ChunkManifest& manifest, RenderData& data) {
  writeMipTexels(data);
  return checkDerivedArrays(manifest, data);
}

Status checkDerivedArrays(const ChunkManifest& manifest, const RenderData& data) {
  const RenderDataArray which = RenderDataArray::mipTexels;
  const RenderData::Bytes bytes = data.arrayBytes(which);
  uint64_t offset = 0;
  for (const ChunkRef& ref : manifest.arrays[static_cast<uint32_t>(which)].chunks) {
    if (offset + ref.rawBytes > bytes.size ||
        hash128(bytes.data + offset, ref.rawBytes) != ref.hash)
      return Error{std::string("array ") + renderDataArrayName(which) + ": chunk " +
                   ref.hash.hex() + " differs from the one computed here from the textures " +
                   "(the sender's mip levels are not this build's)"};
    offset += ref.rawBytes;
  }
  return Status();
}

}  // namespace pl
