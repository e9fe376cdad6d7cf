// PreparedLoad (transport/prepared_load.h): render data decoded into place as its chunks come,
// on a pool of codec threads, in any order. What must hold: the data is bitwise what
// decodeRenderData() gives; the geometry is handed out (once) as soon as its chunks are in and
// checked, before the rest; a bad chunk is named and can be replaced; a missing one is named.

#include "transport/prepared_load.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <string>

#include "core/kernel/texture.h"
#include "core/scene/texture_mips.h"
#include "tests/transport/loop_test_util.h"
#include "tests/transport/node_thread.h"
#include "tests/transport/textured_scene.h"
#include "transport/chunk_codec.h"
#include "transport/uv_kj_loop.h"

namespace pl {
namespace {

using testing::waitFor;

struct Encoded {
  RenderData data;
  ChunkStore store;
  ChunkManifest manifest;
};

Encoded encoded(RenderData data) {
  Encoded out;
  out.data = std::move(data);
  ChunkEncodeOptions options;
  options.maxChunkBytes = 1 << 10;  // many chunks
  out.manifest = encodeRenderData(out.data, out.store, options);
  return out;
}

std::shared_ptr<const std::vector<uint8_t>> bytesOf(const ChunkStore& store, const Hash128& h) {
  std::span<const uint8_t> bytes = *store.find(h);
  return std::make_shared<const std::vector<uint8_t>>(bytes.begin(), bytes.end());
}

PreparedLoad::EncodedLookup nothingHeld() {
  return [](const Hash128&) { return std::shared_ptr<const std::vector<uint8_t>>(); };
}

bool isGeometry(const ChunkManifest& manifest, const Hash128& hash) {
  for (RenderDataArray which : kGeometryArrays)
    for (const ChunkRef& ref : manifest.arrays[static_cast<uint32_t>(which)].chunks)
      if (ref.hash == hash) return true;
  return false;
}

TEST(PreparedLoadTest, GeometryFirstThenTheRestInAnyOrderGivesTheSameData) {
  for (unsigned threads : {1u, 3u}) {
    SCOPED_TRACE(std::to_string(threads) + " codec threads");
    Encoded scene = encoded(testing::compiledCornellBox(32));
    UvKjLoop loop;
    JobQueue pool(threads);
    PreparedLoad load(scene.manifest, pool);
    int used = 0;
    size_t restPlacedWhenUsed = 0;
    std::vector<Hash128> order = scene.manifest.uploadOrder();
    const auto firstOther = std::find_if(order.begin(), order.end(), [&](const Hash128& h) {
      return !isGeometry(scene.manifest, h);
    });
    ASSERT_NE(firstOther, order.end());
    std::shuffle(firstOther, order.end(), std::mt19937(threads));
    load.onGeometry([&](const RenderData& data, std::shared_ptr<const void>) {
      ++used;
      EXPECT_EQ(data.positions.size(), scene.data.positions.size());
      EXPECT_TRUE(std::equal(data.triangles.begin(), data.triangles.end(),
                             scene.data.triangles.begin(), [](const auto& a, const auto& b) {
                               return std::memcmp(&a, &b, sizeof(a)) == 0;
                             }));
      for (const Hash128& h : order) restPlacedWhenUsed += !isGeometry(scene.manifest, h) &&
                                                           load.holds(h);
      return kj::READY_NOW;
    });
    // The geometry's chunks first (what uploadOrder() puts first), waited for one by one.
    for (auto it = order.begin(); it != firstOther; ++it)
      waitFor(loop, load.place(*it, bytesOf(scene.store, *it)));
    for (int i = 0; i < 100 && used == 0; ++i)
      loop.timer().afterDelay(10 * kj::MILLISECONDS).wait(loop.waitScope());
    EXPECT_EQ(used, 1) << "the geometry was not handed out once its chunks were in";
    EXPECT_EQ(restPlacedWhenUsed, 0u);
    kj::Vector<kj::Promise<void>> rest;
    for (auto it = firstOther; it != order.end(); ++it) {
      EXPECT_TRUE(load.wants(*it));
      rest.add(load.place(*it, bytesOf(scene.store, *it)));
    }
    std::shared_ptr<const RenderData> data = waitFor(loop, load.finish(nothingHeld()));
    waitFor(loop, kj::joinPromises(rest.releaseAsArray()));
    EXPECT_EQ(used, 1);
    EXPECT_EQ(data->arrayHashes(), scene.data.arrayHashes());
  }
}

TEST(PreparedLoadTest, ABadChunkIsNamedAndItsGoodVersionTakenFromTheNode) {
  Encoded scene = encoded(testing::compiledCornellBox(32));
  const std::vector<Hash128> order = scene.manifest.uploadOrder();
  UvKjLoop loop;
  JobQueue pool(2);
  PreparedLoad load(scene.manifest, pool);
  const Hash128 bad = order[2];
  std::vector<uint8_t> corrupt = *bytesOf(scene.store, bad);
  corrupt[corrupt.size() / 2] ^= 0x5a;
  auto failed = testing::exceptionFrom([&] {
    waitFor(loop, load.place(bad, std::make_shared<const std::vector<uint8_t>>(corrupt)));
  });
  KJ_IF_MAYBE (e, failed) {
    EXPECT_EQ(std::string(e->getDescription().cStr()).find("chunk " + bad.hex() + ": "), 0u)
        << e->getDescription().cStr();
  } else {
    ADD_FAILURE() << "a corrupt chunk was placed";
  }
  EXPECT_TRUE(load.wants(bad));
  for (const Hash128& h : order)
    if (!(h == bad)) waitFor(loop, load.place(h, bytesOf(scene.store, h)));
  // The node has the good version (a later put, its cache): finish() takes it from there.
  std::shared_ptr<const RenderData> data = waitFor(
      loop, load.finish([&](const Hash128& h) { return h == bad ? bytesOf(scene.store, h) : nullptr; }));
  EXPECT_EQ(data->arrayHashes(), scene.data.arrayHashes());
}

// A prepared load that replaces another (an edit before the first load) takes the chunks the
// other placed: with its own new chunks placed, it needs nothing from the node.
TEST(PreparedLoadTest, AReplacementTakesWhatTheLoadItReplacesPlaced) {
  Encoded a = encoded(testing::compiledCornellBox(32));
  RenderData edited = a.data;
  edited.materials[0].roughnessFactor = 0.25f;
  ChunkEncodeOptions options;
  options.maxChunkBytes = 1 << 10;
  const ChunkManifest b = encodeRenderData(edited, a.store, options);
  UvKjLoop loop;
  JobQueue pool(2);
  auto first = std::make_shared<PreparedLoad>(a.manifest, pool);
  for (const Hash128& h : a.manifest.uploadOrder())
    waitFor(loop, first->place(h, bytesOf(a.store, h)));
  PreparedLoad second(b, pool);
  second.takeFrom(std::move(first));
  const std::vector<Hash128> old = a.manifest.chunkHashes();
  for (const Hash128& h : b.uploadOrder())
    if (std::find(old.begin(), old.end(), h) == old.end() && second.wants(h))
      waitFor(loop, second.place(h, bytesOf(a.store, h)));
  std::shared_ptr<const RenderData> data = waitFor(loop, second.finish(nothingHeld()));
  EXPECT_EQ(data->arrayHashes(), edited.arrayHashes());
}

// A textured scene's mip levels come with no put: finish() computes them and checks them
// against the manifest, and fails naming the chunk when they differ (another build's).
TEST(PreparedLoadTest, MipLevelsAreComputedAndCheckedNotPut) {
  Encoded scene = encoded(testing::texturedCornellBox(16));
  const ArrayManifest& mips = scene.manifest.arrays[uint32_t(RenderDataArray::mipTexels)];
  ASSERT_GT(mips.chunks.size(), 1u);
  UvKjLoop loop;
  JobQueue pool(2);
  {
    PreparedLoad load(scene.manifest, pool);
    for (const Hash128& h : scene.manifest.uploadOrder())
      waitFor(loop, load.place(h, bytesOf(scene.store, h)));
    // Each texture's levels are computed once its level 0 is in, before finish().
    for (int i = 0; i < 200 && load.texturesWithLevels() < 2; ++i)
      loop.timer().afterDelay(5 * kj::MILLISECONDS).wait(loop.waitScope());
    EXPECT_EQ(load.texturesWithLevels(), 2u);
    std::shared_ptr<const RenderData> data = waitFor(loop, load.finish(nothingHeld()));
    EXPECT_EQ(data->arrayHashes(), scene.data.arrayHashes());
  }
  ChunkManifest other = scene.manifest;
  Hash128& forged = other.arrays[uint32_t(RenderDataArray::mipTexels)].chunks.back().hash;
  forged.hi ^= 1;
  PreparedLoad load(other, pool);
  for (const Hash128& h : other.uploadOrder())
    waitFor(loop, load.place(h, bytesOf(scene.store, h)));
  auto failed = testing::exceptionFrom([&] { waitFor(loop, load.finish(nothingHeld())); });
  KJ_IF_MAYBE (e, failed) {
    const std::string message = e->getDescription().cStr();
    EXPECT_NE(message.find("array mipTexels: chunk " + forged.hex()), std::string::npos)
        << e->getDescription().cStr();
  } else {
    ADD_FAILURE() << "mip levels that differ from this build's were taken";
  }
}

// Render data compile() never makes but a sender may: a texture that shares another's level 0
// (its levels are not planned texture by texture, and are computed at finish()), and a
// constant one whose texels chunks have the bytes of chunks of its mip levels (placing such a
// chunk writes the texels alone; the levels are computed).
TEST(PreparedLoadTest, SharedLevelsAndChunksOfBothArraysGiveTheSameData) {
  RenderData shared = testing::texturedCornellBox(16);
  kernel::Texture again = shared.textures[0];
  again.mipTexelOffset = uint32_t(shared.mipTexels.size());
  shared.textures.push_back(again);
  const auto levelsEnd = shared.mipTexels.begin() + shared.textures[1].mipTexelOffset;
  const std::vector<kernel::Rgba8> levels(shared.mipTexels.begin(), levelsEnd);
  shared.mipTexels.insert(shared.mipTexels.end(), levels.begin(), levels.end());
  RenderData constant = testing::texturedCornellBox(16);
  kernel::Texture grey{64, 64, uint32_t(constant.texels.size()), kernel::kWrapRepeat,
                       kernel::kWrapRepeat, kernel::kFilterLinear};
  grey.mipLevels = kernel::mipLevelCount(64, 64);
  grey.mipTexelOffset = uint32_t(constant.mipTexels.size());
  constant.textures.push_back(grey);
  const std::vector<kernel::Rgba8> level0(64 * 64, kernel::Rgba8{90, 90, 90, 255});
  constant.texels.insert(constant.texels.end(), level0.begin(), level0.end());
  appendMipLevels(level0, 64, 64, false, constant.mipTexels);
  for (RenderData* data : {&shared, &constant}) {
    ASSERT_TRUE(data->validate().ok()) << data->validate().error().message;
    Encoded scene = encoded(*data);
    UvKjLoop loop;
    JobQueue pool(2);
    PreparedLoad load(scene.manifest, pool);
    for (const Hash128& h : scene.manifest.uploadOrder())
      waitFor(loop, load.place(h, bytesOf(scene.store, h)));
    loop.timer().afterDelay(20 * kj::MILLISECONDS).wait(loop.waitScope());
    if (data == &shared) {
      EXPECT_EQ(load.texturesWithLevels(), 0u);  // computed at finish()
    }
    std::shared_ptr<const RenderData> back = waitFor(loop, load.finish(nothingHeld()));
    EXPECT_EQ(back->arrayHashes(), data->arrayHashes());
  }
  // The constant texture's texels and levels share chunks.
  Encoded scene = encoded(constant);
  const std::vector<Hash128> sent = scene.manifest.chunkHashes();
  size_t sharedChunks = 0;
  for (const ChunkRef& ref : scene.manifest.arrays[uint32_t(RenderDataArray::mipTexels)].chunks)
    sharedChunks += std::find(sent.begin(), sent.end(), ref.hash) != sent.end();
  EXPECT_GT(sharedChunks, 0u);
}

TEST(PreparedLoadTest, AMissingChunkAndBadGeometryAreNamed) {
  Encoded scene = encoded(testing::compiledCornellBox(32));
  {
    UvKjLoop loop;
    JobQueue pool(2);
    PreparedLoad load(scene.manifest, pool);
    const std::vector<Hash128> order = scene.manifest.uploadOrder();
    for (size_t i = 1; i < order.size(); ++i)
      waitFor(loop, load.place(order[i], bytesOf(scene.store, order[i])));
    auto failed = testing::exceptionFrom([&] { waitFor(loop, load.finish(nothingHeld())); });
    KJ_IF_MAYBE (e, failed) {
      EXPECT_EQ(std::string(e->getDescription().cStr()),
                "chunk " + order[0].hex() + " is missing (put it first)");
    } else {
      ADD_FAILURE() << "a load with a chunk missing finished";
    }
  }
  // A triangle that indexes beyond the vertices: the geometry is never handed out, and the
  // load fails naming it.
  RenderData broken = testing::compiledCornellBox(32);
  broken.triangles[5].v1 = uint32_t(broken.positions.size()) + 7;
  Encoded bad = encoded(std::move(broken));
  UvKjLoop loop;
  JobQueue pool(2);
  PreparedLoad load(bad.manifest, pool);
  bool used = false;
  load.onGeometry([&](const RenderData&, std::shared_ptr<const void>) {
    used = true;
    return kj::READY_NOW;
  });
  for (const Hash128& h : bad.manifest.uploadOrder())
    waitFor(loop, load.place(h, bytesOf(bad.store, h)));
  auto failed = testing::exceptionFrom([&] { waitFor(loop, load.finish(nothingHeld())); });
  EXPECT_FALSE(used);
  KJ_IF_MAYBE (e, failed) {
    EXPECT_NE(std::string(e->getDescription().cStr()).find("triangles[5] has a vertex index"),
              std::string::npos)
        << e->getDescription().cStr();
  } else {
    ADD_FAILURE() << "bad geometry loaded";
  }
}

}  // namespace
}  // namespace pl
