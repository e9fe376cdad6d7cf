// The node daemon and its per-lease worker processes (issue 4 item 3), with real processes:
// `peerlight node` daemons on 127.0.0.1 and `peerlight render --peer ...` as the Primary.
// Worker pids come from the daemon's log line "worker <pid> started for lease <n>". Every
// process is killed and reaped when its guard goes away, and every wait has a hard timeout.
// Prints the measured failure detection times ("[ info ]" lines).

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>

#include "tests/integration/daemon_fixture.h"

namespace pl {
namespace {

using testing::Process;
using testing::alive;
using testing::secondsSince;
using testing::waitUntil;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

class WorkerTest : public testing::DaemonTest {
 protected:
  WorkerTest() : DaemonTest(99) {}
  // Starts a daemon (one render thread, on core 0 when taskset is there); returns its address.
  std::string startNode(const std::string& name) {
    NodeSpec spec;
    spec.pinCore0 = true;
    return DaemonTest::startNode(name, spec);
  }
  // The first worker on node `name` once it has sent its first heartbeat (until then a slower
  // start-up allowance applies; a slow build, such as test-asan's, takes a while to get
  // there), 400 ms later, with the render still running; -1 (and a test failure) if not.
  pid_t readyWorker(const std::string& name, testing::Process& render) {
    pid_t worker = waitForWorker(name, 0, 20s);
    EXPECT_GT(worker, 0) << node(name).err();
    if (worker <= 0) return -1;
    const std::string ready = "worker " + std::to_string(worker) + " is ready";
    if (!waitUntil([&] { return node(name).err().find(ready) != std::string::npos; }, 30s)) {
      ADD_FAILURE() << node(name).err();
      return -1;
    }
    std::this_thread::sleep_for(400ms);
    if (!render.running()) {
      ADD_FAILURE() << "the render ended before the worker was ready";
      return -1;
    }
    return worker;
  }
};

// A render's lease is served by a worker process. When the render is done (its lease released
// with every call answered), the worker stays warm: the next render on that node is served by
// the same process (no worker starts), and both images are still the local one.
TEST_F(WorkerTest, NextRenderReusesTheWarmWorker) {
  NodeSpec spec;
  spec.pinCore0 = true;
  spec.extraEnv = {"PEERLIGHT_LOG=debug"};  // the workers' load lines (their stderr is the node's)
  std::string a = DaemonTest::startNode("a", spec);
  ASSERT_FALSE(a.empty());
  auto first = startRender("64x64", 8, {a}, "first");
  finish(*first, "first");
  std::vector<pid_t> pids = workerPids("a");
  ASSERT_EQ(pids.size(), 1u) << node("a").err();
  const std::string kept = "worker " + std::to_string(pids[0]) + " kept warm after lease 1";
  ASSERT_TRUE(waitUntil([&] { return node("a").err().find(kept) != std::string::npos; }, 3s))
      << node("a").err();
  EXPECT_TRUE(alive(pids[0]));
  EXPECT_EQ(stateOf(a), "idle");
  // Named for ps and top (it is started from /proc/self/exe, which would name it "exe").
  std::ifstream comm("/proc/" + std::to_string(pids[0]) + "/comm");
  std::string name;
  std::getline(comm, name);
  EXPECT_EQ(name, "peerlight-wkr");

  auto second = startRender("64x64", 8, {a}, "second");
  finish(*second, "second");
  EXPECT_EQ(workerPids("a"), pids) << node("a").err();
  EXPECT_NE(node("a").err().find("worker " + std::to_string(pids[0]) + " (warm) serves lease 2"),
            std::string::npos)
      << node("a").err();
  EXPECT_TRUE(alive(pids[0]));
  EXPECT_TRUE(node("a").running());
  // The scene was decoded once, by the first render's load.
  const std::string log = node("a").err();
  size_t decodes = 0;
  for (size_t at = log.find("render data decoded"); at != std::string::npos;
       at = log.find("render data decoded", at + 1)) {
    ++decodes;
  }
  EXPECT_EQ(decodes, 1u) << log;
  expectIdenticalToLocal("first", "64x64", 8);
  expectIdenticalToLocal("second", "64x64", 8);
}

// The daemon's program file is replaced while it runs (a package upgrade, a rebuild): its workers
// still run the daemon's own build (they execute /proc/self/exe), so they render with the
// kernel the daemon names in Node.info. Here the new file is a script that fails: a worker
// started from the path would exit at once and the render would get no remote device.
TEST_F(WorkerTest, WorkersRunTheDaemonsBuildAfterItsFileIsReplaced) {
  const std::string copy = file("peerlight-copy");
  std::filesystem::copy_file(testing::kBinary, copy);
  std::filesystem::permissions(copy, std::filesystem::perms::owner_all);
  NodeSpec spec;
  spec.pinCore0 = true;
  spec.binary = copy;
  std::string a = DaemonTest::startNode("a", spec);
  ASSERT_FALSE(a.empty());
  std::filesystem::remove(copy);  // (the running file cannot be written: a new one replaces it)
  std::ofstream(copy) << "#!/bin/sh\nexit 7\n";
  std::filesystem::permissions(copy, std::filesystem::perms::owner_all);
  auto render = startRender("64x64", 8, {a}, "replaced");
  finish(*render, "replaced");
  EXPECT_FALSE(workerPids("a").empty()) << node("a").err();
  EXPECT_EQ(node("a").err().find("worker exited"), std::string::npos) << node("a").err();
  expectIdenticalToLocal("replaced", "64x64", 8);
}

// A worker stops answering (SIGSTOP) mid-render: the daemon kills it within 3 s, ends the
// lease, the Primary counts the node's loss, and the image is still the local one.
TEST_F(WorkerTest, HungWorkerIsKilledAndImageStaysIdentical) {
  std::vector<std::string> peers = {startNode("a"), startNode("b")};
  for (const auto& p : peers) ASSERT_FALSE(p.empty());
  auto render = startRender("160x160", 192, peers, "hung");
  const pid_t worker = readyWorker("b", *render);  // paused once it has started
  ASSERT_GT(worker, 0);
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

// The daemon itself is held up (SIGSTOP, 1.6 s: longer than its heartbeat timeout, here 1 s,
// and shorter than the 2 s after which the Primary gives up on a node) while its worker goes on.
// When it resumes, its watchdog must not take the silence of its own stall for a hung worker
// (the heartbeats that came meanwhile are still unread when its timers run): the worker is not
// killed, and the image is still the local one.
TEST_F(WorkerTest, StalledDaemonDoesNotTakeItsWorkerForHung) {
  NodeSpec spec;
  spec.pinCore0 = true;
  spec.extraArgs = {"--worker-timeout-ms", "1000"};
  std::vector<std::string> peers = {startNode("a"), DaemonTest::startNode("b", spec)};
  for (const auto& p : peers) ASSERT_FALSE(p.empty());
  auto render = startRender("160x160", 192, peers, "stall");
  ASSERT_GT(readyWorker("b", *render), 0);
  const pid_t daemon = node("b").pid();
  ASSERT_GT(daemon, 0);
  ::kill(daemon, SIGSTOP);
  std::this_thread::sleep_for(1600ms);
  ::kill(daemon, SIGCONT);
  std::this_thread::sleep_for(1s);  // the watchdog's looks after the stall
  EXPECT_EQ(node("b").err().find("failed: hung"), std::string::npos) << node("b").err();
  finish(*render, "stall");
  EXPECT_TRUE(node("b").running()) << node("b").err();
  EXPECT_EQ(node("b").err().find("failed: hung"), std::string::npos) << node("b").err();
  expectIdenticalToLocal("stall", "160x160", 192);
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
