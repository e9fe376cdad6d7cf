// RenderSession (transport/render_session.h) on the test's own loop: generations, progressive
// passes and determinism across updates, with a local device and an in-process node served on a
// thread of its own (127.0.0.1, ephemeral port).

#include "transport/render_session.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <optional>
#include <thread>

#include "core/render/cpu_device.h"
#include "tests/transport/node_thread.h"
#include "tests/transport/textured_scene.h"
#include "transport/primary.h"

namespace pl {
namespace {

using namespace std::chrono_literals;

ClusterKey testKey() {
  ClusterKey key;
  for (int i = 0; i < 32; ++i) key.bytes.push_back(uint8_t(5 * i + 3));
  return key;
}

// The reference: one local device, renderCluster() (no updates, no nodes), on a thread of its
// own (renderCluster() runs a loop of its own; the test thread has the session's).
std::vector<int64_t> referenceSums(std::shared_ptr<const RenderData> data, uint32_t spp) {
  std::vector<int64_t> sums;
  std::thread([&] {
    CpuDevice device(1);
    Film film(data->camera[0].width, data->camera[0].height, spp);
    ClusterRenderOptions options;
    options.localDevices = {&device};
    Result<ClusterRenderStats> stats = renderCluster(*data, film, options);
    EXPECT_TRUE(stats.ok()) << stats.error().message;
    sums = film.sums();
  }).join();
  return sums;
}

std::shared_ptr<const RenderData> withCamera(const RenderData& base, float dx) {
  auto data = std::make_shared<RenderData>(base);
  data->camera[0].position.x += dx;
  return data;
}

// A session's options for the two paths of a test: the node only, or the local device only.
ClusterRenderOptions nodeOrLocal(bool throughNode, testing::NodeThread& node, CpuDevice& local) {
  ClusterRenderOptions options;
  if (throughNode) {
    options.peers = {node.address()};
    options.key = testKey();
  } else {
    options.localDevices = {&local};
  }
  options.scheduler.firstPassSamples = 1;
  return options;
}

// Drives a session on this thread's loop: waits for events with a hard timeout.
class SessionHarness {
 public:
  explicit SessionHarness(ClusterRenderOptions options) {
    RenderSessionEvents events;
    events.onPass = [this](uint64_t generation, uint32_t spp, double) {
      passes.push_back({generation, spp});
      if (waitingFor && generation == waitingFor->first && spp == waitingFor->second) {
        reached->fulfill();
        waitingFor.reset();
      }
      if (onPass) onPass(generation, spp);
    };
    events.onNode = [this](const NodeRenderStats& node, bool joined) {
      nodeEvents.push_back(node.address + (joined ? " joined" : " lost"));
    };
    events.onFatal = [this](const std::string& message) { fatal = message; };
    session = std::make_unique<RenderSession>(loop, options, events);
  }
  ~SessionHarness() { session.reset(); }

  // Runs the loop until generation `g` reaches `spp` (true) or `timeout` passes (false).
  bool waitFor(uint64_t g, uint32_t spp, std::chrono::milliseconds timeout = 60s) {
    if (session->generation() == g && session->film().committedSamples() == spp) return true;
    auto paf = kj::newPromiseAndFulfiller<void>();
    reached = kj::mv(paf.fulfiller);
    waitingFor = std::make_pair(g, spp);
    bool ok = false;
    paf.promise.then([&ok] { ok = true; })
        .exclusiveJoin(loop.timer().afterDelay(timeout.count() * kj::MILLISECONDS))
        .wait(loop.waitScope());
    waitingFor.reset();
    return ok;
  }

  // Runs the loop for `ms` milliseconds.
  void runFor(int ms) { loop.timer().afterDelay(ms * kj::MILLISECONDS).wait(loop.waitScope()); }

  UvKjLoop loop;
  std::unique_ptr<RenderSession> session;
  std::vector<std::pair<uint64_t, uint32_t>> passes;
  std::vector<std::string> nodeEvents;
  std::optional<std::string> fatal;
  std::function<void(uint64_t, uint32_t)> onPass;

 private:
  std::optional<std::pair<uint64_t, uint32_t>> waitingFor;
  kj::Own<kj::PromiseFulfiller<void>> reached;
};

TEST(RenderSessionTest, PassesDoubleAndEachHoldsExactlyItsSamples) {
  constexpr uint32_t kSize = 48, kSpp = 8;
  auto data = std::make_shared<const RenderData>(testing::compiledCornellBox(kSize));
  CpuDevice local(1), other(1);
  ClusterRenderOptions options;
  options.localDevices = {&local, &other};
  options.scheduler.firstPassSamples = 1;
  options.scheduler.initialUnitWork = 16 * 16;  // many small units: passes overlap
  options.tileSize = 16;
  SessionHarness h(options);
  std::vector<std::pair<uint32_t, std::vector<int64_t>>> snapshots;
  h.onPass = [&](uint64_t, uint32_t spp) {
    snapshots.push_back({spp, h.session->film().committedSums()});
  };
  ASSERT_TRUE(h.session->start(data, kSpp).ok());
  ASSERT_TRUE(h.waitFor(1, kSpp)) << (h.fatal ? *h.fatal : "timeout");
  EXPECT_TRUE(h.session->generationDone());
  // Passes 1, 2, 4, 8 in order: several may complete at once (two devices), each is reported.
  std::vector<uint32_t> spps;
  for (const auto& [spp, sums] : snapshots) spps.push_back(spp);
  EXPECT_EQ(spps, (std::vector<uint32_t>{1, 2, 4, 8}));
  // Each pass's film is what a render of exactly that many samples gives.
  for (const auto& [spp, sums] : snapshots) {
    if (spp == 2 || spp == kSpp) {
      EXPECT_EQ(sums, referenceSums(data, spp)) << spp << " spp";
    }
  }
}

TEST(RenderSessionTest, UpdatesGiveTheImageOfTheFinalStateAndSendOnlyTheCameraChunk) {
  constexpr uint32_t kSize = 64, kSpp = 16;
  const RenderData base = testing::compiledCornellBox(kSize);
  auto first = withCamera(base, 0.0f);
  auto second = withCamera(base, 0.05f);
  auto third = withCamera(base, -0.05f);
  testing::NodeThread node(testKey(), NodeOptions());
  CpuDevice local(1);
  ClusterRenderOptions options;
  options.localDevices = {&local};
  options.peers = {node.address()};
  options.key = testKey();
  options.scheduler.firstPassSamples = 1;
  SessionHarness h(options);
  ASSERT_TRUE(h.session->start(first, kSpp).ok());
  ASSERT_TRUE(h.waitFor(1, kSpp)) << (h.fatal ? *h.fatal : "timeout");
  EXPECT_EQ(h.session->film().committedSums(), referenceSums(first, kSpp));
  // Wait until the node took part, so that generation 2's upload is measured against it.
  for (int i = 0; i < 200 && h.nodeEvents.empty(); ++i) h.runFor(20);
  ASSERT_EQ(h.nodeEvents, std::vector<std::string>{node.address() + " joined"});
  const NodeRenderStats before = h.session->stats().nodes.at(0);
  // The upload told the node the manifest first: it decoded each chunk as it came.
  for (int i = 0; i < 50 && node.scenesDecoded() == 0; ++i) h.runFor(20);
  EXPECT_EQ(node.scenesDecoded(), 1u);
  EXPECT_EQ(node.scenesPrepared(), 1u);

  // A camera move, and another before the second generation is done: only the last counts.
  EXPECT_EQ(h.session->update(second, kSpp), 2u);
  ASSERT_TRUE(h.waitFor(2, 1)) << (h.fatal ? *h.fatal : "timeout");
  EXPECT_EQ(h.session->update(third, kSpp), 3u);
  ASSERT_TRUE(h.waitFor(3, kSpp)) << (h.fatal ? *h.fatal : "timeout");
  EXPECT_EQ(h.session->film().committedSums(), referenceSums(third, kSpp));
  for (const auto& [generation, spp] : h.passes) EXPECT_LE(generation, 3u);

  // Each move sent the node one chunk (the camera) of a few hundred bytes, not the scene.
  const NodeRenderStats after = h.session->stats().nodes.at(0);
  EXPECT_LE(after.chunksSent - before.chunksSent, 2u);
  EXPECT_LE(after.renderDataBytesSent - before.renderDataBytesSent, 2u * 4096u);
  EXPECT_EQ(after.losses, 0u);
  EXPECT_FALSE(h.fatal);
  h.runFor(60);
  EXPECT_EQ(node.scenesDecoded(), 1u) << "a camera move decoded the scene again";
}

// A session started from a scene's encoded form (the compiled cache's): the node gets the chunks
// as they are (nothing encoded again: the bytes sent are the blob's chunks), a local device
// decodes the data on its own thread, a camera move then works as on data, and every image is
// the one a start from the data gives. The scene is textured: the blob holds no chunk of its
// mip levels, which the node and the local device compute for themselves.
void startsFromTheEncodedForm(bool throughNode) {
  constexpr uint32_t kSize = 48, kSpp = 4;
  auto data = std::make_shared<const RenderData>(testing::texturedCornellBox(kSize));
  // Views into a blob, as from the cache; through the node one byte off alignment (its chunks
  // are then copied into the messages rather than referenced).
  std::shared_ptr<const EncodedScene> encoded;
  {
    ChunkStore chunks;
    const ChunkManifest manifest = encodeRenderData(*data, chunks);
    ASSERT_FALSE(manifest.arrays[uint32_t(RenderDataArray::mipTexels)].chunks.empty());
    EXPECT_EQ(chunks.size(), manifest.chunkHashes().size());
    const std::vector<uint8_t> blob = serializeEncodedScene(manifest, chunks);
    auto held = std::make_shared<std::vector<uint8_t>>(blob.size() + 1);
    const size_t offset = throughNode ? 1 : 0;
    std::copy(blob.begin(), blob.end(), held->begin() + long(offset));
    Result<EncodedScene> parsed =
        parseEncodedScene(std::span<const uint8_t>(*held).subspan(offset, blob.size()), held);
    ASSERT_TRUE(parsed.ok()) << parsed.error().message;
    encoded = std::make_shared<const EncodedScene>(std::move(parsed).value());
  }
  testing::NodeThread node(testKey(), NodeOptions());
  CpuDevice local(1);
  SessionHarness h(nodeOrLocal(throughNode, node, local));
  ASSERT_TRUE(h.session->start(SceneSource{nullptr, encoded}, kSpp).ok());
  ASSERT_TRUE(h.waitFor(1, kSpp)) << (h.fatal ? *h.fatal : "timeout");
  EXPECT_EQ(h.session->film().committedSums(), referenceSums(data, kSpp));
  if (throughNode) {
    const NodeRenderStats n = h.session->stats().nodes.at(0);
    EXPECT_EQ(n.renderDataBytesSent, encoded->manifest.encodedBytes());
  }
  kernel::Camera moved = data->camera[0];
  moved.position.x += 0.1f;
  EXPECT_EQ(h.session->updateCamera(moved, kSpp), 2u);
  ASSERT_TRUE(h.waitFor(2, kSpp)) << (h.fatal ? *h.fatal : "timeout");
  auto copy = std::make_shared<RenderData>(*data);
  copy->camera[0] = moved;
  EXPECT_EQ(h.session->film().committedSums(), referenceSums(copy, kSpp));
  // The data decodes on demand, equal to what was encoded.
  ASSERT_NE(h.session->data(), nullptr);
  EXPECT_EQ(serialize(*h.session->data()), serialize(*data));
  EXPECT_FALSE(h.fatal);
}

TEST(RenderSessionTest, StartsFromTheEncodedFormOnALocalDevice) { startsFromTheEncodedForm(false); }
TEST(RenderSessionTest, StartsFromTheEncodedFormThroughANode) { startsFromTheEncodedForm(true); }

TEST(RenderSessionTest, AnEncodedSceneThatDoesNotDecodeFailsTheLocalDeviceWithTheReason) {
  auto data = std::make_shared<const RenderData>(testing::compiledCornellBox(32));
  auto encoded = std::make_shared<EncodedScene>();
  const ChunkManifest manifest = encodeRenderData(*data, encoded->chunks);
  encoded->manifest = manifest;
  // The triangles' chunk replaced by one of the right size that decodes to other bytes.
  ArrayManifest& triangles = encoded->manifest.arrays[size_t(RenderDataArray::triangles)];
  ASSERT_EQ(triangles.chunks.size(), 1u);
  std::vector<uint8_t> raw(triangles.chunks[0].rawBytes, 0xff);
  std::vector<uint8_t> bad = encodeChunk(raw.data(), raw.size(), ChunkCodec{});
  const Hash128 claimed = triangles.chunks[0].hash;
  encoded->chunks.erase(claimed);
  triangles.chunks[0].encodedBytes = uint32_t(bad.size());
  encoded->chunks.put(claimed, std::move(bad));
  CpuDevice local(1);
  ClusterRenderOptions options;
  options.localDevices = {&local};
  options.noDeviceTimeout = std::chrono::milliseconds(200);
  SessionHarness h(options);
  ASSERT_TRUE(h.session->start(SceneSource{nullptr, encoded}, 2).ok());
  for (int i = 0; i < 200 && !h.fatal; ++i) h.runFor(20);
  ASSERT_TRUE(h.fatal);
  EXPECT_EQ(h.session->stats().local.at(0).error.find("render data of the encoded scene"), 0u)
      << h.session->stats().local.at(0).error;
  EXPECT_EQ(h.session->data(), nullptr);
}

// Camera moves through Device::setCamera() on a local device, or through a node that receives
// only the camera chunk (run separately, so that each path renders every sample).
void cameraMovesShareTheData(bool throughNode) {
  constexpr uint32_t kSize = 64, kSpp = 8;
  auto data = std::make_shared<const RenderData>(testing::compiledCornellBox(kSize));
  testing::NodeThread node(testKey(), NodeOptions());
  CpuDevice local(1);
  SessionHarness h(nodeOrLocal(throughNode, node, local));
  ASSERT_TRUE(h.session->start(data, kSpp).ok());
  ASSERT_TRUE(h.waitFor(1, kSpp)) << (h.fatal ? *h.fatal : "timeout");
  const NodeRenderStats before = throughNode ? h.session->stats().nodes.at(0) : NodeRenderStats();

  // Two moves (the second before the first is done), then a restart at another count.
  kernel::Camera moved = data->camera[0];
  moved.position.x += 0.1f;
  EXPECT_EQ(h.session->updateCamera(moved, kSpp), 2u);
  moved.position.y -= 0.05f;
  EXPECT_EQ(h.session->updateCamera(moved, kSpp), 3u);
  EXPECT_EQ(h.session->data().get(), data.get()) << "the data is shared, not copied";
  ASSERT_TRUE(h.waitFor(3, kSpp)) << (h.fatal ? *h.fatal : "timeout");
  auto copy = std::make_shared<RenderData>(*data);
  copy->camera[0] = moved;
  EXPECT_EQ(h.session->film().committedSums(), referenceSums(copy, kSpp));
  EXPECT_EQ(h.session->restart(4), 4u);
  ASSERT_TRUE(h.waitFor(4, 4)) << (h.fatal ? *h.fatal : "timeout");
  EXPECT_EQ(h.session->film().committedSums(), referenceSums(copy, 4));
  EXPECT_FALSE(h.fatal);
  if (!throughNode) return;
  // The node received the two cameras (one chunk each) and nothing else, and rendered it all.
  const NodeRenderStats after = h.session->stats().nodes.at(0);
  EXPECT_LE(after.chunksSent - before.chunksSent, 2u);
  EXPECT_LE(after.renderDataBytesSent - before.renderDataBytesSent, 2u * 4096u);
  EXPECT_GE(after.samples - before.samples, uint64_t(kSize) * kSize * (kSpp + 4))
      << "every sample of generations 3 and 4 (and maybe some of 2)";
}

TEST(RenderSessionTest, CameraMovesOnALocalDeviceGiveTheImageOfACopyWithThatCamera) {
  cameraMovesShareTheData(false);
}

TEST(RenderSessionTest, CameraMovesThroughANodeSendOnlyTheCameraAndGiveTheSameImage) {
  cameraMovesShareTheData(true);
}

TEST(RenderSessionTest, AnUpdateThenARestartInOneTurnRendersTheUpdatedData) {
  // The device is busy with generation 1 when update(B) and restart() come together: the
  // restart must not turn B's load into a camera change of the data the device still holds.
  constexpr uint32_t kSize = 64;
  const RenderData base = testing::compiledCornellBox(kSize);
  auto a = std::make_shared<const RenderData>(base);
  auto b = withCamera(base, 0.2f);
  auto bData = std::make_shared<RenderData>(*b);
  bData->globals[0].envScale = {0.3f, 0.2f, 0.1f};  // other data, not only another camera
  CpuDevice local(1);
  ClusterRenderOptions options;
  options.localDevices = {&local};
  options.scheduler.firstPassSamples = 1;
  SessionHarness h(options);
  ASSERT_TRUE(h.session->start(a, 4096).ok());
  ASSERT_TRUE(h.waitFor(1, 1)) << (h.fatal ? *h.fatal : "timeout");
  h.session->update(bData, 8);
  EXPECT_EQ(h.session->restart(8), 3u);
  ASSERT_TRUE(h.waitFor(3, 8)) << (h.fatal ? *h.fatal : "timeout");
  EXPECT_EQ(h.session->film().committedSums(), referenceSums(bData, 8));
}

// A CPU device that renders first passes (units from sample 0) and sits in any later unit until
// it is stopped (RenderStop), counting the units it gave up (60 s at most).
class StallingDevice final : public Device {
 public:
  DeviceInfo info() const override { return inner_.info(); }
  Status load(std::shared_ptr<const RenderData> data) override { return inner_.load(data); }
  Status setCamera(const kernel::Camera& camera) override { return inner_.setCamera(camera); }
  std::atomic<int> stopped{0};

 protected:
  Result<TileResult> renderUnit(const WorkUnit& unit, const RenderStop& stop) override {
    if (unit.sampleBegin == 0) return inner_.render(unit, stop);
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    while (!stop.requested()) {
      if (std::chrono::steady_clock::now() > deadline) return Error{"never stopped"};
      std::this_thread::sleep_for(1ms);
    }
    stopped += 1;
    return Error{"stopped"};
  }

 private:
  CpuDevice inner_{1};
};

// An update stops the unit a local device is rendering: the new generation's first pass does
// not wait for it (here it would wait 60 s).
TEST(RenderSessionTest, AnUpdateStopsTheUnitALocalDeviceIsRendering) {
  const RenderData base = testing::compiledCornellBox(32);
  StallingDevice local;
  ClusterRenderOptions options;
  options.localDevices = {&local};
  options.scheduler.firstPassSamples = 1;
  SessionHarness h(options);
  ASSERT_TRUE(h.session->start(std::make_shared<const RenderData>(base), 64).ok());
  ASSERT_TRUE(h.waitFor(1, 1)) << (h.fatal ? *h.fatal : "timeout");
  h.runFor(200);  // the device is in its second unit by now
  auto moved = withCamera(base, 0.2f);
  EXPECT_EQ(h.session->update(moved, 64), 2u);
  ASSERT_TRUE(h.waitFor(2, 1, 30s)) << (h.fatal ? *h.fatal : "the update waited for the unit");
  EXPECT_EQ(local.stopped.load(), 1);
  EXPECT_FALSE(h.fatal.has_value());
}

TEST(RenderSessionTest, DroppingTheSessionFreesTheLease) {
  constexpr uint32_t kSize = 64;
  auto data = std::make_shared<const RenderData>(testing::compiledCornellBox(kSize));
  testing::NodeThread node(testKey(), NodeOptions());
  ClusterRenderOptions options;
  options.peers = {node.address()};
  options.key = testKey();
  options.scheduler.firstPassSamples = 1;
  {
    SessionHarness h(options);
    ASSERT_TRUE(h.session->start(data, 4096).ok());
    ASSERT_TRUE(h.waitFor(1, 1)) << (h.fatal ? *h.fatal : "timeout");
    for (int i = 0; i < 100 && node.activeLeases() == 0; ++i) h.runFor(20);  // sampled by the node
    EXPECT_EQ(node.activeLeases(), 1u);
  }
  const auto deadline = std::chrono::steady_clock::now() + 1s;
  while (node.activeLeases() != 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(10ms);
  EXPECT_EQ(node.activeLeases(), 0u);
}

// Every peer refused for good (another build here) and no local device: a session whose caller
// may still bring nodes (peersMayAppear, the daemon's discovery events) waits, and renders on a
// node added later; one whose caller brings none fails at once, naming the refusal.
TEST(RenderSessionTest, WithEveryPeerRefusedItWaitsOnlyWhenPeersMayAppear) {
  constexpr uint32_t kSize = 32;
  auto data = std::make_shared<const RenderData>(testing::compiledCornellBox(kSize));
  NodeOptions otherBuild;
  otherBuild.renderKernel = "0123456789abcdef";
  testing::NodeThread refused(testKey(), otherBuild);
  testing::NodeThread good(testKey(), NodeOptions());
  ClusterRenderOptions options;
  options.peers = {refused.address()};
  options.key = testKey();
  options.noDeviceTimeout = 0ms;  // waits for devices, as a page session does
  options.reconnectInterval = 20ms;
  options.scheduler.firstPassSamples = 1;
  {
    SessionHarness alone(options);
    ASSERT_TRUE(alone.session->start(data, 4).ok());
    for (int i = 0; i < 100 && !alone.fatal; ++i) alone.runFor(20);
    ASSERT_TRUE(alone.fatal.has_value()) << "no node can come: the session should fail";
    EXPECT_NE(alone.fatal->find("renders with another build of peerlight"), std::string::npos)
        << *alone.fatal;
  }
  options.peersMayAppear = true;
  SessionHarness h(options);
  ASSERT_TRUE(h.session->start(data, 4).ok());
  h.runFor(500);
  EXPECT_FALSE(h.fatal.has_value()) << *h.fatal;
  ASSERT_EQ(h.session->stats().nodes.size(), 1u);
  EXPECT_EQ(h.session->stats().nodes[0].state, "incompatible");
  EXPECT_TRUE(h.session->addPeer(good.address()));
  ASSERT_TRUE(h.waitFor(1, 4)) << (h.fatal ? *h.fatal : "timeout");
  EXPECT_EQ(h.session->film().committedSums(), referenceSums(data, 4));
}

// A node refused for its build is upgraded (restarted on the same address with this build) and
// discovery says so (addPeer() again): the session tries it again at once and renders on it.
TEST(RenderSessionTest, ARefusedNodeReportedUsableAnewIsTriedAgain) {
  constexpr uint32_t kSize = 32;
  auto data = std::make_shared<const RenderData>(testing::compiledCornellBox(kSize));
  NodeOptions otherBuild;
  otherBuild.renderKernel = "0123456789abcdef";
  auto node = std::make_unique<testing::NodeThread>(testKey(), otherBuild);
  const std::string address = node->address();
  ClusterRenderOptions options;
  options.peers = {address};
  options.key = testKey();
  options.noDeviceTimeout = 0ms;
  options.peersMayAppear = true;
  options.scheduler.firstPassSamples = 1;
  SessionHarness h(options);
  ASSERT_TRUE(h.session->start(data, 4).ok());
  for (int i = 0; i < 100 && h.session->stats().nodes[0].state != "incompatible"; ++i)
    h.runFor(20);
  ASSERT_EQ(h.session->stats().nodes[0].state, "incompatible");
  EXPECT_TRUE(h.session->addPeer(address));  // the same event again: still refused
  for (int i = 0; i < 100 && h.session->stats().nodes[0].state != "incompatible"; ++i)
    h.runFor(20);
  EXPECT_EQ(h.session->stats().nodes[0].state, "incompatible");
  node.reset();
  node = std::make_unique<testing::NodeThread>(testKey(), NodeOptions(), address);
  ASSERT_EQ(node->address(), address);
  EXPECT_TRUE(h.session->addPeer(address));
  EXPECT_EQ(h.session->stats().nodes[0].state, "connecting");
  EXPECT_EQ(h.session->stats().nodes[0].error, "") << "the refusal is over";
  ASSERT_TRUE(h.waitFor(1, 4)) << (h.fatal ? *h.fatal : "timeout");
  ASSERT_EQ(h.session->stats().nodes.size(), 1u);
  EXPECT_GT(h.session->stats().nodes[0].workUnits, 0u);
  EXPECT_EQ(h.session->film().committedSums(), referenceSums(data, 4));
}

}  // namespace
}  // namespace pl
