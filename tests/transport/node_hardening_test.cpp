// The Render Node against clients that do not play along, and against its own chunk cache:
//  - the chunk cache pins what a session put (or what missing() reported present) until its
//    load() uses it, so a tiny cache or two uploads at once never make a load fail, and the
//    pins of one session are bounded;
//  - connections that never authenticate are closed after the handshake timeout, connections
//    beyond the cap of unauthenticated ones are closed at once (and logged rate-limited), and a
//    message before authentication is held to a small size limit.
// Real TCP on 127.0.0.1 (ephemeral ports), node and raw clients on one libuv loop in this thread.

#include <capnp/rpc-twoparty.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "core/cluster/memory_budget.h"
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
using testing::waitFor;

ClusterKey testKey() { return testing::nodeTestKey(1); }

std::string describe(const kj::Maybe<kj::Exception>& e) {
  KJ_IF_MAYBE (exception, e) return exception->getDescription().cStr();
  return "<no exception>";
}

using testing::TestNode;

kj::Promise<capnp::Response<proto::Gate::HelloResults>> sendHello(proto::Gate::Client& gate,
                                                                  const Nonce& nonce,
                                                                  const std::string& name) {
  auto hello = gate.helloRequest();
  hello.setProtocolVersion(kProtocolVersion);
  hello.setNonce(kj::arrayPtr(nonce.data(), nonce.size()));
  hello.setPrimaryName(name);
  return hello.send();
}

struct Client {
  Client(UvKjLoop& loop, const std::string& address)
      : loop(loop),
        stream(waitFor(loop, connectTcp(loop.lowLevelIo(), address))),
        rpc(*stream),
        gate(rpc.bootstrap().castAs<proto::Gate>()) {}

  // hello, then authenticate; `afterAuthenticate` runs once authenticate is sent, before its
  // reply is awaited (to pipeline calls behind it).
  template <typename Fn>
  proto::Node::Client authenticate(Fn&& afterAuthenticate) {
    Nonce nonce = randomNonce();
    auto reply = waitFor(loop, sendHello(gate, nonce, "hardening-primary"));
    auto nodeNonce = reply.getNonce();
    Proof mine = primaryProof(testKey(),
                              std::span<const uint8_t>(nodeNonce.begin(), nodeNonce.size()), nonce);
    auto auth = gate.authenticateRequest();
    auth.setProof(kj::arrayPtr(mine.data(), mine.size()));
    auto sent = auth.send();
    afterAuthenticate();
    return waitFor(loop, kj::mv(sent)).getNode();
  }
  proto::Node::Client authenticate() {
    return authenticate([] {});
  }

  UvKjLoop& loop;
  kj::Own<kj::AsyncIoStream> stream;
  capnp::TwoPartyClient rpc;
  proto::Gate::Client gate;
};

// A lease on one device. The session serves only while the Lease capability is held.
struct Leased {
  proto::Lease::Client lease = nullptr;
  proto::RenderSession::Client session = nullptr;
};

Leased takeLease(UvKjLoop& loop, proto::Node::Client& node, uint32_t device) {
  auto request = node.leaseRequest();
  auto r = request.initRequest();
  r.setPrimaryName("hardening-primary");
  r.initDevices(1).set(0, device);
  auto reply = waitFor(loop, request.send());
  EXPECT_EQ(reply.getDevices().size(), 1u);
  return Leased{reply.getLease(), reply.getSession()};
}

struct Scene {
  std::shared_ptr<RenderData> data;
  ChunkStore store;
  ChunkManifest manifest;
};

// The Cornell box at `width` x 48, its vertices moved by `shift` (so scenes differ in more
// than their camera), cut into 1 KiB chunks so that it takes many puts.
Scene makeScene(uint32_t width, float shift) {
  CompileOptions options;
  options.width = width;
  options.height = 48;
  auto data =
      loadAndCompile(std::string(PEERLIGHT_SOURCE_DIR) + "/scenes/cornell_box.gltf", options);
  PL_CHECK_MSG(data.ok(), "%s", data.ok() ? "" : data.error().message.c_str());
  for (auto& p : data->positions) p.y += shift;
  Scene scene;
  scene.data = std::make_shared<RenderData>(std::move(*data));
  ChunkEncodeOptions encode;
  encode.maxChunkBytes = 1 << 10;
  scene.manifest = encodeRenderData(*scene.data, scene.store, encode);
  return scene;
}

std::vector<Hash128> askMissing(UvKjLoop& loop, proto::RenderSession::Client& session,
                                const std::vector<Hash128>& hashes) {
  auto request = session.missingRequest();
  toProto(hashes, request.initHashes(uint32_t(hashes.size())));
  return fromProto(waitFor(loop, request.send()).getMissing()).value();
}

void putChunks(UvKjLoop& loop, proto::RenderSession::Client& session, const ChunkStore& store,
               const std::vector<Hash128>& hashes) {
  kj::Vector<kj::Promise<void>> puts;
  for (const Hash128& h : hashes) {
    auto request = session.putRequest();
    auto chunk = request.initChunk();
    toProto(h, chunk.initHash());
    const std::vector<uint8_t>& bytes = test::chunkBytes(store, h);
    chunk.setData(kj::arrayPtr(bytes.data(), bytes.size()));
    puts.add(request.send());
  }
  waitFor(loop, kj::joinPromises(puts.releaseAsArray()));
}

// missing -> put what lacks (no load). Returns how many chunks were put.
size_t sendChunks(UvKjLoop& loop, proto::RenderSession::Client& session, const Scene& scene) {
  std::vector<Hash128> lacking = askMissing(loop, session, scene.manifest.chunkHashes());
  putChunks(loop, session, scene.store, lacking);
  return lacking.size();
}

kj::Promise<capnp::Response<proto::RenderSession::LoadResults>> sendLoad(
    proto::RenderSession::Client& session, const Scene& scene) {
  auto load = session.loadRequest();
  toProto(scene.manifest, load.initManifest());
  return load.send();
}

WorkUnit smallUnit() {
  WorkUnit unit;
  unit.tile = Rect{8, 8, 16, 16};
  unit.sampleBegin = 0;
  unit.sampleEnd = 2;
  unit.totalSamples = 2;
  return unit;
}

// Renders smallUnit() of the loaded scene on `device` and compares it with a local render.
void expectRendersLikeLocal(UvKjLoop& loop, proto::RenderSession::Client& session,
                            const Hash128& sceneId, uint32_t device, const Scene& scene) {
  auto request = session.renderRequest();
  toProto(sceneId, request.initScene());
  request.setDevice(device);
  toProto(smallUnit(), request.initUnit());
  auto reply = waitFor(loop, request.send(), 20000);
  auto remote = fromProto(reply.getResult());
  ASSERT_TRUE(remote.ok()) << remote.error().message;
  CpuDevice local(1);
  ASSERT_TRUE(local.load(scene.data).ok());
  EXPECT_EQ(remote->sums, local.render(smallUnit()).value().sums);
}

class NodeHardening : public ::testing::Test {};

// ---------------------------------------------------------------------------------------------
// Chunk cache pinning

// A cache far smaller than one scene, and two sessions that upload (all puts of both) before
// either loads: without pins each put evicts the chunks before it, and both loads fail.
TEST_F(NodeHardening, TwoUploadsIntoATinyCacheBothLoad) {
  Scene a = makeScene(64, 0.0f), b = makeScene(72, 0.01f);
  ASSERT_GT(a.manifest.chunkHashes().size(), 4u);
  UvKjLoop loop;
  NodeOptions options;
  options.chunkCacheBytes = 1;
  TestNode node(loop, 2, options);
  {
    Client client(loop, node.address());
    proto::Node::Client nodeCap = client.authenticate();
    Leased la = takeLease(loop, nodeCap, 0), lb = takeLease(loop, nodeCap, 1);
    proto::RenderSession::Client& sa = la.session;
    proto::RenderSession::Client& sb = lb.session;
    EXPECT_EQ(sendChunks(loop, sa, a), a.manifest.chunkHashes().size());
    EXPECT_GT(sendChunks(loop, sb, b), 0u);
    EXPECT_TRUE(askMissing(loop, sa, a.manifest.chunkHashes()).empty());
    EXPECT_TRUE(askMissing(loop, sb, b.manifest.chunkHashes()).empty());
    // Both scenes are held, beyond the cache's bound, while their sessions need them.
    EXPECT_GE(node->cachedChunkBytes(), a.manifest.encodedBytes());

    Hash128 idA = fromProto(waitFor(loop, sendLoad(sa, a), 20000).getScene());
    Hash128 idB = fromProto(waitFor(loop, sendLoad(sb, b), 20000).getScene());
    expectRendersLikeLocal(loop, sa, idA, 0, a);
    expectRendersLikeLocal(loop, sb, idB, 1, b);
    // Loaded: nothing is pinned any more, and the cache is back within its bound.
    EXPECT_EQ(node->pinnedChunkBytes(), 0u);
    EXPECT_LE(node->cachedChunkBytes(), options.chunkCacheBytes);
  }
}

// A chunk that missing() reported present is not put again by the Primary: it must stay until
// that session's load, even while another session's upload fills the cache.
TEST_F(NodeHardening, ChunksReportedPresentStayUntilTheLoad) {
  Scene a = makeScene(64, 0.0f), c = makeScene(64, 0.02f);
  UvKjLoop loop;
  NodeOptions options;
  options.chunkCacheBytes = a.store.bytes();  // room for scene a, not for a and c
  TestNode node(loop, 2, options);
  Client client(loop, node.address());
  proto::Node::Client nodeCap = client.authenticate();
  Leased l1 = takeLease(loop, nodeCap, 0), l2 = takeLease(loop, nodeCap, 1);
  proto::RenderSession::Client& s1 = l1.session;
  proto::RenderSession::Client& s2 = l2.session;
  sendChunks(loop, s1, a);
  waitFor(loop, sendLoad(s1, a), 20000);
  EXPECT_EQ(node->pinnedChunkBytes(), 0u);
  // s2 finds scene a complete on the node...
  EXPECT_TRUE(askMissing(loop, s2, a.manifest.chunkHashes()).empty());
  // ...then s1 uploads scene c, whose new chunks would push a's out of the cache...
  EXPECT_GT(sendChunks(loop, s1, c), 0u);
  waitFor(loop, sendLoad(s1, c), 20000);
  // ...and s2 loads a with what missing() promised.
  Hash128 id = fromProto(waitFor(loop, sendLoad(s2, a), 20000).getScene());
  expectRendersLikeLocal(loop, s2, id, 1, a);
  EXPECT_EQ(node->pinnedChunkBytes(), 0u);
  EXPECT_LE(node->cachedChunkBytes(), options.chunkCacheBytes);
}

// `count` incompressible 1 KiB chunks (random bytes from `seed`) encoded into `store`; their
// hashes in order.
std::vector<Hash128> randomChunks(ChunkStore& store, int count, uint32_t seed) {
  std::vector<Hash128> hashes;
  std::mt19937 random(seed);
  for (int i = 0; i < count; ++i) {
    std::vector<uint8_t> raw(1024);
    for (uint8_t& byte : raw) byte = uint8_t(random());
    Hash128 hash = hash128(raw.data(), raw.size());
    store.put(hash,
              encodeChunk(raw.data(), raw.size(), defaultChunkCodec(RenderDataArray::texels)));
    hashes.push_back(hash);
  }
  return hashes;
}

// Pins cannot be used to hold unbounded memory: one session pins at most about the largest
// scene the node accepts; beyond that its chunks are cached like any other (and evicted).
TEST_F(NodeHardening, PinnedBytesOfASessionAreBounded) {
  UvKjLoop loop;
  NodeOptions options;
  options.chunkCacheBytes = 1;
  options.maxSceneBytes = 16 << 10;
  TestNode node(loop, 1, options);
  Client client(loop, node.address());
  proto::Node::Client nodeCap = client.authenticate();
  Leased leased = takeLease(loop, nodeCap, 0);
  proto::RenderSession::Client& session = leased.session;

  // 48 incompressible 1 KiB chunks: 48 KiB, three times what one session may pin.
  ChunkStore store;
  const std::vector<Hash128> hashes = randomChunks(store, 48, 5);
  putChunks(loop, session, store, hashes);
  // missing() answers after every put before it was stored (or refused).
  EXPECT_GT(askMissing(loop, session, hashes).size(), 0u);  // the unpinned ones were evicted
  const uint64_t bound = options.maxSceneBytes + options.maxSceneBytes / 64;
  EXPECT_GT(node->pinnedChunkBytes(), 0u);
  EXPECT_LE(node->pinnedChunkBytes(), bound);
  EXPECT_LE(node->cachedChunkBytes(), bound + (4 << 10));

  // The session's end releases its pins.
  leased = Leased{};
  waitFor(loop, nodeCap.infoRequest().send());
  EXPECT_EQ(node->activeLeaseCount(), 0u);
  EXPECT_EQ(node->pinnedChunkBytes(), 0u);
  EXPECT_LE(node->cachedChunkBytes(), options.chunkCacheBytes);
}

// Chunks pinned until their load beyond the cache's capacity grow the cache's reservation in the
// node's memory budget: beyond the budget a chunk stays cached unpinned, as beyond the
// per-session bound. The reservation shrinks back with the pins.
TEST_F(NodeHardening, PinnedBytesCountInTheMemoryBudget) {
  UvKjLoop loop;
  MemoryBudget budget(12 << 10);
  NodeOptions options;
  options.chunkCacheBytes = 1;
  options.memoryBudget = &budget;
  TestNode node(loop, 1, options);
  Client client(loop, node.address());
  proto::Node::Client nodeCap = client.authenticate();
  Leased leased = takeLease(loop, nodeCap, 0);

  // 48 incompressible 1 KiB chunks: 48 KiB, four times the budget.
  ChunkStore store;
  const std::vector<Hash128> hashes = randomChunks(store, 48, 9);
  putChunks(loop, leased.session, store, hashes);
  EXPECT_GT(askMissing(loop, leased.session, hashes).size(), 0u);  // unpinned ones were evicted
  EXPECT_GT(node->pinnedChunkBytes(), 0u);
  EXPECT_LE(node->pinnedChunkBytes(), budget.capacity());
  EXPECT_EQ(budget.heldBy({MemoryHolder::Kind::ChunkCache, 0}), node->pinnedChunkBytes());

  leased = Leased{};
  waitFor(loop, nodeCap.infoRequest().send());
  EXPECT_EQ(node->activeLeaseCount(), 0u);
  EXPECT_EQ(node->pinnedChunkBytes(), 0u);
  EXPECT_EQ(budget.reserved(), options.chunkCacheBytes);  // the cache's capacity alone
}

// ---------------------------------------------------------------------------------------------
// Connections that do not authenticate

// Waits (bounded) until `done()` while running the loop.
template <typename Fn>
bool waitUntil(UvKjLoop& loop, Fn done, int timeoutMs) {
  for (int waited = 0; waited < timeoutMs && !done(); waited += 5) {
    waitFor(loop, loop.timer().afterDelay(5 * kj::MILLISECONDS));
  }
  return done();
}

TEST_F(NodeHardening, SilentConnectionIsClosedAfterTheHandshakeTimeout) {
  UvKjLoop loop;
  NodeOptions options;
  options.handshakeTimeoutMs = 200;
  TestNode node(loop, 1, options);
  Client silent(loop, node.address());
  Client good(loop, node.address());
  proto::Node::Client nodeCap = good.authenticate();
  ASSERT_TRUE(waitUntil(
      loop, [&] { return node->connectionCount() == 2; }, 2000));
  EXPECT_EQ(node->pendingConnectionCount(), 1u);

  auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(waitUntil(
      loop, [&] { return node->connectionCount() == 1; }, 3000));
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(100));
  EXPECT_EQ(node->pendingConnectionCount(), 0u);
  // The silent client finds its connection gone; the authenticated one is served on.
  kj::Maybe<kj::Exception> e =
      exceptionFrom([&] { waitFor(loop, sendHello(silent.gate, randomNonce(), "late")); });
  EXPECT_NE(describe(e), "<no exception>");
  EXPECT_EQ(waitFor(loop, nodeCap.infoRequest().send()).getInfo().getDevices().size(), 1u);
  EXPECT_EQ(node->connectionCount(), 1u);
}

// Redirects this process's stderr (the log) into a temporary file while alive.
class CapturedStderr {
 public:
  CapturedStderr() {
    std::fflush(stderr);
    char pattern[] = "/tmp/peerlight-stderr-XXXXXX";
    fd_ = mkstemp(pattern);
    path_ = pattern;
    saved_ = dup(2);
    dup2(fd_, 2);
  }
  ~CapturedStderr() { restore(); }
  // Restores stderr and returns what was written.
  std::string restore() {
    if (saved_ >= 0) {
      std::fflush(stderr);
      dup2(saved_, 2);
      close(saved_);
      saved_ = -1;
      std::string text;
      if (FILE* f = std::fopen(path_.c_str(), "r")) {
        char buffer[4096];
        size_t n;
        while ((n = std::fread(buffer, 1, sizeof(buffer), f)) > 0) text.append(buffer, n);
        std::fclose(f);
      }
      close(fd_);
      unlink(path_.c_str());
      text_ = text;
    }
    return text_;
  }

 private:
  int fd_ = -1, saved_ = -1;
  std::string path_, text_;
};

size_t countLines(const std::string& text, const std::string& needle) {
  size_t count = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) {
    ++count;
  }
  return count;
}

TEST_F(NodeHardening, ConnectionsBeyondThePendingCapAreClosedAtOnce) {
  UvKjLoop loop;
  NodeOptions options;
  options.maxPendingConnections = 2;
  TestNode node(loop, 1, options);
  Client first(loop, node.address());
  Client second(loop, node.address());
  ASSERT_TRUE(waitUntil(
      loop, [&] { return node->pendingConnectionCount() == 2; }, 2000));

  // A flood beyond the cap: each is closed at once, and the log says so only once or twice.
  CapturedStderr log;
  for (int i = 0; i < 30; ++i) {
    Client extra(loop, node.address());
    kj::Maybe<kj::Exception> e =
        exceptionFrom([&] { waitFor(loop, sendHello(extra.gate, randomNonce(), "flood"), 2000); });
    EXPECT_NE(describe(e), "<no exception>") << "connection " << i << " was served";
  }
  const std::string text = log.restore();
  EXPECT_GE(countLines(text, "not authenticated yet"), 1u) << text;
  EXPECT_LE(countLines(text, "not authenticated yet"), 3u) << text;
  EXPECT_EQ(node->pendingConnectionCount(), 2u);
  EXPECT_EQ(node->connectionCount(), 2u);

  // Once one of them authenticates, there is room for a new one.
  proto::Node::Client nodeCap = first.authenticate();
  EXPECT_EQ(node->pendingConnectionCount(), 1u);
  Client third(loop, node.address());
  proto::Node::Client thirdNode = third.authenticate();
  EXPECT_EQ(waitFor(loop, thirdNode.infoRequest().send()).getInfo().getDevices().size(), 1u);
}

// Before authentication a message may hold little (NodeOptions::handshakeMessageBytes), so that
// unauthenticated clients cannot make the node buffer maxMessageBytes each; after it, the full
// limit applies, already to a call pipelined right behind authenticate.
TEST_F(NodeHardening, MessagesBeforeAuthenticationAreSmall) {
  UvKjLoop loop;
  TestNode node(loop, 1);
  const std::string bigName(256 << 10, 'n');  // 256 KiB: above the handshake limit

  Client early(loop, node.address());
  kj::Maybe<kj::Exception> e =
      exceptionFrom([&] { waitFor(loop, sendHello(early.gate, randomNonce(), bigName)); });
  EXPECT_NE(describe(e), "<no exception>");
  EXPECT_EQ(describe(e).find("already said hello"), std::string::npos) << describe(e);
  ASSERT_TRUE(waitUntil(
      loop, [&] { return node->connectionCount() == 0; }, 2000));

  Client late(loop, node.address());
  kj::Maybe<kj::Promise<capnp::Response<proto::Gate::HelloResults>>> second;
  proto::Node::Client nodeCap =
      late.authenticate([&] { second = sendHello(late.gate, randomNonce(), bigName); });
  KJ_IF_MAYBE (promise, second) {
    kj::Maybe<kj::Exception> again = exceptionFrom([&] { waitFor(loop, kj::mv(*promise)); });
    // Read in full and refused by the Gate, not by the message size limit.
    EXPECT_NE(describe(again).find("already said hello"), std::string::npos) << describe(again);
  }
  EXPECT_EQ(waitFor(loop, nodeCap.infoRequest().send()).getInfo().getDevices().size(), 1u);
  EXPECT_EQ(node->connectionCount(), 1u);
}

}  // namespace
}  // namespace pl
