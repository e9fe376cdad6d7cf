#pragma once
// A gtest fixture for integration tests that run real `peerlight node` daemons on 127.0.0.1
// (ephemeral ports, --no-mdns) and `peerlight render` / `peerlight nodes` against them: one
// temporary folder and cluster key per test, daemons by name, their worker pids read from the
// daemon log ("worker <pid> started for lease <n>"), node states from `peerlight nodes --json`,
// and the bitwise comparison of a render with a local one. TearDown kills every daemon (their
// workers die with them, PR_SET_PDEATHSIG) and then any worker left; every wait has a hard
// timeout. Needs PEERLIGHT_BINARY and PEERLIGHT_SOURCE_DIR (tests/integration/CMakeLists.txt).

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>
#include <vector>

#include "tests/integration/process.h"
#include "tests/integration/same_image.h"

namespace pl::testing {

inline const std::string kBinary = PEERLIGHT_BINARY;
inline const std::string kCornellScene =
    std::string(PEERLIGHT_SOURCE_DIR) + "/scenes/cornell_box.gltf";

class DaemonTest : public ::testing::Test {
 protected:
  using Clock = std::chrono::steady_clock;

  explicit DaemonTest(uint32_t keySeed = 7) : keySeed_(keySeed) {}

  void SetUp() override {
    ASSERT_TRUE(dir_.ok());
    key_ = dir_.file("cluster.key");
    writeKey(key_, keySeed_);
  }
  void TearDown() override {
    std::vector<pid_t> workers;
    for (auto& [name, node] : nodes_) {
      for (pid_t pid : workerPids(name)) workers.push_back(pid);
    }
    nodes_.clear();
    for (pid_t pid : workers) {
      if (alive(pid)) ::kill(pid, SIGKILL);
    }
  }

  struct NodeSpec {
    uint32_t threads = 1;
    uint32_t ttlMs = 0;          // 0: the node's default
    bool controlSocket = false;  // at socketOf(name); else --no-control-socket
    bool pinCore0 = false;       // under `taskset -c 0` when there is one
    std::vector<std::string> extraEnv;
    std::vector<std::string> extraArgs;  // more `peerlight node` flags
    std::string binary;                  // the peerlight to run; empty: the build's
  };
  // Starts a daemon named `name`; returns its address ("" and a test failure if it does not
  // start within 20 s).
  std::string startNode(const std::string& name) { return startNode(name, NodeSpec()); }
  std::string startNode(const std::string& name, const NodeSpec& spec) {
    std::vector<std::string> argv;
    if (spec.pinCore0 && ::access("/usr/bin/taskset", X_OK) == 0)
      argv = {"/usr/bin/taskset", "-c", "0"};
    argv.insert(argv.end(), {spec.binary.empty() ? kBinary : spec.binary, "node", "--listen",
                             "127.0.0.1:0", "--key-file", key_, "--threads",
                             std::to_string(spec.threads), "--name", name, "--no-mdns"});
    if (spec.ttlMs != 0) argv.insert(argv.end(), {"--ttl-ms", std::to_string(spec.ttlMs)});
    if (spec.controlSocket) argv.insert(argv.end(), {"--control-socket", socketOf(name)});
    else argv.push_back("--no-control-socket");
    argv.insert(argv.end(), spec.extraArgs.begin(), spec.extraArgs.end());
    auto node = std::make_unique<Process>(argv, dir_.file(name + ".out"),
                                          dir_.file(name + ".err"), env(spec.extraEnv));
    EXPECT_TRUE(node->ok());
    std::optional<std::string> line = node->waitForOutput("listening on ", std::chrono::seconds(20));
    if (!line) {
      ADD_FAILURE() << "node " << name << " did not start; stderr:\n" << node->err();
      return "";
    }
    nodes_[name] = std::move(node);
    return line->substr(std::strlen("listening on "));
  }
  Process& node(const std::string& name) { return *nodes_.at(name); }
  std::string socketOf(const std::string& name) const { return dir_.file(name + ".sock"); }
  // A path in the test's temp dir.
  std::string file(const std::string& name) const { return dir_.file(name); }

  // The pids of the workers daemon `name` has started, in order.
  std::vector<pid_t> workerPids(const std::string& name) {
    std::vector<pid_t> pids;
    static const std::regex started("worker (\\d+) started for lease");
    std::string log = nodes_.at(name)->err();
    for (std::sregex_iterator it(log.begin(), log.end(), started), end; it != end; ++it)
      pids.push_back(pid_t(std::stol((*it)[1])));
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

  // The node's state as Node.info reports it ("idle", "leased", "primary"; "" if no answer).
  std::string stateOf(const std::string& address) {
    std::string tag = "probe" + std::to_string(probes_++);
    Process nodes({kBinary, "nodes", "--json", "--no-mdns", "--peer", address, "--key-file", key_,
                   "--timeout-ms", "1000"},
                  dir_.file(tag + ".out"), dir_.file(tag + ".err"), env());
    if (nodes.wait(std::chrono::seconds(10)) != 0) return "";
    nlohmann::json list = nlohmann::json::parse(nodes.out(), nullptr, false);
    if (!list.is_array() || list.empty() || !list[0].contains("state")) return "";
    return list[0]["state"].get<std::string>();
  }
  // Polls stateOf(address) until it is `want`; the seconds since `since` when it was, or -1.
  double waitForState(const std::string& address, const std::string& want, Clock::time_point since,
                      std::chrono::milliseconds timeout) {
    auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
      if (stateOf(address) == want) return secondsSince(since);
    }
    return -1;
  }

  // `peerlight render` of the Cornell box to `output` with --json, the cluster key, each peer
  // as --peer, then `options`.
  std::vector<std::string> renderArgv(const std::string& size, uint32_t spp,
                                      const std::vector<std::string>& peers,
                                      const std::string& output,
                                      const std::vector<std::string>& options) {
    std::vector<std::string> argv = {kBinary, "render", kCornellScene, "-o", output, "--size",
                                     size, "--spp", std::to_string(spp), "--json", "--key-file",
                                     key_};
    for (const std::string& peer : peers) argv.insert(argv.end(), {"--peer", peer});
    argv.insert(argv.end(), options.begin(), options.end());
    return argv;
  }
  // Starts such a render to <tag>.exr (stdout and stderr in <tag>.out / <tag>.err).
  std::unique_ptr<Process> startRender(const std::string& size, uint32_t spp,
                                       const std::vector<std::string>& peers,
                                       const std::string& tag,
                                       const std::vector<std::string>& options = {"--no-local"}) {
    return std::make_unique<Process>(renderArgv(size, spp, peers, dir_.file(tag + ".exr"), options),
                                     dir_.file(tag + ".out"), dir_.file(tag + ".err"), env());
  }
  // Waits for a render (2 min at most), expects exit 0, returns its --json object.
  nlohmann::json finish(Process& render, const std::string& tag) {
    std::optional<int> code = render.wait(std::chrono::seconds(120));
    EXPECT_EQ(code, 0) << "render " << tag << ":\n" << render.err();
    std::string out = render.out();
    size_t brace = out.rfind("\n{");
    std::string line = out.substr(brace == std::string::npos ? 0 : brace + 1);
    return nlohmann::json::parse(line, nullptr, false);
  }
  // <tag>.exr is bitwise the image of a render of the same frame in one process.
  void expectIdenticalToLocal(const std::string& tag, const std::string& size, uint32_t spp,
                              std::vector<std::string> extra = {}) {
    std::string reference = dir_.file(tag + "-local.exr");
    extra.insert(extra.begin(),
                 {"--local-only", "--threads", "2", "--no-owner-preempt", "--no-daemon"});
    Process local(renderArgv(size, spp, {}, reference, extra),
                  dir_.file(tag + "-local.out"), dir_.file(tag + "-local.err"), env());
    ASSERT_EQ(local.wait(std::chrono::seconds(120)), 0) << local.err();
    expectSameExr(dir_.file(tag + ".exr"), reference,
                  "render " + tag + " differs from a render in one process");
  }
  // The entry of `address` in a render's --json "nodes"; null if absent.
  static const nlohmann::json* nodeEntry(const nlohmann::json& run, const std::string& address) {
    if (!run.is_object() || !run.contains("nodes")) return nullptr;
    for (const auto& n : run["nodes"]) {
      if (n["address"] == address) return &n;
    }
    return nullptr;
  }

  // The environment of every process started: HOME in the test's folder, plus `extra`.
  std::vector<std::string> env(const std::vector<std::string>& extra = {}) const {
    std::vector<std::string> out = {"HOME=" + dir_.path()};
    out.insert(out.end(), extra.begin(), extra.end());
    return out;
  }

  TempDir dir_;
  std::string key_;
  std::map<std::string, std::unique_ptr<Process>> nodes_;

 private:
  uint32_t keySeed_;
  int probes_ = 0;
};

}  // namespace pl::testing
