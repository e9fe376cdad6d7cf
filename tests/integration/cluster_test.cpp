// Multi-process cluster tests: real `peerlight node` processes on 127.0.0.1 (ephemeral ports)
// and `peerlight render --peer ...` as the Primary. Every render is compared with a
// `--local-only` render of the same arguments: the EXR pixels must be bitwise identical, also
// when a node is killed, paused or joins half-way. Every process is killed and reaped when its
// guard goes away (also on failure), and every wait has a hard timeout.

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cstring>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>

#include "core/render/image_io.h"
#include "core/render/render_kernel.h"
#include "tests/integration/process.h"
#include "tests/integration/same_image.h"
#include "transport/protocol_convert.h"

namespace pl {
namespace {

using testing::Process;
using testing::TempDir;
using testing::alive;
using testing::secondsSince;
using testing::waitUntil;
using testing::writeKey;
using namespace std::chrono_literals;

const std::string kBinary = PEERLIGHT_BINARY;
const std::string kScene = std::string(PEERLIGHT_SOURCE_DIR) + "/scenes/cornell_box.gltf";
constexpr auto kRenderTimeout = 90s;

struct Frame {
  std::string size;
  uint32_t spp;
  std::vector<std::string> extra;  // further render arguments (e.g. --env)
  std::string scene = kScene;
};
// Small: the plain cases. Long: a render that lasts a few seconds on 1-thread nodes, so that
// failures can strike in the middle.
const Frame kSmall{"96x96", 32, {}};
const Frame kLong{"128x128", 128, {}};
// Longer still (several seconds on one core): outlasts the 2 s of silence after which a paused
// node is declared lost, and the 1 s between reconnection attempts.
const Frame kLonger{"160x160", 192, {}};

// A free TCP port on 127.0.0.1 (bound and released again; a node started later takes it).
int reservePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  int port = -1;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    socklen_t length = sizeof(addr);
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &length);
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

struct RenderRun {
  int code = -1;
  nlohmann::json json;  // the --json line (null if none)
  std::string err;
  std::string exr;
  double wallSeconds = 0;
};

class ClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(dir_.ok());
    key_ = dir_.file("cluster.key");
    writeKey(key_, 1234);
  }

  // Starts a node; returns its address "127.0.0.1:PORT" (empty on failure, with a test failure).
  // Nodes render with one thread, all on CPU core 0 (when taskset is there): a frame then takes
  // about as long on a 2-core machine as on a 64-core one, which keeps the failure timings
  // (kill, pause, join after the render began) inside the render.
  std::string startNode(const std::string& name, std::vector<std::string> extra = {},
                        const std::string& listen = "127.0.0.1:0", std::string key = "") {
    std::vector<std::string> argv;
    if (::access("/usr/bin/taskset", X_OK) == 0) argv = {"/usr/bin/taskset", "-c", "0"};
    std::vector<std::string> nodeArgv = {kBinary,   "node", "--listen", listen,
                                         "--key-file", key.empty() ? key_ : key,
                                         "--threads", "1",    "--name",   name,
                                         // Tests never advertise through a system avahi in
                                         // the root network namespace.
                                         "--no-mdns", "--no-control-socket"};
    argv.insert(argv.end(), nodeArgv.begin(), nodeArgv.end());
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto node = std::make_unique<Process>(argv, dir_.file(name + ".out"), dir_.file(name + ".err"),
                                          env());
    EXPECT_TRUE(node->ok()) << "could not start " << kBinary;
    std::optional<std::string> line = node->waitForOutput("listening on ", 20s);
    if (!line) {
      ADD_FAILURE() << "node " << name << " did not print its address; stderr:\n" << node->err();
      return "";
    }
    std::string address = line->substr(std::strlen("listening on "));
    nodes_[name] = std::move(node);
    return address;
  }
  Process& node(const std::string& name) { return *nodes_.at(name); }

  std::vector<std::string> renderArgv(const Frame& frame, const std::vector<std::string>& peers,
                                      const std::string& output,
                                      std::vector<std::string> options) {
    std::vector<std::string> argv = {kBinary,   "render",   frame.scene, "-o",
                                     output,    "--size",   frame.size, "--spp",
                                     std::to_string(frame.spp), "--json"};
    argv.insert(argv.end(), frame.extra.begin(), frame.extra.end());
    for (const std::string& peer : peers) {
      argv.push_back("--peer");
      argv.push_back(peer);
    }
    argv.insert(argv.end(), options.begin(), options.end());
    return argv;
  }

  std::unique_ptr<Process> startRender(const Frame& frame, const std::vector<std::string>& peers,
                                       const std::string& tag,
                                       std::vector<std::string> options = {"--no-local"}) {
    options.push_back("--key-file");
    options.push_back(key_);
    auto argv = renderArgv(frame, peers, dir_.file(tag + ".exr"), options);
    return std::make_unique<Process>(argv, dir_.file(tag + ".render.out"),
                                     dir_.file(tag + ".render.err"), env());
  }

  RenderRun finishRender(std::unique_ptr<Process> render, const std::string& tag,
                         std::chrono::steady_clock::time_point started) {
    RenderRun run;
    std::optional<int> code = render->wait(kRenderTimeout);
    run.wallSeconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    run.err = render->err();
    EXPECT_TRUE(code.has_value()) << "render " << tag << " timed out; stderr:\n" << run.err;
    run.code = code.value_or(-1);
    std::string out = render->out();
    size_t brace = out.rfind("\n{");
    std::string line = out.substr(brace == std::string::npos ? 0 : brace + 1);
    if (!line.empty() && line[0] == '{') run.json = nlohmann::json::parse(line, nullptr, false);
    run.exr = dir_.file(tag + ".exr");
    return run;
  }

  RenderRun render(const Frame& frame, const std::vector<std::string>& peers,
                   const std::string& tag, std::vector<std::string> options = {"--no-local"}) {
    auto started = std::chrono::steady_clock::now();
    return finishRender(startRender(frame, peers, tag, options), tag, started);
  }

  // The --local-only render of `frame` (cached per frame for the whole test program).
  std::string reference(const Frame& frame) {
    static TempDir refDir;
    static std::map<std::string, std::string> done;
    std::string id = std::filesystem::path(frame.scene).stem().string() + "-" + frame.size + "-" +
                     std::to_string(frame.spp);
    for (const auto& e : frame.extra) id += "-" + std::filesystem::path(e).filename().string();
    if (auto it = done.find(id); it != done.end()) return it->second;
    std::string output = refDir.file(id + ".exr");
    auto argv = renderArgv(frame, {"127.0.0.1:9"}, output,
                           {"--local-only", "--threads", "2", "--key-file", key_});
    Process p(argv, refDir.file(id + ".out"), refDir.file(id + ".err"), env());
    std::optional<int> code = p.wait(kRenderTimeout);
    EXPECT_EQ(code, 0) << p.err();
    done[id] = output;
    return output;
  }

  // The EXR pixels of `run` are bitwise those of the local reference render.
  void expectIdentical(const RenderRun& run, const Frame& frame) {
    ASSERT_EQ(run.code, 0) << run.err;
    testing::expectSameExr(run.exr, reference(frame), "differ from --local-only");
  }

  static const nlohmann::json* nodeEntry(const RenderRun& run, const std::string& address) {
    if (!run.json.is_object() || !run.json.contains("nodes")) return nullptr;
    for (const auto& n : run.json["nodes"]) {
      if (n["address"] == address) return &n;
    }
    return nullptr;
  }
  static uint64_t totalNodeSamples(const RenderRun& run) {
    uint64_t total = 0;
    for (const auto& n : run.json["nodes"]) total += n["samples"].get<uint64_t>();
    return total;
  }

  std::vector<std::string> env() const { return {"HOME=" + dir_.path()}; }

  TempDir dir_;
  std::string key_;
  std::map<std::string, std::unique_ptr<Process>> nodes_;
};

uint64_t frameSamples(const Frame& f) {
  uint32_t w = 0, h = 0;
  std::sscanf(f.size.c_str(), "%ux%u", &w, &h);
  return uint64_t(w) * h * f.spp;
}

TEST_F(ClusterTest, ThreeNodesMatchLocalRender) {
  std::vector<std::string> peers = {startNode("a"), startNode("b"), startNode("c")};
  for (const auto& p : peers) ASSERT_FALSE(p.empty());
  RenderRun run = render(kSmall, peers, "three");
  expectIdentical(run, kSmall);
  ASSERT_TRUE(run.json.is_object()) << run.err;
  EXPECT_EQ(totalNodeSamples(run), frameSamples(kSmall));
  int nodesWithWork = 0;
  for (const auto& n : run.json["nodes"]) {
    EXPECT_EQ(n["state"], "done") << n.dump();
    EXPECT_GT(n["render_data_bytes_sent"].get<uint64_t>(), 0u) << n.dump();
    nodesWithWork += n["work_units"].get<uint64_t>() > 0;
    if (n["work_units"].get<uint64_t>() > 0) {
      EXPECT_GT(n["result_bytes"].get<uint64_t>(), 0u);
      EXPECT_TRUE(n["seconds_to_first_result"].is_number());
    }
  }
  EXPECT_GE(nodesWithWork, 2) << run.json.dump();
  EXPECT_TRUE(run.json["devices"].empty()) << "--no-local rendered locally";
}

TEST_F(ClusterTest, PrimaryAndNodesTogetherMatchLocalRender) {
  std::string a = startNode("a");
  ASSERT_FALSE(a.empty());
  RenderRun run = render(kSmall, {a}, "with-local", {"--threads", "1"});
  expectIdentical(run, kSmall);
  ASSERT_TRUE(run.json.is_object());
  ASSERT_EQ(run.json["devices"].size(), 1u);
  uint64_t local = run.json["devices"][0]["samples"].get<uint64_t>();
  EXPECT_EQ(local + totalNodeSamples(run), frameSamples(kSmall));
}

// A textured scene through two nodes' workers, which compute the mip levels that no chunk
// carries: bitwise the --local-only image.
TEST_F(ClusterTest, TexturedSceneThroughWorkersMatchesLocalRender) {
  const std::string helmet = std::string(PEERLIGHT_SHARED_DIR) +
                             "/scenes/khronos-gltf/DamagedHelmet/glTF/DamagedHelmet.gltf";
  if (!std::filesystem::exists(helmet)) GTEST_SKIP() << helmet << " not present";
  const Frame frame{"96x72", 8, {}, helmet};
  std::vector<std::string> peers = {startNode("a"), startNode("b")};
  for (const auto& p : peers) ASSERT_FALSE(p.empty());
  RenderRun run = render(frame, peers, "helmet");
  expectIdentical(run, frame);
  ASSERT_TRUE(run.json.is_object()) << run.err;
  // On a loaded machine one node can render the whole frame while the other still loads; the
  // samples of a node that worked are what its worker rendered from levels it computed.
  int nodesWithWork = 0;
  for (const auto& n : run.json["nodes"]) {
    EXPECT_EQ(n["error"], "") << n.dump();
    EXPECT_GT(n["render_data_bytes_sent"].get<uint64_t>(), 0u) << n.dump();
    if (n["work_units"].get<uint64_t>() > 0) {
      EXPECT_EQ(n["state"], "done") << n.dump();
      ++nodesWithWork;
    }
  }
  EXPECT_GE(nodesWithWork, 1) << run.json.dump();
  EXPECT_EQ(totalNodeSamples(run), frameSamples(frame));
}

// Render until clean (--noise-threshold): tiles stop at pass ends by their noise, judged on the
// Primary's merged film, so two nodes give bitwise the --local-only image, with fewer samples
// than --spp everywhere.
TEST_F(ClusterTest, RenderUntilCleanIsOneImageOnAnyNodeCount) {
  const Frame clean{"96x96", 256, {"--noise-threshold", "0.15"}};
  std::vector<std::string> peers = {startNode("a"), startNode("b")};
  for (const auto& p : peers) ASSERT_FALSE(p.empty());
  RenderRun run = render(clean, peers, "clean");
  expectIdentical(run, clean);
  ASSERT_TRUE(run.json.is_object()) << run.err;
  EXPECT_GT(run.json["tiles_retired"].get<uint64_t>(), 0u) << run.json.dump();
  EXPECT_LT(totalNodeSamples(run), frameSamples(clean)) << run.json.dump();
}

// One node is SIGKILLed after a delay drawn from the seed; its units are requeued.
class KilledNodeTest : public ClusterTest, public ::testing::WithParamInterface<int> {};

TEST_P(KilledNodeTest, ImageStaysIdentical) {
  const int seed = GetParam();
  std::mt19937 rng(seed);
  const int delayMs = std::uniform_int_distribution<int>(100, 1200)(rng);
  std::vector<std::string> peers = {startNode("a"), startNode("b"), startNode("c")};
  for (const auto& p : peers) ASSERT_FALSE(p.empty());
  const std::string victim = std::string(1, char('a' + seed % 3));
  auto started = std::chrono::steady_clock::now();
  auto render = startRender(kLong, peers, "killed");
  std::this_thread::sleep_for(std::chrono::milliseconds(delayMs));
  // Whether it held the render's data when killed: a slow build (test-asan) may kill it before
  // its lease, and a node that never joined is unreachable, not lost.
  const bool loaded = node(victim).err().find("loaded after") != std::string::npos;
  node(victim).kill();
  const bool killedDuringRender = render->running();
  RenderRun run = finishRender(std::move(render), "killed", started);
  std::printf("[ info ] seed %d: killed node %s after %d ms (render still running: %d), render "
              "took %.2f s\n",
              seed, victim.c_str(), delayMs, int(killedDuringRender), run.wallSeconds);
  expectIdentical(run, kLong);
  ASSERT_TRUE(run.json.is_object());
  EXPECT_EQ(totalNodeSamples(run), frameSamples(kLong));
  const auto* entry = nodeEntry(run, peers[size_t(seed % 3)]);
  ASSERT_NE(entry, nullptr);
  std::printf("[ info ] killed node: %s\n", entry->dump().c_str());
  if (killedDuringRender && loaded) {
    EXPECT_EQ((*entry)["state"], "lost") << entry->dump();
    EXPECT_GE((*entry)["losses"].get<int>(), 1) << entry->dump();
  } else if (killedDuringRender) {
    EXPECT_TRUE((*entry)["state"] == "lost" || (*entry)["state"] == "unreachable")
        << entry->dump();
  }
}

INSTANTIATE_TEST_SUITE_P(Seeds, KilledNodeTest, ::testing::Values(1, 2, 3));

// A node stops answering (SIGSTOP) mid-render: silence for 2 s loses it; the rest finishes.
TEST_F(ClusterTest, PausedNodeIsDroppedAndImageStaysIdentical) {
  std::vector<std::string> peers = {startNode("a"), startNode("b"), startNode("c")};
  for (const auto& p : peers) ASSERT_FALSE(p.empty());
  auto started = std::chrono::steady_clock::now();
  auto render = startRender(kLonger, peers, "paused");
  // Paused once it renders (a slow build, such as test-asan's, takes a while to get there; a
  // node paused before its lease is unreachable, not lost).
  ASSERT_TRUE(waitUntil([&] { return node("b").err().find("loaded after") != std::string::npos; },
                        30s))
      << node("b").err();
  std::this_thread::sleep_for(100ms);
  node("b").signal(SIGSTOP);
  const bool pausedDuringRender = render->running();
  RenderRun run = finishRender(std::move(render), "paused", started);
  node("b").signal(SIGCONT);
  expectIdentical(run, kLonger);
  ASSERT_TRUE(run.json.is_object());
  const auto* entry = nodeEntry(run, peers[1]);
  ASSERT_NE(entry, nullptr);
  EXPECT_TRUE(pausedDuringRender);
  EXPECT_EQ((*entry)["state"], "lost") << entry->dump();
  EXPECT_NE((*entry)["error"].get<std::string>().find("no reply"), std::string::npos)
      << entry->dump();
  std::printf("[ info ] paused node b once it rendered; render took %.2f s; b: %s\n",
              run.wallSeconds, entry->dump().c_str());
}

// A peer that is not there when the render starts is retried and gets work once it is up.
TEST_F(ClusterTest, NodeJoiningHalfwayGetsWorkAndImageStaysIdentical) {
  std::vector<std::string> peers = {startNode("a"), startNode("b")};
  for (const auto& p : peers) ASSERT_FALSE(p.empty());
  const int port = reservePort();
  ASSERT_GT(port, 0);
  const std::string late = "127.0.0.1:" + std::to_string(port);
  peers.push_back(late);
  auto started = std::chrono::steady_clock::now();
  auto render = startRender(kLonger, peers, "join");
  std::this_thread::sleep_for(300ms);
  ASSERT_EQ(startNode("late", {}, late), late);
  RenderRun run = finishRender(std::move(render), "join", started);
  expectIdentical(run, kLonger);
  ASSERT_TRUE(run.json.is_object());
  const auto* entry = nodeEntry(run, late);
  ASSERT_NE(entry, nullptr);
  std::printf("[ info ] late node: %s; render took %.2f s\n", entry->dump().c_str(),
              run.wallSeconds);
  EXPECT_EQ((*entry)["state"], "done") << entry->dump() << "\n" << run.err;
  EXPECT_GT((*entry)["work_units"].get<uint64_t>(), 0u) << entry->dump() << "\n" << run.err;
}

// A node killed mid-render and restarted on the same port is reconnected to (new lease, its
// data sent again) and renders again before the frame ends.
TEST_F(ClusterTest, NodeThatComesBackIsUsedAgain) {
  std::vector<std::string> peers = {startNode("a"), startNode("b")};
  for (const auto& p : peers) ASSERT_FALSE(p.empty());
  auto started = std::chrono::steady_clock::now();
  auto render = startRender(kLonger, peers, "back");
  // Killed once it holds the render's data (a slow build, such as test-asan's, takes a while to
  // get there; a node killed before its load would not count as a connection that was used).
  ASSERT_TRUE(waitUntil([&] { return node("b").err().find("loaded after") != std::string::npos; },
                        30s))
      << node("b").err();
  std::this_thread::sleep_for(100ms);
  node("b").kill();
  std::this_thread::sleep_for(200ms);
  ASSERT_TRUE(render->running()) << "the render ended before the node came back";
  ASSERT_EQ(startNode("b2", {}, peers[1]), peers[1]);
  RenderRun run = finishRender(std::move(render), "back", started);
  expectIdentical(run, kLonger);
  ASSERT_TRUE(run.json.is_object());
  const auto* entry = nodeEntry(run, peers[1]);
  ASSERT_NE(entry, nullptr);
  std::printf("[ info ] node that came back: %s; render took %.2f s\n", entry->dump().c_str(),
              run.wallSeconds);
  EXPECT_EQ((*entry)["losses"], 1) << entry->dump();
  EXPECT_EQ((*entry)["connections"], 2) << entry->dump() << "\n" << run.err;
  EXPECT_EQ((*entry)["state"], "done") << entry->dump();
  EXPECT_EQ((*entry)["name"], "b2") << entry->dump();
  // Its data went twice: once to each process.
  EXPECT_EQ((*entry)["chunks_sent"].get<uint64_t>(), 2 * (*entry)["chunks_total"].get<uint64_t>());
}

// The nodes keep chunks across leases: after a camera move only the camera's chunk travels.
TEST_F(ClusterTest, CameraMoveSendsAtMost4KiBPerNode) {
  // A noise environment map makes the render data large (about 1 MiB), so that resending it
  // could not pass for a camera move.
  const std::string envPath = dir_.file("noise.exr");
  {
    std::mt19937 rng(7);
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    std::vector<float> rgb(256 * 128 * 3);
    for (float& v : rgb) v = u(rng);
    ASSERT_TRUE(writeExr(envPath, 256, 128, rgb).ok());
  }
  // The scene with the camera moved: only the camera node's translation differs.
  const std::string moved = dir_.file("moved.gltf");
  {
    nlohmann::json scene = nlohmann::json::parse(testing::readFile(kScene));
    bool found = false;
    for (auto& n : scene["nodes"]) {
      if (n.contains("camera")) {
        n["translation"][0] = n["translation"][0].get<double>() + 0.05;
        found = true;
      }
    }
    ASSERT_TRUE(found);
    // Buffers are embedded (data URIs) or relative to the scene: keep them reachable.
    for (auto& b : scene["buffers"]) {
      std::string uri = b.value("uri", "");
      if (!uri.empty() && uri.rfind("data:", 0) != 0)
        b["uri"] = std::string(PEERLIGHT_SOURCE_DIR) + "/scenes/" + uri;
    }
    std::ofstream(moved) << scene.dump();
  }
  std::vector<std::string> peers = {startNode("a"), startNode("b")};
  for (const auto& p : peers) ASSERT_FALSE(p.empty());
  const Frame first{"64x64", 8, {"--env", envPath}};
  RenderRun run1 = render(first, peers, "cam1");
  ASSERT_EQ(run1.code, 0) << run1.err;
  expectIdentical(run1, first);

  std::vector<std::string> argv = {kBinary, "render",   moved,        "-o",
                                   dir_.file("cam2.exr"), "--size", "64x64", "--spp",
                                   "8",     "--env",    envPath,      "--json",
                                   "--no-local", "--key-file", key_};
  for (const auto& p : peers) argv.insert(argv.end(), {"--peer", p});
  auto started = std::chrono::steady_clock::now();
  RenderRun run2 = finishRender(
      std::make_unique<Process>(argv, dir_.file("cam2.render.out"), dir_.file("cam2.render.err"),
                                env()),
      "cam2", started);
  ASSERT_EQ(run2.code, 0) << run2.err;
  ASSERT_TRUE(run1.json.is_object() && run2.json.is_object());
  for (const auto& n : run1.json["nodes"]) {
    EXPECT_GT(n["render_data_bytes_sent"].get<uint64_t>(), 100000u) << n.dump();
  }
  // A node whose worker is still warm from the first render may render the whole frame before
  // the other is ready again: at least one takes part, and none gets more than the camera.
  size_t done = 0;
  for (const auto& n : run2.json["nodes"]) done += n["state"] == "done";
  EXPECT_GE(done, 1u) << run2.json["nodes"].dump();
  for (const auto& n : run2.json["nodes"]) {
    std::printf("[ info ] camera move: %s sent %llu bytes (%llu raw) in %llu chunk(s) of %llu\n",
                n["address"].get<std::string>().c_str(),
                (unsigned long long)n["render_data_bytes_sent"].get<uint64_t>(),
                (unsigned long long)n["render_data_bytes_raw"].get<uint64_t>(),
                (unsigned long long)n["chunks_sent"].get<uint64_t>(),
                (unsigned long long)n["chunks_total"].get<uint64_t>());
    EXPECT_LE(n["render_data_bytes_sent"].get<uint64_t>(), 4096u) << n.dump();
    if (n["state"] == "done") {
      EXPECT_GE(n["chunks_sent"].get<uint64_t>(), 1u) << "the camera chunk must travel";
    }
  }
  // And the moved camera's image is right: the same as rendering the moved scene locally.
  std::vector<std::string> local;
  for (const std::string& a : argv) {
    if (a != "--no-local") local.push_back(a);
  }
  local[4] = dir_.file("cam2-local.exr");
  local.push_back("--local-only");
  Process p(local, dir_.file("cam2-local.out"), dir_.file("cam2-local.err"), env());
  ASSERT_EQ(p.wait(kRenderTimeout), 0) << p.err();
  Result<ImageRgb> a = readExr(run2.exr), b = readExr(local[4]);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE(a->rgb == b->rgb);
}

TEST_F(ClusterTest, WrongKeyIsRefusedAndGetsNothing) {
  const std::string otherKey = dir_.file("other.key");
  writeKey(otherKey, 999);
  std::string good = startNode("good");
  std::string bad = startNode("bad", {}, "127.0.0.1:0", otherKey);
  ASSERT_FALSE(good.empty());
  ASSERT_FALSE(bad.empty());
  RenderRun run = render(kSmall, {good, bad}, "wrongkey");
  expectIdentical(run, kSmall);
  EXPECT_NE(run.err.find(bad + ": authentication failed"), std::string::npos) << run.err;
  const auto* entry = nodeEntry(run, bad);
  ASSERT_NE(entry, nullptr);
  EXPECT_EQ((*entry)["state"], "auth_failed") << entry->dump();
  EXPECT_EQ((*entry)["work_units"], 0) << entry->dump();
  EXPECT_EQ((*entry)["render_data_bytes_sent"], 0) << entry->dump();
  EXPECT_EQ((*entry)["connections"], 0) << entry->dump();
  EXPECT_NE((*entry)["error"].get<std::string>().find("authentication failed"),
            std::string::npos);

  // With only the wrong-key node the render fails, saying why.
  RenderRun alone = render(kSmall, {bad}, "wrongkey-alone");
  EXPECT_EQ(alone.code, 1) << alone.err;
  EXPECT_NE(alone.err.find("authentication failed"), std::string::npos) << alone.err;
  // The node logged the refused attempt and is still up.
  EXPECT_TRUE(node("bad").running());
  std::string nodeLog = node("bad").err();
  EXPECT_NE(nodeLog.find("authentication"), std::string::npos) << nodeLog;
}

TEST_F(ClusterTest, IncompatibleProtocolVersionIsNamed) {
  std::string good = startNode("good");
  std::string old = startNode("future", {"--protocol-version", "999"});
  ASSERT_FALSE(good.empty());
  ASSERT_FALSE(old.empty());
  RenderRun run = render(kSmall, {good, old}, "version");
  expectIdentical(run, kSmall);
  const std::string expected = "node " + old + " speaks protocol 999, this Primary speaks " +
                               std::to_string(kProtocolVersion);
  EXPECT_NE(run.err.find(expected), std::string::npos) << run.err;
  const auto* entry = nodeEntry(run, old);
  ASSERT_NE(entry, nullptr);
  EXPECT_EQ((*entry)["state"], "incompatible") << entry->dump();
  EXPECT_EQ((*entry)["error"], expected);
  EXPECT_EQ((*entry)["work_units"], 0);
}

// A node of the same protocol but another build (another render kernel) would put other bits
// into the image: it is named and not used, and the image is that of the good node alone.
TEST_F(ClusterTest, AnotherRenderKernelIsNamedAndNotUsed) {
  std::string good = startNode("good");
  std::string other = startNode("otherbuild", {"--render-kernel", "fedcba9876543210"});
  ASSERT_FALSE(good.empty());
  ASSERT_FALSE(other.empty());
  RenderRun run = render(kSmall, {good, other}, "kernel");
  expectIdentical(run, kSmall);
  const std::string expected = "node " + other +
                               " renders with another build of peerlight (render kernel "
                               "fedcba9876543210, ours " +
                               std::string(renderKernelId()) + ")";
  EXPECT_NE(run.err.find(expected), std::string::npos) << run.err;
  const auto* entry = nodeEntry(run, other);
  ASSERT_NE(entry, nullptr);
  EXPECT_EQ((*entry)["state"], "incompatible") << entry->dump();
  EXPECT_EQ((*entry)["error"], expected);
  EXPECT_EQ((*entry)["work_units"], 0);
  EXPECT_EQ((*entry)["render_data_bytes_sent"], 0);
}

}  // namespace
}  // namespace pl
