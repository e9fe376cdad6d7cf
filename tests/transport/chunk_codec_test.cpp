#include "tests/transport/chunk_test_util.h"
#include "tests/transport/textured_scene.h"
#include "transport/chunk_codec.h"

#include <gtest/gtest.h>
#include <zstd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>

#include "core/scene/compile.h"

namespace pl {
namespace {

RenderData cornellBox() {
  CompileOptions options;
  options.width = options.height = 64;
  Result<RenderData> data =
      loadAndCompile(PEERLIGHT_SOURCE_DIR "/scenes/cornell_box.gltf", options);
  EXPECT_TRUE(data.ok()) << data.error().message;
  return data.ok() ? std::move(data).value() : RenderData{};
}

void expectBitIdentical(const RenderData& a, const RenderData& b) {
  for (uint32_t i = 0; i < kRenderDataArrayCount; ++i) {
    const RenderDataArray which = static_cast<RenderDataArray>(i);
    const RenderData::Bytes x = a.arrayBytes(which), y = b.arrayBytes(which);
    ASSERT_EQ(x.size, y.size) << renderDataArrayName(which);
    EXPECT_TRUE(x.size == 0 || std::memcmp(x.data, y.data, x.size) == 0)
        << renderDataArrayName(which);
  }
  EXPECT_EQ(a.arrayHashes(), b.arrayHashes());
}

// Cornell box plus > 4 MiB arrays: 300 000 extra vertices (positions 3.6 MB, tangents 4.8 MB)
// and a 1100x1100 texture (4.84 MB of texels), with noise so they do not compress away.
RenderData withLargeArrays(RenderData data) {
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (int i = 0; i < 300000; ++i) {
    data.positions.push_back({u(rng), u(rng), u(rng)});
    data.normals.push_back({0.0f, 1.0f, 0.0f});
    data.uvs.push_back({u(rng), u(rng)});
    data.tangents.push_back({1.0f, 0.0f, 0.0f, u(rng) > 0 ? 1.0f : -1.0f});
  }
  data.meshes.back().vertexCount += 300000;  // vertices of the last mesh, in no triangle
  kernel::Texture t{};
  t.width = t.height = 1100;
  t.texelOffset = uint32_t(data.texels.size());
  data.textures.push_back(t);
  for (uint32_t i = 0; i < 1100u * 1100u; ++i) {
    const uint32_t r = rng();
    data.texels.push_back({uint8_t(i % 251), uint8_t(r & 0x0f), uint8_t(i / 1100), 255});
  }
  return data;
}

TEST(ChunkCodecTest, ByteShuffleRoundTrips) {
  std::mt19937 rng(1);
  for (uint32_t stride : {0u, 1u, 2u, 4u, 8u, 12u, 16u}) {
    for (size_t size : {size_t(0), size_t(3), size_t(48), size_t(1001)}) {
      std::vector<uint8_t> in(size), mid(size), out(size);
      for (uint8_t& b : in) b = uint8_t(rng());
      byteShuffle(in.data(), mid.data(), size, stride);
      byteUnshuffle(mid.data(), out.data(), size, stride);
      EXPECT_EQ(in, out) << "stride " << stride << " size " << size;
    }
  }
  // Planes: byte 0 of each word first.
  const uint8_t in[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  uint8_t out[8];
  byteShuffle(in, out, 8, 4);
  EXPECT_EQ(std::vector<uint8_t>(out, out + 8), (std::vector<uint8_t>{1, 5, 2, 6, 3, 7, 4, 8}));
}

// The encoded scene blob (what the compiled cache keeps and a daemon job carries): parsed
// without copying, it decodes to the same data; its camera decodes alone; every malformed
// blob is an error that names what is wrong, never a crash.
TEST(ChunkCodecTest, EncodedSceneRoundTripsAndRejectsMalformedBlobs) {
  const RenderData data = cornellBox();
  ChunkStore store;
  const ChunkManifest manifest = encodeRenderData(data, store);
  auto blob = std::make_shared<std::vector<uint8_t>>(serializeEncodedScene(manifest, store));
  Result<EncodedScene> scene = parseEncodedScene(*blob, blob);
  ASSERT_TRUE(scene.ok()) << scene.error().message;
  EXPECT_EQ(scene->manifest, manifest);
  EXPECT_EQ(scene->chunks.size(), manifest.chunkHashes().size());
  // Views into the blob, not copies, each at a multiple of 8 bytes from its start.
  const Hash128 first = manifest.chunkHashes().front();
  const uint8_t* view = scene->chunks.find(first)->data();
  EXPECT_TRUE(view >= blob->data() && view < blob->data() + blob->size());
  for (const Hash128& h : manifest.chunkHashes())
    EXPECT_EQ((scene->chunks.find(h)->data() - blob->data()) % 8, 0) << h.hex();
  Result<RenderData> back = decodeRenderData(scene->manifest, scene->chunks);
  ASSERT_TRUE(back.ok()) << back.error().message;
  expectBitIdentical(data, *back);
  Result<kernel::Camera> camera =
      decodeCamera(scene->manifest, [&](const Hash128& h) { return scene->chunks.find(h); });
  ASSERT_TRUE(camera.ok()) << camera.error().message;
  EXPECT_EQ(std::memcmp(&*camera, &data.camera[0], sizeof(kernel::Camera)), 0);
  // A store's entries as views of another's (a session taking an encoded scene's chunks).
  ChunkStore session;
  session.addViewsOf(scene->chunks, blob);
  EXPECT_EQ(session.find(first)->data(), view);
  EXPECT_TRUE(session.missing(manifest).empty());

  auto parse = [](std::vector<uint8_t> bytes) {
    auto owner = std::make_shared<std::vector<uint8_t>>(std::move(bytes));
    return parseEncodedScene(*owner, owner);
  };
  auto expectError = [&](std::vector<uint8_t> bytes, const std::string& words) {
    Result<EncodedScene> r = parse(std::move(bytes));
    ASSERT_FALSE(r.ok()) << words;
    EXPECT_NE(r.error().message.find(words), std::string::npos) << r.error().message;
  };
  // Every truncation fails (header, manifest, chunk headers, chunk bytes).
  for (size_t n : {size_t(0), size_t(7), size_t(20), blob->size() / 2, blob->size() - 1}) {
    EXPECT_FALSE(parse(std::vector<uint8_t>(blob->begin(), blob->begin() + long(n))).ok()) << n;
  }
  std::vector<uint8_t> bad = *blob;
  bad[0] ^= 1;
  expectError(bad, "bad magic");
  bad = *blob;
  bad.push_back(0);
  expectError(bad, "trailing bytes");
  // An absurd manifest size is bounded by the bytes present.
  bad = *blob;
  const uint64_t huge = ~uint64_t(0);
  std::memcpy(bad.data() + 8, &huge, 8);
  expectError(bad, "truncated manifest");
  // A chunk count that differs from the manifest's.
  bad = *blob;
  uint64_t manifestSize;
  std::memcpy(&manifestSize, bad.data() + 8, 8);
  const size_t countAt = (16 + size_t(manifestSize) + 7) & ~size_t(7);
  uint64_t count;
  std::memcpy(&count, bad.data() + countAt, 8);
  const uint64_t more = count + 1;
  std::memcpy(bad.data() + countAt, &more, 8);
  expectError(bad, "chunks, the manifest names");
  // A chunk the manifest does not name, and a chunk whose size differs from the manifest's.
  bad = *blob;
  bad[countAt + 8] ^= 1;  // the first chunk's hash
  expectError(bad, "not in the manifest");
  bad = *blob;
  uint32_t size;
  std::memcpy(&size, bad.data() + countAt + 8 + 16, 4);
  const uint32_t other = size + 1;
  std::memcpy(bad.data() + countAt + 8 + 16, &other, 4);
  expectError(bad, "the manifest says");
  // A flipped byte inside a chunk parses (contents are checked when decoded) but never decodes.
  bad = *blob;
  bad[countAt + 8 + 24 + size - 1] ^= 0x40;
  Result<EncodedScene> flipped = parse(bad);
  ASSERT_TRUE(flipped.ok()) << flipped.error().message;
  EXPECT_FALSE(decodeRenderData(flipped->manifest, flipped->chunks).ok());
}

TEST(ChunkCodecTest, CornellBoxRoundTripsBitExact) {
  const RenderData data = cornellBox();
  ChunkStore store;
  const ChunkManifest manifest = encodeRenderData(data, store);
  ASSERT_TRUE(manifest.validate().ok());
  EXPECT_EQ(manifest.rawBytes(), data.byteSize());
  EXPECT_EQ(store.size(), manifest.chunkHashes().size());
  for (uint32_t i = 0; i < kRenderDataArrayCount; ++i) {
    const ArrayManifest& a = manifest.arrays[i];
    EXPECT_EQ(a.elementSize, renderDataElementSize(RenderDataArray(i)));
    EXPECT_EQ(a.chunks.size(), a.elementCount == 0 ? 0u : 1u) << "small arrays: one chunk";
  }
  // Through the manifest's wire form, into a node's store that has nothing yet.
  Result<ChunkManifest> wire =
      deserializeManifest(serializeManifest(manifest).data(), serializeManifest(manifest).size());
  ASSERT_TRUE(wire.ok()) << wire.error().message;
  EXPECT_EQ(*wire, manifest);
  ChunkStore node;
  EXPECT_EQ(node.missing(*wire).size(), manifest.chunkHashes().size());
  for (const Hash128& h : node.missing(*wire)) node.put(h, test::chunkBytes(store, h));
  Result<RenderData> back = decodeRenderData(*wire, node);
  ASSERT_TRUE(back.ok()) << back.error().message;
  expectBitIdentical(data, *back);
}

// The textures' mip levels (a derived array) are named in the manifest but never encoded, stored
// or sent: decoding computes them from level 0 and checks them against the manifest's hashes,
// or copies them from raw data held that has all of them.
TEST(ChunkCodecTest, DerivedArraysAreNamedButComputedNotSent) {
  const RenderData data = testing::texturedCornellBox(16);
  ChunkStore store;
  const ChunkManifest manifest =
      encodeRenderData(data, store, {.codec = std::nullopt, .maxChunkBytes = 1024});
  const ArrayManifest& mips = manifest.arrays[uint32_t(RenderDataArray::mipTexels)];
  ASSERT_GT(mips.chunks.size(), 1u);
  EXPECT_EQ(mips.elementCount, data.mipTexels.size());
  const std::vector<Hash128> sent = manifest.chunkHashes(), order = manifest.uploadOrder();
  for (const ChunkRef& ref : mips.chunks) {
    EXPECT_EQ(ref.encodedBytes, 0u);
    EXPECT_FALSE(store.contains(ref.hash));
    EXPECT_EQ(std::find(sent.begin(), sent.end(), ref.hash), sent.end());
    EXPECT_EQ(std::find(order.begin(), order.end(), ref.hash), order.end());
  }
  EXPECT_EQ(store.size(), sent.size());
  EXPECT_EQ(order.size(), sent.size());
  EXPECT_TRUE(ChunkStore().missing(manifest).size() == sent.size());
  for (unsigned threads : {1u, 3u}) {
    Result<RenderData> back = decodeRenderData(manifest, store, nullptr, threads);
    ASSERT_TRUE(back.ok()) << back.error().message;
    expectBitIdentical(data, *back);
  }

  // Raw data held (a node's earlier load) that has every mip chunk: copied, not computed. A
  // copy whose mip texels were altered shows which was used.
  RenderData held = data;
  held.mipTexels[3].r ^= 0x40;
  ChunkStore unused;
  const ChunkManifest heldManifest =
      encodeRenderData(held, unused, {.codec = std::nullopt, .maxChunkBytes = 1024});
  RawChunks raw;
  RawChunkIndex(heldManifest).addViews(heldManifest, held, raw);
  Result<RenderData> copied = decodeRenderData(heldManifest, store, &raw);
  ASSERT_TRUE(copied.ok()) << copied.error().message;
  EXPECT_EQ(copied->mipTexels[3].r, held.mipTexels[3].r);

  // A manifest whose mip levels are not what this build computes (a sender of another build, or
  // a forged hash) fails, naming the array and the chunk.
  ChunkManifest other = manifest;
  other.arrays[uint32_t(RenderDataArray::mipTexels)].chunks[1].hash.lo ^= 1;
  Result<RenderData> refused = decodeRenderData(other, store);
  ASSERT_FALSE(refused.ok());
  const Hash128 forged = other.arrays[uint32_t(RenderDataArray::mipTexels)].chunks[1].hash;
  EXPECT_NE(refused.error().message.find("array mipTexels: chunk " + forged.hex() +
                                         " differs from the one computed here"),
            std::string::npos)
      << refused.error().message;
}

// Tiny chunks: every array is cut at element boundaries into many chunks.
TEST(ChunkCodecTest, SmallChunksAreWholeElements) {
  const RenderData data = cornellBox();
  ChunkStore store;
  const ChunkManifest manifest =
      encodeRenderData(data, store, {.codec = std::nullopt, .maxChunkBytes = 100});
  ASSERT_TRUE(manifest.validate().ok()) << manifest.validate().error().message;
  for (const ArrayManifest& a : manifest.arrays) {
    for (const ChunkRef& c : a.chunks) {
      EXPECT_EQ(c.rawBytes % a.elementSize, 0u);
      EXPECT_LE(c.rawBytes, std::max<uint32_t>(100, a.elementSize));
    }
  }
  EXPECT_GT(manifest.arrays[uint32_t(RenderDataArray::positions)].chunks.size(), 3u);
  Result<RenderData> back = decodeRenderData(manifest, store);
  ASSERT_TRUE(back.ok()) << back.error().message;
  expectBitIdentical(data, *back);
}

TEST(ChunkCodecTest, LargeArraysSpanChunksAndRoundTrip) {
  const RenderData data = withLargeArrays(cornellBox());
  ASSERT_TRUE(data.validate().ok()) << data.validate().error().message;
  ChunkStore store;
  const ChunkManifest manifest = encodeRenderData(data, store);
  ASSERT_TRUE(manifest.validate().ok());
  const ArrayManifest& texels = manifest.arrays[uint32_t(RenderDataArray::texels)];
  const ArrayManifest& tangents = manifest.arrays[uint32_t(RenderDataArray::tangents)];
  ASSERT_EQ(texels.chunks.size(), 2u);
  EXPECT_EQ(texels.chunks[0].rawBytes, kMaxChunkBytes);
  ASSERT_EQ(tangents.chunks.size(), 2u);
  EXPECT_EQ(tangents.chunks[0].rawBytes, kMaxChunkBytes);  // 16-byte elements divide 4 MiB
  const ArrayManifest& positions = manifest.arrays[uint32_t(RenderDataArray::positions)];
  for (const ChunkRef& c : positions.chunks) EXPECT_EQ(c.rawBytes % 12, 0u);
  Result<RenderData> back = decodeRenderData(manifest, store);
  ASSERT_TRUE(back.ok()) << back.error().message;
  expectBitIdentical(data, *back);
}

// Chunks decode on several threads into the same bits; with two corrupt chunks the error names
// the first in manifest order, on any number of threads.
TEST(ChunkCodecTest, DecodingOnThreadsGivesTheSameDataAndTheFirstError) {
  const RenderData data = withLargeArrays(cornellBox());
  ChunkStore store;
  const ChunkManifest manifest = encodeRenderData(data, store);
  ASSERT_GT(manifest.chunkHashes().size(), 8u);
  for (unsigned threads : {2u, 4u, 64u}) {
    Result<RenderData> back = decodeRenderData(manifest, store, nullptr, threads);
    ASSERT_TRUE(back.ok()) << back.error().message;
    expectBitIdentical(data, *back);
  }
  const Hash128 first = manifest.arrays[uint32_t(RenderDataArray::positions)].chunks[0].hash;
  const Hash128 last = manifest.arrays[uint32_t(RenderDataArray::texels)].chunks.back().hash;
  for (const Hash128& h : {first, last}) {
    std::vector<uint8_t> bad = test::chunkBytes(store, h);
    bad.back() ^= 0xff;
    store.erase(h);
    store.put(h, bad);
  }
  for (unsigned threads : {1u, 2u, 4u}) {
    Result<RenderData> r = decodeRenderData(manifest, store, nullptr, threads);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find(first.hex()), std::string::npos)
        << threads << " threads: " << r.error().message;
  }
}

TEST(ChunkCodecTest, CameraMoveChangesOnlyTheCameraChunk) {
  RenderData data = withLargeArrays(cornellBox());
  ChunkStore primary;
  const ChunkManifest before = encodeRenderData(data, primary);
  ChunkStore node;
  for (const Hash128& h : node.missing(before)) node.put(h, test::chunkBytes(primary, h));
  const size_t chunksBefore = primary.size();

  data.camera[0].position.x += 0.25f;
  const auto start = std::chrono::steady_clock::now();
  const ChunkManifest after = encodeRenderData(data, primary);
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(primary.size(), chunksBefore + 1) << "only the new camera chunk was encoded";
  for (uint32_t i = 0; i < kRenderDataArrayCount; ++i) {
    if (RenderDataArray(i) == RenderDataArray::camera) {
      EXPECT_NE(after.arrays[i], before.arrays[i]);
    } else {
      EXPECT_EQ(after.arrays[i], before.arrays[i]) << renderDataArrayName(RenderDataArray(i));
    }
  }
  const std::vector<Hash128> resend = node.missing(after);
  ASSERT_EQ(resend.size(), 1u);
  const uint64_t resendBytes = primary.find(resend[0])->size();
  EXPECT_LT(resendBytes, 200u);
  std::printf(
      "camera move: re-encode %.1f ms (hashing %.1f MB), resend 1 chunk of %llu bytes "
      "(+ manifest %zu bytes)\n",
      ms, data.byteSize() / 1e6, (unsigned long long)resendBytes, serializeManifest(after).size());
  node.put(resend[0], test::chunkBytes(primary, resend[0]));
  Result<RenderData> back = decodeRenderData(after, node);
  ASSERT_TRUE(back.ok()) << back.error().message;
  expectBitIdentical(data, *back);
}

// --- Bad chunks -------------------------------------------------------------------------

struct OneChunk {
  std::vector<uint8_t> raw;
  Hash128 hash;
  std::vector<uint8_t> encoded;
};

OneChunk makeChunk(uint32_t shuffle) {
  OneChunk c;
  for (int i = 0; i < 10000; ++i) {
    const float v = float(i) * 0.37f;
    const uint8_t* b = reinterpret_cast<const uint8_t*>(&v);
    c.raw.insert(c.raw.end(), b, b + 4);
  }
  c.hash = hash128(c.raw.data(), c.raw.size());
  c.encoded = encodeChunk(c.raw.data(), c.raw.size(), {1, shuffle});
  return c;
}

std::string decodeError(const OneChunk& c, const std::vector<uint8_t>& encoded, uint32_t rawBytes) {
  Result<std::vector<uint8_t>> r = decodeChunk(c.hash, encoded.data(), encoded.size(), rawBytes);
  if (r.ok()) return "";
  EXPECT_NE(r.error().message.find(c.hash.hex()), std::string::npos)
      << "the error names the chunk: " << r.error().message;
  return r.error().message;
}

TEST(ChunkCodecTest, GoodChunkDecodes) {
  for (uint32_t shuffle : {0u, 4u}) {
    const OneChunk c = makeChunk(shuffle);
    Result<std::vector<uint8_t>> r =
        decodeChunk(c.hash, c.encoded.data(), c.encoded.size(), uint32_t(c.raw.size()));
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(*r, c.raw);
  }
}

TEST(ChunkCodecTest, RejectsTruncatedChunks) {
  const OneChunk c = makeChunk(4);
  const uint32_t n = uint32_t(c.raw.size());
  for (size_t keep :
       {size_t(0), size_t(3), size_t(4), size_t(10), c.encoded.size() / 2, c.encoded.size() - 1}) {
    std::vector<uint8_t> cut(c.encoded.begin(), c.encoded.begin() + keep);
    const std::string e = decodeError(c, cut, n);
    EXPECT_FALSE(e.empty()) << "kept " << keep;
    if (keep > 20) {
      EXPECT_NE(e.find("truncated"), std::string::npos) << e;
    }
  }
}

TEST(ChunkCodecTest, RejectsTrailingBytes) {
  const OneChunk c = makeChunk(0);
  std::vector<uint8_t> longer = c.encoded;
  longer.push_back(0);
  EXPECT_NE(decodeError(c, longer, uint32_t(c.raw.size())).find("after the zstd frame"),
            std::string::npos);
}

TEST(ChunkCodecTest, RejectsSizeDisagreeingWithManifest) {
  const OneChunk c = makeChunk(0);
  const std::string e = decodeError(c, c.encoded, uint32_t(c.raw.size()) - 4);
  EXPECT_NE(e.find("the manifest says"), std::string::npos) << e;
  EXPECT_NE(decodeError(c, c.encoded, kMaxChunkBytes + 1).find("limit"), std::string::npos);
}

TEST(ChunkCodecTest, RejectsOversizedFrameBeforeDecompressing) {
  // A valid zstd frame of 64 MiB of zeros (a few KB compressed): a decompression bomb.
  std::vector<uint8_t> zeros(64u << 20, 0);
  std::vector<uint8_t> encoded(4 + ZSTD_compressBound(zeros.size()));
  encoded[0] = 1;
  const size_t n =
      ZSTD_compress(encoded.data() + 4, encoded.size() - 4, zeros.data(), zeros.size(), 1);
  ASSERT_FALSE(ZSTD_isError(n));
  encoded.resize(4 + n);
  OneChunk c;
  c.hash = hash128(zeros.data(), zeros.size());
  const std::string e = decodeError(c, encoded, kMaxChunkBytes);
  EXPECT_NE(e.find("over the 4194304-byte chunk limit"), std::string::npos) << e;
}

TEST(ChunkCodecTest, RejectsUnknownContentSize) {
  // A streamed frame (ZSTD_compressStream2 without a pledged size) declares no content size.
  std::vector<uint8_t> raw(1000, 7);
  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  std::vector<uint8_t> encoded(4 + ZSTD_compressBound(raw.size()));
  encoded[0] = 1;
  ZSTD_outBuffer out{encoded.data() + 4, encoded.size() - 4, 0};
  ZSTD_inBuffer in{raw.data(), raw.size(), 0};
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 0);
  const size_t left = ZSTD_compressStream2(cctx, &out, &in, ZSTD_e_end);
  ZSTD_freeCCtx(cctx);
  ASSERT_EQ(left, 0u);
  encoded.resize(4 + out.pos);
  OneChunk c;
  c.hash = hash128(raw.data(), raw.size());
  const std::string e = decodeError(c, encoded, 1000);
  EXPECT_NE(e.find("does not declare its content size"), std::string::npos) << e;
}

TEST(ChunkCodecTest, RejectsCorruptChunks) {
  for (uint32_t shuffle : {0u, 4u}) {
    const OneChunk c = makeChunk(shuffle);
    const uint32_t n = uint32_t(c.raw.size());
    // Every single-byte corruption of the header or the frame is rejected, or (where zstd
    // ignores the bit) decodes to the right bytes: never to wrong ones.
    size_t caught = 0;
    for (size_t i = 0; i < c.encoded.size(); ++i) {
      std::vector<uint8_t> bad = c.encoded;
      bad[i] ^= 0x20;
      Result<std::vector<uint8_t>> r = decodeChunk(c.hash, bad.data(), bad.size(), n);
      if (r.ok()) {
        EXPECT_EQ(*r, c.raw) << "byte " << i;
      } else {
        ++caught;
        EXPECT_NE(r.error().message.find(c.hash.hex()), std::string::npos) << r.error().message;
      }
    }
    EXPECT_GT(caught, c.encoded.size() * 95 / 100) << "shuffle " << shuffle;
  }
}

TEST(ChunkCodecTest, RejectsWrongHash) {
  const OneChunk c = makeChunk(4);
  OneChunk misnamed = c;
  misnamed.hash.lo ^= 1;
  const std::string e = decodeError(misnamed, c.encoded, uint32_t(c.raw.size()));
  EXPECT_NE(e.find("content hashes to " + c.hash.hex()), std::string::npos) << e;
}

// --- Bad manifests and stores -------------------------------------------------------------

TEST(ChunkCodecTest, RejectsInconsistentManifests) {
  const RenderData data = cornellBox();
  ChunkStore store;
  const ChunkManifest good = encodeRenderData(data, store);
  const uint32_t pos = uint32_t(RenderDataArray::positions);
  auto expectInvalid = [&](ChunkManifest m, const char* what) {
    Status s = m.validate();
    ASSERT_FALSE(s.ok()) << what;
    EXPECT_NE(s.error().message.find(what), std::string::npos) << s.error().message;
    EXPECT_FALSE(decodeRenderData(m, store).ok());
  };
  ChunkManifest m = good;
  m.arrays[pos].elementSize = 16;
  expectInvalid(m, "element size");
  m = good;
  m.arrays[pos].elementCount += 1;
  expectInvalid(m, "elements need");
  m = good;
  m.arrays[pos].chunks[0].rawBytes -= 2;  // not whole elements
  expectInvalid(m, "whole elements");
  m = good;
  m.arrays[pos].elementCount = uint64_t(1) << 40;
  expectInvalid(m, "over the size limit");
  m = good;
  m.arrays[pos].chunks.push_back(m.arrays[pos].chunks[0]);
  expectInvalid(m, "chunks hold");
}

TEST(ChunkCodecTest, RejectsMissingChunk) {
  const RenderData data = cornellBox();
  ChunkStore store;
  const ChunkManifest m = encodeRenderData(data, store);
  const Hash128 gone = m.arrays[uint32_t(RenderDataArray::materials)].chunks[0].hash;
  store.erase(gone);
  Result<RenderData> r = decodeRenderData(m, store);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find(gone.hex()), std::string::npos) << r.error().message;
}

TEST(ChunkCodecTest, RejectsCorruptChunkInStoreNamingArray) {
  const RenderData data = cornellBox();
  ChunkStore store;
  const ChunkManifest m = encodeRenderData(data, store);
  const Hash128 h = m.arrays[uint32_t(RenderDataArray::normals)].chunks[0].hash;
  std::vector<uint8_t> bad = test::chunkBytes(store, h);
  bad.back() ^= 0xff;
  store.erase(h);
  store.put(h, bad);
  Result<RenderData> r = decodeRenderData(m, store);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("array normals"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find(h.hex()), std::string::npos) << r.error().message;
}

TEST(ChunkCodecTest, DecodedDataIsValidated) {
  RenderData data = cornellBox();
  data.triangles[0].v0 = 1000000;  // encode does not check; decode must
  ChunkStore store;
  const ChunkManifest m = encodeRenderData(data, store);
  Result<RenderData> r = decodeRenderData(m, store);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("vertex index"), std::string::npos) << r.error().message;
}

TEST(ChunkCodecTest, RejectsMalformedManifestBytes) {
  const RenderData data = cornellBox();
  ChunkStore store;
  const std::vector<uint8_t> bytes = serializeManifest(encodeRenderData(data, store));
  for (size_t keep = 0; keep < bytes.size(); keep += 7)
    EXPECT_FALSE(deserializeManifest(bytes.data(), keep).ok()) << keep;
  std::vector<uint8_t> longer = bytes;
  longer.push_back(0);
  EXPECT_FALSE(deserializeManifest(longer.data(), longer.size()).ok());
  // A chunk count of 2^32-1 in the first array: refused before allocating.
  std::vector<uint8_t> huge = bytes;
  const uint32_t count = 0xffffffffu;
  std::memcpy(huge.data() + 12 + 4 + 8, &count, 4);
  Result<ChunkManifest> r = deserializeManifest(huge.data(), huge.size());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("more than the message holds"), std::string::npos)
      << r.error().message;
}

// --- Measurements (printed, not asserted) --------------------------------------------------

struct Measured {
  uint64_t raw = 0, encoded = 0;
  double encodeSeconds = 0, decodeSeconds = 0;
};

Measured measure(const uint8_t* bytes, uint64_t size, const ChunkCodec& codec,
                 uint64_t limit = uint64_t(8) << 20) {
  Measured m;
  for (uint64_t off = 0; off < std::min(size, limit); off += kMaxChunkBytes) {
    const uint32_t n = uint32_t(std::min<uint64_t>(kMaxChunkBytes, size - off));
    const Hash128 h = hash128(bytes + off, n);
    auto t0 = std::chrono::steady_clock::now();
    const std::vector<uint8_t> e = encodeChunk(bytes + off, n, codec);
    auto t1 = std::chrono::steady_clock::now();
    Result<std::vector<uint8_t>> d = decodeChunk(h, e.data(), e.size(), n);
    auto t2 = std::chrono::steady_clock::now();
    EXPECT_TRUE(d.ok());
    m.raw += n;
    m.encoded += e.size();
    m.encodeSeconds += std::chrono::duration<double>(t1 - t0).count();
    m.decodeSeconds += std::chrono::duration<double>(t2 - t1).count();
  }
  return m;
}

void printCompression(const std::string& label, const RenderData& data) {
  std::printf("\n%s: %.2f MB of RenderData\n", label.c_str(), data.byteSize() / 1e6);
  // The sweep looks at the first 8 MiB of each array (all of it with PL_CODEC_SWEEP_ALL=1).
  const uint64_t sweepLimit = std::getenv("PL_CODEC_SWEEP_ALL") ? ~uint64_t(0) : 8u << 20;
  std::printf("  ratio at zstd level 1 or 3, no shuffle, shuffle 4 or shuffle element size\n");
  std::printf(
      "  %-18s %10s |    l1  l1s4  l1sE    l3  l3s4  l3sE | default: ratio enc MB/s "
      "dec MB/s\n",
      "array", "bytes");
  for (uint32_t i = 0; i < kRenderDataArrayCount; ++i) {
    const RenderDataArray which = static_cast<RenderDataArray>(i);
    const RenderData::Bytes b = data.arrayBytes(which);
    if (b.size == 0) continue;
    const ChunkCodec options[] = {{1, 0}, {1, 4}, {1, b.elementSize},
                                  {3, 0}, {3, 4}, {3, b.elementSize}};
    std::printf("  %-18s %10llu |", renderDataArrayName(which), (unsigned long long)b.size);
    for (const ChunkCodec& c : options) {
      const Measured m = measure(b.data, b.size, c, sweepLimit);
      std::printf(" %5.2f", double(m.raw) / m.encoded);
    }
    const Measured d = measure(b.data, b.size, defaultChunkCodec(which), ~uint64_t(0));
    std::printf(" | %5.2f %7.0f %7.0f\n", double(d.raw) / d.encoded,
                d.raw / 1e6 / std::max(1e-9, d.encodeSeconds),
                d.raw / 1e6 / std::max(1e-9, d.decodeSeconds));
  }
  ChunkStore store;
  auto t0 = std::chrono::steady_clock::now();
  const ChunkManifest m = encodeRenderData(data, store);
  auto t1 = std::chrono::steady_clock::now();
  Result<RenderData> back = decodeRenderData(m, store);
  auto t2 = std::chrono::steady_clock::now();
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(back->arrayHashes(), data.arrayHashes());
  const double enc = std::chrono::duration<double>(t1 - t0).count();
  const double dec = std::chrono::duration<double>(t2 - t1).count();
  std::printf(
      "  whole scene: %llu chunks, %llu -> %llu bytes (%.2fx); encode %.0f MB/s, decode "
      "+ verify + validate %.0f MB/s (1 thread)\n",
      (unsigned long long)m.chunkHashes().size(), (unsigned long long)m.rawBytes(),
      (unsigned long long)m.encodedBytes(), double(m.rawBytes()) / m.encodedBytes(),
      m.rawBytes() / 1e6 / enc, m.rawBytes() / 1e6 / dec);
}

TEST(ChunkCodecTest, PrintsCompressionOnCornellBox) {
  printCompression("Cornell box (scenes/cornell_box.gltf)", cornellBox());
  printCompression("Cornell box + large synthetic arrays", withLargeArrays(cornellBox()));
}

void printSharedScene(const char* relative) {
  const std::string path = std::string(PEERLIGHT_SHARED_DIR) + "/scenes/" + relative;
  if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " not present";
  CompileOptions options;
  options.width = options.height = 256;
  Result<RenderData> data = loadAndCompile(path, options);
  ASSERT_TRUE(data.ok()) << data.error().message;
  printCompression(relative, *data);
}

TEST(ChunkCodecTest, PrintsCompressionOnDamagedHelmet) {
  printSharedScene("khronos-gltf/DamagedHelmet/glTF/DamagedHelmet.gltf");
}

TEST(ChunkCodecTest, PrintsCompressionOnSponza) {
  printSharedScene("sponza-crytek-rendu/sponza.gltf");
}

}  // namespace
}  // namespace pl
