// Lease policy (issue 4 items 4 and 5), with real processes: `peerlight node` daemons on
// 127.0.0.1 (each with its own control socket in a temporary folder) and `peerlight render`
// Primaries. States are read with `peerlight nodes --json --no-mdns --peer` (Node.info) and
// from the daemons' logs; timings are measured against those, with hard timeouts everywhere.
// Prints the measured figures ("[ info ]" lines).

#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>

#include "tests/integration/daemon_fixture.h"
#include "transport/control_client.h"
#include "transport/uv_kj_loop.h"

namespace pl {
namespace {

using testing::Process;
using testing::alive;
using testing::kBinary;
using testing::kCornellScene;
using testing::secondsSince;
using testing::waitUntil;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

class LeasePolicyTest : public testing::DaemonTest {
 protected:
  // A daemon with one render thread (on core 0 when taskset is there), lease TTL `ttlMs`, its
  // control socket at socketOf(name). Returns its address.
  std::string startNode(const std::string& name, uint32_t ttlMs) {
    NodeSpec spec;
    spec.ttlMs = ttlMs;
    spec.controlSocket = true;
    spec.pinCore0 = true;
    return DaemonTest::startNode(name, spec);
  }
};

// A Primary killed with SIGKILL mid-render: its leases end (connection gone, or at the latest
// their TTL), the workers are stopped and the nodes report idle within TTL + 1 s.
TEST_F(LeasePolicyTest, KilledPrimaryLeasesExpireWithinTtl) {
  constexpr uint32_t kTtlMs = 2000;
  std::vector<std::string> peers = {startNode("a", kTtlMs), startNode("b", kTtlMs)};
  for (const auto& p : peers) ASSERT_FALSE(p.empty());
  auto render = startRender("160x160", 1024, peers, "killed");
  pid_t workerA = waitForWorker("a", 0, 20s), workerB = waitForWorker("b", 0, 20s);
  ASSERT_GT(workerA, 0) << node("a").err();
  ASSERT_GT(workerB, 0) << node("b").err();
  EXPECT_EQ(stateOf(peers[0]), "leased");
  EXPECT_EQ(stateOf(peers[1]), "leased");
  // The lease TTL is the node's bound, not the 6 s the Primary asks for.
  EXPECT_NE(node("a").err().find("ttl 2000 ms"), std::string::npos) << node("a").err();
  ASSERT_TRUE(render->running()) << "the render ended before it could be killed";
  render->signal(SIGKILL);
  Clock::time_point killed = Clock::now();
  const double limit = kTtlMs / 1000.0 + 1.0;
  double idleA = waitForState(peers[0], "idle", killed, 10s);
  double idleB = waitForState(peers[1], "idle", killed, 10s);
  // Each worker is stopped, or kept warm: a Primary killed between calls (its load answered,
  // no render in flight) looks to the node like one that exited after its render, and its
  // worker stays as an idle warm worker (node_service.h, "Warm workers"); its lease ended all
  // the same.
  auto settled = [&](const std::string& name, pid_t worker) {
    return !alive(worker) || node(name).err().find("worker " + std::to_string(worker) +
                                                   " kept warm") != std::string::npos;
  };
  ASSERT_TRUE(waitUntil([&] { return settled("a", workerA) && settled("b", workerB); }, 5s))
      << node("a").err() << "\n---\n" << node("b").err();
  double workersGone = secondsSince(killed);
  std::printf("[ info ] killed primary: node a idle after %.3f s, b after %.3f s, workers gone "
              "by %.3f s (ttl %.1f s)\n",
              idleA, idleB, workersGone, kTtlMs / 1000.0);
  EXPECT_GE(idleA, 0) << node("a").err();
  EXPECT_GE(idleB, 0) << node("b").err();
  EXPECT_LE(idleA, limit);
  EXPECT_LE(idleB, limit);
  EXPECT_LE(workersGone, limit + 0.5);
  EXPECT_TRUE(node("a").running());
  EXPECT_TRUE(node("b").running());
}

// A Primary that stops (SIGSTOP: its connections stay open, it renews nothing): its leases
// expire after their TTL (the node's --ttl-ms bounds the 6 s the Primary asks for), the
// workers are stopped, and the nodes report idle within TTL + 1 s.
TEST_F(LeasePolicyTest, FrozenPrimaryLeasesExpireWithinTtl) {
  constexpr uint32_t kTtlMs = 2000;
  std::vector<std::string> peers = {startNode("a", kTtlMs), startNode("b", kTtlMs)};
  for (const auto& p : peers) ASSERT_FALSE(p.empty());
  auto render = startRender("160x160", 1024, peers, "frozen");
  pid_t workerA = waitForWorker("a", 0, 20s), workerB = waitForWorker("b", 0, 20s);
  ASSERT_GT(workerA, 0) << node("a").err();
  ASSERT_GT(workerB, 0) << node("b").err();
  ASSERT_TRUE(render->running()) << "the render ended before it could be stopped";
  render->signal(SIGSTOP);
  Clock::time_point stopped = Clock::now();
  const double limit = kTtlMs / 1000.0 + 1.0;
  double idleA = waitForState(peers[0], "idle", stopped, 10s);
  double idleB = waitForState(peers[1], "idle", stopped, 10s);
  ASSERT_TRUE(waitUntil([&] { return !alive(workerA) && !alive(workerB); }, 5s));
  double workersGone = secondsSince(stopped);
  std::printf("[ info ] frozen primary: node a idle after %.3f s, b after %.3f s, workers gone "
              "by %.3f s (ttl %.1f s)\n",
              idleA, idleB, workersGone, kTtlMs / 1000.0);
  render->signal(SIGKILL);
  EXPECT_GE(idleA, 0) << node("a").err();
  EXPECT_GE(idleB, 0) << node("b").err();
  EXPECT_LE(idleA, limit);
  EXPECT_LE(idleB, limit);
  EXPECT_LE(workersGone, limit + 0.5);
  EXPECT_NE(node("a").err().find("lease 1 of"), std::string::npos);
  EXPECT_NE(node("a").err().find(" expired; devices"), std::string::npos) << node("a").err();
  EXPECT_NE(node("b").err().find(" expired; devices"), std::string::npos) << node("b").err();
}

// The machine's owner starts a job on node a's machine (a render that announces itself on a's
// control socket): a revokes the remote Primary's lease within 1 s and reports primary; the
// remote render carries on with b, and its image is still the local one; when the owner job
// ends, a offers its devices again.
TEST_F(LeasePolicyTest, OwnerJobPreemptsRemoteLease) {
  std::vector<std::string> peers = {startNode("a", 10000), startNode("b", 10000)};
  for (const auto& p : peers) ASSERT_FALSE(p.empty());
  auto remote = startRender("160x160", 384, peers, "remote");
  pid_t workerA = waitForWorker("a", 0, 20s);
  ASSERT_GT(workerA, 0) << node("a").err();
  ASSERT_EQ(stateOf(peers[0]), "leased");
  ASSERT_TRUE(remote->running()) << "the remote render ended before the owner job started";

  Clock::time_point ownerStart = Clock::now();
  auto owner = startRender("96x96", 96, {}, "owner",
                           {"--local-only", "--threads", "1", "--control-socket", socketOf("a")});
  const std::string revoked = "ended: revoked: the owner is rendering";
  ASSERT_TRUE(waitUntil([&] { return node("a").err().find(revoked) != std::string::npos; }, 5s))
      << node("a").err() << "\nowner:\n" << owner->err();
  double revokedAfter = secondsSince(ownerStart);
  ASSERT_TRUE(waitUntil([&] { return !alive(workerA); }, 5s));
  double workerGone = secondsSince(ownerStart);
  std::string stateDuringOwner = stateOf(peers[0]);
  bool ownerStillRunning = owner->running();
  std::printf("[ info ] owner preemption: lease revoked %.3f s after the owner's render process "
              "started, worker gone after %.3f s\n",
              revokedAfter, workerGone);
  EXPECT_LT(revokedAfter, 1.0);
  EXPECT_LT(workerGone, 1.5);
  if (ownerStillRunning) {
    EXPECT_EQ(stateDuringOwner, "primary");
  }

  nlohmann::json ownerRun = finish(*owner, "owner");
  Clock::time_point ownerEnded = Clock::now();
  // Offered again: idle, or leased once more by the remote Primary (it retries every second).
  double offered = -1;
  waitUntil(
      [&] {
        std::string s = stateOf(peers[0]);
        if (s == "idle" || s == "leased") offered = secondsSince(ownerEnded);
        return offered >= 0;
      },
      5s);
  std::printf("[ info ] owner job ended: node a offered again after %.3f s\n", offered);
  EXPECT_GE(offered, 0);
  EXPECT_LT(offered, 1.5);
  EXPECT_NE(node("a").err().find("owner job ended"), std::string::npos) << node("a").err();

  nlohmann::json run = finish(*remote, "remote");
  const nlohmann::json* entryA = nodeEntry(run, peers[0]);
  const nlohmann::json* entryB = nodeEntry(run, peers[1]);
  ASSERT_NE(entryA, nullptr) << run.dump();
  ASSERT_NE(entryB, nullptr) << run.dump();
  EXPECT_GE((*entryA)["losses"].get<uint32_t>(), 1u) << entryA->dump();
  EXPECT_GT((*entryB)["work_units"].get<uint64_t>(), 0u) << entryB->dump();
  EXPECT_TRUE(node("a").running());
  expectIdenticalToLocal("remote", "160x160", 384);
}

// `peerlight session` renders on this machine's devices for as long as it runs (the Blender
// add-on's F12 and viewport): it is the owner's job too. While the session is open, the node of
// its machine reports primary (lending its devices to no other Primary); when the session ends
// (stdin closes), the node offers them again within a second.
TEST_F(LeasePolicyTest, ASessionOnTheNodesMachineIsTheOwnersJob) {
  std::string a = startNode("a", 10000);
  ASSERT_FALSE(a.empty());
  ASSERT_EQ(stateOf(a), "idle");
  Process session({kBinary, "session", kCornellScene, "--size", "32x32", "--spp", "4",
                   "--local-only", "--threads", "1", "--control-socket", socketOf("a")},
                  dir_.file("session.out"), dir_.file("session.err"), env(), /*pipeStdin=*/true);
  ASSERT_TRUE(session.ok());
  ASSERT_TRUE(waitUntil([&] { return session.out().find("\"ready\"") != std::string::npos; },
                        30s))
      << session.err();
  EXPECT_EQ(stateOf(a), "primary") << node("a").err();
  EXPECT_NE(session.err().find("owner job announced"), std::string::npos) << session.err();
  session.closeStdin();
  ASSERT_EQ(session.wait(10s), 0) << session.err();
  Clock::time_point ended = Clock::now();
  double idle = waitForState(a, "idle", ended, 5s);
  std::printf("[ info ] session ended: node idle after %.3f s\n", idle);
  EXPECT_GE(idle, 0);
  EXPECT_LT(idle, 1.0);
}

// Holds an owner job on the control socket at `path` (Cap'n Proto, transport/control_client.h):
// the connection's fd, which holds the job until it is closed; -1 when the daemon did not answer
// ok.
int holdOwnerJob(const std::string& path, const std::string& token) {
  UvKjLoop loop;
  Result<int> fd = announceOwnerJob(loop, path, token);
  EXPECT_TRUE(fd.ok()) << fd.error().message;
  return fd.ok() ? *fd : -1;
}

// Sends `bytes` on a fresh connection to `path`; true when the daemon closes it within 5 s.
bool closedAfter(const std::string& path, const std::string& bytes) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un addr {};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return false;
  }
  ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
  bool closed = false;
  struct pollfd p {fd, POLLIN, 0};
  for (auto deadline = Clock::now() + 5s; !closed && Clock::now() < deadline;) {
    if (::poll(&p, 1, 100) <= 0) continue;
    char buffer[256];
    closed = ::recv(fd, buffer, sizeof(buffer), 0) <= 0;
  }
  ::close(fd);
  return closed;
}

// The control socket itself: mode 0600, garbage is refused (the connection closes), an owner
// job (NodeControl.ownerJob) makes the node report primary until its connection closes, and a
// second daemon on the same path leaves it alone (and keeps serving).
TEST_F(LeasePolicyTest, ControlSocketProtocol) {
  std::string a = startNode("a", 2000);
  ASSERT_FALSE(a.empty());
  struct stat st {};
  ASSERT_EQ(::stat(socketOf("a").c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  EXPECT_TRUE(closedAfter(socketOf("a"), "hello, control socket\n"));
  EXPECT_EQ(stateOf(a), "idle");

  int owner = holdOwnerJob(socketOf("a"), "0123abcd");
  EXPECT_EQ(stateOf(a), "primary");
  ::close(owner);
  Clock::time_point closed = Clock::now();
  double idle = waitForState(a, "idle", closed, 5s);
  std::printf("[ info ] owner connection closed: idle after %.3f s\n", idle);
  EXPECT_GE(idle, 0);
  EXPECT_LT(idle, 1.0);

  // Another daemon asked for the same socket: warns and serves without one.
  Process other({kBinary, "node", "--listen", "127.0.0.1:0", "--key-file", key_, "--threads",
                 "1", "--no-mdns", "--control-socket", socketOf("a")},
                dir_.file("other.out"), dir_.file("other.err"), env());
  ASSERT_TRUE(other.waitForOutput("listening on ", 20s)) << other.err();
  EXPECT_TRUE(waitUntil(
      [&] { return other.err().find("another process") != std::string::npos; }, 5s))
      << other.err();
  int again = holdOwnerJob(socketOf("a"), "42");
  EXPECT_EQ(stateOf(a), "primary");
  ::close(again);
}

// Devices each Primary (by pid) holds now on the daemon `name`, from its log: leases granted
// ("lease <n> granted to <host>/<pid> (...)") and not yet ended ("lease <n> of ... are free").
std::map<int, int> holdersFromLog(const std::string& log) {
  static const std::regex granted("lease (\\d+) granted to [^ ]*/(\\d+) \\(");
  static const std::regex ended("lease (\\d+) of .*; devices [0-9,]+ are free");
  std::map<int, int> pidOfLease;
  for (std::sregex_iterator it(log.begin(), log.end(), granted), end; it != end; ++it) {
    pidOfLease[std::stoi((*it)[1])] = std::stoi((*it)[2]);
  }
  for (std::sregex_iterator it(log.begin(), log.end(), ended), end; it != end; ++it) {
    pidOfLease.erase(std::stoi((*it)[1]));
  }
  std::map<int, int> held;
  for (const auto& [lease, pid] : pidOfLease) held[pid] += 1;
  return held;
}

// Fair share: two Primaries that start together while 4 single-device nodes are idle end up
// with 2 each (and stay so); when the first finishes, the second leases what it frees. Both
// images are still the local ones.
TEST_F(LeasePolicyTest, TwoPrimariesShareTheNodesFairly) {
  std::vector<std::string> peers;
  for (const char* name : {"a", "b", "c", "d"}) {
    peers.push_back(startNode(name, 2000));
    ASSERT_FALSE(peers.back().empty());
  }
  auto first = startRender("128x128", 192, peers, "first");
  auto second = startRender("128x128", 384, peers, "second");
  const int pid1 = first->pid(), pid2 = second->pid();
  Clock::time_point start = Clock::now();
  auto sample = [&] {
    std::map<int, int> total;
    for (const char* name : {"a", "b", "c", "d"}) {
      for (const auto& [pid, n] : holdersFromLog(node(name).err())) total[pid] += n;
    }
    return std::make_pair(total[pid1], total[pid2]);
  };
  // Converges to 2 + 2, then stays there for 2 s while both render.
  double fairAfter = -1, stableFor = 0;
  Clock::time_point fairSince{};
  std::string history;
  while (first->running() && second->running() && secondsSince(start) < 40) {
    auto [n1, n2] = sample();
    if (history.size() < 4000) history += std::to_string(n1) + "/" + std::to_string(n2) + " ";
    if (n1 == 2 && n2 == 2) {
      if (fairSince == Clock::time_point{}) fairSince = Clock::now();
      if (fairAfter < 0) fairAfter = secondsSince(start);
      stableFor = secondsSince(fairSince);
      if (stableFor >= 2.0) break;
    } else {
      fairSince = {};
    }
    std::this_thread::sleep_for(50ms);
  }
  std::printf("[ info ] fair share: 2 + 2 after %.3f s, held for %.3f s\n", fairAfter, stableFor);
  EXPECT_GE(fairAfter, 0) << "holders over time (first/second): " << history;
  EXPECT_GE(stableFor, 2.0) << "holders over time (first/second): " << history;

  nlohmann::json run1 = finish(*first, "first");
  Clock::time_point firstDone = Clock::now();
  // The second takes over what the first freed (unless it finishes before it could).
  bool tookAll = false;
  waitUntil(
      [&] {
        tookAll = sample().second == 4;
        return tookAll || !second->running();
      },
      10s);
  double after = secondsSince(firstDone);
  nlohmann::json run2 = finish(*second, "second");
  std::printf("[ info ] fair share: after the first finished, the second %s after %.3f s\n",
              tookAll ? "held all 4 nodes" : "finished", after);
  EXPECT_TRUE(tookAll || after < 3.0) << "the second never leased the freed nodes";
  EXPECT_TRUE(run1.is_object() && run2.is_object());
  expectIdenticalToLocal("first", "128x128", 192);
  expectIdenticalToLocal("second", "128x128", 384);
}

}  // namespace
}  // namespace pl
