// A node that stays warm (transport/node_service.h, "Camera moves" and "Warm workers"):
// - a load whose manifest differs only in the camera decodes nothing but the camera chunk, its
//   devices switch cameras without a load, and its tiles are bitwise those of a full load of
//   the data with that camera (in process, with a device that cannot switch cameras, and
//   through a worker process);
// - a daemon keeps the worker of a lease that ended quiet, and the next lease on the same
//   devices reuses it (same pid, no new process) with the same bits; warm workers are evicted
//   beyond their bounds, and never kept after a revocation or a lease that ended mid-render;
// - WarmWorkerPool's rule, as pure logic.
// The worker tests start `peerlight worker` processes (PEERLIGHT_BINARY). Prints load times of
// a camera move on DamagedHelmet when the shared scenes are there ("[ info ]" lines).

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "core/render/cpu_device.h"
#include "core/scene/compile.h"
#include "core/scene/look_at.h"
#include "tests/transport/chunk_test_util.h"
#include "tests/transport/loop_test_util.h"
#include "tests/transport/test_node.h"
#include "transport/chunk_codec.h"
#include "transport/node_lease.h"
#include "transport/node_service.h"
#include "transport/protocol_convert.h"
#include "transport/uv_kj_loop.h"

namespace pl {
namespace {

using testing::waitFor;
using Clock = std::chrono::steady_clock;

double msSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// Render data and its manifest; chunks go to a store shared by the scenes of one test, so that
// a camera move adds one chunk to it.
struct Scene {
  std::shared_ptr<const RenderData> data;
  ChunkManifest manifest;
  Hash128 id;
};

Scene encode(RenderData data, ChunkStore& store) {
  Scene scene;
  ChunkEncodeOptions options;
  options.maxChunkBytes = 16 << 10;  // several chunks per array
  scene.manifest = encodeRenderData(data, store, options);
  scene.id = sceneIdOf(scene.manifest);
  scene.data = std::make_shared<const RenderData>(std::move(data));
  return scene;
}

RenderData compileScene(const std::string& path, uint32_t width, uint32_t height) {
  CompileOptions options;
  options.width = width;
  options.height = height;
  auto data = loadAndCompile(path, options);
  PL_CHECK_MSG(data.ok(), "%s", data.ok() ? "" : data.error().message.c_str());
  return std::move(*data);
}

const RenderData& cornellBox() {
  static const RenderData* data = new RenderData(
      compileScene(std::string(PEERLIGHT_SOURCE_DIR) + "/scenes/cornell_box.gltf", 48, 32));
  return *data;
}

// `data` seen from elsewhere (lookAtCamera(), as a session's camera edit), at width x height.
RenderData withCamera(const RenderData& data, kernel::Vec3f eye, kernel::Vec3f target,
                      uint32_t width, uint32_t height) {
  RenderData moved = data;
  LookAt lookAt;
  lookAt.eye = eye;
  lookAt.target = target;
  auto camera = lookAtCamera(lookAt, width, height, data.camera[0].tanHalfFovY);
  PL_CHECK(camera.ok());
  moved.camera[0] = *camera;
  return moved;
}

TileResult renderLocally(const RenderData& data, const WorkUnit& unit) {
  CpuDevice device(1);
  PL_CHECK(device.load(std::make_shared<const RenderData>(data)).ok());
  auto result = device.render(unit);
  PL_CHECK(result.ok());
  return std::move(*result);
}

WorkUnit wholeImage(const RenderData& data, uint32_t spp = 2) {
  WorkUnit unit;
  unit.tile = {0, 0, data.camera[0].width, data.camera[0].height};
  unit.sampleBegin = 0;
  unit.sampleEnd = spp;
  unit.totalSamples = spp;
  return unit;
}

// A Primary's side of one lease, in process (NodeService::newTrustedNode()).
struct Leased {
  proto::Lease::Client lease = nullptr;
  proto::RenderSession::Client session = nullptr;
};

Leased takeLease(UvKjLoop& loop, proto::Node::Client& node, std::vector<uint32_t> devices) {
  auto request = node.leaseRequest();
  auto r = request.initRequest();
  r.setPrimaryName("test-primary");
  auto list = r.initDevices(uint32_t(devices.size()));
  for (size_t i = 0; i < devices.size(); ++i) list.set(uint32_t(i), devices[i]);
  auto reply = waitFor(loop, request.send(), 30000);
  return Leased{reply.getLease(), reply.getSession()};
}

// missing -> put what lacks -> load. *sent: the chunks put; *loadMs: load() call to answer.
void sendPrepare(UvKjLoop& loop, proto::RenderSession::Client& session,
                 const ChunkManifest& manifest) {
  auto request = session.prepareRequest();
  toProto(manifest, request.initManifest());
  waitFor(loop, request.send(), 30000);
}

// Puts each chunk (its bytes from `store` under its own hash), one after the other.
void putChunks(UvKjLoop& loop, proto::RenderSession::Client& session,
               const std::vector<Hash128>& hashes, const ChunkStore& store) {
  for (const Hash128& h : hashes) {
    auto put = session.putRequest();
    auto chunk = put.initChunk();
    toProto(h, chunk.initHash());
    const std::vector<uint8_t>& bytes = test::chunkBytes(store, h);
    chunk.setData(kj::arrayPtr(bytes.data(), bytes.size()));
    waitFor(loop, put.send(), 30000);
  }
}

// As a Primary uploads: missing(), then (when `prepare`) the manifest ahead of the puts, the
// puts, the load.
Hash128 upload(UvKjLoop& loop, proto::RenderSession::Client& session, const Scene& scene,
               const ChunkStore& store, size_t* sent = nullptr, double* loadMs = nullptr,
               bool prepare = false) {
  std::vector<Hash128> hashes = scene.manifest.chunkHashes();
  auto ask = session.missingRequest();
  toProto(hashes, ask.initHashes(uint32_t(hashes.size())));
  std::vector<Hash128> lacking = fromProto(waitFor(loop, ask.send(), 30000).getMissing()).value();
  if (prepare && !lacking.empty()) sendPrepare(loop, session, scene.manifest);
  putChunks(loop, session, lacking, store);
  if (sent != nullptr) *sent = lacking.size();
  auto load = session.loadRequest();
  toProto(scene.manifest, load.initManifest());
  Clock::time_point start = Clock::now();
  Hash128 id = fromProto(waitFor(loop, load.send(), 120000).getScene());
  if (loadMs != nullptr) *loadMs = msSince(start);
  return id;
}

TileResult renderRemote(UvKjLoop& loop, proto::RenderSession::Client& session, const Hash128& scene,
                        uint32_t device, const WorkUnit& unit) {
  auto request = session.renderRequest();
  toProto(scene, request.initScene());
  request.setDevice(device);
  toProto(unit, request.initUnit());
  auto reply = waitFor(loop, request.send(), 60000);
  auto result = fromProto(reply.getResult());
  PL_CHECK_MSG(result.ok(), "%s", result.ok() ? "" : result.error().message.c_str());
  return std::move(*result);
}

// Sends a render of `unit` and drops the call once the device has had time to start it (a
// Primary's camera move cancels the old generation's calls so).
void cancelRenderAfterItStarted(UvKjLoop& loop, proto::RenderSession::Client& session,
                                const Hash128& scene, const WorkUnit& unit) {
  auto request = session.renderRequest();
  toProto(scene, request.initScene());
  request.setDevice(0);
  toProto(unit, request.initUnit());
  auto call = request.send();
  loop.timer().afterDelay(1 * kj::SECONDS).wait(loop.waitScope());
}

// A unit that takes minutes on one thread (Cornell box, 2^16 spp).
WorkUnit minutesLong(const RenderData& data) {
  WorkUnit unit = wholeImage(data);
  unit.sampleEnd = unit.totalSamples = 1u << 16;
  return unit;
}

void expectSameBits(const TileResult& got, const TileResult& want, const std::string& what) {
  EXPECT_EQ(got.unit, want.unit) << what;
  EXPECT_TRUE(got.sums == want.sums) << what << ": the sums differ";
}

std::string failureOf(std::function<void()> fn) {
  kj::Maybe<kj::Exception> e = kj::runCatchingExceptions(fn);
  KJ_IF_MAYBE (exception, e) return exception->getDescription().cStr();
  return "";
}

// Runs the loop until `done` or `ms` pass (a worker process exiting, a capability released).
bool pumpUntil(UvKjLoop& loop, const std::function<bool()>& done, int ms = 10000) {
  Clock::time_point start = Clock::now();
  while (!done()) {
    if (msSince(start) > ms) return false;
    loop.timer().afterDelay(10 * kj::MILLISECONDS).wait(loop.waitScope());
  }
  return true;
}

// A CPU device that cannot switch cameras (as a CUDA device): the node loads copies.
class NoCameraSwitchDevice final : public Device {
 public:
  DeviceInfo info() const override { return inner_.info(); }
  Status load(std::shared_ptr<const RenderData> data) override { return inner_.load(data); }

 protected:
  Result<TileResult> renderUnit(const WorkUnit& unit, const RenderStop& stop) override {
    return inner_.render(unit, stop);
  }

 private:
  CpuDevice inner_{1};
};

std::vector<std::unique_ptr<Device>> cpuDevices(size_t count) {
  std::vector<std::unique_ptr<Device>> devices;
  for (size_t i = 0; i < count; ++i) devices.push_back(std::make_unique<CpuDevice>(1));
  return devices;
}

NodeOptions quietNode() {
  NodeOptions options;
  options.name = "warm-test";
  options.tls = false;
  return options;
}

// --- camera moves, in process ------------------------------------------------------------------

TEST(NodeCameraMove, CameraOnlyLoadSharesTheDataAndRendersTheSameBits) {
  UvKjLoop loop;
  NodeService node(loop, testing::nodeTestKey(1), cpuDevices(2), quietNode());
  proto::Node::Client client = node.newTrustedNode("test");
  ChunkStore store;
  Scene a = encode(cornellBox(), store);
  Scene b = encode(withCamera(cornellBox(), {0.3f, 1.1f, 3.2f}, {0, 0.9f, 0}, 48, 32), store);
  // Another image size too: the work units follow the scene's camera.
  Scene c = encode(withCamera(cornellBox(), {-0.4f, 1.0f, 3.6f}, {0, 1, 0}, 40, 24), store);
  Leased leased = takeLease(loop, client, {0, 1});

  EXPECT_EQ(upload(loop, leased.session, a, store), a.id);
  for (uint32_t d : {0u, 1u}) {
    expectSameBits(renderRemote(loop, leased.session, a.id, d, wholeImage(*a.data)),
                   renderLocally(*a.data, wholeImage(*a.data)),
                   "scene a on device " + std::to_string(d));
  }
  NodeStats before = node.stats();
  EXPECT_EQ(before.scenesDecoded, 1u);
  EXPECT_EQ(before.deviceLoads, 2u);

  size_t sent = 0;
  EXPECT_EQ(upload(loop, leased.session, b, store, &sent), b.id);  // the id: its manifest's hash
  EXPECT_EQ(sent, 1u) << "a camera move sends the camera chunk alone";
  NodeStats moved = node.stats();
  EXPECT_EQ(moved.scenesDecoded, 1u) << "a camera move decoded the scene again";
  EXPECT_EQ(moved.camerasDecoded, 1u);
  EXPECT_EQ(moved.deviceLoads, 2u) << "a camera move reloaded a device (a BVH build)";
  EXPECT_EQ(moved.cameraSwitches, 2u);
  for (uint32_t d : {0u, 1u}) {
    expectSameBits(renderRemote(loop, leased.session, b.id, d, wholeImage(*b.data)),
                   renderLocally(*b.data, wholeImage(*b.data)),
                   "the moved camera on device " + std::to_string(d));
  }

  EXPECT_EQ(upload(loop, leased.session, c, store, &sent), c.id);
  EXPECT_EQ(sent, 1u);
  expectSameBits(renderRemote(loop, leased.session, c.id, 1, wholeImage(*c.data)),
                 renderLocally(*c.data, wholeImage(*c.data)), "another image size");
  // Back to the first scene (still loaded in the session): a camera switch again.
  expectSameBits(renderRemote(loop, leased.session, a.id, 1, wholeImage(*a.data)),
                 renderLocally(*a.data, wholeImage(*a.data)), "scene a again");
  NodeStats after = node.stats();
  EXPECT_EQ(after.scenesDecoded, 1u);
  EXPECT_EQ(after.deviceLoads, 2u);
  EXPECT_EQ(after.cameraSwitches, 5u);  // b and c on both devices, a on device 1

  // A second lease of the same scenes decodes nothing and loads no device either.
  leased = Leased{};
  Leased second = takeLease(loop, client, {0});
  EXPECT_EQ(upload(loop, second.session, b, store, &sent), b.id);
  EXPECT_EQ(sent, 0u);
  expectSameBits(renderRemote(loop, second.session, b.id, 0, wholeImage(*b.data)),
                 renderLocally(*b.data, wholeImage(*b.data)), "the second lease");
  EXPECT_EQ(node.stats().scenesDecoded, 1u);
  EXPECT_EQ(node.stats().deviceLoads, 2u);
}

// The camera of a camera-only load from the network is validated as a full load's would be, and
// a bad one fails only its own load.
TEST(NodeCameraMove, BadCameraIsRefusedAndTheSessionKeepsServing) {
  UvKjLoop loop;
  NodeService node(loop, testing::nodeTestKey(1), cpuDevices(1), quietNode());
  proto::Node::Client client = node.newTrustedNode("test");
  ChunkStore store;
  Scene a = encode(cornellBox(), store);
  RenderData bad = cornellBox();
  bad.camera[0].width = 0;
  Scene zeroWidth = encode(bad, store);
  bad = cornellBox();
  bad.camera[0].forward.x = std::numeric_limits<float>::quiet_NaN();
  Scene notFinite = encode(bad, store);
  Leased leased = takeLease(loop, client, {0});
  upload(loop, leased.session, a, store);
  EXPECT_NE(failureOf([&] { upload(loop, leased.session, zeroWidth, store); }).find("image size"),
            std::string::npos);
  EXPECT_NE(failureOf([&] { upload(loop, leased.session, notFinite, store); }).find("non-finite"),
            std::string::npos);
  EXPECT_EQ(node.stats().scenesDecoded, 1u);
  expectSameBits(renderRemote(loop, leased.session, a.id, 0, wholeImage(*a.data)),
                 renderLocally(*a.data, wholeImage(*a.data)), "after the refused loads");
}

// A render call that its caller cancels (a camera move) stops the unit being rendered at its
// next pixel: the device is free for the next generation at once, not minutes later (the next
// render would time out after 60 s). Returns the lease (kept for the caller's checks).
Leased renderAfterACancelledUnit(UvKjLoop& loop, proto::Node::Client& client) {
  ChunkStore store;
  Scene a = encode(cornellBox(), store);
  Leased leased = takeLease(loop, client, {0});
  upload(loop, leased.session, a, store);
  cancelRenderAfterItStarted(loop, leased.session, a.id, minutesLong(*a.data));
  expectSameBits(renderRemote(loop, leased.session, a.id, 0, wholeImage(*a.data)),
                 renderLocally(*a.data, wholeImage(*a.data)), "after the stopped unit");
  return leased;
}

TEST(NodeCameraMove, CancelledRenderStopsTheUnitBeingRendered) {
  UvKjLoop loop;
  NodeService node(loop, testing::nodeTestKey(1), cpuDevices(1), quietNode());
  proto::Node::Client client = node.newTrustedNode("test");
  Leased leased = renderAfterACancelledUnit(loop, client);
  EXPECT_EQ(node.stats().unitsStopped, 1u);
}

// A device that cannot switch cameras gets a copy of the data that holds the camera: the same
// bits, at the cost of a load.
TEST(NodeCameraMove, DeviceThatCannotSwitchCamerasLoadsACopy) {
  UvKjLoop loop;
  std::vector<std::unique_ptr<Device>> devices;
  devices.push_back(std::make_unique<NoCameraSwitchDevice>());
  NodeService node(loop, testing::nodeTestKey(1), std::move(devices), quietNode());
  proto::Node::Client client = node.newTrustedNode("test");
  ChunkStore store;
  Scene a = encode(cornellBox(), store);
  Scene b = encode(withCamera(cornellBox(), {0.3f, 1.1f, 3.2f}, {0, 0.9f, 0}, 48, 32), store);
  Leased leased = takeLease(loop, client, {0});
  upload(loop, leased.session, a, store);
  upload(loop, leased.session, b, store);
  expectSameBits(renderRemote(loop, leased.session, b.id, 0, wholeImage(*b.data)),
                 renderLocally(*b.data, wholeImage(*b.data)), "a copy with the camera");
  expectSameBits(renderRemote(loop, leased.session, a.id, 0, wholeImage(*a.data)),
                 renderLocally(*a.data, wholeImage(*a.data)), "back to the shared data");
  NodeStats stats = node.stats();
  EXPECT_EQ(stats.scenesDecoded, 1u);
  EXPECT_EQ(stats.camerasDecoded, 1u);
  EXPECT_EQ(stats.cameraSwitches, 0u);
  // a; b's copy (after the device refused to switch cameras); a again.
  EXPECT_EQ(stats.deviceLoads, 3u);
}

// --- warm workers ------------------------------------------------------------------------------

// A daemon whose workers are `peerlight worker` processes (this machine's devices: the tests
// lease device 0, the CPU), or, with `devices` > 1, node_test_worker processes that serve that
// many CPU devices.
NodeOptions daemonOptions(size_t devices = 1) {
  NodeOptions options = quietNode();
  if (devices == 1) {
    options.workerArgv = {PEERLIGHT_BINARY, "worker", "--threads", "1"};
  } else {
    options.workerArgv = {PEERLIGHT_TEST_WORKER, "--device-count", std::to_string(devices)};
  }
  return options;
}

// Through a worker process: the camera-only load renders the same bits.
TEST(WarmWorkers, CameraOnlyLoadThroughAWorkerRendersTheSameBits) {
  UvKjLoop loop;
  NodeService node(loop, testing::nodeTestKey(1), cpuDevices(1), daemonOptions());
  proto::Node::Client client = node.newTrustedNode("test");
  ChunkStore store;
  Scene a = encode(cornellBox(), store);
  Scene b = encode(withCamera(cornellBox(), {0.3f, 1.1f, 3.2f}, {0, 0.9f, 0}, 48, 32), store);
  Leased leased = takeLease(loop, client, {0});
  upload(loop, leased.session, a, store);
  expectSameBits(renderRemote(loop, leased.session, a.id, 0, wholeImage(*a.data)),
                 renderLocally(*a.data, wholeImage(*a.data)), "scene a in the worker");
  size_t sent = 0;
  EXPECT_EQ(upload(loop, leased.session, b, store, &sent), b.id);
  EXPECT_EQ(sent, 1u);
  expectSameBits(renderRemote(loop, leased.session, b.id, 0, wholeImage(*b.data)),
                 renderLocally(*b.data, wholeImage(*b.data)), "the moved camera in the worker");
  expectSameBits(renderRemote(loop, leased.session, a.id, 0, wholeImage(*a.data)),
                 renderLocally(*a.data, wholeImage(*a.data)), "scene a again in the worker");
  EXPECT_EQ(node.workerCount(), 1u);
}

// Prepared: the daemon hands each put on to the worker as it comes, unchecked (the worker
// decodes it into place then, which checks it), not after the load. The same bits; a camera
// move's one chunk too.
TEST(WarmWorkers, PreparedPutsGoOnToTheWorkerAsTheyCome) {
  UvKjLoop loop;
  NodeService node(loop, testing::nodeTestKey(1), cpuDevices(1), daemonOptions());
  proto::Node::Client client = node.newTrustedNode("test");
  ChunkStore store;
  Scene a = encode(cornellBox(), store);
  Scene b = encode(withCamera(cornellBox(), {0.3f, 1.1f, 3.2f}, {0, 0.9f, 0}, 48, 32), store);
  Leased leased = takeLease(loop, client, {0});
  size_t sent = 0;
  upload(loop, leased.session, a, store, &sent, nullptr, true);
  EXPECT_GT(sent, 1u);
  EXPECT_EQ(node.stats().putsForwarded, sent);
  expectSameBits(renderRemote(loop, leased.session, a.id, 0, wholeImage(*a.data)),
                 renderLocally(*a.data, wholeImage(*a.data)), "scene a, prepared in the worker");
  EXPECT_EQ(upload(loop, leased.session, b, store, &sent, nullptr, true), b.id);
  EXPECT_EQ(sent, 1u);
  expectSameBits(renderRemote(loop, leased.session, b.id, 0, wholeImage(*b.data)),
                 renderLocally(*b.data, wholeImage(*b.data)), "the moved camera, prepared");
  EXPECT_EQ(node.workerCount(), 1u);
  // The daemon did not decode them: they went on unchecked, and the worker's decode into
  // place checked them. It cached each once the worker took it: a later lease sends nothing.
  EXPECT_EQ(node.stats().forwardsCheckedByWorker, node.stats().putsForwarded);
  leased = Leased{};
  ASSERT_TRUE(pumpUntil(loop, [&] { return node.activeLeaseCount() == 0; }));
  Leased next = takeLease(loop, client, {0});
  EXPECT_EQ(upload(loop, next.session, a, store, &sent, nullptr, true), a.id);
  EXPECT_EQ(sent, 0u);
}

// `bytes` with one byte of its zstd payload changed: the same frame header and size, content
// that no longer hashes to its name.
std::vector<uint8_t> corrupted(std::vector<uint8_t> bytes) {
  PL_CHECK(bytes.size() > 64);
  bytes[bytes.size() - 8] ^= 0x5a;
  return bytes;
}

// The scene's largest chunk.
Hash128 largestChunk(const Scene& scene, const ChunkStore& store) {
  Hash128 largest;
  size_t n = 0;
  for (const Hash128& h : scene.manifest.chunkHashes()) {
    if (test::chunkBytes(store, h).size() > n) n = test::chunkBytes(store, h).size(), largest = h;
  }
  return largest;
}

// Puts `bytes` under `hash`; the put's failure ("" if none).
std::string putBytes(UvKjLoop& loop, proto::RenderSession::Client& session, const Hash128& hash,
                     const std::vector<uint8_t>& bytes) {
  return failureOf([&] {
    auto put = session.putRequest();
    auto chunk = put.initChunk();
    toProto(hash, chunk.initHash());
    chunk.setData(kj::arrayPtr(bytes.data(), bytes.size()));
    waitFor(loop, put.send(), 30000);
    // A stream's refused put is reported on the next call: ask missing() (answered after it).
    auto ask = session.missingRequest();
    toProto(std::vector<Hash128>{hash}, ask.initHashes(1));
    waitFor(loop, ask.send(), 30000);
  });
}

// Whether missing() lists the chunk.
bool lacks(UvKjLoop& loop, proto::RenderSession::Client& session, const Hash128& hash) {
  auto ask = session.missingRequest();
  toProto(std::vector<Hash128>{hash}, ask.initHashes(1));
  return !fromProto(waitFor(loop, ask.send(), 30000).getMissing()).value().empty();
}

// A prepared chunk whose bytes do not hash to its name (of the size the manifest says) goes on
// to the worker unchecked, which refuses it as it decodes it into place: the put fails with the
// reason, nothing is cached, and the same session goes on (the good chunk, then the load).
TEST(WarmWorkers, APreparedChunkThatFailsItsHashIsRefusedByTheWorker) {
  UvKjLoop loop;
  NodeService node(loop, testing::nodeTestKey(1), cpuDevices(1), daemonOptions());
  proto::Node::Client client = node.newTrustedNode("test");
  ChunkStore store;
  Scene a = encode(cornellBox(), store);
  Leased leased = takeLease(loop, client, {0});
  sendPrepare(loop, leased.session, a.manifest);
  const Hash128 bad = largestChunk(a, store);
  const std::string why =
      putBytes(loop, leased.session, bad, corrupted(test::chunkBytes(store, bad)));
  EXPECT_NE(why.find(bad.hex()), std::string::npos) << why;
  EXPECT_TRUE(lacks(loop, leased.session, bad)) << "the refused chunk counts as here";
  upload(loop, leased.session, a, store, nullptr, nullptr, true);
  expectSameBits(renderRemote(loop, leased.session, a.id, 0, wholeImage(*a.data)),
                 renderLocally(*a.data, wholeImage(*a.data)), "after the refused chunk");
  EXPECT_EQ(node.stats().forwardsCheckedByWorker, a.manifest.chunkHashes().size());
}

// The same when the worker does not decode the chunk into place (a warm worker that holds the
// scene, whose daemon's cache let the chunks go): it decodes an unchecked put to check it all
// the same, so the daemon never caches bytes that nobody checked.
TEST(WarmWorkers, AnUncheckedPutIsCheckedByAWorkerThatHoldsTheScene) {
  UvKjLoop loop;
  NodeOptions options = daemonOptions();
  options.chunkCacheBytes = 1;  // nothing stays cached beyond its session's load
  NodeService node(loop, testing::nodeTestKey(1), cpuDevices(1), options);
  proto::Node::Client client = node.newTrustedNode("test");
  ChunkStore store;
  Scene a = encode(cornellBox(), store);
  {
    Leased first = takeLease(loop, client, {0});
    upload(loop, first.session, a, store, nullptr, nullptr, true);
  }
  ASSERT_TRUE(pumpUntil(loop, [&] { return node.activeLeaseCount() == 0; }));
  ASSERT_EQ(node.stats().warmWorkers, 1u);
  Leased second = takeLease(loop, client, {0});
  const Hash128 bad = largestChunk(a, store);
  ASSERT_TRUE(lacks(loop, second.session, bad)) << "the daemon kept the chunk";
  sendPrepare(loop, second.session, a.manifest);
  const std::string why =
      putBytes(loop, second.session, bad, corrupted(test::chunkBytes(store, bad)));
  EXPECT_NE(why.find("content hashes to"), std::string::npos) << why;
  EXPECT_TRUE(lacks(loop, second.session, bad)) << "the daemon took bytes nobody checked";
  EXPECT_EQ(upload(loop, second.session, a, store, nullptr, nullptr, true), a.id);
  expectSameBits(renderRemote(loop, second.session, a.id, 0, wholeImage(*a.data)),
                 renderLocally(*a.data, wholeImage(*a.data)), "the warm worker");
}

// An upload prepared and sent but never loaded (its generation superseded), then a load of
// other geometry that shares its chunks, with no prepare (the daemon has every chunk): the
// worker said those chunks were there (its prepared load holds them; it keeps no encoded copy),
// and the load takes them from it.
TEST(WarmWorkers, ALoadOfOtherGeometryTakesWhatAnUnloadedPrepareHolds) {
  UvKjLoop loop;
  NodeService node(loop, testing::nodeTestKey(1), cpuDevices(1), daemonOptions());
  proto::Node::Client client = node.newTrustedNode("test");
  ChunkStore store;
  Scene a = encode(cornellBox(), store);
  RenderData editedData = cornellBox();
  editedData.materials[0].roughnessFactor = 0.25f;
  Scene b = encode(std::move(editedData), store);
  Leased leased = takeLease(loop, client, {0});
  sendPrepare(loop, leased.session, a.manifest);
  putChunks(loop, leased.session, a.manifest.uploadOrder(), store);
  size_t sent = 0;
  EXPECT_EQ(upload(loop, leased.session, b, store, &sent), b.id);
  EXPECT_GE(sent, 1u);
  EXPECT_LT(sent, b.manifest.chunkHashes().size());
  expectSameBits(renderRemote(loop, leased.session, b.id, 0, wholeImage(*b.data)),
                 renderLocally(*b.data, wholeImage(*b.data)), "the edited scene in the worker");
}

// A prepared chunk whose frame declares another size than the manifest is refused by the
// daemon before it goes on to the worker; the session goes on.
TEST(WarmWorkers, APreparedChunkOfTheWrongSizeIsRefusedByTheDaemon) {
  UvKjLoop loop;
  NodeService node(loop, testing::nodeTestKey(1), cpuDevices(1), daemonOptions());
  proto::Node::Client client = node.newTrustedNode("test");
  ChunkStore store;
  Scene a = encode(cornellBox(), store);
  Leased leased = takeLease(loop, client, {0});
  sendPrepare(loop, leased.session, a.manifest);
  const ChunkRef* x = nullptr;
  const ChunkRef* y = nullptr;
  for (const ArrayManifest& array : a.manifest.arrays)
    for (const ChunkRef& ref : array.chunks) {
      if (x == nullptr) x = &ref;
      else if (y == nullptr && ref.rawBytes != x->rawBytes) y = &ref;
    }
  ASSERT_NE(y, nullptr);
  auto put = leased.session.putRequest();
  auto chunk = put.initChunk();
  toProto(x->hash, chunk.initHash());
  const std::vector<uint8_t>& bytes = test::chunkBytes(store, y->hash);
  chunk.setData(kj::arrayPtr(bytes.data(), bytes.size()));
  const std::string why = failureOf([&] { waitFor(loop, put.send(), 30000); });
  EXPECT_NE(why.find("the prepared manifest says " + std::to_string(x->rawBytes)),
            std::string::npos)
      << why;
  upload(loop, leased.session, a, store, nullptr, nullptr, true);
  expectSameBits(renderRemote(loop, leased.session, a.id, 0, wholeImage(*a.data)),
                 renderLocally(*a.data, wholeImage(*a.data)), "after the refused chunk");
}

// The daemon's cancelled call cancels the worker's: the worker's unit stops too.
TEST(WarmWorkers, CancelledRenderStopsTheWorkersUnit) {
  UvKjLoop loop;
  NodeService node(loop, testing::nodeTestKey(1), cpuDevices(1), daemonOptions());
  proto::Node::Client client = node.newTrustedNode("test");
  Leased leased = renderAfterACancelledUnit(loop, client);
  EXPECT_EQ(node.workerCount(), 1u) << "the worker was replaced rather than its unit stopped";
}

// A lease released quiet leaves its worker warm; the next lease on the same devices is served by
// it (same process), finds the scene loaded, and renders the same bits. It cannot render a
// scene it did not load itself.
TEST(WarmWorkers, NextLeaseReusesTheWarmWorker) {
  UvKjLoop loop;
  NodeService node(loop, testing::nodeTestKey(1), cpuDevices(1), daemonOptions());
  proto::Node::Client client = node.newTrustedNode("test");
  ChunkStore store;
  Scene a = encode(cornellBox(), store);
  Scene b = encode(withCamera(cornellBox(), {0.3f, 1.1f, 3.2f}, {0, 0.9f, 0}, 48, 32), store);
  Leased first = takeLease(loop, client, {0});
  double firstLoadMs = 0;
  upload(loop, first.session, a, store, nullptr, &firstLoadMs);
  const TileResult want = renderLocally(*a.data, wholeImage(*a.data));
  expectSameBits(renderRemote(loop, first.session, a.id, 0, wholeImage(*a.data)), want, "first");
  std::vector<int> pids = node.workerPids();
  ASSERT_EQ(pids.size(), 1u);

  first = Leased{};
  ASSERT_TRUE(pumpUntil(loop, [&] { return node.activeLeaseCount() == 0; }));
  EXPECT_EQ(node.stats().warmWorkers, 1u);
  EXPECT_GT(node.stats().warmWorkerBytes, 0u);
  EXPECT_EQ(node.workerPids(), pids) << "the warm worker stopped";

  Leased second = takeLease(loop, client, {0});
  EXPECT_NE(failureOf([&] {
              renderRemote(loop, second.session, a.id, 0, wholeImage(*a.data));
            }).find("unknown scene"),
            std::string::npos)
      << "a lease rendered a scene that only an earlier lease loaded";
  size_t sent = 0;
  double secondLoadMs = 0;
  EXPECT_EQ(upload(loop, second.session, a, store, &sent, &secondLoadMs), a.id);
  EXPECT_EQ(sent, 0u);
  expectSameBits(renderRemote(loop, second.session, a.id, 0, wholeImage(*a.data)), want,
                 "the warm worker");
  EXPECT_EQ(upload(loop, second.session, b, store, &sent), b.id);
  EXPECT_EQ(sent, 1u);
  expectSameBits(renderRemote(loop, second.session, b.id, 0, wholeImage(*b.data)),
                 renderLocally(*b.data, wholeImage(*b.data)), "a camera move in the warm worker");
  NodeStats stats = node.stats();
  EXPECT_EQ(stats.workersStarted, 1u);
  EXPECT_EQ(stats.warmReuses, 1u);
  EXPECT_EQ(stats.warmWorkers, 0u);  // it serves a lease now
  EXPECT_EQ(node.workerPids(), pids);
  std::printf(
      "[ info ] cornell box 48x32 through a worker: load %.1f ms in a new worker, "
      "%.1f ms in the warm one\n",
      firstLoadMs, secondLoadMs);
}

// Beyond maxWarmWorkers the least recently used warm worker is stopped; a scene larger than
// warmWorkerBytes is not kept at all.
TEST(WarmWorkers, EvictedBeyondTheBounds) {
  UvKjLoop loop;
  NodeOptions options = daemonOptions(2);
  options.maxWarmWorkers = 1;
  NodeService node(loop, testing::nodeTestKey(1), cpuDevices(2), options);
  proto::Node::Client client = node.newTrustedNode("test");
  ChunkStore store;
  Scene a = encode(cornellBox(), store);
  for (uint32_t d : {0u, 1u}) {
    Leased leased = takeLease(loop, client, {d});
    upload(loop, leased.session, a, store);
    leased = Leased{};
    ASSERT_TRUE(pumpUntil(loop, [&] { return node.activeLeaseCount() == 0; }));
  }
  // The worker of device 0 was evicted when device 1's became warm.
  ASSERT_TRUE(pumpUntil(loop, [&] { return node.workerCount() == 1; }));
  EXPECT_EQ(node.stats().warmWorkers, 1u);
  Leased again = takeLease(loop, client, {1});
  EXPECT_EQ(node.stats().warmReuses, 1u) << "device 1's worker was not the one kept";
  Leased other = takeLease(loop, client, {0});
  EXPECT_EQ(node.stats().workersStarted, 3u);
  again = Leased{};
  other = Leased{};

  NodeOptions small = daemonOptions();
  small.warmWorkerBytes = a.manifest.rawBytes() - 1;
  NodeService tight(loop, testing::nodeTestKey(1), cpuDevices(1), small);
  proto::Node::Client tightClient = tight.newTrustedNode("test");
  Leased leased = takeLease(loop, tightClient, {0});
  upload(loop, leased.session, a, store);
  leased = Leased{};
  ASSERT_TRUE(pumpUntil(loop, [&] { return tight.workerCount() == 0; }))
      << "a worker beyond warmWorkerBytes was kept";
  EXPECT_EQ(tight.stats().warmWorkers, 0u);
}

// A revoked lease's worker is never kept, nor is the worker of a lease that ended mid-render.
TEST(WarmWorkers, RevokedOrInterruptedLeasesStopTheirWorkers) {
  UvKjLoop loop;
  NodeService node(loop, testing::nodeTestKey(1), cpuDevices(1), daemonOptions());
  proto::Node::Client client = node.newTrustedNode("test");
  ChunkStore store;
  Scene a = encode(cornellBox(), store);

  Leased leased = takeLease(loop, client, {0});
  upload(loop, leased.session, a, store);
  EXPECT_EQ(node.ownerJobStarted("owner-token"), 1u);
  ASSERT_TRUE(pumpUntil(loop, [&] { return node.workerCount() == 0; }))
      << "a revoked lease's worker is still there";
  EXPECT_EQ(node.stats().warmWorkers, 0u);
  node.ownerJobEnded("owner-token");
  leased = Leased{};

  // A long render in flight when the lease is dropped (a Primary killed mid-render).
  leased = takeLease(loop, client, {0});
  upload(loop, leased.session, a, store);
  auto request = leased.session.renderRequest();
  toProto(a.id, request.initScene());
  request.setDevice(0);
  toProto(wholeImage(*a.data, 4096), request.initUnit());
  auto inFlight = request.send();
  loop.timer().afterDelay(200 * kj::MILLISECONDS).wait(loop.waitScope());
  leased = Leased{};
  ASSERT_TRUE(pumpUntil(loop, [&] { return node.activeLeaseCount() == 0; }));
  EXPECT_EQ(node.stats().warmWorkers, 0u);
  ASSERT_TRUE(pumpUntil(loop, [&] { return node.workerCount() == 0; }))
      << "the worker of a lease that ended mid-render is still there";
  EXPECT_EQ(node.stats().workersStarted, 2u);
}

// A lease on other devices than a warm worker's stops that worker when it needs one of them.
TEST(WarmWorkers, LeaseOnOverlappingDevicesStopsTheWarmWorker) {
  UvKjLoop loop;
  NodeService node(loop, testing::nodeTestKey(1), cpuDevices(2), daemonOptions(2));
  proto::Node::Client client = node.newTrustedNode("test");
  ChunkStore store;
  Scene a = encode(cornellBox(), store);
  Leased both = takeLease(loop, client, {0, 1});
  upload(loop, both.session, a, store);
  both = Leased{};
  ASSERT_TRUE(pumpUntil(loop, [&] { return node.stats().warmWorkers == 1; }));
  Leased one = takeLease(loop, client, {1});
  EXPECT_EQ(node.stats().warmWorkers, 0u);
  EXPECT_EQ(node.stats().warmReuses, 0u);
  EXPECT_EQ(node.stats().workersStarted, 2u);
  ASSERT_TRUE(pumpUntil(loop, [&] { return node.workerCount() == 1; }));
  upload(loop, one.session, a, store);
  expectSameBits(renderRemote(loop, one.session, a.id, 1, wholeImage(*a.data)),
                 renderLocally(*a.data, wholeImage(*a.data)), "the new worker");
}

// --- the rule, as pure logic --------------------------------------------------------------------

TEST(WarmWorkerPool, KeepsOnlyQuietReleasedLeases) {
  EXPECT_TRUE(WarmWorkerPool::keeps(LeaseEnd::Released, true));
  EXPECT_TRUE(WarmWorkerPool::keeps(LeaseEnd::ConnectionLost, true));
  EXPECT_FALSE(WarmWorkerPool::keeps(LeaseEnd::Released, false));
  EXPECT_FALSE(WarmWorkerPool::keeps(LeaseEnd::ConnectionLost, false));
  for (LeaseEnd reason : {LeaseEnd::Expired, LeaseEnd::RevokedOwner, LeaseEnd::RevokedFairShare,
                          LeaseEnd::NodeShutdown, LeaseEnd::WorkerFailed}) {
    EXPECT_FALSE(WarmWorkerPool::keeps(reason, true)) << int(reason);
  }
}

TEST(WarmWorkerPool, EvictsLeastRecentlyUsedBeyondCountAndBytes) {
  WarmWorkerPool pool({100, 2});
  EXPECT_TRUE(pool.offer(1, {0}, 40).empty());
  EXPECT_TRUE(pool.offer(2, {1}, 40).empty());
  EXPECT_EQ(pool.offer(3, {2}, 10), std::vector<uint64_t>({1}));     // the count
  EXPECT_EQ(pool.offer(4, {3}, 70), std::vector<uint64_t>({2}));     // the count: 80 bytes fit
  EXPECT_EQ(pool.offer(5, {4}, 95), std::vector<uint64_t>({3, 4}));  // the count, then bytes
  EXPECT_EQ(pool.size(), 1u);
  EXPECT_EQ(pool.bytes(), 95u);
  EXPECT_EQ(pool.offer(6, {5}, 101), std::vector<uint64_t>({6}));  // alone beyond the bytes
  EXPECT_TRUE(pool.contains(5));
  EXPECT_FALSE(pool.contains(6));
  WarmWorkerPool none({100, 0});
  EXPECT_EQ(none.offer(1, {0}, 1), std::vector<uint64_t>({1}));
}

TEST(WarmWorkerPool, TakeReusesTheSameDeviceSetAndStopsOverlaps) {
  WarmWorkerPool pool({1000, 8});
  pool.offer(1, {1, 0}, 10);
  pool.offer(2, {2}, 10);
  pool.offer(3, {3, 4}, 10);
  WarmWorkerPool::Take take = pool.take({0, 1});
  EXPECT_EQ(take.reuse, std::optional<uint64_t>(1));
  EXPECT_TRUE(take.stop.empty());
  take = pool.take({2, 3});
  EXPECT_FALSE(take.reuse.has_value());
  EXPECT_EQ(take.stop, std::vector<uint64_t>({2, 3}));
  EXPECT_EQ(pool.size(), 0u);
  pool.offer(4, {5}, 10);
  EXPECT_TRUE(pool.remove(4));
  EXPECT_FALSE(pool.remove(4));
}

// --- figures -------------------------------------------------------------------------------------

// Load time of a camera move on DamagedHelmet (256x256): on a node that has the scene loaded
// (the camera chunk alone is decoded; the device switches cameras), against a node that has
// every chunk but no decoded data (what every camera move cost before: a full decode and a BVH
// build), in process and through a worker process. Printed, not asserted.
TEST(NodeCameraMove, PrintsCameraMoveLoadTimeOnDamagedHelmet) {
  const std::string path = std::string(PEERLIGHT_SHARED_DIR) +
                           "/scenes/khronos-gltf/DamagedHelmet/glTF/DamagedHelmet.gltf";
  if (!std::ifstream(path).good()) GTEST_SKIP() << "no " << path;
  RenderData helmet = compileScene(path, 256, 256);
  const kernel::Camera& camera = helmet.camera[0];
  kernel::Vec3f eye = camera.position;
  kernel::Vec3f target{eye.x + camera.forward.x, eye.y + camera.forward.y,
                       eye.z + camera.forward.z};
  ChunkStore store;
  Scene a = encode(helmet, store);
  eye.x += 0.05f;
  Scene b = encode(withCamera(helmet, eye, target, 256, 256), store);
  const uint32_t threads = std::max(1u, std::thread::hardware_concurrency());
  for (bool workers : {false, true}) {
    UvKjLoop loop;
    NodeOptions options = workers ? daemonOptions() : quietNode();
    if (workers) options.workerArgv[3] = std::to_string(threads);
    std::vector<std::unique_ptr<Device>> devices;
    devices.push_back(std::make_unique<CpuDevice>(threads));
    NodeService warmNode(loop, testing::nodeTestKey(1), std::move(devices), options);
    proto::Node::Client client = warmNode.newTrustedNode("test");
    Leased leased = takeLease(loop, client, {0});
    double fullMs = 0, moveMs = 0;
    upload(loop, leased.session, a, store, nullptr, &fullMs);
    size_t sent = 0;
    upload(loop, leased.session, b, store, &sent, &moveMs);
    EXPECT_EQ(sent, 1u);
    const WorkUnit unit{{96, 96, 32, 32}, 0, 1, 1};
    expectSameBits(renderRemote(loop, leased.session, b.id, 0, unit), renderLocally(*b.data, unit),
                   "the moved helmet");
    // Before: the moved camera's manifest where every chunk is (in the worker too) but nothing
    // is decoded, as a camera move found it before. A load with a bad camera that fails gets
    // the chunks there and decodes nothing that stays.
    std::vector<std::unique_ptr<Device>> coldDevices;
    coldDevices.push_back(std::make_unique<CpuDevice>(threads));
    NodeService coldNode(loop, testing::nodeTestKey(1), std::move(coldDevices), options);
    proto::Node::Client coldClient = coldNode.newTrustedNode("test");
    Leased cold = takeLease(loop, coldClient, {0});
    RenderData badCamera = helmet;
    badCamera.camera[0].width = 0;
    Scene bad = encode(std::move(badCamera), store);
    EXPECT_NE(failureOf([&] { upload(loop, cold.session, bad, store); }), "");
    double coldMs = 0;
    upload(loop, cold.session, b, store, &sent, &coldMs);
    EXPECT_EQ(sent, 1u);
    EXPECT_EQ(coldNode.stats().scenesDecoded, workers ? 0u : 2u);  // bad, then b
    std::printf(
        "[ info ] DamagedHelmet 256x256, %u threads%s: camera move load %.1f ms with the "
        "scene loaded, %.1f ms as before (full decode + BVH build); the first load "
        "took %.1f ms\n",
        threads, workers ? ", through a worker process" : ", in process", moveMs, coldMs, fullMs);
  }
}

}  // namespace
}  // namespace pl
