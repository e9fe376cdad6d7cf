// The node daemon and its per-lease worker processes (issue 4 item 3), with real processes:
// `peerlight node` daemons on 127.0.0.1 and `peerlight render --peer ...` as the Primary.
// Worker pids come from the daemon's log line "worker <pid> started for lease <n>". Every
// process is killed and reaped when its guard goes away, and every wait has a hard timeout.
// Prints the measured failure detection times ("[ info ]" lines).

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>

#include "core/render/image_io.h"
#include "tests/integration/process.h"

namespace pl {
namespace {

using testing::Process;
using testing::TempDir;
using testing::alive;
using testing::secondsSince;
using testing::waitUntil;
using testing::writeKey;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

const std::string kBinary = PEERLIGHT_BINARY;
const std::string kScene = std::string(PEERLIGHT_SOURCE_DIR) + "/scenes/cornell_box.gltf";
constexpr auto kRenderTimeout = 90s;

class WorkerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(dir_.ok());
    key_ = dir_.file("cluster.key");
    writeKey(key_, 99);
  }
  void TearDown() override {
    // Workers are the daemons' children: the daemons going first takes them along
    // (PR_SET_PDEATHSIG); kill any that are left, too.
    std::vector<pid_t> workers;
    for (auto& [name, node] : nodes_) {
      for (pid_t pid : workerPids(name)) workers.push_back(pid);
    }
    nodes_.clear();
    for (pid_t pid : workers) {
      if (alive(pid)) ::kill(pid, SIGKILL);
    }
  }

  // Starts a daemon (one render thread, on core 0 when taskset is there); returns its address.
  std::string startNode(const std::string& name) {
    std::vector<std::string> argv;
    if (::access("/usr/bin/taskset", X_OK) == 0) argv = {"/usr/bin/taskset", "-c", "0"};
    argv.insert(argv.end(), {kBinary, "node", "--listen", "127.0.0.1:0", "--key-file", key_,
                             "--threads", "1", "--name", name, "--no-mdns",
                             "--no-control-socket"});
    auto node = std::make_unique<Process>(argv, dir_.file(name + ".out"),
                                          dir_.file(name + ".err"), env());
    EXPECT_TRUE(node->ok());
    std::optional<std::string> line = node->waitForOutput("listening on ", 20s);
    if (!line) {
      ADD_FAILURE() << "node " << name << " did not start; stderr:\n" << node->err();
      return "";
    }
    nodes_[name] = std::move(node);
    return line->substr(std::strlen("listening on "));
  }
  Process& node(const std::string& name) { return *nodes_.at(name); }

  // The pids of the workers the daemon `name` has started, in order (from its log).
  std::vector<pid_t> workerPids(const std::string& name) {
    std::vector<pid_t> pids;
    static const std::regex started("worker (\\d+) started for lease");
    std::string log = nodes_.at(name)->err();
    for (std::sregex_iterator it(log.begin(), log.end(), started), end; it != end; ++it) {
      pids.push_back(pid_t(std::stol((*it)[1])));
    }
    return pids;
  }
  // Waits for the `index`-th worker of daemon `name`; -1 if none came.
  pid_t waitForWorker(const std::string& name, size_t index, std::chrono::milliseconds timeout) {
    pid_t pid = -1;
    waitUntil(
        [&] {
          auto pids = workerPids(name);
          if (pids.size() > index) pid = pids[index];
          return pid > 0;
        },
        timeout);
    return pid;
  }

  std::vector<std::string> renderArgv(const std::string& size, uint32_t spp,
                                      const std::vector<std::string>& peers,
                                      const std::string& output, bool localOnly) {
    std::vector<std::string> argv = {kBinary, "render", kScene, "-o", output, "--size", size,
                                     "--spp", std::to_string(spp), "--json", "--key-file", key_};
    for (const std::string& peer : peers) argv.insert(argv.end(), {"--peer", peer});
    if (localOnly) argv.insert(argv.end(), {"--local-only", "--threads", "2"});
    else argv.push_back("--no-local");
    return argv;
  }
  std::unique_ptr<Process> startRender(const std::string& size, uint32_t spp,
                                       const std::vector<std::string>& peers,
                                       const std::string& tag) {
    return std::make_unique<Process>(renderArgv(size, spp, peers, dir_.file(tag + ".exr"), false),
                                     dir_.file(tag + ".out"), dir_.file(tag + ".err"), env());
  }
  nlohmann::json finish(Process& render, const std::string& tag) {
    std::optional<int> code = render.wait(kRenderTimeout);
    EXPECT_EQ(code, 0) << "render " << tag << ":\n" << render.err();
    std::string out = render.out();
    size_t brace = out.rfind("\n{");
    std::string line = out.substr(brace == std::string::npos ? 0 : brace + 1);
    return nlohmann::json::parse(line, nullptr, false);
  }
  // The render `tag` is bitwise the --local-only render of the same frame.
  void expectIdenticalToLocal(const std::string& tag, const std::string& size, uint32_t spp) {
    std::string reference = dir_.file(tag + "-local.exr");
    Process local(renderArgv(size, spp, {"127.0.0.1:9"}, reference, true),
                  dir_.file(tag + "-local.out"), dir_.file(tag + "-local.err"), env());
    ASSERT_EQ(local.wait(kRenderTimeout), 0) << local.err();
    Result<ImageRgb> got = readExr(dir_.file(tag + ".exr")), want = readExr(reference);
    ASSERT_TRUE(got.ok() && want.ok());
    ASSERT_EQ(got->rgb.size(), want->rgb.size());
    EXPECT_EQ(std::memcmp(got->rgb.data(), want->rgb.data(), got->rgb.size() * sizeof(float)), 0)
        << "the cluster render differs from --local-only";
  }
  static const nlohmann::json* nodeEntry(const nlohmann::json& run, const std::string& address) {
    if (!run.is_object() || !run.contains("nodes")) return nullptr;
    for (const auto& n : run["nodes"]) {
      if (n["address"] == address) return &n;
    }
    return nullptr;
  }

  std::vector<std::string> env() const { return {"HOME=" + dir_.path()}; }

  TempDir dir_;
  std::string key_;
  std::map<std::string, std::unique_ptr<Process>> nodes_;
};

// A render's lease is served by a worker process; when the lease ends (the Primary is done),
// the worker is stopped within 1 s and the daemon stays up.
TEST_F(WorkerTest, LeaseEndStopsItsWorker) {
  std::string a = startNode("a");
  ASSERT_FALSE(a.empty());
  auto render = startRender("64x64", 8, {a}, "plain");
  nlohmann::json run = finish(*render, "plain");
  Clock::time_point ended = Clock::now();
  std::vector<pid_t> pids = workerPids("a");
  ASSERT_EQ(pids.size(), 1u) << node("a").err();
  ASSERT_TRUE(waitUntil([&] { return !alive(pids[0]); }, 3s)) << node("a").err();
  double stoppedAfter = secondsSince(ended);
  std::printf("[ info ] worker %d gone %.3f s after the render process exited\n", int(pids[0]),
              stoppedAfter);
  EXPECT_LT(stoppedAfter, 1.0);
  EXPECT_NE(node("a").err().find("worker " + std::to_string(pids[0]) + " for lease 1 stopped"),
            std::string::npos)
      << node("a").err();
  EXPECT_TRUE(node("a").running());
  expectIdenticalToLocal("plain", "64x64", 8);
}

// A worker stops answering (SIGSTOP) mid-render: the daemon kills it within 3 s, ends the
// lease, the Primary counts the node's loss, and the image is still the local one.
TEST_F(WorkerTest, HungWorkerIsKilledAndImageStaysIdentical) {
  std::vector<std::string> peers = {startNode("a"), startNode("b")};
  for (const auto& p : peers) ASSERT_FALSE(p.empty());
  auto render = startRender("160x160", 192, peers, "hung");
  pid_t worker = waitForWorker("b", 0, 20s);
  ASSERT_GT(worker, 0) << node("b").err();
  std::this_thread::sleep_for(400ms);
  ASSERT_TRUE(render->running()) << "the render ended before the worker could be paused";
  ::kill(worker, SIGSTOP);
  Clock::time_point paused = Clock::now();
  const std::string failed = "worker " + std::to_string(worker) + " for lease 1 failed: hung";
  ASSERT_TRUE(waitUntil([&] { return node("b").err().find(failed) != std::string::npos; }, 5s))
      << node("b").err();
  double detected = secondsSince(paused);
  ASSERT_TRUE(waitUntil([&] { return !alive(worker); }, 5s));
  double gone = secondsSince(paused);
  std::printf("[ info ] hung worker: detected after %.3f s, process gone after %.3f s\n",
              detected, gone);
  EXPECT_LE(detected, 3.0);
  EXPECT_LE(gone, 3.0);
  nlohmann::json run = finish(*render, "hung");
  EXPECT_TRUE(node("b").running()) << node("b").err();
  const nlohmann::json* entry = nodeEntry(run, peers[1]);
  ASSERT_NE(entry, nullptr) << run.dump();
  EXPECT_GE((*entry)["losses"].get<uint32_t>(), 1u) << entry->dump();
  expectIdenticalToLocal("hung", "160x160", 192);
}

// A worker that crashes (SIGSEGV) leaves the daemon running; the Primary leases again, a new
// worker serves it, and the render completes identically.
TEST_F(WorkerTest, CrashedWorkerLeavesDaemonServing) {
  std::string a = startNode("a");
  ASSERT_FALSE(a.empty());
  auto render = startRender("128x128", 128, {a}, "crash");
  pid_t worker = waitForWorker("a", 0, 20s);
  ASSERT_GT(worker, 0) << node("a").err();
  std::this_thread::sleep_for(400ms);
  ASSERT_TRUE(render->running()) << "the render ended before the worker could crash";
  ::kill(worker, SIGSEGV);
  Clock::time_point crashed = Clock::now();
  // "worker <pid> for lease 1 failed: crashed: killed by signal 11 (...)", or, when the broken
  // calls made the Primary drop the lease first, "worker <pid> for lease 1 crashed: ...".
  const std::string failed = "crashed: killed by signal " + std::to_string(SIGSEGV);
  ASSERT_TRUE(waitUntil([&] { return node("a").err().find(failed) != std::string::npos; }, 5s))
      << node("a").err();
  double detected = secondsSince(crashed);
  std::printf("[ info ] crashed worker: detected after %.3f s\n", detected);
  EXPECT_LT(detected, 1.0);
  EXPECT_TRUE(node("a").running()) << node("a").err();
  pid_t second = waitForWorker("a", 1, 20s);
  EXPECT_GT(second, 0) << "no new worker for the next lease:\n" << node("a").err();
  nlohmann::json run = finish(*render, "crash");
  EXPECT_TRUE(node("a").running()) << node("a").err();
  const nlohmann::json* entry = nodeEntry(run, a);
  ASSERT_NE(entry, nullptr) << run.dump();
  EXPECT_EQ((*entry)["state"], "done") << entry->dump();
  EXPECT_GE((*entry)["losses"].get<uint32_t>(), 1u) << entry->dump();
  expectIdenticalToLocal("crash", "128x128", 128);
}

}  // namespace
}  // namespace pl
