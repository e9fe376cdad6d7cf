// renderCluster() (transport/primary.h) against an in-process NodeService served on a thread of
// its own (its own UvKjLoop, 127.0.0.1, ephemeral port): a node that appears during the render
// (RenderSession::addPeer on the render's loop, as discovery does) is connected and used, and
// the image is bitwise the local one; a render whose `cancelled` turns true stops with "render
// cancelled" and frees its lease.

#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "core/render/cpu_device.h"
#include "core/scene/compile.h"
#include "transport/node_service.h"
#include "transport/primary.h"
#include "transport/render_session.h"
#include "transport/tcp.h"
#include "transport/uv_kj_loop.h"
#include "tests/transport/node_thread.h"

namespace pl {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

ClusterKey testKey() {
  ClusterKey key;
  for (int i = 0; i < 32; ++i) key.bytes.push_back(uint8_t(7 * i + 1));
  return key;
}

// The film of `data` rendered on `local` alone.
Film localFilm(const RenderData& data, CpuDevice& local, uint32_t size, uint32_t spp) {
  Film film(size, size, spp);
  ClusterRenderOptions options;
  options.localDevices = {&local};
  Result<ClusterRenderStats> stats = renderCluster(data, film, options);
  EXPECT_TRUE(stats.ok()) << stats.error().message;
  return film;
}

TEST(PrimaryTest, NodeAppearingDuringTheRenderIsUsedAndImageStaysIdentical) {
  constexpr uint32_t kSize = 96, kSpp = 256;
  auto data = std::make_shared<const RenderData>(testing::compiledCornellBox(kSize));
  CpuDevice local(1);
  ASSERT_TRUE(local.load(data).ok());
  const Film reference = localFilm(*data, local, kSize, kSpp);

  testing::NodeThread node(testKey(), NodeOptions());
  Film film(kSize, kSize, kSpp);
  ClusterRenderOptions options;
  options.localDevices = {&local};
  options.key = testKey();
  options.peersMayAppear = true;
  // Nothing at first; the node "appears" (a discovery event on the render's loop) 150 ms in.
  UvKjLoop loop;
  kj::Promise<void> appears = nullptr;
  bool attached = false, detached = false;
  SceneSource scene;
  scene.data = data;
  Result<ClusterRenderStats> stats =
      renderCluster(loop, scene, film, options, nullptr, [&](RenderSession* session) {
        if (session == nullptr) {
          detached = true;
          appears = nullptr;
          return;
        }
        attached = true;
        appears = loop.timer().afterDelay(150 * kj::MILLISECONDS).then([&, session] {
          EXPECT_TRUE(session->addPeer(node.address()));
        }).eagerlyEvaluate(nullptr);
      });
  ASSERT_TRUE(stats.ok()) << stats.error().message;
  EXPECT_TRUE(attached);
  EXPECT_TRUE(detached);
  ASSERT_EQ(stats->nodes.size(), 1u);
  EXPECT_EQ(stats->nodes[0].address, node.address());
  EXPECT_GT(stats->nodes[0].workUnits, 0u) << "the node that appeared got no work";
  EXPECT_GT(stats->local[0].workUnits, 0u);
  EXPECT_EQ(film.sums(), reference.sums()) << "the image differs from the local render";
}

TEST(PrimaryTest, PassesThroughANodeAreBitwiseTheLocalOnes) {
  // Albedo, normal and depth travel with the colour in every tile result (10 sums a pixel)
  // and merge as exactly: a node's film is the local film, passes included.
  constexpr uint32_t kSize = 64, kSpp = 16;
  auto data =
      std::make_shared<const RenderData>(testing::compiledCornellBox(kSize, kernel::kAllPasses));
  ASSERT_EQ(kernel::filmChannels(data->camera[0].passes), 10u);
  CpuDevice local(1);
  ASSERT_TRUE(local.load(data).ok());
  Film reference(kSize, kSize, kSpp, 10);
  {
    ClusterRenderOptions options;
    options.localDevices = {&local};
    Result<ClusterRenderStats> stats = renderCluster(*data, reference, options);
    ASSERT_TRUE(stats.ok()) << stats.error().message;
  }
  testing::NodeThread node(testKey(), NodeOptions());
  Film film(kSize, kSize, kSpp, 10);
  ClusterRenderOptions options;
  options.peers = {node.address()};
  options.key = testKey();
  Result<ClusterRenderStats> stats = renderCluster(*data, film, options);
  ASSERT_TRUE(stats.ok()) << stats.error().message;
  EXPECT_EQ(film.sums(), reference.sums()) << "the node's film differs from the local one";

  // The passes say what the camera sees: the box's walls are at most white, every normal is
  // a unit vector (each pixel sees one wall), and everything lies in front of the camera.
  const std::vector<float> albedo = film.pass(kernel::kPassAlbedo);
  const std::vector<float> normal = film.pass(kernel::kPassNormal);
  const std::vector<float> depth = film.pass(kernel::kPassDepth);
  const uint32_t centre = (kSize / 2 * kSize + kSize / 2) * 3;
  EXPECT_GT(albedo[centre], 0.1f);
  EXPECT_LE(albedo[centre], 1.0f);
  const float n = std::sqrt(normal[centre] * normal[centre] +
                            normal[centre + 1] * normal[centre + 1] +
                            normal[centre + 2] * normal[centre + 2]);
  EXPECT_NEAR(n, 1.0f, 0.05f);
  EXPECT_GT(depth[centre], 0.0f);
  EXPECT_LT(depth[centre], 100.0f);
  // A film without passes refuses the passes' results.
  Film colourOnly(kSize, kSize, kSpp);
  stats = renderCluster(*data, colourOnly, options);
  ASSERT_FALSE(stats.ok());
  EXPECT_NE(stats.error().message.find("passes"), std::string::npos) << stats.error().message;
}

TEST(PrimaryTest, TimeLimitStopsAtACompletePassBitwiseThatSpp) {
  // A render far too long for its time limit stops at the last complete pass: a film of
  // fewer samples, bitwise the film of a render to exactly that many.
  constexpr uint32_t kSize = 64, kSpp = 1u << 16;
  auto data = std::make_shared<const RenderData>(testing::compiledCornellBox(kSize));
  CpuDevice local(1);
  ASSERT_TRUE(local.load(data).ok());
  Film film(kSize, kSize, kSpp);
  ClusterRenderOptions options;
  options.localDevices = {&local};
  options.timeLimit = std::chrono::milliseconds(300);
  const Clock::time_point start = Clock::now();
  Result<ClusterRenderStats> stats = renderCluster(*data, film, options);
  ASSERT_TRUE(stats.ok()) << stats.error().message;
  EXPECT_LT(Clock::now() - start, 20s);
  const uint32_t reached = film.samplesPerPixel();
  ASSERT_GE(reached, 1u);
  ASSERT_LT(reached, kSpp);
  Film reference(kSize, kSize, reached);
  ClusterRenderOptions plain;
  plain.localDevices = {&local};
  ASSERT_TRUE(renderCluster(*data, reference, plain).ok());
  EXPECT_EQ(film.sums(), reference.sums()) << "stopped at " << reached << " spp";
}

// A node that will never hold the scene (beyond its scene limit) ends its lease typed
// SCENE_TOO_LARGE. The Primary does not ask it again in this render, however often it would
// retry a busy or broken node, and the render completes on the other devices, bitwise.
TEST(PrimaryTest, ANodeThatCanNeverHoldTheSceneIsAskedOnce) {
  constexpr uint32_t kSize = 64, kSpp = 128;
  auto data = std::make_shared<const RenderData>(testing::compiledCornellBox(kSize));
  CpuDevice local(1);
  ASSERT_TRUE(local.load(data).ok());
  const Film reference = localFilm(*data, local, kSize, kSpp);
  NodeOptions small;
  small.maxSceneBytes = 4096;
  testing::NodeThread node(testKey(), small);
  Film film(kSize, kSize, kSpp);
  ClusterRenderOptions options;
  options.localDevices = {&local};
  options.peers = {node.address()};
  options.key = testKey();
  options.reconnectInterval = std::chrono::milliseconds(20);
  const Clock::time_point start = Clock::now();
  Result<ClusterRenderStats> stats = renderCluster(*data, film, options);
  ASSERT_TRUE(stats.ok()) << stats.error().message;
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  ASSERT_EQ(stats->nodes.size(), 1u);
  EXPECT_EQ(stats->nodes[0].state, "too_large");
  EXPECT_NE(stats->nodes[0].error.find("more than this node accepts"), std::string::npos)
      << stats->nodes[0].error;
  EXPECT_EQ(stats->nodes[0].workUnits, 0u);
  // Refused when missing() named the scene's size: no chunk was sent to it.
  EXPECT_EQ(stats->nodes[0].renderDataBytesSent, 0u);
  EXPECT_EQ(film.sums(), reference.sums());
  std::this_thread::sleep_for(60ms);  // the node samples its counters every 20 ms
  EXPECT_EQ(node.leasesGranted(), 1u) << "asked again within a " << seconds << " s render";
}

TEST(PrimaryTest, CancelledRenderStopsAndFreesItsLease) {
  constexpr uint32_t kSize = 128, kSpp = 4096;  // far longer than the test waits
  auto data = std::make_shared<const RenderData>(testing::compiledCornellBox(kSize));
  testing::NodeThread node(testKey(), NodeOptions());
  Film film(kSize, kSize, kSpp);
  ClusterRenderOptions options;
  options.peers = {node.address()};
  options.key = testKey();
  std::atomic<bool> cancel{false};
  options.cancelled = [&] { return cancel.load(); };
  std::thread canceller([&] {
    // Cancel once the node holds the lease (or after 10 s at the latest).
    const Clock::time_point deadline = Clock::now() + 10s;
    while (node.activeLeases() == 0 && Clock::now() < deadline) std::this_thread::sleep_for(10ms);
    std::this_thread::sleep_for(200ms);
    cancel = true;
  });
  const Clock::time_point start = Clock::now();
  Result<ClusterRenderStats> stats = renderCluster(*data, film, options);
  canceller.join();
  ASSERT_FALSE(stats.ok());
  EXPECT_NE(stats.error().message.find("render cancelled"), std::string::npos)
      << stats.error().message;
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - start).count(), 30.0);
  // The lease goes with the connection.
  const Clock::time_point deadline = Clock::now() + 3s;
  while (node.activeLeases() != 0 && Clock::now() < deadline) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(node.activeLeases(), 0u);
}

}  // namespace
}  // namespace pl
