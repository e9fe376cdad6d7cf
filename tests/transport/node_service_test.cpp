// The Render Node service over real TCP on 127.0.0.1 (ephemeral ports), node and raw client on
// one libuv loop in this thread: authentication, version mismatch, a lease with missing / put /
// load / render on the Cornell box compared with a local CpuDevice render, bad input answered
// with errors while the session keeps serving, lease expiry and release, ping during a render.
// Also the cluster key file helpers (transport/auth.h).

#include "transport/node_service.h"

#include <capnp/rpc-twoparty.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <zstd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "core/cluster/memory_budget.h"
#include "core/render/cpu_device.h"
#include "core/scene/compile.h"
#include "tests/transport/chunk_test_util.h"
#include "tests/transport/loop_test_util.h"
#include "tests/transport/test_node.h"
#include "transport/auth.h"
#include "transport/chunk_codec.h"
#include "transport/protocol_convert.h"
#include "transport/tcp.h"
#include "transport/uv_kj_loop.h"

namespace pl {
namespace {

using testing::exceptionFrom;
using testing::waitFor;

ClusterKey testKey(uint8_t seed) { return testing::nodeTestKey(seed); }

std::string describe(const kj::Maybe<kj::Exception>& e) {
  KJ_IF_MAYBE (exception, e) return exception->getDescription().cStr();
  return "<no exception>";
}

// Expects `fn` to throw a KJ exception whose description contains `needle`.
template <typename Fn>
void expectFailure(Fn&& fn, const std::string& needle) {
  kj::Maybe<kj::Exception> e = exceptionFrom(std::forward<Fn>(fn));
  std::string text = describe(e);
  EXPECT_NE(text, "<no exception>") << "expected a failure containing '" << needle << "'";
  EXPECT_NE(text.find(needle), std::string::npos) << "got: " << text;
}

// A node on `loop`, listening on 127.0.0.1:<ephemeral>, with `deviceCount` one-thread CPU
// devices.
using testing::TestNode;

// A raw client connection: what a Primary does, one call at a time.
struct Client {
  Client(UvKjLoop& loop, const std::string& address)
      : loop(loop),
        stream(waitFor(loop, connectTcp(loop.lowLevelIo(), address))),
        rpc(*stream),
        gate(rpc.bootstrap().castAs<proto::Gate>()) {}

  // hello + authenticate with `key`; checks the node's proof. Returns the Node.
  proto::Node::Client authenticate(const ClusterKey& key) {
    Nonce nonce = randomNonce();
    auto hello = gate.helloRequest();
    hello.setProtocolVersion(kProtocolVersion);
    hello.setNonce(kj::arrayPtr(nonce.data(), nonce.size()));
    hello.setPrimaryName("test-primary");
    auto reply = waitFor(loop, hello.send());
    EXPECT_EQ(reply.getProtocolVersion(), kProtocolVersion);
    auto nodeNonce = reply.getNonce();
    EXPECT_EQ(nodeNonce.size(), kNonceBytes);
    auto proof = reply.getProof();
    Proof expected = nodeProof(key, nonce, std::span<const uint8_t>(nodeNonce.begin(),
                                                                    nodeNonce.size()));
    nodeProofMatched = proofMatches(expected, std::span<const uint8_t>(proof.begin(), proof.size()));
    Proof mine = primaryProof(key, std::span<const uint8_t>(nodeNonce.begin(), nodeNonce.size()),
                              nonce);
    auto auth = gate.authenticateRequest();
    auth.setProof(kj::arrayPtr(mine.data(), mine.size()));
    return waitFor(loop, auth.send()).getNode();
  }

  UvKjLoop& loop;
  kj::Own<kj::AsyncIoStream> stream;
  capnp::TwoPartyClient rpc;
  proto::Gate::Client gate;
  bool nodeProofMatched = false;
};

struct Leased {
  proto::Lease::Client lease;
  proto::RenderSession::Client session;
  uint32_t ttlMs;
  std::vector<uint32_t> devices;
};

Leased takeLease(UvKjLoop& loop, proto::Node::Client& node, std::vector<uint32_t> devices = {},
                 uint32_t ttlMs = 0) {
  auto request = node.leaseRequest();
  auto r = request.initRequest();
  r.setPrimaryName("test-primary");
  r.setTtlMs(ttlMs);
  auto list = r.initDevices(uint32_t(devices.size()));
  for (size_t i = 0; i < devices.size(); ++i) list.set(uint32_t(i), devices[i]);
  auto reply = waitFor(loop, request.send());
  Leased leased{reply.getLease(), reply.getSession(), reply.getTtlMs(), {}};
  for (uint32_t d : reply.getDevices()) leased.devices.push_back(d);
  return leased;
}

// The Cornell box, compiled small, cut into small chunks so that it takes several puts.
struct Scene {
  RenderData data;
  ChunkStore store;
  ChunkManifest manifest;
};

const Scene& cornellBox() {
  static Scene* scene = [] {
    auto* s = new Scene;
    CompileOptions options;
    options.width = 96;
    options.height = 64;
    auto data = loadAndCompile(std::string(PEERLIGHT_SOURCE_DIR) + "/scenes/cornell_box.gltf",
                               options);
    PL_CHECK_MSG(data.ok(), "%s", data.ok() ? "" : data.error().message.c_str());
    s->data = std::move(*data);
    ChunkEncodeOptions encode;
    encode.maxChunkBytes = 16 << 10;
    s->manifest = encodeRenderData(s->data, s->store, encode);
    return s;
  }();
  return *scene;
}

kj::Promise<void> putChunk(proto::RenderSession::Client& session, const Hash128& hash,
                           const std::vector<uint8_t>& bytes) {
  auto request = session.putRequest();
  auto chunk = request.initChunk();
  toProto(hash, chunk.initHash());
  chunk.setData(kj::arrayPtr(bytes.data(), bytes.size()));
  return request.send();
}

// put() as an ordinary call, so that its own reply (or error) comes back: a `-> stream` call
// reports errors only on later calls of the stream.
kj::Promise<void> putAndAwaitReply(proto::RenderSession::Client& session, const Hash128& hash,
                                   kj::ArrayPtr<const uint8_t> bytes) {
  auto request = session.typelessRequest(capnp::typeId<proto::RenderSession>(), 1, nullptr);
  auto params = request.initAs<proto::RenderSession::PutParams>();
  auto chunk = params.initChunk();
  toProto(hash, chunk.initHash());
  chunk.setData(bytes);
  return request.send().ignoreResult();
}

std::vector<Hash128> askMissing(UvKjLoop& loop, proto::RenderSession::Client& session,
                                const std::vector<Hash128>& hashes) {
  auto request = session.missingRequest();
  toProto(hashes, request.initHashes(uint32_t(hashes.size())));
  auto reply = waitFor(loop, request.send());
  return fromProto(reply.getMissing()).value();
}

// missing -> put the lacking chunks -> load. Returns the scene id; *sent = chunks put.
Hash128 upload(UvKjLoop& loop, proto::RenderSession::Client& session, const Scene& scene,
               size_t* sent = nullptr) {
  std::vector<Hash128> lacking = askMissing(loop, session, scene.manifest.chunkHashes());
  kj::Vector<kj::Promise<void>> puts;
  for (const Hash128& h : lacking) puts.add(putChunk(session, h, test::chunkBytes(scene.store, h)));
  waitFor(loop, kj::joinPromises(puts.releaseAsArray()));
  if (sent != nullptr) *sent = lacking.size();
  auto load = session.loadRequest();
  toProto(scene.manifest, load.initManifest());
  return fromProto(waitFor(loop, load.send(), 20000).getScene());
}

kj::Promise<capnp::Response<proto::RenderSession::RenderResults>> sendRender(
    proto::RenderSession::Client& session, const Hash128& scene, uint32_t device,
    const WorkUnit& unit) {
  auto request = session.renderRequest();
  toProto(scene, request.initScene());
  request.setDevice(device);
  toProto(unit, request.initUnit());
  return request.send();
}

TileResult renderRemote(UvKjLoop& loop, proto::RenderSession::Client& session,
                        const Hash128& scene, uint32_t device, const WorkUnit& unit) {
  auto reply = waitFor(loop, sendRender(session, scene, device, unit), 20000);
  auto result = fromProto(reply.getResult());
  PL_CHECK_MSG(result.ok(), "%s", result.ok() ? "" : result.error().message.c_str());
  EXPECT_EQ(result->unit, unit);
  EXPECT_GE(reply.getResult().getRenderMs(), 0.0);
  return std::move(*result);
}

TileResult renderLocally(const RenderData& data, const WorkUnit& unit) {
  CpuDevice device(1);
  PL_CHECK(device.load(std::make_shared<const RenderData>(data)).ok());
  return device.render(unit).value();
}

WorkUnit makeUnit(uint32_t x, uint32_t y, uint32_t w, uint32_t h, uint32_t s0, uint32_t s1,
                  uint32_t total) {
  WorkUnit unit;
  unit.tile = Rect{x, y, w, h};
  unit.sampleBegin = s0;
  unit.sampleEnd = s1;
  unit.totalSamples = total;
  return unit;
}

// ---------------------------------------------------------------------------------------------

TEST(NodeService, AuthenticatesAndDescribesItself) {
  UvKjLoop loop;
  TestNode node(loop, 2);
  Client client(loop, node.address());
  proto::Node::Client nodeCap = client.authenticate(testKey(1));
  EXPECT_TRUE(client.nodeProofMatched);

  auto response = waitFor(loop, nodeCap.infoRequest().send());  // owns what `info` reads
  auto info = response.getInfo();
  EXPECT_EQ(info.getProtocolVersion(), kProtocolVersion);
  EXPECT_EQ(std::string(info.getName().cStr()), "test-node");
  EXPECT_EQ(std::string(info.getNodeId().cStr()), node->nodeId());
  EXPECT_EQ(info.getNodeId().size(), 32u);
  ASSERT_EQ(info.getDevices().size(), 2u);
  DeviceInfo first = fromProto(info.getDevices()[0]);
  EXPECT_EQ(first.kind, "cpu");
  EXPECT_EQ(first.threads, 1u);
  EXPECT_EQ(info.getState(), proto::NodeState::IDLE);
}

TEST(NodeService, WrongKeyIsRefused) {
  UvKjLoop loop;
  TestNode node(loop, 1);
  Client client(loop, node.address());
  expectFailure([&] { client.authenticate(testKey(2)); }, "authentication failed");
  // The node's proof did not match our (wrong) key either: each side detects the mismatch.
  EXPECT_FALSE(client.nodeProofMatched);
  // No second attempt on the same connection, even with the right proof.
  auto auth = client.gate.authenticateRequest();
  Proof junk{};
  auth.setProof(kj::arrayPtr(junk.data(), junk.size()));
  expectFailure([&] { waitFor(loop, auth.send()); }, "authentication failed");
  // A pipelined use of the refused Node fails too: no Node capability was handed out.
  auto again = client.gate.authenticateRequest();
  again.setProof(kj::arrayPtr(junk.data(), junk.size()));
  auto pipelined = again.send().getNode().infoRequest().send();
  expectFailure([&] { waitFor(loop, kj::mv(pipelined)); }, "authentication failed");
  EXPECT_EQ(node->activeLeaseCount(), 0u);

  // A client with the right key on a new connection still gets in.
  Client good(loop, node.address());
  proto::Node::Client nodeCap = good.authenticate(testKey(1));
  EXPECT_TRUE(good.nodeProofMatched);
  EXPECT_EQ(waitFor(loop, nodeCap.infoRequest().send()).getInfo().getDevices().size(), 1u);
}

TEST(NodeService, IncompatibleVersionNamesBothVersions) {
  UvKjLoop loop;
  NodeOptions options;
  options.protocolVersion = kProtocolVersion + 41;
  TestNode node(loop, 1, options);
  Client client(loop, node.address());
  Nonce nonce = randomNonce();
  auto hello = client.gate.helloRequest();
  hello.setProtocolVersion(kProtocolVersion);
  hello.setNonce(kj::arrayPtr(nonce.data(), nonce.size()));
  hello.setPrimaryName("old-primary");
  auto reply = waitFor(loop, hello.send());
  EXPECT_EQ(reply.getProtocolVersion(), kProtocolVersion + 41);
  EXPECT_EQ(reply.getProof().size(), 0u);
  EXPECT_EQ(std::string(reply.getName().cStr()), "test-node");
  auto auth = client.gate.authenticateRequest();
  Proof proof = primaryProof(testKey(1), nonce, nonce);
  auth.setProof(kj::arrayPtr(proof.data(), proof.size()));
  expectFailure([&] { waitFor(loop, auth.send()); },
                "speaks protocol " + std::to_string(kProtocolVersion + 41));
}

TEST(NodeService, BadHelloNonceIsRejected) {
  UvKjLoop loop;
  TestNode node(loop, 1);
  Client client(loop, node.address());
  auto hello = client.gate.helloRequest();
  hello.setProtocolVersion(kProtocolVersion);
  uint8_t shortNonce[5] = {1, 2, 3, 4, 5};
  hello.setNonce(kj::arrayPtr(shortNonce, 5));
  expectFailure([&] { waitFor(loop, hello.send()); }, "nonce must be 32 bytes");
}

TEST(NodeService, RenderMatchesLocalRenderAndChunksAreKeptForTheNextLease) {
  const Scene& scene = cornellBox();
  UvKjLoop loop;
  TestNode node(loop, 2);
  Client client(loop, node.address());
  proto::Node::Client nodeCap = client.authenticate(testKey(1));
  const std::vector<Hash128> hashes = scene.manifest.chunkHashes();
  ASSERT_GT(hashes.size(), 3u);

  WorkUnit unitA = makeUnit(0, 0, 48, 32, 0, 4, 8);
  WorkUnit unitB = makeUnit(40, 20, 56, 44, 4, 8, 8);  // reaches the bottom-right corner
  {
    Leased leased = takeLease(loop, nodeCap);
    EXPECT_EQ(leased.devices, (std::vector<uint32_t>{0, 1}));
    EXPECT_EQ(leased.ttlMs, 10000u);
    EXPECT_EQ(node->freeDeviceCount(), 0u);
    EXPECT_EQ(waitFor(loop, nodeCap.infoRequest().send()).getInfo().getState(),
              proto::NodeState::LEASED);
    size_t sent = 0;
    Hash128 sceneId = upload(loop, leased.session, scene, &sent);
    EXPECT_EQ(sent, hashes.size());
    EXPECT_EQ(sceneId, sceneIdOf(scene.manifest));
    EXPECT_EQ(node->cachedChunkCount(), hashes.size());
    EXPECT_TRUE(askMissing(loop, leased.session, hashes).empty());

    TileResult a = renderRemote(loop, leased.session, sceneId, 0, unitA);
    TileResult b = renderRemote(loop, leased.session, sceneId, 1, unitB);
    TileResult localA = renderLocally(scene.data, unitA);
    TileResult localB = renderLocally(scene.data, unitB);
    ASSERT_EQ(a.sums.size(), size_t(48 * 32 * 3));
    EXPECT_EQ(a.sums, localA.sums);
    EXPECT_EQ(b.sums, localB.sums);
    EXPECT_EQ(a.raysTraced, localA.raysTraced);
    int64_t total = 0;
    for (int64_t v : a.sums) total += v;
    EXPECT_GT(total, 0);  // the box is lit: not an all-black tile by accident
  }
  // The lease was dropped with its capabilities: devices are free for the next lease, which
  // finds every chunk already on the node and sends none.
  waitFor(loop, nodeCap.infoRequest().send());  // ordered after the releases
  EXPECT_EQ(node->freeDeviceCount(), 2u);
  EXPECT_EQ(node->activeLeaseCount(), 0u);
  Leased again = takeLease(loop, nodeCap, {1});
  EXPECT_EQ(again.devices, (std::vector<uint32_t>{1}));
  size_t sent = 1;
  Hash128 sceneId = upload(loop, again.session, scene, &sent);
  EXPECT_EQ(sent, 0u);
  TileResult a = renderRemote(loop, again.session, sceneId, 1, unitA);
  EXPECT_EQ(a.sums, renderLocally(scene.data, unitA).sums);
}

TEST(NodeService, BadInputGetsErrorsAndTheSessionKeepsServing) {
  const Scene& scene = cornellBox();
  UvKjLoop loop;
  TestNode node(loop, 2);
  Client client(loop, node.address());
  proto::Node::Client nodeCap = client.authenticate(testKey(1));
  Leased leased = takeLease(loop, nodeCap, {0});
  ASSERT_EQ(leased.devices, (std::vector<uint32_t>{0}));

  const Hash128 goodHash = scene.manifest.chunkHashes().front();
  const std::vector<uint8_t>& good = test::chunkBytes(scene.store, goodHash);
  ASSERT_GT(good.size(), 20u);

  // A wrong hash.
  Hash128 wrongHash = goodHash;
  wrongHash.lo ^= 1;
  expectFailure(
      [&] { waitFor(loop, putAndAwaitReply(leased.session, wrongHash, kj::arrayPtr(good.data(), good.size()))); },
      "chunk " + wrongHash.hex());
  // A truncated frame.
  expectFailure(
      [&] { waitFor(loop, putAndAwaitReply(leased.session, goodHash, kj::arrayPtr(good.data(), good.size() - 7))); },
      "chunk " + goodHash.hex());
  // Too short to be a chunk at all.
  expectFailure([&] { waitFor(loop, putAndAwaitReply(leased.session, goodHash, kj::arrayPtr(good.data(), 3))); },
                "truncated");
  // More encoded bytes than any chunk can have.
  std::vector<uint8_t> huge(ZSTD_compressBound(kMaxChunkBytes) + 64, 0);
  expectFailure([&] { waitFor(loop, putAndAwaitReply(leased.session, goodHash, kj::arrayPtr(huge.data(), huge.size()))); },
                "more than the limit");
  // A valid frame that declares more raw bytes than a chunk may hold (a decompression bomb).
  std::vector<uint8_t> zeros(kMaxChunkBytes + 1, 0);
  std::vector<uint8_t> bomb(4 + ZSTD_compressBound(zeros.size()));
  bomb[0] = 1;
  size_t frame = ZSTD_compress(bomb.data() + 4, bomb.size() - 4, zeros.data(), zeros.size(), 1);
  ASSERT_FALSE(ZSTD_isError(frame));
  bomb.resize(4 + frame);
  expectFailure([&] { waitFor(loop, putAndAwaitReply(leased.session, goodHash, kj::arrayPtr(bomb.data(), bomb.size()))); },
                "raw bytes");
  // Not zstd.
  std::vector<uint8_t> garbage(64, 0xab);
  expectFailure([&] { waitFor(loop, putAndAwaitReply(leased.session, goodHash, kj::arrayPtr(garbage.data(), garbage.size()))); },
                "zstd");
  // None of them was stored.
  EXPECT_EQ(node->cachedChunkCount(), 0u);
  EXPECT_EQ(askMissing(loop, leased.session, {wrongHash, goodHash}).size(), 2u);

  // Too many hashes in one missing() call.
  {
    auto request = leased.session.missingRequest();
    request.initHashes(kMaxHashesPerCall + 1);
    expectFailure([&] { waitFor(loop, request.send()); }, "more than the limit");
  }
  // Loading a manifest whose chunks are not there names the first missing one.
  {
    auto load = leased.session.loadRequest();
    toProto(scene.manifest, load.initManifest());
    expectFailure([&] { waitFor(loop, load.send()); }, "is missing");
  }
  // A malformed manifest (wrong number of arrays).
  {
    auto load = leased.session.loadRequest();
    load.initManifest().initArrays(2);
    expectFailure([&] { waitFor(loop, load.send()); }, "manifest");
  }

  // The same session still takes the real upload and renders.
  Hash128 sceneId = upload(loop, leased.session, scene);
  WorkUnit unit = makeUnit(8, 8, 16, 16, 0, 2, 2);

  Hash128 unknown = sceneId;
  unknown.hi ^= 0x55;
  expectFailure([&] { waitFor(loop, sendRender(leased.session, unknown, 0, unit)); },
                "unknown scene");
  expectFailure([&] { waitFor(loop, sendRender(leased.session, sceneId, 1, unit)); },
                "not in this lease");
  expectFailure([&] { waitFor(loop, sendRender(leased.session, sceneId, 7, unit)); },
                "not in this lease");
  expectFailure([&] { waitFor(loop, sendRender(leased.session, sceneId, 0, makeUnit(90, 0, 16, 16, 0, 2, 2))); },
                "outside");
  expectFailure([&] { waitFor(loop, sendRender(leased.session, sceneId, 0, makeUnit(0, 0, 16, 16, 2, 2, 2))); },
                "sample range");

  TileResult result = renderRemote(loop, leased.session, sceneId, 0, unit);
  EXPECT_EQ(result.sums, renderLocally(scene.data, unit).sums);
  waitFor(loop, leased.session.pingRequest().send());

  // As a Primary sees it: a bad chunk in a `-> stream` of puts is not stored (missing() waits
  // for the puts before it and still lists it), and the session keeps answering other calls.
  waitFor(loop, putChunk(leased.session, wrongHash, good));
  EXPECT_EQ(askMissing(loop, leased.session, {wrongHash}).size(), 1u);
  waitFor(loop, leased.session.pingRequest().send());
  EXPECT_EQ(renderRemote(loop, leased.session, sceneId, 0, unit).sums, result.sums);
}

// A node that takes puts unchecked (a worker: NodeOptions::verifyPuts false, its daemon checked
// them) still never renders a corrupt chunk: the load's decode checks every chunk's hash and
// names the bad one, and the session goes on answering.
TEST(NodeService, UncheckedPutsAreCheckedAtLoad) {
  const Scene& scene = cornellBox();
  UvKjLoop loop;
  NodeOptions options;
  options.verifyPuts = false;
  TestNode node(loop, 1, options);
  Client client(loop, node.address());
  proto::Node::Client nodeCap = client.authenticate(testKey(1));
  Leased leased = takeLease(loop, nodeCap);
  const std::vector<Hash128> hashes = scene.manifest.chunkHashes();
  const Hash128 bad = hashes[hashes.size() / 2];
  for (const Hash128& h : hashes) {
    std::vector<uint8_t> bytes = test::chunkBytes(scene.store, h);
    if (h == bad) bytes.back() ^= 0xff;
    waitFor(loop, putAndAwaitReply(leased.session, h, kj::arrayPtr(bytes.data(), bytes.size())));
  }
  EXPECT_TRUE(askMissing(loop, leased.session, hashes).empty()) << "taken as they came";
  auto load = leased.session.loadRequest();
  toProto(scene.manifest, load.initManifest());
  expectFailure([&] { waitFor(loop, load.send()); }, bad.hex());
  waitFor(loop, leased.session.pingRequest().send());
}

// A manifest may name one small chunk many times: the decoded size is checked against the
// node's limit before anything is decoded or allocated. The node will never hold that scene, so
// the lease ends typed SCENE_TOO_LARGE (the Primary then stops asking this node for it).
TEST(NodeService, SceneLargerThanTheNodeAcceptsIsRefusedBeforeDecoding) {
  const Scene& scene = cornellBox();
  UvKjLoop loop;
  NodeOptions options;
  options.maxSceneBytes = scene.manifest.rawBytes() - 1;
  TestNode node(loop, 1, options);
  Client client(loop, node.address());
  proto::Node::Client nodeCap = client.authenticate(testKey(1));
  Leased leased = takeLease(loop, nodeCap);
  auto ended = leased.lease.endedRequest().send();
  {
    auto load = leased.session.loadRequest();
    toProto(scene.manifest, load.initManifest());
    expectFailure([&] { waitFor(loop, load.send()); }, "more than this node accepts");
  }
  auto why = waitFor(loop, kj::mv(ended));
  EXPECT_EQ(why.getReason(), proto::LeaseEnd::SCENE_TOO_LARGE);
  EXPECT_NE(std::string(why.getDetail().cStr()).find("more than this node accepts"),
            std::string::npos);
  EXPECT_EQ(node->activeLeaseCount(), 0u);
  EXPECT_EQ(node->stats().scenesDecoded, 0u);
  // The node serves on: a new lease is granted.
  Leased again = takeLease(loop, nodeCap);
  waitFor(loop, again.session.pingRequest().send());
}

TEST(NodeService, MessageBeyondTheSizeLimitDropsOnlyThatConnection) {
  UvKjLoop loop;
  NodeOptions options;
  options.maxMessageBytes = 8 << 20;
  TestNode node(loop, 1, options);
  Client client(loop, node.address());
  proto::Node::Client nodeCap = client.authenticate(testKey(1));
  Leased leased = takeLease(loop, nodeCap);
  std::vector<uint8_t> big(12 << 20, 7);
  kj::Maybe<kj::Exception> e = exceptionFrom([&] {
    waitFor(loop, putAndAwaitReply(leased.session, Hash128{1, 2}, kj::arrayPtr(big.data(), big.size())));
  });
  ASSERT_TRUE(e != nullptr);
  // The node dropped that connection (and so its lease), and serves others.
  for (int i = 0; i < 200 && node->activeLeaseCount() > 0; ++i) {
    waitFor(loop, loop.timer().afterDelay(5 * kj::MILLISECONDS));
  }
  EXPECT_EQ(node->activeLeaseCount(), 0u);
  Client other(loop, node.address());
  proto::Node::Client otherNode = other.authenticate(testKey(1));
  EXPECT_EQ(takeLease(loop, otherNode).devices.size(), 1u);
}

// Fair share on a node with several devices: a Primary holding all four of them gives a
// preempting requester that holds none half of them (the lease is revoked whole; the rest stay
// free), and the first Primary leases the rest again: 2 + 2. A requester that would end up
// with more than the holder gets nothing.
TEST(NodeService, FairShareSplitsAMultiDeviceNode) {
  UvKjLoop loop;
  TestNode node(loop, 4);
  auto request = [&](proto::Node::Client& n, uint32_t held, bool preempt) {
    auto req = n.leaseRequest();
    auto r = req.initRequest();
    r.setPrimaryName("test-primary");
    r.setHeldDevices(held);
    r.setReportsHeld(true);
    r.setPreempt(preempt);
    return req.send();
  };
  Client a(loop, node.address()), b(loop, node.address());
  proto::Node::Client nodeA = a.authenticate(testKey(1)), nodeB = b.authenticate(testKey(1));
  auto leaseA = waitFor(loop, request(nodeA, 0, true));
  ASSERT_EQ(leaseA.getDevices().size(), 4u);
  EXPECT_EQ(node->freeDeviceCount(), 0u);

  // b holds 3 elsewhere: (4 - 3) / 2 = 0 devices may change hands: refused.
  expectFailure([&] { waitFor(loop, request(nodeB, 3, true)); }, "busy");
  EXPECT_EQ(node->activeLeaseCount(), 1u);

  // b holds none: 2 of a's 4 go to b; a's lease ends, 2 devices stay free.
  auto leaseB = waitFor(loop, request(nodeB, 0, true));
  EXPECT_EQ(leaseB.getDevices().size(), 2u);
  EXPECT_EQ(node->activeLeaseCount(), 1u);
  EXPECT_EQ(node->freeDeviceCount(), 2u);
  expectFailure([&] { waitFor(loop, leaseA.getSession().pingRequest().send()); }, "fair share");

  // a comes back (holding nothing now) and gets the other 2, without preempting anyone.
  auto leaseA2 = waitFor(loop, request(nodeA, 0, true));
  EXPECT_EQ(leaseA2.getDevices().size(), 2u);
  EXPECT_EQ(node->activeLeaseCount(), 2u);
  EXPECT_EQ(node->freeDeviceCount(), 0u);
  // Now even: neither can take from the other.
  expectFailure([&] { waitFor(loop, request(nodeB, 2, true)); }, "busy");
}

TEST(NodeService, LeaseExpiresWithoutRenewAndFreesDevices) {
  UvKjLoop loop;
  NodeOptions options;
  options.minTtlMs = 100;
  TestNode node(loop, 2, options);
  Client client(loop, node.address());
  proto::Node::Client nodeCap = client.authenticate(testKey(1));

  Leased first = takeLease(loop, nodeCap, {}, 300);
  EXPECT_EQ(first.ttlMs, 300u);
  EXPECT_EQ(waitFor(loop, first.lease.renewRequest().send()).getTtlMs(), 300u);
  // Another primary (another connection) finds the node busy while the lease lives.
  Client other(loop, node.address());
  proto::Node::Client otherNode = other.authenticate(testKey(1));
  expectFailure([&] { takeLease(loop, otherNode); }, "busy");

  auto start = std::chrono::steady_clock::now();
  waitFor(loop, loop.timer().afterDelay(340 * kj::MILLISECONDS));  // the TTL, no renew
  EXPECT_EQ(node->activeLeaseCount(), 0u);
  EXPECT_EQ(node->freeDeviceCount(), 2u);
  expectFailure([&] { waitFor(loop, first.session.pingRequest().send()); }, "lease expired");
  expectFailure([&] { waitFor(loop, first.lease.renewRequest().send()); }, "lease expired");
  expectFailure([&] { askMissing(loop, first.session, {}); }, "lease expired");

  Leased second = takeLease(loop, otherNode, {}, 300);
  EXPECT_EQ(second.devices, (std::vector<uint32_t>{0, 1}));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));

  // TTLs are clamped to the node's range.
  second = Leased{nullptr, nullptr, 0, {}};
  waitFor(loop, otherNode.infoRequest().send());
  Leased clamped = takeLease(loop, otherNode, {}, 5);
  EXPECT_EQ(clamped.ttlMs, 100u);
}

// One expiry timer for all leases (the LeaseTable's earliest): a short lease expires while a
// longer one lives on, and a renewal moves the longer one's expiry.
TEST(NodeService, EachLeaseExpiresAtItsOwnTtl) {
  UvKjLoop loop;
  NodeOptions options;
  options.minTtlMs = 50;
  TestNode node(loop, 2, options);
  Client client(loop, node.address());
  proto::Node::Client nodeCap = client.authenticate(testKey(1));
  Leased shortLease = takeLease(loop, nodeCap, {0}, 150);
  Leased longLease = takeLease(loop, nodeCap, {1}, 900);
  waitFor(loop, loop.timer().afterDelay(400 * kj::MILLISECONDS));
  EXPECT_EQ(node->activeLeaseCount(), 1u);
  EXPECT_EQ(node->freeDeviceCount(), 1u);
  expectFailure([&] { waitFor(loop, shortLease.session.pingRequest().send()); }, "lease expired");
  waitFor(loop, longLease.session.pingRequest().send());
  // Renewed at ~400 ms: now due at ~1300 ms rather than 900 ms.
  EXPECT_EQ(waitFor(loop, longLease.lease.renewRequest().send()).getTtlMs(), 900u);
  waitFor(loop, loop.timer().afterDelay(650 * kj::MILLISECONDS));
  EXPECT_EQ(node->activeLeaseCount(), 1u);
  waitFor(loop, loop.timer().afterDelay(700 * kj::MILLISECONDS));
  EXPECT_EQ(node->activeLeaseCount(), 0u);
  expectFailure([&] { waitFor(loop, longLease.session.pingRequest().send()); }, "lease expired");
}

// Owner preemption through the node (the daemon's control socket calls ownerJobStarted()):
// other Primaries' leases end at once with "revoked: the owner is rendering", new ones are
// refused until every owner job ended, and the owner's own token is let in and kept.
TEST(NodeService, OwnerJobRevokesOtherLeasesAndRefusesNewOnes) {
  UvKjLoop loop;
  TestNode node(loop, 3);
  Client client(loop, node.address());
  proto::Node::Client nodeCap = client.authenticate(testKey(1));
  // The owner's Primary is this machine's daemon: its Node is in process (trusted).
  proto::Node::Client ownerCap = node->newTrustedNode("owner job");
  auto ownerLease = [&](const std::string& token, uint32_t device) {
    auto request = ownerCap.leaseRequest();
    auto r = request.initRequest();
    r.setPrimaryName("owner-primary");
    r.setOwnerToken(token);
    r.initDevices(1).set(0, device);
    return request.send();
  };
  Leased remote = takeLease(loop, nodeCap, {0});
  auto own = waitFor(loop, ownerLease("tok", 1));  // before the job: a lease like any other
  EXPECT_EQ(node->ownerJobStarted("tok"), 1u);
  EXPECT_TRUE(node->ownerActive());
  EXPECT_EQ(node->activeLeaseCount(), 1u);
  expectFailure([&] { waitFor(loop, remote.session.pingRequest().send()); },
                "lease ended: revoked: the owner is rendering");
  waitFor(loop, own.getSession().pingRequest().send());  // the owner's lease is kept
  expectFailure([&] { takeLease(loop, nodeCap, {2}); }, "busy: the owner is rendering");
  {
    // A remote Primary naming the owner's token (learnt elsewhere) is refused all the same.
    auto request = nodeCap.leaseRequest();
    auto r = request.initRequest();
    r.setPrimaryName("replayer");
    r.setOwnerToken("tok");
    r.initDevices(1).set(0, 2);
    expectFailure([&] { waitFor(loop, request.send()); }, "busy: the owner is rendering");
  }
  auto again = waitFor(loop, ownerLease("tok", 2));
  EXPECT_EQ(again.getDevices().size(), 1u);
  EXPECT_EQ(node->freeDeviceCount(), 1u);  // device 0: the revoked lease's

  node->ownerJobStarted("other");
  node->ownerJobEnded("tok");
  EXPECT_TRUE(node->ownerActive());
  expectFailure([&] { takeLease(loop, nodeCap, {0}); }, "busy: the owner is rendering");
  node->ownerJobEnded("other");
  EXPECT_FALSE(node->ownerActive());
  EXPECT_EQ(takeLease(loop, nodeCap, {0}).devices, (std::vector<uint32_t>{0}));
}

TEST(NodeService, DroppingTheLeaseOrTheConnectionFreesDevicesAtOnce) {
  UvKjLoop loop;
  TestNode node(loop, 2);
  Client client(loop, node.address());
  proto::Node::Client nodeCap = client.authenticate(testKey(1));
  {
    Leased a = takeLease(loop, nodeCap, {0});
    Leased b = takeLease(loop, nodeCap, {0, 1});  // device 0 is taken: only 1 is granted
    EXPECT_EQ(b.devices, (std::vector<uint32_t>{1}));
    expectFailure([&] { takeLease(loop, nodeCap); }, "busy");
    expectFailure([&] { takeLease(loop, nodeCap, {5}); }, "no device 5");
    // Dropping only the Lease capability ends the lease; its session stops serving.
    proto::RenderSession::Client sessionA = a.session;
    a = Leased{nullptr, nullptr, 0, {}};
    waitFor(loop, nodeCap.infoRequest().send());
    EXPECT_EQ(node->freeDeviceCount(), 1u);
    expectFailure([&] { waitFor(loop, sessionA.pingRequest().send()); }, "lease ended");
  }
  waitFor(loop, nodeCap.infoRequest().send());
  EXPECT_EQ(node->freeDeviceCount(), 2u);

  // A lost connection ends its leases too.
  {
    Client doomed(loop, node.address());
    proto::Node::Client doomedNode = doomed.authenticate(testKey(1));
    Leased held = takeLease(loop, doomedNode);
    EXPECT_EQ(node->freeDeviceCount(), 0u);
    held = Leased{nullptr, nullptr, 0, {}};
    doomedNode = nullptr;
  }  // the client's connection closes here, with capabilities the node still counts as held
  for (int i = 0; i < 200 && node->connectionCount() > 1; ++i) {
    waitFor(loop, loop.timer().afterDelay(5 * kj::MILLISECONDS));
  }
  EXPECT_EQ(node->connectionCount(), 1u);
  EXPECT_EQ(node->freeDeviceCount(), 2u);
  EXPECT_EQ(takeLease(loop, nodeCap).devices.size(), 2u);
}

TEST(NodeService, ConnectionLossMidLeaseFreesDevices) {
  UvKjLoop loop;
  TestNode node(loop, 1);
  auto client = std::make_unique<Client>(loop, node.address());
  proto::Node::Client nodeCap = client->authenticate(testKey(1));
  Leased held = takeLease(loop, nodeCap);
  EXPECT_EQ(node->activeLeaseCount(), 1u);
  // Cut the connection under the capabilities (the client still holds them).
  client->stream->shutdownWrite();
  for (int i = 0; i < 200 && node->activeLeaseCount() > 0; ++i) {
    waitFor(loop, loop.timer().afterDelay(5 * kj::MILLISECONDS));
  }
  EXPECT_EQ(node->activeLeaseCount(), 0u);
  EXPECT_EQ(node->freeDeviceCount(), 1u);
  held = Leased{nullptr, nullptr, 0, {}};
  nodeCap = nullptr;
  client.reset();
}

// The node's memory budget (NodeOptions::memoryBudget): a lease reserves the scenes it loads; a
// load beyond the budget (a second, edited scene: decoded data of its own) fails, and the lease
// ends typed MEMORY_BUDGET (busy), while the other lease renders on. A release gives the
// reservation back.
TEST(NodeService, ALoadBeyondTheMemoryBudgetEndsThatLeaseAsBusy) {
  UvKjLoop loop;
  const Scene& scene = cornellBox();
  const uint64_t sceneBytes = scene.manifest.rawBytes();
  MemoryBudget budget(sceneBytes * 3 / 2);  // one copy of the scene fits, not two
  NodeOptions options;
  options.memoryBudget = &budget;
  TestNode node(loop, 2, options);
  Client client(loop, node.address());
  proto::Node::Client nodeCap = client.authenticate(testKey(1));

  Leased first = takeLease(loop, nodeCap, {0});
  const Hash128 id = upload(loop, first.session, scene);
  EXPECT_EQ(budget.reserved(), sceneBytes);
  // Loading it again, or rendering it, reserves nothing more.
  EXPECT_EQ(upload(loop, first.session, scene), id);
  EXPECT_EQ(budget.reserved(), sceneBytes);

  Scene edited;
  edited.data = scene.data;
  edited.data.materials[0].roughnessFactor = 0.25f;
  ChunkEncodeOptions encode;
  encode.maxChunkBytes = 16 << 10;
  edited.manifest = encodeRenderData(edited.data, edited.store, encode);
  Leased second = takeLease(loop, nodeCap, {1});
  auto ended = second.lease.endedRequest().send();
  expectFailure([&] { upload(loop, second.session, edited); }, "memory budget");
  auto why = waitFor(loop, kj::mv(ended));
  EXPECT_EQ(why.getReason(), proto::LeaseEnd::MEMORY_BUDGET);
  const std::string detail = why.getDetail().cStr();
  EXPECT_NE(detail.find("busy: lease 2 needs"), std::string::npos) << detail;
  EXPECT_EQ(node->activeLeaseCount(), 1u);
  EXPECT_EQ(budget.reserved(), sceneBytes);  // the refused lease reserved nothing

  const WorkUnit unit = makeUnit(8, 8, 16, 16, 0, 2, 2);
  EXPECT_EQ(renderRemote(loop, first.session, id, 0, unit).sums,
            renderLocally(scene.data, unit).sums);
  // Released: the reservation goes with the lease.
  first = Leased{nullptr, nullptr, 0, {}};
  waitFor(loop, nodeCap.infoRequest().send());
  EXPECT_EQ(node->activeLeaseCount(), 0u);
  EXPECT_EQ(budget.reserved(), 0u);
}

// A scene that the memory budget could never hold, however little else is reserved, is refused
// as one beyond the node's scene limit: the load fails naming it, the lease ends typed
// SCENE_TOO_LARGE, and nothing stays reserved.
TEST(NodeService, ASceneTheMemoryBudgetCanNeverHoldEndsTheLeaseAsTooLarge) {
  UvKjLoop loop;
  const Scene& scene = cornellBox();
  MemoryBudget budget(scene.manifest.rawBytes() / 2);
  NodeOptions options;
  options.memoryBudget = &budget;
  TestNode node(loop, 1, options);
  Client client(loop, node.address());
  proto::Node::Client nodeCap = client.authenticate(testKey(1));
  Leased leased = takeLease(loop, nodeCap, {0});
  auto ended = leased.lease.endedRequest().send();
  expectFailure([&] { upload(loop, leased.session, scene); }, "more than this node accepts");
  EXPECT_EQ(waitFor(loop, kj::mv(ended)).getReason(), proto::LeaseEnd::SCENE_TOO_LARGE);
  EXPECT_EQ(node->activeLeaseCount(), 0u);
  EXPECT_EQ(budget.reserved(), 0u);
}

// A node without a chunk cache (a worker process: the daemon keeps the chunks) drops the chunks
// after their load. An edited scene then needs only its changed chunks: missing() reports the
// others present, held by the decoded data, and the load copies them from there. The image is
// the local render's of the edited data.
TEST(NodeService, WithoutACacheALoadCopiesTheChunksItSharesWithDecodedData) {
  UvKjLoop loop;
  const Scene& scene = cornellBox();
  NodeOptions options;
  options.chunkCacheBytes = 0;
  TestNode node(loop, 1, options);
  Client client(loop, node.address());
  proto::Node::Client nodeCap = client.authenticate(testKey(1));
  Leased leased = takeLease(loop, nodeCap, {0});
  size_t sent = 0;
  const Hash128 first = upload(loop, leased.session, scene, &sent);
  EXPECT_EQ(sent, scene.manifest.chunkHashes().size());
  EXPECT_EQ(node->cachedChunkBytes(), 0u);  // nothing kept after the load

  Scene edited;
  edited.data = scene.data;
  edited.data.materials[0].baseColorFactor = {0.2f, 0.9f, 0.3f, 1.0f};
  ChunkEncodeOptions encode;
  encode.maxChunkBytes = 16 << 10;
  edited.manifest = encodeRenderData(edited.data, edited.store, encode);
  const std::vector<Hash128> lacking = askMissing(loop, leased.session, edited.manifest.chunkHashes());
  ASSERT_EQ(lacking.size(), 1u);  // the materials' chunk alone
  const Hash128 second = upload(loop, leased.session, edited, &sent);
  EXPECT_EQ(sent, 1u);
  EXPECT_NE(second, first);
  EXPECT_EQ(node->stats().scenesDecoded, 2u);
  const WorkUnit unit = makeUnit(0, 0, 96, 64, 0, 2, 2);
  EXPECT_EQ(renderRemote(loop, leased.session, second, 0, unit).sums,
            renderLocally(edited.data, unit).sums);
  EXPECT_EQ(node->cachedChunkBytes(), 0u);

  // Another edit with another camera (decoded in full: new materials); then the first scene
  // with that camera, which only the second edit's data holds: nothing is sent, and the load
  // assembles it from both.
  Scene movedEdit;
  movedEdit.data = edited.data;
  movedEdit.data.materials[0].roughnessFactor = 0.125f;
  movedEdit.data.camera[0].position.x += 0.25f;
  movedEdit.manifest = encodeRenderData(movedEdit.data, movedEdit.store, encode);
  upload(loop, leased.session, movedEdit, &sent);
  EXPECT_EQ(sent, 2u);  // the materials' chunk and the camera's
  Scene moved;
  moved.data = scene.data;
  moved.data.camera[0] = movedEdit.data.camera[0];
  moved.manifest = encodeRenderData(moved.data, moved.store, encode);
  const Hash128 third = upload(loop, leased.session, moved, &sent);
  EXPECT_EQ(sent, 0u);
  EXPECT_EQ(renderRemote(loop, leased.session, third, 0, unit).sums,
            renderLocally(moved.data, unit).sums);
}

TEST(NodeService, PingAnswersWhileADeviceRenders) {
  const Scene& scene = cornellBox();
  UvKjLoop loop;
  TestNode node(loop, 1);
  Client client(loop, node.address());
  proto::Node::Client nodeCap = client.authenticate(testKey(1));
  Leased leased = takeLease(loop, nodeCap);
  Hash128 sceneId = upload(loop, leased.session, scene);

  // The whole image at 256 samples on one thread: long enough to ping several times during it.
  bool renderDone = false;
  auto rendering = sendRender(leased.session, sceneId, 0, makeUnit(0, 0, 96, 64, 0, 256, 256))
                       .then([&](auto&&) { renderDone = true; })
                       .eagerlyEvaluate(nullptr);
  int pingsDuringRender = 0;
  double slowestPingMs = 0;
  for (int i = 0; i < 5 && !renderDone; ++i) {
    auto start = std::chrono::steady_clock::now();
    waitFor(loop, leased.session.pingRequest().send());
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                    .count();
    if (!renderDone) {
      ++pingsDuringRender;
      slowestPingMs = std::max(slowestPingMs, ms);
    }
  }
  EXPECT_GE(pingsDuringRender, 3) << "the render finished too soon to tell";
  waitFor(loop, kj::mv(rendering), 60000);
  EXPECT_TRUE(renderDone);
  std::printf("[ figure ] slowest ping during a render: %.2f ms (%d pings)\n", slowestPingMs,
              pingsDuringRender);
}

// --- cluster key file ------------------------------------------------------------------------

std::string tempDir() {
  char pattern[] = "/tmp/peerlight-key-test-XXXXXX";
  char* dir = mkdtemp(pattern);
  PL_CHECK(dir != nullptr);
  return dir;
}

TEST(ClusterKey, CreatedOnFirstUseWithPrivateModes) {
  std::string dir = tempDir();
  std::string path = dir + "/a/b/cluster.key";
  auto created = loadClusterKey(path);
  ASSERT_TRUE(created.ok()) << created.error().message;
  EXPECT_EQ(created->bytes.size(), kNewClusterKeyBytes);
  struct stat st {};
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(stat((dir + "/a/b").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);

  auto again = loadClusterKey(path);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->bytes, created->bytes);
  EXPECT_EQ(keyFingerprint(*again), keyFingerprint(*created));
  EXPECT_EQ(keyFingerprint(*again).size(), 16u);
  EXPECT_NE(keyFingerprint(*again), keyFingerprint(testKey(1)));

  auto absent = loadClusterKey(dir + "/none.key", /*createIfMissing=*/false);
  ASSERT_FALSE(absent.ok());
  EXPECT_NE(absent.error().message.find("none.key"), std::string::npos);

  std::ofstream(dir + "/short.key") << "tiny";
  auto tooShort = loadClusterKey(dir + "/short.key");
  ASSERT_FALSE(tooShort.ok());
  EXPECT_NE(tooShort.error().message.find("short.key"), std::string::npos);

  // Weak or foreign key files are refused, saying why (issue 13): readable by others, reached
  // through a link, owned by another user.
  std::ofstream(dir + "/open.key", std::ios::binary) << std::string(32, '\xeb');
  ::chmod((dir + "/open.key").c_str(), 0644);
  auto open = loadClusterKey(dir + "/open.key");
  ASSERT_FALSE(open.ok());
  EXPECT_NE(open.error().message.find("mode 644"), std::string::npos) << open.error().message;
  EXPECT_NE(open.error().message.find("chmod 600"), std::string::npos) << open.error().message;
  ::chmod((dir + "/open.key").c_str(), 0600);
  EXPECT_TRUE(loadClusterKey(dir + "/open.key").ok());
  ASSERT_EQ(::symlink((dir + "/open.key").c_str(), (dir + "/link.key").c_str()), 0);
  auto linked = loadClusterKey(dir + "/link.key");
  ASSERT_FALSE(linked.ok());
  EXPECT_NE(linked.error().message.find("symbolic link"), std::string::npos)
      << linked.error().message;
  if (::geteuid() == 0) {
    ASSERT_EQ(::chown((dir + "/open.key").c_str(), 65534, 65534), 0);
    auto foreign = loadClusterKey(dir + "/open.key");
    ASSERT_FALSE(foreign.ok());
    EXPECT_NE(foreign.error().message.find("belongs to uid 65534"), std::string::npos)
        << foreign.error().message;
  }

  // Keys are generated, never typed: a file of printable characters (a passphrase) is refused,
  // naming the command that makes keys.
  std::ofstream(dir + "/typed.key") << "correct horse battery staple\n";
  ::chmod((dir + "/typed.key").c_str(), 0600);
  auto typed = loadClusterKey(dir + "/typed.key");
  ASSERT_FALSE(typed.ok());
  EXPECT_NE(typed.error().message.find("typed passphrase"), std::string::npos)
      << typed.error().message;
  EXPECT_NE(typed.error().message.find("peerlight key --passphrase"), std::string::npos);

  EXPECT_EQ(clusterKeyPath("/x/y.key").value(), "/x/y.key");
  setenv("PEERLIGHT_KEY_FILE", "/from/env.key", 1);
  EXPECT_EQ(clusterKeyPath("").value(), "/from/env.key");
  unsetenv("PEERLIGHT_KEY_FILE");
  std::string home = std::getenv("HOME") ? std::getenv("HOME") : "";
  if (!home.empty()) {
    EXPECT_EQ(clusterKeyPath("").value(), home + "/.config/peerlight/cluster.key");
  }
  std::system(("rm -rf " + dir).c_str());
}

// A passphrase becomes a key through scrypt with the cluster's salt: the same passphrase and
// salt give the same key on every machine, another salt (another cluster) another key; short
// passphrases and salts of another size are refused. The derived key loads (it is not text).
TEST(ClusterKey, PassphrasesGoThroughScryptWithTheClustersSalt) {
  std::vector<uint8_t> salt(kClusterSaltBytes, 7), other(kClusterSaltBytes, 8);
  auto a = deriveClusterKey("a long passphrase", salt);
  auto b = deriveClusterKey("a long passphrase", salt);
  auto c = deriveClusterKey("a long passphrase", other);
  auto d = deriveClusterKey("another passphrase", salt);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok() && d.ok());
  EXPECT_EQ(a->bytes.size(), kNewClusterKeyBytes);
  EXPECT_EQ(a->bytes, b->bytes);
  // Pinned: a change of scrypt's parameters or of the label would give the machines of one
  // cluster, on two versions, different keys. (Python: hashlib.scrypt(b"a long passphrase",
  // salt=b"peerlight cluster key v1" + bytes([7] * 16), n=2**15, r=8, p=1, dklen=32).)
  static const char* kHex = "0123456789abcdef";
  std::string hex;
  for (uint8_t byte : a->bytes) hex += std::string{kHex[byte >> 4], kHex[byte & 15]};
  EXPECT_EQ(hex, "dd6fc83bb8f5a0864a81479fcb09f303b323d1f3f820916fd108bf83e721e839");
  EXPECT_NE(a->bytes, c->bytes);
  EXPECT_NE(a->bytes, d->bytes);
  EXPECT_FALSE(deriveClusterKey("short", salt).ok());
  EXPECT_FALSE(deriveClusterKey("a long passphrase", std::vector<uint8_t>(8, 1)).ok());

  std::string dir = tempDir();
  ASSERT_TRUE(writeClusterKey(dir + "/derived.key", *a, false).ok());
  EXPECT_FALSE(writeClusterKey(dir + "/derived.key", *c, false).ok());  // kept
  auto loaded = loadClusterKey(dir + "/derived.key", false);
  ASSERT_TRUE(loaded.ok()) << loaded.error().message;
  EXPECT_EQ(loaded->bytes, a->bytes);
  ASSERT_TRUE(writeClusterKey(dir + "/derived.key", *c, true).ok());  // replaced
  EXPECT_EQ(loadClusterKey(dir + "/derived.key", false)->bytes, c->bytes);
  struct stat st {};
  ASSERT_EQ(::stat((dir + "/derived.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  std::system(("rm -rf " + dir).c_str());
}

TEST(ClusterKey, ProofsBindKeyAndBothNonces) {
  ClusterKey key = testKey(3);
  Nonce a = randomNonce(), b = randomNonce();
  EXPECT_NE(a, b);
  Proof p = nodeProof(key, a, b);
  EXPECT_TRUE(proofMatches(p, nodeProof(key, a, b)));
  EXPECT_FALSE(proofMatches(p, nodeProof(key, b, a)));
  EXPECT_FALSE(proofMatches(p, nodeProof(testKey(4), a, b)));
  EXPECT_FALSE(proofMatches(p, primaryProof(key, a, b)));  // the labels differ by role
  EXPECT_FALSE(proofMatches(p, std::span<const uint8_t>(p.data(), 31)));
}

}  // namespace
}  // namespace pl
