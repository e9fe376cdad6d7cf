// Which devices the node daemon and its workers open (apps/peerlight/node_devices.h), and the
// daemon's SIGKILL fallback for a worker that ignores SIGTERM (transport/worker_process.h),
// with real processes: `peerlight node` daemons on 127.0.0.1, `peerlight worker` and
// `peerlight nodes` / `peerlight render --peer ...`. Every process is killed and reaped when its
// guard goes away, and every wait has a hard timeout.

#include <gtest/gtest.h>
#include <signal.h>

#include <cstring>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <regex>

#include "tests/integration/daemon_fixture.h"

namespace pl {
namespace {

using testing::Process;
using testing::alive;
using testing::kBinary;
using testing::secondsSince;
using testing::waitUntil;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
const std::string kScene = testing::kCornellScene;

class WorkerDevicesTest : public testing::DaemonTest {
 protected:
  // Starts a daemon (worker mode) on 127.0.0.1:0; returns its address ("" on failure).
  std::string startNode(const std::string& name, uint32_t threads,
                        const std::vector<std::string>& extraEnv = {},
                        const std::vector<std::string>& extraArgs = {}) {
    NodeSpec spec;
    spec.threads = threads;
    spec.extraEnv = extraEnv;
    spec.extraArgs = extraArgs;
    return DaemonTest::startNode(name, spec);
  }

  // Runs a short command to its end (30 s at most); returns its exit code and stdout, stderr.
  struct Ran {
    std::optional<int> code;
    std::string out, err;
  };
  Ran runToEnd(const std::vector<std::string>& argv, const std::string& tag) {
    Process p(argv, dir_.file(tag + ".out"), dir_.file(tag + ".err"), env());
    EXPECT_TRUE(p.ok());
    Ran ran;
    ran.code = p.wait(30s);
    ran.out = p.out();
    ran.err = p.err();
    return ran;
  }
};

// Threads of a running process, from /proc/PID/status (0 when unreadable).
int threadCount(pid_t pid) {
  std::string status = testing::readFile("/proc/" + std::to_string(pid) + "/status");
  size_t at = status.find("\nThreads:");
  return at == std::string::npos ? 0 : std::atoi(status.c_str() + at + 9);
}

// `peerlight worker --devices LIST` with a bad LIST exits 2 with a message naming the list and
// what is wrong, before it touches its socket (none is given here).
TEST_F(WorkerDevicesTest, WorkerRejectsBadDeviceLists) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"99", "device 99 does not exist"},
      {"0,0", "device 0 is listed twice"},
      {"zero", "\"zero\" is not a device index"},
      {"", "no device index"},
      {"0,", "an empty entry"},
  };
  int i = 0;
  for (const auto& [list, says] : cases) {
    Ran ran = runToEnd({kBinary, "worker", "--threads", "1", "--devices", list},
                       "bad" + std::to_string(i++));
    EXPECT_EQ(ran.code, 2) << "--devices \"" << list << "\":\n" << ran.err;
    EXPECT_NE(ran.err.find("--devices \"" + list + "\""), std::string::npos) << ran.err;
    EXPECT_NE(ran.err.find(says), std::string::npos) << ran.err;
  }
  Ran missing = runToEnd({kBinary, "worker", "--threads", "1"}, "missing");
  EXPECT_NE(missing.code, 0);
  EXPECT_NE(missing.code, std::nullopt);
  EXPECT_NE((missing.out + missing.err).find("--devices"), std::string::npos)
      << missing.out << missing.err;
}

// The daemon (worker mode) reports every device with its real info (the CPU with the --threads
// it was given, the model `peerlight devices` names) but opens none: a daemon told to use 16
// CPU threads starts no more threads than one told to use 1 (a CpuDevice(16) would start 15).
TEST_F(WorkerDevicesTest, DaemonDescribesDevicesWithoutOpeningThem) {
  std::string one = startNode("one", 1);
  std::string many = startNode("many", 16);
  ASSERT_FALSE(one.empty());
  ASSERT_FALSE(many.empty());
  // Both are idle on the loop by now; give lazily started threads the same chance in both.
  std::this_thread::sleep_for(300ms);
  int threadsOne = threadCount(node("one").pid()), threadsMany = threadCount(node("many").pid());
  ASSERT_GT(threadsOne, 0);
  std::printf("[ info ] daemon threads: --threads 1: %d, --threads 16: %d\n", threadsOne,
              threadsMany);
  EXPECT_LT(threadsMany, threadsOne + 8) << "the daemon seems to have opened the CPU device";

  Ran local = runToEnd({kBinary, "devices", "--json"}, "devices");
  ASSERT_EQ(local.code, 0) << local.err;
  nlohmann::json localDevices = nlohmann::json::parse(local.out, nullptr, false);
  ASSERT_TRUE(localDevices.is_object()) << local.out;
  const nlohmann::json& localCpu = localDevices["devices"][0];
  ASSERT_EQ(localCpu["kind"], "cpu") << local.out;

  Ran listed = runToEnd({kBinary, "nodes", "--json", "--no-mdns", "--peer", many, "--key-file",
                         key_},
                        "nodes");
  ASSERT_EQ(listed.code, 0) << listed.err;
  nlohmann::json rows = nlohmann::json::parse(listed.out, nullptr, false);
  ASSERT_TRUE(rows.is_array() && rows.size() == 1) << listed.out;
  const nlohmann::json& devices = rows[0]["devices"];
  ASSERT_TRUE(devices.is_array() && !devices.empty()) << listed.out;
  EXPECT_EQ(devices[0]["kind"], "cpu");
  EXPECT_EQ(devices[0]["name"], localCpu["name"]);
  EXPECT_EQ(devices[0]["memoryBytes"], localCpu["memoryBytes"]);
  EXPECT_EQ(devices[0]["threads"], 16);
  // The GPUs (in a CUDA build on a GPU machine) are listed in the same order.
  ASSERT_EQ(devices.size(), localDevices["devices"].size()) << listed.out << local.out;
  for (size_t i = 1; i < devices.size(); ++i) {
    EXPECT_EQ(devices[i]["name"], localDevices["devices"][i]["name"]);
  }
}

// A worker that ignores SIGTERM and does not exit when its lease ends (test mode of
// `peerlight worker`): the daemon's stop sends SIGTERM, then SIGKILL after the grace (1 s), so
// the worker is gone within grace + 1 s and the daemon names the kill in its log and keeps
// serving.
TEST_F(WorkerDevicesTest, WorkerIgnoringSigtermIsKilledAfterTheGrace) {
  // No warm workers: the finished render's worker is stopped at once.
  std::string a = startNode("a", 1, {"PEERLIGHT_TEST_WORKER_IGNORE_SIGTERM=1"},
                            {"--warm-workers", "0"});
  ASSERT_FALSE(a.empty());
  std::vector<std::string> argv = {kBinary, "render", kScene, "-o", dir_.file("a.exr"), "--size",
                                   "48x48", "--spp", "4", "--json", "--key-file", key_,
                                   "--peer", a, "--no-local"};
  Process render(argv, dir_.file("render.out"), dir_.file("render.err"), env());
  ASSERT_EQ(render.wait(90s), 0) << render.err() << "\n" << node("a").err();
  std::vector<pid_t> pids = workerPids("a");
  ASSERT_EQ(pids.size(), 1u) << node("a").err();
  const pid_t worker = pids[0];
  const std::string prefix = "worker " + std::to_string(worker) + " for lease 1 ";
  ASSERT_TRUE(
      waitUntil([&] { return node("a").err().find(prefix + "stopped") != std::string::npos; },
                10s))
      << node("a").err();
  Clock::time_point stopped = Clock::now();
  // SIGTERM went out with the "stopped" line; this worker ignores it.
  EXPECT_TRUE(alive(worker)) << "the worker did not outlive SIGTERM: is the test mode broken?\n"
                             << node("a").err();
  ASSERT_TRUE(waitUntil([&] { return !alive(worker); }, 5s)) << node("a").err();
  double gone = secondsSince(stopped);
  std::printf("[ info ] worker ignoring SIGTERM gone %.3f s after its stop\n", gone);
  EXPECT_LE(gone, 2.0) << "grace 1 s + 1 s";
  const std::string killed =
      prefix + "killed (SIGKILL: still running 1000 ms after SIGTERM)";
  EXPECT_TRUE(waitUntil([&] { return node("a").err().find(killed) != std::string::npos; }, 2s))
      << node("a").err();
  EXPECT_TRUE(node("a").running()) << node("a").err();
  // The daemon serves the next lease with a new worker.
  Process again(argv, dir_.file("again.out"), dir_.file("again.err"), env());
  EXPECT_EQ(again.wait(90s), 0) << again.err() << "\n" << node("a").err();
  EXPECT_EQ(workerPids("a").size(), 2u) << node("a").err();
}

}  // namespace
}  // namespace pl
