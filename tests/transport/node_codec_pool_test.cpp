// The Render Node verifies put() chunks on a pool of codec threads (NodeOptions::codecThreads),
// so puts finish out of order. What must not change (node_service.h, Threads and put()):
//  - missing() and load() sent right behind a burst of puts (not waiting for them) see every
//    one of those puts: stored when good, still missing when refused;
//  - a bad chunk among many good ones fails only itself.
// Each test runs with one codec thread and with four (more than this machine may have, so
// that the threads really interleave). Real TCP on 127.0.0.1 (ephemeral port), node and raw
// client on one libuv loop in this thread. Nothing here measures speed.

#include <capnp/rpc-twoparty.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "core/render/cpu_device.h"
#include "core/scene/compile.h"
#include "core/util/hash.h"
#include "tests/transport/chunk_test_util.h"
#include "tests/transport/loop_test_util.h"
#include "tests/transport/test_node.h"
#include "transport/auth.h"
#include "transport/chunk_codec.h"
#include "transport/node_service.h"
#include "transport/protocol_convert.h"
#include "transport/tcp.h"
#include "transport/uv_kj_loop.h"

namespace pl {
namespace {

using testing::exceptionFrom;
using testing::TestNode;
using testing::waitFor;

ClusterKey testKey() { return testing::nodeTestKey(1); }

// An authenticated connection with a lease on device 0.
struct Session {
  Session(UvKjLoop& loop, const std::string& address)
      : loop(loop),
        stream(waitFor(loop, connectTcp(loop.lowLevelIo(), address))),
        rpc(*stream),
        gate(rpc.bootstrap().castAs<proto::Gate>()) {
    Nonce nonce = randomNonce();
    auto hello = gate.helloRequest();
    hello.setProtocolVersion(kProtocolVersion);
    hello.setNonce(kj::arrayPtr(nonce.data(), nonce.size()));
    hello.setPrimaryName("codec-pool-primary");
    auto reply = waitFor(loop, hello.send());
    auto nodeNonce = reply.getNonce();
    Proof mine = primaryProof(testKey(),
                              std::span<const uint8_t>(nodeNonce.begin(), nodeNonce.size()), nonce);
    auto auth = gate.authenticateRequest();
    auth.setProof(kj::arrayPtr(mine.data(), mine.size()));
    proto::Node::Client node = waitFor(loop, auth.send()).getNode();
    auto request = node.leaseRequest();
    auto r = request.initRequest();
    r.setPrimaryName("codec-pool-primary");
    r.initDevices(1).set(0, 0);
    auto leased = waitFor(loop, request.send());
    EXPECT_EQ(leased.getDevices().size(), 1u);
    lease = leased.getLease();
    session = leased.getSession();
  }

  // Sends a put without waiting for it.
  kj::Promise<void> put(const Hash128& hash, const std::vector<uint8_t>& encoded) {
    auto request = session.putRequest();
    auto chunk = request.initChunk();
    toProto(hash, chunk.initHash());
    chunk.setData(kj::arrayPtr(encoded.data(), encoded.size()));
    return request.send();
  }
  kj::Promise<std::vector<Hash128>> missing(const std::vector<Hash128>& hashes) {
    auto request = session.missingRequest();
    toProto(hashes, request.initHashes(uint32_t(hashes.size())));
    return request.send().then([](capnp::Response<proto::RenderSession::MissingResults>&& r) {
      return fromProto(r.getMissing()).value();
    });
  }
  // Waits for puts sent earlier; their own outcome is not checked (Cap'n Proto 0.9.2's stream
  // flow control need not report a refused put on it), only that they are answered in time.
  void drain(kj::Vector<kj::Promise<void>>& puts) {
    for (auto& put : puts) {
      auto e = exceptionFrom([&] { waitFor(loop, kj::mv(put), 20000); });
      KJ_IF_MAYBE (exception, e) {
        EXPECT_EQ(std::string(exception->getDescription().cStr()).find("test timed out"),
                  std::string::npos);
      }
    }
    puts.clear();
  }

  UvKjLoop& loop;
  kj::Own<kj::AsyncIoStream> stream;
  capnp::TwoPartyClient rpc;
  proto::Gate::Client gate;
  proto::Lease::Client lease = nullptr;
  proto::RenderSession::Client session = nullptr;
};

struct RawChunk {
  Hash128 hash;
  std::vector<uint8_t> encoded;
};

// `count` distinct chunks of `bytes` raw bytes each (noisy, so zstd has work to do).
std::vector<RawChunk> makeChunks(size_t count, size_t bytes, uint32_t seed) {
  std::mt19937 random(seed);
  std::vector<RawChunk> chunks;
  for (size_t i = 0; i < count; ++i) {
    std::vector<uint8_t> raw(bytes);
    for (size_t j = 0; j < bytes; ++j) raw[j] = uint8_t((random() & 0x0f) + (j & 0x30));
    chunks.push_back({hash128(raw.data(), raw.size()), encodeChunk(raw.data(), raw.size(), {})});
  }
  return chunks;
}

// Sorted hex names (readable in a failure message).
std::vector<std::string> names(const std::vector<Hash128>& hashes) {
  std::vector<std::string> out;
  for (const Hash128& h : hashes) out.push_back(h.hex());
  std::sort(out.begin(), out.end());
  return out;
}

NodeOptions withCodecThreads(uint32_t threads) {
  NodeOptions o;
  o.codecThreads = threads;
  return o;
}

// Many puts, then missing() at once (not waiting for the puts): none of them may be reported
// missing, whichever codec thread verified it and in whatever order they finished. A hash that
// was never put is the only one reported.
void missingRightAfterManyPutsSeesThemAll(uint32_t codecThreads) {
  std::vector<RawChunk> chunks = makeChunks(96, 64 << 10, 7);
  Hash128 neverPut = makeChunks(1, 1000, 99)[0].hash;
  UvKjLoop loop;
  TestNode node(loop, 1, withCodecThreads(codecThreads));
  Session s(loop, node.address());
  for (int round = 0; round < 2; ++round) {  // round 2: the same puts, now all cached
    kj::Vector<kj::Promise<void>> puts;
    std::vector<Hash128> asked;
    for (const RawChunk& c : chunks) {
      puts.add(s.put(c.hash, c.encoded));
      asked.push_back(c.hash);
    }
    asked.push_back(neverPut);
    std::vector<Hash128> lacking = waitFor(loop, s.missing(asked), 20000);
    EXPECT_EQ(names(lacking), names({neverPut})) << "round " << round;
    s.drain(puts);
  }
  EXPECT_EQ(node->cachedChunkCount(), chunks.size());
}

// Bad chunks among many good ones, all sent at once, then missing() at once: exactly the bad
// ones are missing, and the session keeps serving (the good versions are then accepted).
void badChunksAmongManyGoodAreTheOnlyOnesMissing(uint32_t codecThreads) {
  std::vector<RawChunk> chunks = makeChunks(64, 32 << 10, 11);
  UvKjLoop loop;
  TestNode node(loop, 1, withCodecThreads(codecThreads));
  Session s(loop, node.address());
  // Chunk 17 carries chunk 18's bytes (valid frame, wrong hash); chunk 40's frame is cut
  // short by one byte; chunk 41 has a byte of its compressed data flipped.
  std::vector<std::vector<uint8_t>> sent;
  for (const RawChunk& c : chunks) sent.push_back(c.encoded);
  sent[17] = chunks[18].encoded;
  sent[40].pop_back();
  sent[41][sent[41].size() / 2] ^= 0x5a;
  const std::vector<Hash128> bad = {chunks[17].hash, chunks[40].hash, chunks[41].hash};

  kj::Vector<kj::Promise<void>> puts;
  std::vector<Hash128> all;
  for (size_t i = 0; i < chunks.size(); ++i) {
    puts.add(s.put(chunks[i].hash, sent[i]));
    all.push_back(chunks[i].hash);
  }
  std::vector<Hash128> lacking = waitFor(loop, s.missing(all), 20000);
  EXPECT_EQ(names(lacking), names(bad));
  s.drain(puts);
  waitFor(loop, s.session.pingRequest().send());

  // The Primary sends the good versions; now nothing lacks.
  for (size_t i : {17u, 40u, 41u}) puts.add(s.put(chunks[i].hash, chunks[i].encoded));
  EXPECT_TRUE(waitFor(loop, s.missing(all), 20000).empty());
  s.drain(puts);
  EXPECT_EQ(node->cachedChunkCount(), chunks.size());
}

// The Cornell box at 64x48, cut into many small chunks.
struct SmallScene {
  std::shared_ptr<RenderData> data;
  ChunkStore store;
  ChunkManifest manifest;
};

SmallScene smallScene() {
  SmallScene out;
  CompileOptions compile;
  compile.width = 64;
  compile.height = 48;
  auto data =
      loadAndCompile(std::string(PEERLIGHT_SOURCE_DIR) + "/scenes/cornell_box.gltf", compile);
  EXPECT_TRUE(data.ok()) << data.error().message;
  out.data = std::make_shared<RenderData>(std::move(*data));
  ChunkEncodeOptions encode;
  encode.maxChunkBytes = 1 << 10;
  out.manifest = encodeRenderData(*out.data, out.store, encode);  // as variantOf() below
  return out;
}

// Another version of the scene (an edit, a camera move), its chunks added to the scene's store.
std::pair<std::shared_ptr<const RenderData>, ChunkManifest> variantOf(SmallScene& scene,
                                                                      RenderData data) {
  auto shared = std::make_shared<const RenderData>(std::move(data));
  ChunkEncodeOptions encode;
  encode.maxChunkBytes = 1 << 10;
  ChunkManifest manifest = encodeRenderData(*shared, scene.store, encode);
  return {shared, std::move(manifest)};
}

kj::Promise<void> prepare(Session& s, const ChunkManifest& manifest) {
  auto request = s.session.prepareRequest();
  toProto(manifest, request.initManifest());
  return request.send().ignoreResult();
}

// prepare(), then every chunk of the scene in upload order, none waited for.
void prepareAndPutAll(Session& s, const SmallScene& scene, kj::Vector<kj::Promise<void>>& puts) {
  puts.add(prepare(s, scene.manifest));
  for (const Hash128& h : scene.manifest.uploadOrder())
    puts.add(s.put(h, test::chunkBytes(scene.store, h)));
}

// Renders a unit of scene `id` on the node and on a local device: the same sums.
void expectRendersLikeALocalDevice(UvKjLoop& loop, Session& s, const Hash128& id,
                                   std::shared_ptr<const RenderData> scene) {
  WorkUnit unit;
  unit.tile = Rect{8, 8, 16, 16};
  unit.sampleBegin = 0;
  unit.sampleEnd = 2;
  unit.totalSamples = 2;
  auto request = s.session.renderRequest();
  toProto(id, request.initScene());
  request.setDevice(0);
  toProto(unit, request.initUnit());
  auto remote = fromProto(waitFor(loop, request.send(), 20000).getResult());
  ASSERT_TRUE(remote.ok()) << remote.error().message;
  CpuDevice local(1);
  ASSERT_TRUE(local.load(scene).ok());
  EXPECT_EQ(remote->sums, local.render(unit).value().sums);
}

// A scene's puts and its load() sent together: the load waits for every put (many small
// chunks, verified on several threads) and renders like a local device. With a prepare() first
// (what a Primary sends), each put is decoded into place as it comes, in whatever order, and
// the load decodes nothing more: the same image.
void loadRightAfterThePutsUsesThemAll(uint32_t codecThreads, bool prepared) {
  SmallScene small = smallScene();
  const ChunkManifest& manifest = small.manifest;
  const ChunkStore& store = small.store;
  ASSERT_GT(manifest.chunkHashes().size(), 8u);

  UvKjLoop loop;
  NodeOptions o = withCodecThreads(codecThreads);
  o.chunkCacheBytes = 1;  // every chunk lives only by its pin until the load
  TestNode node(loop, 1, o);
  Session s(loop, node.address());
  kj::Vector<kj::Promise<void>> puts;
  std::vector<Hash128> order = manifest.chunkHashes();
  if (prepared) {
    puts.add(prepare(s, manifest));
    std::shuffle(order.begin(), order.end(), std::mt19937(codecThreads));
  }
  for (const Hash128& h : order) puts.add(s.put(h, test::chunkBytes(store, h)));
  auto load = s.session.loadRequest();
  toProto(manifest, load.initManifest());
  Hash128 id = fromProto(waitFor(loop, load.send(), 20000).getScene());
  s.drain(puts);
  EXPECT_EQ(node->pinnedChunkBytes(), 0u);
  EXPECT_EQ(node->stats().scenesDecoded, 1u);
  EXPECT_EQ(node->stats().scenesPrepared, prepared ? 1u : 0u);
  expectRendersLikeALocalDevice(loop, s, id, small.data);
}

// After a prepare(), a put whose bytes do not hash to its name is refused as without one, and
// the load names that chunk and why; the Primary's good version then loads.
void aPreparedLoadNamesABadChunk(uint32_t codecThreads) {
  SmallScene scene = smallScene();
  const std::vector<Hash128> hashes = scene.manifest.chunkHashes();
  ASSERT_GT(hashes.size(), 8u);
  UvKjLoop loop;
  TestNode node(loop, 1, withCodecThreads(codecThreads));
  Session s(loop, node.address());
  kj::Vector<kj::Promise<void>> puts;
  puts.add(prepare(s, scene.manifest));
  const Hash128 bad = hashes[3];
  for (const Hash128& h : hashes)
    puts.add(s.put(h, test::chunkBytes(scene.store, h == bad ? hashes[4] : h)));
  auto load = s.session.loadRequest();
  toProto(scene.manifest, load.initManifest());
  auto failed = exceptionFrom([&] { waitFor(loop, load.send(), 20000); });
  KJ_IF_MAYBE (e, failed) {
    const std::string message = e->getDescription().cStr();
    EXPECT_NE(message.find("load: chunk " + bad.hex() + ": "), std::string::npos) << message;
  } else {
    ADD_FAILURE() << "a load with a bad chunk succeeded";
  }
  s.drain(puts);

  puts.add(s.put(bad, test::chunkBytes(scene.store, bad)));
  auto again = s.session.loadRequest();
  toProto(scene.manifest, again.initManifest());
  Hash128 id = fromProto(waitFor(loop, again.send(), 20000).getScene());
  s.drain(puts);
  expectRendersLikeALocalDevice(loop, s, id, scene.data);
}

TEST(NodeServiceCodecPool, MissingRightAfterManyPutsSeesThemAll) {
  for (uint32_t threads : {1u, 4u}) {
    SCOPED_TRACE(std::to_string(threads) + " codec threads");
    missingRightAfterManyPutsSeesThemAll(threads);
  }
}

TEST(NodeServiceCodecPool, BadChunksAmongManyGoodAreTheOnlyOnesMissing) {
  for (uint32_t threads : {1u, 4u}) {
    SCOPED_TRACE(std::to_string(threads) + " codec threads");
    badChunksAmongManyGoodAreTheOnlyOnesMissing(threads);
  }
}

TEST(NodeServiceCodecPool, LoadRightAfterThePutsUsesThemAll) {
  for (uint32_t threads : {1u, 4u}) {
    SCOPED_TRACE(std::to_string(threads) + " codec threads");
    loadRightAfterThePutsUsesThemAll(threads, false);
  }
}

TEST(NodeServiceCodecPool, PreparedPutsAreDecodedAsTheyCome) {
  for (uint32_t threads : {1u, 4u}) {
    SCOPED_TRACE(std::to_string(threads) + " codec threads");
    loadRightAfterThePutsUsesThemAll(threads, true);
  }
}

TEST(NodeServiceCodecPool, APreparedLoadNamesABadChunk) {
  for (uint32_t threads : {1u, 4u}) {
    SCOPED_TRACE(std::to_string(threads) + " codec threads");
    aPreparedLoadNamesABadChunk(threads);
  }
}

Hash128 loadOf(UvKjLoop& loop, Session& s, const ChunkManifest& manifest) {
  auto load = s.session.loadRequest();
  toProto(manifest, load.initManifest());
  return fromProto(waitFor(loop, load.send(), 20000).getScene());
}

// A camera move right behind the first upload (a second prepare of the same geometry while the
// first load is still decoding): both loads are answered, the scene is decoded once, and each
// renders with its own camera.
TEST(NodeServiceCodecPool, ACameraMoveDuringThePreparedLoadSharesIt) {
  SmallScene a = smallScene();
  RenderData movedData = *a.data;
  movedData.camera[0].position.x += 0.1f;
  auto [moved, b] = variantOf(a, std::move(movedData));
  UvKjLoop loop;
  TestNode node(loop, 1, withCodecThreads(2));
  Session s(loop, node.address());
  kj::Vector<kj::Promise<void>> puts;
  prepareAndPutAll(s, a, puts);
  auto loadA = s.session.loadRequest();
  toProto(a.manifest, loadA.initManifest());
  auto answerA = loadA.send();
  puts.add(prepare(s, b));
  for (const ChunkRef& ref : b.arrays[size_t(RenderDataArray::camera)].chunks)
    puts.add(s.put(ref.hash, test::chunkBytes(a.store, ref.hash)));
  const Hash128 idB = loadOf(loop, s, b);
  const Hash128 idA = fromProto(waitFor(loop, kj::mv(answerA), 20000).getScene());
  s.drain(puts);
  EXPECT_EQ(node->stats().scenesDecoded, 1u);
  EXPECT_EQ(node->stats().camerasDecoded, 1u);
  expectRendersLikeALocalDevice(loop, s, idA, a.data);
  expectRendersLikeALocalDevice(loop, s, idB, moved);
}

// An edit during the first upload (a prepare of other geometry before the first load): the
// edited scene's load is answered, prepared, and renders the edited scene.
TEST(NodeServiceCodecPool, AnEditBeforeTheFirstLoadLoadsTheEditedScene) {
  SmallScene a = smallScene();
  RenderData editedData = *a.data;
  editedData.materials[0].roughnessFactor = 0.25f;
  auto [edited, b] = variantOf(a, std::move(editedData));
  UvKjLoop loop;
  TestNode node(loop, 1, withCodecThreads(2));
  Session s(loop, node.address());
  kj::Vector<kj::Promise<void>> puts;
  prepareAndPutAll(s, a, puts);
  s.drain(puts);
  puts.add(prepare(s, b));
  const std::vector<Hash128> first = a.manifest.chunkHashes();
  size_t added = 0;
  for (const Hash128& h : b.uploadOrder()) {
    if (std::find(first.begin(), first.end(), h) != first.end()) continue;
    puts.add(s.put(h, test::chunkBytes(a.store, h)));
    ++added;
  }
  EXPECT_GE(added, 1u);
  const Hash128 id = loadOf(loop, s, b);
  s.drain(puts);
  EXPECT_EQ(node->stats().scenesPrepared, 1u);
  expectRendersLikeALocalDevice(loop, s, id, edited);
}

// A prepare() with a manifest the node cannot use fails, saying why, and the session goes on.
TEST(NodeServiceCodecPool, AMalformedPrepareIsRefused) {
  SmallScene scene = smallScene();
  UvKjLoop loop;
  TestNode node(loop, 1, withCodecThreads(1));
  Session s(loop, node.address());
  ChunkManifest wrong = scene.manifest;
  wrong.arrays[0].elementSize += 4;
  auto failed = exceptionFrom([&] { waitFor(loop, prepare(s, wrong)); });
  KJ_IF_MAYBE (e, failed) {
    EXPECT_NE(std::string(e->getDescription().cStr()).find("manifest: array positions has element"),
              std::string::npos)
        << e->getDescription().cStr();
  } else {
    ADD_FAILURE() << "a malformed manifest was prepared";
  }
  // One content listed with two sizes (a hash names bytes, so it has one size).
  ChunkManifest twice = scene.manifest;
  ChunkRef* a = nullptr;
  ChunkRef* b = nullptr;
  for (ArrayManifest& array : twice.arrays)
    for (ChunkRef& ref : array.chunks) {
      if (a == nullptr) a = &ref;
      else if (b == nullptr && ref.rawBytes != a->rawBytes) b = &ref;
    }
  ASSERT_NE(b, nullptr);
  b->hash = a->hash;
  failed = exceptionFrom([&] { waitFor(loop, prepare(s, twice)); });
  KJ_IF_MAYBE (e, failed) {
    EXPECT_NE(std::string(e->getDescription().cStr())
                  .find("manifest: chunk " + a->hash.hex() + " is listed with"),
              std::string::npos)
        << e->getDescription().cStr();
  } else {
    ADD_FAILURE() << "a manifest listing one chunk with two sizes was prepared";
  }
  waitFor(loop, s.session.pingRequest().send());
}

}  // namespace
}  // namespace pl
