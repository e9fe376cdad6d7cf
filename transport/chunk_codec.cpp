#include "transport/chunk_codec.h"

#include <zstd.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <memory>
#include <thread>
#include <unordered_set>

#include "core/render/thread_pool.h"
#include "transport/derived_arrays.h"

namespace pl {

static_assert(std::endian::native == std::endian::little,
              "chunks carry RenderData's in-memory bytes: little-endian hosts only");

namespace {

constexpr uint8_t kChunkFormatVersion = 1;
constexpr size_t kChunkHeaderBytes = 4;

constexpr uint32_t kManifestMagic = 0x4d434c50;  // "PLCM"
constexpr uint32_t kManifestVersion = 2;  // 2: derived arrays (mipTexels)
constexpr uint32_t kEncodedSceneMagic = 0x53454c50;  // "PLES"
constexpr uint32_t kEncodedSceneVersion = 2;  // 2: no chunks of derived arrays

struct CCtxDeleter {
  void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
};
struct DCtxDeleter {
  void operator()(ZSTD_DCtx* d) const { ZSTD_freeDCtx(d); }
};

std::string chunkName(const Hash128& hash) { return "chunk " + hash.hex(); }

std::vector<uint8_t> encodeWith(ZSTD_CCtx* cctx, const uint8_t* raw, size_t size,
                                const ChunkCodec& codec, std::vector<uint8_t>& scratch) {
  PL_CHECK(size <= kMaxChunkBytes);
  const uint32_t stride =
      codec.shuffleStride > 1 ? std::min<uint32_t>(codec.shuffleStride, 255) : 0;
  const uint8_t* src = raw;
  if (stride > 1) {
    scratch.resize(size);
    byteShuffle(raw, scratch.data(), size, stride);
    src = scratch.data();
  }
  std::vector<uint8_t> out(kChunkHeaderBytes + ZSTD_compressBound(size));
  out[0] = kChunkFormatVersion;
  out[1] = uint8_t(stride);
  out[2] = out[3] = 0;
  ZSTD_CCtx_reset(cctx, ZSTD_reset_session_and_parameters);
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, codec.level);
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 1);
  const size_t n = ZSTD_compress2(cctx, out.data() + kChunkHeaderBytes,
                                  out.size() - kChunkHeaderBytes, src, size);
  PL_CHECK_MSG(!ZSTD_isError(n), "zstd: %s", ZSTD_getErrorName(n));
  out.resize(kChunkHeaderBytes + n);
  return out;
}

Status decodeWith(ZSTD_DCtx* dctx, const Hash128& hash, const uint8_t* encoded, size_t size,
                  uint32_t expectedRawBytes, uint8_t* out, std::vector<uint8_t>& scratch) {
  if (expectedRawBytes > kMaxChunkBytes)
    return Error{chunkName(hash) + ": manifest size " + std::to_string(expectedRawBytes) +
                 " bytes exceeds the " + std::to_string(kMaxChunkBytes) + "-byte chunk limit"};
  if (size < kChunkHeaderBytes)
    return Error{chunkName(hash) + ": truncated (" + std::to_string(size) + " bytes, no header)"};
  if (encoded[0] != kChunkFormatVersion)
    return Error{chunkName(hash) + ": unknown chunk format " + std::to_string(encoded[0])};
  if (encoded[2] != 0 || encoded[3] != 0) return Error{chunkName(hash) + ": malformed header"};
  const uint32_t stride = encoded[1];
  if (stride == 1) return Error{chunkName(hash) + ": malformed header (shuffle stride 1)"};

  const uint8_t* frame = encoded + kChunkHeaderBytes;
  const size_t frameSize = size - kChunkHeaderBytes;
  const unsigned long long declared = ZSTD_getFrameContentSize(frame, frameSize);
  if (declared == ZSTD_CONTENTSIZE_ERROR)
    return Error{chunkName(hash) + ": not a zstd frame (or truncated header)"};
  if (declared == ZSTD_CONTENTSIZE_UNKNOWN)
    return Error{chunkName(hash) + ": zstd frame does not declare its content size"};
  if (declared > kMaxChunkBytes)
    return Error{chunkName(hash) + ": declares " + std::to_string(declared) + " bytes, over the " +
                 std::to_string(kMaxChunkBytes) + "-byte chunk limit"};
  if (declared != expectedRawBytes)
    return Error{chunkName(hash) + ": declares " + std::to_string(declared) +
                 " bytes, the manifest says " + std::to_string(expectedRawBytes)};
  const size_t frameBytes = ZSTD_findFrameCompressedSize(frame, frameSize);
  if (ZSTD_isError(frameBytes))
    return Error{chunkName(hash) + ": truncated or corrupt zstd frame (" +
                 ZSTD_getErrorName(frameBytes) + ")"};
  if (frameBytes != frameSize)
    return Error{chunkName(hash) + ": " + std::to_string(frameSize - frameBytes) +
                 " bytes after the zstd frame"};

  uint8_t* dst = out;
  if (stride > 1) {
    scratch.resize(expectedRawBytes);
    dst = scratch.data();
  }
  const size_t n = ZSTD_decompressDCtx(dctx, dst, expectedRawBytes, frame, frameSize);
  if (ZSTD_isError(n))
    return Error{chunkName(hash) + ": corrupt zstd data (" + ZSTD_getErrorName(n) + ")"};
  if (n != expectedRawBytes)
    return Error{chunkName(hash) + ": decompressed to " + std::to_string(n) + " bytes, expected " +
                 std::to_string(expectedRawBytes)};
  if (stride > 1) byteUnshuffle(dst, out, expectedRawBytes, stride);
  const Hash128 actual = hash128(out, expectedRawBytes);
  if (!(actual == hash))
    return Error{chunkName(hash) + ": content hashes to " + actual.hex() +
                 " (corrupt or misnamed)"};
  return Status();
}

}  // namespace

// Chosen from measurements on DamagedHelmet and Crytek Sponza (the Cornell box is too small to
// matter), printed by chunk_codec_test (PL_CODEC_SWEEP_ALL=1 for whole arrays). Ratios are
// raw/encoded, Helmet / Sponza; "sE" = shuffle by the element size, "s4" = 4 byte planes.
// Geometry arrays are small next to texels, so they can afford level 3.
ChunkCodec defaultChunkCodec(RenderDataArray which) {
  const uint32_t element = renderDataElementSize(which);
  switch (which) {
    case RenderDataArray::positions:  // l3sE 1.55 / 2.39; l3 2.00 / 2.05; l1s4 1.28 / 1.32
    case RenderDataArray::tangents:   // l3sE 1.91 / 2.15; l1 1.53 / 1.54
    case RenderDataArray::triangles:  // l3sE 6.46 / 7.11; l3s4 6.88 / 4.07; l1 3.00 / 2.73
      return {3, element};
    case RenderDataArray::normals:  // l3s4 1.82 / 2.49; l3 1.84 / 2.47; l1 1.79 / 1.68
      return {3, 4};
    case RenderDataArray::uvs:  // l3 2.40 / 8.00; l3s4 1.90 / 4.68
      return {3, 0};
    // Texels are most of the bytes: level 1 keeps encoding at ~800 MB/s.
    case RenderDataArray::texels:  // l1s4 3.16 / 2.59; l3 3.52 / 2.42; l1 3.13 / 2.16
      return {1, 4};
    case RenderDataArray::emissiveTriangles:  // Helmet: s4 128x, plain 1.7x
    case RenderDataArray::emissiveCdf:        // Helmet: s4 1.90, plain 1.12
    // Not measured (no environment map in the test scenes): float data, where 4 byte planes
    // help (PLATFORM_NOTES: 1.17x -> 1.41x on float framebuffers).
    case RenderDataArray::envTexels:
    case RenderDataArray::envMarginalCdf:
    case RenderDataArray::envConditionalCdf:
      return {1, 4};
    case RenderDataArray::materials:  // Sponza: l3sE 9.09, l3 7.89
    case RenderDataArray::textures:   // Sponza: l3sE 9.54, l3 7.06
      return {3, element};
    // A few hundred bytes at most (lights, camera, globals): plain level 3.
    default:
      return {3, 0};
  }
}

void byteShuffle(const uint8_t* in, uint8_t* out, size_t bytes, uint32_t stride) {
  if (stride <= 1) {
    if (bytes) std::memcpy(out, in, bytes);
    return;
  }
  const size_t words = bytes / stride;
  if (stride == 4) {
    for (size_t i = 0; i < words; ++i) {
      out[i] = in[4 * i];
      out[words + i] = in[4 * i + 1];
      out[2 * words + i] = in[4 * i + 2];
      out[3 * words + i] = in[4 * i + 3];
    }
  } else {
    for (uint32_t b = 0; b < stride; ++b)
      for (size_t i = 0; i < words; ++i) out[b * words + i] = in[i * stride + b];
  }
  const size_t done = words * stride;
  if (bytes > done) std::memcpy(out + done, in + done, bytes - done);
}

void byteUnshuffle(const uint8_t* in, uint8_t* out, size_t bytes, uint32_t stride) {
  if (stride <= 1) {
    if (bytes) std::memcpy(out, in, bytes);
    return;
  }
  const size_t words = bytes / stride;
  if (stride == 4) {
    for (size_t i = 0; i < words; ++i) {
      out[4 * i] = in[i];
      out[4 * i + 1] = in[words + i];
      out[4 * i + 2] = in[2 * words + i];
      out[4 * i + 3] = in[3 * words + i];
    }
  } else {
    for (uint32_t b = 0; b < stride; ++b)
      for (size_t i = 0; i < words; ++i) out[i * stride + b] = in[b * words + i];
  }
  const size_t done = words * stride;
  if (bytes > done) std::memcpy(out + done, in + done, bytes - done);
}

Status ChunkManifest::validate() const {
  uint64_t total = 0;
  for (uint32_t i = 0; i < kRenderDataArrayCount; ++i) {
    const RenderDataArray which = static_cast<RenderDataArray>(i);
    const std::string name = std::string("manifest: array ") + renderDataArrayName(which);
    const ArrayManifest& a = arrays[i];
    const uint32_t elementSize = renderDataElementSize(which);
    if (a.elementSize != elementSize)
      return Error{name + " has element size " + std::to_string(a.elementSize) + ", expected " +
                   std::to_string(elementSize)};
    if (a.elementCount > kMaxRenderDataArrayBytes / elementSize)
      return Error{name + " declares " + std::to_string(a.elementCount) +
                   " elements, over the size limit"};
    const uint64_t bytes = a.elementCount * elementSize;
    total += bytes;
    if (total > kMaxRenderDataBytes) return Error{"manifest: total size over the limit"};
    uint64_t sum = 0;
    for (size_t c = 0; c < a.chunks.size(); ++c) {
      const ChunkRef& ref = a.chunks[c];
      if (ref.rawBytes == 0 || ref.rawBytes > kMaxChunkBytes || ref.rawBytes % elementSize != 0)
        return Error{name + " chunk " + std::to_string(c) + " (" + ref.hash.hex() + ") has " +
                     std::to_string(ref.rawBytes) + " raw bytes: not 1.." +
                     std::to_string(kMaxChunkBytes) + " whole elements"};
      sum += ref.rawBytes;
      if (sum > bytes) break;
    }
    if (sum != bytes)
      return Error{name + ": chunks hold " + std::to_string(sum) + " bytes, " +
                   std::to_string(a.elementCount) + " elements need " + std::to_string(bytes)};
  }
  return Status();
}

uint64_t ChunkManifest::rawBytes() const {
  uint64_t n = 0;
  for (const ArrayManifest& a : arrays)
    for (const ChunkRef& c : a.chunks) n += c.rawBytes;
  return n;
}

uint64_t ChunkManifest::encodedBytes() const {
  uint64_t n = 0;
  for (const ArrayManifest& a : arrays)
    for (const ChunkRef& c : a.chunks) n += c.encodedBytes;
  return n;
}

std::vector<Hash128> ChunkManifest::chunkHashes() const {
  std::vector<Hash128> out;
  std::unordered_set<Hash128, Hash128Hasher> seen;
  for (uint32_t a = 0; a < kRenderDataArrayCount; ++a) {
    if (isDerivedArray(RenderDataArray(a))) continue;
    for (const ChunkRef& c : arrays[a].chunks)
      if (seen.insert(c.hash).second) out.push_back(c.hash);
  }
  return out;
}

std::vector<Hash128> ChunkManifest::uploadOrder() const {
  std::vector<Hash128> out;
  std::unordered_set<Hash128, Hash128Hasher> seen;
  auto add = [&](RenderDataArray which) {
    if (isDerivedArray(which)) return;
    for (const ChunkRef& c : arrays[static_cast<uint32_t>(which)].chunks)
      if (seen.insert(c.hash).second) out.push_back(c.hash);
  };
  for (RenderDataArray which : kGeometryArrays) add(which);
  for (uint32_t a = 0; a < kRenderDataArrayCount; ++a) add(RenderDataArray(a));
  return out;
}

std::vector<uint8_t> serializeManifest(const ChunkManifest& manifest) {
  std::vector<uint8_t> out;
  auto put = [&out](const auto& v) {
    const uint8_t* b = reinterpret_cast<const uint8_t*>(&v);
    out.insert(out.end(), b, b + sizeof v);
  };
  put(kManifestMagic);
  put(kManifestVersion);
  put(kRenderDataArrayCount);
  for (const ArrayManifest& a : manifest.arrays) {
    put(a.elementSize);
    put(a.elementCount);
    put(uint32_t(a.chunks.size()));
    for (const ChunkRef& c : a.chunks) {
      put(c.hash.lo);
      put(c.hash.hi);
      put(c.rawBytes);
      put(c.encodedBytes);
    }
  }
  return out;
}

Result<ChunkManifest> deserializeManifest(const uint8_t* bytes, size_t size) {
  size_t pos = 0;
  auto take = [&](auto& v) {
    if (size - pos < sizeof v) return false;
    std::memcpy(&v, bytes + pos, sizeof v);
    pos += sizeof v;
    return true;
  };
  uint32_t magic = 0, version = 0, arrays = 0;
  if (!take(magic) || !take(version) || !take(arrays)) return Error{"manifest: truncated header"};
  if (magic != kManifestMagic) return Error{"manifest: bad magic"};
  if (version != kManifestVersion)
    return Error{"manifest: format version " + std::to_string(version) + ", expected " +
                 std::to_string(kManifestVersion)};
  if (arrays != kRenderDataArrayCount)
    return Error{"manifest: " + std::to_string(arrays) + " arrays, expected " +
                 std::to_string(kRenderDataArrayCount)};
  constexpr size_t kChunkRefBytes = 8 + 8 + 4 + 4;
  ChunkManifest m;
  for (uint32_t i = 0; i < kRenderDataArrayCount; ++i) {
    const char* name = renderDataArrayName(static_cast<RenderDataArray>(i));
    ArrayManifest& a = m.arrays[i];
    uint32_t chunks = 0;
    if (!take(a.elementSize) || !take(a.elementCount) || !take(chunks))
      return Error{std::string("manifest: truncated header of array ") + name};
    if (chunks > (size - pos) / kChunkRefBytes)
      return Error{std::string("manifest: array ") + name + " declares " + std::to_string(chunks) +
                   " chunks, more than the message holds"};
    a.chunks.resize(chunks);
    for (ChunkRef& c : a.chunks) {
      take(c.hash.lo);
      take(c.hash.hi);
      take(c.rawBytes);
      take(c.encodedBytes);
    }
  }
  if (pos != size) return Error{"manifest: trailing bytes"};
  if (Status s = m.validate(); !s.ok()) return s.error();
  return m;
}

std::optional<std::span<const uint8_t>> ChunkStore::find(const Hash128& hash) const {
  auto it = chunks_.find(hash);
  if (it == chunks_.end()) return std::nullopt;
  return it->second.view;
}

void ChunkStore::put(const Hash128& hash, std::vector<uint8_t> encoded) {
  auto [it, inserted] = chunks_.try_emplace(hash);
  if (!inserted) return;
  it->second.owned = std::move(encoded);
  it->second.view = it->second.owned;  // a vector's buffer does not move with the node
  bytes_ += it->second.view.size();
}

void ChunkStore::putView(const Hash128& hash, std::span<const uint8_t> encoded,
                         std::shared_ptr<const void> owner) {
  auto [it, inserted] = chunks_.try_emplace(hash);
  if (!inserted) return;
  it->second.owner = std::move(owner);
  it->second.view = encoded;
  bytes_ += encoded.size();
}

void ChunkStore::addViewsOf(const ChunkStore& other, std::shared_ptr<const void> keepAlive) {
  for (const auto& [hash, entry] : other.chunks_) putView(hash, entry.view, keepAlive);
}

void ChunkStore::erase(const Hash128& hash) {
  auto it = chunks_.find(hash);
  if (it == chunks_.end()) return;
  bytes_ -= it->second.view.size();
  chunks_.erase(it);
}

std::vector<Hash128> ChunkStore::missing(const ChunkManifest& manifest) const {
  std::vector<Hash128> out;
  for (const Hash128& h : manifest.chunkHashes())
    if (!contains(h)) out.push_back(h);
  return out;
}

std::vector<uint8_t> encodeChunk(const uint8_t* raw, size_t size, const ChunkCodec& codec) {
  std::unique_ptr<ZSTD_CCtx, CCtxDeleter> cctx(ZSTD_createCCtx());
  std::vector<uint8_t> scratch;
  return encodeWith(cctx.get(), raw, size, codec, scratch);
}

Status decodeChunkInto(const Hash128& hash, const uint8_t* encoded, size_t size,
                       uint32_t expectedRawBytes, uint8_t* out) {
  // One decoder and one shuffle buffer per thread: codec threads decode chunk after chunk.
  thread_local std::unique_ptr<ZSTD_DCtx, DCtxDeleter> dctx(ZSTD_createDCtx());
  thread_local std::vector<uint8_t> scratch;
  if (dctx == nullptr) return Error{chunkName(hash) + ": no memory for a zstd decoder"};
  return decodeWith(dctx.get(), hash, encoded, size, expectedRawBytes, out, scratch);
}

Result<std::vector<uint8_t>> decodeChunk(const Hash128& hash, const uint8_t* encoded, size_t size,
                                         uint32_t expectedRawBytes) {
  if (expectedRawBytes > kMaxChunkBytes)
    return Error{chunkName(hash) + ": manifest size " + std::to_string(expectedRawBytes) +
                 " bytes exceeds the chunk limit"};
  std::vector<uint8_t> out(expectedRawBytes);
  if (Status s = decodeChunkInto(hash, encoded, size, expectedRawBytes, out.data()); !s.ok())
    return s.error();
  return out;
}

ChunkManifest encodeRenderData(const RenderData& data, ChunkStore& store,
                               const ChunkEncodeOptions& options) {
  const uint32_t maxChunk = std::clamp<uint32_t>(options.maxChunkBytes, 1, kMaxChunkBytes);
  std::unique_ptr<ZSTD_CCtx, CCtxDeleter> cctx(ZSTD_createCCtx());
  std::vector<uint8_t> scratch;
  ChunkManifest m;
  for (uint32_t i = 0; i < kRenderDataArrayCount; ++i) {
    const RenderDataArray which = static_cast<RenderDataArray>(i);
    const RenderData::Bytes bytes = data.arrayBytes(which);
    const ChunkCodec codec = options.codec.value_or(defaultChunkCodec(which));
    ArrayManifest& a = m.arrays[i];
    a.elementSize = bytes.elementSize;
    a.elementCount = bytes.size / bytes.elementSize;
    const uint64_t chunkBytes =
        std::max<uint64_t>(1, maxChunk / bytes.elementSize) * bytes.elementSize;
    PL_CHECK(chunkBytes <= kMaxChunkBytes);
    for (uint64_t offset = 0; offset < bytes.size; offset += chunkBytes) {
      const uint32_t n = uint32_t(std::min<uint64_t>(chunkBytes, bytes.size - offset));
      ChunkRef ref;
      ref.hash = hash128(bytes.data + offset, n);
      ref.rawBytes = n;
      if (!isDerivedArray(which)) {  // a derived array's chunks are named, never encoded
        if (!store.contains(ref.hash))
          store.put(ref.hash, encodeWith(cctx.get(), bytes.data + offset, n, codec, scratch));
        ref.encodedBytes = uint32_t(store.find(ref.hash)->size());
      }
      a.chunks.push_back(ref);
    }
  }
  return m;
}

RawChunkIndex::RawChunkIndex(const ChunkManifest& manifest) {
  for (uint32_t a = 0; a < kRenderDataArrayCount; ++a) {
    uint64_t offset = 0;
    for (const ChunkRef& ref : manifest.arrays[a].chunks) {
      where_.emplace(ref.hash, Place{RenderDataArray(a), offset, ref.rawBytes});
      offset += ref.rawBytes;
    }
  }
}

void RawChunkIndex::addViews(const ChunkManifest& manifest, const RenderData& data,
                             RawChunks& out) const {
  for (const ArrayManifest& array : manifest.arrays) {
    for (const ChunkRef& ref : array.chunks) {
      auto it = where_.find(ref.hash);
      if (it == where_.end() || out.count(ref.hash) != 0) continue;
      const RenderData::Bytes bytes = data.arrayBytes(it->second.array);
      if (it->second.offset + it->second.size > bytes.size) continue;  // not this data's index
      out.emplace(ref.hash, std::span<const uint8_t>(bytes.data + it->second.offset,
                                                     it->second.size));
    }
  }
}

std::vector<ChunkPlace> sizeForManifest(const ChunkManifest& manifest, RenderData& data,
                                        RenderDataArray which) {
  std::vector<ChunkPlace> places;
  auto size = [&](auto& vec) {
    const ArrayManifest& a = manifest.arrays[static_cast<uint32_t>(which)];
    vec.resize(a.elementCount);
    uint8_t* dst = reinterpret_cast<uint8_t*>(vec.data());
    for (const ChunkRef& ref : a.chunks) {
      places.push_back(ChunkPlace{which, &ref, dst});
      dst += ref.rawBytes;
    }
  };
  switch (which) {
#define PL_RD_SIZE(Type, name) \
  case RenderDataArray::name:  \
    size(data.name);           \
    break;
    PL_RENDER_DATA_ARRAYS(PL_RD_SIZE)
#undef PL_RD_SIZE
    default:
      PL_CHECK(false);
  }
  return places;
}

std::vector<ChunkPlace> sizeForManifest(const ChunkManifest& manifest, RenderData& data) {
  std::vector<ChunkPlace> places;
  for (uint32_t a = 0; a < kRenderDataArrayCount; ++a) {
    std::vector<ChunkPlace> array = sizeForManifest(manifest, data, RenderDataArray(a));
    places.insert(places.end(), array.begin(), array.end());
  }
  return places;
}

Result<RenderData> decodeRenderData(const ChunkManifest& manifest, const ChunkStore& store,
                                    const RawChunks* raw, unsigned threads) {
  if (Status s = manifest.validate(); !s.ok()) return s.error();
  auto rawOf = [raw](const ChunkRef& ref) -> const std::span<const uint8_t>* {
    if (raw == nullptr) return nullptr;
    auto it = raw->find(ref.hash);
    return it != raw->end() && it->second.size() == ref.rawBytes ? &it->second : nullptr;
  };
  std::vector<Hash128> missing;
  for (const Hash128& hash : store.missing(manifest)) {
    if (raw == nullptr || raw->count(hash) == 0) missing.push_back(hash);
  }
  if (!missing.empty())
    return Error{"render data: " + std::to_string(missing.size()) + " chunk(s) missing, first " +
                 missing.front().hex()};

  // Every array sized first (this thread); then each chunk into its place, on any thread. A
  // derived array's chunks are copied from `raw` when it holds all of them, else computed.
  RenderData data;
  const std::vector<ChunkPlace> pieces = sizeForManifest(manifest, data);
  bool derive = false;
  for (const ChunkPlace& p : pieces) derive |= isDerivedArray(p.array) && rawOf(*p.ref) == nullptr;
  std::vector<Status> status(pieces.size());
  auto decodePiece = [&](size_t i, ZSTD_DCtx* dctx, std::vector<uint8_t>& scratch) -> Status {
    const ChunkPlace& p = pieces[i];
    if (isDerivedArray(p.array) && derive) return Status();
    if (const std::span<const uint8_t>* bytes = rawOf(*p.ref)) {
      std::memcpy(p.dst, bytes->data(), p.ref->rawBytes);
      return Status();
    }
    const std::optional<std::span<const uint8_t>> encoded = store.find(p.ref->hash);
    if (!encoded) return Error{"chunk " + p.ref->hash.hex() + " is missing"};
    if (dctx == nullptr) return Error{"no memory for a zstd decoder"};
    return decodeWith(dctx, p.ref->hash, encoded->data(), encoded->size(), p.ref->rawBytes,
                      p.dst, scratch);
  };
  ThreadPool pool(uint32_t(std::clamp<size_t>(threads, 1, std::max<size_t>(pieces.size(), 1))));
  std::vector<std::unique_ptr<ZSTD_DCtx, DCtxDeleter>> dctx(pool.threadCount());
  std::vector<std::vector<uint8_t>> scratch(pool.threadCount());
  for (auto& d : dctx) d.reset(ZSTD_createDCtx());
  // An exception (no memory) fails the chunk it came from: parallelFor's fn must not throw.
  pool.parallelFor(uint32_t(pieces.size()), [&](uint32_t i, uint32_t thread) {
    const char* array = renderDataArrayName(pieces[i].array);
    try {
      Status s = decodePiece(i, dctx[thread].get(), scratch[thread]);
      if (!s.ok()) status[i] = Error{std::string("array ") + array + ": " + s.error().message};
    } catch (const std::exception& e) {
      status[i] = Error{std::string("array ") + array + ": decoding failed: " + e.what()};
    }
  });
  for (const Status& s : status) {
    if (!s.ok()) return s.error();
  }
  if (Status s = data.validate(); !s.ok())
    return Error{"render data from chunks: " + s.error().message};
  if (derive) {
    if (Status s = deriveArrays(manifest, data); !s.ok()) return s.error();
  }
  return data;
}

unsigned defaultCodecThreads() {
  return std::clamp(std::thread::hardware_concurrency(), 1u, 4u);
}

std::vector<uint8_t> serializeEncodedScene(const ChunkManifest& manifest, const ChunkStore& chunks) {
  const std::vector<uint8_t> manifestBytes = serializeManifest(manifest);
  const std::vector<Hash128> hashes = manifest.chunkHashes();
  std::vector<uint8_t> out;
  out.reserve(manifestBytes.size() + manifest.encodedBytes() + hashes.size() * 32 + 64);
  auto put = [&out](const auto& v) {
    const uint8_t* b = reinterpret_cast<const uint8_t*>(&v);
    out.insert(out.end(), b, b + sizeof v);
  };
  auto pad = [&out] { out.resize((out.size() + 7) & ~size_t(7), 0); };
  put(kEncodedSceneMagic);
  put(kEncodedSceneVersion);
  put(uint64_t(manifestBytes.size()));
  out.insert(out.end(), manifestBytes.begin(), manifestBytes.end());
  pad();
  put(uint64_t(hashes.size()));
  for (const Hash128& h : hashes) {
    const std::optional<std::span<const uint8_t>> bytes = chunks.find(h);
    PL_CHECK(bytes.has_value());  // the caller's store holds what its manifest names
    put(h.lo);
    put(h.hi);
    put(uint32_t(bytes->size()));
    put(uint32_t(0));
    out.insert(out.end(), bytes->begin(), bytes->end());
    pad();
  }
  return out;
}

Result<EncodedScene> parseEncodedScene(std::span<const uint8_t> bytes,
                                       std::shared_ptr<const void> owner) {
  size_t pos = 0;
  auto take = [&](auto& v) {
    if (bytes.size() - pos < sizeof v) return false;
    std::memcpy(&v, bytes.data() + pos, sizeof v);
    pos += sizeof v;
    return true;
  };
  // To the next multiple of 8 (false past the end).
  auto skipPad = [&] {
    const size_t next = (pos + 7) & ~size_t(7);
    if (next > bytes.size()) return false;
    pos = next;
    return true;
  };
  uint32_t magic = 0, version = 0;
  uint64_t manifestSize = 0;
  if (!take(magic) || !take(version) || !take(manifestSize))
    return Error{"encoded scene: truncated header"};
  if (magic != kEncodedSceneMagic) return Error{"encoded scene: bad magic"};
  if (version != kEncodedSceneVersion)
    return Error{"encoded scene: format version " + std::to_string(version) + ", expected " +
                 std::to_string(kEncodedSceneVersion)};
  if (manifestSize > bytes.size() - pos) return Error{"encoded scene: truncated manifest"};
  EncodedScene scene;
  Result<ChunkManifest> manifest = deserializeManifest(bytes.data() + pos, manifestSize);
  if (!manifest.ok()) return Error{"encoded scene: " + manifest.error().message};
  scene.manifest = std::move(*manifest);
  pos += manifestSize;
  if (!skipPad()) return Error{"encoded scene: truncated manifest"};
  // Each chunk's encoded size as the manifest lists it (derived arrays' chunks are not kept).
  std::unordered_map<Hash128, uint32_t, Hash128Hasher> listed;
  for (uint32_t a = 0; a < kRenderDataArrayCount; ++a) {
    if (isDerivedArray(RenderDataArray(a))) continue;
    for (const ChunkRef& c : scene.manifest.arrays[a].chunks)
      listed.emplace(c.hash, c.encodedBytes);
  }
  uint64_t count = 0;
  if (!take(count)) return Error{"encoded scene: truncated chunk count"};
  if (count != listed.size())
    return Error{"encoded scene: " + std::to_string(count) + " chunks, the manifest names " +
                 std::to_string(listed.size())};
  for (uint64_t i = 0; i < count; ++i) {
    Hash128 hash;
    uint32_t size = 0, reserved = 0;
    if (!take(hash.lo) || !take(hash.hi) || !take(size) || !take(reserved))
      return Error{"encoded scene: truncated header of chunk " + std::to_string(i)};
    auto it = listed.find(hash);
    if (it == listed.end() || scene.chunks.contains(hash))
      return Error{"encoded scene: chunk " + hash.hex() + " is not in the manifest or repeated"};
    if (size != it->second)
      return Error{"encoded scene: chunk " + hash.hex() + " holds " + std::to_string(size) +
                   " bytes, the manifest says " + std::to_string(it->second)};
    if (size > bytes.size() - pos)
      return Error{"encoded scene: chunk " + hash.hex() + " is truncated"};
    scene.chunks.putView(hash, bytes.subspan(pos, size), owner);
    pos += size;
    if (!skipPad()) return Error{"encoded scene: chunk " + hash.hex() + " is truncated"};
  }
  if (pos != bytes.size()) return Error{"encoded scene: trailing bytes"};
  return scene;
}

Result<kernel::Camera> decodeCamera(const ChunkManifest& manifest, const ChunkLookup& find) {
  const ArrayManifest& array = manifest.arrays[size_t(RenderDataArray::camera)];
  if (array.elementSize != sizeof(kernel::Camera) || array.elementCount != 1) {
    return Error{"render data: expected exactly one camera of " +
                 std::to_string(sizeof(kernel::Camera)) + " bytes, found " +
                 std::to_string(array.elementCount) + " of " + std::to_string(array.elementSize)};
  }
  kernel::Camera camera{};
  auto* out = reinterpret_cast<uint8_t*>(&camera);
  size_t offset = 0;
  for (const ChunkRef& ref : array.chunks) {
    if (ref.rawBytes > sizeof(camera) - offset) {
      return Error{"manifest: the camera's chunks hold more than one camera"};
    }
    const std::optional<std::span<const uint8_t>> bytes = find(ref.hash);
    if (!bytes) return Error{"chunk " + ref.hash.hex() + " is missing (put it first)"};
    if (Status s =
            decodeChunkInto(ref.hash, bytes->data(), bytes->size(), ref.rawBytes, out + offset);
        !s.ok()) {
      return s.error();
    }
    offset += ref.rawBytes;
  }
  if (offset != sizeof(camera)) return Error{"manifest: the camera's chunks hold part of a camera"};
  if (Status s = validateCamera(camera); !s.ok()) return s.error();
  return camera;
}

}  // namespace pl
