#pragma once
// Conversions between the wire structs of transport/protocol.capnp (pl::proto) and peerlight's
// own types. Everything read from a peer is bounded and checked before memory is allocated:
// list lengths are compared with limits first, and the results are validated (a manifest with
// ChunkManifest::validate(), a tile result with the tile codec's checks). Errors are pl::Error
// messages naming what is wrong; readers never throw for bad input.
//
// Writers (toProto) fill a builder the caller got from a request or a reply; they never fail.
// Threads: free functions, thread-safe (a builder or reader belongs to one thread anyway).

#include <cstdint>
#include <vector>

#include "core/render/device.h"
#include "core/render/work_unit.h"
#include "core/util/hash.h"
#include "core/util/status.h"
#include "transport/chunk_codec.h"
#include "transport/tile_codec.h"
#include "transport/protocol.capnp.h"

namespace pl {

// The protocol version this build speaks (protocol.capnp's protocolVersion).
constexpr uint32_t kProtocolVersion = proto::PROTOCOL_VERSION;

// Limits on what one message may carry (the node checks them; a Primary should respect them).
constexpr uint32_t kMaxHashesPerCall = 1000000;    // RenderSession.missing()
constexpr uint32_t kMaxManifestChunks = 1u << 20;  // chunk references in one manifest, all arrays
constexpr uint32_t kMaxDevicesPerNode = 1024;      // NodeInfo.devices, LeaseRequest.devices

// Whether bytes may go into a message by reference (Orphanage::referenceExternalData) rather
// than copied: Cap'n Proto writes whole words, so it reads an external Data rounded up to a
// word. Only word-aligned bytes that are a whole number of words may be referenced; others would
// be read past their end (found by ./run test-asan).
inline bool referenceableBytes(const uint8_t* bytes, size_t size) {
  return reinterpret_cast<uintptr_t>(bytes) % sizeof(capnp::word) == 0 &&
         size % sizeof(capnp::word) == 0;
}

// --- Hash128 ---------------------------------------------------------------------------------
void toProto(const Hash128& hash, proto::Hash128::Builder out);
Hash128 fromProto(proto::Hash128::Reader in);

// A list of hashes (missing()). Fails when there are more than maxCount.
void toProto(const std::vector<Hash128>& hashes, capnp::List<proto::Hash128>::Builder out);
Result<std::vector<Hash128>> fromProto(capnp::List<proto::Hash128>::Reader in,
                                       uint32_t maxCount = kMaxHashesPerCall);

// --- WorkUnit --------------------------------------------------------------------------------
// Field for field; the reader does not check the unit against an image (WorkUnit::validate()).
void toProto(const WorkUnit& unit, proto::WorkUnit::Builder out);
WorkUnit fromProto(proto::WorkUnit::Reader in);

// --- DeviceInfo ------------------------------------------------------------------------------
// kind "cpu" / "cuda" <-> DeviceKind; ordinal does not travel (it is the node's business). An
// unknown kind reads as "unknown" (a newer peer may add kinds; the caller decides).
void toProto(const DeviceInfo& info, proto::DeviceInfo::Builder out);
DeviceInfo fromProto(proto::DeviceInfo::Reader in);

// --- Manifest --------------------------------------------------------------------------------
// Allocates out's lists itself (initArrays / initChunks).
void toProto(const ChunkManifest& manifest, proto::Manifest::Builder out);
// Fails unless there is exactly one entry per RenderData array, at most kMaxManifestChunks
// chunk references in all, and the result passes ChunkManifest::validate().
Result<ChunkManifest> fromProto(proto::Manifest::Reader in);

// The scene id a node gives a loaded manifest (RenderSession.load's reply, render()'s scene):
// XXH3-128 of serializeManifest(manifest). The Primary may compute it to check the reply.
Hash128 sceneIdOf(const ChunkManifest& manifest);

// --- TileResult ------------------------------------------------------------------------------
// Encodes result (sums via transport/tile_codec.h, zstd level zstdLevel) into out.
void toProto(const TileResult& result, double renderMs, proto::TileResult::Builder out,
             int zstdLevel = 1);
// The already-encoded form (a node encodes on its render thread and copies the bytes in).
void toProto(const WorkUnit& unit, const std::vector<uint8_t>& encodedSums, uint64_t raysTraced,
             double renderMs, proto::TileResult::Builder out);
// Decodes the sums (tile codec: sizes bounded by maxPixels before allocating, zstd checksum)
// and checks that the unit inside them equals the `unit` field. The caller still checks that
// the unit is the one it asked for.
Result<TileResult> fromProto(proto::TileResult::Reader in,
                             uint64_t maxPixels = kMaxTileResultPixels);

}  // namespace pl
