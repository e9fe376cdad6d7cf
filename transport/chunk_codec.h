#pragma once
// The chunk codec: RenderData as content-addressed, compressed chunks (docs/DESIGN.md section
// 3). Each array is cut into chunks of at most kMaxChunkBytes (whole elements), each chunk is
// named by the XXH3-128 of its raw bytes and compressed with zstd, after an optional
// byte-shuffle chosen per kind of array. A ChunkManifest lists, per array, its element count
// and its chunks in order: with a store of hash -> encoded chunk, that is all a node needs to
// rebuild the RenderData. A worker asks for the hashes it lacks (ChunkStore::missing), so a
// camera move resends one small chunk, not the scene.
//
// Encoded chunk = 4-byte header {format version 1, shuffle stride (0 = none), 0, 0} followed by
// exactly one zstd frame that declares its content size. The header makes a chunk decodable
// on its own, whichever array it was first encoded for (equal bytes in two arrays are one
// chunk).
//
// Everything that arrives from a peer (manifests, chunks) is bounded before allocating: a
// chunk's declared content size is checked against the manifest and kMaxChunkBytes, the frame
// must be complete and alone, and the decompressed bytes must hash to the chunk's name.
// Byte order: little-endian hosts only (as RenderData's own serialize()).
//
// Threads: free functions are thread-safe; a ChunkStore is not (one owner, or a lock).

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/scene/render_data.h"
#include "core/util/hash.h"
#include "core/util/status.h"

namespace pl {

constexpr uint32_t kMaxChunkBytes = 4u << 20;  // 4 MiB, raw, per chunk

struct Hash128Hasher {
  size_t operator()(const Hash128& h) const {
    return size_t(h.lo ^ (h.hi * 0x9e3779b97f4a7c15ull));
  }
};

// Arrays that no chunk carries: the manifest names their chunks (hash and raw size, encoded size
// 0), but they are never encoded, stored or sent; whoever decodes the data computes them from
// the rest and checks them against those hashes (transport/derived_arrays.h). mipTexels, a
// function of the textures' level 0, is 26% of Sponza's encoded bytes.
constexpr bool isDerivedArray(RenderDataArray which) {
  return which == RenderDataArray::mipTexels;
}

// How one chunk's bytes are coded.
struct ChunkCodec {
  int level = 1;  // zstd level
  // Byte-shuffle before compressing: 0 = none; k = split the bytes into k planes (byte j of
  // every k-byte word together); 4 turns float arrays into 4 byte planes.
  uint32_t shuffleStride = 0;
  bool operator==(const ChunkCodec&) const = default;
};

// The codec measured best for each array (see the table in chunk_codec.cpp).
ChunkCodec defaultChunkCodec(RenderDataArray which);

// Byte-shuffle helpers (also used by the tile codec). out and in hold `bytes` bytes and must
// not overlap; a tail of bytes % stride bytes is copied unchanged. stride <= 1: plain copy.
void byteShuffle(const uint8_t* in, uint8_t* out, size_t bytes, uint32_t stride);
void byteUnshuffle(const uint8_t* in, uint8_t* out, size_t bytes, uint32_t stride);

struct ChunkRef {
  Hash128 hash;               // XXH3-128 of the raw bytes: the chunk's name
  uint32_t rawBytes = 0;      // 1 .. kMaxChunkBytes, a whole number of elements
  uint32_t encodedBytes = 0;  // size of the encoded chunk (header + zstd frame)
  bool operator==(const ChunkRef&) const = default;
};

struct ArrayManifest {
  uint32_t elementSize = 0;  // must equal renderDataElementSize(array)
  uint64_t elementCount = 0;
  std::vector<ChunkRef> chunks;  // in order; their raw bytes concatenated are the array
  bool operator==(const ArrayManifest&) const = default;
};

struct ChunkManifest {
  std::array<ArrayManifest, kRenderDataArrayCount> arrays;  // in X-macro order

  // Checks consistency and bounds, as for a manifest from a peer: element sizes, array and
  // total sizes within kMaxRenderDataArrayBytes / kMaxRenderDataBytes, chunk sizes within
  // 1..kMaxChunkBytes and whole elements, chunk sizes adding up to each array's size.
  Status validate() const;

  uint64_t rawBytes() const;      // sum over chunk references (a repeated chunk counts again)
  uint64_t encodedBytes() const;  // idem, encoded
  // Distinct hashes of the chunks that are sent and stored (those of every array but the
  // derived ones), in first-use order.
  std::vector<Hash128> chunkHashes() const;
  // The same hashes in the order a Primary uploads them: first those of the arrays a BVH is
  // built from (kGeometryArrays), then the rest in first-use order. A node that decodes the
  // chunks as they come (RenderSession.prepare) builds its BVH while the rest is on the way.
  std::vector<Hash128> uploadOrder() const;
  bool operator==(const ChunkManifest&) const = default;
};

// Manifest wire form (for when it does not travel as Cap'n Proto fields). deserialize bounds
// every count by the bytes present before allocating, then validate()s.
std::vector<uint8_t> serializeManifest(const ChunkManifest& manifest);
Result<ChunkManifest> deserializeManifest(const uint8_t* bytes, size_t size);

// Encoded chunks by hash. An entry owns its bytes (put) or holds a view into bytes kept alive by
// an owner it shares (putView: e.g. a compiled-cache file mapped into memory); views from
// find() stay valid until the entry is erased. Does not check what it is given: decoding
// verifies.
class ChunkStore {
 public:
  ChunkStore() = default;
  // Not copyable: an owned entry's view points into its own vector.
  ChunkStore(const ChunkStore&) = delete;
  ChunkStore& operator=(const ChunkStore&) = delete;
  ChunkStore(ChunkStore&&) = default;
  ChunkStore& operator=(ChunkStore&&) = default;
  bool contains(const Hash128& hash) const { return chunks_.count(hash) != 0; }
  // The encoded bytes of `hash`, or nothing.
  std::optional<std::span<const uint8_t>> find(const Hash128& hash) const;
  // Keeps the existing entry when the hash is already present.
  void put(const Hash128& hash, std::vector<uint8_t> encoded);
  void putView(const Hash128& hash, std::span<const uint8_t> encoded,
               std::shared_ptr<const void> owner);
  // Every entry of `other` as a view kept alive by `keepAlive` (which must keep `other` and
  // what its views point into alive, e.g. the EncodedScene holding it).
  void addViewsOf(const ChunkStore& other, std::shared_ptr<const void> keepAlive);
  void erase(const Hash128& hash);
  size_t size() const { return chunks_.size(); }
  uint64_t bytes() const { return bytes_; }  // encoded bytes held
  // The manifest's distinct chunks that this store lacks, in first-use order.
  std::vector<Hash128> missing(const ChunkManifest& manifest) const;

 private:
  struct Entry {
    std::vector<uint8_t> owned;
    std::shared_ptr<const void> owner;  // keeps `view` alive when it is not `owned`
    std::span<const uint8_t> view;
  };
  std::unordered_map<Hash128, Entry, Hash128Hasher> chunks_;
  uint64_t bytes_ = 0;
};

// A compiled scene in its encoded form: the manifest and every chunk it names (what the
// compiled cache keeps, and what a session ships to nodes without encoding again).
struct EncodedScene {
  ChunkManifest manifest;
  ChunkStore chunks;
};

// One blob: magic "PLES", version, the manifest (serializeManifest), then each distinct chunk
// (hash, size, 4 reserved bytes, the bytes) in first-use order; the manifest and each chunk's
// bytes start at a multiple of 8 bytes from the blob's start, so that chunks of a blob that is
// itself 8-byte aligned can be sent by reference (Cap'n Proto needs word-aligned data).
std::vector<uint8_t> serializeEncodedScene(const ChunkManifest& manifest, const ChunkStore& chunks);
// Parses such a blob; chunks become views into `bytes` kept alive by `owner` (nothing is
// copied). Bounds every size, checks that the chunks are exactly the manifest's (none missing,
// none extra, sizes as listed); the chunks' contents are verified when decoded.
Result<EncodedScene> parseEncodedScene(std::span<const uint8_t> bytes,
                                       std::shared_ptr<const void> owner);

// Decodes and validates the manifest's camera array alone (exactly one camera, each of its
// chunks found by `find` and verified against its hash; validateCamera()). Bounded before any
// work: the array must declare exactly one Camera's bytes. Cheap (about 100 bytes).
using ChunkLookup = std::function<std::optional<std::span<const uint8_t>>(const Hash128&)>;
Result<kernel::Camera> decodeCamera(const ChunkManifest& manifest, const ChunkLookup& find);

// One chunk. encodeChunk never fails (size <= kMaxChunkBytes checked).
std::vector<uint8_t> encodeChunk(const uint8_t* raw, size_t size, const ChunkCodec& codec);
// Decodes an encoded chunk named `hash` into out[0 .. expectedRawBytes). Fails, naming the
// chunk, when the header or frame is malformed, truncated or followed by extra bytes, when the
// declared size differs from expectedRawBytes or exceeds kMaxChunkBytes (checked before any
// work), or when the bytes do not hash to `hash`. out may be partly written on failure.
Status decodeChunkInto(const Hash128& hash, const uint8_t* encoded, size_t size,
                       uint32_t expectedRawBytes, uint8_t* out);
Result<std::vector<uint8_t>> decodeChunk(const Hash128& hash, const uint8_t* encoded, size_t size,
                                         uint32_t expectedRawBytes);

struct ChunkEncodeOptions {
  std::optional<ChunkCodec> codec;          // one codec for every array instead of the defaults
  uint32_t maxChunkBytes = kMaxChunkBytes;  // clamped to 1..kMaxChunkBytes (tests cut small)
};

// Cuts data into chunks, hashes them, encodes those not yet in `store` and puts them there.
// Chunks already in the store are not recompressed, so re-encoding after a camera move costs
// hashing plus one small chunk.
ChunkManifest encodeRenderData(const RenderData& data, ChunkStore& store,
                               const ChunkEncodeOptions& options = {});

// Raw (decoded, verified) bytes of chunks, by hash: where render data already decoded holds
// them (RawChunkIndex), so that a load sharing chunks with it copies them instead of needing
// and decoding their encoded form. The views must stay valid while in use.
using RawChunks = std::unordered_map<Hash128, std::span<const uint8_t>, Hash128Hasher>;

// Where each chunk of a manifest lies in the RenderData decoded from it: array and byte range.
class RawChunkIndex {
 public:
  explicit RawChunkIndex(const ChunkManifest& manifest);
  bool contains(const Hash128& hash) const { return where_.count(hash) != 0; }
  // Adds the views of `manifest`'s chunks that `data` (decoded from this index's manifest)
  // holds to `out`.
  void addViews(const ChunkManifest& manifest, const RenderData& data, RawChunks& out) const;

 private:
  struct Place {
    RenderDataArray array;
    uint64_t offset;
    uint32_t size;
  };
  std::unordered_map<Hash128, Place, Hash128Hasher> where_;
};

// Where one chunk reference of a manifest goes in RenderData sized for it.
struct ChunkPlace {
  RenderDataArray array;
  const ChunkRef* ref;  // into the manifest
  uint8_t* dst;         // ref->rawBytes bytes of the array
};
// Sizes data's arrays for `manifest` (validate() it first: this allocates what it declares)
// and lists every chunk reference's place, in manifest order.
std::vector<ChunkPlace> sizeForManifest(const ChunkManifest& manifest, RenderData& data);
// The same for one array (the others untouched): arrays may be sized on different threads.
std::vector<ChunkPlace> sizeForManifest(const ChunkManifest& manifest, RenderData& data,
                                        RenderDataArray which);

// Rebuilds the RenderData of a manifest from the store's chunks: validates the manifest,
// checks that every chunk is present (before allocating), decodes and verifies each chunk
// into place, RenderData::validate()s the result, then derives the derived arrays. A chunk in
// `raw` (of the right size) is copied from there instead, and need not be in the store (a
// derived array is copied when `raw` holds every chunk of it). Chunks are decoded on `threads`
// threads (this one and threads - 1 it starts, fewer when a thread cannot start); the result
// and the first error (in manifest order) do not depend on it.
Result<RenderData> decodeRenderData(const ChunkManifest& manifest, const ChunkStore& store,
                                    const RawChunks* raw = nullptr, unsigned threads = 1);

// Threads for encoding and decoding on this machine: its hardware threads, 1 to 4.
unsigned defaultCodecThreads();

}  // namespace pl
