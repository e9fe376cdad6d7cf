#include "transport/protocol_convert.h"

#include <string>

#include "transport/tile_codec.h"

namespace pl {

void toProto(const Hash128& hash, proto::Hash128::Builder out) {
  out.setLo(hash.lo);
  out.setHi(hash.hi);
}

Hash128 fromProto(proto::Hash128::Reader in) { return Hash128{in.getLo(), in.getHi()}; }

void toProto(const std::vector<Hash128>& hashes, capnp::List<proto::Hash128>::Builder out) {
  PL_CHECK(out.size() == hashes.size());
  for (size_t i = 0; i < hashes.size(); ++i) toProto(hashes[i], out[uint32_t(i)]);
}

Result<std::vector<Hash128>> fromProto(capnp::List<proto::Hash128>::Reader in,
                                       uint32_t maxCount) {
  if (in.size() > maxCount) {
    return Error{"hash list: " + std::to_string(in.size()) + " hashes, more than the limit of " +
                 std::to_string(maxCount)};
  }
  std::vector<Hash128> hashes;
  hashes.reserve(in.size());
  for (auto h : in) hashes.push_back(fromProto(h));
  return hashes;
}

void toProto(const WorkUnit& unit, proto::WorkUnit::Builder out) {
  out.setX(unit.tile.x);
  out.setY(unit.tile.y);
  out.setWidth(unit.tile.width);
  out.setHeight(unit.tile.height);
  out.setSampleBegin(unit.sampleBegin);
  out.setSampleEnd(unit.sampleEnd);
  out.setTotalSamples(unit.totalSamples);
}

WorkUnit fromProto(proto::WorkUnit::Reader in) {
  WorkUnit unit;
  unit.tile = Rect{in.getX(), in.getY(), in.getWidth(), in.getHeight()};
  unit.sampleBegin = in.getSampleBegin();
  unit.sampleEnd = in.getSampleEnd();
  unit.totalSamples = in.getTotalSamples();
  return unit;
}

void toProto(const DeviceInfo& info, proto::DeviceInfo::Builder out) {
  out.setKind(info.kind == "cuda" ? proto::DeviceKind::CUDA : proto::DeviceKind::CPU);
  out.setName(info.name);
  out.setMemoryBytes(info.memoryBytes);
  out.setThreads(info.threads);
  out.setComputeMajor(uint32_t(info.computeMajor));
  out.setComputeMinor(uint32_t(info.computeMinor));
}

DeviceInfo fromProto(proto::DeviceInfo::Reader in) {
  DeviceInfo info;
  switch (in.getKind()) {
    case proto::DeviceKind::CPU:
      info.kind = "cpu";
      break;
    case proto::DeviceKind::CUDA:
      info.kind = "cuda";
      break;
    default:
      info.kind = "unknown";
      break;
  }
  // Names are for display; cap them so a hostile peer cannot make us hold megabytes per device.
  capnp::Text::Reader name = in.getName();
  info.name = std::string(name.cStr(), std::min<size_t>(name.size(), 256));
  info.memoryBytes = in.getMemoryBytes();
  info.threads = in.getThreads();
  info.computeMajor = int(std::min<uint32_t>(in.getComputeMajor(), 1000));
  info.computeMinor = int(std::min<uint32_t>(in.getComputeMinor(), 1000));
  return info;
}

void toProto(const ChunkManifest& manifest, proto::Manifest::Builder out) {
  auto arrays = out.initArrays(uint32_t(manifest.arrays.size()));
  for (size_t a = 0; a < manifest.arrays.size(); ++a) {
    const ArrayManifest& in = manifest.arrays[a];
    auto array = arrays[uint32_t(a)];
    array.setElementSize(in.elementSize);
    array.setElementCount(in.elementCount);
    auto chunks = array.initChunks(uint32_t(in.chunks.size()));
    for (size_t c = 0; c < in.chunks.size(); ++c) {
      auto chunk = chunks[uint32_t(c)];
      toProto(in.chunks[c].hash, chunk.initHash());
      chunk.setRawBytes(in.chunks[c].rawBytes);
      chunk.setEncodedBytes(in.chunks[c].encodedBytes);
    }
  }
}

Result<ChunkManifest> fromProto(proto::Manifest::Reader in) {
  auto arrays = in.getArrays();
  if (arrays.size() != kRenderDataArrayCount) {
    return Error{"manifest: " + std::to_string(arrays.size()) + " arrays, expected " +
                 std::to_string(kRenderDataArrayCount)};
  }
  // Count before allocating anything.
  uint64_t totalChunks = 0;
  for (auto array : arrays) totalChunks += array.getChunks().size();
  if (totalChunks > kMaxManifestChunks) {
    return Error{"manifest: " + std::to_string(totalChunks) +
                 " chunk references, more than the limit of " +
                 std::to_string(kMaxManifestChunks)};
  }
  ChunkManifest manifest;
  for (uint32_t a = 0; a < kRenderDataArrayCount; ++a) {
    auto array = arrays[a];
    ArrayManifest& out = manifest.arrays[a];
    out.elementSize = array.getElementSize();
    out.elementCount = array.getElementCount();
    auto chunks = array.getChunks();
    out.chunks.reserve(chunks.size());
    for (auto chunk : chunks) {
      out.chunks.push_back(
          ChunkRef{fromProto(chunk.getHash()), chunk.getRawBytes(), chunk.getEncodedBytes()});
    }
  }
  Status valid = manifest.validate();
  if (!valid.ok()) return Error{"manifest: " + valid.error().message};
  return manifest;
}

Hash128 sceneIdOf(const ChunkManifest& manifest) {
  std::vector<uint8_t> bytes = serializeManifest(manifest);
  return hash128(bytes.data(), bytes.size());
}

void toProto(const WorkUnit& unit, const std::vector<uint8_t>& encodedSums, uint64_t raysTraced,
             double renderMs, proto::TileResult::Builder out) {
  toProto(unit, out.initUnit());
  out.setSums(kj::arrayPtr(encodedSums.data(), encodedSums.size()));
  out.setRaysTraced(raysTraced);
  out.setRenderMs(renderMs);
}

void toProto(const TileResult& result, double renderMs, proto::TileResult::Builder out,
             int zstdLevel) {
  toProto(result.unit, encodeTileResult(result, zstdLevel), result.raysTraced, renderMs, out);
}

Result<TileResult> fromProto(proto::TileResult::Reader in, uint64_t maxPixels) {
  WorkUnit unit = fromProto(in.getUnit());
  capnp::Data::Reader sums = in.getSums();
  Result<TileResult> result = decodeTileResult(sums.begin(), sums.size(), maxPixels);
  if (!result.ok()) return result;
  if (!(result->unit == unit)) {
    return Error{"tile result for " + unit.describe() + ": its sums are for " +
                 result->unit.describe()};
  }
  return result;
}

}  // namespace pl
